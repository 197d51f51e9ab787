//! The event envelope: the unit of the durable log and of the live stream.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Version of the envelope layout, carried as `v` in every envelope.
pub const ENVELOPE_VERSION: u8 = 1;

/// Every event kind Bosun emits. The wire name (`session:update`, ...) is the
/// serde name; `Other` keeps events written by a newer daemon readable.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
pub enum EventType {
    #[serde(rename = "session:update")]
    SessionUpdate,
    #[serde(rename = "session:closed")]
    SessionClosed,
    #[serde(rename = "turn:started")]
    TurnStarted,
    #[serde(rename = "turn:update")]
    TurnUpdate,
    #[serde(rename = "turn:steer")]
    TurnSteer,
    #[serde(rename = "stream:chunk")]
    StreamChunk,
    #[serde(rename = "stream:complete")]
    StreamComplete,
    #[serde(rename = "turn:completed")]
    TurnCompleted,
    #[serde(rename = "approval:requested")]
    ApprovalRequested,
    #[serde(rename = "approval:resolved")]
    ApprovalResolved,
    #[serde(rename = "provider:status")]
    ProviderStatus,
    #[serde(rename = "tool:call")]
    ToolCall,
    #[serde(rename = "tool:update")]
    ToolUpdate,
    #[serde(rename = "plan:update")]
    PlanUpdate,
    #[serde(rename = "usage:update")]
    UsageUpdate,
    /// A command run for the session ended: the audit record of it.
    #[serde(rename = "command:ran")]
    CommandRan,
    /// A file was written through the file API.
    #[serde(rename = "file:written")]
    FileWritten,
    #[serde(rename = "file:deleted")]
    FileDeleted,
    /// The agent reports it changed a file (an edit it made itself, or a
    /// write the daemon carried out for it): the audit record of it.
    #[serde(rename = "file:changed")]
    FileChanged,
    /// In a plan-only session the agent did something no approval covered.
    #[serde(rename = "policy:violation")]
    PolicyViolation,
    /// The agent left the mode that asks before acting and the daemon put it back.
    #[serde(rename = "policy:mode_restored")]
    PolicyModeRestored,
    #[serde(rename = "workflow:started")]
    WorkflowStarted,
    #[serde(rename = "workflow:step")]
    WorkflowStep,
    #[serde(rename = "workflow:event")]
    WorkflowEvent,
    #[serde(rename = "workflow:error")]
    WorkflowError,
    #[serde(rename = "workflow:paused")]
    WorkflowPaused,
    #[serde(rename = "workflow:completed")]
    WorkflowCompleted,
    #[serde(rename = "task:updated")]
    TaskUpdated,
    #[serde(rename = "task:removed")]
    TaskRemoved,
    #[serde(rename = "termbridge:binding")]
    TerminalBinding,
    #[serde(rename = "termbridge:binding_lost")]
    BindingLost,
    #[serde(rename = "termbridge:action")]
    TerminalAction,
    #[serde(rename = "termbridge:denied")]
    TerminalDenied,
    #[serde(rename = "termbridge:capability_update")]
    CapabilityUpdate,
    /// A setting was changed through the API; names it, never its value.
    #[serde(rename = "settings:changed")]
    SettingsChanged,
    #[serde(rename = "actor:restarted")]
    ActorRestarted,
    #[serde(rename = "diagnostics:log")]
    DiagnosticsLog,
    #[serde(untagged)]
    Other(String),
}

impl EventType {
    pub fn as_str(&self) -> &str {
        match self {
            EventType::SessionUpdate => "session:update",
            EventType::SessionClosed => "session:closed",
            EventType::TurnStarted => "turn:started",
            EventType::TurnUpdate => "turn:update",
            EventType::TurnSteer => "turn:steer",
            EventType::StreamChunk => "stream:chunk",
            EventType::StreamComplete => "stream:complete",
            EventType::TurnCompleted => "turn:completed",
            EventType::ApprovalRequested => "approval:requested",
            EventType::ApprovalResolved => "approval:resolved",
            EventType::ProviderStatus => "provider:status",
            EventType::ToolCall => "tool:call",
            EventType::ToolUpdate => "tool:update",
            EventType::PlanUpdate => "plan:update",
            EventType::UsageUpdate => "usage:update",
            EventType::CommandRan => "command:ran",
            EventType::FileWritten => "file:written",
            EventType::FileDeleted => "file:deleted",
            EventType::FileChanged => "file:changed",
            EventType::PolicyViolation => "policy:violation",
            EventType::PolicyModeRestored => "policy:mode_restored",
            EventType::WorkflowStarted => "workflow:started",
            EventType::WorkflowStep => "workflow:step",
            EventType::WorkflowEvent => "workflow:event",
            EventType::WorkflowError => "workflow:error",
            EventType::WorkflowPaused => "workflow:paused",
            EventType::WorkflowCompleted => "workflow:completed",
            EventType::TaskUpdated => "task:updated",
            EventType::TaskRemoved => "task:removed",
            EventType::TerminalBinding => "termbridge:binding",
            EventType::BindingLost => "termbridge:binding_lost",
            EventType::TerminalAction => "termbridge:action",
            EventType::TerminalDenied => "termbridge:denied",
            EventType::CapabilityUpdate => "termbridge:capability_update",
            EventType::SettingsChanged => "settings:changed",
            EventType::ActorRestarted => "actor:restarted",
            EventType::DiagnosticsLog => "diagnostics:log",
            EventType::Other(s) => s,
        }
    }
}

