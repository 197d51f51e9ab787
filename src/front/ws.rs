//! One WebSocket connection: subscriptions, replay from the store, then the
//! live tail, with no gap and no duplicate across the switch.
//!
//! The connection keeps a cursor: the seq up to which every event of its
//! topics has been sent. The live receiver is taken *before* the store is
//! read, so whatever the store did not yet hold arrives live; anything at or
//! below the cursor is dropped as a duplicate. A connection that falls behind
//! the in-memory fan-out (`Lagged`) is caught up from the store, so a slow
//! client loses nothing and slows nobody else.

use super::connections::Slot;
use crate::auth::{Access, Auth, AuthError, Peer};
use bosun_actors::Context;
use bosun_proto::codec::Encoded;
use bosun_proto::ws::Control;
use bosun_proto::{ClientOp, Envelope, ErrorDetail, TopicFilter, WireFormat};
use futures::{SinkExt, StreamExt};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use warp::http::HeaderMap;
use warp::ws::{Message, WebSocket};

/// How long one frame may take to go out before the client is deemed gone.
const SEND_TIMEOUT: Duration = Duration::from_secs(60);
/// Keep-alive pings, so idle connections survive proxies and NATs.
pub(super) const PING_EVERY: Duration = Duration::from_secs(25);
/// Events read from the store per page during replay.
const REPLAY_PAGE: usize = 512;
/// Live events written to the socket before one flush.
const LIVE_BATCH: usize = 64;
/// Replayed events written to the socket before one flush.
const REPLAY_FLUSH_EVERY: usize = 64;
/// How long a connection that must authenticate by its first message may take to send it.
pub(super) const AUTH_TIMEOUT: Duration = Duration::from_secs(5);
/// How much a connection that must authenticate by its first message may
/// send before it has: the `auth` message is under 200 bytes. Past this
/// nothing more is read from it (front/connections.rs, `ReadBudget`), so an
/// unauthenticated peer cannot make the daemon buffer a large frame.
pub const PRE_AUTH_BYTES: usize = 4 * 1024;
/// Most topics one connection may subscribe to: more is no use to a client,
/// and every live event is matched against each of them.
pub const MAX_TOPICS: usize = 1024;
/// The close code for a refused token, after HTTP's 401.
pub(super) const CLOSE_UNAUTHORIZED: u16 = 4401;

/// `{"op":"auth","token":"..."}`, which is not a [`ClientOp`]: it is read
/// before the connection is let in, or answered on its own afterwards.
#[derive(serde::Deserialize)]
struct AuthOp {
    op: String,
    token: String,
}

pub(super) fn auth_token(msg: &Message) -> Option<String> {
    let op: AuthOp = if msg.is_text() {
        serde_json::from_slice(msg.as_bytes()).ok()?
    } else if msg.is_binary() {
        rmp_serde::from_slice(msg.as_bytes()).ok()?
    } else {
        return None;
    };
    (op.op == "auth").then_some(op.token)
}

/// Decides on an upgrade request: `Ok(Some(access))` lets it in,
/// `Ok(None)` lets it in on condition that its first message is `auth`,
/// `Err` is the HTTP answer refusing it. `authority` is the one the request
/// named (front/authority.rs): a page's own origin is `http(s)://` + it.
pub fn admit(
    auth: &Auth,
    headers: &HeaderMap,
    query: &str,
    peer: Peer,
    authority: &str,
) -> Result<Option<Access>, AuthError> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if headers.get_all("origin").iter().count() > 1 || !auth.origin_allowed(header("origin"), Some(authority)) {
        tracing::warn!(origin = ?header("origin"), ?peer, "websocket refused: foreign origin");
        return Err(AuthError::ForeignOrigin);
    }
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap_or_default();
    let token =
        pairs.iter().find(|(k, _)| k == "token").map(|(_, v)| v.as_str()).or_else(|| super::auth::bearer(headers));
    if token.is_none() && !auth.open_to(peer) {
        // Checked now so a peer over the limit is not even upgraded.
        auth.check_limit(peer.client)?;
        return Ok(None);
    }
    auth.authorize(peer, token).map(Some)
}

