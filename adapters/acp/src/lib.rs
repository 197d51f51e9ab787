//! The driver for agents that speak the Agent Client Protocol (ACP) over
//! stdio: codex-acp, claude-agent-acp, `gemini --acp`...
//!
//! One agent process per driver, started on the first turn and reused by the
//! next ones; one agent-side session per driver, loaded from the daemon's
//! binding when the agent can, else created. A turn is one `session/prompt`
//! (or several, when steered); the agent's `session/update` notifications and
//! `session/request_permission` requests are routed to the turn under way.
//!
//! Mapping onto the driver contract:
//! - `agent_message_chunk` / `agent_thought_chunk` → `Chunk` text / thought;
//!   `tool_call` / `tool_call_update` → `ToolCall` / `ToolUpdate`; `plan` →
//!   `Plan`; anything else is logged at debug level and dropped.
//! - Usage: the prompt response's `usage` (input and output tokens) when the
//!   agent sends it (an unstable ACP field; codex-acp 0.16 does not).
//!   `usage_update`, which only tells how many tokens the context window
//!   holds, is reported as `context_tokens`, never as tokens the turn spent.
//! - `session/request_permission` → `ApprovalRequest` with id `perm-<JSON-RPC
//!   id>`; the daemon's decision picks an option by its kind.
//! - Interrupt (and a `Cancel` decision) → `session/cancel`; steer →
//!   `session/cancel`, then a new `session/prompt` with the steer text, within
//!   the same turn.
//! - `session/cancel` only ends the prompt: codex-acp lets the command it was
//!   running live on. So once a stopped prompt has returned, an agent that
//!   can close and load sessions gets `session/close` (which kills that work)
//!   and the same session is loaded again, its replayed history dropped,
//!   before the next prompt.
//!
//! Layout: `agent.rs` the agent process and its session as the driver's
//! tasks share them; `turn.rs` one turn's task, an explicit state machine;
//! `connection.rs` the process and its ACP connection; `client.rs` what the
//! daemon does for the agent (`fs/*`, `terminal/*`); `known_agents.rs` the
//! agents Bosun knows and how each is made to ask; `ledger.rs` what a
//! turn's agent did and what covered it; `mapping.rs` the pure
//! translations.

mod agent;
mod client;
mod connection;
mod known_agents;
mod ledger;
mod mapping;
mod turn;

pub use known_agents::KnownAgent;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bosun_proto::Enforcement;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use agent::{ActiveTurn, AgentState, Shared, State};
use bosun_driver::{
    AgentDriver, AgentError, AgentEvent, Capabilities, DriverInit, EnforcementReport, KnownProgram, NewTurn,
    ProviderFactory, ProviderSpec, TurnHandle, TurnInput, TurnOutcome, TurnSlot,
};
use bosun_isolation::Isolation;
use client::Terminals;
use ledger::{Grants, Ledger};
use turn::Turn;

/// A turn's event sink, with what the turn's agent did and what covered it
/// (its [`Ledger`], which adds the closing audit records as the turn ends).
pub(crate) type TurnSink = bosun_driver::TurnSink<Ledger>;

/// The `acp` kind: any agent that speaks ACP over stdio.
#[derive(Debug, Clone, Copy, Default)]
pub struct AcpFactory;

impl ProviderFactory for AcpFactory {
    fn kind(&self) -> &'static str {
        "acp"
    }

    fn runs_program(&self) -> bool {
        true
    }

    /// `load_session` also needs the agent to support it; `images` is
    /// learned from the agent's `initialize` answer.
    fn capabilities(&self) -> Capabilities {
        Capabilities { resume: false, load_session: true, steer: true, interrupt: true, images: false }
    }

    fn enforcement_before_start(&self) -> EnforcementReport {
        EnforcementReport {
            enforcement: Enforcement::Unknown,
            detail: "learned when the agent first starts (the daemon may start it once to find out)".into(),
            agent: None,
        }
    }

    /// The known agents all reach their model over the network; an unknown
    /// one may run a local model, so it may be jailed offline.
    fn needs_network(&self, spec: &ProviderSpec) -> bool {
        KnownAgent::recognise(spec.agent_name.as_deref(), spec.program_name()).is_some()
    }

    /// What each speaks ACP with; what makes it ask before it acts is added
    /// by the driver whatever the args ([`KnownAgent`]).
    fn known_programs(&self) -> &'static [KnownProgram] {
        &[
            KnownProgram { program: "codex-acp", args: &[] },
            KnownProgram { program: "claude-agent-acp", args: &[] },
            KnownProgram { program: "gemini", args: &["--acp"] },
        ]
    }

    fn default_state_dir(&self, spec: &ProviderSpec) -> &'static [&'static str] {
        match KnownAgent::recognise(spec.agent_name.as_deref(), spec.program_name()) {
            // Codex uses ~/.codex unless CODEX_HOME says otherwise.
            Some(KnownAgent::CodexAcp) => &["$CODEX_HOME", "~/.codex"],
            Some(KnownAgent::Claude) => &["~/.claude"],
            Some(KnownAgent::Gemini) => &["~/.gemini"],
            None => &[],
        }
    }

    fn probe<'a>(
        &'a self,
        spec: ProviderSpec,
        scratch: &'a std::path::Path,
    ) -> futures::future::BoxFuture<'a, Result<EnforcementReport, String>> {
        Box::pin(probe(spec, scratch))
    }

    fn driver(&self, spec: ProviderSpec, init: DriverInit) -> Box<dyn AgentDriver> {
        Box::new(AcpDriver::new(spec, init))
    }
}

