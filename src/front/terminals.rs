//! `/api/v1/terminals/...`: the capability map, consents and bindings. Read
//! from the store; changed through the terminals supervisor (the map, a new
//! binding) or the binding's actor (everything done to a binding).

use super::api::{json_body, json_reply, no_query, not_allowed, query, valid_id, Request};
use super::error::ApiError;
use bosun_actors::terminals::binding::{Acted, BindingMsg, TerminalOp};
use bosun_actors::terminals::scrollback;
use bosun_actors::terminals::{Outcome, Spawned, TerminalsMsg};
use bosun_actors::{names, route, Context, DaemonError};
use bosun_proto::*;
use bosun_state::{BindingRecord, ScrollbackChunk, TerminalRecord};
use warp::http::{Method, StatusCode};
use warp::reply::Response;

/// The most of a scrollback `GET …/text` returns (the retention is the
/// real bound; this one keeps an answer's size sane if it is raised).
const MAX_TEXT: usize = 64 * 1024 * 1024;

/// `rest` is the path after `/api/v1/terminals`.
pub(super) async fn route(ctx: &Context, req: &Request, rest: &[&str]) -> Result<Response, ApiError> {
    let m = req.method.clone();
    match (rest, m) {
        ([], Method::GET) => {
            no_query(req)?;
            Ok(json_reply(StatusCode::OK, &TerminalList { terminals: map(ctx)? }))
        }
        ([], _) => Err(not_allowed(req, "GET")),
        (["discover"], Method::POST) => {
            no_query(req)?;
            let terminals = route::call::<TerminalsMsg, _, _>(names::TERMINALS, TerminalsMsg::Discover).await??;
            Ok(json_reply(StatusCode::OK, &TerminalList { terminals }))
        }
        (["discover"], _) => Err(not_allowed(req, "POST")),
        (["bindings"], Method::GET) => list(ctx, req),
        (["bindings"], Method::POST) => {
            no_query(req)?;
            let body: SpawnTerminalRequest = json_body(req)?;
            let spawned = route::call_within::<TerminalsMsg, _, _>(names::TERMINALS, ACTION_TIMEOUT, |r| {
                TerminalsMsg::Spawn(body, r)
            })
            .await??;
            Ok(match spawned {
                Spawned::Bound(binding) => json_reply(
                    StatusCode::CREATED,
                    &SpawnOutcome { outcome: "bound".into(), binding: Some(binding), approval: None },
                ),
                Spawned::Held(approval) => json_reply(
                    StatusCode::ACCEPTED,
                    &SpawnOutcome { outcome: "awaiting_approval".into(), binding: None, approval: Some(approval) },
                ),
            })
        }
        (["bindings"], _) => Err(not_allowed(req, "GET, POST")),
        (["bindings", id], Method::GET) => {
            no_query(req)?;
            Ok(json_reply(StatusCode::OK, &view(ctx, &load(ctx, id)?)?))
        }
        (["bindings", id], Method::DELETE) => {
            no_query(req)?;
            let record = load(ctx, id)?;
            if record.state != BindingState::Open {
                let binding = view(ctx, &record)?;
                return Ok(json_reply(
                    StatusCode::OK,
                    &ActionDone { binding, outcome: "done".into(), approval_id: None },
                ));
            }
            done(ctx, act(id, TerminalOp::Close).await?)
        }
        (["bindings", _], _) => Err(not_allowed(req, "GET, DELETE")),
        (["bindings", id, "text"], Method::GET) => {
            no_query(req)?;
            let record = load(ctx, id)?;
            if record.terminal == TerminalKind::Pty {
                return text(ctx, &record);
            }
            match act(id, TerminalOp::Read).await? {
                Outcome::Acted(Acted::Text(text)) => Ok(json_reply(StatusCode::OK, &text)),
                _ => Err(ApiError::Daemon(DaemonError::Internal("a read answered no text".into()))),
            }
        }
        (["bindings", _, "text"], _) => Err(not_allowed(req, "GET")),
        (["bindings", id, "send"], Method::POST) => {
            no_query(req)?;
            let body: SendTextRequest = json_body(req)?;
            load(ctx, id)?;
            if body.text.len() > MAX_SEND {
                return Err(ApiError::BadRequest(format!("text: at most {MAX_SEND} bytes at a time")));
            }
            done(ctx, act(id, TerminalOp::Send(body)).await?)
        }
        (["bindings", _, "send"], _) => Err(not_allowed(req, "POST")),
        (["bindings", id, "focus"], Method::POST) => {
            no_query(req)?;
            load(ctx, id)?;
            done(ctx, act(id, TerminalOp::Focus).await?)
        }
        (["bindings", _, "focus"], _) => Err(not_allowed(req, "POST")),
        (["bindings", id, "cwd"], Method::POST) => {
            no_query(req)?;
            let body: CwdRequest = json_body(req)?;
            load(ctx, id)?;
            bosun_termbridge::cwd::validate_cwd(body.path.as_bytes())
                .map_err(|e| ApiError::BadRequest(format!("path: {e}")))?;
            done(ctx, act(id, TerminalOp::SetCwd(body.path)).await?)
        }
        (["bindings", _, "cwd"], _) => Err(not_allowed(req, "POST")),
        (["bindings", id, "resize"], Method::POST) => {
            no_query(req)?;
            let body: ResizeRequest = json_body(req)?;
            let record = open(ctx, id)?;
            if record.terminal != TerminalKind::Pty {
                return Err(DaemonError::NotSupported(format!("{} sizes its own panes", record.terminal)).into());
            }
            let view =
                route::call::<BindingMsg, _, _>(&names::binding(id), |reply| BindingMsg::Resize(body, reply)).await??;
            Ok(json_reply(StatusCode::OK, &view))
        }
        (["bindings", _, "resize"], _) => Err(not_allowed(req, "POST")),
        (["clipboard"], Method::GET | Method::POST) => {
            let (write, binding_id) = if req.method == Method::POST {
                no_query(req)?;
                let body: ClipboardWrite = json_body(req)?;
                (Some(body.text), body.binding_id)
            } else {
                let q: ClipboardQuery = query(req)?;
                (None, q.binding_id)
            };
            if let Some(id) = binding_id {
                load(ctx, &id)?;
                let op = match write {
                    Some(text) => TerminalOp::ClipboardWrite(text),
                    None => TerminalOp::ClipboardRead,
                };
                return match act(&id, op).await? {
                    Outcome::Acted(Acted::Clipboard(content)) => Ok(json_reply(StatusCode::OK, &content)),
                    _ => Err(ApiError::Daemon(DaemonError::Internal("a clipboard action answered otherwise".into()))),
                };
            }
            let content = route::call_within::<TerminalsMsg, _, _>(names::TERMINALS, ACTION_TIMEOUT, |reply| {
                TerminalsMsg::Clipboard { write, reply }
            })
            .await??;
            Ok(json_reply(StatusCode::OK, &content))
        }
        (["clipboard"], _) => Err(not_allowed(req, "GET, POST")),
        ([terminal, "consent"], Method::POST | Method::DELETE) => {
            no_query(req)?;
            let terminal: TerminalKind = terminal.parse().map_err(ApiError::NotFound)?;
            let grant = req.method == Method::POST;
            let view = route::call::<TerminalsMsg, _, _>(names::TERMINALS, |reply| TerminalsMsg::Consent {
                terminal,
                grant,
                reply,
            })
            .await??;
            Ok(json_reply(StatusCode::OK, &view))
        }
        ([_, "consent"], _) => Err(not_allowed(req, "POST, DELETE")),
        _ => Err(ApiError::NotFound(format!("no such endpoint: {}", req.path))),
    }
}

