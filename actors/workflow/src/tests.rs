use super::*;

fn known() -> Known {
    Known { providers: ["demo", "shell", "codex", "codex-acp"].iter().map(|s| s.to_string()).collect() }
}

/// The feature workflow of docs/WORKFLOWS.md (and examples/workflows/feature.toml).
const FEATURE: &str = include_str!("../../../examples/workflows/feature.toml");

fn problems(text: &str) -> Vec<String> {
    match parse(text, &known()) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(p) => p.0.iter().map(|p| p.to_string()).collect(),
    }
}

fn has(problems: &[String], needle: &str) -> bool {
    problems.iter().any(|p| p.contains(needle))
}

#[test]
fn the_feature_workflow_is_accepted() {
    let wf = parse(FEATURE, &known()).unwrap_or_else(|p| panic!("{p}"));
    assert_eq!(wf.name, "feature");
    assert_eq!(wf.steps.len(), 5);
    assert!(wf.inputs["task"].required);
    let build = wf.step("build").unwrap();
    assert_eq!(build.for_each.as_deref(), Some("steps.plan.lines"));
    assert_eq!(build.session().unwrap().workspace, Some(WorkspaceSpec::From("plan".into())));
    assert_eq!(build.timeout, Some(std::time::Duration::from_secs(20 * 60)));
    assert_eq!(build.session().unwrap().policy, Policy::FullAccess);
    let merge = wf.step("merge").unwrap();
    let StepKind::Merge(m) = &merge.kind else { panic!("not a merge") };
    assert_eq!(m.from, vec!["build"]);
    assert_eq!(m.into, "plan");
    assert_eq!(m.on_conflict, OnConflict::Gate);
    assert!(wf.graph.is_upstream("merge", "plan"));
    assert_eq!(wf.budget.tokens, Some(2_000_000));
}

#[test]
fn every_problem_is_named_at_once() {
    let text = r#"
name = "broken"
colour = "blue"
[inputs]
task = { required = true, typo = 1 }
[defaults]
timeout = "soon"
[[steps]]
id = "a"
needs = ["b"]
prompt = "{{ steps.c.output }}"
flavour = "x"
[[steps]]
id = "b"
needs = ["a"]
prompt = "{{ inputs.nope }} {{ item }}"
[[steps]]
id = "c"
needs = ["ghost"]
provider = "nobody"
prompt = "{{ oops"
"#;
    let p = problems(text);
    assert!(has(&p, "colour: unknown field"), "{p:#?}");
    assert!(has(&p, "inputs.task.typo: unknown field"), "{p:#?}");
    assert!(has(&p, "steps.a.flavour: unknown field"), "{p:#?}");
    assert!(has(&p, "defaults.timeout: \"soon\" is not a duration"), "{p:#?}");
    assert!(has(&p, "makes a cycle: a → b → a"), "{p:#?}");
    assert!(has(&p, "steps.c.needs: names \"ghost\", which is not a step"), "{p:#?}");
    assert!(has(&p, "steps.c.provider: unknown provider \"nobody\""), "{p:#?}");
    assert!(has(&p, "steps.c.prompt: template does not compile"), "{p:#?}");
    assert!(has(&p, "steps.a.prompt: reads steps.c, which is not upstream of a"), "{p:#?}");
    assert!(has(&p, "steps.b.prompt: reads inputs.nope, which is not declared"), "{p:#?}");
    assert!(has(&p, "steps.b.prompt: reads item, which only a for_each step has"), "{p:#?}");
}

