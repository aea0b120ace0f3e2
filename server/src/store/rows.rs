//! The rows of the federation store and its error: the one vocabulary every backend and
//! every caller of the store contract speaks.
//!
//! # What this module owns
//!
//! Plain data only: practices, patients, resources, the change feed, services, users, devices,
//! tokens, lists and their entries, audit events, and the row-level shapes of an import (what
//! an import reads, [`ImportBasis`], and what it writes, [`ImportWrites`]). Ids are strings,
//! times are `DateTime<Utc>`, dates are `NaiveDate`; no SQL type ever appears here, so a
//! PostgreSQL backend maps the same rows as the SQLite one.
//!
//! # Invariants
//!
//! - This module imports nothing of the server: it sits at the bottom, below the store
//!   contract ([`super::contract`]) and below every backend. Wire and domain types come from
//!   `doorstep-protocol` and `doorstep-record` only.
//! - Rows carry no behaviour beyond small, pure conversions (`FeedOp::as_str`,
//!   `ListEntryRow::to_wire`): deciding what to write is the business of the modules above
//!   the store.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use doorstep_protocol::ListKind;
pub use doorstep_record::writeback::DeliveryState;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A row the operation needs does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The operation would break a rule of the data (a duplicate name, a broken reference).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The rows a write was planned on changed before it was applied (another writer got
    /// there first); nothing was written. The caller plans again from fresh reads.
    #[error("stale: {0}")]
    Stale(String),
    /// The stored data is not what this server wrote (bad JSON, a broken audit chain).
    #[error("corrupt store: {0}")]
    Corrupt(String),
    /// The database URL names a backend this build does not have, or is not a database URL.
    #[error("{0}")]
    Unsupported(String),
    /// The database was migrated by a newer server: its schema version is beyond every
    /// migration this build knows, so this build refuses to touch it.
    #[error(
        "the database's schema is version {database}, newer than this server knows (up to \
         version {known}); run a doorstep-server at least as new as the one that migrated it"
    )]
    SchemaTooNew { database: i64, known: i64 },
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

/// A stored resource's identity and version, without its JSON: enough to look up a decision
/// kept for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceVersion {
    pub resource_type: String,
    pub id: String,
    /// Feed position of its last change.
    pub seq: i64,
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
    /// The member practice the user works at (a receptionist), `None` for a service's staff.
    pub practice_ods: Option<String>,
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
    /// The member practice the user works at (a receptionist).
    pub practice_ods: Option<String>,
}

/// One administrative change to a user's account (written with its audit event by
/// [`super::contract::AdminStore::write_account`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountWrite {
    /// Disable (`true`) or enable the account.
    Disabled(bool),
    /// Clear the failed sign-in count and any lock.
    Unlock,
    /// A new (sealed) TOTP secret.
    TotpSecret(String),
}

/// What counting a sign-in attempt came to
/// ([`super::contract::IdentityStore::claim_sign_in_attempt`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignInClaim {
    /// The attempt is counted and may be checked; `locked_until` is set when this attempt
    /// was the last one allowed (it locked the account; a right password unlocks it again).
    Counted { locked_until: Option<DateTime<Utc>> },
    /// The account is locked until then: nothing was counted, the attempt is refused
    /// unchecked.
    Locked(DateTime<Utc>),
}

/// The credential of a member practice's source system (its imports over HTTPS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceCredentialRow {
    /// The practice's ODS code: the client id.
    pub ods: String,
    /// SHA-256 hex of the secret.
    pub secret_hash: String,
    pub created_at: DateTime<Utc>,
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
    pub issued_at: DateTime<Utc>,
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

/// A list (caseload, appointment session, incidents, break-glass) owned by a service, and
/// within it by one user or one team, or by neither (the whole service's). Which lists reach
/// a user is `crate::lists::reaches`'s to decide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListRow {
    pub id: String,
    pub name: String,
    pub kind: ListKind,
    pub service_id: String,
    /// The user whose list it is (their session, their caseload).
    pub owner_user_id: Option<String>,
    /// The team whose list it is (a team's caseload).
    pub team: Option<String>,
}

