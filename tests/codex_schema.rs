//! Checks Bosun's codex app-server types (`bosun_codex::protocol`)
//! against the JSON Schema the installed codex generates
//! (`codex app-server generate-json-schema`): every request we send validates
//! against its schema, every method we act on exists, and messages built from
//! the schema deserialize into our types.
//!
//! The codex binary is `$BOSUN_CODEX_BIN`, else the one `tests/run` installs
//! under tests/agents/node_modules. Missing, the test fails: run `tests/run`.

use std::path::{Path, PathBuf};

use bosun_codex::protocol::{
    method, ApprovalDecision, ApprovalResponse, ApprovalsReviewer, AskForApproval, BackgroundTerminalsCleanParams,
    ClientInfo, InitializeCapabilities, InitializeParams, InitializeResponse, ItemStatus, PatchChangeKind,
    PlanStepStatus, ServerNotification, ServerRequest, ThreadItem, ThreadResponse, ThreadResumeParams,
    ThreadStartParams, TurnInterruptParams, TurnStartParams, TurnStartResponse, TurnStatus, TurnSteerParams,
    TurnSteerResponse, UserInput,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Map, Value};

fn codex_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("BOSUN_CODEX_BIN") {
        return PathBuf::from(bin);
    }
    let (npm_arch, triple_arch) = match std::env::consts::ARCH {
        "aarch64" => ("arm64", "aarch64"),
        _ => ("x64", "x86_64"),
    };
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/agents/node_modules/@openai")
        .join(format!("codex-linux-{npm_arch}"))
        .join(format!("vendor/{triple_arch}-unknown-linux-musl/bin/codex"))
}

/// The schema files of the installed codex, generated once per test binary.
struct Schemas {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl Schemas {
    /// The stable protocol, or with `experimental` its experimental methods
    /// and fields too.
    fn generate(experimental: bool) -> Schemas {
        let bin = codex_bin();
        assert!(
            bin.is_file(),
            "the codex binary is missing at {}: run tests/run (it installs the test agents) or set BOSUN_CODEX_BIN",
            bin.display()
        );
        let dir = tempfile::tempdir().unwrap();
        let mut command = std::process::Command::new(&bin);
        command.args(["app-server", "generate-json-schema"]);
        if experimental {
            command.arg("--experimental");
        }
        let output = command
            .arg("--out")
            .arg(dir.path())
            .env("CODEX_HOME", dir.path())
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", bin.display()));
        assert!(output.status.success(), "generate-json-schema failed: {}", String::from_utf8_lossy(&output.stderr));
        Schemas { root: dir.path().to_path_buf(), _dir: dir }
    }

    fn load(&self, name: &str) -> Value {
        let path = self.root.join(name);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        serde_json::from_str(&text).unwrap()
    }
}

// ---------------------------------------------------------------------------
// A small JSON Schema (draft 7) validator: the keywords codex's schema uses.
// ---------------------------------------------------------------------------

fn resolve<'a>(schema: &'a Value, root: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let name =
                reference.strip_prefix("#/definitions/").unwrap_or_else(|| panic!("unsupported $ref {reference}"));
            let target = root["definitions"].get(name).unwrap_or_else(|| panic!("no definition {name}"));
            resolve(target, root)
        }
        None => schema,
    }
}

fn type_matches(value: &Value, name: &str) -> bool {
    match name {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        other => panic!("unknown type {other}"),
    }
}

