//! The PWA in a real browser: the daemon binary serves the app, and Debian's
//! Chromium (driven by playwright-core from tests/browser/*.mjs) uses it the way
//! a person on a phone would, through the accessible names and data attributes
//! the app promises for tests (buttons "New session", "Send", "Approve"..., the
//! `data-testid`, `data-chunk` and `data-seq` attributes, and `bosun.lastSeq`
//! in its storage). The app has no test hook: the scripts watch its
//! WebSockets from an init script (tests/browser/lib.mjs).
//!
//! `tests/run` installs what these need (`/usr/bin/chromium` with apt-get,
//! playwright-core with `npm ci` in tests/browser). Each script prints its
//! progress on stderr and a JSON report as the last line of stdout.
//!
//! `BOSUN_UPDATE_SCREENSHOTS=1` copies the phone-size screenshots the tests
//! take (the flow test's light and `-dark`) into docs/screenshots/ (they are not rewritten on every run,
//! since their pixels change with ids and times).

mod common;

use common::{repo_with, tempdir, Daemon, Options, BIN};
use serde_json::Value;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One Chromium at a time: the machines these run on have two cores, and
/// parallel browsers make stream timings flaky.
static BROWSER: Mutex<()> = Mutex::new(());

/// Longer than any script's own limit, so the script normally reports first.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(300);

/// The flow script's four screens, each light then dark, the pairing screen,
/// a jailed shell session (the workspace script), a policy violation, a
/// workflow run's live view with its gate waiting (the workflow script) and
/// the Terminals screen's map, a held spawn and a tmux binding read back
/// (the bridge script).
const SCREENSHOTS: &[&str] = &[
    "session-list.png",
    "session-list-dark.png",
    "new-session.png",
    "new-session-dark.png",
    "session-streamed-reply.png",
    "session-streamed-reply-dark.png",
    "approval-dialog.png",
    "approval-dialog-dark.png",
    "pair-device.png",
    "shell-session.png",
    "policy-violation.png",
    "workflow-run.png",
    "terminals-map.png",
    "terminals-waiting.png",
    "terminals-binding.png",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn check_installed() {
    let chromium = Path::new("/usr/bin/chromium");
    assert!(chromium.exists(), "{} is missing: run tests/run, which installs Debian's chromium", chromium.display());
    let driver = root().join("tests/browser/node_modules/playwright-core/package.json");
    assert!(driver.exists(), "{} is missing: run tests/run (npm ci in tests/browser)", driver.display());
}

struct Outcome {
    status: Option<i32>,
    stdout: String,
    stderr: String,
    report: Value,
}

/// Runs `node tests/browser/<script>.mjs <url> <out>` with `env`, killing it
/// if it outlives [`SCRIPT_TIMEOUT`].
fn run_script(daemon: &Daemon, script: &str, out: &Path, env: &[(&str, &str)]) -> Outcome {
    check_installed();
    let path = root().join("tests/browser").join(format!("{script}.mjs"));
    let mut cmd = Command::new("node");
    cmd.arg(&path).arg(&daemon.url).arg(out).current_dir(root().join("tests/browser"));
    cmd.envs(env.iter().copied());
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot run node {}: {e}", path.display()));
    // Both pipes are drained on threads so a chatty script cannot block on a full pipe.
    let mut out_pipe = child.stdout.take().expect("stdout");
    let mut err_pipe = child.stderr.take().expect("stderr");
    let out_thread = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out_pipe.read_to_string(&mut s);
        s
    });
    let err_thread = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err_pipe.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + SCRIPT_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait node") {
            break status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stdout = out_thread.join().unwrap_or_default();
    let stderr = err_thread.join().unwrap_or_default();
    let report = stdout.lines().rev().find_map(|l| serde_json::from_str::<Value>(l).ok()).unwrap_or(Value::Null);
    Outcome { status, stdout, stderr, report }
}

