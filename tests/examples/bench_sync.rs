//! Benchmark: initial sync of a 1,000-patient caseload (about 100 resources each) from a real
//! federation server over HTTPS into a fresh SQLCipher cache, and list search over the cached
//! patients. Figures go in BENCHMARKS.md; nothing here asserts a time.
//!
//! ```sh
//! cargo run --release -p doorstep-e2e --example bench_sync            # 1,000 x 100
//! cargo run --release -p doorstep-e2e --example bench_sync -- 10000 5 # search over 10,000
//! ```
//!
//! Arguments: caseload size (default 1000) and resources per patient (default 100).

use std::time::Instant;

use chrono::Utc;
use doorstep_client::{Device, EnrolParams};
use doorstep_e2e::totp_for;
use doorstep_record::synthetic::FederationSpec;
use doorstep_server::demo::{DemoSpec, read_demo_users, seed_with};
use doorstep_server::run::{ServeConfig, TlsMode, start};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let caseload: usize = args.first().map_or(1000, |a| a.parse().expect("caseload"));
    let per_patient: usize = args.get(1).map_or(100, |a| a.parse().expect("resources"));

    let server_dir = tempfile::tempdir().unwrap();
    let today = Utc::now().date_naive();
    let practices = 10;
    let spec = DemoSpec {
        federation: FederationSpec {
            seed: 42,
            practices,
            patients_per_practice: (caseload + 50).div_ceil(practices),
            resources_per_patient: per_patient,
            today,
        },
        caseload,
        appointments: 0,
        incidents: 0,
        dissenting: 0,
        ooh_calls: 0,
        podiatry: 0,
        leak_markers: false,
    };
    let t = Instant::now();
    seed_with(server_dir.path(), &spec).expect("seed");
    println!(
        "seed: {caseload} on caseload, ~{per_patient} resources each: {:.1} s",
        t.elapsed().as_secs_f64()
    );

    let server = start(ServeConfig {
        tls: TlsMode::Dev,
        listen: "127.0.0.1:0".parse().unwrap(),
        ..ServeConfig::new(server_dir.path())
    })
    .await
    .expect("server");
    let nurse = read_demo_users(server_dir.path())
        .unwrap()
        .into_iter()
        .find(|u| u.username == "nurse.demo")
        .unwrap();

    let device_dir = tempfile::tempdir().unwrap();
    let device = Device::enrol(
        device_dir.path(),
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

    let t = Instant::now();
    let report = device.sync().await.expect("sync");
    let secs = t.elapsed().as_secs_f64();
    println!(
        "initial sync: {} patients, {} pages, {:.2} s ({:.0} patients/s)",
        report.patients,
        report.pages,
        secs,
        f64::from(report.patients) / secs
    );
    let cache_bytes: u64 = std::fs::read_dir(device_dir.path())
        .unwrap()
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();
    println!("cache on disk: {:.1} MiB", cache_bytes as f64 / 1048576.0);

    let t = Instant::now();
    let report = device.sync().await.expect("second sync");
    println!(
        "sync with nothing new: {} pages, {:.0} ms",
        report.pages,
        t.elapsed().as_secs_f64() * 1000.0
    );

    let rows = device.list(None, today).unwrap();
    let sample = &rows[rows.len() / 2];
    let family = sample.name.split(',').next().unwrap().trim().to_lowercase();
    let nhs_prefix = &sample.nhs_number[..6];
    let postcode = sample.postcode.clone().unwrap_or_default();
    let outward = postcode.split(' ').next().unwrap_or("").to_string();
    let dob = sample
        .birth_date
        .map(|d| d.format("%d/%m/%Y").to_string())
        .unwrap_or_default();
    println!(
        "search over {} cached patients (median of 50 runs):",
        rows.len()
    );
    let queries = [
        ("(whole list)", None),
        ("family name", Some(family.as_str())),
        ("NHS number prefix (6 digits)", Some(nhs_prefix)),
        ("NHS number", Some(sample.nhs_number.as_str())),
        ("postcode", Some(postcode.as_str())),
        ("postcode district", Some(outward.as_str())),
        ("date of birth", Some(dob.as_str())),
        ("no match", Some("zzzz")),
    ];
    for (label, query) in queries {
        let mut times = Vec::new();
        let mut found = 0;
        for _ in 0..50 {
            let t = Instant::now();
            found = device.list(query, today).unwrap().len();
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        times.sort_by(f64::total_cmp);
        println!(
            "  {label:<30} {found:>6} rows  {:>8.2} ms",
            times[times.len() / 2]
        );
    }
    server.shutdown().await;
}
