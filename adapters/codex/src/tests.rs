//! The mapping of codex notifications onto Bosun events (pure), and the
//! driver's process handling against tiny scripted stand-ins for
//! `codex app-server` written in `sh`. The real binary is exercised by
//! `e2e_real_codex` below (opt-in) and `tests/codex_schema.rs`.

use super::*;
use crate::mapping::*;
use crate::process::*;
use crate::protocol::{method, ApprovalDecision, ServerNotification, ServerRequest, TokenUsageBreakdown};
use crate::turn::INTERRUPT_GRACE;
use bosun_driver::{Asked, DriverNotice, LogLevel, TurnControl, TurnOutcome};
use bosun_proto::{Action, ChunkKind, PlanEntryStatus, ToolStatus, Usage};
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;
use tokio::time::Instant;

const THREAD: &str = "th1";
const TURN: &str = "tu1";

fn state() -> TurnMapping {
    let mut state = TurnMapping::new(THREAD.into(), "/work".into(), None);
    state.learn_turn_id(TURN);
    state
}

fn notification(method_name: &str, params: Value) -> ServerNotification {
    ServerNotification::parse(method_name, params).unwrap()
}

fn feed(state: &mut TurnMapping, method_name: &str, params: Value) -> Vec<AgentEvent> {
    state.on_notification(notification(method_name, params))
}

fn delta(item: &str, text: &str) -> Value {
    json!({"threadId": THREAD, "turnId": TURN, "itemId": item, "delta": text})
}

fn item(item: Value) -> Value {
    json!({"threadId": THREAD, "turnId": TURN, "item": item, "startedAtMs": 1, "completedAtMs": 2})
}

fn chunk(kind: ChunkKind, text: &str) -> AgentEvent {
    AgentEvent::Chunk { kind, text: text.into(), checkpoint: None }
}

fn usage_params(total: (i64, i64), last: (i64, i64)) -> Value {
    let breakdown = |(input, output): (i64, i64)| json!({"inputTokens": input, "outputTokens": output, "cachedInputTokens": 0, "reasoningOutputTokens": 0, "totalTokens": input + output});
    json!({"threadId": THREAD, "turnId": TURN, "tokenUsage": {"total": breakdown(total), "last": breakdown(last)}})
}

fn completed(status: &str, error: Value) -> Value {
    json!({"threadId": THREAD, "turn": {"id": TURN, "items": [], "status": status, "error": error}})
}

#[test]
fn deltas_become_chunks_of_their_kind() {
    let mut s = state();
    assert_eq!(feed(&mut s, method::AGENT_MESSAGE_DELTA, delta("m1", "Hel")), [chunk(ChunkKind::Text, "Hel")]);
    assert_eq!(
        feed(
            &mut s,
            method::REASONING_SUMMARY_TEXT_DELTA,
            json!({"threadId": THREAD, "turnId": TURN, "itemId": "r1", "delta": "hmm", "summaryIndex": 0})
        ),
        [chunk(ChunkKind::Thought, "hmm")]
    );
    assert_eq!(
        feed(
            &mut s,
            method::REASONING_TEXT_DELTA,
            json!({"threadId": THREAD, "turnId": TURN, "itemId": "r2", "delta": "raw", "contentIndex": 0})
        ),
        [chunk(ChunkKind::Thought, "raw")]
    );
    assert_eq!(
        feed(&mut s, method::COMMAND_OUTPUT_DELTA, delta("c1", "out\n")),
        [chunk(ChunkKind::CommandOutput, "out\n")]
    );
    // A completed message already streamed adds nothing; one that was not
    // streamed comes whole.
    assert!(feed(&mut s, method::ITEM_COMPLETED, item(json!({"type": "agentMessage", "id": "m1", "text": "Hello"})))
        .is_empty());
    assert_eq!(
        feed(&mut s, method::ITEM_COMPLETED, item(json!({"type": "agentMessage", "id": "m2", "text": "Whole"}))),
        [chunk(ChunkKind::Text, "Whole")]
    );
}

