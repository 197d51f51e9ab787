//! What each event carries: one struct per event type, under [`EventData`].
//!
//! Events are built only through these (every producer calls
//! [`EventData::into_event`]), and read back through
//! [`Envelope::payload`](crate::Envelope::payload), so the contract a client
//! sees is the one the compiler checks. The wire form is unchanged: an
//! envelope's `type` is the variant's name and its `data` the struct.
//! `GET /api/v1/schema/events.json` is derived from these types.

use crate::event::{EventType, NewEvent, Topic};
use crate::ids::{ApprovalId, SessionId, TurnId};
use crate::model::*;
use crate::{ApprovalView, ProviderCapabilities, SessionView};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The data of every event type, tagged the way an envelope is.
// Built once per event and turned into JSON at once: the size of the
// largest variant (a whole session) costs nothing worth boxing for.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", content = "data")]
pub enum EventData {
    /// The session as it is now (created, changed, its turn started or ended).
    #[serde(rename = "session:update")]
    SessionUpdate(SessionView),
    #[serde(rename = "session:closed")]
    SessionClosed(SessionClosed),
    #[serde(rename = "turn:started")]
    TurnStarted(TurnStarted),
    /// The turn's status moved (running ↔ awaiting_approval).
    #[serde(rename = "turn:update")]
    TurnUpdate(TurnUpdate),
    #[serde(rename = "turn:steer")]
    TurnSteer(TurnSteer),
    #[serde(rename = "stream:chunk")]
    StreamChunk(StreamChunk),
    /// The last chunk of the turn has been sent.
    #[serde(rename = "stream:complete")]
    StreamComplete(StreamComplete),
    #[serde(rename = "turn:completed")]
    TurnCompleted(TurnCompleted),
    #[serde(rename = "approval:requested")]
    ApprovalRequested(ApprovalRequested),
    #[serde(rename = "approval:resolved")]
    ApprovalResolved(ApprovalResolved),
    #[serde(rename = "provider:status")]
    ProviderStatus(ProviderStatusEvent),
    #[serde(rename = "tool:call")]
    ToolCall(ToolCallEvent),
    #[serde(rename = "tool:update")]
    ToolUpdate(ToolUpdateEvent),
    #[serde(rename = "plan:update")]
    PlanUpdate(PlanUpdate),
    #[serde(rename = "usage:update")]
    UsageUpdate(UsageUpdate),
    #[serde(rename = "command:ran")]
    CommandRan(CommandRan),
    #[serde(rename = "file:written")]
    FileWritten(FileTouched),
    #[serde(rename = "file:deleted")]
    FileDeleted(FileTouched),
    #[serde(rename = "file:changed")]
    FileChanged(FileChanged),
    #[serde(rename = "policy:violation")]
    PolicyViolation(PolicyViolation),
    #[serde(rename = "policy:mode_restored")]
    PolicyModeRestored(PolicyModeRestored),
    /// A run started; carries it whole.
    #[serde(rename = "workflow:started")]
    WorkflowStarted(crate::workflow::WorkflowStarted),
    #[serde(rename = "workflow:step")]
    WorkflowStep(crate::workflow::WorkflowStep),
    #[serde(rename = "workflow:event")]
    WorkflowEvent(crate::workflow::WorkflowEvent),
    #[serde(rename = "workflow:error")]
    WorkflowError(crate::workflow::WorkflowError),
    #[serde(rename = "workflow:paused")]
    WorkflowPaused(crate::workflow::WorkflowPaused),
    #[serde(rename = "workflow:completed")]
    WorkflowCompleted(crate::workflow::WorkflowCompleted),
    /// A task was made or changed (through the API, an edit of its file, or its run).
    #[serde(rename = "task:updated")]
    TaskUpdated(crate::task::TaskUpdated),
    #[serde(rename = "task:removed")]
    TaskRemoved(crate::task::TaskRemoved),
    /// A terminal binding was made, or its state changed.
    #[serde(rename = "termbridge:binding")]
    TerminalBinding(crate::terminal::TerminalBinding),
    #[serde(rename = "termbridge:binding_lost")]
    BindingLost(crate::terminal::BindingLost),
    #[serde(rename = "termbridge:action")]
    TerminalAction(crate::terminal::TerminalAction),
    #[serde(rename = "termbridge:denied")]
    TerminalDenied(crate::terminal::TerminalDenied),
    #[serde(rename = "termbridge:capability_update")]
    CapabilityUpdate(crate::terminal::CapabilityUpdate),
    /// A setting was changed through the API (a secret set or removed):
    /// names what changed, never a value.
    #[serde(rename = "settings:changed")]
    SettingsChanged(SettingsChanged),
    #[serde(rename = "actor:restarted")]
    ActorRestarted(ActorRestarted),
    #[serde(rename = "diagnostics:log")]
    DiagnosticsLog(DiagnosticsLog),
}

