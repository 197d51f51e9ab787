//! kitty through its remote-control socket, spoken directly: one
//! `ESC P @kitty-cmd <json> ESC \` request per connection. (`kitty @` would
//! cost a Python start-up, 0.4–1 s, per call.)

use base64::Engine as _;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::path::PathBuf;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::control::{
    check_spawn_request, Capabilities, Direction, Discovery, Pane, PaneId, PaneInfo, Placement, RiskFlag, SendMode,
    SpawnRequest, TerminalControl, TerminalKind,
};
use crate::error::{Result, TermError};
use crate::process::process_alive;
use crate::runner::{find_on_path, CommandRunner, Invocation, IpcConfig};

const KIND: TerminalKind = TerminalKind::Kitty;
const PREFIX: &[u8] = b"\x1bP@kitty-cmd";
const SUFFIX: &[u8] = b"\x1b\\";
/// A reply larger than this (get-text of a huge scrollback) is refused
/// rather than buffered without end.
const MAX_REPLY: usize = 32 << 20;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct KittyConfig {
    /// kitty's `--listen-on` address (`unix:/path` or `unix:@abstract`);
    /// `None` takes `KITTY_LISTEN_ON` from the environment.
    pub listen_on: Option<String>,
    pub program: PathBuf,
    /// The protocol version we claim; kitty refuses commands newer than
    /// itself, and 0.26.5 is the oldest we test.
    pub protocol_version: [u32; 3],
    pub ipc: IpcConfig,
}

impl Default for KittyConfig {
    fn default() -> Self {
        KittyConfig {
            listen_on: None,
            program: PathBuf::from("kitty"),
            protocol_version: [0, 26, 5],
            ipc: IpcConfig::default(),
        }
    }
}

pub struct Kitty {
    config: KittyConfig,
    runner: CommandRunner,
}

/// One kitty window as `ls` describes it, with where it sits.
#[derive(Debug, Clone)]
struct WindowEntry {
    id: u64,
    pid: Option<u32>,
    title: Option<String>,
    cwd: Option<PathBuf>,
    /// Focused in kitty's own sense: the active window of the active tab
    /// of the OS window kitty last saw focused.
    focused: bool,
    tab_id: u64,
}

impl Kitty {
    pub fn new(config: KittyConfig) -> Self {
        let runner = CommandRunner::new(KIND.name(), config.ipc);
        Kitty { config, runner }
    }

    fn address(&self) -> Result<String> {
        self.config
            .listen_on
            .clone()
            .or_else(|| std::env::var("KITTY_LISTEN_ON").ok())
            .filter(|a| !a.is_empty())
            .ok_or_else(|| KIND.not_supported("remote control (no socket configured and KITTY_LISTEN_ON is not set)"))
    }

