//! Terminal control through the daemon, against the real binary: tmux (a
//! private server), kitty (a private instance on its own Xvfb, on its
//! remote-control socket: consent, spawn with a cwd, split, send, read back,
//! focus, close, a window closed by hand found lost) and WezTerm (a recording
//! stand-in for its CLI, as WezTerm cannot be installed here) as bindings;
//! consent; plan-only and the paste guard as approvals; OSC 7 cwd sync
//! through a real shell with the shipped hook; the OS clipboard through xclip
//! under Xvfb. Each adapter's every capability is tested against the real
//! terminal in adapters/termbridge.

mod common;

use bosun_client::TerminalEvent;
use bosun_proto::{
    BindingState, BindingView, ClipboardWrite, CwdRequest, SendTextRequest, SpawnOutcome, SpawnTerminalRequest,
    TerminalKind,
};
use common::*;
use serde_json::json;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A tmux server of the test's own, killed when the test ends.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn new() -> Tmux {
        Tmux { socket: format!("bosun-tb-{}-{}", std::process::id(), rand_suffix()) }
    }

    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux").arg("-L").arg(&self.socket).args(args).output().expect("run tmux");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn config(&self, extra: &str) -> String {
        format!("[termbridge]\n{extra}\n[termbridge.tmux]\nsocket = {{ name = \"{}\" }}\n", self.socket)
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux").arg("-L").arg(&self.socket).arg("kill-server").output();
    }
}

fn rand_suffix() -> String {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("{nanos:x}")
}

