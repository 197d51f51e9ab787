//! Workspaces: a git worktree per session, the file API on it, and the
//! paths that must never get out of it.

mod common;

use bosun_proto::query::{AuditQuery, DeleteSessionQuery, PathQuery, SearchQuery};
use bosun_proto::{
    CommitRequest, CreateSessionRequest, FileContent, FileEntry, SearchHit, SessionView, WorkspaceRequest,
};
use common::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// A repository on branch main with one commit; `ignored/` is in .gitignore.
fn make_repo(root: &Path) -> PathBuf {
    let files = [("README.md", "hello needle\n"), ("src/lib.txt", "one\ntwo needle\n"), (".gitignore", "ignored/\n")];
    repo_with(&root.join("origin"), &files)
}

fn workspace_request(repo: &Path, policy: Policy) -> CreateSessionRequest {
    let workspace = WorkspaceRequest { repo: path_string(repo), branch: "main".into() };
    CreateSessionRequest {
        provider: "demo".into(),
        policy: Some(policy),
        workspace: Some(workspace),
        ..Default::default()
    }
}

async fn workspace_session(d: &Daemon, repo: &Path, policy: Policy) -> SessionView {
    d.create_session(&workspace_request(repo, policy)).await
}

/// The session's worktree.
fn worktree_of(session: &SessionView) -> PathBuf {
    PathBuf::from(&session.workspace.as_ref().unwrap_or_else(|| panic!("no workspace: {session:?}")).worktree)
}

/// A raw PUT, for paths and bodies the daemon must refuse.
async fn put(d: &Daemon, path: &str, body: Value) -> (u16, Value) {
    d.request(reqwest::Method::PUT, path, Some(body)).await
}

/// A raw DELETE, for paths the daemon must refuse.
async fn delete(d: &Daemon, path: &str) -> (u16, Value) {
    d.request(reqwest::Method::DELETE, path, None).await
}

/// Writes a file through the API, which must succeed.
async fn write(d: &Daemon, s: &str, path: &str, content: &str) {
    let written = d.client().write_file(s, path, content).await.unwrap_or_else(|e| panic!("PUT {path}: {e}"));
    assert_eq!((written.path.as_str(), written.bytes), (path, content.len() as u64), "{written:?}");
}

async fn commit(
    d: &Daemon,
    s: &str,
    message: &str,
    push: bool,
) -> Result<bosun_proto::CommitResponse, bosun_client::ClientError> {
    d.client().commit(s, &CommitRequest { message: message.into(), push }).await
}