/// Everything wrong with `value` under `schema`; empty when it is valid.
fn validate(value: &Value, schema: &Value, root: &Value, at: &str) -> Vec<String> {
    if let Value::Bool(allowed) = schema {
        return if *allowed { Vec::new() } else { vec![format!("{at}: nothing is allowed here")] };
    }
    let schema = resolve(schema, root);
    let mut errors = Vec::new();
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        for part in all {
            errors.extend(validate(value, part, root, at));
        }
    }
    if let Some(any) = schema.get("anyOf").and_then(Value::as_array) {
        if !any.iter().any(|part| validate(value, part, root, at).is_empty()) {
            errors.push(format!("{at}: matches none of anyOf: {value}"));
        }
    }
    if let Some(one) = schema.get("oneOf").and_then(Value::as_array) {
        let matching = one.iter().filter(|part| validate(value, part, root, at).is_empty()).count();
        if matching != 1 {
            errors.push(format!("{at}: matches {matching} of oneOf (exactly one needed): {value}"));
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
        if !allowed.contains(value) {
            errors.push(format!("{at}: {value} is not one of {allowed:?}"));
        }
    }
    if let Some(constant) = schema.get("const") {
        if constant != value {
            errors.push(format!("{at}: {value} is not {constant}"));
        }
    }
    match schema.get("type") {
        Some(Value::String(name)) if !type_matches(value, name) => {
            errors.push(format!("{at}: {value} is not a {name}"))
        }
        Some(Value::Array(names)) if !names.iter().any(|n| type_matches(value, n.as_str().unwrap_or(""))) => {
            errors.push(format!("{at}: {value} is none of {names:?}"))
        }
        _ => {}
    }
    if let Value::Object(object) = value {
        for required in schema.get("required").and_then(Value::as_array).into_iter().flatten() {
            let name = required.as_str().unwrap_or_default();
            if !object.contains_key(name) {
                errors.push(format!("{at}: missing required `{name}`"));
            }
        }
        let properties = schema.get("properties").and_then(Value::as_object);
        for (name, field) in object {
            let path = format!("{at}.{name}");
            match properties.and_then(|p| p.get(name)) {
                Some(field_schema) => errors.extend(validate(field, field_schema, root, &path)),
                None => match schema.get("additionalProperties") {
                    Some(Value::Bool(false)) => errors.push(format!("{at}: `{name}` is not allowed")),
                    Some(extra) => errors.extend(validate(field, extra, root, &path)),
                    None => {}
                },
            }
        }
    }
    if let (Value::Array(items), Some(item_schema)) = (value, schema.get("items")) {
        for (i, item) in items.iter().enumerate() {
            errors.extend(validate(item, item_schema, root, &format!("{at}[{i}]")));
        }
    }
    errors
}

fn assert_valid(value: &Value, schema: &Value, what: &str) {
    let errors = validate(value, schema, schema, "$");
    assert!(errors.is_empty(), "{what} does not match the codex schema:\n{}\nvalue: {value}", errors.join("\n"));
}

// ---------------------------------------------------------------------------
// Sample messages built from the schema
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq)]
enum Fill {
    /// Only what the schema requires: checks we require nothing more.
    Required,
    /// Every property, non-null: checks the types of the optional ones.
    Everything,
}

const MAX_DEPTH: usize = 12;

fn sample(schema: &Value, root: &Value, fill: Fill, depth: usize) -> Value {
    if schema.is_boolean() {
        return json!({});
    }
    let schema = resolve(schema, root);
    if let Some(constant) = schema.get("const") {
        return constant.clone();
    }
    if let Some(first) = schema.get("enum").and_then(Value::as_array).and_then(|values| values.first()) {
        return first.clone();
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(options) = schema.get(key).and_then(Value::as_array) {
            let option =
                options.iter().find(|o| resolve(o, root).get("type") != Some(&json!("null"))).unwrap_or(&options[0]);
            let mut value = sample(option, root, fill, depth);
            // Keywords beside the oneOf (a shared `type` property) apply too.
            if let (Value::Object(shared), Value::Object(object)) =
                (sample_object(schema, root, fill, depth), &mut value)
            {
                for (k, v) in shared {
                    object.entry(k).or_insert(v);
                }
            }
            return value;
        }
    }
    if let Some(parts) = schema.get("allOf").and_then(Value::as_array) {
        let mut merged = Value::Null;
        for part in parts {
            match (&mut merged, sample(part, root, fill, depth)) {
                (Value::Object(into), Value::Object(from)) => into.extend(from),
                (slot, value) => *slot = value,
            }
        }
        return merged;
    }
    let type_name = match schema.get("type") {
        Some(Value::String(name)) => name.clone(),
        Some(Value::Array(names)) => {
            names.iter().filter_map(Value::as_str).find(|n| *n != "null").unwrap_or("null").to_string()
        }
        _ if schema.get("properties").is_some() => "object".to_string(),
        _ => return json!({}),
    };
    match type_name.as_str() {
        "null" => Value::Null,
        "boolean" => json!(false),
        "string" => json!("x"),
        "integer" => json!(1),
        "number" => json!(1.5),
        "array" => match (fill, schema.get("items")) {
            (Fill::Everything, Some(items)) if depth < MAX_DEPTH => json!([sample(items, root, fill, depth + 1)]),
            _ => json!([]),
        },
        "object" => sample_object(schema, root, fill, depth),
        other => panic!("unknown type {other}"),
    }
}

