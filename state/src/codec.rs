//! Byte layouts of everything the store writes.
//!
//! - `events`: key = seq of the first event of a page (u64 big-endian, so
//!   sled's byte order is seq order); value = a page of consecutive events
//!   (see [`PAGE_VERSION`]). Each envelope inside is named MessagePack, the same
//!   bytes a MessagePack client receives. Pages instead of one value per event
//!   because sled's cost is per insert: a group of a few hundred events costs
//!   a dozen inserts instead of a few hundred (measured about 4x the append
//!   throughput), and one event is still read without decoding its neighbours.
//! - `topic_index`: key = topic bytes, 0x00, first seq (u64 BE); value = the
//!   further seqs of that topic in the same entry, as LEB128 deltas (empty when
//!   the entry holds one event). The writer persists the index lazily (see
//!   `pending`): one entry per topic per persist, covering every group since
//!   the previous persist, for the same reason. Stores written before that
//!   have one entry per topic per group; both read the same way, because the
//!   entries of a topic cover disjoint, increasing seq ranges either way.
//! - `meta`: `format` = [`crate::FORMAT_VERSION`] (u16 BE); `indexed_upto` =
//!   the last seq whose index entry is in `topic_index` (u64 BE), written in
//!   the transaction that persists the entries. Absent in older stores, which
//!   indexed every group, so it then means the head.
//! - record trees: value = schema version (u16 BE) then named MessagePack.

use bosun_proto::{Envelope, Topic};
use serde::de::DeserializeOwned;
use sled::IVec;

use crate::{Record, StoreError};

pub(crate) const EVENTS: &str = "events";
pub(crate) const TOPIC_INDEX: &str = "topic_index";
pub(crate) const META: &str = "meta";
pub(crate) const INDEXED_UPTO: &[u8] = b"indexed_upto";
/// sled's own default tree; records must not land in it.
const SLED_DEFAULT: &str = "__sled__default";

pub(crate) fn is_reserved(tree: &str) -> bool {
    matches!(tree, EVENTS | TOPIC_INDEX | META | SLED_DEFAULT)
}

pub(crate) fn seq_key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

pub(crate) fn seq_from_key(key: &[u8]) -> Result<u64, StoreError> {
    seq_from_bytes(EVENTS, key)
}

/// A seq stored as 8 bytes big-endian in `tree`.
pub(crate) fn seq_from_bytes(tree: &'static str, bytes: &[u8]) -> Result<u64, StoreError> {
    let array: [u8; 8] =
        bytes.try_into().map_err(|_| StoreError::corrupt(tree, format!("seq of {} bytes, expected 8", bytes.len())))?;
    Ok(u64::from_be_bytes(array))
}

/// Page layout: version byte, event count (u32 BE), the end offset of each
/// envelope within the body (u32 BE each), then the envelopes back to back.
pub(crate) const PAGE_VERSION: u8 = 1;
/// A page is closed once it holds this many bytes of envelopes. sled keeps up
/// to 17 values in a leaf and stores a leaf over 128 KiB as a separate blob
/// file; small pages keep leaves inline.
const PAGE_BYTES: usize = 4096;
const PAGE_EVENTS: usize = 256;
const PAGE_HEADER: usize = 5;

/// Packs consecutive events (seq ascending, no gap) into pages.
pub(crate) fn build_pages(events: &[(u64, Vec<u8>)]) -> Vec<(IVec, IVec)> {
    let mut pages = Vec::new();
    let mut rest = events;
    while let Some(&(first, _)) = rest.first() {
        let mut take = 0;
        let mut bytes = 0;
        while take < rest.len() && take < PAGE_EVENTS && (take == 0 || bytes < PAGE_BYTES) {
            bytes += rest[take].1.len();
            take += 1;
        }
        let (page, tail) = rest.split_at(take);
        let mut value = Vec::with_capacity(PAGE_HEADER + 4 * take + bytes);
        value.push(PAGE_VERSION);
        value.extend_from_slice(&(take as u32).to_be_bytes());
        let mut end = 0u32;
        for (_, envelope) in page {
            end += envelope.len() as u32;
            value.extend_from_slice(&end.to_be_bytes());
        }
        for (_, envelope) in page {
            value.extend_from_slice(envelope);
        }
        pages.push((IVec::from(&seq_key(first)), IVec::from(value)));
        rest = tail;
    }
    pages
}

