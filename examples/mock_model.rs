//! A scripted OpenAI Responses API server, so real agents (codex, codex-acp)
//! can be driven offline and deterministically in tests.
//!
//! ```text
//! cargo run -q --example mock_model -- [--port 0] [--codex-home DIR]
//! ```
//!
//! It prints its base URL (`http://127.0.0.1:PORT/v1`) as the first line of
//! stdout and serves until killed. With `--codex-home DIR` it first writes
//! `DIR/config.toml` and `DIR/mock-catalog.json` so that `CODEX_HOME=DIR codex
//! ...` talks to it with no network and no API key (sandbox
//! "danger-full-access"; the approval policy is left to the client).
//!
//! `POST /v1/responses` answers with server-sent events, chosen from the
//! request's `input`:
//! - the last input item is a tool output → `tool said: <first 200 chars>`;
//! - else the last user message decides: `RUN: <cmd>` → a shell tool call,
//!   `PATCH: <file> <text>` → an apply_patch call adding <file>, `SLOW` → 50
//!   text deltas 100 ms apart, anything else → `echo: <text>` in 3 deltas.
//!
//! Every response ends with `response.completed` and a fixed usage (100 in,
//! 7 out). `GET /v1/requests` returns every request body received so far.

use anyhow::{Context as _, Result};
use bytes::Bytes;
use clap::Parser;
use futures::channel::mpsc;
use futures::StreamExt;
use serde_json::{json, Value};
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use warp::http::StatusCode;
use warp::Filter;
use warp::Reply as _;

const MODEL: &str = "mock-model";
const INPUT_TOKENS: u64 = 100;
const OUTPUT_TOKENS: u64 = 7;
const TOOL_OUTPUT_ECHO_CHARS: usize = 200;
const SLOW_DELTAS: usize = 50;
const SLOW_DELTA_GAP: Duration = Duration::from_millis(100);

#[derive(Parser, Debug)]
#[command(about = "A scripted OpenAI Responses API server for offline agent tests")]
struct Args {
    /// Port on 127.0.0.1 (0 = any free port).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Write a codex config.toml and model catalog pointing at this server into DIR.
    #[arg(long)]
    codex_home: Option<PathBuf>,
}

#[derive(Default)]
struct State {
    requests: Mutex<Vec<Value>>,
    next_id: AtomicU64,
}

impl State {
    fn id(&self, prefix: &str) -> String {
        format!("{prefix}_{}", self.next_id.fetch_add(1, Ordering::Relaxed) + 1)
    }
}

/// What one response does.
#[derive(Debug, PartialEq)]
enum Script {
    Text { deltas: Vec<String>, gap: Duration },
    Shell(String),
    Patch { file: String, text: String },
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port)).await.context("binding 127.0.0.1")?;
    let base_url = format!("http://{}/v1", listener.local_addr()?);
    if let Some(dir) = &args.codex_home {
        write_codex_home(dir, &base_url)?;
    }
    println!("{base_url}");
    // Tests read the first line through a pipe: make sure it leaves now.
    std::io::Write::flush(&mut std::io::stdout())?;

    let state = Arc::new(State::default());
    let with_state = {
        let state = state.clone();
        warp::any().map(move || state.clone())
    };
    let responses = warp::post()
        .and(warp::path!("v1" / "responses"))
        .and(warp::body::bytes())
        .and(with_state.clone())
        .map(|body: Bytes, state: Arc<State>| respond(&state, &body));
    let requests = warp::get().and(warp::path!("v1" / "requests")).and(with_state).map(|state: Arc<State>| {
        let all = state.requests.lock().map(|r| r.clone()).unwrap_or_default();
        warp::reply::json(&all).into_response()
    });
    let fallback = warp::any().and(warp::path::full()).and(warp::method()).map(
        |path: warp::path::FullPath, method: warp::http::Method| {
            eprintln!("mock_model: unexpected {method} {}", path.as_str());
            warp::reply::with_status(format!("mock_model serves no {}\n", path.as_str()), StatusCode::NOT_FOUND)
                .into_response()
        },
    );
    warp::serve(responses.or(requests).unify().or(fallback).unify()).incoming(listener).run().await;
    Ok(())
}

fn respond(state: &State, body: &[u8]) -> warp::reply::Response {
    let request: Value = match serde_json::from_slice(body) {
        Ok(request) => request,
        Err(error) => {
            eprintln!("mock_model: request body is not JSON: {error}");
            return warp::reply::with_status(format!("bad JSON: {error}\n"), StatusCode::BAD_REQUEST).into_response();
        }
    };
    if let Ok(mut requests) = state.requests.lock() {
        requests.push(request.clone());
    }
    let script = script_for(&request);
    let events = render(state, &request, script);
    let (tx, rx) = mpsc::unbounded::<(Duration, Bytes)>();
    let (out_tx, out_rx) = mpsc::unbounded::<Result<Bytes, Infallible>>();
    for event in events {
        let _ = tx.unbounded_send(event);
    }
    drop(tx);
    // Pacing runs on its own task so a client that hangs up just ends it.
    tokio::spawn(async move {
        let mut rx = rx;
        while let Some((delay, bytes)) = rx.next().await {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            if out_tx.unbounded_send(Ok(bytes)).is_err() {
                return;
            }
        }
    });
    let mut response = warp::reply::stream(out_rx).into_response();
    let headers = response.headers_mut();
    headers.insert("content-type", warp::http::HeaderValue::from_static("text/event-stream"));
    headers.insert("cache-control", warp::http::HeaderValue::from_static("no-cache"));
    response
}

