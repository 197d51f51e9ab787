//! OTP-style supervision on top of ractor.
//!
//! ractor links children to a parent and reports their exits as
//! [`SupervisionEvent`]s, but it never restarts anything by itself (and its
//! default `handle_supervisor_evt` stops the parent when any child exits).
//! This module supplies the missing policy: restart strategies, restart
//! types, restart intensity with escalation, backoff and ordered shutdown.
//!
//! It comes in two layers:
//!
//! * [`Supervision`]: a plain struct that any actor can own in its state.
//!   Several Bosun actors are business actors *and* supervisors (a session
//!   supervises its turn actor and provider worker; the sessions supervisor
//!   adds and removes session children at run time), so supervision must be
//!   embeddable rather than a separate actor in the tree.
//! * [`Supervisor`]: a ready-made generic supervisor actor built on it, for
//!   places that only need to supervise.
//!
//! # Embedding contract
//!
//! An actor that embeds [`Supervision`] must:
//!
//! 1. start its children with [`Supervision::start_child`], passing its own
//!    cell as `supervisor`;
//! 2. override `handle_supervisor_evt` and feed **every** event to
//!    [`Supervision::handle_event`] (never fall back to ractor's default,
//!    which stops the actor);
//! 3. accept a message variant built from [`RestartChild`]
//!    (`impl From<RestartChild> for MyMsg`) and pass it to
//!    [`Supervision::handle_restart`];
//! 4. on [`Outcome::Escalate`] (or an `Err`), call
//!    [`Supervision::shutdown`] and then return `Err(..)` from the handler, so
//!    that *its* parent receives `SupervisionEvent::ActorFailed` and applies
//!    its own policy (OTP: "the supervisor terminates its children and
//!    itself; its parent decides"). Returning `Err` skips `post_stop`, which
//!    is why `shutdown` must be called first;
//! 5. call [`Supervision::shutdown`] from `post_stop`: ractor kills the
//!    children of an exiting actor without running their `post_stop`, so a
//!    graceful, ordered stop has to be done by hand.
//!
//! ```no_run
//! use bosun_actors::supervision::{Outcome, RestartChild, Supervision, SupervisorConfig};
//! use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
//!
//! struct Session;
//! enum SessionMsg { Restart(RestartChild) /* , business messages… */ }
//! impl From<RestartChild> for SessionMsg {
//!     fn from(r: RestartChild) -> Self { SessionMsg::Restart(r) }
//! }
//! struct SessionState { children: Supervision }
//!
//! impl Actor for Session {
//!     type Msg = SessionMsg;
//!     type State = SessionState;
//!     type Arguments = ();
//!     async fn pre_start(&self, myself: ActorRef<SessionMsg>, _: ()) -> Result<SessionState, ActorProcessingErr> {
//!         let children = Supervision::new(SupervisorConfig::default());
//!         // children.start_child(turn_spec, &myself).await?; …
//!         Ok(SessionState { children })
//!     }
//!     async fn handle(&self, myself: ActorRef<SessionMsg>, msg: SessionMsg, st: &mut SessionState) -> Result<(), ActorProcessingErr> {
//!         match msg {
//!             SessionMsg::Restart(req) => {
//!                 if let Outcome::Escalate { reason } = st.children.handle_restart(req, &myself).await? {
//!                     st.children.shutdown().await;
//!                     return Err(reason.into());
//!                 }
//!             }
//!         }
//!         Ok(())
//!     }
//!     async fn handle_supervisor_evt(&self, myself: ActorRef<SessionMsg>, evt: SupervisionEvent, st: &mut SessionState) -> Result<(), ActorProcessingErr> {
//!         if let Outcome::Escalate { reason } = st.children.handle_event(&evt, &myself).await? {
//!             st.children.shutdown().await;
//!             return Err(reason.into());
//!         }
//!         Ok(())
//!     }
//!     async fn post_stop(&self, _: ActorRef<SessionMsg>, st: &mut SessionState) -> Result<(), ActorProcessingErr> {
//!         st.children.shutdown().await;
//!         Ok(())
//!     }
//! }
//! ```
//!
//! # Addressing children
//!
//! A restarted actor is a new [`ActorCell`] with a new mailbox, so nobody
//! should keep a child's cell. Each child's [`ChildSpec::id`] is its
//! registered ractor name; reach it with `ractor::registry::where_is(id)`
//! (or [`Supervision::child`] from inside the supervisor).

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, ActorStatus, RpcReplyPort, SpawnErr, SupervisionEvent,
};
use tokio::task::AbortHandle;

