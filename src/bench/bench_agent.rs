//! `bosun bench-agent` (hidden): a minimal ACP agent on stdio for the `agent`
//! part of `bosun bench`.
//!
//! Written by hand on serde_json rather than with the ACP crate, so that the
//! moment each line is written is ours to choose: every `agent_message_chunk`
//! carries the CLOCK_MONOTONIC reading taken just before its line is written
//! and flushed, and the reader subtracts it from its own reading of the same
//! clock when the line (or the event made of it) arrives.
//!
//! It speaks just enough ACP (protocol version 1, one JSON-RPC 2.0 message
//! per line) for a client to drive it: `initialize`, `session/new`,
//! `session/prompt` (answered with `end_turn` after the chunks, or `cancelled`
//! after a `session/cancel`), and method-not-found for anything else.

use anyhow::Context as _;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{BufRead as _, Write as _};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How a chunk's text starts; the rest is `<index> t=<monotonic ns>`.
pub const CHUNK_PREFIX: &str = "chunk ";

#[derive(Debug, clap::Args)]
pub struct BenchAgentArgs {
    /// Chunks per prompt, unless the prompt's text says `chunks=N`.
    #[arg(long, default_value_t = 100)]
    chunks: u64,
    /// Microseconds between chunks, unless the prompt's text says `interval_us=N`.
    #[arg(long, default_value_t = 2000)]
    interval_us: u64,
}

/// CLOCK_MONOTONIC in nanoseconds. `Instant` reads the same clock on Linux
/// but does not show its value, and the two ends of the measurement are
/// different processes, so the raw reading is what they compare.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime only writes the timespec it is given, which lives
    // on this stack frame.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        return 0;
    }
    (ts.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(ts.tv_nsec as u64)
}

/// The text of chunk `index`, stamped `sent_ns`.
fn chunk_text(index: u64, sent_ns: u64) -> String {
    format!("{CHUNK_PREFIX}{index} t={sent_ns}")
}

/// (index, sent_ns) from a chunk's text, if it is one of ours.
pub fn parse_chunk_text(text: &str) -> Option<(u64, u64)> {
    let rest = text.strip_prefix(CHUNK_PREFIX)?;
    let (index, stamp) = rest.split_once(' ')?;
    Some((index.parse().ok()?, stamp.strip_prefix("t=")?.trim_end().parse().ok()?))
}

/// How many chunks a prompt asks for, and how far apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pace {
    pub chunks: u64,
    pub interval: Duration,
}

impl Pace {
    /// The prompt text this agent reads `pace` from.
    pub fn prompt_text(&self) -> String {
        format!("chunks={} interval_us={}", self.chunks, self.interval.as_micros())
    }

    /// `chunks=N` and `interval_us=N` words of `text`, each falling back on `default`.
    fn from_text(text: &str, default: Pace) -> Pace {
        let mut pace = default;
        for word in text.split_whitespace() {
            if let Some(n) = word.strip_prefix("chunks=").and_then(|n| n.parse().ok()) {
                pace.chunks = n;
            } else if let Some(n) = word.strip_prefix("interval_us=").and_then(|n| n.parse().ok()) {
                pace.interval = Duration::from_micros(n);
            }
        }
        pace
    }
}

/// Writes whole lines to stdout, flushed at once. Stdout's lock keeps the
/// lines of the prompts' threads and of the reader whole.
#[derive(Clone, Copy)]
struct Out;

impl Out {
    fn line(&self, line: &str) -> std::io::Result<()> {
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(line.as_bytes())?;
        stdout.write_all(b"\n")?;
        stdout.flush()
    }

    fn send(&self, message: &Value) -> std::io::Result<()> {
        self.line(&message.to_string())
    }
}

