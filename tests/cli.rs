//! The command-line client against a real daemon.

mod common;

use common::*;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn bosun(d: &Daemon, args: &[&str]) -> Output {
    Command::new(BIN).args(args).env("BOSUN_URL", &d.url).stdin(Stdio::null()).output().expect("run bosun")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[tokio::test]
async fn client_drives_sessions_turns_and_approvals() {
    let dir = tempdir();
    let d = Daemon::start(&dir.path().join("data"), Options::default());

    let out = bosun(&d, &["status"]);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout(&out).contains("0.1.0"), "{}", stdout(&out));

    let out = bosun(&d, &["session", "new", "--title", "cli test", "--cwd", dir.path().to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let id = stdout(&out).trim().to_string();
    assert!(id.starts_with("s_"), "{id}");

    // The reply streams to stdout and the exit code tells how the turn ended.
    let out = bosun(&d, &["send", &id, "hello from the cli", "--wait"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(stdout(&out).contains("Demo agent here"), "{}", stdout(&out));

    // An action waits for `bosun approve`, then runs.
    let mut waiting = Command::new(BIN)
        .args(["send", &id, "RUN: echo approved-by-cli", "--wait"])
        .env("BOSUN_URL", &d.url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn send --wait");
    let approval = d.wait_pending_approval(&id).await;
    let approval_id = approval["id"].as_str().unwrap();
    let out = bosun(&d, &["approve", approval_id, "accept"]);
    assert!(out.status.success(), "{out:?}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while waiting.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "send --wait did not end");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let out = waiting.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = stdout(&out);
    assert!(text.contains("approved-by-cli"), "{text}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(approval_id) || text.contains(approval_id),
        "the approval id is shown"
    );

    // --json for scripts.
    let out = bosun(&d, &["session", "ls", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(list["sessions"][0]["id"], id.as_str());
    let out = bosun(&d, &["events", "--session", &id, "--json"]);
    assert!(out.status.success());
    let lines: Vec<serde_json::Value> =
        stdout(&out).lines().map(|l| serde_json::from_str(l).expect("one JSON event a line")).collect();
    assert_eq!(lines, d.events(Some(&id), 0).await);

    // Interrupt a slow turn from the CLI.
    let turn = d.start_turn(&id, "SLOW").await;
    d.wait_events(&id, "streaming", |evs| {
        evs.iter().any(|e| e["type"] == "stream:chunk" && e["data"]["turn_id"] == turn)
    })
    .await;
    let out = bosun(&d, &["interrupt", &id]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(d.wait_turn_end(&id, &turn).await["data"]["status"], "interrupted");

    // Errors: the daemon's message, exit 1.
    let out = bosun(&d, &["session", "show", "s_nosuchsession"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not_found"), "{out:?}");
    let out = bosun(&d, &["session", "rm", &id]);
    assert!(out.status.success(), "{out:?}");
    let out = Command::new(BIN).args(["status", "--server", "http://127.0.0.1:1"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("127.0.0.1:1"), "{out:?}");
}