    async fn connect(&self) -> Result<UnixStream> {
        let address = self.address()?;
        let target = address
            .strip_prefix("unix:")
            .ok_or_else(|| KIND.not_supported(&format!("the address {address:?} (only unix: sockets)")))?
            .to_string();
        let connect = |target: String| async move {
            if let Some(name) = target.strip_prefix('@') {
                connect_abstract(name)
            } else {
                UnixStream::connect(&target).await
            }
        };
        // Nothing is sent before the connection is made, so a refused or
        // busy socket (kitty accepts slowly under load) is tried again.
        let attempts = self.config.ipc.attempts();
        let mut attempt = 1;
        loop {
            let result = tokio::time::timeout(self.config.ipc.timeout, connect(target.clone())).await;
            let error = match result {
                Ok(Ok(stream)) => return Ok(stream),
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(TermError::Ipc(format!("connecting to kitty at {address}: {e}")))
                }
                Ok(Err(e)) => TermError::Ipc(format!("connecting to kitty at {address}: {e}")),
                Err(_) => TermError::Timeout {
                    what: format!("connecting to kitty at {address}"),
                    after: self.config.ipc.timeout,
                    attempts: attempt,
                },
            };
            if attempt >= attempts {
                return Err(error);
            }
            attempt += 1;
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Sends one command; its `data` (or `Value::Null` for a command sent
    /// with `no_response`). kitty reports a missing window as an error
    /// naming the match, which becomes `PaneGone`.
    async fn call(&self, cmd: &str, payload: Value, expect_response: bool) -> Result<Value> {
        let request = json!({
            "cmd": cmd,
            "version": self.config.protocol_version,
            "no_response": !expect_response,
            "payload": payload,
        });
        let mut frame = PREFIX.to_vec();
        frame.extend(serde_json::to_vec(&request).map_err(|e| TermError::Invalid(e.to_string()))?);
        frame.extend_from_slice(SUFFIX);
        let timeout = self.config.ipc.timeout;
        let mut stream = self.connect().await?;
        let exchange = async {
            stream.write_all(&frame).await?;
            // Half-close: kitty reads to EOF before it answers.
            stream.shutdown().await?;
            if !expect_response {
                // Wait for kitty to hang up: it has then taken the command,
                // and the next connection does not race a half-read one
                // (which kitty answered with a reset).
                let mut sink = [0u8; 512];
                while stream.read(&mut sink).await? > 0 {}
                return Ok(None);
            }
            let mut reply = Vec::new();
            let mut chunk = [0u8; 16 * 1024];
            loop {
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    break;
                }
                reply.extend_from_slice(&chunk[..n]);
                if reply.len() > MAX_REPLY {
                    return Err(std::io::Error::other("kitty's reply is too large"));
                }
                if reply.starts_with(PREFIX) && reply.len() >= PREFIX.len() + SUFFIX.len() && reply.ends_with(SUFFIX) {
                    break;
                }
            }
            Ok(Some(reply))
        };
        let reply = match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(e)) => return Err(TermError::Ipc(format!("kitty {cmd}: {e}"))),
            Err(_) => return Err(TermError::Timeout { what: format!("kitty {cmd}"), after: timeout, attempts: 1 }),
        };
        let Some(reply) = reply else { return Ok(Value::Null) };
        parse_reply(&reply)
    }

    /// A read-only command, asked again when kitty closes the connection
    /// without a reply (seen under load) or times out.
    async fn query(&self, cmd: &str, payload: Value) -> Result<Value> {
        let mut attempt = 1;
        loop {
            match self.call(cmd, payload.clone(), true).await {
                Err(TermError::Ipc(message))
                    if (message.contains("(0 bytes") || message.starts_with(&format!("kitty {cmd}:")))
                        && attempt < self.config.ipc.attempts() => {}
                Err(TermError::Timeout { .. }) if attempt < self.config.ipc.attempts() => {}
                other => return other,
            }
            attempt += 1;
        }
    }

    async fn windows(&self) -> Result<Vec<WindowEntry>> {
        let data = self.query("ls", json!({})).await?;
        // kitty sends the listing as a JSON document inside a string.
        let listing: Value = match data {
            Value::String(text) => serde_json::from_str(&text).map_err(|e| TermError::Ipc(format!("kitty ls: {e}")))?,
            other => other,
        };
        Ok(flatten_listing(&listing))
    }

    /// The window, unless kitty no longer lists it or its process has
    /// ended (kitty keeps listing a closing window for a moment).
    async fn window(&self, pane: &PaneId) -> Result<WindowEntry> {
        let id = window_id(pane)?;
        let window = self.windows().await?.into_iter().find(|w| w.id == id).ok_or(TermError::PaneGone)?;
        match window.pid {
            Some(pid) if !process_alive(pid) => Err(TermError::PaneGone),
            _ => Ok(window),
        }
    }

    fn endpoint(pane: &PaneId) -> String {
        format!("kitty://window/{pane}")
    }
}

fn connect_abstract(name: &str) -> std::io::Result<UnixStream> {
    #[cfg(target_os = "linux")]
    {
        use std::os::linux::net::SocketAddrExt;
        let address = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
        let stream = std::os::unix::net::UnixStream::connect_addr(&address)?;
        stream.set_nonblocking(true)?;
        UnixStream::from_std(stream)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = name;
        Err(std::io::Error::other("abstract sockets exist only on Linux"))
    }
}

fn parse_reply(reply: &[u8]) -> Result<Value> {
    let body = reply.strip_prefix(PREFIX).and_then(|r| r.strip_suffix(SUFFIX)).ok_or_else(|| {
        let start = String::from_utf8_lossy(&reply[..reply.len().min(80)]).into_owned();
        TermError::Ipc(format!("kitty's reply is not a kitty-cmd frame ({} bytes: {start:?})", reply.len()))
    })?;
    let value: Value = serde_json::from_slice(body).map_err(|e| TermError::Ipc(format!("kitty's reply: {e}")))?;
    if value.get("ok").and_then(Value::as_bool) == Some(true) {
        return Ok(value.get("data").cloned().unwrap_or(Value::Null));
    }
    let error = value.get("error").and_then(Value::as_str).unwrap_or("kitty refused the command").to_string();
    if error.contains("No matching") {
        Err(TermError::PaneGone)
    } else {
        Err(TermError::Ipc(error))
    }
}

