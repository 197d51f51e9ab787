//! Which providers a daemon can start sessions on: the built-in `demo`, plus
//! those the config file names.

use crate::agent::AgentDriver;
use crate::demo::DemoDriver;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

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
        matches!(self, ProviderKind::Demo)
    }
}

/// One `[providers.NAME]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSpec {
    #[serde(skip)]
    pub name: String,
    pub kind: ProviderKind,
    #[serde(default)]
    pub command: Option<String>,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("provider {name:?}: kind `{kind}` has no driver in this build yet (available: demo)")]
    KindUnavailable { name: String, kind: &'static str },
    #[error("provider {0:?}: names may only use letters, digits, '-' and '_'")]
    BadName(String),
    #[error("unknown provider {0:?}")]
    Unknown(String),
}

#[derive(Debug, Clone)]
pub struct ProviderRegistry {
    specs: BTreeMap<String, ProviderSpec>,
}

impl ProviderRegistry {
    /// The built-in providers plus `configured` ones (which may override them).
    pub fn new(configured: impl IntoIterator<Item = ProviderSpec>) -> Result<ProviderRegistry, RegistryError> {
        let mut specs = BTreeMap::new();
        let demo = ProviderSpec {
            name: "demo".into(),
            kind: ProviderKind::Demo,
            command: None,
            args: vec![],
            env: BTreeMap::new(),
        };
        specs.insert(demo.name.clone(), demo);
        for spec in configured {
            if spec.name.is_empty() || !spec.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                return Err(RegistryError::BadName(spec.name));
            }
            if !spec.kind.is_available() {
                return Err(RegistryError::KindUnavailable { name: spec.name, kind: spec.kind.as_str() });
            }
            specs.insert(spec.name.clone(), spec);
        }
        Ok(ProviderRegistry { specs })
    }

    pub fn get(&self, name: &str) -> Option<&ProviderSpec> {
        self.specs.get(name)
    }

    pub fn list(&self) -> impl Iterator<Item = &ProviderSpec> {
        self.specs.values()
    }

    /// A fresh driver for one session's provider worker.
    pub fn driver(&self, name: &str) -> Result<Box<dyn AgentDriver>, RegistryError> {
        let spec = self.get(name).ok_or_else(|| RegistryError::Unknown(name.to_string()))?;
        match spec.kind {
            ProviderKind::Demo => Ok(Box::new(DemoDriver::new())),
            kind => Err(RegistryError::KindUnavailable { name: spec.name.clone(), kind: kind.as_str() }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, kind: ProviderKind) -> ProviderSpec {
        ProviderSpec { name: name.into(), kind, command: None, args: vec![], env: BTreeMap::new() }
    }

    #[test]
    fn demo_is_built_in() {
        let reg = ProviderRegistry::new([]).unwrap();
        assert!(reg.get("demo").is_some());
        assert!(reg.driver("demo").is_ok());
        assert!(matches!(reg.driver("nope"), Err(RegistryError::Unknown(_))));
    }

    #[test]
    fn unavailable_kinds_and_bad_names_are_refused() {
        let err = ProviderRegistry::new([spec("codex", ProviderKind::Acp)]).unwrap_err();
        assert!(err.to_string().contains("`acp`"), "{err}");
        assert!(matches!(ProviderRegistry::new([spec("a b", ProviderKind::Demo)]), Err(RegistryError::BadName(_))));
        assert!(ProviderRegistry::new([spec("demo2", ProviderKind::Demo)]).unwrap().get("demo2").is_some());
    }
}
