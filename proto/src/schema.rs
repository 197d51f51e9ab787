//! The published contract, derived from the types: the JSON Schema of the
//! event envelope (`GET /api/v1/schema/events.json`). The OpenAPI document
//! of the HTTP endpoints is assembled in the front from the same types.

use crate::event::Topic;
use crate::events::EventData;
use schemars::JsonSchema;

/// An envelope with its data typed: what the schema describes. Only for
/// the schema: envelopes themselves stay [`crate::Envelope`].
#[derive(JsonSchema)]
#[schemars(
    title = "Bosun event",
    description = "One event of the log, as `/ws`, `/api/v1/events` and the audit send it."
)]
#[allow(dead_code)]
struct EventEnvelope {
    /// The envelope layout's version.
    v: u8,
    /// Global, gap-free and strictly increasing.
    seq: u64,
    /// RFC 3339 in UTC, microseconds.
    ts: String,
    topic: Topic,
    #[serde(flatten)]
    event: EventData,
}

/// The JSON Schema (draft 2020-12) of every event Bosun emits.
pub fn events_schema() -> schemars::Schema {
    schemars::schema_for!(EventEnvelope)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_type_is_in_the_schema() {
        let schema = serde_json::to_string(&events_schema()).unwrap();
        for kind in ["session:update", "stream:chunk", "turn:completed", "provider:status", "policy:violation"] {
            assert!(schema.contains(&format!("\"{kind}\"")), "{kind} missing");
        }
    }
}