#[test]
fn messages_about_other_turns_or_threads_are_ignored() {
    let mut s = state();
    let other_turn = json!({"threadId": THREAD, "turnId": "old", "itemId": "m", "delta": "x"});
    assert!(feed(&mut s, method::AGENT_MESSAGE_DELTA, other_turn).is_empty());
    let other_thread = json!({"threadId": "other", "turnId": TURN, "itemId": "m", "delta": "x"});
    assert!(feed(&mut s, method::AGENT_MESSAGE_DELTA, other_thread).is_empty());
    let old_completion = json!({"threadId": THREAD, "turn": {"id": "old", "items": [], "status": "interrupted"}});
    assert!(feed(&mut s, method::TURN_COMPLETED, old_completion).is_empty());
}

#[test]
fn a_command_item_is_a_tool_call_with_its_output_on_completion() {
    let mut s = state();
    let started = feed(
        &mut s,
        method::ITEM_STARTED,
        item(json!({
            "type": "commandExecution", "id": "call_1", "command": "/bin/bash -lc 'echo hi'", "cwd": "/work",
            "status": "inProgress", "commandActions": [], "aggregatedOutput": null
        })),
    );
    let [AgentEvent::ToolCall(call)] = started.as_slice() else { panic!("{started:?}") };
    assert_eq!((call.id.as_str(), call.kind.as_str(), call.status), ("call_1", "execute", ToolStatus::InProgress));
    assert_eq!(call.title, "/bin/bash -lc 'echo hi'");
    let done = feed(
        &mut s,
        method::ITEM_COMPLETED,
        item(json!({
            "type": "commandExecution", "id": "call_1", "command": "/bin/bash -lc 'echo hi'", "cwd": "/work",
            "status": "completed", "commandActions": [], "aggregatedOutput": "hi\n", "exitCode": 0, "durationMs": 4
        })),
    );
    let [AgentEvent::ToolUpdate(update), AgentEvent::CommandRan { run, .. }] = done.as_slice() else {
        panic!("{done:?}")
    };
    assert_eq!((update.status, update.output.as_deref()), (Some(ToolStatus::Completed), Some("hi\n")));
    assert_eq!(update.detail["exit_code"], 0);
    // The audit record: what ran, where, how it ended, how much it wrote.
    assert_eq!((run.command.as_str(), run.cwd.as_str(), run.exit_code), ("/bin/bash -lc 'echo hi'", "/work", Some(0)));
    assert_eq!((run.duration_ms, run.stdout_bytes, run.ended_by), (4, 3, None));

    // Declined: failed, and said so.
    let declined = feed(
        &mut s,
        method::ITEM_COMPLETED,
        item(json!({
            "type": "commandExecution", "id": "call_2", "command": "rm -rf /", "cwd": "/work",
            "status": "declined", "commandActions": []
        })),
    );
    // Never announced: a ToolCall comes first, already in its final state.
    let [AgentEvent::ToolCall(call), AgentEvent::ToolUpdate(update)] = declined.as_slice() else {
        panic!("{declined:?}")
    };
    assert_eq!((call.status, update.status), (ToolStatus::Failed, Some(ToolStatus::Failed)));
    assert_eq!(update.detail["declined"], true);
}