fn req(terminal: TerminalKind, command: &[&str]) -> SpawnTerminalRequest {
    SpawnTerminalRequest {
        terminal: Some(terminal),
        command: command.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn bound(outcome: SpawnOutcome) -> BindingView {
    let shown = format!("{outcome:?}");
    outcome.binding.unwrap_or_else(|| panic!("bound at once: {shown}"))
}

async fn wait_for<T>(what: &str, timeout: Duration, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `%3` from `tmux://SOCKET/%3`.
fn pane_of(b: &BindingView) -> String {
    b.ipc_endpoint.rsplit('/').next().unwrap_or_default().to_string()
}

fn actions(events: &[bosun_proto::Envelope]) -> Vec<(String, String)> {
    events
        .iter()
        .filter_map(|e| match payload(e) {
            EventData::TerminalAction(a) => {
                assert!(a.latency_ms >= 0.0);
                Some((a.action, a.decision))
            }
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn tmux_panes_are_spawned_split_focused_typed_into_read_back_and_closed() {
    let tmux = Tmux::new();
    let dir = tempdir();
    let config = tmux.config("policy = \"full-access\"");
    let d = Daemon::start(&dir.path().join("data"), Options { config: Some(config), ..Default::default() });
    let c = d.client();
    let map = c.terminals().await.expect("map").terminals;
    let entry = map.iter().find(|t| t.terminal == TerminalKind::Tmux).expect("tmux in the map");
    assert!(entry.installed && entry.capabilities.read_text && entry.capabilities.split);
    let cwd = dir.path().display().to_string();
    let first = bound(
        c.spawn_terminal(&SpawnTerminalRequest { cwd: Some(cwd.clone()), ..req(TerminalKind::Tmux, &["sh"]) })
            .await
            .expect("spawn"),
    );
    assert!(first.ipc_endpoint.starts_with("tmux://") && first.ipc_endpoint.contains("/%"), "{}", first.ipc_endpoint);
    let pane = pane_of(&first);
    let second = bound(
        c.spawn_terminal(&SpawnTerminalRequest {
            split_of: Some(first.binding_id.clone()),
            ..req(TerminalKind::Tmux, &["sh"])
        })
        .await
        .expect("split"),
    );
    let other = pane_of(&second);
    // The split is in the first pane's window, and is focused.
    let active = |t: &Tmux| t.run(&["list-panes", "-a", "-F", "#{pane_id} #{pane_active}"]);
    assert!(active(&tmux).contains(&format!("{other} 1")), "{}", active(&tmux));
    c.focus(&first.binding_id).await.expect("focus");
    assert!(active(&tmux).contains(&format!("{pane} 1")), "focused: {}", active(&tmux));
    c.send_text(&first.binding_id, &SendTextRequest { text: "echo typed-by-bosun".into(), paste: false, enter: true })
        .await
        .expect("send");
    let text = wait_for("the echo", Duration::from_secs(10), async || {
        let t = c.read_text(&first.binding_id).await.expect("read").text;
        (t.matches("typed-by-bosun").count() >= 2).then_some(t)
    })
    .await;
    assert!(text.lines().any(|l| l.trim() == "typed-by-bosun"), "{text}");
    let closed = c.close_binding(&second.binding_id).await.expect("close");
    assert_eq!(closed.binding.state, BindingState::Closed);
    assert!(!tmux.run(&["list-panes", "-a", "-F", "#{pane_id}"]).contains(&other));
    let events = d.events(None, 0).await;
    let done = actions(&events);
    for action in ["spawn", "focus", "send_text", "read_text", "close"] {
        assert!(done.iter().any(|(a, d)| a == action && d == "full-access"), "{action} in {done:?}");
    }
}

#[tokio::test]
async fn a_pane_killed_by_hand_is_reported_lost_and_never_acted_on() {
    let tmux = Tmux::new();
    let dir = tempdir();
    let config = tmux.config("policy = \"full-access\"");
    let d = Daemon::start(&dir.path().join("data"), Options { config: Some(config), ..Default::default() });
    let c = d.client();
    let b = bound(c.spawn_terminal(&req(TerminalKind::Tmux, &["sh"])).await.expect("spawn"));
    let pane = pane_of(&b);
    // A second pane, so the server (and the pane id space) stays.
    bound(c.spawn_terminal(&req(TerminalKind::Tmux, &["sh"])).await.expect("spawn"));
    tmux.run(&["kill-pane", "-t", &pane]);
    let lost = wait_for("binding_lost", Duration::from_secs(15), async || {
        let b = c.binding(&b.binding_id).await.expect("binding");
        (b.state == BindingState::Lost).then_some(b)
    })
    .await;
    assert!(lost.reason.as_deref().is_some_and(|r| r.contains("gone")), "{:?}", lost.reason);
    // The event is readable once flushed, which can be a moment after the
    // record that says `lost` is.
    wait_for("termbridge:binding_lost", Duration::from_secs(5), async || {
        let events = d.events(None, 0).await;
        events
            .iter()
            .any(|e| matches!(payload(e), EventData::BindingLost(l) if l.binding_id == b.binding_id))
            .then_some(())
    })
    .await;
    let (status, answer) =
        d.post(&format!("/api/v1/terminals/bindings/{}/send", b.binding_id), json!({"text": "x"})).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (409, Some("conflict")), "{answer}");
}

#[tokio::test]
async fn a_terminal_that_needs_consent_is_refused_until_it_is_granted_and_again_once_revoked() {
    let tmux = Tmux::new();
    let dir = tempdir();
    let config = tmux.config("policy = \"full-access\"\nopt_in = [\"tmux\"]");
    let d = Daemon::start(&dir.path().join("data"), Options { config: Some(config), ..Default::default() });
    let c = d.client();
    let entry = c.terminals().await.expect("map").terminals.into_iter().find(|t| t.terminal == TerminalKind::Tmux);
    assert!(entry.is_some_and(|t| t.requires_opt_in && t.consent_granted_at.is_none()));
    let (status, answer) = d.post("/api/v1/terminals/bindings", json!({"terminal": "tmux", "command": ["sh"]})).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (403, Some("consent_required")), "{answer}");
    assert!(tmux.run(&["list-panes", "-a"]).is_empty(), "nothing was started");
    let granted = c.consent(TerminalKind::Tmux, true).await.expect("grant");
    assert!(granted.consent_granted_at.is_some());
    let b = bound(c.spawn_terminal(&req(TerminalKind::Tmux, &["sh"])).await.expect("spawn once granted"));
    c.consent(TerminalKind::Tmux, false).await.expect("revoke");
    let (status, _) = d.post(&format!("/api/v1/terminals/bindings/{}/focus", b.binding_id), json!({})).await;
    assert_eq!(status, 403);
    let events = d.events(None, 0).await;
    let denied: Vec<String> = events
        .iter()
        .filter_map(|e| match payload(e) {
            EventData::TerminalDenied(x) => Some(x.action),
            _ => None,
        })
        .collect();
    assert_eq!(denied, vec!["spawn".to_string(), "focus".to_string()]);
    let updates = events
        .iter()
        .filter(|e| matches!(payload(e), EventData::CapabilityUpdate(u) if u.terminal.terminal == TerminalKind::Tmux))
        .count();
    assert!(updates >= 3, "discovery, grant and revoke each emit termbridge:capability_update ({updates})");
}

async fn held(d: &Daemon, binding: &str, text: &str, enter: bool) -> bosun_proto::ApprovalView {
    let (status, answer) =
        d.post(&format!("/api/v1/terminals/bindings/{binding}/send"), json!({"text": text, "enter": enter})).await;
    assert_eq!(status, 202, "{text:?} is held: {answer}");
    let id = answer["approval_id"].as_str().expect("an approval id").to_string();
    d.client().approval(&id).await.expect("the approval")
}

fn concerns(a: &bosun_proto::ApprovalView) -> (Vec<String>, String) {
    match &a.action {
        Action::Terminal { concerns, text, action, .. } => {
            assert!(action == "send_text" || action == "spawn");
            (concerns.clone(), text.clone())
        }
        other => panic!("not a terminal approval: {other:?}"),
    }
}

#[tokio::test]
async fn plan_only_holds_what_would_run_and_the_paste_guard_shows_what_is_hidden() {
    let dir = tempdir();
    // The default policy of a binding with no session: plan-only.
    let d = Daemon::start(&dir.path().join("data"), Options::default());
    let c = d.client();
    // A command to start is held; its approval shows it.
    let outcome =
        c.spawn_terminal(&req(TerminalKind::Pty, &["sh", "-c", "echo started; exec sh"])).await.expect("spawn");
    assert_eq!(outcome.outcome, "awaiting_approval");
    let approval = outcome.approval.expect("an approval");
    assert_eq!(concerns(&approval), (vec!["runs_command".to_string()], "sh -c 'echo started; exec sh'".to_string()));
    assert!(c.bindings().await.expect("bindings").bindings.is_empty(), "nothing started before the decision");
    c.decide(approval.id.as_ref(), Decision::Accept).await.expect("accept");
    let b = wait_for("the approved terminal", Duration::from_secs(10), async || {
        c.bindings().await.expect("bindings").bindings.into_iter().next()
    })
    .await;
    let mut stream = c.attach_terminal(&b.binding_id, 0).await.expect("attach");
    let mut seen = Vec::new();
    // The prompt of the shell it execs, not only the line before: text sent
    // before that shell is up is echoed before its prompt, not after.
    let prompted = |seen: &[u8]| {
        let seen = String::from_utf8_lossy(seen);
        seen.split_once("started\r\n").is_some_and(|(_, rest)| rest.contains("# ") || rest.contains("$ "))
    };
    while !prompted(&seen) {
        if let TerminalEvent::Output { bytes, .. } = stream.next().await.expect("read") {
            seen.extend_from_slice(&bytes);
        }
    }
    // Typing without Enter runs nothing: sent at once.
    let typed =
        c.send_text(&b.binding_id, &SendTextRequest { text: "echo one".into(), paste: false, enter: false }).await;
    assert_eq!(typed.expect("send").outcome, "done");
    // Enter would run it: held, and declined, nothing is sent.
    let a = held(&d, &b.binding_id, "; echo declined-text", true).await;
    assert_eq!(concerns(&a).0, vec!["runs_command".to_string()]);
    c.decide(a.id.as_ref(), Decision::Decline).await.expect("decline");
    // Accepted, it is sent.
    let a = held(&d, &b.binding_id, "; echo accepted-text", true).await;
    c.decide(a.id.as_ref(), Decision::Accept).await.expect("accept");
    let text = wait_for("the accepted text's output", Duration::from_secs(10), async || {
        let t = c.read_text(&b.binding_id).await.expect("read").text;
        t.contains("\r\none\r\naccepted-text\r\n").then_some(t)
    })
    .await;
    assert!(!text.contains("declined-text"), "{text:?}");
    // The paste guard, on each kind of hidden text.
    let cases: [(&str, &str, &str); 4] = [
        ("echo a\necho b", "multi_line", "⏎"),
        ("echo safe\u{200B}", "invisible_characters", "U+200B"),
        ("cat \u{202E}txt.sh", "invisible_characters", "U+202E"),
        ("x\x1b]52;c;AAAA\x07", "escape_sequences", "␛"),
    ];
    for (text, concern, shown) in cases {
        let a = held(&d, &b.binding_id, text, false).await;
        let (found, revealed) = concerns(&a);
        assert!(found.contains(&concern.to_string()), "{text:?}: {found:?}");
        assert!(revealed.contains(shown), "{text:?} is shown as {revealed:?}");
        assert!(!revealed.contains('\x1b') && !revealed.contains('\u{200B}'));
        c.decide(a.id.as_ref(), Decision::Decline).await.expect("decline");
    }
    let denied = d
        .events(None, 0)
        .await
        .iter()
        .filter(|e| matches!(payload(e), EventData::TerminalDenied(x) if x.reason.contains("declined")))
        .count();
    assert_eq!(denied, 5);
}

#[tokio::test]
async fn the_paste_guard_holds_hidden_text_even_under_full_access() {
    let dir = tempdir();
    let config = "[termbridge]\npolicy = \"full-access\"\n".to_string();
    let d = Daemon::start(&dir.path().join("data"), Options { config: Some(config), ..Default::default() });
    let b = bound(d.client().spawn_terminal(&req(TerminalKind::Pty, &["cat"])).await.expect("spawn"));
    let a = held(&d, &b.binding_id, "rm -rf /\u{2066}", false).await;
    assert_eq!(concerns(&a).0, vec!["invisible_characters".to_string()]);
    let line = SendTextRequest { text: "ls\n".into(), paste: false, enter: false };
    let done = d.client().send_text(&b.binding_id, &line).await.expect("send");
    assert_eq!(done.outcome, "done", "one line and its newline are not a paste");
}

const WEZTERM_STAND_IN: &str = r#"#!/bin/sh
log="$(dirname "$0")/calls.log"
{ printf 'ARGV'; for a in "$@"; do printf ' [%s]' "$a"; done; printf '\n'; } >> "$log"
case "$1 $2" in
  "cli send-text") printf 'STDIN [%s]\n' "$(cat)" >> "$log" ;;
  "cli spawn"|"cli split-pane") echo 7 ;;
  "cli list") echo '[{"window_id":0,"tab_id":1,"pane_id":7,"workspace":"default","title":"sh","cwd":"file://box/tmp","is_active":true,"tty_name":"/dev/pts/3"}]' ;;
  "cli list-clients") echo '[{"username":"me","hostname":"box","pid":1,"focused_pane_id":7}]' ;;
  "cli get-text") printf 'on the screen\n' ;;
  "--version ") echo "wezterm 20240203-110809-5046fc22" ;;
