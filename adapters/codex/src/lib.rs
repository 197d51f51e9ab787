//! The `codex app-server` driver: one long-lived `codex app-server` process per
//! driver, spoken to in JSON-RPC over its stdio (see [`rpc`]), with one codex
//! thread per Bosun session.
//!
//! Layout of the moving parts, all on tokio tasks:
//! - the **turn task** (one per [`AgentDriver::start_turn`]) starts the
//!   process and opens the thread when needed, sends `turn/start`, and turns
//!   what codex says into [`AgentEvent`]s until the turn ends;
//! - the **router** reads everything codex sends that is not a reply, keeps
//!   track of codex's own turn state and hands messages to the turn under way
//!   (or answers them itself between turns);
//! - the **monitor** waits for the process to exit and, when nobody asked it
//!   to, fails the running turn and reports [`DriverNotice::Exited`];
//! - a stderr reader turns each stderr line into a [`DriverNotice::Log`].
//!
//! Codex runs each command in a session of its own and leaves it running when
//! a turn is interrupted, so the driver opts into codex's experimental API for
//! `thread/backgroundTerminals/clean`, sent when a turn ends interrupted, is
//! abandoned, or the driver is dropped.
//!
//! Invariants: a turn gets exactly one `Finished`, and nothing after it
//! (its [`TurnSink`], shared by the turn task, the router and the monitor);
//! the process group dies with the driver; a dead process is never restarted
//! by the driver (the worker builds a new driver).

pub mod protocol;
mod rpc;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bosun_proto::{
    Action, ChunkKind, CommandRun, Decision, EndedBy, Enforcement, PlanEntry, PlanEntryStatus, Policy, ToolKind,
    ToolStatus, Usage,
};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Child;
use tokio::sync::{mpsc, watch, Notify};
use tokio::time::Instant;

use bosun_driver::{
    safe_commands, AgentDriver, AgentError, AgentEvent, Asked, Capabilities, DriverInit, DriverNotice,
    EnforcementReport, KnownProgram, LogLevel, NewTurn, ProviderFactory, ProviderSpec, ToolCall, ToolUpdate,
    TurnControl, TurnHandle, TurnInput, TurnOutcome, TurnSink, TurnSlot,
};
use bosun_isolation::process::{spawn_piped_in_group, PipedChild, ProcessGroup};
use bosun_isolation::Jail;
use protocol::{
    method, ApprovalDecision, ApprovalResponse, ApprovalsReviewer, AskForApproval, BackgroundTerminalsCleanParams,
    ClientInfo, FileUpdateChange, InitializeCapabilities, InitializeParams, InitializeResponse, ItemStatus, PlanStep,
    PlanStepStatus, ServerNotification, ServerRequest, ThreadItem, ThreadResponse, ThreadResumeParams,
    ThreadStartParams, TokenUsageBreakdown, Turn, TurnInterruptParams, TurnStartParams, TurnStartResponse, TurnStatus,
    TurnSteerParams, TurnSteerResponse, UserInput,
};
use rpc::{Incoming, RpcClient, RpcError, METHOD_NOT_FOUND};

/// How long an interrupted turn may take to wind down before we end it
/// ourselves.
const INTERRUPT_GRACE: Duration = Duration::from_secs(2);
/// How long a new turn waits for a codex turn we abandoned to finish.
const ABANDONED_TURN_GRACE: Duration = Duration::from_secs(2);
/// How long to wait for an exit status when the connection dropped, to say
/// why in the turn's failure.
const EXIT_STATUS_GRACE: Duration = Duration::from_millis(500);
/// JSON-RPC "invalid params", for known requests we cannot read.
const INVALID_PARAMS: i64 = -32602;

/// The `codex-app-server` kind: `codex app-server`, found on `PATH` as
/// `codex`.
#[derive(Debug, Clone, Copy, Default)]
pub struct CodexFactory;

impl ProviderFactory for CodexFactory {
    fn kind(&self) -> &'static str {
        "codex-app-server"
    }

    fn runs_program(&self) -> bool {
        true
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities { resume: false, load_session: true, steer: true, interrupt: true, images: true }
    }

    fn enforcement_before_start(&self) -> EnforcementReport {
        EnforcementReport {
            enforcement: Enforcement::AgentMode,
            detail:
                "every codex thread is opened by the daemon with approvalPolicy \"untrusted\" (checked when it starts)"
                    .into(),
            agent: None,
        }
    }

    /// Codex talks to its model over the network.
    fn needs_network(&self, _spec: &ProviderSpec) -> bool {
        true
    }

    fn known_programs(&self) -> &'static [KnownProgram] {
        &[KnownProgram { program: "codex", args: &["app-server"] }]
    }

    /// Codex uses `~/.codex` unless `CODEX_HOME` says otherwise.
    fn default_state_dir(&self, _spec: &ProviderSpec) -> &'static [&'static str] {
        &["$CODEX_HOME", "~/.codex"]
    }

    fn driver(&self, spec: ProviderSpec, init: DriverInit) -> Box<dyn AgentDriver> {
        Box::new(CodexDriver::new(spec, init))
    }
}

/// The driver for `kind = "codex-app-server"`.
pub struct CodexDriver {
    spec: ProviderSpec,
    cwd: PathBuf,
    /// Where codex runs: in this jail, or on the host.
    jail: Option<Jail>,
    shared: Arc<Shared>,
    slot: TurnSlot,
    /// Jailed with no network: an agent that does not ask is bounded anyway.
    offline_jail: bool,
}

impl CodexDriver {
    pub fn new(spec: ProviderSpec, init: DriverInit) -> CodexDriver {
        let offline_jail = init.offline_jail();
        let jail = init.isolation.jail().cloned();
        let shared = Arc::new(Shared {
            notices: init.notices,
            agent: tokio::sync::Mutex::new(AgentSlot { agent: None, binding: init.binding }),
            state: Mutex::new(ProcessState::default()),
            turn_idle: Notify::new(),
            routes: AtomicU64::new(0),
            enforcement: Mutex::new(None),
            granted: Mutex::new(Granted::default()),
        });
        CodexDriver { spec, cwd: init.cwd, jail, shared, slot: TurnSlot::new(), offline_jail }
    }
}

impl Drop for CodexDriver {
    fn drop(&mut self) {
        let (group, cleaner) = {
            let mut state = self.shared.state();
            state.dropped = true;
            (state.group.take(), state.cleaner.take())
        };
        // Dropping the guard kills the whole group, wrappers and grandchildren;
        // but codex runs commands in sessions of their own, out of the group's
        // reach, so it is first asked to stop them.
        match (group, cleaner, tokio::runtime::Handle::try_current()) {
            (Some(group), Some((rpc, thread_id)), Ok(runtime)) => {
                runtime.spawn(async move {
                    let _ = clean_background_terminals(&rpc, &thread_id).await;
                    drop(group);
                });
            }
            (group, ..) => drop(group),
        }
    }
}

