//! Benchmark: notes per second accepted by push (`POST /api/v1/sync/push`), on each store.
//! Figures go in BENCHMARKS.md; nothing here asserts a time.
//!
//! ```sh
//! cargo run --release -p doorstep-e2e --example bench_push            # 2,000 notes
//! cargo run --release -p doorstep-e2e --example bench_push -- 500     # another count
//! ```
//!
//! The standard demo federation (the district nurse's caseload of 60) is seeded on SQLite and
//! on a real PostgreSQL cluster (doorstep-testkit, fsync off as in the tests), served over
//! HTTPS in this process. A fresh device syncs, signs N notes offline (spread over the
//! caseload, each with text and a full set of vital signs, so every accepted note is written
//! back as a Composition, an Encounter and eight Observations with their feed rows), then
//! pushes them all: batches of [`doorstep_protocol::PUSH_MAX_ITEMS`]. Then the same N pushed
//! again, as after a lost answer: every one answered `duplicate`.

use std::path::Path;
use std::time::Instant;

use chrono::Utc;
use doorstep_client::{Device, EnrolParams, NoteInput};
use doorstep_e2e::totp_for;
use doorstep_server::demo::{DemoSpec, seed_with_database};
use doorstep_server::run::{ServeConfig, TlsMode, start};
use doorstep_server::store::DatabaseUrl;
use doorstep_testkit::PgCluster;

async fn bench(label: &str, data_dir: &Path, database: &DatabaseUrl, notes: usize) {
    let t = Instant::now();
    let summary = seed_with_database(
        data_dir,
        database,
        &DemoSpec::standard(1, Utc::now().date_naive()),
    )
    .expect("seed");
    println!("{label}: seeded in {:.1} s", t.elapsed().as_secs_f64());
    let nurse = summary
        .users
        .iter()
        .find(|u| u.username == "nurse.demo")
        .unwrap()
        .clone();
    let server = start(ServeConfig {
        database: Some(database.clone()),
        listen: "127.0.0.1:0".parse().unwrap(),
        tls: TlsMode::Dev,
        ..ServeConfig::new(data_dir)
    })
    .await
    .expect("start the server");
    let dir = tempfile::tempdir().unwrap();
    let device = Device::enrol(
        dir.path(),
        EnrolParams {
            server_url: server.base_url.clone(),
            ca_pem_path: Some(server.ca_pem_path.clone()),
            username: nurse.username.clone(),
            password: nurse.password.as_str().into(),
            totp: totp_for(&nurse.totp_secret, 0).into(),
            pin: "135790".into(),
            device_name: "bench".into(),
            dev_mode: false,
        },
    )
    .await
    .expect("enrol");
    device.sync().await.expect("first sync");
    let patients: Vec<String> = device
        .list(None, doorstep_client::today())
        .unwrap()
        .into_iter()
        .map(|r| r.patient_id)
        .collect();
    let vitals = serde_json::json!({"rr": 18, "spo2": 96, "scale": 1, "o2": false,
        "sbp": 124, "pulse": 78, "acvpu": "A", "temp": 37.1});
    let t = Instant::now();
    for i in 0..notes {
        device
            .write_note(
                &patients[i % patients.len()],
                NoteInput {
                    text: format!("Visit {i}: wound redressed, healing well. Next visit Friday."),
                    vitals: Some(vitals.clone()),
                    ..NoteInput::default()
                },
            )
            .expect("sign a note");
    }
    let signing = t.elapsed().as_secs_f64();
    println!(
        "  sign {notes} notes into the outbox: {signing:.2} s ({:.0} notes/s)",
        notes as f64 / signing
    );

    let t = Instant::now();
    let report = device.push().await.expect("push");
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(report.accepted as usize, notes, "{report:?}");
    println!(
        "  push {notes} notes: {secs:.2} s in {} requests, {:.0} notes/s accepted",
        report.rounds,
        notes as f64 / secs
    );

    // A lost answer: the same notes again, each answered with its first outcome.
    let device = requeue_everything(device);
    let t = Instant::now();
    let again = device.push().await.expect("push again");
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(again.accepted as usize, notes, "{again:?}");
    println!(
        "  push the same {notes} again (duplicates): {secs:.2} s, {:.0} notes/s",
        notes as f64 / secs
    );
    let t = Instant::now();
    let pulled = device.sync().await.expect("sync");
    println!(
        "  the next sync pulls their write-back: {:.2} s, {} upserts in {} pages",
        t.elapsed().as_secs_f64(),
        pulled.upserts,
        pulled.pages
    );
    server.shutdown().await;
}

/// Mark every outbox item waiting again, as if no answer had come back (the cache is opened
/// with its key, as the device opens it).
fn requeue_everything(device: Device) -> Device {
    let dir = device.dir().to_path_buf();
    drop(device);
    let conn = doorstep_testkit::device::open_cache(&dir, "135790");
    conn.execute(
        "UPDATE outbox SET state = 'waiting', accepted_at = NULL",
        [],
    )
    .unwrap();
    drop(conn);
    Device::unlock(&dir, "135790").expect("unlock")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let notes: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(2000);
    let work = tempfile::tempdir().unwrap();
    let sqlite_dir = work.path().join("sqlite");
    bench(
        "SQLite",
        &sqlite_dir,
        &DatabaseUrl::in_data_dir(&sqlite_dir),
        notes,
    )
    .await;
    let cluster = PgCluster::start().expect("PostgreSQL for the benchmark");
    let url = cluster.create_database().unwrap();
    bench(
        "PostgreSQL",
        &work.path().join("postgres"),
        &DatabaseUrl::parse(&url).unwrap(),
        notes,
    )
    .await;
}
