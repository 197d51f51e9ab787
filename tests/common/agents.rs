//! Real agents under test: the native `codex` and `codex-acp` binaries that
//! `tests/run` installs, a scripted model server (`examples/mock_model.rs`)
//! they talk to offline, and the scenarios both providers must pass.
//!
//! The scenarios live here so the codex app-server and ACP test files run
//! exactly the same checks; each test file only picks the provider.

use super::{
    data_of, datas_of, event_of_turn, events_of, path_string, payload, tempdir, turn_completed, turn_text, Daemon,
    Options,
};
use bosun_proto::events::{ProviderStatusEvent, ProviderStatusKind, TurnCompleted};
use bosun_proto::{
    Action, ApprovalStatus, ApprovalView, ChunkKind, CreateSessionRequest, DecidedBy, Decision, EndedBy, Envelope,
    EventData, EventType, Policy, ProviderView, Sandbox, ToolKind, TurnStatus, Usage,
};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

const INSTALL_HINT: &str = "run tests/run to install the test agents";
/// How long a turn of the scripted model may take, agent start-up included.
pub const TURN_LIMIT: Duration = Duration::from_secs(30);
/// The provider names the daemon config below declares.
pub const CODEX: &str = "codex";
pub const CODEX_ACP: &str = "codex-acp";

fn agents_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("agents").join("node_modules")
}

fn npm_arch() -> &'static str {
    if cfg!(target_arch = "aarch64") {
        "arm64"
    } else {
        "x64"
    }
}

fn required(path: PathBuf) -> PathBuf {
    assert!(path.is_file(), "{} is missing: {INSTALL_HINT}", path.display());
    path
}

/// The native codex binary (not the Node wrapper, which does not forward signals).
pub fn codex_bin() -> PathBuf {
    let triple = format!("{}-unknown-linux-musl", std::env::consts::ARCH);
    required(
        agents_dir()
            .join("@openai")
            .join(format!("codex-linux-{}", npm_arch()))
            .join("vendor")
            .join(triple)
            .join("bin")
            .join("codex"),
    )
}

pub fn codex_acp_bin() -> PathBuf {
    required(
        agents_dir()
            .join("@zed-industries")
            .join(format!("codex-acp-linux-{}", npm_arch()))
            .join("bin")
            .join("codex-acp"),
    )
}

/// `target/<profile>/examples/mock_model`, built once if `cargo test` did not
/// (it does not when a single `--test` is asked for).
pub fn mock_model_bin() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| example_bin("mock_model")).clone()
}

/// `target/<profile>/examples/acp_standin`: the stand-in ACP agent.
pub fn standin_bin() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| example_bin("acp_standin")).clone()
}

/// An example program of this package, built if it is not there yet.
fn example_bin(name: &str) -> PathBuf {
    let profile_dir = Path::new(super::BIN).parent().expect("bosun binary has a directory");
    let path = profile_dir.join("examples").join(name);
    if !path.is_file() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build.args(["build", "--quiet", "--example", name]).current_dir(env!("CARGO_MANIFEST_DIR"));
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        let status = build.status().unwrap_or_else(|e| panic!("run cargo build --example {name}: {e}"));
        assert!(status.success(), "cargo build --example {name} failed");
        assert!(path.is_file(), "{} still missing after building it", path.display());
    }
    path
}

/// The scripted Responses API server, killed on drop.
pub struct MockModel {
    child: Child,
    /// `http://127.0.0.1:PORT/v1`
    pub url: String,
    stderr: Arc<Mutex<String>>,
}

