//! What every actor of one daemon shares: the store, the providers, and the
//! restart counters that `/health` reports.

use crate::names;
use bosun_driver::ProviderRegistry;
use bosun_state::Store;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

#[derive(Clone)]
pub struct Context {
    pub store: Store,
    pub providers: Arc<ProviderRegistry>,
    pub settings: Settings,
    pub health: Arc<HealthCounters>,
    /// What `GET /metrics` shows (crate::metrics).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The `pty` terminals running now: their processes outlive a restart
    /// of their binding's actor, which finds them here again.
    pub terminals: Arc<crate::terminals::LiveTerminals>,
    /// Every terminal emulator's adapter, built once from `[termbridge]`.
    pub bridge: Arc<bosun_termbridge::TermBridge>,
}

/// Daemon-wide settings the actors need.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Whether `Crash` messages (from `/api/v1/debug/crash`) are obeyed.
    pub fault_injection: bool,
    /// Where a session runs when its creator names no `cwd`.
    pub default_cwd: PathBuf,
    /// The daemon's data dir: bare clones go in `repos/`, session worktrees in `worktrees/`.
    pub data_dir: PathBuf,
    /// The container engine `"sandbox":"docker"` sessions run in.
    pub docker: Option<Arc<dyn bosun_isolation::ShellHost>>,
    /// Its `[docker]` config, for the containers of those sessions' terminals.
    pub docker_config: Option<bosun_isolation::container::DockerConfig>,
    /// Whether loopback clients skip authentication (`[auth] require =
    /// "remote"`): a jail that shares the host's network could then drive
    /// the daemon's own API.
    pub loopback_trusted: bool,
    /// The address the daemon listens on, for `bosun doctor`.
    pub listen: Option<std::net::SocketAddr>,
    /// Whether the config names a proxy in front of the daemon
    /// (`trusted_proxies` or `allowed_origins`), for `bosun doctor`.
    pub proxied: bool,
    /// Where a token for pushing over HTTPS comes from (`[git]`).
    pub git: GitSettings,
    /// What a provider's tokens cost (`[prices.NAME]`), for workflow budgets.
    pub prices: Prices,
    /// `[termbridge]`: terminals.
    pub termbridge: TermBridgeSettings,
    /// `[modules] trusted_keys`: the keys a module must be signed with to
    /// be installed (docs/MODULES.md).
    pub module_trust: bosun_modules::Trust,
}

/// `[termbridge]` in the daemon's config (docs/TERMINALS.md).
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TermBridgeSettings {
    /// What a binding with no session may do unasked: `plan-only` (the
    /// default) asks before a command is started or text that would run
    /// something is sent.
    pub policy: bosun_proto::Policy,
    /// How much of each `pty` terminal's output is kept, in KiB.
    pub scrollback_kb: u64,
    /// The largest clipboard payload read or written, in KiB.
    pub max_clipboard_kb: u32,
    /// Terminals that need a user's consent before they are controlled,
    /// besides those that always do (kitty: its socket grants everything).
    pub opt_in: Vec<bosun_proto::TerminalKind>,
    /// Whether clients may read the OS clipboard (`GET
    /// /api/v1/terminals/clipboard`): off unless turned on, since what a
    /// person copied (a password, say) is not an agent's to read.
    pub clipboard_read: bool,
    /// `[termbridge.ipc]`: `timeout` (ms, 3000) and `retries` (at most 2)
    /// for every call to a terminal.
    pub ipc: bosun_termbridge::IpcConfig,
    pub tmux: bosun_termbridge::adapters::tmux::TmuxConfig,
    pub kitty: bosun_termbridge::adapters::kitty::KittyConfig,
    pub wezterm: bosun_termbridge::adapters::wezterm::WeztermConfig,
    pub alacritty: bosun_termbridge::adapters::alacritty::AlacrittyConfig,
    pub konsole: bosun_termbridge::adapters::konsole::KonsoleConfig,
    pub tilix: bosun_termbridge::adapters::tilix::TilixConfig,
}

impl TermBridgeSettings {
    /// What the adapters are built from.
    pub fn bridge_config(&self) -> bosun_termbridge::TermBridgeConfig {
        bosun_termbridge::TermBridgeConfig {
            ipc: self.ipc,
            tmux: self.tmux.clone(),
            kitty: self.kitty.clone(),
            wezterm: self.wezterm.clone(),
            alacritty: self.alacritty.clone(),
            konsole: self.konsole.clone(),
            tilix: self.tilix.clone(),
        }
    }
}

impl Default for TermBridgeSettings {
    fn default() -> Self {
        TermBridgeSettings {
            policy: bosun_proto::Policy::PlanOnly,
            scrollback_kb: 8 * 1024,
            max_clipboard_kb: 1024,
            opt_in: Vec::new(),
            clipboard_read: false,
            ipc: Default::default(),
            tmux: Default::default(),
            kitty: Default::default(),
            wezterm: Default::default(),
            alacritty: Default::default(),
            konsole: Default::default(),
            tilix: Default::default(),
        }
    }
}

