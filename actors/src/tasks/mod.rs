//! The tasks actor: the one writer of tasks, kept in step both ways with
//! `docs/TASKS.md` in their session's worktree.
//!
//! Every second it reads each worktree's file (reads need no owner) and
//! takes in what a person changed there: a new line becomes a task, a
//! ticked box a done one, a deleted line a removed one. A change through
//! the API is recorded first, then written into the file through the
//! session's actor (the worktree's owner), which refuses while a turn runs:
//! the file is then written at the next tick after the turn. A task that a
//! workflow run was started for follows the run: done when it completes,
//! back to todo when it fails or is cancelled.

pub mod checklist;

use crate::context::{new_id, Context};
use crate::error::{DaemonError, DaemonResult};
use crate::files::{FileChange, FileChanged};
use crate::names;
use crate::session::SessionMsg;
use crate::workflows::WorkflowsMsg;
use bosun_proto::{
    CreateTaskRequest, EventData, PatchTaskRequest, RunState, RunTaskRequest, StartRunRequest, TaskRemoved, TaskStatus,
    TaskUpdated, TaskView, Topic,
};
use bosun_state::{Batch, Owner, SessionRecord, TaskRecord, WorkflowRunRecord};
use checklist::{Line, TaskLine};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

/// How often the lists' files are read, and unwritten changes written.
const TICK: Duration = Duration::from_secs(1);
/// Every this many ticks, every worktree is looked at for a list someone
/// started by hand; between, only the worktrees known to have one.
const FULL_SCAN_EVERY: u32 = 10;
/// The longest title a task may have: one line of a file.
pub const MAX_TITLE_BYTES: usize = 500;

pub struct TasksActor;

pub enum TasksMsg {
    Create(CreateTaskRequest, RpcReplyPort<DaemonResult<TaskView>>),
    Patch(String, PatchTaskRequest, RpcReplyPort<DaemonResult<TaskView>>),
    Delete(String, RpcReplyPort<DaemonResult<()>>),
    /// Starts a workflow run for the task.
    Run(String, RunTaskRequest, RpcReplyPort<DaemonResult<TaskView>>),
    Tick,
    Crash,
}

pub struct TasksState {
    ctx: Context,
    /// Per session: the file as last read or written, so only a change is taken in.
    seen: HashMap<String, Option<String>>,
    /// Per session: a change read once, taken in only when the next read
    /// agrees: an editor's save caught half-way must not remove tasks.
    settling: HashMap<String, Option<String>>,
    /// Sessions whose file is behind their tasks.
    dirty: HashSet<String>,
    /// Sessions known to have a list (tasks, or a file): read every tick.
    lists: HashSet<String>,
    ticks: u32,
    ticker: Option<tokio::task::JoinHandle<()>>,
}

impl Actor for TasksActor {
    type Msg = TasksMsg;
    type State = TasksState;
    type Arguments = Context;

    async fn pre_start(&self, _myself: ActorRef<TasksMsg>, ctx: Context) -> Result<TasksState, ActorProcessingErr> {
        // Whatever was recorded and not written when the daemon stopped is written now.
        let tasks = ctx.store.scan::<TaskRecord>()?;
        let dirty = tasks.iter().filter(|t| !t.in_file).map(|t| t.session_id.clone()).collect();
        let lists = tasks.into_iter().map(|t| t.session_id).collect();
        Ok(TasksState { ctx, seen: HashMap::new(), settling: HashMap::new(), dirty, lists, ticks: 0, ticker: None })
    }

