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
//! # Invariants
//!
//! A list's kind never changes once created (re-creating a list only renames it), so the kind
//! read here is still the kind when the entry is inserted.

use chrono::{DateTime, Utc};
use doorstep_protocol::ListKind;

use crate::store::{ListEntryWrite, ListStore, StoreError};

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
