//! The interface between the Doorstep UI (Leptos, wasm32) and the Tauri shell.
//!
//! The UI reaches the backend only through Tauri `invoke` with the command names in
//! [`commands`] and the argument and answer types below; it knows no SQL and no HTTP. The shell
//! implements each command by calling `doorstep-client`, whose queries answer with these same
//! types, so there is one definition of what a screen receives.
//!
//! Every command answers `Result<T, IpcError>`; an [`IpcError`] says what went wrong in words a
//! clinician can act on, plus a stable [`IpcErrorKind`] the UI branches on.
//!
//! This crate is pure data (serde, and zeroize for [`Secret`]) and compiles for wasm32.

pub mod pin;
pub mod secret;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

pub use doorstep_record::views::RecordView;
pub use secret::Secret;

/// Tauri command names. Arguments are sent as one JSON object whose field names are the
/// snake_case names given here (Tauri maps them to the Rust parameter names).
pub mod commands {
    /// `() -> AppState`
    pub const APP_STATE: &str = "app_state";
    /// `{ form: EnrolForm } -> AppState`
    pub const ENROL: &str = "enrol";
    /// `{ pin: String } -> AppState`
    pub const UNLOCK: &str = "unlock";
    /// `{ pin: String, password: String, totp: String } -> AppState` (after too many wrong
    /// PINs: signs in online again, then opens the cache with the PIN)
    pub const UNLOCK_ONLINE: &str = "unlock_online";
    /// `() -> AppState`
    pub const LOCK: &str = "lock";
    /// `{ search: Option<String>, limit: Option<u32> } -> ListPage` (the first `limit` rows,
    /// all when `None`)
    pub const LIST_PATIENTS: &str = "list_patients";
    /// `{ patient_id: String } -> PatientRecord`
    pub const PATIENT_RECORD: &str = "patient_record";
    /// `() -> SyncStatus` (runs a sync now, then answers the status)
    pub const SYNC_NOW: &str = "sync_now";
    /// `() -> SyncStatus` (no network, except a reachability probe)
    pub const SYNC_STATUS: &str = "sync_status";
    /// `{ patient_id: String, note: NoteForm } -> NoteSummary` (signs the note into the outbox)
    pub const WRITE_NOTE: &str = "write_note";
    /// `{ patient_id: Option<String> } -> Vec<NoteSummary>` (the notes written on this
    /// device: one patient's, or everyone's for the sync screen)
    pub const NOTES: &str = "notes";
    /// `{ patient_id: String, draft: String } -> ()`
    pub const SAVE_DRAFT: &str = "save_draft";
    /// `{ patient_id: String } -> Option<String>`
    pub const DRAFT: &str = "draft";
    /// `{ patient_id: String, section: String } -> ()` (the clinician opened the record or one
    /// of its sections: audited on the server after the next push, offline views included)
    pub const RECORD_VIEWED: &str = "record_viewed";
    /// `{ form: BreakGlassForm } -> Vec<BreakGlassMatch>` (online only; the reason first)
    pub const BREAK_GLASS_SEARCH: &str = "break_glass_search";
    /// `{ patient_id: String, reason: String, reason_text: Option<String> } -> BreakGlassGrant`
    /// (online only: raises an alert for the privacy officer, then syncs the patient down)
    pub const BREAK_GLASS: &str = "break_glass";
    /// `{ password: String, totp: String } -> ()` (while unlocked, after `OfflineTooLong`:
    /// signs in online again, so that records show again)
    pub const SIGN_IN_ONLINE: &str = "sign_in_online";
    /// `() -> DeviceInfo`
    pub const DEVICE_INFO: &str = "device_info";
    /// `{ old_pin: String, new_pin: String } -> ()` (a wrong old PIN counts like any wrong PIN)
    pub const CHANGE_PIN: &str = "change_pin";
    /// `() -> AppState` (wipes the cache and the enrolment; refused while anything waits to be
    /// sent)
    pub const SIGN_OUT: &str = "sign_out";
}

/// What the note composer signs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NoteForm {
    pub text: String,
    pub vitals: Option<doorstep_record::news2::Vitals>,
    /// A SNOMED CT code of `doorstep_record::problems::PICK_LIST`.
    pub problem: Option<String>,
    /// The note this one amends.
    pub replaces: Option<String>,
}

