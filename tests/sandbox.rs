//! The bubblewrap jail: a session created with `"sandbox":"bwrap"` runs its
//! commands with the host read-only, its cwd writable, no network, and the
//! daemon's data dir (the store, other sessions' worktrees) out of sight.
//! Driven through the demo provider's `RUN:` commands on the real binary.

mod common;

use common::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;

/// tests/run installs bubblewrap: a missing one is a broken set-up, not a
/// reason to pass.
fn require_bwrap() {
    let ok = Command::new("bwrap").arg("--version").output().is_ok_and(|o| o.status.success());
    assert!(ok, "bwrap is not installed: tests/run installs it (apt-get install bubblewrap)");
}

async fn jailed_session(d: &Daemon, body: Value) -> Value {
    let mut body = body;
    body["provider"] = json!("demo");
    body["policy"] = json!("full-access");
    body["sandbox"] = json!("bwrap");
    let (status, session) = d.post("/api/v1/sessions", body).await;
    assert_eq!(status, 201, "{session}");
    assert_eq!(session["sandbox"], "bwrap");
    session
}

/// Runs `command` as a demo turn and returns its command output and the
/// "command finished" notice.
async fn run(d: &Daemon, s: &str, command: &str) -> (String, String) {
    let t = d.start_turn(s, &format!("RUN: {command}")).await;
    d.wait_turn_end(s, &t).await;
    let events = d.events(Some(s), 0).await;
    let output = turn_text(&events, &t, Some("command_output"));
    let notices = turn_text(&events, &t, Some("notice"));
    (output, notices)
}

fn make_repo(root: &Path) -> PathBuf {
    repo_with(&root.join("origin"), &[("README.md", "hello\n")])
}

#[tokio::test]
async fn a_jailed_command_writes_only_in_its_cwd() {
    require_bwrap();
    let dir = tempdir();
    let cwd = dir.path().join("work");
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&cwd).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    let d = Daemon::start(&dir.path().join("data"), Options::default());
    let s = jailed_session(&d, json!({"cwd": cwd})).await["id"].as_str().unwrap().to_string();

    let (_, notices) = run(&d, &s, "touch made-here.txt").await;
    assert!(notices.contains("exit code 0"), "{notices}");
    assert!(cwd.join("made-here.txt").exists());

    let target = outside.join("x");
    let (_, notices) = run(&d, &s, &format!("touch {}", target.display())).await;
    assert!(!notices.contains("exit code 0"), "{notices}");
    assert!(!target.exists(), "the jail wrote outside its cwd");
    let (_, notices) = run(&d, &s, "touch /tmp/../etc/bosun-jail-test").await;
    assert!(!notices.contains("exit code 0"), "{notices}");
    assert!(!Path::new("/etc/bosun-jail-test").exists());

    // The jail's /tmp is its own: what it writes there never reaches the host's.
    let marker = format!("bosun-jail-tmp-{}", std::process::id());
    let (_, notices) = run(&d, &s, &format!("touch /tmp/{marker}")).await;
    assert!(notices.contains("exit code 0"), "{notices}");
    assert!(!Path::new("/tmp").join(&marker).exists());
}

#[tokio::test]
async fn a_jailed_command_cannot_reach_the_network() {
    require_bwrap();
    let dir = tempdir();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let d = Daemon::start(&dir.path().join("data"), Options::default());
    let s = jailed_session(&d, json!({"cwd": dir.path()})).await["id"].as_str().unwrap().to_string();

    // bash's /dev/tcp needs no tool that a fresh Debian may lack.
    let (output, notices) =
        run(&d, &s, &format!("bash -c 'exec 3<>/dev/tcp/127.0.0.1/{port} && echo CONNECTED || echo REFUSED'")).await;
    assert!(notices.contains("exit code 0"), "{notices} {output}");
    assert!(output.contains("REFUSED") && !output.contains("CONNECTED"), "{output}");
    match listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the listener saw a connection: {other:?}"),
    }

    // The same command in an unjailed session does connect: the check above
    // is the jail's doing, not a broken command.
    let (status, body) =
        d.post("/api/v1/sessions", json!({"provider":"demo","cwd":dir.path(),"policy":"full-access"})).await;
    assert_eq!(status, 201, "{body}");
    let open = body["id"].as_str().unwrap().to_string();
    let (output, _) =
        run(&d, &open, &format!("bash -c 'exec 3<>/dev/tcp/127.0.0.1/{port} && echo CONNECTED || echo REFUSED'")).await;
    assert!(output.contains("CONNECTED"), "{output}");
}

