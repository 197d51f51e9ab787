//! Crash recovery: kill -9 of the daemon mid-stream, and injected panics in
//! every kind of actor.

mod common;

use bosun_proto::query::{ApprovalsQuery, ListSessionsQuery};
use bosun_proto::SessionStatus;
use common::*;
use std::collections::BTreeMap;
use std::time::Duration;

/// The tick numbers of a SLOW turn's stream, checked to run 1, 2, 3… with no
/// gap and no repeat.
fn assert_ticks_consecutive(events: &[Envelope], turn: &str) -> u64 {
    let text = turn_text(events, turn, Some(ChunkKind::Text));
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

fn chunk_count(events: &[Envelope], turn: &str) -> usize {
    chunks(events, turn).len()
}

#[tokio::test]
async fn kill_9_mid_stream_loses_nothing_a_client_saw() {
    let dir = tempdir();
    let data = dir.path().join("data");
    let d = Daemon::start(&data, Options::default());

    let idle = d.new_session(dir.path(), Policy::PlanOnly).await;
    let patch = bosun_proto::PatchSessionRequest { draft: Some("unsent words".into()), ..Default::default() };
    d.client().patch_session(&idle, &patch).await.expect("PATCH the draft");
    let waiting = d.new_session(dir.path(), Policy::PlanOnly).await;
    let waiting_turn = d.start_turn(&waiting, "RUN: touch after-restart.txt").await;
    let approval = d.wait_pending_approval(&waiting).await;
    let streaming = d.new_session(dir.path(), Policy::PlanOnly).await;
    let slow_turn = d.start_turn(&streaming, "SLOW").await;

    // A client records everything it receives.
    let mut ws = ws_connect(&d).await;
    ws_subscribe(&mut ws, &["*"], 0).await;
    let mut received: Vec<Envelope> = Vec::new();
    loop {
        let e = ws_next_event(&mut ws, Duration::from_secs(30)).await.expect("event");
        let is_tick = e.kind == EventType::StreamChunk && turn_of(&e).as_deref() == Some(slow_turn.as_str());
        received.push(e);
        if is_tick && chunk_count(&received, &slow_turn) >= 25 {
            break;
        }
    }
    // Kill while the stream is flowing, then keep whatever else had arrived.
    let mut d = d;
    d.kill9();
    while let Some(frame) = ws_next_frame(&mut ws, Duration::from_millis(500)).await {
        if let ServerFrame::Event(e) = frame {
            received.push(e);
        }
    }
    let d = Daemon::start(&data, Options::default());

    // (a) Every event the client saw is stored, same seq, same payload.
    let stored: BTreeMap<u64, Envelope> = d.events(None, 0).await.into_iter().map(|e| (e.seq, e)).collect();
    for e in &received {
        assert_eq!(stored.get(&e.seq), Some(e), "event {} seen by a client must survive kill -9", e.seq);
    }
    let seqs: Vec<u64> = stored.keys().copied().collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "seq stays gap-free across the crash");

    // (b) Sessions, drafts and pending approvals are back.
    let client = d.client();
    let sessions = client.sessions(&ListSessionsQuery::default()).await.expect("GET /api/v1/sessions");
    assert_eq!(sessions.sessions.len(), 3);
    assert_eq!(client.session(&idle).await.expect("GET the idle session").session.draft, "unsent words");
    let pending = client
        .approvals(&ApprovalsQuery { status: Some("pending".into()), ..Default::default() })
        .await
        .expect("GET /api/v1/approvals");
    assert_eq!(pending.approvals.first().map(|a| &a.id), Some(&approval.id), "{pending:?}");
    d.decide(approval.id.as_str(), Decision::Accept).await;
    assert_eq!(d.wait_turn_end(&waiting, &waiting_turn).await.status, TurnStatus::Completed);
    assert!(dir.path().join("after-restart.txt").exists());

    // (c) The cut turn is resumed, never stuck: the ticks go on from where they stopped.
    let before = chunk_count(&d.events(Some(&streaming), 0).await, &slow_turn);
    let events =
        d.wait_events(&streaming, "the stream to go on", |evs| chunk_count(evs, &slow_turn) >= before + 5).await;
    assert_ticks_consecutive(&events, &slow_turn);
    let session = client.session(&streaming).await.expect("GET the streaming session");
    assert_eq!(session.session.status, SessionStatus::Running);
    d.interrupt(&streaming, &slow_turn).await;
    assert_eq!(d.wait_turn_end(&streaming, &slow_turn).await.status, TurnStatus::Interrupted);
    let events = d.events(Some(&streaming), 0).await;
    assert_ticks_consecutive(&events, &slow_turn);
}

#[tokio::test]
async fn a_command_cut_by_a_crash_is_failed_not_rerun() {
    let dir = tempdir();
    let data = dir.path().join("data");
    let mut d = Daemon::start(&data, Options::default());
    let s = d.new_session(dir.path(), Policy::FullAccess).await;
    let t = d.start_turn(&s, "RUN: echo once >> runs.txt; sleep 300").await;
    d.wait_events(&s, "the command to start", |evs| {
        datas_of!(evs, StreamChunk).iter().any(|c| c.text.contains("running"))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    d.kill9();
    let d = Daemon::start(&data, Options::default());
    let done = d.wait_turn_end(&s, &t).await;
    assert_eq!(done.status, TurnStatus::Failed);
    assert!(done.reason.as_deref().expect("a reason").contains("not run again"), "{done:?}");
    let runs = std::fs::read_to_string(dir.path().join("runs.txt")).unwrap();
    assert_eq!(runs.lines().count(), 1, "the command must not run twice");
    // The session works again.
    let t2 = d.start_turn(&s, "hello").await;
    assert_eq!(d.wait_turn_end(&s, &t2).await.status, TurnStatus::Completed);
}

#[tokio::test]
async fn injected_panics_restart_each_actor_and_the_session_keeps_working() {
    let dir = tempdir();
    let d = Daemon::start(&dir.path().join("data"), Options { fault_injection: true, ..Options::default() });
    let s = d.new_session(dir.path(), Policy::PlanOnly).await;
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
        let scheduled = d.client().crash(&target).await.unwrap_or_else(|e| panic!("{target}: {e}"));
        assert_eq!(scheduled.target, target, "{scheduled:?}");
        d.wait_health(|h| h.actors.get(kind).map_or(0, |a| a.restarts) >= 1).await;
    }
    // The stream went on through every crash, with no gap and no repeat.
    let events = d.wait_events(&s, "progress after the crashes", |evs| chunk_count(evs, &t) >= chunks + 5).await;
    assert_ticks_consecutive(&events, &t);
    let restarted = of_kind(&d.events(None, 0).await, EventType::ActorRestarted).len();
    assert!(restarted >= 6, "restarts are on record: {restarted}");

    d.interrupt(&s, &t).await;
    assert_eq!(d.wait_turn_end(&s, &t).await.status, TurnStatus::Interrupted);
    let t2 = d.start_turn(&s, "RUN: echo still-working").await;
    let approval = d.wait_pending_approval(&s).await;
    d.decide(approval.id.as_str(), Decision::Accept).await;
    assert_eq!(d.wait_turn_end(&s, &t2).await.status, TurnStatus::Completed);
    let events = d.events(Some(&s), 0).await;
    assert!(turn_text(&events, &t2, Some(ChunkKind::CommandOutput)).contains("still-working"));
}
