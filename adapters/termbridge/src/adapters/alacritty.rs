//! Alacritty: `alacritty msg create-window` opens a window; that is all its
//! IPC can do, so every other operation is `NotSupported`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::control::{
    check_spawn_request, Capabilities, Discovery, Pane, PaneId, PaneInfo, Placement, SendMode, SpawnRequest,
    TerminalControl, TerminalKind,
};
use crate::error::Result;
use crate::runner::{find_on_path, CommandRunner, Invocation, IpcConfig};

const KIND: TerminalKind = TerminalKind::Alacritty;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AlacrittyConfig {
    pub program: PathBuf,
    /// The IPC socket; `None` takes `ALACRITTY_SOCKET` from the environment.
    pub socket: Option<PathBuf>,
    pub ipc: IpcConfig,
}

impl Default for AlacrittyConfig {
    fn default() -> Self {
        AlacrittyConfig { program: PathBuf::from("alacritty"), socket: None, ipc: IpcConfig::default() }
    }
}

pub struct Alacritty {
    config: AlacrittyConfig,
    runner: CommandRunner,
    windows_opened: AtomicU64,
}

impl Alacritty {
    pub fn new(config: AlacrittyConfig) -> Self {
        let runner = CommandRunner::new(KIND.name(), config.ipc);
        Alacritty { config, runner, windows_opened: AtomicU64::new(0) }
    }

    fn socket(&self) -> Option<PathBuf> {
        self.config.socket.clone().or_else(|| std::env::var_os("ALACRITTY_SOCKET").map(PathBuf::from))
    }
}

impl TerminalControl for Alacritty {
    fn kind(&self) -> TerminalKind {
        KIND
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            spawn: true,
            split: false,
            focus: false,
            send_text: false,
            read_text: false,
            clipboard_read: false,
            clipboard_write: false,
            cwd_sync: false,
            bracketed_paste: false,
            max_clipboard_kb: 0,
            requires_opt_in: false,
            notes: "alacritty msg create-window only: no pane ids, so a window cannot be found again.".into(),
            risk_flags: vec![],
        }
    }

    fn discover(&self) -> BoxFuture<'_, Discovery> {
        Box::pin(async move {
            let mut discovery =
                Discovery { installed: find_on_path(&self.config.program).is_some(), ..Discovery::default() };
            if !discovery.installed {
                discovery.notes.push(format!("{} is not on PATH", self.config.program.display()));
                return discovery;
            }
            match self.runner.run_checked(&Invocation::new(&self.config.program).arg("--version")).await {
                Ok(out) => discovery.version = out.stdout_text().split_whitespace().nth(1).map(str::to_string),
                Err(e) => discovery.notes.push(format!("alacritty --version: {e}")),
            }
            match self.socket() {
                Some(socket) => {
                    discovery.running = socket.exists();
                    // Connecting is all the IPC allows short of opening a window.
                    discovery.reachable = std::os::unix::net::UnixStream::connect(&socket).is_ok();
                }
                None => discovery.notes.push("no socket configured and ALACRITTY_SOCKET is not set".into()),
            }
            discovery
        })
    }

    fn spawn(&self, request: SpawnRequest) -> BoxFuture<'_, Result<Pane>> {
        Box::pin(async move {
            check_spawn_request(&request)?;
            if !matches!(request.placement, Placement::Window) {
                return Err(KIND.not_supported("tabs and splits"));
            }
            let socket = self.socket().ok_or_else(|| KIND.not_supported("IPC (no socket and no ALACRITTY_SOCKET)"))?;
            let mut invocation = Invocation::new(&self.config.program).arg("msg").arg("--socket").arg(&socket);
            invocation = invocation.arg("create-window");
            if let Some(cwd) = &request.cwd {
                invocation = invocation.arg("--working-directory").arg(cwd);
            }
            if !request.env.is_empty() && request.command.is_empty() {
                return Err(KIND.not_supported("an environment for the default shell (name a command)"));
            }
            if !request.command.is_empty() {
                invocation = invocation.arg("-e");
                if !request.env.is_empty() {
                    invocation = invocation.arg("env").args(request.env.iter().map(|(k, v)| format!("{k}={v}")));
                }
                invocation = invocation.args(&request.command);
            }
            self.runner.run_checked(&invocation.not_idempotent()).await?;
            let n = self.windows_opened.fetch_add(1, Ordering::Relaxed);
            // Alacritty names no window it opens; this id is ours only.
            let id = PaneId::new(format!("window-{n}"));
            Ok(Pane { endpoint: format!("alacritty://{}/{id}", socket.display()), id, pid: None, title: None })
        })
    }

    fn focus<'a>(&'a self, _pane: &'a PaneId) -> BoxFuture<'a, Result<()>> {
        Box::pin(async { Err(KIND.not_supported("focus")) })
    }

    fn send_text<'a>(&'a self, _pane: &'a PaneId, _text: &'a str, _mode: SendMode) -> BoxFuture<'a, Result<()>> {
        Box::pin(async { Err(KIND.not_supported("send_text")) })
    }

    fn read_text<'a>(&'a self, _pane: &'a PaneId) -> BoxFuture<'a, Result<String>> {
        Box::pin(async { Err(KIND.not_supported("read_text")) })
    }

    fn close<'a>(&'a self, _pane: &'a PaneId) -> BoxFuture<'a, Result<()>> {
        Box::pin(async { Err(KIND.not_supported("close")) })
    }

    fn describe<'a>(&'a self, _pane: &'a PaneId) -> BoxFuture<'a, Result<PaneInfo>> {
        Box::pin(async { Err(KIND.not_supported("describe")) })
    }

    fn focused_pane(&self) -> BoxFuture<'_, Result<Option<PaneId>>> {
        Box::pin(async { Err(KIND.not_supported("focused_pane")) })
    }
}
