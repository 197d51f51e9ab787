//! Terminals (docs/TERMINALS.md): the terminals supervisor keeps the
//! capability map (the one writer of `TerminalRecord`s and consents) and
//! one binding actor per binding that is open (one_for_one: a binding whose
//! actor crashes is restarted alone, and finds its terminal again).

pub mod binding;
mod live;
pub mod scrollback;

pub use live::{LiveTerminal, LiveTerminals, OutputChunk};

use crate::context::{new_id, Context};
use crate::error::{DaemonError, DaemonResult};
use crate::names;
use binding::{BindingActor, BindingArgs, NewBinding};
use bosun_isolation::Jail;
use bosun_proto::{
    BindingState, BindingView, CapabilityUpdate, EventData, Sandbox, SpawnTerminalRequest, TerminalCapabilities,
    TerminalKind, TerminalSize, TerminalView, Topic,
};
use bosun_pty::{FlowGate, Pty, PtyCommand, PtySize, Watermarks};
use bosun_state::{Batch, BindingRecord, Owner, SessionRecord, TerminalRecord};
use bosun_supervision::{
    Backoff, ChildInfo, ChildSpec, Intensity, Restart, RestartChild, Shutdown, Strategy, Supervises, Supervision,
    SupervisorConfig,
};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Output waiting between a PTY's reader and its pump, in reads (each at
/// most 64 KiB, mostly about 4 KiB): a full queue holds the reader back.
const OUTPUT_QUEUE: usize = 64;
/// How far the most advanced client may fall behind before the PTY is no
/// longer read; above the most one commit carries, so flow control never
/// waits on the store alone.
const WATERMARKS: Watermarks = Watermarks { high: 4 * 1024 * 1024, low: 1024 * 1024 };

/// The topic a binding's events go on: its session's, or `system`.
pub fn topic_of(session_id: Option<&str>) -> Topic {
    match session_id {
        Some(id) => Topic::session(id),
        None => Topic::system(),
    }
}

pub struct TerminalsSupervisor;

pub struct TerminalsState {
    ctx: Context,
    sup: Supervision,
}

pub enum TerminalsMsg {
    Spawn(SpawnTerminalRequest, RpcReplyPort<DaemonResult<BindingView>>),
    /// Looks at every terminal again; the map as it is after.
    Discover(RpcReplyPort<DaemonResult<Vec<TerminalView>>>),
    Consent {
        terminal: TerminalKind,
        grant: bool,
        reply: RpcReplyPort<DaemonResult<TerminalView>>,
    },
    Children(RpcReplyPort<Vec<ChildInfo>>),
    Crash,
    Restart(RestartChild),
}

impl From<RestartChild> for TerminalsMsg {
    fn from(r: RestartChild) -> Self {
        TerminalsMsg::Restart(r)
    }
}

impl Actor for TerminalsSupervisor {
    type Msg = TerminalsMsg;
    type State = TerminalsState;
    type Arguments = Context;

    async fn pre_start(
        &self,
        myself: ActorRef<TerminalsMsg>,
        ctx: Context,
    ) -> Result<TerminalsState, ActorProcessingErr> {
        let config = SupervisorConfig {
            strategy: Strategy::OneForOne,
            intensity: Intensity { max_restarts: 50, within: Duration::from_secs(30) },
            backoff: Backoff { initial: Duration::from_millis(20), max: Duration::from_secs(2) },
            on_restart: Some(ctx.restart_hook()),
        };
        let mut state = TerminalsState { sup: Supervision::new(config), ctx };
        state.discover().await?;
        let open: Vec<BindingRecord> =
            state.ctx.store.scan::<BindingRecord>()?.into_iter().filter(|b| b.state == BindingState::Open).collect();
        let count = open.len();
        for record in open {
            if let Err(e) = state.start_binding(&myself, record.id, None).await {
                state.sup.shutdown().await;
                return Err(e);
            }
        }
        tracing::info!(bindings = count, "terminal bindings resumed");
        Ok(state)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<TerminalsMsg>,
        state: &mut TerminalsState,
    ) -> Result<(), ActorProcessingErr> {
        Self::stop_children(state).await
    }

