//! Sessions and bookings: a service publishes a clinician's session, cut into slots; a
//! receptionist of a member practice books her own patients into it, and each booking is an
//! entry on the session's list, so the clinician's device receives the patient at its next
//! sync.
//!
//! # Rules
//!
//! - A session is published by a service manager of its service, for a clinician of that
//!   service (not a staff role, not disabled), starting in the future, not overlapping
//!   another session of the clinician, with 1 to [`MAX_SLOTS`] equal slots. It gets its own appointment list, owned by the clinician (so
//!   it reaches the clinician only, `crate::lists::reaches`). Times are UTC.
//! - A receptionist is a user of one member practice (`users.practice_ods`) and sees and
//!   books only that practice's patients. Her search is exact, as break-glass's: an NHS
//!   number (Modulus 11 checked), or a family name with a date of birth; it answers name,
//!   date of birth and NHS number only, at most [`MAX_MATCHES`]. A patient of another
//!   practice is never found, and an attempt to book or cancel one is refused (403) and
//!   audited (`booking_refused`).
//! - A booking is refused, audited, when the patient dissented, when no agreement in force
//!   on the slot's day covers the patient's practice for the session clinician's role (the
//!   device would receive nothing), when the session has ended, when the chosen slot has
//!   started or is taken, when the session is full, and when the patient already holds a
//!   live booking in the session.
//! - A booking is one transaction: the list entry (starting at the slot, ending
//!   [`crate::lists::TIMED_ENTRY_HOURS`] after), the booking row and the audit event
//!   `booking_made`. The store's one-live-booking-a-slot index settles two receptionists
//!   racing for the last slot. Cancelling (by a receptionist of the patient's practice) ends
//!   the entry at once, with `booking_cancelled`; the device drops the patient at its next
//!   sync unless another entry still lists them.

use chrono::{DateTime, Duration, NaiveDate, NaiveTime, Utc};
use doorstep_protocol::ListKind;
use doorstep_record::nhs::NhsNumber;
use doorstep_record::views::patient_details;
use serde::{Deserialize, Serialize};

use crate::audit;
use crate::auth;
use crate::lists;
use crate::pull::{self, parse_row};
use crate::store::{
    AuditEvent, BookingRow, BookingWrite, ClinicSessionRow, ListEntryWrite, ListRow, PatientRow,
    Store, StoreError, UserRow,
};

/// At most this many slots a session.
pub const MAX_SLOTS: u32 = 48;
/// At most this many patients are shown for one search.
pub const MAX_MATCHES: usize = 5;
/// The role of a practice's receptionist.
pub const RECEPTIONIST: &str = "receptionist";
/// The role of a service's manager.
pub const SERVICE_MANAGER: &str = "service_manager";

#[derive(Debug, thiserror::Error)]
pub enum StaffFailure {
    /// The request is wrong: the field and what is wrong with it.
    #[error("{0}")]
    Invalid(String),
    /// Not this caller's to do (audited when a patient is named).
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    NotFound(String),
    /// The session's state forbids it: full, taken, in the past, already booked.
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn invalid(field: &str, problem: impl std::fmt::Display) -> StaffFailure {
    StaffFailure::Invalid(format!("{field}: {problem}"))
}

/// A reason as given: trimmed, 1 to 200 characters.
pub(crate) fn check_reason(field: &str, reason: &str) -> Result<String, StaffFailure> {
    let reason = reason.trim();
    if reason.is_empty() {
        return Err(invalid(field, "required: say why"));
    }
    if reason.chars().count() > 200 {
        return Err(invalid(field, "at most 200 characters"));
    }
    Ok(reason.to_string())
}

/// A session to publish.
#[derive(Debug, Clone, Deserialize)]
pub struct NewSession {
    pub date: NaiveDate,
    /// `HH:MM`, UTC.
    pub start: NaiveTime,
    pub end: NaiveTime,
    /// The clinician's username.
    pub clinician: String,
    pub slots: u32,
    #[serde(default)]
    pub reason: String,
}

/// A slot as a receptionist sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Slot {
    pub slot: u32,
    pub starts_at: DateTime<Utc>,
}

