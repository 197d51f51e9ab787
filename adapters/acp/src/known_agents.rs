//! The ACP agents Bosun knows, and how each is put in the mode where it asks
//! before it acts, whatever its own config says. Pure rules, unit-tested;
//! the driver applies them.
//!
//! An agent is recognised by what it says about itself at `initialize`
//! (`agentInfo.name`), and before that, by its program's file name.

use agent_client_protocol::v1::schema::{SessionModeId, SessionModeState};
use bosun_proto::Enforcement;

use bosun_driver::EnforcementReport;

/// An ACP agent whose approval modes Bosun knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KnownAgent {
    /// Zed's `codex-acp`: codex's approval policy, set by `-c` overrides.
    CodexAcp,
    /// Claude Code through its ACP adapter (`claude-agent-acp`).
    Claude,
    /// Google's Gemini CLI (`gemini --acp`).
    Gemini,
}

impl KnownAgent {
    /// The agent by its `agentInfo.name` if it gave one, else by its
    /// program's file name.
    pub fn recognise(agent_name: Option<&str>, program: Option<&str>) -> Option<KnownAgent> {
        match agent_name {
            Some(name) => KnownAgent::by_name(name),
            None => program.and_then(KnownAgent::by_name),
        }
    }

    fn by_name(name: &str) -> Option<KnownAgent> {
        let name = name.to_ascii_lowercase();
        // Package names come scoped (`@zed-industries/claude-code-acp`).
        let name = name.rsplit('/').next().unwrap_or(&name);
        if name.starts_with("codex") {
            Some(KnownAgent::CodexAcp)
        } else if name.starts_with("claude") {
            Some(KnownAgent::Claude)
        } else if name.starts_with("gemini") {
            Some(KnownAgent::Gemini)
        } else {
            None
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            KnownAgent::CodexAcp => "codex-acp",
            KnownAgent::Claude => "Claude Code",
            KnownAgent::Gemini => "Gemini CLI",
        }
    }

    /// The session mode in which the agent asks before running a command or
    /// changing a file: the one Bosun puts it in. (Claude's `acceptEdits`,
    /// `plan`, `dontAsk` and `bypassPermissions`, Gemini's `autoEdit` and
    /// `yolo`, codex-acp's `auto` and `full-access` do not count.)
    pub fn strict_mode(self) -> &'static str {
        match self {
            // codex-acp offers modes only when codex's settings match one of
            // its presets; with the daemon's `untrusted` they never do.
            // Should it offer them anyway, `read-only` is its strictest.
            KnownAgent::CodexAcp => "read-only",
            KnownAgent::Claude | KnownAgent::Gemini => "default",
        }
    }

    /// Arguments appended after the provider's own so they win over them,
    /// with a warning for each of the user's that they override.
    pub fn enforce_args(self, args: &[String]) -> (Vec<String>, Vec<String>) {
        match self {
            KnownAgent::CodexAcp => codex_acp_args(args),
            KnownAgent::Gemini => gemini_args(args),
            KnownAgent::Claude => (args.to_vec(), Vec::new()),
        }
    }
}

/// The codex settings that decide whether codex asks, as Bosun wants them.
/// A later `-c` wins in codex, so these go last.
const CODEX_OVERRIDES: &[(&str, &str)] = &[("approval_policy", "\"untrusted\""), ("approvals_reviewer", "\"user\"")];

/// The `key=value` of a codex config override in `args` at `i` (`-c k=v`,
/// `--config k=v`, `-ck=v`, `-c=k=v`, `--config=k=v`), and how many args it
/// takes up.
fn codex_override(args: &[String], i: usize) -> Option<(&str, usize)> {
    let arg = args[i].as_str();
    match arg {
        "-c" | "--config" => args.get(i + 1).map(|v| (v.as_str(), 2)),
        _ => arg
            .strip_prefix("--config=")
            .or_else(|| arg.strip_prefix("-c="))
            .or_else(|| arg.strip_prefix("-c"))
            .map(|v| (v, 1)),
    }
}

fn codex_acp_args(args: &[String]) -> (Vec<String>, Vec<String>) {
    let mut warnings = Vec::new();
    let mut profiles = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let Some((kv, used)) = codex_override(args, i) else {
            i += 1;
            continue;
        };
        let (key, value) = kv.split_once('=').map_or((kv, ""), |(k, v)| (k.trim(), v.trim()));
        let value_plain = value.trim_matches('"').trim_matches('\'');
        if let Some((_, wanted)) = CODEX_OVERRIDES.iter().find(|(k, _)| *k == key) {
            if value_plain != wanted.trim_matches('"') {
                warnings.push(format!(
                    "provider args set `{key}={value}`, which would let codex act without asking; the daemon \
                     overrides it with {key}={wanted}"
                ));
            }
        } else if key == "profile" {
            profiles.push(value_plain.to_string());
        } else if let Some(rest) = key.strip_prefix("profiles.") {
            if CODEX_OVERRIDES.iter().any(|(k, _)| rest.ends_with(&format!(".{k}"))) {
                warnings.push(format!(
                    "provider args set `{key}={value}`; the daemon overrides the approval settings of the \
                     profile in use"
                ));
            }
        }
        i += used;
    }
    let mut out = args.to_vec();
    for (key, value) in CODEX_OVERRIDES {
        out.push("-c".into());
        out.push(format!("{key}={value}"));
        // A profile's own settings take precedence over top-level ones in
        // codex: override them in the profile the args select as well.
        for profile in &profiles {
            out.push("-c".into());
            out.push(format!("profiles.{profile}.{key}={value}"));
        }
    }
    (out, warnings)
}

