//! The contract between a provider worker (in `bosun-actors`) and an agent
//! driver (here): one turn at a time, events out, controls in.
//!
//! A driver never blocks its caller: `start_turn` spawns the turn's work on the
//! tokio runtime and returns at once. Agent I/O is read on those tasks, never
//! inside an actor handler.

use bosun_isolation::Isolation;
use bosun_proto::{
    Action, ChunkKind, CommandResult, CommandRun, Decision, Enforcement, PlanEntry, Policy, ToolStatus, Usage,
};
use serde::{Deserialize, Serialize};
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
    /// The session's policy when the turn started. Drivers do not decide
    /// approvals (the daemon does); they use it only to refuse to start a
    /// plan-only turn on an agent they find they cannot hold to it.
    pub policy: Policy,
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
    /// The agent started a tool call (a command, an edit, a read, a search...).
    ToolCall(ToolCall),
    /// Progress or the result of a tool call announced before.
    ToolUpdate(ToolUpdate),
    /// The agent's plan for the turn, whole (each update replaces the last).
    Plan(Vec<PlanEntry>),
    /// Tokens used by this turn so far (each update replaces the last).
    Usage(Usage),
    /// A command the driver ran (or the agent reports it ran) has ended:
    /// recorded as a `command:ran` audit event. `asked` is what covered it,
    /// as far as the driver can tell; the daemon checks it against its
    /// approvals and the session's policy.
    CommandRan {
        run: CommandRun,
        asked: Asked,
    },
    /// The agent reports it changed a file (an edit it made, or a write the
    /// driver carried out for it): recorded as `file:changed`.
    FileChanged {
        path: String,
        summary: String,
        asked: Asked,
    },
    /// The turn's structured result (the `shell` provider's one command),
    /// carried by `turn:completed`; the last one before `Finished` counts.
    Result(CommandResult),
    Log {
        level: LogLevel,
        message: String,
    },
    /// The last event of a turn.
    Finished(TurnOutcome),
}

/// What, by the driver's account, covered an action the agent reports done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Asked {
    /// The approval this driver asked for as `request_id` in turn `turn_id`
    /// (this turn, or an earlier one where it was accepted for the session).
    Request { turn_id: String, request_id: String },
    /// The agent did it without asking because its own rules count it as
    /// read-only (codex's known-safe commands under `untrusted`).
    AgentSafeList,
    /// Nothing the driver knows of.
    NotAsked,
}

impl Asked {
    pub fn request(turn_id: &str, request_id: &str) -> Asked {
        Asked::Request { turn_id: turn_id.to_string(), request_id: request_id.to_string() }
    }
}

/// A tool call as the agent announced it: the wire's own type.
pub use bosun_proto::events::ToolCallView as ToolCall;

/// A change to a tool call; absent fields are unchanged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolUpdate {
    pub id: String,
    #[serde(default)]
    pub status: Option<ToolStatus>,
    #[serde(default)]
    pub title: Option<String>,
    /// Output produced by the tool, as text, when the agent reports it.
    #[serde(default)]
    pub output: Option<String>,
    #[serde(default)]
    pub detail: serde_json::Value,
}

/// How serious a log line is: the wire's own levels.
pub use bosun_proto::LogLevel;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TurnOutcome {
    Completed,
    Interrupted,
    Failed(String),
    /// A crash cut the turn where it could not safely go on (a command
    /// that may have run half-way); it ends failed, and a workflow step
    /// running it counts as interrupted rather than failed.
    Cut(String),
}

/// Instructions into a running turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TurnControl {
    /// The answer to an [`AgentEvent::ApprovalRequest`], in the daemon's
    /// vocabulary; each driver maps it onto its protocol's.
    Decision {
        request_id: String,
        decision: Decision,
    },
    /// Extra instructions for the turn under way.
    Steer(String),
    Interrupt,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Capabilities {
    /// Can pick up a turn from a checkpoint after a crash.
    pub resume: bool,
    /// Can reattach to its agent-side session (from a [`DriverNotice::Bound`]
    /// binding) after the worker or the daemon restarts, so the conversation
    /// goes on.
    pub load_session: bool,
    pub steer: bool,
    pub interrupt: bool,
    /// Accepts images in a prompt.
    pub images: bool,
}

