//! Tilix: terminals are opened with the `tilix -a ACTION` command line
//! (which hands the action to the running instance over D-Bus) and focused
//! with its `activate-terminal` action. Tilix names a terminal by a uuid it
//! shows only in the terminal's environment (`TILIX_ID`), so the command we
//! start reports it, with its pid, to a file of ours first. No send-text and
//! no read-back exist.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use zbus::zvariant::Value;

use super::dbus::{shell_quote, Bus};
use crate::control::{
    check_spawn_request, Capabilities, Direction, Discovery, Pane, PaneId, PaneInfo, Placement, SendMode, SpawnRequest,
    TerminalControl, TerminalKind,
};
use crate::error::{Result, TermError};
use crate::process::{hang_up, process_alive};
use crate::runner::{find_on_path, CommandRunner, Invocation, IpcConfig};

const KIND: TerminalKind = TerminalKind::Tilix;
const SERVICE: &str = "com.gexperts.Tilix";
const APP_PATH: &str = "/com/gexperts/Tilix";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TilixConfig {
    pub program: PathBuf,
    /// A D-Bus address; `None`: the session bus of our environment.
    pub bus_address: Option<String>,
    /// The X display for the `tilix` command line; `None`: ours.
    pub display: Option<String>,
    pub ipc: IpcConfig,
}

impl Default for TilixConfig {
    fn default() -> Self {
        TilixConfig { program: PathBuf::from("tilix"), bus_address: None, display: None, ipc: IpcConfig::default() }
    }
}

pub struct Tilix {
    config: TilixConfig,
    bus: Bus,
    runner: CommandRunner,
    spawned: AtomicU64,
}

impl Tilix {
    pub fn new(config: TilixConfig) -> Self {
        let bus = Bus::new(KIND.name(), config.bus_address.clone(), config.ipc.timeout);
        let runner = CommandRunner::new(KIND.name(), config.ipc);
        Tilix { config, bus, runner, spawned: AtomicU64::new(0) }
    }

    fn command_line(&self) -> Invocation {
        let mut invocation = Invocation::new(&self.config.program);
        if let Some(address) = &self.config.bus_address {
            invocation = invocation.env("DBUS_SESSION_BUS_ADDRESS", address);
        }
        if let Some(display) = &self.config.display {
            invocation = invocation.env("DISPLAY", display);
        }
        invocation
    }

    async fn running(&self) -> Result<()> {
        let names = self.bus.names_with_prefix(SERVICE).await?;
        if names.iter().any(|n| n == SERVICE) {
            Ok(())
        } else {
            Err(KIND.not_supported("control (no Tilix is running on this session bus)"))
        }
    }

    async fn activate_terminal(&self, uuid: &str) -> Result<()> {
        let parameters = vec![Value::from(uuid)];
        let platform: HashMap<&str, Value> = HashMap::new();
        self.bus
            .call(SERVICE, APP_PATH, "org.gtk.Actions", "Activate", &("activate-terminal", parameters, platform))
            .await
    }

    fn report_path(&self) -> PathBuf {
        let n = self.spawned.fetch_add(1, Ordering::Relaxed);
        std::env::temp_dir().join(format!("bosun-tilix-{}-{n}", std::process::id()))
    }

    /// Waits for the new terminal's report (`UUID PID`).
    async fn read_report(&self, path: &Path) -> Result<(String, u32)> {
        let deadline = Instant::now() + self.config.ipc.timeout;
        loop {
            if let Ok(text) = tokio::fs::read_to_string(path).await {
                if let Some((uuid, pid)) = text.trim().split_once(' ') {
                    let _ = tokio::fs::remove_file(path).await;
                    let pid =
                        pid.parse().map_err(|_| TermError::Ipc(format!("the Tilix terminal reported {text:?}")))?;
                    return Ok((uuid.to_string(), pid));
                }
            }
            if Instant::now() > deadline {
                let _ = tokio::fs::remove_file(path).await;
                return Err(TermError::Timeout {
                    what: "the new Tilix terminal to start".into(),
                    after: self.config.ipc.timeout,
                    attempts: 1,
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn endpoint(pane: &PaneId) -> String {
        format!("tilix://terminal/{pane}")
    }
}

/// A Tilix terminal uuid: hex and dashes, nothing a match could misread.
fn check_uuid(pane: &PaneId) -> Result<()> {
    let ok = pane.as_str().len() == 36 && pane.as_str().bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(TermError::Invalid(format!("{pane:?} is not a Tilix terminal id")))
    }
}

/// The terminal's own process: the one Tilix started with this TILIX_ID.
fn find_terminal_process(uuid: &str) -> Option<u32> {
    let needle = format!("TILIX_ID={uuid}");
    let entries = std::fs::read_dir("/proc").ok()?;
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else { continue };
        if environ.split(|&b| b == 0).any(|var| var == needle.as_bytes()) && process_alive(pid) {
            let parent_is_tilix = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| stat.rsplit(')').next().and_then(|r| r.split_whitespace().nth(1)).map(str::to_string))
                .and_then(|ppid| std::fs::read_to_string(format!("/proc/{ppid}/comm")).ok())
                .is_some_and(|comm| comm.trim() == "tilix");
            if parent_is_tilix {
                return Some(pid);
            }
            found.push(pid);
        }
    }
    // Without the parent to tell (another pid namespace), the oldest.
    found.into_iter().min()
}

impl TerminalControl for Tilix {
    fn kind(&self) -> TerminalKind {
        KIND
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            spawn: true,
            split: true,
            focus: true,
            send_text: false,
            read_text: false,
            clipboard_read: false,
            clipboard_write: false,
            cwd_sync: false,
            bracketed_paste: false,
            max_clipboard_kb: 0,
            requires_opt_in: false,
            notes: "tilix -a for windows, tabs (Tilix sessions) and splits, D-Bus activate-terminal for focus; \
                    close hangs up the terminal's process; panes are found through TILIX_ID in /proc, so only on \
                    this host. No send-text, no read-back, no focus query."
                .into(),
            risk_flags: vec![],
        }
    }

    fn discover(&self) -> BoxFuture<'_, Discovery> {
        Box::pin(async move {
            let mut discovery =
                Discovery { installed: find_on_path(&self.config.program).is_some(), ..Discovery::default() };
            match self.running().await {
                Ok(()) => {
                    discovery.running = true;
                    let listed: Result<Vec<String>> =
                        self.bus.call(SERVICE, APP_PATH, "org.gtk.Actions", "List", &()).await;
                    match listed {
                        Ok(actions) if actions.iter().any(|a| a == "activate-terminal") => discovery.reachable = true,
                        Ok(_) => discovery.notes.push("Tilix has no activate-terminal action".into()),
                        Err(e) => discovery.notes.push(format!("Tilix did not answer: {e}")),
                    }
                }
                Err(e) => discovery.notes.push(e.to_string()),
            }
            if discovery.installed {
                match self.runner.run(&self.command_line().arg("--version")).await {
                    Ok(out) => {
                        discovery.version = out
                            .stdout_text()
                            .lines()
                            .find_map(|l| l.trim().strip_prefix("Tilix version:").map(|v| v.trim().to_string()))
                    }
                    Err(e) => discovery.notes.push(format!("tilix --version: {e}")),
                }
            }
            discovery
        })
    }

