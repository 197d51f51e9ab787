//! The provider-worker actor: one per session, owning that session's agent
//! driver (and so, for real agents, the agent process).
//!
//! Agent output is never read inside a handler: the driver's events arrive on
//! a channel read by a forwarding task, which numbers them and hands them to
//! the session's turn actor by name. The task keeps every event of the turn
//! until the turn ends, so a turn actor that restarts asks for a replay from
//! the last event it persisted and nothing is lost or doubled.

use crate::context::Context;
use crate::names;
use crate::turn::TurnMsg;
use bosun_adapters::{AgentDriver, AgentEvent, TurnControl, TurnHandle, TurnInput};
use bosun_proto::{EventType, NewEvent, Topic};
use bosun_state::Batch;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde_json::json;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub struct ProviderWorker;

pub struct ProviderArgs {
    pub ctx: Context,
    pub session_id: String,
    pub provider: String,
}

pub struct ProviderState {
    ctx: Context,
    session_id: String,
    provider: String,
    driver: Box<dyn AgentDriver>,
    current: Option<CurrentTurn>,
}

struct CurrentTurn {
    turn_id: String,
    // Dropped with the worker: aborts the turn and kills what it started.
    handle: TurnHandle,
    // Held for its Drop: the forwarding task ends with the turn.
    _forwarder: AbortOnDrop,
    reattach: mpsc::UnboundedSender<u64>,
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How a `RunTurn` was honoured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunAck {
    /// A new (or resumed) turn was started on the driver.
    Started,
    /// The turn was already running here: events after `delivered` are replayed.
    Attached,
}

pub enum ProviderMsg {
    /// Start, resume or re-attach a turn. `delivered` is how many of the turn's
    /// events the turn actor has already persisted.
    RunTurn {
        input: TurnInput,
        delivered: u64,
        reply: RpcReplyPort<Result<RunAck, String>>,
    },
    Control {
        turn_id: String,
        control: TurnControl,
    },
    /// The turn actor has recorded the turn's end: drop it.
    TurnDone {
        turn_id: String,
    },
    Crash,
}

impl Actor for ProviderWorker {
    type Msg = ProviderMsg;
    type State = ProviderState;
    type Arguments = ProviderArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: ProviderArgs,
    ) -> Result<ProviderState, ActorProcessingErr> {
        let driver = args.ctx.providers.driver(&args.provider)?;
        Ok(ProviderState { ctx: args.ctx, session_id: args.session_id, provider: args.provider, driver, current: None })
    }

    async fn post_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut ProviderState,
    ) -> Result<(), ActorProcessingErr> {
        let caps = state.driver.capabilities();
        let mut batch = Batch::new();
        batch.event(NewEvent::new(
            Topic::session(&state.session_id),
            EventType::ProviderStatus,
            json!({
                "provider": state.provider,
                "kind": state.driver.kind(),
                "status": "ready",
                "capabilities": {"resume": caps.resume, "steer": caps.steer, "interrupt": caps.interrupt},
            }),
        ));
        state.ctx.store.commit(batch).await?;
        tracing::info!(session_id = %state.session_id, provider = %state.provider, "provider worker ready");
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: ProviderMsg,
        state: &mut ProviderState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ProviderMsg::RunTurn { input, delivered, reply } => {
                let result = state.run_turn(input, delivered);
                let _ = reply.send(result);
            }
            ProviderMsg::Control { turn_id, control } => match &state.current {
                Some(current) if current.turn_id == turn_id => {
                    if !current.handle.send(control) {
                        tracing::debug!(session_id = %state.session_id, turn_id = %turn_id, "control for a turn that has finished");
                    }
                }
                _ => {
                    tracing::warn!(session_id = %state.session_id, turn_id = %turn_id, "control for a turn this worker is not running")
                }
            },
            ProviderMsg::TurnDone { turn_id } => {
                if state.current.as_ref().is_some_and(|c| c.turn_id == turn_id) {
                    state.current = None;
                }
            }
            ProviderMsg::Crash => {
                if state.ctx.settings.fault_injection {
                    panic!("injected fault: provider worker of session {}", state.session_id);
                }
            }
        }
        Ok(())
    }
}

impl ProviderState {
    fn run_turn(&mut self, input: TurnInput, delivered: u64) -> Result<RunAck, String> {
        if let Some(current) = &self.current {
            if current.turn_id == input.turn_id {
                // The turn actor restarted while the turn kept running here.
                let _ = current.reattach.send(delivered);
                return Ok(RunAck::Attached);
            }
            if !current.handle.is_finished() {
                return Err(format!("turn {} is still running on this provider", current.turn_id));
            }
        }
        self.current = None;
        if input.resume.is_some() && !self.driver.capabilities().resume {
            return Err(format!("provider {} cannot resume a turn", self.provider));
        }
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let (reattach_tx, reattach_rx) = mpsc::unbounded_channel();
        let turn_id = input.turn_id.clone();
        let handle = self.driver.start_turn(input, events_tx).map_err(|e| e.to_string())?;
        let forwarder = tokio::spawn(forward(names::turn(&self.session_id), events_rx, reattach_rx, delivered));
        self.current = Some(CurrentTurn { turn_id, handle, _forwarder: AbortOnDrop(forwarder), reattach: reattach_tx });
        Ok(RunAck::Started)
    }
}

/// Numbers the driver's events (from `delivered + 1`) and delivers them in
/// order to the turn actor named `turn_name`, waiting while it restarts.
async fn forward(
    turn_name: String,
    mut events: mpsc::UnboundedReceiver<AgentEvent>,
    mut reattach: mpsc::UnboundedReceiver<u64>,
    delivered: u64,
) {
    let first = delivered + 1;
    let mut buffer: Vec<AgentEvent> = Vec::new();
    let mut cursor = delivered; // number of the last event handed over
    let mut driver_open = true;
    loop {
        // Waiting on a restarting turn actor: poll for it to come back.
        let behind = cursor + 1 < first + buffer.len() as u64;
        tokio::select! {
            ev = events.recv(), if driver_open => match ev {
                Some(ev) => buffer.push(ev),
                None => driver_open = false,
            },
            Some(acked) = reattach.recv() => cursor = acked.max(first - 1),
            _ = tokio::time::sleep(Duration::from_millis(20)), if behind => {}
            else => return,
        }
        let last_no = first + buffer.len() as u64; // one past the last
        while cursor + 1 < last_no {
            let no = cursor + 1;
            let Some(turn) = crate::route::lookup_now::<TurnMsg>(&turn_name) else { break };
            let event = buffer[(no - first) as usize].clone();
            if turn.send_message(TurnMsg::Agent { no, event }).is_err() {
                break;
            }
            cursor = no;
        }
    }
}
