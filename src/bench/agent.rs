//! (v) Agent-line-to-receipt latency: what the daemon adds between an agent
//! writing a line on its stdout and a WebSocket client receiving the event
//! made of it.
//!
//! The agent is `bosun bench-agent` (see `bench_agent.rs`), an ACP agent that
//! writes paced `agent_message_chunk`s, each stamped with CLOCK_MONOTONIC just
//! before its line is written. The same agent is measured twice in one run:
//! - **baseline**: this process spawns it and reads its stdout on a blocking
//!   thread, stamping each line as `read_line` returns. That is the pipe and
//!   the kernel waking a reader, with no daemon at all.
//! - **through the daemon**: a real daemon in this process runs it as provider
//!   `bench` (`kind = "acp"`); one WebSocket client subscribed to the session
//!   stamps each `stream:chunk` frame as tungstenite hands it over. That adds
//!   the ACP driver's read and parse, the provider worker and the turn actor,
//!   the durable commit with its flush, and the WebSocket send.

use super::bench_agent::{monotonic_ns, parse_chunk_text, Pace};
use super::{cpu_split, create_session, percentile, progress, thousands, with_daemon, BenchArgs, Report, Row, TempDir};
use anyhow::Context as _;
use bosun_actors::Context;
use bosun_driver::ProviderSpec;
use bosun_proto::{ClientOp, Control, EventData, ServerFrame, Topic, TurnStatus};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::io::{BufRead as _, Write as _};
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

/// Target from the issue, on the whole path (agent line → WebSocket receipt).
const TARGET_P99: Duration = Duration::from_millis(1);
/// Slack on top of a turn's own duration before it counts as stuck.
const TURN_SLACK: Duration = Duration::from_secs(60);
/// Thread name of the WebSocket client (15 bytes at most: Linux truncates).
const CLIENT_THREAD: &str = "bench-agent-ws";

/// One chunk as received: its index in the turn and its latency.
#[derive(Debug, Clone, Copy)]
struct Receipt {
    index: u64,
    latency_ns: u64,
}

/// Latencies of one path and whether every chunk came, in order.
struct PathResult {
    receipts: Vec<Receipt>,
    /// What went wrong with the sequence (missing, repeated, reordered, foreign chunks).
    problems: Vec<String>,
}

impl PathResult {
    fn new(receipts: Vec<Receipt>, expected: u64, mut problems: Vec<String>) -> PathResult {
        problems.extend(sequence_problem(&receipts, expected));
        PathResult { receipts, problems }
    }

    fn sorted_latencies(&self) -> Vec<u64> {
        let mut latencies: Vec<u64> = self.receipts.iter().map(|r| r.latency_ns).collect();
        latencies.sort_unstable();
        latencies
    }
}

/// Chunks must arrive as 0, 1, 2, … `expected - 1`, each once.
fn sequence_problem(receipts: &[Receipt], expected: u64) -> Option<String> {
    let out_of_order = receipts.iter().enumerate().filter(|(i, r)| r.index != *i as u64).count();
    if receipts.len() as u64 == expected && out_of_order == 0 {
        return None;
    }
    let first_bad = receipts.iter().enumerate().find(|(i, r)| r.index != *i as u64);
    Some(format!(
        "received {} of {expected} chunks, {out_of_order} not where they belong{}",
        receipts.len(),
        first_bad.map(|(i, r)| format!(" (position {i} holds chunk {})", r.index)).unwrap_or_default()
    ))
}

