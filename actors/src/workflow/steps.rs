//! How a run moves its steps on: start what is ready, look at what runs,
//! and the decisions a person takes on a run.

use super::{RunMsg, RunState};
use crate::context::{cost_of, derived_id};
use crate::error::{DaemonError, DaemonResult};
use crate::files::{FileChange, FileChanged, FilesError, MergeOutcome};
use crate::names;
use crate::session::SessionMsg;
use crate::sessions::SessionsMsg;
use bosun_proto::{
    ApprovalStatus, ApprovalView, BudgetView, CreateSessionRequest, DecidedBy, Decision, EventData, MergeConflict,
    MergeView, MergedBranch, PauseReason, RunPause, RunState as Run, RunView, StepDecision, StepKind as Kind,
    StepState, TurnStatus, Usage, WorkflowEventKind, WorkspaceRequest,
};
use bosun_state::{GateRecord, SessionRecord, StepRecord, TurnProgress, TurnRecord};
use bosun_workflow::{OnConflict, OnInterrupt, StepKind, StepOutputs, TemplateContext, WorkspaceSpec};
use ractor::{ActorProcessingErr, ActorRef};
use std::time::{Duration, Instant};

/// How often a step cut by crashes is retried by itself (`on_interrupt =
/// "retry"`) before the run pauses for a person after all.
const MAX_AUTOMATIC_RETRIES: u32 = 3;
/// The most of a step's diff kept in its record (and offered to templates).
const MAX_DIFF_BYTES: usize = 256 * 1024;
/// How long making a step's session may take (a clone of its repository).
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(330);

impl RunState {
    /// Moves every step on from what the store says, then ends the run if
    /// nothing is left to do. Safe to call at any time, as often as wanted.
    pub(super) async fn advance(&mut self, myself: &ActorRef<RunMsg>) -> Result<(), ActorProcessingErr> {
        if self.record.state.is_final() {
            myself.stop(None);
            return Ok(());
        }
        for i in 0..self.record.steps.len() {
            if self.record.steps[i].state == StepState::Running {
                self.poll(i, myself).await?;
            }
            if self.record.state.is_final() {
                myself.stop(None);
                return Ok(());
            }
        }
        if self.record.state == Run::Running {
            self.start_ready(myself).await?;
        }
        if self.record.steps.iter().all(|s| s.state.is_final()) && !self.record.state.is_final() {
            let failed = self.record.steps.iter().any(|s| s.state == StepState::Failed);
            if !failed {
                self.finish(Run::Completed, None).await?;
            }
        }
        if self.record.state.is_final() {
            myself.stop(None);
        }
        Ok(())
    }

    /// Starts every pending step whose needs are met, while the budget lasts.
    async fn start_ready(&mut self, myself: &ActorRef<RunMsg>) -> Result<(), ActorProcessingErr> {
        let mut i = 0;
        while i < self.record.steps.len() {
            if self.record.state != Run::Running {
                return Ok(());
            }
            let step = &self.record.steps[i];
            if step.state != StepState::Pending || !self.needs_met(&step.step_id) {
                i += 1;
                continue;
            }
            if self.over_budget() {
                self.pause(PauseReason::Budget, "the run reached its budget; raise it to go on".into(), None).await?;
                return Ok(());
            }
            if step.fan_out && step.index.is_none() {
                // The items replace the placeholder; start them in this pass.
                self.expand(i).await?;
                continue;
            }
            self.start_step(i, myself).await?;
            i += 1;
        }
        Ok(())
    }

    fn needs_met(&self, step_id: &str) -> bool {
        self.workflow.graph.needs(step_id).iter().all(|need| {
            let mut of_need = self.record.steps.iter().filter(|s| &s.step_id == need).peekable();
            of_need.peek().is_some()
                && of_need.all(|s| {
                    s.state.lets_downstream_go() && !(s.fan_out && s.index.is_none() && s.state == StepState::Pending)
                })
        })
    }

    /// The values templates see: the inputs, and each finished step's outputs.
    fn template_context(&self, item: Option<(&str, u64)>) -> TemplateContext {
        let mut ctx = TemplateContext { inputs: self.record.inputs.clone(), ..TemplateContext::default() };
        for def in &self.workflow.steps {
            let records: Vec<&StepRecord> = self.record.steps.iter().filter(|s| s.step_id == def.id).collect();
            if records.is_empty() || !records.iter().all(|s| s.state.lets_downstream_go()) {
                continue;
            }
            let of =
                |s: &StepRecord| StepOutputs::of(s.output.as_deref().unwrap_or(""), s.diff.as_deref().unwrap_or(""));
            let outputs = if def.for_each.is_some() {
                StepOutputs::joined(records.iter().filter(|s| s.index.is_some()).map(|s| of(s)).collect())
            } else {
                of(records[0])
            };
            ctx.steps.insert(def.id.clone(), outputs);
        }
        if let Some((item, index)) = item {
            ctx.item = Some(item.to_string());
            ctx.index = Some(index);
        }
        ctx
    }

    /// A fan-out's placeholder becomes one step per item.
    async fn expand(&mut self, i: usize) -> Result<(), ActorProcessingErr> {
        let step_id = self.record.steps[i].step_id.clone();
        let Some(expr) = self.workflow.step(&step_id).and_then(|s| s.for_each.clone()) else { return Ok(()) };
        let items = match self.templates.items(&expr, &self.template_context(None)) {
            Ok(items) => items,
            Err(e) => return Ok(self.step_failed(i, format!("for_each: {e}"), false).await?),
        };
        let placeholder = self.record.steps.remove(i);
        let count = items.len();
        if items.is_empty() {
            let mut done = placeholder;
            done.state = StepState::Completed;
            done.output = Some(String::new());
            done.ended_at = Some(bosun_proto::now_ts());
            let event = self.step_event(&done);
            self.record.steps.insert(i, done);
            let note = self.note(
                WorkflowEventKind::Progress,
                Some(&step_id),
                None,
                format!("{step_id}: for_each gave no items"),
            );
            self.save(vec![event, note], &[]).await?;
            return Ok(());
        }
        for (k, item) in items.into_iter().enumerate() {
            let mut one = StepRecord::new(&step_id, placeholder.kind, true);
            one.index = Some(k as u64);
            one.item = Some(item);
            self.record.steps.insert(i + k, one);
        }
        let mut events: Vec<EventData> = self.record.steps[i..i + count].iter().map(|s| self.step_event(s)).collect();
        events.push(self.note(WorkflowEventKind::Progress, Some(&step_id), None, format!("{step_id}: {count} items")));
        self.save(events, &[]).await?;
        Ok(())
    }

