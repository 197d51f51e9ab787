//! What codex says, in Bosun's words. No I/O: fed notifications and
//! requests, [`TurnMapping`] returns events, so the mapping is testable as
//! is.

use std::collections::{HashMap, HashSet};

use bosun_proto::{
    Action, ChunkKind, CommandRun, EndedBy, Enforcement, PlanEntry, PlanEntryStatus, ToolKind, ToolStatus, Usage,
};
use serde_json::{json, Value};

use crate::protocol::{
    self, ApprovalDecision, FileUpdateChange, ItemStatus, PlanStep, PlanStepStatus, ServerNotification, ServerRequest,
    ThreadItem, ThreadResponse, TokenUsageBreakdown, Turn, TurnStatus,
};
use bosun_driver::{safe_commands, AgentEvent, Asked, EnforcementReport, LogLevel, ToolCall, ToolUpdate, TurnOutcome};

/// What to do with a request from codex.
#[derive(Debug, PartialEq)]
pub(crate) enum RequestOutcome {
    /// Ask the daemon (the event to emit); the answer comes as a decision.
    Ask(AgentEvent),
    /// Answer at once.
    Answer(ApprovalDecision),
    /// Not ours to serve: a JSON-RPC error.
    Refuse(String),
}

/// Maps one codex turn onto Bosun's events. No I/O: fed notifications and
/// requests, it returns events, so the mapping is testable as is.
#[derive(Debug)]
pub(crate) struct TurnMapping {
    pub(crate) thread_id: String,
    pub(crate) turn_id: Option<String>,
    cwd: String,
    /// Approvals asked for and not answered: our request id → codex's.
    pub(crate) approvals: HashMap<String, Value>,
    /// Tool items announced with a `ToolCall`.
    announced: HashSet<String>,
    /// Items whose text came as deltas, so their completion adds nothing.
    streamed: HashSet<String>,
    /// File changes as announced, for the approval that follows them.
    file_changes: HashMap<String, Vec<FileUpdateChange>>,
    /// The thread's token totals before this turn, when known.
    baseline: Option<TokenUsageBreakdown>,
    last_usage: Option<Usage>,
    /// The last error codex reported, the reason if the turn then fails.
    last_error: Option<String>,
    /// When each command item started, for its audit record.
    command_started: HashMap<String, String>,
    /// The daemon's id of this turn, which approvals are filed under.
    our_turn_id: String,
    /// Items codex asked about: item id → our request id.
    item_requests: HashMap<String, String>,
    /// What each request asked to do, for a grant "for the session".
    requested: HashMap<String, Requested>,
    /// Accepted for the session so far (this turn's copy).
    granted: Granted,
}

/// What an approval request was about.
#[derive(Debug, Clone)]
pub(crate) enum Requested {
    Command(String),
    FileChange,
}

impl TurnMapping {
    pub(crate) fn new(thread_id: String, cwd: String, baseline: Option<TokenUsageBreakdown>) -> TurnMapping {
        TurnMapping {
            thread_id,
            turn_id: None,
            cwd,
            approvals: HashMap::new(),
            announced: HashSet::new(),
            streamed: HashSet::new(),
            file_changes: HashMap::new(),
            baseline,
            last_usage: None,
            last_error: None,
            command_started: HashMap::new(),
            our_turn_id: String::new(),
            item_requests: HashMap::new(),
            requested: HashMap::new(),
            granted: Granted::default(),
        }
    }

    /// For the daemon's turn `turn_id`, with what was already granted for
    /// the session.
    pub(crate) fn for_turn(mut self, turn_id: &str, granted: Granted) -> TurnMapping {
        self.our_turn_id = turn_id.to_string();
        self.granted = granted;
        self
    }

    /// What covered a command codex ran: the approval it asked for, one
    /// granted for the session, its own safe list, or nothing.
    fn command_asked(&self, item_id: &str, command: &str) -> Asked {
        if let Some(request_id) = self.item_requests.get(item_id) {
            return Asked::request(&self.our_turn_id, request_id);
        }
        if let Some(asked) = self.granted.commands.get(command) {
            return asked.clone();
        }
        if safe_commands::is_known_safe(command) {
            return Asked::AgentSafeList;
        }
        Asked::NotAsked
    }

