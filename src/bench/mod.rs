//! `bosun bench`: measures the store, the WebSocket fan-out, restarts, the
//! memory of idle sessions and how long an agent's output takes to reach a
//! client, and prints one table (or JSON with `--json`).
//!
//! A benchmark, not a timed test: it reports what it measured and whether the
//! targets were met, and fails only when a correctness check fails (an
//! acknowledged event missing, a subscriber short of events). The machine is
//! shared, so compare numbers within one run (the ratio of the two flush
//! policies, say) rather than across runs. See docs/BENCHMARKS.md.

mod agent;
mod append;
pub mod bench_agent;
mod control;
mod fanout;
mod restart;
mod shell;
mod terminal;
mod workflow;

use crate::config::{DaemonConfig, LogFormat};
use anyhow::Context as _;
use bosun_driver::ProviderSpec;
use serde_json::{json, Value};
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::oneshot;

/// How long an in-process daemon gets to stop once a part is done with it.
const DAEMON_STOP_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Run only these parts (comma-separated or repeated); default: all, in this order.
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Part>,
    /// Print one JSON object on stdout instead of the table (progress stays on stderr).
    #[arg(long)]
    json: bool,
    /// Where the temporary data dirs go (default: the system temp dir). Use a
    /// directory on the disk you want measured: flushes on tmpfs cost nothing.
    #[arg(long)]
    dir: Option<PathBuf>,

    /// append: concurrent tokio tasks, each committing one event at a time.
    #[arg(long, default_value_t = 128)]
    appenders: usize,
    /// append: seconds measured per flush policy (after a 1 s warm-up).
    #[arg(long, default_value_t = 5.0)]
    append_secs: f64,
    /// append: distinct topics the appenders write to (default: one per
    /// appender, as if each were a session streaming a turn).
    #[arg(long)]
    append_topics: Option<usize>,
    /// append, fanout, restart: bytes of text in each event's payload.
    #[arg(long, default_value_t = 200)]
    payload_bytes: usize,

    /// fanout: WebSocket clients subscribed to the one topic.
    #[arg(long, default_value_t = 100)]
    subscribers: usize,
    /// fanout: events committed per second.
    #[arg(long, default_value_t = 1000)]
    rate: u32,
    /// fanout: seconds of steady commits.
    #[arg(long, default_value_t = 10.0)]
    fanout_secs: f64,

    /// restart: sessions in the store.
    #[arg(long, default_value_t = 10_000)]
    sessions: usize,
    /// restart: events in the store.
    #[arg(long, default_value_t = 1_000_000)]
    events: usize,
    /// restart: how many times the daemon is started on the populated store.
    #[arg(long, default_value_t = 3)]
    restarts: usize,

    /// memory: idle sessions in the populated store.
    #[arg(long, default_value_t = 10_000)]
    memory_sessions: usize,
    /// memory: seconds to wait after ready before reading VmRSS.
    #[arg(long, default_value_t = 2.0)]
    settle_secs: f64,

    /// agent: chunks the fake agent writes in the measured turn (and again
    /// for the baseline read straight from its pipe).
    #[arg(long, default_value_t = 2500)]
    agent_chunks: u64,
    /// agent: microseconds between the agent's chunks.
    #[arg(long, default_value_t = 2000)]
    agent_interval_us: u64,
    /// agent: chunks of the warm-up turn before each measurement, not counted.
    #[arg(long, default_value_t = 200)]
    agent_warmup: u64,

    /// shell: commands run each way (persistent jailed shell, fresh bwrap).
    #[arg(long, default_value_t = 1000)]
    shell_commands: usize,

    /// workflow: steps in the chain whose hand-offs are timed.
    #[arg(long, default_value_t = 30)]
    workflow_chain: usize,
    /// workflow: items of the fan-out.
    #[arg(long, default_value_t = 50)]
    workflow_fanout: usize,
    /// workflow: ended runs in the store for the restart measure.
    #[arg(long, default_value_t = 1000)]
    workflow_runs: usize,

    /// terminal: megabytes (10^6) of printable text `cat` writes for the throughput measure.
    #[arg(long, default_value_t = 200)]
    term_mb: u64,
    /// terminal: runs of `echo ready` (time to first byte, output lost at exit), on each side.
    #[arg(long, default_value_t = 200)]
    term_runs: usize,
    /// terminal: keystrokes echoed through `stty raw -echo; cat`, on each side.
    #[arg(long, default_value_t = 1000)]
    term_keys: usize,
    /// control: calls of each terminal-control action, per adapter.
    #[arg(long, default_value_t = 200)]
    control_calls: usize,
    /// terminal: where WeTTY is installed with `npm install --prefix` the first time
    /// (default: $XDG_CACHE_HOME/bosun/bench/wetty, or ~/.cache/bosun/bench/wetty).
    #[arg(long, value_name = "DIR")]
    wetty_dir: Option<PathBuf>,
    /// terminal: leave WeTTY out (Bosun is still measured against the bare PTY).
    #[arg(long)]
    no_wetty: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    /// Durable append throughput: group commit against one flush per commit.
    Append,
    /// Append-to-receipt latency at many WebSocket subscribers.
    Fanout,
    /// Restart-to-ready with a large store.
    Restart,
    /// Resident memory per idle session actor.
    Memory,
    /// Latency from an agent's stdout line to a WebSocket client's receipt.
    Agent,
    /// A command's round trip in the persistent jailed shell against a fresh jail.
    Shell,
    /// Workflow hand-offs, fan-out, and restart with stored runs.
    Workflow,
    /// PTY terminals to a WebSocket client: throughput, first byte, echo, output at exit; against WeTTY and a bare PTY.
    Terminal,
    /// Terminal control: each action's latency per adapter (tmux, kitty).
    Control,
}