/// `[prices.NAME]`: a provider's price per million tokens, in whatever
/// currency the operator keeps accounts in (a workflow's `budget.cost` is
/// in the same one). A provider with no price costs nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// Per million input tokens.
    pub input: f64,
    /// Per million output tokens.
    pub output: f64,
}

pub type Prices = BTreeMap<String, Price>;

/// What `usage` on `provider` cost.
pub fn cost_of(prices: &Prices, provider: &str, usage: bosun_proto::Usage) -> f64 {
    prices
        .get(provider)
        .map_or(0.0, |p| (usage.input_tokens as f64 * p.input + usage.output_tokens as f64 * p.output) / 1_000_000.0)
}

/// `[git]` in the daemon's config: the token is read from the daemon's
/// environment when a push needs it, never from a file.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitSettings {
    /// The environment variable holding the token (`GITHUB_TOKEN`, say).
    #[serde(default)]
    pub token_env: Option<String>,
    /// The username sent with it (default `x-access-token`, which GitHub
    /// and Gitea accept with a token).
    #[serde(default)]
    pub username: Option<String>,
}

impl GitSettings {
    /// The credentials to push with, if a token is configured and set.
    pub fn credentials(&self) -> Option<bosun_workspace::PushCredentials> {
        let token = std::env::var(self.token_env.as_deref()?).ok().filter(|t| !t.is_empty())?;
        let username = self.username.clone().unwrap_or_else(|| "x-access-token".to_string());
        Some(bosun_workspace::PushCredentials { username, token })
    }
}

impl Context {
    pub fn new(store: Store, providers: ProviderRegistry, settings: Settings) -> Context {
        let settings_bridge = settings.termbridge.bridge_config();
        let metrics = Arc::new(crate::metrics::Metrics::new(store.metrics()));
        Context {
            metrics,
            store,
            providers: Arc::new(providers),
            settings,
            health: Arc::new(HealthCounters::new()),
            terminals: Arc::default(),
            bridge: Arc::new(bosun_termbridge::build_all(&settings_bridge)),
        }
    }

    /// The hook every supervisor calls when it restarts a child: counts the
    /// restart by actor kind and records an `actor:restarted` event.
    pub fn restart_hook(&self) -> Arc<dyn Fn(&str) + Send + Sync> {
        let health = self.health.clone();
        let metrics = self.metrics.clone();
        Arc::new(move |child: &str| {
            health.record_restart(names::kind_of(child));
            let kind = crate::metrics::KindLabel { kind: names::kind_of(child).to_string() };
            metrics.actor_restarts.get_or_create(&kind).inc();
            crate::diagnostics::report_restart(child);
        })
    }
}

/// Restart counts by actor kind, and when the daemon started.
pub struct HealthCounters {
    started: Instant,
    restarts: Mutex<BTreeMap<String, u64>>,
}

impl HealthCounters {
    fn new() -> HealthCounters {
        let kinds = [
            "root",
            "front",
            "sessions",
            "session",
            "turn",
            "provider",
            "providers",
            "diagnostics",
            "auth",
            "workflows",
            "workflow",
            "tasks",
            "terminals",
            "binding",
        ];
        HealthCounters {
            started: Instant::now(),
            restarts: Mutex::new(kinds.iter().map(|k| (k.to_string(), 0)).collect()),
        }
    }

    pub fn record_restart(&self, kind: &str) {
        let mut map = self.restarts.lock().unwrap_or_else(|p| p.into_inner());
        *map.entry(kind.to_string()).or_insert(0) += 1;
    }

    pub fn restarts(&self) -> BTreeMap<String, u64> {
        self.restarts.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn uptime_s(&self) -> u64 {
        self.started.elapsed().as_secs()
    }
}

/// A short random id with a kind prefix: `s_` sessions, `t_` turns.
pub fn new_id(prefix: &str) -> String {
    let hex = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}{}", &hex[..12])
}

/// A stable id derived from parts, for records that must be found again from
/// the same inputs (an approval re-asked by a resumed provider).
pub fn derived_id(prefix: &str, parts: &[&str]) -> String {
    // FNV-1a, 64 bits: stable across builds and platforms, unlike std's hasher.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in part.bytes().chain(std::iter::once(0u8)) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    format!("{prefix}{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        let a = new_id("s_");
        assert_eq!(a.len(), 14);
        assert_ne!(a, new_id("s_"));
        assert_eq!(derived_id("a_", &["t1", "r1"]), derived_id("a_", &["t1", "r1"]));
        assert_ne!(derived_id("a_", &["t1", "r1"]), derived_id("a_", &["t1r", "1"]));
    }
}
