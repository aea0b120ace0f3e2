//! Wire types of the Doorstep federation API, version 1.
//!
//! Both the device (`doorstep-client`) and the federation server depend on this crate and on
//! nothing else of ours for what crosses the network. Every type here is plain data with serde
//! derives; the JSON shapes are the contract and are described in the server's OpenAPI document
//! (`GET /api/v1/openapi.json`).
//!
//! # Endpoints (all under `/api/v1`, HTTPS)
//!
//! | method | path              | body                | answer                        |
//! |--------|-------------------|---------------------|-------------------------------|
//! | GET    | `/healthz` (root) | -                   | `200 ok`                      |
//! | POST   | `/auth/enrol`     | [`EnrolRequest`]    | [`EnrolResponse`]             |
//! | POST   | `/auth/refresh`   | [`RefreshRequest`]  | [`TokenResponse`]             |
//! | GET    | `/sync/pull`      | `?cursor=` (opt.)   | [`PullPage`] (gzip) or 410 [`ResyncRequired`] |
//! | POST   | `/sync/push`      | [`PushRequest`]     | [`PushResponse`]              |
//! | POST   | `/import`         | FHIR Bundle (practice credential) | [`ImportSummary`] or 422 [`ImportProblem`] |
//! | GET    | `/practice/inbox` | - (practice credential) | FHIR Bundle of new notes  |
//! | POST   | `/practice/inbox/ack` | [`AckRequest`] (practice credential) | [`AckResponse`] |
//!
//! # The push contract
//!
//! The device keeps what it writes (notes; later record-view audit events) in an outbox apart
//! from its cache, each item with an id it made itself (a UUID). It sends them oldest first,
//! at most [`PUSH_MAX_ITEMS`] a request, and may send an item any number of times: the server
//! stores each id once and answers every item on its own ([`PushOutcome`]), so a lost answer
//! is repaired by sending again, and a rejected item never holds back the others. An item the
//! device sent before comes back [`PushOutcome::Duplicate`] with the first answer.
//!
//! Errors other than 410 carry an [`ApiError`] body.
//!
//! # The pull contract
//!
//! The device holds an opaque cursor signed by the server (none before its first pull). It asks
//! for the changes after that cursor and receives one [`PullPage`]: a bounded list of
//! [`Change`]s and the cursor to store *in the same local transaction* as the changes. It asks
//! again while [`PullPage::more`] is true. Applying a page twice is harmless (every change is an
//! idempotent upsert, delete or purge), so a sync cut at any byte resumes from the last stored
//! cursor without loss or duplication.
//!
//! After a completed sync (the last page had `more == false`) the device cache holds exactly the
//! server's filtered view for that user: the patients on the user's list, each with the
//! resources the sharing agreements let the user's role see, and per-section withheld counts.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

/// Path prefix of every API route.
pub const API_PREFIX: &str = "/api/v1";

/// Sent by the device as `User-Agent` suffix and checked by nothing yet; kept for support.
pub const PROTOCOL_VERSION: u32 = 1;

/// HTTP header carrying the device's access token: `Authorization: Bearer <token>`.
pub const AUTHORIZATION: &str = "authorization";

/// Sign in with password and TOTP and register this device.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrolRequest {
    pub username: String,
    pub password: String,
    /// The six-digit code from the user's authenticator.
    pub totp: String,
    /// A label for the device, shown to administrators ("Laptop of J. Smith").
    pub device_name: String,
}

/// Sign in again with password and TOTP on a device already enrolled (after too many wrong
/// PINs on the device): the device keeps its id, cache and outbox and gets a new token pair.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReauthRequest {
    pub device_id: String,
    pub username: String,
    pub password: String,
    /// The six-digit code from the user's authenticator.
    pub totp: String,
}

/// Who the signed-in user is, as the device shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    pub username: String,
    pub display_name: String,
    /// Role code, e.g. `nurse`, `gp`, `paramedic`.
    pub role: String,
    /// The service the user works for, e.g. "Riverside District Nursing".
    pub service: String,
}

/// Answer to a successful enrolment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrolResponse {
    pub device_id: String,
    pub user: UserInfo,
    pub tokens: TokenResponse,
}