#[cfg(test)]
mod tests;

/// How many times a start is retried when ractor still has the child's name
/// registered (the previous incarnation is being torn down concurrently).
const NAME_RETRY_ATTEMPTS: u32 = 10;
/// Pause between those retries.
const NAME_RETRY_PAUSE: Duration = Duration::from_millis(10);
/// How long to wait for a killed actor to be reported stopped. A kill cancels
/// the actor's async work at its next await point; only a handler that blocks
/// its thread can outlive this, and then there is nothing more we can do.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// Exit reason given to children the supervisor stops itself (OTP's `shutdown`).
const STOP_REASON: &str = "shutdown";

/// Which children are restarted when one of them has to be restarted.
///
/// Why: children that depend on each other need to be restarted together,
/// independent ones should not disturb each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// Restart only the child that exited.
    #[default]
    OneForOne,
    /// Stop all other children (reverse start order), then restart all of
    /// them in start order. For children that cannot work without each other.
    OneForAll,
    /// Stop and restart the exited child and every child started after it.
    /// For children where later ones depend on earlier ones.
    RestForOne,
}

/// When a child is restarted after it exits.
///
/// Why: some children must always run, some are allowed to finish, some are
/// one-shot jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Restart {
    /// Restart on any exit, normal or not.
    #[default]
    Permanent,
    /// Restart only after a failure (`ActorFailed`: a panic or an `Err` from
    /// a handler); a normal stop (`ActorTerminated`, including a kill by a
    /// third party) removes the child.
    Transient,
    /// Never restart; on exit the child is removed. Also removed, not
    /// restarted, when a sibling's failure stops it under `OneForAll` or
    /// `RestForOne` (as in OTP).
    Temporary,
}

/// Restart intensity: more than `max_restarts` restarts within `within`
/// makes the supervisor give up and escalate to its own parent.
///
/// Why: a child that keeps crashing should not be restarted forever; the
/// failure is handed up the tree where a wider restart may fix it. Counted
/// supervisor-wide (one restart decision counts once, even when it restarts a
/// group), like OTP. Limits multiply across levels of the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Intensity {
    /// Restarts allowed within the window; one more escalates.
    pub max_restarts: u32,
    /// Length of the sliding window.
    pub within: Duration,
}

impl Default for Intensity {
    fn default() -> Self {
        Self { max_restarts: 5, within: Duration::from_secs(10) }
    }
}

/// Delay before restarting a child that failed repeatedly.
///
/// The n-th restart of a child within the intensity window waits 0 for
/// n = 1, then `initial * 2^(n-2)`, capped at `max`. Why: immediate restarts
/// of a child whose failure cause persists (a port still in use, a crashed
/// agent binary) would burn the whole intensity budget in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Delay before the second restart within the window.
    pub initial: Duration,
    /// Upper bound of any delay.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { initial: Duration::from_millis(10), max: Duration::from_secs(1) }
    }
}

impl Backoff {
    /// Delay before the `n`-th restart (1-based) of a child within the window.
    pub fn delay(&self, n: usize) -> Duration {
        if n <= 1 {
            return Duration::ZERO;
        }
        let exponent = u32::try_from(n - 2).unwrap_or(u32::MAX).min(31);
        self.initial.saturating_mul(1u32 << exponent).min(self.max)
    }
}

/// How a child is stopped by its supervisor.
///
/// Why: a graceful stop lets a child run its `post_stop` (flush state, end
/// its subprocess), but a child that does not stop must not hang its
/// supervisor forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// Ask the child to stop, wait up to the duration, then kill it. A child
    /// busy in a handler only sees the stop request once the handler returns.
    Timeout(Duration),
    /// Kill at once: its async work is cancelled, `post_stop` does not run.
    Kill,
}

impl Default for Shutdown {
    /// OTP's default for workers: 5 s.
    fn default() -> Self {
        Shutdown::Timeout(Duration::from_secs(5))
    }
}

/// Hook called with a child's id each time it has been restarted.
pub type RestartHook = Arc<dyn Fn(&str) + Send + Sync>;

