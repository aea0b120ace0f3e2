//! Benchmark: the initial sync of a fresh device on each store, in one run: the embedded SQLite
//! store, PostgreSQL through one server node, and PostgreSQL through two nodes sharing the
//! database. Figures go in BENCHMARKS.md; nothing here asserts a time.
//!
//! ```sh
//! cargo run --release -p doorstep-e2e --example bench_backends            # demo, then 1,000 x 100
//! cargo run --release -p doorstep-e2e --example bench_backends -- demo    # the demo caseload only
//! ```
//!
//! For each federation (the standard demo, whose district nurse has a caseload of 60; then
//! 1,000 patients x ~100 resources, all on the caseload) it seeds SQLite and a real PostgreSQL
//! cluster (doorstep-testkit: a throwaway `initdb`, fsync off as in the tests), serves each over
//! HTTPS in this process (nodes share the machine's cores, as two nodes on one small host
//! would), and times: one device's initial sync on SQLite; on PostgreSQL through one node; two
//! devices syncing at once through one node; and two devices at once, one through each of two
//! nodes.

use std::path::Path;
use std::time::Instant;

use chrono::Utc;
use doorstep_client::{Device, EnrolParams};
use doorstep_e2e::totp_for;
use doorstep_record::synthetic::FederationSpec;
use doorstep_server::demo::{DemoSpec, DemoUser, seed_with_database};
use doorstep_server::run::{RunningServer, ServeConfig, TlsMode, start};
use doorstep_server::store::DatabaseUrl;
use doorstep_testkit::PgCluster;

fn big_spec(caseload: usize, per_patient: usize) -> DemoSpec {
    let practices = 10;
    DemoSpec {
        federation: FederationSpec {
            seed: 42,
            practices,
            patients_per_practice: (caseload + 50).div_ceil(practices),
            resources_per_patient: per_patient,
            today: Utc::now().date_naive(),
        },
        caseload,
        appointments: 0,
        incidents: 0,
        dissenting: 0,
        ooh_calls: 0,
        podiatry: 0,
        leak_markers: false,
    }
}

async fn serve(data_dir: &Path, database: &DatabaseUrl, tls: TlsMode) -> RunningServer {
    start(ServeConfig {
        database: Some(database.clone()),
        listen: "127.0.0.1:0".parse().unwrap(),
        tls,
        ..ServeConfig::new(data_dir)
    })
    .await
    .expect("start a node")
}

