//! (iii) Restart-to-ready with a large store, and (iv) resident memory per idle
//! session actor. Both run the real binary (`bosun serve`) as a child process
//! on a store populated here through `Store` directly.

use super::{mib, percentile, proc_field_kib, progress, secs, thousands, BenchArgs, Report, Row, TempDir};
use anyhow::Context as _;
use bosun_proto::{
    events, ChunkKind, EventData, Health, PatchSessionRequest, Policy, Topic, TurnId, TurnStatus, Usage,
};
use bosun_state::{Batch, FlushPolicy, Owner, SessionRecord, Store, StoreConfig, TurnProgress, TurnRecord};
use serde_json::json;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};

/// Target from the issue.
const TARGET_READY: Duration = Duration::from_secs(1);
/// Target from the issue, per idle session.
const TARGET_BYTES_PER_SESSION: f64 = 64.0 * 1024.0;
/// Events per commit while populating: large batches, few flushes.
const POPULATE_BATCH_EVENTS: usize = 10_000;
/// How long a child daemon may take to become ready before the bench gives up.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// The id of the `i`th populated session. Sessions start in key order, so the
/// last one is the last actor the daemon starts.
fn session_id(i: usize) -> String {
    format!("s_{i:012x}")
}

struct Populated {
    elapsed: Duration,
    sessions: usize,
    events: u64,
    /// Apparent and allocated bytes of the data dir.
    size: (u64, u64),
}

