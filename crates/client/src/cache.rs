//! The encrypted cache: opening it with the key, its migrations, and applying pull pages.
//!
//! Rules:
//! - The file is SQLCipher from its first byte: the key is set before anything is read or
//!   written, and a wrong key is told apart from every other failure ([`OpenError::WrongKey`]).
//! - Each pull page is applied in one transaction together with the cursor that follows it, so a
//!   sync cut anywhere resumes from the last stored cursor without loss or duplication.
//! - Every change is idempotent: applying a page twice leaves the same cache.
//! - WAL with `synchronous = NORMAL`: one fsync per checkpoint, not per row or page commit.
//!   A sync of more than one page ends with the WAL checkpointed and truncated
//!   ([`checkpoint_truncate`]); otherwise `journal_size_limit` keeps it to 1 MiB, so the
//!   WAL's size on disk is not the last big sync's.
//! - Rebuild (after a 410 from the server) happens beside the copy the device holds, never by
//!   emptying it first: [`begin_rebuild`] drops the cursor and notes when the rebuild began;
//!   the pull from scratch then replaces each patient as its snapshot arrives (a snapshot
//!   replaces what the device held of that patient) and [`apply_page`] records it in
//!   `rebuild_seen`; the page that ends the rebuild (`more == false`) also purges, in its own
//!   transaction, every patient the rebuild did not bring. Until then the old copy stays
//!   readable, marked as being rebuilt ([`rebuilding_since`]), so a drop in signal half-way
//!   leaves the nurse her records, not an empty or half-full list. Only patient data and the
//!   cursor are touched; other tables (tokens, the outbox of a later issue) are left alone.

use std::collections::BTreeSet;
use std::path::Path;

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use doorstep_protocol::{ListEntry, ListKind, PatientHeader, WithheldCount};
use doorstep_record::fhir::Resource;
use doorstep_record::views::{AlertKind, RecordView, build_record, patient_details};
use rusqlite::{Connection, ErrorCode, OptionalExtension, Transaction, params};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::error::{ClientError, Result};
use crate::key::key_pragma;
use crate::text::{name_search_key, name_sort_key, normalise_postcode};
use crate::wire::{Change, Page, type_and_id};

/// The device migrations, in order. Each runs once, in its own transaction.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "cache",
        include_str!("../../../migrations/device/0001_cache.sql"),
    ),
    (
        2,
        "rebuild",
        include_str!("../../../migrations/device/0002_rebuild.sql"),
    ),
    (
        3,
        "outbox",
        include_str!("../../../migrations/device/0003_outbox.sql"),
    ),
    (
        4,
        "resources_by_patient",
        include_str!("../../../migrations/device/0004_resources_by_patient.sql"),
    ),
    (
        5,
        "resources_without_rowid",
        include_str!("../../../migrations/device/0005_resources_without_rowid.sql"),
    ),
];

/// Keys of the `meta` table.
pub(crate) mod meta {
    pub const CURSOR: &str = "cursor";
    /// When the rebuild in progress began (absent when none is).
    pub const REBUILDING_SINCE: &str = "rebuilding_since";
    /// Server time of the last page of the last completed sync.
    pub const AS_OF: &str = "as_of";
    pub const LAST_SYNCED: &str = "last_synced";
    /// The last successful contact with the server (a completed sync, an online sign-in).
    pub const LAST_CONTACT: &str = "last_contact";
    /// The shortest `max_offline_hours` of the user's agreements, from the last sync.
    pub const MAX_OFFLINE_HOURS: &str = "max_offline_hours";
    /// The shortest `idle_lock_minutes` of the user's agreements, from the last sync.
    pub const IDLE_LOCK_MINUTES: &str = "idle_lock_minutes";
    /// The shortest `stale_after_hours` of the user's agreements, from the last sync.
    pub const STALE_AFTER_HOURS: &str = "stale_after_hours";
    /// What the last completed sync did (`SyncSummary` as JSON), for the sync screen.
    pub const LAST_SYNC_SUMMARY: &str = "last_sync_summary";
    pub const LAST_ERROR: &str = "last_error";
    /// The last failure sending the outbox (cleared by a push that reached the server).
    pub const LAST_PUSH_ERROR: &str = "last_push_error";
    pub const SERVER_REACHABLE: &str = "server_reachable";
    pub const ACCESS_TOKEN: &str = "access_token";
    pub const ACCESS_EXPIRES_AT: &str = "access_expires_at";
    pub const REFRESH_TOKEN: &str = "refresh_token";
    pub const USER: &str = "user";
}