/// The file API's events: (type, path, bytes).
fn file_events(events: &[Envelope]) -> Vec<(EventType, String, u64)> {
    events
        .iter()
        .filter_map(|e| match payload(e) {
            EventData::FileWritten(f) | EventData::FileDeleted(f) => Some((e.kind.clone(), f.path, f.bytes)),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn worktree_lifecycle() {
    let dir = tempdir();
    let repo = make_repo(dir.path());
    let data = dir.path().join("data");
    let d = Daemon::start(&data, Options::default());

    let session = workspace_session(&d, &repo, Policy::FullAccess).await;
    let s = session.id.as_str().to_string();
    let workspace = session.workspace.as_ref().expect("a workspace");
    let worktree = worktree_of(&session);
    assert_eq!(session.cwd, workspace.worktree);
    assert_eq!(worktree, data.join("worktrees").join(&s));
    assert_eq!(workspace.branch, "main");
    assert_eq!(workspace.base, git(&repo, &["rev-parse", "main"]));
    assert_eq!(git(&worktree, &["rev-parse", "--abbrev-ref", "HEAD"]), format!("bosun/{s}"));

    // Listing and reading.
    let client = d.client();
    let listing = client.files(&s, &PathQuery::default()).await.expect("GET files");
    let names: Vec<&str> = listing.entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, vec![".gitignore", "README.md", "src"], "{listing:?}");
    let src = &listing.entries[2];
    assert_eq!(src.kind, "dir");
    let listing = client.files(&s, &PathQuery { path: "src".into() }).await.expect("GET files?path=src");
    assert_eq!(listing.entries[0], FileEntry { name: "lib.txt".into(), kind: "file".into(), size: 15 });
    let file = client.read_file(&s, "src/lib.txt").await.expect("GET file");
    assert_eq!(file, FileContent { path: "src/lib.txt".into(), content: "one\ntwo needle\n".into() });
    let err = client.read_file(&s, "missing.txt").await.expect_err("a missing file");
    assert_eq!(err.status(), Some(404), "{err}");

    // Writing (a new file in a new directory, and an existing file), deleting.
    write(&d, &s, "new/dir/a.txt", "fresh needle\n").await;
    assert_eq!(std::fs::read_to_string(worktree.join("new/dir/a.txt")).unwrap(), "fresh needle\n");
    write(&d, &s, "README.md", "changed\n").await;
    let deleted = client.delete_file(&s, "src/lib.txt").await.expect("DELETE file");
    assert!(deleted.deleted && deleted.path == "src/lib.txt" && deleted.bytes == 15, "{deleted:?}");
    assert!(!worktree.join("src/lib.txt").exists());
    let (status, _) = put(&d, &format!("/api/v1/sessions/{s}/file?path=x.txt"), json!({"content":"x","extra":1})).await;
    assert_eq!(status, 400, "unknown fields are refused");

    // Every write and delete is on the session's topic, with its size.
    let events = d.events(Some(&s), 0).await;
    assert_eq!(
        file_events(&events),
        vec![
            (EventType::FileWritten, "new/dir/a.txt".into(), 13),
            (EventType::FileWritten, "README.md".into(), 8),
            (EventType::FileDeleted, "src/lib.txt".into(), 15),
        ]
    );

    // Search finds tracked and untracked files, not ignored ones.
    std::fs::create_dir_all(worktree.join("ignored")).unwrap();
    std::fs::write(worktree.join("ignored/secret.txt"), "needle in ignored\n").unwrap();
    let found = client.search(&s, &SearchQuery { q: "needle".into() }).await.expect("GET search");
    let hit = SearchHit { path: "new/dir/a.txt".into(), line: 1, text: "fresh needle".into() };
    assert_eq!(found.results, vec![hit], "{found:?}");

    // Diff against the base: the edit, the deletion and the untracked file.
    let diff = client.diff(&s).await.expect("GET diff");
    let text = diff.diff.as_str();
    assert!(text.contains("+changed") && text.contains("-hello needle"), "{text}");
    assert!(text.contains("deleted file mode") && text.contains("src/lib.txt"), "{text}");
    assert!(text.contains("+fresh needle"), "{text}");
    assert!(!text.contains("secret"), "{text}");

    // A demo turn runs its command in the worktree.
    let t = d.start_turn(&s, "RUN: ls").await;
    let done = d.wait_turn_end(&s, &t).await;
    assert_eq!(done.status, TurnStatus::Completed);
    let events = d.events(Some(&s), 0).await;
    let output = turn_text(&events, &t, Some(ChunkKind::CommandOutput));
    assert!(output.contains("README.md") && output.contains("new"), "{output}");

    // The audit trail: files written through the API and commands run, in
    // order, with what they wrote, paged like the event log.
    let audit = client.audit(&s, &AuditQuery::default()).await.expect("GET audit");
    let kinds: Vec<&EventType> = audit.events.iter().map(|e| &e.kind).collect();
    let want = [EventType::FileWritten, EventType::FileWritten, EventType::FileDeleted, EventType::CommandRan];
    assert_eq!(kinds, want.iter().collect::<Vec<_>>(), "{audit:?}");
    let ran = data_of!(&audit.events[3], CommandRan).command;
    assert_eq!((ran.command.as_str(), ran.exit_code), ("ls", Some(0)), "{ran:?}");
    assert_eq!(ran.stdout_bytes, output.len() as u64, "{ran:?}");
    assert_eq!(ran.cwd, worktree.to_str().unwrap());
    let first = client.audit(&s, &AuditQuery { limit: Some(3), ..Default::default() }).await.expect("audit?limit=3");
    assert_eq!(first.events.len(), 3);
    let rest = client.audit(&s, &AuditQuery { since: first.next, ..Default::default() }).await.expect("audit?since");
    assert_eq!(rest.events.iter().map(|e| e.kind.clone()).collect::<Vec<_>>(), vec![EventType::CommandRan]);
    let err = client.audit("s_000000000000", &AuditQuery::default()).await.expect_err("no such session");
    assert_eq!(err.status(), Some(404), "{err}");
    let (status, _) = d.get(&format!("/api/v1/sessions/{s}/audit?limit=0")).await;
    assert_eq!(status, 400);

    // Commit: a commit on bosun/<id>, and nothing left to commit after it.
    let committed = commit(&d, &s, "session work", false).await.expect("commit");
    let sha = committed.sha.as_str();
    assert_eq!(committed.branch, format!("bosun/{s}"));
    assert!(!committed.pushed);
    assert_eq!(git(&worktree, &["rev-parse", &format!("bosun/{s}")]), sha);
    assert_eq!(git(&worktree, &["log", "-1", "--format=%s"]), "session work");
    let err = commit(&d, &s, "again", false).await.expect_err("nothing to commit");
    assert_eq!(err.status(), Some(409), "{err}");
    // The ignored file was not committed.
    assert!(!git(&worktree, &["ls-files"]).contains("secret"));

    // Delete with remove (the default): worktree and branch gone.
    let bare = std::fs::read_dir(data.join("repos")).unwrap().next().unwrap().unwrap().path();
    let deleted = client.delete_session(&s, &DeleteSessionQuery::default()).await.expect("DELETE the session");
    assert!(deleted.deleted, "{deleted:?}");
    assert!(!worktree.exists());
    assert_eq!(git(&bare, &["branch", "--list", &format!("bosun/{s}")]), "");

    // A second session on the same repo reuses (and fetches into) the bare clone;
    // deleting it with keep leaves worktree and branch.
    std::fs::write(repo.join("later.txt"), "later\n").unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "--quiet", "-m", "second"]);
    let session = workspace_session(&d, &repo, Policy::PlanOnly).await;
    let s2 = session.id.as_str().to_string();
    let worktree2 = worktree_of(&session);
    assert!(worktree2.join("later.txt").exists(), "the bare clone was fetched");
    assert_eq!(std::fs::read_dir(data.join("repos")).unwrap().count(), 1);
    let keep = DeleteSessionQuery { worktree: Some("keep".into()) };
    let deleted = client.delete_session(&s2, &keep).await.expect("DELETE ?worktree=keep");
    assert!(deleted.deleted, "{deleted:?}");
    assert!(worktree2.join("later.txt").exists());
    assert_eq!(
        git(&bare, &["branch", "--list", "--format=%(refname:short)", &format!("bosun/{s2}")]),
        format!("bosun/{s2}")
    );
    let err = client.session(&s2).await.expect_err("a deleted session");
    assert_eq!(err.status(), Some(404), "{err}");
}

