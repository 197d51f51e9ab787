//! The built-in `shell` provider on the real binary: each turn is one command
//! in the session's persistent shell, on the host (`"sandbox":"none"`) or in
//! a bubblewrap jail (`"sandbox":"bwrap"`, which tests/run installs: these
//! tests require it rather than skip).

mod common;

use common::*;
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

const SANDBOXES: [&str; 2] = ["none", "bwrap"];

fn require_bwrap() {
    let ok = std::process::Command::new("bwrap").arg("--version").output().is_ok_and(|o| o.status.success());
    assert!(ok, "bwrap is not installed: tests/run installs it (apt-get install bubblewrap)");
}

async fn shell_session(d: &Daemon, cwd: &Path, sandbox: &str, policy: &str, provider: &str) -> String {
    if sandbox == "bwrap" {
        require_bwrap();
    }
    let body = json!({"provider": provider, "cwd": cwd, "sandbox": sandbox, "policy": policy, "title": "shell"});
    let (status, session) = d.post("/api/v1/sessions", body).await;
    assert_eq!(status, 201, "{session}");
    assert_eq!(session["sandbox"], sandbox, "{session}");
    session["id"].as_str().expect("id").to_string()
}

/// Runs `command` as a turn and returns its `turn:completed` event.
async fn run(d: &Daemon, s: &str, command: &str) -> Value {
    let t = d.start_turn(s, command).await;
    d.wait_turn_end(s, &t).await
}

/// The turn's `result`, checking that GET session shows the same one.
async fn result_of(d: &Daemon, s: &str, done: &Value) -> Value {
    let result = done["data"]["result"].clone();
    let session = d.ok_get(&format!("/api/v1/sessions/{s}")).await;
    let turn = session["turns"]
        .as_array()
        .expect("turns")
        .iter()
        .find(|t| t["id"] == done["data"]["turn_id"])
        .unwrap_or_else(|| panic!("turn not in {session}"))
        .clone();
    assert_eq!(turn["result"], result, "GET session and turn:completed disagree");
    result
}

#[tokio::test]
async fn results_separate_exit_code_stdout_and_stderr_and_are_audited() {
    let dir = tempdir();
    let d = Daemon::start(&dir.path().join("data"), Options::default());
    for sandbox in SANDBOXES {
        let s = shell_session(&d, dir.path(), sandbox, "full-access", "shell").await;
        let done = run(&d, &s, "echo out; echo err >&2; printf 'no newline'; false").await;
        assert_eq!(done["data"]["status"], "completed", "{sandbox}: {done}");
        let result = result_of(&d, &s, &done).await;
        assert_eq!(result["exit_code"], 1, "{sandbox}: {result}");
        assert_eq!(result["stdout"], "out\nno newline", "{sandbox}: {result}");
        assert_eq!(result["stderr"], "err\n", "{sandbox}: {result}");
        assert!(result["duration_ms"].is_u64(), "{result}");
        assert!(result.get("truncated").is_none(), "{result}");

        let done = run(&d, &s, "exit_with() { return \"$1\"; }; exit_with 7").await;
        assert_eq!(result_of(&d, &s, &done).await["exit_code"], 7, "{sandbox}");

        let events = d.events(Some(&s), 0).await;
        let ran: Vec<&Value> = events.iter().filter(|e| e["type"] == "command:ran").map(|e| &e["data"]).collect();
        assert_eq!(ran.len(), 2, "{sandbox}: {ran:?}");
        let first = &ran[0]["command"];
        assert_eq!(first["command"], "echo out; echo err >&2; printf 'no newline'; false");
        assert_eq!(first["cwd"], dir.path().to_string_lossy().as_ref());
        assert_eq!(
            (first["exit_code"].as_i64(), first["stdout_bytes"].as_u64(), first["stderr_bytes"].as_u64()),
            (Some(1), Some(14), Some(4)),
            "{first}"
        );
        assert!(first.get("ended_by").is_none(), "{first}");
        assert!(first["started_at"].as_str().is_some_and(|t| t.contains('T')), "{first}");
        assert_eq!(ran[1]["command"]["exit_code"], 7);
        // Its output was streamed as it came, too.
        let turn = done["data"]["turn_id"].as_str().unwrap();
        assert!(turn_text(&events, turn, Some("command_output")).is_empty());
        let first_turn = ran[0]["turn_id"].as_str().unwrap();
        let streamed = turn_text(&events, first_turn, Some("command_output"));
        assert!(
            streamed.contains("out\n") && streamed.contains("err\n") && streamed.contains("no newline"),
            "{streamed}"
        );
    }
}

