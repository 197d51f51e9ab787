//! The one way CLI-based adapters run a command: bounded in time, retried
//! when a retry is safe, killed when late, output captured.

use std::ffi::{OsStr, OsString};
use std::io;
use std::process::Stdio;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::error::{Result, TermError};

/// How long a call to a terminal may take and how often it is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct IpcConfig {
    #[serde(with = "millis")]
    pub timeout: Duration,
    /// Extra attempts after a timeout or a transient failure (at most 2 are
    /// used, whatever is configured: a hung terminal should not cost more).
    pub retries: u32,
}

pub const MAX_RETRIES: u32 = 2;

impl Default for IpcConfig {
    fn default() -> Self {
        IpcConfig { timeout: Duration::from_secs(3), retries: MAX_RETRIES }
    }
}

impl IpcConfig {
    pub fn attempts(&self) -> u32 {
        1 + self.retries.min(MAX_RETRIES)
    }
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(value.as_millis().min(u64::MAX as u128) as u64)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(deserializer)?))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutput {
    /// The exit code; `None` if a signal ended the process.
    pub code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl CommandOutput {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).trim().to_string()
    }
}

/// One command to run.
#[derive(Debug, Clone)]
pub struct Invocation {
    program: OsString,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    stdin: Option<Vec<u8>>,
    capture_output: bool,
    idempotent: bool,
}

impl Invocation {
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        Invocation {
            program: program.as_ref().to_owned(),
            args: Vec::new(),
            env: Vec::new(),
            stdin: None,
            capture_output: true,
            idempotent: true,
        }
    }
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args.extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env.push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }
    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(bytes.into());
        self
    }
    /// For programs that fork a server which keeps our pipes open (xclip,
    /// wl-copy): waiting for their EOF would wait for the server to end.
    pub fn discard_output(mut self) -> Self {
        self.capture_output = false;
        self
    }
    /// A command with an effect that must not happen twice (opening a
    /// window) is not retried after a timeout: it may have run.
    pub fn not_idempotent(mut self) -> Self {
        self.idempotent = false;
        self
    }
    pub fn program(&self) -> &OsStr {
        &self.program
    }
}

#[derive(Debug, Clone)]
pub struct CommandRunner {
    terminal: String,
    config: IpcConfig,
}

impl CommandRunner {
    pub fn new(terminal: impl Into<String>, config: IpcConfig) -> Self {
        CommandRunner { terminal: terminal.into(), config }
    }

    pub fn config(&self) -> IpcConfig {
        self.config
    }

    /// Runs `invocation`, retrying timeouts and transient spawn failures.
    /// A non-zero exit is returned, not retried: the command ran.
    pub async fn run(&self, invocation: &Invocation) -> Result<CommandOutput> {
        let attempts = if invocation.idempotent { self.config.attempts() } else { 1 };
        let mut last_error = None;
        for attempt in 1..=attempts {
            match self.run_once(invocation).await {
                Ok(output) => return Ok(output),
                Err(Failure::Fatal(error)) => return Err(error),
                Err(Failure::Transient(error)) => {
                    tracing::debug!(terminal = %self.terminal, attempt, %error, "retrying");
                    last_error = Some(error);
                }
                Err(Failure::TimedOut) => {
                    tracing::debug!(terminal = %self.terminal, attempt, "timed out");
                    last_error = Some(TermError::Timeout {
                        what: format!("{} {}", invocation.program.to_string_lossy(), self.describe_args(invocation)),
                        after: self.config.timeout,
                        attempts: attempt,
                    });
                }
            }
        }
        Err(last_error.unwrap_or_else(|| TermError::Ipc("no attempt was made".into())))
    }

    /// As [`run`](Self::run), and a non-zero exit is an `Ipc` error carrying
    /// the command's stderr.
    pub async fn run_checked(&self, invocation: &Invocation) -> Result<CommandOutput> {
        let output = self.run(invocation).await?;
        if output.success() {
            Ok(output)
        } else {
            Err(TermError::Ipc(format!(
                "{} {} exited with {}: {}",
                invocation.program.to_string_lossy(),
                self.describe_args(invocation),
                output.code.map_or_else(|| "a signal".to_string(), |c| c.to_string()),
                output.stderr_text()
            )))
        }
    }

