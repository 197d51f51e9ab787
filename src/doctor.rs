//! `GET /api/v1/doctor` (and `bosun doctor`): the daemon checks itself, in
//! its own process. That is the point: under systemd or launchd the daemon
//! has another `PATH` and another environment than the shell the user would
//! check from, and an agent missing there (or its key) is what makes every
//! session fail.

use bosun_actors::Context;
use bosun_proto::{CheckStatus, DoctorCheck, DoctorReport};
use bosun_termbridge::runner::find_on_path;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

fn check(name: &str, status: CheckStatus, detail: impl Into<String>, hint: Option<&str>) -> DoctorCheck {
    DoctorCheck { name: name.into(), status, detail: detail.into(), hint: hint.map(str::to_string) }
}

pub fn report(ctx: &Context) -> DoctorReport {
    let mut checks = vec![data_dir(&ctx.settings.data_dir)];
    checks.extend(providers(ctx));
    checks.push(tool(
        "bwrap",
        "bwrap",
        "jailed sessions (\"sandbox\":\"bwrap\") cannot start",
        "apt-get install bubblewrap",
    ));
    checks.push(docker(ctx));
    checks.push(tool("tmux", "tmux", "tmux panes cannot be bound", "apt-get install tmux"));
    checks.push(terminals(ctx));
    checks.push(service());
    checks.push(exposure(ctx));
    DoctorReport { checks }
}

fn data_dir(dir: &Path) -> DoctorCheck {
    let meta = match std::fs::metadata(dir) {
        Ok(meta) => meta,
        Err(e) => return check("data_dir", CheckStatus::Fail, format!("{}: {e}", dir.display()), None),
    };
    // SAFETY: geteuid cannot fail and touches no memory.
    let uid = unsafe { libc::geteuid() };
    if meta.uid() != uid {
        let detail = format!("{} belongs to uid {}, the daemon runs as {uid}", dir.display(), meta.uid());
        return check("data_dir", CheckStatus::Fail, detail, Some("chown -R the data dir to the daemon's user"));
    }
    let mode = meta.permissions().mode() & 0o777;
    // The store lock is ours: this daemon answers.
    let held =
        format!("{} (mode {mode:03o}), its store locked by this daemon (pid {})", dir.display(), std::process::id());
    if mode & 0o077 != 0 {
        let hint =
            format!("chmod 700 {}: it holds the admin token, the devices' tokens and every session", dir.display());
        return check("data_dir", CheckStatus::Warn, format!("{held}; other users can get in"), Some(&hint));
    }
    check("data_dir", CheckStatus::Ok, held, None)
}

/// Where an agent keeps the login its CLI made, when no key is in the
/// environment; known by the provider's name (`codex`, `codex-acp`,
/// `claude-agent-acp`, `gemini`), as one agent runs under several drivers.
fn credentials(name: &str, env: &dyn Fn(&str) -> bool) -> Option<(bool, String)> {
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
    let (keys, files): (&[&str], Vec<PathBuf>) = match name {
        n if n.contains("codex") => {
            let codex_home = std::env::var_os("CODEX_HOME").map(PathBuf::from).unwrap_or_else(|| home.join(".codex"));
            (&["OPENAI_API_KEY", "CODEX_API_KEY"], vec![codex_home.join("auth.json")])
        }
        n if n.contains("claude") => (
            &["ANTHROPIC_API_KEY", "CLAUDE_CODE_OAUTH_TOKEN"],
            vec![home.join(".claude/.credentials.json"), home.join(".claude.json")],
        ),
        n if n.contains("gemini") => {
            (&["GEMINI_API_KEY", "GOOGLE_API_KEY"], vec![home.join(".gemini/oauth_creds.json")])
        }
        _ => return None,
    };
    if let Some(key) = keys.iter().find(|k| env(k)) {
        return Some((true, format!("{key} is set")));
    }
    if let Some(file) = files.iter().find(|f| f.is_file()) {
        return Some((true, format!("its login in {}", file.display())));
    }
    Some((false, format!("no {} and no login in {}", keys.join(" or "), files[0].display())))
}

fn providers(ctx: &Context) -> Vec<DoctorCheck> {
    let path = std::env::var("PATH").unwrap_or_default();
    ctx.providers
        .statuses()
        .into_iter()
        .map(|status| {
            let spec = &status.spec;
            let name = format!("provider:{}", spec.name);
            let Some(command) = spec.command.as_deref() else {
                return check(&name, CheckStatus::Ok, format!("built in ({})", spec.kind), None);
            };
            let Some(program) = &status.resolved else {
                let detail = format!("{command} is not on the daemon's PATH ({path})");
                let hint = "install it, give its absolute path as `command`, or reinstall the service from a shell \
                            whose PATH has it (bosun service install)";
                return check(&name, CheckStatus::Fail, detail, Some(hint));
            };
            let version = status.version.clone().unwrap_or_else(|| "version not known yet".into());
            let has = |k: &str| spec.env.contains_key(k) || std::env::var_os(k).is_some_and(|v| !v.is_empty());
            match credentials(&spec.name, &has) {
                Some((false, why)) => check(
                    &name,
                    CheckStatus::Warn,
                    format!("{} ({version}); {why}", program.display()),
                    Some("log in with the agent's own CLI as the daemon's user, or set its key in the provider's env"),
                ),
                Some((true, how)) => {
                    check(&name, CheckStatus::Ok, format!("{} ({version}); {how}", program.display()), None)
                }
                None => check(&name, CheckStatus::Ok, format!("{} ({version})", program.display()), None),
            }
        })
        .collect()
}