    async fn handle(
        &self,
        myself: ActorRef<TerminalsMsg>,
        msg: TerminalsMsg,
        state: &mut TerminalsState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            TerminalsMsg::Spawn(req, reply) => {
                let r = state.spawn(&myself, req).await;
                let _ = reply.send(r);
            }
            TerminalsMsg::Discover(reply) => {
                let r = state.discover().await;
                let _ = reply.send(r);
            }
            TerminalsMsg::Consent { terminal, grant, reply } => {
                let _ = reply.send(state.consent(terminal, grant).await);
            }
            TerminalsMsg::Children(reply) => {
                let _ = reply.send(state.sup.children());
            }
            TerminalsMsg::Crash => {
                if state.ctx.settings.fault_injection {
                    panic!("injected fault: terminals supervisor");
                }
            }
            TerminalsMsg::Restart(req) => Self::supervise_restart(&myself, req, state).await?,
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<TerminalsMsg>,
        evt: SupervisionEvent,
        state: &mut TerminalsState,
    ) -> Result<(), ActorProcessingErr> {
        Self::supervise_event(&myself, evt, state).await
    }
}

impl Supervises for TerminalsSupervisor {
    fn supervision(state: &mut TerminalsState) -> &mut Supervision {
        &mut state.sup
    }

    fn escalation_error(_: &TerminalsState, reason: &str) -> ActorProcessingErr {
        format!("terminals supervisor: {reason}").into()
    }
}

