//! Consultation notes: the push intake from devices, the write-back into the record, the
//! registered practice's inbox and its acknowledgements.
//!
//! # What this module owns
//!
//! - [`push`] (`POST /api/v1/sync/push`): the rules of one pushed item, answered per item in
//!   order ([`PushOutcome`]). An item is refused, with a reason its author understands and
//!   naming the field, when its kind is unknown, its id is not a UUID, the patient is not in
//!   the author's candidate set now (as the pull computes it, [`pull::candidates`]:
//!   break-glass included) nor had an entry of the author's that ended no longer ago than
//!   the device may stay offline (a note written on a visit that ended before the signal
//!   came back still reaches the practice), its body is not a [`NoteBody`], its vitals fail the NEWS2 checks,
//!   it is empty (no text, no vitals, no problem), its problem is not a SNOMED CT id, or it
//!   replaces a note that is not an accepted note of the same patient. Otherwise it is
//!   accepted: stored once, turned into FHIR ([`doorstep_record::writeback`]) and put into the
//!   record through the import path ([`import::apply_batch_as`]), so its Composition and the
//!   rest become the patient's resources with feed rows: the author's device pulls its note
//!   back, with delivery state `accepted`; the import's audit row is the `note_accepted` event
//!   (actor `device:<id>`).
//! - [`inbox`] (`GET /api/v1/practice/inbox`): the FHIR R4 `searchset` Bundle of a practice's
//!   open notes (accepted or received, not yet filed or rejected): each Composition
//!   (`search.mode = match`), its Encounter, Observations and Condition and the Patient
//!   (`include`). A searchset because the inbox is the answer to a query ("my open notes"),
//!   with `total` counting the notes and the mode telling a practice system which entries are
//!   the notes; the entries are read from the record, exactly what devices pull.
//! - [`acknowledge`] (`POST /api/v1/practice/inbox/ack`): checked whole before anything
//!   changes, then each note's delivery state moves forward and its Composition's delivery
//!   extension with it, through the import path (one feed row; audit `note_received`,
//!   `note_filed` or `note_rejected`, actor `practice:<ODS>`).
//!
//! # Invariants
//!
//! - **Once.** An item is stored once by its client-made id (`ON CONFLICT DO NOTHING`); a
//!   resend answers `Duplicate` with the first outcome and writes nothing new. A rejected item
//!   is stored as rejected (only the refusal: no body), so its resend is `Duplicate{Rejected}`;
//!   the one exception is an id that is not a UUID, refused without being stored (it is no
//!   key the device can resend by).
//! - **One item never fails the others**; a store error fails the request (500) and the device
//!   sends again: everything is idempotent. If the server stopped between storing a note and
//!   its write-back, the resend (answered `Duplicate`) finds the Composition missing and writes
//!   it then.
//! - **Forward only.** accepted → received → filed | rejected (received may be skipped). A
//!   repeated state changes nothing; a late `received` after filed/rejected changes nothing
//!   (the final state implies it); filed after rejected, or rejected after filed, refuses the
//!   whole acknowledgement (409): a practice that changes its mind must tell the author
//!   directly, the record never silently flips.
//! - A practice sees and acknowledges only notes addressed to it (the patient's registered
//!   practice when the note was accepted).
//! - Logs carry ids, counts and field names; never note text, names or NHS numbers.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use doorstep_protocol::{
    AckResponse, AckStatus, FirstOutcome, ListKind, NoteBody, PUSH_KIND_NOTE,
    PUSH_KIND_RECORD_VIEW, PUSH_MAX_ITEMS, PushItem, PushOutcome, PushRequest, PushResponse,
    PushResult, RecordViewBody,
};
use doorstep_record::fhir::{Resource, ResourceType};
use doorstep_record::news2::Vitals;
use doorstep_record::writeback::{
    AcceptedNote, EncounterClass, NoteAuthor, NoteDelivery, NoteOrigin, Practice, Problem,
    note_delivery, note_origin, set_note_delivery, writeback_resources,
};
use serde_json::{Value, json};

use crate::audit;
use crate::import::{self, ImportBatch, ImportFailure};
use crate::pull::{self, UserScope};
use crate::store::{
    AuditEvent, DeliveryState, DeliveryWrite, DeviceRow, FeedSnapshot, ImportKeys, ListEntryRow,
    NoteInsert, NoteOutcome, NoteRow, PatientRow, Store, StoreError, UserRow,
};

/// Longest note text accepted (characters).
pub const MAX_TEXT_CHARS: usize = 20_000;
/// Base of the `fullUrl`s of the inbox Bundle: Doorstep's namespace for its resources.
pub const FULL_URL_BASE: &str = "https://fhir.doorstep.example";
/// The delivery states that keep a note in the practice's inbox.
pub const OPEN_STATES: [DeliveryState; 2] = [DeliveryState::Accepted, DeliveryState::Received];
/// Times an acknowledgement is decided again when another one changed its notes first.
const ACK_ATTEMPTS: usize = 8;