impl AgentDriver for CodexDriver {
    fn kind(&self) -> &'static str {
        "codex-app-server"
    }

    fn capabilities(&self) -> Capabilities {
        CodexFactory.capabilities()
    }

    fn start_turn(
        &mut self,
        input: TurnInput,
        events: mpsc::UnboundedSender<AgentEvent>,
    ) -> Result<TurnHandle, AgentError> {
        if input.resume.is_some() {
            return Err(AgentError::BadCheckpoint("the codex driver cannot pick a turn up from a checkpoint".into()));
        }
        let shared = self.shared.clone();
        let spec = self.spec.clone();
        // The session's directory: the process and its thread live on across
        // turns, so a turn cannot move them.
        let cwd = self.cwd.clone();
        let jail = self.jail.clone();
        let offline_jail = self.offline_jail;
        self.slot.start(events, (), move |NewTurn { sink, controls }| {
            TurnJob { shared, spec, cwd, jail, input, end: sink, controls, offline_jail }.drive()
        })
    }
}

// ---------------------------------------------------------------------------
// State shared by the driver and its tasks
// ---------------------------------------------------------------------------

struct Shared {
    notices: mpsc::UnboundedSender<DriverNotice>,
    /// The process and thread; locked by the turn under way for its whole
    /// life (the turn slot already makes turns take turns).
    agent: tokio::sync::Mutex<AgentSlot>,
    state: Mutex<ProcessState>,
    /// Signalled whenever codex reports a turn over (or the process died).
    turn_idle: Notify,
    /// Numbers the turns' routes, so a turn only ever removes its own.
    routes: AtomicU64,
    /// What the open thread's settings showed about holding codex to the
    /// session's policy (`None` before a thread is open).
    enforcement: Mutex<Option<EnforcementReport>>,
    /// What the user accepted for the rest of the session.
    granted: Mutex<Granted>,
}

/// Approvals accepted "for the session": codex then repeats such actions
/// without asking, and those are covered by the approval that granted them.
#[derive(Debug, Default, Clone)]
struct Granted {
    /// An exact command, by its text → the approval that allowed it.
    commands: HashMap<String, Asked>,
    /// File changes: codex stops asking for the rest of the session.
    file_changes: Option<Asked>,
}

impl Shared {
    fn granted(&self) -> Granted {
        self.granted.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn state(&self) -> MutexGuard<'_, ProcessState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn notice(&self, notice: DriverNotice) {
        let _ = self.notices.send(notice);
    }

    fn log(&self, level: LogLevel, message: String) {
        self.notice(DriverNotice::Log { level, message });
    }

    /// Kills the process group, remembering why for the exit report.
    fn kill(&self, reason: Option<String>) {
        let mut state = self.state();
        if reason.is_some() {
            state.kill_reason = reason;
        }
        if let Some(group) = state.group.as_mut() {
            group.kill();
        }
    }
}

struct AgentSlot {
    agent: Option<Agent>,
    /// The thread to resume, until a thread has been opened.
    binding: Option<Value>,
}

struct Agent {
    rpc: RpcClient,
    generation: u64,
    thread_id: Option<String>,
}

/// What the monitor, the router and the turns share about the process.
#[derive(Default)]
struct ProcessState {
    /// Bumped for each process started, so the tasks of a process that
    /// failed to start leave its successor alone.
    generation: u64,
    group: Option<ProcessGroup>,
    /// The process announced itself `Running`: its death is a crash.
    running: bool,
    exited: bool,
    /// Why the process is gone for good; later turns fail with it.
    dead: Option<String>,
    /// Why we killed the process ourselves, reported instead of the signal.
    kill_reason: Option<String>,
    dropped: bool,
    /// The last stderr line that looked like an error, to explain a start
    /// failure.
    stderr_error: Option<String>,
    route: Option<Route>,
    /// The codex turn under way, as codex reports it; a turn we abandoned may
    /// still be running after our side of it ended.
    active_turn: Option<String>,
    /// The thread's token totals as last reported: the next turn's baseline.
    last_total: Option<TokenUsageBreakdown>,
    /// How to reach the open thread, to stop its commands on the way out.
    cleaner: Option<(RpcClient, String)>,
}

/// Where the router sends what codex says during a turn.
struct Route {
    id: u64,
    inbox: mpsc::UnboundedSender<Inbound>,
    end: Arc<TurnSink>,
}

/// A message from codex, read by the router.
#[derive(Debug)]
enum Inbound {
    Notification(ServerNotification),
    Request { id: Value, request: ServerRequest },
}

// ---------------------------------------------------------------------------
// The process: start, monitor, route, stderr
// ---------------------------------------------------------------------------

