//! Secrets kept for providers' environments (`env = { KEY = "secret:NAME" }`),
//! encrypted at rest (docs/SECURITY.md, "Secrets").
//!
//! Each value is sealed with XChaCha20-Poly1305 under one key per data dir,
//! with a fresh random nonce and the secret's name as associated data (a
//! ciphertext moved to another name does not open). The ciphertexts live in
//! `<data_dir>/secrets.json`, apart from the store, so `bosun secrets
//! --data-dir` works whether or not a daemon holds the store; the daemon
//! reads the file on every use, so a change made either way is the one the
//! next agent gets. The key lives in the OS keyring where one answers, and
//! otherwise in a 0600 file beside (not inside) the data dir.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The ciphertexts' file in the data dir.
pub const SECRETS_FILE: &str = "secrets.json";
/// Held (flock) while the file is read, changed and replaced, so the CLI
/// and the daemon never lose each other's changes.
const LOCK_FILE: &str = "secrets.lock";
/// `0` (or `false`, `off`) keeps the key in the key file even where a
/// keyring answers: for tests, and for machines whose keyring is not wanted.
pub const KEYRING_ENV: &str = "BOSUN_SECRETS_KEYRING";
/// The keyring entry's service; its user is the data dir's path.
const KEYRING_SERVICE: &str = "bosun-secrets";
/// How long the keyring may take to answer before the key file is used: a
/// Secret Service that is not running must not hold up the daemon's start.
const KEYRING_TIMEOUT: Duration = Duration::from_secs(3);
/// Bound into every ciphertext with the name, so that a value sealed by
/// another format or program is refused rather than misread.
const AD_CONTEXT: &[u8] = b"bosun secret v1\0";
const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 24;
/// Largest value: an environment variable, not a file store.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
const MAX_NAME_LEN: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("secret names are 1 to {MAX_NAME_LEN} letters, digits, '-', '_' or '.', starting with a letter or digit: {0:?} is not one")]
    BadName(String),
    #[error("a secret's value {0}")]
    BadValue(&'static str),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a secrets file this version can read: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    /// Decryption failed: the wrong key, or a changed file.
    #[error("secret {0:?} does not open with this data dir's key (the key was replaced, or the file was altered)")]
    Sealed(String),
    #[error("the secrets key: {0}")]
    Key(String),
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> SecretsError + '_ {
    move |source| SecretsError::Io { path: path.to_path_buf(), source }
}

pub fn check_name(name: &str) -> Result<(), SecretsError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(SecretsError::BadName(name.to_string()))
    }
}

pub fn check_value(value: &str) -> Result<(), SecretsError> {
    if value.is_empty() {
        return Err(SecretsError::BadValue("may not be empty"));
    }
    if value.len() > MAX_VALUE_BYTES {
        return Err(SecretsError::BadValue("may be at most 64 KiB"));
    }
    // An environment variable cannot hold one.
    if value.contains('\0') {
        return Err(SecretsError::BadValue("may not contain a NUL byte"));
    }
    Ok(())
}

/// The data dir's encryption key. Its `Debug` shows nothing of it.
#[derive(Clone)]
pub struct SecretKey([u8; KEY_LEN]);

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(…)")
    }
}

impl SecretKey {
    fn random() -> Result<SecretKey, SecretsError> {
        let mut key = [0u8; KEY_LEN];
        getrandom::fill(&mut key).map_err(|e| SecretsError::Key(format!("no randomness from the OS: {e}")))?;
        Ok(SecretKey(key))
    }

    fn from_hex(text: &str) -> Option<SecretKey> {
        let bytes = from_hex(text.trim())?;
        Some(SecretKey(bytes.try_into().ok()?))
    }

    fn to_hex(&self) -> String {
        crate::auth::to_hex(&self.0)
    }
}

fn from_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 || !text.is_ascii() {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok()).collect()
}

fn associated_data(name: &str) -> Vec<u8> {
    [AD_CONTEXT, name.as_bytes()].concat()
}

/// One sealed value, as the file keeps it (hex).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Sealed {
    nonce: String,
    ciphertext: String,
    /// RFC 3339, when it was last set.
    updated_at: String,
}