/// A patient as a receptionist sees them: enough to tell them apart, nothing of the record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PatientMatch {
    pub patient_id: String,
    pub name: String,
    pub birth_date: Option<NaiveDate>,
    pub nhs_number: String,
}

/// A booking as a receptionist sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BookingView {
    pub booking_id: i64,
    pub session_id: String,
    pub slot: u32,
    pub starts_at: DateTime<Utc>,
    pub patient: PatientMatch,
    pub reason: String,
    pub booked_at: DateTime<Utc>,
    pub cancelled_at: Option<DateTime<Utc>>,
}

/// A session: its clinician, its slots free now, and (for a receptionist) her practice's
/// bookings in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionView {
    pub id: String,
    pub service_id: String,
    pub clinician: String,
    pub clinician_name: String,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub slots: u32,
    pub booked: usize,
    pub free: Vec<Slot>,
    pub bookings: Vec<BookingView>,
}

/// When slot `slot` of the session starts (equal slots, whole seconds).
pub fn slot_start(session: &ClinicSessionRow, slot: u32) -> DateTime<Utc> {
    let length = (session.ends_at - session.starts_at).num_seconds() / i64::from(session.slots);
    session.starts_at + Duration::seconds(length * i64::from(slot))
}

/// The slots of the session that are neither booked nor started at `now`.
pub fn free_slots(
    session: &ClinicSessionRow,
    bookings: &[BookingRow],
    now: DateTime<Utc>,
) -> Vec<Slot> {
    (0..session.slots)
        .filter(|s| {
            !bookings
                .iter()
                .any(|b| b.slot == *s && b.cancelled_at.is_none())
        })
        .map(|slot| Slot {
            slot,
            starts_at: slot_start(session, slot),
        })
        .filter(|s| s.starts_at > now)
        .collect()
}

fn actor(user: &UserRow) -> String {
    format!("user:{}", user.username)
}

/// The practice a receptionist works at, or the refusal.
fn practice_of(user: &UserRow) -> Result<&str, StaffFailure> {
    if user.role != RECEPTIONIST {
        return Err(StaffFailure::Refused(format!(
            "booking is for a practice's receptionist; {} is a {}",
            user.username, user.role
        )));
    }
    user.practice_ods.as_deref().ok_or_else(|| {
        StaffFailure::Refused(format!(
            "{} is a receptionist of no practice: ask the administrator to set one",
            user.username
        ))
    })
}

