//! One child on a pseudo-terminal: spawned through portable-pty, read on a
//! thread until the PTY's EOF, written through a thread of its own, resized
//! and hung up.

use crate::flow::FlowGate;
use crate::PtyError;
use portable_pty::{native_pty_system, ChildKiller, CommandBuilder, MasterPty};
use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// What to run on the terminal. `program` and `args` are what the caller
/// built (a jail's `bwrap … -- sh`, say); nothing here adds to them.
#[derive(Debug, Clone)]
pub struct PtyCommand {
    pub program: OsString,
    pub args: Vec<OsString>,
    pub cwd: PathBuf,
    /// Start from an empty environment rather than the daemon's.
    pub clear_env: bool,
    pub env: Vec<(OsString, OsString)>,
    pub size: PtySize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PtySize {
    pub cols: u16,
    pub rows: u16,
}

impl PtySize {
    pub fn new(cols: u16, rows: u16) -> Result<PtySize, PtyError> {
        if !(1..=1000).contains(&cols) || !(1..=1000).contains(&rows) {
            return Err(PtyError::InvalidSize { cols, rows });
        }
        Ok(PtySize { cols, rows })
    }

    fn native(self) -> portable_pty::PtySize {
        portable_pty::PtySize { rows: self.rows, cols: self.cols, pixel_width: 0, pixel_height: 0 }
    }
}

/// How the child ended: its exit code, or the signal that killed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitStatus {
    pub code: Option<i32>,
    pub signal: Option<String>,
}

/// What the reader hands on, in order: output, then exactly one exit.
#[derive(Debug)]
pub enum PtyEvent {
    Output(Vec<u8>),
    Exited(ExitStatus),
}

/// How long the reader keeps draining after the child exited while
/// something it left behind (a background job) still holds the terminal
/// open. Whatever the child itself wrote is already in the PTY's buffer by
/// the time it exits, and is read before this matters.
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(300);
/// One read's buffer: the PTY hands out at most about 4 KiB at a time
/// here, so this is seldom filled; it bounds a chunk, not a stream.
const READ_BUFFER: usize = 64 * 1024;
/// Input waiting for the child to read it (a big paste, in chunks).
const INPUT_QUEUE: usize = 64;
/// How long a hung-up child has to go before it is killed.
const HANGUP_GRACE: Duration = Duration::from_secs(2);

pub struct Pty {
    pid: Option<u32>,
    master: Mutex<Box<dyn MasterPty + Send>>,
    input: mpsc::Sender<Vec<u8>>,
    killer: Mutex<Box<dyn ChildKiller + Send + Sync>>,
    exit: Arc<ExitCell>,
    gate: Arc<FlowGate>,
}

impl Pty {
    /// Starts the child and the threads that read and write its terminal.
    /// Output and the exit go to `sink`, which is bounded: while it is full
    /// the reader waits, and so does the child once the PTY's buffer fills.
    pub fn spawn(command: PtyCommand, gate: Arc<FlowGate>, sink: mpsc::Sender<PtyEvent>) -> Result<Pty, PtyError> {
        let system = native_pty_system();
        let pair = system.openpty(command.size.native()).map_err(|e| PtyError::Open(e.to_string()))?;
        let mut builder = CommandBuilder::new(&command.program);
        builder.args(&command.args);
        builder.cwd(&command.cwd);
        if command.clear_env {
            builder.env_clear();
        }
        for (k, v) in &command.env {
            builder.env(k, v);
        }
        let program = command.program.to_string_lossy().into_owned();
        let mut child = pair
            .slave
            .spawn_command(builder)
            .map_err(|e| PtyError::Spawn { program: program.clone(), reason: e.to_string() })?;
        // Only the child may hold the slave side: the PTY reads EOF once
        // every holder has closed it, and that EOF is what ends the reading.
        drop(pair.slave);
        let pid = child.process_id();
        let killer = child.clone_killer();
        let master = pair.master;
        let reader = master.try_clone_reader().map_err(|e| PtyError::Open(e.to_string()))?;
        let writer = master.take_writer().map_err(|e| PtyError::Open(e.to_string()))?;
        let fd = master.as_raw_fd().ok_or_else(|| PtyError::Open("the PTY has no file descriptor".into()))?;

        let exit = Arc::new(ExitCell::default());
        {
            let exit = exit.clone();
            spawn_thread("bosun-pty-wait", move || {
                let status = match child.wait() {
                    Ok(s) => ExitStatus {
                        code: if s.signal().is_some() { None } else { Some(s.exit_code() as i32) },
                        signal: s.signal().map(str::to_string),
                    },
                    Err(e) => {
                        tracing::warn!(error = %e, "waiting for a terminal's child failed");
                        ExitStatus { code: None, signal: None }
                    }
                };
                exit.set(status);
            })?;
        }
        {
            let (exit, gate) = (exit.clone(), gate.clone());
            spawn_thread("bosun-pty-read", move || read_to_eof(fd, reader, &gate, &exit, &sink))?;
        }
        let (input, queue) = mpsc::channel::<Vec<u8>>(INPUT_QUEUE);
        spawn_thread("bosun-pty-write", move || write_input(writer, queue))?;
        tracing::debug!(program, ?pid, "terminal started");
        Ok(Pty { pid, master: Mutex::new(master), input, killer: Mutex::new(killer), exit, gate })
    }

    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    pub fn gate(&self) -> &Arc<FlowGate> {
        &self.gate
    }

