//! The life of a turn, the same for every driver: claim the driver's one
//! turn slot, run, emit events, and end with exactly one `Finished`, the
//! slot freed just before it goes out.
//!
//! [`TurnSlot::start`] is the one way a driver starts a turn. The turn's
//! events all go through its [`TurnSink`], which any of the driver's tasks
//! may hold (the turn itself, a process monitor that sees the agent die, a
//! router that sees the agent end the turn): whichever finishes first wins,
//! and nothing gets out after `Finished`.
//!
//! Why the slot is freed before `Finished`: whoever hears the turn ended may
//! start the next one at once, and must not be told the driver is busy.
//! Why a new turn may wait instead of being refused: aborting a task is
//! asynchronous, so right after a worker drops a [`TurnHandle`] (say, to
//! resume the turn) the old turn's task may not be torn down yet; the new
//! turn waits for that teardown, so the two never overlap. A turn whose
//! handle is still held makes the next one fail with [`AgentError::Busy`].

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore, TryAcquireError};

use crate::contract::{turn_runtime, AgentError, AgentEvent, LogLevel, TurnControl, TurnHandle, TurnOutcome};

/// A driver's turn slot: one turn at a time.
#[derive(Debug)]
pub struct TurnSlot {
    /// One permit, held by the turn under way until it finishes, or until
    /// its task and sink are gone.
    permits: Arc<Semaphore>,
    /// The controls of the last turn started. Only its `TurnHandle` holds
    /// them, so once they are gone the handle was dropped and the turn is
    /// being aborted, even if its task has not been torn down yet.
    last_controls: Option<mpsc::WeakUnboundedSender<TurnControl>>,
}

/// A driver's own per-turn state, kept under the sink's lock (see
/// [`TurnSink::with`]): what is done to it cannot interleave with the
/// turn's end, where it may add the turn's last records.
pub trait TurnState: Send + 'static {
    /// The events to send just before `Finished(outcome)` (records of what
    /// the turn left unfinished, say).
    fn closing(&mut self, _outcome: &TurnOutcome) -> Vec<AgentEvent> {
        Vec::new()
    }

    /// The turn was abandoned: nobody waits for it any more.
    fn abandoned(&mut self) {}
}

impl TurnState for () {}

/// What a turn's future is built with.
pub struct NewTurn<S> {
    /// Where every event of the turn goes, `Finished` included.
    pub sink: Arc<TurnSink<S>>,
    /// The controls the turn's [`TurnHandle`] sends.
    pub controls: mpsc::UnboundedReceiver<TurnControl>,
}

/// The slot as a new turn gets it.
enum TurnPermit {
    Held(OwnedSemaphorePermit),
    /// The previous turn's handle is gone; its task will release the permit
    /// as soon as it is torn down.
    AfterAbandoned(Arc<Semaphore>),
}

impl TurnSlot {
    pub fn new() -> TurnSlot {
        TurnSlot { permits: Arc::new(Semaphore::new(1)), last_controls: None }
    }

    /// Starts a turn: claims the slot (or [`AgentError::Busy`]), builds the
    /// turn's future with `build`, and spawns it on the daemon's runtime to
    /// run once the slot is free. The outcome the future returns finishes
    /// the turn; `None` means it was already finished (or abandoned) by
    /// whoever got there first, or that nobody listens any more.
    ///
    /// Nothing can refuse the turn after the claim, so callers check
    /// everything that can first, leaving the driver free when it is
    /// refused. `state` is the driver's own per-turn state, kept under the
    /// sink's lock (see [`TurnSink::with`]).
    pub fn start<S, F, Fut>(
        &mut self,
        events: mpsc::UnboundedSender<AgentEvent>,
        state: S,
        build: F,
    ) -> Result<TurnHandle, AgentError>
    where
        S: TurnState,
        F: FnOnce(NewTurn<S>) -> Fut,
        Fut: Future<Output = Option<TurnOutcome>> + Send + 'static,
    {
        let runtime = turn_runtime()?;
        let permit = self.claim()?;
        let (controls_tx, controls) = mpsc::unbounded_channel();
        self.last_controls = Some(controls_tx.downgrade());
        let sink = Arc::new(TurnSink::new(events, state));
        let waiting = match permit {
            TurnPermit::Held(permit) => {
                sink.hold(permit);
                None
            }
            TurnPermit::AfterAbandoned(permits) => Some(permits),
        };
        let turn = build(NewTurn { sink: sink.clone(), controls });
        let task = runtime.spawn(async move {
            if let Some(permits) = waiting {
                // Closed only if the driver is gone: nobody to serve.
                let Ok(permit) = permits.acquire_owned().await else { return };
                sink.hold(permit);
            }
            if let Some(outcome) = turn.await {
                sink.finish(outcome);
            }
        });
        Ok(TurnHandle::new(controls_tx, task))
    }

