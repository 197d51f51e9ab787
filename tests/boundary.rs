//! The network boundary (docs/SECURITY.md, "The network boundary"), attacked
//! with raw TCP, HTTP and WebSocket bytes against the real binary. Each test
//! is an attack that must fail closed: refused, bounded, and changing nothing.

mod common;

use common::*;
use futures::future::join_all;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ALWAYS: &str = "[auth]\nrequire = \"always\"\n";
/// How much a flood may grow the daemon's peak memory: a fraction of what
/// buffering the flood would cost (20 × 16 MB, 50 × 20 MiB).
const MAX_GROWTH_KIB: u64 = 40 * 1024;

/// A daemon under `config`; `Daemon::get` and friends send the admin token.
fn options(config: &str) -> Options {
    Options { config: Some(config.to_string()), admin_token: true, ..Options::default() }
}

/// `127.0.0.1:PORT`.
fn authority(d: &Daemon) -> String {
    d.url.trim_start_matches("http://").to_string()
}

fn port(d: &Daemon) -> u16 {
    authority(d).rsplit_once(':').and_then(|(_, p)| p.parse().ok()).expect("port in the URL")
}

/// An answer read off a raw connection.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: Value,
}

fn parse_answer(bytes: &[u8]) -> Option<Answer> {
    let text = String::from_utf8_lossy(bytes);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let body = serde_json::from_str(body.trim()).unwrap_or(Value::String(body.to_string()));
    Some(Answer { status, head: head.to_string(), body })
}

/// Writes `request` as it is on a new connection and reads until the daemon
/// closes it (requests here ask for `Connection: close`).
async fn raw(d: &Daemon, request: &str) -> Answer {
    let mut stream = TcpStream::connect(authority(d)).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write the request");
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "no complete answer within 10 s to {request:?}; got {:?}", String::from_utf8_lossy(&out));
    parse_answer(&out).unwrap_or_else(|| panic!("no HTTP answer to {request:?}: {:?}", String::from_utf8_lossy(&out)))
}

