//! `bosun workflow run|ls|show|cancel|resume|decide`: workflow runs
//! (docs/WORKFLOWS.md) over `bosun-client`.

use super::{id_arg, note, Client, CommonArgs};
use anyhow::{bail, Context as _};
use bosun_proto::*;
use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;

macro_rules! outln {
    ($($arg:tt)*) => {
        writeln!(std::io::stdout().lock(), $($arg)*).context("writing to stdout")
    };
}

#[derive(Debug, clap::Args)]
pub struct WorkflowArgs {
    #[command(flatten)]
    pub(super) common: CommonArgs,
    #[command(subcommand)]
    command: WorkflowCommand,
}

#[derive(Debug, clap::Subcommand)]
enum WorkflowCommand {
    /// Start a run of the workflow in FILE (read here and sent to the daemon).
    Run(RunArgs),
    /// List runs, newest first.
    #[command(visible_alias = "list")]
    Ls {
        /// Only runs in this state (running, paused, completed, failed, cancelled).
        #[arg(long)]
        state: Option<RunState>,
    },
    /// Show a run with its steps.
    Show {
        #[arg(value_parser = id_arg)]
        id: String,
    },
    /// Cancel a run: its running turns are interrupted and its gates cancelled.
    Cancel {
        #[arg(value_parser = id_arg)]
        id: String,
    },
    /// Resume a paused run.
    Resume {
        #[arg(value_parser = id_arg)]
        id: String,
    },
    /// Retry, skip or abort an interrupted or failed step.
    Decide {
        #[arg(value_parser = id_arg)]
        id: String,
        step: String,
        decision: StepDecision,
        /// One item of a fan-out step (default: all its interrupted or failed items).
        #[arg(long)]
        index: Option<u64>,
    },
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    file: PathBuf,
    /// An input of the workflow: `--input task="add a flag"`, repeated.
    #[arg(long = "input", short = 'i', value_name = "NAME=VALUE", value_parser = input_arg)]
    inputs: Vec<(String, String)>,
    /// Follow the run: a live step table until it ends (exit 0 if it completes).
    #[arg(long)]
    follow: bool,
}

fn input_arg(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("{s:?} is not NAME=VALUE"))?;
    if k.is_empty() {
        return Err(format!("{s:?} has no name before ="));
    }
    Ok((k.to_string(), v.to_string()))
}

pub(super) async fn workflow(args: WorkflowArgs) -> anyhow::Result<i32> {
    let client = Client::new(&args.common)?;
    match args.command {
        WorkflowCommand::Run(run) => start(&client, run).await,
        WorkflowCommand::Ls { state } => {
            let list = client.api.runs(&ListRunsQuery { state }).await?;
            if client.json {
                client.print_json(&list)?;
                return Ok(0);
            }
            if list.runs.is_empty() {
                note("no workflow runs");
            }
            for run in &list.runs {
                let done = run.steps.iter().filter(|s| s.state.is_final()).count();
                let pause = run.pause.as_ref().map(|p| format!(" ({})", p.reason)).unwrap_or_default();
                outln!(
                    "{}  {:<10} {:<20} {done}/{} steps  {}",
                    run.id,
                    format!("{}{pause}", run.state),
                    run.name,
                    run.steps.len(),
                    run.created_at
                )?;
            }
            Ok(0)
        }
        WorkflowCommand::Show { id } => {
            let run = client.api.run(&id).await?;
            if client.json {
                client.print_json(&run)?;
            } else {
                print_run(&run, &client.server_hint)?;
            }
            Ok(0)
        }
        WorkflowCommand::Cancel { id } => answer(&client, client.api.cancel_run(&id).await?),
        WorkflowCommand::Resume { id } => answer(&client, client.api.resume_run(&id).await?),
        WorkflowCommand::Decide { id, step, decision, index } => {
            answer(&client, client.api.decide_step(&id, &step, &StepDecisionRequest { decision, index }).await?)
        }
    }
}

