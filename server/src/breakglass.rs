//! Break-glass: a clinician reaching, in an emergency, a patient who is not on their list, in
//! the open.
//!
//! # Rules
//!
//! - Only a user whose service has an agreement in force for their role that allows emergency
//!   access (`emergency_access`) may break the glass, and only for patients of the practices
//!   such an agreement covers. Anyone else is refused, and the refusal is audited
//!   (`break_glass_refused`).
//! - A reason comes first: a search without one finds nothing. "Other" needs the clinician's
//!   own words (at least [`MIN_OTHER_WORDS`] characters).
//! - A search is exact: an NHS number (Modulus 11 checked), or a family name and a date of
//!   birth together (the family name compared case- and accent-exactly but for letter case).
//!   At most [`MAX_MATCHES`] patients are shown; more means "give the NHS number". Every
//!   search is audited with its reason and how many it found (`break_glass_search`).
//! - Breaking the glass for a patient puts them on the service's break-glass list for
//!   [`BREAK_GLASS_HOURS`], naming the user (it reaches that user only), raises an alert for
//!   the privacy officer, and audits `break_glass` — the three in one transaction. A patient
//!   who dissented is reachable this way only (see `crate::pull::covered_patients`).
//! - The patient leaves the device at the first sync after the entry ends (the pull's rule
//!   for ended entries).

use chrono::{DateTime, Duration, Utc};
use doorstep_protocol::ListKind;
use doorstep_protocol::{
    BREAK_GLASS_HOURS, BreakGlassGranted, BreakGlassMatch, BreakGlassReason, BreakGlassSearch,
};
use doorstep_record::agreement::Agreement;
use doorstep_record::fhir::Resource;
use doorstep_record::nhs::NhsNumber;
use doorstep_record::views::patient_details;

use crate::audit;
use crate::pull::{UserScope, parse_row};
use crate::store::{
    AuditEvent, BreakGlassWrite, FeedSnapshot, ListEntryWrite, ListRow, PatientRow, Store,
    StoreError, UserRow,
};

/// At most this many patients are shown for one search.
pub const MAX_MATCHES: usize = 5;
/// "Other" needs at least this many characters of the clinician's own words.
pub const MIN_OTHER_WORDS: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum BreakGlassFailure {
    /// No agreement in force for the user allows emergency access (audited).
    #[error("{0}")]
    NotAllowed(String),
    /// The request is wrong: what is wrong, by field.
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The reason in words, as the alert and the access report give it.
pub fn reason_words(reason: BreakGlassReason, text: Option<&str>) -> String {
    let base = match reason {
        BreakGlassReason::EmergencyTreatment => "emergency treatment",
        BreakGlassReason::PatientUnconscious => "patient unconscious",
        BreakGlassReason::PatientConsented => "patient consented",
        BreakGlassReason::Other => "other",
    };
    match text.map(str::trim).filter(|t| !t.is_empty()) {
        Some(t) => format!("{base}: {t}"),
        None => base.to_string(),
    }
}

fn check_reason(reason: BreakGlassReason, text: Option<&str>) -> Result<String, BreakGlassFailure> {
    let words = text.map(str::trim).unwrap_or("");
    if reason == BreakGlassReason::Other && words.chars().count() < MIN_OTHER_WORDS {
        return Err(BreakGlassFailure::Invalid(format!(
            "reason_text: a reason of \"other\" needs your own words (at least {MIN_OTHER_WORDS} \
             characters)"
        )));
    }
    if words.chars().count() > 500 {
        return Err(BreakGlassFailure::Invalid(
            "reason_text: at most 500 characters".into(),
        ));
    }
    Ok(reason_words(reason, text))
}

/// The user's agreements that allow emergency access.
fn emergency_agreements(scope: &UserScope) -> Vec<&Agreement> {
    scope
        .agreements
        .iter()
        .filter(|a| a.emergency_access)
        .collect()
}

async fn refuse(
    store: &dyn Store,
    user: &UserRow,
    now: DateTime<Utc>,
    why: String,
) -> Result<BreakGlassFailure, StoreError> {
    audit::append(
        store,
        AuditEvent {
            at: now,
            actor: format!("user:{}", user.username),
            action: "break_glass_refused".into(),
            patient_id: None,
            detail: serde_json::json!({ "service_id": user.service_id, "why": why }),
        },
    )
    .await?;
    Ok(BreakGlassFailure::NotAllowed(why))
}

/// The user's emergency agreements, or the audited refusal.
async fn allowed<'a>(
    store: &dyn Store,
    user: &UserRow,
    scope: &'a UserScope,
    now: DateTime<Utc>,
) -> Result<Vec<&'a Agreement>, BreakGlassFailure> {
    let agreements = emergency_agreements(scope);
    if agreements.is_empty() {
        return Err(refuse(
            store,
            user,
            now,
            format!(
                "no agreement in force for role {} of service {} allows emergency access",
                user.role, user.service_id
            ),
        )
        .await?);
    }
    Ok(agreements)
}

