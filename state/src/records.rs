//! Snapshot types: what the daemon keeps about sessions, turns and approvals.
//!
//! These are internal types, versioned independently of the wire types in
//! `bosun-proto`; `SCHEMA` is written beside every stored value so a future
//! daemon can migrate old snapshots (see [`Record::migrate`]).

use bosun_proto::events;
use bosun_proto::{
    Action, ApprovalStatus, ApprovalView, CommandResult, DecidedBy, Enforcement, EventData, Policy, Sandbox,
    SessionStatus, SessionView, TurnStatus, TurnView, Usage, ViolationView, WorkspaceView,
};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::{Owner, StoreError};

/// A kind of snapshot, stored in its own sled tree.
pub trait Record: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The sled tree holding this kind.
    const TREE: &'static str;
    /// The schema version written with every value of this kind.
    const SCHEMA: u16;
    /// The one writer of this kind (see [`Owner`]).
    const OWNER: Owner;

    /// The key of this record in its tree.
    fn key(&self) -> String;

    /// Turns a value written under an older schema into the current one.
    /// The default knows no older schema.
    fn migrate(from_schema: u16, _bytes: &[u8]) -> Result<Self, StoreError> {
        Err(StoreError::UnsupportedSchema { tree: Self::TREE, found: from_schema, current: Self::SCHEMA })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub id: String,
    pub provider: String,
    pub cwd: String,
    pub title: String,
    pub policy: Policy,
    pub archived: bool,
    pub draft: String,
    pub active_turn: Option<String>,
    /// Set while the active turn waits on the user.
    pub awaiting_approval: bool,
    pub usage: Usage,
    /// How many turns were started, used to order turn keys.
    pub turn_count: u64,
    pub created_at: String,
    pub updated_at: String,
    /// The session's git worktree, if it was created with one. Defaulted so
    /// records written before workspaces existed still decode.
    #[serde(default)]
    pub workspace: Option<WorkspaceInfo>,
    /// Defaulted (no jail) so records written before sandboxes still decode.
    #[serde(default)]
    pub sandbox: Sandbox,
    /// Whether the jail or container may use the network; defaulted (no).
    #[serde(default)]
    pub network: bool,
    /// The last policy violation of its agent; defaulted (none).
    #[serde(default)]
    pub violation: Option<SessionViolation>,
}

/// An act of the session's agent that no approval covered, in plan-only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionViolation {
    pub turn_id: String,
    pub provider: String,
    pub what: String,
    pub at: String,
}

/// Where a session's worktree is and what it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkspaceInfo {
    pub repo: String,
    pub branch: String,
    pub worktree: String,
    /// The commit the session branch started from; diffs are taken against it.
    pub base: String,
}

impl WorkspaceInfo {
    pub fn view(&self) -> WorkspaceView {
        WorkspaceView {
            repo: self.repo.clone(),
            branch: self.branch.clone(),
            worktree: self.worktree.clone(),
            base: self.base.clone(),
        }
    }
}

impl Record for SessionRecord {
    const TREE: &'static str = "sessions";
    const OWNER: Owner = Owner::Session;
    const SCHEMA: u16 = 1;

    fn key(&self) -> String {
        self.id.clone()
    }
}

impl SessionRecord {
    /// A new, idle session created at `now`.
    pub fn new(id: String, provider: String, cwd: String, title: String, policy: Policy, now: String) -> SessionRecord {
        SessionRecord {
            id,
            provider,
            cwd,
            title,
            policy,
            archived: false,
            draft: String::new(),
            active_turn: None,
            awaiting_approval: false,
            usage: Usage::default(),
            turn_count: 0,
            created_at: now.clone(),
            updated_at: now,
            workspace: None,
            sandbox: Sandbox::None,
            network: false,
            violation: None,
        }
    }

    pub fn status(&self) -> SessionStatus {
        if self.archived {
            SessionStatus::Archived
        } else if self.awaiting_approval {
            SessionStatus::AwaitingApproval
        } else if self.active_turn.is_some() {
            SessionStatus::Running
        } else {
            SessionStatus::Idle
        }
    }

