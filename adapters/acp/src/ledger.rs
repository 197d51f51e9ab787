//! What an ACP agent did in a turn, and what covered each act: the tool
//! calls it announced, the permissions it asked for and how the daemon
//! answered, and the terminals and writes the daemon carried out for it.
//!
//! Each command or file change the agent reports done comes out as an audit
//! event with what covered it ([`Asked`]); the daemon checks that against its
//! approvals and the session's policy (an act nothing covers, in a plan-only
//! session, is a violation). Pure bookkeeping, no I/O.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

use agent_client_protocol::v1::schema::{
    ToolCall as AcpToolCall, ToolCallContent, ToolCallStatus, ToolCallUpdate, ToolKind,
};
use bosun_proto::{Decision, EndedBy};
use serde_json::Value;

use super::client::Terminal;
use super::known_agents::KnownAgent;
use super::mapping::{self, CommandCalls, EndedCommand};
use bosun_driver::{AgentEvent, Asked, TurnOutcome, TurnState};

/// What "accepted for the session" covers for the rest of the session: the
/// agent then does such things without asking, by its own rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum ActionClass {
    Command,
    FileChange,
}

impl ActionClass {
    fn of(kind: ToolKind) -> Option<ActionClass> {
        match kind {
            ToolKind::Execute => Some(ActionClass::Command),
            ToolKind::Edit | ToolKind::Delete | ToolKind::Move => Some(ActionClass::FileChange),
            _ => None,
        }
    }
}

/// Grants accepted for the session, shared by the driver's turns.
pub(crate) type Grants = Arc<Mutex<HashMap<ActionClass, Asked>>>;

pub(crate) struct Ledger {
    turn_id: String,
    agent: Option<KnownAgent>,
    cwd: std::path::PathBuf,
    grants: Grants,
    commands: CommandCalls,
    /// Tool call → the permission request about it.
    requests: HashMap<String, String>,
    /// Requests the daemon did not accept.
    refused: HashSet<String>,
    /// Request → the kind of act it was about, for a grant.
    request_classes: HashMap<String, ActionClass>,
    kinds: HashMap<String, ToolKind>,
    /// The files each file tool call touches, as last announced.
    paths: HashMap<String, Vec<String>>,
    /// File tool calls whose change was recorded.
    files_done: HashSet<String>,
    /// Tool calls whose command ran in a terminal of ours (the terminal
    /// records it).
    in_terminal: HashSet<String>,
    /// Our terminals by id, with what covered each.
    terminals: HashMap<String, Arc<Terminal>>,
    /// Files the daemon wrote for the agent in this turn.
    daemon_writes: HashSet<String>,
}

impl Ledger {
    pub(crate) fn new(turn_id: &str, agent: Option<KnownAgent>, cwd: &Path, grants: Grants) -> Ledger {
        Ledger {
            turn_id: turn_id.to_string(),
            agent,
            cwd: cwd.to_path_buf(),
            grants,
            commands: CommandCalls::default(),
            requests: HashMap::new(),
            refused: HashSet::new(),
            request_classes: HashMap::new(),
            kinds: HashMap::new(),
            paths: HashMap::new(),
            files_done: HashSet::new(),
            in_terminal: HashSet::new(),
            terminals: HashMap::new(),
            daemon_writes: HashSet::new(),
        }
    }

    /// Who the agent is, once it has said (at its start, which may come
    /// after the turn's).
    pub(crate) fn agent_is(&mut self, agent: Option<KnownAgent>) {
        self.agent = agent;
    }

    /// The agent asked permission (our `request_id`) for a tool call.
    pub(crate) fn asked(&mut self, tool_call: &ToolCallUpdate, request_id: &str) {
        let id = tool_call.tool_call_id.to_string();
        if let Some(kind) = tool_call.fields.kind.or_else(|| self.kinds.get(&id).copied()) {
            self.kinds.insert(id.clone(), kind);
            if let Some(class) = ActionClass::of(kind) {
                self.request_classes.insert(request_id.to_string(), class);
            }
        }
        self.requests.insert(id, request_id.to_string());
    }

    /// The daemon decided on a request of this turn (a permission, a write
    /// or a terminal it asked about).
    pub(crate) fn decided(&mut self, request_id: &str, decision: Decision) {
        if !decision.allows() {
            self.refused.insert(request_id.to_string());
        }
        if decision == Decision::AcceptForSession {
            if let Some(class) = self.request_classes.get(request_id) {
                let asked = Asked::request(&self.turn_id, request_id);
                self.grants.lock().unwrap_or_else(|p| p.into_inner()).insert(*class, asked);
            }
        }
    }

