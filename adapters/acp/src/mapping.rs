//! Pure translations between ACP messages and Bosun's driver contract: no I/O,
//! no state beyond what the caller passes in, so each rule is unit-tested.

use std::path::Path;

use agent_client_protocol::v1::schema::{
    ContentBlock, PermissionOption, PermissionOptionId, PermissionOptionKind, Plan, PlanEntryStatus, StopReason,
    ToolCall as AcpToolCall, ToolCallContent, ToolCallLocation, ToolCallStatus, ToolCallUpdate, ToolKind,
};
use bosun_proto::{Action, ChunkKind, CommandRun, Decision, EndedBy, PlanEntry, ToolStatus};
use serde_json::{json, Map, Value};
use std::collections::HashMap;

use bosun_driver::{ToolCall, ToolUpdate, TurnOutcome};

/// Our kind for an ACP tool kind.
pub(crate) fn tool_kind(kind: ToolKind) -> bosun_proto::ToolKind {
    use bosun_proto::ToolKind as Ours;
    match kind {
        ToolKind::Read => Ours::Read,
        ToolKind::Edit => Ours::Edit,
        ToolKind::Delete => Ours::Delete,
        ToolKind::Move => Ours::Move,
        ToolKind::Search => Ours::Search,
        ToolKind::Execute => Ours::Execute,
        ToolKind::Think => Ours::Think,
        ToolKind::Fetch => Ours::Fetch,
        ToolKind::SwitchMode => Ours::SwitchMode,
        // The enum is non-exhaustive: a kind we do not know is "other".
        _ => Ours::Other,
    }
}

/// The wire name of an ACP tool kind.
pub(crate) fn tool_kind_name(kind: ToolKind) -> &'static str {
    tool_kind(kind).as_str()
}

pub(crate) fn tool_status(status: ToolCallStatus) -> ToolStatus {
    match status {
        ToolCallStatus::Pending => ToolStatus::Pending,
        ToolCallStatus::InProgress => ToolStatus::InProgress,
        ToolCallStatus::Completed => ToolStatus::Completed,
        ToolCallStatus::Failed => ToolStatus::Failed,
        // The enum is non-exhaustive; a status we do not know is still running.
        _ => ToolStatus::InProgress,
    }
}

/// How a prompt's stop reason ends the turn.
pub(crate) fn stop_outcome(reason: StopReason) -> TurnOutcome {
    match reason {
        StopReason::EndTurn => TurnOutcome::Completed,
        StopReason::Cancelled => TurnOutcome::Interrupted,
        StopReason::MaxTokens => {
            TurnOutcome::Failed("the agent stopped: it reached its maximum number of tokens".into())
        }
        StopReason::MaxTurnRequests => TurnOutcome::Failed(
            "the agent stopped: it reached its maximum number of model requests for one turn".into(),
        ),
        StopReason::Refusal => TurnOutcome::Failed("the agent refused to continue".into()),
        other => TurnOutcome::Failed(format!("the agent stopped for a reason Bosun does not know: {other:?}")),
    }
}

/// The text of a content block, if it is text.
pub(crate) fn block_text(block: &ContentBlock) -> Option<&str> {
    match block {
        ContentBlock::Text(text) => Some(&text.text),
        _ => None,
    }
}

/// A streamed message or thought chunk as a Bosun chunk; non-text content
/// (images, resources) has no chunk kind and is skipped.
pub(crate) fn chunk(kind: ChunkKind, block: &ContentBlock) -> Option<(ChunkKind, String)> {
    block_text(block).filter(|text| !text.is_empty()).map(|text| (kind, text.to_string()))
}

pub(crate) fn plan_entries(plan: &Plan) -> Vec<PlanEntry> {
    plan.entries
        .iter()
        .map(|entry| PlanEntry {
            content: entry.content.clone(),
            status: match entry.status {
                PlanEntryStatus::Pending => bosun_proto::PlanEntryStatus::Pending,
                PlanEntryStatus::Completed => bosun_proto::PlanEntryStatus::Completed,
                _ => bosun_proto::PlanEntryStatus::InProgress,
            },
        })
        .collect()
}

fn location_paths(locations: &[ToolCallLocation]) -> Vec<String> {
    locations.iter().map(|l| l.path.display().to_string()).collect()
}

