//! From TOML text to a checked [`Workflow`], collecting every problem on the
//! way rather than stopping at the first: a user fixing a definition sees
//! all of what is wrong at once.

use crate::definition::*;
use crate::graph::Graph;
use crate::template::{bare_expression, Templates, STEP_FIELDS};
use crate::*;
use serde::de::DeserializeOwned;
use std::collections::BTreeSet;

/// What the daemon running the workflow has: the providers a step may name.
#[derive(Debug, Clone, Default)]
pub struct Known {
    pub providers: Vec<String>,
}

/// The longest a step id may be; ids name sessions and appear in branches.
const MAX_ID: usize = 64;
/// The provider shell steps run on.
pub const SHELL_PROVIDER: &str = "shell";
/// The provider of agent steps that name none, when `[defaults]` names none.
pub const DEFAULT_PROVIDER: &str = "demo";

pub fn parse(text: &str, known: &Known) -> Result<Workflow, Problems> {
    let mut p = Problems::default();
    let table: toml::Table = match text.parse() {
        Ok(t) => t,
        Err(e) => {
            p.push("toml", e.to_string().trim().replace('\n', " "));
            return Err(p);
        }
    };
    unknown_keys(&mut p, "", &table, TOP_KEYS);

    let name = match table.get("name") {
        Some(toml::Value::String(s)) if !s.trim().is_empty() => s.clone(),
        Some(toml::Value::String(_)) | None => {
            p.push("name", "is required (a non-empty text)");
            String::new()
        }
        Some(_) => {
            p.push("name", "must be a text");
            String::new()
        }
    };
    let description = typed::<String>(&mut p, "description", table.get("description"));

    let mut inputs = BTreeMap::new();
    match table.get("inputs") {
        None => {}
        Some(toml::Value::Table(t)) => {
            for (key, value) in t {
                let at = format!("inputs.{key}");
                let raw = match value {
                    // `task = {}` and `task = { required = true }`; a bare
                    // text is its default.
                    toml::Value::Table(fields) => {
                        unknown_keys(&mut p, &at, fields, INPUT_KEYS);
                        typed::<RawInput>(&mut p, &at, Some(value)).unwrap_or_default()
                    }
                    toml::Value::String(s) => RawInput { default: Some(s.clone()), ..RawInput::default() },
                    _ => {
                        p.push(&at, "must be a table ({ required = true }) or a default text");
                        continue;
                    }
                };
                if !is_identifier(key) {
                    p.push(&at, "an input's name is letters, digits and _, starting with a letter");
                }
                inputs.insert(
                    key.clone(),
                    InputSpec { required: raw.required, default: raw.default, description: raw.description },
                );
            }
        }
        Some(_) => p.push("inputs", "must be a table"),
    }

    let defaults = match table.get("defaults") {
        None => RawDefaults::default(),
        Some(v @ toml::Value::Table(t)) => {
            unknown_keys(&mut p, "defaults", t, DEFAULTS_KEYS);
            typed::<RawDefaults>(&mut p, "defaults", Some(v)).unwrap_or_default()
        }
        Some(_) => {
            p.push("defaults", "must be a table");
            RawDefaults::default()
        }
    };
    let default_timeout = duration(&mut p, "defaults.timeout", defaults.timeout.as_deref());
    let default_stall = duration(&mut p, "defaults.stall", defaults.stall.as_deref());
    if let Some(provider) = &defaults.provider {
        check_provider(&mut p, "defaults.provider", provider, known);
    }

    let budget = match table.get("budget") {
        None => RawBudget::default(),
        Some(v @ toml::Value::Table(t)) => {
            unknown_keys(&mut p, "budget", t, BUDGET_KEYS);
            typed::<RawBudget>(&mut p, "budget", Some(v)).unwrap_or_default()
        }
        Some(_) => {
            p.push("budget", "must be a table");
            RawBudget::default()
        }
    };
    if budget.cost.is_some_and(|c| !(c.is_finite() && c >= 0.0)) {
        p.push("budget.cost", "must be a number of at least 0");
    }

    // Each step on its own, so a broken one does not hide the others' problems.
    let raw_steps: Vec<toml::Value> = match table.get("steps") {
        None => Vec::new(),
        Some(toml::Value::Array(a)) => a.clone(),
        Some(_) => {
            p.push("steps", "must be an array of tables ([[steps]])");
            Vec::new()
        }
    };
    if raw_steps.is_empty() && table.get("steps").is_none_or(|s| s.is_array()) {
        p.push("steps", "a workflow needs at least one step ([[steps]])");
    }
    let mut steps: Vec<(String, RawStep)> = Vec::new();
    let mut seen = BTreeSet::new();
    for (i, value) in raw_steps.iter().enumerate() {
        let id_hint = value.get("id").and_then(|v| v.as_str()).map(str::to_string);
        let at = match &id_hint {
            Some(id) => format!("steps.{id}"),
            None => format!("steps[{i}]"),
        };
        let Some(fields) = value.as_table() else {
            p.push(&at, "must be a table");
            continue;
        };
        unknown_keys(&mut p, &at, fields, STEP_KEYS);
        if let Some(toml::Value::Table(ws)) = fields.get("workspace") {
            unknown_keys(&mut p, &format!("{at}.workspace"), ws, WORKSPACE_KEYS);
        }
        let Some(raw) = typed::<RawStep>(&mut p, &at, Some(value)) else { continue };
        if raw.id.is_empty() || raw.id.len() > MAX_ID || !is_identifier(&raw.id.replace('-', "_")) {
            p.push(
                format!("{at}.id"),
                format!("a step id is 1 to {MAX_ID} letters, digits, _ and -, starting with a letter"),
            );
        }
        if !seen.insert(raw.id.clone()) {
            p.push(format!("{at}.id"), "is used by another step");
            continue;
        }
        steps.push((at, raw));
    }

    // The graph: every target there, then no cycle.
    let ids: BTreeSet<String> = steps.iter().map(|(_, s)| s.id.clone()).collect();
    for (at, raw) in &steps {
        for need in &raw.needs {
            if !ids.contains(need) {
                p.push(format!("{at}.needs"), format!("names {need:?}, which is not a step"));
            } else if need == &raw.id {
                p.push(format!("{at}.needs"), "a step cannot need itself");
            }
        }
    }
    let edges: Vec<(String, Vec<String>)> = steps
        .iter()
        .map(|(_, s)| (s.id.clone(), s.needs.iter().filter(|n| ids.contains(*n) && **n != s.id).cloned().collect()))
        .collect();
    let graph = match Graph::new(&edges) {
        Ok(g) => g,
        Err(cycle) => {
            p.push(format!("steps.{}.needs", cycle[0]), format!("makes a cycle: {}", cycle.join(" → ")));
            Graph::default()
        }
    };

    // Resolver steps: named by a merge's on_conflict, run only by it.
    let resolvers: BTreeSet<String> =
        steps.iter().filter_map(|(_, s)| s.on_conflict.clone()).filter(|c| c != "gate" && ids.contains(c)).collect();

    let templates = Templates::new();
    let mut checked = Vec::new();
    for (at, raw) in steps {
        let kind_name = raw.kind.clone().unwrap_or_else(|| "agent".to_string());
        let resolver = resolvers.contains(&raw.id);
        let mut tpl = TemplateCheck {
            p: &mut p,
            templates: &templates,
            graph: &graph,
            step: &raw.id,
            inputs: &inputs,
            fan_out: raw.for_each.is_some(),
            resolver,
        };
        let for_each = match &raw.for_each {
            None => None,
            Some(text) => match bare_expression(text) {
                None => {
                    tpl.p.push(
                        format!("{at}.for_each"),
                        "must be one expression in braces, like \"{{ steps.plan.lines }}\"",
                    );
                    None
                }
                Some(expr) => {
                    // The items come from upstream, never from the item itself.
                    tpl.fan_out = false;
                    tpl.expression(&format!("{at}.for_each"), expr);
                    tpl.fan_out = true;
                    Some(expr.to_string())
                }
            },
        };
        let policy = raw.policy.or(defaults.policy).unwrap_or(Policy::PlanOnly);
        let kind = match kind_name.as_str() {
            "agent" | "shell" => {
                let shell = kind_name == "shell";
                let (field, text) = if shell { ("command", &raw.command) } else { ("prompt", &raw.prompt) };
                let wrong = if shell { ("prompt", &raw.prompt) } else { ("command", &raw.command) };
                if wrong.1.is_some() {
                    tpl.p.push(
                        format!("{at}.{}", wrong.0),
                        format!("is not used by a{} {kind_name} step; use {field}", if shell { "" } else { "n" }),
                    );
                }
                let text = match text {
                    Some(t) if !t.trim().is_empty() => {
                        tpl.template(&format!("{at}.{field}"), t);
                        t.clone()
                    }
                    _ => {
                        tpl.p.push(
                            format!("{at}.{field}"),
                            format!("is required for a{} {kind_name} step", if shell { "" } else { "n" }),
                        );
                        String::new()
                    }
                };
                let provider = if shell {
                    if let Some(given) = raw.provider.as_deref().filter(|p| *p != SHELL_PROVIDER) {
                        tpl.p.push(
                            format!("{at}.provider"),
                            format!("a shell step runs on the {SHELL_PROVIDER:?} provider, not {given:?}"),
                        );
                    }
                    SHELL_PROVIDER.to_string()
                } else {
                    raw.provider.clone().or(defaults.provider.clone()).unwrap_or_else(|| DEFAULT_PROVIDER.to_string())
                };
                check_provider(tpl.p, &format!("{at}.provider"), &provider, known);
                let workspace = match &raw.workspace {
                    None => None,
                    Some(v) => tpl.workspace(&format!("{at}.workspace"), v, resolver),
                };
                if resolver {
                    if !raw.needs.is_empty() || raw.for_each.is_some() {
                        tpl.p.push(&at, "a resolver step (named by a merge's on_conflict) runs only for that merge: it takes no needs and no for_each");
                    }
                    if raw.workspace.is_some() {
                        tpl.p.push(
                            format!("{at}.workspace"),
                            "a resolver step works in the merge target's worktree; it takes no workspace",
                        );
                    }
                    if shell {
                        tpl.p.push(format!("{at}.kind"), "a resolver step must be an agent step");
                    }
                }
                let s = SessionStep { provider, text, policy, workspace, resolver };
                if shell {
                    StepKind::Shell(s)
                } else {
                    StepKind::Agent(s)
                }
            }
            "gate" => {
                let message = match &raw.message {
                    Some(m) if !m.trim().is_empty() => {
                        tpl.template(&format!("{at}.message"), m);
                        m.clone()
                    }
                    _ => {
                        tpl.p.push(format!("{at}.message"), "is required for a gate step");
                        String::new()
                    }
                };
                StepKind::Gate { message }
            }
            "merge" => {
                let from = raw.from.clone().map(FromList::into_vec).unwrap_or_default();
                if from.is_empty() {
                    tpl.p
                        .push(format!("{at}.from"), "is required for a merge step: the steps whose branches it merges");
                }
                for f in &from {
                    tpl.upstream_with_workspace(&format!("{at}.from"), f);
                }
                let into = match &raw.into {
                    Some(i) => {
                        tpl.upstream_with_workspace(&format!("{at}.into"), i);
                        if from.contains(i) {
                            tpl.p.push(format!("{at}.into"), "cannot also be in from");
                        }
                        i.clone()
                    }
                    None => {
                        tpl.p.push(
                            format!("{at}.into"),
                            "is required for a merge step: the step whose branch receives the others",
                        );
                        String::new()
                    }
                };
                let on_conflict = match raw.on_conflict.as_deref() {
                    None | Some("gate") => OnConflict::Gate,
                    Some(other) if ids.contains(other) => OnConflict::Resolver(other.to_string()),
                    Some(other) => {
                        tpl.p.push(
                            format!("{at}.on_conflict"),
                            format!("must be \"gate\" or the id of a resolver step; {other:?} is neither"),
                        );
                        OnConflict::Gate
                    }
                };
                StepKind::Merge(MergeStep { from, into, on_conflict })
            }
            other => {
                tpl.p.push(
                    format!("{at}.kind"),
                    format!("unknown step kind {other:?}; known: agent, shell, gate, merge"),
                );
                continue;
            }
        };
        // Fields that belong to other kinds are mistakes, not silently dropped.
        let session = matches!(kind, StepKind::Agent(_) | StepKind::Shell(_));
        for (field, set) in [
            ("provider", raw.provider.is_some() && !session),
            ("workspace", raw.workspace.is_some() && !session),
            ("policy", raw.policy.is_some() && !session),
            ("message", raw.message.is_some() && !matches!(kind, StepKind::Gate { .. })),
            ("from", raw.from.is_some() && !matches!(kind, StepKind::Merge(_))),
            ("into", raw.into.is_some() && !matches!(kind, StepKind::Merge(_))),
            ("on_conflict", raw.on_conflict.is_some() && !matches!(kind, StepKind::Merge(_))),
        ] {
            if set {
                p.push(format!("{at}.{field}"), format!("does not apply to a {kind_name} step"));
            }
        }
        if for_each.is_some() && !session {
            p.push(format!("{at}.for_each"), format!("does not apply to a {kind_name} step"));
        }
        let on_interrupt = match raw.on_interrupt.as_deref() {
            None | Some("pause") => OnInterrupt::Pause,
            Some("retry") => OnInterrupt::Retry,
            Some(other) => {
                p.push(format!("{at}.on_interrupt"), format!("must be \"pause\" or \"retry\", not {other:?}"));
                OnInterrupt::Pause
            }
        };
        let timeout = duration(&mut p, &format!("{at}.timeout"), raw.timeout.as_deref()).or(default_timeout);
        let stall = duration(&mut p, &format!("{at}.stall"), raw.stall.as_deref()).or(default_stall);
        checked.push(Step {
            id: raw.id,
            title: raw.title,
            needs: raw.needs,
            for_each,
            kind,
            timeout,
            stall,
            retries: raw.retries.or(defaults.retries).unwrap_or(0),
            on_interrupt,
        });
    }
    // No step may wait on a resolver: it runs only inside its merge.
    for step in &checked {
        for need in &step.needs {
            if resolvers.contains(need) {
                p.push(
                    format!("steps.{}.needs", step.id),
                    format!("names {need:?}, a resolver step, which runs only inside its merge"),
                );
            }
        }
    }

    p.into_result(Workflow {
        name,
        description,
        inputs,
        budget: Budget { tokens: budget.tokens, cost: budget.cost },
        steps: checked,
        graph,
    })
}