fn map(ctx: &Context) -> Result<Vec<TerminalView>, ApiError> {
    let mut terminals: Vec<TerminalView> =
        ctx.store.scan::<TerminalRecord>()?.iter().map(TerminalRecord::view).collect();
    // `pty` first, then the order of the kinds.
    terminals.sort_by_key(|t| TerminalKind::ALL.iter().position(|k| *k == t.terminal));
    Ok(terminals)
}

fn list(ctx: &Context, req: &Request) -> Result<Response, ApiError> {
    let q: BindingsQuery = query(req)?;
    let mut bindings = Vec::new();
    for record in ctx.store.scan::<BindingRecord>()? {
        if q.session_id.as_deref().is_some_and(|s| record.session_id.as_deref() != Some(s))
            || q.state.is_some_and(|s| record.state != s)
            || q.terminal.is_some_and(|t| record.terminal != t)
        {
            continue;
        }
        bindings.push(view(ctx, &record)?);
    }
    bindings.sort_by(|a, b| b.created_at.cmp(&a.created_at));
    Ok(json_reply(StatusCode::OK, &BindingList { bindings }))
}

pub(super) fn load(ctx: &Context, id: &str) -> Result<BindingRecord, ApiError> {
    let missing = || ApiError::NotFound(format!("terminal binding {id:?} not found"));
    if !valid_id(id) {
        return Err(missing());
    }
    ctx.store.get::<BindingRecord>(id)?.ok_or_else(missing)
}