/// Exchange a device-bound refresh token for a new access token (and a rotated refresh token).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshRequest {
    pub device_id: String,
    pub refresh_token: String,
}

/// Short-lived access token plus the device-bound refresh token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub access_expires_at: DateTime<Utc>,
    pub refresh_token: String,
}

/// What `Debug` prints instead of a password, code or token: the requests above carry
/// secrets, and a `{:?}` of one must not put them in a log.
const REDACTED: &str = "[redacted]";

impl std::fmt::Debug for EnrolRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrolRequest")
            .field("username", &self.username)
            .field("password", &REDACTED)
            .field("totp", &REDACTED)
            .field("device_name", &self.device_name)
            .finish()
    }
}

impl std::fmt::Debug for ReauthRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReauthRequest")
            .field("device_id", &self.device_id)
            .field("username", &self.username)
            .field("password", &REDACTED)
            .field("totp", &REDACTED)
            .finish()
    }
}

impl std::fmt::Debug for RefreshRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefreshRequest")
            .field("device_id", &self.device_id)
            .field("refresh_token", &REDACTED)
            .finish()
    }
}

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenResponse")
            .field("access_token", &REDACTED)
            .field("access_expires_at", &self.access_expires_at)
            .field("refresh_token", &REDACTED)
            .finish()
    }
}

/// One page of the change feed (`R`: how its resources are held, see [`Change`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PullPage<R = serde_json::Value> {
    /// Opaque, server-signed. Store it with the changes, in one transaction.
    pub cursor: String,
    /// More changes are waiting: pull again with `cursor`.
    pub more: bool,
    /// Server clock when the page was made; the device's "record as of".
    pub server_time: DateTime<Utc>,
    pub changes: Vec<Change<R>>,
    /// The longest the device may go on showing records without reaching the server: the
    /// shortest `max_offline_hours` of the agreements in force covering the user. Absent when
    /// no agreement covers the user (the device then holds nothing to show).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_offline_hours: Option<u32>,
    /// Minutes without input after which the device locks: the shortest `idle_lock_minutes`
    /// of the agreements in force covering the user (absent: the device's default, 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_lock_minutes: Option<u32>,
    /// Hours after which the device shows a record as out of date: the shortest
    /// `stale_after_hours` of the agreements in force covering the user (absent: 24).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale_after_hours: Option<u32>,
}

/// Why a patient is on the user's list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ListKind {
    /// A district nursing (or other) team caseload: until discharged.
    Caseload,
    /// An appointment booked into a session: appointment time + 24 h.
    Appointment,
    /// An incident dispatched to a crew: incident time + 24 h.
    Incident,
    /// Emergency access with a stated reason.
    BreakGlass,
}

/// The list entry that brings a patient onto the device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListEntry {
    pub kind: ListKind,
    /// Name of the list ("Riverside DN caseload", "Hub session Tue 18:30").
    pub list_name: String,
    /// Reason for the visit or appointment, free text.
    pub reason: String,
    /// Appointment or incident time; caseload start date.
    pub starts_at: DateTime<Utc>,
    /// When the entry ends and the patient leaves the device; `None` until discharge.
    pub ends_at: Option<DateTime<Utc>>,
}

/// Items of one record section that the agreements withheld from this user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WithheldCount {
    /// Section name as in `doorstep_record::Section` (`problems`, `medications`, ...).
    pub section: String,
    pub count: u32,
}

/// Header of a patient as the list shows it; the full record comes as resources.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatientHeader {
    /// Server id of the patient (the FHIR `Patient.id`).
    pub patient_id: String,
    /// Ten digits, no spaces.
    pub nhs_number: String,
    pub registered_practice_ods: String,
    pub registered_practice_name: String,
    pub birth_date: Option<NaiveDate>,
}

