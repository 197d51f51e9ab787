//! The HTTP contract: sessions CRUD and clear errors for bad input.

mod common;

use bosun_proto::query::ListSessionsQuery;
use bosun_proto::{PatchSessionRequest, SessionStatus};
use common::*;
use serde_json::json;

#[tokio::test]
async fn sessions_crud_and_events() {
    let dir = tempdir();
    let d = Daemon::start(&dir.path().join("data"), Options::default());
    let client = d.client();
    let health = client.health().await.expect("GET /health");
    assert_eq!(health.status, "ok");
    assert_eq!(health.actors["front"].running, 1);
    assert_eq!(health.actors["sessions"].running, 1);

    let id = d.new_session(dir.path(), Policy::PlanOnly).await;
    let list = client.sessions(&ListSessionsQuery::default()).await.expect("GET /api/v1/sessions");
    assert_eq!(list.sessions.len(), 1);
    let s = client.session(&id).await.expect("GET the session").session;
    assert_eq!(s.policy, Policy::PlanOnly);
    assert_eq!(s.status, SessionStatus::Idle);
    assert_eq!(s.cwd, dir.path().to_str().unwrap());

    let patch = PatchSessionRequest {
        title: Some("renamed".into()),
        draft: Some("half a thought".into()),
        ..Default::default()
    };
    let s = client.patch_session(&id, &patch).await.expect("PATCH title and draft");
    assert_eq!(s.title, "renamed");
    assert_eq!(s.draft, "half a thought");

    let archive = PatchSessionRequest { archived: Some(true), ..Default::default() };
    let s = client.patch_session(&id, &archive).await.expect("PATCH archived");
    assert_eq!(s.status, SessionStatus::Archived);
    let err = client.start_turn(&id, "hi").await.expect_err("a turn on an archived session");
    assert_eq!(err.status(), Some(409), "{err}");
    let archived = client.sessions(&ListSessionsQuery { archived: Some(false) }).await.expect("GET ?archived=false");
    assert!(archived.sessions.is_empty());

    let deleted = client.delete_session(&id, &Default::default()).await.expect("DELETE the session");
    assert!(deleted.deleted && deleted.id == id, "{deleted:?}");
    let err = client.session(&id).await.expect_err("a deleted session");
    assert_eq!((err.status(), err.code()), (Some(404), Some("not_found")), "{err}");

    let events = d.events(Some(&id), 0).await;
    assert_increasing(&events);
    let types: Vec<&EventType> = events.iter().map(|e| &e.kind).collect();
    assert_eq!(types.first(), Some(&&EventType::SessionUpdate));
    assert_eq!(types.last(), Some(&&EventType::SessionClosed));
    // The envelope as it is on the wire: its version and its timestamp's form.
    let page = d.ok_get(&format!("/api/v1/events?session={id}")).await;
    let raw = page["events"].as_array().expect("events");
    assert_eq!(raw.len(), events.len());
    for e in raw {
        assert_eq!(e["v"], 1);
        let ts = e["ts"].as_str().unwrap();
        assert_eq!(ts.len(), 27, "RFC 3339 with microseconds: {ts}");
    }
}

#[tokio::test]
async fn bad_input_gets_clear_errors_and_changes_nothing() {
    let dir = tempdir();
    let d = Daemon::start(&dir.path().join("data"), Options::default());
    let before = d.client().health().await.expect("GET /health").head_seq;

    // Unknown field, named.
    let (status, err) = d.post("/api/v1/sessions", json!({"provider":"demo","polcy":"x"})).await;
    assert_eq!(status, 400);
    assert_eq!(err["error"]["code"], "bad_request");
    assert!(err["error"]["message"].as_str().unwrap().contains("polcy"), "{err}");
    // Bad values.
    let (status, err) = d.post("/api/v1/sessions", json!({"policy":"yolo"})).await;
    assert_eq!(status, 400, "{err}");
    let (status, err) = d.post("/api/v1/sessions", json!({"cwd":"relative/path"})).await;
    assert_eq!(status, 400, "{err}");
    assert!(err["error"]["message"].as_str().unwrap().contains("absolute"), "{err}");
    let (status, err) = d.post("/api/v1/sessions", json!({"provider":"nope"})).await;
    assert_eq!(status, 400, "{err}");
    // Malformed JSON.
    let resp = d
        .http
        .post(format!("{}/api/v1/sessions", d.url))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    // Wrong content type.
    let resp = d
        .http
        .post(format!("{}/api/v1/sessions", d.url))
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 415);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unsupported_media_type");
    // Oversized body.
    let big = "x".repeat(2 * 1024 * 1024);
    let resp = d
        .http
        .post(format!("{}/api/v1/sessions", d.url))
        .header("content-type", "application/json")
        .body(format!("{{\"title\":\"{big}\"}}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 413);
    // Unknown paths, ids and methods.
    let (status, err) = d.get("/api/v1/nothing").await;
    assert_eq!((status, err["error"]["code"].as_str()), (404, Some("not_found")));
    let (status, _) = d.get("/api/v1/sessions/s_doesnotexist").await;
    assert_eq!(status, 404);
    let (status, _) = d.post("/api/v1/approvals/a_nope", json!({"decision":"accept"})).await;
    assert_eq!(status, 404);
    let resp = d.http.put(format!("{}/api/v1/sessions", d.url)).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 405);
    assert!(resp.headers().get("allow").is_some());
    // Unknown query parameters, named.
    let (status, err) = d.get("/api/v1/events?snice=3").await;
    assert_eq!(status, 400);
    assert!(err["error"]["message"].as_str().unwrap().contains("snice"), "{err}");
    let (status, _) = d.get("/api/v1/events?limit=0").await;
    assert_eq!(status, 400);
    // Fault injection is off by default.
    let (status, err) = d.post("/api/v1/debug/crash", json!({"target":"front"})).await;
    assert_eq!(status, 403, "{err}");

    // Nothing of the above changed anything.
    assert_eq!(d.client().health().await.expect("GET /health").head_seq, before);
    let sessions = d.client().sessions(&ListSessionsQuery::default()).await.expect("GET /api/v1/sessions");
    assert!(sessions.sessions.is_empty());
}
