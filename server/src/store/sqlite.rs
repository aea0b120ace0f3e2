//! The embedded backend: SQLite in one file (by default `DIR/federation.db`), WAL mode,
//! foreign keys on.
//!
//! # What this module owns
//!
//! The SQL of every area of the store contract ([`super::contract`]) and the schema's
//! migrations. It reads and writes rows and decides nothing: imports arrive planned
//! ([`PlannedImport`]), audit rows arrive sealed, pull pages are built above the store over the
//! reads of a [`FeedSnapshot`] this module answers.
//!
//! # Connections and transactions
//!
//! One writer connection (SQLite allows one writer at a time anyway) behind a mutex, and a
//! small pool of read-only connections, so pulls read consistent snapshots while imports
//! write. All database work runs on tokio's blocking pool (`spawn_blocking`).
//!
//! - A pull snapshot takes a reader connection out of the pool and opens a read transaction on
//!   it (WAL: every read of it sees the same committed state); each read runs on the blocking
//!   pool; dropping the snapshot ends the transaction and returns the connection. At most
//!   `SNAPSHOTS_AT_ONCE` are open at once (others wait), so their connections stay pooled
//!   and warm instead of being opened and closed per pull under many devices.
//! - Writes that were planned on reads (an import, an audit row) run in `BEGIN IMMEDIATE`
//!   transactions: the write lock is taken first, then what the plan read is read again and
//!   compared; a difference answers [`StoreError::Stale`] and writes nothing. Holding the one
//!   write lock from the re-check to the commit is what serialises concurrent writers, in this
//!   process or another.
//!
//! Migrations are the files `migrations/server-sqlite/NNNN_*.sql`, embedded at build time and
//! applied in order inside transactions; `schema_migrations` records what was applied.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use doorstep_protocol::ListKind;
use doorstep_record::agreement::Agreement;
use rusqlite::{Connection, OpenFlags, OptionalExtension, Transaction, params};

use super::contract::{
    AdminStore, AlertStore, AuditSealer, AuditStore, FeedSnapshot, FeedStore, IdentityStore,
    KeyStore, ListStore, NoteStore, RecordStore, SourceStore, StaffStore,
};
use super::rows::{
    AccountWrite, AdminCredentialRow, AgreementVersionRow, AgreementWrite, AlertRow,
    AuditCheckpointRow, BookingFigureRow, BookingRow, BookingWrite, BreakGlassWrite,
    ClinicSessionRow, FigureRows, ListChange, StaffTokenRow, ValueSetLoad, ValueSetRow,
};
use super::rows::{
    AuditEvent, AuditRow, AuditTip, DeliveryState, DeliveryWrite, DeviceRow, FeedOp, FeedRow,
    ImportBasis, ImportKeys, ListEntryRow, ListEntryWrite, ListRow, NewUser, NoteInsert,
    NoteOutcome, NoteRow, PatientHeaderRow, PatientRow, PlannedImport, PracticeRow, ResourceRow,
    ResourceVersion, ServiceRow, SignInClaim, SourceCredentialRow, StoreError, StoredResource,
    TokenKind, TokenPair, TokenRow, UserRow, list_kind_as_str, list_kind_from_str,
};
use super::url::SQLITE_FILE;

/// File name of the database in the data directory.
pub const DB_FILE: &str = SQLITE_FILE;

/// The embedded migrations, in order: (version, name, SQL).
pub const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "0001_init",
        include_str!("../../../migrations/server-sqlite/0001_init.sql"),
    ),
    (
        2,
        "0002_source_credentials",
        include_str!("../../../migrations/server-sqlite/0002_source_credentials.sql"),
    ),
    (
        3,
        "0003_server_keys",
        include_str!("../../../migrations/server-sqlite/0003_server_keys.sql"),
    ),
    (
        4,
        "0004_notes",
        include_str!("../../../migrations/server-sqlite/0004_notes.sql"),
    ),
    (
        5,
        "0005_administration",
        include_str!("../../../migrations/server-sqlite/0005_administration.sql"),
    ),
    (
        6,
        "0006_list_owners",
        include_str!("../../../migrations/server-sqlite/0006_list_owners.sql"),
    ),
    (
        7,
        "0007_audit_access",
        include_str!("../../../migrations/server-sqlite/0007_audit_access.sql"),
    ),
    (
        8,
        "0008_bookings",
        include_str!("../../../migrations/server-sqlite/0008_bookings.sql"),
    ),
];

/// Pull snapshots open at once. Each holds a reader connection for its whole page; past this
/// many a pull waits for one to end, instead of opening a connection of its own (which parses
/// the schema and starts with a cold page cache) and closing it after. Under 200 devices
/// pulling at once that churn was most of a pull's time (issue 13, BENCHMARKS.md).
const SNAPSHOTS_AT_ONCE: usize = 8;

/// Reader connections kept open: one per snapshot and a few for the reads outside them.
const READER_POOL: usize = SNAPSHOTS_AT_ONCE + 4;

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Backend(e.to_string())
    }
}

fn ts(t: DateTime<Utc>) -> i64 {
    t.timestamp()
}

fn from_ts(t: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(t, 0).unwrap_or_default()
}

struct Inner {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
    /// Places for pull snapshots ([`SNAPSHOTS_AT_ONCE`]).
    snapshots: Arc<tokio::sync::Semaphore>,
}

/// The SQLite backend: every area of the store contract ([`super::Store`]).
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .finish()
    }
}

impl SqliteStore {
    /// Open (creating when missing) `DIR/federation.db` and apply pending migrations.
    pub fn open(data_dir: &Path) -> Result<SqliteStore, StoreError> {
        std::fs::create_dir_all(data_dir)?;
        SqliteStore::open_file(&data_dir.join(DB_FILE))
    }

    /// Open (creating when missing, with its directory) a database file and apply pending
    /// migrations.
    pub fn open_file(path: &Path) -> Result<SqliteStore, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut writer = Connection::open(path)?;
        writer.busy_timeout(Duration::from_secs(10))?;
        let mode: String = writer.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Backend(format!(
                "could not switch {} to WAL (journal mode {mode})",
                path.display()
            )));
        }
        writer.pragma_update(None, "foreign_keys", true)?;
        writer.pragma_update(None, "synchronous", "NORMAL")?;
        migrate(&mut writer)?;
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                writer: Mutex::new(writer),
                readers: Mutex::new(Vec::new()),
                snapshots: Arc::new(tokio::sync::Semaphore::new(SNAPSHOTS_AT_ONCE)),
            }),
        })
    }

    /// The versions of the applied migrations.
    pub fn applied_migrations(&self) -> Result<Vec<i64>, StoreError> {
        let conn = self.inner.writer.lock().unwrap_or_else(|p| p.into_inner());
        let mut stmt = conn.prepare("SELECT version FROM schema_migrations ORDER BY version")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<Vec<i64>, _>>()?)
    }

    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = inner.writer.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut conn)
        })
        .await
        .map_err(|e| StoreError::Backend(format!("store task failed: {e}")))?
    }

    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let conn = inner.checkout()?;
            let result = f(&conn);
            inner.checkin(conn);
            result
        })
        .await
        .map_err(|e| StoreError::Backend(format!("store task failed: {e}")))?
    }
}

impl Inner {
    /// A read-only connection: pooled, or newly opened.
    fn checkout(&self) -> Result<Connection, StoreError> {
        let pooled = self.readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
        match pooled {
            Some(c) => Ok(c),
            None => {
                let c = Connection::open_with_flags(
                    &self.path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                c.busy_timeout(Duration::from_secs(10))?;
                Ok(c)
            }
        }
    }

    /// Give a reader back to the pool (unless the pool is full or it is inside a transaction).
    fn checkin(&self, conn: Connection) {
        let mut pool = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < READER_POOL && conn.is_autocommit() {
            pool.push(conn);
        }
    }
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version INTEGER PRIMARY KEY,
             name TEXT NOT NULL,
             applied_at INTEGER NOT NULL
         )",
    )?;
    // A database a newer server migrated may hold tables this build would misread.
    let newest: i64 = conn.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
        [],
        |r| r.get(0),
    )?;
    let known = MIGRATIONS.last().map_or(0, |m| m.0);
    if newest > known {
        return Err(StoreError::SchemaTooNew {
            database: newest,
            known,
        });
    }
    for (version, name, sql) in MIGRATIONS {
        let tx = conn.transaction()?;
        let done: Option<i64> = tx
            .query_row(
                "SELECT version FROM schema_migrations WHERE version = ?1",
                [version],
                |r| r.get(0),
            )
            .optional()?;
        if done.is_none() {
            tx.execute_batch(sql)?;
            tx.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)",
                params![version, name, ts(Utc::now())],
            )?;
            tracing::info!(version, name, "applied migration");
        }
        tx.commit()?;
    }
    Ok(())
}

// ---------- row readers ----------

const PATIENT_COLUMNS: &str = "p.id, p.nhs_number, p.practice_ods, o.name, p.birth_date, p.dissent
     FROM patients p JOIN organisations o ON o.ods = p.practice_ods";

fn patient_from(r: &rusqlite::Row<'_>) -> rusqlite::Result<PatientRow> {
    let birth: Option<String> = r.get(4)?;
    Ok(PatientRow {
        id: r.get(0)?,
        nhs_number: r.get(1)?,
        practice_ods: r.get(2)?,
        practice_name: r.get(3)?,
        birth_date: birth.and_then(|b| NaiveDate::parse_from_str(&b, "%Y-%m-%d").ok()),
        dissent: r.get(5)?,
    })
}

const RESOURCE_COLUMNS: &str =
    "resource_type, id, patient_id, section, json, seq, deleted FROM resources";

fn resource_from(r: &rusqlite::Row<'_>) -> rusqlite::Result<ResourceRow> {
    Ok(ResourceRow {
        resource_type: r.get(0)?,
        id: r.get(1)?,
        patient_id: r.get(2)?,
        section: r.get(3)?,
        json: r.get(4)?,
        seq: r.get(5)?,
        deleted: r.get(6)?,
    })
}

const ENTRY_COLUMNS: &str =
    "e.id, e.list_id, l.name, l.kind, e.patient_id, e.reason, e.starts_at, e.ends_at, e.user_id,
     l.owner_user_id, COALESCE(l.team, tm.team)
     FROM list_entries e JOIN lists l ON l.id = e.list_id
     LEFT JOIN team_members tm ON tm.user_id = l.owner_user_id";

const LIST_COLUMNS: &str = "id, name, kind, service_id, owner_user_id, team FROM lists";

type ListColumns = (
    String,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
);

fn list_columns(r: &rusqlite::Row<'_>) -> rusqlite::Result<ListColumns> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
    ))
}

fn list_from(
    (id, name, kind, service_id, owner_user_id, team): ListColumns,
) -> Result<ListRow, StoreError> {
    Ok(ListRow {
        id,
        name,
        kind: list_kind_from_str(&kind)?,
        service_id,
        owner_user_id,
        team,
    })
}

fn entry_from(r: &rusqlite::Row<'_>) -> rusqlite::Result<(ListEntryRow, String)> {
    let ends: Option<i64> = r.get(7)?;
    Ok((
        ListEntryRow {
            id: r.get(0)?,
            list_id: r.get(1)?,
            list_name: r.get(2)?,
            kind: ListKind::Caseload,
            patient_id: r.get(4)?,
            reason: r.get(5)?,
            starts_at: from_ts(r.get(6)?),
            ends_at: ends.map(from_ts),
            user_id: r.get(8)?,
            list_owner: r.get(9)?,
            list_team: r.get(10)?,
        },
        r.get(3)?,
    ))
}

