//! The HTTP contract: sessions CRUD and clear errors for bad input.

mod common;

use common::*;
use serde_json::json;

#[tokio::test]
async fn sessions_crud_and_events() {
    let dir = tempdir();
    let d = Daemon::start(&dir.path().join("data"), Options::default());
    let health = d.ok_get("/health").await;
    assert_eq!(health["status"], "ok");
    assert_eq!(health["actors"]["front"]["running"], 1);
    assert_eq!(health["actors"]["sessions"]["running"], 1);

    let id = d.new_session(dir.path(), "plan-only").await;
    let list = d.ok_get("/api/v1/sessions").await;
    assert_eq!(list["sessions"].as_array().unwrap().len(), 1);
    let s = d.ok_get(&format!("/api/v1/sessions/{id}")).await;
    assert_eq!(s["policy"], "plan-only");
    assert_eq!(s["status"], "idle");
    assert_eq!(s["cwd"], dir.path().to_str().unwrap());

    let (status, s) = d
        .request(
            reqwest::Method::PATCH,
            &format!("/api/v1/sessions/{id}"),
            Some(json!({"title":"renamed","draft":"half a thought"})),
        )
        .await;
    assert_eq!(status, 200, "{s}");
    assert_eq!(s["title"], "renamed");
    assert_eq!(s["draft"], "half a thought");

    let (status, s) =
        d.request(reqwest::Method::PATCH, &format!("/api/v1/sessions/{id}"), Some(json!({"archived":true}))).await;
    assert_eq!(status, 200);
    assert_eq!(s["status"], "archived");
    let (status, err) = d.post(&format!("/api/v1/sessions/{id}/turns"), json!({"text":"hi"})).await;
    assert_eq!(status, 409, "{err}");
    let archived = d.ok_get("/api/v1/sessions?archived=false").await;
    assert!(archived["sessions"].as_array().unwrap().is_empty());

    let (status, _) = d.request(reqwest::Method::DELETE, &format!("/api/v1/sessions/{id}"), None).await;
    assert_eq!(status, 200);
    let (status, err) = d.get(&format!("/api/v1/sessions/{id}")).await;
    assert_eq!(status, 404);
    assert_eq!(err["error"]["code"], "not_found");

    let events = d.events(Some(&id), 0).await;
    assert_increasing(&events);
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types.first(), Some(&"session:update"));
    assert_eq!(types.last(), Some(&"session:closed"));
    for e in &events {
        assert_eq!(e["v"], 1);
        let ts = e["ts"].as_str().unwrap();
        assert_eq!(ts.len(), 27, "RFC 3339 with microseconds: {ts}");
    }
}

#[tokio::test]
async fn bad_input_gets_clear_errors_and_changes_nothing() {
    let dir = tempdir();
    let d = Daemon::start(&dir.path().join("data"), Options::default());
    let before = d.ok_get("/health").await["head_seq"].as_u64().unwrap();

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
    assert_eq!(d.ok_get("/health").await["head_seq"].as_u64().unwrap(), before);
    assert!(d.ok_get("/api/v1/sessions").await["sessions"].as_array().unwrap().is_empty());
}