pub async fn run(args: &BenchArgs, base: &Path) -> anyhow::Result<Report> {
    anyhow::ensure!(args.agent_chunks > 0, "--agent-chunks must be at least 1");
    let exe = std::env::current_exe().context("finding this program, to run it as the agent")?;
    let interval = Duration::from_micros(args.agent_interval_us);
    let warmup = Pace { chunks: args.agent_warmup, interval };
    let measured = Pace { chunks: args.agent_chunks, interval };
    let turn_secs = interval.as_secs_f64() * (warmup.chunks + measured.chunks) as f64;

    // The baseline first, while no daemon runs in this process.
    progress(&format!("   baseline: the agent's lines read straight from its pipe (~{turn_secs:.0} s)"));
    let baseline = {
        let exe = exe.clone();
        tokio::task::spawn_blocking(move || read_from_pipe(&exe, warmup, measured))
            .await
            .context("the baseline reader panicked")??
    };

    progress(&format!("   through the daemon: agent → ACP driver → turn → store → WebSocket (~{turn_secs:.0} s)"));
    let dir = TempDir::new(base, "agent")?;
    let daemon = through_daemon(&exe, dir.path(), warmup, measured).await?;
    Ok(report(args, measured, &baseline, &daemon))
}

/// An ACP agent on pipes, spoken to synchronously.
struct PipeAgent {
    stdin: std::process::ChildStdin,
    stdout: std::io::BufReader<std::process::ChildStdout>,
    next_id: u64,
}

impl PipeAgent {
    fn send(&mut self, method: &str, params: Value) -> anyhow::Result<u64> {
        self.next_id += 1;
        let line = json!({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params}).to_string();
        writeln!(self.stdin, "{line}").and_then(|()| self.stdin.flush()).context("writing to the agent")?;
        Ok(self.next_id)
    }

    /// The next line, with the clock read as soon as it is in.
    fn read(&mut self, line: &mut String) -> anyhow::Result<(Value, u64)> {
        line.clear();
        let n = self.stdout.read_line(line).context("reading the agent")?;
        let received_ns = monotonic_ns();
        anyhow::ensure!(n > 0, "the agent closed its stdout");
        let message = serde_json::from_str(line).with_context(|| format!("the agent wrote {line:?}"))?;
        Ok((message, received_ns))
    }

    /// Sends a request and waits for its answer, ignoring notifications.
    fn request(&mut self, method: &str, params: Value) -> anyhow::Result<Value> {
        let id = self.send(method, params)?;
        let mut line = String::new();
        loop {
            let (message, _) = self.read(&mut line)?;
            if message["id"].as_u64() == Some(id) && message.get("method").is_none() {
                anyhow::ensure!(message.get("error").is_none(), "{method}: {}", message["error"]);
                return Ok(message["result"].clone());
            }
        }
    }

    /// Runs one prompt, timing each chunk from its stamp to its `read_line`.
    fn prompt(&mut self, session_id: &str, pace: Pace) -> anyhow::Result<Vec<Receipt>> {
        let params = json!({"sessionId": session_id, "prompt": [{"type": "text", "text": pace.prompt_text()}]});
        let id = self.send("session/prompt", params)?;
        let mut receipts = Vec::with_capacity(pace.chunks as usize);
        let mut line = String::new();
        loop {
            let (message, received_ns) = self.read(&mut line)?;
            if message["id"].as_u64() == Some(id) && message.get("method").is_none() {
                let stop = &message["result"]["stopReason"];
                anyhow::ensure!(stop == "end_turn", "the prompt ended with {message}");
                return Ok(receipts);
            }
            let text = message["params"]["update"]["content"]["text"].as_str().unwrap_or_default();
            if let Some((index, sent_ns)) = parse_chunk_text(text) {
                receipts.push(Receipt { index, latency_ns: received_ns.saturating_sub(sent_ns) });
            }
        }
    }
}

