//! tmux through control mode (`tmux -C`): one long-lived client per server
//! socket, commands on its stdin, replies framed by `%begin`/`%end`/`%error`.
//! Pane output arrives on the same stream as `%output` lines and is handed
//! to subscribers ([`Tmux::subscribe`]).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{broadcast, oneshot, Mutex};

use crate::control::{
    check_spawn_request, Capabilities, Direction, Discovery, Pane, PaneId, PaneInfo, Placement, RiskFlag, SendMode,
    SpawnRequest, TerminalControl, TerminalKind,
};
use crate::error::{Result, TermError};
use crate::runner::{find_on_path, CommandRunner, Invocation, IpcConfig};

const KIND: TerminalKind = TerminalKind::Tmux;

/// Which tmux server: the user's default, `-L NAME` or `-S PATH`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TmuxSocket {
    #[default]
    Default,
    Name(String),
    Path(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TmuxConfig {
    pub program: PathBuf,
    pub socket: TmuxSocket,
    /// The session created when a spawn finds no server.
    pub session: String,
    /// `-f FILE` for a server we start (none: tmux's own default).
    pub config_file: Option<PathBuf>,
    pub ipc: IpcConfig,
}

impl Default for TmuxConfig {
    fn default() -> Self {
        TmuxConfig {
            program: PathBuf::from("tmux"),
            socket: TmuxSocket::Default,
            session: "bosun".into(),
            config_file: None,
            ipc: IpcConfig::default(),
        }
    }
}

/// Bytes a pane printed, as `%output` carried them (unescaped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaneOutput {
    pub pane: PaneId,
    pub bytes: Vec<u8>,
}

pub struct Tmux {
    config: TmuxConfig,
    runner: CommandRunner,
    connection: Mutex<Option<Arc<ControlClient>>>,
    output: broadcast::Sender<PaneOutput>,
    buffer_counter: AtomicU64,
}

impl Tmux {
    pub fn new(config: TmuxConfig) -> Self {
        let runner = CommandRunner::new(KIND.name(), config.ipc);
        let (output, _) = broadcast::channel(4096);
        Tmux { config, runner, connection: Mutex::new(None), output, buffer_counter: AtomicU64::new(0) }
    }

    /// The output of every pane in the session the control client is
    /// attached to (tmux sends `%output` for that session's panes only),
    /// while it is connected: from the first call on, and again after tmux
    /// restarts on the next call; [`Tmux::connect`] makes sure. A subscriber
    /// that lags loses the oldest chunks (`RecvError::Lagged`), never slows
    /// tmux.
    pub fn subscribe(&self) -> broadcast::Receiver<PaneOutput> {
        self.output.subscribe()
    }

    /// Attaches the control client if it is not, without starting a server.
    pub async fn connect(&self) -> Result<()> {
        self.client(false).await.map(drop)
    }

    fn socket_args(&self) -> Vec<String> {
        match &self.config.socket {
            TmuxSocket::Default => vec![],
            TmuxSocket::Name(name) => vec!["-L".into(), name.clone()],
            TmuxSocket::Path(path) => vec!["-S".into(), path.to_string_lossy().into_owned()],
        }
    }

    fn endpoint(&self, pane: &PaneId) -> String {
        match &self.config.socket {
            TmuxSocket::Default => format!("tmux://{pane}"),
            TmuxSocket::Name(name) => format!("tmux://{name}/{pane}"),
            TmuxSocket::Path(path) => {
                let path = path.to_string_lossy();
                let encoded = percent_encoding::utf8_percent_encode(&path, percent_encoding::NON_ALPHANUMERIC);
                format!("tmux://{encoded}/{pane}")
            }
        }
    }

    /// The connected control client, attaching one if needed. `start_server`
    /// creates the configured session when there is no server to attach to.
    async fn client(&self, start_server: bool) -> Result<Arc<ControlClient>> {
        let mut slot = self.connection.lock().await;
        if let Some(client) = slot.as_ref() {
            if client.alive.load(Ordering::Acquire) {
                return Ok(client.clone());
            }
        }
        *slot = None;
        if find_on_path(&self.config.program).is_none() {
            return Err(KIND.not_supported(&format!("{} (not on PATH)", self.config.program.display())));
        }
        let client = match ControlClient::attach(&self.config, self.socket_args(), self.output.clone()).await {
            Ok(client) => client,
            Err(AttachError::NoServer(reason)) if start_server => {
                self.start_server().await?;
                ControlClient::attach(&self.config, self.socket_args(), self.output.clone())
                    .await
                    .map_err(|e| e.into_error(&reason))?
            }
            Err(e) => return Err(e.into_error("")),
        };
        let client = Arc::new(client);
        *slot = Some(client.clone());
        Ok(client)
    }

