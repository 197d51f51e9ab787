//! Terminals (docs/TERMINALS.md): the terminals supervisor keeps the
//! capability map (the one writer of `TerminalRecord`s and consents) and
//! one binding actor per binding that is open (one_for_one: a binding whose
//! actor crashes is restarted alone, and finds its terminal again).

pub mod binding;
mod bridge;
mod live;
pub mod policy;
pub mod scrollback;

pub use live::{LiveTerminal, LiveTerminals, OutputChunk};

use crate::context::{new_id, Context};
use crate::error::{DaemonError, DaemonResult};
use crate::names;
use binding::{Acted, BindingActor, BindingArgs, BindingMsg, NewBinding, TerminalOp};
use bosun_isolation::Jail;
use bosun_proto::{
    events::{ApprovalRequested, ApprovalResolved},
    ApprovalStatus, BindingState, BindingView, CapabilityUpdate, DecidedBy, Decision, EventData, Policy, Sandbox,
    SpawnTerminalRequest, TerminalCapabilities, TerminalDenied, TerminalKind, TerminalSize, TerminalView, Topic,
};
use bosun_pty::{FlowGate, Pty, PtyCommand, PtySize, Watermarks};
use bosun_state::{
    Batch, BindingRecord, HeldTerminalAction, Owner, SessionRecord, TerminalApprovalRecord, TerminalRecord,
};
use bosun_supervision::{
    Backoff, ChildInfo, ChildSpec, Intensity, Restart, RestartChild, Shutdown, Strategy, Supervises, Supervision,
    SupervisorConfig,
};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Output waiting between a PTY's reader and its pump, in reads (each at
/// most 64 KiB, mostly about 4 KiB): a full queue holds the reader back.
const OUTPUT_QUEUE: usize = 64;
/// How far the most advanced client may fall behind before the PTY is no
/// longer read; above the most one commit carries, so flow control never
/// waits on the store alone.
const WATERMARKS: Watermarks = Watermarks { high: 4 * 1024 * 1024, low: 1024 * 1024 };

/// The topic a binding's events go on: its session's, or `system`.
pub fn topic_of(session_id: Option<&str>) -> Topic {
    match session_id {
        Some(id) => Topic::session(id),
        None => Topic::system(),
    }
}

pub struct TerminalsSupervisor;

pub struct TerminalsState {
    ctx: Context,
    sup: Supervision,
    /// Follows tmux's output for the cwd its shells report.
    tmux_cwd: Option<tokio::task::JoinHandle<()>>,
}

pub enum TerminalsMsg {
    /// Answered with the binding, or with the approval it waits for.
    Spawn(SpawnTerminalRequest, RpcReplyPort<DaemonResult<Spawned>>),
    /// An action on a binding: judged by policy, consent and the paste
    /// guard, then carried out by the binding's actor (or held for a person).
    Act {
        binding_id: String,
        op: TerminalOp,
        reply: RpcReplyPort<DaemonResult<Outcome>>,
    },
    /// `POST /api/v1/approvals/{id}` for a terminal approval.
    Decide {
        approval_id: String,
        decision: Decision,
        reply: RpcReplyPort<DaemonResult<bosun_proto::ApprovalView>>,
    },
    /// Looks at every terminal again; the map as it is after.
    Discover(RpcReplyPort<DaemonResult<Vec<TerminalView>>>),
    Consent {
        terminal: TerminalKind,
        grant: bool,
        reply: RpcReplyPort<DaemonResult<TerminalView>>,
    },
    /// Writes the OS clipboard (`Some`), or reads it (`None`).
    Clipboard {
        write: Option<String>,
        reply: RpcReplyPort<DaemonResult<bosun_proto::ClipboardContent>>,
    },
    Children(RpcReplyPort<Vec<ChildInfo>>),
    Crash,
    Restart(RestartChild),
}

/// What a spawn came to: the binding, or the approval it waits for.
#[derive(Debug, Clone)]
pub enum Spawned {
    Bound(BindingView),
    Held(bosun_proto::ApprovalView),
}

/// What an action came to: done, or held for a person.
// One per request, moved once: boxing would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Outcome {
    Acted(Acted),
    Held(bosun_proto::ApprovalView, BindingView),
}

impl From<RestartChild> for TerminalsMsg {
    fn from(r: RestartChild) -> Self {
        TerminalsMsg::Restart(r)
    }
}

impl Actor for TerminalsSupervisor {
    type Msg = TerminalsMsg;
    type State = TerminalsState;
    type Arguments = Context;

