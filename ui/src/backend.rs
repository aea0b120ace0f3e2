//! The one place where the UI talks to the shell.
//!
//! Every screen goes through [`Backend`]: one typed async method per command of
//! [`doorstep_ipc::commands`], with the argument and answer types of `doorstep-ipc`. Nothing else
//! in the UI calls Tauri `invoke`, builds command names or (de)serialises IPC payloads, so the
//! contract with the shell lives in exactly one file on each side.

use doorstep_ipc::{
    AppState, BreakGlassForm, BreakGlassGrant, BreakGlassMatch, DeviceInfo, EnrolForm, IpcError,
    IpcErrorKind, ListPage, NoteForm, NoteSummary, PatientRecord, SyncStatus, commands,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use wasm_bindgen::prelude::*;

#[wasm_bindgen]
extern "C" {
    /// Tauri v2's IPC entry point. `app.withGlobalTauri` is off, so this internal object is the
    /// only handle the page has; it exists only inside the Doorstep window.
    #[wasm_bindgen(js_namespace = ["window", "__TAURI_INTERNALS__"], js_name = invoke, catch)]
    async fn tauri_invoke(cmd: &str, args: JsValue) -> Result<JsValue, JsValue>;
}

#[derive(Serialize)]
struct NoArgs {}

#[derive(Serialize)]
struct EnrolArgs<'a> {
    form: &'a EnrolForm,
}

#[derive(Serialize)]
struct UnlockArgs<'a> {
    pin: &'a str,
}

#[derive(Serialize)]
struct UnlockOnlineArgs<'a> {
    pin: &'a str,
    password: &'a str,
    totp: &'a str,
}

#[derive(Serialize)]
struct SignInArgs<'a> {
    password: &'a str,
    totp: &'a str,
}

#[derive(Serialize)]
struct ListArgs<'a> {
    search: Option<&'a str>,
    limit: Option<u32>,
}

#[derive(Serialize)]
struct RecordArgs<'a> {
    patient_id: &'a str,
}

#[derive(Serialize)]
struct BreakGlassSearchArgs<'a> {
    form: &'a BreakGlassForm,
}

#[derive(Serialize)]
struct BreakGlassArgs<'a> {
    patient_id: &'a str,
    reason: &'a str,
    reason_text: Option<&'a str>,
}

#[derive(Serialize)]
struct ViewedArgs<'a> {
    patient_id: &'a str,
    section: &'a str,
}

#[derive(Serialize)]
struct WriteNoteArgs<'a> {
    patient_id: &'a str,
    note: &'a NoteForm,
}

#[derive(Serialize)]
struct NotesArgs<'a> {
    patient_id: Option<&'a str>,
}

#[derive(Serialize)]
struct ChangePinArgs<'a> {
    old_pin: &'a str,
    new_pin: &'a str,
}

#[derive(Serialize)]
struct DraftArgs<'a> {
    patient_id: &'a str,
    draft: &'a str,
}

/// The typed client of the shell's commands.
#[derive(Debug, Clone, Copy, Default)]
pub struct Backend;

impl Backend {
    pub async fn app_state(&self) -> Result<AppState, IpcError> {
        call(commands::APP_STATE, &NoArgs {}).await
    }

    pub async fn enrol(&self, form: &EnrolForm) -> Result<AppState, IpcError> {
        call(commands::ENROL, &EnrolArgs { form }).await
    }

    pub async fn unlock(&self, pin: &str) -> Result<AppState, IpcError> {
        call(commands::UNLOCK, &UnlockArgs { pin }).await
    }

    pub async fn unlock_online(
        &self,
        pin: &str,
        password: &str,
        totp: &str,
    ) -> Result<AppState, IpcError> {
        call(
            commands::UNLOCK_ONLINE,
            &UnlockOnlineArgs {
                pin,
                password,
                totp,
            },
        )
        .await
    }

    /// While unlocked, past the maximum offline age: sign in online so that records show again.
    pub async fn sign_in_online(&self, password: &str, totp: &str) -> Result<(), IpcError> {
        call(commands::SIGN_IN_ONLINE, &SignInArgs { password, totp }).await
    }

    pub async fn lock(&self) -> Result<AppState, IpcError> {
        call(commands::LOCK, &NoArgs {}).await
    }

    /// The first `limit` rows of the list (all when `None`) and how many there are.
    pub async fn list_patients(
        &self,
        search: Option<&str>,
        limit: Option<u32>,
    ) -> Result<ListPage, IpcError> {
        call(commands::LIST_PATIENTS, &ListArgs { search, limit }).await
    }

