//! The example scripts of examples/scripts/ against a real daemon: relay.py
//! (pydantic models generated from docs/api/*.json by gen_models.py, a
//! websockets client) and relay.ts (typed with the PWA's generated
//! declarations, compiled by tsc and run on Node). Each starts one demo
//! session per agent and hands each agent's output to the next over the
//! WebSocket; the tests read what the daemon recorded (each session's turns
//! and their streamed text) to check the output really went through.
//!
//! The demo agent makes that checkable: a prompt with `SAY: <text>` lines is
//! answered with exactly those texts, and any other prompt with a reply that
//! quotes its first 8 words ("It opens with: ...").
//!
//! Also: the checked-in models are what the pinned generator makes of the
//! schemas now (`BOSUN_UPDATE_SCHEMAS=1 tests/run --test scripts` rewrites
//! them), relay.ts type-checks under `tsc --strict` and relay.py under
//! `mypy --strict`, and the checks bite: a renamed field fails relay.ts's
//! type-check, and relay.py's type-check and its parsing of events.
//!
//! `tests/run` installs what this needs: the Python tools in tests/.venv
//! (datamodel-code-generator, pydantic, websockets, mypy) and typescript in
//! tests/browser.

mod common;

use bosun_proto::{TurnStatus, Usage};
use common::{datas_of, tempdir, turn_text, ChunkKind, Daemon, Options};
use serde::Deserialize;
use serde_json::{json, Value};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn scripts() -> PathBuf {
    root().join("examples/scripts")
}

fn browser() -> PathBuf {
    root().join("tests/browser")
}

const MODEL_FILES: &[&str] = &["__init__.py", "api.py", "events.py"];

fn venv_python() -> PathBuf {
    let python = root().join("tests/.venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run tests/run (it installs the Python tools in tests/.venv)",
        python.display()
    );
    python
}

fn tsc_js() -> PathBuf {
    let tsc = browser().join("node_modules/typescript/bin/tsc");
    assert!(tsc.exists(), "{} is missing: run tests/run (npm ci in tests/browser)", tsc.display());
    tsc
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// `gen_models.py`, with the pinned generator of tests/.venv.
fn gen_models(events: &Path, out: &Path) -> Output {
    run(Command::new(venv_python())
        .arg(scripts().join("gen_models.py"))
        .arg("--openapi")
        .arg(root().join("docs/api/openapi.json"))
        .arg("--events")
        .arg(events)
        .arg("--out")
        .arg(out)
        .env("PYTHONDONTWRITEBYTECODE", "1"))
}

/// `mypy --strict` on the Python files of `dir` (relay.py finds its models
/// beside it), with a cache of its own.
fn mypy(dir: &Path, files: &[&str]) -> Output {
    let cache = tempdir();
    let mypy = root().join("tests/.venv/bin/mypy");
    assert!(
        mypy.exists(),
        "{} is missing: run tests/run (it installs the Python tools in tests/.venv)",
        mypy.display()
    );
    run(Command::new(mypy)
        .arg("--strict")
        .arg("--cache-dir")
        .arg(cache.path())
        .args(files)
        .current_dir(dir)
        .env("PYTHONDONTWRITEBYTECODE", "1"))
}

/// `tsc -p <dir>` emitting into `out`.
fn tsc(dir: &Path, out: &Path) -> Output {
    run(Command::new("node").arg(tsc_js()).arg("-p").arg(dir).arg("--outDir").arg(out).arg("--pretty").arg("false"))
}

// ---- The generated code is current, and the checks bite

#[test]
fn the_python_models_are_what_the_pinned_generator_makes_of_the_schemas() {
    let dir = tempdir();
    let out = dir.path().join("bosun_models");
    let made = gen_models(&root().join("docs/api/events.schema.json"), &out);
    assert!(made.status.success(), "gen_models.py failed ({}):\n{}", made.status, text(&made));
    let update = std::env::var_os("BOSUN_UPDATE_SCHEMAS").is_some();
    let kept_dir = scripts().join("bosun_models");
    for file in MODEL_FILES {
        let fresh = std::fs::read_to_string(out.join(file)).expect("a generated file");
        let kept = kept_dir.join(file);
        if update {
            std::fs::create_dir_all(&kept_dir).expect("mkdir bosun_models");
            std::fs::write(&kept, &fresh).expect("write the checked-in models");
        }
        assert!(
            std::fs::read_to_string(&kept).unwrap_or_default() == fresh,
            "{} is not what gen_models.py (datamodel-code-generator, pinned in tests/run) makes of docs/api/*.json \
             (the wire types changed, or the file was edited by hand). Run BOSUN_UPDATE_SCHEMAS=1 tests/run --test scripts to regenerate it \
             (or tests/.venv/bin/python examples/scripts/gen_models.py), then make relay.py follow.",
            kept.display()
        );
    }
    // Nothing else in the package: a file the generator no longer makes goes.
    let mut names: Vec<String> = std::fs::read_dir(&kept_dir)
        .expect("examples/scripts/bosun_models")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|name| name != "__pycache__")
        .collect();
    names.sort();
    assert_eq!(names, MODEL_FILES, "examples/scripts/bosun_models holds files gen_models.py does not make");
}

