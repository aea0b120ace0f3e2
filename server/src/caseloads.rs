//! Caseloads: a district nursing team leader adds patients to her team's caseload,
//! discharges them, and transfers them to another team of the same service. Each is a change
//! of list entries written with its audit event (who and why) in one transaction; the team's
//! devices learn it at their next pull.
//!
//! # Rules
//!
//! - The caller is a `team_leader` of a service, in a team; she changes only her own team's
//!   caseload: the caseload list of her service whose team is hers (made, named after the
//!   team, at the first addition when the service has none).
//! - A patient is named by NHS number (Modulus 11 checked) and must be covered by an
//!   agreement of the service in force today, and must not have dissented (refused, 403).
//! - Adding needs a reason and an expected end (today or later). The expected end is a
//!   review date, said in the entry's reason ("expected end 2027-01-15"), never the entry's
//!   end: a caseload entry runs until discharged, so a patient still needing visits never
//!   drops off the nurses' devices because a date passed. A patient already on the caseload
//!   is refused (409).
//! - Discharging ends the patient's open entries on the caseload now (`caseload_discharged`);
//!   transferring ends them and adds the patient to the other team's caseload in the same
//!   transaction (`caseload_transferred`). The other team must be a team of the same service
//!   (a member or a caseload list of that service names it).

use chrono::{DateTime, NaiveDate, Utc};
use doorstep_protocol::ListKind;
use doorstep_record::nhs::NhsNumber;
use serde::{Deserialize, Serialize};

use crate::audit;
use crate::bookings::{PatientMatch, StaffFailure, check_reason, patient_match};
use crate::store::{AuditEvent, ListChange, ListEntryWrite, ListRow, PatientRow, Store, UserRow};

/// The role of a team leader.
pub const TEAM_LEADER: &str = "team_leader";

/// One patient on a caseload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CaseloadEntry {
    pub patient: PatientMatch,
    pub reason: String,
    pub since: DateTime<Utc>,
}

/// A team's caseload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Caseload {
    pub service_id: String,
    pub team: String,
    pub list_id: Option<String>,
    pub entries: Vec<CaseloadEntry>,
}

/// A patient to add.
#[derive(Debug, Clone, Deserialize)]
pub struct Addition {
    #[serde(default)]
    pub nhs_number: String,
    #[serde(default)]
    pub reason: String,
    pub expected_end: Option<NaiveDate>,
}

/// The leader's service and team, or the refusal.
async fn team_of(store: &dyn Store, leader: &UserRow) -> Result<String, StaffFailure> {
    if leader.role != TEAM_LEADER {
        return Err(StaffFailure::Refused(format!(
            "caseloads are changed by a team leader; {} is a {}",
            leader.username, leader.role
        )));
    }
    store.team_of(&leader.id).await?.ok_or_else(|| {
        StaffFailure::Refused(format!(
            "{} is in no team: ask the administrator to put them in one",
            leader.username
        ))
    })
}

/// The caseload list of `team` in `service`, if it has one.
async fn caseload_list(
    store: &dyn Store,
    service: &str,
    team: &str,
) -> Result<Option<ListRow>, StaffFailure> {
    Ok(store.lists().await?.into_iter().find(|l| {
        l.service_id == service && l.kind == ListKind::Caseload && l.team.as_deref() == Some(team)
    }))
}

/// The team's caseload list, made when it has none.
async fn caseload_list_made(
    store: &dyn Store,
    service: &str,
    team: &str,
) -> Result<String, StaffFailure> {
    if let Some(list) = caseload_list(store, service, team).await? {
        return Ok(list.id);
    }
    let id = format!("{service}-caseload-{team}");
    store
        .create_list(ListRow {
            id: id.clone(),
            name: format!("{team} caseload"),
            kind: ListKind::Caseload,
            service_id: service.into(),
            owner_user_id: None,
            team: Some(team.into()),
        })
        .await?;
    Ok(id)
}

