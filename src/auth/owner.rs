//! The auth actor: the one writer of the auth records (devices, pairing
//! codes, the second factor). Its messages are handled one at a time, so
//! each check-then-write (a code spent, a device revoked) is whole: a code
//! cannot be exchanged twice by two requests racing, and a revocation and
//! a pairing never interleave.
//!
//! [`AuthRecords`] is what it works with; [`super::Auth`] shares it to read
//! the device index and to hear of revocations, and reaches the actor by
//! name ([`call`]).

use std::collections::HashMap;
use std::sync::Mutex;

use bosun_actors::{names, route, DaemonError};
use bosun_state::{Batch, DeviceRecord, Owner, PairingRecord, Store, TotpRecord};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use subtle::ConstantTimeEq;

use super::{
    from_hex, normalize_code, now_rfc3339, random_bytes, sha256, to_hex, totp_for, AuthError, CODE_ALPHABET, CODE_LEN,
    PAIRING_TTL,
};

/// A pairing code offered for a device token.
#[derive(Debug, Clone)]
pub struct Exchange {
    pub code: String,
    /// Checked by the caller: 1 to 64 printable characters.
    pub device_name: String,
    pub totp: Option<String>,
    /// Unix seconds.
    pub now: u64,
}

pub enum AuthMsg {
    CreatePairing { now: u64, reply: RpcReplyPort<Result<(String, u64), AuthError>> },
    Exchange { exchange: Exchange, reply: RpcReplyPort<Result<(String, String), AuthError>> },
    Revoke { id: String, reply: RpcReplyPort<Result<bool, AuthError>> },
    TotpEnable { reply: RpcReplyPort<Result<String, AuthError>> },
    TotpDisable { reply: RpcReplyPort<Result<(), AuthError>> },
}

/// Asks the auth actor, riding out a restart of it.
pub async fn call<R, F>(build: F) -> Result<R, AuthError>
where
    R: Send + 'static,
    F: FnOnce(RpcReplyPort<Result<R, AuthError>>) -> AuthMsg,
{
    match route::call::<AuthMsg, _, _>(names::AUTH, build).await {
        Ok(answer) => answer,
        Err(DaemonError::Unavailable(why)) => Err(AuthError::Unavailable(why)),
        Err(e) => Err(AuthError::Internal(e.to_string())),
    }
}

/// The auth records' state as the actor keeps it.
pub struct AuthRecords {
    store: Store,
    /// Paired devices by token hash, so a request finds its device without
    /// reading every device; the store stays the authority (a hit is checked
    /// against it, so a revocation is seen at once).
    devices_by_hash: Mutex<HashMap<[u8; 32], String>>,
    /// The ids of devices as they are revoked, so open WebSockets of a
    /// revoked device are closed at once rather than at their next request.
    revoked: tokio::sync::broadcast::Sender<String>,
}

impl AuthRecords {
    pub fn open(store: Store) -> Result<AuthRecords, AuthError> {
        let mut devices_by_hash = HashMap::new();
        for device in store.scan::<DeviceRecord>()? {
            if let Some(hash) = from_hex(&device.token_hash) {
                devices_by_hash.insert(hash, device.id);
            }
        }
        Ok(AuthRecords {
            store,
            devices_by_hash: Mutex::new(devices_by_hash),
            revoked: tokio::sync::broadcast::channel(64).0,
        })
    }

    /// The device id a token hash was issued to, if any.
    pub fn device_by_hash(&self, hash: &[u8; 32]) -> Option<String> {
        self.devices_by_hash.lock().unwrap_or_else(|e| e.into_inner()).get(hash).cloned()
    }

    pub fn revocations(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.revoked.subscribe()
    }

    fn totp_secret(&self) -> Result<Option<String>, AuthError> {
        Ok(self.store.get::<TotpRecord>(TotpRecord::KEY)?.map(|r| r.secret_base32))
    }

    pub(super) async fn create_pairing(&self, now: u64) -> Result<(String, u64), AuthError> {
        let random = random_bytes::<CODE_LEN>()?;
        // 256 is not a multiple of 31: the tiny bias left is harmless at 49 bits.
        let code: String = random.iter().map(|b| CODE_ALPHABET[*b as usize % CODE_ALPHABET.len()] as char).collect();
        let expires = now + PAIRING_TTL.as_secs();
        let mut batch = Batch::by(Owner::Auth);
        // Spent and expired codes are of no further use: drop them.
        for old in self.store.scan::<PairingRecord>()? {
            if old.used || old.expires_at_unix <= now {
                batch.delete::<PairingRecord>(&old.code_hash);
            }
        }
        let record = PairingRecord {
            code_hash: to_hex(&sha256(code.as_bytes())),
            created_at: now_rfc3339(),
            expires_at_unix: expires,
            used: false,
        };
        batch.put(&record)?;
        self.store.commit(batch).await?;
        Ok((code, expires))
    }

