//! Crash-recovery demo: a stream that survives injected panics and a kill -9,
//! with the numbers it saw.
//!
//! ```text
//! cargo run --example crash_recovery [-- --bosun PATH] [--data-dir DIR] [--quiet]
//! ```
//!
//! It starts the real `bosun` daemon (with fault injection on), opens a demo
//! session and starts a `SLOW` turn, which streams `tick N/600` chunks at about
//! 20 a second. A client (`bosun_client::Follower`, over the WebSocket)
//! records every event of the session while the demo makes the turn,
//! provider, session and front actors panic one after the other, then kills
//! the daemon with SIGKILL in the middle of the stream and starts it again on
//! the same data dir. The client resumes with `since` = the last seq it
//! received, reads on until the stream has clearly come back, and the turn is
//! interrupted. Finally the demo checks what the client saw against the store
//! and prints the numbers; the exit code is 0 when everything held, 1
//! otherwise.
//!
//! The daemon is spoken to through `bosun_client::Client`, and events are read
//! as the typed `bosun_proto::EventData`.
//!
//! The binary is found with `--bosun PATH`, else `$BOSUN_BIN`, else next to
//! this example (`target/<profile>/bosun`), else built with
//! `cargo build --bin bosun`. Set `BOSUN_DEMO_VERBOSE=1` to see the daemons'
//! logs.

use anyhow::{bail, ensure, Context as _, Result};
use bosun_client::{Client, ClientError, Followed, Follower, FollowerConfig};
use bosun_proto::events::StreamChunk;
use bosun_proto::{CreateSessionRequest, Envelope, EventData, EventsQuery, Health, Policy, Topic};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::watch;

/// Ticks to let through before the first panic, between panics and before the kill.
const TICKS_BETWEEN_FAULTS: usize = 40;
/// Ticks the client must see from the restarted daemon before the turn is interrupted.
const TICKS_AFTER_RESTART: usize = 40;
/// The actors made to panic, in order: (health `actors` kind, crash target).
/// `{turn}` and `{session}` are filled in.
const FAULTS: [(&str, &str); 4] =
    [("turn", "turn:{turn}"), ("provider", "provider:{session}"), ("session", "session:{session}"), ("front", "front")];
/// How long any single wait may take before the demo gives up.
const WAIT_LIMIT: Duration = Duration::from_secs(20);
/// Daemon log lines kept to explain a failure.
const STDERR_TAIL: usize = 40;
/// How the demo names itself to the daemon (`X-Bosun-Client`).
const CLIENT_NAME: &str = "bosun-crash-recovery-example";

// ---------------------------------------------------------------------------
// The report
// ---------------------------------------------------------------------------

/// What the client saw, and what the store says about it afterwards.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub session_id: String,
    pub turn_id: String,
    /// The crash targets that were injected, in order.
    pub faults_injected: Vec<String>,
    /// Event frames the client received from the first daemon (before the kill)…
    pub events_before_kill: usize,
    /// …and from the restarted one.
    pub events_after_restart: usize,
    /// WebSocket connections the client opened (1 + reconnects).
    pub ws_connections: u32,
    /// The `since` the client resubscribed with after the restart.
    pub resumed_from_seq: Option<u64>,
    /// Events handed to the demo whose seq was not above every seq handed
    /// over before it, across both daemons (and the switch from one to the
    /// other). The follower drops a frame at or below the last seq it handed
    /// out, so a daemon re-sending one shows up elsewhere if it matters: a
    /// re-sent chunk under a new seq in the tick and chunk-index duplicates, a
    /// seq reused for another event in `seen_not_stored`.
    pub event_duplicates: usize,
    /// `tick N/600` chunks received in all, before the kill and after the restart.
    pub ticks_received: usize,
    pub ticks_before_kill: usize,
    pub ticks_after_restart: usize,
    pub first_tick: Option<u64>,
    pub last_tick: Option<u64>,
    /// Tick numbers in 1..=last_tick that never arrived.
    pub tick_gaps: usize,
    /// Ticks received more than once.
    pub tick_duplicates: usize,
    /// `stream:chunk` events of the turn received (reply text and ticks).
    pub chunks_received: usize,
    /// Chunk indexes in 0..=max that never arrived.
    pub chunk_index_gaps: usize,
    /// Chunk indexes received more than once.
    pub chunk_index_duplicates: usize,
    /// The session's events in the store after the restart.
    pub events_stored: usize,
    /// Events the client saw that the store no longer has, or has with another payload.
    pub seen_not_stored: usize,
    /// Stored events up to the client's last seq that the client never received.
    pub stored_not_seen: usize,
    /// `GET /health` restart counts by actor kind, read just before the kill
    /// (the counters live in the daemon's memory, so a kill -9 resets them).
    pub health_restarts: BTreeMap<String, u64>,
    /// `actor:restarted` events in the store after the restart, by kind
    /// (those since the demo's session was created).
    pub restarts_on_record: BTreeMap<String, u64>,
    /// From the SIGKILL to the restarted daemon answering `GET /health`.
    pub kill_to_answer: Duration,
    /// From spawning the restarted daemon to the client's first tick from it.
    pub restart_to_first_tick: Option<Duration>,
    /// How the turn ended (`interrupted` expected).
    pub turn_status: String,
    pub total_time: Duration,
}

