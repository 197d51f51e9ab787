//! Turns on the demo provider: streaming, approvals under both policies,
//! busy sessions, interrupt and steer.

mod common;

use common::*;

#[tokio::test]
async fn plain_turn_streams_a_reply() {
    let dir = tempdir();
    let d = Daemon::start(&dir.path().join("data"), Options::default());
    let s = d.new_session(dir.path(), Policy::PlanOnly).await;
    let t = d.start_turn(&s, "hello there").await;
    let done = d.wait_turn_end(&s, &t).await;
    assert_eq!(done.status, TurnStatus::Completed);
    let events = d.events(Some(&s), 0).await;
    assert_increasing(&events);
    let chunks = of_kind(&events, EventType::StreamChunk).len();
    assert!(chunks >= 3, "several chunks expected, got {chunks}");
    assert!(!turn_text(&events, &t, Some(ChunkKind::Text)).is_empty());
    let types: Vec<&EventType> = events.iter().map(|e| &e.kind).collect();
    let started = types.iter().position(|t| **t == EventType::TurnStarted).expect("turn:started");
    let complete = types.iter().position(|t| **t == EventType::StreamComplete).expect("stream:complete");
    let completed = types.iter().position(|t| **t == EventType::TurnCompleted).expect("turn:completed");
    assert!(started < complete && complete < completed, "{types:?}");
    let session = d.client().session(&s).await.expect("GET the session");
    assert_eq!(session.session.status, bosun_proto::SessionStatus::Idle);
    assert_eq!(session.turns[0].status, TurnStatus::Completed);
    assert!(session.session.usage.output_tokens > 0, "{session:?}");
}

#[tokio::test]
async fn plan_only_accept_runs_the_command_and_decline_does_not() {
    let dir = tempdir();
    let d = Daemon::start(&dir.path().join("data"), Options::default());
    let s = d.new_session(dir.path(), Policy::PlanOnly).await;

    let t = d.start_turn(&s, "please RUN: echo ran-it > accepted.txt && echo output-line").await;
    let approval = d.wait_pending_approval(&s).await;
    let Action::Command { cwd, .. } = &approval.action else { panic!("not a command: {approval:?}") };
    assert_eq!(cwd, dir.path().to_str().unwrap());
    let session = d.client().session(&s).await.expect("GET the session");
    assert_eq!(session.session.status, bosun_proto::SessionStatus::AwaitingApproval);
    assert_eq!(session.pending_approvals[0].id, approval.id);
    // Not run before the decision.
    assert!(!dir.path().join("accepted.txt").exists());
    let id = approval.id.as_str();
    let decided = d.decide(id, Decision::Accept).await;
    assert_eq!(decided.status, ApprovalStatus::Accepted);
    assert_eq!(decided.decided_by, Some(DecidedBy::User));
    // The same decision again is fine; the opposite is a conflict.
    d.decide(id, Decision::Accept).await;
    let err = d.client().decide(id, Decision::Decline).await.expect_err("the opposite decision");
    assert_eq!(err.status(), Some(409), "{err}");
    let done = d.wait_turn_end(&s, &t).await;
    assert_eq!(done.status, TurnStatus::Completed);
    assert_eq!(std::fs::read_to_string(dir.path().join("accepted.txt")).unwrap().trim(), "ran-it");
    let events = d.events(Some(&s), 0).await;
    assert!(turn_text(&events, &t, Some(ChunkKind::CommandOutput)).contains("output-line"));

    let t2 = d.start_turn(&s, "RUN: touch declined.txt").await;
    let approval = d.wait_pending_approval(&s).await;
    let id = approval.id.as_str();
    d.decide(id, Decision::Decline).await;
    let done = d.wait_turn_end(&s, &t2).await;
    assert_eq!(done.status, TurnStatus::Completed);
    assert!(!dir.path().join("declined.txt").exists(), "a declined command must not run");
    let again = d.client().decide(id, Decision::Decline).await;
    assert!(again.is_ok(), "deciding the same way twice is idempotent, even after the turn: {again:?}");
    let err = d.client().decide(id, Decision::Accept).await.expect_err("the opposite decision");
    assert_eq!(err.status(), Some(409), "{err}");
}

