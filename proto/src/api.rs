//! HTTP request and response bodies (`/api/v1/...`).
//!
//! Request types reject unknown fields by name, so a typo in a client never
//! passes silently.

use crate::event::Envelope;
use crate::ids::{ApprovalId, DeviceId, SessionId, TurnId};
use crate::model::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Every error answer: `{"error":{"code":"..","message":".."}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
}

impl ErrorBody {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> ErrorBody {
        ErrorBody { error: ErrorDetail { code: code.into(), message: message.into() } }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSessionRequest {
    #[serde(default = "default_provider")]
    pub provider: String,
    /// Absolute working directory; defaults to the daemon's working directory.
    #[serde(default)]
    pub cwd: Option<String>,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub policy: Option<Policy>,
    /// A git worktree to work in; the session's `cwd` becomes the worktree.
    #[serde(default)]
    pub workspace: Option<WorkspaceRequest>,
    /// Where the session's agent and commands run: `"none"` (on the host,
    /// the default), `"bwrap"` (a bubblewrap jail) or `"docker"` (a container).
    #[serde(default)]
    pub sandbox: Sandbox,
    /// Whether the jail or container may use the network (default: no).
    #[serde(default)]
    pub network: bool,
}

impl Default for CreateSessionRequest {
    /// What `{}` means: a plan-only demo session in the daemon's directory.
    fn default() -> CreateSessionRequest {
        CreateSessionRequest {
            provider: default_provider(),
            cwd: None,
            title: None,
            policy: None,
            workspace: None,
            sandbox: Sandbox::default(),
            network: false,
        }
    }
}

/// How a session's processes are confined.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Sandbox {
    /// On the host, as the daemon's user.
    #[default]
    None,
    /// In a bubblewrap jail: host read-only, cwd writable, no network.
    Bwrap,
    /// In a container (through the Docker API): the cwd bind-mounted, no network.
    Docker,
}

impl Sandbox {
    pub fn is_none(&self) -> bool {
        *self == Sandbox::None
    }

    /// A bubblewrap jail without network: what bounds an agent that does
    /// not ask before it acts (its cwd, nothing else, no network).
    pub fn is_offline_jail(self, network: bool) -> bool {
        self == Sandbox::Bwrap && !network
    }
}

/// `"workspace":{"repo":..,"branch":..}` in a create request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceRequest {
    /// A local path or a URL git can clone.
    pub repo: String,
    #[serde(default = "default_branch")]
    pub branch: String,
}

fn default_branch() -> String {
    "main".to_string()
}

/// A session's workspace as clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct WorkspaceView {
    pub repo: String,
    /// The branch the session started from.
    pub branch: String,
    /// The worktree's absolute path (also the session's `cwd`).
    pub worktree: String,
    /// The commit the session branch `bosun/<id>` started from.
    pub base: String,
}

/// `GET /api/v1/sessions/{id}/files`: one entry of a listing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct FileEntry {
    pub name: String,
    /// `file`, `dir` or `symlink`.
    pub kind: String,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct FileListing {
    pub path: String,
    pub entries: Vec<FileEntry>,
}

/// `GET /api/v1/sessions/{id}/file`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct FileContent {
    pub path: String,
    pub content: String,
}

/// `PUT /api/v1/sessions/{id}/file`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PutFileRequest {
    pub content: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SearchHit {
    pub path: String,
    pub line: u64,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SearchResults {
    pub results: Vec<SearchHit>,
}

/// `POST /api/v1/sessions/{id}/commit`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CommitRequest {
    pub message: String,
    /// Also push the session branch to the repository's origin.
    #[serde(default)]
    pub push: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CommitResponse {
    pub sha: String,
    pub branch: String,
    /// Whether the branch reached the origin (false when no push was asked).
    pub pushed: bool,
    /// Why a push that was asked for failed; the commit stands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push_error: Option<String>,
}

fn default_provider() -> String {
    "demo".to_string()
}

/// `PATCH /api/v1/sessions/{id}`: every field optional, at least one required.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchSessionRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draft: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<Policy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archived: Option<bool>,
}

impl PatchSessionRequest {
    pub fn is_empty(&self) -> bool {
        self.title.is_none() && self.draft.is_none() && self.policy.is_none() && self.archived.is_none()
    }
}

/// A session as clients see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SessionView {
    pub id: SessionId,
    pub provider: String,
    pub cwd: String,
    pub title: String,
    pub policy: Policy,
    pub status: SessionStatus,
    pub archived: bool,
    pub draft: String,
    pub active_turn: Option<TurnId>,
    pub usage: Usage,
    pub created_at: String,
    pub updated_at: String,
    /// Present only on sessions created with a workspace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<WorkspaceView>,
    #[serde(default)]
    pub sandbox: Sandbox,
    /// Whether the session's jail or container may use the network.
    #[serde(default)]
    pub network: bool,
    /// The last time its agent acted without an approval in plan-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub violation: Option<ViolationView>,
}

/// A policy violation, as a session keeps the last one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ViolationView {
    pub turn_id: TurnId,
    pub provider: String,
    /// What the agent did, in words.
    pub what: String,
    pub at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SessionList {
    pub sessions: Vec<SessionView>,
}

/// `GET /api/v1/sessions/{id}`: the session with its turns and pending approvals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SessionDetail {
    #[serde(flatten)]
    pub session: SessionView,
    pub turns: Vec<TurnView>,
    pub pending_approvals: Vec<ApprovalView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StartTurnRequest {
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct StartTurnResponse {
    pub turn_id: TurnId,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SteerRequest {
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TurnView {
    pub id: TurnId,
    pub session_id: SessionId,
    pub text: String,
    pub status: TurnStatus,
    pub reason: Option<String>,
    pub usage: Usage,
    pub started_at: String,
    pub ended_at: Option<String>,
    /// The structured result of a one-command turn (the `shell` provider).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<CommandResult>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ApprovalView {
    pub id: ApprovalId,
    /// The session and turn whose agent asks; none for a workflow's gate.
    pub session_id: Option<SessionId>,
    pub turn_id: Option<TurnId>,
    pub action: Action,
    pub status: ApprovalStatus,
    pub decided_by: Option<DecidedBy>,
    pub requested_at: String,
    pub decided_at: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ApprovalList {
    pub approvals: Vec<ApprovalView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionRequest {
    pub decision: Decision,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct EventsPage {
    pub events: Vec<Envelope>,
    /// The cursor to pass as `since` for the next page.
    pub next: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ActorHealth {
    /// Restarts of actors of this kind since the daemon started.
    pub restarts: u64,
    /// Actors of this kind running now (0 or 1 for the singletons).
    pub running: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Health {
    pub status: String,
    pub version: String,
    pub uptime_s: u64,
    /// The highest seq in the event log.
    pub head_seq: u64,
    pub sessions: u64,
    pub actors: BTreeMap<String, ActorHealth>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CrashRequest {
    /// `session:ID`, `turn:ID`, `provider:ID` (a session id), `workflow:ID` (a
    /// run), `front`, `sessions`, `workflows`, `tasks`, `providers` or `diagnostics`.
    pub target: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ProviderView {
    pub name: String,
    pub kind: String,
    /// `built_in`, `config`, `discovered` (a known agent found on `PATH`) or
    /// `module` (a signed module, docs/MODULES.md).
    pub origin: String,
    pub command: Option<String>,
    #[serde(default)]
    pub args: Vec<String>,
    /// The program `command` resolves to, when found.
    #[serde(default)]
    pub path: Option<String>,
    /// As the agent reported it when it started, else from `--version`.
    #[serde(default)]
    pub version: Option<String>,
    pub capabilities: ProviderCapabilities,
    /// `available`, `missing`, `running` or `crashed`.
    pub status: String,
    /// Agent processes of this provider up now (one per active session).
    #[serde(default)]
    pub running: u64,
    #[serde(default)]
    pub crashes: u64,
    #[serde(default)]
    pub last_crash: Option<String>,
    /// How the daemon holds this provider's agent to a session's policy.
    pub enforcement: Enforcement,
    /// How that is done, or why it cannot be (what to do about it).
    #[serde(default)]
    pub enforcement_detail: Option<String>,
    /// What the agent calls itself (`agentInfo` at `initialize`), once started.
    #[serde(default)]
    pub agent: Option<String>,
}

/// What a provider's driver can do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ProviderCapabilities {
    /// Picks a turn cut by a crash up where it stopped.
    pub resume: bool,
    /// Reloads its agent-side session after a restart (the conversation goes on).
    pub load_session: bool,
    pub steer: bool,
    pub interrupt: bool,
    pub images: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ProviderList {
    pub providers: Vec<ProviderView>,
}

/// `DELETE /api/v1/sessions/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SessionDeleted {
    pub id: SessionId,
    pub deleted: bool,
}