impl Report {
    /// Everything that did not hold; empty when the demo passed.
    pub fn failures(&self) -> Vec<String> {
        let mut failed = Vec::new();
        let mut check = |held: bool, what: String| {
            if !held {
                failed.push(what);
            }
        };
        check(self.tick_gaps == 0, format!("{} tick(s) missing", self.tick_gaps));
        check(self.tick_duplicates == 0, format!("{} tick(s) duplicated", self.tick_duplicates));
        check(self.first_tick == Some(1), format!("the first tick was {:?}, not 1", self.first_tick));
        check(self.chunk_index_gaps == 0, format!("{} chunk index(es) missing", self.chunk_index_gaps));
        check(self.chunk_index_duplicates == 0, format!("{} chunk index(es) duplicated", self.chunk_index_duplicates));
        check(self.event_duplicates == 0, format!("{} event(s) received twice or out of order", self.event_duplicates));
        check(
            self.seen_not_stored == 0,
            format!("{} event(s) seen by the client are gone or changed", self.seen_not_stored),
        );
        check(self.stored_not_seen == 0, format!("{} stored event(s) never reached the client", self.stored_not_seen));
        check(self.ticks_before_kill > 0, "no tick before the kill".to_string());
        check(
            self.ticks_after_restart >= TICKS_AFTER_RESTART,
            format!("only {} tick(s) after the restart", self.ticks_after_restart),
        );
        check(self.restart_to_first_tick.is_some(), "the stream never came back after the restart".to_string());
        for (kind, _) in FAULTS {
            let n = self.health_restarts.get(kind).copied().unwrap_or(0);
            check(n >= 1, format!("/health shows {n} restart(s) of {kind}"));
        }
        check(self.turn_status == "interrupted", format!("the turn ended {:?}, not interrupted", self.turn_status));
        failed
    }

    pub fn ok(&self) -> bool {
        self.failures().is_empty()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let yes_no = |ok: bool| if ok { "ok" } else { "FAILED" };
        let ms = |d: Duration| format!("{} ms", d.as_millis());
        let counts = |m: &BTreeMap<String, u64>| {
            m.iter().filter(|(_, n)| **n > 0).map(|(k, n)| format!("{k}={n}")).collect::<Vec<_>>().join(" ")
        };
        writeln!(f, "session {}, turn {}", self.session_id, self.turn_id)?;
        writeln!(f, "faults injected            {}  + kill -9", self.faults_injected.join(", "))?;
        writeln!(
            f,
            "events received            {} before the kill, {} after the restart ({} WebSocket connection(s))",
            self.events_before_kill, self.events_after_restart, self.ws_connections
        )?;
        writeln!(
            f,
            "resubscribed with since    {}",
            self.resumed_from_seq.map_or_else(|| "-".to_string(), |s| s.to_string())
        )?;
        writeln!(f, "events received twice      {}", self.event_duplicates)?;
        writeln!(
            f,
            "ticks received             {} ({} before the kill, {} after the restart), ticks {}..{}",
            self.ticks_received,
            self.ticks_before_kill,
            self.ticks_after_restart,
            self.first_tick.map_or("-".into(), |t| t.to_string()),
            self.last_tick.map_or("-".into(), |t| t.to_string()),
        )?;
        writeln!(
            f,
            "tick gaps / duplicates     {} / {}  {}",
            self.tick_gaps,
            self.tick_duplicates,
            yes_no(self.tick_gaps == 0 && self.tick_duplicates == 0 && self.first_tick == Some(1))
        )?;
        writeln!(
            f,
            "chunk index gaps / dups    {} / {}  ({} chunks)  {}",
            self.chunk_index_gaps,
            self.chunk_index_duplicates,
            self.chunks_received,
            yes_no(self.chunk_index_gaps == 0 && self.chunk_index_duplicates == 0)
        )?;
        let seen = self.events_before_kill + self.events_after_restart;
        writeln!(
            f,
            "seen events in the store   {} of {} (same seq, same payload); {} of {} stored never seen  {}",
            seen.saturating_sub(self.seen_not_stored),
            seen,
            self.stored_not_seen,
            self.events_stored,
            yes_no(self.seen_not_stored == 0 && self.stored_not_seen == 0)
        )?;
        writeln!(f, "restarts (/health)         {}", counts(&self.health_restarts))?;
        writeln!(f, "restarts on record         {}", counts(&self.restarts_on_record))?;
        writeln!(f, "kill -9 -> answering       {}", ms(self.kill_to_answer))?;
        writeln!(
            f,
            "restart -> first new tick  {}",
            self.restart_to_first_tick.map_or_else(|| "never".to_string(), ms)
        )?;
        writeln!(f, "turn ended                 {}", self.turn_status)?;
        write!(f, "total time                 {:.1} s", self.total_time.as_secs_f64())
    }
}

