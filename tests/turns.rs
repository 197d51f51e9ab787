//! Turns on the demo provider: streaming, approvals under both policies,
//! busy sessions, interrupt and steer.

mod common;

use common::*;
use serde_json::json;

#[tokio::test]
async fn plain_turn_streams_a_reply() {
    let dir = tempdir();
    let d = Daemon::start(&dir.path().join("data"), Options::default());
    let s = d.new_session(dir.path(), "plan-only").await;
    let t = d.start_turn(&s, "hello there").await;
    let done = d.wait_turn_end(&s, &t).await;
    assert_eq!(done["data"]["status"], "completed");
    let events = d.events(Some(&s), 0).await;
    assert_increasing(&events);
    let chunks = events.iter().filter(|e| e["type"] == "stream:chunk").count();
    assert!(chunks >= 3, "several chunks expected, got {chunks}");
    assert!(!turn_text(&events, &t, Some("text")).is_empty());
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    let started = types.iter().position(|t| *t == "turn:started").unwrap();
    let complete = types.iter().position(|t| *t == "stream:complete").unwrap();
    let completed = types.iter().position(|t| *t == "turn:completed").unwrap();
    assert!(started < complete && complete < completed, "{types:?}");
    let session = d.ok_get(&format!("/api/v1/sessions/{s}")).await;
    assert_eq!(session["status"], "idle");
    assert_eq!(session["turns"][0]["status"], "completed");
    assert!(session["usage"]["output_tokens"].as_u64().unwrap() > 0, "{session}");
}

