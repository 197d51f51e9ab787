//! One terminal binding's actor: the one writer of its binding record and,
//! for a `pty` terminal, of its scrollback. It commits the output its pump
//! hands it, then publishes it; commits the terminal's end after the last
//! byte; and carries out what clients ask of the terminal.
//!
//! A `pty` child lives in the shared [`LiveTerminals`], not in this actor:
//! a restarted actor finds it there by id and proves it is the same one (its
//! pid) before acting on it; when it is not there (the daemon was restarted,
//! and the child ended with it) the binding is `lost`. A pane of a terminal
//! emulator is proven the same by asking the terminal for it, and its
//! process, before every action and every few seconds: a pane that is gone
//! or shows another process is never acted on, and the binding is `lost`.

use super::live::{LiveTerminal, LiveTerminals, OutputChunk};
use super::scrollback::Scrollback;
use super::topic_of;
use crate::context::Context;
use crate::error::{DaemonError, DaemonResult};
use crate::names;
use bosun_proto::{
    BindingLost, BindingState, BindingView, EventData, ExitView, OutputRange, ResizeRequest, SendTextRequest,
    TerminalAction, TerminalBinding, TerminalExit, TerminalKind, TerminalSize, TerminalText,
};
use bosun_pty::{PtyEvent, PtySize};
use bosun_state::{Batch, BindingRecord, Owner};
use bosun_termbridge::osc::{OscParser, TerminalEvent as OscEvent};
use bosun_termbridge::{PaneId, SendMode, TerminalControl};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// How often an emulator's pane is looked for while nothing is done to it.
const CHECK_EVERY: Duration = Duration::from_secs(2);
/// The longest OSC sequence looked at for a cwd (a path is at most 4 KiB).
const MAX_OSC: usize = 8 * 1024;

/// The most output the pump hands over in one call: what came while the
/// previous commit was being flushed shares the next one.
const BATCH_MAX: usize = 1024 * 1024;

pub struct BindingActor;

/// A binding not stored yet: its record, and its terminal already running
/// (for `pty`, the child and its output; for an emulator, the pane).
pub struct NewBinding {
    pub record: BindingRecord,
    pub pty: Option<(Arc<LiveTerminal>, mpsc::Receiver<PtyEvent>)>,
}

/// What a client asks of a binding, once the terminals actor has judged it.
#[derive(Debug, Clone)]
pub enum TerminalOp {
    Send(SendTextRequest),
    Focus,
    Read,
    Close,
    SetCwd(String),
    /// Put the text on the clipboard of whoever looks at the terminal.
    ClipboardWrite(String),
    /// The clipboard the terminal keeps (tmux's paste buffer).
    ClipboardRead,
}

impl TerminalOp {
    pub fn name(&self) -> &'static str {
        match self {
            TerminalOp::Send(_) => "send_text",
            TerminalOp::Focus => "focus",
            TerminalOp::Read => "read_text",
            TerminalOp::Close => "close",
            TerminalOp::SetCwd(_) => "cwd",
            TerminalOp::ClipboardWrite(_) => "clipboard_write",
            TerminalOp::ClipboardRead => "clipboard_read",
        }
    }
}

/// What an action came to.
// One per request, moved once: boxing would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Acted {
    Done(BindingView),
    Text(TerminalText),
    Clipboard(bosun_proto::ClipboardContent),
}

pub struct BindingArgs {
    pub ctx: Context,
    pub binding_id: String,
    /// Taken by the first start only.
    pub new: Option<Arc<Mutex<Option<NewBinding>>>>,
}

pub enum BindingMsg {
    /// Output from `offset`, from the pump: answered once durable.
    Output {
        offset: u64,
        bytes: Arc<Vec<u8>>,
        reply: RpcReplyPort<()>,
    },
    /// The child exited and every byte before `end` was handed over.
    Exited {
        status: bosun_pty::ExitStatus,
        end: u64,
        reply: RpcReplyPort<()>,
    },
    Resize(ResizeRequest, RpcReplyPort<DaemonResult<BindingView>>),
    /// Keys typed at a `pty` terminal by the person at it (its socket).
    Input(Vec<u8>, RpcReplyPort<DaemonResult<()>>),
    /// An action the terminals actor has allowed; `decision` is what
    /// allowed it (`allowed`, `approved`, `full-access`), for the record.
    Act {
        op: TerminalOp,
        decision: String,
        reply: RpcReplyPort<DaemonResult<Acted>>,
    },
    /// Is the emulator's pane still there, with the same process?
    Check,
    Crash,
}

