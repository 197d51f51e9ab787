//! Human-readable output: tables, one-line event summaries, durations, dim text.

use bosun_proto::{ApprovalView, Envelope, EventType, SessionView};
use serde_json::Value;
use std::io::IsTerminal as _;

/// Whether to style text written to stdout: only for a terminal, and never
/// when `NO_COLOR` is set (https://no-color.org).
pub fn color_stdout() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

pub fn color_stderr() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

pub fn dim(on: bool, text: &str) -> String {
    if on {
        format!("\x1b[2m{text}\x1b[0m")
    } else {
        text.to_string()
    }
}

pub fn bold(on: bool, text: &str) -> String {
    if on {
        format!("\x1b[1m{text}\x1b[0m")
    } else {
        text.to_string()
    }
}

/// Lays out rows under headers, columns padded to their widest cell; the last
/// column is left ragged so long titles do not pad every line.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut out = String::new();
        for (i, cell) in cells.enumerate() {
            if i + 1 == widths.len() {
                out.push_str(cell);
            } else {
                out.push_str(cell);
                out.push_str(&" ".repeat(widths[i].saturating_sub(cell.chars().count()) + 2));
            }
        }
        out.trim_end().to_string()
    };
    let mut out = line(&mut headers.iter().copied());
    for row in rows {
        out.push('\n');
        out.push_str(&line(&mut row.iter().map(String::as_str)));
    }
    out
}

/// At most `max` characters of the first line of `s`, with `…` when cut.
pub fn clip(s: &str, max: usize) -> String {
    let first = s.lines().next().unwrap_or("");
    let cut = first.chars().count() > max || first.len() < s.trim_end().len();
    let mut out: String = first.chars().take(max).collect();
    if cut {
        out.push('…');
    }
    out
}

/// `s` quoted with escapes (newlines show as `\n`), cut to `max` characters.
pub fn quote(s: &str, max: usize) -> String {
    let escaped: String = s.escape_debug().collect();
    let mut out: String = escaped.chars().take(max).collect();
    if escaped.chars().count() > max {
        out.push('…');
    }
    format!("\"{out}\"")
}

/// `3d 4h 05m`, `1h 02m 03s`, `2m 03s`, `12s`.
pub fn duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d {h}h {m:02}m")
    } else if h > 0 {
        format!("{h}h {m:02}m {s:02}s")
    } else if m > 0 {
        format!("{m}m {s:02}s")
    } else {
        format!("{s}s")
    }
}

fn field<'a>(data: &'a Value, key: &str) -> &'a str {
    data.get(key).and_then(Value::as_str).unwrap_or("?")
}

/// The approval inside an `approval:*` event.
pub fn event_approval(data: &Value) -> Option<ApprovalView> {
    serde_json::from_value(data.get("approval")?.clone()).ok()
}

/// The turn an event is about, if any: `data.turn_id`, or the approval's turn.
pub fn event_turn(env: &Envelope) -> Option<&str> {
    let data = &env.data;
    data.get("turn_id").or_else(|| data.get("approval").and_then(|a| a.get("turn_id"))).and_then(Value::as_str)
}

/// One line for `bosun events`: seq, ts, topic, type, what happened.
pub fn event_line(env: &Envelope) -> String {
    format!("{:>6}  {}  {:<22}  {:<18}  {}", env.seq, env.ts, env.topic.as_str(), env.kind.as_str(), summary(env))
}