fn open(ctx: &Context, id: &str) -> Result<BindingRecord, ApiError> {
    let record = load(ctx, id)?;
    if record.state != BindingState::Open {
        return Err(DaemonError::Conflict(format!("terminal binding {id} is {}", record.state)).into());
    }
    Ok(record)
}

/// A `pty` binding's output range, from its first and last stored chunks.
pub(super) fn output_range(ctx: &Context, record: &BindingRecord) -> Result<Option<OutputRange>, ApiError> {
    if record.terminal != TerminalKind::Pty {
        return Ok(None);
    }
    let range = match ctx.store.first_and_last::<ScrollbackChunk>(&ScrollbackChunk::prefix(&record.id))? {
        Some((first, last)) => OutputRange { start: first.offset, end: last.end() },
        None => OutputRange { start: 0, end: 0 },
    };
    Ok(Some(range))
}

pub(super) fn view(ctx: &Context, record: &BindingRecord) -> Result<BindingView, ApiError> {
    Ok(record.view(output_range(ctx, record)?))
}

fn text(ctx: &Context, record: &BindingRecord) -> Result<Response, ApiError> {
    if record.terminal != TerminalKind::Pty {
        return Err(DaemonError::NotSupported(format!("reading back {} is not supported yet", record.terminal)).into());
    }
    let pieces = scrollback::read(&ctx.store, &record.id, 0, MAX_TEXT)?;
    let start = pieces.first().map(|p| p.0);
    let mut bytes = Vec::new();
    for (_, piece) in &pieces {
        bytes.extend_from_slice(piece);
    }
    let output = start.map(|start| OutputRange { start, end: start + bytes.len() as u64 });
    let output = output.or(Some(OutputRange { start: 0, end: 0 }));
    Ok(json_reply(
        StatusCode::OK,
        &TerminalText { binding_id: record.id.clone(), text: String::from_utf8_lossy(&bytes).into_owned(), output },
    ))
}

/// The most text one `send` takes (a bigger paste is sent in pieces).
const MAX_SEND: usize = 256 * 1024;
/// How long a client waits for a terminal action (each IPC call has its
/// own timeout and retries under this).
const ACTION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(40);

/// Asks the terminals actor to judge and carry out `op` on a binding.
async fn act(id: &str, op: TerminalOp) -> Result<Outcome, ApiError> {
    let binding_id = id.to_string();
    Ok(route::call_within::<TerminalsMsg, _, _>(names::TERMINALS, ACTION_TIMEOUT, |reply| TerminalsMsg::Act {
        binding_id,
        op,
        reply,
    })
    .await??)
}

/// 200 with what was done; 202 when it waits for a person (`held` ops only).
fn done(ctx: &Context, outcome: Outcome) -> Result<Response, ApiError> {
    match outcome {
        Outcome::Acted(Acted::Done(binding)) => {
            let binding = match ctx.store.get::<BindingRecord>(&binding.binding_id)? {
                Some(record) => view(ctx, &record)?,
                None => binding,
            };
            Ok(json_reply(StatusCode::OK, &ActionDone { binding, outcome: "done".into(), approval_id: None }))
        }
        Outcome::Acted(Acted::Text(_) | Acted::Clipboard(_)) => {
            Err(ApiError::Daemon(DaemonError::Internal("unexpected text".into())))
        }
        Outcome::Held(approval, binding) => Ok(json_reply(
            StatusCode::ACCEPTED,
            &ActionDone { binding, outcome: "awaiting_approval".into(), approval_id: Some(approval.id.to_string()) },
        )),
    }
}
