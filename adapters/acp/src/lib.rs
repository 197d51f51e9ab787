//! The driver for agents that speak the Agent Client Protocol (ACP) over
//! stdio: codex-acp, claude-agent-acp, `gemini --acp`...
//!
//! One agent process per driver, started on the first turn and reused by the
//! next ones; one agent-side session per driver, loaded from the daemon's
//! binding when the agent can, else created. A turn is one `session/prompt`
//! (or several, when steered); the agent's `session/update` notifications and
//! `session/request_permission` requests are routed to the turn under way.
//!
//! Mapping onto the driver contract:
//! - `agent_message_chunk` / `agent_thought_chunk` → `Chunk` text / thought;
//!   `tool_call` / `tool_call_update` → `ToolCall` / `ToolUpdate`; `plan` →
//!   `Plan`; anything else is logged at debug level and dropped.
//! - Usage: the prompt response's `usage` (input and output tokens) when the
//!   agent sends it (an unstable ACP field; codex-acp 0.16 does not).
//!   `usage_update`, which only tells how many tokens the context window
//!   holds, is reported as `context_tokens`, never as tokens the turn spent.
//! - `session/request_permission` → `ApprovalRequest` with id `perm-<JSON-RPC
//!   id>`; the daemon's decision picks an option by its kind.
//! - Interrupt (and a `Cancel` decision) → `session/cancel`; steer →
//!   `session/cancel`, then a new `session/prompt` with the steer text, within
//!   the same turn.
//! - `session/cancel` only ends the prompt: codex-acp lets the command it was
//!   running live on. So once a stopped prompt has returned, an agent that
//!   can close and load sessions gets `session/close` (which kills that work)
//!   and the same session is loaded again, its replayed history dropped,
//!   before the next prompt.

mod agents;
mod client;
mod connection;
mod ledger;
mod mapping;

pub use agents::KnownAgent;

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use agent_client_protocol::schema::ProtocolVersion;
use agent_client_protocol::v1::schema::{
    CancelNotification, ClientCapabilities, CloseSessionRequest, ContentBlock, CreateTerminalResponse,
    FileSystemCapabilities, Implementation, InitializeRequest, KillTerminalResponse, LoadSessionRequest,
    NewSessionRequest, PermissionOption, PromptRequest, PromptResponse, ReadTextFileResponse, ReleaseTerminalResponse,
    RequestPermissionOutcome, RequestPermissionRequest, SelectedPermissionOutcome, SessionId, SessionModeId,
    SessionModeState, SessionNotification, SessionUpdate, SetSessionModeRequest, StopReason,
    WaitForTerminalExitResponse, WriteTextFileResponse,
};
use agent_client_protocol::v1::ConnectionTo;
use bosun_proto::{Action, ChunkKind, Decision, Enforcement, Policy, Usage};
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use agents::ModePlan;
use bosun_driver::{
    AgentDriver, AgentError, AgentEvent, Asked, Capabilities, DriverInit, DriverNotice, EnforcementReport,
    KnownProgram, LogLevel, NewTurn, ProviderFactory, ProviderSpec, TurnControl, TurnHandle, TurnInput, TurnOutcome,
    TurnSlot,
};
use bosun_isolation::{Isolation, Jail};
use client::{Act, TerminalStart, Terminals};
use connection::{answer_with, spawn_agent, AgentListener, AgentProcess, ClientCall, PermissionReply};
use ledger::{Grants, Ledger};

/// How long the agent gets to stop after `session/cancel` before the turn
/// is ended anyway.
const STOP_GRACE: Duration = Duration::from_secs(2);
/// After a failed request, how long to wait for the process exit that
/// probably caused it, so the turn fails with the exit rather than with a
/// closed-connection error.
const EXIT_GRACE: Duration = Duration::from_millis(750);
/// How long an interrupted turn waits for `session/close` before it ends
/// anyway (the close goes on behind it). codex-acp answers in a few ms.
const CLOSE_WAIT: Duration = Duration::from_millis(500);
/// How long a `session/close` may take before the session is reloaded
/// regardless.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// A turn's event sink, with what the turn's agent did and what covered it
/// (its [`Ledger`], which adds the closing audit records as the turn ends).
type TurnSink = bosun_driver::TurnSink<Ledger>;

/// The `acp` kind: any agent that speaks ACP over stdio.
#[derive(Debug, Clone, Copy, Default)]
pub struct AcpFactory;

impl ProviderFactory for AcpFactory {
    fn kind(&self) -> &'static str {
        "acp"
    }

    fn runs_program(&self) -> bool {
        true
    }

    /// `load_session` also needs the agent to support it; `images` is
    /// learned from the agent's `initialize` answer.
    fn capabilities(&self) -> Capabilities {
        Capabilities { resume: false, load_session: true, steer: true, interrupt: true, images: false }
    }

    fn enforcement_before_start(&self) -> EnforcementReport {
        EnforcementReport {
            enforcement: Enforcement::Unknown,
            detail: "learned when the agent first starts (the daemon may start it once to find out)".into(),
            agent: None,
        }
    }

    /// The known agents all reach their model over the network; an unknown
    /// one may run a local model, so it may be jailed offline.
    fn needs_network(&self, spec: &ProviderSpec) -> bool {
        KnownAgent::recognise(spec.agent_name.as_deref(), spec.program_name()).is_some()
    }

    /// What each speaks ACP with; what makes it ask before it acts is added
    /// by the driver whatever the args ([`KnownAgent`]).
    fn known_programs(&self) -> &'static [KnownProgram] {
        &[
            KnownProgram { program: "codex-acp", args: &[] },
            KnownProgram { program: "claude-agent-acp", args: &[] },
            KnownProgram { program: "gemini", args: &["--acp"] },
        ]
    }

    fn default_state_dir(&self, spec: &ProviderSpec) -> &'static [&'static str] {
        match KnownAgent::recognise(spec.agent_name.as_deref(), spec.program_name()) {
            // Codex uses ~/.codex unless CODEX_HOME says otherwise.
            Some(KnownAgent::CodexAcp) => &["$CODEX_HOME", "~/.codex"],
            Some(KnownAgent::Claude) => &["~/.claude"],
            Some(KnownAgent::Gemini) => &["~/.gemini"],
            None => &[],
        }
    }

    fn probe<'a>(
        &'a self,
        spec: ProviderSpec,
        scratch: &'a std::path::Path,
    ) -> futures::future::BoxFuture<'a, Result<EnforcementReport, String>> {
        Box::pin(probe(spec, scratch))
    }

    fn driver(&self, spec: ProviderSpec, init: DriverInit) -> Box<dyn AgentDriver> {
        Box::new(AcpDriver::new(spec, init))
    }
}

/// The ACP driver (kind `acp`).
pub struct AcpDriver {
    shared: Arc<Shared>,
    /// Its permit is held by the turn under way until it finishes (or its
    /// task is torn down after its handle was dropped).
    slot: TurnSlot,
    next_turn: u64,
}

