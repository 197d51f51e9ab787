//! (i) Durable append throughput: many tasks each commit one event and await
//! its acknowledgement (which comes only after the flush), under group commit
//! and under one flush per commit, each in a fresh store.

use super::{progress, thousands, BenchArgs, Report, Row, TempDir};
use anyhow::Context as _;
use bosun_proto::{events, ChunkKind, EventData, Topic};
use bosun_state::{Batch, FlushPolicy, Store, StoreConfig};
use serde_json::json;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Target from the issue, for group commit.
const TARGET_EVENTS_PER_S: f64 = 100_000.0;
/// Not counted: the first writes create sled's segments and warm its cache.
const WARM_UP: Duration = Duration::from_secs(1);

struct ModeResult {
    events_per_s: f64,
    /// Events acknowledged in the measured window.
    events: u64,
    /// Flushes in the measured window.
    flushes: u64,
    window: Duration,
    /// Every event acknowledged over the whole run (warm-up included).
    acked_total: u64,
    head_after: u64,
    head_reopened: u64,
}

pub async fn run(args: &BenchArgs, base: &Path) -> anyhow::Result<Report> {
    anyhow::ensure!(args.appenders > 0, "--appenders must be at least 1");
    let topics = args.append_topics.unwrap_or(args.appenders);
    anyhow::ensure!(topics > 0, "--append-topics must be at least 1");
    let window = Duration::from_secs_f64(args.append_secs.max(0.1));
    let group = mode(FlushPolicy::GroupCommit, args, topics, base, window).await?;
    let every = mode(FlushPolicy::EveryRequest, args, topics, base, window).await?;

    let ratio = group.events_per_s / every.events_per_s.max(1.0);
    let mut failures = Vec::new();
    for (name, m) in [("group commit", &group), ("one flush per event", &every)] {
        // The store acknowledges only after the flush, so every acknowledged
        // event must be below the durable head, and still there after reopening.
        if m.head_after != m.acked_total || m.head_reopened != m.acked_total {
            failures.push(format!(
                "{name}: {} events acknowledged, durable head {} before close, {} after reopen",
                m.acked_total, m.head_after, m.head_reopened
            ));
        }
    }
    let per_flush = |m: &ModeResult| m.events as f64 / m.flushes.max(1) as f64;
    let rows = vec![
        Row::target(
            format!("group commit, {} appenders, {} topics", args.appenders, topics),
            format!("{} ev/s", thousands(group.events_per_s as u64)),
            "≥ 100,000 ev/s",
            group.events_per_s >= TARGET_EVENTS_PER_S,
        ),
        Row::info("one flush per event", format!("{} ev/s", thousands(every.events_per_s as u64))),
        Row::info("ratio group / every", format!("{ratio:.1}×")),
        Row::info(
            "flushes (group / every)",
            format!("{} / {} in {:.1} s", thousands(group.flushes), thousands(every.flushes), window.as_secs_f64()),
        ),
        Row::info("events per flush (group / every)", format!("{:.1} / {:.1}", per_flush(&group), per_flush(&every))),
        Row::info(
            "acked = durable after reopen",
            if failures.is_empty() {
                format!("yes ({} + {} events)", thousands(group.acked_total), thousands(every.acked_total))
            } else {
                "NO".to_string()
            },
        ),
    ];
    let data_of = |m: &ModeResult| {
        json!({
            "events_per_s": m.events_per_s,
            "events": m.events,
            "flushes": m.flushes,
            "window_s": m.window.as_secs_f64(),
            "acked_total": m.acked_total,
            "durable_head_before_close": m.head_after,
            "durable_head_after_reopen": m.head_reopened,
        })
    };
    let data = json!({
        "appenders": args.appenders,
        "topics": topics,
        "payload_bytes": args.payload_bytes,
        "group_commit": data_of(&group),
        "every_request": data_of(&every),
        "ratio": ratio,
        "target_events_per_s": TARGET_EVENTS_PER_S,
        "met": group.events_per_s >= TARGET_EVENTS_PER_S,
    });
    Ok(Report { rows, data, failures })
}

async fn mode(
    policy: FlushPolicy,
    args: &BenchArgs,
    topics: usize,
    base: &Path,
    window: Duration,
) -> anyhow::Result<ModeResult> {
    let label = match policy {
        FlushPolicy::GroupCommit => "group",
        FlushPolicy::EveryRequest => "every",
    };
    let dir = TempDir::new(base, &format!("append-{label}"))?;
    let path = dir.path().join("store");
    let store = Store::open(StoreConfig { path: path.clone(), flush: policy, ..StoreConfig::default() })
        .with_context(|| format!("opening a store in {}", path.display()))?;

    let acked = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let text = "x".repeat(args.payload_bytes);
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..args.appenders {
        let store = store.clone();
        let acked = acked.clone();
        let stop = stop.clone();
        let text = text.clone();
        // By default one topic per appender, as if each were a session
        // streaming a turn: the store writes one index entry per topic per group.
        let topic = Topic::session(&format!("s_bench{:07}", task % topics));
        tasks.spawn(async move {
            let mut index: u64 = 0;
            while !stop.load(Ordering::Relaxed) {
                let chunk =
                    events::StreamChunk { turn_id: "t_bench".into(), index, kind: ChunkKind::Text, text: text.clone() };
                let mut batch = Batch::new();
                batch.event(EventData::StreamChunk(chunk).into_event(topic.clone()));
                store.commit(batch).await?;
                acked.fetch_add(1, Ordering::Relaxed);
                index += 1;
            }
            Ok::<(), bosun_state::StoreError>(())
        });
    }

    tokio::time::sleep(WARM_UP).await;
    let (events_0, flushes_0, t0) = (acked.load(Ordering::Relaxed), store.flush_count(), Instant::now());
    tokio::time::sleep(window).await;
    let (events_1, flushes_1, t1) = (acked.load(Ordering::Relaxed), store.flush_count(), Instant::now());
    stop.store(true, Ordering::Relaxed);
    while let Some(joined) = tasks.join_next().await {
        joined.context("an appender panicked")?.context("a commit failed")?;
    }

    let measured = t1 - t0;
    let events = events_1 - events_0;
    let acked_total = acked.load(Ordering::Relaxed);
    let head_after = store.durable_head();
    store.close();
    drop(store);
    // Reopen: what the store acknowledged must be there.
    let reopened = Store::open(StoreConfig::new(&path)).with_context(|| format!("reopening {}", path.display()))?;
    let head_reopened = reopened.durable_head();
    reopened.close();
    drop(reopened);

    let result = ModeResult {
        events_per_s: events as f64 / measured.as_secs_f64(),
        events,
        flushes: flushes_1 - flushes_0,
        window: measured,
        acked_total,
        head_after,
        head_reopened,
    };
    progress(&format!(
        "   {label}: {} ev/s, {} flushes in {:.2} s",
        thousands(result.events_per_s as u64),
        thousands(result.flushes),
        measured.as_secs_f64()
    ));
    Ok(result)
}
