//! Workflow runs on the real agents (codex app-server and codex-acp, from
//! npm) against the scripted model server: a cross-vendor run, and steps
//! cut by a kill -9 that a real agent cannot resume, decided retry, skip and
//! abort. Run `tests/run` first: it installs the agent binaries.

mod common;

use bosun_proto::*;
use common::agents::{Rig, CODEX, CODEX_ACP};
use common::Daemon;
use std::time::{Duration, Instant};

async fn start(d: &Daemon, definition: &str) -> RunView {
    let req = StartRunRequest { definition: Some(definition.into()), path: None, inputs: Default::default() };
    d.client().start_run(&req).await.unwrap_or_else(|e| panic!("starting a run: {e}"))
}

async fn wait_run(d: &Daemon, id: &str, what: &str, pred: impl Fn(&RunView) -> bool) -> RunView {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let run = d.client().run(id).await.unwrap_or_else(|e| panic!("GET run {id}: {e}"));
        if pred(&run) {
            return run;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}: {run:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn step<'a>(run: &'a RunView, id: &str) -> &'a StepView {
    run.steps.iter().find(|s| s.step_id == id).unwrap_or_else(|| panic!("no step {id} in {run:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cross_vendor_run_hands_codexs_answer_to_codex_acp() {
    let rig = Rig::start(CODEX);
    let d = rig.daemon();
    let definition = format!(
        r#"
name = "cross-vendor"
[defaults]
policy = "plan-only"
[[steps]]
id = "draft"
provider = "{CODEX}"
prompt = "draft the plan"
[[steps]]
id = "review"
needs = ["draft"]
provider = "{CODEX_ACP}"
prompt = "review {{{{ steps.draft.output }}}}"
"#
    );
    let run = start(d, &definition).await;
    let run = wait_run(d, run.id.as_str(), "the end", |r| r.state.is_final()).await;
    assert_eq!(run.state, RunState::Completed, "{run:#?}");
    assert_eq!(step(&run, "draft").output.as_deref(), Some("echo: draft the plan"));
    assert_eq!(step(&run, "review").output.as_deref(), Some("echo: review echo: draft the plan"));
    for (id, provider) in [("draft", CODEX), ("review", CODEX_ACP)] {
        let session = step(&run, id).session_id.clone().unwrap();
        let detail = d.client().session(session.as_str()).await.unwrap();
        assert_eq!(detail.session.provider, provider);
    }
    // Each turn's usage is counted once, on its step and on the run. (codex
    // reports tokens per turn; codex-acp, like ACP agents, only the size of
    // its context, which is not spent tokens: docs/WORKFLOWS.md, "Budget".)
    let tokens: u64 = run.steps.iter().map(|s| s.usage.input_tokens).sum();
    assert_eq!(run.usage.input_tokens, tokens);
    assert_eq!(step(&run, "draft").usage.input_tokens, 100, "{run:#?}");
}

/// A step on a real agent cut by a kill -9 while it streams becomes
/// interrupted; each way on from there works: retry (a second turn, which
/// completes), skip (the next step goes on), abort (the run fails). One run
/// per way, each cut on its own, so no turn can end before its kill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_agent_step_cut_by_a_crash_is_interrupted_then_retried_skipped_or_aborted() {
    let mut rig = Rig::start(CODEX);
    let definition = format!(
        r#"
name = "cut"
[[steps]]
id = "long"
provider = "{CODEX}"
prompt = "SLOW"
[[steps]]
id = "after"
needs = ["long"]
prompt = "SAY: after"
"#
    );
    let mut ended = Vec::new();
    for decision in [StepDecision::Retry, StepDecision::Skip, StepDecision::Abort] {
        let id = start(rig.daemon(), &definition).await.id;
        // Its agent is streaming: the turn has begun and sent a chunk.
        let run =
            wait_run(rig.daemon(), id.as_str(), "the turn to start", |r| !step(r, "long").turn_ids.is_empty()).await;
        let session = step(&run, "long").session_id.clone().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let events = rig.daemon().events(Some(session.as_str()), 0).await;
            if events.iter().any(|e| e.kind == EventType::StreamChunk) {
                break;
            }
            assert!(Instant::now() < deadline, "the agent never streamed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        rig.restart_daemon();

        let d = rig.daemon();
        let run = wait_run(d, id.as_str(), "the pause", |r| r.state == RunState::Paused).await;
        assert_eq!(run.pause.as_ref().unwrap().reason, PauseReason::Interrupted, "{run:#?}");
        let long = step(&run, "long");
        assert_eq!(long.state, StepState::Interrupted, "{run:#?}");
        assert!(long.error.as_deref().unwrap_or("").contains("cannot be resumed"), "{long:?}");
        // Resuming without a decision names what is waiting.
        let err = d.client().resume_run(id.as_str()).await.unwrap_err().to_string();
        assert!(err.contains("long"), "{err}");
        d.client().decide_step(id.as_str(), "long", &StepDecisionRequest { decision, index: None }).await.unwrap();
        ended.push((decision, wait_run(d, id.as_str(), "the run's end", |r| r.state.is_final()).await));
    }
    let d = rig.daemon();
    for (decision, run) in ended {
        let long = step(&run, "long");
        let turns = d.client().turns(long.session_id.as_ref().unwrap().as_str()).await.unwrap().turns;
        match decision {
            StepDecision::Retry => {
                assert_eq!(run.state, RunState::Completed, "{run:#?}");
                assert_eq!((long.state, long.attempts, long.turn_ids.len()), (StepState::Completed, 2, 2), "{long:?}");
                let statuses: Vec<TurnStatus> = turns.iter().map(|t| t.status).collect();
                assert_eq!(statuses, vec![TurnStatus::Failed, TurnStatus::Completed]);
                assert_eq!(step(&run, "after").state, StepState::Completed);
            }
            StepDecision::Skip => {
                assert_eq!(run.state, RunState::Completed, "{run:#?}");
                assert_eq!(long.state, StepState::Skipped);
                assert_eq!(step(&run, "after").output.as_deref(), Some("after\n"));
                assert_eq!(turns.len(), 1, "a skipped step ran again");
            }
            StepDecision::Abort => {
                assert_eq!(run.state, RunState::Failed, "{run:#?}");
                assert_eq!(long.state, StepState::Failed);
                assert_eq!(step(&run, "after").state, StepState::Pending);
                assert_eq!(turns.len(), 1, "an aborted step ran again");
            }
        }
    }
}