impl AcpDriver {
    pub fn new(spec: ProviderSpec, init: DriverInit) -> AcpDriver {
        let (exit_tx, _) = watch::channel(None);
        let offline_jail = init.offline_jail();
        let jail = init.isolation.jail().cloned();
        let shared = Arc::new_cyclic(|this| Shared {
            this: this.clone(),
            spec,
            cwd: init.cwd,
            binding: init.binding,
            notices: init.notices,
            state: Mutex::new(State { agent: AgentState::NotStarted, turn: None, kill_reason: None, stopped: false }),
            last_heard: Mutex::new(Instant::now()),
            images: AtomicBool::new(false),
            replaying: AtomicBool::new(false),
            exit_tx,
            offline_jail,
            jail,
            enforcement: Mutex::new(None),
            agent_identity: Mutex::new(None),
            terminals: Terminals::default(),
            grants: Grants::default(),
        });
        AcpDriver { shared, slot: TurnSlot::new(), next_turn: 0 }
    }
}

impl Drop for AcpDriver {
    fn drop(&mut self) {
        let live = {
            let mut state = self.shared.lock();
            state.stopped = true;
            match std::mem::replace(&mut state.agent, AgentState::gone("the driver was stopped")) {
                AgentState::Up(live) => Some(live),
                AgentState::Gone { dead, .. } => dead,
                AgentState::NotStarted => None,
            }
        };
        // Turn tasks may still hold the agent; the process goes now regardless.
        if let Some(live) = live {
            live.stop();
        }
        self.shared.terminals.kill_all();
    }
}

impl AgentDriver for AcpDriver {
    fn kind(&self) -> &'static str {
        "acp"
    }

    fn capabilities(&self) -> Capabilities {
        // Images depend on the agent, known once it has answered `initialize`.
        Capabilities { images: self.shared.images.load(Ordering::Relaxed), ..AcpFactory.capabilities() }
    }

    fn start_turn(
        &mut self,
        input: TurnInput,
        events: mpsc::UnboundedSender<AgentEvent>,
    ) -> Result<TurnHandle, AgentError> {
        if input.resume.is_some() {
            return Err(AgentError::BadCheckpoint("the ACP driver cannot resume a turn cut mid-way".into()));
        }
        let ledger = Ledger::new(&input.turn_id, self.shared.identity(), &self.shared.cwd, self.shared.grants.clone());
        let shared = self.shared.clone();
        let next_turn = &mut self.next_turn;
        self.slot.start(events, ledger, move |NewTurn { sink, controls }| {
            *next_turn += 1;
            let id = *next_turn;
            // The agent's messages find the turn's sink through here, from
            // now on: whoever sees the turn end first finishes it.
            shared.lock().turn = Some(ActiveTurn { id, sink: sink.clone(), policy: input.policy, inbound: None });
            let turn = Turn {
                shared,
                id,
                turn_id: input.turn_id,
                policy: input.policy,
                client_requests: 0,
                pending_client: HashMap::new(),
                sink,
                controls,
                controls_open: true,
                text: input.text,
                agent: None,
                pending: HashMap::new(),
                prompting: false,
                declined: false,
                exact_usage: None,
                exact_usage_context: None,
                interrupted: Arc::new(AtomicBool::new(false)),
                activity: Instant::now(),
            };
            turn.run()
        })
    }
}

/// Starts the agent once, in `scratch`, to learn how it can be held to
/// asking before it acts (who it says it is, the modes it offers, whether it
/// takes the one that asks), then stops it.
pub async fn probe(spec: ProviderSpec, scratch: &std::path::Path) -> Result<EnforcementReport, String> {
    std::fs::create_dir_all(scratch).map_err(|e| format!("creating {}: {e}", scratch.display()))?;
    let (notices, _notices) = mpsc::unbounded_channel();
    let init = DriverInit {
        session_id: "probe".into(),
        cwd: scratch.to_path_buf(),
        binding: None,
        notices,
        isolation: Isolation::Host,
        network: false,
    };
    let driver = AcpDriver::new(spec, init);
    let (events, mut failures) = mpsc::unbounded_channel();
    let sink = TurnSink::new(events, Ledger::new("probe", None, scratch, Grants::default()));
    let started = driver.shared.agent(&sink).await;
    let report = driver.shared.enforcement.lock().unwrap_or_else(|p| p.into_inner()).clone();
    drop(driver);
    match (started, report) {
        (Ok(_), Some(report)) => Ok(report),
        (Err(Some(why)), _) => Err(why),
        _ => {
            // The reason went out as the end of the would-be turn.
            let mut why = "the agent did not get as far as a session".to_string();
            while let Ok(event) = failures.try_recv() {
                if let AgentEvent::Finished(TurnOutcome::Failed(reason)) = event {
                    why = reason;
                }
            }
            Err(why)
        }
    }
}

/// What the driver, its turn tasks and the connection's tasks share.
struct Shared {
    /// Itself, for work a connection's callback hands to a task.
    this: Weak<Shared>,
    spec: ProviderSpec,
    cwd: PathBuf,
    binding: Option<Value>,
    notices: mpsc::UnboundedSender<DriverNotice>,
    state: Mutex<State>,
    /// When the agent last wrote a line on stdout.
    last_heard: Mutex<Instant>,
    images: AtomicBool,
    /// A session is being loaded: the history it replays is not the turn's.
    replaying: AtomicBool,
    /// Set once, to the reason, when the agent process exits unasked.
    exit_tx: watch::Sender<Option<String>>,
    /// Jailed with no network: an agent that does not ask is bounded anyway.
    offline_jail: bool,
    /// Where the agent and the commands it has the daemon run go: in this
    /// jail, or on the host.
    jail: Option<Jail>,
    /// How the agent is held to asking, once it has started.
    enforcement: Mutex<Option<EnforcementReport>>,
    /// Who the agent said it is at `initialize`.
    agent_identity: Mutex<Option<KnownAgent>>,
    /// Commands the agent runs through us.
    terminals: Terminals,
    /// What was accepted for the rest of the session.
    grants: Grants,
}

struct State {
    agent: AgentState,
    turn: Option<ActiveTurn>,
    /// Why we are killing the agent ourselves, for the exit notice.
    kill_reason: Option<String>,
    /// The driver was dropped: nothing is reported any more.
    stopped: bool,
}

struct ActiveTurn {
    id: u64,
    sink: Arc<TurnSink>,
    policy: Policy,
    /// Where the agent's messages for this turn go, once its prompt is sent.
    inbound: Option<mpsc::UnboundedSender<Inbound>>,
}

enum AgentState {
    NotStarted,
    Up(Arc<LiveAgent>),
    /// Unusable from now on; `reason` fails every later turn. A dead agent is
    /// kept so its stderr is read to the end.
    Gone {
        reason: String,
        dead: Option<Arc<LiveAgent>>,
    },
}

impl AgentState {
    fn gone(reason: &str) -> AgentState {
        AgentState::Gone { reason: reason.to_string(), dead: None }
    }
}

