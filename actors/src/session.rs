//! The session actor: one per session, owner of the session record, and the
//! supervisor of the session's turn actor and provider worker.
//!
//! The provider worker starts with the first turn (an idle session costs only
//! this actor), and stays for the next turns.

use crate::context::{new_id, Context};
use crate::error::{DaemonError, DaemonResult};
use crate::files::{FileChange, FilesResult};
use crate::names;
use crate::provider::{ProviderArgs, ProviderWorker};
use crate::turn::{TurnActor, TurnArgs, TurnMsg, TurnStart};
use bosun_proto::{
    events, ApprovalStatus, ApprovalView, Decision, EventData, NewEvent, PatchSessionRequest, Policy, SessionView,
    Topic, TurnStatus, Usage,
};
use bosun_state::{ApprovalRecord, Batch, Owner, SessionRecord, TurnProgress, TurnRecord};
use bosun_supervision::{
    Backoff, ChildSpec, Intensity, Outcome, Restart, RestartChild, Shutdown, Strategy, Supervises, Supervision,
    SupervisorConfig,
};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Limits on what a client may store in a session.
pub const MAX_TITLE_BYTES: usize = 200;
pub const MAX_DRAFT_BYTES: usize = 64 * 1024;
pub const MAX_TURN_TEXT_BYTES: usize = 256 * 1024;

pub struct SessionActor;

pub struct SessionArgs {
    pub ctx: Context,
    pub session_id: String,
    /// A session being created: its record, for the actor to write on its
    /// first start. Taken once, so a restart (even one after the session
    /// was closed and its record deleted) never writes it again.
    pub new: Option<Arc<Mutex<Option<SessionRecord>>>>,
}

pub struct SessionState {
    ctx: Context,
    record: SessionRecord,
    sup: Supervision,
    closed: bool,
    /// Held by a push under way: the session's pushes go one at a time.
    pushes: Arc<tokio::sync::Mutex<()>>,
    _alive: crate::metrics::Alive,
}

pub enum SessionMsg {
    Patch(PatchSessionRequest, RpcReplyPort<DaemonResult<SessionView>>),
    StartTurn(String, RpcReplyPort<DaemonResult<String>>),
    Interrupt(String, RpcReplyPort<DaemonResult<()>>),
    Steer(String, String, RpcReplyPort<DaemonResult<()>>),
    Decide(String, Decision, RpcReplyPort<DaemonResult<ApprovalView>>),
    /// Ends the session for good: stops its children, cancels what waits,
    /// deletes its records and records `session:closed`.
    Close(RpcReplyPort<DaemonResult<()>>),
    /// A change to the session's worktree through the file API.
    Files(FileChange, RpcReplyPort<FilesResult>),
    /// From the turn actor: its status moved (running ↔ awaiting_approval).
    TurnStatus {
        turn_id: String,
        status: TurnStatus,
    },
    /// From the turn actor: its agent acted without an approval in plan-only.
    Violation {
        turn_id: String,
        what: String,
    },
    /// From the turn actor: the turn has ended and its end is on record.
    TurnEnded {
        turn_id: String,
        status: TurnStatus,
        usage: Usage,
    },
    Crash,
    Restart(RestartChild),
}

impl From<RestartChild> for SessionMsg {
    fn from(r: RestartChild) -> Self {
        SessionMsg::Restart(r)
    }
}