fn script_for(request: &Value) -> Script {
    let input = request.get("input").and_then(Value::as_array).cloned().unwrap_or_default();
    if let Some(last) = input.last() {
        let kind = last.get("type").and_then(Value::as_str).unwrap_or("");
        if kind == "function_call_output" || kind == "custom_tool_call_output" {
            let output = tool_output_text(last.get("output").unwrap_or(&Value::Null));
            let head: String = output.chars().take(TOOL_OUTPUT_ECHO_CHARS).collect();
            return text_in_three(&format!("tool said: {head}"));
        }
    }
    let user_text = input
        .iter()
        .rev()
        .find(|item| item.get("role").and_then(Value::as_str) == Some("user") && !is_context_message(item))
        .map(message_text)
        .unwrap_or_default();
    let trimmed = user_text.trim();
    if let Some(cmd) = trimmed.strip_prefix("RUN:") {
        return Script::Shell(cmd.trim().to_string());
    }
    if let Some(rest) = trimmed.strip_prefix("PATCH:") {
        let rest = rest.trim();
        let (file, text) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
        return Script::Patch { file: file.to_string(), text: text.trim().to_string() };
    }
    if trimmed == "SLOW" {
        return Script::Text {
            deltas: (1..=SLOW_DELTAS).map(|n| format!("slow {n}/{SLOW_DELTAS} ")).collect(),
            gap: SLOW_DELTA_GAP,
        };
    }
    text_in_three(&format!("echo: {trimmed}"))
}

/// Codex sends its environment and project instructions as user messages
/// too; those are not what the user typed.
fn is_context_message(item: &Value) -> bool {
    let text = message_text(item);
    let text = text.trim_start();
    text.starts_with("<environment_context>")
        || text.starts_with("<user_instructions>")
        || text.starts_with("# AGENTS.md")
        || text.starts_with("<INSTRUCTIONS>")
}

fn message_text(item: &Value) -> String {
    match item.get("content") {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(parts)) => {
            parts.iter().filter_map(|part| part.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join("")
        }
        _ => String::new(),
    }
}

