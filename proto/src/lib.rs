//! Bosun's wire types: what crosses the HTTP and WebSocket boundary, and the
//! event envelope that the store persists and subscribers receive.
//!
//! Invariant: nothing in this crate knows about actors, sled or processes. Internal
//! snapshot types live in `bosun-state`; they are converted into these at the edge.

pub mod api;
pub mod codec;
pub mod event;
pub mod events;
pub mod ids;
#[macro_use]
pub mod model;
pub mod query;
pub mod schema;
pub mod task;
pub mod terminal;
pub mod workflow;
pub mod ws;

pub use api::*;
pub use codec::{CodecError, Encoded, WireFormat, MSGPACK_SUBPROTOCOL};
pub use event::{now_ts, Envelope, EventType, NewEvent, Topic, ENVELOPE_VERSION};
pub use events::EventData;
pub use ids::{ApprovalId, DeviceId, SessionId, TurnId, WorkflowRunId};
pub use model::*;
pub use query::*;
pub use task::*;
pub use terminal::*;
pub use workflow::*;
pub use ws::{ClientOp, Control, ServerFrame, TopicFilter};