#[tokio::test]
async fn plan_only_accept_runs_the_command_and_decline_does_not() {
    let dir = tempdir();
    let d = Daemon::start(&dir.path().join("data"), Options::default());
    let s = d.new_session(dir.path(), "plan-only").await;

    let t = d.start_turn(&s, "please RUN: echo ran-it > accepted.txt && echo output-line").await;
    let approval = d.wait_pending_approval(&s).await;
    assert_eq!(approval["action"]["kind"], "command");
    assert_eq!(approval["action"]["cwd"], dir.path().to_str().unwrap());
    let session = d.ok_get(&format!("/api/v1/sessions/{s}")).await;
    assert_eq!(session["status"], "awaiting_approval");
    assert_eq!(session["pending_approvals"][0]["id"], approval["id"]);
    // Not run before the decision.
    assert!(!dir.path().join("accepted.txt").exists());
    let id = approval["id"].as_str().unwrap();
    let (status, body) = d.post(&format!("/api/v1/approvals/{id}"), json!({"decision":"accept"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "accepted");
    assert_eq!(body["decided_by"], "user");
    // The same decision again is fine; the opposite is a conflict.
    let (status, _) = d.post(&format!("/api/v1/approvals/{id}"), json!({"decision":"accept"})).await;
    assert_eq!(status, 200);
    let (status, err) = d.post(&format!("/api/v1/approvals/{id}"), json!({"decision":"decline"})).await;
    assert_eq!(status, 409, "{err}");
    let done = d.wait_turn_end(&s, &t).await;
    assert_eq!(done["data"]["status"], "completed");
    assert_eq!(std::fs::read_to_string(dir.path().join("accepted.txt")).unwrap().trim(), "ran-it");
    let events = d.events(Some(&s), 0).await;
    assert!(turn_text(&events, &t, Some("command_output")).contains("output-line"));

    let t2 = d.start_turn(&s, "RUN: touch declined.txt").await;
    let approval = d.wait_pending_approval(&s).await;
    let id = approval["id"].as_str().unwrap();
    let (status, body) = d.post(&format!("/api/v1/approvals/{id}"), json!({"decision":"decline"})).await;
    assert_eq!(status, 200, "{body}");
    let done = d.wait_turn_end(&s, &t2).await;
    assert_eq!(done["data"]["status"], "completed");
    assert!(!dir.path().join("declined.txt").exists(), "a declined command must not run");
    let (status, _) = d.post(&format!("/api/v1/approvals/{id}"), json!({"decision":"decline"})).await;
    assert_eq!(status, 200, "deciding the same way twice is idempotent, even after the turn");
    let (status, _) = d.post(&format!("/api/v1/approvals/{id}"), json!({"decision":"accept"})).await;
    assert_eq!(status, 409);
}

#[tokio::test]
async fn full_access_accepts_automatically_and_records_it() {
    let dir = tempdir();
    let d = Daemon::start(&dir.path().join("data"), Options::default());
    let s = d.new_session(dir.path(), "full-access").await;
    let t = d.start_turn(&s, "RUN: touch auto.txt").await;
    let done = d.wait_turn_end(&s, &t).await;
    assert_eq!(done["data"]["status"], "completed");
    assert!(dir.path().join("auto.txt").exists());
    let events = d.events(Some(&s), 0).await;
    let requested = events.iter().find(|e| e["type"] == "approval:requested").expect("approval:requested for audit");
    let resolved = events.iter().find(|e| e["type"] == "approval:resolved").expect("approval:resolved for audit");
    assert!(requested["seq"].as_u64() < resolved["seq"].as_u64());
    assert_eq!(resolved["data"]["automatic"], true);
    assert_eq!(resolved["data"]["approval"]["decided_by"], "policy");
    assert_eq!(resolved["data"]["approval"]["status"], "accepted");
}

#[tokio::test]
async fn one_turn_at_a_time_interrupt_and_steer() {
    let dir = tempdir();
    let d = Daemon::start(&dir.path().join("data"), Options::default());
    let s = d.new_session(dir.path(), "plan-only").await;
    let t = d.start_turn(&s, "SLOW please").await;
    let (status, err) = d.post(&format!("/api/v1/sessions/{s}/turns"), json!({"text":"another"})).await;
    assert_eq!(status, 409);
    assert_eq!(err["error"]["code"], "busy");
    d.wait_events(&s, "a few chunks", |evs| evs.iter().filter(|e| e["type"] == "stream:chunk").count() >= 3).await;

    let (status, body) =
        d.post(&format!("/api/v1/sessions/{s}/turns/{t}/steer"), json!({"text":"focus on tests"})).await;
    assert_eq!(status, 202, "{body}");
    d.wait_events(&s, "steer acknowledged", |evs| {
        evs.iter()
            .any(|e| e["type"] == "stream:chunk" && e["data"]["text"].as_str().unwrap_or("").contains("focus on tests"))
    })
    .await;

    let (status, body) = d.post(&format!("/api/v1/sessions/{s}/turns/{t}/interrupt"), json!({})).await;
    assert_eq!(status, 202, "{body}");
    let done = d.wait_turn_end(&s, &t).await;
    assert_eq!(done["data"]["status"], "interrupted");
    let events = d.events(Some(&s), 0).await;
    turn_text(&events, &t, None); // indexes run without gap
                                  // The session is free again.
    let t2 = d.start_turn(&s, "short one").await;
    assert_eq!(d.wait_turn_end(&s, &t2).await["data"]["status"], "completed");
    // Interrupting a finished turn is a conflict, not a crash.
    let (status, _) = d.post(&format!("/api/v1/sessions/{s}/turns/{t}/interrupt"), json!({})).await;
    assert_eq!(status, 409);
}

#[tokio::test]
async fn interrupt_kills_a_running_command() {
    let dir = tempdir();
    let d = Daemon::start(&dir.path().join("data"), Options::default());
    let s = d.new_session(dir.path(), "full-access").await;
    // A sleep whose argument is unique to this test, to find it in /proc.
    let marker = format!("299.{}", std::process::id());
    let t = d.start_turn(&s, &format!("RUN: sleep {marker}; echo done")).await;
    d.wait_events(&s, "the command started", |evs| evs.iter().any(|e| e["type"] == "approval:resolved")).await;
    wait_process_running(&format!("sleep {marker}")).await;
    let (status, _) = d.post(&format!("/api/v1/sessions/{s}/turns/{t}/interrupt"), json!({})).await;
    assert_eq!(status, 202);
    let done = d.wait_turn_end(&s, &t).await;
    assert_eq!(done["data"]["status"], "interrupted");
    // No `sleep 300` left behind.
    let left = processes_with(&format!("sleep {marker}"));
    assert!(left.is_empty(), "process left behind: {left:?}");
}