    fn file_change_asked(&self, item_id: &str) -> Asked {
        match self.item_requests.get(item_id) {
            Some(request_id) => Asked::request(&self.our_turn_id, request_id),
            None => self.granted.file_changes.clone().unwrap_or(Asked::NotAsked),
        }
    }

    /// Remembers an approval accepted for the session, so what codex then
    /// does without asking is seen as covered by it. Returns the grant to
    /// keep for later turns.
    pub(crate) fn grant(&mut self, request_id: &str) -> Option<Granted> {
        let asked = Asked::request(&self.our_turn_id, request_id);
        match self.requested.get(request_id)? {
            Requested::Command(command) => {
                self.granted.commands.insert(command.clone(), asked);
            }
            Requested::FileChange => self.granted.file_changes = Some(asked),
        }
        Some(self.granted.clone())
    }

    pub(crate) fn learn_turn_id(&mut self, turn_id: &str) {
        if self.turn_id.is_none() {
            self.turn_id = Some(turn_id.to_string());
        }
    }

    /// Whether a message about `turn_id` (if it names one) is about this turn.
    fn is_ours(&self, thread_id: Option<&str>, turn_id: Option<&str>) -> bool {
        thread_id.is_none_or(|t| t == self.thread_id)
            && match (&self.turn_id, turn_id) {
                (Some(ours), Some(theirs)) => ours == theirs,
                _ => true,
            }
    }

    pub(crate) fn on_notification(&mut self, notification: ServerNotification) -> Vec<AgentEvent> {
        use ServerNotification as N;
        if let N::TokenUsageUpdated(n) = &notification {
            // Totals reported for an earlier turn (codex repeats them after a
            // resume, possibly while our turn is starting) are where this
            // turn's usage starts from.
            if n.thread_id == self.thread_id && self.turn_id.as_deref() != Some(n.turn_id.as_str()) {
                self.baseline = Some(n.token_usage.total);
                return Vec::new();
            }
        }
        if !self.is_ours(notification.thread_id(), notification.turn_id()) {
            return Vec::new();
        }
        let chunk = |kind, text: String| AgentEvent::Chunk { kind, text, checkpoint: None };
        match notification {
            N::TurnStarted(n) => {
                self.learn_turn_id(&n.turn.id);
                Vec::new()
            }
            N::TurnCompleted(n) => {
                self.learn_turn_id(&n.turn.id);
                vec![AgentEvent::Finished(outcome(&n.turn, self.last_error.as_deref()))]
            }
            N::AgentMessageDelta(n) => {
                self.streamed.insert(n.item_id);
                vec![chunk(ChunkKind::Text, n.delta)]
            }
            N::ReasoningSummaryTextDelta(n) | N::ReasoningTextDelta(n) => {
                self.streamed.insert(n.item_id);
                vec![chunk(ChunkKind::Thought, n.delta)]
            }
            N::ReasoningSummaryPartAdded(n) if n.summary_index > 0 => vec![chunk(ChunkKind::Thought, "\n\n".into())],
            N::ReasoningSummaryPartAdded(_) => Vec::new(),
            N::CommandOutputDelta(n) => vec![chunk(ChunkKind::CommandOutput, n.delta)],
            N::TurnPlanUpdated(n) => vec![AgentEvent::Plan(plan_entries(&n.plan))],
            N::TokenUsageUpdated(n) => {
                let usage = n.token_usage;
                // Without a baseline (a fresh process that has not reported
                // the thread's totals yet), this update is the turn's first
                // response, so the totals before it are total - last.
                let baseline = *self.baseline.get_or_insert_with(|| subtract(&usage.total, &usage.last));
                let turn_usage = Usage {
                    input_tokens: (usage.total.input_tokens - baseline.input_tokens).max(0) as u64,
                    output_tokens: (usage.total.output_tokens - baseline.output_tokens).max(0) as u64,
                    context_tokens: None,
                };
                if self.last_usage == Some(turn_usage) {
                    return Vec::new();
                }
                self.last_usage = Some(turn_usage);
                vec![AgentEvent::Usage(turn_usage)]
            }
            N::ItemStarted(n) => {
                match &n.item {
                    ThreadItem::FileChange { id, changes, .. } => {
                        self.file_changes.insert(id.clone(), changes.clone());
                    }
                    ThreadItem::CommandExecution { id, .. } => {
                        self.command_started.insert(id.clone(), bosun_proto::now_ts());
                    }
                    _ => {}
                }
                match tool_call(&n.item) {
                    Some(call) => {
                        self.announced.insert(call.id.clone());
                        vec![AgentEvent::ToolCall(call)]
                    }
                    None => Vec::new(),
                }
            }
            N::ItemCompleted(n) => self.item_completed(n.item),
            N::Error(n) => {
                let message = n.error.describe();
                if !n.will_retry {
                    self.last_error = Some(message);
                }
                notice_text(&N::Error(n))
                    .map(|(level, message)| vec![AgentEvent::Log { level, message }])
                    .unwrap_or_default()
            }
            N::ServerRequestResolved(n) => {
                // Codex settled it by itself (say, the turn was interrupted).
                self.approvals.retain(|_, codex_id| *codex_id != n.request_id);
                Vec::new()
            }
            notification @ (N::Warning(_) | N::ConfigWarning(_) | N::DeprecationNotice(_)) => {
                notice_text(&notification)
                    .map(|(level, message)| vec![AgentEvent::Log { level, message }])
                    .unwrap_or_default()
            }
            N::Other(_) => Vec::new(),
        }
    }

