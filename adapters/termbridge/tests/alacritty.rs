//! The Alacritty adapter against a real Alacritty (private Xvfb, its own IPC
//! socket): it can open windows and nothing else.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use bosun_termbridge::adapters::alacritty::{Alacritty, AlacrittyConfig};
use bosun_termbridge::{PaneId, Placement, SendMode, SpawnRequest, TermError, TerminalControl};
use common::{file_text, require, Processes, Xvfb};

#[tokio::test]
async fn create_window_runs_the_command_in_its_cwd_with_its_env_and_nothing_else_is_supported() {
    require("alacritty");
    let xvfb = Xvfb::start();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("alacritty.sock");
    let mut processes = Processes::default();
    processes.spawn(
        Command::new("alacritty")
            .arg("--socket")
            .arg(&socket)
            .args(["-e", "sleep", "600"])
            .env("DISPLAY", &xvfb.display)
            .env("LIBGL_ALWAYS_SOFTWARE", "1")
            .env("HOME", dir.path())
            .env_remove("ALACRITTY_SOCKET"),
    );
    common::wait_for_path(&socket, Duration::from_secs(20));
    let alacritty = Alacritty::new(AlacrittyConfig { socket: Some(socket.clone()), ..AlacrittyConfig::default() });
    let work = tempfile::tempdir().unwrap();
    let file = dir.path().join("ran");
    let pane = alacritty
        .spawn(SpawnRequest {
            command: vec![
                "sh".into(),
                "-c".into(),
                format!("echo \"[$K] $(pwd)\" > '{}'; exec sleep 60", file.display()),
            ],
            cwd: Some(work.path().to_path_buf()),
            env: BTreeMap::from([("K".to_string(), "v w".to_string())]),
            placement: Placement::Window,
        })
        .await
        .unwrap();
    assert_eq!(file_text(&file, Duration::from_secs(15)).await, format!("[v w] {}\n", work.path().display()));
    assert!(pane.endpoint.starts_with("alacritty://"));

    let discovery = alacritty.discover().await;
    assert!(discovery.installed && discovery.running && discovery.reachable, "{discovery:?}");
    assert_eq!(discovery.version.as_deref(), Some("0.11.0"));

    let id = PaneId::new("window-0");
    let tab = SpawnRequest { command: vec![], cwd: None, env: BTreeMap::new(), placement: Placement::Tab };
    let not_supported: Vec<_> = vec![
        alacritty.spawn(tab).await.map(drop),
        alacritty.focus(&id).await,
        alacritty.send_text(&id, "x", SendMode::default()).await,
        alacritty.read_text(&id).await.map(drop),
        alacritty.close(&id).await,
        alacritty.describe(&id).await.map(drop),
        alacritty.focused_pane().await.map(drop),
    ];
    for result in not_supported {
        assert!(
            matches!(result, Err(TermError::NotSupported { ref terminal, .. }) if terminal == "alacritty"),
            "{result:?}"
        );
    }
}

#[tokio::test]
async fn no_socket_is_not_supported() {
    let alacritty = Alacritty::new(AlacrittyConfig { socket: None, ..AlacrittyConfig::default() });
    std::env::remove_var("ALACRITTY_SOCKET");
    let request = SpawnRequest { command: vec![], cwd: None, env: BTreeMap::new(), placement: Placement::Window };
    assert!(matches!(alacritty.spawn(request).await, Err(TermError::NotSupported { .. })));
}
