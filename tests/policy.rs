//! Plan-only holds for every agent, however it is configured (issue 10,
//! docs/SECURITY.md "Enforcement"): the daemon picks the agent's asking mode,
//! tells what it enforces and how, carries out the acts an agent asks it
//! for under its own approvals, and stops an agent caught acting unasked.
//!
//! The real codex-acp runs against the scripted model server; the other
//! agents are `examples/acp_standin.rs`, told by its environment who to be.

mod common;

use common::agents::{codex_acp_bin, standin_bin, toml_str, Rig, TURN_LIMIT};
use common::*;
use serde_json::{json, Value};
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

async fn create(rig: &Rig, body: Value) -> (u16, Value) {
    rig.daemon().post("/api/v1/sessions", body).await
}

async fn create_ok(rig: &Rig, body: Value) -> String {
    let (status, answer) = create(rig, body.clone()).await;
    assert_eq!(status, 201, "create {body}: {answer}");
    answer["id"].as_str().expect("id").to_string()
}

async fn provider(rig: &Rig, name: &str) -> Value {
    let list = rig.daemon().ok_get("/api/v1/providers").await;
    list["providers"].as_array().and_then(|l| l.iter().find(|p| p["name"] == name).cloned()).unwrap_or_else(|| {
        panic!("{name} is not listed: {list}");
    })
}

fn events_of<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == kind).collect()
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
    let s = rig.new_session(&work, "plan-only").await;
    let listed = provider(&rig, "acp-bare").await;
    assert_eq!(listed["enforcement"], "agent-mode", "{listed}");
    assert_eq!(listed["agent"], "codex-acp", "known by what it says at initialize: {listed}");

    let t = rig.start_turn(&s, "RUN: echo hi > out.txt").await;
    let approval = rig.wait_pending_approval(&s).await;
    assert!(approval["action"]["command"].as_str().is_some_and(|c| c.contains("echo hi")), "{approval}");
    assert!(!work.join("out.txt").exists(), "the command ran before its approval");
    rig.decide(&approval, "decline").await;
    rig.wait_turn_end(&s, &t).await;
    assert!(!work.join("out.txt").exists(), "a declined command ran");
    let events = rig.daemon().events(Some(&s), 0).await;
    assert!(events_of(&events, "policy:violation").is_empty(), "{events:#?}");
}

#[tokio::test]
async fn codex_acp_args_that_weaken_the_policy_are_overridden_with_a_warning_that_names_them() {
    let rig = rig_with("acp-never", |_, home| codex_acp("acp-never", &["-c", "approval_policy=never"], home));
    let work = rig.workdir("never");
    let s = rig.new_session(&work, "plan-only").await;
    let t = rig.start_turn(&s, "RUN: echo hi > out.txt").await;
    let approval = rig.wait_pending_approval(&s).await;
    assert!(!work.join("out.txt").exists(), "the command ran before its approval");
    rig.decide(&approval, "decline").await;
    rig.wait_turn_end(&s, &t).await;
    assert!(!work.join("out.txt").exists(), "a declined command ran");
    let events = rig.daemon().events(Some(&s), 0).await;
    let warned = events_of(&events, "diagnostics:log").into_iter().any(|e| {
        e["data"]["level"] == "warn"
            && e["data"]["message"].as_str().is_some_and(|m| m.contains("approval_policy=never"))
    });
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
    let s = create_ok(&rig, json!({"provider": "renamed", "cwd": work, "policy": "full-access"})).await;
    let (status, body) = rig
        .daemon()
        .request(reqwest::Method::PATCH, &format!("/api/v1/sessions/{s}"), Some(json!({"policy": "plan-only"})))
        .await;
    assert_eq!(status, 200, "{body}");
    let t = rig.start_turn(&s, "RUN: echo hi > out.txt").await;
    let approval = rig.wait_pending_approval(&s).await;
    assert!(!work.join("out.txt").exists(), "the command ran before its approval");
    rig.decide(&approval, "decline").await;
    rig.wait_turn_end(&s, &t).await;
    assert!(!work.join("out.txt").exists(), "a declined command ran");
    let listed = provider(&rig, "renamed").await;
    assert_eq!((&listed["agent"], &listed["enforcement"]), (&json!("codex-acp"), &json!("agent-mode")), "{listed}");
    let events = rig.daemon().events(Some(&s), 0).await;
    let restarted = events_of(&events, "diagnostics:log")
        .into_iter()
        .any(|e| e["data"]["message"].as_str().is_some_and(|m| m.contains("says it is codex-acp")));
    assert!(restarted, "the agent was started again with the daemon's settings: {events:#?}");
}