    async fn start_server(&self) -> Result<()> {
        let mut invocation = Invocation::new(&self.config.program).args(self.socket_args());
        if let Some(file) = &self.config.config_file {
            invocation = invocation.arg("-f").arg(file);
        }
        let invocation = invocation
            .args(["new-session", "-d", "-s", &self.config.session, "-x", "200", "-y", "50"])
            .not_idempotent();
        let mut attempt = 1;
        loop {
            let output = self.runner.run(&invocation).await?;
            let stderr = output.stderr_text();
            if output.success() || stderr.contains("duplicate session") {
                return Ok(());
            }
            // Our failed attach started a server that exits for want of a
            // session; a new-session that meets it as it goes creates
            // nothing, so asking again is safe.
            let met_a_dying_server = stderr.contains("server exited unexpectedly");
            if !met_a_dying_server || attempt >= 5 {
                return Err(TermError::Ipc(format!("tmux new-session failed: {stderr}")));
            }
            attempt += 1;
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Runs one tmux command line; its output lines, or `%error`'s text as
    /// `Ipc` (or `PaneGone` if tmux could not find the pane).
    async fn command(&self, line: &str, start_server: bool) -> Result<Vec<String>> {
        let client = match self.client(start_server).await {
            Ok(client) => client,
            // No server: no pane can exist.
            Err(TermError::Ipc(reason)) if reason.contains(NO_SERVER_MARK) => return Err(TermError::PaneGone),
            Err(e) => return Err(e),
        };
        let receiver = client.send(line).await?;
        match tokio::time::timeout(self.config.ipc.timeout, receiver).await {
            Ok(Ok(Ok(lines))) => Ok(lines),
            Ok(Ok(Err(message))) => Err(classify_tmux_error(message)),
            Ok(Err(_closed)) => Err(TermError::Ipc("the tmux control client exited".into())),
            Err(_elapsed) => {
                // Replies from a client this late cannot be trusted to line
                // up with the queue any more: start afresh next call.
                client.alive.store(false, Ordering::Release);
                Err(TermError::Timeout {
                    what: format!("tmux {}", first_word(line)),
                    after: self.config.ipc.timeout,
                    attempts: 1,
                })
            }
        }
    }

    fn next_buffer_name(&self) -> String {
        format!("bosun-{}-{}", std::process::id(), self.buffer_counter.fetch_add(1, Ordering::Relaxed))
    }

    async fn pane_info(&self, pane: &PaneId) -> Result<PaneInfo> {
        check_pane_id(pane)?;
        let format = "#{pane_id}\t#{pane_pid}\t#{pane_dead}\t#{?#{&&:#{pane_active},#{window_active}},1,0}\t#{pane_current_path}\t#{pane_title}";
        let lines = self.command(&format!("list-panes -t {} -F {}", pane, quote(format)), false).await?;
        let line = lines.iter().find(|l| l.split('\t').next() == Some(pane.as_str())).ok_or(TermError::PaneGone)?;
        let fields: Vec<&str> = line.splitn(6, '\t').collect();
        if fields.get(2) == Some(&"1") {
            return Err(TermError::PaneGone);
        }
        Ok(PaneInfo {
            id: pane.clone(),
            endpoint: self.endpoint(pane),
            pid: fields.get(1).and_then(|p| p.parse().ok()),
            focused: fields.get(3).map(|f| *f == "1"),
            cwd: fields.get(4).filter(|c| !c.is_empty()).map(PathBuf::from),
            title: fields.get(5).map(|t| t.to_string()),
        })
    }
}

/// What tmux says when there is no server (or no session) to attach to.
const NO_SERVER_MARK: &str = "no tmux server";

fn classify_tmux_error(message: String) -> TermError {
    if message.contains("can't find pane") || message.contains("can't find window") {
        TermError::PaneGone
    } else {
        TermError::Ipc(message)
    }
}

fn first_word(line: &str) -> &str {
    line.split(' ').next().unwrap_or(line)
}

/// tmux pane ids are `%` and digits; anything else would be parsed by tmux
/// as a different kind of target (or an injected command).
fn check_pane_id(pane: &PaneId) -> Result<()> {
    let digits = pane.as_str().strip_prefix('%').unwrap_or("");
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(TermError::Invalid(format!("{pane:?} is not a tmux pane id (%N)")));
    }
    Ok(())
}

/// One argument for a tmux command line: in double quotes, where tmux
/// expands nothing but backslash escapes and `$NAME`, so those are escaped
/// and every control character is written as an octal escape (a raw newline
/// would end the command line).
pub fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '$' => out.push_str("\\$"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => out.push_str(&format!("\\{:03o}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// tmux expands formats in a start directory; `##` is a literal `#`.
fn escape_format(text: &str) -> String {
    text.replace('#', "##")
}

/// `%output` data: bytes below space and backslash are `\ooo`.
pub fn unescape_output(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut i = 0;
    while i < data.len() {
        if data[i] == b'\\' && i + 4 <= data.len() && data[i + 1..i + 4].iter().all(|b| (b'0'..=b'7').contains(b)) {
            let value =
                (data[i + 1] - b'0') as u32 * 64 + (data[i + 2] - b'0') as u32 * 8 + (data[i + 3] - b'0') as u32;
            out.push(value as u8);
            i += 4;
        } else {
            out.push(data[i]);
            i += 1;
        }
    }
    out
}

enum AttachError {
    NoServer(String),
    Other(TermError),
}

impl AttachError {
    fn into_error(self, context: &str) -> TermError {
        match self {
            AttachError::NoServer(reason) => TermError::Ipc(format!("{NO_SERVER_MARK}: {reason}{context}")),
            AttachError::Other(e) => e,
        }
    }
}

type Reply = std::result::Result<Vec<String>, String>;

#[derive(Default)]
struct Pending {
    waiting: VecDeque<oneshot::Sender<Reply>>,
    closed: bool,
}

/// One `tmux -C attach` process and the task reading it.
struct ControlClient {
    stdin: Mutex<ChildStdin>,
    pending: Arc<StdMutex<Pending>>,
    alive: Arc<AtomicBool>,
    // Held for kill_on_drop: the client dies with the last reference.
    _child: Child,
}

impl ControlClient {
    async fn attach(
        config: &TmuxConfig,
        socket_args: Vec<String>,
        output: broadcast::Sender<PaneOutput>,
    ) -> std::result::Result<Self, AttachError> {
        let mut child = Command::new(&config.program)
            .args(&socket_args)
            .args(["-C", "attach-session"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                AttachError::Other(KIND.not_supported(&format!("running {} ({e})", config.program.display())))
            })?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(AttachError::Other(TermError::Ipc("tmux control client without pipes".into())));
        };
        let pending = Arc::new(StdMutex::new(Pending::default()));
        let alive = Arc::new(AtomicBool::new(true));
        let (ready_tx, ready_rx) = oneshot::channel();
        tokio::spawn(read_control_stream(BufReader::new(stdout), pending.clone(), alive.clone(), output, ready_tx));
        match tokio::time::timeout(config.ipc.timeout, ready_rx).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(reason))) => return Err(AttachError::NoServer(reason)),
            Ok(Err(_)) => return Err(AttachError::NoServer("the control client exited at once".into())),
            Err(_) => {
                return Err(AttachError::Other(TermError::Timeout {
                    what: "tmux -C attach-session".into(),
                    after: config.ipc.timeout,
                    attempts: 1,
                }))
            }
        }
        Ok(ControlClient { stdin: Mutex::new(stdin), pending, alive, _child: child })
    }

