//! (ii) Append-to-receipt latency at many WebSocket subscribers: a real daemon
//! in this process, clients over loopback, events committed at a steady rate
//! straight to its store, each carrying the instant it was handed to `commit`.
//!
//! The clients run on the same two cores as the daemon, so their own work
//! (reading and parsing every frame) is inside the measured latency.

use super::{
    cpu_split, create_session, ms, percentile, progress, thousands, with_daemon, BenchArgs, Report, Row, TempDir,
};
use anyhow::Context as _;
use bosun_actors::Context;
use bosun_proto::{events, ChunkKind, ClientOp, Control, EventData, ServerFrame, Topic};
use bosun_state::Batch;
use futures::{SinkExt, StreamExt};
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

/// Target from the issue.
const TARGET_P99: Duration = Duration::from_millis(5);
/// How long clients may take after the last commit to receive the rest.
const DRAIN: Duration = Duration::from_secs(30);

/// Thread name of the clients' runtime (15 bytes at most: Linux truncates).
const CLIENT_THREAD: &str = "bench-client";
/// The clients' read buffer (see where they connect).
const READ_BUFFER: usize = 8 * 1024;

/// A probe chunk's text starts with when it was committed (nanoseconds
/// since the bench's base instant, 20 digits), then the payload.
const STAMP_DIGITS: usize = 20;

/// The commit instant a probe chunk carries.
fn sent_ns(chunk: &events::StreamChunk) -> Option<u64> {
    chunk.text.get(..STAMP_DIGITS)?.parse().ok()
}

#[derive(Default)]
struct ClientResult {
    /// Append-to-receipt, per event received, in nanoseconds.
    latencies: Vec<u64>,
    received: u64,
    /// Events whose seq was not above the previous one (duplicates, reordering).
    out_of_order: u64,
    error: Option<String>,
}

/// One WebSocket subscriber.
struct Client {
    url: String,
    topic: String,
    since: u64,
    /// Events to expect.
    total: u64,
    /// The instant `sent_ns` counts from.
    base: Instant,
    deadline: tokio::time::Instant,
}

impl Client {
    /// Connects, subscribes (telling `subscribed` once the server confirms),
    /// then reads until it has every event or the deadline passes.
    async fn run(self, subscribed: tokio::sync::mpsc::Sender<()>) -> ClientResult {
        let mut result = ClientResult { latencies: Vec::with_capacity(self.total as usize), ..ClientResult::default() };
        // tungstenite zero-fills its whole read buffer before every read: at
        // the default 128 KiB that memset was a fifth of the CPU of this part.
        // Frames here are well under 1 KiB.
        let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER);
        let mut ws = match tokio_tungstenite::connect_async_with_config(&self.url, Some(config), false).await {
            Ok((ws, _)) => ws,
            Err(e) => {
                result.error = Some(format!("connect: {e}"));
                return result;
            }
        };
        let subscribe = ClientOp::Subscribe { topics: vec![self.topic.clone()], since: self.since };
        let subscribe = match serde_json::to_string(&subscribe) {
            Ok(text) => text,
            Err(e) => {
                result.error = Some(format!("subscribe: {e}"));
                return result;
            }
        };
        if let Err(e) = ws.send(Message::text(subscribe)).await {
            result.error = Some(format!("subscribe: {e}"));
            return result;
        }
        let mut last_seq = 0;
        while result.received < self.total {
            let frame = match tokio::time::timeout_at(self.deadline, ws.next()).await {
                Err(_) => {
                    result.error = Some("timed out".into());
                    break;
                }
                Ok(None) => {
                    result.error = Some("the server closed the connection".into());
                    break;
                }
                Ok(Some(Err(e))) => {
                    result.error = Some(format!("read: {e}"));
                    break;
                }
                Ok(Some(Ok(frame))) => frame,
            };
            // Taken before parsing: the parse is the client's cost, not the daemon's.
            let received_ns = self.base.elapsed().as_nanos() as u64;
            let Message::Text(text) = frame else { continue };
            let envelope = match serde_json::from_str(text.as_str()) {
                Ok(ServerFrame::Event(envelope)) => envelope,
                Ok(ServerFrame::Control(Control::Subscribed { .. })) => {
                    let _ = subscribed.send(()).await;
                    continue;
                }
                Ok(ServerFrame::Control(_)) => continue,
                Err(e) => {
                    result.error = Some(format!("bad frame: {e}"));
                    break;
                }
            };
            let seq = envelope.seq;
            let Ok(EventData::StreamChunk(chunk)) = envelope.payload() else { continue };
            let Some(sent_ns) = sent_ns(&chunk) else { continue };
            if seq <= last_seq {
                result.out_of_order += 1;
            }
            last_seq = seq;
            result.received += 1;
            result.latencies.push(received_ns.saturating_sub(sent_ns));
        }
        let _ = ws.close(None).await;
        result
    }
}

