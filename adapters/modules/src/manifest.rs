//! The manifest: what a module is, and the canonical encoding its
//! signature covers (docs/MODULES.md).

use crate::error::{ModuleError, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Component, Path};

/// The manifest format this build reads and writes.
pub const FORMAT: u32 = 1;

/// Prefixed to the canonical manifest before signing, so a signature made
/// for a module can never be taken for a signature of anything else.
pub const SIGNING_CONTEXT: &[u8] = b"bosun-module-manifest-v1\n";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    /// The provider's name too: letters, digits, `-` and `_`.
    pub name: String,
    /// SemVer.
    pub version: String,
    /// The oldest bosun (SemVer) that may install it.
    pub min_bosun: String,
    /// The id of the key that signed it ([`crate::key_id`]).
    pub key_id: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds; refused from then on.
    pub expires_at: i64,
    /// The provider it registers, under [`Manifest::name`]: signed with the rest.
    pub provider: ModuleProvider,
    /// Sorted by path.
    pub artifacts: Vec<Artifact>,
}

/// The `[provider]` table of `module.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModuleProvider {
    /// A provider kind of the daemon (`acp`, `codex-app-server`...).
    pub kind: String,
    /// An artifact's path (relative to the module), or a bare program name
    /// looked up on `PATH` (`node`).
    pub command: String,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Artifact {
    /// Relative, `/`-separated, no `.` or `..`.
    pub path: String,
    pub size: u64,
    /// Lowercase hex.
    pub sha256: String,
    /// Unpacked with mode 0755 rather than 0644.
    pub executable: bool,
}

impl Manifest {
    pub fn version(&self) -> Result<semver::Version> {
        parse_version("version", &self.version)
    }

    /// The exact bytes the signature covers: [`SIGNING_CONTEXT`], then the
    /// canonical JSON of the manifest.
    pub fn signing_bytes(&self) -> Result<Vec<u8>> {
        let mut bytes = SIGNING_CONTEXT.to_vec();
        bytes.extend_from_slice(self.canonical()?.as_bytes());
        Ok(bytes)
    }

    /// The manifest as canonical JSON (see [`canonical_json`]): how it is
    /// stored in a module and on disk.
    pub fn canonical(&self) -> Result<String> {
        let value =
            serde_json::to_value(self).map_err(|e| ModuleError::BadModule(format!("encoding the manifest: {e}")))?;
        canonical_json(&value)
    }

    /// What must hold of any manifest, signed or not: a name that is safe as
    /// a directory and a provider name, versions that parse, safe and
    /// unique artifact paths, and a command that names an artifact when it
    /// is a path.
    pub fn validate(&self) -> Result<()> {
        if self.format != FORMAT {
            return Err(ModuleError::BadModule(format!("manifest format {} (this bosun reads {FORMAT})", self.format)));
        }
        check_name(&self.name)?;
        self.version()?;
        parse_version("min_bosun", &self.min_bosun)?;
        if self.expires_at <= self.created_at {
            return Err(ModuleError::BadModule("the manifest expires before it was created".into()));
        }
        let mut seen = std::collections::BTreeSet::new();
        for artifact in &self.artifacts {
            check_relative_path(&artifact.path)?;
            if !seen.insert(artifact.path.as_str()) {
                return Err(ModuleError::BadModule(format!("artifact {:?} is listed twice", artifact.path)));
            }
            if artifact.sha256.len() != 64
                || !artifact.sha256.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            {
                return Err(ModuleError::BadModule(format!(
                    "artifact {:?}: sha256 is not 64 lowercase hex digits",
                    artifact.path
                )));
            }
        }
        let command = self.provider.command.trim();
        if command.is_empty() {
            return Err(ModuleError::BadModule("[provider] command is empty".into()));
        }
        if command.contains('/') {
            check_relative_path(command)?;
            if !seen.contains(command) {
                return Err(ModuleError::BadModule(format!(
                    "[provider] command {command:?} is not one of the module's files"
                )));
            }
        }
        Ok(())
    }

    /// Whether the provider's command is one of the module's files (else a
    /// program on `PATH`).
    pub fn command_is_artifact(&self) -> bool {
        self.artifacts.iter().any(|a| a.path == self.provider.command)
    }
}

fn parse_version(field: &str, text: &str) -> Result<semver::Version> {
    semver::Version::parse(text).map_err(|e| ModuleError::BadModule(format!("{field} {text:?} is not SemVer: {e}")))
}

/// A module (and provider) name: what a config's `[providers.NAME]` may be.
pub fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 64 || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(ModuleError::BadModule(format!("name {name:?}: 1 to 64 letters, digits, '-' and '_'")));
    }
    Ok(())
}

