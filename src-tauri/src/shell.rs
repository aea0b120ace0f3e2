//! The shell's state: where the device keeps its files, and the unlocked device, if any.
//!
//! Locking is dropping the [`Device`]: the cache connection closes and SQLCipher wipes the key.
//! Background work (the sync loop) holds only a weak reference, so it can never keep a locked
//! device open beyond the sync or probe it is running.
//!
//! The sync loop follows [`doorstep_client::schedule`]: a sync at unlock, then every five
//! minutes; after a failure, retries with exponential backoff and jitter, probing the server
//! meanwhile so that regained signal starts a sync at once; and a sync now whenever
//! [`Shell::wake_sync`] is called (Sync now, a note signed, the network coming back).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use doorstep_client::Device;
use doorstep_client::schedule::{SyncSchedule, jitter};
use doorstep_ipc::{IpcError, IpcErrorKind};
use tokio::sync::Notify;
/// Overrides the idle lock of the user's agreements, in seconds (for tests and
/// demonstrations; also `--idle-lock-secs`).
pub const IDLE_LOCK_ENV: &str = "DOORSTEP_IDLE_LOCK_SECS";
/// How often the idle timer looks (the window clears itself at the deadline too).
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// Options from the command line.
#[derive(Debug, Clone, Default)]
pub struct LaunchOptions {
    /// Pre-fills the enrol screen.
    pub server_url: Option<String>,
    /// The federation CA to pin at enrolment.
    pub ca_pem: Option<PathBuf>,
    /// `--insecure-dev`: enrolment may go without a pinned CA (development only).
    pub dev_mode: bool,
    /// `--idle-lock-secs`: lock after this long without input, whatever the agreements say
    /// (tests and demonstrations).
    pub idle_lock: Option<Duration>,
}

pub struct Shell {
    data_dir: PathBuf,
    options: LaunchOptions,
    /// The override of the agreements' idle lock, if any.
    idle_lock: Option<Duration>,
    device: RwLock<Option<Arc<Device>>>,
    /// Wakes the unlocked device's sync loop (one per unlock, so a loop of an earlier unlock
    /// never takes the wake-up meant for the current one).
    wake: Mutex<Arc<Notify>>,
    last_activity: Mutex<Instant>,
}