    async fn start_step(&mut self, i: usize, myself: &ActorRef<RunMsg>) -> Result<(), ActorProcessingErr> {
        let record = self.record.steps[i].clone();
        let Some(def) = self.workflow.step(&record.step_id).cloned() else {
            return Ok(self.step_failed(i, "the step is not in the definition".into(), false).await?);
        };
        let ctx = self.template_context(record.item.as_deref().zip(record.index));
        let now = bosun_proto::now_ts();
        match &def.kind {
            StepKind::Agent(_) | StepKind::Shell(_) => {
                // The same request a relaunch after a crash renders again.
                let (req, text) = match self.session_request(i) {
                    Ok(start) => start,
                    Err(why) => return Ok(self.step_failed(i, why, false).await?),
                };
                let session_id = self.session_id_for(&record);
                let step = &mut self.record.steps[i];
                step.state = StepState::Running;
                step.session_id = Some(session_id.clone());
                step.attempts = step.attempts.max(1);
                step.turn_number = 1;
                step.started_at = Some(now.clone());
                step.attempt_started_at = Some(now);
                let event = self.step_event(&self.record.steps[i]);
                self.save(vec![event], &[]).await?;
                self.watched.lock().unwrap_or_else(|p| p.into_inner()).insert(session_id.clone());
                self.launch(i, myself, Some((req, text)));
            }
            StepKind::Gate { message } => {
                let message = match self.templates.render(message, &ctx) {
                    Ok(m) => m,
                    Err(e) => return Ok(self.step_failed(i, format!("template: {e}"), false).await?),
                };
                let gate = self.new_gate(&record, message);
                let step = &mut self.record.steps[i];
                step.state = StepState::Running;
                step.attempts = 1;
                step.started_at = Some(now.clone());
                step.attempt_started_at = Some(now);
                step.approval_id = Some(gate.id.clone());
                let events = vec![self.step_event(&self.record.steps[i]), gate_requested(&gate)];
                self.save(events, &[gate]).await?;
            }
            StepKind::Merge(_) => {
                let step = &mut self.record.steps[i];
                step.state = StepState::Running;
                step.attempts = 1;
                step.started_at = Some(now.clone());
                step.attempt_started_at = Some(now);
                let event = self.step_event(&self.record.steps[i]);
                self.save(vec![event], &[]).await?;
                self.merge(i, myself).await?;
            }
        }
        Ok(())
    }

    /// The session of a step, the same for every attempt and after every
    /// crash: derived from the run and the step's label.
    fn session_id_for(&self, step: &StepRecord) -> String {
        let hash = derived_id("", &[&self.record.id, &step.label()]);
        format!("s_{}", &hash[..12])
    }

    /// A worktree branched from an earlier step's branch.
    fn branch_of(&self, from: &str) -> Result<WorkspaceRequest, String> {
        let mut of = self.record.steps.iter().filter(|s| s.step_id == from);
        let (Some(step), None) = (of.next(), of.next()) else {
            return Err(format!("workspace.from names {from:?}, a fan-out: branch from one step"));
        };
        let session = step
            .session_id
            .as_deref()
            .and_then(|id| self.ctx.store.get::<SessionRecord>(id).ok().flatten())
            .ok_or_else(|| format!("step {from:?} has no session to branch from"))?;
        let ws = session.workspace.ok_or_else(|| format!("step {from:?} has no workspace to branch from"))?;
        Ok(WorkspaceRequest { repo: ws.repo, branch: bosun_workspace::session_branch(&session.id) })
    }

    /// Makes the step's session (if it is not there) and starts its turn (if
    /// the session has not started it), on a task: a clone may take long.
    fn launch(&mut self, i: usize, myself: &ActorRef<RunMsg>, start: Option<(CreateSessionRequest, String)>) {
        let step = &self.record.steps[i];
        let label = step.label();
        if self.launching.contains(&label) {
            return;
        }
        let Some(session_id) = step.session_id.clone() else { return };
        let (req, text) = match start {
            Some(start) => start,
            // After a restart: make the request again from the definition.
            None => match self.session_request(i) {
                Ok(start) => start,
                Err(why) => {
                    let _ = myself.send_message(RunMsg::Launched { label, result: Err(why) });
                    return;
                }
            },
        };
        let number = step.turn_number;
        self.launching.insert(label.clone());
        let ctx = self.ctx.clone();
        let run = myself.clone();
        tokio::spawn(async move {
            let result = launch(&ctx, &session_id, req, text, number).await;
            let _ = run.send_message(RunMsg::Launched { label, result });
        });
    }

    /// The session request and turn text of step `i`, rendered again.
    fn session_request(&self, i: usize) -> Result<(CreateSessionRequest, String), String> {
        let record = &self.record.steps[i];
        let def = self.workflow.step(&record.step_id).ok_or("the step is not in the definition")?;
        let spec = def.session().ok_or("not a session step")?;
        let mut ctx = self.template_context(record.item.as_deref().zip(record.index));
        ctx.conflict = record.conflict.clone();
        let text = self.templates.render(&spec.text, &ctx).map_err(|e| format!("template: {e}"))?;
        if text.trim().is_empty() {
            return Err("its prompt renders empty".into());
        }
        let workspace = match &spec.workspace {
            None => None,
            Some(WorkspaceSpec::Repo { repo, branch }) => Some(WorkspaceRequest {
                repo: self.templates.render(repo, &ctx).map_err(|e| format!("workspace template: {e}"))?,
                branch: self.templates.render(branch, &ctx).map_err(|e| format!("workspace template: {e}"))?,
            }),
            Some(WorkspaceSpec::From(from)) => Some(self.branch_of(from)?),
        };
        let req = CreateSessionRequest {
            provider: spec.provider.clone(),
            title: Some(format!("{} · {}", self.record.name, record.label())),
            policy: Some(spec.policy),
            workspace,
            ..CreateSessionRequest::default()
        };
        Ok((req, text))
    }

    /// Looks at a running step and moves it on if its turn, gate or merge has.
    async fn poll(&mut self, i: usize, myself: &ActorRef<RunMsg>) -> Result<(), ActorProcessingErr> {
        match self.record.steps[i].kind {
            Kind::Agent | Kind::Shell => self.poll_session_step(i, myself).await,
            // Decided through `decide_gate`; nothing to look at.
            Kind::Gate => Ok(()),
            Kind::Merge => {
                if self.record.steps[i].approval_id.is_none() {
                    self.merge(i, myself).await?;
                }
                Ok(())
            }
        }
    }

