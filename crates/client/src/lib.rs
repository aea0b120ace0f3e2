//! Doorstep's device library: everything a clinician's device does, without any UI.
//!
//! The Tauri shell and the `doorstep` command-line client are both thin layers over this crate.
//! It holds:
//!
//! - **The vault** ([`vault`], [`key`]): the SQLCipher key is 32 random bytes, kept in
//!   `device.json` wrapped (AES-256-GCM) under a key derived from the PIN with Argon2id; a PIN
//!   change re-wraps it. Wrong PINs are counted, authenticated, in `pin-attempts.json`, outside
//!   the encrypted database: after [`vault::ONLINE_SIGN_IN_AFTER`] the cache opens only after an
//!   online sign-in ([`Device::unlock_after_sign_in`]); after [`vault::WIPE_AFTER`] it is wiped.
//!   The one PIN rule is [`doorstep_ipc::pin`].
//! - **The cache** (`cache`): one SQLCipher database, `cache.db`, with the user's list, each
//!   patient's FHIR resources as the server sent them, withheld counts, the sync cursor and the
//!   device's tokens. Nothing of a patient is ever written outside it (nor to logs).
//! - **The sync engine** ([`Device::enrol`], [`Device::sync`]): enrolment with password and
//!   TOTP over HTTPS pinned to the federation's CA, then the pull loop of
//!   [`doorstep_protocol`]: each page applied in one transaction with its cursor, access tokens
//!   refreshed when they expire, the cache rebuilt when the server answers 410, transient
//!   failures retried with exponential backoff and jitter.
//! - **The queries** ([`Device::list`], [`Device::record`]): the list with search by name
//!   (accent- and case-insensitive), NHS number, postcode or date of birth, and one patient's
//!   record views; both answer the [`doorstep_ipc`] types the screens receive. Past the
//!   agreements' maximum offline age since the last contact with the server they answer
//!   [`ClientError::OfflineTooLong`] (`offline`).
//! - **Revocation**: a 403 `device_revoked` at any contact wipes the cache (records, tokens,
//!   outbox) and every later call and unlock answers [`ClientError::DeviceRevoked`].
//! - **Secrets** (PIN, password, authenticator code, tokens) are held in [`Secret`]; answers
//!   are read with a cap on their inflated size; enrolment needs a pinned CA outside
//!   [`EnrolParams::dev_mode`].
//!
//! A data directory holds `device.json`, `pin-attempts.json` (and its lock file),
//! `server-ca.pem` and `cache.db`
//! (with its WAL files). Only `cache.db` holds patient data, encrypted.
//!
//! Rules: no Tauri and no UI here; errors are [`ClientError`]s that say what to do; logs carry
//! no names, NHS numbers or tokens.

mod api;
pub mod breakglass;
mod cache;
mod error;
pub mod files;
pub mod key;
mod offline;
mod outbox;
mod push;
mod queries;
pub mod schedule;
mod stored;
pub mod text;
pub mod vault;
mod wire;
#[doc(hidden)]
pub mod workload;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::{DateTime, NaiveDate, Utc};
use doorstep_ipc::{
    ListPage, ListRow, NoteSummary, PatientRecord, SyncStatus, SyncSummary, UserSummary,
};
use doorstep_protocol::{EnrolRequest, RefreshRequest, TokenResponse, UserInfo};
use doorstep_record::NhsNumber;
use rusqlite::Connection;
use serde::{Deserialize, Serialize};

use crate::api::{Api, Backoff, Pulled};
use crate::cache::{OpenError, meta};

pub use crate::api::check_server_url;
pub use crate::error::{ClientError, Result};
pub use crate::files::{DeviceFile, is_enrolled};
pub use crate::push::PushReport;
pub use doorstep_ipc::Secret;

/// What the enrol screen (or `doorstep enrol`) supplies. Its `Debug` shows no secret.
#[derive(Debug, Clone)]
pub struct EnrolParams {
    /// `https://host:port`; `http://` only for a loopback host.
    pub server_url: String,
    /// The federation's CA certificate (PEM). It is copied into the data directory and becomes
    /// the only CA the device trusts. `None` (trusting the platform's roots instead) is
    /// refused unless `dev_mode` is set.
    pub ca_pem_path: Option<PathBuf>,
    pub username: String,
    pub password: Secret,
    /// Six digits from the user's authenticator.
    pub totp: Secret,
    /// The PIN that will unlock the cache on this device.
    pub pin: Secret,
    /// A label for administrators; defaults to "Doorstep on <hostname>" when empty.
    pub device_name: String,
    /// Explicit development mode (`--insecure-dev`): allows enrolling without a pinned CA
    /// (the platform's roots are trusted) and over plain http to this machine. Never set in
    /// a real deployment: without a pinned CA, any certificate a public CA signs for the
    /// host would be trusted with the password and the records.
    pub dev_mode: bool,
}

/// What one sync did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncReport {
    pub pages: u32,
    pub patients_added: u32,
    pub patients_removed: u32,
    pub upserts: u32,
    pub deletes: u32,
    /// List and withheld-count changes.
    pub other_changes: u32,
    /// The server asked for a rebuild (410) and the cache was rebuilt from scratch (beside the
    /// old copy, which was readable until the rebuild completed).
    pub rebuilt: bool,
    /// Patients in the cache after the sync.
    pub patients: u32,
    /// What sending the outbox did (before the pull).
    pub pushed: PushReport,
    pub duration_ms: u64,
}

/// An enrolled, unlocked device: the open cache and the API client.
///
/// A note as the author writes it (see [`Device::write_note`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NoteInput {
    pub text: String,
    /// Vital signs as `doorstep_record::news2::Vitals` reads them from JSON.
    pub vitals: Option<serde_json::Value>,
    /// A SNOMED CT code from `doorstep_record::problems::PICK_LIST`.
    pub problem: Option<String>,
    /// The id of the earlier note this one amends.
    pub replaces: Option<String>,
}

/// Dropping it closes the database, and SQLCipher wipes the key from memory: that is the lock.
pub struct Device {
    dir: PathBuf,
    file: DeviceFile,
    user: UserSummary,
    conn: Mutex<Connection>,
    api: Api,
    /// One sync at a time (the shell's timer and the user's button may overlap).
    sync_lock: tokio::sync::Mutex<()>,
    syncing: AtomicBool,
    /// Set when the server answered that this device is revoked: the cache is gone, and
    /// every later call answers [`ClientError::DeviceRevoked`].
    revoked: AtomicBool,
    /// Bumped whenever a sync may have changed the patients or their list entries.
    cache_generation: AtomicU64,
    /// The same-name set as of a cache generation and a minute (entries end with time): the
    /// list searches as the user types, and the set needs the whole list.
    lookalikes: Mutex<Option<SameNames>>,
    /// The whole list's order as of a cache generation and a day, until an entry on it ends.
    order: Mutex<Option<ListOrderMemo>>,
    backoff: Backoff,
    /// What time it is (the maximum offline age is measured with it); tests set another.
    clock: Clock,
}