    async fn pre_start(
        &self,
        myself: ActorRef<TerminalsMsg>,
        ctx: Context,
    ) -> Result<TerminalsState, ActorProcessingErr> {
        let config = SupervisorConfig {
            strategy: Strategy::OneForOne,
            intensity: Intensity { max_restarts: 50, within: Duration::from_secs(30) },
            backoff: Backoff { initial: Duration::from_millis(20), max: Duration::from_secs(2) },
            on_restart: Some(ctx.restart_hook()),
        };
        let mut state = TerminalsState { sup: Supervision::new(config), tmux_cwd: None, ctx };
        state.discover().await?;
        let open: Vec<BindingRecord> =
            state.ctx.store.scan::<BindingRecord>()?.into_iter().filter(|b| b.state == BindingState::Open).collect();
        let count = open.len();
        for record in open {
            if let Err(e) = state.start_binding(&myself, record.id, None).await {
                state.sup.shutdown().await;
                return Err(e);
            }
        }
        tracing::info!(bindings = count, "terminal bindings resumed");
        state.tmux_cwd = Some(tokio::spawn(follow_tmux_cwd(state.ctx.clone())));
        Ok(state)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<TerminalsMsg>,
        state: &mut TerminalsState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(task) = state.tmux_cwd.take() {
            task.abort();
        }
        Self::stop_children(state).await
    }

    async fn handle(
        &self,
        myself: ActorRef<TerminalsMsg>,
        msg: TerminalsMsg,
        state: &mut TerminalsState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            TerminalsMsg::Spawn(req, reply) => {
                let r = state.judge_spawn(&myself, req).await;
                let _ = reply.send(r);
            }
            TerminalsMsg::Act { binding_id, op, reply } => state.act(binding_id, op, reply).await,
            TerminalsMsg::Decide { approval_id, decision, reply } => {
                let r = state.decide(&myself, &approval_id, decision).await;
                let _ = reply.send(r);
            }
            TerminalsMsg::Discover(reply) => {
                let r = state.discover().await;
                let _ = reply.send(r);
            }
            TerminalsMsg::Consent { terminal, grant, reply } => {
                let _ = reply.send(state.consent(terminal, grant).await);
            }
            TerminalsMsg::Clipboard { write, reply } => state.clipboard(write, reply).await,
            TerminalsMsg::Children(reply) => {
                let _ = reply.send(state.sup.children());
            }
            TerminalsMsg::Crash => {
                if state.ctx.settings.fault_injection {
                    panic!("injected fault: terminals supervisor");
                }
            }
            TerminalsMsg::Restart(req) => Self::supervise_restart(&myself, req, state).await?,
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<TerminalsMsg>,
        evt: SupervisionEvent,
        state: &mut TerminalsState,
    ) -> Result<(), ActorProcessingErr> {
        Self::supervise_event(&myself, evt, state).await
    }
}

impl Supervises for TerminalsSupervisor {
    fn supervision(state: &mut TerminalsState) -> &mut Supervision {
        &mut state.sup
    }

    fn escalation_error(_: &TerminalsState, reason: &str) -> ActorProcessingErr {
        format!("terminals supervisor: {reason}").into()
    }
}

/// OSC 7 (and 9;9) in a tmux pane's output, from tmux's control-mode
/// stream, moves the cwd of the binding of that pane. One parser per pane,
/// so a sequence cut across two `%output` lines is still read.
async fn follow_tmux_cwd(ctx: Context) {
    use bosun_termbridge::osc::{OscParser, TerminalEvent as OscEvent};
    use std::collections::HashMap;
    use tokio::sync::broadcast::error::RecvError;
    let mut output = ctx.bridge.tmux.subscribe();
    let mut parsers: HashMap<String, OscParser> = HashMap::new();
    loop {
        let chunk = match output.recv().await {
            Ok(chunk) => chunk,
            // Missed output: a cwd in it is missed too, and the next prompt
            // reports it again.
            Err(RecvError::Lagged(_)) => continue,
            Err(RecvError::Closed) => return,
        };
        let pane = chunk.pane.to_string();
        let parser = parsers.entry(pane.clone()).or_insert_with(|| OscParser::new(8 * 1024));
        let Some(path) = parser.feed(&chunk.bytes).into_iter().rev().find_map(|e| match e {
            OscEvent::Cwd { path, .. } => Some(path),
            _ => None,
        }) else {
            continue;
        };
        let binding = ctx.store.scan::<BindingRecord>().ok().and_then(|all| {
            all.into_iter()
                .find(|b| b.terminal == TerminalKind::Tmux && b.state == BindingState::Open && b.pane == pane)
        });
        if let Some(binding) = binding {
            let r = crate::route::call::<BindingMsg, _, _>(&names::binding(&binding.id), |reply| BindingMsg::Act {
                op: TerminalOp::SetCwd(path),
                decision: "reported".into(),
                reply,
            })
            .await;
            if let Ok(Err(e)) | Err(e) = r.map(|r| r.map(|_| ())) {
                tracing::debug!(binding = %binding.id, error = %e, "a cwd tmux reported was not taken");
            }
        }
    }
}

