//! The device vault: the cache key, wrapped under the PIN, and the count of wrong PINs.
//!
//! A laptop left on a bus must give nothing away, so the data directory on its own is worth
//! one Argon2id derivation per guess and no less.
//!
//! # The key
//!
//! - The SQLCipher key is 32 random bytes made at enrolment ([`new_cache_key`]), never
//!   derived from the PIN. SQLCipher takes it raw, skipping its own PBKDF2.
//! - `device.json` keeps it wrapped ([`WrappedKey`]): AES-256-GCM under a key-encryption key
//!   derived from the PIN with Argon2id ([`crate::key::KdfParams`], 64 MiB, 2 passes, a
//!   random salt), with the device id as associated data, so a wrapped key copied to another
//!   enrolment does not open. A wrong PIN fails the AEAD tag: a definite "wrong PIN", with no
//!   database opened.
//! - Changing the PIN re-wraps the same key ([`WrappedKey::rewrap`]); the database is not
//!   re-encrypted. The key and the key-encryption key live in [`Zeroizing`] buffers.
//!
//! # The count of wrong PINs
//!
//! `pin-attempts.json` holds the count of wrong PINs since the last good one, authenticated
//! with an HMAC under a random key kept in `device.json` and bound to the device id.
//!
//! - It is counted **before** the PIN is tried and reset only after a good one, so killing
//!   the app mid-check gains nothing; an exclusive lock on `pin-attempts.lock` makes parallel
//!   attempts count one by one.
//! - A **missing, damaged or altered** count is read as the worst case short of a wipe: no
//!   PIN guesses at all until the user signs in online ([`ONLINE_SIGN_IN_AFTER`]). Deleting
//!   the file, or editing it without the key in `device.json`, buys no guesses.
//! - After [`ONLINE_SIGN_IN_AFTER`] wrong PINs the cache opens only after an online sign-in
//!   (password and authenticator code); after [`WIPE_AFTER`] the cache is wiped.
//!
//! The count protects the app's own door. Someone who copies the directory and runs their own
//! code skips it; what stops them is the Argon2id work per guess and the PIN rule
//! ([`doorstep_ipc::pin`]).

use std::fs;
use std::path::Path;

use hmac::{Hmac, Mac};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::error::{ClientError, Result};
use crate::files::write_atomically;
use crate::key::KdfParams;

/// Wrong PINs after which the cache opens only after an online sign-in.
pub const ONLINE_SIGN_IN_AFTER: u32 = 5;
/// Wrong PINs after which the cache is wiped.
pub const WIPE_AFTER: u32 = 10;

pub const PIN_ATTEMPTS_FILE: &str = "pin-attempts.json";
const PIN_ATTEMPTS_LOCK: &str = "pin-attempts.lock";
const AEAD_NAME: &str = "aes-256-gcm";

fn random<const N: usize>() -> Result<Zeroizing<[u8; N]>> {
    let mut bytes = Zeroizing::new([0u8; N]);
    getrandom::fill(bytes.as_mut())
        .map_err(|e| ClientError::Internal(format!("no randomness: {e}")))?;
    Ok(bytes)
}

/// A fresh random cache key.
pub fn new_cache_key() -> Result<Zeroizing<[u8; 32]>> {
    random::<32>()
}

/// A fresh random key for the attempt counter's HMAC, hex (kept in `device.json`).
pub fn new_attempts_key() -> Result<String> {
    Ok(hex::encode(random::<32>()?.as_ref()))
}

/// The cache key sealed under a key derived from the PIN.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrappedKey {
    /// How the key-encryption key comes from the PIN.
    pub kdf: KdfParams,
    /// Always `aes-256-gcm`.
    pub aead: String,
    /// 12 random bytes, hex.
    pub nonce: String,
    /// The sealed cache key and its tag, hex.
    pub sealed: String,
}

impl WrappedKey {
    /// Seal `cache_key` under `pin` for device `device_id`, with a fresh salt and nonce.
    pub fn wrap(cache_key: &[u8; 32], pin: &str, device_id: &str) -> Result<WrappedKey> {
        WrappedKey::wrap_with(KdfParams::new_random()?, cache_key, pin, device_id)
    }