    async fn post_start(&self, myself: ActorRef<TasksMsg>, state: &mut TasksState) -> Result<(), ActorProcessingErr> {
        state.ticker = Some(tokio::spawn(async move {
            let mut every = tokio::time::interval(TICK);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                if myself.send_message(TasksMsg::Tick).is_err() {
                    return;
                }
            }
        }));
        Ok(())
    }

    async fn post_stop(&self, _myself: ActorRef<TasksMsg>, state: &mut TasksState) -> Result<(), ActorProcessingErr> {
        if let Some(t) = state.ticker.take() {
            t.abort();
        }
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<TasksMsg>,
        msg: TasksMsg,
        state: &mut TasksState,
    ) -> Result<(), ActorProcessingErr> {
        crate::heap::on_heap(async move {
            match msg {
                TasksMsg::Create(req, reply) => {
                    let r = state.create(req).await;
                    let _ = reply.send(r);
                }
                TasksMsg::Patch(id, patch, reply) => {
                    let r = state.patch(&id, patch).await;
                    let _ = reply.send(r);
                }
                TasksMsg::Delete(id, reply) => {
                    let r = state.delete(&id).await;
                    let _ = reply.send(r);
                }
                TasksMsg::Run(id, req, reply) => {
                    let r = state.run(&id, req).await;
                    let _ = reply.send(r);
                }
                TasksMsg::Tick => state.tick().await?,
                TasksMsg::Crash => {
                    if state.ctx.settings.fault_injection {
                        panic!("injected fault: tasks");
                    }
                }
            }
            // Changes are written as soon as they are made, when the worktree is free.
            state.write_dirty().await;
            Ok(())
        })
        .await
    }
}

impl TasksState {
    fn get(&self, id: &str) -> DaemonResult<TaskRecord> {
        self.ctx.store.get::<TaskRecord>(id)?.ok_or_else(|| DaemonError::NotFound(format!("task {id:?} not found")))
    }

    async fn save(&self, puts: &[&TaskRecord], removed: &[&TaskRecord], by: &str) -> DaemonResult<()> {
        let mut batch = Batch::by(Owner::Tasks);
        for t in puts {
            batch.put(*t)?;
            let event = EventData::TaskUpdated(TaskUpdated { task: t.view(), by: by.to_string() });
            batch.event(event.into_event(Topic::session(&t.session_id)));
        }
        for t in removed {
            batch.delete::<TaskRecord>(&t.id);
            let event = EventData::TaskRemoved(TaskRemoved {
                id: t.id.clone(),
                session_id: t.session_id.clone().into(),
                by: by.to_string(),
            });
            batch.event(event.into_event(Topic::session(&t.session_id)));
        }
        if !batch.is_empty() {
            self.ctx.store.commit(batch).await?;
        }
        Ok(())
    }

    /// The session whose worktree holds a new task's list.
    fn list_session(&self, req: &CreateTaskRequest) -> DaemonResult<String> {
        let with_worktree = |id: &str| -> DaemonResult<bool> {
            Ok(self.ctx.store.get::<SessionRecord>(id)?.is_some_and(|s| s.workspace.is_some()))
        };
        match (&req.session_id, &req.run_id) {
            (Some(session), None) => {
                let Some(record) = self.ctx.store.get::<SessionRecord>(session.as_str())? else {
                    return Err(DaemonError::NotFound(format!("session {session} not found")));
                };
                if record.workspace.is_none() {
                    return Err(DaemonError::Conflict(format!(
                        "session {session} has no workspace to keep {} in",
                        checklist::PATH
                    )));
                }
                Ok(record.id)
            }
            (None, Some(run)) => {
                let Some(record) = self.ctx.store.get::<WorkflowRunRecord>(run.as_str())? else {
                    return Err(DaemonError::NotFound(format!("workflow run {run} not found")));
                };
                for step in &record.steps {
                    if let Some(s) = &step.session_id {
                        if with_worktree(s)? {
                            return Ok(s.clone());
                        }
                    }
                }
                Err(DaemonError::Conflict(format!(
                    "workflow run {run} has no step with a workspace (yet) to keep {} in",
                    checklist::PATH
                )))
            }
            _ => Err(DaemonError::BadRequest(
                "give session_id or run_id (whose worktree keeps the list), one of them".into(),
            )),
        }
    }