pub struct Binding {
    ctx: Context,
    record: BindingRecord,
    live: Option<Arc<LiveTerminal>>,
    scrollback: Scrollback,
    /// Close asks answered once a `pty` terminal's end is committed.
    closing: Vec<RpcReplyPort<DaemonResult<Acted>>>,
    /// Whether the app in the terminal has turned bracketed paste on.
    bracketed_paste: bool,
    /// An emulator's adapter, for a binding of one.
    control: Option<Arc<dyn TerminalControl>>,
    /// OSC 7 and 9;9 in a `pty` terminal's output move its cwd.
    osc: OscParser,
    checker: Option<tokio::task::JoinHandle<()>>,
    _alive: crate::metrics::Alive,
}

impl Actor for BindingActor {
    type Msg = BindingMsg;
    type State = Binding;
    type Arguments = BindingArgs;

    async fn pre_start(&self, _myself: ActorRef<BindingMsg>, args: BindingArgs) -> Result<Binding, ActorProcessingErr> {
        let ctx = args.ctx;
        let retention = ctx.settings.termbridge.scrollback_kb.saturating_mul(1024);
        let new = args.new.and_then(|n| n.lock().unwrap_or_else(|p| p.into_inner()).take());
        if let Some(NewBinding { record, pty }) = new {
            let mut batch = Batch::by(Owner::Binding);
            batch.put(&record)?;
            let output = pty.is_some().then_some(OutputRange { start: 0, end: 0 });
            batch.event(
                EventData::TerminalBinding(TerminalBinding { binding: record.view(output) })
                    .into_event(topic_of(record.session_id.as_deref())),
            );
            // Nothing of the terminal is shown before its binding is stored.
            ctx.store.commit(batch).await?;
            let live = match pty {
                Some((live, output)) => {
                    ctx.terminals.insert(&record.id, live.clone());
                    tokio::spawn(pump(ctx.terminals.clone(), record.id.clone(), output, 0));
                    Some(live)
                }
                None => None,
            };
            let control = super::bridge::control(&ctx, record.terminal);
            return Ok(Binding {
                _alive: crate::metrics::Alive::new(&ctx.metrics.terminals),
                scrollback: Scrollback::empty(&record.id, retention),
                ctx,
                record,
                live,
                closing: Vec::new(),
                bracketed_paste: false,
                control,
                osc: OscParser::new(MAX_OSC),
                checker: None,
            });
        }
        let record = ctx
            .store
            .get::<BindingRecord>(&args.binding_id)?
            .ok_or_else(|| format!("binding {} is not stored", args.binding_id))?;
        let scrollback = Scrollback::load(&ctx.store, &record.id, retention)?;
        // The same child only if the same process: a pid is all a PTY child
        // has to prove itself by.
        let live = ctx.terminals.get(&record.id).filter(|l| l.pty.pid() == record.pid);
        let control = super::bridge::control(&ctx, record.terminal);
        let mut state = Binding {
            _alive: crate::metrics::Alive::new(&ctx.metrics.terminals),
            ctx,
            record,
            live,
            scrollback,
            closing: Vec::new(),
            bracketed_paste: false,
            control,
            osc: OscParser::new(MAX_OSC),
            checker: None,
        };
        if state.record.state == BindingState::Open {
            if state.record.terminal == TerminalKind::Pty && state.live.is_none() {
                state.lose("the daemon restarted, and the terminal's process ended with it").await?;
            } else if state.control.is_some() {
                // Restarted: the pane is acted on again only once it is proven the same.
                if let Err(why) = state.prove_pane().await {
                    state.lose(&why).await?;
                }
            }
        }
        Ok(state)
    }

    async fn post_start(&self, myself: ActorRef<BindingMsg>, state: &mut Binding) -> Result<(), ActorProcessingErr> {
        if state.record.state != BindingState::Open {
            myself.stop(None);
        } else if state.control.is_some() {
            state.checker = Some(myself.send_interval(CHECK_EVERY, || BindingMsg::Check));
        }
        Ok(())
    }