/// Why the cache did not open.
#[derive(Debug)]
pub(crate) enum OpenError {
    /// The key does not decrypt the file: a wrong PIN.
    WrongKey,
    Other(ClientError),
}

impl From<rusqlite::Error> for OpenError {
    fn from(e: rusqlite::Error) -> Self {
        OpenError::Other(e.into())
    }
}

/// Open (or create) the cache at `path` with `key`, check the key with a read, set the
/// connection up and bring the schema up to date.
pub(crate) fn open(path: &Path, key: &[u8; 32]) -> std::result::Result<Connection, OpenError> {
    open_keyed(path, Some(key))
}

/// [`open`], or with `key` `None` a plain SQLite file set up the same way (only the
/// benchmark of SQLCipher's overhead opens one: `crate::workload`).
pub(crate) fn open_keyed(
    path: &Path,
    key: Option<&[u8; 32]>,
) -> std::result::Result<Connection, OpenError> {
    let conn = Connection::open(path)?;
    // A wrong PIN is an expected outcome, reported as WrongPin: keep SQLCipher from printing
    // its decryption failure to stderr.
    conn.query_row("PRAGMA cipher_log_level = NONE", [], |_| Ok(()))?;
    // SQLCipher always wipes its key material on close. Wiping *every* allocation on free
    // (cipher_memory_security) tripled search times (12.9 ms vs 0.2-1.2 ms over 10,000
    // patients, BENCHMARKS.md) for little gain: decrypted pages are in memory while unlocked
    // anyway, and the idle lock closes the connection. Off, deliberately.
    conn.execute_batch("PRAGMA cipher_memory_security = OFF;")?;
    // rusqlite hands the SQL text to SQLite without a copy of its own; ours is a Zeroizing
    // string.
    if let Some(key) = key {
        conn.execute_batch(&key_pragma(key))?;
    }
    // The key is only tried on the first read.
    match conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
        r.get::<_, i64>(0)
    }) {
        Ok(_) => {}
        Err(e) if e.sqlite_error_code() == Some(ErrorCode::NotADatabase) => {
            return Err(OpenError::WrongKey);
        }
        Err(e) => return Err(e.into()),
    }
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(mode, "cache is not in WAL mode");
    }
    // A purged patient's pages are overwritten with zeros, not just marked free (and the WAL
    // is truncated after a purge, below), so nothing of them stays in the file.
    conn.execute_batch(
        "PRAGMA secure_delete = ON;
         PRAGMA synchronous = NORMAL;
         PRAGMA temp_store = MEMORY;
         PRAGMA cache_size = -32768;
         PRAGMA busy_timeout = 5000;
         PRAGMA journal_size_limit = 1048576;",
    )?;
    conn.set_prepared_statement_cache_capacity(32);
    migrate(&conn, i64::MAX).map_err(OpenError::Other)?;
    Ok(conn)
}

/// Apply the migrations not yet applied, up to schema `up_to` (a test makes an older
/// device's cache with a lower one).
pub(crate) fn migrate(conn: &Connection, up_to: i64) -> Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    INTEGER PRIMARY KEY,
             name       TEXT NOT NULL,
             applied_at TEXT NOT NULL
         );",
    )?;
    let current: i64 = conn.query_row(
        "SELECT coalesce(max(version), 0) FROM schema_migrations",
        [],
        |r| r.get(0),
    )?;
    for (version, name, sql) in MIGRATIONS {
        if *version <= current || *version > up_to {
            continue;
        }
        conn.execute_batch("BEGIN IMMEDIATE")?;
        let applied = conn.execute_batch(sql).and_then(|_| {
            conn.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)",
                params![version, name, timestamp(Utc::now())],
            )
        });
        match applied {
            Ok(_) => conn.execute_batch("COMMIT")?,
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                return Err(e.into());
            }
        }
        tracing::info!(version, name, "device cache migrated");
    }
    Ok(())
}