/// Why a push was not answered item by item.
#[derive(Debug, thiserror::Error)]
pub enum PushFailure {
    #[error("a push holds at most {PUSH_MAX_ITEMS} items; this one held {0}: send the rest next")]
    TooManyItems(usize),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<ImportFailure> for StoreError {
    fn from(f: ImportFailure) -> StoreError {
        match f {
            ImportFailure::Store(e) => e,
            // The write-back is built here; a refusal is a bug of ours, not the sender's.
            ImportFailure::Rejected(e) => {
                StoreError::Corrupt(format!("the write-back of a note was refused: {e}"))
            }
        }
    }
}

/// The whole second, as every backend stores times (so a resend's first answer is the same).
fn whole_second(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp(), 0).unwrap_or(t)
}

/// The patients this user may write about now, with their list entries.
type Candidates = BTreeMap<String, (PatientRow, Vec<ListEntryRow>)>;

/// Answer a push from `device` of `user`, item by item, in order.
pub async fn push(
    store: &dyn Store,
    device: &DeviceRow,
    user: &UserRow,
    request: PushRequest,
    now: DateTime<Utc>,
) -> Result<PushResponse, PushFailure> {
    if request.items.len() > PUSH_MAX_ITEMS {
        return Err(PushFailure::TooManyItems(request.items.len()));
    }
    let now = whole_second(now);
    let scope = pull::user_scope(store, user).await?;
    let candidates = {
        let snap = store.feed_snapshot().await?;
        let mut candidates = pull::candidates(snap.as_ref(), &scope, now).await?;
        // Only a push that names someone off the list pays for the look back.
        if request
            .items
            .iter()
            .any(|i| !candidates.contains_key(&i.patient_id))
        {
            add_recently_ended(snap.as_ref(), &scope, now, &mut candidates).await?;
        }
        candidates
        // The read snapshot ends here, before anything is written.
    };
    let author = Author {
        device,
        user,
        scope: &scope,
        candidates: &candidates,
    };
    let mut results = Vec::with_capacity(request.items.len());
    for item in request.items {
        let outcome = author.answer(store, &item, now).await?;
        results.push(PushResult {
            id: item.id,
            outcome,
        });
    }
    let accepted = results
        .iter()
        .filter(|r| matches!(r.outcome, PushOutcome::Accepted { .. }))
        .count();
    let duplicates = results
        .iter()
        .filter(|r| matches!(r.outcome, PushOutcome::Duplicate { .. }))
        .count();
    tracing::info!(
        user = %user.username,
        device_id = %device.id,
        items = results.len(),
        accepted,
        duplicates,
        rejected = results.len() - accepted - duplicates,
        "push"
    );
    Ok(PushResponse { results })
}

/// Patients whose list entry for this user ended no longer ago than the device may stay
/// offline (the longest `max_offline_hours` of the user's agreements): a note written on the
/// visit, or while the device still held the record offline, is still delivered to the
/// practice rather than refused for a list change the author could not have seen (hazard H5).
/// The same coverage and dissent rules as [`pull::candidates`] apply
/// ([`pull::covered_patients`]).
async fn add_recently_ended(
    snap: &dyn FeedSnapshot,
    scope: &UserScope,
    now: DateTime<Utc>,
    candidates: &mut Candidates,
) -> Result<(), StoreError> {
    let hours = scope
        .agreements
        .iter()
        .map(|a| a.max_offline_hours)
        .max()
        .unwrap_or(0);
    if hours == 0 {
        return Ok(());
    }
    let since = now - chrono::Duration::hours(i64::from(hours));
    // Entries not ended at `since` are those active now and those that ended since.
    let ended = pull::entries_reaching(snap, scope, since)
        .await?
        .into_iter()
        .filter(|e| {
            e.ends_at.is_some_and(|end| end <= now) && !candidates.contains_key(&e.patient_id)
        })
        .collect::<Vec<_>>();
    if !ended.is_empty() {
        candidates.extend(pull::covered_patients(snap, scope, ended).await?);
    }
    Ok(())
}

/// Who pushes, and what they may write about.
struct Author<'a> {
    device: &'a DeviceRow,
    user: &'a UserRow,
    scope: &'a UserScope,
    candidates: &'a Candidates,
}

/// A note that passed every rule.
struct Checked {
    body: NoteBody,
    vitals: Option<Vitals>,
    patient: PatientRow,
    class: EncounterClass,
}

fn first_outcome(row: &NoteRow) -> FirstOutcome {
    match row.outcome {
        NoteOutcome::Accepted => FirstOutcome::Accepted {
            accepted_at: row.received_at,
        },
        NoteOutcome::Rejected => FirstOutcome::Rejected {
            reason: row.reason.clone().unwrap_or_default(),
        },
    }
}

/// The visit's class from the list that brought the patient (break-glass last).
fn encounter_class(entries: &[ListEntryRow]) -> EncounterClass {
    let kind = entries
        .iter()
        .map(|e| e.kind)
        .min_by_key(|k| match k {
            ListKind::Caseload => 0,
            ListKind::Appointment => 1,
            ListKind::Incident => 2,
            ListKind::BreakGlass => 3,
        })
        .unwrap_or(ListKind::Appointment);
    match kind {
        ListKind::Caseload => EncounterClass::HomeHealth,
        ListKind::Appointment => EncounterClass::Ambulatory,
        ListKind::Incident => EncounterClass::Field,
        ListKind::BreakGlass => EncounterClass::Emergency,
    }
}

fn is_snomed_id(code: &str) -> bool {
    (6..=18).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_digit())
}