#[tokio::test]
async fn a_read_only_command_codex_runs_by_itself_is_audited_as_its_safe_list_not_as_a_violation() {
    let rig = rig_with("acp-bare", |_, home| codex_acp("acp-bare", &[], home));
    let work = rig.workdir("safe");
    std::fs::write(work.join("listed.txt"), "x").expect("a file to list");
    let s = rig.new_session(&work, "plan-only").await;
    let t = rig.start_turn(&s, "RUN: ls").await;
    rig.wait_turn_completed(&s, &t).await;
    let events = rig.daemon().events(Some(&s), 0).await;
    assert!(events_of(&events, "approval:requested").is_empty(), "codex asks for nothing on its safe list");
    assert!(events_of(&events, "policy:violation").is_empty(), "{events:#?}");
    let ran: Vec<&Value> = events_of(&events, "command:ran");
    assert!(
        ran.iter().any(|e| e["data"]["command"]["approval"] == "agent-safe-list"
            && e["data"]["command"]["command"].as_str().is_some_and(|c| c.contains("ls"))),
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
    let s = rig.new_session(&work, "plan-only").await;
    let t = rig.start_turn(&s, "hello\nSWITCH: bypassPermissions").await;
    rig.wait_turn_completed(&s, &t).await;

    let modes = set_modes(&log);
    // Once at the probe and once at the session's start, then once to undo
    // the agent's own switch: always to the mode that asks.
    assert!(modes.len() >= 2 && modes.iter().all(|m| m == "default"), "set_mode calls: {modes:?}");
    let events = rig.daemon().events(Some(&s), 0).await;
    let restored = events_of(&events, "policy:mode_restored");
    assert_eq!(restored.len(), 1, "{events:#?}");
    assert_eq!(
        (&restored[0]["data"]["from"], &restored[0]["data"]["to"]),
        (&json!("bypassPermissions"), &json!("default"))
    );
    let text = turn_text(&events, &t, Some("text"));
    assert!(text.contains("mode now default"), "the agent ended in {text:?}");
    let listed = provider(&rig, "claude-like").await;
    assert_eq!(listed["enforcement"], "agent-mode", "{listed}");
    assert!(listed["enforcement_detail"].as_str().is_some_and(|d| d.contains("\"default\"")), "{listed}");
}

#[tokio::test]
async fn an_agent_that_acts_without_asking_is_stopped_and_its_provider_is_no_longer_trusted() {
    let mut rig = rig_with("rogue", |_, _| {
        standin("rogue", &[("STANDIN_NAME", "claude-agent-acp"), ("STANDIN_MODES", CLAUDE_MODES)])
    });
    let work = rig.workdir("rogue");
    let s = rig.new_session(&work, "plan-only").await;
    assert_eq!(provider(&rig, "rogue").await["enforcement"], "agent-mode");
    let t = rig.start_turn(&s, "ACT: touch pwned.txt\nSLEEP: 5000\nstill here").await;
    let done = rig.wait_turn_end(&s, &t).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert!(done["reason"].as_str().is_some_and(|r| r.contains("without an approval")), "{done}");

    let events = rig.daemon().events(Some(&s), 0).await;
    let violations = events_of(&events, "policy:violation");
    assert_eq!(violations.len(), 1, "{events:#?}");
    let v = &violations[0]["data"];
    assert_eq!((&v["turn_id"], &v["provider"]), (&json!(t), &json!("rogue")), "{v}");
    assert!(v["what"].as_str().is_some_and(|w| w.contains("touch pwned.txt")), "{v}");
    let ran = events_of(&events, "command:ran");
    assert!(ran.iter().any(|e| e["data"]["command"]["approval"] == "none"), "{ran:#?}");
    assert!(!turn_text(&events, &t, None).contains("still here"), "the turn went on after the violation");

    let session = rig.daemon().ok_get(&format!("/api/v1/sessions/{s}")).await;
    assert_eq!(session["violation"]["turn_id"], json!(t), "the session keeps it: {session}");
    assert_eq!(session["violation"]["provider"], "rogue", "{session}");
    let listed = provider(&rig, "rogue").await;
    assert_eq!(listed["enforcement"], "unverified", "{listed}");
    let (status, refused) = create(&rig, json!({"provider": "rogue", "cwd": work, "policy": "plan-only"})).await;
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["error"]["code"], "policy_unenforceable", "{refused}");
    let message = refused["error"]["message"].as_str().unwrap_or("");
    assert!(message.contains("full-access") && message.contains("bwrap"), "the message says what to do: {message}");
    // The session it broke in cannot start another plan-only turn either.
    let (status, body) = rig.daemon().post(&format!("/api/v1/sessions/{s}/turns"), json!({"text": "again"})).await;
    assert_eq!((status, &body["error"]["code"]), (409, &json!("policy_unenforceable")), "{body}");
    // Full access is still allowed: the daemon accepts everything there anyway.
    create_ok(&rig, json!({"provider": "rogue", "cwd": work, "policy": "full-access"})).await;

    // Kept with the provider, across a kill -9.
    rig.restart_daemon();
    assert_eq!(provider(&rig, "rogue").await["enforcement"], "unverified");
    let (status, _) = create(&rig, json!({"provider": "rogue", "cwd": work, "policy": "plan-only"})).await;
    assert_eq!(status, 409);
}