    /// Queues a reply slot and writes the command; the slot and the write
    /// are ordered under the stdin lock, so replies (which come in command
    /// order) match their slots.
    async fn send(&self, line: &str) -> Result<oneshot::Receiver<Reply>> {
        if line.contains('\n') {
            return Err(TermError::Invalid("a tmux command line with a newline".into()));
        }
        let mut stdin = self.stdin.lock().await;
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = self.pending.lock().map_err(|_| TermError::Ipc("tmux reply queue poisoned".into()))?;
            if pending.closed {
                return Err(TermError::Ipc("the tmux control client exited".into()));
            }
            pending.waiting.push_back(tx);
        }
        let mut bytes = line.as_bytes().to_vec();
        bytes.push(b'\n');
        if let Err(e) = stdin.write_all(&bytes).await {
            self.alive.store(false, Ordering::Release);
            return Err(TermError::Ipc(format!("writing to the tmux control client: {e}")));
        }
        Ok(rx)
    }
}

struct Block {
    number: String,
    ours: bool,
    lines: Vec<String>,
}

/// One thing the control stream said, as far as we act on it.
#[derive(Debug, PartialEq, Eq)]
enum ControlEvent {
    /// A command's reply: `ours` for commands this client wrote (flag 1),
    /// otherwise the attach command's own; `Err` carries `%error`'s text.
    Reply {
        ours: bool,
        result: Reply,
    },
    Output(PaneOutput),
    Exit(String),
}