    pub fn view(&self) -> SessionView {
        SessionView {
            id: self.id.clone().into(),
            provider: self.provider.clone(),
            cwd: self.cwd.clone(),
            title: self.title.clone(),
            policy: self.policy,
            status: self.status(),
            archived: self.archived,
            draft: self.draft.clone(),
            active_turn: self.active_turn.clone().map(Into::into),
            usage: self.usage,
            created_at: self.created_at.clone(),
            updated_at: self.updated_at.clone(),
            workspace: self.workspace.as_ref().map(WorkspaceInfo::view),
            sandbox: self.sandbox,
            network: self.network,
            violation: self.violation.as_ref().map(|v| ViolationView {
                turn_id: v.turn_id.clone().into(),
                provider: v.provider.clone(),
                what: v.what.clone(),
                at: v.at.clone(),
            }),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TurnRecord {
    pub id: String,
    pub session_id: String,
    /// Position of this turn in its session (1-based); orders the turn keys.
    pub number: u64,
    pub text: String,
    pub steers: Vec<String>,
    pub status: TurnStatus,
    pub reason: Option<String>,
    pub usage: Usage,
    /// Ids of the approvals this turn asked for, in order.
    #[serde(default)]
    pub approvals: Vec<String>,
    pub started_at: String,
    pub ended_at: Option<String>,
    /// The structured result of a turn that ran one command (the `shell`
    /// provider). Last, and defaulted, so records written before it decode.
    #[serde(default)]
    pub result: Option<CommandResult>,
    /// Ended `failed` because a crash cut it and its agent could not resume
    /// it (what a workflow step calls `interrupted`). Defaulted (no).
    #[serde(default)]
    pub cut: bool,
}

impl Record for TurnRecord {
    const TREE: &'static str = "turns";
    const OWNER: Owner = Owner::Turn;
    const SCHEMA: u16 = 1;

    fn key(&self) -> String {
        TurnRecord::key_for(&self.session_id, self.number)
    }
}

impl TurnRecord {
    /// Turns are keyed `<session>/<number, zero-padded>` so a prefix scan lists
    /// a session's turns in order.
    pub fn key_for(session_id: &str, number: u64) -> String {
        format!("{session_id}/{number:010}")
    }

    pub fn prefix_for(session_id: &str) -> String {
        format!("{session_id}/")
    }

    pub fn view(&self) -> TurnView {
        TurnView {
            id: self.id.clone().into(),
            session_id: self.session_id.clone().into(),
            text: self.text.clone(),
            status: self.status,
            reason: self.reason.clone(),
            usage: self.usage,
            started_at: self.started_at.clone(),
            ended_at: self.ended_at.clone(),
            result: self.result.clone(),
        }
    }
}

/// The agent-side session a session's provider worker is attached to (an ACP
/// `sessionId`, a codex `threadId`...), opaque to the daemon. Written by the
/// provider worker alone, so it never races the session actor's writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentBinding {
    pub session_id: String,
    pub provider: String,
    pub binding: serde_json::Value,
    pub updated_at: String,
}

impl Record for AgentBinding {
    const TREE: &'static str = "agent_bindings";
    const OWNER: Owner = Owner::Provider;
    const SCHEMA: u16 = 1;

    fn key(&self) -> String {
        self.session_id.clone()
    }
}

/// An agent process a provider worker started, so a daemon that was killed
/// (and so could not stop it) can stop it at its next start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentProcess {
    pub session_id: String,
    pub provider: String,
    /// Also its process group: agents are started as group leaders.
    pub pid: u32,
    /// When it started (clock ticks since boot), so a reused pid is not mistaken for it.
    pub start_ticks: u64,
}

impl Record for AgentProcess {
    const TREE: &'static str = "agent_processes";
    const OWNER: Owner = Owner::Provider;
    const SCHEMA: u16 = 1;

