//! Human-readable output: tables, one-line event summaries, durations, dim text.

use bosun_proto::events::ProviderStatusKind;
use bosun_proto::{Envelope, EventData, PlanEntryStatus};
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

/// One line for `bosun events`: seq, ts, topic, type, what happened.
pub fn event_line(env: &Envelope) -> String {
    format!("{:>6}  {}  {:<22}  {:<18}  {}", env.seq, env.ts, env.topic.as_str(), env.kind.as_str(), summary(env))
}

fn summary(env: &Envelope) -> String {
    // An event of a newer daemon, or one this build cannot read: shown raw.
    let Ok(event) = env.payload() else { return raw(&env.data) };
    match event {
        EventData::SessionUpdate(s) => format!(
            "{} {} {} {}{}",
            s.id,
            s.status,
            s.policy,
            quote(&s.title, 40),
            s.active_turn.map(|t| format!(" turn {t}")).unwrap_or_default()
        ),
        EventData::SessionClosed(e) => format!("{} closed", e.session_id),
        EventData::TurnStarted(e) => format!("{} #{} {}", e.turn_id, e.number, quote(&e.text, 60)),
        EventData::TurnUpdate(e) => format!("{} {}", e.turn_id, e.status),
        EventData::TurnSteer(e) => format!("{} {}", e.turn_id, quote(&e.text, 60)),
        EventData::StreamChunk(e) => format!("{} [{}] {} {}", e.turn_id, e.index, e.kind, quote(&e.text, 60)),
        EventData::StreamComplete(e) => format!("{} {} chunks", e.turn_id, e.chunks),
        EventData::TurnCompleted(e) => {
            let mut line = format!("{} {}", e.turn_id, e.status);
            if let Some(reason) = &e.reason {
                line.push_str(&format!(": {}", clip(reason, 80)));
            }
            if let Some(code) = e.result.as_ref().and_then(|r| r.exit_code) {
                line.push_str(&format!(" exit {code}"));
            }
            line.push_str(&format!(" ({} in, {} out tokens)", e.usage.input_tokens, e.usage.output_tokens));
            line
        }
        EventData::ApprovalRequested(e) => {
            let a = e.approval;
            let on = a.turn_id.as_ref().map(|t| format!(" {t}")).unwrap_or_default();
            format!("{}{on}: {} (policy {})", a.id, a.action.describe(), e.policy)
        }
        EventData::ApprovalResolved(e) => {
            let a = e.approval;
            let by = a.decided_by.map(|b| format!(" by {b}")).unwrap_or_default();
            let auto = if e.automatic { " (automatic)" } else { "" };
            format!("{} {}{by}{auto}: {}", a.id, a.status, a.action.describe())
        }
        EventData::ProviderStatus(e) => {
            let detail = match e.status {
                ProviderStatusKind::Ready { .. } => "ready".to_string(),
                ProviderStatusKind::Running { pid, .. } => {
                    format!("running{}", pid.map(|p| format!(" pid {p}")).unwrap_or_default())
                }
                ProviderStatusKind::Bound { resumed, .. } => {
                    format!("bound{}", if resumed { " (resumed)" } else { "" })
                }
                ProviderStatusKind::Crashed { reason } => format!("crashed: {}", clip(&reason, 80)),
                ProviderStatusKind::Stopped => "stopped".to_string(),
                ProviderStatusKind::Restarting { reason } => format!("restarting: {}", clip(&reason, 80)),
                ProviderStatusKind::Enforcement { enforcement, detail, .. } => {
                    format!("enforcement {enforcement}: {}", clip(&detail, 80))
                }
                ProviderStatusKind::Installed { version, replaced } => match replaced {
                    Some(old) => format!("module {version} installed (was {old})"),
                    None => format!("module {version} installed"),
                },
            };
            format!("{} {detail}", e.provider)
        }
        EventData::ToolCall(e) => {
            let t = e.tool;
            format!("{} {} {} {} {}", e.turn_id, t.id, t.kind, t.status, quote(&t.title, 60))
        }
        EventData::ToolUpdate(e) => {
            let status = e.status.map_or_else(|| "-".to_string(), |s| s.to_string());
            let mut line = format!("{} {} {status}", e.turn_id, e.tool_id);
            if let Some(output) = &e.output {
                line.push_str(&format!(" {}", quote(output, 60)));
            }
            line
        }
        EventData::PlanUpdate(e) => {
            let done = e.entries.iter().filter(|entry| entry.status == PlanEntryStatus::Completed).count();
            format!("{} plan {done}/{} done", e.turn_id, e.entries.len())
        }
        EventData::UsageUpdate(e) => {
            format!("{} {} in, {} out tokens", e.turn_id, e.usage.input_tokens, e.usage.output_tokens)
        }
        EventData::CommandRan(e) => {
            let run = e.command;
            let ended = match (run.exit_code, run.ended_by) {
                (Some(code), _) => format!("exit {code}"),
                (None, Some(by)) => by.to_string(),
                (None, None) => "no exit code".to_string(),
            };
            let approval = run.approval.map(|a| format!(" (approval {a})")).unwrap_or_default();
            format!("{} {ended} in {} ms{approval}: {}", e.turn_id, run.duration_ms, quote(&run.command, 60))
        }
        EventData::FileWritten(e) | EventData::FileDeleted(e) => format!("{} ({} bytes)", quote(&e.path, 80), e.bytes),
        EventData::FileChanged(e) => {
            format!("{} {} ({}, approval {})", e.turn_id, quote(&e.path, 80), e.summary, e.approval)
        }
        EventData::PolicyViolation(e) => format!("{} provider {}: {}", e.turn_id, e.provider, clip(&e.what, 100)),
        EventData::PolicyModeRestored(e) => {
            format!("{} left mode {} and was put back in {}", e.provider, e.from, e.to)
        }
        EventData::ActorRestarted(e) => format!("{} ({}) restarted", e.actor, e.kind),
        EventData::SettingsChanged(e) => format!("{} {} {}", e.setting, e.name, e.change),
        EventData::DiagnosticsLog(e) => format!("{}: {}", e.level, clip(&e.message, 100)),
        EventData::TaskUpdated(e) => {
            format!("{} {} {} (by {})", e.task.id, e.task.status, quote(&e.task.title, 60), e.by)
        }
        EventData::TaskRemoved(e) => format!("{} removed (by {})", e.id, e.by),
        EventData::TerminalBinding(e) => {
            let b = &e.binding;
            let how = match (&b.exit, &b.reason) {
                (Some(x), _) => match (&x.code, &x.signal) {
                    (_, Some(sig)) => format!(" ({sig})"),
                    (Some(code), None) => format!(" (exit {code})"),
                    (None, None) => String::new(),
                },
                (None, Some(r)) => format!(" ({r})"),
                (None, None) => String::new(),
            };
            format!("{} {} {} {}{how}", b.binding_id, b.terminal, b.ipc_endpoint, b.state)
        }
        EventData::BindingLost(e) => format!("{} {} lost: {}", e.binding_id, e.terminal, e.reason),
        EventData::TerminalAction(e) => {
            format!(
                "{} {} {} ({}, {:.1} ms) {}",
                e.binding_id, e.terminal, e.action, e.decision, e.latency_ms, e.detail
            )
        }
        EventData::TerminalDenied(e) => {
            format!("{} {} {} denied: {}", e.binding_id.as_deref().unwrap_or("-"), e.terminal, e.action, e.reason)
        }
        EventData::CapabilityUpdate(e) => {
            let t = &e.terminal;
            format!("{} installed={} running={} reachable={}", t.terminal, t.installed, t.running, t.reachable)
        }
        EventData::WorkflowStarted(e) => format!("{} {:?} started, {} steps", e.run.id, e.run.name, e.run.steps.len()),
        EventData::WorkflowStep(e) => {
            let s = e.step;
            let label = s.index.map(|i| format!("{}#{i}", s.step_id)).unwrap_or(s.step_id);
            let session = s.session_id.map(|id| format!(" session {id}")).unwrap_or_default();
            let why = s.error.map(|r| format!(": {}", clip(&r, 80))).unwrap_or_default();
            format!("{} {label} {}{session}{why}", e.run_id, s.state)
        }
        EventData::WorkflowEvent(e) => format!("{} {} {}", e.run_id, e.kind, clip(&e.message, 100)),
        EventData::WorkflowError(e) => format!("{} error: {}", e.run_id, clip(&e.message, 100)),
        EventData::WorkflowPaused(e) => format!("{} paused ({}): {}", e.run_id, e.reason, clip(&e.message, 100)),
        EventData::WorkflowCompleted(e) => format!(
            "{} {} in {:.1} s ({} tokens, cost {:.4})",
            e.run_id,
            e.state,
            e.duration_ms as f64 / 1000.0,
            e.usage.input_tokens + e.usage.output_tokens,
            e.cost
        ),
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
