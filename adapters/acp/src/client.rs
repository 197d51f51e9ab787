//! The client side of ACP that Bosun serves its agents: reading and writing
//! files (`fs/read_text_file`, `fs/write_text_file`) and running commands in
//! terminals (`terminal/*`).
//!
//! An agent that uses these has the daemon do its work: files only inside
//! the session's cwd (through the same path-safe operations as the file
//! API), commands only in the session's jail when it has one, and both only
//! under an approval (the turn decides that, in `mod.rs`). What a terminal
//! prints streams like any command's output, and each one ends as a
//! `command:ran` record.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use agent_client_protocol::v1::schema::{
    CreateTerminalRequest, CreateTerminalResponse, TerminalExitStatus, TerminalId, TerminalOutputResponse,
    WriteTextFileRequest, WriteTextFileResponse,
};
use agent_client_protocol::v1::Responder;
use agent_client_protocol::Error;
use bosun_proto::{Action, ChunkKind, CommandRun, EndedBy};
use serde_json::Value;
use tokio::sync::{watch, Notify};

use super::connection::{answer_with, ClientCall};
use super::mapping;
use super::TurnSink;
use bosun_driver::{AgentEvent, Asked};
use bosun_isolation::process::{CommandEvent, ExitState, OutputStream, ShellCommand};
use bosun_isolation::Jail;
use bosun_workspace::{self as workspace, WorkspaceError};

/// What a terminal keeps of its output when the agent sets no limit.
const DEFAULT_TERMINAL_OUTPUT: usize = 1024 * 1024;
/// The most output a terminal keeps, whatever the agent asks for.
const MAX_TERMINAL_OUTPUT: usize = 8 * 1024 * 1024;
/// Terminals one driver may have at once (released ones do not count).
const MAX_TERMINALS: usize = 64;

/// JSON-RPC error code for a resource that is not there (ACP's own).
fn not_found(what: String) -> Error {
    Error::new(-32002, what)
}

pub(crate) fn invalid(what: impl Into<String>) -> Error {
    Error::new(-32602, what.into())
}

/// The refusal an agent gets when the daemon does not let it act.
pub(crate) fn refused(what: impl Into<String>) -> Error {
    Error::new(-32000, what.into())
}

/// `path` (absolute, as ACP sends it; or relative to the cwd) as a path
/// inside `cwd`, or why it is not one. The file operations check again,
/// against symlinks, as they open it.
pub(crate) fn inside_cwd(cwd: &Path, path: &Path) -> Result<String, Error> {
    let relative = if path.is_absolute() {
        path.strip_prefix(cwd).map_err(|_| {
            refused(format!(
                "{} is outside the session's working directory {}; the daemon reads and writes only inside it",
                path.display(),
                cwd.display()
            ))
        })?
    } else {
        path
    };
    if relative.components().any(|c| !matches!(c, Component::Normal(_) | Component::CurDir)) {
        return Err(refused(format!("{} leaves the session's working directory", path.display())));
    }
    let text = relative.to_string_lossy().into_owned();
    if text.is_empty() {
        return Err(invalid(format!("{} is the working directory, not a file", path.display())));
    }
    Ok(text)
}

fn file_error(error: WorkspaceError) -> Error {
    match error {
        WorkspaceError::NotFound(what) => not_found(what),
        WorkspaceError::BadPath(what) => refused(what),
        other => invalid(other.to_string()),
    }
}

/// Reads a text file inside `cwd`, from 1-based `line`, at most `limit` lines.
pub(crate) async fn read_text(cwd: &Path, rel: &str, line: Option<u32>, limit: Option<u32>) -> Result<String, Error> {
    let text = workspace::read(cwd, rel).await.map_err(file_error)?;
    if line.is_none() && limit.is_none() {
        return Ok(text);
    }
    let skip = line.map_or(0, |l| l.saturating_sub(1) as usize);
    let take = limit.map_or(usize::MAX, |l| l as usize);
    Ok(text.split_inclusive('\n').skip(skip).take(take).collect())
}

/// Writes a text file inside `cwd`; the bytes written.
pub(crate) async fn write_text(cwd: &Path, rel: &str, content: &str) -> Result<u64, Error> {
    workspace::write(cwd, rel, content).await.map_err(file_error)
}

