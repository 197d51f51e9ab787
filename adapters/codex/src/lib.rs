//! The `codex app-server` driver: one long-lived `codex app-server` process per
//! driver, spoken to in JSON-RPC over its stdio (`rpc.rs`), with one codex
//! thread per Bosun session.
//!
//! Layout of the moving parts, all on tokio tasks:
//! - the **turn task** (`turn.rs`, one per [`AgentDriver::start_turn`])
//!   starts the process and opens the thread when needed, sends
//!   `turn/start`, and feeds what codex says to the turn's mapping
//!   (`mapping.rs`, pure) until the turn ends;
//! - the **router** (`process.rs`) reads everything codex sends that is not
//!   a reply, keeps track of codex's own turn state and hands messages to
//!   the turn under way (or answers them itself between turns);
//! - the **monitor** (`process.rs`) waits for the process to exit and, when
//!   nobody asked it to, fails the running turn and reports
//!   [`DriverNotice::Exited`](bosun_driver::DriverNotice::Exited);
//! - a stderr reader turns each stderr line into a
//!   [`DriverNotice::Log`](bosun_driver::DriverNotice::Log).
//!
//! Codex runs each command in a session of its own and leaves it running when
//! a turn is interrupted, so the driver opts into codex's experimental API for
//! `thread/backgroundTerminals/clean`, sent when a turn ends interrupted, is
//! abandoned, or the driver is dropped.
//!
//! Invariants: a turn gets exactly one `Finished`, and nothing after it
//! (its [`TurnSink`](bosun_driver::TurnSink), shared by the turn task, the
//! router and the monitor); the process group dies with the driver; a dead
//! process is never restarted by the driver (the worker builds a new driver).

mod mapping;
mod process;
pub mod protocol;
mod rpc;
mod turn;

use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use bosun_proto::Enforcement;
use tokio::sync::{mpsc, Notify};

use bosun_driver::{
    AgentDriver, AgentError, AgentEvent, Capabilities, DriverInit, EnforcementReport, KnownProgram, NewTurn,
    ProviderFactory, ProviderSpec, TurnHandle, TurnInput, TurnSlot,
};
use bosun_isolation::Jail;
use mapping::Granted;
use process::{clean_background_terminals, AgentSlot, ProcessState, Shared};
use turn::TurnJob;

/// The `codex-app-server` kind: `codex app-server`, found on `PATH` as
/// `codex`.
#[derive(Debug, Clone, Copy, Default)]
pub struct CodexFactory;

impl ProviderFactory for CodexFactory {
    fn kind(&self) -> &'static str {
        "codex-app-server"
    }

    fn runs_program(&self) -> bool {
        true
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities { resume: false, load_session: true, steer: true, interrupt: true, images: true }
    }

    fn enforcement_before_start(&self) -> EnforcementReport {
        EnforcementReport {
            enforcement: Enforcement::AgentMode,
            detail:
                "every codex thread is opened by the daemon with approvalPolicy \"untrusted\" (checked when it starts)"
                    .into(),
            agent: None,
        }
    }

    /// Codex talks to its model over the network.
    fn needs_network(&self, _spec: &ProviderSpec) -> bool {
        true
    }

    fn known_programs(&self) -> &'static [KnownProgram] {
        &[KnownProgram { program: "codex", args: &["app-server"] }]
    }

    /// Codex uses `~/.codex` unless `CODEX_HOME` says otherwise.
    fn default_state_dir(&self, _spec: &ProviderSpec) -> &'static [&'static str] {
        &["$CODEX_HOME", "~/.codex"]
    }

    fn driver(&self, spec: ProviderSpec, init: DriverInit) -> Box<dyn AgentDriver> {
        Box::new(CodexDriver::new(spec, init))
    }
}

/// The driver for `kind = "codex-app-server"`.
pub struct CodexDriver {
    spec: ProviderSpec,
    cwd: PathBuf,
    /// Where codex runs: in this jail, or on the host.
    jail: Option<Jail>,
    shared: Arc<Shared>,
    slot: TurnSlot,
    /// Jailed with no network: an agent that does not ask is bounded anyway.
    offline_jail: bool,
}

impl CodexDriver {
    pub fn new(spec: ProviderSpec, init: DriverInit) -> CodexDriver {
        let offline_jail = init.offline_jail();
        let jail = init.isolation.jail().cloned();
        let shared = Arc::new(Shared {
            notices: init.notices,
            agent: tokio::sync::Mutex::new(AgentSlot { agent: None, binding: init.binding }),
            state: Mutex::new(ProcessState::default()),
            turn_idle: Notify::new(),
            routes: AtomicU64::new(0),
            enforcement: Mutex::new(None),
            granted: Mutex::new(Granted::default()),
        });
        CodexDriver { spec, cwd: init.cwd, jail, shared, slot: TurnSlot::new(), offline_jail }
    }
}

impl Drop for CodexDriver {
    fn drop(&mut self) {
        let (group, cleaner) = {
            let mut state = self.shared.state();
            state.dropped = true;
            (state.group.take(), state.cleaner.take())
        };
        // Dropping the guard kills the whole group, wrappers and grandchildren;
        // but codex runs commands in sessions of their own, out of the group's
        // reach, so it is first asked to stop them.
        match (group, cleaner, tokio::runtime::Handle::try_current()) {
            (Some(group), Some((rpc, thread_id)), Ok(runtime)) => {
                runtime.spawn(async move {
                    let _ = clean_background_terminals(&rpc, &thread_id).await;
                    drop(group);
                });
            }
            (group, ..) => drop(group),
        }
    }
}

impl AgentDriver for CodexDriver {
    fn kind(&self) -> &'static str {
        "codex-app-server"
    }

    fn capabilities(&self) -> Capabilities {
        CodexFactory.capabilities()
    }

    fn start_turn(
        &mut self,
        input: TurnInput,
        events: mpsc::UnboundedSender<AgentEvent>,
    ) -> Result<TurnHandle, AgentError> {
        if input.resume.is_some() {
            return Err(AgentError::BadCheckpoint("the codex driver cannot pick a turn up from a checkpoint".into()));
        }
        let shared = self.shared.clone();
        let spec = self.spec.clone();
        // The session's directory: the process and its thread live on across
        // turns, so a turn cannot move them.
        let cwd = self.cwd.clone();
        let jail = self.jail.clone();
        let offline_jail = self.offline_jail;
        self.slot.start(events, (), move |NewTurn { sink, controls }| {
            TurnJob { shared, spec, cwd, jail, input, end: sink, controls, offline_jail }.drive()
        })
    }
}

#[cfg(test)]
mod tests;
