//! Workflow runs on the wire: their states, the HTTP bodies of
//! `/api/v1/workflows/...`, and what their events carry (docs/WORKFLOWS.md).

use crate::ids::{ApprovalId, SessionId, TurnId, WorkflowRunId};
use crate::model::Usage;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

wire_enum!(
    /// What a step does.
    StepKind {
        /// A turn of an agent, in a session of its own.
        Agent => "agent",
        /// One command, on the `shell` provider.
        Shell => "shell",
        /// A person decides, as an approval of kind `gate`.
        Gate => "gate",
        /// Branches merged into another step's branch.
        Merge => "merge",
    }
);

wire_enum!(
    /// pending → running → completed | failed | skipped | interrupted.
    StepState {
        Pending => "pending",
        Running => "running",
        Completed => "completed",
        Failed => "failed",
        Skipped => "skipped",
        /// Cut by a crash of an agent that cannot resume it: waits for a
        /// decision (retry, skip, abort), or is retried by itself with
        /// `on_interrupt = "retry"`.
        Interrupted => "interrupted",
    }
);

impl StepState {
    /// Whether the step is done with, one way or another (downstream may go on
    /// after completed and skipped).
    pub fn is_final(self) -> bool {
        matches!(self, StepState::Completed | StepState::Failed | StepState::Skipped)
    }

    /// Whether steps needing this one may start.
    pub fn lets_downstream_go(self) -> bool {
        matches!(self, StepState::Completed | StepState::Skipped)
    }
}

wire_enum!(
    RunState {
        Running => "running",
        /// Waiting on a person: see the run's `pause`.
        Paused => "paused",
        Completed => "completed",
        Failed => "failed",
        Cancelled => "cancelled",
    }
);

impl RunState {
    pub fn is_final(self) -> bool {
        matches!(self, RunState::Completed | RunState::Failed | RunState::Cancelled)
    }
}

wire_enum!(
    /// Why a run paused.
    PauseReason {
        /// A step was cut and cannot be resumed: decide retry, skip or abort.
        Interrupted => "interrupted",
        /// A step failed (after its retries): decide retry, skip or abort.
        Failed => "failed",
        /// The run reached its budget: raise it (`PATCH`) to go on.
        Budget => "budget",
    }
);

wire_enum!(
    /// A person's decision on an interrupted or failed step.
    StepDecision {
        /// Run the step again (a new turn in the same session).
        Retry => "retry",
        /// Leave it out; the steps that need it go on as if it had completed
        /// with no output.
        Skip => "skip",
        /// Fail the step and end the run.
        Abort => "abort",
    }
);

wire_enum!(
    /// What a `workflow:event` reports.
    WorkflowEventKind {
        /// A fan-out was expanded, a merge took a branch, a step was retried...
        Progress => "progress",
        /// A running step has shown no output for its `stall` time.
        Stalled => "stalled",
        /// Tokens and cost spent so far, after each step.
        Budget => "budget",
        /// A paused run goes on.
        Resumed => "resumed",
    }
);

/// `POST /api/v1/workflows/runs`: a definition (TOML text) or the path of
/// one on the daemon's host, and the run's inputs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StartRunRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub definition: Option<String>,
    /// An absolute path on the daemon's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default)]
    pub inputs: BTreeMap<String, String>,
}

/// `POST /api/v1/workflows/runs/{id}/steps/{step}/decide`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StepDecisionRequest {
    pub decision: StepDecision,
    /// Which item of a fan-out step; every interrupted or failed item when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u64>,
}

/// `PATCH /api/v1/workflows/runs/{id}`: raise (or set) the budget; a run
/// paused on its budget goes on if the new one has room.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchRunRequest {
    pub budget: BudgetView,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BudgetView {
    /// Input plus output tokens across the run's steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<u64>,
    /// In the price table's currency (`[prices]` in the config).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RunPause {
    pub reason: PauseReason,
    pub message: String,
}

/// A run as clients see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RunView {
    pub id: WorkflowRunId,
    pub name: String,
    pub state: RunState,
    /// Why it is paused, while it is.
    pub pause: Option<RunPause>,
    pub inputs: BTreeMap<String, String>,
    /// In the definition's order; a fan-out step has one entry per item once
    /// its items are known.
    pub steps: Vec<StepView>,
    pub budget: BudgetView,
    /// Tokens spent by the run's steps.
    pub usage: Usage,
    pub cost: f64,
    pub created_at: String,
    pub updated_at: String,
    pub ended_at: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StepView {
    pub step_id: String,
    pub kind: StepKind,
    /// The item's place in a fan-out, from 0.
    pub index: Option<u64>,
    /// The fan-out's item.
    pub item: Option<String>,
    pub state: StepState,
    /// The session an agent or shell step runs in.
    pub session_id: Option<SessionId>,
    /// One turn per attempt.
    pub turn_ids: Vec<TurnId>,
    pub attempts: u32,
    /// The final reply text (agent), the command's stdout (shell), the
    /// decision (gate) or a summary (merge).
    pub output: Option<String>,
    /// Why it failed or was interrupted.
    pub error: Option<String>,
    pub usage: Usage,
    pub started_at: Option<String>,
    pub ended_at: Option<String>,
    /// The gate's approval (`POST /api/v1/approvals/{id}` decides it).
    pub approval_id: Option<ApprovalId>,
    pub merge: Option<MergeView>,
    /// Shown no output for its `stall` time (cleared by the next output).
    pub stalled: bool,
}

/// What a merge step did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MergeView {
    /// The target branch.
    pub into: String,
    /// Branches merged, in order, with their merge commits.
    pub merged: Vec<MergedBranch>,
    /// Branches that did not merge cleanly.
    pub conflicts: Vec<MergeConflict>,
    /// Files the merged branches changed.
    pub files: Vec<String>,
    /// The target branch's head after the merge.
    pub head: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MergedBranch {
    pub branch: String,
    pub commit: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MergeConflict {
    pub branch: String,
    pub files: Vec<String>,
    /// The conflicting hunks, with git's markers.
    pub hunks: String,
    /// The resolver step (`fix#0`) it was given to, with `on_conflict = "<step>"`.
    #[serde(default)]
    pub resolver: Option<String>,
    /// The resolver concluded the merge (the branch is then in `merged` too).
    #[serde(default)]
    pub resolved: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RunList {
    pub runs: Vec<RunView>,
}

// ---- events on `workflow:<id>` ----

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct WorkflowStarted {
    pub run: RunView,
}

/// A step (or one item of a fan-out) changed state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct WorkflowStep {
    pub run_id: WorkflowRunId,
    pub step: StepView,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct WorkflowEvent {
    pub run_id: WorkflowRunId,
    pub kind: WorkflowEventKind,
    pub step_id: Option<String>,
    pub index: Option<u64>,
    pub message: String,
    /// With `budget`: spent so far, and the budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<BudgetView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct WorkflowError {
    pub run_id: WorkflowRunId,
    pub step_id: Option<String>,
    pub index: Option<u64>,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct WorkflowPaused {
    pub run_id: WorkflowRunId,
    pub reason: PauseReason,
    pub step_id: Option<String>,
    pub index: Option<u64>,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct WorkflowCompleted {
    pub run_id: WorkflowRunId,
    pub state: RunState,
    pub usage: Usage,
    pub cost: f64,
    /// From the run's start to its end, wall clock (a crash's downtime included).
    pub duration_ms: u64,
}