/// The template checks of one step: each template compiles, and reads only
/// declared inputs, upstream steps' fields, and `item`/`index` in a fan-out.
struct TemplateCheck<'a> {
    p: &'a mut Problems,
    templates: &'a Templates,
    graph: &'a Graph,
    step: &'a str,
    inputs: &'a BTreeMap<String, InputSpec>,
    fan_out: bool,
    resolver: bool,
}

impl TemplateCheck<'_> {
    fn template(&mut self, at: &str, source: &str) {
        match self.templates.variables(source) {
            Ok(vars) => self.reads(at, vars),
            Err(e) => self.p.push(at, format!("template does not compile: {e}")),
        }
    }

    fn expression(&mut self, at: &str, expr: &str) {
        match self.templates.expression_variables(expr) {
            Ok(vars) => self.reads(at, vars),
            Err(e) => self.p.push(at, format!("expression does not compile: {e}")),
        }
    }

    fn reads(&mut self, at: &str, vars: BTreeSet<String>) {
        for var in vars {
            let parts: Vec<&str> = var.split('.').collect();
            match parts[0] {
                "inputs" => match parts.get(1) {
                    Some(name) if self.inputs.contains_key(*name) => {}
                    Some(name) => self.p.push(at, format!("reads inputs.{name}, which is not declared in [inputs]")),
                    None => self.p.push(at, "reads inputs as a whole; read one input: inputs.<name>"),
                },
                "steps" => match parts.get(1) {
                    Some(step) if self.graph.is_upstream(self.step, step) => match parts.get(2) {
                        Some(field) if !STEP_FIELDS.contains(field) => self.p.push(
                            at,
                            format!("reads steps.{step}.{field}; a step offers {}", STEP_FIELDS.join(", ")),
                        ),
                        _ => {}
                    },
                    Some(step) => self.p.push(
                        at,
                        format!("reads steps.{step}, which is not upstream of {} (add it to needs)", self.step),
                    ),
                    None => self.p.push(at, "reads steps as a whole; read one step: steps.<id>.output (an id read in a template cannot hold a -: minijinja reads it as a minus)"),
                },
                "item" | "index" if self.fan_out => {}
                "item" | "index" => self.p.push(at, format!("reads {}, which only a for_each step has", parts[0])),
                "conflict" if self.resolver => {}
                "conflict" => self.p.push(at, "reads conflict, which only a merge's resolver step has"),
                other => self.p.push(
                    at,
                    format!("reads {other}, which is not a template variable (inputs, steps, item, index)"),
                ),
            }
        }
    }

    fn upstream_with_workspace(&mut self, at: &str, step: &str) {
        if !self.graph.is_upstream(self.step, step) {
            self.p.push(at, format!("names {step:?}, which is not upstream of {} (add it to needs)", self.step));
        }
    }

    fn workspace(&mut self, at: &str, value: &toml::Value, resolver: bool) -> Option<WorkspaceSpec> {
        if resolver {
            return None;
        }
        let raw: RawWorkspace = typed(self.p, at, Some(value))?;
        match (raw.repo, raw.from) {
            (Some(repo), None) => {
                let branch = raw.branch.unwrap_or_else(|| "main".to_string());
                self.template(&format!("{at}.repo"), &repo);
                self.template(&format!("{at}.branch"), &branch);
                Some(WorkspaceSpec::Repo { repo, branch })
            }
            (None, Some(from)) => {
                if raw.branch.is_some() {
                    self.p.push(format!("{at}.branch"), "does not go with from: the branch is that step's");
                }
                self.upstream_with_workspace(&format!("{at}.from"), &from);
                Some(WorkspaceSpec::From(from))
            }
            (Some(_), Some(_)) => {
                self.p.push(at, "give repo (a new worktree) or from (branched from a step's), not both");
                None
            }
            (None, None) => {
                self.p.push(at, "needs repo (a new worktree) or from (branched from a step's)");
                None
            }
        }
    }
}