#[test]
fn relay_ts_type_checks_under_strict() {
    let out = tempdir();
    let done = tsc(&scripts(), out.path());
    assert!(
        done.status.success(),
        "tsc -p examples/scripts (strict) found errors in relay.ts ({}):\n{}",
        done.status,
        text(&done)
    );
    assert!(out.path().join("relay.js").exists(), "tsc emitted no relay.js");
}

#[test]
fn relay_py_type_checks_under_mypy_strict() {
    let done = mypy(&scripts(), &["relay.py", "gen_models.py"]);
    assert!(
        done.status.success(),
        "mypy --strict found errors in examples/scripts ({}):\n{}",
        done.status,
        text(&done)
    );
}

/// The event schema with `StreamChunk.text`, which both scripts read,
/// renamed to `body`.
fn schema_with_chunk_text_renamed() -> Value {
    let path = root().join("docs/api/events.schema.json");
    let mut schema: Value = serde_json::from_str(&std::fs::read_to_string(path).expect("read")).expect("JSON");
    let chunk = &mut schema["$defs"]["StreamChunk"];
    let field = chunk["properties"].as_object_mut().expect("properties").remove("text").expect("StreamChunk.text");
    chunk["properties"]["body"] = field;
    for name in chunk["required"].as_array_mut().expect("required") {
        if name == "text" {
            *name = json!("body");
        }
    }
    schema
}

/// A copy of relay.ts in the same layout, with declarations generated
/// (tests/browser/gen-types.mjs) from `events` and the OpenAPI document.
fn relay_ts_against(dir: &Path, events: &Path) -> Output {
    let copy = dir.join("examples/scripts");
    std::fs::create_dir_all(&copy).expect("mkdir");
    for file in ["relay.ts", "tsconfig.json"] {
        std::fs::copy(scripts().join(file), copy.join(file)).expect("copy");
    }
    let generated = run(Command::new("node")
        .arg(browser().join("gen-types.mjs"))
        .arg(events)
        .arg(root().join("docs/api/openapi.json"))
        .arg(dir.join("src/front/pwa/types"))
        .current_dir(browser()));
    assert!(generated.status.success(), "gen-types.mjs failed:\n{}", text(&generated));
    tsc(&copy, &dir.join("out"))
}

#[test]
fn relay_ts_stops_type_checking_when_a_field_it_reads_is_renamed() {
    let dir = tempdir();
    // As published, the copy type-checks: what fails below is the change.
    let same = relay_ts_against(&dir.path().join("same"), &root().join("docs/api/events.schema.json"));
    assert!(same.status.success(), "the copy of relay.ts does not type-check as published:\n{}", text(&same));

    let schema = dir.path().join("renamed.schema.json");
    std::fs::write(&schema, schema_with_chunk_text_renamed().to_string()).expect("write");
    let renamed = relay_ts_against(&dir.path().join("renamed"), &schema);
    let said = text(&renamed);
    assert!(!renamed.status.success(), "tsc accepted relay.ts against a schema without StreamChunk.text:\n{said}");
    assert!(
        said.contains("relay.ts") && said.contains("Property 'text' does not exist on type 'StreamChunk'"),
        "tsc failed, but not for the renamed field:\n{said}"
    );
}