#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("socket: {0}")]
    Socket(#[from] warp::Error),
    #[error("the client did not take a frame within {0:?}")]
    SendTimeout(Duration),
    #[error("encoding: {0}")]
    Codec(#[from] bosun_proto::CodecError),
    #[error("store: {0}")]
    Store(#[from] bosun_state::StoreError),
}

struct Connection {
    ctx: Context,
    format: WireFormat,
    sink: futures::stream::SplitSink<WebSocket, Message>,
    filters: Vec<TopicFilter>,
    live: Option<broadcast::Receiver<Arc<Envelope>>>,
    /// Every event with seq ≤ cursor on the subscribed topics has been sent.
    cursor: u64,
    auth: Arc<Auth>,
    peer: Peer,
}

/// Serves an upgraded socket. `access` is `None` when it must authenticate
/// by its first message; its `slot`'s read budget is then limited to
/// [`PRE_AUTH_BYTES`], and lifted here once it has.
pub async fn serve(socket: WebSocket, ctx: Context, format: WireFormat, admission: super::Admission) {
    let super::Admission { peer, access, auth, slot, mut goodbye } = admission;
    let (sink, mut stream) = socket.split();
    // The socket is read on its own task: polling `stream.next()` afresh in
    // every `select!` pass makes tungstenite zero its 128 KiB read buffer each
    // time, which cost a sixth of the daemon's CPU under fan-out load.
    let (frames_tx, mut frames) = tokio::sync::mpsc::channel(16);
    let reader = tokio::spawn(async move {
        while let Some(frame) = stream.next().await {
            if frames_tx.send(frame).await.is_err() {
                break;
            }
        }
    });
    let mut revocations = auth.revocations();
    let mut conn = Connection { ctx, format, sink, filters: Vec::new(), live: None, cursor: 0, auth, peer };
    let access = match access {
        Some(access) => access,
        None => match conn.first_message_auth(&mut frames, &slot).await {
            Some(access) => {
                slot.budget.lift();
                access
            }
            None => {
                reader.abort();
                let _ = conn.sink.close().await;
                return;
            }
        },
    };
    let _counted = bosun_actors::metrics::Alive::new(&conn.ctx.metrics.websocket_subscribers);
    // A paired device's socket lives only as long as the device does.
    let device = match access {
        Access::Device(id) => Some(id),
        Access::Local | Access::Admin => None,
    };
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    let result: Result<(), ConnError> = async {
        loop {
            tokio::select! {
                frame = frames.recv() => match frame {
                    None => return Ok(()),
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "websocket read failed");
                        return Ok(());
                    }
                    Some(Ok(msg)) => {
                        if msg.is_close() {
                            return Ok(());
                        }
                        conn.on_client_frame(msg).await?;
                    }
                },
                event = recv_live(&mut conn.live) => {
                    conn.on_live(event).await?;
                    // Whatever else is already waiting goes out with the same flush.
                    for _ in 0..LIVE_BATCH {
                        let Some(more) = conn.live.as_mut().map(|rx| rx.try_recv()) else { break };
                        match more {
                            Ok(env) => conn.on_live(Ok(env)).await?,
                            Err(TryRecvError::Lagged(n)) => conn.on_live(Err(RecvError::Lagged(n))).await?,
                            Err(TryRecvError::Empty) => break,
                            Err(TryRecvError::Closed) => {
                                conn.on_live(Err(RecvError::Closed)).await?;
                                break;
                            }
                        }
                    }
                    conn.flush().await?;
                }
                _ = ping.tick() => conn.send_raw(Message::ping(Vec::new())).await?,
                () = goodbye.said() => {
                    conn.say_goodbye().await?;
                    super::closing::await_client_close(&mut frames).await;
                    return Ok(());
                }
                revoked = revocations.recv(), if device.is_some() => {
                    let gone = match revoked {
                        Ok(id) => device.as_deref() == Some(id.as_str()),
                        // Missed some: ask the store.
                        Err(broadcast::error::RecvError::Lagged(_)) => {
                            !device.as_deref().is_some_and(|id| conn.auth.device_exists(id).unwrap_or(true))
                        }
                        Err(broadcast::error::RecvError::Closed) => false,
                    };
                    if gone {
                        tracing::info!(device = ?device, "closing the websocket of a revoked device");
                        let _ = conn.send_error("unauthorized", "this device was revoked".into()).await;
                        let _ = conn.send_raw(Message::close_with(CLOSE_UNAUTHORIZED, "revoked")).await;
                        return Ok(());
                    }
                }
            }
        }
    }
    .await;
    if let Err(e) = result {
        tracing::info!(error = %e, "websocket closed");
    }
    reader.abort();
    let _ = conn.sink.close().await;
}