/// Publish a session (see the module doc). Audited `session_published`.
pub async fn publish_session(
    store: &dyn Store,
    manager: &UserRow,
    new: NewSession,
    now: DateTime<Utc>,
) -> Result<SessionView, StaffFailure> {
    if manager.role != SERVICE_MANAGER {
        return Err(StaffFailure::Refused(format!(
            "sessions are published by a service manager; {} is a {}",
            manager.username, manager.role
        )));
    }
    let reason = check_reason("reason", &new.reason)?;
    if new.slots == 0 || new.slots > MAX_SLOTS {
        return Err(invalid("slots", format!("1 to {MAX_SLOTS}")));
    }
    if new.end <= new.start {
        return Err(invalid(
            "end",
            format!("must be after the start ({})", new.start.format("%H:%M")),
        ));
    }
    let starts_at = new.date.and_time(new.start).and_utc();
    let ends_at = new.date.and_time(new.end).and_utc();
    if starts_at <= now {
        return Err(invalid(
            "date",
            "the session would start in the past: give a later date or start",
        ));
    }
    let clinician = store
        .user_by_username(new.clinician.trim())
        .await?
        .filter(|u| u.service_id == manager.service_id)
        .ok_or_else(|| {
            invalid(
                "clinician",
                format!(
                    "no user {:?} in service {}",
                    new.clinician, manager.service_id
                ),
            )
        })?;
    if auth::is_staff_role(&clinician.role) || clinician.disabled {
        return Err(invalid(
            "clinician",
            format!(
                "{} is not a clinician who can take a session (role {}{})",
                clinician.username,
                clinician.role,
                if clinician.disabled { ", disabled" } else { "" }
            ),
        ));
    }
    // A clinician is in one session at a time.
    if let Some(clash) = store
        .clinic_sessions(starts_at, ends_at)
        .await?
        .into_iter()
        .find(|s| s.clinician_user_id == clinician.id)
    {
        return Err(StaffFailure::Conflict(format!(
            "{} already has a session from {} to {} ({})",
            clinician.username,
            clash.starts_at.format("%Y-%m-%d %H:%M"),
            clash.ends_at.format("%H:%M"),
            clash.id
        )));
    }
    let id = format!(
        "{}-{}-{}-{}",
        manager.service_id,
        new.date.format("%Y%m%d"),
        new.start.format("%H%M"),
        clinician.username
    );
    let session = ClinicSessionRow {
        id: id.clone(),
        service_id: manager.service_id.clone(),
        list_id: format!("session-{id}"),
        clinician_user_id: clinician.id.clone(),
        starts_at,
        ends_at,
        slots: new.slots,
        created_at: now,
    };
    let list = ListRow {
        id: session.list_id.clone(),
        name: format!(
            "{} {}–{} session",
            new.date.format("%a %-d %b"),
            new.start.format("%H:%M"),
            new.end.format("%H:%M")
        ),
        kind: ListKind::Appointment,
        service_id: session.service_id.clone(),
        owner_user_id: Some(clinician.id.clone()),
        team: None,
    };
    store
        .write_clinic_session(
            session.clone(),
            list,
            AuditEvent {
                at: now,
                actor: actor(manager),
                action: "session_published".into(),
                patient_id: None,
                detail: serde_json::json!({
                    "session_id": id,
                    "service_id": session.service_id,
                    "clinician": clinician.username,
                    "starts_at": starts_at,
                    "ends_at": ends_at,
                    "slots": new.slots,
                    "reason": reason,
                }),
            },
            audit::seal,
        )
        .await
        .map_err(|e| match e {
            StoreError::Conflict(m) => StaffFailure::Conflict(m),
            e => e.into(),
        })?;
    tracing::info!(user = %manager.username, session = %id, "session published");
    Ok(SessionView {
        id,
        service_id: session.service_id.clone(),
        clinician: clinician.username,
        clinician_name: clinician.display_name,
        starts_at,
        ends_at,
        slots: new.slots,
        booked: 0,
        free: free_slots(&session, &[], now),
        bookings: vec![],
    })
}

/// The patient's name as their record gives it ("" when the record has no Patient).
async fn patient_name(store: &dyn Store, patient: &PatientRow) -> Result<String, StoreError> {
    let snap = store.feed_snapshot().await?;
    let resource = snap
        .resource("Patient", &patient.id)
        .await?
        .filter(|r| !r.deleted)
        .and_then(|r| parse_row(&r).ok());
    Ok(resource
        .map(|r| patient_details(&r).name_display)
        .unwrap_or_default())
}

/// Name, date of birth and NHS number of a patient: what staff see of them.
pub(crate) async fn patient_match(
    store: &dyn Store,
    patient: &PatientRow,
) -> Result<PatientMatch, StoreError> {
    Ok(PatientMatch {
        patient_id: patient.id.clone(),
        name: patient_name(store, patient).await?,
        birth_date: patient.birth_date,
        nhs_number: patient.nhs_number.clone(),
    })
}

/// What a receptionist searches with: `nhs_number` alone, or `family` with `birth_date`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PatientSearch {
    pub nhs_number: Option<String>,
    pub family: Option<String>,
    pub birth_date: Option<NaiveDate>,
}

