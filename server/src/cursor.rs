//! The pull cursor: what a device holds between pulls, signed so it cannot be forged.
//!
//! Wire form: `base64url(JSON state) + "." + base64url(HMAC-SHA256(key, JSON state))`. The key
//! (32 random bytes) is the federation's, not a node's: it lives in the database
//! (`server_keys`, name [`CURSOR_KEY_NAME`]), so every node sharing the database accepts every
//! other node's cursors. [`CursorKey::candidate`] is what a starting node offers to store: the
//! key of a legacy `DIR/cursor-key` file when there is one (so devices synced before the key
//! moved keep valid cursors), else fresh random bytes; the first key stored wins. The state says, for one
//! device: the feed position its cache is current to (`seq`), which patients it holds (by the
//! hash of a stored membership set), which of those must be re-sent in full (`stale_hash`, see
//! [`crate::pull`]), the access epoch it was computed under, and the view date (look-back windows
//! move daily, so a new day sends every held patient what the move changed: `redate`).
//!
//! The rules, pure functions tested here without a server:
//! - bad encoding or signature, or another device's cursor: `cursor_invalid`;
//! - access epoch changed (role or agreements): `access_changed`;
//! - `seq` older than what the feed keeps, or beyond its head: `cursor_expired` /
//!   `cursor_invalid`.

use std::io::Write;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, NaiveDate, Utc};
use doorstep_protocol::ResyncReason;
use doorstep_record::agreement::Agreement;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// File name of the cursor key in the data directory, before the key moved into the database.
pub const CURSOR_KEY_FILE: &str = "cursor-key";

/// Name of the cursor key in the store's shared keys.
pub const CURSOR_KEY_NAME: &str = "cursor";

/// Why a cursor key cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum CursorKeyError {
    #[error("{path}: {source}")]
    File {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{0} must hold exactly 32 bytes")]
    Length(String),
    #[error("no randomness for a new key: {0}")]
    Random(String),
}

/// The decoded content of a cursor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CursorState {
    pub device_id: String,
    /// The device's cache is current up to this feed seq (for the patients in `set_hash`).
    pub seq: i64,
    /// Hash of the membership set of patients the device holds current.
    pub set_hash: String,
    /// Hash of the membership set of patients the device holds but must receive again in full
    /// (or have purged).
    pub stale_hash: String,
    /// [`access_epoch`] when the cursor was made.
    pub access_epoch: String,
    /// The date the filtered view was computed for.
    pub view_date: NaiveDate,
    pub issued: DateTime<Utc>,
    /// Held patients whose copy is still the view of an earlier date: the look-back windows
    /// moved since, and the pull sends only what that changed ([`crate::pull`]). Absent when
    /// every held patient's copy is of `view_date` (and in cursors made before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redate: Option<Redate>,
}

/// Held patients whose copy was computed for the date `from`, not the cursor's view date.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redate {
    /// Hash of their membership set (stored like the others).
    pub set_hash: String,
    pub from: NaiveDate,
}

/// The server's cursor signing key.
#[derive(Clone)]
pub struct CursorKey([u8; 32]);

impl std::fmt::Debug for CursorKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CursorKey(..)")
    }
}

impl CursorKey {
    pub fn from_bytes(bytes: [u8; 32]) -> CursorKey {
        CursorKey(bytes)
    }

    /// The key as stored (`what` names where it came from, for the error).
    pub fn from_slice(bytes: &[u8], what: &str) -> Result<CursorKey, CursorKeyError> {
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| CursorKeyError::Length(what.to_string()))?;
        Ok(CursorKey(key))
    }

    /// The key a starting node offers to store: `DIR/cursor-key` when that legacy file
    /// exists (`from_file` is then true), else 32 fresh random bytes. Writes nothing.
    pub fn candidate(data_dir: &Path) -> Result<(CursorKey, bool), CursorKeyError> {
        let path = data_dir.join(CURSOR_KEY_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => Ok((
                CursorKey::from_slice(&bytes, &path.display().to_string())?,
                true,
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                getrandom::fill(&mut key).map_err(|e| CursorKeyError::Random(e.to_string()))?;
                Ok((CursorKey(key), false))
            }
            Err(source) => Err(CursorKeyError::File { path, source }),
        }
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    fn mac(&self) -> HmacSha256 {
        HmacSha256::new_from_slice(&self.0).expect("HMAC takes a key of any length")
    }
}

/// Write a file readable by its owner only (keys, demo credentials).
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Sign a cursor state into its opaque wire form.
pub fn seal(key: &CursorKey, state: &CursorState) -> String {
    let json = serde_json::to_vec(state).expect("cursor state serialises");
    let mut mac = key.mac();
    mac.update(&json);
    let sig = mac.finalize().into_bytes();
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(&json),
        URL_SAFE_NO_PAD.encode(sig)
    )
}