impl EventData {
    /// The envelope `type` of this data.
    pub fn kind(&self) -> EventType {
        match self {
            EventData::SessionUpdate(_) => EventType::SessionUpdate,
            EventData::SessionClosed(_) => EventType::SessionClosed,
            EventData::TurnStarted(_) => EventType::TurnStarted,
            EventData::TurnUpdate(_) => EventType::TurnUpdate,
            EventData::TurnSteer(_) => EventType::TurnSteer,
            EventData::StreamChunk(_) => EventType::StreamChunk,
            EventData::StreamComplete(_) => EventType::StreamComplete,
            EventData::TurnCompleted(_) => EventType::TurnCompleted,
            EventData::ApprovalRequested(_) => EventType::ApprovalRequested,
            EventData::ApprovalResolved(_) => EventType::ApprovalResolved,
            EventData::ProviderStatus(_) => EventType::ProviderStatus,
            EventData::ToolCall(_) => EventType::ToolCall,
            EventData::ToolUpdate(_) => EventType::ToolUpdate,
            EventData::PlanUpdate(_) => EventType::PlanUpdate,
            EventData::UsageUpdate(_) => EventType::UsageUpdate,
            EventData::CommandRan(_) => EventType::CommandRan,
            EventData::FileWritten(_) => EventType::FileWritten,
            EventData::FileDeleted(_) => EventType::FileDeleted,
            EventData::FileChanged(_) => EventType::FileChanged,
            EventData::PolicyViolation(_) => EventType::PolicyViolation,
            EventData::PolicyModeRestored(_) => EventType::PolicyModeRestored,
            EventData::WorkflowStarted(_) => EventType::WorkflowStarted,
            EventData::WorkflowStep(_) => EventType::WorkflowStep,
            EventData::WorkflowEvent(_) => EventType::WorkflowEvent,
            EventData::WorkflowError(_) => EventType::WorkflowError,
            EventData::WorkflowPaused(_) => EventType::WorkflowPaused,
            EventData::WorkflowCompleted(_) => EventType::WorkflowCompleted,
            EventData::TaskUpdated(_) => EventType::TaskUpdated,
            EventData::TaskRemoved(_) => EventType::TaskRemoved,
            EventData::TerminalBinding(_) => EventType::TerminalBinding,
            EventData::BindingLost(_) => EventType::BindingLost,
            EventData::TerminalAction(_) => EventType::TerminalAction,
            EventData::TerminalDenied(_) => EventType::TerminalDenied,
            EventData::CapabilityUpdate(_) => EventType::CapabilityUpdate,
            EventData::SettingsChanged(_) => EventType::SettingsChanged,
            EventData::ActorRestarted(_) => EventType::ActorRestarted,
            EventData::DiagnosticsLog(_) => EventType::DiagnosticsLog,
        }
    }

    /// The event to commit, on `topic`.
    pub fn into_event(self, topic: Topic) -> NewEvent {
        let kind = self.kind();
        // Serializing these types cannot fail: they hold no maps with
        // non-string keys and no failing Serialize impls.
        let data = match serde_json::to_value(&self) {
            Ok(Value::Object(mut tagged)) => tagged.remove("data").unwrap_or(Value::Null),
            _ => Value::Null,
        };
        NewEvent::new(topic, kind, data)
    }

    /// Reads the data of an envelope of type `kind`.
    pub fn from_parts(kind: &EventType, data: &Value) -> Result<EventData, serde_json::Error> {
        serde_json::from_value(serde_json::json!({"type": kind.as_str(), "data": data}))
    }

