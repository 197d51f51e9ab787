//! The turn actor: one per active turn, named by its session. It is the only
//! writer of its turn's record, events and approvals, and it is where the
//! session's approval policy is enforced.
//!
//! Every agent event it takes in is persisted (with the turn's new checkpoint)
//! before anything else happens, so a restart of this actor, of the provider
//! worker or of the whole daemon resumes from exactly what clients have seen.

use crate::context::{derived_id, Context};
use crate::diagnostics;
use crate::error::{DaemonError, DaemonResult};
use crate::names;
use crate::provider::{ProviderMsg, RunAck};
use crate::session::SessionMsg;
use bosun_driver::{AgentEvent, Asked, TurnControl, TurnInput, TurnOutcome};
use bosun_proto::{
    events, Action, ActionApproval, ApprovalId, ApprovalStatus, ApprovalView, ChunkKind, DecidedBy, Decision,
    EventData, NewEvent, Policy, Topic, TurnId, TurnStatus,
};
use bosun_state::{ApprovalRecord, Batch, Owner, SessionRecord, TurnProgress, TurnRecord};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::oneshot;

/// How long a turn waits before asking a restarting provider worker again.
const PROVIDER_RETRY: Duration = Duration::from_secs(2);

/// How long an interrupted provider gets to stop before the turn is ended anyway.
const INTERRUPT_GRACE: Duration = Duration::from_secs(3);

pub struct TurnActor;

pub struct TurnArgs {
    pub ctx: Context,
    pub session_id: String,
    /// The turn's number in its session: the key of its record.
    pub number: u64,
    pub start: TurnStart,
}

/// How a turn actor finds its turn.
#[derive(Debug, Clone)]
pub enum TurnStart {
    /// The session has just started it: the actor records it (the turn's
    /// record and `turn:started`) unless a first incarnation already did.
    New { id: String, text: String },
    /// It is on record: pick it up where it is (after a restart).
    Recorded,
    /// It is on record but cannot run any more: end it, failed, with this
    /// reason.
    Cut(String),
}

pub struct TurnState {
    ctx: Context,
    record: TurnRecord,
    /// Written with every chunk; `record` only when the turn's status changes.
    progress: TurnProgress,
    /// The position from which a replay was last asked for, so events that
    /// arrive ahead of it do not ask again and again.
    replay_asked: Option<u64>,
    cwd: PathBuf,
    topic: Topic,
    /// The session's provider, named in a policy violation.
    provider: String,
    /// Why the turn must end at once, failed ([`TurnStart::Cut`]).
    cut: Option<String>,
    /// When an interrupt was asked for, for its latency (lost with a
    /// restart of this actor: the measure is of this actor's interrupts).
    interrupt_asked: Option<std::time::Instant>,
    _alive: crate::metrics::Alive,
}

/// An action the agent reports done that nothing allowed, in a plan-only
/// session.
struct Violation {
    /// What it did, in words.
    what: String,
    action: Action,
}

pub enum TurnMsg {
    /// The turn's events numbered `first`, `first + 1`, ... from the provider
    /// worker; `done` is answered once they are persisted.
    Agent {
        first: u64,
        events: Vec<AgentEvent>,
        done: oneshot::Sender<()>,
    },
    Interrupt(RpcReplyPort<DaemonResult<()>>),
    Steer(String, RpcReplyPort<DaemonResult<()>>),
    Decide(String, Decision, RpcReplyPort<DaemonResult<ApprovalView>>),
    /// The provider worker was restarted: the turn must be resumed on it, or failed.
    ProviderRestarted,
    InterruptTimeout,
    Crash,
}

impl Actor for TurnActor {
    type Msg = TurnMsg;
    type State = TurnState;
    type Arguments = TurnArgs;

