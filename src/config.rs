//! The daemon's configuration: a TOML file, overridden by command-line flags.

use anyhow::Context as _;
use bosun_actors::GitSettings;
use bosun_driver::{ProviderFactory, ProviderSpec};
use bosun_isolation::container::DockerConfig;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:7878";

/// What a config file may say. Unknown keys are refused by name.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub log_format: Option<LogFormat>,
    /// Whether known agents (codex, codex-acp, claude-agent-acp, gemini) found
    /// on `PATH` are offered as providers (default true).
    pub discover_agents: Option<bool>,
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderSpec>,
    #[serde(default)]
    pub auth: AuthConfig,
    /// `[server]`: connection limits and timeouts (docs/SECURITY.md).
    #[serde(default)]
    pub server: ServerConfig,
    /// `[docker]`: the container engine `"sandbox":"docker"` sessions run in.
    pub docker: Option<DockerConfig>,
    /// `[git]`: credentials for pushing session branches.
    #[serde(default)]
    pub git: GitSettings,
    /// `[prices.NAME]`: cost per million tokens, for workflow budgets.
    #[serde(default)]
    pub prices: bosun_actors::Prices,
    /// `[termbridge]`: terminal control (docs/TERMINALS.md).
    #[serde(default)]
    pub termbridge: bosun_actors::TermBridgeSettings,
    /// `[modules]`: which keys signed provider modules may be signed with
    /// (docs/MODULES.md).
    #[serde(default)]
    pub modules: ModulesConfig,
    /// `[metrics]`: `GET /metrics` on a listener of its own.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// `[logs]`: the rotated log files under `<data_dir>/logs/`.
    #[serde(default)]
    pub logs: LogsConfig,
}

/// `[logs]`: `core.log` and `providers/<name>.log` under `<data_dir>/logs/`,
/// each rotated when it passes `max_bytes`, keeping `keep` old files
/// (`core.log.1` is the newest).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogsConfig {
    /// Write the files at all (default true; stderr is logged to either way).
    pub files: Option<bool>,
    /// Default 10 MiB; at least 1 KiB.
    pub max_bytes: Option<usize>,
    /// Rotated files kept besides the current one (default 5; at least 1).
    pub keep: Option<usize>,
}

impl LogsConfig {
    pub const DEFAULT_MAX_BYTES: usize = 10 * 1024 * 1024;
    pub const DEFAULT_KEEP: usize = 5;
    const MIN_MAX_BYTES: usize = 1024;

    pub fn files(&self) -> bool {
        self.files.unwrap_or(true)
    }

    pub fn max_bytes(&self) -> usize {
        self.max_bytes.unwrap_or(Self::DEFAULT_MAX_BYTES)
    }

    pub fn keep(&self) -> usize {
        self.keep.unwrap_or(Self::DEFAULT_KEEP)
    }

    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.max_bytes.is_some_and(|n| n < Self::MIN_MAX_BYTES) {
            problems.push(format!("[logs] max_bytes must be at least {}", Self::MIN_MAX_BYTES));
        }
        if self.keep == Some(0) {
            problems.push("[logs] keep must be at least 1".to_string());
        }
        problems
    }
}

/// `[metrics]` (docs/PROTOCOL.md, "Metrics").
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// A second listener that serves only `GET /metrics`, without a token,
    /// for a Prometheus on the same host; loopback addresses only, since it
    /// asks for nothing. The main listener serves `/metrics` behind the
    /// API's gate either way.
    pub listen: Option<SocketAddr>,
}

impl MetricsConfig {
    pub fn problems(&self) -> Vec<String> {
        match self.listen {
            Some(addr) if !addr.ip().is_loopback() => vec![format!(
                "[metrics] listen must be a loopback address (127.0.0.1, ::1): it serves without a token; got {addr}"
            )],
            _ => Vec::new(),
        }
    }
}

/// `[modules]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModulesConfig {
    /// `[{ id = "..", public_key = ".." }]`: several, so keys can rotate.
    #[serde(default)]
    pub trusted_keys: Vec<bosun_modules::TrustedKey>,
}

impl ModulesConfig {
    pub fn trust(&self) -> anyhow::Result<bosun_modules::Trust> {
        bosun_modules::Trust::new(&self.trusted_keys).context("[modules] trusted_keys")
    }
}

/// `[auth]`: who needs a token (docs/SECURITY.md).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    #[serde(default)]
    pub require: AuthRequire,
    /// Origins allowed to open `/ws` besides the daemon's own
    /// (`https://bosun.example.ts.net`, say, behind a TLS proxy).
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Reverse proxies (addresses or CIDR blocks) believed about the client
    /// they forward for (`X-Forwarded-For`, `Forwarded: for=`), so the limit
    /// on failed attempts counts that client rather than the proxy. Their
    /// requests are still remote.
    #[serde(default)]
    pub trusted_proxies: Vec<crate::proxy::Cidr>,
}