impl MockModel {
    /// Starts the server and writes a `CODEX_HOME` pointing at it.
    pub fn start(codex_home: &Path) -> MockModel {
        let mut child = Command::new(mock_model_bin())
            .arg("--codex-home")
            .arg(codex_home)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn mock_model");
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let pipe = child.stderr.take().expect("mock_model stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                sink.lock().unwrap().push_str(&format!("{line}\n"));
            }
        });
        let stdout = child.stdout.take().expect("mock_model stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            for _ in lines {}
        });
        let Ok(url) = rx.recv_timeout(Duration::from_secs(20)) else {
            let _ = child.kill();
            panic!("mock_model did not print its URL; stderr:\n{}", stderr.lock().unwrap());
        };
        MockModel { child, url: url.trim().to_string(), stderr }
    }

    /// Every request body the model received, oldest first.
    pub async fn requests(&self) -> Vec<Value> {
        let body: Value = reqwest::get(format!("{}/requests", self.url))
            .await
            .expect("GET mock_model /requests")
            .json()
            .await
            .expect("requests JSON");
        body.as_array().cloned().unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for MockModel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn toml_str(text: &str) -> String {
    // JSON string escapes are valid TOML basic-string escapes.
    Value::String(text.to_string()).to_string()
}

/// A daemon config declaring the two real providers, both on `codex_home`.
pub fn daemon_config(codex_home: &Path) -> String {
    let home = toml_str(&codex_home.to_string_lossy());
    format!(
        r#"discover_agents = false

[providers.{CODEX}]
kind = "codex-app-server"
command = {codex}
args = ["app-server"]
env = {{ CODEX_HOME = {home} }}

[providers.{CODEX_ACP}]
kind = "acp"
command = {acp}
# No args: the daemon itself makes codex-acp ask before it acts.
env = {{ CODEX_HOME = {home} }}
"#,
        codex = toml_str(&codex_bin().to_string_lossy()),
        acp = toml_str(&codex_acp_bin().to_string_lossy()),
    )
}

/// A daemon, a model server and a scratch directory for one test.
pub struct Rig {
    pub provider: &'static str,
    pub model: MockModel,
    /// Always `Some` outside `restart_daemon`.
    daemon: Option<Daemon>,
    pub codex_home: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Rig {
    pub fn start(provider: &'static str) -> Rig {
        Rig::start_with(provider, "", Options::default())
    }

    /// With more config after the providers' (an `[auth]` section, say).
    pub fn start_with(provider: &'static str, extra_config: &str, options: Options) -> Rig {
        Rig::start_configured(provider, |_, _| extra_config.to_string(), options)
    }

    /// With more config made from the rig's dir and codex home (more
    /// providers on the same model server, say).
    pub fn start_configured(
        provider: &'static str,
        extra_config: impl FnOnce(&Path, &Path) -> String,
        options: Options,
    ) -> Rig {
        let dir = tempdir();
        let codex_home = dir.path().join("codex-home");
        let model = MockModel::start(&codex_home);
        let config = format!("{}\n{}", daemon_config(&codex_home), extra_config(dir.path(), &codex_home));
        let daemon = Daemon::start(&dir.path().join("data"), Options { config: Some(config), ..options });
        Rig { provider, model, daemon: Some(daemon), codex_home, dir }
    }

    pub fn daemon(&self) -> &Daemon {
        self.daemon.as_ref().expect("a daemon")
    }

    /// kill -9 and start again on the same data dir.
    pub fn restart_daemon(&mut self) {
        let daemon = self.daemon.take().expect("a daemon");
        self.daemon = Some(daemon.restart());
    }

    /// A fresh, empty working directory under the test's temp dir.
    pub fn workdir(&self, name: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::create_dir_all(&path).expect("create workdir");
        path
    }

    pub async fn new_session(&self, cwd: &Path, policy: Policy) -> String {
        let req = CreateSessionRequest {
            provider: self.provider.to_string(),
            cwd: Some(path_string(cwd)),
            title: Some("agent test".into()),
            policy: Some(policy),
            ..Default::default()
        };
        self.daemon().create_session(&req).await.id.into_string()
    }

    /// What to print when a wait fails: the last events, the daemon's and the
    /// model's logs.
    pub async fn context(&self, session: &str) -> String {
        let events = self.daemon().events(Some(session), 0).await;
        let recent: Vec<String> =
            events.iter().rev().take(25).rev().map(|e| format!("  {} {}", e.kind, e.data)).collect();
        let daemon_log = tail(&self.daemon().stderr(), 40);
        let model_log = tail(&self.model.stderr(), 10);
        format!(
            "last events of {session}:\n{}\ndaemon log (tail):\n{daemon_log}\nmock_model log (tail):\n{model_log}",
            recent.join("\n")
        )
    }

    /// Polls the session's events until `pred` finds something, or fails
    /// with the context after `limit`.
    pub async fn wait_for<T>(
        &self,
        session: &str,
        what: &str,
        limit: Duration,
        pred: impl Fn(&[Envelope]) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + limit;
        loop {
            let events = self.daemon().events(Some(session), 0).await;
            if let Some(found) = pred(&events) {
                return found;
            }
            if Instant::now() > deadline {
                panic!(
                    "{}: timed out after {limit:?} waiting for {what}\n{}",
                    self.provider,
                    self.context(session).await
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn wait_turn_end(&self, session: &str, turn: &str) -> TurnCompleted {
        self.wait_for(session, &format!("the end of turn {turn}"), TURN_LIMIT, |events| turn_completed(events, turn))
            .await
    }

    /// Waits for the turn to end and insists it completed.
    pub async fn wait_turn_completed(&self, session: &str, turn: &str) -> TurnCompleted {
        let done = self.wait_turn_end(session, turn).await;
        if done.status != TurnStatus::Completed {
            panic!("{}: turn {turn} ended {done:?}, not completed\n{}", self.provider, self.context(session).await);
        }
        done
    }

    pub async fn wait_pending_approval(&self, session: &str) -> ApprovalView {
        let deadline = Instant::now() + TURN_LIMIT;
        let query = bosun_proto::ApprovalsQuery { status: Some("pending".into()), session: Some(session.into()) };
        loop {
            let list = self.daemon().client().approvals(&query).await.expect("GET /api/v1/approvals");
            if let Some(approval) = list.approvals.into_iter().next() {
                return approval;
            }
            if Instant::now() > deadline {
                panic!("{}: no approval was requested\n{}", self.provider, self.context(session).await);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn decide(&self, approval: &ApprovalView, decision: Decision) -> ApprovalView {
        self.daemon().decide(approval.id.as_str(), decision).await
    }

    pub async fn start_turn(&self, session: &str, text: &str) -> String {
        self.daemon().start_turn(session, text).await
    }

    /// The provider as `GET /api/v1/providers` lists it.
    pub async fn provider(&self, name: &str) -> ProviderView {
        let list = self.daemon().client().providers().await.expect("GET /api/v1/providers");
        let names: Vec<String> = list.providers.iter().map(|p| p.name.clone()).collect();
        list.providers.into_iter().find(|p| p.name == name).unwrap_or_else(|| panic!("{name} is not listed: {names:?}"))
    }
}

impl Drop for Rig {
    /// A graceful stop, so the daemon takes its agent processes down with it
    /// (kill -9 would leave codex-acp running: it ignores stdin EOF).
    fn drop(&mut self) {
        let Some(daemon) = self.daemon.take() else { return };
        daemon.check_events();
        let pid = daemon.pid();
        unsafe {
            libc::kill(pid as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while pid_alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(daemon);
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The `provider:status` events of a session, with their envelopes, whose
/// status `pick` takes, in order.
pub fn provider_statuses<T>(
    events: &[Envelope],
    pick: impl Fn(&ProviderStatusKind) -> Option<T>,
) -> Vec<(&Envelope, T)> {
    events_of!(events, ProviderStatus)
        .into_iter()
        .filter_map(|(e, ProviderStatusEvent { status, .. })| pick(&status).map(|t| (e, t)))
        .collect()
}

/// The pids of the session's `provider:status running` events, in order
/// (`None` where the agent's pid was not known).
fn running_pids(events: &[Envelope]) -> Vec<(&Envelope, Option<u32>)> {
    provider_statuses(events, |status| match status {
        ProviderStatusKind::Running { pid, .. } => Some(*pid),
        _ => None,
    })
}

/// The session's `provider:status bound` events, in order: the binding and
/// whether it was resumed.
fn bindings(events: &[Envelope]) -> Vec<(&Envelope, Value, bool)> {
    provider_statuses(events, |status| match status {
        ProviderStatusKind::Bound { binding, resumed } => Some((binding.clone(), *resumed)),
        _ => None,
    })
    .into_iter()
    .map(|(e, (binding, resumed))| (e, binding, resumed))
    .collect()
}

/// Everything a turn showed about its tools: tool call titles, details and
/// outputs, and command output chunks.
fn tool_evidence(events: &[Envelope], turn: &str) -> String {
    let mut text = turn_text(events, turn, Some(ChunkKind::CommandOutput));
    for event in events.iter().filter(|e| e.kind == EventType::ToolCall || e.kind == EventType::ToolUpdate) {
        let about_turn = match payload(event) {
            EventData::ToolCall(call) => call.turn_id == turn,
            EventData::ToolUpdate(update) => update.turn_id == turn,
            _ => false,
        };
        if about_turn {
            text.push('\n');
            text.push_str(&event.data.to_string());
        }
    }
    text
}

fn usage_of(usage: &Usage) -> (u64, u64) {
    (usage.input_tokens, usage.output_tokens)
}

// ---------------------------------------------------------------------------
// Processes

/// One live process, as /proc shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Proc {
    pub pid: u32,
    pub ppid: u32,
    pub start_ticks: u64,
    pub cmdline: String,
}

fn read_proc(pid: u32) -> Option<Proc> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    if fields.first() == Some(&"Z") || fields.first() == Some(&"X") {
        return None;
    }
    let ppid = fields.get(1)?.parse().ok()?;
    let start_ticks = fields.get(19)?.parse().ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ").trim_end().to_string();
    Some(Proc { pid, ppid, start_ticks, cmdline })
}

/// Every live (non-zombie) process.
pub fn processes() -> Vec<Proc> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries.flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).filter_map(read_proc).collect()
}

/// The processes whose command line holds `marker`, and all their descendants.
pub fn process_tree_with(marker: &str) -> Vec<Proc> {
    let all = processes();
    let mut found: Vec<Proc> = all.iter().filter(|p| p.cmdline.contains(marker)).cloned().collect();
    let mut i = 0;
    while i < found.len() {
        let parent = found[i].pid;
        for child in all.iter().filter(|p| p.ppid == parent) {
            if !found.iter().any(|f| f.pid == child.pid) {
                found.push(child.clone());
            }
        }
        i += 1;
    }
    found
}

/// Whether this very process (same pid, same start time) still runs.
pub fn still_alive(process: &Proc) -> bool {
    read_proc(process.pid).is_some_and(|now| now.start_ticks == process.start_ticks)
}

fn pid_alive(pid: u32) -> bool {
    read_proc(pid).is_some()
}

// ---------------------------------------------------------------------------
// Scenarios, run by tests/agents_codex.rs and tests/agents_acp.rs.

/// A text-only turn streams the model's echo, and its usage is recorded on
/// the turn and summed on the session; the provider list shows the agent.
pub async fn text_turn(provider: &'static str) {
    let rig = Rig::start(provider);
    let work = rig.workdir("work");
    let s = rig.new_session(&work, Policy::PlanOnly).await;
    let t = rig.start_turn(&s, "hello there").await;
    let done = rig.wait_turn_completed(&s, &t).await;
    let events = rig.daemon().events(Some(&s), 0).await;
    let text = turn_text(&events, &t, Some(ChunkKind::Text));
    assert!(text.contains("echo: hello there"), "{provider}: the reply was {text:?}");

    let (input, output) = usage_of(&done.usage);
    if provider == CODEX {
        // One model call: the mock's fixed 100 in, 7 out.
        assert_eq!((input, output), (100, 7), "{provider}: the usage of turn:completed: {done:?}");
    } else {
        // codex-acp reports only `usage_update.used`: the tokens in its
        // context window, shown as such and not as tokens spent.
        let context = done.usage.context_tokens.unwrap_or(0);
        assert!(context >= 107, "{provider}: turn:completed carries no context size: {done:?}");
        assert_eq!((input, output), (0, 0), "{provider}: the context size must not count as tokens spent: {done:?}");
    }
    let t2 = rig.start_turn(&s, "and again").await;
    let done2 = rig.wait_turn_completed(&s, &t2).await;
    let (input2, output2) = usage_of(&done2.usage);
    let session = rig.daemon().client().session(&s).await.expect("GET /api/v1/sessions/{id}").session;
    assert_eq!(
        usage_of(&session.usage),
        (input + input2, output + output2),
        "{provider}: the session's usage must be the sum of its turns' ({done:?} + {done2:?}): {session:?}"
    );
    if provider != CODEX {
        // Not summed: the session shows the latest size (codex-acp takes it
        // from the model's last reported total, a fixed 107 from the mock).
        let second = done2.usage.context_tokens;
        assert_eq!(second, Some(107), "{provider}: {done2:?}");
        assert_eq!(session.usage.context_tokens, second, "{provider}: {session:?}");
    }

    let providers = rig.daemon().client().providers().await.expect("GET /api/v1/providers");
    let list = &providers.providers;
    for name in [CODEX, CODEX_ACP] {
        let entry = list
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("{name} missing from GET /api/v1/providers: {providers:?}"));
        let status = entry.status.as_str();
        assert!(status == "available" || status == "running", "{name}: status {status:?}: {entry:?}");
    }
    // codex-acp has no `--version`: its version is known once it has run.
    let mine = list.iter().find(|p| p.name == provider).expect("this provider");
    assert!(mine.version.as_deref().is_some_and(|v| !v.is_empty()), "{provider}: no version: {mine:?}");
    assert_eq!(mine.status, "running", "{provider} has a live session: {mine:?}");
}

/// plan-only: a command waits for a decision; accept runs it, decline (in a
/// fresh session) does not and the model hears of the refusal.
pub async fn plan_only_accept_and_decline(provider: &'static str) {
    let rig = Rig::start(provider);
    let work = rig.workdir("accept");
    let s = rig.new_session(&work, Policy::PlanOnly).await;
    let t = rig.start_turn(&s, "RUN: echo bosun-ran > proof.txt").await;
    let approval = rig.wait_pending_approval(&s).await;
    let Action::Command { command, .. } = &approval.action else { panic!("{provider}: not a command: {approval:?}") };
    assert!(command.contains("echo bosun-ran"), "{provider}: the approval names the command: {approval:?}");
    assert!(!work.join("proof.txt").exists(), "{provider}: the command ran before its approval");
    let decided = rig.decide(&approval, Decision::Accept).await;
    assert_eq!(decided.status, ApprovalStatus::Accepted);
    assert_eq!(decided.decided_by, Some(DecidedBy::User));
    rig.wait_turn_completed(&s, &t).await;
    let proof = std::fs::read_to_string(work.join("proof.txt"))
        .unwrap_or_else(|e| panic!("{provider}: proof.txt after accepting: {e}"));
    assert_eq!(proof.trim(), "bosun-ran");
    let events = rig.daemon().events(Some(&s), 0).await;
    let evidence = tool_evidence(&events, &t);
    assert!(
        evidence.contains("bosun-ran"),
        "{provider}: no tool:call/tool:update or command_output shows the command; saw:\n{evidence}\n{}",
        rig.context(&s).await
    );
    let requested = event_of_turn(&events, EventType::ApprovalRequested, &t).expect("approval:requested");
    assert_eq!(data_of!(requested, ApprovalRequested).policy, Policy::PlanOnly);

    let declined_dir = rig.workdir("decline");
    let s2 = rig.new_session(&declined_dir, Policy::PlanOnly).await;
    let t2 = rig.start_turn(&s2, "RUN: echo bosun-ran > proof.txt").await;
    let approval = rig.wait_pending_approval(&s2).await;
    let decided = rig.decide(&approval, Decision::Decline).await;
    assert_eq!(decided.status, ApprovalStatus::Declined);
    rig.wait_turn_completed(&s2, &t2).await;
    assert!(!declined_dir.join("proof.txt").exists(), "{provider}: a declined command ran");
    let requests = rig.model.requests().await;
    let tool_outputs = |r: &Value| r["input"].to_string().contains("_call_output");
    if provider == CODEX_ACP {
        // codex-acp offers one way to refuse, "abort" (reject_once), which
        // cancels the agent's turn: the model is not asked again.
        let last = requests.last().expect("requests");
        assert!(!tool_outputs(last), "{provider}: unexpected tool output after an abort: {}", last["input"]);
        return;
    }
    // The model was told: a request ended with the refused call's output.
    let told = requests.iter().any(|r| {
        let input = r["input"].as_array();
        let kind = input.and_then(|i| i.last()).and_then(|l| l["type"].as_str()).unwrap_or("");
        let refused = input.is_some_and(|i| i.iter().any(|item| item.to_string().contains("rejected")));
        (kind == "function_call_output" || kind == "custom_tool_call_output") && refused
    });
    assert!(told, "{provider}: the model never got the declined call's output; requests: {requests:#?}");
}

/// plan-only: an apply_patch edit asks as a file change; `accept_for_session`
/// lets it through and the file is written; the edit shows as a tool call.
pub async fn patch_asks_as_a_file_change(provider: &'static str) {
    let rig = Rig::start(provider);
    let work = rig.workdir("patch");
    let s = rig.new_session(&work, Policy::PlanOnly).await;
    let t = rig.start_turn(&s, "PATCH: notes.txt hello from the patch").await;
    let approval = rig.wait_pending_approval(&s).await;
    let Action::FileChange { path, .. } = &approval.action else {
        panic!("{provider}: not a file change: {approval:?}")
    };
    assert!(path.contains("notes.txt"), "{provider}: the approval names the file: {approval:?}");
    assert!(!work.join("notes.txt").exists(), "{provider}: the file was written before its approval");
    let decided = rig.decide(&approval, Decision::AcceptForSession).await;
    assert_eq!(decided.status, ApprovalStatus::Accepted, "{provider}: {decided:?}");
    rig.wait_turn_completed(&s, &t).await;
    let written = std::fs::read_to_string(work.join("notes.txt"))
        .unwrap_or_else(|e| panic!("{provider}: notes.txt after accepting the patch: {e}"));
    assert_eq!(written.trim(), "hello from the patch");
    let events = rig.daemon().events(Some(&s), 0).await;
    let edit =
        datas_of!(&events, ToolCall).into_iter().find(|call| call.turn_id == t && call.tool.kind == ToolKind::Edit);
    assert!(edit.is_some(), "{provider}: no tool:call of kind edit for the patch\n{}", rig.context(&s).await);
}

/// full-access: the daemon accepts by itself and records it.
pub async fn full_access_runs_and_records(provider: &'static str) {
    let rig = Rig::start(provider);
    let work = rig.workdir("work");
    let s = rig.new_session(&work, Policy::FullAccess).await;
    let t = rig.start_turn(&s, "RUN: echo bosun-auto > auto.txt").await;
    rig.wait_turn_completed(&s, &t).await;
    let proof = std::fs::read_to_string(work.join("auto.txt"))
        .unwrap_or_else(|e| panic!("{provider}: auto.txt under full-access: {e}"));
    assert_eq!(proof.trim(), "bosun-auto");
    let events = rig.daemon().events(Some(&s), 0).await;
    let requested =
        event_of_turn(&events, EventType::ApprovalRequested, &t).expect("approval:requested kept for audit");
    let resolved = event_of_turn(&events, EventType::ApprovalResolved, &t).expect("approval:resolved kept for audit");
    assert!(requested.seq < resolved.seq);
    let asked = data_of!(requested, ApprovalRequested);
    assert!(matches!(asked.approval.action, Action::Command { .. }), "{asked:?}");
    let resolution = data_of!(resolved, ApprovalResolved);
    assert!(resolution.automatic, "{resolution:?}");
    assert_eq!(resolution.approval.decided_by, Some(DecidedBy::Policy), "{resolution:?}");
    assert_eq!(resolution.approval.status, ApprovalStatus::Accepted, "{resolution:?}");
    assert_command_audited(&rig, &s, &t, "bosun-auto").await;
}

/// A command run for the turn is in the session's audit trail with its exit
/// code and the bytes it wrote.
pub async fn assert_command_audited(rig: &Rig, session: &str, turn: &str, command_part: &str) {
    let audit = rig.daemon().client().audit(session, &Default::default()).await.expect("GET the audit trail");
    let found = datas_of!(&audit.events, CommandRan)
        .into_iter()
        .filter(|ran| ran.turn_id == turn)
        .map(|ran| ran.command)
        .find(|c| c.command.contains(command_part));
    let Some(run) = found else {
        panic!("{}: no command:ran for {command_part:?} in {audit:?}\n{}", rig.provider, rig.context(session).await);
    };
    if rig.provider == CODEX {
        assert_eq!(run.exit_code, Some(0), "{run:?}");
    } else {
        // codex-acp 0.16 announces a command but never reports its end.
        assert!(run.exit_code == Some(0) || run.ended_by == Some(EndedBy::ExitNotReported), "{run:?}");
    }
    assert!(!run.started_at.is_empty(), "{run:?}");
}

/// A real agent in a bubblewrap jail (with the network, which it needs to
/// reach its model): it works, its commands write in its cwd and nowhere
/// else on the host, and its own state dir (CODEX_HOME) stays writable.
pub async fn jailed_agent_works_inside_its_jail(provider: &'static str) {
    let options = Options { admin_token: true, ..Options::default() };
    let rig = Rig::start_with(provider, "[auth]\nrequire = \"always\"\n", options);
    let work = rig.workdir("work");
    // Not under /tmp, which the jail replaces with its own: the host's
    // read-only view must be what stops the write.
    let outside = tempfile::Builder::new().prefix("outside").tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let req = CreateSessionRequest {
        provider: provider.to_string(),
        cwd: Some(path_string(&work)),
        policy: Some(Policy::FullAccess),
        sandbox: Sandbox::Bwrap,
        network: true,
        ..Default::default()
    };
    let s = rig.daemon().create_session(&req).await.id.into_string();
    let escape = outside.path().join("escape.txt");
    let t =
        rig.start_turn(&s, &format!("RUN: echo jailed > inside.txt; touch {} || echo refused", escape.display())).await;
    rig.wait_turn_completed(&s, &t).await;
    assert_eq!(std::fs::read_to_string(work.join("inside.txt")).unwrap_or_default().trim(), "jailed");
    assert!(!escape.exists(), "{provider}: a jailed agent's command wrote outside its cwd");
    let events = rig.daemon().events(Some(&s), 0).await;
    let output = turn_text(&events, &t, None);
    let refused = ["refused", "Read-only", "cannot touch"].iter().any(|w| output.contains(w));
    assert!(refused, "{provider}: the write outside was not refused: {output}");
    assert_command_audited(&rig, &s, &t, "inside.txt").await;
}

/// Interrupting a turn whose command runs ends it `interrupted` quickly and
/// leaves no process of the command behind.
pub async fn interrupt_kills_the_command(provider: &'static str) {
    let rig = Rig::start(provider);
    let work = rig.workdir("work");
    let s = rig.new_session(&work, Policy::PlanOnly).await;
    let marker = format!("bosun-marker-{}", uuid::Uuid::new_v4().simple());
    // `sh -c` with two commands cannot exec `sleep`, so the marker stays in a
    // live command line for as long as the sleep runs.
    let t = rig.start_turn(&s, &format!("RUN: sh -c 'sleep 30; echo {marker}'")).await;
    let approval = rig.wait_pending_approval(&s).await;
    rig.decide(&approval, Decision::Accept).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    let tree = loop {
        let tree = process_tree_with(&marker);
        if tree.iter().any(|p| p.cmdline.starts_with("sleep 30")) {
            break tree;
        }
        if Instant::now() > deadline {
            panic!("{provider}: the accepted command never started ({tree:?})\n{}", rig.context(&s).await);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    let asked = Instant::now();
    rig.daemon().interrupt(&s, &t).await;
    let done = rig
        .wait_for(&s, "the interrupted turn to end", Duration::from_secs(10), |events| turn_completed(events, &t))
        .await;
    let took = asked.elapsed();
    eprintln!("{provider}: interrupt to turn:completed took {took:?}");
    assert_eq!(done.status, TurnStatus::Interrupted, "{provider}: {done:?}");
    assert!(took <= Duration::from_secs(2), "{provider}: the interrupt took {took:?} (limit 2 s)");

    // Killing is asynchronous in places: allow a moment before calling it a leak.
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let left: Vec<&Proc> = tree.iter().filter(|p| still_alive(p)).collect();
        if left.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            for process in &left {
                unsafe {
                    libc::kill(process.pid as i32, libc::SIGKILL);
                }
            }
            panic!("{provider}: processes of the interrupted command are still running: {left:#?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The session takes the next turn.
    let t2 = rig.start_turn(&s, "after the interrupt").await;
    rig.wait_turn_completed(&s, &t2).await;
}

/// kill -9 of the agent mid-turn: the crash is reported, the turn fails with
/// a reason, and the next turn runs on a new agent process.
pub async fn agent_crash_fails_the_turn_and_restarts(provider: &'static str) {
    let rig = Rig::start(provider);
    let work = rig.workdir("work");
    let s = rig.new_session(&work, Policy::PlanOnly).await;
    let t = rig.start_turn(&s, "SLOW").await;
    let pid = rig
        .wait_for(&s, "provider:status running with a pid, and the reply streaming", TURN_LIMIT, |events| {
            let streaming = !super::chunks(events, &t).is_empty();
            let pid = running_pids(events).last().and_then(|(_, pid)| *pid);
            pid.filter(|_| streaming)
        })
        .await;
    assert!(pid_alive(pid), "{provider}: the reported pid {pid} is not a live process");
    unsafe {
        libc::kill(pid as i32, libc::SIGKILL);
    }
    let (crashed, reason) = rig
        .wait_for(&s, "provider:status crashed", Duration::from_secs(10), |events| {
            let crashes = provider_statuses(events, |status| match status {
                ProviderStatusKind::Crashed { reason } => Some(reason.clone()),
                _ => None,
            });
            crashes.into_iter().next().map(|(e, reason)| (e.clone(), reason))
        })
        .await;
    assert!(!reason.is_empty(), "{crashed:?}");
    let done = rig.wait_turn_end(&s, &t).await;
    assert_eq!(done.status, TurnStatus::Failed, "{provider}: {done:?}");
    assert!(done.reason.as_deref().is_some_and(|r| !r.is_empty()), "{provider}: a failed turn says why: {done:?}");

    let t2 = rig.start_turn(&s, "hello again").await;
    rig.wait_turn_completed(&s, &t2).await;
    let events = rig.daemon().events(Some(&s), 0).await;
    let started = event_of_turn(&events, EventType::TurnStarted, &t2).expect("turn:started");
    let new_pid = running_pids(&events)
        .into_iter()
        .filter(|(e, _)| e.seq > crashed.seq)
        .find_map(|(_, pid)| pid)
        .unwrap_or_else(|| panic!("{provider}: no provider:status running after the crash"));
    assert_ne!(new_pid, pid, "{provider}: the agent was not restarted");
    assert!(started.seq > crashed.seq);
    let text = turn_text(&events, &t2, Some(ChunkKind::Text));
    assert!(text.contains("echo: hello again"), "{provider}: {text:?}");
}

/// kill -9 of the daemon between turns: after a restart the session resumes
/// the same agent-side conversation.
pub async fn daemon_restart_resumes_the_conversation(provider: &'static str) {
    let mut rig = Rig::start(provider);
    let work = rig.workdir("work");
    let s = rig.new_session(&work, Policy::PlanOnly).await;
    let t1 = rig.start_turn(&s, "remember the word pelican").await;
    rig.wait_turn_completed(&s, &t1).await;
    let events = rig.daemon().events(Some(&s), 0).await;
    let bound = bindings(&events)
        .pop()
        .map(|(_, binding, _)| binding)
        .unwrap_or_else(|| panic!("{provider}: no provider:status bound before the restart"));
    let old_pid = running_pids(&events).last().and_then(|(_, pid)| *pid);
    let old_agent = old_pid.and_then(read_proc);
    // A turn under way when the daemon dies cannot be picked up mid-way by
    // a real agent: it must end failed, not be prompted again.
    let cut = rig.start_turn(&s, "SLOW").await;
    rig.wait_for(&s, "the first chunk of the turn to be cut", TURN_LIMIT, |events| {
        (!turn_text(events, &cut, Some(ChunkKind::Text)).is_empty()).then_some(())
    })
    .await;
    let head = rig.daemon().events(Some(&s), 0).await.last().map(|e| e.seq).unwrap_or(0);
    let requests_before = rig.model.requests().await.len();

    rig.restart_daemon();

    let ended = rig.wait_turn_end(&s, &cut).await;
    assert_eq!(ended.status, TurnStatus::Failed, "{provider}: the cut turn: {ended:?}");
    let reason = ended.reason.as_deref().unwrap_or("");
    assert!(reason.contains("cannot resume"), "{provider}: the cut turn's reason: {reason}");
    let t2 = rig.start_turn(&s, "which word?").await;
    rig.wait_turn_completed(&s, &t2).await;
    let events = rig.daemon().events(Some(&s), head).await;
    let rebound = bindings(&events);
    let (rebound, binding, resumed) =
        rebound.last().unwrap_or_else(|| panic!("{provider}: no provider:status bound after the restart"));
    assert!(*resumed, "{provider}: {rebound:?}");
    assert_eq!(*binding, bound, "{provider}: a different agent session after the restart");
    let text = turn_text(&rig.daemon().events(Some(&s), 0).await, &t2, Some(ChunkKind::Text));
    assert!(text.contains("echo: which word?"), "{provider}: {text:?}");

    let requests = rig.model.requests().await;
    // One model call since the restart, the next turn's: the cut prompt was not sent again.
    let since_restart: Vec<String> = requests[requests_before..].iter().map(|r| r["input"].to_string()).collect();
    assert!(
        since_restart.len() == 1 && since_restart[0].contains("which word?"),
        "{provider}: the model calls since the restart should be the next turn's only: {since_restart:#?}"
    );
    let last = requests.last().expect("requests");
    assert!(
        last["input"].to_string().contains("remember the word pelican"),
        "{provider}: the conversation did not continue: the last request's input was {}",
        last["input"]
    );
    // The agent the killed daemon left behind does not linger.
    if let Some(old) = old_agent {
        let deadline = Instant::now() + Duration::from_secs(5);
        while still_alive(&old) {
            assert!(Instant::now() < deadline, "{provider}: the old agent process is still running: {old:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
