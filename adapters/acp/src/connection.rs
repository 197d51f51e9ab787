//! The agent process and the ACP connection over its stdio.
//!
//! The crate's own `AcpAgent` transport spawns the process itself and keeps it
//! private: it cannot set the working directory, tell us the pid, hand over
//! each stderr line as it comes, or report an exit while the connection is
//! still open. So the process is spawned here (in its own process group, with
//! [`spawn_piped_in_group`]) and the crate only gets its stdin and stdout as a
//! [`Lines`] transport. Reading the lines ourselves also lets a malformed line
//! be reported and skipped rather than answered with a JSON-RPC error.

use std::io;
use std::path::Path;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use agent_client_protocol::v1::schema::{
    CreateTerminalRequest, CreateTerminalResponse, KillTerminalRequest, KillTerminalResponse, ReadTextFileRequest,
    ReadTextFileResponse, ReleaseTerminalRequest, ReleaseTerminalResponse, RequestPermissionOutcome,
    RequestPermissionRequest, RequestPermissionResponse, SessionNotification, TerminalOutputRequest,
    TerminalOutputResponse, WaitForTerminalExitRequest, WaitForTerminalExitResponse, WriteTextFileRequest,
    WriteTextFileResponse,
};
use agent_client_protocol::v1::{ConnectionTo, Responder};
use agent_client_protocol::{Agent, Client, Lines};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{ChildStdin, ChildStdout};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use bosun_driver::ProviderSpec;
use bosun_isolation::process::{spawn_piped_in_group, PipedChild, ProcessGroup};
use bosun_isolation::Jail;

/// Longest stderr line passed on whole; the rest is cut, so a runaway line
/// cannot flood the log.
const MAX_STDERR_LINE: usize = 4096;
/// How much of a malformed stdout line the log quotes.
const MALFORMED_QUOTE: usize = 200;
/// How long a closed connection waits for the process exit before it is
/// reported on its own.
const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// What the connection reports to the driver. Called from the connection's
/// tasks, so every method must return quickly and never block on the agent.
pub(crate) trait AgentListener: Send + Sync + 'static {
    /// A line (well-formed or not) came from the agent's stdout.
    fn heard(&self);
    fn update(&self, notification: SessionNotification);
    /// The agent asks for permission; `responder` must be answered exactly
    /// once (a [`PermissionReply`] does it on drop if nobody else did).
    fn permission(&self, request: RequestPermissionRequest, reply: PermissionReply);
    /// The agent asks the client (us) to read or write a file or to work a
    /// terminal; the responder answers it (and answers an error if dropped).
    fn client_call(&self, call: ClientCall);
    fn stderr_line(&self, line: String);
    fn malformed_line(&self, quote: String, problem: String);
    /// The process exited without being asked to.
    fn exited(&self, status: String);
    /// The connection stopped while the process may still run.
    fn connection_closed(&self, error: Option<String>);
}

/// A request from the agent for the client capabilities we advertise.
pub(crate) enum ClientCall {
    Read(ReadTextFileRequest, Responder<ReadTextFileResponse>),
    Write(WriteTextFileRequest, Responder<WriteTextFileResponse>),
    CreateTerminal(CreateTerminalRequest, Responder<CreateTerminalResponse>),
    TerminalOutput(TerminalOutputRequest, Responder<TerminalOutputResponse>),
    WaitForExit(WaitForTerminalExitRequest, Responder<WaitForTerminalExitResponse>),
    Kill(KillTerminalRequest, Responder<KillTerminalResponse>),
    Release(ReleaseTerminalRequest, Responder<ReleaseTerminalResponse>),
}

impl ClientCall {
    /// Answers the agent's request with `error`: nothing was done.
    pub(crate) fn refuse(self, error: agent_client_protocol::Error) {
        match self {
            ClientCall::Read(_, r) => answer_with(r, Err(error)),
            ClientCall::Write(_, r) => answer_with(r, Err(error)),
            ClientCall::CreateTerminal(_, r) => answer_with(r, Err(error)),
            ClientCall::TerminalOutput(_, r) => answer_with(r, Err(error)),
            ClientCall::WaitForExit(_, r) => answer_with(r, Err(error)),
            ClientCall::Kill(_, r) => answer_with(r, Err(error)),
            ClientCall::Release(_, r) => answer_with(r, Err(error)),
        }
    }
}