/// Runs a script and panics with everything useful unless it passed.
fn expect_pass(daemon: &Daemon, script: &str, out: &Path, env: &[(&str, &str)]) -> Value {
    let outcome = run_script(daemon, script, out, env);
    let passed = outcome.status == Some(0) && outcome.report["ok"] == true;
    if !passed {
        let daemon_log: String = {
            let log = daemon.stderr();
            let lines: Vec<&str> = log.lines().collect();
            lines[lines.len().saturating_sub(40)..].join("\n")
        };
        panic!(
            "browser script {script} failed (exit {:?})\n\
             failed step: {}\nerror: {}\nsteps passed: {}\n\
             --- report ---\n{}\n--- script stderr ---\n{}\n--- script stdout ---\n{}\n--- daemon stderr (tail) ---\n{}",
            outcome.status,
            outcome.report["failed"],
            outcome.report["error"],
            outcome.report["steps"],
            serde_json::to_string_pretty(&outcome.report).unwrap_or_default(),
            outcome.stderr,
            outcome.stdout,
            daemon_log,
        );
    }
    eprintln!("{script}: passed {}", outcome.report["steps"]);
    outcome.report
}

fn with_daemon(options: Options, script: &str, env: &[(&str, &str)]) -> Value {
    let _one = BROWSER.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let dir = tempdir();
    let daemon = Daemon::start(&dir.path().join("data"), options);
    let out = dir.path().join("out");
    expect_pass(&daemon, script, &out, env)
}

fn update_screenshots(out: &Path) {
    if std::env::var_os("BOSUN_UPDATE_SCREENSHOTS").is_none() {
        return;
    }
    let dest = root().join("docs/screenshots");
    std::fs::create_dir_all(&dest).expect("create docs/screenshots");
    for name in SCREENSHOTS {
        let from = out.join(name);
        if from.exists() {
            std::fs::copy(&from, dest.join(name)).expect("copy screenshot");
        }
    }
}

#[test]
fn app_loads_with_manifest_and_service_worker() {
    with_daemon(Options::default(), "smoke", &[]);
}

/// New session → prompt → streamed reply → RUN: → approval dialog → Approve
/// → command output and the turn's end.
#[test]
fn new_session_prompt_stream_and_approval() {
    let _one = BROWSER.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let dir = tempdir();
    let daemon = Daemon::start(&dir.path().join("data"), Options::default());
    let out = dir.path().join("out");
    let report = expect_pass(&daemon, "flow", &out, &[]);
    for name in &SCREENSHOTS[..8] {
        assert!(out.join(name).exists(), "the flow script did not write {name}: {report}");
    }
    update_screenshots(&out);
}

/// From the form: a `shell` session in a worktree of a repository, in a
/// bubblewrap jail (tests/run installs bwrap); its commands' ends show their
/// exit codes.
#[test]
fn jailed_shell_in_a_worktree_from_the_form() {
    let _one = BROWSER.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let dir = tempdir();
    let repo = repo_with(&dir.path().join("repo"), &[("README", "from the repository\n")]);
    let daemon = Daemon::start(&dir.path().join("data"), Options::default());
    let out = dir.path().join("out");
    expect_pass(&daemon, "workspace", &out, &[("BOSUN_TEST_REPO", repo.to_str().unwrap())]);
    update_screenshots(&out);
    assert!(!Path::new("/etc/bosun-was-here").exists(), "the jailed command wrote to /etc");
}

/// An agent caught acting without an approval: a banner on its session,
/// kept across a reload, and a mark in the list.
#[test]
fn a_policy_violation_shows_as_a_banner_on_its_session() {
    let _one = BROWSER.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let dir = tempdir();
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).expect("work dir");
    // A stand-in agent that says it is Claude Code (so it starts trusted, in
    // its asking mode) and then does what it is told without asking.
    let config = format!(
        "discover_agents = false\n[providers.rogue]\nkind = \"acp\"\ncommand = {}\n\
         env = {{ STANDIN_NAME = \"claude-agent-acp\", STANDIN_MODES = \"default,acceptEdits\" }}\n",
        common::agents::toml_str(&common::agents::standin_bin().to_string_lossy())
    );
    let daemon = Daemon::start(&dir.path().join("data"), Options { config: Some(config), ..Options::default() });
    let out = dir.path().join("out");
    expect_pass(&daemon, "violation", &out, &[("BOSUN_TEST_CWD", work.to_str().unwrap())]);
    update_screenshots(&out);
}