/// Tool outputs come either as a plain string or as content parts.
fn tool_output_text(output: &Value) -> String {
    match output {
        Value::String(text) => text.clone(),
        Value::Array(parts) => {
            parts.iter().filter_map(|part| part.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join("")
        }
        Value::Object(map) => map.get("content").map(tool_output_text).unwrap_or_else(|| output.to_string()),
        other => other.to_string(),
    }
}

fn text_in_three(text: &str) -> Script {
    let chars: Vec<char> = text.chars().collect();
    let third = chars.len().div_ceil(3).max(1);
    let deltas = chars.chunks(third).map(|chunk| chunk.iter().collect()).collect();
    Script::Text { deltas, gap: Duration::ZERO }
}

fn sse(event: &Value) -> Bytes {
    let kind = event.get("type").and_then(Value::as_str).unwrap_or("message");
    Bytes::from(format!("event: {kind}\ndata: {event}\n\n"))
}

fn render(state: &State, request: &Value, script: Script) -> Vec<(Duration, Bytes)> {
    let response_id = state.id("resp");
    let mut out = vec![(
        Duration::ZERO,
        sse(&json!({"type": "response.created", "response": {"id": response_id, "model": MODEL}})),
    )];
    let item = match script {
        Script::Text { deltas, gap } => {
            let item_id = state.id("msg");
            out.push((
                Duration::ZERO,
                sse(&json!({
                    "type": "response.output_item.added",
                    "output_index": 0,
                    "item": {"type": "message", "id": item_id, "role": "assistant", "content": []},
                })),
            ));
            for delta in &deltas {
                out.push((
                    gap,
                    sse(&json!({
                        "type": "response.output_text.delta",
                        "item_id": item_id,
                        "output_index": 0,
                        "content_index": 0,
                        "delta": delta,
                    })),
                ));
            }
            json!({
                "type": "message",
                "id": item_id,
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": deltas.concat(), "annotations": []}],
            })
        }
        Script::Shell(cmd) => {
            let (name, arguments) = shell_call(request, &cmd);
            let item = json!({
                "type": "function_call",
                "id": state.id("fc"),
                "call_id": state.id("call"),
                "name": name,
                "arguments": arguments.to_string(),
                "status": "completed",
            });
            out.push((
                Duration::ZERO,
                sse(&json!({"type": "response.output_item.added", "output_index": 0, "item": item})),
            ));
            item
        }
        Script::Patch { file, text } => {
            let patch = format!("*** Begin Patch\n*** Add File: {file}\n+{text}\n*** End Patch\n");
            let item = json!({
                "type": "custom_tool_call",
                "id": state.id("ctc"),
                "call_id": state.id("call"),
                "name": "apply_patch",
                "input": patch,
                "status": "completed",
            });
            out.push((
                Duration::ZERO,
                sse(&json!({"type": "response.output_item.added", "output_index": 0, "item": item})),
            ));
            item
        }
    };
    out.push((Duration::ZERO, sse(&json!({"type": "response.output_item.done", "output_index": 0, "item": item}))));
    out.push((
        Duration::ZERO,
        sse(&json!({
            "type": "response.completed",
            "response": {
                "id": response_id,
                "status": "completed",
                "model": MODEL,
                "usage": {
                    "input_tokens": INPUT_TOKENS,
                    "input_tokens_details": {"cached_tokens": 0},
                    "output_tokens": OUTPUT_TOKENS,
                    "output_tokens_details": {"reasoning_tokens": 0},
                    "total_tokens": INPUT_TOKENS + OUTPUT_TOKENS,
                },
            },
        })),
    ));
    out
}

/// Picks whichever shell tool the agent offers and shapes the arguments the
/// way its schema asks for.
fn shell_call(request: &Value, cmd: &str) -> (String, Value) {
    let tools = request.get("tools").and_then(Value::as_array).cloned().unwrap_or_default();
    let tool_name = |tool: &Value| tool.get("name").and_then(Value::as_str).map(str::to_string);
    let preferred = ["shell_command", "exec_command", "shell", "container.exec"];
    let tool =
        preferred.iter().find_map(|want| tools.iter().find(|tool| tool_name(tool).as_deref() == Some(*want))).cloned();
    let Some(tool) = tool else {
        eprintln!("mock_model: the request offers no shell tool; calling shell_command anyway");
        return ("shell_command".to_string(), json!({"command": cmd}));
    };
    let name = tool_name(&tool).unwrap_or_default();
    let properties = tool.pointer("/parameters/properties").cloned().unwrap_or(Value::Null);
    if properties.get("cmd").is_some() {
        return (name, json!({"cmd": cmd}));
    }
    let command_is_array = properties.pointer("/command/type").and_then(Value::as_str) == Some("array");
    if command_is_array {
        (name, json!({"command": ["bash", "-lc", cmd]}))
    } else {
        (name, json!({"command": cmd}))
    }
}

fn write_codex_home(dir: &Path, base_url: &str) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let catalog_path = dir.join("mock-catalog.json");
    let catalog = json!({"models": [{
        "slug": MODEL,
        "display_name": "Mock",
        "description": "The scripted mock model of Bosun's tests",
        "default_reasoning_level": "low",
        "supported_reasoning_levels": [{"effort": "low", "description": "low"}],
        "shell_type": "shell_command",
        "visibility": "list",
        "supported_in_api": true,
        "priority": 1,
        "upgrade": null,
        "base_instructions": "You are a scripted mock model.",
        "supports_reasoning_summaries": false,
        "default_reasoning_summary": "none",
        "support_verbosity": false,
        "default_verbosity": null,
        "apply_patch_tool_type": "freeform",
        "truncation_policy": {"mode": "tokens", "limit": 10000},
        "supports_parallel_tool_calls": false,
        "context_window": 128000,
        "experimental_supported_tools": [],
        "input_modalities": ["text"],
    }]});
    std::fs::write(&catalog_path, serde_json::to_string_pretty(&catalog)?)
        .with_context(|| format!("writing {}", catalog_path.display()))?;
    // No `approval_policy` here: codex 0.169 refuses to start with
    // "untrusted" in its config; clients ask for it per thread
    // (app-server `thread/start`) or with `-c` (codex-acp).
    let config = format!(
        r#"model = "{MODEL}"
model_provider = "mock"
model_catalog_json = {catalog}
sandbox_mode = "danger-full-access"

[analytics]
enabled = false

[model_providers.mock]
name = "Mock"
base_url = {base_url}
wire_api = "responses"
request_max_retries = 0
stream_max_retries = 0
"#,
        catalog = toml_string(&catalog_path.to_string_lossy()),
        base_url = toml_string(base_url),
    );
    let config_path = dir.join("config.toml");
    std::fs::write(&config_path, config).with_context(|| format!("writing {}", config_path.display()))?;
    Ok(())
}

/// A TOML basic string; JSON string escapes are valid TOML escapes.
fn toml_string(text: &str) -> String {
    Value::String(text.to_string()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(text: &str) -> Value {
        json!({"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]})
    }

    #[test]
    fn scripts_follow_the_last_user_message() {
        let request = json!({"input": [user("<environment_context>x</environment_context>"), user("RUN: echo hi")]});
        assert_eq!(script_for(&request), Script::Shell("echo hi".into()));
        let request =
            json!({"input": [user("hello"), {"type": "function_call_output", "call_id": "c", "output": "hi"}]});
        assert!(matches!(script_for(&request), Script::Text { deltas, .. } if deltas.concat() == "tool said: hi"));
        let request = json!({"input": [user("hello there")]});
        assert!(
            matches!(script_for(&request), Script::Text { deltas, .. } if deltas.len() == 3 && deltas.concat() == "echo: hello there")
        );
    }
}