/// An initialized agent with its session.
struct LiveAgent {
    cx: ConnectionTo<agent_client_protocol::Agent>,
    /// Changes only when a closed session could not be loaded again.
    session_id: Mutex<SessionId>,
    /// The agent advertises both `session/close` and `session/load`, so a
    /// session can be closed to stop its work and then taken up again.
    can_close: bool,
    /// True while the session is closed and must be loaded before the next
    /// prompt. Held across a close and a reload, so a prompt never overtakes
    /// either.
    closed: Arc<tokio::sync::Mutex<bool>>,
    process: Mutex<Option<AgentProcess>>,
    /// The session mode the agent must stay in (the one that asks), if it
    /// has modes.
    keep_mode: Mutex<Option<SessionModeId>>,
}

impl LiveAgent {
    fn session_id(&self) -> SessionId {
        self.session_id.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// Kills the agent without reporting it.
    fn stop(&self) {
        let process = self.process.lock().ok().and_then(|mut p| p.take());
        drop(process);
    }

    /// Kills the agent; its exit is then reported like any other.
    fn kill_reporting_exit(&self) {
        if let Ok(process) = self.process.lock() {
            if let Some(process) = process.as_ref() {
                process.kill_reporting_exit();
            }
        }
    }

    fn cancel(&self) {
        if let Err(error) = self.cx.send_notification(CancelNotification::new(self.session_id())) {
            tracing::debug!(%error, "could not send session/cancel");
        }
    }

    fn prompt(&self, text: &str) -> PromptFuture {
        let request = PromptRequest::new(self.session_id(), vec![ContentBlock::from(text)]);
        let response = self.cx.send_request(request).block_task();
        Box::pin(async move { response.await.map_err(|error| error.to_string()) })
    }

    /// Closes the session, which makes the agent kill whatever the stopped
    /// prompt left running, and marks it to be loaded before the next prompt.
    /// `None` when there is nothing to close (the agent cannot, or the session
    /// is already closed or being closed); else the close under way, which
    /// goes on if its handle is dropped.
    fn close_session(&self, shared: &Arc<Shared>) -> Option<tokio::task::JoinHandle<()>> {
        if !self.can_close {
            return None;
        }
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        // Taken now, so that a turn started as soon as this one ends waits
        // for the close instead of prompting the session about to close.
        let mut closed = self.closed.clone().try_lock_owned().ok()?;
        if *closed {
            return None;
        }
        let session_id = self.session_id();
        let sent = self.cx.send_request(CloseSessionRequest::new(session_id.clone())).block_task();
        let shared = shared.clone();
        Some(runtime.spawn(async move {
            match tokio::time::timeout(CLOSE_TIMEOUT, sent).await {
                Ok(Ok(_)) => *closed = true,
                Ok(Err(error)) => shared.log(
                    LogLevel::Warn,
                    format!("could not close session {session_id} ({error}); what it was running may go on"),
                ),
                Err(_) => {
                    shared.log(
                        LogLevel::Warn,
                        format!("session {session_id} did not close within {} s", CLOSE_TIMEOUT.as_secs()),
                    );
                    // It may close later: load it again rather than prompt
                    // a session that may be gone.
                    *closed = true;
                }
            }
        }))
    }

    /// Loads the session again if it was closed, without letting its replayed
    /// history through; falls back to a new session (with a warning) when the
    /// agent cannot load it. Announces `Bound` either way. `Err` is why the
    /// turn cannot go on.
    async fn reopen(&self, shared: &Shared) -> Result<(), String> {
        let mut closed = self.closed.lock().await;
        if !*closed {
            return Ok(());
        }
        let previous = self.session_id();
        let startup = shared.spec.startup_timeout();
        let load = LoadSessionRequest::new(previous.clone(), shared.cwd.clone());
        let replaying = Replaying::start(shared);
        let loaded = tokio::time::timeout(startup, self.cx.send_request(load).block_task()).await;
        drop(replaying);
        let (session_id, modes) = match loaded {
            Ok(Ok(loaded)) => (previous, loaded.modes),
            failed => {
                let why = match failed {
                    Ok(Err(error)) => error.to_string(),
                    _ => format!("no answer within {} s", startup.as_secs()),
                };
                shared.log(
                    LogLevel::Warn,
                    format!("could not load the agent's session {previous} again ({why}); starting a new one"),
                );
                let new = NewSessionRequest::new(shared.cwd.clone());
                match tokio::time::timeout(startup, self.cx.send_request(new).block_task()).await {
                    Ok(Ok(response)) => (response.session_id, response.modes),
                    Ok(Err(error)) => return Err(format!("could not start a new agent session: {error}")),
                    Err(_) => {
                        return Err(format!("the agent did not start a new session within {} s", startup.as_secs()))
                    }
                }
            }
        };
        *self.session_id.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = session_id.clone();
        *closed = false;
        shared.notice(DriverNotice::Bound(json!({ "session_id": session_id.to_string() })));
        // A reloaded session may come back in a mode of its own.
        let name = shared.enforcement.lock().unwrap_or_else(|p| p.into_inner()).as_ref().and_then(|e| e.agent.clone());
        let keep = shared.hold_to_asking(&self.cx, &session_id, name.as_deref(), modes.as_ref()).await;
        *self.keep_mode.lock().unwrap_or_else(|p| p.into_inner()) = keep;
        Ok(())
    }
}

type PromptFuture = Pin<Box<dyn Future<Output = Result<PromptResponse, String>> + Send>>;

/// Drops the session updates while a load replays the history, until it is
/// dropped (also when the load is abandoned half-way).
struct Replaying<'a>(&'a Shared);

impl<'a> Replaying<'a> {
    fn start(shared: &'a Shared) -> Replaying<'a> {
        shared.replaying.store(true, Ordering::SeqCst);
        Replaying(shared)
    }
}

impl Drop for Replaying<'_> {
    fn drop(&mut self) {
        self.0.replaying.store(false, Ordering::SeqCst);
    }
}

/// The agent's messages for a turn.
enum Inbound {
    Update(SessionNotification),
    Permission(RequestPermissionRequest, PermissionReply),
    /// A write or a terminal the agent asks the daemon for.
    Client(ClientCall),
}

/// How starting an agent went.
enum SetUp {
    Ready {
        session_id: SessionId,
        can_close: bool,
        keep_mode: Option<SessionModeId>,
    },
    /// It is this known agent, which needs settings it was not started
    /// with: start it again.
    Restart(KnownAgent),
}

