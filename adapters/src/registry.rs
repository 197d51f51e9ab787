//! Which providers a daemon can start sessions on: the built-in `demo`, those
//! the config file names, and the known agents found on `PATH`.
//!
//! The registry also keeps what the provider workers report about their agent
//! processes (running, crashed, version), so `GET /api/v1/providers` can say
//! where each provider stands without asking any actor.

use crate::agent::{AgentDriver, Capabilities, DriverInit, EnforcementReport};
use crate::demo::DemoDriver;
use crate::sandbox::Jail;
use bosun_proto::Enforcement;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

/// The kinds of provider a config file may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProviderKind {
    Demo,
    Acp,
    CodexAppServer,
    Shell,
    Pty,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Demo => "demo",
            ProviderKind::Acp => "acp",
            ProviderKind::CodexAppServer => "codex-app-server",
            ProviderKind::Shell => "shell",
            ProviderKind::Pty => "pty",
        }
    }

    /// Kinds this build has a driver for.
    pub fn is_available(self) -> bool {
        matches!(self, ProviderKind::Demo | ProviderKind::Acp | ProviderKind::CodexAppServer | ProviderKind::Shell)
    }

    /// Whether the kind runs an external program, so `command` is required.
    pub fn needs_command(self) -> bool {
        !matches!(self, ProviderKind::Demo | ProviderKind::Shell)
    }

    /// Whether the kind is built into the daemon (no agent program): only
    /// these run in a container, whose image has no agent in it.
    pub fn is_built_in(self) -> bool {
        matches!(self, ProviderKind::Demo | ProviderKind::Shell)
    }
}

/// Where a provider came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ProviderOrigin {
    BuiltIn,
    #[default]
    Config,
    /// A known agent found on `PATH`.
    Discovered,
}

impl ProviderOrigin {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderOrigin::BuiltIn => "built_in",
            ProviderOrigin::Config => "config",
            ProviderOrigin::Discovered => "discovered",
        }
    }
}

/// How long an agent may take to start, and to stay silent in a turn, unless
/// its config says otherwise.
pub const DEFAULT_STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_SILENCE_TIMEOUT: Duration = Duration::from_secs(600);
/// How long one command of the `shell` provider may run.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(600);

/// One `[providers.NAME]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSpec {
    #[serde(skip)]
    pub name: String,
    pub kind: ProviderKind,
    /// The program to start; a bare name is looked up on `PATH`.
    #[serde(default)]
    pub command: Option<String>,
    #[serde(default)]
    pub args: Vec<String>,
    /// Set in the agent's environment, on top of the daemon's.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Seconds the agent gets to start and answer `initialize` (default 30).
    #[serde(default)]
    pub startup_timeout_secs: Option<u64>,
    /// Seconds a running turn may go without a word from the agent before it
    /// is failed (default 600). Time spent waiting on an approval does not count.
    #[serde(default)]
    pub silence_timeout_secs: Option<u64>,
    /// `shell` kind: seconds one command may run before its process tree is
    /// killed (default 600).
    #[serde(default)]
    pub command_timeout_secs: Option<u64>,
    /// Where the agent keeps its own state (`~/.codex`, `$CODEX_HOME`...):
    /// writable inside a bubblewrap jail, which is read-only elsewhere. `~`
    /// and `$VAR` (from `env`, then the daemon's environment) are expanded.
    /// Default: what the known agents use (see [`ProviderSpec::state_dirs`]).
    #[serde(default)]
    pub state_dirs: Vec<String>,
    #[serde(skip)]
    pub origin: ProviderOrigin,
    /// The jail of the session this copy of the spec starts an agent for:
    /// set by [`ProviderRegistry::driver`] from [`DriverInit::sandbox`], so the
    /// drivers' spawn calls find it next to the command they start.
    #[serde(skip)]
    pub jail: Option<Jail>,
    /// What the agent called itself the last time it started (its
    /// `agentInfo.name`), set by [`ProviderRegistry::driver`] from what was
    /// learned: an agent is known by that, not only by its file name.
    #[serde(skip)]
    pub agent_name: Option<String>,
}