    async fn post_stop(&self, _myself: ActorRef<BindingMsg>, state: &mut Binding) -> Result<(), ActorProcessingErr> {
        if let Some(checker) = state.checker.take() {
            checker.abort();
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<BindingMsg>,
        msg: BindingMsg,
        state: &mut Binding,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            BindingMsg::Output { offset, bytes, reply } => {
                state.output(offset, &bytes).await?;
                let _ = reply.send(());
            }
            BindingMsg::Exited { status, end, reply } => {
                state.exited(status, end).await?;
                let _ = reply.send(());
                myself.stop(None);
            }
            BindingMsg::Resize(req, reply) => {
                let _ = reply.send(state.resize(req).await);
            }
            BindingMsg::Input(bytes, reply) => {
                let r = match state.live.clone() {
                    Some(live) => live.pty.write(bytes).await.map_err(|e| DaemonError::Conflict(e.to_string())),
                    None => {
                        Err(DaemonError::Conflict(format!("terminal {} is {}", state.record.id, state.record.state)))
                    }
                };
                let _ = reply.send(r);
            }
            BindingMsg::Act { op, decision, reply } => {
                let started = Instant::now();
                let name = op.name();
                let detail = op_detail(&op);
                match state.act(op, reply).await {
                    // A pty's close is answered once its end is committed.
                    Ok(None) => {}
                    Ok(Some((reply, acted))) => {
                        state.record_action(name, &decision, started, &detail).await;
                        let _ = reply.send(Ok(acted));
                    }
                    Err((reply, e)) => {
                        let _ = reply.send(Err(e));
                    }
                }
                if state.record.state != BindingState::Open && state.live.is_none() {
                    myself.stop(None);
                }
            }
            BindingMsg::Check => {
                if state.record.state == BindingState::Open && state.control.is_some() {
                    if let Err(why) = state.prove_pane().await {
                        state.lose(&why).await?;
                        myself.stop(None);
                    }
                }
            }
            BindingMsg::Crash => {
                if state.ctx.settings.fault_injection {
                    panic!("injected fault: binding {}", state.record.id);
                }
            }
        }
        Ok(())
    }
}

impl Binding {
    pub fn view(&self) -> BindingView {
        let output = (self.record.terminal == TerminalKind::Pty).then(|| self.scrollback.range());
        self.record.view(output)
    }

    async fn output(&mut self, offset: u64, bytes: &[u8]) -> Result<(), ActorProcessingErr> {
        let mut batch = Batch::by(Owner::Binding);
        let Some(mut appended) = self.scrollback.append(offset, bytes, &mut batch)? else {
            return Ok(());
        };
        self.ctx.store.commit(batch).await?;
        self.scrollback.committed(&mut appended);
        // The last switch and the last cwd in the batch are the ones in force.
        let mut cwd = None;
        for event in self.osc.feed(&appended.bytes) {
            match event {
                OscEvent::BracketedPaste(on) => self.bracketed_paste = on,
                OscEvent::Cwd { path, .. } => cwd = Some(path),
                OscEvent::ClipboardWrite { .. } | OscEvent::ClipboardQuery { .. } => {}
            }
        }
        if let Some(live) = &self.live {
            live.publish(OutputChunk { offset: appended.offset, bytes: Arc::new(appended.bytes) });
        }
        if let Some(path) = cwd {
            if let Err(e) = self.set_cwd(&path).await {
                tracing::debug!(binding = %self.record.id, error = %e, "a cwd the terminal reported was not taken");
            }
        }
        Ok(())
    }

    /// The binding's cwd, as its shell reported it (OSC 7) or a client set it.
    pub(super) async fn set_cwd(&mut self, path: &str) -> DaemonResult<()> {
        let path = bosun_termbridge::cwd::validate_cwd(path.as_bytes())
            .map_err(|e| DaemonError::BadRequest(format!("cwd: {e}")))?;
        let path = path.display().to_string();
        if path == self.record.cwd {
            return Ok(());
        }
        self.record.cwd = path;
        self.record.updated_at = bosun_proto::now_ts();
        let mut batch = Batch::by(Owner::Binding);
        batch.put(&self.record)?;
        batch.event(
            EventData::TerminalBinding(TerminalBinding { binding: self.view() })
                .into_event(topic_of(self.record.session_id.as_deref())),
        );
        self.ctx.store.commit(batch).await?;
        Ok(())
    }