/// What is worth showing of a tool call besides its title: its raw input,
/// the paths it touches and the diffs it proposes.
fn tool_detail(
    raw_input: Option<&Value>,
    locations: Option<&[ToolCallLocation]>,
    content: Option<&[ToolCallContent]>,
) -> Value {
    let mut detail = Map::new();
    if let Some(raw) = raw_input {
        detail.insert("raw_input".into(), raw.clone());
    }
    if let Some(locations) = locations.filter(|l| !l.is_empty()) {
        detail.insert("locations".into(), json!(location_paths(locations)));
    }
    let diffs: Vec<Value> = content
        .unwrap_or_default()
        .iter()
        .filter_map(|item| match item {
            ToolCallContent::Diff(diff) => Some(json!({
                "path": diff.path.display().to_string(),
                "old_text": diff.old_text,
                "new_text": diff.new_text,
            })),
            _ => None,
        })
        .collect();
    if !diffs.is_empty() {
        detail.insert("diffs".into(), Value::Array(diffs));
    }
    if detail.is_empty() {
        Value::Null
    } else {
        Value::Object(detail)
    }
}

pub(crate) fn tool_call(call: &AcpToolCall) -> ToolCall {
    ToolCall {
        id: call.tool_call_id.to_string(),
        title: call.title.clone(),
        kind: tool_kind(call.kind),
        status: tool_status(call.status),
        detail: tool_detail(call.raw_input.as_ref(), Some(&call.locations), Some(&call.content)),
    }
}

/// The text output of a tool call: its text content if it has any, else what
/// its raw output holds (codex-acp puts a command's output there, as a string
/// or as an object with `formatted_output`, `aggregated_output` or `stdout`).
/// `terminal` content carries only an id, whose output a client without
/// terminal support cannot ask for, so it gives nothing.
fn tool_output(content: Option<&[ToolCallContent]>, raw_output: Option<&Value>) -> Option<String> {
    let texts: Vec<&str> = content
        .unwrap_or_default()
        .iter()
        .filter_map(|item| match item {
            ToolCallContent::Content(c) => block_text(&c.content),
            _ => None,
        })
        .collect();
    if !texts.is_empty() {
        return Some(texts.join("\n"));
    }
    match raw_output? {
        Value::String(text) => Some(text.clone()),
        Value::Object(fields) => ["formatted_output", "aggregated_output", "output", "stdout"]
            .iter()
            .filter_map(|key| fields.get(*key).and_then(Value::as_str))
            .find(|text| !text.is_empty())
            .map(str::to_string),
        _ => None,
    }
}

pub(crate) fn tool_update(update: &ToolCallUpdate) -> ToolUpdate {
    let fields = &update.fields;
    let mut detail = tool_detail(fields.raw_input.as_ref(), fields.locations.as_deref(), fields.content.as_deref());
    if let Some(code) = fields.raw_output.as_ref().and_then(|raw| raw.get("exit_code")).cloned() {
        match &mut detail {
            Value::Object(map) => {
                map.insert("exit_code".into(), code);
            }
            _ => detail = json!({ "exit_code": code }),
        }
    }
    ToolUpdate {
        id: update.tool_call_id.to_string(),
        status: fields.status.map(tool_status),
        title: fields.title.clone(),
        output: tool_output(fields.content.as_deref(), fields.raw_output.as_ref()),
        detail,
    }
}

/// The command tool calls of a turn between their start and their end, so
/// each finished one becomes an audit record ([`CommandRun`]). ACP has no
/// command events of its own: an `execute` tool call is one.
#[derive(Debug, Default)]
pub(crate) struct CommandCalls {
    running: HashMap<String, StartedCommand>,
}

#[derive(Debug)]
struct StartedCommand {
    command: String,
    cwd: String,
    started_at: String,
    started: std::time::Instant,
}

/// A command tool call that has ended.
#[derive(Debug, PartialEq)]
pub(crate) struct EndedCommand {
    pub tool_id: String,
    /// It ended `failed` (rather than completed).
    pub failed: bool,
    pub run: CommandRun,
}

