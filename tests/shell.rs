//! The built-in `shell` provider on the real binary: each turn is one command
//! in the session's persistent shell, on the host (`"sandbox":"none"`) or in
//! a bubblewrap jail (`"sandbox":"bwrap"`, which tests/run installs: these
//! tests require it rather than skip).

mod common;

use bosun_proto::query::ApprovalsQuery;
use bosun_proto::{CommandResult, CreateSessionRequest, EndedBy, Sandbox};
use common::*;
use std::path::Path;
use std::time::{Duration, Instant};

const SANDBOXES: [&str; 2] = ["none", "bwrap"];

fn require_bwrap() {
    let ok = std::process::Command::new("bwrap").arg("--version").output().is_ok_and(|o| o.status.success());
    assert!(ok, "bwrap is not installed: tests/run installs it (apt-get install bubblewrap)");
}

fn sandbox_named(name: &str) -> Sandbox {
    match name {
        "none" => Sandbox::None,
        "bwrap" => Sandbox::Bwrap,
        other => panic!("no sandbox {other:?} in these tests"),
    }
}

async fn shell_session(d: &Daemon, cwd: &Path, sandbox: &str, policy: Policy, provider: &str) -> String {
    if sandbox == "bwrap" {
        require_bwrap();
    }
    let req = CreateSessionRequest {
        provider: provider.to_string(),
        cwd: Some(path_string(cwd)),
        sandbox: sandbox_named(sandbox),
        policy: Some(policy),
        title: Some("shell".into()),
        ..Default::default()
    };
    let session = d.create_session(&req).await;
    assert_eq!(session.sandbox, sandbox_named(sandbox), "{session:?}");
    session.id.into_string()
}

/// Runs `command` as a turn and returns its `turn:completed` event.
async fn run(d: &Daemon, s: &str, command: &str) -> TurnCompleted {
    let t = d.start_turn(s, command).await;
    d.wait_turn_end(s, &t).await
}

/// The result a turn's end carries (it must carry one).
fn result(done: &TurnCompleted) -> &CommandResult {
    done.result.as_ref().unwrap_or_else(|| panic!("turn:completed without a result: {done:?}"))
}

/// The `turn:completed` of a turn as it is on the wire (its `data`).
async fn wire_end(d: &Daemon, s: &str, turn: &str) -> serde_json::Value {
    let events = d.events(Some(s), 0).await;
    event_of_turn(&events, EventType::TurnCompleted, turn).expect("turn:completed").data.clone()
}

/// The turn's `result`, checking that GET session shows the same one.
async fn result_of(d: &Daemon, s: &str, done: &TurnCompleted) -> CommandResult {
    let session = d.client().session(s).await.expect("GET the session");
    let turn = session
        .turns
        .iter()
        .find(|t| t.id == done.turn_id)
        .unwrap_or_else(|| panic!("turn not in {session:?}"))
        .clone();
    assert_eq!(turn.result, done.result, "GET session and turn:completed disagree");
    result(done).clone()
}

