//! The federation store: an async trait over the database, and the rows it speaks in.
//!
//! Everything the server keeps goes through [`Store`]; handlers hold an `Arc<dyn Store>`.
//! The trait speaks in plain domain rows (ids as strings, times as `DateTime<Utc>`), never in
//! SQL types, so a PostgreSQL store can implement it later. The embedded default is
//! [`sqlite::SqliteStore`].
//!
//! The pull algorithm itself lives in [`crate::pull`] and reads through the synchronous
//! [`crate::pull::FeedSnapshot`] trait inside one read transaction of the store; the store's
//! [`Store::pull`] only opens that transaction and saves the membership sets the page needs.

pub mod sqlite;

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use doorstep_protocol::ListKind;
use doorstep_record::agreement::Agreement;
use doorstep_record::fhir::{
    ImportError, ResourceType, parse_bundle, stamp_source, validate_for_import,
};

use crate::cursor::CursorState;
use crate::pull::PullOutcome;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The import was refused; nothing of it was stored.
    #[error("import rejected: {0}")]
    Rejected(ImportError),
    /// A row the operation needs does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The operation would break a rule of the data (a duplicate name, a broken reference).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The stored data is not what this server wrote (bad JSON, a broken audit chain).
    #[error("corrupt store: {0}")]
    Corrupt(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// The database itself failed.
    #[error("database: {0}")]
    Backend(String),
}

/// A member GP practice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PracticeRow {
    pub ods: String,
    pub name: String,
    pub source_system: Option<String>,
    pub postcode: Option<String>,
}

/// A patient as the server indexes them (the record itself is in [`ResourceRow`]s).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatientRow {
    pub id: String,
    /// Ten digits.
    pub nhs_number: String,
    pub practice_ods: String,
    pub practice_name: String,
    pub birth_date: Option<NaiveDate>,
    pub dissent: bool,
}

/// One stored FHIR resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceRow {
    pub resource_type: String,
    pub id: String,
    pub patient_id: Option<String>,
    pub section: Option<String>,
    /// The resource as imported (stamped with its source organisation), JSON text.
    pub json: String,
    /// Feed position of its last change.
    pub seq: i64,
    pub deleted: bool,
}

/// What a change-feed row says changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FeedOp {
    Upsert,
    Delete,
    /// The patient's list entries changed.
    List,
    /// The patient's header (NHS number, practice, birth date) changed.
    Header,
}

impl FeedOp {
    pub fn as_str(self) -> &'static str {
        match self {
            FeedOp::Upsert => "upsert",
            FeedOp::Delete => "delete",
            FeedOp::List => "list",
            FeedOp::Header => "header",
        }
    }

    pub fn parse(s: &str) -> Option<FeedOp> {
        [FeedOp::Upsert, FeedOp::Delete, FeedOp::List, FeedOp::Header]
            .into_iter()
            .find(|op| op.as_str() == s)
    }
}

/// One row of the change feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedRow {
    pub seq: i64,
    pub patient_id: String,
    /// `(resource type, id)` for upserts and deletes.
    pub resource: Option<(String, String)>,
    pub op: FeedOp,
}

/// A receiving service (district nursing, extended hours hub, ambulance).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRow {
    pub id: String,
    pub name: String,
}

/// A user to create. The password arrives already hashed (Argon2id PHC string).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewUser {
    pub username: String,
    pub display_name: String,
    pub role: String,
    pub service_id: String,
    pub password_hash: String,
    /// Base32.
    pub totp_secret: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRow {
    pub id: String,
    pub username: String,
    pub display_name: String,
    pub role: String,
    pub service_id: String,
    pub service_name: String,
    pub password_hash: String,
    pub totp_secret: String,
    pub totp_last_step: i64,
    pub failed_attempts: u32,
    pub locked_until: Option<DateTime<Utc>>,
    pub disabled: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRow {
    pub id: String,
    pub user_id: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    Access,
    Refresh,
}

impl TokenKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::Access => "access",
            TokenKind::Refresh => "refresh",
        }
    }
}