/// A write or a terminal the agent asked the daemon for, checked against
/// the session's cwd and waiting for what allows it.
pub(crate) enum Act {
    Write {
        request: WriteTextFileRequest,
        rel: String,
        responder: Responder<WriteTextFileResponse>,
    },
    Terminal {
        request: CreateTerminalRequest,
        command: String,
        cwd: PathBuf,
        responder: Responder<CreateTerminalResponse>,
    },
}

impl Act {
    /// The act a write or terminal request asks for in `cwd`, or `None`
    /// once a refusal was answered (it would leave the cwd).
    pub(crate) fn of(call: ClientCall, cwd: &Path) -> Option<Act> {
        match call {
            ClientCall::Write(request, responder) => match inside_cwd(cwd, &request.path) {
                Ok(rel) => Some(Act::Write { request, rel, responder }),
                Err(error) => {
                    answer_with(responder, Err(error));
                    None
                }
            },
            ClientCall::CreateTerminal(request, responder) => {
                let dir = request.cwd.clone().unwrap_or_else(|| cwd.to_path_buf());
                let dir = if dir.is_absolute() { dir } else { cwd.join(dir) };
                if dir != cwd {
                    if let Err(error) = inside_cwd(cwd, &dir) {
                        answer_with(responder, Err(error));
                        return None;
                    }
                }
                let argv: Vec<Value> =
                    std::iter::once(&request.command).chain(&request.args).map(|w| Value::String(w.clone())).collect();
                let command = mapping::command_text(&Value::Array(argv)).unwrap_or_else(|| request.command.clone());
                Some(Act::Terminal { request, command, cwd: dir, responder })
            }
            other => {
                other.refuse(invalid("not a request to act"));
                None
            }
        }
    }

    /// What the act is, as an approval shows it.
    pub(crate) fn action(&self, cwd: &Path) -> Action {
        match self {
            Act::Write { request, rel, .. } => Action::FileChange {
                path: cwd.join(rel).to_string_lossy().into_owned(),
                summary: format!("write {} bytes, through the daemon", request.content.len()),
            },
            Act::Terminal { command, cwd, .. } => {
                Action::Command { command: command.clone(), cwd: cwd.to_string_lossy().into_owned() }
            }
        }
    }

    /// Answers the agent that the act was not done, and why.
    pub(crate) fn refuse(self, why: &str) {
        match self {
            Act::Write { responder, .. } => answer_with(responder, Err(refused(why))),
            Act::Terminal { responder, .. } => answer_with(responder, Err(refused(why))),
        }
    }
}

/// A terminal's output as the agent reads it back: the newest bytes, within
/// its limit.
struct Output {
    text: String,
    limit: usize,
    truncated: bool,
}

impl Output {
    fn push(&mut self, piece: &str) {
        self.text.push_str(piece);
        if self.text.len() > self.limit {
            // Keep the tail, cut on a character boundary.
            let mut cut = self.text.len() - self.limit;
            while !self.text.is_char_boundary(cut) {
                cut += 1;
            }
            self.text.drain(..cut);
            self.truncated = true;
        }
    }
}

/// One command an agent runs through `terminal/create`.
pub(crate) struct Terminal {
    output: Mutex<Output>,
    exit: watch::Sender<Option<TerminalExitStatus>>,
    kill: Notify,
    /// Its `command:ran` has been sent (by its own task, or by the turn's
    /// end, which kills what is still running): it is sent once.
    recorded: AtomicBool,
    audit: Mutex<Audit>,
}

struct Audit {
    run: CommandRun,
    started: std::time::Instant,
    asked: Asked,
}

