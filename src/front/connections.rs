//! The connections the daemon holds open (docs/SECURITY.md, "Connections").
//!
//! Every connection is a file descriptor, and the daemon has a fixed number
//! of them to share with its store, agents and pipes: without a cap, enough
//! idle connections leave it unable to accept anything, `/health` and the
//! admin CLI included. So the count is capped below the open-file limit,
//! with a reserve only loopback peers may use, and when the cap is reached a
//! newcomer takes the place of the oldest connection that is doing nothing
//! (waiting for its first request, or kept alive between requests): idle
//! connections are cheap to open again, a refused newcomer is not served at
//! all. Only when every connection is busy is the newcomer refused.
//!
//! Each connection has a [`Slot`] recording what it is doing, which also
//! gives the timeouts: a head must arrive within `header_timeout`, a kept-alive
//! connection may wait `idle_timeout` for its next request.

use crate::config::ServerConfig;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// The cap when the open-file limit cannot be read.
const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// File descriptors kept free for everything but connections: at least
/// this many, and at least a quarter of the limit.
const MIN_FD_HEADROOM: usize = 64;
/// An open-file limit this high (or unlimited) is counted as this.
const FD_LIMIT_CEILING: u64 = 1 << 20;

/// The numbers, fixed at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most connections open at once, HTTP and WebSocket.
    pub max: usize,
    /// Of those, how many only loopback peers may take: remote peers may
    /// hold `max - loopback_reserve`.
    pub loopback_reserve: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
}

impl Limits {
    /// From `[server]` and this process's soft `RLIMIT_NOFILE`.
    pub fn new(config: &ServerConfig) -> Limits {
        let fd_cap = open_files_soft_limit().map(cap_for_fd_limit);
        let max = match (config.max_connections, fd_cap) {
            (Some(wanted), Some(cap)) if wanted > cap => {
                tracing::warn!(
                    wanted,
                    cap,
                    "[server] max_connections is above what the open-file limit allows; using the lower number \
                     (raise `ulimit -n` to allow more)"
                );
                cap
            }
            (Some(wanted), _) => wanted,
            (None, Some(cap)) => cap,
            (None, None) => DEFAULT_MAX_CONNECTIONS,
        };
        Limits {
            max,
            loopback_reserve: reserve_for(max),
            header_timeout: config.header_timeout(),
            idle_timeout: config.idle_timeout(),
        }
    }
}

impl Limits {
    /// For the loopback metrics listener: a scraper or two, with the
    /// server's timeouts.
    pub fn for_metrics(config: &ServerConfig) -> Limits {
        Limits {
            max: METRICS_MAX_CONNECTIONS,
            loopback_reserve: 0,
            header_timeout: config.header_timeout(),
            idle_timeout: config.idle_timeout(),
        }
    }
}

/// Connections the metrics listener holds at once.
const METRICS_MAX_CONNECTIONS: usize = 16;

/// The soft open-file limit (what `accept` runs into), if it can be read.
fn open_files_soft_limit() -> Option<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit only writes the struct it is given.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    // rlim_t is u64 on Linux; the conversion keeps this building elsewhere.
    #[allow(clippy::unnecessary_cast)]
    let soft = limit.rlim_cur as u64;
    ok.then_some(soft)
}

/// `soft - max(64, soft / 4)`, at least 1.
pub fn cap_for_fd_limit(soft: u64) -> usize {
    let soft = soft.min(FD_LIMIT_CEILING) as usize;
    soft.saturating_sub(MIN_FD_HEADROOM.max(soft / 4)).max(1)
}

/// An eighth of the cap, kept for loopback (the admin CLI, a local proxy).
fn reserve_for(max: usize) -> usize {
    max / 8
}

/// What the daemon holds open; shared by every front the supervisor starts,
/// since connections (WebSockets above all) outlive a restarted front.
pub struct Connections {
    limits: Limits,
    registry: Mutex<Registry>,
}

