//! The contract between a provider worker (in `bosun-actors`) and an agent
//! driver (here): one turn at a time, events out, controls in.
//!
//! A driver never blocks its caller: `start_turn` spawns the turn's work on the
//! tokio runtime and returns at once. Agent I/O is read on those tasks, never
//! inside an actor handler.

use bosun_proto::{Action, ChunkKind, Usage};
use std::path::PathBuf;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// What a turn is asked to do.
#[derive(Debug, Clone)]
pub struct TurnInput {
    pub session_id: String,
    pub turn_id: String,
    pub text: String,
    pub cwd: PathBuf,
    /// The last checkpoint this driver emitted for the turn, when the turn is
    /// being resumed after a crash; `None` for a fresh turn.
    pub resume: Option<serde_json::Value>,
}

/// Something a turn produced.
///
/// `checkpoint`, where present, is the driver's own resume point *after* this
/// event: the daemon stores it with the event and hands the newest one back in
/// [`TurnInput::resume`] if the turn must be picked up again.
#[derive(Debug, Clone, PartialEq)]
pub enum AgentEvent {
    Chunk {
        kind: ChunkKind,
        text: String,
        checkpoint: Option<serde_json::Value>,
    },
    /// The agent wants to act. The turn waits for a [`TurnControl::Decision`]
    /// with the same `request_id`; a resumed driver asks again with the same id.
    ApprovalRequest {
        request_id: String,
        action: Action,
        checkpoint: Option<serde_json::Value>,
    },
    Usage(Usage),
    Log {
        level: LogLevel,
        message: String,
    },
    /// The last event of a turn.
    Finished(TurnOutcome),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Info,
    Warn,
    Error,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TurnOutcome {
    Completed,
    Interrupted,
    Failed(String),
}

/// Instructions into a running turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TurnControl {
    Decision {
        request_id: String,
        approved: bool,
    },
    /// Extra instructions for the turn under way.
    Steer(String),
    Interrupt,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Capabilities {
    /// Can pick up a turn from a checkpoint after a crash.
    pub resume: bool,
    pub steer: bool,
    pub interrupt: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("a turn is already running on this driver")]
    Busy,
    #[error("starting the agent: {0}")]
    Start(String),
    #[error("the checkpoint to resume from is not understood: {0}")]
    BadCheckpoint(String),
}

/// One agent implementation (demo, ACP, codex app-server, ...).
pub trait AgentDriver: Send + 'static {
    fn kind(&self) -> &'static str;
    fn capabilities(&self) -> Capabilities;
    /// Starts (or, with `input.resume`, resumes) a turn. Events go to `events`
    /// until [`AgentEvent::Finished`]; the returned handle carries controls in.
    fn start_turn(
        &mut self,
        input: TurnInput,
        events: mpsc::UnboundedSender<AgentEvent>,
    ) -> Result<TurnHandle, AgentError>;
}

/// A running turn. Dropping it aborts the turn and kills whatever it started,
/// so a provider worker that dies takes its turn's processes with it.
#[derive(Debug)]
pub struct TurnHandle {
    controls: mpsc::UnboundedSender<TurnControl>,
    task: JoinHandle<()>,
}

impl TurnHandle {
    pub fn new(controls: mpsc::UnboundedSender<TurnControl>, task: JoinHandle<()>) -> TurnHandle {
        TurnHandle { controls, task }
    }

    /// Sends a control; false when the turn has already ended.
    pub fn send(&self, control: TurnControl) -> bool {
        self.controls.send(control).is_ok()
    }

    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

impl Drop for TurnHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}
