//! A stand-in Agent Client Protocol agent for Bosun's tests: it speaks ACP
//! (JSON-RPC 2.0, one message per line on stdio) and does what each line of
//! its prompt says, so a test can make it behave like a well-kept agent or
//! like one that acts without asking.
//!
//! Who it says it is comes from the environment:
//! - `STANDIN_NAME`: its `agentInfo.name` (default `standin-agent`);
//! - `STANDIN_MODES`: comma-separated session mode ids it offers (none if
//!   unset), `STANDIN_START_MODE`: the mode it starts in (default: the first);
//! - `STANDIN_LOG`: a file it appends every message it receives to, one JSON
//!   per line, so a test can see what the client sent.
//!
//! Prompt lines it acts on (anything else is echoed back as text):
//! - `ACT: <command>`: runs the command itself, without asking, and reports
//!   a completed `execute` tool call (what a rogue agent does);
//! - `ASK: <command>`: asks permission for an `execute` tool call, and runs
//!   the command itself only if allowed;
//! - `TERM: <command>`: runs the command through the client's terminal
//!   (`terminal/create`, `wait_for_exit`, `output`, `release`);
//! - `WRITE: <path> <text>`: writes through the client (`fs/write_text_file`)
//!   and then reports a completed `edit` tool call for the path;
//! - `READ: <path>`: reads through the client (`fs/read_text_file`);
//! - `SWITCH: <mode>`: switches its own mode, as agents do when a tool tells
//!   them to (`current_mode_update`), then reports the mode it ends up in;
//! - `SLEEP: <ms>`: waits, still answering the client.
//!
//! Run by hand: `cargo run --example acp_standin`, then type JSON-RPC lines.

use serde_json::{json, Value};
use std::io::{BufRead, Write};
use std::process::Command;
use std::time::{Duration, Instant};

struct Agent {
    name: String,
    modes: Vec<String>,
    mode: Option<String>,
    session: Option<String>,
    cwd: String,
    next_id: u64,
    log: Option<std::fs::File>,
    /// Messages read while waiting for a response, handled afterwards.
    backlog: std::collections::VecDeque<Value>,
    cancelled: bool,
    /// Stdin's lines, read on a thread so waits can time out.
    lines: std::sync::mpsc::Receiver<String>,
}

fn stdin_lines() -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

fn main() {
    let modes: Vec<String> = std::env::var("STANDIN_MODES")
        .ok()
        .map(|m| m.split(',').map(str::trim).filter(|m| !m.is_empty()).map(str::to_string).collect())
        .unwrap_or_default();
    let mode = std::env::var("STANDIN_START_MODE").ok().or_else(|| modes.first().cloned());
    let log = std::env::var("STANDIN_LOG")
        .ok()
        .and_then(|path| std::fs::OpenOptions::new().create(true).append(true).open(path).ok());
    let mut agent = Agent {
        name: std::env::var("STANDIN_NAME").unwrap_or_else(|_| "standin-agent".into()),
        modes,
        mode,
        session: None,
        cwd: String::new(),
        next_id: 0,
        log,
        backlog: Default::default(),
        cancelled: false,
        lines: stdin_lines(),
    };
    while let Some(message) = agent.next_message() {
        agent.handle(message);
    }
}

impl Agent {
    fn next_message(&mut self) -> Option<Value> {
        if let Some(message) = self.backlog.pop_front() {
            return Some(message);
        }
        self.read()
    }

    fn read(&mut self) -> Option<Value> {
        self.read_until(None)
    }

