use std::time::Duration;

/// What can go wrong talking to a terminal. The daemon maps `NotSupported`
/// to HTTP 501, `PaneGone` to 404, `Invalid` to 400 and the rest to 502/504.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TermError {
    /// The terminal (or its CLI, or this operation on it) is not available.
    /// Never papered over with a fallback: the caller decides what to do.
    #[error("{terminal} does not support {what}")]
    NotSupported { terminal: String, what: String },
    #[error("{what} timed out after {after:?} ({attempts} attempt(s))")]
    Timeout { what: String, after: Duration, attempts: u32 },
    #[error("terminal IPC failed: {0}")]
    Ipc(String),
    #[error("the pane is gone")]
    PaneGone,
    #[error("invalid request: {0}")]
    Invalid(String),
}

impl TermError {
    pub fn not_supported(terminal: impl Into<String>, what: impl Into<String>) -> Self {
        TermError::NotSupported { terminal: terminal.into(), what: what.into() }
    }
}

pub type Result<T> = std::result::Result<T, TermError>;