/// Where a turn's events go. Ending the turn goes through here so that it
/// ends exactly once, whoever ends it (the turn, or the exit of the agent),
/// and nothing follows `Finished`.
impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn notice(&self, notice: DriverNotice) {
        let _ = self.notices.send(notice);
    }

    fn log(&self, level: LogLevel, message: impl Into<String>) {
        self.notice(DriverNotice::Log { level, message: message.into() });
    }

    fn last_heard(&self) -> Instant {
        *self.last_heard.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The agent for a new turn, started if need be; `Err` is the reason the
    /// turn fails (already reported when the agent died).
    async fn agent(self: &Arc<Self>, sink: &TurnSink) -> Result<Arc<LiveAgent>, Option<String>> {
        match &self.lock().agent {
            AgentState::Up(live) => return Ok(live.clone()),
            AgentState::Gone { reason, .. } => return Err(Some(reason.clone())),
            AgentState::NotStarted => {}
        }
        // Known by what it said last time, else by its file name: a known
        // agent starts with the settings that make it ask.
        let mut known = KnownAgent::recognise(self.spec.agent_name.as_deref(), self.spec.program_name());
        let startup = self.spec.startup_timeout();
        for attempt in 0..2 {
            let (args, warnings) = match known {
                Some(agent) => agent.enforce_args(&self.spec.args),
                None => (self.spec.args.clone(), Vec::new()),
            };
            if attempt == 0 {
                for warning in warnings {
                    self.log(LogLevel::Warn, warning);
                }
            }
            let weak: Weak<Shared> = Arc::downgrade(self);
            let listener: Weak<dyn AgentListener> = weak;
            let spawned = spawn_agent(&self.spec, &args, &self.cwd, self.jail.as_ref(), listener)
                .await
                .map_err(|e| Some(format!("starting the agent: {e}")))?;
            let set_up = tokio::time::timeout(startup, self.set_up(&spawned.cx, spawned.process.pid(), known)).await;
            let failure = match set_up {
                Ok(Ok(SetUp::Restart(agent))) if attempt == 0 => {
                    // It turned out to be an agent that needs the daemon's
                    // settings at start: start it again with them.
                    self.log(
                        LogLevel::Info,
                        format!(
                            "the agent says it is {}; starting it again with the daemon's approval settings",
                            agent.name()
                        ),
                    );
                    drop(spawned);
                    known = Some(agent);
                    continue;
                }
                Ok(Ok(SetUp::Restart(agent))) => format!("{} did not start with the daemon's settings", agent.name()),
                Ok(Ok(SetUp::Ready { session_id, can_close, keep_mode })) => {
                    let live = Arc::new(LiveAgent {
                        cx: spawned.cx,
                        session_id: Mutex::new(session_id),
                        can_close,
                        closed: Arc::new(tokio::sync::Mutex::new(false)),
                        process: Mutex::new(Some(spawned.process)),
                        keep_mode: Mutex::new(keep_mode),
                    });
                    let mut state = self.lock();
                    match &state.agent {
                        AgentState::NotStarted => {
                            state.agent = AgentState::Up(live.clone());
                            return Ok(live);
                        }
                        // Died (reported by its exit) or the driver was dropped.
                        AgentState::Gone { reason, .. } => {
                            let reason = reason.clone();
                            drop(state);
                            live.stop();
                            return Err((!sink.is_finished()).then_some(reason));
                        }
                        AgentState::Up(_) => {
                            drop(state);
                            live.stop();
                            return Err(Some("another agent process was started for this driver".into()));
                        }
                    }
                }
                Ok(Err(error)) => format!("starting the agent: {error}"),
                Err(_) => format!("the agent did not start within {} s", startup.as_secs()),
            };
            // A request that failed because the agent died: let its exit speak.
            if self.exit_within(EXIT_GRACE).await.is_some() {
                return Err(None);
            }
            drop(spawned);
            let mut state = self.lock();
            if state.stopped || matches!(state.agent, AgentState::Gone { .. }) {
                return Err(None);
            }
            // The process was up (and maybe announced Running): the worker must
            // start over with a fresh driver, as after a crash.
            state.agent = AgentState::gone(&failure);
            drop(state);
            sink.finish(TurnOutcome::Failed(failure.clone()));
            self.notice(DriverNotice::Exited { reason: failure });
            return Err(None);
        }
        Err(Some("the agent could not be started with the daemon's settings".into()))
    }

    /// Who the agent is, as it said at `initialize`.
    fn identity(&self) -> Option<KnownAgent> {
        *self.agent_identity.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `initialize`, then the agent-side session, in the mode that asks;
    /// announces `Running`, `Bound` and how the agent is held to asking.
    /// `started_as` is who the agent was taken for when it was started:
    /// if it turns out to be an agent that needed settings at start, it must
    /// be started again.
    async fn set_up(
        &self,
        cx: &ConnectionTo<agent_client_protocol::Agent>,
        pid: u32,
        started_as: Option<KnownAgent>,
    ) -> Result<SetUp, agent_client_protocol::Error> {
        // The daemon does file and terminal work for agents that ask it to:
        // then it is the one carrying it out, under its own approvals.
        let capabilities = ClientCapabilities::new()
            .fs(FileSystemCapabilities::new().read_text_file(true).write_text_file(true))
            .terminal(true);
        let initialize = InitializeRequest::new(ProtocolVersion::V1)
            .client_capabilities(capabilities)
            .client_info(Implementation::new("bosun", env!("CARGO_PKG_VERSION")).title("Bosun".to_string()));
        let init = cx.send_request(initialize).block_task().await?;
        let agent_name = init.agent_info.as_ref().map(|info| info.name.clone());
        let known = KnownAgent::recognise(agent_name.as_deref(), self.spec.program_name());
        if known == Some(KnownAgent::CodexAcp) && started_as != Some(KnownAgent::CodexAcp) {
            return Ok(SetUp::Restart(KnownAgent::CodexAcp));
        }
        *self.agent_identity.lock().unwrap_or_else(|p| p.into_inner()) = known;
        self.images.store(init.agent_capabilities.prompt_capabilities.image, Ordering::Relaxed);
        self.notice(DriverNotice::Running {
            pid: Some(pid),
            agent: agent_name.clone(),
            version: init.agent_info.as_ref().map(|info| info.version.clone()),
        });

        let previous = self.binding.as_ref().and_then(|b| b.get("session_id")).and_then(Value::as_str);
        let mut opened = None;
        if let Some(previous) = previous {
            if init.agent_capabilities.load_session {
                // The agent replays the history as session/update during the
                // load; no turn is routed yet, so none of it is emitted.
                let load = LoadSessionRequest::new(previous.to_string(), self.cwd.clone());
                match cx.send_request(load).block_task().await {
                    Ok(loaded) => opened = Some((SessionId::new(previous), loaded.modes)),
                    Err(error) => self.log(
                        LogLevel::Warn,
                        format!("could not load the agent's session {previous} ({error}); starting a new one"),
                    ),
                }
            } else {
                self.log(
                    LogLevel::Warn,
                    format!(
                        "the agent cannot load sessions, so session {previous} is not continued; starting a new one"
                    ),
                );
            }
        }
        let (session_id, modes) = match opened {
            Some(opened) => opened,
            None => {
                let created = cx.send_request(NewSessionRequest::new(self.cwd.clone())).block_task().await?;
                (created.session_id, created.modes)
            }
        };
        self.notice(DriverNotice::Bound(json!({ "session_id": session_id.to_string() })));
        let keep_mode = self.hold_to_asking(cx, &session_id, agent_name.as_deref(), modes.as_ref()).await;
        let can_close =
            init.agent_capabilities.load_session && init.agent_capabilities.session_capabilities.close.is_some();
        Ok(SetUp::Ready { session_id, can_close, keep_mode })
    }

    /// Puts a new or loaded session in the mode that asks before acting,
    /// and records how the agent is held to asking. The mode to keep it in.
    async fn hold_to_asking(
        &self,
        cx: &ConnectionTo<agent_client_protocol::Agent>,
        session_id: &SessionId,
        agent_name: Option<&str>,
        modes: Option<&SessionModeState>,
    ) -> Option<SessionModeId> {
        let ModePlan { switch_to, mut keep, mut report } = agents::plan_modes(self.identity(), agent_name, modes);
        if let Some(mode) = switch_to {
            let from = modes.map(|m| m.current_mode_id.to_string()).unwrap_or_default();
            match cx.send_request(SetSessionModeRequest::new(session_id.clone(), mode.clone())).block_task().await {
                Ok(_) => self.log(
                    LogLevel::Warn,
                    format!("the agent started in mode \"{from}\", which does not ask before acting; switched it to \"{mode}\""),
                ),
                Err(error) => {
                    keep = None;
                    report.enforcement = Enforcement::Unverified;
                    report.detail = format!("the agent is in mode \"{from}\" and refused to switch to \"{mode}\": {error}");
                }
            }
        }
        self.set_enforcement(report);
        keep
    }

    fn set_enforcement(&self, report: EnforcementReport) {
        *self.enforcement.lock().unwrap_or_else(|p| p.into_inner()) = Some(report.clone());
        self.notice(DriverNotice::Enforcement(report));
    }

    /// Why a turn under `policy` must not be prompted: plan-only on an agent
    /// found not to ask, outside a jail without network.
    fn refusal(&self, policy: Policy) -> Option<String> {
        let report = self.enforcement.lock().unwrap_or_else(|p| p.into_inner()).clone()?;
        let refused = report.enforcement == Enforcement::Unverified && policy == Policy::PlanOnly && !self.offline_jail;
        refused.then(|| bosun_driver::unenforceable(&report.detail))
    }

    /// The agent switched its own mode: put it back if it left the one that
    /// asks. Called from the connection's task, so the work goes on a task.
    fn mode_changed(self: &Arc<Self>, now: SessionModeId) {
        let live = match &self.lock().agent {
            AgentState::Up(live) => live.clone(),
            _ => return,
        };
        let Some(keep) = live.keep_mode.lock().unwrap_or_else(|p| p.into_inner()).clone() else { return };
        if now == keep {
            return;
        }
        let shared = self.clone();
        tokio::spawn(async move {
            let request = SetSessionModeRequest::new(live.session_id(), keep.clone());
            match live.cx.send_request(request).block_task().await {
                Ok(_) => {
                    shared.log(
                        LogLevel::Warn,
                        format!("the agent switched itself to mode \"{now}\", which does not ask; put it back in \"{keep}\""),
                    );
                    shared.notice(DriverNotice::ModeRestored { from: now.to_string(), to: keep.to_string() });
                }
                Err(error) => {
                    let detail =
                        format!("the agent left mode \"{keep}\" for \"{now}\" and refused to go back: {error}");
                    let mut report = shared.enforcement.lock().unwrap_or_else(|p| p.into_inner()).clone().unwrap_or(
                        EnforcementReport { enforcement: Enforcement::Unverified, detail: String::new(), agent: None },
                    );
                    report.enforcement = Enforcement::Unverified;
                    report.detail = detail.clone();
                    shared.set_enforcement(report);
                    // A plan-only turn cannot go on with an agent that no
                    // longer asks.
                    let turn = shared.lock().turn.as_ref().map(|t| (t.sink.clone(), t.policy));
                    if let Some((sink, Policy::PlanOnly)) = turn {
                        live.cancel();
                        sink.finish(TurnOutcome::Failed(bosun_driver::unenforceable(&detail)));
                    }
                }
            }
        });
    }

    /// Serves a request for a capability we advertise. Reads and terminal
    /// upkeep are answered here; writes and new terminals are acts, which go
    /// to the turn under way for an approval.
    fn serve(self: &Arc<Self>, call: ClientCall) {
        let shared = self.clone();
        match call {
            ClientCall::Read(request, responder) => {
                tokio::spawn(async move {
                    let answer = match client::inside_cwd(&shared.cwd, &request.path) {
                        Ok(rel) => client::read_text(&shared.cwd, &rel, request.line, request.limit)
                            .await
                            .map(ReadTextFileResponse::new),
                        Err(e) => Err(e),
                    };
                    answer_with(responder, answer);
                });
            }
            ClientCall::TerminalOutput(request, responder) => {
                answer_with(responder, self.terminals.output(&request.terminal_id));
            }
            ClientCall::WaitForExit(request, responder) => {
                tokio::spawn(async move {
                    let answer =
                        shared.terminals.wait(&request.terminal_id).await.map(WaitForTerminalExitResponse::new);
                    answer_with(responder, answer);
                });
            }
            ClientCall::Kill(request, responder) => {
                answer_with(responder, self.terminals.kill(&request.terminal_id).map(|()| KillTerminalResponse::new()));
            }
            ClientCall::Release(request, responder) => {
                answer_with(
                    responder,
                    self.terminals.release(&request.terminal_id).map(|()| ReleaseTerminalResponse::new()),
                );
            }
            act @ (ClientCall::Write(..) | ClientCall::CreateTerminal(..)) => {
                if let Some(Inbound::Client(call)) = self.route(Inbound::Client(act)) {
                    let why = "no turn is running: the daemon acts for the agent only within a turn";
                    call.refuse(client::refused(why));
                }
            }
        }
    }

    /// Waits up to `grace` for the agent's exit to be reported.
    async fn exit_within(&self, grace: Duration) -> Option<String> {
        let mut exit = self.exit_tx.subscribe();
        let reason = tokio::time::timeout(grace, exit.wait_for(Option::is_some)).await.ok()?.ok()?.clone();
        reason
    }

    /// Gives up on an unresponsive agent: kills it, and its exit is reported
    /// with `why`.
    fn kill_agent(&self, why: String) {
        let live = {
            let mut state = self.lock();
            state.kill_reason.get_or_insert(why);
            match &state.agent {
                AgentState::Up(live) => Some(live.clone()),
                _ => None,
            }
        };
        if let Some(live) = live {
            live.kill_reporting_exit();
        }
    }

    /// Hands a message to the turn under way; gives it back when there is none.
    fn route(&self, message: Inbound) -> Option<Inbound> {
        if matches!(message, Inbound::Update(_)) && self.replaying.load(Ordering::SeqCst) {
            return Some(message);
        }
        let state = self.lock();
        match state.turn.as_ref().and_then(|turn| turn.inbound.as_ref()) {
            Some(inbound) => inbound.send(message).err().map(|e| e.0),
            None => Some(message),
        }
    }
}

impl AgentListener for Shared {
    fn heard(&self) {
        *self.last_heard.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Instant::now();
    }

    fn update(&self, notification: SessionNotification) {
        if let SessionUpdate::CurrentModeUpdate(update) = &notification.update {
            if let Some(this) = self.this.upgrade() {
                this.mode_changed(update.current_mode_id.clone());
            }
        }
        if let Some(Inbound::Update(notification)) = self.route(Inbound::Update(notification)) {
            tracing::debug!(update = ?notification.update, "session/update outside a turn, dropped");
        }
    }

    fn permission(&self, request: RequestPermissionRequest, reply: PermissionReply) {
        if let Some(Inbound::Permission(request, reply)) = self.route(Inbound::Permission(request, reply)) {
            self.log(
                LogLevel::Warn,
                format!(
                    "the agent asked for permission outside a turn ({}); answered cancelled",
                    request.tool_call.fields.title.as_deref().unwrap_or("untitled")
                ),
            );
            reply.answer(RequestPermissionOutcome::Cancelled);
        }
    }

    fn client_call(&self, call: ClientCall) {
        if let Some(this) = self.this.upgrade() {
            this.serve(call);
        }
    }

    fn stderr_line(&self, line: String) {
        let level = if mapping::stderr_is_warning(&line) { LogLevel::Warn } else { LogLevel::Info };
        self.log(level, line);
    }

    fn malformed_line(&self, quote: String, problem: String) {
        self.log(LogLevel::Warn, format!("the agent wrote a line that is {problem}, skipped: {quote}"));
    }

    fn exited(&self, status: String) {
        let (sink, reason) = {
            let mut state = self.lock();
            if state.stopped || matches!(state.agent, AgentState::Gone { .. }) {
                return;
            }
            let reason = match state.kill_reason.take() {
                Some(why) => format!("{why}; {status}"),
                None => status,
            };
            let dead = match std::mem::replace(&mut state.agent, AgentState::NotStarted) {
                AgentState::Up(live) => Some(live),
                _ => None,
            };
            state.agent = AgentState::Gone { reason: format!("the agent process exited: {reason}"), dead };
            (state.turn.as_ref().map(|turn| turn.sink.clone()), reason)
        };
        // The turn ends before the exit is announced, as the contract asks.
        if let Some(sink) = sink {
            sink.finish(TurnOutcome::Failed(format!("the agent process exited: {reason}")));
        }
        self.notice(DriverNotice::Exited { reason: reason.clone() });
        self.exit_tx.send_replace(Some(reason));
    }

    fn connection_closed(&self, error: Option<String>) {
        {
            let state = self.lock();
            if state.stopped || !matches!(state.agent, AgentState::Up(_)) {
                return;
            }
        }
        let why = match error {
            Some(error) => format!("the ACP connection failed: {error}"),
            None => "the agent closed its output".to_string(),
        };
        self.log(LogLevel::Warn, why.clone());
        // An agent we can no longer talk to is of no use: make it exit, which
        // reports it like a crash.
        self.kill_agent(why);
    }
}

/// Why the turn asked the agent to stop its prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stopping {
    Interrupt,
    Steer,
}

