//! Following the event stream over the WebSocket (`GET /ws`), across
//! dropped connections.
//!
//! The follower remembers the seq of the last event it handed out; when the
//! connection drops (the daemon's front restarted, the daemon was killed
//! and started again) it reconnects and subscribes again from that seq, so
//! its caller sees every event once, in order, across the break: the daemon
//! replays what was stored meanwhile, and anything at or below the last seq
//! is dropped should it come twice.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bosun_proto::{ClientOp, Control, Envelope, ServerFrame};
use futures::{SinkExt, StreamExt};
use reqwest::Url;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::error::ClientError;
use crate::http::Client;
use crate::Result;

/// How long a closed socket may take to send our reply to the close.
const CLOSE_REPLY_WAIT: Duration = Duration::from_secs(1);

type Socket = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// Where a follower says what happens to its connection.
pub type Notices = Arc<dyn Fn(&str) + Send + Sync>;

/// How a follower rides out a dropped connection.
#[derive(Clone)]
pub struct FollowerConfig {
    /// How long to keep trying after the connection drops: longer than a
    /// supervised restart takes, short enough to give up on a daemon that is
    /// gone.
    pub reconnect_for: Duration,
    pub reconnect_pause: Duration,
    /// Told about what happens to the connection ("connection lost",
    /// "reconnected"), for a CLI to show; nothing by default.
    pub notices: Option<Notices>,
}

impl Default for FollowerConfig {
    fn default() -> FollowerConfig {
        FollowerConfig {
            reconnect_for: Duration::from_secs(30),
            reconnect_pause: Duration::from_millis(500),
            notices: None,
        }
    }
}

impl std::fmt::Debug for FollowerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FollowerConfig")
            .field("reconnect_for", &self.reconnect_for)
            .field("reconnect_pause", &self.reconnect_pause)
            .finish_non_exhaustive()
    }
}

/// An event, with the frame as the daemon sent it and the connection
/// (1, 2, ...) that brought it.
#[derive(Debug, Clone)]
pub struct Followed {
    pub envelope: Envelope,
    pub frame: String,
    pub connection: u32,
}

/// The events of some topics, from a seq on, every one once and in order.
pub struct Follower {
    client: Client,
    url: Url,
    topics: Vec<String>,
    config: FollowerConfig,
    /// Every event with seq ≤ this has been handed out (or was asked to be skipped).
    last_seq: u64,
    socket: Option<Socket>,
    connections: u32,
}

impl Follower {
    /// Connects and subscribes to `topics` from `since`: the daemon replays
    /// every stored event after it, then goes live.
    pub async fn open(client: Client, topics: Vec<String>, since: u64, config: FollowerConfig) -> Result<Follower> {
        let url = client.ws_endpoint()?;
        let mut follower = Follower { client, url, topics, config, last_seq: since, socket: None, connections: 0 };
        follower.socket = Some(follower.connect().await?);
        Ok(follower)
    }

    /// The seq of the last event handed out (or the `since` it opened with).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// How many connections it has made so far.
    pub fn connections(&self) -> u32 {
        self.connections
    }

    /// Drops the connection, as a network would: the next call reconnects
    /// and resumes (for tests and demos of exactly that).
    pub fn drop_connection(&mut self) {
        self.socket = None;
    }

    async fn connect(&mut self) -> Result<Socket> {
        let (mut socket, _) =
            tokio_tungstenite::connect_async(self.url.as_str()).await.map_err(|e| self.connect_error(e))?;
        let op = ClientOp::Subscribe { topics: self.topics.clone(), since: self.last_seq };
        let frame = serde_json::to_string(&op).map_err(|e| ClientError::Transport {
            context: "encoding the subscription".into(),
            message: e.to_string(),
        })?;
        socket.send(Message::text(frame)).await.map_err(|e| ClientError::Transport {
            context: format!("subscribing on {}", self.shown_url()),
            message: e.to_string(),
        })?;
        self.connections += 1;
        Ok(socket)
    }

    /// The endpoint as messages may show it: without its query, which can
    /// carry the client's token.
    fn shown_url(&self) -> String {
        let mut shown = self.url.clone();
        shown.set_query(None);
        shown.to_string()
    }

