//! `bosun bench --only terminal`: a `pty` terminal's output to a WebSocket
//! client, side by side with WeTTY (xterm.js's server on node-pty, over
//! socket.io) and with a bare PTY read in this process (no network: the
//! limit), the same commands on each:
//! - throughput: `stty -opost; cat FILE` of a printable file (`--term-mb`),
//!   spawn to last byte, sha256 checked;
//! - time to first byte: spawn (Bosun: the POST; WeTTY: the socket connect,
//!   which spawns) to the first output of `echo ready`, over `--term-runs`
//!   runs, each of which must deliver exactly `ready\r\n` before its end;
//! - keystroke echo: one byte of input to `stty raw -echo; cat`, until the
//!   byte comes back, `--term-keys` times.
//!
//! The file is printable ASCII because WeTTY carries output as JavaScript
//! strings (node-pty decodes UTF-8): random bytes would not survive it, and
//! the same file is used on every side. WeTTY is installed with npm into a
//! cache dir (`--wetty-dir`) the first time; when it cannot be installed or
//! started, the rows say why and Bosun is still measured against the bare
//! PTY.

use super::{ms, percentile, progress, with_daemon, BenchArgs, Report, Row, TempDir};
use anyhow::{bail, Context as _};
use bosun_client::TerminalEvent;
use bosun_proto::{SpawnTerminalRequest, TerminalKind};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

/// The version the comparison was written against (its wire format below).
const WETTY_VERSION: &str = "3.2.0";
/// How long one run of anything may take before the bench gives up on it.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);
/// After WeTTY's `logout`, how long late `data` is still waited for. Its own
/// browser client disconnects at `logout`, so what comes later is lost to a
/// user; it is counted apart.
const LOGOUT_GRACE: Duration = Duration::from_millis(500);
/// WeTTY's client commits (acknowledges) every 256 KiB; so does ours of it.
const WETTY_ACK_BYTES: usize = 262_144;

/// One side's figures.
#[derive(Default, Debug)]
struct Side {
    /// Bytes, seconds, whether the sha256 matched.
    throughput: Option<(u64, f64, bool)>,
    /// Nanoseconds from spawn to the first output, per run.
    first_byte: Vec<u64>,
    /// Runs whose output was not exactly `ready\r\n` by the end.
    short_runs: usize,
    /// WeTTY only: runs whose output was complete only after `logout`.
    late_runs: usize,
    /// Nanoseconds from a key sent to its echo.
    echo: Vec<u64>,
}

const READY: &[u8] = b"ready\r\n";
const ECHO_LOOP: &str = "stty raw -echo; printf R; exec cat";

pub async fn run(args: &BenchArgs, base: &Path) -> anyhow::Result<Report> {
    let work = TempDir::new(base, "terminal")?;
    let file = work.path().join("data.txt");
    let (size, digest) = write_printable(&file, args.term_mb * 1_000_000)?;
    let cat = format!("stty -opost; cat {}", file.display());
    let runs = args.term_runs.max(1);
    let keys = args.term_keys.max(1);

    progress(&format!("   bare PTY: {} MB, {runs} × echo ready, {keys} keys", args.term_mb));
    let bare = tokio::task::spawn_blocking({
        let (cat, cwd) = (cat.clone(), work.path().to_path_buf());
        move || bare_side(&cat, &cwd, digest, runs, keys)
    })
    .await
    .context("the bare PTY thread panicked")??;

    progress("   Bosun: the same, through an in-process daemon");
    let cwd = work.path().to_str().context("the bench's directory is not UTF-8")?.to_string();
    let bosun = with_daemon(work.path().join("data"), Vec::new(), |_ctx, addr| {
        let (cat, cwd) = (cat.clone(), cwd.clone());
        async move { bosun_side(&super::client(&addr.to_string())?, &cat, &cwd, digest, runs, keys).await }
    })
    .await?;

    progress(&format!("   WeTTY {WETTY_VERSION}: the same, over socket.io"));
    let wetty = match wetty_side(args, work.path(), &cat, digest, runs, keys).await {
        Ok(side) => Ok(side),
        Err(e) => {
            let why = format!("{e:#}");
            progress(&format!("   WeTTY not measured: {why}"));
            Err(why)
        }
    };

    Ok(report(size, runs, &bosun, wetty.as_ref(), &bare))
}

