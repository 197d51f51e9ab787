//! The sessions supervisor: creates and deletes sessions, and keeps one
//! session actor running per stored session (one_for_one: a session that
//! crashes is restarted alone and reloads its record).

use crate::context::{new_id, Context};
use crate::error::{DaemonError, DaemonResult};
use crate::names;
use crate::session::{SessionActor, SessionArgs, SessionMsg, MAX_TITLE_BYTES};
use bosun_proto::{CreateSessionRequest, Enforcement, Policy, Sandbox, SessionView};
use bosun_state::{SessionRecord, WorkspaceInfo};
use bosun_supervision::{
    Backoff, ChildInfo, ChildSpec, Intensity, Restart, RestartChild, Shutdown, Strategy, Supervises, Supervision,
    SupervisorConfig,
};
use bosun_workspace::{self as workspace, WorkspaceError};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct SessionsSupervisor;

pub struct SessionsState {
    ctx: Context,
    sup: Supervision,
    /// One lock per repository: creations of workspaces on the same bare
    /// clone take turns, others go on side by side.
    repo_locks: HashMap<String, Arc<tokio::sync::Mutex<()>>>,
    /// Ids of `Ensure` creations under way.
    creating: std::collections::HashSet<String>,
}

/// A creation waiting for its worktree, made on a task so a slow clone does
/// not hold up this supervisor (other creations, deletions, restarts).
pub struct PendingCreate {
    id: String,
    req: CreateSessionRequest,
    title: String,
    policy: Policy,
    reply: RpcReplyPort<DaemonResult<SessionView>>,
    /// A new random id (`Create`), rather than one a caller chose (`Ensure`),
    /// which a killed daemon may have left a worktree for.
    fresh_id: bool,
}

impl PendingCreate {
    /// Answers the creation; the id is free for another `Ensure` after.
    fn answer(self, state: &mut SessionsState, r: DaemonResult<SessionView>) {
        state.creating.remove(&self.id);
        let _ = self.reply.send(r);
    }
}

pub enum SessionsMsg {
    Create(CreateSessionRequest, RpcReplyPort<DaemonResult<SessionView>>),
    /// Creates the session `id` unless it exists (then answers with it as
    /// it is): how a workflow step makes its session exactly once, whatever
    /// crash comes between asking and hearing back.
    Ensure {
        id: String,
        req: CreateSessionRequest,
        reply: RpcReplyPort<DaemonResult<SessionView>>,
    },
    /// Deletes a session; `keep_worktree` leaves its worktree and branch on disk.
    Delete {
        id: String,
        keep_worktree: bool,
        reply: RpcReplyPort<DaemonResult<()>>,
    },
    Children(RpcReplyPort<Vec<ChildInfo>>),
    /// The worktree of a pending creation is made (or could not be).
    WorkspaceReady(PendingCreate, Result<workspace::Prepared, WorkspaceError>),
    /// What the provider of a pending plan-only creation turned out to be
    /// (a probe of its agent, or an error if it could not be probed).
    ProviderLearned(PendingCreate, DaemonResult<bosun_driver::EnforcementReport>),
    Crash,
    Restart(RestartChild),
}

impl From<RestartChild> for SessionsMsg {
    fn from(r: RestartChild) -> Self {
        SessionsMsg::Restart(r)
    }
}

impl Actor for SessionsSupervisor {
    type Msg = SessionsMsg;
    type State = SessionsState;
    type Arguments = Context;

    /// Starts one actor per stored session before the supervisor counts as
    /// started, so the daemon reports ready only once every session answers.
    async fn pre_start(
        &self,
        myself: ActorRef<SessionsMsg>,
        ctx: Context,
    ) -> Result<SessionsState, ActorProcessingErr> {
        let config = SupervisorConfig {
            strategy: Strategy::OneForOne,
            // Many sessions: allow more restarts in all before giving up on them all.
            intensity: Intensity { max_restarts: 50, within: Duration::from_secs(30) },
            backoff: Backoff { initial: Duration::from_millis(20), max: Duration::from_secs(2) },
            on_restart: Some(ctx.restart_hook()),
        };
        let mut state = SessionsState {
            sup: Supervision::new(config),
            ctx,
            repo_locks: HashMap::new(),
            creating: Default::default(),
        };
        let records = state.ctx.store.scan::<SessionRecord>()?;
        let count = records.len();
        for record in records {
            if let Err(e) = state.start_session(&myself, record.id, None).await {
                // Without this, the sessions already started would be left unsupervised.
                state.sup.shutdown().await;
                return Err(e);
            }
        }
        tracing::info!(sessions = count, "sessions started");
        Ok(state)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<SessionsMsg>,
        state: &mut SessionsState,
    ) -> Result<(), ActorProcessingErr> {
        Self::stop_children(state).await
    }

