//! One turn's task: a `session/prompt` (or several, when steered), with
//! the agent's updates and requests routed to it, taken through the
//! explicit states of [`Phase`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use agent_client_protocol::v1::schema::{
    CreateTerminalResponse, PermissionOption, PromptResponse, RequestPermissionOutcome, SelectedPermissionOutcome,
    SessionUpdate, StopReason, WriteTextFileResponse,
};
use bosun_proto::{Action, ChunkKind, Decision, Policy, Usage};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::client::{self, Act, TerminalStart};
use crate::connection::{answer_with, ClientCall, PermissionReply};
use crate::mapping;
use crate::TurnSink;
use bosun_driver::{AgentEvent, Asked, LogLevel, TurnControl, TurnOutcome};

use crate::agent::{Inbound, LiveAgent, PromptFuture, Shared, EXIT_GRACE};

/// How long the agent gets to stop after `session/cancel` before the turn
/// is ended anyway.
const STOP_GRACE: Duration = Duration::from_secs(2);
/// How long an interrupted turn waits for `session/close` before it ends
/// anyway (the close goes on behind it). codex-acp answers in a few ms.
const CLOSE_WAIT: Duration = Duration::from_millis(500);

/// Why the turn asked the agent to stop its prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stopping {
    Interrupt,
    Steer,
}

pub(crate) struct PendingPermission {
    reply: PermissionReply,
    options: Vec<PermissionOption>,
}

/// One turn's task.
pub(crate) struct Turn {
    pub(crate) shared: Arc<Shared>,
    pub(crate) id: u64,
    /// The daemon's id of the turn, which approvals are filed under.
    pub(crate) turn_id: String,
    pub(crate) policy: Policy,
    /// Numbers the approvals the daemon asks for its own acts (writes and
    /// terminals the agent wants).
    pub(crate) client_requests: u64,
    /// Those acts waiting on the daemon's decision, by our request id.
    pub(crate) pending_client: HashMap<String, Act>,
    pub(crate) sink: Arc<TurnSink>,
    pub(crate) controls: mpsc::UnboundedReceiver<TurnControl>,
    pub(crate) controls_open: bool,
    pub(crate) text: String,
    pub(crate) agent: Option<Arc<LiveAgent>>,
    /// Permission requests waiting on the daemon, by our request id.
    pub(crate) pending: HashMap<String, PendingPermission>,
    /// A `session/prompt` is under way in the agent.
    pub(crate) prompting: bool,
    /// A permission request of this turn was declined.
    pub(crate) declined: bool,
    /// Sum of the usage the prompt responses of this turn reported.
    pub(crate) exact_usage: Option<Usage>,
    /// The context-window size the agent last reported (`usage_update`).
    pub(crate) exact_usage_context: Option<u64>,
    /// The turn is being interrupted: a steer's prompt not sent yet is not.
    pub(crate) interrupted: Arc<AtomicBool>,
    /// The last thing that counts as the turn being alive besides hearing from
    /// the agent: its start, or the last decision taken.
    pub(crate) activity: Instant,
}

/// Where a prompted turn stands: the states [`Turn::run`] steps through,
/// one wake-up at a time ([`Turn::step`]).
///
/// - Before them, [`Turn::start`]: the agent up, the turn allowed by the
///   policy, its messages routed here → `Prompting`; refused or failed →
///   `Ended`.
/// - `Prompting`: a steer → `Stopping(Steer)`; an interrupt, a `Cancel`
///   decision or the handle gone → `Stopping(Interrupt)`; the prompt returns
///   → `Ended` with its stop reason.
/// - `Stopping(Steer)`: more steers are kept; an interrupt →
///   `Stopping(Interrupt)`; the prompt returns → `Prompting` the steers;
///   overdue → `Ended`, failed.
/// - `Stopping(Interrupt)`: the prompt returns, or is overdue → `Ended`,
///   interrupted.
/// - From any of them: the agent silent too long, or gone → `Ended`.
enum Phase {
    /// The agent works on the prompt (or on the prompt of a steer).
    Prompting(PromptFuture),
    /// `session/cancel` went out, to end the turn (`Interrupt`) or to prompt
    /// again with the steers (`Steer`); the prompt must return by
    /// `deadline`.
    Stopping { prompt: PromptFuture, why: Stopping, deadline: Instant, steers: Vec<String> },
    /// The turn is over: finished by this task, or by whoever saw its end
    /// first (the agent's exit).
    Ended,
}

