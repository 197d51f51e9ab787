//! Why a module was refused, with a machine code for each reason.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    #[error(
        "the module's signature does not verify against trusted key {key_id}: it was altered or signed by another key"
    )]
    BadSignature { key_id: String },
    #[error("the module is signed by key {key_id}, which is not in [modules] trusted_keys")]
    UnknownKey { key_id: String },
    #[error("the module's manifest expired at {expires_at} (it is now {now})")]
    Expired { expires_at: String, now: String },
    #[error("artifact {path:?}: {what}")]
    HashMismatch { path: String, what: String },
    #[error("{name} {offered} is older than the installed {installed}; pass --allow-downgrade to install it anyway")]
    Downgrade { name: String, installed: String, offered: String },
    #[error("{name} {version} needs bosun {min_bosun} or later; this is bosun {running}")]
    Incompatible { name: String, version: String, min_bosun: String, running: String },
    #[error("{name} {version} is installed already with other contents; a changed module needs a new version")]
    VersionConflict { name: String, version: String },
    #[error("unsafe path {path:?} in the module: {why}")]
    UnsafePath { path: String, why: &'static str },
    #[error("not a valid module: {0}")]
    BadModule(String),
    #[error("the module is larger than {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("key: {0}")]
    BadKey(String),
    #[error("no module {0:?} is installed")]
    NotInstalled(String),
    #[error("module {0:?} has no previous version to roll back to")]
    NoPrevious(String),
    #[error("{context} {path}: {source}", path = path.display())]
    Io {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl ModuleError {
    /// The stable machine code clients match on (`{"error":{"code"}}`).
    pub fn code(&self) -> &'static str {
        match self {
            ModuleError::BadSignature { .. } => "bad_signature",
            ModuleError::UnknownKey { .. } => "unknown_key",
            ModuleError::Expired { .. } => "expired",
            ModuleError::HashMismatch { .. } => "hash_mismatch",
            ModuleError::Downgrade { .. } => "downgrade",
            ModuleError::Incompatible { .. } => "incompatible",
            ModuleError::VersionConflict { .. } => "version_conflict",
            ModuleError::UnsafePath { .. } => "unsafe_path",
            ModuleError::BadModule(_) => "bad_module",
            ModuleError::TooLarge { .. } => "payload_too_large",
            ModuleError::BadKey(_) => "bad_key",
            ModuleError::NotInstalled(_) => "not_found",
            ModuleError::NoPrevious(_) => "no_previous",
            ModuleError::Io { .. } => "internal",
        }
    }

    pub(crate) fn io(context: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> ModuleError {
        let path = path.into();
        move |source| ModuleError::Io { context, path, source }
    }
}

pub type Result<T, E = ModuleError> = std::result::Result<T, E>;