fn sample_object(schema: &Value, root: &Value, fill: Fill, depth: usize) -> Value {
    let mut object = Map::new();
    let required: Vec<&str> =
        schema.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
    for (name, field) in schema.get("properties").and_then(Value::as_object).into_iter().flatten() {
        let wanted = required.contains(&name.as_str()) || (fill == Fill::Everything && depth < MAX_DEPTH);
        if wanted {
            object.insert(name.clone(), sample(field, root, fill, depth + 1));
        }
    }
    Value::Object(object)
}

/// The oneOf variant of a `ServerNotification`/`ServerRequest`/`ClientRequest`
/// schema for `method_name`, if the schema has it.
fn variant<'a>(schema: &'a Value, method_name: &str) -> Option<&'a Value> {
    schema["oneOf"].as_array()?.iter().find(|v| v["properties"]["method"]["enum"][0] == method_name)
}

fn params_samples(schema: &Value, method_name: &str) -> Vec<(Fill, Value)> {
    let variant = variant(schema, method_name).unwrap_or_else(|| panic!("codex has no `{method_name}` any more"));
    let params = &variant["properties"]["params"];
    [Fill::Required, Fill::Everything].into_iter().map(|fill| (fill, sample(params, schema, fill, 0))).collect()
}

fn read<T: DeserializeOwned>(value: &Value, what: &str) -> T {
    serde_json::from_value(value.clone()).unwrap_or_else(|e| panic!("{what} does not deserialize: {e}\n{value}"))
}

fn to_json<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap()
}

// ---------------------------------------------------------------------------

#[test]
fn our_protocol_types_match_the_installed_codex_schema() {
    let schemas = Schemas::generate(false);
    the_checker_catches_mistakes(&schemas);
    requests_we_send_validate(&schemas);
    experimental_requests_we_send_validate(&Schemas::generate(true));
    methods_we_use_exist(&schemas);
    notifications_we_read_deserialize(&schemas);
    requests_we_answer_deserialize(&schemas);
    replies_we_read_deserialize(&schemas);
    enums_we_read_are_all_known(&schemas);
}

/// A checker that accepts everything would make the rest worthless.
fn the_checker_catches_mistakes(schemas: &Schemas) {
    let requests = schemas.load("ClientRequest.json");
    let wrong = [
        json!({"id": 1, "method": "turn/steer", "params": {"threadId": "t", "turnId": "u", "input": []}}),
        json!({"id": 1, "method": "turn/start", "params": {"threadId": "t", "input": [{"text": "no type"}]}}),
        json!({"id": 1, "method": "thread/start", "params": {"approvalPolicy": "sometimes"}}),
        json!({"id": 1, "method": "turn/explode", "params": {}}),
    ];
    for value in wrong {
        assert!(!validate(&value, &requests, &requests, "$").is_empty(), "accepted {value}");
    }
    let reply = schemas.load("CommandExecutionRequestApprovalResponse.json");
    assert!(!validate(&json!({"decision": "approve"}), &reply, &reply, "$").is_empty());
    assert!(!validate(&json!({"decision": {"bogus": 1}}), &reply, &reply, "$").is_empty());
    let notifications = schemas.load("ServerNotification.json");
    let missing_delta =
        json!({"method": "item/agentMessage/delta", "params": {"threadId": "t", "turnId": "u", "itemId": "i"}});
    assert!(!validate(&missing_delta, &notifications, &notifications, "$").is_empty());
}