/// A reload in the middle of a stream renders each stored chunk exactly once.
#[test]
fn reload_mid_stream_renders_each_chunk_once() {
    with_daemon(Options::default(), "reload", &[]);
}

/// The Terminal tab at phone size: a shell from "New terminal" with the key
/// row (Tab completion, arrows, Esc, sticky Ctrl), a RESIZE on a viewport
/// change, the exit status and Close; then a dropped socket and a reload in
/// the middle of a slow terminal's output: every line rendered once, in
/// order, each socket resumed from the offset rendered, no CSP violation.
///
/// The shells start with an empty HOME (so no rc file of the machine's user
/// runs, or waits, in them) and bash.
#[test]
fn terminal_tab_resumes_byte_exact_after_a_reload() {
    let _one = BROWSER.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let dir = tempdir();
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).expect("home");
    let env =
        vec![("HOME".to_string(), home.to_string_lossy().into_owned()), ("SHELL".to_string(), "/bin/bash".to_string())];
    let daemon = Daemon::start(&dir.path().join("data"), Options { env, ..Options::default() });
    expect_pass(&daemon, "terminal", &dir.path().join("out"), &[]);
}

/// A tmux server of the test's own (`-L NAME`, no config file), with one
/// session so the daemon finds it running; killed when the test ends.
struct PrivateTmux {
    socket: String,
}

impl PrivateTmux {
    fn start() -> PrivateTmux {
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        let socket = format!("bosun-pwa-{}-{nanos:x}", std::process::id());
        let status = Command::new("tmux")
            .args(["-L", &socket, "-f", "/dev/null", "new-session", "-d", "-s", "base", "-x", "120", "-y", "40", "sh"])
            .status()
            .expect("run tmux: tests/run installs it");
        assert!(status.success(), "tmux new-session failed");
        PrivateTmux { socket }
    }
}

impl Drop for PrivateTmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux").args(["-L", &self.socket, "kill-server"]).output();
    }
}

/// Writes an executable script.
fn script(path: &Path, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, body).expect("write a stand-in");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod a stand-in");
}

/// WezTerm's CLI as the daemon calls it (tests/termbridge.rs has the same):
/// one pane, 7, and whatever it is told succeeds.
const WEZTERM_STAND_IN: &str = r#"#!/bin/sh
case "$1 $2" in
  "cli send-text") cat >/dev/null ;;
  "cli spawn"|"cli split-pane") echo 7 ;;
  "cli list") echo '[{"window_id":0,"tab_id":1,"pane_id":7,"workspace":"default","title":"sh","cwd":"file://box/tmp","is_active":true,"tty_name":"/dev/pts/3"}]' ;;
  "cli list-clients") echo '[{"username":"me","hostname":"box","pid":1,"focused_pane_id":7}]' ;;
  "cli get-text") printf 'on the screen\n' ;;
  "--version ") echo "wezterm 20240203-110809-5046fc22" ;;
esac
"#;

/// `alacritty --version` and `alacritty msg --socket S create-window ...`,
/// which is all its IPC has.
const ALACRITTY_STAND_IN: &str = r#"#!/bin/sh
case "$1" in
  --version) echo "alacritty 0.13.2" ;;
  msg) exit 0 ;;
  *) exit 1 ;;
esac
"#;