/// Supervisor-wide policy.
#[derive(Clone, Default)]
pub struct SupervisorConfig {
    /// Which children to restart together.
    pub strategy: Strategy,
    /// When to give up and escalate.
    pub intensity: Intensity,
    /// How long to wait before repeated restarts.
    pub backoff: Backoff,
    /// Called after each successful restart of a child, with its id. Why: the
    /// daemon counts restarts for `/health`. Runs inside the supervisor's
    /// handler: keep it quick and non-blocking.
    pub on_restart: Option<RestartHook>,
}

impl fmt::Debug for SupervisorConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SupervisorConfig")
            .field("strategy", &self.strategy)
            .field("intensity", &self.intensity)
            .field("backoff", &self.backoff)
            .field("on_restart", &self.on_restart.as_ref().map(|_| "Fn(&str)"))
            .finish()
    }
}

/// Starts one incarnation of a child. It receives the supervisor's cell and
/// must `spawn_linked` the child with `Some(id)` as its name and that cell as
/// its supervisor, returning the child's cell.
///
/// Why a factory: a restart needs a fresh handler and fresh arguments each
/// time. [`ChildSpec::for_actor`] builds one that respects the contract.
pub type StartFn = Arc<dyn Fn(ActorCell) -> BoxFuture<'static, Result<ActorCell, SpawnErr>> + Send + Sync>;

/// Wraps an async closure as a [`StartFn`].
pub fn start_fn<F, Fut>(f: F) -> StartFn
where
    F: Fn(ActorCell) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<ActorCell, SpawnErr>> + Send + 'static,
{
    Arc::new(move |supervisor| Box::pin(f(supervisor)))
}

/// Everything a supervisor needs to (re)start and stop one child.
#[derive(Clone)]
pub struct ChildSpec {
    /// Stable id, unique among the supervisor's children, and the child's
    /// registered ractor name: others find the current incarnation with
    /// `ractor::registry::where_is(id)`, so a restart leaves no stale
    /// reference. Being global, the name must be unique process-wide.
    pub id: String,
    /// When to restart it.
    pub restart: Restart,
    /// How to stop it.
    pub shutdown: Shutdown,
    /// How to start it (see [`StartFn`] for the contract).
    pub start: StartFn,
}

impl fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildSpec")
            .field("id", &self.id)
            .field("restart", &self.restart)
            .field("shutdown", &self.shutdown)
            .finish_non_exhaustive()
    }
}

impl ChildSpec {
    /// A spec from its parts.
    pub fn new(id: impl Into<String>, restart: Restart, shutdown: Shutdown, start: StartFn) -> Self {
        Self { id: id.into(), restart, shutdown, start }
    }

    /// A spec for a ractor actor: `make` builds a fresh handler and its
    /// arguments for every incarnation, and the actor is spawned linked to
    /// the supervisor under the name `id`. Why: it cannot get the naming and
    /// linking contract wrong.
    pub fn for_actor<A, F>(id: impl Into<String>, restart: Restart, shutdown: Shutdown, make: F) -> Self
    where
        A: Actor,
        F: Fn() -> (A, A::Arguments) + Send + Sync + 'static,
    {
        let id = id.into();
        let name = id.clone();
        let start: StartFn = Arc::new(move |supervisor: ActorCell| {
            let (handler, args) = make();
            let name = name.clone();
            Box::pin(async move {
                let (actor, _join) = A::spawn_linked(Some(name), handler, args, supervisor).await?;
                Ok(actor.get_cell())
            })
        });
        Self { id, restart, shutdown, start }
    }
}

/// The message a supervisor sends itself when a backoff delay is over; the
/// embedding actor hands it to [`Supervision::handle_restart`].
///
/// Why a generation: a restart scheduled before the child was restarted for
/// another reason, terminated or re-added must not act on the new state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestartChild {
    /// Child whose restart was scheduled (the one that failed; under
    /// `OneForAll`/`RestForOne` its group restarts with it).
    pub child_id: String,
    /// The child's generation when the restart was scheduled.
    pub generation: u64,
}

/// What [`Supervision::handle_event`] / [`Supervision::handle_restart`] did.
/// Why: the embedding actor must know when to escalate; the rest is for logs
/// and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing to do: not a child exit, an event from an old incarnation or
    /// from a child the supervisor stopped itself, or a stale restart.
    Ignored,
    /// The child exited for good (transient after a normal stop, temporary)
    /// and was removed.
    Exited { id: String },
    /// These children were restarted, in this order.
    Restarted { ids: Vec<String> },
    /// These children are stopped and will be restarted after `delay`.
    RestartScheduled { ids: Vec<String>, delay: Duration },
    /// Restart intensity exceeded: call [`Supervision::shutdown`], then fail
    /// the embedding actor with `reason`.
    Escalate { reason: String },
}