impl From<Capabilities> for bosun_proto::ProviderCapabilities {
    fn from(c: Capabilities) -> bosun_proto::ProviderCapabilities {
        bosun_proto::ProviderCapabilities {
            resume: c.resume,
            load_session: c.load_session,
            steer: c.steer,
            interrupt: c.interrupt,
            images: c.images,
        }
    }
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

/// What a driver is built with: one per provider worker, so one per session
/// (and again after each restart of the worker).
#[derive(Debug, Clone)]
pub struct DriverInit {
    pub session_id: String,
    /// The session's working directory: the agent runs there.
    pub cwd: PathBuf,
    /// The last [`DriverNotice::Bound`] this session's driver sent, stored by
    /// the daemon: the agent-side session to load or resume.
    pub binding: Option<serde_json::Value>,
    /// Where the driver reports on its agent process, outside of any turn.
    pub notices: mpsc::UnboundedSender<DriverNotice>,
    /// Where the session's agent and the commands it runs go: the host, its
    /// bubblewrap jail (`"sandbox":"bwrap"`, with the agent's state dirs
    /// writable) or its container (`"sandbox":"docker"`, built-in kinds only).
    pub isolation: Isolation,
    /// Whether the session's policy opens the network to its jail or container.
    pub network: bool,
}

impl DriverInit {
    /// Jailed with no network: an agent that does not ask is bounded anyway,
    /// so a plan-only turn need not be refused on one found not to ask.
    pub fn offline_jail(&self) -> bool {
        matches!(self.isolation, Isolation::Jail(_)) && !self.network
    }
}

/// What a driver says about its agent process, as opposed to a turn's events.
#[derive(Debug, Clone, PartialEq)]
pub enum DriverNotice {
    /// The agent process is up and initialized.
    Running { pid: Option<u32>, agent: Option<String>, version: Option<String> },
    /// The agent-side session (ACP `sessionId`, codex `threadId`...) this
    /// driver now talks to. The daemon stores it before anything else and
    /// hands it back in [`DriverInit::binding`] after a restart.
    Bound(serde_json::Value),
    /// The agent process has gone (exited, killed, or unresponsive). The
    /// driver is unusable from now on; any turn under way has been (or is
    /// being) ended with [`TurnOutcome::Failed`]. The worker is restarted.
    Exited { reason: String },
    /// A line the agent wrote on stderr, or a protocol problem worth a look
    /// (a malformed line, an unknown notification).
    Log { level: LogLevel, message: String },
    /// What the driver learned, once the agent started, about holding it to
    /// a policy (and again whenever that changes).
    Enforcement(EnforcementReport),
    /// The agent left the mode that asks before acting, and the driver put
    /// it back.
    ModeRestored { from: String, to: String },
}

/// How a provider's agent is held to the session's policy, as its driver
/// found out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnforcementReport {
    pub enforcement: Enforcement,
    /// How, or why not, in words for the user.
    pub detail: String,
    /// What the agent calls itself (`agentInfo.name`), if it said.
    pub agent: Option<String>,
}

/// Why a plan-only session or turn is refused on an agent that cannot be
/// held to it, and what to do: the message of the API's 409
/// `policy_unenforceable`, and the reason a driver fails such a turn with.
pub fn unenforceable(detail: &str) -> String {
    format!(
        "this agent cannot be held to plan-only: {detail}. Use a full-access session, run it in a jail without \
         network (\"sandbox\":\"bwrap\" without \"network\"), or set the agent up so it asks before it acts \
         (docs/PROVIDERS.md)"
    )
}

/// The tokio runtime a driver spawns its turn on: `start_turn` is called
/// from an actor, inside the daemon's runtime, but is a plain function.
pub fn turn_runtime() -> Result<tokio::runtime::Handle, AgentError> {
    tokio::runtime::Handle::try_current().map_err(|e| AgentError::Start(format!("no tokio runtime: {e}")))
}

/// One agent implementation (demo, ACP, codex app-server, ...).
///
/// Drivers for real agents start their process lazily, on the first
/// `start_turn`; a start failure ends that turn `Failed` with the reason,
/// it does not fail the worker.
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