    async fn poll_session_step(&mut self, i: usize, myself: &ActorRef<RunMsg>) -> Result<(), ActorProcessingErr> {
        let step = self.record.steps[i].clone();
        let label = step.label();
        if self.launching.contains(&label) {
            return Ok(());
        }
        let Some(session_id) = step.session_id.clone() else { return Ok(()) };
        let session = self.ctx.store.get::<SessionRecord>(&session_id)?;
        if session.is_none() && !step.turn_ids.is_empty() {
            // Deleted under the run: made again, it would run the step twice.
            return Ok(self.step_failed(i, "its session was deleted".into(), false).await?);
        }
        let Some(session) = session.filter(|s| s.turn_count >= step.turn_number) else {
            // Not made, or its turn not started: (again) after a crash.
            if self.is_resolver(&step.step_id) {
                if let Err(why) = self.start_resolver_merge(i).await {
                    return Ok(self.step_failed(i, why, false).await?);
                }
            }
            self.launch(i, myself, None);
            return Ok(());
        };
        let Some(turn) = self.ctx.store.get::<TurnRecord>(&TurnRecord::key_for(&session_id, step.turn_number))? else {
            return Ok(());
        };
        if !self.record.steps[i].turn_ids.contains(&turn.id) {
            self.record.steps[i].turn_ids.push(turn.id.clone());
            let event = self.step_event(&self.record.steps[i]);
            self.save(vec![event], &[]).await?;
        }
        if !turn.status.is_final() {
            return self.watch_running(i, &turn).await;
        }
        // The session must have taken the turn's end too before its
        // worktree can be committed.
        if session.active_turn.as_deref() == Some(turn.id.as_str()) {
            return Ok(());
        }
        self.progress.remove(&label);
        let failed_command = step.kind == Kind::Shell && turn.result.as_ref().is_some_and(|r| r.exit_code != Some(0));
        match turn.status {
            TurnStatus::Completed if !failed_command => self.session_step_done(i, &session, &turn).await?,
            TurnStatus::Completed => {
                let code = turn.result.as_ref().and_then(|r| r.exit_code).map_or("none".to_string(), |c| c.to_string());
                self.attempt_ended(i, &session, &turn);
                self.step_failed(i, format!("the command exited with code {code}"), true).await?;
            }
            TurnStatus::Failed if turn.cut => {
                self.attempt_ended(i, &session, &turn);
                let why = turn.reason.clone().unwrap_or_else(|| "cut by a crash".into());
                self.step_interrupted(i, why).await?;
            }
            TurnStatus::Interrupted if step.timed_out => {
                self.attempt_ended(i, &session, &turn);
                let limit = self.workflow.step(&step.step_id).and_then(|d| d.timeout).unwrap_or_default();
                self.step_failed(i, format!("timed out after {}", humantime_short(limit)), true).await?;
            }
            TurnStatus::Interrupted => {
                self.attempt_ended(i, &session, &turn);
                let why = turn.reason.clone().unwrap_or_else(|| "its turn was interrupted".into());
                self.step_interrupted(i, why).await?;
            }
            _ => {
                self.attempt_ended(i, &session, &turn);
                let why = turn.reason.clone().unwrap_or_else(|| format!("its turn ended {}", turn.status));
                self.step_failed(i, why, true).await?;
            }
        }
        Ok(())
    }

    /// A running turn: interrupted past its timeout; a stall reported once.
    async fn watch_running(&mut self, i: usize, turn: &TurnRecord) -> Result<(), ActorProcessingErr> {
        let step = self.record.steps[i].clone();
        let Some(def) = self.workflow.step(&step.step_id) else { return Ok(()) };
        let (timeout, stall) = (def.timeout, def.stall);
        if let (Some(limit), false) = (timeout, step.timed_out) {
            if since(step.attempt_started_at.as_deref()).is_some_and(|d| d >= limit) {
                self.record.steps[i].timed_out = true;
                let note = self.note(
                    WorkflowEventKind::Progress,
                    Some(&step.step_id),
                    step.index,
                    format!("{}: timed out after {}; interrupting its turn", step.label(), humantime_short(limit)),
                );
                self.save(vec![note], &[]).await?;
                if let Some(session_id) = &step.session_id {
                    let turn_id = turn.id.clone();
                    let r = crate::route::call::<SessionMsg, _, _>(&names::session(session_id), |r| {
                        SessionMsg::Interrupt(turn_id, r)
                    })
                    .await;
                    if let Err(e) | Ok(Err(e)) = r.map(|r| r.map(|_| ())) {
                        tracing::warn!(run_id = %self.record.id, step = %step.label(), error = %e, "could not interrupt a timed-out step");
                    }
                }
            }
        }
        let Some(stall) = stall else { return Ok(()) };
        let chunks = self
            .ctx
            .store
            .get::<TurnProgress>(&TurnRecord::key_for(&turn.session_id, turn.number))?
            .map_or(0, |p| p.chunks);
        let label = step.label();
        let now = Instant::now();
        let (seen, moved_at) = *self.progress.entry(label.clone()).or_insert((chunks, now));
        if chunks != seen {
            self.progress.insert(label, (chunks, now));
            if step.stalled {
                self.record.steps[i].stalled = false;
                let event = self.step_event(&self.record.steps[i]);
                self.save(vec![event], &[]).await?;
            }
        } else if !step.stalled && now.duration_since(moved_at) >= stall {
            self.record.steps[i].stalled = true;
            let note = self.note(
                WorkflowEventKind::Stalled,
                Some(&step.step_id),
                step.index,
                format!("{}: no output for {}", label, humantime_short(stall)),
            );
            let event = self.step_event(&self.record.steps[i]);
            self.save(vec![event, note], &[]).await?;
        }
        Ok(())
    }

    /// Counts what an attempt's turn spent, on the step and on the run.
    fn attempt_ended(&mut self, i: usize, session: &SessionRecord, turn: &TurnRecord) {
        let cost = cost_of(&self.ctx.settings.prices, &session.provider, turn.usage);
        let step = &mut self.record.steps[i];
        step.usage.add(turn.usage);
        step.cost += cost;
        self.record.usage.add(turn.usage);
        self.record.cost += cost;
    }

