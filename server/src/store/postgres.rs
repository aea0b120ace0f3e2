//! The production backend: PostgreSQL, shared by any number of server nodes.
//!
//! # What this module owns
//!
//! The SQL of every area of the store contract ([`super::contract`]) for PostgreSQL, the
//! connection pool, and the schema's migrations (`migrations/server-postgres/NNNN_*.sql`,
//! embedded at build time). Like the SQLite backend it reads and writes rows and decides
//! nothing: imports arrive planned, audit rows arrive sealed, pull pages are built above the
//! store over the reads of a [`FeedSnapshot`].
//!
//! # Driver
//!
//! tokio-postgres (async, pipelined, no compile-time database) behind a deadpool-postgres
//! pool. Every read and write is one `await` on the server's own runtime: no thread is parked
//! per query, and a pull snapshot is a plain `REPEATABLE READ READ ONLY` transaction held on
//! one pooled connection.
//!
//! # Several nodes on one database: the invariants
//!
//! - **Migrations** run at start in one transaction under `pg_advisory_xact_lock(MIGRATION_LOCK)`,
//!   so two nodes starting at once apply each migration once; `schema_migrations` records the
//!   versions. A database whose newest version is beyond [`MIGRATIONS`] is refused
//!   ([`StoreError::SchemaTooNew`]), before anything is written.
//! - **The feed lock.** Every transaction that appends feed rows (imports, list entries
//!   added or ended) or deletes them (pruning) first takes
//!   `pg_advisory_xact_lock(FEED_LOCK)`, and only then takes seqs from the feed's identity
//!   sequence. The lock is held until commit, so feed seqs are handed out in commit order: a
//!   reader that sees `head = h` has seen every row with `seq <= h` that will ever commit. The
//!   pull's cursor (`seq` = the head it read) therefore never steps over a row that another
//!   node commits later (the sequence gap of concurrent transactions). Seqs of transactions
//!   that roll back are simply never used.
//! - **Writes planned on reads.** [`RecordStore::apply_import`] takes the feed lock before
//!   re-reading the import's basis: every writer of the rows a basis holds (patient headers,
//!   NHS numbers, resources) is an import, and imports hold that lock, so the re-read is
//!   exact until commit. Its feed rows take consecutive seqs in one go (nobody else can take
//!   any while the lock is held) and go in with its resources and deletions in a few batched
//!   statements, in the order [`super::rows::ImportWrites`] documents.
//! - **The audit lock.** Every transaction that appends an audit row takes
//!   `pg_advisory_xact_lock(AUDIT_LOCK)` before reading the chain's tip (an import: after its
//!   writes, just before its audit row, so pulls' appends wait only for that insert and the
//!   commit). An import and [`AuditStore::append_audit_event`] seal their event there, on the
//!   tip just read, with the sealer they are handed, so neither is ever stale because of the
//!   log; [`AuditStore::append_audit_row`] (a row sealed by the caller) checks that its row
//!   follows that tip and answers [`StoreError::Stale`] otherwise. The audit table's primary
//!   key on `seq` backs this up: a second row for one seq is a unique violation, `Stale`.
//! - **Few round trips under a lock.** Every other writer waits while a lock is held, so a
//!   lock and the reads that must follow it go on the connection together, in order
//!   (`tokio::try_join!(biased; …)`, or `pipelined`): one round trip, and under READ
//!   COMMITTED each read still takes its snapshot after the lock is granted. Under 200
//!   devices the queue on these locks was most of a request's time.
//! - **Sign-in writes** are single conditional `UPDATE`s, which PostgreSQL re-evaluates on the
//!   newest row version under `READ COMMITTED`, so two nodes counting a failure or using a
//!   TOTP step at once cannot both succeed.
//! - Serialization failures and deadlocks (which the above should make impossible) answer
//!   `Stale` too, so callers plan again rather than fail.
//!
//! # Types
//!
//! Times are `timestamptz` truncated to whole seconds before writing (the SQLite backend keeps
//! Unix seconds; the audit chain hashes seconds), dates `date`, flags `boolean`. JSON is
//! `text`, never `jsonb`: the stored text must come back byte for byte.
//!
//! Connections are plain TCP or a Unix socket (`NoTls`): the database is expected on the
//! same host or a private network.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use doorstep_record::agreement::Agreement;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

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

/// The embedded migrations, in order: (version, name, SQL).
pub const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "0001_init",
        include_str!("../../../migrations/server-postgres/0001_init.sql"),
    ),
    (
        2,
        "0002_notes",
        include_str!("../../../migrations/server-postgres/0002_notes.sql"),
    ),
    (
        3,
        "0003_administration",
        include_str!("../../../migrations/server-postgres/0003_administration.sql"),
    ),
    (
        4,
        "0004_list_owners",
        include_str!("../../../migrations/server-postgres/0004_list_owners.sql"),
    ),
    (
        5,
        "0005_audit_access",
        include_str!("../../../migrations/server-postgres/0005_audit_access.sql"),
    ),
    (
        6,
        "0006_bookings",
        include_str!("../../../migrations/server-postgres/0006_bookings.sql"),
    ),
];

/// Advisory lock key held while migrating ("doorstep" + 1).
const MIGRATION_LOCK: i64 = 0x646f_6f72_7374_6501;
/// Advisory lock key held by every transaction that takes feed seqs ("doorstep" + 2).
pub const FEED_LOCK: i64 = 0x646f_6f72_7374_6502;
/// Advisory lock key held by every transaction that appends to the audit log, from reading
/// its tip to commit ("doorstep" + 3). Always taken after [`FEED_LOCK`] when both are held.
const AUDIT_LOCK: i64 = 0x646f_6f72_7374_6503;

/// Connections per node. Pull snapshots hold one each for the length of a page.
const POOL_SIZE: usize = 16;

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        match e.code() {
            Some(code)
                if *code == SqlState::T_R_SERIALIZATION_FAILURE
                    || *code == SqlState::T_R_DEADLOCK_DETECTED =>
            {
                StoreError::Stale(format!("another writer came first ({})", code.code()))
            }
            _ => StoreError::Backend(describe(&e)),
        }
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Backend(e) => e.into(),
            other => StoreError::Backend(format!("connection pool: {other}")),
        }
    }
}

/// The error's code and message, never its detail (which may quote key values).
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => {
            use std::error::Error as _;
            match e.source() {
                Some(source) => format!("{e}: {source}"),
                None => e.to_string(),
            }
        }
    }
}

fn is_unique_violation(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&SqlState::UNIQUE_VIOLATION)
}

/// A time as stored: whole seconds.
fn secs(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp(), 0).unwrap_or_default()
}

/// The PostgreSQL backend: every area of the store contract ([`super::Store`]).
#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool,
    /// The URL without credentials, for messages.
    shown: String,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("database", &self.shown)
            .finish()
    }
}

impl PostgresStore {
    /// Connect to `url` (a `postgres://` or `postgresql://` URL; `shown` is how messages name
    /// it, without credentials) and apply pending migrations.
    pub async fn open(url: &str, shown: &str) -> Result<PostgresStore, StoreError> {
        let config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| StoreError::Unsupported(format!("{shown}: {e}")))?;
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .build()
            .map_err(|e| StoreError::Backend(format!("{shown}: {e}")))?;
        let store = PostgresStore {
            pool,
            shown: shown.to_string(),
        };
        let mut client = store.pool.get().await.map_err(|e| {
            StoreError::Backend(format!("connecting to {shown}: {}", StoreError::from(e)))
        })?;
        migrate(&mut client).await?;
        Ok(store)
    }

    /// The versions of the applied migrations.
    pub async fn applied_migrations(&self) -> Result<Vec<i64>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT version FROM schema_migrations ORDER BY version",
                &[],
            )
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn client(&self) -> Result<Object, StoreError> {
        Ok(self.pool.get().await?)
    }
}

async fn migrate(client: &mut Object) -> Result<(), StoreError> {
    let tx = client.transaction().await?;
    // Two nodes starting at once: the second waits here, then finds the work done.
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version bigint PRIMARY KEY,
             name text NOT NULL,
             applied_at timestamptz NOT NULL
         )",
    )
    .await?;
    let applied: Vec<i64> = tx
        .query("SELECT version FROM schema_migrations", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let known = MIGRATIONS.last().map_or(0, |m| m.0);
    if let Some(&newest) = applied.iter().max()
        && newest > known
    {
        return Err(StoreError::SchemaTooNew {
            database: newest,
            known,
        });
    }
    for (version, name, sql) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
            &[version, name, &secs(Utc::now())],
        )
        .await?;
        tracing::info!(version, name, "applied migration");
    }
    tx.commit().await?;
    Ok(())
}

/// Hold other audit appends off until commit, so the tip read next stays the tip.
async fn lock_audit(tx: &impl GenericClient) -> Result<(), StoreError> {
    let lock = tx.prepare_cached(LOCK_SQL).await?;
    tx.execute(&lock, &[&AUDIT_LOCK]).await?;
    Ok(())
}

/// Take the feed lock for the rest of the transaction (see the module doc).
async fn lock_feed(tx: &impl GenericClient) -> Result<(), StoreError> {
    let lock = tx.prepare_cached(LOCK_SQL).await?;
    tx.execute(&lock, &[&FEED_LOCK]).await?;
    Ok(())
}

// ---------- row readers ----------

const PATIENT_COLUMNS: &str = "p.id, p.nhs_number, p.practice_ods, o.name, p.birth_date, p.dissent
     FROM patients p JOIN organisations o ON o.ods = p.practice_ods";

fn patient_from(r: &Row) -> Result<PatientRow, StoreError> {
    Ok(PatientRow {
        id: r.try_get(0)?,
        nhs_number: r.try_get(1)?,
        practice_ods: r.try_get(2)?,
        practice_name: r.try_get(3)?,
        birth_date: r.try_get(4)?,
        dissent: r.try_get(5)?,
    })
}

const RESOURCE_COLUMNS: &str =
    "resource_type, id, patient_id, section, json, seq, deleted FROM resources";

fn resource_from(r: &Row) -> Result<ResourceRow, StoreError> {
    Ok(ResourceRow {
        resource_type: r.try_get(0)?,
        id: r.try_get(1)?,
        patient_id: r.try_get(2)?,
        section: r.try_get(3)?,
        json: r.try_get(4)?,
        seq: r.try_get(5)?,
        deleted: r.try_get(6)?,
    })
}

const ENTRY_COLUMNS: &str =
    "e.id, e.list_id, l.name, l.kind, e.patient_id, e.reason, e.starts_at, e.ends_at, e.user_id,
     l.owner_user_id, COALESCE(l.team, tm.team)
     FROM list_entries e JOIN lists l ON l.id = e.list_id
     LEFT JOIN team_members tm ON tm.user_id = l.owner_user_id";

const LIST_COLUMNS: &str = "id, name, kind, service_id, owner_user_id, team FROM lists";

fn entry_from(r: &Row) -> Result<ListEntryRow, StoreError> {
    Ok(ListEntryRow {
        id: r.try_get(0)?,
        list_id: r.try_get(1)?,
        list_name: r.try_get(2)?,
        kind: list_kind_from_str(r.try_get(3)?)?,
        patient_id: r.try_get(4)?,
        reason: r.try_get(5)?,
        starts_at: r.try_get(6)?,
        ends_at: r.try_get(7)?,
        user_id: r.try_get(8)?,
        list_owner: r.try_get(9)?,
        list_team: r.try_get(10)?,
    })
}

const USER_COLUMNS: &str =
    "u.id, u.username, u.display_name, u.role, u.service_id, s.name, u.password_hash,
     u.totp_secret, u.totp_last_step, u.failed_attempts, u.locked_until, u.disabled,
     u.practice_ods
     FROM users u JOIN services s ON s.id = u.service_id";

fn user_from(r: &Row) -> Result<UserRow, StoreError> {
    let failed: i32 = r.try_get(9)?;
    Ok(UserRow {
        id: r.try_get(0)?,
        username: r.try_get(1)?,
        display_name: r.try_get(2)?,
        role: r.try_get(3)?,
        service_id: r.try_get(4)?,
        service_name: r.try_get(5)?,
        password_hash: r.try_get(6)?,
        totp_secret: r.try_get(7)?,
        totp_last_step: r.try_get(8)?,
        failed_attempts: u32::try_from(failed).unwrap_or(0),
        locked_until: r.try_get(10)?,
        disabled: r.try_get(11)?,
        practice_ods: r.try_get(12)?,
    })
}

fn token_kind(s: &str) -> TokenKind {
    if s == "refresh" {
        TokenKind::Refresh
    } else {
        TokenKind::Access
    }
}

const PRUNED_THROUGH: &str =
    "COALESCE((SELECT value::bigint FROM meta WHERE key = 'feed_pruned_through'), 0)";