impl Author<'_> {
    async fn answer(
        &self,
        store: &dyn Store,
        item: &PushItem,
        now: DateTime<Utc>,
    ) -> Result<PushOutcome, StoreError> {
        if let Some(first) = store.note(&item.id).await? {
            self.repair(store, &first).await?;
            return Ok(PushOutcome::Duplicate {
                first: first_outcome(&first),
            });
        }
        // An id that is not a UUID is refused without being stored: it cannot be a key.
        if uuid::Uuid::parse_str(&item.id).is_err() {
            return Ok(PushOutcome::Rejected {
                reason: "id: an outbox item's id is a UUID made on the device".into(),
            });
        }
        if item.kind == PUSH_KIND_RECORD_VIEW {
            return self.record_view(store, item, now).await;
        }
        let checked = match self.check(store, item).await? {
            Ok(checked) => checked,
            Err(reason) => return self.reject(store, item, reason, now).await,
        };
        let row = NoteRow {
            id: item.id.clone(),
            patient_id: item.patient_id.clone(),
            author_user_id: self.user.id.clone(),
            device_id: self.device.id.clone(),
            service_id: self.user.service_id.clone(),
            kind: item.kind.clone(),
            body: Some(
                serde_json::to_string(&checked.body)
                    .map_err(|e| StoreError::Backend(format!("a note body as JSON: {e}")))?,
            ),
            created_at: item.created_at,
            received_at: now,
            outcome: NoteOutcome::Accepted,
            reason: None,
            delivery: Some(DeliveryState::Accepted),
            delivery_at: Some(now),
            delivery_reason: None,
            practice_ods: Some(checked.patient.practice_ods.clone()),
        };
        match store.insert_note(row.clone()).await? {
            NoteInsert::Existing(first) => {
                // Another request stored it in between: it is that one's.
                self.repair(store, &first).await?;
                Ok(PushOutcome::Duplicate {
                    first: first_outcome(&first),
                })
            }
            NoteInsert::Inserted => {
                self.write_back(store, &row, &checked).await?;
                Ok(PushOutcome::Accepted { accepted_at: now })
            }
        }
    }

    /// A record or section view made on the device: stored once by its id (a resend is a
    /// duplicate), audited in the same transaction as `record_viewed` naming the patient, with the device's time and
    /// whether it was offline, so it appears in the patient's access report.
    async fn record_view(
        &self,
        store: &dyn Store,
        item: &PushItem,
        now: DateTime<Utc>,
    ) -> Result<PushOutcome, StoreError> {
        let body: RecordViewBody = match serde_json::from_value(item.body.clone()) {
            Ok(b) => b,
            Err(e) => {
                return self
                    .reject(store, item, format!("body: not a record view: {e}"), now)
                    .await;
            }
        };
        if body.section.is_empty() || body.section.len() > 40 {
            return self
                .reject(store, item, "body.section: 1 to 40 characters".into(), now)
                .await;
        }
        if store.patient(&item.patient_id).await?.is_none() {
            return self
                .reject(store, item, "patient_id: no such patient".into(), now)
                .await;
        }
        let break_glass = self
            .candidates
            .get(&item.patient_id)
            .and_then(|(_, entries)| crate::lists::break_glass_reason(entries));
        let event = AuditEvent {
            at: now,
            actor: format!("device:{}", self.device.id),
            action: "record_viewed".into(),
            patient_id: Some(item.patient_id.clone()),
            detail: json!({
                "item_id": item.id,
                "user": self.user.username,
                "service_id": self.user.service_id,
                "device_id": self.device.id,
                "section": body.section,
                "viewed_at": body.viewed_at,
                "offline": body.offline,
                "break_glass": break_glass,
            }),
        };
        match store
            .append_device_view(&item.id, &self.device.id, event, audit::seal)
            .await?
        {
            Some(first) => Ok(PushOutcome::Duplicate {
                first: FirstOutcome::Accepted { accepted_at: first },
            }),
            None => Ok(PushOutcome::Accepted { accepted_at: now }),
        }
    }

    async fn reject(
        &self,
        store: &dyn Store,
        item: &PushItem,
        reason: String,
        now: DateTime<Utc>,
    ) -> Result<PushOutcome, StoreError> {
        let row = NoteRow {
            id: item.id.clone(),
            patient_id: item.patient_id.clone(),
            author_user_id: self.user.id.clone(),
            device_id: self.device.id.clone(),
            service_id: self.user.service_id.clone(),
            kind: item.kind.clone(),
            body: None,
            created_at: item.created_at,
            received_at: now,
            outcome: NoteOutcome::Rejected,
            reason: Some(reason.clone()),
            delivery: None,
            delivery_at: None,
            delivery_reason: None,
            practice_ods: None,
        };
        match store.insert_note(row).await? {
            NoteInsert::Existing(first) => Ok(PushOutcome::Duplicate {
                first: first_outcome(&first),
            }),
            NoteInsert::Inserted => {
                audit::append(
                    store,
                    AuditEvent {
                        at: now,
                        actor: format!("device:{}", self.device.id),
                        action: "note_rejected".into(),
                        patient_id: Some(item.patient_id.clone()),
                        detail: json!({"note_id": item.id, "kind": item.kind,
                                       "user": self.user.username, "reason": reason}),
                    },
                )
                .await?;
                Ok(PushOutcome::Rejected { reason })
            }
        }
    }

    /// The rules of an item, in order; `Err(reason)` names what is wrong.
    async fn check(
        &self,
        store: &dyn Store,
        item: &PushItem,
    ) -> Result<Result<Checked, String>, StoreError> {
        if item.kind != PUSH_KIND_NOTE {
            return Ok(Err(format!(
                "unknown kind '{}': this server accepts '{PUSH_KIND_NOTE}' and \
                 '{PUSH_KIND_RECORD_VIEW}' items",
                item.kind
            )));
        }
        let Some((patient, entries)) = self.candidates.get(&item.patient_id) else {
            return Ok(Err(
                "patient_id: this patient is not on your list (their visit or caseload \
                           entry ended longer ago than your device may stay offline, or your \
                           service may not see them), so the note was not sent to their \
                           practice; tell the practice another way"
                    .into(),
            ));
        };
        let body: NoteBody = match serde_json::from_value(item.body.clone()) {
            Ok(b) => b,
            Err(e) => return Ok(Err(format!("body: not a consultation note: {e}"))),
        };
        if body.text.chars().count() > MAX_TEXT_CHARS {
            return Ok(Err(format!(
                "body.text: longer than {MAX_TEXT_CHARS} characters"
            )));
        }
        let vitals = match &body.vitals {
            None | Some(Value::Null) => None,
            Some(v) => match Vitals::from_json_value(v) {
                Ok(v) => Some(v),
                Err(errors) => {
                    let all: Vec<String> = errors.iter().map(ToString::to_string).collect();
                    return Ok(Err(format!("body.vitals: {}", all.join("; "))));
                }
            },
        };
        let no_vitals = vitals.is_none_or(|v| {
            Vitals {
                spo2_scale: Default::default(),
                ..v
            } == Vitals::default()
        });
        if body.text.trim().is_empty() && no_vitals && body.problem.is_none() {
            return Ok(Err(
                "body: the note is empty: write some text, record vital signs \
                           or choose a problem"
                    .into(),
            ));
        }
        if let Some(p) = &body.problem {
            if !is_snomed_id(&p.code) {
                return Ok(Err(format!(
                    "body.problem.code: '{}' is not a SNOMED CT concept id",
                    p.code
                )));
            }
            if p.display.trim().is_empty() {
                return Ok(Err(
                    "body.problem.display: the problem needs its name".into()
                ));
            }
        }
        if let Some(earlier) = &body.replaces {
            let replaced = store.note(earlier).await?;
            match replaced {
                _ if earlier == &item.id => {
                    return Ok(Err("body.replaces: a note cannot replace itself".into()));
                }
                Some(n)
                    if n.outcome == NoteOutcome::Accepted && n.patient_id == item.patient_id => {}
                Some(n) if n.outcome == NoteOutcome::Accepted => {
                    return Ok(Err(format!(
                        "body.replaces: note {earlier} is a note of another patient"
                    )));
                }
                _ => {
                    return Ok(Err(format!(
                        "body.replaces: note {earlier} is not a note the federation accepted"
                    )));
                }
            }
        }
        Ok(Ok(Checked {
            body,
            vitals: vitals.filter(|_| !no_vitals),
            patient: patient.clone(),
            class: encounter_class(entries),
        }))
    }

    /// The accepted note as the write-back builds it.
    fn accepted_note(&self, row: &NoteRow, checked: &Checked) -> AcceptedNote {
        let patient = &checked.patient;
        let agreements = self
            .scope
            .agreements
            .iter()
            .filter(|a| a.applies(&patient.practice_ods, &self.scope.role))
            .map(|a| a.id.clone())
            .collect();
        AcceptedNote {
            id: row.id.clone(),
            patient_id: patient.id.clone(),
            author: NoteAuthor {
                user_id: self.user.id.clone(),
                display_name: self.user.display_name.clone(),
            },
            origin: NoteOrigin {
                note_id: row.id.clone(),
                service_id: self.user.service_id.clone(),
                service_name: self.user.service_name.clone(),
                agreements,
            },
            encounter_class: checked.class,
            signed_at: checked.body.signed_at,
            text: checked.body.text.clone(),
            vitals: checked.vitals,
            problem: checked.body.problem.as_ref().map(|p| Problem {
                code: p.code.clone(),
                display: p.display.clone(),
            }),
            replaces: checked.body.replaces.clone(),
            delivery: NoteDelivery {
                state: row.delivery.unwrap_or(DeliveryState::Accepted),
                practice: Practice {
                    ods: patient.practice_ods.clone(),
                    name: patient.practice_name.clone(),
                },
                at: row.delivery_at.unwrap_or(row.received_at),
                reason: row.delivery_reason.clone(),
            },
        }
    }

    /// Put an accepted note's resources into the record, audited as `note_accepted`.
    async fn write_back(
        &self,
        store: &dyn Store,
        row: &NoteRow,
        checked: &Checked,
    ) -> Result<(), StoreError> {
        let note = self.accepted_note(row, checked);
        let resources = writeback_resources(&note);
        let event = AuditEvent {
            at: row.received_at,
            actor: format!("device:{}", self.device.id),
            action: "note_accepted".into(),
            patient_id: Some(row.patient_id.clone()),
            detail: json!({
                "note_id": row.id,
                "user": self.user.username,
                "service": self.user.service_id,
                "practice": checked.patient.practice_ods,
                "resources": resources.len(),
                "replaces": checked.body.replaces,
            }),
        };
        apply_resources(store, resources, &note.origin, row.received_at, event).await
    }

    /// A resend of an accepted note whose write-back never happened (the server stopped in
    /// between) writes it now; anything else is left alone.
    async fn repair(&self, store: &dyn Store, first: &NoteRow) -> Result<(), StoreError> {
        if first.outcome != NoteOutcome::Accepted || first.author_user_id != self.user.id {
            return Ok(());
        }
        let key = ("Composition".to_string(), first.id.clone());
        let basis = store
            .import_basis(&ImportKeys {
                resources: vec![key.clone()],
                ..ImportKeys::default()
            })
            .await?;
        if basis.resources.contains_key(&key) {
            return Ok(());
        }
        let Some(body) = first
            .body
            .as_deref()
            .and_then(|b| serde_json::from_str::<NoteBody>(b).ok())
        else {
            return Err(StoreError::Corrupt(format!(
                "accepted note {} has no readable body",
                first.id
            )));
        };
        let (patient, entries) = match self.candidates.get(&first.patient_id) {
            Some((p, e)) => (p.clone(), e.clone()),
            None => match store.patient(&first.patient_id).await? {
                Some(p) => (p, Vec::new()),
                None => return Ok(()),
            },
        };
        let vitals = body
            .vitals
            .as_ref()
            .and_then(|v| Vitals::from_json_value(v).ok());
        let checked = Checked {
            body,
            vitals,
            class: encounter_class(&entries),
            patient,
        };
        tracing::warn!(note_id = %first.id, "writing back an accepted note that was never written back");
        self.write_back(store, first, &checked).await
    }
}

