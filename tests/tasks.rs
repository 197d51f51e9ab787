//! Tasks kept in step both ways with docs/TASKS.md in a session's worktree,
//! on the real binary: API changes rewrite the file without losing what it
//! does not understand, edits of the file show up in the API, and a task's
//! status follows the workflow run started for it.

mod common;

use bosun_proto::query::EventsQuery;
use bosun_proto::*;
use common::{repo_with, tempdir, Daemon, Options};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

async fn wait<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn file(worktree: &Path) -> String {
    std::fs::read_to_string(worktree.join("docs/TASKS.md")).unwrap_or_default()
}

async fn titles(d: &Daemon, session: &str) -> Vec<(String, TaskStatus)> {
    let q = TasksQuery { session: Some(session.into()) };
    let mut v: Vec<(String, TaskStatus)> =
        d.client().tasks(&q).await.unwrap().tasks.into_iter().map(|t| (t.title, t.status)).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_and_their_file_follow_each_other_both_ways() {
    let dir = tempdir();
    let repo = repo_with(&dir.path().join("repo"), &[("README.md", "# project\n")]);
    let d = Daemon::start(&dir.path().join("data"), Options::default());
    let session = d
        .create_session(&CreateSessionRequest {
            policy: Some(Policy::FullAccess),
            workspace: Some(WorkspaceRequest { repo: repo.to_string_lossy().into(), branch: "main".into() }),
            ..Default::default()
        })
        .await;
    let sid = session.id.as_str().to_string();
    let worktree = PathBuf::from(&session.workspace.as_ref().unwrap().worktree);

    // Through the API: the file is made, with a heading and the task's id.
    let docs = d
        .client()
        .create_task(&CreateTaskRequest {
            title: "Write the docs".into(),
            session_id: Some(sid.clone().into()),
            run_id: None,
            status: None,
        })
        .await
        .unwrap();
    let text = wait("the file", async || Some(file(&worktree)).filter(|t| t.contains(&docs.id))).await;
    assert_eq!(text, format!("# Tasks\n\n- [ ] Write the docs <!-- bosun:{} -->\n", docs.id));

    // By hand: a new line, a ticked box, prose and a list that is not tasks.
    let edited = format!(
        "# Tasks\n\nWhat is left before the release.\n\n- [x] Write the docs <!-- bosun:{} -->\n- [ ] Added by hand\n\n## Notes\n- not a task\nkeep me\n",
        docs.id
    );
    std::fs::write(worktree.join("docs/TASKS.md"), &edited).unwrap();
    let got = wait("the edit in the API", async || {
        let t = titles(&d, &sid).await;
        (t == vec![("Added by hand".to_string(), TaskStatus::Todo), ("Write the docs".to_string(), TaskStatus::Done)])
            .then_some(t)
    })
    .await;
    assert_eq!(got.len(), 2);
    let by_hand = d
        .client()
        .tasks(&TasksQuery { session: Some(sid.clone()) })
        .await
        .unwrap()
        .tasks
        .into_iter()
        .find(|t| t.title == "Added by hand")
        .unwrap();
    // The new line got its id; everything else is as the person left it.
    let text = wait("the id written", async || Some(file(&worktree)).filter(|t| t.contains(&by_hand.id))).await;
    assert_eq!(
        text,
        edited.replace("- [ ] Added by hand\n", &format!("- [ ] Added by hand <!-- bosun:{} -->\n", by_hand.id))
    );

    // An API change rewrites only its line.
    d.client()
        .patch_task(&by_hand.id, &PatchTaskRequest { title: Some("Renamed".into()), status: None })
        .await
        .unwrap();
    let text =
        wait("the rename in the file", async || Some(file(&worktree)).filter(|t| t.contains("- [ ] Renamed <!--")))
            .await;
    assert!(
        text.contains("What is left before the release.\n") && text.contains("## Notes\n- not a task\nkeep me\n"),
        "{text}"
    );

    // A line deleted by hand removes its task; a task deleted through the API removes its line.
    std::fs::write(
        worktree.join("docs/TASKS.md"),
        text.lines().filter(|l| !l.contains("Renamed")).collect::<Vec<_>>().join("\n") + "\n",
    )
    .unwrap();
    wait("the removal in the API", async || (titles(&d, &sid).await.len() == 1).then_some(())).await;
    d.client().delete_task(&docs.id).await.unwrap();
    let text =
        // (A read while the daemon rewrites the file may see it empty.)
        wait("the removal in the file", async || Some(file(&worktree)).filter(|t| !t.is_empty() && !t.contains("Write the docs"))).await;
    assert!(text.contains("keep me"), "{text}");
    assert!(d.client().tasks(&TasksQuery { session: Some(sid.clone()) }).await.unwrap().tasks.is_empty());

    // A run for a task: in progress while it runs, done when it completes.
    let task = d
        .client()
        .create_task(&CreateTaskRequest {
            title: "Ship it".into(),
            session_id: Some(sid.clone().into()),
            run_id: None,
            status: None,
        })
        .await
        .unwrap();
    let definition = "name = \"ship\"\n[inputs]\ntask = { required = true }\n[[steps]]\nid = \"do\"\nprompt = \"SAY: doing {{ inputs.task }}\\nSLOW\"\n";
    let running = d
        .client()
        .run_task(
            &task.id,
            &RunTaskRequest { definition: Some(definition.into()), path: None, inputs: Default::default() },
        )
        .await
        .unwrap();
    assert_eq!(running.status, TaskStatus::InProgress);
    let run_id = running.run_id.clone().unwrap();
    wait("the in-progress mark", async || {
        Some(file(&worktree)).filter(|t| t.contains(&format!("{} in_progress -->", task.id)))
    })
    .await;
    let run = d.client().run(run_id.as_str()).await.unwrap();
    assert_eq!(run.inputs["task"], "Ship it");
    let (status, _) =
        d.post(&format!("/api/v1/tasks/{}/run", task.id), serde_json::json!({"definition": definition})).await;
    assert_eq!(status, 409, "a second run while one is under way");
    d.client().cancel_run(run_id.as_str()).await.unwrap();
    wait("the task back to todo", async || {
        (d.client().task(&task.id).await.unwrap().status == TaskStatus::Todo).then_some(())
    })
    .await;
    let quick = definition.replace("\\nSLOW", "");
    let again = d
        .client()
        .run_task(&task.id, &RunTaskRequest { definition: Some(quick), path: None, inputs: Default::default() })
        .await
        .unwrap();
    assert_ne!(again.run_id, Some(run_id));
    wait("the task done", async || (d.client().task(&task.id).await.unwrap().status == TaskStatus::Done).then_some(()))
        .await;
    wait("the ticked box", async || {
        Some(file(&worktree)).filter(|t| t.contains(&format!("- [x] Ship it <!-- bosun:{} -->", task.id)))
    })
    .await;

    // Every change was an event on the session's topic, saying what made it.
    let q = EventsQuery { since: 0, session: Some(sid.clone()), topic: None, limit: Some(1000) };
    let bys: Vec<String> = d
        .client()
        .all_events(&q)
        .await
        .unwrap()
        .iter()
        .filter_map(|e| match e.payload() {
            Ok(EventData::TaskUpdated(u)) => Some(u.by),
            Ok(EventData::TaskRemoved(r)) => Some(r.by),
            _ => None,
        })
        .collect();
    for by in ["api", "file", "run"] {
        assert!(bys.iter().any(|b| b == by), "no task event by {by}: {bys:?}");
    }
    // Bad input changes nothing.
    let (status, _) = d.post("/api/v1/tasks", serde_json::json!({"title": "x"})).await;
    assert_eq!(status, 400);
    let (status, _) = d.post("/api/v1/tasks", serde_json::json!({"title": "two\nlines", "session_id": sid})).await;
    assert_eq!(status, 400);
    let (status, _) = d.post("/api/v1/tasks", serde_json::json!({"title": "x", "session_id": "s_000000000000"})).await;
    assert_eq!(status, 404);
}