    /// Proves the emulator's pane is still the one bound: there, with the
    /// process it had. The reason it is not, otherwise.
    async fn prove_pane(&self) -> Result<(), String> {
        let Some(control) = &self.control else { return Ok(()) };
        let pane = PaneId::new(self.record.pane.clone());
        match control.describe(&pane).await {
            Ok(info) => match (self.record.pid, info.pid) {
                (Some(bound), Some(now)) if bound != now => {
                    Err(format!("pane {} now runs another process (pid {now}, bound to {bound})", self.record.pane))
                }
                _ => Ok(()),
            },
            Err(bosun_termbridge::TermError::PaneGone) => Err(format!("pane {} is gone", self.record.pane)),
            // The terminal did not answer: nothing is proven either way, and
            // nothing is done to the pane until it does.
            Err(e) => {
                tracing::debug!(binding = %self.record.id, error = %e, "the terminal did not answer about its pane");
                Ok(())
            }
        }
    }

    /// Carries out `op`. `Ok(None)`: the reply is kept (a pty's close).
    #[allow(clippy::type_complexity)]
    async fn act(
        &mut self,
        op: TerminalOp,
        reply: RpcReplyPort<DaemonResult<Acted>>,
    ) -> Result<Option<(RpcReplyPort<DaemonResult<Acted>>, Acted)>, (RpcReplyPort<DaemonResult<Acted>>, DaemonError)>
    {
        if self.record.state != BindingState::Open && !matches!(op, TerminalOp::Read) {
            if matches!(op, TerminalOp::Close) {
                return Ok(Some((reply, Acted::Done(self.view()))));
            }
            let e = DaemonError::Conflict(format!("terminal binding {} is {}", self.record.id, self.record.state));
            return Err((reply, e));
        }
        if let Some(control) = self.control.clone() {
            if self.record.state == BindingState::Open {
                if let Err(why) = self.prove_pane().await {
                    if let Err(e) = self.lose(&why).await {
                        return Err((reply, DaemonError::Internal(e.to_string())));
                    }
                    return Err((reply, DaemonError::Conflict(format!("terminal binding lost: {why}"))));
                }
            }
            return match self.act_on_pane(control, op).await {
                Ok(acted) => Ok(Some((reply, acted))),
                Err(e) => Err((reply, e)),
            };
        }
        match op {
            TerminalOp::Close => match self.live.clone() {
                Some(live) => {
                    live.pty.hang_up();
                    self.closing.push(reply);
                    Ok(None)
                }
                None => Ok(Some((reply, Acted::Done(self.view())))),
            },
            other => match self.act_on_pty(other).await {
                Ok(acted) => Ok(Some((reply, acted))),
                Err(e) => Err((reply, e)),
            },
        }
    }