async fn pruned_through(c: &impl GenericClient) -> Result<i64, StoreError> {
    let stmt = c
        .prepare_cached(&format!("SELECT {PRUNED_THROUGH}"))
        .await?;
    Ok(c.query_one(&stmt, &[]).await?.try_get(0)?)
}

async fn feed_head(c: &impl GenericClient) -> Result<i64, StoreError> {
    let stmt = c
        .prepare_cached(&format!(
            "SELECT GREATEST(COALESCE((SELECT MAX(seq) FROM feed), 0), {PRUNED_THROUGH})"
        ))
        .await?;
    Ok(c.query_one(&stmt, &[]).await?.try_get(0)?)
}

/// Append a feed row; the caller holds the feed lock. Answers its seq.
/// Insert a list entry and its patient's list feed row (the caller holds the feed lock and
/// commits).
async fn insert_entry_tx(
    tx: &impl GenericClient,
    entry: &ListEntryWrite,
    now: DateTime<Utc>,
) -> Result<i64, StoreError> {
    let id: i64 = tx
        .query_one(
            "INSERT INTO list_entries (list_id, patient_id, reason, starts_at, ends_at,
               user_id, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
            &[
                &entry.list_id,
                &entry.patient_id,
                &entry.reason,
                &secs(entry.starts_at),
                &entry.ends_at.map(secs),
                &entry.user_id,
                &secs(now),
            ],
        )
        .await?
        .try_get(0)?;
    append_feed(tx, &entry.patient_id, None, FeedOp::List, now).await?;
    Ok(id)
}

async fn append_feed(
    tx: &impl GenericClient,
    patient_id: &str,
    resource: Option<(&str, &str)>,
    op: FeedOp,
    at: DateTime<Utc>,
) -> Result<i64, StoreError> {
    let stmt = tx
        .prepare_cached(
            "INSERT INTO feed (patient_id, resource_type, resource_id, op, at)
             VALUES ($1, $2, $3, $4, $5) RETURNING seq",
        )
        .await?;
    let row = tx
        .query_one(
            &stmt,
            &[
                &patient_id,
                &resource.map(|r| r.0),
                &resource.map(|r| r.1),
                &op.as_str(),
                &secs(at),
            ],
        )
        .await?;
    Ok(row.try_get(0)?)
}

// ---------- audit ----------

const LOCK_SQL: &str = "SELECT pg_advisory_xact_lock($1)";
const AUDIT_TIP_SQL: &str = "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1";

async fn audit_tip(c: &impl GenericClient) -> Result<Option<AuditTip>, StoreError> {
    let stmt = c.prepare_cached(AUDIT_TIP_SQL).await?;
    tip_from(c.query_opt(&stmt, &[]).await?)
}

fn tip_from(row: Option<Row>) -> Result<Option<AuditTip>, StoreError> {
    row.map(|r| {
        Ok(AuditTip {
            seq: r.try_get(0)?,
            hash: r.try_get(1)?,
        })
    })
    .transpose()
}

/// Take the audit lock and read the chain's tip, in one round trip. The two statements are
/// pipelined on the connection in this order (`biased`: the lock's is sent first), so the tip
/// is read in a snapshot of its own (READ COMMITTED) taken once the lock is held. Every
/// round trip made while the lock is held is time every other append waits: under load it
/// was the database's queue.
async fn lock_audit_read_tip(tx: &impl GenericClient) -> Result<Option<AuditTip>, StoreError> {
    let lock = tx.prepare_cached(LOCK_SQL).await?;
    let tip = tx.prepare_cached(AUDIT_TIP_SQL).await?;
    let (_, row) = tokio::try_join!(
        biased;
        tx.execute(&lock, &[&AUDIT_LOCK]),
        tx.query_opt(&tip, &[]),
    )?;
    tip_from(row)
}

fn stale_audit() -> StoreError {
    StoreError::Stale("the audit log moved on since the event was sealed".into())
}

/// Seal `event` on the tip read in `tx` (under the audit lock) and store it.
async fn seal_onto(
    tx: &impl GenericClient,
    event: AuditEvent,
    seal: AuditSealer,
) -> Result<AuditRow, StoreError> {
    let row = seal(lock_audit_read_tip(tx).await?.as_ref(), event);
    insert_audit_rows(tx, std::slice::from_ref(&row)).await?;
    Ok(row)
}

/// Store a row sealed by the caller, if it follows the tip.
async fn append_audit_row_tx(tx: &impl GenericClient, row: &AuditRow) -> Result<(), StoreError> {
    let follows = match lock_audit_read_tip(tx).await? {
        None => row.seq == 1,
        Some(tip) => row.seq == tip.seq + 1 && row.prev_hash == tip.hash,
    };
    if !follows {
        return Err(stale_audit());
    }
    insert_audit_rows(tx, std::slice::from_ref(row)).await
}

/// Insert sealed rows in one statement; the caller holds the audit lock and has sealed them
/// on the tip it read under it. A row sealed on the same tip by a concurrent transaction
/// makes the insert fail on the primary key: `Stale` as well.
async fn insert_audit_rows(tx: &impl GenericClient, rows: &[AuditRow]) -> Result<(), StoreError> {
    let stmt = tx
        .prepare_cached(
            "INSERT INTO audit (seq, at, actor, action, patient_id, detail, prev_hash, hash)
             SELECT * FROM unnest($1::bigint[], $2::timestamptz[], $3::text[], $4::text[],
                                  $5::text[], $6::text[], $7::text[], $8::text[])",
        )
        .await?;
    let seqs: Vec<i64> = rows.iter().map(|r| r.seq).collect();
    let ats: Vec<DateTime<Utc>> = rows.iter().map(|r| secs(r.event.at)).collect();
    let actors: Vec<&str> = rows.iter().map(|r| r.event.actor.as_str()).collect();
    let actions: Vec<&str> = rows.iter().map(|r| r.event.action.as_str()).collect();
    let patients: Vec<Option<&str>> = rows.iter().map(|r| r.event.patient_id.as_deref()).collect();
    let details: Vec<String> = rows.iter().map(|r| r.event.detail.to_string()).collect();
    let prev: Vec<&str> = rows.iter().map(|r| r.prev_hash.as_str()).collect();
    let hashes: Vec<&str> = rows.iter().map(|r| r.hash.as_str()).collect();
    match tx
        .execute(
            &stmt,
            &[
                &seqs, &ats, &actors, &actions, &patients, &details, &prev, &hashes,
            ],
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_unique_violation(&e) => Err(stale_audit()),
        Err(e) => Err(e.into()),
    }
}

// ---------- import ----------

/// Insert an organisation, or rename it when its name differs.
const ORGANISATION_UPSERT: &str =
    "INSERT INTO organisations (ods, name, updated_at) VALUES ($1, $2, $3)
     ON CONFLICT (ods) DO UPDATE SET name = excluded.name, updated_at = excluded.updated_at
     WHERE organisations.name <> excluded.name";

async fn upsert_organisation(
    tx: &impl GenericClient,
    ods: &str,
    name: &str,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let stmt = tx.prepare_cached(ORGANISATION_UPSERT).await?;
    tx.execute(&stmt, &[&ods, &name, &secs(now)]).await?;
    Ok(())
}

/// One statement of [`pipelined`].
type Statement<'a> =
    std::pin::Pin<Box<dyn Future<Output = Result<(), tokio_postgres::Error>> + Send + 'a>>;

