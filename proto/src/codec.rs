//! Encodings of server frames: JSON text by default, MessagePack binary for
//! clients that negotiate [`MSGPACK_SUBPROTOCOL`].

use serde::Serialize;

/// The WebSocket subprotocol that selects MessagePack frames.
pub const MSGPACK_SUBPROTOCOL: &str = "bosun.msgpack.v1";

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("encoding JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("encoding MessagePack: {0}")]
    MsgpackEncode(#[from] rmp_serde::encode::Error),
    #[error("decoding MessagePack: {0}")]
    MsgpackDecode(#[from] rmp_serde::decode::Error),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireFormat {
    Json,
    MsgPack,
}

/// An encoded frame: text for JSON, binary for MessagePack.
#[derive(Debug, Clone, PartialEq)]
pub enum Encoded {
    Text(String),
    Binary(Vec<u8>),
}

impl WireFormat {
    pub fn encode<T: Serialize>(self, value: &T) -> Result<Encoded, CodecError> {
        Ok(match self {
            WireFormat::Json => Encoded::Text(serde_json::to_string(value)?),
            // Named (map) encoding so MessagePack frames carry the same keys as JSON.
            WireFormat::MsgPack => Encoded::Binary(rmp_serde::to_vec_named(value)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Envelope, EventType, Topic};

    #[test]
    fn msgpack_envelope_round_trips_with_names() {
        let env = Envelope {
            v: 1,
            seq: 7,
            ts: "2026-01-01T00:00:00.000000Z".into(),
            topic: Topic::session("s1"),
            kind: EventType::StreamChunk,
            data: serde_json::json!({"text":"hi","index":3}),
        };
        let Encoded::Binary(bytes) = WireFormat::MsgPack.encode(&env).unwrap() else { panic!("binary expected") };
        let back: Envelope = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(back, env);
        let Encoded::Text(text) = WireFormat::Json.encode(&env).unwrap() else { panic!("text expected") };
        assert!(text.contains("\"type\":\"stream:chunk\""));
    }
}