/// Where the app is: what screen it can show.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum AppState {
    /// No device enrolment in this data directory: show the enrol screen.
    /// `server_url` pre-fills the form when the app was started with `--server`.
    NotEnrolled { server_url: Option<String> },
    /// Enrolled; the cache is locked: show the unlock screen.
    Locked {
        username: String,
        server_url: String,
    },
    /// Unlocked: show the list.
    Unlocked { user: UserSummary },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserSummary {
    pub username: String,
    pub display_name: String,
    pub role: String,
    pub service: String,
}

/// What the enrol screen sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrolForm {
    pub server_url: String,
    pub username: String,
    pub password: Secret,
    pub totp: Secret,
    /// The PIN or passphrase that will unlock the cache on this device.
    pub pin: Secret,
}

/// How many rows the list screen shows before the clinician asks for all (a search narrows
/// it; a caseload rarely reaches it).
pub const LIST_FIRST_ROWS: u32 = 200;

/// The list as the screen shows it: its first rows in order, and how many there are in all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListPage {
    pub rows: Vec<ListRow>,
    pub total: u32,
}

/// One patient on "My list". `Hash` so that the list can key its rows by the whole row: a row
/// whose content changes gets a new element, and no element ever changes which patient it shows.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ListRow {
    pub patient_id: String,
    /// Ten digits.
    pub nhs_number: String,
    /// `999 123 4567`.
    pub nhs_number_display: String,
    /// As the banner shows it: `EVANS, Siân (Mrs)`.
    pub name: String,
    pub birth_date: Option<NaiveDate>,
    /// Whole years, on the device's today.
    pub age: Option<u32>,
    /// One line: `12 Station Road, Leeds, LS1 4AB`.
    pub address: String,
    pub postcode: Option<String>,
    pub practice_name: String,
    /// Why the patient is on the list (visit reason or appointment reason).
    pub reason: String,
    /// `caseload`, `appointment`, `incident`, `break_glass`.
    pub list_kind: String,
    /// Appointment or incident time; for caseload the start date.
    pub starts_at: DateTime<Utc>,
    pub ends_at: Option<DateTime<Utc>>,
    /// True when the entry falls on the device's today (sorted first).
    pub today: bool,
    /// Alert badges: `DNACPR`, `ReSPECT`, `Safeguarding`, `Allergies`.
    pub alerts: Vec<String>,
    /// Another patient on this list has the same name (see `doorstep_record::lookalike`): the
    /// list and the banner warn, so the clinician checks the date of birth and NHS number.
    #[serde(default)]
    pub same_name: bool,
}

/// Where a note the user wrote stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum NoteState {
    /// Signed and on this device, waiting to be sent.
    Waiting,
    /// The federation has it and sends it to the patient's registered practice.
    Accepted { at: DateTime<Utc> },
    /// The federation refused it; it stays here with the reason.
    Rejected { reason: String },
    /// The practice's system has fetched it.
    Received { practice: String, at: DateTime<Utc> },
    /// Filed in the patient's GP record at the practice.
    Filed { practice: String, at: DateTime<Utc> },
    /// The practice did not file it.
    NotFiled {
        practice: String,
        at: DateTime<Utc>,
        reason: String,
    },
}

/// A note the user wrote, as the record screen and `doorstep notes` list it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoteSummary {
    /// The note's id (made on the device).
    pub id: String,
    pub patient_id: String,
    pub signed_at: DateTime<Utc>,
    pub text: String,
    /// The NEWS2 total and band when vitals were recorded: `NEWS2 5 (medium)`.
    pub news2: Option<String>,
    /// `38341003 Hypertensive disorder`.
    pub problem: Option<String>,
    /// The note this one replaces.
    pub replaces: Option<String>,
    pub state: NoteState,
}

/// Items withheld from one section, by count only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Withheld {
    pub section: String,
    pub count: u32,
}

/// Everything the record screen shows for one patient.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatientRecord {
    pub view: RecordView,
    /// When the device last received this patient's data from the server.
    pub as_of: DateTime<Utc>,
    pub withheld: Vec<Withheld>,
    pub list_reason: String,
    /// When the patient is on the device through break-glass: when that access ends (the
    /// record is marked as emergency access until then).
    #[serde(default)]
    pub break_glass_until: Option<DateTime<Utc>>,
    /// Past `as_of` by this many hours the record is out of date (the agreements' threshold):
    /// the banner says so in words and colour. It is still shown up to the offline limit.
    #[serde(default = "default_stale_after_hours")]
    pub stale_after_hours: u32,
    /// Another patient on this list has the same name.
    #[serde(default)]
    pub same_name: bool,
}

fn default_stale_after_hours() -> u32 {
    doorstep_record::agreement::DEFAULT_STALE_AFTER_HOURS
}