/// Run `statements` pipelined, in their order, in one round trip: a tokio-postgres request
/// goes on the connection when its future is first polled, and these are always polled in
/// order (not by `join_all`, whose order is not promised). The first error is answered
/// after every statement has finished.
async fn pipelined(statements: Vec<Statement<'_>>) -> Result<(), StoreError> {
    let mut running: Vec<(Statement<'_>, Option<Result<(), tokio_postgres::Error>>)> =
        statements.into_iter().map(|s| (s, None)).collect();
    std::future::poll_fn(|cx| {
        let mut waiting = false;
        for (statement, outcome) in running.iter_mut() {
            if outcome.is_none() {
                match statement.as_mut().poll(cx) {
                    std::task::Poll::Ready(done) => *outcome = Some(done),
                    std::task::Poll::Pending => waiting = true,
                }
            }
        }
        if waiting {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    for (_, outcome) in running {
        outcome.unwrap_or(Ok(()))?;
    }
    Ok(())
}

/// The rows an import is planned on. With `lock`, that advisory lock is taken first in the
/// same round trip: the four statements are pipelined on the connection in this order
/// (`biased`: the lock's is sent first), and under READ COMMITTED each read takes its snapshot
/// when it starts, once the lock is held. (An import holds the feed lock from here to its
/// commit, and every other import waits for it: a round trip saved here is one saved for all
/// of them.)
async fn read_import_basis(
    c: &impl GenericClient,
    keys: &ImportKeys,
    lock: Option<i64>,
) -> Result<ImportBasis, StoreError> {
    let lock_stmt = c.prepare_cached(LOCK_SQL).await?;
    let patients = c
        .prepare_cached(
            "SELECT id, nhs_number, practice_ods, birth_date FROM patients
             WHERE id = ANY($1)",
        )
        .await?;
    let owners = c
        .prepare_cached("SELECT nhs_number, id FROM patients WHERE nhs_number = ANY($1)")
        .await?;
    let resources = c
        .prepare_cached(
            "SELECT r.resource_type, r.id, r.json, r.patient_id, r.deleted
             FROM resources r JOIN unnest($1::text[], $2::text[]) AS k (t, i)
               ON r.resource_type = k.t AND r.id = k.i",
        )
        .await?;
    let (types, ids): (Vec<&str>, Vec<&str>) = keys
        .resources
        .iter()
        .map(|(t, i)| (t.as_str(), i.as_str()))
        .unzip();
    let take_lock = async {
        match lock {
            Some(key) => c.execute(&lock_stmt, &[&key]).await.map(|_| ()),
            None => Ok(()),
        }
    };
    let patient_params: [&(dyn ToSql + Sync); 1] = [&keys.patients];
    let owner_params: [&(dyn ToSql + Sync); 1] = [&keys.nhs_numbers];
    let resource_params: [&(dyn ToSql + Sync); 2] = [&types, &ids];
    let (_, patient_rows, owner_rows, resource_rows) = tokio::try_join!(
        biased;
        take_lock,
        c.query(&patients, &patient_params),
        c.query(&owners, &owner_params),
        c.query(&resources, &resource_params),
    )?;
    let mut basis = ImportBasis::default();
    for r in patient_rows {
        let row = PatientHeaderRow {
            id: r.try_get(0)?,
            nhs_number: r.try_get(1)?,
            practice_ods: r.try_get(2)?,
            birth_date: r.try_get(3)?,
        };
        basis.patients.insert(row.id.clone(), row);
    }
    for r in owner_rows {
        basis.nhs_owners.insert(r.try_get(0)?, r.try_get(1)?);
    }
    for r in resource_rows {
        basis.resources.insert(
            (r.try_get(0)?, r.try_get(1)?),
            StoredResource {
                json: r.try_get(2)?,
                patient_id: r.try_get(3)?,
                deleted: r.try_get(4)?,
            },
        );
    }
    Ok(basis)
}

/// Apply a planned import inside `tx`: take the feed lock and re-check, then write in the order
/// [`super::rows::ImportWrites`] documents.
async fn apply_import_tx(
    tx: &deadpool_postgres::Transaction<'_>,
    planned: &PlannedImport,
    seal: AuditSealer,
) -> Result<(), StoreError> {
    if read_import_basis(tx, &planned.keys, Some(FEED_LOCK)).await? != planned.basis {
        return Err(StoreError::Stale(
            "the rows the import was planned on changed".into(),
        ));
    }
    let now = planned.at;
    let writes = &planned.writes;
    let organisation = tx.prepare_cached(ORGANISATION_UPSERT).await?;
    let practice = tx
        .prepare_cached("INSERT INTO practices (ods) VALUES ($1) ON CONFLICT (ods) DO NOTHING")
        .await?;
    let patient = tx
        .prepare_cached(
            "INSERT INTO patients (id, nhs_number, practice_ods, birth_date, updated_at)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (id) DO UPDATE SET nhs_number = excluded.nhs_number,
               practice_ods = excluded.practice_ods, birth_date = excluded.birth_date,
               updated_at = excluded.updated_at",
        )
        .await?;
    let header_feed = tx
        .prepare_cached(
            "INSERT INTO feed (patient_id, resource_type, resource_id, op, at)
             VALUES ($1, NULL, NULL, $2, $3)",
        )
        .await?;
    let take = tx
        .prepare_cached(
            "SELECT setval(s, nextval(s) + $1 - 1) - $1 + 1
             FROM pg_get_serial_sequence('feed', 'seq') AS s",
        )
        .await?;
    // Steps 1 and 2, in their order, in one round trip.
    let at = secs(now);
    let feed = feed_rows(writes);
    let first = std::sync::atomic::AtomicI64::new(0);
    let mut steps: Vec<Statement<'_>> = Vec::new();
    for (ods, name) in &writes.organisations {
        let stmt = &organisation;
        steps.push(Box::pin(async move {
            tx.execute(stmt, &[ods, name, &at]).await.map(|_| ())
        }));
    }
    for ods in &writes.practices {
        let stmt = &practice;
        steps.push(Box::pin(async move {
            tx.execute(stmt, &[ods]).await.map(|_| ())
        }));
    }
    for p in &writes.patients {
        let (stmt, h) = (&patient, &p.header);
        steps.push(Box::pin(async move {
            tx.execute(
                stmt,
                &[&h.id, &h.nhs_number, &h.practice_ods, &h.birth_date, &at],
            )
            .await
            .map(|_| ())
        }));
        if p.header_changed {
            let stmt = &header_feed;
            steps.push(Box::pin(async move {
                tx.execute(stmt, &[&h.id, &FeedOp::Header.as_str(), &at])
                    .await
                    .map(|_| ())
            }));
        }
    }
    // Then the seqs of step 3's feed rows, after the header rows took theirs.
    if !feed.rows.is_empty() {
        let (stmt, n, first) = (&take, feed.rows.len() as i64, &first);
        steps.push(Box::pin(async move {
            let row = tx.query_one(stmt, &[&n]).await?;
            first.store(row.try_get(0)?, std::sync::atomic::Ordering::Relaxed);
            Ok(())
        }));
    }
    pipelined(steps).await?;
    let first = first.into_inner();
    // Steps 3 and 4, then the audit lock and the chain's tip, in one round trip; the audit
    // row is sealed on that tip and goes in last, so other appends wait only for that insert
    // and the commit.
    let tip = write_resources_then_lock_audit(tx, planned, &feed, first).await?;
    let row = seal(tip.as_ref(), planned.audit.clone());
    insert_audit_rows(tx, std::slice::from_ref(&row)).await
}

/// The feed rows of step 3 of [`super::rows::ImportWrites`], in their documented order, and
/// which of them gives each resource and deletion its seq.
struct FeedRows<'a> {
    /// `(patient, type, id, op)`.
    rows: Vec<(&'a str, &'a str, &'a str, &'a str)>,
    resource_row: Vec<Option<usize>>,
    deletion_row: Vec<Option<usize>>,
}

fn feed_rows(writes: &super::rows::ImportWrites) -> FeedRows<'_> {
    let mut rows: Vec<(&str, &str, &str, &str)> = Vec::new();
    let mut resource_row: Vec<Option<usize>> = Vec::with_capacity(writes.resources.len());
    for r in &writes.resources {
        let (t, i) = (r.resource_type.as_str(), r.id.as_str());
        resource_row.push(r.patient_id.as_deref().map(|pid| {
            rows.push((pid, t, i, FeedOp::Upsert.as_str()));
            rows.len() - 1
        }));
        if let Some(old) = &r.moved_from {
            rows.push((old, t, i, FeedOp::Delete.as_str()));
        }
    }
    let mut deletion_row: Vec<Option<usize>> = Vec::with_capacity(writes.deletions.len());
    for d in &writes.deletions {
        let (t, i) = (d.resource_type.as_str(), d.id.as_str());
        deletion_row.push(d.patient_id.as_deref().map(|pid| {
            rows.push((pid, t, i, FeedOp::Delete.as_str()));
            rows.len() - 1
        }));
    }
    FeedRows {
        rows,
        resource_row,
        deletion_row,
    }
}

/// Steps 3 and 4 of [`super::rows::ImportWrites`] in a few statements, whatever the bundle's
/// size, then the audit lock and the chain's tip: all pipelined in order, one round trip. The
/// feed rows take the consecutive seqs from `first` (the feed lock is held, so no other
/// transaction takes any in between), then the resources and deletions are written with
/// theirs. Each row its own round trip made PostgreSQL imports several times slower than
/// SQLite's; each round trip here is one every other import waits for.
async fn write_resources_then_lock_audit(
    tx: &deadpool_postgres::Transaction<'_>,
    planned: &PlannedImport,
    feed: &FeedRows<'_>,
    first: i64,
) -> Result<Option<AuditTip>, StoreError> {
    let writes = &planned.writes;
    let seq_of = |row: Option<usize>| row.map_or(0, |k| first + k as i64);
    let feed_insert = tx
        .prepare_cached(
            "INSERT INTO feed (seq, patient_id, resource_type, resource_id, op, at)
             OVERRIDING SYSTEM VALUE
             SELECT $1 + u.n - 1, u.p, u.t, u.i, u.o, $6
             FROM unnest($2::text[], $3::text[], $4::text[], $5::text[])
               WITH ORDINALITY AS u (p, t, i, o, n)",
        )
        .await?;
    let resources_insert = tx
        .prepare_cached(
            "INSERT INTO resources (resource_type, id, patient_id, section, json, seq,
               deleted)
             SELECT t, i, p, s, j, q, false
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                         $6::bigint[]) AS u (t, i, p, s, j, q)
             ON CONFLICT (resource_type, id) DO UPDATE SET
               patient_id = excluded.patient_id, section = excluded.section,
               json = excluded.json, seq = excluded.seq, deleted = false",
        )
        .await?;
    let resource_insert = tx
        .prepare_cached(
            "INSERT INTO resources (resource_type, id, patient_id, section, json, seq, deleted)
             VALUES ($1, $2, $3, $4, $5, $6, false)
             ON CONFLICT (resource_type, id) DO UPDATE SET patient_id = excluded.patient_id,
               section = excluded.section, json = excluded.json, seq = excluded.seq,
               deleted = false",
        )
        .await?;
    let deletions_update = tx
        .prepare_cached(
            "UPDATE resources r SET deleted = true, seq = u.q
             FROM unnest($1::text[], $2::text[], $3::bigint[]) AS u (t, i, q)
             WHERE r.resource_type = u.t AND r.id = u.i",
        )
        .await?;
    let deletion_update = tx
        .prepare_cached(
            "UPDATE resources SET deleted = true, seq = $3 WHERE resource_type = $1 AND id = $2",
        )
        .await?;
    let lock = tx.prepare_cached(LOCK_SQL).await?;
    let tip_stmt = tx.prepare_cached(AUDIT_TIP_SQL).await?;

    // Every statement's parameters, made before any statement is sent.
    let at = secs(planned.at);
    let feed_patients: Vec<&str> = feed.rows.iter().map(|r| r.0).collect();
    let feed_types: Vec<&str> = feed.rows.iter().map(|r| r.1).collect();
    let feed_ids: Vec<&str> = feed.rows.iter().map(|r| r.2).collect();
    let feed_ops: Vec<&str> = feed.rows.iter().map(|r| r.3).collect();
    let resources = &writes.resources;
    let resource_seqs: Vec<i64> = feed.resource_row.iter().map(|&row| seq_of(row)).collect();
    let types: Vec<&str> = resources.iter().map(|r| r.resource_type.as_str()).collect();
    let ids: Vec<&str> = resources.iter().map(|r| r.id.as_str()).collect();
    let patients: Vec<Option<&str>> = resources.iter().map(|r| r.patient_id.as_deref()).collect();
    let sections: Vec<Option<&str>> = resources.iter().map(|r| r.section.as_deref()).collect();
    let json: Vec<&str> = resources.iter().map(|r| r.json.as_str()).collect();
    let deletions = &writes.deletions;
    let deletion_seqs: Vec<i64> = feed.deletion_row.iter().map(|&row| seq_of(row)).collect();
    let deleted_types: Vec<&str> = deletions.iter().map(|d| d.resource_type.as_str()).collect();
    let deleted_ids: Vec<&str> = deletions.iter().map(|d| d.id.as_str()).collect();
    // One statement may not upsert a row twice: a bundle naming a resource twice is written
    // row by row, in order (the last one wins, as it would one statement at a time).
    let distinct = |keys: Vec<(&str, &str)>| {
        let n = keys.len();
        keys.into_iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len()
            == n
    };
    let tip_row: std::sync::Mutex<Option<Row>> = std::sync::Mutex::new(None);

    let mut steps: Vec<Statement<'_>> = Vec::new();
    if !feed.rows.is_empty() {
        let (stmt, at) = (&feed_insert, &at);
        let (p, t, i, o) = (&feed_patients, &feed_types, &feed_ids, &feed_ops);
        steps.push(Box::pin(async move {
            tx.execute(stmt, &[&first, p, t, i, o, at])
                .await
                .map(|_| ())
        }));
    }
    if distinct(types.iter().copied().zip(ids.iter().copied()).collect()) {
        if !resources.is_empty() {
            let stmt = &resources_insert;
            let (t, i, p, sec, j, q) = (&types, &ids, &patients, &sections, &json, &resource_seqs);
            steps.push(Box::pin(async move {
                tx.execute(stmt, &[t, i, p, sec, j, q]).await.map(|_| ())
            }));
        }
    } else {
        for (r, seq) in resources.iter().zip(&resource_seqs) {
            let stmt = &resource_insert;
            steps.push(Box::pin(async move {
                tx.execute(
                    stmt,
                    &[
                        &r.resource_type,
                        &r.id,
                        &r.patient_id,
                        &r.section,
                        &r.json,
                        seq,
                    ],
                )
                .await
                .map(|_| ())
            }));
        }
    }
    if distinct(
        deleted_types
            .iter()
            .copied()
            .zip(deleted_ids.iter().copied())
            .collect(),
    ) {
        if !deletions.is_empty() {
            let stmt = &deletions_update;
            let (t, i, q) = (&deleted_types, &deleted_ids, &deletion_seqs);
            steps.push(Box::pin(async move {
                tx.execute(stmt, &[t, i, q]).await.map(|_| ())
            }));
        }
    } else {
        for (d, seq) in deletions.iter().zip(&deletion_seqs) {
            let stmt = &deletion_update;
            steps.push(Box::pin(async move {
                tx.execute(stmt, &[&d.resource_type, &d.id, seq])
                    .await
                    .map(|_| ())
            }));
        }
    }
    {
        let stmt = &lock;
        steps.push(Box::pin(async move {
            tx.execute(stmt, &[&AUDIT_LOCK]).await.map(|_| ())
        }));
        let (stmt, tip_row) = (&tip_stmt, &tip_row);
        steps.push(Box::pin(async move {
            let row = tx.query_opt(stmt, &[]).await?;
            *tip_row.lock().unwrap_or_else(|p| p.into_inner()) = row;
            Ok(())
        }));
    }
    pipelined(steps).await?;
    tip_from(tip_row.into_inner().unwrap_or_else(|p| p.into_inner()))
}

// ---------- the pull's snapshot ----------

/// A pull's read transaction: a pooled connection with an open `REPEATABLE READ READ ONLY`
/// transaction, until dropped.
struct PgSnapshot {
    client: Option<Object>,
}

impl PgSnapshot {
    fn client(&self) -> Result<&Object, StoreError> {
        self.client
            .as_ref()
            .ok_or_else(|| StoreError::Backend("the snapshot is closed".into()))
    }
}

impl Drop for PgSnapshot {
    fn drop(&mut self) {
        let Some(client) = self.client.take() else {
            return;
        };
        // Ending the transaction needs a round trip; the connection goes back to the pool
        // only once it is out of the transaction, and is closed when that fails.
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    if client.batch_execute("ROLLBACK").await.is_err() {
                        drop(Object::take(client));
                    }
                });
            }
            Err(_) => drop(Object::take(client)),
        }
    }
}

#[async_trait]
impl FeedSnapshot for PgSnapshot {
    async fn head(&self) -> Result<i64, StoreError> {
        feed_head(self.client()?).await
    }

    async fn pruned_through(&self) -> Result<i64, StoreError> {
        pruned_through(self.client()?).await
    }

