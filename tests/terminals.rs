//! PTY terminals against the real binary: spawned through the API, read
//! over `/ws/terminal/{id}` byte-exact to their end, reattached, held back
//! by flow control, resized, and readable after a kill -9 of the daemon.

mod common;

use bosun_client::{TerminalEvent, TerminalStream};
use bosun_proto::{BindingState, BindingView, ResizeRequest, SendTextRequest, SpawnTerminalRequest, TerminalKind};
use common::*;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::time::{Duration, Instant};

fn spawn_req(command: &[&str]) -> SpawnTerminalRequest {
    SpawnTerminalRequest {
        terminal: Some(TerminalKind::Pty),
        command: command.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

/// A daemon whose terminals run what they are told (`full-access`): these
/// tests are about the stream; tests/termbridge.rs holds the policy.
fn daemon(dir: &std::path::Path, fault_injection: bool) -> Daemon {
    let config = "[termbridge]\npolicy = \"full-access\"\n".to_string();
    Daemon::start(&dir.join("data"), Options { fault_injection, config: Some(config), ..Default::default() })
}

async fn spawn_with(client: &bosun_client::Client, req: &SpawnTerminalRequest) -> BindingView {
    let outcome = client.spawn_terminal(req).await.expect("spawn a terminal");
    let shown = format!("{outcome:?}");
    outcome.binding.unwrap_or_else(|| panic!("bound at once: {shown}"))
}

async fn spawn(d: &Daemon, command: &[&str]) -> BindingView {
    spawn_with(&d.client(), &spawn_req(command)).await
}

/// Everything from the stream until its end, acknowledging as it goes; the
/// offsets must follow on from each other exactly.
async fn read_to_end(stream: &mut TerminalStream, timeout: Duration) -> (Vec<u8>, bosun_proto::TerminalExit) {
    let mut out = Vec::new();
    let mut next = stream.hello.from;
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = tokio::time::timeout(left, stream.next()).await.expect("the terminal ended in time").expect("read");
        match event {
            TerminalEvent::Output { offset, bytes } => {
                assert_eq!(offset, next, "output continues exactly where the last frame ended");
                next += bytes.len() as u64;
                out.extend_from_slice(&bytes);
                stream.writer().ack(next).await.expect("ack");
            }
            TerminalEvent::Exit(exit) => {
                assert_eq!(exit.end, next, "the end frame comes after every byte");
                return (out, exit);
            }
            TerminalEvent::Closed => panic!("the socket closed without the terminal's end"),
            TerminalEvent::Clipboard(_) => panic!("no clipboard write was asked for"),
        }
    }
}

#[tokio::test]
async fn every_byte_of_a_thousand_short_lived_commands_arrives_before_their_exit() {
    let dir = tempdir();
    let d = daemon(dir.path(), false);
    let client = d.client();
    let mut tasks = tokio::task::JoinSet::new();
    // Four at a time: attaching races the exit in every possible order.
    let per_worker = 250;
    for worker in 0..4 {
        let client = client.clone();
        tasks.spawn(async move {
            for i in 0..per_worker {
                let code = (worker * per_worker + i) % 7;
                let script = format!("echo ready; exit {code}");
                let req = spawn_req(&["sh", "-c", &script]);
                let b = spawn_with(&client, &req).await;
                let mut stream = client.attach_terminal(&b.binding_id, 0).await.expect("attach");
                let (out, exit) = read_to_end(&mut stream, Duration::from_secs(30)).await;
                assert_eq!(out, b"ready\r\n", "command {i} of worker {worker}");
                assert_eq!(exit.state, BindingState::Exited);
                assert_eq!(exit.exit.and_then(|e| e.code), Some(code));
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("a worker");
    }
    let bindings = client.bindings().await.expect("bindings").bindings;
    assert_eq!(bindings.len(), 1000);
    assert!(bindings.iter().all(|b| b.state == BindingState::Exited && b.output.is_some_and(|o| o.end == 7)));
}

#[tokio::test]
async fn a_200_mb_stream_arrives_byte_exact_and_the_scrollback_keeps_its_tail() {
    let dir = tempdir();
    let d = daemon(dir.path(), false);
    // Random bytes through a PTY with output processing off (no CR added).
    let file = dir.path().join("big");
    let status = std::process::Command::new("head")
        .args(["-c", "200000000", "/dev/urandom"])
        .stdout(std::fs::File::create(&file).expect("create"))
        .status()
        .expect("head");
    assert!(status.success());
    let data = std::fs::read(&file).expect("read");
    let expected = Sha256::digest(&data);
    let script = format!("stty -opost; cat {}", file.display());
    let b = spawn(&d, &["sh", "-c", &script]).await;
    let mut stream = d.client().attach_terminal(&b.binding_id, 0).await.expect("attach");
    let mut hasher = Sha256::new();
    let mut next = 0u64;
    let exit = loop {
        match tokio::time::timeout(Duration::from_secs(120), stream.next()).await.expect("in time").expect("read") {
            TerminalEvent::Output { offset, bytes } => {
                assert_eq!(offset, next);
                next += bytes.len() as u64;
                hasher.update(&bytes);
                stream.writer().ack(next).await.expect("ack");
            }
            TerminalEvent::Exit(exit) => break exit,
            TerminalEvent::Closed => panic!("closed without an end"),
            TerminalEvent::Clipboard(_) => panic!("no clipboard write was asked for"),
        }
    };
    assert_eq!(next, data.len() as u64, "every byte, none extra");
    assert_eq!(hasher.finalize(), expected, "the same bytes, in the same order");
    assert_eq!(exit.end, next);
    // The retention (8 MiB by default) keeps the tail, byte-exact too.
    let text = d.client().binding(&b.binding_id).await.expect("binding");
    let range = text.output.expect("a pty has an output range");
    assert_eq!(range.end, data.len() as u64);
    assert!(range.end - range.start >= 8 * 1024 * 1024, "{range:?}");
    let mut tail = d.client().attach_terminal(&b.binding_id, range.end - 1000).await.expect("attach again");
    let (bytes, _) = read_to_end(&mut tail, Duration::from_secs(30)).await;
    assert_eq!(bytes, data[data.len() - 1000..]);
}

/// A client still reading (and acknowledging) the replay of an ended
/// terminal when the daemon has sent its last frame: the daemon waits for the
/// client's close rather than dropping a socket with unread acks in it, whose
/// reset would throw away what the client had not read yet.
#[tokio::test]
async fn a_slow_reader_of_an_ended_terminal_gets_every_byte_and_the_exit() {
    let dir = tempdir();
    let d = daemon(dir.path(), false);
    let file = dir.path().join("out");
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(&file, &data).expect("write");
    let script = format!("stty -opost; cat {}; exit 7", file.display());
    let b = spawn(&d, &["sh", "-c", &script]).await;
    let client = d.client();
    let deadline = Instant::now() + Duration::from_secs(60);
    while client.binding(&b.binding_id).await.expect("binding").state == BindingState::Open {
        assert!(Instant::now() < deadline, "the terminal ended");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut stream = client.attach_terminal(&b.binding_id, 0).await.expect("attach");
    let mut out = Vec::new();
    let exit = loop {
        match tokio::time::timeout(Duration::from_secs(60), stream.next()).await.expect("in time").expect("read") {
            TerminalEvent::Output { offset, bytes } => {
                assert_eq!(offset, out.len() as u64);
                out.extend_from_slice(&bytes);
                stream.writer().ack(out.len() as u64).await.expect("an ack is taken until the client closes");
                // Slower than the daemon sends: its last frame goes out long
                // before this loop reads it.
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            TerminalEvent::Exit(exit) => break exit,
            TerminalEvent::Closed => panic!("closed without the exit after {} bytes", out.len()),
            TerminalEvent::Clipboard(_) => panic!("no clipboard write was asked for"),
        }
    };
    assert!(out == data, "every byte, in order ({} of {})", out.len(), data.len());
    assert_eq!(exit.end, data.len() as u64);
    assert_eq!(exit.exit.and_then(|e| e.code), Some(7));
}

#[tokio::test]
async fn a_reattach_from_the_rendered_offset_loses_and_repeats_nothing() {
    let dir = tempdir();
    let d = daemon(dir.path(), false);
    let b = spawn(&d, &["sh", "-c", "i=0; while [ $i -lt 400 ]; do echo line $i; i=$((i+1)); sleep 0.005; done"]).await;
    let client = d.client();
    let mut seen = Vec::new();
    let mut rendered = 0u64;
    let mut reconnects = 0;
    let exit = 'outer: loop {
        let mut stream = client.attach_terminal(&b.binding_id, rendered).await.expect("attach");
        assert_eq!(stream.hello.from, rendered);
        // Drop the socket after a few frames, as a reload or a network change would.
        for _ in 0..5 {
            match stream.next().await.expect("read") {
                TerminalEvent::Output { offset, bytes } => {
                    assert_eq!(offset, rendered, "resumed exactly at the rendered offset");
                    rendered += bytes.len() as u64;
                    seen.extend_from_slice(&bytes);
                }
                TerminalEvent::Exit(exit) => break 'outer exit,
                TerminalEvent::Closed => panic!("closed"),
                TerminalEvent::Clipboard(_) => panic!("no clipboard write was asked for"),
            }
        }
        reconnects += 1;
    };
    assert!(reconnects > 3, "the test dropped the socket mid-stream ({reconnects} times)");
    let expected: String = (0..400).map(|i| format!("line {i}\r\n")).collect();
    assert_eq!(String::from_utf8_lossy(&seen), expected);
    assert_eq!(exit.end, rendered);
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_client_that_stops_reading_pauses_the_terminal_and_memory_stays_bounded() {
    let dir = tempdir();
    let d = daemon(dir.path(), false);
    let before = rss_kib(d.pid());
    // Endless output.
    let b = spawn(&d, &["sh", "-c", "stty -opost; yes 0123456789abcdefghijklmnopqrstuvwxyz"]).await;
    let client = d.client();
    // Attached, reading nothing and acknowledging nothing.
    let stuck = client.attach_terminal(&b.binding_id, 0).await.expect("attach");
    let mut last = 0;
    let mut stable_since = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(60);
    // The terminal stops growing: its reader waits for the client.
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let end = client.binding(&b.binding_id).await.expect("binding").output.expect("range").end;
        if end != last {
            last = end;
            stable_since = Instant::now();
        } else if stable_since.elapsed() > Duration::from_secs(2) {
            break;
        }
        assert!(Instant::now() < deadline, "the terminal never paused (at {end} bytes)");
    }
    assert!(last > 0 && last < 64 * 1024 * 1024, "paused near the high watermark, at {last} bytes");
    let rss = rss_kib(d.pid());
    assert!(rss < before + 200 * 1024, "the daemon's memory stays bounded: {before} KiB → {rss} KiB");
    // Once the client reads and acknowledges, the terminal goes on.
    let mut stuck = stuck;
    let mut next = stuck.hello.from;
    while next < last + 32 * 1024 * 1024 {
        match stuck.next().await.expect("read") {
            TerminalEvent::Output { offset, bytes } => {
                assert_eq!(offset, next);
                next += bytes.len() as u64;
                stuck.writer().ack(next).await.expect("ack");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let closed = client.close_binding(&b.binding_id).await.expect("close");
    assert_eq!(closed.binding.state, BindingState::Closed, "answered once the terminal has ended");
    let closed = client.binding(&b.binding_id).await.expect("binding");
    assert_eq!(closed.state, BindingState::Closed);
}

#[tokio::test]
async fn resize_reaches_the_program_and_input_is_typed_into_it() {
    let dir = tempdir();
    let d = daemon(dir.path(), false);
    let b = spawn(&d, &["sh"]).await;
    let client = d.client();
    let mut stream = client.attach_terminal(&b.binding_id, 0).await.expect("attach");
    stream.writer().resize(101, 37).await.expect("resize");
    // The size is recorded once the actor has it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while client.binding(&b.binding_id).await.expect("binding").size.map(|s| (s.cols, s.rows)) != Some((101, 37)) {
        assert!(Instant::now() < deadline, "the size was never recorded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stream.writer().input(b"stty size; exit 5\r").await.expect("input");
    let (out, exit) = read_to_end(&mut stream, Duration::from_secs(20)).await;
    assert!(String::from_utf8_lossy(&out).contains("37 101"), "{:?}", String::from_utf8_lossy(&out));
    assert_eq!(exit.exit.and_then(|e| e.code), Some(5));
    // And through the API, the same.
    let b = spawn(&d, &["sh"]).await;
    client.resize_terminal(&b.binding_id, &ResizeRequest { cols: 90, rows: 20 }).await.expect("resize");
    client
        .send_text(&b.binding_id, &SendTextRequest { text: "stty size; exit".into(), paste: false, enter: true })
        .await
        .expect("send");
    let mut stream = client.attach_terminal(&b.binding_id, 0).await.expect("attach");
    let (out, _) = read_to_end(&mut stream, Duration::from_secs(20)).await;
    assert!(String::from_utf8_lossy(&out).contains("20 90"), "{:?}", String::from_utf8_lossy(&out));
    let text = client.read_text(&b.binding_id).await.expect("read");
    assert_eq!(text.text.as_bytes(), &out[..], "read gives the whole scrollback");
}

#[tokio::test]
async fn after_a_kill_9_the_scrollback_is_readable_and_the_process_is_reported_ended() {
    let dir = tempdir();
    let mut d = daemon(dir.path(), false);
    let marker = format!("bosun-term-marker-{}", std::process::id());
    let script = format!("echo before the kill; exec -a {marker} sleep 300");
    let b = spawn(&d, &["bash", "-c", &script]).await;
    let mut stream = d.client().attach_terminal(&b.binding_id, 0).await.expect("attach");
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("before the kill") {
        match stream.next().await.expect("read") {
            TerminalEvent::Output { bytes, .. } => seen.extend_from_slice(&bytes),
            other => panic!("unexpected {other:?}"),
        }
    }
    wait_process_running(&marker).await;
    d.kill9();
    let d = d.restart();
    let lost = d.client().binding(&b.binding_id).await.expect("binding");
    assert_eq!(lost.state, BindingState::Lost);
    assert!(lost.reason.as_deref().is_some_and(|r| r.contains("restarted")), "{:?}", lost.reason);
    wait_process_gone(&marker).await;
    let text = d.client().read_text(&b.binding_id).await.expect("read");
    assert!(text.text.contains("before the kill"), "{:?}", text.text);
    // Over the socket: everything stored, then the end.
    let mut stream = d.client().attach_terminal(&b.binding_id, 0).await.expect("attach");
    let (out, exit) = read_to_end(&mut stream, Duration::from_secs(10)).await;
    assert_eq!(out, text.text.as_bytes());
    assert_eq!(exit.state, BindingState::Lost);
    let events = d.events(None, 0).await;
    assert!(events.iter().any(|e| matches!(payload(e), EventData::BindingLost(l) if l.binding_id == b.binding_id)));
}

#[tokio::test]
async fn a_crashed_binding_actor_is_restarted_and_the_stream_goes_on_without_a_gap() {
    let dir = tempdir();
    let d = daemon(dir.path(), true);
    let b = spawn(&d, &["sh", "-c", "i=0; while [ $i -lt 500 ]; do echo n$i; i=$((i+1)); sleep 0.01; done"]).await;
    let client = d.client();
    let mut stream = client.attach_terminal(&b.binding_id, 0).await.expect("attach");
    // Each crash once the restart before it is counted, so a crash never
    // lands on an actor that is still restarting, however loaded the machine.
    for crashed in 1..=3 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        client.crash(&format!("binding:{}", b.binding_id)).await.expect("crash");
        d.wait_health(|h| h.actors.get("binding").map_or(0, |a| a.restarts) >= crashed).await;
    }
    let (out, exit) = read_to_end(&mut stream, Duration::from_secs(60)).await;
    let expected: String = (0..500).map(|i| format!("n{i}\r\n")).collect();
    assert_eq!(String::from_utf8_lossy(&out), expected);
    assert_eq!(exit.state, BindingState::Exited);
    let health = d.client().health().await.expect("health");
    let restarts = health.actors.get("binding").map_or(0, |a| a.restarts);
    assert!(restarts >= 3, "{:?}", health.actors);
}

#[tokio::test]
async fn bad_requests_are_refused_and_change_nothing() {
    let dir = tempdir();
    let d = daemon(dir.path(), false);
    let cases = [
        (json!({"terminal": "pty", "command": ["/nonexistent/program"]}), 400, "bad_request"),
        (json!({"terminal": "pty", "cols": 0, "rows": 10}), 400, "bad_request"),
        (json!({"terminal": "pty", "cwd": "relative/dir"}), 400, "bad_request"),
        (json!({"terminal": "pty", "cwd": "/nonexistent-dir"}), 400, "bad_request"),
        (json!({"terminal": "pty", "env": {"A=B": "x"}}), 400, "bad_request"),
        (json!({"terminal": "pty", "session_id": "s_000000000000"}), 404, "not_found"),
        (json!({"terminal": "pty", "placement": "split"}), 400, "bad_request"),
        (json!({"terminal": "pty", "bogus": 1}), 400, "bad_request"),
        (json!({"terminal": "xterm"}), 400, "bad_request"),
    ];
    for (body, status, code) in cases {
        let (got, answer) = d.post("/api/v1/terminals/bindings", body.clone()).await;
        assert_eq!(got, status, "{body}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{body}: {answer}");
    }
    assert!(d.client().bindings().await.expect("bindings").bindings.is_empty());
    let (status, answer) = d.get("/api/v1/terminals/bindings/b_nothere").await;
    assert_eq!((status, answer["error"]["code"].as_str()), (404, Some("not_found")));
    let b = spawn(&d, &["true"]).await;
    let mut stream = d.client().attach_terminal(&b.binding_id, 0).await.expect("attach");
    read_to_end(&mut stream, Duration::from_secs(10)).await;
    let (status, answer) =
        d.post(&format!("/api/v1/terminals/bindings/{}/send", b.binding_id), json!({"text": "x"})).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (409, Some("conflict")), "{answer}");
    let map = d.client().terminals().await.expect("terminals").terminals;
    let pty = map.iter().find(|t| t.terminal == TerminalKind::Pty).expect("pty in the map");
    assert!(pty.installed && pty.capabilities.spawn && pty.capabilities.read_text && !pty.requires_opt_in);
}

/// The text OSC 52 `sequences` carry, joined (as a clipboard that appends
/// consecutive writes would keep it).
fn osc52_text(sequences: &[u8]) -> String {
    let mut parser = bosun_termbridge::osc::OscParser::default();
    let mut text = Vec::new();
    for event in parser.feed(sequences) {
        match event {
            bosun_termbridge::osc::TerminalEvent::ClipboardWrite { selection, data } => {
                assert_eq!(selection, "c");
                text.extend(data);
            }
            other => panic!("only clipboard writes: {other:?}"),
        }
    }
    String::from_utf8(text).expect("UTF-8")
}

async fn next_clipboard(stream: &mut TerminalStream) -> Vec<u8> {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.next()).await.expect("in time").expect("read") {
            TerminalEvent::Clipboard(sequences) => return sequences,
            TerminalEvent::Output { .. } => continue,
            other => panic!("the terminal ended before the clipboard came: {other:?}"),
        }
    }
}

/// `POST /api/v1/terminals/clipboard` with a pty terminal's binding: OSC 52
/// to each screen showing it, live and never stored, batched over 75 KB;
/// refused with nobody to show it to, and unreadable (the viewer's own).
#[tokio::test]
async fn a_clipboard_write_to_a_pty_terminal_reaches_each_screen_showing_it_as_osc_52() {
    let dir = tempdir();
    let config = "[termbridge]\npolicy = \"full-access\"\nmax_clipboard_kb = 256\nclipboard_read = true\n".to_string();
    let d = Daemon::start(&dir.path().join("data"), Options { config: Some(config), ..Default::default() });
    let b = spawn(&d, &["sh", "-c", "echo up; sleep 600"]).await;
    let write = |text: String| json!({ "text": text, "binding_id": b.binding_id });
    let (status, body) = d.post("/api/v1/terminals/clipboard", write("nobody looks".into())).await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("conflict")), "{body}");
    let since = d.events(None, 0).await.last().map_or(0, |e| e.seq);

    let client = d.client();
    let mut first = client.attach_terminal(&b.binding_id, 0).await.expect("attach");
    let mut second = client.attach_terminal(&b.binding_id, 0).await.expect("attach again");
    let text = "copied ✓ with \"quotes\"\nand a second line".to_string();
    let (status, body) = d.post("/api/v1/terminals/clipboard", write(text.clone())).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["via"].as_str(), body["sequences"].as_u64(), body["screens"].as_u64()),
        (Some("osc52"), Some(1), Some(2))
    );
    for stream in [&mut first, &mut second] {
        let sequences = next_clipboard(stream).await;
        assert!(sequences.starts_with(b"\x1b]52;c;") && sequences.ends_with(b"\x1b\\"), "{sequences:?}");
        assert_eq!(osc52_text(&sequences), text);
    }

    // 200 KB: cut into sequences of at most 75 KB of base64 each.
    let big: String = (0..200_000).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    let (status, body) = d.post("/api/v1/terminals/clipboard", write(big.clone())).await;
    assert_eq!((status, body["sequences"].as_u64()), (200, Some(4)), "{body}");
    let sequences = next_clipboard(&mut first).await;
    assert_eq!(osc52_text(&sequences), big);

    // Over [termbridge] max_clipboard_kb: refused, nothing sent.
    let (status, body) = d.post("/api/v1/terminals/clipboard", write("x".repeat(256 * 1024 + 1))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("bad_request")), "{body}");
    let (status, body) = d.get(&format!("/api/v1/terminals/clipboard?binding_id={}", b.binding_id)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (501, Some("not_supported")), "{body}");

    // Not part of the output: the stream and its scrollback hold none of it.
    let range = client.binding(&b.binding_id).await.expect("binding").output.expect("range");
    assert_eq!(range.end, b"up\r\n".len() as u64);
    let actions: Vec<_> = d
        .events(None, since)
        .await
        .into_iter()
        .filter_map(|e| match payload(&e) {
            bosun_proto::EventData::TerminalAction(a) if a.action == "clipboard_write" => Some(a.detail),
            _ => None,
        })
        .collect();
    assert_eq!(actions, vec![format!("{} bytes", text.len()), "200000 bytes".to_string()], "the sizes, never the text");
}