// ---------------------------------------------------------------------------
// The demo
// ---------------------------------------------------------------------------

/// Runs the whole demo against the `bosun` binary at `bosun`, with the daemon's
/// store in `data_dir`. With `quiet`, prints nothing.
pub async fn run_demo(bosun: &Path, data_dir: &Path, quiet: bool) -> Result<Report> {
    let log = Narrator { quiet, start: Instant::now() };
    let cwd = tempfile::Builder::new().prefix("bosun-demo-cwd").tempdir().context("creating the session's cwd")?;

    let mut daemon = Daemon::start(bosun, data_dir, cwd.path(), 1).await?;
    log.say(format!("daemon up at {} (pid {}, data dir {})", daemon.url, daemon.pid, data_dir.display()));

    let request = CreateSessionRequest {
        provider: "demo".to_string(),
        cwd: Some(cwd.path().to_str().context("the session's cwd is not UTF-8")?.to_string()),
        title: Some("crash-recovery demo".to_string()),
        policy: Some(Policy::PlanOnly),
        ..CreateSessionRequest::default()
    };
    let session = retry("creating the session", Retry::IfNotCarriedOut, || daemon.api.create_session(&request)).await?;
    let session_id = session.id.into_string();
    let turn =
        retry("starting the turn", Retry::IfNotCarriedOut, || daemon.api.start_turn(&session_id, "SLOW")).await?;
    let turn_id = turn.turn_id.into_string();
    log.say(format!("session {session_id}: turn {turn_id} started with \"SLOW\" (600 ticks, ~20/s)"));

    // The client runs on its own task for the whole demo, following the daemon
    // it is told about (generation, URL); `None` tells it to stop. It starts
    // from seq 0, so the daemon replays what the session already has.
    let topic = Topic::session(&session_id).to_string();
    let follower = Follower::open(daemon.api.clone(), vec![topic.clone()], 0, follower_config())
        .await
        .context("subscribing to the session's events")?;
    let seen = Arc::new(Mutex::new(Seen::new(&turn_id, follower.connections())));
    let (target_tx, target_rx) = watch::channel(Some((1u32, daemon.url.clone())));
    let client = tokio::spawn(client(topic, follower, target_rx, seen.clone()));

    let outcome = drive(&log, bosun, data_dir, cwd.path(), &mut daemon, &session_id, &turn_id, &seen, &target_tx).await;
    // Stop the client whatever happened, so no task outlives the demo.
    let _ = target_tx.send(None);
    let _ = tokio::time::timeout(Duration::from_secs(5), client).await;
    let mut report = match outcome {
        Ok(report) => report,
        Err(e) => return Err(e.context(format!("daemon log (last lines):\n{}", daemon.stderr_tail()))),
    };

    // Everything the client saw must still be in the store, unchanged.
    let query = EventsQuery { session: Some(session_id.clone()), ..EventsQuery::default() };
    let stored = retry("reading the session's events", Retry::Always, || daemon.api.all_events(&query)).await?;
    // Restarts on record since this demo's session began (a reused data dir
    // holds earlier runs too).
    let began = stored.first().map_or(1, |e| e.seq);
    let query = EventsQuery {
        since: began.saturating_sub(1),
        topic: Some(Topic::SYSTEM.to_string()),
        ..EventsQuery::default()
    };
    for e in retry("reading the system events", Retry::Always, || daemon.api.all_events(&query)).await? {
        if let Ok(EventData::ActorRestarted(restarted)) = e.payload() {
            *report.restarts_on_record.entry(restarted.kind).or_default() += 1;
        }
    }
    lock(&seen).tally(&stored, &mut report);

    daemon.stop().await;
    report.session_id = session_id;
    report.turn_id = turn_id;
    report.total_time = log.start.elapsed();
    Ok(report)
}