    /// Whether the child has exited (its output may still be being read).
    pub fn exited(&self) -> Option<ExitStatus> {
        self.exit.get()
    }

    /// Queues input for the child; waits while the queue is full (a child
    /// that reads nothing holds back the paste, not the daemon).
    pub async fn write(&self, bytes: Vec<u8>) -> Result<(), PtyError> {
        self.input.send(bytes).await.map_err(|_| PtyError::Ended)
    }

    pub fn resize(&self, size: PtySize) -> Result<(), PtyError> {
        let master = self.master.lock().unwrap_or_else(|p| p.into_inner());
        master.resize(size.native()).map_err(|e| PtyError::Resize(e.to_string()))
    }

    /// Hangs up the terminal, as closing its window does: SIGHUP to the
    /// child's process group, and SIGKILL if it is still there after a grace.
    pub fn hang_up(&self) {
        if self.exit.get().is_some() {
            return;
        }
        if let Some(pid) = self.pid {
            // SAFETY: kill(2) with a negative pid signals a process group;
            // the child is its session's leader, so its pid is the group's.
            unsafe {
                libc::kill(-(pid as libc::pid_t), libc::SIGHUP);
            }
        }
        let exit = self.exit.clone();
        let mut killer = self.killer.lock().unwrap_or_else(|p| p.into_inner()).clone_killer();
        let _ = spawn_thread("bosun-pty-hangup", move || {
            if !exit.wait_for(HANGUP_GRACE) {
                let _ = killer.kill();
            }
        });
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        self.gate.close();
        self.hang_up();
    }
}

fn spawn_thread(name: &str, f: impl FnOnce() + Send + 'static) -> Result<(), PtyError> {
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(f)
        .map(|_| ())
        .map_err(|e| PtyError::Open(format!("cannot start a thread: {e}")))
}

/// Reads the PTY until EOF (EIO on Linux once the last holder of the slave
/// is gone), or until the child has exited and nothing more came for
/// [`DRAIN_AFTER_EXIT`]; then hands on the exit status, last.
fn read_to_eof(
    fd: RawFd,
    mut reader: Box<dyn Read + Send>,
    gate: &FlowGate,
    exit: &ExitCell,
    sink: &mpsc::Sender<PtyEvent>,
) {
    let mut buf = vec![0u8; READ_BUFFER];
    let mut quiet_since: Option<Instant> = None;
    loop {
        if !gate.wait_for_room() {
            break;
        }
        match poll_readable(fd, Duration::from_millis(100)) {
            Ok(true) => quiet_since = None,
            Ok(false) => {
                if exit.get().is_some() {
                    let since = *quiet_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= DRAIN_AFTER_EXIT {
                        break;
                    }
                }
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "polling a terminal failed");
                break;
            }
        }
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                gate.count_read(n);
                if sink.blocking_send(PtyEvent::Output(buf[..n].to_vec())).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted || e.kind() == std::io::ErrorKind::WouldBlock => {}
            // EIO: the slave side is closed everywhere; everything is read.
            Err(e) if e.raw_os_error() == Some(libc::EIO) => break,
            Err(e) => {
                tracing::warn!(error = %e, "reading a terminal failed");
                break;
            }
        }
    }
    let status = exit.wait();
    let _ = sink.blocking_send(PtyEvent::Exited(status));
}

