//! The provider-worker actor: one per session, owning that session's agent
//! driver (and so, for real agents, the agent process).
//!
//! Agent output is never read inside a handler: the driver's events arrive on
//! a channel read by a forwarding task, which numbers them and hands them to
//! the session's turn actor by name. The task keeps every event of the turn
//! until the turn ends, so a turn actor that restarts asks for a replay from
//! the last event it persisted and nothing is lost or doubled.
//!
//! What the driver says about its agent process (up, bound to an agent-side
//! session, exited, stderr) arrives as [`DriverNotice`]s, also read on a task
//! and handed to this actor as messages. An agent process that dies unasked
//! fails the worker, so its supervisor (the session) restarts it with
//! backoff and the next turn starts a fresh process.

use crate::context::Context;
use crate::names;
use crate::turn::TurnMsg;
use bosun_driver::{
    AgentDriver, AgentEvent, DriverInit, DriverNotice, ProviderRegistry, TurnControl, TurnHandle, TurnInput,
};
use bosun_isolation::jail::BWRAP_PACKAGE;
use bosun_isolation::{Isolation, Jail};
use bosun_proto::events::{self, ProviderStatusKind};
use bosun_proto::{EventData, LogLevel, NewEvent, Sandbox, Topic};
use bosun_state::{AgentBinding, AgentProcess, Batch, Owner, SessionRecord, Store};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

pub struct ProviderWorker;

/// The tracing target of what a provider's agent says (its stderr lines and
/// the drivers' protocol notes): the daemon's log writes these to the
/// provider's own file rather than its core log.
pub const LOG_TARGET: &str = "bosun::provider_log";

pub struct ProviderArgs {
    pub ctx: Context,
    pub session_id: String,
    pub provider: String,
}

pub struct ProviderState {
    ctx: Context,
    session_id: String,
    provider: String,
    driver: Box<dyn AgentDriver>,
    current: Option<CurrentTurn>,
    /// The binding the worker started with, to tell a resumed agent session
    /// from a new one.
    initial_binding: Option<serde_json::Value>,
    /// Set while the agent process is up: counts it as running in the
    /// registry until dropped (even when this actor dies by a panic).
    running: Option<RunningGuard>,
    /// Why the agent process died, once it has: the worker is about to fail.
    exited: Option<String>,
    // Held for its Drop: reading notices ends with the worker.
    _notices: AbortOnDrop,
}

/// Counts one live agent process in the registry's status while it lives.
struct RunningGuard {
    registry: Arc<ProviderRegistry>,
    provider: String,
    crash: Option<String>,
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.registry.report_stopped(&self.provider, self.crash.take());
    }
}

