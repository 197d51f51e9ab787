//! A typed client of the Bosun daemon (docs/PROTOCOL.md): every HTTP
//! endpoint as a method returning its `bosun-proto` answer type, and a
//! [`Follower`] of the event stream over the WebSocket that resumes from the
//! last event it handed out whenever the connection drops, so its caller
//! sees every event once, in order, across restarts of the daemon.
//!
//! The CLI, the benchmarks, the examples and the integration tests all
//! speak to the daemon through it.

mod error;
mod follow;
mod http;
mod terminal;

pub use error::ClientError;
pub use follow::{Followed, Follower, FollowerConfig, Notices};
pub use http::Client;
pub use terminal::{TerminalEvent, TerminalReader, TerminalStream, TerminalWriter};

pub type Result<T, E = ClientError> = std::result::Result<T, E>;
