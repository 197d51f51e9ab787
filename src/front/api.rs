//! The HTTP API (`/health`, `/api/v1/...`): one dispatcher matching on method
//! and path, so every failure — unknown path, wrong method, bad body — gets
//! the same JSON error shape.
//!
//! Reads go to the store; every change goes through the actor that owns it.

use super::error::ApiError;
use bosun_actors::files::{FileChange, FileChanged, FilesError};
use bosun_actors::names;
use bosun_actors::session::SessionMsg;
use bosun_actors::sessions::SessionsMsg;
use bosun_actors::{route, Context};
use bosun_proto::*;
use bosun_state::{ApprovalRecord, GateRecord, SessionRecord, TerminalApprovalRecord, TurnRecord};
use bosun_workspace::{self as workspace, WorkspaceError};
use bytes::{Buf, Bytes};
use futures::{Stream, StreamExt};
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::time::Duration;
use warp::http::{HeaderMap, Method, StatusCode};
use warp::reply::{Reply, Response};

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Largest page of `/api/v1/events`.
pub const MAX_EVENTS_PAGE: usize = 10_000;

pub struct Request {
    pub method: Method,
    pub path: String,
    pub query: String,
    pub headers: HeaderMap,
    /// Empty until the head has passed the boundary's checks ([`dispatch`]).
    pub body: Bytes,
    /// Who is asking (see [`crate::auth::Peer`]).
    pub peer: crate::auth::Peer,
    /// The authority the request named (`127.0.0.1:7878`), checked by the
    /// server (front/authority.rs): the daemon's own origin is `http(s)://` + this.
    pub authority: String,
    /// What the gate allowed; `None` for `POST /auth/token`, which
    /// authenticates by its body.
    pub access: Option<crate::auth::Access>,
}

/// Largest body of `PUT .../file`: a file of the largest size the file API
/// takes, plus room for its JSON escaping. The file's own limit is checked
/// after parsing, so an oversized file gets the file API's 413.
pub const MAX_FILE_BODY_BYTES: usize = 2 * workspace::MAX_FILE_BYTES + 64 * 1024;

/// How large a body `method path` may send.
pub fn body_limit(method: &Method, path: &str) -> usize {
    // `/auth/token` is the one route anyone may post to: a few KiB is all it needs.
    if path.starts_with("/auth/") {
        super::auth::MAX_AUTH_BODY_BYTES
    } else if *method == Method::POST && super::modules::admin_only(path) {
        super::modules::MAX_BODY_BYTES
    } else if *method == Method::PUT
        && path.starts_with("/api/v1/sessions/")
        && path.trim_end_matches('/').ends_with("/file")
    {
        MAX_FILE_BODY_BYTES
    } else {
        MAX_BODY_BYTES
    }
}

/// Reads the body, refusing it past `limit` whatever the content-length
/// says (chunked bodies included); a content-length past it is refused
/// before a byte is read.
pub async fn read_body<S, B>(mut stream: S, headers: &HeaderMap, limit: usize) -> Result<Bytes, ApiError>
where
    S: Stream<Item = Result<B, warp::Error>> + Unpin,
    B: Buf,
{
    if super::auth::declared_length(headers).is_some_and(|n| n > limit as u64) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    let mut body = Vec::new();
    while let Some(chunk) = stream.next().await {
        let mut chunk = chunk.map_err(|e| ApiError::BadRequest(format!("reading the body: {e}")))?;
        if body.len() + chunk.remaining() > limit {
            return Err(ApiError::PayloadTooLarge { limit });
        }
        while chunk.has_remaining() {
            let piece = chunk.chunk();
            body.extend_from_slice(piece);
            let n = piece.len();
            chunk.advance(n);
        }
    }
    Ok(Bytes::from(body))
}