    async fn session_step_done(
        &mut self,
        i: usize,
        session: &SessionRecord,
        turn: &TurnRecord,
    ) -> Result<(), ActorProcessingErr> {
        let step = self.record.steps[i].clone();
        let output = match step.kind {
            Kind::Shell => turn.result.as_ref().map(|r| r.stdout.clone()).unwrap_or_default(),
            _ => self.reply_text(&session.id, &turn.id)?,
        };
        let mut diff = None;
        if let Some(ws) = &session.workspace {
            // Committed, so the steps branching from this one start from its work.
            let message = format!("{} ({}): {}", self.record.name, self.record.id, step.label());
            let r = crate::route::call::<SessionMsg, _, _>(&names::session(&session.id), |r| {
                SessionMsg::Files(FileChange::Snapshot { message }, r)
            })
            .await;
            match r {
                Ok(Ok(FileChanged::Snapshot { .. })) => {}
                // The session is still taking the turn's end: next tick.
                Ok(Err(FilesError::Daemon(DaemonError::Busy { .. }))) | Err(DaemonError::Unavailable(_)) => {
                    return Ok(())
                }
                Ok(Ok(other)) => tracing::warn!(?other, "unexpected answer to a snapshot"),
                Ok(Err(e)) => return Ok(self.step_failed(i, format!("committing its worktree: {e}"), false).await?),
                Err(e) => return Ok(self.step_failed(i, format!("committing its worktree: {e}"), false).await?),
            }
            match bosun_workspace::diff(std::path::Path::new(&ws.worktree), &ws.base).await {
                Ok(mut d) => {
                    if d.len() > MAX_DIFF_BYTES {
                        let mut cut = MAX_DIFF_BYTES;
                        while !d.is_char_boundary(cut) {
                            cut -= 1;
                        }
                        d.truncate(cut);
                        d.push_str("\n… (diff cut)\n");
                    }
                    diff = Some(d);
                }
                Err(e) => {
                    tracing::warn!(run_id = %self.record.id, step = %step.label(), error = %e, "no diff for a step")
                }
            }
        }
        self.attempt_ended(i, session, turn);
        let s = &mut self.record.steps[i];
        s.state = StepState::Completed;
        s.output = Some(output);
        s.diff = diff;
        s.error = None;
        s.stalled = false;
        s.ended_at = Some(bosun_proto::now_ts());
        let events = vec![self.step_event(&self.record.steps[i]), self.budget_note()];
        self.save(events, &[]).await?;
        tracing::info!(run_id = %self.record.id, step = %step.label(), "workflow step completed");
        Ok(())
    }

    /// The text the agent replied in a turn: its `text` chunks, in order.
    fn reply_text(&self, session_id: &str, turn_id: &str) -> DaemonResult<String> {
        let topic = bosun_proto::Topic::session(session_id);
        let mut text = String::new();
        let mut since = 0;
        loop {
            let page = self.ctx.store.events_since(since, Some(&topic), 1000)?;
            let Some(last) = page.last() else { break };
            since = last.seq;
            for env in &page {
                if let Ok(EventData::StreamChunk(c)) = env.payload() {
                    if c.turn_id == turn_id && c.kind == bosun_proto::ChunkKind::Text {
                        text.push_str(&c.text);
                    }
                }
            }
        }
        Ok(text)
    }

    /// A step failed: retried while it has retries left (`count` says
    /// whether this failure may be retried at all), else the run pauses for
    /// a person to retry, skip or abort it.
    pub(super) async fn step_failed(&mut self, i: usize, why: String, count: bool) -> DaemonResult<()> {
        let step = self.record.steps[i].clone();
        let retries = self.workflow.step(&step.step_id).map_or(0, |d| d.retries);
        if count && step.attempts <= retries && step.kind != Kind::Gate {
            let note = self.note(
                WorkflowEventKind::Progress,
                Some(&step.step_id),
                step.index,
                format!("{}: attempt {} failed ({why}); retrying", step.label(), step.attempts),
            );
            self.retry(i)?;
            let event = self.step_event(&self.record.steps[i]);
            return self.save(vec![note, event], &[]).await;
        }
        let s = &mut self.record.steps[i];
        s.state = StepState::Failed;
        s.error = Some(why.clone());
        s.ended_at = Some(bosun_proto::now_ts());
        let label = s.label();
        tracing::warn!(run_id = %self.record.id, step = %label, error = %why, "workflow step failed");
        let error = EventData::WorkflowError(bosun_proto::WorkflowError {
            run_id: self.record.id.clone().into(),
            step_id: Some(step.step_id.clone()),
            index: step.index,
            message: format!("{label}: {why}"),
        });
        let events = vec![self.step_event(&self.record.steps[i]), error];
        self.save(events, &[]).await?;
        self.pause(PauseReason::Failed, format!("step {label} failed: {why}; decide retry, skip or abort"), Some(i))
            .await
    }

    async fn step_interrupted(&mut self, i: usize, why: String) -> DaemonResult<()> {
        let step = self.record.steps[i].clone();
        let auto = self.workflow.step(&step.step_id).is_some_and(|d| d.on_interrupt == OnInterrupt::Retry);
        if auto && step.attempts <= MAX_AUTOMATIC_RETRIES {
            let note = self.note(
                WorkflowEventKind::Progress,
                Some(&step.step_id),
                step.index,
                format!("{}: interrupted ({why}); retrying, as on_interrupt says", step.label()),
            );
            self.retry(i)?;
            let event = self.step_event(&self.record.steps[i]);
            return self.save(vec![note, event], &[]).await;
        }
        let s = &mut self.record.steps[i];
        s.state = StepState::Interrupted;
        s.error = Some(why.clone());
        let label = s.label();
        let event = self.step_event(&self.record.steps[i]);
        self.save(vec![event], &[]).await?;
        self.pause(
            PauseReason::Interrupted,
            format!("step {label} was interrupted: {why}; decide retry, skip or abort"),
            Some(i),
        )
        .await
    }

    /// Sets step `i` up for its next attempt: a new turn in its session.
    fn retry(&mut self, i: usize) -> DaemonResult<()> {
        let session_turns = match &self.record.steps[i].session_id {
            Some(id) => self.ctx.store.get::<SessionRecord>(id)?.map_or(0, |s| s.turn_count),
            None => 0,
        };
        let now = bosun_proto::now_ts();
        let s = &mut self.record.steps[i];
        s.state = StepState::Running;
        s.attempts += 1;
        s.turn_number = session_turns + 1;
        s.timed_out = false;
        s.stalled = false;
        s.error = None;
        s.ended_at = None;
        s.attempt_started_at = Some(now);
        if s.kind == Kind::Merge {
            s.approval_id = None;
            s.merge = None;
        }
        // It failed before it had a session (its template, its fan-out's
        // items): it starts over from the beginning.
        let unstarted = matches!(s.kind, Kind::Agent | Kind::Shell) && s.session_id.is_none();
        if unstarted || (s.fan_out && s.index.is_none()) {
            s.state = StepState::Pending;
        }
        Ok(())
    }