fn tool(name: &str, program: &str, without: &str, install: &str) -> DoctorCheck {
    match find_on_path(program) {
        Some(path) => check(name, CheckStatus::Ok, path.display().to_string(), None),
        None => {
            check(name, CheckStatus::Warn, format!("{program} is not on the daemon's PATH: {without}"), Some(install))
        }
    }
}

fn docker(ctx: &Context) -> DoctorCheck {
    let Some(config) = &ctx.settings.docker_config else {
        return check("docker", CheckStatus::Ok, "no [docker] engine configured: docker sessions are refused", None);
    };
    let socket = config.socket();
    match socket.strip_prefix("unix://").or_else(|| socket.starts_with('/').then_some(socket.as_str())) {
        Some(path) if Path::new(path).exists() => {
            check("docker", CheckStatus::Ok, format!("engine socket {socket}"), None)
        }
        Some(_) => check(
            "docker",
            CheckStatus::Fail,
            format!("no engine socket at {socket}"),
            Some("start the engine (systemctl --user start podman.socket, or Docker), or fix [docker] socket"),
        ),
        None => check("docker", CheckStatus::Ok, format!("engine at {socket} (not checked: not a local socket)"), None),
    }
}

fn terminals(ctx: &Context) -> DoctorCheck {
    let records = ctx.store.scan::<bosun_state::TerminalRecord>().unwrap_or_default();
    let found: Vec<String> = records
        .iter()
        .filter(|r| r.installed && r.terminal != bosun_proto::TerminalKind::Pty)
        .map(|r| {
            let state = if r.running { "running" } else { "installed" };
            format!("{} ({state}{})", r.terminal, r.version.as_deref().map(|v| format!(", {v}")).unwrap_or_default())
        })
        .collect();
    if found.is_empty() {
        check("terminals", CheckStatus::Ok, "no terminal emulator found; pty terminals only", None)
    } else {
        check("terminals", CheckStatus::Ok, found.join(", "), None)
    }
}

/// The first word of a unit's `ExecStart=`, unquoted.
fn exec_start(unit: &str) -> Option<String> {
    let line = unit.lines().find_map(|l| l.strip_prefix("ExecStart="))?;
    let word = match line.strip_prefix('"') {
        Some(rest) => rest.split('"').next()?.to_string(),
        None => line.split_whitespace().next()?.to_string(),
    };
    Some(word)
}

fn service() -> DoctorCheck {
    let file = if cfg!(target_os = "macos") { crate::service::plist_path() } else { crate::service::unit_path() };
    let Ok(file) = file else {
        return check("service", CheckStatus::Ok, "no HOME: not installed as a service", None);
    };
    let Ok(text) = std::fs::read_to_string(&file) else {
        return check(
            "service",
            CheckStatus::Ok,
            format!("not installed as a service ({} absent)", file.display()),
            None,
        );
    };
    let binary = if cfg!(target_os = "macos") {
        text.split("<string>").nth(2).and_then(|s| s.split("</string>").next()).map(str::to_string)
    } else {
        exec_start(&text)
    };
    match binary {
        Some(binary) if Path::new(&binary).is_file() => {
            check("service", CheckStatus::Ok, format!("{} runs {binary}", file.display()), None)
        }
        Some(binary) => check(
            "service",
            CheckStatus::Fail,
            format!("{} runs {binary}, which does not exist", file.display()),
            Some("bosun service install, from the binary you mean to run"),
        ),
        None => check(
            "service",
            CheckStatus::Fail,
            format!("{} names no program", file.display()),
            Some("bosun service install"),
        ),
    }
}

fn exposure(ctx: &Context) -> DoctorCheck {
    let Some(listen) = ctx.settings.listen else {
        return check("exposure", CheckStatus::Warn, "the listening address is not known", None);
    };
    let loopback = listen.ip().is_loopback();
    match (loopback, ctx.settings.loopback_trusted, ctx.settings.proxied) {
        (true, true, true) => check(
            "exposure",
            CheckStatus::Fail,
            format!("{listen}, behind a proxy (the config names one), with [auth] require = \"remote\": every proxied request looks local and needs no token"),
            Some("set [auth] require = \"always\""),
        ),
        (true, _, _) => check("exposure", CheckStatus::Ok, format!("{listen}: this machine only"), None),
        (false, _, _) => check(
            "exposure",
            CheckStatus::Warn,
            format!("{listen}: other machines can reach it; they need a token, which travels in clear text (plain HTTP)"),
            Some("listen on 127.0.0.1 and put TLS in front (tailscale serve, Caddy); see docs/SECURITY.md"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_start_reads_quoted_and_bare_programs() {
        assert_eq!(
            exec_start("[Service]\nExecStart=\"/opt/b 1/bosun\" \"serve\"\n").as_deref(),
            Some("/opt/b 1/bosun")
        );
        assert_eq!(exec_start("ExecStart=/usr/bin/bosun serve\n").as_deref(), Some("/usr/bin/bosun"));
        assert_eq!(exec_start("[Service]\n"), None);
    }
}