fn report(size: u64, runs: usize, bosun: &Side, wetty: Result<&Side, &String>, bare: &Side) -> Report {
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    let mbs = |s: &Side| s.throughput.map(|(b, secs, _)| b as f64 / 1e6 / secs.max(1e-9));
    let fmt_mbs = |s: &Side| match s.throughput {
        Some((b, secs, ok)) => {
            let check = if ok {
                ", sha256 ok".to_string()
            } else {
                format!(", sha256 WRONG: {} of {} bytes", super::thousands(b), super::thousands(size))
            };
            format!("{:.0} MB/s ({:.2} s{check})", b as f64 / 1e6 / secs.max(1e-9), secs)
        }
        None => "-".into(),
    };
    let pct = |v: &[u64], p: f64| {
        let mut s = v.to_vec();
        s.sort_unstable();
        percentile(&s, p)
    };
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "-".into(),
    };
    let w = wetty.ok();
    rows.push(Row::info(format!("throughput, cat of {} MB", size / 1_000_000), ""));
    rows.push(Row::info("  Bosun (pty → WebSocket)", fmt_mbs(bosun)));
    match wetty {
        Ok(w) => rows.push(Row::info("  WeTTY (node-pty → socket.io)", fmt_mbs(w))),
        Err(why) => rows.push(Row::info("  WeTTY", format!("not measured: {why}"))),
    }
    rows.push(Row::info("  bare PTY (no network)", fmt_mbs(bare)));
    rows.push(Row::info(
        "  ratio Bosun/WeTTY, Bosun/bare",
        format!("{} / {}", ratio(mbs(bosun), w.and_then(mbs)), ratio(mbs(bosun), mbs(bare))),
    ));
    // WeTTY's own losses are a finding, not a failure of this bench.
    for (name, side) in [("Bosun", Some(bosun)), ("bare", Some(bare))] {
        if let Some((_, _, false)) = side.and_then(|s| s.throughput) {
            failures.push(format!("{name}: the throughput run's sha256 does not match the file"));
        }
    }

    let p = |s: &Side, q: f64| pct(&s.first_byte, q) as f64;
    let fb = |s: &Side| format!("p50 {} p99 {}", ms(pct(&s.first_byte, 50.0)), ms(pct(&s.first_byte, 99.0)));
    rows.push(Row::info(format!("first byte: spawn → `ready` ({runs} runs)"), ""));
    rows.push(Row::info("  Bosun (POST → first OUTPUT frame)", fb(bosun)));
    if let Some(w) = w {
        rows.push(Row::info("  WeTTY (connect → first data)", fb(w)));
    }
    rows.push(Row::info("  bare PTY (spawn → first read)", fb(bare)));
    rows.push(Row::info(
        "  ratio p50 Bosun/WeTTY, Bosun/bare",
        format!(
            "{} / {}",
            ratio(Some(p(bosun, 50.0)), w.map(|w| p(w, 50.0))),
            ratio(Some(p(bosun, 50.0)), Some(p(bare, 50.0)))
        ),
    ));

    rows.push(Row::info(format!("output lost at exit: `echo ready` × {runs}"), ""));
    let lost = |s: &Side| format!("{} of {runs} runs got nothing or short", s.short_runs);
    rows.push(Row::target("  Bosun", lost(bosun), "0", bosun.short_runs == 0));
    if let Some(w) = w {
        rows.push(Row::info(
            "  WeTTY (by `logout`, as its client sees it)",
            format!("{} ({} more complete only after logout)", lost(w), w.late_runs),
        ));
    }
    rows.push(Row::info("  bare PTY", lost(bare)));
    if bosun.short_runs > 0 {
        failures.push(format!("Bosun lost output at exit in {} of {runs} runs", bosun.short_runs));
    }

    let ec = |s: &Side| format!("p50 {} p99 {}", ms(pct(&s.echo, 50.0)), ms(pct(&s.echo, 99.0)));
    let e = |s: &Side, q: f64| pct(&s.echo, q) as f64;
    rows.push(Row::info(format!("keystroke echo ({} keys, raw cat)", bosun.echo.len()), ""));
    rows.push(Row::info("  Bosun", ec(bosun)));
    if let Some(w) = w {
        rows.push(Row::info("  WeTTY", ec(w)));
    }
    rows.push(Row::info("  bare PTY", ec(bare)));
    rows.push(Row::info(
        "  ratio p50 / p99 Bosun/WeTTY",
        format!(
            "{} / {}",
            ratio(Some(e(bosun, 50.0)), w.map(|w| e(w, 50.0))),
            ratio(Some(e(bosun, 99.0)), w.map(|w| e(w, 99.0)))
        ),
    ));
    rows.push(Row::info(
        "  ratio p50 / p99 Bosun/bare",
        format!(
            "{} / {}",
            ratio(Some(e(bosun, 50.0)), Some(e(bare, 50.0))),
            ratio(Some(e(bosun, 99.0)), Some(e(bare, 99.0)))
        ),
    ));

    let side_json = |s: &Side| {
        json!({
            "throughput": s.throughput.map(|(b, secs, ok)| json!({"bytes": b, "secs": secs, "sha256_ok": ok})),
            "first_byte_ns": {"p50": pct(&s.first_byte, 50.0), "p99": pct(&s.first_byte, 99.0), "samples": s.first_byte.len()},
            "short_runs": s.short_runs,
            "late_runs": s.late_runs,
            "echo_ns": {"p50": pct(&s.echo, 50.0), "p99": pct(&s.echo, 99.0), "max": pct(&s.echo, 100.0), "samples": s.echo.len()},
        })
    };
    let data = json!({
        "bytes": size,
        "runs": runs,
        "bosun": side_json(bosun),
        "wetty": match wetty { Ok(w) => side_json(w), Err(why) => json!({"not_measured": why}) },
        "bare": side_json(bare),
    });
    Report { rows, data, failures }
}