/// The baseline: the agent's chunks read by this process from its stdout.
fn read_from_pipe(exe: &Path, warmup: Pace, measured: Pace) -> anyhow::Result<PathResult> {
    let mut child = std::process::Command::new(exe)
        .arg("bench-agent")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {} bench-agent", exe.display()))?;
    let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        let _ = child.kill();
        let _ = child.wait();
        anyhow::bail!("the agent's pipes were not set up");
    };
    // Reads block, so a stuck agent is killed from the side: its stdout then
    // ends and the read fails.
    let limit = (warmup.interval * u32::try_from(warmup.chunks + measured.chunks).unwrap_or(u32::MAX)) + TURN_SLACK;
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        let timed_out = matches!(done_rx.recv_timeout(limit), Err(std::sync::mpsc::RecvTimeoutError::Timeout));
        let _ = child.kill();
        let _ = child.wait();
        timed_out
    });
    let mut agent = PipeAgent { stdin, stdout: std::io::BufReader::new(stdout), next_id: 0 };
    let outcome = (|| {
        agent.request("initialize", json!({"protocolVersion": 1, "clientCapabilities": {}}))?;
        let session = agent.request("session/new", json!({"cwd": "/", "mcpServers": []}))?;
        let session_id = session["sessionId"].as_str().context("session/new gave no sessionId")?.to_string();
        if warmup.chunks > 0 {
            agent.prompt(&session_id, warmup)?;
        }
        agent.prompt(&session_id, measured)
    })();
    drop(done_tx);
    let timed_out = watchdog.join().unwrap_or(false);
    if timed_out {
        anyhow::bail!("baseline: the agent did not finish within {:.0} s", limit.as_secs_f64());
    }
    let receipts = outcome.context("baseline")?;
    Ok(PathResult::new(receipts, measured.chunks, Vec::new()))
}

/// The daemon path, and what the daemon cost while the measured turn ran.
struct DaemonResult {
    path: PathResult,
    /// CPU of this process but the client's thread (the daemon, and sled's
    /// threads), during the measured turn.
    cpu: Option<Duration>,
    wall: Duration,
}

async fn through_daemon(exe: &Path, dir: &Path, warmup: Pace, measured: Pace) -> anyhow::Result<DaemonResult> {
    let exe = exe.to_str().context("this program's path is not UTF-8")?;
    let providers = vec![ProviderSpec::new("bench", "acp", Some(exe), &["bench-agent"])];
    with_daemon(dir.join("data"), providers, |ctx, addr| async move {
        drive(&ctx, &addr.to_string(), dir, warmup, measured).await
    })
    .await
}

/// What the client tells the bench as it goes.
enum Note {
    Subscribed,
    TurnEnded { turn_id: String, status: TurnStatus, reason: Option<String> },
}

/// Everything the client received.
#[derive(Default)]
struct ClientLog {
    /// (turn id, receipt) of every chunk that carried one of our stamps.
    chunks: Vec<(String, Receipt)>,
    /// Chunks whose text was not a stamp: (turn id, text).
    foreign: Vec<(String, String)>,
    error: Option<String>,
}

/// One WebSocket subscriber on its own thread and runtime, as if it were
/// another process: it does not wait for the daemon's workers, nor they for it.
fn start_client(
    url: String,
    topic: String,
    since: u64,
    notes: mpsc::UnboundedSender<Note>,
    stop: oneshot::Receiver<()>,
) -> anyhow::Result<oneshot::Receiver<ClientLog>> {
    let (log_tx, log_rx) = oneshot::channel();
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the client's runtime")?;
    std::thread::Builder::new()
        .name(CLIENT_THREAD.into())
        .spawn(move || {
            let log = runtime.block_on(client(url, topic, since, notes, stop));
            let _ = log_tx.send(log);
        })
        .context("starting the client's thread")?;
    Ok(log_rx)
}