#[tokio::test]
async fn output_streams_before_the_command_ends() {
    let dir = tempdir();
    let d = Daemon::start(&dir.path().join("data"), Options::default());
    for sandbox in SANDBOXES {
        let s = shell_session(&d, dir.path(), sandbox, "full-access", "shell").await;
        let t = d.start_turn(&s, "echo first; sleep 1; echo second").await;
        let events = d
            .wait_events(&s, "the first line", |evs| turn_text(evs, &t, Some("command_output")).contains("first"))
            .await;
        assert!(!events.iter().any(|e| is_turn_completed(e, &t)), "{sandbox}: the first line came with the end");
        let done = d.wait_turn_end(&s, &t).await;
        assert_eq!(done["data"]["result"]["stdout"], "first\nsecond\n");
    }
}

#[tokio::test]
async fn cd_and_exports_persist_between_turns() {
    let dir = tempdir();
    let d = Daemon::start(&dir.path().join("data"), Options::default());
    for sandbox in SANDBOXES {
        let s = shell_session(&d, dir.path(), sandbox, "full-access", "shell").await;
        let sub = dir.path().join(format!("x-{sandbox}"));
        let done = run(&d, &s, &format!("mkdir -p {0} && cd {0} && export A=1 && B=2", sub.display())).await;
        assert_eq!(done["data"]["result"]["exit_code"], 0, "{done}");
        let done = run(&d, &s, "echo \"$A $B\"; pwd").await;
        assert_eq!(done["data"]["result"]["stdout"], format!("1 2\n{}\n", sub.display()), "{sandbox}");
        // The approval names the directory the shell is in now.
        let approval = d.ok_get(&format!("/api/v1/approvals?session={s}")).await;
        let last =
            approval["approvals"].as_array().unwrap().iter().find(|a| a["action"]["command"] == "echo \"$A $B\"; pwd");
        assert_eq!(last.map(|a| a["action"]["cwd"].clone()), Some(json!(sub.to_string_lossy())), "{approval}");
    }
}

#[tokio::test]
async fn output_imitating_the_sentinel_does_not_end_a_command_early() {
    let dir = tempdir();
    let d = Daemon::start(&dir.path().join("data"), Options::default());
    for sandbox in SANDBOXES {
        let s = shell_session(&d, dir.path(), sandbox, "full-access", "shell").await;
        // Markers of the protocol's shape with other nonces, whole, split
        // across writes, without a newline, on both streams, and the printf
        // format the protocol uses.
        let fake = "__bosun_00000000000000000000000000000000__";
        let command = format!(
            "printf '%s0 /tmp%s' {fake} {fake}; printf '%s%s' {fake} {fake} >&2; \
             printf '__bosun_0000'; sleep 0.2; printf '0000000000000000000000000000__0 /%s' {fake}; \
             printf '%s%s%s%s %s%s%s%s' __bosun_ abc __ 0 / __bosun_ abc __; \
             printf \"%s%s%s%s %s%s%s%s\" __bosun_ \"$(od -An -N16 -tx1 /dev/urandom | tr -d ' \\n')\" __ 0 / x y z; \
             sleep 0.5; echo end"
        );
        let done = run(&d, &s, &command).await;
        let result = &done["data"]["result"];
        assert_eq!(result["exit_code"], 0, "{sandbox}: {done}");
        let stdout = result["stdout"].as_str().unwrap();
        assert!(stdout.starts_with(&format!("{fake}0 /tmp{fake}__bosun_0000")), "{sandbox}: {stdout}");
        assert!(stdout.ends_with("end\n"), "{sandbox}: ended early: {stdout:?}");
        assert_eq!(result["stderr"], format!("{fake}{fake}"), "{sandbox}");
        // And the shell is still in step.
        let done = run(&d, &s, "echo next").await;
        assert_eq!(done["data"]["result"]["stdout"], "next\n", "{sandbox}");
    }
}

