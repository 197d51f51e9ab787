//! Templates (`{{ inputs.task }}`, `{{ steps.plan.lines }}`) through
//! minijinja, with undefined values an error: a prompt never goes out with
//! a hole where a value was meant to be.

use minijinja::{Environment, UndefinedBehavior, Value};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// What a step's templates can read of an upstream step.
pub const STEP_FIELDS: &[&str] = &["output", "lines", "diff", "items"];

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RenderError(String);

/// The values templates are rendered with.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TemplateContext {
    pub inputs: BTreeMap<String, String>,
    pub steps: BTreeMap<String, StepOutputs>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub item: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<u64>,
    /// A resolver's view of the merge conflict it is asked to resolve.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conflict: Option<String>,
}

/// What a finished step offers downstream. A fan-out step's `output`,
/// `lines` and `diff` join those of its items, in item order; `items`
/// holds each.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StepOutputs {
    pub output: String,
    pub lines: Vec<String>,
    pub diff: String,
    pub items: Vec<StepOutputs>,
}

impl StepOutputs {
    /// The outputs of one instance: its final reply and its diff.
    pub fn of(output: &str, diff: &str) -> StepOutputs {
        StepOutputs { output: output.to_string(), lines: lines_of(output), diff: diff.to_string(), items: Vec::new() }
    }

    /// The outputs of a fan-out, from its items in order.
    pub fn joined(items: Vec<StepOutputs>) -> StepOutputs {
        let output = items.iter().map(|i| i.output.trim_end()).collect::<Vec<_>>().join("\n\n");
        let lines = items.iter().flat_map(|i| i.lines.iter().cloned()).collect();
        let diff = items.iter().map(|i| i.diff.as_str()).collect::<String>();
        StepOutputs { output, lines, diff, items }
    }
}

/// The non-empty lines of a reply, trimmed.
pub fn lines_of(text: &str) -> Vec<String> {
    text.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect()
}

/// The template engine, set up the one way the daemon uses it.
pub struct Templates {
    env: Environment<'static>,
}

impl Default for Templates {
    fn default() -> Templates {
        Templates::new()
    }
}

impl Templates {
    pub fn new() -> Templates {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        // Prompts are text, not HTML: nothing is escaped.
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
        // Keep a prompt's last newline: an agent may care.
        env.set_keep_trailing_newline(true);
        Templates { env }
    }

    /// The variables `source` reads, as dotted paths (`steps.plan.lines`),
    /// or why it does not compile.
    pub fn variables(&self, source: &str) -> Result<BTreeSet<String>, String> {
        let template = self.env.template_from_str(source).map_err(|e| describe(&e))?;
        Ok(template.undeclared_variables(true).into_iter().collect())
    }

    /// The variables a `for_each` expression reads, or why it does not compile.
    pub fn expression_variables(&self, expr: &str) -> Result<BTreeSet<String>, String> {
        self.env.compile_expression(expr).map_err(|e| describe(&e))?;
        // An expression reads what the same text printed would.
        self.variables(&format!("{{{{ {expr} }}}}"))
    }

    pub fn render(&self, source: &str, ctx: &TemplateContext) -> Result<String, RenderError> {
        self.env.render_str(source, ctx).map_err(|e| RenderError(describe(&e)))
    }

    /// The items of a fan-out: a list gives its elements (as text), a text
    /// its non-empty lines.
    pub fn items(&self, expr: &str, ctx: &TemplateContext) -> Result<Vec<String>, RenderError> {
        let compiled = self.env.compile_expression(expr).map_err(|e| RenderError(describe(&e)))?;
        let value = compiled.eval(ctx).map_err(|e| RenderError(describe(&e)))?;
        // An expression reading past what is there gives undefined, which
        // would iterate as nothing: a fan-out of no items by mistake.
        if value.is_undefined() || value.is_none() {
            return Err(RenderError(format!("{expr} is undefined")));
        }
        if let Some(s) = value.as_str() {
            return Ok(lines_of(s));
        }
        let iter = value
            .try_iter()
            .map_err(|_| RenderError(format!("for_each must give a list or a text, not {}", value.kind())))?;
        Ok(iter.map(|v: Value| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())).collect())
    }
}

/// A minijinja error in one line, with the detail it keeps apart.
fn describe(e: &minijinja::Error) -> String {
    let mut s = e.to_string();
    if let Some(detail) = e.detail() {
        if !s.contains(detail) {
            s.push_str(": ");
            s.push_str(detail);
        }
    }
    s
}

/// The `{{ expr }}` of a `for_each`, without its braces; `None` if the text
/// is not one expression in braces.
pub fn bare_expression(text: &str) -> Option<&str> {
    let inner = text.trim().strip_prefix("{{")?.strip_suffix("}}")?.trim();
    (!inner.is_empty() && !inner.contains("{{") && !inner.contains("}}")).then_some(inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_inputs_steps_and_items() {
        let t = Templates::new();
        let mut ctx = TemplateContext::default();
        ctx.inputs.insert("task".into(), "add a flag".into());
        ctx.steps.insert("plan".into(), StepOutputs::of("one\n\n two \n", "d"));
        ctx.item = Some("one".into());
        ctx.index = Some(0);
        let out =
            t.render("{{ inputs.task }}: {{ item }} #{{ index }} of {{ steps.plan.lines | length }}", &ctx).unwrap();
        assert_eq!(out, "add a flag: one #0 of 2");
        assert_eq!(t.items("steps.plan.lines", &ctx).unwrap(), vec!["one", "two"]);
        assert_eq!(t.items("steps.plan.output", &ctx).unwrap(), vec!["one", "two"]);
        let err = t.items("steps.plan.lines[5]", &ctx).unwrap_err();
        assert!(err.to_string().contains("undefined"), "{err}");
    }

    #[test]
    fn a_missing_value_is_an_error_not_a_hole() {
        let t = Templates::new();
        let err = t.render("{{ inputs.nope }}", &TemplateContext::default()).unwrap_err();
        assert!(err.to_string().contains("undefined"), "{err}");
    }

    #[test]
    fn variables_are_dotted_paths() {
        let t = Templates::new();
        let vars =
            t.variables("{{ steps.plan.lines }} {% for l in steps.build.items %}{{ l.output }}{% endfor %}").unwrap();
        assert!(vars.contains("steps.plan.lines"), "{vars:?}");
        assert!(vars.contains("steps.build.items"), "{vars:?}");
        assert!(!vars.contains("l.output"), "{vars:?}");
        assert!(t.variables("{{ oops").is_err());
        assert_eq!(bare_expression(" {{ steps.plan.lines }} "), Some("steps.plan.lines"));
        assert_eq!(bare_expression("steps.plan.lines"), None);
    }

    #[test]
    fn fan_out_outputs_join_in_item_order() {
        let joined = StepOutputs::joined(vec![StepOutputs::of("a\n", "+a\n"), StepOutputs::of("b", "+b\n")]);
        assert_eq!(joined.output, "a\n\nb");
        assert_eq!(joined.lines, vec!["a", "b"]);
        assert_eq!(joined.diff, "+a\n+b\n");
        assert_eq!(joined.items.len(), 2);
    }
}