/// One change of the feed. Every change is idempotent.
///
/// `R` is how a FHIR resource is held: a parsed `serde_json::Value` by default (what a reader
/// of the wire gets); the server sends its stored text as it is (`doorstep_server::pull::Shared`),
/// which serialises to the same JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Change<R = serde_json::Value> {
    /// The patient joined the user's list: a full snapshot of what the user may see.
    /// Replaces anything the device held for this patient.
    PatientAdded {
        patient: PatientHeader,
        entries: Vec<ListEntry>,
        /// FHIR R4 resources (JSON), already filtered by the agreements.
        resources: Vec<R>,
        withheld: Vec<WithheldCount>,
    },
    /// The patient's list entries changed (new appointment, new end time).
    ListChanged {
        patient_id: String,
        entries: Vec<ListEntry>,
    },
    /// A resource was created or changed and is visible to the user.
    Upsert { patient_id: String, resource: R },
    /// A resource was deleted, or is no longer visible to the user.
    Delete {
        patient_id: String,
        resource_type: String,
        resource_id: String,
    },
    /// The patient left the user's list: purge everything about them.
    PatientRemoved { patient_id: String },
    /// The withheld counts of a patient, replacing the previous ones.
    Withheld {
        patient_id: String,
        counts: Vec<WithheldCount>,
    },
}

impl<R> Change<R> {
    /// The same change with each resource turned into another form by `f`.
    pub fn map_resources<S>(self, mut f: impl FnMut(R) -> S) -> Change<S> {
        match self {
            Change::PatientAdded {
                patient,
                entries,
                resources,
                withheld,
            } => Change::PatientAdded {
                patient,
                entries,
                resources: resources.into_iter().map(f).collect(),
                withheld,
            },
            Change::ListChanged {
                patient_id,
                entries,
            } => Change::ListChanged {
                patient_id,
                entries,
            },
            Change::Upsert {
                patient_id,
                resource,
            } => Change::Upsert {
                patient_id,
                resource: f(resource),
            },
            Change::Delete {
                patient_id,
                resource_type,
                resource_id,
            } => Change::Delete {
                patient_id,
                resource_type,
                resource_id,
            },
            Change::PatientRemoved { patient_id } => Change::PatientRemoved { patient_id },
            Change::Withheld { patient_id, counts } => Change::Withheld { patient_id, counts },
        }
    }
}

/// Why the device must rebuild its cache from scratch (HTTP 410).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResyncReason {
    /// The cursor is older than what the change feed keeps.
    CursorExpired,
    /// The user's agreements or roles changed since the cursor was issued.
    AccessChanged,
    /// The cursor was not made by this server for this device.
    CursorInvalid,
}

/// Body of an HTTP 410 answer to a pull.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResyncRequired {
    pub reason: ResyncReason,
    pub message: String,
}

/// Most items in one push.
pub const PUSH_MAX_ITEMS: usize = 100;

/// Kind of a [`PushItem`] that carries a consultation note ([`NoteBody`]).
pub const PUSH_KIND_NOTE: &str = "note";
/// An outbox item saying the clinician opened a record, or one of its sections, on the device
/// (body: [`RecordViewBody`]); the server audits it as `record_viewed` with the device's time.
pub const PUSH_KIND_RECORD_VIEW: &str = "record_view";

/// A record or section view made on the device, perhaps offline, sent up through the outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordViewBody {
    /// The section opened (`summary` when the record was opened).
    pub section: String,
    /// When, by the device's clock.
    pub viewed_at: DateTime<Utc>,
    /// Whether the device could not reach the server at the time.
    pub offline: bool,
}

/// Body of `POST /api/v1/sync/push`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PushRequest {
    pub items: Vec<PushItem>,
}

/// One outbox item. The kind is open (`note` today; record-view events and acknowledgements
/// later): a kind the server does not know is rejected, never an error of the whole push.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PushItem {
    /// Made on the device (UUID v4); the server stores an item once by it.
    pub id: String,
    /// [`PUSH_KIND_NOTE`], ...
    pub kind: String,
    /// The patient the item is about (the server's patient id, as pulled).
    pub patient_id: String,
    /// When the device made the item, by its own clock (notes are written offline).
    pub created_at: DateTime<Utc>,
    /// The kind's body: a [`NoteBody`] for a note.
    pub body: serde_json::Value,
}

/// A signed consultation note. Never edited once signed: an amendment is a new note whose
/// `replaces` names the earlier one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NoteBody {
    /// Free text (may be empty when vitals are recorded).
    pub text: String,
    /// Vital signs in the form `doorstep_record::news2::Vitals` reads (`rr`, `spo2`, `scale`,
    /// `o2`, `sbp`, `pulse`, `acvpu`, `temp`), when any were recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vitals: Option<serde_json::Value>,
    /// A coded problem from the local SNOMED CT pick list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<NoteProblem>,
    /// The id of the note this one amends and replaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaces: Option<String>,
    /// When the author signed it.
    pub signed_at: DateTime<Utc>,
}