    async fn create(&mut self, req: CreateTaskRequest) -> DaemonResult<TaskView> {
        let title = check_title(&req.title)?;
        let session = self.list_session(&req)?;
        let now = bosun_proto::now_ts();
        let task = TaskRecord {
            id: new_id("k_"),
            title,
            status: req.status.unwrap_or(TaskStatus::Todo),
            session_id: session.clone(),
            run_id: None,
            in_file: false,
            created_at: now.clone(),
            updated_at: now,
        };
        self.save(&[&task], &[], "api").await?;
        self.lists.insert(session.clone());
        self.dirty.insert(session);
        Ok(task.view())
    }

    async fn patch(&mut self, id: &str, patch: PatchTaskRequest) -> DaemonResult<TaskView> {
        let mut task = self.get(id)?;
        if let Some(title) = &patch.title {
            task.title = check_title(title)?;
        }
        if let Some(status) = patch.status {
            task.status = status;
        }
        task.updated_at = bosun_proto::now_ts();
        self.save(&[&task], &[], "api").await?;
        self.dirty.insert(task.session_id.clone());
        Ok(task.view())
    }

    async fn delete(&mut self, id: &str) -> DaemonResult<()> {
        let task = self.get(id)?;
        self.save(&[], &[&task], "api").await?;
        self.dirty.insert(task.session_id);
        Ok(())
    }

    async fn run(&mut self, id: &str, req: RunTaskRequest) -> DaemonResult<TaskView> {
        let mut task = self.get(id)?;
        if let Some(run) = &task.run_id {
            if self.ctx.store.get::<WorkflowRunRecord>(run)?.is_some_and(|r| !r.state.is_final()) {
                return Err(DaemonError::Conflict(format!("task {id} has a run under way: {run}")));
            }
        }
        let mut start = StartRunRequest { definition: req.definition, path: req.path, inputs: req.inputs };
        let (_, workflow) = crate::workflows::load(&self.ctx, &start).await?;
        if workflow.inputs.contains_key("task") && !start.inputs.contains_key("task") {
            start.inputs.insert("task".into(), task.title.clone());
        }
        let run =
            crate::route::call::<WorkflowsMsg, _, _>(names::WORKFLOWS, |r| WorkflowsMsg::Start(start, r)).await??;
        task.run_id = Some(run.id.into_string());
        task.status = TaskStatus::InProgress;
        task.updated_at = bosun_proto::now_ts();
        self.save(&[&task], &[], "run").await?;
        self.dirty.insert(task.session_id.clone());
        Ok(task.view())
    }

    /// Takes in the files' changes, and moves tasks on after their runs.
    async fn tick(&mut self) -> Result<(), ActorProcessingErr> {
        // Counts down to the next full look.
        let full = self.ticks == 0;
        self.ticks = if full { FULL_SCAN_EVERY - 1 } else { self.ticks - 1 };
        let sessions: Vec<SessionRecord> = if full {
            self.ctx.store.scan::<SessionRecord>()?
        } else {
            let mut known = Vec::new();
            for id in &self.lists {
                known.extend(self.ctx.store.get::<SessionRecord>(id)?);
            }
            known
        };
        for session in sessions {
            let Some(ws) = &session.workspace else { continue };
            let text = read(Path::new(&ws.worktree)).await;
            if self.seen.get(&session.id) == Some(&text) {
                self.settling.remove(&session.id);
                continue;
            }
            // Known before (not a first read at start), and not read the same twice yet.
            if self.seen.contains_key(&session.id) && self.settling.get(&session.id) != Some(&text) {
                self.settling.insert(session.id.clone(), text);
                continue;
            }
            self.settling.remove(&session.id);
            if let Some(text) = &text {
                self.lists.insert(session.id.clone());
                self.take_in(&session.id, text).await?;
            } else if self.seen.get(&session.id).is_some_and(Option::is_some) {
                // The file went away: its tasks did not; write them back.
                self.dirty.insert(session.id.clone());
            }
            self.seen.insert(session.id.clone(), text);
        }
        let mut moved = Vec::new();
        for mut task in self.ctx.store.scan::<TaskRecord>()? {
            let (Some(run), TaskStatus::InProgress) = (&task.run_id, task.status) else { continue };
            let Some(record) = self.ctx.store.get::<WorkflowRunRecord>(run)? else { continue };
            task.status = match record.state {
                RunState::Completed => TaskStatus::Done,
                RunState::Failed | RunState::Cancelled => TaskStatus::Todo,
                _ => continue,
            };
            task.updated_at = bosun_proto::now_ts();
            moved.push(task);
        }
        if !moved.is_empty() {
            self.save(&moved.iter().collect::<Vec<_>>(), &[], "run").await?;
            self.dirty.extend(moved.into_iter().map(|t| t.session_id));
        }
        Ok(())
    }

