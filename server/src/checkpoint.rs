//! Signed checkpoints of the audit chain, so that a cut tail shows.
//!
//! # Why
//!
//! The hash chain ([`crate::audit`]) shows any changed, removed, inserted or reordered event:
//! every later hash stops matching. It cannot show the *last* events removed: a shorter chain
//! is still a valid chain. So at intervals the server signs the chain's head (seq, hash, time)
//! with its audit key and keeps the signature twice: in the database
//! (`audit_checkpoints`, append-only) and in a file beside the key
//! (`audit-checkpoint.json`). Whoever cuts the tail must also forge a signature they cannot
//! make without the key, and rewrite a file outside the database.
//!
//! # The key
//!
//! An Ed25519 key pair in the node's data directory (`audit-signing.key`, PKCS#8, owner-only),
//! made at the first start; its public half in `audit-signing.pub` (hex). It is never stored
//! in the database: someone holding a copy of the database holds no key. A checkpoint names
//! its key by `key_id`, the hex SHA-256 of the public key.
//!
//! # Verifying ([`verify_log`])
//!
//! 1. The chain itself ([`crate::audit::verify`]): the first event that does not follow names
//!    itself.
//! 2. Each checkpoint given (the database's latest and the file's): its signature under the
//!    public key; the event it names must exist (else the tail was cut after it was signed) and
//!    carry the hash it signed (else that event was changed and the chain re-hashed after it).
//! 3. A file checkpoint newer than any in the database means checkpoints were removed from it.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use ring::rand::SystemRandom;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use sha2::{Digest, Sha256};

use crate::audit::{self, ChainBreak};
use crate::store::{AuditCheckpointRow, AuditRow, AuditStore, StoreError};

/// The private key's file in the data directory.
pub const KEY_FILE: &str = "audit-signing.key";
/// The public key's file (hex), what `audit verify` checks signatures with.
pub const PUBLIC_KEY_FILE: &str = "audit-signing.pub";
/// The latest checkpoint this node wrote, kept outside the database.
pub const CHECKPOINT_FILE: &str = "audit-checkpoint.json";

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("the audit key {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the audit key {0} is not a valid Ed25519 PKCS#8 key")]
    BadKey(PathBuf),
    #[error("the audit checkpoint file {path} cannot be read: {why}")]
    BadFile { path: PathBuf, why: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The node's audit signing key.
pub struct AuditKey {
    pair: Ed25519KeyPair,
    dir: PathBuf,
}

impl AuditKey {
    /// The key in `dir`, made (with its public half) when there is none.
    pub fn load_or_create(dir: &Path) -> Result<AuditKey, CheckpointError> {
        let path = dir.join(KEY_FILE);
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| CheckpointError::Io { path, source }
        };
        let pkcs8 = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
                    .map_err(|_| CheckpointError::BadKey(path.clone()))?;
                crate::cursor::write_private(&path, doc.as_ref()).map_err(io(&path))?;
                doc.as_ref().to_vec()
            }
            Err(e) => return Err(io(&path)(e)),
        };
        let pair = Ed25519KeyPair::from_pkcs8(&pkcs8)
            .map_err(|_| CheckpointError::BadKey(path.clone()))?;
        let public = dir.join(PUBLIC_KEY_FILE);
        let hex_key = hex::encode(pair.public_key().as_ref());
        if std::fs::read_to_string(&public)
            .map(|s| s.trim().to_string())
            .ok()
            != Some(hex_key.clone())
        {
            std::fs::write(&public, format!("{hex_key}\n")).map_err(io(&public))?;
        }
        Ok(AuditKey {
            pair,
            dir: dir.to_path_buf(),
        })
    }

    pub fn public_key(&self) -> &[u8] {
        self.pair.public_key().as_ref()
    }

    /// Sign the chain's head `(seq, hash)` at `at`.
    pub fn sign(&self, seq: i64, hash: &str, at: DateTime<Utc>) -> AuditCheckpointRow {
        let at = DateTime::from_timestamp(at.timestamp(), 0).unwrap_or_default();
        let signature = self.pair.sign(&message(seq, hash, at));
        AuditCheckpointRow {
            seq,
            hash: hash.to_string(),
            at,
            key_id: key_id(self.public_key()),
            signature: hex::encode(signature.as_ref()),
        }
    }
}

