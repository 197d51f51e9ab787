//! Test harness: the real `bosun` binary on a free loopback port, spoken to
//! over HTTP and WebSocket.
#![allow(dead_code)]

pub mod agents;

use bosun_proto::query::{ApprovalsQuery, EventsQuery};
use bosun_proto::{CreateSessionRequest, ErrorDetail, Health, SessionView, StartTurnRequest, StartTurnResponse};
use futures::{SinkExt, StreamExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

// The wire types most tests speak in, so `use common::*` brings them.
#[allow(unused_imports)]
pub use bosun_proto::events::{StreamChunk, TurnCompleted};
#[allow(unused_imports)]
pub use bosun_proto::{
    Action, ApprovalStatus, ApprovalView, ChunkKind, Control, DecidedBy, Decision, Envelope, EventData, EventType,
    Policy, ServerFrame, TurnStatus,
};

pub const BIN: &str = env!("CARGO_BIN_EXE_bosun");

#[derive(Clone, Default)]
pub struct Options {
    pub fault_injection: bool,
    pub live_capacity: Option<usize>,
    pub config: Option<String>,
    pub log: Option<String>,
    /// Send the daemon's admin token (`<data_dir>/admin.token`) with every
    /// request of [`Daemon::request`], for daemons under `require = "always"`.
    pub admin_token: bool,
    /// Set in the daemon's environment.
    pub env: Vec<(String, String)>,
    /// The daemon's soft limit on open files (`RLIMIT_NOFILE`), for tests of
    /// connection exhaustion; the hard limit is left as it is.
    pub nofile: Option<u64>,
    /// The address to listen on (default `127.0.0.1:0`, a free port); a
    /// test that restarts a daemon where its clients expect it sets the
    /// port the first one got.
    pub listen: Option<String>,
}

/// A running daemon. Dropping it kills the process.
pub struct Daemon {
    child: Child,
    pub url: String,
    pub data_dir: PathBuf,
    pub options: Options,
    pub http: reqwest::Client,
    /// The typed client, made at its first use (see [`Daemon::client`]).
    client: std::sync::OnceLock<bosun_client::Client>,
    stderr: Arc<Mutex<String>>,
}

impl Daemon {
    pub fn start(data_dir: &Path, options: Options) -> Daemon {
        let mut cmd = Command::new(BIN);
        let listen = options.listen.clone().unwrap_or_else(|| "127.0.0.1:0".into());
        cmd.arg("serve").arg("--listen").arg(listen).arg("--data-dir").arg(data_dir);
        if options.fault_injection {
            cmd.arg("--enable-fault-injection");
        }
        if let Some(cap) = options.live_capacity {
            cmd.arg("--live-capacity").arg(cap.to_string());
        }
        if let Some(config) = &options.config {
            let path = data_dir.join("bosun-test.toml");
            std::fs::create_dir_all(data_dir).expect("data dir");
            std::fs::write(&path, config).expect("write config");
            cmd.arg("--config").arg(path);
        }
        cmd.env("BOSUN_LOG", options.log.clone().unwrap_or_else(|| "info".into()));
        // A pty terminal with no command starts "the user's shell": in tests,
        // one that reads no rc file of the machine's user (a .bashrc that
        // runs `pyenv rehash`, hung up half-way by a test's end, leaves a
        // lock behind that hangs every later bash). A test sets its own.
        cmd.env("SHELL", "/bin/sh");
        cmd.envs(options.env.iter().map(|(k, v)| (k, v)));
        cmd.current_dir(data_dir.parent().unwrap_or(data_dir));
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).stdin(Stdio::null());
        if let Some(soft) = options.nofile {
            use std::os::unix::process::CommandExt as _;
            // SAFETY: only async-signal-safe calls (getrlimit, setrlimit) between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
                    if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    limit.rlim_cur = (soft as libc::rlim_t).min(limit.rlim_max);
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = cmd.spawn().expect("spawn bosun");
        let stdout = child.stdout.take().expect("stdout");
        let stderr_pipe = child.stderr.take().expect("stderr");
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr_pipe).lines().map_while(Result::ok) {
                if std::env::var_os("BOSUN_TEST_VERBOSE").is_some() {
                    eprintln!("[daemon] {line}");
                }
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            for _ in lines {}
        });
        let line = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                panic!("daemon did not print its URL; stderr:\n{}", stderr.lock().unwrap());
            }
        };
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no URL in {line:?}"))
            .to_string();
        Daemon {
            child,
            url,
            data_dir: data_dir.to_path_buf(),
            options,
            http: test_client(),
            client: std::sync::OnceLock::new(),
            stderr,
        }
    }

    /// The daemon's peak resident memory so far (`VmHWM`), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).expect("read /proc/PID/status");
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/PID/status")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// SIGKILL: no chance to flush or clean up.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for a clean exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.check_events();
        self.sigterm();
        self.wait_exit()
    }

    /// Sends SIGTERM, without waiting: the test goes on talking to the
    /// stopping daemon.
    pub fn sigterm(&self) {
        // SAFETY: kill(2) on our own child's pid, which it has until reaped.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
    }

    /// Waits (up to 30 s) for the daemon to exit after a signal.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("daemon did not stop on SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn restart(mut self) -> Daemon {
        self.kill9();
        Daemon::start(&self.data_dir.clone(), self.options.clone())
    }

    /// kill -9, then a new daemon on the same data dir and the same port,
    /// so clients of the first find the second where they left it.
    pub fn restart_in_place(mut self) -> Daemon {
        self.kill9();
        let port = self.url.rsplit(':').next().expect("a port in the URL").to_string();
        let options = Options { listen: Some(format!("127.0.0.1:{port}")), ..self.options.clone() };
        Daemon::start(&self.data_dir.clone(), options)
    }

    /// The typed client (`bosun-client`), with the admin token when the
    /// options say so. Every ordinary call of the tests goes through it.
    pub fn client(&self) -> bosun_client::Client {
        self.client
            .get_or_init(|| {
                let token = self.options.admin_token.then(|| self.admin_token());
                bosun_client::Client::new(&self.url, "bosun-test")
                    .expect("a client of the test daemon")
                    .with_token(token)
            })
            .clone()
    }

    /// The daemon's admin credential (`<data_dir>/admin.token`).
    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("admin.token")).expect("read admin.token").trim().to_string()
    }

    pub fn ws_url(&self) -> String {
        format!("{}/ws", self.url.replacen("http://", "ws://", 1))
    }

    // ---- Raw HTTP: for tests that deliberately send what the typed client
    // cannot (bad input, unknown fields, wrong methods) or that assert the
    // exact wire JSON, HTTP status or error body at the boundary. Ordinary
    // flows use [`Daemon::client`] and the typed helpers below.

    /// A raw request: the status and the body as JSON (`Null` when empty, a
    /// string when not JSON). For the boundary only: bad input on purpose,
    /// or a check of the exact status, wire JSON or error body.
    pub async fn request(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self.http.request(method, format!("{}{}", self.url, path));
        if self.options.admin_token {
            req = req.bearer_auth(self.admin_token());
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        let value =
            if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        (status, value)
    }

    /// A raw GET (see [`Daemon::request`]: for the boundary only).
    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.request(reqwest::Method::GET, path, None).await
    }

    /// A raw POST (see [`Daemon::request`]: for the boundary only).
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.request(reqwest::Method::POST, path, Some(body)).await
    }

    /// A raw GET that must answer 200, as JSON: for what is checked exactly
    /// as the daemon sends it (the OpenAPI document, the events schema, the
    /// envelope's own fields).
    pub async fn ok_get(&self, path: &str) -> Value {
        let (status, body) = self.get(path).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    // ---- Typed calls, through bosun-client

    /// POSTs a typed body, insists on the status the API documents for it
    /// (201 for a creation, 202 for a turn), and parses the answer as the
    /// typed client would.
    async fn post_expecting<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B, want: u16) -> T {
        let body = serde_json::to_value(body).expect("a request body encodes");
        let (status, answer) = self.request(reqwest::Method::POST, path, Some(body)).await;
        assert_eq!(status, want, "POST {path}: {answer}");
        serde_json::from_value(answer.clone()).unwrap_or_else(|e| panic!("POST {path}: {e}: {answer}"))
    }

    /// Creates a session (which must answer 201) and returns it.
    pub async fn create_session(&self, req: &CreateSessionRequest) -> SessionView {
        self.post_expecting("/api/v1/sessions", req, 201).await
    }

    /// A demo session in `cwd` under `policy`; its id.
    pub async fn new_session(&self, cwd: &Path, policy: Policy) -> String {
        let req = CreateSessionRequest {
            provider: "demo".into(),
            cwd: Some(path_string(cwd)),
            title: Some("test".into()),
            policy: Some(policy),
            ..Default::default()
        };
        self.create_session(&req).await.id.into_string()
    }

    /// Starts a turn (which must answer 202); its id.
    pub async fn start_turn(&self, session: &str, text: &str) -> String {
        let body = StartTurnRequest { text: text.to_string() };
        let path = format!("/api/v1/sessions/{session}/turns");
        let started: StartTurnResponse = self.post_expecting(&path, &body, 202).await;
        started.turn_id.into_string()
    }

    /// All stored events with seq > since for a session (or all), paging.
    pub async fn events(&self, session: Option<&str>, since: u64) -> Vec<Envelope> {
        let query = EventsQuery { since, session: session.map(str::to_string), topic: None, limit: Some(1000) };
        self.client().all_events(&query).await.expect("GET /api/v1/events")
    }

    /// All stored events of a session after `since`.
    pub async fn typed_events(&self, session: &str, since: u64) -> Vec<Envelope> {
        self.events(Some(session), since).await
    }

    /// Polls until `pred` holds for the session's event list, or panics.
    pub async fn wait_events(&self, session: &str, what: &str, pred: impl Fn(&[Envelope]) -> bool) -> Vec<Envelope> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let events = self.events(Some(session), 0).await;
            if pred(&events) {
                return events;
            }
            if Instant::now() > deadline {
                panic!("timed out waiting for {what}; events: {:#?}", events.iter().rev().take(10).collect::<Vec<_>>());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls until the turn's `turn:completed` is stored; its payload.
    pub async fn wait_turn_end(&self, session: &str, turn: &str) -> TurnCompleted {
        let events =
            self.wait_events(session, "turn:completed", |evs| evs.iter().any(|e| is_turn_completed(e, turn))).await;
        turn_completed(&events, turn).expect("turn:completed")
    }

    /// The session's first pending approval, once there is one.
    pub async fn wait_pending_approval(&self, session: &str) -> ApprovalView {
        let deadline = Instant::now() + Duration::from_secs(60);
        let query = ApprovalsQuery { status: Some("pending".into()), session: Some(session.into()) };
        loop {
            let list = self.client().approvals(&query).await.expect("GET /api/v1/approvals");
            if let Some(a) = list.approvals.into_iter().next() {
                return a;
            }
            assert!(Instant::now() < deadline, "no pending approval for {session}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Decides an approval, which must succeed; the approval as it is now.
    pub async fn decide(&self, approval: &str, decision: Decision) -> ApprovalView {
        self.client().decide(approval, decision).await.unwrap_or_else(|e| panic!("{decision} {approval}: {e}"))
    }

    /// Interrupts a turn, which must be accepted.
    pub async fn interrupt(&self, session: &str, turn: &str) {
        let answer = self.client().interrupt(session, turn).await.unwrap_or_else(|e| panic!("interrupt {turn}: {e}"));
        assert!(answer.interrupting && answer.turn_id == turn, "{answer:?}");
    }

    /// Polls `/health` until `pred` holds (a daemon that does not answer, or
    /// answers an error, has not matched yet).
    pub async fn wait_health(&self, pred: impl Fn(&Health) -> bool) -> Health {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let last = match self.client().health().await {
                Ok(health) if pred(&health) => return health,
                Ok(health) => format!("{health:?}"),
                Err(e) => e.to_string(),
            };
            assert!(Instant::now() < deadline, "health never matched: {last}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A path as the API takes it.
pub fn path_string(path: &Path) -> String {
    path.to_str().expect("a UTF-8 path").to_string()
}

/// A client like the CLI: every request says it is one of ours
/// (`X-Bosun-Client`), as the daemon wants of state-changing requests.
pub fn test_client() -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("x-bosun-client", reqwest::header::HeaderValue::from_static("bosun-test"));
    reqwest::Client::builder().default_headers(headers).build().expect("build the HTTP client")
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.check_events();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The published JSON Schema of events (docs/api/events.schema.json, which
/// tests/contract.rs keeps equal to what the daemon serves).
fn events_validator() -> &'static jsonschema::Validator {
    static VALIDATOR: std::sync::OnceLock<jsonschema::Validator> = std::sync::OnceLock::new();
    VALIDATOR.get_or_init(|| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/api/events.schema.json");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let schema: Value = serde_json::from_str(&text).expect("the events schema is JSON");
        jsonschema::validator_for(&schema).expect("the events schema is a valid JSON Schema")
    })
}

/// A GET over a plain socket, for use where no async runtime may run (a
/// `Drop`): the body, or `None` if the daemon is not answering.
fn blocking_get(url: &str, path: &str, token: Option<&str>) -> Option<String> {
    use std::io::{Read, Write};
    let authority = url.strip_prefix("http://")?;
    let mut stream = std::net::TcpStream::connect(authority).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\n{auth}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).ok()?;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = answer.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

impl Daemon {
    /// Checks every event in the daemon's log against the published schema:
    /// what the test suite makes the daemon produce is the contract. Done
    /// when a daemon goes (the last of a data dir sees its predecessors'
    /// events too), unless the test has already failed.
    pub fn check_events(&self) {
        if std::thread::panicking() {
            return;
        }
        let token = std::fs::read_to_string(self.data_dir.join("admin.token")).ok();
        let token = token.as_deref().map(str::trim);
        let mut since = 0;
        loop {
            let path = format!("/api/v1/events?since={since}&limit=10000");
            // A daemon that is down (killed by the test) has nothing to say.
            let Some(body) = blocking_get(&self.url, &path, token) else { return };
            let page: Value = serde_json::from_str(&body).expect("an events page");
            let events = page["events"].as_array().cloned().unwrap_or_default();
            for event in &events {
                let errors: Vec<String> = events_validator().iter_errors(event).map(|e| e.to_string()).collect();
                assert!(
                    errors.is_empty(),
                    "an event does not match docs/api/events.schema.json: {}\nevent: {event}",
                    errors.join("; ")
                );
                // And what a client reads it as: the envelope and its type's struct.
                let envelope: Envelope = serde_json::from_value(event.clone())
                    .unwrap_or_else(|e| panic!("an event does not read as an Envelope: {e}\nevent: {event}"));
                if let Err(e) = envelope.payload() {
                    panic!("an event's data does not read as its type's struct: {e}\nevent: {event}");
                }
            }
            since = page["next"].as_u64().expect("next");
            if events.len() < 10000 {
                return;
            }
        }
    }
}

/// The event's data as its type's struct; panics naming the event if it
/// does not read (the schema check of every event would fail too).
pub fn payload(e: &Envelope) -> EventData {
    e.payload().unwrap_or_else(|err| panic!("event {} ({}) does not read as its type: {err}: {e:?}", e.seq, e.kind))
}

/// Every event's payload, in order.
pub fn payloads(events: &[Envelope]) -> Vec<EventData> {
    events.iter().map(payload).collect()
}

/// The events of one type.
pub fn of_kind(events: &[Envelope], kind: EventType) -> Vec<&Envelope> {
    events.iter().filter(|e| e.kind == kind).collect()
}

/// The payloads of the events of one `EventData` variant, in order, with
/// the envelope of each: `events_of!(&events, CommandRan)` is a
/// `Vec<(&Envelope, CommandRan)>`.
macro_rules! events_of {
    ($events:expr, $variant:ident) => {
        $events
            .iter()
            .filter(|e| e.kind == bosun_proto::EventType::$variant)
            .map(|e| match $crate::common::payload(e) {
                bosun_proto::EventData::$variant(data) => (e, data),
                other => unreachable!("a {} event read as {other:?}", e.kind),
            })
            .collect::<Vec<_>>()
    };
}
#[allow(unused_imports)]
pub(crate) use events_of;

/// The payloads of one `EventData` variant, in order, without their
/// envelopes: `datas_of!(&events, ActorRestarted)` is a `Vec<ActorRestarted>`.
macro_rules! datas_of {
    ($events:expr, $variant:ident) => {
        $crate::common::events_of!($events, $variant).into_iter().map(|(_, data)| data).collect::<Vec<_>>()
    };
}
#[allow(unused_imports)]
pub(crate) use datas_of;

/// One event's payload as the variant it must be: `data_of!(e, ApprovalResolved)`.
macro_rules! data_of {
    ($event:expr, $variant:ident) => {
        match $crate::common::payload($event) {
            bosun_proto::EventData::$variant(data) => data,
            other => panic!("expected a {} event, got {other:?}", stringify!($variant)),
        }
    };
}
#[allow(unused_imports)]
pub(crate) use data_of;

/// The turn an event is about, if it is about one (approval events carry it
/// in their approval).
pub fn turn_of(e: &Envelope) -> Option<String> {
    payload(e).turn_id().map(|t| t.as_str().to_string())
}

/// The first event of this type about this turn.
pub fn event_of_turn<'a>(events: &'a [Envelope], kind: EventType, turn: &str) -> Option<&'a Envelope> {
    events.iter().find(|e| e.kind == kind && turn_of(e).as_deref() == Some(turn))
}

pub fn is_turn_completed(e: &Envelope, turn: &str) -> bool {
    e.kind == EventType::TurnCompleted && matches!(payload(e), EventData::TurnCompleted(done) if done.turn_id == turn)
}

/// The turn's `turn:completed`, if it is among `events`.
pub fn turn_completed(events: &[Envelope], turn: &str) -> Option<TurnCompleted> {
    datas_of!(events, TurnCompleted).into_iter().find(|done| done.turn_id == turn)
}

/// A turn's stream chunks, in order.
pub fn chunks(events: &[Envelope], turn: &str) -> Vec<StreamChunk> {
    datas_of!(events, StreamChunk).into_iter().filter(|c| c.turn_id == turn).collect()
}

/// The text of a turn's stream chunks, in index order, checking indexes run 0.. without gap or duplicate.
pub fn turn_text(events: &[Envelope], turn: &str, kind: Option<ChunkKind>) -> String {
    let chunks = chunks(events, turn);
    for (i, c) in chunks.iter().enumerate() {
        assert_eq!(c.index, i as u64, "chunk indexes must run 0.. without gap: {c:?}");
    }
    chunks.iter().filter(|c| kind.is_none_or(|k| c.kind == k)).map(|c| c.text.as_str()).collect()
}

/// Seqs must be strictly increasing.
pub fn assert_increasing(events: &[Envelope]) {
    for w in events.windows(2) {
        assert!(w[0].seq < w[1].seq, "seq not increasing: {:?} then {:?}", w[0], w[1]);
    }
}

/// The seqs of these events, in order.
pub fn seqs(events: &[Envelope]) -> Vec<u64> {
    events.iter().map(|e| e.seq).collect()
}

pub type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub async fn ws_connect(daemon: &Daemon) -> Ws {
    let (ws, _) = tokio_tungstenite::connect_async(daemon.ws_url()).await.expect("ws connect");
    ws
}

/// After the daemon's close frame: reads on until the socket ends, as a
/// client should (the WebSocket library sends its reply to the close while
/// it is polled), so the daemon hears our half of the closing handshake.
pub async fn hear_the_close_out<S>(ws: &mut S)
where
    S: futures::Stream + Unpin,
{
    let rest = async { while ws.next().await.is_some() {} };
    tokio::time::timeout(Duration::from_secs(10), rest).await.expect("the socket ends after the close");
}

/// Sends a frame as JSON: raw, so a test can send what no `ClientOp` is.
pub async fn ws_send(ws: &mut Ws, value: Value) {
    ws.send(Message::text(value.to_string())).await.expect("ws send");
}

/// The next frame as raw JSON (skipping pings; a binary frame is read as
/// MessagePack), or None on timeout or close: for tests of the wire itself.
pub async fn ws_next(ws: &mut Ws, timeout: Duration) -> Option<Value> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let msg = tokio::time::timeout(left, ws.next()).await.ok()??.ok()?;
        match msg {
            Message::Text(t) => return Some(serde_json::from_str(&t).expect("json frame")),
            Message::Binary(b) => return Some(rmp_serde::from_slice(&b).expect("msgpack frame")),
            Message::Close(_) => return None,
            _ => continue,
        }
    }
}

/// The next frame, typed, or None on timeout or close.
pub async fn ws_next_frame(ws: &mut Ws, timeout: Duration) -> Option<ServerFrame> {
    let frame = ws_next(ws, timeout).await?;
    Some(serde_json::from_value(frame.clone()).unwrap_or_else(|e| panic!("not a server frame ({e}): {frame}")))
}

/// The next event frame, skipping control frames other than errors (an
/// error frame fails the test), or None on timeout or close.
pub async fn ws_next_event(ws: &mut Ws, timeout: Duration) -> Option<Envelope> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match ws_next_frame(ws, left).await? {
            ServerFrame::Event(e) => return Some(e),
            ServerFrame::Control(Control::Error { error }) => panic!("an error frame among the events: {error:?}"),
            ServerFrame::Control(_) => continue,
        }
    }
}