fn summary(env: &Envelope) -> String {
    let d = &env.data;
    let turn = field(d, "turn_id");
    match &env.kind {
        EventType::SessionUpdate => match serde_json::from_value::<SessionView>(d.clone()) {
            Ok(s) => format!(
                "{} {} {} {}{}",
                s.id,
                s.status,
                s.policy,
                quote(&s.title, 40),
                s.active_turn.map(|t| format!(" turn {t}")).unwrap_or_default()
            ),
            Err(_) => raw(d),
        },
        EventType::SessionClosed => format!("{} closed", field(d, "session_id")),
        EventType::TurnStarted => {
            let number = d.get("number").and_then(Value::as_u64).map(|n| format!(" #{n}")).unwrap_or_default();
            format!("{turn}{number} {}", quote(field(d, "text"), 60))
        }
        EventType::TurnUpdate => format!("{turn} {}", field(d, "status")),
        EventType::TurnSteer => format!("{turn} {}", quote(field(d, "text"), 60)),
        EventType::StreamChunk => {
            let index = d.get("index").and_then(Value::as_u64).map(|i| i.to_string()).unwrap_or_else(|| "?".into());
            format!("{turn} [{index}] {} {}", field(d, "kind"), quote(field(d, "text"), 60))
        }
        EventType::StreamComplete => {
            let chunks = d.get("chunks").and_then(Value::as_u64).map(|n| n.to_string()).unwrap_or_else(|| "?".into());
            format!("{turn} {chunks} chunks")
        }
        EventType::TurnCompleted => {
            let mut line = format!("{turn} {}", field(d, "status"));
            if let Some(reason) = d.get("reason").and_then(Value::as_str) {
                line.push_str(&format!(": {}", clip(reason, 80)));
            }
            if let Some(code) = d.get("result").and_then(|r| r.get("exit_code")).and_then(Value::as_i64) {
                line.push_str(&format!(" exit {code}"));
            }
            if let Some(u) = d.get("usage") {
                let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
                line.push_str(&format!(" ({} in, {} out tokens)", n("input_tokens"), n("output_tokens")));
            }
            line
        }
        EventType::ApprovalRequested => match event_approval(d) {
            Some(a) => format!("{} {}: {} (policy {})", a.id, a.turn_id, a.action.describe(), field(d, "policy")),
            None => raw(d),
        },
        EventType::ApprovalResolved => match event_approval(d) {
            Some(a) => {
                let by = a.decided_by.map(|b| format!(" by {b}")).unwrap_or_default();
                let auto = if d.get("automatic").and_then(Value::as_bool) == Some(true) { " (automatic)" } else { "" };
                format!("{} {}{by}{auto}: {}", a.id, a.status, a.action.describe())
            }
            None => raw(d),
        },
        EventType::ProviderStatus => {
            let mut line = format!("{} {}", field(d, "provider"), field(d, "status"));
            if let Some(pid) = d.get("pid").and_then(Value::as_u64) {
                line.push_str(&format!(" pid {pid}"));
            }
            if d.get("resumed").and_then(Value::as_bool) == Some(true) {
                line.push_str(" (resumed)");
            }
            if let Some(reason) = d.get("reason").or_else(|| d.get("error")).and_then(Value::as_str) {
                line.push_str(&format!(": {}", clip(reason, 80)));
            }
            line
        }
        EventType::ToolCall => {
            let tool = d.get("tool").cloned().unwrap_or(Value::Null);
            format!(
                "{turn} {} {} {} {}",
                field(&tool, "id"),
                field(&tool, "kind"),
                field(&tool, "status"),
                quote(field(&tool, "title"), 60)
            )
        }
        EventType::CommandRan => {
            let run = d.get("command").cloned().unwrap_or(Value::Null);
            let ended =
                match (run.get("exit_code").and_then(Value::as_i64), run.get("ended_by").and_then(Value::as_str)) {
                    (Some(code), _) => format!("exit {code}"),
                    (None, Some(by)) => by.to_string(),
                    (None, None) => "no exit code".to_string(),
                };
            let ms = run.get("duration_ms").and_then(Value::as_u64).unwrap_or(0);
            let approval =
                run.get("approval").and_then(Value::as_str).map(|a| format!(" (approval {a})")).unwrap_or_default();
            format!("{turn} {ended} in {ms} ms{approval}: {}", quote(field(&run, "command"), 60))
        }
        EventType::FileChanged => {
            format!(
                "{turn} {} ({}, approval {})",
                quote(field(d, "path"), 80),
                field(d, "summary"),
                field(d, "approval")
            )
        }
        EventType::PolicyViolation => {
            format!("{turn} provider {}: {}", field(d, "provider"), clip(field(d, "what"), 100))
        }
        EventType::PolicyModeRestored => {
            format!("{} left mode {} and was put back in {}", field(d, "provider"), field(d, "from"), field(d, "to"))
        }
        EventType::FileWritten | EventType::FileDeleted => {
            let bytes = d.get("bytes").and_then(Value::as_u64).unwrap_or(0);
            format!("{} ({bytes} bytes)", quote(field(d, "path"), 80))
        }
        EventType::ToolUpdate => {
            let mut line = format!("{turn} {} {}", field(d, "tool_id"), field(d, "status"));
            if let Some(output) = d.get("output").and_then(Value::as_str) {
                line.push_str(&format!(" {}", quote(output, 60)));
            }
            line
        }
        EventType::PlanUpdate => {
            let entries = d.get("entries").and_then(Value::as_array).map(Vec::len).unwrap_or(0);
            let done = d
                .get("entries")
                .and_then(Value::as_array)
                .map(|e| e.iter().filter(|e| e.get("status").and_then(Value::as_str) == Some("completed")).count())
                .unwrap_or(0);
            format!("{turn} plan {done}/{entries} done")
        }
        EventType::UsageUpdate => {
            let u = d.get("usage").cloned().unwrap_or(Value::Null);
            let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
            format!("{turn} {} in, {} out tokens", n("input_tokens"), n("output_tokens"))
        }
        EventType::ActorRestarted => format!("{} ({}) restarted", field(d, "actor"), field(d, "kind")),
        EventType::DiagnosticsLog => format!("{}: {}", field(d, "level"), clip(field(d, "message"), 100)),
        EventType::Other(_) => raw(d),
    }
}

fn raw(data: &Value) -> String {
    clip(&data.to_string(), 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_pad_all_but_the_last_column() {
        let t =
            table(&["ID", "TITLE"], &[vec!["s_1".into(), "a long title".into()], vec!["s_22222".into(), "x".into()]]);
        assert_eq!(t, "ID       TITLE\ns_1      a long title\ns_22222  x");
    }

    #[test]
    fn clipping_and_durations() {
        assert_eq!(clip("hello\nworld", 80), "hello…");
        assert_eq!(clip("héllo", 3), "hél…");
        assert_eq!(clip("short", 80), "short");
        assert_eq!(quote("a\nb", 10), "\"a\\nb\"");
        assert_eq!(duration(12), "12s");
        assert_eq!(duration(3723), "1h 02m 03s");
        assert_eq!(duration(90_061), "1d 1h 01m");
    }
}
