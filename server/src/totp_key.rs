//! The key the users' TOTP secrets are sealed under, kept apart from the database.
//!
//! # Rules
//!
//! - A TOTP secret is stored sealed: `sealed1:` and base64url of a random 96-bit nonce
//!   followed by AES-256-GCM (ring) of the base32 secret, with the username as associated
//!   data (a sealed secret moved to another user's row does not open). A copy of the
//!   database alone gives no second factor.
//! - The key is 32 random bytes in `DIR/totp-key` (mode 0600), made by the first server or
//!   seeding that needs it; never in the database. Every node of a federation needs the same
//!   file, like its TLS certificate: the database keeps a check value (HMAC-SHA-256 of a fixed
//!   label under the key, not the key), and a node whose key does not match refuses to start
//!   ([`adopt`]), instead of failing every sign-in.
//! - At start, [`adopt`] seals any secret still stored in plaintext (a database from before
//!   sealing); the write is conditional on the plaintext still being there, so nodes starting
//!   together agree.

use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use sha2::Sha256;
use zeroize::Zeroize;

use crate::store::{Store, StoreError};

/// The key file's name in the data directory.
pub const TOTP_KEY_FILE: &str = "totp-key";
/// The name of the key's check value in the store's shared keys.
pub const TOTP_KEY_CHECK_NAME: &str = "totp-key-check";
const SEALED_PREFIX: &str = "sealed1:";
const CHECK_LABEL: &[u8] = b"doorstep totp-key check v1";

#[derive(Debug, thiserror::Error)]
pub enum TotpKeyError {
    #[error("the TOTP key file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the TOTP key file {0} is not 32 bytes: restore it from a backup")]
    BadFile(PathBuf),
    #[error(
        "the TOTP key file {0} is not the key this federation's TOTP secrets are sealed with; \
         copy the totp-key of the node or seeding that made the database"
    )]
    Mismatch(PathBuf),
    #[error("a stored TOTP secret does not open with this server's key")]
    Unreadable,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The sealing key (and where it came from, for messages).
pub struct TotpKey {
    key: LessSafeKey,
    check: [u8; 32],
    path: PathBuf,
}

impl std::fmt::Debug for TotpKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TotpKey")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl TotpKey {
    /// The key in `DIR/totp-key`, made (random, mode 0600) when there is none.
    pub fn load_or_create(data_dir: &Path) -> Result<TotpKey, TotpKeyError> {
        let path = data_dir.join(TOTP_KEY_FILE);
        let io = |source| TotpKeyError::Io {
            path: path.clone(),
            source,
        };
        let mut bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(data_dir).map_err(io)?;
                let mut fresh = [0u8; 32];
                getrandom::fill(&mut fresh).expect("the operating system provides random bytes");
                match crate::cursor::write_private(&path, &fresh) {
                    Ok(()) => fresh.to_vec(),
                    // Another process made it first: use theirs.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        std::fs::read(&path).map_err(io)?
                    }
                    Err(e) => return Err(io(e)),
                }
            }
            Err(e) => return Err(io(e)),
        };
        let key: Result<[u8; 32], _> = bytes.as_slice().try_into();
        bytes.zeroize();
        let Ok(mut raw) = key else {
            return Err(TotpKeyError::BadFile(path));
        };
        let key = TotpKey::from_bytes(raw, path);
        raw.zeroize();
        Ok(key)
    }

    /// A key from its bytes (`path` only names it in messages).
    pub fn from_bytes(raw: [u8; 32], path: PathBuf) -> TotpKey {
        let mut mac = Hmac::<Sha256>::new_from_slice(&raw).expect("HMAC takes any key length");
        mac.update(CHECK_LABEL);
        TotpKey {
            key: LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &raw).expect("a 256-bit key")),
            check: mac.finalize().into_bytes().into(),
            path,
        }
    }

    /// Seal `username`'s base32 secret for the store.
    pub fn seal(&self, username: &str, secret_b32: &str) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).expect("the operating system provides random bytes");
        let mut data = secret_b32.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(username.as_bytes()),
                &mut data,
            )
            .expect("sealing a short secret");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        data.zeroize();
        format!("{SEALED_PREFIX}{}", URL_SAFE_NO_PAD.encode(out))
    }

    /// The base32 secret of `username` from its stored form.
    pub fn open(&self, username: &str, stored: &str) -> Result<String, TotpKeyError> {
        let encoded = stored
            .strip_prefix(SEALED_PREFIX)
            .ok_or(TotpKeyError::Unreadable)?;
        let mut bytes = URL_SAFE_NO_PAD
            .decode(encoded)
            .map_err(|_| TotpKeyError::Unreadable)?;
        if bytes.len() < NONCE_LEN {
            return Err(TotpKeyError::Unreadable);
        }
        let (nonce, sealed) = bytes.split_at_mut(NONCE_LEN);
        let nonce =
            Nonce::try_assume_unique_for_key(nonce).map_err(|_| TotpKeyError::Unreadable)?;
        let opened = self
            .key
            .open_in_place(nonce, Aad::from(username.as_bytes()), sealed)
            .map_err(|_| TotpKeyError::Unreadable)?;
        let secret = String::from_utf8(opened.to_vec()).map_err(|_| TotpKeyError::Unreadable);
        bytes.zeroize();
        secret
    }

    /// Whether a stored secret is sealed (not a plaintext one from before sealing).
    pub fn is_sealed(stored: &str) -> bool {
        stored.starts_with(SEALED_PREFIX)
    }
}