    /// The daemon wrote `path` for the agent.
    pub(crate) fn wrote(&mut self, path: &str) {
        let path = self.absolute(path);
        self.daemon_writes.insert(path);
    }

    /// The daemon started a terminal for the agent.
    pub(crate) fn terminal(&mut self, id: &str, terminal: Arc<Terminal>) {
        self.terminals.insert(id.to_string(), terminal);
    }

    /// An approved tool call of the agent's that is still under way and is
    /// about this command (a terminal the agent opens to carry it out): its
    /// approval covers the terminal.
    pub(crate) fn covering_command(&self, command: &str) -> Option<Asked> {
        self.requests
            .iter()
            .find_map(|(tool_id, request_id)| {
                let running = self.commands.is_running(tool_id) && !self.refused.contains(request_id);
                (running && self.commands.command_of(tool_id) == Some(command))
                    .then(|| Asked::request(&self.turn_id, request_id))
            })
            .or_else(|| self.grant(ActionClass::Command))
    }

    /// The same for a file the agent has the daemon write.
    pub(crate) fn covering_write(&self, path: &str) -> Option<Asked> {
        let path = self.absolute(path);
        self.requests
            .iter()
            .find_map(|(tool_id, request_id)| {
                let about = self.paths.get(tool_id).is_some_and(|paths| paths.contains(&path));
                let open = !self.files_done.contains(tool_id) && !self.refused.contains(request_id);
                (about && open).then(|| Asked::request(&self.turn_id, request_id))
            })
            .or_else(|| self.grant(ActionClass::FileChange))
    }

    fn absolute(&self, path: &str) -> String {
        if Path::new(path).is_absolute() {
            path.to_string()
        } else {
            self.cwd.join(path).to_string_lossy().into_owned()
        }
    }

    fn grant(&self, class: ActionClass) -> Option<Asked> {
        self.grants.lock().unwrap_or_else(|p| p.into_inner()).get(&class).cloned()
    }

    fn learn(&mut self, id: &str, kind: Option<ToolKind>, raw_input: Option<&Value>, locations: Option<Vec<String>>) {
        if let Some(kind) = kind {
            self.kinds.insert(id.to_string(), kind);
        }
        let mut paths = locations.unwrap_or_default();
        if paths.is_empty() {
            if let Some(path) = raw_input.and_then(mapping::raw_input_path) {
                paths.push(path);
            }
        }
        // Agents may name files relative to the session's cwd.
        let paths: Vec<String> = paths.into_iter().map(|p| self.absolute(&p)).collect();
        if !paths.is_empty() {
            self.paths.insert(id.to_string(), paths);
        }
    }

    fn note_terminals(&mut self, id: &str, content: Option<&[ToolCallContent]>) {
        let ours = content.unwrap_or_default().iter().any(|item| match item {
            ToolCallContent::Terminal(t) => self.terminals.contains_key(t.terminal_id.0.as_ref()),
            _ => false,
        });
        if ours {
            self.in_terminal.insert(id.to_string());
        }
    }

    /// A tool call the agent announced; what it reports done already.
    pub(crate) fn tool_call(&mut self, call: &AcpToolCall) -> Vec<AgentEvent> {
        let id = call.tool_call_id.to_string();
        let locations: Vec<String> = call.locations.iter().map(|l| l.path.display().to_string()).collect();
        self.learn(&id, Some(call.kind), call.raw_input.as_ref(), Some(locations));
        self.note_terminals(&id, Some(&call.content));
        let mut events = Vec::new();
        if let Some(ended) = self.commands.started(call, &self.cwd) {
            events.extend(self.command_ended(ended));
        }
        events.extend(self.file_call_ended(&id, Some(call.status), &call.title));
        events
    }

    pub(crate) fn tool_update(&mut self, update: &ToolCallUpdate) -> Vec<AgentEvent> {
        let id = update.tool_call_id.to_string();
        let fields = &update.fields;
        let locations =
            fields.locations.as_ref().map(|l| l.iter().map(|l| l.path.display().to_string()).collect::<Vec<_>>());
        self.learn(&id, fields.kind, fields.raw_input.as_ref(), locations);
        self.note_terminals(&id, fields.content.as_deref());
        let mut events = Vec::new();
        if let Some(ended) = self.commands.updated(update) {
            events.extend(self.command_ended(ended));
        }
        let title = fields.title.clone().unwrap_or_default();
        events.extend(self.file_call_ended(&id, fields.status, &title));
        events
    }

