//! The contract between a provider worker (in `bosun-actors`) and an agent
//! driver ([`contract`]), the one turn lifecycle every driver follows
//! ([`lifecycle`]), and the provider registry that kinds of provider
//! register with through [`ProviderFactory`] ([`registry`]).
//!
//! Invariants: nothing here knows about actors or the store; nothing here
//! names a particular kind of provider (each driver crate brings its own
//! factory), except [`safe_commands`], which both codex drivers share.

pub mod contract;
pub mod lifecycle;
pub mod registry;
pub mod safe_commands;

pub use contract::*;
pub use lifecycle::{NewTurn, TurnSink, TurnSlot, TurnState};
pub use registry::{
    find_program, mask_secret, probe_version, secret_ref, KnownProgram, ProviderFactory, ProviderHealth,
    ProviderOrigin, ProviderRegistry, ProviderSpec, ProviderStatus, RegistryError, SecretResolver,
    DEFAULT_COMMAND_TIMEOUT, DEFAULT_SILENCE_TIMEOUT, DEFAULT_STARTUP_TIMEOUT, SECRET_REF_PREFIX,
};