#[tokio::test]
async fn a_jailed_session_sees_neither_the_data_dir_nor_other_worktrees() {
    require_bwrap();
    let dir = tempdir();
    let repo = make_repo(dir.path());
    let data = dir.path().join("data");
    let d = Daemon::start(&data, Options::default());

    // Another session with a worktree in the data dir, not jailed.
    let (status, other) = d
        .post(
            "/api/v1/sessions",
            json!({"provider":"demo","policy":"full-access","workspace":{"repo": repo, "branch":"main"}}),
        )
        .await;
    assert_eq!(status, 201, "{other}");
    let other_worktree = other["workspace"]["worktree"].as_str().unwrap().to_string();
    assert!(Path::new(&other_worktree).join("README.md").exists());

    // A jailed session with its own worktree, also in the data dir.
    let mine = jailed_session(&d, json!({"workspace":{"repo": repo, "branch":"main"}})).await;
    let s = mine["id"].as_str().unwrap().to_string();
    let worktree = PathBuf::from(mine["workspace"]["worktree"].as_str().unwrap());
    assert!(worktree.starts_with(&data));

    // Its own worktree is there and writable.
    let (output, notices) = run(&d, &s, "ls && echo new > new.txt").await;
    assert!(notices.contains("exit code 0"), "{notices} {output}");
    assert!(output.contains("README.md"), "{output}");
    assert_eq!(std::fs::read_to_string(worktree.join("new.txt")).unwrap(), "new\n");

    // The other session's worktree is not.
    let (output, notices) = run(&d, &s, &format!("ls {other_worktree}")).await;
    assert!(!notices.contains("exit code 0"), "{notices}");
    assert!(!output.contains("README.md"), "{output}");

    // The data dir shows only the path down to its own worktree: no store,
    // no bare clones.
    let (output, _) = run(&d, &s, &format!("ls -A {}", data.display())).await;
    assert_eq!(output.trim(), "worktrees", "{output}");
    let (output, _) = run(&d, &s, &format!("ls -A {}", data.join("worktrees").display())).await;
    assert_eq!(output.trim(), s, "{output}");
}

#[tokio::test]
async fn interrupt_kills_a_jailed_command() {
    require_bwrap();
    let dir = tempdir();
    let d = Daemon::start(&dir.path().join("data"), Options::default());
    let s = jailed_session(&d, json!({"cwd": dir.path()})).await["id"].as_str().unwrap().to_string();
    // A sleep whose argument is unique to this test, to find it in /proc.
    let marker = format!("298.{}", std::process::id());
    let t = d.start_turn(&s, &format!("RUN: sleep {marker}; echo done")).await;
    wait_process_running(&format!("sleep {marker}")).await;
    let (status, _) = d.post(&format!("/api/v1/sessions/{s}/turns/{t}/interrupt"), json!({})).await;
    assert_eq!(status, 202);
    let done = d.wait_turn_end(&s, &t).await;
    assert_eq!(done["data"]["status"], "interrupted");
    // The pid namespace goes down with bwrap; give the kernel a moment.
    wait_process_gone(&format!("sleep {marker}")).await;
}

#[tokio::test]
async fn the_network_opens_to_a_jail_only_when_its_session_asks() {
    require_bwrap();
    let dir = tempdir();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // A jail on the host's network reaches the daemon's loopback port: only
    // a daemon that asks every client for a token may open it.
    let options =
        Options { config: Some("[auth]\nrequire = \"always\"\n".into()), admin_token: true, ..Options::default() };
    let d = Daemon::start(&dir.path().join("data"), options);
    let session = jailed_session(&d, json!({"cwd": dir.path(), "network": true})).await;
    assert_eq!(session["network"], true);
    let s = session["id"].as_str().unwrap().to_string();
    let (output, _) =
        run(&d, &s, &format!("bash -c 'exec 3<>/dev/tcp/127.0.0.1/{port} && echo CONNECTED || echo REFUSED'")).await;
    assert!(output.contains("CONNECTED"), "{output}");
    let closed = jailed_session(&d, json!({"cwd": dir.path()})).await;
    assert_eq!(closed["network"], false);
    let (output, _) = run(
        &d,
        closed["id"].as_str().unwrap(),
        &format!("bash -c 'exec 3<>/dev/tcp/127.0.0.1/{port} && echo CONNECTED || echo REFUSED'"),
    )
    .await;
    assert!(output.contains("REFUSED"), "{output}");
}