struct CurrentTurn {
    turn_id: String,
    // Dropped with the worker: aborts the turn and kills what it started.
    handle: TurnHandle,
    // Held for its Drop: the forwarding task ends with the turn.
    _forwarder: AbortOnDrop,
    reattach: mpsc::UnboundedSender<u64>,
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How a `RunTurn` was honoured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunAck {
    /// A new (or resumed) turn was started on the driver.
    Started,
    /// The turn was already running here: events after `delivered` are replayed.
    Attached,
    /// This worker's agent process has died and the worker is about to be
    /// restarted: the turn is run on the new worker when it is up.
    Restarting,
}

pub enum ProviderMsg {
    /// Start, resume or re-attach a turn. `delivered` is how many of the turn's
    /// events the turn actor has already persisted.
    RunTurn {
        input: TurnInput,
        delivered: u64,
        reply: RpcReplyPort<Result<RunAck, String>>,
    },
    Control {
        turn_id: String,
        control: TurnControl,
    },
    /// The turn actor has recorded the turn's end: drop it.
    TurnDone {
        turn_id: String,
    },
    /// Something the driver said about its agent process.
    Notice(DriverNotice),
    /// The agent process is gone and the turn had its chance to record why:
    /// fail, so the supervisor restarts the worker.
    Fail(String),
    Crash,
}

/// How long a worker whose agent died waits before failing, so the turn
/// under way can record the driver's own reason first.
const FAIL_DELAY: Duration = Duration::from_millis(300);

impl Actor for ProviderWorker {
    type Msg = ProviderMsg;
    type State = ProviderState;
    type Arguments = ProviderArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: ProviderArgs,
    ) -> Result<ProviderState, ActorProcessingErr> {
        crate::heap::on_heap(async move {
            let session = args.ctx.store.get::<SessionRecord>(&args.session_id)?;
            let sandbox = session.as_ref().map(|s| s.sandbox).unwrap_or_default();
            let network = session.as_ref().is_some_and(|s| s.network);
            let cwd = session.map(|s| PathBuf::from(s.cwd)).unwrap_or_else(|| args.ctx.settings.default_cwd.clone());
            let isolation = match sandbox {
                Sandbox::None => Isolation::Host,
                // Fail closed: a session made to be jailed never runs on the host,
                // even if bubblewrap went away since it was created.
                Sandbox::Bwrap => {
                    let jail = Jail::bwrap(&args.ctx.settings.data_dir).ok_or_else(|| {
                        format!(
                            "session {} needs bubblewrap (`bwrap` not found on PATH; install the {:?} package)",
                            args.session_id, BWRAP_PACKAGE
                        )
                    })?;
                    // The push token is the daemon's, never a session's.
                    let withheld: Vec<String> = args.ctx.settings.git.token_env.iter().cloned().collect();
                    Isolation::Jail(jail.with_network(network).withholding(withheld))
                }
                Sandbox::Docker => Isolation::Container(args.ctx.settings.docker.clone().ok_or_else(|| {
                    format!("session {} runs in a container, but no container engine is configured", args.session_id)
                })?),
            };
            // A binding made by another provider (the session was switched) means nothing here.
            let binding = args
                .ctx
                .store
                .get::<AgentBinding>(&args.session_id)?
                .filter(|b| b.provider == args.provider)
                .map(|b| b.binding);
            let (notices_tx, mut notices_rx) = mpsc::unbounded_channel();
            let init = DriverInit {
                session_id: args.session_id.clone(),
                cwd,
                binding: binding.clone(),
                notices: notices_tx,
                isolation,
                network,
            };
            let driver = args.ctx.providers.driver(&args.provider, init)?;
            let notices = tokio::spawn(async move {
                while let Some(notice) = notices_rx.recv().await {
                    if myself.send_message(ProviderMsg::Notice(notice)).is_err() {
                        return;
                    }
                }
            });
            Ok(ProviderState {
                ctx: args.ctx,
                session_id: args.session_id,
                provider: args.provider,
                driver,
                current: None,
                initial_binding: binding,
                running: None,
                exited: None,
                _notices: AbortOnDrop(notices),
            })
        })
        .await
    }

    async fn post_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut ProviderState,
    ) -> Result<(), ActorProcessingErr> {
        crate::heap::on_heap(async move {
            let capabilities = state.driver.capabilities().into();
            let mut batch = Batch::by(Owner::Provider);
            batch.event(state.status(ProviderStatusKind::Ready { capabilities }));
            state.ctx.store.commit(batch).await?;
            tracing::info!(session_id = %state.session_id, provider = %state.provider, "provider worker ready");
            Ok(())
        })
        .await
    }

    /// A stop asked for (not a crash, which skips this): the agent process
    /// goes with the driver, dropped with the state right after, and
    /// clients are told it was stopped rather than left believing it runs.
    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut ProviderState,
    ) -> Result<(), ActorProcessingErr> {
        crate::heap::on_heap(async move {
            // The turn first: dropping it aborts it and kills what it started.
            state.current = None;
            if state.running.is_none() {
                return Ok(());
            }
            let mut batch = Batch::by(Owner::Provider);
            batch.event(state.status(ProviderStatusKind::Stopped));
            state.ctx.store.commit(batch).await?;
            tracing::info!(session_id = %state.session_id, provider = %state.provider, "agent process stopped");
            Ok(())
        })
        .await
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: ProviderMsg,
        state: &mut ProviderState,
    ) -> Result<(), ActorProcessingErr> {
        crate::heap::on_heap(async move {
            match msg {
                ProviderMsg::RunTurn { input, delivered, reply } => {
                    let result = state.run_turn(input, delivered);
                    let _ = reply.send(result);
                }
                ProviderMsg::Control { turn_id, control } => match &state.current {
                    Some(current) if current.turn_id == turn_id => {
                        if !current.handle.send(control) {
                            tracing::debug!(session_id = %state.session_id, turn_id = %turn_id, "control for a turn that has finished");
                        }
                    }
                    _ => {
                        tracing::warn!(session_id = %state.session_id, turn_id = %turn_id, "control for a turn this worker is not running")
                    }
                },
                ProviderMsg::TurnDone { turn_id } => {
                    if state.current.as_ref().is_some_and(|c| c.turn_id == turn_id) {
                        state.current = None;
                    }
                }
                ProviderMsg::Notice(notice) => state.on_notice(&myself, notice).await?,
                ProviderMsg::Fail(reason) => return Err(reason.into()),
                ProviderMsg::Crash => {
                    if state.ctx.settings.fault_injection {
                        panic!("injected fault: provider worker of session {}", state.session_id);
                    }
                }
            }
            Ok(())
        })
        .await
    }
}

