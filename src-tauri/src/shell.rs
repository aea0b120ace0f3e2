//! The shell's state: where the device keeps its files, and the unlocked device, if any.
//!
//! Locking is dropping the [`Device`]: the cache connection closes and SQLCipher wipes the key.
//! Background work (the periodic sync) holds only a weak reference, so it can never keep a
//! locked device open beyond the sync it is running.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use doorstep_client::Device;
use doorstep_ipc::{IpcError, IpcErrorKind};

/// How often the device syncs while unlocked.
pub const SYNC_INTERVAL: Duration = Duration::from_secs(5 * 60);
/// Idle time after which the cache locks and the key leaves memory (DESIGN.md section 7).
pub const IDLE_LOCK: Duration = Duration::from_secs(5 * 60);
/// Overrides [`IDLE_LOCK`], in seconds (for tests and demonstrations).
pub const IDLE_LOCK_ENV: &str = "DOORSTEP_IDLE_LOCK_SECS";
/// How often the idle timer looks.
const IDLE_CHECK: Duration = Duration::from_secs(5);

/// Options from the command line.
#[derive(Debug, Clone, Default)]
pub struct LaunchOptions {
    /// Pre-fills the enrol screen.
    pub server_url: Option<String>,
    /// The federation CA to pin at enrolment.
    pub ca_pem: Option<PathBuf>,
}

pub struct Shell {
    data_dir: PathBuf,
    options: LaunchOptions,
    idle_lock: Duration,
    device: RwLock<Option<Arc<Device>>>,
    last_activity: Mutex<Instant>,
}

impl Shell {
    pub fn new(data_dir: PathBuf, options: LaunchOptions) -> Shell {
        let idle_lock = std::env::var(IDLE_LOCK_ENV)
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|secs| *secs > 0)
            .map(Duration::from_secs)
            .unwrap_or(IDLE_LOCK);
        Shell {
            data_dir,
            options,
            idle_lock,
            device: RwLock::new(None),
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
    pub fn device(&self) -> Result<Arc<Device>, IpcError> {
        self.device
            .read()
            .map_err(|_| poisoned())?
            .clone()
            .ok_or_else(|| {
                IpcError::new(
                    IpcErrorKind::Locked,
                    "Doorstep is locked. Unlock it with your PIN.",
                )
            })
    }

    pub fn is_unlocked(&self) -> bool {
        self.device.read().map(|d| d.is_some()).unwrap_or(false)
    }

    /// Keeps `device` as the unlocked device and starts its periodic sync.
    pub fn set_unlocked(&self, device: Device) -> Result<Arc<Device>, IpcError> {
        let device = Arc::new(device);
        *self.device.write().map_err(|_| poisoned())? = Some(device.clone());
        self.touch();
        spawn_periodic_sync(Arc::downgrade(&device));
        Ok(device)
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

/// Syncs now, then every [`SYNC_INTERVAL`], for as long as the device stays unlocked.
fn spawn_periodic_sync(device: Weak<Device>) {
    tauri::async_runtime::spawn(async move {
        loop {
            let Some(d) = device.upgrade() else { break };
            match d.sync().await {
                Ok(report) => tracing::info!(
                    pages = report.pages,
                    patients = report.patients,
                    added = report.patients_added,
                    removed = report.patients_removed,
                    duration_ms = report.duration_ms,
                    "background sync done"
                ),
                Err(e) => tracing::warn!(error = %e, "background sync failed"),
            }
            drop(d);
            tokio::time::sleep(SYNC_INTERVAL).await;
        }
    });
}

/// Locks the device after [`IDLE_LOCK`] (or `$DOORSTEP_IDLE_LOCK_SECS`) without user activity.
/// The UI reports activity by calling commands (it calls `app_state` on input); the status poll does not count.
pub fn spawn_idle_lock(app: tauri::AppHandle) {
    use tauri::Manager;
    tauri::async_runtime::spawn(async move {
        loop {
            tokio::time::sleep(IDLE_CHECK).await;
            let shell = app.state::<Shell>();
            if shell.is_unlocked() && shell.idle_for() >= shell.idle_lock {
                tracing::info!(idle_secs = shell.idle_for().as_secs(), "idle lock");
                let _ = shell.lock();
            }
        }
    });
}