#[tokio::test]
async fn sandbox_requests_that_cannot_be_honoured_are_refused_and_change_nothing() {
    let dir = tempdir();
    let config = "discover_agents = false\n[providers.agent]\nkind = \"acp\"\ncommand = \"/bin/cat\"\n\
                  [providers.codex-acp]\nkind = \"acp\"\ncommand = \"/nonexistent/codex-acp\"\n"
        .to_string();
    let d = Daemon::start(&dir.path().join("data"), Options { config: Some(config), ..Options::default() });
    let refused = [
        // A known agent needs the network to reach its model.
        (json!({"provider":"codex-acp","cwd":dir.path(),"sandbox":"bwrap"}), 400, "network"),
        // Under require = "remote", a jail on the host's network could drive the daemon.
        (json!({"provider":"demo","cwd":dir.path(),"sandbox":"bwrap","network":true}), 400, "require"),
        (json!({"provider":"agent","cwd":dir.path(),"sandbox":"bwrap","network":true}), 400, "require"),
        // Nothing to open on the host.
        (json!({"provider":"demo","cwd":dir.path(),"network":true}), 400, "sandbox"),
        (json!({"provider":"demo","cwd":dir.path(),"sandbox":"chroot"}), 400, "chroot"),
        // The container image holds no agent; and no engine is configured.
        (json!({"provider":"demo","cwd":dir.path(),"sandbox":"docker"}), 400, "shell"),
        (json!({"provider":"shell","cwd":dir.path(),"sandbox":"docker"}), 503, "[docker]"),
    ];
    for (body, want, says) in refused {
        let (status, reply) = d.post("/api/v1/sessions", body.clone()).await;
        assert_eq!(status, want, "{body} → {reply}");
        let message = reply["error"]["message"].as_str().unwrap_or("");
        assert!(message.contains(says), "{body} → {reply}");
    }
    assert_eq!(d.ok_get("/api/v1/sessions").await["sessions"].as_array().map(Vec::len), Some(0));
    // An agent Bosun does not know may run a local model: it can be jailed offline.
    let (status, body) =
        d.post("/api/v1/sessions", json!({"provider":"agent","cwd":dir.path(),"sandbox":"bwrap"})).await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = d.post("/api/v1/sessions", json!({"provider":"demo","cwd":dir.path()})).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!((body["sandbox"].as_str(), body["network"].as_bool()), (Some("none"), Some(false)));
}

#[tokio::test]
async fn jailed_commands_and_shells_see_none_of_the_daemons_secrets() {
    require_bwrap();
    let dir = tempdir();
    let options = Options {
        config: Some("[git]\ntoken_env = \"BOSUN_TEST_PUSH_TOKEN\"\n".into()),
        env: vec![
            ("BOSUN_TEST_PUSH_TOKEN".into(), "push-token-5d1e".into()),
            ("BOSUN_TEST_OTHER_SECRET".into(), "other-secret-77c2".into()),
        ],
        ..Options::default()
    };
    let d = Daemon::start(&dir.path().join("data"), options);
    let jailed = jailed_session(&d, json!({"cwd": dir.path()})).await["id"].as_str().unwrap().to_string();
    let (output, _) = run(&d, &jailed, "env").await;
    assert!(output.contains("PATH="), "{output}");
    assert!(!output.contains("push-token-5d1e") && !output.contains("other-secret-77c2"), "{output}");

    let body = json!({"provider": "shell", "cwd": dir.path(), "policy": "full-access", "sandbox": "bwrap"});
    let (status, shell) = d.post("/api/v1/sessions", body).await;
    assert_eq!(status, 201, "{shell}");
    let s = shell["id"].as_str().unwrap();
    let t = d.start_turn(s, "env").await;
    let done = d.wait_turn_end(s, &t).await;
    let stdout = done["data"]["result"]["stdout"].as_str().unwrap_or_default().to_string();
    assert!(stdout.contains("PATH="), "{done}");
    assert!(!stdout.contains("push-token-5d1e") && !stdout.contains("other-secret-77c2"), "{stdout}");

    // On the host a command sees the daemon's environment: the checks above
    // are the jail's doing.
    let (status, open) =
        d.post("/api/v1/sessions", json!({"provider":"demo","cwd":dir.path(),"policy":"full-access"})).await;
    assert_eq!(status, 201, "{open}");
    let (output, _) = run(&d, open["id"].as_str().unwrap(), "env").await;
    assert!(output.contains("other-secret-77c2"), "{output}");
}