async fn client(
    url: String,
    topic: String,
    since: u64,
    notes: mpsc::UnboundedSender<Note>,
    mut stop: oneshot::Receiver<()>,
) -> ClientLog {
    let mut log = ClientLog::default();
    // Frames here are small: tungstenite's 128 KiB default read buffer would
    // be zero-filled before every read (see fanout.rs).
    let config = WebSocketConfig::default().read_buffer_size(8 * 1024);
    let mut ws = match tokio_tungstenite::connect_async_with_config(&url, Some(config), false).await {
        Ok((ws, _)) => ws,
        Err(e) => {
            log.error = Some(format!("connect: {e}"));
            return log;
        }
    };
    let subscribe = ClientOp::Subscribe { topics: vec![topic], since };
    let sent = match serde_json::to_string(&subscribe) {
        Ok(text) => ws.send(Message::text(text)).await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = sent {
        log.error = Some(format!("subscribe: {e}"));
        return log;
    }
    loop {
        let frame = tokio::select! {
            _ = &mut stop => break,
            frame = ws.next() => frame,
        };
        // Taken before parsing: the parse is the client's cost, not the daemon's.
        let received_ns = monotonic_ns();
        let frame = match frame {
            None => {
                log.error = Some("the server closed the connection".into());
                break;
            }
            Some(Err(e)) => {
                log.error = Some(format!("read: {e}"));
                break;
            }
            Some(Ok(frame)) => frame,
        };
        let Message::Text(text) = frame else { continue };
        let envelope = match serde_json::from_str(text.as_str()) {
            Ok(ServerFrame::Event(envelope)) => envelope,
            Ok(ServerFrame::Control(Control::Subscribed { .. })) => {
                let _ = notes.send(Note::Subscribed);
                continue;
            }
            Ok(ServerFrame::Control(_)) => continue,
            Err(e) => {
                log.error = Some(format!("bad frame: {e}"));
                break;
            }
        };
        match envelope.payload() {
            Ok(EventData::StreamChunk(chunk)) => {
                let turn_id = chunk.turn_id.to_string();
                match parse_chunk_text(&chunk.text) {
                    Some((index, sent_ns)) => {
                        log.chunks.push((turn_id, Receipt { index, latency_ns: received_ns.saturating_sub(sent_ns) }))
                    }
                    None => log.foreign.push((turn_id, chunk.text)),
                }
            }
            Ok(EventData::TurnCompleted(done)) => {
                let turn_id = done.turn_id.to_string();
                let _ = notes.send(Note::TurnEnded { turn_id, status: done.status, reason: done.reason });
            }
            Ok(_) => {}
            Err(e) => {
                log.error = Some(format!("a {} event that does not fit its schema: {e}", envelope.kind.as_str()));
                break;
            }
        }
    }
    let _ = ws.close(None).await;
    log
}

/// CPU of this process but the client's thread, so far.
fn daemon_cpu() -> Option<Duration> {
    cpu_split(CLIENT_THREAD).map(|(total, client)| total.saturating_sub(client))
}

/// Creates the session, subscribes, runs the warm-up turn and the measured one.
async fn drive(ctx: &Context, addr: &str, cwd: &Path, warmup: Pace, measured: Pace) -> anyhow::Result<DaemonResult> {
    let client = super::client(addr)?;
    let session_id = create_session(&client, "bench", cwd, "bench agent").await?;

    let (notes_tx, mut notes) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = oneshot::channel();
    let since = ctx.store.durable_head();
    let topic = Topic::session(&session_id).to_string();
    let log_rx = start_client(format!("ws://{addr}/ws"), topic, since, notes_tx, stop_rx)?;
    match tokio::time::timeout(Duration::from_secs(30), notes.recv()).await {
        Ok(Some(Note::Subscribed)) => {}
        _ => {
            let _ = stop_tx.send(());
            let why = log_rx.await.ok().and_then(|log| log.error).unwrap_or_else(|| "no answer within 30 s".into());
            anyhow::bail!("the client could not subscribe: {why}");
        }
    }

    let outcome = async {
        if warmup.chunks > 0 {
            let turn_id = start_turn(&client, &session_id, warmup).await.context("warm-up turn")?;
            wait_turn(&mut notes, &turn_id, warmup).await.context("warm-up turn")?;
        }
        let cpu_before = daemon_cpu();
        let started = Instant::now();
        let turn_id = start_turn(&client, &session_id, measured).await.context("measured turn")?;
        wait_turn(&mut notes, &turn_id, measured).await.context("measured turn")?;
        let wall = started.elapsed();
        let cpu = daemon_cpu().zip(cpu_before).map(|(after, before)| after.saturating_sub(before));
        Ok::<_, anyhow::Error>((turn_id, cpu, wall))
    }
    .await;
    let _ = stop_tx.send(());
    let log = log_rx.await.context("the client's thread ended without a result")?;
    let (turn_id, cpu, wall) = outcome?;

    let receipts: Vec<Receipt> = log.chunks.iter().filter(|(t, _)| *t == turn_id).map(|(_, r)| *r).collect();
    let mut problems = Vec::new();
    let foreign: Vec<&String> = log.foreign.iter().filter(|(t, _)| *t == turn_id).map(|(_, text)| text).collect();
    if !foreign.is_empty() {
        problems.push(format!("{} chunks without a stamp, first {:?}", foreign.len(), foreign[0]));
    }
    if let Some(e) = log.error {
        problems.push(format!("client: {e}"));
    }
    Ok(DaemonResult { path: PathResult::new(receipts, measured.chunks, problems), cpu, wall })
}

/// Starts a turn whose prompt asks the agent for `pace`; its turn id.
async fn start_turn(client: &bosun_client::Client, session_id: &str, pace: Pace) -> anyhow::Result<String> {
    let started = client.start_turn(session_id, &pace.prompt_text()).await.context("starting a turn")?;
    Ok(started.turn_id.to_string())
}

/// Waits until the client has seen the turn end, and checks it completed.
/// The turn's chunks come before its end on the topic, so by then the
/// client has them all.
async fn wait_turn(notes: &mut mpsc::UnboundedReceiver<Note>, turn_id: &str, pace: Pace) -> anyhow::Result<()> {
    let limit = pace.interval * u32::try_from(pace.chunks).unwrap_or(u32::MAX) + TURN_SLACK;
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, notes.recv()).await {
            Ok(Some(Note::TurnEnded { turn_id: ended, status, reason })) if ended == turn_id => {
                anyhow::ensure!(
                    status == TurnStatus::Completed,
                    "turn {turn_id} ended {}: {}",
                    status.as_str(),
                    reason.as_deref().unwrap_or("no reason given")
                );
                return Ok(());
            }
            Ok(Some(_)) => {}
            Ok(None) => anyhow::bail!("the client stopped before turn {turn_id} ended"),
            Err(_) => anyhow::bail!("turn {turn_id} did not end within {:.0} s", limit.as_secs_f64()),
        }
    }
}

