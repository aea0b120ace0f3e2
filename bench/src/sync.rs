//! The device's sync against a real server: initial sync against its floor, the server's
//! share, a sync with nothing new, a delta of 10 changed resources, the first sync of the
//! next day, and the cache's size per patient.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use doorstep_protocol::Change;
use doorstep_server::pull::{PullOutcome, PullRequest, user_scope};
use doorstep_server::store::Store;
use rusqlite::Connection;
use serde_json::{Value, json};

use crate::Scale;
use crate::figures::{Report, Samples};
use crate::fixture::{Federation, PIN, dir_bytes};

const GROUP: &str = "Device sync (1,000 patients x ~100 resources, HTTPS on loopback)";

/// The device cache's schema, as the client creates it (for the floor's copy).
const DEVICE_SCHEMA: &[&str] = &[
    include_str!("../../migrations/device/0001_cache.sql"),
    include_str!("../../migrations/device/0002_rebuild.sql"),
    include_str!("../../migrations/device/0003_outbox.sql"),
    include_str!("../../migrations/device/0004_resources_by_patient.sql"),
    include_str!("../../migrations/device/0005_resources_without_rowid.sql"),
];

pub async fn run(scale: Scale, report: &mut Report) -> Result<()> {
    let patients = scale.patients(1000);
    let full = !scale.quick;
    let fed = Federation::start(patients, 100).await?;
    println!(
        "  seeded {patients} patients x ~100 resources in {:.1} s",
        fed.seeded_in.as_secs_f64()
    );
    // Sign-ins first: each takes a one-time code in turn.
    let (http, token) = fed.raw_device().await?;
    let device_dir = tempfile::tempdir()?;
    let device = fed.enrol(device_dir.path()).await?;

    // ---- initial sync ----
    let t = Instant::now();
    let first = device.sync().await.context("initial sync")?;
    let initial = t.elapsed();
    if first.patients as usize != patients {
        bail!(
            "the initial sync brought {} patients, not {patients}",
            first.patients
        );
    }
    report.add(
        GROUP,
        "Initial sync into an empty SQLCipher cache",
        initial.as_secs_f64(),
        "s",
        full.then_some(4.0),
        format!("{} pages", first.pages),
    );

    // ---- the floor: the same rows straight into SQLCipher ----
    let floor = floor(device_dir.path())?;
    report.add(
        GROUP,
        "Floor: the same rows bulk-inserted into SQLCipher, one transaction, same indexes",
        floor.as_secs_f64(),
        "s",
        None,
        "",
    );
    report.add(
        GROUP,
        "Initial sync / floor",
        initial.as_secs_f64() / floor.as_secs_f64(),
        "x",
        full.then_some(2.0),
        "",
    );

    // ---- the server's share: every page fetched and decompressed, nothing applied ----
    let (fetched, pages, bytes, last_cursor) =
        fetch_all(&http, &fed.server.base_url, &token).await?;
    report.add(
        GROUP,
        "Server's share: the same pages fetched over HTTPS and gunzipped, nothing applied",
        fetched.as_secs_f64(),
        "s",
        None,
        format!(
            "{pages} pages, {:.0} MB of JSON; {:.0}% of the initial sync",
            bytes as f64 / 1e6,
            100.0 * fetched.as_secs_f64() / initial.as_secs_f64()
        ),
    );

    crate::search::record_views(&device, fed.today, scale.runs(200), full, report)?;

    // ---- the server's answer when nothing is new ----
    let mut server_empty = Samples::default();
    for _ in 0..scale.runs(30) {
        let t = Instant::now();
        pull_body(&http, &fed.server.base_url, &token, Some(&last_cursor)).await?;
        server_empty.push(t.elapsed());
    }
    report.add(
        GROUP,
        "Server's share of a sync with nothing new: one page asked for and answered",
        server_empty.median_ms(),
        "ms",
        None,
        format!("median of {}", server_empty.len()),
    );

    // ---- size on disk ----
    let on_disk = dir_bytes(device_dir.path());
    report.add(
        GROUP,
        "Cache on disk per patient",
        on_disk as f64 / patients as f64 / 1024.0,
        "KB",
        full.then_some(50.0),
        format!("{:.0} MiB in all", on_disk as f64 / 1048576.0),
    );

    // ---- nothing new ----
    let mut empty = Samples::default();
    for _ in 0..scale.runs(30) {
        let t = Instant::now();
        let r = device.sync().await?;
        empty.push(t.elapsed());
        if r.upserts + r.deletes + r.patients_added > 0 {
            bail!("a sync with nothing new brought changes");
        }
    }
    report.add(
        GROUP,
        "Sync with nothing new (median)",
        empty.median_ms(),
        "ms",
        full.then_some(20.0),
        format!(
            "{} runs; p95 {:.1} ms",
            empty.len(),
            empty.quantile_ms(0.95)
        ),
    );

    // ---- 10 changed resources ----
    let store = fed.store().await?;
    let ids: Vec<String> = device
        .list(None, fed.today)?
        .into_iter()
        .map(|r| r.patient_id)
        .take(10)
        .collect();
    let mut delta = Samples::default();
    for round in 0..scale.runs(20) {
        for pid in &ids {
            change_one_observation(store.as_ref(), pid, round as f64 + 1.0).await?;
        }
        let t = Instant::now();
        let r = device.sync().await?;
        delta.push(t.elapsed());
        if r.upserts != ids.len() as u32 {
            bail!(
                "the delta sync brought {} resources, not {}",
                r.upserts,
                ids.len()
            );
        }
    }
    report.add(
        GROUP,
        "Delta sync, 10 changed resources (median)",
        delta.median_ms(),
        "ms",
        full.then_some(50.0),
        format!(
            "{} runs; p95 {:.1} ms",
            delta.len(),
            delta.quantile_ms(0.95)
        ),
    );

    // ---- the first sync of the next day (the server's side, in process) ----
    next_day(store.as_ref(), &fed, report).await?;

    drop(device);
    fed.stop().await;
    Ok(())
}

