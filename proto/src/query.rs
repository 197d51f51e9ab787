//! The query strings of the HTTP endpoints. Each refuses parameters it does
//! not know, by name, like the request bodies do.

use serde::{Deserialize, Serialize};

/// For endpoints that take no query parameter.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoQuery {}

/// `GET /api/v1/sessions`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListSessionsQuery {
    /// Only archived sessions, or only the others; all when absent.
    pub archived: Option<bool>,
}

/// `DELETE /api/v1/sessions/{id}`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteSessionQuery {
    /// `keep` leaves a workspace session's worktree and branch on disk;
    /// `remove` (the default) deletes them.
    pub worktree: Option<String>,
}

/// `GET /api/v1/approvals`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApprovalsQuery {
    /// `pending`, `accepted`, `declined`, `cancelled` or `all` (the default).
    pub status: Option<String>,
    /// Only this session's.
    pub session: Option<String>,
}

/// `GET /api/v1/workflows/runs`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListRunsQuery {
    /// Only runs in this state.
    pub state: Option<crate::workflow::RunState>,
}

/// `GET /api/v1/tasks`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TasksQuery {
    /// Only the tasks of this session's list.
    pub session: Option<String>,
}

/// `GET /api/v1/events`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Events with a greater seq (default 0: from the start).
    #[serde(default)]
    pub since: u64,
    /// Only this session's (not with `topic`).
    pub session: Option<String>,
    /// Only this topic: `system` or `session:<id>` (not with `session`).
    pub topic: Option<String>,
    /// At most this many (1 to 10000, default 1000).
    pub limit: Option<usize>,
}

/// `GET /api/v1/sessions/{id}/audit`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    #[serde(default)]
    pub since: u64,
    pub limit: Option<usize>,
}

/// `GET /api/v1/sessions/{id}/files`: a directory of the worktree.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PathQuery {
    /// Relative to the worktree; its root when empty.
    #[serde(default)]
    pub path: String,
}

/// The file of `GET`, `PUT` and `DELETE /api/v1/sessions/{id}/file`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FilePathQuery {
    /// Relative to the worktree.
    pub path: String,
}

/// `GET /api/v1/sessions/{id}/search`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchQuery {
    /// The text to look for (not a pattern).
    pub q: String,
}
