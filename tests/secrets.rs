//! Secrets, against the real binary: `bosun secrets` with no daemon, a
//! provider whose `env` names a secret gets it in clear in its agent's
//! process (and a rotated one on its next start), clients only ever see it
//! masked, the API's changes are `settings:changed` events and its bad input
//! changes nothing, the clear values are nowhere in the data dir or the
//! daemon's log, and a config with problems is refused with all of them.

mod common;

use bosun_proto::events::SettingsChanged;
use bosun_proto::{CreateSessionRequest, SecretList};
use common::*;
use serde_json::{json, Value};
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The file backend for the key, whatever the machine has: these tests
/// must not depend on (or write to) a desktop keyring.
const NO_KEYRING: (&str, &str) = ("BOSUN_SECRETS_KEYRING", "0");

const FIRST: &str = "sk-first-clear-value-7f3a9c";
const SECOND: &str = "sk-second-clear-value-2b8e41";
const THIRD: &str = "sk-third-clear-value-c05d17";

fn secrets_cli(data_dir: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("secrets").args(args).arg("--data-dir").arg(data_dir).env(NO_KEYRING.0, NO_KEYRING.1);
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("run bosun secrets");
    let mut pipe = child.stdin.take().expect("stdin");
    if let Some(text) = stdin {
        pipe.write_all(text.as_bytes()).expect("write stdin");
    }
    drop(pipe);
    child.wait_with_output().expect("bosun secrets output")
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Every file under `dir` whose bytes hold `needle`.
fn files_holding(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir").map(|e| e.expect("dir entry")) {
            let path = entry.path();
            if entry.file_type().expect("file type").is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                    found.push(path);
                }
            }
        }
    }
    found
}

fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("dir entry"))
        .map(|e| if e.file_type().unwrap().is_dir() { count_files(&e.path()) } else { 1 })
        .sum()
}