    async fn member_set(&self, hash: &str) -> Result<Option<Vec<String>>, StoreError> {
        let c = self.client()?;
        let stmt = c
            .prepare_cached("SELECT patients FROM member_sets WHERE hash = $1")
            .await?;
        let row = c.query_opt(&stmt, &[&hash]).await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    async fn feed_after(
        &self,
        after: i64,
        upto: i64,
        limit: usize,
    ) -> Result<Vec<FeedRow>, StoreError> {
        let c = self.client()?;
        let stmt = c
            .prepare_cached(
                "SELECT seq, patient_id, resource_type, resource_id, op FROM feed
                 WHERE seq > $1 AND seq <= $2 ORDER BY seq LIMIT $3",
            )
            .await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut out = Vec::new();
        for r in c.query(&stmt, &[&after, &upto, &limit]).await? {
            let seq: i64 = r.try_get(0)?;
            let rtype: Option<String> = r.try_get(2)?;
            let rid: Option<String> = r.try_get(3)?;
            let op: String = r.try_get(4)?;
            let op = FeedOp::parse(&op)
                .ok_or_else(|| StoreError::Corrupt(format!("feed row {seq}: op {op}")))?;
            out.push(FeedRow {
                seq,
                patient_id: r.try_get(1)?,
                resource: rtype.zip(rid),
                op,
            });
        }
        Ok(out)
    }

    async fn scope_entries(
        &self,
        service_id: &str,
        user_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<ListEntryRow>, StoreError> {
        let c = self.client()?;
        let stmt = c
            .prepare_cached(&format!(
                "SELECT {ENTRY_COLUMNS}
                 WHERE (e.ends_at IS NULL OR e.ends_at > $1)
                   AND ((l.kind <> 'break_glass' AND l.service_id = $2)
                        OR (l.kind = 'break_glass' AND e.user_id = $3))
                 ORDER BY e.id"
            ))
            .await?;
        c.query(&stmt, &[&secs(now), &service_id, &user_id])
            .await?
            .iter()
            .map(entry_from)
            .collect()
    }

    async fn entries_ended_between(
        &self,
        service_id: &str,
        user_id: &str,
        after: DateTime<Utc>,
        upto: DateTime<Utc>,
    ) -> Result<Vec<ListEntryRow>, StoreError> {
        let c = self.client()?;
        let stmt = c
            .prepare_cached(&format!(
                "SELECT {ENTRY_COLUMNS}
                 WHERE e.ends_at > $1 AND e.ends_at <= $2
                   AND ((l.kind <> 'break_glass' AND l.service_id = $3)
                        OR (l.kind = 'break_glass' AND e.user_id = $4))
                 ORDER BY e.patient_id, e.id"
            ))
            .await?;
        c.query(&stmt, &[&secs(after), &secs(upto), &service_id, &user_id])
            .await?
            .iter()
            .map(entry_from)
            .collect()
    }

    async fn patients(&self, ids: &[String]) -> Result<Vec<PatientRow>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let c = self.client()?;
        let stmt = c
            .prepare_cached(&format!("SELECT {PATIENT_COLUMNS} WHERE p.id = ANY($1)"))
            .await?;
        let mut found: BTreeMap<String, PatientRow> = BTreeMap::new();
        for r in c.query(&stmt, &[&ids]).await? {
            let p = patient_from(&r)?;
            found.insert(p.id.clone(), p);
        }
        // In the order asked for, as the SQLite backend answers.
        Ok(ids.iter().filter_map(|id| found.get(id).cloned()).collect())
    }

    async fn resource(
        &self,
        resource_type: &str,
        id: &str,
    ) -> Result<Option<ResourceRow>, StoreError> {
        let c = self.client()?;
        let stmt = c
            .prepare_cached(&format!(
                "SELECT {RESOURCE_COLUMNS} WHERE resource_type = $1 AND id = $2"
            ))
            .await?;
        c.query_opt(&stmt, &[&resource_type, &id])
            .await?
            .as_ref()
            .map(resource_from)
            .transpose()
    }

    async fn live_resources(&self, patient_id: &str) -> Result<Vec<ResourceRow>, StoreError> {
        let c = self.client()?;
        let stmt = c
            .prepare_cached(&format!(
                "SELECT {RESOURCE_COLUMNS} WHERE patient_id = $1 AND NOT deleted
                 ORDER BY resource_type, id"
            ))
            .await?;
        c.query(&stmt, &[&patient_id])
            .await?
            .iter()
            .map(resource_from)
            .collect()
    }

    async fn live_resource_versions(
        &self,
        patient_id: &str,
    ) -> Result<Vec<ResourceVersion>, StoreError> {
        let c = self.client()?;
        let stmt = c
            .prepare_cached(
                "SELECT resource_type, id, seq FROM resources
                 WHERE patient_id = $1 AND NOT deleted ORDER BY resource_type, id",
            )
            .await?;
        c.query(&stmt, &[&patient_id])
            .await?
            .iter()
            .map(|r| {
                Ok(ResourceVersion {
                    resource_type: r.try_get(0)?,
                    id: r.try_get(1)?,
                    seq: r.try_get(2)?,
                })
            })
            .collect()
    }
}

// ---------- the contract ----------

#[async_trait]
impl RecordStore for PostgresStore {
    async fn import_basis(&self, keys: &ImportKeys) -> Result<ImportBasis, StoreError> {
        let mut client = self.client().await?;
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        let basis = read_import_basis(&tx, keys, None).await?;
        tx.commit().await?;
        Ok(basis)
    }

    async fn apply_import(
        &self,
        planned: PlannedImport,
        seal: AuditSealer,
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        apply_import_tx(&tx, &planned, seal).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn organisation_name(&self, ods: &str) -> Result<Option<String>, StoreError> {
        let c = self.client().await?;
        let row = c
            .query_opt("SELECT name FROM organisations WHERE ods = $1", &[&ods])
            .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    async fn upsert_practice(&self, practice: PracticeRow) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        upsert_organisation(&tx, &practice.ods, &practice.name, Utc::now()).await?;
        tx.execute(
            "INSERT INTO practices (ods, source_system, postcode) VALUES ($1, $2, $3)
             ON CONFLICT (ods) DO UPDATE SET source_system = excluded.source_system,
               postcode = excluded.postcode",
            &[&practice.ods, &practice.source_system, &practice.postcode],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn practices(&self) -> Result<Vec<PracticeRow>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT p.ods, o.name, p.source_system, p.postcode
                 FROM practices p JOIN organisations o ON o.ods = p.ods ORDER BY p.ods",
                &[],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(PracticeRow {
                    ods: r.try_get(0)?,
                    name: r.try_get(1)?,
                    source_system: r.try_get(2)?,
                    postcode: r.try_get(3)?,
                })
            })
            .collect()
    }

    async fn patients(&self) -> Result<Vec<PatientRow>, StoreError> {
        let c = self.client().await?;
        c.query(&format!("SELECT {PATIENT_COLUMNS} ORDER BY p.id"), &[])
            .await?
            .iter()
            .map(patient_from)
            .collect()
    }

    async fn patient(&self, id: &str) -> Result<Option<PatientRow>, StoreError> {
        let c = self.client().await?;
        c.query_opt(&format!("SELECT {PATIENT_COLUMNS} WHERE p.id = $1"), &[&id])
            .await?
            .as_ref()
            .map(patient_from)
            .transpose()
    }

    async fn patient_resources(&self, patient_id: &str) -> Result<Vec<ResourceRow>, StoreError> {
        let c = self.client().await?;
        c.query(
            &format!("SELECT {RESOURCE_COLUMNS} WHERE patient_id = $1 ORDER BY resource_type, id"),
            &[&patient_id],
        )
        .await?
        .iter()
        .map(resource_from)
        .collect()
    }

    async fn set_dissent(&self, patient_id: &str, dissent: bool) -> Result<(), StoreError> {
        let c = self.client().await?;
        let n = c
            .execute(
                "UPDATE patients SET dissent = $2, updated_at = $3 WHERE id = $1",
                &[&patient_id, &dissent, &secs(Utc::now())],
            )
            .await?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("patient {patient_id}")));
        }
        Ok(())
    }
}