/// A stored token (by hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    pub hash: String,
    pub device_id: String,
    pub kind: TokenKind,
    pub expires_at: DateTime<Utc>,
    pub used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A pair of tokens to store for a device; hashes only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenPair {
    pub access_hash: String,
    pub access_expires_at: DateTime<Utc>,
    pub refresh_hash: String,
    pub refresh_expires_at: DateTime<Utc>,
}

/// What a refresh-token exchange found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RotateOutcome {
    /// The old refresh token was valid; the new pair is stored.
    Rotated,
    /// No such refresh token for this device.
    Unknown,
    /// The refresh token had already been used: all the device's tokens are now revoked.
    Reused,
    Expired,
    DeviceRevoked,
}

/// A list (caseload, appointment session, incidents, break-glass) owned by a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListRow {
    pub id: String,
    pub name: String,
    pub kind: ListKind,
    pub service_id: String,
}

/// A list entry to add.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewListEntry {
    pub list_id: String,
    pub patient_id: String,
    pub reason: String,
    pub starts_at: DateTime<Utc>,
    /// `None` takes the default of the list's kind: appointment, incident and break-glass
    /// entries end 24 hours after they start; caseload entries run until discharged.
    pub ends_at: Option<DateTime<Utc>>,
    /// Who broke the glass (break-glass lists only).
    pub user_id: Option<String>,
}

/// Hours an appointment, incident or break-glass entry keeps a patient on the list.
pub const TIMED_ENTRY_HOURS: i64 = 24;

/// The default end of an entry of this kind starting at `starts_at`.
pub fn default_ends_at(kind: ListKind, starts_at: DateTime<Utc>) -> Option<DateTime<Utc>> {
    match kind {
        ListKind::Caseload => None,
        ListKind::Appointment | ListKind::Incident | ListKind::BreakGlass => {
            Some(starts_at + chrono::Duration::hours(TIMED_ENTRY_HOURS))
        }
    }
}

/// A stored list entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListEntryRow {
    pub id: i64,
    pub list_id: String,
    pub list_name: String,
    pub kind: ListKind,
    pub patient_id: String,
    pub reason: String,
    pub starts_at: DateTime<Utc>,
    pub ends_at: Option<DateTime<Utc>>,
    pub user_id: Option<String>,
}

impl ListEntryRow {
    /// Active at `now`: not yet ended (future appointments already count).
    pub fn is_active(&self, now: DateTime<Utc>) -> bool {
        self.ends_at.is_none_or(|end| end > now)
    }

    pub fn to_wire(&self) -> doorstep_protocol::ListEntry {
        doorstep_protocol::ListEntry {
            kind: self.kind,
            list_name: self.list_name.clone(),
            reason: self.reason.clone(),
            starts_at: self.starts_at,
            ends_at: self.ends_at,
        }
    }
}

/// Whose access a pull is computed for.
#[derive(Debug, Clone, PartialEq)]
pub struct UserScope {
    pub user_id: String,
    pub role: String,
    pub service_id: String,
    /// The agreements of the user's service that name the user's role.
    pub agreements: Vec<Agreement>,
}

/// A pull request as the store sees it: the cursor is already verified (signature, device).
#[derive(Debug, Clone)]
pub struct PullRequest {
    pub device_id: String,
    pub scope: UserScope,
    pub cursor: Option<CursorState>,
    pub now: DateTime<Utc>,
    pub page_bytes: usize,
}

/// One audit event to append.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEvent {
    pub at: DateTime<Utc>,
    /// `user:<username>`, `device:<id>`, `cli`, `system`.
    pub actor: String,
    /// `sign_in`, `sign_in_failed`, `refresh`, `pull`, `import`, `seed`.
    pub action: String,
    pub patient_id: Option<String>,
    pub detail: serde_json::Value,
}

/// A stored audit event with its chain hashes.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRow {
    pub seq: i64,
    pub event: AuditEvent,
    pub prev_hash: String,
    pub hash: String,
}

/// A validated import, ready for one transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportBatch {
    pub patients: Vec<doorstep_record::fhir::PatientHeaderInfo>,
    pub resources: Vec<doorstep_record::fhir::Resource>,
    /// `(resource type, id)` to delete.
    pub deletions: Vec<(String, String)>,
}