impl Terminal {
    fn lock_output(&self) -> MutexGuard<'_, Output> {
        self.output.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The `command:ran` of this terminal, once: `None` if it was sent.
    fn record(&self, exit_code: Option<i32>, ended_by: Option<EndedBy>) -> Option<AgentEvent> {
        if self.recorded.swap(true, Ordering::SeqCst) {
            return None;
        }
        let audit = self.audit.lock().unwrap_or_else(|p| p.into_inner());
        let mut run = audit.run.clone();
        run.exit_code = exit_code;
        run.ended_by = ended_by;
        run.duration_ms = u64::try_from(audit.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        Some(AgentEvent::CommandRan { run, asked: audit.asked.clone() })
    }

    /// Stops the command if it still runs and returns its record, for a
    /// turn that ends before it does.
    pub(crate) fn cut(&self, ended_by: EndedBy) -> Option<AgentEvent> {
        if self.exit.borrow().is_some() {
            return None;
        }
        self.kill.notify_one();
        self.record(None, Some(ended_by))
    }
}

/// The terminals of one agent, by id.
#[derive(Default)]
pub(crate) struct Terminals {
    map: Mutex<HashMap<String, Arc<Terminal>>>,
    next: AtomicU64,
}

/// What a terminal is started with.
pub(crate) struct TerminalStart<'a> {
    pub request: &'a CreateTerminalRequest,
    /// The directory to run in, already checked to be inside the cwd.
    pub cwd: PathBuf,
    pub jail: Option<&'a Jail>,
    /// The command as the audit shows it.
    pub command: String,
    pub asked: Asked,
}

impl Terminals {
    pub(crate) fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<Terminal>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, id: &TerminalId) -> Result<Arc<Terminal>, Error> {
        self.lock().get(id.0.as_ref()).cloned().ok_or_else(|| not_found(format!("no terminal {id}")))
    }

    /// Starts the command and returns its terminal; output and the end go
    /// to `sink` as the turn's events.
    pub(crate) fn start(
        &self,
        start: TerminalStart<'_>,
        sink: Arc<TurnSink>,
    ) -> Result<(TerminalId, Arc<Terminal>), Error> {
        if self.lock().len() >= MAX_TERMINALS {
            return Err(refused(format!("too many terminals open ({MAX_TERMINALS}); release some first")));
        }
        let request = start.request;
        let limit = request
            .output_byte_limit
            .map_or(DEFAULT_TERMINAL_OUTPUT, |l| usize::try_from(l).unwrap_or(usize::MAX))
            .min(MAX_TERMINAL_OUTPUT);
        let env: Vec<(String, String)> = request.env.iter().map(|v| (v.name.clone(), v.value.clone())).collect();
        let command = ShellCommand::spawn_program(
            &request.command,
            &request.args,
            env,
            &start.cwd,
            MAX_TERMINAL_OUTPUT,
            start.jail,
        )
        .map_err(|e| invalid(format!("could not run {}: {e}", request.command)))?;
        let run = CommandRun {
            command: start.command,
            cwd: start.cwd.to_string_lossy().into_owned(),
            exit_code: None,
            ended_by: None,
            started_at: bosun_proto::now_ts(),
            duration_ms: 0,
            stdout_bytes: 0,
            stderr_bytes: 0,
            approval: None,
            approval_id: None,
        };
        let terminal = Arc::new(Terminal {
            output: Mutex::new(Output { text: String::new(), limit, truncated: false }),
            exit: watch::channel(None).0,
            kill: Notify::new(),
            recorded: AtomicBool::new(false),
            audit: Mutex::new(Audit { run, started: std::time::Instant::now(), asked: start.asked }),
        });
        let id = format!("term-{}", self.next.fetch_add(1, Ordering::Relaxed) + 1);
        self.lock().insert(id.clone(), terminal.clone());
        tokio::spawn(drive(command, terminal.clone(), sink));
        Ok((TerminalId::new(id), terminal))
    }

    pub(crate) fn output(&self, id: &TerminalId) -> Result<TerminalOutputResponse, Error> {
        let terminal = self.get(id)?;
        let exit = terminal.exit.borrow().clone();
        let output = terminal.lock_output();
        Ok(TerminalOutputResponse::new(output.text.clone(), output.truncated).exit_status(exit))
    }

    pub(crate) async fn wait(&self, id: &TerminalId) -> Result<TerminalExitStatus, Error> {
        let terminal = self.get(id)?;
        let mut exit = terminal.exit.subscribe();
        let status = exit
            .wait_for(Option::is_some)
            .await
            .map_err(|_| invalid(format!("terminal {id} went away")))?
            .clone()
            .unwrap_or_default();
        Ok(status)
    }

    pub(crate) fn kill(&self, id: &TerminalId) -> Result<(), Error> {
        self.get(id)?.kill.notify_one();
        Ok(())
    }

    /// Kills the command if it still runs and forgets the terminal.
    pub(crate) fn release(&self, id: &TerminalId) -> Result<(), Error> {
        let terminal = self.lock().remove(id.0.as_ref()).ok_or_else(|| not_found(format!("no terminal {id}")))?;
        terminal.kill.notify_one();
        Ok(())
    }

    /// Kills every command still running (the driver is going away).
    pub(crate) fn kill_all(&self) {
        for terminal in self.lock().drain().map(|(_, t)| t) {
            terminal.kill.notify_one();
        }
    }
}