    pub(super) async fn exchange(&self, exchange: Exchange) -> Result<(String, String), AuthError> {
        let Exchange { code, device_name, totp, now } = exchange;
        let hash = sha256(normalize_code(&code).as_bytes());
        let mut found: Option<PairingRecord> = None;
        for record in self.store.scan::<PairingRecord>()? {
            let Some(stored) = from_hex(&record.code_hash) else { continue };
            if bool::from(hash.ct_eq(&stored)) {
                found = Some(record);
            }
        }
        let Some(mut pairing) = found.filter(|p| !p.used && now < p.expires_at_unix) else {
            return Err(AuthError::BadCode);
        };
        if let Some(secret) = self.totp_secret()? {
            let ok = match totp.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
                Some(given) => totp_for(&secret)?.check(given, now),
                None => false,
            };
            if !ok {
                return Err(AuthError::Totp);
            }
        }
        let token = format!("bsn_{}", to_hex(&random_bytes::<32>()?));
        let device = DeviceRecord {
            id: format!("d_{}", to_hex(&random_bytes::<8>()?)),
            name: device_name,
            token_hash: to_hex(&sha256(token.as_bytes())),
            created_at: now_rfc3339(),
        };
        pairing.used = true;
        let mut batch = Batch::by(Owner::Auth);
        batch.put(&pairing)?;
        batch.put(&device)?;
        self.store.commit(batch).await?;
        if let Some(hash) = from_hex(&device.token_hash) {
            self.devices_by_hash.lock().unwrap_or_else(|e| e.into_inner()).insert(hash, device.id.clone());
        }
        tracing::info!(device = %device.id, name = %device.name, "device paired");
        Ok((token, device.id))
    }

    pub(super) async fn revoke(&self, id: &str) -> Result<bool, AuthError> {
        if self.store.get::<DeviceRecord>(id)?.is_none() {
            return Ok(false);
        }
        let mut batch = Batch::by(Owner::Auth);
        batch.delete::<DeviceRecord>(id);
        self.store.commit(batch).await?;
        self.devices_by_hash.lock().unwrap_or_else(|e| e.into_inner()).retain(|_, device| device != id);
        tracing::info!(device = %id, "device revoked");
        // Nobody listening is fine: no socket of that device is open.
        let _ = self.revoked.send(id.to_string());
        Ok(true)
    }

    pub(super) async fn totp_enable(&self) -> Result<String, AuthError> {
        let secret = totp_rs::Secret::Raw(random_bytes::<20>()?.to_vec()).to_encoded().to_string();
        let url = totp_for(&secret)?.get_url();
        let mut batch = Batch::by(Owner::Auth);
        batch.put(&TotpRecord { secret_base32: secret, created_at: now_rfc3339() })?;
        self.store.commit(batch).await?;
        Ok(url)
    }

    pub(super) async fn totp_disable(&self) -> Result<(), AuthError> {
        let mut batch = Batch::by(Owner::Auth);
        batch.delete::<TotpRecord>(TotpRecord::KEY);
        self.store.commit(batch).await?;
        Ok(())
    }
}

/// The auth actor; its argument is the records it owns.
pub struct AuthActor;

impl Actor for AuthActor {
    type Msg = AuthMsg;
    type State = std::sync::Arc<AuthRecords>;
    type Arguments = std::sync::Arc<AuthRecords>;

    async fn pre_start(
        &self,
        _myself: ActorRef<AuthMsg>,
        records: std::sync::Arc<AuthRecords>,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(records)
    }

    async fn handle(
        &self,
        _myself: ActorRef<AuthMsg>,
        msg: AuthMsg,
        records: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            AuthMsg::CreatePairing { now, reply } => drop(reply.send(records.create_pairing(now).await)),
            AuthMsg::Exchange { exchange, reply } => drop(reply.send(records.exchange(exchange).await)),
            AuthMsg::Revoke { id, reply } => drop(reply.send(records.revoke(&id).await)),
            AuthMsg::TotpEnable { reply } => drop(reply.send(records.totp_enable().await)),
            AuthMsg::TotpDisable { reply } => drop(reply.send(records.totp_disable().await)),
        }
        Ok(())
    }
}