/// What a turn in [`Phase::Prompting`] or [`Phase::Stopping`] woke up for.
enum Wake {
    AgentExited,
    /// Boxed: an update is large, and most wake-ups are not one.
    Inbound(Box<Inbound>),
    /// A control from the turn's handle; `None` once the handle is gone.
    Control(Option<TurnControl>),
    PromptReturned(Result<PromptResponse, String>),
    /// A stop was asked for and the prompt has not returned in time.
    StopOverdue,
    /// Long enough without a word that the turn may be silent.
    MaybeSilent,
}

impl Turn {
    /// Runs the turn to its end; whoever sees it first (this task, the
    /// agent's exit, a mode change it must not make) finishes it, so this
    /// gives no outcome of its own.
    pub(crate) async fn run(mut self) -> Option<TurnOutcome> {
        let mut exit = self.shared.exit_tx.subscribe();
        let (agent, mut inbound) = self.start().await?;
        self.activity = Instant::now();
        let mut phase = Phase::Prompting(agent.prompt(&self.text));
        self.prompting = true;
        while !matches!(phase, Phase::Ended) {
            phase = self.step(phase, &agent, &mut exit, &mut inbound).await;
        }
        None
    }

    /// Gets the turn to its prompt: the agent started, the turn allowed by
    /// the policy, a closed session loaded again, the agent's messages
    /// routed here, and what controls came early taken. `None` when the
    /// turn ended on the way.
    async fn start(&mut self) -> Option<(Arc<LiveAgent>, mpsc::UnboundedReceiver<Inbound>)> {
        let agent = match self.shared.agent(&self.sink).await {
            Ok(agent) => agent,
            Err(reason) => {
                if let Some(reason) = reason {
                    self.sink.finish(TurnOutcome::Failed(reason));
                }
                return None;
            }
        };
        self.agent = Some(agent.clone());
        let identity = self.shared.identity();
        self.sink.with(|ledger| ledger.agent_is(identity));
        if let Some(reason) = self.shared.refusal(self.policy) {
            self.sink.finish(TurnOutcome::Failed(reason));
            return None;
        }
        // Before the turn takes the agent's messages: what the reload replays
        // is history.
        if let Err(reason) = agent.reopen(&self.shared).await {
            if self.shared.exit_within(EXIT_GRACE).await.is_none() {
                self.sink.finish(TurnOutcome::Failed(reason));
            }
            return None;
        }
        let (inbound_tx, inbound) = mpsc::unbounded_channel();
        {
            let mut state = self.shared.lock();
            match state.turn.as_mut() {
                Some(turn) if turn.id == self.id => turn.inbound = Some(inbound_tx),
                _ => return None,
            }
        }
        if !self.take_early_controls() {
            return None;
        }
        Some((agent, inbound))
    }

