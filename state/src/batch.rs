//! What one `commit` makes durable together: events and snapshot writes.

use bosun_proto::NewEvent;

use crate::{codec, Owner, Record, StoreError};

/// Events to append and records to put or delete, committed atomically: after
/// a crash either all of a batch is there or none of it.
///
/// A batch that writes records is someone's ([`Batch::by`]) and takes only
/// that owner's records; one made with [`Batch::new`] only appends events.
#[derive(Debug, Default)]
pub struct Batch {
    pub(crate) events: Vec<NewEvent>,
    pub(crate) writes: Vec<Write>,
    owner: Option<Owner>,
    /// The first record refused, reported by the commit (deletes cannot
    /// fail on the spot).
    pub(crate) refused: Option<StoreError>,
}

#[derive(Debug)]
pub(crate) struct Write {
    pub(crate) tree: &'static str,
    pub(crate) key: Vec<u8>,
    /// `None` deletes.
    pub(crate) value: Option<Vec<u8>>,
}

impl Batch {
    /// A batch of events only: putting or deleting a record in it fails.
    pub fn new() -> Self {
        Self::default()
    }

    /// A batch of `owner`'s, which may write `owner`'s records.
    pub fn by(owner: Owner) -> Self {
        Batch { owner: Some(owner), ..Self::default() }
    }

    pub fn owner(&self) -> Option<Owner> {
        self.owner
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
        if self.owner != Some(R::OWNER) {
            return Err(StoreError::NotOwner { tree: R::TREE, owner: R::OWNER, writer: self.owner });
        }
        let value = codec::encode_record(record)?;
        self.writes.push(Write { tree: R::TREE, key: record.key().into_bytes(), value: Some(value) });
        Ok(self)
    }

    pub fn delete<R: Record>(&mut self, key: &str) -> &mut Self {
        // A reserved tree is refused by the writer (with ReservedTree), and a
        // delete by the wrong owner by the commit, which keeps this
        // signature infallible.
        if !self.owner.is_some_and(|owner| owner.may_delete(R::OWNER)) && self.refused.is_none() {
            self.refused = Some(StoreError::NotOwner { tree: R::TREE, owner: R::OWNER, writer: self.owner });
        }
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