/// Writes `sessions` idle sessions and `events` events (spread evenly over
/// them) into `data_dir/store`, the daemon's layout. With one event per
/// session each gets its creation `session:update` only; with more, each also
/// gets one completed turn: `turn:started`, stream chunks of `payload_bytes`,
/// `stream:complete`, `turn:completed`, `session:update`.
async fn populate(data_dir: &Path, sessions: usize, events: usize, payload_bytes: usize) -> anyhow::Result<Populated> {
    anyhow::ensure!(sessions > 0 || events == 0, "events need at least one session");
    let started = Instant::now();
    let path = data_dir.join("store");
    std::fs::create_dir_all(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    let store =
        Store::open(StoreConfig { path: path.clone(), flush: FlushPolicy::GroupCommit, ..StoreConfig::default() })
            .with_context(|| format!("opening a store in {}", path.display()))?;
    let cwd = data_dir.to_string_lossy().into_owned();
    let text = "x".repeat(payload_bytes);
    let now = bosun_proto::now_ts();
    // The session's records and its turn's, as their actors would write them.
    let mut batch = Batch::by(Owner::Session);
    let mut turns = Batch::by(Owner::Turn);
    let mut written: u64 = 0;

    for i in 0..sessions {
        // Session i gets events i*events/sessions .. (i+1)*events/sessions.
        let quota = (i + 1) * events / sessions - i * events / sessions;
        let id = session_id(i);
        let topic = Topic::session(&id);
        let with_turn = quota >= 5;
        let title = format!("Session {}", &id[2..8]);
        let mut record =
            SessionRecord::new(id.clone(), "demo".into(), cwd.clone(), title, Policy::PlanOnly, now.clone());
        let mut emitted = 0;
        if quota > 0 {
            batch.event(record.update_event().into_event(topic.clone()));
            emitted += 1;
        }
        if with_turn {
            let turn_id = format!("t_{i:012x}");
            let chunks = (quota - 5) as u64;
            record.turn_count = 1;
            record.usage = Usage { input_tokens: 100, output_tokens: 400, context_tokens: None };
            let turn = TurnId::new(turn_id.clone());
            let started = events::TurnStarted {
                turn_id: turn.clone(),
                number: 1,
                text: "benchmark turn".into(),
                status: TurnStatus::Started,
            };
            batch.event(EventData::TurnStarted(started).into_event(topic.clone()));
            for index in 0..chunks {
                let chunk =
                    events::StreamChunk { turn_id: turn.clone(), index, kind: ChunkKind::Text, text: text.clone() };
                batch.event(EventData::StreamChunk(chunk).into_event(topic.clone()));
            }
            let complete = events::StreamComplete { turn_id: turn.clone(), chunks };
            batch.event(EventData::StreamComplete(complete).into_event(topic.clone()));
            let turn_record = TurnRecord {
                id: turn_id,
                session_id: id.clone(),
                number: 1,
                text: "benchmark turn".into(),
                steers: Vec::new(),
                status: TurnStatus::Completed,
                reason: None,
                usage: record.usage,
                approvals: Vec::new(),
                started_at: now.clone(),
                ended_at: Some(now.clone()),
                result: None,
                cut: false,
            };
            batch.event(turn_record.completed_event().into_event(topic.clone()));
            batch.event(record.update_event().into_event(topic.clone()));
            emitted += 4 + chunks as usize;
            turns.put(&turn_record)?;
            turns.put(&TurnProgress { chunks, events_seen: chunks, ..TurnProgress::start(&id, 1) })?;
        }
        // Any quota left (1 < quota < 5): more session updates.
        while emitted < quota {
            batch.event(record.update_event().into_event(topic.clone()));
            emitted += 1;
        }
        batch.put(&record)?;
        written += emitted as u64;
        if batch.event_count() >= POPULATE_BATCH_EVENTS || batch.write_count() >= POPULATE_BATCH_EVENTS {
            let full = std::mem::replace(&mut batch, Batch::by(Owner::Session));
            store.commit(full).await.context("committing a populate batch")?;
            let full = std::mem::replace(&mut turns, Batch::by(Owner::Turn));
            store.commit(full).await.context("committing a populate batch of turns")?;
        }
    }
    store.commit(batch).await.context("committing the last populate batch")?;
    store.commit(turns).await.context("committing the last populate batch of turns")?;
    let head = store.durable_head();
    anyhow::ensure!(head == written, "populated {written} events but the store's head is {head}");
    store.close();
    // The last clone: sled flushes and releases its file lock here, before a
    // daemon opens the same directory.
    drop(store);
    let size = super::dir_size(data_dir)?;
    Ok(Populated { elapsed: started.elapsed(), sessions, events: written, size })
}

/// A `bosun serve` child process.
pub(super) struct Child {
    child: tokio::process::Child,
    pid: u32,
    client: bosun_client::Client,
    /// The last lines of its stderr, for error messages.
    stderr: Arc<Mutex<Vec<String>>>,
}

/// Milestones of one start, from spawn.
pub(super) struct Start {
    /// "bosun listening on" printed.
    line: Duration,
    /// `/health` answered 200.
    health: Duration,
    /// The last session actor answered a request (None without sessions).
    last_session: Option<Duration>,
}

impl Start {
    /// Ready: listening, healthy, and every session actor up.
    pub(super) fn ready(&self) -> Duration {
        self.health.max(self.last_session.unwrap_or_default())
    }
}

impl Child {
    /// Spawns the daemon and waits until it is ready: its line on stdout,
    /// `/health` answering, and (with `last_session`) that session answering
    /// through its actor, which the daemon starts last.
    pub(super) async fn start(data_dir: &Path, last_session: Option<&str>) -> anyhow::Result<(Child, Start)> {
        let exe = std::env::current_exe().context("finding the bosun binary")?;
        let started = Instant::now();
        let mut child = tokio::process::Command::new(&exe)
            .arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(data_dir)
            .env("BOSUN_LOG", "warn")
            .current_dir(data_dir.parent().unwrap_or(data_dir))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Whatever goes wrong in the bench, no daemon is left behind.
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawning {}", exe.display()))?;
        let pid = child.id().context("the child exited at once")?;
        let stdout = child.stdout.take().context("no stdout pipe")?;
        let stderr_pipe = child.stderr.take().context("no stderr pipe")?;
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let sink = stderr.clone();
        // Drained all along so the child never blocks on a full pipe.
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr_pipe).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let mut kept = sink.lock().unwrap_or_else(|p| p.into_inner());
                kept.push(line);
                let excess = kept.len().saturating_sub(20);
                kept.drain(..excess);
            }
        });
        let mut lines = BufReader::new(stdout).lines();
        let stderr_text = |s: &Arc<Mutex<Vec<String>>>| s.lock().unwrap_or_else(|p| p.into_inner()).join("\n");
        let line = match tokio::time::timeout(START_TIMEOUT, lines.next_line()).await {
            Ok(Ok(Some(line))) => line,
            Ok(Ok(None)) | Ok(Err(_)) => {
                let status = child.wait().await.ok();
                anyhow::bail!("the daemon exited ({status:?}) before it was ready; stderr:\n{}", stderr_text(&stderr));
            }
            Err(_) => {
                anyhow::bail!("the daemon printed nothing within {START_TIMEOUT:?}; stderr:\n{}", stderr_text(&stderr))
            }
        };
        let line_at = started.elapsed();
        anyhow::ensure!(line.starts_with("bosun listening on"), "unexpected first line {line:?}");
        // Keep reading stdout so the daemon never blocks on it.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .with_context(|| format!("no URL in {line:?}"))?
            .to_string();
        let client = super::client(url.trim_start_matches("http://").trim_end_matches('/'))?;
        let this = Child { child, pid, client, stderr };

        let deadline = started + START_TIMEOUT;
        loop {
            match this.client.health().await {
                Ok(_) => break,
                Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(2)).await,
                Err(e) => return Err(e).context("GET /health"),
            }
        }
        let health_at = started.elapsed();

        let mut last_at = None;
        if let Some(id) = last_session {
            // A PATCH goes through the session actor (a GET reads the store),
            // and the route waits briefly for an actor not yet registered.
            // It writes one small event: the draft.
            let patch = PatchSessionRequest { draft: Some("bench".into()), ..Default::default() };
            loop {
                match this.client.patch_session(id, &patch).await {
                    Ok(_) => break,
                    Err(e) if e.status() == Some(503) && Instant::now() < deadline => {}
                    Err(e) => return Err(e).context("PATCH the last session"),
                }
            }
            last_at = Some(started.elapsed());
        }
        Ok((this, Start { line: line_at, health: health_at, last_session: last_at }))
    }

    async fn health(&self) -> anyhow::Result<Health> {
        self.client.health().await.context("GET /health")
    }

    /// VmRSS and VmHWM of the child, in KiB.
    fn memory_kib(&self) -> anyhow::Result<(u64, u64)> {
        let path = format!("/proc/{}/status", self.pid);
        let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        let rss = proc_field_kib(&status, "VmRSS:").context("no VmRSS")?;
        let hwm = proc_field_kib(&status, "VmHWM:").context("no VmHWM")?;
        Ok((rss, hwm))
    }

    /// SIGTERM (a graceful stop, as a service manager does), then wait.
    /// Returns how long the stop took.
    pub(super) async fn stop(mut self) -> anyhow::Result<Duration> {
        let started = Instant::now();
        // The `kill` command: this crate does not link libc directly.
        let sent = tokio::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status()
            .await
            .context("running kill -TERM")?;
        if !sent.success() {
            self.child.kill().await.context("killing the daemon")?;
            anyhow::bail!("kill -TERM {} failed", self.pid);
        }
        match tokio::time::timeout(Duration::from_secs(60), self.child.wait()).await {
            Ok(status) => {
                let status = status.context("waiting for the daemon")?;
                anyhow::ensure!(
                    status.success(),
                    "the daemon exited with {status} on SIGTERM; stderr:\n{}",
                    self.stderr.lock().unwrap_or_else(|p| p.into_inner()).join("\n")
                );
                Ok(started.elapsed())
            }
            Err(_) => {
                self.child.kill().await.context("killing the daemon")?;
                anyhow::bail!("the daemon did not stop within 60 s of SIGTERM");
            }
        }
    }
}