/// Public view of one child.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildInfo {
    /// The child's id (and registered name).
    pub id: String,
    /// Whether an incarnation is currently alive (false while a restart is
    /// pending).
    pub running: bool,
    /// How many times this child has been restarted.
    pub restarts: u64,
}

/// Errors of [`Supervision`]'s operations.
#[derive(Debug, thiserror::Error)]
pub enum SupervisionError {
    /// No child has this id.
    #[error("no child with id `{0}`")]
    UnknownChild(String),
    /// A child with this id is already supervised.
    #[error("a child with id `{0}` already exists")]
    DuplicateChild(String),
    /// The start function failed (after retries if the name was still taken).
    #[error("failed to start child `{id}`: {source}")]
    StartFailed {
        id: String,
        #[source]
        source: SpawnErr,
    },
    /// [`Supervision::shutdown`] has run; no more children can be started.
    #[error("the supervisor is shutting down")]
    ShuttingDown,
}

/// Book-keeping for one child.
struct ChildEntry {
    spec: ChildSpec,
    /// The current incarnation, `None` while stopped (pending restart or shut down).
    cell: Option<ActorCell>,
    /// Bumped whenever the supervisor changes the child's course (stop for a
    /// group restart, scheduling), so a stale `RestartChild` is recognisable.
    generation: u64,
    /// Stopped by a restart decision and waiting to be started again.
    waiting: bool,
    /// Successful restarts so far.
    restarts: u64,
    /// This child's restart decisions inside the window, for backoff.
    recent: VecDeque<Instant>,
}

/// Why the child went down.
enum Down {
    /// `ActorTerminated`: a normal stop (or a kill).
    Terminated(Option<String>),
    /// `ActorFailed`: a panic or an `Err` from a handler.
    Failed(String),
}

/// The supervision core an actor owns in its state (see the module docs for
/// the embedding contract). Children are kept in start order.
pub struct Supervision {
    config: SupervisorConfig,
    children: Vec<ChildEntry>,
    /// Supervisor-wide restart decisions inside the intensity window.
    restart_log: VecDeque<Instant>,
    total_restarts: u64,
    next_generation: u64,
    /// Backoff timers by child id, aborted when superseded or on shutdown.
    timers: HashMap<String, AbortHandle>,
    shutting_down: bool,
}

impl fmt::Debug for Supervision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Supervision")
            .field("config", &self.config)
            .field("children", &self.children())
            .field("total_restarts", &self.total_restarts)
            .field("shutting_down", &self.shutting_down)
            .finish()
    }
}

impl Supervision {
    /// An empty supervision with this policy.
    pub fn new(config: SupervisorConfig) -> Self {
        Self {
            config,
            children: Vec::new(),
            restart_log: VecDeque::new(),
            total_restarts: 0,
            next_generation: 0,
            timers: HashMap::new(),
            shutting_down: false,
        }
    }

    /// The policy in force.
    pub fn config(&self) -> &SupervisorConfig {
        &self.config
    }

    /// Adds a child at the end of the start order and starts it. Works the
    /// same for static children (from `pre_start`) and dynamic ones (added
    /// later). Nothing is added if the start fails.
    pub async fn start_child(
        &mut self,
        spec: ChildSpec,
        supervisor: &ActorCell,
    ) -> Result<ActorCell, SupervisionError> {
        if self.shutting_down {
            return Err(SupervisionError::ShuttingDown);
        }
        if self.index_of(&spec.id).is_some() {
            return Err(SupervisionError::DuplicateChild(spec.id));
        }
        let cell = start_incarnation(&spec, supervisor).await?;
        let generation = self.new_generation();
        self.children.push(ChildEntry {
            spec,
            cell: Some(cell.clone()),
            generation,
            waiting: false,
            restarts: 0,
            recent: VecDeque::new(),
        });
        Ok(cell)
    }

    /// Stops a child gracefully per its [`Shutdown`] and forgets its spec, so
    /// it is not restarted. Returns once the child has stopped.
    pub async fn terminate_child(&mut self, id: &str) -> Result<(), SupervisionError> {
        let idx = self.index_of(id).ok_or_else(|| SupervisionError::UnknownChild(id.to_string()))?;
        let entry = self.children.remove(idx);
        self.cancel_timer(id);
        if let Some(cell) = entry.cell {
            stop_cell(&cell, entry.spec.shutdown, id).await;
        }
        Ok(())
    }