#[async_trait]
impl IdentityStore for PostgresStore {
    async fn upsert_service(&self, service: ServiceRow) -> Result<(), StoreError> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO services (id, name) VALUES ($1, $2)
             ON CONFLICT (id) DO UPDATE SET name = excluded.name",
            &[&service.id, &service.name],
        )
        .await?;
        Ok(())
    }

    async fn put_agreement(
        &self,
        agreement: &Agreement,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let json =
            serde_json::to_string(agreement).map_err(|e| StoreError::Backend(e.to_string()))?;
        let c = self.client().await?;
        c.execute(
            "INSERT INTO agreements (id, service_id, json, updated_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (id) DO UPDATE SET service_id = excluded.service_id,
               json = excluded.json, updated_at = excluded.updated_at",
            &[&agreement.id, &agreement.service, &json, &secs(now)],
        )
        .await?;
        Ok(())
    }

    async fn agreements_for_service(&self, service_id: &str) -> Result<Vec<Agreement>, StoreError> {
        let c = self.client().await?;
        let stmt = c
            .prepare_cached("SELECT json FROM agreements WHERE service_id = $1 ORDER BY id")
            .await?;
        let mut out = Vec::new();
        for r in c.query(&stmt, &[&service_id]).await? {
            let json: String = r.try_get(0)?;
            out.push(
                serde_json::from_str(&json)
                    .map_err(|e| StoreError::Corrupt(format!("agreement: {e}")))?,
            );
        }
        Ok(out)
    }

    async fn create_user(&self, user: NewUser, now: DateTime<Utc>) -> Result<String, StoreError> {
        let c = self.client().await?;
        let id = uuid::Uuid::new_v4().to_string();
        let taken = || StoreError::Conflict(format!("user {} already exists", user.username));
        match c
            .execute(
                "INSERT INTO users (id, username, display_name, role, service_id, password_hash,
                   totp_secret, created_at, practice_ods)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                &[
                    &id,
                    &user.username,
                    &user.display_name,
                    &user.role,
                    &user.service_id,
                    &user.password_hash,
                    &user.totp_secret,
                    &secs(now),
                    &user.practice_ods,
                ],
            )
            .await
        {
            Ok(_) => Ok(id),
            Err(e) if is_unique_violation(&e) => Err(taken()),
            Err(e) => Err(e.into()),
        }
    }

    async fn user_by_username(&self, username: &str) -> Result<Option<UserRow>, StoreError> {
        let c = self.client().await?;
        let stmt = c
            .prepare_cached(&format!("SELECT {USER_COLUMNS} WHERE u.username = $1"))
            .await?;
        c.query_opt(&stmt, &[&username])
            .await?
            .as_ref()
            .map(user_from)
            .transpose()
    }

    async fn user_by_id(&self, id: &str) -> Result<Option<UserRow>, StoreError> {
        let c = self.client().await?;
        let stmt = c
            .prepare_cached(&format!("SELECT {USER_COLUMNS} WHERE u.id = $1"))
            .await?;
        c.query_opt(&stmt, &[&id])
            .await?
            .as_ref()
            .map(user_from)
            .transpose()
    }

    async fn users(&self) -> Result<Vec<UserRow>, StoreError> {
        let c = self.client().await?;
        c.query(&format!("SELECT {USER_COLUMNS} ORDER BY u.username"), &[])
            .await?
            .iter()
            .map(user_from)
            .collect()
    }

    async fn replace_totp_secret(
        &self,
        user_id: &str,
        expected: &str,
        new: &str,
    ) -> Result<(), StoreError> {
        let c = self.client().await?;
        let n = c
            .execute(
                "UPDATE users SET totp_secret = $3 WHERE id = $1 AND totp_secret = $2",
                &[&user_id, &expected, &new],
            )
            .await?;
        if n == 0 {
            return Err(StoreError::Stale(
                "the TOTP secret changed since it was read, or the user is gone".into(),
            ));
        }
        Ok(())
    }

    async fn claim_sign_in_attempt(
        &self,
        user_id: &str,
        now: DateTime<Utc>,
        max_failures: u32,
        lock_until: DateTime<Utc>,
    ) -> Result<SignInClaim, StoreError> {
        let c = self.client().await?;
        let max = i32::try_from(max_failures).unwrap_or(i32::MAX);
        // One conditional UPDATE: under READ COMMITTED a concurrent attempt waits for the
        // row lock and re-checks the WHERE on the newest row, so no two attempts read the
        // same count and the lock cannot be passed by racing it.
        let counted = c
            .query_opt(
                "UPDATE users SET
                   failed_attempts = CASE WHEN failed_attempts + 1 >= $3 THEN 0
                                          ELSE failed_attempts + 1 END,
                   locked_until = CASE WHEN failed_attempts + 1 >= $3 THEN $4::timestamptz
                                       ELSE NULL END
                 WHERE id = $1 AND (locked_until IS NULL OR locked_until <= $2)
                 RETURNING locked_until",
                &[&user_id, &secs(now), &max, &secs(lock_until)],
            )
            .await?;
        if let Some(row) = counted {
            return Ok(SignInClaim::Counted {
                locked_until: row.get::<_, Option<DateTime<Utc>>>(0),
            });
        }
        let locked = c
            .query_opt("SELECT locked_until FROM users WHERE id = $1", &[&user_id])
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("user {user_id}")))?;
        Ok(SignInClaim::Locked(
            locked.get::<_, Option<DateTime<Utc>>>(0).unwrap_or(now),
        ))
    }

    async fn record_sign_in_success(
        &self,
        user_id: &str,
        totp_step: i64,
    ) -> Result<(), StoreError> {
        let c = self.client().await?;
        let n = c
            .execute(
                "UPDATE users SET failed_attempts = 0, locked_until = NULL, totp_last_step = $2
                 WHERE id = $1 AND totp_last_step < $2",
                &[&user_id, &totp_step],
            )
            .await?;
        if n == 0 {
            return Err(StoreError::Conflict(
                "this TOTP code was already used".into(),
            ));
        }
        Ok(())
    }

    async fn create_device(
        &self,
        user_id: &str,
        name: &str,
        now: DateTime<Utc>,
    ) -> Result<String, StoreError> {
        let c = self.client().await?;
        let id = uuid::Uuid::new_v4().to_string();
        c.execute(
            "INSERT INTO devices (id, user_id, name, created_at) VALUES ($1, $2, $3, $4)",
            &[&id, &user_id, &name, &secs(now)],
        )
        .await?;
        Ok(id)
    }

    async fn device(&self, id: &str) -> Result<Option<DeviceRow>, StoreError> {
        let c = self.client().await?;
        let stmt = c
            .prepare_cached(
                "SELECT id, user_id, name, created_at, revoked_at FROM devices WHERE id = $1",
            )
            .await?;
        c.query_opt(&stmt, &[&id])
            .await?
            .map(|r| {
                Ok(DeviceRow {
                    id: r.try_get(0)?,
                    user_id: r.try_get(1)?,
                    name: r.try_get(2)?,
                    created_at: r.try_get(3)?,
                    revoked_at: r.try_get(4)?,
                })
            })
            .transpose()
    }

    async fn revoke_device(&self, id: &str, now: DateTime<Utc>) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let now = secs(now);
        let n = tx
            .execute(
                "UPDATE devices SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
                &[&id, &now],
            )
            .await?;
        tx.execute(
            "UPDATE tokens SET revoked_at = $2 WHERE device_id = $1 AND revoked_at IS NULL",
            &[&id, &now],
        )
        .await?;
        tx.commit().await?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("active device {id}")));
        }
        Ok(())
    }

    async fn store_tokens(
        &self,
        device_id: &str,
        pair: TokenPair,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        insert_pair(&tx, device_id, &pair, now).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn token(&self, hash: &str) -> Result<Option<TokenRow>, StoreError> {
        let c = self.client().await?;
        let stmt = c
            .prepare_cached(
                "SELECT hash, device_id, kind, issued_at, expires_at, used_at, revoked_at
                 FROM tokens WHERE hash = $1",
            )
            .await?;
        c.query_opt(&stmt, &[&hash])
            .await?
            .map(|r| {
                Ok(TokenRow {
                    hash: r.try_get(0)?,
                    device_id: r.try_get(1)?,
                    kind: token_kind(r.try_get(2)?),
                    issued_at: r.try_get(3)?,
                    expires_at: r.try_get(4)?,
                    used_at: r.try_get(5)?,
                    revoked_at: r.try_get(6)?,
                })
            })
            .transpose()
    }

    async fn exchange_refresh(
        &self,
        device_id: &str,
        old_refresh_hash: &str,
        pair: TokenPair,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // The conditional UPDATE locks the token row: a concurrent exchange of the same
        // token waits, then finds it used and changes nothing.
        let n = tx
            .execute(
                "UPDATE tokens SET used_at = $3
                 WHERE hash = $1 AND device_id = $2 AND kind = 'refresh'
                   AND used_at IS NULL AND revoked_at IS NULL",
                &[&old_refresh_hash, &device_id, &secs(now)],
            )
            .await?;
        if n == 0 {
            return Err(StoreError::Stale(
                "the refresh token was exchanged or revoked since it was read".into(),
            ));
        }
        tx.execute(
            "UPDATE tokens SET revoked_at = $2
             WHERE device_id = $1 AND kind = 'access' AND revoked_at IS NULL",
            &[&device_id, &secs(now)],
        )
        .await?;
        insert_pair(&tx, device_id, &pair, now).await?;
        tx.execute(
            "UPDATE devices SET last_seen_at = $2 WHERE id = $1",
            &[&device_id, &secs(now)],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn revoke_device_tokens(
        &self,
        device_id: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let c = self.client().await?;
        c.execute(
            "UPDATE tokens SET revoked_at = $2 WHERE device_id = $1 AND revoked_at IS NULL",
            &[&device_id, &secs(now)],
        )
        .await?;
        Ok(())
    }
}

async fn insert_pair(
    tx: &impl GenericClient,
    device: &str,
    pair: &TokenPair,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let stmt = tx
        .prepare_cached(
            "INSERT INTO tokens (hash, device_id, kind, issued_at, expires_at)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .await?;
    let now = secs(now);
    tx.execute(
        &stmt,
        &[
            &pair.access_hash,
            &device,
            &TokenKind::Access.as_str(),
            &now,
            &secs(pair.access_expires_at),
        ],
    )
    .await?;
    tx.execute(
        &stmt,
        &[
            &pair.refresh_hash,
            &device,
            &TokenKind::Refresh.as_str(),
            &now,
            &secs(pair.refresh_expires_at),
        ],
    )
    .await?;
    Ok(())
}

#[async_trait]
impl ListStore for PostgresStore {
    async fn create_list(&self, list: ListRow) -> Result<(), StoreError> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO lists (id, name, kind, service_id, owner_user_id, team)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (id) DO UPDATE SET name = excluded.name,
                 owner_user_id = excluded.owner_user_id, team = excluded.team",
            &[
                &list.id,
                &list.name,
                &list_kind_as_str(list.kind),
                &list.service_id,
                &list.owner_user_id,
                &list.team,
            ],
        )
        .await?;
        Ok(())
    }

    async fn lists(&self) -> Result<Vec<ListRow>, StoreError> {
        let c = self.client().await?;
        c.query(&format!("SELECT {LIST_COLUMNS} ORDER BY id"), &[])
            .await?
            .iter()
            .map(list_from)
            .collect()
    }

    async fn list(&self, id: &str) -> Result<Option<ListRow>, StoreError> {
        let c = self.client().await?;
        c.query_opt(&format!("SELECT {LIST_COLUMNS} WHERE id = $1"), &[&id])
            .await?
            .as_ref()
            .map(list_from)
            .transpose()
    }

    async fn set_team(&self, user_id: &str, team: Option<&str>) -> Result<(), StoreError> {
        let c = self.client().await?;
        match team {
            Some(team) => {
                c.execute(
                    "INSERT INTO team_members (user_id, team) VALUES ($1, $2)
                     ON CONFLICT (user_id) DO UPDATE SET team = excluded.team",
                    &[&user_id, &team],
                )
                .await?
            }
            None => {
                c.execute("DELETE FROM team_members WHERE user_id = $1", &[&user_id])
                    .await?
            }
        };
        Ok(())
    }

    async fn team_of(&self, user_id: &str) -> Result<Option<String>, StoreError> {
        let c = self.client().await?;
        Ok(c.query_opt(
            "SELECT team FROM team_members WHERE user_id = $1",
            &[&user_id],
        )
        .await?
        .map(|r| r.try_get(0))
        .transpose()?)
    }

    async fn insert_list_entry(
        &self,
        entry: ListEntryWrite,
        now: DateTime<Utc>,
    ) -> Result<i64, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        lock_feed(&tx).await?;
        let id = insert_entry_tx(&tx, &entry, now).await?;
        tx.commit().await?;
        Ok(id)
    }

    async fn end_list_entry(
        &self,
        list_id: &str,
        patient_id: &str,
        at: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        lock_feed(&tx).await?;
        let at = secs(at);
        let n = tx
            .execute(
                "UPDATE list_entries SET ends_at = $3
                 WHERE list_id = $1 AND patient_id = $2 AND (ends_at IS NULL OR ends_at > $3)",
                &[&list_id, &patient_id, &at],
            )
            .await?;
        if n > 0 {
            append_feed(&tx, patient_id, None, FeedOp::List, Utc::now()).await?;
        }
        tx.commit().await?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    async fn list_entries(&self, list_id: &str) -> Result<Vec<ListEntryRow>, StoreError> {
        let c = self.client().await?;
        c.query(
            &format!("SELECT {ENTRY_COLUMNS} WHERE e.list_id = $1 ORDER BY e.id"),
            &[&list_id],
        )
        .await?
        .iter()
        .map(entry_from)
        .collect()
    }
}

fn list_from(r: &Row) -> Result<ListRow, StoreError> {
    Ok(ListRow {
        id: r.try_get(0)?,
        name: r.try_get(1)?,
        kind: list_kind_from_str(r.try_get(2)?)?,
        service_id: r.try_get(3)?,
        owner_user_id: r.try_get(4)?,
        team: r.try_get(5)?,
    })
}

#[async_trait]
impl FeedStore for PostgresStore {
    async fn feed_snapshot(&self) -> Result<Box<dyn FeedSnapshot>, StoreError> {
        let client = self.client().await?;
        // The snapshot is fixed by the first query and kept until the transaction ends.
        client
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await?;
        Ok(Box::new(PgSnapshot {
            client: Some(client),
        }))
    }

    async fn save_member_sets(
        &self,
        mut sets: Vec<(String, Vec<String>)>,
        used_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        // The same order on every node, so two upserts of the same sets cannot deadlock.
        sets.sort_by(|a, b| a.0.cmp(&b.0));
        sets.dedup_by(|a, b| a.0 == b.0);
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let stmt = tx
            .prepare_cached(
                "INSERT INTO member_sets (hash, patients, last_used_at) VALUES ($1, $2, $3)
                 ON CONFLICT (hash) DO UPDATE SET last_used_at = excluded.last_used_at",
            )
            .await?;
        let used_at = secs(used_at);
        for (hash, ids) in &sets {
            tx.execute(&stmt, &[hash, ids, &used_at]).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn feed_head(&self) -> Result<i64, StoreError> {
        feed_head(&self.client().await?).await
    }

    async fn prune_feed(&self, before: DateTime<Utc>) -> Result<i64, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        lock_feed(&tx).await?;
        let before = secs(before);
        let upto: Option<i64> = tx
            .query_one("SELECT MAX(seq) FROM feed WHERE at < $1", &[&before])
            .await?
            .try_get(0)?;
        let previous = pruned_through(&tx).await?;
        let through = upto.unwrap_or(0).max(previous);
        // Cursors issued before `before` expire with the feed, so their sets can go.
        tx.execute(
            "DELETE FROM member_sets WHERE last_used_at < $1",
            &[&before],
        )
        .await?;
        if through > previous {
            tx.execute("DELETE FROM feed WHERE seq <= $1", &[&through])
                .await?;
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('feed_pruned_through', $1)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                &[&through.to_string()],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(through)
    }
}

#[async_trait]
impl AuditStore for PostgresStore {
    async fn audit_tip(&self) -> Result<Option<AuditTip>, StoreError> {
        audit_tip(&self.client().await?).await
    }

    async fn append_audit_row(&self, row: AuditRow) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        append_audit_row_tx(&tx, &row).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn append_audit_event(
        &self,
        event: AuditEvent,
        seal: AuditSealer,
    ) -> Result<AuditRow, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let row = seal_onto(&tx, event, seal).await?;
        tx.commit().await?;
        Ok(row)
    }

    async fn audit_rows(&self) -> Result<Vec<AuditRow>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query(
                &format!("SELECT {AUDIT_COLUMNS} FROM audit ORDER BY seq"),
                &[],
            )
            .await?;
        rows.iter().map(audit_from).collect()
    }

    async fn append_audit_events(
        &self,
        events: Vec<AuditEvent>,
        seal: AuditSealer,
    ) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let mut tip = lock_audit_read_tip(&tx).await?;
        let mut rows = Vec::with_capacity(events.len());
        for event in events {
            let row = seal(tip.as_ref(), event);
            tip = Some(AuditTip {
                seq: row.seq,
                hash: row.hash.clone(),
            });
            rows.push(row);
        }
        insert_audit_rows(&tx, &rows).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn audit_rows_for_patient(
        &self,
        patient_id: &str,
        from: Option<DateTime<Utc>>,
    ) -> Result<Vec<AuditRow>, StoreError> {
        let c = self.client().await?;
        let from = from.map(secs);
        let rows = c
            .query(
                &format!(
                    "SELECT {AUDIT_COLUMNS} FROM audit
                     WHERE patient_id = $1 AND ($2::timestamptz IS NULL OR at >= $2)
                     ORDER BY seq"
                ),
                &[&patient_id, &from],
            )
            .await?;
        rows.iter().map(audit_from).collect()
    }

    async fn put_audit_checkpoint(&self, row: AuditCheckpointRow) -> Result<(), StoreError> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO audit_checkpoints (seq, hash, at, key_id, signature)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (seq) DO NOTHING",
            &[
                &row.seq,
                &row.hash,
                &secs(row.at),
                &row.key_id,
                &row.signature,
            ],
        )
        .await?;
        Ok(())
    }

    async fn append_device_view(
        &self,
        id: &str,
        device_id: &str,
        event: AuditEvent,
        seal: AuditSealer,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        lock_audit(&tx).await?;
        let inserted = tx
            .execute(
                "INSERT INTO device_views (id, device_id, received_at) VALUES ($1, $2, $3)
                 ON CONFLICT (id) DO NOTHING",
                &[&id, &device_id, &secs(event.at)],
            )
            .await?;
        if inserted == 0 {
            let first: DateTime<Utc> = tx
                .query_one("SELECT received_at FROM device_views WHERE id = $1", &[&id])
                .await?
                .try_get(0)?;
            return Ok(Some(first));
        }
        seal_onto(&tx, event, seal).await?;
        tx.commit().await?;
        Ok(None)
    }

    async fn latest_audit_checkpoint(&self) -> Result<Option<AuditCheckpointRow>, StoreError> {
        let c = self.client().await?;
        c.query_opt(
            "SELECT seq, hash, at, key_id, signature FROM audit_checkpoints
             ORDER BY seq DESC LIMIT 1",
            &[],
        )
        .await?
        .map(|r| {
            Ok(AuditCheckpointRow {
                seq: r.try_get(0)?,
                hash: r.try_get(1)?,
                at: r.try_get(2)?,
                key_id: r.try_get(3)?,
                signature: r.try_get(4)?,
            })
        })
        .transpose()
    }
}

