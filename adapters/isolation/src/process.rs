//! Shell commands run as process trees the daemon fully controls.
//!
//! Every command gets its own process group, so killing it reaches the shell
//! *and* whatever it forked (pipelines, `sleep`, background jobs). The
//! [`ProcessGroup`] guard kills that group when it is dropped, which is what
//! makes aborting a tokio task that runs a command leave nothing behind.
//!
//! Known limit: a descendant that leaves the group on purpose (`setsid`,
//! `setpgid`) escapes. Catching those would need cgroups or a subreaper.

use std::ffi::OsStr;
use std::fmt;
use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};
use tokio::time::Instant;

use crate::jail::{Jail, JailEnv, Limits};

/// How much output a command may forward before the rest is dropped, so a
/// runaway command (`yes`, `cat /dev/urandom`) cannot eat the daemon's memory.
pub const DEFAULT_OUTPUT_LIMIT: usize = 1024 * 1024;

/// Longest piece handed out for a line that never ends, so one huge line is
/// still streamed and the read buffer stays small.
const MAX_PIECE: usize = 8 * 1024;

/// How long to keep reading pipes after the shell exited and its group was
/// killed. Only a process that escaped the group can hold them open longer;
/// waiting for it forever would hang the turn.
const DRAIN_GRACE: Duration = Duration::from_secs(1);

/// Owns a process group and kills all of it with SIGKILL when dropped, unless
/// the group was already cleaned up after its leader exited.
#[derive(Debug)]
pub struct ProcessGroup {
    pgid: libc::pid_t,
    armed: bool,
}

impl ProcessGroup {
    /// The group id, which is also the pid of its leader.
    pub fn pgid(&self) -> i32 {
        self.pgid
    }

    /// Sends SIGKILL to every process in the group. Harmless when the group is
    /// already gone; a no-op once [`ProcessGroup::sweep_after_exit`] ran, as
    /// the id may name someone else's group by then.
    pub fn kill(&mut self) {
        if self.armed {
            signal_group(self.pgid);
        }
    }

    /// To be called once the leader has exited *and been reaped*: kills what
    /// it left behind in its group (background jobs would otherwise hold the
    /// output pipes open and outlive the command) and disarms the drop.
    ///
    /// Safe against pid reuse: the kernel does not hand out a pid that is
    /// still in use as a group id, so while any straggler lives the id still
    /// names this group. When none is left the signal gets ESRCH, unless the
    /// whole pid space wrapped in between, which is not a practical concern.
    pub fn sweep_after_exit(&mut self) {
        if self.armed {
            signal_group(self.pgid);
            self.armed = false;
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        if self.armed {
            signal_group(self.pgid);
        }
    }
}

fn signal_group(pgid: libc::pid_t) {
    // A pgid of 0 or 1 would signal our own group or everything we may
    // signal; never let a bookkeeping bug turn into that.
    if pgid <= 1 {
        return;
    }
    // SAFETY: killpg has no memory-safety preconditions.
    let rc = unsafe { libc::killpg(pgid, libc::SIGKILL) };
    if rc != 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ESRCH) {
            tracing::warn!(pgid, error = %err, "could not kill process group");
        }
    }
}

/// When a process started, in clock ticks since boot (`/proc/<pid>/stat`
/// field 22): with the pid, it names one process across pid reuse.
pub fn process_start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: the fields
    // we want come after its closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 1..];
    // `rest` starts at field 3 (state), so field 22 is its 20th.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Kills the process group led by `pid` if `pid` is still the process that
/// started at `start_ticks`: for agents a killed daemon left behind. True if
/// a group was signalled.
pub fn kill_group_if_same(pid: u32, start_ticks: u64) -> bool {
    let Ok(pgid) = libc::pid_t::try_from(pid) else { return false };
    if process_start_ticks(pid) != Some(start_ticks) {
        return false;
    }
    signal_group(pgid);
    true
}

/// Spawns `cmd` as the leader of a new process group and returns the guard
/// for that group along with the child. For drivers that start long-lived
/// agent processes as well as for [`ShellCommand`].
pub fn spawn_in_group(cmd: &mut Command) -> io::Result<(Child, ProcessGroup)> {
    cmd.process_group(0);
    let child = cmd.spawn()?;
    let pid = child.id().ok_or_else(|| io::Error::other("spawned process has no pid"))?;
    let pgid = libc::pid_t::try_from(pid).map_err(|_| io::Error::other(format!("pid {pid} out of range")))?;
    Ok((child, ProcessGroup { pgid, armed: true }))
}