#[tokio::test]
async fn results_separate_exit_code_stdout_and_stderr_and_are_audited() {
    let dir = tempdir();
    let d = Daemon::start(&dir.path().join("data"), Options::default());
    for sandbox in SANDBOXES {
        let s = shell_session(&d, dir.path(), sandbox, Policy::FullAccess, "shell").await;
        let done = run(&d, &s, "echo out; echo err >&2; printf 'no newline'; false").await;
        assert_eq!(done.status, TurnStatus::Completed, "{sandbox}: {done:?}");
        let result = result_of(&d, &s, &done).await;
        assert_eq!(result.exit_code, Some(1), "{sandbox}: {result:?}");
        assert_eq!(result.stdout, "out\nno newline", "{sandbox}: {result:?}");
        assert_eq!(result.stderr, "err\n", "{sandbox}: {result:?}");
        // On the wire: a whole number of milliseconds, and no `truncated` when nothing was cut.
        let wire = &wire_end(&d, &s, done.turn_id.as_str()).await["result"];
        assert!(wire["duration_ms"].is_u64(), "{wire}");
        assert!(wire.get("truncated").is_none(), "{wire}");

        let done = run(&d, &s, "exit_with() { return \"$1\"; }; exit_with 7").await;
        assert_eq!(result_of(&d, &s, &done).await.exit_code, Some(7), "{sandbox}");

        let events = d.events(Some(&s), 0).await;
        let ran = events_of!(&events, CommandRan);
        assert_eq!(ran.len(), 2, "{sandbox}: {ran:?}");
        let (first_event, first) = &ran[0];
        let first = &first.command;
        assert_eq!(first.command, "echo out; echo err >&2; printf 'no newline'; false");
        assert_eq!(first.cwd, dir.path().to_string_lossy().as_ref());
        assert_eq!((first.exit_code, first.stdout_bytes, first.stderr_bytes), (Some(1), 14, 4), "{first:?}");
        // No `ended_by` on the wire for a command that exited by itself.
        assert!(first_event.data["command"].get("ended_by").is_none(), "{}", first_event.data);
        assert!(first.started_at.contains('T'), "{first:?}");
        assert_eq!(ran[1].1.command.exit_code, Some(7));
        // Its output was streamed as it came, too.
        let turn = done.turn_id.as_str();
        assert!(turn_text(&events, turn, Some(ChunkKind::CommandOutput)).is_empty());
        let first_turn = ran[0].1.turn_id.as_str();
        let streamed = turn_text(&events, first_turn, Some(ChunkKind::CommandOutput));
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
        let s = shell_session(&d, dir.path(), sandbox, Policy::FullAccess, "shell").await;
        let t = d.start_turn(&s, "echo first; sleep 1; echo second").await;
        let events = d
            .wait_events(&s, "the first line", |evs| {
                turn_text(evs, &t, Some(ChunkKind::CommandOutput)).contains("first")
            })
            .await;
        assert!(!events.iter().any(|e| is_turn_completed(e, &t)), "{sandbox}: the first line came with the end");
        let done = d.wait_turn_end(&s, &t).await;
        assert_eq!(result(&done).stdout, "first\nsecond\n");
    }
}

#[tokio::test]
async fn cd_and_exports_persist_between_turns() {
    let dir = tempdir();
    let d = Daemon::start(&dir.path().join("data"), Options::default());
    for sandbox in SANDBOXES {
        let s = shell_session(&d, dir.path(), sandbox, Policy::FullAccess, "shell").await;
        let sub = dir.path().join(format!("x-{sandbox}"));
        let done = run(&d, &s, &format!("mkdir -p {0} && cd {0} && export A=1 && B=2", sub.display())).await;
        assert_eq!(result(&done).exit_code, Some(0), "{done:?}");
        let done = run(&d, &s, "echo \"$A $B\"; pwd").await;
        assert_eq!(result(&done).stdout, format!("1 2\n{}\n", sub.display()), "{sandbox}");
        // The approval names the directory the shell is in now.
        let query = ApprovalsQuery { session: Some(s.clone()), ..Default::default() };
        let approvals = d.client().approvals(&query).await.expect("GET /api/v1/approvals");
        let cwd = approvals.approvals.iter().find_map(|a| match &a.action {
            Action::Command { command, cwd } if command == "echo \"$A $B\"; pwd" => Some(cwd.clone()),
            _ => None,
        });
        assert_eq!(cwd, Some(sub.to_string_lossy().into_owned()), "{approvals:?}");
    }
}

#[tokio::test]
async fn output_imitating_the_sentinel_does_not_end_a_command_early() {
    let dir = tempdir();
    let d = Daemon::start(&dir.path().join("data"), Options::default());
    for sandbox in SANDBOXES {
        let s = shell_session(&d, dir.path(), sandbox, Policy::FullAccess, "shell").await;
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
        let outcome = result(&done);
        assert_eq!(outcome.exit_code, Some(0), "{sandbox}: {done:?}");
        let stdout = outcome.stdout.as_str();
        assert!(stdout.starts_with(&format!("{fake}0 /tmp{fake}__bosun_0000")), "{sandbox}: {stdout}");
        assert!(stdout.ends_with("end\n"), "{sandbox}: ended early: {stdout:?}");
        assert_eq!(outcome.stderr, format!("{fake}{fake}"), "{sandbox}");
        // And the shell is still in step.
        let done = run(&d, &s, "echo next").await;
        assert_eq!(result(&done).stdout, "next\n", "{sandbox}");
    }
}