/// The same-name set as of (cache generation, minute).
type SameNames = (u64, i64, Arc<HashSet<String>>);

/// The list's order as of (cache generation, day).
type ListOrderMemo = (u64, NaiveDate, Arc<queries::ListOrder>);

/// The device's clock: `Utc::now`, unless a test gives another ([`Device::with_clock`]).
pub type Clock = std::sync::Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("dir", &self.dir)
            .field("server_url", &self.file.server_url)
            .field("username", &self.user.username)
            .finish_non_exhaustive()
    }
}

/// Today's date on the device.
pub fn today() -> NaiveDate {
    chrono::Local::now().date_naive()
}

impl Device {
    /// Sign in with password and TOTP, register this device, and create its encrypted cache
    /// (empty: call [`Device::sync`] next). Any earlier enrolment in `dir` is replaced, but only
    /// after the server has accepted the sign-in; that is also how a device locked by too many
    /// wrong PINs is opened again.
    pub async fn enrol(dir: &Path, params: EnrolParams) -> Result<Device> {
        let server_url = check_server_url(&params.server_url)?;
        if !params.dev_mode {
            if params.ca_pem_path.is_none() {
                return Err(ClientError::Invalid(
                    "Enrolling needs the federation's CA certificate (--ca FILE): this device \
                     trusts only that CA. Enrolling without it is for development only \
                     (--insecure-dev)."
                        .into(),
                ));
            }
            if server_url.starts_with("http://") {
                return Err(ClientError::Invalid(
                    "Plain http (without TLS) is for development only (--insecure-dev): \
                     enrol with the server's https:// address."
                        .into(),
                ));
            }
        }
        key::check_new_pin(params.pin.expose())?;
        let username = params.username.trim().to_owned();
        if username.is_empty() {
            return Err(ClientError::Invalid("Enter your user name.".into()));
        }
        if params.password.is_empty() {
            return Err(ClientError::Invalid("Enter your password.".into()));
        }
        let totp = one_time_code(params.totp.expose())?;
        let ca_pem = match &params.ca_pem_path {
            Some(path) => Some(std::fs::read(path).map_err(|e| {
                ClientError::Invalid(format!(
                    "The CA certificate {} could not be read: {e}",
                    path.display()
                ))
            })?),
            None => None,
        };
        let api = Api::new(&server_url, ca_pem.as_deref())?;
        let device_name = if params.device_name.trim().is_empty() {
            default_device_name()
        } else {
            params.device_name.trim().to_owned()
        };
        let enrolled = api
            .enrol(&EnrolRequest {
                username: username.clone(),
                password: params.password.expose().to_owned(),
                totp,
                device_name: device_name.clone(),
            })
            .await?;
        tracing::info!(device_id = %enrolled.device_id, "device enrolled");

        std::fs::create_dir_all(dir)?;
        restrict_to_owner(dir)?;
        // device.json goes first and comes back last, so a crash in between leaves a directory
        // that is simply not enrolled.
        remove_if_exists(&dir.join(files::DEVICE_FILE))?;
        for name in [
            files::CACHE_FILE.to_owned(),
            format!("{}-wal", files::CACHE_FILE),
            format!("{}-shm", files::CACHE_FILE),
            files::SERVER_CA_FILE.to_owned(),
        ] {
            remove_if_exists(&dir.join(name))?;
        }
        let cache_key = vault::new_cache_key()?;
        let conn = match cache::open(&dir.join(files::CACHE_FILE), &cache_key) {
            Ok(c) => c,
            Err(OpenError::WrongKey) => {
                return Err(ClientError::Internal(
                    "a new cache could not be created".into(),
                ));
            }
            Err(OpenError::Other(e)) => return Err(e),
        };
        let user = user_summary(&enrolled.user);
        cache::set_meta(
            &conn,
            meta::USER,
            &serde_json::to_string(&enrolled.user)
                .map_err(|e| ClientError::Internal(e.to_string()))?,
        )?;
        store_tokens(&conn, &enrolled.tokens)?;
        if let Some(pem) = &ca_pem {
            files::write_atomically(&dir.join(files::SERVER_CA_FILE), pem)?;
        }
        let attempts_key = vault::new_attempts_key()?;
        vault::write_failures(dir, &attempts_key, &enrolled.device_id, 0)?;
        let file = DeviceFile {
            format: files::DEVICE_FILE_FORMAT,
            vault: Some(vault::WrappedKey::wrap(
                &cache_key,
                params.pin.expose(),
                &enrolled.device_id,
            )?),
            attempts_key: Some(attempts_key),
            kdf: None,
            revoked_at: None,
            server_url,
            device_id: enrolled.device_id,
            username: enrolled.user.username.clone(),
            device_name,
            enrolled_at: Utc::now(),
            pinned_ca: ca_pem.is_some(),
        };
        drop(cache_key);
        file.write(dir)?;
        Ok(Device {
            dir: dir.to_owned(),
            file,
            user,
            conn: Mutex::new(conn),
            api,
            sync_lock: tokio::sync::Mutex::new(()),
            syncing: AtomicBool::new(false),
            revoked: AtomicBool::new(false),
            cache_generation: AtomicU64::new(0),
            lookalikes: Mutex::new(None),
            order: Mutex::new(None),
            backoff: Backoff::default(),
            clock: std::sync::Arc::new(Utc::now),
        })
    }

    /// Open the cache with the PIN. Works offline. A wrong PIN answers
    /// [`ClientError::WrongPin`]; after [`vault::ONLINE_SIGN_IN_AFTER`] of them,
    /// [`ClientError::OnlineSignInRequired`]; after [`vault::WIPE_AFTER`], the cache is wiped
    /// ([`ClientError::CacheWiped`]). The rules are in [`vault`].
    pub fn unlock(dir: &Path, pin: &str) -> Result<Device> {
        let _one_attempt_at_a_time = Self::attempt_lock(dir)?;
        let (file, conn) = Self::open_with_pin(dir, pin, false)?;
        Self::finish_unlock(dir, file, conn)
    }

