//! Plan-only holds for every agent, however it is configured (issue 10,
//! docs/SECURITY.md "Enforcement"): the daemon picks the agent's asking mode,
//! tells what it enforces and how, carries out the acts an agent asks it
//! for under its own approvals, and stops an agent caught acting unasked.
//!
//! The real codex-acp runs against the scripted model server; the other
//! agents are `examples/acp_standin.rs`, told by its environment who to be.

mod common;

use bosun_client::ClientError;
use bosun_proto::{
    ActionApproval, CreateSessionRequest, Enforcement, LogLevel, PatchSessionRequest, Sandbox, SessionView,
};
use common::agents::{codex_acp_bin, standin_bin, toml_str, Rig, TURN_LIMIT};
use common::*;
use serde_json::Value;
use std::path::Path;

/// A `[providers.NAME]` entry for the stand-in agent.
fn standin(name: &str, env: &[(&str, &str)]) -> String {
    let env: Vec<String> = env.iter().map(|(k, v)| format!("{k} = {}", toml_str(v))).collect();
    format!(
        "[providers.{name}]\nkind = \"acp\"\ncommand = {}\nenv = {{ {} }}\n",
        toml_str(&standin_bin().to_string_lossy()),
        env.join(", ")
    )
}

/// A codex-acp entry with these args (and the rig's model server).
fn codex_acp(name: &str, args: &[&str], codex_home: &Path) -> String {
    let args: Vec<String> = args.iter().map(|a| toml_str(a)).collect();
    format!(
        "[providers.{name}]\nkind = \"acp\"\ncommand = {}\nargs = [{}]\nenv = {{ CODEX_HOME = {} }}\n",
        toml_str(&codex_acp_bin().to_string_lossy()),
        args.join(", "),
        toml_str(&codex_home.to_string_lossy())
    )
}

/// A rig whose daemon also has `extra` providers, made from the rig's dir
/// (where the stand-ins' logs go) and its codex home.
fn rig_with(provider: &'static str, extra: impl FnOnce(&Path, &Path) -> String) -> Rig {
    Rig::start_configured(provider, extra, Options::default())
}

/// A session of `provider` in `cwd` under `policy`, on the host.
fn session(provider: &str, cwd: &Path, policy: Policy) -> CreateSessionRequest {
    CreateSessionRequest {
        provider: provider.to_string(),
        cwd: Some(path_string(cwd)),
        policy: Some(policy),
        ..Default::default()
    }
}

/// A creation that may be refused.
async fn create(rig: &Rig, req: &CreateSessionRequest) -> Result<SessionView, ClientError> {
    rig.daemon().client().create_session(req).await
}

/// A creation that must succeed (201); the session's id.
async fn create_ok(rig: &Rig, req: &CreateSessionRequest) -> String {
    rig.daemon().create_session(req).await.id.into_string()
}

/// A creation the daemon must refuse as unenforceable; its error.
async fn create_refused(rig: &Rig, req: &CreateSessionRequest) -> ClientError {
    let err = create(rig, req).await.expect_err("a refused creation");
    assert_eq!((err.status(), err.code()), (Some(409), Some("policy_unenforceable")), "{err}");
    err
}

async fn set_policy(d: &Daemon, session: &str, policy: Policy) -> Result<SessionView, ClientError> {
    d.client().patch_session(session, &PatchSessionRequest { policy: Some(policy), ..Default::default() }).await
}