fn flatten_listing(listing: &Value) -> Vec<WindowEntry> {
    let mut windows = Vec::new();
    let flag = |v: &Value, name: &str| v.get(name).and_then(Value::as_bool).unwrap_or(false);
    // Without a window manager no OS window may have the focus; kitty's
    // last focused one is then the one input would go to.
    let any_os_focused = listing.as_array().into_iter().flatten().any(|os| flag(os, "is_focused"));
    for os_window in listing.as_array().into_iter().flatten() {
        let os_focused = if any_os_focused { flag(os_window, "is_focused") } else { flag(os_window, "last_focused") };
        for tab in os_window.get("tabs").and_then(Value::as_array).into_iter().flatten() {
            let tab_id = tab.get("id").and_then(Value::as_u64).unwrap_or(0);
            let tab_focused = tab.get("is_focused").and_then(Value::as_bool).unwrap_or(false);
            for window in tab.get("windows").and_then(Value::as_array).into_iter().flatten() {
                let Some(id) = window.get("id").and_then(Value::as_u64) else { continue };
                let focused = window.get("is_focused").and_then(Value::as_bool).unwrap_or(false);
                windows.push(WindowEntry {
                    id,
                    pid: window.get("pid").and_then(Value::as_u64).and_then(|p| u32::try_from(p).ok()),
                    title: window.get("title").and_then(Value::as_str).map(str::to_string),
                    cwd: window.get("cwd").and_then(Value::as_str).map(PathBuf::from),
                    // kitty marks the active window of every tab focused.
                    focused: focused && tab_focused && os_focused,
                    tab_id,
                });
            }
        }
    }
    windows
}

/// kitty window ids are numbers; a match expression of any other shape
/// would select other windows.
fn window_id(pane: &PaneId) -> Result<u64> {
    pane.as_str().parse().map_err(|_| TermError::Invalid(format!("{pane:?} is not a kitty window id")))
}

fn match_window(pane: &PaneId) -> Result<Value> {
    Ok(json!(format!("id:{}", window_id(pane)?)))
}

/// The end marker of bracketed paste, which pasted text must not contain:
/// it would end the paste early and let the rest run as typed.
const PASTE_END: &str = "\x1b[201~";

fn paste_frame(text: &str) -> String {
    format!("\x1b[200~{}{PASTE_END}", text.replace(PASTE_END, ""))
}