fn requests_we_send_validate(schemas: &Schemas) {
    let client_requests = schemas.load("ClientRequest.json");
    let text = || vec![UserInput::text("hello")];
    let requests: Vec<(&str, Value)> = vec![
        (
            method::INITIALIZE,
            to_json(&InitializeParams {
                client_info: ClientInfo { name: "bosun".into(), title: Some("Bosun".into()), version: "0.1.0".into() },
                capabilities: Some(InitializeCapabilities { experimental_api: true }),
            }),
        ),
        (
            method::THREAD_START,
            to_json(&ThreadStartParams {
                cwd: Some("/work".into()),
                approval_policy: Some(AskForApproval::Untrusted),
                approvals_reviewer: Some(ApprovalsReviewer::User),
            }),
        ),
        (
            method::THREAD_RESUME,
            to_json(&ThreadResumeParams {
                thread_id: "t".into(),
                cwd: Some("/work".into()),
                approval_policy: Some(AskForApproval::Untrusted),
                approvals_reviewer: Some(ApprovalsReviewer::User),
                exclude_turns: Some(true),
            }),
        ),
        (method::TURN_START, to_json(&TurnStartParams { thread_id: "t".into(), input: text() })),
        (
            method::TURN_STEER,
            to_json(&TurnSteerParams { thread_id: "t".into(), expected_turn_id: "u".into(), input: text() }),
        ),
        (method::TURN_INTERRUPT, to_json(&TurnInterruptParams { thread_id: "t".into(), turn_id: "u".into() })),
    ];
    for (i, (method_name, params)) in requests.into_iter().enumerate() {
        let envelope = json!({"id": i + 1, "method": method_name, "params": params});
        assert!(variant(&client_requests, method_name).is_some(), "codex has no `{method_name}` request");
        assert_valid(&envelope, &client_requests, &format!("our `{method_name}` request"));
    }
    // Each file on its own too, as codex documents them.
    let alone = [
        (
            "v2/ThreadStartParams.json",
            to_json(&ThreadStartParams { cwd: None, approval_policy: None, approvals_reviewer: None }),
        ),
        ("v2/TurnStartParams.json", to_json(&TurnStartParams { thread_id: "t".into(), input: text() })),
    ];
    for (file, params) in alone {
        assert_valid(&params, &schemas.load(file), file);
    }
    assert_valid(&json!({"method": method::INITIALIZED}), &schemas.load("ClientNotification.json"), "`initialized`");

    // Every decision, for both approvals.
    for file in ["CommandExecutionRequestApprovalResponse.json", "FileChangeRequestApprovalResponse.json"] {
        let schema = schemas.load(file);
        for decision in bosun_proto::Decision::ALL {
            let reply = to_json(&ApprovalResponse { decision: ApprovalDecision::from(*decision) });
            assert_valid(&reply, &schema, &format!("{file} for {decision}"));
        }
    }
    // The error we answer unknown requests with.
    let error = json!({"id": 3, "error": {"code": -32601, "message": "bosun does not handle `x`"}});
    assert_valid(&error, &schemas.load("JSONRPCError.json"), "our JSON-RPC error");
}