/// What covered each command and file change codex reports done: the
/// approval it asked for, one accepted for the session, its own safe list,
/// or nothing (which the daemon treats as a violation under plan-only).
#[test]
fn what_covered_each_act_is_told_with_its_record() {
    let mut s = state().for_turn("t_daemon", Granted::default());
    let command_item = |id: &str, command: &str, status: &str| {
        item(json!({
            "type": "commandExecution", "id": id, "command": command, "cwd": "/work",
            "status": status, "commandActions": [], "aggregatedOutput": "", "exitCode": 0
        }))
    };
    let asked_of = |events: Vec<AgentEvent>| -> Vec<Asked> {
        events
            .into_iter()
            .filter_map(|e| match e {
                AgentEvent::CommandRan { asked, .. } | AgentEvent::FileChanged { asked, .. } => Some(asked),
                _ => None,
            })
            .collect()
    };
    let request = |item_id: &str, command: &str| {
        ServerRequest::parse(
            method::COMMAND_APPROVAL,
            json!({"threadId": THREAD, "turnId": TURN, "itemId": item_id, "startedAtMs": 1, "command": command, "cwd": "/w"}),
        )
        .unwrap()
    };

    // Asked, then ran: covered by that request.
    s.on_request(&json!(0), request("c1", "make"));
    let done = asked_of(feed(&mut s, method::ITEM_COMPLETED, command_item("c1", "make", "completed")));
    assert_eq!(done, [Asked::request("t_daemon", "codex-0")]);
    // Ran without asking: a read-only command is on codex's safe list, a
    // write is not covered by anything.
    let done =
        asked_of(feed(&mut s, method::ITEM_COMPLETED, command_item("c2", "/bin/bash -lc 'ls -la'", "completed")));
    assert_eq!(done, [Asked::AgentSafeList]);
    let done = asked_of(feed(&mut s, method::ITEM_COMPLETED, command_item("c3", "touch x", "completed")));
    assert_eq!(done, [Asked::NotAsked]);
    // Accepted for the session: codex repeats the same command unasked.
    s.on_request(&json!(1), request("c4", "cargo test"));
    assert!(s.grant("codex-1").is_some());
    let done = asked_of(feed(&mut s, method::ITEM_COMPLETED, command_item("c5", "cargo test", "completed")));
    assert_eq!(done, [Asked::request("t_daemon", "codex-1")]);

    // A file change applied without asking.
    let patch = item(json!({
        "type": "fileChange", "id": "p1", "status": "completed",
        "changes": [{"path": "/w/a.txt", "kind": {"type": "add"}, "diff": "x"}]
    }));
    let events = feed(&mut s, method::ITEM_COMPLETED, patch);
    let changed: Vec<&AgentEvent> = events.iter().filter(|e| matches!(e, AgentEvent::FileChanged { .. })).collect();
    assert!(
        matches!(changed.as_slice(), [AgentEvent::FileChanged { path, asked: Asked::NotAsked, .. }] if path == "/w/a.txt"),
        "{events:?}"
    );
}

#[test]
fn other_tool_items_map_to_their_kinds() {
    let mut s = state();
    let cases = [
        (
            json!({"type": "fileChange", "id": "f", "status": "inProgress", "changes": [{"path": "/w/a.txt", "kind": {"type": "add"}, "diff": "x\n"}]}),
            "edit",
            "edit /w/a.txt",
        ),
        (
            json!({"type": "mcpToolCall", "id": "m", "server": "docs", "tool": "lookup", "status": "inProgress", "arguments": {"q": 1}}),
            "other",
            "docs: lookup",
        ),
        (json!({"type": "webSearch", "id": "w", "query": "rust"}), "fetch", "web search: rust"),
        (json!({"type": "imageView", "id": "i", "path": "/w/p.png"}), "read", "view /w/p.png"),
    ];
    for (item_json, kind, title) in cases {
        let events = feed(&mut s, method::ITEM_STARTED, item(item_json));
        let [AgentEvent::ToolCall(call)] = events.as_slice() else { panic!("{events:?}") };
        assert_eq!((call.kind.as_str(), call.title.as_str()), (kind, title));
    }
    let events = feed(
        &mut s,
        method::ITEM_COMPLETED,
        item(json!({
            "type": "mcpToolCall", "id": "m", "server": "docs", "tool": "lookup", "status": "completed", "arguments": {},
            "result": {"content": [{"type": "text", "text": "found it"}]}
        })),
    );
    let [AgentEvent::ToolUpdate(update)] = events.as_slice() else { panic!("{events:?}") };
    assert_eq!(update.output.as_deref(), Some("found it"));
    // Not tool calls.
    for kind in ["userMessage", "plan", "contextCompaction"] {
        assert!(feed(&mut s, method::ITEM_STARTED, item(json!({"type": kind, "id": "x", "content": [], "text": ""})))
            .is_empty());
    }
}

