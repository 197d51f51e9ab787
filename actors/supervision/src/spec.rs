//! Policy and child specifications: what a supervisor is told, before it
//! starts anything.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use ractor::{Actor, ActorCell, SpawnErr};

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