/// A stored page. Parsing checks the header only (O(1)); each read checks
/// the bounds of its own slot.
pub(crate) struct Page<'a> {
    first: u64,
    count: u64,
    offsets: &'a [u8],
    body: &'a [u8],
}

impl<'a> Page<'a> {
    pub(crate) fn parse(key: &[u8], value: &'a [u8]) -> Result<Page<'a>, StoreError> {
        let first = seq_from_key(key)?;
        let bad = |detail: &str| StoreError::corrupt(EVENTS, format!("page at seq {first}: {detail}"));
        if value.len() < PAGE_HEADER {
            return Err(bad("shorter than its header"));
        }
        if value[0] != PAGE_VERSION {
            return Err(bad(&format!("unknown page version {}", value[0])));
        }
        let count = u32::from_be_bytes([value[1], value[2], value[3], value[4]]) as usize;
        let rest = &value[PAGE_HEADER..];
        if count == 0 || rest.len() < 4 * count {
            return Err(bad("bad event count"));
        }
        let (offsets, body) = rest.split_at(4 * count);
        if first.checked_add(count as u64 - 1).is_none() {
            return Err(bad("seqs overflow"));
        }
        Ok(Page { first, count: count as u64, offsets, body })
    }

    pub(crate) fn first(&self) -> u64 {
        self.first
    }

    pub(crate) fn last(&self) -> u64 {
        self.first + (self.count - 1)
    }

    fn end(&self, i: usize) -> usize {
        let at = &self.offsets[4 * i..4 * i + 4];
        u32::from_be_bytes([at[0], at[1], at[2], at[3]]) as usize
    }

    pub(crate) fn holds(&self, seq: u64) -> bool {
        seq >= self.first && seq <= self.last()
    }

    /// The envelope with this seq; `None` when the page does not hold it.
    pub(crate) fn envelope(&self, seq: u64) -> Option<Result<Envelope, StoreError>> {
        if !self.holds(seq) {
            return None;
        }
        let i = (seq - self.first) as usize;
        let start = if i == 0 { 0 } else { self.end(i - 1) };
        let end = self.end(i);
        let Some(bytes) = self.body.get(start..end) else {
            return Some(Err(StoreError::corrupt(EVENTS, format!("slot {seq}: bad offsets {start}..{end}"))));
        };
        Some(decode_envelope(bytes).and_then(|env| {
            // The seq inside must match the slot, or readers would hand out
            // events under the wrong number.
            if env.seq == seq {
                Ok(env)
            } else {
                Err(StoreError::corrupt(EVENTS, format!("slot {seq} holds seq {}", env.seq)))
            }
        }))
    }
}

pub(crate) fn encode_envelope(env: &Envelope) -> Result<Vec<u8>, StoreError> {
    // Sized for a typical envelope: growing the buffer showed up in profiles.
    let mut out = Vec::with_capacity(256);
    rmp_serde::encode::write_named(&mut out, env).map_err(|e| StoreError::encode(EVENTS, e))?;
    Ok(out)
}

pub(crate) fn decode_envelope(bytes: &[u8]) -> Result<Envelope, StoreError> {
    rmp_serde::from_slice(bytes).map_err(|e| StoreError::decode(EVENTS, e))
}

/// Everything of one topic in the index sorts under this prefix. The 0x00
/// keeps `session:a` from matching `session:ab`.
pub(crate) fn index_prefix(topic: &Topic) -> Vec<u8> {
    let mut key = Vec::with_capacity(topic.as_str().len() + 9);
    key.extend_from_slice(topic.as_str().as_bytes());
    key.push(0);
    key
}

pub(crate) fn index_key(prefix: &[u8], seq: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(prefix.len() + 8);
    key.extend_from_slice(prefix);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// `seqs` must be strictly increasing; the first one goes in the key.
pub(crate) fn index_value(seqs: &[u64]) -> Vec<u8> {
    let mut out = Vec::new();
    for pair in seqs.windows(2) {
        let mut delta = pair[1] - pair[0];
        loop {
            let byte = (delta & 0x7f) as u8;
            delta >>= 7;
            if delta == 0 {
                out.push(byte);
                break;
            }
            out.push(byte | 0x80);
        }
    }
    out
}

/// The seqs one index entry stands for, in ascending order.
pub(crate) fn index_seqs(key: &[u8], value: &[u8]) -> Result<Vec<u64>, StoreError> {
    let Some(tail) = key.len().checked_sub(8).map(|at| &key[at..]) else {
        return Err(StoreError::corrupt(TOPIC_INDEX, "key shorter than a seq"));
    };
    let mut seq = seq_from_key(tail)?;
    let mut seqs = vec![seq];
    let mut delta: u64 = 0;
    let mut shift = 0u32;
    for &byte in value {
        if shift > 63 {
            return Err(StoreError::corrupt(TOPIC_INDEX, "delta overflows u64"));
        }
        delta |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            seq = seq
                .checked_add(delta)
                .filter(|_| delta > 0)
                .ok_or_else(|| StoreError::corrupt(TOPIC_INDEX, "seqs not increasing"))?;
            seqs.push(seq);
            delta = 0;
            shift = 0;
        } else {
            shift += 7;
        }
    }
    if shift != 0 {
        return Err(StoreError::corrupt(TOPIC_INDEX, "truncated delta"));
    }
    Ok(seqs)
}

const HEADER: usize = 2;

pub(crate) fn encode_record<R: Record>(record: &R) -> Result<Vec<u8>, StoreError> {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(&R::SCHEMA.to_be_bytes());
    rmp_serde::encode::write_named(&mut out, record).map_err(|e| StoreError::encode(R::TREE, e))?;
    Ok(out)
}

/// Values written under another schema go through [`Record::migrate`], which
/// receives the body without the header.
pub(crate) fn decode_record<R: Record>(bytes: &[u8]) -> Result<R, StoreError> {
    let (schema, body) = split_header(R::TREE, bytes)?;
    if schema == R::SCHEMA {
        decode_body(R::TREE, body)
    } else {
        R::migrate(schema, body)
    }
}

pub(crate) fn record_schema(tree: &'static str, bytes: &[u8]) -> Result<u16, StoreError> {
    split_header(tree, bytes).map(|(schema, _)| schema)
}

fn split_header<'a>(tree: &'static str, bytes: &'a [u8]) -> Result<(u16, &'a [u8]), StoreError> {
    if bytes.len() < HEADER {
        return Err(StoreError::corrupt(tree, "value shorter than its schema header"));
    }
    let (head, body) = bytes.split_at(HEADER);
    Ok((u16::from_be_bytes([head[0], head[1]]), body))
}