/// Times are stored as RFC 3339 UTC with a `Z`, so text order is time order.
pub(crate) fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub(crate) fn parse_timestamp(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

pub(crate) fn get_meta(conn: &Connection, key: &str) -> Result<Option<String>> {
    Ok(conn
        .prepare_cached("SELECT value FROM meta WHERE key = ?1")?
        .query_row([key], |r| r.get(0))
        .optional()?)
}

pub(crate) fn set_meta(conn: &Connection, key: &str, value: &str) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )?
    .execute([key, value])?;
    Ok(())
}

pub(crate) fn delete_meta(conn: &Connection, key: &str) -> Result<()> {
    conn.prepare_cached("DELETE FROM meta WHERE key = ?1")?
        .execute([key])?;
    Ok(())
}

/// What one page did, counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct PageStats {
    pub patients_added: u32,
    pub patients_removed: u32,
    pub upserts: u32,
    pub deletes: u32,
    pub other: u32,
}

/// Apply one page and store its cursor, all in one transaction.
pub(crate) fn apply_page(conn: &mut Connection, page: &Page) -> Result<PageStats> {
    let as_of = timestamp(page.server_time);
    let today = page.server_time.date_naive();
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let rebuilding = get_meta(&tx, meta::REBUILDING_SINCE)?.is_some();
    let mut stats = PageStats::default();
    // Patients whose alerts or allergies may have changed: their badges are recomputed once,
    // at the end of the page.
    let mut badges_stale: BTreeSet<String> = BTreeSet::new();
    for change in &page.changes {
        match change {
            Change::PatientAdded {
                patient,
                entries,
                resources,
                withheld,
            } => {
                purge_patient(&tx, &patient.patient_id)?;
                insert_patient(&tx, patient, resources, &as_of, today)?;
                for resource in resources {
                    upsert_resource(&tx, &patient.patient_id, resource, &as_of)?;
                }
                replace_entries(&tx, &patient.patient_id, entries)?;
                replace_withheld(&tx, &patient.patient_id, withheld)?;
                badges_stale.remove(&patient.patient_id);
                if rebuilding {
                    tx.prepare_cached(
                        "INSERT OR IGNORE INTO rebuild_seen (patient_id) VALUES (?1)",
                    )?
                    .execute([&patient.patient_id])?;
                }
                stats.patients_added += 1;
            }
            Change::ListChanged {
                patient_id,
                entries,
            } => {
                replace_entries(&tx, patient_id, entries)?;
                stats.other += 1;
            }
            Change::Upsert {
                patient_id,
                resource,
            } => {
                if let Some(kind) = upsert_resource(&tx, patient_id, resource, &as_of)? {
                    match kind.as_str() {
                        "Patient" => update_patient_details(&tx, patient_id, resource, &as_of)?,
                        "Flag" | "AllergyIntolerance" => {
                            badges_stale.insert(patient_id.clone());
                        }
                        _ => touch_patient(&tx, patient_id, &as_of)?,
                    }
                }
                stats.upserts += 1;
            }
            Change::Delete {
                patient_id,
                resource_type,
                resource_id,
            } => {
                tx.prepare_cached(
                    "DELETE FROM resources WHERE patient_id = ?1 AND type = ?2 AND id = ?3",
                )?
                .execute([patient_id, resource_type, resource_id])?;
                if matches!(resource_type.as_str(), "Flag" | "AllergyIntolerance") {
                    badges_stale.insert(patient_id.clone());
                } else {
                    touch_patient(&tx, patient_id, &as_of)?;
                }
                stats.deletes += 1;
            }
            Change::PatientRemoved { patient_id } => {
                purge_patient(&tx, patient_id)?;
                badges_stale.remove(patient_id);
                stats.patients_removed += 1;
            }
            Change::Withheld { patient_id, counts } => {
                replace_withheld(&tx, patient_id, counts)?;
                stats.other += 1;
            }
        }
    }
    for patient_id in &badges_stale {
        refresh_badges(&tx, patient_id, &as_of, today)?;
    }
    if rebuilding && !page.more {
        // The rebuild is complete: what it did not bring is no longer the user's to hold.
        let gone: Vec<String> = tx
            .prepare(
                "SELECT id FROM patients WHERE id NOT IN (SELECT patient_id FROM rebuild_seen)",
            )?
            .query_map([], |r| r.get(0))?
            .collect::<std::result::Result<_, _>>()?;
        for patient_id in &gone {
            purge_patient(&tx, patient_id)?;
        }
        stats.patients_removed += gone.len() as u32;
        tx.execute("DELETE FROM rebuild_seen", [])?;
        delete_meta(&tx, meta::REBUILDING_SINCE)?;
    }
    set_meta(&tx, meta::CURSOR, &page.cursor)?;
    tx.commit()?;
    if stats.patients_removed > 0 {
        // The WAL still holds the purged patients' old pages until it is checkpointed.
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    }
    Ok(stats)
}