/// A file of `len` printable bytes (lines of 99 base64 characters),
/// deterministic; its size and sha256.
fn write_printable(path: &Path, len: u64) -> anyhow::Result<(u64, [u8; 32])> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out =
        std::io::BufWriter::new(std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?);
    let mut hasher = Sha256::new();
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut chunk = vec![0u8; 1 << 20];
    let mut written = 0u64;
    while written < len {
        let n = (len - written).min(chunk.len() as u64) as usize;
        for (i, b) in chunk[..n].iter_mut().enumerate() {
            *b = if (written as usize + i) % 100 == 99 {
                b'\n'
            } else {
                // xorshift64: cheap, and good enough that nothing compresses.
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                ALPHABET[(state & 63) as usize]
            };
        }
        out.write_all(&chunk[..n]).with_context(|| format!("writing {}", path.display()))?;
        hasher.update(&chunk[..n]);
        written += n as u64;
    }
    out.flush().with_context(|| format!("writing {}", path.display()))?;
    Ok((written, hasher.finalize().into()))
}

// ---- the bare PTY: portable-pty in this process, read to EOF ----

struct BarePty {
    child: Box<dyn portable_pty::Child + Send + Sync>,
    reader: Box<dyn std::io::Read + Send>,
    writer: Box<dyn std::io::Write + Send>,
    _master: Box<dyn portable_pty::MasterPty + Send>,
}

impl BarePty {
    fn spawn(script: &str, cwd: &Path) -> anyhow::Result<BarePty> {
        use portable_pty::{CommandBuilder, NativePtySystem, PtySize, PtySystem};
        let pair = NativePtySystem::default()
            .openpty(PtySize { rows: 24, cols: 80, pixel_width: 0, pixel_height: 0 })
            .map_err(|e| anyhow::anyhow!("openpty: {e}"))?;
        let mut cmd = CommandBuilder::new("sh");
        cmd.args(["-c", script]);
        cmd.cwd(cwd);
        let child = pair.slave.spawn_command(cmd).map_err(|e| anyhow::anyhow!("spawning sh: {e}"))?;
        // Our copy of the slave would keep the master from ever seeing EOF.
        drop(pair.slave);
        let reader = pair.master.try_clone_reader().map_err(|e| anyhow::anyhow!("the PTY's reader: {e}"))?;
        let writer = pair.master.take_writer().map_err(|e| anyhow::anyhow!("the PTY's writer: {e}"))?;
        Ok(BarePty { child, reader, writer, _master: pair.master })
    }