/// Runs a terminal's command to its end: output to the agent's buffer and
/// to the turn, then its exit status and its audit record.
async fn drive(mut command: ShellCommand, terminal: Arc<Terminal>, sink: Arc<TurnSink>) {
    let (mut stdout_bytes, mut stderr_bytes) = (0u64, 0u64);
    let ended = loop {
        tokio::select! {
            event = command.next_event() => match event {
                Ok(Some(CommandEvent::Output { stream, text })) => {
                    match stream {
                        OutputStream::Stdout => stdout_bytes += text.len() as u64,
                        OutputStream::Stderr => stderr_bytes += text.len() as u64,
                    }
                    terminal.lock_output().push(&text);
                    sink.emit(AgentEvent::Chunk { kind: ChunkKind::CommandOutput, text, checkpoint: None });
                }
                Ok(Some(CommandEvent::Truncated { .. })) => terminal.lock_output().truncated = true,
                Ok(Some(CommandEvent::Exited(state))) => break (Some(state), None),
                Ok(None) => break (None, None),
                Err(error) => {
                    tracing::debug!(%error, "reading a terminal's output failed");
                    let _ = command.kill().await;
                    break (None, Some(EndedBy::Killed));
                }
            },
            () = terminal.kill.notified() => {
                let _ = command.kill().await;
                break (Some(ExitState::Signal(libc::SIGKILL)), Some(EndedBy::Killed));
            }
        }
    };
    let status = match ended.0 {
        Some(ExitState::Code(code)) => TerminalExitStatus::new().exit_code(u32::try_from(code).ok()),
        Some(ExitState::Signal(signal)) => TerminalExitStatus::new().signal(signal_name(signal)),
        None => TerminalExitStatus::new(),
    };
    {
        let mut audit = terminal.audit.lock().unwrap_or_else(|p| p.into_inner());
        audit.run.stdout_bytes = stdout_bytes;
        audit.run.stderr_bytes = stderr_bytes;
    }
    let exit_code = match ended.0 {
        Some(ExitState::Code(code)) => Some(code),
        _ => None,
    };
    if let Some(record) = terminal.record(exit_code, ended.1) {
        sink.emit(record);
    }
    terminal.exit.send_replace(Some(status));
}

fn signal_name(signal: i32) -> String {
    match signal {
        libc::SIGKILL => "SIGKILL".into(),
        libc::SIGTERM => "SIGTERM".into(),
        libc::SIGINT => "SIGINT".into(),
        other => format!("signal {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_must_stay_in_the_cwd() {
        let cwd = Path::new("/w/s");
        assert_eq!(inside_cwd(cwd, Path::new("/w/s/a/b.txt")).unwrap(), "a/b.txt");
        assert_eq!(inside_cwd(cwd, Path::new("c.txt")).unwrap(), "c.txt");
        for outside in ["/w/other.txt", "/w/s/../t", "../x", "/etc/passwd", "/w/s2/x"] {
            assert!(inside_cwd(cwd, Path::new(outside)).is_err(), "{outside}");
        }
        assert!(inside_cwd(cwd, Path::new("/w/s")).is_err());
    }

    #[test]
    fn output_keeps_the_newest_bytes_within_its_limit() {
        let mut output = Output { text: String::new(), limit: 5, truncated: false };
        output.push("abc");
        assert_eq!((output.text.as_str(), output.truncated), ("abc", false));
        output.push("déf");
        assert!(output.text.len() <= 5 && output.text.ends_with("déf"), "{}", output.text);
        assert!(output.truncated);
    }
}
