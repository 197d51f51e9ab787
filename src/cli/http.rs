//! The daemon's address and a small JSON-over-HTTP helper.
//!
//! Every answer is kept as the text the daemon sent, so `--json` can print it
//! untouched, and is parsed into a `bosun-proto` type only for human output.
//! A non-2xx answer becomes an [`ApiError`] carrying the daemon's own code
//! and message.

use anyhow::{anyhow, bail, Context as _};
use bosun_proto::{ErrorBody, ErrorDetail};
use reqwest::{Method, Url};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt;
use std::time::Duration;

/// Long enough for the daemon's own 3 s restart window (503 `unavailable`),
/// short enough that a wedged daemon does not hang a script forever.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const CLIENT_HEADER: &str = "x-bosun-client";
const CLIENT_NAME: &str = concat!("bosun-cli/", env!("CARGO_PKG_VERSION"));

/// An error answer from the daemon: `{"error":{"code","message"}}`.
#[derive(Debug)]
pub struct ApiError {
    pub code: String,
    pub message: String,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

impl std::error::Error for ApiError {}

impl From<ErrorDetail> for ApiError {
    fn from(e: ErrorDetail) -> ApiError {
        ApiError { code: e.code, message: e.message }
    }
}

/// A successful answer, as the daemon sent it.
pub struct Answer {
    pub text: String,
}

impl Answer {
    /// Parses the answer; `what` names it in the error if the daemon sent
    /// something this client does not understand (e.g. a different version).
    pub fn parse<T: DeserializeOwned>(&self, what: &str) -> anyhow::Result<T> {
        serde_json::from_str(&self.text).with_context(|| format!("reading {what} from the daemon's answer"))
    }
}

/// The daemon at `--server`.
pub struct Server {
    base: Url,
    http: reqwest::Client,
    /// Sent as `Authorization: Bearer` (and `?token=` on the WebSocket).
    token: Option<String>,
}

impl Server {
    pub fn new(server: &str) -> anyhow::Result<Server> {
        let base = parse_base(server)?;
        // Says the request is ours, not a cross-site form (docs/PROTOCOL.md):
        // the daemon refuses state-changing requests without it or a JSON body.
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(CLIENT_HEADER, reqwest::header::HeaderValue::from_static(CLIENT_NAME));
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .context("setting up the HTTP client")?;
        Ok(Server { base, http, token: None })
    }

    /// Sends `token` with every request: the admin credential or a device token.
    pub fn with_token(mut self, token: Option<String>) -> Server {
        self.token = token.filter(|t| !t.is_empty());
        self
    }

    /// The base URL, as shown in messages.
    pub fn base(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    /// The URL of an endpoint. Segments are percent-encoded one by one, so an
    /// id typed by the user can never reach another endpoint (`../`, `?`).
    pub fn endpoint(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        // An http URL always has a path, so this cannot fail; if it somehow
        // did, the daemon would answer 404 and say which path it got.
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// The WebSocket URL (`ws://host/ws`), derived from `--server`.
    pub fn ws_endpoint(&self) -> anyhow::Result<Url> {
        let mut url = self.endpoint(&["ws"]);
        url.set_scheme("ws").map_err(|()| anyhow!("cannot turn {url} into a ws:// URL"))?;
        // A WebSocket client cannot always set headers; the daemon takes the
        // token from the query too.
        if let Some(token) = &self.token {
            url.query_pairs_mut().append_pair("token", token);
        }
        Ok(url)
    }

    pub async fn get(&self, segments: &[&str], query: &[(&str, String)]) -> anyhow::Result<Answer> {
        self.call(Method::GET, segments, query, None::<&()>, REQUEST_TIMEOUT).await
    }

    pub async fn post<B: Serialize>(&self, segments: &[&str], body: Option<&B>) -> anyhow::Result<Answer> {
        self.call(Method::POST, segments, &[], body, REQUEST_TIMEOUT).await
    }

    /// A POST known to take long on the daemon's side (a session whose
    /// workspace needs a clone), waiting up to `timeout`.
    pub async fn post_within<B: Serialize>(
        &self,
        segments: &[&str],
        body: Option<&B>,
        timeout: Duration,
    ) -> anyhow::Result<Answer> {
        self.call(Method::POST, segments, &[], body, timeout).await
    }

    pub async fn patch<B: Serialize>(&self, segments: &[&str], body: &B) -> anyhow::Result<Answer> {
        self.call(Method::PATCH, segments, &[], Some(body), REQUEST_TIMEOUT).await
    }

    pub async fn delete(&self, segments: &[&str]) -> anyhow::Result<Answer> {
        self.delete_with(segments, &[]).await
    }

    pub async fn delete_with(&self, segments: &[&str], query: &[(&str, String)]) -> anyhow::Result<Answer> {
        self.call(Method::DELETE, segments, query, None::<&()>, REQUEST_TIMEOUT).await
    }

    async fn call<B: Serialize>(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, String)],
        body: Option<&B>,
        timeout: Duration,
    ) -> anyhow::Result<Answer> {
        let url = self.endpoint(segments);
        let mut request = self.http.request(method.clone(), url.clone()).timeout(timeout);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if !query.is_empty() {
            request = request.query(query);
        }
        if let Some(body) = body {
            // `.json` also sets `content-type: application/json`, which the
            // daemon insists on.
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| self.transport_error(e, &method, &url, timeout))?;
        let status = response.status();
        let text = response.text().await.with_context(|| format!("reading the answer to {method} {url}"))?;
        if status.is_success() {
            return Ok(Answer { text });
        }
        match serde_json::from_str::<ErrorBody>(&text) {
            Ok(body) => Err(ApiError::from(body.error).into()),
            // Not the daemon's error shape: something else answers on that
            // port, or a proxy is in the way. Show the start of what came back.
            Err(_) => {
                let start: String = text.split_whitespace().collect::<Vec<_>>().join(" ").chars().take(120).collect();
                bail!("{method} {url} answered HTTP {status} without a bosun error body; is a bosun daemon listening at {}? ({start})", self.base())
            }
        }
    }

