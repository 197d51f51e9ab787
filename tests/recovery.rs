//! Crash recovery: kill -9 of the daemon mid-stream, and injected panics in
//! every kind of actor.

mod common;

use common::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;

/// The tick numbers of a SLOW turn's stream, checked to run 1, 2, 3… with no
/// gap and no repeat.
fn assert_ticks_consecutive(events: &[Value], turn: &str) -> u64 {
    let text = turn_text(events, turn, Some("text"));
    let ticks: Vec<u64> = text
        .lines()
        .filter_map(|l| l.strip_prefix("tick "))
        .filter_map(|l| l.split('/').next())
        .map(|n| n.parse().expect("tick number"))
        .collect();
    for (i, n) in ticks.iter().enumerate() {
        assert_eq!(*n, i as u64 + 1, "ticks must run without gap or repeat: {ticks:?}");
    }
    ticks.len() as u64
}

fn chunk_count(events: &[Value], turn: &str) -> usize {
    events.iter().filter(|e| e["type"] == "stream:chunk" && e["data"]["turn_id"] == turn).count()
}

#[tokio::test]
async fn kill_9_mid_stream_loses_nothing_a_client_saw() {
    let dir = tempdir();
    let data = dir.path().join("data");
    let d = Daemon::start(&data, Options::default());

    let idle = d.new_session(dir.path(), "plan-only").await;
    let (status, _) = d
        .request(reqwest::Method::PATCH, &format!("/api/v1/sessions/{idle}"), Some(json!({"draft":"unsent words"})))
        .await;
    assert_eq!(status, 200);
    let waiting = d.new_session(dir.path(), "plan-only").await;
    let waiting_turn = d.start_turn(&waiting, "RUN: touch after-restart.txt").await;
    let approval = d.wait_pending_approval(&waiting).await;
    let streaming = d.new_session(dir.path(), "plan-only").await;
    let slow_turn = d.start_turn(&streaming, "SLOW").await;

    // A client records everything it receives.
    let mut ws = ws_connect(&d).await;
    ws_subscribe(&mut ws, &["*"], 0).await;
    let mut received: Vec<Value> = Vec::new();
    loop {
        let e = ws_next(&mut ws, Duration::from_secs(30)).await.expect("event");
        if e.get("op").is_some() {
            continue;
        }
        let is_tick = e["type"] == "stream:chunk" && e["data"]["turn_id"] == slow_turn;
        received.push(e);
        if is_tick && chunk_count(&received, &slow_turn) >= 25 {
            break;
        }
    }
    // Kill while the stream is flowing, then keep whatever else had arrived.
    let mut d = d;
    d.kill9();
    while let Some(e) = ws_next(&mut ws, Duration::from_millis(500)).await {
        if e.get("op").is_none() {
            received.push(e);
        }
    }
    let d = Daemon::start(&data, Options::default());

    // (a) Every event the client saw is stored, same seq, same payload.
    let stored: BTreeMap<u64, Value> =
        d.events(None, 0).await.into_iter().map(|e| (e["seq"].as_u64().unwrap(), e)).collect();
    for e in &received {
        let seq = e["seq"].as_u64().unwrap();
        assert_eq!(stored.get(&seq), Some(e), "event {seq} seen by a client must survive kill -9");
    }
    let seqs: Vec<u64> = stored.keys().copied().collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "seq stays gap-free across the crash");

    // (b) Sessions, drafts and pending approvals are back.
    let sessions = d.ok_get("/api/v1/sessions").await;
    assert_eq!(sessions["sessions"].as_array().unwrap().len(), 3);
    assert_eq!(d.ok_get(&format!("/api/v1/sessions/{idle}")).await["draft"], "unsent words");
    let pending = d.ok_get("/api/v1/approvals?status=pending").await;
    assert_eq!(pending["approvals"][0]["id"], approval["id"], "{pending}");
    let id = approval["id"].as_str().unwrap();
    let (status, body) = d.post(&format!("/api/v1/approvals/{id}"), json!({"decision":"accept"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(d.wait_turn_end(&waiting, &waiting_turn).await["data"]["status"], "completed");
    assert!(dir.path().join("after-restart.txt").exists());

    // (c) The cut turn is resumed, never stuck: the ticks go on from where they stopped.
    let before = chunk_count(&d.events(Some(&streaming), 0).await, &slow_turn);
    let events =
        d.wait_events(&streaming, "the stream to go on", |evs| chunk_count(evs, &slow_turn) >= before + 5).await;
    assert_ticks_consecutive(&events, &slow_turn);
    let session = d.ok_get(&format!("/api/v1/sessions/{streaming}")).await;
    assert_eq!(session["status"], "running");
    let (status, _) = d.post(&format!("/api/v1/sessions/{streaming}/turns/{slow_turn}/interrupt"), json!({})).await;
    assert_eq!(status, 202);
    assert_eq!(d.wait_turn_end(&streaming, &slow_turn).await["data"]["status"], "interrupted");
    let events = d.events(Some(&streaming), 0).await;
    assert_ticks_consecutive(&events, &slow_turn);
}

#[tokio::test]
async fn a_command_cut_by_a_crash_is_failed_not_rerun() {
    let dir = tempdir();
    let data = dir.path().join("data");
    let mut d = Daemon::start(&data, Options::default());
    let s = d.new_session(dir.path(), "full-access").await;
    let t = d.start_turn(&s, "RUN: echo once >> runs.txt; sleep 300").await;
    d.wait_events(&s, "the command to start", |evs| {
        evs.iter().any(|e| e["type"] == "stream:chunk" && e["data"]["text"].as_str().unwrap_or("").contains("running"))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    d.kill9();
    let d = Daemon::start(&data, Options::default());
    let done = d.wait_turn_end(&s, &t).await;
    assert_eq!(done["data"]["status"], "failed");
    assert!(done["data"]["reason"].as_str().unwrap().contains("not run again"), "{done}");
    let runs = std::fs::read_to_string(dir.path().join("runs.txt")).unwrap();
    assert_eq!(runs.lines().count(), 1, "the command must not run twice");
    // The session works again.
    let t2 = d.start_turn(&s, "hello").await;
    assert_eq!(d.wait_turn_end(&s, &t2).await["data"]["status"], "completed");
}

#[tokio::test]
async fn injected_panics_restart_each_actor_and_the_session_keeps_working() {
    let dir = tempdir();
    let d = Daemon::start(&dir.path().join("data"), Options { fault_injection: true, ..Options::default() });
    let s = d.new_session(dir.path(), "plan-only").await;
    let t = d.start_turn(&s, "SLOW").await;
    let mut chunks = 0;
    let targets = [
        ("turn", format!("turn:{t}")),
        ("provider", format!("provider:{s}")),
        ("session", format!("session:{s}")),
        ("sessions", "sessions".to_string()),
        ("front", "front".to_string()),
        ("diagnostics", "diagnostics".to_string()),
        ("providers", "providers".to_string()),
    ];
    for (kind, target) in targets {
        let events = d.wait_events(&s, "progress", |evs| chunk_count(evs, &t) >= chunks + 3).await;
        chunks = chunk_count(&events, &t);
        let (status, body) = d.post("/api/v1/debug/crash", json!({"target": target})).await;
        assert_eq!(status, 202, "{target}: {body}");
        d.wait_health(|h| h["actors"][kind]["restarts"].as_u64().unwrap_or(0) >= 1).await;
    }
    // The stream went on through every crash, with no gap and no repeat.
    let events = d.wait_events(&s, "progress after the crashes", |evs| chunk_count(evs, &t) >= chunks + 5).await;
    assert_ticks_consecutive(&events, &t);
    let restarted = d.events(None, 0).await.into_iter().filter(|e| e["type"] == "actor:restarted").count();
    assert!(restarted >= 6, "restarts are on record: {restarted}");

    let (status, _) = d.post(&format!("/api/v1/sessions/{s}/turns/{t}/interrupt"), json!({})).await;
    assert_eq!(status, 202);
    assert_eq!(d.wait_turn_end(&s, &t).await["data"]["status"], "interrupted");
    let t2 = d.start_turn(&s, "RUN: echo still-working").await;
    let approval = d.wait_pending_approval(&s).await;
    let id = approval["id"].as_str().unwrap();
    let (status, _) = d.post(&format!("/api/v1/approvals/{id}"), json!({"decision":"accept"})).await;
    assert_eq!(status, 200);
    assert_eq!(d.wait_turn_end(&s, &t2).await["data"]["status"], "completed");
    let events = d.events(Some(&s), 0).await;
    assert!(turn_text(&events, &t2, Some("command_output")).contains("still-working"));
}
