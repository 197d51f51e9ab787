//! The HTTP API: one method per endpoint, answering its `bosun-proto` type,
//! and [`Client::request`] for callers that want the daemon's text as it
//! came (the CLI's `--json`).

use std::time::Duration;

use bosun_proto::query::{
    ApprovalsQuery, AuditQuery, DeleteSessionQuery, EventsQuery, FilePathQuery, ListSessionsQuery, PathQuery,
    SearchQuery,
};
use bosun_proto::*;
use reqwest::{Method, Url};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::ClientError;
use crate::follow::{Follower, FollowerConfig};
use crate::Result;

/// Long enough for the daemon's own 3 s restart window (503 `unavailable`),
/// short enough that a wedged daemon does not hang a script forever.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A clone, or a commit's push, may take the network's time (the daemon
/// gives git 300 s).
pub const LONG_REQUEST_TIMEOUT: Duration = Duration::from_secs(400);
const CLIENT_HEADER: &str = "x-bosun-client";

/// The daemon at one address, with the token it is reached with.
#[derive(Debug, Clone)]
pub struct Client {
    base: Url,
    http: reqwest::Client,
    /// Sent as `Authorization: Bearer` (and `?token=` on the WebSocket).
    token: Option<String>,
}

impl Client {
    /// A client of the daemon at `server` (`http://host:port[/prefix]`, or a
    /// bare `host:port`), naming itself `name` in the `X-Bosun-Client`
    /// header every request carries (the daemon refuses state-changing
    /// requests that have neither it nor a JSON body: cross-site forms).
    pub fn new(server: &str, name: &str) -> Result<Client> {
        let base = parse_base(server)?;
        let mut headers = reqwest::header::HeaderMap::new();
        let value = reqwest::header::HeaderValue::from_str(name)
            .map_err(|e| ClientError::BadUrl { url: server.to_string(), why: format!("client name {name:?}: {e}") })?;
        headers.insert(CLIENT_HEADER, value);
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(|e| ClientError::Transport {
                context: "setting up the HTTP client".into(),
                message: e.to_string(),
            })?;
        Ok(Client { base, http, token: None })
    }

    /// Sends `token` with every request: the admin credential or a device token.
    pub fn with_token(mut self, token: Option<String>) -> Client {
        self.token = token.filter(|t| !t.is_empty());
        self
    }

    /// The base URL, as shown in messages.
    pub fn base(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    /// The URL of an endpoint. Segments are percent-encoded one by one, so an
    /// id typed by a user can never reach another endpoint (`../`, `?`).
    pub fn endpoint(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        // An http URL always has a path, so this cannot fail; if it somehow
        // did, the daemon would answer 404 and say which path it got.
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// The WebSocket URL (`ws://host/ws`), with the token in its query (a
    /// WebSocket client cannot always set headers; the daemon takes it there).
    pub fn ws_endpoint(&self) -> Result<Url> {
        let mut url = self.endpoint(&["ws"]);
        url.set_scheme("ws")
            .map_err(|()| ClientError::BadUrl { url: url.to_string(), why: "not convertible to ws://".into() })?;
        if let Some(token) = &self.token {
            url.query_pairs_mut().append_pair("token", token);
        }
        Ok(url)
    }

    /// A request to the endpoint at `segments`, sent by [`Call::send`].
    fn call(&self, method: Method, segments: &[&str]) -> Call<'_> {
        let url = self.endpoint(segments);
        let shown = format!("{method} {}", url.path());
        let mut request = self.http.request(method, url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        Call { client: self, shown, request, timeout: REQUEST_TIMEOUT }
    }

    fn get(&self, segments: &[&str]) -> Call<'_> {
        self.call(Method::GET, segments)
    }

    fn post(&self, segments: &[&str]) -> Call<'_> {
        self.call(Method::POST, segments)
    }