impl ProviderSpec {
    pub fn new(name: &str, kind: ProviderKind, command: Option<&str>, args: &[&str]) -> ProviderSpec {
        ProviderSpec {
            jail: None,
            agent_name: None,
            name: name.to_string(),
            kind,
            command: command.map(str::to_string),
            args: args.iter().map(|a| a.to_string()).collect(),
            env: BTreeMap::new(),
            startup_timeout_secs: None,
            silence_timeout_secs: None,
            command_timeout_secs: None,
            state_dirs: Vec::new(),
            origin: ProviderOrigin::Config,
        }
    }

    pub fn startup_timeout(&self) -> Duration {
        self.startup_timeout_secs.map(Duration::from_secs).unwrap_or(DEFAULT_STARTUP_TIMEOUT)
    }

    pub fn silence_timeout(&self) -> Duration {
        self.silence_timeout_secs.map(Duration::from_secs).unwrap_or(DEFAULT_SILENCE_TIMEOUT)
    }

    /// The state dirs to make writable in a jail, expanded: the configured
    /// ones, else the known agents' own (codex and codex-acp: `$CODEX_HOME`
    /// or `~/.codex`; claude-agent-acp: `~/.claude`; gemini: `~/.gemini`).
    /// Entries that cannot be expanded are left out.
    pub fn state_dirs(&self) -> Vec<PathBuf> {
        if !self.state_dirs.is_empty() {
            return self.state_dirs.iter().filter_map(|d| self.expand(d)).collect();
        }
        match self.program_name() {
            // Codex uses ~/.codex unless CODEX_HOME says otherwise.
            Some("codex" | "codex-acp") => {
                self.expand("$CODEX_HOME").or_else(|| self.expand("~/.codex")).into_iter().collect()
            }
            Some("claude-agent-acp" | "claude") => self.expand("~/.claude").into_iter().collect(),
            Some("gemini") => self.expand("~/.gemini").into_iter().collect(),
            _ => Vec::new(),
        }
    }

    /// A digest of what makes this provider the agent it is (kind, program,
    /// args, env): what the daemon learned about it holds only while this is
    /// unchanged.
    pub fn fingerprint(&self) -> String {
        // FNV-1a, 64 bits: stable across builds, unlike std's hasher.
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        let mut feed = |part: &str| {
            for byte in part.bytes().chain(std::iter::once(0u8)) {
                hash ^= u64::from(byte);
                hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
            }
        };
        feed(self.kind.as_str());
        feed(self.command.as_deref().unwrap_or(""));
        for arg in &self.args {
            feed(arg);
        }
        for (key, value) in &self.env {
            feed(key);
            feed(value);
        }
        format!("{hash:016x}")
    }

    /// The file name of the program, without its directory.
    pub fn program_name(&self) -> Option<&str> {
        let command = self.command.as_deref()?;
        Path::new(command).file_name().and_then(|n| n.to_str())
    }

    /// `~/x` → `$HOME/x`, `$VAR/x` → the variable's value from `env` or the
    /// daemon's environment; `None` when a variable is unset or empty.
    fn expand(&self, path: &str) -> Option<PathBuf> {
        let lookup = |name: &str| -> Option<String> {
            self.env.get(name).cloned().or_else(|| std::env::var(name).ok()).filter(|v| !v.is_empty())
        };
        let expanded = if let Some(rest) = path.strip_prefix("~/") {
            format!("{}/{rest}", lookup("HOME")?)
        } else if let Some(rest) = path.strip_prefix('$') {
            let (name, tail) = rest.split_once('/').map_or((rest, ""), |(n, t)| (n, t));
            let value = lookup(name)?;
            if tail.is_empty() {
                value
            } else {
                format!("{value}/{tail}")
            }
        } else {
            path.to_string()
        };
        let expanded = PathBuf::from(expanded);
        expanded.is_absolute().then_some(expanded)
    }

