//! The module file: a plain tar holding `manifest.json` (canonical),
//! `manifest.sig` (base64 Ed25519 signature) and each artifact under
//! `files/`. Nothing else may be in it.

use crate::error::{ModuleError, Result};
use crate::keys::{key_id, Trust};
use crate::manifest::{check_relative_path, Artifact, Manifest, ModuleProvider, FORMAT};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer as _, SigningKey};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::Path;

pub const MANIFEST_FILE: &str = "manifest.json";
pub const SIGNATURE_FILE: &str = "manifest.sig";
pub const FILES_DIR: &str = "files";
/// The largest module accepted, file or download: an agent's binary fits.
pub const MAX_MODULE_BYTES: u64 = 256 * 1024 * 1024;
/// What `module.toml` is called in the directory `pack` reads.
pub const SPEC_FILE: &str = "module.toml";

/// `module.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModuleSpec {
    pub name: String,
    pub version: String,
    pub min_bosun: String,
    pub provider: ModuleProvider,
}

/// A module whose signature, expiry, compatibility and artifacts have all
/// been checked: the only thing the install layout takes.
#[derive(Debug, Clone)]
pub struct VerifiedModule {
    pub manifest: Manifest,
    /// `manifest.json` as stored: canonical.
    pub manifest_json: String,
    /// `manifest.sig` as stored: base64.
    pub signature: String,
    /// Each artifact's contents, by path.
    pub files: BTreeMap<String, Vec<u8>>,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Builds a module from `dir`: its `module.toml` and every other regular
/// file under it, signed by `key`, valid from `now` for `valid_for_secs`.
/// A symlink in `dir` is refused: what it points at is not the module's.
pub fn pack(dir: &Path, key: &SigningKey, now: i64, valid_for_secs: i64) -> Result<Vec<u8>> {
    let spec_path = dir.join(SPEC_FILE);
    let text = std::fs::read_to_string(&spec_path).map_err(ModuleError::io("reading", &spec_path))?;
    let spec: ModuleSpec =
        toml::from_str(&text).map_err(|e| ModuleError::BadModule(format!("{}: {e}", spec_path.display())))?;
    let mut files = BTreeMap::new();
    collect(dir, dir, &mut files)?;
    files.remove(SPEC_FILE);
    let artifacts = files
        .iter()
        .map(|(path, (bytes, executable))| Artifact {
            path: path.clone(),
            size: bytes.len() as u64,
            sha256: sha256_hex(bytes),
            executable: *executable,
        })
        .collect();
    let manifest = Manifest {
        format: FORMAT,
        name: spec.name,
        version: spec.version,
        min_bosun: spec.min_bosun,
        key_id: key_id(&key.verifying_key()),
        created_at: now,
        expires_at: now.saturating_add(valid_for_secs),
        provider: spec.provider,
        artifacts,
    };
    manifest.validate()?;
    let signature = BASE64.encode(key.sign(&manifest.signing_bytes()?).to_bytes());
    let mut builder = tar::Builder::new(Vec::new());
    let mut append = |path: &str, bytes: &[u8]| -> Result<()> {
        let mut header = tar::Header::new_ustar();
        header.set_size(bytes.len() as u64);
        // Fixed, so the same inputs pack to the same bytes; the mode that
        // counts is the manifest's `executable`.
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        builder
            .append_data(&mut header, path, bytes)
            .map_err(|e| ModuleError::BadModule(format!("writing {path} into the module: {e}")))
    };
    append(MANIFEST_FILE, manifest.canonical()?.as_bytes())?;
    append(SIGNATURE_FILE, signature.as_bytes())?;
    for (path, (bytes, _)) in &files {
        append(&format!("{FILES_DIR}/{path}"), bytes)?;
    }
    builder.into_inner().map_err(|e| ModuleError::BadModule(format!("finishing the module: {e}")))
}

/// Every regular file under `dir`, by its path relative to `root`, with
/// whether it is executable.
fn collect(root: &Path, dir: &Path, out: &mut BTreeMap<String, (Vec<u8>, bool)>) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let entries = std::fs::read_dir(dir).map_err(ModuleError::io("reading", dir))?;
    for entry in entries {
        let entry = entry.map_err(ModuleError::io("reading", dir))?;
        let path = entry.path();
        let meta = std::fs::symlink_metadata(&path).map_err(ModuleError::io("reading", &path))?;
        if meta.is_dir() {
            collect(root, &path, out)?;
        } else if meta.is_file() {
            let relative = path
                .strip_prefix(root)
                .ok()
                .and_then(|p| p.to_str())
                .ok_or_else(|| ModuleError::BadModule(format!("{}: not a UTF-8 path", path.display())))?
                .to_string();
            check_relative_path(&relative)?;
            let bytes = std::fs::read(&path).map_err(ModuleError::io("reading", &path))?;
            out.insert(relative, (bytes, meta.permissions().mode() & 0o111 != 0));
        } else {
            return Err(ModuleError::UnsafePath {
                path: path.display().to_string(),
                why: "not a regular file or directory (a symlink?)",
            });
        }
    }
    Ok(())
}