/// A long-lived process started by [`spawn_piped_in_group`], its three pipes
/// taken out of `child`. Dropping `group` kills it and all it forked.
pub struct PipedChild {
    pub child: Child,
    pub group: ProcessGroup,
    pub stdin: ChildStdin,
    pub stdout: ChildStdout,
    pub stderr: ChildStderr,
}

/// Spawns `program` with `args` and `env` in `cwd`, as the leader of a new
/// process group, with stdin, stdout and stderr piped: how drivers start the
/// agents they talk to over stdio.
///
/// With a `jail`, the agent runs inside it (see [`Jail`]).
pub fn spawn_piped_in_group<A, E, K, V>(
    program: &str,
    args: A,
    env: E,
    cwd: &Path,
    jail: Option<&Jail>,
) -> io::Result<PipedChild>
where
    A: IntoIterator,
    A::Item: AsRef<OsStr>,
    E: IntoIterator<Item = (K, V)>,
    K: AsRef<OsStr>,
    V: AsRef<OsStr>,
{
    let mut command = match jail {
        Some(jail) => jail.command(program, cwd, Limits::AGENT, JailEnv::Agent),
        None => Command::new(program),
    };
    command.args(args).envs(env).current_dir(cwd).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let (mut child, group) = spawn_in_group(&mut command)?;
    // Piped above, so always there; should one be missing, `group` kills the
    // child as it goes out of scope.
    let missing = |pipe: &str| io::Error::other(format!("its {pipe} was not piped"));
    let stdin = child.stdin.take().ok_or_else(|| missing("stdin"))?;
    let stdout = child.stdout.take().ok_or_else(|| missing("stdout"))?;
    let stderr = child.stderr.take().ok_or_else(|| missing("stderr"))?;
    Ok(PipedChild { child, group, stdin, stdout, stderr })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutputStream {
    Stdout,
    Stderr,
}

/// How a command's shell ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitState {
    Code(i32),
    Signal(i32),
}

impl ExitState {
    fn from_status(status: ExitStatus) -> ExitState {
        use std::os::unix::process::ExitStatusExt;
        match (status.code(), status.signal()) {
            (Some(code), _) => ExitState::Code(code),
            (None, Some(signal)) => ExitState::Signal(signal),
            // Neither is only possible for stopped/continued states, which
            // wait() does not report; keep a value rather than panic.
            (None, None) => ExitState::Code(-1),
        }
    }

    pub fn success(self) -> bool {
        self == ExitState::Code(0)
    }
}

impl fmt::Display for ExitState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitState::Code(code) => write!(f, "exit code {code}"),
            ExitState::Signal(signal) => write!(f, "killed by signal {signal}"),
        }
    }
}

/// Something a running command produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandEvent {
    /// A piece of output: one line (with its `\n`), or a part of a very long
    /// line, or the unterminated tail at end of stream. Invalid UTF-8 is
    /// replaced with U+FFFD.
    Output { stream: OutputStream, text: String },
    /// The output limit was reached; everything after is read and dropped.
    /// Sent once.
    Truncated { limit: usize },
    /// The shell exited and its output was drained. The last event.
    Exited(ExitState),
}

struct Pipe {
    reader: Pin<Box<dyn AsyncRead + Send>>,
    pending: Vec<u8>,
}

/// A `sh -c` command running in its own process group.
///
/// Dropping it kills the group, so dropping the future that drives it (task
/// abort, a lost `select!`) leaves no process behind.
pub struct ShellCommand {
    child: Child,
    group: ProcessGroup,
    stdout: Option<Pipe>,
    stderr: Option<Pipe>,
    status: Option<ExitState>,
    drain_deadline: Option<Instant>,
    queue: std::collections::VecDeque<CommandEvent>,
    limit: usize,
    forwarded: usize,
    dropped: u64,
    truncated: bool,
    done: bool,
}

impl fmt::Debug for ShellCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShellCommand")
            .field("pgid", &self.group.pgid)
            .field("status", &self.status)
            .field("forwarded", &self.forwarded)
            .field("dropped", &self.dropped)
            .finish_non_exhaustive()
    }
}

