//! Workflow runs on the real binary, on the built-in demo agent (offline):
//! the feature workflow end to end (parallel builds, a gate, a clean merge),
//! kill -9 at random moments, every validation error, gate decline, budget
//! pause and resume, step timeout, stalls, and merge conflicts.
//!
//! The demo agent answers `SAY: x` lines with exactly those lines (a
//! scripted planner) and runs `RUN: cmd` lines, which full-access accepts.

mod common;

use bosun_proto::query::EventsQuery;
use bosun_proto::*;
use common::{git, repo_with, tempdir, Daemon, Options};
use serde_json::json;
use std::time::{Duration, Instant};

/// The feature workflow of the issue, on demo agents: each build item sleeps
/// three seconds before writing its part, so the items' turns overlap even
/// on a loaded machine.
const FEATURE: &str = r#"
name = "feature"
[inputs]
task = { required = true }
repo = { required = true }
[defaults]
policy = "full-access"
timeout = "2m"
stall = "1m"
[budget]
tokens = 2000000
[[steps]]
id = "plan"
provider = "demo"
prompt = "Plan this, one line per part:\n{{ inputs.task }}"
workspace = { repo = "{{ inputs.repo }}", branch = "main" }
[[steps]]
id = "build"
needs = ["plan"]
for_each = "{{ steps.plan.lines }}"
provider = "demo"
on_interrupt = "retry"
prompt = "RUN: sleep 3; echo '{{ item }}' > part-{{ index }}.txt"
workspace = { from = "plan" }
[[steps]]
id = "review"
needs = ["build"]
provider = "demo"
prompt = "Review: {{ steps.build.diff }}"
workspace = { from = "plan" }
[[steps]]
id = "approve"
needs = ["review"]
kind = "gate"
message = "Merge? The review said: {{ steps.review.output }}"
[[steps]]
id = "merge"
needs = ["approve"]
kind = "merge"
from = ["build"]
into = "plan"
on_conflict = "gate"
"#;

const PARTS: &str = "SAY: alpha\nSAY: beta\nSAY: gamma";

fn inputs(pairs: &[(&str, &str)]) -> std::collections::BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

async fn start(d: &Daemon, definition: &str, pairs: &[(&str, &str)]) -> RunView {
    let req = StartRunRequest { definition: Some(definition.into()), path: None, inputs: inputs(pairs) };
    d.client().start_run(&req).await.unwrap_or_else(|e| panic!("starting a run: {e}"))
}

/// Polls the run until `pred` holds; accepts its gates as they open when `accept` says so.
async fn wait_run(d: &Daemon, id: &str, what: &str, pred: impl Fn(&RunView) -> bool) -> RunView {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let run = d.client().run(id).await.unwrap_or_else(|e| panic!("GET run {id}: {e}"));
        if pred(&run) {
            return run;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}: {run:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn open_gate(run: &RunView) -> Option<&StepView> {
    run.steps.iter().find(|s| s.state == StepState::Running && s.approval_id.is_some())
}

fn step<'a>(run: &'a RunView, id: &str) -> &'a StepView {
    run.steps.iter().find(|s| s.step_id == id).unwrap_or_else(|| panic!("no step {id} in {run:#?}"))
}

fn items<'a>(run: &'a RunView, id: &str) -> Vec<&'a StepView> {
    run.steps.iter().filter(|s| s.step_id == id).collect()
}

async fn workflow_events(d: &Daemon, run: &str) -> Vec<Envelope> {
    let query = EventsQuery { since: 0, session: None, topic: Some(format!("workflow:{run}")), limit: Some(1000) };
    d.client().all_events(&query).await.expect("GET /api/v1/events")
}

fn worktree_of(d: &Daemon, run: &RunView, id: &str) -> std::path::PathBuf {
    let session = step(run, id).session_id.clone().expect("a session");
    d.data_dir.join("worktrees").join(session.as_str())
}