/// A list entry to insert, exactly as given (its end already decided: `None` runs until
/// discharged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListEntryWrite {
    pub list_id: String,
    pub patient_id: String,
    pub reason: String,
    pub starts_at: DateTime<Utc>,
    pub ends_at: Option<DateTime<Utc>>,
    /// Who broke the glass (break-glass lists).
    pub user_id: Option<String>,
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
    /// The user whose list the entry is on ([`ListRow::owner_user_id`]).
    pub list_owner: Option<String>,
    /// The team whose list it is: the list's own team, else its owner's.
    pub list_team: Option<String>,
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

/// A signed checkpoint of the audit chain's head (`crate::checkpoint` signs and checks it).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AuditCheckpointRow {
    pub seq: i64,
    pub hash: String,
    pub at: DateTime<Utc>,
    /// Hex SHA-256 of the public key that signed it.
    pub key_id: String,
    /// Hex Ed25519 signature.
    pub signature: String,
}

/// A break-glass access to write in one transaction: the list entry (on the service's
/// break-glass list, naming the user), the alert for the privacy officer, and the audit event.
#[derive(Debug, Clone)]
pub struct BreakGlassWrite {
    pub entry: ListEntryWrite,
    pub reason: String,
    /// What the alert says beyond the reason (JSON).
    pub detail: serde_json::Value,
    pub audit: AuditEvent,
}

/// A break-glass alert.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertRow {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub user_id: String,
    pub patient_id: String,
    pub reason: String,
    pub detail: serde_json::Value,
    pub entry_id: i64,
    pub acked_at: Option<DateTime<Utc>>,
    pub acked_by: Option<String>,
    pub ack_note: Option<String>,
}

/// Where the audit chain ends: the last stored event's seq and hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditTip {
    pub seq: i64,
    pub hash: String,
}

// ---------- pushed notes ----------

/// What the push answered an item first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoteOutcome {
    Accepted,
    Rejected,
}

impl NoteOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            NoteOutcome::Accepted => "accepted",
            NoteOutcome::Rejected => "rejected",
        }
    }

    pub fn parse(s: &str) -> Option<NoteOutcome> {
        [NoteOutcome::Accepted, NoteOutcome::Rejected]
            .into_iter()
            .find(|o| o.as_str() == s)
    }
}

/// One pushed item, as stored once by its client-made id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteRow {
    /// The id the device made (a UUID).
    pub id: String,
    /// As sent.
    pub patient_id: String,
    pub author_user_id: String,
    pub device_id: String,
    pub service_id: String,
    pub kind: String,
    /// The note's body (JSON text) when accepted; `None` for a rejected item.
    pub body: Option<String>,
    /// The device's clock when it made the item.
    pub created_at: DateTime<Utc>,
    /// When it arrived (the `accepted_at` of an accepted note).
    pub received_at: DateTime<Utc>,
    pub outcome: NoteOutcome,
    /// Why it was rejected.
    pub reason: Option<String>,
    /// Accepted notes: where it stands with the practice (`None` for a rejected item).
    pub delivery: Option<DeliveryState>,
    pub delivery_at: Option<DateTime<Utc>>,
    /// Why the practice rejected it.
    pub delivery_reason: Option<String>,
    /// The registered practice it is addressed to.
    pub practice_ods: Option<String>,
}

/// What inserting a note found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoteInsert {
    /// The row is new.
    Inserted,
    /// A row with this id was already stored (nothing was written): the first one.
    Existing(Box<NoteRow>),
}

/// A delivery-state change to write, if the note is still in `expected`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryWrite {
    pub note_id: String,
    pub expected: DeliveryState,
    pub state: DeliveryState,
    pub at: DateTime<Utc>,
    pub reason: Option<String>,
}

// ---------- import, at the level of rows ----------

/// The keys an import plan needs the current rows of.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportKeys {
    /// Patient ids of the bundle.
    pub patients: Vec<String>,
    /// NHS numbers (ten digits) of the bundle's patients.
    pub nhs_numbers: Vec<String>,
    /// `(resource type, id)` of every resource the bundle upserts or deletes.
    pub resources: Vec<(String, String)>,
}