enum Wake {
    Read(OutputStream, io::Result<usize>),
    Exit(io::Result<ExitStatus>),
    DrainTimeout,
}

impl ShellCommand {
    /// Starts `sh -c command` in `cwd` with stdin closed. At most
    /// `output_limit` bytes of output are forwarded.
    pub fn spawn(command: &str, cwd: &Path, output_limit: usize) -> io::Result<ShellCommand> {
        ShellCommand::spawn_in(command, cwd, output_limit, None)
    }

    /// [`ShellCommand::spawn`], inside `jail` when there is one. Killing the
    /// group kills the jail's bwrap, which takes every jailed process down.
    pub fn spawn_in(command: &str, cwd: &Path, output_limit: usize, jail: Option<&Jail>) -> io::Result<ShellCommand> {
        ShellCommand::spawn_program("sh", ["-c", command], std::iter::empty::<(&str, &str)>(), cwd, output_limit, jail)
    }

    /// A program with its own argv and extra environment, the same way (an
    /// ACP agent's `terminal/create`).
    pub fn spawn_program<A, E, K, V>(
        program: &str,
        args: A,
        env: E,
        cwd: &Path,
        output_limit: usize,
        jail: Option<&Jail>,
    ) -> io::Result<ShellCommand>
    where
        A: IntoIterator,
        A::Item: AsRef<OsStr>,
        E: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        let mut cmd = match jail {
            Some(jail) => jail.command(program, cwd, Limits::COMMAND, JailEnv::Basic),
            None => Command::new(program),
        };
        cmd.args(args).envs(env).current_dir(cwd).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let (mut child, group) = spawn_in_group(&mut cmd)?;
        // From here on `group` kills the command if we bail out.
        let stdout = child.stdout.take().ok_or_else(|| io::Error::other("stdout was not piped"))?;
        let stderr = child.stderr.take().ok_or_else(|| io::Error::other("stderr was not piped"))?;
        Ok(ShellCommand {
            child,
            group,
            stdout: Some(Pipe { reader: Box::pin(stdout), pending: Vec::new() }),
            stderr: Some(Pipe { reader: Box::pin(stderr), pending: Vec::new() }),
            status: None,
            drain_deadline: None,
            queue: Default::default(),
            limit: output_limit,
            forwarded: 0,
            dropped: 0,
            truncated: false,
            done: false,
        })
    }

    pub fn pgid(&self) -> i32 {
        self.group.pgid()
    }

    /// Output bytes read but not forwarded because of the limit.
    pub fn dropped_bytes(&self) -> u64 {
        self.dropped
    }

    /// The next thing the command produced; `Ok(None)` after
    /// [`CommandEvent::Exited`] (or after [`ShellCommand::kill`]).
    ///
    /// Cancel safe: all state lives in `self`, so it can sit in a `select!`
    /// loop next to other branches without losing output.
    pub async fn next_event(&mut self) -> io::Result<Option<CommandEvent>> {
        loop {
            if let Some(event) = self.queue.pop_front() {
                return Ok(Some(event));
            }
            if self.done {
                return Ok(None);
            }
            if let Some(status) = self.status {
                if self.stdout.is_none() && self.stderr.is_none() {
                    self.done = true;
                    return Ok(Some(CommandEvent::Exited(status)));
                }
            }
            let deadline = self.drain_deadline;
            let wake = tokio::select! {
                r = fill(self.stdout.as_mut()) => Wake::Read(OutputStream::Stdout, r),
                r = fill(self.stderr.as_mut()) => Wake::Read(OutputStream::Stderr, r),
                s = self.child.wait(), if self.status.is_none() => Wake::Exit(s),
                _ = sleep_until_some(deadline) => Wake::DrainTimeout,
            };
            match wake {
                Wake::Read(stream, Ok(0)) => self.close_pipe(stream),
                Wake::Read(stream, Ok(_)) => self.split_pending(stream, false),
                Wake::Read(stream, Err(err)) if err.kind() == io::ErrorKind::Interrupted => {
                    tracing::trace!(?stream, "pipe read interrupted; retrying");
                }
                Wake::Read(_, Err(err)) => return Err(err),
                Wake::Exit(status) => {
                    let status = status?;
                    self.status = Some(ExitState::from_status(status));
                    self.group.sweep_after_exit();
                    self.drain_deadline = Some(Instant::now() + DRAIN_GRACE);
                }
                Wake::DrainTimeout => {
                    tracing::warn!(
                        pgid = self.group.pgid,
                        "command output still open after its shell exited; a process escaped the group"
                    );
                    self.close_pipe(OutputStream::Stdout);
                    self.close_pipe(OutputStream::Stderr);
                }
            }
        }
    }

    /// Kills the whole group and reaps the shell. No further events follow.
    pub async fn kill(&mut self) -> io::Result<()> {
        self.group.kill();
        self.done = true;
        self.queue.clear();
        self.stdout = None;
        self.stderr = None;
        if self.status.is_none() {
            let status = self.child.wait().await?;
            self.status = Some(ExitState::from_status(status));
        }
        self.group.sweep_after_exit();
        Ok(())
    }

    fn pipe_mut(&mut self, stream: OutputStream) -> &mut Option<Pipe> {
        match stream {
            OutputStream::Stdout => &mut self.stdout,
            OutputStream::Stderr => &mut self.stderr,
        }
    }

    fn close_pipe(&mut self, stream: OutputStream) {
        if self.pipe_mut(stream).is_some() {
            self.split_pending(stream, true);
            *self.pipe_mut(stream) = None;
        }
    }

    /// Cuts the bytes buffered for `stream` into pieces and queues them. At
    /// end of stream the unterminated tail goes too.
    fn split_pending(&mut self, stream: OutputStream, eof: bool) {
        let Some(pipe) = self.pipe_mut(stream).as_mut() else { return };
        let mut pending = std::mem::take(&mut pipe.pending);
        let mut start = 0;
        let mut pieces = Vec::new();
        loop {
            let rest = &pending[start..];
            let window = &rest[..rest.len().min(MAX_PIECE)];
            let len = if let Some(newline) = window.iter().position(|&b| b == b'\n') {
                newline + 1
            } else if rest.len() >= MAX_PIECE {
                match utf8_cut(rest, MAX_PIECE) {
                    0 => MAX_PIECE,
                    cut => cut,
                }
            } else if eof && !rest.is_empty() {
                rest.len()
            } else {
                break;
            };
            pieces.push(start..start + len);
            start += len;
        }
        for range in pieces {
            self.forward(stream, &pending[range]);
        }
        pending.drain(..start);
        if let Some(pipe) = self.pipe_mut(stream).as_mut() {
            pipe.pending = pending;
        }
    }

    fn forward(&mut self, stream: OutputStream, bytes: &[u8]) {
        if self.truncated {
            self.dropped += bytes.len() as u64;
            return;
        }
        let room = self.limit - self.forwarded;
        if bytes.len() <= room {
            self.forwarded += bytes.len();
            self.queue.push_back(CommandEvent::Output { stream, text: String::from_utf8_lossy(bytes).into_owned() });
            return;
        }
        let cut = utf8_cut(bytes, room);
        if cut > 0 {
            self.forwarded += cut;
            self.queue
                .push_back(CommandEvent::Output { stream, text: String::from_utf8_lossy(&bytes[..cut]).into_owned() });
        }
        self.dropped += (bytes.len() - cut) as u64;
        self.truncated = true;
        self.queue.push_back(CommandEvent::Truncated { limit: self.limit });
    }
}