/// Answers one request. Everything that can refuse it is decided from the
/// head, before a byte of `body` is read: a refused request costs no memory
/// (docs/SECURITY.md, "Before the body").
pub async fn dispatch<S, B>(
    ctx: &Context,
    auth: &crate::auth::Auth,
    secrets: &std::sync::Arc<crate::secrets::SecretStore>,
    mut req: Request,
    body: S,
) -> Response
where
    S: Stream<Item = Result<B, warp::Error>> + Unpin,
    B: Buf,
{
    // The app's assets hold no data: a device must load them to pair at all.
    if req.method == Method::GET || req.method == Method::HEAD {
        if let Some(page) = super::pwa::asset(&req.path) {
            return page;
        }
    }
    if let Err(refused) = super::cross_site::check(auth, &req.method, &req.headers, &req.authority) {
        return super::auth::unread_body(&req.headers, refused.into_response());
    }
    req.access = match super::auth::gate(auth, &req) {
        Ok(access) => access,
        Err(refused) => return super::auth::unread_body(&req.headers, super::auth::error_response(&refused)),
    };
    let limit = body_limit(&req.method, &req.path);
    req.body = match read_body(body, &req.headers, limit).await {
        Ok(body) => body,
        Err(e) => return e.into_response(),
    };
    if let Some(rest) = req.path.strip_prefix("/auth/") {
        let rest: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
        return super::auth::route(auth, &req, &rest).await;
    }
    match route_request(ctx, secrets, &req).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

pub(super) fn json_reply<T: serde::Serialize>(status: StatusCode, value: &T) -> Response {
    warp::reply::with_status(warp::reply::json(value), status).into_response()
}

pub(super) fn not_allowed(req: &Request, allowed: &'static str) -> ApiError {
    ApiError::MethodNotAllowed { method: req.method.to_string(), path: req.path.clone(), allowed }
}

async fn route_request(
    ctx: &Context,
    secrets: &std::sync::Arc<crate::secrets::SecretStore>,
    req: &Request,
) -> Result<Response, ApiError> {
    let m = &req.method;
    if *m == Method::GET || *m == Method::HEAD {
        if let Some(page) = super::pwa::asset(&req.path) {
            return Ok(page);
        }
    }
    let segments: Vec<&str> = req.path.trim_end_matches('/').split('/').skip(1).collect();
    match segments.as_slice() {
        ["health"] => match *m {
            Method::GET => Ok(json_reply(StatusCode::OK, &health(ctx))),
            _ => Err(not_allowed(req, "GET")),
        },
        ["metrics"] => match *m {
            Method::GET => metrics(ctx),
            _ => Err(not_allowed(req, "GET")),
        },
        // A WebSocket upgrade is answered before this dispatcher; anything else here is a mistake.
        ["ws"] => Err(ApiError::BadRequest(
            "/ws speaks WebSocket: send GET with Connection: Upgrade and Upgrade: websocket".into(),
        )),
        ["api", "v1", rest @ ..] => match (rest, m.clone()) {
            (["sessions"], Method::GET) => list_sessions(ctx, req),
            (["sessions"], Method::POST) => create_session(ctx, req).await,
            (["sessions"], _) => Err(not_allowed(req, "GET, POST")),
            (["sessions", id], Method::GET) => get_session(ctx, req, id),
            (["sessions", id], Method::PATCH) => patch_session(ctx, req, id).await,
            (["sessions", id], Method::DELETE) => delete_session(ctx, req, id).await,
            (["sessions", _], _) => Err(not_allowed(req, "GET, PATCH, DELETE")),
            (["sessions", id, "files"], Method::GET) => list_files(ctx, req, id).await,
            (["sessions", _, "files"], _) => Err(not_allowed(req, "GET")),
            (["sessions", id, "file"], Method::GET) => read_file(ctx, req, id).await,
            (["sessions", id, "file"], Method::PUT) => write_file(ctx, req, id).await,
            (["sessions", id, "file"], Method::DELETE) => delete_file(ctx, req, id).await,
            (["sessions", _, "file"], _) => Err(not_allowed(req, "GET, PUT, DELETE")),
            (["sessions", id, "search"], Method::GET) => search(ctx, req, id).await,
            (["sessions", _, "search"], _) => Err(not_allowed(req, "GET")),
            (["sessions", id, "diff"], Method::GET) => diff(ctx, req, id).await,
            (["sessions", _, "diff"], _) => Err(not_allowed(req, "GET")),
            (["sessions", id, "commit"], Method::POST) => commit(ctx, req, id).await,
            (["sessions", _, "commit"], _) => Err(not_allowed(req, "POST")),
            (["sessions", id, "audit"], Method::GET) => audit(ctx, req, id),
            (["sessions", _, "audit"], _) => Err(not_allowed(req, "GET")),
            (["sessions", id, "turns"], Method::POST) => start_turn(ctx, req, id).await,
            (["sessions", id, "turns"], Method::GET) => list_turns(ctx, req, id),
            (["sessions", _, "turns"], _) => Err(not_allowed(req, "GET, POST")),
            (["sessions", id, "turns", turn_id, "interrupt"], Method::POST) => interrupt(ctx, req, id, turn_id).await,
            (["sessions", id, "turns", turn_id, "steer"], Method::POST) => steer(ctx, req, id, turn_id).await,
            (["sessions", _, "turns", _, "interrupt" | "steer"], _) => Err(not_allowed(req, "POST")),
            (["approvals"], Method::GET) => list_approvals(ctx, req),
            (["approvals"], _) => Err(not_allowed(req, "GET")),
            (["approvals", id], Method::GET) => get_approval(ctx, req, id),
            (["approvals", id], Method::POST) => decide(ctx, req, id).await,
            (["approvals", _], _) => Err(not_allowed(req, "GET, POST")),
            (["workflows", "runs", more @ ..], _) => super::workflows::route(ctx, req, more).await,
            (["tasks", more @ ..], _) => super::tasks::route(ctx, req, more).await,
            (["terminals", more @ ..], _) => super::terminals::route(ctx, req, more).await,
            (["secrets", more @ ..], _) => super::secrets::route(ctx, secrets, req, more).await,
            (["modules", more @ ..], _) => super::modules::route(ctx, req, more).await,
            (["events"], Method::GET) => events(ctx, req),
            (["events"], _) => Err(not_allowed(req, "GET")),
            (["providers"], Method::GET) => Ok(json_reply(StatusCode::OK, &providers(ctx))),
            (["openapi.json"], Method::GET) => {
                Ok(json_reply(StatusCode::OK, published(&OPENAPI, super::openapi::document)))
            }
            (["openapi.json"], _) => Err(not_allowed(req, "GET")),
            (["schema", "events.json"], Method::GET) => {
                Ok(json_reply(StatusCode::OK, published(&EVENTS_SCHEMA, super::openapi::events_schema)))
            }
            (["schema", "events.json"], _) => Err(not_allowed(req, "GET")),
            (["providers"], _) => Err(not_allowed(req, "GET")),
            (["doctor"], Method::GET) => {
                no_query(req)?;
                Ok(json_reply(StatusCode::OK, &crate::doctor::report(ctx)))
            }
            (["doctor"], _) => Err(not_allowed(req, "GET")),
            (["debug", "crash"], Method::POST) => crash(ctx, req).await,
            (["debug", "crash"], _) => Err(not_allowed(req, "POST")),
            _ => Err(ApiError::NotFound(format!("no such endpoint: {}", req.path))),
        },
        _ => Err(ApiError::NotFound(format!("no such endpoint: {}", req.path))),
    }
}

/// The published documents, built once: they follow the types, which do not
/// change while the daemon runs.
static OPENAPI: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();
static EVENTS_SCHEMA: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();

fn published(
    cell: &'static std::sync::OnceLock<serde_json::Value>,
    build: fn() -> serde_json::Value,
) -> &'static serde_json::Value {
    cell.get_or_init(build)
}