    async fn handle(
        &self,
        myself: ActorRef<SessionsMsg>,
        msg: SessionsMsg,
        state: &mut SessionsState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SessionsMsg::Ensure { id, req, reply } => {
                if let Some(record) = state.ctx.store.get::<SessionRecord>(&id)? {
                    let _ = reply.send(Ok(record.view()));
                    return Ok(());
                }
                if state.creating.contains(&id) {
                    let _ = reply.send(Err(DaemonError::Unavailable(format!(
                        "session {id} is being created; ask again shortly"
                    ))));
                    return Ok(());
                }
                match state.validate(&req, id.clone()) {
                    Err(e) => drop(reply.send(Err(e))),
                    Ok((id, title, policy)) => {
                        state.creating.insert(id.clone());
                        let pending = PendingCreate { id, req, title, policy, reply, fresh_id: false };
                        if state.must_learn_provider(&pending) {
                            state.learn_provider(&myself, pending);
                        } else {
                            state.proceed(&myself, pending).await;
                        }
                    }
                }
            }
            SessionsMsg::Create(req, reply) => match state.validate(&req, new_id("s_")) {
                Err(e) => drop(reply.send(Err(e))),
                Ok((id, title, policy)) => {
                    let pending = PendingCreate { id, req, title, policy, reply, fresh_id: true };
                    if state.must_learn_provider(&pending) {
                        state.learn_provider(&myself, pending);
                    } else {
                        state.proceed(&myself, pending).await;
                    }
                }
            },
            SessionsMsg::ProviderLearned(pending, learned) => {
                if let Err(e) = learned {
                    // An agent that cannot start cannot act either; its turns
                    // fail with why, and its driver checks again at start.
                    tracing::warn!(provider = %pending.req.provider, error = %e, "creating a plan-only session on a provider that could not be probed");
                }
                state.proceed(&myself, pending).await;
            }
            SessionsMsg::WorkspaceReady(pending, prepared) => {
                let r = match prepared {
                    Ok(prepared) => {
                        let info = WorkspaceInfo {
                            repo: prepared.repo,
                            branch: prepared.branch,
                            worktree: prepared.worktree.to_string_lossy().into_owned(),
                            base: prepared.base,
                        };
                        let (id, req, title, policy) =
                            (pending.id.clone(), pending.req.clone(), pending.title.clone(), pending.policy);
                        state.create(&myself, id, req, title, policy, Some(info)).await
                    }
                    Err(e) => Err(ws_error(e)),
                };
                pending.answer(state, r);
            }
            SessionsMsg::Delete { id, keep_worktree, reply } => {
                let r = state.delete(&id, keep_worktree).await;
                let _ = reply.send(r);
            }
            SessionsMsg::Children(reply) => {
                let _ = reply.send(state.sup.children());
            }
            SessionsMsg::Crash => {
                if state.ctx.settings.fault_injection {
                    panic!("injected fault: sessions supervisor");
                }
            }
            SessionsMsg::Restart(req) => Self::supervise_restart(&myself, req, state).await?,
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<SessionsMsg>,
        evt: SupervisionEvent,
        state: &mut SessionsState,
    ) -> Result<(), ActorProcessingErr> {
        Self::supervise_event(&myself, evt, state).await
    }
}

impl Supervises for SessionsSupervisor {
    fn supervision(state: &mut SessionsState) -> &mut Supervision {
        &mut state.sup
    }

    fn escalation_error(_: &SessionsState, reason: &str) -> ActorProcessingErr {
        format!("sessions supervisor: {reason}").into()
    }
}

impl SessionsState {
    /// Whether a creation must wait for its provider to be probed: a
    /// plan-only session, outside a jail without network, on a provider
    /// nothing is known about yet.
    fn must_learn_provider(&self, pending: &PendingCreate) -> bool {
        let req = &pending.req;
        pending.policy == Policy::PlanOnly
            && !req.sandbox.is_offline_jail(req.network)
            && self.ctx.providers.enforcement(&req.provider).is_some_and(|e| e.enforcement == Enforcement::Unknown)
    }

    /// Probes the provider on a task (it starts the agent once) and comes
    /// back with `ProviderLearned`, so other creations go on meanwhile.
    fn learn_provider(&self, myself: &ActorRef<SessionsMsg>, pending: PendingCreate) {
        let myself = myself.clone();
        tokio::spawn(async move {
            let learned = crate::providers::learn(&pending.req.provider).await;
            let _ = myself.send_message(SessionsMsg::ProviderLearned(pending, learned));
        });
    }