/// Make `key` this federation's: check it against the check value in the store (storing its
/// own when there is none), then seal every plaintext secret. Answers how many it sealed.
pub async fn adopt(store: &dyn Store, key: &TotpKey) -> Result<usize, TotpKeyError> {
    let stored = store
        .key_or_insert(TOTP_KEY_CHECK_NAME, &key.check, chrono::Utc::now())
        .await?;
    if stored != key.check {
        return Err(TotpKeyError::Mismatch(key.path.clone()));
    }
    let mut sealed = 0;
    for user in store.users().await? {
        if TotpKey::is_sealed(&user.totp_secret) {
            continue;
        }
        let new = key.seal(&user.username, &user.totp_secret);
        match store
            .replace_totp_secret(&user.id, &user.totp_secret, &new)
            .await
        {
            Ok(()) => sealed += 1,
            // Another node sealed it first (or it was reset meanwhile).
            Err(StoreError::Stale(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if sealed > 0 {
        tracing::info!(users = sealed, "sealed plaintext TOTP secrets");
    }
    Ok(sealed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_secret_opens_only_with_its_key_and_username() {
        let key = TotpKey::from_bytes([7; 32], "test".into());
        let sealed = key.seal("nurse", "JBSWY3DPEHPK3PXP");
        assert!(TotpKey::is_sealed(&sealed));
        assert!(!sealed.contains("JBSWY3DPEHPK3PXP"));
        assert_eq!(key.open("nurse", &sealed).unwrap(), "JBSWY3DPEHPK3PXP");
        assert!(key.open("gp", &sealed).is_err(), "moved to another user");
        let other = TotpKey::from_bytes([8; 32], "other".into());
        assert!(other.open("nurse", &sealed).is_err());
        assert!(key.open("nurse", "JBSWY3DPEHPK3PXP").is_err(), "plaintext");
        assert_ne!(
            sealed,
            key.seal("nurse", "JBSWY3DPEHPK3PXP"),
            "a fresh nonce"
        );
    }

    #[test]
    fn the_key_file_is_made_once_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let a = TotpKey::load_or_create(dir.path()).unwrap();
        let b = TotpKey::load_or_create(dir.path()).unwrap();
        assert_eq!(a.check, b.check);
        let path = dir.path().join(TOTP_KEY_FILE);
        assert_eq!(std::fs::read(&path).unwrap().len(), 32);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&path, b"short").unwrap();
        assert!(matches!(
            TotpKey::load_or_create(dir.path()),
            Err(TotpKeyError::BadFile(_))
        ));
    }
}