/// The patient with this NHS number, covered by an agreement of the leader's service.
async fn covered_patient(
    store: &dyn Store,
    leader: &UserRow,
    nhs_number: &str,
) -> Result<PatientRow, StaffFailure> {
    let nhs = NhsNumber::parse(nhs_number.trim())
        .map_err(|e| StaffFailure::Invalid(format!("nhs_number: {e}")))?;
    let today = Utc::now().date_naive();
    let patient = store
        .patient_by_nhs_number(nhs.digits())
        .await?
        .ok_or_else(|| {
            StaffFailure::NotFound("no patient of the federation has this NHS number".into())
        })?;
    let covered = store
        .agreements_for_service(&leader.service_id)
        .await?
        .iter()
        .any(|a| {
            a.in_force(today)
                && a.practices
                    .iter()
                    .any(|p| p.eq_ignore_ascii_case(&patient.practice_ods))
        });
    if !covered {
        return Err(StaffFailure::Refused(format!(
            "no agreement of service {} in force covers this patient's practice: the team \
             could not see the record",
            leader.service_id
        )));
    }
    if patient.dissent {
        return Err(StaffFailure::Refused(
            "this patient has opted out of sharing their record (dissent): the team's devices \
             would receive nothing"
                .into(),
        ));
    }
    Ok(patient)
}

fn event(
    leader: &UserRow,
    action: &str,
    patient: &PatientRow,
    detail: serde_json::Value,
    now: DateTime<Utc>,
) -> AuditEvent {
    AuditEvent {
        at: now,
        actor: format!("user:{}", leader.username),
        action: action.into(),
        patient_id: Some(patient.id.clone()),
        detail,
    }
}

/// The leader's team's caseload, patients active now.
pub async fn caseload(
    store: &dyn Store,
    leader: &UserRow,
    now: DateTime<Utc>,
) -> Result<Caseload, StaffFailure> {
    let team = team_of(store, leader).await?;
    let list = caseload_list(store, &leader.service_id, &team).await?;
    let mut entries = Vec::new();
    if let Some(list) = &list {
        for entry in store.list_entries(&list.id).await? {
            if !entry.is_active(now) {
                continue;
            }
            if let Some(patient) = store.patient(&entry.patient_id).await? {
                entries.push(CaseloadEntry {
                    patient: patient_match(store, &patient).await?,
                    reason: entry.reason,
                    since: entry.starts_at,
                });
            }
        }
    }
    Ok(Caseload {
        service_id: leader.service_id.clone(),
        team,
        list_id: list.map(|l| l.id),
        entries,
    })
}

/// Whether the patient has an open entry on the list at `now`.
async fn on_list(
    store: &dyn Store,
    list_id: &str,
    patient_id: &str,
    now: DateTime<Utc>,
) -> Result<bool, StaffFailure> {
    Ok(store
        .list_entries(list_id)
        .await?
        .iter()
        .any(|e| e.patient_id == patient_id && e.is_active(now)))
}

/// Add a patient to the leader's team's caseload (audited `caseload_added`).
pub async fn add(
    store: &dyn Store,
    leader: &UserRow,
    addition: &Addition,
    now: DateTime<Utc>,
) -> Result<CaseloadEntry, StaffFailure> {
    let team = team_of(store, leader).await?;
    let reason = check_reason("reason", &addition.reason)?;
    let expected_end = addition.expected_end.ok_or_else(|| {
        StaffFailure::Invalid("expected_end: required (YYYY-MM-DD, a review date)".into())
    })?;
    if expected_end < now.date_naive() {
        return Err(StaffFailure::Invalid(format!(
            "expected_end: {expected_end} is in the past"
        )));
    }
    let patient = covered_patient(store, leader, &addition.nhs_number).await?;
    let list = caseload_list_made(store, &leader.service_id, &team).await?;
    if on_list(store, &list, &patient.id, now).await? {
        return Err(StaffFailure::Conflict(format!(
            "this patient is already on the {team} caseload"
        )));
    }
    let words = format!("{reason} (expected end {expected_end})");
    store
        .write_list_change(
            ListChange {
                end: None,
                add: Some(ListEntryWrite {
                    list_id: list.clone(),
                    patient_id: patient.id.clone(),
                    reason: words.clone(),
                    starts_at: now,
                    ends_at: None,
                    user_id: None,
                }),
                at: now,
            },
            event(
                leader,
                "caseload_added",
                &patient,
                serde_json::json!({
                    "service_id": leader.service_id, "team": team, "list_id": list,
                    "reason": reason, "expected_end": expected_end,
                }),
                now,
            ),
            audit::seal,
        )
        .await?;
    tracing::info!(user = %leader.username, %team, "caseload: patient added");
    Ok(CaseloadEntry {
        patient: patient_match(store, &patient).await?,
        reason: words,
        since: now,
    })
}