#[tokio::test]
async fn an_unknown_agent_without_modes_is_unverified_and_refused_plan_only_unless_jailed_offline() {
    let rig = rig_with("stranger", |_, _| standin("stranger", &[]));
    let work = rig.workdir("stranger");
    assert_eq!(provider(&rig, "stranger").await["enforcement"], "unknown", "not started yet");
    let (status, refused) = create(&rig, json!({"provider": "stranger", "cwd": work, "policy": "plan-only"})).await;
    assert_eq!((status, &refused["error"]["code"]), (409, &json!("policy_unenforceable")), "{refused}");
    let listed = provider(&rig, "stranger").await;
    assert_eq!(listed["enforcement"], "unverified", "learned by starting it once: {listed}");
    assert_eq!(listed["agent"], "standin-agent", "{listed}");
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
    let s = create_ok(&other, json!({"provider": "stranger2", "cwd": work, "policy": "full-access"})).await;
    let (status, body) = other
        .daemon()
        .request(reqwest::Method::PATCH, &format!("/api/v1/sessions/{s}"), Some(json!({"policy": "plan-only"})))
        .await;
    assert_eq!(status, 200, "nothing is known of it yet: {body}");
    let t = other.start_turn(&s, "ACT: touch should-not-run.txt").await;
    let done = other.wait_turn_end(&s, &t).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert!(done["reason"].as_str().is_some_and(|r| r.contains("cannot be held to plan-only")), "{done}");
    assert!(!work.join("should-not-run.txt").exists(), "the agent was prompted");
    let (status, body) = other
        .daemon()
        .request(reqwest::Method::PATCH, &format!("/api/v1/sessions/{s}"), Some(json!({"policy": "plan-only"})))
        .await;
    assert_eq!((status, &body["error"]["code"]), (409, &json!("policy_unenforceable")), "{body}");
}

