//! From the clinician's PIN to a key: Argon2id (memory-hard, so a stolen laptop's data
//! directory resists offline guessing) over the PIN with a random 16-byte salt, giving 32 raw
//! key bytes, in a [`Zeroizing`] buffer. Since `device.json` format 2 this is the
//! key-encryption key of the wrapped cache key ([`crate::vault`]); format 1 used it as the
//! SQLCipher key itself, and is upgraded at its next unlock. SQLCipher takes raw keys
//! (`PRAGMA key = "x'…'"`), which skips its own PBKDF2.

use argon2::{Algorithm, Argon2, Params, Version};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::error::{ClientError, Result};

/// Argon2id memory cost in KiB (OWASP's minimum is 19 MiB with t=2; we use more memory).
pub const DEFAULT_M_KIB: u32 = 64 * 1024;
/// Argon2id passes.
pub const DEFAULT_T: u32 = 2;
/// Argon2id lanes.
pub const DEFAULT_P: u32 = 1;

/// The KDF recorded in `device.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    /// Always `argon2id`.
    pub algorithm: String,
    /// 16 random bytes, hex.
    pub salt: String,
    pub m_kib: u32,
    pub t: u32,
    pub p: u32,
}

impl KdfParams {
    /// Default costs and a fresh random salt.
    pub fn new_random() -> Result<KdfParams> {
        let mut salt = [0u8; 16];
        getrandom::fill(&mut salt)
            .map_err(|e| ClientError::Internal(format!("no randomness for the salt: {e}")))?;
        Ok(KdfParams {
            algorithm: "argon2id".into(),
            salt: hex::encode(salt),
            m_kib: DEFAULT_M_KIB,
            t: DEFAULT_T,
            p: DEFAULT_P,
        })
    }

    /// Derive the 32-byte cache key from `pin`.
    pub fn derive(&self, pin: &str) -> Result<Zeroizing<[u8; 32]>> {
        if self.algorithm != "argon2id" {
            return Err(ClientError::Internal(format!(
                "unknown key derivation '{}' in device.json",
                self.algorithm
            )));
        }
        let salt = hex::decode(&self.salt)
            .map_err(|_| ClientError::Internal("device.json has a damaged salt".into()))?;
        let params = Params::new(self.m_kib, self.t, self.p, Some(32))
            .map_err(|e| ClientError::Internal(format!("bad KDF parameters: {e}")))?;
        let mut key = Zeroizing::new([0u8; 32]);
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password_into(pin.as_bytes(), &salt, key.as_mut())
            .map_err(|e| ClientError::Internal(format!("key derivation failed: {e}")))?;
        Ok(key)
    }
}

/// Check a new PIN or passphrase against the one rule ([`doorstep_ipc::pin`]); the message
/// says what is wrong.
pub fn check_new_pin(pin: &str) -> Result<()> {
    match doorstep_ipc::pin::pin_problem(pin) {
        Some(problem) => Err(ClientError::Invalid(problem)),
        None => Ok(()),
    }
}

/// The SQL that hands a raw key to SQLCipher. The returned string holds the key and is wiped on
/// drop.
pub(crate) fn key_pragma(key: &[u8; 32]) -> Zeroizing<String> {
    let hex = Zeroizing::new(hex::encode(key));
    Zeroizing::new(format!("PRAGMA key = \"x'{}'\";", hex.as_str()))
}

/// The SQL that re-encrypts an open cache under a new raw key (wiped on drop).
pub(crate) fn rekey_pragma(key: &[u8; 32]) -> Zeroizing<String> {
    let hex = Zeroizing::new(hex::encode(key));
    Zeroizing::new(format!("PRAGMA rekey = \"x'{}'\";", hex.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_pin_same_key_other_pin_or_salt_other_key() {
        let a = KdfParams::new_random().unwrap();
        let b = KdfParams::new_random().unwrap();
        assert_ne!(a.salt, b.salt);
        let started = std::time::Instant::now();
        let k1 = a.derive("2468").unwrap();
        let took = started.elapsed();
        eprintln!("argon2id m={} KiB t={}: {took:?}", a.m_kib, a.t);
        assert_eq!(*k1, *a.derive("2468").unwrap());
        assert_ne!(*k1, *a.derive("2469").unwrap());
        assert_ne!(*k1, *b.derive("2468").unwrap());
    }

    #[test]
    fn pin_shape_is_the_one_rule() {
        assert!(check_new_pin("1234").is_err());
        assert!(check_new_pin("123456").is_err());
        assert!(check_new_pin("135790").is_ok());
        assert!(check_new_pin(&"x".repeat(129)).is_err());
    }

    #[test]
    fn key_pragma_is_raw_hex() {
        let sql = key_pragma(&[0xab; 32]);
        assert_eq!(
            sql.as_str(),
            format!("PRAGMA key = \"x'{}'\";", "ab".repeat(32))
        );
    }
}
