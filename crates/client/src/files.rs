//! The plain files of a device's data directory, outside the encrypted cache.
//!
//! - `device.json`: which server, which device id, which user, and the KDF salt and parameters.
//!   No patient data and no tokens (those live in the encrypted cache).
//! - `pin-attempts.json`: the count of wrong PINs since the last good one. It must live outside
//!   the database, because a wrong PIN cannot write into a database it cannot open.
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

pub const DEVICE_FILE: &str = "device.json";
pub const CACHE_FILE: &str = "cache.db";
pub const PIN_ATTEMPTS_FILE: &str = "pin-attempts.json";
pub const SERVER_CA_FILE: &str = "server-ca.pem";

/// Wrong PINs allowed before the device demands an online sign-in.
pub const MAX_PIN_ATTEMPTS: u32 = 10;

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
    /// Derivation of the cache key from the PIN.
    pub kdf: KdfParams,
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

/// `pin-attempts.json`: wrong PINs since the last good one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinAttempts {
    pub failures: u32,
    pub last_failure: Option<DateTime<Utc>>,
}

impl PinAttempts {
    /// A missing file means no failures. A damaged file counts as the limit reached, so that
    /// corrupting it gains no guesses. (Deleting it does, until the vault issue binds the count
    /// to the wrapped key.)
    pub fn read(dir: &Path) -> PinAttempts {
        match fs::read_to_string(dir.join(PIN_ATTEMPTS_FILE)) {
            Ok(text) => serde_json::from_str(&text).unwrap_or(PinAttempts {
                failures: MAX_PIN_ATTEMPTS,
                last_failure: None,
            }),
            Err(_) => PinAttempts::default(),
        }
    }

    pub fn write(&self, dir: &Path) -> Result<()> {
        let text = serde_json::to_string(self).map_err(|e| ClientError::Internal(e.to_string()))?;
        write_atomically(&dir.join(PIN_ATTEMPTS_FILE), text.as_bytes())
    }

    pub fn remaining(&self) -> u32 {
        MAX_PIN_ATTEMPTS.saturating_sub(self.failures)
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
            format: 1,
            server_url: "https://127.0.0.1:8443".into(),
            device_id: "dev-1".into(),
            username: "nurse.demo".into(),
            device_name: "test".into(),
            enrolled_at: Utc::now(),
            pinned_ca: true,
            kdf: KdfParams::new_random().unwrap(),
        };
        file.write(dir.path()).unwrap();
        assert!(is_enrolled(dir.path()));
        assert_eq!(DeviceFile::read(dir.path()).unwrap(), file);
        assert_eq!(
            file.ca_path(dir.path()).unwrap(),
            dir.path().join(SERVER_CA_FILE)
        );
    }

    #[test]
    fn pin_attempts_default_and_damaged() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(PinAttempts::read(dir.path()).failures, 0);
        fs::write(dir.path().join(PIN_ATTEMPTS_FILE), "not json").unwrap();
        assert_eq!(PinAttempts::read(dir.path()).remaining(), 0);
        PinAttempts {
            failures: 3,
            last_failure: None,
        }
        .write(dir.path())
        .unwrap();
        assert_eq!(PinAttempts::read(dir.path()).remaining(), 7);
    }
}
