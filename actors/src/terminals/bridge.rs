//! The terminal emulators' adapters (`bosun-termbridge`) in the daemon's
//! words: their kinds, what discovery found as capability-map records,
//! and their errors as the errors a client sees.

use crate::context::Context;
use crate::error::DaemonError;
use bosun_proto::{TerminalCapabilities, TerminalKind};
use bosun_state::TerminalRecord;
use bosun_termbridge as tb;
use std::sync::Arc;

/// The adapter's kind for a kind of terminal, if an emulator's (`pty` is
/// the daemon's own).
pub fn adapter_kind(kind: TerminalKind) -> Option<tb::TerminalKind> {
    Some(match kind {
        TerminalKind::Pty => return None,
        TerminalKind::Tmux => tb::TerminalKind::Tmux,
        TerminalKind::Kitty => tb::TerminalKind::Kitty,
        TerminalKind::Wezterm => tb::TerminalKind::Wezterm,
        TerminalKind::Konsole => tb::TerminalKind::Konsole,
        TerminalKind::Tilix => tb::TerminalKind::Tilix,
        TerminalKind::Alacritty => tb::TerminalKind::Alacritty,
    })
}

pub fn wire_kind(kind: tb::TerminalKind) -> TerminalKind {
    match kind {
        tb::TerminalKind::Tmux => TerminalKind::Tmux,
        tb::TerminalKind::Kitty => TerminalKind::Kitty,
        tb::TerminalKind::Wezterm => TerminalKind::Wezterm,
        tb::TerminalKind::Konsole => TerminalKind::Konsole,
        tb::TerminalKind::Tilix => TerminalKind::Tilix,
        tb::TerminalKind::Alacritty => TerminalKind::Alacritty,
    }
}

pub fn control(ctx: &Context, kind: TerminalKind) -> Option<Arc<dyn tb::TerminalControl>> {
    adapter_kind(kind).map(|k| ctx.bridge.get(k))
}

/// One terminal's entry in the map, from its adapter's capabilities and
/// what discovery found.
pub fn record(ctx: &Context, kind: tb::TerminalKind, found: tb::Discovery) -> TerminalRecord {
    let caps = ctx.bridge.get(kind).capabilities();
    let terminal = wire_kind(kind);
    let mut notes: Vec<String> = vec![];
    if !caps.notes.is_empty() {
        notes.push(caps.notes.clone());
    }
    notes.extend(found.notes);
    TerminalRecord {
        terminal,
        installed: found.installed,
        running: found.running,
        reachable: found.reachable,
        version: found.version,
        capabilities: TerminalCapabilities {
            spawn: caps.spawn,
            split: caps.split,
            focus: caps.focus,
            send_text: caps.send_text,
            read_text: caps.read_text,
            clipboard_read: caps.clipboard_read,
            clipboard_write: caps.clipboard_write,
            cwd_sync: caps.cwd_sync,
            bracketed_paste: caps.bracketed_paste,
            max_clipboard_kb: caps.max_clipboard_kb,
        },
        requires_opt_in: caps.requires_opt_in || ctx.settings.termbridge.opt_in.contains(&terminal),
        consent_granted_at: None,
        notes,
        risk_flags: caps
            .risk_flags
            .iter()
            .map(|f| serde_json::to_value(f).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default())
            .collect(),
        discovered_at: bosun_proto::now_ts(),
    }
}

pub fn error(kind: TerminalKind, e: tb::TermError) -> DaemonError {
    match e {
        tb::TermError::NotSupported { .. } => DaemonError::NotSupported(e.to_string()),
        tb::TermError::Invalid(m) => DaemonError::BadRequest(m),
        tb::TermError::PaneGone => DaemonError::Conflict(format!("the {kind} pane is gone")),
        tb::TermError::Timeout { .. } | tb::TermError::Ipc(_) => DaemonError::Unavailable(format!("{kind}: {e}")),
    }
}
