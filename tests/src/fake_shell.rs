//! A fake Tauri shell: the UI's own build (`ui/dist`, the files the window embeds) served to a
//! plain browser, with every command of `doorstep_ipc::commands` answered from memory.
//!
//! What it is for: putting every screen of the UI in front of tools that need a real browser
//! engine and no federation (the accessibility check, `tests/tests/ui_accessibility.rs`),
//! quickly and the same way every run. It is not a second shell: it keeps data and a little
//! state (enrolled, locked, the wrong-PIN count, the offline age, notes and drafts) and answers
//! each command with the `doorstep-ipc` types, serialised with serde, so a change of a type
//! breaks this build rather than the test. Errors are `doorstep_client::ClientError`s turned
//! into `IpcError`s by the client's own `to_ipc`, so the screens show the real words.
//!
//! How: an HTTP server on a random loopback port serves `ui/dist`; `index.html` gets, before
//! its module script, a script defining `window.__TAURI_INTERNALS__.invoke(cmd, args)`, which
//! POSTs the arguments as JSON to `/invoke/<cmd>` and resolves with the JSON answer, or rejects
//! with the serialised `IpcError` (as the real shell's commands reject), or with a plain string
//! for a command it does not know (as Tauri does). Commands the fake does not know are kept
//! ([`FakeShell::unanswered`]) so a test can fail on them.
//!
//! The data is [`caseload`]: synthetic, NHS numbers in the test range.

pub mod caseload;

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, NaiveDate, Utc};
use doorstep_client::ClientError;
use doorstep_ipc::{
    AppState, BreakGlassForm, BreakGlassGrant, BreakGlassMatch, DeviceInfo, EnrolForm, IpcError,
    ListPage, ListRow, NoteForm, NoteState, NoteSummary, PatientRecord, SyncStatus, SyncSummary,
    UserSummary, commands,
};
use doorstep_record::NhsNumber;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use caseload::FakePatient;

/// The PIN that unlocks the fake device (and the one a fresh enrolment is given in tests).
pub const PIN: &str = "246810";
/// The only user the fake federation signs in.
pub const USERNAME: &str = "nurse.demo";
pub const PASSWORD: &str = "correct horse battery staple";
/// Where the fake device is enrolled (never contacted).
pub const SERVER_URL: &str = "https://federation.riverside.example";
/// Wrong PINs before an online sign-in is needed (as `doorstep_client`'s vault).
const PIN_TRIES: u32 = 5;
/// The offline age the fake agreements allow.
const MAX_OFFLINE_HOURS: u32 = 72;

/// Defines the Tauri v2 IPC entry point the UI's `Backend` calls.
const INVOKE_SHIM: &str = r#"<script>
window.__TAURI_INTERNALS__ = {
  invoke(cmd, args) {
    return fetch("/invoke/" + encodeURIComponent(cmd), {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(args === undefined ? {} : args),
    }).then(async (answer) => {
      const body = await answer.json();
      if (answer.ok) return body;
      throw body;
    });
  },
};
</script>
"#;

/// Where the fake device starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// No enrolment: the enrol screen.
    NotEnrolled,
    /// Enrolled and locked (PIN [`PIN`]): the unlock screen.
    Locked,
}

/// The UI served with the fake shell behind it, until dropped.
pub struct FakeShell {
    /// `http://127.0.0.1:PORT/`: the app's page.
    pub url: String,
    state: Arc<Mutex<ShellState>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeShell {
    /// Serves `dist` (the output of `cargo xtask build-ui`) on a random loopback port, the
    /// device not enrolled.
    pub async fn start(dist: &Path) -> Result<FakeShell, String> {
        let index = std::fs::read_to_string(dist.join("index.html")).map_err(|e| {
            format!(
                "{}/index.html: {e} (build the UI with `cargo xtask build-ui`)",
                dist.display()
            )
        })?;
        if !dist.join("doorstep-ui_bg.wasm").is_file() {
            return Err(format!(
                "{} has no doorstep-ui_bg.wasm (build the UI with `cargo xtask build-ui`)",
                dist.display()
            ));
        }
        let at = index
            .find("<script")
            .ok_or_else(|| format!("{}/index.html has no script", dist.display()))?;
        let page = format!("{}{INVOKE_SHIM}{}", &index[..at], &index[at..]);
        let state = Arc::new(Mutex::new(ShellState::new(Start::NotEnrolled)));
        let served = Served {
            dist: dist.to_path_buf(),
            page,
            state: state.clone(),
        };
        let app = Router::new()
            .route("/", get(index_page))
            .route("/index.html", get(index_page))
            .route("/invoke/{cmd}", post(invoke))
            .fallback(get(static_file))
            .with_state(Arc::new(served));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("binding a loopback port: {e}"))?;
        let addr = listener
            .local_addr()
            .map_err(|e| format!("the fake shell's address: {e}"))?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(FakeShell {
            url: format!("http://{addr}/"),
            state,
            stop: Some(stop),
            task,
        })
    }

