//! Line-delimited JSON-RPC over a child's stdio, as `codex app-server` speaks
//! it: one JSON object per line, JSON-RPC 2.0 without the `"jsonrpc"` field.
//!
//! [`RpcClient`] sends requests (matching each reply to its caller by id),
//! notifications and replies to the server's own requests. Everything else the
//! server writes (its requests, its notifications, lines we cannot read)
//! comes out of the [`Incoming`] channel in the order it was written.
//!
//! Invariant: once the server's output ends, every request still waiting and
//! every later one fails with [`RpcError::Closed`]; none waits forever.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Map, Value};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot};

/// JSON-RPC's "method not found", for server requests we do not serve.
pub const METHOD_NOT_FOUND: i64 = -32601;

/// A line from the server that is not a reply to one of our requests.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// The server asks us something; answer with [`RpcClient::respond`] or
    /// [`RpcClient::respond_error`] using the same `id` (a number or a string).
    Request {
        id: Value,
        method: String,
        params: Value,
    },
    Notification {
        method: String,
        params: Value,
    },
    /// A line that is not JSON-RPC, or a reply nobody waits for. Worth a
    /// warning, never fatal.
    Problem(String),
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RpcError {
    #[error("{method} failed: {message} (code {code})")]
    Remote { method: String, code: i64, message: String },
    #[error("the agent connection is closed")]
    Closed,
    #[error("the reply to {method} is not understood: {error}")]
    BadReply { method: String, error: String },
    #[error("cannot encode {method}: {error}")]
    Encode { method: String, error: String },
}

type Reply = Result<Value, (i64, String)>;

#[derive(Default)]
struct Pending {
    waiting: HashMap<i64, oneshot::Sender<Reply>>,
    closed: bool,
}

/// The sending half of a connection; cheap to clone. The connection's stdin
/// closes when the last clone is dropped.
#[derive(Clone)]
pub struct RpcClient {
    lines: mpsc::UnboundedSender<String>,
    pending: Arc<Mutex<Pending>>,
    next_id: Arc<AtomicI64>,
}

impl std::fmt::Debug for RpcClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcClient").field("next_id", &self.next_id.load(Ordering::Relaxed)).finish_non_exhaustive()
    }
}

/// Removes a request's entry when its caller stops waiting (a lost `select!`,
/// an aborted task), so abandoned requests do not pile up.
struct Waiting<'a> {
    pending: &'a Mutex<Pending>,
    id: i64,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        lock(self.pending).waiting.remove(&self.id);
    }
}

fn lock(pending: &Mutex<Pending>) -> std::sync::MutexGuard<'_, Pending> {
    // The map stays consistent whatever panicked while holding it.
    pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl RpcClient {
    /// Starts the reader and writer tasks on the current tokio runtime.
    pub fn start<R, W>(reader: R, writer: W) -> (RpcClient, mpsc::UnboundedReceiver<Incoming>)
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let (lines_tx, lines_rx) = mpsc::unbounded_channel();
        let (incoming_tx, incoming_rx) = mpsc::unbounded_channel();
        let pending = Arc::new(Mutex::new(Pending::default()));
        tokio::spawn(write_lines(writer, lines_rx));
        tokio::spawn(read_lines(reader, pending.clone(), incoming_tx));
        (RpcClient { lines: lines_tx, pending, next_id: Arc::new(AtomicI64::new(1)) }, incoming_rx)
    }

    /// Sends a request and waits for its reply.
    pub async fn request<P: Serialize, T: DeserializeOwned>(&self, method: &str, params: &P) -> Result<T, RpcError> {
        let params = serde_json::to_value(params)
            .map_err(|e| RpcError::Encode { method: method.to_string(), error: e.to_string() })?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (reply_tx, reply_rx) = oneshot::channel();
        {
            let mut pending = lock(&self.pending);
            if pending.closed {
                return Err(RpcError::Closed);
            }
            pending.waiting.insert(id, reply_tx);
        }
        let _waiting = Waiting { pending: &self.pending, id };
        self.send(json!({"id": id, "method": method, "params": params}))?;
        match reply_rx.await {
            Err(_) => Err(RpcError::Closed),
            Ok(Err((code, message))) => Err(RpcError::Remote { method: method.to_string(), code, message }),
            Ok(Ok(result)) => serde_json::from_value(result)
                .map_err(|e| RpcError::BadReply { method: method.to_string(), error: e.to_string() }),
        }
    }

    /// Sends a notification; `params` of `None` sends none at all.
    pub fn notify<P: Serialize>(&self, method: &str, params: Option<&P>) -> Result<(), RpcError> {
        let mut message = Map::new();
        message.insert("method".into(), Value::String(method.to_string()));
        if let Some(params) = params {
            let params = serde_json::to_value(params)
                .map_err(|e| RpcError::Encode { method: method.to_string(), error: e.to_string() })?;
            message.insert("params".into(), params);
        }
        self.send(Value::Object(message))
    }

    /// Answers a server request.
    pub fn respond<R: Serialize>(&self, id: &Value, result: &R) -> Result<(), RpcError> {
        let result = serde_json::to_value(result)
            .map_err(|e| RpcError::Encode { method: "a reply".to_string(), error: e.to_string() })?;
        self.send(json!({"id": id, "result": result}))
    }

    /// Refuses a server request.
    pub fn respond_error(&self, id: &Value, code: i64, message: &str) -> Result<(), RpcError> {
        self.send(json!({"id": id, "error": {"code": code, "message": message}}))
    }

    fn send(&self, message: Value) -> Result<(), RpcError> {
        self.lines.send(message.to_string()).map_err(|_| RpcError::Closed)
    }
}