    fn describe_args(&self, invocation: &Invocation) -> String {
        invocation.args.iter().take(3).map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" ")
    }

    async fn run_once(&self, invocation: &Invocation) -> std::result::Result<CommandOutput, Failure> {
        let mut command = Command::new(&invocation.program);
        command
            .args(&invocation.args)
            .envs(invocation.env.iter().map(|(k, v)| (k, v)))
            .stdin(if invocation.stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .kill_on_drop(true)
            // Its own process group, so a timeout kills what it started too
            // (a shell script's sleep, a CLI's helper), not just the leader.
            .process_group(0);
        if invocation.capture_output {
            command.stdout(Stdio::piped()).stderr(Stdio::piped());
        } else {
            command.stdout(Stdio::null()).stderr(Stdio::null());
        }
        let mut child =
            spawn_when_not_busy(&mut command).await.map_err(|error| self.spawn_failure(&invocation.program, error))?;
        let group = child.id();
        let stdin_bytes = invocation.stdin.clone();
        let mut stdin = child.stdin.take();
        let work = async move {
            if let (Some(pipe), Some(bytes)) = (stdin.as_mut(), stdin_bytes) {
                // A program that exits without reading its input is not an
                // error of ours; its exit status says what happened.
                let _ = pipe.write_all(&bytes).await;
            }
            drop(stdin);
            child.wait_with_output().await
        };
        match tokio::time::timeout(self.config.timeout, work).await {
            Ok(Ok(output)) => {
                Ok(CommandOutput { code: output.status.code(), stdout: output.stdout, stderr: output.stderr })
            }
            Ok(Err(error)) => Err(Failure::Transient(TermError::Ipc(format!("waiting for a command: {error}")))),
            Err(_elapsed) => {
                // The future (and the child, kill_on_drop) is gone; its
                // group may still hold children.
                if let Some(pid) = group {
                    kill_group(pid);
                }
                Err(Failure::TimedOut)
            }
        }
    }

    fn spawn_failure(&self, program: &OsStr, error: io::Error) -> Failure {
        match error.kind() {
            io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied => Failure::Fatal(TermError::NotSupported {
                terminal: self.terminal.clone(),
                what: format!("running {} ({error})", program.to_string_lossy()),
            }),
            io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock | io::ErrorKind::ExecutableFileBusy => {
                Failure::Transient(TermError::Ipc(format!("starting {}: {error}", program.to_string_lossy())))
            }
            _ => Failure::Fatal(TermError::Ipc(format!("starting {}: {error}", program.to_string_lossy()))),
        }
    }
}

enum Failure {
    Fatal(TermError),
    Transient(TermError),
    TimedOut,
}

fn kill_group(pid: u32) {
    let Ok(pid) = libc::pid_t::try_from(pid) else { return };
    // SAFETY: kill(2) with a negative pid signals that process group; no
    // memory is involved, and a group already gone just returns ESRCH.
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
    }
}

/// The full path of `program` if it is an executable file on PATH (or a
/// path to one).
pub fn find_on_path(program: impl AsRef<OsStr>) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let program = std::path::Path::new(program.as_ref());
    let is_executable = |p: &std::path::Path| {
        std::fs::metadata(p).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
    };
    if program.components().count() > 1 {
        return is_executable(program).then(|| program.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(program)).find(|candidate| is_executable(candidate))
}

/// Spawns `command`, waiting out ETXTBSY: a program just written (a CLI
/// being installed or updated) is "busy" while any process still holds it
/// open for writing, which includes every child forked in that moment and
/// not yet exec'd. That is not the command's failure, and the command has
/// not run, so a retry does not run it twice.
async fn spawn_when_not_busy(command: &mut Command) -> std::io::Result<tokio::process::Child> {
    const TRIES: u32 = 20;
    let mut tries = 0;
    loop {
        match command.spawn() {
            Err(error) if error.raw_os_error() == Some(libc::ETXTBSY) && tries < TRIES => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(10 * u64::from(tries))).await;
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runner(timeout_ms: u64) -> CommandRunner {
        CommandRunner::new("test", IpcConfig { timeout: Duration::from_millis(timeout_ms), retries: 2 })
    }

    #[tokio::test]
    async fn captures_stdout_stderr_and_exit_code() {
        let out =
            runner(3000).run(&Invocation::new("sh").args(["-c", "echo out; echo err >&2; exit 3"])).await.unwrap();
        assert_eq!(out.code, Some(3));
        assert_eq!(out.stdout, b"out\n");
        assert_eq!(out.stderr, b"err\n");
        let err = runner(3000).run_checked(&Invocation::new("sh").args(["-c", "echo bad >&2; exit 1"])).await;
        assert!(matches!(err, Err(TermError::Ipc(m)) if m.contains("bad")));
    }

    #[tokio::test]
    async fn feeds_stdin() {
        let out = runner(3000).run(&Invocation::new("cat").stdin(b"piped".to_vec())).await.unwrap();
        assert_eq!(out.stdout, b"piped");
    }

    #[tokio::test]
    async fn a_missing_program_is_not_supported() {
        let err = runner(3000).run(&Invocation::new("/nonexistent/bosun-no-such-cli")).await.unwrap_err();
        assert!(matches!(err, TermError::NotSupported { ref terminal, .. } if terminal == "test"), "{err:?}");
    }

    #[test]
    fn config_round_trips_in_milliseconds() {
        let config = IpcConfig { timeout: Duration::from_millis(250), retries: 1 };
        let json = serde_json::to_string(&config).unwrap();
        assert_eq!(json, r#"{"timeout":250,"retries":1}"#);
        assert_eq!(serde_json::from_str::<IpcConfig>(&json).unwrap(), config);
        assert_eq!(IpcConfig { retries: 9, ..config }.attempts(), 3);
    }
}