/// SIGTERM: a terminal's socket gets every byte stored, then the goodbye
/// (1001, going away), not a cut connection.
#[tokio::test]
async fn sigterm_says_goodbye_to_a_terminal_socket_after_its_output() {
    use futures::StreamExt as _;
    use tokio_tungstenite::tungstenite::Message;
    let dir = tempdir();
    let mut d = daemon(dir.path(), false);
    let b = spawn(&d, &["sh", "-c", "echo ready; exec sleep 1000"]).await;
    let url = format!("{}/terminal/{}?from=0", d.ws_url(), b.binding_id);
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("connect /ws/terminal");
    let mut output = Vec::new();
    let mut signalled = false;
    let close = loop {
        match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => break frame.expect("a close frame with a code"),
            Ok(Some(Ok(Message::Binary(frame)))) => {
                if let Ok(bosun_proto::TerminalServerFrame::Output { bytes, .. }) =
                    bosun_proto::TerminalServerFrame::decode(&frame)
                {
                    output.extend_from_slice(&bytes);
                }
                if !signalled && String::from_utf8_lossy(&output).contains("ready") {
                    d.sigterm();
                    signalled = true;
                }
            }
            Ok(Some(Ok(_))) => {}
            other => panic!("the terminal socket ended without a goodbye: {other:?}"),
        }
    };
    assert!(signalled, "the output came before the close");
    assert_eq!(u16::from(close.code), 1001, "{close:?}");
    assert_eq!(close.reason.as_str(), "bosun is stopping");
    hear_the_close_out(&mut ws).await;
    assert!(d.wait_exit().success(), "{}", d.stderr());
    assert!(!d.stderr().contains("did not close after the goodbye"), "the closing handshake completed");
}