fn reachable(patient: &PatientRow, agreements: &[&Agreement], role: &str) -> bool {
    agreements
        .iter()
        .any(|a| a.applies(&patient.practice_ods, role))
}

/// The patient's own Patient resource (its id is the patient's), read alone: not the whole
/// record of every candidate.
async fn patient_resource(
    snap: &dyn FeedSnapshot,
    patient: &PatientRow,
) -> Result<Option<Resource>, StoreError> {
    Ok(snap
        .resource("Patient", &patient.id)
        .await?
        .filter(|r| !r.deleted)
        .and_then(|r| parse_row(&r).ok()))
}

/// Search for a patient to break the glass for (see the module doc).
pub async fn search(
    store: &dyn Store,
    user: &UserRow,
    scope: &UserScope,
    query: &BreakGlassSearch,
    now: DateTime<Utc>,
) -> Result<Vec<BreakGlassMatch>, BreakGlassFailure> {
    let agreements = allowed(store, user, scope, now).await?;
    let reason = check_reason(query.reason, query.reason_text.as_deref())?;
    let family = query
        .family
        .as_deref()
        .map(str::trim)
        .filter(|f| !f.is_empty());
    let candidates: Vec<PatientRow> = match (&query.nhs_number, family, query.birth_date) {
        (Some(nhs), None, None) => {
            let nhs = NhsNumber::parse(nhs)
                .map_err(|e| BreakGlassFailure::Invalid(format!("nhs_number: {e}")))?;
            store
                .patient_by_nhs_number(nhs.digits())
                .await?
                .into_iter()
                .collect()
        }
        (None, Some(_), Some(born)) => store.patients_born_on(born).await?,
        _ => {
            return Err(BreakGlassFailure::Invalid(
                "give either nhs_number alone, or family and birth_date together".into(),
            ));
        }
    };
    let mut matches = Vec::new();
    let snap = store.feed_snapshot().await?;
    for patient in candidates {
        if !reachable(&patient, &agreements, &user.role) {
            continue;
        }
        let Some(resource) = patient_resource(snap.as_ref(), &patient).await? else {
            continue;
        };
        let details = patient_details(&resource);
        if let Some(family) = family
            && details.family.to_lowercase() != family.to_lowercase()
        {
            continue;
        }
        matches.push(BreakGlassMatch {
            patient_id: patient.id.clone(),
            name: details.name_display,
            birth_date: patient.birth_date,
            nhs_number: patient.nhs_number.clone(),
            practice_name: patient.practice_name.clone(),
        });
    }
    drop(snap);
    audit::append(
        store,
        AuditEvent {
            at: now,
            actor: format!("user:{}", user.username),
            action: "break_glass_search".into(),
            patient_id: None,
            detail: serde_json::json!({
                "service_id": user.service_id,
                "reason": reason,
                "by": if query.nhs_number.is_some() { "nhs_number" } else { "family_and_birth_date" },
                "found": matches.len(),
            }),
        },
    )
    .await?;
    if matches.len() > MAX_MATCHES {
        return Err(BreakGlassFailure::Invalid(format!(
            "{} patients match: give the NHS number instead",
            matches.len()
        )));
    }
    Ok(matches)
}