/// Copy the WAL into the database and truncate it, after a sync that brought more than one
/// page: otherwise the WAL keeps the sync's last pages (up to the auto-checkpoint's 1,000
/// pages, 4 MB) on disk beside the database until the next checkpoint. A small sync leaves
/// it to the auto-checkpoint, whose WAL `journal_size_limit` keeps to 1 MiB.
pub(crate) fn checkpoint_truncate(conn: &Connection) -> Result<()> {
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    Ok(())
}

/// Start (or start again) a rebuild beside the copy held: the next pull starts from no cursor.
/// The time the first of a run of rebuilds began is kept; nothing of a patient is deleted.
pub(crate) fn begin_rebuild(conn: &mut Connection, now: DateTime<Utc>) -> Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    if get_meta(&tx, meta::REBUILDING_SINCE)?.is_none() {
        set_meta(&tx, meta::REBUILDING_SINCE, &timestamp(now))?;
    }
    tx.execute("DELETE FROM rebuild_seen", [])?;
    delete_meta(&tx, meta::CURSOR)?;
    tx.commit()?;
    Ok(())
}

/// When the rebuild in progress began, if one is: the copy on the device is the one from
/// before it, kept readable until the rebuild completes.
pub(crate) fn rebuilding_since(conn: &Connection) -> Result<Option<DateTime<Utc>>> {
    Ok(get_meta(conn, meta::REBUILDING_SINCE)?
        .as_deref()
        .and_then(parse_timestamp))
}

/// Delete everything the cache holds about one patient.
fn purge_patient(tx: &Transaction<'_>, patient_id: &str) -> Result<()> {
    for sql in [
        "DELETE FROM resources WHERE patient_id = ?1",
        "DELETE FROM list_entries WHERE patient_id = ?1",
        "DELETE FROM withheld WHERE patient_id = ?1",
        "DELETE FROM patients WHERE id = ?1",
    ] {
        tx.prepare_cached(sql)?.execute([patient_id])?;
    }
    Ok(())
}

/// Store one resource; answers its type, or `None` when it lacks a type or id (then it is
/// skipped: it could never be replaced or deleted).
fn upsert_resource(
    tx: &Transaction<'_>,
    patient_id: &str,
    resource: &RawValue,
    as_of: &str,
) -> Result<Option<String>> {
    let Some((kind, id)) = type_and_id(resource) else {
        tracing::warn!("pull page carried a resource without resourceType or id; skipped");
        return Ok(None);
    };
    // Stored as the server sent it, deflated (`crate::stored`): no parse, no re-serialisation.
    let json = crate::stored::pack(resource.get())?;
    tx.prepare_cached(
        "INSERT INTO resources (type, id, patient_id, json, as_of) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (patient_id, type, id) DO UPDATE SET
             json = excluded.json, as_of = excluded.as_of",
    )?
    .execute(params![kind, id, patient_id, json, as_of])?;
    Ok(Some(kind))
}

/// Parse the resources of `heads` (type and id already read) whose type is in `types`.
fn parse_of_types(
    resources: &[Box<RawValue>],
    heads: &[Option<(String, String)>],
    types: &[&str],
) -> Vec<Resource> {
    resources
        .iter()
        .zip(heads)
        .filter(|(_, h)| h.as_ref().is_some_and(|(t, _)| types.contains(&t.as_str())))
        .filter_map(|(r, _)| serde_json::from_str::<Value>(r.get()).ok())
        .filter_map(|v| Resource::from_json(v).ok())
        .collect()
}

