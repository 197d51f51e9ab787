//! `GET /metrics` against the real binary, read by a real parser (Python
//! `prometheus_client`'s OpenMetrics parser, which `tests/run` installs in
//! tests/.venv), with the values checked against a scripted run: an
//! approval a person takes a while over, an interrupted turn, a crashed
//! actor, a WebSocket and a poller.

mod common;

use bosun_proto::events::TurnCompleted;
use bosun_proto::{Decision, Policy};
use common::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

const CONFIG: &str = "[auth]\nrequire = \"always\"\n[metrics]\nlisten = \"127.0.0.1:0\"\n";

/// One sample: its metric's name with the suffix (`_total`, `_bucket`...),
/// its labels, its value.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses an exposition with prometheus_client's OpenMetrics parser (which
/// refuses what is not OpenMetrics: a missing `# EOF`, a bad type...).
fn parse(exposition: &str) -> Vec<Sample> {
    let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/.venv/bin/python");
    assert!(python.exists(), "{} is missing: run tests/run (it installs prometheus-client)", python.display());
    let script = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        out.append({"family": family.name, "type": family.type, "name": s.name, "labels": s.labels, "value": s.value})
print(json.dumps(out))
"#;
    let mut child = Command::new(python)
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start python");
    child.stdin.take().expect("stdin").write_all(exposition.as_bytes()).expect("write the exposition");
    let out = child.wait_with_output().expect("python");
    assert!(
        out.status.success(),
        "the parser refused the exposition: {}\n{exposition}",
        String::from_utf8_lossy(&out.stderr)
    );
    let samples: Vec<Value> = serde_json::from_slice(&out.stdout).expect("the parser's JSON");
    samples
        .into_iter()
        .map(|s| Sample {
            name: s["name"].as_str().expect("name").to_string(),
            labels: serde_json::from_value(s["labels"].clone()).expect("labels"),
            value: s["value"].as_f64().expect("value"),
        })
        .collect()
}

/// The value of the one sample `name` with exactly these labels.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    let want: BTreeMap<String, String> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let found: Vec<&Sample> = samples.iter().filter(|s| s.name == name && s.labels == want).collect();
    match found.as_slice() {
        [one] => one.value,
        _ => panic!(
            "{name}{want:?}: {} samples; all of {name}: {:?}",
            found.len(),
            samples.iter().filter(|s| s.name == name).collect::<Vec<_>>()
        ),
    }
}

/// The loopback metrics listener's address, from the daemon's log.
fn metrics_addr(d: &Daemon) -> String {
    let stderr = d.stderr();
    let line = stderr
        .lines()
        .find(|l| l.contains("serving GET /metrics without a token"))
        .unwrap_or_else(|| panic!("no metrics listener in the log:\n{stderr}"));
    let addr = line.split("addr=").nth(1).expect("addr=").split_whitespace().next().expect("an address");
    addr.to_string()
}

async fn scrape(d: &Daemon, addr: &str) -> Vec<Sample> {
    let response = d.http.get(format!("http://{addr}/metrics")).send().await.expect("GET /metrics");
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().expect("content-type").to_string();
    assert!(content_type.starts_with("application/openmetrics-text"), "{content_type}");
    parse(&response.text().await.expect("the exposition"))
}