/// Reads more of a pipe into its buffer; never resolves for a closed pipe so
/// it can sit in a `select!`. Cancel safe because `read_buf` is.
async fn fill(pipe: Option<&mut Pipe>) -> io::Result<usize> {
    match pipe {
        Some(pipe) => {
            pipe.pending.reserve(MAX_PIECE);
            pipe.reader.read_buf(&mut pipe.pending).await
        }
        None => std::future::pending().await,
    }
}

async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// The largest length `<= max` that does not split a UTF-8 sequence at its
/// end, so a piece cut for size decodes without a spurious U+FFFD.
fn utf8_cut(bytes: &[u8], max: usize) -> usize {
    if max >= bytes.len() {
        return bytes.len();
    }
    // Walk back over at most three continuation bytes to the lead byte.
    let mut lead = max;
    while lead > 0 && max - lead < 4 {
        lead -= 1;
        let b = bytes[lead];
        if b & 0b1100_0000 != 0b1000_0000 {
            let width = match b {
                0x00..=0x7f => 1,
                0xc0..=0xdf => 2,
                0xe0..=0xef => 3,
                0xf0..=0xf7 => 4,
                _ => 1,
            };
            return if lead + width > max { lead } else { max };
        }
    }
    max
}

/// How [`run_streaming`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    Exited(ExitState),
    /// `cancel` resolved first; the whole group was killed.
    Interrupted,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunReport {
    pub outcome: RunOutcome,
    /// Output past the limit was dropped (`dropped_bytes` of it).
    pub truncated: bool,
    pub dropped_bytes: u64,
}

