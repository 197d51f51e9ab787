//! The workflows supervisor: checks and starts runs, and keeps one run
//! actor going per run that has not ended (one_for_one: a run that crashes
//! is restarted alone and reloads its record). A run that ends stops its
//! actor; its record stays for reading.

use crate::context::{new_id, Context};
use crate::error::{DaemonError, DaemonResult};
use crate::names;
use crate::workflow::{RunActor, RunArgs};
use bosun_proto::{BudgetView, RunState, RunView, StartRunRequest, Usage};
use bosun_state::{StepRecord, WorkflowRunRecord};
use bosun_supervision::{
    Backoff, ChildInfo, ChildSpec, Intensity, Restart, RestartChild, Shutdown, Strategy, Supervises, Supervision,
    SupervisorConfig,
};
use bosun_workflow::{Known, Workflow};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The largest definition a run takes, as text or as a file.
pub const MAX_DEFINITION_BYTES: usize = 256 * 1024;

pub struct WorkflowsSupervisor;

pub struct WorkflowsState {
    ctx: Context,
    sup: Supervision,
}

pub enum WorkflowsMsg {
    Start(StartRunRequest, RpcReplyPort<DaemonResult<RunView>>),
    Children(RpcReplyPort<Vec<ChildInfo>>),
    Crash,
    Restart(RestartChild),
}

impl From<RestartChild> for WorkflowsMsg {
    fn from(r: RestartChild) -> Self {
        WorkflowsMsg::Restart(r)
    }
}

impl Actor for WorkflowsSupervisor {
    type Msg = WorkflowsMsg;
    type State = WorkflowsState;
    type Arguments = Context;

    async fn pre_start(
        &self,
        myself: ActorRef<WorkflowsMsg>,
        ctx: Context,
    ) -> Result<WorkflowsState, ActorProcessingErr> {
        let config = SupervisorConfig {
            strategy: Strategy::OneForOne,
            intensity: Intensity { max_restarts: 50, within: Duration::from_secs(30) },
            backoff: Backoff { initial: Duration::from_millis(20), max: Duration::from_secs(2) },
            on_restart: Some(ctx.restart_hook()),
        };
        let mut state = WorkflowsState { sup: Supervision::new(config), ctx };
        // Ended runs need no actor: reading them is the store's.
        let live: Vec<WorkflowRunRecord> =
            state.ctx.store.scan::<WorkflowRunRecord>()?.into_iter().filter(|r| !r.state.is_final()).collect();
        let count = live.len();
        for record in live {
            if let Err(e) = state.start_run(&myself, record.id, None).await {
                state.sup.shutdown().await;
                return Err(e);
            }
        }
        tracing::info!(runs = count, "workflow runs resumed");
        Ok(state)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<WorkflowsMsg>,
        state: &mut WorkflowsState,
    ) -> Result<(), ActorProcessingErr> {
        Self::stop_children(state).await
    }

    async fn handle(
        &self,
        myself: ActorRef<WorkflowsMsg>,
        msg: WorkflowsMsg,
        state: &mut WorkflowsState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            WorkflowsMsg::Start(req, reply) => {
                let r = match state.check(req).await {
                    Ok(record) => {
                        let view = record.view();
                        let id = record.id.clone();
                        match state.start_run(&myself, id, Some(record)).await {
                            Ok(()) => Ok(view),
                            Err(e) => Err(DaemonError::Internal(format!("the run's actor could not start: {e}"))),
                        }
                    }
                    Err(e) => Err(e),
                };
                let _ = reply.send(r);
            }
            WorkflowsMsg::Children(reply) => {
                let _ = reply.send(state.sup.children());
            }
            WorkflowsMsg::Crash => {
                if state.ctx.settings.fault_injection {
                    panic!("injected fault: workflows supervisor");
                }
            }
            WorkflowsMsg::Restart(req) => Self::supervise_restart(&myself, req, state).await?,
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<WorkflowsMsg>,
        evt: SupervisionEvent,
        state: &mut WorkflowsState,
    ) -> Result<(), ActorProcessingErr> {
        Self::supervise_event(&myself, evt, state).await
    }
}

impl Supervises for WorkflowsSupervisor {
    fn supervision(state: &mut WorkflowsState) -> &mut Supervision {
        &mut state.sup
    }

    fn escalation_error(_: &WorkflowsState, reason: &str) -> ActorProcessingErr {
        format!("workflows supervisor: {reason}").into()
    }
}

/// What a daemon's workflows can name: its providers.
pub fn known(ctx: &Context) -> Known {
    Known { providers: ctx.providers.list().into_iter().map(|p| p.name).collect() }
}

