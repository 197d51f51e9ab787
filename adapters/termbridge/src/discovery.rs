//! Every adapter built from one config, and what each finds on this machine.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::adapters::alacritty::{Alacritty, AlacrittyConfig};
use crate::adapters::kitty::{Kitty, KittyConfig};
use crate::adapters::konsole::{Konsole, KonsoleConfig};
use crate::adapters::tilix::{Tilix, TilixConfig};
use crate::adapters::tmux::{Tmux, TmuxConfig};
use crate::adapters::wezterm::{Wezterm, WeztermConfig};
use crate::control::{Discovery, TerminalControl, TerminalKind};
use crate::runner::IpcConfig;

/// The bridge's whole config. `ipc` applies to every adapter (the adapters'
/// own `ipc` fields are for building one by hand).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TermBridgeConfig {
    pub ipc: IpcConfig,
    pub tmux: TmuxConfig,
    pub kitty: KittyConfig,
    pub wezterm: WeztermConfig,
    pub alacritty: AlacrittyConfig,
    pub konsole: KonsoleConfig,
    pub tilix: TilixConfig,
}

/// Every adapter, typed (for what only one offers, e.g. tmux's output
/// stream) and as the port.
pub struct TermBridge {
    pub tmux: Arc<Tmux>,
    pub kitty: Arc<Kitty>,
    pub wezterm: Arc<Wezterm>,
    pub alacritty: Arc<Alacritty>,
    pub konsole: Arc<Konsole>,
    pub tilix: Arc<Tilix>,
}

impl TermBridge {
    pub fn all(&self) -> Vec<Arc<dyn TerminalControl>> {
        TerminalKind::ALL.iter().map(|&kind| self.get(kind)).collect()
    }

    pub fn get(&self, kind: TerminalKind) -> Arc<dyn TerminalControl> {
        match kind {
            TerminalKind::Tmux => self.tmux.clone(),
            TerminalKind::Kitty => self.kitty.clone(),
            TerminalKind::Wezterm => self.wezterm.clone(),
            TerminalKind::Alacritty => self.alacritty.clone(),
            TerminalKind::Konsole => self.konsole.clone(),
            TerminalKind::Tilix => self.tilix.clone(),
        }
    }
}

pub fn build_all(config: &TermBridgeConfig) -> TermBridge {
    let ipc = config.ipc;
    TermBridge {
        tmux: Arc::new(Tmux::new(TmuxConfig { ipc, ..config.tmux.clone() })),
        kitty: Arc::new(Kitty::new(KittyConfig { ipc, ..config.kitty.clone() })),
        wezterm: Arc::new(Wezterm::new(WeztermConfig { ipc, ..config.wezterm.clone() })),
        alacritty: Arc::new(Alacritty::new(AlacrittyConfig { ipc, ..config.alacritty.clone() })),
        konsole: Arc::new(Konsole::new(KonsoleConfig { ipc, ..config.konsole.clone() })),
        tilix: Arc::new(Tilix::new(TilixConfig { ipc, ..config.tilix.clone() })),
    }
}

/// Discovers every terminal at once; one slow terminal costs its own
/// timeout, not the sum.
pub async fn discover_all(bridge: &TermBridge) -> Vec<(TerminalKind, Discovery)> {
    let adapters = bridge.all();
    let found = futures::future::join_all(adapters.iter().map(|a| a.discover())).await;
    adapters.iter().map(|a| a.kind()).zip(found).collect()
}