const AUDIT_COLUMNS: &str = "seq, at, actor, action, patient_id, detail, prev_hash, hash";

fn audit_from(r: &Row) -> Result<AuditRow, StoreError> {
    let seq: i64 = r.try_get(0)?;
    let detail: String = r.try_get(5)?;
    Ok(AuditRow {
        seq,
        event: AuditEvent {
            at: r.try_get(1)?,
            actor: r.try_get(2)?,
            action: r.try_get(3)?,
            patient_id: r.try_get(4)?,
            detail: serde_json::from_str(&detail)
                .map_err(|e| StoreError::Corrupt(format!("audit {seq}: {e}")))?,
        },
        prev_hash: r.try_get(6)?,
        hash: r.try_get(7)?,
    })
}

const ALERT_COLUMNS: &str =
    "id, at, user_id, patient_id, reason, detail, entry_id, acked_at, acked_by, ack_note
     FROM alerts";

fn alert_from(r: &Row) -> Result<AlertRow, StoreError> {
    let id: i64 = r.try_get(0)?;
    let detail: String = r.try_get(5)?;
    Ok(AlertRow {
        id,
        at: r.try_get(1)?,
        user_id: r.try_get(2)?,
        patient_id: r.try_get(3)?,
        reason: r.try_get(4)?,
        detail: serde_json::from_str(&detail)
            .map_err(|e| StoreError::Corrupt(format!("alert {id}: {e}")))?,
        entry_id: r.try_get(6)?,
        acked_at: r.try_get(7)?,
        acked_by: r.try_get(8)?,
        ack_note: r.try_get(9)?,
    })
}

#[async_trait]
impl AlertStore for PostgresStore {
    async fn insert_break_glass(
        &self,
        write: BreakGlassWrite,
        seal: AuditSealer,
        now: DateTime<Utc>,
    ) -> Result<(i64, i64), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // The feed lock first, then the audit lock (the order every transaction takes them).
        lock_feed(&tx).await?;
        let entry = &write.entry;
        let entry_id = insert_entry_tx(&tx, entry, now).await?;
        let alert_id: i64 = tx
            .query_one(
                "INSERT INTO alerts (at, user_id, patient_id, reason, detail, entry_id)
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                &[
                    &secs(now),
                    &entry.user_id.clone().unwrap_or_default(),
                    &entry.patient_id,
                    &write.reason,
                    &write.detail.to_string(),
                    &entry_id,
                ],
            )
            .await?
            .try_get(0)?;
        let mut audit = write.audit;
        audit.detail["alert_id"] = serde_json::json!(alert_id);
        audit.detail["entry_id"] = serde_json::json!(entry_id);
        seal_onto(&tx, audit, seal).await?;
        tx.commit().await?;
        Ok((entry_id, alert_id))
    }

    async fn alerts(&self, open_only: bool) -> Result<Vec<AlertRow>, StoreError> {
        let c = self.client().await?;
        c.query(
            &format!("SELECT {ALERT_COLUMNS} WHERE (NOT $1 OR acked_at IS NULL) ORDER BY id DESC"),
            &[&open_only],
        )
        .await?
        .iter()
        .map(alert_from)
        .collect()
    }

    async fn alert(&self, id: i64) -> Result<Option<AlertRow>, StoreError> {
        let c = self.client().await?;
        c.query_opt(&format!("SELECT {ALERT_COLUMNS} WHERE id = $1"), &[&id])
            .await?
            .as_ref()
            .map(alert_from)
            .transpose()
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
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        lock_audit(&tx).await?;
        let n = tx
            .execute(
                "UPDATE alerts SET acked_at = $2, acked_by = $3, ack_note = $4
                 WHERE id = $1 AND acked_at IS NULL",
                &[&id, &secs(at), &by, &note],
            )
            .await?;
        if n == 0 {
            return Ok(false);
        }
        seal_onto(&tx, audit, seal).await?;
        tx.commit().await?;
        Ok(true)
    }
}

#[async_trait]
impl SourceStore for PostgresStore {
    async fn put_source_credential(&self, row: SourceCredentialRow) -> Result<(), StoreError> {
        let c = self.client().await?;
        // One statement: the practice must be a member, checked where the row is written.
        let n = c
            .execute(
                "INSERT INTO source_credentials (ods, secret_hash, created_at)
                 SELECT ods, $2, $3 FROM practices WHERE ods = $1
                 ON CONFLICT (ods) DO UPDATE SET secret_hash = excluded.secret_hash,
                   created_at = excluded.created_at",
                &[&row.ods, &row.secret_hash, &secs(row.created_at)],
            )
            .await?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("member practice {}", row.ods)));
        }
        Ok(())
    }

    async fn source_credential(
        &self,
        ods: &str,
    ) -> Result<Option<SourceCredentialRow>, StoreError> {
        let c = self.client().await?;
        c.query_opt(
            "SELECT ods, secret_hash, created_at FROM source_credentials WHERE ods = $1",
            &[&ods],
        )
        .await?
        .map(|r| {
            Ok(SourceCredentialRow {
                ods: r.try_get(0)?,
                secret_hash: r.try_get(1)?,
                created_at: r.try_get(2)?,
            })
        })
        .transpose()
    }
}

// ---------- notes ----------

const NOTE_COLUMNS: &str = "id, patient_id, author_user_id, device_id, service_id, kind, body,
     created_at, received_at, outcome, reason, delivery_state, delivery_at, delivery_reason,
     practice_ods FROM notes";

fn note_from(r: &tokio_postgres::Row) -> Result<NoteRow, StoreError> {
    let id: String = r.try_get(0)?;
    let outcome: String = r.try_get(9)?;
    let delivery: Option<String> = r.try_get(11)?;
    Ok(NoteRow {
        patient_id: r.try_get(1)?,
        author_user_id: r.try_get(2)?,
        device_id: r.try_get(3)?,
        service_id: r.try_get(4)?,
        kind: r.try_get(5)?,
        body: r.try_get(6)?,
        created_at: r.try_get(7)?,
        received_at: r.try_get(8)?,
        outcome: NoteOutcome::parse(&outcome)
            .ok_or_else(|| StoreError::Corrupt(format!("note {id}: outcome {outcome}")))?,
        reason: r.try_get(10)?,
        delivery: match delivery {
            None => None,
            Some(d) => Some(
                DeliveryState::parse(&d)
                    .ok_or_else(|| StoreError::Corrupt(format!("note {id}: delivery {d}")))?,
            ),
        },
        delivery_at: r.try_get(12)?,
        delivery_reason: r.try_get(13)?,
        practice_ods: r.try_get(14)?,
        id,
    })
}

#[async_trait]
impl NoteStore for PostgresStore {
    async fn insert_note(&self, row: NoteRow) -> Result<NoteInsert, StoreError> {
        let c = self.client().await?;
        // A concurrent insert of the same id waits for the first to commit, then does nothing;
        // the read after it (a new statement) sees the first row.
        let inserted = c
            .execute(
                "INSERT INTO notes (id, patient_id, author_user_id, device_id, service_id,
                   kind, body, created_at, received_at, outcome, reason, delivery_state,
                   delivery_at, delivery_reason, practice_ods)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
                 ON CONFLICT (id) DO NOTHING",
                &[
                    &row.id,
                    &row.patient_id,
                    &row.author_user_id,
                    &row.device_id,
                    &row.service_id,
                    &row.kind,
                    &row.body,
                    &secs(row.created_at),
                    &secs(row.received_at),
                    &row.outcome.as_str(),
                    &row.reason,
                    &row.delivery.map(DeliveryState::as_str),
                    &row.delivery_at.map(secs),
                    &row.delivery_reason,
                    &row.practice_ods,
                ],
            )
            .await?;
        if inserted == 1 {
            return Ok(NoteInsert::Inserted);
        }
        let sql = format!("SELECT {NOTE_COLUMNS} WHERE id = $1");
        let first = c.query_opt(&sql, &[&row.id]).await?.ok_or_else(|| {
            StoreError::Backend(format!("note {} neither inserted nor found", row.id))
        })?;
        Ok(NoteInsert::Existing(Box::new(note_from(&first)?)))
    }

    async fn note(&self, id: &str) -> Result<Option<NoteRow>, StoreError> {
        let c = self.client().await?;
        let sql = format!("SELECT {NOTE_COLUMNS} WHERE id = $1");
        c.query_opt(&sql, &[&id])
            .await?
            .map(|r| note_from(&r))
            .transpose()
    }

    async fn notes_for_practice(
        &self,
        ods: &str,
        states: &[DeliveryState],
    ) -> Result<Vec<NoteRow>, StoreError> {
        let c = self.client().await?;
        let states: Vec<&'static str> = states.iter().map(|s| s.as_str()).collect();
        let sql = format!(
            "SELECT {NOTE_COLUMNS} WHERE practice_ods = $1 AND outcome = 'accepted'
               AND delivery_state = ANY($2)
             ORDER BY received_at, id"
        );
        c.query(&sql, &[&ods, &states])
            .await?
            .iter()
            .map(note_from)
            .collect()
    }

    async fn set_note_deliveries(&self, writes: Vec<DeliveryWrite>) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        for w in &writes {
            // The conditional UPDATE locks the row: a concurrent change waits, then finds the
            // state moved and changes nothing.
            let changed = tx
                .execute(
                    "UPDATE notes SET delivery_state = $2, delivery_at = $3, delivery_reason = $4
                     WHERE id = $1 AND delivery_state = $5",
                    &[
                        &w.note_id,
                        &w.state.as_str(),
                        &secs(w.at),
                        &w.reason,
                        &w.expected.as_str(),
                    ],
                )
                .await?;
            if changed != 1 {
                // Dropping the transaction rolls back the writes before this one.
                return Err(StoreError::Stale(format!(
                    "note {} is no longer {}",
                    w.note_id, w.expected
                )));
            }
        }
        tx.commit().await?;
        Ok(())
    }
}

#[async_trait]
impl KeyStore for PostgresStore {
    async fn key_or_insert(
        &self,
        name: &str,
        candidate: &[u8],
        now: DateTime<Utc>,
    ) -> Result<Vec<u8>, StoreError> {
        let c = self.client().await?;
        // A concurrent first insert makes this one wait for it, then do nothing; the read
        // (a new statement, so a new snapshot) sees whichever key won.
        c.execute(
            "INSERT INTO server_keys (name, key, created_at) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO NOTHING",
            &[&name, &candidate, &secs(now)],
        )
        .await?;
        Ok(
            c.query_one("SELECT key FROM server_keys WHERE name = $1", &[&name])
                .await?
                .try_get(0)?,
        )
    }
}

// ---------- administration ----------

fn agreement_from_json(json: &str) -> Result<Agreement, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt(format!("agreement: {e}")))
}