    fn spawn(&self, request: SpawnRequest) -> BoxFuture<'_, Result<Pane>> {
        Box::pin(async move {
            check_spawn_request(&request)?;
            self.running().await?;
            let action = match &request.placement {
                Placement::Window => "app-new-window",
                Placement::Tab => "app-new-session",
                Placement::Split { target, direction } => {
                    check_uuid(target)?;
                    // session-add-* splits the focused terminal.
                    self.activate_terminal(target.as_str()).await?;
                    match direction {
                        Direction::Right => "session-add-right",
                        Direction::Down => "session-add-down",
                    }
                }
            };
            let report = self.report_path();
            // `-w` is not honoured for a new window, so the wrapper changes
            // directory itself.
            let cwd = request.cwd.as_ref().map(|c| c.to_string_lossy().into_owned()).unwrap_or_default();
            let mut words: Vec<String> = vec![
                "sh".into(),
                "-c".into(),
                "printf '%s %s\\n' \"$TILIX_ID\" \"$$\" > \"$0\"; if [ -n \"$1\" ]; then cd -- \"$1\" || exit 1; fi; shift; exec \"$@\"".into(),
                report.to_string_lossy().into_owned(),
                cwd,
            ];
            if !request.env.is_empty() {
                words.push("env".into());
                words.extend(request.env.iter().map(|(k, v)| format!("{k}={v}")));
            }
            if request.command.is_empty() {
                words.push(std::env::var("SHELL").unwrap_or_else(|_| "/bin/sh".into()));
            } else {
                words.extend(request.command.iter().cloned());
            }
            let command: Vec<String> = words.iter().map(|w| shell_quote(w)).collect();
            let mut invocation = self.command_line().arg("-a").arg(action);
            if let Some(cwd) = &request.cwd {
                invocation = invocation.arg("-w").arg(cwd);
            }
            let invocation = invocation.arg("-e").arg(command.join(" ")).not_idempotent();
            self.runner.run_checked(&invocation).await?;
            let (uuid, pid) = self.read_report(&report).await?;
            let id = PaneId::new(uuid);
            Ok(Pane { endpoint: Self::endpoint(&id), id, pid: Some(pid), title: None })
        })
    }

    fn focus<'a>(&'a self, pane: &'a PaneId) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            check_uuid(pane)?;
            find_terminal_process(pane.as_str()).ok_or(TermError::PaneGone)?;
            self.activate_terminal(pane.as_str()).await
        })
    }

    fn send_text<'a>(&'a self, _pane: &'a PaneId, _text: &'a str, _mode: SendMode) -> BoxFuture<'a, Result<()>> {
        Box::pin(async { Err(KIND.not_supported("send_text")) })
    }

    fn read_text<'a>(&'a self, _pane: &'a PaneId) -> BoxFuture<'a, Result<String>> {
        Box::pin(async { Err(KIND.not_supported("read_text")) })
    }

    fn close<'a>(&'a self, pane: &'a PaneId) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            check_uuid(pane)?;
            let pid = find_terminal_process(pane.as_str()).ok_or(TermError::PaneGone)?;
            // Tilix closes a terminal whose process ends.
            hang_up(pid)
        })
    }

    fn describe<'a>(&'a self, pane: &'a PaneId) -> BoxFuture<'a, Result<PaneInfo>> {
        Box::pin(async move {
            check_uuid(pane)?;
            let pid = find_terminal_process(pane.as_str()).ok_or(TermError::PaneGone)?;
            Ok(PaneInfo {
                id: pane.clone(),
                endpoint: Self::endpoint(pane),
                pid: Some(pid),
                title: None,
                cwd: std::fs::read_link(format!("/proc/{pid}/cwd")).ok(),
                focused: None,
            })
        })
    }

    fn focused_pane(&self) -> BoxFuture<'_, Result<Option<PaneId>>> {
        Box::pin(async { Err(KIND.not_supported("asking which terminal has the focus")) })
    }
}
