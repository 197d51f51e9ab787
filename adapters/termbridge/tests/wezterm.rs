//! The WezTerm adapter against a recording stand-in for `wezterm` (WezTerm
//! cannot be installed here): the stand-in writes each argv (and stdin) to
//! a log and prints canned answers, so the tests check exactly what the
//! adapter asked for.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use bosun_termbridge::adapters::wezterm::{Wezterm, WeztermConfig, PROGRAM_ENV};
use bosun_termbridge::{Direction, PaneId, Placement, SendMode, SpawnRequest, TermError, TerminalControl};

const STAND_IN: &str = r#"#!/bin/sh
log="$(dirname "$0")/calls.log"
{ printf 'ARGV'; for a in "$@"; do printf ' [%s]' "$a"; done; printf '\n'; } >> "$log"
case "$1 $2" in
  "cli send-text") printf 'STDIN [%s]\n' "$(cat)" >> "$log" ;;
  "cli spawn"|"cli split-pane") echo 7 ;;
  "cli list")
    if [ -e "$(dirname "$0")/gone" ]; then echo '[]'; exit 0; fi
    echo '[{"window_id":0,"tab_id":1,"pane_id":7,"workspace":"default","title":"bash","cwd":"file://box/tmp/a%20b","is_active":true,"tty_name":"/dev/pts/3"}]' ;;
  "cli list-clients") echo '[{"username":"me","hostname":"box","pid":1,"focused_pane_id":7}]' ;;
  "cli get-text") printf 'line one\nline two\n' ;;
  "cli kill-pane"|"cli activate-pane")
    if [ -e "$(dirname "$0")/gone" ]; then echo "pane 7 not found" >&2; exit 1; fi ;;
  "--version ") echo "wezterm 20240203-110809-5046fc22" ;;
esac
"#;

struct StandIn {
    dir: tempfile::TempDir,
}

impl StandIn {
    fn new() -> StandIn {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("wezterm");
        std::fs::write(&script, STAND_IN).unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        StandIn { dir }
    }
    fn program(&self) -> PathBuf {
        self.dir.path().join("wezterm")
    }
    fn adapter(&self) -> Wezterm {
        Wezterm::new(WeztermConfig { program: Some(self.program()), ..WeztermConfig::default() })
    }
    fn calls(&self) -> Vec<String> {
        read_lines(&self.dir.path().join("calls.log"))
    }
    fn clear(&self) {
        let _ = std::fs::remove_file(self.dir.path().join("calls.log"));
    }
}

fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(String::from).collect()
}

#[tokio::test]
async fn spawn_window_tab_and_split_with_cwd_env_and_command() {
    let fake = StandIn::new();
    let wezterm = fake.adapter();
    let base = SpawnRequest {
        command: vec!["bash".into(), "-l".into()],
        cwd: Some("/tmp/a b".into()),
        env: BTreeMap::from([("K".to_string(), "v w".to_string())]),
        placement: Placement::Window,
    };
    let pane = wezterm.spawn(base.clone()).await.unwrap();
    assert_eq!(pane.id, PaneId::new("7"));
    assert_eq!(pane.endpoint, "wezterm://pane/7");
    assert_eq!(pane.title.as_deref(), Some("bash"));
    wezterm.spawn(SpawnRequest { placement: Placement::Tab, env: BTreeMap::new(), ..base.clone() }).await.unwrap();
    wezterm
        .spawn(SpawnRequest {
            placement: Placement::Split { target: PaneId::new("3"), direction: Direction::Right },
            cwd: None,
            env: BTreeMap::new(),
            ..base.clone()
        })
        .await
        .unwrap();
    wezterm
        .spawn(SpawnRequest {
            placement: Placement::Split { target: PaneId::new("3"), direction: Direction::Down },
            command: vec![],
            cwd: None,
            env: BTreeMap::new(),
        })
        .await
        .unwrap();
    let spawns: Vec<String> = fake.calls().into_iter().filter(|l| !l.contains("[list]")).collect();
    assert_eq!(
        spawns,
        vec![
            "ARGV [cli] [spawn] [--new-window] [--cwd] [/tmp/a b] [--] [env] [K=v w] [bash] [-l]",
            "ARGV [cli] [spawn] [--cwd] [/tmp/a b] [--] [bash] [-l]",
            "ARGV [cli] [split-pane] [--pane-id] [3] [--right] [--] [bash] [-l]",
            "ARGV [cli] [split-pane] [--pane-id] [3] [--bottom]",
        ]
    );
    // An environment needs a command to put env(1) in front of.
    let env_only = SpawnRequest { command: vec![], ..base };
    assert!(matches!(wezterm.spawn(env_only).await, Err(TermError::NotSupported { .. })));
}

