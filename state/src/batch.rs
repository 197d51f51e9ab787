//! What one `commit` makes durable together: events and snapshot writes.

use bosun_proto::NewEvent;

use crate::{codec, Record, StoreError};

/// Events to append and records to put or delete, committed atomically: after
/// a crash either all of a batch is there or none of it.
#[derive(Debug, Default)]
pub struct Batch {
    pub(crate) events: Vec<NewEvent>,
    pub(crate) writes: Vec<Write>,
}

#[derive(Debug)]
pub(crate) struct Write {
    pub(crate) tree: &'static str,
    pub(crate) key: Vec<u8>,
    /// `None` deletes.
    pub(crate) value: Option<Vec<u8>>,
}

impl Batch {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends an event; the store assigns its seq and timestamp.
    pub fn event(&mut self, event: NewEvent) -> &mut Self {
        self.events.push(event);
        self
    }

    /// Stores a snapshot under `record.key()`. Encoding happens here so a bad
    /// value fails its caller and never reaches the writer.
    pub fn put<R: Record>(&mut self, record: &R) -> Result<&mut Self, StoreError> {
        if codec::is_reserved(R::TREE) {
            return Err(StoreError::ReservedTree(R::TREE));
        }
        let value = codec::encode_record(record)?;
        self.writes.push(Write { tree: R::TREE, key: record.key().into_bytes(), value: Some(value) });
        Ok(self)
    }

    pub fn delete<R: Record>(&mut self, key: &str) -> &mut Self {
        // A reserved tree is refused by the writer (with ReservedTree), which
        // keeps this signature infallible.
        self.writes.push(Write { tree: R::TREE, key: key.as_bytes().to_vec(), value: None });
        self
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && self.writes.is_empty()
    }

    /// How many events the batch appends.
    pub fn event_count(&self) -> usize {
        self.events.len()
    }

    /// How many record puts and deletes the batch holds.
    pub fn write_count(&self) -> usize {
        self.writes.len()
    }
}
