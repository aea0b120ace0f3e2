//! Lists: the rules of an entry on a list, above the store.
//!
//! # What this module owns
//!
//! [`add_entry`]: what a new list entry must say and when it ends, decided here once for every
//! backend; the backend only inserts the entry it is handed (with its list feed row, so the
//! patient's devices learn it at their next pull).
//!
//! # Rules
//!
//! - The list must exist; a break-glass entry names the user who broke the glass (it brings
//!   the patient to that user only).
//! - An entry without an end takes its kind's default: appointment, incident and break-glass
//!   entries end [`TIMED_ENTRY_HOURS`] after they start; caseload entries run until
//!   discharged ([`crate::store::ListStore::end_list_entry`]).
//!
//! # Whose lists reach a user ([`reaches`])
//!
//! Least data: a user receives only the lists that are theirs. A list of the user's service
//! belongs to one user (a GP's session, a nurse's own caseload), to one team (a team's
//! caseload), or to neither (a list the whole service works from). An entry reaches a user when
//! - it is on a break-glass list and names the user (they broke the glass);
//! - its list belongs to the user;
//! - its list belongs to neither a user nor a team;
//! - its list belongs to the user's team (the list's own team, or its owner's), and an
//!   agreement in force for the user says [`ListScope::Team`]. Under [`ListScope::Own`] (the
//!   default) a teammate's session or the team's caseload does not reach the user.
//!
//! The store hands over every entry of the service's lists
//! ([`crate::store::FeedSnapshot::scope_entries`]); `crate::pull::entries_reaching` keeps those
//! that reach the user. The pull's candidates, its list
//! changes for entries that ended, and the late-note rule all read through it, so the device
//! and the notes it may push agree on one list.
//!
//! # Invariants
//!
//! A list's kind never changes once created (re-creating a list only renames it and sets its
//! owner), so the kind read here is still the kind when the entry is inserted.

use chrono::{DateTime, Utc};
use doorstep_protocol::ListKind;
use doorstep_record::agreement::ListScope;

use crate::store::{ListEntryRow, ListEntryWrite, ListStore, StoreError};

/// Whether `entry` (of a list of the user's service, or a break-glass list) reaches user
/// `user_id`, in `team`, whose agreements give lists `scope` (see the module doc).
pub fn reaches(entry: &ListEntryRow, user_id: &str, team: Option<&str>, scope: ListScope) -> bool {
    if entry.kind == ListKind::BreakGlass {
        return entry.user_id.as_deref() == Some(user_id);
    }
    match (&entry.list_owner, &entry.list_team) {
        (None, None) => true,
        (Some(owner), _) if owner == user_id => true,
        (_, Some(list_team)) => scope == ListScope::Team && team == Some(list_team.as_str()),
        (Some(_), None) => false,
    }
}

/// How a break-glass entry's reason begins (the reason given follows).
pub const BREAK_GLASS_REASON_PREFIX: &str = "Break-glass: ";

/// The reason given for break-glass, when one of `entries` is a break-glass entry (without
/// [`BREAK_GLASS_REASON_PREFIX`]): what the audit names as the access's ground.
pub fn break_glass_reason(entries: &[ListEntryRow]) -> Option<String> {
    entries
        .iter()
        .find(|e| e.kind == ListKind::BreakGlass)
        .map(|e| {
            e.reason
                .strip_prefix(BREAK_GLASS_REASON_PREFIX)
                .unwrap_or(&e.reason)
                .to_string()
        })
}

/// Hours an appointment, incident or break-glass entry keeps a patient on the list.
pub const TIMED_ENTRY_HOURS: i64 = 24;

/// A list entry to add.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewListEntry {
    pub list_id: String,
    pub patient_id: String,
    pub reason: String,
    pub starts_at: DateTime<Utc>,
    /// `None` takes the default of the list's kind ([`default_ends_at`]).
    pub ends_at: Option<DateTime<Utc>>,
    /// Who broke the glass (break-glass lists only).
    pub user_id: Option<String>,
}

