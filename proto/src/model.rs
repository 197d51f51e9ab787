//! Small vocabulary types shared by the API, the events and the store.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $wire:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $wire)] $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $wire),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($wire => Ok($name::$variant),)+
                    _ => Err(format!(
                        "unknown {} {s:?}; expected one of: {}",
                        stringify!($name),
                        [$($wire),+].join(", ")
                    )),
                }
            }
        }
    };
}

wire_enum!(
    /// How the daemon decides on an agent's request to act.
    Policy {
        PlanOnly => "plan-only",
        FullAccess => "full-access",
    }
);

wire_enum!(
    /// Where a session stands, as a client sees it.
    SessionStatus {
        Idle => "idle",
        Running => "running",
        AwaitingApproval => "awaiting_approval",
        Archived => "archived",
    }
);

wire_enum!(
    /// The lifecycle of a turn: started → running → (awaiting_approval ↔ running)* → end.
    TurnStatus {
        Started => "started",
        Running => "running",
        AwaitingApproval => "awaiting_approval",
        Completed => "completed",
        Interrupted => "interrupted",
        Failed => "failed",
    }
);

impl TurnStatus {
    pub fn is_final(self) -> bool {
        matches!(self, TurnStatus::Completed | TurnStatus::Interrupted | TurnStatus::Failed)
    }
}

wire_enum!(
    ApprovalStatus {
        Pending => "pending",
        Accepted => "accepted",
        Declined => "declined",
        Cancelled => "cancelled",
    }
);

wire_enum!(
    /// A decision on an approval, as a client sends it.
    ///
    /// `accept_for_session` also lets the agent repeat the same kind of action
    /// for the rest of the session without asking (where its protocol has
    /// that); `cancel` declines and interrupts the turn.
    Decision {
        Accept => "accept",
        AcceptForSession => "accept_for_session",
        Decline => "decline",
        Cancel => "cancel",
    }
);

impl Decision {
    pub fn resulting_status(self) -> ApprovalStatus {
        match self {
            Decision::Accept | Decision::AcceptForSession => ApprovalStatus::Accepted,
            Decision::Decline => ApprovalStatus::Declined,
            Decision::Cancel => ApprovalStatus::Cancelled,
        }
    }

    /// Whether the action may go ahead.
    pub fn allows(self) -> bool {
        matches!(self, Decision::Accept | Decision::AcceptForSession)
    }
}

wire_enum!(
    /// Who took a decision: a person through the API, or the daemon under `full-access`.
    DecidedBy {
        User => "user",
        Policy => "policy",
        Daemon => "daemon",
    }
);

wire_enum!(
    /// What a streamed chunk carries.
    ChunkKind {
        Text => "text",
        Thought => "thought",
        CommandOutput => "command_output",
        Notice => "notice",
    }
);

wire_enum!(
    ProviderState {
        Starting => "starting",
        Ready => "ready",
        Busy => "busy",
        Crashed => "crashed",
        Stopped => "stopped",
    }
);

wire_enum!(
    /// Where a tool call stands.
    ToolStatus {
        Pending => "pending",
        InProgress => "in_progress",
        Completed => "completed",
        Failed => "failed",
    }
);

wire_enum!(
    /// What a tool an agent uses does.
    ToolKind {
        Execute => "execute",
        Edit => "edit",
        Read => "read",
        Search => "search",
        Fetch => "fetch",
        Think => "think",
        Delete => "delete",
        Move => "move",
        SwitchMode => "switch_mode",
        Other => "other",
    }
);

wire_enum!(
    /// How serious a `diagnostics:log` line is.
    LogLevel {
        Info => "info",
        Warn => "warn",
        Error => "error",
    }
);

wire_enum!(
    PlanEntryStatus {
        Pending => "pending",
        InProgress => "in_progress",
        Completed => "completed",
    }
);

/// One step of an agent's plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PlanEntry {
    pub content: String,
    pub status: PlanEntryStatus,
}

/// An action an agent asks permission for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    /// Run a shell command in `cwd`.
    Command { command: String, cwd: String },
    /// Write or change a file.
    FileChange { path: String, summary: String },
    /// Anything else an agent asks about (a fetch, an MCP tool...), as the
    /// agent titled it; `tool` is its kind (`fetch`, `read`, `other`...).
    Other { tool: String, title: String },
    /// A workflow's gate: a person decides whether the run goes on.
    Gate { run_id: crate::ids::WorkflowRunId, step_id: String, message: String },
    /// An action on a terminal that policy or the paste guard holds for a
    /// person: `action` is `spawn` or `send_text`; `text` is the command or
    /// the text with every invisible, control and line-break character made
    /// visible; `concerns` says why it is asked (`runs_command`,
    /// `multi_line`, `invisible_characters`, `escape_sequences`).
    Terminal {
        binding_id: Option<String>,
        terminal: crate::terminal::TerminalKind,
        action: String,
        text: String,
        concerns: Vec<String>,
    },
}

impl Action {
    pub fn describe(&self) -> String {
        match self {
            Action::Command { command, cwd } => format!("run `{command}` in {cwd}"),
            Action::FileChange { path, summary } => format!("change {path}: {summary}"),
            Action::Other { tool, title } => format!("{tool}: {title}"),
            Action::Gate { step_id, message, .. } => format!("gate {step_id}: {message}"),
            Action::Terminal { terminal, action, text, .. } => format!("{terminal} {action}: {text}"),
        }
    }
}

/// Token counts, per turn and summed per session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Tokens in the agent's context window at the last report, for agents
    /// that report that rather than tokens per turn (ACP `usage_update`).
    /// Not summed: a session shows the latest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_tokens: Option<u64>,
}