#[tokio::test]
async fn relay_py_fails_on_models_without_a_field_it_reads() {
    let dir = tempdir();
    let copy = dir.path().join("scripts");
    std::fs::create_dir_all(&copy).expect("mkdir");
    std::fs::copy(scripts().join("relay.py"), copy.join("relay.py")).expect("copy relay.py");
    let schema = dir.path().join("renamed.schema.json");
    std::fs::write(&schema, schema_with_chunk_text_renamed().to_string()).expect("write");
    let made = gen_models(&schema, &copy.join("bosun_models"));
    assert!(made.status.success(), "gen_models.py failed:\n{}", text(&made));

    // Statically: mypy sees relay.py read a field the models lack.
    let checked = mypy(&copy, &["relay.py"]);
    let said = text(&checked);
    assert!(!checked.status.success(), "mypy accepted relay.py against models without StreamChunk.text:\n{said}");
    assert!(
        said.contains("relay.py") && said.contains("\"StreamChunk\" has no attribute \"text\""),
        "mypy failed, but not for the renamed field:\n{said}"
    );

    // And at run time: the daemon's events do not parse into those models.
    let d = Daemon::start(&dir.path().join("data"), Options::default());
    let relay = Relay {
        name: "relay.py (stale models)",
        program: venv_python().into(),
        args: vec![copy.join("relay.py").into()],
        _build: None,
    };
    let output = relay.output(&d, &["--json", "Write a haiku"]).await;
    let said = text(&output);
    assert!(!output.status.success(), "relay.py ran on models without StreamChunk.text:\n{said}");
    assert!(
        said.contains("does not match the models generated from the schemas") && said.contains("body"),
        "relay.py failed, but not for the mismatched event:\n{said}"
    );
}

// ---- The relays

/// A way to run one of the scripts.
struct Relay {
    name: &'static str,
    program: OsString,
    args: Vec<OsString>,
    /// Where relay.ts was compiled to.
    _build: Option<tempfile::TempDir>,
}

impl Relay {
    fn python() -> Relay {
        Relay {
            name: "relay.py",
            program: venv_python().into(),
            args: vec![scripts().join("relay.py").into()],
            _build: None,
        }
    }

    /// relay.ts compiled by tsc into a temp dir, run on Node with its
    /// WebSocket (behind a flag on Node 20).
    fn typescript() -> Relay {
        let build = tempdir();
        let done = tsc(&scripts(), build.path());
        assert!(done.status.success(), "tsc -p examples/scripts failed:\n{}", text(&done));
        Relay {
            name: "relay.ts",
            program: "node".into(),
            args: vec!["--experimental-websocket".into(), build.path().join("relay.js").into()],
            _build: Some(build),
        }
    }

    fn command(&self, d: &Daemon, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.program);
        cmd.args(&self.args)
            .arg("--url")
            .arg(&d.url)
            .args(args)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env_remove("BOSUN_URL")
            .env_remove("BOSUN_TOKEN")
            .current_dir(root())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    async fn wait(&self, child: tokio::process::Child, limit: Duration) -> Output {
        match tokio::time::timeout(limit, child.wait_with_output()).await {
            Ok(output) => output.expect("wait for the relay"),
            Err(_) => panic!("{} did not finish within {limit:?}", self.name),
        }
    }

    async fn output(&self, d: &Daemon, args: &[&str]) -> Output {
        let child = self.command(d, args).spawn().unwrap_or_else(|e| panic!("cannot start {}: {e}", self.name));
        self.wait(child, Duration::from_secs(120)).await
    }

    /// Runs it with `--json` to success; its summary.
    async fn run(&self, d: &Daemon, args: &[&str]) -> Summary {
        let output = self.output(d, &[&["--json"][..], args].concat()).await;
        summary(self.name, &output)
    }
}

/// What the scripts print with `--json` (both the same shape).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Summary {
    url: String,
    provider: String,
    agents: Vec<AgentRun>,
    output: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentRun {
    agent: String,
    session_id: String,
    turn_id: String,
    prompt: String,
    output: String,
    status: TurnStatus,
    reason: Option<String>,
    usage: Usage,
    reconnects: u64,
}

