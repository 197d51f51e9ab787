//! The kitty adapter against a real kitty (under a private Xvfb) on its own
//! remote-control socket.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use bosun_termbridge::adapters::kitty::{Kitty, KittyConfig};
use bosun_termbridge::clipboard::{osc52_sequences, OSC52_MAX_RAW};
use bosun_termbridge::{Direction, PaneId, Placement, SendMode, SpawnRequest, TermError, TerminalControl};
use common::{require, wait_for, Processes, Xvfb};
use serde_json::Value;

struct KittyInstance {
    socket: PathBuf,
    // Dropped in order: kitty before its X server.
    _processes: Processes,
    xvfb: Xvfb,
    _dir: tempfile::TempDir,
}

/// One kitty at a time: each needs a software-rendered X server, and seven
/// at once on two cores starve each other's sockets.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

impl KittyInstance {
    fn start() -> KittyInstance {
        require("kitty");
        let xvfb = Xvfb::start();
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("kitty.sock");
        let mut processes = Processes::default();
        processes.spawn(
            Command::new("kitty")
                .args(["-o", "allow_remote_control=yes", "--config", "NONE", "-o", "enabled_layouts=splits,stack"])
                .arg("--listen-on")
                .arg(format!("unix:{}", socket.display()))
                .args(["sleep", "600"])
                .env("DISPLAY", &xvfb.display)
                .env("LIBGL_ALWAYS_SOFTWARE", "1")
                .env_remove("KITTY_LISTEN_ON")
                .current_dir(dir.path()),
        );
        common::wait_for_path(&socket, Duration::from_secs(20));
        KittyInstance { socket, _processes: processes, xvfb, _dir: dir }
    }

    fn adapter(&self) -> Kitty {
        Kitty::new(KittyConfig { listen_on: Some(format!("unix:{}", self.socket.display())), ..KittyConfig::default() })
    }

    /// `ls` through a client of the test's own, to check the adapter by.
    fn ls(&self) -> Value {
        let mut stream = std::os::unix::net::UnixStream::connect(&self.socket).unwrap();
        stream.write_all(b"\x1bP@kitty-cmd{\"cmd\":\"ls\",\"version\":[0,26,5]}\x1b\\").unwrap();
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).unwrap();
        let body: Value = serde_json::from_slice(&reply[12..reply.len() - 2]).unwrap();
        serde_json::from_str(body["data"].as_str().unwrap()).unwrap()
    }

    /// (os window, tab) of a kitty window.
    fn place_of(&self, pane: &PaneId) -> Option<(u64, u64)> {
        let id: u64 = pane.as_str().parse().unwrap();
        for os in self.ls().as_array().unwrap() {
            for tab in os["tabs"].as_array().unwrap() {
                if tab["windows"].as_array().unwrap().iter().any(|w| w["id"].as_u64() == Some(id)) {
                    return Some((os["id"].as_u64().unwrap(), tab["id"].as_u64().unwrap()));
                }
            }
        }
        None
    }
}

fn request(command: &[&str], placement: Placement) -> SpawnRequest {
    SpawnRequest {
        command: command.iter().map(|s| s.to_string()).collect(),
        cwd: None,
        env: BTreeMap::new(),
        placement,
    }
}

async fn screen_contains(kitty: &Kitty, pane: &PaneId, needle: &str) -> String {
    wait_for(&format!("{needle:?} on kitty window {pane}"), Duration::from_secs(10), || async {
        let text = kitty.read_text(pane).await.ok()?;
        text.contains(needle).then_some(text)
    })
    .await
}