    /// After [`ClientError::OnlineSignInRequired`]: sign in online with password and
    /// authenticator code (the device keeps its id, cache and outbox; its tokens are
    /// replaced), then open the cache with the PIN. A wrong PIN still counts, towards the
    /// wipe. Needs the server.
    pub async fn unlock_after_sign_in(
        dir: &Path,
        pin: &str,
        password: &str,
        totp: &str,
    ) -> Result<Device> {
        let file = DeviceFile::read(dir)?;
        if file.revoked_at.is_some() {
            wipe_cache(dir, "device revoked")?;
            return Err(ClientError::DeviceRevoked);
        }
        if password.is_empty() {
            return Err(ClientError::Invalid("Enter your password.".into()));
        }
        let totp = one_time_code(totp)?;
        let tokens = api_for(dir, &file)?
            .reauth(&doorstep_protocol::ReauthRequest {
                device_id: file.device_id.clone(),
                username: file.username.clone(),
                password: password.to_owned(),
                totp,
            })
            .await
            .map_err(|e| match e {
                ClientError::DeviceRevoked => wipe_revoked(dir),
                other => other,
            })?;
        tracing::info!("signed in again online");
        let dir = dir.to_owned();
        let pin = zeroize::Zeroizing::new(pin.to_owned());
        tokio::task::spawn_blocking(move || {
            let _one_attempt_at_a_time = Self::attempt_lock(&dir)?;
            let (file, conn) = Self::open_with_pin(&dir, &pin, true)?;
            store_tokens(&conn, &tokens)?;
            // The online sign-in is a contact: records show again (see `offline`).
            cache::set_meta(&conn, meta::LAST_CONTACT, &cache::timestamp(Utc::now()))?;
            Self::finish_unlock(&dir, file, conn)
        })
        .await
        .map_err(|e| ClientError::Internal(format!("unlock task: {e}")))?
    }

    /// Change the PIN: the cache key is re-wrapped under `new_pin` (the database is not
    /// re-encrypted). `old_pin` must be the PIN; a wrong one counts like any wrong PIN.
    pub fn change_pin(&mut self, old_pin: &str, new_pin: &str) -> Result<()> {
        Self::change_pin_in(&self.dir, old_pin, new_pin)?;
        self.file = DeviceFile::read(&self.dir)?;
        Ok(())
    }

    /// [`Device::change_pin`] for the device enrolled in `dir`, open or not (the shell shares
    /// the open device, so it changes the file on disk; the open cache keeps its key).
    pub fn change_pin_in(dir: &Path, old_pin: &str, new_pin: &str) -> Result<()> {
        key::check_new_pin(new_pin)?;
        let _one_attempt_at_a_time = vault::lock_attempts(dir)?;
        let mut file = DeviceFile::read(dir)?;
        let Some(wrapped) = file.vault.clone() else {
            return Err(ClientError::Internal("no wrapped key to change".into()));
        };
        let attempts_key = file.attempts_key.clone().unwrap_or_default();
        let failures = vault::read_failures(dir, &attempts_key, &file.device_id) + 1;
        vault::write_failures(dir, &attempts_key, &file.device_id, failures)?;
        let Some(rewrapped) = wrapped.rewrap(old_pin, new_pin, &file.device_id)? else {
            return Err(ClientError::WrongPin {
                remaining: vault::ONLINE_SIGN_IN_AFTER.saturating_sub(failures),
            });
        };
        file.vault = Some(rewrapped);
        file.write(dir)?;
        vault::write_failures(dir, &attempts_key, &file.device_id, 0)?;
        tracing::info!("PIN changed");
        Ok(())
    }

    /// Sign out and wipe: the cache (records, tokens, outbox), the enrolment and the pinned
    /// CA leave the device, which can then be enrolled again (as a new device). Refused while
    /// anything waits to be sent, so that no note and no record of access is lost.
    pub fn sign_out_and_wipe(&self) -> Result<()> {
        let (notes, all) =
            self.with_conn(|c| Ok((outbox::waiting_count(c)?, outbox::waiting_all_count(c)?)))?;
        if all > 0 {
            return Err(ClientError::ItemsWaiting {
                notes,
                views: all - notes,
            });
        }
        // Close the database before its files go; the device answers "revoked" from now on,
        // as a wiped one does.
        self.revoked.store(true, Ordering::SeqCst);
        if let Ok(mut guard) = self.conn.lock()
            && let Ok(nothing) = Connection::open_in_memory()
        {
            drop(std::mem::replace(&mut *guard, nothing));
        }
        wipe_cache(&self.dir, "signed out")?;
        for name in [
            files::DEVICE_FILE,
            files::SERVER_CA_FILE,
            files::PIN_ATTEMPTS_FILE,
        ] {
            remove_if_exists(&self.dir.join(name))?;
        }
        tracing::info!("signed out; device wiped");
        Ok(())
    }

    fn attempt_lock(dir: &Path) -> Result<vault::AttemptLock> {
        DeviceFile::read(dir)?;
        vault::lock_attempts(dir)
    }

