//! What the integration tests share: private instances of X, D-Bus and the
//! terminals, each a guard that kills what it started when dropped (also
//! when the test fails), and polling with a deadline.

#![allow(dead_code)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Fails the test (never skips it) when a tool is missing: `tests/run`
/// installs them all.
pub fn require(program: &str) -> PathBuf {
    bosun_termbridge::runner::find_on_path(program)
        .unwrap_or_else(|| panic!("{program} is not installed; tests/run installs it (apt-get)"))
}

/// A name no other test (or test run) uses.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    format!("{prefix}-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// Kills its processes (their process groups too) when dropped.
#[derive(Default)]
pub struct Processes {
    children: Vec<Child>,
    pids: Vec<i32>,
}

impl Processes {
    pub fn spawn(&mut self, command: &mut Command) -> u32 {
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {command:?}: {e}"));
        let pid = child.id();
        self.children.push(child);
        pid
    }
    pub fn adopt(&mut self, pid: i32) {
        self.pids.push(pid);
    }
}

use std::os::unix::process::CommandExt;

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &mut self.children {
            let pid = child.id() as i32;
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
                libc::kill(pid, libc::SIGKILL);
            }
            let _ = child.wait();
        }
        for &pid in &self.pids {
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}

/// Polls `check` until it gives `Some`, or panics naming `what`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

pub fn wait_for_path(path: &Path, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while !path.exists() {
        assert!(Instant::now() < deadline, "timed out waiting for {}", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A private X server.
pub struct Xvfb {
    pub display: String,
    number: u32,
    _processes: Processes,
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        // Killed (below, by the guard), Xvfb leaves its socket and lock
        // behind; later runs would take the display for taken.
        let _ = std::fs::remove_file(format!("/tmp/.X11-unix/X{}", self.number));
        let _ = std::fs::remove_file(format!("/tmp/.X{}-lock", self.number));
    }
}

impl Xvfb {
    pub fn start() -> Xvfb {
        require("Xvfb");
        let base = 200 + (std::process::id() % 200) * 10;
        for n in base..base + 100 {
            let socket = PathBuf::from(format!("/tmp/.X11-unix/X{n}"));
            let lock = PathBuf::from(format!("/tmp/.X{n}-lock"));
            if socket.exists() || lock.exists() {
                continue;
            }
            let mut processes = Processes::default();
            processes.spawn(Command::new("Xvfb").args([
                &format!(":{n}"),
                "-screen",
                "0",
                "1280x800x24",
                "-nolisten",
                "tcp",
            ]));
            let deadline = Instant::now() + Duration::from_secs(10);
            while !socket.exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if socket.exists() {
                return Xvfb { display: format!(":{n}"), number: n, _processes: processes };
            }
        }
        panic!("no free X display for Xvfb");
    }
}

/// A private session bus.
pub struct SessionBus {
    pub address: String,
    pid: i32,
}

impl SessionBus {
    pub fn start() -> SessionBus {
        require("dbus-daemon");
        let output = Command::new("dbus-daemon")
            .args(["--session", "--fork", "--print-address=1", "--print-pid=1"])
            .output()
            .expect("dbus-daemon runs");
        assert!(output.status.success(), "dbus-daemon: {}", String::from_utf8_lossy(&output.stderr));
        let text = String::from_utf8_lossy(&output.stdout);
        let mut lines = text.lines();
        let address = lines.next().expect("an address").trim().to_string();
        let pid = lines.next().and_then(|p| p.trim().parse().ok()).expect("a pid");
        SessionBus { address, pid }
    }
}

impl Drop for SessionBus {
    fn drop(&mut self) {
        unsafe {
            libc::kill(self.pid, libc::SIGKILL);
        }
    }
}

pub fn kill9(pid: u32) {
    unsafe {
        libc::kill(pid as i32, libc::SIGKILL);
    }
}

pub fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A GUI terminal of ours on a private X server and session bus, with a
/// home of its own so no user config is read or written. Dropped in order:
/// the terminal, then the bus and X.
pub struct Desktop {
    pub processes: Processes,
    pub bus: SessionBus,
    pub xvfb: Xvfb,
    pub home: tempfile::TempDir,
}

impl Desktop {
    pub fn start() -> Desktop {
        let xvfb = Xvfb::start();
        let bus = SessionBus::start();
        Desktop { processes: Processes::default(), bus, xvfb, home: tempfile::tempdir().unwrap() }
    }

    /// A command with this desktop's display, bus and home.
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        command
            .env("DISPLAY", &self.xvfb.display)
            .env("DBUS_SESSION_BUS_ADDRESS", &self.bus.address)
            .env("HOME", self.home.path())
            .env("XDG_CONFIG_HOME", self.home.path().join(".config"))
            .env("XDG_DATA_HOME", self.home.path().join(".local/share"))
            .env("XDG_CACHE_HOME", self.home.path().join(".cache"))
            .env("XDG_RUNTIME_DIR", self.home.path())
            .env("GSETTINGS_BACKEND", "memory")
            .env("LIBGL_ALWAYS_SOFTWARE", "1")
            .env("SHELL", "/bin/bash")
            .env_remove("KITTY_LISTEN_ON")
            .env_remove("TMUX")
            .current_dir(self.home.path());
        command
    }

    /// Whether `name` is on this desktop's bus.
    pub fn bus_has(&self, name: &str) -> bool {
        let out = Command::new("dbus-send")
            .arg(format!("--bus={}", self.bus.address))
            .args(["--print-reply", "--dest=org.freedesktop.DBus", "/org/freedesktop/DBus"])
            .args(["org.freedesktop.DBus.NameHasOwner", &format!("string:{name}")])
            .stderr(Stdio::null())
            .output();
        out.map(|o| String::from_utf8_lossy(&o.stdout).contains("boolean true")).unwrap_or(false)
    }

    pub fn wait_for_bus_name(&self, name: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.bus_has(name) {
            assert!(Instant::now() < deadline, "{name} did not appear on the bus in {timeout:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Waits for a file a pane's command writes, and returns its text.
pub async fn file_text(path: &Path, timeout: Duration) -> String {
    let what = format!("{}", path.display());
    wait_for(&what, timeout, || async {
        let text = std::fs::read_to_string(path).ok()?;
        text.ends_with('\n').then_some(text)
    })
    .await
}

impl Desktop {
    /// Gives the X input focus to the largest window of `class`, as a
    /// window manager would on a click: Xvfb has none, and Qt and GTK move
    /// their focus between views only inside a focused window.
    pub fn focus_x_window(&self, class: &str) -> String {
        require("xdotool");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = self.command("xdotool").args(["search", "--onlyvisible", "--class", class]).output().unwrap();
            let windows: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(String::from).collect();
            let biggest = windows
                .iter()
                .filter_map(|w| {
                    let geometry = self.command("xdotool").args(["getwindowgeometry", "--shell", w]).output().ok()?;
                    let text = String::from_utf8_lossy(&geometry.stdout).into_owned();
                    let value = |key: &str| -> u64 {
                        text.lines().find_map(|l| l.strip_prefix(key)).and_then(|v| v.parse().ok()).unwrap_or(0)
                    };
                    Some((value("WIDTH=") * value("HEIGHT="), w.clone()))
                })
                .max();
            if let Some((area, window)) = biggest {
                if area > 10_000 {
                    let status = self.command("xdotool").args(["windowfocus", "--sync", &window]).status().unwrap();
                    assert!(status.success(), "xdotool windowfocus {window}");
                    return window;
                }
            }
            assert!(Instant::now() < deadline, "no visible {class} window appeared");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}