/// A receptionist's exact search among her own practice's patients (audited
/// `booking_search`, with how many were found).
pub async fn search(
    store: &dyn Store,
    receptionist: &UserRow,
    query: &PatientSearch,
    now: DateTime<Utc>,
) -> Result<Vec<PatientMatch>, StaffFailure> {
    let practice = practice_of(receptionist)?;
    let family = query
        .family
        .as_deref()
        .map(str::trim)
        .filter(|f| !f.is_empty());
    let nhs = query
        .nhs_number
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty());
    let candidates: Vec<PatientRow> = match (nhs, family, query.birth_date) {
        (Some(nhs), None, None) => {
            let nhs = NhsNumber::parse(nhs).map_err(|e| invalid("nhs_number", e))?;
            store
                .patient_by_nhs_number(nhs.digits())
                .await?
                .into_iter()
                .collect()
        }
        (None, Some(_), Some(born)) => store.patients_born_on(born).await?,
        (None, Some(_), None) => return Err(invalid("birth_date", "required with family")),
        (None, None, Some(_)) => return Err(invalid("family", "required with birth_date")),
        _ => {
            return Err(StaffFailure::Invalid(
                "give either nhs_number alone, or family and birth_date together".into(),
            ));
        }
    };
    let mut matches = Vec::new();
    let mut elsewhere = 0;
    for patient in candidates {
        if let Some(family) = family
            && patient_family(store, &patient).await?.to_lowercase() != family.to_lowercase()
        {
            continue;
        }
        let found = patient_match(store, &patient).await?;
        if !patient.practice_ods.eq_ignore_ascii_case(practice) {
            elsewhere += 1;
            continue;
        }
        matches.push(found);
    }
    audit::append(
        store,
        AuditEvent {
            at: now,
            actor: actor(receptionist),
            action: "booking_search".into(),
            patient_id: None,
            detail: serde_json::json!({
                "practice": practice,
                "by": if nhs.is_some() { "nhs_number" } else { "family_and_birth_date" },
                "found": matches.len(),
                // A match registered elsewhere is not shown; the privacy officer can see it.
                "registered_elsewhere": elsewhere,
            }),
        },
    )
    .await?;
    if matches.is_empty() {
        return Err(StaffFailure::NotFound(format!(
            "no patient registered at your practice ({practice}) matches: check the details; \
             a patient of another practice is booked by that practice"
        )));
    }
    if matches.len() > MAX_MATCHES {
        return Err(StaffFailure::Invalid(format!(
            "{} patients match: give the NHS number instead",
            matches.len()
        )));
    }
    Ok(matches)
}

/// The family name as the record gives it.
async fn patient_family(store: &dyn Store, patient: &PatientRow) -> Result<String, StoreError> {
    let snap = store.feed_snapshot().await?;
    Ok(snap
        .resource("Patient", &patient.id)
        .await?
        .filter(|r| !r.deleted)
        .and_then(|r| parse_row(&r).ok())
        .map(|r| patient_details(&r).family)
        .unwrap_or_default())
}

/// Refuse, auditing the refusal with the patient it named.
async fn refuse(
    store: &dyn Store,
    user: &UserRow,
    patient_id: Option<&str>,
    detail: serde_json::Value,
    failure: StaffFailure,
    now: DateTime<Utc>,
) -> Result<StaffFailure, StoreError> {
    let mut detail = detail;
    detail["why"] = failure.to_string().into();
    audit::append(
        store,
        AuditEvent {
            at: now,
            actor: actor(user),
            action: "booking_refused".into(),
            patient_id: patient_id.map(str::to_owned),
            detail,
        },
    )
    .await?;
    tracing::info!(user = %user.username, "booking refused");
    Ok(failure)
}

/// What a receptionist books with.
#[derive(Debug, Clone, Deserialize)]
pub struct BookRequest {
    pub patient_id: String,
    /// A slot of the session (default: the first free one).
    #[serde(default)]
    pub slot: Option<u32>,
    #[serde(default)]
    pub reason: String,
}