    fn item_completed(&mut self, item: ThreadItem) -> Vec<AgentEvent> {
        let mut events = Vec::new();
        match &item {
            ThreadItem::AgentMessage { id, text } if !self.streamed.contains(id) && !text.is_empty() => {
                events.push(AgentEvent::Chunk { kind: ChunkKind::Text, text: text.clone(), checkpoint: None });
            }
            ThreadItem::Reasoning { id, summary } if !self.streamed.contains(id) && !summary.is_empty() => {
                events.push(AgentEvent::Chunk {
                    kind: ChunkKind::Thought,
                    text: summary.join("\n\n"),
                    checkpoint: None,
                });
            }
            _ => {}
        }
        if let Some(update) = tool_update(&item) {
            if !self.announced.contains(&update.id) {
                // Never saw it start: announce it, already in its final state.
                if let Some(mut call) = tool_call(&item) {
                    if let Some(status) = update.status {
                        call.status = status;
                    }
                    self.announced.insert(call.id.clone());
                    events.push(AgentEvent::ToolCall(call));
                }
            }
            events.push(AgentEvent::ToolUpdate(update));
        }
        match &item {
            ThreadItem::CommandExecution { id, command, .. } => {
                let started_at = self.command_started.remove(id);
                if let Some(run) = command_run(&item, started_at) {
                    let asked = self.command_asked(id, command);
                    events.push(AgentEvent::CommandRan { run, asked });
                }
            }
            ThreadItem::FileChange { id, changes, status: ItemStatus::Completed } => {
                let asked = self.file_change_asked(id);
                for change in changes {
                    let summary = format!("{} (codex patch)", change.kind.verb());
                    events.push(AgentEvent::FileChanged { path: change.path.clone(), summary, asked: asked.clone() });
                }
            }
            _ => {}
        }
        events
    }

    pub(crate) fn on_request(&mut self, id: &Value, request: ServerRequest) -> RequestOutcome {
        let request_id = format!("codex-{}", id.as_str().map(str::to_string).unwrap_or_else(|| id.to_string()));
        let action = match request {
            ServerRequest::CommandApproval(params) => {
                if !self.is_ours(Some(&params.thread_id), Some(&params.turn_id)) {
                    return RequestOutcome::Answer(ApprovalDecision::Cancel);
                }
                let command = params.command.unwrap_or_else(|| format!("(command of item {})", params.item_id));
                self.item_requests.insert(params.item_id, request_id.clone());
                self.requested.insert(request_id.clone(), Requested::Command(command.clone()));
                Action::Command { command, cwd: params.cwd.unwrap_or_else(|| self.cwd.clone()) }
            }
            ServerRequest::FileChangeApproval(params) => {
                if !self.is_ours(Some(&params.thread_id), Some(&params.turn_id)) {
                    return RequestOutcome::Answer(ApprovalDecision::Cancel);
                }
                let changes = self.file_changes.get(&params.item_id).map(Vec::as_slice).unwrap_or_default();
                let action = file_change_action(changes, params.reason.as_deref(), params.grant_root.as_deref());
                self.item_requests.insert(params.item_id, request_id.clone());
                self.requested.insert(request_id.clone(), Requested::FileChange);
                action
            }
            ServerRequest::Other(method) => return RequestOutcome::Refuse(method),
        };
        self.approvals.insert(request_id.clone(), id.clone());
        RequestOutcome::Ask(AgentEvent::ApprovalRequest { request_id, action, checkpoint: None })
    }
}

