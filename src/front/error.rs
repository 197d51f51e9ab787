//! API errors and their HTTP form: `{"error":{"code","message"}}` with the
//! status that fits.

use bosun_actors::DaemonError;
use bosun_proto::ErrorBody;
use warp::http::StatusCode;
use warp::reply::{Reply, Response};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Daemon(#[from] DaemonError),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{method} is not allowed on {path}; allowed: {allowed}")]
    MethodNotAllowed { method: String, path: String, allowed: &'static str },
    #[error("the body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("the body must be JSON (content-type: application/json), got {0:?}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    Forbidden(String),
    /// A state-changing request with neither a JSON body nor `X-Bosun-Client`
    /// (front/cross_site.rs): what a cross-site form would send.
    #[error(
        "a request that changes state must carry content-type: application/json or an X-Bosun-Client header \
         (which a cross-site form cannot send)"
    )]
    NotOurClient,
    /// A request whose authority (Host, absolute URI) is missing, repeated or malformed.
    #[error(transparent)]
    Authority(#[from] super::authority::AuthorityError),
    /// A request that the session's state forbids (a file API call on a session without a workspace).
    #[error("{0}")]
    Conflict(String),
    /// A file too large for the file API.
    #[error("{0}")]
    FileTooLarge(String),
    /// A file the file API cannot return as text.
    #[error("{0}")]
    NotText(String),
    #[error("store: {0}")]
    Store(#[from] bosun_state::StoreError),
    /// A module refused, with its own code (`bad_signature`, `downgrade`...).
    #[error(transparent)]
    Module(#[from] crate::modules::InstallError),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Daemon(e) => match e {
                DaemonError::BadRequest(_) => StatusCode::BAD_REQUEST,
                DaemonError::NotFound(_) => StatusCode::NOT_FOUND,
                DaemonError::Busy { .. } | DaemonError::Conflict(_) | DaemonError::PolicyUnenforceable(_) => {
                    StatusCode::CONFLICT
                }
                DaemonError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
                DaemonError::NotSupported(_) => StatusCode::NOT_IMPLEMENTED,
                DaemonError::Forbidden(_) => StatusCode::FORBIDDEN,
                DaemonError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            },
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotOurClient => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Authority(_) => StatusCode::BAD_REQUEST,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::FileTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::NotText(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Module(e) => match e.code() {
                // Not signed by a key this daemon trusts.
                "bad_signature" | "unknown_key" => StatusCode::FORBIDDEN,
                // Would undo or contradict what is installed or configured.
                "downgrade" | "version_conflict" | "provider_conflict" | "no_previous" => StatusCode::CONFLICT,
                "not_found" => StatusCode::NOT_FOUND,
                "payload_too_large" => StatusCode::PAYLOAD_TOO_LARGE,
                "internal" => StatusCode::INTERNAL_SERVER_ERROR,
                // Signed, but not installable: expired, altered, unsafe, too new.
                _ => StatusCode::UNPROCESSABLE_ENTITY,
            },
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Daemon(e) => e.code(),
            ApiError::BadRequest(_) => "bad_request",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotOurClient => "unsupported_media_type",
            ApiError::Authority(_) => "bad_request",
            ApiError::Conflict(_) => "conflict",
            ApiError::FileTooLarge(_) => "payload_too_large",
            ApiError::NotText(_) => "unsupported_media_type",
            ApiError::Store(_) => "internal",
            ApiError::Module(e) => e.code(),
        }
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody::new(self.code(), self.to_string())
    }
}

impl Reply for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(code = self.code(), error = %self, "request failed");
        }
        let mut response = warp::reply::with_status(warp::reply::json(&self.body()), status).into_response();
        match &self {
            ApiError::MethodNotAllowed { allowed, .. } => {
                if let Ok(value) = warp::http::HeaderValue::from_str(allowed) {
                    response.headers_mut().insert(warp::http::header::ALLOW, value);
                }
            }
            // The rest of the body is never read (or the request cannot be
            // trusted to end where it says), so the connection cannot carry
            // another request: say so, or a client may reuse it.
            ApiError::PayloadTooLarge { .. } | ApiError::Authority(_) => {
                response
                    .headers_mut()
                    .insert(warp::http::header::CONNECTION, warp::http::HeaderValue::from_static("close"));
            }
            _ => {}
        }
        response
    }
}