#[tokio::test]
async fn paths_leaving_the_worktree_are_refused() {
    let dir = tempdir();
    let repo = make_repo(dir.path());
    let data = dir.path().join("data");
    let d = Daemon::start(&data, Options::default());
    let session = workspace_session(&d, &repo, Policy::PlanOnly).await;
    let s = session.id.as_str().to_string();
    let worktree = worktree_of(&session);
    std::os::unix::fs::symlink("/etc", worktree.join("etc")).unwrap();
    std::fs::write(dir.path().join("outside.txt"), "outside\n").unwrap();
    let before = git(&worktree, &["status", "--porcelain", "--ignored"]);

    let forms = [
        "../x",
        "/etc/passwd",
        "%2e%2e/x",
        "%2e%2e%2fx",
        "%252e%252e/x",
        "a/../../x",
        "../../../outside.txt",
        "etc/passwd",
        "etc",
        ".git",
        ".git/config",
        "src/../.git/HEAD",
    ];
    for form in forms {
        for (method, endpoint) in [("GET", "file"), ("PUT", "file"), ("DELETE", "file"), ("GET", "files")] {
            let path = format!("/api/v1/sessions/{s}/{endpoint}?path={form}");
            let (status, body) = match method {
                "GET" => d.get(&path).await,
                "PUT" => put(&d, &path, json!({"content":"pwned"})).await,
                _ => delete(&d, &path).await,
            };
            assert_eq!(status, 400, "{method} {form}: {body}");
            assert_eq!(body["error"]["code"], "bad_request", "{method} {form}: {body}");
        }
    }
    // Nothing changed anywhere.
    assert_eq!(git(&worktree, &["status", "--porcelain", "--ignored"]), before);
    assert_eq!(std::fs::read_to_string(dir.path().join("outside.txt")).unwrap(), "outside\n");
    assert!(!data.join("worktrees/x").exists() && !data.join("x").exists());
    assert!(file_events(&d.events(Some(&s), 0).await).is_empty());

    // Over 10 MB: 413, for a write and for a read.
    let big = "a".repeat(11 * 1024 * 1024);
    let (status, body) = put(&d, &format!("/api/v1/sessions/{s}/file?path=big.txt"), json!({"content": big})).await;
    assert_eq!(status, 413, "{body}");
    assert!(!worktree.join("big.txt").exists());
    std::fs::write(worktree.join("big2.txt"), &big).unwrap();
    let (status, body) = d.get(&format!("/api/v1/sessions/{s}/file?path=big2.txt")).await;
    assert_eq!(status, 413, "{body}");
    // Binary content is not returned as text.
    std::fs::write(worktree.join("bin.dat"), [0xff, 0xfe, 0x00, 0x01]).unwrap();
    let (status, body) = d.get(&format!("/api/v1/sessions/{s}/file?path=bin.dat")).await;
    assert_eq!(status, 415, "{body}");

    // A session without a workspace has no file API.
    let plain = d.new_session(dir.path(), Policy::PlanOnly).await;
    let (status, body) = d.get(&format!("/api/v1/sessions/{plain}/files")).await;
    assert_eq!(status, 409, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("no workspace"), "{body}");

    // A repo or branch that does not exist is the client's mistake.
    let (status, body) = d.post("/api/v1/sessions", json!({"workspace":{"repo": repo, "branch":"nope"}})).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) =
        d.post("/api/v1/sessions", json!({"workspace":{"repo": dir.path().join("none"), "branch":"main"}})).await;
    assert_eq!(status, 400, "{body}");
}

