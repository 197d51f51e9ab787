//! A turn: it starts the process and opens the thread when needed, sends
//! `turn/start`, then feeds what the router hands it to the turn's mapping
//! and the mapping's events to the turn's sink, taking steers, interrupts
//! and decisions on the way.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bosun_proto::{Decision, Enforcement, Policy};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::protocol::{
    method, ApprovalDecision, ApprovalResponse, ApprovalsReviewer, AskForApproval, ThreadResponse, ThreadResumeParams,
    ThreadStartParams, TurnInterruptParams, TurnStartParams, TurnStartResponse, TurnSteerParams, TurnSteerResponse,
    UserInput,
};
use crate::rpc::{RpcClient, RpcError};
use bosun_driver::{AgentEvent, DriverNotice, LogLevel, ProviderSpec, TurnControl, TurnInput, TurnOutcome, TurnSink};
use bosun_isolation::Jail;

use crate::mapping::{thread_enforcement, RequestOutcome, TurnMapping};
use crate::process::*;

/// How long an interrupted turn may take to wind down before we end it
/// ourselves.
pub(crate) const INTERRUPT_GRACE: Duration = Duration::from_secs(2);
/// How long a new turn waits for a codex turn we abandoned to finish.
const ABANDONED_TURN_GRACE: Duration = Duration::from_secs(2);

pub(crate) struct TurnJob {
    pub(crate) shared: Arc<Shared>,
    pub(crate) spec: ProviderSpec,
    pub(crate) cwd: PathBuf,
    pub(crate) jail: Option<Jail>,
    pub(crate) input: TurnInput,
    pub(crate) end: Arc<TurnSink>,
    pub(crate) controls: mpsc::UnboundedReceiver<TurnControl>,
    pub(crate) offline_jail: bool,
}

impl TurnJob {
    /// Runs the turn. Once codex has it, the turn is ended by whoever sees
    /// its end first (this task, the router, the monitor), so this returns
    /// an outcome only for a turn that never reached codex.
    pub(crate) async fn drive(mut self) -> Option<TurnOutcome> {
        if let Some(reason) = self.shared.state().dead.clone() {
            return Some(TurnOutcome::Failed(reason));
        }
        let shared = self.shared.clone();
        let mut slot = shared.agent.lock().await;
        let thread_id = match self.prepare(&mut slot).await {
            Ok(thread_id) => thread_id,
            Err(reason) => return Some(TurnOutcome::Failed(reason)),
        };
        if let Some(reason) = self.refusal() {
            return Some(TurnOutcome::Failed(reason));
        }
        let Some(agent) = slot.agent.as_ref() else {
            return Some(TurnOutcome::Failed("the agent is not running".into()));
        };
        let rpc = agent.rpc.clone();
        let generation = agent.generation;
        self.run(rpc, generation, thread_id).await;
        None
    }

    /// Starts the process and opens the thread, as needed.
    async fn prepare(&mut self, slot: &mut AgentSlot) -> Result<String, String> {
        if slot.agent.is_none() {
            slot.agent = Some(launch(&self.shared, &self.spec, &self.cwd, self.jail.as_ref()).await?);
        }
        let Some(agent) = slot.agent.as_mut() else {
            return Err("the agent is not running".into());
        };
        if let Some(thread_id) = &agent.thread_id {
            return Ok(thread_id.clone());
        }
        let cwd = self.cwd.to_string_lossy().into_owned();
        let timeout = self.spec.startup_timeout();
        let resume = slot.binding.as_ref().and_then(|b| b.get("thread_id")).and_then(Value::as_str).map(str::to_string);
        let mut opened = None;
        if let Some(thread_id) = resume {
            let params = ThreadResumeParams {
                thread_id: thread_id.clone(),
                cwd: Some(cwd.clone()),
                approval_policy: Some(AskForApproval::Untrusted),
                approvals_reviewer: Some(ApprovalsReviewer::User),
                exclude_turns: Some(true),
            };
            match self.ask::<_, ThreadResponse>(&agent.rpc, method::THREAD_RESUME, &params, timeout).await? {
                Ok(reply) => opened = Some(reply),
                Err(e) => {
                    let message = format!("could not resume codex thread {thread_id} ({e}); starting a new one");
                    self.shared.log(LogLevel::Warn, message.clone());
                    self.end.log(LogLevel::Warn, message);
                }
            }
        }
        let reply = match opened {
            Some(reply) => reply,
            None => {
                let params = ThreadStartParams {
                    cwd: Some(cwd),
                    approval_policy: Some(AskForApproval::Untrusted),
                    approvals_reviewer: Some(ApprovalsReviewer::User),
                };
                match self.ask::<_, ThreadResponse>(&agent.rpc, method::THREAD_START, &params, timeout).await? {
                    Ok(reply) => reply,
                    Err(e) => return Err(format!("codex could not start a thread: {e}")),
                }
            }
        };
        let report = thread_enforcement(&reply);
        let thread_id = reply.thread.id;
        agent.thread_id = Some(thread_id.clone());
        self.shared.state().cleaner = Some((agent.rpc.clone(), thread_id.clone()));
        slot.binding = None;
        self.shared.notice(DriverNotice::Bound(json!({"thread_id": thread_id})));
        *self.shared.enforcement.lock().unwrap_or_else(|p| p.into_inner()) = Some(report.clone());
        self.shared.notice(DriverNotice::Enforcement(report));
        Ok(thread_id)
    }