/// How long reading a definition's file may take: a path naming a device
/// or a pipe must not hold the caller.
const READ_TIMEOUT: Duration = Duration::from_secs(2);

/// Reads and checks a definition; every problem in one 400.
pub async fn load(ctx: &Context, req: &StartRunRequest) -> DaemonResult<(String, Workflow)> {
    let text = match (&req.definition, &req.path) {
        (Some(text), None) => text.clone(),
        (None, Some(path)) => read_definition(path).await?,
        (Some(_), Some(_)) => {
            return Err(DaemonError::BadRequest("give definition (the TOML text) or path (a file), not both".into()))
        }
        (None, None) => {
            return Err(DaemonError::BadRequest(
                "give definition (the TOML text) or path (a file on the daemon's host)".into(),
            ))
        }
    };
    if text.len() > MAX_DEFINITION_BYTES {
        return Err(DaemonError::BadRequest(format!("a definition may be at most {MAX_DEFINITION_BYTES} bytes")));
    }
    let workflow = bosun_workflow::parse(&text, &known(ctx))
        .map_err(|p| DaemonError::BadRequest(format!("the workflow does not validate: {p}")))?;
    Ok((text, workflow))
}

async fn read_definition(path: &str) -> DaemonResult<String> {
    use tokio::io::AsyncReadExt as _;
    let p = std::path::Path::new(path);
    if !p.is_absolute() {
        return Err(DaemonError::BadRequest(format!("path must be absolute on the daemon's host, got {path:?}")));
    }
    let cannot = |e: std::io::Error| DaemonError::BadRequest(format!("cannot read {path}: {e}"));
    let read = async {
        let meta = tokio::fs::metadata(p).await.map_err(cannot)?;
        if !meta.is_file() {
            return Err(DaemonError::BadRequest(format!("{path} is not a file")));
        }
        // At most one byte past the limit, whatever the file says its size is.
        let file = tokio::fs::File::open(p).await.map_err(cannot)?;
        let mut bytes = Vec::new();
        file.take(MAX_DEFINITION_BYTES as u64 + 1).read_to_end(&mut bytes).await.map_err(cannot)?;
        if bytes.len() > MAX_DEFINITION_BYTES {
            return Err(DaemonError::BadRequest(format!("{path} is over {MAX_DEFINITION_BYTES} bytes")));
        }
        String::from_utf8(bytes).map_err(|_| DaemonError::BadRequest(format!("{path} is not UTF-8 text")))
    };
    tokio::time::timeout(READ_TIMEOUT, read)
        .await
        .map_err(|_| DaemonError::BadRequest(format!("reading {path} took longer than {READ_TIMEOUT:?}")))?
}

impl WorkflowsState {
    /// The record of a new run, once its definition and inputs check out.
    async fn check(&self, req: StartRunRequest) -> DaemonResult<WorkflowRunRecord> {
        let (text, workflow) = load(&self.ctx, &req).await?;
        let inputs = workflow
            .resolve_inputs(&req.inputs)
            .map_err(|p| DaemonError::BadRequest(format!("the run's inputs do not check out: {p}")))?;
        let now = bosun_proto::now_ts();
        let steps = workflow
            .steps
            .iter()
            .filter(|s| !s.session().is_some_and(|s| s.resolver))
            .map(|s| StepRecord::new(&s.id, s.kind_name(), s.for_each.is_some()))
            .collect();
        Ok(WorkflowRunRecord {
            id: new_id("w_"),
            name: workflow.name.clone(),
            definition: text,
            inputs,
            state: RunState::Running,
            pause: None,
            steps,
            budget: BudgetView { tokens: workflow.budget.tokens, cost: workflow.budget.cost },
            usage: Usage::default(),
            cost: 0.0,
            created_at: now.clone(),
            updated_at: now,
            ended_at: None,
        })
    }

    async fn start_run(
        &mut self,
        myself: &ActorRef<WorkflowsMsg>,
        run_id: String,
        new: Option<WorkflowRunRecord>,
    ) -> Result<(), ActorProcessingErr> {
        let ctx = self.ctx.clone();
        let new = new.map(|record| Arc::new(Mutex::new(Some(record))));
        // Transient: a run that ends stops its actor for good; one that
        // crashes is restarted and goes on from its record.
        let spec = ChildSpec::for_actor(
            names::workflow(&run_id),
            Restart::Transient,
            Shutdown::Timeout(Duration::from_secs(10)),
            move || (RunActor, RunArgs { ctx: ctx.clone(), run_id: run_id.clone(), new: new.clone() }),
        );
        self.sup.start_child(spec, &myself.get_cell()).await?;
        Ok(())
    }
}