    /// One read; 0 at the end (Linux answers EIO once the child has hung up).
    fn read(&mut self, buf: &mut [u8]) -> anyhow::Result<usize> {
        match self.reader.read(buf) {
            Ok(n) => Ok(n),
            Err(e) if e.raw_os_error() == Some(libc::EIO) => Ok(0),
            Err(e) => Err(e).context("reading the PTY"),
        }
    }

    fn finish(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn bare_side(cat: &str, cwd: &Path, digest: [u8; 32], runs: usize, keys: usize) -> anyhow::Result<Side> {
    let mut side = Side::default();
    let mut buf = vec![0u8; 1 << 16];

    let started = Instant::now();
    let mut pty = BarePty::spawn(cat, cwd)?;
    let (mut bytes, mut hasher, mut last) = (0u64, Sha256::new(), started);
    loop {
        let n = pty.read(&mut buf)?;
        if n == 0 {
            break;
        }
        bytes += n as u64;
        hasher.update(&buf[..n]);
        last = Instant::now();
    }
    let ok = <[u8; 32]>::from(hasher.finalize()) == digest;
    side.throughput = Some((bytes, (last - started).as_secs_f64(), ok));
    pty.finish();

    for _ in 0..runs {
        let started = Instant::now();
        let mut pty = BarePty::spawn("echo ready", cwd)?;
        let mut out = Vec::new();
        loop {
            let n = pty.read(&mut buf)?;
            if n == 0 {
                break;
            }
            if out.is_empty() {
                side.first_byte.push(started.elapsed().as_nanos() as u64);
            }
            out.extend_from_slice(&buf[..n]);
        }
        if out != READY {
            side.short_runs += 1;
        }
        pty.finish();
    }

    let mut pty = BarePty::spawn(ECHO_LOOP, cwd)?;
    wait_byte(&mut pty, &mut buf, b'R')?;
    for i in 0..keys {
        let key = b'a' + (i % 26) as u8;
        let sent = Instant::now();
        pty.writer.write_all(&[key]).and_then(|()| pty.writer.flush()).context("writing to the PTY")?;
        wait_byte(&mut pty, &mut buf, key)?;
        side.echo.push(sent.elapsed().as_nanos() as u64);
    }
    pty.finish();
    Ok(side)
}

fn wait_byte(pty: &mut BarePty, buf: &mut [u8], want: u8) -> anyhow::Result<()> {
    loop {
        let n = pty.read(buf)?;
        if n == 0 {
            bail!("the PTY ended before {:?} came back", want as char);
        }
        if buf[..n].contains(&want) {
            return Ok(());
        }
    }
}

// ---- Bosun: the daemon's pty terminal, over the typed client ----

/// The binding of a spawn; the bench's daemon runs under full-access, so a
/// spawn held for approval means it was started some other way.
fn bound(outcome: bosun_proto::SpawnOutcome) -> anyhow::Result<bosun_proto::BindingView> {
    match outcome.binding {
        Some(b) => Ok(b),
        None => bail!("the spawn waits for an approval; the bench's daemon should run its terminals under full-access"),
    }
}

async fn bosun_side(
    client: &bosun_client::Client,
    cat: &str,
    cwd: &str,
    digest: [u8; 32],
    runs: usize,
    keys: usize,
) -> anyhow::Result<Side> {
    let mut side = Side::default();
    let req = |script: &str| SpawnTerminalRequest {
        terminal: Some(TerminalKind::Pty),
        cwd: Some(cwd.to_string()),
        command: vec!["sh".into(), "-c".into(), script.into()],
        ..Default::default()
    };

    let started = Instant::now();
    let b = bound(client.spawn_terminal(&req(cat)).await.context("spawning the cat")?)?;
    let mut stream = client.attach_terminal(&b.binding_id, 0).await.context("attaching to the cat")?;
    let (mut bytes, mut hasher, mut last) = (0u64, Sha256::new(), started);
    loop {
        match tokio::time::timeout(RUN_TIMEOUT, stream.next()).await.context("the cat took too long")?? {
            TerminalEvent::Output { offset, bytes: chunk } => {
                anyhow::ensure!(offset == bytes, "output at {offset}, {bytes} expected");
                bytes += chunk.len() as u64;
                hasher.update(&chunk);
                last = Instant::now();
                stream.writer().ack(bytes).await?;
            }
            TerminalEvent::Exit(_) => break,
            TerminalEvent::Clipboard(_) => {}
            TerminalEvent::Closed => bail!("the socket closed before the cat's end"),
        }
    }
    let ok = <[u8; 32]>::from(hasher.finalize()) == digest;
    side.throughput = Some((bytes, (last - started).as_secs_f64(), ok));

    for _ in 0..runs {
        let started = Instant::now();
        let b = bound(client.spawn_terminal(&req("echo ready")).await.context("spawning echo ready")?)?;
        let mut stream = client.attach_terminal(&b.binding_id, 0).await.context("attaching")?;
        let mut out = Vec::new();
        // Until the EXIT frame (or a close, which leaves the run short).
        while let TerminalEvent::Output { bytes, .. } =
            tokio::time::timeout(RUN_TIMEOUT, stream.next()).await.context("echo ready took too long")??
        {
            if out.is_empty() {
                side.first_byte.push(started.elapsed().as_nanos() as u64);
            }
            out.extend_from_slice(&bytes);
            stream.writer().ack(out.len() as u64).await?;
        }
        if out != READY {
            side.short_runs += 1;
        }
    }

    let b = bound(client.spawn_terminal(&req(ECHO_LOOP)).await.context("spawning the echo loop")?)?;
    let mut stream = client.attach_terminal(&b.binding_id, 0).await.context("attaching to the echo loop")?;
    bosun_wait(&mut stream, b'R').await?;
    for i in 0..keys {
        let key = b'a' + (i % 26) as u8;
        let sent = Instant::now();
        stream.writer().input(&[key]).await?;
        bosun_wait(&mut stream, key).await?;
        side.echo.push(sent.elapsed().as_nanos() as u64);
    }
    let _ = client.close_binding(&b.binding_id).await;
    Ok(side)
}

/// Reads (acknowledging) until `want` comes back.
async fn bosun_wait(stream: &mut bosun_client::TerminalStream, want: u8) -> anyhow::Result<()> {
    loop {
        match tokio::time::timeout(RUN_TIMEOUT, stream.next()).await.context("no echo")?? {
            TerminalEvent::Output { offset, bytes } => {
                stream.writer().ack(offset + bytes.len() as u64).await?;
                if bytes.contains(&want) {
                    return Ok(());
                }
            }
            _ => bail!("the echo loop ended"),
        }
    }
}

// ---- WeTTY: its server, and a socket.io v4 client of our own ----

/// `--wetty-dir`, or `$XDG_CACHE_HOME/bosun/bench/wetty`
/// (`~/.cache/bosun/bench/wetty`).
fn wetty_dir(args: &BenchArgs) -> anyhow::Result<PathBuf> {
    if let Some(dir) = &args.wetty_dir {
        return Ok(dir.clone());
    }
    let cache = match std::env::var_os("XDG_CACHE_HOME") {
        Some(dir) => PathBuf::from(dir),
        None => {
            PathBuf::from(std::env::var_os("HOME").context("neither XDG_CACHE_HOME nor HOME is set")?).join(".cache")
        }
    };
    Ok(cache.join("bosun").join("bench").join("wetty"))
}

/// The `wetty` program, installed with npm the first time.
async fn wetty_bin(args: &BenchArgs) -> anyhow::Result<PathBuf> {
    let dir = wetty_dir(args)?;
    let bin = dir.join("node_modules").join(".bin").join("wetty");
    if bin.exists() {
        return Ok(bin);
    }
    progress(&format!("   installing wetty@{WETTY_VERSION} into {} (npm install --prefix)", dir.display()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let out = tokio::process::Command::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--prefix"])
        .arg(&dir)
        .arg(format!("wetty@{WETTY_VERSION}"))
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .context("running npm (is Node.js installed?)")?;
    if !out.status.success() || !bin.exists() {
        let err = String::from_utf8_lossy(&out.stderr);
        bail!("npm install wetty@{WETTY_VERSION} failed ({}): {}", out.status, err.lines().last().unwrap_or(""));
    }
    Ok(bin)
}

/// A WeTTY server on a free loopback port, running `script` for every
/// connection; killed when dropped.
struct Wetty {
    child: tokio::process::Child,
    port: u16,
    log: PathBuf,
}

impl Wetty {
    async fn start(bin: &Path, cwd: &Path, script: &str) -> anyhow::Result<Wetty> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .context("finding a free port")?
            .port();
        let log = cwd.join(format!("wetty-{port}.log"));
        let log_file = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        // As root on localhost WeTTY runs `/usr/bin/env -S COMMAND` rather
        // than `login` or ssh; the single quotes survive env's splitting.
        let command = format!("sh -c '{script}'");
        let child = tokio::process::Command::new(bin)
            .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--command", &command])
            .current_dir(cwd)
            .stdin(std::process::Stdio::null())
            .stdout(log_file.try_clone().context("the log file")?)
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut wetty = Wetty { child, port, log };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return Ok(wetty);
            }
            if let Ok(Some(status)) = wetty.child.try_wait() {
                bail!("wetty exited ({status}) before listening: {}", wetty.log_tail());
            }
            if Instant::now() > deadline {
                bail!("wetty did not listen on port {port} within 30 s: {}", wetty.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log_tail(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default().lines().last().unwrap_or("").to_string()
    }

    async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// What WeTTY says (src/server/spawn.ts): `login` once the PTY is spawned,
/// `data` with output as a string, `logout` when the process exited.
#[derive(Debug)]
enum SioEvent {
    Login,
    Data(String),
    Logout,
    Closed,
}

/// Socket.IO v4 over Engine.IO v4, WebSocket transport only: `0{…}` opens,
/// `40` joins the default namespace, `42[name, arg]` is an event, `2` a
/// ping answered with `3`.
struct Sio {
    ws: Ws,
}

impl Sio {
    async fn connect(port: u16) -> anyhow::Result<Sio> {
        let url = format!("ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket");
        // Nagle off, as on Bosun's client: the echo measure sends one byte at a time.
        let (ws, _) = tokio_tungstenite::connect_async_with_config(&url, None, true)
            .await
            .with_context(|| format!("connecting to {url}"))?;
        let mut sio = Sio { ws };
        let open = sio.text().await?.context("the socket closed before engine.io's open")?;
        anyhow::ensure!(open.starts_with('0'), "expected engine.io's open packet, got {open:?}");
        sio.ws.send(Message::text("40")).await.context("joining the namespace")?;
        loop {
            let packet = sio.text().await?.context("the socket closed before socket.io's connect")?;
            if packet.starts_with("40") {
                return Ok(sio);
            }
            if packet.starts_with("44") {
                bail!("socket.io refused the connection: {packet}");
            }
        }
    }

    /// The next text packet, answering pings on the way.
    async fn text(&mut self) -> anyhow::Result<Option<String>> {
        loop {
            match self.ws.next().await {
                None | Some(Ok(Message::Close(_))) => return Ok(None),
                Some(Err(e)) => return Err(e).context("reading WeTTY's socket"),
                Some(Ok(Message::Text(t))) => {
                    if t.as_str() == "2" {
                        self.ws.send(Message::text("3")).await.context("answering a ping")?;
                        continue;
                    }
                    return Ok(Some(t.as_str().to_string()));
                }
                Some(Ok(_)) => continue,
            }
        }
    }

    async fn next(&mut self) -> anyhow::Result<SioEvent> {
        loop {
            let Some(packet) = self.text().await? else { return Ok(SioEvent::Closed) };
            if packet.starts_with("41") {
                return Ok(SioEvent::Closed);
            }
            let Some(body) = packet.strip_prefix("42") else { continue };
            let event: Vec<Value> =
                serde_json::from_str(body).with_context(|| format!("a socket.io event {body:?}"))?;
            match (event.first().and_then(Value::as_str), event.get(1)) {
                (Some("data"), Some(Value::String(s))) => return Ok(SioEvent::Data(s.clone())),
                (Some("login"), _) => return Ok(SioEvent::Login),
                (Some("logout"), _) => return Ok(SioEvent::Logout),
                _ => continue,
            }
        }
    }

    async fn emit(&mut self, name: &str, arg: Value) -> anyhow::Result<()> {
        self.ws
            .send(Message::text(format!("42{}", json!([name, arg]))))
            .await
            .with_context(|| format!("sending {name}"))
    }

    async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

async fn wetty_side(
    args: &BenchArgs,
    cwd: &Path,
    cat: &str,
    digest: [u8; 32],
    runs: usize,
    keys: usize,
) -> anyhow::Result<Side> {
    if args.no_wetty {
        bail!("--no-wetty");
    }
    let bin = wetty_bin(args).await?;
    let mut side = Side::default();

    let server = Wetty::start(&bin, cwd, cat).await?;
    let started = Instant::now();
    let mut sio = Sio::connect(server.port).await?;
    let (mut bytes, mut hasher, mut last, mut unacked) = (0u64, Sha256::new(), started, 0usize);
    let mut logout_at: Option<Instant> = None;
    loop {
        let left = match logout_at {
            Some(at) => LOGOUT_GRACE.saturating_sub(at.elapsed()),
            None => RUN_TIMEOUT,
        };
        match tokio::time::timeout(left, sio.next()).await {
            Err(_) if logout_at.is_some() => break,
            Err(_) => bail!("WeTTY's cat took more than {} s", RUN_TIMEOUT.as_secs()),
            Ok(event) => match event? {
                SioEvent::Data(s) => {
                    bytes += s.len() as u64;
                    hasher.update(s.as_bytes());
                    last = Instant::now();
                    // Its flow control counts string length; ASCII, so bytes.
                    unacked += s.len();
                    while unacked >= WETTY_ACK_BYTES {
                        unacked -= WETTY_ACK_BYTES;
                        sio.emit("commit", json!(WETTY_ACK_BYTES)).await?;
                    }
                }
                SioEvent::Logout => {
                    logout_at.get_or_insert_with(Instant::now);
                }
                SioEvent::Login => {}
                SioEvent::Closed => break,
            },
        }
    }
    let ok = <[u8; 32]>::from(hasher.finalize()) == digest;
    side.throughput = Some((bytes, (last - started).as_secs_f64(), ok));
    sio.close().await;
    server.stop().await;

    let server = Wetty::start(&bin, cwd, "echo ready").await?;
    for _ in 0..runs {
        let started = Instant::now();
        let mut sio = Sio::connect(server.port).await?;
        let mut out = String::new();
        let mut at_logout: Option<(Instant, usize)> = None;
        loop {
            let left = match at_logout {
                Some((at, _)) => LOGOUT_GRACE.saturating_sub(at.elapsed()),
                None => Duration::from_secs(10),
            };
            match tokio::time::timeout(left, sio.next()).await {
                // No logout within 10 s either: it is a short run all the same.
                Err(_) => break,
                Ok(event) => match event? {
                    SioEvent::Data(s) => {
                        if out.is_empty() {
                            side.first_byte.push(started.elapsed().as_nanos() as u64);
                        }
                        out.push_str(&s);
                    }
                    SioEvent::Logout => {
                        at_logout.get_or_insert((Instant::now(), out.len()));
                    }
                    SioEvent::Login => {}
                    SioEvent::Closed => break,
                },
            }
        }
        let by_logout = at_logout.map_or(out.len(), |(_, n)| n);
        if out.as_bytes().get(..by_logout) != Some(READY) {
            side.short_runs += 1;
            if out.as_bytes() == READY {
                side.late_runs += 1;
            }
        }
        sio.close().await;
    }
    server.stop().await;

    let server = Wetty::start(&bin, cwd, ECHO_LOOP).await?;
    let mut sio = Sio::connect(server.port).await?;
    wetty_wait(&mut sio, 'R').await?;
    for i in 0..keys {
        let key = (b'a' + (i % 26) as u8) as char;
        let sent = Instant::now();
        sio.emit("input", json!(key.to_string())).await?;
        wetty_wait(&mut sio, key).await?;
        side.echo.push(sent.elapsed().as_nanos() as u64);
    }
    sio.close().await;
    server.stop().await;
    Ok(side)
}

/// Reads until `want` comes back.
async fn wetty_wait(sio: &mut Sio, want: char) -> anyhow::Result<()> {
    loop {
        match tokio::time::timeout(RUN_TIMEOUT, sio.next()).await.context("no echo from WeTTY")?? {
            SioEvent::Data(s) if s.contains(want) => return Ok(()),
            SioEvent::Data(_) | SioEvent::Login => {}
            SioEvent::Logout | SioEvent::Closed => bail!("WeTTY's echo loop ended"),
        }
    }
}
