//! The `pty` terminals running now, shared by their binding actors (which
//! commit their output) and the front (whose sockets show it).
//!
//! A terminal's process and its PTY live here rather than in its binding
//! actor's state, so a crashed actor's successor finds the same child still
//! running and goes on from the offset it had stored. Output reaches the
//! sockets only through [`LiveTerminal::publish`], which the actor calls
//! after the commit that made it durable: what a client sees survives a
//! kill -9.

use bosun_proto::TerminalExit;
use bosun_pty::Pty;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{broadcast, watch};

/// Committed output chunks kept for the sockets that follow a terminal live;
/// one that falls further behind reads the scrollback from the store.
const LIVE_CHUNKS: usize = 256;
/// Clipboard writes waiting for a slow socket; a socket further behind
/// misses the oldest, as a clipboard keeps only its last anyway.
const CLIPBOARD_WRITES: usize = 4;

/// Bytes of a terminal's output from `offset`, durable.
#[derive(Debug)]
pub struct OutputChunk {
    pub offset: u64,
    pub bytes: Arc<Vec<u8>>,
}

pub struct LiveTerminal {
    pub pty: Pty,
    output: broadcast::Sender<Arc<OutputChunk>>,
    /// The end of what is durable (and published).
    end: AtomicU64,
    /// Set once the terminal's end is committed: nothing is published after.
    exit: watch::Sender<Option<TerminalExit>>,
    /// OSC 52 sequences for the screens showing the terminal now: live
    /// only, never stored (a replay must not set a clipboard again).
    clipboard: broadcast::Sender<Arc<Vec<u8>>>,
}

impl LiveTerminal {
    pub fn new(pty: Pty, end: u64) -> LiveTerminal {
        let (output, _) = broadcast::channel(LIVE_CHUNKS);
        let (exit, _) = watch::channel(None);
        let (clipboard, _) = broadcast::channel(CLIPBOARD_WRITES);
        LiveTerminal { pty, output, end: AtomicU64::new(end), exit, clipboard }
    }

    pub fn durable_end(&self) -> u64 {
        self.end.load(Ordering::Acquire)
    }

    /// Subscribe first, then read the store up to [`Self::durable_end`], and
    /// drop what the live chunks repeat.
    pub fn subscribe(&self) -> (broadcast::Receiver<Arc<OutputChunk>>, watch::Receiver<Option<TerminalExit>>) {
        (self.output.subscribe(), self.exit.subscribe())
    }

    /// Called by the binding actor only, after the commit.
    pub(crate) fn publish(&self, chunk: OutputChunk) {
        self.end.store(chunk.offset + chunk.bytes.len() as u64, Ordering::Release);
        let _ = self.output.send(Arc::new(chunk));
    }

    /// The clipboard writes sent to the screens showing this terminal.
    pub fn clipboard(&self) -> broadcast::Receiver<Arc<Vec<u8>>> {
        self.clipboard.subscribe()
    }

    /// Sends OSC 52 `sequences` to every screen showing the terminal now;
    /// how many that is.
    pub(crate) fn send_clipboard(&self, sequences: Vec<u8>) -> usize {
        self.clipboard.send(Arc::new(sequences)).unwrap_or(0)
    }

    /// Called by the binding actor only, after the terminal's end is committed.
    pub(crate) fn finish(&self, exit: TerminalExit) {
        self.exit.send_replace(Some(exit));
    }
}

#[derive(Default)]
pub struct LiveTerminals {
    map: Mutex<HashMap<String, Arc<LiveTerminal>>>,
}

impl LiveTerminals {
    pub fn get(&self, binding_id: &str) -> Option<Arc<LiveTerminal>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).get(binding_id).cloned()
    }

    pub(crate) fn insert(&self, binding_id: &str, terminal: Arc<LiveTerminal>) {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).insert(binding_id.to_string(), terminal);
    }

    pub(crate) fn remove(&self, binding_id: &str) -> Option<Arc<LiveTerminal>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).remove(binding_id)
    }

    pub fn count(&self) -> usize {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}