/// A patient's header as stored (the columns an import may change).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatientHeaderRow {
    pub id: String,
    /// Ten digits.
    pub nhs_number: String,
    pub practice_ods: String,
    pub birth_date: Option<NaiveDate>,
}

/// A resource row as stored, without its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResource {
    pub patient_id: Option<String>,
    /// The stored JSON text.
    pub json: String,
    pub deleted: bool,
}

/// The current rows behind [`ImportKeys`], read in one go. Keys without a row are absent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportBasis {
    /// Stored headers of the bundle's patients, by patient id.
    pub patients: BTreeMap<String, PatientHeaderRow>,
    /// Which patient holds each of the bundle's NHS numbers, by NHS number.
    pub nhs_owners: BTreeMap<String, String>,
    /// Stored state of each resource the bundle names, by `(type, id)`.
    pub resources: BTreeMap<(String, String), StoredResource>,
}

/// A patient header to insert or update (dissent is never touched by an import).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatientWrite {
    pub header: PatientHeaderRow,
    /// Append a [`FeedOp::Header`] feed row for this patient (the header of a patient devices
    /// may hold changed).
    pub header_changed: bool,
}

/// A resource row to insert or replace (it becomes live: `deleted = false`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceWrite {
    pub resource_type: String,
    pub id: String,
    pub patient_id: Option<String>,
    pub section: Option<String>,
    /// The JSON text to store.
    pub json: String,
    /// The resource belonged to this other patient: append a [`FeedOp::Delete`] feed row for
    /// them, so their devices drop it.
    pub moved_from: Option<String>,
}

/// A live resource to mark deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceDeletion {
    pub resource_type: String,
    pub id: String,
    /// Its patient, whose devices learn of the deletion through a feed row.
    pub patient_id: Option<String>,
}

/// The row writes of one import, decided above the store, applied by a backend in one
/// transaction in exactly this order:
///
/// 1. `organisations` (insert, or rename when the name differs), then `practices` (insert
///    when missing);
/// 2. `patients`, each followed by its header feed row when `header_changed`;
/// 3. `resources`: for each, first an upsert feed row for its patient (when it has one; the
///    resource's `seq` is that row's seq, else 0), then the delete feed row for `moved_from`,
///    then the row itself;
/// 4. `deletions`: for each, a delete feed row for its patient (when it has one; the row's
///    `seq` becomes that row's seq, else 0), then the row is marked deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportWrites {
    /// `(ODS code, name)`.
    pub organisations: Vec<(String, String)>,
    /// ODS codes of member practices.
    pub practices: Vec<String>,
    pub patients: Vec<PatientWrite>,
    pub resources: Vec<ResourceWrite>,
    pub deletions: Vec<ResourceDeletion>,
}

/// One import, ready for a backend: the writes, what they were planned on, and the audit event
/// that records them. The backend applies it in one transaction, or not at all.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedImport {
    /// The keys the plan read.
    pub keys: ImportKeys,
    /// What the plan read for them. The backend re-reads the keys inside its write transaction
    /// and answers [`StoreError::Stale`] (writing nothing) when they differ.
    pub basis: ImportBasis,
    pub writes: ImportWrites,
    /// The audit event of the import, sealed by the backend inside the import's transaction
    /// with the sealer it is handed (the chain's tip is only known there).
    pub audit: AuditEvent,
    /// When: `updated_at` of the rows, `at` of the feed rows.
    pub at: DateTime<Utc>,
}

/// How a list kind is stored by every backend.
pub fn list_kind_as_str(k: ListKind) -> &'static str {
    match k {
        ListKind::Caseload => "caseload",
        ListKind::Appointment => "appointment",
        ListKind::Incident => "incident",
        ListKind::BreakGlass => "break_glass",
    }
}

/// A stored list kind; anything else is a store this server did not write.
pub fn list_kind_from_str(s: &str) -> Result<ListKind, StoreError> {
    Ok(match s {
        "caseload" => ListKind::Caseload,
        "appointment" => ListKind::Appointment,
        "incident" => ListKind::Incident,
        "break_glass" => ListKind::BreakGlass,
        other => return Err(StoreError::Corrupt(format!("unknown list kind {other}"))),
    })
}

