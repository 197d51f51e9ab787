//! Workflow definitions: the TOML a user writes (docs/WORKFLOWS.md), checked
//! into a [`Workflow`] before anything runs, its step graph, and the
//! templates its prompts are written in.
//!
//! Pure: no actors, no store, no processes. The daemon's workflow actors
//! (`bosun-actors`) run what this crate has checked.

mod definition;
mod graph;
mod parse;
mod template;

pub use graph::Graph;
pub use parse::{parse, Known};
pub use template::{RenderError, StepOutputs, TemplateContext, Templates};

use bosun_proto::Policy;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// A checked workflow: every reference resolves, the graph has no cycle,
/// every template compiles and reads only what will be there.
#[derive(Debug, Clone)]
pub struct Workflow {
    pub name: String,
    pub description: Option<String>,
    pub inputs: BTreeMap<String, InputSpec>,
    pub budget: Budget,
    /// In the file's order.
    pub steps: Vec<Step>,
    pub graph: Graph,
}

impl Workflow {
    pub fn step(&self, id: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.id == id)
    }

    /// The inputs a run is given, with defaults filled in; every problem
    /// (a required input missing, an unknown one) named.
    pub fn resolve_inputs(&self, given: &BTreeMap<String, String>) -> Result<BTreeMap<String, String>, Problems> {
        let mut problems = Problems::default();
        for name in given.keys() {
            if !self.inputs.contains_key(name) {
                let known: Vec<&str> = self.inputs.keys().map(String::as_str).collect();
                problems.push(
                    format!("inputs.{name}"),
                    format!("is not an input of this workflow (its inputs: {})", list_or_none(&known)),
                );
            }
        }
        let mut resolved = BTreeMap::new();
        for (name, spec) in &self.inputs {
            match given.get(name).or(spec.default.as_ref()) {
                Some(v) => {
                    resolved.insert(name.clone(), v.clone());
                }
                None if spec.required => problems.push(format!("inputs.{name}"), "is required and was not given"),
                None => {
                    resolved.insert(name.clone(), String::new());
                }
            }
        }
        problems.into_result(resolved)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputSpec {
    pub required: bool,
    pub default: Option<String>,
    pub description: Option<String>,
}

/// `[budget]`: reaching either pauses the run.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Budget {
    pub tokens: Option<u64>,
    /// In the price table's currency (USD in the example config).
    pub cost: Option<f64>,
}

#[derive(Debug, Clone)]
pub struct Step {
    pub id: String,
    pub title: Option<String>,
    pub needs: Vec<String>,
    /// A fan-out: the expression (without its `{{ }}`) giving the items,
    /// one parallel instance of the step per item.
    pub for_each: Option<String>,
    pub kind: StepKind,
    /// Start-to-close, per attempt.
    pub timeout: Option<Duration>,
    /// No output for this long is reported as a stall.
    pub stall: Option<Duration>,
    /// Retries after a failure (not after a cut: see `on_interrupt`).
    pub retries: u32,
    pub on_interrupt: OnInterrupt,
}

impl Step {
    pub fn kind_name(&self) -> bosun_proto::StepKind {
        match self.kind {
            StepKind::Agent(_) => bosun_proto::StepKind::Agent,
            StepKind::Shell(_) => bosun_proto::StepKind::Shell,
            StepKind::Gate { .. } => bosun_proto::StepKind::Gate,
            StepKind::Merge(_) => bosun_proto::StepKind::Merge,
        }
    }

    /// Whether the step runs as a session (agent and shell steps).
    pub fn session(&self) -> Option<&SessionStep> {
        match &self.kind {
            StepKind::Agent(s) | StepKind::Shell(s) => Some(s),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub enum StepKind {
    /// A turn of an agent, in a session of its own.
    Agent(SessionStep),
    /// One command, on the `shell` provider.
    Shell(SessionStep),
    /// A person decides, through the approvals API.
    Gate {
        message: String,
    },
    Merge(MergeStep),
}

/// What an agent or shell step runs.
#[derive(Debug, Clone)]
pub struct SessionStep {
    pub provider: String,
    /// The prompt (agent) or the command (shell), a template.
    pub text: String,
    pub policy: Policy,
    pub workspace: Option<WorkspaceSpec>,
    /// Only run by a merge whose `on_conflict` names it.
    pub resolver: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkspaceSpec {
    /// A new worktree of `repo` on a branch from `branch` (both templates).
    Repo { repo: String, branch: String },
    /// A new worktree branched from that step's branch.
    From(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeStep {
    /// The steps whose branches are merged (every item of a fan-out).
    pub from: Vec<String>,
    /// The step whose branch receives them.
    pub into: String,
    pub on_conflict: OnConflict,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnConflict {
    /// A gate shows the conflicting files and hunks; accepting it takes
    /// the branches that merge cleanly and leaves the others out.
    Gate,
    /// The resolver step of that id is prompted with the conflicts, in the
    /// target's worktree, and the merge is checked again after it.
    Resolver(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnInterrupt {
    /// The run pauses for a person to retry, skip or abort the step.
    #[default]
    Pause,
    /// The step is retried by itself.
    Retry,
}

/// One thing wrong with a definition: where, and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// `steps.build.needs`, `inputs.task`, `toml`...
    pub at: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.at, self.message)
    }
}

/// Everything wrong with a definition, in the file's order.
#[derive(Debug, Clone, Default, PartialEq, Eq, thiserror::Error)]
pub struct Problems(pub Vec<Problem>);

impl Problems {
    pub fn push(&mut self, at: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem { at: at.into(), message: message.into() });
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn into_result<T>(self, value: T) -> Result<T, Problems> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(self)
        }
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        write!(f, "{n} problem{}: ", if n == 1 { "" } else { "s" })?;
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

fn list_or_none(items: &[&str]) -> String {
    if items.is_empty() {
        "none".to_string()
    } else {
        items.join(", ")
    }
}

#[cfg(test)]
mod tests;