    pub fn command_timeout(&self) -> Duration {
        self.command_timeout_secs.map(Duration::from_secs).unwrap_or(DEFAULT_COMMAND_TIMEOUT)
    }
}

/// The agents the registry looks for on `PATH`: (name, kind, args). The args
/// only say how to speak to each; what makes it ask before it acts is added
/// by the driver whatever the args (`acp::KnownAgent`, and codex's thread
/// settings), so a configured entry gets it too.
pub const KNOWN_AGENTS: &[(&str, ProviderKind, &[&str])] = &[
    ("codex", ProviderKind::CodexAppServer, &["app-server"]),
    ("codex-acp", ProviderKind::Acp, &[]),
    ("claude-agent-acp", ProviderKind::Acp, &[]),
    ("gemini", ProviderKind::Acp, &["--acp"]),
];

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(
        "provider {name:?}: kind `{kind}` has no driver in this build yet (available: demo, shell, acp, codex-app-server)"
    )]
    KindUnavailable { name: String, kind: &'static str },
    #[error("provider {0:?}: names may only use letters, digits, '-' and '_'")]
    BadName(String),
    #[error("provider {name:?}: kind `{kind}` needs a `command`")]
    NoCommand { name: String, kind: &'static str },
    #[error("unknown provider {0:?}")]
    Unknown(String),
}

/// Where a provider stands, as `GET /api/v1/providers` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderHealth {
    /// Can be started (its program was found).
    Available,
    /// Its program is not there.
    Missing,
    /// At least one session's agent process is up.
    Running,
    /// The last agent process of this provider died, and none is up.
    Crashed,
}

impl ProviderHealth {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderHealth::Available => "available",
            ProviderHealth::Missing => "missing",
            ProviderHealth::Running => "running",
            ProviderHealth::Crashed => "crashed",
        }
    }
}

/// What the workers report about one provider's agent processes.
#[derive(Debug, Clone, Default)]
struct Runtime {
    running: u64,
    crashes: u64,
    last_crash: Option<String>,
    version: Option<String>,
    /// Whether the last process to end crashed.
    crashed_last: bool,
    /// What the daemon learned about holding the agent to a policy.
    learned: Option<EnforcementReport>,
}

/// A snapshot of one provider for listing.
#[derive(Debug, Clone)]
pub struct ProviderStatus {
    pub spec: ProviderSpec,
    /// The program `command` resolves to, if found.
    pub resolved: Option<PathBuf>,
    pub health: ProviderHealth,
    pub running: u64,
    pub crashes: u64,
    pub last_crash: Option<String>,
    pub version: Option<String>,
    pub enforcement: EnforcementReport,
}

#[derive(Debug)]
pub struct ProviderRegistry {
    specs: BTreeMap<String, ProviderSpec>,
    search_path: Option<OsString>,
    runtime: Mutex<BTreeMap<String, Runtime>>,
}

impl ProviderRegistry {
    /// The built-in providers plus `configured` ones (which may override
    /// them), without looking on `PATH`.
    pub fn new(configured: impl IntoIterator<Item = ProviderSpec>) -> Result<ProviderRegistry, RegistryError> {
        ProviderRegistry::build(configured, None)
    }

    /// Like [`ProviderRegistry::new`], and adds the [`KNOWN_AGENTS`] found on
    /// `search_path` (a `PATH`-style list) under their own names, unless the
    /// config already uses the name.
    pub fn with_discovery(
        configured: impl IntoIterator<Item = ProviderSpec>,
        search_path: Option<OsString>,
    ) -> Result<ProviderRegistry, RegistryError> {
        let mut registry = ProviderRegistry::build(configured, search_path.clone())?;
        if let Some(path) = &search_path {
            for (name, kind, args) in KNOWN_AGENTS {
                if registry.specs.contains_key(*name) || find_program(name, Some(path)).is_none() {
                    continue;
                }
                let mut spec = ProviderSpec::new(name, *kind, Some(name), args);
                spec.origin = ProviderOrigin::Discovered;
                registry.specs.insert(spec.name.clone(), spec);
            }
        }
        Ok(registry)
    }

