//! Where agents and the commands they run are put, and how they are kept
//! under control: process groups that die whole ([`process`]), the
//! processes below a shell ([`tree`]), the bubblewrap jail ([`jail`]), the
//! Docker backend ([`container`]), and the [`Isolation`] a session's driver
//! is given, each of which can start a shell ([`ShellHost`]).
//!
//! Invariant: nothing here knows about agents, turns, actors or the store.

pub mod container;
pub mod jail;
pub mod process;
mod shell_host;
pub mod tree;

pub use jail::Jail;
pub use shell_host::{HostShells, Isolation, IsolationError, ShellHost, ShellProcess, ShellSpec};