    fn claim(&self) -> Result<TurnPermit, AgentError> {
        match self.permits.clone().try_acquire_owned() {
            Ok(permit) => Ok(TurnPermit::Held(permit)),
            Err(TryAcquireError::NoPermits) if self.last_turn_abandoned() => {
                Ok(TurnPermit::AfterAbandoned(self.permits.clone()))
            }
            Err(_) => Err(AgentError::Busy),
        }
    }

    fn last_turn_abandoned(&self) -> bool {
        self.last_controls.as_ref().is_none_or(|weak| weak.upgrade().is_none())
    }
}

impl Default for TurnSlot {
    fn default() -> TurnSlot {
        TurnSlot::new()
    }
}

/// A turn's event sink: lets events through until the turn ends, then
/// exactly one `Finished`, and nothing after it.
pub struct TurnSink<S = ()> {
    events: mpsc::UnboundedSender<AgentEvent>,
    inner: Mutex<SinkState<S>>,
}

struct SinkState<S> {
    finished: bool,
    /// The driver's slot, once the turn has it; dropped when the turn ends
    /// (or with the sink, if the turn's tasks are torn down first).
    permit: Option<OwnedSemaphorePermit>,
    state: S,
}

impl<S: TurnState> std::fmt::Debug for TurnSink<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnSink").field("finished", &self.is_finished()).finish_non_exhaustive()
    }
}

impl<S: TurnState> TurnSink<S> {
    /// A sink of its own, outside any slot: for a driver's work that is not
    /// a turn but reports like one (starting an agent to probe it).
    /// [`TurnSlot::start`] makes the turns' own.
    pub fn new(events: mpsc::UnboundedSender<AgentEvent>, state: S) -> TurnSink<S> {
        TurnSink { events, inner: Mutex::new(SinkState { finished: false, permit: None, state }) }
    }