#[test]
fn usage_is_this_turns_share_of_the_thread_totals() {
    // The thread had used 107/7 before this turn.
    let before = TokenUsageBreakdown { input_tokens: 100, output_tokens: 7, ..Default::default() };
    let mut s = TurnMapping::new(THREAD.into(), "/w".into(), Some(before));
    s.learn_turn_id(TURN);
    let usage = |input, output| AgentEvent::Usage(Usage::new(input, output));
    // Codex repeats the old totals when a steer cuts a response: no usage yet.
    assert_eq!(feed(&mut s, method::TOKEN_USAGE_UPDATED, usage_params((100, 7), (100, 7))), [usage(0, 0)]);
    assert_eq!(feed(&mut s, method::TOKEN_USAGE_UPDATED, usage_params((200, 14), (100, 7))), [usage(100, 7)]);
    assert_eq!(feed(&mut s, method::TOKEN_USAGE_UPDATED, usage_params((300, 21), (100, 7))), [usage(200, 14)]);
    // The same again says nothing new.
    assert!(feed(&mut s, method::TOKEN_USAGE_UPDATED, usage_params((300, 21), (100, 7))).is_empty());

    // Totals reported for another turn, even before ours is known, are the
    // baseline.
    let mut s = TurnMapping::new(THREAD.into(), "/w".into(), None);
    let mut stale = usage_params((700, 49), (100, 7));
    stale["turnId"] = json!("old");
    assert!(feed(&mut s, method::TOKEN_USAGE_UPDATED, stale.clone()).is_empty());
    s.learn_turn_id(TURN);
    assert!(feed(&mut s, method::TOKEN_USAGE_UPDATED, stale).is_empty());
    assert_eq!(feed(&mut s, method::TOKEN_USAGE_UPDATED, usage_params((800, 56), (100, 7))), [usage(100, 7)]);

    // No baseline known (a fresh process): the first report's own response
    // is all this turn used so far.
    let mut s = state();
    assert_eq!(feed(&mut s, method::TOKEN_USAGE_UPDATED, usage_params((500, 35), (100, 7))), [usage(100, 7)]);
    assert_eq!(feed(&mut s, method::TOKEN_USAGE_UPDATED, usage_params((600, 42), (100, 7))), [usage(200, 14)]);
}

#[test]
fn plans_map_step_by_step() {
    let mut s = state();
    let params = json!({"threadId": THREAD, "turnId": TURN, "plan": [
        {"step": "read", "status": "completed"}, {"step": "edit", "status": "inProgress"}, {"step": "test", "status": "pending"}
    ]});
    let events = feed(&mut s, method::TURN_PLAN_UPDATED, params);
    let [AgentEvent::Plan(entries)] = events.as_slice() else { panic!("{events:?}") };
    let statuses: Vec<_> = entries.iter().map(|e| (e.content.as_str(), e.status)).collect();
    assert_eq!(
        statuses,
        [
            ("read", PlanEntryStatus::Completed),
            ("edit", PlanEntryStatus::InProgress),
            ("test", PlanEntryStatus::Pending)
        ]
    );
}

#[test]
fn turn_completion_maps_onto_outcomes() {
    let finished = |events: Vec<AgentEvent>| match events.as_slice() {
        [AgentEvent::Finished(outcome)] => outcome.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        finished(feed(&mut state(), method::TURN_COMPLETED, completed("completed", Value::Null))),
        TurnOutcome::Completed
    );
    assert_eq!(
        finished(feed(&mut state(), method::TURN_COMPLETED, completed("interrupted", Value::Null))),
        TurnOutcome::Interrupted
    );
    assert_eq!(
        finished(feed(
            &mut state(),
            method::TURN_COMPLETED,
            completed("failed", json!({"message": "quota", "additionalDetails": "try later"}))
        )),
        TurnOutcome::Failed("quota (try later)".into())
    );
    // Without an error on the turn, the last error notification explains it.
    let mut s = state();
    let error = json!({"threadId": THREAD, "turnId": TURN, "willRetry": false, "error": {"message": "stream broke"}});
    let logged = feed(&mut s, method::ERROR, error);
    assert!(
        matches!(logged.as_slice(), [AgentEvent::Log { level: LogLevel::Error, message }] if message.contains("stream broke"))
    );
    assert_eq!(
        finished(feed(&mut s, method::TURN_COMPLETED, completed("failed", Value::Null))),
        TurnOutcome::Failed("stream broke".into())
    );
    // A retried error is only a warning and does not become the reason.
    let mut s = state();
    let retry = json!({"threadId": THREAD, "turnId": TURN, "willRetry": true, "error": {"message": "blip"}});
    assert!(matches!(feed(&mut s, method::ERROR, retry).as_slice(), [AgentEvent::Log { level: LogLevel::Warn, .. }]));
    assert_eq!(
        finished(feed(&mut s, method::TURN_COMPLETED, completed("failed", Value::Null))),
        TurnOutcome::Failed("codex reported the turn failed".into())
    );
}