fn answer(client: &Client, run: RunView) -> anyhow::Result<i32> {
    if client.json {
        client.print_json(&run)?;
    } else {
        print_run(&run, &client.server_hint)?;
    }
    Ok(0)
}

async fn start(client: &Client, args: RunArgs) -> anyhow::Result<i32> {
    let definition = std::fs::read_to_string(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let mut inputs = BTreeMap::new();
    for (k, v) in args.inputs {
        if inputs.insert(k.clone(), v).is_some() {
            bail!("--input {k} is given twice");
        }
    }
    let run = client.api.start_run(&StartRunRequest { definition: Some(definition), path: None, inputs }).await?;
    if !args.follow {
        if client.json {
            client.print_json(&run)?;
        } else {
            outln!("{}", run.id)?;
        }
        return Ok(0);
    }
    follow(client, run).await
}

/// Follows a run's topic from its start until it ends: in `--json`, each
/// event as it came; else the step table, redrawn as steps change.
async fn follow(client: &Client, mut run: RunView) -> anyhow::Result<i32> {
    let mut events = client.follow(vec![Topic::workflow(run.id.as_str()).to_string()], 0).await?;
    let tty = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let mut drawn = 0usize;
    if !client.json {
        drawn = draw(&run, tty, 0, &client.server_hint)?;
    }
    loop {
        let followed = tokio::select! {
            next = events.next() => next?,
            _ = tokio::signal::ctrl_c() => {
                eprintln!("stopped watching; run {} goes on (cancel it with: bosun workflow cancel {}{})", run.id, run.id, client.server_hint);
                return Ok(130);
            }
        };
        if client.json {
            outln!("{}", followed.frame)?;
        }
        let Ok(event) = followed.envelope.payload() else { continue };
        match event {
            EventData::WorkflowStarted(e) => run = e.run,
            EventData::WorkflowStep(e) => apply_step(&mut run.steps, e.step),
            EventData::WorkflowPaused(e) => {
                run.state = RunState::Paused;
                run.pause = Some(RunPause { reason: e.reason, message: e.message });
            }
            EventData::WorkflowEvent(e) => {
                if e.kind == WorkflowEventKind::Resumed {
                    run.state = RunState::Running;
                    run.pause = None;
                }
                if let (Some(usage), Some(cost)) = (e.usage, e.cost) {
                    run.usage = usage;
                    run.cost = cost;
                }
                if !client.json && !tty {
                    outln!("{}: {}", e.kind, e.message)?;
                }
            }
            EventData::WorkflowError(e) => {
                if !client.json {
                    note(&format!("error: {}", e.message));
                }
            }
            EventData::WorkflowCompleted(e) => {
                run.state = e.state;
                run.pause = None;
                if !client.json {
                    draw(&run, tty, drawn, &client.server_hint)?;
                    outln!(
                        "run {} {} in {:.1} s ({} tokens, cost {:.4})",
                        run.id,
                        e.state,
                        e.duration_ms as f64 / 1000.0,
                        e.usage.input_tokens + e.usage.output_tokens,
                        e.cost
                    )?;
                }
                return Ok(if e.state == RunState::Completed { 0 } else { 1 });
            }
            _ => continue,
        }
        if !client.json {
            drawn = draw(&run, tty, drawn, &client.server_hint)?;
        }
    }
}

/// Puts a step's new state in the table: in its place, or, for the first
/// news of a fan-out's item, where the fan-out's placeholder was.
fn apply_step(steps: &mut Vec<StepView>, step: StepView) {
    if let Some(i) = steps.iter().position(|s| s.step_id == step.step_id && s.index == step.index) {
        steps[i] = step;
        return;
    }
    let same = |s: &StepView| s.step_id == step.step_id;
    match steps.iter().position(|s| same(s) && s.index.is_none()) {
        Some(i) => steps[i] = step,
        None => {
            let at = steps.iter().rposition(same).map_or(steps.len(), |i| i + 1);
            steps.insert(at, step);
        }
    }
}

/// Draws the step table; on a terminal, over the one drawn before (`drawn`
/// lines). Returns how many lines it drew.
fn draw(run: &RunView, tty: bool, drawn: usize, hint: &str) -> anyhow::Result<usize> {
    let lines = table(run, hint);
    let mut out = std::io::stdout().lock();
    if tty && drawn > 0 {
        // Up `drawn` lines, and clear to the end of the screen.
        write!(out, "\x1b[{drawn}A\x1b[J").context("writing to stdout")?;
    }
    if !tty && drawn > 0 {
        writeln!(out).context("writing to stdout")?;
    }
    for line in &lines {
        writeln!(out, "{line}").context("writing to stdout")?;
    }
    Ok(lines.len())
}

fn print_run(run: &RunView, hint: &str) -> anyhow::Result<()> {
    for line in table(run, hint) {
        outln!("{line}")?;
    }
    Ok(())
}

fn table(run: &RunView, hint: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let tokens = run.usage.input_tokens + run.usage.output_tokens;
    let budget = match (run.budget.tokens, run.budget.cost) {
        (None, None) => String::new(),
        (t, c) => format!(
            " of {}{}",
            t.map(|t| format!("{t} tokens")).unwrap_or_default(),
            c.map(|c| format!(" cost {c:.2}")).unwrap_or_default()
        ),
    };
    lines.push(format!("{} {:?} {}  {tokens} tokens, cost {:.4}{budget}", run.id, run.name, run.state, run.cost));
    if let Some(p) = &run.pause {
        lines.push(format!("  paused ({}): {}", p.reason, first_line(&p.message)));
    }
    for s in &run.steps {
        let label = s.index.map(|i| format!("{}#{i}", s.step_id)).unwrap_or_else(|| s.step_id.clone());
        let mut line = format!("  {label:<16} {:<6} {:<11}", s.kind, s.state);
        if let Some(session) = &s.session_id {
            line.push_str(&format!(" {session}"));
        }
        if s.attempts > 1 {
            line.push_str(&format!(" attempt {}", s.attempts));
        }
        if s.stalled {
            line.push_str(" stalled");
        }
        if let Some(e) = &s.error {
            line.push_str(&format!("  {}", first_line(e)));
        }
        if s.state == StepState::Running {
            if let Some(a) = &s.approval_id {
                line.push_str(&format!("  decide: bosun approve {a} accept|decline{hint}"));
            }
        }
        if matches!(s.state, StepState::Interrupted | StepState::Failed) && run.state == RunState::Paused {
            line.push_str(&format!("  decide: bosun workflow decide {} {} retry|skip|abort{hint}", run.id, s.step_id));
        }
        lines.push(line);
    }
    lines
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(id: &str, index: Option<u64>, state: StepState) -> StepView {
        StepView {
            step_id: id.into(),
            kind: StepKind::Agent,
            index,
            item: None,
            state,
            session_id: None,
            turn_ids: vec![],
            attempts: 0,
            output: None,
            error: None,
            usage: Usage::default(),
            started_at: None,
            ended_at: None,
            approval_id: None,
            merge: None,
            stalled: false,
        }
    }

    #[test]
    fn fan_out_items_take_their_placeholders_place() {
        let mut steps = vec![
            step("plan", None, StepState::Completed),
            step("build", None, StepState::Pending),
            step("review", None, StepState::Pending),
        ];
        apply_step(&mut steps, step("build", Some(0), StepState::Pending));
        apply_step(&mut steps, step("build", Some(1), StepState::Pending));
        apply_step(&mut steps, step("build", Some(0), StepState::Running));
        let order: Vec<(String, Option<u64>, StepState)> =
            steps.iter().map(|s| (s.step_id.clone(), s.index, s.state)).collect();
        assert_eq!(
            order,
            vec![
                ("plan".into(), None, StepState::Completed),
                ("build".into(), Some(0), StepState::Running),
                ("build".into(), Some(1), StepState::Pending),
                ("review".into(), None, StepState::Pending),
            ]
        );
    }
}