    fn delete(&self, segments: &[&str]) -> Call<'_> {
        self.call(Method::DELETE, segments)
    }

    fn transport_error(&self, e: reqwest::Error, shown: &str, timeout: Duration) -> ClientError {
        if e.is_connect() {
            return self.unreachable(&root_cause(&e));
        }
        if e.is_timeout() {
            return ClientError::Timeout {
                base: self.base().to_string(),
                request: shown.to_string(),
                secs: timeout.as_secs(),
            };
        }
        ClientError::Transport { context: shown.to_string(), message: root_cause(&e) }
    }

    /// The error for a daemon that is not there.
    pub fn unreachable(&self, cause: &str) -> ClientError {
        ClientError::Unreachable { base: self.base().to_string(), cause: cause.to_string() }
    }

    /// Follows the events of `topics` after `since` over the WebSocket.
    pub async fn follow(&self, topics: Vec<String>, since: u64) -> Result<Follower> {
        Follower::open(self.clone(), topics, since, FollowerConfig::default()).await
    }

    // ---- The endpoints (docs/PROTOCOL.md; GET /api/v1/openapi.json)

    pub async fn health(&self) -> Result<Health> {
        self.get(&["health"]).send().await
    }

    pub async fn sessions(&self, query: &ListSessionsQuery) -> Result<SessionList> {
        self.get(&["api", "v1", "sessions"]).query(query).send().await
    }

    /// A session with a workspace may need a clone first: this waits for it.
    pub async fn create_session(&self, req: &CreateSessionRequest) -> Result<SessionView> {
        let timeout = if req.workspace.is_some() { LONG_REQUEST_TIMEOUT } else { REQUEST_TIMEOUT };
        self.post(&["api", "v1", "sessions"]).json(req).within(timeout).send().await
    }

    pub async fn session(&self, id: &str) -> Result<SessionDetail> {
        self.get(&["api", "v1", "sessions", id]).send().await
    }

    pub async fn patch_session(&self, id: &str, patch: &PatchSessionRequest) -> Result<SessionView> {
        self.call(Method::PATCH, &["api", "v1", "sessions", id]).json(patch).send().await
    }

    pub async fn delete_session(&self, id: &str, query: &DeleteSessionQuery) -> Result<SessionDeleted> {
        self.delete(&["api", "v1", "sessions", id]).query(query).send().await
    }

    pub async fn turns(&self, session: &str) -> Result<TurnList> {
        self.get(&["api", "v1", "sessions", session, "turns"]).send().await
    }

    pub async fn start_turn(&self, session: &str, text: &str) -> Result<StartTurnResponse> {
        let body = StartTurnRequest { text: text.to_string() };
        self.post(&["api", "v1", "sessions", session, "turns"]).json(&body).send().await
    }

    pub async fn interrupt(&self, session: &str, turn: &str) -> Result<Interrupting> {
        self.post(&["api", "v1", "sessions", session, "turns", turn, "interrupt"]).send().await
    }

    pub async fn steer(&self, session: &str, turn: &str, text: &str) -> Result<Steered> {
        let body = SteerRequest { text: text.to_string() };
        self.post(&["api", "v1", "sessions", session, "turns", turn, "steer"]).json(&body).send().await
    }

    pub async fn approvals(&self, query: &ApprovalsQuery) -> Result<ApprovalList> {
        self.get(&["api", "v1", "approvals"]).query(query).send().await
    }

    pub async fn approval(&self, id: &str) -> Result<ApprovalView> {
        self.get(&["api", "v1", "approvals", id]).send().await
    }

    pub async fn decide(&self, approval: &str, decision: Decision) -> Result<ApprovalView> {
        let body = DecisionRequest { decision };
        self.post(&["api", "v1", "approvals", approval]).json(&body).send().await
    }

    pub async fn start_run(&self, req: &StartRunRequest) -> Result<RunView> {
        self.post(&["api", "v1", "workflows", "runs"]).json(req).send().await
    }

    pub async fn runs(&self, query: &ListRunsQuery) -> Result<RunList> {
        self.get(&["api", "v1", "workflows", "runs"]).query(query).send().await
    }

    pub async fn run(&self, id: &str) -> Result<RunView> {
        self.get(&["api", "v1", "workflows", "runs", id]).send().await
    }

    pub async fn cancel_run(&self, id: &str) -> Result<RunView> {
        self.post(&["api", "v1", "workflows", "runs", id, "cancel"]).send().await
    }

    pub async fn resume_run(&self, id: &str) -> Result<RunView> {
        self.post(&["api", "v1", "workflows", "runs", id, "resume"]).send().await
    }

    pub async fn decide_step(&self, id: &str, step: &str, req: &StepDecisionRequest) -> Result<RunView> {
        self.post(&["api", "v1", "workflows", "runs", id, "steps", step, "decide"]).json(req).send().await
    }

    pub async fn patch_run(&self, id: &str, req: &PatchRunRequest) -> Result<RunView> {
        self.call(Method::PATCH, &["api", "v1", "workflows", "runs", id]).json(req).send().await
    }

    pub async fn tasks(&self, query: &TasksQuery) -> Result<TaskList> {
        self.get(&["api", "v1", "tasks"]).query(query).send().await
    }

    pub async fn create_task(&self, req: &CreateTaskRequest) -> Result<TaskView> {
        self.post(&["api", "v1", "tasks"]).json(req).send().await
    }

    pub async fn task(&self, id: &str) -> Result<TaskView> {
        self.get(&["api", "v1", "tasks", id]).send().await
    }

    pub async fn patch_task(&self, id: &str, req: &PatchTaskRequest) -> Result<TaskView> {
        self.call(Method::PATCH, &["api", "v1", "tasks", id]).json(req).send().await
    }

    pub async fn delete_task(&self, id: &str) -> Result<TaskDeleted> {
        self.delete(&["api", "v1", "tasks", id]).send().await
    }

    pub async fn run_task(&self, id: &str, req: &RunTaskRequest) -> Result<TaskView> {
        self.post(&["api", "v1", "tasks", id, "run"]).json(req).send().await
    }

    pub async fn terminals(&self) -> Result<TerminalList> {
        self.get(&["api", "v1", "terminals"]).send().await
    }

    pub async fn discover_terminals(&self) -> Result<TerminalList> {
        self.post(&["api", "v1", "terminals", "discover"]).send().await
    }

    /// Grants (or with `grant: false` revokes) consent to control `terminal`.
    pub async fn consent(&self, terminal: TerminalKind, grant: bool) -> Result<TerminalView> {
        let segments = ["api", "v1", "terminals", terminal.as_str(), "consent"];
        if grant {
            self.post(&segments).send().await
        } else {
            self.delete(&segments).send().await
        }
    }

    pub async fn bindings(&self) -> Result<BindingList> {
        self.get(&["api", "v1", "terminals", "bindings"]).send().await
    }

    /// The binding, or (`outcome: awaiting_approval`) the approval it waits for.
    pub async fn spawn_terminal(&self, req: &SpawnTerminalRequest) -> Result<SpawnOutcome> {
        self.post(&["api", "v1", "terminals", "bindings"]).json(req).send().await
    }

    pub async fn binding(&self, id: &str) -> Result<BindingView> {
        self.get(&["api", "v1", "terminals", "bindings", id]).send().await
    }

    pub async fn close_binding(&self, id: &str) -> Result<ActionDone> {
        self.delete(&["api", "v1", "terminals", "bindings", id]).within(Duration::from_secs(30)).send().await
    }

    pub async fn send_text(&self, id: &str, req: &SendTextRequest) -> Result<ActionDone> {
        self.post(&["api", "v1", "terminals", "bindings", id, "send"]).json(req).send().await
    }

    pub async fn read_text(&self, id: &str) -> Result<TerminalText> {
        self.get(&["api", "v1", "terminals", "bindings", id, "text"]).send().await
    }

    pub async fn focus(&self, id: &str) -> Result<ActionDone> {
        self.post(&["api", "v1", "terminals", "bindings", id, "focus"]).send().await
    }

    pub async fn set_cwd(&self, id: &str, req: &CwdRequest) -> Result<ActionDone> {
        self.post(&["api", "v1", "terminals", "bindings", id, "cwd"]).json(req).send().await
    }

    pub async fn write_clipboard(&self, req: &ClipboardWrite) -> Result<ClipboardContent> {
        self.post(&["api", "v1", "terminals", "clipboard"]).json(req).send().await
    }

    pub async fn read_clipboard(&self) -> Result<ClipboardContent> {
        self.get(&["api", "v1", "terminals", "clipboard"]).send().await
    }

    pub async fn resize_terminal(&self, id: &str, req: &ResizeRequest) -> Result<BindingView> {
        self.post(&["api", "v1", "terminals", "bindings", id, "resize"]).json(req).send().await
    }

    /// The socket of a `pty` terminal, from byte `from` of its output.
    pub async fn attach_terminal(&self, id: &str, from: u64) -> Result<crate::TerminalStream> {
        let mut url = self.endpoint(&["ws", "terminal", id]);
        url.set_scheme("ws")
            .map_err(|()| ClientError::BadUrl { url: url.to_string(), why: "not convertible to ws://".into() })?;
        url.query_pairs_mut().append_pair("from", &from.to_string());
        if let Some(token) = &self.token {
            url.query_pairs_mut().append_pair("token", token);
        }
        crate::TerminalStream::connect(self, url).await
    }

    pub async fn events(&self, query: &EventsQuery) -> Result<EventsPage> {
        self.get(&["api", "v1", "events"]).query(query).send().await
    }

    /// Every stored event of `query` after its `since`, following `next`
    /// until the head.
    pub async fn all_events(&self, query: &EventsQuery) -> Result<Vec<Envelope>> {
        let mut query = query.clone();
        let mut all = Vec::new();
        loop {
            let page = self.events(&query).await?;
            let got = page.events.len();
            all.extend(page.events);
            if got == 0 || page.next <= query.since {
                return Ok(all);
            }
            query.since = page.next;
        }
    }

    pub async fn audit(&self, session: &str, query: &AuditQuery) -> Result<EventsPage> {
        self.get(&["api", "v1", "sessions", session, "audit"]).query(query).send().await
    }

    pub async fn providers(&self) -> Result<ProviderList> {
        self.get(&["api", "v1", "providers"]).send().await
    }

    /// The daemon's checks of itself (`bosun doctor`).
    pub async fn doctor(&self) -> Result<DoctorReport> {
        self.get(&["api", "v1", "doctor"]).send().await
    }

    pub async fn files(&self, session: &str, query: &PathQuery) -> Result<FileListing> {
        self.get(&["api", "v1", "sessions", session, "files"]).query(query).send().await
    }

    pub async fn read_file(&self, session: &str, path: &str) -> Result<FileContent> {
        let query = FilePathQuery { path: path.to_string() };
        self.get(&["api", "v1", "sessions", session, "file"]).query(&query).send().await
    }

    pub async fn write_file(&self, session: &str, path: &str, content: &str) -> Result<FileWritten> {
        let query = FilePathQuery { path: path.to_string() };
        let body = PutFileRequest { content: content.to_string() };
        self.call(Method::PUT, &["api", "v1", "sessions", session, "file"]).query(&query).json(&body).send().await
    }

    pub async fn delete_file(&self, session: &str, path: &str) -> Result<FileDeleted> {
        let query = FilePathQuery { path: path.to_string() };
        self.delete(&["api", "v1", "sessions", session, "file"]).query(&query).send().await
    }

    pub async fn search(&self, session: &str, query: &SearchQuery) -> Result<SearchResults> {
        self.get(&["api", "v1", "sessions", session, "search"]).query(query).send().await
    }

    pub async fn diff(&self, session: &str) -> Result<WorktreeDiff> {
        self.get(&["api", "v1", "sessions", session, "diff"]).send().await
    }

    /// A commit, and its push when asked, which may take the network's time.
    pub async fn commit(&self, session: &str, req: &CommitRequest) -> Result<CommitResponse> {
        let segments = ["api", "v1", "sessions", session, "commit"];
        self.post(&segments).json(req).within(LONG_REQUEST_TIMEOUT).send().await
    }

    /// Makes an actor panic (a daemon started with `--enable-fault-injection`).
    pub async fn crash(&self, target: &str) -> Result<CrashScheduled> {
        let body = CrashRequest { target: target.to_string() };
        self.post(&["api", "v1", "debug", "crash"]).json(&body).send().await
    }

    /// Installs a signed module (admin): `module` is the file `bosun module
    /// pack` wrote. The daemon verifies it before anything changes.
    pub async fn install_module(&self, module: Vec<u8>, allow_downgrade: bool) -> Result<ModuleSwitched> {
        let query = InstallModuleQuery { allow_downgrade };
        self.post(&["api", "v1", "modules", "install"])
            .query(&query)
            .bytes(module)
            .within(LONG_REQUEST_TIMEOUT)
            .send()
            .await
    }

    /// Makes a module's previous version current again (admin).
    pub async fn rollback_module(&self, name: &str) -> Result<ModuleSwitched> {
        self.post(&["api", "v1", "modules", name, "rollback"]).send().await
    }

    pub async fn pair(&self, req: &TokenRequest) -> Result<TokenResponse> {
        self.post(&["auth", "token"]).json(req).send().await
    }

    pub async fn create_pairing(&self) -> Result<Pairing> {
        self.post(&["auth", "pairing"]).send().await
    }

    pub async fn devices(&self) -> Result<DeviceList> {
        self.get(&["auth", "devices"]).send().await
    }

    pub async fn revoke_device(&self, id: &str) -> Result<DeviceRevoked> {
        self.delete(&["auth", "devices", id]).send().await
    }

    pub async fn totp(&self) -> Result<TotpStatus> {
        self.get(&["auth", "totp"]).send().await
    }

    pub async fn set_totp(&self, req: &TotpRequest) -> Result<TotpStatus> {
        self.post(&["auth", "totp"]).json(req).send().await
    }
}