    /// Why this turn must not be prompted: a plan-only turn on a thread
    /// that was found not to ask before acting (unless a jail without
    /// network bounds what it can do).
    fn refusal(&self) -> Option<String> {
        let report = self.shared.enforcement.lock().unwrap_or_else(|p| p.into_inner()).clone()?;
        let refused = report.enforcement == Enforcement::Unverified
            && self.input.policy == Policy::PlanOnly
            && !self.offline_jail;
        refused.then(|| bosun_driver::unenforceable(&report.detail))
    }

    /// A start-up request: an unanswered one means codex is stuck, so it is
    /// killed (the outer error); a refusal is the inner error.
    async fn ask<P: serde::Serialize, T: serde::de::DeserializeOwned>(
        &self,
        rpc: &RpcClient,
        method_name: &str,
        params: &P,
        timeout: Duration,
    ) -> Result<Result<T, RpcError>, String> {
        match tokio::time::timeout(timeout, rpc.request::<P, T>(method_name, params)).await {
            Ok(reply) => Ok(reply),
            Err(_) => {
                let reason = format!("codex did not answer `{method_name}` within {} s", timeout.as_secs());
                self.shared.kill(Some(reason.clone()));
                Err(reason)
            }
        }
    }

    async fn run(mut self, rpc: RpcClient, generation: u64, thread_id: String) {
        // Controls that came while the agent was starting.
        let mut early_steers = Vec::new();
        while let Ok(control) = self.controls.try_recv() {
            match control {
                TurnControl::Interrupt => {
                    self.end.finish(TurnOutcome::Interrupted);
                    return;
                }
                TurnControl::Steer(text) => early_steers.push(text),
                TurnControl::Decision { request_id, .. } => {
                    self.end.log(LogLevel::Warn, format!("a decision for unknown request {request_id} was ignored"));
                }
            }
        }
        self.wait_for_abandoned_turn(&rpc, &thread_id).await;

        let (inbox_tx, mut inbox) = mpsc::unbounded_channel();
        let route_id = self.shared.routes.fetch_add(1, Ordering::Relaxed);
        let baseline = {
            let mut state = self.shared.state();
            if state.generation != generation || state.exited {
                drop(state);
                let reason = self.shared.state().dead.clone().unwrap_or_else(|| "the agent process exited".into());
                self.end.finish(TurnOutcome::Failed(reason));
                return;
            }
            state.route = Some(Route { id: route_id, inbox: inbox_tx, end: self.end.clone() });
            state.last_total
        };
        let mut turn = TurnRun {
            shared: self.shared.clone(),
            rpc: rpc.clone(),
            route_id,
            end: self.end.clone(),
            state: TurnMapping::new(thread_id.clone(), self.cwd.to_string_lossy().into_owned(), baseline)
                .for_turn(&self.input.turn_id, self.shared.granted()),
            steers: early_steers,
            interrupt_at: None,
            interrupt_sent: false,
            side: mpsc::unbounded_channel(),
        };

        let params = TurnStartParams { thread_id: thread_id.clone(), input: vec![UserInput::text(&self.input.text)] };
        let start = rpc.request::<_, TurnStartResponse>(method::TURN_START, &params);
        tokio::pin!(start);
        let mut started = false;
        let silence = self.spec.silence_timeout();
        let mut heard_at = Instant::now();
        let mut controls_open = true;
        while !self.end.is_finished() {
            let silence_deadline = turn.state.approvals.is_empty().then_some(heard_at + silence);
            tokio::select! {
                reply = &mut start, if !started => {
                    started = true;
                    heard_at = Instant::now();
                    match reply {
                        Ok(reply) => {
                            turn.state.learn_turn_id(&reply.turn.id);
                            turn.flush();
                        }
                        Err(e) => {
                            self.end.finish(TurnOutcome::Failed(format!("codex did not start the turn: {e}")));
                        }
                    }
                }
                inbound = inbox.recv() => {
                    let Some(inbound) = inbound else {
                        // The route was taken: the process is gone and the
                        // monitor has ended the turn.
                        break;
                    };
                    heard_at = Instant::now();
                    if let Some(outcome) = turn.handle(inbound) {
                        turn.finish(outcome).await;
                    }
                }
                control = self.controls.recv(), if controls_open => match control {
                    Some(control) => {
                        if matches!(control, TurnControl::Decision { .. }) {
                            // Waiting on the daemon did not count as silence.
                            heard_at = Instant::now();
                        }
                        turn.control(control);
                    }
                    None => controls_open = false,
                },
                Some(side) = turn.side.1.recv() => turn.side_result(side),
                _ = sleep_until_some(silence_deadline) => {
                    let reason = format!("codex said nothing for {} s; it was stopped", silence.as_secs());
                    if self.end.finish(TurnOutcome::Failed(reason.clone())) {
                        self.shared.kill(Some(reason));
                    }
                }
                _ = sleep_until_some(turn.interrupt_at) => {
                    self.end.log(LogLevel::Warn, format!(
                        "codex did not end the turn within {} s of the interrupt",
                        INTERRUPT_GRACE.as_secs()
                    ));
                    turn.finish(TurnOutcome::Interrupted).await;
                }
            }
        }
    }