impl CommandCalls {
    /// Notes a tool call that runs a command: one of kind `execute`, or any
    /// whose input holds a command line (codex-acp files the read-only
    /// commands it runs by itself as `read` or `search`). One announced
    /// already over has ended at once.
    pub(crate) fn started(&mut self, call: &AcpToolCall, session_cwd: &Path) -> Option<EndedCommand> {
        let raw = call.raw_input.as_ref();
        let given = raw.and_then(|raw| raw.get("command").or_else(|| raw.get("cmd"))).and_then(command_text);
        if call.kind != ToolKind::Execute && given.is_none() {
            return None;
        }
        let command = given.unwrap_or_else(|| call.title.clone());
        let cwd = raw
            .and_then(|raw| raw.get("cwd").or_else(|| raw.get("workdir")))
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| session_cwd.display().to_string());
        let started =
            StartedCommand { command, cwd, started_at: bosun_proto::now_ts(), started: std::time::Instant::now() };
        let id = call.tool_call_id.to_string();
        self.running.insert(id.clone(), started);
        match call.status {
            ToolCallStatus::Completed | ToolCallStatus::Failed => {
                let update = ToolCallUpdate::new(
                    id,
                    agent_client_protocol::v1::schema::ToolCallUpdateFields::new()
                        .status(call.status)
                        .raw_output(call.raw_output.clone())
                        .content(call.content.clone()),
                );
                self.updated(&update)
            }
            _ => None,
        }
    }

    /// Whether a command call of this id is under way.
    pub(crate) fn is_running(&self, id: &str) -> bool {
        self.running.contains_key(id)
    }

    /// The command a call under way runs.
    pub(crate) fn command_of(&self, id: &str) -> Option<&str> {
        self.running.get(id).map(|c| c.command.as_str())
    }

    /// The audit record of a command call this update ends, if it does.
    pub(crate) fn updated(&mut self, update: &ToolCallUpdate) -> Option<EndedCommand> {
        let id = update.tool_call_id.to_string();
        let fields = &update.fields;
        if let Some(command) = fields.raw_input.as_ref().and_then(|raw| raw.get("command")).and_then(command_text) {
            if let Some(started) = self.running.get_mut(&id) {
                started.command = command;
            }
        }
        let failed = match fields.status? {
            ToolCallStatus::Completed => false,
            ToolCallStatus::Failed => true,
            _ => return None,
        };
        let started = self.running.remove(&id)?;
        let raw_output = fields.raw_output.as_ref();
        let exit_code = raw_output
            .and_then(|raw| raw.get("exit_code").or_else(|| raw.get("exitCode")))
            .and_then(Value::as_i64)
            .and_then(|code| i32::try_from(code).ok());
        let output = tool_output(fields.content.as_deref(), raw_output).unwrap_or_default();
        let ended_by = (failed && exit_code.is_none()).then_some(EndedBy::Failed);
        let run = CommandRun {
            command: started.command,
            cwd: started.cwd,
            exit_code,
            ended_by,
            started_at: started.started_at,
            duration_ms: u64::try_from(started.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            // ACP reports a command's output as one text.
            stdout_bytes: output.len() as u64,
            stderr_bytes: 0,
            approval: None,
            approval_id: None,
        };
        Some(EndedCommand { tool_id: id, failed, run })
    }

    /// Audit records for the command calls the agent never reported ended
    /// (codex-acp 0.16 reports a command's start only), when the turn ends:
    /// they ran, with an exit code nobody was told.
    pub(crate) fn unfinished(&mut self, ended_by: EndedBy) -> Vec<EndedCommand> {
        let mut runs: Vec<(String, StartedCommand)> = self.running.drain().collect();
        runs.sort_by_key(|(_, command)| command.started);
        runs.into_iter()
            .map(|(tool_id, started)| EndedCommand {
                tool_id,
                failed: false,
                run: CommandRun {
                    command: started.command,
                    cwd: started.cwd,
                    exit_code: None,
                    ended_by: Some(ended_by),
                    started_at: started.started_at,
                    duration_ms: u64::try_from(started.started.elapsed().as_millis()).unwrap_or(u64::MAX),
                    stdout_bytes: 0,
                    stderr_bytes: 0,
                    approval: None,
                    approval_id: None,
                },
            })
            .collect()
    }
}