/// A break-glass search from the window: an NHS number, or a family name and a date of birth,
/// and the reason first (`emergency_treatment`, `patient_unconscious`, `patient_consented`,
/// `other` with `reason_text`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakGlassForm {
    #[serde(default)]
    pub nhs_number: Option<String>,
    #[serde(default)]
    pub family: Option<String>,
    /// `YYYY-MM-DD` or `DD/MM/YYYY`.
    #[serde(default)]
    pub birth_date: Option<String>,
    pub reason: String,
    #[serde(default)]
    pub reason_text: Option<String>,
}

/// A patient a break-glass search found (nothing of their record).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakGlassMatch {
    pub patient_id: String,
    pub name: String,
    pub birth_date: Option<NaiveDate>,
    /// `999 123 4567`.
    pub nhs_number_display: String,
    pub practice_name: String,
}

/// Break-glass granted: the patient is on this device (synced) until `ends_at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakGlassGrant {
    pub patient_id: String,
    pub ends_at: DateTime<Utc>,
}

/// The sync state shown on every screen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncStatus {
    pub server_url: String,
    /// End of the last completed sync.
    pub last_synced: Option<DateTime<Utc>>,
    /// Result of the last reachability probe or sync attempt.
    pub server_reachable: Option<bool>,
    /// Patients in the cache.
    pub patients: u32,
    /// Items waiting to go up (outbox); zero until notes exist.
    pub waiting: u32,
    /// The last sync error, in words.
    pub last_error: Option<String>,
    /// The last error sending the outbox, in words (notes stay waiting and are sent again).
    #[serde(default)]
    pub last_push_error: Option<String>,
    /// A sync is running now.
    pub syncing: bool,
    /// The server asked for a rebuild at this time and it has not completed: the records shown
    /// are the copy from before, kept until the new one is complete.
    #[serde(default)]
    pub rebuilding_since: Option<DateTime<Utc>>,
    /// Seconds without input after which the window locks (the shortest idle lock of the
    /// user's agreements, 5 minutes by default): the window clears itself at once when they
    /// pass, without waiting for the shell.
    #[serde(default)]
    pub idle_lock_secs: u64,
    /// What the last completed sync brought down and sent up.
    #[serde(default)]
    pub last_sync: Option<SyncSummary>,
}

/// What one completed sync did, for the sync screen.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncSummary {
    pub at: DateTime<Utc>,
    pub patients_added: u32,
    pub patients_removed: u32,
    /// Record items added or changed.
    pub items_updated: u32,
    /// Record items removed (ended, or no longer shared).
    pub items_removed: u32,
    /// List entries and withheld counts that changed.
    pub other_changes: u32,
    /// The server asked for a rebuild and the cache was rebuilt from scratch.
    pub rebuilt: bool,
    /// Notes and records of access the server accepted.
    pub sent: u32,
    /// Notes the server refused (each keeps its reason).
    pub refused: u32,
    pub duration_ms: u64,
}

/// This device, for the settings screen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceInfo {
    pub device_name: String,
    pub device_id: String,
    pub server_url: String,
    pub username: String,
    pub enrolled_at: DateTime<Utc>,
    /// The server's CA is pinned (the device trusts no other).
    pub pinned_ca: bool,
}

/// Error kinds the UI branches on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IpcErrorKind {
    /// The form or argument is wrong; `message` says which field.
    Invalid,
    /// Wrong PIN; the message says how many more before an online sign-in.
    WrongPin,
    /// Too many wrong PINs: sign in online (password, authenticator code) and give the PIN.
    OnlineSignInRequired,
    /// The cache was wiped after too many wrong PINs: enrol again.
    Wiped,
    /// The server revoked this device; its cache was wiped: enrol again (a new device).
    DeviceRevoked,
    /// The server refused the credentials.
    SignInFailed,
    /// The server could not be reached.
    Offline,
    /// The device has not reached the server for longer than the agreements allow: no record
    /// is shown until it syncs or the clinician signs in online; the message says since when.
    OfflineTooLong,
    /// The cache is locked; unlock first.
    Locked,
    /// Not found (patient no longer on the list).
    NotFound,
    /// Anything else.
    Internal,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpcError {
    pub kind: IpcErrorKind,
    pub message: String,
}

impl IpcError {
    pub fn new(kind: IpcErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for IpcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for IpcError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_state_is_tagged() {
        let s = AppState::NotEnrolled { server_url: None };
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["state"], "not_enrolled");
    }
}