/// Enrol a fresh device for `nurse` on `base_url`. `reset_totp` lets the benchmark enrol the
/// same user many times within one TOTP step (a code is accepted once).
async fn enrol(
    base_url: &str,
    ca: &Path,
    nurse: &DemoUser,
    reset_totp: &dyn Fn(),
) -> (Device, tempfile::TempDir) {
    reset_totp();
    let dir = tempfile::tempdir().unwrap();
    let device = Device::enrol(
        dir.path(),
        EnrolParams {
            server_url: base_url.to_string(),
            ca_pem_path: Some(ca.to_path_buf()),
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
    (device, dir)
}

/// Sync every device at once; answers the wall time and each device's (patients, pages, s).
async fn sync_all(devices: &[&Device]) -> (f64, Vec<(u32, u32, f64)>) {
    let t = Instant::now();
    let runs = devices.iter().map(|d| async move {
        let t = Instant::now();
        let report = d.sync().await.expect("sync");
        (report.patients, report.pages, t.elapsed().as_secs_f64())
    });
    let each = futures_join_all(runs).await;
    (t.elapsed().as_secs_f64(), each)
}

/// `join_all` without another dependency: spawn nothing, poll the futures together.
async fn futures_join_all<F: std::future::Future>(
    futures: impl IntoIterator<Item = F>,
) -> Vec<F::Output> {
    let mut pinned: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, slot) in pinned.iter_mut().zip(out.iter_mut()) {
            if slot.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *slot = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().map(Option::unwrap).collect()
}

fn report(label: &str, (wall, each): &(f64, Vec<(u32, u32, f64)>)) {
    let detail: Vec<String> = each
        .iter()
        .map(|(patients, pages, secs)| format!("{patients} patients/{pages} pages in {secs:.2} s"))
        .collect();
    println!("  {label:<46} {wall:>6.2} s   ({})", detail.join("; "));
}

async fn bench(name: &str, spec: &DemoSpec, cluster: &PgCluster) {
    println!("{name}: {} on the caseload", spec.caseload);
    let work = tempfile::tempdir().unwrap();

    // SQLite, one node.
    let sqlite_dir = work.path().join("sqlite");
    let sqlite = DatabaseUrl::in_data_dir(&sqlite_dir);
    let t = Instant::now();
    let summary = seed_with_database(&sqlite_dir, &sqlite, spec).expect("seed SQLite");
    println!("  seed SQLite: {:.1} s", t.elapsed().as_secs_f64());
    let nurse = summary
        .users
        .iter()
        .find(|u| u.username == "nurse.demo")
        .unwrap()
        .clone();
    let server = serve(&sqlite_dir, &sqlite, TlsMode::Dev).await;
    let (device, _d) = enrol(&server.base_url, &server.ca_pem_path, &nurse, &|| {}).await;
    report("SQLite, 1 node, 1 device", &sync_all(&[&device]).await);
    server.shutdown().await;

    // PostgreSQL: the same federation (same seed), its own database.
    let url = cluster.create_database().unwrap();
    let postgres = DatabaseUrl::parse(&url).unwrap();
    let pg_dir = work.path().join("postgres");
    let t = Instant::now();
    let summary = seed_with_database(&pg_dir, &postgres, spec).expect("seed PostgreSQL");
    println!("  seed PostgreSQL: {:.1} s", t.elapsed().as_secs_f64());
    let nurse = summary
        .users
        .iter()
        .find(|u| u.username == "nurse.demo")
        .unwrap()
        .clone();
    let reset = || {
        cluster
            .psql_in(&url, "UPDATE users SET totp_last_step = 0")
            .unwrap();
    };
    let tls_dir = work.path().join("tls");
    let (cert, ca) = doorstep_server::tls::ensure_dev_tls(&tls_dir).unwrap();
    let files = TlsMode::Files {
        cert: cert.cert.clone(),
        key: cert.key.clone(),
    };
    let node_a = serve(&work.path().join("node-a"), &postgres, files.clone()).await;
    let node_b = serve(&work.path().join("node-b"), &postgres, files).await;

    let (one, _d1) = enrol(&node_a.base_url, &ca, &nurse, &reset).await;
    report("PostgreSQL, 1 node, 1 device", &sync_all(&[&one]).await);
    let (x, _dx) = enrol(&node_a.base_url, &ca, &nurse, &reset).await;
    let (y, _dy) = enrol(&node_a.base_url, &ca, &nurse, &reset).await;
    report(
        "PostgreSQL, 1 node, 2 devices at once",
        &sync_all(&[&x, &y]).await,
    );
    let (p, _dp) = enrol(&node_a.base_url, &ca, &nurse, &reset).await;
    let (q, _dq) = enrol(&node_b.base_url, &ca, &nurse, &reset).await;
    report(
        "PostgreSQL, 2 nodes, 2 devices at once (1 each)",
        &sync_all(&[&p, &q]).await,
    );
    node_a.shutdown().await;
    node_b.shutdown().await;
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let only = std::env::args().nth(1);
    let cluster = PgCluster::start().expect("PostgreSQL for the benchmark");
    let today = Utc::now().date_naive();
    if only.as_deref().is_none_or(|o| o == "demo") {
        bench(
            "standard demo (300 patients x ~100 resources)",
            &DemoSpec::standard(1, today),
            &cluster,
        )
        .await;
    }
    if only.as_deref().is_none_or(|o| o == "big") {
        bench(
            "1,000 patients x ~100 resources",
            &big_spec(1000, 100),
            &cluster,
        )
        .await;
    }
}