    async fn pre_start(&self, _myself: ActorRef<TurnMsg>, args: TurnArgs) -> Result<TurnState, ActorProcessingErr> {
        crate::heap::on_heap(async move {
            let key = TurnRecord::key_for(&args.session_id, args.number);
            let record = match (args.ctx.store.get::<TurnRecord>(&key)?, &args.start) {
                (Some(record), _) => record,
                (None, TurnStart::New { id, text }) => record_new_turn(&args, id, text).await?,
                (None, _) => return Err(format!("turn record {key} is missing").into()),
            };
            let session = args
                .ctx
                .store
                .get::<SessionRecord>(&args.session_id)?
                .ok_or_else(|| format!("session {} is missing", args.session_id))?;
            let progress = args
                .ctx
                .store
                .get::<TurnProgress>(&key)?
                .unwrap_or_else(|| TurnProgress::start(&args.session_id, args.number));
            Ok(TurnState {
                topic: Topic::session(&args.session_id),
                cwd: PathBuf::from(session.cwd),
                provider: session.provider,
                record,
                progress,
                replay_asked: None,
                interrupt_asked: None,
                _alive: crate::metrics::Alive::new(&args.ctx.metrics.turns),
                cut: match args.start {
                    TurnStart::Cut(reason) => Some(reason),
                    _ => None,
                },
                ctx: args.ctx,
            })
        })
        .await
    }

    async fn post_start(&self, myself: ActorRef<TurnMsg>, state: &mut TurnState) -> Result<(), ActorProcessingErr> {
        crate::heap::on_heap(async move {
            if state.record.status.is_final() {
                // Ended before a crash could tell the session; let the session catch up.
                state.notify_session_ended();
                myself.stop(None);
                return Ok(());
            }
            if let Some(reason) = state.cut.take() {
                state.record.cut = true;
                return state.finish(&myself, TurnStatus::Failed, Some(reason)).await;
            }
            state.run_on_provider(&myself).await
        })
        .await
    }

    async fn handle(
        &self,
        myself: ActorRef<TurnMsg>,
        msg: TurnMsg,
        state: &mut TurnState,
    ) -> Result<(), ActorProcessingErr> {
        crate::heap::on_heap(async move {
            if state.record.status.is_final() {
                // Only answers remain to be given once the turn has ended.
                match msg {
                    TurnMsg::Interrupt(reply) => drop(reply.send(Err(DaemonError::Conflict("the turn has ended".into())))),
                    TurnMsg::Steer(_, reply) => drop(reply.send(Err(DaemonError::Conflict("the turn has ended".into())))),
                    TurnMsg::Decide(id, decision, reply) => drop(reply.send(state.decide_after_end(&id, decision))),
                    _ => {}
                }
                return Ok(());
            }
            match msg {
                TurnMsg::Agent { first, events, done } => {
                    state.on_agent_events(&myself, first, events).await?;
                    let _ = done.send(());
                }
                TurnMsg::Interrupt(reply) => {
                    let result = state.interrupt(&myself).await;
                    let _ = reply.send(result);
                }
                TurnMsg::Steer(text, reply) => {
                    let result = state.steer(text).await;
                    let _ = reply.send(result);
                }
                TurnMsg::Decide(id, decision, reply) => {
                    let result = state.decide(&myself, &id, decision, DecidedBy::User).await;
                    let _ = reply.send(result);
                }
                TurnMsg::ProviderRestarted => state.run_on_provider(&myself).await?,
                TurnMsg::InterruptTimeout => {
                    tracing::warn!(session_id = %state.record.session_id, turn_id = %state.record.id, "provider did not stop in time; ending the turn");
                    state
                        .finish(
                            &myself,
                            TurnStatus::Interrupted,
                            Some("interrupted; the provider did not stop in time".into()),
                        )
                        .await?;
                }
                TurnMsg::Crash => {
                    if state.ctx.settings.fault_injection {
                        panic!("injected fault: turn {}", state.record.id);
                    }
                }
            }
            Ok(())
        })
        .await
    }
}

/// Writes a turn the session has just started: its record and
/// `turn:started`, in one commit.
async fn record_new_turn(args: &TurnArgs, id: &str, text: &str) -> Result<TurnRecord, ActorProcessingErr> {
    let record = TurnRecord {
        id: id.to_string(),
        session_id: args.session_id.clone(),
        number: args.number,
        text: text.to_string(),
        steers: vec![],
        status: TurnStatus::Started,
        reason: None,
        usage: bosun_proto::Usage::default(),
        approvals: vec![],
        started_at: bosun_proto::now_ts(),
        ended_at: None,
        result: None,
        cut: false,
    };
    let mut batch = Batch::by(Owner::Turn);
    batch.put(&record)?;
    let started = events::TurnStarted {
        turn_id: record.id.clone().into(),
        number: record.number,
        text: record.text.clone(),
        status: TurnStatus::Started,
    };
    batch.event(EventData::TurnStarted(started).into_event(Topic::session(&args.session_id)));
    args.ctx.store.commit(batch).await?;
    Ok(record)
}