/// The hex SHA-256 of a public key.
pub fn key_id(public_key: &[u8]) -> String {
    hex::encode(Sha256::digest(public_key))
}

/// What a checkpoint's signature covers.
fn message(seq: i64, hash: &str, at: DateTime<Utc>) -> Vec<u8> {
    let mut m = b"doorstep audit checkpoint v1\0".to_vec();
    m.extend_from_slice(&seq.to_le_bytes());
    m.extend_from_slice(hash.as_bytes());
    m.extend_from_slice(&at.timestamp().to_le_bytes());
    m
}

/// True when `cp` was signed by `public_key`.
pub fn signature_holds(cp: &AuditCheckpointRow, public_key: &[u8]) -> bool {
    let Ok(signature) = hex::decode(&cp.signature) else {
        return false;
    };
    cp.key_id == key_id(public_key)
        && UnparsedPublicKey::new(&ED25519, public_key)
            .verify(&message(cp.seq, &cp.hash, cp.at), &signature)
            .is_ok()
}

/// Sign the chain's current head, if it moved since the latest checkpoint: store the
/// checkpoint and write it to the file beside the key. Answers it, `None` when there was
/// nothing new to sign.
pub async fn write_checkpoint(
    store: &dyn AuditStore,
    key: &AuditKey,
    now: DateTime<Utc>,
) -> Result<Option<AuditCheckpointRow>, CheckpointError> {
    let Some(tip) = store.audit_tip().await? else {
        return Ok(None);
    };
    if store
        .latest_audit_checkpoint()
        .await?
        .is_some_and(|cp| cp.seq >= tip.seq)
    {
        return Ok(None);
    }
    let cp = key.sign(tip.seq, &tip.hash, now);
    store.put_audit_checkpoint(cp.clone()).await?;
    let path = key.dir.join(CHECKPOINT_FILE);
    let tmp = key
        .dir
        .join(format!("{CHECKPOINT_FILE}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let json = serde_json::to_vec_pretty(&cp).expect("a checkpoint serialises");
    crate::cursor::write_private(&tmp, &json)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|source| CheckpointError::Io { path, source })?;
    Ok(Some(cp))
}

/// The checkpoint file in `dir`, `None` when there is none.
pub fn read_checkpoint_file(dir: &Path) -> Result<Option<AuditCheckpointRow>, CheckpointError> {
    let path = dir.join(CHECKPOINT_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| CheckpointError::BadFile {
                    path,
                    why: e.to_string(),
                })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CheckpointError::Io { path, source }),
    }
}

/// The public key in `dir` (`audit-signing.pub`), `None` when there is none.
pub fn read_public_key(dir: &Path) -> Result<Option<Vec<u8>>, CheckpointError> {
    let path = dir.join(PUBLIC_KEY_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => hex::decode(text.trim())
            .map(Some)
            .map_err(|e| CheckpointError::BadFile {
                path,
                why: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CheckpointError::Io { path, source }),
    }
}

/// What a verified log came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub events: usize,
    /// The newest checkpoint that held, and how many events came after it.
    pub checkpoint: Option<(i64, usize)>,
}

