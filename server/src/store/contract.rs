//! The store contract: what a backend must do, split by area, and nothing it may decide.
//!
//! # What this module owns
//!
//! The traits a backend implements, one per area of the data:
//!
//! | trait             | area                                                            |
//! |-------------------|-----------------------------------------------------------------|
//! | [`RecordStore`]   | practices, patients, resources; reading and applying an import  |
//! | [`IdentityStore`] | services and their agreements, users, sign-in state, devices, tokens |
//! | [`ListStore`]     | lists and list entries                                          |
//! | [`FeedStore`]     | the change feed: pull snapshots, member sets, pruning           |
//! | [`AuditStore`]    | the audit log: its tip, appending sealed rows, reading it back  |
//! | [`KeyStore`]      | secrets every server node shares (the cursor signing key)       |
//! | [`SourceStore`]   | the credentials member practices' source systems import with    |
//! | [`NoteStore`]     | pushed notes (stored once by client id) and their delivery state |
//! | [`AdminStore`]    | administrators, agreement versions, loaded value sets, dissent   |
//! | [`AlertStore`]    | break-glass accesses and the alerts they raise                  |
//! | [`StaffStore`]    | staff sign-ins, sessions and bookings, caseload changes, figure rows |
//!
//! [`Store`] is their union and has a blanket implementation, so a backend implements the eleven
//! area traits and is a `Store`; handlers hold an `Arc<dyn Store>`. A later area (outbox and
//! practice inbox, administration) is a new trait added to the union, not more methods on an
//! existing one.
//!
//! # Invariants
//!
//! - A backend reads and writes rows; it never decides. What an import changes is planned in
//!   [`crate::import`], what a pull sends in [`crate::pull`], how the audit chain is hashed in
//!   [`crate::audit`], what a list entry must say in [`crate::lists`], the sign-in and token
//!   rules in [`crate::auth`]; the backend is handed the rows to write (with the hashes and
//!   feed rows they need) and applies them in one transaction.
//! - Writes that were decided on reads ([`RecordStore::apply_import`],
//!   [`AuditStore::append_audit_row`], [`IdentityStore::exchange_refresh`]) carry what they were decided on; the backend
//!   re-checks it inside its write transaction and answers [`StoreError::Stale`], writing
//!   nothing, when another writer changed it in between. The callers then decide again on
//!   fresh reads. This is what makes two server nodes importing, auditing or signing in at
//!   once safe on a shared database. ([`IdentityStore::record_sign_in_success`] is the same
//!   idea with its own answer: `Conflict` when the TOTP step was already used.)
//! - A counter that a race must not split is one conditional write, not a read and a write:
//!   [`IdentityStore::claim_sign_in_attempt`] checks the lock and counts the attempt in one
//!   statement, with the rule's numbers handed in by the caller.
//! - An import's audit row is the one thing sealed *inside* the backend's transaction: the
//!   caller hands [`RecordStore::apply_import`] (and [`AuditStore::append_audit_event`]) the
//!   event and the sealing function
//!   ([`AuditSealer`], `crate::audit::seal`), and the backend calls it on the tip it reads
//!   while holding its audit serialisation. Sealing before the transaction would make every
//!   import stale whenever any other event (a pull page, a sign-in) was appended in between,
//!   and under load imports would never get through. The backend still computes no hash.
//! - Everything here speaks [`super::rows`]; no SQL type crosses the contract. This module and
//!   the rows import nothing of the server above the store.
//! - [`FeedSnapshot`] is async, so a backend on an async database client (PostgreSQL) can
//!   implement it directly over one read transaction; the embedded SQLite backend answers each
//!   read on tokio's blocking pool from a connection holding one read transaction.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use doorstep_record::agreement::Agreement;

