//! Which providers a daemon can start sessions on: one per kind that runs
//! no program (`demo`, `shell`), those the config file names, and the known
//! agents found on `PATH`.
//!
//! Each kind is a [`ProviderFactory`] the daemon registers at start: the
//! registry knows kinds only through that trait, so a new kind is a new
//! factory, with no edit here.
//!
//! The registry also keeps what the provider workers report about their agent
//! processes (running, crashed, version), so `GET /api/v1/providers` can say
//! where each provider stands without asking any actor.

use crate::contract::{AgentDriver, Capabilities, DriverInit, EnforcementReport};
use bosun_isolation::Isolation;
use bosun_proto::Sandbox;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// One kind of provider (`kind = "..."` in a config file): what the daemon
/// knows about its agents before any has started, and how to build its
/// driver.
pub trait ProviderFactory: Send + Sync + fmt::Debug + 'static {
    /// The name a config file gives the kind: `"acp"`.
    fn kind(&self) -> &'static str;

    /// Whether providers of this kind start an agent program, so a
    /// `command` is required and must be found. A kind that runs none is a
    /// provider of its own name, built in.
    fn runs_program(&self) -> bool;

    /// What this kind's driver can do (`load_session` may also need the
    /// agent to support it).
    fn capabilities(&self) -> Capabilities;

    /// How this kind's agents are held to a policy before one has started.
    fn enforcement_before_start(&self) -> EnforcementReport;

    /// Whether a session of this kind may run in `sandbox`. Only a built-in
    /// kind can run in a container: its image holds no agent.
    fn supports(&self, sandbox: Sandbox) -> bool {
        sandbox != Sandbox::Docker
    }

    /// Whether the provider's agent reaches its model over the network, so a
    /// jail without network would fail its every turn. `spec.agent_name` is
    /// what the agent called itself when it last started, if it has.
    fn needs_network(&self, _spec: &ProviderSpec) -> bool {
        false
    }

    /// The agents of this kind the registry looks for on `PATH`.
    fn known_programs(&self) -> &'static [KnownProgram] {
        &[]
    }

    /// Where the provider's agent keeps its own state when the config says
    /// nothing: candidates for one directory, the first that can be expanded
    /// wins (`["$CODEX_HOME", "~/.codex"]`).
    fn default_state_dir(&self, _spec: &ProviderSpec) -> &'static [&'static str] {
        &[]
    }

    /// How the provider's agent can be held to asking before it acts,
    /// learned by starting it once in `scratch` where that is the only way
    /// to know; [`ProviderFactory::enforcement_before_start`] otherwise.
    fn probe<'a>(
        &'a self,
        _spec: ProviderSpec,
        _scratch: &'a Path,
    ) -> BoxFuture<'a, Result<EnforcementReport, String>> {
        Box::pin(std::future::ready(Ok(self.enforcement_before_start())))
    }

    /// Builds the driver of one session's provider worker.
    fn driver(&self, spec: ProviderSpec, init: DriverInit) -> Box<dyn AgentDriver>;
}

/// An agent the registry looks for on `PATH`, and the arguments that make
/// it speak its kind's protocol. Those say only how to speak to it: what
/// makes it ask before it acts is added by its driver whatever the args, so
/// a configured entry gets it too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownProgram {
    pub program: &'static str,
    pub args: &'static [&'static str],
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
    /// A signed module installed under `<data_dir>/providers/` (docs/MODULES.md).
    Module,
}

impl ProviderOrigin {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderOrigin::BuiltIn => "built_in",
            ProviderOrigin::Config => "config",
            ProviderOrigin::Discovered => "discovered",
            ProviderOrigin::Module => "module",
        }
    }
}

/// How long an agent may take to start, and to stay silent in a turn, unless
/// its config says otherwise.
pub const DEFAULT_STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_SILENCE_TIMEOUT: Duration = Duration::from_secs(600);
/// How long one command of the `shell` provider may run.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(600);

/// An `env` value of this form names a secret (`bosun secrets set NAME`),
/// put in the agent's environment in clear only when its process starts.
pub const SECRET_REF_PREFIX: &str = "secret:";

/// The secret an `env` value refers to (`"secret:NAME"` → `NAME`), if it does.
pub fn secret_ref(value: &str) -> Option<&str> {
    value.strip_prefix(SECRET_REF_PREFIX)
}

