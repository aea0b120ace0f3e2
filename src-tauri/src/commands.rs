//! The Tauri commands: one per name in [`doorstep_ipc::commands`], each answering
//! `Result<T, IpcError>` with the `doorstep-ipc` types. They translate, and nothing more: the
//! work is in `doorstep-client`.
//!
//! Arguments arrive with the snake_case names of the IPC contract (`patient_id`), hence
//! `rename_all = "snake_case"`. Blocking work (Argon2 on unlock, SQLCipher queries) runs on the
//! blocking pool, never on the async workers. Nothing here logs patient data, and PINs,
//! passwords and codes arrive as [`Secret`]s (redacted in `Debug`, zeroed on drop).

use std::sync::Arc;

use doorstep_client::{Device, DeviceFile, EnrolParams, Secret, is_enrolled};
use doorstep_ipc::{
    AppState, BreakGlassForm, BreakGlassGrant, BreakGlassMatch, DeviceInfo, EnrolForm, IpcError,
    IpcErrorKind, ListPage, NoteForm, NoteSummary, PatientRecord, SyncStatus,
};
use tauri::State;

use crate::shell::Shell;

type Answer<T> = Result<T, IpcError>;

/// Runs blocking device work off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, doorstep_client::ClientError> + Send + 'static,
) -> Answer<T> {
    tauri::async_runtime::spawn_blocking(f)
        .await
        .map_err(|e| {
            IpcError::new(
                IpcErrorKind::Internal,
                format!("background task failed: {e}"),
            )
        })?
        .map_err(|e| e.to_ipc())
}

/// Where the app is, for the UI to choose its screen.
pub fn current_state(shell: &Shell) -> Answer<AppState> {
    if let Ok(device) = shell.device() {
        return Ok(AppState::Unlocked {
            user: device.user(),
        });
    }
    if is_enrolled(shell.data_dir()) {
        let file = DeviceFile::read(shell.data_dir()).map_err(|e| e.to_ipc())?;
        return Ok(AppState::Locked {
            username: file.username,
            server_url: file.server_url,
        });
    }
    Ok(AppState::NotEnrolled {
        server_url: shell.options().server_url.clone(),
    })
}

/// Also the UI's activity ping: it calls this on user input, which restarts the idle timer.
#[tauri::command(rename_all = "snake_case")]
pub async fn app_state(shell: State<'_, Shell>) -> Answer<AppState> {
    shell.touch();
    current_state(&shell)
}

#[tauri::command(rename_all = "snake_case")]
pub async fn enrol(shell: State<'_, Shell>, form: EnrolForm) -> Answer<AppState> {
    shell.touch();
    // A new enrolment replaces the cache: close any open one first.
    shell.lock()?;
    let params = EnrolParams {
        server_url: form.server_url,
        ca_pem_path: shell.options().ca_pem.clone(),
        username: form.username,
        password: form.password,
        totp: form.totp,
        pin: form.pin,
        device_name: String::new(),
        dev_mode: shell.options().dev_mode,
    };
    let device = Device::enrol(shell.data_dir(), params)
        .await
        .map_err(|e| e.to_ipc())?;
    tracing::info!("device enrolled");
    let device = shell.set_unlocked(device)?;
    Ok(AppState::Unlocked {
        user: device.user(),
    })
}

#[tauri::command(rename_all = "snake_case")]
pub async fn unlock(shell: State<'_, Shell>, pin: Secret) -> Answer<AppState> {
    shell.touch();
    if let Ok(device) = shell.device() {
        return Ok(AppState::Unlocked {
            user: device.user(),
        });
    }
    let dir = shell.data_dir().to_owned();
    let device = blocking(move || Device::unlock(&dir, pin.expose())).await?;
    tracing::info!("unlocked");
    let device = shell.set_unlocked(device)?;
    Ok(AppState::Unlocked {
        user: device.user(),
    })
}

