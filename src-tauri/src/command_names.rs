// The Tauri commands the shell exposes, by name. `build.rs` includes this file to generate one
// `allow-<command>` permission per command (so the window's capability can grant exactly these),
// and a unit test checks it against `doorstep_ipc::commands` and capabilities/main.json.

/// Every command of `doorstep_ipc::commands`, in the same order.
pub const COMMANDS: &[&str] = &[
    "app_state",
    "enrol",
    "unlock",
    "unlock_online",
    "lock",
    "list_patients",
    "patient_record",
    "sync_now",
    "sync_status",
    "write_note",
    "notes",
    "save_draft",
    "draft",
    "record_viewed",
    "break_glass_search",
    "break_glass",
    "sign_in_online",
    "device_info",
    "change_pin",
    "sign_out",
];