esac
"#;

fn stand_in(dir: &Path) -> PathBuf {
    let script = dir.join("wezterm");
    std::fs::write(&script, WEZTERM_STAND_IN).expect("write the stand-in");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    script
}

#[tokio::test]
async fn wezterm_is_driven_through_its_cli_and_a_missing_cli_is_501() {
    let dir = tempdir();
    let fake = stand_in(dir.path());
    let config = "[termbridge]\npolicy = \"full-access\"\n".to_string();
    let options = Options {
        config: Some(config.clone()),
        env: vec![("BOSUN_WEZTERM_CLI".into(), fake.display().to_string())],
        ..Default::default()
    };
    let d = Daemon::start(&dir.path().join("data"), options);
    let c = d.client();
    let entry = c.terminals().await.expect("map").terminals.into_iter().find(|t| t.terminal == TerminalKind::Wezterm);
    assert!(entry.is_some_and(|t| t.installed && t.version.is_some_and(|v| v.contains("20240203"))));
    let b = bound(c.spawn_terminal(&req(TerminalKind::Wezterm, &["sh"])).await.expect("spawn"));
    assert_eq!(b.ipc_endpoint, "wezterm://pane/7");
    c.focus(&b.binding_id).await.expect("focus");
    c.send_text(&b.binding_id, &SendTextRequest { text: "echo hi".into(), paste: false, enter: false })
        .await
        .expect("send");
    let text = c.read_text(&b.binding_id).await.expect("read");
    assert_eq!(text.text.trim(), "on the screen");
    // wezterm cli has no clipboard command (its map says so): 501, not a
    // silent write to some other clipboard.
    let (status, answer) =
        d.post("/api/v1/terminals/clipboard", json!({"text": "x", "binding_id": b.binding_id})).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (501, Some("not_supported")), "{answer}");
    let calls = std::fs::read_to_string(dir.path().join("calls.log")).expect("calls");
    assert!(calls.contains("ARGV [cli] [activate-pane] [--pane-id] [7]"), "{calls}");
    assert!(calls.lines().any(|l| l.contains("[send-text]") && l.contains("[--no-paste]")), "{calls}");
    assert!(calls.contains("STDIN [echo hi]"), "{calls}");
    drop(d);

    let gone = tempdir();
    let options = Options {
        config: Some(config),
        env: vec![("BOSUN_WEZTERM_CLI".into(), "/nonexistent/wezterm".into())],
        ..Default::default()
    };
    let d = Daemon::start(&gone.path().join("data"), options);
    let (status, answer) =
        d.post("/api/v1/terminals/bindings", json!({"terminal": "wezterm", "command": ["sh"]})).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (501, Some("not_supported")), "{answer}");
    let entry =
        d.client().terminals().await.expect("map").terminals.into_iter().find(|t| t.terminal == TerminalKind::Wezterm);
    assert!(entry.is_some_and(|t| !t.installed));
}