/// After too many wrong PINs: sign in online with password and authenticator code, then the
/// PIN opens the cache (the device keeps its id, cache and outbox).
#[tauri::command(rename_all = "snake_case")]
pub async fn unlock_online(
    shell: State<'_, Shell>,
    pin: Secret,
    password: Secret,
    totp: Secret,
) -> Answer<AppState> {
    shell.touch();
    if let Ok(device) = shell.device() {
        return Ok(AppState::Unlocked {
            user: device.user(),
        });
    }
    let dir = shell.data_dir().to_owned();
    let device =
        Device::unlock_after_sign_in(&dir, pin.expose(), password.expose(), totp.expose()).await?;
    tracing::info!("unlocked after signing in online");
    let device = shell.set_unlocked(device)?;
    Ok(AppState::Unlocked {
        user: device.user(),
    })
}

#[tauri::command(rename_all = "snake_case")]
pub async fn lock(shell: State<'_, Shell>) -> Answer<AppState> {
    shell.lock()?;
    current_state(&shell)
}

/// Past the maximum offline age (`OfflineTooLong`): sign in online with password and
/// authenticator code while unlocked; the records show again.
#[tauri::command(rename_all = "snake_case")]
pub async fn sign_in_online(shell: State<'_, Shell>, password: Secret, totp: Secret) -> Answer<()> {
    shell.touch();
    let device = shell.device()?;
    device
        .sign_in_online(password.expose(), totp.expose())
        .await
        .map_err(|e| e.to_ipc())?;
    tracing::info!("signed in online while unlocked");
    Ok(())
}

#[tauri::command(rename_all = "snake_case")]
pub async fn list_patients(
    shell: State<'_, Shell>,
    search: Option<String>,
    limit: Option<u32>,
) -> Answer<ListPage> {
    shell.touch();
    let device = shell.device()?;
    blocking(move || {
        let search = search.as_deref().map(str::trim).filter(|s| !s.is_empty());
        device.list_page(search, doorstep_client::today(), limit.map(|n| n as usize))
    })
    .await
}

#[tauri::command(rename_all = "snake_case")]
pub async fn patient_record(shell: State<'_, Shell>, patient_id: String) -> Answer<PatientRecord> {
    shell.touch();
    let device = shell.device()?;
    blocking(move || device.record(&patient_id, doorstep_client::today()))
        .await?
        .ok_or_else(|| {
            IpcError::new(
                IpcErrorKind::NotFound,
                "This patient is no longer on your list.",
            )
        })
}

/// The clinician opened the record (`summary`) or one of its sections: an outbox item the
/// server audits after the next push, with this device's time and whether it was offline.
#[tauri::command(rename_all = "snake_case")]
pub async fn record_viewed(
    shell: State<'_, Shell>,
    patient_id: String,
    section: String,
) -> Answer<()> {
    shell.touch();
    let device = shell.device()?;
    blocking(move || device.record_viewed(&patient_id, &section)).await
}

/// Find a patient who is not on the list, for emergency access (online only; the reason
/// first).
#[tauri::command(rename_all = "snake_case")]
pub async fn break_glass_search(
    shell: State<'_, Shell>,
    form: BreakGlassForm,
) -> Answer<Vec<BreakGlassMatch>> {
    shell.touch();
    let device = shell.device()?;
    Ok(device.break_glass_search(&form).await?)
}

/// Break the glass for a patient found by [`break_glass_search`]: the server raises an alert
/// for the privacy officer, and the device syncs the record down.
#[tauri::command(rename_all = "snake_case")]
pub async fn break_glass(
    shell: State<'_, Shell>,
    patient_id: String,
    reason: String,
    reason_text: Option<String>,
) -> Answer<BreakGlassGrant> {
    shell.touch();
    let device = shell.device()?;
    Ok(device
        .break_glass(&patient_id, &reason, reason_text.as_deref())
        .await?)
}

#[tauri::command(rename_all = "snake_case")]
pub async fn sync_now(shell: State<'_, Shell>) -> Answer<SyncStatus> {
    shell.touch();
    let device = shell.device()?;
    // The outcome (success or the error in words) is recorded in the status the UI shows.
    match device.sync().await {
        Ok(report) => tracing::info!(
            pages = report.pages,
            patients = report.patients,
            duration_ms = report.duration_ms,
            "sync done"
        ),
        Err(e) => tracing::warn!(error = %e, "sync failed"),
    }
    Ok(SyncStatus {
        idle_lock_secs: shell.idle_limit().as_secs(),
        ..status_of(device).await?
    })
}