/// One request being made: [`Client::call`] starts it, the endpoint adds
/// its query and body, [`Call::send`] sends it and reads the answer.
struct Call<'a> {
    client: &'a Client,
    /// `METHOD /path`, for messages.
    shown: String,
    request: reqwest::RequestBuilder,
    timeout: Duration,
}

impl Call<'_> {
    fn query<Q: Serialize + ?Sized>(mut self, query: &Q) -> Self {
        self.request = self.request.query(query);
        self
    }

    /// The body, as JSON (`.json` also sets `content-type: application/json`).
    fn json<B: Serialize + ?Sized>(mut self, body: &B) -> Self {
        self.request = self.request.json(body);
        self
    }

    /// A binary body (`application/octet-stream`).
    fn bytes(mut self, body: Vec<u8>) -> Self {
        self.request = self.request.header(reqwest::header::CONTENT_TYPE, "application/octet-stream").body(body);
        self
    }

    /// For what the daemon may take long over (a clone, a push).
    fn within(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sends the request and parses a 2xx answer as `T`; an error answer
    /// becomes [`ClientError::Api`], anything else [`ClientError::NotBosun`].
    async fn send<T: DeserializeOwned>(self) -> Result<T> {
        let Call { client, shown, request, timeout } = self;
        let response = request.timeout(timeout).send().await.map_err(|e| client.transport_error(e, &shown, timeout))?;
        let status = response.status().as_u16();
        let text = response.text().await.map_err(|e| ClientError::Transport {
            context: format!("reading the answer to {shown}"),
            message: e.to_string(),
        })?;
        if (200..300).contains(&status) {
            return serde_json::from_str(&text).map_err(|source| ClientError::Decode { what: shown, source });
        }
        match serde_json::from_str::<ErrorBody>(&text) {
            Ok(body) => Err(ClientError::Api { status, code: body.error.code, message: body.error.message }),
            Err(_) => {
                let start = text.split_whitespace().collect::<Vec<_>>().join(" ").chars().take(120).collect();
                Err(ClientError::NotBosun { request: shown, status, base: client.base().to_string(), start })
            }
        }
    }
}