#[tokio::test]
async fn osc_7_from_the_shipped_bash_hook_moves_the_bindings_cwd_and_a_set_cwd_is_checked() {
    let dir = tempdir();
    let config = "[termbridge]\npolicy = \"full-access\"\n".to_string();
    let d = Daemon::start(&dir.path().join("data"), Options { config: Some(config), ..Default::default() });
    let c = d.client();
    let hook = Path::new(env!("CARGO_MANIFEST_DIR")).join("adapters/termbridge/shell-hooks/bosun-cwd.bash");
    let hook = hook.display().to_string();
    let b = bound(
        c.spawn_terminal(&req(TerminalKind::Pty, &["bash", "--noprofile", "--rcfile", &hook, "-i"]))
            .await
            .expect("spawn"),
    );
    let target = dir.path().join("a dir");
    std::fs::create_dir_all(&target).expect("mkdir");
    let cd = format!("cd '{}'", target.display());
    c.send_text(&b.binding_id, &SendTextRequest { text: cd, paste: false, enter: true }).await.expect("cd");
    let moved = wait_for("the cwd from OSC 7", Duration::from_secs(15), async || {
        let b = c.binding(&b.binding_id).await.expect("binding");
        (b.cwd == target.display().to_string()).then_some(b)
    })
    .await;
    assert_eq!(moved.state, BindingState::Open);
    for bad in [
        json!({"path": "relative/dir"}),
        json!({"path": "/tmp/a\u{7}b"}),
        json!({"path": format!("/{}", "x".repeat(5000))}),
    ] {
        let (status, answer) = d.post(&format!("/api/v1/terminals/bindings/{}/cwd", b.binding_id), bad.clone()).await;
        assert_eq!(status, 400, "{bad}: {answer}");
    }
    c.set_cwd(&b.binding_id, &CwdRequest { path: "/srv/elsewhere".into() }).await.expect("set cwd");
    assert_eq!(c.binding(&b.binding_id).await.expect("binding").cwd, "/srv/elsewhere");
}