    /// Waits for the next thing that concerns the turn and moves it on.
    async fn step(
        &mut self,
        phase: Phase,
        agent: &Arc<LiveAgent>,
        exit: &mut watch::Receiver<Option<String>>,
        inbound: &mut mpsc::UnboundedReceiver<Inbound>,
    ) -> Phase {
        let (mut prompt, stopping) = match phase {
            Phase::Prompting(prompt) => (prompt, None),
            Phase::Stopping { prompt, why, deadline, steers } => (prompt, Some((why, deadline, steers))),
            Phase::Ended => return Phase::Ended,
        };
        let silence = self.shared.spec.silence_timeout();
        let quiet_since = self.shared.last_heard().max(self.activity);
        let stop_deadline = stopping.as_ref().map(|(_, deadline, _)| *deadline);
        let wake = tokio::select! {
            biased;
            _ = exit.changed() => Wake::AgentExited,
            Some(message) = inbound.recv() => Wake::Inbound(Box::new(message)),
            control = self.controls.recv(), if self.controls_open => Wake::Control(control),
            result = &mut prompt => Wake::PromptReturned(result),
            _ = sleep_until(stop_deadline), if stopping.is_some() => Wake::StopOverdue,
            _ = tokio::time::sleep_until(quiet_since + silence), if self.pending.is_empty() => Wake::MaybeSilent,
        };
        match wake {
            // The exit is reported, and the turn failed, by the connection.
            Wake::AgentExited => Phase::Ended,
            Wake::Inbound(message) => {
                self.on_inbound(*message, stopping.is_some());
                resume(prompt, stopping)
            }
            Wake::Control(control) => self.on_control(control, agent, prompt, stopping),
            Wake::PromptReturned(result) => {
                self.prompting = false;
                // Updates sent before the response are already queued: the
                // crate hands them over before it routes the response.
                while let Ok(message) = inbound.try_recv() {
                    self.on_inbound(message, stopping.is_some());
                }
                self.on_prompt_returned(result, agent, stopping.map(|(why, _, steers)| (why, steers))).await
            }
            Wake::StopOverdue => {
                let secs = STOP_GRACE.as_secs();
                match stopping.map(|(why, ..)| why) {
                    Some(Stopping::Steer) => {
                        let why = format!("the agent did not stop within {secs} s to take the steer");
                        self.sink.finish(TurnOutcome::Failed(why));
                    }
                    _ => {
                        let why = format!("the agent did not confirm the interrupt within {secs} s");
                        self.sink.log(LogLevel::Warn, why);
                        self.sink.finish(TurnOutcome::Interrupted);
                    }
                }
                // Closing the session stops the prompt the agent goes on
                // with (it goes on behind the turn's end).
                drop(agent.close_session(&self.shared));
                Phase::Ended
            }
            Wake::MaybeSilent => {
                if self.shared.last_heard().max(self.activity) + silence > Instant::now() {
                    return resume(prompt, stopping);
                }
                let why = format!("the agent said nothing for {} s", silence.as_secs());
                self.sink.finish(TurnOutcome::Failed(why.clone()));
                self.shared.kill_agent(format!("{why} and was killed"));
                Phase::Ended
            }
        }
    }

    /// A control from the handle, while the prompt runs or is being stopped.
    fn on_control(
        &mut self,
        control: Option<TurnControl>,
        agent: &LiveAgent,
        prompt: PromptFuture,
        stopping: Option<(Stopping, Instant, Vec<String>)>,
    ) -> Phase {
        let interrupting = |turn: &mut Turn, prompt| {
            let (why, deadline) = turn.stop(agent, Stopping::Interrupt);
            Phase::Stopping { prompt, why, deadline, steers: Vec::new() }
        };
        match control {
            Some(TurnControl::Decision { request_id, decision }) => {
                self.decide(&request_id, decision);
                if decision == Decision::Cancel {
                    return interrupting(self, prompt);
                }
                resume(prompt, stopping)
            }
            Some(TurnControl::Steer(text)) => match stopping {
                Some((Stopping::Interrupt, ..)) => {
                    self.sink.log(LogLevel::Warn, "steer ignored: the turn is being interrupted");
                    resume(prompt, stopping)
                }
                Some((Stopping::Steer, deadline, mut steers)) => {
                    steers.push(text);
                    Phase::Stopping { prompt, why: Stopping::Steer, deadline, steers }
                }
                None => {
                    let (why, deadline) = self.stop(agent, Stopping::Steer);
                    Phase::Stopping { prompt, why, deadline, steers: vec![text] }
                }
            },
            Some(TurnControl::Interrupt) => match stopping {
                Some((Stopping::Interrupt, ..)) => resume(prompt, stopping),
                _ => interrupting(self, prompt),
            },
            None => {
                // The handle is gone; the task is about to be aborted.
                self.controls_open = false;
                interrupting(self, prompt)
            }
        }
    }