fn poll_readable(fd: RawFd, timeout: Duration) -> std::io::Result<bool> {
    let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd for the duration of the call.
    let n = unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as libc::c_int) };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        return if e.kind() == std::io::ErrorKind::Interrupted { Ok(false) } else { Err(e) };
    }
    // POLLHUP as well: the read that follows returns what is left, then EIO.
    Ok(n > 0 && pfd.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0)
}

fn write_input(mut writer: Box<dyn Write + Send>, mut queue: mpsc::Receiver<Vec<u8>>) {
    while let Some(bytes) = queue.blocking_recv() {
        if let Err(e) = writer.write_all(&bytes).and_then(|_| writer.flush()) {
            tracing::debug!(error = %e, "a terminal took no more input");
            break;
        }
    }
}

/// The child's exit status, once known.
#[derive(Default)]
struct ExitCell {
    status: Mutex<Option<ExitStatus>>,
    known: Condvar,
}

impl ExitCell {
    fn set(&self, status: ExitStatus) {
        *self.status.lock().unwrap_or_else(|p| p.into_inner()) = Some(status);
        self.known.notify_all();
    }

    fn get(&self) -> Option<ExitStatus> {
        self.status.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn wait(&self) -> ExitStatus {
        let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(s) = status.as_ref() {
                return s.clone();
            }
            status = self.known.wait(status).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Whether the status came within `timeout`.
    fn wait_for(&self, timeout: Duration) -> bool {
        let status = self.status.lock().unwrap_or_else(|p| p.into_inner());
        let (status, _) =
            self.known.wait_timeout_while(status, timeout, |s| s.is_none()).unwrap_or_else(|p| p.into_inner());
        status.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Watermarks;

    fn command(script: &str) -> PtyCommand {
        PtyCommand {
            program: "sh".into(),
            args: vec!["-c".into(), script.into()],
            cwd: std::env::temp_dir(),
            clear_env: false,
            env: vec![],
            size: PtySize { cols: 80, rows: 24 },
        }
    }

    async fn run(script: &str) -> (Vec<u8>, ExitStatus) {
        let (tx, mut rx) = mpsc::channel(16);
        let gate = Arc::new(FlowGate::new(Watermarks::default(), 0));
        let pty = Pty::spawn(command(script), gate, tx).expect("spawn");
        let mut out = Vec::new();
        loop {
            match rx.recv().await.expect("the reader ends with an exit") {
                PtyEvent::Output(b) => out.extend_from_slice(&b),
                PtyEvent::Exited(s) => {
                    drop(pty);
                    return (out, s);
                }
            }
        }
    }

    #[tokio::test]
    async fn a_short_lived_child_gives_all_its_output_then_its_status() {
        for _ in 0..50 {
            let (out, status) = run("echo ready; exit 3").await;
            assert_eq!(out, b"ready\r\n");
            assert_eq!(status, ExitStatus { code: Some(3), signal: None });
        }
    }

    #[tokio::test]
    async fn a_big_burst_arrives_whole() {
        let (out, status) = run("head -c 3000000 /dev/zero | tr '\\0' x").await;
        assert_eq!(out.len(), 3_000_000);
        assert!(out.iter().all(|&b| b == b'x'));
        assert_eq!(status.code, Some(0));
    }

    #[tokio::test]
    async fn a_background_job_holding_the_terminal_does_not_hold_the_exit() {
        let started = Instant::now();
        let (out, status) = run("sleep 30 & echo bye").await;
        assert_eq!(out, b"bye\r\n");
        assert_eq!(status.code, Some(0));
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}