impl TurnState {
    fn session_id(&self) -> &str {
        &self.record.session_id
    }

    /// Starts the turn on the provider worker, resumes it there after a crash,
    /// or re-attaches to it if it kept running while this actor restarted.
    async fn run_on_provider(&mut self, myself: &ActorRef<TurnMsg>) -> Result<(), ActorProcessingErr> {
        let fresh = self.record.status == TurnStatus::Started && self.progress.events_seen == 0;
        let input = TurnInput {
            session_id: self.record.session_id.clone(),
            turn_id: self.record.id.clone(),
            text: self.record.text.clone(),
            cwd: self.cwd.clone(),
            policy: self.policy()?,
            resume: if fresh { None } else { self.progress.checkpoint.clone() },
        };
        let delivered = self.progress.events_seen;
        let name = names::provider(self.session_id());
        let answer =
            crate::route::call::<ProviderMsg, _, _>(&name, |reply| ProviderMsg::RunTurn { input, delivered, reply })
                .await;
        match answer {
            Ok(Ok(RunAck::Restarting)) => {
                // The session tells us when the new worker is up; asking
                // again later as well covers a restart that came too early
                // for the session to see this turn.
                tracing::info!(session_id = %self.record.session_id, turn_id = %self.record.id, "provider restarting; the turn waits for it");
                myself.send_after(PROVIDER_RETRY, || TurnMsg::ProviderRestarted);
                Ok(())
            }
            Ok(Ok(ack)) => {
                tracing::info!(session_id = %self.record.session_id, turn_id = %self.record.id, ?ack, "turn on provider");
                if self.record.status == TurnStatus::Started {
                    self.set_status(TurnStatus::Running).await?;
                } else if ack == RunAck::Started && !fresh {
                    self.notice("resumed after a restart").await?;
                }
                Ok(())
            }
            Ok(Err(reason)) => {
                let reason = format!("the turn was cut by a crash and cannot be resumed: {reason}");
                self.record.cut = true;
                self.finish(myself, TurnStatus::Failed, Some(reason)).await
            }
            Err(e) => self.finish(myself, TurnStatus::Failed, Some(format!("the provider is unavailable: {e}"))).await,
        }
    }

    /// Takes in the events `first`, `first + 1`, ... of the turn, in order.
    /// Streamed output (chunks, tool and plan updates, usage, logs) is
    /// persisted in one commit with the turn's progress; an approval request
    /// or the turn's end is handled on its own, after what came before it is
    /// on disk.
    async fn on_agent_events(
        &mut self,
        myself: &ActorRef<TurnMsg>,
        first: u64,
        events: Vec<AgentEvent>,
    ) -> Result<(), ActorProcessingErr> {
        let mut pending = Batch::by(Owner::Turn);
        let mut dirty = false;
        for (offset, event) in events.into_iter().enumerate() {
            let no = first + offset as u64;
            let seen = self.progress.events_seen;
            if no <= seen {
                continue; // a replay of what is already persisted
            }
            if no > seen + 1 {
                // Events before this one went down with an earlier
                // incarnation's mailbox, and the worker's forwarder sent this
                // one before it heard where to replay from. Take events
                // strictly in order: drop it, and ask for the replay once for
                // this position.
                self.commit_pending(&mut pending, &mut dirty).await?;
                if self.replay_asked != Some(seen) {
                    self.replay_asked = Some(seen);
                    tracing::info!(session_id = %self.record.session_id, turn_id = %self.record.id, no, seen, "agent events ahead of the record; asking for a replay");
                    return self.run_on_provider(myself).await;
                }
                return Ok(());
            }
            match event {
                AgentEvent::ApprovalRequest { request_id, action, checkpoint } => {
                    // Everything before it is on disk first, with the
                    // progress that does not count it yet.
                    self.commit_pending(&mut pending, &mut dirty).await?;
                    self.progress.events_seen = no;
                    if checkpoint.is_some() {
                        self.progress.checkpoint = checkpoint;
                    }
                    self.on_approval_request(request_id, action).await?;
                }
                event @ (AgentEvent::CommandRan { .. } | AgentEvent::FileChanged { .. }) => {
                    self.progress.events_seen = no;
                    dirty = true;
                    if let Some(violation) = self.audit_into(&mut pending, event)? {
                        return self.violated(myself, pending, violation).await;
                    }
                }
                AgentEvent::Finished(outcome) => {
                    self.commit_pending(&mut pending, &mut dirty).await?;
                    self.progress.events_seen = no;
                    let (status, reason) = match outcome {
                        TurnOutcome::Completed => (TurnStatus::Completed, None),
                        TurnOutcome::Interrupted => (TurnStatus::Interrupted, None),
                        TurnOutcome::Failed(reason) => (TurnStatus::Failed, Some(reason)),
                        TurnOutcome::Cut(reason) => {
                            self.record.cut = true;
                            (TurnStatus::Failed, Some(reason))
                        }
                    };
                    return self.finish(myself, status, reason).await;
                }
                streamed => {
                    self.progress.events_seen = no;
                    self.stream_into(&mut pending, streamed)?;
                    dirty = true;
                }
            }
        }
        self.commit_pending(&mut pending, &mut dirty).await
    }