/// How many turns each of the run's sessions has had.
async fn turns_per_session(d: &Daemon, run: &RunView) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    for s in &run.steps {
        if let Some(session) = &s.session_id {
            let turns = d.client().turns(session.as_str()).await.expect("turns").turns;
            let label = s.index.map(|i| format!("{}#{i}", s.step_id)).unwrap_or(s.step_id.clone());
            out.push((label, turns.len()));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feature_workflow_runs_its_builds_in_parallel_then_a_gate_then_a_clean_merge() {
    let dir = tempdir();
    let repo = repo_with(&dir.path().join("repo"), &[("README.md", "# project\n")]);
    let d = Daemon::start(&dir.path().join("data"), Options::default());
    let run = start(&d, FEATURE, &[("task", PARTS), ("repo", repo.to_str().unwrap())]).await;
    assert_eq!(run.state, RunState::Running);
    assert_eq!(run.steps.len(), 5, "one placeholder per step before the fan-out: {run:#?}");

    let run = wait_run(&d, run.id.as_str(), "the gate", |r| open_gate(r).is_some()).await;
    let builds = items(&run, "build");
    assert_eq!(builds.len(), 3, "{run:#?}");
    assert_eq!(builds.iter().map(|b| b.item.clone().unwrap()).collect::<Vec<_>>(), vec!["alpha", "beta", "gamma"]);
    assert!(builds.iter().all(|b| b.state == StepState::Completed));
    // Their turns overlapped: each started before any ended.
    let mut spans = Vec::new();
    for b in &builds {
        let turns = d.client().turns(b.session_id.as_ref().unwrap().as_str()).await.unwrap().turns;
        spans.push((turns[0].started_at.clone(), turns[0].ended_at.clone().unwrap()));
    }
    let last_start = spans.iter().map(|s| s.0.clone()).max().unwrap();
    let first_end = spans.iter().map(|s| s.1.clone()).min().unwrap();
    assert!(last_start < first_end, "the builds ran one after another: {spans:?}");
    // The review saw every part in the builds' diff.
    let review_session = step(&run, "review").session_id.clone().unwrap();
    let review_turn = &d.client().turns(review_session.as_str()).await.unwrap().turns[0];
    for part in ["part-0.txt", "part-1.txt", "part-2.txt"] {
        assert!(review_turn.text.contains(part), "{}", review_turn.text);
    }

    // The gate is an approval like any other.
    let gate = open_gate(&run).unwrap().approval_id.clone().unwrap();
    let listed = d.client().approvals(&Default::default()).await.unwrap().approvals;
    let a = listed.iter().find(|a| a.id == gate).expect("the gate in GET /api/v1/approvals");
    assert!(
        matches!(&a.action, Action::Gate { step_id, message, .. } if step_id == "approve" && message.starts_with("Merge? The review said: Demo agent here")),
        "{a:?}"
    );
    assert_eq!(a.session_id, None);
    let decided = d.decide(gate.as_str(), Decision::Accept).await;
    assert_eq!(decided.status, ApprovalStatus::Accepted);
    // Deciding again the same way is answered as before; the other way is a conflict.
    assert_eq!(d.decide(gate.as_str(), Decision::Accept).await.status, ApprovalStatus::Accepted);
    let (status, body) = d.post(&format!("/api/v1/approvals/{gate}"), json!({"decision": "decline"})).await;
    assert_eq!(status, 409, "{body}");

    let run = wait_run(&d, run.id.as_str(), "the end", |r| r.state.is_final()).await;
    assert_eq!(run.state, RunState::Completed, "{run:#?}");
    let merge = step(&run, "merge").merge.clone().expect("the merge's record");
    assert_eq!(merge.merged.len(), 3, "{merge:?}");
    assert!(merge.conflicts.is_empty());
    assert_eq!(merge.files, vec!["part-0.txt", "part-1.txt", "part-2.txt"]);
    // The plan's branch holds every part, as merge commits.
    let plan = worktree_of(&d, &run, "plan");
    for (i, part) in ["alpha", "beta", "gamma"].iter().enumerate() {
        let text = std::fs::read_to_string(plan.join(format!("part-{i}.txt"))).expect("a merged part");
        assert_eq!(text.trim(), *part);
    }
    let merges = git(&plan, &["log", "--merges", "--format=%s"]);
    assert_eq!(merges.lines().count(), 3, "{merges}");
    assert_eq!(git(&plan, &["status", "--porcelain"]), "", "the merge left the worktree dirty");
    // Every step ran once.
    for (label, turns) in turns_per_session(&d, &run).await {
        assert_eq!(turns, 1, "{label} ran {turns} turns");
    }
    assert!(run.usage.input_tokens > 0 && run.ended_at.is_some());

    // What clients saw: started, each step's changes, the gate, completed with totals.
    let events = workflow_events(&d, run.id.as_str()).await;
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds.first(), Some(&"workflow:started"));
    assert_eq!(kinds.last(), Some(&"workflow:completed"));
    assert!(kinds.contains(&"approval:requested") && kinds.contains(&"approval:resolved"), "{kinds:?}");
    let Ok(EventData::WorkflowCompleted(done)) = events.last().unwrap().payload() else { panic!() };
    assert_eq!(done.state, RunState::Completed);
    assert_eq!(done.usage, run.usage);
    let step_states: Vec<(String, Option<u64>, StepState)> = events
        .iter()
        .filter_map(|e| match e.payload() {
            Ok(EventData::WorkflowStep(s)) => Some((s.step.step_id, s.step.index, s.step.state)),
            _ => None,
        })
        .collect();
    for label in ["plan", "review", "approve", "merge"] {
        let states: Vec<StepState> = step_states.iter().filter(|s| s.0 == label).map(|s| s.2).collect();
        assert_eq!(states.first(), Some(&StepState::Running), "{label}: {states:?}");
        assert_eq!(states.last(), Some(&StepState::Completed), "{label}: {states:?}");
    }
    // The run is listed, and an ended run takes no more changes.
    let listed = d.client().runs(&Default::default()).await.unwrap().runs;
    assert_eq!(listed.len(), 1);
    let (status, body) = d.post(&format!("/api/v1/workflows/runs/{}/cancel", run.id), json!({})).await;
    assert_eq!(status, 409, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_definition_that_does_not_validate_is_refused_whole_before_anything_runs() {
    let dir = tempdir();
    let d = Daemon::start(&dir.path().join("data"), Options::default());
    let broken = r#"
name = "broken"
colour = "blue"
[inputs]
task = { required = true }
[[steps]]
id = "a"
needs = ["b"]
prompt = "{{ steps.c.output }}"
[[steps]]
id = "b"
needs = ["a"]
provider = "nobody"
prompt = "{{ inputs.task }}"
[[steps]]
id = "c"
needs = ["ghost"]
prompt = "{{ oops"
"#;
    let (status, body) = d.post("/api/v1/workflows/runs", json!({"definition": broken, "inputs": {"task": "x"}})).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "bad_request");
    let message = body["error"]["message"].as_str().unwrap();
    for needle in [
        "colour: unknown field",
        "makes a cycle: a → b → a",
        "steps.c.needs: names \"ghost\", which is not a step",
        "steps.b.provider: unknown provider \"nobody\"",
        "steps.a.prompt: reads steps.c, which is not upstream of a",
        "steps.c.prompt: template does not compile",
    ] {
        assert!(message.contains(needle), "{needle:?} is not named in: {message}");
    }
    // Inputs are checked too, every problem at once.
    let ok =
        "name = \"n\"\n[inputs]\ntask = { required = true }\n[[steps]]\nid = \"a\"\nprompt = \"{{ inputs.task }}\"\n";
    let (status, body) = d.post("/api/v1/workflows/runs", json!({"definition": ok, "inputs": {"tsak": "x"}})).await;
    assert_eq!(status, 400, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("inputs.task: is required") && message.contains("inputs.tsak: is not an input"),
        "{message}"
    );
    // A path must be absolute and readable; definition and path not both.
    let (status, body) = d.post("/api/v1/workflows/runs", json!({"path": "relative.toml"})).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = d.post("/api/v1/workflows/runs", json!({"path": "/nonexistent/w.toml"})).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = d.post("/api/v1/workflows/runs", json!({"definition": ok, "path": "/x.toml"})).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = d.post("/api/v1/workflows/runs", json!({"definition": ok, "inptus": {}})).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("inptus"), "{body}");
    // Nothing was made.
    assert!(d.client().runs(&Default::default()).await.unwrap().runs.is_empty());
    assert!(d.client().sessions(&Default::default()).await.unwrap().sessions.is_empty());

    // A file on the daemon's host works as the text does.
    let file = dir.path().join("one.toml");
    std::fs::write(&file, ok).unwrap();
    let (status, body) = d
        .post("/api/v1/workflows/runs", json!({"path": file.to_str().unwrap(), "inputs": {"task": "SAY: done"}}))
        .await;
    assert_eq!(status, 201, "{body}");
    let run = wait_run(&d, body["id"].as_str().unwrap(), "the end", |r| r.state.is_final()).await;
    assert_eq!(run.state, RunState::Completed, "{run:#?}");
    assert_eq!(step(&run, "a").output.as_deref(), Some("done\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_gate_fails_the_run_and_nothing_after_it_runs() {
    let dir = tempdir();
    let repo = repo_with(&dir.path().join("repo"), &[("README.md", "# project\n")]);
    let d = Daemon::start(&dir.path().join("data"), Options::default());
    let run = start(&d, FEATURE, &[("task", "SAY: only"), ("repo", repo.to_str().unwrap())]).await;
    let run = wait_run(&d, run.id.as_str(), "the gate", |r| open_gate(r).is_some()).await;
    let gate = open_gate(&run).unwrap().approval_id.clone().unwrap();
    d.decide(gate.as_str(), Decision::Decline).await;
    let run = wait_run(&d, run.id.as_str(), "the end", |r| r.state.is_final()).await;
    assert_eq!(run.state, RunState::Failed, "{run:#?}");
    assert_eq!(step(&run, "approve").state, StepState::Failed);
    assert_eq!(step(&run, "merge").state, StepState::Pending);
    let plan = worktree_of(&d, &run, "plan");
    assert_eq!(git(&plan, &["log", "--merges", "--format=%s"]), "", "a merge ran after a declined gate");
    let events = workflow_events(&d, run.id.as_str()).await;
    let Ok(EventData::WorkflowCompleted(done)) = events.last().unwrap().payload() else { panic!("{events:#?}") };
    assert_eq!(done.state, RunState::Failed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reaching_the_budget_pauses_the_run_and_raising_it_resumes() {
    let dir = tempdir();
    let d = Daemon::start(&dir.path().join("data"), Options::default());
    let definition = r#"
name = "budget"
[budget]
tokens = 5
[[steps]]
id = "first"
prompt = "SAY: one two three four five six"
[[steps]]
id = "second"
needs = ["first"]
prompt = "SAY: {{ steps.first.output }}"
"#;
    let run = start(&d, definition, &[]).await;
    let run = wait_run(&d, run.id.as_str(), "the pause", |r| r.state == RunState::Paused).await;
    assert_eq!(run.pause.as_ref().unwrap().reason, PauseReason::Budget, "{run:#?}");
    assert_eq!(step(&run, "first").state, StepState::Completed);
    assert_eq!(step(&run, "second").state, StepState::Pending, "a step started past the budget");
    let tokens = run.usage.input_tokens + run.usage.output_tokens;
    assert!(tokens >= 5, "{run:?}");
    // Resuming without room is refused; raising the budget resumes.
    let (status, body) = d.post(&format!("/api/v1/workflows/runs/{}/resume", run.id), json!({})).await;
    assert_eq!(status, 409, "{body}");
    let patch = PatchRunRequest { budget: BudgetView { tokens: Some(1_000_000), cost: None } };
    let patched = d.client().patch_run(run.id.as_str(), &patch).await.unwrap();
    assert_eq!(patched.budget.tokens, Some(1_000_000));
    let run = wait_run(&d, run.id.as_str(), "the end", |r| r.state.is_final()).await;
    assert_eq!(run.state, RunState::Completed, "{run:#?}");
    let kinds: Vec<String> =
        workflow_events(&d, run.id.as_str()).await.iter().map(|e| e.kind.as_str().to_string()).collect();
    assert!(kinds.contains(&"workflow:paused".to_string()), "{kinds:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_past_its_timeout_is_stopped_and_failed_then_skip_goes_on() {
    let dir = tempdir();
    let d = Daemon::start(&dir.path().join("data"), Options::default());
    let definition = r#"
name = "slow"
[[steps]]
id = "slow"
timeout = "2s"
prompt = "SLOW"
[[steps]]
id = "after"
needs = ["slow"]
prompt = "SAY: after"
"#;
    let run = start(&d, definition, &[]).await;
    let run = wait_run(&d, run.id.as_str(), "the pause", |r| r.state == RunState::Paused).await;
    let slow = step(&run, "slow");
    assert_eq!(slow.state, StepState::Failed, "{run:#?}");
    assert_eq!(slow.error.as_deref(), Some("timed out after 2s"));
    assert_eq!(run.pause.as_ref().unwrap().reason, PauseReason::Failed);
    let turns = d.client().turns(slow.session_id.as_ref().unwrap().as_str()).await.unwrap().turns;
    assert_eq!(turns[0].status, TurnStatus::Interrupted, "the timed-out turn was not stopped");
    // Skip: the step is left out and the run goes on.
    let req = StepDecisionRequest { decision: StepDecision::Skip, index: None };
    d.client().decide_step(run.id.as_str(), "slow", &req).await.unwrap();
    let run = wait_run(&d, run.id.as_str(), "the end", |r| r.state.is_final()).await;
    assert_eq!(run.state, RunState::Completed, "{run:#?}");
    assert_eq!(step(&run, "slow").state, StepState::Skipped);
    assert_eq!(step(&run, "after").output.as_deref(), Some("after\n"));
    // Nothing to decide now.
    let (status, _) =
        d.post(&format!("/api/v1/workflows/runs/{}/steps/after/decide", run.id), json!({"decision": "retry"})).await;
    assert_eq!(status, 409);
}

/// A fan-out whose items cannot be read fails before anything runs; a retry
/// tries again (and fails again, being the same), it does not hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fan_out_that_cannot_be_expanded_fails_and_a_retry_tries_it_again() {
    let dir = tempdir();
    let d = Daemon::start(&dir.path().join("data"), Options::default());
    let definition = r#"
name = "bad-items"
[[steps]]
id = "plan"
prompt = "SAY: only one"
[[steps]]
id = "build"
needs = ["plan"]
for_each = "{{ steps.plan.lines[5] }}"
prompt = "SAY: {{ item }}"
"#;
    let run = start(&d, definition, &[]).await;
    let run = wait_run(&d, run.id.as_str(), "the pause", |r| r.state == RunState::Paused).await;
    let build = step(&run, "build");
    assert_eq!((build.state, build.index), (StepState::Failed, None), "{run:#?}");
    assert!(build.error.as_deref().unwrap_or("").starts_with("for_each:"), "{build:?}");
    let req = StepDecisionRequest { decision: StepDecision::Retry, index: None };
    d.client().decide_step(run.id.as_str(), "build", &req).await.unwrap();
    let again = wait_run(&d, run.id.as_str(), "the second failure", |r| {
        r.state == RunState::Paused && step(r, "build").attempts == 1 && step(r, "build").state == StepState::Failed
    })
    .await;
    assert_eq!(step(&again, "build").state, StepState::Failed, "{again:#?}");
    let req = StepDecisionRequest { decision: StepDecision::Abort, index: None };
    d.client().decide_step(run.id.as_str(), "build", &req).await.unwrap();
    let ended = wait_run(&d, run.id.as_str(), "the end", |r| r.state.is_final()).await;
    assert_eq!(ended.state, RunState::Failed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_with_no_output_for_its_stall_time_is_reported_stalled() {
    let dir = tempdir();
    let d = Daemon::start(&dir.path().join("data"), Options::default());
    let definition = r#"
name = "stall"
[defaults]
policy = "full-access"
[[steps]]
id = "quiet"
stall = "1s"
prompt = "RUN: sleep 4"
"#;
    let run = start(&d, definition, &[]).await;
    let stalled = wait_run(&d, run.id.as_str(), "the stall", |r| step(r, "quiet").stalled).await;
    assert_eq!(step(&stalled, "quiet").state, StepState::Running);
    let run = wait_run(&d, run.id.as_str(), "the end", |r| r.state.is_final()).await;
    assert_eq!(run.state, RunState::Completed, "{run:#?}");
    assert!(!step(&run, "quiet").stalled, "output after the stall did not clear it");
    let stalls: Vec<WorkflowEvent> = workflow_events(&d, run.id.as_str())
        .await
        .iter()
        .filter_map(|e| match e.payload() {
            Ok(EventData::WorkflowEvent(w)) if w.kind == WorkflowEventKind::Stalled => Some(w),
            _ => None,
        })
        .collect();
    assert_eq!(stalls.len(), 1, "{stalls:?}");
    assert_eq!(stalls[0].step_id.as_deref(), Some("quiet"));
}

/// A run's actor, and then the workflows supervisor, panic mid-run: each is
/// restarted, the run goes on from its record, and no step runs twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_goes_on_after_its_actor_and_its_supervisor_crash() {
    let dir = tempdir();
    let d = Daemon::start(&dir.path().join("data"), Options { fault_injection: true, ..Options::default() });
    let definition = r#"
name = "crashy"
[defaults]
policy = "full-access"
[[steps]]
id = "first"
prompt = "RUN: sleep 2"
[[steps]]
id = "second"
needs = ["first"]
prompt = "RUN: sleep 2"
[[steps]]
id = "third"
needs = ["second"]
prompt = "SAY: done"
"#;
    let run = start(&d, definition, &[]).await;
    let id = run.id.to_string();
    wait_run(&d, &id, "the first step to run", |r| step(r, "first").state == StepState::Running).await;
    let (status, body) = d.post("/api/v1/debug/crash", json!({"target": format!("workflow:{id}")})).await;
    assert_eq!(status, 202, "{body}");
    wait_run(&d, &id, "the second step to run", |r| step(r, "second").state == StepState::Running).await;
    let (status, body) = d.post("/api/v1/debug/crash", json!({"target": "workflows"})).await;
    assert_eq!(status, 202, "{body}");
    let run = wait_run(&d, &id, "the end", |r| r.state.is_final()).await;
    assert_eq!(run.state, RunState::Completed, "{run:#?}");
    for (label, turns) in turns_per_session(&d, &run).await {
        assert_eq!(turns, 1, "{label} ran {turns} turns");
    }
    let health = d.client().health().await.unwrap();
    assert!(health.actors["workflow"].restarts >= 1, "{health:?}");
    assert!(health.actors["workflows"].restarts >= 1, "{health:?}");
}

/// Two build items write the same file: the second conflicts with the first.
const CONFLICT: &str = r#"
name = "conflict"
[inputs]
repo = { required = true }
[defaults]
policy = "full-access"
[[steps]]
id = "plan"
prompt = "SAY: left\nSAY: right"
workspace = { repo = "{{ inputs.repo }}" }
[[steps]]
id = "build"
needs = ["plan"]
for_each = "{{ steps.plan.lines }}"
prompt = "RUN: echo '{{ item }}' > same.txt"
workspace = { from = "plan" }
[[steps]]
id = "merge"
needs = ["build"]
kind = "merge"
from = "build"
into = "plan"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merge_conflict_goes_to_a_gate_showing_the_files_and_hunks() {
    let dir = tempdir();
    let repo = repo_with(&dir.path().join("repo"), &[("same.txt", "base\n")]);
    let d = Daemon::start(&dir.path().join("data"), Options::default());
    let run = start(&d, CONFLICT, &[("repo", repo.to_str().unwrap())]).await;
    let run = wait_run(&d, run.id.as_str(), "the conflict gate", |r| open_gate(r).is_some()).await;
    let merge = step(&run, "merge");
    let record = merge.merge.clone().expect("the merge's record");
    assert_eq!(record.merged.len(), 1, "{record:?}");
    assert_eq!(record.conflicts.len(), 1, "{record:?}");
    assert_eq!(record.conflicts[0].files, vec!["same.txt"]);
    assert!(record.conflicts[0].hunks.contains("<<<<<<<") && record.conflicts[0].hunks.contains("right"), "{record:?}");
    let gate = d.client().approval(merge.approval_id.as_ref().unwrap().as_str()).await.unwrap();
    let Action::Gate { message, .. } = &gate.action else { panic!("{gate:?}") };
    assert!(message.contains("same.txt") && message.contains(">>>>>>>"), "{message}");
    // Accepting keeps the clean merge and leaves the conflicting branch out.
    d.decide(gate.id.as_str(), Decision::Accept).await;
    let run = wait_run(&d, run.id.as_str(), "the end", |r| r.state.is_final()).await;
    assert_eq!(run.state, RunState::Completed, "{run:#?}");
    let plan = worktree_of(&d, &run, "plan");
    assert_eq!(std::fs::read_to_string(plan.join("same.txt")).unwrap().trim(), "left");
    assert_eq!(git(&plan, &["status", "--porcelain"]), "");
}

/// What the person watching a run does: accept its gate, and retry the
/// steps a crash cut more often than they retry by themselves.
async fn nudge(d: &Daemon, view: &RunView) {
    if let Some(gate) = open_gate(view) {
        let _ = d.client().decide(gate.approval_id.as_ref().unwrap().as_str(), Decision::Accept).await;
    }
    if view.pause.as_ref().is_some_and(|p| p.reason == PauseReason::Interrupted) {
        for s in view.steps.iter().filter(|s| s.state == StepState::Interrupted) {
            let req = StepDecisionRequest { decision: StepDecision::Retry, index: s.index };
            let _ = d.client().decide_step(view.id.as_str(), &s.step_id, &req).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merge_conflict_goes_to_a_resolver_step_in_the_targets_worktree() {
    let dir = tempdir();
    let repo = repo_with(&dir.path().join("repo"), &[("same.txt", "base\n")]);
    let d = Daemon::start(&dir.path().join("data"), Options::default());
    let definition = CONFLICT.replace("into = \"plan\"", "into = \"plan\"\non_conflict = \"fix\"")
        + "[[steps]]\nid = \"fix\"\nprompt = \"RUN: printf 'left and right\\\\n' > same.txt\\n{{ conflict }}\"\n";
    let run = start(&d, &definition, &[("repo", repo.to_str().unwrap())]).await;
    let run = wait_run(&d, run.id.as_str(), "the end", |r| r.state.is_final()).await;
    assert_eq!(run.state, RunState::Completed, "{run:#?}");
    let fix = step(&run, "fix");
    assert_eq!(fix.index, Some(0));
    assert_eq!(fix.state, StepState::Completed);
    assert_eq!(fix.session_id, step(&run, "plan").session_id, "the resolver did not work in the target's session");
    let merge = step(&run, "merge").merge.clone().unwrap();
    assert_eq!(merge.merged.len(), 2, "{merge:?}");
    assert_eq!(merge.conflicts.len(), 1);
    assert!(merge.conflicts[0].resolved && merge.conflicts[0].resolver.as_deref() == Some("fix#0"), "{merge:?}");
    // Its prompt showed it the conflict.
    let turns = d.client().turns(fix.session_id.as_ref().unwrap().as_str()).await.unwrap().turns;
    let prompt = &turns.last().unwrap().text;
    assert!(prompt.contains("same.txt") && prompt.contains("<<<<<<<"), "{prompt}");
    let plan = worktree_of(&d, &run, "plan");
    assert_eq!(std::fs::read_to_string(plan.join("same.txt")).unwrap(), "left and right\n");
    assert_eq!(git(&plan, &["status", "--porcelain"]), "");
    assert_eq!(git(&plan, &["log", "--merges", "--format=%s"]).lines().count(), 2);
}

/// kill -9 at random moments of runs of the feature workflow, 20 times in
/// all: every run finishes, no step's session runs a turn twice, and every
/// event a client saw before a kill is still stored with the same seq and
/// payload after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_random_moments_every_run_finishes_and_nothing_is_done_twice() {
    let dir = tempdir();
    let repo = repo_with(&dir.path().join("repo"), &[("README.md", "# project\n")]);
    let mut d = Daemon::start(&dir.path().join("data"), Options::default());
    let mut seen: Vec<Envelope> = Vec::new();
    let mut kills = 0;
    let mut runs = Vec::new();
    // A simple, seeded generator: the moments differ run to run of the
    // suite only through timing, and a failure can be replayed by its seed.
    let mut seed: u64 = std::env::var("BOSUN_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed);
    let mut next = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    while kills < 20 {
        let run = start(&d, FEATURE, &[("task", "SAY: one\nSAY: two"), ("repo", repo.to_str().unwrap())]).await;
        runs.push(run.id.clone());
        loop {
            // Let it go on for a random while, accepting its gate.
            let until = Instant::now() + Duration::from_millis(100 + next(1400));
            let mut done = false;
            while Instant::now() < until {
                let view = d.client().run(run.id.as_str()).await.expect("GET run");
                if view.state.is_final() {
                    done = true;
                    break;
                }
                nudge(&d, &view).await;
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
            // What a client saw up to now.
            let query =
                EventsQuery { since: seen.last().map_or(0, |e| e.seq), session: None, topic: None, limit: Some(1000) };
            seen.extend(d.client().all_events(&query).await.expect("events"));
            if done || kills >= 20 {
                break;
            }
            d = d.restart_in_place();
            kills += 1;
            d.wait_health(|_| true).await;
        }
    }
    // Let the last run end, its gate accepted.
    for id in &runs {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let view = d.client().run(id.as_str()).await.expect("GET run");
            if view.state.is_final() {
                assert_eq!(view.state, RunState::Completed, "{view:#?}");
                for (label, turns) in turns_per_session(&d, &view).await {
                    let attempts = view
                        .steps
                        .iter()
                        .find(|s| s.index.map(|i| format!("{}#{i}", s.step_id)).unwrap_or(s.step_id.clone()) == label)
                        .unwrap()
                        .attempts;
                    assert_eq!(turns as u32, attempts, "{label} ran {turns} turns in {attempts} attempts: {view:#?}");
                }
                let plan = worktree_of(&d, &view, "plan");
                for i in 0..2 {
                    assert!(plan.join(format!("part-{i}.txt")).exists(), "part-{i} is not merged in run {id}");
                }
                break;
            }
            nudge(&d, &view).await;
            assert!(Instant::now() < deadline, "run {id} never ended: {view:#?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // Nothing a client saw was lost or changed.
    let stored =
        d.client().all_events(&EventsQuery { since: 0, session: None, topic: None, limit: Some(1000) }).await.unwrap();
    let by_seq: std::collections::HashMap<u64, &Envelope> = stored.iter().map(|e| (e.seq, e)).collect();
    for e in &seen {
        let s = by_seq.get(&e.seq).unwrap_or_else(|| panic!("seq {} was seen and is gone", e.seq));
        assert_eq!(*s, e, "seq {} changed after a kill", e.seq);
    }
    assert!(kills == 20, "{kills}");
    assert!(!runs.is_empty());
}

/// The CLI starts a run from a file and follows it to its end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_runs_a_workflow_file_and_follows_it() {
    let dir = tempdir();
    let d = Daemon::start(&dir.path().join("data"), Options::default());
    let file = dir.path().join("hello.toml");
    std::fs::write(&file, "name = \"hello\"\n[defaults]\npolicy = \"full-access\"\n[inputs]\nwho = { required = true }\n[[steps]]\nid = \"greet\"\nprompt = \"SAY: hello {{ inputs.who }}\"\n[[steps]]\nid = \"check\"\nkind = \"shell\"\nneeds = [\"greet\"]\ncommand = \"echo checked\"\n").unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let out =
        common::bosun(&d, &home, &["workflow", "run", file.to_str().unwrap(), "--input", "who=world", "--follow"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("greet") && stdout.contains("completed"), "{stdout}");
    let runs = d.client().runs(&Default::default()).await.unwrap().runs;
    assert_eq!(runs.len(), 1);
    assert_eq!(step(&runs[0], "greet").output.as_deref(), Some("hello world\n"));
    assert_eq!(step(&runs[0], "check").output.as_deref().map(str::trim), Some("checked"));
    let out = common::bosun(&d, &home, &["workflow", "show", runs[0].id.as_str(), "--json"]);
    let shown: RunView = serde_json::from_slice(&out.stdout).expect("show --json is a RunView");
    assert_eq!(shown.id, runs[0].id);
    let out = common::bosun(&d, &home, &["workflow", "ls"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains(runs[0].id.as_str()));
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "name = \"x\"\n[[steps]]\nid = \"a\"\nprompt = \"{{ inputs.nope }}\"\n").unwrap();
    let out = common::bosun(&d, &home, &["workflow", "run", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("inputs.nope"), "{}", String::from_utf8_lossy(&out.stderr));
}
