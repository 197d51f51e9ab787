//! The front: warp serving the HTTP API and the WebSocket on a listener the
//! daemon bound once, under our own accept loop (`server.rs`), run by a
//! supervised actor. If the front crashes it is restarted on the same
//! listener; open WebSocket connections are not cut.

mod api;
mod auth;
mod authority;
mod closing;
mod connections;
mod cross_site;
mod error;
mod modules;
pub mod openapi;
mod pwa;
mod secrets;
mod server;
mod tasks;
mod terminal_ws;
mod terminals;
mod workflows;
mod ws;

pub use closing::Farewell;
pub use connections::{Connections, Limits as ConnectionLimits};
pub use error::ApiError;

use bosun_actors::diagnostics::DiagnosticsMsg;
use bosun_actors::provider::ProviderMsg;
use bosun_actors::providers::ProvidersMsg;
use bosun_actors::session::SessionMsg;
use bosun_actors::sessions::SessionsMsg;
use bosun_actors::tasks::TasksMsg;
use bosun_actors::terminals::binding::BindingMsg;
use bosun_actors::terminals::TerminalsMsg;
use bosun_actors::turn::TurnMsg;
use bosun_actors::workflow::RunMsg;
use bosun_actors::workflows::WorkflowsMsg;
use bosun_actors::{names, route, Context};
use bosun_proto::{WireFormat, MSGPACK_SUBPROTOCOL};
use bosun_state::SessionRecord;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;
use warp::http::{HeaderMap, Method};
use warp::path::FullPath;
use warp::reply::Reply;
use warp::Filter;

/// Largest WebSocket frame a client may send.
const MAX_WS_FRAME: usize = 64 * 1024;

/// Who a WebSocket upgrade (`/ws`, `/ws/terminal/{id}`) comes from and
/// what it may do: refused (the answer to send), or admitted with its
/// access. `None` access: it must authenticate in its first message, and
/// until then the connection may send only [`ws::PRE_AUTH_BYTES`], whatever
/// its frames claim (the socket's handler lifts the limit once it has).
fn admit_socket(
    auth: &Arc<crate::auth::Auth>,
    farewell: &Arc<Farewell>,
    conn: &server::ConnInfo,
    headers: &HeaderMap,
    query: &str,
    authority: &authority::RequestAuthority,
) -> Result<Admission, Box<warp::reply::Response>> {
    let peer = auth.peer(Some(conn.peer.ip()), headers, authority.loopback);
    let access = ws::admit(auth, headers, query, peer, &authority.text)
        .map_err(|refused| Box::new(auth::error_response(&refused)))?;
    if access.is_none() {
        conn.slot.budget.limit(ws::PRE_AUTH_BYTES);
    }
    Ok(Admission { peer, access, auth: auth.clone(), slot: conn.slot.clone(), goodbye: farewell.enter() })
}

/// A WebSocket let in by [`admit_socket`]: who it is, what it may do, and
/// its connection's slot (whose read budget its handler lifts).
pub(crate) struct Admission {
    pub peer: crate::auth::Peer,
    /// `None`: it must still authenticate, in its first message.
    pub access: Option<crate::auth::Access>,
    pub auth: Arc<crate::auth::Auth>,
    pub slot: Arc<connections::Slot>,
    /// Counts it among the open sockets, and tells it when the daemon stops.
    pub goodbye: closing::SocketGuard,
}