fn response(id: &Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

fn error(id: &Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

/// Serves ACP on stdin/stdout until stdin ends.
pub fn run(args: BenchAgentArgs) -> anyhow::Result<()> {
    let default = Pace { chunks: args.chunks, interval: Duration::from_micros(args.interval_us) };
    let out = Out;
    let next_session = AtomicU64::new(1);
    // The cancel flag of the prompt running in each session.
    let running: Arc<Mutex<HashMap<String, Arc<AtomicBool>>>> = Arc::default();
    let stdin = std::io::stdin().lock();
    for line in stdin.lines() {
        let line = line.context("reading stdin")?;
        if line.trim().is_empty() {
            continue;
        }
        let message: Value = match serde_json::from_str(&line) {
            Ok(m) => m,
            Err(e) => {
                out.send(&error(&Value::Null, -32700, &format!("parse error: {e}"))).context("writing stdout")?;
                continue;
            }
        };
        let id = message.get("id").cloned();
        let method = message["method"].as_str().unwrap_or_default();
        let params = &message["params"];
        match (method, id) {
            ("initialize", Some(id)) => out.send(&response(
                &id,
                json!({
                    "protocolVersion": 1,
                    "agentCapabilities": {"loadSession": false},
                    "authMethods": [],
                    "agentInfo": {"name": "bosun-bench-agent", "version": env!("CARGO_PKG_VERSION")},
                }),
            )),
            ("session/new", Some(id)) => {
                let session_id = format!("bench-{}", next_session.fetch_add(1, Ordering::Relaxed));
                out.send(&response(&id, json!({"sessionId": session_id})))
            }
            ("session/prompt", Some(id)) => {
                let session_id = params["sessionId"].as_str().unwrap_or_default().to_string();
                let text: String = params["prompt"]
                    .as_array()
                    .map(|blocks| blocks.iter().filter_map(|b| b["text"].as_str()).collect::<Vec<_>>().join(" "))
                    .unwrap_or_default();
                let pace = Pace::from_text(&text, default);
                let cancel = Arc::new(AtomicBool::new(false));
                running.lock().unwrap_or_else(|p| p.into_inner()).insert(session_id.clone(), cancel.clone());
                let running = running.clone();
                // Its own thread, so a session/cancel is read while it streams.
                std::thread::spawn(move || {
                    let stop_reason = match stream_chunks(&out, &session_id, pace, &cancel) {
                        Ok(true) => "cancelled",
                        Ok(false) => "end_turn",
                        // stdout is gone: nobody to answer.
                        Err(_) => return,
                    };
                    let mut running = running.lock().unwrap_or_else(|p| p.into_inner());
                    if running.get(&session_id).is_some_and(|c| Arc::ptr_eq(c, &cancel)) {
                        running.remove(&session_id);
                    }
                    drop(running);
                    let _ = out.send(&response(&id, json!({"stopReason": stop_reason})));
                });
                Ok(())
            }
            ("session/cancel", None) => {
                if let Some(session_id) = params["sessionId"].as_str() {
                    if let Some(cancel) = running.lock().unwrap_or_else(|p| p.into_inner()).get(session_id) {
                        cancel.store(true, Ordering::Relaxed);
                    }
                }
                Ok(())
            }
            (_, Some(id)) => out.send(&error(&id, -32601, &format!("method not found: {method}"))),
            // Other notifications (and responses, which this agent never asks for).
            (_, None) => Ok(()),
        }
        .context("writing stdout")?;
    }
    Ok(())
}

/// Writes `pace.chunks` agent_message_chunk notifications on a fixed
/// schedule (not interval after interval, so a slow write does not lower the
/// rate). Returns whether it was cancelled.
fn stream_chunks(out: &Out, session_id: &str, pace: Pace, cancel: &AtomicBool) -> std::io::Result<bool> {
    // The line with a marker where the text goes, serialized once, so that
    // between the clock reading and the write there is only a format!.
    const MARK: &str = "@@TEXT@@";
    let template = json!({
        "jsonrpc": "2.0",
        "method": "session/update",
        "params": {
            "sessionId": session_id,
            "update": {"sessionUpdate": "agent_message_chunk", "content": {"type": "text", "text": MARK}},
        },
    })
    .to_string();
    let (prefix, suffix) = template.split_once(MARK).unwrap_or((&template, ""));
    let start = Instant::now();
    for index in 0..pace.chunks {
        let due = start + pace.interval * u32::try_from(index).unwrap_or(u32::MAX);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        if cancel.load(Ordering::Relaxed) {
            return Ok(true);
        }
        let sent_ns = monotonic_ns();
        out.line(&format!("{prefix}{}{suffix}", chunk_text(index, sent_ns)))?;
    }
    Ok(cancel.load(Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_text_round_trips() {
        assert_eq!(parse_chunk_text(&chunk_text(42, 123_456_789)), Some((42, 123_456_789)));
        assert_eq!(parse_chunk_text("echo: chunk 1 t=2"), None);
        assert_eq!(parse_chunk_text("chunk x t=2"), None);
    }

    #[test]
    fn pace_from_prompt_text() {
        let default = Pace { chunks: 10, interval: Duration::from_micros(2000) };
        assert_eq!(Pace::from_text("hello", default), default);
        let pace = Pace { chunks: 5000, interval: Duration::from_micros(500) };
        assert_eq!(Pace::from_text(&pace.prompt_text(), default), pace);
        assert_eq!(Pace::from_text("chunks=3", default).chunks, 3);
    }

    #[test]
    fn monotonic_clock_moves_forward() {
        let a = monotonic_ns();
        std::thread::sleep(Duration::from_millis(2));
        let b = monotonic_ns();
        assert!(a > 0 && b >= a + 2_000_000, "{a} {b}");
    }
}