impl Actor for SessionActor {
    type Msg = SessionMsg;
    type State = SessionState;
    type Arguments = SessionArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<SessionMsg>,
        args: SessionArgs,
    ) -> Result<SessionState, ActorProcessingErr> {
        crate::heap::on_heap(async move {
            let record = match args.ctx.store.get::<SessionRecord>(&args.session_id)? {
                Some(record) => record,
                None => {
                    let new = args.new.as_ref().and_then(|cell| cell.lock().unwrap_or_else(|p| p.into_inner()).take());
                    let record = new.ok_or_else(|| format!("session {} has no record", args.session_id))?;
                    let mut batch = Batch::by(Owner::Session);
                    batch.put(&record)?;
                    batch.event(record.update_event().into_event(Topic::session(&record.id)));
                    args.ctx.store.commit(batch).await?;
                    record
                }
            };
            let config = SupervisorConfig {
                strategy: Strategy::OneForOne,
                intensity: Intensity { max_restarts: 10, within: Duration::from_secs(30) },
                backoff: Backoff { initial: Duration::from_millis(20), max: Duration::from_secs(2) },
                on_restart: Some(args.ctx.restart_hook()),
            };
            Ok(SessionState {
                _alive: crate::metrics::Alive::new(&args.ctx.metrics.sessions),
                sup: Supervision::new(config),
                record,
                ctx: args.ctx,
                closed: false,
                pushes: Arc::new(tokio::sync::Mutex::new(())),
            })
        })
        .await
    }

    async fn post_start(
        &self,
        myself: ActorRef<SessionMsg>,
        state: &mut SessionState,
    ) -> Result<(), ActorProcessingErr> {
        crate::heap::on_heap(async move { state.recover_active_turn(&myself).await }).await
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<SessionMsg>,
        state: &mut SessionState,
    ) -> Result<(), ActorProcessingErr> {
        Self::stop_children(state).await
    }

    async fn handle(
        &self,
        myself: ActorRef<SessionMsg>,
        msg: SessionMsg,
        state: &mut SessionState,
    ) -> Result<(), ActorProcessingErr> {
        crate::heap::on_heap(async move {
            if state.closed {
                refuse_closed(msg);
                return Ok(());
            }
            match msg {
                SessionMsg::Patch(patch, reply) => {
                    let r = state.patch(patch).await;
                    let _ = reply.send(r);
                }
                SessionMsg::StartTurn(text, reply) => {
                    let r = state.start_turn(&myself, text).await;
                    let _ = reply.send(r);
                }
                SessionMsg::Interrupt(turn_id, reply) => {
                    let r = match state.active_turn(&turn_id) {
                        Ok(()) => {
                            let r =
                                crate::route::call::<TurnMsg, _, _>(&names::turn(&state.record.id), TurnMsg::Interrupt)
                                    .await;
                            state.unless_ended(&turn_id, r)
                        }
                        Err(e) => Err(e),
                    };
                    let _ = reply.send(r);
                }
                SessionMsg::Steer(turn_id, text, reply) => {
                    let r = match state.active_turn(&turn_id) {
                        Ok(()) => {
                            let name = names::turn(&state.record.id);
                            let r = crate::route::call::<TurnMsg, _, _>(&name, |p| TurnMsg::Steer(text, p)).await;
                            state.unless_ended(&turn_id, r)
                        }
                        Err(e) => Err(e),
                    };
                    let _ = reply.send(r);
                }
                SessionMsg::Decide(approval_id, decision, reply) => {
                    let r = state.decide(approval_id, decision).await;
                    let _ = reply.send(r);
                }
                SessionMsg::Close(reply) => {
                    let r = state.close().await;
                    let _ = reply.send(r);
                }
                SessionMsg::Files(change, reply) => match &state.record.active_turn {
                    // The worktree is the turn's agent's while it runs.
                    Some(turn_id) => {
                        let busy = DaemonError::Busy { session_id: state.record.id.clone(), turn_id: turn_id.clone() };
                        let _ = reply.send(Err(busy.into()));
                    }
                    None => crate::files::change(&state.ctx, &state.record, change, &state.pushes, reply).await,
                },
                SessionMsg::TurnStatus { turn_id, status } => {
                    if state.record.active_turn.as_deref() == Some(turn_id.as_str()) {
                        let awaiting = status == TurnStatus::AwaitingApproval;
                        if state.record.awaiting_approval != awaiting {
                            state.record.awaiting_approval = awaiting;
                            state.save(Batch::by(Owner::Session)).await?;
                        }
                    }
                }
                SessionMsg::Violation { turn_id, what } => {
                    state.record.violation = Some(bosun_state::SessionViolation {
                        turn_id,
                        provider: state.record.provider.clone(),
                        what,
                        at: bosun_proto::now_ts(),
                    });
                    state.save(Batch::by(Owner::Session)).await?;
                }
                SessionMsg::TurnEnded { turn_id, status, usage } => {
                    if state.record.active_turn.as_deref() == Some(turn_id.as_str()) {
                        state.record.active_turn = None;
                        state.record.awaiting_approval = false;
                        state.record.usage.add(usage);
                        state.save(Batch::by(Owner::Session)).await?;
                        tracing::info!(session_id = %state.record.id, turn_id = %turn_id, %status, "session idle");
                    }
                }
                SessionMsg::Crash => {
                    if state.ctx.settings.fault_injection {
                        panic!("injected fault: session {}", state.record.id);
                    }
                }
                SessionMsg::Restart(req) => Self::supervise_restart(&myself, req, state).await?,
            }
            Ok(())
        })
        .await
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<SessionMsg>,
        evt: SupervisionEvent,
        state: &mut SessionState,
    ) -> Result<(), ActorProcessingErr> {
        crate::heap::on_heap(async move {
            if let SupervisionEvent::ActorFailed(cell, err) = &evt {
                let name = cell.get_name().unwrap_or_default();
                tracing::warn!(session_id = %state.record.id, actor = %name, error = %err, "child failed");
                if name == names::provider(&state.record.id) {
                    state.provider_crashed(&err.to_string()).await;
                }
            }
            Self::supervise_event(&myself, evt, state).await
        })
        .await
    }
}