/// A SNOMED CT concept chosen for a note.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoteProblem {
    pub code: String,
    pub display: String,
}

/// Answer of `POST /api/v1/sync/push`: one result per item, in the order sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushResponse {
    pub results: Vec<PushResult>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushResult {
    pub id: String,
    pub outcome: PushOutcome,
}

/// What became of one pushed item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum PushOutcome {
    /// Stored now; it goes to the patient's registered practice. For a note, the author's next
    /// pull carries its Composition (id = the item's id) with the delivery state (accepted,
    /// then received, filed or rejected by the practice) in its `note-delivery` extension,
    /// read with `doorstep_record::writeback::note_delivery`.
    Accepted { accepted_at: DateTime<Utc> },
    /// Stored before (this is a resend): the first answer.
    Duplicate { first: FirstOutcome },
    /// Refused, with the reason for its author; nothing of it is stored but the refusal.
    Rejected { reason: String },
}

/// The first answer an item got, repeated for a resend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum FirstOutcome {
    Accepted { accepted_at: DateTime<Utc> },
    Rejected { reason: String },
}

/// What a practice's system says of a note it fetched from its inbox. A note only moves
/// forward: accepted -> received -> filed | rejected (received may be skipped). Repeating a
/// state, or `received` after a final state, changes nothing; filed and rejected are final,
/// and the one after the other is refused (409).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AckStatus {
    /// The practice's system has it.
    Received,
    /// Filed in the patient's GP record.
    Filed,
    /// Not filed; `reason` says why.
    Rejected,
}

/// Body of `POST /api/v1/practice/inbox/ack`. Checked whole before anything changes: one bad
/// acknowledgement refuses the request (4xx) and changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckRequest {
    pub acks: Vec<Ack>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// The note's id (its Composition's id in the inbox Bundle).
    pub note_id: String,
    pub status: AckStatus,
    /// Required with `rejected`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Answer of an accepted `POST /api/v1/practice/inbox/ack`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckResponse {
    /// Acknowledgements that changed a note's state (a repeat of the same state is not one).
    pub changed: usize,
}

/// Answer of `POST /api/v1/import`: what a member practice's bundle changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportSummary {
    pub patients: usize,
    /// Resources new or changed.
    pub upserted: usize,
    /// Resources identical to what the federation held (no change reaches a device).
    pub unchanged: usize,
    pub deleted: usize,
    /// Patients the bundle registered nowhere, registered with the sending practice.
    pub registered_with_sender: Vec<String>,
    /// The same, in words, when there were any.
    pub note: Option<String>,
}

/// Answer of `POST /api/v1/import` when the bundle is refused (HTTP 422): nothing of it was
/// stored. Names the entry (index in `Bundle.entry`), the resource and the element.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportProblem {
    /// `bundle_rejected`.
    pub code: String,
    /// The whole reason, for a person: `entry 3 (Condition/c1): element 'code': ...`.
    pub message: String,
    pub entry: Option<usize>,
    pub resource: Option<String>,
    pub element: String,
}

/// Body of every other error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// Stable machine-readable code: `bad_credentials`, `locked_out`, `unauthorized`,
    /// `token_expired`, `device_revoked`, `bad_request`, `internal`.
    pub code: String,
    /// What went wrong, for a person.
    pub message: String,
}

// ---------- break-glass ----------

/// Why a clinician breaks the glass (`POST /api/v1/break-glass/search` and
/// `POST /api/v1/break-glass`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakGlassReason {
    EmergencyTreatment,
    PatientUnconscious,
    PatientConsented,
    /// With the clinician's own words in `reason_text`.
    Other,
}

/// Find a patient who is not on the user's list: by NHS number, or by family name and date of
/// birth (both exact). A reason is required before anything is shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakGlassSearch {
    #[serde(default)]
    pub nhs_number: Option<String>,
    #[serde(default)]
    pub family: Option<String>,
    #[serde(default)]
    pub birth_date: Option<NaiveDate>,
    pub reason: BreakGlassReason,
    #[serde(default)]
    pub reason_text: Option<String>,
}

