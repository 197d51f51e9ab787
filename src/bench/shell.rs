//! (vi) Per-command round trip of the `shell` provider: a command run in the
//! session's persistent jailed shell, against a fresh bubblewrap jail per
//! command.
//!
//! Both sides run `true` in the same [`Jail`] (the options a `"sandbox":
//! "bwrap"` session gets, network off):
//! - **persistent**: one `sh` started once in the jail, driven through the
//!   provider's own code ([`Shell::run`]: the sentinel frame written to its
//!   stdin, the output scanned until both pipes reported the end);
//! - **fresh**: `bwrap … -- sh -c true` spawned and waited for, each time.
//!
//! `true` is a builtin of `sh`: the persistent side measures the protocol
//! alone. `/bin/true` in the same persistent shell adds a fork and exec in
//! the jail, as most real commands have. The same persistent shell on the
//! host (no jail) is measured too, to show what the jail adds once it is up.
//! The four are interleaved, one command of each per round, so load on this
//! shared machine hits them alike.

use super::{ms, percentile, progress, BenchArgs, Report, Row, TempDir};
use anyhow::Context as _;
use bosun_builtin::shell::Shell;
use bosun_isolation::jail::{Jail, JailEnv, Limits};
use bosun_isolation::{HostShells, ShellSpec};
use serde_json::json;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// The expectation for the ratio of the medians.
const TARGET_RATIO: f64 = 5.0;
/// Rounds before the measured ones, not counted.
const WARMUP: usize = 50;
const START_TIMEOUT: Duration = Duration::from_secs(30);

pub async fn run(args: &BenchArgs, base: &Path) -> anyhow::Result<Report> {
    let work = TempDir::new(base, "shell")?;
    let data_dir = work.path().join("data");
    let cwd = work.path().join("cwd");
    for dir in [&data_dir, &cwd] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let Some(jail) = Jail::bwrap(&data_dir) else {
        progress("   bwrap is not on PATH: skipping");
        return Ok(Report {
            rows: vec![Row::info("skipped", "bwrap is not on PATH (apt-get install bubblewrap)")],
            data: json!({"skipped": "bwrap is not on PATH"}),
            failures: Vec::new(),
        });
    };
    let spec = ShellSpec { session_id: "bench", cwd: &cwd, network: false };

    let started = Instant::now();
    let mut jailed = Shell::start(&jail, spec, None, START_TIMEOUT).await.context("jailed shell")?;
    let start_jailed = started.elapsed();
    let mut host = Shell::start(&HostShells, spec, None, START_TIMEOUT).await.context("host shell")?;

    let n = args.shell_commands.max(1);
    progress(&format!(
        "   {n} rounds: `true` in the persistent jailed sh, in a fresh bwrap, in the persistent host sh; \
         `/bin/true` in the persistent jailed sh"
    ));
    let mut persistent = Vec::with_capacity(n);
    let mut fresh = Vec::with_capacity(n);
    let mut on_host = Vec::with_capacity(n);
    let mut external = Vec::with_capacity(n);
    let mut failures = Vec::new();
    for round in 0..WARMUP + n {
        let measured = round >= WARMUP;
        let t = Instant::now();
        let out = jailed.run("true").await.context("a command in the persistent jailed shell")?;
        let persistent_ns = t.elapsed();
        if out.finished.status != 0 {
            failures.push(format!("`true` in the persistent jailed shell exited {}", out.finished.status));
        }

        let t = Instant::now();
        let status = jail
            .command("sh", &cwd, Limits::COMMAND, JailEnv::Basic)
            .arg("-c")
            .arg("true")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .context("spawning a fresh bwrap")?;
        let fresh_ns = t.elapsed();
        if !status.success() {
            failures.push(format!("`bwrap … sh -c true` ended with {status}"));
        }

        let t = Instant::now();
        let out = host.run("true").await.context("a command in the persistent host shell")?;
        let host_ns = t.elapsed();
        if out.finished.status != 0 {
            failures.push(format!("`true` in the persistent host shell exited {}", out.finished.status));
        }
        let t = Instant::now();
        let out = jailed.run("/bin/true").await.context("/bin/true in the persistent jailed shell")?;
        let external_ns = t.elapsed();
        if out.finished.status != 0 {
            failures.push(format!("`/bin/true` in the persistent jailed shell exited {}", out.finished.status));
        }
        if measured {
            external.push(nanos(external_ns));
            persistent.push(nanos(persistent_ns));
            fresh.push(nanos(fresh_ns));
            on_host.push(nanos(host_ns));
        }
    }
    failures.dedup();
    for v in [&mut persistent, &mut fresh, &mut on_host, &mut external] {
        v.sort_unstable();
    }
    let p = |v: &[u64], q| percentile(v, q);
    let ratio_p50 = p(&fresh, 50.0) as f64 / p(&persistent, 50.0).max(1) as f64;
    let ratio_p99 = p(&fresh, 99.0) as f64 / p(&persistent, 99.0).max(1) as f64;
    let pair = |v: &[u64]| format!("{} / {}", ms(p(v, 50.0)), ms(p(v, 99.0)));
    let rows = vec![
        Row::info("commands", format!("{n} × `true` each way, after {WARMUP} warm-up rounds")),
        Row::info("persistent jailed sh p50 / p99", pair(&persistent)),
        Row::info("fresh bwrap per command p50 / p99", pair(&fresh)),
        Row::target(
            "fresh / persistent (p50)",
            format!("{ratio_p50:.1}× (p99: {ratio_p99:.1}×)"),
            format!("≥ {TARGET_RATIO}×"),
            ratio_p50 >= TARGET_RATIO,
        ),
        Row::info("persistent jailed sh, `/bin/true` p50 / p99", pair(&external)),
        Row::info("persistent host sh p50 / p99", pair(&on_host)),
        Row::info("starting the jailed shell", ms(nanos(start_jailed))),
    ];
    let stats = |v: &[u64]| json!({"p50_ns": p(v, 50.0), "p99_ns": p(v, 99.0), "max_ns": v.last()});
    let data = json!({
        "commands": n,
        "persistent_jailed": stats(&persistent),
        "fresh_bwrap": stats(&fresh),
        "persistent_host": stats(&on_host),
        "persistent_jailed_bin_true": stats(&external),
        "ratio_p50": ratio_p50,
        "ratio_p99": ratio_p99,
        "start_jailed_ns": nanos(start_jailed),
    });
    Ok(Report { rows, data, failures })
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