/// Import write-back resources of one note as a batch from the authoring service.
async fn apply_resources(
    store: &dyn Store,
    resources: Vec<Resource>,
    origin: &NoteOrigin,
    at: DateTime<Utc>,
    event: AuditEvent,
) -> Result<(), StoreError> {
    let batch = ImportBatch {
        patients: Vec::new(),
        resources,
        deletions: Vec::new(),
        sender: Some((origin.service_id.clone(), origin.service_name.clone())),
        registered_with_sender: Vec::new(),
        entry_of: BTreeMap::new(),
    };
    import::apply_batch_as(store, &batch, at, event).await?;
    Ok(())
}

// ---------- the practice inbox ----------

fn parse_stored(json: &str, what: &str) -> Result<Resource, StoreError> {
    serde_json::from_str::<Value>(json)
        .ok()
        .and_then(|v| Resource::from_json(v).ok())
        .ok_or_else(|| StoreError::Corrupt(format!("{what} is not a FHIR resource")))
}

/// The open notes of practice `ods` as a FHIR R4 searchset Bundle (see the module doc).
pub async fn inbox(store: &dyn Store, ods: &str, now: DateTime<Utc>) -> Result<Value, StoreError> {
    let notes = store.notes_for_practice(ods, &OPEN_STATES).await?;
    // Patients in the order of their oldest open note.
    let mut patients: Vec<&str> = Vec::new();
    for n in &notes {
        if !patients.contains(&n.patient_id.as_str()) {
            patients.push(&n.patient_id);
        }
    }
    let entry = |r: &Resource, mode: &str| {
        json!({"fullUrl": format!("{FULL_URL_BASE}/{}", r.reference()),
               "resource": r.json, "search": {"mode": mode}})
    };
    let mut entries = Vec::new();
    let mut total = 0usize;
    for pid in &patients {
        let live: Vec<Resource> = store
            .patient_resources(pid)
            .await?
            .into_iter()
            .filter(|r| !r.deleted)
            .map(|r| parse_stored(&r.json, &format!("{}/{}", r.resource_type, r.id)))
            .collect::<Result<_, _>>()?;
        for note in notes.iter().filter(|n| &n.patient_id == pid) {
            let Some(comp) = live
                .iter()
                .find(|r| r.resource_type == ResourceType::Composition && r.id == note.id)
            else {
                // Accepted but not yet written back (the author's resend repairs it).
                continue;
            };
            total += 1;
            entries.push(entry(comp, "match"));
            let mut parts: Vec<&Resource> = live
                .iter()
                .filter(|r| r.resource_type != ResourceType::Composition)
                .filter(|r| note_origin(r).is_some_and(|o| o.note_id == note.id))
                .collect();
            // Encounter, Observations, Condition.
            parts.sort_by_key(|r| match r.resource_type {
                ResourceType::Encounter => 0,
                ResourceType::Observation => 1,
                _ => 2,
            });
            entries.extend(parts.into_iter().map(|r| entry(r, "include")));
        }
        if let Some(patient) = live
            .iter()
            .find(|r| r.resource_type == ResourceType::Patient)
        {
            entries.push(entry(patient, "include"));
        }
    }
    let ids: Vec<&str> = notes.iter().map(|n| n.id.as_str()).collect();
    audit::append(
        store,
        AuditEvent {
            at: now,
            actor: format!("practice:{ods}"),
            action: "inbox".into(),
            patient_id: (patients.len() == 1).then(|| patients[0].to_string()),
            detail: json!({"notes": ids, "patients": patients}),
        },
    )
    .await?;
    tracing::info!(practice = %ods, notes = total, "practice inbox");
    let at = now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    Ok(json!({
        "resourceType": "Bundle",
        "id": uuid::Uuid::new_v4().to_string(),
        "meta": {"lastUpdated": at},
        "type": "searchset",
        "timestamp": at,
        "total": total,
        "entry": entries,
    }))
}

