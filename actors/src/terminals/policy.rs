//! What a terminal action needs before it is carried out: nothing, or a
//! person's approval, and what that person is shown. Pure.
//!
//! - Under `plan-only`, starting a command and sending text that would run
//!   something (a line break in it, or Enter after it) are asked about, as
//!   an agent's commands are.
//! - Whatever the policy, the paste guard asks about text of more than one
//!   line (one trailing line break aside), text holding invisible (zero-width,
//!   bidi) characters, and text holding escape sequences or other controls:
//!   what a person cannot see on their screen is never sent unseen.

use bosun_proto::{Policy, SendTextRequest, SpawnTerminalRequest};
use bosun_termbridge::paste_guard::{self, PasteRisk};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Why a person must decide; empty: go ahead.
    pub concerns: Vec<&'static str>,
    /// The text as that person is shown it, every hidden character visible.
    pub revealed: String,
}

impl Verdict {
    pub fn allowed(&self) -> bool {
        self.concerns.is_empty()
    }
}

fn risks(text: &str, concerns: &mut Vec<&'static str>) {
    for risk in paste_guard::classify(text) {
        let name = match risk {
            PasteRisk::MultiLine => "multi_line",
            PasteRisk::Invisible => "invisible_characters",
            PasteRisk::EscapeSequence => "escape_sequences",
        };
        if !concerns.contains(&name) {
            concerns.push(name);
        }
    }
}

pub fn judge_send(policy: Policy, req: &SendTextRequest) -> Verdict {
    let mut concerns = Vec::new();
    let runs = req.enter || req.text.contains(['\n', '\r']);
    if policy == Policy::PlanOnly && runs {
        concerns.push("runs_command");
    }
    risks(&req.text, &mut concerns);
    let mut revealed = paste_guard::reveal(&req.text);
    if req.enter {
        revealed.push_str("⏎ (Enter)");
    }
    Verdict { concerns, revealed }
}

pub fn judge_spawn(policy: Policy, req: &SpawnTerminalRequest) -> Verdict {
    let mut concerns = Vec::new();
    if policy == Policy::PlanOnly && !req.command.is_empty() {
        concerns.push("runs_command");
    }
    let shown = req.command.iter().map(|a| shell_quote(a)).collect::<Vec<_>>().join(" ");
    // An argument may hide what it does as well as pasted text can.
    for arg in &req.command {
        risks(arg, &mut concerns);
    }
    Verdict { concerns, revealed: paste_guard::reveal(&shown) }
}

fn shell_quote(arg: &str) -> String {
    if !arg.is_empty() && arg.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c)) {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send(text: &str, enter: bool) -> SendTextRequest {
        SendTextRequest { text: text.into(), paste: false, enter }
    }

    #[test]
    fn plan_only_asks_before_anything_runs_and_full_access_does_not() {
        assert!(judge_send(Policy::PlanOnly, &send("ls -l", false)).allowed());
        assert_eq!(judge_send(Policy::PlanOnly, &send("ls -l", true)).concerns, vec!["runs_command"]);
        assert_eq!(judge_send(Policy::PlanOnly, &send("ls -l\n", false)).concerns, vec!["runs_command"]);
        assert!(judge_send(Policy::FullAccess, &send("ls -l\n", false)).allowed());
        assert!(judge_send(Policy::FullAccess, &send("ls -l", true)).allowed());
    }

    #[test]
    fn the_paste_guard_asks_whatever_the_policy() {
        let v = judge_send(Policy::FullAccess, &send("echo a\nrm -rf ~\n", false));
        assert_eq!(v.concerns, vec!["multi_line"]);
        let v = judge_send(Policy::FullAccess, &send("echo safe\u{200B}", false));
        assert_eq!(v.concerns, vec!["invisible_characters"]);
        assert!(v.revealed.contains("U+200B"), "{}", v.revealed);
        let v = judge_send(Policy::FullAccess, &send("ls \u{202E}txt.exe", false));
        assert_eq!(v.concerns, vec!["invisible_characters"]);
        let v = judge_send(Policy::FullAccess, &send("x\x1b]52;c;AAAA\x07", false));
        assert_eq!(v.concerns, vec!["escape_sequences"]);
        assert!(!v.revealed.contains('\x1b'));
    }

    #[test]
    fn a_spawn_with_a_command_is_asked_about_under_plan_only() {
        let req = |command: &[&str]| SpawnTerminalRequest {
            command: command.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        assert!(judge_spawn(Policy::PlanOnly, &req(&[])).allowed());
        let v = judge_spawn(Policy::PlanOnly, &req(&["sh", "-c", "echo it's"]));
        assert_eq!(v.concerns, vec!["runs_command"]);
        assert_eq!(v.revealed, r"sh -c 'echo it'\''s'");
        assert!(judge_spawn(Policy::FullAccess, &req(&["make"])).allowed());
        assert_eq!(
            judge_spawn(Policy::FullAccess, &req(&["echo", "\u{2066}x"])).concerns,
            vec!["invisible_characters"]
        );
    }
}