/// Book a patient of the receptionist's practice into a session (see the module doc).
pub async fn book(
    store: &dyn Store,
    receptionist: &UserRow,
    session_id: &str,
    request: &BookRequest,
    now: DateTime<Utc>,
) -> Result<BookingView, StaffFailure> {
    let practice = practice_of(receptionist)?.to_string();
    let reason = check_reason("reason", &request.reason)?;
    let session = store
        .clinic_session(session_id)
        .await?
        .ok_or_else(|| StaffFailure::NotFound(format!("no session {session_id}")))?;
    let detail = serde_json::json!({ "session_id": session.id, "practice": practice });
    let Some(patient) = store.patient(&request.patient_id).await? else {
        return Err(invalid("patient_id", "no such patient"));
    };
    let refused = |failure: StaffFailure| {
        refuse(
            store,
            receptionist,
            Some(&patient.id),
            detail.clone(),
            failure,
            now,
        )
    };
    if !patient.practice_ods.eq_ignore_ascii_case(&practice) {
        return Err(refused(StaffFailure::Refused(format!(
            "this patient is not registered at your practice ({practice}): only their own \
                 practice books them"
        )))
        .await?);
    }
    if session.ends_at <= now {
        return Err(refused(StaffFailure::Conflict(format!(
            "the session ended at {}: it is in the past",
            session.ends_at.format("%Y-%m-%d %H:%M")
        )))
        .await?);
    }
    if patient.dissent {
        return Err(refused(StaffFailure::Refused(
            "this patient has opted out of sharing their record (dissent): the session's \
                 clinician would receive nothing; book them by other means"
                .into(),
        ))
        .await?);
    }
    let clinician = store
        .user_by_id(&session.clinician_user_id)
        .await?
        .ok_or_else(|| StoreError::Corrupt(format!("session {} has no clinician", session.id)))?;
    let bookings = store.session_bookings(&session.id).await?;
    if let Some(held) = bookings
        .iter()
        .find(|b| b.patient_id == patient.id && b.cancelled_at.is_none())
    {
        return Err(refused(StaffFailure::Conflict(format!(
            "this patient is already booked into this session at {} (booking {})",
            held.slot_starts_at.format("%H:%M"),
            held.id
        )))
        .await?);
    }
    let free = free_slots(&session, &bookings, now);
    let slot = match request.slot {
        None => match free.first() {
            Some(s) => s.clone(),
            None => {
                return Err(refused(StaffFailure::Conflict(format!(
                    "the session is full: all {} slots are booked or have started",
                    session.slots
                )))
                .await?);
            }
        },
        Some(n) if n >= session.slots => {
            return Err(invalid(
                "slot",
                format!("the session has slots 0 to {}", session.slots - 1),
            ));
        }
        Some(n) => match free.iter().find(|s| s.slot == n) {
            Some(s) => s.clone(),
            None => {
                let starts = slot_start(&session, n);
                let why = if starts <= now {
                    format!(
                        "slot {n} started at {}: choose a later one",
                        starts.format("%H:%M")
                    )
                } else {
                    format!("slot {n} is taken: choose another")
                };
                return Err(refused(StaffFailure::Conflict(why)).await?);
            }
        },
    };
    let scope = pull::user_scope_on(store, &clinician, slot.starts_at.date_naive()).await?;
    if !scope
        .agreements
        .iter()
        .any(|a| a.applies(&patient.practice_ods, &clinician.role))
    {
        return Err(refused(StaffFailure::Refused(format!(
            "no sharing agreement in force covers your practice ({practice}) with service \
                 {} for a {}: the clinician could not see the record",
            session.service_id, clinician.role
        )))
        .await?);
    }
    let ends_at = lists::default_ends_at(ListKind::Appointment, slot.starts_at);
    let written = store
        .write_booking(
            BookingWrite {
                session_id: session.id.clone(),
                slot: slot.slot,
                slot_starts_at: slot.starts_at,
                entry: ListEntryWrite {
                    list_id: session.list_id.clone(),
                    patient_id: patient.id.clone(),
                    reason: reason.clone(),
                    starts_at: slot.starts_at,
                    ends_at,
                    user_id: None,
                },
                booked_by: receptionist.id.clone(),
                at: now,
            },
            AuditEvent {
                at: now,
                actor: actor(receptionist),
                action: "booking_made".into(),
                patient_id: Some(patient.id.clone()),
                detail: serde_json::json!({
                    "session_id": session.id,
                    "service_id": session.service_id,
                    "clinician": clinician.username,
                    "slot": slot.slot,
                    "starts_at": slot.starts_at,
                    "practice": practice,
                    "reason": reason,
                }),
            },
            audit::seal,
        )
        .await
        .map_err(|e| match e {
            StoreError::Conflict(_) => StaffFailure::Conflict(format!(
                "slot {} was booked by someone else just now: choose another",
                slot.slot
            )),
            e => e.into(),
        })?;
    tracing::info!(user = %receptionist.username, session = %session.id, slot = slot.slot, "booked");
    Ok(BookingView {
        booking_id: written.id,
        session_id: session.id,
        slot: written.slot,
        starts_at: written.slot_starts_at,
        patient: patient_match(store, &patient).await?,
        reason,
        booked_at: written.booked_at,
        cancelled_at: None,
    })
}

