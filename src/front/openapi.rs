//! The published contract of the HTTP API: `GET /api/v1/openapi.json`, an
//! OpenAPI 3.1 document whose schemas are derived from the wire types in
//! `bosun-proto` (through schemars), and `GET /api/v1/schema/events.json`.
//!
//! The list of endpoints below is the dispatcher's (`api.rs`), kept beside
//! it: `tests/contract.rs` checks that every path listed here answers (no
//! 404) and that the checked-in copies in `docs/api/` match what this builds.

use bosun_proto::*;
use schemars::{generate::SchemaSettings, JsonSchema, SchemaGenerator};
use serde_json::{json, Map, Value};

/// One operation of the document.
struct Op {
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    /// The query string's parameters, from its type.
    query: Option<Value>,
    /// The JSON request body's schema.
    body: Option<Value>,
    /// The success status and its body's schema (`None`: no JSON body).
    ok: (u16, Option<Value>),
    /// Another success status with the same body (202 for an action held
    /// for a person's approval).
    also: Option<u16>,
    /// The request body is a file (`application/octet-stream`), not JSON.
    binary_body: bool,
}

/// Builds the operations with one schema generator, so shared types are
/// defined once under `components/schemas`.
struct Builder {
    generator: SchemaGenerator,
    ops: Vec<Op>,
}

impl Builder {
    fn new() -> Builder {
        let settings = SchemaSettings::draft2020_12().with(|s| {
            s.definitions_path = "/components/schemas".into();
            s.meta_schema = None;
        });
        Builder { generator: settings.into_generator(), ops: Vec::new() }
    }

    fn schema<T: JsonSchema>(&mut self) -> Value {
        self.generator.subschema_for::<T>().to_value()
    }

    /// The query parameters of `T`, one per property.
    fn query<T: JsonSchema>(&mut self) -> Value {
        let schema = self.generator.root_schema_for::<T>().to_value();
        let required: Vec<&str> =
            schema["required"].as_array().map(|r| r.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
        let params: Vec<Value> = schema["properties"]
            .as_object()
            .map(|props| {
                props
                    .iter()
                    .map(|(name, prop)| {
                        let mut param = json!({
                            "name": name,
                            "in": "query",
                            "required": required.contains(&name.as_str()),
                            "schema": prop,
                        });
                        if let Some(description) = prop.get("description") {
                            param["description"] = description.clone();
                        }
                        param
                    })
                    .collect()
            })
            .unwrap_or_default();
        Value::Array(params)
    }

    fn op(&mut self, op: Op) {
        self.ops.push(op);
    }

    fn document(mut self) -> Value {
        let error = self.schema::<ErrorBody>();
        let mut paths = Map::new();
        for op in self.ops {
            let mut operation = json!({"summary": op.summary, "operationId": operation_id(op.method, op.path)});
            let mut parameters: Vec<Value> = path_params(op.path);
            if let Some(Value::Array(query)) = op.query {
                parameters.extend(query);
            }
            if !parameters.is_empty() {
                operation["parameters"] = Value::Array(parameters);
            }
            if let Some(body) = op.body {
                operation["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": body}}});
            } else if op.binary_body {
                operation["requestBody"] = json!({
                    "required": true,
                    "content": {"application/octet-stream": {"schema": {"type": "string", "contentMediaType": "application/octet-stream"}}}
                });
            }
            let (status, schema) = op.ok;
            let ok = match schema {
                Some(schema) => {
                    json!({"description": "success", "content": {"application/json": {"schema": schema}}})
                }
                None => json!({"description": "success"}),
            };
            let also = op.also.map(|s| (s.to_string(), ok.clone()));
            operation["responses"] = json!({
                status.to_string(): ok,
                "default": {
                    "description": "an error: the code says which (PROTOCOL.md, Errors); nothing was changed",
                    "content": {"application/json": {"schema": error}}
                }
            });
            if let Some((status, ok)) = also {
                operation["responses"][status] = ok;
            }
            let entry = paths.entry(op.path.to_string()).or_insert_with(|| json!({}));
            entry[op.method] = operation;
        }
        let components = self.generator.take_definitions(true);
        json!({
            "openapi": "3.1.0",
            "info": {
                "title": "Bosun",
                "version": env!("CARGO_PKG_VERSION"),
                "description": "The HTTP API of the Bosun daemon. Events are described by /api/v1/schema/events.json; \
                                the WebSocket protocol is in docs/PROTOCOL.md. State-changing requests must carry \
                                `content-type: application/json` or an `X-Bosun-Client` header."
            },
            "paths": paths,
            "components": {
                "schemas": components,
                "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}
            },
            "security": [{}, {"bearer": []}]
        })
    }
}

