//! Byte layouts of everything the store writes.
//!
//! - `events`: key = seq (u64 big-endian, so sled's byte order is seq order),
//!   value = the envelope as named MessagePack (the same bytes a MessagePack
//!   client receives, and readable by a newer daemon that adds fields).
//! - `topic_index`: key = topic bytes, 0x00, first seq (u64 BE); value = the
//!   further seqs of that topic written by the same commit group, as LEB128
//!   deltas (empty when the group wrote one event of the topic). One entry per
//!   topic per group instead of one per event halves the sled inserts under
//!   load, which is where the append throughput goes.
//! - record trees: value = schema version (u16 BE) then named MessagePack.

use bosun_proto::{Envelope, Topic};
use serde::de::DeserializeOwned;

use crate::{Record, StoreError};

pub(crate) const EVENTS: &str = "events";
pub(crate) const TOPIC_INDEX: &str = "topic_index";
pub(crate) const META: &str = "meta";
/// sled's own default tree; records must not land in it.
const SLED_DEFAULT: &str = "__sled__default";

pub(crate) fn is_reserved(tree: &str) -> bool {
    matches!(tree, EVENTS | TOPIC_INDEX | META | SLED_DEFAULT)
}

pub(crate) fn seq_key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

pub(crate) fn seq_from_key(key: &[u8]) -> Result<u64, StoreError> {
    let bytes: [u8; 8] = key
        .try_into()
        .map_err(|_| StoreError::corrupt(EVENTS, format!("key of {} bytes, expected 8", key.len())))?;
    Ok(u64::from_be_bytes(bytes))
}

pub(crate) fn encode_envelope(env: &Envelope) -> Result<Vec<u8>, StoreError> {
    rmp_serde::to_vec_named(env).map_err(|e| StoreError::encode(EVENTS, e))
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