pub(crate) fn subtract(a: &TokenUsageBreakdown, b: &TokenUsageBreakdown) -> TokenUsageBreakdown {
    TokenUsageBreakdown {
        input_tokens: a.input_tokens - b.input_tokens,
        output_tokens: a.output_tokens - b.output_tokens,
        cached_input_tokens: a.cached_input_tokens - b.cached_input_tokens,
        reasoning_output_tokens: a.reasoning_output_tokens - b.reasoning_output_tokens,
        total_tokens: a.total_tokens - b.total_tokens,
    }
}

pub(crate) fn outcome(turn: &Turn, last_error: Option<&str>) -> TurnOutcome {
    match turn.status {
        TurnStatus::Completed => TurnOutcome::Completed,
        TurnStatus::Interrupted => TurnOutcome::Interrupted,
        TurnStatus::Failed => TurnOutcome::Failed(
            turn.error
                .as_ref()
                .map(protocol::TurnError::describe)
                .or_else(|| last_error.map(str::to_string))
                .unwrap_or_else(|| "codex reported the turn failed".into()),
        ),
        // A completion notice that does not say how it ended: nothing failed
        // that we know of.
        TurnStatus::InProgress | TurnStatus::Unknown => TurnOutcome::Completed,
    }
}

pub(crate) fn plan_entries(steps: &[PlanStep]) -> Vec<PlanEntry> {
    steps
        .iter()
        .map(|step| PlanEntry {
            content: step.step.clone(),
            status: match step.status {
                PlanStepStatus::Completed => PlanEntryStatus::Completed,
                PlanStepStatus::InProgress => PlanEntryStatus::InProgress,
                PlanStepStatus::Pending | PlanStepStatus::Unknown => PlanEntryStatus::Pending,
            },
        })
        .collect()
}

pub(crate) fn tool_status(status: ItemStatus) -> ToolStatus {
    match status {
        ItemStatus::InProgress | ItemStatus::Unknown => ToolStatus::InProgress,
        ItemStatus::Completed => ToolStatus::Completed,
        ItemStatus::Failed | ItemStatus::Declined | ItemStatus::Interrupted => ToolStatus::Failed,
    }
}

pub(crate) fn paths_of(changes: &[FileUpdateChange]) -> String {
    if changes.is_empty() {
        return "(no files named)".to_string();
    }
    changes.iter().map(|c| c.path.as_str()).collect::<Vec<_>>().join(", ")
}

pub(crate) fn file_change_action(
    changes: &[FileUpdateChange],
    reason: Option<&str>,
    grant_root: Option<&str>,
) -> Action {
    let mut summary = changes
        .iter()
        .map(|c| {
            let lines = c.diff.lines().count();
            format!("{} {} ({lines} diff line{})", c.kind.verb(), c.path, if lines == 1 { "" } else { "s" })
        })
        .collect::<Vec<_>>()
        .join("; ");
    if let Some(root) = grant_root {
        summary = join_nonempty(&summary, &format!("write access under {root} for the session"));
    }
    if let Some(reason) = reason.filter(|r| !r.trim().is_empty()) {
        summary = join_nonempty(&summary, reason);
    }
    if summary.is_empty() {
        summary = "file change".to_string();
    }
    let path = if changes.is_empty() { grant_root.unwrap_or("(unknown)").to_string() } else { paths_of(changes) };
    Action::FileChange { path, summary }
}

pub(crate) fn join_nonempty(a: &str, b: &str) -> String {
    if a.is_empty() {
        b.to_string()
    } else {
        format!("{a}; {b}")
    }
}