    /// The prompt returned (or failed): the turn ends, or goes on with the
    /// prompt of the steers it was stopped for.
    async fn on_prompt_returned(
        &mut self,
        result: Result<PromptResponse, String>,
        agent: &Arc<LiveAgent>,
        stopping: Option<(Stopping, Vec<String>)>,
    ) -> Phase {
        let response = match result {
            Ok(response) => response,
            Err(error) => {
                if self.shared.exit_within(EXIT_GRACE).await.is_none() {
                    match stopping {
                        Some((Stopping::Interrupt, _)) => self.finish_interrupted(agent).await,
                        _ => {
                            let why = format!("the agent failed the prompt: {error}");
                            self.sink.finish(TurnOutcome::Failed(why));
                        }
                    }
                }
                return Phase::Ended;
            }
        };
        self.add_exact_usage(&response);
        match stopping {
            Some((Stopping::Interrupt, _)) => {
                self.finish_interrupted(agent).await;
                Phase::Ended
            }
            Some((Stopping::Steer, steers)) => {
                for text in &steers {
                    self.notice(format!("steer: {text}"));
                }
                let prompt = self.reprompt(agent, steers.join("\n\n"));
                self.prompting = true;
                self.activity = Instant::now();
                Phase::Prompting(prompt)
            }
            None => {
                let outcome = match response.stop_reason {
                    // Nobody asked to cancel: the agent ended the turn itself,
                    // as codex-acp does when its only reject option ("abort")
                    // is chosen. The turn did what the daemon decided, so it
                    // completed.
                    StopReason::Cancelled if self.declined => {
                        self.notice("the agent ended the turn after a declined action".into());
                        TurnOutcome::Completed
                    }
                    reason => mapping::stop_outcome(reason),
                };
                self.sink.finish(outcome);
                Phase::Ended
            }
        }
    }

    fn notice(&self, text: String) {
        self.sink.emit(AgentEvent::Chunk { kind: ChunkKind::Notice, text, checkpoint: None });
    }

    /// Controls sent while the agent was starting: an interrupt ends the turn
    /// before it is prompted, a steer joins the prompt. False if the turn ended.
    fn take_early_controls(&mut self) -> bool {
        while let Ok(control) = self.controls.try_recv() {
            match control {
                TurnControl::Interrupt => {
                    self.sink.finish(TurnOutcome::Interrupted);
                    return false;
                }
                TurnControl::Steer(text) => {
                    self.notice(format!("steer: {text}"));
                    self.text = format!("{}\n\n{text}", self.text);
                }
                TurnControl::Decision { request_id, .. } => self
                    .sink
                    .log(LogLevel::Warn, format!("a decision for {request_id}, which is not waiting, was ignored")),
            }
        }
        true
    }

    /// Sends `session/cancel` and answers the open permission requests
    /// `cancelled`, as ACP asks of a client that cancels.
    pub(crate) fn stop(&mut self, agent: &LiveAgent, why: Stopping) -> (Stopping, Instant) {
        if why == Stopping::Interrupt {
            self.interrupted.store(true, Ordering::SeqCst);
        }
        agent.cancel();
        for (_, pending) in self.pending.drain() {
            pending.reply.answer(RequestPermissionOutcome::Cancelled);
        }
        for (_, pending) in self.pending_client.drain() {
            pending.refuse("the turn was stopped before the daemon decided");
        }
        (why, Instant::now() + STOP_GRACE)
    }

    /// Ends the turn interrupted once its prompt has stopped, after closing
    /// the session so that nothing the prompt started goes on (a close slower
    /// than [`CLOSE_WAIT`] finishes behind the turn's end).
    async fn finish_interrupted(&mut self, agent: &LiveAgent) {
        match agent.close_session(&self.shared) {
            Some(closing) => {
                let _ = tokio::time::timeout(CLOSE_WAIT, closing).await;
            }
            None if !agent.can_close => self.sink.log(
                LogLevel::Info,
                "the agent cannot close its session: a command the interrupted prompt started may still be running",
            ),
            None => {}
        }
        self.sink.finish(TurnOutcome::Interrupted);
    }

