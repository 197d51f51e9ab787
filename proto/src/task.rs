//! Tasks on the wire: a checklist kept in step with `docs/TASKS.md` in a
//! session's worktree (docs/WORKFLOWS.md, "Tasks").

use crate::ids::{SessionId, WorkflowRunId};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

wire_enum!(
    TaskStatus {
        /// `- [ ]` in the file.
        Todo => "todo",
        /// `- [ ]` marked in progress: a run for it is under way.
        InProgress => "in_progress",
        /// `- [x]` in the file.
        Done => "done",
    }
);

/// A task: one line of a checklist.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TaskView {
    /// `k_` and 12 hex digits; also written in its line of the file.
    pub id: String,
    pub title: String,
    pub status: TaskStatus,
    /// The session whose worktree's docs/TASKS.md holds it.
    pub session_id: SessionId,
    /// The workflow run started for it, if one was.
    pub run_id: Option<WorkflowRunId>,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TaskList {
    pub tasks: Vec<TaskView>,
}

/// `POST /api/v1/tasks`: a task in the checklist of a session's worktree,
/// or of a workflow run's (the worktree of its first step that has one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTaskRequest {
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<SessionId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<WorkflowRunId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<TaskStatus>,
}

/// `PATCH /api/v1/tasks/{id}`: absent fields are unchanged.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchTaskRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<TaskStatus>,
}

/// `POST /api/v1/tasks/{id}/run`: a workflow run for the task. Its `task`
/// input, when the workflow has one and it is not given, is the task's title.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunTaskRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub definition: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default)]
    pub inputs: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TaskDeleted {
    pub id: String,
    pub deleted: bool,
}

// ---- events, on the topic of the task's session ----

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TaskUpdated {
    pub task: TaskView,
    /// What changed it: `api` or `file` (an edit of docs/TASKS.md) or `run`.
    pub by: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TaskRemoved {
    pub id: String,
    pub session_id: SessionId,
    pub by: String,
}
