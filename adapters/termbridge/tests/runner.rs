//! The command runner's timeouts and retries, with stand-in CLIs that hang.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use bosun_termbridge::adapters::wezterm::{Wezterm, WeztermConfig};
use bosun_termbridge::runner::{CommandRunner, Invocation, IpcConfig};
use bosun_termbridge::{PaneId, TermError, TerminalControl};

/// A CLI that notes each start (and its pid) and then hangs.
fn hanging_cli(dir: &std::path::Path) -> std::path::PathBuf {
    let script = dir.join("hangs");
    std::fs::write(&script, format!("#!/bin/sh\necho $$ >> '{}/starts'\nexec sleep 30\n", dir.display())).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

fn starts(dir: &std::path::Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("starts")).unwrap_or_default().lines().filter_map(|l| l.parse().ok()).collect()
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.rsplit(')').next().and_then(|r| r.split_whitespace().next()) != Some("Z"))
        .unwrap_or(false)
}

#[tokio::test]
async fn a_hanging_command_times_out_after_every_retry_and_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let cli = hanging_cli(dir.path());
    let runner = CommandRunner::new("stand-in", IpcConfig { timeout: Duration::from_millis(300), retries: 2 });
    let started = Instant::now();
    let error = runner.run(&Invocation::new(&cli).arg("x")).await.unwrap_err();
    let took = started.elapsed();
    assert!(matches!(error, TermError::Timeout { attempts: 3, .. }), "{error:?}");
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(3), "{took:?}");
    let pids = starts(dir.path());
    assert_eq!(pids.len(), 3, "one start and two retries: {pids:?}");
    // exec'd into sleep: the process the runner started is the one to die.
    tokio::time::sleep(Duration::from_millis(100)).await;
    for pid in pids {
        assert!(!alive(pid), "{pid} outlived its timeout");
    }
}

#[tokio::test]
async fn a_command_that_must_not_repeat_is_tried_once() {
    let dir = tempfile::tempdir().unwrap();
    let cli = hanging_cli(dir.path());
    let runner = CommandRunner::new("stand-in", IpcConfig { timeout: Duration::from_millis(200), retries: 2 });
    let error = runner.run(&Invocation::new(&cli).not_idempotent()).await.unwrap_err();
    assert!(matches!(error, TermError::Timeout { attempts: 1, .. }), "{error:?}");
    assert_eq!(starts(dir.path()).len(), 1);
}

#[tokio::test]
async fn a_grandchild_of_a_timed_out_command_is_killed_too() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("grandchild");
    let script = format!("sleep 30 & echo $! > '{}'; wait", pidfile.display());
    let runner = CommandRunner::new("stand-in", IpcConfig { timeout: Duration::from_millis(300), retries: 0 });
    let error = runner.run(&Invocation::new("sh").args(["-c", &script])).await.unwrap_err();
    assert!(matches!(error, TermError::Timeout { attempts: 1, .. }), "{error:?}");
    let pid: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!alive(pid), "the background sleep {pid} survived");
}

#[tokio::test]
async fn an_adapter_reports_the_timeout_of_its_cli() {
    let dir = tempfile::tempdir().unwrap();
    let cli = hanging_cli(dir.path());
    let wezterm = Wezterm::new(WeztermConfig {
        program: Some(cli),
        ipc: IpcConfig { timeout: Duration::from_millis(200), retries: 1 },
    });
    // get-text may be asked twice; activating a pane the same.
    let error = wezterm.read_text(&PaneId::new("1")).await.unwrap_err();
    assert!(matches!(error, TermError::Timeout { attempts: 2, .. }), "{error:?}");
    assert_eq!(starts(dir.path()).len(), 2);
}
