//! `bosun service`, against the real binary: the systemd user unit and the
//! LaunchAgent it writes (checked by systemd-analyze and by Python's
//! plistlib), what `--print` shows and leaves unwritten, where the secrets
//! go, and a real install and uninstall into a private HOME. A user systemd
//! instance cannot run on these machines (no systemd as PID 1, no user bus),
//! so the install test checks that the unit is written and that bosun says
//! plainly it is not running; where one can run, it checks it runs. And a
//! second daemon on a data dir in use is refused.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

struct Home {
    dir: tempfile::TempDir,
}

impl Home {
    fn new() -> Home {
        Home { dir: tempfile::tempdir().expect("tempdir") }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn data(&self) -> PathBuf {
        self.path().join("data")
    }

    fn unit(&self) -> PathBuf {
        self.path().join("config/systemd/user/bosun.service")
    }

    /// `bosun service ARGS` with this HOME, a PATH of our own at its front
    /// and a provider key in the environment.
    fn service(&self, args: &[&str]) -> Output {
        let path = format!("/opt/agents/bin:{}", std::env::var("PATH").unwrap_or_default());
        Command::new(env!("CARGO_BIN_EXE_bosun"))
            .arg("service")
            .args(args)
            .env("HOME", self.path())
            .env("XDG_CONFIG_HOME", self.path().join("config"))
            .env("XDG_DATA_HOME", self.path().join("share"))
            .env("PATH", path)
            .env("OPENAI_API_KEY", "sk-test-secret-9f3a")
            .env("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
            .env_remove("DBUS_SESSION_BUS_ADDRESS")
            .output()
            .expect("run bosun service")
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn binary() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_bosun")).canonicalize().expect("the binary")
}

/// The unit in what `--print` shows (from `[Unit]` to `WantedBy=`).
fn unit_of(printed: &str) -> String {
    let start = printed.find("[Unit]").expect("a [Unit] section");
    let end =
        printed.find("WantedBy=default.target\n").expect("an [Install] section") + "WantedBy=default.target\n".len();
    printed[start..end].to_string()
}

fn verify(unit: &str, dir: &Path) -> Output {
    let file = dir.join("bosun.service");
    std::fs::write(&file, unit).expect("write the unit");
    Command::new("systemd-analyze")
        .args(["--user", "verify"])
        .arg(&file)
        .env("XDG_RUNTIME_DIR", dir)
        .output()
        .expect("systemd-analyze (tests/run installs systemd)")
}

#[test]
fn print_shows_a_unit_systemd_accepts_with_the_binary_path_and_environment_and_writes_nothing() {
    let home = Home::new();
    let data = home.data();
    let out = home.service(&["install", "--print", "--data-dir", data.to_str().unwrap(), "--listen", "127.0.0.1:7099"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let printed = stdout(&out);
    let unit = unit_of(&printed);
    let exec = format!(
        "ExecStart=\"{}\" \"serve\" \"--data-dir\" \"{}\" \"--listen\" \"127.0.0.1:7099\"\n",
        binary().display(),
        data.display()
    );
    assert!(unit.contains(&exec), "the binary by its absolute path, which exists: {unit}");
    assert!(binary().is_file());
    assert!(unit.contains("Environment=\"PATH=/opt/agents/bin:"), "the PATH at install time: {unit}");
    assert!(unit.contains(&format!("EnvironmentFile=-{}\n", data.join("service.env").display())), "{unit}");
    assert!(!printed.contains("sk-test-secret-9f3a"), "the key is never shown: {printed}");
    assert!(printed.contains("OPENAI_API_KEY=\"sk-…9f3a\""), "it is shown masked: {printed}");
    assert!(printed.contains("OPENAI_BASE_URL=\"http://127.0.0.1:9/v1\""), "{printed}");
    assert!(!data.exists() && !home.unit().exists(), "--print writes nothing");

    let scratch = tempfile::tempdir().expect("tempdir");
    let verified = verify(&unit, scratch.path());
    assert!(verified.status.success(), "systemd-analyze verify: {}", stderr(&verified));
    // The check can fail: a unit naming its binary by a relative path is refused.
    let broken = unit.replace(&format!("ExecStart=\"{}\"", binary().display()), "ExecStart=bosun");
    let refused = verify(&broken, scratch.path());
    assert!(!refused.status.success(), "a relative ExecStart is refused: {}", stderr(&refused));
}

#[test]
fn the_launch_agent_is_a_valid_plist_with_the_binary_and_environment() {
    let home = Home::new();
    let data = home.data();
    let out = home.service(&["install", "--print", "--platform", "launchd", "--data-dir", data.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let printed = stdout(&out);
    let plist = &printed[printed.find("<?xml").expect("a plist")..];
    let script = "import json, plistlib, sys; print(json.dumps(plistlib.loads(sys.stdin.buffer.read())))";
    let mut python = Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    use std::io::Write as _;
    python.stdin.take().expect("stdin").write_all(plist.as_bytes()).expect("write");
    let parsed = python.wait_with_output().expect("python3");
    assert!(parsed.status.success(), "plistlib reads it: {plist}");
    let value: serde_json::Value = serde_json::from_slice(&parsed.stdout).expect("JSON");
    assert_eq!(value["Label"], "dev.bosun.daemon");
    let args: Vec<&str> =
        value["ProgramArguments"].as_array().expect("args").iter().filter_map(|a| a.as_str()).collect();
    assert_eq!(args, [binary().to_str().unwrap(), "serve", "--data-dir", data.to_str().unwrap()]);
    assert!(
        value["EnvironmentVariables"]["PATH"].as_str().is_some_and(|p| p.starts_with("/opt/agents/bin:")),
        "{value}"
    );
    assert_eq!(value["EnvironmentVariables"]["OPENAI_API_KEY"], "sk-…9f3a", "masked when shown");
    assert_eq!(value["RunAtLoad"], true);
    assert_eq!(value["KeepAlive"]["SuccessfulExit"], false, "restarted when it fails, not when it is stopped");
}

#[test]
fn install_writes_the_unit_and_a_private_environment_file_and_uninstall_removes_the_unit() {
    let home = Home::new();
    let data = home.data();
    let out = home.service(&["install", "--data-dir", data.to_str().unwrap(), "--listen", "127.0.0.1:0"]);
    let said = format!("{}{}", stdout(&out), stderr(&out));
    let unit = std::fs::read_to_string(home.unit()).unwrap_or_else(|e| panic!("the unit is written ({e}): {said}"));
    assert!(unit.contains(&format!("ExecStart=\"{}\"", binary().display())), "{unit}");
    assert!(!unit.contains("sk-test-secret-9f3a"), "no secret in the unit");
    assert_eq!(std::fs::metadata(home.unit()).unwrap().permissions().mode() & 0o777, 0o644);
    let env_file = data.join("service.env");
    let env = std::fs::read_to_string(&env_file).expect("the environment file");
    assert!(env.contains("OPENAI_API_KEY=\"sk-test-secret-9f3a\""), "{env}");
    assert_eq!(std::fs::metadata(&env_file).unwrap().permissions().mode() & 0o777, 0o600, "only its user reads it");
    assert!(said.contains(&format!("wrote {}", home.unit().display())), "says what it did: {said}");

    let user_systemd = Command::new("systemctl").args(["--user", "is-system-running"]).output().is_ok_and(|o| {
        let state = String::from_utf8_lossy(&o.stdout);
        state.starts_with("running") || state.starts_with("degraded")
    });
    if user_systemd {
        assert!(out.status.success(), "{said}");
        assert!(said.contains("enable --now bosun.service"), "{said}");
    } else {
        eprintln!("no user systemd instance on this machine: the unit was written and checked, not started");
        assert_eq!(out.status.code(), Some(1), "{said}");
        assert!(said.contains("the unit is written but not running"), "it says so plainly: {said}");
    }

    let out = home.service(&["uninstall"]);
    let said = format!("{}{}", stdout(&out), stderr(&out));
    assert!(out.status.success(), "{said}");
    assert!(!home.unit().exists(), "{said}");
    assert!(said.contains(&format!("removed {}", home.unit().display())), "{said}");
}

/// A second daemon on a data dir one already runs on is refused at once,
/// saying why, and the first goes on serving.
#[test]
fn a_second_daemon_on_the_same_data_dir_is_refused_with_a_clear_message() {
    use std::io::{BufRead, BufReader};
    let home = Home::new();
    let data = home.data();
    let serve = || {
        Command::new(env!("CARGO_BIN_EXE_bosun"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data)
            .env("HOME", home.path())
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("bosun serve")
    };
    let mut first = serve();
    let mut lines = BufReader::new(first.stderr.take().expect("stderr")).lines();
    let ready = lines.by_ref().map_while(Result::ok).find(|l| l.contains("ready"));
    assert!(ready.is_some(), "the first daemon starts");
    let second = serve().wait_with_output().expect("the second daemon");
    let said = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "refused: {said}");
    assert!(said.contains("in use by another process") && said.contains(data.to_str().unwrap()), "{said}");
    assert!(first.try_wait().expect("the first daemon").is_none(), "the first is still running");
    let _ = first.kill();
    let _ = first.wait();
}