/// Parses a JSON body into `T`, naming what is wrong (unknown fields included).
pub(super) fn json_body<T: DeserializeOwned>(req: &Request) -> Result<T, ApiError> {
    let content_type = req.headers.get(warp::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let mime = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if mime != "application/json" {
        return Err(ApiError::UnsupportedMediaType(content_type.to_string()));
    }
    serde_json::from_slice(&req.body).map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
}

/// Parses the query string into `T`; unknown parameters are refused by name.
pub(super) fn query<T: DeserializeOwned>(req: &Request) -> Result<T, ApiError> {
    serde_urlencoded::from_str(&req.query).map_err(|e| ApiError::BadRequest(format!("invalid query: {e}")))
}

pub(super) fn no_query(req: &Request) -> Result<(), ApiError> {
    query::<NoQuery>(req).map(|_| ())
}

pub(super) fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn load_session(ctx: &Context, id: &str) -> Result<SessionRecord, ApiError> {
    if !valid_id(id) {
        return Err(ApiError::NotFound(format!("session {id:?} not found")));
    }
    ctx.store.get::<SessionRecord>(id)?.ok_or_else(|| ApiError::NotFound(format!("session {id} not found")))
}

/// Who polls the event log, for the count of clients following by polling:
/// a device by its id, anyone else by the client's address.
fn poller(req: &Request) -> String {
    match (&req.access, req.peer.client) {
        (Some(crate::auth::Access::Device(id)), _) => format!("device:{id}"),
        (_, Some(ip)) => format!("addr:{ip}"),
        (_, None) => "unknown".to_string(),
    }
}

/// `GET /metrics`: the exposition, OpenMetrics text (which Prometheus reads).
pub(super) fn metrics(ctx: &Context) -> Result<Response, ApiError> {
    let pending = ctx
        .store
        .scan::<bosun_state::ApprovalRecord>()?
        .iter()
        .filter(|a| a.status == bosun_proto::ApprovalStatus::Pending)
        .count();
    let text = ctx
        .metrics
        .encode(pending)
        .map_err(|e| ApiError::Daemon(bosun_actors::DaemonError::Internal(format!("encoding the metrics: {e}"))))?;
    let mut response = Response::new(text.into());
    response.headers_mut().insert(
        warp::http::header::CONTENT_TYPE,
        warp::http::HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    Ok(response)
}

fn health(ctx: &Context) -> Health {
    let mut running: BTreeMap<String, u64> = BTreeMap::new();
    for name in ractor::registry::registered() {
        *running.entry(names::kind_of(&name).to_string()).or_insert(0) += 1;
    }
    let actors: BTreeMap<String, ActorHealth> = ctx
        .health
        .restarts()
        .into_iter()
        .map(|(kind, restarts)| {
            let running = running.get(&kind).copied().unwrap_or(0);
            (kind, ActorHealth { restarts, running })
        })
        .collect();
    Health {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        uptime_s: ctx.health.uptime_s(),
        head_seq: ctx.store.durable_head(),
        sessions: ctx.store.count::<SessionRecord>() as u64,
        actors,
    }
}

fn list_sessions(ctx: &Context, req: &Request) -> Result<Response, ApiError> {
    let q: ListSessionsQuery = query(req)?;
    let mut sessions: Vec<SessionView> = ctx
        .store
        .scan::<SessionRecord>()?
        .iter()
        .filter(|s| q.archived.is_none_or(|a| s.archived == a))
        .map(SessionRecord::view)
        .collect();
    sessions.sort_by(|a, b| b.created_at.cmp(&a.created_at));
    Ok(json_reply(StatusCode::OK, &SessionList { sessions }))
}

async fn create_session(_ctx: &Context, req: &Request) -> Result<Response, ApiError> {
    no_query(req)?;
    let body: CreateSessionRequest = json_body(req)?;
    // A workspace may need a clone: wait for it rather than answer 503 while
    // the session is still being made.
    let timeout = if body.workspace.is_some() {
        bosun_workspace::NETWORK_TIMEOUT + std::time::Duration::from_secs(60)
    } else {
        route::CALL_TIMEOUT
    };
    let view =
        route::call_within::<SessionsMsg, _, _>(names::SESSIONS, timeout, |r| SessionsMsg::Create(body, r)).await??;
    Ok(json_reply(StatusCode::CREATED, &view))
}

fn get_session(ctx: &Context, req: &Request, id: &str) -> Result<Response, ApiError> {
    no_query(req)?;
    let record = load_session(ctx, id)?;
    let turns: Vec<TurnView> =
        ctx.store.scan_prefix::<TurnRecord>(&TurnRecord::prefix_for(id))?.iter().map(TurnRecord::view).collect();
    let mut session = record.view();
    let mut pending_approvals = Vec::new();
    if let Some(active) = &record.active_turn {
        let key = TurnRecord::key_for(id, record.turn_count);
        if let Some(turn) = ctx.store.get::<TurnRecord>(&key)?.filter(|t| &t.id == active) {
            for approval_id in &turn.approvals {
                if let Some(a) = ctx.store.get::<ApprovalRecord>(approval_id)? {
                    if a.status == ApprovalStatus::Pending {
                        pending_approvals.push(a.view());
                    }
                }
            }
            // The session record hears of its turn's changes a message later
            // than the turn record, which is written with the events that
            // announce them: show the turn's own state, so this answer agrees
            // with the events and the approvals a client has seen.
            session.status = if turn.status.is_final() {
                session.active_turn = None;
                SessionStatus::Idle
            } else if pending_approvals.is_empty() {
                SessionStatus::Running
            } else {
                SessionStatus::AwaitingApproval
            };
            if record.archived {
                session.status = SessionStatus::Archived;
            }
        }
    }
    Ok(json_reply(StatusCode::OK, &SessionDetail { session, turns, pending_approvals }))
}

async fn patch_session(ctx: &Context, req: &Request, id: &str) -> Result<Response, ApiError> {
    no_query(req)?;
    let patch: PatchSessionRequest = json_body(req)?;
    if patch.is_empty() {
        return Err(ApiError::BadRequest("nothing to change: give title, draft, policy or archived".into()));
    }
    load_session(ctx, id)?;
    let view = route::call::<SessionMsg, _, _>(&names::session(id), |r| SessionMsg::Patch(patch, r)).await??;
    Ok(json_reply(StatusCode::OK, &view))
}

async fn delete_session(ctx: &Context, req: &Request, id: &str) -> Result<Response, ApiError> {
    let q: DeleteSessionQuery = query(req)?;
    let keep_worktree = match q.worktree.as_deref() {
        None | Some("remove") => false,
        Some("keep") => true,
        Some(other) => return Err(ApiError::BadRequest(format!("worktree must be keep or remove, got {other:?}"))),
    };
    load_session(ctx, id)?;
    let id_owned = id.to_string();
    route::call::<SessionsMsg, _, _>(names::SESSIONS, |reply| SessionsMsg::Delete {
        id: id_owned,
        keep_worktree,
        reply,
    })
    .await??;
    Ok(json_reply(StatusCode::OK, &SessionDeleted { id: id.into(), deleted: true }))
}

async fn start_turn(ctx: &Context, req: &Request, id: &str) -> Result<Response, ApiError> {
    no_query(req)?;
    let body: StartTurnRequest = json_body(req)?;
    load_session(ctx, id)?;
    let turn_id =
        route::call::<SessionMsg, _, _>(&names::session(id), |r| SessionMsg::StartTurn(body.text, r)).await??;
    Ok(json_reply(StatusCode::ACCEPTED, &StartTurnResponse { turn_id: turn_id.into() }))
}

fn list_turns(ctx: &Context, req: &Request, id: &str) -> Result<Response, ApiError> {
    no_query(req)?;
    load_session(ctx, id)?;
    let turns: Vec<TurnView> =
        ctx.store.scan_prefix::<TurnRecord>(&TurnRecord::prefix_for(id))?.iter().map(TurnRecord::view).collect();
    Ok(json_reply(StatusCode::OK, &TurnList { turns }))
}

async fn interrupt(ctx: &Context, req: &Request, id: &str, turn_id: &str) -> Result<Response, ApiError> {
    no_query(req)?;
    load_session(ctx, id)?;
    let t = turn_id.to_string();
    route::call::<SessionMsg, _, _>(&names::session(id), |r| SessionMsg::Interrupt(t, r)).await??;
    Ok(json_reply(StatusCode::ACCEPTED, &Interrupting { turn_id: turn_id.into(), interrupting: true }))
}

async fn steer(ctx: &Context, req: &Request, id: &str, turn_id: &str) -> Result<Response, ApiError> {
    no_query(req)?;
    let body: SteerRequest = json_body(req)?;
    if body.text.trim().is_empty() {
        return Err(ApiError::BadRequest("text must not be empty".into()));
    }
    load_session(ctx, id)?;
    let t = turn_id.to_string();
    route::call::<SessionMsg, _, _>(&names::session(id), |r| SessionMsg::Steer(t, body.text, r)).await??;
    Ok(json_reply(StatusCode::ACCEPTED, &Steered { turn_id: turn_id.into(), steered: true }))
}

fn list_approvals(ctx: &Context, req: &Request) -> Result<Response, ApiError> {
    let q: ApprovalsQuery = query(req)?;
    let status = match q.status.as_deref() {
        None | Some("all") => None,
        Some(s) => Some(s.parse::<ApprovalStatus>().map_err(ApiError::BadRequest)?),
    };
    let mut approvals: Vec<ApprovalView> = ctx
        .store
        .scan::<ApprovalRecord>()?
        .iter()
        .filter(|a| status.is_none_or(|s| a.status == s))
        .filter(|a| q.session.as_deref().is_none_or(|s| a.session_id == s))
        .map(ApprovalRecord::view)
        .collect();
    // A workflow's gates are approvals too, of no session.
    if q.session.is_none() {
        let gates = ctx.store.scan::<GateRecord>()?;
        approvals.extend(gates.iter().filter(|g| status.is_none_or(|s| g.status == s)).map(GateRecord::view));
    }
    // And what a terminal action waits for.
    let held = ctx.store.scan::<TerminalApprovalRecord>()?;
    approvals.extend(
        held.iter()
            .filter(|a| status.is_none_or(|s| a.status == s))
            .filter(|a| q.session.as_deref().is_none_or(|s| a.session_id.as_deref() == Some(s)))
            .map(TerminalApprovalRecord::view),
    );
    approvals.sort_by(|a, b| a.requested_at.cmp(&b.requested_at));
    Ok(json_reply(StatusCode::OK, &ApprovalList { approvals }))
}

fn load_approval(ctx: &Context, id: &str) -> Result<ApprovalRecord, ApiError> {
    if !valid_id(id) {
        return Err(ApiError::NotFound(format!("approval {id:?} not found")));
    }
    ctx.store.get::<ApprovalRecord>(id)?.ok_or_else(|| ApiError::NotFound(format!("approval {id} not found")))
}

fn get_approval(ctx: &Context, req: &Request, id: &str) -> Result<Response, ApiError> {
    no_query(req)?;
    if valid_id(id) {
        if let Some(gate) = ctx.store.get::<GateRecord>(id)? {
            return Ok(json_reply(StatusCode::OK, &gate.view()));
        }
        if let Some(held) = ctx.store.get::<TerminalApprovalRecord>(id)? {
            return Ok(json_reply(StatusCode::OK, &held.view()));
        }
    }
    Ok(json_reply(StatusCode::OK, &load_approval(ctx, id)?.view()))
}

async fn decide(ctx: &Context, req: &Request, id: &str) -> Result<Response, ApiError> {
    no_query(req)?;
    let body: DecisionRequest = json_body(req)?;
    if valid_id(id) {
        if let Some(gate) = ctx.store.get::<GateRecord>(id)? {
            return super::workflows::decide_gate(ctx, gate, body.decision).await;
        }
        if ctx.store.get::<TerminalApprovalRecord>(id)?.is_some() {
            let approval_id = id.to_string();
            let decision = body.decision;
            let view = route::call_within::<bosun_actors::terminals::TerminalsMsg, _, _>(
                names::TERMINALS,
                std::time::Duration::from_secs(40),
                |reply| bosun_actors::terminals::TerminalsMsg::Decide { approval_id, decision, reply },
            )
            .await??;
            return Ok(json_reply(StatusCode::OK, &view));
        }
    }
    let approval = load_approval(ctx, id)?;
    let approval_id = id.to_string();
    let view = route::call::<SessionMsg, _, _>(&names::session(&approval.session_id), |r| {
        SessionMsg::Decide(approval_id, body.decision, r)
    })
    .await??;
    Ok(json_reply(StatusCode::OK, &view))
}

fn events(ctx: &Context, req: &Request) -> Result<Response, ApiError> {
    let q: EventsQuery = query(req)?;
    ctx.metrics.polled(poller(req));
    let limit = q.limit.unwrap_or(1000);
    if limit == 0 || limit > MAX_EVENTS_PAGE {
        return Err(ApiError::BadRequest(format!("limit must be 1 to {MAX_EVENTS_PAGE}")));
    }
    let topic = match (q.session, q.topic) {
        (Some(_), Some(_)) => return Err(ApiError::BadRequest("give session or topic, not both".into())),
        (Some(s), None) => Some(
            Topic::parse(&format!("session:{s}"))
                .ok_or_else(|| ApiError::BadRequest(format!("bad session id {s:?}")))?,
        ),
        (None, Some(t)) => Some(Topic::parse(&t).ok_or_else(|| ApiError::BadRequest(format!("bad topic {t:?}")))?),
        (None, None) => None,
    };
    // Read the head first: when fewer than `limit` events come back, every
    // matching event up to it has been seen, so `next` may jump to it.
    let head = ctx.store.durable_head();
    let events = ctx.store.events_since(q.since, topic.as_ref(), limit)?;
    let next = match events.last() {
        Some(last) if events.len() == limit => last.seq,
        Some(last) => last.seq.max(head),
        None => q.since.max(head),
    };
    Ok(json_reply(StatusCode::OK, &EventsPage { events, next }))
}

/// How many of a session's events one audit request reads at most, so a
/// session with long streams between its commands cannot make one request
/// scan its whole log; `next` then says where to go on.
const AUDIT_SCAN_BUDGET: usize = 20 * MAX_EVENTS_PAGE;

/// `GET /api/v1/sessions/{id}/audit`: the session's `command:ran`,
/// `file:written` and `file:deleted` events, oldest first, paged like
/// `/api/v1/events`.
fn audit(ctx: &Context, req: &Request, id: &str) -> Result<Response, ApiError> {
    let q: AuditQuery = query(req)?;
    load_session(ctx, id)?;
    let limit = q.limit.unwrap_or(1000);
    if limit == 0 || limit > MAX_EVENTS_PAGE {
        return Err(ApiError::BadRequest(format!("limit must be 1 to {MAX_EVENTS_PAGE}")));
    }
    let topic = Topic::session(id);
    let head = ctx.store.durable_head();
    let mut cursor = q.since;
    let mut scanned = 0;
    let mut entries = Vec::new();
    'pages: while scanned < AUDIT_SCAN_BUDGET {
        let page = ctx.store.events_since(cursor, Some(&topic), MAX_EVENTS_PAGE)?;
        let short = page.len() < MAX_EVENTS_PAGE;
        scanned += page.len();
        for event in page {
            cursor = event.seq;
            if event.kind.is_audit() {
                entries.push(event);
                if entries.len() == limit {
                    break 'pages;
                }
            }
        }
        if short {
            // Every event of the session up to the head has been read.
            cursor = cursor.max(head);
            break;
        }
    }
    Ok(json_reply(StatusCode::OK, &EventsPage { events: entries, next: cursor }))
}

fn providers(ctx: &Context) -> ProviderList {
    let views = ctx.providers.statuses().into_iter().map(|p| ProviderView {
        name: p.spec.name.clone(),
        kind: p.spec.kind.clone(),
        origin: p.spec.origin.as_str().to_string(),
        command: p.spec.command.clone(),
        args: p.spec.args.clone(),
        path: p.resolved.map(|r| r.to_string_lossy().into_owned()),
        version: p.version,
        capabilities: p.capabilities.into(),
        status: p.health.as_str().to_string(),
        running: p.running,
        crashes: p.crashes,
        last_crash: p.last_crash,
        enforcement: p.enforcement.enforcement,
        enforcement_detail: Some(p.enforcement.detail),
        agent: p.enforcement.agent,
    });
    ProviderList { providers: views.collect() }
}

async fn crash(ctx: &Context, req: &Request) -> Result<Response, ApiError> {
    if !ctx.settings.fault_injection {
        return Err(ApiError::Forbidden(
            "fault injection is off; start the daemon with --enable-fault-injection".into(),
        ));
    }
    no_query(req)?;
    let body: CrashRequest = json_body(req)?;
    let sent = super::crash_target(ctx, &body.target)?;
    Ok(json_reply(StatusCode::ACCEPTED, &CrashScheduled { target: body.target, actor: sent }))
}

// ---- The file API: a session's worktree, seen through path-checked operations.

/// The worktree of a session, or 409 if it was created without one.
fn worktree_of(ctx: &Context, id: &str) -> Result<(SessionRecord, std::path::PathBuf), ApiError> {
    let record = load_session(ctx, id)?;
    match record.workspace.as_ref().map(|w| std::path::PathBuf::from(&w.worktree)) {
        Some(path) => Ok((record, path)),
        None => Err(ApiError::Conflict(format!(
            "session {id} has no workspace; create it with \"workspace\":{{\"repo\":..}} to use the file API"
        ))),
    }
}

impl From<WorkspaceError> for ApiError {
    fn from(e: WorkspaceError) -> Self {
        match e {
            WorkspaceError::BadPath(m) => ApiError::BadRequest(m),
            WorkspaceError::NotFound(m) => ApiError::NotFound(m),
            WorkspaceError::TooLarge { .. } => ApiError::FileTooLarge(e.to_string()),
            WorkspaceError::NotText(_) => ApiError::NotText(e.to_string()),
            WorkspaceError::Conflict(m) => ApiError::Conflict(m),
            WorkspaceError::Git { .. } | WorkspaceError::Io { .. } => {
                ApiError::Daemon(bosun_actors::DaemonError::Internal(e.to_string()))
            }
        }
    }
}

async fn list_files(ctx: &Context, req: &Request, id: &str) -> Result<Response, ApiError> {
    let q: PathQuery = query(req)?;
    let (_, root) = worktree_of(ctx, id)?;
    let entries = workspace::list(&root, &q.path)
        .await?
        .into_iter()
        .map(|e| FileEntry { name: e.name, kind: e.kind.to_string(), size: e.size })
        .collect();
    Ok(json_reply(StatusCode::OK, &FileListing { path: q.path, entries }))
}

async fn read_file(ctx: &Context, req: &Request, id: &str) -> Result<Response, ApiError> {
    let q: FilePathQuery = query(req)?;
    let (_, root) = worktree_of(ctx, id)?;
    let content = workspace::read(&root, &q.path).await?;
    Ok(json_reply(StatusCode::OK, &FileContent { path: q.path, content }))
}

/// Makes a change to a session's worktree through its session actor, the
/// one place that changes it (see `bosun_actors::files`).
async fn change_files(id: &str, change: FileChange, timeout: Duration) -> Result<FileChanged, ApiError> {
    let changed =
        route::call_within::<SessionMsg, _, _>(&names::session(id), timeout, |r| SessionMsg::Files(change, r)).await?;
    changed.map_err(|e| match e {
        FilesError::Daemon(e) => e.into(),
        FilesError::Workspace(e) => e.into(),
    })
}

/// How long a write or delete may take (a file of up to 10 MiB, and its
/// audit record).
const FILE_CHANGE_TIMEOUT: Duration = Duration::from_secs(60);

async fn write_file(ctx: &Context, req: &Request, id: &str) -> Result<Response, ApiError> {
    let q: FilePathQuery = query(req)?;
    let body: PutFileRequest = json_body(req)?;
    worktree_of(ctx, id)?;
    let change = FileChange::Write { path: q.path.clone(), content: body.content };
    match change_files(id, change, FILE_CHANGE_TIMEOUT).await? {
        FileChanged::Written { bytes } => Ok(json_reply(StatusCode::OK, &FileWritten { path: q.path, bytes })),
        other => Err(unexpected(other)),
    }
}

async fn delete_file(ctx: &Context, req: &Request, id: &str) -> Result<Response, ApiError> {
    let q: FilePathQuery = query(req)?;
    worktree_of(ctx, id)?;
    match change_files(id, FileChange::Delete { path: q.path.clone() }, FILE_CHANGE_TIMEOUT).await? {
        FileChanged::Deleted { bytes } => {
            Ok(json_reply(StatusCode::OK, &FileDeleted { path: q.path, deleted: true, bytes }))
        }
        other => Err(unexpected(other)),
    }
}

/// An answer of the session actor to a change it was not asked for.
fn unexpected(changed: FileChanged) -> ApiError {
    ApiError::Daemon(bosun_actors::DaemonError::Internal(format!("the session answered {changed:?}")))
}

async fn search(ctx: &Context, req: &Request, id: &str) -> Result<Response, ApiError> {
    let q: SearchQuery = query(req)?;
    let (_, root) = worktree_of(ctx, id)?;
    let results = workspace::search(&root, &q.q)
        .await?
        .into_iter()
        .map(|h| SearchHit { path: h.path, line: h.line, text: h.text })
        .collect();
    Ok(json_reply(StatusCode::OK, &SearchResults { results }))
}

async fn diff(ctx: &Context, req: &Request, id: &str) -> Result<Response, ApiError> {
    no_query(req)?;
    let (record, root) = worktree_of(ctx, id)?;
    let base = record.workspace.map(|w| w.base).unwrap_or_default();
    let diff = workspace::diff(&root, &base).await?;
    Ok(json_reply(StatusCode::OK, &WorktreeDiff { base, diff }))
}

async fn commit(ctx: &Context, req: &Request, id: &str) -> Result<Response, ApiError> {
    no_query(req)?;
    let body: CommitRequest = json_body(req)?;
    worktree_of(ctx, id)?;
    // A commit is local; its push may take the network's time.
    let timeout = bosun_workspace::NETWORK_TIMEOUT + Duration::from_secs(90);
    match change_files(id, FileChange::Commit { message: body.message, push: body.push }, timeout).await? {
        FileChanged::Committed { sha, pushed, push_error } => {
            let reply = CommitResponse { sha, branch: workspace::session_branch(id), pushed, push_error };
            Ok(json_reply(StatusCode::OK, &reply))
        }
        other => Err(unexpected(other)),
    }
}