    /// [`WrappedKey::wrap`] with the given derivation (tests use cheap costs).
    pub(crate) fn wrap_with(
        kdf: KdfParams,
        cache_key: &[u8; 32],
        pin: &str,
        device_id: &str,
    ) -> Result<WrappedKey> {
        let kek = kdf.derive(pin)?;
        let nonce = random::<12>()?;
        let mut sealed = Zeroizing::new(cache_key.to_vec());
        aead_key(&kek)?
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(*nonce),
                Aad::from(device_id.as_bytes()),
                &mut *sealed,
            )
            .map_err(|_| ClientError::Internal("the cache key could not be sealed".into()))?;
        Ok(WrappedKey {
            kdf,
            aead: AEAD_NAME.into(),
            nonce: hex::encode(nonce.as_ref()),
            sealed: hex::encode(&*sealed),
        })
    }

    /// The cache key, or `None` when `pin` is not the PIN (the tag does not verify).
    pub fn unwrap(&self, pin: &str, device_id: &str) -> Result<Option<Zeroizing<[u8; 32]>>> {
        if self.aead != AEAD_NAME {
            return Err(ClientError::Internal(format!(
                "device.json: unknown key wrapping '{}'",
                self.aead
            )));
        }
        let damaged = || ClientError::Internal("device.json: the wrapped key is damaged".into());
        let nonce: [u8; 12] = hex::decode(&self.nonce)
            .ok()
            .and_then(|n| n.try_into().ok())
            .ok_or_else(damaged)?;
        let mut sealed = Zeroizing::new(hex::decode(&self.sealed).map_err(|_| damaged())?);
        let kek = self.kdf.derive(pin)?;
        let Ok(opened) = aead_key(&kek)?.open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(device_id.as_bytes()),
            &mut sealed,
        ) else {
            return Ok(None);
        };
        let key: [u8; 32] = opened.try_into().map_err(|_| damaged())?;
        Ok(Some(Zeroizing::new(key)))
    }

    /// The same cache key under `new_pin` (a fresh salt and nonce), or `None` when `old_pin`
    /// is wrong. The database is untouched.
    pub fn rewrap(&self, old_pin: &str, new_pin: &str, device_id: &str) -> Result<Option<Self>> {
        match self.unwrap(old_pin, device_id)? {
            Some(key) => Ok(Some(WrappedKey::wrap(&key, new_pin, device_id)?)),
            None => Ok(None),
        }
    }
}

fn aead_key(kek: &[u8; 32]) -> Result<LessSafeKey> {
    UnboundKey::new(&AES_256_GCM, kek)
        .map(LessSafeKey::new)
        .map_err(|_| ClientError::Internal("bad key-encryption key".into()))
}

/// The count of wrong PINs as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct StoredAttempts {
    failures: u32,
    /// HMAC-SHA256 over the device id and the count, hex.
    mac: String,
}

fn attempts_mac(key_hex: &str, device_id: &str, failures: u32) -> Result<String> {
    let key = Zeroizing::new(
        hex::decode(key_hex)
            .map_err(|_| ClientError::Internal("device.json: damaged attempts key".into()))?,
    );
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key)
        .map_err(|_| ClientError::Internal("device.json: damaged attempts key".into()))?;
    mac.update(b"doorstep pin attempts\0");
    mac.update(device_id.as_bytes());
    mac.update(b"\0");
    mac.update(&failures.to_be_bytes());
    Ok(hex::encode(mac.finalize().into_bytes()))
}

/// Wrong PINs since the last good one, as read: a missing or altered file reads as
/// [`ONLINE_SIGN_IN_AFTER`] (see the module doc).
pub fn read_failures(dir: &Path, key_hex: &str, device_id: &str) -> u32 {
    let worst = ONLINE_SIGN_IN_AFTER;
    let Ok(text) = fs::read_to_string(dir.join(PIN_ATTEMPTS_FILE)) else {
        return worst;
    };
    let Ok(stored) = serde_json::from_str::<StoredAttempts>(&text) else {
        return worst;
    };
    match attempts_mac(key_hex, device_id, stored.failures) {
        Ok(mac) if mac == stored.mac => stored.failures,
        // Keep the higher of the two: a genuine count past the threshold stays.
        _ => worst.max(stored.failures.min(WIPE_AFTER)),
    }
}