fn seal(key: &SecretKey, name: &str, value: &str, updated_at: String) -> Result<Sealed, SecretsError> {
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce).map_err(|e| SecretsError::Key(format!("no randomness from the OS: {e}")))?;
    let cipher = XChaCha20Poly1305::new((&key.0).into());
    let aad = associated_data(name);
    let ciphertext = cipher
        .encrypt(XNonce::from_slice(&nonce), Payload { msg: value.as_bytes(), aad: &aad })
        .map_err(|_| SecretsError::Key("encryption failed".into()))?;
    Ok(Sealed { nonce: crate::auth::to_hex(&nonce), ciphertext: crate::auth::to_hex(&ciphertext), updated_at })
}

fn open(key: &SecretKey, name: &str, sealed: &Sealed) -> Result<String, SecretsError> {
    let refused = || SecretsError::Sealed(name.to_string());
    let nonce = from_hex(&sealed.nonce).filter(|n| n.len() == NONCE_LEN).ok_or_else(refused)?;
    let ciphertext = from_hex(&sealed.ciphertext).ok_or_else(refused)?;
    let cipher = XChaCha20Poly1305::new((&key.0).into());
    let aad = associated_data(name);
    let clear =
        cipher.decrypt(XNonce::from_slice(&nonce), Payload { msg: &ciphertext, aad: &aad }).map_err(|_| refused())?;
    String::from_utf8(clear).map_err(|_| refused())
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretsFile {
    version: u32,
    #[serde(default)]
    secrets: BTreeMap<String, Sealed>,
}

const FILE_VERSION: u32 = 1;

/// A secret as a client sees it: never its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretInfo {
    pub name: String,
    pub masked: String,
    pub updated_at: String,
}

/// Where the key was found or made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyLocation {
    Keyring,
    File(PathBuf),
}

impl fmt::Display for KeyLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyLocation::Keyring => write!(f, "the OS keyring (service {KEYRING_SERVICE})"),
            KeyLocation::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// The key file for `data_dir`: beside it, so that a copy of the data dir
/// (a backup, say) does not carry the key to its own ciphertexts.
pub fn key_file_path(data_dir: &Path) -> PathBuf {
    let name = data_dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "bosun".into());
    let parent = data_dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    parent.join(format!(".{name}.secrets.key"))
}

/// Whether the keyring may be tried ([`KEYRING_ENV`]).
fn keyring_allowed() -> bool {
    match std::env::var(KEYRING_ENV) {
        Ok(v) => !matches!(v.trim().to_ascii_lowercase().as_str(), "0" | "false" | "off" | "no"),
        Err(_) => true,
    }
}

/// What the keyring said about this data dir's key.
enum KeyringAnswer {
    Found(SecretKey),
    /// It answers and has no key for this data dir.
    Empty,
    /// It did not answer (none running, locked, too slow), or holds garbage.
    Unusable(String),
}