fn summary(name: &str, output: &Output) -> Summary {
    assert!(output.status.success(), "{name} failed ({}):\n{}", output.status, text(output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("{name} --json printed no summary ({e}):\n{stdout}\nstderr:\n{}", text(output)))
}

/// The next agent's prompt, as both scripts make it by default.
fn handoff(previous: &str, agent: &str, output: &str) -> String {
    format!("The {previous} wrote:\n\n{}\n\nYou are the {agent}: carry on from there.", output.trim())
}

/// Checks one agent's run against what the daemon recorded: its session had
/// exactly one turn, with `prompt` as its text, completed; and the text the
/// script collected is the text the turn streamed. Returns that text.
async fn recorded(d: &Daemon, run: &AgentRun, prompt: &str) -> String {
    let turns = d.client().turns(&run.session_id).await.expect("GET /api/v1/sessions/{id}/turns").turns;
    assert_eq!(turns.len(), 1, "{}'s session {} should have one turn: {turns:?}", run.agent, run.session_id);
    let turn = &turns[0];
    assert_eq!(turn.id, run.turn_id, "{}'s turn", run.agent);
    assert_eq!(turn.status, TurnStatus::Completed, "{}'s turn: {turn:?}", run.agent);
    assert_eq!(run.status, TurnStatus::Completed, "{} reported {:?}", run.agent, run.status);
    assert_eq!(run.reason, None, "{}", run.agent);
    assert_eq!(run.usage, turn.usage, "{}'s usage", run.agent);
    assert_eq!(turn.text, prompt, "the prompt the daemon got for the {} (GET .../turns)", run.agent);
    assert_eq!(run.prompt, prompt, "the prompt {} says it sent", run.agent);
    let events = d.typed_events(&run.session_id, 0).await;
    let streamed = turn_text(&events, &run.turn_id, Some(ChunkKind::Text));
    assert!(
        run.output == streamed,
        "{}'s output as the script collected it ({} bytes) is not what its turn streamed ({} bytes):\n{}",
        run.agent,
        run.output.len(),
        streamed.len(),
        first_difference(&run.output, &streamed)
    );
    streamed
}

fn first_difference(a: &str, b: &str) -> String {
    let at = a.chars().zip(b.chars()).take_while(|(x, y)| x == y).count();
    let around = |s: &str| s.chars().skip(at.saturating_sub(40)).take(120).collect::<String>();
    format!("first difference at char {at}:\n  collected: {:?}\n  streamed:  {:?}", around(a), around(b))
}

/// A word no other test's prompt has.
fn nonce(dir: &Path) -> String {
    let name = dir.file_name().expect("a temp dir name").to_string_lossy();
    format!("n{}", name.chars().filter(char::is_ascii_alphanumeric).collect::<String>())
}

async fn passes_each_agents_output_on(relay: Relay) {
    let dir = tempdir();
    let d = Daemon::start(&dir.path().join("data"), Options::default());
    let n = nonce(dir.path());

    // Scripted: the writer says a `SAY:` line, which makes the reviewer say
    // its text; so the reviewer's exact answer proves it got the writer's
    // output (its prompt, `SAY: SAY: ...`, would make it answer `SAY: ...`).
    let prompt = format!("SAY: SAY: approved {n}\nSAY: draft {n}, second line");
    let summary = relay.run(&d, &[&prompt]).await;
    assert_eq!(summary.url, d.url);
    assert_eq!(summary.provider, "demo");
    let names: Vec<&str> = summary.agents.iter().map(|a| a.agent.as_str()).collect();
    assert_eq!(names, ["writer", "reviewer"], "{summary:?}");
    assert_ne!(summary.agents[0].session_id, summary.agents[1].session_id, "one session per agent");
    for run in &summary.agents {
        assert_eq!(run.reconnects, 0, "{}: no drop, no reconnect", run.agent);
        let session = d.client().session(&run.session_id).await.expect("GET /api/v1/sessions/{id}");
        assert_eq!(session.session.provider, "demo");
        assert_eq!(session.session.title, format!("relay: {}", run.agent));
    }
    let written = recorded(&d, &summary.agents[0], &prompt).await;
    assert_eq!(written, format!("SAY: approved {n}\ndraft {n}, second line\n"), "the writer's reply");
    let reviewer_prompt = handoff("writer", "reviewer", &written);
    let reviewed = recorded(&d, &summary.agents[1], &reviewer_prompt).await;
    assert!(reviewer_prompt.contains(written.trim()), "the reviewer's prompt holds the writer's output");
    assert_eq!(reviewed, format!("approved {n}\n"), "the reviewer answers the writer's SAY line");
    assert_eq!(summary.output, reviewed, "the summary's output is the last agent's");

    // Prose, through three agents with a hand-off of their own: each reply
    // quotes the first 8 words of its prompt, which is the previous
    // agent's reply.
    let prompt = format!("Draft release notes for bosun {n} with care");
    let template = "{output}\n\n(From the {previous}, for the {agent}.)";
    let summary = relay.run(&d, &["--agents", "writer,critic,editor", "--handoff", template, &prompt]).await;
    let names: Vec<&str> = summary.agents.iter().map(|a| a.agent.as_str()).collect();
    assert_eq!(names, ["writer", "critic", "editor"], "{summary:?}");
    let mut prompt = prompt;
    let mut previous: Option<(&str, String)> = None;
    for run in &summary.agents {
        if let Some((agent, output)) = &previous {
            prompt = format!("{}\n\n(From the {agent}, for the {}.)", output.trim(), run.agent);
        }
        let reply = recorded(&d, run, &prompt).await;
        let quoted: Vec<&str> = prompt.split_whitespace().take(8).collect();
        let more = if prompt.split_whitespace().count() > 8 { " …" } else { "" };
        let quote = format!("It opens with: \"{}{more}\".", quoted.join(" "));
        assert!(reply.contains(&quote), "the {}'s reply should quote its prompt ({quote}):\n{reply}", run.agent);
        previous = Some((run.agent.as_str(), reply));
    }
    assert!(summary.agents[0].output.contains(&format!("bosun {n} with care")), "the writer quotes the prompt");
    assert!(
        summary.agents[1].output.contains("It opens with: \"Demo agent here. Your prompt has 8 words. …\""),
        "the critic's prompt opens with the writer's reply: {}",
        summary.agents[1].output
    );
    assert_eq!(summary.output, summary.agents[2].output);
}

#[tokio::test]
async fn relay_py_passes_each_agents_output_on() {
    passes_each_agents_output_on(Relay::python()).await;
}

#[tokio::test]
async fn relay_ts_passes_each_agents_output_on() {
    passes_each_agents_output_on(Relay::typescript()).await;
}

/// Under `require = "always"`, both need `--token`, and with it they work
/// (the token on every request and on the WebSocket's URL).
async fn presents_its_token(relay: Relay) {
    let dir = tempdir();
    let options =
        Options { config: Some("[auth]\nrequire = \"always\"\n".into()), admin_token: true, ..Default::default() };
    let d = Daemon::start(&dir.path().join("data"), options);
    let n = nonce(dir.path());
    let prompt = format!("SAY: SAY: let in {n}");

    let refused = relay.output(&d, &["--json", &prompt]).await;
    let said = text(&refused);
    assert!(!refused.status.success(), "{} ran without a token on a daemon that asks for one:\n{said}", relay.name);
    assert!(said.contains("401 unauthorized"), "{} failed, but not for the missing token:\n{said}", relay.name);

    let token = d.admin_token();
    let summary = relay.run(&d, &["--token", &token, &prompt]).await;
    assert_eq!(summary.output, format!("let in {n}\n"));
    let written = recorded(&d, &summary.agents[0], &prompt).await;
    recorded(&d, &summary.agents[1], &handoff("writer", "reviewer", &written)).await;
}

#[tokio::test]
async fn relay_py_presents_its_token() {
    presents_its_token(Relay::python()).await;
}

#[tokio::test]
async fn relay_ts_presents_its_token() {
    presents_its_token(Relay::typescript()).await;
}

/// The daemon is killed (-9) and restarted on the same port while the
/// writer's turn streams: the script's socket drops, it resubscribes from
/// the last seq it saw, and still collects every chunk exactly once (the
/// demo agent resumes the turn where it stopped).
async fn resumes_across_a_daemon_restart(relay: Relay) {
    let dir = tempdir();
    let mut d = Daemon::start(&dir.path().join("data"), Options::default());
    let n = nonce(dir.path());
    // SLOW: 600 `tick N/600` text chunks, 20 a second, after the SAY line.
    let prompt = format!("SAY: SAY: resumed {n}\nSLOW");
    let child = relay
        .command(&d, &["--json", "--reconnect-timeout", "120", &prompt])
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", relay.name));

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let events = d.events(None, 0).await;
        if datas_of!(&events, StreamChunk).iter().any(|c| c.text == "tick 40/600\n") {
            break;
        }
        assert!(Instant::now() < deadline, "the writer's turn never reached tick 40");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    d = d.restart_in_place();

    let output = relay.wait(child, Duration::from_secs(180)).await;
    let summary = summary(relay.name, &output);
    let writer = &summary.agents[0];
    assert!(
        writer.reconnects >= 1,
        "{} never reconnected, so the socket never dropped:\n{}",
        relay.name,
        text(&output)
    );
    let mut expected = format!("SAY: resumed {n}\n");
    for i in 1..=600 {
        expected.push_str(&format!("tick {i}/600\n"));
    }
    assert!(
        writer.output == expected,
        "the writer's output should be its SAY line and every tick once, in order:\n{}",
        first_difference(&writer.output, &expected)
    );
    assert_eq!(recorded(&d, writer, &prompt).await, expected);
    let reviewed = recorded(&d, &summary.agents[1], &handoff("writer", "reviewer", &expected)).await;
    assert_eq!(reviewed, format!("resumed {n}\n"));
    assert_eq!(summary.output, reviewed);
}

#[tokio::test]
async fn relay_py_resumes_across_a_daemon_restart() {
    resumes_across_a_daemon_restart(Relay::python()).await;
}

#[tokio::test]
async fn relay_ts_resumes_across_a_daemon_restart() {
    resumes_across_a_daemon_restart(Relay::typescript()).await;
}