/// A clone that hangs (a remote that accepts and never answers) must not
/// hold up the daemon: other sessions are created meanwhile.
#[tokio::test]
async fn a_slow_clone_does_not_hold_up_other_creations() {
    let dir = tempdir();
    let d = Daemon::start(&dir.path().join("data"), Options::default());
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    // Accepts and keeps every connection open without a word.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in silent.incoming().flatten() {
            held.push(conn);
        }
    });
    let client = d.client();
    let hanging = tokio::spawn(async move {
        let workspace = WorkspaceRequest { repo: format!("http://127.0.0.1:{port}/never.git"), branch: "main".into() };
        client.create_session(&CreateSessionRequest { workspace: Some(workspace), ..Default::default() }).await
    });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(!hanging.is_finished(), "the clone was expected to hang");
    let started = std::time::Instant::now();
    let created =
        tokio::time::timeout(std::time::Duration::from_secs(20), d.new_session(dir.path(), Policy::PlanOnly)).await;
    assert!(created.is_ok(), "a plain session could not be created while a clone hung ({:?})", started.elapsed());
    let list = d.client().sessions(&Default::default()).await.expect("GET /api/v1/sessions");
    assert_eq!(list.sessions.len(), 1, "only the plain session exists yet: {list:?}");
    hanging.abort();
}