#[async_trait]
impl AdminStore for PostgresStore {
    async fn put_admin_credential(&self, row: AdminCredentialRow) -> Result<(), StoreError> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO admin_credentials (name, secret_hash, created_at) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO UPDATE SET secret_hash = excluded.secret_hash,
               created_at = excluded.created_at",
            &[&row.name, &row.secret_hash, &secs(row.created_at)],
        )
        .await?;
        Ok(())
    }

    async fn admin_credential(&self, name: &str) -> Result<Option<AdminCredentialRow>, StoreError> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "SELECT name, secret_hash, created_at FROM admin_credentials WHERE name = $1",
                &[&name],
            )
            .await?;
        row.map(|r| {
            Ok(AdminCredentialRow {
                name: r.try_get(0)?,
                secret_hash: r.try_get(1)?,
                created_at: r.try_get(2)?,
            })
        })
        .transpose()
    }

    async fn services(&self) -> Result<Vec<ServiceRow>, StoreError> {
        let c = self.client().await?;
        let mut out = Vec::new();
        for r in c
            .query("SELECT id, name FROM services ORDER BY id", &[])
            .await?
        {
            out.push(ServiceRow {
                id: r.try_get(0)?,
                name: r.try_get(1)?,
            });
        }
        Ok(out)
    }

    async fn all_agreements(&self) -> Result<Vec<Agreement>, StoreError> {
        let c = self.client().await?;
        let mut out = Vec::new();
        for r in c
            .query("SELECT json FROM agreements ORDER BY id", &[])
            .await?
        {
            let json: String = r.try_get(0)?;
            out.push(agreement_from_json(&json)?);
        }
        Ok(out)
    }

    async fn agreement(&self, id: &str) -> Result<Option<Agreement>, StoreError> {
        let c = self.client().await?;
        match c
            .query_opt("SELECT json FROM agreements WHERE id = $1", &[&id])
            .await?
        {
            None => Ok(None),
            Some(r) => {
                let json: String = r.try_get(0)?;
                agreement_from_json(&json).map(Some)
            }
        }
    }

    async fn write_agreement(
        &self,
        write: AgreementWrite,
        audit: AuditEvent,
        seal: AuditSealer,
    ) -> Result<AuditRow, StoreError> {
        let a = &write.agreement;
        let json = serde_json::to_string(a).map_err(|e| StoreError::Backend(e.to_string()))?;
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // The row lock holds off a concurrent writer of the same agreement until commit.
        let stored = tx
            .query_opt(
                "SELECT json FROM agreements WHERE id = $1 FOR UPDATE",
                &[&a.id],
            )
            .await?;
        let stored_version = match stored {
            None => None,
            Some(r) => Some(agreement_from_json(&r.try_get::<_, String>(0)?)?.version),
        };
        if stored_version != write.expected_version {
            return Err(StoreError::Stale(format!(
                "agreement {} is at version {stored_version:?}, not {:?}",
                a.id, write.expected_version
            )));
        }
        let at = secs(write.at);
        tx.execute(
            "INSERT INTO agreements (id, service_id, json, updated_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (id) DO UPDATE SET service_id = excluded.service_id,
               json = excluded.json, updated_at = excluded.updated_at",
            &[&a.id, &a.service, &json, &at],
        )
        .await?;
        let version = i32::try_from(a.version)
            .map_err(|_| StoreError::Backend(format!("version {} too large", a.version)))?;
        let inserted = tx
            .execute(
                "INSERT INTO agreement_versions (id, version, json, changed_at, actor, reason)
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[&a.id, &version, &json, &at, &write.actor, &write.reason],
            )
            .await;
        match inserted {
            Err(e) if is_unique_violation(&e) => {
                return Err(StoreError::Stale(format!(
                    "agreement {} version {} was written by another request",
                    a.id, a.version
                )));
            }
            other => {
                other?;
            }
        }
        let row = seal_onto(&tx, audit, seal).await?;
        tx.commit().await?;
        Ok(row)
    }

    async fn agreement_versions(&self, id: &str) -> Result<Vec<AgreementVersionRow>, StoreError> {
        let c = self.client().await?;
        let mut out = Vec::new();
        for r in c
            .query(
                "SELECT json, changed_at, actor, reason FROM agreement_versions WHERE id = $1
                 ORDER BY version",
                &[&id],
            )
            .await?
        {
            let json: String = r.try_get(0)?;
            out.push(AgreementVersionRow {
                agreement: agreement_from_json(&json)?,
                changed_at: r.try_get(1)?,
                actor: r.try_get(2)?,
                reason: r.try_get(3)?,
            });
        }
        Ok(out)
    }

    async fn load_value_set(
        &self,
        load: ValueSetLoad,
        audit: AuditEvent,
        seal: AuditSealer,
    ) -> Result<i64, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // Under the audit lock from the start: loads take their seqs in commit order, so a
        // node that read version v has seen every load up to v.
        lock_audit(&tx).await?;
        let r = tx
            .query_one(
                "INSERT INTO value_sets (url, json, loaded_at, actor, reason)
                 VALUES ($1, $2, $3, $4, $5) RETURNING seq",
                &[
                    &load.url,
                    &load.json,
                    &secs(load.at),
                    &load.actor,
                    &load.reason,
                ],
            )
            .await?;
        let seq: i64 = r.try_get(0)?;
        seal_onto(&tx, audit, seal).await?;
        tx.commit().await?;
        Ok(seq)
    }

    async fn value_sets(&self) -> Result<Vec<ValueSetRow>, StoreError> {
        let c = self.client().await?;
        let mut out = Vec::new();
        for r in c
            .query(
                "SELECT seq, url, json, loaded_at, actor, reason FROM value_sets ORDER BY seq",
                &[],
            )
            .await?
        {
            out.push(ValueSetRow {
                seq: r.try_get(0)?,
                url: r.try_get(1)?,
                json: r.try_get(2)?,
                loaded_at: r.try_get(3)?,
                actor: r.try_get(4)?,
                reason: r.try_get(5)?,
            });
        }
        Ok(out)
    }

    async fn value_set_version(&self) -> Result<i64, StoreError> {
        let c = self.client().await?;
        let r = c
            .query_one("SELECT COALESCE(MAX(seq), 0)::bigint FROM value_sets", &[])
            .await?;
        Ok(r.try_get(0)?)
    }

    async fn patient_by_nhs_number(
        &self,
        nhs_number: &str,
    ) -> Result<Option<PatientRow>, StoreError> {
        let c = self.client().await?;
        c.query_opt(
            &format!("SELECT {PATIENT_COLUMNS} WHERE p.nhs_number = $1"),
            &[&nhs_number],
        )
        .await?
        .as_ref()
        .map(patient_from)
        .transpose()
    }

    async fn patients_born_on(
        &self,
        date: chrono::NaiveDate,
    ) -> Result<Vec<PatientRow>, StoreError> {
        let c = self.client().await?;
        c.query(
            &format!("SELECT {PATIENT_COLUMNS} WHERE p.birth_date = $1 ORDER BY p.id"),
            &[&date],
        )
        .await?
        .iter()
        .map(patient_from)
        .collect()
    }

    async fn write_user_role(
        &self,
        user_id: &str,
        role: &str,
        audit: AuditEvent,
        seal: AuditSealer,
    ) -> Result<AuditRow, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let n = tx
            .execute(
                "UPDATE users SET role = $2 WHERE id = $1",
                &[&user_id, &role],
            )
            .await?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("user {user_id}")));
        }
        let row = seal_onto(&tx, audit, seal).await?;
        tx.commit().await?;
        Ok(row)
    }

    async fn devices(&self) -> Result<Vec<DeviceRow>, StoreError> {
        let c = self.client().await?;
        c.query(
            "SELECT id, user_id, name, created_at, revoked_at FROM devices
             ORDER BY created_at, id",
            &[],
        )
        .await?
        .iter()
        .map(|r| {
            Ok(DeviceRow {
                id: r.try_get(0)?,
                user_id: r.try_get(1)?,
                name: r.try_get(2)?,
                created_at: r.try_get(3)?,
                revoked_at: r.try_get(4)?,
            })
        })
        .collect()
    }

    async fn write_device_revoked(
        &self,
        device_id: &str,
        now: DateTime<Utc>,
        audit: AuditEvent,
        seal: AuditSealer,
    ) -> Result<AuditRow, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let n = tx
            .execute(
                "UPDATE devices SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
                &[&device_id, &secs(now)],
            )
            .await?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("active device {device_id}")));
        }
        tx.execute(
            "UPDATE tokens SET revoked_at = $2 WHERE device_id = $1 AND revoked_at IS NULL",
            &[&device_id, &secs(now)],
        )
        .await?;
        let row = seal_onto(&tx, audit, seal).await?;
        tx.commit().await?;
        Ok(row)
    }

    async fn write_account(
        &self,
        user_id: &str,
        write: AccountWrite,
        audit: AuditEvent,
        seal: AuditSealer,
    ) -> Result<AuditRow, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let n = match &write {
            AccountWrite::Disabled(disabled) => {
                tx.execute(
                    "UPDATE users SET disabled = $2 WHERE id = $1",
                    &[&user_id, disabled],
                )
                .await?
            }
            AccountWrite::Unlock => {
                tx.execute(
                    "UPDATE users SET failed_attempts = 0, locked_until = NULL WHERE id = $1",
                    &[&user_id],
                )
                .await?
            }
            AccountWrite::TotpSecret(secret) => {
                tx.execute(
                    "UPDATE users SET totp_secret = $2 WHERE id = $1",
                    &[&user_id, secret],
                )
                .await?
            }
        };
        if n == 0 {
            return Err(StoreError::NotFound(format!("user {user_id}")));
        }
        let row = seal_onto(&tx, audit, seal).await?;
        tx.commit().await?;
        Ok(row)
    }

    async fn write_new_user(
        &self,
        user: NewUser,
        now: DateTime<Utc>,
        audit: AuditEvent,
        seal: AuditSealer,
    ) -> Result<String, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let id = uuid::Uuid::new_v4().to_string();
        let inserted = tx
            .execute(
                "INSERT INTO users (id, username, display_name, role, service_id, password_hash,
                   totp_secret, created_at, practice_ods)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                 ON CONFLICT (username) DO NOTHING",
                &[
                    &id,
                    &user.username,
                    &user.display_name,
                    &user.role,
                    &user.service_id,
                    &user.password_hash,
                    &user.totp_secret,
                    &secs(now),
                    &user.practice_ods,
                ],
            )
            .await?;
        if inserted == 0 {
            return Err(StoreError::Conflict(format!(
                "user {} already exists",
                user.username
            )));
        }
        seal_onto(&tx, audit, seal).await?;
        tx.commit().await?;
        Ok(id)
    }

    async fn write_dissent(
        &self,
        patient_id: &str,
        dissent: bool,
        audit: AuditEvent,
        seal: AuditSealer,
    ) -> Result<AuditRow, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let n = tx
            .execute(
                "UPDATE patients SET dissent = $2, updated_at = $3 WHERE id = $1",
                &[&patient_id, &dissent, &secs(audit.at)],
            )
            .await?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("patient {patient_id}")));
        }
        let row = seal_onto(&tx, audit, seal).await?;
        tx.commit().await?;
        Ok(row)
    }
}

// ---------- staff: sign-ins, sessions, bookings, caseload changes, figure rows ----------

const SESSION_COLUMNS: &str = "id, service_id, list_id, clinician_user_id, starts_at, ends_at,
     slots, created_at FROM clinic_sessions";

fn session_from(r: &Row) -> Result<ClinicSessionRow, StoreError> {
    let slots: i32 = r.try_get(6)?;
    Ok(ClinicSessionRow {
        id: r.try_get(0)?,
        service_id: r.try_get(1)?,
        list_id: r.try_get(2)?,
        clinician_user_id: r.try_get(3)?,
        starts_at: r.try_get(4)?,
        ends_at: r.try_get(5)?,
        slots: u32::try_from(slots).unwrap_or(0),
        created_at: r.try_get(7)?,
    })
}

const BOOKING_COLUMNS: &str = "id, session_id, slot, slot_starts_at, patient_id, entry_id, reason,
     booked_by, booked_at, cancelled_at, cancelled_by, cancel_reason FROM bookings";

fn booking_from(r: &Row) -> Result<BookingRow, StoreError> {
    let slot: i32 = r.try_get(2)?;
    Ok(BookingRow {
        id: r.try_get(0)?,
        session_id: r.try_get(1)?,
        slot: u32::try_from(slot).unwrap_or(0),
        slot_starts_at: r.try_get(3)?,
        patient_id: r.try_get(4)?,
        entry_id: r.try_get(5)?,
        reason: r.try_get(6)?,
        booked_by: r.try_get(7)?,
        booked_at: r.try_get(8)?,
        cancelled_at: r.try_get(9)?,
        cancelled_by: r.try_get(10)?,
        cancel_reason: r.try_get(11)?,
    })
}

fn slot_i32(slot: u32) -> Result<i32, StoreError> {
    i32::try_from(slot).map_err(|_| StoreError::Conflict(format!("slot {slot} is out of range")))
}

