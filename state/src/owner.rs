//! Who writes each kind of record. Every [`Record`](crate::Record) names its
//! one owner ([`Record::OWNER`](crate::Record::OWNER)); a batch says whose
//! it is ([`Batch::by`](crate::Batch::by)) and refuses to put a record of
//! anyone else's, so a second writer fails its commit the first time it
//! runs, in whichever test reaches it, rather than racing the owner
//! unnoticed.

use std::fmt;

/// The writer of a kind of record: an actor (one of each per session or
/// turn, for the records of that session or turn), or the daemon's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Owner {
    /// The session actor: its session's record.
    Session,
    /// The turn actor: its turn's record, progress and approvals, from the
    /// turn's start to its end.
    Turn,
    /// A session's provider worker: the agent binding and the agent process
    /// it started.
    Provider,
    /// The providers actor: what was learned about each provider.
    Providers,
    /// The auth actor: devices, pairing codes, the second factor.
    Auth,
    /// A workflow run's actor: its run record and its gates.
    Workflow,
    /// The tasks actor: every task.
    Tasks,
    /// The terminals actor: the capability map and the consents.
    Terminals,
    /// A terminal binding's actor: its binding and its scrollback.
    Binding,
    /// The daemon's start, before any actor runs: the sweep of agent
    /// processes a killed run left behind.
    Startup,
}

impl Owner {
    /// Whether a batch of `self` may delete a record that `owner` writes:
    /// its own; a session's (on close, once its children have stopped) the
    /// records of its turns and of its provider worker; the start's the
    /// agent processes a killed run left behind.
    pub fn may_delete(self, owner: Owner) -> bool {
        self == owner
            || matches!(
                (self, owner),
                (Owner::Session, Owner::Turn) | (Owner::Session, Owner::Provider) | (Owner::Startup, Owner::Provider)
            )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Owner::Session => "session",
            Owner::Turn => "turn",
            Owner::Provider => "provider",
            Owner::Providers => "providers",
            Owner::Auth => "auth",
            Owner::Workflow => "workflow",
            Owner::Tasks => "tasks",
            Owner::Terminals => "terminals",
            Owner::Binding => "binding",
            Owner::Startup => "startup",
        }
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