    /// Stops starting steps until a person decides (running ones go on).
    async fn pause(&mut self, reason: PauseReason, message: String, step: Option<usize>) -> DaemonResult<()> {
        if self.record.state.is_final() {
            return Ok(());
        }
        self.record.state = Run::Paused;
        self.record.pause = Some(RunPause { reason, message: message.clone() });
        let (step_id, index) = match step.map(|i| &self.record.steps[i]) {
            Some(s) => (Some(s.step_id.clone()), s.index),
            None => (None, None),
        };
        let paused = EventData::WorkflowPaused(bosun_proto::WorkflowPaused {
            run_id: self.record.id.clone().into(),
            reason,
            step_id,
            index,
            message,
        });
        tracing::info!(run_id = %self.record.id, %reason, "workflow run paused");
        self.save(vec![paused], &[]).await
    }

    async fn unpause(&mut self, why: &str) -> DaemonResult<()> {
        self.record.state = Run::Running;
        self.record.pause = None;
        let note = self.note(WorkflowEventKind::Resumed, None, None, why.to_string());
        self.save(vec![note], &[]).await
    }

    fn over_budget(&self) -> bool {
        let tokens = self.record.usage.input_tokens + self.record.usage.output_tokens;
        self.record.budget.tokens.is_some_and(|b| tokens >= b)
            || self.record.budget.cost.is_some_and(|b| self.record.cost >= b)
    }

    /// Ends the run: `state` with the totals, gates still open cancelled.
    async fn finish(&mut self, state: Run, why: Option<String>) -> DaemonResult<()> {
        let now = bosun_proto::now_ts();
        let mut gates = Vec::new();
        let mut events = Vec::new();
        for step in &self.record.steps {
            let Some(id) = &step.approval_id else { continue };
            if let Some(mut gate) = self.ctx.store.get::<GateRecord>(id)? {
                if gate.status == ApprovalStatus::Pending {
                    gate.status = ApprovalStatus::Cancelled;
                    gate.decided_by = Some(DecidedBy::Daemon);
                    gate.decided_at = Some(now.clone());
                    events.push(gate_resolved(&gate, true));
                    gates.push(gate);
                }
            }
        }
        self.record.state = state;
        self.record.pause = None;
        self.record.ended_at = Some(now.clone());
        let duration_ms = chrono::DateTime::parse_from_rfc3339(&self.record.created_at)
            .ok()
            .and_then(|t| (chrono::Utc::now() - t.with_timezone(&chrono::Utc)).to_std().ok())
            .map_or(0, |d| d.as_millis() as u64);
        if let Some(why) = why {
            events.push(EventData::WorkflowError(bosun_proto::WorkflowError {
                run_id: self.record.id.clone().into(),
                step_id: None,
                index: None,
                message: why,
            }));
        }
        events.push(EventData::WorkflowCompleted(bosun_proto::WorkflowCompleted {
            run_id: self.record.id.clone().into(),
            state,
            usage: self.record.usage,
            cost: self.record.cost,
            duration_ms,
        }));
        tracing::info!(run_id = %self.record.id, %state, duration_ms, "workflow run ended");
        self.save(events, &gates).await
    }

    pub(super) async fn fail_run(&mut self, why: String) -> DaemonResult<()> {
        self.finish(Run::Failed, Some(why)).await
    }

    // ---- merges ----