#[test]
fn kind_specific_fields_are_checked() {
    let p = problems(
        r#"
name = "k"
[[steps]]
id = "g"
kind = "gate"
[[steps]]
id = "m"
kind = "merge"
needs = ["g"]
from = ["g"]
on_conflict = "nobody"
[[steps]]
id = "s"
kind = "shell"
prompt = "ls"
[[steps]]
id = "x"
kind = "dance"
[[steps]]
id = "w"
prompt = "hi"
workspace = { from = "g" }
message = "why"
"#,
    );
    assert!(has(&p, "steps.g.message: is required for a gate step"), "{p:#?}");
    assert!(has(&p, "steps.m.into: is required"), "{p:#?}");
    assert!(has(&p, "steps.m.on_conflict: must be \"gate\" or the id of a resolver step"), "{p:#?}");
    assert!(has(&p, "steps.s.command: is required for a shell step"), "{p:#?}");
    assert!(has(&p, "steps.s.prompt: is not used by a shell step"), "{p:#?}");
    assert!(has(&p, "steps.x.kind: unknown step kind \"dance\""), "{p:#?}");
    assert!(has(&p, "steps.w.workspace.from: names \"g\", which is not upstream of w"), "{p:#?}");
    assert!(has(&p, "steps.w.message: does not apply to a agent step"), "{p:#?}");
}

#[test]
fn syntax_errors_and_empty_definitions_are_refused() {
    assert!(has(&problems("name = "), "toml:"));
    let p = problems("name = \"n\"\n");
    assert!(has(&p, "steps: a workflow needs at least one step"), "{p:#?}");
    let p = problems("[[steps]]\nid = \"a\"\nprompt = \"x\"\n");
    assert!(has(&p, "name: is required"), "{p:#?}");
    let p = problems("name = \"n\"\n[[steps]]\nid = \"a\"\nprompt = \"x\"\n[[steps]]\nid = \"a\"\nprompt = \"y\"\n");
    assert!(has(&p, "steps.a.id: is used by another step"), "{p:#?}");
    let p = problems("name = \"n\"\n[[steps]]\nprompt = \"x\"\n");
    assert!(has(&p, "steps[0]: missing field `id`"), "{p:#?}");
}

#[test]
fn resolvers_run_only_inside_their_merge() {
    let text = r#"
name = "r"
[[steps]]
id = "a"
prompt = "x"
workspace = { repo = "/r" }
[[steps]]
id = "b"
needs = ["a"]
prompt = "y"
workspace = { from = "a" }
[[steps]]
id = "m"
kind = "merge"
needs = ["b"]
from = "b"
into = "a"
on_conflict = "fix"
[[steps]]
id = "fix"
prompt = "Resolve: {{ conflict }}"
"#;
    let wf = parse(text, &known()).unwrap_or_else(|p| panic!("{p}"));
    assert!(wf.step("fix").unwrap().session().unwrap().resolver);
    assert!(!wf.step("a").unwrap().session().unwrap().resolver);
    let p = problems(&text.replace("prompt = \"x\"", "prompt = \"{{ conflict }}\""));
    assert!(has(&p, "steps.a.prompt: reads conflict, which only a merge's resolver step has"), "{p:#?}");
}

#[test]
fn inputs_are_resolved_with_defaults_and_checked() {
    let wf = parse(
        "name = \"i\"\n[inputs]\ntask = { required = true }\nmood = \"calm\"\n[[steps]]\nid = \"a\"\nprompt = \"{{ inputs.task }} {{ inputs.mood }}\"\n",
        &known(),
    )
    .unwrap();
    let given = [("task".to_string(), "t".to_string())].into();
    let resolved = wf.resolve_inputs(&given).unwrap();
    assert_eq!(resolved["mood"], "calm");
    let err = wf.resolve_inputs(&[("extra".to_string(), "x".to_string())].into()).unwrap_err().to_string();
    assert!(err.contains("inputs.task: is required"), "{err}");
    assert!(err.contains("inputs.extra: is not an input"), "{err}");
}

#[test]
fn every_example_workflow_validates() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/workflows");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("examples/workflows") {
        let path = entry.expect("an entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("an example");
        if let Err(p) = parse(&text, &known()) {
            panic!("{}: {p}", path.display());
        }
        seen += 1;
    }
    assert!(seen >= 2, "{seen} examples");
}

#[test]
fn a_step_id_with_a_dash_read_by_dots_is_reported() {
    let p = problems("name = \"n\"\n[[steps]]\nid = \"a-b\"\nprompt = \"x\"\n[[steps]]\nid = \"c\"\nneeds = [\"a-b\"]\nprompt = \"{{ steps.a-b.output }}\"\n");
    assert!(has(&p, "steps.c.prompt: reads"), "{p:#?}");
}
