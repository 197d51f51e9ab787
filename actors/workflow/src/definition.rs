//! The workflow file as TOML gives it: what a user writes, before it is
//! checked. [`crate::parse`] turns it into a [`crate::Workflow`], or into the
//! list of everything wrong with it.

use bosun_proto::Policy;
use serde::Deserialize;

/// The keys each table may hold, so an unknown one is named (all of them,
/// not only the first, as serde's `deny_unknown_fields` would).
pub(crate) const TOP_KEYS: &[&str] = &["name", "description", "inputs", "defaults", "budget", "steps"];
pub(crate) const INPUT_KEYS: &[&str] = &["required", "default", "description"];
pub(crate) const DEFAULTS_KEYS: &[&str] = &["provider", "policy", "timeout", "stall", "retries"];
pub(crate) const BUDGET_KEYS: &[&str] = &["tokens", "cost"];
pub(crate) const STEP_KEYS: &[&str] = &[
    "id",
    "kind",
    "title",
    "needs",
    "provider",
    "prompt",
    "command",
    "workspace",
    "for_each",
    "policy",
    "timeout",
    "stall",
    "retries",
    "on_interrupt",
    "message",
    "from",
    "into",
    "on_conflict",
];
pub(crate) const WORKSPACE_KEYS: &[&str] = &["repo", "branch", "from"];

#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct RawInput {
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub default: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct RawDefaults {
    pub provider: Option<String>,
    pub policy: Option<Policy>,
    pub timeout: Option<String>,
    pub stall: Option<String>,
    pub retries: Option<u32>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct RawBudget {
    pub tokens: Option<u64>,
    pub cost: Option<f64>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct RawStep {
    pub id: String,
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub needs: Vec<String>,
    #[serde(default)]
    pub provider: Option<String>,
    #[serde(default)]
    pub prompt: Option<String>,
    #[serde(default)]
    pub command: Option<String>,
    #[serde(default)]
    pub workspace: Option<toml::Value>,
    #[serde(default)]
    pub for_each: Option<String>,
    #[serde(default)]
    pub policy: Option<Policy>,
    #[serde(default)]
    pub timeout: Option<String>,
    #[serde(default)]
    pub stall: Option<String>,
    #[serde(default)]
    pub retries: Option<u32>,
    #[serde(default)]
    pub on_interrupt: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub from: Option<FromList>,
    #[serde(default)]
    pub into: Option<String>,
    #[serde(default)]
    pub on_conflict: Option<String>,
}

/// `from = "build"` or `from = ["a", "b"]` on a merge step.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum FromList {
    One(String),
    Many(Vec<String>),
}

impl FromList {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            FromList::One(s) => vec![s],
            FromList::Many(v) => v,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct RawWorkspace {
    pub repo: Option<String>,
    pub branch: Option<String>,
    pub from: Option<String>,
}