/// The ACP driver (kind `acp`).
pub struct AcpDriver {
    shared: Arc<Shared>,
    /// Its permit is held by the turn under way until it finishes (or its
    /// task is torn down after its handle was dropped).
    slot: TurnSlot,
    next_turn: u64,
}

impl AcpDriver {
    pub fn new(spec: ProviderSpec, init: DriverInit) -> AcpDriver {
        let (exit_tx, _) = watch::channel(None);
        let offline_jail = init.offline_jail();
        let jail = init.isolation.jail().cloned();
        let shared = Arc::new_cyclic(|this| Shared {
            this: this.clone(),
            spec,
            cwd: init.cwd,
            binding: init.binding,
            notices: init.notices,
            state: Mutex::new(State { agent: AgentState::NotStarted, turn: None, kill_reason: None, stopped: false }),
            last_heard: Mutex::new(Instant::now()),
            images: AtomicBool::new(false),
            replaying: AtomicBool::new(false),
            exit_tx,
            offline_jail,
            jail,
            enforcement: Mutex::new(None),
            agent_identity: Mutex::new(None),
            terminals: Terminals::default(),
            grants: Grants::default(),
        });
        AcpDriver { shared, slot: TurnSlot::new(), next_turn: 0 }
    }
}

impl Drop for AcpDriver {
    fn drop(&mut self) {
        let live = {
            let mut state = self.shared.lock();
            state.stopped = true;
            match std::mem::replace(&mut state.agent, AgentState::gone("the driver was stopped")) {
                AgentState::Up(live) => Some(live),
                AgentState::Gone { dead, .. } => dead,
                AgentState::NotStarted => None,
            }
        };
        // Turn tasks may still hold the agent; the process goes now regardless.
        if let Some(live) = live {
            live.stop();
        }
        self.shared.terminals.kill_all();
    }
}

impl AgentDriver for AcpDriver {
    fn kind(&self) -> &'static str {
        "acp"
    }

    fn capabilities(&self) -> Capabilities {
        // Images depend on the agent, known once it has answered `initialize`.
        Capabilities { images: self.shared.images.load(Ordering::Relaxed), ..AcpFactory.capabilities() }
    }

    fn start_turn(
        &mut self,
        input: TurnInput,
        events: mpsc::UnboundedSender<AgentEvent>,
    ) -> Result<TurnHandle, AgentError> {
        if input.resume.is_some() {
            return Err(AgentError::BadCheckpoint("the ACP driver cannot resume a turn cut mid-way".into()));
        }
        let ledger = Ledger::new(&input.turn_id, self.shared.identity(), &self.shared.cwd, self.shared.grants.clone());
        let shared = self.shared.clone();
        let next_turn = &mut self.next_turn;
        self.slot.start(events, ledger, move |NewTurn { sink, controls }| {
            *next_turn += 1;
            let id = *next_turn;
            // The agent's messages find the turn's sink through here, from
            // now on: whoever sees the turn end first finishes it.
            shared.lock().turn = Some(ActiveTurn { id, sink: sink.clone(), policy: input.policy, inbound: None });
            let turn = Turn {
                shared,
                id,
                turn_id: input.turn_id,
                policy: input.policy,
                client_requests: 0,
                pending_client: HashMap::new(),
                sink,
                controls,
                controls_open: true,
                text: input.text,
                agent: None,
                pending: HashMap::new(),
                prompting: false,
                declined: false,
                exact_usage: None,
                exact_usage_context: None,
                interrupted: Arc::new(AtomicBool::new(false)),
                activity: Instant::now(),
            };
            turn.run()
        })
    }
}

/// Starts the agent once, in `scratch`, to learn how it can be held to
/// asking before it acts (who it says it is, the modes it offers, whether it
/// takes the one that asks), then stops it.
pub async fn probe(spec: ProviderSpec, scratch: &std::path::Path) -> Result<EnforcementReport, String> {
    std::fs::create_dir_all(scratch).map_err(|e| format!("creating {}: {e}", scratch.display()))?;
    let (notices, _notices) = mpsc::unbounded_channel();
    let init = DriverInit {
        session_id: "probe".into(),
        cwd: scratch.to_path_buf(),
        binding: None,
        notices,
        isolation: Isolation::Host,
        network: false,
    };
    let driver = AcpDriver::new(spec, init);
    let (events, mut failures) = mpsc::unbounded_channel();
    let sink = TurnSink::new(events, Ledger::new("probe", None, scratch, Grants::default()));
    let started = driver.shared.agent(&sink).await;
    let report = driver.shared.enforcement.lock().unwrap_or_else(|p| p.into_inner()).clone();
    drop(driver);
    match (started, report) {
        (Ok(_), Some(report)) => Ok(report),
        (Err(Some(why)), _) => Err(why),
        _ => {
            // The reason went out as the end of the would-be turn.
            let mut why = "the agent did not get as far as a session".to_string();
            while let Ok(event) = failures.try_recv() {
                if let AgentEvent::Finished(TurnOutcome::Failed(reason)) = event {
                    why = reason;
                }
            }
            Err(why)
        }
    }
}

#[cfg(test)]
mod tests;