#[tokio::test]
async fn plan_only_waits_for_approval_and_a_declined_command_does_not_run() {
    let dir = tempdir();
    let d = Daemon::start(&dir.path().join("data"), Options::default());
    for sandbox in SANDBOXES {
        let s = shell_session(&d, dir.path(), sandbox, Policy::PlanOnly, "shell").await;
        let file = dir.path().join(format!("made-{sandbox}"));
        let t = d.start_turn(&s, &format!("touch {}", file.display())).await;
        let approval = d.wait_pending_approval(&s).await;
        let Action::Command { command, .. } = &approval.action else { panic!("not a command: {approval:?}") };
        assert_eq!(*command, format!("touch {}", file.display()));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!file.exists(), "{sandbox}: ran before the approval");
        d.decide(approval.id.as_str(), Decision::Decline).await;
        let done = d.wait_turn_end(&s, &t).await;
        assert_eq!(done.status, TurnStatus::Completed, "{done:?}");
        // No `result` on the wire for a turn that ran nothing.
        let wire = wire_end(&d, &s, &t).await;
        assert!(wire.get("result").is_none(), "{wire}");
        assert!(!file.exists(), "{sandbox}: a declined command ran");
        let events = d.events(Some(&s), 0).await;
        assert!(turn_text(&events, &t, Some(ChunkKind::Notice)).contains("declined"), "{sandbox}");
        assert!(of_kind(&events, EventType::CommandRan).is_empty(), "{sandbox}");

        let t = d.start_turn(&s, &format!("touch {}", file.display())).await;
        let approval = d.wait_pending_approval(&s).await;
        d.decide(approval.id.as_str(), Decision::Accept).await;
        let done = d.wait_turn_end(&s, &t).await;
        assert_eq!(result(&done).exit_code, Some(0), "{done:?}");
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
async fn assert_stopped(
    d: &Daemon,
    s: &str,
    done: &TurnCompleted,
    dir: &Path,
    tag: u32,
    sleeps: (&str, &str),
    why: EndedBy,
) {
    assert_eq!(done.result.as_ref().and_then(|r| r.exit_code), None, "{done:?}");
    wait_process_gone(sleeps.0).await;
    wait_process_gone(sleeps.1).await;
    assert!(!dir.join(format!("never-{tag}")).exists(), "{s}: the rest of the command ran");
    let events = d.events(Some(s), 0).await;
    let ran = datas_of!(&events, CommandRan).pop().expect("command:ran");
    assert_eq!(ran.command.ended_by, Some(why), "{ran:?}");
}

#[tokio::test]
async fn interrupt_kills_the_sleeps_and_the_shell_keeps_its_state() {
    let dir = tempdir();
    let d = Daemon::start(&dir.path().join("data"), Options::default());
    for (i, sandbox) in SANDBOXES.into_iter().enumerate() {
        let s = shell_session(&d, dir.path(), sandbox, Policy::FullAccess, "shell").await;
        let sub = dir.path().join(format!("kept-{sandbox}"));
        run(&d, &s, &format!("mkdir -p {0} && cd {0}", sub.display())).await;
        let tag = 31 + i as u32;
        let (t, a, b) = start_sleeps(&d, &s, dir.path(), tag).await;
        d.interrupt(&s, &t).await;
        let done = d.wait_turn_end(&s, &t).await;
        assert_eq!(done.status, TurnStatus::Interrupted, "{sandbox}: {done:?}");
        assert_stopped(&d, &s, &done, dir.path(), tag, (&a, &b), EndedBy::Interrupted).await;

        let done = run(&d, &s, "pwd").await;
        assert_eq!(result(&done).stdout, format!("{}\n", sub.display()), "{sandbox}: state lost");
    }
}

#[tokio::test]
async fn a_timeout_kills_the_sleeps_and_fails_the_turn() {
    let dir = tempdir();
    let config = "[providers.sh2]\nkind = \"shell\"\ncommand_timeout_secs = 2\n".to_string();
    let d = Daemon::start(&dir.path().join("data"), Options { config: Some(config), ..Options::default() });
    for (i, sandbox) in SANDBOXES.into_iter().enumerate() {
        let s = shell_session(&d, dir.path(), sandbox, Policy::FullAccess, "sh2").await;
        run(&d, &s, "cd / && export KEPT=yes").await;
        let tag = 41 + i as u32;
        let started = Instant::now();
        let (t, a, b) = start_sleeps(&d, &s, dir.path(), tag).await;
        let done = d.wait_turn_end(&s, &t).await;
        assert!(started.elapsed() < Duration::from_secs(8), "{:?}", started.elapsed());
        assert_eq!(done.status, TurnStatus::Failed, "{sandbox}: {done:?}");
        assert_eq!(done.reason.as_deref(), Some("the command timed out after 2 s"), "{done:?}");
        assert_stopped(&d, &s, &done, dir.path(), tag, (&a, &b), EndedBy::TimedOut).await;

        let done = run(&d, &s, "echo $KEPT; pwd").await;
        assert_eq!(result(&done).stdout, "yes\n/\n", "{sandbox}: state lost");
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
    let s = shell_session(&d, &cwd, "bwrap", Policy::FullAccess, "shell").await;

    let done = run(&d, &s, "touch inside").await;
    assert_eq!(result(&done).exit_code, Some(0), "{done:?}");
    assert!(cwd.join("inside").exists());
    let target = outside.join("x");
    let done = run(&d, &s, &format!("touch {}", target.display())).await;
    assert_ne!(result(&done).exit_code, Some(0), "{done:?}");
    assert!(!target.exists(), "the jail wrote outside its cwd");
    let done = run(&d, &s, "cd / && touch /etc/bosun-shell-jail-test").await;
    assert_ne!(result(&done).exit_code, Some(0), "{done:?}");
    assert!(!Path::new("/etc/bosun-shell-jail-test").exists());

    // The jail's limits hold for the shell's commands and what they start:
    // 600 CPU seconds and 8 GiB of address space each.
    let done = run(&d, &s, "ulimit -t; ulimit -v; sh -c 'ulimit -v'").await;
    assert_eq!(result(&done).stdout, "600\n8388608\n8388608\n", "{done:?}");

    // The daemon's own port, on loopback: unreachable with the network off.
    let port = d.url.rsplit(':').next().unwrap().trim_end_matches('/').to_string();
    let probe = format!("bash -c 'exec 3<>/dev/tcp/127.0.0.1/{port} && echo CONNECTED || echo REFUSED'");
    let done = run(&d, &s, &probe).await;
    let stdout = done.result.as_ref().map_or("", |r| r.stdout.as_str());
    assert!(stdout.contains("REFUSED") && !stdout.contains("CONNECTED"), "{done:?}");
    // The same probe from an unjailed shell session connects: the check is
    // the jail's doing.
    let open = shell_session(&d, &cwd, "none", Policy::FullAccess, "shell").await;
    let done = run(&d, &open, &probe).await;
    assert!(done.result.as_ref().is_some_and(|r| r.stdout.contains("CONNECTED")), "{done:?}");
}

/// SIGTERM: the agents stop, every event committed up to the stop reaches
/// the socket, and the socket is told goodbye (1001, going away) rather
/// than cut, so a client can tell a stop from a crash and knows it missed
/// nothing.
#[tokio::test]
async fn sigterm_stops_the_agents_and_says_goodbye_after_the_last_event() {
    use futures::StreamExt as _;
    use tokio_tungstenite::tungstenite::Message;
    let dir = tempdir();
    let mut d = Daemon::start(&dir.path().join("data"), Options::default());
    let s = shell_session(&d, dir.path(), "none", Policy::FullAccess, "shell").await;
    let mut ws = ws_connect(&d).await;
    ws_subscribe(&mut ws, &["*"], 0).await;
    let (_turn, a, b) = start_sleeps(&d, &s, dir.path(), 8).await;

    let signalled = chrono::Utc::now();
    d.sigterm();
    let mut received = Vec::new();
    let close = loop {
        match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => break frame.expect("a close frame with a code"),
            Ok(Some(Ok(Message::Text(text)))) => {
                if let Ok(ServerFrame::Event(e)) = serde_json::from_str::<ServerFrame>(&text) {
                    received.push(e);
                }
            }
            Ok(Some(Ok(_))) => {}
            other => panic!("the socket ended without a goodbye: {other:?}"),
        }
    };
    assert_eq!(u16::from(close.code), 1001, "{close:?}");
    assert_eq!(close.reason.as_str(), "bosun is stopping");
    hear_the_close_out(&mut ws).await;
    let status = d.wait_exit();
    assert!(status.success(), "a graceful stop exits 0: {status:?}\n{}", d.stderr());
    assert!(!d.stderr().contains("did not close after the goodbye"), "the closing handshake completed");
    wait_process_gone(&a).await;
    wait_process_gone(&b).await;

    // What the daemon committed before it exited is what the socket got:
    // the restarted daemon's own events come after.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let restarted = chrono::Utc::now();
    let d = d.restart();
    let at = |e: &Envelope| chrono::DateTime::parse_from_rfc3339(&e.ts).expect("an RFC 3339 ts");
    let before: Vec<u64> = d.events(None, 0).await.iter().filter(|e| at(e) < restarted).map(|e| e.seq).collect();
    assert_eq!(seqs(&received), before, "every event up to the stop, in order, and nothing else");
    assert!(
        received.iter().any(|e| at(e) >= signalled && e.session_id() == Some(s.as_str())),
        "the stop itself said something about the session (its agent stopping): {:?}",
        received.iter().rev().take(5).collect::<Vec<_>>()
    );
}
