//! WezTerm through `wezterm cli`, one process per call (through the
//! runner). The program is `wezterm` unless `BOSUN_WEZTERM_CLI` or the
//! config names another.

use std::path::PathBuf;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::control::{
    check_spawn_request, Capabilities, Direction, Discovery, Pane, PaneId, PaneInfo, Placement, RiskFlag, SendMode,
    SpawnRequest, TerminalControl, TerminalKind,
};
use crate::error::{Result, TermError};
use crate::runner::{find_on_path, CommandOutput, CommandRunner, Invocation, IpcConfig};

const KIND: TerminalKind = TerminalKind::Wezterm;
pub const PROGRAM_ENV: &str = "BOSUN_WEZTERM_CLI";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct WeztermConfig {
    /// `None`: `BOSUN_WEZTERM_CLI`, else `wezterm`.
    pub program: Option<PathBuf>,
    pub ipc: IpcConfig,
}

pub struct Wezterm {
    program: PathBuf,
    runner: CommandRunner,
}

#[derive(Debug, Clone, Deserialize)]
struct ListedPane {
    pane_id: u64,
    #[serde(default)]
    title: Option<String>,
    /// A `file://host/path` URL, or empty.
    #[serde(default)]
    cwd: Option<String>,
    #[serde(default)]
    is_active: bool,
}

impl Wezterm {
    pub fn new(config: WeztermConfig) -> Self {
        let program = config
            .program
            .or_else(|| std::env::var_os(PROGRAM_ENV).filter(|p| !p.is_empty()).map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("wezterm"));
        Wezterm { program, runner: CommandRunner::new(KIND.name(), config.ipc) }
    }

    fn cli(&self) -> Invocation {
        Invocation::new(&self.program).arg("cli")
    }

    /// Runs a `wezterm cli` command; a failure naming a missing pane is
    /// `PaneGone`.
    async fn run(&self, invocation: Invocation) -> Result<CommandOutput> {
        let output = self.runner.run(&invocation).await?;
        if output.success() {
            return Ok(output);
        }
        let stderr = output.stderr_text();
        let lowered = stderr.to_lowercase();
        if lowered.contains("not found") || lowered.contains("no such pane") || lowered.contains("invalid pane") {
            return Err(TermError::PaneGone);
        }
        Err(TermError::Ipc(format!("wezterm cli exited with {:?}: {stderr}", output.code)))
    }

    async fn list(&self) -> Result<Vec<ListedPane>> {
        let output = self.run(self.cli().args(["list", "--format", "json"])).await?;
        serde_json::from_slice(&output.stdout).map_err(|e| TermError::Ipc(format!("wezterm cli list: {e}")))
    }

    fn endpoint(pane: &PaneId) -> String {
        format!("wezterm://pane/{pane}")
    }
}

fn pane_number(pane: &PaneId) -> Result<u64> {
    pane.as_str().parse().map_err(|_| TermError::Invalid(format!("{pane:?} is not a WezTerm pane id")))
}

fn cwd_from_url(url: &str) -> Option<PathBuf> {
    let rest = url.strip_prefix("file://")?;
    let path = &rest[rest.find('/')?..];
    Some(PathBuf::from(percent_encoding::percent_decode_str(path).decode_utf8_lossy().into_owned()))
}

