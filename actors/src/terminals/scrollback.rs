//! A `pty` terminal's scrollback in the store: its output in chunks keyed
//! by offset, the oldest dropped once more than the retention is kept.
//!
//! Small writes (a keystroke's echo) go into the last chunk while it is
//! small, so an interactive shell does not leave one record per byte; big
//! ones are cut into chunks of at most [`CHUNK_MAX`].

use bosun_proto::OutputRange;
use bosun_state::{Batch, ScrollbackChunk, Store, StoreError};
use std::collections::VecDeque;

/// The largest chunk written.
pub const CHUNK_MAX: usize = 256 * 1024;
/// A last chunk smaller than this takes the next bytes in.
const COALESCE_BELOW: usize = 16 * 1024;

pub struct Scrollback {
    binding_id: String,
    /// Every stored chunk's offset and length, oldest first.
    chunks: VecDeque<(u64, u64)>,
    /// The last chunk, while it is small enough to take more.
    tail: Option<ScrollbackChunk>,
    end: u64,
    kept: u64,
    retention: u64,
}

impl Scrollback {
    pub fn load(store: &Store, binding_id: &str, retention: u64) -> Result<Scrollback, StoreError> {
        let stored = store.scan_prefix::<ScrollbackChunk>(&ScrollbackChunk::prefix(binding_id))?;
        let mut s = Scrollback::empty(binding_id, retention);
        for chunk in &stored {
            s.chunks.push_back((chunk.offset, chunk.bytes.len() as u64));
            s.kept += chunk.bytes.len() as u64;
            s.end = chunk.end();
        }
        s.tail = stored.into_iter().last().filter(|c| c.bytes.len() < COALESCE_BELOW);
        Ok(s)
    }

    pub fn empty(binding_id: &str, retention: u64) -> Scrollback {
        Scrollback {
            binding_id: binding_id.to_string(),
            chunks: VecDeque::new(),
            tail: None,
            end: 0,
            kept: 0,
            retention: retention.max(CHUNK_MAX as u64),
        }
    }

    pub fn end(&self) -> u64 {
        self.end
    }

    pub fn range(&self) -> OutputRange {
        OutputRange { start: self.chunks.front().map_or(self.end, |c| c.0), end: self.end }
    }

    /// Puts the bytes from `offset` that are not stored yet into `batch`
    /// and returns them with their offset (a repeat after a restart of the
    /// actor, or a retried call, is dropped). Call [`Scrollback::committed`]
    /// once the batch is durable.
    pub fn append(&mut self, offset: u64, bytes: &[u8], batch: &mut Batch) -> Result<Option<Appended>, StoreError> {
        let skip = self.end.saturating_sub(offset);
        if skip >= bytes.len() as u64 {
            return Ok(None);
        }
        if offset > self.end {
            // Cannot happen while the pump advances only on an answer; if
            // it ever does, the gap is the missing bytes, not a shift.
            tracing::warn!(binding = %self.binding_id, offset, end = self.end, "terminal output skips ahead");
            self.end = offset;
        }
        let new = &bytes[skip as usize..];
        let start = self.end;
        let mut next = self.snapshot();
        let mut rest = new;
        let mut at = start;
        if let Some(tail) = next.tail.as_mut() {
            if tail.bytes.len() < COALESCE_BELOW && tail.end() == at {
                let take = (CHUNK_MAX - tail.bytes.len()).min(rest.len());
                tail.bytes.extend_from_slice(&rest[..take]);
                batch.put(&*tail)?;
                if let Some(back) = next.chunks.back_mut() {
                    back.1 += take as u64;
                }
                rest = &rest[take..];
                at += take as u64;
            }
        }
        for piece in rest.chunks(CHUNK_MAX) {
            let chunk = ScrollbackChunk { binding_id: self.binding_id.clone(), offset: at, bytes: piece.to_vec() };
            batch.put(&chunk)?;
            next.chunks.push_back((at, piece.len() as u64));
            at += piece.len() as u64;
            next.tail = Some(chunk);
        }
        next.kept += new.len() as u64;
        next.end = at;
        while next.chunks.len() > 1 {
            let (oldest, len) = next.chunks[0];
            if next.kept - len < next.retention {
                break;
            }
            batch.delete::<ScrollbackChunk>(&ScrollbackChunk::key_for(&self.binding_id, oldest));
            next.chunks.pop_front();
            next.kept -= len;
        }
        if next.tail.as_ref().is_some_and(|t| t.bytes.len() >= COALESCE_BELOW) {
            next.tail = None;
        }
        Ok(Some(Appended { offset: start, bytes: new.to_vec(), next }))
    }

    /// The append's batch is durable: take its state.
    pub fn committed(&mut self, appended: &mut Appended) {
        std::mem::swap(self, &mut appended.next);
    }

    fn snapshot(&self) -> Scrollback {
        Scrollback {
            binding_id: self.binding_id.clone(),
            chunks: self.chunks.clone(),
            tail: self.tail.clone(),
            end: self.end,
            kept: self.kept,
            retention: self.retention,
        }
    }
}

