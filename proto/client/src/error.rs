//! What can go wrong talking to the daemon, in words a user can act on.

/// An error of the client, or the daemon's own error answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// `--server`, `BOSUN_URL` or the like is not a URL the client can use.
    #[error("invalid server URL {url:?}: {why}")]
    BadUrl { url: String, why: String },
    /// Nothing answers at the daemon's address.
    #[error(
        "cannot reach the bosun daemon at {base} ({cause}); is it running? Start it with `bosun serve`, or point --server or BOSUN_URL at it"
    )]
    Unreachable { base: String, cause: String },
    #[error("the daemon at {base} did not answer {request} within {secs}s")]
    Timeout { base: String, request: String, secs: u64 },
    /// The daemon's answer `{"error":{"code","message"}}`, with its HTTP
    /// status (0 for an error frame on the WebSocket).
    #[error("{message} ({code})")]
    Api { status: u16, code: String, message: String },
    /// Something answered that is not a bosun daemon (or a proxy is in the way).
    #[error(
        "{request} answered HTTP {status} without a bosun error body; is a bosun daemon listening at {base}? ({start})"
    )]
    NotBosun { request: String, status: u16, base: String, start: String },
    /// An answer this client does not understand (a daemon of another version).
    #[error("the answer to {what} is not what this client expects: {source}")]
    Decode {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("the daemon at {base} refused the WebSocket on {url}: HTTP {status}")]
    WebSocketRefused { base: String, url: String, status: u16 },
    #[error("the connection to the daemon dropped and did not come back within {secs}s: {last}")]
    Gone { secs: u64, last: String },
    #[error("{context}: {message}")]
    Transport { context: String, message: String },
}

impl ClientError {
    /// The daemon's error code, for an error answer.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The HTTP status of an error answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } if *status != 0 => Some(*status),
            ClientError::NotBosun { status, .. } => Some(*status),
            _ => None,
        }
    }
}