    fn lock(&self) -> MutexGuard<'_, SinkState<S>> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn hold(&self, permit: OwnedSemaphorePermit) {
        let mut inner = self.lock();
        if !inner.finished {
            inner.permit = Some(permit);
        }
    }

    /// Sends an event of the turn; false once the turn has ended or nobody
    /// listens any more. `Finished` goes through [`TurnSink::finish`] only.
    pub fn emit(&self, event: AgentEvent) -> bool {
        debug_assert!(!matches!(event, AgentEvent::Finished(_)), "Finished goes through TurnSink::finish");
        let inner = self.lock();
        !inner.finished && self.events.send(event).is_ok()
    }

    pub fn log(&self, level: LogLevel, message: impl Into<String>) {
        self.emit(AgentEvent::Log { level, message: message.into() });
    }

    /// Ends the turn: frees the slot, sends the per-turn state's closing
    /// records ([`TurnState::closing`]), then `Finished(outcome)`. False,
    /// and nothing sent, if the turn had already ended.
    pub fn finish(&self, outcome: TurnOutcome) -> bool {
        let mut inner = self.lock();
        if inner.finished {
            return false;
        }
        inner.finished = true;
        inner.permit = None;
        for event in inner.state.closing(&outcome) {
            let _ = self.events.send(event);
        }
        let _ = self.events.send(AgentEvent::Finished(outcome));
        true
    }

    /// Ends a turn nobody waits for any more without a word (its handle was
    /// dropped), telling the per-turn state ([`TurnState::abandoned`]). True
    /// if it was still running.
    pub fn abandon(&self) -> bool {
        let mut inner = self.lock();
        inner.permit = None;
        inner.state.abandoned();
        !std::mem::replace(&mut inner.finished, true)
    }

    pub fn is_finished(&self) -> bool {
        self.lock().finished
    }

    /// Resolves once nobody listens to the turn's events any more (the
    /// worker is gone): the turn may stop without a word.
    pub async fn closed(&self) {
        self.events.closed().await
    }

    /// The driver's per-turn state, under the sink's lock: what is done
    /// there cannot interleave with the turn's end.
    pub fn with<R>(&self, f: impl FnOnce(&mut S) -> R) -> R {
        f(&mut self.lock().state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn events() -> (mpsc::UnboundedSender<AgentEvent>, mpsc::UnboundedReceiver<AgentEvent>) {
        mpsc::unbounded_channel()
    }

    #[tokio::test]
    async fn a_held_turn_makes_the_next_busy_and_its_end_frees_the_slot_before_finished() {
        let mut slot = TurnSlot::new();
        let (tx, mut rx) = events();
        let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
        let first = slot
            .start(tx, (), |turn| async move {
                turn.sink.emit(AgentEvent::Log { level: LogLevel::Info, message: "working".into() });
                let _ = go_rx.await;
                Some(TurnOutcome::Completed)
            })
            .unwrap();
        assert!(matches!(rx.recv().await, Some(AgentEvent::Log { .. })));
        let (tx2, _rx2) = events();
        assert!(matches!(slot.start(tx2, (), |_| async { None }), Err(AgentError::Busy)));
        go_tx.send(()).unwrap();
        assert_eq!(rx.recv().await, Some(AgentEvent::Finished(TurnOutcome::Completed)));
        // Finished is out: the slot is free already, though the handle is still held.
        let (tx3, mut rx3) = events();
        let _third = slot.start(tx3, (), |_| async { Some(TurnOutcome::Interrupted) }).unwrap();
        assert_eq!(rx3.recv().await, Some(AgentEvent::Finished(TurnOutcome::Interrupted)));
        drop(first);
    }

    #[tokio::test]
    async fn an_abandoned_turn_is_waited_for() {
        let mut slot = TurnSlot::new();
        let (tx, _rx) = events();
        let (torn_tx, torn_rx) = tokio::sync::oneshot::channel::<()>();
        // A turn that outlives its handle for a moment: its sink (and so the
        // permit) is held by another of the driver's tasks.
        let kept = Arc::new(Mutex::new(None));
        let keeper = kept.clone();
        let first = slot
            .start(tx, (), move |turn| {
                *keeper.lock().unwrap() = Some(turn.sink.clone());
                std::future::pending()
            })
            .unwrap();
        drop(first);
        let (tx2, mut rx2) = events();
        let second = slot.start(tx2, (), |_| async { Some(TurnOutcome::Completed) }).unwrap();
        tokio::spawn(async move {
            let _ = torn_rx.await;
            kept.lock().unwrap().take();
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(rx2.try_recv().is_err(), "the second turn waits for the first to be torn down");
        torn_tx.send(()).unwrap();
        assert_eq!(rx2.recv().await, Some(AgentEvent::Finished(TurnOutcome::Completed)));
        drop(second);
    }

    /// Counts what it is given, and says so as the turn closes.
    struct Counter(u32);

    impl TurnState for Counter {
        fn closing(&mut self, outcome: &TurnOutcome) -> Vec<AgentEvent> {
            vec![AgentEvent::Log { level: LogLevel::Warn, message: format!("closing {} ({outcome:?})", self.0) }]
        }
    }

    #[tokio::test]
    async fn exactly_one_finished_whoever_ends_the_turn() {
        let mut slot = TurnSlot::new();
        let (tx, mut rx) = events();
        let mut outside = None;
        let _turn = slot
            .start(tx, Counter(0), |turn| {
                outside = Some(turn.sink.clone());
                async move {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    Some(TurnOutcome::Completed)
                }
            })
            .unwrap();
        let sink = outside.unwrap();
        sink.with(|n| n.0 += 1);
        assert!(sink.finish(TurnOutcome::Failed("the agent died".into())));
        assert!(!sink.finish(TurnOutcome::Interrupted));
        assert!(!sink.emit(AgentEvent::Log { level: LogLevel::Info, message: "late".into() }));
        tokio::time::sleep(Duration::from_millis(60)).await;
        let mut seen = Vec::new();
        while let Ok(event) = rx.try_recv() {
            seen.push(event);
        }
        assert_eq!(
            seen,
            [
                AgentEvent::Log { level: LogLevel::Warn, message: "closing 1 (Failed(\"the agent died\"))".into() },
                AgentEvent::Finished(TurnOutcome::Failed("the agent died".into())),
            ]
        );
    }
}
