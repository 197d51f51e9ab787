//! The supervision core: [`Supervision`], which an actor owns in its state.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::time::{Duration, Instant};

use ractor::{ActorCell, ActorId, ActorRef, ActorStatus, SpawnErr, SupervisionEvent};
use tokio::task::AbortHandle;

use crate::error::SupervisionError;
use crate::spec::{ChildSpec, Restart, Shutdown, Strategy, SupervisorConfig};
#[cfg(doc)]
use crate::supervises::Supervises;

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

/// The message a supervisor sends itself when a backoff delay is over; the
/// embedding actor hands it to [`Supervises::supervise_restart`], which
/// passes it on to [`Supervision::handle_restart`].
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
    /// Restart intensity exceeded: stop the children
    /// ([`Supervision::shutdown`]), then fail the embedding actor with
    /// `reason`. [`Supervises`] does both.
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

/// The supervision core an actor owns in its state (see the crate docs for
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

    /// Feed every `SupervisionEvent` of the owning actor here (which
    /// [`Supervises::supervise_event`] does, and handles the outcome).
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
