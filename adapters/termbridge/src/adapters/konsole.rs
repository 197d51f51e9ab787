//! Konsole over D-Bus: a tab is a Konsole session (`/Sessions/N`), opened,
//! listed and made current through `org.kde.konsole.Window`; splits and
//! focus moves are the main window's actions. Konsole 22.12 has no text
//! read-back, no per-session environment and no D-Bus call for a new window.

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use super::dbus::{shell_quote, Bus};
use crate::control::{
    check_spawn_request, Capabilities, Direction, Discovery, Pane, PaneId, PaneInfo, Placement, RiskFlag, SendMode,
    SpawnRequest, TerminalControl, TerminalKind,
};
use crate::error::{Result, TermError};
use crate::process::{hang_up, process_alive};
use crate::runner::{find_on_path, CommandRunner, Invocation, IpcConfig};

const KIND: TerminalKind = TerminalKind::Konsole;
const WINDOW_INTERFACE: &str = "org.kde.konsole.Window";
const SESSION_INTERFACE: &str = "org.kde.konsole.Session";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct KonsoleConfig {
    /// `org.kde.konsole-PID`; `None`: the first Konsole on the bus.
    pub service: Option<String>,
    pub window_path: String,
    pub main_window_path: String,
    /// A D-Bus address; `None`: the session bus of our environment.
    pub bus_address: Option<String>,
    pub program: std::path::PathBuf,
    pub ipc: IpcConfig,
}

impl Default for KonsoleConfig {
    fn default() -> Self {
        KonsoleConfig {
            service: None,
            window_path: "/Windows/1".into(),
            main_window_path: "/konsole/MainWindow_1".into(),
            bus_address: None,
            program: "konsole".into(),
            ipc: IpcConfig::default(),
        }
    }
}

pub struct Konsole {
    config: KonsoleConfig,
    bus: Bus,
    runner: CommandRunner,
}

impl Konsole {
    pub fn new(config: KonsoleConfig) -> Self {
        let bus = Bus::new(KIND.name(), config.bus_address.clone(), config.ipc.timeout);
        let runner = CommandRunner::new(KIND.name(), config.ipc);
        Konsole { config, bus, runner }
    }

    async fn service(&self) -> Result<String> {
        if let Some(service) = &self.config.service {
            return Ok(service.clone());
        }
        let mut names = self.bus.names_with_prefix("org.kde.konsole-").await?;
        names.sort();
        names
            .into_iter()
            .next()
            .ok_or_else(|| KIND.not_supported("control (no Konsole is running on this session bus)"))
    }

    async fn window_call<B, R>(&self, method: &str, body: &B) -> Result<R>
    where
        B: serde::Serialize + zbus::zvariant::DynamicType,
        R: serde::de::DeserializeOwned + zbus::zvariant::Type,
    {
        let service = self.service().await?;
        self.bus.call(&service, &self.config.window_path, WINDOW_INTERFACE, method, body).await
    }

    async fn session_call<B, R>(&self, session: u32, method: &str, body: &B) -> Result<R>
    where
        B: serde::Serialize + zbus::zvariant::DynamicType,
        R: serde::de::DeserializeOwned + zbus::zvariant::Type,
    {
        let service = self.service().await?;
        self.bus.call(&service, &format!("/Sessions/{session}"), SESSION_INTERFACE, method, body).await
    }

    async fn activate_action(&self, action: &str) -> Result<()> {
        let service = self.service().await?;
        let done: bool = self
            .bus
            .call(&service, &self.config.main_window_path, "org.kde.KMainWindow", "activateAction", &(action,))
            .await?;
        if done {
            Ok(())
        } else {
            Err(TermError::Ipc(format!("Konsole did not run its {action} action")))
        }
    }

    async fn sessions(&self) -> Result<Vec<u32>> {
        let list: Vec<String> = self.window_call("sessionList", &()).await?;
        Ok(list.iter().filter_map(|s| s.parse().ok()).collect())
    }

