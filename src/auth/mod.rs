//! Who may talk to the daemon (docs/SECURITY.md): device tokens from pairing,
//! the local admin credential, the optional TOTP second factor, and the
//! per-peer limit on failed attempts.
//!
//! Secrets are never stored as they are: tokens and pairing codes are kept as
//! SHA-256 hashes and compared in constant time, so neither a copy of the
//! store nor the timing of an answer tells an attacker anything useful.
//!
//! [`Auth`] answers who may do what, from the store and in memory; every
//! change to the auth records (devices, pairing codes, the second factor)
//! is made by their one owner, the auth actor ([`owner`]), one at a time, so
//! a code cannot be spent twice and a revocation cannot race a pairing.

pub mod owner;

use crate::config::{AuthConfig, AuthRequire};
use anyhow::Context as _;
use bosun_state::{DeviceRecord, Store, StoreError, TotpRecord};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};
use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use subtle::ConstantTimeEq;

/// The admin credential's file in the data dir.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";
/// How long a pairing code may be exchanged.
pub const PAIRING_TTL: Duration = Duration::from_secs(10 * 60);
/// Failed attempts a peer may make within [`FAIL_WINDOW`] before it gets 429.
pub const MAX_FAILURES: usize = 10;
pub const FAIL_WINDOW: Duration = Duration::from_secs(60);
/// Pairing codes use letters and digits that cannot be mistaken for each
/// other when typed from a screen (no 0/O, 1/I/L).
const CODE_ALPHABET: &[u8] = b"ABCDEFGHJKMNPQRSTUVWXYZ23456789";
/// 10 symbols of 31: about 49 bits, against at most 10 guesses a minute for 10 minutes.
const CODE_LEN: usize = 10;
const MAX_DEVICE_NAME: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("this request needs a token: send Authorization: Bearer <token> (pair a device with `bosun pair`)")]
    Missing,
    #[error("the token is not valid (unknown or revoked)")]
    InvalidToken,
    #[error("this Origin may not open the WebSocket")]
    ForeignOrigin,
    #[error("only the local admin credential may do this (the data dir's admin.token)")]
    AdminOnly,
    #[error("the pairing code is not valid: unknown, already used or expired")]
    BadCode,
    #[error("a valid \"totp\" code is required (the second factor is on)")]
    Totp,
    #[error("too many failed attempts; retry in {0} s")]
    Limited(u64),
    #[error("{0}")]
    BadRequest(String),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The auth actor is restarting or did not answer; retrying is safe.
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

/// What a request may do once authorized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// A loopback peer under `require = "remote"`, without a valid token.
    Local,
    /// The admin credential from the data dir.
    Admin,
    /// A paired device, by id.
    Device(String),
}

pub struct Auth {
    require: AuthRequire,
    allowed_origins: Vec<String>,
    trusted_proxies: Vec<crate::proxy::Cidr>,
    store: Store,
    admin_hash: [u8; 32],
    failures: Mutex<HashMap<IpAddr, VecDeque<Instant>>>,
    /// What the owner keeps up to date as it changes the records, for the
    /// reads here; the owner itself is reached by name.
    records: Arc<owner::AuthRecords>,
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn random_bytes<const N: usize>() -> Result<[u8; N], AuthError> {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf).map_err(|e| AuthError::Internal(format!("the OS gave no randomness: {e}")))?;
    Ok(buf)
}

fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Upper case, without the spaces and dashes a person may type.
fn normalize_code(code: &str) -> String {
    code.chars().filter(|c| !c.is_whitespace() && *c != '-').map(|c| c.to_ascii_uppercase()).collect()
}

/// The peer rule of `require = "remote"`: only loopback goes without a token.
/// An unknown peer address counts as remote.
pub fn is_loopback(peer: Option<IpAddr>) -> bool {
    match peer {
        Some(IpAddr::V4(v4)) => v4.is_loopback(),
        // `::ffff:127.0.0.1` is loopback too, when a dual-stack socket maps it.
        Some(IpAddr::V6(v6)) => v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
        None => false,
    }
}