/// Answers a request from the agent, logging (not failing) when it is gone.
pub(crate) fn answer_with<T: agent_client_protocol::JsonRpcResponse>(
    responder: Responder<T>,
    answer: Result<T, agent_client_protocol::Error>,
) {
    let sent = match answer {
        Ok(response) => responder.respond(response),
        Err(error) => responder.respond_with_error(error),
    };
    if let Err(error) = sent {
        tracing::debug!(%error, "could not answer the agent");
    }
}

/// The answer to one `session/request_permission`. Dropping it unanswered
/// answers `cancelled`, so no request is ever left hanging in the agent.
pub(crate) struct PermissionReply {
    responder: Option<Responder<RequestPermissionResponse>>,
}

impl PermissionReply {
    fn new(responder: Responder<RequestPermissionResponse>) -> PermissionReply {
        PermissionReply { responder: Some(responder) }
    }

    /// The agent's JSON-RPC id of the request.
    pub(crate) fn id(&self) -> String {
        self.responder.as_ref().map(|r| r.id().to_string()).unwrap_or_default()
    }

    pub(crate) fn answer(mut self, outcome: RequestPermissionOutcome) {
        if let Some(responder) = self.responder.take() {
            if let Err(error) = responder.respond(RequestPermissionResponse::new(outcome)) {
                tracing::debug!(%error, "could not answer a permission request");
            }
        }
    }
}

impl Drop for PermissionReply {
    fn drop(&mut self) {
        if let Some(responder) = self.responder.take() {
            let _ = responder.respond(RequestPermissionResponse::new(RequestPermissionOutcome::Cancelled));
        }
    }
}

/// A running agent: the OS resources behind a connection. Dropping it kills
/// the whole process group and stops every task reading the agent, without
/// reporting an exit (it was asked for).
pub(crate) struct AgentProcess {
    pid: u32,
    /// Set before we kill the agent ourselves, so its exit is not reported as
    /// a crash.
    stopping: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
    /// Shared with the exit watcher, which sweeps the group once the leader
    /// is reaped.
    group: Arc<Mutex<ProcessGroup>>,
}

impl AgentProcess {
    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// Kills the process group and lets the exit be reported, for a driver
    /// that gave up on an unresponsive agent.
    pub(crate) fn kill_reporting_exit(&self) {
        if let Ok(mut group) = self.group.lock() {
            group.kill();
        }
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        for task in &self.tasks {
            task.abort();
        }
        if let Ok(mut group) = self.group.lock() {
            group.kill();
        }
    }
}

/// A freshly spawned agent, not yet initialized.
pub(crate) struct Spawned {
    pub(crate) process: AgentProcess,
    pub(crate) cx: ConnectionTo<Agent>,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum SpawnError {
    #[error("the provider has no command to run")]
    NoCommand,
    #[error("could not run {command}: {source}")]
    Spawn { command: String, source: io::Error },
    #[error("the ACP connection did not start")]
    NoConnection,
}

/// Describes how a process ended, for notices and turn failures.
pub(crate) fn describe_exit(status: &io::Result<ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(status) => match (status.code(), status.signal()) {
            (Some(code), _) => format!("exit code {code}"),
            (None, Some(signal)) => format!("killed by signal {signal}{}", signal_name(signal)),
            (None, None) => format!("{status}"),
        },
        Err(error) => format!("its exit status could not be read: {error}"),
    }
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGKILL => " (SIGKILL)",
        libc::SIGTERM => " (SIGTERM)",
        libc::SIGSEGV => " (SIGSEGV)",
        libc::SIGABRT => " (SIGABRT)",
        libc::SIGINT => " (SIGINT)",
        libc::SIGHUP => " (SIGHUP)",
        libc::SIGPIPE => " (SIGPIPE)",
        _ => "",
    }
}