impl Supervises for SessionActor {
    fn supervision(state: &mut SessionState) -> &mut Supervision {
        &mut state.sup
    }

    fn escalation_error(state: &SessionState, reason: &str) -> ActorProcessingErr {
        format!("session {}: {reason}", state.record.id).into()
    }

    fn on_outcome(state: &mut SessionState, outcome: &Outcome) {
        if let Outcome::Restarted { ids } = outcome {
            if ids.contains(&names::provider(&state.record.id)) && state.record.active_turn.is_some() {
                // The old worker took the turn's driver with it.
                crate::route::send(&names::turn(&state.record.id), TurnMsg::ProviderRestarted);
            }
        }
    }
}

/// A decision on an approval that is no longer the turn actor's to take:
/// the same answer again succeeds, any other is a conflict.
fn settle_again(approval: &ApprovalRecord, decision: Decision) -> DaemonResult<ApprovalView> {
    if approval.status == decision.resulting_status() {
        Ok(approval.view())
    } else {
        Err(DaemonError::Conflict(format!("approval {} is already {}", approval.id, approval.status)))
    }
}

/// Answers what arrives after `Close`: the session is gone.
fn refuse_closed(msg: SessionMsg) {
    let gone = || DaemonError::NotFound("session not found".into());
    match msg {
        SessionMsg::Patch(_, r) => drop(r.send(Err(gone()))),
        SessionMsg::StartTurn(_, r) => drop(r.send(Err(gone()))),
        SessionMsg::Interrupt(_, r) | SessionMsg::Steer(_, _, r) | SessionMsg::Close(r) => drop(r.send(Err(gone()))),
        SessionMsg::Decide(_, _, r) => drop(r.send(Err(gone()))),
        SessionMsg::Files(_, r) => drop(r.send(Err(gone().into()))),
        _ => {}
    }
}

impl SessionState {
    fn topic(&self) -> Topic {
        Topic::session(&self.record.id)
    }

    fn event(&self, data: EventData) -> NewEvent {
        data.into_event(self.topic())
    }

    /// Persists the record (with whatever else is in `batch`) and announces it.
    async fn save(&mut self, mut batch: Batch) -> DaemonResult<()> {
        self.record.updated_at = bosun_proto::now_ts();
        batch.put(&self.record)?;
        batch.event(self.event(self.record.update_event()));
        self.ctx.store.commit(batch).await?;
        Ok(())
    }

