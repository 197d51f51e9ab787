//! The built-in `shell` provider: each turn's text is one command, run in the
//! session's own long-lived `sh`.
//!
//! One shell per driver (so per session worker), started at the first turn
//! where the session says: in its container (`"sandbox":"docker"`), in its
//! bubblewrap jail (`"sandbox":"bwrap"`), or on the host in the session's
//! cwd. `cd`, exported variables and functions carry over from one command
//! to the next, as in a terminal. How a command's end is found in the
//! shell's output is in `protocol.rs`.
//!
//! A turn:
//! 1. asks to run the command ([`Action::Command`] with the shell's current
//!    directory); declined: a `notice` says so and the turn completes with
//!    no result and no `command:ran`; cancelled: the turn is interrupted;
//! 2. streams the command's stdout and stderr as `command_output` chunks as
//!    they come;
//! 3. ends with [`AgentEvent::CommandRan`] (the audit record),
//!    [`AgentEvent::Result`] (exit code, stdout and stderr up to
//!    [`RESULT_LIMIT`] each, duration) and the outcome:
//!    - the command exited, whatever its code: `Completed`;
//!    - interrupted: `Interrupted`, `ended_by: "interrupted"`;
//!    - past the provider's `command_timeout_secs`: `Failed("the command
//!      timed out after N s")`, `ended_by: "timed_out"`;
//!    - more than [`STREAM_LIMIT`] of output: `Failed`, `ended_by:
//!      "output_limit"`;
//!    - the shell died under it: `Failed`, `ended_by: "killed"`.
//!
//!    A command ended by the driver has no exit code in its result.
//!
//! Interrupts, timeouts and the output limit end the command and kill every
//! process below the shell (the command's, and background jobs of earlier
//! commands too) but not the shell, which then reports and takes the next
//! command with its state intact: the rest of the command does not run
//! (`sleep 30; rm x` does not get to `rm`), a loop of builtins stops too
//! (how: `protocol.rs`). A shell that does not report within [`KILL_GRACE`]
//! (its command trapped the abort signal) is killed; so is a shell whose
//! command ended it (`exit`). Either way the next turn starts a new shell,
//! back in the last directory where it can, and says in a `notice` that the
//! rest of the old shell's state is gone. Dropping the driver kills the
//! shell and everything below it.
//!
//! Known limits: a command calling a function of its own, when aborted,
//! stops only that function's part at once; the rest is killed process by
//! process as it starts (every 100 ms until the shell reports). What a
//! background job writes between turns shows up as the next command's
//! output. Commands run inside a function the protocol defines
//! (`__bosun_run`), so `$1`… are empty and `set --` does not carry over; the
//! shell's `EXIT` and `USR1` traps belong to the protocol. A process that
//! leaves the shell's tree (`setsid` and its parent exiting) is not killed
//! by an interrupt, only when the session's shell goes.

mod protocol;
mod session;

pub use session::{Collected, Finished, Shell, ShellError, ShellEvent};

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bosun_driver::{
    AgentDriver, AgentError, AgentEvent, Asked, Capabilities, DriverInit, DriverNotice, EnforcementReport, LogLevel,
    NewTurn, ProviderFactory, ProviderSpec, TurnControl, TurnHandle, TurnInput, TurnOutcome, TurnSink, TurnSlot,
};
use bosun_isolation::process::OutputStream;
use bosun_isolation::{Isolation, ShellSpec};
use bosun_proto::{Action, ChunkKind, CommandResult, CommandRun, Decision, EndedBy, Enforcement, Sandbox};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// The `shell` kind: built in, one shell per session, on the host, in its
/// jail or in its container.
#[derive(Debug, Clone, Copy, Default)]
pub struct ShellFactory;

impl ProviderFactory for ShellFactory {
    fn kind(&self) -> &'static str {
        "shell"
    }

    fn runs_program(&self) -> bool {
        false
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities { resume: false, load_session: false, steer: false, interrupt: true, images: false }
    }

    fn enforcement_before_start(&self) -> EnforcementReport {
        EnforcementReport {
            enforcement: Enforcement::Daemon,
            detail: "the daemon runs every command itself, after the session's approval".into(),
            agent: None,
        }
    }

    /// Every place: a container's image needs no agent, only `sh`.
    fn supports(&self, _sandbox: Sandbox) -> bool {
        true
    }

    fn driver(&self, spec: ProviderSpec, init: DriverInit) -> Box<dyn AgentDriver> {
        Box::new(ShellDriver::new(spec, init))
    }
}

