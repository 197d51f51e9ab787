//! A deterministic scripted agent that goes through the same worker, turn and
//! approval path as a real one, so the daemon can be demonstrated and tested
//! end to end without an AI model.
//!
//! A prompt becomes a fixed list of steps (see [`DemoDriver`]); the same prompt
//! always gives the same chunks, which lets test suites compare transcripts.
//! Every chunk carries a checkpoint naming the position after it, so a turn
//! cut by a crash resumes exactly where it stopped.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bosun_driver::{
    AgentDriver, AgentError, AgentEvent, Asked, Capabilities, DriverInit, EnforcementReport, LogLevel, NewTurn,
    ProviderFactory, ProviderSpec, TurnControl, TurnHandle, TurnInput, TurnOutcome, TurnSink, TurnSlot,
};
use bosun_isolation::process::{CommandEvent, ExitState, OutputStream, ShellCommand, DEFAULT_OUTPUT_LIMIT};
use bosun_isolation::Jail;
use bosun_proto::{Action, ChunkKind, CommandRun, Decision, EndedBy, Enforcement, Usage};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Pause after each reply chunk, so clients really see a stream.
const TEXT_PAUSE: Duration = Duration::from_millis(15);
/// `SLOW` prompts tick 20 times a second...
const TICK_PAUSE: Duration = Duration::from_millis(50);
/// ...for 30 seconds: long enough to interrupt or kill the daemon mid-turn.
const SLOW_TICKS: u32 = 600;
/// Words per reply chunk.
const WORDS_PER_CHUNK: usize = 4;
/// How many prompt words the reply quotes back.
const ECHO_WORDS: usize = 8;
/// Bumped whenever the checkpoint's meaning changes, so an old one is refused
/// rather than misread.
const CHECKPOINT_VERSION: u32 = 1;

/// What a turn fails with when a resume finds its command had already started.
pub const CUT_COMMAND_FAILURE: &str = "the command was cut by a restart and was not run again";

/// The `demo` kind: built in, no program, every command run by the daemon.
#[derive(Debug, Clone, Copy, Default)]
pub struct DemoFactory;

impl ProviderFactory for DemoFactory {
    fn kind(&self) -> &'static str {
        "demo"
    }

    fn runs_program(&self) -> bool {
        false
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities { resume: true, load_session: false, steer: true, interrupt: true, images: false }
    }

    fn enforcement_before_start(&self) -> EnforcementReport {
        EnforcementReport {
            enforcement: Enforcement::Daemon,
            detail: "the daemon runs every command itself, after the session's approval".into(),
            agent: None,
        }
    }

    fn driver(&self, _spec: ProviderSpec, init: DriverInit) -> Box<dyn AgentDriver> {
        Box::new(DemoDriver::jailed(init.isolation.jail().cloned()))
    }
}

/// The built-in `demo` agent.
///
/// For a prompt it streams, in order:
/// 1. a short reply built from the prompt, as at least three `text` chunks;
/// 2. with `SLOW` anywhere in the prompt: 600 chunks `tick N/600\n`, 20 a
///    second;
/// 3. for each line holding `RUN: <command>`: an approval request; if
///    approved, a `notice` "running `<command>`", the command's output as
///    `command_output` chunks (run with `sh -c` in the turn's cwd) and a
///    `notice` "command finished: exit code N"; if declined, a `notice`
///    "declined: `<command>` was not run";
/// 4. a closing `text` chunk;
///
/// A prompt with `SAY: <text>` lines is answered with just those texts,
/// one `text` chunk and line each (then its `SLOW` ticks, if it asks),
/// and runs nothing: a scripted reply, as a workflow's planner gives.
///
/// then `Usage` (input: words in the prompt, output: chunks sent) and
/// `Finished(Completed)`. Steering is acknowledged with a `notice`
/// "steer: <text>" at the next chunk boundary.
#[derive(Debug)]
pub struct DemoDriver {
    slot: TurnSlot,
    /// Where `RUN:` commands run: inside this jail, or on the host.
    jail: Option<Jail>,
}

impl DemoDriver {
    pub fn new() -> DemoDriver {
        DemoDriver::jailed(None)
    }

    /// A driver whose commands run in `jail` (on the host with `None`).
    pub fn jailed(jail: Option<Jail>) -> DemoDriver {
        DemoDriver { slot: TurnSlot::new(), jail }
    }
}

impl Default for DemoDriver {
    fn default() -> DemoDriver {
        DemoDriver::new()
    }
}

