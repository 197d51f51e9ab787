//! The PWA type-checks against the daemon's own contract: the TypeScript
//! declarations in src/front/pwa/types/ are generated (tests/browser/gen-types.mjs,
//! json-schema-to-typescript) from the event schema and the OpenAPI document
//! the daemon serves, and `tsc --noEmit` checks the app's `// @ts-check`
//! modules against them (src/front/pwa/tsconfig.json).
//!
//! So a renamed field in a Rust wire type breaks the app's type-check, and a
//! new event type does not type-check until transcript.js has a renderer for
//! it; the last test makes both changes to a copy and checks that tsc fails.
//!
//! `BOSUN_UPDATE_SCHEMAS=1 tests/run --test pwa_types` rewrites the
//! checked-in declarations (as `--test contract` rewrites docs/api/).
//! `tests/run` installs typescript and json-schema-to-typescript (npm ci in
//! tests/browser).

mod common;

use common::{tempdir, Daemon, Options};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const FILES: &[&str] = &["events.d.ts", "api.d.ts"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn pwa() -> PathBuf {
    root().join("src/front/pwa")
}

fn browser() -> PathBuf {
    root().join("tests/browser")
}

fn check_installed() {
    for package in ["typescript", "json-schema-to-typescript"] {
        let manifest = browser().join("node_modules").join(package).join("package.json");
        assert!(manifest.exists(), "{} is missing: run tests/run (npm ci in tests/browser)", manifest.display());
    }
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// What the daemon serves, as the files gen-types.mjs reads.
async fn served_schemas(dir: &Path) -> (PathBuf, PathBuf) {
    let data = tempdir();
    let d = Daemon::start(&data.path().join("data"), Options::default());
    let events = dir.join("events.schema.json");
    let openapi = dir.join("openapi.json");
    for (path, file) in [("/api/v1/schema/events.json", &events), ("/api/v1/openapi.json", &openapi)] {
        let doc = d.ok_get(path).await;
        std::fs::write(file, serde_json::to_string_pretty(&doc).expect("JSON")).expect("write schema");
    }
    (events, openapi)
}

fn generate(events: &Path, openapi: &Path, out: &Path) {
    check_installed();
    let output = run(Command::new("node")
        .arg(browser().join("gen-types.mjs"))
        .arg(events)
        .arg(openapi)
        .arg(out)
        .current_dir(browser()));
    assert!(output.status.success(), "gen-types.mjs failed ({}):\n{}", output.status, text(&output));
}

/// `tsc --noEmit -p <dir>/tsconfig.json`.
fn tsc(dir: &Path) -> Output {
    check_installed();
    let tsc = browser().join("node_modules/typescript/bin/tsc");
    run(Command::new("node")
        .arg(tsc)
        .arg("--noEmit")
        .arg("--pretty")
        .arg("false")
        .arg("-p")
        .arg(dir.join("tsconfig.json")))
}

#[tokio::test]
async fn the_checked_in_types_are_generated_from_the_served_schemas() {
    let dir = tempdir();
    let (events, openapi) = served_schemas(dir.path()).await;
    let out = dir.path().join("types");
    generate(&events, &openapi, &out);
    let update = std::env::var_os("BOSUN_UPDATE_SCHEMAS").is_some();
    for file in FILES {
        let fresh = std::fs::read_to_string(out.join(file)).expect("generated file");
        let copy = pwa().join("types").join(file);
        if update {
            std::fs::write(&copy, &fresh).expect("write the checked-in types");
        }
        let kept = std::fs::read_to_string(&copy).unwrap_or_default();
        assert!(
            kept == fresh,
            "{} is not what gen-types.mjs makes of the daemon's schemas: the wire types changed. Run \
             BOSUN_UPDATE_SCHEMAS=1 tests/run --test pwa_types to regenerate it, then make the app type-check.",
            copy.display()
        );
    }
}

#[test]
fn the_app_type_checks_against_the_generated_types() {
    let output = tsc(&pwa());
    assert!(
        output.status.success(),
        "tsc --noEmit found type errors in src/front/pwa ({}):\n{}",
        output.status,
        text(&output)
    );
}

/// A copy of the app with types generated from `events` (and the served
/// OpenAPI document): whether tsc accepts it, and what it says.
fn tsc_with_schema(dir: &Path, openapi: &Path, events: &Value) -> (bool, String) {
    let app = dir.join("app");
    std::fs::create_dir_all(&app).expect("mkdir");
    for entry in std::fs::read_dir(pwa()).expect("src/front/pwa") {
        let path = entry.expect("entry").path();
        let name = path.file_name().expect("name").to_string_lossy().into_owned();
        if name.ends_with(".js") || name == "tsconfig.json" {
            std::fs::copy(&path, app.join(&name)).expect("copy");
        }
    }
    // The vendored xterm.js and its declarations, which terminal.js imports.
    std::fs::create_dir_all(app.join("vendor")).expect("mkdir vendor");
    for entry in std::fs::read_dir(pwa().join("vendor")).expect("src/front/pwa/vendor") {
        let path = entry.expect("entry").path();
        std::fs::copy(&path, app.join("vendor").join(path.file_name().expect("name"))).expect("copy");
    }
    let schema = dir.join("events.schema.json");
    std::fs::write(&schema, serde_json::to_string_pretty(events).expect("JSON")).expect("write");
    generate(&schema, openapi, &app.join("types"));
    let output = tsc(&app);
    (output.status.success(), text(&output))
}

fn rejected(dir: &Path, openapi: &Path, events: &Value) -> String {
    let (ok, said) = tsc_with_schema(dir, openapi, events);
    assert!(!ok, "tsc accepted the app against a changed schema:\n{said}");
    said
}

/// The check bites: a new event type without a renderer, and a renamed field
/// the app reads, each fail the type-check.
#[tokio::test]
async fn a_schema_change_the_app_does_not_follow_fails_the_type_check() {
    let dir = tempdir();
    let (events, openapi) = served_schemas(dir.path()).await;
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(&events).expect("read")).expect("JSON");

    // The copy type-checks as served, so what fails below is the change.
    let (ok, said) = tsc_with_schema(&dir.path().join("same"), &openapi, &schema);
    assert!(ok, "the app does not type-check against the served schemas:\n{said}");

    let mut added = schema.clone();
    added["oneOf"].as_array_mut().expect("oneOf").push(json!({
        "type": "object",
        "properties": { "type": { "type": "string", "const": "test:added" }, "data": { "$ref": "#/$defs/TurnSteer" } },
        "required": ["type", "data"]
    }));
    let said = rejected(&dir.path().join("added"), &openapi, &added);
    assert!(
        said.contains("test:added") && said.contains("transcript.js"),
        "tsc failed, but not for the renderer missing in transcript.js:\n{said}"
    );

    let mut renamed = schema.clone();
    let started = &mut renamed["$defs"]["TurnStarted"];
    let text_field =
        started["properties"].as_object_mut().expect("properties").remove("text").expect("TurnStarted.text");
    started["properties"]["prompt"] = text_field;
    for name in started["required"].as_array_mut().expect("required") {
        if name == "text" {
            *name = json!("prompt");
        }
    }
    let said = rejected(&dir.path().join("renamed"), &openapi, &renamed);
    assert!(
        said.contains("Property 'text' does not exist on type 'TurnStarted'"),
        "tsc failed, but not for the renamed field:\n{said}"
    );
}

/// The xterm.js the binary serves (src/front/pwa/vendor/) is the npm release
/// tests/browser/package.json pins, byte for byte: `npm ci` checks
/// node_modules against the lock's integrity hashes, and this checks the
/// vendored files against node_modules. After a version bump in
/// package.json: `npm install` there, copy the files named here, rerun.
#[test]
fn the_vendored_xterm_is_the_pinned_npm_release() {
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(browser().join("package.json")).expect("package.json"))
            .expect("JSON");
    // (vendored file, package, file in the package)
    let files = [
        ("xterm.mjs", "@xterm/xterm", "lib/xterm.mjs"),
        ("xterm.css", "@xterm/xterm", "css/xterm.css"),
        ("xterm.d.ts", "@xterm/xterm", "typings/xterm.d.ts"),
        ("xterm.LICENSE", "@xterm/xterm", "LICENSE"),
        ("addon-fit.mjs", "@xterm/addon-fit", "lib/addon-fit.mjs"),
        ("addon-fit.LICENSE", "@xterm/addon-fit", "LICENSE"),
    ];
    for (package, want) in [("@xterm/xterm", "6.0.0"), ("@xterm/addon-fit", "0.11.0")] {
        assert_eq!(manifest["dependencies"][package], want, "tests/browser/package.json pins {package} exactly");
        let installed = browser().join("node_modules").join(package).join("package.json");
        let text = std::fs::read_to_string(&installed)
            .unwrap_or_else(|e| panic!("{}: {e}: run tests/run (npm ci in tests/browser)", installed.display()));
        let installed: Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(installed["version"], want, "{package} in node_modules is not the pinned version: run tests/run");
    }
    for (name, package, file) in files {
        let vendored = std::fs::read(pwa().join("vendor").join(name)).expect("vendored file");
        let published = std::fs::read(browser().join("node_modules").join(package).join(file)).expect("npm file");
        assert!(vendored == published, "src/front/pwa/vendor/{name} differs from {package}'s {file}");
    }
    // Nothing else is vendored but these and their type declarations.
    for entry in std::fs::read_dir(pwa().join("vendor")).expect("vendor") {
        let name = entry.expect("entry").file_name().to_string_lossy().into_owned();
        assert!(
            files.iter().any(|(f, _, _)| *f == name) || name.ends_with(".d.mts"),
            "src/front/pwa/vendor/{name} is not from a pinned package"
        );
    }
}