/// Starts `codex app-server` and initializes it. On failure the process is
/// killed and waited for, so the next turn may try again from scratch.
async fn launch(shared: &Arc<Shared>, spec: &ProviderSpec, cwd: &Path, jail: Option<&Jail>) -> Result<Agent, String> {
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
async fn monitor(shared: Arc<Shared>, mut child: Child, generation: u64, exit_tx: watch::Sender<Option<String>>) {
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
async fn route(shared: Arc<Shared>, rpc: RpcClient, mut incoming: mpsc::UnboundedReceiver<Incoming>) {
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
fn observe(shared: &Shared, notification: &ServerNotification) {
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

fn answer_between_turns(shared: &Shared, rpc: &RpcClient, inbound: Inbound) {
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

fn refuse(rpc: &RpcClient, id: &Value, method: &str) {
    let _ = rpc.respond_error(id, METHOD_NOT_FOUND, &format!("bosun does not handle `{method}`"));
}

/// Notifications that are worth a log line wherever they come.
fn notice_text(notification: &ServerNotification) -> Option<(LogLevel, String)> {
    match notification {
        ServerNotification::Error(n) => Some((
            if n.will_retry { LogLevel::Warn } else { LogLevel::Error },
            format!("codex error{}: {}", if n.will_retry { " (retrying)" } else { "" }, n.error.describe()),
        )),
        ServerNotification::Warning(n) => Some((LogLevel::Warn, format!("codex warning: {}", n.message))),
        ServerNotification::ConfigWarning(n) => Some((LogLevel::Warn, with_details("codex config warning", n))),
        ServerNotification::DeprecationNotice(n) => Some((LogLevel::Info, with_details("codex deprecation notice", n))),
        _ => None,
    }
}

fn with_details(what: &str, n: &protocol::SummaryNotification) -> String {
    match n.details.as_deref() {
        Some(details) if !details.trim().is_empty() => format!("{what}: {} ({details})", n.summary),
        _ => format!("{what}: {}", n.summary),
    }
}

async fn forward_stderr(shared: Arc<Shared>, stderr: impl AsyncRead + Unpin) {
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

fn stderr_level(line: &str) -> LogLevel {
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
fn strip_ansi(text: &str) -> String {
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

fn describe_exit(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => "exited".to_string(),
    }
}

// ---------------------------------------------------------------------------
// A turn
// ---------------------------------------------------------------------------

struct TurnJob {
    shared: Arc<Shared>,
    spec: ProviderSpec,
    cwd: PathBuf,
    jail: Option<Jail>,
    input: TurnInput,
    end: Arc<TurnSink>,
    controls: mpsc::UnboundedReceiver<TurnControl>,
    offline_jail: bool,
}

impl TurnJob {
    /// Runs the turn. Once codex has it, the turn is ended by whoever sees
    /// its end first (this task, the router, the monitor), so this returns
    /// an outcome only for a turn that never reached codex.
    async fn drive(mut self) -> Option<TurnOutcome> {
        if let Some(reason) = self.shared.state().dead.clone() {
            return Some(TurnOutcome::Failed(reason));
        }
        let shared = self.shared.clone();
        let mut slot = shared.agent.lock().await;
        let thread_id = match self.prepare(&mut slot).await {
            Ok(thread_id) => thread_id,
            Err(reason) => return Some(TurnOutcome::Failed(reason)),
        };
        if let Some(reason) = self.refusal() {
            return Some(TurnOutcome::Failed(reason));
        }
        let Some(agent) = slot.agent.as_ref() else {
            return Some(TurnOutcome::Failed("the agent is not running".into()));
        };
        let rpc = agent.rpc.clone();
        let generation = agent.generation;
        self.run(rpc, generation, thread_id).await;
        None
    }

    /// Starts the process and opens the thread, as needed.
    async fn prepare(&mut self, slot: &mut AgentSlot) -> Result<String, String> {
        if slot.agent.is_none() {
            slot.agent = Some(launch(&self.shared, &self.spec, &self.cwd, self.jail.as_ref()).await?);
        }
        let Some(agent) = slot.agent.as_mut() else {
            return Err("the agent is not running".into());
        };
        if let Some(thread_id) = &agent.thread_id {
            return Ok(thread_id.clone());
        }
        let cwd = self.cwd.to_string_lossy().into_owned();
        let timeout = self.spec.startup_timeout();
        let resume = slot.binding.as_ref().and_then(|b| b.get("thread_id")).and_then(Value::as_str).map(str::to_string);
        let mut opened = None;
        if let Some(thread_id) = resume {
            let params = ThreadResumeParams {
                thread_id: thread_id.clone(),
                cwd: Some(cwd.clone()),
                approval_policy: Some(AskForApproval::Untrusted),
                approvals_reviewer: Some(ApprovalsReviewer::User),
                exclude_turns: Some(true),
            };
            match self.ask::<_, ThreadResponse>(&agent.rpc, method::THREAD_RESUME, &params, timeout).await? {
                Ok(reply) => opened = Some(reply),
                Err(e) => {
                    let message = format!("could not resume codex thread {thread_id} ({e}); starting a new one");
                    self.shared.log(LogLevel::Warn, message.clone());
                    self.end.log(LogLevel::Warn, message);
                }
            }
        }
        let reply = match opened {
            Some(reply) => reply,
            None => {
                let params = ThreadStartParams {
                    cwd: Some(cwd),
                    approval_policy: Some(AskForApproval::Untrusted),
                    approvals_reviewer: Some(ApprovalsReviewer::User),
                };
                match self.ask::<_, ThreadResponse>(&agent.rpc, method::THREAD_START, &params, timeout).await? {
                    Ok(reply) => reply,
                    Err(e) => return Err(format!("codex could not start a thread: {e}")),
                }
            }
        };
        let report = thread_enforcement(&reply);
        let thread_id = reply.thread.id;
        agent.thread_id = Some(thread_id.clone());
        self.shared.state().cleaner = Some((agent.rpc.clone(), thread_id.clone()));
        slot.binding = None;
        self.shared.notice(DriverNotice::Bound(json!({"thread_id": thread_id})));
        *self.shared.enforcement.lock().unwrap_or_else(|p| p.into_inner()) = Some(report.clone());
        self.shared.notice(DriverNotice::Enforcement(report));
        Ok(thread_id)
    }

    /// Why this turn must not be prompted: a plan-only turn on a thread
    /// that was found not to ask before acting (unless a jail without
    /// network bounds what it can do).
    fn refusal(&self) -> Option<String> {
        let report = self.shared.enforcement.lock().unwrap_or_else(|p| p.into_inner()).clone()?;
        let refused = report.enforcement == Enforcement::Unverified
            && self.input.policy == Policy::PlanOnly
            && !self.offline_jail;
        refused.then(|| bosun_driver::unenforceable(&report.detail))
    }

    /// A start-up request: an unanswered one means codex is stuck, so it is
    /// killed (the outer error); a refusal is the inner error.
    async fn ask<P: serde::Serialize, T: serde::de::DeserializeOwned>(
        &self,
        rpc: &RpcClient,
        method_name: &str,
        params: &P,
        timeout: Duration,
    ) -> Result<Result<T, RpcError>, String> {
        match tokio::time::timeout(timeout, rpc.request::<P, T>(method_name, params)).await {
            Ok(reply) => Ok(reply),
            Err(_) => {
                let reason = format!("codex did not answer `{method_name}` within {} s", timeout.as_secs());
                self.shared.kill(Some(reason.clone()));
                Err(reason)
            }
        }
    }

    async fn run(mut self, rpc: RpcClient, generation: u64, thread_id: String) {
        // Controls that came while the agent was starting.
        let mut early_steers = Vec::new();
        while let Ok(control) = self.controls.try_recv() {
            match control {
                TurnControl::Interrupt => {
                    self.end.finish(TurnOutcome::Interrupted);
                    return;
                }
                TurnControl::Steer(text) => early_steers.push(text),
                TurnControl::Decision { request_id, .. } => {
                    self.end.log(LogLevel::Warn, format!("a decision for unknown request {request_id} was ignored"));
                }
            }
        }
        self.wait_for_abandoned_turn(&rpc, &thread_id).await;

        let (inbox_tx, mut inbox) = mpsc::unbounded_channel();
        let route_id = self.shared.routes.fetch_add(1, Ordering::Relaxed);
        let baseline = {
            let mut state = self.shared.state();
            if state.generation != generation || state.exited {
                drop(state);
                let reason = self.shared.state().dead.clone().unwrap_or_else(|| "the agent process exited".into());
                self.end.finish(TurnOutcome::Failed(reason));
                return;
            }
            state.route = Some(Route { id: route_id, inbox: inbox_tx, end: self.end.clone() });
            state.last_total
        };
        let mut turn = TurnRun {
            shared: self.shared.clone(),
            rpc: rpc.clone(),
            route_id,
            end: self.end.clone(),
            state: TurnState::new(thread_id.clone(), self.cwd.to_string_lossy().into_owned(), baseline)
                .for_turn(&self.input.turn_id, self.shared.granted()),
            steers: early_steers,
            interrupt_at: None,
            interrupt_sent: false,
            side: mpsc::unbounded_channel(),
        };

        let params = TurnStartParams { thread_id: thread_id.clone(), input: vec![UserInput::text(&self.input.text)] };
        let start = rpc.request::<_, TurnStartResponse>(method::TURN_START, &params);
        tokio::pin!(start);
        let mut started = false;
        let silence = self.spec.silence_timeout();
        let mut heard_at = Instant::now();
        let mut controls_open = true;
        while !self.end.is_finished() {
            let silence_deadline = turn.state.approvals.is_empty().then_some(heard_at + silence);
            tokio::select! {
                reply = &mut start, if !started => {
                    started = true;
                    heard_at = Instant::now();
                    match reply {
                        Ok(reply) => {
                            turn.state.learn_turn_id(&reply.turn.id);
                            turn.flush();
                        }
                        Err(e) => {
                            self.end.finish(TurnOutcome::Failed(format!("codex did not start the turn: {e}")));
                        }
                    }
                }
                inbound = inbox.recv() => {
                    let Some(inbound) = inbound else {
                        // The route was taken: the process is gone and the
                        // monitor has ended the turn.
                        break;
                    };
                    heard_at = Instant::now();
                    if let Some(outcome) = turn.handle(inbound) {
                        turn.finish(outcome).await;
                    }
                }
                control = self.controls.recv(), if controls_open => match control {
                    Some(control) => {
                        if matches!(control, TurnControl::Decision { .. }) {
                            // Waiting on the daemon did not count as silence.
                            heard_at = Instant::now();
                        }
                        turn.control(control);
                    }
                    None => controls_open = false,
                },
                Some(side) = turn.side.1.recv() => turn.side_result(side),
                _ = sleep_until_some(silence_deadline) => {
                    let reason = format!("codex said nothing for {} s; it was stopped", silence.as_secs());
                    if self.end.finish(TurnOutcome::Failed(reason.clone())) {
                        self.shared.kill(Some(reason));
                    }
                }
                _ = sleep_until_some(turn.interrupt_at) => {
                    self.end.log(LogLevel::Warn, format!(
                        "codex did not end the turn within {} s of the interrupt",
                        INTERRUPT_GRACE.as_secs()
                    ));
                    turn.finish(TurnOutcome::Interrupted).await;
                }
            }
        }
    }

    /// A codex turn we abandoned (its handle was dropped) may still be
    /// winding down; a `turn/start` now would be taken as steering it.
    async fn wait_for_abandoned_turn(&self, rpc: &RpcClient, thread_id: &str) {
        let deadline = Instant::now() + ABANDONED_TURN_GRACE;
        let mut interrupted = false;
        loop {
            let idle = self.shared.turn_idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            let Some(active) = self.shared.state().active_turn.clone() else {
                return;
            };
            if !interrupted {
                interrupted = true;
                let params = TurnInterruptParams { thread_id: thread_id.to_string(), turn_id: active };
                let rpc = rpc.clone();
                tokio::spawn(async move { rpc.request::<_, Value>(method::TURN_INTERRUPT, &params).await });
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                self.shared.log(LogLevel::Warn, "an abandoned codex turn did not end in time".into());
                // Do not wait on it again for every turn to come.
                self.shared.state().active_turn = None;
                return;
            }
        }
    }
}

/// How long stopping an interrupted turn's commands may hold up its end.
const CLEAN_TIMEOUT: Duration = Duration::from_secs(1);

async fn clean_background_terminals(rpc: &RpcClient, thread_id: &str) -> Result<(), String> {
    let params = BackgroundTerminalsCleanParams { thread_id: thread_id.to_string() };
    match tokio::time::timeout(CLEAN_TIMEOUT, rpc.request::<_, Value>(method::BACKGROUND_TERMINALS_CLEAN, &params))
        .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("codex did not answer `{}` in time", method::BACKGROUND_TERMINALS_CLEAN)),
    }
}

async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// The outcome of a request sent while the turn goes on.
enum SideResult {
    Steer(Result<TurnSteerResponse, RpcError>),
    Interrupt(Result<Value, RpcError>),
}

/// A turn under way: its I/O around [`TurnState`]. Dropping it (the turn
/// ended, or its task was aborted) releases the route and whatever codex
/// still waits on.
struct TurnRun {
    shared: Arc<Shared>,
    rpc: RpcClient,
    route_id: u64,
    end: Arc<TurnSink>,
    state: TurnState,
    /// Steering that waits for the turn id.
    steers: Vec<String>,
    interrupt_at: Option<Instant>,
    interrupt_sent: bool,
    side: (mpsc::UnboundedSender<SideResult>, mpsc::UnboundedReceiver<SideResult>),
}

impl TurnRun {
    /// Handles one message; the turn's outcome when codex says it is over.
    fn handle(&mut self, inbound: Inbound) -> Option<TurnOutcome> {
        match inbound {
            Inbound::Notification(notification) => {
                let had_turn_id = self.state.turn_id.is_some();
                let mut outcome = None;
                for event in self.state.on_notification(notification) {
                    match event {
                        AgentEvent::Finished(end) => outcome = Some(end),
                        event => {
                            self.end.emit(event);
                        }
                    }
                }
                if !had_turn_id && self.state.turn_id.is_some() {
                    self.flush();
                }
                return outcome;
            }
            Inbound::Request { id, request } => match self.state.on_request(&id, request) {
                RequestOutcome::Ask(event) => {
                    self.end.emit(event);
                }
                RequestOutcome::Answer(decision) => {
                    let _ = self.rpc.respond(&id, &ApprovalResponse { decision });
                }
                RequestOutcome::Refuse(method) => {
                    refuse(&self.rpc, &id, &method);
                    self.end
                        .log(LogLevel::Warn, format!("codex sent a `{method}` request, which bosun does not serve"));
                }
            },
        }
        None
    }

    /// Ends the turn. An interrupted one first has its commands stopped:
    /// codex leaves them running otherwise.
    async fn finish(&mut self, outcome: TurnOutcome) {
        if outcome == TurnOutcome::Interrupted && !self.end.is_finished() {
            let clean = clean_background_terminals(&self.rpc, &self.state.thread_id);
            if let Err(e) = clean.await {
                self.end.log(LogLevel::Warn, format!("the interrupted turn's commands may still run: {e}"));
            }
        }
        self.end.finish(outcome);
    }

    fn control(&mut self, control: TurnControl) {
        match control {
            TurnControl::Decision { request_id, decision } => match self.state.approvals.remove(&request_id) {
                Some(codex_id) => {
                    if decision == Decision::AcceptForSession {
                        if let Some(granted) = self.state.grant(&request_id) {
                            *self.shared.granted.lock().unwrap_or_else(|p| p.into_inner()) = granted;
                        }
                    }
                    let _ = self.rpc.respond(&codex_id, &ApprovalResponse { decision: decision.into() });
                }
                None => {
                    self.end.log(LogLevel::Warn, format!("a decision for unknown request {request_id} was ignored"));
                }
            },
            TurnControl::Steer(text) => {
                self.steers.push(text);
                self.flush();
            }
            TurnControl::Interrupt => {
                if self.interrupt_at.is_none() {
                    self.interrupt_at = Some(Instant::now() + INTERRUPT_GRACE);
                }
                // Nobody will decide on them now, and codex winds down faster
                // without them.
                for (_, codex_id) in self.state.approvals.drain() {
                    let _ = self.rpc.respond(&codex_id, &ApprovalResponse { decision: ApprovalDecision::Cancel });
                }
                self.flush();
            }
        }
    }

    /// Sends what waited for the turn id: steering and an interrupt.
    fn flush(&mut self) {
        let Some(turn_id) = self.state.turn_id.clone() else {
            return;
        };
        if self.interrupt_at.is_some() && !self.interrupt_sent {
            self.interrupt_sent = true;
            let params = TurnInterruptParams { thread_id: self.state.thread_id.clone(), turn_id: turn_id.clone() };
            let (rpc, side) = (self.rpc.clone(), self.side.0.clone());
            tokio::spawn(async move {
                let reply = rpc.request::<_, Value>(method::TURN_INTERRUPT, &params).await;
                let _ = side.send(SideResult::Interrupt(reply));
            });
        }
        for text in self.steers.drain(..) {
            let params = TurnSteerParams {
                thread_id: self.state.thread_id.clone(),
                expected_turn_id: turn_id.clone(),
                input: vec![UserInput::text(text)],
            };
            let (rpc, side) = (self.rpc.clone(), self.side.0.clone());
            tokio::spawn(async move {
                let reply = rpc.request::<_, TurnSteerResponse>(method::TURN_STEER, &params).await;
                let _ = side.send(SideResult::Steer(reply));
            });
        }
    }

    fn side_result(&mut self, result: SideResult) {
        match result {
            SideResult::Steer(Ok(_)) | SideResult::Interrupt(Ok(_)) => {}
            SideResult::Steer(Err(e)) => self.end.log(LogLevel::Warn, format!("steering was refused: {e}")),
            SideResult::Interrupt(Err(e)) => self.end.log(LogLevel::Warn, format!("the interrupt was refused: {e}")),
        }
    }
}

impl Drop for TurnRun {
    fn drop(&mut self) {
        {
            let mut state = self.shared.state();
            if state.route.as_ref().is_some_and(|route| route.id == self.route_id) {
                state.route = None;
            }
        }
        // Codex must not wait on answers nobody will give any more.
        for (_, codex_id) in self.state.approvals.drain() {
            let _ = self.rpc.respond(&codex_id, &ApprovalResponse { decision: ApprovalDecision::Cancel });
        }
        // Abandoned mid-way (the handle was dropped): stop codex's turn too.
        if !self.end.is_finished() {
            if let (Some(turn_id), Ok(runtime)) = (self.state.turn_id.clone(), tokio::runtime::Handle::try_current()) {
                let params = TurnInterruptParams { thread_id: self.state.thread_id.clone(), turn_id };
                let rpc = self.rpc.clone();
                runtime.spawn(async move {
                    let _ = rpc.request::<_, Value>(method::TURN_INTERRUPT, &params).await;
                    let _ = clean_background_terminals(&rpc, &params.thread_id).await;
                });
            }
        }
    }
}

/// What to do with a request from codex.
#[derive(Debug, PartialEq)]
enum RequestOutcome {
    /// Ask the daemon (the event to emit); the answer comes as a decision.
    Ask(AgentEvent),
    /// Answer at once.
    Answer(ApprovalDecision),
    /// Not ours to serve: a JSON-RPC error.
    Refuse(String),
}

/// Maps one codex turn onto Bosun's events. No I/O: fed notifications and
/// requests, it returns events, so the mapping is testable as is.
#[derive(Debug)]
struct TurnState {
    thread_id: String,
    turn_id: Option<String>,
    cwd: String,
    /// Approvals asked for and not answered: our request id → codex's.
    approvals: HashMap<String, Value>,
    /// Tool items announced with a `ToolCall`.
    announced: HashSet<String>,
    /// Items whose text came as deltas, so their completion adds nothing.
    streamed: HashSet<String>,
    /// File changes as announced, for the approval that follows them.
    file_changes: HashMap<String, Vec<FileUpdateChange>>,
    /// The thread's token totals before this turn, when known.
    baseline: Option<TokenUsageBreakdown>,
    last_usage: Option<Usage>,
    /// The last error codex reported, the reason if the turn then fails.
    last_error: Option<String>,
    /// When each command item started, for its audit record.
    command_started: HashMap<String, String>,
    /// The daemon's id of this turn, which approvals are filed under.
    our_turn_id: String,
    /// Items codex asked about: item id → our request id.
    item_requests: HashMap<String, String>,
    /// What each request asked to do, for a grant "for the session".
    requested: HashMap<String, Requested>,
    /// Accepted for the session so far (this turn's copy).
    granted: Granted,
}

/// What an approval request was about.
#[derive(Debug, Clone)]
enum Requested {
    Command(String),
    FileChange,
}

impl TurnState {
    fn new(thread_id: String, cwd: String, baseline: Option<TokenUsageBreakdown>) -> TurnState {
        TurnState {
            thread_id,
            turn_id: None,
            cwd,
            approvals: HashMap::new(),
            announced: HashSet::new(),
            streamed: HashSet::new(),
            file_changes: HashMap::new(),
            baseline,
            last_usage: None,
            last_error: None,
            command_started: HashMap::new(),
            our_turn_id: String::new(),
            item_requests: HashMap::new(),
            requested: HashMap::new(),
            granted: Granted::default(),
        }
    }

    /// For the daemon's turn `turn_id`, with what was already granted for
    /// the session.
    fn for_turn(mut self, turn_id: &str, granted: Granted) -> TurnState {
        self.our_turn_id = turn_id.to_string();
        self.granted = granted;
        self
    }

    /// What covered a command codex ran: the approval it asked for, one
    /// granted for the session, its own safe list, or nothing.
    fn command_asked(&self, item_id: &str, command: &str) -> Asked {
        if let Some(request_id) = self.item_requests.get(item_id) {
            return Asked::request(&self.our_turn_id, request_id);
        }
        if let Some(asked) = self.granted.commands.get(command) {
            return asked.clone();
        }
        if safe_commands::is_known_safe(command) {
            return Asked::AgentSafeList;
        }
        Asked::NotAsked
    }

    fn file_change_asked(&self, item_id: &str) -> Asked {
        match self.item_requests.get(item_id) {
            Some(request_id) => Asked::request(&self.our_turn_id, request_id),
            None => self.granted.file_changes.clone().unwrap_or(Asked::NotAsked),
        }
    }

    /// Remembers an approval accepted for the session, so what codex then
    /// does without asking is seen as covered by it. Returns the grant to
    /// keep for later turns.
    fn grant(&mut self, request_id: &str) -> Option<Granted> {
        let asked = Asked::request(&self.our_turn_id, request_id);
        match self.requested.get(request_id)? {
            Requested::Command(command) => {
                self.granted.commands.insert(command.clone(), asked);
            }
            Requested::FileChange => self.granted.file_changes = Some(asked),
        }
        Some(self.granted.clone())
    }

    fn learn_turn_id(&mut self, turn_id: &str) {
        if self.turn_id.is_none() {
            self.turn_id = Some(turn_id.to_string());
        }
    }

    /// Whether a message about `turn_id` (if it names one) is about this turn.
    fn is_ours(&self, thread_id: Option<&str>, turn_id: Option<&str>) -> bool {
        thread_id.is_none_or(|t| t == self.thread_id)
            && match (&self.turn_id, turn_id) {
                (Some(ours), Some(theirs)) => ours == theirs,
                _ => true,
            }
    }

    fn on_notification(&mut self, notification: ServerNotification) -> Vec<AgentEvent> {
        use ServerNotification as N;
        if let N::TokenUsageUpdated(n) = &notification {
            // Totals reported for an earlier turn (codex repeats them after a
            // resume, possibly while our turn is starting) are where this
            // turn's usage starts from.
            if n.thread_id == self.thread_id && self.turn_id.as_deref() != Some(n.turn_id.as_str()) {
                self.baseline = Some(n.token_usage.total);
                return Vec::new();
            }
        }
        if !self.is_ours(notification.thread_id(), notification.turn_id()) {
            return Vec::new();
        }
        let chunk = |kind, text: String| AgentEvent::Chunk { kind, text, checkpoint: None };
        match notification {
            N::TurnStarted(n) => {
                self.learn_turn_id(&n.turn.id);
                Vec::new()
            }
            N::TurnCompleted(n) => {
                self.learn_turn_id(&n.turn.id);
                vec![AgentEvent::Finished(outcome(&n.turn, self.last_error.as_deref()))]
            }
            N::AgentMessageDelta(n) => {
                self.streamed.insert(n.item_id);
                vec![chunk(ChunkKind::Text, n.delta)]
            }
            N::ReasoningSummaryTextDelta(n) | N::ReasoningTextDelta(n) => {
                self.streamed.insert(n.item_id);
                vec![chunk(ChunkKind::Thought, n.delta)]
            }
            N::ReasoningSummaryPartAdded(n) if n.summary_index > 0 => vec![chunk(ChunkKind::Thought, "\n\n".into())],
            N::ReasoningSummaryPartAdded(_) => Vec::new(),
            N::CommandOutputDelta(n) => vec![chunk(ChunkKind::CommandOutput, n.delta)],
            N::TurnPlanUpdated(n) => vec![AgentEvent::Plan(plan_entries(&n.plan))],
            N::TokenUsageUpdated(n) => {
                let usage = n.token_usage;
                // Without a baseline (a fresh process that has not reported
                // the thread's totals yet), this update is the turn's first
                // response, so the totals before it are total - last.
                let baseline = *self.baseline.get_or_insert_with(|| subtract(&usage.total, &usage.last));
                let turn_usage = Usage {
                    input_tokens: (usage.total.input_tokens - baseline.input_tokens).max(0) as u64,
                    output_tokens: (usage.total.output_tokens - baseline.output_tokens).max(0) as u64,
                    context_tokens: None,
                };
                if self.last_usage == Some(turn_usage) {
                    return Vec::new();
                }
                self.last_usage = Some(turn_usage);
                vec![AgentEvent::Usage(turn_usage)]
            }
            N::ItemStarted(n) => {
                match &n.item {
                    ThreadItem::FileChange { id, changes, .. } => {
                        self.file_changes.insert(id.clone(), changes.clone());
                    }
                    ThreadItem::CommandExecution { id, .. } => {
                        self.command_started.insert(id.clone(), bosun_proto::now_ts());
                    }
                    _ => {}
                }
                match tool_call(&n.item) {
                    Some(call) => {
                        self.announced.insert(call.id.clone());
                        vec![AgentEvent::ToolCall(call)]
                    }
                    None => Vec::new(),
                }
            }
            N::ItemCompleted(n) => self.item_completed(n.item),
            N::Error(n) => {
                let message = n.error.describe();
                if !n.will_retry {
                    self.last_error = Some(message);
                }
                notice_text(&N::Error(n))
                    .map(|(level, message)| vec![AgentEvent::Log { level, message }])
                    .unwrap_or_default()
            }
            N::ServerRequestResolved(n) => {
                // Codex settled it by itself (say, the turn was interrupted).
                self.approvals.retain(|_, codex_id| *codex_id != n.request_id);
                Vec::new()
            }
            notification @ (N::Warning(_) | N::ConfigWarning(_) | N::DeprecationNotice(_)) => {
                notice_text(&notification)
                    .map(|(level, message)| vec![AgentEvent::Log { level, message }])
                    .unwrap_or_default()
            }
            N::Other(_) => Vec::new(),
        }
    }

    fn item_completed(&mut self, item: ThreadItem) -> Vec<AgentEvent> {
        let mut events = Vec::new();
        match &item {
            ThreadItem::AgentMessage { id, text } if !self.streamed.contains(id) && !text.is_empty() => {
                events.push(AgentEvent::Chunk { kind: ChunkKind::Text, text: text.clone(), checkpoint: None });
            }
            ThreadItem::Reasoning { id, summary } if !self.streamed.contains(id) && !summary.is_empty() => {
                events.push(AgentEvent::Chunk {
                    kind: ChunkKind::Thought,
                    text: summary.join("\n\n"),
                    checkpoint: None,
                });
            }
            _ => {}
        }
        if let Some(update) = tool_update(&item) {
            if !self.announced.contains(&update.id) {
                // Never saw it start: announce it, already in its final state.
                if let Some(mut call) = tool_call(&item) {
                    if let Some(status) = update.status {
                        call.status = status;
                    }
                    self.announced.insert(call.id.clone());
                    events.push(AgentEvent::ToolCall(call));
                }
            }
            events.push(AgentEvent::ToolUpdate(update));
        }
        match &item {
            ThreadItem::CommandExecution { id, command, .. } => {
                let started_at = self.command_started.remove(id);
                if let Some(run) = command_run(&item, started_at) {
                    let asked = self.command_asked(id, command);
                    events.push(AgentEvent::CommandRan { run, asked });
                }
            }
            ThreadItem::FileChange { id, changes, status: ItemStatus::Completed } => {
                let asked = self.file_change_asked(id);
                for change in changes {
                    let summary = format!("{} (codex patch)", change.kind.verb());
                    events.push(AgentEvent::FileChanged { path: change.path.clone(), summary, asked: asked.clone() });
                }
            }
            _ => {}
        }
        events
    }

    fn on_request(&mut self, id: &Value, request: ServerRequest) -> RequestOutcome {
        let request_id = format!("codex-{}", id.as_str().map(str::to_string).unwrap_or_else(|| id.to_string()));
        let action = match request {
            ServerRequest::CommandApproval(params) => {
                if !self.is_ours(Some(&params.thread_id), Some(&params.turn_id)) {
                    return RequestOutcome::Answer(ApprovalDecision::Cancel);
                }
                let command = params.command.unwrap_or_else(|| format!("(command of item {})", params.item_id));
                self.item_requests.insert(params.item_id, request_id.clone());
                self.requested.insert(request_id.clone(), Requested::Command(command.clone()));
                Action::Command { command, cwd: params.cwd.unwrap_or_else(|| self.cwd.clone()) }
            }
            ServerRequest::FileChangeApproval(params) => {
                if !self.is_ours(Some(&params.thread_id), Some(&params.turn_id)) {
                    return RequestOutcome::Answer(ApprovalDecision::Cancel);
                }
                let changes = self.file_changes.get(&params.item_id).map(Vec::as_slice).unwrap_or_default();
                let action = file_change_action(changes, params.reason.as_deref(), params.grant_root.as_deref());
                self.item_requests.insert(params.item_id, request_id.clone());
                self.requested.insert(request_id.clone(), Requested::FileChange);
                action
            }
            ServerRequest::Other(method) => return RequestOutcome::Refuse(method),
        };
        self.approvals.insert(request_id.clone(), id.clone());
        RequestOutcome::Ask(AgentEvent::ApprovalRequest { request_id, action, checkpoint: None })
    }
}

fn subtract(a: &TokenUsageBreakdown, b: &TokenUsageBreakdown) -> TokenUsageBreakdown {
    TokenUsageBreakdown {
        input_tokens: a.input_tokens - b.input_tokens,
        output_tokens: a.output_tokens - b.output_tokens,
        cached_input_tokens: a.cached_input_tokens - b.cached_input_tokens,
        reasoning_output_tokens: a.reasoning_output_tokens - b.reasoning_output_tokens,
        total_tokens: a.total_tokens - b.total_tokens,
    }
}

fn outcome(turn: &Turn, last_error: Option<&str>) -> TurnOutcome {
    match turn.status {
        TurnStatus::Completed => TurnOutcome::Completed,
        TurnStatus::Interrupted => TurnOutcome::Interrupted,
        TurnStatus::Failed => TurnOutcome::Failed(
            turn.error
                .as_ref()
                .map(protocol::TurnError::describe)
                .or_else(|| last_error.map(str::to_string))
                .unwrap_or_else(|| "codex reported the turn failed".into()),
        ),
        // A completion notice that does not say how it ended: nothing failed
        // that we know of.
        TurnStatus::InProgress | TurnStatus::Unknown => TurnOutcome::Completed,
    }
}

fn plan_entries(steps: &[PlanStep]) -> Vec<PlanEntry> {
    steps
        .iter()
        .map(|step| PlanEntry {
            content: step.step.clone(),
            status: match step.status {
                PlanStepStatus::Completed => PlanEntryStatus::Completed,
                PlanStepStatus::InProgress => PlanEntryStatus::InProgress,
                PlanStepStatus::Pending | PlanStepStatus::Unknown => PlanEntryStatus::Pending,
            },
        })
        .collect()
}

fn tool_status(status: ItemStatus) -> ToolStatus {
    match status {
        ItemStatus::InProgress | ItemStatus::Unknown => ToolStatus::InProgress,
        ItemStatus::Completed => ToolStatus::Completed,
        ItemStatus::Failed | ItemStatus::Declined | ItemStatus::Interrupted => ToolStatus::Failed,
    }
}

fn paths_of(changes: &[FileUpdateChange]) -> String {
    if changes.is_empty() {
        return "(no files named)".to_string();
    }
    changes.iter().map(|c| c.path.as_str()).collect::<Vec<_>>().join(", ")
}

fn file_change_action(changes: &[FileUpdateChange], reason: Option<&str>, grant_root: Option<&str>) -> Action {
    let mut summary = changes
        .iter()
        .map(|c| {
            let lines = c.diff.lines().count();
            format!("{} {} ({lines} diff line{})", c.kind.verb(), c.path, if lines == 1 { "" } else { "s" })
        })
        .collect::<Vec<_>>()
        .join("; ");
    if let Some(root) = grant_root {
        summary = join_nonempty(&summary, &format!("write access under {root} for the session"));
    }
    if let Some(reason) = reason.filter(|r| !r.trim().is_empty()) {
        summary = join_nonempty(&summary, reason);
    }
    if summary.is_empty() {
        summary = "file change".to_string();
    }
    let path = if changes.is_empty() { grant_root.unwrap_or("(unknown)").to_string() } else { paths_of(changes) };
    Action::FileChange { path, summary }
}

fn join_nonempty(a: &str, b: &str) -> String {
    if a.is_empty() {
        b.to_string()
    } else {
        format!("{a}; {b}")
    }
}

/// The `ToolCall` announcing an item, for items that are tool calls.
fn tool_call(item: &ThreadItem) -> Option<ToolCall> {
    let (id, title, kind, status, detail) = match item {
        ThreadItem::CommandExecution { id, command, cwd, status, .. } => {
            (id, command.clone(), ToolKind::Execute, tool_status(*status), json!({"command": command, "cwd": cwd}))
        }
        ThreadItem::FileChange { id, changes, status } => (
            id,
            format!("edit {}", paths_of(changes)),
            ToolKind::Edit,
            tool_status(*status),
            json!({"changes": changes.iter().map(|c| json!({"path": c.path, "kind": c.kind.verb(), "diff": c.diff})).collect::<Vec<_>>()}),
        ),
        ThreadItem::McpToolCall { id, server, tool, status, arguments, .. } => (
            id,
            format!("{server}: {tool}"),
            ToolKind::Other,
            tool_status(*status),
            json!({"server": server, "tool": tool, "arguments": arguments}),
        ),
        ThreadItem::DynamicToolCall { id, tool, status, arguments, .. } => {
            (id, tool.clone(), ToolKind::Other, tool_status(*status), json!({"tool": tool, "arguments": arguments}))
        }
        ThreadItem::CollabAgentToolCall { id, tool, status, prompt } => (
            id,
            format!("agent: {tool}"),
            ToolKind::Other,
            tool_status(*status),
            json!({"tool": tool, "prompt": prompt}),
        ),
        ThreadItem::WebSearch { id, query } => {
            (id, format!("web search: {query}"), ToolKind::Fetch, ToolStatus::InProgress, json!({"query": query}))
        }
        ThreadItem::ImageView { id, path } => {
            (id, format!("view {path}"), ToolKind::Read, ToolStatus::InProgress, json!({"path": path}))
        }
        ThreadItem::ImageGeneration { id, .. } => {
            (id, "image generation".to_string(), ToolKind::Other, ToolStatus::InProgress, Value::Null)
        }
        ThreadItem::AgentMessage { .. } | ThreadItem::Reasoning { .. } | ThreadItem::Other => return None,
    };
    Some(ToolCall { id: id.clone(), title, kind, status, detail })
}

/// The `ToolUpdate` for a finished item, for items that are tool calls.
fn tool_update(item: &ThreadItem) -> Option<ToolUpdate> {
    let update = |id: &String, status: ToolStatus, output: Option<String>, detail: Value| ToolUpdate {
        id: id.clone(),
        status: Some(status),
        title: None,
        output,
        detail,
    };
    Some(match item {
        ThreadItem::CommandExecution { id, status, aggregated_output, exit_code, duration_ms, .. } => update(
            id,
            tool_status(*status),
            aggregated_output.clone(),
            json!({"exit_code": exit_code, "duration_ms": duration_ms, "declined": *status == ItemStatus::Declined}),
        ),
        ThreadItem::FileChange { id, changes, status } => {
            let diff = changes.iter().map(|c| c.diff.as_str()).filter(|d| !d.is_empty()).collect::<Vec<_>>().join("\n");
            update(
                id,
                tool_status(*status),
                (!diff.is_empty()).then_some(diff),
                json!({"declined": *status == ItemStatus::Declined}),
            )
        }
        ThreadItem::McpToolCall { id, status, result, error, .. } => {
            let output = match (error, result) {
                (Some(error), _) => Some(error.message.clone()),
                (None, Some(result)) => Some(mcp_result_text(result)),
                (None, None) => None,
            };
            update(id, tool_status(*status), output, Value::Null)
        }
        ThreadItem::DynamicToolCall { id, status, content_items, .. } => {
            update(id, tool_status(*status), content_items.as_ref().map(mcp_result_text), Value::Null)
        }
        ThreadItem::CollabAgentToolCall { id, status, .. } => update(id, tool_status(*status), None, Value::Null),
        ThreadItem::WebSearch { id, .. } | ThreadItem::ImageView { id, .. } => {
            update(id, ToolStatus::Completed, None, Value::Null)
        }
        ThreadItem::ImageGeneration { id, status } => {
            let status = if status == "failed" { ToolStatus::Failed } else { ToolStatus::Completed };
            update(id, status, None, Value::Null)
        }
        ThreadItem::AgentMessage { .. } | ThreadItem::Reasoning { .. } | ThreadItem::Other => return None,
    })
}

/// How codex is held to the policy, as the settings its thread reports show.
fn thread_enforcement(reply: &ThreadResponse) -> EnforcementReport {
    match reply.weaker_than_untrusted() {
        None => EnforcementReport {
            enforcement: Enforcement::AgentMode,
            detail: "every codex thread is opened by the daemon with approvalPolicy \"untrusted\" and approvals \
                     to the user, and codex's answer is checked"
                .into(),
            agent: Some("codex".into()),
        },
        Some(why) => EnforcementReport {
            enforcement: Enforcement::Unverified,
            detail: format!("codex did not take the daemon's approval settings: {why}"),
            agent: Some("codex".into()),
        },
    }
}

/// The audit record of a command item codex ran (declined ones never ran).
fn command_run(item: &ThreadItem, started_at: Option<String>) -> Option<CommandRun> {
    let ThreadItem::CommandExecution { command, cwd, status, aggregated_output, exit_code, duration_ms, .. } = item
    else {
        return None;
    };
    let ended_by = match (status, exit_code) {
        (ItemStatus::Declined, _) => return None,
        (ItemStatus::Interrupted, _) => Some(EndedBy::Interrupted),
        (ItemStatus::Failed, None) => Some(EndedBy::Failed),
        _ => None,
    };
    Some(CommandRun {
        command: command.clone(),
        cwd: cwd.clone(),
        exit_code: exit_code.and_then(|c| i32::try_from(c).ok()),
        ended_by,
        // Codex reports no start time; when the item's start was missed,
        // its end is the closest moment we know.
        started_at: started_at.unwrap_or_else(bosun_proto::now_ts),
        duration_ms: duration_ms.and_then(|d| u64::try_from(d).ok()).unwrap_or(0),
        // Codex gives stdout and stderr merged.
        stdout_bytes: aggregated_output.as_ref().map_or(0, |o| o.len() as u64),
        stderr_bytes: 0,
        approval: None,
        approval_id: None,
    })
}

/// The text parts of an MCP-style result (`{content: [{type: "text", text}]}`
/// or a bare list of such parts); the JSON itself when it has none.
fn mcp_result_text(result: &Value) -> String {
    let parts = result.get("content").unwrap_or(result);
    let texts: Vec<&str> = parts
        .as_array()
        .map(|items| items.iter().filter_map(|item| item.get("text").and_then(Value::as_str)).collect())
        .unwrap_or_default();
    if texts.is_empty() {
        result.to_string()
    } else {
        texts.join("\n")
    }
}

#[cfg(test)]
mod tests;
