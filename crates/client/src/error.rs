//! The one error type of the device library, and how each error reaches the UI.

use doorstep_ipc::{IpcError, IpcErrorKind};

/// Everything the device library can fail with. Messages are written for the person at the
/// screen and never carry patient data.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The PIN did not open the cache; `remaining` more and an online sign-in is needed.
    #[error(
        "Wrong PIN. {remaining} more wrong PIN(s) and Doorstep will ask for your password and \
         authenticator code before it opens."
    )]
    WrongPin { remaining: u32 },

    /// Too many wrong PINs (or a missing or altered count): the cache opens only after an
    /// online sign-in with password and authenticator code. `wipe_in` more wrong PINs wipe it.
    #[error(
        "Too many wrong PINs. Sign in online with your password and authenticator code, then \
         your PIN, to open Doorstep on this device. After {wipe_in} more wrong PIN(s) the \
         records on this device are wiped."
    )]
    OnlineSignInRequired { wipe_in: u32 },

    /// The cache was wiped after too many wrong PINs.
    #[error(
        "After too many wrong PINs Doorstep wiped the records on this device, with any notes \
         written on it that had not been sent. Enrol it again \
         with your password and authenticator code."
    )]
    CacheWiped,

    /// The server answered 403 `device_revoked`: the cache (records, tokens and any notes not
    /// yet sent) was wiped. The device can be enrolled again, as a new device.
    #[error(
        "This device was revoked by your service; its records were removed, with any notes \
         written on it that had not been sent. Ask your service before enrolling it again."
    )]
    DeviceRevoked,

    /// Longer than the agreements allow since the device last reached the server: no list
    /// and no record until a sync or an online sign-in (see `crate::offline`).
    #[error(
        "{}, more than {max_hours} hours ago: longer than your sharing agreements allow records \
         to be shown without reaching it. Connect and sync, or sign in online with your \
         password and authenticator code, to see records again. Notes waiting to be sent are \
         kept, and are sent when the device reaches the server.",
        last_contact_text(.last_contact)
    )]
    OfflineTooLong {
        last_contact: Option<chrono::DateTime<chrono::Utc>>,
        max_hours: u32,
    },

    /// The server refused the sign-in or the device's tokens; the server's own words.
    #[error("{0}")]
    SignInFailed(String),

    /// The server could not be reached (no network, refused, timed out).
    #[error("The server could not be reached: {0}")]
    Offline(String),

    /// A wrong argument: bad server address, PIN, NHS number, certificate file.
    #[error("{0}")]
    Invalid(String),

    /// No enrolment in this data directory.
    #[error("This device is not enrolled yet (no device.json in {0}). Enrol it first.")]
    NotEnrolled(String),

    /// The thing asked for is not in the cache.
    #[error("{0}")]
    NotFound(String),

    /// The cache is locked: unlock it first. Raised by callers that hold no unlocked device.
    #[error("Doorstep is locked. Unlock it with your PIN.")]
    Locked,
    /// Signing out would wipe items not yet sent.
    #[error("{}", items_waiting_text(*notes, *views))]
    ItemsWaiting { notes: u32, views: u32 },

    /// The server answered something this device did not expect.
    #[error("The server answered with an error: {0}")]
    Server(String),

    /// An answer was larger than the device accepts (inflated): refused before any of it was
    /// applied. Not retried: the same answer would come again.
    #[error(
        "The server's answer was larger than this device accepts ({} MiB at most); nothing \
         of it was applied. Tell your service's support.",
        .limit / (1024 * 1024)
    )]
    AnswerTooLarge { limit: usize },

    /// The encrypted cache failed.
    #[error("The local cache failed: {0}")]
    Cache(#[from] rusqlite::Error),

    /// A file in the data directory could not be read or written.
    #[error("A file of this device could not be read or written: {0}")]
    Io(#[from] std::io::Error),

    /// Anything else.
    #[error("{0}")]
    Internal(String),
}

impl ClientError {
    /// The error as the UI receives it.
    pub fn to_ipc(&self) -> IpcError {
        let kind = match self {
            ClientError::WrongPin { .. } => IpcErrorKind::WrongPin,
            ClientError::OnlineSignInRequired { .. } => IpcErrorKind::OnlineSignInRequired,
            ClientError::CacheWiped => IpcErrorKind::Wiped,
            ClientError::DeviceRevoked => IpcErrorKind::DeviceRevoked,
            ClientError::OfflineTooLong { .. } => IpcErrorKind::OfflineTooLong,
            ClientError::SignInFailed(_) => IpcErrorKind::SignInFailed,
            ClientError::Offline(_) => IpcErrorKind::Offline,
            ClientError::Invalid(_)
            | ClientError::NotEnrolled(_)
            | ClientError::ItemsWaiting { .. } => IpcErrorKind::Invalid,
            ClientError::NotFound(_) => IpcErrorKind::NotFound,
            ClientError::Locked => IpcErrorKind::Locked,
            ClientError::Server(_)
            | ClientError::AnswerTooLarge { .. }
            | ClientError::Cache(_)
            | ClientError::Io(_)
            | ClientError::Internal(_) => IpcErrorKind::Internal,
        };
        IpcError::new(kind, self.to_string())
    }

    /// True for failures worth retrying after a pause: no connection, timeouts, 5xx, 429.
    pub(crate) fn is_transient(&self) -> bool {
        matches!(self, ClientError::Offline(_) | ClientError::Server(_))
    }
}

/// "2 notes and 1 record of access have not reached the server yet. ..."
fn items_waiting_text(notes: u32, views: u32) -> String {
    let count = |n: u32, one: &str, many: &str| match n {
        1 => format!("1 {one}"),
        n => format!("{n} {many}"),
    };
    let what = match (notes, views) {
        (0, v) => count(v, "record of access", "records of access"),
        (n, 0) => count(n, "note", "notes"),
        (n, v) => format!(
            "{} and {}",
            count(n, "note", "notes"),
            count(v, "record of access", "records of access")
        ),
    };
    let verb = if notes + views == 1 { "has" } else { "have" };
    format!(
        "{what} {verb} not reached the server yet. Sync first: signing out wipes this device, \
         and they would be lost."
    )
}

/// When the device last reached the server, in the device's local time.
fn last_contact_text(at: &Option<chrono::DateTime<chrono::Utc>>) -> String {
    match at {
        Some(at) => format!(
            "This device last reached the server on {}",
            at.with_timezone(&chrono::Local).format("%d/%m/%Y at %H:%M")
        ),
        None => "This device has no record of when it last reached the server".into(),
    }
}

impl From<ClientError> for IpcError {
    fn from(e: ClientError) -> IpcError {
        e.to_ipc()
    }
}

pub type Result<T, E = ClientError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_map_to_ipc() {
        assert_eq!(
            ClientError::WrongPin { remaining: 3 }.to_ipc().kind,
            IpcErrorKind::WrongPin
        );
        assert_eq!(
            ClientError::OnlineSignInRequired { wipe_in: 5 }
                .to_ipc()
                .kind,
            IpcErrorKind::OnlineSignInRequired
        );
        assert_eq!(ClientError::CacheWiped.to_ipc().kind, IpcErrorKind::Wiped);
        let revoked = ClientError::DeviceRevoked.to_ipc();
        assert_eq!(revoked.kind, IpcErrorKind::DeviceRevoked);
        assert!(
            revoked
                .message
                .starts_with("This device was revoked by your service; its records were removed")
        );
        let e = ClientError::SignInFailed("Wrong password or code".into()).to_ipc();
        assert_eq!(e.kind, IpcErrorKind::SignInFailed);
        assert_eq!(e.message, "Wrong password or code");
        assert_eq!(
            ClientError::Offline("timed out".into()).to_ipc().kind,
            IpcErrorKind::Offline
        );
        assert_eq!(
            ClientError::Invalid("bad URL".into()).to_ipc().kind,
            IpcErrorKind::Invalid
        );
        assert_eq!(
            ClientError::NotFound("gone".into()).to_ipc().kind,
            IpcErrorKind::NotFound
        );
        assert_eq!(ClientError::Locked.to_ipc().kind, IpcErrorKind::Locked);
        assert_eq!(
            ClientError::Internal("x".into()).to_ipc().kind,
            IpcErrorKind::Internal
        );
        assert!(
            ClientError::OnlineSignInRequired { wipe_in: 5 }
                .to_string()
                .contains("Sign in online")
        );
    }
}