    /// The answer of a call to the turn actor; if the actor stopped before
    /// answering because the turn has just ended, a conflict saying so.
    fn unless_ended(&self, turn_id: &str, answer: DaemonResult<DaemonResult<()>>) -> DaemonResult<()> {
        match answer {
            Err(DaemonError::Unavailable(reason)) => {
                let key = TurnRecord::key_for(&self.record.id, self.record.turn_count);
                match self.ctx.store.get::<TurnRecord>(&key)?.filter(|t| t.id == turn_id && t.status.is_final()) {
                    Some(turn) => {
                        Err(DaemonError::Conflict(format!("turn {turn_id} has already ended ({})", turn.status)))
                    }
                    None => Err(DaemonError::Unavailable(reason)),
                }
            }
            other => other.and_then(|r| r),
        }
    }

    fn active_turn(&self, turn_id: &str) -> DaemonResult<()> {
        match &self.record.active_turn {
            Some(active) if active == turn_id => Ok(()),
            _ => Err(DaemonError::Conflict(format!(
                "turn {turn_id} is not the active turn of session {}",
                self.record.id
            ))),
        }
    }

    async fn patch(&mut self, patch: PatchSessionRequest) -> DaemonResult<SessionView> {
        if let Some(title) = &patch.title {
            if title.trim().is_empty() || title.len() > MAX_TITLE_BYTES {
                return Err(DaemonError::BadRequest(format!("title must be 1 to {MAX_TITLE_BYTES} bytes")));
            }
        }
        if patch.draft.as_ref().is_some_and(|d| d.len() > MAX_DRAFT_BYTES) {
            return Err(DaemonError::BadRequest(format!("draft must be at most {MAX_DRAFT_BYTES} bytes")));
        }
        if patch.policy == Some(Policy::PlanOnly) {
            let r = &self.record;
            if let Some(refusal) = crate::providers::plan_only_refusal(&self.ctx, &r.provider, r.sandbox, r.network) {
                return Err(refusal);
            }
        }
        if patch.archived == Some(true) && self.record.active_turn.is_some() {
            return Err(DaemonError::Conflict("the session has an active turn; interrupt it before archiving".into()));
        }
        if let Some(title) = patch.title {
            self.record.title = title;
        }
        if let Some(draft) = patch.draft {
            self.record.draft = draft;
        }
        if let Some(policy) = patch.policy {
            self.record.policy = policy;
        }
        if let Some(archived) = patch.archived {
            self.record.archived = archived;
        }
        self.save(Batch::by(Owner::Session)).await?;
        Ok(self.record.view())
    }

    async fn start_turn(&mut self, myself: &ActorRef<SessionMsg>, text: String) -> DaemonResult<String> {
        if self.record.archived {
            return Err(DaemonError::Conflict("the session is archived; unarchive it to start a turn".into()));
        }
        if let Some(active) = &self.record.active_turn {
            return Err(DaemonError::Busy { session_id: self.record.id.clone(), turn_id: active.clone() });
        }
        if text.trim().is_empty() || text.len() > MAX_TURN_TEXT_BYTES {
            return Err(DaemonError::BadRequest(format!("text must be 1 to {MAX_TURN_TEXT_BYTES} bytes")));
        }
        if self.record.policy == Policy::PlanOnly {
            let r = &self.record;
            if let Some(refusal) = crate::providers::plan_only_refusal(&self.ctx, &r.provider, r.sandbox, r.network) {
                return Err(refusal);
            }
        }
        self.ensure_provider(myself).await?;
        let number = self.record.turn_count + 1;
        let id = new_id("t_");
        self.record.turn_count = number;
        self.record.active_turn = Some(id.clone());
        self.save(Batch::by(Owner::Session)).await?;
        // The turn actor records the turn itself (`turn:started`): from its
        // first write to its end, it alone writes the turn's records.
        if let Err(e) = self.start_turn_actor(myself, number, TurnStart::New { id: id.clone(), text }).await {
            self.record.turn_count = number - 1;
            self.record.active_turn = None;
            self.save(Batch::by(Owner::Session)).await?;
            return Err(e);
        }
        tracing::info!(session_id = %self.record.id, turn_id = %id, "turn started");
        Ok(id)
    }