/// The default end of an entry of this kind starting at `starts_at`.
pub fn default_ends_at(kind: ListKind, starts_at: DateTime<Utc>) -> Option<DateTime<Utc>> {
    match kind {
        ListKind::Caseload => None,
        ListKind::Appointment | ListKind::Incident | ListKind::BreakGlass => {
            Some(starts_at + chrono::Duration::hours(TIMED_ENTRY_HOURS))
        }
    }
}

/// Add an entry to a list. Answers the entry's id.
pub async fn add_entry(
    store: &dyn ListStore,
    entry: NewListEntry,
    now: DateTime<Utc>,
) -> Result<i64, StoreError> {
    let list = store
        .list(&entry.list_id)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("list {}", entry.list_id)))?;
    if list.kind == ListKind::BreakGlass && entry.user_id.is_none() {
        return Err(StoreError::Conflict(
            "a break-glass entry names the user who broke the glass".into(),
        ));
    }
    let ends_at = entry
        .ends_at
        .or_else(|| default_ends_at(list.kind, entry.starts_at));
    store
        .insert_list_entry(
            ListEntryWrite {
                list_id: entry.list_id,
                patient_id: entry.patient_id,
                reason: entry.reason,
                starts_at: entry.starts_at,
                ends_at,
                user_id: entry.user_id,
            },
            now,
        )
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{self, DatabaseUrl, ListRow};

    #[tokio::test]
    async fn entries_take_their_kinds_end_and_break_glass_names_its_user() {
        let dir = tempfile::tempdir().unwrap();
        let store = store::open(&DatabaseUrl::in_data_dir(dir.path()))
            .await
            .unwrap();
        store
            .upsert_service(store::ServiceRow {
                id: "dn".into(),
                name: "DN".into(),
            })
            .await
            .unwrap();
        for (id, kind) in [
            ("case", ListKind::Caseload),
            ("glass", ListKind::BreakGlass),
        ] {
            store
                .create_list(ListRow {
                    id: id.into(),
                    name: id.into(),
                    kind,
                    service_id: "dn".into(),
                    owner_user_id: None,
                    team: None,
                })
                .await
                .unwrap();
        }
        let now = DateTime::from_timestamp(1_768_000_000, 0).unwrap();
        let bundle = serde_json::json!({"resourceType": "Bundle", "entry": [{"resource": {
            "resourceType": "Patient", "id": "p1",
            "identifier": [{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9990000026"}],
            "generalPractitioner": [{"identifier": {"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": "A81001"}}]
        }}]});
        crate::import::import_bundle(store.as_ref(), &bundle.to_string(), None)
            .await
            .unwrap();
        let user = store
            .create_user(
                store::NewUser {
                    username: "nurse".into(),
                    display_name: "Nurse".into(),
                    role: "nurse".into(),
                    service_id: "dn".into(),
                    password_hash: "unused".into(),
                    totp_secret: "unused".into(),
                    practice_ods: None,
                },
                now,
            )
            .await
            .unwrap();
        let entry = |list: &str, user: Option<&str>| NewListEntry {
            list_id: list.into(),
            patient_id: "p1".into(),
            reason: "visit".into(),
            starts_at: now,
            ends_at: None,
            user_id: user.map(str::to_string),
        };
        assert!(matches!(
            add_entry(store.as_ref(), entry("nowhere", None), now).await,
            Err(StoreError::NotFound(_))
        ));
        assert!(matches!(
            add_entry(store.as_ref(), entry("glass", None), now).await,
            Err(StoreError::Conflict(_))
        ));
        add_entry(store.as_ref(), entry("case", None), now)
            .await
            .unwrap();
        add_entry(store.as_ref(), entry("glass", Some(&user)), now)
            .await
            .unwrap();
        let case = store.list_entries("case").await.unwrap();
        assert_eq!(case[0].ends_at, None);
        let glass = store.list_entries("glass").await.unwrap();
        assert_eq!(
            glass[0].ends_at,
            Some(now + chrono::Duration::hours(TIMED_ENTRY_HOURS))
        );
    }
}
