//! The daemon's configuration: a TOML file, overridden by command-line flags.

use anyhow::Context as _;
use bosun_actors::GitSettings;
use bosun_driver::ProviderSpec;
use bosun_isolation::container::DockerConfig;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
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

    pub fn validate(&self) -> anyhow::Result<()> {
        if self.max_bytes.is_some_and(|n| n < Self::MIN_MAX_BYTES) {
            anyhow::bail!("[logs] max_bytes must be at least {}", Self::MIN_MAX_BYTES);
        }
        if self.keep == Some(0) {
            anyhow::bail!("[logs] keep must be at least 1");
        }
        Ok(())
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
    pub fn validate(&self) -> anyhow::Result<()> {
        if let Some(addr) = self.listen {
            if !addr.ip().is_loopback() {
                anyhow::bail!(
                    "[metrics] listen must be a loopback address (127.0.0.1, ::1): it serves without a token; got {addr}"
                );
            }
        }
        Ok(())
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

    /// Refuses values that would make the daemon unreachable.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.max_connections == Some(0) {
            anyhow::bail!("[server] max_connections must be at least 1");
        }
        if self.header_timeout_secs == Some(0) || self.idle_timeout_secs == Some(0) {
            anyhow::bail!("[server] header_timeout_secs and idle_timeout_secs must be at least 1");
        }
        Ok(())
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

impl FileConfig {
    pub fn load(path: &Path) -> anyhow::Result<FileConfig> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading config file {}", path.display()))?;
        let mut config: FileConfig =
            toml::from_str(&text).with_context(|| format!("parsing config file {}", path.display()))?;
        for (name, spec) in config.providers.iter_mut() {
            spec.name = name.clone();
        }
        config.server.validate().with_context(|| format!("in config file {}", path.display()))?;
        // A key that is not what its id says is a mistake to hear of now,
        // not when the first module is refused.
        config.modules.trust().with_context(|| format!("in config file {}", path.display()))?;
        config.metrics.validate().with_context(|| format!("in config file {}", path.display()))?;
        config.logs.validate().with_context(|| format!("in config file {}", path.display()))?;
        Ok(config)
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
    fn module_keys_are_checked_when_the_config_is_loaded() {
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
        let err = format!("{:#}", FileConfig::load(&path).unwrap_err());
        assert!(err.contains(&id) && err.contains("trusted_keys"), "{err}");
        assert!(toml::from_str::<FileConfig>("[modules]\ntrusted_key = []").is_err());
    }

    #[test]
    fn the_metrics_listener_is_loopback_only() {
        let config: FileConfig = toml::from_str("[metrics]\nlisten = \"127.0.0.1:9464\"").unwrap();
        assert!(config.metrics.validate().is_ok());
        let config: FileConfig = toml::from_str("[metrics]\nlisten = \"[::1]:9464\"").unwrap();
        assert!(config.metrics.validate().is_ok());
        let config: FileConfig = toml::from_str("[metrics]\nlisten = \"0.0.0.0:9464\"").unwrap();
        let err = config.metrics.validate().unwrap_err();
        assert!(err.to_string().contains("loopback"), "{err}");
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
        assert!(config.server.validate().is_ok());
        let zero: FileConfig = toml::from_str("[server]\nidle_timeout_secs = 0").unwrap();
        assert!(zero.server.validate().is_err());
        assert!(toml::from_str::<FileConfig>("[server]\nmax_conections = 5").is_err());
    }
}