/// `GET /api/v1/sessions/{id}/turns`: the session's turns, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TurnList {
    pub turns: Vec<TurnView>,
}

/// `POST .../turns/{turn_id}/interrupt`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Interrupting {
    pub turn_id: TurnId,
    pub interrupting: bool,
}

/// `POST .../turns/{turn_id}/steer`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Steered {
    pub turn_id: TurnId,
    pub steered: bool,
}

/// `PUT /api/v1/sessions/{id}/file`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct FileWritten {
    pub path: String,
    pub bytes: u64,
}

/// `DELETE /api/v1/sessions/{id}/file`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct FileDeleted {
    pub path: String,
    pub deleted: bool,
    /// The size it had.
    pub bytes: u64,
}

/// `GET /api/v1/sessions/{id}/diff`: the worktree against its base.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct WorktreeDiff {
    pub base: String,
    /// A unified diff, untracked files included.
    pub diff: String,
}

/// `POST /api/v1/debug/crash`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CrashScheduled {
    pub target: String,
    /// The actor that will panic.
    pub actor: String,
}

/// `POST /auth/token`: what a pairing code is exchanged for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    pub pairing_code: String,
    pub device_name: String,
    /// The second factor, when it is on.
    #[serde(default)]
    pub totp: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TokenResponse {
    /// The device's token: send it as `Authorization: Bearer <token>`.
    pub token: String,
    pub device_id: DeviceId,
}