/// Verify `rows` (the whole log, in seq order) against the checkpoints given (see the module
/// doc). `public_key`: the node's; without it no checkpoint can be trusted, and having one is
/// an error (someone could have written it with a key of their own).
pub fn verify_log(
    rows: &[AuditRow],
    in_database: Option<&AuditCheckpointRow>,
    in_file: Option<&AuditCheckpointRow>,
    public_key: Option<&[u8]>,
) -> Result<Verified, ChainBreak> {
    let events = audit::verify(rows)?;
    let last = rows.last().map_or(0, |r| r.seq);
    let mut newest: Option<i64> = None;
    for (cp, kept) in [
        (in_database, "in the database"),
        (in_file, "in the checkpoint file"),
    ] {
        let Some(cp) = cp else { continue };
        let Some(key) = public_key else {
            return Err(ChainBreak {
                seq: cp.seq,
                why: format!("a checkpoint {kept} cannot be checked: no audit public key"),
            });
        };
        if !signature_holds(cp, key) {
            return Err(ChainBreak {
                seq: cp.seq,
                why: format!("the checkpoint {kept} is not signed by this node's audit key"),
            });
        }
        if cp.seq > last {
            return Err(ChainBreak {
                seq: last + 1,
                why: format!(
                    "the log ends at event {last}, but the checkpoint {kept} signed at {} \
                     covers event {}: the tail was cut",
                    cp.at.to_rfc3339(),
                    cp.seq
                ),
            });
        }
        let row = &rows[(cp.seq - 1) as usize];
        if row.hash != cp.hash {
            return Err(ChainBreak {
                seq: cp.seq,
                why: format!("it does not match the checkpoint {kept}: the log was rewritten"),
            });
        }
        newest = newest.max(Some(cp.seq));
    }
    if let (Some(file), db) = (in_file, in_database)
        && db.is_none_or(|d| d.seq < file.seq)
    {
        return Err(ChainBreak {
            seq: file.seq,
            why: "the database holds no checkpoint as recent as the checkpoint file: \
                  checkpoints were removed"
                .into(),
        });
    }
    Ok(Verified {
        events,
        checkpoint: newest.map(|seq| (seq, (last - seq) as usize)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{AuditEvent, AuditTip};

    fn chain(n: i64) -> Vec<AuditRow> {
        let mut rows: Vec<AuditRow> = Vec::new();
        for seq in 1..=n {
            let tip = rows.last().map(|r| AuditTip {
                seq: r.seq,
                hash: r.hash.clone(),
            });
            rows.push(audit::seal(
                tip.as_ref(),
                AuditEvent {
                    at: DateTime::from_timestamp(1_768_000_000 + seq, 0).unwrap(),
                    actor: "user:nurse".into(),
                    action: "record_sent".into(),
                    patient_id: Some(format!("p{seq}")),
                    detail: serde_json::json!({}),
                },
            ));
        }
        rows
    }

    #[test]
    fn a_cut_tail_a_forged_checkpoint_and_removed_checkpoints_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let key = AuditKey::load_or_create(dir.path()).unwrap();
        let again = AuditKey::load_or_create(dir.path()).unwrap();
        assert_eq!(key.public_key(), again.public_key(), "the key is made once");
        let public = read_public_key(dir.path()).unwrap().unwrap();
        let rows = chain(10);
        let at = DateTime::from_timestamp(1_768_000_100, 0).unwrap();
        let cp = key.sign(8, &rows[7].hash, at);

        let ok = verify_log(&rows, Some(&cp), Some(&cp), Some(&public)).unwrap();
        assert_eq!(
            ok,
            Verified {
                events: 10,
                checkpoint: Some((8, 2))
            }
        );

        // The last three events removed: still a valid chain, but the checkpoint saw event 8.
        let cut = verify_log(&rows[..7], Some(&cp), Some(&cp), Some(&public)).unwrap_err();
        assert_eq!(cut.seq, 8);
        assert!(cut.why.contains("the tail was cut"), "{}", cut.why);

        // A checkpoint signed with another key.
        let other_dir = tempfile::tempdir().unwrap();
        let other = AuditKey::load_or_create(other_dir.path()).unwrap();
        let forged = other.sign(7, &rows[6].hash, at);
        let e = verify_log(&rows[..7], Some(&forged), None, Some(&public)).unwrap_err();
        assert!(
            e.why.contains("not signed by this node's audit key"),
            "{}",
            e.why
        );

        // The database's checkpoints removed, the file's kept.
        let e = verify_log(&rows, None, Some(&cp), Some(&public)).unwrap_err();
        assert!(e.why.contains("checkpoints were removed"), "{}", e.why);

        // The chain re-hashed from event 5 on, with event 5 changed: the checkpoint's hash no
        // longer matches event 8.
        let mut rewritten: Vec<AuditRow> = rows[..4].to_vec();
        for row in &rows[4..] {
            let mut event = row.event.clone();
            if row.seq == 5 {
                event.actor = "user:someone-else".into();
            }
            let tip = rewritten.last().map(|r| AuditTip {
                seq: r.seq,
                hash: r.hash.clone(),
            });
            rewritten.push(audit::seal(tip.as_ref(), event));
        }
        let e = verify_log(&rewritten, Some(&cp), None, Some(&public)).unwrap_err();
        assert_eq!(e.seq, 8);
        assert!(e.why.contains("rewritten"), "{}", e.why);
    }
}