// ---------- acknowledgements ----------

/// Why an acknowledgement was refused (nothing changed).
#[derive(Debug, thiserror::Error)]
pub enum AckFailure {
    /// Malformed, or names a note or field wrongly: the message names the ack and the field.
    #[error("{0}")]
    Invalid(String),
    /// Contradicts a final state.
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One acknowledgement as read from the body.
struct ReadAck {
    note_id: String,
    status: AckStatus,
    reason: Option<String>,
}

fn read_acks(body: &[u8]) -> Result<Vec<ReadAck>, AckFailure> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| AckFailure::Invalid(format!("the body is not JSON: {e}")))?;
    let Some(acks) = value.get("acks").and_then(Value::as_array) else {
        return Err(AckFailure::Invalid(
            "acks: expected {\"acks\": [{\"note_id\", \"status\", \"reason\"}, ...]}".into(),
        ));
    };
    let mut out = Vec::with_capacity(acks.len());
    for (i, a) in acks.iter().enumerate() {
        let bad =
            |field: &str, what: &str| AckFailure::Invalid(format!("acks[{i}].{field}: {what}"));
        let note_id = a
            .get("note_id")
            .and_then(Value::as_str)
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| bad("note_id", "required: the note's id (its Composition id)"))?;
        let status = a
            .get("status")
            .cloned()
            .and_then(|s| serde_json::from_value::<AckStatus>(s).ok())
            .ok_or_else(|| bad("status", "required: received, filed or rejected"))?;
        let reason = match a.get("reason") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.trim().to_string()).filter(|s| !s.is_empty()),
            Some(_) => return Err(bad("reason", "must be text")),
        };
        if status == AckStatus::Rejected && reason.is_none() {
            return Err(bad(
                "reason",
                "required with status rejected: the author is told why",
            ));
        }
        out.push(ReadAck {
            note_id: note_id.to_string(),
            status,
            reason,
        });
    }
    Ok(out)
}