    /// What a person changed in a session's file, into its tasks.
    async fn take_in(&mut self, session: &str, text: &str) -> Result<(), ActorProcessingErr> {
        let tasks: HashMap<String, TaskRecord> = self
            .ctx
            .store
            .scan::<TaskRecord>()?
            .into_iter()
            .filter(|t| t.session_id == session)
            .map(|t| (t.id.clone(), t))
            .collect();
        let now = bosun_proto::now_ts();
        let mut changed = Vec::new();
        let mut in_file = HashSet::new();
        let mut new_lines = false;
        for line in checklist::parse(text) {
            let Line::Task(l) = line else { continue };
            match l.id.as_ref().and_then(|id| tasks.get(id)) {
                Some(t) if in_file.insert(t.id.clone()) => {
                    if t.title != l.title || t.status != l.status || !t.in_file {
                        let mut t = t.clone();
                        t.title = l.title.clone();
                        t.status = l.status;
                        t.in_file = true;
                        t.updated_at = now.clone();
                        changed.push(t);
                    }
                }
                // Added by hand and taken in already, its id not written yet.
                _ if l.id.is_none()
                    && tasks.values().any(|t| !t.in_file && t.title == l.title && !in_file.contains(&t.id)) =>
                {
                    if let Some(t) =
                        tasks.values().find(|t| !t.in_file && t.title == l.title && !in_file.contains(&t.id))
                    {
                        in_file.insert(t.id.clone());
                    }
                    new_lines = true;
                }
                // A line of its own (added by hand, or copied with another's id).
                _ => {
                    new_lines = true;
                    let t = TaskRecord {
                        id: new_id("k_"),
                        title: l.title.clone(),
                        status: l.status,
                        session_id: session.to_string(),
                        run_id: None,
                        // Once its id is written; the line has none yet.
                        in_file: false,
                        created_at: now.clone(),
                        updated_at: now.clone(),
                    };
                    in_file.insert(t.id.clone());
                    changed.push(t);
                }
            }
        }
        let removed: Vec<&TaskRecord> = tasks.values().filter(|t| t.in_file && !in_file.contains(&t.id)).collect();
        self.save(&changed.iter().collect::<Vec<_>>(), &removed, "file").await?;
        if new_lines {
            self.dirty.insert(session.to_string());
        }
        Ok(())
    }

    /// Writes each dirty session's file from its tasks, through the session
    /// (a session running a turn is left for a later tick).
    async fn write_dirty(&mut self) {
        for session in self.dirty.clone() {
            match self.write(&session).await {
                Ok(true) => {
                    self.dirty.remove(&session);
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(session_id = %session, error = %e, "could not write the task list");
                    // A session gone for good takes its list with it.
                    if matches!(e, DaemonError::NotFound(_)) {
                        self.dirty.remove(&session);
                        self.lists.remove(&session);
                    }
                }
            }
        }
    }

