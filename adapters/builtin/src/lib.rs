//! The providers built into the daemon, which run no agent program: `demo`
//! (a scripted agent, for trying Bosun without a model or a key) and `shell`
//! (each turn one command in the session's own long-lived shell).
//!
//! Each registers with the daemon through its [`ProviderFactory`]
//! (`DemoFactory`, `ShellFactory`).
//!
//! [`ProviderFactory`]: bosun_driver::ProviderFactory

pub mod demo;
pub mod shell;

pub use demo::{DemoDriver, DemoFactory};
pub use shell::{ShellDriver, ShellFactory};
