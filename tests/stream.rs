//! The WebSocket: replay from a cursor then live with no gap and no
//! duplicate, slow subscribers, MessagePack, and bad frames.

mod common;

use common::*;
use futures::{SinkExt, StreamExt};
use serde_json::json;
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// Reads event frames until `turn:completed` for `turn`.
async fn read_until_turn_end(ws: &mut Ws, turn: &str) -> Vec<Envelope> {
    let mut got = Vec::new();
    loop {
        let event = ws_next_event(ws, Duration::from_secs(60)).await.expect("frame before the turn ended");
        let done = is_turn_completed(&event, turn);
        got.push(event);
        if done {
            return got;
        }
    }
}

async fn head_seq(d: &Daemon) -> u64 {
    d.client().health().await.expect("GET /health").head_seq
}

#[tokio::test]
async fn resume_from_a_cursor_while_events_flow_has_no_gap_and_no_duplicate() {
    let dir = tempdir();
    let d = Daemon::start(&dir.path().join("data"), Options::default());
    let s = d.new_session(dir.path(), Policy::PlanOnly).await;
    let topic = format!("session:{s}");
    let t = d.start_turn(&s, "SLOW stream").await;

    // First connection: read some live events, then drop mid-stream.
    let mut ws = ws_connect(&d).await;
    ws_subscribe(&mut ws, &[&topic], 0).await;
    let mut seen: Vec<Envelope> = Vec::new();
    while of_kind(&seen, EventType::StreamChunk).len() < 15 {
        let e = ws_next_event(&mut ws, Duration::from_secs(30)).await.expect("event");
        seen.push(e);
    }
    drop(ws);
    let cursor = seen.last().expect("events").seq;
    // Events keep flowing while we are away.
    tokio::time::sleep(Duration::from_millis(400)).await;

    let mut ws = ws_connect(&d).await;
    let head = ws_subscribe(&mut ws, &[&topic], cursor).await;
    assert!(head > cursor, "events were committed while disconnected");
    // Interrupt so the test ends; the stream must carry through to the end.
    d.interrupt(&s, &t).await;
    let rest = read_until_turn_end(&mut ws, &t).await;
    seen.extend(rest);

    let stored = d.events(Some(&s), 0).await;
    let seen_seqs = seqs(&seen);
    let stored_seqs: Vec<u64> = seqs(&stored).into_iter().take(seen_seqs.len()).collect();
    assert_eq!(seen_seqs, stored_seqs, "the client saw exactly the stored events, in order, once each");
    assert_eq!(&seen[..], &stored[..seen.len()], "same payloads");
}

#[tokio::test]
async fn a_slow_subscriber_does_not_hold_up_others_and_misses_nothing() {
    let dir = tempdir();
    // A tiny live buffer, so the slow client really falls behind the fan-out.
    let options = Options { live_capacity: Some(8), log: Some("info,bosun=debug".into()), ..Options::default() };
    let d = Daemon::start(&dir.path().join("data"), options);
    let start_head = head_seq(&d).await;

    // The slow client subscribes to everything, then reads nothing for a while.
    let (mut slow, _) = {
        let stream = tokio::net::TcpSocket::new_v4().unwrap();
        stream.set_recv_buffer_size(4096).unwrap();
        let addr: std::net::SocketAddr = d.url.trim_start_matches("http://").parse().unwrap();
        let tcp = stream.connect(addr).await.unwrap();
        tokio_tungstenite::client_async(d.ws_url(), tokio_tungstenite::MaybeTlsStream::Plain(tcp)).await.unwrap()
    };
    ws_subscribe(&mut slow, &["*"], start_head).await;
    let mut fast = ws_connect(&d).await;
    ws_subscribe(&mut fast, &["*"], start_head).await;

    // Plenty of output from several sessions at once.
    let mut turns = Vec::new();
    for _ in 0..6 {
        let s = d.new_session(dir.path(), Policy::FullAccess).await;
        let t = d.start_turn(&s, "RUN: i=0; while [ $i -lt 2000 ]; do echo \"line $i of some output that is long enough to fill socket buffers quickly\"; i=$((i+1)); done").await;
        turns.push((s, t));
    }
    // The fast client sees every turn end while the slow one has read nothing.
    let mut ended = 0;
    let mut fast_events = Vec::new();
    while ended < turns.len() {
        let e = ws_next_event(&mut fast, Duration::from_secs(120)).await.expect("fast client frame");
        if e.kind == EventType::TurnCompleted {
            ended += 1;
        }
        fast_events.push(e);
    }
    let head = head_seq(&d).await;

    // Now the slow client reads: it must get every event up to the head, in order.
    let mut slow_events: Vec<Envelope> = Vec::new();
    while slow_events.last().map_or(0, |e| e.seq) < head {
        let e = ws_next_event(&mut slow, Duration::from_secs(60)).await.expect("slow client frame");
        slow_events.push(e);
    }
    let stored = d.events(None, start_head).await;
    let stored: Vec<Envelope> = stored.into_iter().filter(|e| e.seq <= head).collect();
    assert_eq!(seqs(&slow_events), seqs(&stored), "the slow client got every event once, in order");
    assert_eq!(slow_events, stored);
    let fast_upto: Vec<Envelope> = fast_events.into_iter().filter(|e| e.seq <= head).collect();
    assert_eq!(seqs(&fast_upto), seqs(&stored[..fast_upto.len()]));
    assert!(
        d.stderr().contains("catching up from the store"),
        "the slow client should have fallen behind the live buffer and been caught up from the store"
    );
}