    fn state(&self) -> MutexGuard<'_, ShellState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forgets everything (notes, drafts, wrong PINs, break-glass) and starts again at `start`.
    pub fn reset(&self, start: Start) {
        let unanswered = std::mem::take(&mut self.state().unanswered);
        let mut state = ShellState::new(start);
        state.unanswered = unanswered;
        *self.state() = state;
    }

    /// Past (true) or within (false) the agreements' maximum offline age: past it, the list
    /// and records answer `OfflineTooLong` until a sync or an online sign-in.
    pub fn set_offline_too_long(&self, too_long: bool) {
        let mut state = self.state();
        state.offline_too_long = too_long;
        if too_long {
            state.last_contact =
                Utc::now() - chrono::Duration::hours(i64::from(MAX_OFFLINE_HOURS) + 8);
            state.last_synced = state.last_contact;
        }
    }

    /// Whether the federation answers: without it a sync fails and says so.
    pub fn set_server_reachable(&self, reachable: bool) {
        self.state().server_reachable = reachable;
    }

    /// Wrong PINs given so far: one more than [`PIN_TRIES`] - `n` asks for an online sign-in.
    pub fn set_wrong_pins(&self, n: u32) {
        self.state().wrong_pins = n;
    }

    /// The idle lock the status answers (the window locks itself after this long without
    /// input).
    pub fn set_idle_lock_secs(&self, secs: u64) {
        self.state().idle_lock_secs = secs;
    }

    /// True when the device is locked (the UI asked for `lock`, or never unlocked).
    pub fn is_locked(&self) -> bool {
        self.state().phase == Phase::Locked
    }

    /// The commands the UI called that the fake does not know, in order.
    pub fn unanswered(&self) -> Vec<String> {
        self.state().unanswered.clone()
    }

    /// The patients on the list, as the list answers them with no search.
    pub fn rows(&self) -> Vec<ListRow> {
        self.state().sorted_rows(None)
    }
}

impl Drop for FakeShell {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.abort();
    }
}

struct Served {
    dist: PathBuf,
    page: String,
    state: Arc<Mutex<ShellState>>,
}

async fn index_page(State(served): State<Arc<Served>>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        served.page.clone(),
    )
        .into_response()
}

async fn static_file(State(served): State<Arc<Served>>, uri: Uri) -> Response {
    let relative = Path::new(uri.path().trim_start_matches('/'));
    // Only plain names below dist: no "..", no absolute paths.
    if relative
        .components()
        .any(|c| !matches!(c, Component::Normal(_)))
    {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    }
    let path = served.dist.join(relative);
    let Ok(body) = tokio::fs::read(&path).await else {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    };
    let kind = match path.extension().and_then(|e| e.to_str()) {
        Some("js") => "text/javascript; charset=utf-8",
        Some("wasm") => "application/wasm",
        Some("css") => "text/css; charset=utf-8",
        Some("html") => "text/html; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    };
    ([(header::CONTENT_TYPE, kind)], body).into_response()
}

async fn invoke(
    State(served): State<Arc<Served>>,
    UrlPath(cmd): UrlPath<String>,
    body: Bytes,
) -> Response {
    let args: Value = if body.is_empty() {
        Value::Object(Default::default())
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => {
                let text = format!("the arguments of {cmd} are not JSON: {e}");
                return (StatusCode::BAD_REQUEST, axum::Json(Value::String(text))).into_response();
            }
        }
    };
    let answer = served
        .state
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .answer(&cmd, args);
    match answer {
        Ok(v) => axum::Json(v).into_response(),
        Err(Rejection::Ipc(e)) => (StatusCode::BAD_REQUEST, axum::Json(e)).into_response(),
        Err(Rejection::Plain(text)) => {
            (StatusCode::BAD_REQUEST, axum::Json(Value::String(text))).into_response()
        }
    }
}