    /// The current incarnation of a child, if it is running.
    pub fn child(&self, id: &str) -> Option<ActorCell> {
        self.index_of(id).and_then(|idx| self.children[idx].cell.clone())
    }

    /// All children in start order.
    pub fn children(&self) -> Vec<ChildInfo> {
        self.children
            .iter()
            .map(|entry| ChildInfo {
                id: entry.spec.id.clone(),
                running: entry.cell.as_ref().is_some_and(|cell| cell.get_status() < ActorStatus::Stopping),
                restarts: entry.restarts,
            })
            .collect()
    }

    /// Successful child restarts since creation, removed children included
    /// (a group restart of three children counts three).
    pub fn total_restarts(&self) -> u64 {
        self.total_restarts
    }

    /// Feed every `SupervisionEvent` of the owning actor here.
    ///
    /// Exits of current children are handled per their [`Restart`] type and
    /// the [`Strategy`]; everything else returns [`Outcome::Ignored`]. On
    /// [`Outcome::Escalate`] the caller must call [`Supervision::shutdown`]
    /// and fail. The `Result` is for future failure modes: today failures to
    /// restart are folded into the intensity count and end in `Escalate`.
    ///
    /// (Not an `async fn` so that the returned future does not borrow the
    /// event, which is not `Sync`, and stays `Send`.)
    pub fn handle_event<'a, M>(
        &'a mut self,
        event: &SupervisionEvent,
        supervisor: &ActorRef<M>,
    ) -> impl Future<Output = Result<Outcome, SupervisionError>> + Send + 'a
    where
        M: ractor::Message + From<RestartChild>,
    {
        let exit: Option<(ActorId, Down)> = match event {
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                Some((cell.get_id(), Down::Terminated(reason.clone())))
            }
            SupervisionEvent::ActorFailed(cell, err) => Some((cell.get_id(), Down::Failed(err.to_string()))),
            _ => None,
        };
        let supervisor = supervisor.clone();
        async move {
            let Some((cell_id, down)) = exit else {
                return Ok(Outcome::Ignored);
            };
            if self.shutting_down {
                return Ok(Outcome::Ignored);
            }
            let Some(idx) = self.index_of_cell(cell_id) else {
                tracing::trace!(actor = %cell_id, "supervision event from a non-current child ignored");
                return Ok(Outcome::Ignored);
            };
            self.children[idx].cell = None;
            let id = self.children[idx].spec.id.clone();
            let restart = self.children[idx].spec.restart;
            let (restart_it, reason) = match (&down, restart) {
                (_, Restart::Temporary) | (Down::Terminated(_), Restart::Transient) => (false, String::new()),
                (Down::Terminated(reason), Restart::Permanent) => {
                    (true, format!("stopped ({})", reason.as_deref().unwrap_or("no reason given")))
                }
                (Down::Failed(err), _) => (true, format!("failed: {err}")),
            };
            if !restart_it {
                tracing::info!(child = %id, "child exited and is not restarted");
                self.children.remove(idx);
                self.cancel_timer(&id);
                return Ok(Outcome::Exited { id });
            }
            tracing::warn!(child = %id, %reason, "child exited; restarting");
            Ok(self.restart_after_exit(idx, reason, &supervisor).await)
        }
    }

    /// Call when a [`RestartChild`] message arrives (a backoff delay is
    /// over). Stale requests return [`Outcome::Ignored`].
    ///
    /// Takes the typed `ActorRef` (not just the cell) because a failed
    /// restart may have to schedule another delayed one.
    pub async fn handle_restart<M>(
        &mut self,
        req: RestartChild,
        supervisor: &ActorRef<M>,
    ) -> Result<Outcome, SupervisionError>
    where
        M: ractor::Message + From<RestartChild>,
    {
        if self.shutting_down {
            return Ok(Outcome::Ignored);
        }
        let Some(idx) = self.index_of(&req.child_id) else {
            return Ok(Outcome::Ignored);
        };
        let entry = &self.children[idx];
        if entry.generation != req.generation || !entry.waiting {
            tracing::debug!(child = %req.child_id, "stale restart request ignored");
            return Ok(Outcome::Ignored);
        }
        self.timers.remove(&req.child_id);
        match self.start_waiting_group(idx, supervisor).await {
            Ok(ids) => Ok(Outcome::Restarted { ids }),
            Err((failed, reason)) => Ok(self.restart_after_exit(failed, reason, supervisor).await),
        }
    }

    /// Stops all children in reverse start order, each per its [`Shutdown`]
    /// (ask, wait, then kill), and cancels pending restarts. Afterwards no
    /// child is started or restarted again. Call it from `post_stop` and
    /// before escalating: a ractor parent that exits kills its children
    /// without running their `post_stop`. Idempotent.
    pub async fn shutdown(&mut self) {
        self.shutting_down = true;
        for (_, timer) in self.timers.drain() {
            timer.abort();
        }
        for idx in (0..self.children.len()).rev() {
            let generation = self.new_generation();
            let entry = &mut self.children[idx];
            entry.generation = generation;
            entry.waiting = false;
            if let Some(cell) = entry.cell.take() {
                stop_cell(&cell, entry.spec.shutdown, &entry.spec.id).await;
            }
        }
    }

    // ----- internals -----

    fn index_of(&self, id: &str) -> Option<usize> {
        self.children.iter().position(|c| c.spec.id == id)
    }

    fn index_of_cell(&self, cell_id: ActorId) -> Option<usize> {
        self.children.iter().position(|c| c.cell.as_ref().is_some_and(|cell| cell.get_id() == cell_id))
    }

    fn new_generation(&mut self) -> u64 {
        self.next_generation += 1;
        self.next_generation
    }

    fn cancel_timer(&mut self, id: &str) {
        if let Some(timer) = self.timers.remove(id) {
            timer.abort();
        }
    }

    /// Indices of the children restarted together with `idx`, in start order.
    fn group_of(&self, idx: usize) -> Vec<usize> {
        match self.config.strategy {
            Strategy::OneForOne => vec![idx],
            Strategy::OneForAll => (0..self.children.len()).collect(),
            Strategy::RestForOne => (idx..self.children.len()).collect(),
        }
    }

    /// Records a restart decision; true when the intensity is exceeded.
    fn record_restart(&mut self, now: Instant) -> bool {
        let within = self.config.intensity.within;
        prune(&mut self.restart_log, now, within);
        self.restart_log.push_back(now);
        self.restart_log.len() > self.config.intensity.max_restarts as usize
    }

    /// Records a restart of child `idx` and returns its backoff delay.
    fn backoff_for(&mut self, idx: usize, now: Instant) -> Duration {
        let within = self.config.intensity.within;
        let recent = &mut self.children[idx].recent;
        prune(recent, now, within);
        recent.push_back(now);
        self.config.backoff.delay(recent.len())
    }

    /// The restart loop after child `failed` went down (its cell already
    /// cleared): count toward intensity, stop its group, then restart the
    /// group now or schedule it. A child whose start fails counts as a new
    /// failure, so the loop ends at the latest when the intensity is
    /// exceeded.
    async fn restart_after_exit<M>(
        &mut self,
        mut failed: usize,
        mut reason: String,
        supervisor: &ActorRef<M>,
    ) -> Outcome
    where
        M: ractor::Message + From<RestartChild>,
    {
        loop {
            let now = Instant::now();
            let failed_id = self.children[failed].spec.id.clone();
            if self.record_restart(now) {
                let intensity = self.config.intensity;
                let reason = format!(
                    "restart intensity exceeded (more than {} restarts in {:?}); last: child `{failed_id}` {reason}",
                    intensity.max_restarts, intensity.within
                );
                tracing::error!(%reason, "supervisor escalates");
                return Outcome::Escalate { reason };
            }
            let delay = self.backoff_for(failed, now);

            // Stop the group in reverse start order; mark it waiting.
            let group = self.group_of(failed);
            for &i in group.iter().rev() {
                let generation = self.new_generation();
                let entry = &mut self.children[i];
                entry.generation = generation;
                entry.waiting = true;
                if let Some(cell) = entry.cell.take() {
                    stop_cell(&cell, entry.spec.shutdown, &entry.spec.id).await;
                }
            }
            // Temporary siblings stopped on the way are removed, not restarted.
            let mut temporaries: Vec<String> = Vec::new();
            for &i in &group {
                let entry = &self.children[i];
                if i != failed && entry.spec.restart == Restart::Temporary {
                    temporaries.push(entry.spec.id.clone());
                }
            }
            for id in &temporaries {
                if let Some(i) = self.index_of(id) {
                    self.children.remove(i);
                    self.cancel_timer(id);
                }
            }
            let Some(failed_idx) = self.index_of(&failed_id) else {
                // Cannot happen (the failed child is never temporary here).
                return Outcome::Exited { id: failed_id };
            };
            failed = failed_idx;
            let ids: Vec<String> = self
                .group_of(failed)
                .into_iter()
                .filter(|&i| self.children[i].waiting)
                .map(|i| self.children[i].spec.id.clone())
                .collect();

            if !delay.is_zero() {
                self.schedule_restart(failed, delay, supervisor);
                tracing::info!(child = %failed_id, ?delay, ?ids, "restart scheduled");
                return Outcome::RestartScheduled { ids, delay };
            }
            match self.start_waiting_group(failed, supervisor).await {
                Ok(ids) => return Outcome::Restarted { ids },
                Err((next_failed, next_reason)) => {
                    failed = next_failed;
                    reason = next_reason;
                }
            }
        }
    }

    /// Sends `RestartChild` for child `idx` to the supervisor after `delay`.
    fn schedule_restart<M>(&mut self, idx: usize, delay: Duration, supervisor: &ActorRef<M>)
    where
        M: ractor::Message + From<RestartChild>,
    {
        let entry = &self.children[idx];
        let req = RestartChild { child_id: entry.spec.id.clone(), generation: entry.generation };
        let id = req.child_id.clone();
        let supervisor = supervisor.clone();
        let task = tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if supervisor.send_message(M::from(req)).is_err() {
                tracing::debug!("supervisor gone before a scheduled restart");
            }
        });
        if let Some(previous) = self.timers.insert(id, task.abort_handle()) {
            previous.abort();
        }
    }

    /// Starts, in start order, the waiting children of `idx`'s group. On the
    /// first start failure returns that child's index and the reason (the
    /// children started so far keep running; the caller treats it as a new
    /// failure).
    async fn start_waiting_group(
        &mut self,
        idx: usize,
        supervisor: &ActorCell,
    ) -> Result<Vec<String>, (usize, String)> {
        let mut started = Vec::new();
        for i in self.group_of(idx) {
            if !self.children[i].waiting {
                continue;
            }
            let spec = self.children[i].spec.clone();
            match start_incarnation(&spec, supervisor).await {
                Ok(cell) => {
                    let generation = self.new_generation();
                    let entry = &mut self.children[i];
                    entry.cell = Some(cell);
                    entry.waiting = false;
                    entry.generation = generation;
                    entry.restarts += 1;
                    self.total_restarts += 1;
                    if let Some(hook) = &self.config.on_restart {
                        hook(&spec.id);
                    }
                    started.push(spec.id);
                }
                Err(err) => {
                    tracing::warn!(child = %spec.id, error = %err, "restart failed");
                    return Err((i, format!("could not be restarted: {err}")));
                }
            }
        }
        Ok(started)
    }
}