/// Break the glass for `patient_id` (see the module doc).
pub async fn grant(
    store: &dyn Store,
    user: &UserRow,
    scope: &UserScope,
    patient_id: &str,
    reason: BreakGlassReason,
    reason_text: Option<&str>,
    now: DateTime<Utc>,
) -> Result<BreakGlassGranted, BreakGlassFailure> {
    let agreements = allowed(store, user, scope, now).await?;
    let words = check_reason(reason, reason_text)?;
    let patient = store
        .patient(patient_id)
        .await?
        .filter(|p| reachable(p, &agreements, &user.role))
        .ok_or_else(|| {
            BreakGlassFailure::NotFound(
                "no patient with this id is within your service's emergency access".into(),
            )
        })?;
    let list = break_glass_list(store, &user.service_id).await?;
    let now = DateTime::from_timestamp(now.timestamp(), 0).unwrap_or(now);
    let ends_at = now + Duration::hours(BREAK_GLASS_HOURS);
    let agreement_ids: Vec<String> = agreements
        .iter()
        .filter(|a| a.applies(&patient.practice_ods, &user.role))
        .map(|a| a.id.clone())
        .collect();
    let (_, alert_id) = store
        .insert_break_glass(
            BreakGlassWrite {
                entry: ListEntryWrite {
                    list_id: list,
                    patient_id: patient.id.clone(),
                    reason: format!("{}{words}", crate::lists::BREAK_GLASS_REASON_PREFIX),
                    starts_at: now,
                    ends_at: Some(ends_at),
                    user_id: Some(user.id.clone()),
                },
                reason: words.clone(),
                detail: serde_json::json!({
                    "username": user.username,
                    "display_name": user.display_name,
                    "service_id": user.service_id,
                    "agreements": agreement_ids,
                    "ends_at": ends_at,
                }),
                audit: AuditEvent {
                    at: now,
                    actor: format!("user:{}", user.username),
                    action: "break_glass".into(),
                    patient_id: Some(patient.id.clone()),
                    detail: serde_json::json!({
                        "service_id": user.service_id,
                        "reason": words,
                        "agreements": agreement_ids,
                        "ends_at": ends_at,
                    }),
                },
            },
            audit::seal,
            now,
        )
        .await?;
    tracing::warn!(user = %user.username, alert_id, "break-glass access granted");
    Ok(BreakGlassGranted {
        patient_id: patient.id,
        ends_at,
        alert_id,
    })
}

/// The service's break-glass list, made when it has none.
async fn break_glass_list(store: &dyn Store, service_id: &str) -> Result<String, StoreError> {
    if let Some(list) = store
        .lists()
        .await?
        .into_iter()
        .find(|l| l.service_id == service_id && l.kind == ListKind::BreakGlass)
    {
        return Ok(list.id);
    }
    let id = format!("{service_id}-break-glass");
    store
        .create_list(ListRow {
            id: id.clone(),
            name: "Break-glass".into(),
            kind: ListKind::BreakGlass,
            service_id: service_id.into(),
            owner_user_id: None,
            team: None,
        })
        .await?;
    Ok(id)
}