/// `{id}` and `{turn_id}` in a path, as string parameters.
fn path_params(path: &str) -> Vec<Value> {
    path.split('/')
        .filter_map(|segment| segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
        .collect()
}

/// `get_api_v1_sessions_id`.
fn operation_id(method: &str, path: &str) -> String {
    let words: Vec<&str> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_start_matches('{').trim_end_matches('}'))
        .map(|s| s.trim_end_matches(".json"))
        .collect();
    format!("{method}_{}", words.join("_")).replace(['-', '.'], "_")
}

/// The whole document.
pub fn document() -> Value {
    let mut b = Builder::new();
    macro_rules! op {
        ($method:literal, $path:literal, $summary:literal, query: $q:ty, body: $body:ty, $status:literal => $resp:ty) => {{
            let query = b.query::<$q>();
            let body = b.schema::<$body>();
            let resp = b.schema::<$resp>();
            b.op(Op {
                method: $method,
                path: $path,
                summary: $summary,
                query: Some(query),
                body: Some(body),
                ok: ($status, Some(resp)),
                also: None,
                binary_body: false,
            });
        }};
        ($method:literal, $path:literal, $summary:literal, query: $q:ty, $status:literal => $resp:ty) => {{
            let query = b.query::<$q>();
            let resp = b.schema::<$resp>();
            b.op(Op {
                method: $method,
                path: $path,
                summary: $summary,
                query: Some(query),
                body: None,
                ok: ($status, Some(resp)),
                also: None,
                binary_body: false,
            });
        }};
        ($method:literal, $path:literal, $summary:literal, body: $body:ty, $status:literal => $resp:ty) => {{
            let body = b.schema::<$body>();
            let resp = b.schema::<$resp>();
            b.op(Op {
                method: $method,
                path: $path,
                summary: $summary,
                query: None,
                body: Some(body),
                ok: ($status, Some(resp)),
                also: None,
                binary_body: false,
            });
        }};
        ($method:literal, $path:literal, $summary:literal, $status:literal => $resp:ty) => {{
            let resp = b.schema::<$resp>();
            b.op(Op {
                method: $method,
                path: $path,
                summary: $summary,
                query: None,
                body: None,
                ok: ($status, Some(resp)),
                also: None,
                binary_body: false,
            });
        }};
    }
    op!("get", "/health", "The daemon's health: uptime, head seq, restarts by actor kind", 200 => Health);
    op!("get", "/api/v1/sessions", "The sessions, newest first", query: ListSessionsQuery, 200 => SessionList);
    op!("post", "/api/v1/sessions", "Create a session", body: CreateSessionRequest, 201 => SessionView);
    op!("get", "/api/v1/sessions/{id}", "A session with its turns and pending approvals", 200 => SessionDetail);
    op!("patch", "/api/v1/sessions/{id}", "Change a session's title, draft, policy or archived flag", body: PatchSessionRequest, 200 => SessionView);
    op!("delete", "/api/v1/sessions/{id}", "Delete a session (and its worktree unless kept)", query: DeleteSessionQuery, 200 => SessionDeleted);
    op!("get", "/api/v1/sessions/{id}/files", "List a directory of the session's worktree", query: PathQuery, 200 => FileListing);
    op!("get", "/api/v1/sessions/{id}/file", "Read a file of the worktree", query: FilePathQuery, 200 => FileContent);
    op!("put", "/api/v1/sessions/{id}/file", "Write a file of the worktree", query: FilePathQuery, body: PutFileRequest, 200 => FileWritten);
    op!("delete", "/api/v1/sessions/{id}/file", "Delete a file of the worktree", query: FilePathQuery, 200 => FileDeleted);
    op!("get", "/api/v1/sessions/{id}/search", "Search the worktree's text", query: SearchQuery, 200 => SearchResults);
    op!("get", "/api/v1/sessions/{id}/diff", "The worktree against its base", 200 => WorktreeDiff);
    op!("post", "/api/v1/sessions/{id}/commit", "Commit the worktree (and push)", body: CommitRequest, 200 => CommitResponse);
    op!("get", "/api/v1/sessions/{id}/audit", "The session's audit trail", query: AuditQuery, 200 => EventsPage);
    op!("get", "/api/v1/sessions/{id}/turns", "The session's turns, in order", 200 => TurnList);
    op!("post", "/api/v1/sessions/{id}/turns", "Start a turn", body: StartTurnRequest, 202 => StartTurnResponse);
    op!("post", "/api/v1/sessions/{id}/turns/{turn_id}/interrupt", "Interrupt the active turn", 202 => Interrupting);
    op!("post", "/api/v1/sessions/{id}/turns/{turn_id}/steer", "Steer the active turn", body: SteerRequest, 202 => Steered);
    op!("get", "/api/v1/approvals", "Approvals, oldest first", query: ApprovalsQuery, 200 => ApprovalList);
    op!("get", "/api/v1/approvals/{id}", "One approval", 200 => ApprovalView);
    op!("post", "/api/v1/approvals/{id}", "Decide on an approval", body: DecisionRequest, 200 => ApprovalView);
    op!("get", "/api/v1/workflows/runs", "Workflow runs, newest first", query: ListRunsQuery, 200 => RunList);
    op!("post", "/api/v1/workflows/runs", "Start a workflow run from a definition (TOML text or a file on the daemon's host)", body: StartRunRequest, 201 => RunView);
    op!("get", "/api/v1/workflows/runs/{id}", "One workflow run with its steps", 200 => RunView);
    op!("patch", "/api/v1/workflows/runs/{id}", "Change a run's budget (a run paused on its budget goes on if it now has room)", body: PatchRunRequest, 200 => RunView);
    op!("post", "/api/v1/workflows/runs/{id}/cancel", "Cancel a run: running turns are interrupted, open gates cancelled", 200 => RunView);
    op!("post", "/api/v1/workflows/runs/{id}/resume", "Resume a paused run", 200 => RunView);
    op!("post", "/api/v1/workflows/runs/{id}/steps/{step}/decide", "Retry, skip or abort an interrupted or failed step", body: StepDecisionRequest, 200 => RunView);
    op!("get", "/api/v1/tasks", "Tasks, oldest first", query: TasksQuery, 200 => TaskList);
    op!("post", "/api/v1/tasks", "Add a task to the docs/TASKS.md of a session's (or a run's) worktree", body: CreateTaskRequest, 201 => TaskView);
    op!("get", "/api/v1/tasks/{id}", "One task", 200 => TaskView);
    op!("patch", "/api/v1/tasks/{id}", "Change a task's title or status", body: PatchTaskRequest, 200 => TaskView);
    op!("delete", "/api/v1/tasks/{id}", "Remove a task (and its line)", 200 => TaskDeleted);
    op!("post", "/api/v1/tasks/{id}/run", "Start a workflow run for a task; the task follows the run", body: RunTaskRequest, 200 => TaskView);
    op!("get", "/api/v1/terminals", "The capability map: each kind of terminal, what it can do, whether it is there", 200 => TerminalList);
    op!("post", "/api/v1/terminals/discover", "Look for every terminal again", 200 => TerminalList);
    op!("post", "/api/v1/terminals/{terminal}/consent", "Grant consent to control a terminal that needs it", 200 => TerminalView);
    op!("delete", "/api/v1/terminals/{terminal}/consent", "Revoke that consent", 200 => TerminalView);
    op!("get", "/api/v1/terminals/bindings", "Terminal bindings, newest first", query: BindingsQuery, 200 => BindingList);
    {
        let body = b.schema::<SpawnTerminalRequest>();
        let resp = b.schema::<SpawnOutcome>();
        b.op(Op {
            method: "post",
            path: "/api/v1/terminals/bindings",
            summary: "Start something in a terminal and bind it (202: a command waits for approval)",
            query: None,
            body: Some(body),
            ok: (201, Some(resp)),
            also: Some(202),
            binary_body: false,
        });
    }
    op!("get", "/api/v1/terminals/bindings/{id}", "One binding", 200 => BindingView);
    op!("delete", "/api/v1/terminals/bindings/{id}", "Close a binding's window or pane (a pty: hang it up)", 200 => ActionDone);
    op!("get", "/api/v1/terminals/bindings/{id}/text", "What the terminal shows (a pty: its whole retained scrollback)", 200 => TerminalText);
    {
        let body = b.schema::<SendTextRequest>();
        let resp = b.schema::<ActionDone>();
        b.op(Op {
            method: "post",
            path: "/api/v1/terminals/bindings/{id}/send",
            summary: "Send text to a terminal (202: it waits for approval)",
            query: None,
            body: Some(body),
            ok: (200, Some(resp)),
            also: Some(202),
            binary_body: false,
        });
    }
    op!("post", "/api/v1/terminals/bindings/{id}/focus", "Focus a binding's window or pane", 200 => ActionDone);
    op!("post", "/api/v1/terminals/bindings/{id}/resize", "Resize a pty terminal", body: ResizeRequest, 200 => BindingView);
    op!("post", "/api/v1/terminals/bindings/{id}/cwd", "Set a binding's working directory", body: CwdRequest, 200 => ActionDone);
    op!("get", "/api/v1/terminals/clipboard", "Read the OS clipboard, or a binding's terminal's (when [termbridge] clipboard_read is on)", query: ClipboardQuery, 200 => ClipboardContent);
    op!("post", "/api/v1/terminals/clipboard", "Write the OS clipboard, or through a binding's terminal (OSC 52)", body: ClipboardWrite, 200 => ClipboardContent);
    op!("get", "/api/v1/events", "Stored events after a seq", query: EventsQuery, 200 => EventsPage);
    op!("get", "/api/v1/providers", "The providers and where each stands", 200 => ProviderList);
    op!("get", "/api/v1/secrets", "The secrets, their values masked (admin)", 200 => SecretList);
    op!("put", "/api/v1/secrets/{name}", "Set a secret (admin); answers with it masked", body: SetSecretRequest, 200 => SecretView);
    op!("delete", "/api/v1/secrets/{name}", "Remove a secret (admin)", 200 => SecretRemoved);
    op!("get", "/api/v1/doctor", "The daemon's checks of itself, in its own environment (bosun doctor)", 200 => DoctorReport);
    op!("post", "/api/v1/debug/crash", "Make an actor panic (only with --enable-fault-injection)", body: CrashRequest, 202 => CrashScheduled);
    b.op(Op {
        method: "get",
        path: "/api/v1/openapi.json",
        summary: "This document",
        query: None,
        body: None,
        ok: (200, Some(json!({"type": "object"}))),
        also: None,
        binary_body: false,
    });
    b.op(Op {
        method: "get",
        path: "/api/v1/schema/events.json",
        summary: "The JSON Schema of the event envelope and every event type",
        query: None,
        body: None,
        ok: (200, Some(json!({"type": "object"}))),
        also: None,
        binary_body: false,
    });
    let query = b.query::<InstallModuleQuery>();
    let switched = b.schema::<ModuleSwitched>();
    b.op(Op {
        method: "post",
        path: "/api/v1/modules/install",
        summary: "Verify a signed provider module (the body: the file `bosun module pack` wrote) and install it, \
                  registering its provider (admin)",
        query: Some(query),
        body: None,
        ok: (200, Some(switched)),
        also: None,
        binary_body: true,
    });
    op!("post", "/api/v1/modules/{name}/rollback", "Make a module's previous version current again (admin)", 200 => ModuleSwitched);
    op!("post", "/auth/token", "Exchange a pairing code for a device token", body: TokenRequest, 200 => TokenResponse);
    op!("post", "/auth/pairing", "A single-use pairing code (admin)", 201 => Pairing);
    op!("get", "/auth/devices", "The paired devices (admin)", 200 => DeviceList);
    op!("delete", "/auth/devices/{id}", "Revoke a device (admin)", 200 => DeviceRevoked);
    op!("get", "/auth/totp", "Whether pairing asks for a TOTP code (admin)", 200 => TotpStatus);
    op!("post", "/auth/totp", "Turn the TOTP second factor on or off (admin)", body: TotpRequest, 200 => TotpStatus);
    b.document()
}