/// Drops window entries older than `within`.
fn prune(log: &mut VecDeque<Instant>, now: Instant, within: Duration) {
    while log.front().is_some_and(|&t| now.saturating_duration_since(t) > within) {
        log.pop_front();
    }
}

/// Runs a child's start function, retrying while its name is still
/// registered to the dying previous incarnation, and checks the link.
async fn start_incarnation(spec: &ChildSpec, supervisor: &ActorCell) -> Result<ActorCell, SupervisionError> {
    let mut attempt = 0;
    let cell = loop {
        match (spec.start)(supervisor.clone()).await {
            Ok(cell) => break cell,
            Err(SpawnErr::ActorAlreadyRegistered(name)) if attempt + 1 < NAME_RETRY_ATTEMPTS => {
                attempt += 1;
                tracing::debug!(child = %spec.id, %name, attempt, "name still registered; retrying");
                tokio::time::sleep(NAME_RETRY_PAUSE).await;
            }
            Err(source) => return Err(SupervisionError::StartFailed { id: spec.id.clone(), source }),
        }
    };
    if cell.get_name().as_deref() != Some(spec.id.as_str()) {
        tracing::warn!(child = %spec.id, name = ?cell.get_name(), "child not registered under its id; where_is(id) will not find it");
    }
    let linked = cell.try_get_supervisor().is_some_and(|s| s.get_id() == supervisor.get_id());
    if !linked && cell.get_status() < ActorStatus::Stopping {
        tracing::warn!(child = %spec.id, "start fn did not link the child to its supervisor; linking it now");
        cell.link(supervisor.clone());
    }
    Ok(cell)
}