impl ProviderState {
    /// A `provider:status` event of this worker.
    fn status(&self, status: ProviderStatusKind) -> NewEvent {
        let event = events::ProviderStatusEvent {
            provider: self.provider.clone(),
            kind: Some(self.driver.kind().to_string()),
            status,
        };
        EventData::ProviderStatus(event).into_event(Topic::session(&self.session_id))
    }

    async fn on_notice(
        &mut self,
        myself: &ActorRef<ProviderMsg>,
        notice: DriverNotice,
    ) -> Result<(), ActorProcessingErr> {
        let topic = Topic::session(&self.session_id);
        match notice {
            DriverNotice::Running { pid, agent, version } => {
                self.ctx.providers.report_started(&self.provider, version.clone());
                self.running = Some(RunningGuard {
                    registry: self.ctx.providers.clone(),
                    provider: self.provider.clone(),
                    crash: None,
                });
                let mut batch = Batch::by(Owner::Provider);
                if let Some(start_ticks) = pid.and_then(bosun_isolation::process::process_start_ticks) {
                    batch.put(&AgentProcess {
                        session_id: self.session_id.clone(),
                        provider: self.provider.clone(),
                        pid: pid.unwrap_or_default(),
                        start_ticks,
                    })?;
                }
                batch.event(self.status(ProviderStatusKind::Running { pid, agent, version }));
                self.ctx.store.commit(batch).await?;
                tracing::info!(session_id = %self.session_id, provider = %self.provider, ?pid, "agent process running");
            }
            DriverNotice::Bound(binding) => {
                let resumed = self.initial_binding.as_ref() == Some(&binding);
                let record = AgentBinding {
                    session_id: self.session_id.clone(),
                    provider: self.provider.clone(),
                    binding: binding.clone(),
                    updated_at: bosun_proto::now_ts(),
                };
                let mut batch = Batch::by(Owner::Provider);
                batch.put(&record)?;
                batch.event(self.status(ProviderStatusKind::Bound { binding, resumed }));
                self.ctx.store.commit(batch).await?;
                tracing::info!(session_id = %self.session_id, provider = %self.provider, resumed, "agent session bound");
            }
            DriverNotice::Exited { reason } => {
                if let Some(guard) = self.running.as_mut() {
                    guard.crash = Some(reason.clone());
                }
                self.running = None;
                let mut batch = Batch::by(Owner::Provider);
                batch.delete::<AgentProcess>(&self.session_id);
                batch.event(self.status(ProviderStatusKind::Crashed { reason: reason.clone() }));
                self.ctx.store.commit(batch).await?;
                tracing::warn!(session_id = %self.session_id, provider = %self.provider, %reason, "agent process exited");
                if self.exited.is_none() {
                    let why = format!("the agent process of provider {} exited: {reason}", self.provider);
                    self.exited = Some(reason);
                    myself.send_after(FAIL_DELAY, move || ProviderMsg::Fail(why));
                }
            }
            DriverNotice::Enforcement(report) => {
                tracing::info!(session_id = %self.session_id, provider = %self.provider, enforcement = %report.enforcement, detail = %report.detail, "learned how the agent is held to a policy");
                crate::route::send(
                    names::PROVIDERS,
                    crate::providers::ProvidersMsg::Report { provider: self.provider.clone(), report },
                );
            }
            DriverNotice::ModeRestored { from, to } => {
                tracing::warn!(session_id = %self.session_id, provider = %self.provider, %from, %to, "the agent left its asking mode; put back");
                let mut batch = Batch::by(Owner::Provider);
                let restored = events::PolicyModeRestored {
                    provider: self.provider.clone(),
                    turn_id: self.current.as_ref().map(|c| c.turn_id.clone().into()),
                    from,
                    to,
                };
                batch.event(EventData::PolicyModeRestored(restored).into_event(topic));
                self.ctx.store.commit(batch).await?;
            }
            DriverNotice::Log { level, message } => {
                let turn = self.current.as_ref().map(|c| c.turn_id.as_str());
                let (session_id, provider, turn_id) = (&self.session_id, &self.provider, turn.unwrap_or(""));
                // The provider's own log file (`providers/<name>.log`), beside the event.
                match level {
                    LogLevel::Info => {
                        tracing::info!(target: LOG_TARGET, %provider, %session_id, %turn_id, "{message}")
                    }
                    LogLevel::Warn => {
                        tracing::warn!(target: LOG_TARGET, %provider, %session_id, %turn_id, "{message}")
                    }
                    LogLevel::Error => {
                        tracing::error!(target: LOG_TARGET, %provider, %session_id, %turn_id, "{message}")
                    }
                }
                crate::diagnostics::report(
                    level,
                    Some(&self.session_id),
                    turn,
                    format!("[{}] {message}", self.provider),
                );
            }
        }
        Ok(())
    }