    async fn ensure_provider(&mut self, myself: &ActorRef<SessionMsg>) -> DaemonResult<()> {
        let name = names::provider(&self.record.id);
        if self.sup.child(&name).is_some() {
            return Ok(());
        }
        let ctx = self.ctx.clone();
        let session_id = self.record.id.clone();
        let provider = self.record.provider.clone();
        let spec =
            ChildSpec::for_actor(name, Restart::Permanent, Shutdown::Timeout(Duration::from_secs(5)), move || {
                (
                    ProviderWorker,
                    ProviderArgs { ctx: ctx.clone(), session_id: session_id.clone(), provider: provider.clone() },
                )
            });
        self.sup
            .start_child(spec, &myself.get_cell())
            .await
            .map_err(|e| DaemonError::Unavailable(format!("provider {} could not start: {e}", self.record.provider)))?;
        Ok(())
    }

    async fn start_turn_actor(
        &mut self,
        myself: &ActorRef<SessionMsg>,
        number: u64,
        start: TurnStart,
    ) -> DaemonResult<()> {
        let ctx = self.ctx.clone();
        let session_id = self.record.id.clone();
        // Transient: restarted if it fails; a turn that ends stops it normally.
        let spec = ChildSpec::for_actor(
            names::turn(&self.record.id),
            Restart::Transient,
            Shutdown::Timeout(Duration::from_secs(5)),
            move || {
                let args = TurnArgs { ctx: ctx.clone(), session_id: session_id.clone(), number, start: start.clone() };
                (TurnActor, args)
            },
        );
        self.sup
            .start_child(spec, &myself.get_cell())
            .await
            .map_err(|e| DaemonError::Internal(format!("turn actor could not start: {e}")))?;
        Ok(())
    }

    /// After a restart (of this actor or of the daemon): a turn that was under
    /// way is picked up again by a new turn actor, which resumes or fails it.
    async fn recover_active_turn(&mut self, myself: &ActorRef<SessionMsg>) -> Result<(), ActorProcessingErr> {
        let Some(turn_id) = self.record.active_turn.clone() else { return Ok(()) };
        let number = self.record.turn_count;
        let turn = self.ctx.store.get::<TurnRecord>(&TurnRecord::key_for(&self.record.id, number))?;
        match turn {
            Some(turn) if turn.id == turn_id && !turn.status.is_final() => {
                tracing::info!(session_id = %self.record.id, turn_id = %turn_id, status = %turn.status, "recovering the active turn");
                let start = match self.ensure_provider(myself).await {
                    Ok(()) => TurnStart::Recorded,
                    // The turn actor ends it, as the writer of its records.
                    Err(e) => TurnStart::Cut(format!("cut by a restart, and the provider could not start again: {e}")),
                };
                self.start_turn_actor(myself, number, start).await?;
            }
            Some(turn) => {
                // The turn ended but the session missed it.
                self.record.active_turn = None;
                self.record.awaiting_approval = false;
                if turn.id == turn_id {
                    self.record.usage.add(turn.usage);
                }
                self.save(Batch::by(Owner::Session)).await?;
            }
            None => {
                self.record.active_turn = None;
                self.record.awaiting_approval = false;
                self.save(Batch::by(Owner::Session)).await?;
            }
        }
        Ok(())
    }