/// Bytes appended in a batch not yet committed, and the scrollback as it is
/// once it is (so a failed commit leaves the scrollback as it was).
pub struct Appended {
    pub offset: u64,
    pub bytes: Vec<u8>,
    next: Scrollback,
}

/// The stored output from `from` on (from the oldest kept byte if that is
/// later), at most about `max_bytes`, as (offset, bytes) pieces in order.
pub fn read(store: &Store, binding_id: &str, from: u64, max_bytes: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
    let prefix = ScrollbackChunk::prefix(binding_id);
    let mut out = Vec::new();
    let mut total = 0usize;
    let mut cursor = from;
    // A page of chunks at a time, so a long scrollback is not read at once.
    loop {
        let page =
            store.scan_prefix_from::<ScrollbackChunk>(&prefix, &ScrollbackChunk::key_for(binding_id, cursor), 16)?;
        let mut advanced = false;
        for chunk in page {
            if chunk.end() <= cursor {
                continue;
            }
            let skip = cursor.saturating_sub(chunk.offset) as usize;
            let offset = chunk.offset.max(cursor);
            let bytes = chunk.bytes[skip..].to_vec();
            cursor = chunk.end();
            total += bytes.len();
            out.push((offset, bytes));
            advanced = true;
            if total >= max_bytes {
                return Ok(out);
            }
        }
        if !advanced {
            return Ok(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bosun_state::{Owner, StoreConfig};

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(StoreConfig::new(dir.path().join("db"))).expect("open");
        (dir, store)
    }

    fn append(store: &Store, s: &mut Scrollback, offset: u64, bytes: &[u8]) -> Option<(u64, Vec<u8>)> {
        let mut batch = Batch::by(Owner::Binding);
        let mut appended = s.append(offset, bytes, &mut batch).expect("append")?;
        store.commit_blocking(batch).expect("commit");
        s.committed(&mut appended);
        Some((appended.offset, appended.bytes))
    }

    fn all(store: &Store) -> Vec<u8> {
        read(store, "b1", 0, usize::MAX).expect("read").into_iter().flat_map(|(_, b)| b).collect()
    }

    #[test]
    fn small_writes_share_a_chunk_and_repeats_are_dropped() {
        let (_d, store) = store();
        let mut s = Scrollback::empty("b1", 1 << 30);
        assert_eq!(append(&store, &mut s, 0, b"ab"), Some((0, b"ab".to_vec())));
        assert_eq!(append(&store, &mut s, 2, b"cd"), Some((2, b"cd".to_vec())));
        // A retried call: half repeated.
        assert_eq!(append(&store, &mut s, 3, b"def"), Some((4, b"ef".to_vec())));
        assert_eq!(append(&store, &mut s, 0, b"abc"), None);
        assert_eq!(all(&store), b"abcdef");
        assert_eq!(store.count::<ScrollbackChunk>(), 1);
        let reloaded = Scrollback::load(&store, "b1", 1 << 30).expect("load");
        assert_eq!(reloaded.range(), OutputRange { start: 0, end: 6 });
    }

    #[test]
    fn big_writes_are_cut_and_the_oldest_dropped_past_the_retention() {
        let (_d, store) = store();
        let retention = CHUNK_MAX as u64 * 2;
        let mut s = Scrollback::empty("b1", retention);
        let data: Vec<u8> = (0..CHUNK_MAX * 5 + 100).map(|i| (i % 251) as u8).collect();
        append(&store, &mut s, 0, &data);
        let range = s.range();
        assert_eq!(range.end, data.len() as u64);
        assert!(range.end - range.start >= retention && range.end - range.start < retention + CHUNK_MAX as u64);
        let kept = all(&store);
        assert_eq!(&kept[..], &data[range.start as usize..]);
        // Reading from inside a chunk starts at that byte.
        let from = range.start + 10;
        let piece: Vec<u8> =
            read(&store, "b1", from, usize::MAX).expect("read").into_iter().flat_map(|(_, b)| b).collect();
        assert_eq!(&piece[..], &data[from as usize..]);
        // Reading from before what is kept starts at the oldest kept byte.
        let first = read(&store, "b1", 0, 1).expect("read");
        assert_eq!(first[0].0, range.start);
    }

    #[test]
    fn a_failed_commit_leaves_the_scrollback_as_it_was() {
        let (_d, store) = store();
        let mut s = Scrollback::empty("b1", 1 << 30);
        append(&store, &mut s, 0, b"one");
        let mut batch = Batch::by(Owner::Binding);
        let _dropped = s.append(3, b"two", &mut batch).expect("append");
        // Never committed: the next append starts from the same place.
        assert_eq!(s.end(), 3);
        assert_eq!(append(&store, &mut s, 3, b"two"), Some((3, b"two".to_vec())));
        assert_eq!(all(&store), b"onetwo");
    }
}
