//! The generic supervisor actor, for places that only supervise.

use std::fmt;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};

use crate::spec::{ChildSpec, SupervisorConfig};
use crate::supervises::Supervises;
use crate::supervision::{ChildInfo, RestartChild, Supervision};

/// Messages of the generic [`Supervisor`] actor.
pub enum SupervisorMsg {
    /// A backoff delay is over (sent by the supervisor to itself).
    Restart(RestartChild),
    /// Add a child at the end of the start order and start it; replies the
    /// start error as text.
    StartChild(ChildSpec, RpcReplyPort<Result<(), String>>),
    /// Stop a child gracefully and remove it; replies false if unknown.
    TerminateChild(String, RpcReplyPort<bool>),
    /// List the children in start order.
    Children(RpcReplyPort<Vec<ChildInfo>>),
}

impl fmt::Debug for SupervisorMsg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SupervisorMsg::Restart(req) => f.debug_tuple("Restart").field(req).finish(),
            SupervisorMsg::StartChild(spec, _) => f.debug_tuple("StartChild").field(spec).finish(),
            SupervisorMsg::TerminateChild(id, _) => f.debug_tuple("TerminateChild").field(id).finish(),
            SupervisorMsg::Children(_) => f.write_str("Children"),
        }
    }
}

impl From<RestartChild> for SupervisorMsg {
    fn from(req: RestartChild) -> Self {
        SupervisorMsg::Restart(req)
    }
}

/// A ready-made supervisor actor for places that only supervise. Arguments:
/// the policy and the initial children, started in order in `pre_start` (if
/// one fails to start, those already started are stopped and the spawn
/// fails). When the restart intensity is exceeded it stops its children and
/// fails, so its own parent receives `ActorFailed`.
pub struct Supervisor;

impl Supervises for Supervisor {
    fn supervision(state: &mut Supervision) -> &mut Supervision {
        state
    }

    fn escalation_error(_: &Supervision, reason: &str) -> ActorProcessingErr {
        format!("supervisor escalated: {reason}").into()
    }
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = Supervision;
    type Arguments = (SupervisorConfig, Vec<ChildSpec>);

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        (config, specs): Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut supervision = Supervision::new(config);
        for spec in specs {
            if let Err(err) = supervision.start_child(spec, &myself).await {
                supervision.shutdown().await;
                return Err(err.into());
            }
        }
        Ok(supervision)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SupervisorMsg::Restart(req) => Self::supervise_restart(&myself, req, state).await,
            SupervisorMsg::StartChild(spec, reply) => {
                let result = state.start_child(spec, &myself).await.map(|_| ()).map_err(|err| err.to_string());
                let _ = reply.send(result);
                Ok(())
            }
            SupervisorMsg::TerminateChild(id, reply) => {
                let known = state.terminate_child(&id).await.is_ok();
                let _ = reply.send(known);
                Ok(())
            }
            SupervisorMsg::Children(reply) => {
                let _ = reply.send(state.children());
                Ok(())
            }
        }
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        Self::supervise_event(&myself, event, state).await
    }

    async fn post_stop(&self, _myself: ActorRef<Self::Msg>, state: &mut Self::State) -> Result<(), ActorProcessingErr> {
        Self::stop_children(state).await
    }
}