#[derive(Default)]
struct Registry {
    next_id: u64,
    /// By id, which is the accept order: the first idle one is the oldest.
    slots: BTreeMap<u64, Arc<Slot>>,
    /// Of `slots`, how many have a remote peer; how many are being evicted
    /// (closing, but not closed yet), and of those how many remote.
    remote: usize,
    evicting: usize,
    evicting_remote: usize,
    /// Whether newcomers are being refused, to log the change only.
    refusing: bool,
}

impl Registry {
    /// The oldest connection that is neither busy nor already on its way out,
    /// preferring one that has no bytes of a next head either: a kept-alive
    /// connection whose client has begun a request is about to be busy, and
    /// closing it fails that request, while a slow head (the slowloris) is
    /// still evicted once nothing quieter is left.
    fn oldest_idle(&self, remote_only: bool) -> Option<u64> {
        let candidates = || {
            self.slots.values().filter(move |slot| !(remote_only && slot.loopback)).filter(|slot| {
                let state = slot.state();
                !state.evicted && state.is_idle()
            })
        };
        candidates().find(|slot| !slot.state().head_started()).or_else(|| candidates().next()).map(|slot| slot.id)
    }

    /// Marks `id` for closing; its task closes it, which frees the slot.
    fn evict(&mut self, id: u64) {
        let Some(slot) = self.slots.get(&id) else { return };
        if slot.evict() {
            self.evicting += 1;
            self.evicting_remote += usize::from(!slot.loopback);
        }
    }
}

/// What [`Connections::admit`] decides about a newcomer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    Admit,
    /// Admit, closing this idle connection to make room.
    Evict(u64),
    Refuse,
}

/// The admission rule, apart from the bookkeeping: `open` and `remote`
/// count the connections not already being evicted; `oldest_idle(remote_only)`
/// finds the one to evict.
fn decide(
    limits: &Limits,
    newcomer_loopback: bool,
    open: usize,
    remote: usize,
    oldest_idle: impl Fn(bool) -> Option<u64>,
) -> Decision {
    let evict = |remote_only| oldest_idle(remote_only).map_or(Decision::Refuse, Decision::Evict);
    if !newcomer_loopback && remote >= limits.max.saturating_sub(limits.loopback_reserve) {
        return evict(true);
    }
    if open >= limits.max {
        return evict(false);
    }
    Decision::Admit
}