/// The innermost cause ("Connection refused (os error 111)"), which says more
/// than reqwest's "error sending request".
pub(crate) fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// Accepts `http://host:port[/prefix]`, or a bare `host:port`.
fn parse_base(server: &str) -> Result<Url> {
    let with_scheme = if server.contains("://") { server.to_string() } else { format!("http://{server}") };
    let mut url =
        Url::parse(&with_scheme).map_err(|e| ClientError::BadUrl { url: server.to_string(), why: e.to_string() })?;
    if url.scheme() != "http" {
        return Err(ClientError::BadUrl {
            url: server.to_string(),
            why: "only http:// is supported (the daemon speaks plain HTTP on loopback)".into(),
        });
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
        let c = Client::new("http://127.0.0.1:7878/", "t").unwrap();
        assert_eq!(c.endpoint(&["api", "v1", "sessions", "s_1"]).as_str(), "http://127.0.0.1:7878/api/v1/sessions/s_1");
        assert_eq!(
            c.endpoint(&["api", "v1", "sessions", "../x?y"]).as_str(),
            "http://127.0.0.1:7878/api/v1/sessions/..%2Fx%3Fy"
        );
        assert_eq!(c.ws_endpoint().unwrap().as_str(), "ws://127.0.0.1:7878/ws");
        let c = Client::new("localhost:9/bosun", "t").unwrap();
        assert_eq!(c.endpoint(&["health"]).as_str(), "http://localhost:9/bosun/health");
        assert_eq!(c.base(), "http://localhost:9/bosun");
        assert!(matches!(Client::new("https://example.com", "t"), Err(ClientError::BadUrl { .. })));
        let c = Client::new("127.0.0.1:1", "t").unwrap().with_token(Some("t k".into()));
        assert_eq!(c.ws_endpoint().unwrap().as_str(), "ws://127.0.0.1:1/ws?token=t+k");
    }

    #[tokio::test]
    async fn nothing_listening_is_unreachable_naming_the_address() {
        // Port 1 on loopback: nothing listens there.
        let c = Client::new("127.0.0.1:1", "t").unwrap();
        let err = c.health().await.unwrap_err();
        assert!(matches!(err, ClientError::Unreachable { .. }), "{err:?}");
        assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
    }
}
