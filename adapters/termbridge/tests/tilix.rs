//! The Tilix adapter against a real Tilix on a private X server and session
//! bus. Tilix can neither say which terminal has the focus nor take text,
//! so focus is checked by typing (xdotool) into whatever has it.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use bosun_termbridge::adapters::tilix::{Tilix, TilixConfig};
use bosun_termbridge::{Direction, PaneId, Placement, SendMode, SpawnRequest, TermError, TerminalControl};
use common::{file_text, require, wait_for, Desktop};

struct TilixInstance {
    desktop: Desktop,
}

impl TilixInstance {
    fn start() -> TilixInstance {
        require("tilix");
        require("dbus-send");
        let mut desktop = Desktop::start();
        let mut command = desktop.command("tilix");
        command.args(["-e", "sleep 600"]);
        desktop.processes.spawn(&mut command);
        desktop.wait_for_bus_name("com.gexperts.Tilix", Duration::from_secs(30));
        desktop.focus_x_window("tilix");
        TilixInstance { desktop }
    }

    fn adapter(&self) -> Tilix {
        Tilix::new(TilixConfig {
            bus_address: Some(self.desktop.bus.address.clone()),
            display: Some(self.desktop.xvfb.display.clone()),
            ..TilixConfig::default()
        })
    }

    /// Types a line into whichever terminal has the keyboard focus.
    fn type_line(&self, line: &str) {
        let status =
            self.desktop.command("xdotool").args(["type", "--delay", "5", &format!("{line}\n")]).status().unwrap();
        assert!(status.success());
    }
}

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn request(command: &[&str], placement: Placement) -> SpawnRequest {
    SpawnRequest {
        command: command.iter().map(|s| s.to_string()).collect(),
        cwd: None,
        env: BTreeMap::new(),
        placement,
    }
}

const BASH: &[&str] = &["bash", "--norc", "--noprofile", "-i"];

#[tokio::test]
async fn spawn_windows_tabs_and_splits_with_cwd_and_env() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let instance = TilixInstance::start();
    let tilix = instance.adapter();
    let out = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let report =
        |name: &str| format!("echo \"[$K] $(pwd) $TILIX_ID\" > '{}'; exec sleep 60", out.path().join(name).display());
    let mut panes = Vec::new();
    for (name, placement) in [("window", Placement::Window), ("tab", Placement::Tab)] {
        let pane = tilix
            .spawn(SpawnRequest {
                cwd: Some(work.path().to_path_buf()),
                env: BTreeMap::from([("K".to_string(), "v 'w'".to_string())]),
                ..request(&["sh", "-c", &report(name)], placement)
            })
            .await
            .unwrap();
        let text = file_text(&out.path().join(name), Duration::from_secs(15)).await;
        assert_eq!(text, format!("[v 'w'] {} {}\n", work.path().display(), pane.id));
        panes.push(pane);
    }
    for (name, direction) in [("right", Direction::Right), ("down", Direction::Down)] {
        let pane = tilix
            .spawn(request(&["sh", "-c", &report(name)], Placement::Split { target: panes[1].id.clone(), direction }))
            .await
            .unwrap();
        let text = file_text(&out.path().join(name), Duration::from_secs(15)).await;
        assert!(text.ends_with(&format!(" {}\n", pane.id)), "{text}");
        panes.push(pane);
    }
    for (n, pane) in panes.iter().enumerate() {
        let info = tilix.describe(&pane.id).await.unwrap();
        assert_eq!(info.pid, pane.pid, "{pane:?}");
        if n < 2 {
            assert_eq!(info.cwd.as_deref(), Some(work.path()), "{pane:?}");
        }
    }
    let discovery = tilix.discover().await;
    assert!(discovery.installed && discovery.running && discovery.reachable, "{discovery:?}");
    assert_eq!(discovery.version.as_deref(), Some("1.9.5"));
}

#[tokio::test]
async fn focus_moves_the_keyboard_to_the_terminal() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let instance = TilixInstance::start();
    let tilix = instance.adapter();
    let out = tempfile::tempdir().unwrap();
    let a = tilix.spawn(request(BASH, Placement::Tab)).await.unwrap();
    let b = tilix
        .spawn(request(BASH, Placement::Split { target: a.id.clone(), direction: Direction::Right }))
        .await
        .unwrap();
    let c = tilix.spawn(request(BASH, Placement::Tab)).await.unwrap();
    for (round, pane) in [&a, &c, &b, &a].into_iter().enumerate() {
        tilix.focus(&pane.id).await.unwrap();
        let file = out.path().join(format!("focused-{round}"));
        // Give bash a moment to be at its prompt in a fresh terminal.
        tokio::time::sleep(Duration::from_millis(300)).await;
        instance.type_line(&format!("echo $TILIX_ID > '{}'", file.display()));
        assert_eq!(file_text(&file, Duration::from_secs(15)).await, format!("{}\n", pane.id), "round {round}");
    }
    assert!(matches!(tilix.focused_pane().await, Err(TermError::NotSupported { .. })));
    assert!(matches!(tilix.send_text(&a.id, "x", SendMode::default()).await, Err(TermError::NotSupported { .. })));
    assert!(matches!(tilix.read_text(&a.id).await, Err(TermError::NotSupported { .. })));
}

#[tokio::test]
async fn closed_and_killed_terminals_are_gone() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let instance = TilixInstance::start();
    let tilix = instance.adapter();
    let a = tilix.spawn(request(&["sleep", "60"], Placement::Tab)).await.unwrap();
    let b = tilix.spawn(request(&["sleep", "60"], Placement::Tab)).await.unwrap();
    assert!(tilix.exists(&a.id).await.unwrap());
    tilix.close(&a.id).await.unwrap();
    wait_for("the closed terminal to go", Duration::from_secs(10), || async {
        (tilix.describe(&a.id).await == Err(TermError::PaneGone)).then_some(())
    })
    .await;
    common::kill9(b.pid.expect("a pid"));
    wait_for("the killed terminal to go", Duration::from_secs(10), || async {
        (!tilix.exists(&b.id).await.unwrap()).then_some(())
    })
    .await;
    assert_eq!(tilix.focus(&b.id).await, Err(TermError::PaneGone));
    assert!(matches!(tilix.describe(&PaneId::new("not-a-uuid")).await, Err(TermError::Invalid(_))));
}