/// Cancel a booking of a patient of the receptionist's practice: the entry ends now
/// (audited `booking_cancelled`).
pub async fn cancel(
    store: &dyn Store,
    receptionist: &UserRow,
    booking_id: i64,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<(), StaffFailure> {
    let practice = practice_of(receptionist)?.to_string();
    let reason = check_reason("reason", reason)?;
    let booking = store
        .booking(booking_id)
        .await?
        .ok_or_else(|| StaffFailure::NotFound(format!("no booking {booking_id}")))?;
    let patient = store
        .patient(&booking.patient_id)
        .await?
        .ok_or_else(|| StoreError::Corrupt(format!("booking {booking_id} names no patient")))?;
    if !patient.practice_ods.eq_ignore_ascii_case(&practice) {
        return Err(refuse(
            store,
            receptionist,
            Some(&patient.id),
            serde_json::json!({ "booking_id": booking_id, "practice": practice }),
            StaffFailure::Refused(format!(
                "this booking is of a patient not registered at your practice ({practice}): \
                 only their own practice cancels it"
            )),
            now,
        )
        .await?);
    }
    if let Some(at) = booking.cancelled_at {
        return Err(StaffFailure::Conflict(format!(
            "booking {booking_id} was already cancelled at {}",
            at.format("%Y-%m-%d %H:%M")
        )));
    }
    store
        .write_booking_cancelled(
            booking_id,
            &receptionist.id,
            &reason,
            now,
            AuditEvent {
                at: now,
                actor: actor(receptionist),
                action: "booking_cancelled".into(),
                patient_id: Some(patient.id.clone()),
                detail: serde_json::json!({
                    "booking_id": booking_id,
                    "session_id": booking.session_id,
                    "reason": reason,
                }),
            },
            audit::seal,
        )
        .await
        .map_err(|e| match e {
            StoreError::NotFound(m) => StaffFailure::Conflict(m),
            e => e.into(),
        })?;
    tracing::info!(user = %receptionist.username, booking_id, "booking cancelled");
    Ok(())
}

/// The sessions between `from` and `to` a receptionist can book into: those of services
/// with an agreement in force covering her practice for the clinician's role, with their
/// free slots and her practice's bookings.
pub async fn sessions_for(
    store: &dyn Store,
    receptionist: &UserRow,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Vec<SessionView>, StaffFailure> {
    let practice = practice_of(receptionist)?.to_string();
    let mut out = Vec::new();
    for session in store.clinic_sessions(from, to).await? {
        let Some(clinician) = store.user_by_id(&session.clinician_user_id).await? else {
            continue;
        };
        let scope = pull::user_scope_on(store, &clinician, session.starts_at.date_naive()).await?;
        if !scope
            .agreements
            .iter()
            .any(|a| a.applies(&practice, &clinician.role))
        {
            continue;
        }
        let bookings = store.session_bookings(&session.id).await?;
        let mut ours = Vec::new();
        for b in &bookings {
            let Some(patient) = store.patient(&b.patient_id).await? else {
                continue;
            };
            if patient.practice_ods.eq_ignore_ascii_case(&practice) {
                ours.push(BookingView {
                    booking_id: b.id,
                    session_id: b.session_id.clone(),
                    slot: b.slot,
                    starts_at: b.slot_starts_at,
                    patient: patient_match(store, &patient).await?,
                    reason: b.reason.clone(),
                    booked_at: b.booked_at,
                    cancelled_at: b.cancelled_at,
                });
            }
        }
        out.push(SessionView {
            id: session.id.clone(),
            service_id: session.service_id.clone(),
            clinician: clinician.username,
            clinician_name: clinician.display_name,
            starts_at: session.starts_at,
            ends_at: session.ends_at,
            slots: session.slots,
            booked: bookings.iter().filter(|b| b.cancelled_at.is_none()).count(),
            free: free_slots(&session, &bookings, now),
            bookings: ours,
        });
    }
    Ok(out)
}

/// The sessions of the manager's own service between `from` and `to`, with their free slots
/// (no patients: a manager books no one and sees no bookings' patients).
pub async fn service_sessions(
    store: &dyn Store,
    manager: &UserRow,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Vec<SessionView>, StaffFailure> {
    if manager.role != SERVICE_MANAGER {
        return Err(StaffFailure::Refused(format!(
            "a service's sessions are listed for its service manager; {} is a {}",
            manager.username, manager.role
        )));
    }
    let mut out = Vec::new();
    for session in store.clinic_sessions(from, to).await? {
        if session.service_id != manager.service_id {
            continue;
        }
        let Some(clinician) = store.user_by_id(&session.clinician_user_id).await? else {
            continue;
        };
        let bookings = store.session_bookings(&session.id).await?;
        out.push(SessionView {
            id: session.id.clone(),
            service_id: session.service_id.clone(),
            clinician: clinician.username,
            clinician_name: clinician.display_name,
            starts_at: session.starts_at,
            ends_at: session.ends_at,
            slots: session.slots,
            booked: bookings.iter().filter(|b| b.cancelled_at.is_none()).count(),
            free: free_slots(&session, &bookings, now),
            bookings: Vec::new(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(slots: u32) -> ClinicSessionRow {
        let start = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        ClinicSessionRow {
            id: "s".into(),
            service_id: "hub".into(),
            list_id: "session-s".into(),
            clinician_user_id: "u".into(),
            starts_at: start,
            ends_at: start + Duration::minutes(150),
            slots,
            created_at: start,
        }
    }

    fn booking(slot: u32, cancelled: bool) -> BookingRow {
        let s = session(10);
        BookingRow {
            id: i64::from(slot),
            session_id: "s".into(),
            slot,
            slot_starts_at: slot_start(&s, slot),
            patient_id: format!("p{slot}"),
            entry_id: 1,
            reason: "r".into(),
            booked_by: "x".into(),
            booked_at: s.starts_at,
            cancelled_at: cancelled.then_some(s.starts_at),
            cancelled_by: None,
            cancel_reason: None,
        }
    }

    #[test]
    fn slots_are_equal_and_a_cancelled_booking_frees_its_slot() {
        let s = session(10);
        // 150 minutes in 10 slots: 15 minutes each.
        assert_eq!(slot_start(&s, 0), s.starts_at);
        assert_eq!(slot_start(&s, 3), s.starts_at + Duration::minutes(45));
        let bookings = [booking(0, false), booking(1, true), booking(2, false)];
        let before = s.starts_at - Duration::hours(1);
        let free: Vec<u32> = free_slots(&s, &bookings, before)
            .iter()
            .map(|f| f.slot)
            .collect();
        assert_eq!(free, vec![1, 3, 4, 5, 6, 7, 8, 9]);
        // Twenty minutes in, slots 0 and 1 have started.
        let during = s.starts_at + Duration::minutes(20);
        let free: Vec<u32> = free_slots(&s, &bookings, during)
            .iter()
            .map(|f| f.slot)
            .collect();
        assert_eq!(free, vec![3, 4, 5, 6, 7, 8, 9]);
    }
}