    /// The counted PIN check (the caller holds the attempt lock): the device file, upgraded
    /// to a wrapped key if it was of format 1, and the open cache. `signed_in_online` lifts
    /// the online sign-in threshold (the wipe threshold stays).
    fn open_with_pin(
        dir: &Path,
        pin: &str,
        signed_in_online: bool,
    ) -> Result<(DeviceFile, Connection)> {
        let mut file = DeviceFile::read(dir)?;
        if file.revoked_at.is_some() {
            // Wiped already (or the wipe was cut short): say why, whatever is left.
            wipe_cache(dir, "device revoked")?;
            return Err(ClientError::DeviceRevoked);
        }
        let cache_path = dir.join(files::CACHE_FILE);
        let attempts_key = match &file.attempts_key {
            Some(k) => k.clone(),
            None => {
                // Format 1 kept its count unauthenticated: start the authenticated count here.
                let k = vault::new_attempts_key()?;
                vault::write_failures(dir, &k, &file.device_id, 0)?;
                file.attempts_key = Some(k.clone());
                file.write(dir)?;
                k
            }
        };
        let failures = vault::read_failures(dir, &attempts_key, &file.device_id);
        if failures >= vault::WIPE_AFTER {
            // Wiped already (or the wipe was cut short): say so, whatever is left.
            wipe_cache(dir, "too many wrong PINs")?;
            return Err(ClientError::CacheWiped);
        }
        if !cache_path.exists() {
            return Err(ClientError::Internal(format!(
                "The cache {} is missing. Enrol this device again.",
                cache_path.display()
            )));
        }
        if failures >= vault::ONLINE_SIGN_IN_AFTER && !signed_in_online {
            return Err(ClientError::OnlineSignInRequired {
                wipe_in: vault::WIPE_AFTER - failures,
            });
        }
        // Count the attempt before trying it, so that killing the process mid-check gains
        // nothing; a good PIN resets the count.
        let failures = failures + 1;
        vault::write_failures(dir, &attempts_key, &file.device_id, failures)?;
        let opened = match (&file.vault, &file.kdf) {
            (Some(wrapped), _) => match wrapped.unwrap(pin, &file.device_id)? {
                Some(key) => match cache::open(&cache_path, &key) {
                    Ok(conn) => Some(conn),
                    Err(OpenError::WrongKey) => {
                        return Err(ClientError::Internal(
                            "The PIN is right but the cache does not open with its key: the \
                             cache is damaged. Enrol this device again."
                                .into(),
                        ));
                    }
                    Err(OpenError::Other(e)) => return Err(e),
                },
                None => None,
            },
            (None, Some(kdf)) => {
                let key = kdf.derive(pin)?;
                match cache::open(&cache_path, &key) {
                    Ok(conn) => Some(conn),
                    Err(OpenError::WrongKey) => None,
                    Err(OpenError::Other(e)) => return Err(e),
                }
            }
            (None, None) => {
                return Err(ClientError::Internal(
                    "device.json holds no cache key. Enrol this device again.".into(),
                ));
            }
        };
        let Some(conn) = opened else {
            tracing::info!(failures, "wrong PIN");
            return Err(if failures >= vault::WIPE_AFTER {
                wipe_cache(dir, "too many wrong PINs")?;
                ClientError::CacheWiped
            } else if failures >= vault::ONLINE_SIGN_IN_AFTER {
                ClientError::OnlineSignInRequired {
                    wipe_in: vault::WIPE_AFTER - failures,
                }
            } else {
                ClientError::WrongPin {
                    remaining: vault::ONLINE_SIGN_IN_AFTER - failures,
                }
            });
        };
        vault::write_failures(dir, &attempts_key, &file.device_id, 0)?;
        if file.vault.is_none() {
            // Format 1: move to a random key wrapped under the PIN (one re-encryption).
            let key = vault::new_cache_key()?;
            conn.execute_batch(&key::rekey_pragma(&key))?;
            file.vault = Some(vault::WrappedKey::wrap(&key, pin, &file.device_id)?);
            file.kdf = None;
            file.format = files::DEVICE_FILE_FORMAT;
            file.write(dir)?;
            tracing::info!("cache key upgraded to a wrapped random key");
        }
        Ok((file, conn))
    }

    /// The cache open: read the user and build the device.
    fn finish_unlock(dir: &Path, file: DeviceFile, conn: Connection) -> Result<Device> {
        let user = match cache::get_meta(&conn, meta::USER)? {
            Some(json) => {
                let info: UserInfo = serde_json::from_str(&json)
                    .map_err(|e| ClientError::Internal(format!("cached user: {e}")))?;
                user_summary(&info)
            }
            None => return Err(ClientError::Internal("the cache has no user".into())),
        };
        let api = api_for(dir, &file)?;
        Ok(Device {
            dir: dir.to_owned(),
            file,
            user,
            conn: Mutex::new(conn),
            api,
            sync_lock: tokio::sync::Mutex::new(()),
            syncing: AtomicBool::new(false),
            revoked: AtomicBool::new(false),
            cache_generation: AtomicU64::new(0),
            lookalikes: Mutex::new(None),
            order: Mutex::new(None),
            backoff: Backoff::default(),
            clock: std::sync::Arc::new(Utc::now),
        })
    }

    /// This device with another clock (tests: the maximum offline age at any time).
    pub fn with_clock(
        mut self,
        clock: impl Fn() -> DateTime<Utc> + Send + Sync + 'static,
    ) -> Device {
        self.clock = std::sync::Arc::new(clock);
        self
    }

    fn now(&self) -> DateTime<Utc> {
        (self.clock)()
    }

    /// Sign in online with password and authenticator code while unlocked (after
    /// [`ClientError::OfflineTooLong`], or when the server refused the device's tokens): the
    /// tokens are replaced and the contact recorded, so records show again. Needs the server.
    pub async fn sign_in_online(&self, password: &str, totp: &str) -> Result<()> {
        if password.is_empty() {
            return Err(ClientError::Invalid("Enter your password.".into()));
        }
        let totp = one_time_code(totp)?;
        let tokens = self
            .api
            .reauth(&doorstep_protocol::ReauthRequest {
                device_id: self.file.device_id.clone(),
                username: self.file.username.clone(),
                password: password.to_owned(),
                totp,
            })
            .await
            .map_err(|e| match e {
                ClientError::DeviceRevoked => self.wipe_revoked(),
                other => other,
            })?;
        let now = cache::timestamp(self.now());
        self.with_conn(|c| {
            store_tokens(c, &tokens)?;
            cache::set_meta(c, meta::LAST_CONTACT, &now)?;
            cache::set_meta(c, meta::SERVER_REACHABLE, "true")
        })?;
        tracing::info!("signed in again online");
        Ok(())
    }

    /// May records be shown now? (The maximum offline age, [`offline`].)
    fn check_offline_age(&self, c: &Connection) -> Result<()> {
        let max_hours =
            cache::get_meta(c, meta::MAX_OFFLINE_HOURS)?.and_then(|h| h.parse::<u32>().ok());
        let last_contact = cache::get_meta(c, meta::LAST_CONTACT)?
            .as_deref()
            .and_then(cache::parse_timestamp);
        offline::check(max_hours, last_contact, self.now())
    }

    /// True once the server answered that this device is revoked (its cache is wiped).
    pub fn is_revoked(&self) -> bool {
        self.revoked.load(Ordering::SeqCst)
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn device_file(&self) -> &DeviceFile {
        &self.file
    }

    /// Who is signed in on this device.
    pub fn user(&self) -> UserSummary {
        self.user.clone()
    }

    /// Run `f` with the database. Never held across an `.await`.
    fn with_conn<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T>) -> Result<T> {
        if self.revoked.load(Ordering::SeqCst) {
            return Err(ClientError::DeviceRevoked);
        }
        let mut guard = self
            .conn
            .lock()
            .map_err(|_| ClientError::Internal("the cache lock was poisoned".into()))?;
        f(&mut guard)
    }

