//! The rotated log files under `<data_dir>/logs/`, from the real binary:
//! rotation at a small limit, one JSON object a line with its subsystem and
//! the ids it concerns, a provider's agent in its own file, and no token in
//! any of them.

mod common;

use bosun_proto::{CreateSessionRequest, Policy, TurnStatus};
use common::*;
use serde_json::Value;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

const MAX_BYTES: u64 = 4096;

fn config() -> String {
    format!(
        "[logs]\nmax_bytes = {MAX_BYTES}\nkeep = 2\n\
         [providers.noisy]\nkind = \"acp\"\ncommand = \"sh\"\n\
         args = [\"-c\", \"echo 'noisy agent says hello' >&2; exit 3\"]\n"
    )
}

fn lines_of(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}")))
        .collect()
}

#[tokio::test]
async fn logs_rotate_carry_their_context_and_keep_tokens_out() {
    let dir = tempdir();
    let options =
        Options { config: Some(config()), log: Some("debug,sled=warn,hyper=warn".into()), ..Options::default() };
    let d = Daemon::start(&dir.path().join("data"), options);
    let logs = d.data_dir.join("logs");

    // A turn on the demo agent: lines about a session and a turn.
    let s = d.new_session(dir.path(), Policy::PlanOnly).await;
    let t = d.start_turn(&s, "hello there").await;
    d.wait_turn_end(&s, &t).await;
    // An agent that says something on stderr and exits.
    let req = CreateSessionRequest {
        provider: "noisy".into(),
        cwd: Some(path_string(dir.path())),
        policy: Some(Policy::PlanOnly),
        ..Default::default()
    };
    let noisy = d.create_session(&req).await.id.into_string();
    let nt = d.start_turn(&noisy, "anyone?").await;
    assert_eq!(d.wait_turn_end(&noisy, &nt).await.status, TurnStatus::Failed);
    // Enough requests to pass the limit a few times.
    for _ in 0..60 {
        d.client().health().await.expect("health");
    }

    // Tokens where a careless log line would catch them: a bad bearer token,
    // and the admin token in a query string.
    let admin = d.admin_token();
    let guess = format!("bsn_{}", "0f".repeat(32));
    let bad = test_client().get(format!("{}/api/v1/sessions", d.url)).bearer_auth(&guess).send().await.expect("GET");
    assert_eq!(bad.status(), 200, "loopback needs no token, and a bad one changes nothing here");
    let request_id = "probe-1234";
    let probe = test_client()
        .get(format!("{}/api/v1/sessions?token={admin}", d.url))
        .header("x-request-id", request_id)
        .send()
        .await
        .expect("GET");
    assert_eq!(probe.headers()["x-request-id"], request_id, "the request id comes back");
    // core.log and two rotated files, none far past the limit, all private.
    let core = logs.join("core.log");
    for name in ["core.log", "core.log.1", "core.log.2"] {
        let path = logs.join(name);
        let meta = std::fs::metadata(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{name} is private");
        // Rotated once a write takes it past the limit: by at most one line.
        assert!(meta.len() < MAX_BYTES + 2048, "{name} is {} bytes", meta.len());
    }
    assert!(!logs.join("core.log.3").exists(), "only `keep` rotated files are kept");

    let mut all: Vec<Value> = Vec::new();
    for name in ["core.log.2", "core.log.1", "core.log"] {
        all.extend(lines_of(&logs.join(name)));
    }
    for line in &all {
        for key in ["ts", "level", "subsystem", "target", "message"] {
            assert!(line.get(key).is_some(), "no {key}: {line}");
        }
    }
    // The current file has the last requests, each answer with its request id.
    let current = lines_of(&core);
    assert!(
        current.iter().any(|l| l["message"] == "answered" && l["subsystem"] == "network" && l["path"] == "/health"),
        "{current:?}"
    );
    assert!(current.iter().filter(|l| l["message"] == "answered").all(|l| l.get("request_id").is_some()));
    let probed = all.iter().find(|l| l["request_id"] == request_id);
    assert!(probed.is_some_and(|l| l["path"] == "/api/v1/sessions"), "the given request id is the line's: {probed:?}");
    // The early lines rotated away, so look for the turn's lines only where
    // they may still be: the provider's file has its own.
    let provider_log = logs.join("providers").join("noisy.log");
    let provider_lines = lines_of(&provider_log);
    let said = provider_lines
        .iter()
        .find(|l| l["message"].as_str().is_some_and(|m| m.contains("noisy agent says hello")))
        .unwrap_or_else(|| panic!("the agent's stderr line in noisy.log: {provider_lines:?}"));
    assert_eq!(said["provider"], "noisy");
    assert_eq!(said["session_id"], noisy.as_str());
    assert_eq!(said["turn_id"], nt.as_str());
    assert_eq!(said["subsystem"], "provider");
    assert!(
        !all.iter().any(|l| l["message"].as_str().is_some_and(|m| m.contains("noisy agent says hello"))),
        "a provider's lines stay out of core.log"
    );

    // No token in any file under logs/, in any form the daemon saw.
    let mut files = vec![provider_log.clone()];
    files.extend(["core.log", "core.log.1", "core.log.2"].iter().map(|n| logs.join(n)));
    for path in files {
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(!text.contains(&admin), "the admin token is in {}", path.display());
        assert!(!text.contains(&guess), "a guessed token is in {}", path.display());
    }
    drop(d);
}

/// Lines about a session's turn carry its ids (and the subsystem).
#[tokio::test]
async fn a_turns_lines_carry_the_session_and_turn() {
    let dir = tempdir();
    let d = Daemon::start(&dir.path().join("data"), Options::default());
    let s = d.new_session(dir.path(), Policy::PlanOnly).await;
    let t = d.start_turn(&s, "RUN: true").await;
    let approval = d.wait_pending_approval(&s).await;
    d.decide(approval.id.as_str(), bosun_proto::Decision::Accept).await;
    d.wait_turn_end(&s, &t).await;
    let lines = lines_of(&d.data_dir.join("logs").join("core.log"));
    let ended = lines
        .iter()
        .find(|l| l["message"] == "turn ended" && l["turn_id"] == t.as_str())
        .unwrap_or_else(|| panic!("no `turn ended` line for {t}: {lines:?}"));
    assert_eq!(ended["session_id"], s.as_str());
    assert_eq!(ended["subsystem"], "turn-lifecycle");
    let decided = lines
        .iter()
        .find(|l| l["message"] == "approval decided")
        .unwrap_or_else(|| panic!("no `approval decided` line: {lines:?}"));
    assert_eq!(decided["subsystem"], "approval-policy");
    assert_eq!(decided["approval_id"], approval.id.as_str());
}