impl Part {
    const ALL: [Part; 9] = [
        Part::Append,
        Part::Fanout,
        Part::Restart,
        Part::Memory,
        Part::Agent,
        Part::Shell,
        Part::Workflow,
        Part::Terminal,
        Part::Control,
    ];

    fn name(self) -> &'static str {
        match self {
            Part::Append => "append",
            Part::Fanout => "fanout",
            Part::Restart => "restart",
            Part::Memory => "memory",
            Part::Agent => "agent",
            Part::Shell => "shell",
            Part::Workflow => "workflow",
            Part::Terminal => "terminal",
            Part::Control => "control",
        }
    }
}

/// One line of the table.
pub struct Row {
    metric: String,
    value: String,
    target: String,
    /// `Some(true)`: target met; `Some(false)`: missed; `None`: no target.
    met: Option<bool>,
}

impl Row {
    fn info(metric: impl Into<String>, value: impl Into<String>) -> Row {
        Row { metric: metric.into(), value: value.into(), target: String::new(), met: None }
    }

    fn target(metric: impl Into<String>, value: impl Into<String>, target: impl Into<String>, met: bool) -> Row {
        Row { metric: metric.into(), value: value.into(), target: target.into(), met: Some(met) }
    }
}

/// What one part measured.
pub struct Report {
    rows: Vec<Row>,
    /// The raw numbers, for `--json`.
    data: Value,
    /// Correctness checks that failed (lost or missing events): these make
    /// `bosun bench` exit non-zero, unlike a missed target.
    failures: Vec<String>,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let parts: Vec<Part> = if args.only.is_empty() {
        Part::ALL.to_vec()
    } else {
        Part::ALL.into_iter().filter(|p| args.only.contains(p)).collect()
    };
    let base = match &args.dir {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir(),
    };
    std::fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
    let mut machine = machine();

    let mut reports: Vec<(Part, Report)> = Vec::new();
    for part in parts {
        progress(&format!("== {} ==", part.name()));
        let started = std::time::Instant::now();
        let report = match part {
            Part::Append => append::run(&args, &base).await,
            Part::Fanout => fanout::run(&args, &base).await,
            Part::Restart => restart::run_restart(&args, &base).await,
            Part::Memory => restart::run_memory(&args, &base).await,
            Part::Agent => agent::run(&args, &base).await,
            Part::Shell => shell::run(&args, &base).await,
            Part::Workflow => workflow::run(&args, &base).await,
            Part::Terminal => terminal::run(&args, &base).await,
            Part::Control => control::run(&args, &base).await,
        }
        .with_context(|| format!("bench part {}", part.name()))?;
        progress(&format!("   {} done in {:.1} s", part.name(), started.elapsed().as_secs_f64()));
        reports.push((part, report));
    }

    // Sampled again at the end: the load during the run is what matters.
    machine["loadavg_end"] = json!(loadavg());
    if args.json {
        let mut parts = serde_json::Map::new();
        for (part, report) in &reports {
            let rows: Vec<Value> = report
                .rows
                .iter()
                .map(|r| json!({"metric": r.metric, "value": r.value, "target": r.target, "met": r.met}))
                .collect();
            parts.insert(part.name().into(), json!({"data": report.data, "rows": rows, "failures": report.failures}));
        }
        let out = json!({"machine": machine, "parts": parts});
        println!("{}", serde_json::to_string_pretty(&out).context("encoding the JSON report")?);
    } else {
        print_table(&machine, &reports);
    }