/// Starts the agent with `args` in `cwd` and connects to it. Nothing is
/// sent yet.
pub(crate) async fn spawn_agent(
    spec: &ProviderSpec,
    args: &[String],
    cwd: &Path,
    jail: Option<&Jail>,
    listener: Weak<dyn AgentListener>,
) -> Result<Spawned, SpawnError> {
    let program = spec.command.as_deref().ok_or(SpawnError::NoCommand)?;
    let PipedChild { mut child, group, stdin, stdout, stderr } =
        spawn_piped_in_group(program, args, &spec.env, cwd, jail)
            .map_err(|source| SpawnError::Spawn { command: program.to_string(), source })?;
    let pid = child.id().unwrap_or_default();
    // From here on `process` owns the group: any early return kills it.
    let mut process = AgentProcess {
        pid,
        stopping: Arc::new(AtomicBool::new(false)),
        tasks: Vec::new(),
        group: Arc::new(Mutex::new(group)),
    };

    process.tasks.push(tokio::spawn(read_stderr(stderr, listener.clone())));

    let (cx_tx, cx_rx) = oneshot::channel();
    let transport = Lines::new(line_sink(stdin), line_stream(stdout, listener.clone()));
    process.tasks.push(tokio::spawn(run_connection(transport, listener.clone(), cx_tx)));

    let stopping = process.stopping.clone();
    let group = process.group.clone();
    let exit_listener = listener;
    process.tasks.push(tokio::spawn(async move {
        let status = child.wait().await;
        // What the agent left running (a command it started, say) dies with
        // it, and the group id is never signalled again once reaped.
        if let Ok(mut group) = group.lock() {
            group.sweep_after_exit();
        }
        if stopping.load(Ordering::SeqCst) {
            return;
        }
        if let Some(listener) = exit_listener.upgrade() {
            listener.exited(describe_exit(&status));
        }
    }));

    let cx = cx_rx.await.map_err(|_| SpawnError::NoConnection)?;
    Ok(Spawned { process, cx })
}

/// Runs the ACP client side of the connection until the agent's stdout ends.
/// The handlers only hand messages over to the listener: they run inside the
/// crate's dispatch loop, which must never wait on us.
async fn run_connection<T>(transport: T, listener: Weak<dyn AgentListener>, cx_tx: oneshot::Sender<ConnectionTo<Agent>>)
where
    T: agent_client_protocol::ConnectTo<Client> + 'static,
{
    let updates = listener.clone();
    let permissions = listener.clone();
    let calls = ClientCalls(listener.clone());
    let (reads, writes, creates, outputs, waits, kills, releases) =
        (calls.clone(), calls.clone(), calls.clone(), calls.clone(), calls.clone(), calls.clone(), calls);
    let result = Client
        .v1()
        .name("bosun")
        .on_receive_notification(
            async move |notification: SessionNotification, _cx| {
                if let Some(listener) = updates.upgrade() {
                    listener.update(notification);
                }
                Ok(())
            },
            agent_client_protocol::on_receive_notification!(),
        )
        .on_receive_request(
            async move |request: RequestPermissionRequest, responder, _cx| {
                let reply = PermissionReply::new(responder);
                match permissions.upgrade() {
                    Some(listener) => listener.permission(request, reply),
                    None => reply.answer(RequestPermissionOutcome::Cancelled),
                }
                Ok(())
            },
            agent_client_protocol::on_receive_request!(),
        )
        .on_receive_request(
            async move |request: ReadTextFileRequest, responder, _cx| {
                reads.pass(ClientCall::Read(request, responder));
                Ok(())
            },
            agent_client_protocol::on_receive_request!(),
        )
        .on_receive_request(
            async move |request: WriteTextFileRequest, responder, _cx| {
                writes.pass(ClientCall::Write(request, responder));
                Ok(())
            },
            agent_client_protocol::on_receive_request!(),
        )
        .on_receive_request(
            async move |request: CreateTerminalRequest, responder, _cx| {
                creates.pass(ClientCall::CreateTerminal(request, responder));
                Ok(())
            },
            agent_client_protocol::on_receive_request!(),
        )
        .on_receive_request(
            async move |request: TerminalOutputRequest, responder, _cx| {
                outputs.pass(ClientCall::TerminalOutput(request, responder));
                Ok(())
            },
            agent_client_protocol::on_receive_request!(),
        )
        .on_receive_request(
            async move |request: WaitForTerminalExitRequest, responder, _cx| {
                waits.pass(ClientCall::WaitForExit(request, responder));
                Ok(())
            },
            agent_client_protocol::on_receive_request!(),
        )
        .on_receive_request(
            async move |request: KillTerminalRequest, responder, _cx| {
                kills.pass(ClientCall::Kill(request, responder));
                Ok(())
            },
            agent_client_protocol::on_receive_request!(),
        )
        .on_receive_request(
            async move |request: ReleaseTerminalRequest, responder, _cx| {
                releases.pass(ClientCall::Release(request, responder));
                Ok(())
            },
            agent_client_protocol::on_receive_request!(),
        )
        .connect_with(transport, async move |cx: ConnectionTo<Agent>| {
            let _ = cx_tx.send(cx.clone());
            cx.incoming_closed().await;
            Ok(())
        })
        .await;
    // Usually the output ends because the process died: give its exit the
    // time to be reported first, as the better explanation.
    tokio::time::sleep(CLOSE_GRACE).await;
    if let Some(listener) = listener.upgrade() {
        listener.connection_closed(result.err().map(|e| e.to_string()));
    }
}

