//! `bosun bench --only workflow`: what the workflow layer costs on top of
//! the sessions it runs. Three measures, on the demo agent:
//! - hand-off: from a step's turn ending to the next step's turn starting,
//!   along a chain of steps (the daemon's own timestamps of both turns);
//! - fan-out: from the planner's turn ending to the last of N parallel
//!   items' turns starting, against the same N sessions started by hand
//!   over the API at once (the peer: what a script would do);
//! - restart: time to ready with N stored runs (ended) against an empty
//!   store, started as `bosun serve` is.

use super::restart::Child;
use super::*;
use bosun_proto::{CreateSessionRequest, RunView, StartRunRequest, StepState};
use bosun_state::{Batch, FlushPolicy, Owner, StepRecord, Store, StoreConfig, WorkflowRunRecord};
use std::time::Instant;

pub async fn run(args: &BenchArgs, base: &Path) -> anyhow::Result<Report> {
    let dir = TempDir::new(base, "workflow")?;
    let mut rows = Vec::new();
    let mut data = serde_json::Map::new();

    let (handoff, fanout, peer) = with_daemon(dir.path().join("live"), Vec::new(), |_ctx, addr| async move {
        let client = bosun_client::Client::new(&format!("http://{addr}"), "bosun-bench").context("a client")?;
        let handoff = chain(&client, args.workflow_chain).await?;
        let fanout = fan_out(&client, args.workflow_fanout).await?;
        let peer = by_hand(&client, args.workflow_fanout).await?;
        Ok((handoff, fanout, peer))
    })
    .await?;
    let mut sorted = handoff.clone();
    sorted.sort_unstable();
    let (p50, p99) = (percentile(&sorted, 50.0), percentile(&sorted, 99.0));
    rows.push(Row::info(
        format!("hand-off, step end → next step's turn ({} steps)", args.workflow_chain),
        format!("p50 {} p99 {} max {}", ms(p50), ms(p99), ms(*sorted.last().unwrap_or(&0))),
    ));
    rows.push(Row::info(
        format!("fan-out of {} items: plan's end → all started", args.workflow_fanout),
        format!("{} (by hand over the API: {}; ratio {:.2})", ms(fanout), ms(peer), fanout as f64 / peer.max(1) as f64),
    ));
    data.insert("handoff_ns".into(), json!({"p50": p50, "p99": p99, "samples": handoff}));
    data.insert("fanout_ns".into(), json!({"items": args.workflow_fanout, "all_started": fanout, "by_hand": peer}));

    // Restart-to-ready: N stored runs against none.
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).context("creating the empty data dir")?;
    let full = dir.path().join("runs");
    populate(&full, args.workflow_runs).context("populating stored runs")?;
    let mut with_runs = Vec::new();
    let mut without = Vec::new();
    // Alternated, so the machine's drift hits both alike.
    for _ in 0..args.restarts.max(1) {
        for (data_dir, into) in [(&empty, &mut without), (&full, &mut with_runs)] {
            let (child, start) = Child::start(data_dir, None).await?;
            child.stop().await?;
            into.push(start.ready().as_nanos() as u64);
        }
    }
    with_runs.sort_unstable();
    without.sort_unstable();
    let (a, b) = (percentile(&with_runs, 50.0), percentile(&without, 50.0));
    rows.push(Row::info(
        format!(
            "restart to ready, {} stored runs (median of {})",
            thousands(args.workflow_runs as u64),
            with_runs.len()
        ),
        format!("{} (empty store {}; ratio {:.2})", ms(a), ms(b), a as f64 / b.max(1) as f64),
    ));
    data.insert("restart_ns".into(), json!({"runs": args.workflow_runs, "with_runs": with_runs, "empty": without}));
    Ok(Report { rows, data: Value::Object(data), failures: Vec::new() })
}

/// A chain of `n` one-line steps; the gaps between one's turn ending and the
/// next one's starting, in nanoseconds.
async fn chain(client: &bosun_client::Client, n: usize) -> anyhow::Result<Vec<u64>> {
    let mut toml = String::from("name = \"chain\"\n");
    for i in 0..n {
        toml.push_str(&format!("[[steps]]\nid = \"s{i}\"\nprompt = \"SAY: step {i}\"\n"));
        if i > 0 {
            toml.push_str(&format!("needs = [\"s{}\"]\n", i - 1));
        }
    }
    let run = finish(client, &toml).await?;
    let mut spans = Vec::new();
    for step in &run.steps {
        let session = step.session_id.as_ref().context("a step without a session")?;
        let turn = client.turns(session.as_str()).await?.turns.into_iter().next().context("a step without a turn")?;
        spans.push((nanos(&turn.started_at)?, nanos(turn.ended_at.as_deref().context("a turn not ended")?)?));
    }
    Ok(spans.windows(2).map(|w| w[1].0.saturating_sub(w[0].1)).collect())
}