/// The keyring's entry for `data_dir`, asked on a thread of its own so that
/// a keyring that never answers costs [`KEYRING_TIMEOUT`] and no more.
fn ask_keyring(data_dir: &Path, store: Option<SecretKey>) -> KeyringAnswer {
    let user = data_dir.to_string_lossy().into_owned();
    let (tx, rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new().name("secrets-keyring".into()).spawn(move || {
        let answer = (|| {
            let entry = keyring::Entry::new(KEYRING_SERVICE, &user).map_err(|e| e.to_string())?;
            if let Some(key) = store {
                entry.set_password(&key.to_hex()).map_err(|e| e.to_string())?;
            }
            match entry.get_password() {
                Ok(text) => SecretKey::from_hex(&text)
                    .map(KeyringAnswer::Found)
                    .ok_or_else(|| "the keyring's entry is not a key".to_string()),
                Err(keyring::Error::NoEntry) => Ok(KeyringAnswer::Empty),
                Err(e) => Err(e.to_string()),
            }
        })();
        let _ = tx.send(answer.unwrap_or_else(KeyringAnswer::Unusable));
    });
    if let Err(e) = spawned {
        return KeyringAnswer::Unusable(format!("cannot start a thread to ask it: {e}"));
    }
    rx.recv_timeout(KEYRING_TIMEOUT).unwrap_or_else(|_| KeyringAnswer::Unusable("it did not answer in time".into()))
}

fn read_key_file(path: &Path) -> Result<Option<SecretKey>, SecretsError> {
    match std::fs::read_to_string(path) {
        Ok(text) => SecretKey::from_hex(&text).map(Some).ok_or_else(|| SecretsError::Corrupt {
            path: path.to_path_buf(),
            reason: "not a 32-byte key in hex".into(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error(path)(e)),
    }
}

/// Writes `bytes` to `path` whole or not at all: a temporary file (0600)
/// beside it, synced, then renamed over it, then the directory synced.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), SecretsError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let temp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result.map_err(io_error(path))
}

/// Holds the secrets lock of a data dir until dropped.
struct FileLock(std::fs::File);

impl FileLock {
    fn acquire(data_dir: &Path) -> Result<FileLock, SecretsError> {
        use std::os::fd::AsRawFd as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let path = data_dir.join(LOCK_FILE);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io_error(&path))?;
        // SAFETY: flock on a descriptor this File owns, for as long as it lives.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(io_error(&path)(std::io::Error::last_os_error()));
        }
        Ok(FileLock(file))
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd as _;
        // SAFETY: as in `acquire`; closing the file would release it too.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

/// The secrets of one data dir. The key is looked up once and kept.
#[derive(Debug)]
pub struct SecretStore {
    data_dir: PathBuf,
    /// Whether the OS keyring is tried ([`KEYRING_ENV`]).
    use_keyring: bool,
    key: Mutex<Option<(SecretKey, KeyLocation)>>,
}

impl SecretStore {
    pub fn new(data_dir: &Path) -> SecretStore {
        SecretStore { data_dir: data_dir.to_path_buf(), use_keyring: keyring_allowed(), key: Mutex::new(None) }
    }

    /// A store that keeps its key in the key file whatever the machine has.
    #[cfg(test)]
    fn file_only(data_dir: &Path) -> SecretStore {
        SecretStore { use_keyring: false, ..SecretStore::new(data_dir) }
    }

    fn file_path(&self) -> PathBuf {
        self.data_dir.join(SECRETS_FILE)
    }

    fn read_file(&self) -> Result<SecretsFile, SecretsError> {
        let path = self.file_path();
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(SecretsFile { version: FILE_VERSION, secrets: BTreeMap::new() })
            }
            Err(e) => return Err(io_error(&path)(e)),
        };
        let file: SecretsFile = serde_json::from_str(&text)
            .map_err(|e| SecretsError::Corrupt { path: path.clone(), reason: e.to_string() })?;
        if file.version != FILE_VERSION {
            return Err(SecretsError::Corrupt {
                path,
                reason: format!("version {} (expected {FILE_VERSION})", file.version),
            });
        }
        Ok(file)
    }

    fn write_file(&self, file: &SecretsFile) -> Result<(), SecretsError> {
        let path = self.file_path();
        let text = serde_json::to_vec_pretty(file)
            .map_err(|e| SecretsError::Corrupt { path: path.clone(), reason: e.to_string() })?;
        write_atomically(&path, &text)
    }

    /// The names of the secrets, without the key: what config validation needs.
    pub fn names(&self) -> Result<Vec<String>, SecretsError> {
        Ok(self.read_file()?.secrets.into_keys().collect())
    }

    /// The key, found where it was put, or made when `create` (the first
    /// secret to be set): in the keyring if one answers, else in the key file.
    fn key(&self, create: bool) -> Result<Option<(SecretKey, KeyLocation)>, SecretsError> {
        let mut cached = self.key.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(found) = cached.as_ref() {
            return Ok(Some(found.clone()));
        }
        let key_file = key_file_path(&self.data_dir);
        let mut keyring_works = false;
        if self.use_keyring {
            match ask_keyring(&self.data_dir, None) {
                KeyringAnswer::Found(key) => {
                    tracing::info!(location = %KeyLocation::Keyring, "secrets key found");
                    *cached = Some((key, KeyLocation::Keyring));
                    return Ok(cached.clone());
                }
                KeyringAnswer::Empty => keyring_works = true,
                KeyringAnswer::Unusable(why) => {
                    tracing::info!(reason = %why, key_file = %key_file.display(), "no usable OS keyring; the secrets key is kept in a file")
                }
            }
        }
        if let Some(key) = read_key_file(&key_file)? {
            tracing::info!(location = %key_file.display(), "secrets key found");
            *cached = Some((key, KeyLocation::File(key_file)));
            return Ok(cached.clone());
        }
        if !create {
            return Ok(None);
        }
        let key = SecretKey::random()?;
        if keyring_works {
            match ask_keyring(&self.data_dir, Some(key.clone())) {
                KeyringAnswer::Found(stored) if stored.0 == key.0 => {
                    tracing::info!(location = %KeyLocation::Keyring, "made a new secrets key");
                    *cached = Some((key, KeyLocation::Keyring));
                    return Ok(cached.clone());
                }
                KeyringAnswer::Found(_) | KeyringAnswer::Empty => {
                    tracing::warn!("the OS keyring did not keep the secrets key; it is kept in a file")
                }
                KeyringAnswer::Unusable(why) => {
                    tracing::warn!(reason = %why, "the OS keyring refused the secrets key; it is kept in a file")
                }
            }
        }
        if let Some(parent) = key_file.parent() {
            std::fs::create_dir_all(parent).map_err(io_error(parent))?;
        }
        write_atomically(&key_file, key.to_hex().as_bytes())?;
        tracing::info!(location = %key_file.display(), "made a new secrets key");
        *cached = Some((key, KeyLocation::File(key_file.clone())));
        Ok(cached.clone())
    }

    /// Where the key is, once one was found or made.
    pub fn key_location(&self) -> Option<KeyLocation> {
        self.key.lock().unwrap_or_else(|p| p.into_inner()).as_ref().map(|(_, location)| location.clone())
    }

    /// Every secret, masked.
    pub fn list(&self) -> Result<Vec<SecretInfo>, SecretsError> {
        let file = self.read_file()?;
        if file.secrets.is_empty() {
            return Ok(Vec::new());
        }
        let (key, _) = self.key(false)?.ok_or_else(|| {
            SecretsError::Key(format!(
                "there are secrets but no key for them (looked in the keyring and {})",
                key_file_path(&self.data_dir).display()
            ))
        })?;
        file.secrets
            .iter()
            .map(|(name, sealed)| {
                let clear = open(&key, name, sealed)?;
                Ok(SecretInfo {
                    name: name.clone(),
                    masked: bosun_driver::mask_secret(&clear),
                    updated_at: sealed.updated_at.clone(),
                })
            })
            .collect()
    }

    /// The clear value of `name`: for an agent's environment, and nothing else.
    pub fn reveal(&self, name: &str) -> Result<Option<String>, SecretsError> {
        let file = self.read_file()?;
        let Some(sealed) = file.secrets.get(name) else { return Ok(None) };
        let (key, _) = self.key(false)?.ok_or_else(|| SecretsError::Key("no key for the secrets".into()))?;
        open(&key, name, sealed).map(Some)
    }

    /// Sets `name` to `value`; true when it is new.
    pub fn set(&self, name: &str, value: &str) -> Result<(SecretInfo, bool), SecretsError> {
        check_name(name)?;
        check_value(value)?;
        {
            // Private, as the daemon makes it (src/daemon.rs): `bosun secrets
            // set` may be the first to make the data dir.
            use std::os::unix::fs::DirBuilderExt as _;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&self.data_dir)
                .map_err(io_error(&self.data_dir))?;
        }
        let _lock = FileLock::acquire(&self.data_dir)?;
        let mut file = self.read_file()?;
        let (key, _) = self.key(true)?.ok_or_else(|| SecretsError::Key("no key was made".into()))?;
        // A value sealed with another key would be lost for good: refuse.
        if let Some((other, sealed)) = file.secrets.iter().next() {
            open(&key, other, sealed)?;
        }
        let updated_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let sealed = seal(&key, name, value, updated_at.clone())?;
        let created = file.secrets.insert(name.to_string(), sealed).is_none();
        file.version = FILE_VERSION;
        self.write_file(&file)?;
        let info = SecretInfo { name: name.to_string(), masked: bosun_driver::mask_secret(value), updated_at };
        Ok((info, created))
    }

    /// Removes `name`; false when there was none.
    pub fn remove(&self, name: &str) -> Result<bool, SecretsError> {
        check_name(name)?;
        if !self.data_dir.exists() {
            return Ok(false);
        }
        let _lock = FileLock::acquire(&self.data_dir)?;
        let mut file = self.read_file()?;
        if file.secrets.remove(name).is_none() {
            return Ok(false);
        }
        self.write_file(&file)?;
        Ok(true)
    }
}