/// Insert a list entry and its patient's list feed row (the caller commits).
fn insert_entry_tx(
    tx: &Transaction<'_>,
    entry: &ListEntryWrite,
    now: DateTime<Utc>,
) -> Result<i64, StoreError> {
    tx.execute(
        "INSERT INTO list_entries (list_id, patient_id, reason, starts_at, ends_at, user_id, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            entry.list_id,
            entry.patient_id,
            entry.reason,
            ts(entry.starts_at),
            entry.ends_at.map(ts),
            entry.user_id,
            ts(now)
        ],
    )?;
    let id = tx.last_insert_rowid();
    append_feed(tx, &entry.patient_id, None, FeedOp::List, ts(now))?;
    Ok(id)
}

fn entries_query(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<ListEntryRow>, StoreError> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map(params, entry_from)?;
    let mut out = Vec::new();
    for row in rows {
        let (mut entry, kind) = row?;
        entry.kind = list_kind_from_str(&kind)?;
        out.push(entry);
    }
    Ok(out)
}

const USER_COLUMNS: &str =
    "u.id, u.username, u.display_name, u.role, u.service_id, s.name, u.password_hash,
     u.totp_secret, u.totp_last_step, u.failed_attempts, u.locked_until, u.disabled,
     u.practice_ods
     FROM users u JOIN services s ON s.id = u.service_id";

fn user_from(r: &rusqlite::Row<'_>) -> rusqlite::Result<UserRow> {
    let locked: Option<i64> = r.get(10)?;
    Ok(UserRow {
        id: r.get(0)?,
        username: r.get(1)?,
        display_name: r.get(2)?,
        role: r.get(3)?,
        service_id: r.get(4)?,
        service_name: r.get(5)?,
        password_hash: r.get(6)?,
        totp_secret: r.get(7)?,
        totp_last_step: r.get(8)?,
        failed_attempts: r.get(9)?,
        locked_until: locked.map(from_ts),
        disabled: r.get(11)?,
        practice_ods: r.get(12)?,
    })
}

fn pruned_through(conn: &Connection) -> Result<i64, StoreError> {
    let v: Option<String> = conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'feed_pruned_through'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    Ok(v.and_then(|v| v.parse().ok()).unwrap_or(0))
}

fn feed_head(conn: &Connection) -> Result<i64, StoreError> {
    let max: i64 = conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM feed", [], |r| r.get(0))?;
    Ok(max.max(pruned_through(conn)?))
}

fn append_feed(
    tx: &Transaction<'_>,
    patient_id: &str,
    resource: Option<(&str, &str)>,
    op: FeedOp,
    now: i64,
) -> Result<i64, StoreError> {
    tx.prepare_cached(
        "INSERT INTO feed (patient_id, resource_type, resource_id, op, at) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        patient_id,
        resource.map(|r| r.0),
        resource.map(|r| r.1),
        op.as_str(),
        now
    ])?;
    Ok(tx.last_insert_rowid())
}

// ---------- audit ----------

fn audit_tip(conn: &Connection) -> Result<Option<AuditTip>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
            [],
            |r| {
                Ok(AuditTip {
                    seq: r.get(0)?,
                    hash: r.get(1)?,
                })
            },
        )
        .optional()?)
}

/// Seal `event` on the tip read in `tx` (which holds the write lock) and store it.
fn seal_onto(
    tx: &Transaction<'_>,
    event: AuditEvent,
    seal: AuditSealer,
) -> Result<AuditRow, StoreError> {
    let row = seal(audit_tip(tx)?.as_ref(), event);
    append_audit_row_tx(tx, &row)?;
    Ok(row)
}

/// Store a sealed row, if it follows the stored tip.
fn append_audit_row_tx(tx: &Transaction<'_>, row: &AuditRow) -> Result<(), StoreError> {
    let follows = match audit_tip(tx)? {
        None => row.seq == 1,
        Some(tip) => row.seq == tip.seq + 1 && row.prev_hash == tip.hash,
    };
    if !follows {
        return Err(StoreError::Stale(
            "the audit log moved on since the event was sealed".into(),
        ));
    }
    let event = &row.event;
    tx.prepare_cached(
        "INSERT INTO audit (seq, at, actor, action, patient_id, detail, prev_hash, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        row.seq,
        ts(event.at),
        event.actor,
        event.action,
        event.patient_id,
        event.detail.to_string(),
        row.prev_hash,
        row.hash
    ])?;
    Ok(())
}

// ---------- import ----------

fn upsert_organisation(
    tx: &Transaction<'_>,
    ods: &str,
    name: &str,
    now: i64,
) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO organisations (ods, name, updated_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (ods) DO UPDATE SET name = excluded.name, updated_at = excluded.updated_at
         WHERE organisations.name <> excluded.name",
    )?
    .execute(params![ods, name, now])?;
    Ok(())
}

fn read_import_basis(conn: &Connection, keys: &ImportKeys) -> Result<ImportBasis, StoreError> {
    let mut basis = ImportBasis::default();
    let mut stmt = conn.prepare_cached(
        "SELECT id, nhs_number, practice_ods, birth_date FROM patients WHERE id = ?1",
    )?;
    for id in &keys.patients {
        let row = stmt
            .query_row([id], |r| {
                let birth: Option<String> = r.get(3)?;
                Ok(PatientHeaderRow {
                    id: r.get(0)?,
                    nhs_number: r.get(1)?,
                    practice_ods: r.get(2)?,
                    birth_date: birth.and_then(|b| NaiveDate::parse_from_str(&b, "%Y-%m-%d").ok()),
                })
            })
            .optional()?;
        if let Some(row) = row {
            basis.patients.insert(id.clone(), row);
        }
    }
    let mut stmt = conn.prepare_cached("SELECT id FROM patients WHERE nhs_number = ?1")?;
    for nhs in &keys.nhs_numbers {
        if let Some(id) = stmt
            .query_row([nhs], |r| r.get::<_, String>(0))
            .optional()?
        {
            basis.nhs_owners.insert(nhs.clone(), id);
        }
    }
    let mut stmt = conn.prepare_cached(
        "SELECT json, patient_id, deleted FROM resources WHERE resource_type = ?1 AND id = ?2",
    )?;
    for (rtype, id) in &keys.resources {
        let row = stmt
            .query_row(params![rtype, id], |r| {
                Ok(StoredResource {
                    json: r.get(0)?,
                    patient_id: r.get(1)?,
                    deleted: r.get(2)?,
                })
            })
            .optional()?;
        if let Some(row) = row {
            basis.resources.insert((rtype.clone(), id.clone()), row);
        }
    }
    Ok(basis)
}

/// Apply a planned import inside `tx` (the write lock is held): re-check, then write in the
/// order [`super::rows::ImportWrites`] documents.
fn apply_import_tx(
    tx: &Transaction<'_>,
    planned: &PlannedImport,
    seal: AuditSealer,
) -> Result<(), StoreError> {
    if read_import_basis(tx, &planned.keys)? != planned.basis {
        return Err(StoreError::Stale(
            "the rows the import was planned on changed".into(),
        ));
    }
    let now = ts(planned.at);
    let writes = &planned.writes;
    for (ods, name) in &writes.organisations {
        upsert_organisation(tx, ods, name, now)?;
    }
    for ods in &writes.practices {
        tx.prepare_cached("INSERT INTO practices (ods) VALUES (?1) ON CONFLICT (ods) DO NOTHING")?
            .execute([ods])?;
    }
    for p in &writes.patients {
        let h = &p.header;
        let birth = h.birth_date.map(|d| d.format("%Y-%m-%d").to_string());
        tx.prepare_cached(
            "INSERT INTO patients (id, nhs_number, practice_ods, birth_date, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (id) DO UPDATE SET nhs_number = excluded.nhs_number,
               practice_ods = excluded.practice_ods, birth_date = excluded.birth_date,
               updated_at = excluded.updated_at",
        )?
        .execute(params![h.id, h.nhs_number, h.practice_ods, birth, now])?;
        if p.header_changed {
            append_feed(tx, &h.id, None, FeedOp::Header, now)?;
        }
    }
    for r in &writes.resources {
        let key = Some((r.resource_type.as_str(), r.id.as_str()));
        let seq = match &r.patient_id {
            Some(pid) => append_feed(tx, pid, key, FeedOp::Upsert, now)?,
            None => 0,
        };
        if let Some(old) = &r.moved_from {
            append_feed(tx, old, key, FeedOp::Delete, now)?;
        }
        tx.prepare_cached(
            "INSERT INTO resources (resource_type, id, patient_id, section, json, seq, deleted)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0)
             ON CONFLICT (resource_type, id) DO UPDATE SET patient_id = excluded.patient_id,
               section = excluded.section, json = excluded.json, seq = excluded.seq, deleted = 0",
        )?
        .execute(params![
            r.resource_type,
            r.id,
            r.patient_id,
            r.section,
            r.json,
            seq
        ])?;
    }
    for d in &writes.deletions {
        let key = Some((d.resource_type.as_str(), d.id.as_str()));
        let seq = match &d.patient_id {
            Some(pid) => append_feed(tx, pid, key, FeedOp::Delete, now)?,
            None => 0,
        };
        tx.prepare_cached(
            "UPDATE resources SET deleted = 1, seq = ?3 WHERE resource_type = ?1 AND id = ?2",
        )?
        .execute(params![d.resource_type, d.id, seq])?;
    }
    // The write lock is held: the tip read here is the one the row follows.
    let row = seal(audit_tip(tx)?.as_ref(), planned.audit.clone());
    append_audit_row_tx(tx, &row)
}

// ---------- the pull's snapshot ----------

/// A pull's read transaction: a pooled reader with an open `BEGIN`, until dropped.
struct SqliteSnapshot {
    inner: Arc<Inner>,
    conn: Arc<Mutex<Option<Connection>>>,
    /// Its place among the snapshots open at once; let go after the connection is back in
    /// the pool (fields drop after `Drop::drop`).
    _place: tokio::sync::OwnedSemaphorePermit,
}

impl SqliteSnapshot {
    /// Run one read of the snapshot on the blocking pool.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let guard = conn.lock().unwrap_or_else(|p| p.into_inner());
            let conn = guard
                .as_ref()
                .ok_or_else(|| StoreError::Backend("the snapshot is closed".into()))?;
            f(conn)
        })
        .await
        .map_err(|e| StoreError::Backend(format!("store task failed: {e}")))?
    }
}

impl Drop for SqliteSnapshot {
    fn drop(&mut self) {
        let taken = self.conn.lock().unwrap_or_else(|p| p.into_inner()).take();
        // Ending a read transaction only lets go of its view of the WAL: quick, no IO.
        if let Some(conn) = taken
            && conn.execute_batch("COMMIT").is_ok()
        {
            self.inner.checkin(conn);
        }
    }
}

#[async_trait]
impl FeedSnapshot for SqliteSnapshot {
    async fn head(&self) -> Result<i64, StoreError> {
        self.read(feed_head).await
    }

    async fn pruned_through(&self) -> Result<i64, StoreError> {
        self.read(pruned_through).await
    }

    async fn member_set(&self, hash: &str) -> Result<Option<Vec<String>>, StoreError> {
        let hash = hash.to_string();
        self.read(move |conn| {
            let json: Option<String> = conn
                .prepare_cached("SELECT patients FROM member_sets WHERE hash = ?1")?
                .query_row([hash], |r| r.get(0))
                .optional()?;
            json.map(|j| {
                serde_json::from_str(&j)
                    .map_err(|e| StoreError::Corrupt(format!("member set: {e}")))
            })
            .transpose()
        })
        .await
    }