/// Nanoseconds as milliseconds with 3 decimals: the baseline is tens of µs.
fn ms(nanos: u64) -> String {
    format!("{:.3} ms", nanos as f64 / 1e6)
}

/// How many of the sorted latencies are not under the target.
fn sorted_over(sorted: &[u64]) -> usize {
    sorted.len() - sorted.partition_point(|&ns| ns < TARGET_P99.as_nanos() as u64)
}

/// The same as text: "37 (1.5%)".
fn over_target(sorted: &[u64]) -> String {
    let over = sorted_over(sorted);
    format!("{} ({:.1}%)", thousands(over as u64), 100.0 * over as f64 / sorted.len().max(1) as f64)
}

fn report(args: &BenchArgs, measured: Pace, baseline: &PathResult, daemon: &DaemonResult) -> Report {
    let base = baseline.sorted_latencies();
    let through = daemon.path.sorted_latencies();
    let stats = |sorted: &[u64]| {
        (
            percentile(sorted, 50.0),
            percentile(sorted, 99.0),
            percentile(sorted, 99.9),
            sorted.last().copied().unwrap_or(0),
        )
    };
    let (b50, b99, b999, bmax) = stats(&base);
    let (d50, d99, d999, dmax) = stats(&through);
    let mut failures = Vec::new();
    for (label, result) in [("baseline", baseline), ("through the daemon", &daemon.path)] {
        if !result.problems.is_empty() {
            failures.push(format!("{label}: {}", result.problems.join("; ")));
        }
    }
    let met = d99 < TARGET_P99.as_nanos() as u64 && failures.is_empty();
    let ratio = |d: u64, b: u64| if b > 0 { format!("{:.1}×", d as f64 / b as f64) } else { "-".into() };
    let added = |d: u64, b: u64| format!("{} ({})", ms(d.saturating_sub(b)), ratio(d, b));
    let chunks = daemon.path.receipts.len() as u64;
    let cpu_text = match daemon.cpu {
        Some(cpu) => format!(
            "{:.2} cores, {:.0} µs per chunk",
            cpu.as_secs_f64() / daemon.wall.as_secs_f64().max(1e-9),
            cpu.as_secs_f64() * 1e6 / chunks.max(1) as f64
        ),
        None => "unknown".into(),
    };
    let rows = vec![
        Row::info(
            "chunks",
            format!(
                "{} every {:.2} ms, after {} warm-up",
                thousands(measured.chunks),
                measured.interval.as_secs_f64() * 1e3,
                thousands(args.agent_warmup)
            ),
        ),
        Row::info("baseline: pipe only (write → read_line)", format!("p50 {} / p99 {}", ms(b50), ms(b99))),
        Row::info("baseline p99.9 / max", format!("{} / {}", ms(b999), ms(bmax))),
        Row::info("agent line→WS receipt p50", ms(d50)),
        Row::target("agent line→WS receipt p99", ms(d99), "< 1 ms", met),
        Row::info("agent line→WS receipt p99.9 / max", format!("{} / {}", ms(d999), ms(dmax))),
        Row::info("chunks over 1 ms", over_target(&through)),
        Row::info("added by the daemon p50 / p99", format!("{} / {}", added(d50, b50), added(d99, b99))),
        Row::info("daemon path includes", "ACP parse, turn actor, durable commit + flush, WS send"),
        Row::info("CPU, daemon during the turn", cpu_text),
        Row::info(
            "every chunk, in order",
            if failures.is_empty() {
                format!("yes ({} + {} baseline)", thousands(chunks), thousands(baseline.receipts.len() as u64))
            } else {
                "NO".into()
            },
        ),
    ];
    let summary = |sorted: &[u64]| {
        json!({
            "count": sorted.len(),
            "p50": percentile(sorted, 50.0) as f64 / 1e6,
            "p90": percentile(sorted, 90.0) as f64 / 1e6,
            "p99": percentile(sorted, 99.0) as f64 / 1e6,
            "p99_9": percentile(sorted, 99.9) as f64 / 1e6,
            "max": sorted.last().copied().unwrap_or(0) as f64 / 1e6,
        })
    };
    let data = json!({
        "chunks": measured.chunks,
        "interval_us": measured.interval.as_micros() as u64,
        "warmup_chunks": args.agent_warmup,
        "baseline_ms": summary(&base),
        "daemon_ms": summary(&through),
        "over_target": sorted_over(&through),
        "added_ms": {"p50": d50.saturating_sub(b50) as f64 / 1e6, "p99": d99.saturating_sub(b99) as f64 / 1e6},
        "cpu_daemon_s": daemon.cpu.map(|c| c.as_secs_f64()),
        "wall_s": daemon.wall.as_secs_f64(),
        "target_p99_ms": TARGET_P99.as_secs_f64() * 1e3,
        "met": met,
    });
    Report { rows, data, failures }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receipts(indices: &[u64]) -> Vec<Receipt> {
        indices.iter().map(|&index| Receipt { index, latency_ns: 1 }).collect()
    }

    #[test]
    fn sequence_must_be_whole_and_in_order() {
        assert_eq!(sequence_problem(&receipts(&[0, 1, 2]), 3), None);
        assert!(sequence_problem(&receipts(&[0, 1]), 3).is_some());
        assert!(sequence_problem(&receipts(&[0, 2, 1]), 3).is_some());
        assert!(sequence_problem(&receipts(&[0, 1, 1, 2]), 3).is_some());
    }
}