    let failures: Vec<String> =
        reports.iter().flat_map(|(part, r)| r.failures.iter().map(move |f| format!("{}: {f}", part.name()))).collect();
    if !failures.is_empty() {
        anyhow::bail!("correctness checks failed:\n  {}", failures.join("\n  "));
    }
    Ok(())
}

fn print_table(machine: &Value, reports: &[(Part, Report)]) {
    println!(
        "bosun bench: {} CPU(s) {}, {} MiB RAM, kernel {}, load average {} at start, {} at end",
        machine["cpus"],
        machine["cpu_model"].as_str().unwrap_or("?"),
        machine["mem_mib"],
        machine["kernel"].as_str().unwrap_or("?"),
        machine["loadavg"].as_str().unwrap_or("?"),
        machine["loadavg_end"].as_str().unwrap_or("?"),
    );
    let header = ["part", "metric", "value", "target", "met"];
    let mut lines: Vec<[String; 5]> = Vec::new();
    for (part, report) in reports {
        for row in &report.rows {
            let met = match row.met {
                Some(true) => "yes",
                Some(false) => "NO",
                None => "",
            };
            lines.push([part.name().into(), row.metric.clone(), row.value.clone(), row.target.clone(), met.into()]);
        }
    }
    let mut widths = header.map(|h| h.chars().count());
    for line in &lines {
        for (w, cell) in widths.iter_mut().zip(line) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let fmt = |cells: [&str; 5]| {
        let mut s = String::new();
        for (cell, w) in cells.iter().zip(widths) {
            s.push_str(cell);
            s.push_str(&" ".repeat(w - cell.chars().count()));
            s.push_str("  ");
        }
        s.trim_end().to_string()
    };
    println!("{}", fmt(header));
    println!("{}", fmt(widths.map(|w| "-".repeat(w)).each_ref().map(|s| s.as_str())));
    for line in &lines {
        println!("{}", fmt(line.each_ref().map(|s| s.as_str())));
    }
}

/// Progress goes to stderr so `--json` output stays clean.
fn progress(msg: &str) {
    eprintln!("{msg}");
}

/// What the numbers were measured on.
fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib = proc_field_kib(&meminfo, "MemTotal:").unwrap_or(0);
    let kernel =
        std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_string()).unwrap_or_default();
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    json!({"cpus": cpus, "cpu_model": model, "mem_mib": mem_kib / 1024, "kernel": kernel, "loadavg": loadavg()})
}

/// The 1-minute load average: other work on a shared machine skews results.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_default()
}

/// CPU time (user + system) and command name from a /proc `stat` file: of
/// the whole process for /proc/self/stat (exited threads included), of one
/// thread for /proc/self/task/TID/stat. /proc counts in clock ticks; USER_HZ
/// is 100 on every Linux port (reading sysconf would need libc, which this
/// crate does not link).
fn stat_cpu(path: &Path) -> Option<(String, Duration)> {
    let stat = std::fs::read_to_string(path).ok()?;
    // The name is in parentheses and may itself hold spaces or ')'.
    let (head, rest) = stat.rsplit_once(')')?;
    let name = head.split_once('(')?.1.to_string();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after ')'.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some((name, Duration::from_millis(ticks * 10)))
}

/// A `Name:   1234 kB` field of a /proc file, in KiB.
fn proc_field_kib(text: &str, field: &str) -> Option<u64> {
    text.lines().find(|l| l.starts_with(field))?.split_whitespace().nth(1)?.parse().ok()
}