#[test]
fn approvals_are_asked_with_unique_ids_and_file_paths() {
    let mut s = state();
    let command = ServerRequest::parse(
        method::COMMAND_APPROVAL,
        json!({
            "threadId": THREAD, "turnId": TURN, "itemId": "call_1", "startedAtMs": 1,
            "command": "/bin/bash -lc 'ls'", "cwd": "/w"
        }),
    )
    .unwrap();
    let asked = s.on_request(&json!(0), command);
    assert_eq!(
        asked,
        RequestOutcome::Ask(AgentEvent::ApprovalRequest {
            request_id: "codex-0".into(),
            action: Action::Command { command: "/bin/bash -lc 'ls'".into(), cwd: "/w".into() },
            checkpoint: None,
        })
    );
    // The file change approval names no paths: they come from the item.
    feed(
        &mut s,
        method::ITEM_STARTED,
        item(json!({
            "type": "fileChange", "id": "call_2", "status": "inProgress",
            "changes": [{"path": "/w/a.txt", "kind": {"type": "add"}, "diff": "one\ntwo\n"}, {"path": "/w/b.txt", "kind": {"type": "delete"}, "diff": ""}]
        })),
    );
    let patch = ServerRequest::parse(
        method::FILE_CHANGE_APPROVAL,
        json!({
            "threadId": THREAD, "turnId": TURN, "itemId": "call_2", "startedAtMs": 1, "reason": null
        }),
    )
    .unwrap();
    let RequestOutcome::Ask(AgentEvent::ApprovalRequest { request_id, action, .. }) =
        s.on_request(&json!("s-7"), patch)
    else {
        panic!("no approval asked")
    };
    assert_eq!(request_id, "codex-s-7");
    assert_eq!(
        action,
        Action::FileChange {
            path: "/w/a.txt, /w/b.txt".into(),
            summary: "add /w/a.txt (2 diff lines); delete /w/b.txt (0 diff lines)".into()
        }
    );
    assert_eq!(s.approvals.len(), 2);
    // Codex settled one itself.
    feed(&mut s, method::SERVER_REQUEST_RESOLVED, json!({"threadId": THREAD, "requestId": 0}));
    assert_eq!(s.approvals.keys().collect::<Vec<_>>(), ["codex-s-7"]);
    // An approval for another turn (one we abandoned) is cancelled at once;
    // other requests are refused.
    let stale = ServerRequest::parse(
        method::COMMAND_APPROVAL,
        json!({"threadId": THREAD, "turnId": "old", "itemId": "x", "startedAtMs": 1}),
    )
    .unwrap();
    assert_eq!(s.on_request(&json!(9), stale), RequestOutcome::Answer(ApprovalDecision::Cancel));
    let other = ServerRequest::parse("item/tool/requestUserInput", json!({})).unwrap();
    assert_eq!(s.on_request(&json!(10), other), RequestOutcome::Refuse("item/tool/requestUserInput".into()));
}

#[test]
fn stderr_lines_are_cleaned_and_levelled() {
    let line = "\u{1b}[2m2026-11-22T02:06:22Z\u{1b}[0m \u{1b}[31mERROR\u{1b}[0m codex_core: boom";
    let clean = strip_ansi(line);
    assert_eq!(clean, "2026-11-22T02:06:22Z ERROR codex_core: boom");
    assert_eq!(stderr_level(&clean), LogLevel::Error);
    assert_eq!(stderr_level("Error: approval_policy is no longer supported"), LogLevel::Error);
    assert_eq!(stderr_level("WARNING: proceeding"), LogLevel::Warn);
    assert_eq!(stderr_level("   0: <unknown>"), LogLevel::Info);
}