/// How much of each of stdout and stderr a result keeps.
pub const RESULT_LIMIT: usize = 1024 * 1024;
/// How much output (stdout and stderr together) a command may write before
/// it is killed.
pub const STREAM_LIMIT: u64 = 16 * 1024 * 1024;
/// How long a shell gets to report after its command was aborted, before
/// the shell itself is killed.
pub const KILL_GRACE: Duration = Duration::from_millis(1500);
/// How often, while an aborted command has not ended, what runs below the
/// shell is killed again (a command may start more processes before the
/// shell gives it up, see `protocol.rs`).
const SWEEP_EVERY: Duration = Duration::from_millis(100);

/// The session's shell between turns. A turn takes the shell out while its
/// command runs, so a turn that is aborted takes the shell down with it.
#[derive(Debug, Default)]
struct ShellSlot {
    shell: Option<Shell>,
    /// The last directory a shell reported, for the next one to go back to.
    cwd: Option<PathBuf>,
    /// Shells started so far.
    starts: u64,
    /// Why the last shell is gone, told when the next one starts.
    lost: Option<String>,
}

/// The `shell` provider's driver.
pub struct ShellDriver {
    spec: ProviderSpec,
    init: DriverInit,
    slot: TurnSlot,
    shell: Arc<Mutex<ShellSlot>>,
}

impl std::fmt::Debug for ShellDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShellDriver")
            .field("provider", &self.spec.name)
            .field("isolation", &self.init.isolation.name())
            .finish()
    }
}

impl ShellDriver {
    pub fn new(spec: ProviderSpec, init: DriverInit) -> ShellDriver {
        ShellDriver { spec, init, slot: TurnSlot::new(), shell: Arc::new(Mutex::new(ShellSlot::default())) }
    }
}

impl AgentDriver for ShellDriver {
    fn kind(&self) -> &'static str {
        "shell"
    }

    fn capabilities(&self) -> Capabilities {
        ShellFactory.capabilities()
    }

    fn start_turn(
        &mut self,
        input: TurnInput,
        events: mpsc::UnboundedSender<AgentEvent>,
    ) -> Result<TurnHandle, AgentError> {
        if input.resume.is_some() {
            return Err(AgentError::BadCheckpoint("the shell provider does not resume turns".into()));
        }
        let slot = self.shell.clone();
        let isolation = self.init.isolation.clone();
        let session_id = self.init.session_id.clone();
        let home = self.init.cwd.clone();
        let network = self.init.network;
        let notices = self.init.notices.clone();
        let command_timeout = self.spec.command_timeout();
        let startup_timeout = self.spec.startup_timeout();
        self.slot.start(events, (), move |NewTurn { sink, controls }| {
            let turn = Turn {
                input,
                sink,
                controls,
                slot,
                isolation,
                session_id,
                home,
                network,
                notices,
                command_timeout,
                startup_timeout,
            };
            turn.drive()
        })
    }
}

/// Nobody listens any more (events receiver or turn handle gone): the turn
/// stops without a word.
struct Quiet;

struct Turn {
    input: TurnInput,
    sink: Arc<TurnSink>,
    controls: mpsc::UnboundedReceiver<TurnControl>,
    slot: Arc<Mutex<ShellSlot>>,
    isolation: Isolation,
    session_id: String,
    /// The session's directory: where shells start.
    home: PathBuf,
    network: bool,
    notices: mpsc::UnboundedSender<DriverNotice>,
    command_timeout: Duration,
    startup_timeout: Duration,
}

/// What happened to the shell during a command.
enum After {
    /// It takes the next command.
    Keep,
    /// It is gone (exited, died, or was killed): the next turn starts anew.
    Lost(String),
}

/// How a command ran.
struct Execution {
    /// `$?` as the shell reported it, when the command ended by itself.
    status: Option<i32>,
    ended_by: Option<EndedBy>,
    after: After,
    stdout: Capture,
    stderr: Capture,
    duration: Duration,
}

/// Output kept for the result, up to [`RESULT_LIMIT`], and counted.
#[derive(Default)]
struct Capture {
    text: String,
    bytes: u64,
    truncated: bool,
}

impl Capture {
    fn push(&mut self, text: &str, bytes: usize) {
        self.bytes += bytes as u64;
        let room = RESULT_LIMIT.saturating_sub(self.text.len());
        if text.len() <= room {
            self.text.push_str(text);
            return;
        }
        let mut cut = room;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        self.text.push_str(&text[..cut]);
        self.truncated = true;
    }
}