impl Connections {
    pub fn new(limits: Limits) -> Arc<Connections> {
        tracing::info!(
            max = limits.max,
            loopback_reserve = limits.loopback_reserve,
            header_timeout_s = limits.header_timeout.as_secs(),
            idle_timeout_s = limits.idle_timeout.as_secs(),
            "connection limits"
        );
        Arc::new(Connections { limits, registry: Mutex::new(Registry::default()) })
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    fn registry(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a slot for a connection from `peer`, closing an idle one to
    /// make room when full; `None` when every connection is busy.
    pub fn admit(self: &Arc<Self>, peer: SocketAddr) -> Option<SlotHandle> {
        let loopback = crate::auth::is_loopback(Some(peer.ip()));
        let mut registry = self.registry();
        let open = registry.slots.len() - registry.evicting;
        let remote = registry.remote - registry.evicting_remote;
        match decide(&self.limits, loopback, open, remote, |remote_only| registry.oldest_idle(remote_only)) {
            Decision::Admit => {}
            Decision::Evict(id) => {
                tracing::debug!(%peer, "connection limit reached; closing the oldest idle connection");
                registry.evict(id);
            }
            Decision::Refuse => {
                if !registry.refusing {
                    tracing::warn!(open, max = self.limits.max, "every connection is busy; refusing new ones");
                    registry.refusing = true;
                }
                return None;
            }
        }
        if registry.refusing {
            tracing::info!("accepting connections again");
            registry.refusing = false;
        }
        let id = registry.next_id;
        registry.next_id += 1;
        let slot = Arc::new(Slot::new(id, loopback));
        registry.slots.insert(id, slot.clone());
        registry.remote += usize::from(!loopback);
        Some(SlotHandle { connections: self.clone(), slot })
    }

    /// Takes back the eviction of `slot`, whose task found the first bytes of
    /// a request waiting unread on its socket: its client chose it (a pooled
    /// keep-alive connection, typically) before the eviction could reach it,
    /// and closing it now would fail that request. Only while no head has
    /// been seen, so a connection is spared once per request: a slow head is
    /// not spared again, and the count goes back under the cap as the next
    /// newcomer evicts another. Returns whether it was spared.
    pub fn reprieve(&self, slot: &Slot) -> bool {
        let mut registry = self.registry();
        let mut state = slot.state();
        if !state.evicted || state.head_started() || !registry.slots.contains_key(&slot.id) {
            return false;
        }
        state.evicted = false;
        registry.evicting -= 1;
        registry.evicting_remote -= usize::from(!slot.loopback);
        true
    }

    /// Closes the oldest idle connection, to free a file descriptor when
    /// `accept` itself ran out of them. Returns whether there was one.
    pub fn evict_oldest_idle(&self) -> bool {
        let mut registry = self.registry();
        let Some(id) = registry.oldest_idle(false) else { return false };
        registry.evict(id);
        true
    }

    /// How many connections are open (evicted ones until they are closed).
    pub fn open(&self) -> usize {
        self.registry().slots.len()
    }
}

/// A connection's place in [`Connections`]; freed when dropped, which is
/// when the socket is closed (it is owned by the connection's IO).
pub struct SlotHandle {
    connections: Arc<Connections>,
    slot: Arc<Slot>,
}

impl SlotHandle {
    pub fn slot(&self) -> &Arc<Slot> {
        &self.slot
    }
}

impl Drop for SlotHandle {
    fn drop(&mut self) {
        let mut registry = self.connections.registry();
        if registry.slots.remove(&self.slot.id).is_none() {
            return;
        }
        let remote = usize::from(!self.slot.loopback);
        registry.remote -= remote;
        // Read under the registry's lock, under which it is set.
        if self.slot.state().evicted {
            registry.evicting -= 1;
            registry.evicting_remote -= remote;
        }
    }
}

/// What one connection is doing.
pub struct Slot {
    id: u64,
    loopback: bool,
    state: Mutex<SlotState>,
    /// Wakes the connection's task: its deadline moved, or it is evicted.
    wake: Notify,
    /// How much the connection may read (limited on an unauthenticated WebSocket).
    pub budget: ReadBudget,
}

struct SlotState {
    /// Requests whose answer is not yet written out.
    in_flight: usize,
    /// Taken over by a WebSocket: busy for as long as it lives.
    upgraded: bool,
    evicted: bool,
    /// The server that accepted it stopped: its next answer is its last.
    draining: bool,
    /// When no request is in flight: since when, and whether bytes of the next head came.
    waiting: Option<Waiting>,
}

#[derive(Clone, Copy)]
struct Waiting {
    since: Instant,
    first_request: bool,
    head_started: Option<Instant>,
}

impl SlotState {
    fn is_idle(&self) -> bool {
        self.in_flight == 0 && !self.upgraded
    }

    /// Bytes of the next head were read.
    fn head_started(&self) -> bool {
        self.waiting.is_some_and(|w| w.head_started.is_some())
    }
}

impl Slot {
    fn new(id: u64, loopback: bool) -> Slot {
        let waiting = Waiting { since: Instant::now(), first_request: true, head_started: None };
        Slot {
            id,
            loopback,
            state: Mutex::new(SlotState {
                in_flight: 0,
                upgraded: false,
                evicted: false,
                draining: false,
                waiting: Some(waiting),
            }),
            wake: Notify::new(),
            budget: ReadBudget::default(),
        }
    }

    fn state(&self) -> MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn begin_request(&self) {
        let mut state = self.state();
        state.in_flight += 1;
        state.waiting = None;
    }

    /// The answer of a request is written out (or abandoned).
    pub fn end_request(&self) {
        let mut state = self.state();
        state.in_flight = state.in_flight.saturating_sub(1);
        if state.in_flight == 0 {
            state.waiting = Some(Waiting { since: Instant::now(), first_request: false, head_started: None });
        }
        drop(state);
        self.wake.notify_one();
    }

    /// The server stopped: answer with `Connection: close` from now on.
    pub fn drain(&self) {
        self.state().draining = true;
    }

    pub fn draining(&self) -> bool {
        self.state().draining
    }

    /// The connection is now a WebSocket.
    pub fn mark_upgraded(&self) {
        self.state().upgraded = true;
    }

    /// Bytes arrived: between requests, the next head has started.
    pub fn bytes_read(&self) {
        let mut state = self.state();
        let Some(waiting) = state.waiting.as_mut() else { return };
        if waiting.head_started.is_none() {
            waiting.head_started = Some(Instant::now());
            // The first request's deadline counts from the accept; a later
            // one's moves from the idle deadline to the header deadline.
            let moved = !waiting.first_request;
            drop(state);
            if moved {
                self.wake.notify_one();
            }
        }
    }

    /// Whether the connection is to be closed to make room.
    pub fn evicted(&self) -> bool {
        self.state().evicted
    }

    /// Tells the connection's task to close it; false if already told.
    /// Called under the registry's lock only, which keeps its counts true.
    fn evict(&self) -> bool {
        let first = !std::mem::replace(&mut self.state().evicted, true);
        self.wake.notify_one();
        first
    }

    /// When the connection is to be closed if nothing changes; `None` while
    /// a request is in flight or the connection is a WebSocket.
    pub fn deadline(&self, limits: &Limits) -> Option<Instant> {
        let state = self.state();
        if state.evicted {
            return Some(Instant::now());
        }
        if !state.is_idle() {
            return None;
        }
        let waiting = state.waiting?;
        Some(match (waiting.first_request, waiting.head_started) {
            (true, _) => waiting.since + limits.header_timeout,
            (false, Some(started)) => started + limits.header_timeout,
            (false, None) => waiting.since + limits.idle_timeout,
        })
    }

    /// Resolves when [`Slot::deadline`] may have changed.
    pub async fn changed(&self) {
        self.wake.notified().await
    }
}

/// A limit on how many bytes a connection may read, for a WebSocket that has
/// not authenticated yet: past it nothing more is read (the client's sends
/// back up in TCP) until the socket authenticates, so an unauthenticated
/// peer can make the daemon hold only this much, whatever frames it sends.
#[derive(Default)]
pub struct ReadBudget {
    state: Mutex<BudgetState>,
    exhausted: Notify,
}

#[derive(Default)]
enum BudgetState {
    #[default]
    Unlimited,
    Limited {
        left: usize,
        /// The reader waiting for the limit to be lifted.
        waker: Option<Waker>,
    },
}

impl ReadBudget {
    fn state(&self) -> MutexGuard<'_, BudgetState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// From now on at most `bytes` more may be read.
    pub fn limit(&self, bytes: usize) {
        *self.state() = BudgetState::Limited { left: bytes, waker: None };
    }

    /// No limit any more; a reader held back goes on.
    pub fn lift(&self) {
        let old = std::mem::take(&mut *self.state());
        if let BudgetState::Limited { waker: Some(waker), .. } = old {
            waker.wake();
        }
    }

    /// How many bytes the next read may take (`None`: any number). At zero
    /// the reader's `waker` is kept for [`ReadBudget::lift`], and whoever
    /// waits on [`ReadBudget::exhausted`] is told.
    pub fn allowance(&self, waker: &Waker) -> Option<usize> {
        let mut state = self.state();
        match &mut *state {
            BudgetState::Unlimited => None,
            BudgetState::Limited { left: 0, waker: held } => {
                *held = Some(waker.clone());
                drop(state);
                self.exhausted.notify_one();
                Some(0)
            }
            BudgetState::Limited { left, .. } => Some(*left),
        }
    }

    pub fn spend(&self, bytes: usize) {
        if let BudgetState::Limited { left, .. } = &mut *self.state() {
            *left = left.saturating_sub(bytes);
        }
    }

    /// Resolves once a read found the budget spent.
    pub async fn exhausted(&self) {
        self.exhausted.notified().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max: usize, reserve: usize) -> Limits {
        Limits {
            max,
            loopback_reserve: reserve,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
        }
    }

    /// A connection for [`decide_among`]: (id, loopback, idle).
    type Conn = (u64, bool, bool);

    fn decide_among(limits: &Limits, newcomer_loopback: bool, open: &[Conn]) -> Decision {
        let remote = open.iter().filter(|c| !c.1).count();
        let oldest_idle = |remote_only: bool| open.iter().find(|c| c.2 && !(remote_only && c.1)).map(|c| c.0);
        decide(limits, newcomer_loopback, open.len(), remote, oldest_idle)
    }

    #[test]
    fn the_cap_leaves_headroom_below_the_open_file_limit() {
        assert_eq!(cap_for_fd_limit(1024), 768);
        assert_eq!(cap_for_fd_limit(256), 192);
        assert_eq!(cap_for_fd_limit(100), 36);
        assert_eq!(cap_for_fd_limit(20), 1);
        assert_eq!(cap_for_fd_limit(u64::MAX), cap_for_fd_limit(FD_LIMIT_CEILING));
        assert_eq!(reserve_for(192), 24);
    }

    #[test]
    fn below_the_cap_everyone_is_admitted() {
        let open = [(0, false, false), (1, true, true)];
        assert_eq!(decide_among(&limits(4, 1), false, &open), Decision::Admit);
        assert_eq!(decide_among(&limits(4, 1), true, &open), Decision::Admit);
    }

    #[test]
    fn at_the_cap_the_oldest_idle_connection_makes_room() {
        let open = [(0, true, false), (1, false, true), (2, true, true), (3, false, false)];
        assert_eq!(decide_among(&limits(4, 0), true, &open), Decision::Evict(1));
        assert_eq!(decide_among(&limits(4, 0), false, &open), Decision::Evict(1));
        // Nothing idle: the newcomer is refused, loopback or not.
        let busy = [(0, true, false), (1, false, false)];
        assert_eq!(decide_among(&limits(2, 0), true, &busy), Decision::Refuse);
        assert_eq!(decide_among(&limits(2, 0), false, &busy), Decision::Refuse);
    }

    #[test]
    fn remote_peers_cannot_take_the_loopback_reserve() {
        // Remote connections fill their share (max 5 - reserve 2 = 3).
        let open = [(0, true, true), (1, false, false), (2, false, true), (3, false, false)];
        // A remote newcomer may only replace an idle remote connection...
        assert_eq!(decide_among(&limits(5, 2), false, &open), Decision::Evict(2));
        // ...while a loopback one still fits in the reserve.
        assert_eq!(decide_among(&limits(5, 2), true, &open), Decision::Admit);
        let all_busy = [(0, true, true), (1, false, false), (2, false, false), (3, false, false)];
        assert_eq!(
            decide_among(&limits(5, 2), false, &all_busy),
            Decision::Refuse,
            "the idle loopback one is not theirs"
        );
        assert_eq!(decide_among(&limits(5, 2), true, &all_busy), Decision::Admit);
    }

    #[test]
    fn deadlines_follow_what_the_connection_does() {
        let l = limits(10, 1);
        let slot = Slot::new(0, true);
        let waiting = || slot.state().waiting.expect("waiting");
        // A new connection has header_timeout for its first head, bytes or not.
        let accepted = waiting().since;
        assert_eq!(slot.deadline(&l), Some(accepted + l.header_timeout));
        slot.bytes_read();
        assert_eq!(slot.deadline(&l), Some(accepted + l.header_timeout));
        slot.begin_request();
        assert_eq!(slot.deadline(&l), None, "a request in flight has no deadline");
        slot.end_request();
        let idle_since = waiting().since;
        assert!(idle_since >= accepted);
        assert_eq!(slot.deadline(&l), Some(idle_since + l.idle_timeout), "kept alive: the idle timeout");
        slot.bytes_read();
        let started = waiting().head_started.expect("a head began");
        assert_eq!(slot.deadline(&l), Some(started + l.header_timeout), "a head began: the header timeout");
        slot.mark_upgraded();
        assert_eq!(slot.deadline(&l), None, "a WebSocket lives as long as it likes");
        let before = Instant::now();
        slot.evict();
        assert!(slot.deadline(&l).is_some_and(|d| d >= before && d <= Instant::now()), "evicted: now");
    }

    #[test]
    fn admission_evicts_and_frees_slots() {
        let connections = Connections::new(limits(2, 0));
        let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let a = connections.admit(peer).unwrap();
        let b = connections.admit(peer).unwrap();
        b.slot().begin_request();
        // Full: `a` is idle, so it makes room.
        let c = connections.admit(peer).unwrap();
        assert!(a.slot().state().evicted && !b.slot().state().evicted);
        assert_eq!(connections.open(), 3, "until the evicted one is closed");
        drop(a);
        assert_eq!(connections.open(), 2);
        c.slot().begin_request();
        assert!(connections.admit(peer).is_none(), "every connection busy");
        assert!(!connections.evict_oldest_idle());
        b.slot().end_request();
        assert!(connections.evict_oldest_idle());
        assert!(b.slot().state().evicted);
    }

    #[test]
    fn a_connection_whose_client_began_a_request_is_evicted_last_and_may_be_spared_once() {
        let connections = Connections::new(limits(2, 0));
        let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let pooled = connections.admit(peer).unwrap();
        pooled.slot().begin_request();
        pooled.slot().end_request();
        pooled.slot().bytes_read();
        let quiet = connections.admit(peer).unwrap();
        // The older connection has a head coming: the quiet one goes instead.
        let newcomer = connections.admit(peer).unwrap();
        assert!(quiet.slot().evicted() && !pooled.slot().evicted());
        newcomer.slot().begin_request();
        // With nothing quieter left, it goes too.
        assert!(connections.evict_oldest_idle());
        assert!(pooled.slot().evicted());
        // A head already seen is no reason to spare it: a slow head stays evicted.
        assert!(!connections.reprieve(pooled.slot()), "its head had started");
        assert!(connections.reprieve(quiet.slot()), "no head yet: may be spared");
    }

    #[test]
    fn a_reprieve_takes_the_eviction_back_in_the_counts() {
        let connections = Connections::new(limits(1, 0));
        let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let first = connections.admit(peer).unwrap();
        let second = connections.admit(peer).unwrap();
        assert!(first.slot().evicted());
        assert!(connections.reprieve(first.slot()));
        assert!(!first.slot().evicted());
        assert!(!connections.reprieve(first.slot()), "not evicted any more");
        // Both count again: the next newcomer makes room by evicting one.
        let _third = connections.admit(peer).unwrap();
        assert!(first.slot().evicted() && !second.slot().evicted());
    }

    #[test]
    fn the_budget_holds_reads_back_until_lifted() {
        let budget = ReadBudget::default();
        let waker = futures::task::noop_waker();
        assert_eq!(budget.allowance(&waker), None);
        budget.limit(10);
        assert_eq!(budget.allowance(&waker), Some(10));
        budget.spend(4);
        assert_eq!(budget.allowance(&waker), Some(6));
        budget.spend(6);
        assert_eq!(budget.allowance(&waker), Some(0));
        budget.lift();
        assert_eq!(budget.allowance(&waker), None);
    }
}