/// Gemini's flags that start it in a mode that does not ask.
fn gemini_args(args: &[String]) -> (Vec<String>, Vec<String>) {
    let mut warnings = Vec::new();
    let mut out = Vec::with_capacity(args.len());
    let mut i = 0;
    while i < args.len() {
        let arg = args[i].as_str();
        let dropped = match arg {
            "-y" | "--yolo" => Some(1),
            "--approval-mode" => Some(2),
            _ if arg.starts_with("--approval-mode=") => Some(1),
            _ => None,
        };
        match dropped {
            Some(n) => {
                let shown = args[i..(i + n).min(args.len())].join(" ");
                warnings.push(format!(
                    "provider args pass `{shown}`, which would let Gemini act without asking; the daemon drops it \
                     and keeps Gemini in its default mode"
                ));
                i += n;
            }
            None => {
                out.push(arg.to_string());
                i += 1;
            }
        }
    }
    (out, warnings)
}

/// What to do with the modes an agent offers at `session/new` or
/// `session/load`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModePlan {
    /// The mode to switch the session to, when it is not in it already.
    pub switch_to: Option<SessionModeId>,
    /// The mode the session must stay in from then on; a change the agent
    /// makes by itself is undone.
    pub keep: Option<SessionModeId>,
    pub report: EnforcementReport,
}

/// How an agent is held to asking before it acts, given who it is, the
/// modes it offers, and whether the daemon started it with its own
/// settings (`forced`, for codex-acp).
pub fn plan_modes(agent: Option<KnownAgent>, agent_name: Option<&str>, modes: Option<&SessionModeState>) -> ModePlan {
    let report =
        |enforcement, detail: String| EnforcementReport { enforcement, detail, agent: agent_name.map(str::to_string) };
    let Some(known) = agent else {
        let offered = modes.map(|m| mode_ids(m).join(", ")).unwrap_or_default();
        let detail = if offered.is_empty() {
            "an agent Bosun does not know, which offers no session modes: nothing shows that it asks before it acts"
                .to_string()
        } else {
            format!(
                "an agent Bosun does not know (modes {offered}): which of its modes asks before it acts is not known"
            )
        };
        return ModePlan { switch_to: None, keep: None, report: report(Enforcement::Unverified, detail) };
    };
    let strict = SessionModeId::new(known.strict_mode());
    match modes {
        Some(modes) if modes.available_modes.iter().any(|m| m.id == strict) => {
            let switch_to = (modes.current_mode_id != strict).then(|| strict.clone());
            let detail = format!(
                "{} is kept in its \"{strict}\" mode, which asks before it acts; the daemon put it there and puts it back \
                 if it leaves",
                known.name()
            );
            ModePlan { switch_to, keep: Some(strict), report: report(Enforcement::AgentMode, detail) }
        }
        Some(modes) => {
            let detail = format!(
                "{} offers no \"{strict}\" mode (it offers {}), so it cannot be put in a mode that asks",
                known.name(),
                mode_ids(modes).join(", ")
            );
            ModePlan { switch_to: None, keep: None, report: report(Enforcement::Unverified, detail) }
        }
        None if known == KnownAgent::CodexAcp => {
            let detail = "codex-acp is started by the daemon with approval_policy=\"untrusted\" and \
                          approvals_reviewer=\"user\", after any args of the provider's"
                .to_string();
            ModePlan { switch_to: None, keep: None, report: report(Enforcement::AgentMode, detail) }
        }
        None => {
            let detail = format!("{} offers no session modes, so it cannot be put in a mode that asks", known.name());
            ModePlan { switch_to: None, keep: None, report: report(Enforcement::Unverified, detail) }
        }
    }
}