#[async_trait]
impl StaffStore for PostgresStore {
    async fn put_staff_token(&self, row: StaffTokenRow) -> Result<(), StoreError> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO staff_tokens (hash, user_id, issued_at, expires_at, revoked_at)
             VALUES ($1, $2, $3, $4, $5)",
            &[
                &row.hash,
                &row.user_id,
                &secs(row.issued_at),
                &secs(row.expires_at),
                &row.revoked_at.map(secs),
            ],
        )
        .await?;
        Ok(())
    }

    async fn staff_token(&self, hash: &str) -> Result<Option<StaffTokenRow>, StoreError> {
        let c = self.client().await?;
        c.query_opt(
            "SELECT hash, user_id, issued_at, expires_at, revoked_at FROM staff_tokens
             WHERE hash = $1",
            &[&hash],
        )
        .await?
        .map(|r| {
            Ok(StaffTokenRow {
                hash: r.try_get(0)?,
                user_id: r.try_get(1)?,
                issued_at: r.try_get(2)?,
                expires_at: r.try_get(3)?,
                revoked_at: r.try_get(4)?,
            })
        })
        .transpose()
    }

    async fn write_staff_token_revoked(
        &self,
        hash: &str,
        now: DateTime<Utc>,
        audit: AuditEvent,
        seal: AuditSealer,
    ) -> Result<AuditRow, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let n = tx
            .execute(
                "UPDATE staff_tokens SET revoked_at = $2 WHERE hash = $1 AND revoked_at IS NULL",
                &[&hash, &secs(now)],
            )
            .await?;
        if n == 0 {
            return Err(StoreError::NotFound("live staff token".into()));
        }
        let row = seal_onto(&tx, audit, seal).await?;
        tx.commit().await?;
        Ok(row)
    }

    async fn write_clinic_session(
        &self,
        session: ClinicSessionRow,
        list: ListRow,
        audit: AuditEvent,
        seal: AuditSealer,
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let listed = tx
            .execute(
                "INSERT INTO lists (id, name, kind, service_id, owner_user_id, team)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING",
                &[
                    &list.id,
                    &list.name,
                    &list_kind_as_str(list.kind),
                    &list.service_id,
                    &list.owner_user_id,
                    &list.team,
                ],
            )
            .await?;
        let stored = tx
            .execute(
                "INSERT INTO clinic_sessions (id, service_id, list_id, clinician_user_id,
                   starts_at, ends_at, slots, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id) DO NOTHING",
                &[
                    &session.id,
                    &session.service_id,
                    &session.list_id,
                    &session.clinician_user_id,
                    &secs(session.starts_at),
                    &secs(session.ends_at),
                    &slot_i32(session.slots)?,
                    &secs(session.created_at),
                ],
            )
            .await?;
        if listed == 0 || stored == 0 {
            return Err(StoreError::Conflict(format!(
                "a session {} already exists",
                session.id
            )));
        }
        seal_onto(&tx, audit, seal).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn clinic_session(&self, id: &str) -> Result<Option<ClinicSessionRow>, StoreError> {
        let c = self.client().await?;
        c.query_opt(&format!("SELECT {SESSION_COLUMNS} WHERE id = $1"), &[&id])
            .await?
            .as_ref()
            .map(session_from)
            .transpose()
    }

    async fn clinic_sessions(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<ClinicSessionRow>, StoreError> {
        let c = self.client().await?;
        c.query(
            &format!(
                "SELECT {SESSION_COLUMNS} WHERE ends_at > $1 AND starts_at < $2
                 ORDER BY starts_at, id"
            ),
            &[&secs(from), &secs(to)],
        )
        .await?
        .iter()
        .map(session_from)
        .collect()
    }

    async fn session_bookings(&self, session_id: &str) -> Result<Vec<BookingRow>, StoreError> {
        let c = self.client().await?;
        c.query(
            &format!("SELECT {BOOKING_COLUMNS} WHERE session_id = $1 ORDER BY slot, id"),
            &[&session_id],
        )
        .await?
        .iter()
        .map(booking_from)
        .collect()
    }

    async fn booking(&self, id: i64) -> Result<Option<BookingRow>, StoreError> {
        let c = self.client().await?;
        c.query_opt(&format!("SELECT {BOOKING_COLUMNS} WHERE id = $1"), &[&id])
            .await?
            .as_ref()
            .map(booking_from)
            .transpose()
    }

    async fn write_booking(
        &self,
        write: BookingWrite,
        audit: AuditEvent,
        seal: AuditSealer,
    ) -> Result<BookingRow, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // The feed lock first, then the audit lock (the order every transaction takes them).
        lock_feed(&tx).await?;
        let entry_id = insert_entry_tx(&tx, &write.entry, write.at).await?;
        let inserted = tx
            .query_one(
                &format!(
                    "INSERT INTO bookings (session_id, slot, slot_starts_at, patient_id, entry_id,
                       reason, booked_by, booked_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                     RETURNING {}",
                    BOOKING_COLUMNS.trim_end_matches(" FROM bookings")
                ),
                &[
                    &write.session_id,
                    &slot_i32(write.slot)?,
                    &secs(write.slot_starts_at),
                    &write.entry.patient_id,
                    &entry_id,
                    &write.entry.reason,
                    &write.booked_by,
                    &secs(write.at),
                ],
            )
            .await;
        let row = match inserted {
            Ok(row) => booking_from(&row)?,
            Err(e) if is_unique_violation(&e) => {
                return Err(StoreError::Conflict(format!(
                    "slot {} of session {} is already booked",
                    write.slot, write.session_id
                )));
            }
            Err(e) => return Err(e.into()),
        };
        let mut audit = audit;
        audit.detail["booking_id"] = serde_json::json!(row.id);
        seal_onto(&tx, audit, seal).await?;
        tx.commit().await?;
        Ok(row)
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
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        lock_feed(&tx).await?;
        let at = secs(at);
        let Some(row) = tx
            .query_opt(
                "UPDATE bookings SET cancelled_at = $2, cancelled_by = $3, cancel_reason = $4
                 WHERE id = $1 AND cancelled_at IS NULL RETURNING entry_id, patient_id",
                &[&id, &at, &by, &reason],
            )
            .await?
        else {
            return Err(StoreError::NotFound(format!(
                "no booking {id} that is not cancelled"
            )));
        };
        let (entry_id, patient_id): (i64, String) = (row.try_get(0)?, row.try_get(1)?);
        let ended = tx
            .execute(
                "UPDATE list_entries SET ends_at = $2
                 WHERE id = $1 AND (ends_at IS NULL OR ends_at > $2)",
                &[&entry_id, &at],
            )
            .await?;
        if ended > 0 {
            append_feed(&tx, &patient_id, None, FeedOp::List, at).await?;
        }
        seal_onto(&tx, audit, seal).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn write_list_change(
        &self,
        change: ListChange,
        audit: AuditEvent,
        seal: AuditSealer,
    ) -> Result<Option<i64>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        lock_feed(&tx).await?;
        let at = secs(change.at);
        if let Some((list, patient)) = &change.end {
            let n = tx
                .execute(
                    "UPDATE list_entries SET ends_at = $3
                     WHERE list_id = $1 AND patient_id = $2 AND (ends_at IS NULL OR ends_at > $3)",
                    &[list, patient, &at],
                )
                .await?;
            if n == 0 {
                return Err(StoreError::NotFound(format!(
                    "no open entry of this patient on list {list}"
                )));
            }
            append_feed(&tx, patient, None, FeedOp::List, at).await?;
        }
        let added = match &change.add {
            Some(entry) => Some(insert_entry_tx(&tx, entry, at).await?),
            None => None,
        };
        let mut audit = audit;
        if let Some(id) = added {
            audit.detail["entry_id"] = serde_json::json!(id);
        }
        seal_onto(&tx, audit, seal).await?;
        tx.commit().await?;
        Ok(added)
    }

    async fn figure_rows(
        &self,
        actions: &[&str],
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<FigureRows, StoreError> {
        let c = self.client().await?;
        let (from, to) = (secs(from), secs(to));
        let actions: Vec<String> = actions.iter().map(|a| a.to_string()).collect();
        let audit = c
            .query(
                &format!(
                    "SELECT {AUDIT_COLUMNS} FROM audit WHERE action = ANY($1) AND at >= $2
                     AND at < $3 ORDER BY seq"
                ),
                &[&actions, &from, &to],
            )
            .await?
            .iter()
            .map(audit_from)
            .collect::<Result<Vec<_>, _>>()?;
        let notes = c
            .query(
                &format!(
                    "SELECT {NOTE_COLUMNS} WHERE outcome = 'accepted' AND created_at >= $1
                     AND created_at < $2 ORDER BY created_at, id"
                ),
                &[&from, &to],
            )
            .await?
            .iter()
            .map(note_from)
            .collect::<Result<Vec<_>, _>>()?;
        let bookings = c
            .query(
                "SELECT s.service_id, s.clinician_user_id, u.username, b.patient_id, b.slot_starts_at, e.ends_at,
                   b.cancelled_at IS NOT NULL
                 FROM bookings b JOIN clinic_sessions s ON s.id = b.session_id
                 JOIN users u ON u.id = s.clinician_user_id
                 JOIN list_entries e ON e.id = b.entry_id
                 WHERE b.slot_starts_at >= $1 AND b.slot_starts_at < $2
                 ORDER BY b.slot_starts_at, b.id",
                &[&from, &to],
            )
            .await?
            .iter()
            .map(|r| {
                Ok(BookingFigureRow {
                    service_id: r.try_get(0)?,
                    clinician_user_id: r.try_get(1)?,
                    clinician_username: r.try_get(2)?,
                    patient_id: r.try_get(3)?,
                    slot_starts_at: r.try_get(4)?,
                    entry_ends_at: r.try_get(5)?,
                    cancelled: r.try_get(6)?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let mut ids: Vec<String> = audit
            .iter()
            .filter_map(|r| r.event.patient_id.clone())
            .chain(notes.iter().map(|n| n.patient_id.clone()))
            .chain(bookings.iter().map(|b| b.patient_id.clone()))
            .collect();
        ids.sort();
        ids.dedup();
        let patients = c
            .query(
                &format!("SELECT {PATIENT_COLUMNS} WHERE p.id = ANY($1) ORDER BY p.id"),
                &[&ids],
            )
            .await?
            .iter()
            .map(patient_from)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(FigureRows {
            audit,
            notes,
            bookings,
            patients,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use doorstep_testkit::PgCluster;

    async fn open(url: &str) -> Result<PostgresStore, StoreError> {
        PostgresStore::open(url, "test database").await
    }

    #[test]
    fn every_migration_file_is_embedded_in_order() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations/server-postgres");
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nodes_starting_at_once_migrate_once_and_a_newer_schema_is_refused() {
        let Some(cluster) = PgCluster::start_or_skip("postgres migrations") else {
            return;
        };
        let url = cluster.create_database().unwrap();
        let starts: Vec<_> = (0..4)
            .map(|_| {
                let url = url.clone();
                tokio::spawn(async move { open(&url).await })
            })
            .collect();
        for start in starts {
            let store = start.await.unwrap().unwrap();
            let every: Vec<i64> = MIGRATIONS.iter().map(|(v, _, _)| *v).collect();
            assert_eq!(store.applied_migrations().await.unwrap(), every);
        }
        cluster
            .psql_in(
                &url,
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (99, 'x', now())",
            )
            .unwrap();
        let e = open(&url).await.unwrap_err();
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
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_first_starts_agree_on_one_key() {
        let Some(cluster) = PgCluster::start_or_skip("postgres shared keys") else {
            return;
        };
        let store = open(&cluster.create_database().unwrap()).await.unwrap();
        let tasks: Vec<_> = (0u8..8)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    store
                        .key_or_insert("cursor", &[i; 32], Utc::now())
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut keys = Vec::new();
        for task in tasks {
            keys.push(task.await.unwrap());
        }
        keys.dedup();
        assert_eq!(keys.len(), 1, "every start answers the one stored key");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn audit_rows_follow_the_tip_once_under_races_and_are_never_edited() {
        let Some(cluster) = PgCluster::start_or_skip("postgres audit") else {
            return;
        };
        let url = cluster.create_database().unwrap();
        let store = open(&url).await.unwrap();
        let row = |seq: i64, prev: &str, hash: &str| AuditRow {
            seq,
            event: AuditEvent {
                at: DateTime::from_timestamp(1_768_000_000 + seq, 0).unwrap(),
                actor: "cli".into(),
                action: "test".into(),
                patient_id: None,
                detail: serde_json::json!({ "i": seq, "z": 1, "a": 2 }),
            },
            prev_hash: prev.into(),
            hash: hash.into(),
        };
        store.append_audit_row(row(1, "g", "h1")).await.unwrap();
        // Eight writers seal on the same tip at once: exactly one row lands.
        let racers: Vec<_> = (0..8)
            .map(|i| {
                let (store, r) = (store.clone(), row(2, "h1", &format!("r{i}")));
                tokio::spawn(async move { store.append_audit_row(r).await })
            })
            .collect();
        let mut landed = 0;
        for racer in racers {
            match racer.await.unwrap() {
                Ok(()) => landed += 1,
                Err(StoreError::Stale(_)) => {}
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(landed, 1);
        for stale in [row(3, "h1", "x"), row(1, "g", "x"), row(4, "r0", "x")] {
            assert!(matches!(
                store.append_audit_row(stale).await,
                Err(StoreError::Stale(_))
            ));
        }
        let rows = store.audit_rows().await.unwrap();
        assert_eq!(rows.len(), 2);
        // The detail comes back as it went in, keys in their order.
        assert_eq!(rows[0], row(1, "g", "h1"));
        for sql in [
            "UPDATE audit SET actor = 'x'",
            "DELETE FROM audit",
            "TRUNCATE audit",
        ] {
            let e = cluster.psql_in(&url, sql).unwrap_err();
            assert!(e.contains("append-only"), "{sql}: {e}");
        }
    }
}
