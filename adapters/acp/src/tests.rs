//! The driver against agent processes: a scripted fake (a shell script, run
//! everywhere) and the real codex-acp (only with `BOSUN_CODEX_ACP` and
//! `BOSUN_CODEX_HOME` set, the latter a CODEX_HOME written and served by
//! `cargo run --example mock_model -- --codex-home DIR`).

use std::time::Duration;

use bosun_proto::{Action, ChunkKind, Decision, Policy, Usage};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::AcpDriver;
use bosun_driver::ProviderSpec;
use bosun_driver::{
    AgentDriver, AgentError, AgentEvent, DriverInit, DriverNotice, LogLevel, TurnControl, TurnHandle, TurnInput,
    TurnOutcome,
};
use bosun_isolation::process::testing::group_gone_within;

const WAIT: Duration = Duration::from_secs(30);

struct Harness {
    driver: AcpDriver,
    notices: mpsc::UnboundedReceiver<DriverNotice>,
    dir: tempfile::TempDir,
    turns: u32,
}

impl Harness {
    fn new(spec: ProviderSpec, binding: Option<Value>) -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        Harness::in_dir(spec, binding, dir)
    }

    fn in_dir(spec: ProviderSpec, binding: Option<Value>, dir: tempfile::TempDir) -> Harness {
        let (notices_tx, notices) = mpsc::unbounded_channel();
        let init = DriverInit {
            session_id: "s_test".into(),
            cwd: dir.path().to_path_buf(),
            binding,
            notices: notices_tx,
            isolation: bosun_isolation::Isolation::Host,
            network: false,
        };
        Harness { driver: AcpDriver::new(spec, init), notices, dir, turns: 0 }
    }

    fn start(&mut self, text: &str) -> (TurnHandle, mpsc::UnboundedReceiver<AgentEvent>) {
        self.turns += 1;
        let (tx, rx) = mpsc::unbounded_channel();
        let input = TurnInput {
            session_id: "s_test".into(),
            turn_id: format!("t_{}", self.turns),
            text: text.into(),
            cwd: self.dir.path().to_path_buf(),
            // The fake agents are unknown ones: a plan-only turn would be
            // refused before its prompt (tested on its own).
            policy: Policy::FullAccess,
            resume: None,
        };
        (self.driver.start_turn(input, tx).expect("start_turn"), rx)
    }

    /// Notices so far, without waiting.
    fn drain_notices(&mut self) -> Vec<DriverNotice> {
        let mut all = Vec::new();
        while let Ok(notice) = self.notices.try_recv() {
            all.push(notice);
        }
        all
    }

    async fn wait_notice(&mut self, pred: impl Fn(&DriverNotice) -> bool) -> DriverNotice {
        tokio::time::timeout(WAIT, async {
            loop {
                match self.notices.recv().await {
                    Some(notice) if pred(&notice) => return notice,
                    Some(_) => {}
                    None => panic!("notices closed"),
                }
            }
        })
        .await
        .expect("notice in time")
    }
}

async fn next(rx: &mut mpsc::UnboundedReceiver<AgentEvent>) -> AgentEvent {
    tokio::time::timeout(WAIT, rx.recv()).await.expect("event in time").expect("events open")
}

/// Runs a turn to its end, answering approvals with `decide`; returns every
/// event, `Finished` last.
async fn finish(
    handle: &TurnHandle,
    rx: &mut mpsc::UnboundedReceiver<AgentEvent>,
    mut decide: impl FnMut(&Action) -> Decision,
) -> Vec<AgentEvent> {
    let mut events = Vec::new();
    loop {
        let event = next(rx).await;
        if let AgentEvent::ApprovalRequest { request_id, action, .. } = &event {
            handle.send(TurnControl::Decision { request_id: request_id.clone(), decision: decide(action) });
        }
        let done = matches!(event, AgentEvent::Finished(_));
        events.push(event);
        if done {
            return events;
        }
    }
}

fn outcome(events: &[AgentEvent]) -> &TurnOutcome {
    match events.last() {
        Some(AgentEvent::Finished(outcome)) => outcome,
        other => panic!("no Finished at the end: {other:?}"),
    }
}