/// The one experimental method we use (stopping an interrupted turn's
/// commands), which the stable schema does not list.
fn experimental_requests_we_send_validate(schemas: &Schemas) {
    let client_requests = schemas.load("ClientRequest.json");
    let params = to_json(&BackgroundTerminalsCleanParams { thread_id: "t".into() });
    let envelope = json!({"id": 9, "method": method::BACKGROUND_TERMINALS_CLEAN, "params": params});
    assert!(
        variant(&client_requests, method::BACKGROUND_TERMINALS_CLEAN).is_some(),
        "codex has no `{}` request any more",
        method::BACKGROUND_TERMINALS_CLEAN
    );
    assert_valid(&envelope, &client_requests, "our background terminals clean request");
}

fn methods_we_use_exist(schemas: &Schemas) {
    let notifications = schemas.load("ServerNotification.json");
    for name in notification_methods() {
        assert!(variant(&notifications, name).is_some(), "codex no longer sends `{name}`");
    }
    let requests = schemas.load("ServerRequest.json");
    for name in [method::COMMAND_APPROVAL, method::FILE_CHANGE_APPROVAL] {
        assert!(variant(&requests, name).is_some(), "codex no longer sends `{name}`");
    }
}

fn notification_methods() -> [&'static str; 16] {
    [
        method::ERROR,
        method::WARNING,
        method::CONFIG_WARNING,
        method::DEPRECATION_NOTICE,
        method::TURN_STARTED,
        method::TURN_COMPLETED,
        method::TURN_PLAN_UPDATED,
        method::ITEM_STARTED,
        method::ITEM_COMPLETED,
        method::AGENT_MESSAGE_DELTA,
        method::REASONING_SUMMARY_TEXT_DELTA,
        method::REASONING_SUMMARY_PART_ADDED,
        method::REASONING_TEXT_DELTA,
        method::COMMAND_OUTPUT_DELTA,
        method::TOKEN_USAGE_UPDATED,
        method::SERVER_REQUEST_RESOLVED,
    ]
}

fn notifications_we_read_deserialize(schemas: &Schemas) {
    let schema = schemas.load("ServerNotification.json");
    for name in notification_methods() {
        for (fill, params) in params_samples(&schema, name) {
            let envelope = json!({"method": name, "params": params});
            assert_valid(&envelope, &schema, &format!("the sample `{name}`"));
            match ServerNotification::parse(name, params.clone()) {
                Ok(ServerNotification::Other(_)) => panic!("`{name}` is not recognised"),
                Ok(_) => {}
                Err(e) => panic!(
                    "a `{name}` built from the schema ({}) does not deserialize: {e}\n{params}",
                    if fill == Fill::Required { "required fields only" } else { "all fields" }
                ),
            }
        }
    }

    // Every kind of thread item, inside item/started.
    let variants = resolve(&schema["definitions"]["ThreadItem"], &schema)["oneOf"].as_array().unwrap().clone();
    let modelled = [
        "agentMessage",
        "reasoning",
        "commandExecution",
        "fileChange",
        "mcpToolCall",
        "dynamicToolCall",
        "collabAgentToolCall",
        "webSearch",
        "imageView",
        "imageGeneration",
    ];
    let mut seen = Vec::new();
    for item_schema in &variants {
        let kind = item_schema["properties"]["type"]["enum"][0].as_str().unwrap().to_string();
        for fill in [Fill::Required, Fill::Everything] {
            let item = sample(item_schema, &schema, fill, 1);
            let params = json!({"threadId": "t", "turnId": "u", "startedAtMs": 1, "item": item});
            assert_valid(
                &json!({"method": method::ITEM_STARTED, "params": params}),
                &schema,
                &format!("a `{kind}` item"),
            );
            let parsed: ThreadItem = read(&params["item"], &format!("a `{kind}` item"));
            let known = !matches!(parsed, ThreadItem::Other);
            assert_eq!(known, modelled.contains(&kind.as_str()), "`{kind}` parsed as {parsed:?}");
        }
        seen.push(kind);
    }
    for kind in modelled {
        assert!(seen.iter().any(|s| s == kind), "codex has no `{kind}` item any more");
    }
}