/// The Terminals screen against a private tmux server, a WezTerm stand-in
/// that needs consent (`opt_in`) and an Alacritty stand-in (no focus, send
/// or read back), under the default plan-only policy: the map with tmux
/// running and its capabilities; consent granted and revoked; a tmux window
/// started from the form (held, approved in the dialog), a held `echo
/// hi-from-phone` with Enter approved and read back; Focus recorded; only
/// what each terminal can do offered; Close; a pane killed by hand marked
/// lost; no CSP violation.
#[test]
fn terminals_screen_drives_tmux_and_asks_consent_and_approval() {
    let _one = BROWSER.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let dir = tempdir();
    let tmux = PrivateTmux::start();
    let wezterm = dir.path().join("wezterm");
    script(&wezterm, WEZTERM_STAND_IN);
    let alacritty = dir.path().join("alacritty");
    script(&alacritty, ALACRITTY_STAND_IN);
    // Alacritty counts as running when its socket is there.
    let alacritty_socket = dir.path().join("alacritty.sock");
    std::fs::write(&alacritty_socket, b"").expect("the alacritty socket");
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).expect("home");
    let config = format!(
        "[termbridge]\nopt_in = [\"wezterm\"]\n\
         [termbridge.tmux]\nsocket = {{ name = \"{}\" }}\n\
         [termbridge.alacritty]\nprogram = {:?}\nsocket = {:?}\n",
        tmux.socket,
        alacritty.display().to_string(),
        alacritty_socket.display().to_string(),
    );
    let env = vec![
        ("BOSUN_WEZTERM_CLI".to_string(), wezterm.display().to_string()),
        ("HOME".to_string(), home.to_string_lossy().into_owned()),
        ("SHELL".to_string(), "/bin/bash".to_string()),
    ];
    let daemon = Daemon::start(&dir.path().join("data"), Options { config: Some(config), env, ..Options::default() });
    let out = dir.path().join("out");
    expect_pass(&daemon, "bridge", &out, &[("BOSUN_TEST_TMUX_SOCKET", &tmux.socket)]);
    update_screenshots(&out);
}

/// A dropped connection goes to reconnecting/offline and back to live, and the
/// transcript ends with each stored chunk exactly once.
#[test]
fn dropped_connection_recovers_without_duplicates() {
    with_daemon(Options::default(), "reconnect", &[]);
}

/// The WebSocket cannot open: the app polls /api/v1/events, streams the reply
/// without saying "live", and goes live without duplicates once it can.
#[test]
fn refused_websocket_falls_back_to_polling() {
    with_daemon(Options::default(), "polling", &[]);
}

/// Approve while offline: the decision reaches the daemon once when the
/// network is back.
#[test]
fn approval_made_offline_is_delivered_once() {
    with_daemon(Options::default(), "offline_approval", &[]);
}

/// The workflow the phone watches: a plan that says two lines, a build fanned
/// out over them (each writes a file in a branch of the plan's worktree), a
/// gate, and a merge of the builds into the plan, all on the demo provider.
const PHONE_WORKFLOW: &str = r#"name = "phone"
[inputs]
repo = { required = true }
[defaults]
policy = "full-access"
[[steps]]
id = "plan"
prompt = "SAY: one\nSAY: two"
workspace = { repo = "{{ inputs.repo }}", branch = "main" }
[[steps]]
id = "build"
needs = ["plan"]
for_each = "{{ steps.plan.lines }}"
prompt = "RUN: echo '{{ item }}' > part-{{ index }}.txt"
workspace = { from = "plan" }
[[steps]]
id = "approve"
needs = ["build"]
kind = "gate"
message = "Merge {{ steps.build.lines | length }} parts?"
[[steps]]
id = "merge"
needs = ["approve"]
kind = "merge"
from = ["build"]
into = "plan"
"#;