    /// The record of a command call that ended, unless it never ran (turned
    /// down, then failed) or a terminal of ours ran it (which records it).
    fn command_ended(&self, ended: EndedCommand) -> Option<AgentEvent> {
        if self.in_terminal.contains(&ended.tool_id) {
            return None;
        }
        let asked = self.command_asked(&ended)?;
        Some(AgentEvent::CommandRan { run: ended.run, asked })
    }

    fn command_asked(&self, ended: &EndedCommand) -> Option<Asked> {
        if let Some(request_id) = self.requests.get(&ended.tool_id) {
            if ended.failed && self.refused.contains(request_id) {
                return None;
            }
            return Some(Asked::request(&self.turn_id, request_id));
        }
        if let Some(asked) = self.grant(ActionClass::Command) {
            return Some(asked);
        }
        // codex-acp runs codex, with its own list of read-only commands it
        // runs without asking under `untrusted`.
        if self.agent == Some(KnownAgent::CodexAcp) && bosun_driver::safe_commands::is_known_safe(&ended.run.command) {
            return Some(Asked::AgentSafeList);
        }
        Some(Asked::NotAsked)
    }

    /// The records of a file tool call (edit, delete, move) that completed.
    fn file_call_ended(&mut self, id: &str, status: Option<ToolCallStatus>, title: &str) -> Vec<AgentEvent> {
        let kind = self.kinds.get(id).copied().unwrap_or_default();
        if ActionClass::of(kind) != Some(ActionClass::FileChange) || status != Some(ToolCallStatus::Completed) {
            return Vec::new();
        }
        if !self.files_done.insert(id.to_string()) {
            return Vec::new();
        }
        let asked = match self.requests.get(id) {
            Some(request_id) => Asked::request(&self.turn_id, request_id),
            None => self.grant(ActionClass::FileChange).unwrap_or(Asked::NotAsked),
        };
        let verb = mapping::tool_kind_name(kind);
        let paths = self.paths.get(id).cloned().unwrap_or_else(|| vec![title.to_string()]);
        paths
            .into_iter()
            // The daemon's own write of it is on record already.
            .filter(|path| !self.daemon_writes.contains(path))
            .map(|path| AgentEvent::FileChanged {
                summary: if title.is_empty() { format!("{verb} by the agent") } else { format!("{verb}: {title}") },
                path,
                asked: asked.clone(),
            })
            .collect()
    }

    /// What the turn's end leaves: the records of command calls never
    /// reported ended, and of terminals still running (which are killed).
    pub(crate) fn finish(&mut self, ended_by: EndedBy) -> Vec<AgentEvent> {
        let mut events: Vec<AgentEvent> =
            self.commands.unfinished(ended_by).into_iter().filter_map(|ended| self.command_ended(ended)).collect();
        // A terminal still running when the turn ends is killed with it.
        let cut_by = if ended_by == EndedBy::Interrupted { EndedBy::Interrupted } else { EndedBy::KilledAtTurnEnd };
        for terminal in self.terminals.values() {
            events.extend(terminal.cut(cut_by));
        }
        events
    }
}

impl TurnState for Ledger {
    /// What the agent left running or unreported when the turn ended.
    fn closing(&mut self, outcome: &TurnOutcome) -> Vec<AgentEvent> {
        let ended_by =
            if *outcome == TurnOutcome::Interrupted { EndedBy::Interrupted } else { EndedBy::ExitNotReported };
        self.finish(ended_by)
    }

