//! One long-lived shell and the commands it runs, one at a time, wherever it
//! was started (on the host, in a bubblewrap jail, in a container).

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fmt;
use std::io;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::protocol::{self, Nonce, ProtocolError, Report, SentinelScanner, Utf8Decoder};
use bosun_isolation::process::OutputStream;
use bosun_isolation::tree;
use bosun_isolation::{IsolationError, ShellHost, ShellProcess, ShellSpec};

/// Bytes asked for per read: a fast writer's output comes out in pieces this
/// big, a slow one's as it is written.
const READ_SIZE: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ShellError {
    #[error(transparent)]
    Start(#[from] IsolationError),
    #[error("the shell did not answer within {0:?} of starting")]
    StartTimeout(Duration),
    #[error("talking to the shell: {0}")]
    Io(#[from] io::Error),
    #[error("the shell has exited")]
    Gone,
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error("no randomness for the command's sentinel: {0}")]
    Random(String),
    #[error("the command holds a NUL byte, which a shell cannot be given")]
    Nul,
    #[error("a command is already running in this shell")]
    Busy,
    #[error("no command is running in this shell")]
    Idle,
}

/// Something the running command produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShellEvent {
    /// Output as it came. `bytes` counts what the command wrote, which may
    /// differ from `text.len()`: invalid UTF-8 is replaced and a character
    /// cut by a read waits for its end.
    Output { stream: OutputStream, text: String, bytes: usize },
    /// The command is over and both its pipes are drained.
    Finished(Finished),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finished {
    /// `$?` after the command, as the shell reports it (128 + N for a
    /// command killed by signal N).
    pub status: i32,
    /// The command ended the shell (`exit`, `set -e`): start a new one.
    pub shell_exited: bool,
}

struct Pipe {
    stream: OutputStream,
    reader: Pin<Box<dyn AsyncRead + Send>>,
    /// Read but not scanned yet.
    read: Vec<u8>,
    scanner: SentinelScanner,
    decoder: Utf8Decoder,
    report: Option<Vec<u8>>,
    eof: bool,
}

impl Pipe {
    fn new(stream: OutputStream, reader: Pin<Box<dyn AsyncRead + Send>>) -> Pipe {
        Pipe {
            stream,
            reader,
            read: Vec::with_capacity(READ_SIZE),
            scanner: SentinelScanner::idle(),
            decoder: Utf8Decoder::default(),
            report: None,
            eof: false,
        }
    }

    fn waiting(&self) -> bool {
        self.report.is_none() && !self.eof
    }

    /// Reads what the pipe has; never resolves once the command's report is
    /// in or the pipe ended, so it can sit in a `select!`. Cancel safe:
    /// `read_buf` only appends to `self.read`.
    async fn fill(&mut self) -> io::Result<usize> {
        if !self.waiting() {
            return std::future::pending().await;
        }
        self.read.reserve(READ_SIZE);
        self.reader.read_buf(&mut self.read).await
    }

    /// Scans what was read, queueing the output.
    fn scan(&mut self, queue: &mut VecDeque<ShellEvent>) -> Result<(), ProtocolError> {
        let scanned = self.scanner.push(&self.read)?;
        self.read.clear();
        self.output(scanned.output, queue);
        if scanned.report.is_some() {
            self.report = scanned.report;
            let tail = self.decoder.finish();
            self.queue_text(tail, 0, queue);
        }
        Ok(())
    }

    fn output(&mut self, bytes: Vec<u8>, queue: &mut VecDeque<ShellEvent>) {
        if bytes.is_empty() {
            return;
        }
        let text = self.decoder.decode(&bytes);
        self.queue_text(text, bytes.len(), queue);
    }

    fn queue_text(&self, text: String, bytes: usize, queue: &mut VecDeque<ShellEvent>) {
        if !text.is_empty() || bytes > 0 {
            queue.push_back(ShellEvent::Output { stream: self.stream, text, bytes });
        }
    }

    /// At the end of the stream, what was held back is output after all.
    fn flush_at_eof(&mut self, queue: &mut VecDeque<ShellEvent>) {
        let held = self.scanner.take_held();
        self.output(held, queue);
        let tail = self.decoder.finish();
        self.queue_text(tail, 0, queue);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Frame {
    Hello,
    Command,
}

/// A long-lived shell, talked to through the sentinel protocol (see
/// `protocol.rs`). Dropping it kills the shell and everything below it.
pub struct Shell {
    stdin: Pin<Box<dyn AsyncWrite + Send>>,
    stdout: Pipe,
    stderr: Pipe,
    pid: u32,
    /// Whether `pid` was found to be the shell that answered: only then is
    /// it signalled, or its descendants killed.
    pid_confirmed: bool,
    leader_pid: u32,
    cwd: PathBuf,
    in_flight: Option<Frame>,
    queue: VecDeque<ShellEvent>,
    exited: bool,
    _guard: Box<dyn Send + Sync>,
}

impl fmt::Debug for Shell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shell")
            .field("pid", &self.pid)
            .field("cwd", &self.cwd)
            .field("in_flight", &self.in_flight)
            .finish_non_exhaustive()
    }
}

impl Shell {
    /// Starts a shell on `host` (the host itself, a jail or a container)
    /// and waits (up to `timeout`) for it to answer; with `restore`, it
    /// first goes back to that directory if it still can.
    pub async fn start(
        host: &dyn ShellHost,
        spec: ShellSpec<'_>,
        restore: Option<&Path>,
        timeout: Duration,
    ) -> Result<Shell, ShellError> {
        let started = async {
            let process = host.start_shell(spec).await?;
            let mut shell = Shell::from_process(process, spec.cwd);
            shell.hello(restore).await?;
            Ok(shell)
        };
        tokio::time::timeout(timeout, started).await.map_err(|_| ShellError::StartTimeout(timeout))?
    }

    /// A shell over an already started process; [`Shell::start`] also says
    /// hello, which checks it answers and learns its directory.
    fn from_process(process: ShellProcess, cwd: &Path) -> Shell {
        Shell {
            stdin: process.stdin,
            stdout: Pipe::new(OutputStream::Stdout, process.stdout),
            stderr: Pipe::new(OutputStream::Stderr, process.stderr),
            pid: process.pid,
            pid_confirmed: false,
            leader_pid: process.leader_pid,
            cwd: cwd.to_path_buf(),
            in_flight: None,
            queue: VecDeque::new(),
            exited: false,
            _guard: process.guard,
        }
    }

    async fn hello(&mut self, restore: Option<&Path>) -> Result<(), ShellError> {
        let nonce = self.arm(Frame::Hello)?;
        self.write(&protocol::hello_frame(&nonce, restore)).await?;
        let report = loop {
            match self.step().await? {
                // Anything a shell prints on its own at start is not ours.
                Some(_) => continue,
                None => break self.take_report()?,
            }
        };
        self.in_flight = None;
        self.note_cwd(&report);
        // The pid given may be a parent of the shell (a container runtime's):
        // find the one that reported itself.
        let inner = u32::try_from(report.number).ok();
        if let Some(found) = inner.and_then(|inner| tree::find_by_inner_pid(self.pid, inner)) {
            self.pid = found;
            self.pid_confirmed = true;
        } else {
            tracing::warn!(
                pid = self.pid,
                reported = report.number,
                "the shell's pid could not be confirmed: its commands can only be stopped with the shell"
            );
        }
        Ok(())
    }

    /// The shell's pid as the daemon sees it.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The process that was started for the shell (`bwrap` for a jailed
    /// one, the shell itself on the host): what to report as the session's
    /// agent process.
    pub fn leader_pid(&self) -> u32 {
        self.leader_pid
    }

    /// The directory the shell last reported.
    pub fn cwd(&self) -> &Path {
        &self.cwd
    }

    /// Whether the shell is still there to take a command.
    pub fn is_alive(&self) -> bool {
        !self.exited && !self.stdout.eof && !self.stderr.eof && (!self.pid_confirmed || tree::is_alive(self.pid))
    }

    /// Sends `command` to the shell; its output and end then come from
    /// [`Shell::next`].
    pub async fn send(&mut self, command: &str) -> Result<(), ShellError> {
        if command.contains('\0') {
            return Err(ShellError::Nul);
        }
        if self.in_flight.is_some() {
            return Err(ShellError::Busy);
        }
        if self.exited {
            return Err(ShellError::Gone);
        }
        let nonce = self.arm(Frame::Command)?;
        self.write(&protocol::command_frame(command, &nonce)).await?;
        // Output that came after the last command's end (a background job's)
        // is this command's.
        self.stdout.scan(&mut self.queue)?;
        self.stderr.scan(&mut self.queue)?;
        Ok(())
    }

    fn arm(&mut self, frame: Frame) -> Result<Nonce, ShellError> {
        let nonce = Nonce::fresh().map_err(|e| ShellError::Random(e.to_string()))?;
        for pipe in [&mut self.stdout, &mut self.stderr] {
            pipe.scanner.arm(nonce.marker());
            pipe.report = None;
        }
        self.in_flight = Some(frame);
        Ok(nonce)
    }

    async fn write(&mut self, frame: &[u8]) -> Result<(), ShellError> {
        let written = async {
            self.stdin.write_all(frame).await?;
            self.stdin.flush().await
        };
        match written.await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                self.exited = true;
                self.in_flight = None;
                Err(ShellError::Gone)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The next thing the running command produced. After
    /// [`ShellEvent::Finished`] the shell takes the next command;
    /// [`ShellError::Gone`] means the shell died (or replaced itself with
    /// `exec`) before reporting.
    ///
    /// Cancel safe: all state lives in `self`, so it can sit in a `select!`.
    pub async fn next(&mut self) -> Result<ShellEvent, ShellError> {
        if self.in_flight != Some(Frame::Command) && self.queue.is_empty() {
            return Err(ShellError::Idle);
        }
        match self.step().await? {
            Some(event) => Ok(event),
            None => {
                let report = self.take_report()?;
                self.in_flight = None;
                self.note_cwd(&report);
                self.exited = report.exited;
                let status = i32::try_from(report.number).unwrap_or(i32::MAX);
                Ok(ShellEvent::Finished(Finished { status, shell_exited: report.exited }))
            }
        }
    }

    /// Output, or `None` once both reports are in.
    async fn step(&mut self) -> Result<Option<ShellEvent>, ShellError> {
        loop {
            if let Some(event) = self.queue.pop_front() {
                return Ok(Some(event));
            }
            if self.stdout.report.is_some() && self.stderr.report.is_some() {
                return Ok(None);
            }
            if self.stdout.eof || self.stderr.eof {
                self.in_flight = None;
                self.exited = true;
                return Err(ShellError::Gone);
            }
            let (stream, read) = tokio::select! {
                read = self.stdout.fill() => (OutputStream::Stdout, read),
                read = self.stderr.fill() => (OutputStream::Stderr, read),
            };
            let pipe = match stream {
                OutputStream::Stdout => &mut self.stdout,
                OutputStream::Stderr => &mut self.stderr,
            };
            match read {
                Ok(0) => {
                    pipe.eof = true;
                    pipe.flush_at_eof(&mut self.queue);
                }
                Ok(_) => pipe.scan(&mut self.queue)?,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn take_report(&mut self) -> Result<Report, ShellError> {
        self.stderr.report = None;
        let report = self.stdout.report.take().ok_or(ShellError::Gone)?;
        Ok(protocol::parse_report(&report)?)
    }

    fn note_cwd(&mut self, report: &Report) {
        // An empty $PWD (unset by the command) says nothing new.
        if !report.pwd.is_empty() {
            self.cwd = PathBuf::from(OsString::from_vec(report.pwd.clone()));
        }
    }

    /// Ends the running command: signals the shell to abandon it (see
    /// `protocol.rs`), then kills every process the shell started (the
    /// command's, and background jobs of earlier commands) but not the
    /// shell, which then reports the command's end. Returns how many
    /// processes were killed; `None` when the shell's pid was not confirmed
    /// at start, so nothing can be signalled safely: only dropping the shell
    /// stops the command then.
    pub async fn abort_command(&mut self) -> Option<usize> {
        if !self.pid_confirmed {
            return None;
        }
        if self.in_flight == Some(Frame::Command) {
            // First, so that the shell knows to give up on the rest of the
            // command by the time its foreground process dies.
            tree::signal(self.pid, protocol::ABORT_SIGNAL);
        }
        Some(self.kill_descendants().await)
    }

    /// Kills every process below the shell, not the shell. Runs on a
    /// blocking thread: it walks `/proc`.
    pub async fn kill_descendants(&mut self) -> usize {
        if !self.pid_confirmed {
            return 0;
        }
        let pid = self.pid;
        match tokio::task::spawn_blocking(move || tree::kill_descendants(pid)).await {
            Ok(killed) => killed,
            Err(err) => {
                tracing::warn!(error = %err, "the kill walk did not finish");
                0
            }
        }
    }

    /// Sends `command` and waits for its end, collecting its output: for
    /// callers with nothing to interleave (benchmarks, tests).
    pub async fn run(&mut self, command: &str) -> Result<Collected, ShellError> {
        self.send(command).await?;
        let mut collected = Collected::default();
        loop {
            match self.next().await? {
                ShellEvent::Output { stream: OutputStream::Stdout, text, .. } => collected.stdout.push_str(&text),
                ShellEvent::Output { stream: OutputStream::Stderr, text, .. } => collected.stderr.push_str(&text),
                ShellEvent::Finished(finished) => {
                    collected.finished = finished;
                    return Ok(collected);
                }
            }
        }
    }
}

/// What [`Shell::run`] gathered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collected {
    pub stdout: String,
    pub stderr: String,
    pub finished: Finished,
}

impl Default for Collected {
    fn default() -> Collected {
        Collected {
            stdout: String::new(),
            stderr: String::new(),
            finished: Finished { status: 0, shell_exited: false },
        }
    }
}
