//! The HTTP API against its own OpenAPI document, by Schemathesis (from
//! PyPI; `tests/run` installs it in tests/.venv): for a bounded time it
//! generates requests from the document, and fails on any 5xx or any answer
//! that does not match the document's schemas. The document itself must be
//! valid OpenAPI 3.1 (openapi-spec-validator).

mod common;

use common::*;
use std::path::PathBuf;
use std::process::Command;

/// How long Schemathesis generates requests: long enough to cover every
/// operation many times, short enough for the suite's budget.
const MAX_SECONDS: &str = "60";

fn venv_bin(name: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/.venv/bin").join(name);
    assert!(path.is_file(), "{} is missing: run tests/run, which installs it", path.display());
    path
}

#[test]
fn the_openapi_document_is_valid_openapi_3_1() {
    let doc = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/api/openapi.json");
    let out = Command::new(venv_bin("openapi-spec-validator")).arg(&doc).output().expect("run openapi-spec-validator");
    assert!(
        out.status.success(),
        "{} is not valid OpenAPI: {}{}",
        doc.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn schemathesis_finds_no_server_error_and_no_answer_off_the_schema() {
    let dir = tempdir();
    // Terminal emulators are behind consent here, so generated requests
    // never open windows on the machine; the pty terminals they start end
    // with the daemon. The OS clipboard is left out: on a machine with no
    // display it is rightly 501, which the server-error check counts.
    let tmux = format!("bosun-schemathesis-{}", std::process::id());
    let config = format!(
        "[termbridge]\nopt_in = [\"tmux\", \"wezterm\", \"konsole\", \"tilix\", \"alacritty\"]\n\
         [termbridge.tmux]\nsocket = {{ name = \"{tmux}\" }}\n"
    );
    let options = Options {
        config: Some(config),
        env: vec![("BOSUN_WEZTERM_CLI".into(), "/nonexistent/wezterm".into())],
        ..Default::default()
    };
    let d = Daemon::start(&dir.path().join("data"), options);
    let token = std::fs::read_to_string(d.data_dir.join("admin.token")).expect("admin.token");
    let out = Command::new(venv_bin("schemathesis"))
        .args(["run", &format!("{}/api/v1/openapi.json", d.url), "--url", &d.url])
        .args(["--checks", "not_a_server_error,response_schema_conformance"])
        .args(["--max-time", MAX_SECONDS, "--max-examples", "25"])
        .args(["--exclude-path", "/api/v1/terminals/clipboard"])
        // The admin credential, so the admin endpoints are tried too, and the
        // marker every state-changing request needs.
        .args(["-H", &format!("Authorization: Bearer {}", token.trim())])
        .args(["-H", "X-Bosun-Client: schemathesis"])
        .current_dir(dir.path())
        .env("NO_COLOR", "1")
        .output()
        .expect("run schemathesis");
    let _ = Command::new("tmux").args(["-L", &tmux, "kill-server"]).output();
    let report = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "schemathesis failed:\n{report}\ndaemon log:\n{}", d.stderr());
    assert!(report.contains("passed"), "schemathesis ran no test case:\n{report}");
}