fn get_with_host(host: &str) -> String {
    format!("GET /api/v1/sessions HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
}

/// The attack: a name or request form that is not loopback must never be
/// served as the local, tokenless client. Stops DNS rebinding.
#[tokio::test]
async fn a_foreign_host_is_never_taken_for_loopback() {
    let dir = tempdir();
    let d = Daemon::start(&dir.path().join("data"), Options::default());
    let port = port(&d);

    // The honest local forms stay local: no token needed.
    for host in [format!("127.0.0.1:{port}"), format!("localhost:{port}"), format!("[::1]:{port}"), "127.0.0.1".into()]
    {
        let answer = raw(&d, &get_with_host(&host)).await;
        assert_eq!(answer.status, 200, "Host: {host}: {answer:?}");
    }

    // Names that only start like loopback are foreign names: 401 (a token is needed).
    for host in ["127.0.0.1.evil.example", "localhost.evil.example", "evil.example", "evil.example:80", "localhost."] {
        let answer = raw(&d, &get_with_host(host)).await;
        assert_eq!(answer.status, 401, "Host: {host}: {answer:?}");
        assert_eq!(answer.body["error"]["code"], "unauthorized", "Host: {host}");
    }

    // Authorities that are not a host and a port: 400.
    for host in [
        "[::1].evil.example",
        "[::1]evil.example",
        "127.0.0.1:7878@evil.example",
        "127.0.0.1:7878.evil.example",
        "127.0.0.1:",
        "127.0.0.1:99999",
        "127.0.0.1 evil.example",
        "[::1",
        "[fe80::1%25eth0]",
        "",
    ] {
        let answer = raw(&d, &get_with_host(host)).await;
        assert_eq!(answer.status, 400, "Host: {host:?}: {answer:?}");
        assert_eq!(answer.body["error"]["code"], "bad_request", "Host: {host:?}");
        assert!(answer.head.contains("x-content-type-options: nosniff"), "the security headers: {answer:?}");
    }

    // Two Host headers: whichever one a proxy or the app would read, refused.
    for (first, second) in [("127.0.0.1", "evil.example"), ("evil.example", "127.0.0.1"), ("127.0.0.1", "127.0.0.1")] {
        let request =
            format!("GET /api/v1/sessions HTTP/1.1\r\nHost: {first}\r\nHost: {second}\r\nConnection: close\r\n\r\n");
        let answer = raw(&d, &request).await;
        assert_eq!(answer.status, 400, "Host: {first} + Host: {second}: {answer:?}");
        assert_eq!(answer.body["error"]["code"], "bad_request");
    }

    // No Host at all (HTTP/1.0 allows leaving it out; we do not).
    for version in ["HTTP/1.0", "HTTP/1.1"] {
        let answer = raw(&d, &format!("GET /api/v1/sessions {version}\r\nConnection: close\r\n\r\n")).await;
        assert_eq!(answer.status, 400, "{version} without Host: {answer:?}");
        assert_eq!(answer.body["error"]["code"], "bad_request");
    }

    // The absolute form: the URI's authority is the one that counts.
    let request = format!(
        "GET http://evil.example/api/v1/sessions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    );
    let answer = raw(&d, &request).await;
    assert_eq!(answer.status, 401, "absolute URI to evil.example: {answer:?}");
    let request = format!(
        "GET http://127.0.0.1:{port}/api/v1/sessions HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n"
    );
    let answer = raw(&d, &request).await;
    assert_eq!(answer.status, 401, "absolute URI with a foreign Host: {answer:?}");
    let request = format!(
        "GET http://127.0.0.1:{port}/api/v1/sessions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    );
    assert_eq!(raw(&d, &request).await.status, 200, "a loopback absolute URI is local");

    // The WebSocket follows the same rule: a rebound page gets no tokenless socket.
    let upgrade = "GET /ws HTTP/1.1\r\nHost: [::1].evil.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                   Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    assert_eq!(raw(&d, upgrade).await.status, 400);
    let upgrade = "GET /ws?x=1 HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil.example\r\nUpgrade: websocket\r\n\
                   Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    assert_eq!(raw(&d, upgrade).await.status, 400);

    // Nothing above created anything, and the daemon is fine.
    let sessions = d.client().sessions(&Default::default()).await.expect("GET /api/v1/sessions");
    assert_eq!(sessions.sessions.len(), 0);
}

fn interrupt_request(port: u16, session: &str, turn: &str, headers: &str, body: &str) -> String {
    format!(
        "POST /api/v1/sessions/{session}/turns/{turn}/interrupt HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
         Connection: close\r\n{headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// The attack: a page on another origin posts a form (or a no-cors fetch)
/// to the loopback daemon, which needs no token there.
#[tokio::test]
async fn a_cross_site_form_cannot_interrupt_a_turn() {
    let dir = tempdir();
    let d = Daemon::start(&dir.path().join("data"), Options::default());
    let port = port(&d);
    let s = d.new_session(dir.path(), Policy::FullAccess).await;
    let marker = format!("3.{}", std::process::id());
    let t = d.start_turn(&s, &format!("RUN: sleep {marker}; echo done")).await;
    wait_process_running(&format!("sleep {marker}")).await;

    let forged = [
        // A classic cross-site form: text/plain, with the browser's own headers.
        (
            "form",
            "Content-Type: text/plain\r\nOrigin: http://evil.example\r\nSec-Fetch-Site: cross-site\r\n",
            "{}",
            403,
        ),
        // The same form from a browser that sends no Fetch metadata.
        ("form, Origin only", "Content-Type: text/plain\r\nOrigin: http://evil.example\r\n", "{}", 403),
        // From another port on localhost: same-site, still not same-origin.
        (
            "same-site",
            "Content-Type: application/json\r\nOrigin: http://127.0.0.1:1\r\nSec-Fetch-Site: same-site\r\n",
            "{}",
            403,
        ),
        ("Sec-Fetch-Site only", "X-Bosun-Client: x\r\nSec-Fetch-Site: cross-site\r\n", "", 403),
        ("sandboxed page", "X-Bosun-Client: x\r\nOrigin: null\r\n", "", 403),
        // A foreign Origin cannot borrow the marker either.
        ("JSON from a foreign origin", "Content-Type: application/json\r\nOrigin: http://evil.example\r\n", "{}", 403),
        // No Origin, no marker: a text/plain body, and no body at all.
        ("text/plain", "Content-Type: text/plain\r\n", "{}", 415),
        ("bodiless", "", "", 415),
        ("an empty marker", "X-Bosun-Client: \r\n", "", 415),
    ];
    for (what, headers, body, want) in forged {
        let answer = raw(&d, &interrupt_request(port, &s, &t, headers, body)).await;
        assert_eq!(answer.status, want, "{what}: {answer:?}");
        let code = if want == 403 { "forbidden" } else { "unsupported_media_type" };
        assert_eq!(answer.body["error"]["code"], code, "{what}: {answer:?}");
    }
    // The /auth routes are state-changing too (they mint pairing codes).
    let request = format!(
        "POST /auth/pairing HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Type: text/plain\r\n\
         Origin: http://evil.example\r\nContent-Length: 2\r\n\r\n{{}}"
    );
    assert_eq!(raw(&d, &request).await.status, 403);

    // None of them interrupted it: the turn runs to its normal end.
    let done = d.wait_turn_end(&s, &t).await;
    assert_eq!(done.status, TurnStatus::Completed, "{done:?}");

    // Our own clients get through: the marker header, even bodiless, with
    // the daemon's own Origin and a same-origin fetch.
    let t = d.start_turn(&s, "SLOW please").await;
    d.wait_events(&s, "a chunk", |evs| !chunks(evs, &t).is_empty()).await;
    let headers =
        format!("X-Bosun-Client: bosun-web\r\nOrigin: http://127.0.0.1:{port}\r\nSec-Fetch-Site: same-origin\r\n");
    let answer = raw(&d, &interrupt_request(port, &s, &t, &headers, "")).await;
    assert_eq!(answer.status, 202, "{answer:?}");
    assert_eq!(d.wait_turn_end(&s, &t).await.status, TurnStatus::Interrupted);
}

/// An upgrade request, read up to the end of the 101's head and no further.
async fn upgrade(d: &Daemon) -> TcpStream {
    upgrade_at(d, "/ws").await
}

async fn upgrade_at(d: &Daemon, path: &str) -> TcpStream {
    let mut stream = TcpStream::connect(authority(d)).await.expect("connect");
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        authority(d)
    );
    stream.write_all(request.as_bytes()).await.expect("write the upgrade");
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let byte = tokio::time::timeout(Duration::from_secs(10), stream.read_u8()).await;
        head.push(byte.expect("the 101 within 10 s").expect("read the 101"));
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    stream
}

/// A client's text frame, masked with a zero key (so the payload goes as it is).
fn text_frame(payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0x81u8];
    match payload.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n if n <= 0xffff => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&[0, 0, 0, 0]);
    frame.extend_from_slice(payload);
    frame
}

/// The next text frame the daemon sends (skipping pings), as JSON; `None`
/// when the socket closes (or sends a close frame) first, or after 10 s.
async fn read_text_frame(stream: &mut TcpStream) -> Option<Value> {
    let read = async {
        loop {
            let mut head = [0u8; 2];
            stream.read_exact(&mut head).await.ok()?;
            let len = match head[1] & 0x7f {
                126 => u64::from(stream.read_u16().await.ok()?),
                127 => stream.read_u64().await.ok()?,
                n => u64::from(n),
            };
            let mut payload = vec![0u8; len as usize];
            stream.read_exact(&mut payload).await.ok()?;
            match head[0] & 0x0f {
                0x1 => return serde_json::from_slice(&payload).ok(),
                0x8 => return None,
                _ => continue,
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read).await.ok().flatten()
}

/// Whether the daemon closes `stream` within `within` (reading and dropping
/// whatever it sends first, an error frame say).
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = vec![0u8; 64 * 1024];
    let read_to_end = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    };
    tokio::time::timeout(within, read_to_end).await.is_ok()
}

/// The attack: sockets that have not authenticated send the largest frames
/// they can, to make the daemon buffer them.
#[tokio::test]
async fn unauthenticated_websockets_cannot_make_the_daemon_buffer_frames() {
    const FRAME: u64 = 16_000_000;
    let dir = tempdir();
    let d = Daemon::start(&dir.path().join("data"), options(ALWAYS));
    d.wait_health(|_| true).await;
    let before = d.peak_rss_kib();

    let chunk = Arc::new(vec![b'a'; 1024 * 1024]);
    let attacks = (0..20).map(|_| {
        let chunk = chunk.clone();
        let stream = upgrade(&d);
        async move {
            let mut stream = stream.await;
            // A masked text frame with a 64-bit length; mask 0 leaves the payload as it is.
            let mut header = vec![0x81u8, 0x80 | 127];
            header.extend_from_slice(&FRAME.to_be_bytes());
            header.extend_from_slice(&[0, 0, 0, 0]);
            let (mut reader, mut writer) = stream.split();
            let write = async {
                writer.write_all(&header).await?;
                let mut sent = 0u64;
                while sent < FRAME {
                    let n = chunk.len().min((FRAME - sent) as usize);
                    writer.write_all(&chunk[..n]).await?;
                    sent += n as u64;
                }
                std::io::Result::Ok(())
            };
            // The daemon may close while the frame is still going out: a failed write is fine.
            let _ = tokio::time::timeout(Duration::from_secs(60), write).await;
            let mut buf = vec![0u8; 64 * 1024];
            let closed = tokio::time::timeout(Duration::from_secs(15), async {
                loop {
                    match reader.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => continue,
                    }
                }
            })
            .await
            .is_ok();
            closed
        }
    });
    let closed = join_all(attacks).await;
    assert!(closed.iter().all(|c| *c), "every socket that sent a huge frame unauthenticated is closed: {closed:?}");
    let growth = d.peak_rss_kib().saturating_sub(before);
    eprintln!("peak RSS {before} KiB before the flood, grew by {growth} KiB");
    assert!(growth < MAX_GROWTH_KIB, "peak RSS grew by {growth} KiB (from {before} KiB)");

    // A socket that never authenticates is closed too.
    let mut silent = upgrade(&d).await;
    assert!(closed_within(&mut silent, Duration::from_secs(15)).await, "a silent unauthenticated socket is closed");

    // A frame under the frame limit but over the 4 KiB allowed before
    // authenticating is not waited for: refused, and closed.
    let mut chatty = upgrade(&d).await;
    chatty.write_all(&text_frame(&vec![b' '; 60 * 1024])).await.ok();
    let refused = read_text_frame(&mut chatty).await.expect("an error frame");
    assert_eq!(refused["error"]["code"], "unauthorized", "{refused}");
    assert!(closed_within(&mut chatty, Duration::from_secs(15)).await, "closed after the refusal");

    // Once authenticated, the socket may send frames of the normal size, even
    // ones it sent right behind its auth message.
    let mut eager = upgrade(&d).await;
    let auth = json!({"op": "auth", "token": d.admin_token()}).to_string();
    let topics: Vec<String> = (0..1000).map(|i| format!("session:s_topic{i:04}")).collect();
    let subscribe = json!({"op": "subscribe", "topics": topics, "since": 0}).to_string();
    assert!(subscribe.len() > 16 * 1024, "a frame well over the pre-auth allowance");
    let mut both = text_frame(auth.as_bytes());
    both.extend(text_frame(subscribe.as_bytes()));
    eager.write_all(&both).await.expect("write auth and subscribe");
    assert_eq!(read_text_frame(&mut eager).await.expect("auth answer")["op"], "authenticated");
    assert_eq!(read_text_frame(&mut eager).await.expect("subscribe answer")["op"], "subscribed");

    // The daemon still serves, and a socket that authenticates still works.
    d.client().health().await.expect("the daemon still serves /health");
    let mut ws = ws_connect(&d).await;
    ws_send(&mut ws, json!({"op": "auth", "token": d.admin_token()})).await;
    assert_eq!(ws_next(&mut ws, Duration::from_secs(10)).await.expect("auth answer")["op"], "authenticated");
    ws_subscribe(&mut ws, &["*"], 0).await;
}

/// Both sockets, `/ws` and a terminal's, allow 4 KiB before the first
/// message authenticates: a frame that would take more is not waited for
/// (nor read), the socket is closed at once rather than at the 5 s the
/// first message has.
#[tokio::test]
async fn a_socket_sending_more_than_4_kib_before_authenticating_is_closed_at_once() {
    let dir = tempdir();
    let d = Daemon::start(&dir.path().join("data"), options(ALWAYS));
    d.wait_health(|_| true).await;
    for path in ["/ws", "/ws/terminal/b_000000000000"] {
        let mut stream = upgrade_at(&d, path).await;
        // A 60 KiB text frame of which only 8 KiB ever comes.
        let mut frame = vec![0x81u8, 0x80 | 126];
        frame.extend_from_slice(&(60u16 * 1024).to_be_bytes());
        frame.extend_from_slice(&[0, 0, 0, 0]);
        frame.extend(std::iter::repeat_n(b' ', 8 * 1024));
        stream.write_all(&frame).await.expect("write");
        assert!(
            closed_within(&mut stream, Duration::from_secs(3)).await,
            "{path}: closed well before the auth timeout"
        );
    }
}

/// The attack: unauthenticated uploads of the largest body a route takes,
/// many at once, to make the daemon buffer them before it says 401.
#[tokio::test]
async fn unauthenticated_bodies_are_refused_unread() {
    const BODY: usize = 20 * 1024 * 1024;
    let dir = tempdir();
    let d = Daemon::start(&dir.path().join("data"), options(ALWAYS));
    d.wait_health(|_| true).await;
    let before = d.peak_rss_kib();

    let chunk = Arc::new(vec![b'a'; 256 * 1024]);
    let attacks = (0..50).map(|_| {
        let chunk = chunk.clone();
        let addr = authority(&d);
        async move {
            let mut stream = TcpStream::connect(&addr).await.expect("connect");
            let head = format!(
                "PUT /api/v1/sessions/x/file?path=a HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
                 X-Bosun-Client: attack\r\nContent-Length: {BODY}\r\n\r\n"
            );
            let (mut reader, mut writer) = stream.split();
            let write = async {
                writer.write_all(head.as_bytes()).await?;
                let mut sent = 0;
                while sent < BODY {
                    let n = chunk.len().min(BODY - sent);
                    writer.write_all(&chunk[..n]).await?;
                    sent += n;
                }
                std::io::Result::Ok(())
            };
            let read = async {
                let mut answer = Vec::new();
                let mut buf = vec![0u8; 16 * 1024];
                // Until the head is in, or the connection ends.
                while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
                    match reader.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => answer.extend_from_slice(&buf[..n]),
                    }
                }
                answer
            };
            let (_, answer) =
                tokio::time::timeout(Duration::from_secs(60), futures::future::join(async { write.await.ok() }, read))
                    .await
                    .unwrap_or((None, Vec::new()));
            String::from_utf8_lossy(&answer).lines().next().unwrap_or("").to_string()
        }
    });
    let status_lines = join_all(attacks).await;
    for line in &status_lines {
        assert!(line.starts_with("HTTP/1.1 401"), "every unauthenticated upload gets its 401: {status_lines:?}");
    }
    let growth = d.peak_rss_kib().saturating_sub(before);
    eprintln!("peak RSS {before} KiB before the flood, grew by {growth} KiB");
    assert!(growth < MAX_GROWTH_KIB, "peak RSS grew by {growth} KiB (from {before} KiB)");

    // The pairing exchange, the one route without a token, takes only a small body.
    let big = json!({"pairing_code": "x".repeat(64 * 1024), "device_name": "phone"});
    let resp = d.http.post(format!("{}/auth/token", d.url)).json(&big).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 413);
    // And the daemon still serves.
    d.client().health().await.expect("the daemon still serves /health");
}