/// The part of the demo that drives the daemons: panics, kill -9, restart,
/// interrupt. `daemon` is replaced by the restarted one; `client_target` tells
/// the client where the daemon is.
#[allow(clippy::too_many_arguments)]
async fn drive(
    log: &Narrator,
    bosun: &Path,
    data_dir: &Path,
    cwd: &Path,
    daemon: &mut Daemon,
    session_id: &str,
    turn_id: &str,
    seen: &Mutex<Seen>,
    client_target: &watch::Sender<Target>,
) -> Result<Report> {
    let mut report = Report::default();
    let ticks = |gen: Option<u32>| lock(seen).ticks(gen);

    wait_for(seen, "the stream to start", |s| s.ticks(None) >= TICKS_BETWEEN_FAULTS).await?;
    log.say(format!("client is receiving: tick {}", lock(seen).last_tick_number()));

    // Injected panics: each actor is restarted by its supervisor and the
    // stream goes on.
    for (kind, target) in FAULTS {
        let target = target.replace("{turn}", turn_id).replace("{session}", session_id);
        let restarts_before = restarts(&daemon.health().await?, kind);
        let ticks_before = ticks(None);
        let answer =
            retry(&format!("injecting a panic into {target}"), Retry::IfNotCarriedOut, || daemon.api.crash(&target))
                .await?;
        log.say(format!("injected a panic into {} ({target})", answer.actor));
        let deadline = Instant::now() + WAIT_LIMIT;
        let restarts_now = loop {
            let n = restarts(&daemon.health().await?, kind);
            if n > restarts_before {
                break n;
            }
            ensure!(Instant::now() < deadline, "{kind} was not restarted after the panic");
            tokio::time::sleep(Duration::from_millis(25)).await;
        };
        wait_for(seen, "the stream to go on after the panic", |s| s.ticks(None) >= ticks_before + TICKS_BETWEEN_FAULTS)
            .await?;
        let s = lock(seen);
        log.say(format!(
            "  {kind} restarted ({restarts_now}x); stream went on to tick {}; WebSocket connections so far: {}",
            s.last_tick_number(),
            s.connections
        ));
        report.faults_injected.push(target);
    }

    // The restart counters live in the daemon's memory: read them before the kill.
    report.health_restarts =
        daemon.health().await?.actors.into_iter().map(|(kind, actor)| (kind, actor.restarts)).collect();

    // kill -9 in the middle of the stream: no flush, no goodbye.
    let last_tick = lock(seen).last_tick_number();
    let killed_at = Instant::now();
    daemon.kill9().await?;
    log.say(format!("kill -9 of the daemon (pid {}) at tick {last_tick}", daemon.pid));

    let spawned_at = Instant::now();
    *daemon = Daemon::start(bosun, data_dir, cwd, 2).await?;
    daemon.health().await?;
    report.kill_to_answer = killed_at.elapsed();
    log.say(format!(
        "daemon restarted at {} (pid {}), answering {} ms after the kill",
        daemon.url,
        daemon.pid,
        report.kill_to_answer.as_millis()
    ));
    // Tell the client where the daemon is now; it resubscribes with since = its last seq.
    let _ = client_target.send(Some((2, daemon.url.clone())));

    wait_for(seen, "the stream to come back after the restart", |s| s.ticks(Some(2)) >= TICKS_AFTER_RESTART).await?;
    report.restart_to_first_tick = lock(seen).first_tick_at(2).map(|at| at.saturating_duration_since(spawned_at));
    {
        let s = lock(seen);
        log.say(format!(
            "client resumed from seq {} and got {} ticks from the restarted daemon, up to tick {}",
            s.resumed_from.unwrap_or(0),
            s.ticks(Some(2)),
            s.last_tick_number()
        ));
    }

    retry("interrupting the turn", Retry::IfNotCarriedOut, || daemon.api.interrupt(session_id, turn_id)).await?;
    log.say("interrupted the turn".to_string());
    wait_for(seen, "turn:completed", |s| s.turn_completed.is_some()).await?;
    let status = lock(seen).turn_completed.clone().unwrap_or_default();
    log.say(format!("turn:completed, status {status}"));
    report.turn_status = status;
    Ok(report)
}

fn restarts(health: &Health, kind: &str) -> u64 {
    health.actors.get(kind).map_or(0, |actor| actor.restarts)
}