/// Verify and decode a cursor made by [`seal`] for `device_id`.
pub fn open(key: &CursorKey, cursor: &str, device_id: &str) -> Result<CursorState, ResyncReason> {
    let (body, sig) = cursor.split_once('.').ok_or(ResyncReason::CursorInvalid)?;
    let json = URL_SAFE_NO_PAD
        .decode(body)
        .map_err(|_| ResyncReason::CursorInvalid)?;
    let sig = URL_SAFE_NO_PAD
        .decode(sig)
        .map_err(|_| ResyncReason::CursorInvalid)?;
    let mut mac = key.mac();
    mac.update(&json);
    mac.verify_slice(&sig)
        .map_err(|_| ResyncReason::CursorInvalid)?;
    let state: CursorState =
        serde_json::from_slice(&json).map_err(|_| ResyncReason::CursorInvalid)?;
    if state.device_id != device_id {
        return Err(ResyncReason::CursorInvalid);
    }
    Ok(state)
}

/// Check a verified cursor against the current access epoch and the feed's bounds.
/// `pruned_through` is the highest feed seq deleted by pruning (0 when none).
pub fn check(
    state: &CursorState,
    access_epoch: &str,
    pruned_through: i64,
    head: i64,
) -> Result<(), ResyncReason> {
    if state.access_epoch != access_epoch {
        return Err(ResyncReason::AccessChanged);
    }
    if state.seq > head || state.seq < 0 {
        return Err(ResyncReason::CursorInvalid);
    }
    if state.seq < pruned_through {
        return Err(ResyncReason::CursorExpired);
    }
    Ok(())
}

/// The access epoch of a user: a hash of their role, service, the agreements that apply to
/// them (each whole, version included: an update, a retirement or a new agreement changes
/// it) and the server's value-set version (a load of exclusion sets changes what every
/// agreement withholds). Any change to these makes every cursor of the user ask for a
/// rebuild. Value-set version 0 (the shipped floor only) hashes as before there were loads,
/// so cursors issued before loads existed stay valid.
pub fn access_epoch(
    role: &str,
    service_id: &str,
    agreements: &[Agreement],
    value_set_version: i64,
) -> String {
    let mut sorted: Vec<&Agreement> = agreements.iter().collect();
    sorted.sort_by(|a, b| a.id.cmp(&b.id));
    let mut doc = serde_json::json!({ "role": role, "service": service_id, "agreements": sorted });
    if value_set_version != 0 {
        doc["value_sets"] = serde_json::json!(value_set_version);
    }
    let digest = Sha256::digest(serde_json::to_vec(&doc).expect("agreements serialise"));
    hex::encode(&digest[..16])
}