#[test]
fn the_cli_sets_lists_and_removes_secrets_with_no_daemon() {
    let root = tempdir();
    let data = root.path().join("data");

    let out = secrets_cli(&data, &["set", "openai"], Some(&format!("{FIRST}\n")));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("set openai (sk-\u{2026}3a9c)"), "{}", text(&out));
    // The key went to the file beside the data dir, owner-only, as said.
    let key_file = root.path().join(".data.secrets.key");
    assert!(String::from_utf8_lossy(&out.stderr).contains(&key_file.display().to_string()), "{}", text(&out));
    assert_eq!(std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(std::fs::metadata(data.join("secrets.json")).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(std::fs::metadata(&data).unwrap().permissions().mode() & 0o777, 0o700);

    let out = secrets_cli(&data, &["set", "github"], Some("ghp-short"));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    let out = secrets_cli(&data, &["ls"], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let listed = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(listed.lines().any(|l| l.starts_with("openai") && l.contains("sk-\u{2026}3a9c")), "{listed}");
    assert!(listed.lines().any(|l| l.starts_with("github") && l.contains('\u{2026}')), "{listed}");
    assert!(!listed.contains(FIRST) && !listed.contains("ghp-short"), "{listed}");

    let out = secrets_cli(&data, &["ls", "--json"], None);
    let list: SecretList = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    let names: Vec<&str> = list.secrets.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["github", "openai"]);
    assert_eq!(list.secrets[1].masked, format!("sk-\u{2026}{}", &FIRST[FIRST.len() - 4..]));
    // Too short to show any of it.
    assert_eq!(list.secrets[0].masked, "\u{2026}");

    // A value is never taken from the command line, and an empty one is refused.
    let out = secrets_cli(&data, &["set", "openai", FIRST], None);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let out = secrets_cli(&data, &["set", "openai"], Some(""));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let out = secrets_cli(&data, &["set", "bad/name"], Some("value"));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad/name"), "{}", text(&out));

    assert!(files_holding(&data, FIRST).is_empty());
    assert!(files_holding(&data, "ghp-short").is_empty());

    let out = secrets_cli(&data, &["rm", "github"], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = secrets_cli(&data, &["rm", "github"], None);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let out = secrets_cli(&data, &["ls", "--json"], None);
    let list: SecretList = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    assert_eq!(list.secrets.len(), 1);

    // A replaced key: the values are refused, not garbled.
    std::fs::write(&key_file, "00".repeat(32)).unwrap();
    let out = secrets_cli(&data, &["ls"], None);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not open"), "{}", text(&out));
    // And the daemon does not start on them.
    let out = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .env(NO_KEYRING.0, NO_KEYRING.1)
        .stdin(Stdio::null())
        .output()
        .expect("run bosun serve");
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not open"), "{}", text(&out));
    assert!(!data.join("store").exists(), "{}", text(&out));
}

/// An ACP agent that first appends its `FOO` to `$SEEN`: what its process
/// was really given.
fn env_reporting_agent(dir: &Path) -> PathBuf {
    let script = dir.join("env-agent.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\nprintf '%s\\n' \"$FOO\" >> \"$SEEN\"\nexec \"$BOSUN_BIN\" bench-agent --chunks 2\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

fn seen(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(str::to_string).collect()
}

async fn run_a_turn(d: &Daemon, cwd: &Path) {
    let req = CreateSessionRequest {
        provider: "envy".into(),
        cwd: Some(path_string(cwd)),
        policy: Some(Policy::FullAccess),
        ..Default::default()
    };
    let session = d.create_session(&req).await.id.into_string();
    let turn = d.start_turn(&session, "hello").await;
    let done = d.wait_turn_end(&session, &turn).await;
    assert_eq!(done.status, TurnStatus::Completed, "{done:?}\n{}", d.stderr());
}

async fn settings_events(d: &Daemon, since: u64) -> Vec<(u64, SettingsChanged, Value)> {
    d.events(None, since)
        .await
        .into_iter()
        .filter(|e| e.kind == EventType::SettingsChanged)
        .map(|e| {
            let data: SettingsChanged = serde_json::from_value(e.data.clone()).expect("settings:changed data");
            (e.seq, data, e.data)
        })
        .collect()
}

async fn listed(d: &Daemon) -> Value {
    let (status, body) = d.get("/api/v1/secrets").await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test]
async fn an_agent_gets_its_secret_in_clear_and_clients_only_ever_see_it_masked() {
    let root = tempdir();
    let data = root.path().join("data");
    let work = root.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let seen_file = root.path().join("seen");
    let out = secrets_cli(&data, &["set", "api_key"], Some(FIRST));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    let script = env_reporting_agent(root.path());
    let config = format!(
        "discover_agents = false\n[providers.envy]\nkind = \"acp\"\ncommand = {:?}\nenv = {{ FOO = \"secret:api_key\", SEEN = {:?}, BOSUN_BIN = {:?} }}\n",
        path_string(&script),
        path_string(&seen_file),
        BIN
    );
    let options = Options {
        config: Some(config),
        admin_token: true,
        // The most the daemon says: none of it may hold a value.
        log: Some("debug".into()),
        env: vec![(NO_KEYRING.0.into(), NO_KEYRING.1.into())],
        ..Default::default()
    };
    let mut d = Daemon::start(&data, options);

    run_a_turn(&d, &work).await;
    assert!(seen(&seen_file).iter().any(|v| v == FIRST), "the agent saw {:?}", seen(&seen_file));
    assert!(!seen(&seen_file).iter().any(|v| v == "secret:api_key"), "{:?}", seen(&seen_file));

    // Clients see it masked, and the providers' list shows no value.
    let body = listed(&d).await;
    assert_eq!(body["secrets"][0]["name"], "api_key", "{body}");
    assert_eq!(body["secrets"][0]["masked"], format!("sk-\u{2026}{}", &FIRST[FIRST.len() - 4..]), "{body}");
    assert!(!body.to_string().contains(FIRST), "{body}");
    let (status, providers) = d.get("/api/v1/providers").await;
    assert_eq!(status, 200);
    assert!(!providers.to_string().contains(FIRST), "{providers}");
    let (status, doctor) = d.get("/api/v1/doctor").await;
    assert_eq!(status, 200);
    assert!(!doctor.to_string().contains(FIRST), "{doctor}");
    // Only the admin credential may look.
    let anonymous = d.http.get(format!("{}/api/v1/secrets", d.url)).send().await.unwrap();
    assert_eq!(anonymous.status().as_u16(), 403);

    // A change through the API is an event that names the secret, never its value.
    let head = d.events(None, 0).await.last().map(|e| e.seq).unwrap_or(0);
    let (status, body) =
        d.request(reqwest::Method::PUT, "/api/v1/secrets/api_key", Some(json!({"value": SECOND}))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["masked"], format!("sk-\u{2026}{}", &SECOND[SECOND.len() - 4..]), "{body}");
    let changes = settings_events(&d, head).await;
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(
        changes[0].1,
        SettingsChanged { setting: "secret".into(), name: "api_key".into(), change: "set".into() }
    );
    assert!(!changes[0].2.to_string().contains(SECOND));

    // The next agent gets the new value.
    run_a_turn(&d, &work).await;
    assert_eq!(seen(&seen_file).last().map(String::as_str), Some(SECOND), "{:?}", seen(&seen_file));

    // A change made with the CLI while the daemon runs (straight to the
    // file) reaches the next agent too.
    let out = secrets_cli(&data, &["set", "api_key"], Some(THIRD));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    run_a_turn(&d, &work).await;
    assert_eq!(seen(&seen_file).last().map(String::as_str), Some(THIRD), "{:?}", seen(&seen_file));

    // Bad input: the standard error, and nothing changes (no event either).
    let before = listed(&d).await;
    let head = d.events(None, 0).await.last().map(|e| e.seq).unwrap_or(0);
    for (method, path, body, want) in [
        (reqwest::Method::PUT, "/api/v1/secrets/bad!name", Some(json!({"value": "x"})), 400),
        (reqwest::Method::PUT, "/api/v1/secrets/api_key", Some(json!({"value": ""})), 400),
        (reqwest::Method::PUT, "/api/v1/secrets/api_key", Some(json!({"value": "x", "extra": 1})), 400),
        (reqwest::Method::PUT, "/api/v1/secrets/api_key", Some(json!({"valu": "x"})), 400),
        (reqwest::Method::PUT, "/api/v1/secrets/api_key", Some(json!({"value": "a\u{0}b"})), 400),
        (reqwest::Method::DELETE, "/api/v1/secrets/nosuch", None, 404),
        (reqwest::Method::POST, "/api/v1/secrets/api_key", Some(json!({"value": "x"})), 405),
        (reqwest::Method::PUT, "/api/v1/secrets", Some(json!({"value": "x"})), 405),
    ] {
        let (status, body) = d.request(method.clone(), path, body).await;
        assert_eq!(status, want, "{method} {path}: {body}");
        assert!(body["error"]["code"].is_string() && body["error"]["message"].is_string(), "{body}");
    }
    assert_eq!(listed(&d).await, before);
    assert!(settings_events(&d, head).await.is_empty());

    let (status, body) = d.request(reqwest::Method::DELETE, "/api/v1/secrets/api_key", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"name": "api_key", "removed": true}));
    let changes = settings_events(&d, head).await;
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(changes[0].1.change, "removed");
    assert_eq!(listed(&d).await, json!({"secrets": []}));

    d.terminate();
    // Neither value is anywhere in the data dir (store, logs, config) nor in
    // what the daemon wrote on stderr, though the agent got both.
    assert!(count_files(&data) > 3, "the data dir has the store in it");
    for value in [FIRST, SECOND, THIRD] {
        assert!(files_holding(&data, value).is_empty(), "{value} in {:?}", files_holding(&data, value));
        assert!(!d.stderr().contains(value), "{value} in the daemon's log");
    }
    assert!(d.stderr().contains("secrets key"), "the key's location is logged:\n{}", d.stderr());
}

#[test]
fn a_config_with_problems_is_refused_with_all_of_them_and_nothing_starts() {
    let root = tempdir();
    let data = root.path().join("data");
    let out = secrets_cli(&data, &["set", "known"], Some("value"));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let config = root.path().join("bosun.toml");
    std::fs::write(
        &config,
        r#"
[server]
max_connections = 0
[auth]
allowed_origins = ["bosun.example"]
[providers.ok]
kind = "acp"
command = "agent"
env = { A = "secret:known" }
[providers.wrongkind]
kind = "no-such-kind"
[providers.refs]
kind = "acp"
command = "agent"
env = { KEY = "secret:unknown" }
"#,
    )
    .unwrap();
    let serve = |config: &Path| {
        let started = Instant::now();
        let out = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data)
            .arg("--config")
            .arg(config)
            .env(NO_KEYRING.0, NO_KEYRING.1)
            .stdin(Stdio::null())
            .output()
            .expect("run bosun serve");
        assert!(started.elapsed() < Duration::from_secs(20));
        out
    };
    let out = serve(&config);
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "4 problems",
        "max_connections must be at least 1",
        "\"bosun.example\" is not an origin",
        "[providers.wrongkind]: there is no provider kind `no-such-kind`",
        "[providers.refs]: env KEY names secret \"unknown\"",
    ] {
        assert!(stderr.contains(expected), "{expected:?} not in:\n{stderr}");
    }
    assert!(!stderr.contains("[providers.ok]"), "{stderr}");
    assert!(out.stdout.is_empty(), "{}", text(&out));
    // Nothing started: no store, no admin credential.
    assert!(!data.join("store").exists() && !data.join("admin.token").exists());

    // A key the parser does not know is refused by name, before the rest.
    std::fs::write(&config, "lisen = \"127.0.0.1:1\"\n").unwrap();
    let out = serve(&config);
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("lisen"), "{}", text(&out));
    assert!(!data.join("store").exists());
}