    async fn act_on_pty(&mut self, op: TerminalOp) -> DaemonResult<Acted> {
        match op {
            TerminalOp::Send(req) => {
                let live = self.live.clone().ok_or_else(|| DaemonError::Conflict("the terminal has ended".into()))?;
                let bytes = send_bytes(&req, self.bracketed_paste);
                live.pty.write(bytes).await.map_err(|e| DaemonError::Conflict(e.to_string()))?;
                Ok(Acted::Done(self.view()))
            }
            TerminalOp::Read => Err(DaemonError::Internal("a pty's text is read from the store".into())),
            // A request that makes no sense for this kind of terminal (the
            // map says `focus: false`), not a missing terminal: 400, as a
            // pty's placement is.
            TerminalOp::Focus => {
                Err(DaemonError::BadRequest("a pty terminal has no window to focus; open it in the browser".into()))
            }
            TerminalOp::SetCwd(path) => {
                self.set_cwd(&path).await?;
                Ok(Acted::Done(self.view()))
            }
            TerminalOp::ClipboardWrite(text) => {
                let live = self.live.clone().ok_or_else(|| DaemonError::Conflict("the terminal has ended".into()))?;
                let limit = self.ctx.settings.termbridge.max_clipboard_kb as usize * 1024;
                check_clipboard_size(&text, limit)?;
                let sequences = bosun_termbridge::clipboard::osc52_sequences("c", text.as_bytes());
                let count = sequences.len();
                let screens = live.send_clipboard(sequences.concat());
                if screens == 0 {
                    return Err(DaemonError::Conflict(format!(
                        "no screen shows terminal {} now: OSC 52 goes to the terminal showing it (its Terminal tab \
                         in the app, `bosun term attach`)",
                        self.record.id
                    )));
                }
                Ok(Acted::Clipboard(bosun_proto::ClipboardContent {
                    text,
                    via: "osc52".into(),
                    sequences: Some(count),
                    screens: Some(screens),
                }))
            }
            TerminalOp::ClipboardRead => Err(DaemonError::NotSupported(
                "a pty terminal's clipboard is its viewer's own, which the daemon cannot read; without binding_id \
                 the OS clipboard is read"
                    .into(),
            )),
            TerminalOp::Close => unreachable_close(),
        }
    }

    async fn act_on_pane(&mut self, control: Arc<dyn TerminalControl>, op: TerminalOp) -> DaemonResult<Acted> {
        let kind = self.record.terminal;
        let pane = PaneId::new(self.record.pane.clone());
        let failed = |e| super::bridge::error(kind, e);
        match op {
            TerminalOp::Send(req) => {
                control
                    .send_text(&pane, &req.text, SendMode { paste: req.paste, enter: req.enter })
                    .await
                    .map_err(failed)?;
                Ok(Acted::Done(self.view()))
            }
            TerminalOp::Focus => {
                control.focus(&pane).await.map_err(failed)?;
                Ok(Acted::Done(self.view()))
            }
            TerminalOp::Read => {
                let text = control.read_text(&pane).await.map_err(failed)?;
                Ok(Acted::Text(TerminalText { binding_id: self.record.id.clone(), text, output: None }))
            }
            TerminalOp::Close => {
                match control.close(&pane).await {
                    Ok(()) | Err(bosun_termbridge::TermError::PaneGone) => {}
                    Err(e) => return Err(failed(e)),
                }
                self.record.state = BindingState::Closed;
                self.record.reason = Some("closed through the API".into());
                self.record.updated_at = bosun_proto::now_ts();
                let mut batch = Batch::by(Owner::Binding);
                batch.put(&self.record)?;
                batch.event(
                    EventData::TerminalBinding(TerminalBinding { binding: self.view() })
                        .into_event(topic_of(self.record.session_id.as_deref())),
                );
                self.ctx.store.commit(batch).await?;
                Ok(Acted::Done(self.view()))
            }
            TerminalOp::SetCwd(path) => {
                self.set_cwd(&path).await?;
                Ok(Acted::Done(self.view()))
            }
            TerminalOp::ClipboardWrite(text) => {
                let limit = control.capabilities().max_clipboard_kb as usize * 1024;
                let limit = limit.min(self.ctx.settings.termbridge.max_clipboard_kb as usize * 1024);
                check_clipboard_size(&text, limit)?;
                let screens = control.clipboard_write(&pane, &text).await.map_err(failed)?;
                Ok(Acted::Clipboard(bosun_proto::ClipboardContent {
                    text,
                    via: kind.to_string(),
                    sequences: None,
                    screens: Some(screens),
                }))
            }
            TerminalOp::ClipboardRead => {
                let text = control.clipboard_read(&pane).await.map_err(failed)?;
                Ok(Acted::Clipboard(bosun_proto::ClipboardContent {
                    text,
                    via: kind.to_string(),
                    sequences: None,
                    screens: None,
                }))
            }
        }
    }

