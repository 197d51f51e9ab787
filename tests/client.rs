//! `bosun-client` against the real daemon: typed answers and errors, and
//! the follower, which must hand out every event of its topics exactly
//! once and in order across a dropped connection and a kill -9 of the
//! daemon.

mod common;

use bosun_client::{ClientError, Follower, FollowerConfig};
use bosun_proto::{CreateSessionRequest, EventData, EventType, Policy, Topic, TurnStatus};
use common::*;
use std::time::Duration;

/// Chunks the follower must see from a connection before the next break.
const CHUNKS_PER_STRETCH: usize = 15;

#[tokio::test]
async fn typed_answers_and_errors() {
    let dir = tempdir();
    let d = Daemon::start(&dir.path().join("data"), Options::default());
    let client = d.client();
    let health = client.health().await.unwrap();
    assert_eq!(health.status, "ok");
    let req = CreateSessionRequest {
        provider: "demo".into(),
        cwd: Some(dir.path().to_string_lossy().into_owned()),
        policy: Some(Policy::FullAccess),
        ..Default::default()
    };
    let session = client.create_session(&req).await.unwrap();
    let started = client.start_turn(session.id.as_str(), "hello there").await.unwrap();
    let done = d.wait_turn_end(session.id.as_str(), started.turn_id.as_str()).await;
    assert_eq!(done.status, TurnStatus::Completed);
    // The daemon's error comes back with its status and code.
    let err = client.start_turn("s_000000000000", "hi").await.unwrap_err();
    assert_eq!((err.status(), err.code()), (Some(404), Some("not_found")), "{err}");
    let err = client.decide("a_nope", bosun_proto::Decision::Accept).await.unwrap_err();
    assert!(matches!(err, ClientError::Api { status: 404, .. }), "{err}");
}

#[tokio::test]
async fn the_follower_sees_every_event_once_across_a_drop_and_a_kill_9() {
    let dir = tempdir();
    let data = dir.path().join("data");
    let d = Daemon::start(&data, Options::default());
    let client = d.client();
    let session = d.new_session(dir.path(), Policy::PlanOnly).await;
    let topic = Topic::session(&session).to_string();
    let config = FollowerConfig { reconnect_pause: Duration::from_millis(100), ..Default::default() };
    let mut follower = Follower::open(client.clone(), vec![topic], 0, config).await.unwrap();
    let turn = d.start_turn(&session, "SLOW").await;

    let mut seen = Vec::new();
    // Three stretches: before the drop, after it, after the kill -9.
    let mut d = Some(d);
    for stretch_no in 0..3 {
        let mut chunks_since_break = 0;
        while chunks_since_break < CHUNKS_PER_STRETCH {
            let followed = follower.next_within(Duration::from_secs(30)).await.unwrap().expect("an event in time");
            if followed.envelope.kind == EventType::StreamChunk {
                chunks_since_break += 1;
            }
            seen.push(followed);
        }
        match stretch_no {
            0 => follower.drop_connection(),
            1 => d = Some(d.take().unwrap().restart_in_place()),
            _ => {}
        }
    }
    let d = d.unwrap();
    assert!(follower.connections() >= 3, "{} connections", follower.connections());
    client.interrupt(&session, &turn).await.ok();
    let end = follower
        .until(
            Duration::from_secs(30),
            |f| seen.push(f.clone()),
            |env| matches!(env.payload(), Ok(EventData::TurnCompleted(ref done)) if done.turn_id.as_str() == turn),
        )
        .await
        .unwrap();
    assert!(end.is_some(), "the turn's end never came");

    // Exactly what the store holds, in order, each once, every one typed.
    let stored = d.typed_events(&session, 0).await;
    let upto = seen.last().unwrap().envelope.seq;
    let stored: Vec<_> = stored.into_iter().filter(|e| e.seq <= upto).collect();
    let got: Vec<_> = seen.iter().map(|f| f.envelope.clone()).collect();
    assert_eq!(got.len(), stored.len(), "seen {} events, the store has {}", got.len(), stored.len());
    assert!(got == stored, "the follower's events differ from the store's");
    for env in &got {
        env.payload().unwrap_or_else(|e| panic!("event {} of type {} does not read: {e}", env.seq, env.kind.as_str()));
    }
    let connections: std::collections::BTreeSet<u32> = seen.iter().map(|f| f.connection).collect();
    assert!(connections.len() >= 3, "events came over {connections:?}");
}