    /// Goes on with a checked creation: refused if its provider cannot be
    /// held to the policy, else its worktree (on a task) or its record.
    async fn proceed(&mut self, myself: &ActorRef<SessionsMsg>, pending: PendingCreate) {
        if pending.policy == Policy::PlanOnly {
            let req = &pending.req;
            if let Some(refusal) =
                crate::providers::plan_only_refusal(&self.ctx, &req.provider, req.sandbox, req.network)
            {
                return pending.answer(self, Err(refusal));
            }
        }
        if pending.req.workspace.is_some() {
            self.prepare_workspace(myself, pending);
        } else {
            let (id, req, title, policy) =
                (pending.id.clone(), pending.req.clone(), pending.title.clone(), pending.policy);
            let r = self.create(myself, id, req, title, policy, None).await;
            pending.answer(self, r);
        }
    }

    /// Starts a session's actor; `new` is the record of a session being
    /// created, which the actor writes.
    async fn start_session(
        &mut self,
        myself: &ActorRef<SessionsMsg>,
        session_id: String,
        new: Option<SessionRecord>,
    ) -> Result<(), ActorProcessingErr> {
        let ctx = self.ctx.clone();
        let name = names::session(&session_id);
        let new = new.map(|record| Arc::new(Mutex::new(Some(record))));
        let spec =
            ChildSpec::for_actor(name, Restart::Permanent, Shutdown::Timeout(Duration::from_secs(10)), move || {
                (SessionActor, SessionArgs { ctx: ctx.clone(), session_id: session_id.clone(), new: new.clone() })
            });
        self.sup.start_child(spec, &myself.get_cell()).await?;
        Ok(())
    }

    /// Checks a creation request before anything is made: the new
    /// session's id, title and policy.
    fn validate(&self, req: &CreateSessionRequest, id: String) -> DaemonResult<(String, String, Policy)> {
        if self.ctx.providers.get(&req.provider).is_none() {
            let known: Vec<String> = self.ctx.providers.list().into_iter().map(|p| p.name).collect();
            return Err(DaemonError::BadRequest(format!(
                "unknown provider {:?}; known: {}",
                req.provider,
                known.join(", ")
            )));
        }
        if req.workspace.is_some() && req.cwd.is_some() {
            return Err(DaemonError::BadRequest("give cwd or workspace, not both: a workspace sets cwd".into()));
        }
        if req.workspace.is_none() {
            let cwd = self.cwd_of(req);
            let path = Path::new(&cwd);
            if !path.is_absolute() {
                return Err(DaemonError::BadRequest(format!("cwd must be an absolute path, got {cwd:?}")));
            }
            if !path.is_dir() {
                return Err(DaemonError::BadRequest(format!("cwd {cwd:?} is not an existing directory")));
            }
        }
        // A known agent talks to its model over the network: in a jail
        // without one, every turn would fail on its first request. (An
        // unknown agent may run a local model: it may be jailed offline.)
        if req.sandbox == Sandbox::Bwrap && !req.network && self.ctx.providers.needs_network(&req.provider) {
            return Err(DaemonError::BadRequest(format!(
                "provider {:?} is an agent that needs the network to reach its model: create its jailed session with \"network\": true",
                req.provider
            )));
        }
        if req.network && req.sandbox == Sandbox::None {
            return Err(DaemonError::BadRequest(
                "network applies to a sandbox (\"bwrap\" or \"docker\"); a session on the host already has the host's network".into(),
            ));
        }
        if req.network && req.sandbox == Sandbox::Bwrap && self.ctx.settings.loopback_trusted {
            return Err(DaemonError::BadRequest(
                "a bwrap jail with the network shares the host's loopback, where this daemon trusts every client; set [auth] require = \"always\" to open the network to jails".into(),
            ));
        }
        if req.sandbox == Sandbox::Docker && !self.ctx.providers.supports(&req.provider, Sandbox::Docker) {
            return Err(DaemonError::BadRequest(format!(
                "sandbox \"docker\" runs shell-provider sessions only (the image holds no agent); provider {:?} is not one",
                req.provider
            )));
        }
        if req.sandbox == Sandbox::Docker && self.ctx.settings.docker.is_none() {
            return Err(DaemonError::Unavailable(
                "sandbox \"docker\" needs a container engine: configure [docker] socket and image".into(),
            ));
        }
        if req.sandbox == Sandbox::Bwrap && bosun_isolation::jail::bwrap_path().is_none() {
            return Err(DaemonError::Unavailable(format!(
                "sandbox \"bwrap\" needs bubblewrap, which is not installed (no `bwrap` on PATH); install the {:?} package",
                bosun_isolation::jail::BWRAP_PACKAGE
            )));
        }
        let title = req.title.clone().unwrap_or_default();
        if title.len() > MAX_TITLE_BYTES {
            return Err(DaemonError::BadRequest(format!("title must be at most {MAX_TITLE_BYTES} bytes")));
        }
        let title = if title.trim().is_empty() { format!("Session {}", &id[2..8]) } else { title };
        Ok((id, title, req.policy.unwrap_or(Policy::PlanOnly)))
    }