#[tokio::test]
async fn commit_with_push_sends_the_session_branch_to_the_origin() {
    let dir = tempdir();
    let repo = make_repo(dir.path());
    let d = Daemon::start(&dir.path().join("data"), Options::default());
    let s = workspace_session(&d, &repo, Policy::PlanOnly).await.id.into_string();
    let branch = format!("bosun/{s}");

    write(&d, &s, "a.txt", "a\n").await;
    // Raw: a push that went through has no `push_error` at all on the wire.
    let (status, body) = d.post(&format!("/api/v1/sessions/{s}/commit"), json!({"message": "a", "push": true})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!((body["pushed"].as_bool(), body.get("push_error")), (Some(true), None), "{body}");
    assert_eq!(git(&repo, &["rev-parse", &branch]), body["sha"].as_str().unwrap());

    // Without `push`, the origin does not move.
    write(&d, &s, "b.txt", "b\n").await;
    let local = commit(&d, &s, "b", false).await.expect("commit without push");
    assert!(!local.pushed, "{local:?}");
    assert_ne!(git(&repo, &["rev-parse", &branch]), local.sha);

    // An origin that is gone: the commit stands, the push failure is said.
    std::fs::rename(&repo, dir.path().join("moved")).unwrap();
    write(&d, &s, "c.txt", "c\n").await;
    let failed = commit(&d, &s, "c", true).await.expect("a commit whose push fails");
    assert!(!failed.pushed, "{failed:?}");
    assert!(failed.push_error.as_deref().is_some_and(|e| e.contains("push")), "{failed:?}");
    let (status, body) = d.post(&format!("/api/v1/sessions/{s}/commit"), json!({"message": "x", "push": "yes"})).await;
    assert_eq!(status, 400, "{body}");
}

/// Symlinks in the worktree are followed only while they stay inside it and
/// out of `.git`, whatever their form; the kernel does the resolving.
#[tokio::test]
async fn symlinks_are_followed_only_inside_the_worktree() {
    use std::os::unix::fs::symlink;
    let dir = tempdir();
    let repo = make_repo(dir.path());
    let d = Daemon::start(&dir.path().join("data"), Options::default());
    let session = workspace_session(&d, &repo, Policy::PlanOnly).await;
    let s = session.id.as_str().to_string();
    let worktree = worktree_of(&session);
    std::fs::create_dir_all(dir.path().join("outside")).unwrap();
    std::fs::write(dir.path().join("outside/secret.txt"), "secret\n").unwrap();
    symlink("src", worktree.join("inner")).unwrap();
    symlink("../README.md", worktree.join("src/readme")).unwrap();
    // The worktree is <tmp>/data/worktrees/<id>: three levels up is <tmp>.
    symlink("../../../outside", worktree.join("up")).unwrap();
    symlink(dir.path().join("outside"), worktree.join("abs")).unwrap();
    symlink(".git", worktree.join("gitlink")).unwrap();
    let git_file = std::fs::read_to_string(worktree.join(".git")).unwrap();
    assert!(worktree.join("up/secret.txt").exists(), "the link really leads outside");

    let file = d.client().read_file(&s, "inner/readme").await.expect("GET file?path=inner/readme");
    assert_eq!(file.content, "hello needle\n", "{file:?}");
    write(&d, &s, "inner/made/new.txt", "new\n").await;
    assert_eq!(std::fs::read_to_string(worktree.join("src/made/new.txt")).unwrap(), "new\n");

    for form in ["up/secret.txt", "abs/secret.txt", "up/new.txt", "up/made/new.txt", "up", "gitlink"] {
        for (method, endpoint) in [("GET", "file"), ("PUT", "file"), ("DELETE", "file"), ("GET", "files")] {
            let path = format!("/api/v1/sessions/{s}/{endpoint}?path={form}");
            let (status, body) = match method {
                "GET" => d.get(&path).await,
                "PUT" => put(&d, &path, json!({"content":"pwned"})).await,
                _ => delete(&d, &path).await,
            };
            assert_eq!(status, 400, "{method} {endpoint} {form}: {body}");
        }
    }
    let mut outside: Vec<_> =
        std::fs::read_dir(dir.path().join("outside")).unwrap().map(|e| e.unwrap().file_name()).collect();
    outside.sort();
    assert_eq!(outside, ["secret.txt"]);
    assert_eq!(std::fs::read_to_string(dir.path().join("outside/secret.txt")).unwrap(), "secret\n");
    assert_eq!(std::fs::read_to_string(worktree.join(".git")).unwrap(), git_file);
    assert!(
        std::fs::symlink_metadata(worktree.join("up")).is_ok()
            && std::fs::symlink_metadata(worktree.join("gitlink")).is_ok()
    );
}

/// Whoever works in a worktree can rewrite its `.git` file. The daemon's own
/// git commands must not follow it to a git dir the agent made, whose config
/// could run a command as the daemon (outside any jail).
#[tokio::test]
async fn the_daemons_git_ignores_a_forged_dot_git_in_the_worktree() {
    let dir = tempdir();
    let repo = make_repo(dir.path());
    let d = Daemon::start(&dir.path().join("data"), Options::default());
    let session = workspace_session(&d, &repo, Policy::PlanOnly).await;
    let s = session.id.as_str().to_string();
    let worktree = worktree_of(&session);

    // What a hostile agent would do: a git dir of its own, with a config
    // that runs a command on every status-like operation.
    let proof = dir.path().join("fsmonitor-ran");
    let fake = worktree.join("fake-git");
    git(&worktree, &["init", "--quiet", "--bare", fake.to_str().unwrap()]);
    let hook = dir.path().join("hook.sh");
    std::fs::write(&hook, format!("#!/bin/sh\ntouch {}\n", proof.display())).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    git(&fake, &["config", "core.fsmonitor", hook.to_str().unwrap()]);
    git(&fake, &["config", "core.bare", "false"]);
    std::fs::write(worktree.join(".git"), format!("gitdir: {}\n", fake.display())).unwrap();

    std::fs::write(worktree.join("work.txt"), "work\n").unwrap();
    let client = d.client();
    let diff = client.diff(&s).await.expect("GET diff");
    assert!(diff.diff.contains("+work"), "{diff:?}");
    let found = client.search(&s, &SearchQuery { q: "needle".into() }).await.expect("GET search");
    assert!(!found.results.is_empty(), "{found:?}");
    let committed = commit(&d, &s, "work", false).await.expect("commit");
    assert!(!proof.exists(), "the daemon's git ran the forged git dir's fsmonitor");
    // The commit landed on the session branch in the daemon's clone, not in the fake.
    let bare = std::fs::read_dir(dir.path().join("data/repos")).unwrap().next().unwrap().unwrap().path();
    assert_eq!(git(&bare, &["rev-parse", &format!("bosun/{s}")]), committed.sha);
}

/// The worktree is the agent's while a turn runs: the file API's changes
/// (write, delete, commit) are refused with 409 `busy` and change nothing;
/// once the turn has ended they go through, and reads work throughout.
#[tokio::test]
async fn file_changes_wait_for_the_turn_to_end() {
    let dir = tempdir();
    let repo = make_repo(dir.path());
    let d = Daemon::start(&dir.path().join("data"), Options::default());
    let session = workspace_session(&d, &repo, Policy::FullAccess).await;
    let s = session.id.as_str();
    let worktree = worktree_of(&session);
    let t = d.start_turn(s, "SLOW").await;

    let client = d.client();
    let err = client.write_file(s, "during.txt", "x").await.expect_err("a write during the turn");
    assert_eq!((err.status(), err.code()), (Some(409), Some("busy")), "{err}");
    let bosun_client::ClientError::Api { message, .. } = &err else { panic!("{err:?}") };
    assert!(message.contains(&t), "{err}");
    let err = client.delete_file(s, "README.md").await.expect_err("a delete during the turn");
    assert_eq!(err.status(), Some(409), "{err}");
    let err = commit(&d, s, "during", false).await.expect_err("a commit during the turn");
    assert_eq!(err.status(), Some(409), "{err}");
    assert!(!worktree.join("during.txt").exists() && worktree.join("README.md").exists());
    let read = client.read_file(s, "README.md").await.expect("a read during the turn");
    assert_eq!(read.content, "hello needle\n");

    d.interrupt(s, &t).await;
    assert_eq!(d.wait_turn_end(s, &t).await.status, TurnStatus::Interrupted);
    write(&d, s, "after.txt", "y").await;
    assert_eq!(std::fs::read_to_string(worktree.join("after.txt")).unwrap(), "y");
    let events = d.events(Some(s), 0).await;
    let written: Vec<String> = file_events(&events).into_iter().map(|(_, path, _)| path).collect();
    assert_eq!(written, ["after.txt"], "only the change made after the turn is on record");
}