/// Turns the `secret:NAME` values of a provider's `env` into the secrets'
/// clear values, each time an agent is started: a secret changed since the
/// daemon started is the one the next agent gets.
pub trait SecretResolver: Send + Sync + fmt::Debug + 'static {
    /// The clear value of secret `name`, or why there is none.
    fn resolve(&self, name: &str) -> Result<String, String>;
}

/// How a value that may be secret is shown to a person (logs, `Debug`, the
/// API): `sk-…abcd`. Only a value of 12 characters or more shows its last 4
/// (and a prefix up to a dash, `sk-`, when 6 or more stay hidden); a shorter
/// one shows nothing but `…`, as too little of it would stay hidden.
pub fn mask_secret(value: &str) -> String {
    const ELLIPSIS: char = '\u{2026}';
    let chars: Vec<char> = value.chars().collect();
    if chars.len() < 12 {
        return ELLIPSIS.to_string();
    }
    let tail: String = chars[chars.len() - 4..].iter().collect();
    // A short known-looking prefix ("sk-", "ghp-"): at most 4 characters, a dash last.
    let prefix_len = chars.iter().take(4).position(|c| *c == '-').map(|dash| dash + 1).unwrap_or(0);
    let prefix_len = if chars.len() - prefix_len - 4 >= 6 { prefix_len } else { 0 };
    let prefix: String = chars[..prefix_len].iter().collect();
    format!("{prefix}{ELLIPSIS}{tail}")
}

/// One `[providers.NAME]` entry. Its `Debug` masks `env` values, which may
/// be keys (inline, or resolved from `secret:` references).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSpec {
    #[serde(skip)]
    pub name: String,
    /// The [`ProviderFactory::kind`] that builds its driver.
    pub kind: String,
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
    /// What the agent called itself the last time it started (its
    /// `agentInfo.name`), set by [`ProviderRegistry::driver`] from what was
    /// learned: an agent is known by that, not only by its file name.
    #[serde(skip)]
    pub agent_name: Option<String>,
}

impl fmt::Debug for ProviderSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A `secret:NAME` reference says nothing secret and helps a reader;
        // any other value is masked.
        let env: BTreeMap<&str, String> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), if secret_ref(v).is_some() { v.clone() } else { mask_secret(v) }))
            .collect();
        f.debug_struct("ProviderSpec")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("command", &self.command)
            .field("args", &self.args)
            .field("env", &env)
            .field("startup_timeout_secs", &self.startup_timeout_secs)
            .field("silence_timeout_secs", &self.silence_timeout_secs)
            .field("command_timeout_secs", &self.command_timeout_secs)
            .field("state_dirs", &self.state_dirs)
            .field("origin", &self.origin)
            .field("agent_name", &self.agent_name)
            .finish()
    }
}

