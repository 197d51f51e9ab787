//! The command-line client against a real daemon.

mod common;

use bosun_proto::{CreateSessionRequest, Sandbox, SessionList};
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
    let approval_id = approval.id.as_str();
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
    let list: SessionList = serde_json::from_slice(&out.stdout).expect("a session list as JSON");
    assert_eq!(list.sessions[0].id, id);
    let out = bosun(&d, &["events", "--session", &id, "--json"]);
    assert!(out.status.success());
    let lines: Vec<Envelope> =
        stdout(&out).lines().map(|l| serde_json::from_str(l).expect("one JSON event a line")).collect();
    assert_eq!(lines, d.events(Some(&id), 0).await);

    // Interrupt a slow turn from the CLI.
    let turn = d.start_turn(&id, "SLOW").await;
    d.wait_events(&id, "streaming", |evs| !chunks(evs, &turn).is_empty()).await;
    let out = bosun(&d, &["interrupt", &id]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(d.wait_turn_end(&id, &turn).await.status, TurnStatus::Interrupted);

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

/// A configured agent whose program is not there: listed as `missing` by the
/// API and `bosun providers`, and a turn on it fails with a reason that
/// names the program, while the daemon and other sessions carry on.
#[tokio::test]
async fn a_provider_whose_program_is_missing_is_listed_so_and_fails_turns_clearly() {
    let dir = tempdir();
    let config = r#"
        discover_agents = false
        [providers.ghost]
        kind = "acp"
        command = "/nonexistent/ghost-agent"
        startup_timeout_secs = 5
    "#;
    let d = Daemon::start(&dir.path().join("data"), Options { config: Some(config.into()), ..Options::default() });

    let list = d.client().providers().await.expect("GET /api/v1/providers");
    let find = |name: &str| list.providers.iter().find(|p| p.name == name).cloned().expect("a listed provider");
    let ghost = find("ghost");
    assert_eq!(ghost.status, "missing", "{ghost:?}");
    assert_eq!(ghost.kind, "acp");
    assert_eq!(ghost.origin, "config");
    assert!(ghost.capabilities.load_session, "{ghost:?}");
    assert_eq!(find("demo").status, "available");

    let out = bosun(&d, &["providers"]);
    assert!(out.status.success(), "{out:?}");
    let table = stdout(&out);
    let line = table.lines().find(|l| l.starts_with("ghost")).unwrap_or_else(|| panic!("{table}"));
    assert!(line.contains("missing") && line.contains("/nonexistent/ghost-agent"), "{table}");

    let req = CreateSessionRequest {
        provider: "ghost".into(),
        cwd: Some(path_string(dir.path())),
        policy: Some(Policy::PlanOnly),
        ..Default::default()
    };
    let session = d.create_session(&req).await;
    let s = session.id.as_str();
    let t = d.start_turn(s, "hello").await;
    let done = d.wait_turn_end(s, &t).await;
    assert_eq!(done.status, TurnStatus::Failed, "{done:?}");
    let reason = done.reason.as_deref().unwrap_or("");
    assert!(reason.contains("/nonexistent/ghost-agent"), "the reason names the program: {reason}");

    // The worker is still there for the next turn, which fails the same way.
    let t2 = d.start_turn(s, "again").await;
    assert_eq!(d.wait_turn_end(s, &t2).await.status, TurnStatus::Failed);
    let demo = d.new_session(dir.path(), Policy::PlanOnly).await;
    let t3 = d.start_turn(&demo, "still fine").await;
    assert_eq!(d.wait_turn_end(&demo, &t3).await.status, TurnStatus::Completed);
}

#[tokio::test]
async fn a_shell_session_from_the_cli_runs_jailed_and_exits_with_the_commands_code() {
    let dir = tempdir();
    let d = Daemon::start(&dir.path().join("data"), Options::default());
    let cwd = dir.path().to_str().unwrap();
    let args = ["session", "new", "--provider", "shell", "--sandbox", "bwrap", "--policy", "full-access", "--cwd", cwd];
    let out = bosun(&d, &args);
    assert!(out.status.success(), "{out:?}");
    let id = stdout(&out).trim().to_string();
    let session = d.client().session(&id).await.expect("GET the session").session;
    assert_eq!((session.provider.as_str(), session.sandbox), ("shell", Sandbox::Bwrap));

    let out = bosun(&d, &["send", &id, "echo from-the-shell; exit 3", "--wait"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(stdout(&out).contains("from-the-shell"), "{}", stdout(&out));
    let out = bosun(&d, &["send", &id, "true", "--wait"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    // The network flag without a sandbox is refused by the daemon, whose words reach stderr.
    let out = bosun(&d, &["session", "new", "--network", "--cwd", cwd]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("sandbox"), "{out:?}");
}

#[tokio::test]
async fn a_workspace_session_from_the_cli_and_its_worktree_kept_or_removed() {
    let dir = tempdir();
    let repo = repo_with(&dir.path().join("repo"), &[("README", "hi\n")]);
    let d = Daemon::start(&dir.path().join("data"), Options::default());
    let new_session = || {
        let out = bosun(&d, &["session", "new", "--repo", repo.to_str().unwrap(), "--branch", "main"]);
        assert!(out.status.success(), "{out:?}");
        stdout(&out).trim().to_string()
    };
    let worktree = |id: &str| dir.path().join("data/worktrees").join(id);
    let branches = || git(&repo_clone(&dir.path().join("data")), &["branch", "--list", "bosun/*"]);

    let removed = new_session();
    let kept = new_session();
    assert!(worktree(&removed).join("README").exists() && worktree(&kept).join("README").exists());
    let out = bosun(&d, &["session", "rm", &removed]);
    assert!(out.status.success(), "{out:?}");
    let out = bosun(&d, &["session", "rm", "--keep-worktree", &kept]);
    assert!(out.status.success(), "{out:?}");
    assert!(!worktree(&removed).exists(), "the worktree of a plain rm is still there");
    assert!(worktree(&kept).join("README").exists(), "--keep-worktree removed the worktree");
    let listed = branches();
    assert!(listed.contains(&format!("bosun/{kept}")) && !listed.contains(&format!("bosun/{removed}")), "{listed}");
}

/// The one bare clone the daemon keeps under `<data>/repos`.
fn repo_clone(data: &std::path::Path) -> std::path::PathBuf {
    let clones: Vec<_> = std::fs::read_dir(data.join("repos")).unwrap().flatten().map(|e| e.path()).collect();
    assert_eq!(clones.len(), 1, "{clones:?}");
    clones.into_iter().next().unwrap()
}

/// A provider of a kind no driver implements stops the daemon at start,
/// with a message that names the kind and the kinds there are.
#[test]
fn a_provider_of_an_unknown_kind_stops_the_daemon_at_start_naming_the_known_kinds() {
    let dir = tempdir();
    let config = dir.path().join("bosun.toml");
    std::fs::write(&config, "[providers.term]\nkind = \"pty\"\ncommand = \"/bin/sh\"\n").unwrap();
    let out = std::process::Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .arg("--config")
        .arg(&config)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run bosun serve");
    assert!(!out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("`pty`"), "{stderr}");
    for kind in ["acp", "codex-app-server", "demo", "shell"] {
        assert!(stderr.contains(kind), "{kind} is not named: {stderr}");
    }
}
