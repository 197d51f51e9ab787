//! The OSC 7 hooks for bash, zsh and fish, each sourced into a real
//! interactive shell in tmux: a `cd` must show up in the `%output` stream as
//! the new directory, percent-encoded and with the hostname.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use bosun_termbridge::adapters::tmux::{Tmux, TmuxConfig, TmuxSocket};
use bosun_termbridge::osc::{OscParser, TerminalEvent};
use bosun_termbridge::{Placement, SendMode, SpawnRequest, TerminalControl};

struct Server(String);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("tmux").args(["-L", &self.0, "kill-server"]).status();
    }
}

async fn hook_reports_cd(shell: &[&str], hook: &str) {
    common::require("tmux");
    common::require(shell[0]);
    let server = Server(common::unique_name("bosun-termbridge-hooks"));
    assert!(Command::new("tmux")
        .args(["-L", &server.0, "-f", "/dev/null", "new-session", "-d", "-x", "200", "-y", "50", "sleep", "120"])
        .status()
        .unwrap()
        .success());
    let tmux = Tmux::new(TmuxConfig { socket: TmuxSocket::Name(server.0.clone()), ..TmuxConfig::default() });
    let home = tempfile::tempdir().unwrap();
    let pane = tmux
        .spawn(SpawnRequest {
            command: shell.iter().map(|s| s.to_string()).collect(),
            cwd: None,
            env: BTreeMap::from([
                ("HOME".to_string(), home.path().to_string_lossy().into_owned()),
                ("XDG_CONFIG_HOME".to_string(), home.path().to_string_lossy().into_owned()),
            ]),
            placement: Placement::Window,
        })
        .await
        .unwrap();
    let mut output = tmux.subscribe();
    let hook = common::crate_dir().join("shell-hooks").join(hook);
    let dir = tempfile::tempdir().unwrap();
    let odd = dir.path().join("a b%c é");
    std::fs::create_dir(&odd).unwrap();
    let enter = SendMode { paste: false, enter: true };
    tmux.send_text(&pane.id, &format!("source '{}'", hook.display()), enter).await.unwrap();
    tmux.send_text(&pane.id, &format!("cd '{}'", odd.display()), enter).await.unwrap();
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim().to_string();
    let mut parser = OscParser::default();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let chunk = tokio::time::timeout_at(deadline.into(), output.recv())
            .await
            .unwrap_or_else(|_| panic!("{shell:?}: no OSC 7 for {}", odd.display()))
            .unwrap();
        if chunk.pane != pane.id {
            continue;
        }
        let seen = parser.feed(&chunk.bytes).into_iter().any(|event| {
            matches!(&event, TerminalEvent::Cwd { host, path }
                if *path == odd.to_string_lossy() && host.as_deref() == Some(hostname.as_str()))
        });
        if seen {
            return;
        }
    }
}

#[tokio::test]
async fn bash_hook() {
    hook_reports_cd(&["bash", "--norc", "--noprofile", "-i"], "bosun-cwd.bash").await;
}

#[tokio::test]
async fn zsh_hook() {
    hook_reports_cd(&["zsh", "-f", "-i"], "bosun-cwd.zsh").await;
}

#[tokio::test]
async fn fish_hook() {
    hook_reports_cd(&["fish", "--no-config", "-i"], "bosun-cwd.fish").await;
}