/// Hands the agent's client-capability requests to the listener; with the
/// driver gone, the responders drop, which answers the agent with an error.
#[derive(Clone)]
struct ClientCalls(Weak<dyn AgentListener>);

impl ClientCalls {
    fn pass(&self, call: ClientCall) {
        if let Some(listener) = self.0.upgrade() {
            listener.client_call(call);
        }
    }
}

/// The agent's stdin as a sink of JSON-RPC lines.
fn line_sink(stdin: ChildStdin) -> impl futures::Sink<String, Error = io::Error> + Send + 'static {
    Box::pin(futures::sink::unfold(stdin, async move |mut stdin: ChildStdin, line: String| {
        stdin.write_all(line.as_bytes()).await?;
        stdin.write_all(b"\n").await?;
        stdin.flush().await?;
        Ok::<_, io::Error>(stdin)
    }))
}

/// The agent's stdout as a stream of JSON-RPC lines. Blank lines are
/// skipped; lines that are not UTF-8 or not JSON are reported and skipped, so
/// one stray `println!` in an agent does not end the connection.
fn line_stream(
    stdout: ChildStdout,
    listener: Weak<dyn AgentListener>,
) -> impl futures::Stream<Item = io::Result<String>> + Send + 'static {
    let reader = BufReader::new(stdout);
    Box::pin(futures::stream::unfold((reader, listener), async move |(mut reader, listener)| loop {
        let mut bytes = Vec::new();
        match reader.read_until(b'\n', &mut bytes).await {
            Ok(0) => return None,
            Ok(_) => {}
            Err(error) => return Some((Err(error), (reader, listener))),
        }
        let target = listener.upgrade()?;
        target.heard();
        while matches!(bytes.last(), Some(b'\n' | b'\r')) {
            bytes.pop();
        }
        if bytes.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let problem = match String::from_utf8(bytes) {
            Ok(line) => match serde_json::from_str::<serde::de::IgnoredAny>(&line) {
                Ok(_) => return Some((Ok(line), (reader, listener))),
                Err(error) => (quote(&line), format!("not JSON ({error})")),
            },
            Err(error) => (quote(&String::from_utf8_lossy(error.as_bytes())), "not UTF-8".to_string()),
        };
        target.malformed_line(problem.0, problem.1);
    }))
}

fn quote(line: &str) -> String {
    match line.char_indices().nth(MALFORMED_QUOTE) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line.to_string(),
    }
}

async fn read_stderr(stderr: tokio::process::ChildStderr, listener: Weak<dyn AgentListener>) {
    let mut reader = BufReader::new(stderr);
    loop {
        let mut bytes = Vec::new();
        match reader.read_until(b'\n', &mut bytes).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        while matches!(bytes.last(), Some(b'\n' | b'\r')) {
            bytes.pop();
        }
        if bytes.is_empty() {
            continue;
        }
        let mut line = String::from_utf8_lossy(&bytes).into_owned();
        if let Some((cut, _)) = line.char_indices().nth(MAX_STDERR_LINE) {
            line.truncate(cut);
            line.push('…');
        }
        match listener.upgrade() {
            Some(listener) => listener.stderr_line(line),
            None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exits_are_described() {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(describe_exit(&Ok(ExitStatus::from_raw(3 << 8))), "exit code 3");
        assert_eq!(describe_exit(&Ok(ExitStatus::from_raw(9))), "killed by signal 9 (SIGKILL)");
    }

    #[test]
    fn quotes_are_cut_on_characters() {
        let long = "é".repeat(300);
        let quoted = quote(&long);
        assert!(quoted.ends_with('…'));
        assert_eq!(quoted.chars().count(), MALFORMED_QUOTE + 1);
        assert_eq!(quote("short"), "short");
    }
}
