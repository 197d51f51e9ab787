//! The `codex app-server` process and what runs beside it: the start and
//! `initialize` handshake, the monitor that sees it exit, the router that
//! hands what codex says to the turn under way (or answers it between
//! turns), and the stderr reader. Also the state all of them share.

use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Child;
use tokio::sync::{mpsc, watch, Notify};

use crate::protocol::{
    method, ApprovalDecision, ApprovalResponse, BackgroundTerminalsCleanParams, ClientInfo, InitializeCapabilities,
    InitializeParams, InitializeResponse, ServerNotification, ServerRequest, TokenUsageBreakdown,
};
use crate::rpc::{Incoming, RpcClient, RpcError, METHOD_NOT_FOUND};
use bosun_driver::{DriverNotice, EnforcementReport, LogLevel, ProviderSpec, TurnOutcome, TurnSink};
use bosun_isolation::process::{spawn_piped_in_group, PipedChild, ProcessGroup};
use bosun_isolation::Jail;

use crate::mapping::{notice_text, Granted};

/// How long to wait for an exit status when the connection dropped, to say
/// why in the turn's failure.
const EXIT_STATUS_GRACE: Duration = Duration::from_millis(500);
/// JSON-RPC "invalid params", for known requests we cannot read.
const INVALID_PARAMS: i64 = -32602;

pub(crate) struct Shared {
    pub(crate) notices: mpsc::UnboundedSender<DriverNotice>,
    /// The process and thread; locked by the turn under way for its whole
    /// life (the turn slot already makes turns take turns).
    pub(crate) agent: tokio::sync::Mutex<AgentSlot>,
    pub(crate) state: Mutex<ProcessState>,
    /// Signalled whenever codex reports a turn over (or the process died).
    pub(crate) turn_idle: Notify,
    /// Numbers the turns' routes, so a turn only ever removes its own.
    pub(crate) routes: AtomicU64,
    /// What the open thread's settings showed about holding codex to the
    /// session's policy (`None` before a thread is open).
    pub(crate) enforcement: Mutex<Option<EnforcementReport>>,
    /// What the user accepted for the rest of the session.
    pub(crate) granted: Mutex<Granted>,
}

