//! The bubblewrap jail: a session created with `"sandbox":"bwrap"` runs its
//! commands with the host read-only, its cwd writable, no network, and the
//! daemon's data dir (the store, other sessions' worktrees) out of sight.
//! Driven through the demo provider's `RUN:` commands on the real binary.

mod common;

use bosun_proto::{CreateSessionRequest, Sandbox, SessionView, WorkspaceRequest};
use common::*;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;

/// tests/run installs bubblewrap: a missing one is a broken set-up, not a
/// reason to pass.
fn require_bwrap() {
    let ok = Command::new("bwrap").arg("--version").output().is_ok_and(|o| o.status.success());
    assert!(ok, "bwrap is not installed: tests/run installs it (apt-get install bubblewrap)");
}

/// A full-access demo session in a bubblewrap jail, with the rest of `req`.
async fn jailed_session(d: &Daemon, req: CreateSessionRequest) -> SessionView {
    let req = CreateSessionRequest {
        provider: "demo".into(),
        policy: Some(Policy::FullAccess),
        sandbox: Sandbox::Bwrap,
        ..req
    };
    let session = d.create_session(&req).await;
    assert_eq!(session.sandbox, Sandbox::Bwrap);
    session
}

/// A create request for a session in `cwd`.
fn in_cwd(cwd: &Path) -> CreateSessionRequest {
    CreateSessionRequest { cwd: Some(path_string(cwd)), ..Default::default() }
}

/// A create request for a session in a worktree of `repo`'s main.
fn in_worktree(repo: &Path) -> CreateSessionRequest {
    let workspace = WorkspaceRequest { repo: path_string(repo), branch: "main".into() };
    CreateSessionRequest { workspace: Some(workspace), ..Default::default() }
}

/// An unjailed full-access demo session in `cwd`; its id.
async fn open_session(d: &Daemon, cwd: &Path) -> String {
    let req = CreateSessionRequest { policy: Some(Policy::FullAccess), ..in_cwd(cwd) };
    d.create_session(&req).await.id.into_string()
}

/// Runs `command` as a demo turn and returns its command output and the
/// "command finished" notice.
async fn run(d: &Daemon, s: &str, command: &str) -> (String, String) {
    let t = d.start_turn(s, &format!("RUN: {command}")).await;
    d.wait_turn_end(s, &t).await;
    let events = d.events(Some(s), 0).await;
    let output = turn_text(&events, &t, Some(ChunkKind::CommandOutput));
    let notices = turn_text(&events, &t, Some(ChunkKind::Notice));
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
    let s = jailed_session(&d, in_cwd(&cwd)).await.id.into_string();

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
    let s = jailed_session(&d, in_cwd(dir.path())).await.id.into_string();

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
    let open = open_session(&d, dir.path()).await;
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
    let other =
        d.create_session(&CreateSessionRequest { policy: Some(Policy::FullAccess), ..in_worktree(&repo) }).await;
    let other_worktree = other.workspace.expect("a workspace").worktree;
    assert!(Path::new(&other_worktree).join("README.md").exists());

    // A jailed session with its own worktree, also in the data dir.
    let mine = jailed_session(&d, in_worktree(&repo)).await;
    let s = mine.id.as_str().to_string();
    let worktree = PathBuf::from(&mine.workspace.as_ref().expect("a workspace").worktree);
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
    let s = jailed_session(&d, in_cwd(dir.path())).await.id.into_string();
    // A sleep whose argument is unique to this test, to find it in /proc.
    let marker = format!("298.{}", std::process::id());
    let t = d.start_turn(&s, &format!("RUN: sleep {marker}; echo done")).await;
    wait_process_running(&format!("sleep {marker}")).await;
    d.interrupt(&s, &t).await;
    let done = d.wait_turn_end(&s, &t).await;
    assert_eq!(done.status, TurnStatus::Interrupted);
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
    let session = jailed_session(&d, CreateSessionRequest { network: true, ..in_cwd(dir.path()) }).await;
    assert!(session.network);
    let s = session.id.as_str().to_string();
    let (output, _) =
        run(&d, &s, &format!("bash -c 'exec 3<>/dev/tcp/127.0.0.1/{port} && echo CONNECTED || echo REFUSED'")).await;
    assert!(output.contains("CONNECTED"), "{output}");
    let closed = jailed_session(&d, in_cwd(dir.path())).await;
    assert!(!closed.network);
    let (output, _) = run(
        &d,
        closed.id.as_str(),
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
    let sessions = d.client().sessions(&Default::default()).await.expect("GET /api/v1/sessions");
    assert_eq!(sessions.sessions.len(), 0);
    // An agent Bosun does not know may run a local model: it can be jailed offline.
    d.create_session(&CreateSessionRequest { provider: "agent".into(), sandbox: Sandbox::Bwrap, ..in_cwd(dir.path()) })
        .await;
    let plain = d.create_session(&in_cwd(dir.path())).await;
    assert_eq!((plain.sandbox, plain.network), (Sandbox::None, false));
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
    let jailed = jailed_session(&d, in_cwd(dir.path())).await.id.into_string();
    let (output, _) = run(&d, &jailed, "env").await;
    assert!(output.contains("PATH="), "{output}");
    assert!(!output.contains("push-token-5d1e") && !output.contains("other-secret-77c2"), "{output}");

    let req = CreateSessionRequest {
        provider: "shell".into(),
        policy: Some(Policy::FullAccess),
        sandbox: Sandbox::Bwrap,
        ..in_cwd(dir.path())
    };
    let shell = d.create_session(&req).await;
    let s = shell.id.as_str();
    let t = d.start_turn(s, "env").await;
    let done = d.wait_turn_end(s, &t).await;
    let stdout = done.result.as_ref().map(|r| r.stdout.clone()).unwrap_or_default();
    assert!(stdout.contains("PATH="), "{done:?}");
    assert!(!stdout.contains("push-token-5d1e") && !stdout.contains("other-secret-77c2"), "{stdout}");

    // On the host a command sees the daemon's environment: the checks above
    // are the jail's doing.
    let open = open_session(&d, dir.path()).await;
    let (output, _) = run(&d, &open, "env").await;
    assert!(output.contains("other-secret-77c2"), "{output}");
}