    /// Adds a streamed agent event (anything but an approval request or the
    /// end) to `batch`.
    fn stream_into(&mut self, batch: &mut Batch, event: AgentEvent) -> Result<(), ActorProcessingErr> {
        let turn_id = self.turn_id();
        match event {
            AgentEvent::Chunk { kind, text, checkpoint } => {
                if checkpoint.is_some() {
                    self.progress.checkpoint = checkpoint;
                }
                self.chunk_into(batch, kind, text);
            }
            AgentEvent::ToolCall(tool) => {
                batch.event(self.event(EventData::ToolCall(events::ToolCallEvent { turn_id, tool })));
            }
            AgentEvent::ToolUpdate(update) => {
                batch.event(self.event(EventData::ToolUpdate(events::ToolUpdateEvent {
                    turn_id,
                    tool_id: update.id,
                    status: update.status,
                    title: update.title,
                    output: update.output,
                    detail: update.detail,
                })));
            }
            AgentEvent::Plan(entries) => {
                batch.event(self.event(EventData::PlanUpdate(events::PlanUpdate { turn_id, entries })));
            }
            AgentEvent::Usage(usage) => {
                self.record.usage = usage;
                batch.put(&self.record)?;
                batch.event(self.event(EventData::UsageUpdate(events::UsageUpdate { turn_id, usage })));
            }
            AgentEvent::Result(result) => {
                // Kept with the record, shown by turn:completed at the end.
                self.record.result = Some(result);
                batch.put(&self.record)?;
            }
            AgentEvent::Log { level, message } => {
                diagnostics::report(level, Some(self.session_id()), Some(turn_id.as_str()), message);
            }
            AgentEvent::ApprovalRequest { .. }
            | AgentEvent::Finished(_)
            | AgentEvent::CommandRan { .. }
            | AgentEvent::FileChanged { .. } => {
                return Err("stream_into takes streamed events only".into());
            }
        }
        Ok(())
    }

    /// The session's policy now.
    fn policy(&self) -> Result<Policy, ActorProcessingErr> {
        Ok(self.ctx.store.get::<SessionRecord>(self.session_id())?.map(|s| s.policy).unwrap_or(Policy::PlanOnly))
    }

    /// What allowed an action the driver reports, by the daemon's own
    /// record: the approval must exist and have been accepted.
    fn approval_of(&self, asked: &Asked) -> Result<(ActionApproval, Option<ApprovalId>), ActorProcessingErr> {
        Ok(match asked {
            Asked::Request { turn_id, request_id } => {
                let id = derived_id("a_", &[turn_id, request_id]);
                match self.ctx.store.get::<ApprovalRecord>(&id)? {
                    Some(a) if a.status == ApprovalStatus::Accepted && a.decided_by == Some(DecidedBy::Policy) => {
                        (ActionApproval::Policy, Some(id.into()))
                    }
                    Some(a) if a.status == ApprovalStatus::Accepted => (ActionApproval::User, Some(id.into())),
                    // Asked, and not accepted: the agent went ahead anyway.
                    Some(_) => (ActionApproval::Unapproved, Some(id.into())),
                    None => (ActionApproval::Unapproved, None),
                }
            }
            Asked::AgentSafeList => (ActionApproval::AgentSafeList, None),
            Asked::NotAsked => (ActionApproval::Unapproved, None),
        })
    }

