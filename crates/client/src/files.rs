//! The plain files of a device's data directory, outside the encrypted cache.
//!
//! - `device.json`: which server, which device id, which user, the cache key wrapped under the
//!   PIN ([`crate::vault::WrappedKey`]) and the key of the attempt counter's MAC. No patient
//!   data and no tokens (those live in the encrypted cache).
//! - `pin-attempts.json`: the count of wrong PINs since the last good one
//!   ([`crate::vault`]). It must live outside the database, because a wrong PIN cannot write
//!   into a database it cannot open.
//!   It also records a revocation, so that a revoked device says why it holds no records.
//! - `server-ca.pem`: the federation's CA certificate, copied at enrolment and pinned.
//!
//! Files are written whole to a temporary name and renamed, so a crash never leaves half a file.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{ClientError, Result};
use crate::key::KdfParams;
use crate::vault::WrappedKey;

pub const DEVICE_FILE: &str = "device.json";
pub const CACHE_FILE: &str = "cache.db";
pub use crate::vault::PIN_ATTEMPTS_FILE;
pub const SERVER_CA_FILE: &str = "server-ca.pem";

/// The format of `device.json` written now: 2 wraps a random cache key; 1 (read, and
/// upgraded at the next unlock) derived the cache key from the PIN.
pub const DEVICE_FILE_FORMAT: u32 = 2;

/// True when `dir` holds an enrolment (a readable `device.json`).
pub fn is_enrolled(dir: &Path) -> bool {
    DeviceFile::read(dir).is_ok()
}

/// `device.json`: what the device needs before it is unlocked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceFile {
    /// Format of this file.
    pub format: u32,
    /// Base URL of the federation server, no trailing slash (`https://fed.example:8443`).
    pub server_url: String,
    /// Id the server gave this device at enrolment.
    pub device_id: String,
    pub username: String,
    pub device_name: String,
    pub enrolled_at: DateTime<Utc>,
    /// True when `server-ca.pem` pins the server's CA; false when the platform's roots are used.
    pub pinned_ca: bool,
    /// The cache key, wrapped under the PIN (format 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vault: Option<WrappedKey>,
    /// The key of the attempt counter's MAC, hex (format 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts_key: Option<String>,
    /// Format 1 only: the cache key was derived from the PIN with these parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kdf: Option<KdfParams>,
    /// When the server answered that this device is revoked (and its cache was wiped): every
    /// unlock says so from then on, offline too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<DateTime<Utc>>,
}

impl DeviceFile {
    pub fn read(dir: &Path) -> Result<DeviceFile> {
        let path = dir.join(DEVICE_FILE);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ClientError::NotEnrolled(dir.display().to_string()));
            }
            Err(e) => return Err(e.into()),
        };
        serde_json::from_str(&text)
            .map_err(|e| ClientError::Internal(format!("{} is damaged: {e}", path.display())))
    }

    pub fn write(&self, dir: &Path) -> Result<()> {
        let text =
            serde_json::to_string_pretty(self).map_err(|e| ClientError::Internal(e.to_string()))?;
        write_atomically(&dir.join(DEVICE_FILE), text.as_bytes())
    }

    /// Path of the pinned CA, when there is one.
    pub fn ca_path(&self, dir: &Path) -> Option<PathBuf> {
        self.pinned_ca.then(|| dir.join(SERVER_CA_FILE))
    }
}

/// Write `bytes` to `path` through a temporary file and a rename, flushed to disk.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_file_round_trips_and_missing_is_not_enrolled() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!is_enrolled(dir.path()));
        assert!(matches!(
            DeviceFile::read(dir.path()),
            Err(ClientError::NotEnrolled(_))
        ));
        let file = DeviceFile {
            format: DEVICE_FILE_FORMAT,
            server_url: "https://127.0.0.1:8443".into(),
            device_id: "dev-1".into(),
            username: "nurse.demo".into(),
            device_name: "test".into(),
            enrolled_at: Utc::now(),
            pinned_ca: true,
            vault: None,
            attempts_key: Some(crate::vault::new_attempts_key().unwrap()),
            kdf: Some(KdfParams::new_random().unwrap()),
            revoked_at: None,
        };
        file.write(dir.path()).unwrap();
        assert!(is_enrolled(dir.path()));
        assert_eq!(DeviceFile::read(dir.path()).unwrap(), file);
        assert_eq!(
            file.ca_path(dir.path()).unwrap(),
            dir.path().join(SERVER_CA_FILE)
        );
    }
}