struct PendingPermission {
    reply: PermissionReply,
    options: Vec<PermissionOption>,
}

/// One turn's task.
struct Turn {
    shared: Arc<Shared>,
    id: u64,
    /// The daemon's id of the turn, which approvals are filed under.
    turn_id: String,
    policy: Policy,
    /// Numbers the approvals the daemon asks for its own acts (writes and
    /// terminals the agent wants).
    client_requests: u64,
    /// Those acts waiting on the daemon's decision, by our request id.
    pending_client: HashMap<String, Act>,
    sink: Arc<TurnSink>,
    controls: mpsc::UnboundedReceiver<TurnControl>,
    controls_open: bool,
    text: String,
    agent: Option<Arc<LiveAgent>>,
    /// Permission requests waiting on the daemon, by our request id.
    pending: HashMap<String, PendingPermission>,
    /// A `session/prompt` is under way in the agent.
    prompting: bool,
    /// A permission request of this turn was declined.
    declined: bool,
    /// Sum of the usage the prompt responses of this turn reported.
    exact_usage: Option<Usage>,
    /// The context-window size the agent last reported (`usage_update`).
    exact_usage_context: Option<u64>,
    /// The turn is being interrupted: a steer's prompt not sent yet is not.
    interrupted: Arc<AtomicBool>,
    /// The last thing that counts as the turn being alive besides hearing from
    /// the agent: its start, or the last decision taken.
    activity: Instant,
}

