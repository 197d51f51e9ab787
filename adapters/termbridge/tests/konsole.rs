//! The Konsole adapter against a real Konsole on a private X server and
//! session bus. Konsole gives no text back, so what was sent is checked by
//! its effect: commands that write files.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use bosun_termbridge::adapters::konsole::{Konsole, KonsoleConfig};
use bosun_termbridge::{Direction, PaneId, Placement, SendMode, SpawnRequest, TermError, TerminalControl};
use common::{file_text, require, wait_for, Desktop};

struct KonsoleInstance {
    desktop: Desktop,
    service: String,
}

impl KonsoleInstance {
    fn start() -> KonsoleInstance {
        require("konsole");
        require("dbus-send");
        let mut desktop = Desktop::start();
        let mut command = desktop.command("konsole");
        command.args(["--nofork", "--separate"]).env("QT_QPA_PLATFORM", "xcb");
        let pid = desktop.processes.spawn(&mut command);
        let service = format!("org.kde.konsole-{pid}");
        desktop.wait_for_bus_name(&service, Duration::from_secs(30));
        desktop.focus_x_window("konsole");
        KonsoleInstance { desktop, service }
    }

    fn adapter(&self) -> Konsole {
        Konsole::new(KonsoleConfig {
            service: Some(self.service.clone()),
            bus_address: Some(self.desktop.bus.address.clone()),
            ..KonsoleConfig::default()
        })
    }
}

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn tab(command: &[&str]) -> SpawnRequest {
    SpawnRequest {
        command: command.iter().map(|s| s.to_string()).collect(),
        cwd: None,
        env: BTreeMap::new(),
        placement: Placement::Tab,
    }
}

#[tokio::test]
async fn spawn_tabs_and_splits_focus_and_close() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let instance = KonsoleInstance::start();
    let konsole = instance.adapter();
    let out = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let report = |name: &str| {
        let file = out.path().join(name);
        format!("echo \"[$K] $(pwd)\" > '{}'; exec sleep 60", file.display())
    };

    let first = konsole
        .spawn(SpawnRequest {
            cwd: Some(work.path().to_path_buf()),
            env: BTreeMap::from([("K".to_string(), "it's v".to_string())]),
            ..tab(&["sh", "-c", &report("first")])
        })
        .await
        .unwrap();
    assert_eq!(
        file_text(&out.path().join("first"), Duration::from_secs(15)).await,
        format!("[it's v] {}\n", work.path().display())
    );
    let info = konsole.describe(&first.id).await.unwrap();
    assert_eq!(info.pid, first.pid);
    assert!(first.pid.is_some());

    let split = konsole
        .spawn(SpawnRequest {
            cwd: Some(work.path().to_path_buf()),
            placement: Placement::Split { target: first.id.clone(), direction: Direction::Right },
            ..tab(&["sh", "-c", &report("split")])
        })
        .await
        .unwrap();
    assert_ne!(split.id, first.id);
    assert_eq!(
        file_text(&out.path().join("split"), Duration::from_secs(15)).await,
        format!("[] {}\n", work.path().display())
    );
    let below = konsole
        .spawn(SpawnRequest {
            placement: Placement::Split { target: first.id.clone(), direction: Direction::Down },
            ..tab(&["sleep", "60"])
        })
        .await
        .unwrap();

    let other = konsole.spawn(tab(&["sleep", "60"])).await.unwrap();
    for pane in [&first.id, &other.id, &split.id, &below.id, &first.id] {
        konsole.focus(pane).await.unwrap();
        assert_eq!(konsole.focused_pane().await.unwrap().as_ref(), Some(pane));
        assert_eq!(konsole.describe(pane).await.unwrap().focused, Some(true));
    }

    konsole.close(&other.id).await.unwrap();
    wait_for("the closed session to go", Duration::from_secs(10), || async {
        (konsole.describe(&other.id).await == Err(TermError::PaneGone)).then_some(())
    })
    .await;
    common::kill9(below.pid.expect("a pid"));
    wait_for("the killed session to go", Duration::from_secs(10), || async {
        (!konsole.exists(&below.id).await.unwrap()).then_some(())
    })
    .await;
    assert_eq!(konsole.describe(&PaneId::new("999")).await, Err(TermError::PaneGone));

    let discovery = konsole.discover().await;
    assert!(discovery.installed && discovery.running && discovery.reachable, "{discovery:?}");
    assert!(discovery.version.as_deref().is_some_and(|v| v.starts_with("22.")), "{discovery:?}");
}

#[tokio::test]
async fn send_text_runs_with_enter_and_a_paste_waits_for_it() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let instance = KonsoleInstance::start();
    let konsole = instance.adapter();
    let out = tempfile::tempdir().unwrap();
    let shell = konsole.spawn(tab(&["bash", "--norc", "--noprofile", "-i"])).await.unwrap();
    let sent = out.path().join("sent");
    konsole
        .send_text(
            &shell.id,
            &format!("echo sent-$((6*7)) > '{}'", sent.display()),
            SendMode { paste: false, enter: true },
        )
        .await
        .unwrap();
    assert_eq!(file_text(&sent, Duration::from_secs(15)).await, "sent-42\n");

    // bash has bracketed paste on: a pasted line (even with its own
    // newline) waits for Enter.
    let pasted = out.path().join("pasted");
    konsole
        .send_text(
            &shell.id,
            &format!("echo pasted > '{}'\n", pasted.display()),
            SendMode { paste: true, enter: false },
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!pasted.exists(), "the paste ran before Enter");
    konsole.send_text(&shell.id, "", SendMode { paste: false, enter: true }).await.unwrap();
    assert_eq!(file_text(&pasted, Duration::from_secs(15)).await, "pasted\n");

    assert!(matches!(konsole.read_text(&shell.id).await, Err(TermError::NotSupported { .. })));
    assert!(matches!(
        konsole.spawn(SpawnRequest { placement: Placement::Window, ..tab(&[]) }).await,
        Err(TermError::NotSupported { .. })
    ));
}

#[tokio::test]
async fn no_konsole_on_the_bus_is_not_supported() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let bus = common::SessionBus::start();
    let konsole = Konsole::new(KonsoleConfig { bus_address: Some(bus.address.clone()), ..KonsoleConfig::default() });
    assert!(matches!(konsole.focused_pane().await, Err(TermError::NotSupported { .. })));
    let discovery = konsole.discover().await;
    assert!(!discovery.running && !discovery.reachable, "{discovery:?}");
}
