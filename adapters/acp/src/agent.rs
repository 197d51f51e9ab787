//! The agent process and its ACP session, as the driver's tasks share them:
//! starting and initializing it, creating or loading its session, putting
//! it in the mode that asks and keeping it there, serving what it asks of
//! the client (permissions, files, terminals), and hearing it exit.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use agent_client_protocol::schema::ProtocolVersion;
use agent_client_protocol::v1::schema::{
    CancelNotification, ClientCapabilities, CloseSessionRequest, ContentBlock, FileSystemCapabilities, Implementation,
    InitializeRequest, KillTerminalResponse, LoadSessionRequest, NewSessionRequest, PromptRequest, PromptResponse,
    ReadTextFileResponse, ReleaseTerminalResponse, RequestPermissionOutcome, RequestPermissionRequest, SessionId,
    SessionModeId, SessionModeState, SessionNotification, SessionUpdate, SetSessionModeRequest,
    WaitForTerminalExitResponse,
};
use agent_client_protocol::v1::ConnectionTo;
use bosun_proto::{Enforcement, Policy};
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::client::{self, Terminals};
use crate::connection::{answer_with, spawn_agent, AgentListener, AgentProcess, ClientCall, PermissionReply};
use crate::known_agents::{KnownAgent, ModePlan};
use crate::ledger::Grants;
use crate::mapping;
use crate::TurnSink;
use bosun_driver::{DriverNotice, EnforcementReport, LogLevel, ProviderSpec, TurnOutcome};
use bosun_isolation::Jail;

/// After a failed request, how long to wait for the process exit that
/// probably caused it, so the turn fails with the exit rather than with a
/// closed-connection error.
pub(crate) const EXIT_GRACE: Duration = Duration::from_millis(750);
/// How long a `session/close` may take before the session is reloaded
/// regardless.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the driver, its turn tasks and the connection's tasks share.
pub(crate) struct Shared {
    /// Itself, for work a connection's callback hands to a task.
    pub(crate) this: Weak<Shared>,
    pub(crate) spec: ProviderSpec,
    pub(crate) cwd: PathBuf,
    pub(crate) binding: Option<Value>,
    pub(crate) notices: mpsc::UnboundedSender<DriverNotice>,
    pub(crate) state: Mutex<State>,
    /// When the agent last wrote a line on stdout.
    pub(crate) last_heard: Mutex<Instant>,
    pub(crate) images: AtomicBool,
    /// A session is being loaded: the history it replays is not the turn's.
    pub(crate) replaying: AtomicBool,
    /// Set once, to the reason, when the agent process exits unasked.
    pub(crate) exit_tx: watch::Sender<Option<String>>,
    /// Jailed with no network: an agent that does not ask is bounded anyway.
    pub(crate) offline_jail: bool,
    /// Where the agent and the commands it has the daemon run go: in this
    /// jail, or on the host.
    pub(crate) jail: Option<Jail>,
    /// How the agent is held to asking, once it has started.
    pub(crate) enforcement: Mutex<Option<EnforcementReport>>,
    /// Who the agent said it is at `initialize`.
    pub(crate) agent_identity: Mutex<Option<KnownAgent>>,
    /// Commands the agent runs through us.
    pub(crate) terminals: Terminals,
    /// What was accepted for the rest of the session.
    pub(crate) grants: Grants,
}

pub(crate) struct State {
    pub(crate) agent: AgentState,
    pub(crate) turn: Option<ActiveTurn>,
    /// Why we are killing the agent ourselves, for the exit notice.
    pub(crate) kill_reason: Option<String>,
    /// The driver was dropped: nothing is reported any more.
    pub(crate) stopped: bool,
}

pub(crate) struct ActiveTurn {
    pub(crate) id: u64,
    pub(crate) sink: Arc<TurnSink>,
    pub(crate) policy: Policy,
    /// Where the agent's messages for this turn go, once its prompt is sent.
    pub(crate) inbound: Option<mpsc::UnboundedSender<Inbound>>,
}

pub(crate) enum AgentState {
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
    pub(crate) fn gone(reason: &str) -> AgentState {
        AgentState::Gone { reason: reason.to_string(), dead: None }
    }
}

/// An initialized agent with its session.
pub(crate) struct LiveAgent {
    cx: ConnectionTo<agent_client_protocol::Agent>,
    /// Changes only when a closed session could not be loaded again.
    session_id: Mutex<SessionId>,
    /// The agent advertises both `session/close` and `session/load`, so a
    /// session can be closed to stop its work and then taken up again.
    pub(crate) can_close: bool,
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
    pub(crate) fn stop(&self) {
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

    pub(crate) fn cancel(&self) {
        if let Err(error) = self.cx.send_notification(CancelNotification::new(self.session_id())) {
            tracing::debug!(%error, "could not send session/cancel");
        }
    }

    pub(crate) fn prompt(&self, text: &str) -> PromptFuture {
        let request = PromptRequest::new(self.session_id(), vec![ContentBlock::from(text)]);
        let response = self.cx.send_request(request).block_task();
        Box::pin(async move { response.await.map_err(|error| error.to_string()) })
    }

    /// Closes the session, which makes the agent kill whatever the stopped
    /// prompt left running, and marks it to be loaded before the next prompt.
    /// `None` when there is nothing to close (the agent cannot, or the session
    /// is already closed or being closed); else the close under way, which
    /// goes on if its handle is dropped.
    pub(crate) fn close_session(&self, shared: &Arc<Shared>) -> Option<tokio::task::JoinHandle<()>> {
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
    pub(crate) async fn reopen(&self, shared: &Shared) -> Result<(), String> {
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

pub(crate) type PromptFuture = Pin<Box<dyn Future<Output = Result<PromptResponse, String>> + Send>>;

/// Drops the session updates while a load replays the history, until it is
/// dropped (also when the load is abandoned half-way).
pub(crate) struct Replaying<'a>(&'a Shared);

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
pub(crate) enum Inbound {
    Update(SessionNotification),
    Permission(RequestPermissionRequest, PermissionReply),
    /// A write or a terminal the agent asks the daemon for.
    Client(ClientCall),
}

/// How starting an agent went.
pub(crate) enum SetUp {
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
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn notice(&self, notice: DriverNotice) {
        let _ = self.notices.send(notice);
    }

    fn log(&self, level: LogLevel, message: impl Into<String>) {
        self.notice(DriverNotice::Log { level, message: message.into() });
    }

    pub(crate) fn last_heard(&self) -> Instant {
        *self.last_heard.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The agent for a new turn, started if need be; `Err` is the reason the
    /// turn fails (already reported when the agent died).
    pub(crate) async fn agent(self: &Arc<Self>, sink: &TurnSink) -> Result<Arc<LiveAgent>, Option<String>> {
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
    pub(crate) fn identity(&self) -> Option<KnownAgent> {
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
        let ModePlan { switch_to, mut keep, mut report } =
            crate::known_agents::plan_modes(self.identity(), agent_name, modes);
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
    pub(crate) fn refusal(&self, policy: Policy) -> Option<String> {
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
    pub(crate) async fn exit_within(&self, grace: Duration) -> Option<String> {
        let mut exit = self.exit_tx.subscribe();
        let reason = tokio::time::timeout(grace, exit.wait_for(Option::is_some)).await.ok()?.ok()?.clone();
        reason
    }

    /// Gives up on an unresponsive agent: kills it, and its exit is reported
    /// with `why`.
    pub(crate) fn kill_agent(&self, why: String) {
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
