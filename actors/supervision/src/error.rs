//! What can go wrong in [`Supervision`](crate::Supervision)'s operations.

use ractor::SpawnErr;

/// Errors of [`Supervision`](crate::Supervision)'s operations.
#[derive(Debug, thiserror::Error)]
pub enum SupervisionError {
    /// No child has this id.
    #[error("no child with id `{0}`")]
    UnknownChild(String),
    /// A child with this id is already supervised.
    #[error("a child with id `{0}` already exists")]
    DuplicateChild(String),
    /// The start function failed (after retries if the name was still taken).
    #[error("failed to start child `{id}`: {source}")]
    StartFailed {
        id: String,
        #[source]
        source: SpawnErr,
    },
    /// [`Supervision::shutdown`](crate::Supervision::shutdown) has run; no more children can be started.
    #[error("the supervisor is shutting down")]
    ShuttingDown,
}
