//! Snapshot types of workflow runs: the run with each step's state, and its
//! gates. Both are written by the run's actor alone (`Owner::Workflow`).

use crate::{Owner, Record};
use bosun_proto::{
    Action, ApprovalStatus, ApprovalView, BudgetView, DecidedBy, MergeView, PauseReason, RunPause, RunState, RunView,
    StepKind, StepState, StepView, Usage,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One run of a workflow: its definition as given, its inputs, and where
/// every step stands. Persisted before anything about it is published.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkflowRunRecord {
    pub id: String,
    pub name: String,
    /// The TOML text, as checked at the start; the run follows it, whatever
    /// happens to the file later.
    pub definition: String,
    pub inputs: BTreeMap<String, String>,
    pub state: RunState,
    pub pause: Option<RunPause>,
    /// In the definition's order; a fan-out's items replace its one
    /// placeholder once they are known.
    pub steps: Vec<StepRecord>,
    pub budget: BudgetView,
    pub usage: Usage,
    pub cost: f64,
    pub created_at: String,
    pub updated_at: String,
    pub ended_at: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub step_id: String,
    pub kind: StepKind,
    /// A fan-out's item place; `None` for a plain step, and for a fan-out's
    /// placeholder before its items are known (`fan_out` set).
    pub index: Option<u64>,
    pub item: Option<String>,
    /// Set on a fan-out's placeholder and on each of its items.
    pub fan_out: bool,
    pub state: StepState,
    pub session_id: Option<String>,
    /// One turn per attempt, in order.
    pub turn_ids: Vec<String>,
    pub attempts: u32,
    /// The session turn the current attempt runs as (from 1): started only
    /// if the session has fewer turns, so a crash never starts it twice.
    pub turn_number: u64,
    /// The current attempt was interrupted for running past its timeout.
    pub timed_out: bool,
    pub output: Option<String>,
    pub diff: Option<String>,
    pub error: Option<String>,
    pub usage: Usage,
    pub cost: f64,
    /// When it started running, and when its current attempt did.
    pub started_at: Option<String>,
    pub attempt_started_at: Option<String>,
    pub ended_at: Option<String>,
    pub approval_id: Option<String>,
    pub merge: Option<MergeView>,
    pub stalled: bool,
    /// A resolver's: the conflict it is asked to resolve (what its prompt's
    /// `conflict` reads), and the branch whose merge it concludes (`item`).
    #[serde(default)]
    pub conflict: Option<String>,
}

impl StepRecord {
    pub fn new(step_id: &str, kind: StepKind, fan_out: bool) -> StepRecord {
        StepRecord {
            step_id: step_id.to_string(),
            kind,
            index: None,
            item: None,
            fan_out,
            state: StepState::Pending,
            session_id: None,
            turn_ids: Vec::new(),
            attempts: 0,
            turn_number: 0,
            timed_out: false,
            output: None,
            diff: None,
            error: None,
            usage: Usage::default(),
            cost: 0.0,
            started_at: None,
            attempt_started_at: None,
            ended_at: None,
            approval_id: None,
            merge: None,
            stalled: false,
            conflict: None,
        }
    }

    /// `build#2`, `plan`: how logs and messages name it.
    pub fn label(&self) -> String {
        match self.index {
            Some(i) => format!("{}#{i}", self.step_id),
            None => self.step_id.clone(),
        }
    }

    pub fn view(&self) -> StepView {
        StepView {
            step_id: self.step_id.clone(),
            kind: self.kind,
            index: self.index,
            item: self.item.clone(),
            state: self.state,
            session_id: self.session_id.clone().map(Into::into),
            turn_ids: self.turn_ids.iter().cloned().map(Into::into).collect(),
            attempts: self.attempts,
            output: self.output.clone(),
            error: self.error.clone(),
            usage: self.usage,
            started_at: self.started_at.clone(),
            ended_at: self.ended_at.clone(),
            approval_id: self.approval_id.clone().map(Into::into),
            merge: self.merge.clone(),
            stalled: self.stalled,
        }
    }
}

impl Record for WorkflowRunRecord {
    const TREE: &'static str = "workflow_runs";
    const OWNER: Owner = Owner::Workflow;
    const SCHEMA: u16 = 1;

    fn key(&self) -> String {
        self.id.clone()
    }
}

impl WorkflowRunRecord {
    pub fn view(&self) -> RunView {
        RunView {
            id: self.id.clone().into(),
            name: self.name.clone(),
            state: self.state,
            pause: self.pause.clone(),
            inputs: self.inputs.clone(),
            steps: self.steps.iter().map(StepRecord::view).collect(),
            budget: self.budget,
            usage: self.usage,
            cost: self.cost,
            created_at: self.created_at.clone(),
            updated_at: self.updated_at.clone(),
            ended_at: self.ended_at.clone(),
        }
    }

    pub fn paused_for(&self, reason: PauseReason) -> bool {
        self.pause.as_ref().is_some_and(|p| p.reason == reason)
    }
}

/// A workflow's gate: an approval a person decides through the approvals
/// API, like an agent's, but owned by the run rather than a turn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateRecord {
    pub id: String,
    pub run_id: String,
    pub step_id: String,
    pub message: String,
    pub status: ApprovalStatus,
    pub decided_by: Option<DecidedBy>,
    pub requested_at: String,
    pub decided_at: Option<String>,
}

impl Record for GateRecord {
    const TREE: &'static str = "gates";
    const OWNER: Owner = Owner::Workflow;
    const SCHEMA: u16 = 1;

    fn key(&self) -> String {
        self.id.clone()
    }
}

impl GateRecord {
    pub fn view(&self) -> ApprovalView {
        ApprovalView {
            id: self.id.clone().into(),
            session_id: None,
            turn_id: None,
            action: Action::Gate {
                run_id: self.run_id.clone().into(),
                step_id: self.step_id.clone(),
                message: self.message.clone(),
            },
            status: self.status,
            decided_by: self.decided_by,
            requested_at: self.requested_at.clone(),
            decided_at: self.decided_at.clone(),
        }
    }
}