fn text_of(events: &[AgentEvent], wanted: ChunkKind) -> String {
    events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::Chunk { kind, text, .. } if *kind == wanted => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

fn no_approvals(action: &Action) -> Decision {
    panic!("unexpected approval request: {action:?}")
}

// ---------------------------------------------------------------------------
// A scripted fake agent.

/// An ACP agent in sh: answers by method, with a malformed line and stderr
/// chatter thrown in. A prompt holding `EXIT` makes it die mid-turn, `HANG`
/// makes it never answer (until cancelled), `DEAF` never answer at all, `ASK`
/// makes it ask for permission first. It tells on stderr when it closes or
/// loads a session, and a load replays a bit of history.
const FAKE_AGENT: &str = r#"
echo "fake agent starting" >&2
echo "ERROR: a warning-looking line" >&2
while IFS= read -r line; do
  id=$(printf '%s' "$line" | sed -n 's/.*"id":\("[^"]*"\|[0-9][0-9]*\).*/\1/p')
  case "$line" in
    *'"method":"initialize"'*)
      echo 'this is not json'
      printf '{"jsonrpc":"2.0","id":%s,"result":{"protocolVersion":1,"agentCapabilities":{"loadSession":false,"promptCapabilities":{"image":true}},"agentInfo":{"name":"fake","version":"9.9"}}}\n' "$id";;
    *'"method":"session/new"'*)
      printf '{"jsonrpc":"2.0","id":%s,"result":{"sessionId":"fake-1"}}\n' "$id";;
    *'"method":"session/close"'*)
      echo "closing fake-1" >&2
      printf '{"jsonrpc":"2.0","id":%s,"result":{}}\n' "$id";;
    *'"method":"session/load"'*)
      echo "loading fake-1" >&2
      printf '{"jsonrpc":"2.0","method":"session/update","params":{"sessionId":"fake-1","update":{"sessionUpdate":"agent_message_chunk","content":{"type":"text","text":"history"}}}}\n'
      printf '{"jsonrpc":"2.0","id":%s,"result":{}}\n' "$id";;
    *'"method":"session/cancel"'*)
      [ -n "$deaf" ] || printf '{"jsonrpc":"2.0","id":%s,"result":{"stopReason":"cancelled"}}\n' "$prompt";;
    *'"method":"session/prompt"'*)
      prompt=$id
      printf '{"jsonrpc":"2.0","method":"session/update","params":{"sessionId":"fake-1","update":{"sessionUpdate":"agent_message_chunk","content":{"type":"text","text":"hello"}}}}\n'
      printf '{"jsonrpc":"2.0","method":"session/update","params":{"sessionId":"fake-1","update":{"sessionUpdate":"plan","entries":[{"content":"step","priority":"high","status":"pending"}]}}}\n'
      case "$line" in
        *EXIT*) exit 3;;
        *HANG*) ;;
        *DEAF*) deaf=1;;
        *ASK*) printf '{"jsonrpc":"2.0","id":"p1","method":"session/request_permission","params":{"sessionId":"fake-1","toolCall":{"toolCallId":"c1","kind":"execute","title":"rm x","rawInput":{"command":"rm x"}},"options":[{"optionId":"yes","name":"Yes","kind":"allow_once"},{"optionId":"no","name":"No","kind":"reject_once"}]}}\n';;
        *) printf '{"jsonrpc":"2.0","id":%s,"result":{"stopReason":"end_turn","usage":{"totalTokens":12,"inputTokens":10,"outputTokens":2}}}\n' "$id";;
      esac;;
    *'"result":{"outcome":{"outcome":"selected","optionId":"yes"'*)
      printf '{"jsonrpc":"2.0","method":"session/update","params":{"sessionId":"fake-1","update":{"sessionUpdate":"agent_message_chunk","content":{"type":"text","text":" allowed"}}}}\n'
      printf '{"jsonrpc":"2.0","id":%s,"result":{"stopReason":"end_turn"}}\n' "$prompt";;
    *'"result":{"outcome":'*)
      printf '{"jsonrpc":"2.0","id":%s,"result":{"stopReason":"refusal"}}\n' "$prompt";;
  esac
done
"#;

fn fake_spec() -> ProviderSpec {
    ProviderSpec::new("fake", "acp", Some("/bin/sh"), &["-c", FAKE_AGENT])
}