async fn write_lines<W: AsyncWrite + Unpin>(mut writer: W, mut lines: mpsc::UnboundedReceiver<String>) {
    while let Some(mut line) = lines.recv().await {
        line.push('\n');
        if writer.write_all(line.as_bytes()).await.is_err() || writer.flush().await.is_err() {
            // The reader notices the server is gone and fails the waiters.
            return;
        }
    }
    // All senders are gone: dropping the writer closes the server's stdin.
}

async fn read_lines<R: AsyncRead + Unpin>(
    reader: R,
    pending: Arc<Mutex<Pending>>,
    incoming: mpsc::UnboundedSender<Incoming>,
) {
    let mut reader = BufReader::new(reader);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf).await {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                let _ = incoming.send(Incoming::Problem(format!("reading the agent's output: {e}")));
                break;
            }
        }
        let line = String::from_utf8_lossy(&buf);
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(message) = classify(line, &pending) {
            // A closed receiver only means nobody listens any more; replies
            // still have to reach their waiters, so keep reading.
            let _ = incoming.send(message);
        }
    }
    let mut pending = lock(&pending);
    pending.closed = true;
    // Dropping the senders wakes every waiter with `Closed`.
    pending.waiting.clear();
}

/// Delivers a reply to its waiter (returning `None`) or turns the line into
/// an [`Incoming`].
fn classify(line: &str, pending: &Mutex<Pending>) -> Option<Incoming> {
    let value: Value = match serde_json::from_str(line) {
        Ok(value) => value,
        Err(e) => return Some(Incoming::Problem(format!("unreadable line from the agent ({e}): {}", clip(line)))),
    };
    let Value::Object(mut message) = value else {
        return Some(Incoming::Problem(format!("a line from the agent is not an object: {}", clip(line))));
    };
    let id = message.remove("id");
    let method = match message.remove("method") {
        Some(Value::String(method)) => Some(method),
        Some(_) => return Some(Incoming::Problem(format!("a message with a non-string method: {}", clip(line)))),
        None => None,
    };
    let params = message.remove("params").unwrap_or(Value::Null);
    match (id, method) {
        (Some(id), Some(method)) => Some(Incoming::Request { id, method, params }),
        (None, Some(method)) => Some(Incoming::Notification { method, params }),
        (Some(id), None) => {
            let reply = match (message.remove("result"), message.remove("error")) {
                (_, Some(error)) => Err(error_parts(&error)),
                (Some(result), None) => Ok(result),
                (None, None) => {
                    return Some(Incoming::Problem(format!("a reply with neither result nor error: {}", clip(line))))
                }
            };
            let waiter = id.as_i64().and_then(|id| lock(pending).waiting.remove(&id));
            match waiter {
                Some(waiter) => {
                    let _ = waiter.send(reply);
                    None
                }
                None => Some(Incoming::Problem(format!("a reply to no request of ours (id {id})"))),
            }
        }
        (None, None) => Some(Incoming::Problem(format!("a message with neither id nor method: {}", clip(line)))),
    }
}

fn error_parts(error: &Value) -> (i64, String) {
    let code = error.get("code").and_then(Value::as_i64).unwrap_or(0);
    let message = match error.get("message").and_then(Value::as_str) {
        Some(message) => message.to_string(),
        None => error.to_string(),
    };
    (code, message)
}