/// A private X server (for the clipboard, and for kitty).
struct Xvfb {
    display: String,
    child: std::process::Child,
    number: u32,
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(format!("/tmp/.X11-unix/X{}", self.number));
        let _ = std::fs::remove_file(format!("/tmp/.X{}-lock", self.number));
    }
}

/// Xvfb picks a free display itself (`-displayfd`, taken with its lock
/// file): two tests of this binary starting one at once never share it,
/// which a check for a free socket followed by a start would let them.
fn xvfb() -> Xvfb {
    use std::io::BufRead as _;
    let mut child = Command::new("Xvfb")
        .args(["-displayfd", "1", "-screen", "0", "640x480x24", "-nolisten", "tcp"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("Xvfb (tests/run installs it)");
    // Written once it accepts connections; nothing if it fails to start.
    let mut line = String::new();
    let _ = std::io::BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line);
    let Ok(number) = line.trim().parse::<u32>() else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("Xvfb gave no display number ({line:?})");
    };
    Xvfb { display: format!(":{number}"), child, number }
}

#[tokio::test]
async fn the_os_clipboard_is_written_through_xclip_and_read_only_when_turned_on() {
    let x = xvfb();
    let dir = tempdir();
    let env = vec![("DISPLAY".to_string(), x.display.clone())];
    let d = Daemon::start(&dir.path().join("data"), Options { env: env.clone(), ..Default::default() });
    let wrote = d.client().write_clipboard(&ClipboardWrite { text: "copied by bosun".into(), binding_id: None }).await;
    assert_eq!(wrote.expect("write").via, "xclip");
    let out = Command::new("xclip")
        .args(["-selection", "clipboard", "-o"])
        .env("DISPLAY", &x.display)
        .output()
        .expect("xclip");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "copied by bosun");
    let (status, answer) = d.get("/api/v1/terminals/clipboard").await;
    assert_eq!((status, answer["error"]["code"].as_str()), (403, Some("consent_required")), "{answer}");
    drop(d);
    let config = "[termbridge]\nclipboard_read = true\nmax_clipboard_kb = 1\n".to_string();
    let d = Daemon::start(&dir.path().join("data2"), Options { env, config: Some(config), ..Default::default() });
    assert_eq!(d.client().read_clipboard().await.expect("read").text, "copied by bosun");
    let (status, _) = d.post("/api/v1/terminals/clipboard", json!({"text": "x".repeat(2000)})).await;
    assert_eq!(status, 400, "over max_clipboard_kb");
}

/// A tmux client attached to `session` in a terminal of its own (script(1)
/// gives it a pty; TERM=xterm-256color gives it tmux's clipboard feature):
/// what tmux writes to that terminal, as it comes.
struct OuterClient {
    child: std::process::Child,
    seen: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl OuterClient {
    fn attach(tmux: &Tmux, session: &str) -> OuterClient {
        let command = format!("tmux -L {} attach -t {}", tmux.socket, session);
        let mut child = Command::new("script")
            .args(["-q", "-f", "-e", "-c", &command, "/dev/null"])
            .env("TERM", "xterm-256color")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("script(1) runs");
        let mut stdout = child.stdout.take().expect("stdout");
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let into = seen.clone();
        std::thread::spawn(move || {
            use std::io::Read;
            let mut buf = [0u8; 8192];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                into.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(&buf[..n]);
            }
        });
        OuterClient { child, seen }
    }

