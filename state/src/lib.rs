//! Bosun's durable store: the event log with group commit, and versioned
//! snapshots, on one sled database.
//!
//! Invariants the rest of the daemon relies on:
//! - every event gets a global, gap-free, strictly increasing `seq`;
//! - an event reaches subscribers (and readers) only after it is flushed to
//!   disk, so nothing a client has seen can be lost in a process crash;
//! - the events and record writes of one commit group are applied in one sled
//!   transaction, so a crash never leaves an event without its snapshot change
//!   (or the reverse); the topic index is persisted lazily, in the transaction
//!   of a later group, and rebuilt from the event log's tail after a crash;
//! - opening never scans the whole event log, only the tail whose topic index
//!   was not persisted yet (bounded by the persist limits in `pending`).
//!
//! - every kind of record has one owner, and only a batch of that owner's
//!   can put it ([`Owner`]).
//!
//! sled stays behind [`Store`]: nothing outside this crate names a tree.

mod batch;
mod codec;
mod metrics;
mod owner;
mod pending;
pub mod records;
mod store;
pub mod task;
pub mod terminal;
pub mod workflow;
mod writer;

#[cfg(test)]
mod tests;

pub use batch::Batch;
pub use codec::decode_body;
pub use metrics::StoreMetrics;
pub use owner::Owner;
pub use records::*;
pub use store::{FlushPolicy, Store, StoreConfig, FORMAT_VERSION};
pub use task::TaskRecord;
pub use terminal::{BindingRecord, HeldTerminalAction, ScrollbackChunk, TerminalApprovalRecord, TerminalRecord};
pub use workflow::{GateRecord, StepRecord, WorkflowRunRecord};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{tree}: stored schema {found} is not supported (current {current})")]
    UnsupportedSchema { tree: &'static str, found: u16, current: u16 },
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    #[error("encoding {what}: {source}")]
    Encode {
        what: &'static str,
        #[source]
        source: rmp_serde::encode::Error,
    },
    #[error("decoding {what}: {source}")]
    Decode {
        what: &'static str,
        #[source]
        source: rmp_serde::decode::Error,
    },
    /// Bytes in the store that no version of this crate could have written.
    #[error("corrupt {what}: {detail}")]
    Corrupt { what: &'static str, detail: String },
    /// A record written by someone other than its owner (`writer`: the
    /// batch's owner, `None` for an events-only batch).
    #[error("{tree} records are written by the {owner} actor only, not by {}", .writer.map_or("an events-only batch", |w| w.as_str()))]
    NotOwner { tree: &'static str, owner: Owner, writer: Option<Owner> },
    /// A `Record::TREE` that collides with one of the store's own trees.
    #[error("tree name {0:?} is reserved by the store")]
    ReservedTree(&'static str),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// Another process has the database open (another daemon on the same
    /// data dir, most likely).
    #[error("the store at {} is in use by another process (is another bosun running on this data dir?)", .0.display())]
    Locked(std::path::PathBuf),
    #[error("invalid store configuration: {0}")]
    Config(String),
    /// The writer has stopped (`close`, drop, or a bug); nothing was committed.
    #[error("the store is closed")]
    Closed,
    /// A failed commit could not be undone in memory; the store refuses further
    /// writes so it cannot hand out a seq twice. Restart the daemon.
    #[error("the store refuses writes after an unrecoverable failure: {0}")]
    Failed(String),
}

impl StoreError {
    pub fn encode(what: &'static str, source: rmp_serde::encode::Error) -> StoreError {
        StoreError::Encode { what, source }
    }

    pub fn decode(what: &'static str, source: rmp_serde::decode::Error) -> StoreError {
        StoreError::Decode { what, source }
    }

    fn corrupt(what: &'static str, detail: impl Into<String>) -> StoreError {
        StoreError::Corrupt { what, detail: detail.into() }
    }
}