/// The clients' runtime. A runtime dropped inside another one panics, so this
/// shuts it down in the background instead, on every way out of `measure`.
struct ClientRuntime(Option<tokio::runtime::Runtime>);

impl ClientRuntime {
    fn handle(&self) -> anyhow::Result<&tokio::runtime::Handle> {
        self.0.as_ref().map(|rt| rt.handle()).context("the clients' runtime is gone")
    }
}

impl Drop for ClientRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// "0.85 cores, 8.5 µs per receipt".
fn cpu_text(cpu: Option<Duration>, wall: Duration, receipts: u64) -> String {
    match cpu {
        Some(cpu) => format!(
            "{:.2} cores, {:.1} µs per receipt",
            cpu.as_secs_f64() / wall.as_secs_f64().max(1e-9),
            cpu.as_secs_f64() * 1e6 / receipts.max(1) as f64
        ),
        None => "unknown".into(),
    }
}

pub async fn run(args: &BenchArgs, base: &Path) -> anyhow::Result<Report> {
    anyhow::ensure!(args.rate > 0, "--rate must be at least 1");
    let dir = TempDir::new(base, "fanout")?;
    let cwd = dir.path();
    with_daemon(
        cwd.join("data"),
        Vec::new(),
        |ctx, addr| async move { measure(args, &ctx, &addr.to_string(), cwd).await },
    )
    .await
}

