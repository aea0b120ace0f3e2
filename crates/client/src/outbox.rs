//! The outbox: what the device wrote and must send (signed notes, and the record and section
//! views made here, online or offline, for the patient's access report), and the drafts of
//! notes being written.
//!
//! Rules:
//! - The outbox lives in its own tables of `cache.db` (encrypted with the rest), which a
//!   rebuild, a purge or a must-resync never touches: a note written in a car park with no
//!   signal is kept until the federation has answered for it, whatever happens to the cached
//!   record meanwhile.
//! - An item is written once, signed, with an id made here (UUID v4), and never edited: an
//!   amendment is a new note naming the one it replaces.
//! - Its state moves only forward: `waiting` until the server answers for it, then `accepted`
//!   or `rejected` (with the reason, kept for its author). A resend that the server answers
//!   `duplicate` takes the first answer.
//! - Applying the answers of one push is one transaction.
//! - A record view, once the server has accepted it, has nothing left to say on the device:
//!   it is deleted in that transaction. Only notes count as "waiting" for the clinician.

use chrono::{DateTime, Utc};
use doorstep_ipc::{NoteState, NoteSummary};
use doorstep_protocol::{FirstOutcome, NoteBody, PushItem, PushOutcome, PushResult};
use rusqlite::{Connection, OptionalExtension, params};

use crate::cache::{parse_timestamp, timestamp};
use crate::error::{ClientError, Result};

/// A new item for the outbox.
pub(crate) struct NewItem<'a> {
    pub id: &'a str,
    pub kind: &'a str,
    pub patient_id: &'a str,
    pub body: &'a serde_json::Value,
    pub created_at: DateTime<Utc>,
}

/// Store a signed item, and drop the patient's draft with it (one transaction).
pub(crate) fn add(conn: &mut Connection, item: NewItem<'_>) -> Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    tx.execute(
        "INSERT INTO outbox (id, kind, patient_id, body, created_at, state)
         VALUES (?1, ?2, ?3, ?4, ?5, 'waiting')",
        params![
            item.id,
            item.kind,
            item.patient_id,
            item.body.to_string(),
            timestamp(item.created_at)
        ],
    )?;
    tx.execute(
        "DELETE FROM drafts WHERE patient_id = ?1",
        [item.patient_id],
    )?;
    tx.commit()?;
    Ok(())
}

/// Store a record view (nothing else changes: the patient's draft stays).
pub(crate) fn add_view(conn: &Connection, item: NewItem<'_>) -> Result<()> {
    conn.execute(
        "INSERT INTO outbox (id, kind, patient_id, body, created_at, state)
         VALUES (?1, ?2, ?3, ?4, ?5, 'waiting')",
        params![
            item.id,
            item.kind,
            item.patient_id,
            item.body.to_string(),
            timestamp(item.created_at)
        ],
    )?;
    Ok(())
}

/// Items not yet answered for, oldest first, at most `limit`.
pub(crate) fn waiting(conn: &Connection, limit: usize) -> Result<Vec<PushItem>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, kind, patient_id, body, created_at FROM outbox
         WHERE state = 'waiting' ORDER BY created_at, id LIMIT ?1",
    )?;
    let rows = stmt.query_map([limit as i64], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, String>(4)?,
        ))
    })?;
    let mut items = Vec::new();
    for row in rows {
        let (id, kind, patient_id, body, created_at) = row?;
        let body = serde_json::from_str(&body).map_err(|e| {
            ClientError::Internal(format!("outbox item {id} has an unreadable body: {e}"))
        })?;
        items.push(PushItem {
            id,
            kind,
            patient_id,
            created_at: parse_timestamp(&created_at).unwrap_or_default(),
            body,
        });
    }
    Ok(items)
}

/// How many notes wait to be sent (record views are not the clinician's to wait for).
pub(crate) fn waiting_count(conn: &Connection) -> Result<u32> {
    Ok(conn.query_row(
        "SELECT count(*) FROM outbox WHERE state = 'waiting' AND kind = 'note'",
        [],
        |r| r.get(0),
    )?)
}