/// Runs `sh -c command` in `cwd`, hands each output piece to `on_output` as
/// it comes, and returns how the command ended. When `cancel` resolves first
/// the whole process group is killed and the outcome is
/// [`RunOutcome::Interrupted`]. Dropping the returned future kills the group
/// too.
pub async fn run_streaming<F, C>(
    command: &str,
    cwd: &Path,
    output_limit: usize,
    mut on_output: F,
    cancel: C,
) -> io::Result<RunReport>
where
    F: FnMut(OutputStream, String),
    C: Future<Output = ()>,
{
    let mut cmd = ShellCommand::spawn(command, cwd, output_limit)?;
    tokio::pin!(cancel);
    let mut truncated = false;
    loop {
        let event = tokio::select! {
            event = cmd.next_event() => event?,
            () = &mut cancel => {
                cmd.kill().await?;
                return Ok(RunReport { outcome: RunOutcome::Interrupted, truncated, dropped_bytes: cmd.dropped_bytes() });
            }
        };
        match event {
            Some(CommandEvent::Output { stream, text }) => on_output(stream, text),
            Some(CommandEvent::Truncated { .. }) => truncated = true,
            Some(CommandEvent::Exited(state)) => {
                return Ok(RunReport {
                    outcome: RunOutcome::Exited(state),
                    truncated,
                    dropped_bytes: cmd.dropped_bytes(),
                });
            }
            None => return Err(io::Error::other("command ended without an exit status")),
        }
    }
}

/// Test helpers shared with the driver crates' tests (feature `testing`).
#[cfg(any(test, feature = "testing"))]
pub mod testing {
    use std::time::Duration;

    /// Whether any live (non-zombie) process is still in group `pgid`. Zombies
    /// do not count: they are dead, only waiting for whoever adopted them to
    /// reap them, which in a container may be never.
    pub fn group_has_live_members(pgid: i32) -> bool {
        let Ok(entries) = std::fs::read_dir("/proc") else { return false };
        for entry in entries.flatten() {
            if !entry.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
            // comm may hold spaces and parentheses; fields resume after the last ')'.
            let Some(close) = stat.rfind(')') else { continue };
            let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
            let (Some(state), Some(pgrp)) = (fields.first(), fields.get(2)) else { continue };
            if *state != "Z" && pgrp.parse::<i32>().ok() == Some(pgid) {
                return true;
            }
        }
        false
    }

