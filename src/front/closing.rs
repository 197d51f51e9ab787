//! How the daemon closes its WebSockets: the closing handshake, and the
//! goodbye to every socket at a graceful stop.
//!
//! The goodbye. Sockets are tasks of their own, outside the supervision tree (they
//! outlive a restarted front), so stopping the tree does not end them; left
//! alone they would be cut when the process exits, which a client cannot
//! tell from a crash or a network fault. At a graceful stop the daemon, once
//! the tree has stopped (the agents are stopped and their last events
//! committed and published), says [`Farewell::say`]: each socket sends what
//! is still queued for it, then a close frame with 1001 (going away), and
//! waits for the client's close. The client knows the daemon is going and
//! that it missed nothing up to there; it reconnects with `since` as usual.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::sync::{watch, Notify};
use warp::ws::Message;

/// How long a client that was sent the close frame has to answer it.
const CLOSE_WAIT: Duration = Duration::from_secs(10);

/// The closing handshake's second half, once our close frame is sent: what
/// the client still sends (the acks of frames it has not finished reading)
/// is read and dropped until its close frame, or [`CLOSE_WAIT`]. Dropping
/// the socket with those frames unread would make the kernel answer with a
/// reset, and a reset can discard frames the client had not read yet.
pub async fn await_client_close(frames: &mut mpsc::Receiver<Result<Message, warp::Error>>) {
    let drained = async {
        while let Some(Ok(msg)) = frames.recv().await {
            if msg.is_close() {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(CLOSE_WAIT, drained).await;
}

/// The close code of the goodbye: RFC 6455's "going away".
pub const CLOSE_GOING_AWAY: u16 = 1001;
pub const GOODBYE_REASON: &str = "bosun is stopping";

pub struct Farewell {
    said: watch::Sender<bool>,
    open: AtomicUsize,
    all_closed: Notify,
}

impl Farewell {
    pub fn new() -> Arc<Farewell> {
        Arc::new(Farewell { said: watch::channel(false).0, open: AtomicUsize::new(0), all_closed: Notify::new() })
    }

    /// Counts a socket as open until the guard is dropped.
    pub fn enter(self: &Arc<Self>) -> SocketGuard {
        self.open.fetch_add(1, Ordering::SeqCst);
        SocketGuard { farewell: self.clone(), said: self.said.subscribe() }
    }

    /// Tells every socket to say goodbye, and waits up to `within` for them
    /// to close. Returns how many were still open then.
    pub async fn say(&self, within: Duration) -> usize {
        self.said.send_replace(true);
        let closed = async {
            loop {
                // Registered before the count is read, so a close in between wakes it.
                let notified = self.all_closed.notified();
                if self.open.load(Ordering::SeqCst) == 0 {
                    return;
                }
                notified.await;
            }
        };
        let _ = tokio::time::timeout(within, closed).await;
        self.open.load(Ordering::SeqCst)
    }
}

/// A socket's place in the count, and its ear for the goodbye.
pub struct SocketGuard {
    farewell: Arc<Farewell>,
    said: watch::Receiver<bool>,
}

impl SocketGuard {
    /// Resolves once the daemon says goodbye (at once if it has).
    pub async fn said(&mut self) {
        if self.said.wait_for(|said| *said).await.is_err() {
            // The daemon dropped its farewell without a word: never.
            std::future::pending::<()>().await;
        }
    }

    pub fn is_said(&self) -> bool {
        *self.said.borrow()
    }
}

impl Drop for SocketGuard {
    fn drop(&mut self) {
        if self.farewell.open.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.farewell.all_closed.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn say_waits_for_every_socket_and_no_longer() {
        let farewell = Farewell::new();
        assert_eq!(farewell.say(Duration::from_millis(10)).await, 0, "no socket: nothing to wait for");

        let farewell = Farewell::new();
        let mut a = farewell.enter();
        let b = farewell.enter();
        assert!(!a.is_said());
        let listener = tokio::spawn(async move {
            a.said().await;
            drop(a);
        });
        // `b` never closes: the wait ends at its limit, with `b` counted.
        assert_eq!(farewell.say(Duration::from_millis(200)).await, 1);
        listener.await.unwrap();
        assert!(b.is_said());
        drop(b);
        assert_eq!(farewell.say(Duration::from_millis(10)).await, 0);
        // A socket that comes after the goodbye hears it at once.
        let mut late = farewell.enter();
        tokio::time::timeout(Duration::from_secs(1), late.said()).await.expect("said already");
    }
}