/// Time to insert every row of the synced cache in `dir` into a fresh SQLCipher database of
/// the same schema, in one transaction: what no sync can beat.
pub fn floor(dir: &Path) -> Result<Duration> {
    let cache = doorstep_testkit::device::open_cache(dir, PIN);
    let tables = ["patients", "list_entries", "resources", "withheld"];
    let mut rows: Vec<(&str, Vec<Vec<rusqlite::types::Value>>, usize)> = Vec::new();
    for table in tables {
        let mut stmt = cache.prepare(&format!("SELECT * FROM {table}"))?;
        let width = stmt.column_count();
        let all = stmt
            .query_map([], |r| {
                (0..width)
                    .map(|i| r.get::<_, rusqlite::types::Value>(i))
                    .collect::<rusqlite::Result<Vec<_>>>()
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.push((table, all, width));
    }
    let target = tempfile::tempdir()?;
    let conn = Connection::open(target.path().join("floor.db"))?;
    conn.execute_batch("PRAGMA cipher_memory_security = OFF;")?;
    conn.execute_batch(&format!("PRAGMA key = \"x'{}'\";", "5a".repeat(32)))?;
    conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))?;
    conn.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA cache_size = -32768;")?;
    for sql in DEVICE_SCHEMA {
        conn.execute_batch(sql)?;
    }
    let t = Instant::now();
    conn.execute_batch("BEGIN")?;
    for (table, all, width) in &rows {
        let marks = vec!["?"; *width].join(", ");
        let mut stmt = conn.prepare(&format!("INSERT INTO {table} VALUES ({marks})"))?;
        for row in all {
            stmt.execute(rusqlite::params_from_iter(row.iter()))?;
        }
    }
    conn.execute_batch("COMMIT")?;
    Ok(t.elapsed())
}

/// The head of a pull page: enough to ask for the next.
#[derive(serde::Deserialize)]
pub struct PageHead {
    pub cursor: String,
    pub more: bool,
}

/// One pull page's body (gunzipped by reqwest).
pub async fn pull_body(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    cursor: Option<&str>,
) -> Result<bytes::Bytes> {
    let url = match cursor {
        None => format!("{base}/api/v1/sync/pull"),
        Some(c) => format!("{base}/api/v1/sync/pull?cursor={}", percent_encoded(c)),
    };
    Ok(http
        .get(url)
        .bearer_auth(token)
        .send()
        .await?
        .error_for_status()?
        .bytes()
        .await?)
}

/// Every page of a first pull, fetched and decompressed (reqwest's gzip), not parsed beyond
/// its cursor: the server's work and the transfer. Answers the time, pages and bytes.
async fn fetch_all(
    http: &reqwest::Client,
    base: &str,
    token: &str,
) -> Result<(Duration, usize, usize, String)> {
    let t = Instant::now();
    let (mut cursor, mut pages, mut bytes) = (None::<String>, 0, 0);
    loop {
        let body = pull_body(http, base, token, cursor.as_deref()).await?;
        pages += 1;
        bytes += body.len();
        let head: PageHead = serde_json::from_slice(&body)?;
        if !head.more {
            return Ok((t.elapsed(), pages, bytes, head.cursor));
        }
        cursor = Some(head.cursor);
    }
}