    /// A codex turn we abandoned (its handle was dropped) may still be
    /// winding down; a `turn/start` now would be taken as steering it.
    async fn wait_for_abandoned_turn(&self, rpc: &RpcClient, thread_id: &str) {
        let deadline = Instant::now() + ABANDONED_TURN_GRACE;
        let mut interrupted = false;
        loop {
            let idle = self.shared.turn_idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            let Some(active) = self.shared.state().active_turn.clone() else {
                return;
            };
            if !interrupted {
                interrupted = true;
                let params = TurnInterruptParams { thread_id: thread_id.to_string(), turn_id: active };
                let rpc = rpc.clone();
                tokio::spawn(async move { rpc.request::<_, Value>(method::TURN_INTERRUPT, &params).await });
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                self.shared.log(LogLevel::Warn, "an abandoned codex turn did not end in time".into());
                // Do not wait on it again for every turn to come.
                self.shared.state().active_turn = None;
                return;
            }
        }
    }
}

pub(crate) async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// The outcome of a request sent while the turn goes on.
pub(crate) enum SideResult {
    Steer(Result<TurnSteerResponse, RpcError>),
    Interrupt(Result<Value, RpcError>),
}

/// A turn under way: its I/O around [`TurnMapping`]. Dropping it (the turn
/// ended, or its task was aborted) releases the route and whatever codex
/// still waits on.
pub(crate) struct TurnRun {
    shared: Arc<Shared>,
    rpc: RpcClient,
    route_id: u64,
    end: Arc<TurnSink>,
    state: TurnMapping,
    /// Steering that waits for the turn id.
    steers: Vec<String>,
    interrupt_at: Option<Instant>,
    interrupt_sent: bool,
    side: (mpsc::UnboundedSender<SideResult>, mpsc::UnboundedReceiver<SideResult>),
}

impl TurnRun {
    /// Handles one message; the turn's outcome when codex says it is over.
    fn handle(&mut self, inbound: Inbound) -> Option<TurnOutcome> {
        match inbound {
            Inbound::Notification(notification) => {
                let had_turn_id = self.state.turn_id.is_some();
                let mut outcome = None;
                for event in self.state.on_notification(notification) {
                    match event {
                        AgentEvent::Finished(end) => outcome = Some(end),
                        event => {
                            self.end.emit(event);
                        }
                    }
                }
                if !had_turn_id && self.state.turn_id.is_some() {
                    self.flush();
                }
                return outcome;
            }
            Inbound::Request { id, request } => match self.state.on_request(&id, request) {
                RequestOutcome::Ask(event) => {
                    self.end.emit(event);
                }
                RequestOutcome::Answer(decision) => {
                    let _ = self.rpc.respond(&id, &ApprovalResponse { decision });
                }
                RequestOutcome::Refuse(method) => {
                    refuse(&self.rpc, &id, &method);
                    self.end
                        .log(LogLevel::Warn, format!("codex sent a `{method}` request, which bosun does not serve"));
                }
            },
        }
        None
    }

