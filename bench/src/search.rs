//! Reading the cache: list searches over 10,000 cached patients, one patient's record view,
//! and SQLCipher against plain SQLite on the same apply and search workload.

use std::time::Instant;

use anyhow::{Context, Result, bail};
use chrono::NaiveDate;
use doorstep_client::Device;
use doorstep_client::workload::{self, DecodedPage};
use doorstep_ipc::{LIST_FIRST_ROWS, ListRow};

use crate::Scale;
use crate::figures::{Report, Samples};
use crate::fixture::Federation;

const SEARCH: &str = "Search over 10,000 cached patients (p95 of 200 searches each)";
const CIPHER: &str = "SQLCipher against plain SQLite (the same pages applied, the same searches)";
const RECORD: &str = "Record view (1,000 patients x ~100 resources)";

/// The searches a clinician types, each made of a patient of `rows`.
fn queries(rows: &[ListRow], kind: &str, n: usize) -> Vec<Option<String>> {
    let step = (rows.len() / n.max(1)).max(1);
    rows.iter()
        .step_by(step)
        .take(n)
        .map(|r| match kind {
            "name prefix" => Some(r.name.chars().take(3).collect::<String>().to_lowercase()),
            "NHS number" => Some(r.nhs_number.clone()),
            "postcode" => r.postcode.clone(),
            "date of birth" => r.birth_date.map(|d| d.format("%d/%m/%Y").to_string()),
            _ => None,
        })
        .collect()
}

const KINDS: &[&str] = &[
    "name prefix",
    "NHS number",
    "postcode",
    "date of birth",
    "unfiltered list",
];

pub async fn run(scale: Scale, report: &mut Report) -> Result<()> {
    let patients = scale.patients(10_000);
    let full = !scale.quick;
    let fed = Federation::start(patients, 5).await?;
    println!(
        "  seeded {patients} patients x ~5 resources in {:.1} s",
        fed.seeded_in.as_secs_f64()
    );
    let (http, token) = fed.raw_device().await?;
    let dir = tempfile::tempdir()?;
    let device = fed.enrol(dir.path()).await?;
    let synced = device.sync().await?;
    if synced.patients as usize != patients {
        bail!(
            "the sync brought {} patients, not {patients}",
            synced.patients
        );
    }
    let today = fed.today;
    let rows = device.list(None, today)?;
    let runs = scale.runs(200);
    for kind in KINDS {
        let qs = queries(&rows, kind, runs);
        let mut samples = Samples::default();
        let mut found = 0;
        for q in qs.iter().cycle().take(runs) {
            let t = Instant::now();
            // As the list screen asks: its first rows and how many match.
            let page = device.list_page(q.as_deref(), today, Some(LIST_FIRST_ROWS as usize))?;
            samples.push(t.elapsed());
            found += page.total as usize;
        }
        if found == 0 {
            bail!("the {kind} searches found nobody");
        }
        report.add(
            SEARCH,
            kind,
            samples.quantile_ms(0.95),
            "ms",
            full.then_some(5.0),
            format!(
                "median {:.2} ms, {:.0} matches a search, the first {LIST_FIRST_ROWS} built",
                samples.median_ms(),
                found as f64 / runs as f64
            ),
        );
    }

    // The first show after a sync works the list's order out again (then kept).
    let mut cold = Samples::default();
    for _ in 0..scale.runs(10) {
        device.sync().await?;
        let t = Instant::now();
        device.list_page(None, today, Some(LIST_FIRST_ROWS as usize))?;
        cold.push(t.elapsed());
    }
    report.add(
        SEARCH,
        "unfiltered list, first show after a sync (the list's order worked out again)",
        cold.median_ms(),
        "ms",
        None,
        format!("median of {}", cold.len()),
    );
    let mut whole = Samples::default();
    for _ in 0..scale.runs(20) {
        let t = Instant::now();
        device.list(None, today)?;
        whole.push(t.elapsed());
    }
    report.add(
        SEARCH,
        "the whole list built, every row (Show all)",
        whole.median_ms(),
        "ms",
        None,
        format!("median of {}", whole.len()),
    );

    // ---- the same workload, encrypted and not ----
    let pages = fetch_pages(&http, &fed.server.base_url, &token).await?;
    let mut figures = Vec::new();
    for key in [Some([0x5a_u8; 32]), None] {
        let work = tempfile::tempdir()?;
        let mut conn = workload::open(&work.path().join("cache.db"), key.as_ref())?;
        let t = Instant::now();
        for page in &pages {
            workload::apply(&mut conn, page)?;
        }
        let apply = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let now = chrono::Utc::now();
        for kind in KINDS {
            for q in queries(&rows, kind, runs) {
                workload::list(&conn, q.as_deref(), today, now)?;
            }
        }
        let search = t.elapsed().as_secs_f64();
        figures.push((apply, search));
    }
    let [(cipher_apply, cipher_search), (plain_apply, plain_search)] = figures[..] else {
        unreachable!("two runs")
    };
    report.add(
        CIPHER,
        "Applying every page: SQLCipher's overhead",
        100.0 * (cipher_apply / plain_apply - 1.0),
        "%",
        full.then_some(15.0),
        format!("{cipher_apply:.2} s against {plain_apply:.2} s"),
    );
    report.add(
        CIPHER,
        "Every search above: SQLCipher's overhead",
        100.0 * (cipher_search / plain_search - 1.0),
        "%",
        full.then_some(15.0),
        format!("{cipher_search:.2} s against {plain_search:.2} s"),
    );
    drop(device);
    fed.stop().await;
    Ok(())
}

/// Every page of a first pull, decoded as the device decodes them.
async fn fetch_pages(http: &reqwest::Client, base: &str, token: &str) -> Result<Vec<DecodedPage>> {
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let body = crate::sync::pull_body(http, base, token, cursor.as_deref()).await?;
        let head: crate::sync::PageHead = serde_json::from_slice(&body)?;
        pages.push(DecodedPage::from_json(&body).context("decoding a page")?);
        cursor = Some(head.cursor);
        if !head.more {
            return Ok(pages);
        }
    }
}

/// Build the record view of patients of `device` in turn: p95 over `runs`.
pub fn record_views(
    device: &Device,
    today: NaiveDate,
    runs: usize,
    full: bool,
    report: &mut Report,
) -> Result<()> {
    let ids: Vec<String> = device
        .list(None, today)?
        .into_iter()
        .map(|r| r.patient_id)
        .collect();
    let mut samples = Samples::default();
    let mut items = 0usize;
    for id in ids.iter().cycle().take(runs) {
        let t = Instant::now();
        let record = device
            .record(id, today)?
            .context("a listed patient's record")?;
        samples.push(t.elapsed());
        items += serde_json::to_vec(&record.view)?.len();
    }
    report.add(
        RECORD,
        "Building one patient's full record view from the cache",
        samples.quantile_ms(0.95),
        "ms",
        full.then_some(10.0),
        format!(
            "p95 of {runs}; median {:.2} ms; {:.0} KB of view a patient",
            samples.median_ms(),
            items as f64 / runs as f64 / 1024.0
        ),
    );
    Ok(())
}
