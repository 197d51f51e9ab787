//! The published contract (docs/PROTOCOL.md): `GET /api/v1/openapi.json` and
//! `GET /api/v1/schema/events.json`, derived from the Rust types, must be
//! what is checked in under docs/api/ (so a change to the contract shows in
//! review), and every operation the document lists must be served.
//!
//! `BOSUN_UPDATE_SCHEMAS=1 tests/run --test contract` rewrites docs/api/.
//! That every event the suite produces fits the schema is checked by
//! tests/common whenever a daemon goes; Schemathesis is run against a live
//! daemon by tests/schemathesis.rs.

mod common;

use common::*;
use serde_json::Value;
use std::path::PathBuf;

fn checked_in(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/api").join(name)
}

/// The document as served, pretty-printed, against its checked-in copy.
async fn compare(d: &Daemon, path: &str, file: &str) -> Value {
    let served = d.ok_get(path).await;
    let text = serde_json::to_string_pretty(&served).expect("JSON") + "\n";
    let copy = checked_in(file);
    if std::env::var_os("BOSUN_UPDATE_SCHEMAS").is_some() {
        std::fs::create_dir_all(copy.parent().expect("docs/api")).expect("mkdir docs/api");
        std::fs::write(&copy, &text).expect("write the checked-in copy");
    }
    let kept = std::fs::read_to_string(&copy).unwrap_or_default();
    assert!(
        kept == text,
        "{} is not what the daemon serves at {path}: the contract changed. Review the change, then run \
         BOSUN_UPDATE_SCHEMAS=1 tests/run --test contract to update the copy.",
        copy.display()
    );
    served
}

#[tokio::test]
async fn the_published_documents_are_the_checked_in_ones() {
    let dir = tempdir();
    let d = Daemon::start(&dir.path().join("data"), Options::default());
    let openapi = compare(&d, "/api/v1/openapi.json", "openapi.json").await;
    assert_eq!(openapi["openapi"], "3.1.0");
    let events = compare(&d, "/api/v1/schema/events.json", "events.schema.json").await;
    assert_eq!(events["$schema"], "https://json-schema.org/draft/2020-12/schema");
}

/// Every operation of the document is routed: none answers "no such
/// endpoint" or "method not allowed".
#[tokio::test]
async fn every_documented_operation_is_served() {
    let dir = tempdir();
    let d = Daemon::start(&dir.path().join("data"), Options::default());
    let doc = d.ok_get("/api/v1/openapi.json").await;
    let paths = doc["paths"].as_object().expect("paths");
    assert!(paths.len() >= 24, "the document lists {} paths", paths.len());
    for (path, item) in paths {
        for (method, op) in item.as_object().expect("a path item") {
            let concrete = path.replace("{id}", "x_unknown").replace("{turn_id}", "t_unknown");
            let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).expect("a method");
            let body = op.get("requestBody").map(|_| serde_json::json!({}));
            let (status, answer) = d.request(method.clone(), &concrete, body).await;
            let code = answer["error"]["code"].as_str().unwrap_or("");
            let message = answer["error"]["message"].as_str().unwrap_or("");
            assert!(
                status != 405 && !message.starts_with("no such endpoint"),
                "{method} {path} is documented but not served: {status} {answer}"
            );
            assert!(status < 500 || code == "unavailable", "{method} {path}: {status} {answer}");
        }
    }
}