#[tokio::test]
async fn spawn_tabs_windows_and_splits_with_cwd_and_env() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let instance = KittyInstance::start();
    let kitty = instance.adapter();
    let dir = tempfile::tempdir().unwrap();
    let tab = kitty
        .spawn(SpawnRequest {
            cwd: Some(dir.path().to_path_buf()),
            env: BTreeMap::from([("GREETING".into(), "hi there".into())]),
            ..request(&["sh", "-c", "echo \"[$GREETING] $(pwd)\"; exec sleep 60"], Placement::Tab)
        })
        .await
        .unwrap();
    assert_eq!(tab.endpoint, format!("kitty://window/{}", tab.id));
    screen_contains(&kitty, &tab.id, &format!("[hi there] {}", dir.path().display())).await;
    let info = kitty.describe(&tab.id).await.unwrap();
    assert_eq!(info.pid, tab.pid);
    assert!(tab.pid.is_some());

    let split = kitty
        .spawn(request(&["sleep", "60"], Placement::Split { target: tab.id.clone(), direction: Direction::Right }))
        .await
        .unwrap();
    let down = kitty
        .spawn(request(&["sleep", "60"], Placement::Split { target: tab.id.clone(), direction: Direction::Down }))
        .await
        .unwrap();
    let tab_place = instance.place_of(&tab.id).unwrap();
    assert_eq!(instance.place_of(&split.id), Some(tab_place), "a split is in its target's tab");
    assert_eq!(instance.place_of(&down.id), Some(tab_place));

    let window = kitty.spawn(request(&["sleep", "60"], Placement::Window)).await.unwrap();
    let window_place = instance.place_of(&window.id).unwrap();
    assert_ne!(window_place.0, tab_place.0, "an OS window of its own");
    let discovery = kitty.discover().await;
    assert!(discovery.installed && discovery.running && discovery.reachable, "{discovery:?}");
    assert_eq!(discovery.version.as_deref(), Some("0.26.5"));
}

#[tokio::test]
async fn focus_moves_and_the_focused_window_is_reported() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let instance = KittyInstance::start();
    let kitty = instance.adapter();
    let a = kitty.spawn(request(&["sleep", "60"], Placement::Tab)).await.unwrap();
    let b = kitty
        .spawn(request(&["sleep", "60"], Placement::Split { target: a.id.clone(), direction: Direction::Right }))
        .await
        .unwrap();
    let c = kitty.spawn(request(&["sleep", "60"], Placement::Tab)).await.unwrap();
    for pane in [&a.id, &c.id, &b.id, &a.id] {
        kitty.focus(pane).await.unwrap();
        assert_eq!(kitty.focused_pane().await.unwrap().as_ref(), Some(pane));
        assert_eq!(kitty.describe(pane).await.unwrap().focused, Some(true));
    }
    assert_eq!(kitty.describe(&b.id).await.unwrap().focused, Some(false));
}

#[tokio::test]
async fn send_text_then_read_it_back_plain_and_as_a_paste() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let instance = KittyInstance::start();
    let kitty = instance.adapter();
    let cat = kitty.spawn(request(&["cat"], Placement::Tab)).await.unwrap();
    kitty.send_text(&cat.id, "héllo \"kitty\" $x", SendMode { paste: false, enter: true }).await.unwrap();
    let text = wait_for("the line twice", Duration::from_secs(10), || async {
        let text = kitty.read_text(&cat.id).await.ok()?;
        (text.matches("héllo \"kitty\" $x").count() >= 2).then_some(text)
    })
    .await;
    assert_eq!(text.matches("héllo \"kitty\" $x").count(), 2, "{text:?}");

    // cat does not enable bracketed paste, so the tty echoes our markers
    // as ^[[200~ … ^[[201~: proof they were sent around the text.
    kitty.send_text(&cat.id, "pasted", SendMode { paste: true, enter: false }).await.unwrap();
    screen_contains(&kitty, &cat.id, "^[[200~pasted^[[201~").await;

    let shell = kitty.spawn(request(&["bash", "--norc", "--noprofile", "-i"], Placement::Tab)).await.unwrap();
    kitty.send_text(&shell.id, "echo sum-$((40+2))", SendMode { paste: false, enter: true }).await.unwrap();
    screen_contains(&kitty, &shell.id, "\nsum-42").await;
}

#[tokio::test]
async fn closed_and_killed_windows_are_gone() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let instance = KittyInstance::start();
    let kitty = instance.adapter();
    let a = kitty.spawn(request(&["sleep", "60"], Placement::Tab)).await.unwrap();
    let b = kitty.spawn(request(&["sleep", "60"], Placement::Tab)).await.unwrap();
    kitty.close(&a.id).await.unwrap();
    let after = kitty.describe(&a.id).await;
    assert_eq!(after, Err(TermError::PaneGone), "{:?}", instance.ls());
    assert_eq!(kitty.focus(&a.id).await, Err(TermError::PaneGone));
    assert_eq!(kitty.send_text(&a.id, "x", SendMode::default()).await, Err(TermError::PaneGone));

    common::kill9(b.pid.expect("a pid"));
    wait_for("the killed window to close", Duration::from_secs(10), || async {
        (kitty.describe(&b.id).await == Err(TermError::PaneGone)).then_some(())
    })
    .await;
    assert!(matches!(kitty.describe(&PaneId::new("not-a-number")).await, Err(TermError::Invalid(_))));
}