    fn key(&self) -> String {
        self.session_id.clone()
    }
}

/// What the daemon has learned about how one provider's agent can be held
/// to a session's policy. Written by the providers actor alone.
///
/// It holds for one configuration of the provider only (`fingerprint`): a
/// changed command, args or env is a different agent, learned afresh.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProviderRecord {
    pub name: String,
    pub fingerprint: String,
    pub enforcement: Enforcement,
    /// How it is enforced, or why it cannot be.
    pub detail: String,
    /// What the agent calls itself (`agentInfo.name`), once it has started.
    pub agent: Option<String>,
    pub learned_at: String,
    /// The act that made the provider `unverified`, if one did: sticky for
    /// this configuration.
    pub violation: Option<ProviderViolation>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProviderViolation {
    pub session_id: String,
    pub turn_id: String,
    pub what: String,
    pub at: String,
}

impl Record for ProviderRecord {
    const TREE: &'static str = "providers";
    const OWNER: Owner = Owner::Providers;
    const SCHEMA: u16 = 1;

    fn key(&self) -> String {
        self.name.clone()
    }
}

/// How far a turn has got, written with every chunk. Kept apart from
/// [`TurnRecord`] so the prompt is not rewritten with each chunk.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TurnProgress {
    pub session_id: String,
    pub number: u64,
    /// The provider's own resume point (opaque to the daemon), so a restarted
    /// worker can pick the turn up.
    pub checkpoint: Option<serde_json::Value>,
    /// How many stream chunks the turn has emitted (their `index` runs 0..).
    pub chunks: u64,
    /// How many agent events the turn has taken in, so a re-attached worker
    /// replays only what came after them.
    pub events_seen: u64,
}

impl Record for TurnProgress {
    const TREE: &'static str = "turn_progress";
    const OWNER: Owner = Owner::Turn;
    const SCHEMA: u16 = 1;

    fn key(&self) -> String {
        TurnRecord::key_for(&self.session_id, self.number)
    }
}

impl TurnProgress {
    /// A turn that has not produced anything yet.
    pub fn start(session_id: &str, number: u64) -> TurnProgress {
        TurnProgress { session_id: session_id.to_string(), number, ..TurnProgress::default() }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalRecord {
    pub id: String,
    pub session_id: String,
    pub turn_id: String,
    /// The provider's id for this request, so a resumed provider that asks
    /// again is matched to the same approval.
    pub request_id: String,
    pub action: Action,
    pub status: ApprovalStatus,
    pub decided_by: Option<DecidedBy>,
    pub requested_at: String,
    pub decided_at: Option<String>,
}

impl Record for ApprovalRecord {
    const TREE: &'static str = "approvals";
    const OWNER: Owner = Owner::Turn;
    const SCHEMA: u16 = 1;

    fn key(&self) -> String {
        self.id.clone()
    }
}

impl ApprovalRecord {
    pub fn view(&self) -> ApprovalView {
        ApprovalView {
            id: self.id.clone().into(),
            session_id: Some(self.session_id.clone().into()),
            turn_id: Some(self.turn_id.clone().into()),
            action: self.action.clone(),
            status: self.status,
            decided_by: self.decided_by,
            requested_at: self.requested_at.clone(),
            decided_at: self.decided_at.clone(),
        }
    }
}

/// A device paired with `POST /auth/token`. Its bearer token is kept only as
/// a SHA-256 hash: a copy of the store does not let anyone in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceRecord {
    pub id: String,
    pub name: String,
    /// Lowercase hex SHA-256 of the token.
    pub token_hash: String,
    pub created_at: String,
}

impl Record for DeviceRecord {
    const TREE: &'static str = "auth_devices";
    const OWNER: Owner = Owner::Auth;
    const SCHEMA: u16 = 1;

    fn key(&self) -> String {
        self.id.clone()
    }
}

/// A one-time pairing code from `bosun pair`, kept as its SHA-256 hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairingRecord {
    /// Lowercase hex SHA-256 of the normalized code; also the key.
    pub code_hash: String,
    pub created_at: String,
    /// Unix seconds after which the code is refused.
    pub expires_at_unix: u64,
    /// Set when a device exchanged the code: it never works again.
    pub used: bool,
}