/// Quotes a word for a shell command line only when it needs it.
fn shell_word(word: &str) -> String {
    let plain = !word.is_empty() && word.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%^".contains(c));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// A command as agents put it in a tool call's raw input: a string, or an
/// argv. An argv that only wraps a script in a shell (`bash -lc SCRIPT`) is
/// shown as the script, which is what the model asked to run.
pub(crate) fn command_text(value: &Value) -> Option<String> {
    match value {
        Value::String(command) if !command.trim().is_empty() => Some(command.clone()),
        Value::Array(items) => {
            let words: Vec<&str> = items.iter().filter_map(Value::as_str).collect();
            if words.is_empty() || words.len() != items.len() {
                return None;
            }
            if let [_, flag, script] = words.as_slice() {
                if matches!(*flag, "-c" | "-lc" | "-ic") {
                    return Some(script.to_string());
                }
            }
            Some(words.iter().map(|w| shell_word(w)).collect::<Vec<_>>().join(" "))
        }
        _ => None,
    }
}

/// The path a file tool works on: its first location, else a path in its raw
/// input.
fn file_path(update: &ToolCallUpdate) -> Option<String> {
    if let Some(first) = update.fields.locations.as_ref().and_then(|l| l.first()) {
        return Some(first.path.display().to_string());
    }
    raw_input_path(update.fields.raw_input.as_ref()?)
}

/// A path in a file tool's raw input: `path`, `file_path`, `abs_path`, or
/// the first key of a `changes` map.
pub(crate) fn raw_input_path(raw: &Value) -> Option<String> {
    for key in ["path", "file_path", "abs_path"] {
        if let Some(path) = raw.get(key).and_then(Value::as_str) {
            return Some(path.to_string());
        }
    }
    raw.get("changes").and_then(Value::as_object).and_then(|changes| changes.keys().next().cloned())
}

/// What a permission request asks to do, in the daemon's vocabulary.
pub(crate) fn permission_action(tool_call: &ToolCallUpdate, session_cwd: &Path) -> Action {
    let fields = &tool_call.fields;
    let kind = fields.kind.unwrap_or_default();
    let title = fields.title.clone().unwrap_or_else(|| tool_call.tool_call_id.to_string());
    match kind {
        ToolKind::Execute => {
            let raw = fields.raw_input.as_ref();
            let command = raw
                .and_then(|raw| raw.get("command").or_else(|| raw.get("cmd")))
                .and_then(command_text)
                .unwrap_or_else(|| title.clone());
            let cwd = raw
                .and_then(|raw| raw.get("cwd").or_else(|| raw.get("workdir")))
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| session_cwd.display().to_string());
            Action::Command { command, cwd }
        }
        ToolKind::Edit | ToolKind::Delete | ToolKind::Move => {
            let more = fields.locations.as_ref().map_or(0, |l| l.len().saturating_sub(1));
            let summary = if more > 0 { format!("{title} (and {more} more)") } else { title.clone() };
            Action::FileChange { path: file_path(tool_call).unwrap_or(title), summary }
        }
        other => Action::Other { tool: tool_kind_name(other).to_string(), title },
    }
}

fn option_of_kind(options: &[PermissionOption], kinds: &[PermissionOptionKind]) -> Option<PermissionOptionId> {
    kinds.iter().find_map(|kind| options.iter().find(|o| o.kind == *kind).map(|o| o.option_id.clone()))
}

/// The option that carries out `decision`, or `None` when the request must
/// be answered `cancelled` (a `Cancel` decision, or no option that fits).
/// Options are chosen by kind, never by position or name.
pub(crate) fn choose_option(decision: Decision, options: &[PermissionOption]) -> Option<PermissionOptionId> {
    use PermissionOptionKind::{AllowAlways, AllowOnce, RejectAlways, RejectOnce};
    match decision {
        Decision::Accept => option_of_kind(options, &[AllowOnce, AllowAlways]),
        Decision::AcceptForSession => option_of_kind(options, &[AllowAlways, AllowOnce]),
        Decision::Decline => option_of_kind(options, &[RejectOnce, RejectAlways]),
        Decision::Cancel => None,
    }
}