    /// Adds the audit record of a command run or a file change to `batch`,
    /// with what allowed it; in a plan-only session, an action nothing
    /// allowed is a violation.
    fn audit_into(&mut self, batch: &mut Batch, event: AgentEvent) -> Result<Option<Violation>, ActorProcessingErr> {
        let turn_id = self.turn_id();
        let (what, action, approval) = match event {
            AgentEvent::CommandRan { mut run, asked } => {
                let (approval, approval_id) = self.approval_of(&asked)?;
                run.approval = Some(approval);
                run.approval_id = approval_id;
                let action = Action::Command { command: run.command.clone(), cwd: run.cwd.clone() };
                let what = format!("ran `{}` in {}", run.command, run.cwd);
                batch.event(self.event(EventData::CommandRan(events::CommandRan { turn_id, command: run })));
                (what, action, approval)
            }
            AgentEvent::FileChanged { path, summary, asked } => {
                let (approval, approval_id) = self.approval_of(&asked)?;
                batch.event(self.event(EventData::FileChanged(events::FileChanged {
                    turn_id,
                    path: path.clone(),
                    summary: summary.clone(),
                    approval,
                    approval_id,
                })));
                let what = format!("changed {path} ({summary})");
                (what, Action::FileChange { path, summary }, approval)
            }
            _ => return Err("audit_into takes command runs and file changes only".into()),
        };
        if approval == ActionApproval::Unapproved && self.policy()? == Policy::PlanOnly {
            return Ok(Some(Violation { what, action }));
        }
        Ok(None)
    }

    /// The agent acted without an approval in a plan-only session: record
    /// the violation with what led to it, mark the provider unverified (so
    /// no new plan-only session starts on it), stop the agent and end the
    /// turn.
    async fn violated(
        &mut self,
        myself: &ActorRef<TurnMsg>,
        mut batch: Batch,
        violation: Violation,
    ) -> Result<(), ActorProcessingErr> {
        tracing::warn!(subsystem = "approval-policy", session_id = %self.record.session_id, turn_id = %self.record.id, provider = %self.provider, what = %violation.what, "policy violation");
        batch.event(self.event(EventData::PolicyViolation(events::PolicyViolation {
            turn_id: self.turn_id(),
            provider: self.provider.clone(),
            action: violation.action.clone(),
            what: violation.what.clone(),
            policy: Policy::PlanOnly,
        })));
        batch.put(&self.progress)?;
        self.ctx.store.commit(batch).await?;
        let (provider, session_id, turn_id, what) =
            (self.provider.clone(), self.record.session_id.clone(), self.record.id.clone(), violation.what.clone());
        let marked = crate::route::call::<crate::providers::ProvidersMsg, _, _>(crate::names::PROVIDERS, |reply| {
            crate::providers::ProvidersMsg::Violation { provider, session_id, turn_id, what, reply }
        })
        .await;
        if let Err(e) = marked {
            tracing::error!(provider = %self.provider, error = %e, "could not mark the provider unverified");
        }
        crate::route::send(
            &names::session(self.session_id()),
            SessionMsg::Violation { turn_id: self.record.id.clone(), what: violation.what.clone() },
        );
        self.control(TurnControl::Interrupt);
        let reason = format!(
            "stopped: the agent {} without an approval in a plan-only session; provider {} is now unverified",
            violation.what, self.provider
        );
        self.finish(myself, TurnStatus::Failed, Some(reason)).await
    }

    /// Commits what `stream_into` gathered, with the turn's progress.
    async fn commit_pending(&mut self, pending: &mut Batch, dirty: &mut bool) -> Result<(), ActorProcessingErr> {
        if !std::mem::take(dirty) {
            return Ok(());
        }
        let mut batch = std::mem::replace(pending, Batch::by(Owner::Turn));
        batch.put(&self.progress)?;
        self.ctx.store.commit(batch).await?;
        Ok(())
    }