/// A planner saying `n` lines, then one item per line: from the planner's
/// turn ending to the last item's turn starting, in nanoseconds.
async fn fan_out(client: &bosun_client::Client, n: usize) -> anyhow::Result<u64> {
    let say: String = (0..n).map(|i| format!("SAY: part {i}\\n")).collect();
    let toml = format!(
        "name = \"fan-out\"\n[[steps]]\nid = \"plan\"\nprompt = \"{say}\"\n[[steps]]\nid = \"build\"\nneeds = [\"plan\"]\nfor_each = \"{{{{ steps.plan.lines }}}}\"\nprompt = \"SAY: {{{{ item }}}}\"\n"
    );
    let run = finish(client, &toml).await?;
    let mut plan_end = 0;
    let mut last_start = 0;
    let mut items = 0;
    for step in &run.steps {
        let session = step.session_id.as_ref().context("a step without a session")?;
        let turn = client.turns(session.as_str()).await?.turns.into_iter().next().context("a step without a turn")?;
        if step.step_id == "plan" {
            plan_end = nanos(turn.ended_at.as_deref().context("a turn not ended")?)?;
        } else {
            items += 1;
            last_start = last_start.max(nanos(&turn.started_at)?);
        }
    }
    anyhow::ensure!(items == n, "{items} items ran, {n} expected");
    Ok(last_start.saturating_sub(plan_end))
}

/// The peer: `n` sessions made and their turns started over the API at
/// once, as a script would; from the first request to the last turn started.
async fn by_hand(client: &bosun_client::Client, n: usize) -> anyhow::Result<u64> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..n {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let req = CreateSessionRequest { title: Some(format!("by hand {i}")), ..Default::default() };
            let s = client.create_session(&req).await?;
            client.start_turn(s.id.as_str(), &format!("SAY: part {i}")).await?;
            Ok::<_, bosun_client::ClientError>(())
        }));
    }
    for t in tasks {
        t.await.context("a by-hand task panicked")??;
    }
    Ok(started.elapsed().as_nanos() as u64)
}

async fn finish(client: &bosun_client::Client, toml: &str) -> anyhow::Result<RunView> {
    let req = StartRunRequest { definition: Some(toml.to_string()), path: None, inputs: Default::default() };
    let run = client.start_run(&req).await.context("starting a run")?;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let run = client.run(run.id.as_str()).await?;
        if run.state.is_final() {
            anyhow::ensure!(
                run.steps.iter().all(|s| s.state == StepState::Completed),
                "the run did not complete: {run:?}"
            );
            return Ok(run);
        }
        anyhow::ensure!(Instant::now() < deadline, "the run did not end in time");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn nanos(ts: &str) -> anyhow::Result<u64> {
    let t = chrono::DateTime::parse_from_rfc3339(ts).with_context(|| format!("a bad timestamp {ts:?}"))?;
    Ok(t.timestamp_nanos_opt().unwrap_or(0) as u64)
}

/// `n` ended runs of five steps each, as their actors would have written them.
fn populate(data_dir: &Path, n: usize) -> anyhow::Result<()> {
    let path = data_dir.join("store");
    std::fs::create_dir_all(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    let store = Store::open(StoreConfig { path, flush: FlushPolicy::GroupCommit, ..StoreConfig::default() })
        .context("opening a store")?;
    let now = bosun_proto::now_ts();
    for chunk in (0..n).collect::<Vec<_>>().chunks(100) {
        let mut batch = Batch::by(Owner::Workflow);
        for &i in chunk {
            let steps = (0..5)
                .map(|k| {
                    let mut s = StepRecord::new(&format!("s{k}"), bosun_proto::StepKind::Agent, false);
                    s.state = StepState::Completed;
                    s.output = Some(format!("output of step {k}"));
                    s
                })
                .collect();
            let run = WorkflowRunRecord {
                id: format!("w_{i:012x}"),
                name: "stored".into(),
                definition: "name = \"stored\"\n[[steps]]\nid = \"s0\"\nprompt = \"x\"\n".into(),
                inputs: Default::default(),
                state: bosun_proto::RunState::Completed,
                pause: None,
                steps,
                budget: Default::default(),
                usage: Default::default(),
                cost: 0.0,
                created_at: now.clone(),
                updated_at: now.clone(),
                ended_at: Some(now.clone()),
            };
            batch.put(&run)?;
        }
        store.commit_blocking(batch).context("writing stored runs")?;
    }
    store.close();
    Ok(())
}