pub async fn run_restart(args: &BenchArgs, base: &Path) -> anyhow::Result<Report> {
    anyhow::ensure!(args.restarts > 0, "--restarts must be at least 1");
    let dir = TempDir::new(base, "restart")?;
    let data_dir = dir.path().join("data");
    progress(&format!(
        "   populating {} sessions and {} events",
        thousands(args.sessions as u64),
        thousands(args.events as u64)
    ));
    let populated = populate(&data_dir, args.sessions, args.events, args.payload_bytes).await?;
    progress(&format!("   populated in {}, {} on disk", secs(populated.elapsed), mib(populated.size.0)));
    let last = (populated.sessions > 0).then(|| session_id(populated.sessions - 1));

    let mut starts = Vec::new();
    let mut stops = Vec::new();
    for round in 1..=args.restarts {
        let (child, start) = Child::start(&data_dir, last.as_deref()).await?;
        let health = child.health().await?;
        let sessions = health.sessions;
        anyhow::ensure!(
            sessions as usize == populated.sessions,
            "/health reports {sessions} sessions, {} stored",
            populated.sessions
        );
        progress(&format!(
            "   start {round}: line {} health {} last session {} (head_seq {})",
            secs(start.line),
            secs(start.health),
            start.last_session.map(secs).unwrap_or_else(|| "-".into()),
            health.head_seq
        ));
        stops.push(child.stop().await?);
        starts.push(start);
    }

    let mut ready: Vec<u64> = starts.iter().map(|s| s.ready().as_nanos() as u64).collect();
    ready.sort_unstable();
    let median = Duration::from_nanos(percentile(&ready, 50.0));
    let met = median < TARGET_READY;
    let each = |f: &dyn Fn(&Start) -> Option<Duration>| {
        starts
            .iter()
            .map(|s| f(s).map(|d| format!("{:.3}", d.as_secs_f64())).unwrap_or_else(|| "-".into()))
            .collect::<Vec<_>>()
            .join(" / ")
    };
    let rows = vec![
        Row::info(
            "store",
            format!(
                "{} sessions, {} events, {} ({} allocated)",
                thousands(populated.sessions as u64),
                thousands(populated.events),
                mib(populated.size.0),
                mib(populated.size.1)
            ),
        ),
        Row::info("populate time", secs(populated.elapsed)),
        Row::info("listening line, each start (s)", each(&|s| Some(s.line))),
        Row::info("/health answers, each start (s)", each(&|s| Some(s.health))),
        Row::info("last session answers, each start (s)", each(&|s| s.last_session)),
        Row::target(format!("ready, median of {}", starts.len()), secs(median), "< 1 s", met),
        Row::info(
            "graceful stop, each (s)",
            stops.iter().map(|d| format!("{:.3}", d.as_secs_f64())).collect::<Vec<_>>().join(" / "),
        ),
    ];
    let data = json!({
        "sessions": populated.sessions,
        "events": populated.events,
        "populate_s": populated.elapsed.as_secs_f64(),
        "store_bytes": populated.size.0,
        "store_bytes_allocated": populated.size.1,
        "starts": starts.iter().map(|s| json!({
            "line_s": s.line.as_secs_f64(),
            "health_s": s.health.as_secs_f64(),
            "last_session_s": s.last_session.map(|d| d.as_secs_f64()),
            "ready_s": s.ready().as_secs_f64(),
        })).collect::<Vec<_>>(),
        "ready_median_s": median.as_secs_f64(),
        "stops_s": stops.iter().map(|d| d.as_secs_f64()).collect::<Vec<_>>(),
        "target_s": TARGET_READY.as_secs_f64(),
        "met": met,
    });
    Ok(Report { rows, data, failures: Vec::new() })
}