    /// The session, if Konsole still lists it and its shell lives.
    async fn live_session(&self, pane: &PaneId) -> Result<(u32, u32)> {
        let session = session_number(pane)?;
        if !self.sessions().await?.contains(&session) {
            return Err(TermError::PaneGone);
        }
        let pid: i32 = self.session_call(session, "processId", &()).await?;
        let pid = u32::try_from(pid).map_err(|_| TermError::PaneGone)?;
        if !process_alive(pid) {
            return Err(TermError::PaneGone);
        }
        Ok((session, pid))
    }

    fn endpoint(pane: &PaneId) -> String {
        format!("konsole://session/{pane}")
    }
}

fn session_number(pane: &PaneId) -> Result<u32> {
    pane.as_str().parse().map_err(|_| TermError::Invalid(format!("{pane:?} is not a Konsole session number")))
}

/// The line typed into the new session's shell: Konsole starts the
/// profile's shell and cannot be given a command or environment for it.
fn shell_line(request: &SpawnRequest, cd_needed: bool) -> Result<Option<String>> {
    let mut parts = Vec::new();
    if cd_needed {
        if let Some(cwd) = &request.cwd {
            parts.push(format!("cd {}", shell_quote(&cwd.to_string_lossy())));
        }
    }
    if request.command.is_empty() {
        if !request.env.is_empty() {
            return Err(KIND.not_supported("an environment for the default shell (name a command)"));
        }
    } else {
        let mut words = vec!["exec".to_string()];
        if !request.env.is_empty() {
            words.push("env".into());
            words.extend(request.env.iter().map(|(k, v)| shell_quote(&format!("{k}={v}"))));
        }
        words.extend(request.command.iter().map(|w| shell_quote(w)));
        parts.push(words.join(" "));
    }
    Ok((!parts.is_empty()).then(|| parts.join(" && ")))
}

