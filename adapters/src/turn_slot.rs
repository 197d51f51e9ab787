//! One turn at a time per driver, without a spurious `Busy` right after a
//! turn was abandoned.
//!
//! Aborting a task is asynchronous: right after a worker drops a
//! [`TurnHandle`](crate::agent::TurnHandle) (say, to resume the turn) the old
//! turn's task may not be torn down yet. Rather than refuse the next turn, the
//! slot lets it wait for that teardown, so the two never overlap; a turn whose
//! handle is still held makes the next one fail with [`AgentError::Busy`].

use std::sync::Arc;

use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore, TryAcquireError};

use crate::agent::{AgentError, TurnControl};

/// A driver's turn slot.
#[derive(Debug)]
pub(crate) struct TurnSlot {
    /// One permit, held by the turn under way for as long as its task lives.
    permits: Arc<Semaphore>,
    /// The controls of the last turn started. Only its `TurnHandle` holds
    /// them, so once they are gone the handle was dropped and the turn is
    /// being aborted, even if its task has not been torn down yet.
    last_controls: Option<mpsc::WeakUnboundedSender<TurnControl>>,
}

/// What a new turn gets from [`TurnSlot::claim`]: the control channel its
/// `TurnHandle` and its task share, and its permit.
pub(crate) struct TurnClaim {
    pub(crate) controls_tx: mpsc::UnboundedSender<TurnControl>,
    pub(crate) controls_rx: mpsc::UnboundedReceiver<TurnControl>,
    pub(crate) permit: TurnPermit,
}

/// The slot as a new turn gets it. It belongs inside the turn's future (or
/// what the future owns), so a task abort frees the driver too.
pub(crate) enum TurnPermit {
    Held(OwnedSemaphorePermit),
    /// The previous turn's handle is gone; its task will release the permit
    /// as soon as it is torn down.
    AfterAbandoned(Arc<Semaphore>),
}

impl TurnSlot {
    pub(crate) fn new() -> TurnSlot {
        TurnSlot { permits: Arc::new(Semaphore::new(1)), last_controls: None }
    }

    /// Claims the slot for a new turn, or [`AgentError::Busy`] while the last
    /// turn's handle is still held. Nothing else is refused after a
    /// successful claim, so callers check everything that can refuse the
    /// turn first, leaving the driver free when it is refused.
    pub(crate) fn claim(&mut self) -> Result<TurnClaim, AgentError> {
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(permit) => TurnPermit::Held(permit),
            Err(TryAcquireError::NoPermits) if self.last_turn_abandoned() => {
                TurnPermit::AfterAbandoned(self.permits.clone())
            }
            Err(_) => return Err(AgentError::Busy),
        };
        let (controls_tx, controls_rx) = mpsc::unbounded_channel();
        self.last_controls = Some(controls_tx.downgrade());
        Ok(TurnClaim { controls_tx, controls_rx, permit })
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

impl TurnPermit {
    /// The permit, once the abandoned turn before it is torn down. `None`
    /// only if the semaphore was closed, which the slot never does: there is
    /// then no driver left to serve.
    pub(crate) async fn acquire(self) -> Option<OwnedSemaphorePermit> {
        match self {
            TurnPermit::Held(permit) => Some(permit),
            TurnPermit::AfterAbandoned(permits) => permits.acquire_owned().await.ok(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_held_turn_makes_the_next_busy() {
        let mut slot = TurnSlot::new();
        let first = slot.claim().unwrap();
        let permit = first.permit.acquire().await.unwrap();
        assert!(matches!(slot.claim(), Err(AgentError::Busy)));
        drop(permit);
        assert!(matches!(slot.claim().unwrap().permit, TurnPermit::Held(_)));
    }

    #[tokio::test]
    async fn an_abandoned_turn_is_waited_for() {
        let mut slot = TurnSlot::new();
        let first = slot.claim().unwrap();
        let permit = first.permit.acquire().await.unwrap();
        // The handle goes; the task (holding the permit) is not torn down yet.
        drop(first.controls_tx);
        let second = slot.claim().unwrap();
        assert!(matches!(second.permit, TurnPermit::AfterAbandoned(_)));
        let waiting = tokio::spawn(second.permit.acquire());
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(permit);
        assert!(waiting.await.unwrap().is_some());
    }
}