/// The `ToolCall` announcing an item, for items that are tool calls.
pub(crate) fn tool_call(item: &ThreadItem) -> Option<ToolCall> {
    let (id, title, kind, status, detail) = match item {
        ThreadItem::CommandExecution { id, command, cwd, status, .. } => {
            (id, command.clone(), ToolKind::Execute, tool_status(*status), json!({"command": command, "cwd": cwd}))
        }
        ThreadItem::FileChange { id, changes, status } => (
            id,
            format!("edit {}", paths_of(changes)),
            ToolKind::Edit,
            tool_status(*status),
            json!({"changes": changes.iter().map(|c| json!({"path": c.path, "kind": c.kind.verb(), "diff": c.diff})).collect::<Vec<_>>()}),
        ),
        ThreadItem::McpToolCall { id, server, tool, status, arguments, .. } => (
            id,
            format!("{server}: {tool}"),
            ToolKind::Other,
            tool_status(*status),
            json!({"server": server, "tool": tool, "arguments": arguments}),
        ),
        ThreadItem::DynamicToolCall { id, tool, status, arguments, .. } => {
            (id, tool.clone(), ToolKind::Other, tool_status(*status), json!({"tool": tool, "arguments": arguments}))
        }
        ThreadItem::CollabAgentToolCall { id, tool, status, prompt } => (
            id,
            format!("agent: {tool}"),
            ToolKind::Other,
            tool_status(*status),
            json!({"tool": tool, "prompt": prompt}),
        ),
        ThreadItem::WebSearch { id, query } => {
            (id, format!("web search: {query}"), ToolKind::Fetch, ToolStatus::InProgress, json!({"query": query}))
        }
        ThreadItem::ImageView { id, path } => {
            (id, format!("view {path}"), ToolKind::Read, ToolStatus::InProgress, json!({"path": path}))
        }
        ThreadItem::ImageGeneration { id, .. } => {
            (id, "image generation".to_string(), ToolKind::Other, ToolStatus::InProgress, Value::Null)
        }
        ThreadItem::AgentMessage { .. } | ThreadItem::Reasoning { .. } | ThreadItem::Other => return None,
    };
    Some(ToolCall { id: id.clone(), title, kind, status, detail })
}

/// The `ToolUpdate` for a finished item, for items that are tool calls.
pub(crate) fn tool_update(item: &ThreadItem) -> Option<ToolUpdate> {
    let update = |id: &String, status: ToolStatus, output: Option<String>, detail: Value| ToolUpdate {
        id: id.clone(),
        status: Some(status),
        title: None,
        output,
        detail,
    };
    Some(match item {
        ThreadItem::CommandExecution { id, status, aggregated_output, exit_code, duration_ms, .. } => update(
            id,
            tool_status(*status),
            aggregated_output.clone(),
            json!({"exit_code": exit_code, "duration_ms": duration_ms, "declined": *status == ItemStatus::Declined}),
        ),
        ThreadItem::FileChange { id, changes, status } => {
            let diff = changes.iter().map(|c| c.diff.as_str()).filter(|d| !d.is_empty()).collect::<Vec<_>>().join("\n");
            update(
                id,
                tool_status(*status),
                (!diff.is_empty()).then_some(diff),
                json!({"declined": *status == ItemStatus::Declined}),
            )
        }
        ThreadItem::McpToolCall { id, status, result, error, .. } => {
            let output = match (error, result) {
                (Some(error), _) => Some(error.message.clone()),
                (None, Some(result)) => Some(mcp_result_text(result)),
                (None, None) => None,
            };
            update(id, tool_status(*status), output, Value::Null)
        }
        ThreadItem::DynamicToolCall { id, status, content_items, .. } => {
            update(id, tool_status(*status), content_items.as_ref().map(mcp_result_text), Value::Null)
        }
        ThreadItem::CollabAgentToolCall { id, status, .. } => update(id, tool_status(*status), None, Value::Null),
        ThreadItem::WebSearch { id, .. } | ThreadItem::ImageView { id, .. } => {
            update(id, ToolStatus::Completed, None, Value::Null)
        }
        ThreadItem::ImageGeneration { id, status } => {
            let status = if status == "failed" { ToolStatus::Failed } else { ToolStatus::Completed };
            update(id, status, None, Value::Null)
        }
        ThreadItem::AgentMessage { .. } | ThreadItem::Reasoning { .. } | ThreadItem::Other => return None,
    })
}