/// The content address of a set of patient ids (order does not matter).
pub fn set_hash<'a>(ids: impl IntoIterator<Item = &'a String>) -> String {
    let mut sorted: Vec<&String> = ids.into_iter().collect();
    sorted.sort();
    sorted.dedup();
    let mut hasher = Sha256::new();
    for id in sorted {
        // Length-prefixed, so no two different sets share an encoding.
        hasher.update((id.len() as u64).to_le_bytes());
        hasher.update(id.as_bytes());
    }
    hex::encode(hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> CursorState {
        CursorState {
            device_id: "dev-1".into(),
            seq: 42,
            set_hash: set_hash(&["p1".to_string(), "p2".to_string()]),
            stale_hash: set_hash(&[]),
            access_epoch: "epoch-a".into(),
            view_date: NaiveDate::from_ymd_opt(2026, 1, 15).unwrap(),
            issued: DateTime::from_timestamp(1_768_000_000, 0).unwrap(),
            redate: None,
        }
    }

    /// Cursors sealed before `redate` existed still open, with nothing to re-date.
    #[test]
    fn a_cursor_without_redate_opens_with_nothing_to_redate() {
        let mut json = serde_json::to_value(state()).unwrap();
        assert!(json.get("redate").is_none(), "absent when empty: {json}");
        json.as_object_mut().unwrap().remove("redate");
        let body = serde_json::to_vec(&json).unwrap();
        let mut mac = key(1).mac();
        mac.update(&body);
        let sealed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(&body),
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        );
        assert_eq!(open(&key(1), &sealed, "dev-1").unwrap(), state());
    }

    fn key(b: u8) -> CursorKey {
        CursorKey::from_bytes([b; 32])
    }

    #[test]
    fn sealed_cursor_opens_for_its_device() {
        let sealed = seal(&key(1), &state());
        assert_eq!(open(&key(1), &sealed, "dev-1"), Ok(state()));
    }

    #[test]
    fn another_devices_cursor_is_invalid() {
        let sealed = seal(&key(1), &state());
        assert_eq!(
            open(&key(1), &sealed, "dev-2"),
            Err(ResyncReason::CursorInvalid)
        );
    }

    #[test]
    fn another_servers_cursor_is_invalid() {
        let sealed = seal(&key(1), &state());
        assert_eq!(
            open(&key(2), &sealed, "dev-1"),
            Err(ResyncReason::CursorInvalid)
        );
    }

    #[test]
    fn tampered_cursor_is_invalid() {
        let sealed = seal(&key(1), &state());
        let (body, sig) = sealed.split_once('.').unwrap();
        let mut json = URL_SAFE_NO_PAD.decode(body).unwrap();
        // Move the cursor back in the feed without re-signing.
        let text = String::from_utf8(json.clone()).unwrap().replace("42", "41");
        json = text.into_bytes();
        let forged = format!("{}.{}", URL_SAFE_NO_PAD.encode(json), sig);
        assert_eq!(
            open(&key(1), &forged, "dev-1"),
            Err(ResyncReason::CursorInvalid)
        );
        for junk in ["", ".", "abc", "abc.def", "!!!.???"] {
            assert_eq!(
                open(&key(1), junk, "dev-1"),
                Err(ResyncReason::CursorInvalid)
            );
        }
    }

    #[test]
    fn changed_access_epoch_asks_for_rebuild() {
        assert_eq!(check(&state(), "epoch-a", 0, 100), Ok(()));
        assert_eq!(
            check(&state(), "epoch-b", 0, 100),
            Err(ResyncReason::AccessChanged)
        );
    }

    #[test]
    fn cursor_behind_pruned_feed_expires() {
        assert_eq!(check(&state(), "epoch-a", 42, 100), Ok(()));
        assert_eq!(
            check(&state(), "epoch-a", 43, 100),
            Err(ResyncReason::CursorExpired)
        );
    }

    #[test]
    fn cursor_beyond_head_is_invalid() {
        assert_eq!(check(&state(), "epoch-a", 0, 42), Ok(()));
        assert_eq!(
            check(&state(), "epoch-a", 0, 41),
            Err(ResyncReason::CursorInvalid)
        );
    }

    #[test]
    fn access_epoch_depends_on_role_service_and_agreements() {
        let a = Agreement {
            id: "a1".into(),
            name: "DN".into(),
            service: "dn".into(),
            practices: vec!["A81001".into()],
            roles: vec!["nurse".into()],
            sections: vec![],
            include_codes: None,
            exclude_codes: vec![],
            max_offline_hours: 72,
            idle_lock_minutes: 5,
            retention_days: 7,
            ..Agreement::default()
        };
        let base = access_epoch("nurse", "dn", std::slice::from_ref(&a), 0);
        assert_eq!(
            base,
            access_epoch("nurse", "dn", std::slice::from_ref(&a), 0)
        );
        assert_ne!(base, access_epoch("gp", "dn", std::slice::from_ref(&a), 0));
        assert_ne!(
            base,
            access_epoch("nurse", "hub", std::slice::from_ref(&a), 0)
        );
        assert_ne!(
            base,
            access_epoch("nurse", "dn", std::slice::from_ref(&a), 1)
        );
        let mut retired = a.clone();
        retired.retired = Some(chrono::NaiveDate::from_ymd_opt(2026, 1, 1).unwrap());
        assert_ne!(base, access_epoch("nurse", "dn", &[retired], 0));
        let mut b = a.clone();
        b.practices.push("A81002".into());
        assert_ne!(base, access_epoch("nurse", "dn", &[b], 0));
        assert_ne!(base, access_epoch("nurse", "dn", &[], 0));
    }

    #[test]
    fn set_hash_ignores_order_and_duplicates() {
        let ab = set_hash(&["a".to_string(), "b".to_string()]);
        assert_eq!(
            ab,
            set_hash(&["b".to_string(), "a".to_string(), "a".to_string()])
        );
        assert_ne!(ab, set_hash(&["a".to_string()]));
        // No ambiguity from joining: {"a\nb"} is not {"a","b"}.
        assert_ne!(ab, set_hash(&["a\nb".to_string()]));
    }

    #[test]
    fn the_candidate_key_is_a_legacy_file_or_fresh_and_never_written() {
        let dir = tempfile::tempdir().unwrap();
        let (k1, from_file) = CursorKey::candidate(dir.path()).unwrap();
        let (k2, _) = CursorKey::candidate(dir.path()).unwrap();
        assert!(!from_file);
        assert_ne!(k1.0, k2.0, "a fresh candidate is random");
        assert!(!dir.path().join(CURSOR_KEY_FILE).exists());
        write_private(&dir.path().join(CURSOR_KEY_FILE), &[9; 32]).unwrap();
        let (k3, from_file) = CursorKey::candidate(dir.path()).unwrap();
        assert!(from_file);
        assert_eq!(k3.0, [9; 32]);
        let sealed = seal(&k3, &state());
        assert!(open(&CursorKey::from_bytes([9; 32]), &sealed, "dev-1").is_ok());
        std::fs::write(dir.path().join(CURSOR_KEY_FILE), [1; 5]).unwrap();
        assert!(matches!(
            CursorKey::candidate(dir.path()),
            Err(CursorKeyError::Length(_))
        ));
    }
}