impl TerminalControl for Konsole {
    fn kind(&self) -> TerminalKind {
        KIND
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            spawn: true,
            split: true,
            focus: true,
            send_text: true,
            read_text: false,
            clipboard_read: false,
            clipboard_write: false,
            cwd_sync: false,
            bracketed_paste: true,
            max_clipboard_kb: 0,
            requires_opt_in: false,
            notes: "D-Bus. Tabs and splits only (no D-Bus call opens a window); the command and its environment \
                    are typed into the new session's shell; close hangs up the session's shell; no read-back. \
                    Paste markers are written by us, whether or not the program enabled bracketed paste."
                .into(),
            risk_flags: vec![RiskFlag::InjectsKeystrokes, RiskFlag::UnconfirmedDelivery],
        }
    }

    fn discover(&self) -> BoxFuture<'_, Discovery> {
        Box::pin(async move {
            let mut discovery =
                Discovery { installed: find_on_path(&self.config.program).is_some(), ..Discovery::default() };
            match self.service().await {
                Ok(service) => {
                    discovery.running = true;
                    match self.sessions().await {
                        Ok(_) => discovery.reachable = true,
                        Err(e) => discovery.notes.push(format!("{service} did not answer: {e}")),
                    }
                }
                Err(e) => discovery.notes.push(e.to_string()),
            }
            if discovery.installed {
                // Konsole's --version needs no display.
                let version =
                    Invocation::new(&self.config.program).arg("--version").env("QT_QPA_PLATFORM", "offscreen");
                match self.runner.run_checked(&version).await {
                    Ok(out) => discovery.version = out.stdout_text().split_whitespace().last().map(str::to_string),
                    Err(e) => discovery.notes.push(format!("konsole --version: {e}")),
                }
            }
            discovery
        })
    }

    fn spawn(&self, request: SpawnRequest) -> BoxFuture<'_, Result<Pane>> {
        Box::pin(async move {
            check_spawn_request(&request)?;
            let (session, cd_needed) = match &request.placement {
                Placement::Window => return Err(KIND.not_supported("opening a window over D-Bus")),
                Placement::Tab => {
                    let cwd = request.cwd.as_ref().map(|c| c.to_string_lossy().into_owned()).unwrap_or_default();
                    let session: i32 = self.window_call("newSession", &("", cwd.as_str())).await?;
                    (session, false)
                }
                Placement::Split { target, direction } => {
                    let (target, _) = self.live_session(target).await?;
                    let before = self.sessions().await?;
                    self.window_call::<_, ()>("setCurrentSession", &(target as i32,)).await?;
                    self.activate_action(match direction {
                        Direction::Right => "split-view-left-right",
                        Direction::Down => "split-view-top-bottom",
                    })
                    .await?;
                    let after = self.sessions().await?;
                    let new = after.into_iter().find(|s| !before.contains(s));
                    let new = new.ok_or_else(|| TermError::Ipc("Konsole split but listed no new session".into()))?;
                    (new as i32, true)
                }
            };
            let session =
                u32::try_from(session).map_err(|_| TermError::Ipc(format!("Konsole answered session {session}")))?;
            if let Some(line) = shell_line(&request, cd_needed)? {
                self.session_call::<_, ()>(session, "runCommand", &(line.as_str(),)).await?;
            }
            let pid: i32 = self.session_call(session, "processId", &()).await?;
            let title: Option<String> = self.session_call(session, "title", &(1i32,)).await.ok();
            let id = PaneId::new(session.to_string());
            Ok(Pane { endpoint: Self::endpoint(&id), id, pid: u32::try_from(pid).ok().filter(|p| *p > 0), title })
        })
    }

    fn focus<'a>(&'a self, pane: &'a PaneId) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let (session, _) = self.live_session(pane).await?;
            self.window_call("setCurrentSession", &(session as i32,)).await
        })
    }

    fn send_text<'a>(&'a self, pane: &'a PaneId, text: &'a str, mode: SendMode) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let (session, _) = self.live_session(pane).await?;
            let mut data = if mode.paste {
                format!("\x1b[200~{}\x1b[201~", text.replace("\x1b[201~", ""))
            } else {
                text.to_string()
            };
            if mode.enter {
                data.push('\r');
            }
            self.session_call(session, "sendText", &(data.as_str(),)).await
        })
    }

    fn read_text<'a>(&'a self, _pane: &'a PaneId) -> BoxFuture<'a, Result<String>> {
        Box::pin(async { Err(KIND.not_supported("read_text")) })
    }

    fn close<'a>(&'a self, pane: &'a PaneId) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let (_, pid) = self.live_session(pane).await?;
            // Konsole closes a session whose shell ends.
            hang_up(pid)
        })
    }

    fn describe<'a>(&'a self, pane: &'a PaneId) -> BoxFuture<'a, Result<PaneInfo>> {
        Box::pin(async move {
            let (session, pid) = self.live_session(pane).await?;
            let current: i32 = self.window_call("currentSession", &()).await?;
            let title: Option<String> = self.session_call(session, "title", &(1i32,)).await.ok();
            Ok(PaneInfo {
                id: pane.clone(),
                endpoint: Self::endpoint(pane),
                pid: Some(pid),
                title,
                cwd: std::fs::read_link(format!("/proc/{pid}/cwd")).ok(),
                focused: Some(current == session as i32),
            })
        })
    }

    fn focused_pane(&self) -> BoxFuture<'_, Result<Option<PaneId>>> {
        Box::pin(async move {
            let current: i32 = self.window_call("currentSession", &()).await?;
            Ok((current > 0).then(|| PaneId::new(current.to_string())))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn the_typed_line_quotes_every_word() {
        let request = SpawnRequest {
            command: vec!["sh".into(), "-c".into(), "echo 'hi' > /tmp/x".into()],
            cwd: Some("/tmp/a b".into()),
            env: BTreeMap::from([("K".to_string(), "v w".to_string())]),
            placement: Placement::Tab,
        };
        assert_eq!(
            shell_line(&request, true).unwrap().unwrap(),
            "cd '/tmp/a b' && exec env 'K=v w' sh -c 'echo '\\''hi'\\'' > /tmp/x'"
        );
        assert_eq!(
            shell_line(&request, false).unwrap().unwrap(),
            "exec env 'K=v w' sh -c 'echo '\\''hi'\\'' > /tmp/x'"
        );
    }
}