    async fn write(&mut self, session: &str) -> DaemonResult<bool> {
        let Some(record) = self.ctx.store.get::<SessionRecord>(session)? else {
            return Err(DaemonError::NotFound(format!("session {session} not found")));
        };
        let Some(ws) = &record.workspace else { return Ok(true) };
        let root = Path::new(&ws.worktree);
        let text = read(root).await;
        let mut tasks: HashMap<String, TaskRecord> = self
            .ctx
            .store
            .scan::<TaskRecord>()?
            .into_iter()
            .filter(|t| t.session_id == session)
            .map(|t| (t.id.clone(), t))
            .collect();
        let mut lines = Vec::new();
        // Lines without an id were taken in as new tasks (in creation
        // order); they get theirs now.
        let mut unwritten: Vec<TaskRecord> = tasks.values().filter(|t| !t.in_file).cloned().collect();
        unwritten.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        let mut placed = HashSet::new();
        for line in checklist::parse(text.as_deref().unwrap_or("")) {
            match line {
                Line::Task(mut l) => {
                    let known = l.id.as_ref().and_then(|id| tasks.get(id)).filter(|t| !placed.contains(&t.id));
                    let task = match known {
                        Some(t) => Some(t.clone()),
                        None => {
                            // A line added by hand: the task taken in for it.
                            let at = unwritten.iter().position(|t| t.title == l.title && !placed.contains(&t.id));
                            at.map(|i| unwritten[i].clone())
                        }
                    };
                    // Its task was removed: so is the line.
                    let Some(t) = task else { continue };
                    placed.insert(t.id.clone());
                    l.id = Some(t.id.clone());
                    l.title = t.title.clone();
                    l.status = t.status;
                    lines.push(Line::Task(l));
                }
                other => lines.push(other),
            }
        }
        let mut added: Vec<TaskRecord> = tasks.values().filter(|t| !placed.contains(&t.id)).cloned().collect();
        added.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        let added_lines: Vec<TaskLine> = added
            .iter()
            .map(|t| TaskLine { lead: "- ".into(), title: t.title.clone(), status: t.status, id: Some(t.id.clone()) })
            .collect();
        let content = checklist::render(&lines, &added_lines);
        if text.as_deref() != Some(content.as_str()) {
            let change = FileChange::Write { path: checklist::PATH.to_string(), content: content.clone() };
            let r = crate::route::call::<SessionMsg, _, _>(&names::session(session), |reply| {
                SessionMsg::Files(change, reply)
            })
            .await?;
            match r {
                Ok(FileChanged::Written { .. }) => {}
                Err(crate::files::FilesError::Daemon(DaemonError::Busy { .. })) => return Ok(false),
                Ok(other) => tracing::warn!(?other, "unexpected answer to a write"),
                Err(e) => return Err(DaemonError::Internal(format!("writing {}: {e}", checklist::PATH))),
            }
        }
        // Every task of the session is in the file now.
        let now_in: Vec<TaskRecord> = tasks
            .values_mut()
            .filter(|t| !t.in_file)
            .map(|t| {
                t.in_file = true;
                t.clone()
            })
            .collect();
        if !now_in.is_empty() {
            let mut batch = Batch::by(Owner::Tasks);
            for t in &now_in {
                batch.put(t)?;
            }
            self.ctx.store.commit(batch).await?;
        }
        self.seen.insert(session.to_string(), Some(content));
        self.settling.remove(session);
        Ok(true)
    }
}

async fn read(root: &Path) -> Option<String> {
    bosun_workspace::read(root, checklist::PATH).await.ok()
}

fn check_title(title: &str) -> DaemonResult<String> {
    let t = title.trim();
    if t.is_empty() || t.len() > MAX_TITLE_BYTES || t.contains('\n') || t.contains("<!--") {
        return Err(DaemonError::BadRequest(format!(
            "a task's title is one line of 1 to {MAX_TITLE_BYTES} bytes, without \"<!--\""
        )));
    }
    Ok(t.to_string())
}