// ---------------------------------------------------------------------------
// The driver against scripted stand-ins
// ---------------------------------------------------------------------------

/// The lines a stand-in answers our start-up with: we send `initialize` (id
/// 1), `initialized`, then `thread/start` (id 2) and `turn/start` (id 3).
const HANDSHAKE: &str = r#"
read -r line; echo '{"id":1,"result":{"userAgent":"fake/9.9.9 (test)"}}'
read -r line
read -r line; echo '{"id":2,"result":{"thread":{"id":"th1"},"approvalPolicy":"untrusted","approvalsReviewer":"user"}}'
read -r line; echo '{"id":3,"result":{"turn":{"id":"tu1","status":"inProgress","items":[]}}}'
"#;

fn fake_driver(script: &str, silence_secs: Option<u64>) -> (CodexDriver, mpsc::UnboundedReceiver<DriverNotice>) {
    let mut spec = ProviderSpec::new("codex", "codex-app-server", Some("/bin/sh"), &[]);
    spec.args = vec!["-c".into(), script.into()];
    spec.startup_timeout_secs = Some(5);
    spec.silence_timeout_secs = silence_secs;
    let (notices, notices_rx) = mpsc::unbounded_channel();
    let init = DriverInit {
        session_id: "s".into(),
        cwd: std::env::temp_dir(),
        binding: None,
        notices,
        isolation: bosun_isolation::Isolation::Host,
        network: false,
    };
    (CodexDriver::new(spec, init), notices_rx)
}

fn input(text: &str) -> TurnInput {
    TurnInput {
        session_id: "s".into(),
        turn_id: "t".into(),
        text: text.into(),
        cwd: std::env::temp_dir(),
        policy: bosun_proto::Policy::PlanOnly,
        resume: None,
    }
}

async fn until_finished(events: &mut mpsc::UnboundedReceiver<AgentEvent>) -> Vec<AgentEvent> {
    let mut seen = Vec::new();
    loop {
        let event = tokio::time::timeout(Duration::from_secs(10), events.recv())
            .await
            .expect("turn hung")
            .expect("no Finished");
        let last = matches!(event, AgentEvent::Finished(_));
        seen.push(event);
        if last {
            return seen;
        }
    }
}

fn drain(notices: &mut mpsc::UnboundedReceiver<DriverNotice>) -> Vec<DriverNotice> {
    std::iter::from_fn(|| notices.try_recv().ok()).collect()
}

#[tokio::test]
async fn a_turn_streams_then_completes_and_bad_lines_are_only_logged() {
    let script = format!(
        r#"{HANDSHAKE}
echo 'this is not json'
echo '{{"method":"item/agentMessage/delta","params":{{"threadId":"th1","turnId":"tu1","itemId":"m","delta":"hi"}}}}'
echo '{{"method":"turn/completed","params":{{"threadId":"th1","turn":{{"id":"tu1","status":"completed","items":[]}}}}}}'
cat > /dev/null"#
    );
    let (mut driver, mut notices) = fake_driver(&script, None);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let handle = driver.start_turn(input("hello"), tx).unwrap();
    let events = until_finished(&mut rx).await;
    assert_eq!(events, [chunk(ChunkKind::Text, "hi"), AgentEvent::Finished(TurnOutcome::Completed)]);
    drop(handle);
    let notices = drain(&mut notices);
    assert!(
        matches!(&notices[0], DriverNotice::Running { pid: Some(_), agent: Some(a), version: Some(v) } if a == "codex" && v == "9.9.9"),
        "{notices:?}"
    );
    assert_eq!(notices[1], DriverNotice::Bound(json!({"thread_id": "th1"})));
    assert!(
        notices.iter().any(
            |n| matches!(n, DriverNotice::Log { level: LogLevel::Warn, message } if message.contains("unreadable line"))
        ),
        "{notices:?}"
    );
}