    fn build(
        configured: impl IntoIterator<Item = ProviderSpec>,
        search_path: Option<OsString>,
    ) -> Result<ProviderRegistry, RegistryError> {
        let mut specs = BTreeMap::new();
        let mut demo = ProviderSpec::new("demo", ProviderKind::Demo, None, &[]);
        demo.origin = ProviderOrigin::BuiltIn;
        specs.insert(demo.name.clone(), demo);
        let mut shell = ProviderSpec::new("shell", ProviderKind::Shell, None, &[]);
        shell.origin = ProviderOrigin::BuiltIn;
        specs.insert(shell.name.clone(), shell);
        for mut spec in configured {
            if spec.name.is_empty() || !spec.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                return Err(RegistryError::BadName(spec.name));
            }
            if !spec.kind.is_available() {
                return Err(RegistryError::KindUnavailable { name: spec.name, kind: spec.kind.as_str() });
            }
            if spec.kind.needs_command() && spec.command.as_deref().is_none_or(|c| c.trim().is_empty()) {
                return Err(RegistryError::NoCommand { name: spec.name, kind: spec.kind.as_str() });
            }
            spec.origin = ProviderOrigin::Config;
            specs.insert(spec.name.clone(), spec);
        }
        Ok(ProviderRegistry { specs, search_path, runtime: Mutex::new(BTreeMap::new()) })
    }

    pub fn get(&self, name: &str) -> Option<&ProviderSpec> {
        self.specs.get(name)
    }

    pub fn list(&self) -> impl Iterator<Item = &ProviderSpec> {
        self.specs.values()
    }

    /// The program a provider's `command` resolves to, if it exists.
    pub fn resolve(&self, spec: &ProviderSpec) -> Option<PathBuf> {
        let command = spec.command.as_deref()?;
        let path = self.search_path.clone().or_else(|| std::env::var_os("PATH"));
        find_program(command, path.as_deref())
    }

    /// Every provider with where it stands now.
    pub fn statuses(&self) -> Vec<ProviderStatus> {
        let runtime = self.runtime.lock().unwrap_or_else(|p| p.into_inner());
        self.specs
            .values()
            .map(|spec| {
                let rt = runtime.get(&spec.name).cloned().unwrap_or_default();
                let resolved = if spec.kind.needs_command() { self.resolve(spec) } else { None };
                let health = if rt.running > 0 {
                    ProviderHealth::Running
                } else if spec.kind.needs_command() && resolved.is_none() {
                    ProviderHealth::Missing
                } else if rt.crashed_last {
                    ProviderHealth::Crashed
                } else {
                    ProviderHealth::Available
                };
                ProviderStatus {
                    enforcement: rt.learned.clone().unwrap_or_else(|| spec.kind.enforcement_before_start()),
                    spec: spec.clone(),
                    resolved,
                    health,
                    running: rt.running,
                    crashes: rt.crashes,
                    last_crash: rt.last_crash,
                    version: rt.version,
                }
            })
            .collect()
    }

    /// A worker's agent process of provider `name` is up.
    pub fn report_started(&self, name: &str, version: Option<String>) {
        let mut runtime = self.runtime.lock().unwrap_or_else(|p| p.into_inner());
        let rt = runtime.entry(name.to_string()).or_default();
        rt.running += 1;
        if version.is_some() {
            rt.version = version;
        }
    }

    /// A worker's agent process of provider `name` has ended; `crash` says why
    /// when it was not asked to.
    pub fn report_stopped(&self, name: &str, crash: Option<String>) {
        let mut runtime = self.runtime.lock().unwrap_or_else(|p| p.into_inner());
        let rt = runtime.entry(name.to_string()).or_default();
        rt.running = rt.running.saturating_sub(1);
        rt.crashed_last = crash.is_some();
        if let Some(reason) = crash {
            rt.crashes += 1;
            rt.last_crash = Some(reason);
        }
    }

    /// How provider `name` is held to a policy, as far as is known now.
    pub fn enforcement(&self, name: &str) -> Option<EnforcementReport> {
        let spec = self.specs.get(name)?;
        let runtime = self.runtime.lock().unwrap_or_else(|p| p.into_inner());
        let learned = runtime.get(name).and_then(|rt| rt.learned.clone());
        Some(learned.unwrap_or_else(|| spec.kind.enforcement_before_start()))
    }

    /// Sets what was learned about provider `name` (by the providers actor,
    /// once it is on record).
    pub fn set_enforcement(&self, name: &str, report: EnforcementReport) {
        let mut runtime = self.runtime.lock().unwrap_or_else(|p| p.into_inner());
        runtime.entry(name.to_string()).or_default().learned = Some(report);
    }

    /// Records a version learnt some other way (e.g. `--version`).
    pub fn report_version(&self, name: &str, version: String) {
        let mut runtime = self.runtime.lock().unwrap_or_else(|p| p.into_inner());
        runtime.entry(name.to_string()).or_default().version.get_or_insert(version);
    }

    /// A fresh driver for one session's provider worker.
    pub fn driver(&self, name: &str, init: DriverInit) -> Result<Box<dyn AgentDriver>, RegistryError> {
        let spec = self.get(name).ok_or_else(|| RegistryError::Unknown(name.to_string()))?;
        let mut spec = spec.clone();
        spec.agent_name = self.enforcement(name).and_then(|e| e.agent);
        // Start what `statuses` shows: the program found on our search path.
        if let Some(resolved) = self.resolve(&spec) {
            spec.command = Some(resolved.to_string_lossy().into_owned());
        }
        spec.jail = init.sandbox.clone().map(|jail| {
            let dirs = spec.state_dirs();
            for dir in &dirs {
                // bwrap can only bind what exists.
                if let Err(e) = std::fs::create_dir_all(dir) {
                    tracing::warn!(dir = %dir.display(), error = %e, "could not create an agent state dir for the jail");
                }
            }
            let program = spec.command.as_deref().and_then(|c| crate::sandbox::program_dir(Path::new(c)));
            jail.with_writable(dirs.into_iter().filter(|d| d.exists()).collect())
                .with_readable(program.into_iter().collect())
        });
        match spec.kind {
            ProviderKind::Demo => Ok(Box::new(DemoDriver::jailed(init.sandbox))),
            ProviderKind::Acp => Ok(Box::new(crate::acp::AcpDriver::new(spec, init))),
            ProviderKind::CodexAppServer => Ok(Box::new(crate::codex::CodexDriver::new(spec, init))),
            ProviderKind::Shell => Ok(Box::new(crate::shell::ShellDriver::new(spec, init))),
            kind => Err(RegistryError::KindUnavailable { name: spec.name.clone(), kind: kind.as_str() }),
        }
    }
}