/// How a command fails: the shell's `IpcError`, or Tauri's own plain string.
enum Rejection {
    Ipc(IpcError),
    Plain(String),
}

impl From<IpcError> for Rejection {
    fn from(e: IpcError) -> Self {
        Rejection::Ipc(e)
    }
}

impl From<ClientError> for Rejection {
    fn from(e: ClientError) -> Self {
        Rejection::Ipc(e.to_ipc())
    }
}

// The arguments of each command, as the UI's `Backend` sends them (`doorstep_ipc::commands`
// documents them). Unknown fields are refused: a renamed argument fails here, not silently.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoArgs {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnrolArgs {
    form: EnrolForm,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UnlockArgs {
    pin: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UnlockOnlineArgs {
    pin: String,
    password: String,
    totp: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignInArgs {
    password: String,
    totp: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListArgs {
    search: Option<String>,
    limit: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PatientArgs {
    patient_id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NotesArgs {
    patient_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangePinArgs {
    old_pin: String,
    new_pin: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BreakGlassSearchArgs {
    form: BreakGlassForm,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BreakGlassArgs {
    patient_id: String,
    reason: String,
    reason_text: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ViewedArgs {
    patient_id: String,
    section: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WriteNoteArgs {
    patient_id: String,
    note: NoteForm,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DraftArgs {
    patient_id: String,
    draft: String,
}

fn decode<T: DeserializeOwned>(cmd: &str, args: Value) -> Result<T, Rejection> {
    serde_json::from_value(args)
        .map_err(|e| Rejection::Plain(format!("invalid args for command {cmd}: {e}")))
}

fn answer<T: serde::Serialize>(v: Result<T, Rejection>) -> Result<Value, Rejection> {
    v.map(|v| serde_json::to_value(v).expect("doorstep-ipc types serialise"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    NotEnrolled,
    Locked,
    Unlocked,
}

struct ShellState {
    phase: Phase,
    pin: String,
    wrong_pins: u32,
    /// Too many wrong PINs: only `unlock_online` opens the device.
    online_required: bool,
    offline_too_long: bool,
    server_reachable: bool,
    last_contact: DateTime<Utc>,
    last_synced: DateTime<Utc>,
    last_error: Option<String>,
    idle_lock_secs: u64,
    patients: Vec<FakePatient>,
    off_list: Vec<FakePatient>,
    notes: Vec<NoteSummary>,
    drafts: HashMap<String, String>,
    unanswered: Vec<String>,
}

impl ShellState {
    fn new(start: Start) -> Self {
        let now = Utc::now();
        let last_synced = now - chrono::Duration::minutes(12);
        Self {
            phase: match start {
                Start::NotEnrolled => Phase::NotEnrolled,
                Start::Locked => Phase::Locked,
            },
            pin: PIN.to_owned(),
            wrong_pins: 0,
            online_required: false,
            offline_too_long: false,
            server_reachable: true,
            last_contact: last_synced,
            last_synced,
            last_error: None,
            idle_lock_secs: 300,
            patients: caseload::on_list(last_synced),
            off_list: caseload::off_list(last_synced),
            notes: caseload::notes(now),
            drafts: HashMap::new(),
            unanswered: Vec::new(),
        }
    }

    fn answer(&mut self, cmd: &str, args: Value) -> Result<Value, Rejection> {
        match cmd {
            commands::APP_STATE => {
                let NoArgs {} = decode(cmd, args)?;
                answer(Ok(self.app_state()))
            }
            commands::ENROL => {
                let a: EnrolArgs = decode(cmd, args)?;
                answer(self.enrol(&a.form))
            }
            commands::UNLOCK => {
                let a: UnlockArgs = decode(cmd, args)?;
                answer(self.unlock(&a.pin))
            }
            commands::UNLOCK_ONLINE => {
                let a: UnlockOnlineArgs = decode(cmd, args)?;
                answer(self.unlock_online(&a.pin, &a.password, &a.totp))
            }
            commands::SIGN_IN_ONLINE => {
                let a: SignInArgs = decode(cmd, args)?;
                answer(self.sign_in_online(&a.password, &a.totp))
            }
            commands::LOCK => {
                let NoArgs {} = decode(cmd, args)?;
                if self.phase == Phase::Unlocked {
                    self.phase = Phase::Locked;
                }
                answer(Ok(self.app_state()))
            }
            commands::LIST_PATIENTS => {
                let a: ListArgs = decode(cmd, args)?;
                answer(self.list(a.search.as_deref(), a.limit))
            }
            commands::PATIENT_RECORD => {
                let a: PatientArgs = decode(cmd, args)?;
                answer(self.record(&a.patient_id))
            }
            commands::RECORD_VIEWED => {
                let a: ViewedArgs = decode(cmd, args)?;
                answer(self.viewed(&a.patient_id, &a.section))
            }
            commands::BREAK_GLASS_SEARCH => {
                let a: BreakGlassSearchArgs = decode(cmd, args)?;
                answer(self.break_glass_search(&a.form))
            }
            commands::BREAK_GLASS => {
                let a: BreakGlassArgs = decode(cmd, args)?;
                answer(self.break_glass(&a.patient_id, &a.reason, a.reason_text.as_deref()))
            }
            commands::SYNC_NOW => {
                let NoArgs {} = decode(cmd, args)?;
                answer(self.sync_now())
            }
            commands::SYNC_STATUS => {
                let NoArgs {} = decode(cmd, args)?;
                answer(self.unlocked().map(|()| self.status()))
            }
            commands::WRITE_NOTE => {
                let a: WriteNoteArgs = decode(cmd, args)?;
                answer(self.write_note(&a.patient_id, &a.note))
            }
            commands::NOTES => {
                let a: NotesArgs = decode(cmd, args)?;
                answer(self.notes_of(a.patient_id.as_deref()))
            }
            commands::DEVICE_INFO => {
                let NoArgs {} = decode(cmd, args)?;
                answer(self.unlocked().map(|()| DeviceInfo {
                    device_name: "Doorstep on the fake tablet".to_owned(),
                    device_id: "3f0c9d7e-5b1a-4c2e-9f6d-0a8b7c6d5e4f".to_owned(),
                    server_url: SERVER_URL.to_owned(),
                    username: USERNAME.to_owned(),
                    enrolled_at: self.last_contact - chrono::Duration::days(20),
                    pinned_ca: true,
                }))
            }
            commands::CHANGE_PIN => {
                let a: ChangePinArgs = decode(cmd, args)?;
                answer(self.change_pin(&a.old_pin, &a.new_pin))
            }
            commands::SIGN_OUT => {
                let NoArgs {} = decode(cmd, args)?;
                answer(self.sign_out())
            }
            commands::SAVE_DRAFT => {
                let a: DraftArgs = decode(cmd, args)?;
                answer(self.unlocked().map(|()| {
                    self.drafts.insert(a.patient_id, a.draft);
                }))
            }
            commands::DRAFT => {
                let a: PatientArgs = decode(cmd, args)?;
                answer(
                    self.unlocked()
                        .map(|()| self.drafts.get(&a.patient_id).cloned()),
                )
            }
            other => {
                self.unanswered.push(other.to_owned());
                Err(Rejection::Plain(format!("command {other} not found")))
            }
        }
    }

    fn user() -> UserSummary {
        UserSummary {
            username: USERNAME.to_owned(),
            display_name: "Kate Ahmed".to_owned(),
            role: "nurse".to_owned(),
            service: "Riverside District Nursing".to_owned(),
        }
    }

    fn app_state(&self) -> AppState {
        match self.phase {
            Phase::NotEnrolled => AppState::NotEnrolled {
                server_url: Some(SERVER_URL.to_owned()),
            },
            Phase::Locked => AppState::Locked {
                username: USERNAME.to_owned(),
                server_url: SERVER_URL.to_owned(),
            },
            Phase::Unlocked => AppState::Unlocked { user: Self::user() },
        }
    }

    fn unlocked(&self) -> Result<(), Rejection> {
        match self.phase {
            Phase::Unlocked => Ok(()),
            Phase::Locked => Err(ClientError::Locked.into()),
            Phase::NotEnrolled => Err(ClientError::NotEnrolled("the fake device".into()).into()),
        }
    }

    /// Records are shown only within the offline age.
    fn within_offline_age(&self) -> Result<(), Rejection> {
        self.unlocked()?;
        if self.offline_too_long {
            return Err(ClientError::OfflineTooLong {
                last_contact: Some(self.last_contact),
                max_hours: MAX_OFFLINE_HOURS,
            }
            .into());
        }
        Ok(())
    }

    fn check_sign_in(&self, password: &str, totp: &str) -> Result<(), Rejection> {
        if !self.server_reachable {
            return Err(ClientError::Offline("connection refused".into()).into());
        }
        let code_ok = totp.len() == 6 && totp.chars().all(|c| c.is_ascii_digit());
        if password != PASSWORD || !code_ok {
            return Err(ClientError::SignInFailed(
                "The username, password or authenticator code is not right.".into(),
            )
            .into());
        }
        Ok(())
    }

    fn enrol(&mut self, form: &EnrolForm) -> Result<AppState, Rejection> {
        if !form.server_url.starts_with("https://") {
            return Err(ClientError::Invalid(format!(
                "The server address must start with https:// (not {:?}).",
                form.server_url
            ))
            .into());
        }
        if let Some(problem) = doorstep_ipc::pin::pin_problem(form.pin.expose()) {
            return Err(ClientError::Invalid(problem).into());
        }
        if form.username != USERNAME {
            return Err(ClientError::SignInFailed(
                "The username, password or authenticator code is not right.".into(),
            )
            .into());
        }
        self.check_sign_in(form.password.expose(), form.totp.expose())?;
        self.pin = form.pin.expose().to_owned();
        self.phase = Phase::Unlocked;
        self.wrong_pins = 0;
        self.online_required = false;
        self.contact();
        Ok(self.app_state())
    }

    fn unlock(&mut self, pin: &str) -> Result<AppState, Rejection> {
        if self.phase != Phase::Locked {
            return Ok(self.app_state());
        }
        if self.online_required {
            return Err(ClientError::OnlineSignInRequired { wipe_in: PIN_TRIES }.into());
        }
        if pin != self.pin {
            self.wrong_pins += 1;
            if self.wrong_pins >= PIN_TRIES {
                self.online_required = true;
                return Err(ClientError::OnlineSignInRequired { wipe_in: PIN_TRIES }.into());
            }
            return Err(ClientError::WrongPin {
                remaining: PIN_TRIES - self.wrong_pins,
            }
            .into());
        }
        self.wrong_pins = 0;
        self.phase = Phase::Unlocked;
        Ok(self.app_state())
    }

    fn unlock_online(
        &mut self,
        pin: &str,
        password: &str,
        totp: &str,
    ) -> Result<AppState, Rejection> {
        self.check_sign_in(password, totp)?;
        if pin != self.pin {
            return Err(ClientError::OnlineSignInRequired {
                wipe_in: PIN_TRIES - 1,
            }
            .into());
        }
        self.online_required = false;
        self.wrong_pins = 0;
        self.phase = Phase::Unlocked;
        self.contact();
        Ok(self.app_state())
    }

    fn sign_in_online(&mut self, password: &str, totp: &str) -> Result<(), Rejection> {
        self.unlocked()?;
        self.check_sign_in(password, totp)?;
        self.contact();
        Ok(())
    }

    /// The device reached the server.
    fn contact(&mut self) {
        self.offline_too_long = false;
        self.last_contact = Utc::now();
    }

    fn sorted_rows(&self, search: Option<&str>) -> Vec<ListRow> {
        let mut rows: Vec<ListRow> = self
            .patients
            .iter()
            .map(|p| p.row.clone())
            .filter(|row| search.is_none_or(|q| matches_search(row, q)))
            .collect();
        rows.sort_by_key(|r| (!r.today, r.starts_at));
        rows
    }

    fn list(&self, search: Option<&str>, limit: Option<u32>) -> Result<ListPage, Rejection> {
        self.within_offline_age()?;
        let mut rows = self.sorted_rows(search.filter(|q| !q.trim().is_empty()));
        let total = rows.len() as u32;
        if let Some(limit) = limit {
            rows.truncate(limit as usize);
        }
        Ok(ListPage { rows, total })
    }

    fn patient(&self, patient_id: &str) -> Result<&FakePatient, Rejection> {
        self.patients
            .iter()
            .find(|p| p.row.patient_id == patient_id)
            .ok_or_else(|| {
                ClientError::NotFound("This patient is not on this device.".into()).into()
            })
    }

    fn record(&self, patient_id: &str) -> Result<PatientRecord, Rejection> {
        self.within_offline_age()?;
        let mut record = self.patient(patient_id)?.record.clone();
        record.as_of = self.last_synced;
        Ok(record)
    }

    fn viewed(&self, patient_id: &str, section: &str) -> Result<(), Rejection> {
        self.unlocked()?;
        self.patient(patient_id)?;
        if doorstep_record::Section::parse(section).is_none() {
            return Err(
                ClientError::Invalid(format!("{section:?} is not a record section")).into(),
            );
        }
        Ok(())
    }

    fn break_glass_reason(reason: &str, reason_text: Option<&str>) -> Result<(), Rejection> {
        let known = [
            "emergency_treatment",
            "patient_unconscious",
            "patient_consented",
            "other",
        ];
        if !known.contains(&reason) {
            return Err(ClientError::Invalid(
                "Choose the reason for emergency access first.".into(),
            )
            .into());
        }
        if reason == "other" && reason_text.is_none_or(|t| t.trim().is_empty()) {
            return Err(ClientError::Invalid(
                "Say in your own words why you need emergency access.".into(),
            )
            .into());
        }
        Ok(())
    }

    fn break_glass_search(&self, form: &BreakGlassForm) -> Result<Vec<BreakGlassMatch>, Rejection> {
        self.unlocked()?;
        if !self.server_reachable {
            return Err(ClientError::Offline("connection refused".into()).into());
        }
        Self::break_glass_reason(&form.reason, form.reason_text.as_deref())?;
        let found: Vec<&FakePatient> = match (&form.nhs_number, &form.family, &form.birth_date) {
            (Some(nhs), _, _) => {
                let nhs = NhsNumber::parse(nhs)
                    .map_err(|e| ClientError::Invalid(format!("NHS number: {e}")))?;
                self.off_list
                    .iter()
                    .filter(|p| p.row.nhs_number == nhs.digits())
                    .collect()
            }
            (None, Some(family), Some(born)) => {
                let born = parse_birth_date(born).ok_or_else(|| {
                    ClientError::Invalid(format!(
                        "Date of birth: {born:?} is not a date (DD/MM/YYYY)"
                    ))
                })?;
                self.off_list
                    .iter()
                    .filter(|p| {
                        p.record
                            .view
                            .patient
                            .family
                            .eq_ignore_ascii_case(family.trim())
                            && p.row.birth_date == Some(born)
                    })
                    .collect()
            }
            _ => {
                return Err(ClientError::Invalid(
                    "Give an NHS number, or a family name and a date of birth.".into(),
                )
                .into());
            }
        };
        Ok(found
            .into_iter()
            .map(|p| BreakGlassMatch {
                patient_id: p.row.patient_id.clone(),
                name: p.row.name.clone(),
                birth_date: p.row.birth_date,
                nhs_number_display: p.row.nhs_number_display.clone(),
                practice_name: p.row.practice_name.clone(),
            })
            .collect())
    }

    fn break_glass(
        &mut self,
        patient_id: &str,
        reason: &str,
        reason_text: Option<&str>,
    ) -> Result<BreakGlassGrant, Rejection> {
        self.unlocked()?;
        Self::break_glass_reason(reason, reason_text)?;
        let at = self
            .off_list
            .iter()
            .position(|p| p.row.patient_id == patient_id)
            .ok_or_else(|| {
                Rejection::from(ClientError::NotFound(
                    "No such patient within your service's emergency access.".into(),
                ))
            })?;
        let mut patient = self.off_list.remove(at);
        let ends_at = Utc::now() + chrono::Duration::hours(24);
        patient.row.list_kind = "break_glass".into();
        patient.row.today = true;
        patient.row.starts_at = Utc::now();
        patient.row.ends_at = Some(ends_at);
        patient.record.break_glass_until = Some(ends_at);
        patient.record.list_reason = "Emergency access".into();
        self.patients.push(patient);
        Ok(BreakGlassGrant {
            patient_id: patient_id.to_owned(),
            ends_at,
        })
    }

    fn status(&self) -> SyncStatus {
        SyncStatus {
            server_url: SERVER_URL.to_owned(),
            last_synced: Some(self.last_synced),
            server_reachable: Some(self.server_reachable),
            patients: self.patients.len() as u32,
            waiting: self
                .notes
                .iter()
                .filter(|n| n.state == NoteState::Waiting)
                .count() as u32,
            last_error: self.last_error.clone(),
            last_push_error: None,
            syncing: false,
            rebuilding_since: None,
            idle_lock_secs: self.idle_lock_secs,
            last_sync: Some(SyncSummary {
                at: self.last_synced,
                patients_added: 1,
                items_updated: 14,
                items_removed: 2,
                other_changes: 1,
                sent: 3,
                refused: 1,
                duration_ms: 840,
                ..SyncSummary::default()
            }),
        }
    }

    fn sync_now(&mut self) -> Result<SyncStatus, Rejection> {
        self.unlocked()?;
        if self.server_reachable {
            let now = Utc::now();
            self.contact();
            self.last_synced = now;
            self.last_error = None;
            for note in &mut self.notes {
                if note.state == NoteState::Waiting {
                    note.state = NoteState::Accepted { at: now };
                }
            }
        } else {
            self.last_error = Some(
                ClientError::Offline("error sending request: connection refused".into())
                    .to_string(),
            );
        }
        Ok(self.status())
    }

    fn write_note(&mut self, patient_id: &str, note: &NoteForm) -> Result<NoteSummary, Rejection> {
        self.unlocked()?;
        self.patient(patient_id)?;
        if note.text.trim().is_empty() {
            return Err(ClientError::Invalid("The note is empty: write it first.".into()).into());
        }
        let news2 = match &note.vitals {
            None => None,
            Some(v) => {
                v.check().map_err(|errors| {
                    let words: Vec<String> = errors.iter().map(ToString::to_string).collect();
                    ClientError::Invalid(words.join("; "))
                })?;
                let score = doorstep_record::news2::score(v);
                Some(format!(
                    "NEWS2 {}{} ({})",
                    score.total,
                    if score.complete { "" } else { ", partial" },
                    score.band.label()
                ))
            }
        };
        let problem = match &note.problem {
            None => None,
            Some(code) => {
                let display = doorstep_record::problems::display_of(code).ok_or_else(|| {
                    ClientError::Invalid(format!("{code} is not on the problem pick list"))
                })?;
                Some(format!("{code} {display}"))
            }
        };
        let summary = NoteSummary {
            id: format!("note-{}", self.notes.len() + 1),
            patient_id: patient_id.to_owned(),
            signed_at: Utc::now(),
            text: note.text.clone(),
            news2,
            problem,
            replaces: note.replaces.clone(),
            state: NoteState::Waiting,
        };
        self.notes.push(summary.clone());
        self.drafts.remove(patient_id);
        Ok(summary)
    }

    fn notes_of(&self, patient_id: Option<&str>) -> Result<Vec<NoteSummary>, Rejection> {
        self.unlocked()?;
        Ok(self
            .notes
            .iter()
            .filter(|n| patient_id.is_none_or(|p| n.patient_id == p))
            .cloned()
            .collect())
    }

    fn change_pin(&mut self, old_pin: &str, new_pin: &str) -> Result<(), Rejection> {
        self.unlocked()?;
        if let Some(problem) = doorstep_ipc::pin::pin_problem(new_pin) {
            return Err(ClientError::Invalid(problem).into());
        }
        if old_pin != self.pin {
            self.wrong_pins += 1;
            return Err(ClientError::WrongPin {
                remaining: PIN_TRIES.saturating_sub(self.wrong_pins),
            }
            .into());
        }
        self.wrong_pins = 0;
        new_pin.clone_into(&mut self.pin);
        Ok(())
    }

    /// As the device: refused while a note waits.
    fn sign_out(&mut self) -> Result<AppState, Rejection> {
        self.unlocked()?;
        let notes = self
            .notes
            .iter()
            .filter(|n| n.state == NoteState::Waiting)
            .count() as u32;
        if notes > 0 {
            return Err(ClientError::ItemsWaiting { notes, views: 0 }.into());
        }
        self.phase = Phase::NotEnrolled;
        Ok(self.app_state())
    }
}

/// `YYYY-MM-DD` or `DD/MM/YYYY`.
fn parse_birth_date(text: &str) -> Option<NaiveDate> {
    let text = text.trim();
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .or_else(|_| NaiveDate::parse_from_str(text, "%d/%m/%Y"))
        .ok()
}

/// The list's search: a part of the name, the NHS number's digits, the start of the postcode,
/// or the date of birth.
fn matches_search(row: &ListRow, query: &str) -> bool {
    let q = query.trim().to_lowercase();
    let squeezed: String = q.chars().filter(|c| !c.is_whitespace()).collect();
    if squeezed.is_empty() {
        return true;
    }
    row.name.to_lowercase().contains(&q)
        || (squeezed.chars().all(|c| c.is_ascii_digit()) && row.nhs_number.contains(&squeezed))
        || row
            .postcode
            .as_deref()
            .is_some_and(|p| p.to_lowercase().replace(' ', "").starts_with(&squeezed))
        || parse_birth_date(&q).is_some_and(|d| row.birth_date == Some(d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_caseload_has_two_patients_of_one_name_with_valid_test_nhs_numbers() {
        let state = ShellState::new(Start::Locked);
        let rows = state.sorted_rows(None);
        assert!(rows.len() >= 8, "{} rows", rows.len());
        for row in &rows {
            let nhs = NhsNumber::parse(&row.nhs_number).expect("a valid NHS number");
            assert!(nhs.is_test_range(), "{}", row.nhs_number);
        }
        let jones: Vec<&ListRow> = rows
            .iter()
            .filter(|r| r.name == "JONES, David (Mr)")
            .collect();
        assert_eq!(jones.len(), 2);
        assert_ne!(jones[0].birth_date, jones[1].birth_date);
        assert_ne!(jones[0].nhs_number, jones[1].nhs_number);
    }

    #[test]
    fn a_wrong_pin_warns_then_asks_for_an_online_sign_in() {
        let mut state = ShellState::new(Start::Locked);
        let Err(Rejection::Ipc(e)) = state.unlock("0000") else {
            panic!("a wrong PIN unlocked");
        };
        assert_eq!(e.kind, doorstep_ipc::IpcErrorKind::WrongPin);
        assert!(e.message.contains("4 more"), "{}", e.message);
        for _ in 0..4 {
            let _ = state.unlock("0000");
        }
        let Err(Rejection::Ipc(e)) = state.unlock(PIN) else {
            panic!("the right PIN unlocked after too many wrong ones");
        };
        assert_eq!(e.kind, doorstep_ipc::IpcErrorKind::OnlineSignInRequired);
        assert!(state.unlock_online(PIN, PASSWORD, "123456").is_ok());
        assert_eq!(state.phase, Phase::Unlocked);
    }

    #[test]
    fn past_the_offline_age_no_list_and_no_record_until_a_sync() {
        let mut state = ShellState::new(Start::Locked);
        state.unlock(PIN).ok().unwrap();
        state.offline_too_long = true;
        assert!(
            matches!(state.list(None, None), Err(Rejection::Ipc(e)) if e.kind == doorstep_ipc::IpcErrorKind::OfflineTooLong)
        );
        assert!(state.record("fake-evans").is_err());
        state.sync_now().ok().unwrap();
        assert!(state.record("fake-evans").is_ok());
    }

    #[test]
    fn search_finds_by_name_nhs_number_postcode_and_birth_date() {
        let state = ShellState::new(Start::Locked);
        let evans = state
            .sorted_rows(None)
            .into_iter()
            .find(|r| r.patient_id == "fake-evans")
            .unwrap();
        for q in ["evans", &evans.nhs_number_display, "ls1 4", "20/11/1941"] {
            let found = state.sorted_rows(Some(q));
            assert!(found.iter().any(|r| r.patient_id == "fake-evans"), "{q}");
        }
        assert_eq!(state.sorted_rows(Some("jones")).len(), 2);
    }

    #[test]
    fn break_glass_finds_one_of_two_of_a_family_by_birth_date_and_puts_them_on_the_list() {
        let mut state = ShellState::new(Start::Locked);
        state.unlock(PIN).ok().unwrap();
        let form = BreakGlassForm {
            nhs_number: None,
            family: Some("Hughes".into()),
            birth_date: Some("01/10/1960".into()),
            reason: "patient_unconscious".into(),
            reason_text: None,
        };
        let found = state.break_glass_search(&form).ok().unwrap();
        assert_eq!(found.len(), 1);
        let grant = state
            .break_glass(&found[0].patient_id, "patient_unconscious", None)
            .ok()
            .unwrap();
        let record = state.record(&grant.patient_id).ok().unwrap();
        assert_eq!(record.break_glass_until, Some(grant.ends_at));
    }
}