    fn seen(&self) -> Vec<u8> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Drop for OuterClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn a_clipboard_write_to_a_tmux_pane_fills_its_buffer_and_reaches_the_attached_terminal_as_osc_52() {
    let tmux = Tmux::new();
    let dir = tempdir();
    let config = tmux.config("policy = \"full-access\"\nclipboard_read = true");
    let d = Daemon::start(&dir.path().join("data"), Options { config: Some(config), ..Default::default() });
    let c = d.client();
    let b = bound(c.spawn_terminal(&req(TerminalKind::Tmux, &["sh"])).await.expect("spawn"));
    let pane = pane_of(&b);
    let session = tmux.run(&["display-message", "-p", "-t", &pane, "#{session_name}"]).trim().to_string();
    let outer = OuterClient::attach(&tmux, &session);
    wait_for("the outer client", Duration::from_secs(10), async || {
        tmux.run(&["list-clients", "-F", "#{client_control_mode}"]).lines().any(|l| l == "0").then_some(())
    })
    .await;

    let text = "from bosun, \"quoted\" $HOME\nline two";
    let (status, body) = d.post("/api/v1/terminals/clipboard", json!({"text": text, "binding_id": b.binding_id})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!((body["via"].as_str(), body["screens"].as_u64()), (Some("tmux"), Some(1)), "{body}");
    // tmux's own buffer: what prefix-] pastes, verbatim.
    assert_eq!(tmux.run(&["show-buffer"]), text);
    // And OSC 52 to the attached terminal.
    let sequence = &bosun_termbridge::clipboard::osc52_sequences("c", text.as_bytes())[0];
    let encoded = String::from_utf8_lossy(&sequence[b"\x1b]52;c;".len()..sequence.len() - 2]).into_owned();
    wait_for("OSC 52 on the outer terminal", Duration::from_secs(10), async || {
        let seen = String::from_utf8_lossy(&outer.seen()).into_owned();
        (seen.contains("\x1b]52;") && seen.contains(&encoded)).then_some(())
    })
    .await;
    let (status, body) = d.get(&format!("/api/v1/terminals/clipboard?binding_id={}", b.binding_id)).await;
    assert_eq!((status, body["text"].as_str(), body["via"].as_str()), (200, Some(text), Some("tmux")), "{body}");
    // A tmux pane's clipboard takes what its map says (75 KB).
    let (status, body) =
        d.post("/api/v1/terminals/clipboard", json!({"text": "y".repeat(76 * 1024), "binding_id": b.binding_id})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("bad_request")), "{body}");
    assert_eq!(tmux.run(&["show-buffer"]), text, "nothing written");
}

/// A kitty of the test's own on a private X server, with remote control on
/// a socket of its own (its first window runs `sleep`, so kitty stays when
/// the test's windows close). Killed, then its X server, when dropped.
struct KittyInstance {
    child: std::process::Child,
    socket: PathBuf,
    _x: Xvfb,
    _dir: tempfile::TempDir,
}

impl KittyInstance {
    fn start() -> KittyInstance {
        use std::os::unix::process::CommandExt as _;
        let x = xvfb();
        let dir = tempdir();
        let socket = dir.path().join("kitty.sock");
        let child = Command::new("kitty")
            .args(["-o", "allow_remote_control=yes", "--config", "NONE", "-o", "enabled_layouts=splits,stack"])
            .arg("--listen-on")
            .arg(format!("unix:{}", socket.display()))
            .args(["sleep", "600"])
            .env("DISPLAY", &x.display)
            .env("LIBGL_ALWAYS_SOFTWARE", "1")
            .env_remove("KITTY_LISTEN_ON")
            .current_dir(dir.path())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .spawn()
            .expect("kitty (tests/run installs it)");
        let instance = KittyInstance { child, socket, _x: x, _dir: dir };
        // Answering, not only listening: the daemon discovers it at start.
        let deadline = Instant::now() + Duration::from_secs(30);
        while instance.try_ls().is_none() {
            assert!(Instant::now() < deadline, "kitty never answered on {}", instance.socket.display());
            std::thread::sleep(Duration::from_millis(100));
        }
        instance
    }

    fn listen_on(&self) -> String {
        format!("unix:{}", self.socket.display())
    }

    /// kitty's own `ls`, through a client of the test's own (not the
    /// daemon's adapter): the listing as kitty has it.
    fn try_ls(&self) -> Option<serde_json::Value> {
        use std::io::{Read as _, Write as _};
        let mut stream = std::os::unix::net::UnixStream::connect(&self.socket).ok()?;
        stream.write_all(b"\x1bP@kitty-cmd{\"cmd\":\"ls\",\"version\":[0,26,5]}\x1b\\").ok()?;
        stream.shutdown(std::net::Shutdown::Write).ok()?;
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).ok()?;
        let body: serde_json::Value = serde_json::from_slice(reply.get(12..reply.len().checked_sub(2)?)?).ok()?;
        serde_json::from_str(body["data"].as_str()?).ok()
    }

    fn ls(&self) -> serde_json::Value {
        self.try_ls().expect("kitty's ls")
    }

    /// Every window kitty lists.
    fn windows(&self) -> Vec<serde_json::Value> {
        let listing = self.ls();
        let mut windows = Vec::new();
        for os in listing.as_array().expect("OS windows") {
            for tab in os["tabs"].as_array().expect("tabs") {
                windows.extend(tab["windows"].as_array().expect("windows").iter().cloned());
            }
        }
        windows
    }

    fn window(&self, id: u64) -> Option<serde_json::Value> {
        self.windows().into_iter().find(|w| w["id"].as_u64() == Some(id))
    }

    /// Whether window `id` is where its OS window's keys go: the active
    /// window of the active tab.
    fn active_in_its_os_window(&self, id: u64) -> bool {
        for os in self.ls().as_array().expect("OS windows") {
            for tab in os["tabs"].as_array().expect("tabs") {
                for w in tab["windows"].as_array().expect("windows") {
                    if w["id"].as_u64() == Some(id) {
                        return tab["is_focused"] == json!(true) && w["is_focused"] == json!(true);
                    }
                }
            }
        }
        false
    }
}