#[tokio::test]
async fn a_thread_that_would_not_ask_refuses_plan_only_turns_but_not_full_access_ones() {
    let script = r#"
read -r line; echo '{"id":1,"result":{"userAgent":"fake/9.9.9 (test)"}}'
read -r line
read -r line; echo '{"id":2,"result":{"thread":{"id":"th1"},"approvalPolicy":"never","approvalsReviewer":"user"}}'
read -r line; echo '{"id":3,"result":{"turn":{"id":"tu1","status":"inProgress","items":[]}}}'
echo '{"method":"turn/completed","params":{"threadId":"th1","turn":{"id":"tu1","status":"completed","items":[]}}}'
cat > /dev/null"#;
    let (mut driver, mut notices) = fake_driver(script, None);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let _plan_only = driver.start_turn(input("hello"), tx).unwrap();
    let events = until_finished(&mut rx).await;
    assert!(
        matches!(&events[..], [AgentEvent::Finished(TurnOutcome::Failed(why))] if why.contains("cannot be held to plan-only") && why.contains("\"never\"")),
        "{events:?}"
    );
    let report = drain(&mut notices).into_iter().find_map(|n| match n {
        DriverNotice::Enforcement(report) => Some(report),
        _ => None,
    });
    assert_eq!(report.map(|r| r.enforcement), Some(bosun_proto::Enforcement::Unverified));
    // Under full-access the daemon accepts everything anyway: the turn runs.
    let (tx, mut rx) = mpsc::unbounded_channel();
    let full_access = TurnInput { policy: bosun_proto::Policy::FullAccess, ..input("hello") };
    let _turn = driver.start_turn(full_access, tx).unwrap();
    assert_eq!(until_finished(&mut rx).await, [AgentEvent::Finished(TurnOutcome::Completed)]);
}

