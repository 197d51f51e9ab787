//! Workspaces: a git worktree per session, the file API on it, and the
//! paths that must never get out of it.

mod common;

use common::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// A repository on branch main with one commit; `ignored/` is in .gitignore.
fn make_repo(root: &Path) -> PathBuf {
    let files = [("README.md", "hello needle\n"), ("src/lib.txt", "one\ntwo needle\n"), (".gitignore", "ignored/\n")];
    repo_with(&root.join("origin"), &files)
}

async fn workspace_session(d: &Daemon, repo: &Path, policy: &str) -> Value {
    let (status, body) = d
        .post(
            "/api/v1/sessions",
            json!({"provider":"demo","policy":policy,"workspace":{"repo": repo, "branch":"main"}}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    body
}

async fn put(d: &Daemon, path: &str, body: Value) -> (u16, Value) {
    d.request(reqwest::Method::PUT, path, Some(body)).await
}

async fn delete(d: &Daemon, path: &str) -> (u16, Value) {
    d.request(reqwest::Method::DELETE, path, None).await
}

fn file_events(events: &[Value]) -> Vec<&Value> {
    events.iter().filter(|e| e["type"] == "file:written" || e["type"] == "file:deleted").collect()
}

#[tokio::test]
async fn worktree_lifecycle() {
    let dir = tempdir();
    let repo = make_repo(dir.path());
    let data = dir.path().join("data");
    let d = Daemon::start(&data, Options::default());

    let session = workspace_session(&d, &repo, "full-access").await;
    let s = session["id"].as_str().unwrap().to_string();
    let worktree = PathBuf::from(session["workspace"]["worktree"].as_str().unwrap());
    assert_eq!(session["cwd"], session["workspace"]["worktree"]);
    assert_eq!(worktree, data.join("worktrees").join(&s));
    assert_eq!(session["workspace"]["branch"], "main");
    assert_eq!(session["workspace"]["base"], git(&repo, &["rev-parse", "main"]));
    assert_eq!(git(&worktree, &["rev-parse", "--abbrev-ref", "HEAD"]), format!("bosun/{s}"));

    // Listing and reading.
    let listing = d.ok_get(&format!("/api/v1/sessions/{s}/files")).await;
    let names: Vec<&str> = listing["entries"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(names, vec![".gitignore", "README.md", "src"], "{listing}");
    let src = &listing["entries"][2];
    assert_eq!(src["kind"], "dir");
    let listing = d.ok_get(&format!("/api/v1/sessions/{s}/files?path=src")).await;
    assert_eq!(listing["entries"][0], json!({"name":"lib.txt","kind":"file","size":15}));
    let file = d.ok_get(&format!("/api/v1/sessions/{s}/file?path=src/lib.txt")).await;
    assert_eq!(file, json!({"path":"src/lib.txt","content":"one\ntwo needle\n"}));
    let (status, _) = d.get(&format!("/api/v1/sessions/{s}/file?path=missing.txt")).await;
    assert_eq!(status, 404);

    // Writing (a new file in a new directory, and an existing file), deleting.
    let (status, body) =
        put(&d, &format!("/api/v1/sessions/{s}/file?path=new/dir/a.txt"), json!({"content":"fresh needle\n"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(std::fs::read_to_string(worktree.join("new/dir/a.txt")).unwrap(), "fresh needle\n");
    let (status, body) =
        put(&d, &format!("/api/v1/sessions/{s}/file?path=README.md"), json!({"content":"changed\n"})).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = delete(&d, &format!("/api/v1/sessions/{s}/file?path=src/lib.txt")).await;
    assert_eq!(status, 200, "{body}");
    assert!(!worktree.join("src/lib.txt").exists());
    let (status, _) = put(&d, &format!("/api/v1/sessions/{s}/file?path=x.txt"), json!({"content":"x","extra":1})).await;
    assert_eq!(status, 400, "unknown fields are refused");

    // Every write and delete is on the session's topic, with its size.
    let events = d.events(Some(&s), 0).await;
    let audit: Vec<(String, String, u64)> = file_events(&events)
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap().into(),
                e["data"]["path"].as_str().unwrap().into(),
                e["data"]["bytes"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        audit,
        vec![
            ("file:written".into(), "new/dir/a.txt".into(), 13),
            ("file:written".into(), "README.md".into(), 8),
            ("file:deleted".into(), "src/lib.txt".into(), 15),
        ]
    );

    // Search finds tracked and untracked files, not ignored ones.
    std::fs::create_dir_all(worktree.join("ignored")).unwrap();
    std::fs::write(worktree.join("ignored/secret.txt"), "needle in ignored\n").unwrap();
    let found = d.ok_get(&format!("/api/v1/sessions/{s}/search?q=needle")).await;
    assert_eq!(found["results"], json!([{"path":"new/dir/a.txt","line":1,"text":"fresh needle"}]), "{found}");

    // Diff against the base: the edit, the deletion and the untracked file.
    let diff = d.ok_get(&format!("/api/v1/sessions/{s}/diff")).await;
    let text = diff["diff"].as_str().unwrap();
    assert!(text.contains("+changed") && text.contains("-hello needle"), "{text}");
    assert!(text.contains("deleted file mode") && text.contains("src/lib.txt"), "{text}");
    assert!(text.contains("+fresh needle"), "{text}");
    assert!(!text.contains("secret"), "{text}");

    // A demo turn runs its command in the worktree.
    let t = d.start_turn(&s, "RUN: ls").await;
    let done = d.wait_turn_end(&s, &t).await;
    assert_eq!(done["data"]["status"], "completed");
    let events = d.events(Some(&s), 0).await;
    let output = turn_text(&events, &t, Some("command_output"));
    assert!(output.contains("README.md") && output.contains("new"), "{output}");

    // The audit trail: files written through the API and commands run, in
    // order, with what they wrote, paged like the event log.
    let audit = d.ok_get(&format!("/api/v1/sessions/{s}/audit")).await;
    let kinds: Vec<&str> = audit["events"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["file:written", "file:written", "file:deleted", "command:ran"], "{audit}");
    let ran = &audit["events"][3]["data"]["command"];
    assert_eq!((ran["command"].as_str(), ran["exit_code"].as_i64()), (Some("ls"), Some(0)), "{ran}");
    assert_eq!(ran["stdout_bytes"].as_u64(), Some(output.len() as u64), "{ran}");
    assert_eq!(ran["cwd"].as_str(), Some(worktree.to_str().unwrap()));
    let first = d.ok_get(&format!("/api/v1/sessions/{s}/audit?limit=3")).await;
    assert_eq!(first["events"].as_array().map(Vec::len), Some(3));
    let rest = d.ok_get(&format!("/api/v1/sessions/{s}/audit?since={}", first["next"])).await;
    assert_eq!(
        rest["events"].as_array().map(|e| e.iter().map(|e| e["type"].clone()).collect::<Vec<_>>()),
        Some(vec![json!("command:ran")])
    );
    let (status, _) = d.get("/api/v1/sessions/s_000000000000/audit").await;
    assert_eq!(status, 404);
    let (status, _) = d.get(&format!("/api/v1/sessions/{s}/audit?limit=0")).await;
    assert_eq!(status, 400);

    // Commit: a commit on bosun/<id>, and nothing left to commit after it.
    let (status, body) = d.post(&format!("/api/v1/sessions/{s}/commit"), json!({"message":"session work"})).await;
    assert_eq!(status, 200, "{body}");
    let sha = body["sha"].as_str().unwrap();
    assert_eq!(body["branch"], format!("bosun/{s}"));
    assert_eq!(body["pushed"], false);
    assert_eq!(git(&worktree, &["rev-parse", &format!("bosun/{s}")]), sha);
    assert_eq!(git(&worktree, &["log", "-1", "--format=%s"]), "session work");
    let (status, _) = d.post(&format!("/api/v1/sessions/{s}/commit"), json!({"message":"again"})).await;
    assert_eq!(status, 409);
    // The ignored file was not committed.
    assert!(!git(&worktree, &["ls-files"]).contains("secret"));

    // Delete with remove (the default): worktree and branch gone.
    let bare = std::fs::read_dir(data.join("repos")).unwrap().next().unwrap().unwrap().path();
    let (status, body) = delete(&d, &format!("/api/v1/sessions/{s}")).await;
    assert_eq!(status, 200, "{body}");
    assert!(!worktree.exists());
    assert_eq!(git(&bare, &["branch", "--list", &format!("bosun/{s}")]), "");

    // A second session on the same repo reuses (and fetches into) the bare clone;
    // deleting it with keep leaves worktree and branch.
    std::fs::write(repo.join("later.txt"), "later\n").unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "--quiet", "-m", "second"]);
    let session = workspace_session(&d, &repo, "plan-only").await;
    let s2 = session["id"].as_str().unwrap().to_string();
    let worktree2 = PathBuf::from(session["workspace"]["worktree"].as_str().unwrap());
    assert!(worktree2.join("later.txt").exists(), "the bare clone was fetched");
    assert_eq!(std::fs::read_dir(data.join("repos")).unwrap().count(), 1);
    let (status, body) = delete(&d, &format!("/api/v1/sessions/{s2}?worktree=keep")).await;
    assert_eq!(status, 200, "{body}");
    assert!(worktree2.join("later.txt").exists());
    assert_eq!(
        git(&bare, &["branch", "--list", "--format=%(refname:short)", &format!("bosun/{s2}")]),
        format!("bosun/{s2}")
    );
    let (status, _) = d.get(&format!("/api/v1/sessions/{s2}")).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn paths_leaving_the_worktree_are_refused() {
    let dir = tempdir();
    let repo = make_repo(dir.path());
    let data = dir.path().join("data");
    let d = Daemon::start(&data, Options::default());
    let session = workspace_session(&d, &repo, "plan-only").await;
    let s = session["id"].as_str().unwrap().to_string();
    let worktree = PathBuf::from(session["workspace"]["worktree"].as_str().unwrap());
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
    let plain = d.new_session(dir.path(), "plan-only").await;
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
    let http = d.http.clone();
    let url = format!("{}/api/v1/sessions", d.url);
    let hanging = tokio::spawn(async move {
        let body = json!({"workspace": {"repo": format!("http://127.0.0.1:{port}/never.git"), "branch": "main"}});
        http.post(url).json(&body).send().await.map(|r| r.status().as_u16())
    });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(!hanging.is_finished(), "the clone was expected to hang");
    let started = std::time::Instant::now();
    let created =
        tokio::time::timeout(std::time::Duration::from_secs(20), d.new_session(dir.path(), "plan-only")).await;
    assert!(created.is_ok(), "a plain session could not be created while a clone hung ({:?})", started.elapsed());
    let list = d.ok_get("/api/v1/sessions").await;
    assert_eq!(list["sessions"].as_array().map(Vec::len), Some(1), "only the plain session exists yet: {list}");
    hanging.abort();
}

#[tokio::test]
async fn commit_with_push_sends_the_session_branch_to_the_origin() {
    let dir = tempdir();
    let repo = make_repo(dir.path());
    let d = Daemon::start(&dir.path().join("data"), Options::default());
    let s = workspace_session(&d, &repo, "plan-only").await["id"].as_str().unwrap().to_string();
    let branch = format!("bosun/{s}");

    let (status, _) = put(&d, &format!("/api/v1/sessions/{s}/file?path=a.txt"), json!({"content": "a\n"})).await;
    assert_eq!(status, 200);
    let (status, body) = d.post(&format!("/api/v1/sessions/{s}/commit"), json!({"message": "a", "push": true})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!((body["pushed"].as_bool(), body.get("push_error")), (Some(true), None), "{body}");
    assert_eq!(git(&repo, &["rev-parse", &branch]), body["sha"].as_str().unwrap());

    // Without `push`, the origin does not move.
    put(&d, &format!("/api/v1/sessions/{s}/file?path=b.txt"), json!({"content": "b\n"})).await;
    let (_, local) = d.post(&format!("/api/v1/sessions/{s}/commit"), json!({"message": "b"})).await;
    assert_eq!(local["pushed"], false, "{local}");
    assert_ne!(git(&repo, &["rev-parse", &branch]), local["sha"].as_str().unwrap());

    // An origin that is gone: the commit stands, the push failure is said.
    std::fs::rename(&repo, dir.path().join("moved")).unwrap();
    put(&d, &format!("/api/v1/sessions/{s}/file?path=c.txt"), json!({"content": "c\n"})).await;
    let (status, body) = d.post(&format!("/api/v1/sessions/{s}/commit"), json!({"message": "c", "push": true})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["pushed"], false, "{body}");
    assert!(body["push_error"].as_str().is_some_and(|e| e.contains("push")), "{body}");
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
    let session = workspace_session(&d, &repo, "plan-only").await;
    let s = session["id"].as_str().unwrap().to_string();
    let worktree = PathBuf::from(session["workspace"]["worktree"].as_str().unwrap());
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

    let file = d.ok_get(&format!("/api/v1/sessions/{s}/file?path=inner/readme")).await;
    assert_eq!(file["content"], "hello needle\n", "{file}");
    let (status, body) =
        put(&d, &format!("/api/v1/sessions/{s}/file?path=inner/made/new.txt"), json!({"content":"new\n"})).await;
    assert_eq!(status, 200, "{body}");
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
    let session = workspace_session(&d, &repo, "plan-only").await;
    let s = session["id"].as_str().unwrap().to_string();
    let worktree = PathBuf::from(session["workspace"]["worktree"].as_str().unwrap());

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
    let diff = d.ok_get(&format!("/api/v1/sessions/{s}/diff")).await;
    assert!(diff["diff"].as_str().unwrap().contains("+work"), "{diff}");
    let found = d.ok_get(&format!("/api/v1/sessions/{s}/search?q=needle")).await;
    assert!(!found["results"].as_array().unwrap().is_empty(), "{found}");
    let (status, body) = d.post(&format!("/api/v1/sessions/{s}/commit"), json!({"message": "work"})).await;
    assert_eq!(status, 200, "{body}");
    assert!(!proof.exists(), "the daemon's git ran the forged git dir's fsmonitor");
    // The commit landed on the session branch in the daemon's clone, not in the fake.
    let bare = std::fs::read_dir(dir.path().join("data/repos")).unwrap().next().unwrap().unwrap().path();
    assert_eq!(git(&bare, &["rev-parse", &format!("bosun/{s}")]), body["sha"].as_str().unwrap());
}

/// The worktree is the agent's while a turn runs: the file API's changes
/// (write, delete, commit) are refused with 409 `busy` and change nothing;
/// once the turn has ended they go through, and reads work throughout.
#[tokio::test]
async fn file_changes_wait_for_the_turn_to_end() {
    let dir = tempdir();
    let repo = make_repo(dir.path());
    let d = Daemon::start(&dir.path().join("data"), Options::default());
    let session = workspace_session(&d, &repo, "full-access").await;
    let s = session["id"].as_str().unwrap();
    let worktree = PathBuf::from(session["workspace"]["worktree"].as_str().unwrap());
    let t = d.start_turn(s, "SLOW").await;

    let (status, body) = put(&d, &format!("/api/v1/sessions/{s}/file?path=during.txt"), json!({"content":"x"})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("busy")), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains(&t), "{body}");
    let (status, body) = delete(&d, &format!("/api/v1/sessions/{s}/file?path=README.md")).await;
    assert_eq!(status, 409, "{body}");
    let (status, body) = d.post(&format!("/api/v1/sessions/{s}/commit"), json!({"message":"during"})).await;
    assert_eq!(status, 409, "{body}");
    assert!(!worktree.join("during.txt").exists() && worktree.join("README.md").exists());
    let read = d.ok_get(&format!("/api/v1/sessions/{s}/file?path=README.md")).await;
    assert_eq!(read["content"], "hello needle\n");

    let (status, _) = d.post(&format!("/api/v1/sessions/{s}/turns/{t}/interrupt"), json!({})).await;
    assert_eq!(status, 202);
    assert_eq!(d.wait_turn_end(s, &t).await["data"]["status"], "interrupted");
    let (status, body) = put(&d, &format!("/api/v1/sessions/{s}/file?path=after.txt"), json!({"content":"y"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(std::fs::read_to_string(worktree.join("after.txt")).unwrap(), "y");
    let events = d.events(Some(s), 0).await;
    let written: Vec<&str> = file_events(&events).iter().map(|e| e["data"]["path"].as_str().unwrap()).collect();
    assert_eq!(written, ["after.txt"], "only the change made after the turn is on record");
}