use super::rows::{
    AccountWrite, AdminCredentialRow, AgreementVersionRow, AgreementWrite, AlertRow,
    AuditCheckpointRow, BookingRow, BookingWrite, BreakGlassWrite, ClinicSessionRow, FigureRows,
    ListChange, StaffTokenRow, ValueSetLoad, ValueSetRow,
};
use super::rows::{
    AuditEvent, AuditRow, AuditTip, DeliveryState, DeliveryWrite, DeviceRow, FeedRow, ImportBasis,
    ImportKeys, ListEntryRow, ListEntryWrite, ListRow, NewUser, NoteInsert, NoteRow, PatientRow,
    PlannedImport, PracticeRow, ResourceRow, ResourceVersion, ServiceRow, SignInClaim,
    SourceCredentialRow, StoreError, TokenPair, TokenRow, UserRow,
};

/// Seals an audit event on the chain's tip (`None`: the log is empty): `crate::audit::seal`,
/// handed to the backend so that it seals inside its own transaction.
pub type AuditSealer = fn(Option<&AuditTip>, AuditEvent) -> AuditRow;

/// Practices, patients and their resources; reading and applying imports.
#[async_trait]
pub trait RecordStore: Send + Sync {
    /// The current rows behind `keys`, read in one consistent snapshot.
    async fn import_basis(&self, keys: &ImportKeys) -> Result<ImportBasis, StoreError>;
    /// Apply a planned import in one transaction: re-read `planned.keys` inside it; when they
    /// are not `planned.basis`, write nothing and answer [`StoreError::Stale`]. Otherwise write
    /// `planned.writes` in the order [`super::rows::ImportWrites`] documents, then, with other
    /// audit appends held off until commit, read the audit tip and store
    /// `seal(tip, planned.audit)`.
    async fn apply_import(
        &self,
        planned: PlannedImport,
        seal: AuditSealer,
    ) -> Result<(), StoreError>;

    async fn organisation_name(&self, ods: &str) -> Result<Option<String>, StoreError>;
    async fn upsert_practice(&self, practice: PracticeRow) -> Result<(), StoreError>;
    async fn practices(&self) -> Result<Vec<PracticeRow>, StoreError>;
    async fn patients(&self) -> Result<Vec<PatientRow>, StoreError>;
    async fn patient(&self, id: &str) -> Result<Option<PatientRow>, StoreError>;
    /// Every stored resource of a patient, deleted ones included, sorted by type and id.
    async fn patient_resources(&self, patient_id: &str) -> Result<Vec<ResourceRow>, StoreError>;
    async fn set_dissent(&self, patient_id: &str, dissent: bool) -> Result<(), StoreError>;
}