    /// Pull every change waiting on the server and apply it. Records the outcome for
    /// [`Device::status`] whether it succeeds or not.
    pub async fn sync(&self) -> Result<SyncReport> {
        let _one_at_a_time = self.sync_lock.lock().await;
        self.syncing.store(true, Ordering::SeqCst);
        let started = Instant::now();
        // Push first: what was written offline goes up before the view comes down.
        let pushed = self.push_recorded().await.ok();
        let result = self.pull_all().await;
        // Whatever came of it, pages may have been applied.
        self.cache_generation.fetch_add(1, Ordering::SeqCst);
        self.syncing.store(false, Ordering::SeqCst);
        let now = cache::timestamp(self.now());
        match result {
            Ok(mut report) => {
                report.duration_ms = started.elapsed().as_millis() as u64;
                report.pushed = pushed.unwrap_or_default();
                report.patients = self.with_conn(|c| {
                    // One commit for the whole outcome.
                    let c = c.transaction()?;
                    cache::set_meta(&c, meta::LAST_SYNCED, &now)?;
                    let summary = SyncSummary {
                        at: self.now(),
                        patients_added: report.patients_added,
                        patients_removed: report.patients_removed,
                        items_updated: report.upserts,
                        items_removed: report.deletes,
                        other_changes: report.other_changes,
                        rebuilt: report.rebuilt,
                        sent: report.pushed.accepted,
                        refused: report.pushed.rejected,
                        duration_ms: report.duration_ms,
                    };
                    let summary = serde_json::to_string(&summary)
                        .map_err(|e| ClientError::Internal(format!("sync summary: {e}")))?;
                    cache::set_meta(&c, meta::LAST_SYNC_SUMMARY, &summary)?;
                    // A completed sync is a contact: records show again (see `offline`).
                    cache::set_meta(&c, meta::LAST_CONTACT, &now)?;
                    cache::set_meta(&c, meta::SERVER_REACHABLE, "true")?;
                    cache::delete_meta(&c, meta::LAST_ERROR)?;
                    let patients = queries::patient_count(&c)?;
                    c.commit()?;
                    Ok(patients)
                })?;
                tracing::info!(
                    pages = report.pages,
                    patients = report.patients,
                    ms = report.duration_ms,
                    "sync complete"
                );
                Ok(report)
            }
            Err(ClientError::DeviceRevoked) => Err(self.wipe_revoked()),
            Err(e) => {
                let reachable = !matches!(e, ClientError::Offline(_));
                // Recording the failure must not hide it.
                let _ = self.with_conn(|c| {
                    cache::set_meta(c, meta::LAST_ERROR, &e.to_string())?;
                    cache::set_meta(c, meta::SERVER_REACHABLE, &reachable.to_string())
                });
                tracing::warn!(error = %e, "sync failed");
                Err(e)
            }
        }
    }

    /// The server answered 403 `device_revoked`: close the cache and wipe it, with its tokens
    /// and outbox (the server would refuse the notes waiting in it now), and remember why.
    fn wipe_revoked(&self) -> ClientError {
        if !self.revoked.swap(true, Ordering::SeqCst) {
            // Close the database before its files go.
            if let Ok(mut guard) = self.conn.lock()
                && let Ok(nothing) = Connection::open_in_memory()
            {
                drop(std::mem::replace(&mut *guard, nothing));
            }
            return wipe_revoked(&self.dir);
        }
        ClientError::DeviceRevoked
    }

    /// Send the outbox now, without pulling (a sync pushes first anyway). The outcome is
    /// recorded for the status as in a sync.
    pub async fn push(&self) -> Result<PushReport> {
        let _one_at_a_time = self.sync_lock.lock().await;
        self.push_recorded().await
    }

    /// Send the outbox ([`push`]), recording a failure for the status (the items stay
    /// waiting and go with the next sync).
    async fn push_recorded(&self) -> Result<PushReport> {
        let pushed = match push::push_all(self).await {
            Err(ClientError::DeviceRevoked) => Err(self.wipe_revoked()),
            other => other,
        };
        match &pushed {
            Ok(_) => {
                let _ = self.with_conn(|c| cache::delete_meta(c, meta::LAST_PUSH_ERROR));
            }
            Err(e) => {
                tracing::warn!(error = %e, "push failed");
                let _ =
                    self.with_conn(|c| cache::set_meta(c, meta::LAST_PUSH_ERROR, &e.to_string()));
            }
        }
        pushed
    }