/// What an import changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    pub patients: usize,
    pub upserted: usize,
    pub unchanged: usize,
    pub deleted: usize,
    pub feed_rows: usize,
}

/// Parse and validate a FHIR R4 Bundle for import. `sender` (an ODS code) is the organisation
/// that sent the bundle: resources the bundle does not attribute to a source itself are
/// attributed to it instead of to the patient's registered practice.
pub fn prepare_import(
    text: &str,
    sender: Option<(&str, &str)>,
) -> Result<ImportBatch, ImportError> {
    let bundle = parse_bundle(text)?;
    // Which resources carried their own source before validation stamped the practice.
    let self_stamped: std::collections::HashSet<(ResourceType, String)> = bundle
        .resources
        .iter()
        .filter(|r| r.source_ods().is_some())
        .map(|r| (r.resource_type.clone(), r.id.clone()))
        .collect();
    for (rtype, id) in &bundle.deletions {
        if *rtype == ResourceType::Patient {
            return Err(ImportError {
                entry: None,
                resource: Some(format!("Patient/{id}")),
                element: "request.method".into(),
                message: "deleting a Patient is not supported; end their list entries instead"
                    .into(),
            });
        }
    }
    let plan = validate_for_import(&bundle)?;
    let mut resources = plan.resources;
    if let Some((ods, name)) = sender {
        for r in &mut resources {
            let clinical = !matches!(
                r.resource_type,
                ResourceType::Patient | ResourceType::Organization | ResourceType::Practitioner
            );
            if clinical && !self_stamped.contains(&(r.resource_type.clone(), r.id.clone())) {
                stamp_source(r, ods, name);
            }
        }
    }
    Ok(ImportBatch {
        patients: plan.patients,
        resources,
        deletions: bundle
            .deletions
            .iter()
            .map(|(t, id)| (t.as_str().to_string(), id.clone()))
            .collect(),
    })
}

/// The federation store.
#[async_trait]
pub trait Store: Send + Sync {
    // ----- import and record -----

    /// Apply a validated import in one transaction: upsert resources (identical content is
    /// left alone and makes no feed row), delete, and append the feed rows.
    async fn apply_import(
        &self,
        batch: ImportBatch,
        now: DateTime<Utc>,
    ) -> Result<ImportReport, StoreError>;

    /// Parse, validate and import a FHIR R4 Bundle, whole or not at all. `sender` is the ODS
    /// code of the organisation that sent it (see [`prepare_import`]); it must be known.
    async fn import_bundle(
        &self,
        text: &str,
        sender: Option<&str>,
    ) -> Result<ImportReport, StoreError> {
        let sender = match sender {
            Some(ods) => {
                let name = self
                    .organisation_name(ods)
                    .await?
                    .ok_or_else(|| StoreError::NotFound(format!("organisation {ods}")))?;
                Some((ods.to_string(), name))
            }
            None => None,
        };
        let batch = prepare_import(text, sender.as_ref().map(|(o, n)| (o.as_str(), n.as_str())))
            .map_err(StoreError::Rejected)?;
        self.apply_import(batch, Utc::now()).await
    }

    async fn organisation_name(&self, ods: &str) -> Result<Option<String>, StoreError>;
    async fn upsert_practice(&self, practice: PracticeRow) -> Result<(), StoreError>;
    async fn practices(&self) -> Result<Vec<PracticeRow>, StoreError>;
    async fn patients(&self) -> Result<Vec<PatientRow>, StoreError>;
    async fn patient(&self, id: &str) -> Result<Option<PatientRow>, StoreError>;
    /// Every stored resource of a patient, deleted ones included, sorted by type and id.
    async fn patient_resources(&self, patient_id: &str) -> Result<Vec<ResourceRow>, StoreError>;
    async fn set_dissent(&self, patient_id: &str, dissent: bool) -> Result<(), StoreError>;

    // ----- services, agreements -----

