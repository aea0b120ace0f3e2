//! Administration of the federation: agreements (create, update, retire, compare), patient
//! dissent, exclusion value sets; and the exclusion sets every request filters with.
//!
//! # Rules
//!
//! - Every change names who made it ([`Change::actor`]: `admin:NAME` over the API,
//!   `cli:USER` from the command line, `practice:ODS` for a practice's dissent) and why
//!   ([`Change::reason`], required). It is written together with its audit event, in one
//!   transaction ([`crate::store::AdminStore`]): no change is stored unaudited.
//! - Bad input changes nothing: an agreement is checked whole first
//!   ([`doorstep_record::agreement::Agreement::validate`], plus: its service exists), a value
//!   set is read ([`ValueSet::from_json`]) and tried on the current sets before anything is
//!   written. Errors name the field ([`AdminFailure::Invalid`]).
//! - An agreement's version counts up by one at every change (create: 1); an update or a
//!   retirement is written only if the stored version is still the one it was decided on
//!   (another administrator's change in between answers [`AdminFailure::Conflict`]). A retired
//!   agreement stays stored (and shown) but covers no one from its retirement day
//!   ([`Agreement::in_force`], applied by [`crate::pull::user_scope`]).
//! - Value sets extend, never shrink: the server's sets are the shipped RCGP floor extended by
//!   every load in load order ([`server_exclusion_sets`]). [`ServerSets`] caches them per node
//!   and compares the stored value-set version (one small read) at every request, so a load
//!   through one node is used by every node from its next request.
//! - A device's view changes with its policy: agreement changes, value-set loads and a
//!   user's new role ([`set_user_role`]) change the user's access epoch ([`crate::cursor::access_epoch`]), so each affected device
//!   rebuilds at its next pull (410). Dissent needs no rebuild: the pull's candidate set drops
//!   a dissenting patient at the next page ([`crate::pull::candidates`]).
//! - No patient data in logs: dissent is logged without the NHS number.

use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};

use chrono::{DateTime, NaiveDate, Utc};
use doorstep_record::NhsNumber;
use doorstep_record::Section;
use doorstep_record::agreement::{Agreement, FieldError};
use doorstep_record::valueset::{ExclusionSets, ExtendReport, ValueSet, ValueSetError};
use serde::Serialize;

use crate::audit;
use crate::store::{AdminStore, AgreementWrite, AuditEvent, Store, StoreError, ValueSetLoad};

/// Who changes something, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub actor: String,
    pub reason: String,
}