    /// `termbridge:action`: what was done, what allowed it, how long it took.
    async fn record_action(&self, action: &str, decision: &str, started: Instant, detail: &str) {
        let event = EventData::TerminalAction(TerminalAction {
            binding_id: self.record.id.clone(),
            terminal: self.record.terminal,
            session_id: self.record.session_id.clone().map(Into::into),
            action: action.to_string(),
            decision: decision.to_string(),
            latency_ms: started.elapsed().as_secs_f64() * 1000.0,
            detail: detail.to_string(),
        });
        let mut batch = Batch::new();
        batch.event(event.into_event(topic_of(self.record.session_id.as_deref())));
        if let Err(e) = self.ctx.store.commit(batch).await {
            tracing::warn!(binding = %self.record.id, error = %e, "a terminal action could not be recorded");
        }
    }

    async fn exited(&mut self, status: bosun_pty::ExitStatus, end: u64) -> Result<(), ActorProcessingErr> {
        if self.record.state != BindingState::Open {
            return Ok(());
        }
        if end != self.scrollback.end() {
            tracing::warn!(binding = %self.record.id, end, stored = self.scrollback.end(), "terminal ended off its stored end");
        }
        let closed = !self.closing.is_empty();
        self.record.state = if closed { BindingState::Closed } else { BindingState::Exited };
        self.record.exit = Some(ExitView { code: status.code, signal: status.signal });
        if closed {
            self.record.reason = Some("closed through the API".into());
        }
        self.record.updated_at = bosun_proto::now_ts();
        let mut batch = Batch::by(Owner::Binding);
        batch.put(&self.record)?;
        batch.event(
            EventData::TerminalBinding(TerminalBinding { binding: self.view() })
                .into_event(topic_of(self.record.session_id.as_deref())),
        );
        self.ctx.store.commit(batch).await?;
        if let Some(live) = self.live.take() {
            live.finish(TerminalExit {
                state: self.record.state,
                exit: self.record.exit.clone(),
                end: self.scrollback.end(),
                reason: self.record.reason.clone(),
            });
        }
        self.ctx.terminals.remove(&self.record.id);
        let view = self.view();
        let detail = format!("exit {:?}", self.record.exit);
        for reply in std::mem::take(&mut self.closing) {
            self.record_action("close", "allowed", Instant::now(), &detail).await;
            let _ = reply.send(Ok(Acted::Done(view.clone())));
        }
        Ok(())
    }

    async fn resize(&mut self, req: ResizeRequest) -> DaemonResult<BindingView> {
        let size = PtySize::new(req.cols, req.rows).map_err(|e| DaemonError::BadRequest(e.to_string()))?;
        let live = self
            .live
            .clone()
            .ok_or_else(|| DaemonError::Conflict(format!("terminal {} is {}", self.record.id, self.record.state)))?;
        live.pty.resize(size).map_err(|e| DaemonError::Internal(e.to_string()))?;
        self.record.size = Some(TerminalSize { cols: req.cols, rows: req.rows });
        self.record.updated_at = bosun_proto::now_ts();
        let mut batch = Batch::by(Owner::Binding);
        batch.put(&self.record)?;
        self.ctx.store.commit(batch).await?;
        Ok(self.view())
    }

    /// The binding's terminal is gone, or cannot be proven the same.
    async fn lose(&mut self, reason: &str) -> Result<(), ActorProcessingErr> {
        if let (Some(pid), Some(started)) = (self.record.pid, self.record.pid_started) {
            // Left behind by a killed daemon: end it, if it is still the
            // same process, as closing its terminal would have.
            if super::process_started(pid) == Some(started) {
                bosun_pty::hang_up_group(pid);
            }
        }
        self.record.state = BindingState::Lost;
        self.record.reason = Some(reason.to_string());
        self.record.updated_at = bosun_proto::now_ts();
        let topic = topic_of(self.record.session_id.as_deref());
        let mut batch = Batch::by(Owner::Binding);
        batch.put(&self.record)?;
        batch.event(
            EventData::BindingLost(BindingLost {
                binding_id: self.record.id.clone(),
                terminal: self.record.terminal,
                session_id: self.record.session_id.clone().map(Into::into),
                reason: reason.to_string(),
            })
            .into_event(topic.clone()),
        );
        batch.event(EventData::TerminalBinding(TerminalBinding { binding: self.view() }).into_event(topic));
        self.ctx.store.commit(batch).await?;
        Ok(())
    }
}

