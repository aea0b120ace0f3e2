//! The audit log's hash chain: how an event's hash is made and how a chain is verified.
//!
//! Each event's hash covers the previous event's hash and every field of the event, so
//! changing, removing or reordering any stored event breaks the chain from that point. The
//! store keeps the log append-only (triggers refuse UPDATE and DELETE); `doorstep-server
//! verify-audit` runs [`verify`] over the whole log.

use sha2::{Digest, Sha256};

use crate::store::{AuditEvent, AuditRow};

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
        let mut prev = GENESIS.to_string();
        (1..=n as i64)
            .map(|seq| {
                let event = AuditEvent {
                    at: DateTime::from_timestamp(1_768_000_000 + seq, 0).unwrap(),
                    actor: format!("user:u{seq}"),
                    action: "pull".into(),
                    patient_id: None,
                    detail: serde_json::json!({ "n": seq }),
                };
                let hash = chain_hash(&prev, seq, &event);
                let row = AuditRow {
                    seq,
                    event,
                    prev_hash: prev.clone(),
                    hash: hash.clone(),
                };
                prev = hash;
                row
            })
            .collect()
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