impl Shell {
    pub fn new(data_dir: PathBuf, options: LaunchOptions) -> Shell {
        let idle_lock = options.idle_lock.or_else(|| {
            std::env::var(IDLE_LOCK_ENV)
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .filter(|secs| *secs > 0)
                .map(Duration::from_secs)
        });
        Shell {
            data_dir,
            options,
            idle_lock,
            device: RwLock::new(None),
            wake: Mutex::new(Arc::new(Notify::new())),
            last_activity: Mutex::new(Instant::now()),
        }
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn options(&self) -> &LaunchOptions {
        &self.options
    }

    /// The unlocked device, or the `Locked` error every command answers when there is none.
    /// A device the server revoked (its cache wiped) is dropped here: the UI goes back to the
    /// unlock screen, whose unlock says why there are no records.
    pub fn device(&self) -> Result<Arc<Device>, IpcError> {
        let device = self.device.read().map_err(|_| poisoned())?.clone();
        if device.as_ref().is_some_and(|d| d.is_revoked()) {
            self.lock()?;
            return Err(doorstep_client::ClientError::DeviceRevoked.to_ipc());
        }
        device.ok_or_else(|| {
            IpcError::new(
                IpcErrorKind::Locked,
                "Doorstep is locked. Unlock it with your PIN.",
            )
        })
    }

    pub fn is_unlocked(&self) -> bool {
        self.device.read().map(|d| d.is_some()).unwrap_or(false)
    }

    /// Keeps `device` as the unlocked device and starts its sync loop (which syncs at once).
    pub fn set_unlocked(&self, device: Device) -> Result<Arc<Device>, IpcError> {
        let device = Arc::new(device);
        *self.device.write().map_err(|_| poisoned())? = Some(device.clone());
        let wake = Arc::new(Notify::new());
        *self.wake.lock().map_err(|_| poisoned())? = wake.clone();
        self.touch();
        spawn_sync_loop(Arc::downgrade(&device), wake);
        Ok(device)
    }

    /// Ask the sync loop for a sync now (if one is running, another follows it).
    pub fn wake_sync(&self) {
        if let Ok(wake) = self.wake.lock() {
            wake.notify_one();
        }
    }

    /// Drops the unlocked device: the cache closes and its key leaves memory.
    pub fn lock(&self) -> Result<(), IpcError> {
        let previous = self.device.write().map_err(|_| poisoned())?.take();
        if previous.is_some() {
            tracing::info!("locked");
        }
        Ok(())
    }

    /// The user did something: restart the idle timer.
    pub fn touch(&self) {
        if let Ok(mut t) = self.last_activity.lock() {
            *t = Instant::now();
        }
    }

    /// How long without input before locking: the override, else the unlocked device's
    /// (its agreements' shortest), else the default.
    pub fn idle_limit(&self) -> Duration {
        self.idle_lock.unwrap_or_else(|| {
            self.device()
                .ok()
                .and_then(|d| d.idle_lock().ok())
                .unwrap_or(doorstep_client::DEFAULT_IDLE_LOCK)
        })
    }

    fn idle_for(&self) -> Duration {
        self.last_activity
            .lock()
            .map(|t| t.elapsed())
            .unwrap_or_default()
    }
}

fn poisoned() -> IpcError {
    IpcError::new(IpcErrorKind::Internal, "the app state was poisoned")
}

/// Syncs now, then as [`SyncSchedule`] says, for as long as the device stays unlocked.
fn spawn_sync_loop(device: Weak<Device>, wake: Arc<Notify>) {
    tauri::async_runtime::spawn(async move {
        let mut schedule = SyncSchedule::default();
        loop {
            let Some(d) = device.upgrade() else { break };
            let wait = match d.sync().await {
                Ok(report) => {
                    tracing::info!(
                        pages = report.pages,
                        patients = report.patients,
                        added = report.patients_added,
                        removed = report.patients_removed,
                        duration_ms = report.duration_ms,
                        "background sync done"
                    );
                    schedule.succeeded()
                }
                Err(doorstep_client::ClientError::DeviceRevoked) => {
                    // Wiped: nothing more to sync; the next command drops the device.
                    tracing::warn!("background sync: this device was revoked");
                    break;
                }
                Err(e) => {
                    let wait = schedule.failed(jitter());
                    tracing::warn!(
                        error = %e,
                        failures = schedule.failures(),
                        retry_in_ms = wait.as_millis() as u64,
                        "background sync failed"
                    );
                    wait
                }
            };
            drop(d);
            if !wait_for_next(&device, &wake, &schedule, wait).await {
                break;
            }
        }
    });
}

/// Waits `wait`, or less: until woken, or (while failing) until a probe finds the server.
/// False when the device was locked meanwhile.
async fn wait_for_next(
    device: &Weak<Device>,
    wake: &Notify,
    schedule: &SyncSchedule,
    wait: Duration,
) -> bool {
    let until = tokio::time::Instant::now() + wait;
    loop {
        let left = until.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return true;
        }
        let step = schedule.probe_every(wait).map_or(left, |p| p.min(left));
        tokio::select! {
            _ = tokio::time::sleep(step) => {}
            _ = wake.notified() => return true,
        }
        if step < left {
            let Some(d) = device.upgrade() else {
                return false;
            };
            if d.probe_server().await {
                tracing::info!("the server answers again: syncing");
                return true;
            }
        }
    }
}

/// Locks the device after [`Shell::idle_limit`] without user activity.
/// The UI reports activity by calling commands (it calls `app_state` on input); the status poll does not count.
pub fn spawn_idle_lock(app: tauri::AppHandle) {
    use tauri::Manager;
    tauri::async_runtime::spawn(async move {
        loop {
            tokio::time::sleep(IDLE_CHECK).await;
            let shell = app.state::<Shell>();
            if shell.is_unlocked() && shell.idle_for() >= shell.idle_limit() {
                tracing::info!(idle_secs = shell.idle_for().as_secs(), "idle lock");
                let _ = shell.lock();
            }
        }
    });
}