    async fn on_approval_request(&mut self, request_id: String, action: Action) -> Result<(), ActorProcessingErr> {
        let id = derived_id("a_", &[&self.record.id, &request_id]);
        if let Some(existing) = self.ctx.store.get::<ApprovalRecord>(&id)? {
            // A resumed provider asks again: answer from the record.
            let mut batch = Batch::by(Owner::Turn);
            batch.put(&self.progress)?;
            self.ctx.store.commit(batch).await?;
            match existing.status {
                ApprovalStatus::Pending => self.set_status(TurnStatus::AwaitingApproval).await?,
                ApprovalStatus::Accepted => self.send_decision(&request_id, Decision::Accept),
                ApprovalStatus::Declined => self.send_decision(&request_id, Decision::Decline),
                ApprovalStatus::Cancelled => self.send_decision(&request_id, Decision::Cancel),
            }
            return Ok(());
        }
        let policy =
            self.ctx.store.get::<SessionRecord>(self.session_id())?.map(|s| s.policy).unwrap_or(Policy::PlanOnly);
        let now = bosun_proto::now_ts();
        let mut approval = ApprovalRecord {
            id: id.clone(),
            session_id: self.record.session_id.clone(),
            turn_id: self.record.id.clone(),
            request_id: request_id.clone(),
            action,
            status: ApprovalStatus::Pending,
            decided_by: None,
            requested_at: now.clone(),
            decided_at: None,
        };
        self.record.approvals.push(id.clone());
        let mut batch = Batch::by(Owner::Turn);
        batch.event(
            self.event(EventData::ApprovalRequested(events::ApprovalRequested { approval: approval.view(), policy })),
        );
        match policy {
            Policy::FullAccess => {
                // Accepted by the daemon, and still on record for audit.
                approval.status = ApprovalStatus::Accepted;
                approval.decided_by = Some(DecidedBy::Policy);
                approval.decided_at = Some(now);
                batch.event(self.event(approval.resolved_event(true)));
                batch.put(&approval)?.put(&self.record)?.put(&self.progress)?;
                self.ctx.store.commit(batch).await?;
                self.observe_wait(&approval);
                tracing::info!(subsystem = "approval-policy", session_id = %self.record.session_id, turn_id = %self.record.id, approval_id = %id, "approval accepted by the full-access policy");
                self.send_decision(&request_id, Decision::Accept);
            }
            Policy::PlanOnly => {
                self.record.status = TurnStatus::AwaitingApproval;
                batch.event(self.event(EventData::TurnUpdate(events::TurnUpdate {
                    turn_id: self.turn_id(),
                    status: TurnStatus::AwaitingApproval,
                })));
                batch.put(&approval)?.put(&self.record)?.put(&self.progress)?;
                self.ctx.store.commit(batch).await?;
                self.notify_session_status();
                tracing::info!(subsystem = "approval-policy", session_id = %self.record.session_id, turn_id = %self.record.id, approval_id = %id, "awaiting approval");
            }
        }
        Ok(())
    }

    async fn decide(
        &mut self,
        myself: &ActorRef<TurnMsg>,
        approval_id: &str,
        decision: Decision,
        by: DecidedBy,
    ) -> DaemonResult<ApprovalView> {
        let mut approval = self
            .ctx
            .store
            .get::<ApprovalRecord>(approval_id)?
            .filter(|a| a.turn_id == self.record.id)
            .ok_or_else(|| DaemonError::NotFound(format!("approval {approval_id} not found")))?;
        let wanted = decision.resulting_status();
        if approval.status == wanted {
            return Ok(approval.view()); // the same decision again: nothing to do
        }
        if approval.status != ApprovalStatus::Pending {
            return Err(DaemonError::Conflict(format!("approval {approval_id} is already {}", approval.status)));
        }
        approval.status = wanted;
        approval.decided_by = Some(by);
        approval.decided_at = Some(bosun_proto::now_ts());
        let still_waiting = self.pending_approvals(Some(approval_id))?;
        let mut batch = Batch::by(Owner::Turn);
        batch.put(&approval)?;
        batch.event(self.event(approval.resolved_event(false)));
        if !still_waiting && self.record.status == TurnStatus::AwaitingApproval {
            self.record.status = TurnStatus::Running;
            batch.event(self.event(EventData::TurnUpdate(events::TurnUpdate {
                turn_id: self.turn_id(),
                status: TurnStatus::Running,
            })));
        }
        batch.put(&self.record)?;
        self.ctx.store.commit(batch).await?;
        self.observe_wait(&approval);
        tracing::info!(subsystem = "approval-policy", session_id = %self.record.session_id, turn_id = %self.record.id, approval_id = %approval.id, status = %approval.status, decided_by = %by, "approval decided");
        self.notify_session_status();
        self.send_decision(&approval.request_id, decision);
        if decision == Decision::Cancel {
            // The driver stops the turn on a cancel; if it does not in time, end it here.
            myself.send_after(INTERRUPT_GRACE, || TurnMsg::InterruptTimeout);
        }
        tracing::info!(session_id = %self.record.session_id, turn_id = %self.record.id, approval_id, %decision, "approval decided");
        Ok(approval.view())
    }

