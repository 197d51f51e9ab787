//! Errors that reach an API client. Each carries a stable `code`; the front
//! maps them onto HTTP statuses.

use bosun_state::StoreError;

#[derive(Debug, Clone, thiserror::Error)]
pub enum DaemonError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    /// A turn is already active on the session.
    #[error("session {session_id} already has an active turn {turn_id}")]
    Busy { session_id: String, turn_id: String },
    #[error("{0}")]
    Conflict(String),
    /// The session's policy cannot be held on its provider (409).
    #[error("{0}")]
    PolicyUnenforceable(String),
    /// An actor is restarting or did not answer in time; retrying is safe.
    #[error("{0}")]
    Unavailable(String),
    /// Refused until someone with the right grants it (403): a terminal
    /// that needs consent.
    #[error("{0}")]
    Forbidden(String),
    /// The terminal (or its CLI) is not there, or cannot do this (501).
    #[error("{0}")]
    NotSupported(String),
    #[error("{0}")]
    Internal(String),
}

impl DaemonError {
    /// The machine-readable code in `{"error":{"code":..}}`.
    pub fn code(&self) -> &'static str {
        match self {
            DaemonError::BadRequest(_) => "bad_request",
            DaemonError::NotFound(_) => "not_found",
            DaemonError::Busy { .. } => "busy",
            DaemonError::Conflict(_) => "conflict",
            DaemonError::PolicyUnenforceable(_) => "policy_unenforceable",
            DaemonError::Unavailable(_) => "unavailable",
            DaemonError::NotSupported(_) => "not_supported",
            DaemonError::Forbidden(_) => "consent_required",
            DaemonError::Internal(_) => "internal",
        }
    }
}

impl From<StoreError> for DaemonError {
    fn from(e: StoreError) -> Self {
        DaemonError::Internal(format!("store: {e}"))
    }
}

pub type DaemonResult<T> = Result<T, DaemonError>;