    /// The next message, or `None` at end of input or past `deadline`.
    fn read_until(&mut self, deadline: Option<Instant>) -> Option<Value> {
        loop {
            let line = match deadline {
                None => self.lines.recv().ok()?,
                Some(deadline) => self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())).ok()?,
            };
            if line.trim().is_empty() {
                continue;
            }
            if let Some(log) = self.log.as_mut() {
                let _ = writeln!(log, "{line}");
            }
            match serde_json::from_str(&line) {
                Ok(value) => return Some(value),
                Err(e) => eprintln!("standin: not JSON ({e}): {line}"),
            }
        }
    }

    fn send(&self, message: Value) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{message}");
        let _ = out.flush();
    }

    fn respond(&self, id: &Value, result: Value) {
        self.send(json!({"jsonrpc": "2.0", "id": id, "result": result}));
    }

    fn update(&self, update: Value) {
        let session = self.session.clone().unwrap_or_default();
        self.send(
            json!({"jsonrpc": "2.0", "method": "session/update", "params": {"sessionId": session, "update": update}}),
        );
    }

    fn say(&self, text: &str) {
        self.update(json!({"sessionUpdate": "agent_message_chunk", "content": {"type": "text", "text": text}}));
    }

    /// Sends a request to the client and waits for its answer, handling what
    /// else comes meanwhile (a mode change, a cancel). `Err` is the error's
    /// message.
    fn request(&mut self, method: &str, params: Value) -> Result<Value, String> {
        self.next_id += 1;
        let id = format!("standin-{}", self.next_id);
        self.send(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        loop {
            let Some(message) = self.read() else { return Err("the client went away".into()) };
            if message.get("id").and_then(Value::as_str) == Some(id.as_str()) && message.get("method").is_none() {
                if let Some(error) = message.get("error") {
                    return Err(error.get("message").and_then(Value::as_str).unwrap_or("error").to_string());
                }
                return Ok(message.get("result").cloned().unwrap_or(Value::Null));
            }
            self.handle_aside(message);
        }
    }

    /// What can be answered in the middle of a prompt.
    fn handle_aside(&mut self, message: Value) {
        match message.get("method").and_then(Value::as_str) {
            Some("session/cancel") => self.cancelled = true,
            Some("session/set_mode") => self.handle(message),
            _ => self.backlog.push_back(message),
        }
    }

    /// Waits `duration`, still taking a cancel or a mode change.
    fn linger(&mut self, duration: Duration) {
        let deadline = Instant::now() + duration;
        while Instant::now() < deadline && !self.cancelled {
            let Some(message) = self.read_until(Some(deadline)) else { return };
            self.handle_aside(message);
        }
    }

    fn handle(&mut self, message: Value) {
        let id = message.get("id").cloned();
        let params = message.get("params").cloned().unwrap_or(Value::Null);
        match (message.get("method").and_then(Value::as_str), id) {
            (Some("initialize"), Some(id)) => self.respond(
                &id,
                json!({
                    "protocolVersion": 1,
                    "agentCapabilities": {"loadSession": false, "promptCapabilities": {}},
                    "agentInfo": {"name": self.name, "title": "Stand-in", "version": "0.1.0"},
                    "authMethods": []
                }),
            ),
            (Some("session/new"), Some(id)) => {
                self.cwd = params.get("cwd").and_then(Value::as_str).unwrap_or(".").to_string();
                self.session = Some(format!("standin-session-{}", std::process::id()));
                let mut result = json!({"sessionId": self.session});
                if let Some(mode) = &self.mode {
                    let available: Vec<Value> = self.modes.iter().map(|m| json!({"id": m, "name": m})).collect();
                    result["modes"] = json!({"currentModeId": mode, "availableModes": available});
                }
                self.respond(&id, result);
            }
            (Some("session/set_mode"), Some(id)) => {
                let wanted = params.get("modeId").and_then(Value::as_str).unwrap_or("").to_string();
                if self.modes.contains(&wanted) {
                    self.mode = Some(wanted);
                    self.respond(&id, json!({}));
                } else {
                    self.send(json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32602, "message": "no such mode"}}));
                }
            }
            (Some("session/prompt"), Some(id)) => {
                self.cancelled = false;
                let text: String = params
                    .get("prompt")
                    .and_then(Value::as_array)
                    .map(|blocks| blocks.iter().filter_map(|b| b.get("text").and_then(Value::as_str)).collect())
                    .unwrap_or_default();
                for line in text.lines() {
                    if self.cancelled {
                        break;
                    }
                    self.act(line.trim());
                }
                let stop = if self.cancelled { "cancelled" } else { "end_turn" };
                self.respond(&id, json!({"stopReason": stop}));
            }
            (Some("session/cancel"), None) => self.cancelled = true,
            (Some(other), Some(id)) => self.send(
                json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": format!("{other} is not served")}}),
            ),
            _ => {}
        }
    }

    fn act(&mut self, line: &str) {
        let (verb, rest) = line.split_once(':').map(|(v, r)| (v.trim(), r.trim())).unwrap_or(("", line));
        match verb {
            "ACT" => self.act_unasked(rest),
            "ASK" => self.act_asked(rest),
            "TERM" => self.act_in_terminal(rest),
            "WRITE" => self.write(rest),
            "READ" => self.read_file(rest),
            "SWITCH" => self.switch(rest),
            "SLEEP" => self.linger(Duration::from_millis(rest.parse().unwrap_or(100))),
            _ => self.say(&format!("{line}\n")),
        }
    }

    fn tool_id(&mut self) -> String {
        self.next_id += 1;
        format!("call-{}", self.next_id)
    }

    fn run_here(&self, command: &str) -> (i32, String) {
        match Command::new("sh").arg("-c").arg(command).current_dir(&self.cwd).output() {
            Ok(out) => (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned()),
            Err(e) => (-1, e.to_string()),
        }
    }

    fn act_unasked(&mut self, command: &str) {
        let (code, stdout) = self.run_here(command);
        let id = self.tool_id();
        self.update(json!({
            "sessionUpdate": "tool_call", "toolCallId": id, "title": command, "kind": "execute",
            "status": "completed", "rawInput": {"command": command, "cwd": self.cwd},
            "rawOutput": {"exit_code": code, "stdout": stdout}
        }));
        self.say(&format!("ran {command} without asking\n"));
    }

    fn act_asked(&mut self, command: &str) {
        let id = self.tool_id();
        let call = json!({"toolCallId": id, "title": command, "kind": "execute", "rawInput": {"command": command}});
        self.update(json!({
            "sessionUpdate": "tool_call", "toolCallId": id, "title": command, "kind": "execute", "status": "pending",
            "rawInput": {"command": command}
        }));
        let options = json!([
            {"optionId": "allow", "name": "Allow", "kind": "allow_once"},
            {"optionId": "reject", "name": "Reject", "kind": "reject_once"}
        ]);
        let session = self.session.clone();
        let answer = self
            .request("session/request_permission", json!({"sessionId": session, "toolCall": call, "options": options}));
        let allowed = answer
            .as_ref()
            .ok()
            .and_then(|a| a.get("outcome"))
            .is_some_and(|o| o.get("optionId").and_then(Value::as_str) == Some("allow"));
        if !allowed {
            self.update(json!({"sessionUpdate": "tool_call_update", "toolCallId": id, "status": "failed"}));
            self.say(&format!("not allowed to run {command}\n"));
            return;
        }
        let (code, stdout) = self.run_here(command);
        self.update(json!({
            "sessionUpdate": "tool_call_update", "toolCallId": id, "status": "completed",
            "rawOutput": {"exit_code": code, "stdout": stdout}
        }));
    }

    fn act_in_terminal(&mut self, command: &str) {
        let session = self.session.clone();
        let created = self.request(
            "terminal/create",
            json!({"sessionId": session, "command": "sh", "args": ["-c", command], "cwd": self.cwd}),
        );
        let terminal = match created {
            Ok(result) => result.get("terminalId").and_then(Value::as_str).unwrap_or_default().to_string(),
            Err(why) => {
                self.say(&format!("terminal refused: {why}\n"));
                return;
            }
        };
        let id = self.tool_id();
        self.update(json!({
            "sessionUpdate": "tool_call", "toolCallId": id, "title": command, "kind": "execute",
            "status": "in_progress", "rawInput": {"command": command},
            "content": [{"type": "terminal", "terminalId": terminal}]
        }));
        let exit = self.request("terminal/wait_for_exit", json!({"sessionId": session, "terminalId": terminal}));
        let output = self.request("terminal/output", json!({"sessionId": session, "terminalId": terminal}));
        let _ = self.request("terminal/release", json!({"sessionId": session, "terminalId": terminal}));
        let text = output.as_ref().ok().and_then(|o| o.get("output")).and_then(Value::as_str).unwrap_or("").to_string();
        let code = exit.as_ref().ok().and_then(|e| e.get("exitCode")).cloned().unwrap_or(Value::Null);
        self.update(json!({"sessionUpdate": "tool_call_update", "toolCallId": id, "status": "completed"}));
        self.say(&format!("terminal exit {code}: {text}\n"));
    }

    fn write(&mut self, rest: &str) {
        let (path, text) = rest.split_once(' ').unwrap_or((rest, ""));
        let session = self.session.clone();
        match self.request("fs/write_text_file", json!({"sessionId": session, "path": path, "content": text})) {
            Ok(_) => {
                let id = self.tool_id();
                self.update(json!({
                    "sessionUpdate": "tool_call", "toolCallId": id, "title": format!("Write {path}"), "kind": "edit",
                    "status": "completed", "locations": [{"path": path}]
                }));
                self.say(&format!("wrote {path}\n"));
            }
            Err(why) => self.say(&format!("write refused: {why}\n")),
        }
    }

    fn read_file(&mut self, path: &str) {
        let session = self.session.clone();
        match self.request("fs/read_text_file", json!({"sessionId": session, "path": path})) {
            Ok(result) => {
                let content = result.get("content").and_then(Value::as_str).unwrap_or("").to_string();
                self.say(&format!("read {path}: {content}\n"));
            }
            Err(why) => self.say(&format!("read refused: {why}\n")),
        }
    }

    fn switch(&mut self, mode: &str) {
        self.mode = Some(mode.to_string());
        self.update(json!({"sessionUpdate": "current_mode_update", "currentModeId": mode}));
        // Give the client the time to answer, as a real agent keeps going.
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline && self.mode.as_deref() == Some(mode) {
            let Some(message) = self.read_until(Some(deadline)) else { break };
            self.handle_aside(message);
        }
        let now = self.mode.clone().unwrap_or_default();
        self.say(&format!("mode now {now}\n"));
    }
}
