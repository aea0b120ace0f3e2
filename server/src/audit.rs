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

/// Appends from concurrent requests, combined into one transaction (group commit).
///
/// Every pull appends its events before its page is sent, and the chain takes one append at
/// a time (the backend's lock), so under load appends queue one behind another, each paying
/// its own lock, tip read, insert and commit: with PostgreSQL under 200 devices that queue
/// was most of a request's time. Here a request queues its events and waits for its turn;
/// whoever has the turn appends everything queued so far in one
/// [`AuditStore::append_audit_events`], in queue order, and tells each request how it went.
///
/// - A request's events stay together and in their order, in one transaction.
/// - A request is answered only once its events are committed (or have failed).
/// - When a combined append fails, each request's events are appended again on their own, so
///   one request's failure is never another's.
/// - The append itself runs on a task of its own, so a request dropped mid-append (its client
///   went away) cannot leave the others it carried unanswered. Events queued by a request
///   that was dropped while it waited are still appended: the log may say a page was sent
///   that its device never received, never the other way round.
#[derive(Default)]
pub struct GroupAppend {
    queue: std::sync::Mutex<Vec<Queued>>,
    turn: tokio::sync::Mutex<()>,
}

struct Queued {
    events: Vec<AuditEvent>,
    done: tokio::sync::oneshot::Sender<Result<(), StoreError>>,
}

impl GroupAppend {
    /// Append `events` in order, in one transaction, with whatever other requests queued
    /// meanwhile.
    pub async fn append(
        &self,
        store: std::sync::Arc<dyn AuditStore>,
        events: Vec<AuditEvent>,
    ) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let (done, mut answer) = tokio::sync::oneshot::channel();
        self.lock_queue().push(Queued { events, done });
        let turn = self.turn.lock().await;
        // While this request waited, the turn before may have carried its events.
        if let Ok(result) = answer.try_recv() {
            return result;
        }
        let batch = std::mem::take(&mut *self.lock_queue());
        let flush = tokio::spawn(append_batch(store, batch));
        // A panic in the append drops the senders: every waiter then hears of it below.
        let _ = flush.await;
        drop(turn);
        answer.await.unwrap_or_else(|_| {
            Err(StoreError::Backend(
                "the combined audit append stopped before it answered".into(),
            ))
        })
    }

    fn lock_queue(&self) -> std::sync::MutexGuard<'_, Vec<Queued>> {
        // The queue is only pushed to and taken whole: a panic cannot leave it half-changed.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