    /// Merges the `from` steps' branches into the `into` step's, one at a
    /// time, each checked first. Already-merged branches are passed over,
    /// so a merge cut by a crash goes on where it was.
    async fn merge(&mut self, i: usize, myself: &ActorRef<RunMsg>) -> Result<(), ActorProcessingErr> {
        let step = self.record.steps[i].clone();
        let Some(StepKind::Merge(spec)) = self.workflow.step(&step.step_id).map(|d| d.kind.clone()) else {
            return Ok(());
        };
        let Some(target) = self.single_session(&spec.into) else {
            return Ok(self
                .step_failed(i, format!("into names {:?}, which has no single session", spec.into), false)
                .await?);
        };
        let Some(target_record) = self.ctx.store.get::<SessionRecord>(&target)? else {
            return Ok(self.step_failed(i, format!("the session of {:?} is gone", spec.into), false).await?);
        };
        let Some(ws) = target_record.workspace.clone() else {
            return Ok(self
                .step_failed(i, format!("step {:?} has no workspace to merge into", spec.into), false)
                .await?);
        };
        let mut view = step
            .merge
            .clone()
            .unwrap_or_else(|| MergeView { into: bosun_workspace::session_branch(&target), ..MergeView::default() });
        let sources: Vec<(String, String)> = spec
            .from
            .iter()
            .flat_map(|f| self.record.steps.iter().filter(move |s| &s.step_id == f))
            .filter(|s| s.state == StepState::Completed)
            .filter_map(|s| s.session_id.clone().map(|id| (s.label(), id)))
            .collect();
        let root = std::path::Path::new(&ws.worktree).to_path_buf();
        for (label, session) in sources {
            let branch = bosun_workspace::session_branch(&session);
            if view.merged.iter().any(|m| m.branch == branch) {
                continue;
            }
            if let Some(c) = view.conflicts.iter_mut().find(|c| c.branch == branch) {
                let Some(resolver) = c.resolver.clone() else { continue };
                // Given to a resolver: go on once it is done.
                let Some(r) = self.record.steps.iter().find(|s| s.label() == resolver) else { continue };
                match r.state {
                    StepState::Completed => {}
                    // Left out, as with a gate's accept.
                    StepState::Skipped => continue,
                    _ => {
                        self.record.steps[i].merge = Some(view);
                        return Ok(());
                    }
                }
                let left = bosun_workspace::with_markers(&root, &c.files).await.unwrap_or_default();
                if !left.is_empty() || !bosun_workspace::is_merged(&root, &branch).await.unwrap_or(false) {
                    let why = if left.is_empty() {
                        format!("{resolver} did not conclude the merge of {branch}")
                    } else {
                        format!("{resolver} left conflict markers in {}", left.join(", "))
                    };
                    self.record.steps[i].merge = Some(view);
                    return Ok(self.step_failed(i, why, false).await?);
                }
                c.resolved = true;
                let head = bosun_workspace::head(&root).await.unwrap_or_default();
                view.merged.push(MergedBranch { branch, commit: head });
                continue;
            }
            let message = format!(
                "Merge {label} ({branch}) into {} — workflow {} ({})",
                spec.into, self.record.name, self.record.id
            );
            let b = branch.clone();
            let r = crate::route::call::<SessionMsg, _, _>(&names::session(&target), |r| {
                SessionMsg::Files(FileChange::Merge { branch: b, message }, r)
            })
            .await;
            match r {
                Ok(Ok(FileChanged::Merged(MergeOutcome::Merged { commit }))) => {
                    view.merged.push(MergedBranch { branch, commit });
                }
                Ok(Ok(FileChanged::Merged(MergeOutcome::AlreadyMerged { head }))) => {
                    view.merged.push(MergedBranch { branch, commit: head });
                }
                Ok(Ok(FileChanged::Merged(MergeOutcome::Conflicts { files, hunks }))) => {
                    if let OnConflict::Resolver(rid) = &spec.on_conflict {
                        let n = self.record.steps.iter().filter(|s| &s.step_id == rid).count() as u64;
                        let resolver = format!("{rid}#{n}");
                        view.conflicts.push(MergeConflict {
                            branch: branch.clone(),
                            files: files.clone(),
                            hunks: hunks.clone(),
                            resolver: Some(resolver),
                            resolved: false,
                        });
                        self.record.steps[i].merge = Some(view);
                        let conflict = conflict_text(&branch, &spec.into, &files, &hunks);
                        return self.hand_to_resolver(i, rid, n, &target_record, &branch, conflict, myself).await;
                    }
                    view.conflicts.push(MergeConflict { branch, files, hunks, resolver: None, resolved: false });
                }
                Ok(Err(FilesError::Daemon(DaemonError::Busy { .. }))) | Err(DaemonError::Unavailable(_)) => {
                    // Its session is busy; the next tick tries again.
                    self.record.steps[i].merge = Some(view);
                    self.save(vec![], &[]).await?;
                    return Ok(());
                }
                Ok(Ok(other)) => {
                    return Ok(self.step_failed(i, format!("unexpected answer to a merge: {other:?}"), false).await?)
                }
                Ok(Err(e)) => return Ok(self.step_failed(i, format!("merging {branch}: {e}"), false).await?),
                Err(e) => return Ok(self.step_failed(i, format!("merging {branch}: {e}"), false).await?),
            }
            let note = self.note(
                WorkflowEventKind::Progress,
                Some(&step.step_id),
                None,
                format!(
                    "{}: {label} {}",
                    step.label(),
                    if view.conflicts.iter().any(|c| c.branch == bosun_workspace::session_branch(&session)) {
                        "conflicts"
                    } else {
                        "merged"
                    }
                ),
            );
            self.record.steps[i].merge = Some(view.clone());
            self.save(vec![note], &[]).await?;
        }
        let root = root.as_path();
        let mut files = Vec::new();
        for m in &view.merged {
            if let Ok(changed) = bosun_workspace::changed_files(root, &format!("{}^1", m.commit), &m.commit).await {
                for f in changed {
                    if !files.contains(&f) {
                        files.push(f);
                    }
                }
            }
        }
        view.files = files;
        view.head = bosun_workspace::head(root).await.ok();
        self.record.steps[i].merge = Some(view.clone());
        // What a resolver was given is done with (resolved, or skipped and left out).
        let open = view.conflicts.iter().filter(|c| c.resolver.is_none()).count();
        if open == 0 {
            let s = &mut self.record.steps[i];
            s.state = StepState::Completed;
            s.output = Some(format!("merged {} branch(es) into {}", view.merged.len(), view.into));
            s.ended_at = Some(bosun_proto::now_ts());
            let event = self.step_event(&self.record.steps[i]);
            self.save(vec![event], &[]).await?;
            return Ok(());
        }
        match spec.on_conflict {
            OnConflict::Gate | OnConflict::Resolver(_) => {
                let mut message = format!(
                    "Merging into {}: {} branch(es) conflict. Accept to keep the {} clean merge(s) and leave the conflicting branches out; decline to fail the step.\n",
                    view.into,
                    open,
                    view.merged.len()
                );
                for c in view.conflicts.iter().filter(|c| c.resolver.is_none()) {
                    message.push_str(&format!("\n{} conflicts in {}:\n{}", c.branch, c.files.join(", "), c.hunks));
                }
                let gate = self.new_gate(&step, message);
                self.record.steps[i].approval_id = Some(gate.id.clone());
                let events = vec![self.step_event(&self.record.steps[i]), gate_requested(&gate)];
                self.save(events, &[gate]).await?;
            }
        }
        Ok(())
    }

    /// Gives a conflicting branch to the resolver step `rid`: a new record
    /// `rid#n`, in the target's session, whose turn runs once the merge is
    /// started there with its conflicts left in the worktree. Committing
    /// the worktree when it completes concludes the merge.
    #[allow(clippy::too_many_arguments)]
    async fn hand_to_resolver(
        &mut self,
        i: usize,
        rid: &str,
        n: u64,
        target: &SessionRecord,
        branch: &str,
        conflict: String,
        myself: &ActorRef<RunMsg>,
    ) -> Result<(), ActorProcessingErr> {
        let now = bosun_proto::now_ts();
        let mut r = StepRecord::new(rid, Kind::Agent, false);
        r.index = Some(n);
        r.item = Some(branch.to_string());
        r.conflict = Some(conflict);
        r.session_id = Some(target.id.clone());
        r.state = StepState::Running;
        r.attempts = 1;
        r.turn_number = target.turn_count + 1;
        r.started_at = Some(now.clone());
        r.attempt_started_at = Some(now);
        self.record.steps.insert(i + 1, r);
        let events = vec![
            self.step_event(&self.record.steps[i + 1]),
            self.note(
                WorkflowEventKind::Progress,
                Some(&self.record.steps[i].step_id.clone()),
                None,
                format!("{branch} conflicts; {rid}#{n} resolves it"),
            ),
        ];
        self.save(events, &[]).await?;
        if let Err(why) = self.start_resolver_merge(i + 1).await {
            return Ok(self.step_failed(i + 1, why, false).await?);
        }
        self.launch(i + 1, myself, None);
        Ok(())
    }

    /// Starts (again, harmlessly) the merge resolver record `r` concludes.
    async fn start_resolver_merge(&self, r: usize) -> Result<(), String> {
        let rec = &self.record.steps[r];
        let (Some(session), Some(branch)) = (rec.session_id.clone(), rec.item.clone()) else {
            return Err("a resolver without a merge".into());
        };
        let message =
            format!("Merge {branch}, resolved by {} — workflow {} ({})", rec.label(), self.record.name, self.record.id);
        let r = crate::route::call::<SessionMsg, _, _>(&names::session(&session), |reply| {
            SessionMsg::Files(FileChange::StartMerge { branch, message }, reply)
        })
        .await;
        match r {
            Ok(Ok(FileChanged::Merged(MergeOutcome::Started { .. }))) => Ok(()),
            Ok(Ok(other)) => Err(format!("unexpected answer to starting a merge: {other:?}")),
            Ok(Err(e)) => Err(format!("starting the merge: {e}")),
            Err(e) => Err(format!("starting the merge: {e}")),
        }
    }