/// Services and agreements, users and their sign-in state, devices and tokens.
#[async_trait]
pub trait IdentityStore: Send + Sync {
    async fn upsert_service(&self, service: ServiceRow) -> Result<(), StoreError>;
    async fn put_agreement(
        &self,
        agreement: &Agreement,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError>;
    async fn agreements_for_service(&self, service_id: &str) -> Result<Vec<Agreement>, StoreError>;

    async fn create_user(&self, user: NewUser, now: DateTime<Utc>) -> Result<String, StoreError>;
    async fn user_by_username(&self, username: &str) -> Result<Option<UserRow>, StoreError>;
    async fn user_by_id(&self, id: &str) -> Result<Option<UserRow>, StoreError>;
    /// Every user, by username.
    async fn users(&self) -> Result<Vec<UserRow>, StoreError>;
    /// Replace the user's stored TOTP secret by `new` if it is still `expected`; else write
    /// nothing and answer [`StoreError::Stale`] (sealing a plaintext secret at start, two
    /// nodes may try at once).
    async fn replace_totp_secret(
        &self,
        user_id: &str,
        expected: &str,
        new: &str,
    ) -> Result<(), StoreError>;
    /// Count one sign-in attempt of the user *before* its password is checked, in one
    /// conditional write, so parallel attempts get no more guesses than serial ones: unless
    /// the account is locked at `now` (then nothing is written and the lock is answered),
    /// add one to the count; the attempt that brings it to `max_failures` sets it back to 0
    /// and locks the account until `lock_until`. The numbers are the caller's rule
    /// ([`crate::auth`]); the backend only applies them atomically. `NotFound` when the user
    /// is gone.
    async fn claim_sign_in_attempt(
        &self,
        user_id: &str,
        now: DateTime<Utc>,
        max_failures: u32,
        lock_until: DateTime<Utc>,
    ) -> Result<SignInClaim, StoreError>;
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
    /// In one transaction: mark the device's refresh token `old_refresh_hash` used, revoke
    /// the device's earlier access tokens (the one it held stops working at rotation), store
    /// `pair`, and note the device was seen. When that token is no longer unused and
    /// unrevoked (exchanged or revoked since it was read), write nothing and answer
    /// [`StoreError::Stale`].
    async fn exchange_refresh(
        &self,
        device_id: &str,
        old_refresh_hash: &str,
        pair: TokenPair,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError>;
    /// Revoke every token of the device that is not revoked yet.
    async fn revoke_device_tokens(
        &self,
        device_id: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError>;
}

/// Lists and their entries.
#[async_trait]
pub trait ListStore: Send + Sync {
    async fn create_list(&self, list: ListRow) -> Result<(), StoreError>;
    async fn lists(&self) -> Result<Vec<ListRow>, StoreError>;
    /// One list, `None` when unknown.
    async fn list(&self, id: &str) -> Result<Option<ListRow>, StoreError>;
    /// Insert an entry as given (the rules of an entry are [`crate::lists`]'s), and a list
    /// feed row for its patient; the patient's devices learn it at their next pull.
    async fn insert_list_entry(
        &self,
        entry: ListEntryWrite,
        now: DateTime<Utc>,
    ) -> Result<i64, StoreError>;
    /// End every open entry of `patient_id` on `list_id` at `at` (discharge, cancellation),
    /// with a list feed row when any ended. Answers how many entries it ended.
    async fn end_list_entry(
        &self,
        list_id: &str,
        patient_id: &str,
        at: DateTime<Utc>,
    ) -> Result<usize, StoreError>;
    async fn list_entries(&self, list_id: &str) -> Result<Vec<ListEntryRow>, StoreError>;
    /// Put the user in `team` (`None`: in none), replacing any team they were in.
    async fn set_team(&self, user_id: &str, team: Option<&str>) -> Result<(), StoreError>;
    /// The user's team, `None` when in none.
    async fn team_of(&self, user_id: &str) -> Result<Option<String>, StoreError>;
}

/// Reads of one consistent snapshot of the store (one read transaction, held until the
/// snapshot is dropped).
#[async_trait]
pub trait FeedSnapshot: Send + Sync {
    /// Highest feed seq (0 when empty; never below [`FeedSnapshot::pruned_through`]).
    async fn head(&self) -> Result<i64, StoreError>;
    /// Highest feed seq deleted by pruning (0 when none).
    async fn pruned_through(&self) -> Result<i64, StoreError>;
    /// The patient ids of a stored membership set, `None` when unknown.
    async fn member_set(&self, hash: &str) -> Result<Option<Vec<String>>, StoreError>;
    /// Feed rows with `after < seq <= upto`, in seq order, at most `limit`.
    async fn feed_after(
        &self,
        after: i64,
        upto: i64,
        limit: usize,
    ) -> Result<Vec<FeedRow>, StoreError>;
    /// List entries not ended at `now` of the service's lists (other than break-glass lists)
    /// and break-glass entries of the user: every list of the service, whoever owns it (which
    /// of them reach the user is `crate::lists::reaches`'s to decide).
    async fn scope_entries(
        &self,
        service_id: &str,
        user_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<ListEntryRow>, StoreError>;
    /// Entries (chosen as in [`FeedSnapshot::scope_entries`]) whose end time is in
    /// `(after, upto]`, sorted by patient id.
    async fn entries_ended_between(
        &self,
        service_id: &str,
        user_id: &str,
        after: DateTime<Utc>,
        upto: DateTime<Utc>,
    ) -> Result<Vec<ListEntryRow>, StoreError>;
    /// The patients with these ids (unknown ids are left out).
    async fn patients(&self, ids: &[String]) -> Result<Vec<PatientRow>, StoreError>;
    async fn resource(
        &self,
        resource_type: &str,
        id: &str,
    ) -> Result<Option<ResourceRow>, StoreError>;
    /// A patient's resources that are not deleted, sorted by type and id.
    async fn live_resources(&self, patient_id: &str) -> Result<Vec<ResourceRow>, StoreError>;
    /// The same resources as [`FeedSnapshot::live_resources`], in the same order, without
    /// their JSON.
    async fn live_resource_versions(
        &self,
        patient_id: &str,
    ) -> Result<Vec<ResourceVersion>, StoreError>;
}

/// The change feed as the pull uses it.
#[async_trait]
pub trait FeedStore: Send + Sync {
    /// Open a read snapshot: every read through it sees the same committed state.
    async fn feed_snapshot(&self) -> Result<Box<dyn FeedSnapshot>, StoreError>;
    /// Store membership sets `(hash, patient ids)` (content-addressed: an existing hash only
    /// has its last use moved to `used_at`).
    async fn save_member_sets(
        &self,
        sets: Vec<(String, Vec<String>)>,
        used_at: DateTime<Utc>,
    ) -> Result<(), StoreError>;
    async fn feed_head(&self) -> Result<i64, StoreError>;
    /// Delete feed rows older than `before`, and membership sets last used before then, and
    /// remember the highest seq pruned (cursors from before then expire). Answers that seq.
    async fn prune_feed(&self, before: DateTime<Utc>) -> Result<i64, StoreError>;
}

/// The append-only audit log. Hashes are made by [`crate::audit`]; the backend stores them.
#[async_trait]
pub trait AuditStore: Send + Sync {
    /// The last stored event's seq and hash, `None` when the log is empty.
    async fn audit_tip(&self) -> Result<Option<AuditTip>, StoreError>;
    /// Append one sealed row. In one transaction: when the stored tip is not the one `row`
    /// follows (`row.seq - 1` and `row.prev_hash`, or an empty log for seq 1), write nothing
    /// and answer [`StoreError::Stale`].
    async fn append_audit_row(&self, row: AuditRow) -> Result<(), StoreError>;
    /// Append `event` in one transaction, with other audit appends held off until commit:
    /// read the tip, store `seal(tip, event)` and answer it. Never stale: the tip cannot move
    /// between the read and the write.
    async fn append_audit_event(
        &self,
        event: AuditEvent,
        seal: AuditSealer,
    ) -> Result<AuditRow, StoreError>;
    /// Every stored row, in seq order.
    async fn audit_rows(&self) -> Result<Vec<AuditRow>, StoreError>;
    /// Append `events` in order in one transaction, as [`AuditStore::append_audit_event`]
    /// does one (a pull page's one event a patient).
    async fn append_audit_events(
        &self,
        events: Vec<AuditEvent>,
        seal: AuditSealer,
    ) -> Result<(), StoreError>;
    /// The events naming `patient_id`, at or after `from` when given, in seq order (indexed).
    async fn audit_rows_for_patient(
        &self,
        patient_id: &str,
        from: Option<DateTime<Utc>>,
    ) -> Result<Vec<AuditRow>, StoreError>;
    /// Store a signed checkpoint (append-only; one a seq: a second for the same seq is
    /// ignored).
    async fn put_audit_checkpoint(&self, row: AuditCheckpointRow) -> Result<(), StoreError>;
    /// The checkpoint with the highest seq, `None` when none was written.
    async fn latest_audit_checkpoint(&self) -> Result<Option<AuditCheckpointRow>, StoreError>;
    /// A view made on a device, pushed as outbox item `id`: in one transaction, when no item
    /// of that id was stored, store it and append `seal(tip, event)` and answer `None`;
    /// else write nothing and answer when the first arrived.
    async fn append_device_view(
        &self,
        id: &str,
        device_id: &str,
        event: AuditEvent,
        seal: AuditSealer,
    ) -> Result<Option<DateTime<Utc>>, StoreError>;
}

/// Break-glass accesses and the alerts they raise for the privacy officer. What may be
/// written is decided in `crate::breakglass`.
#[async_trait]
pub trait AlertStore: Send + Sync {
    /// In one transaction: insert `write.entry` (with its list feed row), the alert, and
    /// `seal(tip, write.audit)`. Answers the entry's and the alert's ids.
    async fn insert_break_glass(
        &self,
        write: BreakGlassWrite,
        seal: AuditSealer,
        now: DateTime<Utc>,
    ) -> Result<(i64, i64), StoreError>;
    /// Alerts, newest first; only those not yet acknowledged when `open_only`.
    async fn alerts(&self, open_only: bool) -> Result<Vec<AlertRow>, StoreError>;
    async fn alert(&self, id: i64) -> Result<Option<AlertRow>, StoreError>;
    /// Acknowledge alert `id` if it is still open, with `audit` sealed in the same
    /// transaction. Answers false (writing nothing) when it is unknown or already acknowledged.
    async fn ack_alert(
        &self,
        id: i64,
        by: &str,
        note: &str,
        at: DateTime<Utc>,
        audit: AuditEvent,
        seal: AuditSealer,
    ) -> Result<bool, StoreError>;
}

/// Secrets every server node of the federation must share, kept in the database so that no
/// node's own directory holds state another node needs (a cursor signed by one node is
/// accepted by every other). What a key is made of is decided above the store
/// ([`crate::cursor`] and `run`); the backend only keeps the first one given.
#[async_trait]
pub trait KeyStore: Send + Sync {
    /// Store `candidate` under `name` unless a key is stored there already (insert if absent,
    /// atomic against a concurrent first start), and answer the stored key: `candidate` when
    /// this call stored it, else the one another call stored first.
    async fn key_or_insert(
        &self,
        name: &str,
        candidate: &[u8],
        now: DateTime<Utc>,
    ) -> Result<Vec<u8>, StoreError>;
}

/// The credentials of member practices' source systems (imports over HTTPS). How a secret is
/// made and checked is [`crate::auth`]'s; the backend keeps its hash.
#[async_trait]
pub trait SourceStore: Send + Sync {
    /// Store the credential of `row.ods` (a member practice), replacing any earlier one.
    /// Fails with `NotFound` when the practice is not a member.
    async fn put_source_credential(&self, row: SourceCredentialRow) -> Result<(), StoreError>;
    async fn source_credential(&self, ods: &str)
    -> Result<Option<SourceCredentialRow>, StoreError>;
}

/// Pushed notes and their delivery to the registered practice. What is accepted, rejected or
/// acknowledged is decided in [`crate::notes`]; the backend stores rows.
#[async_trait]
pub trait NoteStore: Send + Sync {
    /// Insert `row` unless a note with its id is stored (`ON CONFLICT DO NOTHING`); then write
    /// nothing and answer the stored row.
    async fn insert_note(&self, row: NoteRow) -> Result<NoteInsert, StoreError>;
    async fn note(&self, id: &str) -> Result<Option<NoteRow>, StoreError>;
    /// Accepted notes addressed to practice `ods` whose delivery state is one of `states`,
    /// oldest first (by arrival, then id).
    async fn notes_for_practice(
        &self,
        ods: &str,
        states: &[DeliveryState],
    ) -> Result<Vec<NoteRow>, StoreError>;
    /// In one transaction, each note's delivery state, time and reason, if every note is still
    /// in its `expected` state; else write nothing and answer [`StoreError::Stale`].
    async fn set_note_deliveries(&self, writes: Vec<DeliveryWrite>) -> Result<(), StoreError>;
}

/// The federation's administration: administrators' credentials, the versions of agreements,
/// loaded exclusion value sets, and dissent set by an administrator or a practice. What may
/// change is decided in `crate::admin`; each change is written with its audit event, sealed
/// inside the same transaction (as an import's), so a change is never stored unaudited.
#[async_trait]
pub trait AdminStore: Send + Sync {
    /// Store an administrator's credential, replacing any earlier one of that name.
    async fn put_admin_credential(&self, row: AdminCredentialRow) -> Result<(), StoreError>;
    async fn admin_credential(&self, name: &str) -> Result<Option<AdminCredentialRow>, StoreError>;
    async fn services(&self) -> Result<Vec<ServiceRow>, StoreError>;
    /// The current version of every agreement, by id.
    async fn all_agreements(&self) -> Result<Vec<Agreement>, StoreError>;
    async fn agreement(&self, id: &str) -> Result<Option<Agreement>, StoreError>;
    /// In one transaction: when the stored agreement `write.agreement.id` has the version
    /// `write.expected_version` (`None`: there is none), make `write.agreement` the current
    /// version, keep it in the versions, and append `seal(tip, audit)`; else write nothing and
    /// answer [`StoreError::Stale`].
    async fn write_agreement(
        &self,
        write: AgreementWrite,
        audit: AuditEvent,
        seal: AuditSealer,
    ) -> Result<AuditRow, StoreError>;
    /// Every stored version of an agreement, oldest first.
    async fn agreement_versions(&self, id: &str) -> Result<Vec<AgreementVersionRow>, StoreError>;
    /// In one transaction: store the load and append `seal(tip, audit)`. Answers the load's seq.
    async fn load_value_set(
        &self,
        load: ValueSetLoad,
        audit: AuditEvent,
        seal: AuditSealer,
    ) -> Result<i64, StoreError>;
    /// Every load, in seq order.
    async fn value_sets(&self) -> Result<Vec<ValueSetRow>, StoreError>;
    /// The highest load seq (0 when none): one cheap read a request makes.
    async fn value_set_version(&self) -> Result<i64, StoreError>;
    async fn patient_by_nhs_number(
        &self,
        nhs_number: &str,
    ) -> Result<Option<PatientRow>, StoreError>;
    /// The patients born on `date` (indexed), by id.
    async fn patients_born_on(
        &self,
        date: chrono::NaiveDate,
    ) -> Result<Vec<PatientRow>, StoreError>;
    /// In one transaction: set the user's role and append `seal(tip, audit)`. Fails with
    /// `NotFound` when there is no such user.
    async fn write_user_role(
        &self,
        user_id: &str,
        role: &str,
        audit: AuditEvent,
        seal: AuditSealer,
    ) -> Result<AuditRow, StoreError>;
    /// In one transaction: set the patient's dissent and append `seal(tip, audit)`. Fails with
    /// `NotFound` when there is no such patient.
    async fn write_dissent(
        &self,
        patient_id: &str,
        dissent: bool,
        audit: AuditEvent,
        seal: AuditSealer,
    ) -> Result<AuditRow, StoreError>;
    /// Every device, oldest first.
    async fn devices(&self) -> Result<Vec<DeviceRow>, StoreError>;
    /// In one transaction: revoke the device and its tokens, and append `seal(tip, audit)`.
    /// `NotFound` when there is no such device not revoked yet.
    async fn write_device_revoked(
        &self,
        device_id: &str,
        now: DateTime<Utc>,
        audit: AuditEvent,
        seal: AuditSealer,
    ) -> Result<AuditRow, StoreError>;
    /// In one transaction: apply `write` to the user's row and append `seal(tip, audit)`.
    /// `NotFound` when the user is gone.
    async fn write_account(
        &self,
        user_id: &str,
        write: AccountWrite,
        audit: AuditEvent,
        seal: AuditSealer,
    ) -> Result<AuditRow, StoreError>;
    /// In one transaction: insert the user and append `seal(tip, audit)`. Answers the new
    /// user's id; `Conflict` when the username is taken.
    async fn write_new_user(
        &self,
        user: NewUser,
        now: DateTime<Utc>,
        audit: AuditEvent,
        seal: AuditSealer,
    ) -> Result<String, StoreError>;
}

/// What the people around the clinician write and read: staff sign-ins (no device), the
/// sessions a service publishes and the bookings into them, caseload changes, and the rows
/// the figures are made of. What may be written is decided in `crate::bookings`,
/// `crate::caseloads` and `crate::figures`; each change is written with its audit event,
/// sealed in the same transaction.
#[async_trait]
pub trait StaffStore: Send + Sync {
    async fn put_staff_token(&self, row: StaffTokenRow) -> Result<(), StoreError>;
    async fn staff_token(&self, hash: &str) -> Result<Option<StaffTokenRow>, StoreError>;
    /// In one transaction: mark the staff token `hash` revoked at `now` and append
    /// `seal(tip, audit)`. `NotFound`, writing nothing, when no such token is live.
    async fn write_staff_token_revoked(
        &self,
        hash: &str,
        now: DateTime<Utc>,
        audit: AuditEvent,
        seal: AuditSealer,
    ) -> Result<AuditRow, StoreError>;
    /// In one transaction: create `list` (the session's own list), store `session`, and
    /// append `seal(tip, audit)`. `Conflict` when a session with its id exists.
    async fn write_clinic_session(
        &self,
        session: ClinicSessionRow,
        list: ListRow,
        audit: AuditEvent,
        seal: AuditSealer,
    ) -> Result<(), StoreError>;
    async fn clinic_session(&self, id: &str) -> Result<Option<ClinicSessionRow>, StoreError>;
    /// Sessions that end after `from` and start before `to`, by start then id.
    async fn clinic_sessions(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<ClinicSessionRow>, StoreError>;
    /// Every booking of the session, cancelled ones included, by slot then id.
    async fn session_bookings(&self, session_id: &str) -> Result<Vec<BookingRow>, StoreError>;
    async fn booking(&self, id: i64) -> Result<Option<BookingRow>, StoreError>;
    /// In one transaction: insert `write.entry` (with its list feed row), the booking, and
    /// `seal(tip, audit)` (its detail gains `booking_id`). `Conflict` when the slot already
    /// holds a booking that is not cancelled (nothing written). Answers the booking.
    async fn write_booking(
        &self,
        write: BookingWrite,
        audit: AuditEvent,
        seal: AuditSealer,
    ) -> Result<BookingRow, StoreError>;
    /// In one transaction: mark booking `id` cancelled (by, why, at), end its list entry at
    /// `at` (with a list feed row), and append `seal(tip, audit)`. `NotFound` when there is no
    /// such booking not yet cancelled (nothing written).
    async fn write_booking_cancelled(
        &self,
        id: i64,
        by: &str,
        reason: &str,
        at: DateTime<Utc>,
        audit: AuditEvent,
        seal: AuditSealer,
    ) -> Result<(), StoreError>;
    /// In one transaction: apply `change` (end, then add; each with its list feed row) and
    /// append `seal(tip, audit)`. `NotFound` when `change.end` ends no entry (nothing
    /// written). Answers the new entry's id when one was added.
    async fn write_list_change(
        &self,
        change: ListChange,
        audit: AuditEvent,
        seal: AuditSealer,
    ) -> Result<Option<i64>, StoreError>;
    /// The rows of the figures for `[from, to)` (see [`FigureRows`]): audit rows whose action
    /// is one of `actions`, accepted notes made then, bookings whose slot starts then, and
    /// the patients they name.
    async fn figure_rows(
        &self,
        actions: &[&str],
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<FigureRows, StoreError>;
}

/// The federation store: every area. Implemented for anything that implements them all.
pub trait Store:
    RecordStore
    + IdentityStore
    + ListStore
    + FeedStore
    + AuditStore
    + KeyStore
    + SourceStore
    + NoteStore
    + AdminStore
    + AlertStore
    + StaffStore
{
}

impl<T> Store for T where
    T: RecordStore
        + IdentityStore
        + ListStore
        + FeedStore
        + AuditStore
        + KeyStore
        + SourceStore
        + NoteStore
        + AdminStore
        + AlertStore
        + StaffStore
        + ?Sized
{
}