/// An alert as the privacy officer reads it: who, whom, when, why, and what was opened under
/// it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AlertReport {
    pub id: i64,
    pub at: DateTime<Utc>,
    /// The user who broke the glass: username and name.
    pub who: String,
    pub service_id: String,
    pub patient_id: String,
    pub nhs_number: String,
    pub why: String,
    pub ends_at: Option<DateTime<Utc>>,
    /// What reached or was opened on the user's devices under it (audit actions and times).
    pub opened: Vec<Opened>,
    pub acknowledged: Option<Acknowledged>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Opened {
    pub at: DateTime<Utc>,
    pub action: String,
    pub device_id: Option<String>,
    pub section: Option<String>,
    pub offline: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Acknowledged {
    pub at: DateTime<Utc>,
    pub by: String,
    pub note: String,
}

/// The alerts (only the open ones when `open_only`), newest first, each with what was opened
/// under it.
pub async fn alert_reports(
    store: &dyn Store,
    open_only: bool,
) -> Result<Vec<AlertReport>, StoreError> {
    let mut out = Vec::new();
    for alert in store.alerts(open_only).await? {
        out.push(alert_report(store, alert).await?);
    }
    Ok(out)
}

async fn alert_report(
    store: &dyn Store,
    alert: crate::store::AlertRow,
) -> Result<AlertReport, StoreError> {
    let d = &alert.detail;
    let username = d["username"].as_str().unwrap_or("").to_string();
    let ends_at = d["ends_at"]
        .as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc));
    let actor = format!("user:{username}");
    let opened = store
        .audit_rows_for_patient(&alert.patient_id, Some(alert.at))
        .await?
        .into_iter()
        .filter(|r| {
            let by_user =
                r.event.actor == actor || r.event.detail["user"].as_str() == Some(&username);
            by_user
                && matches!(r.event.action.as_str(), "record_sent" | "record_viewed")
                && ends_at.is_none_or(|end| r.event.at <= end)
        })
        .map(|r| Opened {
            at: r.event.detail["viewed_at"]
                .as_str()
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map_or(r.event.at, |t| t.with_timezone(&Utc)),
            action: r.event.action.clone(),
            device_id: r.event.detail["device_id"].as_str().map(str::to_owned),
            section: r.event.detail["section"].as_str().map(str::to_owned),
            offline: r.event.detail["offline"].as_bool(),
        })
        .collect();
    let nhs_number = store
        .patient(&alert.patient_id)
        .await?
        .map(|p| p.nhs_number)
        .unwrap_or_default();
    Ok(AlertReport {
        id: alert.id,
        at: alert.at,
        who: format!(
            "{} ({})",
            d["display_name"].as_str().unwrap_or(&username),
            username
        ),
        service_id: d["service_id"].as_str().unwrap_or("").to_string(),
        patient_id: alert.patient_id,
        nhs_number,
        why: alert.reason,
        ends_at,
        opened,
        acknowledged: alert.acked_at.map(|at| Acknowledged {
            at,
            by: alert.acked_by.unwrap_or_default(),
            note: alert.ack_note.unwrap_or_default(),
        }),
    })
}

/// Acknowledge alert `id` with the privacy officer's note (audited `alert_acknowledged`).
pub async fn ack(
    store: &dyn Store,
    id: i64,
    by: &str,
    note: &str,
    now: DateTime<Utc>,
) -> Result<(), BreakGlassFailure> {
    let note = note.trim();
    if note.is_empty() {
        return Err(BreakGlassFailure::Invalid(
            "note: say what was checked (required)".into(),
        ));
    }
    let alert = store
        .alert(id)
        .await?
        .ok_or_else(|| BreakGlassFailure::NotFound(format!("no alert {id}")))?;
    let done = store
        .ack_alert(
            id,
            by,
            note,
            now,
            AuditEvent {
                at: now,
                actor: by.to_string(),
                action: "alert_acknowledged".into(),
                patient_id: Some(alert.patient_id.clone()),
                detail: serde_json::json!({ "alert_id": id, "note": note }),
            },
            audit::seal,
        )
        .await?;
    if !done {
        return Err(BreakGlassFailure::Invalid(format!(
            "alert {id} was already acknowledged"
        )));
    }
    Ok(())
}