    fn is_resolver(&self, step_id: &str) -> bool {
        self.workflow.step(step_id).and_then(|s| s.session()).is_some_and(|s| s.resolver)
    }

    /// The session of a step that is not a fan-out.
    fn single_session(&self, step_id: &str) -> Option<String> {
        let mut of = self.record.steps.iter().filter(|s| s.step_id == step_id);
        match (of.next(), of.next()) {
            (Some(s), None) => s.session_id.clone(),
            _ => None,
        }
    }

    // ---- gates ----

    fn new_gate(&self, step: &StepRecord, message: String) -> GateRecord {
        GateRecord {
            // One per step and attempt: a retried merge asks again.
            id: derived_id("a_", &[&self.record.id, &step.label(), &step.attempts.to_string()]),
            run_id: self.record.id.clone(),
            step_id: step.step_id.clone(),
            message,
            status: ApprovalStatus::Pending,
            decided_by: None,
            requested_at: bosun_proto::now_ts(),
            decided_at: None,
        }
    }

    pub(super) async fn decide_gate(&mut self, approval_id: &str, decision: Decision) -> DaemonResult<ApprovalView> {
        let Some(mut gate) = self.ctx.store.get::<GateRecord>(approval_id)? else {
            return Err(self.not_found(&format!("gate {approval_id}")));
        };
        if gate.status != ApprovalStatus::Pending {
            return if gate.status == decision.resulting_status() {
                Ok(gate.view())
            } else {
                Err(DaemonError::Conflict(format!("gate {approval_id} is already {}", gate.status)))
            };
        }
        let Some(i) = self.record.steps.iter().position(|s| s.approval_id.as_deref() == Some(approval_id)) else {
            return Err(self.not_found(&format!("the step of gate {approval_id}")));
        };
        let now = bosun_proto::now_ts();
        gate.status = decision.resulting_status();
        gate.decided_by = Some(DecidedBy::User);
        gate.decided_at = Some(now.clone());
        let accepted = decision.allows();
        let s = &mut self.record.steps[i];
        s.ended_at = Some(now);
        if accepted {
            s.state = StepState::Completed;
            if s.kind == Kind::Gate {
                s.output = Some("accepted".into());
            } else if let Some(m) = &s.merge {
                s.output = Some(format!(
                    "merged {} branch(es) into {}; left out, conflicting: {}",
                    m.merged.len(),
                    m.into,
                    m.conflicts.iter().map(|c| c.branch.as_str()).collect::<Vec<_>>().join(", ")
                ));
            }
        } else {
            s.state = StepState::Failed;
            s.error = Some(format!("the gate was {}", gate.status));
        }
        let label = s.label();
        let events = vec![gate_resolved(&gate, false), self.step_event(&self.record.steps[i])];
        self.save(events, std::slice::from_ref(&gate)).await?;
        if !accepted {
            self.fail_run(format!("{label}: the gate was {}", gate.status)).await?;
        }
        Ok(gate.view())
    }

    // ---- decisions ----

    pub(super) async fn cancel(&mut self) -> DaemonResult<RunView> {
        if self.record.state.is_final() {
            return Err(DaemonError::Conflict(format!("the run is already {}", self.record.state)));
        }
        let now = bosun_proto::now_ts();
        let mut events = Vec::new();
        for i in 0..self.record.steps.len() {
            let step = self.record.steps[i].clone();
            match step.state {
                StepState::Pending => self.record.steps[i].state = StepState::Skipped,
                StepState::Running | StepState::Interrupted => {
                    if let Some(session_id) = &step.session_id {
                        if let Some(turn) = self.ctx.store.get::<SessionRecord>(session_id)?.and_then(|s| s.active_turn)
                        {
                            let r = crate::route::call::<SessionMsg, _, _>(&names::session(session_id), |r| {
                                SessionMsg::Interrupt(turn, r)
                            })
                            .await;
                            if let Err(e) | Ok(Err(e)) = r.map(|r| r.map(|_| ())) {
                                tracing::warn!(run_id = %self.record.id, step = %step.label(), error = %e, "could not interrupt a cancelled step");
                            }
                        }
                    }
                    let s = &mut self.record.steps[i];
                    s.state = StepState::Failed;
                    s.error = Some("the run was cancelled".into());
                }
                _ => continue,
            }
            self.record.steps[i].ended_at = Some(now.clone());
            events.push(self.step_event(&self.record.steps[i]));
        }
        self.save(events, &[]).await?;
        self.finish(Run::Cancelled, None).await?;
        Ok(self.record.view())
    }

    pub(super) async fn resume(&mut self) -> DaemonResult<RunView> {
        match (self.record.state, self.record.pause.as_ref().map(|p| p.reason)) {
            (Run::Running, _) => Ok(self.record.view()),
            (Run::Paused, Some(PauseReason::Budget)) if !self.over_budget() => {
                self.unpause("resumed").await?;
                Ok(self.record.view())
            }
            (Run::Paused, Some(PauseReason::Budget)) => Err(DaemonError::Conflict(
                "the run is at its budget: raise it with PATCH {\"budget\":{..}}, which resumes it".into(),
            )),
            (Run::Paused, _) => {
                let waiting: Vec<String> = self
                    .record
                    .steps
                    .iter()
                    .filter(|s| matches!(s.state, StepState::Interrupted | StepState::Failed))
                    .map(StepRecord::label)
                    .collect();
                if waiting.is_empty() {
                    self.unpause("resumed").await?;
                    return Ok(self.record.view());
                }
                Err(DaemonError::Conflict(format!(
                    "decide retry, skip or abort for {} first (POST .../steps/{{step}}/decide)",
                    waiting.join(", ")
                )))
            }
            (state, _) => Err(DaemonError::Conflict(format!("the run is {state}"))),
        }
    }