/// Store `failures` for this device.
pub fn write_failures(dir: &Path, key_hex: &str, device_id: &str, failures: u32) -> Result<()> {
    let stored = StoredAttempts {
        failures,
        mac: attempts_mac(key_hex, device_id, failures)?,
    };
    let text = serde_json::to_string(&stored).map_err(|e| ClientError::Internal(e.to_string()))?;
    write_atomically(&dir.join(PIN_ATTEMPTS_FILE), text.as_bytes())
}

/// Holds the exclusive lock that makes PIN attempts one at a time (across processes too),
/// until dropped.
pub struct AttemptLock(#[allow(dead_code)] fs::File);

/// Wait for the attempt lock of `dir`.
pub fn lock_attempts(dir: &Path) -> Result<AttemptLock> {
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(PIN_ATTEMPTS_LOCK))?;
    file.lock()?;
    Ok(AttemptLock(file))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pin_unwraps_the_key_another_pin_or_device_does_not() {
        let key = new_cache_key().unwrap();
        let wrapped = WrappedKey::wrap(&key, "246813", "dev-1").unwrap();
        assert_eq!(*wrapped.unwrap("246813", "dev-1").unwrap().unwrap(), *key);
        assert!(wrapped.unwrap("246814", "dev-1").unwrap().is_none());
        assert!(
            wrapped.unwrap("246813", "dev-2").unwrap().is_none(),
            "bound to the device id"
        );
        // The key itself is not in the file.
        let json = serde_json::to_string(&wrapped).unwrap();
        assert!(!json.contains(&hex::encode(key.as_ref())));
        assert_ne!(*key, [0u8; 32]);
    }

    #[test]
    fn a_pin_change_rewraps_the_same_key() {
        let key = new_cache_key().unwrap();
        let wrapped = WrappedKey::wrap(&key, "246813", "dev-1").unwrap();
        assert!(
            wrapped
                .rewrap("000000", "975310", "dev-1")
                .unwrap()
                .is_none()
        );
        let rewrapped = wrapped
            .rewrap("246813", "975310", "dev-1")
            .unwrap()
            .unwrap();
        assert_ne!(rewrapped.kdf.salt, wrapped.kdf.salt);
        assert_eq!(*rewrapped.unwrap("975310", "dev-1").unwrap().unwrap(), *key);
        assert!(rewrapped.unwrap("246813", "dev-1").unwrap().is_none());
    }

    #[test]
    fn a_damaged_wrapped_key_is_an_error_not_a_wrong_pin() {
        let key = new_cache_key().unwrap();
        let mut wrapped = WrappedKey::wrap(&key, "246813", "dev-1").unwrap();
        wrapped.nonce = "zz".into();
        assert!(wrapped.unwrap("246813", "dev-1").is_err());
    }

    #[test]
    fn the_count_survives_and_a_missing_or_edited_count_is_the_worst_case() {
        let dir = tempfile::tempdir().unwrap();
        let key = new_attempts_key().unwrap();
        assert_eq!(
            read_failures(dir.path(), &key, "dev-1"),
            ONLINE_SIGN_IN_AFTER
        );
        write_failures(dir.path(), &key, "dev-1", 2).unwrap();
        assert_eq!(read_failures(dir.path(), &key, "dev-1"), 2);
        // Edited to zero by hand: the MAC no longer matches.
        let path = dir.path().join(PIN_ATTEMPTS_FILE);
        let text = fs::read_to_string(&path).unwrap();
        fs::write(&path, text.replace("\"failures\":2", "\"failures\":0")).unwrap();
        assert_eq!(
            read_failures(dir.path(), &key, "dev-1"),
            ONLINE_SIGN_IN_AFTER
        );
        // Another device's count, or garbage, or no file: the same.
        write_failures(dir.path(), &key, "dev-2", 0).unwrap();
        assert_eq!(
            read_failures(dir.path(), &key, "dev-1"),
            ONLINE_SIGN_IN_AFTER
        );
        fs::write(&path, "not json").unwrap();
        assert_eq!(
            read_failures(dir.path(), &key, "dev-1"),
            ONLINE_SIGN_IN_AFTER
        );
        fs::remove_file(&path).unwrap();
        assert_eq!(
            read_failures(dir.path(), &key, "dev-1"),
            ONLINE_SIGN_IN_AFTER
        );
        // A count past the threshold stays past it even if its MAC is broken.
        fs::write(&path, r#"{"failures":9,"mac":"00"}"#).unwrap();
        assert_eq!(read_failures(dir.path(), &key, "dev-1"), 9);
    }
}