/// What the stand-in received, one JSON per line.
fn received(log: &Path) -> Vec<Value> {
    std::fs::read_to_string(log).unwrap_or_default().lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

fn set_modes(log: &Path) -> Vec<String> {
    received(log)
        .iter()
        .filter(|m| m["method"] == "session/set_mode")
        .filter_map(|m| m["params"]["modeId"].as_str().map(str::to_string))
        .collect()
}

const CLAUDE_MODES: &str = "default,acceptEdits,plan,bypassPermissions";

#[tokio::test]
async fn codex_acp_configured_without_args_asks_before_it_writes_and_a_decline_writes_nothing() {
    let rig = rig_with("acp-bare", |_, home| codex_acp("acp-bare", &[], home));
    let work = rig.workdir("bare");
    let s = rig.new_session(&work, Policy::PlanOnly).await;
    let listed = rig.provider("acp-bare").await;
    assert_eq!(listed.enforcement, Enforcement::AgentMode, "{listed:?}");
    assert_eq!(listed.agent.as_deref(), Some("codex-acp"), "known by what it says at initialize: {listed:?}");

    let t = rig.start_turn(&s, "RUN: echo hi > out.txt").await;
    let approval = rig.wait_pending_approval(&s).await;
    assert!(matches!(&approval.action, Action::Command { command, .. } if command.contains("echo hi")), "{approval:?}");
    assert!(!work.join("out.txt").exists(), "the command ran before its approval");
    rig.decide(&approval, Decision::Decline).await;
    rig.wait_turn_end(&s, &t).await;
    assert!(!work.join("out.txt").exists(), "a declined command ran");
    let events = rig.daemon().events(Some(&s), 0).await;
    assert!(of_kind(&events, EventType::PolicyViolation).is_empty(), "{events:#?}");
}

#[tokio::test]
async fn codex_acp_args_that_weaken_the_policy_are_overridden_with_a_warning_that_names_them() {
    let rig = rig_with("acp-never", |_, home| codex_acp("acp-never", &["-c", "approval_policy=never"], home));
    let work = rig.workdir("never");
    let s = rig.new_session(&work, Policy::PlanOnly).await;
    let t = rig.start_turn(&s, "RUN: echo hi > out.txt").await;
    let approval = rig.wait_pending_approval(&s).await;
    assert!(!work.join("out.txt").exists(), "the command ran before its approval");
    rig.decide(&approval, Decision::Decline).await;
    rig.wait_turn_end(&s, &t).await;
    assert!(!work.join("out.txt").exists(), "a declined command ran");
    let events = rig.daemon().events(Some(&s), 0).await;
    let warned = datas_of!(&events, DiagnosticsLog)
        .iter()
        .any(|log| log.level == LogLevel::Warn && log.message.contains("approval_policy=never"));
    assert!(warned, "no diagnostics:log warning names the weakening override: {events:#?}");
}

#[tokio::test]
async fn codex_acp_under_another_name_is_known_by_what_it_says_and_started_again_to_ask() {
    let rig = rig_with("renamed", |dir, home| {
        let renamed = dir.join("my-coding-agent");
        std::os::unix::fs::symlink(codex_acp_bin(), &renamed).expect("symlink codex-acp");
        codex_acp("renamed", &[], home)
            .replace(&toml_str(&codex_acp_bin().to_string_lossy()), &toml_str(&renamed.to_string_lossy()))
    });
    let work = rig.workdir("renamed");
    // Full access first, so no probe learns the name before the session's
    // own driver starts the agent; then plan-only.
    let s = create_ok(&rig, &session("renamed", &work, Policy::FullAccess)).await;
    set_policy(rig.daemon(), &s, Policy::PlanOnly).await.expect("PATCH the policy to plan-only");
    let t = rig.start_turn(&s, "RUN: echo hi > out.txt").await;
    let approval = rig.wait_pending_approval(&s).await;
    assert!(!work.join("out.txt").exists(), "the command ran before its approval");
    rig.decide(&approval, Decision::Decline).await;
    rig.wait_turn_end(&s, &t).await;
    assert!(!work.join("out.txt").exists(), "a declined command ran");
    let listed = rig.provider("renamed").await;
    assert_eq!(
        (listed.agent.as_deref(), listed.enforcement),
        (Some("codex-acp"), Enforcement::AgentMode),
        "{listed:?}"
    );
    let events = rig.daemon().events(Some(&s), 0).await;
    let restarted = datas_of!(&events, DiagnosticsLog).iter().any(|log| log.message.contains("says it is codex-acp"));
    assert!(restarted, "the agent was started again with the daemon's settings: {events:#?}");
}

#[tokio::test]
async fn a_read_only_command_codex_runs_by_itself_is_audited_as_its_safe_list_not_as_a_violation() {
    let rig = rig_with("acp-bare", |_, home| codex_acp("acp-bare", &[], home));
    let work = rig.workdir("safe");
    std::fs::write(work.join("listed.txt"), "x").expect("a file to list");
    let s = rig.new_session(&work, Policy::PlanOnly).await;
    let t = rig.start_turn(&s, "RUN: ls").await;
    rig.wait_turn_completed(&s, &t).await;
    let events = rig.daemon().events(Some(&s), 0).await;
    assert!(of_kind(&events, EventType::ApprovalRequested).is_empty(), "codex asks for nothing on its safe list");
    assert!(of_kind(&events, EventType::PolicyViolation).is_empty(), "{events:#?}");
    let ran = datas_of!(&events, CommandRan);
    assert!(
        ran.iter()
            .any(|r| r.command.approval == Some(ActionApproval::AgentSafeList) && r.command.command.contains("ls")),
        "the audit says who let it through: {ran:#?}; all: {events:#?}"
    );
}

#[tokio::test]
async fn a_known_agent_is_switched_to_its_asking_mode_and_back_when_it_leaves_it() {
    let mut log = std::path::PathBuf::new();
    let rig = rig_with("claude-like", |dir, _| {
        log = dir.join("claude-like.log");
        let log = log.to_string_lossy().into_owned();
        standin(
            "claude-like",
            &[
                ("STANDIN_NAME", "@agentclientprotocol/claude-agent-acp"),
                ("STANDIN_MODES", CLAUDE_MODES),
                ("STANDIN_START_MODE", "bypassPermissions"),
                ("STANDIN_LOG", &log),
            ],
        )
    });
    let work = rig.workdir("modes");
    let s = rig.new_session(&work, Policy::PlanOnly).await;
    let t = rig.start_turn(&s, "hello\nSWITCH: bypassPermissions").await;
    rig.wait_turn_completed(&s, &t).await;

    let modes = set_modes(&log);
    // Once at the probe and once at the session's start, then once to undo
    // the agent's own switch: always to the mode that asks.
    assert!(modes.len() >= 2 && modes.iter().all(|m| m == "default"), "set_mode calls: {modes:?}");
    let events = rig.daemon().events(Some(&s), 0).await;
    let restored = datas_of!(&events, PolicyModeRestored);
    assert_eq!(restored.len(), 1, "{events:#?}");
    assert_eq!((restored[0].from.as_str(), restored[0].to.as_str()), ("bypassPermissions", "default"));
    let text = turn_text(&events, &t, Some(ChunkKind::Text));
    assert!(text.contains("mode now default"), "the agent ended in {text:?}");
    let listed = rig.provider("claude-like").await;
    assert_eq!(listed.enforcement, Enforcement::AgentMode, "{listed:?}");
    assert!(listed.enforcement_detail.as_deref().is_some_and(|d| d.contains("\"default\"")), "{listed:?}");
}

#[tokio::test]
async fn an_agent_that_acts_without_asking_is_stopped_and_its_provider_is_no_longer_trusted() {
    let mut rig = rig_with("rogue", |_, _| {
        standin("rogue", &[("STANDIN_NAME", "claude-agent-acp"), ("STANDIN_MODES", CLAUDE_MODES)])
    });
    let work = rig.workdir("rogue");
    let s = rig.new_session(&work, Policy::PlanOnly).await;
    assert_eq!(rig.provider("rogue").await.enforcement, Enforcement::AgentMode);
    let t = rig.start_turn(&s, "ACT: touch pwned.txt\nSLEEP: 5000\nstill here").await;
    let done = rig.wait_turn_end(&s, &t).await;
    assert_eq!(done.status, TurnStatus::Failed, "{done:?}");
    assert!(done.reason.as_deref().is_some_and(|r| r.contains("without an approval")), "{done:?}");

    let events = rig.daemon().events(Some(&s), 0).await;
    let violations = datas_of!(&events, PolicyViolation);
    assert_eq!(violations.len(), 1, "{events:#?}");
    let v = &violations[0];
    assert_eq!((v.turn_id.as_str(), v.provider.as_str()), (t.as_str(), "rogue"), "{v:?}");
    assert!(v.what.contains("touch pwned.txt"), "{v:?}");
    let ran = datas_of!(&events, CommandRan);
    assert!(ran.iter().any(|r| r.command.approval == Some(ActionApproval::Unapproved)), "{ran:#?}");
    assert!(!turn_text(&events, &t, None).contains("still here"), "the turn went on after the violation");

    let broken = rig.daemon().client().session(&s).await.expect("GET the session").session;
    let violation = broken.violation.as_ref().unwrap_or_else(|| panic!("the session keeps it: {broken:?}"));
    assert_eq!(violation.turn_id, t, "the session keeps it: {broken:?}");
    assert_eq!(violation.provider, "rogue", "{broken:?}");
    let listed = rig.provider("rogue").await;
    assert_eq!(listed.enforcement, Enforcement::Unverified, "{listed:?}");
    let refused = create_refused(&rig, &session("rogue", &work, Policy::PlanOnly)).await;
    let ClientError::Api { message, .. } = &refused else { panic!("{refused:?}") };
    assert!(message.contains("full-access") && message.contains("bwrap"), "the message says what to do: {message}");
    // The session it broke in cannot start another plan-only turn either.
    let err = rig.daemon().client().start_turn(&s, "again").await.expect_err("a plan-only turn");
    assert_eq!((err.status(), err.code()), (Some(409), Some("policy_unenforceable")), "{err}");
    // Full access is still allowed: the daemon accepts everything there anyway.
    create_ok(&rig, &session("rogue", &work, Policy::FullAccess)).await;

    // Kept with the provider, across a kill -9.
    rig.restart_daemon();
    assert_eq!(rig.provider("rogue").await.enforcement, Enforcement::Unverified);
    let err = create(&rig, &session("rogue", &work, Policy::PlanOnly)).await.expect_err("a plan-only session");
    assert_eq!(err.status(), Some(409), "{err}");
}

#[tokio::test]
async fn an_unknown_agent_without_modes_is_unverified_and_refused_plan_only_unless_jailed_offline() {
    let rig = rig_with("stranger", |_, _| standin("stranger", &[]));
    let work = rig.workdir("stranger");
    assert_eq!(rig.provider("stranger").await.enforcement, Enforcement::Unknown, "not started yet");
    create_refused(&rig, &session("stranger", &work, Policy::PlanOnly)).await;
    let listed = rig.provider("stranger").await;
    assert_eq!(listed.enforcement, Enforcement::Unverified, "learned by starting it once: {listed:?}");
    assert_eq!(listed.agent.as_deref(), Some("standin-agent"), "{listed:?}");
    // `bosun providers` shows it too, with why.
    let home = tempdir();
    let out = bosun(rig.daemon(), home.path(), &["providers"]);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let row = shown.lines().find(|l| l.starts_with("stranger ")).unwrap_or_else(|| panic!("{shown}"));
    assert!(row.contains("unverified"), "{shown}");
    assert!(shown.contains("stranger (unverified): an agent Bosun does not know"), "{shown}");
    assert!(shown.lines().any(|l| l.starts_with("demo ") && l.contains(" daemon ")), "{shown}");

    // A full-access session switched to plan-only before the agent ever ran
    // in it: the driver finds out at start and refuses the turn.
    let other = rig_with("stranger2", |_, _| standin("stranger2", &[]));
    let s = create_ok(&other, &session("stranger2", &work, Policy::FullAccess)).await;
    let patched = set_policy(other.daemon(), &s, Policy::PlanOnly).await;
    assert!(patched.is_ok(), "nothing is known of it yet: {patched:?}");
    let t = other.start_turn(&s, "ACT: touch should-not-run.txt").await;
    let done = other.wait_turn_end(&s, &t).await;
    assert_eq!(done.status, TurnStatus::Failed, "{done:?}");
    assert!(done.reason.as_deref().is_some_and(|r| r.contains("cannot be held to plan-only")), "{done:?}");
    assert!(!work.join("should-not-run.txt").exists(), "the agent was prompted");
    let err = set_policy(other.daemon(), &s, Policy::PlanOnly).await.expect_err("plan-only again");
    assert_eq!((err.status(), err.code()), (Some(409), Some("policy_unenforceable")), "{err}");
}

#[tokio::test]
async fn an_agents_terminal_and_writes_go_through_the_daemon_under_its_approvals() {
    let rig = rig_with("helper", |_, _| {
        standin("helper", &[("STANDIN_NAME", "claude-agent-acp"), ("STANDIN_MODES", CLAUDE_MODES)])
    });
    let work = rig.workdir("helped");
    let s = rig.new_session(&work, Policy::PlanOnly).await;

    // A command the agent has the daemon run waits for its approval.
    let t = rig.start_turn(&s, "TERM: echo from-terminal > t.txt && echo printed").await;
    let approval = rig.wait_pending_approval(&s).await;
    let Action::Command { command, .. } = &approval.action else { panic!("not a command: {approval:?}") };
    assert!(command.contains("echo from-terminal"), "{approval:?}");
    assert!(!work.join("t.txt").exists(), "the command ran before its approval");
    rig.decide(&approval, Decision::Accept).await;
    rig.wait_turn_completed(&s, &t).await;
    assert_eq!(std::fs::read_to_string(work.join("t.txt")).unwrap_or_default().trim(), "from-terminal");
    let events = rig.daemon().events(Some(&s), 0).await;
    assert!(
        turn_text(&events, &t, Some(ChunkKind::CommandOutput)).contains("printed"),
        "output streams like any other"
    );
    assert!(turn_text(&events, &t, Some(ChunkKind::Text)).contains("terminal exit 0"), "{events:#?}");
    let ran: Vec<_> = datas_of!(&events, CommandRan).into_iter().filter(|r| r.turn_id == t).collect();
    assert_eq!(ran.len(), 1, "recorded once (not again as the agent's tool call): {ran:#?}");
    assert_eq!(ran[0].command.approval, Some(ActionApproval::User), "{ran:#?}");
    assert_eq!(ran[0].command.exit_code, Some(0), "{ran:#?}");
    assert!(of_kind(&events, EventType::PolicyViolation).is_empty(), "{events:#?}");

    // Declined: it does not run.
    let t = rig.start_turn(&s, "TERM: echo no > n.txt").await;
    let approval = rig.wait_pending_approval(&s).await;
    rig.decide(&approval, Decision::Decline).await;
    rig.wait_turn_completed(&s, &t).await;
    assert!(!work.join("n.txt").exists(), "a declined terminal ran");
    let events = rig.daemon().events(Some(&s), 0).await;
    assert!(turn_text(&events, &t, Some(ChunkKind::Text)).contains("terminal refused"), "{events:#?}");

    // Writes: outside the cwd refused outright; inside, after an approval.
    let outside = work.parent().expect("parent").join("outside.txt");
    let t = rig.start_turn(&s, &format!("WRITE: {} nope\nWRITE: inside.txt hello", outside.display())).await;
    let approval = rig.wait_pending_approval(&s).await;
    let Action::FileChange { path, .. } = &approval.action else { panic!("not a file change: {approval:?}") };
    assert!(path.ends_with("inside.txt"), "{approval:?}");
    assert!(!work.join("inside.txt").exists(), "written before its approval");
    rig.decide(&approval, Decision::Accept).await;
    rig.wait_turn_completed(&s, &t).await;
    assert!(!outside.exists(), "a write outside the cwd happened");
    assert_eq!(std::fs::read_to_string(work.join("inside.txt")).unwrap_or_default(), "hello");
    let events = rig.daemon().events(Some(&s), 0).await;
    let text = turn_text(&events, &t, Some(ChunkKind::Text));
    assert!(text.contains("write refused") && text.contains("outside the session's working directory"), "{text}");
    let changed: Vec<_> = datas_of!(&events, FileChanged).into_iter().filter(|c| c.turn_id == t).collect();
    assert_eq!(changed.len(), 1, "the daemon's write, once (not again as the agent's edit): {changed:#?}");
    assert_eq!(changed[0].approval, ActionApproval::User);
    let audit = rig.daemon().client().audit(&s, &Default::default()).await.expect("GET the audit trail");
    let kinds: Vec<&EventType> = audit.events.iter().map(|e| &e.kind).collect();
    assert!(kinds.contains(&&EventType::FileChanged) && kinds.contains(&&EventType::CommandRan), "{audit:?}");

    // Reads need no approval, but stay in the cwd too.
    let t = rig.start_turn(&s, "READ: inside.txt\nREAD: /etc/hostname").await;
    rig.wait_turn_completed(&s, &t).await;
    let events = rig.daemon().events(Some(&s), 0).await;
    let text = turn_text(&events, &t, Some(ChunkKind::Text));
    assert!(text.contains("read inside.txt: hello") && text.contains("read refused"), "{text}");
}

#[tokio::test]
async fn a_jailed_offline_session_runs_the_agents_terminal_in_its_jail() {
    assert!(bosun_isolation::jail::bwrap_path().is_some(), "bwrap is missing: run tests/run, which installs it");
    let rig = rig_with("jailed", |_, _| standin("jailed", &[]));
    let work = rig.workdir("jailed");
    // An unverified agent, allowed plan-only because the jail bounds it.
    let s = create_ok(
        &rig,
        &CreateSessionRequest { sandbox: Sandbox::Bwrap, ..session("jailed", &work, Policy::PlanOnly) },
    )
    .await;
    let store = rig.daemon().data_dir.join("store");
    assert!(store.exists());
    let probe = format!("TERM: test -e {} && echo SEES-STORE || echo NO-STORE; touch here.txt", store.display());
    let t = rig.start_turn(&s, &probe).await;
    let approval = rig.wait_pending_approval(&s).await;
    rig.decide(&approval, Decision::Accept).await;
    rig.wait_turn_completed(&s, &t).await;
    let events = rig.daemon().events(Some(&s), 0).await;
    let output = turn_text(&events, &t, Some(ChunkKind::CommandOutput));
    assert!(output.contains("NO-STORE"), "the daemon's data dir is hidden in the jail; the command saw: {output:?}");
    assert!(work.join("here.txt").exists(), "the cwd is writable in the jail");
    let _ = TURN_LIMIT;
}
