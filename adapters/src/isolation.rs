//! What the `shell` provider needs from wherever its shell runs: a host
//! process, a bubblewrap jail or a container all hand back the same
//! [`ShellProcess`].

use std::fmt;
use std::path::Path;
use std::pin::Pin;

use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite};

/// A long-lived `sh` started for one session, talked to over its stdio.
pub struct ShellProcess {
    pub stdin: Pin<Box<dyn AsyncWrite + Send>>,
    pub stdout: Pin<Box<dyn AsyncRead + Send>>,
    pub stderr: Pin<Box<dyn AsyncRead + Send>>,
    /// The shell's pid as the daemon sees it (the daemon's pid namespace):
    /// the processes below it are what an interrupt or a timeout kills.
    pub pid: u32,
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
