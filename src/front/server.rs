//! Our own accept loop under warp: warp's server gives no say over
//! connections, and the boundary needs one (docs/SECURITY.md).
//!
//! - Every connection takes a slot in [`Connections`] (the cap, the loopback
//!   reserve, eviction of idle connections) and is closed when its head or
//!   its idle wait runs past the deadline the slot gives.
//! - Every request passes [`Boundary`] before warp sees it: the authority
//!   check (which needs the whole request, and warp's filters see only the
//!   path), and the connection's facts put into the request's extensions
//!   for the filters to read ([`ConnInfo`], [`RequestAuthority`]).
//! - `accept` failing for lack of file descriptors closes an idle connection
//!   and backs off, rather than spinning or stalling.
//!
//! Connection tasks are independent of the accept loop, so WebSockets
//! survive a restart of the front. Plain HTTP connections are wound down
//! when the server that accepted them stops, without cutting any request
//! off: each answers what it is asked next with `Connection: close`, and
//! one that is asked nothing closes at its idle deadline. (Closing an idle
//! keep-alive connection at once races with a client that is sending on it
//! just then, which would see its request fail.)

use super::authority::RequestAuthority;
use super::connections::{Connections, Slot, SlotHandle};
use super::error::ApiError;
use bytes::Bytes;
use http_body::Frame;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::Instrument as _;
use warp::http::header::{HeaderValue, CONNECTION};
use warp::http::{Request, Response, StatusCode};
use warp::reply::Reply;

/// Largest request head (and read buffer) of a connection: plenty for any
/// real client, and what a slow or unauthenticated one can make us hold.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// How long `accept` rests after running out of file descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// At most one warning per this long about `accept` failing.
const ACCEPT_WARN_EVERY: Duration = Duration::from_secs(10);

/// What the filters may ask about the connection a request came on.
#[derive(Clone)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub slot: Arc<Slot>,
}

/// A running server; stopping (or dropping) it stops the accept loop and
/// winds down the HTTP connections it accepted (see the module's doc).
pub struct Server {
    stop: watch::Sender<bool>,
    accept: JoinHandle<()>,
}

impl Server {
    pub fn start<F>(listener: TcpListener, filter: F, connections: Arc<Connections>) -> Server
    where
        F: warp::Filter<Extract = (warp::reply::Response,), Error = Infallible> + Clone + Send + Sync + 'static,
    {
        let (stop, stopped) = watch::channel(false);
        let accept = tokio::spawn(accept_loop(listener, filter, connections, stopped));
        Server { stop, accept }
    }

    pub fn stop(&self) {
        let _ = self.stop.send(true);
        self.accept.abort();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn accept_loop<F>(
    listener: TcpListener,
    filter: F,
    connections: Arc<Connections>,
    mut stopped: watch::Receiver<bool>,
) where
    F: warp::Filter<Extract = (warp::reply::Response,), Error = Infallible> + Clone + Send + Sync + 'static,
{
    let mut last_warned: Option<tokio::time::Instant> = None;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopped.changed() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                // Refused: dropped, so closed at once.
                let Some(handle) = connections.admit(peer) else { continue };
                let service = Boundary {
                    warp: TowerToHyperService::new(warp::service(filter.clone())),
                    conn: ConnInfo { peer, slot: handle.slot().clone() },
                };
                tokio::spawn(serve_connection(stream, handle, service, connections.clone(), stopped.clone()));
            }
            // The peer gave up before we got to it: nothing to do.
            Err(e) if is_connection_error(&e) => {}
            Err(e) => {
                // EMFILE, ENFILE, ENOBUFS...: make room and try again shortly,
                // rather than spinning on the error or waiting for luck.
                let evicted = connections.evict_oldest_idle();
                if last_warned.is_none_or(|t| t.elapsed() >= ACCEPT_WARN_EVERY) {
                    tracing::warn!(error = %e, evicted_idle = evicted, open = connections.open(), "accept failed");
                    last_warned = Some(tokio::time::Instant::now());
                }
                tokio::select! {
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                    _ = stopped.changed() => return,
                }
            }
        }
    }
}

fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), ConnectionRefused | ConnectionAborted | ConnectionReset | Interrupted | WouldBlock)
}

/// Serves one connection until it ends, is evicted, outlives its slot's
/// deadline, or the server stops.
async fn serve_connection<S>(
    stream: TcpStream,
    handle: SlotHandle,
    service: Boundary<S>,
    connections: Arc<Connections>,
    mut stopped: watch::Receiver<bool>,
) where
    S: hyper::service::Service<Request<Incoming>, Response = warp::reply::Response, Error = Infallible>
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let slot = handle.slot().clone();
    let limits = *connections.limits();
    // Valid as long as `conn`, which owns the stream, lives: this task's life.
    let fd = stream.as_raw_fd();
    let io = TokioIo::new(ConnIo { stream, handle });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.max_buf_size(MAX_HEAD_BYTES).keep_alive(true);
    let conn = http.serve_connection(io, service).with_upgrades();
    tokio::pin!(conn);
    let mut draining = false;
    loop {
        let deadline = slot.deadline(&limits);
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            () = sleep_until(deadline) => {
                if slot.evicted() && has_unread_bytes(fd) && connections.reprieve(&slot) {
                    tracing::debug!("kept an evicted connection whose client had just sent on it");
                    continue;
                }
                if slot.deadline(&limits).is_some_and(|d| d <= tokio::time::Instant::now()) {
                    tracing::debug!("closing a connection past its deadline (idle, slow head or evicted)");
                    return;
                }
            }
            () = slot.changed() => {}
            _ = stopped.changed(), if !draining => {
                draining = true;
                slot.drain();
            }
        }
    }
}