    async fn feed_after(
        &self,
        after: i64,
        upto: i64,
        limit: usize,
    ) -> Result<Vec<FeedRow>, StoreError> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT seq, patient_id, resource_type, resource_id, op FROM feed
                 WHERE seq > ?1 AND seq <= ?2 ORDER BY seq LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![after, upto, limit as i64], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, String>(4)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (seq, patient_id, rtype, rid, op) = row?;
                let op = FeedOp::parse(&op)
                    .ok_or_else(|| StoreError::Corrupt(format!("feed row {seq}: op {op}")))?;
                out.push(FeedRow {
                    seq,
                    patient_id,
                    resource: rtype.zip(rid),
                    op,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn scope_entries(
        &self,
        service_id: &str,
        user_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<ListEntryRow>, StoreError> {
        let (service, user) = (service_id.to_string(), user_id.to_string());
        self.read(move |conn| {
            entries_query(
                conn,
                &format!(
                    "SELECT {ENTRY_COLUMNS}
                     WHERE (e.ends_at IS NULL OR e.ends_at > ?1)
                       AND ((l.kind <> 'break_glass' AND l.service_id = ?2)
                            OR (l.kind = 'break_glass' AND e.user_id = ?3))
                     ORDER BY e.id"
                ),
                params![ts(now), service, user],
            )
        })
        .await
    }

    async fn entries_ended_between(
        &self,
        service_id: &str,
        user_id: &str,
        after: DateTime<Utc>,
        upto: DateTime<Utc>,
    ) -> Result<Vec<ListEntryRow>, StoreError> {
        let (service, user) = (service_id.to_string(), user_id.to_string());
        self.read(move |conn| {
            entries_query(
                conn,
                &format!(
                    "SELECT {ENTRY_COLUMNS}
                     WHERE e.ends_at > ?1 AND e.ends_at <= ?2
                       AND ((l.kind <> 'break_glass' AND l.service_id = ?3)
                            OR (l.kind = 'break_glass' AND e.user_id = ?4))
                     ORDER BY e.patient_id, e.id"
                ),
                params![ts(after), ts(upto), service, user],
            )
        })
        .await
    }

    async fn patients(&self, ids: &[String]) -> Result<Vec<PatientRow>, StoreError> {
        let ids = ids.to_vec();
        self.read(move |conn| {
            let mut stmt =
                conn.prepare_cached(&format!("SELECT {PATIENT_COLUMNS} WHERE p.id = ?1"))?;
            let mut out = Vec::with_capacity(ids.len());
            for id in &ids {
                if let Some(p) = stmt.query_row([id], patient_from).optional()? {
                    out.push(p);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn resource(
        &self,
        resource_type: &str,
        id: &str,
    ) -> Result<Option<ResourceRow>, StoreError> {
        let (rtype, id) = (resource_type.to_string(), id.to_string());
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(&format!(
                    "SELECT {RESOURCE_COLUMNS} WHERE resource_type = ?1 AND id = ?2"
                ))?
                .query_row([rtype, id], resource_from)
                .optional()?)
        })
        .await
    }

    async fn live_resources(&self, patient_id: &str) -> Result<Vec<ResourceRow>, StoreError> {
        let pid = patient_id.to_string();
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {RESOURCE_COLUMNS} WHERE patient_id = ?1 AND deleted = 0
                 ORDER BY resource_type, id"
            ))?;
            let rows = stmt.query_map([pid], resource_from)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn live_resource_versions(
        &self,
        patient_id: &str,
    ) -> Result<Vec<ResourceVersion>, StoreError> {
        let pid = patient_id.to_string();
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT resource_type, id, seq FROM resources
                 WHERE patient_id = ?1 AND deleted = 0 ORDER BY resource_type, id",
            )?;
            let rows = stmt.query_map([pid], |r| {
                Ok(ResourceVersion {
                    resource_type: r.get(0)?,
                    id: r.get(1)?,
                    seq: r.get(2)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }
}

// ---------- the contract ----------

#[async_trait]
impl RecordStore for SqliteStore {
    async fn import_basis(&self, keys: &ImportKeys) -> Result<ImportBasis, StoreError> {
        let keys = keys.clone();
        self.read(move |conn| {
            let tx = conn.unchecked_transaction()?;
            let basis = read_import_basis(&tx, &keys)?;
            tx.commit()?;
            Ok(basis)
        })
        .await
    }

    async fn apply_import(
        &self,
        planned: PlannedImport,
        seal: AuditSealer,
    ) -> Result<(), StoreError> {
        self.write(move |conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            apply_import_tx(&tx, &planned, seal)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn organisation_name(&self, ods: &str) -> Result<Option<String>, StoreError> {
        let ods = ods.to_string();
        self.read(move |conn| {
            Ok(conn
                .query_row(
                    "SELECT name FROM organisations WHERE ods = ?1",
                    [ods],
                    |r| r.get(0),
                )
                .optional()?)
        })
        .await
    }

    async fn upsert_practice(&self, practice: PracticeRow) -> Result<(), StoreError> {
        self.write(move |conn| {
            let tx = conn.transaction()?;
            upsert_organisation(&tx, &practice.ods, &practice.name, ts(Utc::now()))?;
            tx.execute(
                "INSERT INTO practices (ods, source_system, postcode) VALUES (?1, ?2, ?3)
                 ON CONFLICT (ods) DO UPDATE SET source_system = excluded.source_system,
                   postcode = excluded.postcode",
                params![practice.ods, practice.source_system, practice.postcode],
            )?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn practices(&self) -> Result<Vec<PracticeRow>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare(
                "SELECT p.ods, o.name, p.source_system, p.postcode
                 FROM practices p JOIN organisations o ON o.ods = p.ods ORDER BY p.ods",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok(PracticeRow {
                    ods: r.get(0)?,
                    name: r.get(1)?,
                    source_system: r.get(2)?,
                    postcode: r.get(3)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn patients(&self) -> Result<Vec<PatientRow>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare(&format!("SELECT {PATIENT_COLUMNS} ORDER BY p.id"))?;
            let rows = stmt.query_map([], patient_from)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn patient(&self, id: &str) -> Result<Option<PatientRow>, StoreError> {
        let id = id.to_string();
        self.read(move |conn| {
            Ok(conn
                .query_row(
                    &format!("SELECT {PATIENT_COLUMNS} WHERE p.id = ?1"),
                    [id],
                    patient_from,
                )
                .optional()?)
        })
        .await
    }

    async fn patient_resources(&self, patient_id: &str) -> Result<Vec<ResourceRow>, StoreError> {
        let id = patient_id.to_string();
        self.read(move |conn| {
            let mut stmt = conn.prepare(&format!(
                "SELECT {RESOURCE_COLUMNS} WHERE patient_id = ?1 ORDER BY resource_type, id"
            ))?;
            let rows = stmt.query_map([id], resource_from)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn set_dissent(&self, patient_id: &str, dissent: bool) -> Result<(), StoreError> {
        let id = patient_id.to_string();
        self.write(move |conn| {
            let n = conn.execute(
                "UPDATE patients SET dissent = ?2, updated_at = ?3 WHERE id = ?1",
                params![id, dissent, ts(Utc::now())],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("patient {id}")));
            }
            Ok(())
        })
        .await
    }
}

#[async_trait]
impl IdentityStore for SqliteStore {
    async fn upsert_service(&self, service: ServiceRow) -> Result<(), StoreError> {
        self.write(move |conn| {
            conn.execute(
                "INSERT INTO services (id, name) VALUES (?1, ?2)
                 ON CONFLICT (id) DO UPDATE SET name = excluded.name",
                params![service.id, service.name],
            )?;
            Ok(())
        })
        .await
    }

    async fn put_agreement(
        &self,
        agreement: &Agreement,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let json =
            serde_json::to_string(agreement).map_err(|e| StoreError::Backend(e.to_string()))?;
        let (id, service) = (agreement.id.clone(), agreement.service.clone());
        self.write(move |conn| {
            conn.execute(
                "INSERT INTO agreements (id, service_id, json, updated_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (id) DO UPDATE SET service_id = excluded.service_id,
                   json = excluded.json, updated_at = excluded.updated_at",
                params![id, service, json, ts(now)],
            )?;
            Ok(())
        })
        .await
    }

    async fn agreements_for_service(&self, service_id: &str) -> Result<Vec<Agreement>, StoreError> {
        let service = service_id.to_string();
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached("SELECT json FROM agreements WHERE service_id = ?1 ORDER BY id")?;
            let rows = stmt.query_map([service], |r| r.get::<_, String>(0))?;
            let mut out = Vec::new();
            for json in rows {
                out.push(
                    serde_json::from_str(&json?)
                        .map_err(|e| StoreError::Corrupt(format!("agreement: {e}")))?,
                );
            }
            Ok(out)
        })
        .await
    }

    async fn create_user(&self, user: NewUser, now: DateTime<Utc>) -> Result<String, StoreError> {
        self.write(move |conn| {
            let id = uuid::Uuid::new_v4().to_string();
            let taken: bool = conn.query_row(
                "SELECT EXISTS (SELECT 1 FROM users WHERE username = ?1)",
                [&user.username],
                |r| r.get(0),
            )?;
            if taken {
                return Err(StoreError::Conflict(format!(
                    "user {} already exists",
                    user.username
                )));
            }
            conn.execute(
                "INSERT INTO users (id, username, display_name, role, service_id, password_hash,
                   totp_secret, created_at, practice_ods)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    id,
                    user.username,
                    user.display_name,
                    user.role,
                    user.service_id,
                    user.password_hash,
                    user.totp_secret,
                    ts(now),
                    user.practice_ods
                ],
            )?;
            Ok(id)
        })
        .await
    }

    async fn user_by_username(&self, username: &str) -> Result<Option<UserRow>, StoreError> {
        let name = username.to_string();
        self.read(move |conn| {
            Ok(conn
                .query_row(
                    &format!("SELECT {USER_COLUMNS} WHERE u.username = ?1"),
                    [name],
                    user_from,
                )
                .optional()?)
        })
        .await
    }

    async fn user_by_id(&self, id: &str) -> Result<Option<UserRow>, StoreError> {
        let id = id.to_string();
        self.read(move |conn| {
            Ok(conn
                .query_row(
                    &format!("SELECT {USER_COLUMNS} WHERE u.id = ?1"),
                    [id],
                    user_from,
                )
                .optional()?)
        })
        .await
    }

    async fn users(&self) -> Result<Vec<UserRow>, StoreError> {
        self.read(move |conn| {
            let mut stmt = conn.prepare(&format!("SELECT {USER_COLUMNS} ORDER BY u.username"))?;
            let rows = stmt.query_map([], user_from)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn replace_totp_secret(
        &self,
        user_id: &str,
        expected: &str,
        new: &str,
    ) -> Result<(), StoreError> {
        let (id, expected, new) = (user_id.to_string(), expected.to_string(), new.to_string());
        self.write(move |conn| {
            let n = conn.execute(
                "UPDATE users SET totp_secret = ?3 WHERE id = ?1 AND totp_secret = ?2",
                params![id, expected, new],
            )?;
            if n == 0 {
                return Err(StoreError::Stale(
                    "the TOTP secret changed since it was read, or the user is gone".into(),
                ));
            }
            Ok(())
        })
        .await
    }

    async fn claim_sign_in_attempt(
        &self,
        user_id: &str,
        now: DateTime<Utc>,
        max_failures: u32,
        lock_until: DateTime<Utc>,
    ) -> Result<SignInClaim, StoreError> {
        let id = user_id.to_string();
        self.write(move |conn| {
            // One statement: SQLite applies it under the write lock, and the SET reads the
            // row as it was, so the check and the count cannot be split by another attempt.
            let counted = conn
                .query_row(
                    "UPDATE users SET
                       failed_attempts = CASE WHEN failed_attempts + 1 >= ?3 THEN 0
                                              ELSE failed_attempts + 1 END,
                       locked_until = CASE WHEN failed_attempts + 1 >= ?3 THEN ?4 ELSE NULL END
                     WHERE id = ?1 AND (locked_until IS NULL OR locked_until <= ?2)
                     RETURNING locked_until",
                    params![id, ts(now), max_failures, ts(lock_until)],
                    |r| r.get::<_, Option<i64>>(0),
                )
                .optional()?;
            if let Some(locked) = counted {
                return Ok(SignInClaim::Counted {
                    locked_until: locked.map(from_ts),
                });
            }
            let locked = conn
                .query_row(
                    "SELECT locked_until FROM users WHERE id = ?1",
                    params![id],
                    |r| r.get::<_, Option<i64>>(0),
                )
                .optional()?
                .ok_or_else(|| StoreError::NotFound(format!("user {id}")))?;
            Ok(SignInClaim::Locked(locked.map(from_ts).unwrap_or(now)))
        })
        .await
    }

    async fn record_sign_in_success(
        &self,
        user_id: &str,
        totp_step: i64,
    ) -> Result<(), StoreError> {
        let id = user_id.to_string();
        self.write(move |conn| {
            let n = conn.execute(
                "UPDATE users SET failed_attempts = 0, locked_until = NULL, totp_last_step = ?2
                 WHERE id = ?1 AND totp_last_step < ?2",
                params![id, totp_step],
            )?;
            if n == 0 {
                return Err(StoreError::Conflict(
                    "this TOTP code was already used".into(),
                ));
            }
            Ok(())
        })
        .await
    }

    async fn create_device(
        &self,
        user_id: &str,
        name: &str,
        now: DateTime<Utc>,
    ) -> Result<String, StoreError> {
        let (user, name) = (user_id.to_string(), name.to_string());
        self.write(move |conn| {
            let id = uuid::Uuid::new_v4().to_string();
            conn.execute(
                "INSERT INTO devices (id, user_id, name, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![id, user, name, ts(now)],
            )?;
            Ok(id)
        })
        .await
    }

    async fn device(&self, id: &str) -> Result<Option<DeviceRow>, StoreError> {
        let id = id.to_string();
        self.read(move |conn| {
            Ok(conn
                .query_row(
                    "SELECT id, user_id, name, created_at, revoked_at FROM devices WHERE id = ?1",
                    [id],
                    |r| {
                        let revoked: Option<i64> = r.get(4)?;
                        Ok(DeviceRow {
                            id: r.get(0)?,
                            user_id: r.get(1)?,
                            name: r.get(2)?,
                            created_at: from_ts(r.get(3)?),
                            revoked_at: revoked.map(from_ts),
                        })
                    },
                )
                .optional()?)
        })
        .await
    }

    async fn revoke_device(&self, id: &str, now: DateTime<Utc>) -> Result<(), StoreError> {
        let id = id.to_string();
        self.write(move |conn| {
            let tx = conn.transaction()?;
            let n = tx.execute(
                "UPDATE devices SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
                params![id, ts(now)],
            )?;
            tx.execute(
                "UPDATE tokens SET revoked_at = ?2 WHERE device_id = ?1 AND revoked_at IS NULL",
                params![id, ts(now)],
            )?;
            tx.commit()?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("active device {id}")));
            }
            Ok(())
        })
        .await
    }

    async fn store_tokens(
        &self,
        device_id: &str,
        pair: TokenPair,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let device = device_id.to_string();
        self.write(move |conn| {
            let tx = conn.transaction()?;
            insert_pair(&tx, &device, &pair, now)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn token(&self, hash: &str) -> Result<Option<TokenRow>, StoreError> {
        let hash = hash.to_string();
        self.read(move |conn| {
            Ok(conn
                .query_row(
                    "SELECT hash, device_id, kind, issued_at, expires_at, used_at, revoked_at
                     FROM tokens WHERE hash = ?1",
                    [hash],
                    |r| {
                        Ok(TokenRow {
                            hash: r.get(0)?,
                            device_id: r.get(1)?,
                            kind: if r.get::<_, String>(2)? == "refresh" {
                                TokenKind::Refresh
                            } else {
                                TokenKind::Access
                            },
                            issued_at: from_ts(r.get(3)?),
                            expires_at: from_ts(r.get(4)?),
                            used_at: r.get::<_, Option<i64>>(5)?.map(from_ts),
                            revoked_at: r.get::<_, Option<i64>>(6)?.map(from_ts),
                        })
                    },
                )
                .optional()?)
        })
        .await
    }

    async fn exchange_refresh(
        &self,
        device_id: &str,
        old_refresh_hash: &str,
        pair: TokenPair,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let (device, old) = (device_id.to_string(), old_refresh_hash.to_string());
        self.write(move |conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let n = tx.execute(
                "UPDATE tokens SET used_at = ?3
                 WHERE hash = ?1 AND device_id = ?2 AND kind = 'refresh'
                   AND used_at IS NULL AND revoked_at IS NULL",
                params![old, device, ts(now)],
            )?;
            if n == 0 {
                return Err(StoreError::Stale(
                    "the refresh token was exchanged or revoked since it was read".into(),
                ));
            }
            tx.execute(
                "UPDATE tokens SET revoked_at = ?2
                 WHERE device_id = ?1 AND kind = 'access' AND revoked_at IS NULL",
                params![device, ts(now)],
            )?;
            insert_pair(&tx, &device, &pair, now)?;
            tx.execute(
                "UPDATE devices SET last_seen_at = ?2 WHERE id = ?1",
                params![device, ts(now)],
            )?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn revoke_device_tokens(
        &self,
        device_id: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let device = device_id.to_string();
        self.write(move |conn| {
            conn.execute(
                "UPDATE tokens SET revoked_at = ?2 WHERE device_id = ?1 AND revoked_at IS NULL",
                params![device, ts(now)],
            )?;
            Ok(())
        })
        .await
    }
}

#[async_trait]
impl ListStore for SqliteStore {
    async fn create_list(&self, list: ListRow) -> Result<(), StoreError> {
        self.write(move |conn| {
            conn.execute(
                "INSERT INTO lists (id, name, kind, service_id, owner_user_id, team)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (id) DO UPDATE SET name = excluded.name,
                     owner_user_id = excluded.owner_user_id, team = excluded.team",
                params![
                    list.id,
                    list.name,
                    list_kind_as_str(list.kind),
                    list.service_id,
                    list.owner_user_id,
                    list.team
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn lists(&self) -> Result<Vec<ListRow>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare(&format!("SELECT {LIST_COLUMNS} ORDER BY id"))?;
            let rows = stmt.query_map([], list_columns)?;
            rows.map(|row| list_from(row?)).collect()
        })
        .await
    }

    async fn list(&self, id: &str) -> Result<Option<ListRow>, StoreError> {
        let id = id.to_string();
        self.read(move |conn| {
            conn.query_row(
                &format!("SELECT {LIST_COLUMNS} WHERE id = ?1"),
                [id],
                list_columns,
            )
            .optional()?
            .map(list_from)
            .transpose()
        })
        .await
    }

    async fn set_team(&self, user_id: &str, team: Option<&str>) -> Result<(), StoreError> {
        let (user, team) = (user_id.to_string(), team.map(str::to_owned));
        self.write(move |conn| {
            match team {
                Some(team) => conn.execute(
                    "INSERT INTO team_members (user_id, team) VALUES (?1, ?2)
                     ON CONFLICT (user_id) DO UPDATE SET team = excluded.team",
                    params![user, team],
                )?,
                None => conn.execute("DELETE FROM team_members WHERE user_id = ?1", [user])?,
            };
            Ok(())
        })
        .await
    }

    async fn team_of(&self, user_id: &str) -> Result<Option<String>, StoreError> {
        let user = user_id.to_string();
        self.read(move |conn| {
            Ok(conn
                .query_row(
                    "SELECT team FROM team_members WHERE user_id = ?1",
                    [user],
                    |r| r.get(0),
                )
                .optional()?)
        })
        .await
    }

    async fn insert_list_entry(
        &self,
        entry: ListEntryWrite,
        now: DateTime<Utc>,
    ) -> Result<i64, StoreError> {
        self.write(move |conn| {
            let tx = conn.transaction()?;
            let id = insert_entry_tx(&tx, &entry, now)?;
            tx.commit()?;
            Ok(id)
        })
        .await
    }

    async fn end_list_entry(
        &self,
        list_id: &str,
        patient_id: &str,
        at: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        let (list, patient) = (list_id.to_string(), patient_id.to_string());
        self.write(move |conn| {
            let tx = conn.transaction()?;
            let n = tx.execute(
                "UPDATE list_entries SET ends_at = ?3
                 WHERE list_id = ?1 AND patient_id = ?2 AND (ends_at IS NULL OR ends_at > ?3)",
                params![list, patient, ts(at)],
            )?;
            if n > 0 {
                append_feed(&tx, &patient, None, FeedOp::List, ts(Utc::now()))?;
            }
            tx.commit()?;
            Ok(n)
        })
        .await
    }

    async fn list_entries(&self, list_id: &str) -> Result<Vec<ListEntryRow>, StoreError> {
        let list = list_id.to_string();
        self.read(move |conn| {
            entries_query(
                conn,
                &format!("SELECT {ENTRY_COLUMNS} WHERE e.list_id = ?1 ORDER BY e.id"),
                [list],
            )
        })
        .await
    }
}

#[async_trait]
impl FeedStore for SqliteStore {
    async fn feed_snapshot(&self) -> Result<Box<dyn FeedSnapshot>, StoreError> {
        // No caller holds one snapshot while it asks for another, so waiting cannot deadlock.
        let place = self
            .inner
            .snapshots
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| StoreError::Backend(format!("snapshot places closed: {e}")))?;
        let inner = self.inner.clone();
        let conn = tokio::task::spawn_blocking(move || {
            let conn = inner.checkout()?;
            // Deferred: the snapshot is fixed by the first read and kept until COMMIT.
            conn.execute_batch("BEGIN")?;
            Ok::<_, StoreError>(conn)
        })
        .await
        .map_err(|e| StoreError::Backend(format!("store task failed: {e}")))??;
        Ok(Box::new(SqliteSnapshot {
            inner: self.inner.clone(),
            conn: Arc::new(Mutex::new(Some(conn))),
            _place: place,
        }))
    }

    async fn save_member_sets(
        &self,
        sets: Vec<(String, Vec<String>)>,
        used_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.write(move |conn| {
            let tx = conn.transaction()?;
            for (hash, ids) in sets {
                let json =
                    serde_json::to_string(&ids).map_err(|e| StoreError::Backend(e.to_string()))?;
                tx.prepare_cached(
                    "INSERT INTO member_sets (hash, patients, last_used_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (hash) DO UPDATE SET last_used_at = excluded.last_used_at",
                )?
                .execute(params![hash, json, ts(used_at)])?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn feed_head(&self) -> Result<i64, StoreError> {
        self.read(feed_head).await
    }

    async fn prune_feed(&self, before: DateTime<Utc>) -> Result<i64, StoreError> {
        self.write(move |conn| {
            let tx = conn.transaction()?;
            let upto: Option<i64> = tx.query_row(
                "SELECT MAX(seq) FROM feed WHERE at < ?1",
                [ts(before)],
                |r| r.get(0),
            )?;
            let previous = pruned_through(&tx)?;
            let through = upto.unwrap_or(0).max(previous);
            // Cursors issued before `before` expire with the feed, so their sets can go.
            tx.execute(
                "DELETE FROM member_sets WHERE last_used_at < ?1",
                [ts(before)],
            )?;
            if through > previous {
                tx.execute("DELETE FROM feed WHERE seq <= ?1", [through])?;
                tx.execute(
                    "INSERT INTO meta (key, value) VALUES ('feed_pruned_through', ?1)
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    [through.to_string()],
                )?;
            }
            tx.commit()?;
            Ok(through)
        })
        .await
    }
}

#[async_trait]
impl SourceStore for SqliteStore {
    async fn put_source_credential(&self, row: SourceCredentialRow) -> Result<(), StoreError> {
        self.write(move |conn| {
            let tx = conn.transaction()?;
            let member: Option<String> = tx
                .query_row(
                    "SELECT ods FROM practices WHERE ods = ?1",
                    [&row.ods],
                    |r| r.get(0),
                )
                .optional()?;
            if member.is_none() {
                return Err(StoreError::NotFound(format!("member practice {}", row.ods)));
            }
            tx.execute(
                "INSERT INTO source_credentials (ods, secret_hash, created_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (ods) DO UPDATE SET secret_hash = excluded.secret_hash,
                   created_at = excluded.created_at",
                params![row.ods, row.secret_hash, ts(row.created_at)],
            )?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn source_credential(
        &self,
        ods: &str,
    ) -> Result<Option<SourceCredentialRow>, StoreError> {
        let ods = ods.to_string();
        self.read(move |conn| {
            Ok(conn
                .query_row(
                    "SELECT ods, secret_hash, created_at FROM source_credentials WHERE ods = ?1",
                    [ods],
                    |r| {
                        Ok(SourceCredentialRow {
                            ods: r.get(0)?,
                            secret_hash: r.get(1)?,
                            created_at: from_ts(r.get(2)?),
                        })
                    },
                )
                .optional()?)
        })
        .await
    }
}

#[async_trait]
impl AuditStore for SqliteStore {
    async fn audit_tip(&self) -> Result<Option<AuditTip>, StoreError> {
        self.read(audit_tip).await
    }

    async fn append_audit_row(&self, row: AuditRow) -> Result<(), StoreError> {
        self.write(move |conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            append_audit_row_tx(&tx, &row)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn append_audit_event(
        &self,
        event: AuditEvent,
        seal: AuditSealer,
    ) -> Result<AuditRow, StoreError> {
        self.write(move |conn| {
            // IMMEDIATE: the write lock is taken first, so the tip read is the one followed.
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let row = seal_onto(&tx, event, seal)?;
            tx.commit()?;
            Ok(row)
        })
        .await
    }

    async fn audit_rows(&self) -> Result<Vec<AuditRow>, StoreError> {
        self.read(|conn| {
            audit_query(
                conn,
                &format!("SELECT {AUDIT_COLUMNS} FROM audit ORDER BY seq"),
                [],
            )
        })
        .await
    }

    async fn append_audit_events(
        &self,
        events: Vec<AuditEvent>,
        seal: AuditSealer,
    ) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        self.write(move |conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let mut tip = audit_tip(&tx)?;
            for event in events {
                let row = seal(tip.as_ref(), event);
                append_audit_row_tx(&tx, &row)?;
                tip = Some(AuditTip {
                    seq: row.seq,
                    hash: row.hash,
                });
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn audit_rows_for_patient(
        &self,
        patient_id: &str,
        from: Option<DateTime<Utc>>,
    ) -> Result<Vec<AuditRow>, StoreError> {
        let (patient, from) = (patient_id.to_string(), from.map(ts).unwrap_or(i64::MIN));
        self.read(move |conn| {
            audit_query(
                conn,
                &format!(
                    "SELECT {AUDIT_COLUMNS} FROM audit WHERE patient_id = ?1 AND at >= ?2
                     ORDER BY seq"
                ),
                params![patient, from],
            )
        })
        .await
    }

    async fn put_audit_checkpoint(&self, row: AuditCheckpointRow) -> Result<(), StoreError> {
        self.write(move |conn| {
            conn.execute(
                "INSERT INTO audit_checkpoints (seq, hash, at, key_id, signature)
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (seq) DO NOTHING",
                params![row.seq, row.hash, ts(row.at), row.key_id, row.signature],
            )?;
            Ok(())
        })
        .await
    }

    async fn append_device_view(
        &self,
        id: &str,
        device_id: &str,
        event: AuditEvent,
        seal: AuditSealer,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        let (id, device) = (id.to_string(), device_id.to_string());
        self.write(move |conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let first: Option<i64> = tx
                .query_row(
                    "SELECT received_at FROM device_views WHERE id = ?1",
                    [&id],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(at) = first {
                return Ok(Some(from_ts(at)));
            }
            tx.execute(
                "INSERT INTO device_views (id, device_id, received_at) VALUES (?1, ?2, ?3)",
                params![id, device, ts(event.at)],
            )?;
            seal_onto(&tx, event, seal)?;
            tx.commit()?;
            Ok(None)
        })
        .await
    }

    async fn latest_audit_checkpoint(&self) -> Result<Option<AuditCheckpointRow>, StoreError> {
        self.read(|conn| {
            Ok(conn
                .query_row(
                    "SELECT seq, hash, at, key_id, signature FROM audit_checkpoints
                     ORDER BY seq DESC LIMIT 1",
                    [],
                    |r| {
                        Ok(AuditCheckpointRow {
                            seq: r.get(0)?,
                            hash: r.get(1)?,
                            at: from_ts(r.get(2)?),
                            key_id: r.get(3)?,
                            signature: r.get(4)?,
                        })
                    },
                )
                .optional()?)
        })
        .await
    }
}

const AUDIT_COLUMNS: &str = "seq, at, actor, action, patient_id, detail, prev_hash, hash";

fn audit_query(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<AuditRow>, StoreError> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map(params, |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, Option<String>>(4)?,
            r.get::<_, String>(5)?,
            r.get::<_, String>(6)?,
            r.get::<_, String>(7)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (seq, at, actor, action, patient_id, detail, prev_hash, hash) = row?;
        out.push(AuditRow {
            seq,
            event: AuditEvent {
                at: from_ts(at),
                actor,
                action,
                patient_id,
                detail: serde_json::from_str(&detail)
                    .map_err(|e| StoreError::Corrupt(format!("audit {seq}: {e}")))?,
            },
            prev_hash,
            hash,
        });
    }
    Ok(out)
}

const ALERT_COLUMNS: &str =
    "id, at, user_id, patient_id, reason, detail, entry_id, acked_at, acked_by, ack_note
     FROM alerts";

fn alert_from(r: &rusqlite::Row<'_>) -> rusqlite::Result<(AlertRow, String)> {
    let acked: Option<i64> = r.get(7)?;
    Ok((
        AlertRow {
            id: r.get(0)?,
            at: from_ts(r.get(1)?),
            user_id: r.get(2)?,
            patient_id: r.get(3)?,
            reason: r.get(4)?,
            detail: serde_json::Value::Null,
            entry_id: r.get(6)?,
            acked_at: acked.map(from_ts),
            acked_by: r.get(8)?,
            ack_note: r.get(9)?,
        },
        r.get(5)?,
    ))
}

fn alerts_query(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<AlertRow>, StoreError> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map(params, alert_from)?;
    let mut out = Vec::new();
    for row in rows {
        let (mut alert, detail) = row?;
        alert.detail = serde_json::from_str(&detail)
            .map_err(|e| StoreError::Corrupt(format!("alert {}: {e}", alert.id)))?;
        out.push(alert);
    }
    Ok(out)
}

#[async_trait]
impl AlertStore for SqliteStore {
    async fn insert_break_glass(
        &self,
        write: BreakGlassWrite,
        seal: AuditSealer,
        now: DateTime<Utc>,
    ) -> Result<(i64, i64), StoreError> {
        self.write(move |conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let entry = &write.entry;
            let entry_id = insert_entry_tx(&tx, entry, now)?;
            tx.execute(
                "INSERT INTO alerts (at, user_id, patient_id, reason, detail, entry_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    ts(now),
                    entry.user_id.clone().unwrap_or_default(),
                    entry.patient_id,
                    write.reason,
                    write.detail.to_string(),
                    entry_id
                ],
            )?;
            let alert_id = tx.last_insert_rowid();
            let mut audit = write.audit;
            audit.detail["alert_id"] = serde_json::json!(alert_id);
            audit.detail["entry_id"] = serde_json::json!(entry_id);
            seal_onto(&tx, audit, seal)?;
            tx.commit()?;
            Ok((entry_id, alert_id))
        })
        .await
    }

    async fn alerts(&self, open_only: bool) -> Result<Vec<AlertRow>, StoreError> {
        self.read(move |conn| {
            alerts_query(
                conn,
                &format!(
                    "SELECT {ALERT_COLUMNS} WHERE (?1 = 0 OR acked_at IS NULL) ORDER BY id DESC"
                ),
                [open_only as i64],
            )
        })
        .await
    }

    async fn alert(&self, id: i64) -> Result<Option<AlertRow>, StoreError> {
        self.read(move |conn| {
            Ok(alerts_query(conn, &format!("SELECT {ALERT_COLUMNS} WHERE id = ?1"), [id])?.pop())
        })
        .await
    }

    async fn ack_alert(
        &self,
        id: i64,
        by: &str,
        note: &str,
        at: DateTime<Utc>,
        audit: AuditEvent,
        seal: AuditSealer,
    ) -> Result<bool, StoreError> {
        let (by, note) = (by.to_string(), note.to_string());
        self.write(move |conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let n = tx.execute(
                "UPDATE alerts SET acked_at = ?2, acked_by = ?3, ack_note = ?4
                 WHERE id = ?1 AND acked_at IS NULL",
                params![id, ts(at), by, note],
            )?;
            if n == 0 {
                return Ok(false);
            }
            seal_onto(&tx, audit, seal)?;
            tx.commit()?;
            Ok(true)
        })
        .await
    }
}

#[async_trait]
impl KeyStore for SqliteStore {
    async fn key_or_insert(
        &self,
        name: &str,
        candidate: &[u8],
        now: DateTime<Utc>,
    ) -> Result<Vec<u8>, StoreError> {
        let (name, candidate) = (name.to_string(), candidate.to_vec());
        self.write(move |conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            tx.execute(
                "INSERT INTO server_keys (name, key, created_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name) DO NOTHING",
                params![name, candidate, ts(now)],
            )?;
            let key: Vec<u8> = tx.query_row(
                "SELECT key FROM server_keys WHERE name = ?1",
                [&name],
                |r| r.get(0),
            )?;
            tx.commit()?;
            Ok(key)
        })
        .await
    }
}

// ---------- notes ----------

const NOTE_COLUMNS: &str = "id, patient_id, author_user_id, device_id, service_id, kind, body,
     created_at, received_at, outcome, reason, delivery_state, delivery_at, delivery_reason,
     practice_ods FROM notes";

fn note_from(r: &rusqlite::Row<'_>) -> rusqlite::Result<(NoteRow, String, Option<String>)> {
    let delivery_at: Option<i64> = r.get(12)?;
    Ok((
        NoteRow {
            id: r.get(0)?,
            patient_id: r.get(1)?,
            author_user_id: r.get(2)?,
            device_id: r.get(3)?,
            service_id: r.get(4)?,
            kind: r.get(5)?,
            body: r.get(6)?,
            created_at: from_ts(r.get(7)?),
            received_at: from_ts(r.get(8)?),
            outcome: NoteOutcome::Rejected,
            reason: r.get(10)?,
            delivery: None,
            delivery_at: delivery_at.map(from_ts),
            delivery_reason: r.get(13)?,
            practice_ods: r.get(14)?,
        },
        r.get(9)?,
        r.get(11)?,
    ))
}

fn finish_note(
    (mut row, outcome, delivery): (NoteRow, String, Option<String>),
) -> Result<NoteRow, StoreError> {
    row.outcome = NoteOutcome::parse(&outcome)
        .ok_or_else(|| StoreError::Corrupt(format!("note {}: outcome {outcome}", row.id)))?;
    row.delivery = match delivery {
        None => None,
        Some(d) => Some(
            DeliveryState::parse(&d)
                .ok_or_else(|| StoreError::Corrupt(format!("note {}: delivery {d}", row.id)))?,
        ),
    };
    Ok(row)
}

fn read_note(conn: &Connection, id: &str) -> Result<Option<NoteRow>, StoreError> {
    let sql = format!("SELECT {NOTE_COLUMNS} WHERE id = ?1");
    conn.prepare_cached(&sql)?
        .query_row([id], note_from)
        .optional()?
        .map(finish_note)
        .transpose()
}

#[async_trait]
impl NoteStore for SqliteStore {
    async fn insert_note(&self, row: NoteRow) -> Result<NoteInsert, StoreError> {
        self.write(move |conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let inserted = tx
                .prepare_cached(
                    "INSERT INTO notes (id, patient_id, author_user_id, device_id, service_id,
                       kind, body, created_at, received_at, outcome, reason, delivery_state,
                       delivery_at, delivery_reason, practice_ods)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)
                     ON CONFLICT (id) DO NOTHING",
                )?
                .execute(params![
                    row.id,
                    row.patient_id,
                    row.author_user_id,
                    row.device_id,
                    row.service_id,
                    row.kind,
                    row.body,
                    ts(row.created_at),
                    ts(row.received_at),
                    row.outcome.as_str(),
                    row.reason,
                    row.delivery.map(DeliveryState::as_str),
                    row.delivery_at.map(ts),
                    row.delivery_reason,
                    row.practice_ods,
                ])?;
            let answer = if inserted == 1 {
                NoteInsert::Inserted
            } else {
                let first = read_note(&tx, &row.id)?.ok_or_else(|| {
                    StoreError::Backend(format!("note {} neither inserted nor found", row.id))
                })?;
                NoteInsert::Existing(Box::new(first))
            };
            tx.commit()?;
            Ok(answer)
        })
        .await
    }

    async fn note(&self, id: &str) -> Result<Option<NoteRow>, StoreError> {
        let id = id.to_string();
        self.read(move |conn| read_note(conn, &id)).await
    }

    async fn notes_for_practice(
        &self,
        ods: &str,
        states: &[DeliveryState],
    ) -> Result<Vec<NoteRow>, StoreError> {
        let ods = ods.to_string();
        let states: Vec<&'static str> = states.iter().map(|s| s.as_str()).collect();
        self.read(move |conn| {
            let sql = format!(
                "SELECT {NOTE_COLUMNS} WHERE practice_ods = ?1 AND outcome = 'accepted'
                 ORDER BY received_at, id"
            );
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map([ods], note_from)?;
            let mut out = Vec::new();
            for row in rows {
                let note = finish_note(row?)?;
                if note.delivery.is_some_and(|d| states.contains(&d.as_str())) {
                    out.push(note);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn set_note_deliveries(&self, writes: Vec<DeliveryWrite>) -> Result<(), StoreError> {
        self.write(move |conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            for w in &writes {
                let changed = tx
                    .prepare_cached(
                        "UPDATE notes SET delivery_state = ?2, delivery_at = ?3,
                           delivery_reason = ?4
                         WHERE id = ?1 AND delivery_state = ?5",
                    )?
                    .execute(params![
                        w.note_id,
                        w.state.as_str(),
                        ts(w.at),
                        w.reason,
                        w.expected.as_str()
                    ])?;
                if changed != 1 {
                    // Dropping the transaction rolls back the writes before this one.
                    return Err(StoreError::Stale(format!(
                        "note {} is no longer {}",
                        w.note_id, w.expected
                    )));
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }
}

fn insert_pair(
    tx: &Transaction<'_>,
    device: &str,
    pair: &TokenPair,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO tokens (hash, device_id, kind, issued_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    stmt.execute(params![
        pair.access_hash,
        device,
        TokenKind::Access.as_str(),
        ts(now),
        ts(pair.access_expires_at)
    ])?;
    stmt.execute(params![
        pair.refresh_hash,
        device,
        TokenKind::Refresh.as_str(),
        ts(now),
        ts(pair.refresh_expires_at)
    ])?;
    Ok(())
}

// ---------- administration ----------

fn agreement_json(a: &Agreement) -> Result<String, StoreError> {
    serde_json::to_string(a).map_err(|e| StoreError::Backend(e.to_string()))
}

fn agreement_from_json(json: &str) -> Result<Agreement, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt(format!("agreement: {e}")))
}

#[async_trait]
impl AdminStore for SqliteStore {
    async fn put_admin_credential(&self, row: AdminCredentialRow) -> Result<(), StoreError> {
        self.write(move |conn| {
            conn.execute(
                "INSERT INTO admin_credentials (name, secret_hash, created_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name) DO UPDATE SET secret_hash = excluded.secret_hash,
                   created_at = excluded.created_at",
                params![row.name, row.secret_hash, ts(row.created_at)],
            )?;
            Ok(())
        })
        .await
    }

    async fn admin_credential(&self, name: &str) -> Result<Option<AdminCredentialRow>, StoreError> {
        let name = name.to_string();
        self.read(move |conn| {
            Ok(conn
                .query_row(
                    "SELECT name, secret_hash, created_at FROM admin_credentials WHERE name = ?1",
                    [&name],
                    |r| {
                        Ok(AdminCredentialRow {
                            name: r.get(0)?,
                            secret_hash: r.get(1)?,
                            created_at: from_ts(r.get(2)?),
                        })
                    },
                )
                .optional()?)
        })
        .await
    }

    async fn services(&self) -> Result<Vec<ServiceRow>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare("SELECT id, name FROM services ORDER BY id")?;
            let rows = stmt.query_map([], |r| {
                Ok(ServiceRow {
                    id: r.get(0)?,
                    name: r.get(1)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn all_agreements(&self) -> Result<Vec<Agreement>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare("SELECT json FROM agreements ORDER BY id")?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
            let mut out = Vec::new();
            for json in rows {
                out.push(agreement_from_json(&json?)?);
            }
            Ok(out)
        })
        .await
    }

    async fn agreement(&self, id: &str) -> Result<Option<Agreement>, StoreError> {
        let id = id.to_string();
        self.read(move |conn| {
            let json: Option<String> = conn
                .query_row("SELECT json FROM agreements WHERE id = ?1", [&id], |r| {
                    r.get(0)
                })
                .optional()?;
            json.as_deref().map(agreement_from_json).transpose()
        })
        .await
    }

    async fn write_agreement(
        &self,
        write: AgreementWrite,
        audit: AuditEvent,
        seal: AuditSealer,
    ) -> Result<AuditRow, StoreError> {
        self.write(move |conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let a = &write.agreement;
            let stored: Option<String> = tx
                .query_row("SELECT json FROM agreements WHERE id = ?1", [&a.id], |r| {
                    r.get(0)
                })
                .optional()?;
            let stored_version = stored
                .as_deref()
                .map(agreement_from_json)
                .transpose()?
                .map(|s| s.version);
            if stored_version != write.expected_version {
                return Err(StoreError::Stale(format!(
                    "agreement {} is at version {stored_version:?}, not {:?}",
                    a.id, write.expected_version
                )));
            }
            let json = agreement_json(a)?;
            tx.execute(
                "INSERT INTO agreements (id, service_id, json, updated_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (id) DO UPDATE SET service_id = excluded.service_id,
                   json = excluded.json, updated_at = excluded.updated_at",
                params![a.id, a.service, json, ts(write.at)],
            )?;
            tx.execute(
                "INSERT INTO agreement_versions (id, version, json, changed_at, actor, reason)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    a.id,
                    a.version,
                    json,
                    ts(write.at),
                    write.actor,
                    write.reason
                ],
            )?;
            let row = seal_onto(&tx, audit, seal)?;
            tx.commit()?;
            Ok(row)
        })
        .await
    }

    async fn agreement_versions(&self, id: &str) -> Result<Vec<AgreementVersionRow>, StoreError> {
        let id = id.to_string();
        self.read(move |conn| {
            let mut stmt = conn.prepare(
                "SELECT json, changed_at, actor, reason FROM agreement_versions WHERE id = ?1
                 ORDER BY version",
            )?;
            let rows = stmt.query_map([&id], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (json, at, actor, reason) = row?;
                out.push(AgreementVersionRow {
                    agreement: agreement_from_json(&json)?,
                    changed_at: from_ts(at),
                    actor,
                    reason,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn load_value_set(
        &self,
        load: ValueSetLoad,
        audit: AuditEvent,
        seal: AuditSealer,
    ) -> Result<i64, StoreError> {
        self.write(move |conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            tx.execute(
                "INSERT INTO value_sets (url, json, loaded_at, actor, reason)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![load.url, load.json, ts(load.at), load.actor, load.reason],
            )?;
            let seq = tx.last_insert_rowid();
            seal_onto(&tx, audit, seal)?;
            tx.commit()?;
            Ok(seq)
        })
        .await
    }

    async fn value_sets(&self) -> Result<Vec<ValueSetRow>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare(
                "SELECT seq, url, json, loaded_at, actor, reason FROM value_sets ORDER BY seq",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok(ValueSetRow {
                    seq: r.get(0)?,
                    url: r.get(1)?,
                    json: r.get(2)?,
                    loaded_at: from_ts(r.get(3)?),
                    actor: r.get(4)?,
                    reason: r.get(5)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn value_set_version(&self) -> Result<i64, StoreError> {
        self.read(|conn| {
            Ok(
                conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM value_sets", [], |r| {
                    r.get(0)
                })?,
            )
        })
        .await
    }

    async fn patient_by_nhs_number(
        &self,
        nhs_number: &str,
    ) -> Result<Option<PatientRow>, StoreError> {
        let nhs = nhs_number.to_string();
        self.read(move |conn| {
            Ok(conn
                .query_row(
                    &format!("SELECT {PATIENT_COLUMNS} WHERE p.nhs_number = ?1"),
                    [&nhs],
                    patient_from,
                )
                .optional()?)
        })
        .await
    }

    async fn patients_born_on(&self, date: NaiveDate) -> Result<Vec<PatientRow>, StoreError> {
        let date = date.format("%Y-%m-%d").to_string();
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {PATIENT_COLUMNS} WHERE p.birth_date = ?1 ORDER BY p.id"
            ))?;
            let rows = stmt.query_map([date], patient_from)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn write_user_role(
        &self,
        user_id: &str,
        role: &str,
        audit: AuditEvent,
        seal: AuditSealer,
    ) -> Result<AuditRow, StoreError> {
        let (id, role) = (user_id.to_string(), role.to_string());
        self.write(move |conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let n = tx.execute(
                "UPDATE users SET role = ?2 WHERE id = ?1",
                params![id, role],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("user {id}")));
            }
            let row = seal_onto(&tx, audit, seal)?;
            tx.commit()?;
            Ok(row)
        })
        .await
    }

    async fn devices(&self) -> Result<Vec<DeviceRow>, StoreError> {
        self.read(move |conn| {
            let mut stmt = conn.prepare(
                "SELECT id, user_id, name, created_at, revoked_at FROM devices
                 ORDER BY created_at, id",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok(DeviceRow {
                    id: r.get(0)?,
                    user_id: r.get(1)?,
                    name: r.get(2)?,
                    created_at: from_ts(r.get(3)?),
                    revoked_at: r.get::<_, Option<i64>>(4)?.map(from_ts),
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn write_device_revoked(
        &self,
        device_id: &str,
        now: DateTime<Utc>,
        audit: AuditEvent,
        seal: AuditSealer,
    ) -> Result<AuditRow, StoreError> {
        let id = device_id.to_string();
        self.write(move |conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let n = tx.execute(
                "UPDATE devices SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
                params![id, ts(now)],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("active device {id}")));
            }
            tx.execute(
                "UPDATE tokens SET revoked_at = ?2 WHERE device_id = ?1 AND revoked_at IS NULL",
                params![id, ts(now)],
            )?;
            let row = seal_onto(&tx, audit, seal)?;
            tx.commit()?;
            Ok(row)
        })
        .await
    }

    async fn write_account(
        &self,
        user_id: &str,
        write: AccountWrite,
        audit: AuditEvent,
        seal: AuditSealer,
    ) -> Result<AuditRow, StoreError> {
        let id = user_id.to_string();
        self.write(move |conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let n = match &write {
                AccountWrite::Disabled(disabled) => tx.execute(
                    "UPDATE users SET disabled = ?2 WHERE id = ?1",
                    params![id, disabled],
                )?,
                AccountWrite::Unlock => tx.execute(
                    "UPDATE users SET failed_attempts = 0, locked_until = NULL WHERE id = ?1",
                    params![id],
                )?,
                AccountWrite::TotpSecret(secret) => tx.execute(
                    "UPDATE users SET totp_secret = ?2 WHERE id = ?1",
                    params![id, secret],
                )?,
            };
            if n == 0 {
                return Err(StoreError::NotFound(format!("user {id}")));
            }
            let row = seal_onto(&tx, audit, seal)?;
            tx.commit()?;
            Ok(row)
        })
        .await
    }

    async fn write_new_user(
        &self,
        user: NewUser,
        now: DateTime<Utc>,
        audit: AuditEvent,
        seal: AuditSealer,
    ) -> Result<String, StoreError> {
        self.write(move |conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let taken: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM users WHERE username = ?1)",
                [&user.username],
                |r| r.get(0),
            )?;
            if taken {
                return Err(StoreError::Conflict(format!(
                    "user {} already exists",
                    user.username
                )));
            }
            let id = uuid::Uuid::new_v4().to_string();
            tx.execute(
                "INSERT INTO users (id, username, display_name, role, service_id, password_hash,
                   totp_secret, created_at, practice_ods)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    id,
                    user.username,
                    user.display_name,
                    user.role,
                    user.service_id,
                    user.password_hash,
                    user.totp_secret,
                    ts(now),
                    user.practice_ods
                ],
            )?;
            seal_onto(&tx, audit, seal)?;
            tx.commit()?;
            Ok(id)
        })
        .await
    }

    async fn write_dissent(
        &self,
        patient_id: &str,
        dissent: bool,
        audit: AuditEvent,
        seal: AuditSealer,
    ) -> Result<AuditRow, StoreError> {
        let id = patient_id.to_string();
        self.write(move |conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let n = tx.execute(
                "UPDATE patients SET dissent = ?2, updated_at = ?3 WHERE id = ?1",
                params![id, dissent, ts(audit.at)],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("patient {id}")));
            }
            let row = seal_onto(&tx, audit, seal)?;
            tx.commit()?;
            Ok(row)
        })
        .await
    }
}

// ---------- staff: sign-ins, sessions, bookings, caseload changes, figure rows ----------

const SESSION_COLUMNS: &str = "id, service_id, list_id, clinician_user_id, starts_at, ends_at,
     slots, created_at FROM clinic_sessions";

fn session_from(r: &rusqlite::Row<'_>) -> rusqlite::Result<ClinicSessionRow> {
    Ok(ClinicSessionRow {
        id: r.get(0)?,
        service_id: r.get(1)?,
        list_id: r.get(2)?,
        clinician_user_id: r.get(3)?,
        starts_at: from_ts(r.get(4)?),
        ends_at: from_ts(r.get(5)?),
        slots: r.get(6)?,
        created_at: from_ts(r.get(7)?),
    })
}

const BOOKING_COLUMNS: &str = "id, session_id, slot, slot_starts_at, patient_id, entry_id, reason,
     booked_by, booked_at, cancelled_at, cancelled_by, cancel_reason FROM bookings";

fn booking_from(r: &rusqlite::Row<'_>) -> rusqlite::Result<BookingRow> {
    let cancelled: Option<i64> = r.get(9)?;
    Ok(BookingRow {
        id: r.get(0)?,
        session_id: r.get(1)?,
        slot: r.get(2)?,
        slot_starts_at: from_ts(r.get(3)?),
        patient_id: r.get(4)?,
        entry_id: r.get(5)?,
        reason: r.get(6)?,
        booked_by: r.get(7)?,
        booked_at: from_ts(r.get(8)?),
        cancelled_at: cancelled.map(from_ts),
        cancelled_by: r.get(10)?,
        cancel_reason: r.get(11)?,
    })
}

fn is_constraint(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.code == rusqlite::ErrorCode::ConstraintViolation)
}

/// End every open entry of `patient` on `list` at `at`, with a list feed row when any ended.
fn end_entries_tx(
    tx: &Transaction<'_>,
    list: &str,
    patient: &str,
    at: DateTime<Utc>,
) -> Result<usize, StoreError> {
    let n = tx.execute(
        "UPDATE list_entries SET ends_at = ?3
         WHERE list_id = ?1 AND patient_id = ?2 AND (ends_at IS NULL OR ends_at > ?3)",
        params![list, patient, ts(at)],
    )?;
    if n > 0 {
        append_feed(tx, patient, None, FeedOp::List, ts(at))?;
    }
    Ok(n)
}

#[async_trait]
impl StaffStore for SqliteStore {
    async fn put_staff_token(&self, row: StaffTokenRow) -> Result<(), StoreError> {
        self.write(move |conn| {
            conn.execute(
                "INSERT INTO staff_tokens (hash, user_id, issued_at, expires_at, revoked_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    row.hash,
                    row.user_id,
                    ts(row.issued_at),
                    ts(row.expires_at),
                    row.revoked_at.map(ts)
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn staff_token(&self, hash: &str) -> Result<Option<StaffTokenRow>, StoreError> {
        let hash = hash.to_string();
        self.read(move |conn| {
            Ok(conn
                .query_row(
                    "SELECT hash, user_id, issued_at, expires_at, revoked_at FROM staff_tokens
                     WHERE hash = ?1",
                    [hash],
                    |r| {
                        let revoked: Option<i64> = r.get(4)?;
                        Ok(StaffTokenRow {
                            hash: r.get(0)?,
                            user_id: r.get(1)?,
                            issued_at: from_ts(r.get(2)?),
                            expires_at: from_ts(r.get(3)?),
                            revoked_at: revoked.map(from_ts),
                        })
                    },
                )
                .optional()?)
        })
        .await
    }

    async fn write_staff_token_revoked(
        &self,
        hash: &str,
        now: DateTime<Utc>,
        audit: AuditEvent,
        seal: AuditSealer,
    ) -> Result<AuditRow, StoreError> {
        let hash = hash.to_string();
        self.write(move |conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let n = tx.execute(
                "UPDATE staff_tokens SET revoked_at = ?2 WHERE hash = ?1 AND revoked_at IS NULL",
                params![hash, ts(now)],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound("live staff token".into()));
            }
            let row = seal_onto(&tx, audit, seal)?;
            tx.commit()?;
            Ok(row)
        })
        .await
    }

    async fn write_clinic_session(
        &self,
        session: ClinicSessionRow,
        list: ListRow,
        audit: AuditEvent,
        seal: AuditSealer,
    ) -> Result<(), StoreError> {
        self.write(move |conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let exists: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM clinic_sessions WHERE id = ?1)
                    OR EXISTS (SELECT 1 FROM lists WHERE id = ?2)",
                params![session.id, list.id],
                |r| r.get(0),
            )?;
            if exists {
                return Err(StoreError::Conflict(format!(
                    "a session {} already exists",
                    session.id
                )));
            }
            tx.execute(
                "INSERT INTO lists (id, name, kind, service_id, owner_user_id, team)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    list.id,
                    list.name,
                    list_kind_as_str(list.kind),
                    list.service_id,
                    list.owner_user_id,
                    list.team
                ],
            )?;
            tx.execute(
                "INSERT INTO clinic_sessions (id, service_id, list_id, clinician_user_id,
                   starts_at, ends_at, slots, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    session.id,
                    session.service_id,
                    session.list_id,
                    session.clinician_user_id,
                    ts(session.starts_at),
                    ts(session.ends_at),
                    session.slots,
                    ts(session.created_at)
                ],
            )?;
            seal_onto(&tx, audit, seal)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn clinic_session(&self, id: &str) -> Result<Option<ClinicSessionRow>, StoreError> {
        let id = id.to_string();
        self.read(move |conn| {
            Ok(conn
                .query_row(
                    &format!("SELECT {SESSION_COLUMNS} WHERE id = ?1"),
                    [id],
                    session_from,
                )
                .optional()?)
        })
        .await
    }

    async fn clinic_sessions(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<ClinicSessionRow>, StoreError> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {SESSION_COLUMNS} WHERE ends_at > ?1 AND starts_at < ?2
                 ORDER BY starts_at, id"
            ))?;
            let rows = stmt.query_map(params![ts(from), ts(to)], session_from)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn session_bookings(&self, session_id: &str) -> Result<Vec<BookingRow>, StoreError> {
        let id = session_id.to_string();
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {BOOKING_COLUMNS} WHERE session_id = ?1 ORDER BY slot, id"
            ))?;
            let rows = stmt.query_map([id], booking_from)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn booking(&self, id: i64) -> Result<Option<BookingRow>, StoreError> {
        self.read(move |conn| {
            Ok(conn
                .query_row(
                    &format!("SELECT {BOOKING_COLUMNS} WHERE id = ?1"),
                    [id],
                    booking_from,
                )
                .optional()?)
        })
        .await
    }

    async fn write_booking(
        &self,
        write: BookingWrite,
        audit: AuditEvent,
        seal: AuditSealer,
    ) -> Result<BookingRow, StoreError> {
        self.write(move |conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let entry_id = insert_entry_tx(&tx, &write.entry, write.at)?;
            let inserted = tx.execute(
                "INSERT INTO bookings (session_id, slot, slot_starts_at, patient_id, entry_id,
                   reason, booked_by, booked_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    write.session_id,
                    write.slot,
                    ts(write.slot_starts_at),
                    write.entry.patient_id,
                    entry_id,
                    write.entry.reason,
                    write.booked_by,
                    ts(write.at)
                ],
            );
            match inserted {
                Ok(_) => {}
                Err(e) if is_constraint(&e) => {
                    return Err(StoreError::Conflict(format!(
                        "slot {} of session {} is already booked",
                        write.slot, write.session_id
                    )));
                }
                Err(e) => return Err(e.into()),
            }
            let id = tx.last_insert_rowid();
            let mut audit = audit;
            audit.detail["booking_id"] = serde_json::json!(id);
            seal_onto(&tx, audit, seal)?;
            let row = tx.query_row(
                &format!("SELECT {BOOKING_COLUMNS} WHERE id = ?1"),
                [id],
                booking_from,
            )?;
            tx.commit()?;
            Ok(row)
        })
        .await
    }

    async fn write_booking_cancelled(
        &self,
        id: i64,
        by: &str,
        reason: &str,
        at: DateTime<Utc>,
        audit: AuditEvent,
        seal: AuditSealer,
    ) -> Result<(), StoreError> {
        let (by, reason) = (by.to_string(), reason.to_string());
        self.write(move |conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let booking: Option<(i64, String)> = tx
                .query_row(
                    "SELECT entry_id, patient_id FROM bookings
                     WHERE id = ?1 AND cancelled_at IS NULL",
                    [id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let Some((entry_id, patient_id)) = booking else {
                return Err(StoreError::NotFound(format!(
                    "no booking {id} that is not cancelled"
                )));
            };
            tx.execute(
                "UPDATE bookings SET cancelled_at = ?2, cancelled_by = ?3, cancel_reason = ?4
                 WHERE id = ?1",
                params![id, ts(at), by, reason],
            )?;
            let ended = tx.execute(
                "UPDATE list_entries SET ends_at = ?2
                 WHERE id = ?1 AND (ends_at IS NULL OR ends_at > ?2)",
                params![entry_id, ts(at)],
            )?;
            if ended > 0 {
                append_feed(&tx, &patient_id, None, FeedOp::List, ts(at))?;
            }
            seal_onto(&tx, audit, seal)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn write_list_change(
        &self,
        change: ListChange,
        audit: AuditEvent,
        seal: AuditSealer,
    ) -> Result<Option<i64>, StoreError> {
        self.write(move |conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            if let Some((list, patient)) = &change.end
                && end_entries_tx(&tx, list, patient, change.at)? == 0
            {
                return Err(StoreError::NotFound(format!(
                    "no open entry of this patient on list {list}"
                )));
            }
            let added = match &change.add {
                Some(entry) => Some(insert_entry_tx(&tx, entry, change.at)?),
                None => None,
            };
            let mut audit = audit;
            if let Some(id) = added {
                audit.detail["entry_id"] = serde_json::json!(id);
            }
            seal_onto(&tx, audit, seal)?;
            tx.commit()?;
            Ok(added)
        })
        .await
    }

    async fn figure_rows(
        &self,
        actions: &[&str],
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<FigureRows, StoreError> {
        let actions: Vec<String> = actions.iter().map(|a| a.to_string()).collect();
        self.read(move |conn| {
            let mut audit = Vec::new();
            for action in &actions {
                audit.extend(audit_query(
                    conn,
                    &format!(
                        "SELECT {AUDIT_COLUMNS} FROM audit WHERE action = ?1 AND at >= ?2
                         AND at < ?3 ORDER BY seq"
                    ),
                    params![action, ts(from), ts(to)],
                )?);
            }
            audit.sort_by_key(|r| r.seq);
            let mut notes = Vec::new();
            {
                let mut stmt = conn.prepare_cached(&format!(
                    "SELECT {NOTE_COLUMNS} WHERE outcome = 'accepted' AND created_at >= ?1
                     AND created_at < ?2 ORDER BY created_at, id"
                ))?;
                for row in stmt.query_map(params![ts(from), ts(to)], note_from)? {
                    notes.push(finish_note(row?)?);
                }
            }
            let mut bookings = Vec::new();
            {
                let mut stmt = conn.prepare_cached(
                    "SELECT s.service_id, s.clinician_user_id, u.username, b.patient_id, b.slot_starts_at, e.ends_at,
                       b.cancelled_at IS NOT NULL
                     FROM bookings b JOIN clinic_sessions s ON s.id = b.session_id
                     JOIN users u ON u.id = s.clinician_user_id
                     JOIN list_entries e ON e.id = b.entry_id
                     WHERE b.slot_starts_at >= ?1 AND b.slot_starts_at < ?2
                     ORDER BY b.slot_starts_at, b.id",
                )?;
                let rows = stmt.query_map(params![ts(from), ts(to)], |r| {
                    let ends: Option<i64> = r.get(5)?;
                    Ok(BookingFigureRow {
                        service_id: r.get(0)?,
                        clinician_user_id: r.get(1)?,
                        clinician_username: r.get(2)?,
                        patient_id: r.get(3)?,
                        slot_starts_at: from_ts(r.get(4)?),
                        entry_ends_at: ends.map(from_ts),
                        cancelled: r.get(6)?,
                    })
                })?;
                for row in rows {
                    bookings.push(row?);
                }
            }
            let mut ids: Vec<String> = audit
                .iter()
                .filter_map(|r| r.event.patient_id.clone())
                .chain(notes.iter().map(|n| n.patient_id.clone()))
                .chain(bookings.iter().map(|b| b.patient_id.clone()))
                .collect();
            ids.sort();
            ids.dedup();
            let mut patients = Vec::new();
            {
                let mut stmt =
                    conn.prepare_cached(&format!("SELECT {PATIENT_COLUMNS} WHERE p.id = ?1"))?;
                for id in ids {
                    if let Some(p) = stmt.query_row([id], patient_from).optional()? {
                        patients.push(p);
                    }
                }
            }
            Ok(FigureRows {
                audit,
                notes,
                bookings,
                patients,
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_migration_file_is_embedded_in_order() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations/server-sqlite");
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".sql"))
            .collect();
        files.sort();
        let embedded: Vec<String> = MIGRATIONS
            .iter()
            .map(|(_, name, _)| format!("{name}.sql"))
            .collect();
        assert_eq!(files, embedded);
        for (i, (version, name, _)) in MIGRATIONS.iter().enumerate() {
            assert_eq!(*version, i as i64 + 1);
            assert!(name.starts_with(&format!("{version:04}_")));
        }
    }

    #[test]
    fn opening_twice_applies_migrations_once_in_wal_mode() {
        let dir = tempfile::tempdir().unwrap();
        let a = SqliteStore::open(dir.path()).unwrap();
        let every: Vec<i64> = MIGRATIONS.iter().map(|(v, _, _)| *v).collect();
        assert_eq!(a.applied_migrations().unwrap(), every);
        drop(a);
        let b = SqliteStore::open(dir.path()).unwrap();
        assert_eq!(b.applied_migrations().unwrap(), every);
        let conn = b.inner.writer.lock().unwrap();
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let fk: bool = conn
            .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
            .unwrap();
        assert!(fk);
    }

    #[test]
    fn a_database_migrated_by_a_newer_server_is_refused_naming_both_versions() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        store
            .inner
            .writer
            .lock()
            .unwrap()
            .execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (99, 'x', 0)",
                [],
            )
            .unwrap();
        drop(store);
        let e = SqliteStore::open(dir.path()).unwrap_err();
        assert!(
            matches!(
                e,
                StoreError::SchemaTooNew {
                    database: 99,
                    known
                } if known == MIGRATIONS.len() as i64
            ),
            "{e:?}"
        );
        let text = e.to_string();
        assert!(
            text.contains("version 99") && text.contains(&format!("version {}", MIGRATIONS.len())),
            "{text}"
        );
    }

    #[tokio::test]
    async fn the_first_key_stored_under_a_name_stays() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let now = Utc::now();
        assert_eq!(store.key_or_insert("k", b"one", now).await.unwrap(), b"one");
        assert_eq!(store.key_or_insert("k", b"two", now).await.unwrap(), b"one");
        assert_eq!(store.key_or_insert("j", b"two", now).await.unwrap(), b"two");
    }

    #[tokio::test]
    async fn audit_rows_are_stored_as_sealed_only_on_the_tip_and_never_edited() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        // The backend does not hash: it keeps whatever hashes it is given.
        let row = |seq: i64, prev: &str, hash: &str| AuditRow {
            seq,
            event: AuditEvent {
                at: DateTime::from_timestamp(1_768_000_000 + seq, 0).unwrap(),
                actor: "cli".into(),
                action: "test".into(),
                patient_id: None,
                detail: serde_json::json!({ "i": seq }),
            },
            prev_hash: prev.into(),
            hash: hash.into(),
        };
        assert_eq!(store.audit_tip().await.unwrap(), None);
        store.append_audit_row(row(1, "g", "h1")).await.unwrap();
        store.append_audit_row(row(2, "h1", "h2")).await.unwrap();
        for stale in [
            row(2, "h1", "x"),
            row(3, "h1", "x"),
            row(1, "g", "x"),
            row(4, "h2", "x"),
        ] {
            assert!(matches!(
                store.append_audit_row(stale).await,
                Err(StoreError::Stale(_))
            ));
        }
        assert_eq!(
            store.audit_tip().await.unwrap(),
            Some(AuditTip {
                seq: 2,
                hash: "h2".into()
            })
        );
        assert_eq!(
            store.audit_rows().await.unwrap(),
            vec![row(1, "g", "h1"), row(2, "h1", "h2")]
        );
        let conn = store.inner.writer.lock().unwrap();
        assert!(conn.execute("UPDATE audit SET actor = 'x'", []).is_err());
        assert!(conn.execute("DELETE FROM audit", []).is_err());
    }

    /// A store with a service, a user and a device of theirs: (store, user id, device id).
    async fn store_with_device(dir: &Path) -> (SqliteStore, String, String) {
        let store = SqliteStore::open(dir).unwrap();
        let now = Utc::now();
        store
            .upsert_service(ServiceRow {
                id: "dn".into(),
                name: "District nursing".into(),
            })
            .await
            .unwrap();
        let user = store
            .create_user(
                NewUser {
                    username: "n".into(),
                    display_name: "N".into(),
                    role: "nurse".into(),
                    service_id: "dn".into(),
                    password_hash: "x".into(),
                    totp_secret: "x".into(),
                    practice_ods: None,
                },
                now,
            )
            .await
            .unwrap();
        let device = store.create_device(&user, "tablet", now).await.unwrap();
        (store, user, device)
    }

    fn note_row(id: &str, user: &str, device: &str, outcome: NoteOutcome) -> NoteRow {
        let at = DateTime::from_timestamp(1_780_000_000, 0).unwrap();
        let accepted = outcome == NoteOutcome::Accepted;
        NoteRow {
            id: id.into(),
            patient_id: "p1".into(),
            author_user_id: user.into(),
            device_id: device.into(),
            service_id: "dn".into(),
            kind: "note".into(),
            body: accepted.then(|| "{}".to_string()),
            created_at: at,
            received_at: at,
            outcome,
            reason: (!accepted).then(|| "not on your list".to_string()),
            delivery: accepted.then_some(DeliveryState::Accepted),
            delivery_at: accepted.then_some(at),
            delivery_reason: None,
            practice_ods: accepted.then(|| "A81001".to_string()),
        }
    }

    #[tokio::test]
    async fn a_note_is_stored_once_and_a_second_insert_answers_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let (store, user, device) = store_with_device(dir.path()).await;
        let first = note_row("n1", &user, &device, NoteOutcome::Accepted);
        assert_eq!(
            store.insert_note(first.clone()).await.unwrap(),
            NoteInsert::Inserted
        );
        // The resend differs (say, rejected this time): the stored first row answers.
        let again = note_row("n1", &user, &device, NoteOutcome::Rejected);
        assert_eq!(
            store.insert_note(again).await.unwrap(),
            NoteInsert::Existing(Box::new(first.clone()))
        );
        assert_eq!(store.note("n1").await.unwrap(), Some(first.clone()));
        let rejected = note_row("n2", &user, &device, NoteOutcome::Rejected);
        store.insert_note(rejected.clone()).await.unwrap();
        assert_eq!(store.note("n2").await.unwrap(), Some(rejected));

        // The inbox reads accepted notes of the practice in the states asked for.
        let open = [DeliveryState::Accepted, DeliveryState::Received];
        let inbox = store.notes_for_practice("A81001", &open).await.unwrap();
        assert_eq!(inbox, vec![first.clone()]);
        assert!(
            store
                .notes_for_practice("B82002", &open)
                .await
                .unwrap()
                .is_empty()
        );

        // A delivery change is written only from the state it was decided on, all or nothing.
        let at = DateTime::from_timestamp(1_780_000_600, 0).unwrap();
        let filed = DeliveryWrite {
            note_id: "n1".into(),
            expected: DeliveryState::Accepted,
            state: DeliveryState::Filed,
            at,
            reason: None,
        };
        let stale = DeliveryWrite {
            note_id: "n1".into(),
            expected: DeliveryState::Received,
            state: DeliveryState::Filed,
            at,
            reason: None,
        };
        assert!(matches!(
            store.set_note_deliveries(vec![filed.clone(), stale]).await,
            Err(StoreError::Stale(_))
        ));
        assert_eq!(store.note("n1").await.unwrap(), Some(first));
        store.set_note_deliveries(vec![filed]).await.unwrap();
        let n1 = store.note("n1").await.unwrap().unwrap();
        assert_eq!(
            (n1.delivery, n1.delivery_at),
            (Some(DeliveryState::Filed), Some(at))
        );
        assert!(
            store
                .notes_for_practice("A81001", &open)
                .await
                .unwrap()
                .is_empty()
        );
    }
}