/// The fake, advertising that it can load and close sessions.
fn closing_fake_spec() -> ProviderSpec {
    let script =
        FAKE_AGENT.replace(r#""loadSession":false"#, r#""loadSession":true,"sessionCapabilities":{"close":{}}"#);
    assert_ne!(script, FAKE_AGENT);
    ProviderSpec::new("fake", "acp", Some("/bin/sh"), &["-c", &script])
}

fn logged(notices: &[DriverNotice], text: &str) -> usize {
    notices.iter().filter(|n| matches!(n, DriverNotice::Log { message, .. } if message == text)).count()
}

#[tokio::test]
async fn fake_agent_text_turn_with_notices() {
    let mut h = Harness::new(fake_spec(), None);
    assert!(!h.driver.capabilities().images, "images are unknown before the agent starts");
    let (handle, mut rx) = h.start("hi");
    let events = finish(&handle, &mut rx, no_approvals).await;
    assert_eq!(outcome(&events), &TurnOutcome::Completed);
    assert_eq!(text_of(&events, ChunkKind::Text), "hello");
    assert!(events.iter().any(|e| matches!(e, AgentEvent::Plan(p) if p.len() == 1)));
    assert!(events.contains(&AgentEvent::Usage(Usage { input_tokens: 10, output_tokens: 2, context_tokens: None })));
    assert!(h.driver.capabilities().images);

    let notices = h.drain_notices();
    let running = notices.iter().find_map(|n| match n {
        DriverNotice::Running { pid, agent, version } => Some((*pid, agent.clone(), version.clone())),
        _ => None,
    });
    let (pid, agent, version) = running.expect("Running notice");
    assert!(pid.is_some());
    assert_eq!((agent.as_deref(), version.as_deref()), (Some("fake"), Some("9.9")));
    assert!(notices.contains(&DriverNotice::Bound(json!({"session_id": "fake-1"}))));
    let logs: Vec<_> = notices
        .iter()
        .filter_map(|n| match n {
            DriverNotice::Log { level, message } => Some((*level, message.as_str())),
            _ => None,
        })
        .collect();
    assert!(logs.iter().any(|(l, m)| *l == LogLevel::Warn && m.contains("this is not json")), "{logs:?}");
    assert!(logs.contains(&(LogLevel::Info, "fake agent starting")), "{logs:?}");
    assert!(logs.contains(&(LogLevel::Warn, "ERROR: a warning-looking line")), "{logs:?}");

    // The same process and session serve the next turn.
    let (handle, mut rx) = h.start("again");
    let events = finish(&handle, &mut rx, no_approvals).await;
    assert_eq!(outcome(&events), &TurnOutcome::Completed);
    assert!(!h.drain_notices().iter().any(|n| matches!(n, DriverNotice::Running { .. })));
}

#[tokio::test]
async fn fake_agent_permissions_follow_decisions() {
    let mut h = Harness::new(fake_spec(), None);
    let (handle, mut rx) = h.start("ASK");
    let mut asked = Vec::new();
    let events = finish(&handle, &mut rx, |action| {
        asked.push(action.clone());
        Decision::Accept
    })
    .await;
    assert_eq!(asked, [Action::Command { command: "rm x".into(), cwd: h.dir.path().display().to_string() }]);
    assert!(events
        .iter()
        .any(|e| matches!(e, AgentEvent::ApprovalRequest { request_id, .. } if request_id == "perm-p1")));
    assert_eq!(outcome(&events), &TurnOutcome::Completed);
    assert_eq!(text_of(&events, ChunkKind::Text), "hello allowed");

    let (handle, mut rx) = h.start("ASK again");
    let events = finish(&handle, &mut rx, |_| Decision::Decline).await;
    assert!(matches!(outcome(&events), TurnOutcome::Failed(why) if why.contains("refused")));
}

#[tokio::test]
async fn fake_agent_busy_then_interrupt() {
    let mut h = Harness::new(fake_spec(), None);
    let (handle, mut rx) = h.start("HANG");
    let (tx2, _rx2) = mpsc::unbounded_channel();
    let second = TurnInput {
        session_id: "s_test".into(),
        turn_id: "t_x".into(),
        text: "x".into(),
        cwd: h.dir.path().to_path_buf(),
        policy: Policy::FullAccess,
        resume: None,
    };
    assert!(matches!(h.driver.start_turn(second, tx2), Err(AgentError::Busy)));
    // Wait until the prompt is under way, then interrupt: the fake answers
    // session/cancel with the `cancelled` stop reason.
    assert!(matches!(next(&mut rx).await, AgentEvent::Chunk { .. }));
    handle.send(TurnControl::Interrupt);
    let events = finish(&handle, &mut rx, no_approvals).await;
    assert_eq!(outcome(&events), &TurnOutcome::Interrupted);
    assert!(
        events.iter().any(|e| matches!(e, AgentEvent::Log { level: LogLevel::Info, message }
            if message.contains("cannot close its session"))),
        "{events:?}"
    );
    drop(handle);
    let (handle, mut rx) = h.start("after");
    assert_eq!(outcome(&finish(&handle, &mut rx, no_approvals).await), &TurnOutcome::Completed);
    assert_eq!(logged(&h.drain_notices(), "closing fake-1"), 0);
}

#[tokio::test]
async fn an_interrupt_closes_the_session_and_the_next_turn_loads_it() {
    let mut h = Harness::new(closing_fake_spec(), None);
    let (handle, mut rx) = h.start("HANG");
    assert!(matches!(next(&mut rx).await, AgentEvent::Chunk { .. }));
    handle.send(TurnControl::Interrupt);
    let events = finish(&handle, &mut rx, no_approvals).await;
    assert_eq!(outcome(&events), &TurnOutcome::Interrupted);
    h.wait_notice(|n| matches!(n, DriverNotice::Log { message, .. } if message == "closing fake-1")).await;

    let (handle, mut rx) = h.start("after");
    let events = finish(&handle, &mut rx, no_approvals).await;
    assert_eq!(outcome(&events), &TurnOutcome::Completed);
    // The history the load replayed is not part of the turn.
    assert_eq!(text_of(&events, ChunkKind::Text), "hello");
    let notices = h.drain_notices();
    assert_eq!(logged(&notices, "loading fake-1"), 1, "{notices:?}");
    assert!(notices.contains(&DriverNotice::Bound(json!({"session_id": "fake-1"}))), "{notices:?}");

    // A turn that was not stopped closes nothing.
    let (handle, mut rx) = h.start("plain");
    assert_eq!(outcome(&finish(&handle, &mut rx, no_approvals).await), &TurnOutcome::Completed);
    let notices = h.drain_notices();
    assert_eq!(logged(&notices, "closing fake-1") + logged(&notices, "loading fake-1"), 0, "{notices:?}");

    // A steer closes and loads the session before its own prompt.
    let (handle, mut rx) = h.start("HANG");
    assert!(matches!(next(&mut rx).await, AgentEvent::Chunk { .. }));
    handle.send(TurnControl::Steer("change course".into()));
    let events = finish(&handle, &mut rx, no_approvals).await;
    assert_eq!(outcome(&events), &TurnOutcome::Completed, "{events:?}");
    // (The first prompt's hello was taken above; the replay is dropped.)
    assert_eq!(text_of(&events, ChunkKind::Text), "hello");
    let notices = h.drain_notices();
    assert_eq!(logged(&notices, "closing fake-1"), 1, "{notices:?}");
    assert_eq!(logged(&notices, "loading fake-1"), 1, "{notices:?}");
}

#[tokio::test]
async fn an_interrupt_the_agent_ignores_still_ends_the_turn() {
    let mut h = Harness::new(fake_spec(), None);
    let (handle, mut rx) = h.start("DEAF");
    assert!(matches!(next(&mut rx).await, AgentEvent::Chunk { .. }));
    let asked = tokio::time::Instant::now();
    handle.send(TurnControl::Interrupt);
    let events = finish(&handle, &mut rx, no_approvals).await;
    assert_eq!(outcome(&events), &TurnOutcome::Interrupted);
    let waited = asked.elapsed();
    assert!(waited >= Duration::from_millis(1900) && waited < Duration::from_secs(3), "{waited:?}");
    assert!(events.iter().any(|e| matches!(e, AgentEvent::Log { message, .. } if message.contains("did not confirm"))));
}

#[tokio::test]
async fn fake_agent_steer_reprompts_within_the_turn() {
    let mut h = Harness::new(fake_spec(), None);
    let (handle, mut rx) = h.start("HANG");
    assert!(matches!(next(&mut rx).await, AgentEvent::Chunk { .. }));
    handle.send(TurnControl::Steer("change course".into()));
    let events = finish(&handle, &mut rx, no_approvals).await;
    assert_eq!(outcome(&events), &TurnOutcome::Completed);
    assert_eq!(text_of(&events, ChunkKind::Notice), "steer: change course");
    // The second prompt streamed its own hello.
    assert_eq!(text_of(&events, ChunkKind::Text), "hello");
}

#[tokio::test]
async fn fake_agent_death_fails_the_turn_then_reports_exit() {
    let mut h = Harness::new(fake_spec(), None);
    let (handle, mut rx) = h.start("EXIT now");
    let events = finish(&handle, &mut rx, no_approvals).await;
    assert_eq!(outcome(&events), &TurnOutcome::Failed("the agent process exited: exit code 3".into()));
    let exited = h.wait_notice(|n| matches!(n, DriverNotice::Exited { .. })).await;
    assert_eq!(exited, DriverNotice::Exited { reason: "exit code 3".into() });
    // The driver is spent: the next turn fails at once with the same reason.
    let (handle, mut rx) = h.start("hi");
    let events = finish(&handle, &mut rx, no_approvals).await;
    assert_eq!(events, [AgentEvent::Finished(TurnOutcome::Failed("the agent process exited: exit code 3".into()))]);
}

#[tokio::test]
async fn a_missing_program_fails_the_turn_only() {
    let spec = ProviderSpec::new("nope", "acp", Some("/nonexistent/agent-binary"), &[]);
    let mut h = Harness::new(spec, None);
    let (handle, mut rx) = h.start("hi");
    let events = finish(&handle, &mut rx, no_approvals).await;
    assert!(matches!(outcome(&events), TurnOutcome::Failed(why) if why.contains("/nonexistent/agent-binary")));
    assert!(!h.drain_notices().iter().any(|n| matches!(n, DriverNotice::Exited { .. })));
}

#[tokio::test]
async fn a_silent_agent_is_failed_and_killed() {
    let mut spec = fake_spec();
    spec.silence_timeout_secs = Some(1);
    let mut h = Harness::new(spec, None);
    let (handle, mut rx) = h.start("HANG");
    let events = finish(&handle, &mut rx, no_approvals).await;
    assert_eq!(outcome(&events), &TurnOutcome::Failed("the agent said nothing for 1 s".into()));
    let exited = h.wait_notice(|n| matches!(n, DriverNotice::Exited { .. })).await;
    assert!(
        matches!(&exited, DriverNotice::Exited { reason }
            if reason.contains("said nothing") && reason.contains("SIGKILL")),
        "{exited:?}"
    );
}

#[tokio::test]
async fn an_agent_that_never_initializes_times_out() {
    let mut spec = ProviderSpec::new("mute", "acp", Some("/bin/sh"), &["-c", "exec sleep 30"]);
    spec.startup_timeout_secs = Some(1);
    let mut h = Harness::new(spec, None);
    let (handle, mut rx) = h.start("hi");
    let events = finish(&handle, &mut rx, no_approvals).await;
    assert_eq!(outcome(&events), &TurnOutcome::Failed("the agent did not start within 1 s".into()));
    let exited = h.wait_notice(|n| matches!(n, DriverNotice::Exited { .. })).await;
    assert!(matches!(exited, DriverNotice::Exited { reason } if reason.contains("did not start")));
}

#[tokio::test]
async fn dropping_the_driver_kills_the_agent_group() {
    // The agent forks a long sleep that would outlive a plain kill of sh.
    let script = format!("sleep 300 & {FAKE_AGENT}");
    let spec = ProviderSpec::new("fake", "acp", Some("/bin/sh"), &["-c", &script]);
    let mut h = Harness::new(spec, None);
    let (handle, mut rx) = h.start("hi");
    finish(&handle, &mut rx, no_approvals).await;
    let pid = h
        .drain_notices()
        .into_iter()
        .find_map(|n| match n {
            DriverNotice::Running { pid, .. } => pid,
            _ => None,
        })
        .expect("pid");
    let Harness { driver, mut notices, .. } = h;
    drop(driver);
    assert!(group_gone_within(pid as i32, Duration::from_secs(2)).await, "group {pid} survived the driver");
    tokio::time::sleep(Duration::from_millis(200)).await;
    while let Ok(notice) = notices.try_recv() {
        assert!(!matches!(notice, DriverNotice::Exited { .. }), "an asked-for stop was reported: {notice:?}");
    }
}

// ---------------------------------------------------------------------------
// The real codex-acp, offline against examples/mock_model.

/// codex-acp and the CODEX_HOME to run it with, when the environment gives them.
fn codex() -> Option<ProviderSpec> {
    let binary = std::env::var("BOSUN_CODEX_ACP").ok()?;
    let home = std::env::var("BOSUN_CODEX_HOME").ok()?;
    // `untrusted`: codex asks before any command not on its known-safe list
    // (so `touch` asks, `echo`/`ls` do not) and before each patch.
    let mut spec = ProviderSpec::new("codex-acp", "acp", Some(&binary), &["-c", "approval_policy=untrusted"]);
    spec.env.insert("CODEX_HOME".into(), home);
    Some(spec)
}

/// codex-acp instances may write to the shared CODEX_HOME: one at a time.
static CODEX: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const NEEDS_CODEX: &str = "needs BOSUN_CODEX_ACP and BOSUN_CODEX_HOME (served by examples/mock_model)";

#[tokio::test]
#[ignore = "needs BOSUN_CODEX_ACP and BOSUN_CODEX_HOME (served by examples/mock_model)"]
async fn codex_text_and_commands() {
    let Some(spec) = codex() else { return eprintln!("skipped: {NEEDS_CODEX}") };
    let _one = CODEX.lock().await;
    let mut h = Harness::new(spec, None);

    let (handle, mut rx) = h.start("hello there");
    let events = finish(&handle, &mut rx, no_approvals).await;
    assert_eq!(outcome(&events), &TurnOutcome::Completed);
    assert_eq!(text_of(&events, ChunkKind::Text), "echo: hello there");
    // codex-acp only reports the context size: 100 in + 7 out from the mock.
    let context = Usage { input_tokens: 0, output_tokens: 0, context_tokens: Some(107) };
    assert!(events.contains(&AgentEvent::Usage(context)), "{events:?}");
    let notices = h.drain_notices();
    assert!(notices.iter().any(|n| matches!(n, DriverNotice::Running { agent: Some(a), .. } if a == "codex-acp")));
    assert!(notices.iter().any(|n| matches!(n, DriverNotice::Bound(b) if b["session_id"].is_string())));

    // Accepted: the command runs.
    let (handle, mut rx) = h.start("RUN: touch made.txt");
    let mut asked = Vec::new();
    let events = finish(&handle, &mut rx, |action| {
        asked.push(action.clone());
        Decision::Accept
    })
    .await;
    assert_eq!(outcome(&events), &TurnOutcome::Completed, "{events:?}");
    assert_eq!(asked, [Action::Command { command: "touch made.txt".into(), cwd: h.dir.path().display().to_string() }]);
    assert!(h.dir.path().join("made.txt").exists());
    assert!(
        events.iter().any(|e| matches!(e, AgentEvent::ToolCall(c) if c.kind == bosun_proto::ToolKind::Execute)),
        "{events:?}"
    );
    // (codex-acp does not always announce the end of a command it ran.)

    // Declined: it does not.
    let (handle, mut rx) = h.start("RUN: touch declined.txt");
    let events = finish(&handle, &mut rx, |_| Decision::Decline).await;
    assert_eq!(outcome(&events), &TurnOutcome::Completed, "{events:?}");
    assert!(!h.dir.path().join("declined.txt").exists());
    // codex-acp's only reject option aborts its turn.
    assert_eq!(text_of(&events, ChunkKind::Notice), "the agent ended the turn after a declined action");

    // A patch asks as a file change.
    let (handle, mut rx) = h.start("PATCH: p.txt patched text");
    let mut asked = Vec::new();
    let events = finish(&handle, &mut rx, |action| {
        asked.push(action.clone());
        Decision::AcceptForSession
    })
    .await;
    assert_eq!(outcome(&events), &TurnOutcome::Completed, "{events:?}");
    assert!(matches!(&asked[..], [Action::FileChange { path, .. }] if path.ends_with("p.txt")), "{asked:?}");
    assert_eq!(std::fs::read_to_string(h.dir.path().join("p.txt")).expect("patched"), "patched text\n");
}

#[tokio::test]
#[ignore = "needs BOSUN_CODEX_ACP and BOSUN_CODEX_HOME (served by examples/mock_model)"]
async fn codex_interrupt_and_steer() {
    let Some(spec) = codex() else { return eprintln!("skipped: {NEEDS_CODEX}") };
    let _one = CODEX.lock().await;
    let mut h = Harness::new(spec, None);

    let (handle, mut rx) = h.start("RUN: sleep 30");
    let mut events = Vec::new();
    loop {
        let event = next(&mut rx).await;
        if let AgentEvent::ApprovalRequest { request_id, .. } = &event {
            handle.send(TurnControl::Decision { request_id: request_id.clone(), decision: Decision::Accept });
        }
        let started = matches!(&event, AgentEvent::ToolCall(c) if c.kind == bosun_proto::ToolKind::Execute);
        events.push(event);
        if started {
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let asked = tokio::time::Instant::now();
    handle.send(TurnControl::Interrupt);
    let events = finish(&handle, &mut rx, no_approvals).await;
    assert_eq!(outcome(&events), &TurnOutcome::Interrupted);
    assert!(asked.elapsed() < Duration::from_secs(3), "interrupt took {:?}", asked.elapsed());

    let (handle, mut rx) = h.start("SLOW");
    assert!(matches!(next(&mut rx).await, AgentEvent::Chunk { .. }));
    handle.send(TurnControl::Steer("now say this".into()));
    let events = finish(&handle, &mut rx, no_approvals).await;
    assert_eq!(outcome(&events), &TurnOutcome::Completed, "{events:?}");
    assert_eq!(text_of(&events, ChunkKind::Notice), "steer: now say this");
    assert!(text_of(&events, ChunkKind::Text).ends_with("echo: now say this"), "{events:?}");
}

/// Live (not zombie) processes whose command line holds `marker`, with all
/// their descendants.
fn processes_of(marker: &str) -> Vec<i32> {
    let mut parents = Vec::new();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        let Some(close) = stat.rfind(')') else { continue };
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        if fields.first() == Some(&"Z") {
            continue;
        }
        let ppid = fields.get(1).and_then(|f| f.parse::<i32>().ok()).unwrap_or(0);
        parents.push((pid, ppid));
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(marker) {
            found.push(pid);
        }
    }
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        let children: Vec<i32> =
            parents.iter().filter(|(pid, ppid)| *ppid == parent && !found.contains(pid)).map(|(pid, _)| *pid).collect();
        found.extend(children);
        i += 1;
    }
    found
}

fn is_alive(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    stat.rfind(')').is_some_and(|close| stat[close + 1..].split_whitespace().next() != Some("Z"))
}

#[tokio::test]
#[ignore = "needs BOSUN_CODEX_ACP and BOSUN_CODEX_HOME (served by examples/mock_model)"]
async fn codex_interrupt_leaves_no_command_behind() {
    let Some(spec) = codex() else { return eprintln!("skipped: {NEEDS_CODEX}") };
    let _one = CODEX.lock().await;
    let mut h = Harness::new(spec, None);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").subsec_nanos();
    let marker = format!("bosun-interrupt-marker-{}-{nanos}", std::process::id());

    let (handle, mut rx) = h.start(&format!("RUN: sh -c 'sleep 30; echo {marker}'"));
    loop {
        let event = next(&mut rx).await;
        if let AgentEvent::ApprovalRequest { request_id, .. } = &event {
            handle.send(TurnControl::Decision { request_id: request_id.clone(), decision: Decision::Accept });
        }
        assert!(!matches!(event, AgentEvent::Finished(_)), "the turn ended before the command ran: {event:?}");
        if matches!(&event, AgentEvent::ToolCall(c) if c.kind == bosun_proto::ToolKind::Execute) {
            break;
        }
    }
    let started = tokio::time::Instant::now();
    let running = loop {
        let running = processes_of(&marker);
        if !running.is_empty() {
            break running;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "the command never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut running: Vec<i32> = running.into_iter().chain(processes_of(&marker)).collect();
    running.sort_unstable();
    running.dedup();
    let binding = h
        .drain_notices()
        .into_iter()
        .find_map(|n| match n {
            DriverNotice::Bound(b) => Some(b),
            _ => None,
        })
        .expect("bound");

    let asked = tokio::time::Instant::now();
    handle.send(TurnControl::Interrupt);
    let events = finish(&handle, &mut rx, no_approvals).await;
    let ended = asked.elapsed();
    assert_eq!(outcome(&events), &TurnOutcome::Interrupted, "{events:?}");
    assert!(ended < Duration::from_secs(2), "the interrupt took {ended:?}");
    let survivors = loop {
        let mut survivors: Vec<i32> =
            processes_of(&marker).into_iter().chain(running.iter().copied().filter(|pid| is_alive(*pid))).collect();
        survivors.sort_unstable();
        survivors.dedup();
        if survivors.is_empty() || asked.elapsed() >= Duration::from_secs(2) {
            break survivors;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(survivors.is_empty(), "still running 2 s after the interrupt: {survivors:?} (of {running:?})");
    eprintln!("turn ended {ended:?} and {running:?} were gone {:?} after the interrupt", asked.elapsed());

    // The same driver takes the next turn in the reloaded session.
    let (handle, mut rx) = h.start("hello again");
    let events = finish(&handle, &mut rx, no_approvals).await;
    assert_eq!(outcome(&events), &TurnOutcome::Completed, "{events:?}");
    assert_eq!(text_of(&events, ChunkKind::Text), "echo: hello again");
    let notices = h.drain_notices();
    assert!(notices.contains(&DriverNotice::Bound(binding)), "{notices:?}");
    assert!(!notices.iter().any(|n| matches!(n, DriverNotice::Log { level: LogLevel::Warn, .. })), "{notices:?}");
}

#[tokio::test]
#[ignore = "needs BOSUN_CODEX_ACP and BOSUN_CODEX_HOME (served by examples/mock_model)"]
async fn codex_kill_and_reload() {
    let Some(spec) = codex() else { return eprintln!("skipped: {NEEDS_CODEX}") };
    let _one = CODEX.lock().await;
    let mut h = Harness::new(spec.clone(), None);

    let (handle, mut rx) = h.start("remember me");
    assert_eq!(outcome(&finish(&handle, &mut rx, no_approvals).await), &TurnOutcome::Completed);
    let notices = h.drain_notices();
    let binding = notices
        .iter()
        .find_map(|n| match n {
            DriverNotice::Bound(b) => Some(b.clone()),
            _ => None,
        })
        .expect("bound");
    let pid = notices
        .iter()
        .find_map(|n| match n {
            DriverNotice::Running { pid, .. } => *pid,
            _ => None,
        })
        .expect("pid");

    // kill -9 mid-turn.
    let (handle, mut rx) = h.start("SLOW");
    assert!(matches!(next(&mut rx).await, AgentEvent::Chunk { .. }));
    // SAFETY: kill has no memory-safety preconditions.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    let events = finish(&handle, &mut rx, no_approvals).await;
    let reason = "the agent process exited: killed by signal 9 (SIGKILL)";
    assert_eq!(outcome(&events), &TurnOutcome::Failed(reason.into()));
    let exited = h.wait_notice(|n| matches!(n, DriverNotice::Exited { .. })).await;
    assert_eq!(exited, DriverNotice::Exited { reason: "killed by signal 9 (SIGKILL)".into() });
    let (handle, mut rx) = h.start("hi");
    assert_eq!(
        finish(&handle, &mut rx, no_approvals).await,
        [AgentEvent::Finished(TurnOutcome::Failed(reason.into()))]
    );

    // A new driver with the binding loads the session: the history replayed
    // during the load is not part of the next turn.
    let Harness { dir, .. } = h;
    let mut h = Harness::in_dir(spec, Some(binding.clone()), dir);
    let (handle, mut rx) = h.start("again");
    let events = finish(&handle, &mut rx, no_approvals).await;
    assert_eq!(outcome(&events), &TurnOutcome::Completed);
    assert_eq!(text_of(&events, ChunkKind::Text), "echo: again");
    let notices = h.drain_notices();
    assert!(notices.contains(&DriverNotice::Bound(binding)), "{notices:?}");
    assert!(!notices.iter().any(
        |n| matches!(n, DriverNotice::Log { level: LogLevel::Warn, message } if message.contains("could not load"))
    ));

    // An unknown binding falls back to a new session, with a warning.
    let mut h =
        Harness::new(codex().expect("spec"), Some(json!({"session_id": "01a00000-0000-7000-8000-000000000000"})));
    let (handle, mut rx) = h.start("fresh");
    assert_eq!(outcome(&finish(&handle, &mut rx, no_approvals).await), &TurnOutcome::Completed);
    let notices = h.drain_notices();
    assert!(
        notices.iter().any(
            |n| matches!(n, DriverNotice::Log { level: LogLevel::Warn, message } if message.contains("could not load"))
        ),
        "{notices:?}"
    );
    assert!(notices.iter().any(|n| matches!(n, DriverNotice::Bound(_))));
}