/// Who is asking, as far as the auth rule cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    /// The address of the TCP peer; `None` when the listener could not tell.
    pub ip: Option<IpAddr>,
    /// Whom the limit on failed attempts counts: the TCP peer, or the client
    /// a trusted proxy forwards for (see [`crate::proxy`]).
    pub client: Option<IpAddr>,
    /// A loopback peer that asked by a loopback name and not through a
    /// proxy: the only kind `require = "remote"` lets in without a token.
    pub local: bool,
}

impl Peer {
    /// A peer seen directly, with no request headers to judge.
    #[cfg(test)]
    pub fn direct(ip: Option<IpAddr>) -> Peer {
        Peer { ip, client: ip, local: is_loopback(ip) }
    }
}

/// The headers a proxy adds on behalf of a client it forwards for.
const PROXY_HEADERS: [&str; 4] = ["forwarded", "x-forwarded-for", "x-forwarded-host", "x-real-ip"];

/// Reads `<data_dir>/admin.token`, creating it (owner-only, 0600) when missing.
pub fn load_or_create_admin_token(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join(ADMIN_TOKEN_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => return Ok(text.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    let token = to_hex(&random_bytes::<32>().map_err(|e| anyhow::anyhow!("{e}"))?);
    write_private(&path, &token).with_context(|| format!("writing {}", path.display()))?;
    Ok(token)
}

/// Writes a file only its owner can read, replacing it atomically.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp: PathBuf = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

impl Auth {
    pub fn open(config: &AuthConfig, data_dir: &Path, store: Store) -> anyhow::Result<Arc<Auth>> {
        let admin = load_or_create_admin_token(data_dir)?;
        Ok(Arc::new(Auth::new(config, &admin, store)?))
    }

    pub fn new(config: &AuthConfig, admin_token: &str, store: Store) -> Result<Auth, AuthError> {
        Ok(Auth {
            require: config.require,
            allowed_origins: config.allowed_origins.iter().map(|o| o.trim_end_matches('/').to_string()).collect(),
            trusted_proxies: config.trusted_proxies.clone(),
            records: Arc::new(owner::AuthRecords::open(store.clone())?),
            store,
            admin_hash: sha256(admin_token.as_bytes()),
            failures: Mutex::new(HashMap::new()),
        })
    }

    /// What the auth actor owns: its state, shared with it at start.
    pub fn records(&self) -> Arc<owner::AuthRecords> {
        self.records.clone()
    }

    /// Who is asking: a TCP peer at `ip`, sending `headers`, that named a
    /// loopback authority (`authority_loopback`, see `front::authority`).
    ///
    /// A proxy on the same machine (Tailscale serve, Caddy, nginx) connects
    /// from loopback on behalf of remote clients, and a DNS-rebinding page
    /// reaches loopback under a foreign name: both give themselves away (a
    /// proxy header, a non-loopback authority) and are then remote. A proxy
    /// is remote even when trusted: trust only says whom to count.
    pub fn peer(&self, ip: Option<IpAddr>, headers: &warp::http::HeaderMap, authority_loopback: bool) -> Peer {
        let proxied = PROXY_HEADERS.iter().any(|h| headers.contains_key(*h));
        Peer {
            ip,
            client: ip.map(|ip| crate::proxy::client_of(ip, headers, &self.trusted_proxies)),
            local: is_loopback(ip) && !proxied && authority_loopback,
        }
    }

    /// Whether this peer may go without a token.
    pub fn open_to(&self, peer: Peer) -> bool {
        self.require == AuthRequire::Remote && peer.local
    }

    /// Decides what a request with this peer and (maybe) token may do.
    pub fn authorize(&self, peer: Peer, token: Option<&str>) -> Result<Access, AuthError> {
        let open = self.open_to(peer);
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            return if open { Ok(Access::Local) } else { Err(AuthError::Missing) };
        };
        let hash = sha256(token.as_bytes());
        // The admin credential before the limit: guesses by others (behind
        // a shared proxy, or on loopback) must never lock out the local CLI.
        // It is 256 random bits, so the limit protects nothing there; a
        // wrong token still counts below.
        if bool::from(hash.ct_eq(&self.admin_hash)) {
            return Ok(Access::Admin);
        }
        if !open {
            self.check_limit(peer.client)?;
        }
        match self.match_device(&hash)? {
            Some(access) => Ok(access),
            // A stale token from a loopback peer that needs none loses
            // nothing (the local CLI may carry another daemon's admin token).
            None if open => Ok(Access::Local),
            None => {
                self.record_failure(peer.client);
                Err(AuthError::InvalidToken)
            }
        }
    }

    fn match_device(&self, hash: &[u8; 32]) -> Result<Option<Access>, AuthError> {
        // A map lookup by hash leaks nothing useful through timing: finding
        // a token whose SHA-256 starts like a stored one teaches nothing
        // about the token.
        let id = self.records.device_by_hash(hash);
        let Some(id) = id else { return Ok(None) };
        // The store decides: a device revoked a moment ago is refused.
        match self.store.get::<DeviceRecord>(&id)? {
            Some(device) if from_hex(&device.token_hash).is_some_and(|h| bool::from(h.ct_eq(hash))) => {
                Ok(Some(Access::Device(device.id)))
            }
            _ => Ok(None),
        }
    }

    /// `Err(Limited)` when the peer made too many failed attempts lately.
    pub fn check_limit(&self, peer: Option<IpAddr>) -> Result<(), AuthError> {
        self.check_limit_at(peer, Instant::now())
    }

    fn check_limit_at(&self, peer: Option<IpAddr>, now: Instant) -> Result<(), AuthError> {
        let key = peer.unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let Some(times) = failures.get_mut(&key) else { return Ok(()) };
        while times.front().is_some_and(|t| now.duration_since(*t) >= FAIL_WINDOW) {
            times.pop_front();
        }
        if times.len() < MAX_FAILURES {
            if times.is_empty() {
                failures.remove(&key);
            }
            return Ok(());
        }
        let oldest = times.front().copied().unwrap_or(now);
        let wait = FAIL_WINDOW.saturating_sub(now.duration_since(oldest)).as_secs().max(1);
        Err(AuthError::Limited(wait))
    }

    pub fn record_failure(&self, peer: Option<IpAddr>) {
        self.record_failure_at(peer, Instant::now())
    }

    fn record_failure_at(&self, peer: Option<IpAddr>, now: Instant) {
        let key = peer.unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        // Bounded memory: a flood of addresses cannot grow the map without end.
        if failures.len() > 10_000 {
            failures.retain(|_, times| times.back().is_some_and(|t| now.duration_since(*t) < FAIL_WINDOW));
        }
        let times = failures.entry(key).or_default();
        times.push_back(now);
        while times.len() > MAX_FAILURES {
            times.pop_front();
        }
    }

    /// Whether a browser page from `origin` may open the WebSocket of the
    /// daemon reached as `host`. No Origin (a non-browser client) is fine:
    /// the check stops other web pages from riding on a browser's access.
    pub fn origin_allowed(&self, origin: Option<&str>, host: Option<&str>) -> bool {
        let Some(origin) = origin else { return true };
        let origin = origin.trim_end_matches('/');
        if self.allowed_origins.iter().any(|o| o == origin) {
            return true;
        }
        let Some(host) = host.filter(|h| !h.is_empty()) else { return false };
        origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://")).is_some_and(|rest| rest == host)
    }

    /// A new single-use pairing code; returns it with its expiry (unix seconds).
    pub async fn create_pairing(&self) -> Result<(String, u64), AuthError> {
        owner::call(|reply| owner::AuthMsg::CreatePairing { now: now_unix(), reply }).await
    }

    /// Exchanges a pairing code (and the TOTP code, when that is on) for a
    /// new device token. Returns `(token, device_id)`.
    pub async fn exchange(
        &self,
        peer: Option<IpAddr>,
        code: &str,
        device_name: &str,
        totp: Option<&str>,
    ) -> Result<(String, String), AuthError> {
        self.check_limit(peer)?;
        let name = device_name.trim();
        if name.is_empty() || name.chars().count() > MAX_DEVICE_NAME || name.chars().any(char::is_control) {
            return Err(AuthError::BadRequest(format!(
                "device_name must be 1 to {MAX_DEVICE_NAME} printable characters"
            )));
        }
        let exchange = owner::Exchange {
            code: code.to_string(),
            device_name: name.to_string(),
            totp: totp.map(str::to_string),
            now: now_unix(),
        };
        let result = owner::call(|reply| owner::AuthMsg::Exchange { exchange, reply }).await;
        if matches!(result, Err(AuthError::BadCode | AuthError::Totp)) {
            self.record_failure(peer);
        }
        result
    }

    pub fn devices(&self) -> Result<Vec<DeviceRecord>, AuthError> {
        let mut devices = self.store.scan::<DeviceRecord>()?;
        devices.sort_by(|a, b| a.created_at.cmp(&b.created_at));
        Ok(devices)
    }

    /// Forgets a device; its token is refused from the next request on.
    /// Returns false when there was no such device.
    pub async fn revoke(&self, id: &str) -> Result<bool, AuthError> {
        let id = id.to_string();
        owner::call(|reply| owner::AuthMsg::Revoke { id, reply }).await
    }

    /// Device ids as they are revoked, from now on.
    pub fn revocations(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.records.revocations()
    }

    /// Whether device `id` is still paired.
    pub fn device_exists(&self, id: &str) -> Result<bool, AuthError> {
        Ok(self.store.get::<DeviceRecord>(id)?.is_some())
    }

    fn totp_secret(&self) -> Result<Option<String>, AuthError> {
        Ok(self.store.get::<TotpRecord>(TotpRecord::KEY)?.map(|r| r.secret_base32))
    }

    pub fn totp_enabled(&self) -> Result<bool, AuthError> {
        Ok(self.totp_secret()?.is_some())
    }

    /// Turns the second factor on with a fresh secret; returns the
    /// `otpauth://` URL to load into an authenticator app.
    pub async fn totp_enable(&self) -> Result<String, AuthError> {
        owner::call(|reply| owner::AuthMsg::TotpEnable { reply }).await
    }

    pub async fn totp_disable(&self) -> Result<(), AuthError> {
        owner::call(|reply| owner::AuthMsg::TotpDisable { reply }).await
    }
}

/// RFC 6238 with the parameters authenticator apps assume: SHA-1, 6 digits,
/// 30 s steps, one step of clock skew either way.
pub fn totp_for(secret_base32: &str) -> Result<totp_rs::TOTP, AuthError> {
    let bytes = totp_rs::Secret::Encoded(secret_base32.to_string())
        .to_bytes()
        .map_err(|e| AuthError::Internal(format!("bad TOTP secret: {e:?}")))?;
    totp_rs::TOTP::new(totp_rs::Algorithm::SHA1, 6, 1, 30, bytes, Some("Bosun".into()), "bosun".into())
        .map_err(|e| AuthError::Internal(format!("bad TOTP parameters: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bosun_state::StoreConfig;

    fn auth(require: AuthRequire) -> (Auth, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreConfig::new(dir.path().join("store"))).unwrap();
        let config = AuthConfig {
            require,
            allowed_origins: vec!["https://proxy.example".into()],
            trusted_proxies: vec!["127.0.0.1".parse().unwrap()],
        };
        (Auth::new(&config, "admin-secret", store).unwrap(), dir)
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    fn peer(s: &str) -> Peer {
        Peer::direct(ip(s))
    }

    #[test]
    fn remote_rule_lets_only_loopback_in_without_a_token() {
        let (a, _dir) = auth(AuthRequire::Remote);
        assert_eq!(a.authorize(peer("127.0.0.1"), None).unwrap(), Access::Local);
        assert_eq!(a.authorize(peer("127.8.0.3"), None).unwrap(), Access::Local);
        assert_eq!(a.authorize(peer("::1"), None).unwrap(), Access::Local);
        assert_eq!(a.authorize(peer("::ffff:127.0.0.1"), None).unwrap(), Access::Local);
        assert!(matches!(a.authorize(peer("192.168.1.20"), None), Err(AuthError::Missing)));
        assert!(matches!(a.authorize(peer("fe80::1"), None), Err(AuthError::Missing)));
        assert!(matches!(a.authorize(Peer::direct(None), None), Err(AuthError::Missing)));
        assert!(matches!(a.authorize(peer("10.0.0.2"), Some("nope")), Err(AuthError::InvalidToken)));
        assert_eq!(a.authorize(peer("10.0.0.2"), Some("admin-secret")).unwrap(), Access::Admin);
        // A wrong token from loopback costs nothing there.
        assert_eq!(a.authorize(peer("127.0.0.1"), Some("nope")).unwrap(), Access::Local);
        let (a, _dir) = auth(AuthRequire::Always);
        assert!(matches!(a.authorize(peer("127.0.0.1"), None), Err(AuthError::Missing)));
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> warp::http::HeaderMap {
        let mut h = warp::http::HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, warp::http::HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn proxied_or_rebound_requests_count_as_remote() {
        let (a, _dir) = auth(AuthRequire::Remote);
        let lo = ip("127.0.0.1");
        assert!(a.peer(lo, &headers(&[]), true).local);
        assert!(a.peer(ip("::1"), &headers(&[]), true).local);
        // A foreign authority (a rebound name), as the front judged it.
        assert!(!a.peer(lo, &headers(&[]), false).local);
        for proxy_header in PROXY_HEADERS {
            assert!(!a.peer(lo, &headers(&[(proxy_header, "for=1.2.3.4")]), true).local, "{proxy_header}");
        }
        assert!(!a.peer(ip("192.168.1.2"), &headers(&[]), true).local);
        assert!(!a.peer(None, &headers(&[]), true).local);
    }

    #[test]
    fn the_limit_counts_the_client_a_trusted_proxy_names() {
        let (a, _dir) = auth(AuthRequire::Always);
        let via_proxy = |client: &'static str| a.peer(ip("127.0.0.1"), &headers(&[("x-forwarded-for", client)]), true);
        for _ in 0..MAX_FAILURES {
            assert!(matches!(a.authorize(via_proxy("203.0.113.7"), Some("guess")), Err(AuthError::InvalidToken)));
        }
        assert!(matches!(a.authorize(via_proxy("203.0.113.7"), Some("guess")), Err(AuthError::Limited(_))));
        assert!(matches!(a.authorize(via_proxy("203.0.113.8"), Some("guess")), Err(AuthError::InvalidToken)));
        // The proxy's own address is not limited, and is never local.
        let direct = a.peer(ip("127.0.0.1"), &headers(&[]), true);
        assert!(matches!(a.authorize(direct, Some("guess")), Err(AuthError::InvalidToken)));
        assert!(!via_proxy("203.0.113.7").local);
        // An untrusted peer's header is not believed: it is counted itself.
        let untrusted = a.peer(ip("192.0.2.1"), &headers(&[("x-forwarded-for", "203.0.113.9")]), true);
        assert_eq!(untrusted.client, ip("192.0.2.1"));
    }

    #[test]
    fn the_admin_credential_is_never_limited() {
        let (a, _dir) = auth(AuthRequire::Always);
        let lo = peer("127.0.0.1");
        for _ in 0..MAX_FAILURES {
            assert!(matches!(a.authorize(lo, Some("guess")), Err(AuthError::InvalidToken)));
        }
        assert!(matches!(a.authorize(lo, Some("guess")), Err(AuthError::Limited(_))));
        assert_eq!(a.authorize(lo, Some("admin-secret")).unwrap(), Access::Admin);
        assert!(matches!(a.authorize(lo, Some("admin-secreT")), Err(AuthError::Limited(_))));
    }

    #[test]
    fn failures_are_limited_per_peer_and_forgotten_after_the_window() {
        let (a, _dir) = auth(AuthRequire::Always);
        let t0 = Instant::now();
        for _ in 0..MAX_FAILURES {
            a.record_failure_at(ip("10.0.0.1"), t0);
        }
        assert!(matches!(a.check_limit_at(ip("10.0.0.1"), t0), Err(AuthError::Limited(60))));
        assert!(a.check_limit_at(ip("10.0.0.2"), t0).is_ok());
        assert!(a.check_limit_at(ip("10.0.0.1"), t0 + FAIL_WINDOW).is_ok());
    }

    #[test]
    fn origins() {
        let (a, _dir) = auth(AuthRequire::Remote);
        assert!(a.origin_allowed(None, Some("127.0.0.1:7878")));
        assert!(a.origin_allowed(Some("http://127.0.0.1:7878"), Some("127.0.0.1:7878")));
        assert!(a.origin_allowed(Some("https://proxy.example"), Some("127.0.0.1:7878")));
        assert!(!a.origin_allowed(Some("http://evil.example"), Some("127.0.0.1:7878")));
        assert!(!a.origin_allowed(Some("http://127.0.0.1:7878.evil"), Some("127.0.0.1:7878")));
        assert!(!a.origin_allowed(Some("null"), None));
    }

    fn offer(code: &str, totp: Option<&str>, now: u64) -> owner::Exchange {
        owner::Exchange { code: code.into(), device_name: "phone".into(), totp: totp.map(str::to_string), now }
    }

    /// The owner's rules, without its actor: the actor only runs them one
    /// at a time (tests/auth.rs goes through it).
    #[tokio::test]
    async fn codes_work_once_and_expire() {
        let (a, _dir) = auth(AuthRequire::Always);
        let records = a.records();
        let now = 1_000_000;
        let (code, expires) = records.create_pairing(now).await.unwrap();
        assert_eq!(expires, now + 600);
        assert_eq!(code.len(), CODE_LEN);
        // Expired: one second past the end.
        let err = records.exchange(offer(&code, None, expires)).await.unwrap_err();
        assert!(matches!(err, AuthError::BadCode), "{err}");
        let (token, id) = records.exchange(offer(&code.to_lowercase(), None, expires - 1)).await.unwrap();
        assert_eq!(a.authorize(Peer::direct(None), Some(&token)).unwrap(), Access::Device(id.clone()));
        let err = records.exchange(offer(&code, None, now + 1)).await.unwrap_err();
        assert!(matches!(err, AuthError::BadCode), "{err}");
        // Only the hash is stored.
        let devices = a.devices().unwrap();
        assert_eq!(devices.len(), 1);
        assert_ne!(devices[0].token_hash, token);
        let mut revocations = a.revocations();
        assert!(records.revoke(&id).await.unwrap());
        assert_eq!(revocations.try_recv().ok().as_deref(), Some(id.as_str()));
        assert!(matches!(a.authorize(Peer::direct(None), Some(&token)), Err(AuthError::InvalidToken)));
        assert!(!records.revoke(&id).await.unwrap());
    }

    #[tokio::test]
    async fn totp_is_asked_for_when_on() {
        let (a, _dir) = auth(AuthRequire::Always);
        let records = a.records();
        let url = records.totp_enable().await.unwrap();
        assert!(url.starts_with("otpauth://totp/"), "{url}");
        assert!(a.totp_enabled().unwrap());
        let now = now_unix();
        let (code, _) = records.create_pairing(now).await.unwrap();
        assert!(matches!(records.exchange(offer(&code, None, now)).await, Err(AuthError::Totp)));
        let secret = a.totp_secret().unwrap().unwrap();
        let good = totp_for(&secret).unwrap().generate(now);
        records.exchange(offer(&code, Some(&good), now)).await.unwrap();
        records.totp_disable().await.unwrap();
        assert!(!a.totp_enabled().unwrap());
    }
}
