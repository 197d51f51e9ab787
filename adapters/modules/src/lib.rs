//! Signed provider modules (docs/MODULES.md): a module is a tar of a
//! manifest, its Ed25519 signature and the artifacts the manifest lists
//! with their size and SHA-256. This crate makes keys, packs and signs
//! modules, verifies them against the trusted keys, and keeps the install
//! layout under `<data_dir>/providers/` with an atomic switch and rollback.
//! It knows nothing of the daemon: the binary turns an [`Installed`] into a
//! provider.

mod archive;
mod error;
mod keys;
mod layout;
mod manifest;

pub use archive::{
    open, pack, sha256_hex, timestamp, ModuleSpec, VerifiedModule, FILES_DIR, MANIFEST_FILE, MAX_MODULE_BYTES,
    SIGNATURE_FILE, SPEC_FILE,
};
pub use error::{ModuleError, Result};
pub use keys::{decode_public, encode_public, encode_secret, generate, key_id, read_secret, Trust, TrustedKey};
pub use layout::{Installed, Layout, Switched, BACKUP_DIR, CURRENT, PREVIOUS};
pub use manifest::{canonical_json, check_name, check_relative_path, Artifact, Manifest, ModuleProvider, FORMAT};

#[cfg(test)]
mod tests;