    /// The prompt that takes the steer, after closing the session so that
    /// nothing the stopped prompt started goes on, and loading it again. Not
    /// sent if the turn is interrupted in the meantime.
    fn reprompt(&self, agent: &Arc<LiveAgent>, text: String) -> PromptFuture {
        let closing = agent.close_session(&self.shared);
        let (agent, shared, interrupted) = (agent.clone(), self.shared.clone(), self.interrupted.clone());
        Box::pin(async move {
            if let Some(closing) = closing {
                let _ = closing.await;
            }
            agent.reopen(&shared).await?;
            if interrupted.load(Ordering::SeqCst) {
                return Ok(PromptResponse::new(StopReason::Cancelled));
            }
            agent.prompt(&text).await
        })
    }

    fn on_inbound(&mut self, message: Inbound, stopping: bool) {
        match message {
            Inbound::Update(notification) => self.on_update(notification.update),
            Inbound::Permission(_, reply) if stopping => reply.answer(RequestPermissionOutcome::Cancelled),
            Inbound::Client(call) if stopping => call.refuse(client::refused("the turn is being stopped")),
            Inbound::Client(call) => self.on_client_act(call),
            Inbound::Permission(request, reply) => {
                let request_id = format!("perm-{}", reply.id());
                self.sink.with(|ledger| ledger.asked(&request.tool_call, &request_id));
                let action = mapping::permission_action(&request.tool_call, &self.shared.cwd);
                self.sink.emit(AgentEvent::ApprovalRequest {
                    request_id: request_id.clone(),
                    action,
                    checkpoint: None,
                });
                let replaced = self.pending.insert(request_id, PendingPermission { reply, options: request.options });
                if let Some(old) = replaced {
                    old.reply.answer(RequestPermissionOutcome::Cancelled);
                }
            }
        }
    }

    fn on_update(&mut self, update: SessionUpdate) {
        let event = match update {
            SessionUpdate::AgentMessageChunk(chunk) => mapping::chunk(ChunkKind::Text, &chunk.content),
            SessionUpdate::AgentThoughtChunk(chunk) => mapping::chunk(ChunkKind::Thought, &chunk.content),
            SessionUpdate::ToolCall(call) => {
                self.sink.emit(AgentEvent::ToolCall(mapping::tool_call(&call)));
                let done = self.sink.with(|ledger| ledger.tool_call(&call));
                for event in done {
                    self.sink.emit(event);
                }
                None
            }
            SessionUpdate::ToolCallUpdate(update) => {
                self.sink.emit(AgentEvent::ToolUpdate(mapping::tool_update(&update)));
                let done = self.sink.with(|ledger| ledger.tool_update(&update));
                for event in done {
                    self.sink.emit(event);
                }
                None
            }
            SessionUpdate::Plan(plan) => {
                self.sink.emit(AgentEvent::Plan(mapping::plan_entries(&plan)));
                None
            }
            SessionUpdate::UsageUpdate(usage) => {
                // The size of the context window, not tokens spent by the
                // turn: shown as such, never summed into the turn's counts.
                let mut report = self.exact_usage.unwrap_or_default();
                report.context_tokens = Some(usage.used);
                self.exact_usage_context = Some(usage.used);
                self.sink.emit(AgentEvent::Usage(report));
                None
            }
            other => {
                tracing::debug!(update = ?other, "session/update not mapped");
                None
            }
        };
        if let Some((kind, text)) = event {
            self.sink.emit(AgentEvent::Chunk { kind, text, checkpoint: None });
        }
    }

    fn add_exact_usage(&mut self, response: &PromptResponse) {
        if let Some(usage) = &response.usage {
            let total = self.exact_usage.get_or_insert_with(Usage::default);
            total.add(Usage {
                input_tokens: usage.input_tokens,
                output_tokens: usage.output_tokens,
                context_tokens: None,
            });
            let mut total = *total;
            total.context_tokens = self.exact_usage_context;
            self.sink.emit(AgentEvent::Usage(total));
        }
    }