/// How a provider's agent can be held to asking before it acts, learned by
/// starting it once in `scratch` where that is the only way to know (ACP
/// agents); the kind's own answer otherwise.
pub async fn probe_enforcement(spec: &ProviderSpec, scratch: &Path) -> Result<EnforcementReport, String> {
    match spec.kind {
        ProviderKind::Acp => crate::acp::probe(spec.clone(), scratch).await,
        kind => Ok(kind.enforcement_before_start()),
    }
}

/// Looks `command` up like a shell would: a path with a `/` as is, a bare
/// name in each directory of `search_path`.
pub fn find_program(command: &str, search_path: Option<&std::ffi::OsStr>) -> Option<PathBuf> {
    if command.contains('/') {
        let path = PathBuf::from(command);
        return is_executable(&path).then_some(path);
    }
    let search_path = search_path?;
    std::env::split_paths(search_path).map(|dir| dir.join(command)).find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Asks a program for its version (`command --version`), giving up after
/// `timeout`; the first non-empty line of its output.
///
/// The program runs in its own process group, killed whole on timeout: an
/// agent that ignores `--version` and waits on stdin (or a Node wrapper
/// around one) leaves nothing behind.
pub async fn probe_version(program: &Path, timeout: Duration) -> Option<String> {
    let mut command = tokio::process::Command::new(program);
    command
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .kill_on_drop(true);
    let child = command.spawn().ok()?;
    let pgid = child.id();
    let output = match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(output) => output.ok(),
        Err(_) => None,
    };
    if let Some(pgid) = pgid.and_then(|p| i32::try_from(p).ok()) {
        // SAFETY: killpg only sends a signal; the group is the one made above.
        unsafe { libc::killpg(pgid, libc::SIGKILL) };
    }
    let output = output?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines().map(str::trim).find(|l| !l.is_empty()).map(str::to_string)
}