fn requests_we_answer_deserialize(schemas: &Schemas) {
    let schema = schemas.load("ServerRequest.json");
    for name in [method::COMMAND_APPROVAL, method::FILE_CHANGE_APPROVAL] {
        for (_, params) in params_samples(&schema, name) {
            let envelope = json!({"id": 0, "method": name, "params": params});
            assert_valid(&envelope, &schema, &format!("the sample `{name}`"));
            let parsed = ServerRequest::parse(name, params.clone())
                .unwrap_or_else(|e| panic!("`{name}` does not deserialize: {e}\n{params}"));
            let expected = if name == method::COMMAND_APPROVAL {
                matches!(parsed, ServerRequest::CommandApproval(_))
            } else {
                matches!(parsed, ServerRequest::FileChangeApproval(_))
            };
            assert!(expected, "`{name}` parsed as {parsed:?}");
        }
    }
}

fn replies_we_read_deserialize(schemas: &Schemas) {
    fn check<T: DeserializeOwned>(schemas: &Schemas, file: &str) {
        let schema = schemas.load(file);
        for fill in [Fill::Required, Fill::Everything] {
            let reply = sample(&schema, &schema, fill, 0);
            assert_valid(&reply, &schema, &format!("the sample {file}"));
            read::<T>(&reply, file);
        }
    }
    check::<InitializeResponse>(schemas, "v1/InitializeResponse.json");
    check::<ThreadResponse>(schemas, "v2/ThreadStartResponse.json");
    check::<ThreadResponse>(schemas, "v2/ThreadResumeResponse.json");
    check::<TurnStartResponse>(schemas, "v2/TurnStartResponse.json");
    check::<TurnSteerResponse>(schemas, "v2/TurnSteerResponse.json");
    let reply: InitializeResponse = read(
        &json!({"userAgent": "bosun/0.169.0 (x)", "codexHome": "/h", "platformFamily": "unix", "platformOs": "linux"}),
        "initialize",
    );
    assert_eq!(reply.version().as_deref(), Some("0.169.0"));
}

/// Enum values we would otherwise read as `Unknown`.
fn enums_we_read_are_all_known(schemas: &Schemas) {
    let schema = schemas.load("ServerNotification.json");
    let values = |name: &str| -> Vec<Value> {
        let definition = resolve(&schema["definitions"][name], &schema);
        definition["enum"].as_array().unwrap_or_else(|| panic!("{name} is not an enum")).clone()
    };
    for value in values("TurnStatus") {
        assert_ne!(read::<TurnStatus>(&value, "TurnStatus"), TurnStatus::Unknown, "{value}");
    }
    for name in [
        "CommandExecutionStatus",
        "PatchApplyStatus",
        "McpToolCallStatus",
        "DynamicToolCallStatus",
        "CollabAgentToolCallStatus",
    ] {
        for value in values(name) {
            assert_ne!(read::<ItemStatus>(&value, name), ItemStatus::Unknown, "{name} {value}");
        }
    }
    for value in values("TurnPlanStepStatus") {
        assert_ne!(read::<PlanStepStatus>(&value, "TurnPlanStepStatus"), PlanStepStatus::Unknown, "{value}");
    }
    let kinds = resolve(&schema["definitions"]["PatchChangeKind"], &schema)["oneOf"].as_array().unwrap().clone();
    for kind in kinds {
        let value = sample(&kind, &schema, Fill::Required, 0);
        assert_ne!(read::<PatchChangeKind>(&value, "PatchChangeKind"), PatchChangeKind::Other, "{value}");
    }
    // The decisions we send are the ones codex lists.
    let decisions = schemas.load("CommandExecutionRequestApprovalResponse.json");
    let listed: Vec<Value> = resolve(&decisions["definitions"]["CommandExecutionApprovalDecision"], &decisions)
        ["oneOf"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["enum"].as_array().map(|e| e[0].clone()))
        .collect();
    assert_eq!(listed, [json!("accept"), json!("acceptForSession"), json!("decline"), json!("cancel")]);
}