// ---------- administration ----------

/// A federation administrator's credential (HTTP Basic `NAME:SECRET` on the admin routes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminCredentialRow {
    pub name: String,
    /// SHA-256 hex of the secret.
    pub secret_hash: String,
    pub created_at: DateTime<Utc>,
}

/// A new version of an agreement, decided above the store: written only if the stored
/// agreement's version is still `expected_version` (`None`: no agreement with this id yet).
#[derive(Debug, Clone, PartialEq)]
pub struct AgreementWrite {
    pub agreement: doorstep_record::agreement::Agreement,
    pub expected_version: Option<u32>,
    pub at: DateTime<Utc>,
    /// Who (`admin:NAME`, `cli:USER`) and why.
    pub actor: String,
    pub reason: String,
}

/// One stored version of an agreement.
#[derive(Debug, Clone, PartialEq)]
pub struct AgreementVersionRow {
    pub agreement: doorstep_record::agreement::Agreement,
    pub changed_at: DateTime<Utc>,
    pub actor: String,
    pub reason: String,
}

/// A value set to store as loaded (its JSON as the administrator gave it, already checked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueSetLoad {
    pub url: String,
    pub json: String,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub reason: String,
}

/// A stored value-set load; `seq` counts loads (the highest is the value-set version).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueSetRow {
    pub seq: i64,
    pub url: String,
    pub json: String,
    pub loaded_at: DateTime<Utc>,
    pub actor: String,
    pub reason: String,
}

// ---------- the people around the clinician: staff sign-ins, sessions, bookings ----------

/// A staff sign-in (a receptionist, team leader or service manager, with no device): the
/// SHA-256 of its bearer token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaffTokenRow {
    pub hash: String,
    pub user_id: String,
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A session a service publishes: a clinician's time, cut into slots, with its own
/// appointment list (owned by the clinician) that bookings are entries of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClinicSessionRow {
    pub id: String,
    pub service_id: String,
    pub list_id: String,
    pub clinician_user_id: String,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub slots: u32,
    pub created_at: DateTime<Utc>,
}

/// A booking: a patient in one slot of a session, as the list entry `entry_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookingRow {
    pub id: i64,
    pub session_id: String,
    pub slot: u32,
    pub slot_starts_at: DateTime<Utc>,
    pub patient_id: String,
    pub entry_id: i64,
    pub reason: String,
    pub booked_by: String,
    pub booked_at: DateTime<Utc>,
    pub cancelled_at: Option<DateTime<Utc>>,
    pub cancelled_by: Option<String>,
    pub cancel_reason: Option<String>,
}

/// A booking to write: its slot and the list entry that puts the patient on the session's
/// list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookingWrite {
    pub session_id: String,
    pub slot: u32,
    pub slot_starts_at: DateTime<Utc>,
    pub entry: ListEntryWrite,
    pub booked_by: String,
    pub at: DateTime<Utc>,
}

/// A change of a patient's entries, written with its audit event in one transaction: first
/// `end` (every open entry of the patient on that list ends at `at`), then `add`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListChange {
    /// `(list id, patient id)`.
    pub end: Option<(String, String)>,
    pub add: Option<ListEntryWrite>,
    pub at: DateTime<Utc>,
}

/// A booking as the figures count it: with its session's service and clinician.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookingFigureRow {
    pub service_id: String,
    pub clinician_user_id: String,
    pub clinician_username: String,
    pub patient_id: String,
    pub slot_starts_at: DateTime<Utc>,
    pub entry_ends_at: Option<DateTime<Utc>>,
    pub cancelled: bool,
}

/// The rows the figures are made of, for events in `[from, to)`: record views and
/// break-glass accesses (audit rows), accepted notes written then, bookings whose slot is
/// then, and the patients they name. Aggregating them is `crate::figures`'s.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FigureRows {
    pub audit: Vec<AuditRow>,
    pub notes: Vec<NoteRow>,
    pub bookings: Vec<BookingFigureRow>,
    pub patients: Vec<PatientRow>,
}