/// Which failed calls [`retry`] tries again.
#[derive(Clone, Copy, PartialEq)]
enum Retry {
    /// A read: whatever went wrong on the way.
    Always,
    /// A request that changes something: only when the daemon cannot have
    /// carried it out (not reachable, or 503 while an actor restarts).
    IfNotCarriedOut,
}

/// One API call, tried again while the daemon cannot be reached or answers
/// 503 (an actor restarting): both are expected moments in this demo, and
/// neither means the request was carried out.
async fn retry<T, F, Fut>(what: &str, when: Retry, mut call: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bosun_client::Result<T>>,
{
    let deadline = Instant::now() + WAIT_LIMIT;
    loop {
        let e = match call().await {
            Ok(answer) => return Ok(answer),
            Err(e) => e,
        };
        let again = match &e {
            ClientError::Unreachable { .. } => true,
            _ if e.status() == Some(503) => true,
            ClientError::Transport { .. } | ClientError::Timeout { .. } => when == Retry::Always,
            _ => false,
        };
        if !again {
            return Err(anyhow::Error::new(e).context(what.to_string()));
        }
        ensure!(Instant::now() < deadline, "{what}: still failing: {e}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Prints progress lines with the time since the demo started.
struct Narrator {
    quiet: bool,
    start: Instant,
}

impl Narrator {
    fn say(&self, line: String) {
        if !self.quiet {
            println!("[{:5.1}s] {line}", self.start.elapsed().as_secs_f64());
        }
    }
}

// ---------------------------------------------------------------------------
// The WebSocket client
// ---------------------------------------------------------------------------

/// Where the client should follow: the daemon's generation (1 before the
/// kill, 2 after) and URL; `None` to stop.
type Target = Option<(u32, String)>;

struct Received {
    /// Which daemon the connection it came on led to: 1 before the kill, 2 after.
    generation: u32,
    at: Instant,
    event: Envelope,
    data: EventData,
}

/// Everything the client received, shared with the driver.
struct Seen {
    turn_id: String,
    events: Vec<Received>,
    /// The highest seq received: the `since` of the next subscription.
    last_seq: u64,
    /// Events whose seq was not above `last_seq` when they came.
    out_of_order: usize,
    /// WebSocket connections opened, by the followers of both daemons.
    connections: u32,
    /// The `since` of the first subscription after the restart.
    resumed_from: Option<u64>,
    turn_completed: Option<String>,
    /// Why the client gave up, if it did.
    error: Option<String>,
}

impl Seen {
    fn new(turn_id: &str, connections: u32) -> Seen {
        Seen {
            turn_id: turn_id.to_string(),
            events: Vec::new(),
            last_seq: 0,
            out_of_order: 0,
            connections,
            resumed_from: None,
            turn_completed: None,
            error: None,
        }
    }

    /// The turn's `stream:chunk` events, with when and from which daemon they came.
    fn chunks(&self) -> impl Iterator<Item = (&Received, &StreamChunk)> {
        self.events.iter().filter_map(|r| match &r.data {
            EventData::StreamChunk(chunk) if chunk.turn_id == self.turn_id => Some((r, chunk)),
            _ => None,
        })
    }

    /// The turn's ticks (number, generation, arrival).
    fn tick_list(&self) -> impl Iterator<Item = (u64, u32, Instant)> + '_ {
        self.chunks().filter_map(|(r, chunk)| Some((tick_number(chunk)?, r.generation, r.at)))
    }

    fn ticks(&self, generation: Option<u32>) -> usize {
        self.tick_list().filter(|(_, g, _)| generation.is_none_or(|want| *g == want)).count()
    }

    fn last_tick_number(&self) -> u64 {
        self.tick_list().last().map_or(0, |(n, _, _)| n)
    }

    fn first_tick_at(&self, generation: u32) -> Option<Instant> {
        self.tick_list().find(|(_, g, _)| *g == generation).map(|(_, _, at)| at)
    }

    /// Fills in what the client saw, checked against the `stored` events of the session.
    fn tally(&self, stored: &[Envelope], report: &mut Report) {
        report.events_before_kill = self.events.iter().filter(|r| r.generation == 1).count();
        report.events_after_restart = self.events.len() - report.events_before_kill;
        report.ws_connections = self.connections;
        report.resumed_from_seq = self.resumed_from;
        report.event_duplicates = self.out_of_order;

        // The whole envelope must match: seq, ts, topic, type and data.
        let stored_by_seq: HashMap<u64, &Envelope> = stored.iter().map(|e| (e.seq, e)).collect();
        report.events_stored = stored.len();
        report.seen_not_stored =
            self.events.iter().filter(|r| stored_by_seq.get(&r.event.seq).copied() != Some(&r.event)).count();
        let received: BTreeSet<u64> = self.events.iter().map(|r| r.event.seq).collect();
        report.stored_not_seen =
            stored_by_seq.keys().filter(|seq| **seq <= self.last_seq && !received.contains(seq)).count();

        let ticks: Vec<u64> = self.tick_list().map(|(n, _, _)| n).collect();
        report.ticks_received = ticks.len();
        report.ticks_before_kill = self.ticks(Some(1));
        report.ticks_after_restart = self.ticks(Some(2));
        report.first_tick = ticks.first().copied();
        report.last_tick = ticks.iter().max().copied();
        (report.tick_gaps, report.tick_duplicates) = gaps_and_duplicates(&ticks, 1);

        let indexes: Vec<u64> = self.chunks().map(|(_, chunk)| chunk.index).collect();
        report.chunks_received = indexes.len();
        (report.chunk_index_gaps, report.chunk_index_duplicates) = gaps_and_duplicates(&indexes, 0);
    }
}

/// Of numbers meant to run `first, first+1, …` once each: how many in
/// `first..=max` are missing, and how many came more than once.
fn gaps_and_duplicates(numbers: &[u64], first: u64) -> (usize, usize) {
    let distinct: BTreeSet<u64> = numbers.iter().copied().collect();
    let duplicates = numbers.len() - distinct.len();
    let gaps = match distinct.last() {
        Some(&max) if max >= first => {
            let expected = (max - first + 1) as usize;
            expected - distinct.range(first..).count()
        }
        _ => 0,
    };
    (gaps, duplicates)
}

/// `tick N/600\n` → N.
fn tick_number(chunk: &StreamChunk) -> Option<u64> {
    chunk.text.strip_prefix("tick ")?.split('/').next()?.parse().ok()
}

fn lock(seen: &Mutex<Seen>) -> MutexGuard<'_, Seen> {
    // A panic elsewhere must not hide what was seen.
    seen.lock().unwrap_or_else(|p| p.into_inner())
}

/// Waits until `done` holds for what the client has seen.
async fn wait_for(seen: &Mutex<Seen>, what: &str, done: impl Fn(&Seen) -> bool) -> Result<()> {
    let deadline = Instant::now() + WAIT_LIMIT;
    loop {
        {
            let s = lock(seen);
            if let Some(e) = &s.error {
                bail!("the WebSocket client failed while waiting for {what}: {e}");
            }
            if done(&s) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("timed out waiting for {what} (last tick {}, last seq {})", s.last_tick_number(), s.last_seq);
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How the followers ride out a dropped connection (the front's panic, the
/// kill): quick retries, for as long as any wait of the demo.
fn follower_config() -> FollowerConfig {
    FollowerConfig { reconnect_for: WAIT_LIMIT, reconnect_pause: Duration::from_millis(50), notices: None }
}

/// The client: records every event `follower` hands out. The follower
/// reconnects by itself when its connection drops (and resubscribes with
/// `since` = the last seq it handed out); when the daemon comes back at
/// another address, the client drains what the old connection still holds
/// and opens a follower there, from the same seq.
async fn client(topic: String, mut follower: Follower, mut target: watch::Receiver<Target>, seen: Arc<Mutex<Seen>>) {
    let mut generation = 1;
    // Connections opened by the followers of earlier daemons.
    let mut earlier_connections = 0;
    loop {
        tokio::select! {
            changed = target.changed() => {
                let next = if changed.is_ok() { target.borrow_and_update().clone() } else { None };
                let Some((new_generation, url)) = next else { return };
                if new_generation == generation {
                    continue;
                }
                // Nothing already on the wire from the old daemon is thrown away.
                drain(&mut follower, generation, earlier_connections, &seen).await;
                earlier_connections += follower.connections();
                let since = follower.last_seq();
                follower = match open_follower(&url, &topic, since).await {
                    Ok(follower) => follower,
                    Err(e) => {
                        lock(&seen).error = Some(format!("{e:#}"));
                        return;
                    }
                };
                generation = new_generation;
                let mut s = lock(&seen);
                s.resumed_from.get_or_insert(since);
                s.connections = earlier_connections + follower.connections();
            }
            next = follower.next() => {
                let outcome = next
                    .map_err(anyhow::Error::new)
                    .and_then(|followed| record(&seen, generation, earlier_connections + follower.connections(), followed));
                if let Err(e) = outcome {
                    lock(&seen).error = Some(format!("{e:#}"));
                    return;
                }
            }
        }
    }
}

/// Records what `follower` still has from a daemon that is gone: events that
/// were already on the wire when it died. Stops at the first pause (the
/// connection is closed and the follower is trying in vain to reconnect).
async fn drain(follower: &mut Follower, generation: u32, earlier_connections: u32, seen: &Mutex<Seen>) {
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        match follower.next_within(Duration::from_millis(200)).await {
            Ok(Some(followed)) => {
                let connections = earlier_connections + follower.connections();
                if let Err(e) = record(seen, generation, connections, followed) {
                    lock(seen).error = Some(format!("{e:#}"));
                    return;
                }
            }
            // Nothing more, or the old daemon's address refuses: it is gone.
            Ok(None) | Err(_) => return,
        }
    }
}

/// A follower of `topic` on the daemon at `url`, from `since`; the daemon
/// answered `/health` already, but its WebSocket gets a few tries.
async fn open_follower(url: &str, topic: &str, since: u64) -> Result<Follower> {
    let api = Client::new(url, CLIENT_NAME).with_context(|| format!("a client of {url}"))?;
    let deadline = Instant::now() + WAIT_LIMIT;
    loop {
        match Follower::open(api.clone(), vec![topic.to_string()], since, follower_config()).await {
            Ok(follower) => return Ok(follower),
            Err(e) if Instant::now() >= deadline => {
                return Err(anyhow::Error::new(e).context(format!("resubscribing at {url} from seq {since}")))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Records one event the follower handed out.
fn record(seen: &Mutex<Seen>, generation: u32, connections: u32, followed: Followed) -> Result<()> {
    let data =
        followed.envelope.payload().with_context(|| format!("an event this demo cannot read: {}", followed.frame))?;
    let mut s = lock(seen);
    s.connections = connections;
    let seq = followed.envelope.seq;
    if seq <= s.last_seq {
        s.out_of_order += 1;
    }
    s.last_seq = s.last_seq.max(seq);
    if let EventData::TurnCompleted(completed) = &data {
        if completed.turn_id == s.turn_id {
            s.turn_completed = Some(completed.status.to_string());
        }
    }
    s.events.push(Received { generation, at: Instant::now(), event: followed.envelope, data });
    Ok(())
}

// ---------------------------------------------------------------------------
// The daemon process
// ---------------------------------------------------------------------------

struct Daemon {
    child: tokio::process::Child,
    pid: u32,
    url: String,
    api: Client,
    stderr: Arc<Mutex<VecDeque<String>>>,
}

impl Daemon {
    /// Starts `bosun serve` on a free loopback port and reads its URL from the
    /// first line it prints.
    async fn start(bosun: &Path, data_dir: &Path, cwd: &Path, generation: u32) -> Result<Daemon> {
        let mut child = tokio::process::Command::new(bosun)
            .arg("serve")
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .arg("--enable-fault-injection")
            .env("BOSUN_LOG", std::env::var("BOSUN_LOG").unwrap_or_else(|_| "info".into()))
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", bosun.display()))?;
        let pid = child.id().context("the daemon exited at once")?;
        let stdout = child.stdout.take().context("the daemon's stdout")?;
        let stderr_pipe = child.stderr.take().context("the daemon's stderr")?;

        let stderr = Arc::new(Mutex::new(VecDeque::new()));
        let tail = stderr.clone();
        let verbose = std::env::var_os("BOSUN_DEMO_VERBOSE").is_some();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr_pipe).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if verbose {
                    eprintln!("[daemon {generation}] {line}");
                }
                let mut tail = tail.lock().unwrap_or_else(|p| p.into_inner());
                if tail.len() == STDERR_TAIL {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
        });

        // `child` is killed on drop, should anything below fail.
        let mut lines = BufReader::new(stdout).lines();
        let line = match tokio::time::timeout(Duration::from_secs(60), lines.next_line()).await {
            Ok(Ok(Some(line))) => line,
            _ => bail!("the daemon did not print its URL; its log:\n{}", tail_of(&stderr)),
        };
        // Keep draining stdout so the daemon never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .with_context(|| format!("no URL in the daemon's first line: {line:?}"))?
            .to_string();
        let api = Client::new(&url, CLIENT_NAME).with_context(|| format!("a client of {url}"))?;
        Ok(Daemon { child, pid, url, api, stderr })
    }

    fn stderr_tail(&self) -> String {
        tail_of(&self.stderr)
    }

    /// SIGKILL (tokio's `start_kill` is SIGKILL on Unix), then reap the process.
    async fn kill9(&mut self) -> Result<()> {
        let child = &mut self.child;
        child.start_kill().context("sending SIGKILL to the daemon")?;
        child.wait().await.context("waiting for the killed daemon")?;
        Ok(())
    }

    /// A clean stop (SIGTERM), so a data dir given with `--data-dir` is left tidy;
    /// SIGKILL if that takes too long.
    async fn stop(&mut self) {
        let child = &mut self.child;
        if let Some(pid) = child.id() {
            // SAFETY: kill(2) on our own child's pid, which is not reaped yet.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGTERM);
            }
        }
        if tokio::time::timeout(Duration::from_secs(10), child.wait()).await.is_err() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    async fn health(&self) -> Result<Health> {
        retry("GET /health", Retry::Always, || self.api.health()).await
    }
}

/// The daemon's last log lines.
fn tail_of(stderr: &Mutex<VecDeque<String>>) -> String {
    stderr.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect::<Vec<_>>().join("\n")
}

// ---------------------------------------------------------------------------
// main
// ---------------------------------------------------------------------------

struct Args {
    bosun: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    quiet: bool,
}

fn parse_args() -> Result<Args> {
    let mut args = Args { bosun: None, data_dir: None, quiet: false };
    let mut it = std::env::args_os().skip(1);
    while let Some(arg) = it.next() {
        match arg.to_str() {
            Some("--bosun") => args.bosun = Some(it.next().context("--bosun needs a path")?.into()),
            Some("--data-dir") => args.data_dir = Some(it.next().context("--data-dir needs a path")?.into()),
            Some("--quiet") | Some("-q") => args.quiet = true,
            Some("--help") | Some("-h") => {
                println!("usage: crash_recovery [--bosun PATH] [--data-dir DIR] [--quiet]");
                std::process::exit(0);
            }
            _ => bail!("unknown argument {arg:?} (try --help)"),
        }
    }
    Ok(args)
}

/// `--bosun`, else `$BOSUN_BIN`, else `target/<profile>/bosun` next to this
/// example, else `cargo build --bin bosun`.
fn find_bosun(explicit: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(path) = explicit.or_else(|| std::env::var_os("BOSUN_BIN").map(PathBuf::from)) {
        ensure!(path.is_file(), "no bosun binary at {}", path.display());
        return Ok(path);
    }
    // This example lives in target/<profile>/examples/; the daemon goes beside
    // it. `cargo run --example` does not build the daemon, so build it here
    // (a no-op when it is up to date) rather than run a stale one.
    let exe = std::env::current_exe().context("locating this example")?;
    let profile_dir = exe.parent().and_then(Path::parent).context("the example is not in target/<profile>/examples")?;
    let release = profile_dir.file_name().is_some_and(|name| name == "release");
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = std::process::Command::new(cargo);
    build.args(["build", "--quiet", "--bin", "bosun", "--manifest-path"]).arg(&manifest);
    if release {
        build.arg("--release");
    }
    let status = build.status().context("running cargo build --bin bosun")?;
    ensure!(status.success(), "cargo build --bin bosun failed");
    let built = profile_dir.join("bosun");
    ensure!(built.is_file(), "cargo build --bin bosun succeeded, but {} is missing", built.display());
    Ok(built)
}

#[tokio::main]
async fn main() {
    let code = match real_main().await {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(e) => {
            eprintln!("error: {e:#}");
            println!("VERDICT: FAIL — the demo could not run to the end");
            1
        }
    };
    std::process::exit(code);
}

async fn real_main() -> Result<bool> {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(2);
        }
    };
    let bosun = find_bosun(args.bosun)?;
    // Keep the temp dir alive until the end; a given data dir is the user's to keep.
    let temp = match &args.data_dir {
        Some(_) => None,
        None => Some(tempfile::Builder::new().prefix("bosun-demo").tempdir().context("creating a temp data dir")?),
    };
    let data_dir = match (&args.data_dir, &temp) {
        (Some(dir), _) => dir.clone(),
        (None, Some(temp)) => temp.path().join("data"),
        (None, None) => unreachable!("a temp dir exists when no data dir was given"),
    };
    if !args.quiet {
        println!("bosun crash-recovery demo ({})", bosun.display());
    }
    let report = run_demo(&bosun, &data_dir, args.quiet).await?;
    println!();
    println!("{report}");
    let failures = report.failures();
    if failures.is_empty() {
        println!(
            "VERDICT: PASS — the stream survived {} injected panics and a kill -9 with no gap, no duplicate, and nothing lost that a client saw",
            report.faults_injected.len()
        );
    } else {
        println!("VERDICT: FAIL — {}", failures.join("; "));
    }
    Ok(failures.is_empty())
}
