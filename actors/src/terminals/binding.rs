//! One terminal binding's actor: the one writer of its binding record and,
//! for a `pty` terminal, of its scrollback. It commits the output its pump
//! hands it, then publishes it; commits the terminal's end after the last
//! byte; and carries out what clients ask of the terminal.
//!
//! Its child process lives in the shared [`LiveTerminals`], not in this
//! actor: a restarted actor finds it there by id and proves it is the same
//! one (its pid) before acting on it; when it is not there (the daemon was
//! restarted, and the child ended with it) the binding is `lost`.

use super::live::{LiveTerminal, LiveTerminals, OutputChunk};
use super::scrollback::Scrollback;
use super::topic_of;
use crate::context::Context;
use crate::error::{DaemonError, DaemonResult};
use crate::names;
use bosun_proto::{
    BindingLost, BindingState, BindingView, EventData, ExitView, ResizeRequest, TerminalBinding, TerminalExit,
    TerminalKind, TerminalSize,
};
use bosun_pty::{PtyEvent, PtySize};
use bosun_state::{Batch, BindingRecord, Owner};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// The most output the pump hands over in one call: what came while the
/// previous commit was being flushed shares the next one.
const BATCH_MAX: usize = 1024 * 1024;

pub struct BindingActor;

/// A binding not stored yet: its record, and its terminal already running.
pub struct NewBinding {
    pub record: BindingRecord,
    pub live: Arc<LiveTerminal>,
    pub output: mpsc::Receiver<PtyEvent>,
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
    /// Input for the terminal, as typed or sent (policy is the caller's).
    Input(Vec<u8>, RpcReplyPort<DaemonResult<()>>),
    /// Hang up; answered once the terminal's end is committed.
    Close(RpcReplyPort<DaemonResult<BindingView>>),
    Crash,
}

pub struct Binding {
    ctx: Context,
    record: BindingRecord,
    live: Option<Arc<LiveTerminal>>,
    scrollback: Scrollback,
    closing: Vec<RpcReplyPort<DaemonResult<BindingView>>>,
    /// Whether the app in the terminal has turned bracketed paste on.
    pub(super) bracketed_paste: bool,
}

impl Actor for BindingActor {
    type Msg = BindingMsg;
    type State = Binding;
    type Arguments = BindingArgs;

    async fn pre_start(&self, _myself: ActorRef<BindingMsg>, args: BindingArgs) -> Result<Binding, ActorProcessingErr> {
        let ctx = args.ctx;
        let retention = ctx.settings.termbridge.scrollback_kb.saturating_mul(1024);
        let new = args.new.and_then(|n| n.lock().unwrap_or_else(|p| p.into_inner()).take());
        if let Some(NewBinding { record, live, output }) = new {
            let mut batch = Batch::by(Owner::Binding);
            batch.put(&record)?;
            let view = record.view(Some(bosun_proto::OutputRange { start: 0, end: 0 }));
            batch.event(
                EventData::TerminalBinding(TerminalBinding { binding: view })
                    .into_event(topic_of(record.session_id.as_deref())),
            );
            // Nothing of the terminal is shown before its binding is stored.
            ctx.store.commit(batch).await?;
            ctx.terminals.insert(&record.id, live.clone());
            tokio::spawn(pump(ctx.terminals.clone(), record.id.clone(), output, 0));
            return Ok(Binding {
                scrollback: Scrollback::empty(&record.id, retention),
                ctx,
                record,
                live: Some(live),
                closing: Vec::new(),
                bracketed_paste: false,
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
        let mut state = Binding { ctx, record, live, scrollback, closing: Vec::new(), bracketed_paste: false };
        if state.record.state == BindingState::Open
            && state.record.terminal == TerminalKind::Pty
            && state.live.is_none()
        {
            state.lose("the daemon restarted, and the terminal's process ended with it").await?;
        }
        Ok(state)
    }

    async fn post_start(&self, myself: ActorRef<BindingMsg>, state: &mut Binding) -> Result<(), ActorProcessingErr> {
        if state.record.state != BindingState::Open {
            myself.stop(None);
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
            BindingMsg::Close(reply) => match state.live.clone() {
                Some(live) => {
                    live.pty.hang_up();
                    state.closing.push(reply);
                }
                None => {
                    let _ = reply.send(Ok(state.view()));
                }
            },
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
        self.bracketed_paste = paste_mode_after(self.bracketed_paste, &appended.bytes);
        if let Some(live) = &self.live {
            live.publish(OutputChunk { offset: appended.offset, bytes: Arc::new(appended.bytes) });
        }
        Ok(())
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
        for reply in self.closing.drain(..) {
            let _ = reply.send(Ok(view.clone()));
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

/// Whether bracketed paste is on after `bytes`: the last of `CSI ?2004h`
/// and `CSI ?2004l` in them decides (a sequence split across two commits is
/// missed, and the next one the app sends puts it right).
fn paste_mode_after(before: bool, bytes: &[u8]) -> bool {
    let on = find_last(bytes, b"\x1b[?2004h");
    let off = find_last(bytes, b"\x1b[?2004l");
    match (on, off) {
        (Some(a), Some(b)) => a > b,
        (Some(_), None) => true,
        (None, Some(_)) => false,
        (None, None) => before,
    }
}

fn find_last(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).rposition(|w| w == needle)
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

#[cfg(test)]
mod tests {
    use super::paste_mode_after;

    #[test]
    fn the_last_paste_mode_switch_wins() {
        assert!(paste_mode_after(false, b"x\x1b[?2004hy"));
        assert!(!paste_mode_after(true, b"\x1b[?2004h..\x1b[?2004l"));
        assert!(paste_mode_after(true, b"plain"));
        assert!(!paste_mode_after(false, b"plain"));
    }
}
