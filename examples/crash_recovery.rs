//! Crash-recovery demo: a stream that survives injected panics and a kill -9,
//! with the numbers it saw.
//!
//! ```text
//! cargo run --example crash_recovery [-- --bosun PATH] [--data-dir DIR] [--quiet]
//! ```
//!
//! It starts the real `bosun` daemon (with fault injection on), opens a demo
//! session and starts a `SLOW` turn, which streams `tick N/600` chunks at about
//! 20 a second. A WebSocket client records every event of the session while
//! the demo makes the turn, provider, session and front actors panic one after
//! the other, then kills the daemon with SIGKILL in the middle of the stream
//! and starts it again on the same data dir. The client resumes with
//! `since` = the last seq it received, reads on until the stream has clearly
//! come back, and the turn is interrupted. Finally the demo checks what the
//! client saw against the store and prints the numbers; the exit code is 0
//! when everything held, 1 otherwise.
//!
//! The binary is found with `--bosun PATH`, else `$BOSUN_BIN`, else next to
//! this example (`target/<profile>/bosun`), else built with
//! `cargo build --bin bosun`. Set `BOSUN_DEMO_VERBOSE=1` to see the daemons'
//! logs.

use anyhow::{anyhow, bail, ensure, Context as _, Result};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

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
    /// Event frames whose seq was not above every seq received before it.
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

    let session = daemon
        .call(
            reqwest::Method::POST,
            "/api/v1/sessions",
            Some(json!({"provider":"demo","cwd":cwd.path(),"title":"crash-recovery demo","policy":"plan-only"})),
            201,
        )
        .await?;
    let session_id = str_field(&session, "id")?;
    let turn = daemon
        .call(reqwest::Method::POST, &format!("/api/v1/sessions/{session_id}/turns"), Some(json!({"text":"SLOW"})), 202)
        .await?;
    let turn_id = str_field(&turn, "turn_id")?;
    log.say(format!("session {session_id}: turn {turn_id} started with \"SLOW\" (600 ticks, ~20/s)"));

    // The client runs on its own task for the whole demo, following the daemon
    // it is told about (generation, ws url); `None` tells it to stop.
    let seen = Arc::new(Mutex::new(Seen::new(&turn_id)));
    let (target_tx, target_rx) = watch::channel(Some((1u32, daemon.ws_url())));
    let client = tokio::spawn(client(format!("session:{session_id}"), target_rx, seen.clone()));

    let outcome = drive(&log, bosun, data_dir, cwd.path(), &mut daemon, &session_id, &turn_id, &seen, &target_tx).await;
    // Stop the client whatever happened, so no task outlives the demo.
    let _ = target_tx.send(None);
    let _ = tokio::time::timeout(Duration::from_secs(5), client).await;
    let mut report = match outcome {
        Ok(report) => report,
        Err(e) => return Err(e.context(format!("daemon log (last lines):\n{}", daemon.stderr_tail()))),
    };

    // Everything the client saw must still be in the store, unchanged.
    let stored = daemon.stored_events(&format!("session={session_id}"), 0).await?;
    // Restarts on record since this demo's session began (a reused data dir
    // holds earlier runs too).
    let began = stored.first().and_then(|e| e["seq"].as_u64()).unwrap_or(1);
    for e in daemon.stored_events("topic=system", began - 1).await? {
        if e["type"] == "actor:restarted" {
            let kind = e["data"]["kind"].as_str().unwrap_or("?").to_string();
            *report.restarts_on_record.entry(kind).or_default() += 1;
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
    client_target: &watch::Sender<Option<(u32, String)>>,
) -> Result<Report> {
    let mut report = Report::default();
    let ticks = |gen: Option<u32>| lock(seen).ticks(gen);

    wait_for(seen, "the stream to start", |s| s.ticks(None) >= TICKS_BETWEEN_FAULTS).await?;
    log.say(format!("client is receiving: tick {}", lock(seen).last_tick_number()));

    // Injected panics: each actor is restarted by its supervisor and the
    // stream goes on; the client's WebSocket stays open throughout.
    for (kind, target) in FAULTS {
        let target = target.replace("{turn}", turn_id).replace("{session}", session_id);
        let restarts_before = restarts(&daemon.health().await?, kind);
        let ticks_before = ticks(None);
        let answer =
            daemon.call(reqwest::Method::POST, "/api/v1/debug/crash", Some(json!({"target": target})), 202).await?;
        log.say(format!("injected a panic into {} ({target})", answer["actor"].as_str().unwrap_or("?")));
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
    report.health_restarts = daemon
        .health()
        .await?
        .get("actors")
        .and_then(Value::as_object)
        .map(|actors| actors.iter().map(|(k, v)| (k.clone(), v["restarts"].as_u64().unwrap_or(0))).collect())
        .unwrap_or_default();

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
    let _ = client_target.send(Some((2, daemon.ws_url())));

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

    daemon
        .call(
            reqwest::Method::POST,
            &format!("/api/v1/sessions/{session_id}/turns/{turn_id}/interrupt"),
            Some(json!({})),
            202,
        )
        .await?;
    log.say("interrupted the turn".to_string());
    wait_for(seen, "turn:completed", |s| s.turn_completed.is_some()).await?;
    let status = lock(seen).turn_completed.clone().unwrap_or_default();
    log.say(format!("turn:completed, status {status}"));
    report.turn_status = status;
    Ok(report)
}

fn restarts(health: &Value, kind: &str) -> u64 {
    health["actors"][kind]["restarts"].as_u64().unwrap_or(0)
}

fn str_field(v: &Value, field: &str) -> Result<String> {
    v[field].as_str().map(str::to_string).ok_or_else(|| anyhow!("no {field:?} in {v}"))
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

struct Received {
    /// Which daemon the connection it came on led to: 1 before the kill, 2 after.
    generation: u32,
    at: Instant,
    event: Value,
}

/// Everything the client received, shared with the driver.
struct Seen {
    turn_id: String,
    events: Vec<Received>,
    /// The highest seq received: the `since` of the next subscription.
    last_seq: u64,
    /// Event frames whose seq was not above `last_seq` when they came.
    out_of_order: usize,
    connections: u32,
    /// The `since` of the first subscription after the restart.
    resumed_from: Option<u64>,
    turn_completed: Option<String>,
    /// Why the client gave up, if it did.
    error: Option<String>,
}

impl Seen {
    fn new(turn_id: &str) -> Seen {
        Seen {
            turn_id: turn_id.to_string(),
            events: Vec::new(),
            last_seq: 0,
            out_of_order: 0,
            connections: 0,
            resumed_from: None,
            turn_completed: None,
            error: None,
        }
    }

    /// The turn's `stream:chunk` events, with when and from which daemon they came.
    fn chunks(&self) -> impl Iterator<Item = &Received> {
        self.events.iter().filter(|r| r.event["type"] == "stream:chunk" && r.event["data"]["turn_id"] == *self.turn_id)
    }

    /// The turn's ticks (number, generation, arrival).
    fn tick_list(&self) -> impl Iterator<Item = (u64, u32, Instant)> + '_ {
        self.chunks().filter_map(|r| Some((tick_number(&r.event)?, r.generation, r.at)))
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
    fn tally(&self, stored: &[Value], report: &mut Report) {
        report.events_before_kill = self.events.iter().filter(|r| r.generation == 1).count();
        report.events_after_restart = self.events.len() - report.events_before_kill;
        report.ws_connections = self.connections;
        report.resumed_from_seq = self.resumed_from;
        report.event_duplicates = self.out_of_order;

        let stored_by_seq: HashMap<u64, &Value> = stored.iter().filter_map(|e| Some((e["seq"].as_u64()?, e))).collect();
        report.events_stored = stored.len();
        report.seen_not_stored = self
            .events
            .iter()
            .filter(|r| r.event["seq"].as_u64().and_then(|seq| stored_by_seq.get(&seq)) != Some(&&r.event))
            .count();
        let received: BTreeSet<u64> = self.events.iter().filter_map(|r| r.event["seq"].as_u64()).collect();
        report.stored_not_seen =
            stored_by_seq.keys().filter(|seq| **seq <= self.last_seq && !received.contains(seq)).count();

        let ticks: Vec<u64> = self.tick_list().map(|(n, _, _)| n).collect();
        report.ticks_received = ticks.len();
        report.ticks_before_kill = self.ticks(Some(1));
        report.ticks_after_restart = self.ticks(Some(2));
        report.first_tick = ticks.first().copied();
        report.last_tick = ticks.iter().max().copied();
        (report.tick_gaps, report.tick_duplicates) = gaps_and_duplicates(&ticks, 1);

        let indexes: Vec<u64> = self.chunks().filter_map(|r| r.event["data"]["index"].as_u64()).collect();
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
fn tick_number(event: &Value) -> Option<u64> {
    let text = event["data"]["text"].as_str()?;
    text.strip_prefix("tick ")?.split('/').next()?.parse().ok()
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

/// The client: connects to the daemon it is pointed at, subscribes to `topic`
/// with `since` = the last seq it received, records every event, and on any
/// disconnect does the same again (against the new address once there is one).
async fn client(topic: String, mut target: watch::Receiver<Option<(u32, String)>>, seen: Arc<Mutex<Seen>>) {
    loop {
        let Some((generation, url)) = target.borrow_and_update().clone() else { return };
        let connected = tokio::time::timeout(Duration::from_secs(2), tokio_tungstenite::connect_async(&url)).await;
        let mut ws = match connected {
            Ok(Ok((ws, _))) => ws,
            // The daemon is down (killed, not restarted yet): try again shortly.
            _ => {
                if !pause(&mut target).await {
                    return;
                }
                continue;
            }
        };
        let since = lock(&seen).last_seq;
        let subscribe = json!({"op":"subscribe","topics":[topic],"since":since});
        if ws.send(Message::text(subscribe.to_string())).await.is_err() {
            if !pause(&mut target).await {
                return;
            }
            continue;
        }
        loop {
            tokio::select! {
                changed = target.changed() => {
                    if changed.is_err() || target.borrow().is_none() {
                        let _ = ws.close(None).await;
                        return;
                    }
                    // A new daemon: keep reading this connection until it ends,
                    // so nothing already on the wire is thrown away.
                }
                frame = ws.next() => match frame {
                    Some(Ok(Message::Text(text))) => {
                        if let Err(e) = record(&seen, generation, since, &text) {
                            lock(&seen).error = Some(e.to_string());
                            return;
                        }
                    }
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                    // Pings are answered by tungstenite itself.
                    Some(Ok(_)) => {}
                },
            }
        }
        // The connection ended: resume, with a short pause so a daemon that
        // keeps dropping us is not hammered.
        if !pause(&mut target).await {
            return;
        }
    }
}

/// Waits a moment before reconnecting, or less if the daemon's address
/// changes. False when the driver is gone.
async fn pause(target: &mut watch::Receiver<Option<(u32, String)>>) -> bool {
    tokio::select! {
        changed = target.changed() => changed.is_ok(),
        _ = tokio::time::sleep(Duration::from_millis(50)) => true,
    }
}

/// Records one text frame from the daemon.
fn record(seen: &Mutex<Seen>, generation: u32, since: u64, text: &str) -> Result<()> {
    let frame: Value = serde_json::from_str(text).with_context(|| format!("a frame that is not JSON: {text}"))?;
    let mut s = lock(seen);
    match frame["op"].as_str() {
        Some("subscribed") => {
            s.connections += 1;
            if generation > 1 && s.resumed_from.is_none() {
                s.resumed_from = Some(since);
            }
        }
        Some("error") => bail!("the daemon refused a frame: {frame}"),
        Some(_) => {}
        None => {
            let seq = frame["seq"].as_u64().ok_or_else(|| anyhow!("an event without seq: {frame}"))?;
            if seq <= s.last_seq {
                s.out_of_order += 1;
            }
            s.last_seq = s.last_seq.max(seq);
            if frame["type"] == "turn:completed" && frame["data"]["turn_id"] == *s.turn_id {
                s.turn_completed = Some(frame["data"]["status"].as_str().unwrap_or("?").to_string());
            }
            s.events.push(Received { generation, at: Instant::now(), event: frame });
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The daemon process
// ---------------------------------------------------------------------------

struct Daemon {
    child: tokio::process::Child,
    pid: u32,
    url: String,
    http: reqwest::Client,
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

        let mut lines = BufReader::new(stdout).lines();
        let first = tokio::time::timeout(Duration::from_secs(60), lines.next_line()).await;
        let mut daemon = Daemon {
            child,
            pid,
            url: String::new(),
            // No connection reuse: a pooled connection may belong to a front that
            // was just made to panic, or to a daemon that was just killed.
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                // The daemon wants it of every state-changing request.
                .default_headers(reqwest::header::HeaderMap::from_iter([(
                    reqwest::header::HeaderName::from_static("x-bosun-client"),
                    reqwest::header::HeaderValue::from_static("bosun-crash-recovery-example"),
                )]))
                .build()
                .context("building the HTTP client")?,
            stderr,
        };
        let line = match first {
            Ok(Ok(Some(line))) => line,
            _ => bail!("the daemon did not print its URL; its log:\n{}", daemon.stderr_tail()),
        };
        // Keep draining stdout so the daemon never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        daemon.url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .ok_or_else(|| anyhow!("no URL in the daemon's first line: {line:?}"))?
            .to_string();
        Ok(daemon)
    }

    fn ws_url(&self) -> String {
        format!("{}/ws", self.url.replacen("http://", "ws://", 1))
    }

    fn stderr_tail(&self) -> String {
        self.stderr.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect::<Vec<_>>().join("\n")
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

    /// One API call, expecting `want`. Retries while the daemon cannot be
    /// reached or answers 503 (an actor restarting): both are expected
    /// moments in this demo, and neither means the request was carried out.
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>, want: u16) -> Result<Value> {
        let deadline = Instant::now() + WAIT_LIMIT;
        loop {
            let mut req = self.http.request(method.clone(), format!("{}{path}", self.url));
            if let Some(body) = &body {
                req = req.json(body);
            }
            let retry = match req.send().await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let text = resp.text().await.with_context(|| format!("{method} {path}: reading the answer"))?;
                    let value = if text.is_empty() {
                        Value::Null
                    } else {
                        serde_json::from_str(&text).unwrap_or(Value::String(text))
                    };
                    if status == want {
                        return Ok(value);
                    }
                    ensure!(status == 503, "{method} {path}: {status} {value}");
                    format!("{status} {value}")
                }
                // Only errors where the request never reached the daemon are
                // retried for anything but a GET.
                Err(e) if e.is_connect() || method == reqwest::Method::GET => e.to_string(),
                Err(e) => return Err(anyhow!(e).context(format!("{method} {path}"))),
            };
            ensure!(Instant::now() < deadline, "{method} {path}: still failing: {retry}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn health(&self) -> Result<Value> {
        self.call(reqwest::Method::GET, "/health", None, 200).await
    }

    /// All stored events after `since` for a filter (`session=ID`, `topic=T`), paging with `next`.
    async fn stored_events(&self, filter: &str, since: u64) -> Result<Vec<Value>> {
        const LIMIT: usize = 1000;
        let mut out = Vec::new();
        let mut since = since;
        loop {
            let page = self
                .call(reqwest::Method::GET, &format!("/api/v1/events?since={since}&{filter}&limit={LIMIT}"), None, 200)
                .await?;
            let events = page["events"].as_array().ok_or_else(|| anyhow!("no events in {page}"))?;
            out.extend(events.iter().cloned());
            if events.len() < LIMIT {
                return Ok(out);
            }
            since = page["next"].as_u64().ok_or_else(|| anyhow!("no next in the events page"))?;
        }
    }
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