    pub async fn patient_record(&self, patient_id: &str) -> Result<PatientRecord, IpcError> {
        call(commands::PATIENT_RECORD, &RecordArgs { patient_id }).await
    }

    pub async fn record_viewed(&self, patient_id: &str, section: &str) -> Result<(), IpcError> {
        call(
            commands::RECORD_VIEWED,
            &ViewedArgs {
                patient_id,
                section,
            },
        )
        .await
    }

    pub async fn break_glass_search(
        &self,
        form: &BreakGlassForm,
    ) -> Result<Vec<BreakGlassMatch>, IpcError> {
        call(commands::BREAK_GLASS_SEARCH, &BreakGlassSearchArgs { form }).await
    }

    pub async fn break_glass(
        &self,
        patient_id: &str,
        reason: &str,
        reason_text: Option<&str>,
    ) -> Result<BreakGlassGrant, IpcError> {
        call(
            commands::BREAK_GLASS,
            &BreakGlassArgs {
                patient_id,
                reason,
                reason_text,
            },
        )
        .await
    }

    pub async fn sync_now(&self) -> Result<SyncStatus, IpcError> {
        call(commands::SYNC_NOW, &NoArgs {}).await
    }

    pub async fn sync_status(&self) -> Result<SyncStatus, IpcError> {
        call(commands::SYNC_STATUS, &NoArgs {}).await
    }

    pub async fn write_note(
        &self,
        patient_id: &str,
        note: &NoteForm,
    ) -> Result<NoteSummary, IpcError> {
        call(commands::WRITE_NOTE, &WriteNoteArgs { patient_id, note }).await
    }

    /// One patient's notes, or (with `None`) every note written on this device.
    pub async fn notes(&self, patient_id: Option<&str>) -> Result<Vec<NoteSummary>, IpcError> {
        call(commands::NOTES, &NotesArgs { patient_id }).await
    }

    pub async fn device_info(&self) -> Result<DeviceInfo, IpcError> {
        call(commands::DEVICE_INFO, &NoArgs {}).await
    }

    pub async fn change_pin(&self, old_pin: &str, new_pin: &str) -> Result<(), IpcError> {
        call(commands::CHANGE_PIN, &ChangePinArgs { old_pin, new_pin }).await
    }

    /// Wipes the device (refused while anything waits to be sent).
    pub async fn sign_out(&self) -> Result<AppState, IpcError> {
        call(commands::SIGN_OUT, &NoArgs {}).await
    }

    pub async fn save_draft(&self, patient_id: &str, draft: &str) -> Result<(), IpcError> {
        call(commands::SAVE_DRAFT, &DraftArgs { patient_id, draft }).await
    }

    pub async fn draft(&self, patient_id: &str) -> Result<Option<String>, IpcError> {
        call(commands::DRAFT, &RecordArgs { patient_id }).await
    }
}

async fn call<A: Serialize, T: DeserializeOwned>(cmd: &str, args: &A) -> Result<T, IpcError> {
    // JSON-compatible: maps become plain objects and `None` becomes `null`, as Tauri expects.
    let serializer = serde_wasm_bindgen::Serializer::json_compatible();
    let args = args.serialize(&serializer).map_err(|e| {
        IpcError::new(
            IpcErrorKind::Internal,
            format!("could not encode the request: {e}"),
        )
    })?;
    match tauri_invoke(cmd, args).await {
        Ok(answer) => serde_wasm_bindgen::from_value(answer).map_err(|e| {
            IpcError::new(
                IpcErrorKind::Internal,
                format!("unexpected answer from the app: {e}"),
            )
        }),
        Err(err) => Err(ipc_error_from(err)),
    }
}

/// The shell rejects with a serialised `IpcError`; Tauri itself rejects with a plain string
/// (for example a command the window is not permitted to call); outside the Doorstep window the
/// call throws a `TypeError`.
fn ipc_error_from(err: JsValue) -> IpcError {
    if let Ok(e) = serde_wasm_bindgen::from_value::<IpcError>(err.clone()) {
        return e;
    }
    if let Some(text) = err.as_string() {
        return IpcError::new(IpcErrorKind::Internal, text);
    }
    if let Some(e) = err.dyn_ref::<js_sys::Error>() {
        return IpcError::new(
            IpcErrorKind::Internal,
            format!(
                "the Doorstep app shell is not available ({})",
                String::from(e.message())
            ),
        );
    }
    IpcError::new(IpcErrorKind::Internal, "unexpected error from the app")
}