/// Whether bytes wait unread on the socket `fd` (peeked, not taken).
fn has_unread_bytes(fd: RawFd) -> bool {
    let mut byte = 0u8;
    // SAFETY: `fd` is an open socket (see its caller), and recv writes at
    // most the one byte it is given; MSG_PEEK leaves the byte for hyper.
    let n = unsafe { libc::recv(fd, (&mut byte as *mut u8).cast(), 1, libc::MSG_PEEK | libc::MSG_DONTWAIT) };
    n > 0
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// The socket of one connection, owning its slot (freed when the socket is
/// closed, whether by hyper or by the WebSocket that took it over). Reads
/// tell the slot a head has begun, and respect its [`super::connections::ReadBudget`].
struct ConnIo {
    stream: TcpStream,
    handle: SlotHandle,
}

impl AsyncRead for ConnIo {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let slot = this.handle.slot().clone();
        let before = buf.filled().len();
        let result = match slot.budget.allowance(cx.waker()) {
            None => Pin::new(&mut this.stream).poll_read(cx, buf),
            // Spent: held back until the budget is lifted (or the socket dropped).
            Some(0) => return Poll::Pending,
            Some(allowed) => {
                let mut limited = buf.take(allowed);
                let result = Pin::new(&mut this.stream).poll_read(cx, &mut limited);
                let n = limited.filled().len();
                // SAFETY: the read into `limited`, which is `buf`'s unfilled
                // memory, initialized its first `n` bytes.
                unsafe { buf.assume_init(n) };
                buf.advance(n);
                slot.budget.spend(n);
                result
            }
        };
        if buf.filled().len() > before {
            slot.bytes_read();
        }
        result
    }
}

impl AsyncWrite for ConnIo {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The body type of warp's replies, which warp does not name.
trait BodyOf {
    type Body;
}

impl<B> BodyOf for Response<B> {
    type Body = B;
}

type WarpBody = <warp::reply::Response as BodyOf>::Body;

/// In front of warp: checks the request's authority, and gives warp the
/// connection's facts; counts the request in flight until its answer is
/// written out.
struct Boundary<S> {
    warp: S,
    conn: ConnInfo,
}

impl<S> hyper::service::Service<Request<Incoming>> for Boundary<S>
where
    S: hyper::service::Service<Request<Incoming>, Response = warp::reply::Response, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response<TrackedBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<TrackedBody>, Infallible>> + Send>>;

    fn call(&self, mut req: Request<Incoming>) -> Self::Future {
        let in_flight = InFlight::begin(self.conn.slot.clone());
        let authority = match RequestAuthority::of_request(req.uri(), req.headers()) {
            Ok(authority) => authority,
            Err(e) => {
                tracing::debug!(error = %e, peer = %self.conn.peer, "refused a request for its authority");
                let response = super::auth::with_security_headers(ApiError::from(e).into_response());
                return Box::pin(std::future::ready(Ok(in_flight.track(response))));
            }
        };
        req.extensions_mut().insert(authority);
        req.extensions_mut().insert(self.conn.clone());
        let request_id = request_id(req.headers());
        // Every line logged while answering carries the id, which the answer
        // also gives back, so a client's report finds the daemon's lines.
        let span = tracing::info_span!("request", %request_id, method = %req.method(), path = %req.uri().path());
        let answer = {
            let _entered = span.enter();
            self.warp.call(req)
        };
        let started = std::time::Instant::now();
        Box::pin(async move {
            let response = match answer.instrument(span.clone()).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            span.in_scope(|| {
                let status = response.status().as_u16();
                let elapsed_ms = started.elapsed().as_millis() as u64;
                tracing::debug!(status, elapsed_ms, "answered");
            });
            let mut response = response;
            if let Ok(value) = HeaderValue::from_str(&request_id) {
                response.headers_mut().insert(REQUEST_ID, value);
            }
            if response.status() == StatusCode::SWITCHING_PROTOCOLS {
                in_flight.slot.mark_upgraded();
            } else if in_flight.slot.draining() {
                // The server stopped: this is the connection's last answer.
                response.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
            }
            Ok(in_flight.track(response))
        })
    }
}

const REQUEST_ID: &str = "x-request-id";

/// The request's `X-Request-Id` when a proxy or client gave a sane one
/// (up to 64 of `[A-Za-z0-9._-]`), else a new one.
fn request_id(headers: &warp::http::HeaderMap) -> String {
    let given = headers.get(REQUEST_ID).and_then(|v| v.to_str().ok()).filter(|id| {
        !id.is_empty()
            && id.len() <= 64
            && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    });
    match given {
        Some(id) => id.to_string(),
        None => uuid::Uuid::new_v4().simple().to_string()[..16].to_string(),
    }
}

/// A request counted in flight on its slot until dropped.
struct InFlight {
    slot: Arc<Slot>,
}

impl InFlight {
    fn begin(slot: Arc<Slot>) -> InFlight {
        slot.begin_request();
        InFlight { slot }
    }

    fn track(self, response: warp::reply::Response) -> Response<TrackedBody> {
        response.map(|body| TrackedBody { body, _in_flight: self })
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.slot.end_request();
    }
}

/// A response body that ends its request's time in flight when hyper is
/// done with it (written out, or dropped with the connection).
pub struct TrackedBody {
    body: WarpBody,
    _in_flight: InFlight,
}

impl http_body::Body for TrackedBody {
    type Data = Bytes;
    type Error = warp::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, warp::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
