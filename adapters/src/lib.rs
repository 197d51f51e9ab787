//! Everything in Bosun that touches the outside world: agent drivers and the
//! processes they start.
//!
//! Invariant: nothing here knows about actors or the store; drivers speak only
//! the [`agent`] contract.

pub mod acp;
pub mod agent;
pub mod codex;
pub mod demo;
pub mod docker;
pub mod isolation;
pub mod process;
pub mod registry;
pub mod sandbox;
pub mod shell;
mod turn_slot;
pub mod workspace;

pub use agent::*;
pub use registry::{
    probe_enforcement, ProviderHealth, ProviderKind, ProviderOrigin, ProviderRegistry, ProviderSpec, ProviderStatus,
    RegistryError,
};