/// `[server]`: how many connections the daemon holds and how long it waits
/// on them (docs/SECURITY.md, "Connections").
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Most connections open at once, HTTP and WebSocket. Default, and upper
    /// bound: the open-file limit less headroom for the store, agents and pipes.
    pub max_connections: Option<usize>,
    /// How long a client may take to send a request's head (default 10 s):
    /// from the connection's start, or from the first byte of a later request.
    pub header_timeout_secs: Option<u64>,
    /// How long a kept-alive connection may wait between requests (default 60 s).
    pub idle_timeout_secs: Option<u64>,
}

impl ServerConfig {
    pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

    pub fn header_timeout(&self) -> Duration {
        self.header_timeout_secs.map(Duration::from_secs).unwrap_or(Self::DEFAULT_HEADER_TIMEOUT)
    }

    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout_secs.map(Duration::from_secs).unwrap_or(Self::DEFAULT_IDLE_TIMEOUT)
    }

    /// Values that would make the daemon unreachable, one line each.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.max_connections == Some(0) {
            problems.push("[server] max_connections must be at least 1".to_string());
        }
        for (key, value) in
            [("header_timeout_secs", self.header_timeout_secs), ("idle_timeout_secs", self.idle_timeout_secs)]
        {
            if value == Some(0) {
                problems.push(format!("[server] {key} must be at least 1"));
            }
        }
        problems
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthRequire {
    /// Every client except a loopback one (127.0.0.0/8, ::1) needs a token.
    #[default]
    Remote,
    /// Every client needs a token, loopback too.
    Always,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Every problem found in a config file, listed together so that one run
/// tells the user all there is to fix. The daemon starts nothing with one.
#[derive(Debug)]
pub struct ConfigErrors {
    pub path: PathBuf,
    pub problems: Vec<String>,
}

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.problems.len();
        write!(f, "config file {} has {n} problem{}:", self.path.display(), if n == 1 { "" } else { "s" })?;
        for problem in &self.problems {
            write!(f, "\n  - {problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl FileConfig {
    /// Reads and parses `path`. Unknown keys and malformed values are
    /// refused here (the parser stops at the first); what needs the rest of
    /// the daemon to judge is [`FileConfig::check`]'s.
    pub fn load(path: &Path) -> anyhow::Result<FileConfig> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading config file {}", path.display()))?;
        let mut config: FileConfig = toml::from_str(&text)
            .map_err(|e| ConfigErrors { path: path.to_path_buf(), problems: vec![e.to_string().trim().to_string()] })?;
        for (name, spec) in config.providers.iter_mut() {
            spec.name = name.clone();
        }
        Ok(config)
    }

    /// Checks what a parser cannot: limits, provider kinds and names, env
    /// names, `secret:` references against the `secrets` the data dir
    /// has, origins. Every problem is reported, not only the first.
    pub fn check(
        &self,
        path: &Path,
        kinds: &[Arc<dyn ProviderFactory>],
        secrets: &[String],
    ) -> Result<(), ConfigErrors> {
        let mut problems = self.server.problems();
        problems.extend(self.metrics.problems());
        problems.extend(self.logs.problems());
        // A key that is not what its id says is a mistake to hear of now,
        // not when the first module is refused.
        if let Err(e) = self.modules.trust() {
            problems.push(format!("{e:#}"));
        }
        let known_kinds: Vec<&str> = kinds.iter().map(|k| k.kind()).collect();
        for (name, spec) in &self.providers {
            let at = format!("[providers.{name}]");
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                problems.push(format!("{at}: names may only use letters, digits, '-' and '_'"));
            }
            match kinds.iter().find(|k| k.kind() == spec.kind) {
                None => problems.push(format!(
                    "{at}: there is no provider kind `{}` (known: {})",
                    spec.kind,
                    known_kinds.join(", ")
                )),
                Some(kind) if kind.runs_program() && spec.command.as_deref().is_none_or(|c| c.trim().is_empty()) => {
                    problems.push(format!("{at}: kind `{}` needs a `command`", spec.kind))
                }
                Some(_) => {}
            }
            for (key, value) in [
                ("startup_timeout_secs", spec.startup_timeout_secs),
                ("silence_timeout_secs", spec.silence_timeout_secs),
                ("command_timeout_secs", spec.command_timeout_secs),
            ] {
                if value == Some(0) {
                    problems.push(format!("{at}: {key} must be at least 1"));
                }
            }
            for (var, value) in &spec.env {
                if var.is_empty() || var.contains('=') || var.contains('\0') {
                    problems.push(format!("{at}: env {var:?} is not a name an environment variable can have"));
                }
                if value.contains('\0') {
                    problems.push(format!("{at}: env {var}'s value holds a NUL byte"));
                }
                let Some(secret) = bosun_driver::secret_ref(value) else { continue };
                if let Err(e) = crate::secrets::check_name(secret) {
                    problems.push(format!("{at}: env {var}: {e}"));
                } else if !secrets.iter().any(|s| s == secret) {
                    problems.push(format!(
                        "{at}: env {var} names secret {secret:?}, which this data dir does not have (bosun secrets set {secret})"
                    ));
                }
            }
        }
        for origin in &self.auth.allowed_origins {
            let host = origin.strip_prefix("https://").or_else(|| origin.strip_prefix("http://"));
            let host = host.map(|h| h.trim_end_matches('/'));
            if host.is_none_or(|h| h.is_empty() || h.contains('/')) {
                problems.push(format!(
                    "[auth] allowed_origins: {origin:?} is not an origin (http:// or https://, a host and maybe a port, no path)"
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors { path: path.to_path_buf(), problems })
        }
    }
}

/// Everything `bosun serve` runs with, once file and flags are merged.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub providers: Vec<ProviderSpec>,
    /// Offer the known agents found on `PATH` too.
    pub discover_agents: bool,
    pub fault_injection: bool,
    pub log_format: LogFormat,
    /// Overrides the store's live fan-out capacity.
    pub live_capacity: Option<usize>,
    pub auth: AuthConfig,
    pub server: ServerConfig,
    pub docker: Option<DockerConfig>,
    pub git: GitSettings,
    pub prices: bosun_actors::Prices,
    pub termbridge: bosun_actors::TermBridgeSettings,
    pub module_trust: bosun_modules::Trust,
    pub metrics: MetricsConfig,
    pub logs: LogsConfig,
}

/// `$XDG_DATA_HOME/bosun`, else `~/.local/share/bosun`.
pub fn default_data_dir() -> PathBuf {
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(xdg).join("bosun");
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    home.join(".local").join("share").join("bosun")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_providers_and_refuses_unknown_keys() {
        let config: FileConfig = toml::from_str(
            r#"
            listen = "127.0.0.1:9000"
            [providers.mydemo]
            kind = "demo"
            "#,
        )
        .unwrap();
        assert_eq!(config.listen, Some("127.0.0.1:9000".parse().unwrap()));
        assert!(config.providers.contains_key("mydemo"));
        let err = toml::from_str::<FileConfig>("lisen = \"x\"").unwrap_err();
        assert!(err.to_string().contains("lisen"), "{err}");
        // A kind is checked against the registered ones when the daemon
        // starts (tests/cli.rs), not here.
        let err = toml::from_str::<FileConfig>("[providers.x]\nkind = \"demo\"\ncomand = \"x\"").unwrap_err();
        assert!(err.to_string().contains("comand"), "{err}");
    }

    #[test]
    fn parses_the_auth_section() {
        assert_eq!(FileConfig::default().auth.require, AuthRequire::Remote);
        let config: FileConfig =
            toml::from_str("[auth]\nrequire = \"always\"\nallowed_origins = [\"https://x\"]").unwrap();
        assert_eq!(config.auth.require, AuthRequire::Always);
        assert_eq!(config.auth.allowed_origins, vec!["https://x".to_string()]);
        assert!(toml::from_str::<FileConfig>("[auth]\nrequire = \"never\"").is_err());
    }

    #[test]
    fn trusted_proxies_parse_at_load_with_a_clear_error() {
        let config: FileConfig = toml::from_str("[auth]\ntrusted_proxies = [\"127.0.0.1\", \"10.0.0.0/8\"]").unwrap();
        assert_eq!(config.auth.trusted_proxies.len(), 2);
        assert!(config.auth.trusted_proxies[1].contains("10.9.8.7".parse().unwrap()));
        let err = toml::from_str::<FileConfig>("[auth]\ntrusted_proxies = [\"10.0.0.0/33\"]").unwrap_err();
        assert!(err.to_string().contains("10.0.0.0/33"), "{err}");
        let err = toml::from_str::<FileConfig>("[auth]\ntrusted_proxies = [\"proxy.local\"]").unwrap_err();
        assert!(err.to_string().contains("not an IP address or CIDR block"), "{err}");
    }

    #[test]
    fn module_keys_are_checked_with_the_rest_of_the_config() {
        let key = bosun_modules::generate().unwrap();
        let public = bosun_modules::encode_public(&key.verifying_key());
        let id = bosun_modules::key_id(&key.verifying_key());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bosun.toml");
        std::fs::write(&path, format!("[modules]\ntrusted_keys = [{{ id = \"{id}\", public_key = \"{public}\" }}]"))
            .unwrap();
        let config = FileConfig::load(&path).unwrap();
        assert!(config.modules.trust().unwrap().get(&id).is_some());
        // An id that is not the key's: refused now, naming the right one.
        std::fs::write(
            &path,
            format!("[modules]\ntrusted_keys = [{{ id = \"0000000000000000\", public_key = \"{public}\" }}]"),
        )
        .unwrap();
        let config = FileConfig::load(&path).unwrap();
        let err = config.check(&path, &crate::providers::kinds(), &[]).unwrap_err().to_string();
        assert!(err.contains(&id) && err.contains("trusted_keys"), "{err}");
        assert!(toml::from_str::<FileConfig>("[modules]\ntrusted_key = []").is_err());
    }

    #[test]
    fn the_metrics_listener_is_loopback_only() {
        let config: FileConfig = toml::from_str("[metrics]\nlisten = \"127.0.0.1:9464\"").unwrap();
        assert!(config.metrics.problems().is_empty());
        let config: FileConfig = toml::from_str("[metrics]\nlisten = \"[::1]:9464\"").unwrap();
        assert!(config.metrics.problems().is_empty());
        let config: FileConfig = toml::from_str("[metrics]\nlisten = \"0.0.0.0:9464\"").unwrap();
        let problems = config.metrics.problems();
        assert!(problems.len() == 1 && problems[0].contains("loopback"), "{problems:?}");
        let config: FileConfig = toml::from_str("[logs]\nmax_bytes = 10\nkeep = 0").unwrap();
        assert_eq!(config.logs.problems().len(), 2, "both said");
        assert!(toml::from_str::<FileConfig>("[metrics]\nlisen = \"127.0.0.1:1\"").is_err());
    }

    #[test]
    fn parses_the_server_section() {
        let config = FileConfig::default();
        assert_eq!(config.server.header_timeout(), ServerConfig::DEFAULT_HEADER_TIMEOUT);
        assert_eq!(config.server.idle_timeout(), ServerConfig::DEFAULT_IDLE_TIMEOUT);
        let config: FileConfig =
            toml::from_str("[server]\nmax_connections = 500\nheader_timeout_secs = 5\nidle_timeout_secs = 30").unwrap();
        assert_eq!(config.server.max_connections, Some(500));
        assert_eq!(config.server.header_timeout(), Duration::from_secs(5));
        assert_eq!(config.server.idle_timeout(), Duration::from_secs(30));
        assert!(config.server.problems().is_empty());
        let zero: FileConfig = toml::from_str("[server]\nidle_timeout_secs = 0\nmax_connections = 0").unwrap();
        assert_eq!(zero.server.problems().len(), 2, "{:?}", zero.server.problems());
        assert!(toml::from_str::<FileConfig>("[server]\nmax_conections = 5").is_err());
    }

    #[test]
    fn check_lists_every_problem_at_once() {
        let config: FileConfig = toml::from_str(
            r#"
            [server]
            header_timeout_secs = 0
            [auth]
            allowed_origins = ["https://ok.example", "ok.example", "https://x/path"]
            [providers.good]
            kind = "acp"
            command = "agent"
            env = { A = "secret:known", B = "plain" }
            [providers.nokind]
            kind = "nosuch"
            [providers.nocommand]
            kind = "acp"
            [providers.refs]
            kind = "acp"
            command = "agent"
            startup_timeout_secs = 0
            env = { KEY = "secret:unknown", BAD = "secret:a/b" }
            "#,
        )
        .unwrap();
        let kinds = crate::providers::kinds();
        let err = config.check(Path::new("c.toml"), &kinds, &["known".to_string()]).unwrap_err();
        let shown = err.to_string();
        for expected in [
            "header_timeout_secs",
            "\"ok.example\"",
            "https://x/path",
            "kind `nosuch`",
            "[providers.nocommand]: kind `acp` needs a `command`",
            "startup_timeout_secs",
            "secret \"unknown\"",
            "\"a/b\"",
        ] {
            assert!(shown.contains(expected), "{expected:?} missing from:\n{shown}");
        }
        assert_eq!(err.problems.len(), 8, "{shown}");
        assert!(!shown.contains("[providers.good]"), "{shown}");
        assert!(FileConfig::default().check(Path::new("c.toml"), &kinds, &[]).is_ok());
    }
}
