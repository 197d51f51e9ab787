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