impl ProviderSpec {
    pub fn new(name: &str, kind: &str, command: Option<&str>, args: &[&str]) -> ProviderSpec {
        ProviderSpec {
            agent_name: None,
            name: name.to_string(),
            kind: kind.to_string(),
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
    /// ones, else the first of `default` (the kind's
    /// [`ProviderFactory::default_state_dir`]) that can be expanded.
    /// Entries that cannot be expanded are left out.
    pub fn state_dirs(&self, default: &[&str]) -> Vec<PathBuf> {
        if !self.state_dirs.is_empty() {
            return self.state_dirs.iter().filter_map(|d| self.expand(d)).collect();
        }
        default.iter().find_map(|d| self.expand(d)).into_iter().collect()
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
        feed(&self.kind);
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

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("provider {name:?}: there is no provider kind `{kind}` (known: {known})")]
    UnknownKind { name: String, kind: String, known: String },
    #[error("provider {0:?}: names may only use letters, digits, '-' and '_'")]
    BadName(String),
    #[error("provider {name:?}: kind `{kind}` needs a `command`")]
    NoCommand { name: String, kind: String },
    #[error("unknown provider {0:?}")]
    Unknown(String),
    #[error("provider {provider:?}: env {var} names secret {secret:?}, which cannot be read: {reason}")]
    Secret { provider: String, var: String, secret: String, reason: String },
    /// A module may not take a name the config or a built-in kind holds:
    /// the config is the operator's word and wins.
    #[error("provider {name:?} is {origin} already; a module may not replace it")]
    Taken { name: String, origin: &'static str },
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
    pub capabilities: Capabilities,
}

#[derive(Debug)]
pub struct ProviderRegistry {
    /// By [`ProviderFactory::kind`].
    factories: BTreeMap<&'static str, Arc<dyn ProviderFactory>>,
    /// Behind a lock because a module can add or replace a provider while
    /// the daemon runs ([`ProviderRegistry::register_module`]); held only to
    /// copy out or swap a spec, never across an await.
    specs: RwLock<BTreeMap<String, ProviderSpec>>,
    search_path: Option<OsString>,
    runtime: Mutex<BTreeMap<String, Runtime>>,
    /// Resolves `secret:NAME` env values when an agent starts; without one,
    /// such a value is an error rather than passed on as it is.
    secrets: Option<Arc<dyn SecretResolver>>,
}

impl ProviderRegistry {
    /// Resolves the `secret:NAME` values of providers' `env` with `secrets`.
    pub fn with_secrets(mut self, secrets: Arc<dyn SecretResolver>) -> ProviderRegistry {
        self.secrets = Some(secrets);
        self
    }

    /// `spec`'s env with each `secret:NAME` value replaced by the secret's
    /// clear value: what the agent's process is given, and nothing else sees.
    fn resolve_secrets(&self, spec: &mut ProviderSpec) -> Result<(), RegistryError> {
        for (var, value) in spec.env.iter_mut() {
            let Some(secret) = secret_ref(value) else { continue };
            let refused = |reason: String| RegistryError::Secret {
                provider: spec.name.clone(),
                var: var.clone(),
                secret: secret.to_string(),
                reason,
            };
            let resolver = self.secrets.as_ref().ok_or_else(|| refused("this daemon keeps no secrets".into()))?;
            *value = resolver.resolve(secret).map_err(refused)?;
        }
        Ok(())
    }

    /// The built-in providers of `factories` plus `configured` ones (which
    /// may override them), without looking on `PATH`.
    pub fn new(
        factories: impl IntoIterator<Item = Arc<dyn ProviderFactory>>,
        configured: impl IntoIterator<Item = ProviderSpec>,
    ) -> Result<ProviderRegistry, RegistryError> {
        ProviderRegistry::build(factories, configured, None)
    }

    /// Like [`ProviderRegistry::new`], and adds the factories'
    /// [`ProviderFactory::known_programs`] found on `search_path` (a
    /// `PATH`-style list) under their own names, unless the config already
    /// uses the name.
    pub fn with_discovery(
        factories: impl IntoIterator<Item = Arc<dyn ProviderFactory>>,
        configured: impl IntoIterator<Item = ProviderSpec>,
        search_path: Option<OsString>,
    ) -> Result<ProviderRegistry, RegistryError> {
        let mut registry = ProviderRegistry::build(factories, configured, search_path.clone())?;
        if let Some(path) = &search_path {
            let known: Vec<(&'static str, KnownProgram)> =
                registry.factories.values().flat_map(|f| f.known_programs().iter().map(|p| (f.kind(), *p))).collect();
            for (kind, known) in known {
                let specs = registry.specs.get_mut().unwrap_or_else(|p| p.into_inner());
                if specs.contains_key(known.program) || find_program(known.program, Some(path)).is_none() {
                    continue;
                }
                let mut spec = ProviderSpec::new(known.program, kind, Some(known.program), known.args);
                spec.origin = ProviderOrigin::Discovered;
                specs.insert(spec.name.clone(), spec);
            }
        }
        Ok(registry)
    }

    fn build(
        factories: impl IntoIterator<Item = Arc<dyn ProviderFactory>>,
        configured: impl IntoIterator<Item = ProviderSpec>,
        search_path: Option<OsString>,
    ) -> Result<ProviderRegistry, RegistryError> {
        let factories: BTreeMap<&'static str, Arc<dyn ProviderFactory>> =
            factories.into_iter().map(|f| (f.kind(), f)).collect();
        let mut specs = BTreeMap::new();
        for factory in factories.values().filter(|f| !f.runs_program()) {
            let mut spec = ProviderSpec::new(factory.kind(), factory.kind(), None, &[]);
            spec.origin = ProviderOrigin::BuiltIn;
            specs.insert(spec.name.clone(), spec);
        }
        for mut spec in configured {
            check_spec(&factories, &spec)?;
            spec.origin = ProviderOrigin::Config;
            specs.insert(spec.name.clone(), spec);
        }
        Ok(ProviderRegistry {
            factories,
            specs: RwLock::new(specs),
            search_path,
            runtime: Mutex::new(BTreeMap::new()),
            secrets: None,
        })
    }

    fn specs(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, ProviderSpec>> {
        self.specs.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds the provider of an installed module, or replaces the one an
    /// earlier version of it (or a discovered agent of that name) gave, while
    /// the daemon runs. A name the config or a built-in kind holds is
    /// refused. Returns the spec it replaced.
    pub fn register_module(&self, mut spec: ProviderSpec) -> Result<Option<ProviderSpec>, RegistryError> {
        check_spec(&self.factories, &spec)?;
        spec.origin = ProviderOrigin::Module;
        let mut specs = self.specs.write().unwrap_or_else(|p| p.into_inner());
        if let Some(existing) = specs.get(&spec.name) {
            if matches!(existing.origin, ProviderOrigin::Config | ProviderOrigin::BuiltIn) {
                return Err(RegistryError::Taken { name: spec.name, origin: existing.origin.as_str() });
            }
        }
        Ok(specs.insert(spec.name.clone(), spec))
    }

    /// Whether [`ProviderRegistry::register_module`] would take `spec`:
    /// asked before a module is unpacked, so a refusal changes nothing.
    pub fn check_module(&self, spec: &ProviderSpec) -> Result<(), RegistryError> {
        check_spec(&self.factories, spec)?;
        match self.specs().get(&spec.name) {
            Some(existing) if matches!(existing.origin, ProviderOrigin::Config | ProviderOrigin::BuiltIn) => {
                Err(RegistryError::Taken { name: spec.name.clone(), origin: existing.origin.as_str() })
            }
            _ => Ok(()),
        }
    }

    /// The factory of `spec`'s kind; every spec in the registry has one.
    fn factory(&self, spec: &ProviderSpec) -> Option<&Arc<dyn ProviderFactory>> {
        self.factories.get(spec.kind.as_str())
    }

    /// What provider `name`'s driver can do.
    pub fn capabilities(&self, name: &str) -> Option<Capabilities> {
        Some(self.factory(self.specs().get(name)?)?.capabilities())
    }

    /// Whether provider `name` may run a session in `sandbox`.
    pub fn supports(&self, name: &str, sandbox: Sandbox) -> bool {
        self.specs().get(name).and_then(|spec| self.factory(spec)).is_some_and(|f| f.supports(sandbox))
    }

    /// Whether provider `name`'s agent needs the network to reach its model.
    pub fn needs_network(&self, name: &str) -> bool {
        let Some(spec) = self.with_learned_name(name) else { return false };
        self.factory(&spec).is_some_and(|f| f.needs_network(&spec))
    }

    /// Provider `name`'s spec, with what its agent called itself the last
    /// time it started: an agent is known by that, not only by its file name.
    fn with_learned_name(&self, name: &str) -> Option<ProviderSpec> {
        let mut spec = self.specs().get(name)?.clone();
        spec.agent_name = self.enforcement(name).and_then(|e| e.agent);
        Some(spec)
    }

    /// The state dirs of `spec`'s agent (see [`ProviderSpec::state_dirs`]).
    pub fn state_dirs(&self, spec: &ProviderSpec) -> Vec<PathBuf> {
        let default = self.factory(spec).map(|f| f.default_state_dir(spec)).unwrap_or_default();
        spec.state_dirs(default)
    }

    /// A copy: a module may replace the spec at any time.
    pub fn get(&self, name: &str) -> Option<ProviderSpec> {
        self.specs().get(name).cloned()
    }

    pub fn list(&self) -> Vec<ProviderSpec> {
        self.specs().values().cloned().collect()
    }

    /// The program a provider's `command` resolves to, if it exists.
    pub fn resolve(&self, spec: &ProviderSpec) -> Option<PathBuf> {
        let command = spec.command.as_deref()?;
        let path = self.search_path.clone().or_else(|| std::env::var_os("PATH"));
        find_program(command, path.as_deref())
    }

    /// Every provider with where it stands now.
    pub fn statuses(&self) -> Vec<ProviderStatus> {
        let specs = self.list();
        let runtime = self.runtime.lock().unwrap_or_else(|p| p.into_inner());
        specs
            .iter()
            .map(|spec| {
                let rt = runtime.get(&spec.name).cloned().unwrap_or_default();
                let factory = self.factory(spec);
                let runs_program = factory.is_some_and(|f| f.runs_program());
                let resolved = if runs_program { self.resolve(spec) } else { None };
                let health = if rt.running > 0 {
                    ProviderHealth::Running
                } else if runs_program && resolved.is_none() {
                    ProviderHealth::Missing
                } else if rt.crashed_last {
                    ProviderHealth::Crashed
                } else {
                    ProviderHealth::Available
                };
                ProviderStatus {
                    enforcement: rt.learned.clone().unwrap_or_else(|| before_start(factory)),
                    capabilities: factory.map(|f| f.capabilities()).unwrap_or_default(),
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
        let spec = self.get(name)?;
        let runtime = self.runtime.lock().unwrap_or_else(|p| p.into_inner());
        let learned = runtime.get(name).and_then(|rt| rt.learned.clone());
        Some(learned.unwrap_or_else(|| before_start(self.factory(&spec))))
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

    /// A fresh driver for one session's provider worker. A jailed agent
    /// gets its state dirs writable and its program's directory readable in
    /// the jail.
    pub fn driver(&self, name: &str, mut init: DriverInit) -> Result<Box<dyn AgentDriver>, RegistryError> {
        let mut spec = self.with_learned_name(name).ok_or_else(|| RegistryError::Unknown(name.to_string()))?;
        let factory = self.factory(&spec).ok_or_else(|| self.unknown_kind(&spec))?.clone();
        // Start what `statuses` shows: the program found on our search path.
        if let Some(resolved) = self.resolve(&spec) {
            spec.command = Some(resolved.to_string_lossy().into_owned());
        }
        // The jail's state dirs are expanded from the references, before
        // they become clear values.
        let state_dirs = self.state_dirs(&spec);
        self.resolve_secrets(&mut spec)?;
        if let Isolation::Jail(jail) = &init.isolation {
            let dirs = state_dirs;
            for dir in &dirs {
                // bwrap can only bind what exists.
                if let Err(e) = std::fs::create_dir_all(dir) {
                    tracing::warn!(dir = %dir.display(), error = %e, "could not create an agent state dir for the jail");
                }
            }
            let program = spec.command.as_deref().and_then(|c| bosun_isolation::jail::program_dir(Path::new(c)));
            init.isolation = Isolation::Jail(
                jail.clone()
                    .with_writable(dirs.into_iter().filter(|d| d.exists()).collect())
                    .with_readable(program.into_iter().collect()),
            );
        }
        Ok(factory.driver(spec, init))
    }

    /// How `spec`'s agent can be held to asking before it acts (see
    /// [`ProviderFactory::probe`]), starting the program `statuses` shows.
    pub fn probe<'a>(
        &'a self,
        spec: &ProviderSpec,
        scratch: &'a Path,
    ) -> BoxFuture<'a, Result<EnforcementReport, String>> {
        let mut spec = spec.clone();
        let Some(factory) = self.factory(&spec) else {
            let error = self.unknown_kind(&spec).to_string();
            return Box::pin(std::future::ready(Err(error)));
        };
        if let Some(resolved) = self.resolve(&spec) {
            spec.command = Some(resolved.to_string_lossy().into_owned());
        }
        if let Err(e) = self.resolve_secrets(&mut spec) {
            return Box::pin(std::future::ready(Err(e.to_string())));
        }
        factory.probe(spec, scratch)
    }

    fn unknown_kind(&self, spec: &ProviderSpec) -> RegistryError {
        let known = self.factories.keys().copied().collect::<Vec<_>>().join(", ");
        RegistryError::UnknownKind { name: spec.name.clone(), kind: spec.kind.clone(), known }
    }
}

/// A spec's name, kind and command, as the config and modules must give them.
fn check_spec(
    factories: &BTreeMap<&'static str, Arc<dyn ProviderFactory>>,
    spec: &ProviderSpec,
) -> Result<(), RegistryError> {
    if spec.name.is_empty() || !spec.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(RegistryError::BadName(spec.name.clone()));
    }
    let Some(factory) = factories.get(spec.kind.as_str()) else {
        let known = factories.keys().copied().collect::<Vec<_>>().join(", ");
        return Err(RegistryError::UnknownKind { name: spec.name.clone(), kind: spec.kind.clone(), known });
    };
    if factory.runs_program() && spec.command.as_deref().is_none_or(|c| c.trim().is_empty()) {
        return Err(RegistryError::NoCommand { name: spec.name.clone(), kind: spec.kind.clone() });
    }
    Ok(())
}

/// What is known of a kind before any of its agents started; nothing, for a
/// spec whose kind has no factory (the registry never holds one).
fn before_start(factory: Option<&Arc<dyn ProviderFactory>>) -> EnforcementReport {
    match factory {
        Some(factory) => factory.enforcement_before_start(),
        None => EnforcementReport {
            enforcement: bosun_proto::Enforcement::Unknown,
            detail: "no driver for this kind".into(),
            agent: None,
        },
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::{AgentError, AgentEvent, TurnHandle, TurnInput};
    use bosun_proto::Enforcement;

    /// A kind for the tests: `builtin` runs no program, `agent` does and
    /// knows two programs.
    #[derive(Debug)]
    struct TestKind {
        kind: &'static str,
        program: bool,
    }

    const KNOWN: &[KnownProgram] = &[
        KnownProgram { program: "codex", args: &["app-server"] },
        KnownProgram { program: "gemini", args: &["--acp"] },
    ];

    impl ProviderFactory for TestKind {
        fn kind(&self) -> &'static str {
            self.kind
        }
        fn runs_program(&self) -> bool {
            self.program
        }
        fn capabilities(&self) -> Capabilities {
            Capabilities { steer: self.program, ..Capabilities::default() }
        }
        fn enforcement_before_start(&self) -> EnforcementReport {
            EnforcementReport { enforcement: Enforcement::Daemon, detail: self.kind.into(), agent: None }
        }
        fn known_programs(&self) -> &'static [KnownProgram] {
            if self.program {
                KNOWN
            } else {
                &[]
            }
        }
        fn default_state_dir(&self, spec: &ProviderSpec) -> &'static [&'static str] {
            match spec.program_name() {
                Some("codex") => &["$CODEX_HOME", "~/.codex"],
                Some("gemini") => &["~/.gemini"],
                _ => &[],
            }
        }
        fn driver(&self, _spec: ProviderSpec, _init: DriverInit) -> Box<dyn AgentDriver> {
            Box::new(NoTurns(self.kind))
        }
    }

    struct NoTurns(&'static str);

    impl AgentDriver for NoTurns {
        fn kind(&self) -> &'static str {
            self.0
        }
        fn capabilities(&self) -> Capabilities {
            Capabilities::default()
        }
        fn start_turn(
            &mut self,
            _input: TurnInput,
            _events: tokio::sync::mpsc::UnboundedSender<AgentEvent>,
        ) -> Result<TurnHandle, AgentError> {
            Err(AgentError::Start("no turns in this test".into()))
        }
    }

    fn kinds() -> Vec<Arc<dyn ProviderFactory>> {
        vec![
            Arc::new(TestKind { kind: "builtin", program: false }),
            Arc::new(TestKind { kind: "agent", program: true }),
        ]
    }

    fn spec(name: &str, kind: &str) -> ProviderSpec {
        ProviderSpec::new(name, kind, (kind == "agent").then_some("/bin/true"), &[])
    }

    fn init() -> DriverInit {
        DriverInit {
            session_id: "s".into(),
            cwd: PathBuf::from("/tmp"),
            binding: None,
            notices: tokio::sync::mpsc::unbounded_channel().0,
            isolation: Isolation::Host,
            network: false,
        }
    }

    #[test]
    fn a_kind_without_a_program_is_a_built_in_provider_of_its_name() {
        let reg = ProviderRegistry::new(kinds(), []).unwrap();
        assert_eq!(reg.get("builtin").unwrap().origin, ProviderOrigin::BuiltIn);
        assert!(reg.get("agent").is_none(), "a kind that runs a program needs a config entry");
        assert_eq!(reg.driver("builtin", init()).unwrap().kind(), "builtin");
        assert!(matches!(reg.driver("nope", init()), Err(RegistryError::Unknown(_))));
        assert_eq!(reg.capabilities("builtin"), Some(Capabilities::default()));
    }

    #[test]
    fn unknown_kinds_bad_names_and_missing_commands_are_refused() {
        let err = ProviderRegistry::new(kinds(), [spec("term", "pty")]).unwrap_err();
        assert!(err.to_string().contains("`pty`") && err.to_string().contains("agent, builtin"), "{err}");
        assert!(matches!(ProviderRegistry::new(kinds(), [spec("a b", "builtin")]), Err(RegistryError::BadName(_))));
        let no_command = ProviderSpec::new("x", "agent", None, &[]);
        assert!(matches!(ProviderRegistry::new(kinds(), [no_command]), Err(RegistryError::NoCommand { .. })));
        let reg = ProviderRegistry::new(kinds(), [spec("builtin2", "builtin"), spec("a", "agent")]).unwrap();
        assert!(reg.get("builtin2").is_some());
        assert_eq!(reg.capabilities("a").map(|c| c.steer), Some(true), "capabilities come from the kind");
    }

    #[test]
    fn known_programs_are_discovered_on_the_search_path_unless_configured() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        for name in ["codex", "gemini", "not-an-agent"] {
            let path = dir.path().join(name);
            std::fs::write(&path, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let mine = ProviderSpec::new("gemini", "agent", Some("/usr/bin/false"), &[]);
        let reg = ProviderRegistry::with_discovery(kinds(), [mine], Some(dir.path().as_os_str().to_owned())).unwrap();
        let codex = reg.get("codex").unwrap();
        assert_eq!((codex.kind.as_str(), codex.origin), ("agent", ProviderOrigin::Discovered));
        assert_eq!(codex.args, ["app-server"]);
        assert_eq!(reg.get("gemini").unwrap().origin, ProviderOrigin::Config, "the config wins");
        assert!(reg.get("not-an-agent").is_none());
        assert_eq!(reg.resolve(&codex), Some(dir.path().join("codex")));
        // Present but not executable: not found.
        std::fs::remove_file(dir.path().join("codex")).unwrap();
        std::fs::write(dir.path().join("codex"), "").unwrap();
        let reg = ProviderRegistry::with_discovery(kinds(), [], Some(dir.path().as_os_str().to_owned())).unwrap();
        assert!(reg.get("codex").is_none());
    }

    #[test]
    fn state_dirs_come_from_the_config_or_the_kind() {
        let reg = ProviderRegistry::new(kinds(), []).unwrap();
        let mut codex = ProviderSpec::new("c", "agent", Some("/opt/bin/codex"), &[]);
        codex.env.insert("CODEX_HOME".into(), "/srv/codex-home".into());
        assert_eq!(reg.state_dirs(&codex), [PathBuf::from("/srv/codex-home")]);
        codex.env.insert("HOME".into(), "/home/u".into());
        codex.env.insert("CODEX_HOME".into(), String::new());
        // An empty CODEX_HOME is unset: the next candidate, unless the daemon has one.
        if std::env::var_os("CODEX_HOME").is_none() {
            assert_eq!(reg.state_dirs(&codex), [PathBuf::from("/home/u/.codex")]);
        }
        let mut gemini = ProviderSpec::new("g", "agent", Some("gemini"), &["--acp"]);
        gemini.env.insert("HOME".into(), "/home/u".into());
        assert_eq!(reg.state_dirs(&gemini), [PathBuf::from("/home/u/.gemini")]);
        gemini.state_dirs = vec!["$STATE/x".into(), "relative/ignored".into(), "$UNSET_BOSUN_VAR/y".into()];
        gemini.env.insert("STATE".into(), "/var/state".into());
        assert_eq!(reg.state_dirs(&gemini), [PathBuf::from("/var/state/x")], "configured dirs replace the defaults");
        assert!(reg.state_dirs(&spec("other", "agent")).is_empty());
    }

    #[test]
    fn a_module_adds_or_replaces_a_provider_at_runtime_but_never_the_config() {
        let reg = ProviderRegistry::new(kinds(), [spec("mine", "agent")]).unwrap();
        let module = ProviderSpec::new("added", "agent", Some("/opt/m/1.0.0/files/agent"), &[]);
        assert!(reg.check_module(&module).is_ok());
        assert_eq!(reg.register_module(module).unwrap(), None);
        assert_eq!(reg.get("added").unwrap().origin, ProviderOrigin::Module);
        assert!(reg.statuses().iter().any(|s| s.spec.name == "added"));
        let newer = ProviderSpec::new("added", "agent", Some("/opt/m/2.0.0/files/agent"), &[]);
        let replaced = reg.register_module(newer).unwrap().unwrap();
        assert_eq!(replaced.command.as_deref(), Some("/opt/m/1.0.0/files/agent"));
        assert_eq!(reg.get("added").unwrap().command.as_deref(), Some("/opt/m/2.0.0/files/agent"));
        for taken in [spec("mine", "agent"), spec("builtin", "builtin")] {
            let err = reg.register_module(taken.clone()).unwrap_err();
            assert!(matches!(err, RegistryError::Taken { .. }), "{err}");
            assert!(reg.check_module(&taken).is_err());
        }
        assert_eq!(reg.get("mine").unwrap().origin, ProviderOrigin::Config, "the config is untouched");
        let unknown = ProviderSpec::new("x", "pty", Some("/bin/true"), &[]);
        assert!(matches!(reg.check_module(&unknown), Err(RegistryError::UnknownKind { .. })));
    }

    #[test]
    fn health_follows_what_workers_report() {
        let missing = ProviderSpec::new("gone", "agent", Some("/nonexistent/agent"), &[]);
        let reg = ProviderRegistry::new(kinds(), [spec("a", "agent"), missing]).unwrap();
        let health = |name: &str| reg.statuses().into_iter().find(|s| s.spec.name == name).unwrap().health;
        assert_eq!(health("a"), ProviderHealth::Available);
        assert_eq!(health("gone"), ProviderHealth::Missing);
        assert_eq!(health("builtin"), ProviderHealth::Available);
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

    #[test]
    fn masks_keep_little_of_a_value_and_nothing_of_a_short_one() {
        assert_eq!(mask_secret("sk-0123456789abcdef"), "sk-\u{2026}cdef");
        assert_eq!(mask_secret("0123456789abcdef"), "\u{2026}cdef");
        // Too short for a dash prefix to leave enough hidden.
        assert_eq!(mask_secret("sk-12345abcd"), "\u{2026}abcd");
        assert_eq!(mask_secret("sk-123456abcd"), "sk-\u{2026}abcd");
        // A dash past the 4th character is no known prefix.
        assert_eq!(mask_secret("abcde-6789abcdef"), "\u{2026}cdef");
        for short in ["", "x", "sk-abc", "12345678901"] {
            assert_eq!(mask_secret(short), "\u{2026}", "{short:?}");
        }
        // Characters, not bytes: a multi-byte value is not cut mid-character.
        assert_eq!(mask_secret("ééééééééééééé1234"), "\u{2026}1234");
    }

    #[test]
    fn debug_of_a_spec_masks_env_values_but_shows_secret_references() {
        let mut spec = ProviderSpec::new("p", "agent", Some("agent"), &[]);
        spec.env.insert("INLINE".into(), "sk-inline-clear-value-1234".into());
        spec.env.insert("REF".into(), "secret:openai".into());
        let shown = format!("{spec:?}");
        assert!(!shown.contains("inline-clear-value"), "{shown}");
        assert!(shown.contains("sk-\u{2026}1234"), "{shown}");
        assert!(shown.contains("secret:openai"), "{shown}");
    }

    #[derive(Debug)]
    struct OneSecret;

    impl SecretResolver for OneSecret {
        fn resolve(&self, name: &str) -> Result<String, String> {
            if name == "openai" {
                Ok("clear-value".into())
            } else {
                Err(format!("no secret {name:?}"))
            }
        }
    }

    #[test]
    fn secret_references_are_resolved_only_with_a_resolver_that_knows_them() {
        let kinds: Vec<Arc<dyn ProviderFactory>> = vec![Arc::new(TestKind { kind: "agent", program: true })];
        let mut spec = ProviderSpec::new("p", "agent", Some("agent"), &[]);
        spec.env.insert("KEY".into(), "secret:openai".into());
        spec.env.insert("PLAIN".into(), "as-is".into());
        let without = ProviderRegistry::new(kinds.clone(), [spec.clone()]).unwrap();
        let err = without.resolve_secrets(&mut spec.clone()).unwrap_err();
        assert!(matches!(err, RegistryError::Secret { .. }), "{err}");

        let registry = ProviderRegistry::new(kinds, [spec.clone()]).unwrap().with_secrets(Arc::new(OneSecret));
        let mut resolved = spec.clone();
        registry.resolve_secrets(&mut resolved).unwrap();
        assert_eq!(resolved.env["KEY"], "clear-value");
        assert_eq!(resolved.env["PLAIN"], "as-is");
        // The registry keeps the reference, not the value.
        assert_eq!(registry.get("p").unwrap().env["KEY"], "secret:openai");

        spec.env.insert("OTHER".into(), "secret:missing".into());
        let err = registry.resolve_secrets(&mut spec).unwrap_err().to_string();
        assert!(err.contains("OTHER") && err.contains("missing"), "{err}");
    }
}