/// Why an administrative change was not made. Nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum AdminFailure {
    /// The input is wrong; each error names its field.
    #[error("{}", join(.0))]
    Invalid(Vec<FieldError>),
    #[error("{0}")]
    NotFound(String),
    /// The change does not fit the stored state (an id taken, already retired, changed by
    /// someone else meanwhile).
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn join(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

pub(crate) fn invalid(field: &str, problem: impl Into<String>) -> AdminFailure {
    AdminFailure::Invalid(vec![FieldError {
        field: field.into(),
        problem: problem.into(),
    }])
}

pub(crate) fn check_reason(change: &Change) -> Result<(), AdminFailure> {
    if change.reason.trim().is_empty() {
        return Err(invalid("reason", "required (say why this changes)"));
    }
    Ok(())
}

/// The agreement checked whole: its own fields, then that its service exists.
async fn check_agreement(store: &dyn Store, agreement: &Agreement) -> Result<(), AdminFailure> {
    let mut errors = match agreement.validate() {
        Ok(()) => Vec::new(),
        Err(errors) => errors,
    };
    if !agreement.service.trim().is_empty() {
        let services = store.services().await?;
        if !services.iter().any(|s| s.id == agreement.service) {
            let known: Vec<&str> = services.iter().map(|s| s.id.as_str()).collect();
            errors.push(FieldError {
                field: "service".into(),
                problem: format!(
                    "unknown service {:?} (one of {})",
                    agreement.service,
                    known.join(", ")
                ),
            });
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(AdminFailure::Invalid(errors))
    }
}

fn stale_to_conflict(e: StoreError, id: &str) -> AdminFailure {
    match e {
        StoreError::Stale(_) => AdminFailure::Conflict(format!(
            "agreement {id} was changed by someone else meanwhile: read it again and retry"
        )),
        other => AdminFailure::Store(other),
    }
}

async fn write(
    store: &dyn Store,
    agreement: Agreement,
    expected_version: Option<u32>,
    action: &str,
    change: &Change,
    now: DateTime<Utc>,
) -> Result<Agreement, AdminFailure> {
    let id = agreement.id.clone();
    let event = AuditEvent {
        at: now,
        actor: change.actor.clone(),
        action: action.into(),
        patient_id: None,
        detail: serde_json::json!({
            "agreement": agreement.id,
            "version": agreement.version,
            "reason": change.reason,
        }),
    };
    store
        .write_agreement(
            AgreementWrite {
                agreement: agreement.clone(),
                expected_version,
                at: now,
                actor: change.actor.clone(),
                reason: change.reason.clone(),
            },
            event,
            audit::seal,
        )
        .await
        .map_err(|e| stale_to_conflict(e, &id))?;
    tracing::info!(actor = %change.actor, agreement = %id, version = agreement.version, action, "agreement changed");
    Ok(agreement)
}

/// Create an agreement (version 1). Its id must be new.
pub async fn create_agreement(
    store: &dyn Store,
    mut agreement: Agreement,
    change: &Change,
    now: DateTime<Utc>,
) -> Result<Agreement, AdminFailure> {
    check_reason(change)?;
    agreement.version = 1;
    check_agreement(store, &agreement).await?;
    if store.agreement(&agreement.id).await?.is_some() {
        return Err(AdminFailure::Conflict(format!(
            "agreement {} exists: update it instead",
            agreement.id
        )));
    }
    write(store, agreement, None, "agreement_created", change, now).await
}

/// Replace agreement `id` by `agreement` (its next version). The file's id, when given, must
/// be `id`; its version is ignored (the next one is the stored one plus one).
pub async fn update_agreement(
    store: &dyn Store,
    id: &str,
    mut agreement: Agreement,
    change: &Change,
    now: DateTime<Utc>,
) -> Result<Agreement, AdminFailure> {
    check_reason(change)?;
    if agreement.id.is_empty() {
        agreement.id = id.to_string();
    } else if agreement.id != id {
        return Err(invalid(
            "id",
            format!(
                "{:?} is not the agreement being updated ({id:?})",
                agreement.id
            ),
        ));
    }
    let stored = store
        .agreement(id)
        .await?
        .ok_or_else(|| AdminFailure::NotFound(format!("no agreement {id}")))?;
    agreement.version = stored.version + 1;
    check_agreement(store, &agreement).await?;
    if agreement == stored_with_version(&stored, agreement.version) {
        return Err(AdminFailure::Conflict(format!(
            "agreement {id} already says this: nothing to change"
        )));
    }
    write(
        store,
        agreement,
        Some(stored.version),
        "agreement_updated",
        change,
        now,
    )
    .await
}

fn stored_with_version(stored: &Agreement, version: u32) -> Agreement {
    Agreement {
        version,
        ..stored.clone()
    }
}

/// Retire agreement `id` on `on` (default: today): from that day it covers no one.
pub async fn retire_agreement(
    store: &dyn Store,
    id: &str,
    on: Option<NaiveDate>,
    change: &Change,
    now: DateTime<Utc>,
) -> Result<Agreement, AdminFailure> {
    check_reason(change)?;
    let stored = store
        .agreement(id)
        .await?
        .ok_or_else(|| AdminFailure::NotFound(format!("no agreement {id}")))?;
    if let Some(day) = stored.retired {
        return Err(AdminFailure::Conflict(format!(
            "agreement {id} is already retired (on {day})"
        )));
    }
    let day = on.unwrap_or(now.date_naive());
    let mut retired = stored.clone();
    retired.retired = Some(day);
    retired.version = stored.version + 1;
    if let Err(errors) = retired.validate() {
        return Err(AdminFailure::Invalid(errors));
    }
    write(
        store,
        retired,
        Some(stored.version),
        "agreement_retired",
        change,
        now,
    )
    .await
}

/// Set a patient's dissent (opt-out of sharing) by NHS number. `practice`: the change comes
/// from that practice's system, which may set it only for its own patients (another
/// practice's patient answers `NotFound`, as an unknown number does: it learns nothing).
pub async fn set_dissent(
    store: &dyn Store,
    nhs_number: &str,
    dissent: bool,
    practice: Option<&str>,
    change: &Change,
    now: DateTime<Utc>,
) -> Result<(), AdminFailure> {
    check_reason(change)?;
    let nhs = NhsNumber::parse(nhs_number).map_err(|e| invalid("nhs_number", e.to_string()))?;
    let patient = store
        .patient_by_nhs_number(nhs.digits())
        .await?
        .filter(|p| practice.is_none_or(|ods| p.practice_ods.eq_ignore_ascii_case(ods)))
        .ok_or_else(|| {
            AdminFailure::NotFound(match practice {
                Some(ods) => format!("no patient of practice {ods} has this NHS number"),
                None => "no patient has this NHS number".into(),
            })
        })?;
    store
        .write_dissent(
            &patient.id,
            dissent,
            AuditEvent {
                at: now,
                actor: change.actor.clone(),
                action: "dissent_set".into(),
                patient_id: Some(patient.id.clone()),
                detail: serde_json::json!({ "dissent": dissent, "reason": change.reason }),
            },
            audit::seal,
        )
        .await?;
    tracing::info!(actor = %change.actor, dissent, "dissent changed");
    Ok(())
}

/// A role code, trimmed: lowercase letters, digits, `-`, `_`.
pub(crate) fn check_role(role: &str) -> Result<&str, AdminFailure> {
    let role = role.trim();
    if role.is_empty()
        || !role
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_'))
    {
        return Err(invalid(
            "role",
            format!("{role:?} is not a role code (lowercase letters, digits, '-', '_')"),
        ));
    }
    Ok(role)
}

/// Give user `username` the role `role` (a role code: lowercase letters, digits, `-`, `_`).
/// The role is part of the user's access epoch: their devices rebuild at their next pull.
pub async fn set_user_role(
    store: &dyn Store,
    username: &str,
    role: &str,
    change: &Change,
    now: DateTime<Utc>,
) -> Result<(), AdminFailure> {
    check_reason(change)?;
    let role = check_role(role)?;
    let user = store
        .user_by_username(username)
        .await?
        .ok_or_else(|| AdminFailure::NotFound(format!("no user {username}")))?;
    if user.role == role {
        return Err(AdminFailure::Conflict(format!(
            "{username} already holds the role {role}"
        )));
    }
    store
        .write_user_role(
            &user.id,
            role,
            AuditEvent {
                at: now,
                actor: change.actor.clone(),
                action: "user_role_set".into(),
                patient_id: None,
                detail: serde_json::json!({
                    "user": username,
                    "from": user.role,
                    "to": role,
                    "reason": change.reason,
                }),
            },
            audit::seal,
        )
        .await?;
    tracing::info!(actor = %change.actor, user = %username, role, "role changed");
    Ok(())
}

fn value_set_error(e: ValueSetError) -> AdminFailure {
    match e {
        ValueSetError::Field { field, problem } => invalid(&field, problem),
        other => invalid("value_set", other.to_string()),
    }
}

/// Load an exclusion value set (FHIR R4 ValueSet JSON): checked, tried on the current sets
/// (it must add to them or repeat them; it can never take anything away), then stored.
pub async fn load_value_set(
    store: &dyn Store,
    text: &str,
    change: &Change,
    now: DateTime<Utc>,
) -> Result<ExtendReport, AdminFailure> {
    check_reason(change)?;
    let set = ValueSet::from_json(text).map_err(value_set_error)?;
    let (_, mut current) = server_exclusion_sets(store).await?;
    let report = current.extend(set.clone()).map_err(value_set_error)?;
    store
        .load_value_set(
            ValueSetLoad {
                url: set.url.clone(),
                json: text.to_string(),
                at: now,
                actor: change.actor.clone(),
                reason: change.reason.clone(),
            },
            AuditEvent {
                at: now,
                actor: change.actor.clone(),
                action: "value_set_loaded".into(),
                patient_id: None,
                detail: serde_json::json!({
                    "url": report.url,
                    "new_set": report.new_set,
                    "added_codes": report.added_codes,
                    "added_terms": report.added_terms,
                    "kept": report.kept.len(),
                    "reason": change.reason,
                }),
            },
            audit::seal,
        )
        .await?;
    tracing::info!(actor = %change.actor, url = %report.url, added_codes = report.added_codes, added_terms = report.added_terms, "value set loaded");
    Ok(report)
}

/// The server's exclusion sets: the shipped floor extended by every stored load, in order,
/// with the value-set version they are current to.
pub async fn server_exclusion_sets(
    store: &dyn AdminStore,
) -> Result<(i64, ExclusionSets), StoreError> {
    let rows = store.value_sets().await?;
    let mut sets = ExclusionSets::shipped();
    let mut version = 0;
    for row in rows {
        let set = ValueSet::from_json(&row.json)
            .map_err(|e| StoreError::Corrupt(format!("value set load {}: {e}", row.seq)))?;
        sets.extend(set)
            .map_err(|e| StoreError::Corrupt(format!("value set load {}: {e}", row.seq)))?;
        version = row.seq;
    }
    Ok((version, sets))
}

/// One node's copy of the server's exclusion sets, refreshed when the stored value-set
/// version moved (checked at every request: one small read).
#[derive(Debug, Default)]
pub struct ServerSets {
    held: RwLock<Option<(i64, Arc<ExclusionSets>)>>,
}

impl ServerSets {
    pub fn new() -> ServerSets {
        ServerSets::default()
    }

    /// The sets current to the stored value-set version, and that version (0: the shipped
    /// floor only).
    pub async fn current(
        &self,
        store: &dyn AdminStore,
    ) -> Result<(i64, Arc<ExclusionSets>), StoreError> {
        let version = store.value_set_version().await?;
        if let Some((v, sets)) = self.held.read().unwrap_or_else(|p| p.into_inner()).as_ref()
            && *v == version
        {
            return Ok((*v, Arc::clone(sets)));
        }
        if version == 0 {
            let floor = Arc::new(ExclusionSets::shipped());
            *self.held.write().unwrap_or_else(|p| p.into_inner()) = Some((0, Arc::clone(&floor)));
            return Ok((0, floor));
        }
        let (v, sets) = server_exclusion_sets(store).await?;
        let sets = Arc::new(sets);
        *self.held.write().unwrap_or_else(|p| p.into_inner()) = Some((v, Arc::clone(&sets)));
        Ok((v, sets))
    }
}

/// Agreements side by side, section by section.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    pub agreements: Vec<ComparedAgreement>,
    /// One row per section, in the order of [`Section::ALL`]; one cell per agreement.
    pub sections: Vec<ComparedSection>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ComparedAgreement {
    pub id: String,
    pub name: String,
    pub service: String,
    pub version: u32,
    pub roles: Vec<String>,
    pub practices: Vec<String>,
    pub in_force: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ComparedSection {
    pub section: Section,
    pub cells: Vec<ComparedCell>,
}

/// What one agreement does with one section.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ComparedCell {
    pub shared: bool,
    /// Days back (`None`: all of it, or not shared).
    pub lookback_days: Option<u32>,
    /// The agreement's code filters, when the section is shared.
    pub include_codes: Option<Vec<String>>,
    pub exclude_codes: Vec<String>,
}

/// Compare `agreements` (pure).
pub fn compare(agreements: &[Agreement], today: NaiveDate) -> Comparison {
    let sections = Section::ALL
        .iter()
        .map(|&section| ComparedSection {
            section,
            cells: agreements
                .iter()
                .map(|a| match a.sections.iter().find(|s| s.section == section) {
                    Some(share) => ComparedCell {
                        shared: true,
                        lookback_days: share.lookback_days,
                        include_codes: a.include_codes.clone(),
                        exclude_codes: a.exclude_codes.clone(),
                    },
                    None => ComparedCell {
                        shared: false,
                        lookback_days: None,
                        include_codes: None,
                        exclude_codes: Vec::new(),
                    },
                })
                .collect(),
        })
        .collect();
    Comparison {
        agreements: agreements
            .iter()
            .map(|a| ComparedAgreement {
                id: a.id.clone(),
                name: a.name.clone(),
                service: a.service.clone(),
                version: a.version,
                roles: a.roles.clone(),
                practices: a.practices.clone(),
                in_force: a.in_force(today),
            })
            .collect(),
        sections,
    }
}

fn cell_text(cell: &ComparedCell) -> String {
    if !cell.shared {
        return "-".into();
    }
    let mut out = match cell.lookback_days {
        None => "all".to_string(),
        Some(d) if d % 365 == 0 => format!("{}y", d / 365),
        Some(d) => format!("{d}d"),
    };
    if let Some(include) = &cell.include_codes {
        out.push_str(&format!(" only {}", include.len()));
    }
    if !cell.exclude_codes.is_empty() {
        out.push_str(&format!(" not {}", cell.exclude_codes.len()));
    }
    out
}

/// The comparison as a text table: rows are sections, columns agreements. A cell says `-`
/// (not shared), `all` or the look-back (`2y`, `90d`), and `only N` / `not N` for the
/// agreement's include and exclude code lists (N codes).
pub fn comparison_table(c: &Comparison) -> String {
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut head = vec!["section".to_string()];
    head.extend(c.agreements.iter().map(|a| {
        if a.in_force {
            format!("{} v{}", a.id, a.version)
        } else {
            format!("{} v{} (not in force)", a.id, a.version)
        }
    }));
    rows.push(head);
    for s in &c.sections {
        let mut row = vec![s.section.as_str().to_string()];
        row.extend(s.cells.iter().map(cell_text));
        rows.push(row);
    }
    let mut roles = vec!["roles".to_string()];
    roles.extend(c.agreements.iter().map(|a| a.roles.join(",")));
    rows.push(roles);
    let columns = rows[0].len();
    let widths: Vec<usize> = (0..columns)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for (n, row) in rows.iter().enumerate() {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
        if n == 0 {
            let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
            out.push_str(&rule.join("  "));
            out.push('\n');
        }
    }
    out
}

/// The agreements named by `ids` (all when empty), in the order given; unknown ids are an
/// error naming them.
pub async fn agreements_to_compare(
    store: &dyn Store,
    ids: &[String],
) -> Result<Vec<Agreement>, AdminFailure> {
    let all = store.all_agreements().await?;
    if ids.is_empty() {
        return Ok(all);
    }
    let mut out = Vec::new();
    let mut unknown = BTreeSet::new();
    for id in ids {
        match all.iter().find(|a| &a.id == id) {
            Some(a) => out.push(a.clone()),
            None => {
                unknown.insert(id.as_str());
            }
        }
    }
    if !unknown.is_empty() {
        return Err(AdminFailure::NotFound(format!(
            "no agreement {}",
            unknown.into_iter().collect::<Vec<_>>().join(", ")
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use doorstep_record::agreement::SectionShare;

    fn agreement(id: &str, sections: &[(Section, Option<u32>)]) -> Agreement {
        Agreement {
            id: id.into(),
            name: id.into(),
            service: "svc".into(),
            practices: vec!["A81001".into()],
            roles: vec!["nurse".into()],
            sections: sections
                .iter()
                .map(|&(section, lookback_days)| SectionShare {
                    section,
                    lookback_days,
                })
                .collect(),
            purpose: "care".into(),
            legal_basis: "6(1)(e)".into(),
            ..Agreement::default()
        }
    }

    #[test]
    fn compare_puts_sections_in_rows_and_agreements_in_columns() {
        let today = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
        let dn = agreement(
            "dn",
            &[(Section::Problems, None), (Section::Encounters, Some(730))],
        );
        let mut pod = agreement("podiatry", &[(Section::Problems, None)]);
        pod.include_codes = Some(vec!["44054006".into(), "396275006".into()]);
        pod.retired = Some(today);
        let c = compare(&[dn, pod], today);
        let problems = &c.sections[1];
        assert_eq!(problems.section, Section::Problems);
        assert!(problems.cells.iter().all(|cell| cell.shared));
        assert_eq!(problems.cells[1].include_codes.as_ref().unwrap().len(), 2);
        let encounters = &c.sections[4];
        assert_eq!(encounters.cells[0].lookback_days, Some(730));
        assert!(!encounters.cells[1].shared);
        assert!(!c.agreements[1].in_force);
        assert_eq!(
            comparison_table(&c),
            "\
section        dn v1  podiatry v1 (not in force)
-------------  -----  --------------------------
summary        -      -
problems       all    all only 2
medications    -      -
allergies      -      -
encounters     2y     -
observations   -      -
immunisations  -      -
procedures     -      -
documents      -      -
alerts         -      -
notes          -      -
roles          nurse  nurse
"
        );
    }
}