fn target(status: AckStatus) -> DeliveryState {
    match status {
        AckStatus::Received => DeliveryState::Received,
        AckStatus::Filed => DeliveryState::Filed,
        AckStatus::Rejected => DeliveryState::Rejected,
    }
}

/// Check practice `ods`'s acknowledgements whole, then apply them (see the module doc).
pub async fn acknowledge(
    store: &dyn Store,
    ods: &str,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<AckResponse, AckFailure> {
    let acks = read_acks(body)?;
    let now = whole_second(now);
    for _ in 0..ACK_ATTEMPTS {
        // Decide on fresh reads: each note's state as the acks move it, in order.
        let mut notes: BTreeMap<String, (NoteRow, DeliveryState, Option<String>)> = BTreeMap::new();
        let mut changed = 0usize;
        for (i, ack) in acks.iter().enumerate() {
            if !notes.contains_key(&ack.note_id) {
                let row = store
                    .note(&ack.note_id)
                    .await?
                    .filter(|n| n.outcome == NoteOutcome::Accepted)
                    .filter(|n| n.practice_ods.as_deref() == Some(ods))
                    .ok_or_else(|| {
                        AckFailure::Invalid(format!(
                            "acks[{i}].note_id: no note {} was sent to {ods}",
                            ack.note_id
                        ))
                    })?;
                let state = row.delivery.unwrap_or(DeliveryState::Accepted);
                let reason = row.delivery_reason.clone();
                notes.insert(ack.note_id.clone(), (row, state, reason));
            }
            let (_, state, reason) = notes.get_mut(&ack.note_id).expect("just inserted");
            let next = target(ack.status);
            if next == *state || (state.is_final() && next == DeliveryState::Received) {
                continue;
            }
            if state.is_final() {
                return Err(AckFailure::Conflict(format!(
                    "acks[{i}].status: note {} is already {state}; a {state} note cannot be \
                     {next} (tell the author directly)",
                    ack.note_id
                )));
            }
            *state = next;
            *reason = ack
                .reason
                .clone()
                .filter(|_| next == DeliveryState::Rejected);
            changed += 1;
        }
        let writes: Vec<DeliveryWrite> = notes
            .values()
            .filter(|(row, state, _)| row.delivery != Some(*state))
            .map(|(row, state, reason)| DeliveryWrite {
                note_id: row.id.clone(),
                expected: row.delivery.unwrap_or(DeliveryState::Accepted),
                state: *state,
                at: now,
                reason: reason.clone(),
            })
            .collect();
        if !writes.is_empty() {
            match store.set_note_deliveries(writes).await {
                Ok(()) => {}
                Err(StoreError::Stale(why)) => {
                    tracing::debug!(%why, "acknowledgement decided on a note that changed; again");
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
        }
        // Every acknowledged note's Composition says its state (again, after a lost answer).
        for id in notes.keys() {
            if let Some(row) = store.note(id).await? {
                sync_composition(store, &row, ods).await?;
            }
        }
        tracing::info!(practice = %ods, acks = acks.len(), changed, "inbox acknowledgement");
        return Ok(AckResponse { changed });
    }
    Err(AckFailure::Conflict(
        "the notes kept changing under this acknowledgement: send it again".into(),
    ))
}

/// Write `row`'s delivery state into its Composition through the import path, unless it
/// already says so.
async fn sync_composition(store: &dyn Store, row: &NoteRow, ods: &str) -> Result<(), StoreError> {
    let Some(state) = row.delivery else {
        return Ok(());
    };
    let key = ("Composition".to_string(), row.id.clone());
    let basis = store
        .import_basis(&ImportKeys {
            resources: vec![key.clone()],
            ..ImportKeys::default()
        })
        .await?;
    let Some(stored) = basis.resources.get(&key).filter(|r| !r.deleted) else {
        return Ok(());
    };
    let mut comp = parse_stored(&stored.json, &format!("Composition/{}", row.id))?;
    let practice = match note_delivery(&comp) {
        Some(d) => d.practice,
        None => Practice {
            ods: ods.to_string(),
            name: store.organisation_name(ods).await?.unwrap_or_default(),
        },
    };
    let delivery = NoteDelivery {
        state,
        practice,
        at: row.delivery_at.unwrap_or(row.received_at),
        reason: row.delivery_reason.clone(),
    };
    if note_delivery(&comp).as_ref() == Some(&delivery) {
        return Ok(());
    }
    set_note_delivery(&mut comp, &delivery);
    let Some(origin) = note_origin(&comp) else {
        return Err(StoreError::Corrupt(format!(
            "Composition/{} has no note origin",
            row.id
        )));
    };
    let event = AuditEvent {
        at: delivery.at,
        actor: format!("practice:{ods}"),
        action: format!("note_{state}"),
        patient_id: Some(row.patient_id.clone()),
        detail: json!({"note_id": row.id, "reason": delivery.reason}),
    };
    apply_resources(store, vec![comp], &origin, delivery.at, event).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::{self, CASELOAD_LIST, DemoSpec};
    use crate::store::{self as stores, DatabaseUrl};

    /// A small demo federation: (store, nurse, her device, a caseload patient, dir).
    async fn nurse_with_patient() -> (
        std::sync::Arc<dyn Store>,
        UserRow,
        DeviceRow,
        String,
        tempfile::TempDir,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let url = DatabaseUrl::in_data_dir(dir.path());
        demo::seed_async(
            dir.path(),
            &url,
            &DemoSpec::small(3, Utc::now().date_naive()),
        )
        .await
        .unwrap();
        let store = stores::open(&url).await.unwrap();
        let user = store.user_by_username("nurse.demo").await.unwrap().unwrap();
        let device_id = store
            .create_device(&user.id, "tablet", Utc::now())
            .await
            .unwrap();
        let device = store.device(&device_id).await.unwrap().unwrap();
        let patient = store.list_entries(CASELOAD_LIST).await.unwrap()[0]
            .patient_id
            .clone();
        (store, user, device, patient, dir)
    }

    fn item(id: &str, patient: &str, body: Value) -> PushItem {
        PushItem {
            id: id.into(),
            kind: PUSH_KIND_NOTE.into(),
            patient_id: patient.into(),
            created_at: Utc::now(),
            body,
        }
    }

    #[tokio::test]
    async fn each_rule_refuses_naming_its_field_and_a_bad_id_is_not_stored() {
        let (store, user, device, patient, _dir) = nurse_with_patient().await;
        let now = Utc::now();
        let id = || uuid::Uuid::new_v4().to_string();
        let itself = id();
        let cases = vec![
            (
                item(
                    "not-a-uuid",
                    &patient,
                    json!({"text": "x", "signed_at": now}),
                ),
                "id:",
            ),
            (
                item(&id(), &patient, json!({"text": "x"})),
                "body: not a consultation note",
            ),
            (
                item(
                    &id(),
                    &patient,
                    json!({"text": "", "signed_at": now, "vitals": {"hr": 80}}),
                ),
                "body.vitals: unknown field `hr`",
            ),
            (
                item(
                    &id(),
                    &patient,
                    json!({"text": "", "signed_at": now, "vitals": {}}),
                ),
                "body: the note is empty",
            ),
            (
                item(
                    &id(),
                    &patient,
                    json!({"text": "x", "signed_at": now,
                    "problem": {"code": "leg ulcer", "display": "Leg ulcer"}}),
                ),
                "body.problem.code",
            ),
            (
                item(
                    &itself,
                    &patient,
                    json!({"text": "x", "signed_at": now, "replaces": itself}),
                ),
                "body.replaces: a note cannot replace itself",
            ),
            (
                item(
                    &id(),
                    &patient,
                    json!({"text": "x", "signed_at": now, "replaces": id()}),
                ),
                "body.replaces",
            ),
        ];
        let (items, expected): (Vec<PushItem>, Vec<&str>) = cases.into_iter().unzip();
        let answer = push(store.as_ref(), &device, &user, PushRequest { items }, now)
            .await
            .unwrap();
        for (result, want) in answer.results.iter().zip(expected) {
            match &result.outcome {
                PushOutcome::Rejected { reason } => {
                    assert!(reason.starts_with(want), "{want}: {reason}")
                }
                other => panic!("{want}: {other:?}"),
            }
        }
        // Stored as rejected (a resend is a duplicate), except the id that is no key.
        assert!(store.note("not-a-uuid").await.unwrap().is_none());
        let row = store.note(&itself).await.unwrap().unwrap();
        assert_eq!((row.outcome, row.body), (NoteOutcome::Rejected, None));
        // Nothing of a refused note entered the record.
        assert!(
            store
                .patient_resources(&patient)
                .await
                .unwrap()
                .iter()
                .all(|r| !r.id.starts_with(&itself))
        );
        let too_many = PushRequest {
            items: (0..=PUSH_MAX_ITEMS)
                .map(|_| item(&id(), &patient, json!({})))
                .collect(),
        };
        assert!(matches!(
            push(store.as_ref(), &device, &user, too_many, now).await,
            Err(PushFailure::TooManyItems(101))
        ));
    }

    /// Regression (hazard H5): a note signed on a caseload visit and pushed after the patient
    /// was discharged was refused, so it never reached the practice. Within the longest
    /// offline age of the nurse's agreements (72 h) it is accepted, as a home visit; beyond
    /// it the refusal says why.
    #[tokio::test]
    async fn a_note_pushed_after_the_list_entry_ended_is_delivered_within_the_offline_age() {
        let (store, user, device, patient, _dir) = nurse_with_patient().await;
        let now = Utc::now();
        store
            .end_list_entry(CASELOAD_LIST, &patient, now - chrono::Duration::hours(2))
            .await
            .unwrap();
        let late = uuid::Uuid::new_v4().to_string();
        let body = json!({"text": "Discharged today; wound healed.",
            "signed_at": now - chrono::Duration::hours(3)});
        let answer = push(
            store.as_ref(),
            &device,
            &user,
            PushRequest {
                items: vec![item(&late, &patient, body.clone())],
            },
            now,
        )
        .await
        .unwrap();
        assert!(
            matches!(answer.results[0].outcome, PushOutcome::Accepted { .. }),
            "{:?}",
            answer.results[0].outcome
        );
        let encounter = store
            .patient_resources(&patient)
            .await
            .unwrap()
            .into_iter()
            .find(|r| r.resource_type == "Encounter" && r.json.contains(&late))
            .expect("the note's Encounter");
        assert!(
            encounter.json.contains("\"HH\""),
            "a home visit: {}",
            encounter.json
        );

        // Three days and more after the discharge: refused, saying why.
        let (store, user, device, patient, _dir) = nurse_with_patient().await;
        store
            .end_list_entry(CASELOAD_LIST, &patient, now - chrono::Duration::hours(73))
            .await
            .unwrap();
        let answer = push(
            store.as_ref(),
            &device,
            &user,
            PushRequest {
                items: vec![item(&uuid::Uuid::new_v4().to_string(), &patient, body)],
            },
            now,
        )
        .await
        .unwrap();
        match &answer.results[0].outcome {
            PushOutcome::Rejected { reason } => assert!(
                reason.starts_with("patient_id: this patient is not on your list")
                    && reason.contains("longer ago than your device may stay offline"),
                "{reason}"
            ),
            other => panic!("{other:?}"),
        }
    }

    fn entry(kind: ListKind) -> ListEntryRow {
        ListEntryRow {
            id: 1,
            list_id: "l".into(),
            list_name: "l".into(),
            kind,
            patient_id: "p".into(),
            reason: "r".into(),
            starts_at: Utc::now(),
            ends_at: None,
            user_id: None,
            list_owner: None,
            list_team: None,
        }
    }

    #[test]
    fn the_visit_class_follows_the_list_break_glass_last() {
        assert_eq!(
            encounter_class(&[entry(ListKind::BreakGlass), entry(ListKind::Caseload)]),
            EncounterClass::HomeHealth
        );
        assert_eq!(
            encounter_class(&[entry(ListKind::Incident)]),
            EncounterClass::Field
        );
        assert_eq!(
            encounter_class(&[entry(ListKind::BreakGlass)]),
            EncounterClass::Emergency
        );
    }

    #[test]
    fn acknowledgements_are_read_whole_naming_the_ack_and_the_field() {
        let err = |body: &str| match read_acks(body.as_bytes()) {
            Err(AckFailure::Invalid(m)) => m,
            other => panic!("{body}: {:?}", other.map(|a| a.len())),
        };
        assert!(err("{").starts_with("the body is not JSON"));
        assert!(err("{}").starts_with("acks:"));
        assert!(
            err(r#"{"acks":[{"note_id":"a","status":"filed"},{"note_id":"b","status":"lost"}]}"#)
                .starts_with("acks[1].status:")
        );
        assert!(err(r#"{"acks":[{"status":"filed"}]}"#).starts_with("acks[0].note_id:"));
        assert!(
            err(r#"{"acks":[{"note_id":"a","status":"rejected","reason":"  "}]}"#)
                .starts_with("acks[0].reason:")
        );
        let ok = read_acks(
            br#"{"acks":[{"note_id":"a","status":"rejected","reason":"Not registered here"}]}"#,
        )
        .unwrap();
        assert_eq!(ok[0].reason.as_deref(), Some("Not registered here"));
    }
}
