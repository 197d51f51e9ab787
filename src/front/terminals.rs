//! `/api/v1/terminals/...`: the capability map, consents and bindings. Read
//! from the store; changed through the terminals supervisor (the map, a new
//! binding) or the binding's actor (everything done to a binding).

use super::api::{json_body, json_reply, no_query, not_allowed, query, valid_id, Request};
use super::error::ApiError;
use bosun_actors::terminals::binding::BindingMsg;
use bosun_actors::terminals::scrollback;
use bosun_actors::terminals::TerminalsMsg;
use bosun_actors::{names, route, Context, DaemonError};
use bosun_proto::*;
use bosun_state::{BindingRecord, ScrollbackChunk, TerminalRecord};
use warp::http::{Method, StatusCode};
use warp::reply::Response;

/// The most of a scrollback `GET …/text` returns (the retention is the
/// real bound; this one keeps an answer's size sane if it is raised).
const MAX_TEXT: usize = 64 * 1024 * 1024;

/// `GET /api/v1/terminals/bindings?…`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ListBindingsQuery {
    session_id: Option<String>,
    state: Option<BindingState>,
    terminal: Option<TerminalKind>,
}

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
            let view = route::call::<TerminalsMsg, _, _>(names::TERMINALS, |r| TerminalsMsg::Spawn(body, r)).await??;
            Ok(json_reply(StatusCode::CREATED, &view))
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
                return Ok(json_reply(StatusCode::OK, &view(ctx, &record)?));
            }
            let view = call(id, BindingMsg::Close).await?;
            Ok(json_reply(StatusCode::OK, &view))
        }
        (["bindings", _], _) => Err(not_allowed(req, "GET, DELETE")),
        (["bindings", id, "text"], Method::GET) => {
            no_query(req)?;
            text(ctx, &load(ctx, id)?)
        }
        (["bindings", _, "text"], _) => Err(not_allowed(req, "GET")),
        (["bindings", id, "send"], Method::POST) => {
            no_query(req)?;
            let body: SendTextRequest = json_body(req)?;
            let record = open(ctx, id)?;
            let bytes = send_bytes(&body);
            call(id, |reply| BindingMsg::Input(bytes, reply)).await?;
            Ok(json_reply(
                StatusCode::OK,
                &ActionDone { binding: view(ctx, &record)?, outcome: "done".into(), approval_id: None },
            ))
        }
        (["bindings", _, "send"], _) => Err(not_allowed(req, "POST")),
        (["bindings", id, "resize"], Method::POST) => {
            no_query(req)?;
            let body: ResizeRequest = json_body(req)?;
            open(ctx, id)?;
            let view = call(id, |reply| BindingMsg::Resize(body, reply)).await?;
            Ok(json_reply(StatusCode::OK, &view))
        }
        (["bindings", _, "resize"], _) => Err(not_allowed(req, "POST")),
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
    let q: ListBindingsQuery = query(req)?;
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

/// The bytes `send` writes: the text, as a bracketed paste when asked, and
/// Enter (a carriage return, what the key sends) when asked.
fn send_bytes(req: &SendTextRequest) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(req.text.len() + 16);
    if req.paste {
        bytes.extend_from_slice(b"\x1b[200~");
        bytes.extend_from_slice(req.text.as_bytes());
        bytes.extend_from_slice(b"\x1b[201~");
    } else {
        bytes.extend_from_slice(req.text.as_bytes());
    }
    if req.enter {
        bytes.push(b'\r');
    }
    bytes
}

async fn call<R, F>(id: &str, build: F) -> Result<R, ApiError>
where
    R: Send + 'static,
    F: FnOnce(ractor::RpcReplyPort<Result<R, DaemonError>>) -> BindingMsg,
{
    Ok(route::call::<BindingMsg, _, _>(&names::binding(id), build).await??)
}
