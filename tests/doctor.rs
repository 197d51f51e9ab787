//! `GET /api/v1/doctor` and `bosun doctor`, against the real binary: a
//! healthy daemon passes every check; a broken setup (a provider whose
//! program is gone, an engine socket that is not there, a proxy in front
//! with loopback trusted, a service file naming a missing binary, a data
//! dir others can write) fails or warns on exactly those, each with a fix,
//! and the CLI exits 1.

mod common;

use bosun_proto::{CheckStatus, DoctorReport};
use common::*;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

fn doctor(d: &Daemon, json: bool) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("doctor").env("BOSUN_URL", &d.url).env("NO_COLOR", "1");
    if json {
        cmd.arg("--json");
    }
    cmd.output().expect("run bosun doctor")
}

fn status_of(report: &DoctorReport, name: &str) -> CheckStatus {
    report.checks.iter().find(|c| c.name == name).unwrap_or_else(|| panic!("no {name} check in {report:#?}")).status
}

#[tokio::test]
async fn a_healthy_daemon_passes_every_check() {
    let dir = tempdir();
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let options = Options { env: vec![("HOME".into(), home.display().to_string())], ..Default::default() };
    let d = Daemon::start(&dir.path().join("data"), options);
    let (status, body) = d.get("/api/v1/doctor").await;
    assert_eq!(status, 200, "{body}");
    let report: DoctorReport = serde_json::from_value(body).expect("a doctor report");
    for name in
        ["data_dir", "provider:demo", "provider:shell", "bwrap", "docker", "tmux", "terminals", "service", "exposure"]
    {
        assert_eq!(status_of(&report, name), CheckStatus::Ok, "{name}: {report:#?}");
    }
    // The daemon made its data dir private.
    let mode = std::fs::metadata(dir.path().join("data")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    assert!(report.checks.iter().all(|c| c.status != CheckStatus::Fail), "{report:#?}");

    let out = doctor(&d, false);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        text.lines().any(|l| l.starts_with("ok") && l.contains("exposure") && l.contains("this machine only")),
        "{text}"
    );
}

#[tokio::test]
async fn a_broken_setup_fails_on_exactly_what_is_broken_with_a_fix_for_each() {
    let dir = tempdir();
    let home = dir.path().join("home");
    let unit = home.join(".config/systemd/user/bosun.service");
    std::fs::create_dir_all(unit.parent().unwrap()).unwrap();
    std::fs::write(&unit, "[Service]\nExecStart=\"/nonexistent/old/bosun\" \"serve\"\n").unwrap();
    let config = "[providers.ghost]\nkind = \"acp\"\ncommand = \"ghost-agent-not-installed\"\n\
                  [docker]\nsocket = \"unix:///nonexistent/engine.sock\"\nimage = \"x\"\n\
                  [auth]\ntrusted_proxies = [\"127.0.0.1\"]\n"
        .to_string();
    let options =
        Options { config: Some(config), env: vec![("HOME".into(), home.display().to_string())], ..Default::default() };
    let data = dir.path().join("data");
    let d = Daemon::start(&data, options);
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o777)).unwrap();

    let out = doctor(&d, true);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let report: DoctorReport = serde_json::from_slice(&out.stdout).expect("a report as JSON");
    assert_eq!(status_of(&report, "provider:ghost"), CheckStatus::Fail);
    assert_eq!(status_of(&report, "docker"), CheckStatus::Fail);
    assert_eq!(status_of(&report, "exposure"), CheckStatus::Fail, "a proxy with loopback trusted");
    assert_eq!(status_of(&report, "service"), CheckStatus::Fail, "the unit names a binary that is gone");
    assert_eq!(status_of(&report, "data_dir"), CheckStatus::Warn, "others can write it");
    assert_eq!(status_of(&report, "provider:demo"), CheckStatus::Ok, "and nothing else");
    for c in report.checks.iter().filter(|c| c.status != CheckStatus::Ok) {
        assert!(c.hint.as_deref().is_some_and(|h| !h.is_empty()), "a fix for {c:?}");
    }
    let ghost = report.checks.iter().find(|c| c.name == "provider:ghost").unwrap();
    assert!(ghost.detail.contains("ghost-agent-not-installed is not on the daemon's PATH"), "{ghost:?}");

    // Without a daemon, doctor says so, and fails.
    let url = d.url.clone();
    drop(d);
    let out = Command::new(BIN).arg("doctor").env("BOSUN_URL", &url).output().expect("run bosun doctor");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("FAIL") && text.contains("daemon") && text.contains("not reachable"), "{text}");
}