    fn run_turn(&mut self, input: TurnInput, delivered: u64) -> Result<RunAck, String> {
        if let Some(current) = &self.current {
            if current.turn_id == input.turn_id {
                // The turn actor restarted while the turn kept running here.
                let _ = current.reattach.send(delivered);
                return Ok(RunAck::Attached);
            }
            if !current.handle.is_finished() {
                return Err(format!("turn {} is still running on this provider", current.turn_id));
            }
        }
        self.current = None;
        if self.exited.is_some() {
            return Ok(RunAck::Restarting);
        }
        // A turn that had got somewhere (`delivered` events in) and is not
        // running here was cut by a crash. Only a driver that can resume from
        // a checkpoint may take it up: prompting a real agent again would
        // repeat what it already did, actions included.
        if (input.resume.is_some() || delivered > 0) && !self.driver.capabilities().resume {
            return Err(format!("provider {} cannot resume a turn cut mid-way", self.provider));
        }
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let (reattach_tx, reattach_rx) = mpsc::unbounded_channel();
        let turn_id = input.turn_id.clone();
        let handle = self.driver.start_turn(input, events_tx).map_err(|e| e.to_string())?;
        let forwarder = tokio::spawn(forward(names::turn(&self.session_id), events_rx, reattach_rx, delivered));
        self.current = Some(CurrentTurn { turn_id, handle, _forwarder: AbortOnDrop(forwarder), reattach: reattach_tx });
        Ok(RunAck::Started)
    }
}

/// Stops the agent processes a killed daemon left behind (they would hold
/// their agent sessions and never hear from us again). Run at start-up,
/// before any provider worker exists; returns how many were stopped.
pub async fn stop_orphaned_agents(store: &Store) -> Result<usize, bosun_state::StoreError> {
    let mut stopped = 0;
    let mut batch = Batch::by(Owner::Startup);
    for process in store.scan::<AgentProcess>()? {
        if bosun_isolation::process::kill_group_if_same(process.pid, process.start_ticks) {
            tracing::warn!(session_id = %process.session_id, pid = process.pid, provider = %process.provider, "stopped an agent process left behind by the last run");
            stopped += 1;
        }
        batch.delete::<AgentProcess>(&process.session_id);
    }
    store.commit(batch).await?;
    Ok(stopped)
}

/// Numbers the driver's events (from `delivered + 1`) and delivers them in
/// order to the turn actor named `turn_name`, waiting while it restarts.
///
/// One batch is in flight at a time: what the driver says while the turn
/// actor persists a batch goes out together as the next one, so a fast agent
/// costs one durable commit per batch rather than one per line, and a slow
/// disk delays a line by about one flush rather than by a queue of them.
async fn forward(
    turn_name: String,
    mut events: mpsc::UnboundedReceiver<AgentEvent>,
    mut reattach: mpsc::UnboundedReceiver<u64>,
    delivered: u64,
) {
    let first = delivered + 1;
    let mut buffer: Vec<AgentEvent> = Vec::new();
    let mut cursor = delivered; // number of the last event handed over
    let mut driver_open = true;
    let mut in_flight: Option<oneshot::Receiver<()>> = None;
    loop {
        // Waiting on a restarting turn actor: poll for it to come back.
        let behind = cursor + 1 < first + buffer.len() as u64;
        tokio::select! {
            ev = events.recv(), if driver_open => match ev {
                Some(ev) => buffer.push(ev),
                None => driver_open = false,
            },
            Some(acked) = reattach.recv() => {
                cursor = acked.max(first - 1);
                in_flight = None;
            }
            // Persisted, or dropped with a dying turn actor (which asks for a
            // replay when it is back): either way the next batch may go.
            _ = async { if let Some(done) = in_flight.as_mut() { let _ = done.await; } }, if in_flight.is_some() => {
                in_flight = None;
            }
            _ = tokio::time::sleep(Duration::from_millis(20)), if behind && in_flight.is_none() => {}
            else => return,
        }
        let last_no = first + buffer.len() as u64; // one past the last
        if in_flight.is_some() || cursor + 1 >= last_no {
            continue;
        }
        let Some(turn) = crate::route::lookup_now::<TurnMsg>(&turn_name) else { continue };
        let from = cursor + 1;
        let batch = buffer[(from - first) as usize..].to_vec();
        let (done_tx, done_rx) = oneshot::channel();
        if turn.send_message(TurnMsg::Agent { first: from, events: batch, done: done_tx }).is_ok() {
            cursor = last_no - 1;
            in_flight = Some(done_rx);
        }
    }
}
