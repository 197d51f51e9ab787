//! Where a session's work runs ([`Isolation`]: the host, a bubblewrap jail
//! or a container), and the one thing every such place can do: start a
//! long-lived shell ([`ShellHost`]), which hands back the same
//! [`ShellProcess`] wherever it runs.

use std::fmt;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::process::Stdio;
use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::process::Command;

use crate::jail::{Jail, JailEnv, Limits};
use crate::process::{spawn_in_group, ProcessGroup};
use crate::tree;

/// A long-lived `sh` started for one session, talked to over its stdio.
pub struct ShellProcess {
    pub stdin: Pin<Box<dyn AsyncWrite + Send>>,
    pub stdout: Pin<Box<dyn AsyncRead + Send>>,
    pub stderr: Pin<Box<dyn AsyncRead + Send>>,
    /// The shell's pid as the daemon sees it (the daemon's pid namespace):
    /// the processes below it are what an interrupt or a timeout kills.
    pub pid: u32,
    /// The process that was started for it (`sh` itself on the host, `bwrap`
    /// around it in a jail, the engine's in a container): the pid to start
    /// looking below when the shell's own pid must be confirmed.
    pub leader_pid: u32,
    /// Dropping it kills the shell and everything it started (and removes
    /// its container, where there is one).
    pub guard: Box<dyn Send + Sync>,
}

impl fmt::Debug for ShellProcess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShellProcess").field("pid", &self.pid).finish_non_exhaustive()
    }
}

/// What a shell is started with.
#[derive(Debug, Clone, Copy)]
pub struct ShellSpec<'a> {
    pub session_id: &'a str,
    /// The session's working directory (its worktree, when it has one): the
    /// shell starts there and it is the one place it may write.
    pub cwd: &'a Path,
    /// Whether the session's policy opens the network.
    pub network: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum IsolationError {
    #[error("the container engine is unreachable at {socket}: {reason}")]
    Unreachable { socket: String, reason: String },
    #[error("image {image:?} is not available: {reason}")]
    Image { image: String, reason: String },
    #[error("starting the shell: {0}")]
    Start(String),
}

/// A place shells can be started in, shared by every session that uses it.
pub trait ShellHost: Send + Sync + fmt::Debug {
    /// A short name for messages: `"docker"`.
    fn name(&self) -> &'static str;
    fn start_shell<'a>(&'a self, spec: ShellSpec<'a>) -> BoxFuture<'a, Result<ShellProcess, IsolationError>>;
}

/// Where a session's agent and commands run: what the session was created
/// with (`"sandbox"`), resolved by the daemon before any driver starts.
#[derive(Debug, Clone)]
pub enum Isolation {
    /// On the host, as the daemon's user, in the session's directory.
    Host,
    /// In a bubblewrap jail (`"sandbox":"bwrap"`).
    Jail(Jail),
    /// In a container of a configured engine (`"sandbox":"docker"`).
    Container(Arc<dyn ShellHost>),
}

impl Isolation {
    /// The jail, when the session runs in one.
    pub fn jail(&self) -> Option<&Jail> {
        match self {
            Isolation::Jail(jail) => Some(jail),
            _ => None,
        }
    }

    /// A short name for messages: `"host"`, `"bwrap"`, `"docker"`.
    pub fn name(&self) -> &'static str {
        match self {
            Isolation::Host => "host",
            Isolation::Jail(_) => "bwrap",
            Isolation::Container(host) => host.name(),
        }
    }

    /// Where a shell for this session is started.
    pub fn shells(&self) -> &dyn ShellHost {
        match self {
            Isolation::Host => &HostShells,
            Isolation::Jail(jail) => jail,
            Isolation::Container(host) => host.as_ref(),
        }
    }
}

/// Shells started on the host.
#[derive(Debug, Clone, Copy)]
pub struct HostShells;

impl ShellHost for HostShells {
    fn name(&self) -> &'static str {
        "host"
    }

    fn start_shell<'a>(&'a self, spec: ShellSpec<'a>) -> BoxFuture<'a, Result<ShellProcess, IsolationError>> {
        Box::pin(start_local_shell(spec, None))
    }
}

impl ShellHost for Jail {
    fn name(&self) -> &'static str {
        "bwrap"
    }

    fn start_shell<'a>(&'a self, spec: ShellSpec<'a>) -> BoxFuture<'a, Result<ShellProcess, IsolationError>> {
        Box::pin(start_local_shell(spec, Some(self)))
    }
}

/// Kills the process group (the host `sh`, or `bwrap` and with it the whole
/// jail) when dropped.
struct LocalGuard {
    _child: tokio::process::Child,
    _group: ProcessGroup,
}

/// Starts `sh` reading commands on its stdin, in `spec.cwd`, on the host or
/// in `jail`, as the leader of a new process group. In a jail the shell is
/// found below `bwrap` by the pid it reports for itself, so
/// [`ShellProcess::pid`] is the shell's. That takes an answer from the jailed
/// shell: callers bound the start with a timeout.
async fn start_local_shell(spec: ShellSpec<'_>, jail: Option<&Jail>) -> Result<ShellProcess, IsolationError> {
    let mut command = match jail {
        Some(jail) => jail.command("sh", spec.cwd, Limits::SHELL, JailEnv::Basic),
        None => Command::new("sh"),
    };
    command.current_dir(spec.cwd).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    command.kill_on_drop(true);
    let start_error = |e: io::Error| IsolationError::Start(format!("sh in {}: {e}", spec.cwd.display()));
    let (mut child, group) = spawn_in_group(&mut command).map_err(start_error)?;
    let leader_pid = child.id().ok_or_else(|| IsolationError::Start("the shell exited at once".into()))?;
    let missing = |pipe: &str| IsolationError::Start(format!("the shell's {pipe} was not piped"));
    let mut stdin = child.stdin.take().ok_or_else(|| missing("stdin"))?;
    let mut stdout = child.stdout.take().ok_or_else(|| missing("stdout"))?;
    let stderr = child.stderr.take().ok_or_else(|| missing("stderr"))?;
    let pid = match jail {
        None => leader_pid,
        Some(_) => {
            // Nothing else is on stdout yet: one line with `$$`.
            stdin.write_all(b"echo $$\n").await.map_err(start_error)?;
            let line = read_line(&mut stdout).await.map_err(start_error)?;
            let inner: u32 = line
                .trim()
                .parse()
                .map_err(|_| IsolationError::Start(format!("the jailed shell said {line:?} for its pid")))?;
            tree::find_by_inner_pid(leader_pid, inner).ok_or_else(|| {
                IsolationError::Start(format!("no process below bwrap ({leader_pid}) is the jailed shell ({inner})"))
            })?
        }
    };
    Ok(ShellProcess {
        stdin: Box::pin(stdin),
        stdout: Box::pin(stdout),
        stderr: Box::pin(stderr),
        pid,
        leader_pid,
        guard: Box::new(LocalGuard { _child: child, _group: group }),
    })
}

/// Reads up to a newline, one byte at a time so nothing after it is taken
/// from the pipe.
async fn read_line(reader: &mut (impl AsyncRead + Unpin)) -> io::Result<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() < 64 {
        if reader.read(&mut byte).await? == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the shell closed its stdout"));
        }
        if byte[0] == b'\n' {
            break;
        }
        line.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}