    /// Write and sign a note for a patient on this device's list: it goes into the outbox,
    /// waiting, and is sent at the next sync. Checked here first, so that what the server
    /// could only refuse is never signed: a note needs text, vital signs or a problem; vital
    /// signs must be possible values; the problem must be on the pick list; an amendment must
    /// name a note of the same patient.
    pub fn write_note(&self, patient_id: &str, input: NoteInput) -> Result<NoteSummary> {
        const MAX_TEXT: usize = 20_000;
        let text = input.text.trim().to_owned();
        if text.chars().count() > MAX_TEXT {
            return Err(ClientError::Invalid(format!(
                "The note is too long ({} characters; at most {MAX_TEXT}).",
                text.chars().count()
            )));
        }
        let vitals = match &input.vitals {
            None => None,
            Some(v) => {
                let vitals =
                    doorstep_record::news2::Vitals::from_json_value(v).map_err(|errs| {
                        let all: Vec<String> = errs.iter().map(ToString::to_string).collect();
                        ClientError::Invalid(format!("Vital signs: {}", all.join("; ")))
                    })?;
                Some(serde_json::to_value(vitals).map_err(|e| {
                    ClientError::Internal(format!("vital signs could not be written: {e}"))
                })?)
            }
        };
        let problem = match input.problem.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(code) => {
                let display = doorstep_record::problems::display_of(code).ok_or_else(|| {
                    let list: Vec<String> = doorstep_record::problems::PICK_LIST
                        .iter()
                        .map(|(c, d)| format!("{c} {d}"))
                        .collect();
                    ClientError::Invalid(format!(
                        "SNOMED CT code {code} is not on the problem pick list; choose one of: {}",
                        list.join(", ")
                    ))
                })?;
                Some(doorstep_protocol::NoteProblem {
                    code: code.to_owned(),
                    display: display.to_owned(),
                })
            }
        };
        if text.is_empty() && vitals.is_none() && problem.is_none() {
            return Err(ClientError::Invalid(
                "A note needs text, vital signs or a problem.".into(),
            ));
        }
        let now = Utc::now();
        let id = uuid::Uuid::new_v4().to_string();
        let body = doorstep_protocol::NoteBody {
            text,
            vitals,
            problem,
            replaces: input.replaces.clone(),
            signed_at: now,
        };
        let body = serde_json::to_value(&body)
            .map_err(|e| ClientError::Internal(format!("the note could not be written: {e}")))?;
        self.with_conn(|c| {
            if queries::patient_exists(c, patient_id)?.is_none() {
                return Err(ClientError::NotFound(
                    "This patient is not on this device's list.".into(),
                ));
            }
            if let Some(earlier) = &input.replaces
                && outbox::note_patient(c, earlier)?.as_deref() != Some(patient_id)
            {
                return Err(ClientError::Invalid(format!(
                    "The note to amend ({earlier}) is not a note of this patient written here."
                )));
            }
            outbox::add(
                c,
                outbox::NewItem {
                    id: &id,
                    kind: doorstep_protocol::PUSH_KIND_NOTE,
                    patient_id,
                    body: &body,
                    created_at: now,
                },
            )?;
            outbox::notes(c, Some(patient_id))
        })?
        .into_iter()
        .find(|n| n.id == id)
        .ok_or_else(|| ClientError::Internal("the note just written is not in the outbox".into()))
    }

    /// The clinician opened `section` of the patient's record (`summary` when opening the
    /// record): an outbox item that goes up at the next push, with this device's time and
    /// whether the server was out of reach, for the patient's access report.
    pub fn record_viewed(&self, patient_id: &str, section: &str) -> Result<()> {
        if section.is_empty()
            || section.len() > 40
            || !section.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
        {
            return Err(ClientError::Invalid(format!(
                "A section is a lower-case name such as summary or medications, not {section:?}."
            )));
        }
        let now = self.now();
        let id = uuid::Uuid::new_v4().to_string();
        self.with_conn(|c| {
            if queries::patient_exists(c, patient_id)?.is_none() {
                return Err(ClientError::NotFound(
                    "This patient is not on this device's list.".into(),
                ));
            }
            let offline = cache::get_meta(c, meta::SERVER_REACHABLE)?.as_deref() != Some("true");
            let body = serde_json::to_value(doorstep_protocol::RecordViewBody {
                section: section.to_owned(),
                viewed_at: now,
                offline,
            })
            .map_err(|e| ClientError::Internal(format!("a record view as JSON: {e}")))?;
            outbox::add_view(
                c,
                outbox::NewItem {
                    id: &id,
                    kind: doorstep_protocol::PUSH_KIND_RECORD_VIEW,
                    patient_id,
                    body: &body,
                    created_at: now,
                },
            )
        })
    }

    /// The notes written on this device, newest first (one patient's when given).
    pub fn notes(&self, patient_id: Option<&str>) -> Result<Vec<NoteSummary>> {
        self.with_conn(|c| outbox::notes(c, patient_id))
    }

    /// Keep the draft of a note (any text the composer holds), encrypted with the cache.
    pub fn save_draft(&self, patient_id: &str, draft: &str) -> Result<()> {
        self.with_conn(|c| outbox::save_draft(c, patient_id, draft))
    }

    pub fn draft(&self, patient_id: &str) -> Result<Option<String>> {
        self.with_conn(|c| outbox::draft(c, patient_id))
    }

    pub fn discard_draft(&self, patient_id: &str) -> Result<()> {
        self.with_conn(|c| outbox::discard_draft(c, patient_id))
    }

    /// The pull loop: pages until `more` is false; rebuild on 410.
    ///
    /// While one page is applied the next is already being fetched (and decoded) on another
    /// task, so server, network and device work overlap. The prefetch is only a head start: the
    /// cursor stored is always the one that came with the changes applied, and a prefetch that
    /// failed in any way is dropped and the page asked for again the normal way.
    async fn pull_all(&self) -> Result<SyncReport> {
        let mut report = SyncReport::default();
        let mut rebuilds = 0;
        let mut prefetched: Option<tokio::task::JoinHandle<Result<Pulled>>> = None;
        loop {
            let ready = match prefetched.take() {
                Some(handle) => match handle.await {
                    Ok(Ok(pulled @ (Pulled::Page(_) | Pulled::Resync(_)))) => Some(pulled),
                    _ => None,
                },
                None => None,
            };
            let pulled = match ready {
                Some(pulled) => pulled,
                None => {
                    let cursor = self.with_conn(|c| cache::get_meta(c, meta::CURSOR))?;
                    self.pull_page(cursor.as_deref()).await?
                }
            };
            match pulled {
                Pulled::Page(page) => {
                    if page.more {
                        prefetched = self.prefetch(page.cursor.clone()).await;
                    }
                    tracing::debug!(changes = page.changes.len(), "applying page");
                    let stats = self.with_conn(|c| cache::apply_page(c, &page))?;
                    tracing::debug!("page applied");
                    report.pages += 1;
                    report.patients_added += stats.patients_added;
                    report.patients_removed += stats.patients_removed;
                    report.upserts += stats.upserts;
                    report.deletes += stats.deletes;
                    report.other_changes += stats.other;
                    if !page.more {
                        let as_of = cache::timestamp(page.server_time);
                        self.with_conn(|c| {
                            // One commit for all of them (each is otherwise its own).
                            let tx = c.transaction()?;
                            cache::set_meta(&tx, meta::AS_OF, &as_of)?;
                            // The agreements' limits, as of this sync (absent: the defaults).
                            for (key, value) in [
                                (meta::MAX_OFFLINE_HOURS, page.max_offline_hours),
                                (meta::IDLE_LOCK_MINUTES, page.idle_lock_minutes),
                                (meta::STALE_AFTER_HOURS, page.stale_after_hours),
                            ] {
                                match value {
                                    Some(v) => cache::set_meta(&tx, key, &v.to_string())?,
                                    None => cache::delete_meta(&tx, key)?,
                                }
                            }
                            tx.commit()?;
                            if report.pages > 1 {
                                cache::checkpoint_truncate(c)?;
                            }
                            Ok(())
                        })?;
                        return Ok(report);
                    }
                }
                Pulled::Resync(why) => {
                    rebuilds += 1;
                    if rebuilds > 2 {
                        return Err(ClientError::Server(format!(
                            "the server keeps asking for a full resync: {}",
                            why.message
                        )));
                    }
                    tracing::info!(reason = ?why.reason, "server asked for a rebuild");
                    // Beside the copy held, which stays readable until the rebuild completes.
                    self.with_conn(|c| cache::begin_rebuild(c, Utc::now()))?;
                    report.rebuilt = true;
                }
                Pulled::TokenExpired => {
                    return Err(ClientError::SignInFailed(
                        "The server refused this device's fresh access token. Enrol again.".into(),
                    ));
                }
            }
        }
    }

    /// Start fetching the page after `cursor` on its own task. Best effort: without a usable
    /// access token there is no prefetch, and the page in hand is applied all the same.
    async fn prefetch(&self, cursor: String) -> Option<tokio::task::JoinHandle<Result<Pulled>>> {
        let access = self.access_token().await.ok()?;
        let api = self.api.clone();
        let backoff = self.backoff;
        Some(tokio::spawn(async move {
            backoff
                .run(|| api.pull(access.expose(), Some(&cursor)))
                .await
        }))
    }

    /// One pull, with retries for transient failures and one token refresh when needed.
    async fn pull_page(&self, cursor: Option<&str>) -> Result<Pulled> {
        let mut access = self.access_token().await?;
        let mut refreshed = false;
        loop {
            let pulled = self
                .backoff
                .run(|| self.api.pull(access.expose(), cursor))
                .await?;
            match pulled {
                Pulled::TokenExpired if !refreshed => {
                    access = self.refresh_tokens().await?;
                    refreshed = true;
                }
                other => return Ok(other),
            }
        }
    }

    /// The stored access token, refreshed first when the clock says it has expired.
    async fn access_token(&self) -> Result<Secret> {
        let (token, expires) = self.with_conn(|c| {
            Ok((
                cache::get_meta(c, meta::ACCESS_TOKEN)?,
                cache::get_meta(c, meta::ACCESS_EXPIRES_AT)?,
            ))
        })?;
        let expired = expires
            .as_deref()
            .and_then(cache::parse_timestamp)
            .is_none_or(|t| t <= Utc::now() + chrono::Duration::seconds(10));
        match token {
            Some(t) if !expired => Ok(Secret::from(t)),
            _ => self.refresh_tokens().await,
        }
    }

    /// Exchange the refresh token for new tokens, store them, answer the access token.
    async fn refresh_tokens(&self) -> Result<Secret> {
        let refresh_token = self
            .with_conn(|c| cache::get_meta(c, meta::REFRESH_TOKEN))?
            .map(Secret::from)
            .ok_or_else(|| {
                ClientError::SignInFailed("This device has no refresh token. Enrol again.".into())
            })?;
        let req = RefreshRequest {
            device_id: self.file.device_id.clone(),
            refresh_token: refresh_token.expose().to_owned(),
        };
        let tokens = self.backoff.run(|| self.api.refresh(&req)).await?;
        self.with_conn(|c| store_tokens(c, &tokens))?;
        tracing::debug!("access token refreshed");
        Ok(Secret::new(tokens.access_token))
    }

    /// Is the server reachable now? (`GET /healthz`, 3 s.) Recorded for [`Device::status`].
    pub async fn probe_server(&self) -> bool {
        let up = self.api.probe().await;
        let _ = self.with_conn(|c| cache::set_meta(c, meta::SERVER_REACHABLE, &up.to_string()));
        up
    }

    /// The sync state shown on every screen. No network.
    pub fn status(&self) -> Result<SyncStatus> {
        self.with_conn(|c| {
            Ok(SyncStatus {
                server_url: self.file.server_url.clone(),
                last_synced: cache::get_meta(c, meta::LAST_SYNCED)?
                    .as_deref()
                    .and_then(cache::parse_timestamp),
                server_reachable: cache::get_meta(c, meta::SERVER_REACHABLE)?.map(|v| v == "true"),
                patients: queries::patient_count(c)?,
                waiting: outbox::waiting_count(c)?,
                last_error: cache::get_meta(c, meta::LAST_ERROR)?,
                last_push_error: cache::get_meta(c, meta::LAST_PUSH_ERROR)?,
                syncing: self.syncing.load(Ordering::SeqCst),
                rebuilding_since: cache::rebuilding_since(c)?,
                idle_lock_secs: idle_lock_of(c)?.as_secs(),
                last_sync: cache::get_meta(c, meta::LAST_SYNC_SUMMARY)?
                    .and_then(|j| serde_json::from_str(&j).ok()),
            })
        })
    }

    /// How long without input before the device locks: the shortest `idle_lock_minutes` of
    /// the agreements covering the user, from the last sync; [`DEFAULT_IDLE_LOCK`] before one.
    pub fn idle_lock(&self) -> Result<std::time::Duration> {
        self.with_conn(|c| idle_lock_of(c))
    }

    /// The list, searched by name, NHS number, postcode or date of birth when `search` is set.
    /// A patient whose every entry has ended is not listed, even before a sync purges them.
    /// Refused with [`ClientError::OfflineTooLong`] past the maximum offline age.
    pub fn list(&self, search: Option<&str>, today: NaiveDate) -> Result<Vec<ListRow>> {
        self.with_conn(|c| {
            self.check_offline_age(c)?;
            let mut rows = queries::list(c, search, today, self.now())?;
            let same = self.same_names(c)?;
            for row in &mut rows {
                row.same_name = same.contains(&row.patient_id);
            }
            Ok(rows)
        })
    }

    /// The first `limit` rows of [`Device::list`] (all of them when `None`), and how many
    /// there are in all: what the list screen shows first. Only the rows shown are built; the
    /// list's order is kept between syncs.
    pub fn list_page(
        &self,
        search: Option<&str>,
        today: NaiveDate,
        limit: Option<usize>,
    ) -> Result<ListPage> {
        let Some(limit) = limit else {
            let rows = self.list(search, today)?;
            return Ok(ListPage {
                total: rows.len() as u32,
                rows,
            });
        };
        self.with_conn(|c| {
            self.check_offline_age(c)?;
            let now = self.now();
            let order = self.list_order(c, today, now)?;
            let (mut rows, total) = queries::list_first(c, &order, search, limit, today, now)?;
            let same = self.same_names(c)?;
            for row in &mut rows {
                row.same_name = same.contains(&row.patient_id);
            }
            Ok(ListPage {
                rows,
                total: total as u32,
            })
        })
    }

    /// The whole list's order, worked out again only after a sync, on a new day, or once an
    /// entry on the list has ended (the only ways it changes).
    fn list_order(
        &self,
        c: &Connection,
        today: NaiveDate,
        now: DateTime<Utc>,
    ) -> Result<Arc<queries::ListOrder>> {
        let key = (self.cache_generation.load(Ordering::SeqCst), today);
        let mut memo = self
            .order
            .lock()
            .map_err(|_| ClientError::Internal("the list order memo was poisoned".into()))?;
        if let Some((generation, day, order)) = memo.as_ref()
            && (*generation, *day) == key
            && order.valid_until.is_none_or(|end| now < end)
        {
            return Ok(order.clone());
        }
        let order = Arc::new(queries::list_order(c, today, now)?);
        *memo = Some((key.0, key.1, order.clone()));
        Ok(order)
    }

    /// One patient's record; `None` when the patient is not (or no longer) on the device.
    /// Refused with [`ClientError::OfflineTooLong`] past the maximum offline age.
    pub fn record(&self, patient_id: &str, today: NaiveDate) -> Result<Option<PatientRecord>> {
        self.with_conn(|c| {
            self.check_offline_age(c)?;
            let Some(mut record) = queries::record(c, patient_id, today)? else {
                return Ok(None);
            };
            record.same_name = self.same_names(c)?.contains(patient_id);
            Ok(Some(record))
        })
    }

    /// The patients on the list who share their name with another ([`queries::same_names`]),
    /// computed again only after a sync or when the minute changes.
    fn same_names(&self, c: &Connection) -> Result<Arc<HashSet<String>>> {
        let now = self.now();
        let key = (
            self.cache_generation.load(Ordering::SeqCst),
            now.timestamp() / 60,
        );
        let mut memo = self
            .lookalikes
            .lock()
            .map_err(|_| ClientError::Internal("the same-name memo was poisoned".into()))?;
        if let Some((generation, minute, ids)) = memo.as_ref()
            && (*generation, *minute) == key
        {
            return Ok(ids.clone());
        }
        let ids = Arc::new(queries::same_names(c, now)?);
        *memo = Some((key.0, key.1, ids.clone()));
        Ok(ids)
    }

    /// The id of the cached patient with this NHS number. Not refused past the maximum
    /// offline age: it shows nothing of the record, and a note for a patient the clinician
    /// has just seen must still be written (and sent when the device reaches the server).
    pub fn find_patient(&self, nhs_number: &NhsNumber) -> Result<Option<String>> {
        self.with_conn(|c| queries::find_patient(c, nhs_number.digits()))
    }

    /// When the last completed sync ended.
    pub fn last_synced(&self) -> Result<Option<DateTime<Utc>>> {
        self.with_conn(|c| {
            Ok(cache::get_meta(c, meta::LAST_SYNCED)?
                .as_deref()
                .and_then(cache::parse_timestamp))
        })
    }
}