pub async fn run_memory(args: &BenchArgs, base: &Path) -> anyhow::Result<Report> {
    anyhow::ensure!(args.memory_sessions > 0, "--memory-sessions must be at least 1");
    let n = args.memory_sessions;
    let settle = Duration::from_secs_f64(args.settle_secs.max(0.0));

    let empty = TempDir::new(base, "memory-0")?;
    let full = TempDir::new(base, "memory-n")?;
    let empty_data = empty.path().join("data");
    let full_data = full.path().join("data");
    // The same store format on both sides; the empty one just has nothing in it.
    populate(&empty_data, 0, 0, 0).await?;
    progress(&format!("   populating {} idle sessions", thousands(n as u64)));
    let populated = populate(&full_data, n, n, 0).await?;

    let (child, _) = Child::start(&empty_data, None).await?;
    tokio::time::sleep(settle).await;
    let (rss_0, hwm_0) = child.memory_kib()?;
    child.stop().await?;

    let last = session_id(n - 1);
    let (child, start) = Child::start(&full_data, Some(&last)).await?;
    tokio::time::sleep(settle).await;
    let (rss_n, hwm_n) = child.memory_kib()?;
    let health = child.health().await?;
    child.stop().await?;
    let sessions = health.sessions;
    anyhow::ensure!(sessions as usize == n, "/health reports {sessions} sessions, {n} stored");

    let per_session = (rss_n as f64 - rss_0 as f64) * 1024.0 / n as f64;
    let met = per_session < TARGET_BYTES_PER_SESSION;
    progress(&format!("   RSS {rss_0} KiB with 0 sessions, {rss_n} KiB with {n}"));
    let rows = vec![
        Row::info("VmRSS, 0 sessions", mib(rss_0 * 1024)),
        Row::info(format!("VmRSS, {} idle sessions", thousands(n as u64)), mib(rss_n * 1024)),
        Row::target("per idle session", format!("{:.1} KiB", per_session / 1024.0), "< 64 KiB", met),
        Row::info("VmHWM (peak), 0 / N", format!("{} / {}", mib(hwm_0 * 1024), mib(hwm_n * 1024))),
        Row::info("start with N sessions (ready)", secs(start.ready())),
        Row::info("store on disk with N sessions", mib(populated.size.0)),
    ];
    let data = json!({
        "sessions": n,
        "rss_kib_0": rss_0,
        "rss_kib_n": rss_n,
        "hwm_kib_0": hwm_0,
        "hwm_kib_n": hwm_n,
        "bytes_per_session": per_session,
        "settle_s": settle.as_secs_f64(),
        "store_bytes_n": populated.size.0,
        "target_bytes": TARGET_BYTES_PER_SESSION,
        "met": met,
    });
    Ok(Report { rows, data, failures: Vec::new() })
}
