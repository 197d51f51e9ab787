//! Bosun's actors: the actors of the supervision tree (sessions, turns,
//! provider workers, diagnostics), supervised through `bosun-supervision`.
//!
//! Invariants:
//! - actors find each other by name ([`names`]), never by a stored reference;
//! - every event is persisted through the store before anyone can see it;
//! - no actor handler reads an agent's output; drivers' tasks do and send it in.

pub mod context;
pub mod diagnostics;
pub mod error;
pub mod files;
mod heap;
pub mod metrics;
pub mod names;
pub mod provider;
pub mod providers;
pub mod route;
pub mod session;
pub mod sessions;
pub mod tasks;
pub mod terminals;
pub mod turn;
pub mod workflow;
pub mod workflows;

pub use context::{Context, GitSettings, HealthCounters, Price, Prices, Settings, TermBridgeSettings};
pub use error::{DaemonError, DaemonResult};