    fn connect_error(&self, e: tungstenite::Error) -> ClientError {
        match e {
            tungstenite::Error::Io(io) => self.client.unreachable(&io.to_string()),
            tungstenite::Error::Http(response) => ClientError::WebSocketRefused {
                base: self.client.base().to_string(),
                url: self.shown_url(),
                status: response.status().as_u16(),
            },
            other => ClientError::Transport {
                context: format!("opening the WebSocket {}", self.shown_url()),
                message: other.to_string(),
            },
        }
    }

    fn notice(&self, text: &str) {
        tracing::info!(url = %self.shown_url(), "{text}");
        if let Some(notices) = &self.config.notices {
            notices(text);
        }
    }

    /// The next event; waits as long as it takes (reconnecting on the way).
    pub async fn next(&mut self) -> Result<Followed> {
        loop {
            let Some(socket) = self.socket.as_mut() else {
                let socket = self.reconnect().await?;
                self.socket = Some(socket);
                continue;
            };
            let text = match socket.next().await {
                Some(Ok(Message::Text(text))) => text,
                // The daemon pings; tungstenite answers by itself. We never
                // ask for MessagePack, so binary frames are not for us.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Binary(_) | Message::Frame(_))) => continue,
                Some(Ok(Message::Close(_))) => {
                    // The library queued its reply to the close: send it, so
                    // the daemon (which waits for it when stopping) is not
                    // left waiting. A daemon going away says 1001; either
                    // way the resume from `last_seq` is the same.
                    let _ = tokio::time::timeout(CLOSE_REPLY_WAIT, socket.flush()).await;
                    self.socket = None;
                    continue;
                }
                None => {
                    self.socket = None;
                    continue;
                }
                Some(Err(e)) => {
                    self.notice(&format!("connection to the daemon lost ({e})"));
                    self.socket = None;
                    continue;
                }
            };
            match serde_json::from_str::<ServerFrame>(text.as_str()) {
                Ok(ServerFrame::Event(envelope)) => {
                    // The daemon sends no duplicates; this guards the resume anyway.
                    if envelope.seq <= self.last_seq {
                        continue;
                    }
                    self.last_seq = envelope.seq;
                    return Ok(Followed { envelope, frame: text.as_str().to_string(), connection: self.connections });
                }
                Ok(ServerFrame::Control(Control::Error { error })) => {
                    return Err(ClientError::Api { status: 0, code: error.code, message: error.message })
                }
                Ok(ServerFrame::Control(_)) => continue,
                // A frame from a newer daemon: say so, but keep following.
                Err(e) => {
                    self.notice(&format!("skipping a frame this client does not understand ({e}): {}", text.as_str()))
                }
            }
        }
    }

    /// The next event, or `None` when none came within `limit`.
    pub async fn next_within(&mut self, limit: Duration) -> Result<Option<Followed>> {
        match tokio::time::timeout(limit, self.next()).await {
            Ok(next) => next.map(Some),
            Err(_) => Ok(None),
        }
    }

    /// Events until one satisfies `done` (which is returned), within `limit`
    /// in all; every event on the way goes to `seen`.
    pub async fn until(
        &mut self,
        limit: Duration,
        mut seen: impl FnMut(&Followed),
        done: impl Fn(&Envelope) -> bool,
    ) -> Result<Option<Followed>> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Some(followed) = self.next_within(left).await? else { return Ok(None) };
            seen(&followed);
            if done(&followed.envelope) {
                return Ok(Some(followed));
            }
        }
    }

    async fn reconnect(&mut self) -> Result<Socket> {
        self.notice(&format!("reconnecting to the daemon; resuming after seq {}", self.last_seq));
        let deadline = Instant::now() + self.config.reconnect_for;
        loop {
            tokio::time::sleep(self.config.reconnect_pause).await;
            match self.connect().await {
                Ok(socket) => {
                    self.notice("reconnected");
                    return Ok(socket);
                }
                Err(e) if Instant::now() >= deadline => {
                    return Err(ClientError::Gone { secs: self.config.reconnect_for.as_secs(), last: e.to_string() })
                }
                Err(_) => {}
            }
        }
    }
}