/// What `send` writes to a pty: the text, wrapped in bracketed-paste
/// markers when asked to paste and the app has turned the mode on (an app
/// that has not would take the markers as keys), then Enter (a carriage
/// return, what the key sends) when asked.
fn send_bytes(req: &SendTextRequest, bracketed_paste: bool) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(req.text.len() + 16);
    let wrap = req.paste && bracketed_paste;
    if wrap {
        bytes.extend_from_slice(b"\x1b[200~");
    }
    bytes.extend_from_slice(req.text.as_bytes());
    if wrap {
        bytes.extend_from_slice(b"\x1b[201~");
    }
    if req.enter {
        bytes.push(b'\r');
    }
    bytes
}

/// What an action's record says of it: sanitized, so no escape sequence a
/// client sent reaches the log, and short.
fn op_detail(op: &TerminalOp) -> String {
    let text = match op {
        TerminalOp::Send(req) => {
            format!("{}{}", req.text, if req.enter { " ⏎" } else { "" })
        }
        TerminalOp::SetCwd(path) => path.clone(),
        // The size only: what goes on a clipboard is nobody's to log.
        TerminalOp::ClipboardWrite(text) => format!("{} bytes", text.len()),
        _ => String::new(),
    };
    let clean = bosun_termbridge::sanitize::sanitize(text.as_bytes());
    let mut short: String = clean.chars().take(200).collect();
    if short.len() < clean.len() {
        short.push('…');
    }
    short
}

fn check_clipboard_size(text: &str, limit: usize) -> DaemonResult<()> {
    if text.len() > limit {
        return Err(DaemonError::BadRequest(format!("text: this clipboard takes at most {limit} bytes")));
    }
    Ok(())
}

fn unreachable_close() -> DaemonResult<Acted> {
    Err(DaemonError::Internal("close is handled before this".into()))
}

/// Hands a terminal's output to its binding's actor, one batch in flight at
/// a time, and its exit after the last byte. It calls the actor by name, so
/// a restarted actor is found again; a batch is offered again until one
/// answers (the actor drops what it already stored).
async fn pump(terminals: Arc<LiveTerminals>, binding_id: String, mut rx: mpsc::Receiver<PtyEvent>, start: u64) {
    let name = names::binding(&binding_id);
    let mut offset = start;
    let mut exit = None;
    loop {
        let mut pending = Vec::new();
        if exit.is_none() {
            match rx.recv().await {
                Some(PtyEvent::Output(bytes)) => pending = bytes,
                Some(PtyEvent::Exited(status)) => exit = Some(status),
                None => return,
            }
        }
        while exit.is_none() && pending.len() < BATCH_MAX {
            match rx.try_recv() {
                Ok(PtyEvent::Output(bytes)) => pending.extend_from_slice(&bytes),
                Ok(PtyEvent::Exited(status)) => exit = Some(status),
                Err(_) => break,
            }
        }
        if !pending.is_empty() {
            let bytes = Arc::new(pending);
            let len = bytes.len() as u64;
            let delivered = deliver(&terminals, &binding_id, || {
                let bytes = bytes.clone();
                let name = name.clone();
                async move {
                    crate::route::call::<BindingMsg, _, _>(&name, |reply| BindingMsg::Output { offset, bytes, reply })
                        .await
                }
            })
            .await;
            if !delivered {
                return;
            }
            offset += len;
        }
        if let Some(status) = exit.take() {
            let name = name.clone();
            deliver(&terminals, &binding_id, || {
                let (status, name) = (status.clone(), name.clone());
                async move {
                    crate::route::call::<BindingMsg, _, _>(&name, |reply| BindingMsg::Exited {
                        status,
                        end: offset,
                        reply,
                    })
                    .await
                }
            })
            .await;
            return;
        }
    }
}

/// Tries `call` until it succeeds; false once the terminal is no longer
/// live (its binding ended, and nobody is left to take it).
async fn deliver<F, Fut>(terminals: &LiveTerminals, binding_id: &str, call: F) -> bool
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = DaemonResult<()>>,
{
    loop {
        match call().await {
            Ok(()) => return true,
            Err(e) => {
                if terminals.get(binding_id).is_none() {
                    return false;
                }
                tracing::debug!(binding = binding_id, error = %e, "terminal output waits for its actor");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
