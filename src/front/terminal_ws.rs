//! `GET /ws/terminal/{id}`: one `pty` terminal over a WebSocket, in binary
//! frames (`bosun_proto::terminal::frame`): its output from an offset,
//! input, resize and acknowledgements; then, after the last byte, its end.
//!
//! The stream is exactly the stored scrollback: the socket subscribes to
//! the terminal's live chunks first, then replays the store from the
//! client's offset, and sends each byte once by offset whichever path
//! brought it (a reload or a network change resumes from the offset the
//! client rendered, with nothing lost and nothing doubled). A socket that
//! falls behind the live chunks catches up from the store. The end frame
//! goes out only once every byte before the terminal's end has.

use super::closing;
use super::connections::Slot;
use super::ws::{auth_token, AUTH_TIMEOUT, CLOSE_UNAUTHORIZED, PING_EVERY};
use crate::auth::{Auth, AuthError, Peer};
use bosun_actors::terminals::binding::BindingMsg;
use bosun_actors::terminals::{scrollback, LiveTerminal, OutputChunk};
use bosun_actors::{names, route, Context};
use bosun_proto::{
    BindingState, OutputRange, ResizeRequest, TerminalClientFrame, TerminalExit, TerminalHello, TerminalServerFrame,
};
use bosun_state::BindingRecord;
use futures::{SinkExt, StreamExt};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use warp::ws::{Message, WebSocket};

/// A client that takes no frame for this long is dropped (it resumes from
/// its offset when it is back); until then the terminal waits for it, by
/// flow control, if it is the most advanced.
const SEND_TIMEOUT: Duration = Duration::from_secs(60);
/// The most one replay read takes from the store before it is sent.
const REPLAY_BYTES: usize = 1024 * 1024;
/// The close code of an ended terminal is a normal close; its reason says
/// how it ended.
const CLOSE_NORMAL: u16 = 1000;

