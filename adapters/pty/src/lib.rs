//! PTY terminals the daemon runs itself: a child (a shell, an agent's own
//! TUI) on a pseudo-terminal, its output read on a thread of its own until
//! EOF, and the flow control that holds that reading back while the clients
//! watching fall behind.
//!
//! What this crate promises its one caller (the terminal's actor):
//! - every byte the child wrote reaches [`PtyEvent::Output`] before the one
//!   [`PtyEvent::Exited`], which comes last, so an exit never cuts output
//!   short (the EOF of the PTY, not the child's exit, ends the reading);
//! - nothing here blocks an async task: the PTY is read and written on
//!   threads, and handed over through bounded channels (a full channel holds
//!   the reader back, so memory is bounded whoever is slow).
//!
//! It knows nothing of the store, actors or the wire.

mod flow;
mod pty;

pub use flow::{ClientId, FlowGate, Watermarks};
pub use pty::{ExitStatus, Pty, PtyCommand, PtyEvent, PtySize};

#[derive(Debug, thiserror::Error)]
pub enum PtyError {
    #[error("cannot open a pseudo-terminal: {0}")]
    Open(String),
    #[error("cannot start {program}: {reason}")]
    Spawn { program: String, reason: String },
    #[error("cannot resize the terminal: {0}")]
    Resize(String),
    #[error("the terminal has ended")]
    Ended,
    #[error("invalid terminal size {cols}x{rows}: both must be between 1 and 1000")]
    InvalidSize { cols: u16, rows: u16 },
}

/// Hangs up the process group led by `pid`, as closing its terminal would:
/// for a terminal's child left behind by a daemon that was killed (the
/// caller has checked that `pid` is still that child).
pub fn hang_up_group(pid: u32) {
    // SAFETY: kill(2) with a negative pid signals a process group.
    unsafe {
        libc::kill(-(pid as libc::pid_t), libc::SIGHUP);
    }
}
