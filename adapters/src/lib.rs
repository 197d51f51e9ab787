//! Everything in Bosun that touches the outside world: agent drivers and the
//! processes they start.
//!
//! Invariant: nothing here knows about actors or the store; drivers speak only
//! the [`agent`] contract.

pub mod agent;
pub mod demo;
pub mod process;
pub mod registry;

pub use agent::*;
pub use registry::{ProviderKind, ProviderRegistry, ProviderSpec, RegistryError};