/// Every item waiting to be sent, of any kind (a sign-out must not lose record views either:
/// they are the audit of what was opened offline).
pub(crate) fn waiting_all_count(conn: &Connection) -> Result<u32> {
    Ok(conn.query_row(
        "SELECT count(*) FROM outbox WHERE state = 'waiting'",
        [],
        |r| r.get(0),
    )?)
}

/// Note that `ids` were sent at `at` (whatever comes of it).
pub(crate) fn mark_attempt(conn: &mut Connection, ids: &[String], at: DateTime<Utc>) -> Result<()> {
    let tx = conn.transaction()?;
    for id in ids {
        tx.execute(
            "UPDATE outbox SET attempts = attempts + 1, last_attempt_at = ?2 WHERE id = ?1",
            params![id, timestamp(at)],
        )?;
    }
    tx.commit()?;
    Ok(())
}

/// What applying a push's answers changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Answered {
    pub accepted: u32,
    pub rejected: u32,
}

/// Apply the server's answers, in one transaction. An answer for an item that is no longer
/// waiting (answered already) changes nothing: states only move forward.
pub(crate) fn apply_results(conn: &mut Connection, results: &[PushResult]) -> Result<Answered> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut answered = Answered::default();
    for result in results {
        let (accepted_at, reason) = match &result.outcome {
            PushOutcome::Accepted { accepted_at }
            | PushOutcome::Duplicate {
                first: FirstOutcome::Accepted { accepted_at },
            } => (Some(*accepted_at), None),
            PushOutcome::Rejected { reason }
            | PushOutcome::Duplicate {
                first: FirstOutcome::Rejected { reason },
            } => (None, Some(reason.clone())),
        };
        let changed = match accepted_at {
            Some(at) => tx.execute(
                "UPDATE outbox SET state = 'accepted', accepted_at = ?2
                 WHERE id = ?1 AND state = 'waiting'",
                params![result.id, timestamp(at)],
            )?,
            None => tx.execute(
                "UPDATE outbox SET state = 'rejected', reason = ?2
                 WHERE id = ?1 AND state = 'waiting'",
                params![result.id, reason],
            )?,
        };
        if accepted_at.is_some() {
            tx.execute(
                "DELETE FROM outbox WHERE id = ?1 AND kind = ?2 AND state = 'accepted'",
                params![result.id, doorstep_protocol::PUSH_KIND_RECORD_VIEW],
            )?;
        }
        if changed > 0 {
            if accepted_at.is_some() {
                answered.accepted += 1;
            } else {
                answered.rejected += 1;
            }
        }
    }
    tx.commit()?;
    Ok(answered)
}

/// The patient a note belongs to, when the outbox holds it.
pub(crate) fn note_patient(conn: &Connection, id: &str) -> Result<Option<String>> {
    Ok(conn
        .query_row(
            "SELECT patient_id FROM outbox WHERE id = ?1 AND kind = 'note'",
            [id],
            |r| r.get(0),
        )
        .optional()?)
}