    pub(super) async fn decide(
        &mut self,
        step_id: &str,
        index: Option<u64>,
        decision: StepDecision,
    ) -> DaemonResult<RunView> {
        if self.record.state.is_final() {
            return Err(DaemonError::Conflict(format!("the run is {}", self.record.state)));
        }
        if !self.record.steps.iter().any(|s| s.step_id == step_id) {
            return Err(self.not_found(&format!("step {step_id:?}")));
        }
        let targets: Vec<usize> = (0..self.record.steps.len())
            .filter(|&i| {
                let s = &self.record.steps[i];
                s.step_id == step_id
                    && index.is_none_or(|k| s.index == Some(k))
                    && matches!(s.state, StepState::Interrupted | StepState::Failed)
                    && s.kind != Kind::Gate
            })
            .collect();
        if targets.is_empty() {
            return Err(DaemonError::Conflict(format!(
                "step {step_id}{} is not interrupted or failed: nothing to decide",
                index.map(|k| format!("#{k}")).unwrap_or_default()
            )));
        }
        let now = bosun_proto::now_ts();
        let mut events = Vec::new();
        for &i in &targets {
            match decision {
                StepDecision::Retry => self.retry(i)?,
                StepDecision::Skip => {
                    let s = &mut self.record.steps[i];
                    s.state = StepState::Skipped;
                    s.ended_at = Some(now.clone());
                }
                StepDecision::Abort => {
                    let s = &mut self.record.steps[i];
                    s.state = StepState::Failed;
                    s.error =
                        Some(format!("aborted{}", s.error.as_ref().map(|e| format!(" ({e})")).unwrap_or_default()));
                    s.ended_at = Some(now.clone());
                }
            }
            events.push(self.step_event(&self.record.steps[i]));
        }
        self.save(events, &[]).await?;
        if decision == StepDecision::Abort {
            self.fail_run(format!("step {step_id} was aborted")).await?;
            return Ok(self.record.view());
        }
        let waiting = self.record.steps.iter().any(|s| matches!(s.state, StepState::Interrupted | StepState::Failed));
        let paused_for_steps =
            self.record.paused_for(PauseReason::Interrupted) || self.record.paused_for(PauseReason::Failed);
        if paused_for_steps && !waiting {
            self.unpause(&format!("{step_id}: {decision}")).await?;
        }
        Ok(self.record.view())
    }

    pub(super) async fn patch(&mut self, budget: BudgetView) -> DaemonResult<RunView> {
        if self.record.state.is_final() {
            return Err(DaemonError::Conflict(format!("the run is {}", self.record.state)));
        }
        if budget.cost.is_some_and(|c| !(c.is_finite() && c >= 0.0)) {
            return Err(DaemonError::BadRequest("budget.cost must be a number of at least 0".into()));
        }
        if budget.tokens.is_some() {
            self.record.budget.tokens = budget.tokens;
        }
        if budget.cost.is_some() {
            self.record.budget.cost = budget.cost;
        }
        let note = self.budget_note();
        self.save(vec![note], &[]).await?;
        if self.record.paused_for(PauseReason::Budget) && !self.over_budget() {
            self.unpause("the budget was raised").await?;
        }
        Ok(self.record.view())
    }

    // ---- events ----

    fn step_event(&self, step: &StepRecord) -> EventData {
        EventData::WorkflowStep(bosun_proto::WorkflowStep { run_id: self.record.id.clone().into(), step: step.view() })
    }

    fn note(&self, kind: WorkflowEventKind, step_id: Option<&str>, index: Option<u64>, message: String) -> EventData {
        EventData::WorkflowEvent(bosun_proto::WorkflowEvent {
            run_id: self.record.id.clone().into(),
            kind,
            step_id: step_id.map(str::to_string),
            index,
            message,
            usage: None,
            cost: None,
            budget: None,
        })
    }

    fn budget_note(&self) -> EventData {
        let u: Usage = self.record.usage;
        EventData::WorkflowEvent(bosun_proto::WorkflowEvent {
            run_id: self.record.id.clone().into(),
            kind: WorkflowEventKind::Budget,
            step_id: None,
            index: None,
            message: format!("{} tokens, cost {:.4}", u.input_tokens + u.output_tokens, self.record.cost),
            usage: Some(u),
            cost: Some(self.record.cost),
            budget: Some(self.record.budget),
        })
    }
}

/// What a resolver's `{{ conflict }}` reads.
fn conflict_text(branch: &str, into: &str, files: &[String], hunks: &str) -> String {
    format!(
        "Merging {branch} into {into}'s branch conflicts in {}. The merge is under way in this worktree with git's conflict markers in those files: edit them to resolve every conflict (leave no <<<<<<< ======= >>>>>>> lines); the daemon commits the result.\n\n{hunks}",
        files.join(", ")
    )
}

fn gate_requested(gate: &GateRecord) -> EventData {
    // A gate always waits for a person, whatever the sessions' policies.
    EventData::ApprovalRequested(bosun_proto::events::ApprovalRequested {
        approval: gate.view(),
        policy: bosun_proto::Policy::PlanOnly,
    })
}

fn gate_resolved(gate: &GateRecord, automatic: bool) -> EventData {
    EventData::ApprovalResolved(bosun_proto::events::ApprovalResolved { approval: gate.view(), automatic })
}

/// Makes the session `session_id` unless it is there, then starts its turn
/// `number` with `text` unless the session already has it.
async fn launch(
    ctx: &crate::context::Context,
    session_id: &str,
    req: CreateSessionRequest,
    text: String,
    number: u64,
) -> Result<(), String> {
    let mut tries = 0;
    loop {
        let r = crate::route::call_within(names::SESSIONS, LAUNCH_TIMEOUT, |reply| SessionsMsg::Ensure {
            id: session_id.to_string(),
            req: req.clone(),
            reply,
        })
        .await;
        match r.and_then(|r| r) {
            Ok(_) => break,
            Err(DaemonError::Unavailable(_)) if tries < 50 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(format!("its session could not be made: {e}")),
        }
    }
    let session = ctx.store.get::<SessionRecord>(session_id).map_err(|e| e.to_string())?;
    if session.is_some_and(|s| s.turn_count >= number) {
        return Ok(());
    }
    let mut tries = 0;
    loop {
        let t = text.clone();
        let r = crate::route::call::<SessionMsg, _, _>(&names::session(session_id), |reply| {
            SessionMsg::StartTurn(t, reply)
        })
        .await;
        match r.and_then(|r| r) {
            Ok(_) => return Ok(()),
            // The session is restarting, or still ending an earlier turn.
            Err(DaemonError::Unavailable(_) | DaemonError::Busy { .. }) if tries < 50 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
                if ctx.store.get::<SessionRecord>(session_id).ok().flatten().is_some_and(|s| s.turn_count >= number) {
                    return Ok(());
                }
            }
            Err(e) => return Err(format!("its turn could not start: {e}")),
        }
    }
}

/// How long ago an RFC 3339 time was.
fn since(ts: Option<&str>) -> Option<Duration> {
    let t = chrono::DateTime::parse_from_rfc3339(ts?).ok()?;
    (chrono::Utc::now() - t.with_timezone(&chrono::Utc)).to_std().ok()
}

fn humantime_short(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 && (s / 3600) * 3600 == s {
        format!("{}h", s / 3600)
    } else if s >= 60 && (s / 60) * 60 == s {
        format!("{}m", s / 60)
    } else if s > 0 {
        format!("{s}s")
    } else {
        format!("{}ms", d.as_millis())
    }
}