impl Record for PairingRecord {
    const TREE: &'static str = "auth_pairing";
    const OWNER: Owner = Owner::Auth;
    const SCHEMA: u16 = 1;

    fn key(&self) -> String {
        self.code_hash.clone()
    }
}

/// The TOTP (RFC 6238) second factor asked for at pairing, when enabled.
/// There is at most one, under the key [`TotpRecord::KEY`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TotpRecord {
    /// The shared secret, base32 as authenticator apps take it.
    pub secret_base32: String,
    pub created_at: String,
}

impl TotpRecord {
    pub const KEY: &'static str = "totp";
}

impl Record for TotpRecord {
    const TREE: &'static str = "auth_totp";
    const OWNER: Owner = Owner::Auth;
    const SCHEMA: u16 = 1;

    fn key(&self) -> String {
        Self::KEY.to_string()
    }
}

/// The events that announce a record's state: built here, once, so every
/// actor that announces a record says the same.
impl SessionRecord {
    /// `session:update`, with the session as it is.
    pub fn update_event(&self) -> EventData {
        EventData::SessionUpdate(self.view())
    }
}

impl TurnRecord {
    /// `turn:completed`, for a record whose turn has ended.
    pub fn completed_event(&self) -> EventData {
        EventData::TurnCompleted(events::TurnCompleted {
            turn_id: self.id.clone().into(),
            status: self.status,
            reason: self.reason.clone(),
            usage: self.usage,
            result: self.result.clone(),
        })
    }
}

impl ApprovalRecord {
    /// `approval:resolved`; `automatic` when the daemon decided it.
    pub fn resolved_event(&self, automatic: bool) -> EventData {
        EventData::ApprovalResolved(events::ApprovalResolved { approval: self.view(), automatic })
    }

    /// Cancels a pending approval on the daemon's behalf (its turn ended);
    /// the event announcing it, or `None` if it was not pending.
    pub fn cancel_by_daemon(&mut self, now: &str) -> Option<EventData> {
        if self.status != ApprovalStatus::Pending {
            return None;
        }
        self.status = ApprovalStatus::Cancelled;
        self.decided_by = Some(DecidedBy::Daemon);
        self.decided_at = Some(now.to_string());
        Some(self.resolved_event(true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A session record as written before workspaces existed.
    #[derive(Serialize)]
    struct OldSessionRecord {
        id: String,
        provider: String,
        cwd: String,
        title: String,
        policy: Policy,
        archived: bool,
        draft: String,
        active_turn: Option<String>,
        awaiting_approval: bool,
        usage: Usage,
        turn_count: u64,
        created_at: String,
        updated_at: String,
    }

    #[test]
    fn old_session_record_without_workspace_decodes() {
        let old = OldSessionRecord {
            id: "s_1".into(),
            provider: "demo".into(),
            cwd: "/tmp".into(),
            title: "t".into(),
            policy: Policy::PlanOnly,
            archived: false,
            draft: String::new(),
            active_turn: None,
            awaiting_approval: false,
            usage: Usage::default(),
            turn_count: 3,
            created_at: "a".into(),
            updated_at: "b".into(),
        };
        let mut bytes = SessionRecord::SCHEMA.to_be_bytes().to_vec();
        rmp_serde::encode::write_named(&mut bytes, &old).unwrap();
        let record: SessionRecord = crate::codec::decode_record(&bytes).unwrap();
        assert_eq!(record.turn_count, 3);
        assert_eq!(record.workspace, None);

        let mut new = record.clone();
        new.workspace =
            Some(WorkspaceInfo { repo: "r".into(), branch: "main".into(), worktree: "/w".into(), base: "abc".into() });
        let again: SessionRecord = crate::codec::decode_record(&crate::codec::encode_record(&new).unwrap()).unwrap();
        assert_eq!(again, new);
    }
}