    /// Nobody waits for the turn: its terminals are stopped, unrecorded.
    fn abandoned(&mut self) {
        drop(self.finish(EndedBy::Interrupted));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ledger(agent: Option<KnownAgent>) -> Ledger {
        Ledger::new("t1", agent, Path::new("/w"), Grants::default())
    }

    fn call(id: &str, kind: &str, status: &str, raw: Value) -> AcpToolCall {
        serde_json::from_value(json!({"toolCallId": id, "title": "T", "kind": kind, "status": status, "rawInput": raw}))
            .unwrap()
    }

    fn update(id: &str, status: &str) -> ToolCallUpdate {
        serde_json::from_value(json!({"toolCallId": id, "status": status})).unwrap()
    }

    fn asked_of(events: &[AgentEvent]) -> Vec<Asked> {
        events
            .iter()
            .map(|e| match e {
                AgentEvent::CommandRan { asked, .. } | AgentEvent::FileChanged { asked, .. } => asked.clone(),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_command_done_without_asking_is_not_covered() {
        let mut l = ledger(None);
        let events = l.tool_call(&call("c1", "execute", "completed", json!({"command": "rm -rf x"})));
        assert_eq!(asked_of(&events), [Asked::NotAsked]);
    }

    #[test]
    fn an_asked_command_is_covered_by_its_request_and_a_refused_one_that_failed_never_ran() {
        let mut l = ledger(None);
        assert!(l.tool_call(&call("c1", "execute", "pending", json!({"command": "make"}))).is_empty());
        l.asked(&ToolCallUpdate::new("c1", Default::default()), "perm-1");
        assert_eq!(asked_of(&l.tool_update(&update("c1", "completed"))), [Asked::request("t1", "perm-1")]);

        l.tool_call(&call("c2", "execute", "pending", json!({"command": "make install"})));
        l.asked(&ToolCallUpdate::new("c2", Default::default()), "perm-2");
        l.decided("perm-2", Decision::Decline);
        assert!(l.tool_update(&update("c2", "failed")).is_empty());

        // Refused, and it completed anyway: it ran.
        l.tool_call(&call("c3", "execute", "pending", json!({"command": "curl x"})));
        l.asked(&ToolCallUpdate::new("c3", Default::default()), "perm-3");
        l.decided("perm-3", Decision::Decline);
        assert_eq!(asked_of(&l.tool_update(&update("c3", "completed"))), [Asked::request("t1", "perm-3")]);
    }

    #[test]
    fn codex_acp_safe_commands_are_its_own_and_other_agents_get_no_such_pass() {
        let mut l = ledger(Some(KnownAgent::CodexAcp));
        let events = l.tool_call(&call("c1", "execute", "completed", json!({"command": ["bash", "-lc", "ls -la"]})));
        assert_eq!(asked_of(&events), [Asked::AgentSafeList]);
        let events = l.tool_call(&call("c2", "execute", "completed", json!({"command": "touch x"})));
        assert_eq!(asked_of(&events), [Asked::NotAsked]);
        let mut other = ledger(Some(KnownAgent::Claude));
        let events = other.tool_call(&call("c1", "execute", "completed", json!({"command": "ls"})));
        assert_eq!(asked_of(&events), [Asked::NotAsked]);
    }

    #[test]
    fn grants_for_the_session_cover_later_acts_of_their_kind() {
        let grants = Grants::default();
        let mut l = Ledger::new("t1", None, Path::new("/w"), grants.clone());
        l.tool_call(&call("c1", "edit", "pending", json!({"path": "/w/a"})));
        l.asked(&ToolCallUpdate::new("c1", Default::default()), "perm-1");
        l.decided("perm-1", Decision::AcceptForSession);
        let mut next = Ledger::new("t2", None, Path::new("/w"), grants);
        let events = next.tool_call(&call("c9", "edit", "completed", json!({"path": "/w/b"})));
        assert_eq!(asked_of(&events), [Asked::request("t1", "perm-1")]);
        // Not commands, though.
        let events = next.tool_call(&call("c10", "execute", "completed", json!({"command": "x"})));
        assert_eq!(asked_of(&events), [Asked::NotAsked]);
    }

    #[test]
    fn file_changes_are_recorded_once_per_path_and_not_again_after_the_daemons_write() {
        let mut l = ledger(None);
        let edit: AcpToolCall = serde_json::from_value(json!({
            "toolCallId": "e1", "title": "Edit", "kind": "edit", "status": "pending",
            "locations": [{"path": "/w/a.txt"}, {"path": "/w/b.txt"}]
        }))
        .unwrap();
        l.tool_call(&edit);
        assert_eq!(l.covering_write("/w/a.txt"), None, "not asked, not covered");
        l.asked(&ToolCallUpdate::new("e1", Default::default()), "perm-1");
        assert_eq!(l.covering_write("/w/a.txt"), Some(Asked::request("t1", "perm-1")));
        l.wrote("/w/a.txt");
        let events = l.tool_update(&update("e1", "completed"));
        assert_eq!(events.len(), 1, "{events:?}");
        assert!(matches!(&events[0], AgentEvent::FileChanged { path, .. } if path == "/w/b.txt"));
        assert!(l.tool_update(&update("e1", "completed")).is_empty(), "once");
    }

    #[test]
    fn an_approved_command_covers_the_terminal_that_runs_it() {
        let mut l = ledger(None);
        l.tool_call(&call("c1", "execute", "pending", json!({"command": "cargo test"})));
        assert_eq!(l.covering_command("cargo test"), None);
        l.asked(&ToolCallUpdate::new("c1", Default::default()), "perm-1");
        assert_eq!(l.covering_command("cargo test"), Some(Asked::request("t1", "perm-1")));
        assert_eq!(l.covering_command("cargo publish"), None);
    }
}
