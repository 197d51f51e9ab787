//! Signed provider modules against the real binary (docs/MODULES.md):
//! `bosun module keygen|pack|install|rollback|ls`, installing through the
//! running daemon (which registers the provider at once, and a session
//! runs on it), each refusal with its code and nothing changed on disk,
//! rollback, downgrades, a rotated key, an install from a URL, and an
//! offline install the daemon registers when it starts.
//!
//! The module's agent is a two-line script that runs `bosun bench-agent`,
//! a real ACP agent on stdio.

mod common;

use bosun_proto::events::ProviderStatusKind;
use bosun_proto::{CreateSessionRequest, ProviderView};
use common::*;
use serde_json::Value;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const NAME: &str = "my-agent";

fn bosun(args: &[&str]) -> Output {
    Command::new(BIN).args(args).env("NO_COLOR", "1").env_remove("BOSUN_URL").output().expect("run bosun")
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

/// A key pair in `dir`: its id and base64 public key, from `keygen --json`.
fn keygen(dir: &Path) -> (String, String) {
    let out = bosun(&["module", "keygen", "--out", &path_string(dir), "--json"]);
    assert!(out.status.success(), "keygen: {}", text(&out.stderr));
    let answer: Value = serde_json::from_slice(&out.stdout).expect("keygen --json prints JSON");
    let object = answer.as_object().expect("an object");
    assert_eq!(object.len(), 2, "exactly id and public_key: {answer}");
    let id = answer["id"].as_str().expect("id").to_string();
    let public_key = answer["public_key"].as_str().expect("public_key").to_string();
    let key = dir.join(format!("{id}.key"));
    let mode = std::fs::metadata(&key).expect("the secret key file").permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the secret key is the owner's only");
    (id, public_key)
}

fn key_file(dir: &Path, id: &str) -> String {
    path_string(&dir.join(format!("{id}.key")))
}

/// A module source dir: module.toml and an agent script saying `version`.
fn source(root: &Path, version: &str) -> PathBuf {
    let dir = root.join(format!("src-{version}"));
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    std::fs::write(
        dir.join("module.toml"),
        format!(
            "name = \"{NAME}\"\nversion = \"{version}\"\nmin_bosun = \"0.1.0\"\n\n[provider]\nkind = \"acp\"\ncommand = \"bin/agent\"\nargs = [\"--chunks\", \"3\", \"--interval-us\", \"1000\"]\n"
        ),
    )
    .unwrap();
    let script = dir.join("bin/agent");
    std::fs::write(&script, format!("#!/bin/sh\n# version {version}\nexec '{BIN}' bench-agent \"$@\"\n")).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// Packs `version` with key `key` into `root/<version>-<key>.bosun`.
fn pack(root: &Path, keys: &Path, key: &str, version: &str, valid_for: &str) -> PathBuf {
    let src = source(root, version);
    let out = root.join(format!("{version}-{key}.bosun"));
    let done = bosun(&[
        "module",
        "pack",
        &path_string(&src),
        "--key",
        &key_file(keys, key),
        "--out",
        &path_string(&out),
        "--valid-for",
        valid_for,
    ]);
    assert!(done.status.success(), "pack: {}", text(&done.stderr));
    assert!(text(&done.stdout).contains(&format!("packed {NAME} {version}")), "{}", text(&done.stdout));
    out
}

fn trust_config(keys: &[&(String, String)], extra: &str) -> String {
    let entries: Vec<String> =
        keys.iter().map(|(id, pk)| format!("{{ id = \"{id}\", public_key = \"{pk}\" }}")).collect();
    format!("discover_agents = false\n{extra}\n[modules]\ntrusted_keys = [{}]\n", entries.join(", "))
}

fn start(data: &Path, config: String) -> Daemon {
    Daemon::start(data, Options { config: Some(config), ..Options::default() })
}

/// `bosun module ARGS` against daemon `d`.
fn module_cli(d: &Daemon, args: &[&str]) -> Output {
    let mut all = vec!["module"];
    all.extend_from_slice(args);
    let server = d.url.clone();
    let data = path_string(&d.data_dir);
    all.extend_from_slice(&["--server", &server, "--data-dir", &data]);
    bosun(&all)
}

fn install(d: &Daemon, module: &Path, extra: &[&str]) -> Output {
    let file = path_string(module);
    let mut args = vec!["install", file.as_str()];
    args.extend_from_slice(extra);
    module_cli(d, &args)
}

/// Installs and expects success.
fn installed(d: &Daemon, module: &Path, extra: &[&str]) {
    let out = install(d, module, extra);
    assert!(out.status.success(), "install {}: {}", module.display(), text(&out.stderr));
}

/// Expects the CLI to refuse with `code`, and the daemon's data dir's
/// modules to be exactly as before.
fn refused(d: &Daemon, module: &Path, extra: &[&str], code: &str) -> String {
    let before = tree(&d.data_dir.join("providers"));
    let out = install(d, module, extra);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{code}: stdout {} stderr {stderr}", text(&out.stdout));
    assert!(stderr.contains(&format!("({code})")), "expected {code}: {stderr}");
    assert_eq!(tree(&d.data_dir.join("providers")), before, "a refused module ({code}) changed the data dir");
    stderr
}

/// Every path under `dir` with its contents or link target.
fn tree(dir: &Path) -> Vec<(String, String)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for entry in entries.map(Result::unwrap) {
            let path = entry.path();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_symlink() {
                out.push((rel, format!("-> {}", std::fs::read_link(&path).unwrap().display())));
            } else if meta.is_dir() {
                out.push((rel, "dir".into()));
                walk(root, &path, out);
            } else {
                out.push((
                    rel,
                    format!(
                        "{:o} {}",
                        meta.permissions().mode(),
                        String::from_utf8_lossy(&std::fs::read(&path).unwrap())
                    ),
                ));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

async fn provider(d: &Daemon) -> Option<ProviderView> {
    let list = d.client().providers().await.expect("GET /api/v1/providers");
    list.providers.into_iter().find(|p| p.name == NAME)
}

/// The version the daemon's provider `my-agent` starts, from its command's path.
async fn live_version(d: &Daemon) -> String {
    let p = provider(d).await.expect("my-agent is listed");
    assert_eq!(p.origin, "module");
    let command = p.command.expect("a command");
    let suffix = "/files/bin/agent";
    assert!(command.ends_with(suffix), "{command}");
    let dir = &command[..command.len() - suffix.len()];
    dir.rsplit('/').next().unwrap().to_string()
}

fn ls(d: &Daemon) -> Vec<Value> {
    let out = module_cli(d, &["ls", "--json"]);
    assert!(out.status.success(), "ls: {}", text(&out.stderr));
    serde_json::from_slice::<Value>(&out.stdout).expect("ls --json").as_array().cloned().expect("an array")
}

/// The `installed` provider:status events on the system topic, as (version, replaced).
async fn installs(d: &Daemon) -> Vec<(String, Option<String>)> {
    d.events(None, 0)
        .await
        .iter()
        .filter_map(|e| match payload(e) {
            EventData::ProviderStatus(s) if s.provider == NAME => match s.status {
                ProviderStatusKind::Installed { version, replaced } => Some((version, replaced)),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn an_installed_module_is_a_provider_at_once_and_survives_a_restart() {
    let dir = tempdir();
    let keys = dir.path().join("keys");
    let key = keygen(&keys);
    let d = start(&dir.path().join("data"), trust_config(&[&key], ""));
    assert!(provider(&d).await.is_none());

    let v1 = pack(dir.path(), &keys, &key.0, "1.0.0", "30d");
    let out = install(&d, &v1, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("installed my-agent 1.0.0"), "{}", text(&out.stdout));
    let p = provider(&d).await.expect("listed with no restart");
    assert_eq!((p.kind.as_str(), p.status.as_str()), ("acp", "available"), "{p:?}");
    assert_eq!(live_version(&d).await, "1.0.0");
    assert_eq!(installs(&d).await, [("1.0.0".to_string(), None)]);

    // A session runs on it: the module's script starts a real ACP agent.
    let cwd = dir.path().join("work");
    std::fs::create_dir_all(&cwd).unwrap();
    let req = CreateSessionRequest {
        provider: NAME.into(),
        cwd: Some(path_string(&cwd)),
        policy: Some(Policy::FullAccess),
        ..Default::default()
    };
    let session = d.create_session(&req).await.id.into_string();
    let turn = d.start_turn(&session, "hello").await;
    let done = d.wait_turn_end(&session, &turn).await;
    assert_eq!(done.status, TurnStatus::Completed, "{done:?}");
    let events = d.typed_events(&session, 0).await;
    assert!(!turn_text(&events, &turn, None).is_empty(), "the agent streamed its reply");

    // A newer version replaces it live; the old one is kept for rollback.
    let v2 = pack(dir.path(), &keys, &key.0, "1.1.0", "30d");
    installed(&d, &v2, &[]);
    assert_eq!(live_version(&d).await, "1.1.0");
    let listed = ls(&d);
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0]["version"].as_str(), listed[0]["previous"].as_str()), (Some("1.1.0"), Some("1.0.0")));
    assert_eq!(listed[0]["key_id"].as_str(), Some(key.0.as_str()));
    let backup = d.data_dir.join("providers").join(NAME).join("backup");
    assert!(backup.join("1.0.0.manifest.json").is_file() && backup.join("1.1.0.manifest.sig").is_file());

    // Rollback switches back, live.
    let out = module_cli(&d, &["rollback", NAME]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("rolled back to my-agent 1.0.0 (was 1.1.0)"), "{}", text(&out.stdout));
    assert_eq!(live_version(&d).await, "1.0.0");
    assert_eq!(ls(&d)[0]["previous"].as_str(), Some("1.1.0"));
    assert_eq!(installs(&d).await.last().cloned(), Some(("1.0.0".to_string(), Some("1.1.0".to_string()))));

    // The current version is registered again when the daemon starts.
    let d = d.restart();
    assert_eq!(live_version(&d).await, "1.0.0");
    let session = d.create_session(&req).await.id.into_string();
    let turn = d.start_turn(&session, "again").await;
    assert_eq!(d.wait_turn_end(&session, &turn).await.status, TurnStatus::Completed);
}

#[tokio::test]
async fn every_refusal_has_its_code_and_leaves_the_data_dir_as_it_was() {
    let dir = tempdir();
    let keys = dir.path().join("keys");
    let key = keygen(&keys);
    let stranger = keygen(&dir.path().join("other-keys"));
    let d = start(&dir.path().join("data"), trust_config(&[&key], "[providers.taken]\nkind = \"demo\"\n"));
    let out = module_cli(&d, &["rollback", NAME]);
    assert!(text(&out.stderr).contains("(not_found)"), "{}", text(&out.stderr));
    installed(&d, &pack(dir.path(), &keys, &key.0, "1.0.0", "30d"), &[]);
    let before = tree(&d.data_dir.join("providers"));
    let out = module_cli(&d, &["rollback", NAME]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("(no_previous)"), "{}", text(&out.stderr));
    assert_eq!(tree(&d.data_dir.join("providers")), before);
    let good = std::fs::read(pack(dir.path(), &keys, &key.0, "2.0.0", "30d")).unwrap();

    // One byte of the agent script changed (tar is uncompressed: it is there as is).
    let tampered = dir.path().join("tampered.bosun");
    std::fs::write(&tampered, replace_once(&good, b"# version 2.0.0", b"# version 2.0.1")).unwrap();
    let why = refused(&d, &tampered, &[], "hash_mismatch");
    assert!(why.contains("bin/agent"), "{why}");
    // The manifest changed under its signature.
    let forged = dir.path().join("forged.bosun");
    std::fs::write(&forged, replace_once(&good, b"\"--interval-us\"", b"\"--interval-xx\"")).unwrap();
    refused(&d, &forged, &[], "bad_signature");
    // Signed by a key this daemon does not trust.
    let unknown = pack(dir.path(), &dir.path().join("other-keys"), &stranger.0, "2.0.0", "30d");
    let why = refused(&d, &unknown, &[], "unknown_key");
    assert!(why.contains(&stranger.0), "{why}");
    // Expired.
    let expiring = pack(dir.path(), &keys, &key.0, "3.0.0", "1s");
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    refused(&d, &expiring, &[], "expired");
    // Older than what is installed, unless asked.
    let older = pack(dir.path(), &keys, &key.0, "0.9.0", "30d");
    let why = refused(&d, &older, &[], "downgrade");
    assert!(why.contains("--allow-downgrade"), "{why}");
    // Not a module at all.
    let junk = dir.path().join("junk.bosun");
    std::fs::write(&junk, b"hello").unwrap();
    refused(&d, &junk, &[], "bad_module");

    // A name the config holds: the config wins.
    let taken_src = source(dir.path(), "5.0.0");
    let spec = std::fs::read_to_string(taken_src.join("module.toml")).unwrap();
    std::fs::write(taken_src.join("module.toml"), spec.replace("name = \"my-agent\"", "name = \"taken\"")).unwrap();
    let taken = dir.path().join("taken.bosun");
    let out = bosun(&[
        "module",
        "pack",
        &path_string(&taken_src),
        "--key",
        &key_file(&keys, &key.0),
        "--out",
        &path_string(&taken),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    refused(&d, &taken, &[], "provider_conflict");

    // Over HTTP: the status that fits each, and the admin credential only.
    let post = |body: Vec<u8>, token: Option<String>| {
        let mut req =
            d.http.post(format!("{}/api/v1/modules/install", d.url)).header("x-bosun-client", "test").body(body);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        async move {
            let resp = req.send().await.expect("POST /api/v1/modules/install");
            let status = resp.status().as_u16();
            let body: Value = resp.json().await.expect("a JSON answer");
            (status, body["error"]["code"].as_str().unwrap_or("").to_string())
        }
    };
    let admin = Some(d.admin_token());
    assert_eq!(post(std::fs::read(&tampered).unwrap(), admin.clone()).await, (422, "hash_mismatch".into()));
    assert_eq!(post(std::fs::read(&forged).unwrap(), admin.clone()).await, (403, "bad_signature".into()));
    assert_eq!(post(std::fs::read(&unknown).unwrap(), admin.clone()).await, (403, "unknown_key".into()));
    assert_eq!(post(std::fs::read(&expiring).unwrap(), admin.clone()).await, (422, "expired".into()));
    assert_eq!(post(std::fs::read(&older).unwrap(), admin.clone()).await, (409, "downgrade".into()));
    assert_eq!(post(std::fs::read(&taken).unwrap(), admin.clone()).await, (409, "provider_conflict".into()));
    // A loopback client without the admin credential may do much, not this.
    assert_eq!(post(good.clone(), None).await, (403, "forbidden".into()));
    let rollback = d
        .http
        .post(format!("{}/api/v1/modules/{NAME}/rollback", d.url))
        .header("x-bosun-client", "test")
        .send()
        .await
        .expect("POST rollback");
    assert_eq!(rollback.status().as_u16(), 403, "rollback is the admin's too");
    assert_eq!(live_version(&d).await, "1.0.0");
    assert_eq!(installs(&d).await.len(), 1, "no refusal was announced as an install");

    // The downgrade goes through when asked for.
    installed(&d, &older, &["--allow-downgrade"]);
    assert_eq!(live_version(&d).await, "0.9.0");
    assert_eq!(post(good, admin).await.0, 200);
    assert_eq!(live_version(&d).await, "2.0.0");
}

fn replace_once(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    assert_eq!(from.len(), to.len(), "same length, so the tar stays well-formed");
    let at = bytes.windows(from.len()).position(|w| w == from).expect("the bytes to change are in the module");
    let mut out = bytes.to_vec();
    out[at..at + from.len()].copy_from_slice(to);
    out
}

#[tokio::test]
async fn keys_rotate_by_trusting_the_new_one_then_dropping_the_old() {
    let dir = tempdir();
    let keys = dir.path().join("keys");
    let old = keygen(&keys);
    let new = keygen(&keys);
    assert_ne!(old.0, new.0);
    let data = dir.path().join("data");
    let mut d = start(&data, trust_config(&[&old, &new], ""));
    installed(&d, &pack(dir.path(), &keys, &old.0, "1.0.0", "30d"), &[]);
    installed(&d, &pack(dir.path(), &keys, &new.0, "1.1.0", "30d"), &[]);
    assert_eq!(live_version(&d).await, "1.1.0");
    d.terminate();
    // With the daemon gone, the CLI says how to go on without it.
    let out = install(&d, &pack(dir.path(), &keys, &new.0, "1.1.1", "30d"), &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("--offline"), "{}", text(&out.stderr));

    // The old key is no longer trusted: what it signs is refused, what is
    // installed stays, and the new key goes on.
    let d = start(&data, trust_config(&[&new], ""));
    assert_eq!(live_version(&d).await, "1.1.0");
    let by_old = pack(dir.path(), &keys, &old.0, "1.2.0", "30d");
    refused(&d, &by_old, &[], "unknown_key");
    installed(&d, &pack(dir.path(), &keys, &new.0, "1.3.0", "30d"), &[]);
    assert_eq!(live_version(&d).await, "1.3.0");
}

/// Serves `body` at any path, to `count` requests, on 127.0.0.1.
fn serve(body: Vec<u8>, count: usize) -> String {
    use std::io::{Read as _, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(count) {
            let Ok(mut stream) = stream else { continue };
            let mut head = [0u8; 4096];
            let _ = stream.read(&mut head);
            let _ = write!(stream, "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", body.len());
            let _ = stream.write_all(&body);
        }
    });
    format!("http://{addr}/my-agent.bosun")
}

#[tokio::test]
async fn a_module_installs_from_a_url_and_still_must_verify() {
    let dir = tempdir();
    let keys = dir.path().join("keys");
    let key = keygen(&keys);
    let d = start(&dir.path().join("data"), trust_config(&[&key], ""));
    let module = std::fs::read(pack(dir.path(), &keys, &key.0, "1.0.0", "30d")).unwrap();

    let tampered = replace_once(&module, b"# version 1.0.0", b"# version 6.6.6");
    let url = serve(tampered, 1);
    let out = module_cli(&d, &["install", &url]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("(hash_mismatch)"), "{}", text(&out.stderr));
    assert!(provider(&d).await.is_none());
    assert!(!d.data_dir.join("providers").exists(), "nothing was written");

    let url = serve(module, 1);
    let out = module_cli(&d, &["install", &url]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(live_version(&d).await, "1.0.0");
}

#[tokio::test]
async fn an_offline_install_is_registered_when_the_daemon_starts() {
    let dir = tempdir();
    let keys = dir.path().join("keys");
    let key = keygen(&keys);
    let data = dir.path().join("data");
    let config = dir.path().join("bosun.toml");
    std::fs::write(&config, trust_config(&[&key], "")).unwrap();
    let module = pack(dir.path(), &keys, &key.0, "1.0.0", "30d");
    let offline = |args: &[&str]| {
        let mut all = vec!["module"];
        all.extend_from_slice(args);
        let (config, data) = (path_string(&config), path_string(&data));
        all.extend_from_slice(&["--offline", "--config", &config, "--data-dir", &data]);
        bosun(&all)
    };
    let out = offline(&["install", &path_string(&module)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("when it next starts"), "{}", text(&out.stderr));
    // Without the config there is no trusted key: refused, like the daemon would.
    let out = bosun(&["module", "install", &path_string(&module), "--offline", "--data-dir", &path_string(&data)]);
    assert!(text(&out.stderr).contains("(unknown_key)"), "{}", text(&out.stderr));

    // Offline upgrade and rollback, with the same checks.
    let newer = pack(dir.path(), &keys, &key.0, "1.1.0", "30d");
    let out = offline(&["install", &path_string(&newer)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = offline(&["install", &path_string(&module)]);
    assert!(text(&out.stderr).contains("(downgrade)"), "{}", text(&out.stderr));
    let out = offline(&["rollback", NAME]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("rolled back to my-agent 1.0.0 (was 1.1.0)"), "{}", text(&out.stdout));

    // A module whose current version is gone does not keep the others out.
    let broken = data.join("providers").join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::os::unix::fs::symlink("9.9.9", broken.join("current")).unwrap();

    let d = start(&data, trust_config(&[&key], ""));
    assert_eq!(live_version(&d).await, "1.0.0");
    assert!(d.stderr().contains("installed module not registered"), "the broken one is warned about");
    std::fs::remove_dir_all(&broken).unwrap();
    let listed = ls(&d);
    assert_eq!((listed[0]["version"].as_str(), listed[0]["previous"].as_str()), (Some("1.0.0"), Some("1.1.0")));
    assert_eq!(listed[0]["versions"], serde_json::json!(["1.0.0", "1.1.0"]));
}