impl Drop for KittyInstance {
    fn drop(&mut self) {
        let pid = self.child.id() as i32;
        // SAFETY: signals to the process group we made, and to kitty itself.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
            libc::kill(pid, libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

/// `42` from `kitty://window/42`.
fn kitty_window_of(b: &BindingView) -> u64 {
    let id = b.ipc_endpoint.strip_prefix("kitty://window/").unwrap_or_else(|| panic!("{}", b.ipc_endpoint));
    id.parse().unwrap_or_else(|_| panic!("a kitty window id: {}", b.ipc_endpoint))
}

#[tokio::test]
async fn kitty_needs_consent_then_its_windows_are_spawned_typed_into_read_focused_closed_and_lost() {
    let kitty = KittyInstance::start();
    let dir = tempdir();
    let config =
        format!("[termbridge]\npolicy = \"full-access\"\n[termbridge.kitty]\nlisten_on = \"{}\"\n", kitty.listen_on());
    let options =
        Options { config: Some(config), env: vec![("KITTY_LISTEN_ON".into(), String::new())], ..Default::default() };
    let d = Daemon::start(&dir.path().join("data"), options);
    let c = d.client();
    let entry = c.terminals().await.expect("map").terminals.into_iter().find(|t| t.terminal == TerminalKind::Kitty);
    let entry = entry.expect("kitty in the map");
    assert!(entry.installed && entry.running && entry.reachable, "{entry:?}");
    assert!(entry.version.as_deref().is_some_and(|v| v.starts_with("0.")), "kitty --version: {entry:?}");
    assert!(entry.requires_opt_in && entry.consent_granted_at.is_none(), "{entry:?}");
    let before = kitty.windows().len();

    // Before consent: refused, recorded, and nothing started in kitty.
    let cwd = dir.path().join("work");
    std::fs::create_dir_all(&cwd).expect("mkdir");
    let cwd = cwd.display().to_string();
    let spawn = json!({"terminal": "kitty", "command": ["sh"], "cwd": cwd});
    let (status, answer) = d.post("/api/v1/terminals/bindings", spawn.clone()).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (403, Some("consent_required")), "{answer}");
    let events = d.events(None, 0).await;
    let denied: Vec<(String, String)> = events
        .iter()
        .filter_map(|e| match payload(e) {
            EventData::TerminalDenied(x) if x.terminal == TerminalKind::Kitty => Some((x.action, x.reason)),
            _ => None,
        })
        .collect();
    assert!(denied.len() == 1 && denied[0].0 == "spawn" && denied[0].1.contains("consent"), "{denied:?}");
    assert_eq!(kitty.windows().len(), before, "nothing was started: {}", kitty.ls());
    assert!(c.bindings().await.expect("bindings").bindings.is_empty());

    // POST /api/v1/terminals/kitty/consent
    let granted = c.consent(TerminalKind::Kitty, true).await.expect("grant");
    assert!(granted.requires_opt_in && granted.consent_granted_at.is_some(), "{granted:?}");

    // An OS window running sh in `cwd`, and a split of it.
    let first = bound(
        c.spawn_terminal(&SpawnTerminalRequest { cwd: Some(cwd.clone()), ..req(TerminalKind::Kitty, &["sh"]) })
            .await
            .expect("spawn once granted"),
    );
    let first_id = kitty_window_of(&first);
    assert_eq!((first.state, first.cwd.as_str()), (BindingState::Open, cwd.as_str()));
    let listed = kitty.window(first_id).unwrap_or_else(|| panic!("kitty lists window {first_id}: {}", kitty.ls()));
    assert_eq!(listed["pid"].as_u64(), first.pid.map(u64::from), "the binding holds the shell's pid: {listed}");
    assert_eq!(listed["cwd"].as_str(), Some(cwd.as_str()), "{listed}");
    let second = bound(
        c.spawn_terminal(&SpawnTerminalRequest {
            split_of: Some(first.binding_id.clone()),
            ..req(TerminalKind::Kitty, &["sh"])
        })
        .await
        .expect("split"),
    );
    let second_id = kitty_window_of(&second);
    assert_ne!(second_id, first_id);
    assert!(kitty.window(second_id).is_some(), "{}", kitty.ls());
    // And a tab, whose shell is killed below.
    let third = bound(
        c.spawn_terminal(&SpawnTerminalRequest {
            placement: Some(bosun_proto::Placement::Tab),
            ..req(TerminalKind::Kitty, &["sh"])
        })
        .await
        .expect("a tab"),
    );
    let third_id = kitty_window_of(&third);
    let third_pid = third.pid.expect("the tab's shell's pid");
    assert_eq!(kitty.window(third_id).and_then(|w| w["pid"].as_u64()), Some(u64::from(third_pid)), "{}", kitty.ls());

    // Typed into the first, and read back.
    c.send_text(
        &first.binding_id,
        &SendTextRequest { text: "echo typed-into-kitty".into(), paste: false, enter: true },
    )
    .await
    .expect("send");
    let text = wait_for("the echo in kitty", Duration::from_secs(15), async || {
        let t = c.read_text(&first.binding_id).await.expect("read").text;
        t.lines().any(|l| l.trim() == "typed-into-kitty").then_some(t)
    })
    .await;
    assert!(text.contains("echo typed-into-kitty"), "the command line too: {text:?}");

    // Focus moves to each in turn.
    c.focus(&first.binding_id).await.expect("focus");
    assert!(kitty.active_in_its_os_window(first_id) && !kitty.active_in_its_os_window(second_id), "{}", kitty.ls());
    c.focus(&second.binding_id).await.expect("focus");
    assert!(kitty.active_in_its_os_window(second_id) && !kitty.active_in_its_os_window(first_id), "{}", kitty.ls());

    // Closed through the API: closed, and gone from kitty.
    let closed = c.close_binding(&second.binding_id).await.expect("close");
    assert_eq!(closed.binding.state, BindingState::Closed);
    wait_for("kitty to drop the closed window", Duration::from_secs(10), async || {
        kitty.window(second_id).is_none().then_some(())
    })
    .await;
    assert_eq!(c.binding(&second.binding_id).await.expect("binding").state, BindingState::Closed);

    // Closed by hand, with kitty's own CLI: the daemon finds out by itself
    // (its check every 2 s, with no action asked of it) and says so.
    let out = Command::new("kitty")
        .args(["@", "--to", &kitty.listen_on(), "close-window", "--match", &format!("id:{first_id}")])
        .output()
        .expect("kitty @ close-window");
    assert!(out.status.success(), "kitty @ close-window: {}", String::from_utf8_lossy(&out.stderr));
    let closed_at = Instant::now();
    wait_for("kitty to drop the window closed by hand", Duration::from_secs(5), async || {
        kitty.window(first_id).is_none().then_some(())
    })
    .await;
    let lost = wait_for("the binding to be lost", Duration::from_secs(6), async || {
        let b = c.binding(&first.binding_id).await.expect("binding");
        (b.state == BindingState::Lost).then_some(b)
    })
    .await;
    eprintln!("lost {:?} after the window closed", closed_at.elapsed());
    assert!(lost.reason.as_deref().is_some_and(|r| r.contains("gone")), "{:?}", lost.reason);
    let lost_events = |events: &[bosun_proto::Envelope]| -> Vec<String> {
        events
            .iter()
            .filter_map(|e| match payload(e) {
                EventData::BindingLost(l) if l.terminal == TerminalKind::Kitty => Some(l.binding_id),
                _ => None,
            })
            .collect()
    };
    // The event is readable once flushed, which can be a moment after the
    // record that says `lost` is.
    let lost_seen = async |want: Vec<String>| {
        let mut seen = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while seen != want && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            seen = lost_events(&d.events(None, 0).await);
        }
        seen
    };
    let want = vec![first.binding_id.clone()];
    assert_eq!(lost_seen(want.clone()).await, want, "one termbridge:binding_lost, for the one closed by hand");
    for (action, body) in [("send", json!({"text": "x"})), ("focus", json!({}))] {
        let (status, answer) = d.post(&format!("/api/v1/terminals/bindings/{}/{action}", first.binding_id), body).await;
        assert_eq!((status, answer["error"]["code"].as_str()), (409, Some("conflict")), "{action}: {answer}");
    }
    assert_eq!(c.binding(&third.binding_id).await.expect("binding").state, BindingState::Open, "the tab is untouched");

    // The tab's shell killed: lost the same way.
    // SAFETY: a signal to the shell kitty started for the test.
    unsafe { libc::kill(third_pid as i32, libc::SIGKILL) };
    let killed_at = Instant::now();
    let lost = wait_for("the killed shell's binding to be lost", Duration::from_secs(6), async || {
        let b = c.binding(&third.binding_id).await.expect("binding");
        (b.state == BindingState::Lost).then_some(b)
    })
    .await;
    eprintln!("lost {:?} after the shell was killed", killed_at.elapsed());
    assert!(lost.reason.as_deref().is_some_and(|r| r.contains("gone")), "{:?}", lost.reason);
    let (status, answer) =
        d.post(&format!("/api/v1/terminals/bindings/{}/send", third.binding_id), json!({"text": "x"})).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (409, Some("conflict")), "{answer}");

    // Each action done is recorded with what allowed it; the refused ones
    // are not.
    let want = vec![first.binding_id.clone(), third.binding_id.clone()];
    assert_eq!(lost_seen(want.clone()).await, want);
    let events = d.events(None, 0).await;
    let done = actions(&events);
    let count = |name: &str| done.iter().filter(|(a, _)| a == name).count();
    assert!(done.iter().all(|(_, d)| d == "full-access"), "{done:?}");
    assert_eq!(count("spawn"), 3, "{done:?}");
    assert_eq!(count("send_text"), 1, "{done:?}");
    assert_eq!(count("focus"), 2, "{done:?}");
    assert_eq!(count("close"), 1, "{done:?}");
    assert!(count("read_text") >= 1, "{done:?}");
    let spawned_by = |id: &str| {
        events.iter().any(|e| {
            matches!(payload(e), EventData::TerminalAction(a)
                if a.action == "spawn" && a.binding_id == id && a.terminal == TerminalKind::Kitty && a.detail == "sh")
        })
    };
    assert!([&first, &second, &third].iter().all(|b| spawned_by(&b.binding_id)), "{done:?}");
}