/// The Patient resource of a snapshot (the one whose id is the patient's, else the first).
fn find_patient_resource(
    patient_id: &str,
    resources: &[Box<RawValue>],
    heads: &[Option<(String, String)>],
) -> Option<Value> {
    let is_patient = |h: &Option<(String, String)>| h.as_ref().is_some_and(|(t, _)| t == "Patient");
    let at = heads
        .iter()
        .position(|h| is_patient(h) && h.as_ref().is_some_and(|(_, id)| id == patient_id))
        .or_else(|| heads.iter().position(is_patient))?;
    serde_json::from_str(resources[at].get()).ok()
}

/// The list columns of a patient, read from their Patient resource.
struct PatientColumns {
    family: String,
    given: String,
    name_display: String,
    birth_date: Option<NaiveDate>,
    postcode: Option<String>,
    address: String,
}

fn patient_columns(patient: Option<Value>) -> PatientColumns {
    let details = patient
        .and_then(|json| Resource::from_json(json).ok())
        .map(|r| patient_details(&r));
    match details {
        Some(d) => PatientColumns {
            name_display: if d.name_display.is_empty() {
                "(no name)".into()
            } else {
                d.name_display
            },
            family: d.family,
            given: d.given,
            birth_date: d.birth_date,
            postcode: d.postcode.map(|p| normalise_postcode(&p)),
            address: d.address_display,
        },
        None => PatientColumns {
            family: String::new(),
            given: String::new(),
            name_display: "(no name)".into(),
            birth_date: None,
            postcode: None,
            address: String::new(),
        },
    }
}

fn insert_patient(
    tx: &Transaction<'_>,
    header: &PatientHeader,
    resources: &[Box<RawValue>],
    as_of: &str,
    today: NaiveDate,
) -> Result<()> {
    let heads: Vec<Option<(String, String)>> = resources.iter().map(|r| type_and_id(r)).collect();
    let cols = patient_columns(find_patient_resource(&header.patient_id, resources, &heads));
    let badges = badges_of(
        &parse_of_types(resources, &heads, &["Flag", "AllergyIntolerance"]),
        today,
    );
    let birth_date = cols.birth_date.or(header.birth_date).map(|d| d.to_string());
    tx.prepare_cached(
        "INSERT INTO patients (id, nhs_number, family, given, name_display, name_search,
                               name_sort, birth_date, postcode, address, practice_ods,
                               practice_name, alerts, as_of)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
    )?
    .execute(params![
        header.patient_id,
        header.nhs_number,
        cols.family,
        cols.given,
        cols.name_display,
        name_search_key(&cols.given, &cols.family),
        name_sort_key(&cols.given, &cols.family),
        birth_date,
        cols.postcode,
        cols.address,
        header.registered_practice_ods,
        header.registered_practice_name,
        badges,
        as_of,
    ])?;
    Ok(())
}

/// A Patient resource changed: refresh the list columns that come from it.
fn update_patient_details(
    tx: &Transaction<'_>,
    patient_id: &str,
    resource: &RawValue,
    as_of: &str,
) -> Result<()> {
    let cols = patient_columns(serde_json::from_str(resource.get()).ok());
    tx.prepare_cached(
        "UPDATE patients SET family = ?2, given = ?3, name_display = ?4, name_search = ?5,
                name_sort = ?6, birth_date = coalesce(?7, birth_date), postcode = ?8,
                address = ?9, as_of = ?10
         WHERE id = ?1",
    )?
    .execute(params![
        patient_id,
        cols.family,
        cols.given,
        cols.name_display,
        name_search_key(&cols.given, &cols.family),
        name_sort_key(&cols.given, &cols.family),
        cols.birth_date.map(|d| d.to_string()),
        cols.postcode,
        cols.address,
        as_of,
    ])?;
    Ok(())
}

fn touch_patient(tx: &Transaction<'_>, patient_id: &str, as_of: &str) -> Result<()> {
    tx.prepare_cached("UPDATE patients SET as_of = ?2 WHERE id = ?1")?
        .execute([patient_id, as_of])?;
    Ok(())
}

