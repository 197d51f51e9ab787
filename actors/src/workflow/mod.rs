//! One workflow run's actor: it walks the run's steps through their states
//! (docs/WORKFLOWS.md), each change persisted with its event before anything
//! else happens, so a restart (of this actor or of the daemon) goes on from
//! the record with nothing done twice.
//!
//! The actor holds nothing the record does not: on every tick it looks at
//! the steps' sessions and turns in the store and moves each step on from
//! what it finds there (`advance`). Agent and shell steps are ordinary
//! sessions, made under ids derived from the run and the step, so making
//! one again after a crash finds the one made before; a step's turn is
//! started only if its session has not started it already.

mod steps;

use crate::context::Context;
use crate::error::{DaemonError, DaemonResult};
use bosun_proto::{ApprovalView, BudgetView, Decision, EventType, RunView, StepDecision};
use bosun_state::{Batch, GateRecord, Owner, WorkflowRunRecord};
use bosun_workflow::{Templates, Workflow};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often a run looks at its steps when no event wakes it: timeouts and
/// stalls are noticed within this.
const TICK: Duration = Duration::from_secs(1);

pub struct RunActor;

pub struct RunArgs {
    pub ctx: Context,
    pub run_id: String,
    /// The record of a run being started, which the actor writes first.
    pub new: Option<Arc<Mutex<Option<WorkflowRunRecord>>>>,
}

pub enum RunMsg {
    /// Look at the steps again (a timer, or an event of one of their sessions).
    Tick,
    /// A step's session is made and its turn started (or why not).
    Launched {
        label: String,
        result: Result<(), String>,
    },
    Cancel(RpcReplyPort<DaemonResult<RunView>>),
    Resume(RpcReplyPort<DaemonResult<RunView>>),
    Decide {
        step_id: String,
        index: Option<u64>,
        decision: StepDecision,
        reply: RpcReplyPort<DaemonResult<RunView>>,
    },
    Patch {
        budget: BudgetView,
        reply: RpcReplyPort<DaemonResult<RunView>>,
    },
    /// A decision on one of the run's gates, from the approvals API.
    DecideGate {
        approval_id: String,
        decision: Decision,
        reply: RpcReplyPort<DaemonResult<ApprovalView>>,
    },
    Crash,
}

pub struct RunState {
    ctx: Context,
    record: WorkflowRunRecord,
    workflow: Workflow,
    templates: Templates,
    /// Steps (by label) whose session is being made or turn started.
    launching: HashSet<String>,
    /// Per running step: the chunks its turn had, and when that last changed.
    progress: HashMap<String, (u64, Instant)>,
    /// The sessions of the run's steps, which the watcher wakes the run for.
    watched: Arc<Mutex<HashSet<String>>>,
    /// Set while a `Tick` is in the mailbox, so ticks do not pile up.
    tick_queued: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    _alive: crate::metrics::Alive,
}

impl Actor for RunActor {
    type Msg = RunMsg;
    type State = RunState;
    type Arguments = RunArgs;

    async fn pre_start(&self, _myself: ActorRef<RunMsg>, args: RunArgs) -> Result<RunState, ActorProcessingErr> {
        crate::heap::on_heap(async move {
            let record = match args.ctx.store.get::<WorkflowRunRecord>(&args.run_id)? {
                Some(record) => record,
                None => {
                    let new = args.new.as_ref().and_then(|cell| cell.lock().unwrap_or_else(|p| p.into_inner()).take());
                    let record = new.ok_or_else(|| format!("workflow run {} has no record", args.run_id))?;
                    let mut batch = Batch::by(Owner::Workflow);
                    batch.put(&record)?;
                    let started = bosun_proto::WorkflowStarted { run: record.view() };
                    batch.event(bosun_proto::EventData::WorkflowStarted(started).into_event(topic(&record.id)));
                    args.ctx.store.commit(batch).await?;
                    tracing::info!(run_id = %record.id, name = %record.name, "workflow run started");
                    record
                }
            };
            // A run follows the definition it started with. One that no
            // longer checks out (a provider taken out of the config) cannot go on.
            let workflow = match bosun_workflow::parse(&record.definition, &crate::workflows::known(&args.ctx)) {
                Ok(w) => w,
                Err(problems) => {
                    let mut state = RunState::new(args.ctx, record, empty_workflow());
                    if !state.record.state.is_final() {
                        let why = format!("the run's definition no longer validates here: {problems}");
                        state.fail_run(why).await?;
                    }
                    return Ok(state);
                }
            };
            let watched: HashSet<String> = record.steps.iter().filter_map(|s| s.session_id.clone()).collect();
            let state = RunState::new(args.ctx, record, workflow);
            state.watched.lock().unwrap_or_else(|p| p.into_inner()).extend(watched);
            Ok(state)
        })
        .await
    }