async fn get_sessions_as(d: &Daemon, token: &str, forwarded_for: Option<&str>) -> u16 {
    let mut req = d.http.get(format!("{}/api/v1/sessions", d.url)).bearer_auth(token);
    if let Some(client) = forwarded_for {
        req = req.header("x-forwarded-for", client);
    }
    req.send().await.expect("request").status().as_u16()
}

/// The attack: bad tokens sent through a reverse proxy on the same host put
/// the proxy's address, and with it the local admin, under the limit.
#[tokio::test]
async fn bad_tokens_through_a_proxy_lock_out_only_their_client() {
    let dir = tempdir();
    let home = tempdir();
    let config = format!("{ALWAYS}trusted_proxies = [\"127.0.0.1\", \"10.0.0.0/8\"]\n");
    let d = Daemon::start(&dir.path().join("data"), options(&config));
    let data_dir = d.data_dir.to_str().unwrap().to_string();
    for i in 0..10 {
        assert_eq!(get_sessions_as(&d, "bsn_guess", Some("203.0.113.7")).await, 401, "attempt {i}");
    }
    assert_eq!(get_sessions_as(&d, "bsn_guess", Some("203.0.113.7")).await, 429, "the guessing client is limited");
    // The proxy's address in the chain does not hide the client.
    assert_eq!(get_sessions_as(&d, "bsn_guess", Some("203.0.113.7, 127.0.0.1")).await, 429);
    // Another client behind the same proxy is not.
    assert_eq!(get_sessions_as(&d, "bsn_guess", Some("203.0.113.8")).await, 401);
    // Nor the admin, directly or through the proxy, nor the CLI.
    let admin = d.admin_token();
    assert_eq!(get_sessions_as(&d, &admin, None).await, 200);
    assert_eq!(get_sessions_as(&d, &admin, Some("203.0.113.7")).await, 200);
    let out = bosun(&d, home.path(), &["status", "--json", "--data-dir", &data_dir]);
    assert!(out.status.success(), "the admin CLI: {}", String::from_utf8_lossy(&out.stderr));

    // Without trusted proxies the TCP peer is the identity: loopback guesses
    // limit loopback, but never the admin credential.
    let dir = tempdir();
    let d = Daemon::start(&dir.path().join("data"), options(ALWAYS));
    let data_dir = d.data_dir.to_str().unwrap().to_string();
    for i in 0..10 {
        assert_eq!(get_sessions_as(&d, "bsn_guess", Some("203.0.113.7")).await, 401, "attempt {i}");
    }
    assert_eq!(get_sessions_as(&d, "bsn_guess", None).await, 429, "an untrusted X-Forwarded-For changes nothing");
    assert_eq!(get_sessions_as(&d, &d.admin_token(), None).await, 200);
    let out = bosun(&d, home.path(), &["session", "ls", "--json", "--data-dir", &data_dir]);
    assert!(out.status.success(), "the admin CLI: {}", String::from_utf8_lossy(&out.stderr));
}