/// Runs `body` against a real daemon started in this process on a free
/// loopback port, with its store in `data_dir` and these providers, then
/// stops the daemon. A daemon that fails while stopping fails the part even
/// when `body` succeeded.
async fn with_daemon<T, F, Fut>(data_dir: PathBuf, providers: Vec<ProviderSpec>, body: F) -> anyhow::Result<T>
where
    F: FnOnce(bosun_actors::Context, SocketAddr) -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    // Bound as `bosun serve` binds; `daemon::run` sets TCP_NODELAY itself.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    let addr = listener.local_addr().context("reading the bound address")?;
    let config = DaemonConfig {
        listen: addr,
        data_dir,
        providers,
        discover_agents: false,
        fault_injection: false,
        log_format: LogFormat::Text,
        live_capacity: None,
        auth: Default::default(),
        server: Default::default(),
        docker: None,
        git: Default::default(),
        prices: Default::default(),
        // The bench starts its own commands in its terminals: nothing to ask.
        termbridge: bosun_actors::TermBridgeSettings { policy: bosun_proto::Policy::FullAccess, ..Default::default() },
        module_trust: Default::default(),
        metrics: Default::default(),
        logs: Default::default(),
    };
    let (ready_tx, ready_rx) = oneshot::channel::<bosun_actors::Context>();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    // One daemon per process at most: ractor's registry is global.
    let mut daemon = tokio::spawn(crate::daemon::run(
        config,
        listener,
        async {
            let _ = stop_rx.await;
        },
        move |ctx| {
            let _ = ready_tx.send(ctx.clone());
        },
    ));
    let ctx = tokio::select! {
        ctx = ready_rx => ctx.ok(),
        ended = &mut daemon => {
            let outcome = ended.context("the daemon task panicked")?;
            outcome.context("the daemon stopped before it was ready")?;
            None
        }
    };
    let ctx = ctx.context("the daemon dropped its ready callback")?;

    let outcome = body(ctx, addr).await;

    let _ = stop_tx.send(());
    match tokio::time::timeout(DAEMON_STOP_TIMEOUT, daemon).await {
        Ok(joined) => joined.context("the daemon task panicked")?.context("the daemon failed while stopping")?,
        Err(_) => progress(&format!(
            "   warning: the in-process daemon did not stop within {} s",
            DAEMON_STOP_TIMEOUT.as_secs()
        )),
    }
    outcome
}

/// The bench's client of the daemon at `addr`; it names itself
/// (`X-Bosun-Client`), as the daemon wants of every state-changing request.
fn client(addr: &str) -> anyhow::Result<bosun_client::Client> {
    let name = concat!("bosun-bench/", env!("CARGO_PKG_VERSION"));
    bosun_client::Client::new(&format!("http://{addr}"), name).context("building the daemon's client")
}

/// Creates a session the way a client does, so its topic is a live one; its id.
/// It is full-access: the bench measures the event path, not approvals, and
/// an agent Bosun does not know cannot be held to plan-only.
async fn create_session(
    client: &bosun_client::Client,
    provider: &str,
    cwd: &Path,
    title: &str,
) -> anyhow::Result<String> {
    let request = bosun_proto::CreateSessionRequest {
        provider: provider.to_string(),
        cwd: Some(cwd.to_str().context("the bench's directory is not UTF-8")?.to_string()),
        title: Some(title.to_string()),
        policy: Some(bosun_proto::Policy::FullAccess),
        ..Default::default()
    };
    let session = client.create_session(&request).await.context("creating a session")?;
    Ok(session.id.to_string())
}

/// CPU used so far: (the whole process, the threads whose name starts with
/// `thread_prefix`), so a bench can tell its clients' cost from the daemon's.
fn cpu_split(thread_prefix: &str) -> Option<(Duration, Duration)> {
    let (_, total) = stat_cpu(Path::new("/proc/self/stat"))?;
    let mut matching = Duration::ZERO;
    for entry in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        if let Some((name, cpu)) = stat_cpu(&entry.path().join("stat")) {
            if name.starts_with(thread_prefix) {
                matching += cpu;
            }
        }
    }
    Some((total, matching))
}

/// A directory removed when dropped, so a failed part leaves nothing behind.
/// (tempfile is only a dev-dependency of this crate.)
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    fn new(base: &Path, label: &str) -> anyhow::Result<TempDir> {
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        let path = base.join(format!("bosun-bench-{}-{label}-{nanos:09}", std::process::id()));
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(TempDir { path })
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            eprintln!("warning: could not remove {}: {e}", self.path.display());
        }
    }
}

/// The nearest-rank percentile of sorted values (`p` in 0..=100).
fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Nanoseconds as milliseconds with 2 decimals.
fn ms(nanos: u64) -> String {
    format!("{:.2} ms", nanos as f64 / 1e6)
}

fn secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

/// 1234567 → "1,234,567".
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// Total size of the files under `path`: (apparent bytes, allocated bytes).
fn dir_size(path: &Path) -> anyhow::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    let mut apparent = 0;
    let mut allocated = 0;
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
            let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
            let meta = entry.metadata().with_context(|| format!("stat {}", entry.path().display()))?;
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                apparent += meta.len();
                // st_blocks counts 512-byte units whatever the block size.
                allocated += meta.blocks() * 512;
            }
        }
    }
    Ok((apparent, allocated))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&v, 100.0), 100);
        assert_eq!(percentile(&v, 0.0), 1);
        assert_eq!(percentile(&[], 50.0), 0);
    }

    #[test]
    fn formats() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(proc_field_kib("VmHWM:\t  10 kB\nVmRSS:\t  2048 kB\n", "VmRSS:"), Some(2048));
    }
}
