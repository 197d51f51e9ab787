//! The auth rule at the HTTP boundary: the gate in front of `/api`, `/ws` and
//! `/health`, the `/auth/...` endpoints, and the security headers every
//! response carries.

use super::api::Request;
use crate::auth::{Access, Auth, AuthError};
use bosun_proto::{
    DeviceList, DeviceRevoked, DeviceView, ErrorBody, Pairing, TokenRequest, TokenResponse, TotpRequest, TotpStatus,
};
use serde::{Deserialize, Serialize};
use warp::http::header::{HeaderValue, AUTHORIZATION, RETRY_AFTER, WWW_AUTHENTICATE};
use warp::http::{HeaderMap, Method, StatusCode};
use warp::reply::{Reply, Response};

/// For a same-origin app with no inline script or style; `ws:`/`wss:` let
/// the page open its own WebSocket (some browsers do not count it as 'self').
const CSP: &str = "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; style-src 'self'; \
                   script-src 'self'; frame-ancestors 'none'";

/// Adds the headers every answer carries, pages and API alike.
pub fn with_security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    // A page that set its own policy keeps it.
    headers.entry("content-security-policy").or_insert(HeaderValue::from_static(CSP));
    headers.entry("x-content-type-options").or_insert(HeaderValue::from_static("nosniff"));
    headers.entry("referrer-policy").or_insert(HeaderValue::from_static("no-referrer"));
    // For browsers that predate frame-ancestors.
    headers.entry("x-frame-options").or_insert(HeaderValue::from_static("DENY"));
    response
}