/// The attack: more idle connections than the daemon has file descriptors.
#[tokio::test]
async fn idle_connections_cannot_exhaust_the_daemon() {
    let dir = tempdir();
    let home = tempdir();
    let d = Daemon::start(&dir.path().join("data"), Options { nofile: Some(256), ..Options::default() });
    let data_dir = d.data_dir.to_str().unwrap().to_string();
    d.wait_health(|_| true).await;

    let mut idle = Vec::new();
    for _ in 0..300 {
        match tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(authority(&d))).await {
            Ok(Ok(stream)) => idle.push(stream),
            other => panic!("connect: {other:?}"),
        }
    }
    let health = tokio::time::timeout(Duration::from_secs(10), d.client().health()).await;
    health.expect("/health answers within 10 s with 300 idle connections open").expect("GET /health");
    let started = Instant::now();
    let out = bosun(&d, home.path(), &["status", "--json", "--data-dir", &data_dir]);
    assert!(out.status.success(), "the admin CLI: {}", String::from_utf8_lossy(&out.stderr));
    assert!(started.elapsed() < Duration::from_secs(30), "the CLI took {:?}", started.elapsed());

    // A connection that sends half a request head and stops is one of them too.
    let mut slow = TcpStream::connect(authority(&d)).await.expect("connect");
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n").await.expect("write");

    drop(idle);
    let health = tokio::time::timeout(Duration::from_secs(10), d.client().health()).await;
    health.expect("/health answers after the flood").expect("GET /health");
    // The half-sent head is cut off (header timeout, or eviction), not held forever.
    assert!(
        closed_within(&mut slow, Duration::from_secs(30)).await,
        "a connection that never finishes its head is closed"
    );
    let out = bosun(&d, home.path(), &["session", "ls", "--json", "--data-dir", &data_dir]);
    assert!(out.status.success(), "the admin CLI: {}", String::from_utf8_lossy(&out.stderr));
}