#[tokio::test]
async fn metrics_follow_a_scripted_run_and_parse_as_openmetrics() {
    let dir = tempdir();
    let options =
        Options { config: Some(CONFIG.into()), admin_token: true, fault_injection: true, ..Options::default() };
    let d = Daemon::start(&dir.path().join("data"), options);
    let addr = metrics_addr(&d);

    // The main listener serves it behind the API's gate.
    let bare = test_client().get(format!("{}/metrics", d.url)).send().await.expect("GET /metrics");
    assert_eq!(bare.status(), 401, "no token, no metrics on the main listener");
    let with_token =
        d.http.get(format!("{}/metrics", d.url)).bearer_auth(d.admin_token()).send().await.expect("GET /metrics");
    assert_eq!(with_token.status(), 200, "with the admin token");
    parse(&with_token.text().await.expect("the exposition"));
    // The metrics listener serves nothing else.
    let other = test_client().get(format!("http://{addr}/api/v1/sessions")).send().await.expect("GET");
    assert_eq!(other.status(), 404);
    let body: Value = other.json().await.expect("a JSON error");
    assert_eq!(body["error"]["code"], "not_found", "{body}");
    let post = test_client().post(format!("http://{addr}/metrics")).send().await.expect("POST");
    assert_eq!(post.status(), 405);

    let s = d.new_session(dir.path(), Policy::PlanOnly).await;
    let mut ws = ws_connect(&d).await;
    ws_send(&mut ws, json!({"op": "auth", "token": d.admin_token()})).await;
    let _ = ws_next(&mut ws, Duration::from_secs(10)).await;

    // An approval a person decides after 300 ms, seen pending on the way.
    let approved = d.start_turn(&s, "RUN: true").await;
    let approval = d.wait_pending_approval(&s).await;
    let during = scrape(&d, &addr).await;
    assert_eq!(value(&during, "bosun_approvals_pending", &[]), 1.0);
    assert_eq!(value(&during, "bosun_turns_active", &[]), 1.0);
    assert_eq!(value(&during, "bosun_websocket_subscribers", &[]), 1.0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    d.decide(approval.id.as_str(), Decision::Accept).await;
    d.wait_turn_end(&s, &approved).await;

    // An interrupted turn.
    let slow = d.start_turn(&s, "SLOW").await;
    d.wait_events(&s, "a tick", |events| turn_text(events, &slow, None).contains("tick 1/")).await;
    d.interrupt(&s, &slow).await;
    d.wait_turn_end(&s, &slow).await;

    // A crashed session actor, restarted by its supervisor.
    let (status, body) = d.post("/api/v1/debug/crash", json!({"target": format!("session:{s}")})).await;
    assert_eq!(status, 202, "{body}");
    d.wait_events(&s, "the restart", |_| true).await;
    let health_deadline = std::time::Instant::now() + Duration::from_secs(20);
    while d.client().health().await.expect("health").actors.get("session").is_none_or(|a| a.restarts == 0) {
        assert!(std::time::Instant::now() < health_deadline, "the session actor was restarted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let head = d.client().health().await.expect("health").head_seq;
    let events = d.events(Some(&s), 0).await;
    let samples = scrape(&d, &addr).await;

    // Events: every one in this daemon's log was appended by it.
    assert_eq!(value(&samples, "bosun_events_appended_total", &[]), head as f64);
    assert_eq!(
        value(&samples, "bosun_store_events_per_flush_sum", &[]),
        head as f64,
        "each appended event was in one flush"
    );
    assert!(value(&samples, "bosun_store_commit_latency_seconds_count", &[]) >= 1.0);
    // Actors alive now: the session, no turn.
    assert_eq!(value(&samples, "bosun_sessions", &[]), 1.0);
    assert_eq!(value(&samples, "bosun_turns_active", &[]), 0.0);
    assert_eq!(value(&samples, "bosun_approvals_pending", &[]), 0.0);
    assert_eq!(value(&samples, "bosun_websocket_subscribers", &[]), 1.0);
    assert!(value(&samples, "bosun_polling_clients", &[]) >= 1.0, "this test polls /api/v1/events");
    // The approval's wait, as its events tell it.
    let wait = value(&samples, "bosun_approval_wait_seconds_sum", &[("decided_by", "user")]);
    assert_eq!(value(&samples, "bosun_approval_wait_seconds_count", &[("decided_by", "user")]), 1.0);
    assert!((0.3..30.0).contains(&wait), "waited {wait} s");
    assert_eq!(value(&samples, "bosun_interrupt_latency_seconds_count", &[]), 1.0);
    assert!(value(&samples, "bosun_interrupt_latency_seconds_sum", &[]) < 30.0);
    // Turns and tokens, against the turns' own usage.
    let ended: Vec<TurnCompleted> = datas_of!(&events, TurnCompleted);
    assert_eq!(ended.len(), 2);
    let input: u64 = ended.iter().map(|t| t.usage.input_tokens).sum();
    let output: u64 = ended.iter().map(|t| t.usage.output_tokens).sum();
    assert!(input > 0 && output > 0, "{ended:?}");
    assert_eq!(value(&samples, "bosun_tokens_total", &[("provider", "demo"), ("direction", "input")]), input as f64);
    assert_eq!(value(&samples, "bosun_tokens_total", &[("provider", "demo"), ("direction", "output")]), output as f64);
    assert_eq!(value(&samples, "bosun_turns_ended_total", &[("provider", "demo"), ("status", "completed")]), 1.0);
    assert_eq!(value(&samples, "bosun_turns_ended_total", &[("provider", "demo"), ("status", "interrupted")]), 1.0);
    assert_eq!(value(&samples, "bosun_actor_restarts_total", &[("kind", "session")]), 1.0);

    drop(ws);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let now = scrape(&d, &addr).await;
        if value(&now, "bosun_websocket_subscribers", &[]) == 0.0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "a closed socket leaves the gauge");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn a_metrics_listener_beyond_loopback_is_refused_at_start() {
    let dir = tempdir();
    let config = dir.path().join("bosun.toml");
    std::fs::write(&config, "[metrics]\nlisten = \"0.0.0.0:0\"\n").expect("write the config");
    let out = Command::new(env!("CARGO_BIN_EXE_bosun"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .output()
        .expect("run bosun serve");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("[metrics] listen must be a loopback address"), "{stderr}");
    assert!(!dir.path().join("data").exists(), "refused before anything was made");
}