/// Whether a stderr line reads like a problem, so it is logged as a warning.
pub(crate) fn stderr_is_warning(line: &str) -> bool {
    let upper = line.to_ascii_uppercase();
    ["ERROR", "WARN", "PANIC", "FATAL"].iter().any(|word| upper.contains(word))
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_client_protocol::v1::schema::{Diff, ToolCallUpdateFields};
    use std::path::PathBuf;

    fn request(kind: ToolKind, title: &str, raw: Value, locations: Vec<&str>) -> ToolCallUpdate {
        let mut fields = ToolCallUpdateFields::new().kind(kind).title(title.to_string()).raw_input(raw);
        if !locations.is_empty() {
            fields = fields.locations(locations.into_iter().map(ToolCallLocation::new).collect::<Vec<_>>());
        }
        ToolCallUpdate::new("call_1", fields)
    }

    fn options(kinds: &[PermissionOptionKind]) -> Vec<PermissionOption> {
        kinds.iter().map(|k| PermissionOption::new(format!("{k:?}"), format!("{k:?}"), *k)).collect()
    }

    #[test]
    fn execute_requests_become_commands() {
        let cwd = PathBuf::from("/session");
        let codex = request(
            ToolKind::Execute,
            "touch made.txt",
            json!({"command": ["/bin/bash", "-lc", "touch made.txt"], "cwd": "/work"}),
            vec![],
        );
        assert_eq!(
            permission_action(&codex, &cwd),
            Action::Command { command: "touch made.txt".into(), cwd: "/work".into() }
        );
        let string = request(ToolKind::Execute, "t", json!({"cmd": "ls -la"}), vec![]);
        assert_eq!(
            permission_action(&string, &cwd),
            Action::Command { command: "ls -la".into(), cwd: "/session".into() }
        );
        let argv = request(ToolKind::Execute, "t", json!({"command": ["git", "commit", "-m", "a b"]}), vec![]);
        assert_eq!(
            permission_action(&argv, &cwd),
            Action::Command { command: "git commit -m 'a b'".into(), cwd: "/session".into() }
        );
        let bare = request(ToolKind::Execute, "Run the tests", json!({}), vec![]);
        assert_eq!(
            permission_action(&bare, &cwd),
            Action::Command { command: "Run the tests".into(), cwd: "/session".into() }
        );
    }

    #[test]
    fn file_kinds_become_file_changes() {
        let cwd = PathBuf::from("/session");
        let located = request(ToolKind::Edit, "Edit a.txt", json!({}), vec!["/w/a.txt", "/w/b.txt"]);
        assert_eq!(
            permission_action(&located, &cwd),
            Action::FileChange { path: "/w/a.txt".into(), summary: "Edit a.txt (and 1 more)".into() }
        );
        let changes = request(ToolKind::Delete, "Delete", json!({"changes": {"/w/gone.txt": {}}}), vec![]);
        assert_eq!(
            permission_action(&changes, &cwd),
            Action::FileChange { path: "/w/gone.txt".into(), summary: "Delete".into() }
        );
        let moved = request(ToolKind::Move, "Move x", json!({"path": "/w/x"}), vec![]);
        assert_eq!(
            permission_action(&moved, &cwd),
            Action::FileChange { path: "/w/x".into(), summary: "Move x".into() }
        );
    }

    #[test]
    fn other_kinds_keep_their_kind_and_title() {
        let cwd = PathBuf::from("/");
        for (kind, name) in [
            (ToolKind::Fetch, "fetch"),
            (ToolKind::Read, "read"),
            (ToolKind::Search, "search"),
            (ToolKind::Think, "think"),
            (ToolKind::SwitchMode, "switch_mode"),
            (ToolKind::Other, "other"),
        ] {
            let req = request(kind, "Look it up", json!({}), vec![]);
            assert_eq!(permission_action(&req, &cwd), Action::Other { tool: name.into(), title: "Look it up".into() });
        }
        // No kind at all is "other".
        let untyped = ToolCallUpdate::new("c", ToolCallUpdateFields::new().title("mcp tool".to_string()));
        assert_eq!(permission_action(&untyped, &cwd), Action::Other { tool: "other".into(), title: "mcp tool".into() });
    }

    #[test]
    fn decisions_pick_options_by_kind_with_fallbacks() {
        use PermissionOptionKind::*;
        let all = options(&[RejectAlways, AllowAlways, RejectOnce, AllowOnce]);
        let id = |k: PermissionOptionKind| Some(PermissionOptionId::from(format!("{k:?}")));
        assert_eq!(choose_option(Decision::Accept, &all), id(AllowOnce));
        assert_eq!(choose_option(Decision::AcceptForSession, &all), id(AllowAlways));
        assert_eq!(choose_option(Decision::Decline, &all), id(RejectOnce));
        assert_eq!(choose_option(Decision::Cancel, &all), None);

        let always_only = options(&[AllowAlways, RejectAlways]);
        assert_eq!(choose_option(Decision::Accept, &always_only), id(AllowAlways));
        assert_eq!(choose_option(Decision::Decline, &always_only), id(RejectAlways));
        let once_only = options(&[AllowOnce, RejectOnce]);
        assert_eq!(choose_option(Decision::AcceptForSession, &once_only), id(AllowOnce));

        let no_reject = options(&[AllowOnce]);
        assert_eq!(choose_option(Decision::Decline, &no_reject), None);
        assert_eq!(choose_option(Decision::Accept, &[]), None);
    }

    #[test]
    fn stop_reasons_end_turns() {
        assert_eq!(stop_outcome(StopReason::EndTurn), TurnOutcome::Completed);
        assert_eq!(stop_outcome(StopReason::Cancelled), TurnOutcome::Interrupted);
        for reason in [StopReason::MaxTokens, StopReason::MaxTurnRequests, StopReason::Refusal] {
            match stop_outcome(reason) {
                TurnOutcome::Failed(why) => assert!(why.starts_with("the agent"), "{why}"),
                other => panic!("{reason:?} gave {other:?}"),
            }
        }
        assert!(matches!(stop_outcome(StopReason::MaxTokens), TurnOutcome::Failed(w) if w.contains("tokens")));
        assert!(matches!(stop_outcome(StopReason::Refusal), TurnOutcome::Failed(w) if w.contains("refused")));
    }

    #[test]
    fn finished_command_calls_become_audit_records_and_others_do_not() {
        let mut calls = CommandCalls::default();
        let call = |id: &str, kind: &str| -> AcpToolCall {
            serde_json::from_value(json!({
                "toolCallId": id, "title": "Run", "kind": kind, "status": "pending",
                "rawInput": {"command": ["bash", "-lc", "echo hi"], "cwd": "/w"}
            }))
            .unwrap()
        };
        let update = |id: &str, status: &str, raw_output: Value| -> ToolCallUpdate {
            serde_json::from_value(json!({"toolCallId": id, "status": status, "rawOutput": raw_output})).unwrap()
        };
        assert_eq!(calls.started(&call("c1", "execute"), Path::new("/s")), None);
        assert_eq!(calls.started(&call("c2", "read"), Path::new("/s")), None);
        let no_command: AcpToolCall = serde_json::from_value(json!({
            "toolCallId": "c9", "title": "Read a.txt", "kind": "read", "status": "pending", "rawInput": {"path": "a.txt"}
        }))
        .unwrap();
        assert_eq!(calls.started(&no_command, Path::new("/s")), None);
        assert_eq!(calls.updated(&update("c1", "in_progress", json!({}))), None);
        let ended =
            calls.updated(&update("c1", "completed", json!({"aggregated_output": "hi\n", "exit_code": 2}))).unwrap();
        let run = &ended.run;
        assert_eq!((ended.tool_id.as_str(), ended.failed), ("c1", false));
        assert_eq!((run.command.as_str(), run.cwd.as_str(), run.exit_code), ("echo hi", "/w", Some(2)));
        assert_eq!((run.stdout_bytes, run.ended_by), (3, None));
        assert_eq!(calls.updated(&update("c1", "completed", json!({}))), None, "recorded once");
        // A read that runs a command line is a command too.
        assert!(calls.updated(&update("c2", "completed", json!({}))).is_some(), "a read that runs a command");
        assert_eq!(calls.updated(&update("c9", "completed", json!({}))), None, "not a command");
        calls.started(&call("c3", "execute"), Path::new("/s"));
        let failed = calls.updated(&update("c3", "failed", json!(null))).unwrap();
        assert!(failed.failed);
        assert_eq!((failed.run.exit_code, failed.run.ended_by), (None, Some(bosun_proto::EndedBy::Failed)));
        // Announced already over: ended at once.
        let done: AcpToolCall = serde_json::from_value(json!({
            "toolCallId": "c4", "title": "Run", "kind": "execute", "status": "completed",
            "rawInput": {"command": "touch x"}, "rawOutput": {"exit_code": 0}
        }))
        .unwrap();
        let ended = calls.started(&done, Path::new("/s")).unwrap();
        assert_eq!(
            (ended.tool_id.as_str(), ended.run.command.as_str(), ended.run.exit_code),
            ("c4", "touch x", Some(0))
        );
    }

    #[test]
    fn tool_calls_and_updates_map_with_output() {
        let call: AcpToolCall = serde_json::from_value(json!({
            "toolCallId": "call_5", "title": "Edit /w/p.txt", "kind": "edit", "status": "in_progress",
            "content": [{"type": "diff", "path": "/w/p.txt", "newText": "x\n"}],
            "locations": [{"path": "/w/p.txt"}], "rawInput": {"changes": {}}
        }))
        .unwrap();
        let mapped = tool_call(&call);
        assert_eq!(mapped.id, "call_5");
        assert_eq!(mapped.kind, bosun_proto::ToolKind::Edit);
        assert_eq!(mapped.status, ToolStatus::InProgress);
        assert_eq!(mapped.detail["locations"], json!(["/w/p.txt"]));
        assert_eq!(mapped.detail["diffs"][0]["new_text"], "x\n");

        let update: ToolCallUpdate = serde_json::from_value(json!({
            "toolCallId": "call_5", "status": "completed",
            "rawOutput": {"aggregated_output": "hi\n", "formatted_output": "", "exit_code": 0}
        }))
        .unwrap();
        let mapped = tool_update(&update);
        assert_eq!(mapped.status, Some(ToolStatus::Completed));
        assert_eq!(mapped.output.as_deref(), Some("hi\n"));
        assert_eq!(mapped.detail["exit_code"], 0);

        let text = ToolCallUpdate::new(
            "c",
            ToolCallUpdateFields::new().content(vec![
                ToolCallContent::from(ContentBlock::from("line 1")),
                ToolCallContent::from(Diff::new("/x", "y")),
            ]),
        );
        assert_eq!(tool_update(&text).output.as_deref(), Some("line 1"));
        let string: ToolCallUpdate =
            serde_json::from_value(json!({"toolCallId": "c", "rawOutput": "plain output"})).unwrap();
        assert_eq!(tool_update(&string).output.as_deref(), Some("plain output"));
        let nothing: ToolCallUpdate = serde_json::from_value(json!({"toolCallId": "c"})).unwrap();
        assert_eq!(
            tool_update(&nothing),
            ToolUpdate { id: "c".into(), status: None, title: None, output: None, detail: Value::Null }
        );
    }

    #[test]
    fn plans_and_chunks() {
        let plan: Plan = serde_json::from_value(json!({"entries": [
            {"content": "a", "priority": "high", "status": "pending"},
            {"content": "b", "priority": "low", "status": "in_progress"},
            {"content": "c", "priority": "medium", "status": "completed"}
        ]}))
        .unwrap();
        let statuses: Vec<_> = plan_entries(&plan).into_iter().map(|e| (e.content, e.status)).collect();
        assert_eq!(
            statuses,
            [
                ("a".to_string(), bosun_proto::PlanEntryStatus::Pending),
                ("b".to_string(), bosun_proto::PlanEntryStatus::InProgress),
                ("c".to_string(), bosun_proto::PlanEntryStatus::Completed),
            ]
        );
        assert_eq!(chunk(ChunkKind::Text, &ContentBlock::from("hi")), Some((ChunkKind::Text, "hi".into())));
        assert_eq!(chunk(ChunkKind::Text, &ContentBlock::from("")), None);
    }

    #[test]
    fn stderr_levels() {
        assert!(stderr_is_warning("2026-01-01 ERROR codex_core: boom"));
        assert!(stderr_is_warning("WARNING: proceeding"));
        assert!(!stderr_is_warning("listening on stdio"));
    }
}