#[tokio::test]
async fn an_agents_terminal_and_writes_go_through_the_daemon_under_its_approvals() {
    let rig = rig_with("helper", |_, _| {
        standin("helper", &[("STANDIN_NAME", "claude-agent-acp"), ("STANDIN_MODES", CLAUDE_MODES)])
    });
    let work = rig.workdir("helped");
    let s = rig.new_session(&work, "plan-only").await;

    // A command the agent has the daemon run waits for its approval.
    let t = rig.start_turn(&s, "TERM: echo from-terminal > t.txt && echo printed").await;
    let approval = rig.wait_pending_approval(&s).await;
    assert_eq!(approval["action"]["kind"], "command", "{approval}");
    assert!(approval["action"]["command"].as_str().is_some_and(|c| c.contains("echo from-terminal")), "{approval}");
    assert!(!work.join("t.txt").exists(), "the command ran before its approval");
    rig.decide(&approval, "accept").await;
    rig.wait_turn_completed(&s, &t).await;
    assert_eq!(std::fs::read_to_string(work.join("t.txt")).unwrap_or_default().trim(), "from-terminal");
    let events = rig.daemon().events(Some(&s), 0).await;
    assert!(turn_text(&events, &t, Some("command_output")).contains("printed"), "output streams like any other");
    assert!(turn_text(&events, &t, Some("text")).contains("terminal exit 0"), "{events:#?}");
    let ran: Vec<&Value> =
        events_of(&events, "command:ran").into_iter().filter(|e| e["data"]["turn_id"] == t).collect();
    assert_eq!(ran.len(), 1, "recorded once (not again as the agent's tool call): {ran:#?}");
    assert_eq!(ran[0]["data"]["command"]["approval"], "user", "{ran:#?}");
    assert_eq!(ran[0]["data"]["command"]["exit_code"], 0, "{ran:#?}");
    assert!(events_of(&events, "policy:violation").is_empty(), "{events:#?}");

    // Declined: it does not run.
    let t = rig.start_turn(&s, "TERM: echo no > n.txt").await;
    let approval = rig.wait_pending_approval(&s).await;
    rig.decide(&approval, "decline").await;
    rig.wait_turn_completed(&s, &t).await;
    assert!(!work.join("n.txt").exists(), "a declined terminal ran");
    let events = rig.daemon().events(Some(&s), 0).await;
    assert!(turn_text(&events, &t, Some("text")).contains("terminal refused"), "{events:#?}");

    // Writes: outside the cwd refused outright; inside, after an approval.
    let outside = work.parent().expect("parent").join("outside.txt");
    let t = rig.start_turn(&s, &format!("WRITE: {} nope\nWRITE: inside.txt hello", outside.display())).await;
    let approval = rig.wait_pending_approval(&s).await;
    assert_eq!(approval["action"]["kind"], "file_change", "{approval}");
    assert!(approval["action"]["path"].as_str().is_some_and(|p| p.ends_with("inside.txt")), "{approval}");
    assert!(!work.join("inside.txt").exists(), "written before its approval");
    rig.decide(&approval, "accept").await;
    rig.wait_turn_completed(&s, &t).await;
    assert!(!outside.exists(), "a write outside the cwd happened");
    assert_eq!(std::fs::read_to_string(work.join("inside.txt")).unwrap_or_default(), "hello");
    let events = rig.daemon().events(Some(&s), 0).await;
    let text = turn_text(&events, &t, Some("text"));
    assert!(text.contains("write refused") && text.contains("outside the session's working directory"), "{text}");
    let changed: Vec<&Value> =
        events_of(&events, "file:changed").into_iter().filter(|e| e["data"]["turn_id"] == t).collect();
    assert_eq!(changed.len(), 1, "the daemon's write, once (not again as the agent's edit): {changed:#?}");
    assert_eq!(changed[0]["data"]["approval"], "user");
    let audit = rig.daemon().ok_get(&format!("/api/v1/sessions/{s}/audit")).await;
    let kinds: Vec<&str> =
        audit["events"].as_array().map(|a| a.iter().filter_map(|e| e["type"].as_str()).collect()).unwrap_or_default();
    assert!(kinds.contains(&"file:changed") && kinds.contains(&"command:ran"), "{audit}");

    // Reads need no approval, but stay in the cwd too.
    let t = rig.start_turn(&s, "READ: inside.txt\nREAD: /etc/hostname").await;
    rig.wait_turn_completed(&s, &t).await;
    let events = rig.daemon().events(Some(&s), 0).await;
    let text = turn_text(&events, &t, Some("text"));
    assert!(text.contains("read inside.txt: hello") && text.contains("read refused"), "{text}");
}

#[tokio::test]
async fn a_jailed_offline_session_runs_the_agents_terminal_in_its_jail() {
    assert!(bosun_isolation::jail::bwrap_path().is_some(), "bwrap is missing: run tests/run, which installs it");
    let rig = rig_with("jailed", |_, _| standin("jailed", &[]));
    let work = rig.workdir("jailed");
    // An unverified agent, allowed plan-only because the jail bounds it.
    let s =
        create_ok(&rig, json!({"provider": "jailed", "cwd": work, "policy": "plan-only", "sandbox": "bwrap"})).await;
    let store = rig.daemon().data_dir.join("store");
    assert!(store.exists());
    let probe = format!("TERM: test -e {} && echo SEES-STORE || echo NO-STORE; touch here.txt", store.display());
    let t = rig.start_turn(&s, &probe).await;
    let approval = rig.wait_pending_approval(&s).await;
    rig.decide(&approval, "accept").await;
    rig.wait_turn_completed(&s, &t).await;
    let events = rig.daemon().events(Some(&s), 0).await;
    let output = turn_text(&events, &t, Some("command_output"));
    assert!(output.contains("NO-STORE"), "the daemon's data dir is hidden in the jail; the command saw: {output:?}");
    assert!(work.join("here.txt").exists(), "the cwd is writable in the jail");
    let _ = TURN_LIMIT;
}