/// What a running command's select loop woke up for.
enum Wake {
    Shell(Result<ShellEvent, ShellError>),
    Control(Option<TurnControl>),
    Deadline,
    Sweep,
    GraceOver,
    Unheard,
}

impl Turn {
    /// The turn's outcome, once its shell is back in the slot or gone;
    /// `None` when nobody listens any more.
    async fn drive(mut self) -> Option<TurnOutcome> {
        self.run().await.ok()
    }

    fn lock(&self) -> MutexGuard<'_, ShellSlot> {
        self.slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn run(&mut self) -> Result<TurnOutcome, Quiet> {
        let command = self.input.text.clone();
        if command.contains('\0') {
            return Ok(TurnOutcome::Failed(ShellError::Nul.to_string()));
        }
        let cwd = self.lock().cwd.clone().unwrap_or_else(|| self.home.clone());
        match self.approval(&command, &cwd).await? {
            Approval::Run => {}
            Approval::Declined => {
                self.chunk(ChunkKind::Notice, format!("declined: `{command}` was not run"))?;
                return Ok(TurnOutcome::Completed);
            }
            Approval::Stop(outcome) => return Ok(outcome),
        }
        let mut shell = match self.shell().await? {
            Ok(shell) => shell,
            Err(outcome) => return Ok(outcome),
        };
        // Until the shell is handed back, a turn cut short (its task aborted)
        // leaves this as the reason the next turn starts a new one.
        self.lock().lost = Some("its last command was cut short".into());
        let cwd = shell.cwd().to_path_buf();
        let started_at = bosun_proto::now_ts();
        let execution = self.execute(&mut shell, &command).await?;

        let last_cwd = shell.cwd().to_path_buf();
        let (kept, lost) = match execution.after {
            After::Keep => (Some(shell), None),
            // Dropping it kills it and whatever it still runs.
            After::Lost(reason) => (None, Some(reason)),
        };
        {
            let mut slot = self.lock();
            slot.cwd = Some(last_cwd);
            slot.shell = kept;
            slot.lost = lost;
        }
        let exit_code = if execution.ended_by.is_none() { execution.status } else { None };
        let duration_ms = u64::try_from(execution.duration.as_millis()).unwrap_or(u64::MAX);
        let run = CommandRun {
            command: command.clone(),
            cwd: cwd.to_string_lossy().into_owned(),
            exit_code,
            ended_by: execution.ended_by,
            started_at,
            duration_ms,
            stdout_bytes: execution.stdout.bytes,
            stderr_bytes: execution.stderr.bytes,
            approval: None,
            approval_id: None,
        };
        let asked = Asked::request(&self.input.turn_id, &self.request_id());
        self.send(AgentEvent::CommandRan { run, asked })?;
        let truncated = execution.stdout.truncated || execution.stderr.truncated;
        self.send(AgentEvent::Result(CommandResult {
            exit_code,
            stdout: execution.stdout.text,
            stderr: execution.stderr.text,
            duration_ms,
            truncated,
        }))?;
        Ok(match execution.ended_by {
            None => TurnOutcome::Completed,
            Some(EndedBy::Interrupted) => TurnOutcome::Interrupted,
            Some(EndedBy::TimedOut) => {
                TurnOutcome::Failed(format!("the command timed out after {} s", self.command_timeout.as_secs()))
            }
            Some(EndedBy::OutputLimit) => TurnOutcome::Failed(format!(
                "the command wrote more than {} MiB of output and was killed",
                STREAM_LIMIT / (1024 * 1024)
            )),
            // The shell died under it (or, for the kinds the shell does not
            // produce, ended some other way).
            Some(_) => TurnOutcome::Failed(
                "the shell died while the command ran (killed from outside?); the next command starts a new shell"
                    .into(),
            ),
        })
    }

    /// The id of the approval a turn's one command asks for.
    fn request_id(&self) -> String {
        format!("{}-command", self.input.turn_id)
    }

    async fn approval(&mut self, command: &str, cwd: &Path) -> Result<Approval, Quiet> {
        let request_id = self.request_id();
        let action = Action::Command { command: command.to_string(), cwd: cwd.to_string_lossy().into_owned() };
        self.send(AgentEvent::ApprovalRequest { request_id: request_id.clone(), action, checkpoint: None })?;
        loop {
            match self.next_control().await? {
                TurnControl::Decision { request_id: id, decision } if id == request_id => {
                    return Ok(match decision {
                        Decision::Cancel => Approval::Stop(TurnOutcome::Interrupted),
                        decision if decision.allows() => Approval::Run,
                        _ => Approval::Declined,
                    });
                }
                TurnControl::Interrupt => return Ok(Approval::Stop(TurnOutcome::Interrupted)),
                other => self.ignore(other)?,
            }
        }
    }