fn mode_ids(modes: &SessionModeState) -> Vec<String> {
    modes.available_modes.iter().map(|m| m.id.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_client_protocol::v1::schema::SessionMode;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|a| a.to_string()).collect()
    }

    fn modes(current: &str, ids: &[&str]) -> SessionModeState {
        let available = ids.iter().map(|id| SessionMode::new(id.to_string(), id.to_string())).collect::<Vec<_>>();
        SessionModeState::new(current.to_string(), available)
    }

    #[test]
    fn agents_are_known_by_what_they_say_first() {
        assert_eq!(KnownAgent::recognise(Some("codex-acp"), Some("my-agent")), Some(KnownAgent::CodexAcp));
        assert_eq!(KnownAgent::recognise(Some("@zed-industries/claude-code-acp"), None), Some(KnownAgent::Claude));
        assert_eq!(KnownAgent::recognise(Some("claude-agent-acp"), Some("x")), Some(KnownAgent::Claude));
        assert_eq!(KnownAgent::recognise(Some("gemini-cli"), None), Some(KnownAgent::Gemini));
        // A known program that calls itself something unknown is not known.
        assert_eq!(KnownAgent::recognise(Some("standin-agent"), Some("codex-acp")), None);
        assert_eq!(KnownAgent::recognise(None, Some("codex-acp")), Some(KnownAgent::CodexAcp));
        assert_eq!(KnownAgent::recognise(None, None), None);
    }

    #[test]
    fn codex_acp_gets_the_daemons_approval_settings_last_and_weakening_ones_are_named() {
        let (args, warnings) = KnownAgent::CodexAcp.enforce_args(&[]);
        assert_eq!(args, strings(&["-c", "approval_policy=\"untrusted\"", "-c", "approvals_reviewer=\"user\""]));
        assert!(warnings.is_empty());

        let user =
            strings(&["-c", "approval_policy=never", "--config=approvals_reviewer=\"auto_review\"", "-cmodel=o3"]);
        let (args, warnings) = KnownAgent::CodexAcp.enforce_args(&user);
        assert_eq!(&args[..user.len()], &user[..]);
        assert_eq!(
            args[args.len() - 3..],
            strings(&["approval_policy=\"untrusted\"", "-c", "approvals_reviewer=\"user\""])
        );
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].contains("approval_policy=never"), "{warnings:?}");
        assert!(warnings[1].contains("approvals_reviewer"), "{warnings:?}");

        // The same value is no weakening; a profile gets the settings too.
        let (args, warnings) =
            KnownAgent::CodexAcp.enforce_args(&strings(&["-c", "approval_policy=\"untrusted\"", "-c", "profile=fast"]));
        assert!(warnings.is_empty(), "{warnings:?}");
        assert!(args.contains(&"profiles.fast.approval_policy=\"untrusted\"".to_string()), "{args:?}");
        assert!(args.contains(&"profiles.fast.approvals_reviewer=\"user\"".to_string()), "{args:?}");
    }

    #[test]
    fn gemini_loses_its_yolo_flags() {
        let (args, warnings) =
            KnownAgent::Gemini.enforce_args(&strings(&["--acp", "--yolo", "--approval-mode", "yolo", "-m", "x"]));
        assert_eq!(args, strings(&["--acp", "-m", "x"]));
        assert_eq!(warnings.len(), 2);
        let (args, _) = KnownAgent::Gemini.enforce_args(&strings(&["--approval-mode=auto_edit", "-y"]));
        assert!(args.is_empty());
    }

    #[test]
    fn known_agents_are_switched_to_their_asking_mode() {
        let claude = modes("bypassPermissions", &["default", "acceptEdits", "plan", "bypassPermissions"]);
        let plan = plan_modes(Some(KnownAgent::Claude), Some("claude-agent-acp"), Some(&claude));
        assert_eq!(plan.switch_to, Some(SessionModeId::new("default")));
        assert_eq!(plan.keep, Some(SessionModeId::new("default")));
        assert_eq!(plan.report.enforcement, Enforcement::AgentMode);
        assert_eq!(plan.report.agent.as_deref(), Some("claude-agent-acp"));

        let already = modes("default", &["default", "autoEdit", "yolo"]);
        let plan = plan_modes(Some(KnownAgent::Gemini), None, Some(&already));
        assert_eq!((plan.switch_to, plan.report.enforcement), (None, Enforcement::AgentMode));

        let no_default = modes("yolo", &["autoEdit", "yolo"]);
        let plan = plan_modes(Some(KnownAgent::Gemini), None, Some(&no_default));
        assert_eq!((plan.switch_to, plan.keep, plan.report.enforcement), (None, None, Enforcement::Unverified));
    }

    #[test]
    fn codex_acp_without_modes_is_held_by_its_settings_and_others_are_not() {
        let plan = plan_modes(Some(KnownAgent::CodexAcp), Some("codex-acp"), None);
        assert_eq!(plan.report.enforcement, Enforcement::AgentMode);
        let presets = modes("full-access", &["read-only", "auto", "full-access"]);
        let plan = plan_modes(Some(KnownAgent::CodexAcp), Some("codex-acp"), Some(&presets));
        assert_eq!(plan.switch_to, Some(SessionModeId::new("read-only")));
        assert_eq!(plan_modes(Some(KnownAgent::Claude), None, None).report.enforcement, Enforcement::Unverified);
        let unknown = plan_modes(None, Some("x"), Some(&modes("ask", &["ask", "auto"])));
        assert_eq!(unknown.report.enforcement, Enforcement::Unverified);
        assert!(unknown.report.detail.contains("ask, auto"), "{}", unknown.report.detail);
        assert_eq!(plan_modes(None, None, None).report.enforcement, Enforcement::Unverified);
    }
}
