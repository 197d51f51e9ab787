//! Flow control between a PTY's reader thread and the clients that watch it.
//!
//! Each attached client acknowledges the offset it has rendered. The reader
//! stops reading the PTY while even the most advanced client is more than
//! the high watermark behind what was read, and goes on once that client is
//! within the low one: a child that prints faster than anyone can look then
//! blocks on its own writes, as it would in a real terminal, and nothing
//! piles up in the daemon. The *most advanced* client decides, so a tab
//! asleep on a phone never stalls the terminal for the laptop beside it (it
//! catches up from the stored scrollback when it wakes). With no client
//! attached the child runs freely; its output goes to the scrollback.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// How far behind (in bytes) the most advanced client may fall before the
/// reader pauses, and how far it must catch up before reading resumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watermarks {
    pub high: u64,
    pub low: u64,
}

impl Default for Watermarks {
    fn default() -> Self {
        Watermarks { high: 1024 * 1024, low: 256 * 1024 }
    }
}

/// One attached client, as the gate knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientId(u64);

pub struct FlowGate {
    marks: Watermarks,
    state: Mutex<GateState>,
    room: Condvar,
}

struct GateState {
    /// Bytes read from the PTY so far, as a stream offset.
    read: u64,
    /// Each client's acknowledged offset.
    clients: HashMap<ClientId, u64>,
    next_client: u64,
    paused: bool,
    closed: bool,
}

impl FlowGate {
    /// A gate for a stream whose next byte has offset `start`.
    pub fn new(marks: Watermarks, start: u64) -> FlowGate {
        let marks = Watermarks { high: marks.high.max(1), low: marks.low.min(marks.high) };
        FlowGate {
            marks,
            state: Mutex::new(GateState {
                read: start,
                clients: HashMap::new(),
                next_client: 0,
                paused: false,
                closed: false,
            }),
            room: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A client that has rendered everything before `from`.
    pub fn attach(&self, from: u64) -> ClientId {
        let mut s = self.lock();
        let id = ClientId(s.next_client);
        s.next_client += 1;
        s.clients.insert(id, from);
        drop(s);
        self.room.notify_all();
        id
    }

    /// The client has rendered everything before `offset` (acknowledgements
    /// only move forward).
    pub fn ack(&self, id: ClientId, offset: u64) {
        let mut s = self.lock();
        if let Some(acked) = s.clients.get_mut(&id) {
            *acked = (*acked).max(offset);
        }
        drop(s);
        self.room.notify_all();
    }

    pub fn detach(&self, id: ClientId) {
        self.lock().clients.remove(&id);
        self.room.notify_all();
    }

    /// Wakes the reader for good: it stops at its next look.
    pub fn close(&self) {
        self.lock().closed = true;
        self.room.notify_all();
    }

    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// The reader read `n` more bytes.
    pub fn count_read(&self, n: usize) {
        self.lock().read += n as u64;
    }

    pub fn read_total(&self) -> u64 {
        self.lock().read
    }

    pub fn is_paused(&self) -> bool {
        self.lock().paused
    }

    /// Blocks the reader while it is too far ahead of every client. Returns
    /// false once the gate is closed.
    pub fn wait_for_room(&self) -> bool {
        let mut s = self.lock();
        loop {
            if s.closed {
                return false;
            }
            let lag = match s.clients.values().max() {
                Some(&best) => s.read.saturating_sub(best),
                None => 0,
            };
            let limit = if s.paused { self.marks.low } else { self.marks.high };
            if lag <= limit {
                s.paused = false;
                return true;
            }
            s.paused = true;
            // A timeout as well as the notification, so a missed wake-up
            // costs a moment rather than the terminal.
            s = self
                .room
                .wait_timeout(s, Duration::from_millis(250))
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn no_client_never_pauses() {
        let gate = FlowGate::new(Watermarks { high: 10, low: 5 }, 0);
        gate.count_read(1000);
        assert!(gate.wait_for_room());
        assert!(!gate.is_paused());
    }

    #[test]
    fn pauses_above_high_and_resumes_below_low_by_the_most_advanced_client() {
        let gate = Arc::new(FlowGate::new(Watermarks { high: 100, low: 40 }, 0));
        let slow = gate.attach(0);
        let fast = gate.attach(0);
        gate.count_read(150);
        let reader = {
            let gate = gate.clone();
            std::thread::spawn(move || gate.wait_for_room())
        };
        while !gate.is_paused() {
            std::thread::sleep(Duration::from_millis(5));
        }
        // Within high but not low: still paused (hysteresis).
        gate.ack(fast, 60);
        std::thread::sleep(Duration::from_millis(50));
        assert!(gate.is_paused());
        assert!(!reader.is_finished());
        // The slow client never acknowledges; the fast one decides.
        gate.ack(fast, 120);
        assert!(reader.join().unwrap_or(false));
        assert!(!gate.is_paused());
        gate.detach(slow);
        gate.detach(fast);
    }

    #[test]
    fn acks_only_move_forward_and_close_wakes_the_reader() {
        let gate = Arc::new(FlowGate::new(Watermarks { high: 10, low: 0 }, 0));
        let c = gate.attach(0);
        gate.count_read(50);
        gate.ack(c, 45);
        gate.ack(c, 3);
        assert!(gate.wait_for_room());
        gate.count_read(50);
        let reader = {
            let gate = gate.clone();
            std::thread::spawn(move || gate.wait_for_room())
        };
        std::thread::sleep(Duration::from_millis(30));
        gate.close();
        assert!(!reader.join().unwrap_or(true));
    }
}