/// `POST /auth/pairing`: a single-use code, for `POST /auth/token`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Pairing {
    pub code: String,
    /// RFC 3339.
    pub expires_at: String,
}

/// A paired device (never its token).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DeviceView {
    pub id: DeviceId,
    pub name: String,
    pub created_at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DeviceList {
    pub devices: Vec<DeviceView>,
}

/// `DELETE /auth/devices/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DeviceRevoked {
    pub id: DeviceId,
    pub revoked: bool,
}

/// A secret as clients see it: its value masked (`sk-…abcd`), never clear.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SecretView {
    pub name: String,
    pub masked: String,
    /// RFC 3339, when it was last set.
    pub updated_at: String,
}

/// `GET /api/v1/secrets`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SecretList {
    pub secrets: Vec<SecretView>,
}

/// `PUT /api/v1/secrets/{name}`.
#[derive(Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetSecretRequest {
    pub value: String,
}

impl std::fmt::Debug for SetSecretRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The value is the one thing here that must never reach a log.
        f.debug_struct("SetSecretRequest").field("value", &"…").finish()
    }
}

/// `DELETE /api/v1/secrets/{name}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SecretRemoved {
    pub name: String,
    pub removed: bool,
}

/// `POST /auth/totp`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TotpRequest {
    pub enabled: bool,
}

/// `GET` and `POST /auth/totp`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TotpStatus {
    pub enabled: bool,
    /// When it was just turned on: the `otpauth://` URL for an authenticator app.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub otpauth_url: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_are_rejected_by_name() {
        let err = serde_json::from_str::<StartTurnRequest>(r#"{"text":"hi","txet":1}"#).unwrap_err();
        assert!(err.to_string().contains("txet"), "{err}");
    }

    #[test]
    fn create_session_defaults_to_demo() {
        let req: CreateSessionRequest = serde_json::from_str("{}").unwrap();
        assert_eq!(req.provider, "demo");
        assert!(req.policy.is_none());
    }
}

/// How one `bosun doctor` check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    Ok,
    /// Works, but something will bite later (a missing credential, a file
    /// others can read).
    Warn,
    /// Broken: what depends on it will fail.
    Fail,
}

/// One check of `GET /api/v1/doctor`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DoctorCheck {
    /// `data_dir`, `provider:codex`, `bwrap`, `service`, `exposure`...
    pub name: String,
    pub status: CheckStatus,
    pub detail: String,
    /// What to do about a `warn` or `fail`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

/// `GET /api/v1/doctor`: the daemon's checks of itself, made in its own
/// process, so with the environment (`PATH`, credentials) it really has,
/// which under a service manager is not the shell's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DoctorReport {
    pub checks: Vec<DoctorCheck>,
}

/// `POST /api/v1/modules/install?allow_downgrade=true`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InstallModuleQuery {
    /// Install even when the module is older than the installed version.
    #[serde(default)]
    pub allow_downgrade: bool,
}

/// What an install or a rollback made current (docs/MODULES.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ModuleSwitched {
    /// The module's name, and the provider's.
    pub name: String,
    pub version: String,
    /// The version that was current before, if any.
    #[serde(default)]
    pub replaced: Option<String>,
    /// The signing key's id.
    pub key_id: String,
}
