//! Terminal control: the latency of each action per adapter, through the
//! adapters the daemon uses (`bosun-termbridge`), against real terminals
//! started for the bench in private instances: a tmux server of its own
//! (`-L`), and kitty on its own Xvfb display with its own socket when both
//! are installed. Target: under 10 ms a call for tmux and kitty.
//!
//! Each action is timed `--control-calls` times on one pane: `describe` (the
//! look-up that proves a pane before every action), `send_text` (a harmless
//! `:` typed without Enter), `read_text`, `focus`.

use super::{ms, percentile, progress, BenchArgs, Report, Row, TempDir};
use anyhow::{bail, Context as _};
use bosun_termbridge::adapters::kitty::{Kitty, KittyConfig};
use bosun_termbridge::adapters::tmux::{Tmux, TmuxConfig, TmuxSocket};
use bosun_termbridge::{PaneId, Placement, SendMode, SpawnRequest, TerminalControl};
use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TARGET_MS: f64 = 10.0;
const ACTIONS: [&str; 4] = ["describe", "send_text", "read_text", "focus"];

pub async fn run(args: &BenchArgs, base: &std::path::Path) -> anyhow::Result<Report> {
    let calls = args.control_calls.max(1);
    let mut rows = vec![Row::info(format!("terminal control, per action ({calls} calls each)"), "")];
    let mut data = serde_json::Map::new();

    progress("   tmux: a private server, control mode");
    match tmux(calls).await {
        Ok(times) => add(&mut rows, &mut data, "tmux", &times),
        Err(e) => rows.push(Row::info("  tmux", format!("not measured: {e:#}"))),
    }
    progress("   kitty: its socket protocol, on a private Xvfb display");
    match kitty(calls, base).await {
        Ok(times) => add(&mut rows, &mut data, "kitty", &times),
        Err(e) => rows.push(Row::info("  kitty", format!("not measured: {e:#}"))),
    }
    Ok(Report { rows, data: Value::Object(data), failures: Vec::new() })
}

type Times = Vec<(&'static str, Vec<u64>)>;

fn add(rows: &mut Vec<Row>, data: &mut serde_json::Map<String, Value>, name: &str, times: &Times) {
    let mut part = serde_json::Map::new();
    for (action, nanos) in times {
        let mut sorted = nanos.clone();
        sorted.sort_unstable();
        let (p50, p99) = (percentile(&sorted, 50.0), percentile(&sorted, 99.0));
        let met = (p50 as f64 / 1e6) < TARGET_MS;
        rows.push(Row::target(
            format!("  {name} {action} p50 / p99"),
            format!("{} / {}", ms(p50), ms(p99)),
            format!("< {TARGET_MS} ms"),
            met,
        ));
        part.insert((*action).to_string(), json!({"p50_ns": p50, "p99_ns": p99, "calls": nanos.len()}));
    }
    data.insert(name.to_string(), Value::Object(part));
}

async fn measure(control: &dyn TerminalControl, pane: &PaneId, calls: usize) -> anyhow::Result<Times> {
    let mut times: Times = ACTIONS.iter().map(|a| (*a, Vec::with_capacity(calls))).collect();
    for _ in 0..calls {
        for (action, out) in times.iter_mut() {
            let started = Instant::now();
            match *action {
                "describe" => drop(control.describe(pane).await.context("describe")?),
                "send_text" => control.send_text(pane, ":", SendMode::default()).await.context("send_text")?,
                "read_text" => drop(control.read_text(pane).await.context("read_text")?),
                _ => control.focus(pane).await.context("focus")?,
            }
            out.push(started.elapsed().as_nanos() as u64);
        }
    }
    Ok(times)
}

/// Kills what the bench started, whatever way it ends.
struct Started(Vec<Child>, Vec<Box<dyn FnMut()>>);

impl Drop for Started {
    fn drop(&mut self) {
        for cleanup in &mut self.1 {
            cleanup();
        }
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

async fn tmux(calls: usize) -> anyhow::Result<Times> {
    let socket = format!("bosun-bench-{}", std::process::id());
    let name = socket.clone();
    let _cleanup = Started(
        Vec::new(),
        vec![Box::new(move || {
            let _ = Command::new("tmux").args(["-L", &name, "kill-server"]).output();
        })],
    );
    let tmux = Tmux::new(TmuxConfig { socket: TmuxSocket::Name(socket), ..TmuxConfig::default() });
    let pane = tmux
        .spawn(SpawnRequest {
            command: vec!["cat".into()],
            cwd: None,
            env: Default::default(),
            placement: Placement::Window,
        })
        .await
        .context("starting a tmux pane (is tmux installed?)")?;
    measure(&tmux, &pane.id, calls).await
}

async fn kitty(calls: usize, base: &std::path::Path) -> anyhow::Result<Times> {
    for program in ["kitty", "Xvfb"] {
        if bosun_termbridge::runner::find_on_path(program).is_none() {
            bail!("{program} is not installed");
        }
    }
    let number = 500 + std::process::id() % 400;
    let display = format!(":{number}");
    let dir = TempDir::new(base, "kitty")?;
    let socket = dir.path().join("kitty.sock");
    let mut started = Started(Vec::new(), Vec::new());
    let xvfb = Command::new("Xvfb")
        .args([&display, "-screen", "0", "1024x768x24", "-nolisten", "tcp"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting Xvfb")?;
    started.0.push(xvfb);
    started.1.push(Box::new(move || {
        let _ = std::fs::remove_file(format!("/tmp/.X11-unix/X{number}"));
        let _ = std::fs::remove_file(format!("/tmp/.X{number}-lock"));
    }));
    wait_for(|| std::path::Path::new(&format!("/tmp/.X11-unix/X{number}")).exists(), "Xvfb's socket").await?;
    let listen = format!("unix:{}", socket.display());
    let kitty = Command::new("kitty")
        .args(["-o", "allow_remote_control=yes", "--listen-on", &listen, "--config", "NONE"])
        .args(["-o", "enabled_layouts=splits,stack", "sh"])
        .env("DISPLAY", &display)
        .env("LIBGL_ALWAYS_SOFTWARE", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting kitty")?;
    started.0.push(kitty);
    wait_for(|| socket.exists(), "kitty's socket").await?;
    let adapter = Kitty::new(KittyConfig { listen_on: Some(listen), ..KittyConfig::default() });
    let pane = adapter
        .spawn(SpawnRequest {
            command: vec!["cat".into()],
            cwd: None,
            env: Default::default(),
            placement: Placement::Tab,
        })
        .await
        .context("opening a kitty tab")?;
    measure(&adapter, &pane.id, calls).await
}

async fn wait_for(ready: impl Fn() -> bool, what: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ready() {
        if Instant::now() > deadline {
            bail!("{what} did not appear within 20 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}