impl Turn {
    /// Runs the turn to its end; whoever sees it first (this task, the
    /// agent's exit, a mode change it must not make) finishes it, so this
    /// gives no outcome of its own.
    async fn run(self) -> Option<TurnOutcome> {
        self.run_to_end().await;
        None
    }

    async fn run_to_end(mut self) {
        let mut exit = self.shared.exit_tx.subscribe();
        let agent = match self.shared.agent(&self.sink).await {
            Ok(agent) => agent,
            Err(reason) => {
                if let Some(reason) = reason {
                    self.sink.finish(TurnOutcome::Failed(reason));
                }
                return;
            }
        };
        self.agent = Some(agent.clone());
        let identity = self.shared.identity();
        self.sink.with(|ledger| ledger.agent_is(identity));
        if let Some(reason) = self.shared.refusal(self.policy) {
            self.sink.finish(TurnOutcome::Failed(reason));
            return;
        }
        // Before the turn takes the agent's messages: what the reload replays
        // is history.
        if let Err(reason) = agent.reopen(&self.shared).await {
            if self.shared.exit_within(EXIT_GRACE).await.is_none() {
                self.sink.finish(TurnOutcome::Failed(reason));
            }
            return;
        }
        let (inbound_tx, mut inbound) = mpsc::unbounded_channel();
        {
            let mut state = self.shared.lock();
            match state.turn.as_mut() {
                Some(turn) if turn.id == self.id => turn.inbound = Some(inbound_tx),
                _ => return,
            }
        }
        if !self.take_early_controls() {
            return;
        }
        self.activity = Instant::now();
        let mut prompt = agent.prompt(&self.text);
        self.prompting = true;
        let mut stopping: Option<(Stopping, Instant)> = None;
        let mut steers: Vec<String> = Vec::new();
        let silence = self.shared.spec.silence_timeout();

        loop {
            let quiet_since = self.shared.last_heard().max(self.activity);
            let stop_deadline = stopping.map(|(_, deadline)| deadline);
            tokio::select! {
                biased;
                _ = exit.changed() => return,
                Some(message) = inbound.recv() => self.on_inbound(message, stopping.is_some()),
                control = self.controls.recv(), if self.controls_open => match control {
                    Some(TurnControl::Decision { request_id, decision }) => {
                        self.decide(&request_id, decision);
                        if decision == Decision::Cancel {
                            stopping = Some(self.stop(&agent, Stopping::Interrupt));
                        }
                    }
                    Some(TurnControl::Steer(text)) => match stopping {
                        Some((Stopping::Interrupt, _)) => {
                            self.sink.log(LogLevel::Warn, "steer ignored: the turn is being interrupted")
                        }
                        Some((Stopping::Steer, _)) => steers.push(text),
                        None => {
                            steers.push(text);
                            stopping = Some(self.stop(&agent, Stopping::Steer));
                        }
                    },
                    Some(TurnControl::Interrupt) => {
                        if !matches!(stopping, Some((Stopping::Interrupt, _))) {
                            stopping = Some(self.stop(&agent, Stopping::Interrupt));
                        }
                    }
                    None => {
                        // The handle is gone; the task is about to be aborted.
                        self.controls_open = false;
                        stopping = Some(self.stop(&agent, Stopping::Interrupt));
                    }
                },
                result = &mut prompt => {
                    self.prompting = false;
                    // Updates sent before the response are already queued: the
                    // crate hands them over before it routes the response.
                    while let Ok(message) = inbound.try_recv() {
                        self.on_inbound(message, stopping.is_some());
                    }
                    let response = match result {
                        Ok(response) => response,
                        Err(error) => {
                            if self.shared.exit_within(EXIT_GRACE).await.is_none() {
                                match stopping {
                                    Some((Stopping::Interrupt, _)) => self.finish_interrupted(&agent).await,
                                    _ => {
                                        let why = format!("the agent failed the prompt: {error}");
                                        self.sink.finish(TurnOutcome::Failed(why));
                                    }
                                }
                            }
                            return;
                        }
                    };
                    self.add_exact_usage(&response);
                    match stopping {
                        Some((Stopping::Interrupt, _)) => {
                            self.finish_interrupted(&agent).await;
                            return;
                        }
                        Some((Stopping::Steer, _)) => {
                            for text in &steers {
                                self.notice(format!("steer: {text}"));
                            }
                            prompt = self.reprompt(&agent, steers.join("\n\n"));
                            self.prompting = true;
                            steers.clear();
                            stopping = None;
                            self.activity = Instant::now();
                        }
                        None => {
                            let outcome = match response.stop_reason {
                                // Nobody asked to cancel: the agent ended the turn
                                // itself, as codex-acp does when its only reject
                                // option ("abort") is chosen. The turn did what
                                // the daemon decided, so it completed.
                                StopReason::Cancelled if self.declined => {
                                    self.notice("the agent ended the turn after a declined action".into());
                                    TurnOutcome::Completed
                                }
                                reason => mapping::stop_outcome(reason),
                            };
                            self.sink.finish(outcome);
                            return;
                        }
                    }
                }
                _ = sleep_until(stop_deadline), if stopping.is_some() => {
                    let secs = STOP_GRACE.as_secs();
                    match stopping.map(|(why, _)| why) {
                        Some(Stopping::Steer) => {
                            let why = format!("the agent did not stop within {secs} s to take the steer");
                            self.sink.finish(TurnOutcome::Failed(why));
                        }
                        _ => {
                            let why = format!("the agent did not confirm the interrupt within {secs} s");
                            self.sink.log(LogLevel::Warn, why);
                            self.sink.finish(TurnOutcome::Interrupted);
                        }
                    }
                    // Closing the session stops the prompt the agent goes on
                    // with (it goes on behind the turn's end).
                    drop(agent.close_session(&self.shared));
                    return;
                }
                _ = tokio::time::sleep_until(quiet_since + silence), if self.pending.is_empty() => {
                    if self.shared.last_heard().max(self.activity) + silence <= Instant::now() {
                        let why = format!("the agent said nothing for {} s", silence.as_secs());
                        self.sink.finish(TurnOutcome::Failed(why.clone()));
                        self.shared.kill_agent(format!("{why} and was killed"));
                        return;
                    }
                }
            }
        }
    }

