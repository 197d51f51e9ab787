//! Signing keys and the keys a daemon trusts.

use crate::error::{ModuleError, Result};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use ed25519_dalek::{SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;

/// A key's id: the first 8 bytes of the SHA-256 of its public key, in hex.
/// Short enough to read out, long enough that two keys never share one by
/// chance; a manifest names its key by it.
pub fn key_id(public: &VerifyingKey) -> String {
    let digest = Sha256::digest(public.as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

pub fn encode_public(public: &VerifyingKey) -> String {
    BASE64.encode(public.as_bytes())
}

pub fn decode_public(text: &str) -> Result<VerifyingKey> {
    let bytes =
        BASE64.decode(text.trim()).map_err(|e| ModuleError::BadKey(format!("public key is not base64: {e}")))?;
    let bytes: [u8; 32] = bytes.try_into().map_err(|_| ModuleError::BadKey("a public key is 32 bytes".into()))?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| ModuleError::BadKey(format!("not an Ed25519 public key: {e}")))
}

/// A new key pair, from the OS's random source.
pub fn generate() -> Result<SigningKey> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| ModuleError::BadKey(format!("no randomness from the OS: {e}")))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// A secret key file's contents: the base64 of the 32-byte seed, and a newline.
pub fn encode_secret(key: &SigningKey) -> String {
    format!("{}\n", BASE64.encode(key.to_bytes()))
}

pub fn read_secret(path: &Path) -> Result<SigningKey> {
    let text = std::fs::read_to_string(path).map_err(ModuleError::io("reading the key file", path))?;
    let bytes = BASE64
        .decode(text.trim())
        .map_err(|e| ModuleError::BadKey(format!("{}: not a bosun module key (base64): {e}", path.display())))?;
    let seed: [u8; 32] =
        bytes.try_into().map_err(|_| ModuleError::BadKey(format!("{}: a secret key is 32 bytes", path.display())))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// One `[modules] trusted_keys` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedKey {
    pub id: String,
    pub public_key: String,
}

/// The keys modules may be signed with, by id.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    keys: BTreeMap<String, VerifyingKey>,
}

impl Trust {
    /// Refuses an entry whose id is not its key's: a typo there would
    /// otherwise trust a key under a name that no manifest uses.
    pub fn new(entries: &[TrustedKey]) -> Result<Trust> {
        let mut keys = BTreeMap::new();
        for entry in entries {
            let public = decode_public(&entry.public_key)
                .map_err(|e| ModuleError::BadKey(format!("trusted key {:?}: {e}", entry.id)))?;
            let actual = key_id(&public);
            if actual != entry.id {
                return Err(ModuleError::BadKey(format!(
                    "trusted key {:?}: that public key's id is {actual}",
                    entry.id
                )));
            }
            keys.insert(actual, public);
        }
        Ok(Trust { keys })
    }

    pub fn get(&self, id: &str) -> Option<&VerifyingKey> {
        self.keys.get(id)
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_ids_are_checked() {
        let key = generate().unwrap();
        let public = key.verifying_key();
        let id = key_id(&public);
        assert_eq!(id.len(), 16);
        assert_eq!(decode_public(&encode_public(&public)).unwrap(), public);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.key");
        std::fs::write(&path, encode_secret(&key)).unwrap();
        assert_eq!(read_secret(&path).unwrap().to_bytes(), key.to_bytes());

        let trust = Trust::new(&[TrustedKey { id: id.clone(), public_key: encode_public(&public) }]).unwrap();
        assert_eq!(trust.get(&id), Some(&public));
        let wrong = TrustedKey { id: "0000000000000000".into(), public_key: encode_public(&public) };
        assert!(Trust::new(&[wrong]).unwrap_err().to_string().contains(&id));
        let garbage = TrustedKey { id, public_key: "not base64!".into() };
        assert_eq!(Trust::new(&[garbage]).unwrap_err().code(), "bad_key");
        assert_ne!(key_id(&generate().unwrap().verifying_key()), key_id(&public));
    }
}
