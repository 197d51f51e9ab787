//! Control of the terminal emulators people already run, through one port.
//!
//! Every terminal is reached through [`TerminalControl`]; the daemon holds
//! `Arc<dyn TerminalControl>` values built by [`discovery::build_all`] from a
//! [`TermBridgeConfig`]. This crate never sees the store or the actors: its
//! types are its own and serde-serializable, for the daemon to map.
//!
//! The pure parsers (`sanitize`, `paste_guard`, `osc`, `cwd`, the OSC 52
//! encoder in `clipboard`) take any bytes without panicking; they will be
//! fuzzed.
//!
//! For the daemon:
//! - Build once with [`build_all`]; `TermBridge::get(kind)` is the port,
//!   `TermBridge::tmux` the typed tmux adapter for what only it has.
//! - tmux output: `bridge.tmux.subscribe()` then `bridge.tmux.connect()`;
//!   chunks of `(pane, bytes)` for the panes of the session the control
//!   client is attached to (the most recently used one, where Window/Tab
//!   spawns go). Feed them to an [`osc::OscParser`] per pane for cwd
//!   changes, clipboard writes and bracketed-paste state, and through
//!   [`sanitize::sanitize`] before storing or logging them. A lagging
//!   receiver gets `Lagged` and loses the oldest chunks.
//! - Keep `Pane::pid` from the spawn and compare it with
//!   `describe(..).pid` before acting on a stored pane id: ids are reused
//!   after a terminal restarts.
//! - Before `send_text`, run [`paste_guard::classify`] and show
//!   [`paste_guard::reveal`] to the user when it finds anything.

pub mod adapters;
pub mod clipboard;
pub mod control;
pub mod cwd;
pub mod discovery;
pub mod error;
pub mod osc;
pub mod paste_guard;
pub mod process;
pub mod runner;
pub mod sanitize;

pub use control::{
    Capabilities, Direction, Discovery, Pane, PaneId, PaneInfo, Placement, RiskFlag, SendMode, SpawnRequest,
    TerminalControl, TerminalKind,
};
pub use discovery::{build_all, discover_all, TermBridge, TermBridgeConfig};
pub use error::{Result, TermError};
pub use runner::{CommandOutput, CommandRunner, IpcConfig};
