//! Live events over the WebSocket (`GET /ws`), resumable.
//!
//! The stream remembers the seq of the last event it handed out; when the
//! connection drops (the daemon's front actor restarted, the daemon was
//! restarted) it reconnects and subscribes again from that seq, so the caller
//! sees every event once, in order, across the break.

use super::http::{ApiError, Server};
use anyhow::{anyhow, Context as _};
use bosun_proto::{ClientOp, Control, Envelope, ServerFrame};
use futures::{SinkExt, StreamExt};
use reqwest::Url;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// How long to keep trying after the connection drops: longer than a
/// supervised restart takes, short enough to give up on a daemon that is gone.
const RECONNECT_FOR: Duration = Duration::from_secs(30);
const RECONNECT_PAUSE: Duration = Duration::from_millis(500);

pub struct EventStream<'a> {
    server: &'a Server,
    url: Url,
    topics: Vec<String>,
    /// Every event with seq ≤ this has been handed out (or was asked to be skipped).
    last_seq: u64,
    socket: Option<Socket>,
}

impl<'a> EventStream<'a> {
    /// Connects and subscribes to `topics` from `since`: the daemon replays
    /// every stored event after it, then goes live.
    pub async fn open(server: &'a Server, topics: Vec<String>, since: u64) -> anyhow::Result<EventStream<'a>> {
        let url = server.ws_endpoint()?;
        let mut stream = EventStream { server, url, topics, last_seq: since, socket: None };
        stream.socket = Some(stream.connect().await?);
        Ok(stream)
    }

    async fn connect(&self) -> anyhow::Result<Socket> {
        let (mut socket, _) =
            tokio_tungstenite::connect_async(self.url.as_str()).await.map_err(|e| self.connect_error(e))?;
        let op = ClientOp::Subscribe { topics: self.topics.clone(), since: self.last_seq };
        let frame = serde_json::to_string(&op).context("encoding the subscription")?;
        socket.send(Message::text(frame)).await.with_context(|| format!("subscribing on {}", self.shown_url()))?;
        Ok(socket)
    }

    /// The endpoint as messages may show it: without its query, which can
    /// carry the client's token.
    fn shown_url(&self) -> String {
        let mut shown = self.url.clone();
        shown.set_query(None);
        shown.to_string()
    }

    fn connect_error(&self, e: tungstenite::Error) -> anyhow::Error {
        match e {
            tungstenite::Error::Io(io) => self.server.unreachable(&io.to_string()),
            tungstenite::Error::Http(response) => {
                anyhow!(
                    "the daemon at {} refused the WebSocket on {}: HTTP {}",
                    self.server.base(),
                    self.shown_url(),
                    response.status()
                )
            }
            other => anyhow!(other).context(format!("opening the WebSocket {}", self.shown_url())),
        }
    }

    /// The next event, with the frame exactly as the daemon sent it (for `--json`).
    pub async fn next(&mut self) -> anyhow::Result<(Envelope, String)> {
        loop {
            let Some(socket) = self.socket.as_mut() else {
                self.socket = Some(self.reconnect().await?);
                continue;
            };
            let text = match socket.next().await {
                Some(Ok(Message::Text(text))) => text,
                // The daemon pings; tungstenite answers by itself. We never
                // ask for MessagePack, so binary frames are not for us.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Binary(_) | Message::Frame(_))) => continue,
                Some(Ok(Message::Close(_))) | None => {
                    self.socket = None;
                    continue;
                }
                Some(Err(e)) => {
                    super::note(&format!("connection to the daemon lost ({e})"));
                    self.socket = None;
                    continue;
                }
            };
            match serde_json::from_str::<ServerFrame>(text.as_str()) {
                Ok(ServerFrame::Event(env)) => {
                    // The daemon sends no duplicates; this guards the resume anyway.
                    if env.seq <= self.last_seq {
                        continue;
                    }
                    self.last_seq = env.seq;
                    return Ok((env, text.as_str().to_string()));
                }
                Ok(ServerFrame::Control(Control::Error { error })) => return Err(ApiError::from(error).into()),
                Ok(ServerFrame::Control(_)) => continue,
                // A frame from a newer daemon: say so, but keep following.
                Err(e) => {
                    super::note(&format!("skipping a frame this client does not understand ({e}): {}", text.as_str()))
                }
            }
        }
    }

    async fn reconnect(&self) -> anyhow::Result<Socket> {
        super::note(&format!("reconnecting to the daemon; resuming after seq {}", self.last_seq));
        let deadline = Instant::now() + RECONNECT_FOR;
        loop {
            tokio::time::sleep(RECONNECT_PAUSE).await;
            match self.connect().await {
                Ok(socket) => {
                    super::note("reconnected");
                    return Ok(socket);
                }
                Err(e) if Instant::now() >= deadline => {
                    return Err(e.context(format!(
                        "the connection to the daemon dropped and did not come back within {}s",
                        RECONNECT_FOR.as_secs()
                    )))
                }
                Err(_) => {}
            }
        }
    }
}
