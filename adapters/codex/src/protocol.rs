//! The subset of the `codex app-server` protocol (v2) Bosun speaks, as serde
//! types.
//!
//! Requests we send are typed strictly, so `tests/codex_schema.rs` can check
//! them against the schema the installed codex generates. Messages we receive
//! are typed leniently: optional fields default, unknown fields are ignored and
//! unknown item kinds or statuses land in an `Other`/`Unknown` variant, so a
//! newer codex that adds to the protocol does not break a turn.

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub mod method {
    pub const INITIALIZE: &str = "initialize";
    pub const INITIALIZED: &str = "initialized";
    pub const THREAD_START: &str = "thread/start";
    pub const THREAD_RESUME: &str = "thread/resume";
    pub const TURN_START: &str = "turn/start";
    pub const TURN_STEER: &str = "turn/steer";
    pub const TURN_INTERRUPT: &str = "turn/interrupt";
    /// Experimental: stops the thread's background terminals.
    pub const BACKGROUND_TERMINALS_CLEAN: &str = "thread/backgroundTerminals/clean";

    pub const ERROR: &str = "error";
    pub const WARNING: &str = "warning";
    pub const CONFIG_WARNING: &str = "configWarning";
    pub const DEPRECATION_NOTICE: &str = "deprecationNotice";
    pub const TURN_STARTED: &str = "turn/started";
    pub const TURN_COMPLETED: &str = "turn/completed";
    pub const TURN_PLAN_UPDATED: &str = "turn/plan/updated";
    pub const ITEM_STARTED: &str = "item/started";
    pub const ITEM_COMPLETED: &str = "item/completed";
    pub const AGENT_MESSAGE_DELTA: &str = "item/agentMessage/delta";
    pub const REASONING_SUMMARY_TEXT_DELTA: &str = "item/reasoning/summaryTextDelta";
    pub const REASONING_SUMMARY_PART_ADDED: &str = "item/reasoning/summaryPartAdded";
    pub const REASONING_TEXT_DELTA: &str = "item/reasoning/textDelta";
    pub const COMMAND_OUTPUT_DELTA: &str = "item/commandExecution/outputDelta";
    pub const TOKEN_USAGE_UPDATED: &str = "thread/tokenUsage/updated";
    pub const SERVER_REQUEST_RESOLVED: &str = "serverRequest/resolved";

    pub const COMMAND_APPROVAL: &str = "item/commandExecution/requestApproval";
    pub const FILE_CHANGE_APPROVAL: &str = "item/fileChange/requestApproval";
}

// ---------------------------------------------------------------------------
// Client → server
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InitializeParams {
    pub client_info: ClientInfo,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<InitializeCapabilities>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InitializeCapabilities {
    /// Needed for `thread/backgroundTerminals/clean`, the only way to stop
    /// the commands an interrupted turn leaves running.
    pub experimental_api: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientInfo {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    pub version: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InitializeResponse {
    #[serde(default)]
    pub user_agent: Option<String>,
}

impl InitializeResponse {
    /// The codex version from a user agent like
    /// `bosun/0.169.0 (Debian 12.0.0; x86_64) xterm (bosun; 0.1)`: codex
    /// names itself after the client but keeps its own version there.
    pub fn version(&self) -> Option<String> {
        let agent = self.user_agent.as_deref()?.trim();
        let first = agent.split_whitespace().next()?;
        match first.split_once('/') {
            Some((_, version)) if !version.is_empty() => Some(version.to_string()),
            _ => Some(agent.to_string()),
        }
    }
}

/// When codex asks before acting. Bosun always asks for `untrusted`: the
/// daemon, not the agent, decides under the session's policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AskForApproval {
    Untrusted,
    OnRequest,
    Never,
}

/// Who answers codex's approval requests. Bosun always wants `user`, which
/// routes them to the client (us); `auto_review` would have a codex subagent
/// decide them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalsReviewer {
    User,
    AutoReview,
    GuardianSubagent,
}

/// `thread/start`. The sandbox is deliberately not set: the user's codex
/// config decides it. The approval settings are always set, whatever that
/// config says.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ThreadStartParams {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval_policy: Option<AskForApproval>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approvals_reviewer: Option<ApprovalsReviewer>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ThreadResumeParams {
    pub thread_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval_policy: Option<AskForApproval>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approvals_reviewer: Option<ApprovalsReviewer>,
    /// We need the thread, not its history: without this codex loads every
    /// past turn into the reply (and warns that doing so is deprecated).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exclude_turns: Option<bool>,
}