#[tokio::test]
async fn focus_send_read_close_and_describe() {
    let fake = StandIn::new();
    let wezterm = fake.adapter();
    let pane = PaneId::new("7");
    wezterm.focus(&pane).await.unwrap();
    wezterm.send_text(&pane, "ls -la", SendMode { paste: false, enter: true }).await.unwrap();
    wezterm.send_text(&pane, "two\nlines", SendMode { paste: true, enter: true }).await.unwrap();
    assert_eq!(wezterm.read_text(&pane).await.unwrap(), "line one\nline two\n");
    assert_eq!(wezterm.focused_pane().await.unwrap(), Some(pane.clone()));
    let info = wezterm.describe(&pane).await.unwrap();
    assert_eq!(info.cwd, Some(PathBuf::from("/tmp/a b")));
    assert_eq!(info.focused, Some(true));
    wezterm.close(&pane).await.unwrap();
    assert_eq!(
        fake.calls().join("\n"),
        [
            "ARGV [cli] [activate-pane] [--pane-id] [7]",
            "ARGV [cli] [send-text] [--pane-id] [7] [--no-paste]",
            "STDIN [ls -la\r]",
            // A paste leaves out --no-paste (wezterm brackets it), and Enter
            // follows outside the paste.
            "ARGV [cli] [send-text] [--pane-id] [7]",
            "STDIN [two\nlines]",
            "ARGV [cli] [send-text] [--pane-id] [7] [--no-paste]",
            "STDIN [\r]",
            "ARGV [cli] [get-text] [--pane-id] [7]",
            "ARGV [cli] [list-clients] [--format] [json]",
            "ARGV [cli] [list] [--format] [json]",
            "ARGV [cli] [kill-pane] [--pane-id] [7]",
        ]
        .join("\n")
    );
    fake.clear();
    std::fs::write(fake.dir.path().join("gone"), "").unwrap();
    assert_eq!(wezterm.describe(&pane).await, Err(TermError::PaneGone));
    assert!(!wezterm.exists(&pane).await.unwrap());
    assert_eq!(wezterm.focus(&pane).await, Err(TermError::PaneGone));
    assert!(matches!(wezterm.focus(&PaneId::new("7; rm")).await, Err(TermError::Invalid(_))));
}

#[tokio::test]
async fn the_program_comes_from_the_environment_and_a_missing_one_is_not_supported() {
    // The only test here that touches BOSUN_WEZTERM_CLI, so no other reads it
    // while it changes.
    let fake = StandIn::new();
    std::env::set_var(PROGRAM_ENV, fake.program());
    let from_env = Wezterm::new(WeztermConfig::default());
    std::env::set_var(PROGRAM_ENV, "/nonexistent");
    let missing = Wezterm::new(WeztermConfig::default());
    std::env::remove_var(PROGRAM_ENV);

    from_env.focus(&PaneId::new("7")).await.unwrap();
    assert_eq!(fake.calls(), vec!["ARGV [cli] [activate-pane] [--pane-id] [7]"]);
    let discovery = from_env.discover().await;
    assert!(discovery.installed && discovery.reachable, "{discovery:?}");
    assert_eq!(discovery.version.as_deref(), Some("20240203-110809-5046fc22"));

    for result in [
        missing.focus(&PaneId::new("7")).await.map(drop),
        missing.read_text(&PaneId::new("7")).await.map(drop),
        missing
            .spawn(SpawnRequest { command: vec![], cwd: None, env: BTreeMap::new(), placement: Placement::Tab })
            .await
            .map(drop),
    ] {
        assert!(
            matches!(result, Err(TermError::NotSupported { ref terminal, .. }) if terminal == "wezterm"),
            "{result:?}"
        );
    }
    assert!(!missing.discover().await.installed);
}