/// The attack: one socket subscribes to more topics than anyone needs, to
/// make every event's fan-out walk them.
#[tokio::test]
async fn subscriptions_per_socket_are_capped() {
    let dir = tempdir();
    let d = Daemon::start(&dir.path().join("data"), Options::default());
    let s = d.new_session(dir.path(), Policy::PlanOnly).await;
    let mut ws = ws_connect(&d).await;
    let head = d.client().health().await.expect("GET /health").head_seq;
    let fake =
        |from: usize, n: usize| -> Vec<String> { (from..from + n).map(|i| format!("session:s_fake{i}")).collect() };

    // 1 real topic + 999 fake ones, in frames of 200 (topics add up).
    let mut first = vec![format!("session:{s}")];
    first.extend(fake(0, 199));
    let refs: Vec<&str> = first.iter().map(String::as_str).collect();
    ws_subscribe(&mut ws, &refs, head).await;
    for frame in 1..5 {
        let topics = fake(frame * 200, 200);
        let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
        ws_subscribe(&mut ws, &refs, head).await;
    }
    // 1,000 now; 25 more would pass 1,024.
    let topics = fake(1000, 25);
    ws_send(&mut ws, json!({"op": "subscribe", "topics": topics, "since": head})).await;
    let refused = ws_error(&mut ws, Duration::from_secs(10)).await;
    assert_eq!(refused.code, "too_many_topics", "{refused:?}");
    // Already-subscribed topics cost nothing; 24 new ones fit exactly.
    let mut topics = fake(0, 10);
    topics.extend(fake(1000, 24));
    let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
    ws_subscribe(&mut ws, &refs, head).await;
    ws_send(&mut ws, json!({"op": "subscribe", "topics": ["session:s_one_more"], "since": head})).await;
    let refused = ws_error(&mut ws, Duration::from_secs(10)).await;
    assert_eq!(refused.code, "too_many_topics", "{refused:?}");

    // The daemon is not slowed, and the socket still streams its topics.
    let health = tokio::time::timeout(Duration::from_secs(10), d.client().health()).await;
    health.expect("/health within 10 s").expect("GET /health");
    let t = d.start_turn(&s, "hello").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let frame = ws_next_frame(&mut ws, left).await.expect("the session's events still arrive");
        if matches!(&frame, ServerFrame::Event(e) if is_turn_completed(e, &t)) {
            break;
        }
    }
}
