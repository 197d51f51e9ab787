//! Installed modules on disk, under `<data_dir>/providers/`:
//!
//! ```text
//! <name>/<version>/manifest.json    the verified manifest (canonical)
//! <name>/<version>/manifest.sig
//! <name>/<version>/files/...        the artifacts
//! <name>/backup/<version>.manifest.json, <version>.manifest.sig
//! <name>/current  -> <version>      what the daemon registers
//! <name>/previous -> <version>      what `rollback` switches back to
//! ```
//!
//! A version is unpacked into a staging directory and renamed into place;
//! `current` and `previous` are symlinks replaced by renaming a new one over
//! them, so a reader sees either the old version or the new, never a mix.

use crate::archive::{VerifiedModule, FILES_DIR, MANIFEST_FILE, SIGNATURE_FILE};
use crate::error::{ModuleError, Result};
use crate::manifest::{check_name, Manifest};
use std::io::Write as _;
use std::path::{Path, PathBuf};

pub const CURRENT: &str = "current";
pub const PREVIOUS: &str = "previous";
pub const BACKUP_DIR: &str = "backup";

/// One installed module, as `module ls` shows it.
#[derive(Debug, Clone)]
pub struct Installed {
    pub manifest: Manifest,
    /// `<name>/<version>`: where its files are.
    pub dir: PathBuf,
    pub previous: Option<String>,
    /// Every version on disk, oldest first.
    pub versions: Vec<String>,
}

impl Installed {
    /// The program the provider starts: the artifact's absolute path, or
    /// the bare name to look up on `PATH`.
    pub fn command(&self) -> String {
        if self.manifest.command_is_artifact() {
            self.dir.join(FILES_DIR).join(&self.manifest.provider.command).display().to_string()
        } else {
            self.manifest.provider.command.clone()
        }
    }
}

/// What an install or a rollback did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Switched {
    pub name: String,
    pub version: String,
    /// The version that was current before, if any.
    pub replaced: Option<String>,
}

/// `<data_dir>/providers`.
#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    pub fn new(data_dir: &Path) -> Layout {
        Layout { root: data_dir.join("providers") }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn link(&self, name: &str, which: &str) -> Result<Option<String>> {
        let path = self.root.join(name).join(which);
        match std::fs::read_link(&path) {
            Ok(target) => Ok(target.to_str().map(str::to_string)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ModuleError::Io { context: "reading the link", path, source: e }),
        }
    }

    /// The current version of `name`, if it is installed.
    pub fn current_version(&self, name: &str) -> Result<Option<String>> {
        check_name(name)?;
        self.link(name, CURRENT)
    }

    fn read_manifest(&self, name: &str, version: &str) -> Result<Manifest> {
        let path = self.root.join(name).join(version).join(MANIFEST_FILE);
        let bytes = std::fs::read(&path).map_err(ModuleError::io("reading", &path))?;
        serde_json::from_slice(&bytes).map_err(|e| ModuleError::BadModule(format!("{}: {e}", path.display())))
    }

    pub fn installed(&self, name: &str) -> Result<Option<Installed>> {
        let Some(version) = self.current_version(name)? else { return Ok(None) };
        let manifest = self.read_manifest(name, &version)?;
        let mut versions: Vec<semver::Version> = std::fs::read_dir(self.root.join(name))
            .map_err(ModuleError::io("reading", self.root.join(name)))?
            .filter_map(|e| e.ok())
            .filter(|e| e.path().join(MANIFEST_FILE).is_file())
            .filter_map(|e| e.file_name().to_str().and_then(|v| semver::Version::parse(v).ok()))
            .collect();
        versions.sort();
        Ok(Some(Installed {
            manifest,
            dir: self.root.join(name).join(&version),
            previous: self.link(name, PREVIOUS)?,
            versions: versions.iter().map(ToString::to_string).collect(),
        }))
    }

    /// The names of the modules on disk (installed or not), sorted.
    pub fn names(&self) -> Result<Vec<String>> {
        let entries = match std::fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(ModuleError::Io { context: "reading", path: self.root.clone(), source: e }),
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .filter(|n| check_name(n).is_ok())
            .collect();
        names.sort();
        Ok(names)
    }

    /// Every installed module (those with a `current`), by name; the first
    /// one that cannot be read fails the whole list (see [`Layout::names`]
    /// to go on past it).
    pub fn list(&self) -> Result<Vec<Installed>> {
        let mut out = Vec::new();
        for name in self.names()? {
            if let Some(installed) = self.installed(&name)? {
                out.push(installed);
            }
        }
        Ok(out)
    }

    /// Refuses what would change nothing good, before writing anything: a
    /// downgrade (unless allowed) or another module under a version already
    /// installed.
    pub fn check(&self, module: &VerifiedModule, allow_downgrade: bool) -> Result<()> {
        let name = &module.manifest.name;
        let offered = module.manifest.version()?;
        if let Some(current) = self.current_version(name)? {
            let installed = semver::Version::parse(&current)
                .map_err(|e| ModuleError::BadModule(format!("installed version {current:?}: {e}")))?;
            if offered < installed && !allow_downgrade {
                return Err(ModuleError::Downgrade {
                    name: name.clone(),
                    installed: current,
                    offered: offered.to_string(),
                });
            }
        }
        let version_dir = self.root.join(name).join(&module.manifest.version);
        if version_dir.exists() {
            let existing = std::fs::read_to_string(version_dir.join(MANIFEST_FILE)).unwrap_or_default();
            if existing != module.manifest_json {
                return Err(ModuleError::VersionConflict {
                    name: name.clone(),
                    version: module.manifest.version.clone(),
                });
            }
        }
        Ok(())
    }

    /// Unpacks `module` (unless that very version is there already), backs
    /// up its manifest and signature, and makes it current; the version it
    /// replaces becomes `previous`.
    pub fn install(&self, module: &VerifiedModule, allow_downgrade: bool) -> Result<Switched> {
        self.check(module, allow_downgrade)?;
        let name = &module.manifest.name;
        let version = &module.manifest.version;
        let module_dir = self.root.join(name);
        create_private_dir(&module_dir)?;
        let version_dir = module_dir.join(version);
        if !version_dir.exists() {
            let staging = module_dir.join(format!(".staging-{}", random_suffix()?));
            let unpacked = unpack(module, &staging).and_then(|()| {
                std::fs::rename(&staging, &version_dir).map_err(ModuleError::io("moving into place", &version_dir))
            });
            if let Err(e) = unpacked {
                let _ = std::fs::remove_dir_all(&staging);
                return Err(e);
            }
        }
        let backup = module_dir.join(BACKUP_DIR);
        create_private_dir(&backup)?;
        write_file(&backup.join(format!("{version}.{MANIFEST_FILE}")), module.manifest_json.as_bytes(), 0o600)?;
        write_file(&backup.join(format!("{version}.{SIGNATURE_FILE}")), module.signature.as_bytes(), 0o600)?;
        let replaced = self.link(name, CURRENT)?;
        if let Some(old) = replaced.as_deref().filter(|old| *old != version.as_str()) {
            replace_link(&module_dir, PREVIOUS, old)?;
        }
        replace_link(&module_dir, CURRENT, version)?;
        Ok(Switched { name: name.clone(), version: version.clone(), replaced })
    }

    /// Makes `previous` current again, and what was current `previous`.
    pub fn rollback(&self, name: &str) -> Result<Switched> {
        let Some(current) = self.current_version(name)? else {
            return Err(ModuleError::NotInstalled(name.to_string()));
        };
        let module_dir = self.root.join(name);
        let previous = self
            .link(name, PREVIOUS)?
            .filter(|p| module_dir.join(p).join(MANIFEST_FILE).is_file())
            .ok_or_else(|| ModuleError::NoPrevious(name.to_string()))?;
        replace_link(&module_dir, CURRENT, &previous)?;
        replace_link(&module_dir, PREVIOUS, &current)?;
        Ok(Switched { name: name.to_string(), version: previous, replaced: Some(current) })
    }
}