fn unknown_keys(p: &mut Problems, at: &str, table: &toml::Table, known: &[&str]) {
    for key in table.keys() {
        if !known.contains(&key.as_str()) {
            let path = if at.is_empty() { key.clone() } else { format!("{at}.{key}") };
            p.push(path, format!("unknown field; known here: {}", known.join(", ")));
        }
    }
}

/// `value` as a `T`, or a problem at `at`.
fn typed<T: DeserializeOwned>(p: &mut Problems, at: &str, value: Option<&toml::Value>) -> Option<T> {
    let value = value?;
    match value.clone().try_into::<T>() {
        Ok(v) => Some(v),
        Err(e) => {
            p.push(at, e.to_string().trim().replace('\n', " "));
            None
        }
    }
}

fn duration(p: &mut Problems, at: &str, text: Option<&str>) -> Option<std::time::Duration> {
    let text = text?;
    match humantime::parse_duration(text) {
        Ok(d) if !d.is_zero() => Some(d),
        Ok(_) => {
            p.push(at, "must be longer than zero");
            None
        }
        Err(e) => {
            p.push(at, format!("{text:?} is not a duration like \"90s\", \"20m\" or \"1h30m\": {e}"));
            None
        }
    }
}

fn check_provider(p: &mut Problems, at: &str, provider: &str, known: &Known) {
    if !known.providers.iter().any(|k| k == provider) {
        p.push(
            at,
            format!(
                "unknown provider {provider:?}; known: {}",
                list_or_none(&known.providers.iter().map(String::as_str).collect::<Vec<_>>())
            ),
        );
    }
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic()) && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}