/// When process `pid` started, in clock ticks since boot (field 22 of
/// /proc/PID/stat), so a pid the kernel gave to another process since is
/// never taken for ours.
pub fn process_started(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

/// The daemon's own PTY terminals, as the capability map shows them.
fn pty_entry(max_clipboard_kb: u32) -> TerminalRecord {
    TerminalRecord {
        terminal: TerminalKind::Pty,
        installed: true,
        running: true,
        reachable: true,
        version: Some(format!("bosun {}", env!("CARGO_PKG_VERSION"))),
        capabilities: TerminalCapabilities {
            spawn: true,
            split: false,
            focus: false,
            send_text: true,
            read_text: true,
            clipboard_read: false,
            // OSC 52 to the screens showing the terminal.
            clipboard_write: true,
            // OSC 7 and 9;9 in its output move the binding's cwd.
            cwd_sync: true,
            bracketed_paste: true,
            max_clipboard_kb,
        },
        requires_opt_in: false,
        consent_granted_at: None,
        notes: vec!["the daemon's own pseudo-terminals, shown in the browser at /ws/terminal/{id}".into()],
        risk_flags: vec![],
        discovered_at: bosun_proto::now_ts(),
    }
}

impl TerminalsState {
    /// Writes what discovery found where it differs from the stored map,
    /// each change with its `termbridge:capability_update`.
    async fn discover(&mut self) -> DaemonResult<Vec<TerminalView>> {
        let mut found = vec![pty_entry(self.ctx.settings.termbridge.max_clipboard_kb)];
        for (kind, discovery) in bosun_termbridge::discover_all(&self.ctx.bridge).await {
            found.push(bridge::record(&self.ctx, kind, discovery));
        }
        let mut batch = Batch::by(Owner::Terminals);
        let mut map = Vec::new();
        for mut entry in found {
            let stored = self.ctx.store.get::<TerminalRecord>(entry.terminal.as_str())?;
            entry.consent_granted_at = stored.as_ref().and_then(|s| s.consent_granted_at.clone());
            if stored.as_ref().is_none_or(|s| !s.same_facts(&entry)) {
                batch.put(&entry)?;
                batch.event(
                    EventData::CapabilityUpdate(CapabilityUpdate { terminal: entry.view() })
                        .into_event(Topic::system()),
                );
            }
            map.push(entry.view());
        }
        self.ctx.store.commit(batch).await?;
        Ok(map)
    }

    async fn consent(&mut self, terminal: TerminalKind, grant: bool) -> DaemonResult<TerminalView> {
        let mut record = self
            .ctx
            .store
            .get::<TerminalRecord>(terminal.as_str())?
            .ok_or_else(|| DaemonError::NotFound(format!("terminal {terminal} was not discovered")))?;
        let granted = record.consent_granted_at.is_some();
        if granted == grant {
            return Ok(record.view());
        }
        record.consent_granted_at = grant.then(bosun_proto::now_ts);
        let mut batch = Batch::by(Owner::Terminals);
        batch.put(&record)?;
        batch.event(
            EventData::CapabilityUpdate(CapabilityUpdate { terminal: record.view() }).into_event(Topic::system()),
        );
        self.ctx.store.commit(batch).await?;
        Ok(record.view())
    }

    async fn spawn(&mut self, myself: &ActorRef<TerminalsMsg>, req: SpawnTerminalRequest) -> DaemonResult<BindingView> {
        let terminal = req.terminal.unwrap_or(TerminalKind::Pty);
        if terminal != TerminalKind::Pty {
            return self.spawn_in_emulator(myself, terminal, req).await;
        }
        let id = new_id("b_");
        let plan = PtyPlan::new(&self.ctx, &req, &id)?;
        let gate = Arc::new(FlowGate::new(WATERMARKS, 0));
        let (tx, output) = tokio::sync::mpsc::channel(OUTPUT_QUEUE);
        let pty = Pty::spawn(plan.command.clone(), gate, tx).map_err(|e| DaemonError::BadRequest(e.to_string()))?;
        let now = bosun_proto::now_ts();
        let record = BindingRecord {
            id: id.clone(),
            terminal,
            session_id: req.session_id.as_ref().map(|s| s.to_string()),
            endpoint: format!("pty://{id}"),
            pane: id.clone(),
            pid: pty.pid(),
            pid_started: pty.pid().and_then(process_started),
            labels: req.labels.clone(),
            command: req.command.clone(),
            cwd: plan.cwd.display().to_string(),
            state: BindingState::Open,
            exit: None,
            reason: None,
            jailed: plan.jailed,
            size: Some(TerminalSize { cols: plan.command.size.cols, rows: plan.command.size.rows }),
            created_at: now.clone(),
            updated_at: now,
        };
        let view = record.view(Some(bosun_proto::OutputRange { start: 0, end: 0 }));
        let live = Arc::new(LiveTerminal::new(pty, 0));
        let new = NewBinding { record, pty: Some((live, output)) };
        // If the actor cannot start, the terminal it would have owned is
        // dropped with `new`, which hangs it up.
        self.start_binding(myself, id, Some(new))
            .await
            .map_err(|e| DaemonError::Internal(format!("the terminal's actor could not start: {e}")))?;
        Ok(view)
    }

    async fn start_binding(
        &mut self,
        myself: &ActorRef<TerminalsMsg>,
        binding_id: String,
        new: Option<NewBinding>,
    ) -> Result<(), ActorProcessingErr> {
        let ctx = self.ctx.clone();
        let new = new.map(|n| Arc::new(Mutex::new(Some(n))));
        // Transient: a binding that ends stops its actor for good; one that
        // crashes is restarted and finds its terminal again.
        let spec = ChildSpec::for_actor(
            names::binding(&binding_id),
            Restart::Transient,
            Shutdown::Timeout(Duration::from_secs(5)),
            move || (BindingActor, BindingArgs { ctx: ctx.clone(), binding_id: binding_id.clone(), new: new.clone() }),
        );
        self.sup.start_child(spec, &myself.get_cell()).await?;
        Ok(())
    }
}

/// How long an approved action waits for the binding's actor to carry it out.
const ACT_TIMEOUT: Duration = Duration::from_secs(30);

impl TerminalsState {
    /// The policy a binding follows: its session's, or `[termbridge] policy`.
    fn policy_for(&self, session_id: Option<&str>) -> DaemonResult<Policy> {
        match session_id {
            Some(id) => Ok(self
                .ctx
                .store
                .get::<SessionRecord>(id)?
                .ok_or_else(|| DaemonError::NotFound(format!("session {id} not found")))?
                .policy),
            None => Ok(self.ctx.settings.termbridge.policy),
        }
    }

    /// Refuses, with a `termbridge:denied`, control of a terminal that needs
    /// consent no one has given.
    async fn check_consent(
        &self,
        terminal: TerminalKind,
        binding_id: Option<&str>,
        session_id: Option<&str>,
        action: &str,
    ) -> DaemonResult<()> {
        let record = self.ctx.store.get::<TerminalRecord>(terminal.as_str())?;
        let needs = record.as_ref().is_none_or(|r| r.requires_opt_in && r.consent_granted_at.is_none());
        if !needs {
            return Ok(());
        }
        let reason = format!(
            "{terminal} needs a user's consent before it is controlled: POST /api/v1/terminals/{terminal}/consent"
        );
        self.deny(terminal, binding_id, session_id, action, &reason).await;
        Err(DaemonError::Forbidden(reason))
    }

    async fn deny(
        &self,
        terminal: TerminalKind,
        binding_id: Option<&str>,
        session_id: Option<&str>,
        action: &str,
        reason: &str,
    ) {
        let event = EventData::TerminalDenied(TerminalDenied {
            binding_id: binding_id.map(str::to_string),
            terminal,
            session_id: session_id.map(Into::into),
            action: action.to_string(),
            reason: reason.to_string(),
        });
        let mut batch = Batch::new();
        batch.event(event.into_event(topic_of(session_id)));
        if let Err(e) = self.ctx.store.commit(batch).await {
            tracing::warn!(error = %e, "a refused terminal action could not be recorded");
        }
    }

    /// Writes a held action and its `approval:requested`.
    async fn hold(
        &self,
        terminal: TerminalKind,
        binding_id: Option<String>,
        session_id: Option<String>,
        held: HeldTerminalAction,
        verdict: policy::Verdict,
        policy: Policy,
    ) -> DaemonResult<bosun_proto::ApprovalView> {
        let record = TerminalApprovalRecord {
            id: new_id("a_"),
            binding_id,
            terminal,
            session_id,
            held,
            concerns: verdict.concerns.iter().map(|c| c.to_string()).collect(),
            revealed: verdict.revealed,
            status: ApprovalStatus::Pending,
            decided_by: None,
            requested_at: bosun_proto::now_ts(),
            decided_at: None,
            outcome: None,
        };
        let view = record.view();
        let mut batch = Batch::by(Owner::Terminals);
        batch.put(&record)?;
        batch.event(
            EventData::ApprovalRequested(ApprovalRequested { approval: view.clone(), policy })
                .into_event(topic_of(record.session_id.as_deref())),
        );
        self.ctx.store.commit(batch).await?;
        Ok(view)
    }

    async fn judge_spawn(
        &mut self,
        myself: &ActorRef<TerminalsMsg>,
        req: SpawnTerminalRequest,
    ) -> DaemonResult<Spawned> {
        let terminal = req.terminal.unwrap_or(TerminalKind::Pty);
        let session = req.session_id.as_ref().map(|s| s.to_string());
        let policy = self.policy_for(session.as_deref())?;
        self.check_consent(terminal, None, session.as_deref(), "spawn").await?;
        let verdict = policy::judge_spawn(policy, &req);
        if !verdict.allowed() {
            // Checked now, so a request that could never run is refused
            // rather than put before a person.
            if terminal == TerminalKind::Pty {
                PtyPlan::new(&self.ctx, &req, "b_unstarted")?;
            }
            let view = self.hold(terminal, None, session, HeldTerminalAction::Spawn(req), verdict, policy).await?;
            return Ok(Spawned::Held(view));
        }
        let decision = if policy == Policy::FullAccess { "full-access" } else { "allowed" };
        self.spawn_and_record(myself, req, decision).await.map(Spawned::Bound)
    }

    async fn spawn_and_record(
        &mut self,
        myself: &ActorRef<TerminalsMsg>,
        req: SpawnTerminalRequest,
        decision: &str,
    ) -> DaemonResult<BindingView> {
        let started = std::time::Instant::now();
        let shown = req.command.join(" ");
        let view = self.spawn(myself, req).await?;
        let event = EventData::TerminalAction(bosun_proto::TerminalAction {
            binding_id: view.binding_id.clone(),
            terminal: view.terminal,
            session_id: view.session_id.clone(),
            action: "spawn".into(),
            decision: decision.to_string(),
            latency_ms: started.elapsed().as_secs_f64() * 1000.0,
            detail: bosun_termbridge::sanitize::sanitize(shown.as_bytes()),
        });
        let mut batch = Batch::new();
        batch.event(event.into_event(topic_of(view.session_id.as_ref().map(|s| s.as_str()))));
        self.ctx.store.commit(batch).await?;
        Ok(view)
    }

    async fn act(&mut self, binding_id: String, op: TerminalOp, reply: RpcReplyPort<DaemonResult<Outcome>>) {
        let judged = self.judge_act(&binding_id, &op).await;
        match judged {
            Err(e) => {
                let _ = reply.send(Err(e));
            }
            Ok(Judged::Held(approval, binding)) => {
                let _ = reply.send(Ok(Outcome::Held(approval, binding)));
            }
            Ok(Judged::Go(decision)) => {
                // Carried out by the binding's actor, off this one: a
                // terminal that is slow to answer holds up only its caller.
                tokio::spawn(async move {
                    let r =
                        crate::route::call_within::<BindingMsg, _, _>(&names::binding(&binding_id), ACT_TIMEOUT, |r| {
                            BindingMsg::Act { op, decision, reply: r }
                        })
                        .await;
                    let _ = reply.send(r.and_then(|r| r).map(Outcome::Acted));
                });
            }
        }
    }

    async fn judge_act(&mut self, binding_id: &str, op: &TerminalOp) -> DaemonResult<Judged> {
        let binding = self
            .ctx
            .store
            .get::<BindingRecord>(binding_id)?
            .ok_or_else(|| DaemonError::NotFound(format!("terminal binding {binding_id:?} not found")))?;
        let session = binding.session_id.clone();
        if !matches!(op, TerminalOp::Read) && binding.state != BindingState::Open {
            if matches!(op, TerminalOp::Close) {
                return Ok(Judged::Go("allowed".into()));
            }
            return Err(DaemonError::Conflict(format!("terminal binding {binding_id} is {}", binding.state)));
        }
        self.check_consent(binding.terminal, Some(binding_id), session.as_deref(), op.name()).await?;
        if matches!(op, TerminalOp::ClipboardRead) && !self.ctx.settings.termbridge.clipboard_read {
            let reason = "reading the clipboard is off ([termbridge] clipboard_read = true turns it on)";
            self.deny(binding.terminal, Some(binding_id), session.as_deref(), "clipboard_read", reason).await;
            return Err(DaemonError::Forbidden(reason.into()));
        }
        let policy = self.policy_for(session.as_deref())?;
        let decision = if policy == Policy::FullAccess { "full-access" } else { "allowed" };
        if let TerminalOp::Send(req) = op {
            let verdict = policy::judge_send(policy, req);
            if !verdict.allowed() {
                let view = self
                    .hold(
                        binding.terminal,
                        Some(binding_id.to_string()),
                        session,
                        HeldTerminalAction::Send(req.clone()),
                        verdict,
                        policy,
                    )
                    .await?;
                return Ok(Judged::Held(view, binding.view(None)));
            }
        }
        Ok(Judged::Go(decision.into()))
    }

    async fn decide(
        &mut self,
        myself: &ActorRef<TerminalsMsg>,
        approval_id: &str,
        decision: Decision,
    ) -> DaemonResult<bosun_proto::ApprovalView> {
        let mut record = self
            .ctx
            .store
            .get::<TerminalApprovalRecord>(approval_id)?
            .ok_or_else(|| DaemonError::NotFound(format!("approval {approval_id} not found")))?;
        if record.status != ApprovalStatus::Pending {
            if record.status == decision.resulting_status() {
                return Ok(record.view());
            }
            return Err(DaemonError::Conflict(format!("approval {approval_id} is already {}", record.status)));
        }
        record.status = decision.resulting_status();
        record.decided_by = Some(DecidedBy::User);
        record.decided_at = Some(bosun_proto::now_ts());
        let mut batch = Batch::by(Owner::Terminals);
        batch.put(&record)?;
        batch.event(
            EventData::ApprovalResolved(ApprovalResolved { approval: record.view(), automatic: false })
                .into_event(topic_of(record.session_id.as_deref())),
        );
        // Decided before anything is done: a crash in between leaves it
        // decided and not carried out, never carried out twice.
        self.ctx.store.commit(batch).await?;
        if record.status != ApprovalStatus::Accepted {
            let reason = "declined by a person".to_string();
            self.deny(
                record.terminal,
                record.binding_id.as_deref(),
                record.session_id.as_deref(),
                record.action_name(),
                &reason,
            )
            .await;
            return Ok(record.view());
        }
        let outcome = match record.held.clone() {
            HeldTerminalAction::Spawn(req) => {
                self.spawn_and_record(myself, req, "approved").await.map(|b| format!("done: {}", b.binding_id))
            }
            HeldTerminalAction::Send(req) => {
                let binding_id = record.binding_id.clone().unwrap_or_default();
                crate::route::call_within::<BindingMsg, _, _>(&names::binding(&binding_id), ACT_TIMEOUT, |r| {
                    BindingMsg::Act { op: TerminalOp::Send(req), decision: "approved".into(), reply: r }
                })
                .await
                .and_then(|r| r)
                .map(|_| "done".to_string())
            }
        };
        record.outcome = Some(match outcome {
            Ok(done) => done,
            Err(e) => format!("failed: {e}"),
        });
        let mut batch = Batch::by(Owner::Terminals);
        batch.put(&record)?;
        self.ctx.store.commit(batch).await?;
        Ok(record.view())
    }

    async fn spawn_in_emulator(
        &mut self,
        myself: &ActorRef<TerminalsMsg>,
        terminal: TerminalKind,
        req: SpawnTerminalRequest,
    ) -> DaemonResult<BindingView> {
        let control = bridge::control(&self.ctx, terminal)
            .ok_or_else(|| DaemonError::Internal(format!("no adapter for {terminal}")))?;
        if req.cols.is_some() || req.rows.is_some() {
            return Err(DaemonError::BadRequest(
                "cols and rows are for pty terminals; an emulator sizes its own".into(),
            ));
        }
        let session = match &req.session_id {
            Some(id) => Some(
                self.ctx
                    .store
                    .get::<SessionRecord>(id.as_str())?
                    .ok_or_else(|| DaemonError::NotFound(format!("session {id} not found")))?,
            ),
            None => None,
        };
        if session.as_ref().is_some_and(|s| s.sandbox != Sandbox::None) {
            return Err(DaemonError::NotSupported(format!(
                "session {} is sandboxed, and a {terminal} window runs on the host: use a pty terminal for it",
                session.as_ref().map_or("", |s| s.id.as_str())
            )));
        }
        let cwd = req.cwd.clone().map(PathBuf::from).or_else(|| session.as_ref().map(|s| PathBuf::from(&s.cwd)));
        let placement = match (req.placement, &req.split_of) {
            (Some(bosun_proto::Placement::Split), Some(of)) | (None, Some(of)) => {
                let target = self
                    .ctx
                    .store
                    .get::<BindingRecord>(of)?
                    .filter(|b| b.terminal == terminal && b.state == BindingState::Open)
                    .ok_or_else(|| DaemonError::BadRequest(format!("split_of: no open {terminal} binding {of:?}")))?;
                bosun_termbridge::Placement::Split {
                    target: bosun_termbridge::PaneId::new(target.pane),
                    direction: bosun_termbridge::Direction::Right,
                }
            }
            (Some(bosun_proto::Placement::Split), None) => {
                return Err(DaemonError::BadRequest("placement split needs split_of: the binding to split".into()))
            }
            (Some(bosun_proto::Placement::Tab), None) => bosun_termbridge::Placement::Tab,
            (Some(bosun_proto::Placement::Window), None) => bosun_termbridge::Placement::Window,
            (Some(_), Some(_)) => return Err(DaemonError::BadRequest("split_of goes with placement split".into())),
            (None, None) => bosun_termbridge::Placement::Window,
        };
        let pane = control
            .spawn(bosun_termbridge::SpawnRequest {
                command: req.command.clone(),
                cwd: cwd.clone(),
                env: req.env.clone(),
                placement,
            })
            .await
            .map_err(|e| bridge::error(terminal, e))?;
        let id = new_id("b_");
        let now = bosun_proto::now_ts();
        let record = BindingRecord {
            id: id.clone(),
            terminal,
            session_id: req.session_id.as_ref().map(|s| s.to_string()),
            endpoint: pane.endpoint.clone(),
            pane: pane.id.to_string(),
            pid: pane.pid,
            pid_started: pane.pid.and_then(process_started),
            labels: req.labels.clone(),
            command: req.command.clone(),
            cwd: cwd.map(|c| c.display().to_string()).unwrap_or_default(),
            state: BindingState::Open,
            exit: None,
            reason: None,
            jailed: false,
            size: None,
            created_at: now.clone(),
            updated_at: now,
        };
        let view = record.view(None);
        self.start_binding(myself, id, Some(NewBinding { record, pty: None }))
            .await
            .map_err(|e| DaemonError::Internal(format!("the binding's actor could not start: {e}")))?;
        Ok(view)
    }
}

impl TerminalsState {
    async fn clipboard(&self, write: Option<String>, reply: RpcReplyPort<DaemonResult<bosun_proto::ClipboardContent>>) {
        let settings = &self.ctx.settings.termbridge;
        let limit = settings.max_clipboard_kb as usize * 1024;
        if write.is_none() && !settings.clipboard_read {
            let reason = "reading the clipboard is off ([termbridge] clipboard_read = true turns it on)";
            self.deny(TerminalKind::Pty, None, None, "clipboard_read", reason).await;
            let _ = reply.send(Err(DaemonError::Forbidden(reason.into())));
            return;
        }
        if write.as_ref().is_some_and(|t| t.len() > limit) {
            let _ =
                reply.send(Err(DaemonError::BadRequest(format!("text: the clipboard takes at most {limit} bytes"))));
            return;
        }
        let ipc = settings.ipc;
        let store = self.ctx.store.clone();
        // The tool's process is waited on off this actor.
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let r = async {
                let clipboard = bosun_termbridge::clipboard::OsClipboard::detect(ipc, limit, None)
                    .map_err(|e| bridge::error(TerminalKind::Pty, e))?;
                let via = match clipboard.tool() {
                    bosun_termbridge::clipboard::ClipboardTool::WlClipboard => "wl-copy",
                    bosun_termbridge::clipboard::ClipboardTool::Xclip => "xclip",
                    bosun_termbridge::clipboard::ClipboardTool::Pasteboard => "pbcopy",
                };
                let text = match &write {
                    Some(text) => {
                        clipboard.write(text.as_bytes()).await.map_err(|e| bridge::error(TerminalKind::Pty, e))?;
                        text.clone()
                    }
                    None => {
                        let bytes = clipboard.read().await.map_err(|e| bridge::error(TerminalKind::Pty, e))?;
                        String::from_utf8_lossy(&bytes).into_owned()
                    }
                };
                Ok(bosun_proto::ClipboardContent { text, via: via.into(), sequences: None, screens: None })
            }
            .await;
            if let Ok(done) = &r {
                let action = if write.is_some() { "clipboard_write" } else { "clipboard_read" };
                let event = EventData::TerminalAction(bosun_proto::TerminalAction {
                    binding_id: String::new(),
                    terminal: TerminalKind::Pty,
                    session_id: None,
                    action: action.into(),
                    decision: "allowed".into(),
                    latency_ms: started.elapsed().as_secs_f64() * 1000.0,
                    detail: format!("{} bytes via {}", done.text.len(), done.via),
                });
                let mut batch = Batch::new();
                batch.event(event.into_event(Topic::system()));
                let _ = store.commit(batch).await;
            }
            let _ = reply.send(r);
        });
    }
}