impl ProviderKind {
    /// How an agent of this kind is held to a policy before it has ever
    /// been started: only the daemon's own providers are known in advance.
    pub fn enforcement_before_start(self) -> EnforcementReport {
        let (enforcement, detail) = match self {
            ProviderKind::Demo | ProviderKind::Shell => {
                (Enforcement::Daemon, "the daemon runs every command itself, after the session's approval")
            }
            ProviderKind::CodexAppServer => (
                Enforcement::AgentMode,
                "every codex thread is opened by the daemon with approvalPolicy \"untrusted\" (checked when it starts)",
            ),
            ProviderKind::Acp | ProviderKind::Pty => {
                (Enforcement::Unknown, "learned when the agent first starts (the daemon may start it once to find out)")
            }
        };
        EnforcementReport { enforcement, detail: detail.to_string(), agent: None }
    }

    /// What this build's driver of the kind can do (see [`Capabilities`]);
    /// `load_session` for ACP also needs the agent to support it.
    pub fn capabilities(self) -> Capabilities {
        match self {
            ProviderKind::Demo => {
                Capabilities { resume: true, load_session: false, steer: true, interrupt: true, images: false }
            }
            ProviderKind::Acp => {
                Capabilities { resume: false, load_session: true, steer: true, interrupt: true, images: false }
            }
            ProviderKind::CodexAppServer => {
                Capabilities { resume: false, load_session: true, steer: true, interrupt: true, images: true }
            }
            ProviderKind::Shell => {
                Capabilities { resume: false, load_session: false, steer: false, interrupt: true, images: false }
            }
            ProviderKind::Pty => Capabilities::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, kind: ProviderKind) -> ProviderSpec {
        ProviderSpec::new(name, kind, kind.needs_command().then_some("/bin/true"), &[])
    }

    fn init() -> DriverInit {
        DriverInit {
            session_id: "s".into(),
            cwd: PathBuf::from("/tmp"),
            binding: None,
            notices: tokio::sync::mpsc::unbounded_channel().0,
            sandbox: None,
            container: None,
            network: false,
        }
    }

    #[test]
    fn demo_is_built_in() {
        let reg = ProviderRegistry::new([]).unwrap();
        assert_eq!(reg.get("demo").unwrap().origin, ProviderOrigin::BuiltIn);
        assert!(reg.driver("demo", init()).is_ok());
        assert!(matches!(reg.driver("nope", init()), Err(RegistryError::Unknown(_))));
    }

    #[test]
    fn unavailable_kinds_bad_names_and_missing_commands_are_refused() {
        let err = ProviderRegistry::new([spec("term", ProviderKind::Pty)]).unwrap_err();
        assert!(err.to_string().contains("`pty`"), "{err}");
        assert!(matches!(ProviderRegistry::new([spec("a b", ProviderKind::Demo)]), Err(RegistryError::BadName(_))));
        let no_command = ProviderSpec::new("x", ProviderKind::Acp, None, &[]);
        assert!(matches!(ProviderRegistry::new([no_command]), Err(RegistryError::NoCommand { .. })));
        assert!(ProviderRegistry::new([spec("demo2", ProviderKind::Demo)]).unwrap().get("demo2").is_some());
    }

    #[test]
    fn known_agents_are_discovered_on_the_search_path_unless_configured() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        for name in ["codex", "gemini", "not-an-agent"] {
            let path = dir.path().join(name);
            std::fs::write(&path, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        // Present but not executable: not found.
        std::fs::write(dir.path().join("codex-acp"), "").unwrap();
        let mine = ProviderSpec::new("gemini", ProviderKind::Acp, Some("/usr/bin/false"), &[]);
        let reg = ProviderRegistry::with_discovery([mine], Some(dir.path().as_os_str().to_owned())).unwrap();
        let codex = reg.get("codex").unwrap();
        assert_eq!((codex.kind, codex.origin), (ProviderKind::CodexAppServer, ProviderOrigin::Discovered));
        assert_eq!(codex.args, ["app-server"]);
        assert_eq!(reg.get("gemini").unwrap().origin, ProviderOrigin::Config, "the config wins");
        assert!(reg.get("codex-acp").is_none());
        assert!(reg.get("not-an-agent").is_none());
        assert_eq!(reg.resolve(codex), Some(dir.path().join("codex")));
    }

    #[test]
    fn state_dirs_come_from_the_config_or_the_known_agent() {
        let mut codex = ProviderSpec::new("c", ProviderKind::CodexAppServer, Some("/opt/bin/codex"), &[]);
        codex.env.insert("CODEX_HOME".into(), "/srv/codex-home".into());
        assert_eq!(codex.state_dirs(), [PathBuf::from("/srv/codex-home")]);
        codex.env.insert("HOME".into(), "/home/u".into());
        codex.env.insert("CODEX_HOME".into(), String::new());
        // An empty CODEX_HOME is unset: codex falls back to ~/.codex, unless the daemon has one.
        if std::env::var_os("CODEX_HOME").is_none() {
            assert_eq!(codex.state_dirs(), [PathBuf::from("/home/u/.codex")]);
        }
        let mut gemini = ProviderSpec::new("g", ProviderKind::Acp, Some("gemini"), &["--acp"]);
        gemini.env.insert("HOME".into(), "/home/u".into());
        assert_eq!(gemini.state_dirs(), [PathBuf::from("/home/u/.gemini")]);
        gemini.state_dirs = vec!["$STATE/x".into(), "relative/ignored".into(), "$UNSET_BOSUN_VAR/y".into()];
        gemini.env.insert("STATE".into(), "/var/state".into());
        assert_eq!(gemini.state_dirs(), [PathBuf::from("/var/state/x")], "configured dirs replace the defaults");
        assert!(spec("other", ProviderKind::Acp).state_dirs().is_empty());
    }

    #[test]
    fn health_follows_what_workers_report() {
        let missing = ProviderSpec::new("gone", ProviderKind::Acp, Some("/nonexistent/agent"), &[]);
        let reg = ProviderRegistry::new([spec("a", ProviderKind::Acp), missing]).unwrap();
        let health = |name: &str| reg.statuses().into_iter().find(|s| s.spec.name == name).unwrap().health;
        assert_eq!(health("a"), ProviderHealth::Available);
        assert_eq!(health("gone"), ProviderHealth::Missing);
        assert_eq!(health("demo"), ProviderHealth::Available);
        reg.report_started("a", Some("1.2.3".into()));
        assert_eq!(health("a"), ProviderHealth::Running);
        reg.report_stopped("a", Some("killed by signal 9".into()));
        assert_eq!(health("a"), ProviderHealth::Crashed);
        let a = reg.statuses().into_iter().find(|s| s.spec.name == "a").unwrap();
        assert_eq!((a.crashes, a.version.as_deref()), (1, Some("1.2.3")));
        reg.report_started("a", None);
        reg.report_stopped("a", None);
        assert_eq!(health("a"), ProviderHealth::Available);
    }
}
