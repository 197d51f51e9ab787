//! `bosun term` against the real binary: spawn, ls, send, read and close,
//! with and without `--json`; `attach` in a real pseudo-terminal; and the
//! errors a user can make.

mod common;

use bosun_proto::{ActionDone, BindingState, BindingView, SpawnOutcome, TerminalText};
use common::*;
use portable_pty::{CommandBuilder, NativePtySystem, PtySize, PtySystem};
use std::io::{Read as _, Write as _};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn term(d: &Daemon, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("term")
        .args(args)
        .env("BOSUN_URL", &d.url)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run bosun term")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Polls `bosun term read` until its output holds `needle`.
async fn wait_read(d: &Daemon, id: &str, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = term(d, &["read", id]);
        assert!(out.status.success(), "{out:?}");
        let text = stdout(&out);
        if text.contains(needle) {
            return text;
        }
        assert!(Instant::now() < deadline, "{needle:?} never showed; the terminal holds {text:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A daemon that runs its terminals' commands unasked: these tests are
/// about the CLI, and the one below about what plan-only holds.
fn full_access() -> Options {
    Options { config: Some("[termbridge]\npolicy = \"full-access\"\n".into()), ..Default::default() }
}

#[tokio::test]
async fn under_plan_only_a_command_is_held_and_spawn_says_so_with_exit_code_3() {
    let dir = tempdir();
    let d = Daemon::start(&dir.path().join("data"), Options::default());
    let out = term(&d, &["spawn", "--terminal", "pty", "--", "sh", "-c", "echo not yet"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(stdout(&out).is_empty(), "no binding id: {out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("held for approval a_") && err.contains("bosun approve"), "{err}");
    let out = term(&d, &["spawn", "--json", "--", "sh", "-c", "echo not yet"]);
    assert_eq!(out.status.code(), Some(3));
    let held: SpawnOutcome = serde_json::from_slice(&out.stdout).expect("a SpawnOutcome");
    assert_eq!(held.outcome, "awaiting_approval");
    // A shell with no command runs nothing by itself: not held.
    let out = term(&d, &["spawn", "--terminal", "pty"]);
    assert!(out.status.success(), "{out:?}");
    let id = stdout(&out).trim().to_string();
    let out = term(&d, &["send", &id, "echo now", "--enter"]);
    assert_eq!(out.status.code(), Some(3), "Enter would run it: held ({out:?})");
}

#[tokio::test]
async fn spawn_ls_send_read_close_with_and_without_json() {
    let dir = tempdir();
    let d = Daemon::start(&dir.path().join("data"), full_access());
    let cwd = dir.path().to_str().unwrap();

    // The id alone on stdout.
    let out = term(
        &d,
        &["spawn", "--terminal", "pty", "--cwd", cwd, "--env", "GREETING=hello", "--label", "role=test", "--", "sh"],
    );
    assert!(out.status.success(), "{out:?}");
    let id = stdout(&out).trim().to_string();
    assert!(id.starts_with("b_") && !id.contains(char::is_whitespace), "{id:?}");

    // --json: the BindingView.
    let out = term(&d, &["spawn", "--json", "--", "sh", "-c", "printf 'raw\\377bytes'; sleep 30"]);
    assert!(out.status.success(), "{out:?}");
    let spawned: SpawnOutcome = serde_json::from_slice(&out.stdout).expect("a SpawnOutcome");
    let second: BindingView = spawned.binding.expect("bound at once");
    assert_eq!(second.state, BindingState::Open);
    assert_eq!(second.command, ["sh", "-c", "printf 'raw\\377bytes'; sleep 30"]);

    // The table names both bindings and the pty terminal.
    let out = term(&d, &["ls"]);
    assert!(out.status.success(), "{out:?}");
    let table = stdout(&out);
    assert!(table.contains("TERMINAL") && table.contains("pty"), "{table}");
    assert!(table.contains(&id) && table.contains(&second.binding_id), "{table}");
    assert!(table.contains(&format!("pty://{id}")), "{table}");
    let out = term(&d, &["ls", "--json"]);
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert!(listed["terminals"].as_array().is_some_and(|t| t.iter().any(|t| t["terminal"] == "pty")), "{listed}");
    let bindings: Vec<BindingView> = serde_json::from_value(listed["bindings"].clone()).expect("bindings");
    let first = bindings.iter().find(|b| b.binding_id == id).expect("the first binding is listed");
    assert_eq!(first.labels.get("role").map(String::as_str), Some("test"));
    assert_eq!(first.cwd, cwd);

    // send, then read what the shell made of it.
    let out = term(&d, &["send", &id, "echo \"$GREETING from $(pwd)\"", "--enter"]);
    assert!(out.status.success(), "{out:?}");
    wait_read(&d, &id, &format!("hello from {cwd}")).await;
    // A paste is typed as it is (in bracketed-paste markers), without Enter:
    // the terminal echoes it.
    let out = term(&d, &["send", &id, "pasted-words", "--paste", "--json"]);
    let done: ActionDone = serde_json::from_slice(&out.stdout).expect("an ActionDone");
    assert_eq!(done.outcome, "done");
    wait_read(&d, &id, "pasted-words").await;

    // read: raw bytes for a pty (0xff is not UTF-8), the TerminalText with --json.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = term(&d, &["read", &second.binding_id]);
        assert!(out.status.success(), "{out:?}");
        if out.stdout.windows(9).any(|w| w == b"raw\xffbytes") {
            break;
        }
        assert!(Instant::now() < deadline, "raw bytes never came: {:?}", out.stdout);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let out = term(&d, &["read", &second.binding_id, "--json"]);
    let text: TerminalText = serde_json::from_slice(&out.stdout).expect("a TerminalText");
    assert!(text.text.contains("raw\u{fffd}bytes"), "{text:?}");

    // close, both ways.
    let out = term(&d, &["close", &id]);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout(&out).contains(&id) && stdout(&out).contains("closed"), "{}", stdout(&out));
    let out = term(&d, &["close", &second.binding_id, "--json"]);
    let closed: ActionDone = serde_json::from_slice(&out.stdout).expect("an ActionDone");
    assert_eq!(closed.binding.state, BindingState::Closed);
}

#[tokio::test]
async fn bad_input_exits_non_zero_with_a_clear_message() {
    let dir = tempdir();
    let d = Daemon::start(&dir.path().join("data"), full_access());

    // An unknown binding: the daemon's 404 message, exit 1.
    for args in [&["read", "b_000000000000"][..], &["send", "b_000000000000", "x"], &["close", "b_000000000000"]] {
        let out = term(&d, args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
        let err = stderr(&out);
        assert!(err.starts_with("error: ") && err.contains("not_found"), "{args:?}: {err}");
    }
    // An unknown terminal: clap refuses it, naming the ones there are.
    let out = term(&d, &["spawn", "--terminal", "xterm", "--", "sh"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(stderr(&out).contains("xterm") && stderr(&out).contains("tmux"), "{}", stderr(&out));
    // A terminal the daemon does not drive yet: its answer, passed on.
    let out = term(&d, &["spawn", "--terminal", "alacritty", "--", "sh"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stderr(&out).contains("error: "), "{}", stderr(&out));
    // Malformed K=V.
    let out = term(&d, &["spawn", "--env", "NOVALUE", "--", "sh"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");

    // attach with stdin not a TTY.
    let out = term(&d, &["spawn", "--", "sh"]);
    let id = stdout(&out).trim().to_string();
    let out = term(&d, &["attach", &id]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stderr(&out).contains("stdin is not a TTY"), "{}", stderr(&out));
}

/// `bosun term attach` in a pseudo-terminal of its own, as a user would run it.
struct Attached {
    child: Box<dyn portable_pty::Child + Send + Sync>,
    writer: Box<dyn std::io::Write + Send>,
    /// The outer terminal's side, kept to resize it.
    master: Box<dyn portable_pty::MasterPty + Send>,
    output: Arc<Mutex<Vec<u8>>>,
    /// Set once the reader has had everything the outer terminal got.
    drained: Arc<std::sync::atomic::AtomicBool>,
}

impl Attached {
    fn start(d: &Daemon, id: &str) -> Attached {
        Attached::start_sized(d, id, 100, 30)
    }

    /// In an outer terminal of `cols` x `rows`.
    fn start_sized(d: &Daemon, id: &str, cols: u16, rows: u16) -> Attached {
        let pair = NativePtySystem::default()
            .openpty(PtySize { rows, cols, pixel_width: 0, pixel_height: 0 })
            .expect("openpty");
        let mut cmd = CommandBuilder::new(BIN);
        cmd.args(["term", "attach", id]);
        cmd.env("BOSUN_URL", &d.url);
        let child = pair.slave.spawn_command(cmd).expect("spawn attach");
        drop(pair.slave);
        let mut reader = pair.master.try_clone_reader().expect("reader");
        let writer = pair.master.take_writer().expect("writer");
        let output = Arc::new(Mutex::new(Vec::new()));
        let sink = output.clone();
        let drained = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let done = drained.clone();
        let master = pair.master;
        std::thread::spawn(move || {
            // EIO once the child is gone and what it wrote has been read.
            let mut buf = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
            done.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        Attached { child, writer, master, output, drained }
    }

    /// Resizes the outer terminal, as a user dragging its window would: the
    /// kernel sends SIGWINCH to attach, its foreground process.
    fn resize(&self, cols: u16, rows: u16) {
        self.master.resize(PtySize { rows, cols, pixel_width: 0, pixel_height: 0 }).expect("resize the outer pty");
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned()
    }

    /// Waits for the shell's prompt: what is typed before the shell reads
    /// its terminal may be flushed by it.
    async fn wait_prompt(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !(self.text().contains("# ") || self.text().contains("$ ")) {
            assert!(Instant::now() < deadline, "no prompt: {:?}", self.text());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn wait_for(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.text().contains(needle) {
            assert!(Instant::now() < deadline, "{needle:?} never showed: {:?}", self.text());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn type_bytes(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).and_then(|()| self.writer.flush()).expect("type");
    }

    /// Its exit code, once it has ended and all it wrote has been read (its
    /// last words may still be in the outer terminal when it exits).
    async fn exit_code(&mut self) -> u32 {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                if self.drained.load(std::sync::atomic::Ordering::SeqCst) {
                    return status.exit_code();
                }
            }
            assert!(Instant::now() < deadline, "attach did not end: {:?}", self.text());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test]
async fn attach_types_into_a_shell_shows_its_output_and_exits_with_its_code() {
    let dir = tempdir();
    let d = Daemon::start(&dir.path().join("data"), full_access());
    let out = term(&d, &["spawn", "--", "sh"]);
    let id = stdout(&out).trim().to_string();

    let mut attached = Attached::start(&d, &id);
    // The local size reaches the terminal (RESIZE at start).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let b = d.client().binding(&id).await.expect("binding");
        if b.size.is_some_and(|s| s.cols == 100 && s.rows == 30) {
            break;
        }
        assert!(Instant::now() < deadline, "the size never arrived: {:?}", b.size);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    attached.wait_prompt().await;
    // `\r` is what Enter sends in raw mode.
    attached.type_bytes(b"echo h\"\"i; exit 3\r");
    attached.wait_for("hi\r\n").await;
    assert_eq!(attached.exit_code().await, 3, "{:?}", attached.text());
    assert!(attached.text().contains("exited with code 3"), "{:?}", attached.text());
}

#[tokio::test]
async fn attach_detaches_on_ctrl_bracket_q_and_leaves_the_terminal_running() {
    let dir = tempdir();
    let d = Daemon::start(&dir.path().join("data"), full_access());
    let out = term(&d, &["spawn", "--", "sh"]);
    let id = stdout(&out).trim().to_string();

    let mut attached = Attached::start(&d, &id);
    attached.wait_prompt().await;
    attached.type_bytes(b"echo fi\"\"rst\r");
    attached.wait_for("first\r\n").await;
    attached.type_bytes(&[0x1d, b'q']);
    assert_eq!(attached.exit_code().await, 0, "{:?}", attached.text());
    assert!(attached.text().contains("detached from"), "{:?}", attached.text());
    let b = d.client().binding(&id).await.expect("binding");
    assert_eq!(b.state, BindingState::Open, "detaching leaves the terminal alone");

    // Attaching again replays the scrollback, then goes on live.
    let mut again = Attached::start(&d, &id);
    again.wait_for("first\r\n").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    again.type_bytes(b"exit 0\r");
    assert_eq!(again.exit_code().await, 0, "{:?}", again.text());
}

#[tokio::test]
async fn attach_reconnects_when_the_daemon_restarts_and_ends_with_the_terminal() {
    let dir = tempdir();
    let d = Daemon::start(&dir.path().join("data"), full_access());
    let out = term(&d, &["spawn", "--", "sh", "-c", "echo before-restart; sleep 600"]);
    let id = stdout(&out).trim().to_string();

    let mut attached = Attached::start(&d, &id);
    attached.wait_for("before-restart\r\n").await;
    // kill -9 and a new daemon on the same port: the child went with the
    // first one, so the binding comes back lost, its scrollback kept.
    let _d = d.restart_in_place();
    attached.wait_for("reconnected").await;
    assert_eq!(attached.exit_code().await, 1, "{:?}", attached.text());
    let text = attached.text();
    assert!(text.contains("reconnecting"), "{text:?}");
    assert!(text.contains(&format!("{id} is lost")), "{text:?}");
    assert_eq!(text.matches("before-restart").count(), 1, "nothing shown twice: {text:?}");
}

/// Waits until the binding reports `cols` x `rows`.
async fn wait_size(d: &Daemon, id: &str, cols: u16, rows: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let b = d.client().binding(id).await.expect("binding");
        if b.size.is_some_and(|s| s.cols == cols && s.rows == rows) {
            return;
        }
        assert!(Instant::now() < deadline, "the size never became {cols}x{rows}: {:?}", b.size);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn attach_passes_its_terminals_size_on_at_start_and_on_every_resize() {
    let dir = tempdir();
    let d = Daemon::start(&dir.path().join("data"), full_access());
    let out = term(&d, &["spawn", "--", "sh"]);
    let id = stdout(&out).trim().to_string();
    // The daemon's own size for it, before anything is attached.
    let start = d.client().binding(&id).await.expect("binding").size;
    assert!(start.is_some_and(|s| (s.cols, s.rows) == (80, 24)), "{start:?}");

    let mut attached = Attached::start_sized(&d, &id, 100, 30);
    wait_size(&d, &id, 100, 30).await;
    attached.wait_prompt().await;
    // What the program in the terminal sees: the PTY's own size.
    attached.type_bytes(b"stty size\r");
    attached.wait_for("\n30 100\r\n").await;

    // SIGWINCH: attach reads the new size and sends it on.
    attached.resize(132, 43);
    wait_size(&d, &id, 132, 43).await;
    attached.type_bytes(b"stty size\r");
    attached.wait_for("\n43 132\r\n").await;

    // And again, smaller: each resize, not only the first.
    attached.resize(60, 20);
    wait_size(&d, &id, 60, 20).await;
    attached.type_bytes(b"stty size\r");
    attached.wait_for("\n20 60\r\n").await;

    attached.type_bytes(&[0x1d, b'q']);
    assert_eq!(attached.exit_code().await, 0, "{:?}", attached.text());
    assert!(attached.text().contains("detached from"), "{:?}", attached.text());
    // The terminal keeps the last size it was given.
    let b = d.client().binding(&id).await.expect("binding");
    assert_eq!(b.state, BindingState::Open);
    assert!(b.size.is_some_and(|s| (s.cols, s.rows) == (60, 20)), "{:?}", b.size);
}