    fn notice(&self, text: String) {
        self.sink.emit(AgentEvent::Chunk { kind: ChunkKind::Notice, text, checkpoint: None });
    }

    /// Controls sent while the agent was starting: an interrupt ends the turn
    /// before it is prompted, a steer joins the prompt. False if the turn ended.
    fn take_early_controls(&mut self) -> bool {
        while let Ok(control) = self.controls.try_recv() {
            match control {
                TurnControl::Interrupt => {
                    self.sink.finish(TurnOutcome::Interrupted);
                    return false;
                }
                TurnControl::Steer(text) => {
                    self.notice(format!("steer: {text}"));
                    self.text = format!("{}\n\n{text}", self.text);
                }
                TurnControl::Decision { request_id, .. } => self
                    .sink
                    .log(LogLevel::Warn, format!("a decision for {request_id}, which is not waiting, was ignored")),
            }
        }
        true
    }

    /// Sends `session/cancel` and answers the open permission requests
    /// `cancelled`, as ACP asks of a client that cancels.
    fn stop(&mut self, agent: &LiveAgent, why: Stopping) -> (Stopping, Instant) {
        if why == Stopping::Interrupt {
            self.interrupted.store(true, Ordering::SeqCst);
        }
        agent.cancel();
        for (_, pending) in self.pending.drain() {
            pending.reply.answer(RequestPermissionOutcome::Cancelled);
        }
        for (_, pending) in self.pending_client.drain() {
            pending.refuse("the turn was stopped before the daemon decided");
        }
        (why, Instant::now() + STOP_GRACE)
    }

    /// Ends the turn interrupted once its prompt has stopped, after closing
    /// the session so that nothing the prompt started goes on (a close slower
    /// than [`CLOSE_WAIT`] finishes behind the turn's end).
    async fn finish_interrupted(&mut self, agent: &LiveAgent) {
        match agent.close_session(&self.shared) {
            Some(closing) => {
                let _ = tokio::time::timeout(CLOSE_WAIT, closing).await;
            }
            None if !agent.can_close => self.sink.log(
                LogLevel::Info,
                "the agent cannot close its session: a command the interrupted prompt started may still be running",
            ),
            None => {}
        }
        self.sink.finish(TurnOutcome::Interrupted);
    }

    /// The prompt that takes the steer, after closing the session so that
    /// nothing the stopped prompt started goes on, and loading it again. Not
    /// sent if the turn is interrupted in the meantime.
    fn reprompt(&self, agent: &Arc<LiveAgent>, text: String) -> PromptFuture {
        let closing = agent.close_session(&self.shared);
        let (agent, shared, interrupted) = (agent.clone(), self.shared.clone(), self.interrupted.clone());
        Box::pin(async move {
            if let Some(closing) = closing {
                let _ = closing.await;
            }
            agent.reopen(&shared).await?;
            if interrupted.load(Ordering::SeqCst) {
                return Ok(PromptResponse::new(StopReason::Cancelled));
            }
            agent.prompt(&text).await
        })
    }