impl AgentDriver for DemoDriver {
    fn kind(&self) -> &'static str {
        "demo"
    }

    fn capabilities(&self) -> Capabilities {
        DemoFactory.capabilities()
    }

    fn start_turn(
        &mut self,
        input: TurnInput,
        events: mpsc::UnboundedSender<AgentEvent>,
    ) -> Result<TurnHandle, AgentError> {
        // Everything that can refuse the turn comes before claiming the
        // driver, so a refused start leaves it free.
        let steps = script(&input.text);
        let fingerprint = fingerprint(&input.text);
        let start = match &input.resume {
            None => Start::Fresh,
            Some(value) => resume_point(value, &steps, &fingerprint)?,
        };
        let chunks = match &start {
            Start::Fresh => 0,
            Start::Resume(cp) => cp.chunks,
        };
        let jail = self.jail.clone();
        self.slot.start(events, (), move |NewTurn { sink, controls }| {
            let turn = Turn {
                jail,
                input_words: input.text.split_whitespace().count() as u64,
                input,
                sink,
                controls,
                steps,
                fingerprint,
                chunks,
                position: Position { step: 0, run: None },
                steers: VecDeque::new(),
            };
            turn.drive(start)
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Say(String),
    Tick(u32),
    Run { ordinal: usize, command: String },
}

fn script(prompt: &str) -> Vec<Step> {
    // `SAY: <text>` lines are the whole reply, one line each: what a
    // workflow's planner step is scripted with in demos and tests.
    let said: Vec<&str> = prompt.lines().filter_map(|line| Some(line.split_once("SAY:")?.1.trim())).collect();
    if !said.is_empty() {
        let mut steps: Vec<Step> = said.iter().map(|line| Step::Say(format!("{line}\n"))).collect();
        if prompt.contains("SLOW") {
            steps.extend((1..=SLOW_TICKS).map(Step::Tick));
        }
        return steps;
    }
    let words: Vec<&str> = prompt.split_whitespace().collect();
    let mut reply =
        format!("Demo agent here. Your prompt has {} word{}.", words.len(), if words.len() == 1 { "" } else { "s" });
    if !words.is_empty() {
        let quoted = words[..words.len().min(ECHO_WORDS)].join(" ");
        let more = if words.len() > ECHO_WORDS { " …" } else { "" };
        reply.push_str(&format!(" It opens with: \"{quoted}{more}\"."));
    }
    reply.push_str(" Working through it now.");

    let reply_words: Vec<&str> = reply.split(' ').collect();
    let groups: Vec<String> = reply_words.chunks(WORDS_PER_CHUNK).map(|group| group.join(" ")).collect();
    let last = groups.len() - 1;
    let mut steps: Vec<Step> = groups
        .into_iter()
        .enumerate()
        .map(|(i, group)| Step::Say(if i == last { format!("{group}\n") } else { format!("{group} ") }))
        .collect();

    if prompt.contains("SLOW") {
        steps.extend((1..=SLOW_TICKS).map(Step::Tick));
    }
    let commands = prompt.lines().filter_map(|line| {
        let (_, rest) = line.split_once("RUN:")?;
        let command = rest.trim();
        (!command.is_empty()).then(|| command.to_string())
    });
    steps.extend(commands.enumerate().map(|(i, command)| Step::Run { ordinal: i + 1, command }));
    steps.push(Step::Say("That is all for this turn.\n".to_string()));
    steps
}

/// FNV-1a: stable across builds and platforms, unlike std's hasher, so a
/// checkpoint written by one daemon binary is understood by the next.
fn fingerprint(prompt: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in prompt.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// The demo's resume point: steps before `step` are done; with `run`, step
/// `step` (a `RUN:`) is part way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Checkpoint {
    demo: u32,
    /// Fingerprint of the prompt the script was built from.
    prompt: String,
    step: usize,
    /// Chunks sent so far in the turn, so a resumed turn reports the same
    /// usage as an uninterrupted one.
    chunks: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    run: Option<RunPhase>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case", deny_unknown_fields)]
enum RunPhase {
    AwaitingApproval {
        request_id: String,
    },
    /// Approved and started: running it again after a restart could repeat
    /// its side effects, so a resume refuses to.
    Running,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Position {
    step: usize,
    run: Option<RunPhase>,
}

enum Start {
    Fresh,
    Resume(Checkpoint),
}

fn resume_point(value: &serde_json::Value, steps: &[Step], fingerprint: &str) -> Result<Start, AgentError> {
    let bad = |why: String| AgentError::BadCheckpoint(why);
    let cp: Checkpoint =
        serde_json::from_value(value.clone()).map_err(|e| bad(format!("not a demo checkpoint: {e}")))?;
    if cp.demo != CHECKPOINT_VERSION {
        return Err(bad(format!("demo checkpoint version {} (this driver writes {CHECKPOINT_VERSION})", cp.demo)));
    }
    if cp.prompt != fingerprint {
        return Err(bad("the checkpoint belongs to a different prompt".to_string()));
    }
    if cp.step > steps.len() {
        return Err(bad(format!("step {} is past the end of a {}-step script", cp.step, steps.len())));
    }
    if let Some(run) = &cp.run {
        if !matches!(steps.get(cp.step), Some(Step::Run { .. })) {
            return Err(bad(format!("step {} is not a command", cp.step)));
        }
        if matches!(run, RunPhase::AwaitingApproval { request_id } if request_id.is_empty()) {
            return Err(bad("empty request id".to_string()));
        }
    }
    Ok(Start::Resume(cp))
}

/// Why a turn stopped early.
enum End {
    Outcome(TurnOutcome),
    /// Nobody listens any more (events receiver or turn handle gone): stop
    /// without a word.
    Quiet,
}

type Flow = Result<(), End>;

struct Turn {
    input: TurnInput,
    jail: Option<Jail>,
    input_words: u64,
    sink: Arc<TurnSink>,
    controls: mpsc::UnboundedReceiver<TurnControl>,
    steps: Vec<Step>,
    fingerprint: String,
    chunks: u64,
    /// Where the last event left the script; steer notices reuse it, since
    /// they are not part of the script and must not move the resume point.
    position: Position,
    steers: VecDeque<String>,
}

enum CommandWake {
    Event(std::io::Result<Option<CommandEvent>>),
    Control(Result<TurnControl, End>),
}

impl Turn {
    /// The turn's outcome, once whatever it ran is gone (commands live
    /// inside `run`); `None` when nobody listens any more.
    async fn drive(mut self, start: Start) -> Option<TurnOutcome> {
        match self.run(start).await {
            Ok(()) => Some(TurnOutcome::Completed),
            Err(End::Outcome(outcome)) => Some(outcome),
            Err(End::Quiet) => None,
        }
    }

    async fn run(&mut self, start: Start) -> Flow {
        let mut first = 0;
        if let Start::Resume(cp) = start {
            tracing::debug!(turn = %self.input.turn_id, step = cp.step, "resuming demo turn");
            self.position = Position { step: cp.step, run: cp.run.clone() };
            first = cp.step;
            match cp.run {
                None => {}
                Some(RunPhase::AwaitingApproval { request_id }) => {
                    self.run_step(cp.step, Some(request_id)).await?;
                    first += 1;
                }
                Some(RunPhase::Running) => {
                    let command = match self.steps.get(cp.step) {
                        Some(Step::Run { command, .. }) => command.clone(),
                        _ => String::new(),
                    };
                    // The position stays on the cut command, so a crash right
                    // after this notice fails the turn again instead of
                    // carrying on past the command.
                    let here = self.position.clone();
                    let notice = format!("`{command}` was cut by a restart and was not run again");
                    self.chunk(ChunkKind::Notice, notice, here)?;
                    return Err(End::Outcome(TurnOutcome::Cut(CUT_COMMAND_FAILURE.to_string())));
                }
            }
        }
        for index in first..self.steps.len() {
            self.flush_steers()?;
            let after = Position { step: index + 1, run: None };
            match self.steps[index].clone() {
                Step::Say(text) => {
                    self.chunk(ChunkKind::Text, text, after)?;
                    self.pause(TEXT_PAUSE).await?;
                }
                Step::Tick(n) => {
                    self.chunk(ChunkKind::Text, format!("tick {n}/{SLOW_TICKS}\n"), after)?;
                    self.pause(TICK_PAUSE).await?;
                }
                Step::Run { .. } => self.run_step(index, None).await?,
            }
        }
        self.flush_steers()?;
        self.send(AgentEvent::Usage(Usage::new(self.input_words, self.chunks)))
    }

    /// Asks to run the command of step `index`, and runs it if approved.
    async fn run_step(&mut self, index: usize, resumed_request: Option<String>) -> Flow {
        let (ordinal, command) = match &self.steps[index] {
            Step::Run { ordinal, command } => (*ordinal, command.clone()),
            _ => return Ok(()),
        };
        let request_id = resumed_request.unwrap_or_else(|| format!("{}-run-{ordinal}", self.input.turn_id));
        let done = Position { step: index + 1, run: None };

        self.flush_steers()?;
        let waiting =
            Position { step: index, run: Some(RunPhase::AwaitingApproval { request_id: request_id.clone() }) };
        let action = Action::Command { command: command.clone(), cwd: self.input.cwd.to_string_lossy().into_owned() };
        let checkpoint = Some(self.checkpoint(&waiting));
        self.send(AgentEvent::ApprovalRequest { request_id: request_id.clone(), action, checkpoint })?;
        self.position = waiting;

        let approved = loop {
            let control = self.next_control().await?;
            match self.apply_control(control)? {
                Some((id, approved)) if id == request_id => break approved,
                Some((id, _)) => self.stray_decision(&id)?,
                // Waiting for a person can take long; acknowledge steers now.
                None => self.flush_steers()?,
            }
        };
        if !approved {
            return self.chunk(ChunkKind::Notice, format!("declined: `{command}` was not run"), done);
        }

        // Recorded *before* the command starts: if the daemon dies from here
        // on, the resume must know the command may have had effects.
        let running = Position { step: index, run: Some(RunPhase::Running) };
        self.chunk(ChunkKind::Notice, format!("running `{command}`"), running.clone())?;
        let asked = Asked::request(&self.input.turn_id, &request_id);
        let mut audit = CommandAudit::start(&command, &self.input.cwd, asked);
        let mut cmd = match ShellCommand::spawn_in(&command, &self.input.cwd, DEFAULT_OUTPUT_LIMIT, self.jail.as_ref())
        {
            Ok(cmd) => cmd,
            Err(err) => {
                self.send(audit.end(None, Some(EndedBy::FailedToStart)))?;
                return self.chunk(ChunkKind::Notice, format!("`{command}` could not be started: {err}"), done);
            }
        };
        loop {
            // `cmd` is dropped on every early return below, and its process
            // group guard kills whatever is still running.
            let wake = tokio::select! {
                event = cmd.next_event() => CommandWake::Event(event),
                control = self.next_control() => CommandWake::Control(control),
            };
            match wake {
                CommandWake::Event(Ok(Some(CommandEvent::Output { text, stream }))) => {
                    audit.count(stream, &text);
                    self.chunk(ChunkKind::CommandOutput, text, running.clone())?;
                }
                CommandWake::Event(Ok(Some(CommandEvent::Truncated { limit }))) => {
                    self.chunk(
                        ChunkKind::Notice,
                        format!("output cut after {limit} bytes; the rest is not shown"),
                        running.clone(),
                    )?;
                }
                CommandWake::Event(Ok(Some(CommandEvent::Exited(state)))) => {
                    self.send(audit.end(Some(state), None))?;
                    return self.chunk(ChunkKind::Notice, format!("command finished: {state}"), done);
                }
                CommandWake::Event(Ok(None)) => {
                    self.send(audit.end(None, None))?;
                    return self.chunk(ChunkKind::Notice, "command finished without an exit status".to_string(), done);
                }
                CommandWake::Event(Err(err)) => {
                    if let Err(kill_err) = cmd.kill().await {
                        tracing::warn!(error = %kill_err, "killing a command whose output failed");
                    }
                    self.send(audit.end(None, Some(EndedBy::Killed)))?;
                    return self.chunk(
                        ChunkKind::Notice,
                        format!("reading the output of `{command}` failed: {err}"),
                        done,
                    );
                }
                CommandWake::Control(control) => {
                    let applied = control.and_then(|control| self.apply_control(control));
                    match applied {
                        Ok(None) => self.flush_steers()?,
                        Ok(Some((id, _))) => self.stray_decision(&id)?,
                        Err(end) => {
                            // Reap the shell before reporting, so "interrupted"
                            // means the command is really gone.
                            if let Err(err) = cmd.kill().await {
                                tracing::warn!(error = %err, "killing an interrupted command");
                            }
                            // Best effort: the turn is ending, and if its
                            // channel is gone there is nobody to tell.
                            let _ = self.send(audit.end(None, Some(EndedBy::Interrupted)));
                            return Err(end);
                        }
                    }
                }
            }
        }
    }

    /// Waits `duration` while staying responsive to controls.
    async fn pause(&mut self, duration: Duration) -> Flow {
        let deadline = Instant::now() + duration;
        loop {
            let control = tokio::select! {
                () = tokio::time::sleep_until(deadline) => return Ok(()),
                control = self.next_control() => control?,
            };
            if let Some((id, _)) = self.apply_control(control)? {
                self.stray_decision(&id)?;
            }
        }
    }

    async fn next_control(&mut self) -> Result<TurnControl, End> {
        tokio::select! {
            control = self.controls.recv() => control.ok_or(End::Quiet),
            () = self.sink.closed() => Err(End::Quiet),
        }
    }

    /// Queues steers, turns an interrupt into the end of the turn, and hands
    /// decisions back to the caller, who alone knows which one it waits for.
    fn apply_control(&mut self, control: TurnControl) -> Result<Option<(String, bool)>, End> {
        match control {
            TurnControl::Interrupt => Err(End::Outcome(TurnOutcome::Interrupted)),
            TurnControl::Steer(text) => {
                self.steers.push_back(text);
                Ok(None)
            }
            // Cancel declines and ends the turn, as it does for real agents.
            TurnControl::Decision { decision: Decision::Cancel, .. } => Err(End::Outcome(TurnOutcome::Interrupted)),
            TurnControl::Decision { request_id, decision } => Ok(Some((request_id, decision.allows()))),
        }
    }

    fn stray_decision(&mut self, request_id: &str) -> Flow {
        self.send(AgentEvent::Log {
            level: LogLevel::Warn,
            message: format!("ignoring a decision for {request_id}: no such request is pending"),
        })
    }

    fn flush_steers(&mut self) -> Flow {
        while let Some(text) = self.steers.pop_front() {
            let here = self.position.clone();
            self.chunk(ChunkKind::Notice, format!("steer: {text}"), here)?;
        }
        Ok(())
    }

    /// Sends a chunk whose checkpoint is `after`, the position once it is out.
    fn chunk(&mut self, kind: ChunkKind, text: String, after: Position) -> Flow {
        self.chunks += 1;
        let checkpoint = Some(self.checkpoint(&after));
        self.send(AgentEvent::Chunk { kind, text, checkpoint })?;
        self.position = after;
        Ok(())
    }

    fn checkpoint(&self, at: &Position) -> serde_json::Value {
        let cp = Checkpoint {
            demo: CHECKPOINT_VERSION,
            prompt: self.fingerprint.clone(),
            step: at.step,
            chunks: self.chunks,
            run: at.run.clone(),
        };
        // Serializing a plain struct of strings and integers cannot fail; the
        // fallback only keeps this free of panics.
        serde_json::to_value(&cp).unwrap_or(serde_json::Value::Null)
    }

    fn send(&self, event: AgentEvent) -> Flow {
        if self.sink.emit(event) {
            Ok(())
        } else {
            Err(End::Quiet)
        }
    }
}

/// What the audit log keeps of one command, gathered while it runs.
struct CommandAudit {
    command: String,
    cwd: String,
    started_at: String,
    started: Instant,
    stdout_bytes: u64,
    stderr_bytes: u64,
    /// The approval the command was run under.
    asked: Asked,
}

impl CommandAudit {
    fn start(command: &str, cwd: &std::path::Path, asked: Asked) -> CommandAudit {
        CommandAudit {
            asked,
            command: command.to_string(),
            cwd: cwd.to_string_lossy().into_owned(),
            started_at: bosun_proto::now_ts(),
            started: Instant::now(),
            stdout_bytes: 0,
            stderr_bytes: 0,
        }
    }

    fn count(&mut self, stream: OutputStream, text: &str) {
        let bytes = text.len() as u64;
        match stream {
            OutputStream::Stdout => self.stdout_bytes += bytes,
            OutputStream::Stderr => self.stderr_bytes += bytes,
        }
    }

    /// The `command:ran` record of the command's end.
    fn end(&mut self, state: Option<ExitState>, ended_by: Option<EndedBy>) -> AgentEvent {
        let (exit_code, ended_by) = match state {
            Some(ExitState::Code(code)) => (Some(code), ended_by),
            Some(ExitState::Signal(signal)) => (None, Some(ended_by.unwrap_or(EndedBy::Signal(signal)))),
            None => (None, ended_by),
        };
        let run = CommandRun {
            command: self.command.clone(),
            cwd: self.cwd.clone(),
            exit_code,
            ended_by,
            started_at: self.started_at.clone(),
            duration_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            stdout_bytes: self.stdout_bytes,
            stderr_bytes: self.stderr_bytes,
            approval: None,
            approval_id: None,
        };
        AgentEvent::CommandRan { run, asked: self.asked.clone() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bosun_isolation::process::testing::group_gone_within;
    use serde_json::json;
    use std::path::Path;

    const WAIT: Duration = Duration::from_secs(5);

    struct Run {
        handle: TurnHandle,
        events: mpsc::UnboundedReceiver<AgentEvent>,
    }

    fn input(text: &str, cwd: &Path, resume: Option<serde_json::Value>) -> TurnInput {
        TurnInput {
            session_id: "s1".into(),
            turn_id: "t1".into(),
            text: text.into(),
            cwd: cwd.to_path_buf(),
            policy: bosun_proto::Policy::PlanOnly,
            resume,
        }
    }

    fn start(driver: &mut DemoDriver, text: &str, cwd: &Path, resume: Option<serde_json::Value>) -> Run {
        let (tx, events) = mpsc::unbounded_channel();
        let handle = driver.start_turn(input(text, cwd, resume), tx).expect("start_turn");
        Run { handle, events }
    }

    impl Run {
        async fn next(&mut self) -> AgentEvent {
            match tokio::time::timeout(WAIT, self.events.recv()).await {
                Ok(Some(event)) => event,
                Ok(None) => panic!("the turn ended without Finished"),
                Err(_) => panic!("no event within {WAIT:?}"),
            }
        }

        /// Events up to and including `Finished`.
        async fn rest(&mut self) -> Vec<AgentEvent> {
            let mut all = Vec::new();
            loop {
                let event = self.next().await;
                let last = matches!(event, AgentEvent::Finished(_));
                all.push(event);
                if last {
                    return all;
                }
            }
        }

        /// Skips to the next approval request and returns its id and checkpoint.
        async fn approval(&mut self) -> (String, serde_json::Value) {
            loop {
                match self.next().await {
                    AgentEvent::ApprovalRequest { request_id, checkpoint, .. } => {
                        return (request_id, checkpoint.expect("checkpoint"))
                    }
                    AgentEvent::Finished(outcome) => panic!("finished ({outcome:?}) without asking"),
                    _ => {}
                }
            }
        }

        /// Skips to the next chunk of `kind` and returns its text and checkpoint.
        async fn chunk_of(&mut self, kind: ChunkKind) -> (String, serde_json::Value) {
            loop {
                match self.next().await {
                    AgentEvent::Chunk { kind: k, text, checkpoint } if k == kind => {
                        return (text, checkpoint.expect("checkpoint"))
                    }
                    AgentEvent::Finished(outcome) => panic!("finished ({outcome:?}) before a {kind} chunk"),
                    _ => {}
                }
            }
        }

        fn decide(&self, request_id: &str, approved: bool) {
            let decision = if approved { Decision::Accept } else { Decision::Decline };
            assert!(self.handle.send(TurnControl::Decision { request_id: request_id.into(), decision }));
        }
    }

    fn chunks(events: &[AgentEvent], kind: ChunkKind) -> Vec<String> {
        events
            .iter()
            .filter_map(|e| match e {
                AgentEvent::Chunk { kind: k, text, .. } if *k == kind => Some(text.clone()),
                _ => None,
            })
            .collect()
    }

    fn checkpoint_at(prompt: &str, step: usize, chunks: u64) -> serde_json::Value {
        json!({ "demo": CHECKPOINT_VERSION, "prompt": fingerprint(prompt), "step": step, "chunks": chunks })
    }

    fn tmp() -> tempfile::TempDir {
        tempfile::tempdir().expect("tempdir")
    }

    #[test]
    fn say_lines_are_the_whole_reply() {
        let steps = script("Plan this:\nSAY: part one\n  SAY:  part two  \nRUN: touch x");
        let said: Vec<String> = steps
            .iter()
            .map(|s| match s {
                Step::Say(t) => t.clone(),
                _ => "other".into(),
            })
            .collect();
        assert_eq!(said, vec!["part one\n", "part two\n"]);
    }

    #[tokio::test]
    async fn plain_prompt_streams_text_then_usage_then_completes() {
        let dir = tmp();
        let mut driver = DemoDriver::new();
        assert_eq!(driver.kind(), "demo");
        assert_eq!(
            driver.capabilities(),
            Capabilities { resume: true, load_session: false, steer: true, interrupt: true, images: false }
        );
        let prompt = "explain the borrow checker please";
        let events = start(&mut driver, prompt, dir.path(), None).rest().await;

        let texts = chunks(&events, ChunkKind::Text);
        assert!(texts.len() >= 3, "{texts:?}");
        let n = events.len();
        assert_eq!(events[n - 1], AgentEvent::Finished(TurnOutcome::Completed));
        assert_eq!(events[n - 2], AgentEvent::Usage(Usage::new(5, texts.len() as u64)));
        assert!(events[..n - 2]
            .iter()
            .all(|e| matches!(e, AgentEvent::Chunk { kind: ChunkKind::Text, checkpoint: Some(_), .. })));
        assert!(texts.concat().contains("explain the borrow checker please"));

        // Deterministic: the next turn on the same prompt says the same thing.
        let again = start(&mut driver, prompt, dir.path(), None).rest().await;
        assert_eq!(again, events);
    }

    #[tokio::test]
    async fn empty_prompt_still_gives_three_chunks() {
        let dir = tmp();
        let events = start(&mut DemoDriver::new(), "", dir.path(), None).rest().await;
        assert!(chunks(&events, ChunkKind::Text).len() >= 3);
        assert_eq!(events.last(), Some(&AgentEvent::Finished(TurnOutcome::Completed)));
    }

    #[tokio::test]
    async fn approved_command_runs_and_its_output_streams() {
        let dir = tmp();
        let mut driver = DemoDriver::new();
        let mut run = start(
            &mut driver,
            "make a file\nRUN: echo hi > made.txt && echo wrote it; echo oops >&2; exit 3\n",
            dir.path(),
            None,
        );
        let request = loop {
            match run.next().await {
                AgentEvent::ApprovalRequest { request_id, action, checkpoint } => {
                    let cwd = dir.path().to_string_lossy().into_owned();
                    assert_eq!(
                        action,
                        Action::Command {
                            command: "echo hi > made.txt && echo wrote it; echo oops >&2; exit 3".into(),
                            cwd
                        }
                    );
                    assert!(checkpoint.is_some());
                    break request_id;
                }
                AgentEvent::Chunk { kind: ChunkKind::Text, .. } => {}
                other => panic!("unexpected {other:?}"),
            }
        };
        assert_eq!(request, "t1-run-1");
        run.decide(&request, true);
        let events = run.rest().await;
        let mut output = chunks(&events, ChunkKind::CommandOutput);
        output.sort();
        assert_eq!(output, ["oops\n", "wrote it\n"]);
        let notices = chunks(&events, ChunkKind::Notice);
        assert_eq!(
            notices.first().map(String::as_str),
            Some("running `echo hi > made.txt && echo wrote it; echo oops >&2; exit 3`")
        );
        assert_eq!(notices.last().map(String::as_str), Some("command finished: exit code 3"));
        assert_eq!(std::fs::read_to_string(dir.path().join("made.txt")).expect("made.txt"), "hi\n");
        assert!(
            matches!(&events[events.len() - 3], AgentEvent::Chunk { kind: ChunkKind::Text, text, .. } if text == "That is all for this turn.\n")
        );
        assert_eq!(events.last(), Some(&AgentEvent::Finished(TurnOutcome::Completed)));
    }

    #[tokio::test]
    async fn declined_command_is_not_run() {
        let dir = tmp();
        let mut run = start(&mut DemoDriver::new(), "RUN: touch made.txt", dir.path(), None);
        let (request, _) = run.approval().await;
        run.decide("someone-else", true); // not ours: must not count
        run.decide(&request, false);
        let events = run.rest().await;
        assert!(events.iter().any(|e| matches!(e, AgentEvent::Log { level: LogLevel::Warn, .. })));
        assert_eq!(chunks(&events, ChunkKind::Notice), ["declined: `touch made.txt` was not run"]);
        assert!(chunks(&events, ChunkKind::CommandOutput).is_empty());
        assert!(!dir.path().join("made.txt").exists());
        assert_eq!(events.last(), Some(&AgentEvent::Finished(TurnOutcome::Completed)));
    }

    #[tokio::test]
    async fn each_run_line_is_asked_in_order() {
        let dir = tmp();
        let mut run =
            start(&mut DemoDriver::new(), "first RUN: echo one\nthen\nRUN:   echo two  \nRUN:\n", dir.path(), None);
        let (first, _) = run.approval().await;
        run.decide(&first, true);
        assert_eq!(run.chunk_of(ChunkKind::CommandOutput).await.0, "one\n");
        let (second, _) = run.approval().await;
        assert_ne!(first, second);
        run.decide(&second, false);
        let events = run.rest().await;
        assert!(!events.iter().any(|e| matches!(e, AgentEvent::ApprovalRequest { .. })), "an empty RUN: asked too");
        assert_eq!(events.last(), Some(&AgentEvent::Finished(TurnOutcome::Completed)));
    }

    #[tokio::test]
    async fn slow_prompt_stops_at_once_on_interrupt() {
        let dir = tmp();
        let mut run = start(&mut DemoDriver::new(), "SLOW please", dir.path(), None);
        assert_eq!(run.chunk_of(ChunkKind::Text).await.0, "Demo agent here. Your ");
        loop {
            if run.chunk_of(ChunkKind::Text).await.0 == "tick 2/600\n" {
                break;
            }
        }
        let asked = Instant::now();
        assert!(run.handle.send(TurnControl::Interrupt));
        let events = run.rest().await;
        assert!(asked.elapsed() < Duration::from_millis(500));
        assert!(chunks(&events, ChunkKind::Text).len() <= 1, "kept talking: {events:?}");
        assert_eq!(events.last(), Some(&AgentEvent::Finished(TurnOutcome::Interrupted)));
    }

    async fn command_pgid(run: &mut Run) -> i32 {
        let (request, _) = run.approval().await;
        run.decide(&request, true);
        let (pid, _) = run.chunk_of(ChunkKind::CommandOutput).await;
        pid.trim().parse().expect("pid")
    }

    #[tokio::test]
    async fn interrupt_kills_a_running_command() {
        let dir = tmp();
        let mut run = start(&mut DemoDriver::new(), "RUN: echo $$; sleep 30; echo never", dir.path(), None);
        let pgid = command_pgid(&mut run).await;
        let asked = Instant::now();
        assert!(run.handle.send(TurnControl::Interrupt));
        let events = run.rest().await;
        assert!(asked.elapsed() < Duration::from_secs(1));
        assert_eq!(events.last(), Some(&AgentEvent::Finished(TurnOutcome::Interrupted)));
        assert!(group_gone_within(pgid, Duration::from_secs(1)).await);
    }

    #[tokio::test]
    async fn dropping_the_handle_kills_the_command_and_frees_the_driver() {
        let dir = tmp();
        let mut driver = DemoDriver::new();
        let mut run = start(&mut driver, "RUN: echo $$; sleep 30", dir.path(), None);
        let pgid = command_pgid(&mut run).await;
        let (tx, _rx) = mpsc::unbounded_channel();
        assert!(matches!(driver.start_turn(input("again", dir.path(), None), tx), Err(AgentError::Busy)));
        drop(run.handle);
        assert!(group_gone_within(pgid, Duration::from_secs(1)).await, "group {pgid} survived");
        // With the handle gone the driver takes a new turn at once; it starts
        // once the aborted task is torn down.
        let events = start(&mut driver, "again", dir.path(), None).rest().await;
        assert_eq!(events.last(), Some(&AgentEvent::Finished(TurnOutcome::Completed)));
    }

    #[tokio::test]
    async fn the_next_turn_may_start_as_soon_as_finished_is_seen() {
        let dir = tmp();
        let mut driver = DemoDriver::new();
        for _ in 0..3 {
            let events = start(&mut driver, "hello there", dir.path(), None).rest().await;
            assert_eq!(events.last(), Some(&AgentEvent::Finished(TurnOutcome::Completed)));
        }
    }

    #[tokio::test]
    async fn resume_mid_slow_continues_with_the_next_tick() {
        let dir = tmp();
        let prompt = "SLOW";
        let mut driver = DemoDriver::new();

        // A checkpoint taken from a real stream...
        let mut run = start(&mut driver, prompt, dir.path(), None);
        let checkpoint = loop {
            let (text, checkpoint) = run.chunk_of(ChunkKind::Text).await;
            if text == "tick 3/600\n" {
                break checkpoint;
            }
        };
        drop(run);
        let mut resumed = start(&mut driver, prompt, dir.path(), Some(checkpoint));
        assert_eq!(resumed.chunk_of(ChunkKind::Text).await.0, "tick 4/600\n");
        drop(resumed);

        // ...and one near the end, to run out the stream quickly.
        let steps = script(prompt);
        let at = steps.iter().position(|s| *s == Step::Tick(595)).expect("tick 595") + 1;
        let events = start(&mut driver, prompt, dir.path(), Some(checkpoint_at(prompt, at, at as u64))).rest().await;
        let texts = chunks(&events, ChunkKind::Text);
        assert_eq!(
            texts,
            [
                "tick 596/600\n",
                "tick 597/600\n",
                "tick 598/600\n",
                "tick 599/600\n",
                "tick 600/600\n",
                "That is all for this turn.\n"
            ]
        );
        // Usage covers the whole turn, not just the resumed part.
        assert!(events.contains(&AgentEvent::Usage(Usage::new(1, steps.len() as u64))));
        assert_eq!(events.last(), Some(&AgentEvent::Finished(TurnOutcome::Completed)));
    }

    #[tokio::test]
    async fn resume_at_a_pending_approval_asks_again_with_the_same_id() {
        let dir = tmp();
        let prompt = "RUN: echo ran >> counter.txt";
        let mut driver = DemoDriver::new();
        let mut run = start(&mut driver, prompt, dir.path(), None);
        let (request, checkpoint) = run.approval().await;
        drop(run);

        let (tx, mut events) = mpsc::unbounded_channel();
        let mut resumed_input = input(prompt, dir.path(), Some(checkpoint));
        resumed_input.turn_id = "t1-after-restart".into(); // the id must come from the checkpoint
        let handle = driver.start_turn(resumed_input, tx).expect("resume");
        let first = tokio::time::timeout(WAIT, events.recv()).await.expect("in time").expect("event");
        assert!(
            matches!(&first, AgentEvent::ApprovalRequest { request_id, .. } if *request_id == request),
            "{first:?}"
        );
        let mut resumed = Run { handle, events };
        resumed.decide(&request, true);
        let rest = resumed.rest().await;
        assert_eq!(rest.last(), Some(&AgentEvent::Finished(TurnOutcome::Completed)));
        assert_eq!(std::fs::read_to_string(dir.path().join("counter.txt")).expect("counter"), "ran\n");
    }

    #[tokio::test]
    async fn resume_after_a_started_command_fails_without_running_it_again() {
        let dir = tmp();
        let prompt = "RUN: echo ran >> counter.txt; echo $$; sleep 30";
        let mut driver = DemoDriver::new();
        let mut run = start(&mut driver, prompt, dir.path(), None);
        let (request, _) = run.approval().await;
        run.decide(&request, true);
        let (_, checkpoint) = run.chunk_of(ChunkKind::CommandOutput).await;
        drop(run); // the "crash"

        let mut checkpoint = Some(checkpoint);
        // Twice: a crash right after the notice must not carry on either.
        for _ in 0..2 {
            let events = start(&mut driver, prompt, dir.path(), checkpoint.take()).rest().await;
            assert_eq!(events.len(), 2, "{events:?}");
            let AgentEvent::Chunk { kind: ChunkKind::Notice, text, checkpoint: notice_checkpoint } = &events[0] else {
                panic!("{events:?}");
            };
            assert!(text.contains("not run again"), "{text}");
            assert_eq!(events[1], AgentEvent::Finished(TurnOutcome::Cut(CUT_COMMAND_FAILURE.into())));
            checkpoint = notice_checkpoint.clone();
        }
        assert_eq!(std::fs::read_to_string(dir.path().join("counter.txt")).expect("counter"), "ran\n");
    }

    #[tokio::test]
    async fn unknown_checkpoints_are_refused() {
        let dir = tmp();
        let mut driver = DemoDriver::new();
        let prompt = "hello";
        let bad = [
            json!({"foo": 1}),
            json!("step 3"),
            checkpoint_at("another prompt", 1, 1),
            checkpoint_at(prompt, 99, 1),
            json!({ "demo": 99, "prompt": fingerprint(prompt), "step": 1, "chunks": 1 }),
            json!({ "demo": 1, "prompt": fingerprint(prompt), "step": 1, "chunks": 1, "run": {"phase": "running"} }),
        ];
        for checkpoint in bad {
            let (tx, _rx) = mpsc::unbounded_channel();
            let result = driver.start_turn(input(prompt, dir.path(), Some(checkpoint.clone())), tx);
            assert!(matches!(result, Err(AgentError::BadCheckpoint(_))), "{checkpoint} was accepted");
        }
        // A refused resume leaves the driver free.
        let events = start(&mut driver, prompt, dir.path(), None).rest().await;
        assert_eq!(events.last(), Some(&AgentEvent::Finished(TurnOutcome::Completed)));
    }

    #[tokio::test]
    async fn steer_is_acknowledged_and_the_turn_goes_on() {
        let dir = tmp();
        let mut run = start(
            &mut DemoDriver::new(),
            "a fairly long prompt so that there are several reply chunks to stream",
            dir.path(),
            None,
        );
        run.chunk_of(ChunkKind::Text).await;
        assert!(run.handle.send(TurnControl::Steer("use tabs".into())));
        let events = run.rest().await;
        assert_eq!(chunks(&events, ChunkKind::Notice), ["steer: use tabs"]);
        let after_steer =
            events.iter().skip_while(|e| !matches!(e, AgentEvent::Chunk { kind: ChunkKind::Notice, .. })).skip(1);
        assert!(after_steer.filter(|e| matches!(e, AgentEvent::Chunk { kind: ChunkKind::Text, .. })).count() >= 1);
        assert_eq!(events.last(), Some(&AgentEvent::Finished(TurnOutcome::Completed)));
    }

    #[tokio::test]
    async fn a_gone_listener_ends_the_turn_quietly() {
        let dir = tmp();
        let mut driver = DemoDriver::new();
        let run = start(&mut driver, "SLOW", dir.path(), None);
        drop(run.events);
        tokio::time::timeout(WAIT, async {
            while !run.handle.is_finished() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the task kept running with nobody listening");
    }
}