impl EventType {
    /// Whether the event belongs to a session's audit trail: what ran and
    /// what was written (`GET /api/v1/sessions/{id}/audit`).
    pub fn is_audit(&self) -> bool {
        matches!(
            self,
            EventType::CommandRan
                | EventType::FileWritten
                | EventType::FileDeleted
                | EventType::FileChanged
                | EventType::PolicyViolation
        )
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A topic names the stream an event belongs to: `session:<id>` for everything
/// about one session, `workflow:<id>` for one workflow run, `system` for
/// daemon-wide events.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(transparent)]
pub struct Topic(String);

impl Topic {
    pub const SYSTEM: &'static str = "system";

    pub fn session(id: &str) -> Topic {
        Topic(format!("session:{id}"))
    }

    pub fn workflow(run_id: &str) -> Topic {
        Topic(format!("workflow:{run_id}"))
    }

    pub fn system() -> Topic {
        Topic(Self::SYSTEM.to_string())
    }

    /// Parses a topic named by a client; only the two known shapes are accepted.
    pub fn parse(s: &str) -> Option<Topic> {
        if s == Self::SYSTEM {
            return Some(Topic::system());
        }
        let id = s.strip_prefix("session:").or_else(|| s.strip_prefix("workflow:"))?;
        if id.is_empty() || id.len() > 128 || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return None;
        }
        Some(Topic(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The run id, for a `workflow:<id>` topic.
    pub fn workflow_run_id(&self) -> Option<&str> {
        self.0.strip_prefix("workflow:")
    }

    /// The session id, for a `session:<id>` topic.
    pub fn session_id(&self) -> Option<&str> {
        self.0.strip_prefix("session:")
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An event before the log gave it a place: the store assigns `seq` and `ts`.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub topic: Topic,
    pub kind: EventType,
    pub data: serde_json::Value,
}

impl NewEvent {
    pub fn new(topic: Topic, kind: EventType, data: serde_json::Value) -> NewEvent {
        NewEvent { topic, kind, data }
    }
}

/// A persisted event, exactly as clients receive it.
///
/// `seq` is global, gap-free and strictly increasing; `ts` is RFC 3339 in UTC
/// with microseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    pub v: u8,
    pub seq: u64,
    pub ts: String,
    pub topic: Topic,
    #[serde(rename = "type")]
    pub kind: EventType,
    pub data: serde_json::Value,
}

impl Envelope {
    pub fn session_id(&self) -> Option<&str> {
        self.topic.session_id()
    }

    /// The event's data as its type's struct. Fails for a type this build
    /// does not know (`EventType::Other`) or data that does not fit it.
    pub fn payload(&self) -> Result<crate::EventData, serde_json::Error> {
        crate::EventData::from_parts(&self.kind, &self.data)
    }
}

/// The timestamp format of envelopes: RFC 3339, UTC, microseconds.
pub fn now_ts() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_type_names_round_trip() {
        let t: EventType = serde_json::from_str("\"turn:completed\"").unwrap();
        assert_eq!(t, EventType::TurnCompleted);
        let other: EventType = serde_json::from_str("\"future:thing\"").unwrap();
        assert_eq!(other, EventType::Other("future:thing".into()));
        assert_eq!(serde_json::to_string(&EventType::StreamChunk).unwrap(), "\"stream:chunk\"");
    }

    #[test]
    fn topics_are_validated() {
        assert!(Topic::parse("session:abc-1").is_some());
        assert!(Topic::parse("system").is_some());
        assert!(Topic::parse("session:").is_none());
        assert!(Topic::parse("session:a/b").is_none());
        assert!(Topic::parse("sessions").is_none());
        assert_eq!(Topic::parse("workflow:w_1").unwrap(), Topic::workflow("w_1"));
        assert!(Topic::parse("workflow:").is_none());
        assert_eq!(Topic::session("x").session_id(), Some("x"));
    }

    #[test]
    fn timestamps_have_microseconds() {
        let ts = now_ts();
        // 2026-11-21T23:54:16.123456Z
        assert_eq!(ts.len(), 27, "{ts}");
        assert!(ts.ends_with('Z'));
    }
}