    fn on_inbound(&mut self, message: Inbound, stopping: bool) {
        match message {
            Inbound::Update(notification) => self.on_update(notification.update),
            Inbound::Permission(_, reply) if stopping => reply.answer(RequestPermissionOutcome::Cancelled),
            Inbound::Client(call) if stopping => call.refuse(client::refused("the turn is being stopped")),
            Inbound::Client(call) => self.on_client_act(call),
            Inbound::Permission(request, reply) => {
                let request_id = format!("perm-{}", reply.id());
                self.sink.with(|ledger| ledger.asked(&request.tool_call, &request_id));
                let action = mapping::permission_action(&request.tool_call, &self.shared.cwd);
                self.sink.emit(AgentEvent::ApprovalRequest {
                    request_id: request_id.clone(),
                    action,
                    checkpoint: None,
                });
                let replaced = self.pending.insert(request_id, PendingPermission { reply, options: request.options });
                if let Some(old) = replaced {
                    old.reply.answer(RequestPermissionOutcome::Cancelled);
                }
            }
        }
    }

    fn on_update(&mut self, update: SessionUpdate) {
        let event = match update {
            SessionUpdate::AgentMessageChunk(chunk) => mapping::chunk(ChunkKind::Text, &chunk.content),
            SessionUpdate::AgentThoughtChunk(chunk) => mapping::chunk(ChunkKind::Thought, &chunk.content),
            SessionUpdate::ToolCall(call) => {
                self.sink.emit(AgentEvent::ToolCall(mapping::tool_call(&call)));
                let done = self.sink.with(|ledger| ledger.tool_call(&call));
                for event in done {
                    self.sink.emit(event);
                }
                None
            }
            SessionUpdate::ToolCallUpdate(update) => {
                self.sink.emit(AgentEvent::ToolUpdate(mapping::tool_update(&update)));
                let done = self.sink.with(|ledger| ledger.tool_update(&update));
                for event in done {
                    self.sink.emit(event);
                }
                None
            }
            SessionUpdate::Plan(plan) => {
                self.sink.emit(AgentEvent::Plan(mapping::plan_entries(&plan)));
                None
            }
            SessionUpdate::UsageUpdate(usage) => {
                // The size of the context window, not tokens spent by the
                // turn: shown as such, never summed into the turn's counts.
                let mut report = self.exact_usage.unwrap_or_default();
                report.context_tokens = Some(usage.used);
                self.exact_usage_context = Some(usage.used);
                self.sink.emit(AgentEvent::Usage(report));
                None
            }
            other => {
                tracing::debug!(update = ?other, "session/update not mapped");
                None
            }
        };
        if let Some((kind, text)) = event {
            self.sink.emit(AgentEvent::Chunk { kind, text, checkpoint: None });
        }
    }

    fn add_exact_usage(&mut self, response: &PromptResponse) {
        if let Some(usage) = &response.usage {
            let total = self.exact_usage.get_or_insert_with(Usage::default);
            total.add(Usage {
                input_tokens: usage.input_tokens,
                output_tokens: usage.output_tokens,
                context_tokens: None,
            });
            let mut total = *total;
            total.context_tokens = self.exact_usage_context;
            self.sink.emit(AgentEvent::Usage(total));
        }
    }

    fn decide(&mut self, request_id: &str, decision: Decision) {
        self.activity = Instant::now();
        self.sink.with(|ledger| ledger.decided(request_id, decision));
        if let Some(act) = self.pending_client.remove(request_id) {
            if decision.allows() {
                self.carry_out(act, Asked::request(&self.turn_id, request_id));
            } else {
                act.refuse("the daemon declined it");
            }
            return;
        }
        self.declined |= decision == Decision::Decline;
        let Some(pending) = self.pending.remove(request_id) else {
            self.sink.log(LogLevel::Warn, format!("a decision for {request_id}, which is not waiting, was ignored"));
            return;
        };
        match mapping::choose_option(decision, &pending.options) {
            Some(option) => {
                pending.reply.answer(RequestPermissionOutcome::Selected(SelectedPermissionOutcome::new(option)))
            }
            None => {
                if decision != Decision::Cancel {
                    self.sink.log(
                        LogLevel::Warn,
                        format!("the agent offered no option for {decision:?} on {request_id}; answered cancelled"),
                    );
                }
                pending.reply.answer(RequestPermissionOutcome::Cancelled);
            }
        }
    }
}

impl Turn {
    /// The agent asks the daemon to write a file or run a command: refused
    /// outright if it would leave the cwd; carried out at once if an
    /// approval already covers it; else the daemon asks for one.
    fn on_client_act(&mut self, call: ClientCall) {
        let Some(act) = Act::of(call, &self.shared.cwd) else { return };
        let action = act.action(&self.shared.cwd);
        let covered = match &action {
            Action::FileChange { path, .. } => self.sink.with(|ledger| ledger.covering_write(path)),
            Action::Command { command, .. } => self.sink.with(|ledger| ledger.covering_command(command)),
            Action::Other { .. } => None,
        };
        if let Some(asked) = covered {
            self.carry_out(act, asked);
            return;
        }
        self.client_requests += 1;
        let request_id = format!("client-{}", self.client_requests);
        self.sink.emit(AgentEvent::ApprovalRequest { request_id: request_id.clone(), action, checkpoint: None });
        self.pending_client.insert(request_id, act);
    }

    /// Does what an approval (`asked`) allowed: the write, or the command.
    fn carry_out(&mut self, act: Act, asked: Asked) {
        self.activity = Instant::now();
        match act {
            Act::Write { request, rel, responder } => {
                let (cwd, sink) = (self.shared.cwd.clone(), self.sink.clone());
                tokio::spawn(async move {
                    let path = cwd.join(&rel).to_string_lossy().into_owned();
                    match client::write_text(&cwd, &rel, &request.content).await {
                        Ok(bytes) => {
                            sink.with(|ledger| ledger.wrote(&path));
                            let summary = format!("written by the daemon for the agent ({bytes} bytes)");
                            sink.emit(AgentEvent::FileChanged { path, summary, asked });
                            answer_with(responder, Ok(WriteTextFileResponse::new()));
                        }
                        Err(error) => answer_with(responder, Err(error)),
                    }
                });
            }
            Act::Terminal { request, command, cwd, responder } => {
                let start = TerminalStart { request: &request, cwd, jail: self.shared.jail.as_ref(), command, asked };
                match self.shared.terminals.start(start, self.sink.clone()) {
                    Ok((id, terminal)) => {
                        self.sink.with(|ledger| ledger.terminal(id.0.as_ref(), terminal));
                        answer_with(responder, Ok(CreateTerminalResponse::new(id)));
                    }
                    Err(error) => answer_with(responder, Err(error)),
                }
            }
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        // Open permission requests are answered `cancelled` as they drop.
        if self.sink.abandon() && self.prompting {
            // The handle was dropped mid-prompt: stop the agent's work too.
            if let Some(agent) = &self.agent {
                agent.cancel();
                drop(agent.close_session(&self.shared));
            }
        }
        let mut state = self.shared.lock();
        if state.turn.as_ref().is_some_and(|turn| turn.id == self.id) {
            state.turn = None;
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