/// A path inside a module: relative, `/`-separated, nothing but plain
/// names (so it cannot leave the directory it is unpacked in).
pub fn check_relative_path(path: &str) -> Result<()> {
    let unsafe_path = |why| Err(ModuleError::UnsafePath { path: path.to_string(), why });
    if path.is_empty() {
        return unsafe_path("empty");
    }
    if path.starts_with('/') {
        return unsafe_path("absolute");
    }
    if path.contains('\\') || path.contains('\0') {
        return unsafe_path("a backslash or NUL");
    }
    for part in path.split('/') {
        match part {
            "" => return unsafe_path("an empty component"),
            "." | ".." => return unsafe_path("a '.' or '..' component"),
            _ => {}
        }
    }
    if !Path::new(path).components().all(|c| matches!(c, Component::Normal(_))) {
        return unsafe_path("not a plain relative path");
    }
    Ok(())
}

/// JSON with every object's keys sorted (by their UTF-8 bytes), no
/// whitespace, strings escaped as serde_json escapes them, and integers
/// only: the same manifest always gives the same bytes, whatever wrote it.
pub fn canonical_json(value: &Value) -> Result<String> {
    let mut out = String::new();
    write_canonical(value, &mut out)?;
    Ok(out)
}

fn write_canonical(value: &Value, out: &mut String) -> Result<()> {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            // A float has more than one spelling; a manifest has none.
            if !(n.is_i64() || n.is_u64()) {
                return Err(ModuleError::BadModule(format!("number {n} is not an integer")));
            }
            out.push_str(&n.to_string());
        }
        Value::String(s) => out.push_str(&Value::String(s.clone()).to_string()),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out)?;
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(&map[key], out)?;
            }
            out.push('}');
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Manifest {
        Manifest {
            format: FORMAT,
            name: "my-agent".into(),
            version: "1.0.0".into(),
            min_bosun: "0.1.0".into(),
            key_id: "0123456789abcdef".into(),
            created_at: 1_700_000_000,
            expires_at: 1_800_000_000,
            provider: ModuleProvider {
                kind: "acp".into(),
                command: "bin/agent".into(),
                args: vec!["--acp".into()],
                env: BTreeMap::from([("B".into(), "2".into()), ("A".into(), "1".into())]),
            },
            artifacts: vec![Artifact { path: "bin/agent".into(), size: 3, sha256: "a".repeat(64), executable: true }],
        }
    }

    #[test]
    fn the_canonical_encoding_is_stable() {
        // Pinned: a change here breaks every signed module in the field.
        let expected = concat!(
            r#"{"artifacts":[{"executable":true,"path":"bin/agent","sha256":""#,
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            r#"","size":3}],"created_at":1700000000,"expires_at":1800000000,"format":1,"key_id":"0123456789abcdef","#,
            r#""min_bosun":"0.1.0","name":"my-agent","provider":{"args":["--acp"],"command":"bin/agent","#,
            r#""env":{"A":"1","B":"2"},"kind":"acp"},"version":"1.0.0"}"#
        );
        assert_eq!(sample().canonical().unwrap(), expected);
        // Key order and whitespace in the input do not matter.
        let shuffled: Value =
            serde_json::from_str(" { \"b\" : [1, {\"z\":null,\"a\":\"\\u00e9\\n\"}], \"a\": true }").unwrap();
        assert_eq!(canonical_json(&shuffled).unwrap(), "{\"a\":true,\"b\":[1,{\"a\":\"é\\n\",\"z\":null}]}");
        assert!(canonical_json(&serde_json::json!({"x": 1.5})).is_err(), "floats have no canonical form here");
    }

    #[test]
    fn manifests_are_validated() {
        assert!(sample().validate().is_ok());
        let mut m = sample();
        m.name = "../etc".into();
        assert_eq!(m.validate().unwrap_err().code(), "bad_module");
        let mut m = sample();
        m.version = "1.0".into();
        assert!(m.validate().unwrap_err().to_string().contains("SemVer"));
        let mut m = sample();
        m.provider.command = "bin/other".into();
        assert!(m.validate().unwrap_err().to_string().contains("not one of the module's files"));
        let mut m = sample();
        m.provider.command = "node".into();
        assert!(m.validate().is_ok(), "a bare name is a program on PATH");
        let mut m = sample();
        m.artifacts[0].path = "../bin/agent".into();
        assert_eq!(m.validate().unwrap_err().code(), "unsafe_path");
        let mut m = sample();
        m.artifacts.push(m.artifacts[0].clone());
        assert!(m.validate().unwrap_err().to_string().contains("twice"));
        let mut m = sample();
        m.expires_at = m.created_at;
        assert!(m.validate().is_err());
    }

    #[test]
    fn only_plain_relative_paths_are_safe() {
        for good in ["a", "bin/agent", "lib/x.y/z-1"] {
            assert!(check_relative_path(good).is_ok(), "{good}");
        }
        for bad in ["", "/etc/passwd", "../x", "a/../../x", "a/./b", "a//b", "a/", "a\\b", "..", "."] {
            assert_eq!(check_relative_path(bad).unwrap_err().code(), "unsafe_path", "{bad}");
        }
    }

    #[test]
    fn unknown_fields_are_refused() {
        let mut value = serde_json::to_value(sample()).unwrap();
        value["extra"] = Value::Bool(true);
        assert!(serde_json::from_value::<Manifest>(value).is_err());
    }
}