/// Recompute a patient's alert badges from their cached Flags and allergies.
fn refresh_badges(
    tx: &Transaction<'_>,
    patient_id: &str,
    as_of: &str,
    today: NaiveDate,
) -> Result<()> {
    let mut stmt = tx.prepare_cached(
        "SELECT json FROM resources
         WHERE patient_id = ?1 AND type IN ('Flag', 'AllergyIntolerance')",
    )?;
    let resources = stmt
        .query_map([patient_id], |r| Ok(crate::stored::unpack(r.get_ref(0)?)))?
        .filter_map(|stored| {
            let json = stored.ok()?.ok()?;
            Resource::from_json(serde_json::from_str(&json).ok()?).ok()
        })
        .collect::<Vec<_>>();
    tx.prepare_cached("UPDATE patients SET alerts = ?2, as_of = ?3 WHERE id = ?1")?
        .execute([patient_id, &badges_of(&resources, today), as_of])?;
    Ok(())
}

/// SNOMED CT codes that record the absence of allergies; they earn no badge.
const NO_KNOWN_ALLERGY_CODES: &[&str] = &["716186003", "409137002", "428607008", "429625007"];

/// The list's alert badges for a set of resources: `DNACPR`, `ReSPECT`, `Safeguarding`,
/// `Allergies`, comma-separated, in that order.
fn badges_of(resources: &[Resource], today: NaiveDate) -> String {
    if resources.is_empty() {
        return String::new();
    }
    let view = build_record(resources, today);
    badges_of_view(&view).join(",")
}

pub(crate) fn badges_of_view(view: &RecordView) -> Vec<&'static str> {
    let mut badges = Vec::new();
    for (kind, badge) in [
        (AlertKind::Dnacpr, "DNACPR"),
        (AlertKind::Respect, "ReSPECT"),
        (AlertKind::Safeguarding, "Safeguarding"),
    ] {
        if view.alerts.iter().any(|a| a.kind == kind) {
            badges.push(badge);
        }
    }
    let has_allergy = view.allergies.iter().any(|a| {
        let inactive = matches!(a.clinical_status.as_deref(), Some("inactive" | "resolved"));
        let none_known = a
            .code
            .as_ref()
            .is_some_and(|c| NO_KNOWN_ALLERGY_CODES.contains(&c.code.as_str()));
        !inactive && !none_known
    });
    if has_allergy {
        badges.push("Allergies");
    }
    badges
}

fn list_kind_str(kind: ListKind) -> &'static str {
    match kind {
        ListKind::Caseload => "caseload",
        ListKind::Appointment => "appointment",
        ListKind::Incident => "incident",
        ListKind::BreakGlass => "break_glass",
    }
}

fn replace_entries(tx: &Transaction<'_>, patient_id: &str, entries: &[ListEntry]) -> Result<()> {
    tx.prepare_cached("DELETE FROM list_entries WHERE patient_id = ?1")?
        .execute([patient_id])?;
    let mut insert = tx.prepare_cached(
        "INSERT INTO list_entries (patient_id, seq, kind, list_name, reason, starts_at, ends_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    for (seq, e) in entries.iter().enumerate() {
        insert.execute(params![
            patient_id,
            seq as i64,
            list_kind_str(e.kind),
            e.list_name,
            e.reason,
            timestamp(e.starts_at),
            e.ends_at.map(timestamp),
        ])?;
    }
    Ok(())
}

fn replace_withheld(
    tx: &Transaction<'_>,
    patient_id: &str,
    counts: &[WithheldCount],
) -> Result<()> {
    tx.prepare_cached("DELETE FROM withheld WHERE patient_id = ?1")?
        .execute([patient_id])?;
    let mut insert = tx.prepare_cached(
        "INSERT INTO withheld (patient_id, section, count) VALUES (?1, ?2, ?3)
         ON CONFLICT (patient_id, section) DO UPDATE SET count = count + excluded.count",
    )?;
    for c in counts.iter().filter(|c| c.count > 0) {
        insert.execute(params![patient_id, c.section, c.count])?;
    }
    Ok(())
}