    /// Ends the turn. An interrupted one first has its commands stopped:
    /// codex leaves them running otherwise.
    async fn finish(&mut self, outcome: TurnOutcome) {
        if outcome == TurnOutcome::Interrupted && !self.end.is_finished() {
            let clean = clean_background_terminals(&self.rpc, &self.state.thread_id);
            if let Err(e) = clean.await {
                self.end.log(LogLevel::Warn, format!("the interrupted turn's commands may still run: {e}"));
            }
        }
        self.end.finish(outcome);
    }

    fn control(&mut self, control: TurnControl) {
        match control {
            TurnControl::Decision { request_id, decision } => match self.state.approvals.remove(&request_id) {
                Some(codex_id) => {
                    if decision == Decision::AcceptForSession {
                        if let Some(granted) = self.state.grant(&request_id) {
                            *self.shared.granted.lock().unwrap_or_else(|p| p.into_inner()) = granted;
                        }
                    }
                    let _ = self.rpc.respond(&codex_id, &ApprovalResponse { decision: decision.into() });
                }
                None => {
                    self.end.log(LogLevel::Warn, format!("a decision for unknown request {request_id} was ignored"));
                }
            },
            TurnControl::Steer(text) => {
                self.steers.push(text);
                self.flush();
            }
            TurnControl::Interrupt => {
                if self.interrupt_at.is_none() {
                    self.interrupt_at = Some(Instant::now() + INTERRUPT_GRACE);
                }
                // Nobody will decide on them now, and codex winds down faster
                // without them.
                for (_, codex_id) in self.state.approvals.drain() {
                    let _ = self.rpc.respond(&codex_id, &ApprovalResponse { decision: ApprovalDecision::Cancel });
                }
                self.flush();
            }
        }
    }

    /// Sends what waited for the turn id: steering and an interrupt.
    fn flush(&mut self) {
        let Some(turn_id) = self.state.turn_id.clone() else {
            return;
        };
        if self.interrupt_at.is_some() && !self.interrupt_sent {
            self.interrupt_sent = true;
            let params = TurnInterruptParams { thread_id: self.state.thread_id.clone(), turn_id: turn_id.clone() };
            let (rpc, side) = (self.rpc.clone(), self.side.0.clone());
            tokio::spawn(async move {
                let reply = rpc.request::<_, Value>(method::TURN_INTERRUPT, &params).await;
                let _ = side.send(SideResult::Interrupt(reply));
            });
        }
        for text in self.steers.drain(..) {
            let params = TurnSteerParams {
                thread_id: self.state.thread_id.clone(),
                expected_turn_id: turn_id.clone(),
                input: vec![UserInput::text(text)],
            };
            let (rpc, side) = (self.rpc.clone(), self.side.0.clone());
            tokio::spawn(async move {
                let reply = rpc.request::<_, TurnSteerResponse>(method::TURN_STEER, &params).await;
                let _ = side.send(SideResult::Steer(reply));
            });
        }
    }

    fn side_result(&mut self, result: SideResult) {
        match result {
            SideResult::Steer(Ok(_)) | SideResult::Interrupt(Ok(_)) => {}
            SideResult::Steer(Err(e)) => self.end.log(LogLevel::Warn, format!("steering was refused: {e}")),
            SideResult::Interrupt(Err(e)) => self.end.log(LogLevel::Warn, format!("the interrupt was refused: {e}")),
        }
    }
}

impl Drop for TurnRun {
    fn drop(&mut self) {
        {
            let mut state = self.shared.state();
            if state.route.as_ref().is_some_and(|route| route.id == self.route_id) {
                state.route = None;
            }
        }
        // Codex must not wait on answers nobody will give any more.
        for (_, codex_id) in self.state.approvals.drain() {
            let _ = self.rpc.respond(&codex_id, &ApprovalResponse { decision: ApprovalDecision::Cancel });
        }
        // Abandoned mid-way (the handle was dropped): stop codex's turn too.
        if !self.end.is_finished() {
            if let (Some(turn_id), Ok(runtime)) = (self.state.turn_id.clone(), tokio::runtime::Handle::try_current()) {
                let params = TurnInterruptParams { thread_id: self.state.thread_id.clone(), turn_id };
                let rpc = self.rpc.clone();
                runtime.spawn(async move {
                    let _ = rpc.request::<_, Value>(method::TURN_INTERRUPT, &params).await;
                    let _ = clean_background_terminals(&rpc, &params.thread_id).await;
                });
            }
        }
    }
}