/// The control-mode stream, a line at a time. Inside a `%begin` block every
/// line is reply text until the `%end`/`%error` with the block's number
/// (tmux sends no notifications inside a block), so a reply line that
/// looks like a guard or a notification is not taken for one.
#[derive(Default)]
struct ControlParser {
    block: Option<Block>,
}

impl ControlParser {
    fn line(&mut self, raw: &[u8]) -> Option<ControlEvent> {
        if let Some(current) = self.block.as_mut() {
            let (end_number, is_error) = match guard_line(raw, "%end ") {
                Some((number, _)) => (Some(number), false),
                None => (guard_line(raw, "%error ").map(|(number, _)| number), true),
            };
            if end_number.as_deref() != Some(current.number.as_str()) {
                current.lines.push(String::from_utf8_lossy(raw).into_owned());
                return None;
            }
            let finished = self.block.take()?;
            let result = if is_error { Err(finished.lines.join("\n")) } else { Ok(finished.lines) };
            return Some(ControlEvent::Reply { ours: finished.ours, result });
        }
        if let Some((number, flags)) = guard_line(raw, "%begin ") {
            self.block = Some(Block { number, ours: flags == "1", lines: Vec::new() });
            None
        } else if let Some(rest) = raw.strip_prefix(b"%output ") {
            let space = rest.iter().position(|&b| b == b' ')?;
            let pane = PaneId::new(String::from_utf8_lossy(&rest[..space]).into_owned());
            Some(ControlEvent::Output(PaneOutput { pane, bytes: unescape_output(&rest[space + 1..]) }))
        } else if raw == b"%exit" || raw.starts_with(b"%exit ") {
            Some(ControlEvent::Exit(String::from_utf8_lossy(raw).into_owned()))
        } else {
            None
        }
    }
}

async fn read_control_stream(
    mut reader: BufReader<tokio::process::ChildStdout>,
    pending: Arc<StdMutex<Pending>>,
    alive: Arc<AtomicBool>,
    output: broadcast::Sender<PaneOutput>,
    ready: oneshot::Sender<std::result::Result<(), String>>,
) {
    let mut ready = Some(ready);
    let mut parser = ControlParser::default();
    let mut raw = Vec::new();
    loop {
        raw.clear();
        match reader.read_until(b'\n', &mut raw).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if raw.last() == Some(&b'\n') {
            raw.pop();
        }
        match parser.line(&raw) {
            Some(ControlEvent::Reply { ours: true, result }) => {
                let slot = pending.lock().ok().and_then(|mut p| p.waiting.pop_front());
                if let Some(slot) = slot {
                    // A waiter that timed out has gone; its reply with it.
                    let _ = slot.send(result);
                }
            }
            Some(ControlEvent::Reply { ours: false, result }) => {
                // The attach command's own block: attached or not.
                if let Some(ready) = ready.take() {
                    let _ = ready.send(result.map(drop));
                }
            }
            Some(ControlEvent::Output(chunk)) => {
                // No subscriber is fine: the output is not ours to keep.
                let _ = output.send(chunk);
            }
            Some(ControlEvent::Exit(reason)) => {
                if let Some(ready) = ready.take() {
                    let _ = ready.send(Err(reason));
                }
                break;
            }
            None => {}
        }
    }
    alive.store(false, Ordering::Release);
    if let Some(ready) = ready.take() {
        let _ = ready.send(Err("the control client ended before attaching".into()));
    }
    if let Ok(mut pending) = pending.lock() {
        pending.closed = true;
        // Dropping the senders tells every waiter the client is gone.
        pending.waiting.clear();
    }
}