impl TerminalControl for Kitty {
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
            clipboard_read: false,
            clipboard_write: false,
            cwd_sync: true,
            bracketed_paste: true,
            max_clipboard_kb: 75,
            requires_opt_in: true,
            notes: "Needs allow_remote_control and --listen-on (or listen_on in kitty.conf). send-text gets no \
                    reply; paste markers are written by us, whether or not the program enabled bracketed paste."
                .into(),
            risk_flags: vec![
                RiskFlag::InjectsKeystrokes,
                RiskFlag::ReadsScreen,
                RiskFlag::SocketGrantsFullControl,
                RiskFlag::UnconfirmedDelivery,
            ],
        }
    }

    fn discover(&self) -> BoxFuture<'_, Discovery> {
        Box::pin(async move {
            let mut discovery =
                Discovery { installed: find_on_path(&self.config.program).is_some(), ..Discovery::default() };
            if self.address().is_err() {
                discovery.notes.push("no kitty socket configured and KITTY_LISTEN_ON is not set".into());
            } else {
                match self.windows().await {
                    Ok(_) => {
                        discovery.running = true;
                        discovery.reachable = true;
                    }
                    Err(e) => discovery.notes.push(format!("kitty's socket did not answer: {e}")),
                }
            }
            if discovery.installed {
                match self.runner.run_checked(&Invocation::new(&self.config.program).arg("--version")).await {
                    Ok(out) => discovery.version = out.stdout_text().split_whitespace().nth(1).map(str::to_string),
                    Err(e) => discovery.notes.push(format!("kitty --version: {e}")),
                }
            } else {
                discovery.notes.push(format!("{} is not on PATH", self.config.program.display()));
            }
            discovery
        })
    }

    fn spawn(&self, request: SpawnRequest) -> BoxFuture<'_, Result<Pane>> {
        Box::pin(async move {
            check_spawn_request(&request)?;
            let mut payload = json!({
                "args": request.command,
                "env": request.env.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
            });
            if let Some(cwd) = &request.cwd {
                payload["cwd"] = json!(cwd.to_string_lossy());
            }
            match &request.placement {
                Placement::Window => payload["type"] = json!("os-window"),
                Placement::Tab => payload["type"] = json!("tab"),
                Placement::Split { target, direction } => {
                    let target_window = self.window(target).await?;
                    payload["type"] = json!("window");
                    payload["location"] = json!(match direction {
                        Direction::Right => "vsplit",
                        Direction::Down => "hsplit",
                    });
                    payload["match"] = json!(format!("id:{}", target_window.tab_id));
                    // 0.26 splits next to the given window rather than the
                    // tab's active one.
                    payload["next_to"] = match_window(target)?;
                }
            }
            let data = self.call("launch", payload, true).await?;
            let id = match &data {
                Value::Number(n) => n.to_string(),
                Value::String(s) => s.trim().to_string(),
                other => return Err(TermError::Ipc(format!("kitty launch answered {other}"))),
            };
            let id = PaneId::new(id);
            let window = self.window(&id).await?;
            Ok(Pane { endpoint: Self::endpoint(&id), id, pid: window.pid, title: window.title })
        })
    }

    fn focus<'a>(&'a self, pane: &'a PaneId) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            // kitty still focuses a closing window whose process is gone.
            self.window(pane).await?;
            self.call("focus-window", json!({ "match": match_window(pane)? }), true).await.map(drop)
        })
    }

    fn send_text<'a>(&'a self, pane: &'a PaneId, text: &'a str, mode: SendMode) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            // send-text never answers, so a missing window would go unnoticed.
            self.window(pane).await?;
            let mut data = if mode.paste { paste_frame(text) } else { text.to_string() };
            if mode.enter {
                data.push('\r');
            }
            let encoded = base64::engine::general_purpose::STANDARD.encode(data.as_bytes());
            let payload = json!({ "match": match_window(pane)?, "data": format!("base64:{encoded}") });
            self.call("send-text", payload, false).await.map(drop)
        })
    }

    fn read_text<'a>(&'a self, pane: &'a PaneId) -> BoxFuture<'a, Result<String>> {
        Box::pin(async move {
            let payload = json!({ "match": match_window(pane)?, "extent": "screen", "ansi": false });
            match self.query("get-text", payload).await? {
                Value::String(text) => Ok(text),
                other => Err(TermError::Ipc(format!("kitty get-text answered {other}"))),
            }
        })
    }

    fn close<'a>(&'a self, pane: &'a PaneId) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.window(pane).await?;
            self.call("close-window", json!({ "match": match_window(pane)? }), true).await?;
            // kitty answers before the window is gone (it goes on a later
            // turn of its loop): wait, so the caller's next look agrees.
            let deadline = tokio::time::Instant::now() + self.config.ipc.timeout;
            while self.window(pane).await.is_ok() {
                if tokio::time::Instant::now() > deadline {
                    return Err(TermError::Timeout {
                        what: "kitty closing a window".into(),
                        after: self.config.ipc.timeout,
                        attempts: 1,
                    });
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            Ok(())
        })
    }

    fn describe<'a>(&'a self, pane: &'a PaneId) -> BoxFuture<'a, Result<PaneInfo>> {
        Box::pin(async move {
            let window = self.window(pane).await?;
            Ok(PaneInfo {
                id: pane.clone(),
                endpoint: Self::endpoint(pane),
                pid: window.pid,
                title: window.title,
                cwd: window.cwd,
                focused: Some(window.focused),
            })
        })
    }

    fn focused_pane(&self) -> BoxFuture<'_, Result<Option<PaneId>>> {
        Box::pin(async move {
            Ok(self.windows().await?.into_iter().find(|w| w.focused).map(|w| PaneId::new(w.id.to_string())))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_unframed_and_errors_classified() {
        assert_eq!(parse_reply(b"\x1bP@kitty-cmd{\"ok\":true,\"data\":7}\x1b\\").unwrap(), json!(7));
        assert_eq!(
            parse_reply(b"\x1bP@kitty-cmd{\"ok\":false,\"error\":\"No matching windows for expression: id:9\"}\x1b\\"),
            Err(TermError::PaneGone)
        );
        assert!(matches!(parse_reply(b"garbage"), Err(TermError::Ipc(_))));
    }

    #[test]
    fn pasted_text_cannot_end_the_paste_early() {
        assert_eq!(paste_frame("a\x1b[201~b"), "\x1b[200~ab\x1b[201~");
    }

    #[test]
    fn window_ids_must_be_numbers() {
        assert!(window_id(&PaneId::new("12")).is_ok());
        assert!(window_id(&PaneId::new("id:1 or id:2")).is_err());
    }
}