    /// Waits up to `within` for group `pgid` to have no live member.
    pub async fn group_gone_within(pgid: i32, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if !group_has_live_members(pgid) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[cfg(test)]
mod orphan_tests {
    use super::*;

    #[test]
    fn start_ticks_name_a_process_and_only_it() {
        use std::os::unix::process::CommandExt;
        let mut child = std::process::Command::new("sleep").arg("30").process_group(0).spawn().unwrap();
        let pid = child.id();
        let ticks = process_start_ticks(pid).unwrap();
        assert_eq!(process_start_ticks(pid), Some(ticks), "stable");
        assert!(!kill_group_if_same(pid, ticks + 1), "another start time is another process");
        assert!(child.try_wait().unwrap().is_none());
        assert!(kill_group_if_same(pid, ticks));
        let status = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGKILL));
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{group_gone_within, group_has_live_members};
    use super::*;
    use std::sync::{Arc, Mutex};
    use tokio::sync::oneshot;

    fn tmp() -> tempfile::TempDir {
        tempfile::tempdir().expect("tempdir")
    }

    async fn collect(command: &str, limit: usize) -> (Vec<(OutputStream, String)>, RunReport) {
        let dir = tmp();
        let mut out = Vec::new();
        let report = run_streaming(command, dir.path(), limit, |s, t| out.push((s, t)), std::future::pending())
            .await
            .expect("run");
        (out, report)
    }

    #[tokio::test]
    async fn output_is_streamed_line_by_line_in_order() {
        let (out, report) = collect("for i in 1 2 3; do echo line $i; done; printf tail", DEFAULT_OUTPUT_LIMIT).await;
        let texts: Vec<&str> = out.iter().map(|(_, t)| t.as_str()).collect();
        assert_eq!(texts, ["line 1\n", "line 2\n", "line 3\n", "tail"]);
        assert!(out.iter().all(|(s, _)| *s == OutputStream::Stdout));
        assert_eq!(report.outcome, RunOutcome::Exited(ExitState::Code(0)));
        assert!(!report.truncated);
    }

    #[tokio::test]
    async fn stderr_is_read_too_and_kept_apart() {
        let (out, _) = collect("echo out; echo err >&2; echo out2", DEFAULT_OUTPUT_LIMIT).await;
        let stdout: Vec<&str> =
            out.iter().filter(|(s, _)| *s == OutputStream::Stdout).map(|(_, t)| t.as_str()).collect();
        let stderr: Vec<&str> =
            out.iter().filter(|(s, _)| *s == OutputStream::Stderr).map(|(_, t)| t.as_str()).collect();
        assert_eq!(stdout, ["out\n", "out2\n"]);
        assert_eq!(stderr, ["err\n"]);
    }

    #[tokio::test]
    async fn output_arrives_while_the_command_runs() {
        let dir = tmp();
        let (first_tx, first_rx) = oneshot::channel::<()>();
        let mut first_tx = Some(first_tx);
        let started = Instant::now();
        let run = tokio::spawn(async move {
            run_streaming(
                "echo early; sleep 0.5; echo late",
                dir.path(),
                DEFAULT_OUTPUT_LIMIT,
                move |_, _| {
                    if let Some(tx) = first_tx.take() {
                        let _ = tx.send(());
                    }
                },
                std::future::pending(),
            )
            .await
        });
        first_rx.await.expect("first piece");
        assert!(started.elapsed() < Duration::from_millis(400), "first line waited for the command to end");
        run.await.expect("join").expect("run");
    }

    #[tokio::test]
    async fn exit_codes_and_signals_are_reported() {
        assert_eq!(collect("exit 3", 1024).await.1.outcome, RunOutcome::Exited(ExitState::Code(3)));
        assert_eq!(collect("true", 1024).await.1.outcome, RunOutcome::Exited(ExitState::Code(0)));
        assert_eq!(collect("kill -9 $$", 1024).await.1.outcome, RunOutcome::Exited(ExitState::Signal(9)));
        assert_eq!(ExitState::Code(3).to_string(), "exit code 3");
    }

    #[tokio::test]
    async fn spawn_fails_cleanly_for_a_missing_cwd() {
        let dir = tmp();
        let missing = dir.path().join("nope");
        assert!(ShellCommand::spawn("true", &missing, 1024).is_err());
    }

    #[tokio::test]
    async fn invalid_utf8_is_replaced_not_lost() {
        let (out, _) = collect(r"printf 'a\377b\n'", 1024).await;
        assert_eq!(out, [(OutputStream::Stdout, "a\u{fffd}b\n".to_string())]);
    }

    #[tokio::test]
    async fn long_lines_are_cut_without_splitting_characters() {
        // 5000 two-byte characters on one line: more than one piece.
        let (out, _) =
            collect("i=0; while [ $i -lt 5000 ]; do printf 'é'; i=$((i+1)); done", DEFAULT_OUTPUT_LIMIT).await;
        assert!(out.len() >= 2, "{} pieces", out.len());
        let joined: String = out.iter().map(|(_, t)| t.as_str()).collect();
        assert_eq!(joined, "é".repeat(5000));
    }

    #[tokio::test]
    async fn output_past_the_limit_is_dropped_and_noted() {
        let (out, report) = collect("yes | head -c 100000", 1000).await;
        let forwarded: usize = out.iter().map(|(_, t)| t.len()).sum();
        assert_eq!(forwarded, 1000);
        assert!(report.truncated);
        assert_eq!(report.dropped_bytes, 99_000);
        assert_eq!(report.outcome, RunOutcome::Exited(ExitState::Code(0)));
    }

    #[tokio::test]
    async fn background_leftovers_are_killed_when_the_shell_exits() {
        let dir = tmp();
        let mut cmd = ShellCommand::spawn("sleep 30 & echo started", dir.path(), 1024).expect("spawn");
        let pgid = cmd.pgid();
        let started = Instant::now();
        let mut events = Vec::new();
        while let Some(event) = cmd.next_event().await.expect("event") {
            events.push(event);
        }
        assert!(started.elapsed() < Duration::from_secs(2), "waited for the background sleep");
        assert_eq!(events.last(), Some(&CommandEvent::Exited(ExitState::Code(0))));
        assert!(group_gone_within(pgid, Duration::from_secs(1)).await);
    }

    #[tokio::test]
    async fn interrupt_kills_the_whole_tree_fast() {
        let dir = tmp();
        let pgid = Arc::new(Mutex::new(None::<i32>));
        let (cancel_tx, cancel_rx) = oneshot::channel::<()>();
        let seen = pgid.clone();
        // The shell forks `sleep` (two commands, so it cannot exec it away).
        let run = tokio::spawn(async move {
            run_streaming(
                "echo $$; sleep 30; echo never",
                dir.path(),
                1024,
                move |_, text| {
                    if let Ok(n) = text.trim().parse() {
                        *seen.lock().expect("lock") = Some(n);
                    }
                },
                async move {
                    let _ = cancel_rx.await;
                },
            )
            .await
        });
        let pgid = wait_for(&pgid).await;
        assert!(group_has_live_members(pgid));
        let started = Instant::now();
        let _ = cancel_tx.send(());
        let report = run.await.expect("join").expect("run");
        assert_eq!(report.outcome, RunOutcome::Interrupted);
        assert!(group_gone_within(pgid, Duration::from_secs(1)).await, "group {pgid} survived");
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test]
    async fn dropping_the_running_future_kills_the_group() {
        let dir = tmp();
        let pgid = Arc::new(Mutex::new(None::<i32>));
        let seen = pgid.clone();
        let path = dir.path().to_path_buf();
        let task = tokio::spawn(async move {
            run_streaming(
                "echo $$; sleep 30; echo never",
                &path,
                1024,
                move |_, text| {
                    if let Ok(n) = text.trim().parse() {
                        *seen.lock().expect("lock") = Some(n);
                    }
                },
                std::future::pending(),
            )
            .await
        });
        let pgid = wait_for(&pgid).await;
        task.abort();
        assert!(task.await.expect_err("aborted").is_cancelled());
        assert!(group_gone_within(pgid, Duration::from_secs(1)).await, "group {pgid} survived the abort");
    }

    #[tokio::test]
    async fn explicit_group_kill_reaches_children() {
        let dir = tmp();
        let mut cmd = ShellCommand::spawn("sleep 30; true", dir.path(), 1024).expect("spawn");
        let pgid = cmd.pgid();
        cmd.kill().await.expect("kill");
        assert_eq!(cmd.next_event().await.expect("event"), None);
        assert!(group_gone_within(pgid, Duration::from_secs(1)).await);
    }

    async fn wait_for(slot: &Mutex<Option<i32>>) -> i32 {
        for _ in 0..200 {
            if let Some(v) = *slot.lock().expect("lock") {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the command never printed its pid");
    }

    #[test]
    fn utf8_cut_keeps_sequences_whole() {
        let s = "aé€😀".as_bytes(); // 1 + 2 + 3 + 4 bytes
        assert_eq!(utf8_cut(s, 1), 1);
        assert_eq!(utf8_cut(s, 2), 1);
        assert_eq!(utf8_cut(s, 3), 3);
        assert_eq!(utf8_cut(s, 5), 3);
        assert_eq!(utf8_cut(s, 6), 6);
        assert_eq!(utf8_cut(s, 9), 6);
        assert_eq!(utf8_cut(s, 10), 10);
        assert_eq!(utf8_cut(s, 99), 10);
        assert_eq!(utf8_cut(&[0x80, 0x80, 0x80, 0x80, 0x80], 3), 3);
    }
}