    async fn post_start(&self, myself: ActorRef<RunMsg>, state: &mut RunState) -> Result<(), ActorProcessingErr> {
        if state.record.state.is_final() {
            myself.stop(None);
            return Ok(());
        }
        state.tasks.push(tokio::spawn(watch(
            state.ctx.clone(),
            myself.clone(),
            state.watched.clone(),
            state.tick_queued.clone(),
        )));
        state.tasks.push(tokio::spawn(tick(myself.clone(), state.tick_queued.clone())));
        crate::heap::on_heap(state.advance(&myself)).await
    }

    async fn post_stop(&self, _myself: ActorRef<RunMsg>, state: &mut RunState) -> Result<(), ActorProcessingErr> {
        for task in state.tasks.drain(..) {
            task.abort();
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<RunMsg>,
        msg: RunMsg,
        state: &mut RunState,
    ) -> Result<(), ActorProcessingErr> {
        crate::heap::on_heap(async move {
            match msg {
                RunMsg::Tick => state.tick_queued.store(false, Ordering::Release),
                RunMsg::Launched { label, result } => {
                    state.launching.remove(&label);
                    if let Err(why) = result {
                        if let Some(i) = state.index_of(&label) {
                            state.step_failed(i, why, true).await?;
                        }
                    }
                }
                RunMsg::Cancel(reply) => {
                    let r = state.cancel().await;
                    let _ = reply.send(r);
                }
                RunMsg::Resume(reply) => {
                    let r = state.resume().await;
                    let _ = reply.send(r);
                }
                RunMsg::Decide { step_id, index, decision, reply } => {
                    let r = state.decide(&step_id, index, decision).await;
                    let _ = reply.send(r);
                }
                RunMsg::Patch { budget, reply } => {
                    let r = state.patch(budget).await;
                    let _ = reply.send(r);
                }
                RunMsg::DecideGate { approval_id, decision, reply } => {
                    let r = state.decide_gate(&approval_id, decision).await;
                    let _ = reply.send(r);
                }
                RunMsg::Crash => {
                    if state.ctx.settings.fault_injection {
                        panic!("injected fault: workflow run {}", state.record.id);
                    }
                }
            }
            state.advance(&myself).await
        })
        .await
    }
}

impl RunState {
    fn new(ctx: Context, record: WorkflowRunRecord, workflow: Workflow) -> RunState {
        RunState {
            _alive: crate::metrics::Alive::new(&ctx.metrics.workflow_runs),
            ctx,
            record,
            workflow,
            templates: Templates::new(),
            launching: HashSet::new(),
            progress: HashMap::new(),
            watched: Arc::new(Mutex::new(HashSet::new())),
            tick_queued: Arc::new(AtomicBool::new(false)),
            tasks: Vec::new(),
        }
    }

    fn index_of(&self, label: &str) -> Option<usize> {
        self.record.steps.iter().position(|s| s.label() == label)
    }

    /// Commits the run's record with `events` (and `gates`), in one batch:
    /// nothing about the run is published before it is on record.
    async fn save(&mut self, events: Vec<bosun_proto::EventData>, gates: &[GateRecord]) -> DaemonResult<()> {
        self.record.updated_at = bosun_proto::now_ts();
        let mut batch = Batch::by(Owner::Workflow);
        batch.put(&self.record)?;
        for gate in gates {
            batch.put(gate)?;
        }
        let topic = topic(&self.record.id);
        for event in events {
            batch.event(event.into_event(topic.clone()));
        }
        self.ctx.store.commit(batch).await?;
        Ok(())
    }

    fn not_found(&self, what: &str) -> DaemonError {
        DaemonError::NotFound(format!("{what} not found in workflow run {}", self.record.id))
    }
}

pub fn topic(run_id: &str) -> bosun_proto::Topic {
    bosun_proto::Topic::workflow(run_id)
}

/// A stand-in for a definition that no longer parses: the run is failed at once.
fn empty_workflow() -> Workflow {
    Workflow {
        name: String::new(),
        description: None,
        inputs: Default::default(),
        budget: Default::default(),
        steps: Vec::new(),
        graph: Default::default(),
    }
}

/// Wakes the run when one of its sessions' turns ends or the session
/// changes, so the next step starts without waiting for the timer. A lag
/// wakes it too: it then looks at everything.
async fn watch(ctx: Context, run: ActorRef<RunMsg>, watched: Arc<Mutex<HashSet<String>>>, queued: Arc<AtomicBool>) {
    let mut live = ctx.store.subscribe();
    loop {
        let wake = match live.recv().await {
            Ok(env) => {
                matches!(env.kind, EventType::TurnCompleted | EventType::SessionUpdate | EventType::StreamChunk)
                    && env.session_id().is_some_and(|s| watched.lock().unwrap_or_else(|p| p.into_inner()).contains(s))
            }
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => true,
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        if wake && !queued.swap(true, Ordering::AcqRel) && run.send_message(RunMsg::Tick).is_err() {
            return;
        }
    }
}

async fn tick(run: ActorRef<RunMsg>, queued: Arc<AtomicBool>) {
    let mut every = tokio::time::interval(TICK);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if !queued.swap(true, Ordering::AcqRel) && run.send_message(RunMsg::Tick).is_err() {
            return;
        }
    }
}