    /// The `approval:resolved` events of a deleted session's turn's pending
    /// approvals, cancelled by the daemon. Only the events: the records go
    /// with the session.
    fn cancelled_approvals(&self, turn: &TurnRecord) -> DaemonResult<Vec<NewEvent>> {
        let now = bosun_proto::now_ts();
        let mut events = Vec::new();
        for id in &turn.approvals {
            if let Some(mut a) = self.ctx.store.get::<ApprovalRecord>(id)? {
                if let Some(cancelled) = a.cancel_by_daemon(&now) {
                    events.push(self.event(cancelled));
                }
            }
        }
        Ok(events)
    }

    async fn decide(&mut self, approval_id: String, decision: Decision) -> DaemonResult<ApprovalView> {
        let approval = self
            .ctx
            .store
            .get::<ApprovalRecord>(&approval_id)?
            .filter(|a| a.session_id == self.record.id)
            .ok_or_else(|| DaemonError::NotFound(format!("approval {approval_id} not found")))?;
        if self.record.active_turn.as_deref() == Some(approval.turn_id.as_str()) {
            let id = approval_id.clone();
            let name = names::turn(&self.record.id);
            match crate::route::call::<TurnMsg, _, _>(&name, |p| TurnMsg::Decide(id, decision, p)).await {
                // The turn actor stopped before answering: the turn may have just
                // ended, in which case the record now says how it was settled.
                Err(DaemonError::Unavailable(reason)) => {
                    let settled = self
                        .ctx
                        .store
                        .get::<ApprovalRecord>(&approval_id)?
                        .filter(|a| a.status != ApprovalStatus::Pending);
                    return match settled {
                        Some(approval) => settle_again(&approval, decision),
                        None => Err(DaemonError::Unavailable(reason)),
                    };
                }
                other => return other.and_then(|r| r),
            }
        }
        settle_again(&approval, decision)
    }

    /// Deletes the session: its turn and provider stop first, so nothing
    /// else writes its records while they go (the session may delete its
    /// children's records, see `bosun_state::Owner`).
    async fn close(&mut self) -> DaemonResult<()> {
        self.sup.shutdown().await;
        let mut batch = Batch::by(Owner::Session);
        if let Some(turn_id) = self.record.active_turn.clone() {
            let key = TurnRecord::key_for(&self.record.id, self.record.turn_count);
            if let Some(mut turn) =
                self.ctx.store.get::<TurnRecord>(&key)?.filter(|t| t.id == turn_id && !t.status.is_final())
            {
                for event in self.cancelled_approvals(&turn)? {
                    batch.event(event);
                }
                // Announced as it ends; the record itself is deleted below.
                turn.status = TurnStatus::Interrupted;
                turn.reason = Some("the session was deleted".into());
                turn.ended_at = Some(bosun_proto::now_ts());
                batch.event(self.event(turn.completed_event()));
            }
        }
        for turn in self.ctx.store.scan_prefix::<TurnRecord>(&TurnRecord::prefix_for(&self.record.id))? {
            for approval in &turn.approvals {
                batch.delete::<ApprovalRecord>(approval);
            }
            let key = bosun_state::Record::key(&turn);
            batch.delete::<TurnProgress>(&key);
            batch.delete::<TurnRecord>(&key);
        }
        batch.delete::<SessionRecord>(&self.record.id);
        batch.delete::<bosun_state::AgentBinding>(&self.record.id);
        let closed = events::SessionClosed { session_id: self.record.id.clone().into() };
        batch.event(self.event(EventData::SessionClosed(closed)));
        self.ctx.store.commit(batch).await?;
        self.closed = true;
        tracing::info!(session_id = %self.record.id, "session closed");
        Ok(())
    }

    /// The provider worker actor died: say so to clients before it is restarted.
    async fn provider_crashed(&mut self, error: &str) {
        let mut batch = Batch::new();
        batch.event(self.event(EventData::ProviderStatus(events::ProviderStatusEvent {
            provider: self.record.provider.clone(),
            kind: None,
            status: events::ProviderStatusKind::Restarting { reason: error.to_string() },
        })));
        if let Err(e) = self.ctx.store.commit(batch).await {
            tracing::error!(session_id = %self.record.id, error = %e, "could not record a provider crash");
        }
    }
}