#[allow(clippy::large_enum_variant)]
enum Judged {
    Go(String),
    Held(bosun_proto::ApprovalView, BindingView),
}

/// The hidden subcommand of the daemon's binary that runs a docker
/// session's terminal in its container, and the variable its spec is in.
pub const CONTAINER_TERMINAL_COMMAND: &str = "container-terminal";
pub const CONTAINER_TERMINAL_ENV: &str = "BOSUN_CONTAINER_TERMINAL";

/// How a `pty` terminal is started: where, in what, with what.
struct PtyPlan {
    command: PtyCommand,
    cwd: PathBuf,
    jailed: bool,
}

impl PtyPlan {
    fn new(ctx: &Context, req: &SpawnTerminalRequest, binding_id: &str) -> DaemonResult<PtyPlan> {
        let size = PtySize::new(req.cols.unwrap_or(80), req.rows.unwrap_or(24))
            .map_err(|e| DaemonError::BadRequest(e.to_string()))?;
        check_env(&req.env)?;
        if req.placement.is_some() || req.split_of.is_some() {
            return Err(DaemonError::BadRequest(
                "a pty terminal has no windows to place it in; placement and split_of are for terminal emulators"
                    .into(),
            ));
        }
        if req.command.first().is_some_and(|p| p.is_empty()) || req.command.iter().any(|a| a.contains('\0')) {
            return Err(DaemonError::BadRequest(
                "command: the program must be named, and no argument may hold NUL".into(),
            ));
        }
        let session = match &req.session_id {
            Some(id) => Some(
                ctx.store
                    .get::<SessionRecord>(id.as_str())?
                    .ok_or_else(|| DaemonError::NotFound(format!("session {id} not found")))?,
            ),
            None => None,
        };
        if session.as_ref().is_some_and(|s| s.archived) {
            return Err(DaemonError::Conflict("the session is archived".into()));
        }
        let base = session.as_ref().map(|s| PathBuf::from(&s.cwd)).unwrap_or_else(|| ctx.settings.default_cwd.clone());
        let cwd = match &req.cwd {
            Some(dir) => {
                let dir = PathBuf::from(dir);
                if !dir.is_absolute() {
                    return Err(DaemonError::BadRequest(format!("cwd must be absolute, got {:?}", req.cwd)));
                }
                dir
            }
            None => base.clone(),
        };
        if !cwd.is_dir() {
            return Err(DaemonError::BadRequest(format!("cwd {} is not a directory", cwd.display())));
        }
        if session.is_some() && !cwd.starts_with(&base) {
            return Err(DaemonError::BadRequest(format!(
                "a terminal of the session runs in its directory {}; {} is outside it",
                base.display(),
                cwd.display()
            )));
        }
        let (program, args): (OsString, Vec<OsString>) = match req.command.split_first() {
            Some((program, args)) => (program.into(), args.iter().map(OsString::from).collect()),
            None => (user_shell().into_os_string(), Vec::new()),
        };
        let mut env: Vec<(OsString, OsString)> =
            vec![("TERM".into(), "xterm-256color".into()), ("COLORTERM".into(), "truecolor".into())];
        env.extend(req.env.iter().map(|(k, v)| (OsString::from(k), OsString::from(v))));
        let sandbox = session.as_ref().map(|s| s.sandbox).unwrap_or_default();
        let command = match sandbox {
            Sandbox::None => PtyCommand { program, args, cwd: cwd.clone(), clear_env: false, env, size },
            Sandbox::Bwrap => {
                let session =
                    session.as_ref().ok_or_else(|| DaemonError::Internal("a jail without a session".into()))?;
                // Fail closed, as the session's agent does: never on the host.
                let jail = Jail::bwrap(&ctx.settings.data_dir).ok_or_else(|| {
                    DaemonError::NotSupported(format!(
                        "session {} is jailed, and bubblewrap (bwrap) is not on PATH",
                        session.id
                    ))
                })?;
                let withheld: Vec<String> = ctx.settings.git.token_env.iter().cloned().collect();
                let jail = jail.with_network(session.network).withholding(withheld);
                let mut argv = jail.terminal_command(&program, &cwd);
                argv.extend(args);
                let mut jailed_env = Jail::basic_env();
                jailed_env.extend(env);
                let program = argv.remove(0);
                PtyCommand { program, args: argv, cwd: cwd.clone(), clear_env: true, env: jailed_env, size }
            }
            Sandbox::Docker => {
                let session =
                    session.as_ref().ok_or_else(|| DaemonError::Internal("a container without a session".into()))?;
                let docker = ctx.settings.docker_config.clone().ok_or_else(|| {
                    DaemonError::NotSupported(format!(
                        "session {} runs in Docker, and the daemon has no [docker] engine configured",
                        session.id
                    ))
                })?;
                // The daemon's own binary runs the container (bollard, on the
                // same engine as the session's shell) with this PTY as its
                // tty: what the daemon reads stays a local PTY, flow control
                // and the exit status included.
                let spec = bosun_isolation::container::TerminalContainer {
                    docker,
                    session_id: session.id.to_string(),
                    binding_id: binding_id.to_string(),
                    cwd: cwd.clone(),
                    network: session.network,
                    command: req.command.clone(),
                    env: env
                        .iter()
                        .map(|(k, v)| (k.to_string_lossy().into_owned(), v.to_string_lossy().into_owned()))
                        .collect(),
                };
                let spec = serde_json::to_string(&spec).map_err(|e| DaemonError::Internal(e.to_string()))?;
                let program = std::env::current_exe().map_err(|e| {
                    DaemonError::Internal(format!("the daemon's own binary, to run the container: {e}"))
                })?;
                PtyCommand {
                    program: program.into_os_string(),
                    args: vec![CONTAINER_TERMINAL_COMMAND.into()],
                    cwd: cwd.clone(),
                    clear_env: true,
                    env: vec![(CONTAINER_TERMINAL_ENV.into(), spec.into())],
                    size,
                }
            }
        };
        Ok(PtyPlan { command, cwd, jailed: sandbox != Sandbox::None })
    }
}

fn check_env(env: &BTreeMap<String, String>) -> DaemonResult<()> {
    for (k, v) in env {
        if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
            return Err(DaemonError::BadRequest(format!("env: {k:?} is not a valid variable (no '=', no NUL)")));
        }
    }
    Ok(())
}

/// `$SHELL` if it is a program, else bash, else sh.
fn user_shell() -> PathBuf {
    std::env::var_os("SHELL")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute() && p.is_file())
        .or_else(|| ["/bin/bash", "/bin/sh"].iter().map(PathBuf::from).find(|p| Path::new(p).is_file()))
        .unwrap_or_else(|| PathBuf::from("/bin/sh"))
}