    async fn upsert_service(&self, service: ServiceRow) -> Result<(), StoreError>;
    async fn put_agreement(
        &self,
        agreement: &Agreement,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError>;
    async fn agreements_for_service(&self, service_id: &str) -> Result<Vec<Agreement>, StoreError>;

    // ----- users, devices, tokens -----

    async fn create_user(&self, user: NewUser, now: DateTime<Utc>) -> Result<String, StoreError>;
    async fn user_by_username(&self, username: &str) -> Result<Option<UserRow>, StoreError>;
    async fn user_by_id(&self, id: &str) -> Result<Option<UserRow>, StoreError>;
    /// Count a failed sign-in; at `max_failures` the account locks until `now + lock_for`
    /// and the count starts again. Answers the lock time when this failure locked it.
    async fn record_sign_in_failure(
        &self,
        user_id: &str,
        now: DateTime<Utc>,
        max_failures: u32,
        lock_for: chrono::Duration,
    ) -> Result<Option<DateTime<Utc>>, StoreError>;
    /// Reset the failure count and remember the TOTP step used. Fails with `Conflict` when
    /// that step (or a later one) was already used: a TOTP code is accepted once.
    async fn record_sign_in_success(&self, user_id: &str, totp_step: i64)
    -> Result<(), StoreError>;
    async fn create_device(
        &self,
        user_id: &str,
        name: &str,
        now: DateTime<Utc>,
    ) -> Result<String, StoreError>;
    async fn device(&self, id: &str) -> Result<Option<DeviceRow>, StoreError>;
    async fn revoke_device(&self, id: &str, now: DateTime<Utc>) -> Result<(), StoreError>;
    async fn store_tokens(
        &self,
        device_id: &str,
        pair: TokenPair,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError>;
    async fn token(&self, hash: &str) -> Result<Option<TokenRow>, StoreError>;
    /// Exchange a refresh token for a new pair, atomically.
    async fn rotate_refresh(
        &self,
        device_id: &str,
        old_refresh_hash: &str,
        pair: TokenPair,
        now: DateTime<Utc>,
    ) -> Result<RotateOutcome, StoreError>;

    // ----- lists -----

    async fn create_list(&self, list: ListRow) -> Result<(), StoreError>;
    async fn lists(&self) -> Result<Vec<ListRow>, StoreError>;
    /// Add an entry; the patient's devices learn it at their next pull.
    async fn add_list_entry(
        &self,
        entry: NewListEntry,
        now: DateTime<Utc>,
    ) -> Result<i64, StoreError>;
    /// End every open entry of `patient_id` on `list_id` at `at` (discharge, cancellation).
    /// Answers how many entries it ended.
    async fn end_list_entry(
        &self,
        list_id: &str,
        patient_id: &str,
        at: DateTime<Utc>,
    ) -> Result<usize, StoreError>;
    async fn list_entries(&self, list_id: &str) -> Result<Vec<ListEntryRow>, StoreError>;

    // ----- feed and pull -----

    /// Build one pull page (see [`crate::pull`]) in one read transaction.
    async fn pull(&self, request: PullRequest) -> Result<PullOutcome, StoreError>;
    async fn feed_head(&self) -> Result<i64, StoreError>;
    /// Delete feed rows older than `before`, and membership sets no cursor issued since then
    /// names; cursors from before then expire. Answers the highest seq now pruned.
    async fn prune_feed(&self, before: DateTime<Utc>) -> Result<i64, StoreError>;

    // ----- audit -----

    async fn append_audit(&self, event: AuditEvent) -> Result<(), StoreError>;
    async fn audit_events(&self) -> Result<Vec<AuditRow>, StoreError>;
}

/// Open the embedded store in `data_dir` (creating `federation.db` and applying migrations).
pub fn open(data_dir: &Path) -> Result<Arc<dyn Store>, StoreError> {
    Ok(Arc::new(sqlite::SqliteStore::open(data_dir)?))
}

/// The user's scope: role, service, and the service's agreements naming the role.
pub async fn user_scope(store: &dyn Store, user: &UserRow) -> Result<UserScope, StoreError> {
    let mut agreements: Vec<Agreement> = store
        .agreements_for_service(&user.service_id)
        .await?
        .into_iter()
        .filter(|a| a.roles.iter().any(|r| r == &user.role))
        .collect();
    agreements.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(UserScope {
        user_id: user.id.clone(),
        role: user.role.clone(),
        service_id: user.service_id.clone(),
        agreements,
    })
}