/// Decodes a record body (MessagePack, named or positional). Meant for
/// [`Record::migrate`] implementations reading an older layout.
pub fn decode_body<T: DeserializeOwned>(tree: &'static str, body: &[u8]) -> Result<T, StoreError> {
    rmp_serde::from_slice(body).map_err(|e| StoreError::decode(tree, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bosun_proto::EventType;

    #[test]
    fn index_values_round_trip() {
        let prefix = index_prefix(&Topic::session("s1"));
        for seqs in [vec![5u64], vec![1, 2, 3], vec![7, 300, 70_000, u64::MAX - 1, u64::MAX]] {
            let key = index_key(&prefix, seqs[0]);
            assert_eq!(index_seqs(&key, &index_value(&seqs)).unwrap(), seqs);
        }
        assert!(index_value(&[9]).is_empty(), "a lone event keeps the plain key → empty layout");
    }

    #[test]
    fn corrupt_index_values_are_errors_not_panics() {
        let key = index_key(b"t\0", 1);
        assert!(index_seqs(&key, &[0x80]).is_err(), "truncated");
        assert!(index_seqs(&key, &[0]).is_err(), "zero delta");
        assert!(index_seqs(&key, &[0xff; 11]).is_err(), "overlong");
        assert!(index_seqs(b"short", &[]).is_err());
    }

    fn envelope(seq: u64, text: &str) -> Envelope {
        Envelope {
            v: 1,
            seq,
            ts: bosun_proto::now_ts(),
            topic: Topic::session("p"),
            kind: EventType::StreamChunk,
            data: serde_json::json!({ "text": text }),
        }
    }

    #[test]
    fn pages_hold_consecutive_events_and_split_by_size() {
        let events: Vec<(u64, Vec<u8>)> = (10..600u64)
            .map(|seq| (seq, encode_envelope(&envelope(seq, &"x".repeat((seq % 50) as usize))).unwrap()))
            .collect();
        let pages = build_pages(&events);
        assert!(pages.len() > 1);
        let mut next = 10;
        for (key, value) in &pages {
            let page = Page::parse(key, value).unwrap();
            assert_eq!(page.first(), next);
            assert!(value.len() <= PAGE_BYTES + 200 + PAGE_HEADER + 4 * PAGE_EVENTS, "{}", value.len());
            assert!(page.envelope(page.first() - 1).is_none());
            assert!(page.envelope(page.last() + 1).is_none());
            for seq in page.first()..=page.last() {
                let env = page.envelope(seq).unwrap().unwrap();
                assert_eq!(env, decode_envelope(&events[(seq - 10) as usize].1).unwrap());
            }
            next = page.last() + 1;
        }
        assert_eq!(next, 600);
        // One huge event still makes a page of its own.
        let big = vec![(1, encode_envelope(&envelope(1, &"y".repeat(20_000))).unwrap())];
        assert_eq!(build_pages(&big).len(), 1);
        assert!(build_pages(&[]).is_empty());
    }

    #[test]
    fn corrupt_pages_are_errors_not_panics() {
        let events =
            vec![(5, encode_envelope(&envelope(5, "a")).unwrap()), (6, encode_envelope(&envelope(6, "b")).unwrap())];
        let (key, value) = build_pages(&events).remove(0);
        for cut in 0..value.len() {
            if let Ok(page) = Page::parse(&key, &value[..cut]) {
                for seq in 5..=6 {
                    let _ = page.envelope(seq);
                }
            }
        }
        let mut wrong_version = value.to_vec();
        wrong_version[0] = 9;
        assert!(Page::parse(&key, &wrong_version).is_err());
        assert!(Page::parse(&key[..4], &value).is_err());
        // A page stored under the wrong key would mislabel its events.
        let page = Page::parse(&seq_key(7), &value).unwrap();
        assert!(page.envelope(7).unwrap().is_err());
    }

    #[test]
    fn envelopes_of_every_kind_round_trip() {
        for kind in [EventType::StreamChunk, EventType::ApprovalRequested, EventType::Other("future:thing".into())] {
            let env = Envelope {
                v: 1,
                seq: 3,
                ts: bosun_proto::now_ts(),
                topic: Topic::system(),
                kind,
                data: serde_json::json!({"a": [1, -2, 3.5, null, true], "s": "x", "big": u64::MAX}),
            };
            assert_eq!(decode_envelope(&encode_envelope(&env).unwrap()).unwrap(), env);
        }
    }
}