/// When process `pid` started, in clock ticks since boot (field 22 of
/// /proc/PID/stat), so a pid the kernel gave to another process since is
/// never taken for ours.
pub fn process_started(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

/// The daemon's own PTY terminals, as the capability map shows them.
fn pty_entry() -> TerminalRecord {
    TerminalRecord {
        terminal: TerminalKind::Pty,
        installed: true,
        running: true,
        reachable: true,
        version: Some(format!("bosun {}", env!("CARGO_PKG_VERSION"))),
        capabilities: TerminalCapabilities {
            spawn: true,
            split: false,
            focus: false,
            send_text: true,
            read_text: true,
            clipboard_read: false,
            clipboard_write: false,
            cwd_sync: false,
            bracketed_paste: true,
            max_clipboard_kb: 0,
        },
        requires_opt_in: false,
        consent_granted_at: None,
        notes: vec!["the daemon's own pseudo-terminals, shown in the browser at /ws/terminal/{id}".into()],
        risk_flags: vec![],
        discovered_at: bosun_proto::now_ts(),
    }
}

impl TerminalsState {
    /// Writes what discovery found where it differs from the stored map,
    /// each change with its `termbridge:capability_update`.
    async fn discover(&mut self) -> DaemonResult<Vec<TerminalView>> {
        let found = vec![pty_entry()];
        let mut batch = Batch::by(Owner::Terminals);
        let mut map = Vec::new();
        for mut entry in found {
            let stored = self.ctx.store.get::<TerminalRecord>(entry.terminal.as_str())?;
            entry.consent_granted_at = stored.as_ref().and_then(|s| s.consent_granted_at.clone());
            if stored.as_ref().is_none_or(|s| !s.same_facts(&entry)) {
                batch.put(&entry)?;
                batch.event(
                    EventData::CapabilityUpdate(CapabilityUpdate { terminal: entry.view() })
                        .into_event(Topic::system()),
                );
            }
            map.push(entry.view());
        }
        self.ctx.store.commit(batch).await?;
        Ok(map)
    }

    async fn consent(&mut self, terminal: TerminalKind, grant: bool) -> DaemonResult<TerminalView> {
        let mut record = self
            .ctx
            .store
            .get::<TerminalRecord>(terminal.as_str())?
            .ok_or_else(|| DaemonError::NotFound(format!("terminal {terminal} was not discovered")))?;
        let granted = record.consent_granted_at.is_some();
        if granted == grant {
            return Ok(record.view());
        }
        record.consent_granted_at = grant.then(bosun_proto::now_ts);
        let mut batch = Batch::by(Owner::Terminals);
        batch.put(&record)?;
        batch.event(
            EventData::CapabilityUpdate(CapabilityUpdate { terminal: record.view() }).into_event(Topic::system()),
        );
        self.ctx.store.commit(batch).await?;
        Ok(record.view())
    }

    async fn spawn(&mut self, myself: &ActorRef<TerminalsMsg>, req: SpawnTerminalRequest) -> DaemonResult<BindingView> {
        let terminal = req.terminal.unwrap_or(TerminalKind::Pty);
        if terminal != TerminalKind::Pty {
            return Err(DaemonError::NotSupported(format!("terminal {terminal} cannot be driven by this daemon")));
        }
        let plan = PtyPlan::new(&self.ctx, &req)?;
        let id = new_id("b_");
        let gate = Arc::new(FlowGate::new(WATERMARKS, 0));
        let (tx, output) = tokio::sync::mpsc::channel(OUTPUT_QUEUE);
        let pty = Pty::spawn(plan.command.clone(), gate, tx).map_err(|e| DaemonError::BadRequest(e.to_string()))?;
        let now = bosun_proto::now_ts();
        let record = BindingRecord {
            id: id.clone(),
            terminal,
            session_id: req.session_id.as_ref().map(|s| s.to_string()),
            endpoint: format!("pty://{id}"),
            pane: id.clone(),
            pid: pty.pid(),
            pid_started: pty.pid().and_then(process_started),
            labels: req.labels.clone(),
            command: req.command.clone(),
            cwd: plan.cwd.display().to_string(),
            state: BindingState::Open,
            exit: None,
            reason: None,
            jailed: plan.jailed,
            size: Some(TerminalSize { cols: plan.command.size.cols, rows: plan.command.size.rows }),
            created_at: now.clone(),
            updated_at: now,
        };
        let view = record.view(Some(bosun_proto::OutputRange { start: 0, end: 0 }));
        let live = Arc::new(LiveTerminal::new(pty, 0));
        let new = NewBinding { record, live, output };
        // If the actor cannot start, the terminal it would have owned is
        // dropped with `new`, which hangs it up.
        self.start_binding(myself, id, Some(new))
            .await
            .map_err(|e| DaemonError::Internal(format!("the terminal's actor could not start: {e}")))?;
        Ok(view)
    }

    async fn start_binding(
        &mut self,
        myself: &ActorRef<TerminalsMsg>,
        binding_id: String,
        new: Option<NewBinding>,
    ) -> Result<(), ActorProcessingErr> {
        let ctx = self.ctx.clone();
        let new = new.map(|n| Arc::new(Mutex::new(Some(n))));
        // Transient: a binding that ends stops its actor for good; one that
        // crashes is restarted and finds its terminal again.
        let spec = ChildSpec::for_actor(
            names::binding(&binding_id),
            Restart::Transient,
            Shutdown::Timeout(Duration::from_secs(5)),
            move || (BindingActor, BindingArgs { ctx: ctx.clone(), binding_id: binding_id.clone(), new: new.clone() }),
        );
        self.sup.start_child(spec, &myself.get_cell()).await?;
        Ok(())
    }
}

/// How a `pty` terminal is started: where, in what, with what.
struct PtyPlan {
    command: PtyCommand,
    cwd: PathBuf,
    jailed: bool,
}

impl PtyPlan {
    fn new(ctx: &Context, req: &SpawnTerminalRequest) -> DaemonResult<PtyPlan> {
        let size = PtySize::new(req.cols.unwrap_or(80), req.rows.unwrap_or(24))
            .map_err(|e| DaemonError::BadRequest(e.to_string()))?;
        check_env(&req.env)?;
        if req.placement.is_some() || req.split_of.is_some() {
            return Err(DaemonError::NotSupported(
                "a pty terminal has no windows to place it in; placement and split_of are for terminal emulators"
                    .into(),
            ));
        }
        if req.command.first().is_some_and(|p| p.is_empty()) || req.command.iter().any(|a| a.contains('\0')) {
            return Err(DaemonError::BadRequest(
                "command: the program must be named, and no argument may hold NUL".into(),
            ));
        }
        let session = match &req.session_id {
            Some(id) => Some(
                ctx.store
                    .get::<SessionRecord>(id.as_str())?
                    .ok_or_else(|| DaemonError::NotFound(format!("session {id} not found")))?,
            ),
            None => None,
        };
        if session.as_ref().is_some_and(|s| s.archived) {
            return Err(DaemonError::Conflict("the session is archived".into()));
        }
        let base = session.as_ref().map(|s| PathBuf::from(&s.cwd)).unwrap_or_else(|| ctx.settings.default_cwd.clone());
        let cwd = match &req.cwd {
            Some(dir) => {
                let dir = PathBuf::from(dir);
                if !dir.is_absolute() {
                    return Err(DaemonError::BadRequest(format!("cwd must be absolute, got {:?}", req.cwd)));
                }
                dir
            }
            None => base.clone(),
        };
        if !cwd.is_dir() {
            return Err(DaemonError::BadRequest(format!("cwd {} is not a directory", cwd.display())));
        }
        if session.is_some() && !cwd.starts_with(&base) {
            return Err(DaemonError::BadRequest(format!(
                "a terminal of the session runs in its directory {}; {} is outside it",
                base.display(),
                cwd.display()
            )));
        }
        let (program, args): (OsString, Vec<OsString>) = match req.command.split_first() {
            Some((program, args)) => (program.into(), args.iter().map(OsString::from).collect()),
            None => (user_shell().into_os_string(), Vec::new()),
        };
        let mut env: Vec<(OsString, OsString)> =
            vec![("TERM".into(), "xterm-256color".into()), ("COLORTERM".into(), "truecolor".into())];
        env.extend(req.env.iter().map(|(k, v)| (OsString::from(k), OsString::from(v))));
        let sandbox = session.as_ref().map(|s| s.sandbox).unwrap_or_default();
        let command = match sandbox {
            Sandbox::None => PtyCommand { program, args, cwd: cwd.clone(), clear_env: false, env, size },
            Sandbox::Bwrap => {
                let session =
                    session.as_ref().ok_or_else(|| DaemonError::Internal("a jail without a session".into()))?;
                // Fail closed, as the session's agent does: never on the host.
                let jail = Jail::bwrap(&ctx.settings.data_dir).ok_or_else(|| {
                    DaemonError::NotSupported(format!(
                        "session {} is jailed, and bubblewrap (bwrap) is not on PATH",
                        session.id
                    ))
                })?;
                let withheld: Vec<String> = ctx.settings.git.token_env.iter().cloned().collect();
                let jail = jail.with_network(session.network).withholding(withheld);
                let mut argv = jail.terminal_command(&program, &cwd);
                argv.extend(args);
                let mut jailed_env = Jail::basic_env();
                jailed_env.extend(env);
                let program = argv.remove(0);
                PtyCommand { program, args: argv, cwd: cwd.clone(), clear_env: true, env: jailed_env, size }
            }
            Sandbox::Docker => {
                return Err(DaemonError::NotSupported(
                    "a pty terminal in a container session is not supported yet (its session runs in Docker)".into(),
                ))
            }
        };
        Ok(PtyPlan { command, cwd, jailed: sandbox == Sandbox::Bwrap })
    }
}

fn check_env(env: &BTreeMap<String, String>) -> DaemonResult<()> {
    for (k, v) in env {
        if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
            return Err(DaemonError::BadRequest(format!("env: {k:?} is not a valid variable (no '=', no NUL)")));
        }
    }
    Ok(())
}

/// `$SHELL` if it is a program, else bash, else sh.
fn user_shell() -> PathBuf {
    std::env::var_os("SHELL")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute() && p.is_file())
        .or_else(|| ["/bin/bash", "/bin/sh"].iter().map(PathBuf::from).find(|p| Path::new(p).is_file()))
        .unwrap_or_else(|| PathBuf::from("/bin/sh"))
}