/// The notes written on this device, newest first; one patient's when `patient_id` is set.
pub(crate) fn notes(conn: &Connection, patient_id: Option<&str>) -> Result<Vec<NoteSummary>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, patient_id, body, state, reason, accepted_at FROM outbox
         WHERE kind = 'note' AND (?1 IS NULL OR patient_id = ?1)
         ORDER BY created_at DESC, id",
    )?;
    let rows = stmt.query_map([patient_id], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, Option<String>>(4)?,
            r.get::<_, Option<String>>(5)?,
        ))
    })?;
    let mut notes = Vec::new();
    for row in rows {
        let (id, patient_id, body, state, reason, accepted_at) = row?;
        let body: NoteBody = serde_json::from_str(&body)
            .map_err(|e| ClientError::Internal(format!("note {id} has an unreadable body: {e}")))?;
        let state = match state.as_str() {
            "accepted" => match delivery_of(conn, &patient_id, &id)? {
                Some(state) => state,
                None => NoteState::Accepted {
                    at: accepted_at
                        .as_deref()
                        .and_then(parse_timestamp)
                        .unwrap_or(body.signed_at),
                },
            },
            "rejected" => NoteState::Rejected {
                reason: reason.unwrap_or_else(|| "no reason given".into()),
            },
            _ => NoteState::Waiting,
        };
        let news2 = body.vitals.as_ref().and_then(|v| {
            let vitals = doorstep_record::news2::Vitals::from_json_value(v).ok()?;
            let score = doorstep_record::news2::score(&vitals);
            Some(format!(
                "NEWS2 {}{} ({})",
                score.total,
                if score.complete { "" } else { ", partial" },
                score.band.label()
            ))
        });
        notes.push(NoteSummary {
            id,
            patient_id,
            signed_at: body.signed_at,
            text: body.text,
            news2,
            problem: body.problem.map(|p| format!("{} {}", p.code, p.display)),
            replaces: body.replaces,
            state,
        });
    }
    Ok(notes)
}

/// What the practice has said of an accepted note, from the note's Composition as the last pull
/// brought it (the federation writes the practice's acknowledgements on it). `None` while the
/// device holds no such word (the note is then just accepted).
fn delivery_of(conn: &Connection, patient_id: &str, note_id: &str) -> Result<Option<NoteState>> {
    use doorstep_record::writeback::{DeliveryState, note_delivery};
    let json: Option<String> = conn
        .query_row(
            "SELECT json FROM resources
             WHERE patient_id = ?1 AND type = 'Composition' AND id = ?2",
            [patient_id, note_id],
            |r| Ok(crate::stored::unpack(r.get_ref(0)?)),
        )
        .optional()?
        .transpose()?;
    let Some(resource) = json
        .and_then(|j| serde_json::from_str(&j).ok())
        .and_then(|v| doorstep_record::fhir::Resource::from_json(v).ok())
    else {
        return Ok(None);
    };
    let Some(delivery) = note_delivery(&resource) else {
        return Ok(None);
    };
    let practice = if delivery.practice.name.is_empty() {
        delivery.practice.ods.clone()
    } else {
        format!("{} ({})", delivery.practice.name, delivery.practice.ods)
    };
    Ok(match delivery.state {
        DeliveryState::Accepted => None,
        DeliveryState::Received => Some(NoteState::Received {
            practice,
            at: delivery.at,
        }),
        DeliveryState::Filed => Some(NoteState::Filed {
            practice,
            at: delivery.at,
        }),
        DeliveryState::Rejected => Some(NoteState::NotFiled {
            practice,
            at: delivery.at,
            reason: delivery.reason.unwrap_or_else(|| "no reason given".into()),
        }),
    })
}

/// Save the draft note of a patient (replacing the earlier draft).
pub(crate) fn save_draft(conn: &Connection, patient_id: &str, body: &str) -> Result<()> {
    conn.execute(
        "INSERT INTO drafts (patient_id, body, updated_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (patient_id) DO UPDATE SET body = excluded.body,
           updated_at = excluded.updated_at",
        params![patient_id, body, timestamp(Utc::now())],
    )?;
    Ok(())
}

/// The draft note of a patient, if there is one.
pub(crate) fn draft(conn: &Connection, patient_id: &str) -> Result<Option<String>> {
    Ok(conn
        .query_row(
            "SELECT body FROM drafts WHERE patient_id = ?1",
            [patient_id],
            |r| r.get(0),
        )
        .optional()?)
}

pub(crate) fn discard_draft(conn: &Connection, patient_id: &str) -> Result<()> {
    conn.execute("DELETE FROM drafts WHERE patient_id = ?1", [patient_id])?;
    Ok(())
}