async fn append_batch(store: std::sync::Arc<dyn AuditStore>, batch: Vec<Queued>) {
    if batch.len() == 1 {
        let Some(one) = batch.into_iter().next() else {
            return;
        };
        let _ = one
            .done
            .send(store.append_audit_events(one.events, seal).await);
        return;
    }
    let all: Vec<AuditEvent> = batch
        .iter()
        .flat_map(|q| q.events.iter().cloned())
        .collect();
    match store.append_audit_events(all, seal).await {
        Ok(()) => {
            for q in batch {
                let _ = q.done.send(Ok(()));
            }
        }
        Err(why) => {
            tracing::warn!(error = %why, requests = batch.len(), "combined audit append failed; appending each request's events alone");
            for q in batch {
                let _ = q.done.send(store.append_audit_events(q.events, seal).await);
            }
        }
    }
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

    fn event(actor: &str, action: &str, n: usize) -> AuditEvent {
        AuditEvent {
            at: DateTime::from_timestamp(1_768_000_000, 0).unwrap(),
            actor: actor.into(),
            action: action.into(),
            patient_id: None,
            detail: serde_json::json!({ "n": n }),
        }
    }

    /// 40 requests of 1 to 4 events each through one queue, 8 at a time on two threads: one
    /// chain holds every event once, and each request's events side by side in its order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn grouped_appends_keep_each_requests_events_together_and_in_order() {
        use std::sync::Arc;

        use crate::store::{self, DatabaseUrl};
        let dir = tempfile::tempdir().unwrap();
        let store = store::open(&DatabaseUrl::in_data_dir(dir.path()))
            .await
            .unwrap();
        let group = Arc::new(GroupAppend::default());
        let gate = Arc::new(tokio::sync::Semaphore::new(8));
        let tasks: Vec<_> = (0..40)
            .map(|r| {
                let (store, group, gate) = (Arc::clone(&store), Arc::clone(&group), gate.clone());
                tokio::spawn(async move {
                    let _place = gate.acquire().await.unwrap();
                    let events = (0..1 + r % 4)
                        .map(|n| event(&format!("user:r{r}"), "record_sent", n))
                        .collect();
                    group.append(store, events).await
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        let rows = store.audit_rows().await.unwrap();
        let expected: usize = (0..40).map(|r| 1 + r % 4).sum();
        assert_eq!(verify(&rows), Ok(expected));
        for r in 0..40 {
            let actor = format!("user:r{r}");
            let at: Vec<usize> = (0..rows.len())
                .filter(|&i| rows[i].event.actor == actor)
                .collect();
            assert_eq!(at.len(), 1 + r % 4, "request {r}: every event once");
            assert!(
                at.windows(2).all(|w| w[1] == w[0] + 1),
                "request {r}: its events side by side, at {at:?}"
            );
            let order: Vec<i64> = at
                .iter()
                .map(|&i| rows[i].event.detail["n"].as_i64().unwrap())
                .collect();
            assert_eq!(
                order,
                (0..at.len() as i64).collect::<Vec<_>>(),
                "request {r}"
            );
        }
    }

    /// A store that refuses any append holding an event of action "refused" (and keeps the
    /// rest in a real SQLite store).
    struct Refusing(std::sync::Arc<dyn crate::store::Store>);

    #[async_trait::async_trait]
    impl AuditStore for Refusing {
        async fn audit_tip(&self) -> Result<Option<AuditTip>, StoreError> {
            self.0.audit_tip().await
        }
        async fn append_audit_row(&self, row: AuditRow) -> Result<(), StoreError> {
            self.0.append_audit_row(row).await
        }
        async fn append_audit_event(
            &self,
            event: AuditEvent,
            seal: crate::store::AuditSealer,
        ) -> Result<AuditRow, StoreError> {
            self.0.append_audit_event(event, seal).await
        }
        async fn audit_rows(&self) -> Result<Vec<AuditRow>, StoreError> {
            self.0.audit_rows().await
        }
        async fn append_audit_events(
            &self,
            events: Vec<AuditEvent>,
            seal: crate::store::AuditSealer,
        ) -> Result<(), StoreError> {
            if events.iter().any(|e| e.action == "refused") {
                return Err(StoreError::Conflict("refused by the test".into()));
            }
            self.0.append_audit_events(events, seal).await
        }
        async fn audit_rows_for_patient(
            &self,
            patient_id: &str,
            from: Option<chrono::DateTime<chrono::Utc>>,
        ) -> Result<Vec<AuditRow>, StoreError> {
            self.0.audit_rows_for_patient(patient_id, from).await
        }
        async fn put_audit_checkpoint(
            &self,
            row: crate::store::AuditCheckpointRow,
        ) -> Result<(), StoreError> {
            self.0.put_audit_checkpoint(row).await
        }
        async fn latest_audit_checkpoint(
            &self,
        ) -> Result<Option<crate::store::AuditCheckpointRow>, StoreError> {
            self.0.latest_audit_checkpoint().await
        }
        async fn append_device_view(
            &self,
            id: &str,
            device_id: &str,
            event: AuditEvent,
            seal: crate::store::AuditSealer,
        ) -> Result<Option<chrono::DateTime<chrono::Utc>>, StoreError> {
            self.0.append_device_view(id, device_id, event, seal).await
        }
    }

    /// One request's append failing inside a combined append fails that request only: the
    /// others' events are appended and they are answered Ok.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_request_in_a_group_fails_alone() {
        use std::sync::Arc;

        use crate::store::{self, DatabaseUrl};
        let dir = tempfile::tempdir().unwrap();
        let real = store::open(&DatabaseUrl::in_data_dir(dir.path()))
            .await
            .unwrap();
        let store: Arc<dyn AuditStore> = Arc::new(Refusing(Arc::clone(&real)));
        let group = Arc::new(GroupAppend::default());
        // Hold the turn so that every request below queues and one append carries them all.
        let turn = group.turn.lock().await;
        let tasks: Vec<_> = (0..6)
            .map(|r| {
                let (store, group) = (Arc::clone(&store), Arc::clone(&group));
                let action = if r == 3 { "refused" } else { "pull" };
                tokio::spawn(async move {
                    let events = vec![event(&format!("user:r{r}"), action, 0)];
                    group.append(store, events).await
                })
            })
            .collect();
        while group.lock_queue().len() < 6 {
            tokio::task::yield_now().await;
        }
        drop(turn);
        let mut outcomes = Vec::new();
        for task in tasks {
            outcomes.push(task.await.unwrap().is_ok());
        }
        assert_eq!(outcomes, [true, true, true, false, true, true]);
        let rows = real.audit_rows().await.unwrap();
        assert_eq!(verify(&rows), Ok(5));
        assert!(rows.iter().all(|r| r.event.actor != "user:r3"));
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
