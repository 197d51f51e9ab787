//! The tmux adapter against a real tmux server on a private socket.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use bosun_termbridge::adapters::tmux::{Tmux, TmuxConfig, TmuxSocket};
use bosun_termbridge::osc::{OscParser, TerminalEvent};
use bosun_termbridge::{Direction, PaneId, Placement, SendMode, SpawnRequest, TermError, TerminalControl};
use common::{require, unique_name, wait_for};

/// A tmux server of our own, killed when dropped.
struct Server {
    socket: String,
}

impl Server {
    fn start() -> Server {
        require("tmux");
        let socket = unique_name("bosun-termbridge");
        let server = Server { socket };
        server.start_again();
        server
    }
    /// Starts the server; again after a kill-server, which returns before
    /// the old server has let go of its socket.
    fn start_again(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let status = self
                .tmux()
                .args(["-f", "/dev/null", "new-session", "-d", "-s", "main", "-x", "120", "-y", "40", "sh"])
                .status()
                .expect("tmux runs");
            if status.success() {
                return;
            }
            assert!(Instant::now() < deadline, "tmux new-session kept failing");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    fn tmux(&self) -> Command {
        let mut command = Command::new("tmux");
        command.args(["-L", &self.socket]);
        command
    }
    fn adapter(&self) -> Tmux {
        Tmux::new(TmuxConfig {
            socket: TmuxSocket::Name(self.socket.clone()),
            config_file: Some("/dev/null".into()),
            ..TmuxConfig::default()
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.tmux().arg("kill-server").status();
    }
}

fn bash() -> Vec<String> {
    ["bash", "--norc", "--noprofile", "-i"].map(String::from).to_vec()
}

fn window(command: Vec<String>) -> SpawnRequest {
    SpawnRequest { command, cwd: None, env: BTreeMap::new(), placement: Placement::Window }
}

async fn screen_contains(tmux: &Tmux, pane: &PaneId, needle: &str) -> String {
    let what = format!("{needle:?} on {pane}");
    wait_for(&what, Duration::from_secs(10), || async {
        let text = tmux.read_text(pane).await.ok()?;
        text.contains(needle).then_some(text)
    })
    .await
}

#[tokio::test]
async fn spawn_with_cwd_and_env_then_read_back_and_describe() {
    let server = Server::start();
    let tmux = server.adapter();
    let dir = tempfile::tempdir().unwrap();
    let request = SpawnRequest {
        command: vec!["sh".into(), "-c".into(), "echo \"[$GREETING] in $(pwd)\"; exec sleep 60".into()],
        cwd: Some(dir.path().to_path_buf()),
        env: BTreeMap::from([("GREETING".to_string(), "hello # $x \"q\"".to_string())]),
        placement: Placement::Window,
    };
    let pane = tmux.spawn(request).await.unwrap();
    assert!(pane.id.as_str().starts_with('%'), "{pane:?}");
    assert_eq!(pane.endpoint, format!("tmux://{}/{}", server.socket, pane.id));
    let expected = format!("[hello # $x \"q\"] in {}", dir.path().display());
    screen_contains(&tmux, &pane.id, &expected).await;
    let info = tmux.describe(&pane.id).await.unwrap();
    assert_eq!(info.pid, pane.pid);
    assert!(pane.pid.is_some());
    assert!(tmux.exists(&pane.id).await.unwrap());
}

#[tokio::test]
async fn splits_focus_and_the_focused_pane() {
    let server = Server::start();
    let tmux = server.adapter();
    let first = tmux.spawn(window(vec!["sleep".into(), "60".into()])).await.unwrap();
    let right = tmux
        .spawn(SpawnRequest {
            placement: Placement::Split { target: first.id.clone(), direction: Direction::Right },
            ..window(vec!["sleep".into(), "60".into()])
        })
        .await
        .unwrap();
    let below = tmux
        .spawn(SpawnRequest {
            placement: Placement::Split { target: first.id.clone(), direction: Direction::Down },
            ..window(vec!["sleep".into(), "60".into()])
        })
        .await
        .unwrap();
    let layout = |pane: &PaneId| {
        let out = server
            .tmux()
            .args(["display-message", "-p", "-t", pane.as_str(), "#{window_id} #{pane_left} #{pane_top}"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let [first_at, right_at, below_at] = [&first.id, &right.id, &below.id].map(|p| {
        let l = layout(p);
        let parts: Vec<String> = l.split(' ').map(String::from).collect();
        (parts[0].clone(), parts[1].parse::<u32>().unwrap(), parts[2].parse::<u32>().unwrap())
    });
    assert_eq!(first_at.0, right_at.0, "the split is in the same window");
    assert!(right_at.1 > first_at.1 && right_at.2 == first_at.2, "right of: {first_at:?} {right_at:?}");
    assert!(below_at.2 > first_at.2 && below_at.1 == first_at.1, "below: {first_at:?} {below_at:?}");

    // A second window, so focus has to change window as well as pane.
    let other = tmux.spawn(window(vec!["sleep".into(), "60".into()])).await.unwrap();
    assert_eq!(tmux.focused_pane().await.unwrap(), Some(other.id.clone()));
    for pane in [&first.id, &right.id, &other.id, &below.id] {
        tmux.focus(pane).await.unwrap();
        assert_eq!(tmux.focused_pane().await.unwrap().as_ref(), Some(pane));
        assert_eq!(tmux.describe(pane).await.unwrap().focused, Some(true));
    }
    assert_eq!(tmux.describe(&first.id).await.unwrap().focused, Some(false));
}

#[tokio::test]
async fn send_text_is_typed_verbatim_and_enter_runs_it() {
    let server = Server::start();
    let tmux = server.adapter();
    let pane = tmux.spawn(window(vec!["cat".into()])).await.unwrap();
    // Everything tmux's parser would otherwise take: quotes, $, \, ;, #{}, ~, a leading dash.
    let tricky = r#"-n a "b" 'c' $HOME \x ; #{pane_id} ~ end"#;
    tmux.send_text(&pane.id, tricky, SendMode { paste: false, enter: true }).await.unwrap();
    // Echoed by the tty, then printed back by cat: exactly twice.
    let text = wait_for("the text twice", Duration::from_secs(10), || async {
        let text = tmux.read_text(&pane.id).await.ok()?;
        (text.matches(tricky).count() >= 2).then_some(text)
    })
    .await;
    assert_eq!(text.matches(tricky).count(), 2, "{text:?}");

    let shell = tmux.spawn(window(bash())).await.unwrap();
    tmux.send_text(&shell.id, "echo result-$((6*7))", SendMode { paste: false, enter: true }).await.unwrap();
    screen_contains(&tmux, &shell.id, "\nresult-42").await;
}

#[tokio::test]
async fn paste_mode_brackets_the_text_so_the_shell_waits_for_enter() {
    let server = Server::start();
    let tmux = server.adapter();
    let shell = tmux.spawn(window(bash())).await.unwrap();
    // bash enables bracketed paste at its prompt (readline's default).
    let mut output = tmux.subscribe();
    tmux.send_text(&shell.id, "true", SendMode { paste: false, enter: true }).await.unwrap();
    let mut parser = OscParser::default();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut enabled = false;
    while !enabled {
        let chunk = tokio::time::timeout_at(deadline.into(), output.recv()).await.expect("bracketed paste on").unwrap();
        if chunk.pane == shell.id {
            enabled = parser.feed(&chunk.bytes).contains(&TerminalEvent::BracketedPaste(true));
        }
    }
    tmux.send_text(&shell.id, "echo one-$((1+1))\necho two-$((1+2))", SendMode { paste: true, enter: false })
        .await
        .unwrap();
    screen_contains(&tmux, &shell.id, "echo two-$((1+2))").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = tmux.read_text(&shell.id).await.unwrap();
    assert!(!before.contains("one-2"), "a pasted line ran before Enter: {before:?}");
    tmux.send_text(&shell.id, "", SendMode { paste: false, enter: true }).await.unwrap();
    let after = screen_contains(&tmux, &shell.id, "two-3").await;
    assert!(after.contains("\none-2"), "{after:?}");
}

#[tokio::test]
async fn output_stream_carries_the_panes_output() {
    let server = Server::start();
    let tmux = server.adapter();
    tmux.connect().await.unwrap();
    let mut output = tmux.subscribe();
    let pane = tmux
        .spawn(window(vec!["sh".into(), "-c".into(), "sleep 0.2; printf 'mark\\033]0;t\\007er\\n'; sleep 60".into()]))
        .await
        .unwrap();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !bosun_termbridge::sanitize::sanitize(&seen).contains("marker") {
        let chunk = tokio::time::timeout_at(deadline.into(), output.recv()).await.expect("output in time").unwrap();
        if chunk.pane == pane.id {
            seen.extend(chunk.bytes);
        }
    }
    // The escape came through as bytes, unescaped from tmux's octal.
    assert!(seen.windows(2).any(|w| w == b"\x1b]"), "{seen:?}");
}

#[tokio::test]
async fn panes_killed_by_hand_are_gone() {
    let server = Server::start();
    let tmux = server.adapter();
    let a = tmux.spawn(window(vec!["sleep".into(), "60".into()])).await.unwrap();
    let b = tmux.spawn(window(vec!["sleep".into(), "60".into()])).await.unwrap();
    let c = tmux.spawn(window(vec!["sleep".into(), "60".into()])).await.unwrap();

    assert!(server.tmux().args(["kill-pane", "-t", a.id.as_str()]).status().unwrap().success());
    assert_eq!(tmux.describe(&a.id).await, Err(TermError::PaneGone));
    assert!(!tmux.exists(&a.id).await.unwrap());
    assert_eq!(tmux.send_text(&a.id, "x", SendMode::default()).await, Err(TermError::PaneGone));

    common::kill9(b.pid.expect("a pid"));
    wait_for("the killed pane to be gone", Duration::from_secs(5), || async {
        (tmux.describe(&b.id).await == Err(TermError::PaneGone)).then_some(())
    })
    .await;

    tmux.close(&c.id).await.unwrap();
    assert!(!tmux.exists(&c.id).await.unwrap());
    assert_eq!(tmux.describe(&PaneId::new("%9999")).await, Err(TermError::PaneGone));
}

#[tokio::test]
async fn a_restarted_server_is_reattached_and_old_panes_are_gone() {
    let server = Server::start();
    let tmux = server.adapter();
    let pane = tmux.spawn(window(vec!["sleep".into(), "60".into()])).await.unwrap();
    assert!(server.tmux().arg("kill-server").status().unwrap().success());
    wait_for("the control client to notice", Duration::from_secs(5), || async {
        (tmux.describe(&pane.id).await == Err(TermError::PaneGone)).then_some(())
    })
    .await;
    server.start_again();
    let again = tmux.spawn(window(vec!["sleep".into(), "60".into()])).await.unwrap();
    assert!(tmux.exists(&again.id).await.unwrap());
    let discovery = tmux.discover().await;
    assert!(discovery.installed && discovery.running && discovery.reachable, "{discovery:?}");
    assert_eq!(discovery.version.as_deref().map(|v| v.chars().next().unwrap().is_ascii_digit()), Some(true));
}

#[tokio::test]
async fn a_spawn_with_no_server_starts_one() {
    require("tmux");
    let socket = unique_name("bosun-termbridge-fresh");
    struct Kill(String);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = Command::new("tmux").args(["-L", &self.0, "kill-server"]).status();
        }
    }
    let _kill = Kill(socket.clone());
    let tmux = Tmux::new(TmuxConfig {
        socket: TmuxSocket::Name(socket),
        config_file: Some("/dev/null".into()),
        ..TmuxConfig::default()
    });
    assert!(!tmux.discover().await.running);
    assert_eq!(tmux.describe(&PaneId::new("%0")).await, Err(TermError::PaneGone));
    let pane = tmux.spawn(window(vec!["sleep".into(), "60".into()])).await.unwrap();
    assert!(tmux.exists(&pane.id).await.unwrap());
}

#[tokio::test]
async fn a_missing_tmux_is_not_supported() {
    let tmux = Tmux::new(TmuxConfig { program: "/nonexistent/tmux".into(), ..TmuxConfig::default() });
    assert!(matches!(tmux.spawn(window(vec![])).await, Err(TermError::NotSupported { .. })));
    assert!(!tmux.discover().await.installed);
}

#[tokio::test]
async fn the_bash_hook_reports_the_cwd_through_osc7_in_the_output_stream() {
    let server = Server::start();
    let tmux = server.adapter();
    let hook = common::crate_dir().join("shell-hooks/bosun-cwd.bash");
    let shell = tmux.spawn(window(bash())).await.unwrap();
    let mut output = tmux.subscribe();
    tmux.send_text(&shell.id, &format!("source '{}'", hook.display()), SendMode { paste: false, enter: true })
        .await
        .unwrap();
    tmux.send_text(&shell.id, "cd /tmp", SendMode { paste: false, enter: true }).await.unwrap();
    let mut parser = OscParser::default();
    let deadline = Instant::now() + Duration::from_secs(10);
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim().to_string();
    loop {
        let chunk = tokio::time::timeout_at(deadline.into(), output.recv()).await.expect("an OSC 7 for /tmp").unwrap();
        if chunk.pane != shell.id {
            continue;
        }
        let found = parser.feed(&chunk.bytes).into_iter().any(|event| {
            matches!(&event, TerminalEvent::Cwd { host, path } if path == "/tmp" && host.as_deref() == Some(hostname.as_str()))
        });
        if found {
            break;
        }
    }
    // And a directory that needs percent-encoding.
    let dir = tempfile::tempdir().unwrap();
    let odd = dir.path().join("a b%c é");
    std::fs::create_dir(&odd).unwrap();
    tmux.send_text(&shell.id, &format!("cd '{}'", odd.display()), SendMode { paste: false, enter: true })
        .await
        .unwrap();
    loop {
        let chunk =
            tokio::time::timeout_at(deadline.into(), output.recv()).await.expect("an OSC 7 for the odd dir").unwrap();
        if chunk.pane == shell.id
            && parser
                .feed(&chunk.bytes)
                .iter()
                .any(|e| matches!(e, TerminalEvent::Cwd { path, .. } if *path == odd.to_string_lossy()))
        {
            break;
        }
    }
}

#[tokio::test]
async fn calls_take_well_under_ten_milliseconds() {
    let server = Server::start();
    let tmux = server.adapter();
    let pane = tmux.spawn(window(vec!["cat".into()])).await.unwrap();
    let rounds = 200;
    let started = Instant::now();
    for _ in 0..rounds {
        tmux.describe(&pane.id).await.unwrap();
    }
    let describe = started.elapsed() / rounds;
    let started = Instant::now();
    for _ in 0..rounds {
        tmux.send_text(&pane.id, "x", SendMode::default()).await.unwrap();
    }
    let send = started.elapsed() / rounds;
    let started = Instant::now();
    for _ in 0..rounds {
        tmux.read_text(&pane.id).await.unwrap();
    }
    let read = started.elapsed() / rounds;
    eprintln!("tmux per call: describe {describe:?}, send_text {send:?}, read_text {read:?}");
    for (what, took) in [("describe", describe), ("send_text", send), ("read_text", read)] {
        assert!(took < Duration::from_millis(10), "{what} took {took:?} a call");
    }
}

#[tokio::test]
async fn a_server_named_by_its_socket_path() {
    require("tmux");
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("tmux.sock");
    struct Kill(std::path::PathBuf);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = Command::new("tmux").arg("-S").arg(&self.0).arg("kill-server").status();
        }
    }
    let _kill = Kill(socket.clone());
    let tmux = Tmux::new(TmuxConfig {
        socket: TmuxSocket::Path(socket.clone()),
        config_file: Some("/dev/null".into()),
        ..TmuxConfig::default()
    });
    let pane = tmux.spawn(window(vec!["sleep".into(), "60".into()])).await.unwrap();
    assert!(socket.exists(), "the server listens on the path asked for");
    assert!(
        pane.endpoint.starts_with("tmux://%2F") && pane.endpoint.ends_with(&format!("/{}", pane.id)),
        "{}",
        pane.endpoint
    );
    let listed =
        Command::new("tmux").arg("-S").arg(&socket).args(["list-panes", "-a", "-F", "#{pane_id}"]).output().unwrap();
    assert!(String::from_utf8_lossy(&listed.stdout).lines().any(|l| l == pane.id.as_str()));
}

#[tokio::test]
async fn osc52_we_encode_is_taken_by_tmux_with_set_clipboard_on() {
    let server = Server::start();
    assert!(server.tmux().args(["set", "-s", "set-clipboard", "on"]).status().unwrap().success());
    let tmux = server.adapter();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("osc52");
    let text = "to the clipboard ✓ via tmux";
    std::fs::write(&file, bosun_termbridge::clipboard::osc52_sequences("c", text.as_bytes()).concat()).unwrap();
    tmux.spawn(window(vec!["sh".into(), "-c".into(), format!("cat '{}'; exec sleep 60", file.display())]))
        .await
        .unwrap();
    let buffer = wait_for("tmux to keep the OSC 52 text in a buffer", Duration::from_secs(10), || async {
        let out = server.tmux().arg("show-buffer").output().ok()?;
        let buffer = String::from_utf8_lossy(&out.stdout).into_owned();
        (buffer == text).then_some(buffer)
    })
    .await;
    assert_eq!(buffer, text);
}