fn unpack(module: &VerifiedModule, staging: &Path) -> Result<()> {
    create_private_dir(staging)?;
    let files = staging.join(FILES_DIR);
    for artifact in &module.manifest.artifacts {
        let Some(bytes) = module.files.get(&artifact.path) else {
            return Err(ModuleError::HashMismatch {
                path: artifact.path.clone(),
                what: "missing from the module".into(),
            });
        };
        // The path was checked to be plain and relative, and `staging` is
        // new and holds no links: the file lands inside it.
        let path = files.join(&artifact.path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(ModuleError::io("creating", parent))?;
        }
        write_file(&path, bytes, if artifact.executable { 0o755 } else { 0o644 })?;
    }
    write_file(&staging.join(MANIFEST_FILE), module.manifest_json.as_bytes(), 0o644)?;
    write_file(&staging.join(SIGNATURE_FILE), module.signature.as_bytes(), 0o644)?;
    Ok(())
}

fn create_private_dir(path: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(path).map_err(ModuleError::io("creating", path))
}

/// Writes a new file, durably: it is renamed or linked only after this.
fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(ModuleError::io("creating", path))?;
    file.write_all(bytes).map_err(ModuleError::io("writing", path))?;
    file.sync_all().map_err(ModuleError::io("syncing", path))
}

/// Points `dir/name` at `target` by renaming a fresh link over it: atomic.
fn replace_link(dir: &Path, name: &str, target: &str) -> Result<()> {
    let temporary = dir.join(format!(".{name}-{}", random_suffix()?));
    std::os::unix::fs::symlink(target, &temporary).map_err(ModuleError::io("creating the link", &temporary))?;
    let path = dir.join(name);
    if let Err(e) = std::fs::rename(&temporary, &path) {
        let _ = std::fs::remove_file(&temporary);
        return Err(ModuleError::Io { context: "switching the link", path, source: e });
    }
    // The rename is durable once the directory is.
    if let Ok(handle) = std::fs::File::open(dir) {
        let _ = handle.sync_all();
    }
    Ok(())
}

fn random_suffix() -> Result<String> {
    let mut bytes = [0u8; 6];
    getrandom::fill(&mut bytes).map_err(|e| ModuleError::BadKey(format!("no randomness from the OS: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}