#[tokio::test]
async fn no_socket_is_not_supported_and_a_dead_socket_is_an_ipc_error() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let kitty = Kitty::new(KittyConfig { listen_on: Some("tcp:localhost:1".into()), ..KittyConfig::default() });
    assert!(matches!(kitty.focused_pane().await, Err(TermError::NotSupported { .. })));
    let dir = tempfile::tempdir().unwrap();
    let kitty = Kitty::new(KittyConfig {
        listen_on: Some(format!("unix:{}", dir.path().join("none.sock").display())),
        ..KittyConfig::default()
    });
    assert!(matches!(kitty.focused_pane().await, Err(TermError::Ipc(_))));
    assert!(!kitty.discover().await.reachable);
}

#[tokio::test]
async fn osc52_from_a_window_reaches_the_x_clipboard() {
    let _turn = ONE_AT_A_TIME.lock().await;
    require("xclip");
    let instance = KittyInstance::start();
    let kitty = instance.adapter();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("osc52");
    let text = "clip from OSC 52 ✓";
    std::fs::write(&file, osc52_sequences("c", text.as_bytes()).concat()).unwrap();
    let printer = format!("cat '{}'; exec sleep 60", file.display());
    kitty.spawn(request(&["sh", "-c", &printer], Placement::Tab)).await.unwrap();
    let display = instance.xvfb.display.clone();
    let got = wait_for("the clipboard to hold the text", Duration::from_secs(10), || {
        let display = display.clone();
        async move {
            let out =
                Command::new("xclip").args(["-o", "-selection", "clipboard"]).env("DISPLAY", display).output().ok()?;
            let got = String::from_utf8_lossy(&out.stdout).into_owned();
            (got == text).then_some(got)
        }
    })
    .await;
    assert_eq!(got, text);

    // A batched write: kitty 0.26 replaces the clipboard with each sequence
    // rather than appending, so only the last chunk stays. (If a kitty
    // starts appending, this fails, and the capability can say so.)
    let big: Vec<u8> = (0..OSC52_MAX_RAW + 1000).map(|i| b'a' + (i % 26) as u8).collect();
    let sequences = osc52_sequences("c", &big);
    assert_eq!(sequences.len(), 2);
    let file = dir.path().join("osc52-big");
    std::fs::write(&file, sequences.concat()).unwrap();
    let printer = format!("cat '{}'; exec sleep 60", file.display());
    kitty.spawn(request(&["sh", "-c", &printer], Placement::Tab)).await.unwrap();
    let last_chunk = &big[OSC52_MAX_RAW..];
    wait_for("the clipboard to hold the last chunk", Duration::from_secs(10), || {
        let display = display.clone();
        async move {
            let out =
                Command::new("xclip").args(["-o", "-selection", "clipboard"]).env("DISPLAY", display).output().ok()?;
            (out.stdout == last_chunk).then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn calls_take_a_few_milliseconds() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let instance = KittyInstance::start();
    let kitty = instance.adapter();
    let cat = kitty.spawn(request(&["cat"], Placement::Tab)).await.unwrap();
    let rounds = 50;
    let mut results = Vec::new();
    let started = Instant::now();
    for _ in 0..rounds {
        kitty.describe(&cat.id).await.unwrap();
    }
    results.push(("describe (ls)", started.elapsed() / rounds));
    let started = Instant::now();
    for _ in 0..rounds {
        kitty.read_text(&cat.id).await.unwrap();
    }
    results.push(("read_text (get-text)", started.elapsed() / rounds));
    let started = Instant::now();
    for _ in 0..rounds {
        kitty.send_text(&cat.id, "x", SendMode::default()).await.unwrap();
    }
    results.push(("send_text (ls + send-text)", started.elapsed() / rounds));
    eprintln!("kitty per call: {results:?}");
    for (what, took) in results {
        assert!(took < Duration::from_millis(50), "{what} took {took:?} a call");
    }
}

#[tokio::test]
async fn the_socket_comes_from_kitty_listen_on_when_not_configured() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let instance = KittyInstance::start();
    // Only this test sets it; the others name their socket in the config.
    std::env::set_var("KITTY_LISTEN_ON", format!("unix:{}", instance.socket.display()));
    let kitty = Kitty::new(KittyConfig::default());
    let focused = kitty.focused_pane().await;
    std::env::remove_var("KITTY_LISTEN_ON");
    assert!(focused.unwrap().is_some());
    assert!(matches!(Kitty::new(KittyConfig::default()).focused_pane().await, Err(TermError::NotSupported { .. })));
}