/// Opens and checks a module, in this order: the archive holds only
/// regular files at safe paths; the manifest parses and is valid; its key
/// is trusted; the signature verifies; it has not expired; this bosun is
/// recent enough; and every artifact is there, with its size and hash, and
/// nothing else. Nothing is written anywhere.
pub fn open(bytes: &[u8], trust: &Trust, now: i64, bosun_version: &str) -> Result<VerifiedModule> {
    if bytes.len() as u64 > MAX_MODULE_BYTES {
        return Err(ModuleError::TooLarge { limit: MAX_MODULE_BYTES });
    }
    let mut archive = tar::Archive::new(bytes);
    let mut manifest_json = None;
    let mut signature = None;
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let entries = archive.entries().map_err(|e| ModuleError::BadModule(format!("not a tar archive: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| ModuleError::BadModule(format!("reading the archive: {e}")))?;
        let raw = entry.path_bytes();
        let path = std::str::from_utf8(&raw)
            .map_err(|_| ModuleError::BadModule("an entry's path is not UTF-8".into()))?
            .to_string();
        check_relative_path(&path)?;
        let kind = entry.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            return Err(ModuleError::UnsafePath { path, why: "a link (modules hold regular files only)" });
        }
        if !kind.is_file() {
            return Err(ModuleError::BadModule(format!("entry {path:?} is not a regular file")));
        }
        let mut contents = Vec::new();
        entry
            .read_to_end(&mut contents)
            .map_err(|e| ModuleError::BadModule(format!("reading {path:?} from the archive: {e}")))?;
        let duplicate = match path.as_str() {
            MANIFEST_FILE => manifest_json.replace(contents).is_some(),
            SIGNATURE_FILE => signature.replace(contents).is_some(),
            other => match other.strip_prefix("files/") {
                Some(artifact) => files.insert(artifact.to_string(), contents).is_some(),
                None => return Err(ModuleError::BadModule(format!("unexpected entry {path:?}"))),
            },
        };
        if duplicate {
            return Err(ModuleError::BadModule(format!("entry {path:?} appears twice")));
        }
    }
    let manifest_json = manifest_json.ok_or_else(|| ModuleError::BadModule(format!("no {MANIFEST_FILE}")))?;
    let signature = signature.ok_or_else(|| ModuleError::BadModule(format!("no {SIGNATURE_FILE} (unsigned)")))?;
    let manifest: Manifest =
        serde_json::from_slice(&manifest_json).map_err(|e| ModuleError::BadModule(format!("{MANIFEST_FILE}: {e}")))?;
    manifest.validate()?;

    let public =
        trust.get(&manifest.key_id).ok_or_else(|| ModuleError::UnknownKey { key_id: manifest.key_id.clone() })?;
    let bad_signature = || ModuleError::BadSignature { key_id: manifest.key_id.clone() };
    let signature_text = String::from_utf8(signature).map_err(|_| bad_signature())?;
    let signature_bytes = BASE64.decode(signature_text.trim()).map_err(|_| bad_signature())?;
    let signature_bytes: [u8; 64] = signature_bytes.try_into().map_err(|_| bad_signature())?;
    // Strict: no malleable or small-order signatures.
    public
        .verify_strict(&manifest.signing_bytes()?, &Signature::from_bytes(&signature_bytes))
        .map_err(|_| bad_signature())?;

    if now >= manifest.expires_at {
        return Err(ModuleError::Expired { expires_at: timestamp(manifest.expires_at), now: timestamp(now) });
    }
    let running = semver::Version::parse(bosun_version)
        .map_err(|e| ModuleError::BadModule(format!("this bosun's version {bosun_version:?}: {e}")))?;
    let min =
        semver::Version::parse(&manifest.min_bosun).map_err(|e| ModuleError::BadModule(format!("min_bosun: {e}")))?;
    if running < min {
        return Err(ModuleError::Incompatible {
            name: manifest.name.clone(),
            version: manifest.version.clone(),
            min_bosun: manifest.min_bosun.clone(),
            running: bosun_version.to_string(),
        });
    }
    for artifact in &manifest.artifacts {
        let Some(contents) = files.get(&artifact.path) else {
            return Err(ModuleError::HashMismatch {
                path: artifact.path.clone(),
                what: "missing from the module".into(),
            });
        };
        if contents.len() as u64 != artifact.size {
            return Err(ModuleError::HashMismatch {
                path: artifact.path.clone(),
                what: format!("{} bytes, the manifest says {}", contents.len(), artifact.size),
            });
        }
        let actual = sha256_hex(contents);
        if actual != artifact.sha256 {
            return Err(ModuleError::HashMismatch {
                path: artifact.path.clone(),
                what: format!("sha256 {actual}, the manifest says {}", artifact.sha256),
            });
        }
    }
    if let Some(extra) = files.keys().find(|path| !manifest.artifacts.iter().any(|a| &a.path == *path)) {
        return Err(ModuleError::BadModule(format!("file {extra:?} is not in the manifest")));
    }
    let manifest_json = manifest.canonical()?;
    Ok(VerifiedModule { manifest, manifest_json, signature: signature_text.trim().to_string(), files })
}

/// Unix seconds as RFC 3339, for messages and listings.
pub fn timestamp(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| secs.to_string())
}
