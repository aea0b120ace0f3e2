//! The cache's own reads and writes on a connection the caller opens: for the benchmark that
//! weighs SQLCipher against plain SQLite on the same workload (`doorstep-bench`). Not an API
//! for the app: a [`crate::Device`] is the only way the product opens its cache.

use std::path::Path;

use chrono::{DateTime, NaiveDate, Utc};
use doorstep_ipc::{ListRow, PatientRecord};
use rusqlite::Connection;

use crate::error::{ClientError, Result};
use crate::wire::Page;

/// A pull page as the device decodes it.
pub struct DecodedPage(Page);

impl DecodedPage {
    /// Decode a page's body (JSON, as the server sends it after gzip).
    pub fn from_json(body: &[u8]) -> Result<DecodedPage> {
        Page::from_json(body).map(DecodedPage)
    }
}

/// A cache at `path`, set up as a device sets its own up: encrypted under `key`, or, with
/// `None`, the same schema and settings in a plain SQLite file.
pub fn open(path: &Path, key: Option<&[u8; 32]>) -> Result<Connection> {
    crate::cache::open_keyed(path, key).map_err(|e| ClientError::Internal(format!("{e:?}")))
}

/// Apply one page, as a sync does.
pub fn apply(conn: &mut Connection, page: &DecodedPage) -> Result<()> {
    crate::cache::apply_page(conn, &page.0).map(|_| ())
}

/// The list, as [`crate::Device::list`] reads it (without the same-name flags).
pub fn list(
    conn: &Connection,
    search: Option<&str>,
    today: NaiveDate,
    now: DateTime<Utc>,
) -> Result<Vec<ListRow>> {
    crate::queries::list(conn, search, today, now)
}

/// A stored resource's JSON (the cache deflates it: `crate::stored`), for tests that search
/// a decrypted cache's bytes.
pub fn stored_text(stored: rusqlite::types::ValueRef<'_>) -> Result<String> {
    crate::stored::unpack(stored)
}

/// One patient's record, as [`crate::Device::record`] builds it.
pub fn record(
    conn: &Connection,
    patient_id: &str,
    today: NaiveDate,
) -> Result<Option<PatientRecord>> {
    crate::queries::record(conn, patient_id, today)
}