/// Stops one incarnation per its [`Shutdown`] and waits until ractor reports
/// it stopped (its name is unregistered by then).
async fn stop_cell(cell: &ActorCell, shutdown: Shutdown, id: &str) {
    if cell.get_status() == ActorStatus::Stopped {
        return;
    }
    if let Shutdown::Timeout(timeout) = shutdown {
        cell.stop(Some(STOP_REASON.to_string()));
        if cell.wait(Some(timeout)).await.is_ok() {
            return;
        }
        tracing::warn!(child = %id, ?timeout, "child did not stop in time; killing it");
    }
    cell.kill();
    if cell.wait(Some(KILL_WAIT)).await.is_err() {
        tracing::error!(child = %id, "child still not stopped after a kill");
    }
}

// ----- the generic supervisor actor -----

/// Messages of the generic [`Supervisor`] actor.
pub enum SupervisorMsg {
    /// A backoff delay is over (sent by the supervisor to itself).
    Restart(RestartChild),
    /// Add a child at the end of the start order and start it; replies the
    /// start error as text.
    StartChild(ChildSpec, RpcReplyPort<Result<(), String>>),
    /// Stop a child gracefully and remove it; replies false if unknown.
    TerminateChild(String, RpcReplyPort<bool>),
    /// List the children in start order.
    Children(RpcReplyPort<Vec<ChildInfo>>),
}