#[tauri::command(rename_all = "snake_case")]
pub async fn write_note(
    shell: State<'_, Shell>,
    patient_id: String,
    note: NoteForm,
) -> Answer<NoteSummary> {
    shell.touch();
    let device = shell.device()?;
    let vitals = note
        .vitals
        .map(serde_json::to_value)
        .transpose()
        .map_err(|e| IpcError::new(IpcErrorKind::Internal, format!("vital signs: {e}")))?;
    let input = doorstep_client::NoteInput {
        text: note.text,
        vitals,
        problem: note.problem,
        replaces: note.replaces,
    };
    let summary = blocking(move || device.write_note(&patient_id, input)).await?;
    tracing::info!("note signed into the outbox");
    // Send it while there is signal, without waiting for the schedule.
    shell.wake_sync();
    Ok(summary)
}

#[tauri::command(rename_all = "snake_case")]
pub async fn notes(
    shell: State<'_, Shell>,
    patient_id: Option<String>,
) -> Answer<Vec<NoteSummary>> {
    shell.touch();
    let device = shell.device()?;
    blocking(move || device.notes(patient_id.as_deref())).await
}

#[tauri::command(rename_all = "snake_case")]
pub async fn device_info(shell: State<'_, Shell>) -> Answer<DeviceInfo> {
    shell.touch();
    let device = shell.device()?;
    let file = device.device_file();
    Ok(DeviceInfo {
        device_name: file.device_name.clone(),
        device_id: file.device_id.clone(),
        server_url: file.server_url.clone(),
        username: file.username.clone(),
        enrolled_at: file.enrolled_at,
        pinned_ca: file.pinned_ca,
    })
}

/// A new PIN for this device, while unlocked: the old one must be given again.
#[tauri::command(rename_all = "snake_case")]
pub async fn change_pin(shell: State<'_, Shell>, old_pin: Secret, new_pin: Secret) -> Answer<()> {
    shell.touch();
    // Unlocked only: the settings screen is behind the PIN already.
    shell.device()?;
    let dir = shell.data_dir().to_owned();
    blocking(move || Device::change_pin_in(&dir, old_pin.expose(), new_pin.expose())).await?;
    tracing::info!("PIN changed from the window");
    Ok(())
}

/// Sign out and wipe this device (refused while notes or records of access wait to be sent).
#[tauri::command(rename_all = "snake_case")]
pub async fn sign_out(shell: State<'_, Shell>) -> Answer<AppState> {
    shell.touch();
    let device = shell.device()?;
    blocking(move || device.sign_out_and_wipe()).await?;
    shell.lock()?;
    current_state(&shell)
}

#[tauri::command(rename_all = "snake_case")]
pub async fn save_draft(shell: State<'_, Shell>, patient_id: String, draft: String) -> Answer<()> {
    shell.touch();
    let device = shell.device()?;
    blocking(move || device.save_draft(&patient_id, &draft)).await
}

#[tauri::command(rename_all = "snake_case")]
pub async fn draft(shell: State<'_, Shell>, patient_id: String) -> Answer<Option<String>> {
    shell.touch();
    let device = shell.device()?;
    blocking(move || device.draft(&patient_id)).await
}

/// The status poll: not user activity, so it does not restart the idle timer.
#[tauri::command(rename_all = "snake_case")]
pub async fn sync_status(shell: State<'_, Shell>) -> Answer<SyncStatus> {
    let device = shell.device()?;
    let status = SyncStatus {
        idle_lock_secs: shell.idle_limit().as_secs(),
        ..status_of(device.clone()).await?
    };
    if status.syncing {
        // A running sync is itself the reachability test.
        return Ok(status);
    }
    let reachable = device.probe_server().await;
    Ok(SyncStatus {
        server_reachable: Some(reachable),
        ..status
    })
}

async fn status_of(device: Arc<Device>) -> Answer<SyncStatus> {
    blocking(move || device.status()).await
}