    fn cwd_of(&self, req: &CreateSessionRequest) -> String {
        match &req.cwd {
            Some(cwd) => cwd.clone(),
            None => self.ctx.settings.default_cwd.to_string_lossy().into_owned(),
        }
    }

    /// Makes the worktree on a task and comes back with `WorkspaceReady`.
    /// The worktree is made before the record, so a session never points at
    /// a worktree that is not there; creations on the same repository take
    /// turns on its bare clone.
    fn prepare_workspace(&mut self, myself: &ActorRef<SessionsMsg>, pending: PendingCreate) {
        let Some(ws) = pending.req.workspace.clone() else { return };
        let lock = self.repo_locks.entry(ws.repo.clone()).or_default().clone();
        let data_dir = self.ctx.settings.data_dir.clone();
        let myself = myself.clone();
        tokio::spawn(async move {
            let prepared = {
                let _turn = lock.lock().await;
                if !pending.fresh_id {
                    // A killed daemon may have made this worktree and never
                    // recorded its session: nobody else has it, so start over.
                    if let Err(e) = workspace::remove(&data_dir, &ws.repo, &pending.id).await {
                        tracing::debug!(session_id = %pending.id, error = %e, "no leftover worktree to remove");
                    }
                }
                workspace::prepare(&data_dir, &ws.repo, &ws.branch, &pending.id).await
            };
            if let Err(ractor::MessagingErr::SendErr(SessionsMsg::WorkspaceReady(pending, Ok(prepared)))) =
                myself.send_message(SessionsMsg::WorkspaceReady(pending, prepared))
            {
                // This supervisor went down meanwhile: nobody will record the
                // session, so the worktree would be an orphan.
                if let Err(e) = workspace::remove(&data_dir, &prepared.repo, &pending.id).await {
                    tracing::warn!(session_id = %pending.id, error = %e, "could not remove an orphaned worktree");
                }
            }
        });
    }

    /// Records a checked session (with its worktree, if any) and starts its actor.
    async fn create(
        &mut self,
        myself: &ActorRef<SessionsMsg>,
        id: String,
        req: CreateSessionRequest,
        title: String,
        policy: Policy,
        workspace: Option<WorkspaceInfo>,
    ) -> DaemonResult<SessionView> {
        let cwd = self.cwd_of(&req);
        let cwd = workspace.as_ref().map(|w| w.worktree.clone()).unwrap_or(cwd);
        let mut record = SessionRecord::new(id.clone(), req.provider, cwd, title, policy, bosun_proto::now_ts());
        record.workspace = workspace;
        record.sandbox = req.sandbox;
        record.network = req.network;
        let view = record.view();
        let provider = record.provider.clone();
        // The session actor writes its record as it first starts: it is the
        // record's one writer.
        if let Err(e) = self.start_session(myself, id.clone(), Some(record)).await {
            if let Some(ws) = &view.workspace {
                if let Err(e) = workspace::remove(&self.ctx.settings.data_dir, &ws.repo, &id).await {
                    tracing::warn!(session_id = %id, error = %e, "could not remove the worktree of a failed creation");
                }
            }
            return Err(DaemonError::Internal(format!("session actor could not start: {e}")));
        }
        tracing::info!(session_id = %id, provider = %provider, "session created");
        Ok(view)
    }

    async fn delete(&mut self, id: &str, keep_worktree: bool) -> DaemonResult<()> {
        let name = names::session(id);
        let record = self.ctx.store.get::<SessionRecord>(id)?;
        if self.sup.child(&name).is_none() && record.is_none() {
            return Err(DaemonError::NotFound(format!("session {id} not found")));
        }
        crate::route::call::<SessionMsg, _, _>(&name, SessionMsg::Close).await.and_then(|r| r)?;
        self.sup
            .terminate_child(&name)
            .await
            .map_err(|e| DaemonError::Internal(format!("stopping session {id}: {e}")))?;
        // After the session is closed and its agent stopped, so nothing is
        // still writing in the worktree as it goes.
        if let Some(ws) = record.and_then(|r| r.workspace).filter(|_| !keep_worktree) {
            workspace::remove(&self.ctx.settings.data_dir, &ws.repo, id).await.map_err(|e| {
                DaemonError::Internal(format!("session {id} was deleted, but its worktree was not removed: {e}"))
            })?;
        }
        Ok(())
    }
}

/// A workspace that cannot be made is the client's mistake when the repo or
/// branch is wrong; git cannot tell us which, so its message is passed on.
fn ws_error(e: WorkspaceError) -> DaemonError {
    match e {
        WorkspaceError::Io { .. } => DaemonError::Internal(format!("workspace: {e}")),
        _ => DaemonError::BadRequest(format!("workspace: {e}")),
    }
}