impl TerminalControl for Wezterm {
    fn kind(&self) -> TerminalKind {
        KIND
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            spawn: true,
            split: true,
            focus: true,
            send_text: true,
            read_text: true,
            clipboard_read: false,
            clipboard_write: false,
            cwd_sync: true,
            bracketed_paste: true,
            max_clipboard_kb: 75,
            requires_opt_in: false,
            notes: "wezterm cli, one process per call. The spawn environment is set through env(1) in front of \
                    the command. Panes report no pid."
                .into(),
            risk_flags: vec![RiskFlag::InjectsKeystrokes, RiskFlag::ReadsScreen, RiskFlag::SocketGrantsFullControl],
        }
    }

    fn discover(&self) -> BoxFuture<'_, Discovery> {
        Box::pin(async move {
            let mut discovery = Discovery::default();
            if find_on_path(&self.program).is_none() {
                discovery.notes.push(format!("{} is not on PATH", self.program.display()));
                return discovery;
            }
            discovery.installed = true;
            match self.runner.run_checked(&Invocation::new(&self.program).arg("--version")).await {
                Ok(out) => discovery.version = out.stdout_text().split_whitespace().nth(1).map(str::to_string),
                Err(e) => discovery.notes.push(format!("wezterm --version: {e}")),
            }
            match self.list().await {
                Ok(_) => {
                    discovery.running = true;
                    discovery.reachable = true;
                }
                Err(e) => discovery.notes.push(format!("wezterm cli list: {e}")),
            }
            discovery
        })
    }

    fn spawn(&self, request: SpawnRequest) -> BoxFuture<'_, Result<Pane>> {
        Box::pin(async move {
            check_spawn_request(&request)?;
            let mut invocation = match &request.placement {
                Placement::Window => self.cli().args(["spawn", "--new-window"]),
                Placement::Tab => self.cli().arg("spawn"),
                Placement::Split { target, direction } => {
                    let side = match direction {
                        Direction::Right => "--right",
                        Direction::Down => "--bottom",
                    };
                    self.cli().args(["split-pane", "--pane-id", &pane_number(target)?.to_string(), side])
                }
            };
            if let Some(cwd) = &request.cwd {
                invocation = invocation.arg("--cwd").arg(cwd);
            }
            if !request.env.is_empty() && request.command.is_empty() {
                return Err(KIND.not_supported("an environment for the default shell (name a command)"));
            }
            if !request.command.is_empty() {
                invocation = invocation.arg("--");
                if !request.env.is_empty() {
                    invocation = invocation.arg("env").args(request.env.iter().map(|(k, v)| format!("{k}={v}")));
                }
                invocation = invocation.args(&request.command);
            }
            let output = self.run(invocation.not_idempotent()).await?;
            let text = output.stdout_text();
            let id = text.trim();
            if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
                return Err(TermError::Ipc(format!("wezterm printed {id:?} for the new pane")));
            }
            let id = PaneId::new(id);
            let title = self.list().await.ok().and_then(|panes| {
                panes.into_iter().find(|p| p.pane_id.to_string() == id.as_str()).and_then(|p| p.title)
            });
            Ok(Pane { endpoint: Self::endpoint(&id), id, pid: None, title })
        })
    }

    fn focus<'a>(&'a self, pane: &'a PaneId) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let n = pane_number(pane)?.to_string();
            self.run(self.cli().args(["activate-pane", "--pane-id", &n])).await.map(drop)
        })
    }

    fn send_text<'a>(&'a self, pane: &'a PaneId, text: &'a str, mode: SendMode) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let n = pane_number(pane)?.to_string();
            // On stdin, so no text is mistaken for an option and no length
            // limit of argv applies.
            let send = |data: String, paste: bool| {
                let mut invocation = self.cli().args(["send-text", "--pane-id", &n]);
                if !paste {
                    invocation = invocation.arg("--no-paste");
                }
                invocation.stdin(data.into_bytes()).not_idempotent()
            };
            if mode.paste {
                // wezterm brackets the text itself if the program enabled
                // bracketed paste; Enter must come outside the paste.
                self.run(send(text.to_string(), true)).await?;
                if mode.enter {
                    self.run(send("\r".into(), false)).await?;
                }
            } else {
                let mut data = text.to_string();
                if mode.enter {
                    data.push('\r');
                }
                self.run(send(data, false)).await?;
            }
            Ok(())
        })
    }

    fn read_text<'a>(&'a self, pane: &'a PaneId) -> BoxFuture<'a, Result<String>> {
        Box::pin(async move {
            let n = pane_number(pane)?.to_string();
            Ok(self.run(self.cli().args(["get-text", "--pane-id", &n])).await?.stdout_text())
        })
    }

    fn close<'a>(&'a self, pane: &'a PaneId) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let n = pane_number(pane)?.to_string();
            self.run(self.cli().args(["kill-pane", "--pane-id", &n])).await.map(drop)
        })
    }

    fn describe<'a>(&'a self, pane: &'a PaneId) -> BoxFuture<'a, Result<PaneInfo>> {
        Box::pin(async move {
            let n = pane_number(pane)?;
            let listed = self.list().await?.into_iter().find(|p| p.pane_id == n).ok_or(TermError::PaneGone)?;
            Ok(PaneInfo {
                id: pane.clone(),
                endpoint: Self::endpoint(pane),
                pid: None,
                title: listed.title,
                cwd: listed.cwd.as_deref().and_then(cwd_from_url),
                focused: Some(listed.is_active),
            })
        })
    }

    fn focused_pane(&self) -> BoxFuture<'_, Result<Option<PaneId>>> {
        Box::pin(async move {
            let output = self.run(self.cli().args(["list-clients", "--format", "json"])).await?;
            let clients: Value = serde_json::from_slice(&output.stdout)
                .map_err(|e| TermError::Ipc(format!("wezterm cli list-clients: {e}")))?;
            Ok(clients
                .as_array()
                .and_then(|c| c.iter().find_map(|client| client.get("focused_pane_id").and_then(Value::as_u64)))
                .map(|id| PaneId::new(id.to_string())))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cwd_urls() {
        assert_eq!(cwd_from_url("file://host/tmp/a%20b"), Some(PathBuf::from("/tmp/a b")));
        assert_eq!(cwd_from_url(""), None);
    }
}