#[tokio::test]
async fn messagepack_subprotocol_and_bad_frames() {
    let dir = tempdir();
    let d = Daemon::start(&dir.path().join("data"), Options::default());
    let s = d.new_session(dir.path(), Policy::PlanOnly).await;

    let mut req = d.ws_url().into_client_request().unwrap();
    req.headers_mut().insert("sec-websocket-protocol", "bosun.msgpack.v1".parse().unwrap());
    let (mut ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(resp.headers().get("sec-websocket-protocol").unwrap(), "bosun.msgpack.v1");
    ws.send(Message::text(json!({"op":"subscribe","topics":[format!("session:{s}")],"since":0}).to_string()))
        .await
        .unwrap();
    let frame = ws.next().await.unwrap().unwrap();
    assert!(frame.is_binary(), "msgpack frames are binary");
    let ack: ServerFrame = rmp_serde::from_slice(&frame.into_data()).expect("a msgpack server frame");
    assert!(matches!(ack, ServerFrame::Control(Control::Subscribed { .. })), "{ack:?}");
    let frame = ws.next().await.unwrap().unwrap();
    assert!(frame.is_binary(), "msgpack frames are binary");
    let ServerFrame::Event(event) = rmp_serde::from_slice(&frame.into_data()).expect("a msgpack server frame") else {
        panic!("expected an event frame")
    };
    assert_eq!(event.kind, EventType::SessionUpdate);
    let stored = d.events(Some(&s), 0).await;
    assert_eq!(event, stored[0], "the same envelope as JSON");

    // Bad frames get error frames and the connection stays up.
    let mut ws = ws_connect(&d).await;
    ws_send(&mut ws, json!({"op":"frobnicate"})).await;
    let err = ws_error(&mut ws, Duration::from_secs(5)).await;
    assert!(err.message.contains("frobnicate"), "{err:?}");
    ws.send(Message::text("{not json")).await.unwrap();
    let err = ws_error(&mut ws, Duration::from_secs(5)).await;
    assert_eq!(err.code, "bad_frame", "{err:?}");
    ws_send(&mut ws, json!({"op":"subscribe","topics":["nonsense"],"since":0})).await;
    let err = ws_error(&mut ws, Duration::from_secs(5)).await;
    assert_eq!(err.code, "bad_topic", "{err:?}");
    ws_send(&mut ws, json!({"op":"subscribe","topics":["*"],"since":0,"extra":1})).await;
    let err = ws_error(&mut ws, Duration::from_secs(5)).await;
    assert!(err.message.contains("extra"), "{err:?}");
    // The pong, exactly as it goes on the wire.
    ws_send(&mut ws, json!({"op":"ping","nonce":9})).await;
    let pong = ws_next(&mut ws, Duration::from_secs(5)).await.unwrap();
    assert_eq!(pong, json!({"op":"pong","nonce":9}));
}