/// A workflow run from the phone: started over HTTP, it appears under the
/// Workflows tab; its live view follows the steps to completed from the
/// stream; its gate is decided in the approval dialog; the run ends
/// completed, on the page and in the API, with both parts merged.
#[test]
fn workflow_run_followed_live_and_its_gate_approved_from_the_phone() {
    let _one = BROWSER.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let dir = tempdir();
    let repo = repo_with(&dir.path().join("repo"), &[("README", "parts\n")]);
    let daemon = Daemon::start(&dir.path().join("data"), Options::default());
    let out = dir.path().join("out");
    let report = expect_pass(
        &daemon,
        "workflow",
        &out,
        &[("BOSUN_TEST_WORKFLOW", PHONE_WORKFLOW), ("BOSUN_TEST_REPO", repo.to_str().unwrap())],
    );
    assert!(out.join("workflow-run.png").exists(), "the workflow script did not write workflow-run.png: {report}");
    update_screenshots(&out);

    // What the daemon has, checked from here too: the run completed, and the
    // plan's branch holds both builds' files.
    let run_id =
        report["info"]["run"].as_str().unwrap_or_else(|| panic!("no run id in the report: {report}")).to_string();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    let run = rt.block_on(daemon.ok_get(&format!("/api/v1/workflows/runs/{run_id}")));
    assert_eq!(run["state"], "completed", "{run}");
    let steps = run["steps"].as_array().expect("steps");
    let labels: Vec<String> = steps
        .iter()
        .map(|s| match s["index"].as_u64() {
            Some(i) => format!("{}#{i}", s["step_id"].as_str().unwrap_or("?")),
            None => s["step_id"].as_str().unwrap_or("?").to_string(),
        })
        .collect();
    assert_eq!(labels, ["plan", "build#0", "build#1", "approve", "merge"], "{run}");
    assert!(steps.iter().all(|s| s["state"] == "completed"), "{run}");
    let merge = &steps[4]["merge"];
    assert_eq!(merge["merged"].as_array().map(Vec::len), Some(2), "{merge}");
    assert!(merge["conflicts"].as_array().is_some_and(Vec::is_empty), "{merge}");
    let head = merge["head"].as_str().unwrap_or_else(|| panic!("the merge has no head: {merge}"));
    let plan_session = steps[0]["session_id"].as_str().expect("the plan's session");
    let session = rt.block_on(daemon.ok_get(&format!("/api/v1/sessions/{plan_session}")));
    let worktree =
        Path::new(session["workspace"]["worktree"].as_str().unwrap_or_else(|| panic!("no worktree: {session}")));
    for (file, text) in [("part-0.txt", "one"), ("part-1.txt", "two")] {
        assert_eq!(common::git(worktree, &["show", &format!("{head}:{file}")]), text, "{file} at the merge's head");
    }
}

/// A pairing code from `bosun pair --json`, as the CLI prints it.
fn pairing_code(daemon: &Daemon) -> String {
    let output = Command::new(BIN)
        .args(["pair", "--json", "--data-dir"])
        .arg(&daemon.data_dir)
        .arg("--server")
        .arg(&daemon.url)
        .stdin(Stdio::null())
        .output()
        .expect("run bosun pair");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "bosun pair failed ({}): {stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let answer: Value =
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("bosun pair --json: {e}: {stdout}"));
    for key in ["code", "pairing_code"] {
        if let Some(code) = answer[key].as_str() {
            return code.to_string();
        }
    }
    // Otherwise the code is the `#pair=` fragment of the pairing URL.
    answer
        .as_object()
        .into_iter()
        .flat_map(|o| o.values())
        .filter_map(|v| v.as_str())
        .find_map(|s| s.split_once("#pair=").map(|(_, code)| code.to_string()))
        .unwrap_or_else(|| panic!("no pairing code in bosun pair --json output: {answer}"))
}

/// With `[auth] require = "always"` even a loopback browser must pair first:
/// "Pair this device", a code from `bosun pair`, then the session list.
#[test]
fn unpaired_browser_pairs_with_a_code() {
    let _one = BROWSER.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let dir = tempdir();
    let options = Options { config: Some("[auth]\nrequire = \"always\"\n".into()), ..Options::default() };
    let daemon = Daemon::start(&dir.path().join("data"), options);
    let typed = pairing_code(&daemon);
    let linked = pairing_code(&daemon);
    let out = dir.path().join("out");
    expect_pass(&daemon, "pair", &out, &[("BOSUN_PAIRING_CODE", &typed), ("BOSUN_PAIRING_CODE_LINK", &linked)]);
    update_screenshots(&out);
}

/// A device revoked with `bosun devices revoke` while its page is open: the
/// page shows "Pair this device" within seconds and forgets its token; a new
/// code pairs it again.
#[test]
fn revoked_device_shows_pairing_at_once() {
    let _one = BROWSER.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let dir = tempdir();
    let options = Options { config: Some("[auth]\nrequire = \"always\"\n".into()), ..Options::default() };
    let daemon = Daemon::start(&dir.path().join("data"), options);
    let code = pairing_code(&daemon);
    let again = pairing_code(&daemon);
    let data_dir = daemon.data_dir.to_string_lossy().into_owned();
    let out = dir.path().join("out");
    expect_pass(
        &daemon,
        "revoke",
        &out,
        &[
            ("BOSUN_PAIRING_CODE", &code),
            ("BOSUN_PAIRING_CODE_AGAIN", &again),
            ("BOSUN_BIN", BIN),
            ("BOSUN_DATA_DIR", &data_dir),
        ],
    );
}