/// The next live event, or never if not subscribed yet.
async fn recv_live(live: &mut Option<broadcast::Receiver<Arc<Envelope>>>) -> Result<Arc<Envelope>, RecvError> {
    match live {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

impl Connection {
    async fn send_raw(&mut self, msg: Message) -> Result<(), ConnError> {
        match tokio::time::timeout(SEND_TIMEOUT, self.sink.send(msg)).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(ConnError::SendTimeout(SEND_TIMEOUT)),
        }
    }

    /// Writes a frame without flushing; `flush` (or `send`) pushes it out.
    async fn queue<T: serde::Serialize>(&mut self, value: &T) -> Result<(), ConnError> {
        let msg = match self.format.encode(value)? {
            Encoded::Text(text) => Message::text(text),
            Encoded::Binary(bytes) => Message::binary(bytes),
        };
        match tokio::time::timeout(SEND_TIMEOUT, self.sink.feed(msg)).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(ConnError::SendTimeout(SEND_TIMEOUT)),
        }
    }

    async fn flush(&mut self) -> Result<(), ConnError> {
        match tokio::time::timeout(SEND_TIMEOUT, self.sink.flush()).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(ConnError::SendTimeout(SEND_TIMEOUT)),
        }
    }

    async fn send<T: serde::Serialize>(&mut self, value: &T) -> Result<(), ConnError> {
        self.queue(value).await?;
        self.flush().await
    }

    async fn send_error(&mut self, code: &str, message: String) -> Result<(), ConnError> {
        self.send(&Control::Error { error: ErrorDetail { code: code.into(), message } }).await
    }

    /// Waits for `{"op":"auth"}` as the first message; `None` when the
    /// connection must be closed (told why): no such message within
    /// [`AUTH_TIMEOUT`], or within [`PRE_AUTH_BYTES`].
    async fn first_message_auth(
        &mut self,
        frames: &mut tokio::sync::mpsc::Receiver<Result<Message, warp::Error>>,
        slot: &Slot,
    ) -> Option<Access> {
        let deadline = tokio::time::Instant::now() + AUTH_TIMEOUT;
        let token = loop {
            tokio::select! {
                // A frame that came in before the budget ran out is read first.
                biased;
                frame = tokio::time::timeout_at(deadline, frames.recv()) => match frame {
                    Err(_) => break None,
                    Ok(None | Some(Err(_))) => return None,
                    Ok(Some(Ok(msg))) if msg.is_ping() || msg.is_pong() => continue,
                    Ok(Some(Ok(msg))) if msg.is_close() => return None,
                    Ok(Some(Ok(msg))) => break auth_token(&msg),
                },
                () = slot.budget.exhausted() => {
                    tracing::debug!(peer = ?self.peer, "websocket sent too much before authenticating");
                    break None;
                }
            }
        };
        let outcome = match token {
            Some(token) => self.auth.authorize(self.peer, Some(&token)),
            None => Err(AuthError::Missing),
        };
        match outcome {
            Ok(access) => self.send(&serde_json::json!({"op": "authenticated"})).await.ok().map(|()| access),
            Err(e) => {
                let code = if matches!(e, AuthError::Limited(_)) { "rate_limited" } else { "unauthorized" };
                let _ = self.send_error(code, e.to_string()).await;
                let _ = self.send_raw(Message::close_with(CLOSE_UNAUTHORIZED, code)).await;
                None
            }
        }
    }

    async fn on_client_frame(&mut self, msg: Message) -> Result<(), ConnError> {
        if msg.is_ping() || msg.is_pong() {
            return Ok(());
        }
        // Already let in; a client that authenticates anyway (the app always
        // does) is told whether its token holds.
        if let Some(token) = auth_token(&msg) {
            return match self.auth.authorize(self.peer, Some(&token)) {
                Ok(_) => self.send(&serde_json::json!({"op": "authenticated"})).await,
                Err(e) => self.send_error("unauthorized", e.to_string()).await,
            };
        }
        let parsed: Result<ClientOp, String> = if msg.is_text() {
            serde_json::from_slice(msg.as_bytes()).map_err(|e| e.to_string())
        } else {
            rmp_serde::from_slice(msg.as_bytes()).map_err(|e| e.to_string())
        };
        let op = match parsed {
            Ok(op) => op,
            Err(e) => return self.send_error("bad_frame", format!("invalid frame: {e}")).await,
        };
        match op {
            ClientOp::Ping { nonce } => self.send(&Control::Pong { nonce }).await,
            ClientOp::Subscribe { topics, since } => self.subscribe(topics, since).await,
            ClientOp::Unsubscribe { topics } => {
                self.filters.retain(|f| !topics.contains(&f.as_string()));
                self.send(&Control::Unsubscribed { topics }).await
            }
        }
    }

    async fn subscribe(&mut self, topics: Vec<String>, since: u64) -> Result<(), ConnError> {
        if topics.is_empty() {
            return self.send_error("bad_topic", "topics must name at least one topic".into()).await;
        }
        let mut new: Vec<TopicFilter> = Vec::new();
        for t in &topics {
            match TopicFilter::parse(t) {
                Some(f) => {
                    if !self.filters.contains(&f) && !new.contains(&f) {
                        new.push(f);
                    }
                }
                None => {
                    let message =
                        format!("unknown topic {t:?}; use \"*\", \"system\", \"session:<id>\" or \"workflow:<id>\"");
                    return self.send_error("bad_topic", message).await;
                }
            }
        }
        if self.filters.len() + new.len() > MAX_TOPICS {
            let message = format!(
                "a connection may subscribe to at most {MAX_TOPICS} topics; it has {} and this would add {} \
                 (nothing was subscribed; unsubscribe some, or use \"*\")",
                self.filters.len(),
                new.len()
            );
            return self.send_error("too_many_topics", message).await;
        }
        if self.live.is_none() {
            // Take the live receiver first, then the head: any event above the
            // head is certain to arrive on the receiver.
            self.live = Some(self.ctx.store.subscribe());
            self.cursor = self.ctx.store.durable_head();
        }
        let head = self.cursor;
        self.send(&Control::Subscribed { topics, since, head }).await?;
        // Topics already subscribed are live up to the cursor; replay only the new ones.
        if since < head {
            self.replay(&new, since, head).await?;
        }
        self.filters.extend(new);
        Ok(())
    }

    async fn on_live(&mut self, event: Result<Arc<Envelope>, RecvError>) -> Result<(), ConnError> {
        match event {
            Ok(env) => {
                if env.seq <= self.cursor {
                    return Ok(());
                }
                self.cursor = env.seq;
                if self.filters.iter().any(|f| f.matches(&env.topic)) {
                    self.queue(env.as_ref()).await?;
                }
                Ok(())
            }
            Err(RecvError::Lagged(missed)) => {
                // Behind the fan-out: fetch what was skipped from the store.
                let from = self.cursor;
                let to = self.ctx.store.durable_head();
                tracing::debug!(missed, from, to, "websocket subscriber lagged; catching up from the store");
                let filters = self.filters.clone();
                self.replay(&filters, from, to).await?;
                self.cursor = self.cursor.max(to);
                Ok(())
            }
            Err(RecvError::Closed) => {
                // The store is shutting down.
                self.live = None;
                Ok(())
            }
        }
    }

    /// The daemon is stopping, its tree stopped: every event committed so far
    /// on the subscribed topics (from the store, which has them all, rather
    /// than the fan-out, which may have dropped some for a slow socket),
    /// then a close frame with 1001, going away.
    async fn say_goodbye(&mut self) -> Result<(), ConnError> {
        let head = self.ctx.store.durable_head();
        let filters = self.filters.clone();
        self.replay(&filters, self.cursor, head).await?;
        self.cursor = self.cursor.max(head);
        use super::closing::{CLOSE_GOING_AWAY, GOODBYE_REASON};
        self.send_raw(Message::close_with(CLOSE_GOING_AWAY, GOODBYE_REASON)).await
    }

    /// Sends every stored event with `since < seq ≤ until` on `filters`, in seq order.
    async fn replay(&mut self, filters: &[TopicFilter], since: u64, until: u64) -> Result<(), ConnError> {
        if filters.is_empty() || since >= until {
            return Ok(());
        }
        let mut source = ReplaySource::new(filters, since, until);
        let mut queued = 0;
        while let Some(env) = source.next(&self.ctx)? {
            self.queue(&env).await?;
            queued += 1;
            if queued % REPLAY_FLUSH_EVERY == 0 {
                self.flush().await?;
            }
        }
        self.flush().await
    }
}