#[tokio::test]
async fn full_access_accepts_automatically_and_records_it() {
    let dir = tempdir();
    let d = Daemon::start(&dir.path().join("data"), Options::default());
    let s = d.new_session(dir.path(), Policy::FullAccess).await;
    let t = d.start_turn(&s, "RUN: touch auto.txt").await;
    let done = d.wait_turn_end(&s, &t).await;
    assert_eq!(done.status, TurnStatus::Completed);
    assert!(dir.path().join("auto.txt").exists());
    let events = d.events(Some(&s), 0).await;
    let (requested, _) =
        events_of!(&events, ApprovalRequested).into_iter().next().expect("approval:requested for audit");
    let (resolved_event, resolved) =
        events_of!(&events, ApprovalResolved).into_iter().next().expect("approval:resolved for audit");
    assert!(requested.seq < resolved_event.seq);
    assert!(resolved.automatic);
    assert_eq!(resolved.approval.decided_by, Some(DecidedBy::Policy));
    assert_eq!(resolved.approval.status, ApprovalStatus::Accepted);
}

#[tokio::test]
async fn one_turn_at_a_time_interrupt_and_steer() {
    let dir = tempdir();
    let d = Daemon::start(&dir.path().join("data"), Options::default());
    let s = d.new_session(dir.path(), Policy::PlanOnly).await;
    let t = d.start_turn(&s, "SLOW please").await;
    let err = d.client().start_turn(&s, "another").await.expect_err("a second turn while one runs");
    assert_eq!((err.status(), err.code()), (Some(409), Some("busy")), "{err}");
    d.wait_events(&s, "a few chunks", |evs| of_kind(evs, EventType::StreamChunk).len() >= 3).await;

    let steered = d.client().steer(&s, &t, "focus on tests").await.expect("steer");
    assert!(steered.steered && steered.turn_id == t, "{steered:?}");
    d.wait_events(&s, "steer acknowledged", |evs| {
        datas_of!(evs, StreamChunk).iter().any(|c| c.text.contains("focus on tests"))
    })
    .await;

    d.interrupt(&s, &t).await;
    let done = d.wait_turn_end(&s, &t).await;
    assert_eq!(done.status, TurnStatus::Interrupted);
    let events = d.events(Some(&s), 0).await;
    turn_text(&events, &t, None); // indexes run without gap
                                  // The session is free again.
    let t2 = d.start_turn(&s, "short one").await;
    assert_eq!(d.wait_turn_end(&s, &t2).await.status, TurnStatus::Completed);
    // Interrupting a finished turn is a conflict, not a crash.
    let err = d.client().interrupt(&s, &t).await.expect_err("interrupting a finished turn");
    assert_eq!(err.status(), Some(409), "{err}");
}

#[tokio::test]
async fn interrupt_kills_a_running_command() {
    let dir = tempdir();
    let d = Daemon::start(&dir.path().join("data"), Options::default());
    let s = d.new_session(dir.path(), Policy::FullAccess).await;
    // A sleep whose argument is unique to this test, to find it in /proc.
    let marker = format!("299.{}", std::process::id());
    let t = d.start_turn(&s, &format!("RUN: sleep {marker}; echo done")).await;
    d.wait_events(&s, "the command started", |evs| !of_kind(evs, EventType::ApprovalResolved).is_empty()).await;
    wait_process_running(&format!("sleep {marker}")).await;
    d.interrupt(&s, &t).await;
    let done = d.wait_turn_end(&s, &t).await;
    assert_eq!(done.status, TurnStatus::Interrupted);
    // No `sleep 300` left behind.
    let left = processes_with(&format!("sleep {marker}"));
    assert!(left.is_empty(), "process left behind: {left:?}");
}