/// The authenticator code as typed (spaces allowed), checked: six digits.
fn one_time_code(typed: &str) -> Result<String> {
    let code: String = typed.chars().filter(|c| !c.is_whitespace()).collect();
    if code.len() != 6 || !code.chars().all(|c| c.is_ascii_digit()) {
        return Err(ClientError::Invalid(
            "The authenticator code has 6 digits.".into(),
        ));
    }
    Ok(code)
}

/// The idle lock before the server has said otherwise (DESIGN.md section 7).
pub const DEFAULT_IDLE_LOCK: std::time::Duration = std::time::Duration::from_secs(5 * 60);

fn idle_lock_of(c: &Connection) -> Result<std::time::Duration> {
    Ok(cache::get_meta(c, meta::IDLE_LOCK_MINUTES)?
        .and_then(|m| m.parse::<u64>().ok())
        .filter(|m| *m > 0)
        .map_or(DEFAULT_IDLE_LOCK, |m| {
            std::time::Duration::from_secs(m * 60)
        }))
}

fn user_summary(u: &UserInfo) -> UserSummary {
    UserSummary {
        username: u.username.clone(),
        display_name: u.display_name.clone(),
        role: u.role.clone(),
        service: u.service.clone(),
    }
}

fn store_tokens(conn: &Connection, tokens: &TokenResponse) -> Result<()> {
    cache::set_meta(conn, meta::ACCESS_TOKEN, &tokens.access_token)?;
    cache::set_meta(
        conn,
        meta::ACCESS_EXPIRES_AT,
        &cache::timestamp(tokens.access_expires_at),
    )?;
    cache::set_meta(conn, meta::REFRESH_TOKEN, &tokens.refresh_token)?;
    Ok(())
}