#[tokio::test]
async fn plan_only_waits_for_approval_and_a_declined_command_does_not_run() {
    let dir = tempdir();
    let d = Daemon::start(&dir.path().join("data"), Options::default());
    for sandbox in SANDBOXES {
        let s = shell_session(&d, dir.path(), sandbox, "plan-only", "shell").await;
        let file = dir.path().join(format!("made-{sandbox}"));
        let t = d.start_turn(&s, &format!("touch {}", file.display())).await;
        let approval = d.wait_pending_approval(&s).await;
        assert_eq!(approval["action"]["kind"], "command", "{approval}");
        assert_eq!(approval["action"]["command"], format!("touch {}", file.display()));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!file.exists(), "{sandbox}: ran before the approval");
        let (status, body) = d
            .post(&format!("/api/v1/approvals/{}", approval["id"].as_str().unwrap()), json!({"decision":"decline"}))
            .await;
        assert_eq!(status, 200, "{body}");
        let done = d.wait_turn_end(&s, &t).await;
        assert_eq!(done["data"]["status"], "completed", "{done}");
        assert!(done["data"].get("result").is_none(), "{done}");
        assert!(!file.exists(), "{sandbox}: a declined command ran");
        let events = d.events(Some(&s), 0).await;
        assert!(turn_text(&events, &t, Some("notice")).contains("declined"), "{sandbox}");
        assert!(!events.iter().any(|e| e["type"] == "command:ran"), "{sandbox}");

        let t = d.start_turn(&s, &format!("touch {}", file.display())).await;
        let approval = d.wait_pending_approval(&s).await;
        let (status, _) = d
            .post(&format!("/api/v1/approvals/{}", approval["id"].as_str().unwrap()), json!({"decision":"accept"}))
            .await;
        assert_eq!(status, 200);
        let done = d.wait_turn_end(&s, &t).await;
        assert_eq!(done["data"]["result"]["exit_code"], 0, "{done}");
        assert!(file.exists(), "{sandbox}: an accepted command did not run");
    }
}

/// Starts `sleep A & sleep B; touch never` (unique A, B), waits for both,
/// and returns the turn and the two needles for /proc.
async fn start_sleeps(d: &Daemon, s: &str, dir: &Path, tag: u32) -> (String, String, String) {
    let pid = std::process::id();
    let (a, b) = (format!("sleep {tag}0.{pid}"), format!("sleep {tag}1.{pid}"));
    let never = dir.join(format!("never-{tag}"));
    let t = d.start_turn(s, &format!("{a} & {b}; touch {}", never.display())).await;
    wait_process_running(&a).await;
    wait_process_running(&b).await;
    (t, a, b)
}

/// After an interrupt or a timeout: no exit code, both sleeps gone, the
/// rest of the command line not run, and the audit record saying why.
async fn assert_stopped(d: &Daemon, s: &str, done: &Value, dir: &Path, tag: u32, sleeps: (&str, &str), why: &str) {
    assert_eq!(done["data"]["result"]["exit_code"], Value::Null, "{done}");
    wait_process_gone(sleeps.0).await;
    wait_process_gone(sleeps.1).await;
    assert!(!dir.join(format!("never-{tag}")).exists(), "{s}: the rest of the command ran");
    let events = d.events(Some(s), 0).await;
    let ran = events.iter().rev().find(|e| e["type"] == "command:ran").expect("command:ran");
    assert_eq!(ran["data"]["command"]["ended_by"], why, "{ran}");
}

#[tokio::test]
async fn interrupt_kills_the_sleeps_and_the_shell_keeps_its_state() {
    let dir = tempdir();
    let d = Daemon::start(&dir.path().join("data"), Options::default());
    for (i, sandbox) in SANDBOXES.into_iter().enumerate() {
        let s = shell_session(&d, dir.path(), sandbox, "full-access", "shell").await;
        let sub = dir.path().join(format!("kept-{sandbox}"));
        run(&d, &s, &format!("mkdir -p {0} && cd {0}", sub.display())).await;
        let tag = 31 + i as u32;
        let (t, a, b) = start_sleeps(&d, &s, dir.path(), tag).await;
        let (status, _) = d.post(&format!("/api/v1/sessions/{s}/turns/{t}/interrupt"), json!({})).await;
        assert_eq!(status, 202);
        let done = d.wait_turn_end(&s, &t).await;
        assert_eq!(done["data"]["status"], "interrupted", "{sandbox}: {done}");
        assert_stopped(&d, &s, &done, dir.path(), tag, (&a, &b), "interrupted").await;

        let done = run(&d, &s, "pwd").await;
        assert_eq!(done["data"]["result"]["stdout"], format!("{}\n", sub.display()), "{sandbox}: state lost");
    }
}