/// The reply to `thread/start` and `thread/resume` (only what we use).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ThreadResponse {
    pub thread: ThreadInfo,
    /// What the thread really runs with: checked, so a codex that ignored
    /// our settings is found out before it is prompted. Kept as JSON, since
    /// it may also be a `{"granular": ..}` object.
    #[serde(default)]
    pub approval_policy: Option<Value>,
    #[serde(default)]
    pub approvals_reviewer: Option<Value>,
}

impl ThreadResponse {
    /// Why the thread would not ask us before it acts, if it would not.
    pub fn weaker_than_untrusted(&self) -> Option<String> {
        let policy = self.approval_policy.as_ref();
        if policy.and_then(Value::as_str) != Some("untrusted") {
            let shown = policy.map_or_else(|| "none".to_string(), Value::to_string);
            return Some(format!("the thread's approval policy is {shown}, not \"untrusted\""));
        }
        match self.approvals_reviewer.as_ref().and_then(Value::as_str) {
            // An older codex does not report a reviewer: it has no other.
            None | Some("user") => None,
            Some(other) => Some(format!("the thread's approvals go to {other:?}, not to the user")),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ThreadInfo {
    pub id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum UserInput {
    Text {
        text: String,
        /// UI spans inside `text`; we have none but codex expects the list.
        #[serde(default)]
        text_elements: Vec<Value>,
    },
}

impl UserInput {
    pub fn text(text: impl Into<String>) -> UserInput {
        UserInput::Text { text: text.into(), text_elements: Vec::new() }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TurnStartParams {
    pub thread_id: String,
    pub input: Vec<UserInput>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TurnStartResponse {
    pub turn: Turn,
}

/// Adds input to the turn under way; refused unless `expected_turn_id` is
/// the active turn.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TurnSteerParams {
    pub thread_id: String,
    pub expected_turn_id: String,
    pub input: Vec<UserInput>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TurnSteerResponse {
    pub turn_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TurnInterruptParams {
    pub thread_id: String,
    pub turn_id: String,
}

/// Stops the commands codex keeps running for a thread. Codex runs each
/// command in a session of its own and does not stop it when a turn is
/// interrupted ("may still be running in the background"): this does.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BackgroundTerminalsCleanParams {
    pub thread_id: String,
}

/// The answer to both approval requests. Codex offers more (execpolicy and
/// network amendments) that the daemon's vocabulary has no word for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ApprovalDecision {
    Accept,
    AcceptForSession,
    /// Refused; the agent goes on with the turn.
    Decline,
    /// Refused, and the turn is interrupted.
    Cancel,
}

impl From<bosun_proto::Decision> for ApprovalDecision {
    fn from(decision: bosun_proto::Decision) -> ApprovalDecision {
        match decision {
            bosun_proto::Decision::Accept => ApprovalDecision::Accept,
            bosun_proto::Decision::AcceptForSession => ApprovalDecision::AcceptForSession,
            bosun_proto::Decision::Decline => ApprovalDecision::Decline,
            bosun_proto::Decision::Cancel => ApprovalDecision::Cancel,
        }
    }
}

/// The result of `item/commandExecution/requestApproval` and
/// `item/fileChange/requestApproval`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalResponse {
    pub decision: ApprovalDecision,
}

// ---------------------------------------------------------------------------
// Server → client
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum TurnStatus {
    Completed,
    Interrupted,
    Failed,
    InProgress,
    #[serde(other)]
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Turn {
    pub id: String,
    pub status: TurnStatus,
    #[serde(default)]
    pub error: Option<TurnError>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TurnError {
    pub message: String,
    #[serde(default)]
    pub additional_details: Option<String>,
}

impl TurnError {
    pub fn describe(&self) -> String {
        match self.additional_details.as_deref().map(str::trim) {
            Some(details) if !details.is_empty() => format!("{} ({details})", self.message),
            _ => self.message.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TurnNotification {
    pub thread_id: String,
    pub turn: Turn,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorNotification {
    pub error: TurnError,
    pub thread_id: String,
    pub turn_id: String,
    /// Codex retries by itself: the turn is not over.
    #[serde(default)]
    pub will_retry: bool,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WarningNotification {
    pub message: String,
    #[serde(default)]
    pub thread_id: Option<String>,
}

/// `configWarning` and `deprecationNotice`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SummaryNotification {
    pub summary: String,
    #[serde(default)]
    pub details: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PlanStepStatus {
    Pending,
    InProgress,
    Completed,
    #[serde(other)]
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PlanStep {
    pub step: String,
    pub status: PlanStepStatus,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TurnPlanUpdatedNotification {
    pub thread_id: String,
    pub turn_id: String,
    pub plan: Vec<PlanStep>,
    #[serde(default)]
    pub explanation: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ItemNotification {
    pub thread_id: String,
    pub turn_id: String,
    pub item: ThreadItem,
}

/// Any of the streamed text deltas (agent message, reasoning, command output).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeltaNotification {
    pub thread_id: String,
    pub turn_id: String,
    pub item_id: String,
    pub delta: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SummaryPartAddedNotification {
    pub thread_id: String,
    pub turn_id: String,
    pub item_id: String,
    pub summary_index: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenUsageBreakdown {
    pub input_tokens: i64,
    pub output_tokens: i64,
    #[serde(default)]
    pub cached_input_tokens: i64,
    #[serde(default)]
    pub reasoning_output_tokens: i64,
    #[serde(default)]
    pub total_tokens: i64,
}

/// `total` is the whole thread's usage so far, `last` the usage of the last
/// model response only (not of the turn: a turn with a tool call makes two
/// responses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct ThreadTokenUsage {
    pub total: TokenUsageBreakdown,
    pub last: TokenUsageBreakdown,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenUsageNotification {
    pub thread_id: String,
    pub turn_id: String,
    pub token_usage: ThreadTokenUsage,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerRequestResolvedNotification {
    pub thread_id: String,
    pub request_id: Value,
}

/// Where an item stands (command, file change, MCP or dynamic tool call...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ItemStatus {
    InProgress,
    Completed,
    Failed,
    Declined,
    Interrupted,
    #[serde(other)]
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct FileUpdateChange {
    pub path: String,
    pub kind: PatchChangeKind,
    #[serde(default)]
    pub diff: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum PatchChangeKind {
    Add,
    Delete,
    Update {
        #[serde(default)]
        move_path: Option<String>,
    },
    #[serde(other)]
    Other,
}

impl PatchChangeKind {
    pub fn verb(&self) -> &'static str {
        match self {
            PatchChangeKind::Add => "add",
            PatchChangeKind::Delete => "delete",
            PatchChangeKind::Update { move_path: Some(_) } => "move",
            PatchChangeKind::Update { move_path: None } => "update",
            PatchChangeKind::Other => "change",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct McpToolCallError {
    pub message: String,
}

/// One entry of a thread: what the user said, what the agent said or did.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum ThreadItem {
    #[serde(rename_all = "camelCase")]
    AgentMessage {
        id: String,
        #[serde(default)]
        text: String,
    },
    #[serde(rename_all = "camelCase")]
    Reasoning {
        id: String,
        #[serde(default)]
        summary: Vec<String>,
    },
    #[serde(rename_all = "camelCase")]
    CommandExecution {
        id: String,
        command: String,
        cwd: String,
        status: ItemStatus,
        #[serde(default)]
        aggregated_output: Option<String>,
        #[serde(default)]
        exit_code: Option<i64>,
        #[serde(default)]
        duration_ms: Option<i64>,
    },
    #[serde(rename_all = "camelCase")]
    FileChange { id: String, changes: Vec<FileUpdateChange>, status: ItemStatus },
    #[serde(rename_all = "camelCase")]
    McpToolCall {
        id: String,
        server: String,
        tool: String,
        status: ItemStatus,
        #[serde(default)]
        arguments: Value,
        #[serde(default)]
        result: Option<Value>,
        #[serde(default)]
        error: Option<McpToolCallError>,
    },
    #[serde(rename_all = "camelCase")]
    DynamicToolCall {
        id: String,
        tool: String,
        status: ItemStatus,
        #[serde(default)]
        arguments: Value,
        #[serde(default)]
        content_items: Option<Value>,
    },
    #[serde(rename_all = "camelCase")]
    CollabAgentToolCall {
        id: String,
        tool: String,
        status: ItemStatus,
        #[serde(default)]
        prompt: Option<String>,
    },
    #[serde(rename_all = "camelCase")]
    WebSearch { id: String, query: String },
    #[serde(rename_all = "camelCase")]
    ImageView { id: String, path: String },
    #[serde(rename_all = "camelCase")]
    ImageGeneration { id: String, status: String },
    /// Items that are not tool calls (user messages, plans, compaction...) or
    /// that this version of Bosun does not know.
    #[serde(other)]
    Other,
}

/// The notifications Bosun acts on; everything else is `Other`.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerNotification {
    Error(ErrorNotification),
    Warning(WarningNotification),
    ConfigWarning(SummaryNotification),
    DeprecationNotice(SummaryNotification),
    TurnStarted(TurnNotification),
    TurnCompleted(TurnNotification),
    TurnPlanUpdated(TurnPlanUpdatedNotification),
    ItemStarted(ItemNotification),
    ItemCompleted(ItemNotification),
    AgentMessageDelta(DeltaNotification),
    ReasoningSummaryTextDelta(DeltaNotification),
    ReasoningSummaryPartAdded(SummaryPartAddedNotification),
    ReasoningTextDelta(DeltaNotification),
    CommandOutputDelta(DeltaNotification),
    TokenUsageUpdated(TokenUsageNotification),
    ServerRequestResolved(ServerRequestResolvedNotification),
    Other(String),
}

impl ServerNotification {
    /// Reads a notification; an error means a method we know came with
    /// params we cannot read.
    pub fn parse(method_name: &str, params: Value) -> Result<ServerNotification, serde_json::Error> {
        use serde_json::from_value as read;
        use ServerNotification as N;
        Ok(match method_name {
            method::ERROR => N::Error(read(params)?),
            method::WARNING => N::Warning(read(params)?),
            method::CONFIG_WARNING => N::ConfigWarning(read(params)?),
            method::DEPRECATION_NOTICE => N::DeprecationNotice(read(params)?),
            method::TURN_STARTED => N::TurnStarted(read(params)?),
            method::TURN_COMPLETED => N::TurnCompleted(read(params)?),
            method::TURN_PLAN_UPDATED => N::TurnPlanUpdated(read(params)?),
            method::ITEM_STARTED => N::ItemStarted(read(params)?),
            method::ITEM_COMPLETED => N::ItemCompleted(read(params)?),
            method::AGENT_MESSAGE_DELTA => N::AgentMessageDelta(read(params)?),
            method::REASONING_SUMMARY_TEXT_DELTA => N::ReasoningSummaryTextDelta(read(params)?),
            method::REASONING_SUMMARY_PART_ADDED => N::ReasoningSummaryPartAdded(read(params)?),
            method::REASONING_TEXT_DELTA => N::ReasoningTextDelta(read(params)?),
            method::COMMAND_OUTPUT_DELTA => N::CommandOutputDelta(read(params)?),
            method::TOKEN_USAGE_UPDATED => N::TokenUsageUpdated(read(params)?),
            method::SERVER_REQUEST_RESOLVED => N::ServerRequestResolved(read(params)?),
            other => N::Other(other.to_string()),
        })
    }

    /// The thread a notification is about, when it says.
    pub fn thread_id(&self) -> Option<&str> {
        use ServerNotification as N;
        match self {
            N::Error(n) => Some(&n.thread_id),
            N::Warning(n) => n.thread_id.as_deref(),
            N::TurnStarted(n) | N::TurnCompleted(n) => Some(&n.thread_id),
            N::TurnPlanUpdated(n) => Some(&n.thread_id),
            N::ItemStarted(n) | N::ItemCompleted(n) => Some(&n.thread_id),
            N::AgentMessageDelta(n)
            | N::ReasoningSummaryTextDelta(n)
            | N::ReasoningTextDelta(n)
            | N::CommandOutputDelta(n) => Some(&n.thread_id),
            N::ReasoningSummaryPartAdded(n) => Some(&n.thread_id),
            N::TokenUsageUpdated(n) => Some(&n.thread_id),
            N::ServerRequestResolved(n) => Some(&n.thread_id),
            N::ConfigWarning(_) | N::DeprecationNotice(_) | N::Other(_) => None,
        }
    }

    /// The turn a notification is about, when it says.
    pub fn turn_id(&self) -> Option<&str> {
        use ServerNotification as N;
        match self {
            N::Error(n) => Some(&n.turn_id),
            N::TurnStarted(n) | N::TurnCompleted(n) => Some(&n.turn.id),
            N::TurnPlanUpdated(n) => Some(&n.turn_id),
            N::ItemStarted(n) | N::ItemCompleted(n) => Some(&n.turn_id),
            N::AgentMessageDelta(n)
            | N::ReasoningSummaryTextDelta(n)
            | N::ReasoningTextDelta(n)
            | N::CommandOutputDelta(n) => Some(&n.turn_id),
            N::ReasoningSummaryPartAdded(n) => Some(&n.turn_id),
            N::TokenUsageUpdated(n) => Some(&n.turn_id),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommandApprovalParams {
    pub thread_id: String,
    pub turn_id: String,
    pub item_id: String,
    #[serde(default)]
    pub command: Option<String>,
    #[serde(default)]
    pub cwd: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileChangeApprovalParams {
    pub thread_id: String,
    pub turn_id: String,
    /// The `fileChange` item announced just before, which holds the paths.
    pub item_id: String,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub grant_root: Option<String>,
}

/// Requests codex sends us; Bosun answers the two approvals and refuses the
/// rest.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerRequest {
    CommandApproval(CommandApprovalParams),
    FileChangeApproval(FileChangeApprovalParams),
    Other(String),
}

impl ServerRequest {
    pub fn parse(method_name: &str, params: Value) -> Result<ServerRequest, serde_json::Error> {
        Ok(match method_name {
            method::COMMAND_APPROVAL => ServerRequest::CommandApproval(serde_json::from_value(params)?),
            method::FILE_CHANGE_APPROVAL => ServerRequest::FileChangeApproval(serde_json::from_value(params)?),
            other => ServerRequest::Other(other.to_string()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn requests_serialize_with_codex_field_names() {
        let start = ThreadStartParams {
            cwd: Some("/w".into()),
            approval_policy: Some(AskForApproval::Untrusted),
            approvals_reviewer: Some(ApprovalsReviewer::User),
        };
        assert_eq!(
            serde_json::to_value(&start).unwrap(),
            json!({"cwd": "/w", "approvalPolicy": "untrusted", "approvalsReviewer": "user"})
        );
        let steer = TurnSteerParams {
            thread_id: "t".into(),
            expected_turn_id: "u".into(),
            input: vec![UserInput::text("more")],
        };
        assert_eq!(
            serde_json::to_value(&steer).unwrap(),
            json!({"threadId": "t", "expectedTurnId": "u", "input": [{"type": "text", "text": "more", "text_elements": []}]})
        );
        let decisions: Vec<Value> = bosun_proto::Decision::ALL
            .iter()
            .map(|d| serde_json::to_value(ApprovalResponse { decision: (*d).into() }).unwrap()["decision"].clone())
            .collect();
        assert_eq!(decisions, [json!("accept"), json!("acceptForSession"), json!("decline"), json!("cancel")]);
    }

    #[test]
    fn version_comes_from_the_user_agent() {
        let reply = InitializeResponse { user_agent: Some("bosun/0.169.0 (Debian 12.0.0; x86_64) xterm".into()) };
        assert_eq!(reply.version().as_deref(), Some("0.169.0"));
        assert_eq!(InitializeResponse { user_agent: Some("odd".into()) }.version().as_deref(), Some("odd"));
        assert_eq!(InitializeResponse { user_agent: None }.version(), None);
    }

    #[test]
    fn unknown_items_and_statuses_do_not_break_parsing() {
        let n = ServerNotification::parse(
            method::ITEM_STARTED,
            json!({"threadId": "t", "turnId": "u", "item": {"type": "somethingNew", "id": "i"}}),
        )
        .unwrap();
        assert!(matches!(n, ServerNotification::ItemStarted(ItemNotification { item: ThreadItem::Other, .. })));
        let n = ServerNotification::parse(
            method::TURN_COMPLETED,
            json!({"threadId": "t", "turn": {"id": "u", "items": [], "status": "paused"}}),
        )
        .unwrap();
        assert!(matches!(
            n,
            ServerNotification::TurnCompleted(TurnNotification { turn: Turn { status: TurnStatus::Unknown, .. }, .. })
        ));
        assert_eq!(
            ServerNotification::parse("thread/new/thing", json!(null)).unwrap(),
            ServerNotification::Other("thread/new/thing".into())
        );
        assert!(ServerNotification::parse(method::AGENT_MESSAGE_DELTA, json!({"delta": 3})).is_err());
    }
}