/// The next frame, which must be an error frame; its error.
pub async fn ws_error(ws: &mut Ws, timeout: Duration) -> ErrorDetail {
    match ws_next_frame(ws, timeout).await {
        Some(ServerFrame::Control(Control::Error { error })) => error,
        other => panic!("expected an error frame, got {other:?}"),
    }
}

/// Subscribes and returns the `subscribed` answer's head.
pub async fn ws_subscribe(ws: &mut Ws, topics: &[&str], since: u64) -> u64 {
    let op = bosun_proto::ClientOp::Subscribe { topics: topics.iter().map(|t| t.to_string()).collect(), since };
    ws.send(Message::text(serde_json::to_string(&op).expect("a subscribe op"))).await.expect("ws send");
    match ws_next_frame(ws, Duration::from_secs(10)).await {
        Some(ServerFrame::Control(Control::Subscribed { head, .. })) => head,
        other => panic!("expected subscribed, got {other:?}"),
    }
}

/// Runs the CLI against `d` with an empty HOME, so only `--data-dir` can
/// give it a credential.
pub fn bosun(d: &Daemon, home: &Path, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .env("BOSUN_URL", &d.url)
        .env("HOME", home)
        .env_remove("XDG_DATA_HOME")
        .env_remove("BOSUN_DATA_DIR")
        .env_remove("BOSUN_TOKEN")
        .stdin(Stdio::null())
        .output()
        .expect("run bosun")
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("bosun-test").tempdir().expect("tempdir")
}