/// How codex is held to the policy, as the settings its thread reports show.
pub(crate) fn thread_enforcement(reply: &ThreadResponse) -> EnforcementReport {
    match reply.weaker_than_untrusted() {
        None => EnforcementReport {
            enforcement: Enforcement::AgentMode,
            detail: "every codex thread is opened by the daemon with approvalPolicy \"untrusted\" and approvals \
                     to the user, and codex's answer is checked"
                .into(),
            agent: Some("codex".into()),
        },
        Some(why) => EnforcementReport {
            enforcement: Enforcement::Unverified,
            detail: format!("codex did not take the daemon's approval settings: {why}"),
            agent: Some("codex".into()),
        },
    }
}

/// The audit record of a command item codex ran (declined ones never ran).
pub(crate) fn command_run(item: &ThreadItem, started_at: Option<String>) -> Option<CommandRun> {
    let ThreadItem::CommandExecution { command, cwd, status, aggregated_output, exit_code, duration_ms, .. } = item
    else {
        return None;
    };
    let ended_by = match (status, exit_code) {
        (ItemStatus::Declined, _) => return None,
        (ItemStatus::Interrupted, _) => Some(EndedBy::Interrupted),
        (ItemStatus::Failed, None) => Some(EndedBy::Failed),
        _ => None,
    };
    Some(CommandRun {
        command: command.clone(),
        cwd: cwd.clone(),
        exit_code: exit_code.and_then(|c| i32::try_from(c).ok()),
        ended_by,
        // Codex reports no start time; when the item's start was missed,
        // its end is the closest moment we know.
        started_at: started_at.unwrap_or_else(bosun_proto::now_ts),
        duration_ms: duration_ms.and_then(|d| u64::try_from(d).ok()).unwrap_or(0),
        // Codex gives stdout and stderr merged.
        stdout_bytes: aggregated_output.as_ref().map_or(0, |o| o.len() as u64),
        stderr_bytes: 0,
        approval: None,
        approval_id: None,
    })
}

/// The text parts of an MCP-style result (`{content: [{type: "text", text}]}`
/// or a bare list of such parts); the JSON itself when it has none.
pub(crate) fn mcp_result_text(result: &Value) -> String {
    let parts = result.get("content").unwrap_or(result);
    let texts: Vec<&str> = parts
        .as_array()
        .map(|items| items.iter().filter_map(|item| item.get("text").and_then(Value::as_str)).collect())
        .unwrap_or_default();
    if texts.is_empty() {
        result.to_string()
    } else {
        texts.join("\n")
    }
}

/// Approvals accepted "for the session": codex then repeats such actions
/// without asking, and those are covered by the approval that granted them.
#[derive(Debug, Default, Clone)]
pub(crate) struct Granted {
    /// An exact command, by its text → the approval that allowed it.
    commands: HashMap<String, Asked>,
    /// File changes: codex stops asking for the rest of the session.
    file_changes: Option<Asked>,
}

pub(crate) fn notice_text(notification: &ServerNotification) -> Option<(LogLevel, String)> {
    match notification {
        ServerNotification::Error(n) => Some((
            if n.will_retry { LogLevel::Warn } else { LogLevel::Error },
            format!("codex error{}: {}", if n.will_retry { " (retrying)" } else { "" }, n.error.describe()),
        )),
        ServerNotification::Warning(n) => Some((LogLevel::Warn, format!("codex warning: {}", n.message))),
        ServerNotification::ConfigWarning(n) => Some((LogLevel::Warn, with_details("codex config warning", n))),
        ServerNotification::DeprecationNotice(n) => Some((LogLevel::Info, with_details("codex deprecation notice", n))),
        _ => None,
    }
}

pub(crate) fn with_details(what: &str, n: &protocol::SummaryNotification) -> String {
    match n.details.as_deref() {
        Some(details) if !details.trim().is_empty() => format!("{what}: {} ({details})", n.summary),
        _ => format!("{what}: {}", n.summary),
    }
}