impl Shared {
    pub(crate) fn granted(&self) -> Granted {
        self.granted.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, ProcessState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn notice(&self, notice: DriverNotice) {
        let _ = self.notices.send(notice);
    }

    pub(crate) fn log(&self, level: LogLevel, message: String) {
        self.notice(DriverNotice::Log { level, message });
    }

    /// Kills the process group, remembering why for the exit report.
    pub(crate) fn kill(&self, reason: Option<String>) {
        let mut state = self.state();
        if reason.is_some() {
            state.kill_reason = reason;
        }
        if let Some(group) = state.group.as_mut() {
            group.kill();
        }
    }
}

pub(crate) struct AgentSlot {
    pub(crate) agent: Option<Agent>,
    /// The thread to resume, until a thread has been opened.
    pub(crate) binding: Option<Value>,
}

pub(crate) struct Agent {
    pub(crate) rpc: RpcClient,
    pub(crate) generation: u64,
    pub(crate) thread_id: Option<String>,
}

/// What the monitor, the router and the turns share about the process.
#[derive(Default)]
pub(crate) struct ProcessState {
    /// Bumped for each process started, so the tasks of a process that
    /// failed to start leave its successor alone.
    pub(crate) generation: u64,
    pub(crate) group: Option<ProcessGroup>,
    /// The process announced itself `Running`: its death is a crash.
    running: bool,
    pub(crate) exited: bool,
    /// Why the process is gone for good; later turns fail with it.
    pub(crate) dead: Option<String>,
    /// Why we killed the process ourselves, reported instead of the signal.
    kill_reason: Option<String>,
    pub(crate) dropped: bool,
    /// The last stderr line that looked like an error, to explain a start
    /// failure.
    stderr_error: Option<String>,
    pub(crate) route: Option<Route>,
    /// The codex turn under way, as codex reports it; a turn we abandoned may
    /// still be running after our side of it ended.
    pub(crate) active_turn: Option<String>,
    /// The thread's token totals as last reported: the next turn's baseline.
    pub(crate) last_total: Option<TokenUsageBreakdown>,
    /// How to reach the open thread, to stop its commands on the way out.
    pub(crate) cleaner: Option<(RpcClient, String)>,
}

/// Where the router sends what codex says during a turn.
pub(crate) struct Route {
    pub(crate) id: u64,
    pub(crate) inbox: mpsc::UnboundedSender<Inbound>,
    pub(crate) end: Arc<TurnSink>,
}

/// A message from codex, read by the router.
#[derive(Debug)]
pub(crate) enum Inbound {
    Notification(ServerNotification),
    Request { id: Value, request: ServerRequest },
}

// ---------------------------------------------------------------------------
// The process: start, monitor, route, stderr
// ---------------------------------------------------------------------------

/// Starts `codex app-server` and initializes it. On failure the process is
/// killed and waited for, so the next turn may try again from scratch.
pub(crate) async fn launch(
    shared: &Arc<Shared>,
    spec: &ProviderSpec,
    cwd: &Path,
    jail: Option<&Jail>,
) -> Result<Agent, String> {
    let program = spec.command.as_deref().filter(|c| !c.trim().is_empty()).ok_or("no command is configured")?;
    let PipedChild { child, group, stdin, stdout, stderr } =
        spawn_piped_in_group(program, &spec.args, &spec.env, cwd, jail)
            .map_err(|e| format!("starting {program}: {e}"))?;
    let pid = child.id();
    let generation = {
        let mut state = shared.state();
        if state.dropped {
            return Err("the driver is shutting down".into());
        }
        state.generation += 1;
        state.group = Some(group);
        state.running = false;
        state.exited = false;
        state.kill_reason = None;
        state.stderr_error = None;
        state.active_turn = None;
        state.last_total = None;
        state.cleaner = None;
        state.generation
    };
    let (rpc, incoming) = RpcClient::start(stdout, stdin);
    let (exit_tx, mut exit_rx) = watch::channel(None);
    tokio::spawn(monitor(shared.clone(), child, generation, exit_tx));
    tokio::spawn(route(shared.clone(), rpc.clone(), incoming));
    tokio::spawn(forward_stderr(shared.clone(), stderr));

    let params = InitializeParams {
        client_info: ClientInfo {
            name: "bosun".into(),
            title: Some("Bosun".into()),
            version: env!("CARGO_PKG_VERSION").into(),
        },
        capabilities: Some(InitializeCapabilities { experimental_api: true }),
    };
    let timeout = spec.startup_timeout();
    let failure = match tokio::time::timeout(timeout, rpc.request::<_, InitializeResponse>(method::INITIALIZE, &params))
        .await
    {
        Ok(Ok(reply)) => {
            if let Err(e) = rpc.notify::<Value>(method::INITIALIZED, None) {
                format!("codex stopped listening during start-up: {e}")
            } else {
                let started = {
                    let mut state = shared.state();
                    // Decided under the lock the monitor takes too: either it
                    // sees a running process (a crash) or we see an exit.
                    if !state.exited {
                        state.running = true;
                    }
                    state.running
                };
                if started {
                    shared.notice(DriverNotice::Running { pid, agent: Some("codex".into()), version: reply.version() });
                    return Ok(Agent { rpc, generation, thread_id: None });
                }
                "codex exited right after start-up".to_string()
            }
        }
        Ok(Err(RpcError::Closed)) => "codex exited during start-up".to_string(),
        Ok(Err(e)) => format!("codex refused to initialize: {e}"),
        Err(_) => format!("codex did not answer `initialize` within {} s", timeout.as_secs()),
    };
    shared.kill(None);
    let status = tokio::time::timeout(EXIT_STATUS_GRACE, exit_rx.wait_for(Option::is_some))
        .await
        .ok()
        .and_then(|r| r.ok().and_then(|status| status.clone()));
    let mut reason = failure;
    if let Some(status) = status {
        reason.push_str(&format!(" ({status})"));
    }
    if let Some(line) = shared.state().stderr_error.clone() {
        reason.push_str(&format!(": {line}"));
    }
    Err(reason)
}

/// Waits for the process to exit and reports it.
pub(crate) async fn monitor(
    shared: Arc<Shared>,
    mut child: Child,
    generation: u64,
    exit_tx: watch::Sender<Option<String>>,
) {
    let status = match child.wait().await {
        Ok(status) => describe_exit(status),
        Err(e) => format!("could not be waited for: {e}"),
    };
    let (route, crash, reason) = {
        let mut state = shared.state();
        if state.generation != generation {
            let _ = exit_tx.send(Some(status));
            return;
        }
        if let Some(mut group) = state.group.take() {
            // Children codex left behind would keep its pipes open.
            group.sweep_after_exit();
        }
        state.exited = true;
        state.active_turn = None;
        let reason = state.kill_reason.take().unwrap_or_else(|| format!("the agent process exited: {status}"));
        let crash = state.running && !state.dropped;
        if state.running {
            state.dead = Some(reason.clone());
        }
        state.running = false;
        state.cleaner = None;
        (state.route.take(), crash, reason)
    };
    let _ = exit_tx.send(Some(status));
    if let Some(route) = route {
        route.end.finish(TurnOutcome::Failed(reason.clone()));
    }
    shared.turn_idle.notify_waiters();
    if crash {
        shared.notice(DriverNotice::Exited { reason });
    }
}

/// Reads what codex sends besides replies: keeps codex's turn state, hands
/// messages to the turn under way, answers them itself between turns.
pub(crate) async fn route(shared: Arc<Shared>, rpc: RpcClient, mut incoming: mpsc::UnboundedReceiver<Incoming>) {
    while let Some(message) = incoming.recv().await {
        let inbound = match message {
            Incoming::Problem(problem) => {
                shared.log(LogLevel::Warn, format!("codex protocol: {problem}"));
                continue;
            }
            Incoming::Notification { method, params } => match ServerNotification::parse(&method, params) {
                Ok(notification) => Inbound::Notification(notification),
                Err(e) => {
                    shared.log(LogLevel::Warn, format!("codex protocol: unreadable `{method}` notification: {e}"));
                    continue;
                }
            },
            Incoming::Request { id, method, params } => match ServerRequest::parse(&method, params) {
                Ok(request) => Inbound::Request { id, request },
                Err(e) => {
                    shared.log(LogLevel::Warn, format!("codex protocol: unreadable `{method}` request: {e}"));
                    let _ = rpc.respond_error(&id, INVALID_PARAMS, &format!("bosun could not read the params: {e}"));
                    continue;
                }
            },
        };
        if let Inbound::Notification(notification) = &inbound {
            observe(&shared, notification);
        }
        let inbox = shared.state().route.as_ref().map(|route| route.inbox.clone());
        let undelivered = match inbox {
            Some(inbox) => inbox.send(inbound).err().map(|e| e.0),
            None => Some(inbound),
        };
        if let Some(inbound) = undelivered {
            answer_between_turns(&shared, &rpc, inbound);
        }
    }
}

/// Keeps track of what outlives our turns: codex's active turn and the
/// thread's token totals.
pub(crate) fn observe(shared: &Shared, notification: &ServerNotification) {
    match notification {
        ServerNotification::TurnStarted(n) => shared.state().active_turn = Some(n.turn.id.clone()),
        ServerNotification::TurnCompleted(n) => {
            {
                let mut state = shared.state();
                if state.active_turn.as_deref().is_none_or(|active| active == n.turn.id) {
                    state.active_turn = None;
                }
            }
            shared.turn_idle.notify_waiters();
        }
        ServerNotification::TokenUsageUpdated(n) => shared.state().last_total = Some(n.token_usage.total),
        _ => {}
    }
}

pub(crate) fn answer_between_turns(shared: &Shared, rpc: &RpcClient, inbound: Inbound) {
    match inbound {
        Inbound::Request { id, request: ServerRequest::CommandApproval(_) | ServerRequest::FileChangeApproval(_) } => {
            // Only a turn we abandoned can still ask: stop it.
            shared.log(
                LogLevel::Warn,
                format!("codex asked for an approval (request {id}) with no turn running; cancelled"),
            );
            let _ = rpc.respond(&id, &ApprovalResponse { decision: ApprovalDecision::Cancel });
        }
        Inbound::Request { id, request: ServerRequest::Other(method) } => {
            refuse(rpc, &id, &method);
            shared.log(LogLevel::Warn, format!("codex sent a `{method}` request, which bosun does not serve"));
        }
        Inbound::Notification(notification) => {
            if let Some((level, message)) = notice_text(&notification) {
                shared.log(level, message);
            }
        }
    }
}

pub(crate) fn refuse(rpc: &RpcClient, id: &Value, method: &str) {
    let _ = rpc.respond_error(id, METHOD_NOT_FOUND, &format!("bosun does not handle `{method}`"));
}

/// Notifications that are worth a log line wherever they come.
pub(crate) async fn forward_stderr(shared: Arc<Shared>, stderr: impl AsyncRead + Unpin) {
    let mut reader = BufReader::new(stderr);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let line = strip_ansi(&String::from_utf8_lossy(&buf));
        let line = line.trim_end();
        if line.trim().is_empty() {
            continue;
        }
        let level = stderr_level(line);
        if level == LogLevel::Error {
            shared.state().stderr_error = Some(line.trim().to_string());
        }
        shared.log(level, line.to_string());
    }
}

pub(crate) fn stderr_level(line: &str) -> LogLevel {
    let head = line.trim_start();
    if head.starts_with("Error") || line.contains(" ERROR ") {
        LogLevel::Error
    } else if head.starts_with("WARNING") || line.contains(" WARN ") {
        LogLevel::Warn
    } else {
        LogLevel::Info
    }
}

/// Codex colours its log lines; the escapes are noise in an event log.
pub(crate) fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                // CSI: parameters and intermediates, then one final byte.
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

pub(crate) fn describe_exit(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => "exited".to_string(),
    }
}

/// How long stopping an interrupted turn's commands may hold up its end.
pub(crate) const CLEAN_TIMEOUT: Duration = Duration::from_secs(1);

pub(crate) async fn clean_background_terminals(rpc: &RpcClient, thread_id: &str) -> Result<(), String> {
    let params = BackgroundTerminalsCleanParams { thread_id: thread_id.to_string() };
    match tokio::time::timeout(CLEAN_TIMEOUT, rpc.request::<_, Value>(method::BACKGROUND_TERMINALS_CLEAN, &params))
        .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("codex did not answer `{}` in time", method::BACKGROUND_TERMINALS_CLEAN)),
    }
}