/// Waits (up to 20 s) until a live process's command line mentions `needle`.
pub async fn wait_process_running(needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while processes_with(needle).is_empty() {
        assert!(Instant::now() < deadline, "no process {needle:?} ever started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits (up to 5 s: a killed process tree takes a moment to be reaped)
/// until no live process's command line mentions `needle`.
pub async fn wait_process_gone(needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = processes_with(needle);
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "process left behind: {left:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Command lines of live processes that mention `needle` (from /proc, so no
/// extra tool is needed); zombies do not count.
pub fn processes_with(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let zombie = std::fs::read_to_string(entry.path().join("stat")).is_ok_and(|s| s.contains(") Z "));
        if cmdline.contains(needle) && !zombie {
            found.push(cmdline);
        }
    }
    found
}

/// A repository at `dir` on branch `main` with one commit holding `files`
/// (path, content; parent dirs are made).
pub fn repo_with(dir: &Path, files: &[(&str, &str)]) -> PathBuf {
    std::fs::create_dir_all(dir).expect("create the repo dir");
    git(dir, &["init", "--quiet", "-b", "main"]);
    for (path, content) in files {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create a dir in the repo");
        }
        std::fs::write(&path, content).expect("write a file in the repo");
    }
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "--quiet", "-m", "first"]);
    dir.to_path_buf()
}

/// Runs git in `dir` as a test identity; panics on failure; its stdout, trimmed.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.name=Test", "-c", "user.email=test@example.com"])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run git");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