/// The HTTP form of an auth failure, in the API's error shape.
pub fn error_response(e: &AuthError) -> Response {
    let (status, code) = match e {
        AuthError::Missing | AuthError::InvalidToken | AuthError::BadCode | AuthError::Totp => {
            (StatusCode::UNAUTHORIZED, "unauthorized")
        }
        AuthError::AdminOnly | AuthError::ForeignOrigin => (StatusCode::FORBIDDEN, "forbidden"),
        AuthError::Limited(_) => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
        AuthError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
        AuthError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        AuthError::Store(_) | AuthError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    };
    if status.is_server_error() {
        tracing::error!(error = %e, "auth failed");
    }
    let body = ErrorBody::new(code, e.to_string());
    let mut response = warp::reply::with_status(warp::reply::json(&body), status).into_response();
    match e {
        AuthError::Limited(secs) => {
            response.headers_mut().insert(RETRY_AFTER, HeaderValue::from(*secs));
        }
        AuthError::Missing | AuthError::InvalidToken => {
            response.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        _ => {}
    }
    response
}

/// The token of `Authorization: Bearer <token>`, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Largest body under `/auth/`: the pairing exchange, which anyone may
/// send, needs a few hundred bytes.
pub const MAX_AUTH_BODY_BYTES: usize = 4 * 1024;

/// The gate, from the head alone: `Ok(None)` for `/auth/token` (which
/// authenticates by its body, and counts its failures itself), the admin
/// credential for the rest of `/auth/`, the auth rule for everything else
/// but the static assets.
pub fn gate(auth: &Auth, req: &Request) -> Result<Option<Access>, AuthError> {
    let Some(rest) = req.path.strip_prefix("/auth/") else {
        let access = auth.authorize(req.peer, bearer(&req.headers))?;
        // Installing a module puts a program on the machine that sessions
        // will run: the admin credential only, decided before the (large)
        // body is read.
        if super::modules::admin_only(&req.path) && access != Access::Admin {
            return Err(AuthError::AdminOnly);
        }
        return Ok(Some(access));
    };
    if rest.trim_end_matches('/') == "token" {
        return Ok(None);
    }
    match auth.authorize(req.peer, bearer(&req.headers))? {
        Access::Admin => Ok(Some(Access::Admin)),
        _ => Err(AuthError::AdminOnly),
    }
}

/// The body length a request announces: its content-length, or none.
pub fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(warp::http::header::CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

/// A refusal sent before the request's body was read: if it has one, the
/// connection cannot carry another request, so say so (hyper then closes it
/// rather than reading the rest).
pub fn unread_body(headers: &HeaderMap, mut response: Response) -> Response {
    let has_body = headers.contains_key(warp::http::header::TRANSFER_ENCODING)
        || (headers.contains_key(warp::http::header::CONTENT_LENGTH) && declared_length(headers) != Some(0));
    if has_body {
        response.headers_mut().insert(warp::http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

fn json_reply<T: Serialize>(status: StatusCode, value: &T) -> Response {
    warp::reply::with_status(warp::reply::json(value), status).into_response()
}

fn json_body<T: for<'de> Deserialize<'de>>(req: &Request) -> Result<T, AuthError> {
    let content_type = req.headers.get(warp::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !content_type.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case("application/json") {
        return Err(AuthError::BadRequest(format!(
            "the body must be JSON (content-type: application/json), got {content_type:?}"
        )));
    }
    serde_json::from_slice(&req.body).map_err(|e| AuthError::BadRequest(format!("invalid JSON body: {e}")))
}

/// `/auth/...`: `POST /auth/token` needs no token; the rest is for the admin.
pub async fn route(auth: &Auth, req: &Request, rest: &[&str]) -> Response {
    match route_inner(auth, req, rest).await {
        Ok(response) => response,
        Err(e) => error_response(&e),
    }
}

async fn route_inner(auth: &Auth, req: &Request, rest: &[&str]) -> Result<Response, AuthError> {
    let not_allowed = |allowed: &str| {
        let body = ErrorBody::new(
            "method_not_allowed",
            format!("{} is not allowed on {}; allowed: {allowed}", req.method, req.path),
        );
        let mut r = json_reply(StatusCode::METHOD_NOT_ALLOWED, &body);
        if let Ok(v) = HeaderValue::from_str(allowed) {
            r.headers_mut().insert(warp::http::header::ALLOW, v);
        }
        r
    };
    if rest == ["token"] {
        if req.method != Method::POST {
            return Ok(not_allowed("POST"));
        }
        let body: TokenRequest = json_body(req)?;
        let (token, device_id) =
            auth.exchange(req.peer.client, &body.pairing_code, &body.device_name, body.totp.as_deref()).await?;
        return Ok(json_reply(StatusCode::OK, &TokenResponse { token, device_id: device_id.into() }));
    }
    // Everything else under /auth manages devices: the admin credential
    // only, as the gate checked before the body was read.
    if req.access != Some(Access::Admin) {
        return Err(AuthError::AdminOnly);
    }
    match (rest, req.method.clone()) {
        (["pairing"], Method::POST) => {
            let (code, expires) = auth.create_pairing().await?;
            let expires_at = chrono::DateTime::from_timestamp(expires as i64, 0)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                .unwrap_or_default();
            Ok(json_reply(StatusCode::CREATED, &Pairing { code, expires_at }))
        }
        (["pairing"], _) => Ok(not_allowed("POST")),
        (["devices"], Method::GET) => {
            // Never the token hash: it is of no use to a client.
            let devices: Vec<_> = auth
                .devices()?
                .into_iter()
                .map(|d| DeviceView { id: d.id.into(), name: d.name, created_at: d.created_at })
                .collect();
            Ok(json_reply(StatusCode::OK, &DeviceList { devices }))
        }
        (["devices"], _) => Ok(not_allowed("GET")),
        (["devices", id], Method::DELETE) => {
            if auth.revoke(id).await? {
                Ok(json_reply(StatusCode::OK, &DeviceRevoked { id: (*id).into(), revoked: true }))
            } else {
                let body = ErrorBody::new("not_found", format!("device {id} not found"));
                Ok(json_reply(StatusCode::NOT_FOUND, &body))
            }
        }
        (["devices", _], _) => Ok(not_allowed("DELETE")),
        (["totp"], Method::GET) => {
            Ok(json_reply(StatusCode::OK, &TotpStatus { enabled: auth.totp_enabled()?, otpauth_url: None }))
        }
        (["totp"], Method::POST) => {
            let body: TotpRequest = json_body(req)?;
            if body.enabled {
                let url = auth.totp_enable().await?;
                Ok(json_reply(StatusCode::OK, &TotpStatus { enabled: true, otpauth_url: Some(url) }))
            } else {
                auth.totp_disable().await?;
                Ok(json_reply(StatusCode::OK, &TotpStatus { enabled: false, otpauth_url: None }))
            }
        }
        (["totp"], _) => Ok(not_allowed("GET, POST")),
        _ => {
            let body = ErrorBody::new("not_found", format!("no such endpoint: {}", req.path));
            Ok(json_reply(StatusCode::NOT_FOUND, &body))
        }
    }
}
