//! The daemon at `--server`, through `bosun-client`.
//!
//! Every answer is kept as the text the daemon sent, so `--json` can print it
//! untouched, and is parsed into a `bosun-proto` type only for human output.
//! A non-2xx answer is the client's `ClientError::Api`, carrying the
//! daemon's own code and message.

pub use bosun_client::Answer;
use bosun_client::Client;
use reqwest::Method;
use serde::Serialize;
use std::time::Duration;

/// Long enough for the daemon's own 3 s restart window (503 `unavailable`),
/// short enough that a wedged daemon does not hang a script forever.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CLIENT_NAME: &str = concat!("bosun-cli/", env!("CARGO_PKG_VERSION"));

/// The daemon at `--server`.
pub struct Server {
    client: Client,
}

/// No query, or no body.
const NONE: Option<&()> = None;

impl Server {
    pub fn new(server: &str) -> anyhow::Result<Server> {
        Ok(Server { client: Client::new(server, CLIENT_NAME)? })
    }

    /// Sends `token` with every request: the admin credential or a device token.
    pub fn with_token(self, token: Option<String>) -> Server {
        Server { client: self.client.with_token(token) }
    }

    /// The typed client, for what has no `--json` form (the live stream).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The base URL, as shown in messages.
    pub fn base(&self) -> &str {
        self.client.base()
    }

    pub async fn get(&self, segments: &[&str], query: &[(&str, String)]) -> anyhow::Result<Answer> {
        let query = (!query.is_empty()).then_some(query);
        Ok(self.client.request(Method::GET, segments, query, NONE, REQUEST_TIMEOUT).await?)
    }

    pub async fn post<B: Serialize>(&self, segments: &[&str], body: Option<&B>) -> anyhow::Result<Answer> {
        self.post_within(segments, body, REQUEST_TIMEOUT).await
    }

    /// A POST known to take long on the daemon's side (a session whose
    /// workspace needs a clone), waiting up to `timeout`.
    pub async fn post_within<B: Serialize>(
        &self,
        segments: &[&str],
        body: Option<&B>,
        timeout: Duration,
    ) -> anyhow::Result<Answer> {
        Ok(self.client.request(Method::POST, segments, NONE, body, timeout).await?)
    }

    pub async fn patch<B: Serialize>(&self, segments: &[&str], body: &B) -> anyhow::Result<Answer> {
        Ok(self.client.request(Method::PATCH, segments, NONE, Some(body), REQUEST_TIMEOUT).await?)
    }

    pub async fn delete(&self, segments: &[&str]) -> anyhow::Result<Answer> {
        self.delete_with(segments, &[]).await
    }

    pub async fn delete_with(&self, segments: &[&str], query: &[(&str, String)]) -> anyhow::Result<Answer> {
        let query = (!query.is_empty()).then_some(query);
        Ok(self.client.request(Method::DELETE, segments, query, NONE, REQUEST_TIMEOUT).await?)
    }
}