/// `%begin TIME NUMBER FLAGS` (or `%end`, `%error`): the number and flags.
fn guard_line(line: &[u8], prefix: &str) -> Option<(String, String)> {
    let rest = line.strip_prefix(prefix.as_bytes())?;
    let text = std::str::from_utf8(rest).ok()?;
    let mut parts = text.split(' ');
    let _time = parts.next()?;
    let number = parts.next()?.to_string();
    let flags = parts.next().unwrap_or("0").to_string();
    Some((number, flags))
}

impl TerminalControl for Tmux {
    fn kind(&self) -> TerminalKind {
        KIND
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            spawn: true,
            split: true,
            focus: true,
            send_text: true,
            read_text: true,
            clipboard_read: true,
            clipboard_write: true,
            cwd_sync: true,
            bracketed_paste: true,
            max_clipboard_kb: 75,
            requires_opt_in: false,
            notes: "Control mode (tmux -C) on one client per server; Window and Tab both open a tmux window. \
                    OSC 7 from the shell is seen in the %output stream. The clipboard is tmux's paste buffer; \
                    a write is also sent as OSC 52 to every terminal attached to the pane's session."
                .into(),
            risk_flags: vec![RiskFlag::InjectsKeystrokes, RiskFlag::ReadsScreen, RiskFlag::SocketGrantsFullControl],
        }
    }

    fn discover(&self) -> BoxFuture<'_, Discovery> {
        Box::pin(async move {
            let mut discovery = Discovery::default();
            if find_on_path(&self.config.program).is_none() {
                discovery.notes.push(format!("{} is not on PATH", self.config.program.display()));
                return discovery;
            }
            discovery.installed = true;
            let version = Invocation::new(&self.config.program).arg("-V");
            match self.runner.run_checked(&version).await {
                Ok(out) => discovery.version = Some(out.stdout_text().trim().trim_start_matches("tmux ").to_string()),
                Err(e) => discovery.notes.push(format!("tmux -V: {e}")),
            }
            match self.command("display-message -p \"#{version}\"", false).await {
                Ok(_) => {
                    discovery.running = true;
                    discovery.reachable = true;
                }
                Err(TermError::PaneGone) => discovery.notes.push("no tmux server runs on this socket".into()),
                Err(e) => {
                    discovery.running = true;
                    discovery.notes.push(format!("the server did not answer: {e}"));
                }
            }
            discovery
        })
    }

    fn spawn(&self, request: SpawnRequest) -> BoxFuture<'_, Result<Pane>> {
        Box::pin(async move {
            check_spawn_request(&request)?;
            let mut line = match &request.placement {
                Placement::Window | Placement::Tab => "new-window".to_string(),
                Placement::Split { target, direction } => {
                    check_pane_id(target)?;
                    let flag = match direction {
                        Direction::Right => "-h",
                        Direction::Down => "-v",
                    };
                    format!("split-window {flag} -t {target}")
                }
            };
            line.push_str(" -P -F \"#{pane_id} #{pane_pid}\"");
            if let Some(cwd) = &request.cwd {
                line.push_str(&format!(" -c {}", quote(&escape_format(&cwd.to_string_lossy()))));
            }
            for (key, value) in &request.env {
                line.push_str(&format!(" -e {}", quote(&format!("{key}={value}"))));
            }
            if !request.command.is_empty() {
                line.push_str(" --");
                for arg in &request.command {
                    line.push(' ');
                    line.push_str(&quote(arg));
                }
            }
            let start_server = !matches!(request.placement, Placement::Split { .. });
            let lines = self.command(&line, start_server).await?;
            let first = lines.first().ok_or_else(|| TermError::Ipc("tmux printed no pane id".into()))?;
            let mut parts = first.split(' ');
            let id = PaneId::new(parts.next().unwrap_or_default());
            check_pane_id(&id).map_err(|_| TermError::Ipc(format!("tmux printed {first:?} for the new pane")))?;
            let pid = parts.next().and_then(|p| p.parse().ok());
            Ok(Pane { endpoint: self.endpoint(&id), id, pid, title: None })
        })
    }

    fn focus<'a>(&'a self, pane: &'a PaneId) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            check_pane_id(pane)?;
            self.command(&format!("select-window -t {pane}"), false).await?;
            self.command(&format!("select-pane -t {pane}"), false).await.map(drop)
        })
    }

    fn send_text<'a>(&'a self, pane: &'a PaneId, text: &'a str, mode: SendMode) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            check_pane_id(pane)?;
            if mode.paste && !text.is_empty() {
                // paste-buffer -p adds the markers only if the program asked
                // for bracketed paste, which is the point: a shell that did
                // not gets plain text, as a terminal would give it.
                let buffer = self.next_buffer_name();
                self.command(&format!("set-buffer -b {buffer} -- {}", quote(text)), false).await?;
                self.command(&format!("paste-buffer -p -r -d -b {buffer} -t {pane}"), false).await?;
            } else if !text.is_empty() {
                self.command(&format!("send-keys -l -t {pane} -- {}", quote(text)), false).await?;
            }
            if mode.enter {
                self.command(&format!("send-keys -t {pane} Enter"), false).await?;
            }
            Ok(())
        })
    }

    fn read_text<'a>(&'a self, pane: &'a PaneId) -> BoxFuture<'a, Result<String>> {
        Box::pin(async move {
            check_pane_id(pane)?;
            let lines = self.command(&format!("capture-pane -p -J -t {pane}"), false).await?;
            Ok(lines.join("\n"))
        })
    }

    fn close<'a>(&'a self, pane: &'a PaneId) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            check_pane_id(pane)?;
            self.command(&format!("kill-pane -t {pane}"), false).await.map(drop)
        })
    }

    fn describe<'a>(&'a self, pane: &'a PaneId) -> BoxFuture<'a, Result<PaneInfo>> {
        Box::pin(self.pane_info(pane))
    }

    fn clipboard_write<'a>(&'a self, pane: &'a PaneId, text: &'a str) -> BoxFuture<'a, Result<usize>> {
        Box::pin(async move {
            check_pane_id(pane)?;
            // The terminals attached to the pane's session; our own control
            // client has no terminal to send OSC 52 to.
            let session = self.command(&format!("display-message -p -t {pane} \"#{{session_id}}\""), false).await?;
            let session = session.first().cloned().unwrap_or_default();
            let clients = self
                .command(
                    &format!("list-clients -F {}", quote("#{client_name}\t#{client_control_mode}\t#{session_id}")),
                    false,
                )
                .await?;
            let screens: Vec<String> = clients
                .iter()
                .filter_map(|line| {
                    let mut fields = line.split('\t');
                    let (name, control, of) = (fields.next()?, fields.next()?, fields.next()?);
                    (control == "0" && of == session).then(|| name.to_string())
                })
                .collect();
            // One new buffer (what prefix-] pastes); `-w` sends it to the
            // named client's terminal as OSC 52 too. Each further terminal
            // needs its own `set-buffer -w`, whose duplicate buffer goes again.
            match screens.split_first() {
                None => {
                    self.command(&format!("set-buffer -- {}", quote(text)), false).await?;
                }
                Some((first, rest)) => {
                    self.command(&format!("set-buffer -w -t {} -- {}", quote(first), quote(text)), false).await?;
                    for client in rest {
                        self.command(&format!("set-buffer -w -t {} -- {}", quote(client), quote(text)), false).await?;
                        self.command("delete-buffer", false).await?;
                    }
                }
            }
            Ok(screens.len())
        })
    }

    fn clipboard_read<'a>(&'a self, pane: &'a PaneId) -> BoxFuture<'a, Result<String>> {
        Box::pin(async move {
            check_pane_id(pane)?;
            // show-buffer's lines come escaped in control mode; save-buffer
            // writes the bytes, into a directory only we can read.
            let dir = tempfile::Builder::new()
                .prefix("bosun-tmux-buffer")
                .tempdir()
                .map_err(|e| TermError::Ipc(format!("a directory for the buffer: {e}")))?;
            let file = dir.path().join("buffer");
            let path = file.to_str().ok_or_else(|| TermError::Ipc("the temporary directory is not UTF-8".into()))?;
            match self.command(&format!("save-buffer -- {}", quote(path)), false).await {
                Ok(_) => {}
                Err(TermError::Ipc(message)) if message.contains("no buffers") => return Ok(String::new()),
                Err(e) => return Err(e),
            }
            let bytes =
                tokio::fs::read(&file).await.map_err(|e| TermError::Ipc(format!("reading the saved buffer: {e}")))?;
            Ok(String::from_utf8_lossy(&bytes).into_owned())
        })
    }

    fn focused_pane(&self) -> BoxFuture<'_, Result<Option<PaneId>>> {
        Box::pin(async move {
            let lines = match self.command("display-message -p \"#{pane_id}\"", false).await {
                Ok(lines) => lines,
                Err(TermError::PaneGone) => return Ok(None),
                Err(e) => return Err(e),
            };
            Ok(lines.first().filter(|l| !l.is_empty()).map(|l| PaneId::new(l.clone())))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_escapes_what_tmux_would_interpret() {
        assert_eq!(quote("plain"), "\"plain\"");
        assert_eq!(quote("a\"b\\c$HOME"), "\"a\\\"b\\\\c\\$HOME\"");
        assert_eq!(quote("l1\nl2\x1b"), "\"l1\\012l2\\033\"");
        assert_eq!(quote("it's; #{x} ~"), "\"it's; #{x} ~\"");
    }

    #[test]
    fn output_unescaping() {
        assert_eq!(unescape_output(b"a\\015\\012b\\134"), b"a\r\nb\\");
        assert_eq!(unescape_output(b"trailing\\01"), b"trailing\\01");
        assert_eq!(unescape_output(b"\\"), b"\\");
    }

    #[test]
    fn pane_ids_are_checked() {
        assert!(check_pane_id(&PaneId::new("%12")).is_ok());
        for bad in ["", "%", "12", "%1;kill-server", "%1 ", "main:0"] {
            assert!(check_pane_id(&PaneId::new(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn control_stream_blocks_output_and_exit() {
        let mut parser = ControlParser::default();
        let mut feed = |line: &[u8]| parser.line(line);
        assert_eq!(feed(b"%begin 1 264 0"), None);
        assert_eq!(feed(b"%end 1 264 0"), Some(ControlEvent::Reply { ours: false, result: Ok(vec![]) }));
        assert_eq!(feed(b"%session-changed $0 main"), None);
        assert_eq!(feed(b"%begin 1 270 1"), None);
        // Reply text that looks like protocol lines is still reply text.
        assert_eq!(feed(b"%output %1 not output"), None);
        assert_eq!(feed(b"%end 1 999 1"), None);
        assert_eq!(feed(b"%exit"), None);
        assert_eq!(
            feed(b"%end 1 270 1"),
            Some(ControlEvent::Reply {
                ours: true,
                result: Ok(vec!["%output %1 not output".into(), "%end 1 999 1".into(), "%exit".into()])
            })
        );
        assert_eq!(feed(b"%begin 1 271 1"), None);
        assert_eq!(feed(b"can't find pane: %9"), None);
        assert_eq!(
            feed(b"%error 1 271 1"),
            Some(ControlEvent::Reply { ours: true, result: Err("can't find pane: %9".into()) })
        );
        assert_eq!(
            feed(b"%output %3 a\\033[0m\\015\\012"),
            Some(ControlEvent::Output(PaneOutput { pane: PaneId::new("%3"), bytes: b"a\x1b[0m\r\n".to_vec() }))
        );
        assert_eq!(feed(b"%output %3"), None, "no data field");
        assert_eq!(feed(b"%exiting"), None);
        assert_eq!(feed(b"%exit detached"), Some(ControlEvent::Exit("%exit detached".into())));
    }

    #[test]
    fn control_stream_never_panics_on_short_lines() {
        let alphabet: &[&[u8]] =
            &[b"%begin ", b"%end ", b"%error ", b"%output ", b"%exit", b"1 ", b"2", b" ", b"\\", b"7", b"\xff"];
        for a in alphabet {
            for b in alphabet {
                for c in alphabet {
                    let mut parser = ControlParser::default();
                    let line = [*a, *b, *c].concat();
                    parser.line(&line);
                    parser.line(b"%begin 1 2 1");
                    parser.line(&line);
                }
            }
        }
    }

    #[test]
    fn guard_lines() {
        assert_eq!(guard_line(b"%begin 1796 269 1", "%begin "), Some(("269".into(), "1".into())));
        assert_eq!(guard_line(b"%end 1796 269 0", "%begin "), None);
    }
}
