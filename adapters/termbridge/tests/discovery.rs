//! Every adapter built from one config and discovered at once.

mod common;

use std::process::Command;

use bosun_termbridge::adapters::tmux::TmuxSocket;
use bosun_termbridge::{build_all, discover_all, TermBridgeConfig, TerminalKind};

#[tokio::test]
async fn discovers_each_terminal_and_finds_the_running_tmux() {
    common::require("tmux");
    let socket = common::unique_name("bosun-termbridge-discovery");
    struct Kill(String);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = Command::new("tmux").args(["-L", &self.0, "kill-server"]).status();
        }
    }
    let _kill = Kill(socket.clone());
    assert!(Command::new("tmux")
        .args(["-L", &socket, "-f", "/dev/null", "new-session", "-d", "sleep", "60"])
        .status()
        .unwrap()
        .success());
    let dir = tempfile::tempdir().unwrap();
    let mut config: TermBridgeConfig = serde_json::from_str(r#"{"ipc": {"timeout": 2000, "retries": 1}}"#).unwrap();
    config.tmux.socket = TmuxSocket::Name(socket);
    config.kitty.listen_on = Some(format!("unix:{}", dir.path().join("no-kitty").display()));
    config.wezterm.program = Some("/nonexistent/wezterm".into());
    config.alacritty.socket = Some(dir.path().join("no-alacritty"));
    let bus = common::SessionBus::start();
    config.konsole.bus_address = Some(bus.address.clone());
    config.tilix.bus_address = Some(bus.address.clone());

    let bridge = build_all(&config);
    let found = discover_all(&bridge).await;
    assert_eq!(found.iter().map(|(k, _)| *k).collect::<Vec<_>>(), TerminalKind::ALL.to_vec());
    let of = |kind| found.iter().find(|(k, _)| *k == kind).map(|(_, d)| d.clone()).unwrap();
    let tmux = of(TerminalKind::Tmux);
    assert!(tmux.installed && tmux.running && tmux.reachable, "{tmux:?}");
    assert_eq!(tmux.version.as_deref(), Some("3.3a"));
    let kitty = of(TerminalKind::Kitty);
    assert!(kitty.installed && !kitty.reachable, "{kitty:?}");
    assert_eq!(kitty.version.as_deref(), Some("0.26.5"));
    assert!(!of(TerminalKind::Wezterm).installed);
    let alacritty = of(TerminalKind::Alacritty);
    assert!(alacritty.installed && !alacritty.running, "{alacritty:?}");
    for kind in [TerminalKind::Konsole, TerminalKind::Tilix] {
        let d = of(kind);
        assert!(d.installed && !d.running && !d.reachable, "{kind}: {d:?}");
    }
    // The whole report serializes, for the daemon to store and serve.
    let json = serde_json::to_value(&found).unwrap();
    assert_eq!(json[0][0], "tmux");
    let caps: Vec<_> = bridge.all().iter().map(|a| serde_json::to_value(a.capabilities()).unwrap()).collect();
    assert_eq!(caps[0]["send_text"], true);
    assert_eq!(caps[3]["send_text"], false, "alacritty");
}
