//! The port every terminal adapter implements, and the types it speaks.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::error::{Result, TermError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TerminalKind {
    Tmux,
    Kitty,
    Wezterm,
    Alacritty,
    Konsole,
    Tilix,
}

impl TerminalKind {
    pub const ALL: [TerminalKind; 6] = [
        TerminalKind::Tmux,
        TerminalKind::Kitty,
        TerminalKind::Wezterm,
        TerminalKind::Alacritty,
        TerminalKind::Konsole,
        TerminalKind::Tilix,
    ];

    pub fn name(self) -> &'static str {
        match self {
            TerminalKind::Tmux => "tmux",
            TerminalKind::Kitty => "kitty",
            TerminalKind::Wezterm => "wezterm",
            TerminalKind::Alacritty => "alacritty",
            TerminalKind::Konsole => "konsole",
            TerminalKind::Tilix => "tilix",
        }
    }

    /// The error for an operation this terminal cannot do at all.
    pub fn not_supported(self, what: &str) -> TermError {
        TermError::not_supported(self.name(), what)
    }
}

impl fmt::Display for TerminalKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Dangers a user should be told about before enabling a terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RiskFlag {
    /// Text we send is typed into whatever program runs in the pane.
    InjectsKeystrokes,
    /// We can read what is on screen, secrets included.
    ReadsScreen,
    /// The control socket gives anyone who can open it the same power.
    SocketGrantsFullControl,
    /// We cannot confirm that sent text arrived (the terminal never replies).
    UnconfirmedDelivery,
    /// The OS clipboard is shared with every other application.
    SharedClipboard,
}

/// What a terminal can do, known without asking it (per kind and version
/// we support).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    pub spawn: bool,
    pub split: bool,
    pub focus: bool,
    pub send_text: bool,
    pub read_text: bool,
    pub clipboard_read: bool,
    pub clipboard_write: bool,
    pub cwd_sync: bool,
    pub bracketed_paste: bool,
    pub max_clipboard_kb: u32,
    /// The user has to switch remote control on in the terminal's config.
    pub requires_opt_in: bool,
    pub notes: String,
    pub risk_flags: Vec<RiskFlag>,
}

/// What discovery found, for the daemon to show and decide on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Discovery {
    /// The terminal's program is on PATH (or configured and present).
    pub installed: bool,
    /// An instance of it runs that we could find.
    pub running: bool,
    /// We could talk to that instance just now.
    pub reachable: bool,
    pub version: Option<String>,
    pub notes: Vec<String>,
}

/// A terminal-specific pane name: `%3` for tmux, `7` for a kitty window,
/// a session uuid for Tilix.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PaneId(pub String);

impl PaneId {
    pub fn new(id: impl Into<String>) -> Self {
        PaneId(id.into())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PaneId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Right,
    Down,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum Placement {
    Window,
    Tab,
    Split { target: PaneId, direction: Direction },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpawnRequest {
    /// Program and arguments; empty means the terminal's default shell.
    pub command: Vec<String>,
    pub cwd: Option<PathBuf>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    pub placement: Placement,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pane {
    pub id: PaneId,
    /// Where the pane lives, e.g. `tmux://%3`, `kitty://window/7`.
    pub endpoint: String,
    pub pid: Option<u32>,
    pub title: Option<String>,
}

/// A pane's identity as the terminal reports it now: a caller keeps the pid
/// it saw at spawn and compares, so a pane id reused after a restart of the
/// terminal is not taken for the old pane.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaneInfo {
    pub id: PaneId,
    pub endpoint: String,
    pub pid: Option<u32>,
    pub title: Option<String>,
    pub cwd: Option<PathBuf>,
    pub focused: Option<bool>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendMode {
    /// Wrap the text in bracketed-paste markers, where the program in the
    /// pane enabled that mode (so a shell does not run pasted lines).
    pub paste: bool,
    /// Press Enter after the text.
    pub enter: bool,
}

/// The one port to a terminal emulator. Object-safe: the daemon holds
/// `Arc<dyn TerminalControl>`.
///
/// A terminal or CLI that is missing, or an operation the terminal cannot
/// do, is always `TermError::NotSupported`, never a silent fallback.
pub trait TerminalControl: Send + Sync {
    fn kind(&self) -> TerminalKind;
    fn capabilities(&self) -> Capabilities;
    fn discover(&self) -> BoxFuture<'_, Discovery>;
    fn spawn(&self, request: SpawnRequest) -> BoxFuture<'_, Result<Pane>>;
    fn focus<'a>(&'a self, pane: &'a PaneId) -> BoxFuture<'a, Result<()>>;
    fn send_text<'a>(&'a self, pane: &'a PaneId, text: &'a str, mode: SendMode) -> BoxFuture<'a, Result<()>>;
    fn read_text<'a>(&'a self, pane: &'a PaneId) -> BoxFuture<'a, Result<String>>;
    fn close<'a>(&'a self, pane: &'a PaneId) -> BoxFuture<'a, Result<()>>;
    /// The pane's identity, or `PaneGone`.
    fn describe<'a>(&'a self, pane: &'a PaneId) -> BoxFuture<'a, Result<PaneInfo>>;
    /// The pane that has the focus, where the terminal can tell.
    fn focused_pane(&self) -> BoxFuture<'_, Result<Option<PaneId>>>;

    /// Puts `text` on the clipboard of whoever looks at `pane` through this
    /// terminal (its own buffer, and OSC 52 to the screens showing it);
    /// returns how many screens it was sent to.
    fn clipboard_write<'a>(&'a self, pane: &'a PaneId, text: &'a str) -> BoxFuture<'a, Result<usize>> {
        let _ = (pane, text);
        Box::pin(async move { Err(self.kind().not_supported("clipboard_write")) })
    }

    /// The clipboard this terminal keeps for `pane`.
    fn clipboard_read<'a>(&'a self, pane: &'a PaneId) -> BoxFuture<'a, Result<String>> {
        let _ = pane;
        Box::pin(async move { Err(self.kind().not_supported("clipboard_read")) })
    }

    fn exists<'a>(&'a self, pane: &'a PaneId) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            match self.describe(pane).await {
                Ok(_) => Ok(true),
                Err(TermError::PaneGone) => Ok(false),
                Err(other) => Err(other),
            }
        })
    }
}

/// Rejects what no terminal should be asked to run: an empty program name
/// or a NUL byte (which would cut the argument short in every C API).
pub(crate) fn check_spawn_request(request: &SpawnRequest) -> Result<()> {
    if let Some(first) = request.command.first() {
        if first.is_empty() {
            return Err(TermError::Invalid("the program name is empty".into()));
        }
    }
    let has_nul = request.command.iter().any(|a| a.contains('\0'))
        || request.env.iter().any(|(k, v)| k.contains('\0') || v.contains('\0'));
    if has_nul {
        return Err(TermError::Invalid("a NUL byte in the command or its environment".into()));
    }
    if request.env.keys().any(|k| k.is_empty() || k.contains('=')) {
        return Err(TermError::Invalid("an environment name is empty or contains '='".into()));
    }
    if let Some(cwd) = &request.cwd {
        crate::cwd::validate_cwd(cwd.as_os_str().as_encoded_bytes())?;
    }
    Ok(())
}