/// The events' JSON Schema, as served.
pub fn events_schema() -> Value {
    bosun_proto::schema::events_schema().to_value()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_has_its_schemas_defined() {
        let doc = document();
        let text = doc.to_string();
        let schemas = doc["components"]["schemas"].as_object().expect("components");
        // Every $ref points at a defined component.
        for (i, _) in text.match_indices("#/components/schemas/") {
            let name: String = text[i + "#/components/schemas/".len()..].chars().take_while(|c| *c != '"').collect();
            assert!(schemas.contains_key(&name), "{name} is referenced but not defined");
        }
        assert_eq!(
            doc["paths"]["/api/v1/sessions"]["post"]["responses"]["201"]["content"]["application/json"]["schema"]
                ["$ref"],
            "#/components/schemas/SessionView"
        );
        let params = doc["paths"]["/api/v1/events"]["get"]["parameters"].as_array().expect("params");
        assert!(params.iter().any(|p| p["name"] == "since" && p["required"] == false), "{params:?}");
        let file = doc["paths"]["/api/v1/sessions/{id}/file"]["put"]["parameters"].as_array().expect("params");
        assert!(file.iter().any(|p| p["name"] == "id" && p["in"] == "path"));
        assert!(file.iter().any(|p| p["name"] == "path" && p["in"] == "query" && p["required"] == true));
    }

    #[test]
    fn operation_ids_are_unique() {
        let doc = document();
        let mut ids = std::collections::HashSet::new();
        for (_, item) in doc["paths"].as_object().expect("paths") {
            for (_, op) in item.as_object().expect("item") {
                assert!(ids.insert(op["operationId"].as_str().expect("id").to_string()), "{op}");
            }
        }
    }
}