/// Only the user may list or open the data directory (the cache is encrypted anyway; the rest
/// says which server and user the device belongs to).
fn restrict_to_owner(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// The API client of an enrolled device: its server, trusting only its pinned CA if it has one.
fn api_for(dir: &Path, file: &DeviceFile) -> Result<Api> {
    let ca_pem = match file.ca_path(dir) {
        Some(path) => Some(std::fs::read(&path).map_err(|e| {
            ClientError::Internal(format!(
                "The pinned CA {} could not be read ({e}). Enrol this device again.",
                path.display()
            ))
        })?),
        None => None,
    };
    Api::new(&file.server_url, ca_pem.as_deref())
}

/// Wipe the cache of a revoked device (closed) and record the revocation in `device.json`, so
/// that every unlock from now on says why there are no records. Answers the error to report.
fn wipe_revoked(dir: &Path) -> ClientError {
    if let Err(e) = wipe_cache(dir, "device revoked") {
        // Unlock tries again (device.json says revoked), so the wipe cannot be skipped.
        tracing::error!(error = %e, "the revoked device's cache could not be removed yet");
    }
    let marked = DeviceFile::read(dir).and_then(|mut file| {
        file.revoked_at.get_or_insert_with(Utc::now);
        file.write(dir)
    });
    if let Err(e) = marked {
        tracing::error!(error = %e, "the revocation could not be recorded in device.json");
    }
    ClientError::DeviceRevoked
}

/// Delete the cache and its WAL files: what a wipe (too many wrong PINs, or a revoked
/// device) leaves is `device.json` (no patient data, no tokens) and the count. The outbox
/// lives in the cache and goes with it.
fn wipe_cache(dir: &Path, why: &'static str) -> Result<()> {
    for name in [
        files::CACHE_FILE.to_owned(),
        format!("{}-wal", files::CACHE_FILE),
        format!("{}-shm", files::CACHE_FILE),
    ] {
        remove_if_exists(&dir.join(name))?;
    }
    tracing::warn!(why, "cache wiped");
    Ok(())
}

fn remove_if_exists(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn default_device_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .unwrap_or_else(|| "this computer".into());
    format!("Doorstep on {host}")
}

#[cfg(test)]
mod tests;