/// Discharge a patient from the leader's team's caseload (audited `caseload_discharged`).
pub async fn discharge(
    store: &dyn Store,
    leader: &UserRow,
    nhs_number: &str,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<(), StaffFailure> {
    let team = team_of(store, leader).await?;
    let reason = check_reason("reason", reason)?;
    let nhs = NhsNumber::parse(nhs_number.trim())
        .map_err(|e| StaffFailure::Invalid(format!("nhs_number: {e}")))?;
    let not_on = || {
        StaffFailure::NotFound(format!(
            "no patient with this NHS number is on the {team} caseload"
        ))
    };
    let patient = store
        .patient_by_nhs_number(nhs.digits())
        .await?
        .ok_or_else(not_on)?;
    let list = caseload_list(store, &leader.service_id, &team)
        .await?
        .ok_or_else(not_on)?;
    if !on_list(store, &list.id, &patient.id, now).await? {
        return Err(not_on());
    }
    store
        .write_list_change(
            ListChange {
                end: Some((list.id.clone(), patient.id.clone())),
                add: None,
                at: now,
            },
            event(
                leader,
                "caseload_discharged",
                &patient,
                serde_json::json!({
                    "service_id": leader.service_id, "team": team, "list_id": list.id,
                    "reason": reason,
                }),
                now,
            ),
            audit::seal,
        )
        .await
        .map_err(|e| match e {
            crate::store::StoreError::NotFound(_) => not_on(),
            e => e.into(),
        })?;
    tracing::info!(user = %leader.username, %team, "caseload: patient discharged");
    Ok(())
}

/// Whether `team` is a team of `service`: a member of the service is in it, or a caseload of
/// the service is the team's.
async fn is_team_of(store: &dyn Store, service: &str, team: &str) -> Result<bool, StaffFailure> {
    if caseload_list(store, service, team).await?.is_some() {
        return Ok(true);
    }
    for user in store.users().await? {
        if user.service_id == service && store.team_of(&user.id).await?.as_deref() == Some(team) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Transfer a patient from the leader's team's caseload to `to_team`'s of the same service
/// (audited `caseload_transferred`).
pub async fn transfer(
    store: &dyn Store,
    leader: &UserRow,
    nhs_number: &str,
    to_team: &str,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<(), StaffFailure> {
    let team = team_of(store, leader).await?;
    let reason = check_reason("reason", reason)?;
    let to_team = to_team.trim();
    if to_team.is_empty() {
        return Err(StaffFailure::Invalid("to_team: required".into()));
    }
    if to_team == team {
        return Err(StaffFailure::Invalid(format!(
            "to_team: the patient is on {team}'s caseload already"
        )));
    }
    if !is_team_of(store, &leader.service_id, to_team).await? {
        return Err(StaffFailure::Invalid(format!(
            "to_team: no team {to_team:?} in service {}",
            leader.service_id
        )));
    }
    let patient = covered_patient(store, leader, nhs_number).await?;
    let not_on = || StaffFailure::NotFound(format!("this patient is not on the {team} caseload"));
    let from = caseload_list(store, &leader.service_id, &team)
        .await?
        .ok_or_else(not_on)?;
    if !on_list(store, &from.id, &patient.id, now).await? {
        return Err(not_on());
    }
    let to = caseload_list_made(store, &leader.service_id, to_team).await?;
    let already = on_list(store, &to, &patient.id, now).await?;
    store
        .write_list_change(
            ListChange {
                end: Some((from.id.clone(), patient.id.clone())),
                // On both caseloads already: the transfer only ends this team's entry.
                add: (!already).then(|| ListEntryWrite {
                    list_id: to.clone(),
                    patient_id: patient.id.clone(),
                    reason: format!("Transferred from {team}: {reason}"),
                    starts_at: now,
                    ends_at: None,
                    user_id: None,
                }),
                at: now,
            },
            event(
                leader,
                "caseload_transferred",
                &patient,
                serde_json::json!({
                    "service_id": leader.service_id, "from_team": team, "to_team": to_team,
                    "reason": reason,
                }),
                now,
            ),
            audit::seal,
        )
        .await?;
    tracing::info!(user = %leader.username, from = %team, to = %to_team, "caseload: patient transferred");
    Ok(())
}