/// Keeps log lines readable when the agent writes something huge.
fn clip(line: &str) -> String {
    const MAX: usize = 300;
    match line.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    type ServerIn = tokio::io::Lines<BufReader<tokio::io::ReadHalf<tokio::io::DuplexStream>>>;
    type ServerOut = tokio::io::WriteHalf<tokio::io::DuplexStream>;

    /// A client wired to an in-memory "server": what the client writes comes
    /// out of `server_in`; what is written to `server_out` reaches the client.
    fn pair() -> (RpcClient, mpsc::UnboundedReceiver<Incoming>, ServerIn, ServerOut) {
        let (client_side, server_side) = tokio::io::duplex(64 * 1024);
        let (client_read, client_write) = tokio::io::split(client_side);
        let (server_read, server_write) = tokio::io::split(server_side);
        let (client, incoming) = RpcClient::start(client_read, client_write);
        (client, incoming, BufReader::new(server_read).lines(), server_write)
    }

    async fn next_json(lines: &mut ServerIn) -> Value {
        serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap()
    }

    #[tokio::test]
    async fn replies_reach_their_callers_whatever_the_order() {
        let (client, mut incoming, mut server_in, mut server_out) = pair();
        let first = tokio::spawn({
            let client = client.clone();
            async move { client.request::<_, Value>("a", &json!({"n": 1})).await }
        });
        let sent_a = next_json(&mut server_in).await;
        let second = tokio::spawn({
            let client = client.clone();
            async move { client.request::<_, Value>("b", &json!({"n": 2})).await }
        });
        let sent_b = next_json(&mut server_in).await;
        assert_eq!((sent_a["method"].as_str(), sent_b["method"].as_str()), (Some("a"), Some("b")));
        assert_ne!(sent_a["id"], sent_b["id"]);
        // Replies in reverse order, with a notification and a server request
        // in between.
        let script = format!(
            "{}\n{}\n{}\n{}\n",
            json!({"id": sent_b["id"], "error": {"code": -32600, "message": "nope"}}),
            json!({"method": "turn/started", "params": {"x": 1}}),
            json!({"id": 0, "method": "item/commandExecution/requestApproval", "params": {}}),
            json!({"id": sent_a["id"], "result": {"ok": true}}),
        );
        server_out.write_all(script.as_bytes()).await.unwrap();
        assert_eq!(first.await.unwrap().unwrap(), json!({"ok": true}));
        let err = second.await.unwrap().unwrap_err();
        assert_eq!(err, RpcError::Remote { method: "b".into(), code: -32600, message: "nope".into() });
        assert_eq!(
            incoming.recv().await.unwrap(),
            Incoming::Notification { method: "turn/started".into(), params: json!({"x": 1}) }
        );
        assert_eq!(
            incoming.recv().await.unwrap(),
            Incoming::Request {
                id: json!(0),
                method: "item/commandExecution/requestApproval".into(),
                params: json!({})
            }
        );
    }

    #[tokio::test]
    async fn malformed_lines_are_reported_and_reading_goes_on() {
        let (client, mut incoming, mut server_in, mut server_out) = pair();
        let request = tokio::spawn({
            let client = client.clone();
            async move { client.request::<_, Value>("x", &json!({})).await }
        });
        let sent = next_json(&mut server_in).await;
        let script = format!(
            "this is not json\n[1,2]\n{{\"id\": 999, \"result\": {{}}}}\n\n{}\n",
            json!({"id": sent["id"], "result": 5})
        );
        server_out.write_all(script.as_bytes()).await.unwrap();
        assert_eq!(request.await.unwrap().unwrap(), json!(5));
        for expected in ["unreadable line", "not an object", "no request of ours"] {
            match incoming.recv().await.unwrap() {
                Incoming::Problem(text) => assert!(text.contains(expected), "{text}"),
                other => panic!("expected a problem, got {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn end_of_output_fails_waiting_and_later_requests() {
        let (client, mut incoming, mut server_in, server_out) = pair();
        let request = tokio::spawn({
            let client = client.clone();
            async move { client.request::<_, Value>("x", &json!({})).await }
        });
        next_json(&mut server_in).await;
        // Both halves: the stream only ends once the whole server side is gone.
        drop((server_in, server_out));
        assert_eq!(request.await.unwrap().unwrap_err(), RpcError::Closed);
        assert!(incoming.recv().await.is_none());
        assert_eq!(client.request::<_, Value>("y", &json!({})).await.unwrap_err(), RpcError::Closed);
    }

    #[tokio::test]
    async fn notifications_and_replies_are_written_as_single_lines() {
        let (client, _incoming, mut server_in, _server_out) = pair();
        client.notify::<Value>("initialized", None).unwrap();
        client.respond(&json!("s-1"), &json!({"decision": "accept"})).unwrap();
        client.respond_error(&json!(7), METHOD_NOT_FOUND, "not here").unwrap();
        assert_eq!(next_json(&mut server_in).await, json!({"method": "initialized"}));
        assert_eq!(next_json(&mut server_in).await, json!({"id": "s-1", "result": {"decision": "accept"}}));
        assert_eq!(next_json(&mut server_in).await, json!({"id": 7, "error": {"code": -32601, "message": "not here"}}));
    }

    #[tokio::test]
    async fn a_bad_reply_shape_is_an_error_not_a_panic() {
        let (client, _incoming, mut server_in, mut server_out) = pair();
        let request = tokio::spawn({
            let client = client.clone();
            async move { client.request::<_, crate::protocol::TurnStartResponse>("turn/start", &json!({})).await }
        });
        let sent = next_json(&mut server_in).await;
        server_out
            .write_all(format!("{}\n", json!({"id": sent["id"], "result": {"turn": 1}})).as_bytes())
            .await
            .unwrap();
        assert!(matches!(request.await.unwrap(), Err(RpcError::BadReply { .. })));
    }
}