async fn measure(args: &BenchArgs, ctx: &Context, addr: &str, cwd: &Path) -> anyhow::Result<Report> {
    let client = super::client(addr)?;
    let session_id = create_session(&client, "demo", cwd, "bench fan-out").await?;
    let topic = Topic::session(&session_id);

    let total = (args.rate as f64 * args.fanout_secs).round().max(1.0) as u64;
    let base = Instant::now();
    let since = ctx.store.durable_head();

    progress(&format!("   connecting {} subscribers", args.subscribers));
    // The clients get their own runtime (threads named bench-client), as if
    // they were other processes: the daemon's workers serve only the daemon,
    // and the CPU of each side can be told apart.
    let client_rt = ClientRuntime(Some(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2))
            .thread_name(CLIENT_THREAD)
            .enable_all()
            .build()
            .context("starting the clients' runtime")?,
    ));
    let mut clients = tokio::task::JoinSet::new();
    let (subscribed_tx, mut subscribed_rx) = tokio::sync::mpsc::channel::<()>(args.subscribers.max(1));
    let deadline =
        tokio::time::Instant::now() + Duration::from_secs_f64(args.fanout_secs) + DRAIN + Duration::from_secs(30);
    for _ in 0..args.subscribers {
        let client = Client { url: format!("ws://{addr}/ws"), topic: topic.to_string(), since, total, base, deadline };
        clients.spawn_on(client.run(subscribed_tx.clone()), client_rt.handle()?);
    }
    drop(subscribed_tx);
    for _ in 0..args.subscribers {
        if tokio::time::timeout(Duration::from_secs(30), subscribed_rx.recv()).await.ok().flatten().is_none() {
            // A client that failed to connect says why in its result.
            let why = match clients.try_join_next() {
                Some(Ok(r)) => r.error.unwrap_or_default(),
                _ => "no answer within 30 s".into(),
            };
            anyhow::bail!("a client could not subscribe: {why}");
        }
    }

    progress(&format!("   committing {} events at {}/s", thousands(total), args.rate));
    let text = "x".repeat(args.payload_bytes);
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate as f64));
    // Behind schedule (a busy core): catch up, so the rate holds on average.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut commits = tokio::task::JoinSet::new();
    let mut commit_latencies = Vec::with_capacity(total as usize);
    let started = Instant::now();
    let cpu_before = cpu_split(CLIENT_THREAD);
    for index in 0..total {
        tick.tick().await;
        let store = ctx.store.clone();
        let topic = topic.clone();
        let data_text = text.clone();
        // Each commit in its own task, so a slow flush does not delay the schedule.
        commits.spawn(async move {
            let sent_ns = base.elapsed().as_nanos() as u64;
            let chunk = events::StreamChunk {
                turn_id: "t_bench".into(),
                index,
                kind: ChunkKind::Text,
                text: format!("{sent_ns:0width$}{data_text}", width = STAMP_DIGITS),
            };
            let mut batch = Batch::new();
            batch.event(EventData::StreamChunk(chunk).into_event(topic));
            store.commit(batch).await?;
            Ok::<u64, bosun_state::StoreError>(base.elapsed().as_nanos() as u64 - sent_ns)
        });
        // Reap finished commits as we go so the set stays small.
        while let Some(done) = commits.try_join_next() {
            commit_latencies.push(done.context("a commit task panicked")?.context("a commit failed")?);
        }
    }
    let send_elapsed = started.elapsed();
    while let Some(done) = commits.join_next().await {
        commit_latencies.push(done.context("a commit task panicked")?.context("a commit failed")?);
    }

    progress("   waiting for every client to receive every event");
    let mut latencies: Vec<u64> = Vec::with_capacity((total as usize).saturating_mul(args.subscribers));
    let mut short = 0usize;
    let mut out_of_order = 0u64;
    let mut min_received = u64::MAX;
    let mut errors: Vec<String> = Vec::new();
    while let Some(done) = clients.join_next().await {
        let r = done.context("a client task panicked")?;
        if r.received < total {
            short += 1;
        }
        min_received = min_received.min(r.received);
        out_of_order += r.out_of_order;
        if let Some(e) = r.error {
            errors.push(e);
        }
        latencies.extend(r.latencies);
    }
    let cpu_after = cpu_split(CLIENT_THREAD);
    drop(client_rt);
    let wall = started.elapsed();
    let receipts = latencies.len() as u64;
    let (cpu_daemon, cpu_clients) = match (cpu_before, cpu_after) {
        (Some((total_0, clients_0)), Some((total_1, clients_1))) => {
            let clients = clients_1.saturating_sub(clients_0);
            (Some(total_1.saturating_sub(total_0).saturating_sub(clients)), Some(clients))
        }
        _ => (None, None),
    };
    latencies.sort_unstable();
    commit_latencies.sort_unstable();
    if args.subscribers == 0 {
        min_received = 0;
    }

    let p50 = percentile(&latencies, 50.0);
    let p99 = percentile(&latencies, 99.0);
    let p999 = percentile(&latencies, 99.9);
    let max = latencies.last().copied().unwrap_or(0);
    let achieved_rate = total as f64 / send_elapsed.as_secs_f64();
    let mut failures = Vec::new();
    if short > 0 || out_of_order > 0 {
        failures.push(format!(
            "{short} of {} clients missed events (fewest received: {min_received} of {total}); {out_of_order} out of order; errors: {:?}",
            args.subscribers,
            errors.iter().take(3).collect::<Vec<_>>()
        ));
    }
    let met = p99 < TARGET_P99.as_nanos() as u64 && failures.is_empty();
    let rows = vec![
        Row::info(
            "subscribers × events",
            format!("{} × {} at {:.0}/s", args.subscribers, thousands(total), achieved_rate),
        ),
        Row::info("append→receipt p50", ms(p50)),
        Row::target("append→receipt p99", ms(p99), "< 5 ms", met),
        Row::info("append→receipt p99.9 / max", format!("{} / {}", ms(p999), ms(max))),
        Row::info(
            "commit (append→ack) p50 / p99",
            format!("{} / {}", ms(percentile(&commit_latencies, 50.0)), ms(percentile(&commit_latencies, 99.0))),
        ),
        Row::info("CPU, daemon (all but clients)", cpu_text(cpu_daemon, wall, receipts)),
        Row::info("CPU, clients", cpu_text(cpu_clients, wall, receipts)),
        Row::info(
            "every client got every event",
            if failures.is_empty() {
                format!("yes ({} receipts)", thousands(latencies.len() as u64))
            } else {
                format!("NO ({short} short)")
            },
        ),
    ];
    let data = json!({
        "subscribers": args.subscribers,
        "events": total,
        "rate_target": args.rate,
        "rate_achieved": achieved_rate,
        "receipts": latencies.len(),
        "latency_ms": {
            "p50": p50 as f64 / 1e6, "p90": percentile(&latencies, 90.0) as f64 / 1e6,
            "p99": p99 as f64 / 1e6, "p99_9": p999 as f64 / 1e6, "max": max as f64 / 1e6,
        },
        "commit_latency_ms": {
            "p50": percentile(&commit_latencies, 50.0) as f64 / 1e6,
            "p99": percentile(&commit_latencies, 99.0) as f64 / 1e6,
            "max": commit_latencies.last().copied().unwrap_or(0) as f64 / 1e6,
        },
        "cpu_daemon_s": cpu_daemon.map(|c| c.as_secs_f64()),
        "cpu_clients_s": cpu_clients.map(|c| c.as_secs_f64()),
        "wall_s": wall.as_secs_f64(),
        "clients_short": short,
        "out_of_order": out_of_order,
        "target_p99_ms": TARGET_P99.as_secs_f64() * 1e3,
        "met": met,
    });
    Ok(Report { rows, data, failures })
}