pub fn routes(
    ctx: Context,
    auth: Arc<crate::auth::Auth>,
    farewell: Arc<Farewell>,
    secrets: Arc<crate::secrets::SecretStore>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = std::convert::Infallible> + Clone {
    let ws_ctx = ctx.clone();
    let ws_auth = auth.clone();
    let ws_farewell = farewell.clone();
    // What our server (server.rs) knows of the connection and the request's
    // authority, which warp's filters cannot see.
    let boundary = warp::ext::get::<server::ConnInfo>().and(warp::ext::get::<authority::RequestAuthority>());
    let websocket = warp::path("ws")
        .and(warp::path::end())
        .and(warp::ws())
        .and(warp::header::optional::<String>("sec-websocket-protocol"))
        .and(warp::header::headers_cloned())
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(boundary)
        .map(
            move |ws: warp::ws::Ws,
                  protocols: Option<String>,
                  headers: HeaderMap,
                  query: String,
                  conn: server::ConnInfo,
                  authority: authority::RequestAuthority| {
                let ctx = ws_ctx.clone();
                let auth = ws_auth.clone();
                let admission = match admit_socket(&auth, &ws_farewell, &conn, &headers, &query, &authority) {
                    Ok(admission) => admission,
                    Err(refused) => return *refused,
                };
                let msgpack =
                    protocols.as_deref().is_some_and(|p| p.split(',').any(|p| p.trim() == MSGPACK_SUBPROTOCOL));
                let format = if msgpack { WireFormat::MsgPack } else { WireFormat::Json };
                // The frame size too: the message size alone lets one huge
                // frame be buffered before it is refused.
                let reply = ws
                    .max_message_size(MAX_WS_FRAME)
                    .max_frame_size(MAX_WS_FRAME)
                    .on_upgrade(move |socket| ws::serve(socket, ctx, format, admission));
                if msgpack {
                    warp::reply::with_header(reply, "sec-websocket-protocol", MSGPACK_SUBPROTOCOL).into_response()
                } else {
                    reply.into_response()
                }
            },
        );
    let term_ctx = ctx.clone();
    let term_auth = auth.clone();
    let terminal = warp::path!("ws" / "terminal" / String)
        .and(warp::ws())
        .and(warp::header::headers_cloned())
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(boundary)
        .map(
            move |id: String,
                  ws: warp::ws::Ws,
                  headers: HeaderMap,
                  query: String,
                  conn: server::ConnInfo,
                  authority: authority::RequestAuthority| {
                let ctx = term_ctx.clone();
                let auth = term_auth.clone();
                let admission = match admit_socket(&auth, &farewell, &conn, &headers, &query, &authority) {
                    Ok(admission) => admission,
                    Err(refused) => return *refused,
                };
                let from = match terminal_ws::from_offset(&query) {
                    Ok(from) => from,
                    Err(e) => return ApiError::BadRequest(e).into_response(),
                };
                // Who may not see it is not told it exists.
                if admission.access.is_some() && !terminal_ws::exists(&ctx, &id) {
                    return ApiError::NotFound(format!("terminal binding {id:?} not found")).into_response();
                }
                ws.max_message_size(MAX_WS_FRAME)
                    .max_frame_size(MAX_WS_FRAME)
                    .on_upgrade(move |socket| terminal_ws::serve(socket, ctx, admission, id, from))
                    .into_response()
            },
        );
    let api = warp::method()
        .and(warp::path::full())
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(warp::header::headers_cloned())
        .and(boundary)
        .and(warp::body::stream())
        .then(
            move |method: Method,
                  path: FullPath,
                  query: String,
                  headers: HeaderMap,
                  conn: server::ConnInfo,
                  authority: authority::RequestAuthority,
                  body| {
                let ctx = ctx.clone();
                let auth = auth.clone();
                let secrets = secrets.clone();
                async move {
                    let peer = auth.peer(Some(conn.peer.ip()), &headers, authority.loopback);
                    let req = api::Request {
                        method,
                        path: path.as_str().to_string(),
                        query,
                        headers,
                        body: bytes::Bytes::new(),
                        peer,
                        authority: authority.text,
                        access: None,
                    };
                    // The body is read only once the head has passed the checks.
                    api::dispatch(&ctx, &auth, &secrets, req, Box::pin(body)).await
                }
            },
        );
    websocket
        .or(terminal)
        .unify()
        .or(api)
        .unify()
        .recover(|rejection: warp::Rejection| async move {
            // Only the WebSocket filter can reject (a plain GET /ws, say).
            let err = if rejection.is_not_found() {
                ApiError::NotFound("no such endpoint".into())
            } else {
                ApiError::BadRequest(format!("{rejection:?}"))
            };
            Ok::<_, std::convert::Infallible>(err.into_response())
        })
        .unify()
        .map(auth::with_security_headers)
}

/// Sends a `Crash` to the actor a `/api/v1/debug/crash` target names.
/// Returns the actor's name.
pub fn crash_target(ctx: &Context, target: &str) -> Result<String, ApiError> {
    let (kind, id) = target.split_once(':').unwrap_or((target, ""));
    // Sent a moment later, so the HTTP answer goes out even when the front itself is the target.
    let later = Duration::from_millis(50);
    let name = match (kind, id) {
        ("front", "") => {
            send_later::<FrontMsg>(names::FRONT, later, || FrontMsg::Crash)?;
            names::FRONT.to_string()
        }
        ("sessions", "") => {
            send_later::<SessionsMsg>(names::SESSIONS, later, || SessionsMsg::Crash)?;
            names::SESSIONS.to_string()
        }
        ("diagnostics", "") => {
            send_later::<DiagnosticsMsg>(names::DIAGNOSTICS, later, || DiagnosticsMsg::Crash)?;
            names::DIAGNOSTICS.to_string()
        }
        ("providers", "") => {
            send_later::<ProvidersMsg>(names::PROVIDERS, later, || ProvidersMsg::Crash)?;
            names::PROVIDERS.to_string()
        }
        ("workflows", "") => {
            send_later::<WorkflowsMsg>(names::WORKFLOWS, later, || WorkflowsMsg::Crash)?;
            names::WORKFLOWS.to_string()
        }
        ("tasks", "") => {
            send_later::<TasksMsg>(names::TASKS, later, || TasksMsg::Crash)?;
            names::TASKS.to_string()
        }
        ("terminals", "") => {
            send_later::<TerminalsMsg>(names::TERMINALS, later, || TerminalsMsg::Crash)?;
            names::TERMINALS.to_string()
        }
        ("binding", id) if !id.is_empty() => {
            let name = names::binding(id);
            send_later::<BindingMsg>(&name, later, || BindingMsg::Crash)?;
            name
        }
        ("workflow", id) if !id.is_empty() => {
            let name = names::workflow(id);
            send_later::<RunMsg>(&name, later, || RunMsg::Crash)?;
            name
        }
        ("session", id) if !id.is_empty() => {
            let name = names::session(id);
            send_later::<SessionMsg>(&name, later, || SessionMsg::Crash)?;
            name
        }
        ("provider", id) if !id.is_empty() => {
            let name = names::provider(id);
            send_later::<ProviderMsg>(&name, later, || ProviderMsg::Crash)?;
            name
        }
        ("turn", id) if !id.is_empty() => {
            let session = ctx
                .store
                .scan::<SessionRecord>()?
                .into_iter()
                .find(|s| s.active_turn.as_deref() == Some(id))
                .ok_or_else(|| ApiError::NotFound(format!("no active turn {id}")))?;
            let name = names::turn(&session.id);
            send_later::<TurnMsg>(&name, later, || TurnMsg::Crash)?;
            name
        }
        _ => {
            return Err(ApiError::BadRequest(format!(
            "unknown target {target:?}; use session:ID, turn:ID, provider:SESSION_ID, workflow:RUN_ID, binding:ID, front, sessions, workflows, tasks, terminals, providers or diagnostics"
        )))
        }
    };
    tracing::warn!(actor = %name, "fault injected");
    Ok(name)
}

fn send_later<M: ractor::Message>(
    name: &str,
    delay: Duration,
    msg: impl FnOnce() -> M + Send + 'static,
) -> Result<(), ApiError> {
    let actor: ActorRef<M> =
        route::lookup_now(name).ok_or_else(|| ApiError::NotFound(format!("actor {name} is not running")))?;
    actor.send_after(delay, msg);
    Ok(())
}

pub struct Front;

pub struct FrontArgs {
    pub ctx: Context,
    /// Bound once by the daemon, so a restarted front serves the same address.
    pub listener: Arc<TcpListener>,
    pub auth: Arc<crate::auth::Auth>,
    /// The data dir's secrets (`/api/v1/secrets`).
    pub secrets: Arc<crate::secrets::SecretStore>,
    /// Made once by the daemon too: connections outlive a restarted front.
    pub connections: Arc<Connections>,
    /// The goodbye the daemon says to every socket when it stops.
    pub farewell: Arc<Farewell>,
    /// `[metrics] listen`: a second listener for `GET /metrics` alone.
    pub metrics_listener: Option<MetricsListener>,
}

/// The loopback listener that serves only `GET /metrics`, without a token,
/// with connections of its own (its scrapers never take the API's).
#[derive(Clone)]
pub struct MetricsListener {
    pub listener: Arc<TcpListener>,
    pub connections: Arc<Connections>,
}

/// What the metrics listener answers: `GET /metrics`, and a JSON error for
/// anything else.
fn metrics_routes(
    ctx: Context,
) -> impl Filter<Extract = (warp::reply::Response,), Error = std::convert::Infallible> + Clone {
    warp::method().and(warp::path::full()).map(move |method: Method, path: FullPath| {
        let answer = match (path.as_str(), &method) {
            ("/metrics", &Method::GET) => api::metrics(&ctx),
            ("/metrics", _) => Err(ApiError::MethodNotAllowed {
                method: method.to_string(),
                path: path.as_str().to_string(),
                allowed: "GET",
            }),
            _ => Err(ApiError::NotFound("this listener serves GET /metrics only".into())),
        };
        auth::with_security_headers(answer.unwrap_or_else(|e| e.into_response()))
    })
}

pub enum FrontMsg {
    Crash,
}

pub struct FrontState {
    ctx: Context,
    server: server::Server,
    metrics_server: Option<server::Server>,
}

impl Actor for Front {
    type Msg = FrontMsg;
    type State = FrontState;
    type Arguments = FrontArgs;

    async fn pre_start(&self, _myself: ActorRef<FrontMsg>, args: FrontArgs) -> Result<FrontState, ActorProcessingErr> {
        let std_listener = args.listener.try_clone()?;
        std_listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(std_listener)?;
        let server = server::Server::start(
            listener,
            routes(args.ctx.clone(), args.auth.clone(), args.farewell, args.secrets.clone()),
            args.connections,
        );
        let metrics_server = match args.metrics_listener {
            Some(metrics) => {
                let std_listener = metrics.listener.try_clone()?;
                std_listener.set_nonblocking(true)?;
                let listener = tokio::net::TcpListener::from_std(std_listener)?;
                Some(server::Server::start(listener, metrics_routes(args.ctx.clone()), metrics.connections))
            }
            None => None,
        };
        Ok(FrontState { ctx: args.ctx, server, metrics_server })
    }

    async fn post_stop(&self, _myself: ActorRef<FrontMsg>, state: &mut FrontState) -> Result<(), ActorProcessingErr> {
        state.server.stop();
        if let Some(metrics) = &state.metrics_server {
            metrics.stop();
        }
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<FrontMsg>,
        msg: FrontMsg,
        state: &mut FrontState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            FrontMsg::Crash => {
                if state.ctx.settings.fault_injection {
                    // Stop accepting on the old server before the panic unwinds,
                    // so the restarted front is the only one serving.
                    state.server.stop();
                    if let Some(metrics) = &state.metrics_server {
                        metrics.stop();
                    }
                    panic!("injected fault: front");
                }
            }
        }
        Ok(())
    }
}