/// One patient a break-glass search found: enough to tell them apart, nothing of the record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakGlassMatch {
    pub patient_id: String,
    pub name: String,
    pub birth_date: Option<NaiveDate>,
    pub nhs_number: String,
    pub practice_name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakGlassMatches {
    pub matches: Vec<BreakGlassMatch>,
}

/// Bring `patient_id` onto the user's list for [`BREAK_GLASS_HOURS`], with the reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakGlassRequest {
    pub patient_id: String,
    pub reason: BreakGlassReason,
    #[serde(default)]
    pub reason_text: Option<String>,
}

/// The access granted: the patient reaches the device at its next sync and leaves it at the
/// first sync after `ends_at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakGlassGranted {
    pub patient_id: String,
    pub ends_at: DateTime<Utc>,
    /// The privacy officer's alert raised for it.
    pub alert_id: i64,
}

/// How long a break-glass access lasts.
pub const BREAK_GLASS_HOURS: i64 = 24;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_of_requests_and_tokens_shows_no_secret() {
        let shown = format!(
            "{:?} {:?} {:?} {:#?}",
            EnrolRequest {
                username: "nurse.demo".into(),
                password: "pw-sekrit-1".into(),
                totp: "271828".into(),
                device_name: "laptop".into(),
            },
            ReauthRequest {
                device_id: "dev-1".into(),
                username: "nurse.demo".into(),
                password: "pw-sekrit-1".into(),
                totp: "271828".into(),
            },
            RefreshRequest {
                device_id: "dev-1".into(),
                refresh_token: "dsr_refresh-sekrit".into(),
            },
            EnrolResponse {
                device_id: "dev-1".into(),
                user: UserInfo {
                    username: "nurse.demo".into(),
                    display_name: "N".into(),
                    role: "nurse".into(),
                    service: "S".into(),
                },
                tokens: TokenResponse {
                    access_token: "dsa_access-sekrit".into(),
                    access_expires_at: Utc::now(),
                    refresh_token: "dsr_refresh-sekrit".into(),
                },
            },
        );
        for secret in ["pw-sekrit-1", "271828", "refresh-sekrit", "access-sekrit"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("nurse.demo") && shown.contains("[redacted]"));
    }

    /// The push answer's JSON, as the OpenAPI document describes it.
    #[test]
    fn push_outcomes_are_tagged_by_status() {
        let at = DateTime::parse_from_rfc3339("2026-12-01T09:30:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let results = PushResponse {
            results: vec![
                PushResult {
                    id: "a".into(),
                    outcome: PushOutcome::Accepted { accepted_at: at },
                },
                PushResult {
                    id: "b".into(),
                    outcome: PushOutcome::Duplicate {
                        first: FirstOutcome::Rejected {
                            reason: "not on your list".into(),
                        },
                    },
                },
            ],
        };
        assert_eq!(
            serde_json::to_value(&results).unwrap(),
            serde_json::json!({"results": [
                {"id": "a", "outcome": {"status": "accepted", "accepted_at": "2026-12-01T09:30:00Z"}},
                {"id": "b", "outcome": {"status": "duplicate",
                                        "first": {"status": "rejected", "reason": "not on your list"}}},
            ]})
        );
        let ack: AckRequest =
            serde_json::from_str(r#"{"acks":[{"note_id":"n1","status":"filed"}]}"#).unwrap();
        assert_eq!(ack.acks[0].status, AckStatus::Filed);
        assert!(
            serde_json::from_str::<AckRequest>(r#"{"acks":[{"note_id":"n1","status":"lost"}]}"#)
                .is_err()
        );
    }

    #[test]
    fn change_is_tagged_by_op() {
        let c = Change::PatientRemoved {
            patient_id: "p1".into(),
        };
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(json, r#"{"op":"patient_removed","patient_id":"p1"}"#);
        let back: Change = serde_json::from_str(&json).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn resync_reason_is_snake_case() {
        let r = ResyncRequired {
            reason: ResyncReason::AccessChanged,
            message: "roles changed".into(),
        };
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["reason"], "access_changed");
    }
}