/// What the provider registry asks when it starts an agent.
#[derive(Debug)]
pub struct Resolver(pub Arc<SecretStore>);

impl bosun_driver::SecretResolver for Resolver {
    fn resolve(&self, name: &str) -> Result<String, String> {
        match self.0.reveal(name) {
            Ok(Some(value)) => Ok(value),
            Ok(None) => Err(format!("there is no secret {name:?} (bosun secrets set {name})")),
            Err(e) => Err(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SecretKey {
        SecretKey::random().unwrap()
    }

    #[test]
    fn a_sealed_value_opens_with_its_key_and_name_only() {
        let k = key();
        let sealed = seal(&k, "openai", "sk-clear-value-1234", "t".into()).unwrap();
        assert!(!sealed.ciphertext.contains(&crate::auth::to_hex(b"clear-value")));
        assert_eq!(open(&k, "openai", &sealed).unwrap(), "sk-clear-value-1234");
        // Another key.
        assert!(matches!(open(&key(), "openai", &sealed), Err(SecretsError::Sealed(_))));
        // Another name: the name is bound as associated data.
        assert!(matches!(open(&k, "anthropic", &sealed), Err(SecretsError::Sealed(_))));
        // One bit of the ciphertext changed.
        let mut tampered = sealed.clone();
        let mut bytes = from_hex(&tampered.ciphertext).unwrap();
        bytes[0] ^= 1;
        tampered.ciphertext = crate::auth::to_hex(&bytes);
        assert!(matches!(open(&k, "openai", &tampered), Err(SecretsError::Sealed(_))));
        // Another nonce.
        let mut renonced = sealed.clone();
        renonced.nonce = seal(&k, "openai", "x", "t".into()).unwrap().nonce;
        assert!(open(&k, "openai", &renonced).is_err());
        // The same value twice: two nonces, two ciphertexts.
        let again = seal(&k, "openai", "sk-clear-value-1234", "t".into()).unwrap();
        assert_ne!(again.nonce, sealed.nonce);
        assert_ne!(again.ciphertext, sealed.ciphertext);
    }

    #[test]
    fn names_and_values_are_checked() {
        for good in ["openai", "OPENAI_KEY", "a", "gh.token-2"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "-x", ".x", "a b", "a/b", "é", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_value("v").is_ok());
        assert!(check_value("").is_err());
        assert!(check_value("a\0b").is_err());
        assert!(check_value(&"x".repeat(MAX_VALUE_BYTES + 1)).is_err());
    }

    #[test]
    fn the_key_file_is_beside_the_data_dir() {
        assert_eq!(key_file_path(Path::new("/srv/bosun")), Path::new("/srv/.bosun.secrets.key"));
        assert_eq!(key_file_path(Path::new("data")), Path::new("./.data.secrets.key"));
    }

    #[test]
    fn a_store_keeps_only_ciphertexts_and_a_private_key_file() {
        let root = tempfile::tempdir().unwrap();
        let data = root.path().join("data");
        let store = SecretStore::file_only(&data);
        assert!(store.list().unwrap().is_empty());
        let (info, created) = store.set("openai", "sk-clear-value-1234").unwrap();
        assert!(created);
        assert_eq!(info.masked, "sk-\u{2026}1234");
        assert!(!store.set("openai", "sk-clear-value-5678").unwrap().1);
        assert_eq!(store.reveal("openai").unwrap().as_deref(), Some("sk-clear-value-5678"));
        assert_eq!(store.key_location(), Some(KeyLocation::File(root.path().join(".data.secrets.key"))));
        let on_disk = std::fs::read_to_string(data.join(SECRETS_FILE)).unwrap();
        assert!(!on_disk.contains("clear-value"), "{on_disk}");
        use std::os::unix::fs::PermissionsExt as _;
        for file in [data.join(SECRETS_FILE), root.path().join(".data.secrets.key")] {
            let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", file.display());
        }
        // Another process (a fresh store) finds the same key.
        assert_eq!(SecretStore::file_only(&data).reveal("openai").unwrap().as_deref(), Some("sk-clear-value-5678"));
        // A replaced key: the values are refused, and no new one is sealed over them.
        std::fs::write(root.path().join(".data.secrets.key"), key().to_hex()).unwrap();
        let other = SecretStore::file_only(&data);
        assert!(matches!(other.reveal("openai"), Err(SecretsError::Sealed(_))));
        assert!(other.set("second", "value").is_err());
        assert!(store.remove("openai").unwrap());
        assert!(!store.remove("openai").unwrap());
        assert!(store.names().unwrap().is_empty());
    }
}