    /// The turn the event is about, if it is about one.
    pub fn turn_id(&self) -> Option<&TurnId> {
        match self {
            EventData::TurnStarted(e) => Some(&e.turn_id),
            EventData::TurnUpdate(e) => Some(&e.turn_id),
            EventData::TurnSteer(e) => Some(&e.turn_id),
            EventData::StreamChunk(e) => Some(&e.turn_id),
            EventData::StreamComplete(e) => Some(&e.turn_id),
            EventData::TurnCompleted(e) => Some(&e.turn_id),
            EventData::ApprovalRequested(e) => e.approval.turn_id.as_ref(),
            EventData::ApprovalResolved(e) => e.approval.turn_id.as_ref(),
            EventData::ToolCall(e) => Some(&e.turn_id),
            EventData::ToolUpdate(e) => Some(&e.turn_id),
            EventData::PlanUpdate(e) => Some(&e.turn_id),
            EventData::UsageUpdate(e) => Some(&e.turn_id),
            EventData::CommandRan(e) => Some(&e.turn_id),
            EventData::FileChanged(e) => Some(&e.turn_id),
            EventData::PolicyViolation(e) => Some(&e.turn_id),
            EventData::PolicyModeRestored(e) => e.turn_id.as_ref(),
            EventData::DiagnosticsLog(e) => e.turn_id.as_ref(),
            EventData::SessionUpdate(_)
            | EventData::SessionClosed(_)
            | EventData::ProviderStatus(_)
            | EventData::FileWritten(_)
            | EventData::FileDeleted(_)
            | EventData::ActorRestarted(_)
            | EventData::SettingsChanged(_)
            | EventData::WorkflowStarted(_)
            | EventData::WorkflowStep(_)
            | EventData::WorkflowEvent(_)
            | EventData::WorkflowError(_)
            | EventData::WorkflowPaused(_)
            | EventData::WorkflowCompleted(_)
            | EventData::TaskUpdated(_)
            | EventData::TaskRemoved(_)
            | EventData::TerminalBinding(_)
            | EventData::BindingLost(_)
            | EventData::TerminalAction(_)
            | EventData::TerminalDenied(_)
            | EventData::CapabilityUpdate(_) => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SessionClosed {
    pub session_id: SessionId,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TurnStarted {
    pub turn_id: TurnId,
    /// The turn's place in its session, from 1.
    pub number: u64,
    pub text: String,
    pub status: TurnStatus,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TurnUpdate {
    pub turn_id: TurnId,
    pub status: TurnStatus,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TurnSteer {
    pub turn_id: TurnId,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StreamChunk {
    pub turn_id: TurnId,
    /// 0, 1, 2… per turn, with no gap.
    pub index: u64,
    pub kind: ChunkKind,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StreamComplete {
    pub turn_id: TurnId,
    /// How many chunks the turn streamed.
    pub chunks: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TurnCompleted {
    pub turn_id: TurnId,
    pub status: TurnStatus,
    /// Why it ended so, when it did not complete (or completed with a word).
    pub reason: Option<String>,
    pub usage: Usage,
    /// The result of a turn that ran one command (the `shell` provider).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<CommandResult>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ApprovalRequested {
    pub approval: ApprovalView,
    /// The session's policy when it was asked for.
    pub policy: Policy,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ApprovalResolved {
    pub approval: ApprovalView,
    /// Decided by the daemon (full-access, or cancelled as its turn ended)
    /// rather than by a person.
    pub automatic: bool,
}

/// `provider:status`: where a session's provider worker and its agent
/// process stand, or (on the `system` topic) what was learned about a
/// provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ProviderStatusEvent {
    pub provider: String,
    /// The driver kind (`acp`, `codex-app-server`...), when the worker knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(flatten)]
    pub status: ProviderStatusKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ProviderStatusKind {
    /// The worker started (on the session's first turn, and after each restart).
    Ready { capabilities: ProviderCapabilities },
    /// The agent process is up and initialized.
    Running {
        pid: Option<u32>,
        /// What the agent calls itself (`agentInfo.name`).
        agent: Option<String>,
        version: Option<String>,
    },
    /// The worker is attached to an agent-side session (`{"session_id"}` for
    /// ACP, `{"thread_id"}` for codex); `resumed` when it is the one it had
    /// before a restart.
    Bound { binding: Value, resumed: bool },
    /// The agent process died unasked.
    Crashed { reason: String },
    /// The daemon stopped the agent process on purpose: it is stopping
    /// (SIGTERM), or the session's worker was stopped. A turn under way is
    /// taken up again when the session next runs.
    Stopped,
    /// The worker actor itself failed and is being restarted. (Written as
    /// `error` before events were typed.)
    Restarting {
        #[serde(alias = "error")]
        reason: String,
    },
    /// What was learned about holding the provider's agent to a policy
    /// (on the `system` topic).
    Enforcement { enforcement: Enforcement, detail: String, agent: Option<String> },
    /// A signed module made `version` of this provider current, by an
    /// install or a rollback (on the `system` topic): new sessions start it.
    Installed {
        version: String,
        /// The version it replaced, if one was current.
        #[serde(default)]
        replaced: Option<String>,
    },
}

/// A tool call as the agent announced it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ToolCallView {
    /// The agent's id for the call, unique within the turn.
    pub id: String,
    pub title: String,
    pub kind: ToolKind,
    pub status: ToolStatus,
    /// Protocol-specific details worth showing (command, paths, raw input, diffs).
    #[serde(default)]
    pub detail: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ToolCallEvent {
    pub turn_id: TurnId,
    pub tool: ToolCallView,
}

/// Progress or the result of a tool call; absent fields are unchanged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ToolUpdateEvent {
    pub turn_id: TurnId,
    pub tool_id: String,
    pub status: Option<ToolStatus>,
    pub title: Option<String>,
    pub output: Option<String>,
    #[serde(default)]
    pub detail: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PlanUpdate {
    pub turn_id: TurnId,
    /// The whole plan, replacing the last one.
    pub entries: Vec<PlanEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct UsageUpdate {
    pub turn_id: TurnId,
    pub usage: Usage,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CommandRan {
    pub turn_id: TurnId,
    pub command: CommandRun,
}

/// A file written or deleted through the file API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FileTouched {
    /// Relative to the worktree.
    pub path: String,
    /// Its size (written, or before it was deleted).
    pub bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FileChanged {
    pub turn_id: TurnId,
    pub path: String,
    pub summary: String,
    pub approval: ActionApproval,
    pub approval_id: Option<ApprovalId>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PolicyViolation {
    pub turn_id: TurnId,
    pub provider: String,
    pub action: Action,
    /// What the agent did, in words.
    pub what: String,
    pub policy: Policy,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PolicyModeRestored {
    pub provider: String,
    pub turn_id: Option<TurnId>,
    /// The mode the agent switched itself to.
    pub from: String,
    /// The asking mode it was put back in.
    pub to: String,
}

/// What a `settings:changed` event says changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SettingsChanged {
    /// The kind of setting: `secret`.
    pub setting: String,
    /// Which one (a secret's name).
    pub name: String,
    /// `set` or `removed`.
    pub change: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ActorRestarted {
    pub actor: String,
    /// `session`, `turn`, `provider`, `providers`, `sessions`, `front`, `diagnostics` or `root`.
    pub kind: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DiagnosticsLog {
    pub level: LogLevel,
    pub session_id: Option<SessionId>,
    pub turn_id: Option<TurnId>,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_keep_their_wire_form() {
        let chunk = EventData::StreamChunk(StreamChunk {
            turn_id: "t_1".into(),
            index: 3,
            kind: ChunkKind::Text,
            text: "hi".into(),
        });
        let event = chunk.clone().into_event(Topic::session("s_1"));
        assert_eq!(event.kind, EventType::StreamChunk);
        assert_eq!(event.data, json!({"turn_id": "t_1", "index": 3, "kind": "text", "text": "hi"}));
        assert_eq!(EventData::from_parts(&event.kind, &event.data).unwrap(), chunk);
    }

    #[test]
    fn provider_status_is_flat_and_reads_the_old_error_field() {
        let status = EventData::ProviderStatus(ProviderStatusEvent {
            provider: "codex".into(),
            kind: None,
            status: ProviderStatusKind::Restarting { reason: "boom".into() },
        });
        let event = status.into_event(Topic::session("s_1"));
        assert_eq!(event.data, json!({"provider": "codex", "status": "restarting", "reason": "boom"}));
        let old = json!({"provider": "codex", "status": "restarting", "error": "boom"});
        let EventData::ProviderStatus(read) = EventData::from_parts(&EventType::ProviderStatus, &old).unwrap() else {
            panic!("not a provider:status")
        };
        assert_eq!(read.status, ProviderStatusKind::Restarting { reason: "boom".into() });
    }

    #[test]
    fn ended_by_reads_signals_and_names() {
        let run: CommandRun = serde_json::from_value(json!({
            "command": "x", "cwd": "/", "exit_code": null, "ended_by": "signal 9", "started_at": "t",
            "duration_ms": 1, "stdout_bytes": 0, "stderr_bytes": 0
        }))
        .unwrap();
        assert_eq!(run.ended_by, Some(EndedBy::Signal(9)));
        assert_eq!(serde_json::to_value(EndedBy::TimedOut).unwrap(), json!("timed_out"));
        assert!("nonsense".parse::<EndedBy>().is_err());
    }
}