    fn decide(&mut self, request_id: &str, decision: Decision) {
        self.activity = Instant::now();
        self.sink.with(|ledger| ledger.decided(request_id, decision));
        if let Some(act) = self.pending_client.remove(request_id) {
            if decision.allows() {
                self.carry_out(act, Asked::request(&self.turn_id, request_id));
            } else {
                act.refuse("the daemon declined it");
            }
            return;
        }
        self.declined |= decision == Decision::Decline;
        let Some(pending) = self.pending.remove(request_id) else {
            self.sink.log(LogLevel::Warn, format!("a decision for {request_id}, which is not waiting, was ignored"));
            return;
        };
        match mapping::choose_option(decision, &pending.options) {
            Some(option) => {
                pending.reply.answer(RequestPermissionOutcome::Selected(SelectedPermissionOutcome::new(option)))
            }
            None => {
                if decision != Decision::Cancel {
                    self.sink.log(
                        LogLevel::Warn,
                        format!("the agent offered no option for {decision:?} on {request_id}; answered cancelled"),
                    );
                }
                pending.reply.answer(RequestPermissionOutcome::Cancelled);
            }
        }
    }
}

impl Turn {
    /// The agent asks the daemon to write a file or run a command: refused
    /// outright if it would leave the cwd; carried out at once if an
    /// approval already covers it; else the daemon asks for one.
    fn on_client_act(&mut self, call: ClientCall) {
        let Some(act) = Act::of(call, &self.shared.cwd) else { return };
        let action = act.action(&self.shared.cwd);
        let covered = match &action {
            Action::FileChange { path, .. } => self.sink.with(|ledger| ledger.covering_write(path)),
            Action::Command { command, .. } => self.sink.with(|ledger| ledger.covering_command(command)),
            Action::Other { .. } | Action::Gate { .. } | Action::Terminal { .. } => None,
        };
        if let Some(asked) = covered {
            self.carry_out(act, asked);
            return;
        }
        self.client_requests += 1;
        let request_id = format!("client-{}", self.client_requests);
        self.sink.emit(AgentEvent::ApprovalRequest { request_id: request_id.clone(), action, checkpoint: None });
        self.pending_client.insert(request_id, act);
    }

    /// Does what an approval (`asked`) allowed: the write, or the command.
    fn carry_out(&mut self, act: Act, asked: Asked) {
        self.activity = Instant::now();
        match act {
            Act::Write { request, rel, responder } => {
                let (cwd, sink) = (self.shared.cwd.clone(), self.sink.clone());
                tokio::spawn(async move {
                    let path = cwd.join(&rel).to_string_lossy().into_owned();
                    match client::write_text(&cwd, &rel, &request.content).await {
                        Ok(bytes) => {
                            sink.with(|ledger| ledger.wrote(&path));
                            let summary = format!("written by the daemon for the agent ({bytes} bytes)");
                            sink.emit(AgentEvent::FileChanged { path, summary, asked });
                            answer_with(responder, Ok(WriteTextFileResponse::new()));
                        }
                        Err(error) => answer_with(responder, Err(error)),
                    }
                });
            }
            Act::Terminal { request, command, cwd, responder } => {
                let start = TerminalStart { request: &request, cwd, jail: self.shared.jail.as_ref(), command, asked };
                match self.shared.terminals.start(start, self.sink.clone()) {
                    Ok((id, terminal)) => {
                        self.sink.with(|ledger| ledger.terminal(id.0.as_ref(), terminal));
                        answer_with(responder, Ok(CreateTerminalResponse::new(id)));
                    }
                    Err(error) => answer_with(responder, Err(error)),
                }
            }
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        // Open permission requests are answered `cancelled` as they drop.
        if self.sink.abandon() && self.prompting {
            // The handle was dropped mid-prompt: stop the agent's work too.
            if let Some(agent) = &self.agent {
                agent.cancel();
                drop(agent.close_session(&self.shared));
            }
        }
        let mut state = self.shared.lock();
        if state.turn.as_ref().is_some_and(|turn| turn.id == self.id) {
            state.turn = None;
        }
    }
}

/// The same phase again, after a wake-up that did not move the turn on.
fn resume(prompt: PromptFuture, stopping: Option<(Stopping, Instant, Vec<String>)>) -> Phase {
    match stopping {
        None => Phase::Prompting(prompt),
        Some((why, deadline, steers)) => Phase::Stopping { prompt, why, deadline, steers },
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