impl fmt::Debug for SupervisorMsg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SupervisorMsg::Restart(req) => f.debug_tuple("Restart").field(req).finish(),
            SupervisorMsg::StartChild(spec, _) => f.debug_tuple("StartChild").field(spec).finish(),
            SupervisorMsg::TerminateChild(id, _) => f.debug_tuple("TerminateChild").field(id).finish(),
            SupervisorMsg::Children(_) => f.write_str("Children"),
        }
    }
}

impl From<RestartChild> for SupervisorMsg {
    fn from(req: RestartChild) -> Self {
        SupervisorMsg::Restart(req)
    }
}

/// A ready-made supervisor actor for places that only supervise. Arguments:
/// the policy and the initial children, started in order in `pre_start` (if
/// one fails to start, those already started are stopped and the spawn
/// fails). When the restart intensity is exceeded it stops its children and
/// fails, so its own parent receives `ActorFailed`.
pub struct Supervisor;

impl Supervisor {
    /// Stops the children and returns the error that fails the actor.
    async fn escalate(state: &mut Supervision, reason: String) -> Result<(), ActorProcessingErr> {
        state.shutdown().await;
        Err(format!("supervisor escalated: {reason}").into())
    }

    /// Applies an outcome: escalation fails the actor, the rest is done.
    async fn apply(
        state: &mut Supervision,
        outcome: Result<Outcome, SupervisionError>,
    ) -> Result<(), ActorProcessingErr> {
        match outcome {
            Ok(Outcome::Escalate { reason }) => Self::escalate(state, reason).await,
            Ok(_) => Ok(()),
            Err(err) => Self::escalate(state, err.to_string()).await,
        }
    }
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = Supervision;
    type Arguments = (SupervisorConfig, Vec<ChildSpec>);

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        (config, specs): Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut supervision = Supervision::new(config);
        for spec in specs {
            if let Err(err) = supervision.start_child(spec, &myself).await {
                supervision.shutdown().await;
                return Err(err.into());
            }
        }
        Ok(supervision)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SupervisorMsg::Restart(req) => {
                let outcome = state.handle_restart(req, &myself).await;
                Self::apply(state, outcome).await
            }
            SupervisorMsg::StartChild(spec, reply) => {
                let result = state.start_child(spec, &myself).await.map(|_| ()).map_err(|err| err.to_string());
                let _ = reply.send(result);
                Ok(())
            }
            SupervisorMsg::TerminateChild(id, reply) => {
                let known = state.terminate_child(&id).await.is_ok();
                let _ = reply.send(known);
                Ok(())
            }
            SupervisorMsg::Children(reply) => {
                let _ = reply.send(state.children());
                Ok(())
            }
        }
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let outcome = state.handle_event(&event, &myself).await;
        Self::apply(state, outcome).await
    }

    async fn post_stop(&self, _myself: ActorRef<Self::Msg>, state: &mut Self::State) -> Result<(), ActorProcessingErr> {
        state.shutdown().await;
        Ok(())
    }
}