    /// The session's shell: the one from the last turn, or a new one.
    async fn shell(&mut self) -> Result<Result<Shell, TurnOutcome>, Quiet> {
        let (existing, restore, first, lost) = {
            let mut slot = self.lock();
            (slot.shell.take(), slot.cwd.clone(), slot.starts == 0, slot.lost.take())
        };
        let why = match existing {
            Some(shell) if shell.is_alive() => return Ok(Ok(shell)),
            Some(_) => "the shell had exited".to_string(),
            None => lost.unwrap_or_else(|| "the last one is gone".into()),
        };
        let (session_id, home, isolation) = (self.session_id.clone(), self.home.clone(), self.isolation.clone());
        let spec = ShellSpec { session_id: &session_id, cwd: &home, network: self.network };
        let start = Shell::start(isolation.shells(), spec, restore.as_deref(), self.startup_timeout);
        tokio::pin!(start);
        let started = loop {
            tokio::select! {
                started = &mut start => break started,
                control = self.controls.recv() => match control {
                    Some(TurnControl::Interrupt) => {
                        self.lock().lost = Some(why);
                        return Ok(Err(TurnOutcome::Interrupted));
                    }
                    Some(other) => self.ignore(other)?,
                    None => return Err(Quiet),
                },
                () = self.sink.closed() => return Err(Quiet),
            }
        };
        let shell = match started {
            Ok(shell) => shell,
            Err(err) => {
                // The next turn tries again, with the same explanation.
                self.lock().lost = Some(why);
                return Ok(Err(TurnOutcome::Failed(format!("could not start the shell: {err}"))));
            }
        };
        self.lock().starts += 1;
        let _ = self.notices.send(DriverNotice::Running {
            pid: Some(shell.leader_pid()),
            agent: Some("sh".into()),
            version: None,
        });
        if !first {
            let place = match restore.as_deref() {
                Some(dir) if dir != shell.cwd() => {
                    format!("; could not go back to {}, now in {}", dir.display(), shell.cwd().display())
                }
                _ => format!("; in {}", shell.cwd().display()),
            };
            self.chunk(
                ChunkKind::Notice,
                format!(
                    "started a new shell ({why}): variables, functions and background jobs of the old one are gone{place}"
                ),
            )?;
        }
        Ok(Ok(shell))
    }