#[tokio::test]
async fn decisions_are_sent_back_in_codex_words() {
    let script = format!(
        r#"{HANDSHAKE}
echo '{{"id":0,"method":"item/commandExecution/requestApproval","params":{{"threadId":"th1","turnId":"tu1","itemId":"c","startedAtMs":1,"command":"ls","cwd":"/"}}}}'
read -r reply; echo "reply: $reply" >&2
echo '{{"method":"turn/completed","params":{{"threadId":"th1","turn":{{"id":"tu1","status":"completed","items":[]}}}}}}'
cat > /dev/null"#
    );
    let (mut driver, mut notices) = fake_driver(&script, Some(1));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let handle = driver.start_turn(input("RUN: ls"), tx).unwrap();
    let event = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.unwrap().unwrap();
    let AgentEvent::ApprovalRequest { request_id, action, .. } = event else { panic!("{event:?}") };
    assert_eq!(action, Action::Command { command: "ls".into(), cwd: "/".into() });
    // Waiting on a decision is not silence, however long it takes.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(handle.send(TurnControl::Decision { request_id, decision: bosun_proto::Decision::AcceptForSession }));
    assert_eq!(until_finished(&mut rx).await, [AgentEvent::Finished(TurnOutcome::Completed)]);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let logs: Vec<String> = drain(&mut notices)
        .into_iter()
        .filter_map(|n| match n {
            DriverNotice::Log { message, .. } => Some(message),
            _ => None,
        })
        .collect();
    assert!(logs.iter().any(|l| l.contains(r#"reply: {"id":0,"result":{"decision":"acceptForSession"}}"#)), "{logs:?}");
}

#[tokio::test]
async fn a_process_that_dies_fails_the_turn_then_reports_and_stays_dead() {
    let script = format!("{HANDSHAKE}\nexit 3");
    let (mut driver, mut notices) = fake_driver(&script, None);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let _handle = driver.start_turn(input("hello"), tx).unwrap();
    let reason = "the agent process exited: exit code 3".to_string();
    assert_eq!(until_finished(&mut rx).await, [AgentEvent::Finished(TurnOutcome::Failed(reason.clone()))]);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(drain(&mut notices).contains(&DriverNotice::Exited { reason: reason.clone() }));
    // Later turns fail at once, with the same reason.
    let (tx, mut rx) = mpsc::unbounded_channel();
    let _handle = driver.start_turn(input("again"), tx).unwrap();
    assert_eq!(until_finished(&mut rx).await, [AgentEvent::Finished(TurnOutcome::Failed(reason))]);
}

#[tokio::test]
async fn a_start_failure_fails_the_turn_without_a_crash_report() {
    let (mut driver, mut notices) = fake_driver("read -r line; echo 'Error: bad config' >&2; exit 1", None);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let _handle = driver.start_turn(input("hello"), tx).unwrap();
    let events = until_finished(&mut rx).await;
    let [AgentEvent::Finished(TurnOutcome::Failed(reason))] = events.as_slice() else { panic!("{events:?}") };
    assert!(reason.contains("exited during start-up (exit code 1)"), "{reason}");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let notices = drain(&mut notices);
    assert!(
        !notices.iter().any(|n| matches!(n, DriverNotice::Exited { .. } | DriverNotice::Running { .. })),
        "{notices:?}"
    );
    assert!(notices
        .iter()
        .any(|n| matches!(n, DriverNotice::Log { level: LogLevel::Error, message } if message == "Error: bad config")));
}

#[tokio::test]
async fn a_silent_agent_is_failed_and_killed() {
    let script = format!("{HANDSHAKE}\nsleep 30");
    let (mut driver, mut notices) = fake_driver(&script, Some(1));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let _handle = driver.start_turn(input("hello"), tx).unwrap();
    let events = until_finished(&mut rx).await;
    let [AgentEvent::Finished(TurnOutcome::Failed(reason))] = events.as_slice() else { panic!("{events:?}") };
    assert!(reason.contains("said nothing for 1 s"), "{reason}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(drain(&mut notices).contains(&DriverNotice::Exited { reason: reason.clone() }));
}

#[tokio::test]
async fn an_interrupt_codex_ignores_still_ends_the_turn_and_one_turn_at_a_time() {
    let script = format!("{HANDSHAKE}\ncat > /dev/null");
    let (mut driver, _notices) = fake_driver(&script, None);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let handle = driver.start_turn(input("hello"), tx).unwrap();
    let (other_tx, _other_rx) = mpsc::unbounded_channel();
    assert!(matches!(driver.start_turn(input("too"), other_tx), Err(AgentError::Busy)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let asked = Instant::now();
    assert!(handle.send(TurnControl::Interrupt));
    let events = until_finished(&mut rx).await;
    assert!(matches!(events.last(), Some(AgentEvent::Finished(TurnOutcome::Interrupted))), "{events:?}");
    let waited = asked.elapsed();
    assert!(waited >= INTERRUPT_GRACE && waited < INTERRUPT_GRACE + Duration::from_secs(2), "{waited:?}");
}

#[tokio::test]
async fn dropping_the_driver_kills_the_process_group() {
    let marker = format!("bosun-codex-test-{}", std::process::id());
    // A grandchild that would outlive a plain kill of the leader.
    let script = format!("{HANDSHAKE}\nsh -c 'exec sleep 31 # {marker}' &\ncat > /dev/null");
    let (mut driver, _notices) = fake_driver(&script, None);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let _handle = driver.start_turn(input("hello"), tx).unwrap();
    let pgid = loop {
        if let Some(group) = driver.shared.state().group.as_ref() {
            break group.pgid();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(group_alive(pgid));
    drop(driver);
    let deadline = Instant::now() + Duration::from_secs(5);
    while group_alive(pgid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!group_alive(pgid), "the process group outlived the driver");
    // The running turn hears about it; no crash is reported for a drop.
    let events = until_finished(&mut rx).await;
    assert!(matches!(events.last(), Some(AgentEvent::Finished(TurnOutcome::Failed(_)))));
}

fn group_alive(pgid: i32) -> bool {
    // SAFETY: signal 0 only checks that the group exists.
    unsafe { libc::killpg(pgid, 0) == 0 }
}

// ---------------------------------------------------------------------------
// The real codex, against the scripted model server (opt-in)
// ---------------------------------------------------------------------------

mod e2e;