/// Merges the stored events of several topics into one seq-ordered stream.
struct ReplaySource {
    /// `None` reads the whole log (a `*` subscription).
    topics: Vec<Option<bosun_proto::Topic>>,
    pages: Vec<VecDeque<Envelope>>,
    /// Per topic, the seq after which the next page is read.
    read_upto: Vec<u64>,
    exhausted: Vec<bool>,
    until: u64,
}

impl ReplaySource {
    fn new(filters: &[TopicFilter], since: u64, until: u64) -> ReplaySource {
        let topics: Vec<Option<bosun_proto::Topic>> = if filters.contains(&TopicFilter::All) {
            vec![None]
        } else {
            filters
                .iter()
                .filter_map(|f| match f {
                    TopicFilter::Topic(t) => Some(Some(t.clone())),
                    TopicFilter::All => None,
                })
                .collect()
        };
        let n = topics.len();
        ReplaySource {
            topics,
            pages: vec![VecDeque::new(); n],
            read_upto: vec![since; n],
            exhausted: vec![false; n],
            until,
        }
    }

    fn next(&mut self, ctx: &Context) -> Result<Option<Envelope>, ConnError> {
        for i in 0..self.topics.len() {
            if self.pages[i].is_empty() && !self.exhausted[i] {
                let page = ctx.store.events_since(self.read_upto[i], self.topics[i].as_ref(), REPLAY_PAGE)?;
                if page.len() < REPLAY_PAGE || page.last().is_some_and(|e| e.seq >= self.until) {
                    self.exhausted[i] = true;
                }
                if let Some(last) = page.last() {
                    self.read_upto[i] = last.seq;
                }
                let until = self.until;
                self.pages[i] = page.into_iter().filter(|e| e.seq <= until).collect();
            }
        }
        let best = (0..self.topics.len()).filter_map(|i| self.pages[i].front().map(|e| (e.seq, i))).min();
        Ok(best.and_then(|(_, i)| self.pages[i].pop_front()))
    }
}