    async fn execute(&mut self, shell: &mut Shell, command: &str) -> Result<Execution, Quiet> {
        let started = Instant::now();
        let mut stdout = Capture::default();
        let mut stderr = Capture::default();
        let mut ended_by: Option<EndedBy> = None;
        let mut grace: Option<Instant> = None;
        let mut sweep: Option<Instant> = None;
        // Whether the processes below the shell could be signalled.
        let mut reachable = true;
        let deadline = started + self.command_timeout;
        let finish = |status, ended_by, after, stdout, stderr| Execution {
            status,
            ended_by,
            after,
            stdout,
            stderr,
            duration: started.elapsed(),
        };
        if let Err(err) = shell.send(command).await {
            let reason = format!("it could not be given the command: {err}");
            return Ok(finish(None, Some(EndedBy::Killed), After::Lost(reason), stdout, stderr));
        }
        loop {
            let wake = tokio::select! {
                event = shell.next() => Wake::Shell(event),
                control = self.controls.recv() => Wake::Control(control),
                () = tokio::time::sleep_until(deadline), if ended_by.is_none() => Wake::Deadline,
                () = sleep_until_some(sweep) => Wake::Sweep,
                () = sleep_until_some(grace) => Wake::GraceOver,
                () = self.sink.closed() => Wake::Unheard,
            };
            let kill = match wake {
                Wake::Shell(Ok(ShellEvent::Output { stream, text, bytes })) => {
                    let capture = match stream {
                        OutputStream::Stdout => &mut stdout,
                        OutputStream::Stderr => &mut stderr,
                    };
                    capture.push(&text, bytes);
                    let over = stdout.bytes + stderr.bytes > STREAM_LIMIT;
                    if ended_by != Some(EndedBy::OutputLimit) && !text.is_empty() && !over {
                        self.chunk(ChunkKind::CommandOutput, text)?;
                    }
                    (over && ended_by.is_none()).then_some(EndedBy::OutputLimit)
                }
                Wake::Shell(Ok(ShellEvent::Finished(end))) => {
                    let after = if end.shell_exited {
                        self.chunk(
                            ChunkKind::Notice,
                            format!("the shell exited (exit code {}); the next command starts a new one", end.status),
                        )?;
                        After::Lost(format!("the old one exited with code {}", end.status))
                    } else {
                        After::Keep
                    };
                    return Ok(finish(Some(end.status), ended_by, after, stdout, stderr));
                }
                Wake::Shell(Err(err)) => {
                    tracing::info!(session_id = %self.session_id, error = %err, "the shell ended during a command");
                    let (ended_by, reason) = match ended_by {
                        // A command that replaced the shell (`exec`) and was
                        // then killed looks the same: it is still ours.
                        Some(ended_by) => (ended_by, "the old one ended with its command".to_string()),
                        None => (EndedBy::Killed, format!("the old one died during a command: {err}")),
                    };
                    return Ok(finish(None, Some(ended_by), After::Lost(reason), stdout, stderr));
                }
                Wake::Control(Some(TurnControl::Interrupt)) => ended_by.is_none().then_some(EndedBy::Interrupted),
                Wake::Control(Some(other)) => {
                    self.ignore(other)?;
                    None
                }
                Wake::Control(None) | Wake::Unheard => return Err(Quiet),
                Wake::Deadline => Some(EndedBy::TimedOut),
                Wake::Sweep => {
                    let killed = shell.kill_descendants().await;
                    if killed > 0 {
                        tracing::info!(session_id = %self.session_id, killed, "killed more processes below the shell");
                    }
                    sweep = Some(Instant::now() + SWEEP_EVERY);
                    None
                }
                Wake::GraceOver => {
                    let notice = if reachable {
                        format!(
                            "the shell did not come back within {} s of its command being stopped (it ignores \
                             SIGUSR1?); it was killed, and the next command starts a new one",
                            KILL_GRACE.as_secs_f64()
                        )
                    } else {
                        "the command's processes cannot be reached from here, so the shell was killed with them; \
                         the next command starts a new one"
                            .to_string()
                    };
                    self.chunk(ChunkKind::Notice, notice)?;
                    let reason = "the old one did not come back after its command was stopped".to_string();
                    return Ok(finish(None, ended_by, After::Lost(reason), stdout, stderr));
                }
            };
            if let Some(why) = kill {
                ended_by = Some(why);
                let now = Instant::now();
                match shell.abort_command().await {
                    Some(killed) => {
                        tracing::info!(session_id = %self.session_id, why = %why, killed, "stopped the command");
                        grace = Some(now + KILL_GRACE);
                    }
                    // Nothing below the shell can be reached: the shell goes.
                    None => {
                        reachable = false;
                        grace = Some(now);
                    }
                }
                sweep = Some(now + SWEEP_EVERY);
                if why == EndedBy::OutputLimit {
                    self.chunk(
                        ChunkKind::Notice,
                        format!("output passed {} MiB: the command was killed", STREAM_LIMIT / (1024 * 1024)),
                    )?;
                }
            }
        }
    }

    async fn next_control(&mut self) -> Result<TurnControl, Quiet> {
        tokio::select! {
            control = self.controls.recv() => control.ok_or(Quiet),
            () = self.sink.closed() => Err(Quiet),
        }
    }

    /// Controls that do not apply where they arrive.
    fn ignore(&mut self, control: TurnControl) -> Result<(), Quiet> {
        let message = match control {
            TurnControl::Decision { request_id, .. } => {
                format!("ignoring a decision for {request_id}: no such request is pending")
            }
            TurnControl::Steer(_) => "the shell provider cannot be steered; ignoring the steer".to_string(),
            // Handled by the callers that can act on it.
            TurnControl::Interrupt => return Ok(()),
        };
        self.send(AgentEvent::Log { level: LogLevel::Warn, message })
    }

    fn chunk(&self, kind: ChunkKind, text: String) -> Result<(), Quiet> {
        self.send(AgentEvent::Chunk { kind, text, checkpoint: None })
    }

    fn send(&self, event: AgentEvent) -> Result<(), Quiet> {
        self.sink.emit(event).then_some(()).ok_or(Quiet)
    }
}

enum Approval {
    Run,
    Declined,
    Stop(TurnOutcome),
}

async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