    /// A decision arriving after the turn ended: idempotent for the same
    /// answer, a conflict otherwise (the approval was cancelled or decided).
    fn decide_after_end(&self, approval_id: &str, decision: Decision) -> DaemonResult<ApprovalView> {
        let approval = self
            .ctx
            .store
            .get::<ApprovalRecord>(approval_id)?
            .ok_or_else(|| DaemonError::NotFound(format!("approval {approval_id} not found")))?;
        if approval.status == decision.resulting_status() {
            Ok(approval.view())
        } else {
            Err(DaemonError::Conflict(format!("approval {approval_id} is already {}", approval.status)))
        }
    }

    /// Whether any approval of this turn other than `except` is still pending.
    fn pending_approvals(&self, except: Option<&str>) -> DaemonResult<bool> {
        for id in &self.record.approvals {
            if Some(id.as_str()) == except {
                continue;
            }
            if let Some(a) = self.ctx.store.get::<ApprovalRecord>(id)? {
                if a.status == ApprovalStatus::Pending {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    fn send_decision(&self, request_id: &str, decision: Decision) {
        self.control(TurnControl::Decision { request_id: request_id.to_string(), decision });
    }

    /// Sends a control to the provider; false if the worker is not there.
    fn control(&self, control: TurnControl) -> bool {
        crate::route::send(
            &names::provider(self.session_id()),
            ProviderMsg::Control { turn_id: self.record.id.clone(), control },
        )
    }

    async fn interrupt(&mut self, myself: &ActorRef<TurnMsg>) -> DaemonResult<()> {
        tracing::info!(session_id = %self.record.session_id, turn_id = %self.record.id, "interrupt requested");
        // The first ask: a repeated interrupt does not restart the clock.
        self.interrupt_asked.get_or_insert_with(std::time::Instant::now);
        if self.control(TurnControl::Interrupt) {
            myself.send_after(INTERRUPT_GRACE, || TurnMsg::InterruptTimeout);
            Ok(())
        } else {
            self.finish(myself, TurnStatus::Interrupted, Some("interrupted while the provider was restarting".into()))
                .await
                .map_err(|e| DaemonError::Internal(e.to_string()))
        }
    }

    async fn steer(&mut self, text: String) -> DaemonResult<()> {
        self.record.steers.push(text.clone());
        let mut batch = Batch::by(Owner::Turn);
        batch.put(&self.record)?;
        batch
            .event(self.event(EventData::TurnSteer(events::TurnSteer { turn_id: self.turn_id(), text: text.clone() })));
        self.ctx.store.commit(batch).await?;
        if !self.control(TurnControl::Steer(text)) {
            return Err(DaemonError::Unavailable("the provider is restarting; steer again shortly".into()));
        }
        Ok(())
    }

    async fn set_status(&mut self, status: TurnStatus) -> Result<(), ActorProcessingErr> {
        if self.record.status == status {
            return Ok(());
        }
        self.record.status = status;
        let mut batch = Batch::by(Owner::Turn);
        batch.put(&self.record)?;
        batch.event(self.event(EventData::TurnUpdate(events::TurnUpdate { turn_id: self.turn_id(), status })));
        self.ctx.store.commit(batch).await?;
        self.notify_session_status();
        Ok(())
    }

    /// A daemon-side line in the turn's stream (e.g. "resumed after a restart").
    async fn notice(&mut self, text: &str) -> Result<(), ActorProcessingErr> {
        self.emit_chunk(ChunkKind::Notice, format!("[bosun] {text}\n")).await
    }

    /// Records the next `stream:chunk` of the turn with the turn's new state.
    async fn emit_chunk(&mut self, kind: ChunkKind, text: String) -> Result<(), ActorProcessingErr> {
        let mut batch = Batch::by(Owner::Turn);
        self.chunk_into(&mut batch, kind, text);
        batch.put(&self.progress)?;
        self.ctx.store.commit(batch).await?;
        Ok(())
    }

    /// Adds the next `stream:chunk` of the turn to `batch`; the caller puts
    /// the progress (which counts it) in the same commit.
    fn chunk_into(&mut self, batch: &mut Batch, kind: ChunkKind, text: String) {
        let index = self.progress.chunks;
        self.progress.chunks += 1;
        batch.event(self.event(EventData::StreamChunk(events::StreamChunk {
            turn_id: self.turn_id(),
            index,
            kind,
            text,
        })));
    }

    /// Ends the turn: cancels what still waits, records the end, tells the
    /// provider and the session, and stops this actor.
    async fn finish(
        &mut self,
        myself: &ActorRef<TurnMsg>,
        status: TurnStatus,
        reason: Option<String>,
    ) -> Result<(), ActorProcessingErr> {
        let now = bosun_proto::now_ts();
        let mut batch = Batch::by(Owner::Turn);
        let mut cancelled_approvals = Vec::new();
        for id in self.record.approvals.clone() {
            if let Some(mut a) = self.ctx.store.get::<ApprovalRecord>(&id)? {
                if let Some(cancelled) = a.cancel_by_daemon(&now) {
                    batch.event(self.event(cancelled));
                    batch.put(&a)?;
                    cancelled_approvals.push(a);
                }
            }
        }
        self.record.status = status;
        self.record.reason = reason.clone();
        self.record.ended_at = Some(now);
        batch.put(&self.record)?.put(&self.progress)?;
        batch.event(self.event(EventData::StreamComplete(events::StreamComplete {
            turn_id: self.turn_id(),
            chunks: self.progress.chunks,
        })));
        batch.event(self.event(self.record.completed_event()));
        self.ctx.store.commit(batch).await?;
        for approval in &cancelled_approvals {
            self.observe_wait(approval);
        }
        let metrics = &self.ctx.metrics;
        metrics.turn_ended(&self.provider, &status.to_string(), self.record.usage);
        if let (TurnStatus::Interrupted, Some(asked)) = (status, self.interrupt_asked) {
            metrics.interrupt_latency.observe(asked.elapsed().as_secs_f64());
        }
        tracing::info!(session_id = %self.record.session_id, turn_id = %self.record.id, %status, reason = reason.as_deref().unwrap_or(""), "turn ended");
        crate::route::send(
            &names::provider(self.session_id()),
            ProviderMsg::TurnDone { turn_id: self.record.id.clone() },
        );
        self.notify_session_ended();
        myself.stop(None);
        Ok(())
    }

    /// An approval's wait, once its decision is committed.
    fn observe_wait(&self, approval: &ApprovalRecord) {
        let (Some(by), Some(decided_at)) = (approval.decided_by, approval.decided_at.as_deref()) else { return };
        self.ctx.metrics.observe_approval_wait(&by.to_string(), &approval.requested_at, decided_at);
    }

    fn notify_session_status(&self) {
        crate::route::send(
            &names::session(self.session_id()),
            SessionMsg::TurnStatus { turn_id: self.record.id.clone(), status: self.record.status },
        );
    }

    fn notify_session_ended(&self) {
        crate::route::send(
            &names::session(self.session_id()),
            SessionMsg::TurnEnded {
                turn_id: self.record.id.clone(),
                status: self.record.status,
                usage: self.record.usage,
            },
        );
    }

    fn turn_id(&self) -> TurnId {
        self.record.id.clone().into()
    }

    fn event(&self, data: EventData) -> NewEvent {
        data.into_event(self.topic.clone())
    }
}