impl Usage {
    /// Tokens spent, with no context size.
    pub const fn new(input_tokens: u64, output_tokens: u64) -> Usage {
        Usage { input_tokens, output_tokens, context_tokens: None }
    }

    pub fn add(&mut self, other: Usage) {
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.context_tokens = other.context_tokens.or(self.context_tokens);
    }
}

wire_enum!(
    /// How a provider's agent is held to the session's policy
    /// (`GET /api/v1/providers`, docs/SECURITY.md).
    Enforcement {
        /// Not learned yet: the agent has not been started with this config.
        Unknown => "unknown",
        /// The agent runs in a mode that asks before it acts, put there by
        /// the daemon, and the daemon checks that it stays there.
        AgentMode => "agent-mode",
        /// The agent's commands and file writes are carried out by the daemon.
        Daemon => "daemon",
        /// The agent gave no way to check that it asks, or it was caught
        /// acting without asking: plan-only sessions on it are refused.
        Unverified => "unverified",
    }
);

wire_enum!(
    /// What allowed a command or a file change the audit trail records.
    ActionApproval {
        /// A person accepted the approval it asked for.
        User => "user",
        /// The session's `full-access` policy accepted it.
        Policy => "policy",
        /// The agent ran it without asking, as a read-only command its own
        /// rules let through (codex's known-safe list under `untrusted`).
        AgentSafeList => "agent-safe-list",
        /// Nothing did: no accepted approval covers it.
        Unapproved => "none",
    }
);

/// How a command ended when it did not exit by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndedBy {
    Interrupted,
    TimedOut,
    /// Its output passed the limit kept of it.
    OutputLimit,
    Killed,
    FailedToStart,
    /// The agent said it failed, with no exit code.
    Failed,
    /// An ACP agent announced the command and never said how it ended.
    ExitNotReported,
    /// A terminal the daemon ran for an ACP agent, still running at the turn's end.
    KilledAtTurnEnd,
    /// Killed by this signal (`"signal 9"` on the wire).
    Signal(i32),
}

impl EndedBy {
    const NAMED: &'static [(EndedBy, &'static str)] = &[
        (EndedBy::Interrupted, "interrupted"),
        (EndedBy::TimedOut, "timed_out"),
        (EndedBy::OutputLimit, "output_limit"),
        (EndedBy::Killed, "killed"),
        (EndedBy::FailedToStart, "failed_to_start"),
        (EndedBy::Failed, "failed"),
        (EndedBy::ExitNotReported, "exit_not_reported"),
        (EndedBy::KilledAtTurnEnd, "killed_at_turn_end"),
    ];
}

impl fmt::Display for EndedBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndedBy::Signal(n) => write!(f, "signal {n}"),
            named => {
                let name = EndedBy::NAMED.iter().find(|(e, _)| e == named).map_or("?", |(_, n)| *n);
                f.write_str(name)
            }
        }
    }
}

impl FromStr for EndedBy {
    type Err = String;
    fn from_str(s: &str) -> Result<EndedBy, String> {
        if let Some(n) = s.strip_prefix("signal ") {
            return n.parse().map(EndedBy::Signal).map_err(|_| format!("bad signal number in {s:?}"));
        }
        EndedBy::NAMED.iter().find(|(_, name)| *name == s).map(|(e, _)| *e).ok_or_else(|| {
            let names: Vec<&str> = EndedBy::NAMED.iter().map(|(_, n)| *n).collect();
            format!("unknown ended_by {s:?}; expected one of: {}, or \"signal N\"", names.join(", "))
        })
    }
}

impl Serialize for EndedBy {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for EndedBy {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<EndedBy, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl schemars::JsonSchema for EndedBy {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "EndedBy".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let names: Vec<&str> = EndedBy::NAMED.iter().map(|(_, n)| *n).collect();
        schemars::json_schema!({
            "description": "How a command ended when it did not exit by itself; `signal N` when killed by signal N.",
            "anyOf": [
                {"type": "string", "enum": names},
                {"type": "string", "pattern": "^signal [0-9]+$"}
            ]
        })
    }
}

/// A command run for a session, as the audit log keeps it (`command:ran`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CommandRun {
    pub command: String,
    pub cwd: String,
    /// `None` when the command was killed by a signal or never started.
    pub exit_code: Option<i32>,
    /// How it ended when not by exiting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_by: Option<EndedBy>,
    /// RFC 3339, when the command was started.
    pub started_at: String,
    pub duration_ms: u64,
    /// Bytes the command wrote to stdout and stderr, before any truncation.
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    /// What allowed it; set by the daemon when it records the run (absent in
    /// records written before approvals were audited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<ActionApproval>,
    /// The approval that covered it, when one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_id: Option<crate::ApprovalId>,
}

/// The structured result of a turn that ran one command (the `shell`
/// provider), carried by `turn:completed` as `result`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CommandResult {
    /// `None` when the command was killed by a signal.
    pub exit_code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub duration_ms: u64,
    /// True when stdout or stderr was cut to the size kept in a result.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enums_parse_their_wire_names_only() {
        assert_eq!("plan-only".parse::<Policy>(), Ok(Policy::PlanOnly));
        let err = "yolo".parse::<Policy>().unwrap_err();
        assert!(err.contains("plan-only, full-access"), "{err}");
        assert_eq!(serde_json::to_string(&TurnStatus::AwaitingApproval).unwrap(), "\"awaiting_approval\"");
        assert!(TurnStatus::Failed.is_final());
        assert!(!TurnStatus::Running.is_final());
    }

    #[test]
    fn action_is_tagged_by_kind() {
        let a = Action::Command { command: "ls".into(), cwd: "/tmp".into() };
        let v = serde_json::to_value(&a).unwrap();
        assert_eq!(v["kind"], "command");
        assert_eq!(serde_json::from_value::<Action>(v).unwrap(), a);
    }
}