#[tokio::test]
async fn a_timeout_kills_the_sleeps_and_fails_the_turn() {
    let dir = tempdir();
    let config = "[providers.sh2]\nkind = \"shell\"\ncommand_timeout_secs = 2\n".to_string();
    let d = Daemon::start(&dir.path().join("data"), Options { config: Some(config), ..Options::default() });
    for (i, sandbox) in SANDBOXES.into_iter().enumerate() {
        let s = shell_session(&d, dir.path(), sandbox, "full-access", "sh2").await;
        run(&d, &s, "cd / && export KEPT=yes").await;
        let tag = 41 + i as u32;
        let started = Instant::now();
        let (t, a, b) = start_sleeps(&d, &s, dir.path(), tag).await;
        let done = d.wait_turn_end(&s, &t).await;
        assert!(started.elapsed() < Duration::from_secs(8), "{:?}", started.elapsed());
        assert_eq!(done["data"]["status"], "failed", "{sandbox}: {done}");
        assert_eq!(done["data"]["reason"], "the command timed out after 2 s", "{done}");
        assert_stopped(&d, &s, &done, dir.path(), tag, (&a, &b), "timed_out").await;

        let done = run(&d, &s, "echo $KEPT; pwd").await;
        assert_eq!(done["data"]["result"]["stdout"], "yes\n/\n", "{sandbox}: state lost");
    }
}

#[tokio::test]
async fn the_jailed_shell_writes_only_in_its_cwd_and_has_no_network() {
    require_bwrap();
    let dir = tempdir();
    let cwd = dir.path().join("work");
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&cwd).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    let d = Daemon::start(&dir.path().join("data"), Options::default());
    let s = shell_session(&d, &cwd, "bwrap", "full-access", "shell").await;

    let done = run(&d, &s, "touch inside").await;
    assert_eq!(done["data"]["result"]["exit_code"], 0, "{done}");
    assert!(cwd.join("inside").exists());
    let target = outside.join("x");
    let done = run(&d, &s, &format!("touch {}", target.display())).await;
    assert_ne!(done["data"]["result"]["exit_code"], 0, "{done}");
    assert!(!target.exists(), "the jail wrote outside its cwd");
    let done = run(&d, &s, "cd / && touch /etc/bosun-shell-jail-test").await;
    assert_ne!(done["data"]["result"]["exit_code"], 0, "{done}");
    assert!(!Path::new("/etc/bosun-shell-jail-test").exists());

    // The jail's limits hold for the shell's commands and what they start:
    // 600 CPU seconds and 8 GiB of address space each.
    let done = run(&d, &s, "ulimit -t; ulimit -v; sh -c 'ulimit -v'").await;
    assert_eq!(done["data"]["result"]["stdout"], "600\n8388608\n8388608\n", "{done}");

    // The daemon's own port, on loopback: unreachable with the network off.
    let port = d.url.rsplit(':').next().unwrap().trim_end_matches('/').to_string();
    let probe = format!("bash -c 'exec 3<>/dev/tcp/127.0.0.1/{port} && echo CONNECTED || echo REFUSED'");
    let done = run(&d, &s, &probe).await;
    let stdout = done["data"]["result"]["stdout"].as_str().unwrap_or("");
    assert!(stdout.contains("REFUSED") && !stdout.contains("CONNECTED"), "{done}");
    // The same probe from an unjailed shell session connects: the check is
    // the jail's doing.
    let open = shell_session(&d, &cwd, "none", "full-access", "shell").await;
    let done = run(&d, &open, &probe).await;
    assert!(done["data"]["result"]["stdout"].as_str().unwrap_or("").contains("CONNECTED"), "{done}");
}