#[derive(Debug, thiserror::Error)]
enum TermConnError {
    #[error("socket: {0}")]
    Socket(#[from] warp::Error),
    #[error("the client did not take a frame within {0:?}")]
    SendTimeout(Duration),
    #[error("store: {0}")]
    Store(#[from] bosun_state::StoreError),
}

struct TermConn {
    ctx: Context,
    sink: futures::stream::SplitSink<WebSocket, Message>,
    binding_id: String,
    /// Every byte before it has been sent.
    cursor: u64,
    /// Our close frame went out: the client's answer is awaited before the
    /// socket is dropped.
    sent_close: bool,
}

impl TermConn {
    async fn send(&mut self, msg: Message) -> Result<(), TermConnError> {
        match tokio::time::timeout(SEND_TIMEOUT, self.sink.send(msg)).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(TermConnError::SendTimeout(SEND_TIMEOUT)),
        }
    }

    /// Sends the part of `bytes` (from `offset`) not sent yet.
    async fn output(&mut self, offset: u64, bytes: &[u8]) -> Result<(), TermConnError> {
        let end = offset + bytes.len() as u64;
        if end <= self.cursor {
            return Ok(());
        }
        if offset > self.cursor {
            // Older than the store keeps: the client is told by the offset.
            tracing::debug!(binding = %self.binding_id, from = self.cursor, offset, "terminal output skipped ahead");
        }
        let skip = self.cursor.saturating_sub(offset) as usize;
        let at = offset.max(self.cursor);
        self.send(Message::binary(TerminalServerFrame::output(at, &bytes[skip..]))).await?;
        self.cursor = end;
        Ok(())
    }

    /// Sends what the store holds from the cursor up to `until`.
    async fn catch_up(&mut self, until: u64) -> Result<(), TermConnError> {
        while self.cursor < until {
            let pieces = scrollback::read(&self.ctx.store, &self.binding_id, self.cursor, REPLAY_BYTES)?;
            if pieces.is_empty() {
                break;
            }
            for (offset, bytes) in pieces {
                self.output(offset, &bytes).await?;
            }
        }
        Ok(())
    }

    async fn end(&mut self, exit: TerminalExit) -> Result<(), TermConnError> {
        self.catch_up(exit.end).await?;
        let reason = match (&exit.exit, &exit.reason) {
            (Some(e), _) if e.signal.is_some() => format!("{} ({})", exit.state, e.signal.as_deref().unwrap_or("")),
            (Some(e), _) => format!("{} {}", exit.state, e.code.map_or("?".into(), |c| c.to_string())),
            (None, Some(r)) => format!("{}: {r}", exit.state),
            (None, None) => exit.state.to_string(),
        };
        self.send(Message::binary(TerminalServerFrame::Exit(exit).encode())).await?;
        // A close reason is at most 123 bytes.
        let reason: String = reason.chars().take(100).collect();
        if self.send(Message::close_with(CLOSE_NORMAL, reason)).await.is_ok() {
            self.sent_close = true;
        }
        Ok(())
    }
}

fn exit_of(record: &BindingRecord, end: u64) -> TerminalExit {
    TerminalExit { state: record.state, exit: record.exit.clone(), end, reason: record.reason.clone() }
}

pub async fn serve(socket: WebSocket, ctx: Context, admission: super::Admission, binding_id: String, from: u64) {
    let super::Admission { peer, access, auth, slot, mut goodbye } = admission;
    let (sink, mut stream) = socket.split();
    let (frames_tx, mut frames) = tokio::sync::mpsc::channel(16);
    let reader = tokio::spawn(async move {
        while let Some(frame) = stream.next().await {
            if frames_tx.send(frame).await.is_err() {
                break;
            }
        }
    });
    let mut conn = TermConn { ctx: ctx.clone(), sink, binding_id: binding_id.clone(), cursor: from, sent_close: false };
    if access.is_none() && !first_message_auth(&mut conn, &mut frames, &auth, peer, &slot).await {
        reader.abort();
        let _ = conn.sink.close().await;
        return;
    }
    slot.budget.lift();
    let _counted = bosun_actors::metrics::Alive::new(&ctx.metrics.terminal_sockets);
    let result = run(&mut conn, &mut frames, from, &mut goodbye).await;
    if let Err(e) = result {
        tracing::debug!(binding = %binding_id, error = %e, "terminal socket ended");
    }
    if !conn.sent_close && goodbye.is_said() {
        let farewell = Message::close_with(closing::CLOSE_GOING_AWAY, closing::GOODBYE_REASON);
        conn.sent_close = conn.send(farewell).await.is_ok();
    }
    if conn.sent_close {
        closing::await_client_close(&mut frames).await;
    }
    reader.abort();
    let _ = conn.sink.close().await;
}

/// The first frame must be `{"op":"auth","token":…}` (a browser cannot set
/// a header on a WebSocket, and a token in the URL ends up in logs).
async fn first_message_auth(
    conn: &mut TermConn,
    frames: &mut tokio::sync::mpsc::Receiver<Result<Message, warp::Error>>,
    auth: &Auth,
    peer: Peer,
    slot: &Slot,
) -> bool {
    let deadline = tokio::time::Instant::now() + AUTH_TIMEOUT;
    let token = loop {
        tokio::select! {
            // A frame that came in before the budget ran out is read first.
            biased;
            frame = tokio::time::timeout_at(deadline, frames.recv()) => match frame {
                Ok(Some(Ok(msg))) if msg.is_ping() || msg.is_pong() => continue,
                Ok(Some(Ok(msg))) => break auth_token(&msg),
                _ => break None,
            },
            () = slot.budget.exhausted() => {
                tracing::debug!(peer = ?peer, "a terminal socket sent too much before authenticating");
                break None;
            }
        }
    };
    let outcome = match token {
        Some(token) => auth.authorize(peer, Some(&token)),
        None => Err(AuthError::Missing),
    };
    match outcome {
        Ok(_) => true,
        Err(e) => {
            let code = if matches!(e, AuthError::Limited(_)) { "rate_limited" } else { "unauthorized" };
            let _ = conn.send(Message::close_with(CLOSE_UNAUTHORIZED, code)).await;
            false
        }
    }
}

async fn run(
    conn: &mut TermConn,
    frames: &mut tokio::sync::mpsc::Receiver<Result<Message, warp::Error>>,
    from: u64,
    goodbye: &mut closing::SocketGuard,
) -> Result<(), TermConnError> {
    let ctx = conn.ctx.clone();
    let Some(record) = ctx.store.get::<BindingRecord>(&conn.binding_id)? else {
        let _ = conn.send(Message::close_with(4404u16, "no such terminal")).await;
        return Ok(());
    };
    // Subscribe before reading the store: a chunk published in between is
    // then in both, and sent once.
    let live: Option<Arc<LiveTerminal>> = ctx.terminals.get(&record.id).filter(|l| l.pty.pid() == record.pid);
    let mut subscription = live.as_ref().map(|l| l.subscribe());
    let mut clipboard = live.as_ref().map(|l| l.clipboard());
    let client = live.as_ref().map(|l| l.pty.gate().attach(from));
    let range =
        super::terminals::output_range(&ctx, &record).ok().flatten().unwrap_or(OutputRange { start: 0, end: 0 });
    conn.cursor = from.max(range.start);
    let hello = TerminalHello {
        binding_id: record.id.clone(),
        from: conn.cursor,
        output: range,
        state: if live.is_some() { BindingState::Open } else { record.state },
        size: record.size,
    };
    let result = async {
        conn.send(Message::binary(TerminalServerFrame::Hello(hello).encode())).await?;
        let (Some(live), Some((mut chunks, mut exit)), Some(mut clipboard)) =
            (live.clone(), subscription.take(), clipboard.take())
        else {
            // Ended (or lost): the stored scrollback, then how it ended.
            conn.catch_up(u64::MAX).await?;
            let end = conn.cursor.max(range.end);
            let record = ctx.store.get::<BindingRecord>(&record.id)?.unwrap_or(record);
            return conn.end(exit_of(&record, end)).await;
        };
        conn.catch_up(live.durable_end()).await?;
        let mut clipboard_open = true;
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.tick().await;
        loop {
            let done = exit.borrow_and_update().clone();
            if let Some(done) = done {
                return conn.end(done).await;
            }
            tokio::select! {
                frame = frames.recv() => match frame {
                    None | Some(Err(_)) => return Ok(()),
                    Some(Ok(msg)) => {
                        if msg.is_close() {
                            return Ok(());
                        }
                        on_client_frame(conn, &live, client, msg).await?;
                    }
                },
                chunk = chunks.recv() => match chunk {
                    Ok(chunk) => {
                        let chunk: Arc<OutputChunk> = chunk;
                        conn.output(chunk.offset, &chunk.bytes).await?;
                    }
                    Err(RecvError::Lagged(_)) => conn.catch_up(live.durable_end()).await?,
                    // The terminal ended: its end is in the watch.
                    Err(RecvError::Closed) => {
                        let _ = exit.changed().await;
                    }
                },
                changed = exit.changed() => {
                    if changed.is_err() {
                        // Dropped without an end: the daemon is stopping.
                        return Ok(());
                    }
                }
                written = clipboard.recv(), if clipboard_open => match written {
                    Ok(sequences) => {
                        let frame = TerminalServerFrame::Clipboard(sequences.to_vec()).encode();
                        conn.send(Message::binary(frame)).await?;
                    }
                    // Only the last write matters to a clipboard; an older
                    // one missed is as good as overwritten.
                    Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => clipboard_open = false,
                },
                _ = ping.tick() => conn.send(Message::ping(Vec::new())).await?,
                // The daemon is stopping: every byte stored so far, then
                // the goodbye (in `serve`).
                () = goodbye.said() => return conn.catch_up(live.durable_end()).await,
            }
        }
    }
    .await;
    if let (Some(live), Some(client)) = (live, client) {
        live.pty.gate().detach(client);
    }
    result
}

async fn on_client_frame(
    conn: &mut TermConn,
    live: &LiveTerminal,
    client: Option<bosun_pty::ClientId>,
    msg: Message,
) -> Result<(), TermConnError> {
    if !msg.is_binary() {
        // Text is not part of this protocol (an auth op after the fact is
        // harmless and ignored).
        return Ok(());
    }
    match TerminalClientFrame::decode(msg.as_bytes()) {
        // The user at the terminal types: that is theirs to do, as at any
        // terminal (policy is for what agents and scripts send).
        Ok(TerminalClientFrame::Input(bytes)) => {
            if live.pty.write(bytes).await.is_err() {
                tracing::debug!(binding = %conn.binding_id, "input for an ended terminal dropped");
            }
        }
        Ok(TerminalClientFrame::Resize { cols, rows }) => {
            let id = conn.binding_id.clone();
            // Through the actor, which records the size.
            let r = route::call::<BindingMsg, _, _>(&names::binding(&id), |reply| {
                BindingMsg::Resize(ResizeRequest { cols, rows }, reply)
            })
            .await;
            if let Ok(Err(e)) | Err(e) = r.map(|r| r.map(|_| ())) {
                tracing::debug!(binding = %id, error = %e, "resize refused");
            }
        }
        Ok(TerminalClientFrame::Ack(offset)) => {
            if let Some(client) = client {
                live.pty.gate().ack(client, offset);
            }
        }
        Err(e) => tracing::debug!(binding = %conn.binding_id, error = %e, "bad terminal frame ignored"),
    }
    Ok(())
}

/// Whether the terminal socket for `id` may be upgraded: a stored binding.
pub fn exists(ctx: &Context, id: &str) -> bool {
    super::api::valid_id(id) && matches!(ctx.store.get::<BindingRecord>(id), Ok(Some(_)))
}

/// `from` in the socket's query, default 0.
pub fn from_offset(query: &str) -> Result<u64, String> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).map_err(|e| e.to_string())?;
    match pairs.iter().find(|(k, _)| k == "from") {
        Some((_, v)) => v.parse().map_err(|_| format!("from must be a byte offset, got {v:?}")),
        None => Ok(0),
    }
}
