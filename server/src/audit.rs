//! The audit log's hash chain: how an event is sealed onto the chain, how it is appended, and
//! how a chain is verified. This is the one place the chain is computed; backends only store
//! the rows they are given.
//!
//! # Model
//!
//! Each event's hash covers the previous event's hash, its own seq and every field of the
//! event, so changing, removing or reordering any stored event breaks the chain from that
//! point. The store keeps the log append-only (the SQLite schema's triggers refuse UPDATE and
//! DELETE); `doorstep-server audit verify` runs [`verify`] over the whole log, then checks the
//! signed checkpoints of its head ([`crate::checkpoint`]).
//!
//! # Appending
//!
//! [`append`] hands the event and [`seal`] to [`AuditStore::append_audit_event`]: the backend
//! holds other appends off (SQLite's write lock, PostgreSQL's audit advisory lock), reads the
//! chain's tip, calls [`seal`] on it and stores the row, all in one transaction. Sealing on a
//! tip read earlier, outside that transaction, would go stale whenever another writer
//! (another request, another server node on a shared database) appended in between, and
//! under load an event could lose that race every time. An import hands its event and
//! [`seal`] to the backend with its writes the same way (see [`crate::import`]), so the import
//! and its audit row commit together. [`AuditStore::append_audit_row`] stays for a row sealed
//! by the caller: it is stored only if it follows the tip, else [`StoreError::Stale`].
//!
//! # Invariants
//!
//! - seq numbers run 1, 2, 3, ... without gaps; event 1 follows [`GENESIS`].
//! - A stored row's `hash` is `chain_hash(prev_hash, seq, event)` and its `prev_hash` is the
//!   previous row's `hash`.
//! - Times are hashed in whole seconds (what every backend stores).

use sha2::{Digest, Sha256};

use crate::store::{AuditEvent, AuditRow, AuditStore, AuditTip, StoreError};

/// The `prev_hash` of the first event.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The hash of event number `seq` following `prev_hash`.
pub fn chain_hash(prev_hash: &str, seq: i64, event: &AuditEvent) -> String {
    let mut h = Sha256::new();
    let detail = event.detail.to_string();
    let fields: [&[u8]; 7] = [
        prev_hash.as_bytes(),
        &seq.to_le_bytes(),
        &event.at.timestamp().to_le_bytes(),
        event.actor.as_bytes(),
        event.action.as_bytes(),
        event.patient_id.as_deref().unwrap_or("").as_bytes(),
        detail.as_bytes(),
    ];
    for field in fields {
        // Length-prefixed, so fields cannot slide into each other.
        h.update((field.len() as u64).to_le_bytes());
        h.update(field);
    }
    hex::encode(h.finalize())
}

/// The row that puts `event` on the chain after `tip` (`None`: the log is empty).
pub fn seal(tip: Option<&AuditTip>, event: AuditEvent) -> AuditRow {
    let (seq, prev_hash) = match tip {
        Some(tip) => (tip.seq + 1, tip.hash.clone()),
        None => (1, GENESIS.to_string()),
    };
    let hash = chain_hash(&prev_hash, seq, &event);
    AuditRow {
        seq,
        event,
        prev_hash,
        hash,
    }
}

/// Append `event` to the audit log: the backend seals it with [`seal`] on the tip it reads
/// inside its transaction, with other appends held off, so concurrent appends (other requests,
/// other nodes) never make it stale.
pub async fn append(store: &dyn AuditStore, event: AuditEvent) -> Result<(), StoreError> {
    store.append_audit_event(event, seal).await.map(|_| ())
}

/// Where a chain breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the audit chain breaks at event {seq}: {why}")]
pub struct ChainBreak {
    pub seq: i64,
    pub why: String,
}

/// Verify a whole log, in seq order. Answers the number of events checked.
pub fn verify(rows: &[AuditRow]) -> Result<usize, ChainBreak> {
    let mut prev = GENESIS.to_string();
    let mut last_seq = 0;
    for row in rows {
        if row.seq != last_seq + 1 {
            return Err(ChainBreak {
                seq: row.seq,
                why: format!("expected event {}", last_seq + 1),
            });
        }
        if row.prev_hash != prev {
            return Err(ChainBreak {
                seq: row.seq,
                why: "it does not follow the previous event".into(),
            });
        }
        if chain_hash(&prev, row.seq, &row.event) != row.hash {
            return Err(ChainBreak {
                seq: row.seq,
                why: "its content does not match its hash".into(),
            });
        }
        prev = row.hash.clone();
        last_seq = row.seq;
    }
    Ok(rows.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DateTime;

    fn chain(n: usize) -> Vec<AuditRow> {
        let mut rows: Vec<AuditRow> = Vec::new();
        for seq in 1..=n as i64 {
            let event = AuditEvent {
                at: DateTime::from_timestamp(1_768_000_000 + seq, 0).unwrap(),
                actor: format!("user:u{seq}"),
                action: "pull".into(),
                patient_id: None,
                detail: serde_json::json!({ "n": seq }),
            };
            let tip = rows.last().map(|r| AuditTip {
                seq: r.seq,
                hash: r.hash.clone(),
            });
            rows.push(seal(tip.as_ref(), event));
        }
        rows
    }

    #[test]
    fn sealing_follows_the_tip() {
        let rows = chain(2);
        assert_eq!((rows[0].seq, rows[0].prev_hash.as_str()), (1, GENESIS));
        assert_eq!(rows[1].prev_hash, rows[0].hash);
        assert_eq!(
            rows[1].hash,
            chain_hash(&rows[0].hash, 2, &rows[1].event),
            "the hash covers the previous hash, the seq and the event"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_appends_reseal_on_the_new_tip_and_keep_one_chain() {
        use std::sync::Arc;

        use crate::store::{self, DatabaseUrl};
        let dir = tempfile::tempdir().unwrap();
        let store = store::open(&DatabaseUrl::in_data_dir(dir.path()))
            .await
            .unwrap();
        let tasks: Vec<_> = (0..24)
            .map(|i| {
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    append(
                        store.as_ref(),
                        AuditEvent {
                            at: DateTime::from_timestamp(1_768_000_000 + i, 0).unwrap(),
                            actor: format!("user:u{i}"),
                            action: "pull".into(),
                            patient_id: None,
                            detail: serde_json::json!({ "n": i }),
                        },
                    )
                    .await
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        let rows = store.audit_rows().await.unwrap();
        assert_eq!(verify(&rows), Ok(24));
    }

    #[test]
    fn intact_chain_verifies() {
        assert_eq!(verify(&chain(5)), Ok(5));
        assert_eq!(verify(&[]), Ok(0));
    }

    #[test]
    fn edited_event_breaks_the_chain() {
        let mut rows = chain(5);
        rows[2].event.actor = "user:someone-else".into();
        assert_eq!(verify(&rows).unwrap_err().seq, 3);
    }

    #[test]
    fn removed_event_breaks_the_chain() {
        let mut rows = chain(5);
        rows.remove(1);
        assert_eq!(verify(&rows).unwrap_err().seq, 3);
    }

    #[test]
    fn rehashed_event_breaks_the_link_to_the_next() {
        let mut rows = chain(5);
        rows[1].event.detail = serde_json::json!({ "n": 99 });
        rows[1].hash = chain_hash(&rows[1].prev_hash, 2, &rows[1].event);
        assert_eq!(verify(&rows).unwrap_err().seq, 3);
    }
}