    fn transport_error(&self, e: reqwest::Error, method: &Method, url: &Url, timeout: Duration) -> anyhow::Error {
        if e.is_connect() {
            return self.unreachable(&root_cause(&e));
        }
        if e.is_timeout() {
            return anyhow!(
                "the daemon at {} did not answer {method} {url} within {}s",
                self.base(),
                timeout.as_secs()
            );
        }
        anyhow!(e).context(format!("{method} {url}"))
    }

    /// The message for a daemon that is not there, whichever way we tried.
    pub fn unreachable(&self, cause: &str) -> anyhow::Error {
        anyhow!(
            "cannot reach the bosun daemon at {} ({cause}); is it running? Start it with `bosun serve`, or point --server or BOSUN_URL at it",
            self.base()
        )
    }
}

/// The innermost cause ("Connection refused (os error 111)"), which says more
/// than reqwest's "error sending request".
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// Accepts `http://host:port[/prefix]`, or a bare `host:port`.
fn parse_base(server: &str) -> anyhow::Result<Url> {
    let with_scheme = if server.contains("://") { server.to_string() } else { format!("http://{server}") };
    let mut url = Url::parse(&with_scheme).with_context(|| format!("invalid server URL {server:?}"))?;
    if url.scheme() != "http" {
        bail!("invalid server URL {server:?}: only http:// is supported (the daemon speaks plain HTTP on loopback)");
    }
    url.set_query(None);
    url.set_fragment(None);
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_encode_segments_and_keep_prefixes() {
        let s = Server::new("http://127.0.0.1:7878/").unwrap();
        assert_eq!(s.endpoint(&["api", "v1", "sessions", "s_1"]).as_str(), "http://127.0.0.1:7878/api/v1/sessions/s_1");
        assert_eq!(
            s.endpoint(&["api", "v1", "sessions", "../x?y"]).as_str(),
            "http://127.0.0.1:7878/api/v1/sessions/..%2Fx%3Fy"
        );
        assert_eq!(s.ws_endpoint().unwrap().as_str(), "ws://127.0.0.1:7878/ws");
        let s = Server::new("localhost:9/bosun").unwrap();
        assert_eq!(s.endpoint(&["health"]).as_str(), "http://localhost:9/bosun/health");
        assert_eq!(s.base(), "http://localhost:9/bosun");
        assert!(Server::new("https://example.com").is_err());
        let s = Server::new("127.0.0.1:1").unwrap().with_token(Some("t k".into()));
        assert_eq!(s.ws_endpoint().unwrap().as_str(), "ws://127.0.0.1:1/ws?token=t+k");
    }
}