/// A bundle from the patient's practice giving one of their Observations a new value (`bump`
/// added to it), imported.
pub async fn change_one_observation(store: &dyn Store, patient_id: &str, bump: f64) -> Result<()> {
    let rows = store.patient_resources(patient_id).await?;
    let json_of = |text: &str| -> Result<Value> { Ok(serde_json::from_str(text)?) };
    let patient_row = rows
        .iter()
        .find(|r| r.resource_type == "Patient")
        .context("the patient's Patient resource")?;
    let patient = json_of(&patient_row.json)?;
    // The practice is named by identifier, or by reference to an Organization the bundle
    // must then carry.
    let gp = &patient["generalPractitioner"][0];
    let (ods, organisation) = match gp["reference"].as_str() {
        Some(reference) => {
            let id = reference
                .strip_prefix("Organization/")
                .context("a reference to an Organization")?;
            let row = store
                .feed_snapshot()
                .await?
                .resource("Organization", id)
                .await?
                .context("the practice's Organization")?;
            let organisation = json_of(&row.json)?;
            let ods = organisation["identifier"][0]["value"]
                .as_str()
                .context("the practice's ODS code")?
                .to_string();
            (ods, Some(organisation))
        }
        None => (
            gp["identifier"]["value"]
                .as_str()
                .context("the practice's ODS code")?
                .to_string(),
            None,
        ),
    };
    let mut observation = rows
        .iter()
        .filter(|r| r.resource_type == "Observation" && !r.deleted)
        .map(|r| json_of(&r.json))
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .find(|o| o["valueQuantity"]["value"].is_number())
        .context("an Observation with a value")?;
    let value = observation["valueQuantity"]["value"]
        .as_f64()
        .unwrap_or(0.0);
    observation["valueQuantity"]["value"] = json!(value + bump);
    let entries: Vec<Value> = [Some(patient), organisation, Some(observation)]
        .into_iter()
        .flatten()
        .map(|r| json!({ "resource": r }))
        .collect();
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": entries});
    doorstep_server::import::import_bundle(store, &bundle.to_string(), Some(&ods))
        .await
        .map_err(|e| anyhow::anyhow!("importing a changed Observation: {e}"))?;
    Ok(())
}

/// A first pull today, then the first pull of tomorrow from its cursor, both in process
/// (the server's clock cannot be moved from outside): how much the next day sends.
async fn next_day(store: &dyn Store, fed: &Federation, report: &mut Report) -> Result<()> {
    let user = store
        .user_by_username(&fed.nurse.username)
        .await?
        .context("the nurse")?;
    // Through a memo of decisions, as a node's pulls go all day.
    let scope = user_scope(store, &user)
        .await?
        .with_decisions(std::sync::Arc::new(
            doorstep_server::decisions::DecisionMemo::new(),
        ));
    let now = chrono::Utc::now();
    let pull_all = |now: chrono::DateTime<chrono::Utc>,
                    cursor: Option<doorstep_server::cursor::CursorState>| {
        let scope = scope.clone();
        async move {
            let (mut cursor, mut pages, mut changes, mut resources, mut bytes) =
                (cursor, 0usize, 0usize, 0usize, 0usize);
            loop {
                let outcome = doorstep_server::pull::pull(
                    store,
                    PullRequest {
                        device_id: "bench-next-day".into(),
                        scope: scope.clone(),
                        cursor: cursor.clone(),
                        now,
                        page_bytes: fed.page_bytes,
                    },
                )
                .await?;
                let PullOutcome::Page(page) = outcome else {
                    bail!("the server asked for a rebuild");
                };
                pages += 1;
                changes += page.changes.len();
                for c in &page.changes {
                    bytes += serde_json::to_vec(c)?.len();
                    resources += match c {
                        Change::PatientAdded { resources, .. } => resources.len(),
                        Change::Upsert { .. } | Change::Delete { .. } => 1,
                        _ => 0,
                    };
                }
                cursor = Some(page.cursor.clone());
                if !page.more {
                    return Ok((cursor.unwrap(), pages, changes, resources, bytes));
                }
            }
        }
    };
    let (cursor, _, _, first_resources, _) = pull_all(now, None).await?;
    let tomorrow = now + chrono::Duration::days(1);
    let t = Instant::now();
    let (_, pages, changes, resources, bytes) = pull_all(tomorrow, Some(cursor)).await?;
    let took = t.elapsed();
    report.add(
        GROUP,
        "First sync of the next day: resources sent",
        resources as f64,
        "resources",
        None,
        format!(
            "{changes} changes in {pages} pages, {:.2} MB of JSON; the caseload holds \
             {first_resources} resources",
            bytes as f64 / 1e6
        ),
    );
    report.add(
        GROUP,
        "First sync of the next day: the server's time",
        took.as_secs_f64() * 1000.0,
        "ms",
        None,
        "pages built in process, not sent",
    );
    Ok(())
}

/// `s` with everything but unreserved characters percent-encoded (a query value).
fn percent_encoded(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
