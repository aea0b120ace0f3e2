//! Two federation server nodes on one PostgreSQL database serve the same devices
//! interchangeably.
//!
//! Two real `doorstep-server serve` processes (the built binary) share one real PostgreSQL
//! database (a throwaway cluster from doorstep-testkit) seeded with the demo federation
//! (`seed --demo --database URL`). Each node listens on its own port and presents the same
//! certificate, from one development CA the devices pin, as nodes behind one federation name
//! would. Several devices (the real client library and SQLCipher cache) sync through a node
//! chosen at random (seeded) for every sync, so each cursor one node issued is presented to
//! the other, while member practices import changed records through both nodes
//! (`POST /api/v1/import`) and list entries come and go. When the churn stops every device
//! syncs once more and must hold exactly what a freshly enrolled device of the same user
//! gets: the server's filtered view. No sync may ever be answered with a rebuild, and the
//! audit chain both nodes appended to must verify.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chrono::Utc;
use doorstep_client::{Device, DeviceFile, EnrolParams};
use doorstep_e2e::{DemoUser, totp_for};
use doorstep_server::demo::CASELOAD_LIST;
use doorstep_server::lists::{self, NewListEntry};
use doorstep_server::store::{self, DatabaseUrl, ResourceRow, Store};
use serde_json::{Value, json};

const PIN: &str = "246810";
/// Rounds of churn: in each, every device syncs through a random node while two imports (one
/// through each node) and a list change run.
const ROUNDS: usize = 6;
/// The choices' seed; `DOORSTEP_TWO_NODES_SEED` runs another interleaving.
const SEED: u64 = 0x2_0de5;

/// SplitMix64: the same choices on every run of a seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// target/<profile>/doorstep-server, beside this test's target/<profile>/deps/two_nodes-*;
/// (re)built here when missing or older than the server's sources (`cargo xtask test` builds
/// the workspace first, so there it is already current).
fn server_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("doorstep-server");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let sources = newest_change(&[root.join("server/src"), root.join("migrations")]);
    let built = std::fs::metadata(&bin).and_then(|m| m.modified()).ok();
    if built.is_none_or(|built| sources.is_some_and(|s| s > built)) {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        // Without the variables cargo set for this test: build scripts that watch them would
        // otherwise make the inner build start over every time.
        let mut build = Command::new(cargo);
        build.env_clear().envs(std::env::vars().filter(|(k, _)| {
            !k.starts_with("CARGO_") || k == "CARGO_HOME" || k == "CARGO_TARGET_DIR"
        }));
        let status = build
            .args(["build", "-p", "doorstep-server", "--bin", "doorstep-server"])
            .current_dir(&root)
            .status()
            .expect("run cargo build");
        assert!(status.success(), "building doorstep-server failed");
    }
    assert!(bin.is_file(), "no server binary at {}", bin.display());
    bin
}

/// When a file under `dirs` last changed.
fn newest_change(dirs: &[PathBuf]) -> Option<SystemTime> {
    let mut newest = None;
    let mut stack: Vec<PathBuf> = dirs.to_vec();
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(modified) = entry.metadata().and_then(|m| m.modified()) {
                newest = newest.max(Some(modified));
            }
        }
    }
    newest
}

/// Run a server command to completion; answers its stdout, panics with its stderr.
fn run_ok(bin: &Path, args: &[&str]) -> String {
    let out = Command::new(bin)
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("DOORSTEP_DATABASE_URL")
        .env_remove("DOORSTEP_DATA_DIR")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "doorstep-server {}: {}",
        args[0],
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One `doorstep-server serve` process; killed on drop.
struct Node {
    name: &'static str,
    child: Child,
    url: String,
    log: PathBuf,
}

impl Node {
    fn start(name: &'static str, bin: &Path, data_dir: &Path, database: &str) -> Node {
        let log = data_dir.join("node.log");
        let mut child = Command::new(bin)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(["--database", database])
            .env("RUST_LOG", "info")
            .env_remove("DOORSTEP_DATABASE_URL")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start doorstep-server serve");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            // Keep draining so the node never blocks on a full pipe.
            for _ in lines {}
        });
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| {
                panic!(
                    "node {name} did not start: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            });
        let url = line
            .strip_prefix("doorstep-server listening on ")
            .unwrap_or_else(|| panic!("unexpected start line {line:?}"))
            .trim()
            .to_string();
        Node {
            name,
            child,
            url,
            log,
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            eprintln!("--- node {} (last lines) ---", self.name);
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

/// One enrolled device with a handle on each node: the same cache and tokens (both read from
/// the cache on every request), two base URLs. Never used from two tasks at once.
struct TwoNodeDevice {
    label: String,
    user: DemoUser,
    handles: Vec<Device>,
    _dir: tempfile::TempDir,
}

impl TwoNodeDevice {
    async fn sync_via(&self, node: usize) -> doorstep_client::SyncReport {
        let report = self.handles[node]
            .sync()
            .await
            .unwrap_or_else(|e| panic!("{} syncing via node {node}: {e}", self.label));
        assert!(
            !report.rebuilt,
            "{} was told to rebuild when syncing via node {node}: the nodes disagree",
            self.label
        );
        report
    }
}

/// TOTP steps already used per user: a code is accepted once, on any node.
#[derive(Default)]
struct TotpSteps(BTreeMap<String, u64>);

impl TotpSteps {
    /// The offset (0 or 30 s) of a code not used yet, waiting for the next step when needed.
    async fn fresh_offset(&mut self, username: &str) -> u64 {
        loop {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs();
            let last = self.0.get(username).copied().unwrap_or(0);
            for offset in [0, 30] {
                let step = (now + offset) / 30;
                if step > last {
                    self.0.insert(username.to_string(), step);
                    return offset;
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

async fn enrol(
    dir: &Path,
    node_url: &str,
    ca: &Path,
    user: &DemoUser,
    offset: u64,
    name: &str,
) -> Device {
    Device::enrol(
        dir,
        EnrolParams {
            server_url: node_url.to_string(),
            ca_pem_path: Some(ca.to_path_buf()),
            username: user.username.clone(),
            password: user.password.as_str().into(),
            totp: totp_for(&user.totp_secret, offset).into(),
            pin: PIN.into(),
            device_name: name.into(),
            dev_mode: false,
        },
    )
    .await
    .unwrap_or_else(|e| panic!("enrol {name} via {node_url}: {e}"))
}

/// Enrol through `nodes[0]`, then open a second handle on the same cache bound to each other
/// node (as the device's configuration pointing at another node would).
async fn enrol_on_every_node(
    label: &str,
    nodes: &[&Node],
    ca: &Path,
    user: &DemoUser,
    steps: &mut TotpSteps,
) -> TwoNodeDevice {
    let dir = tempfile::tempdir().unwrap();
    let offset = steps.fresh_offset(&user.username).await;
    let first = enrol(dir.path(), &nodes[0].url, ca, user, offset, label).await;
    let mut handles = vec![first];
    for node in &nodes[1..] {
        let mut file = DeviceFile::read(dir.path()).unwrap();
        file.server_url = node.url.clone();
        file.write(dir.path()).unwrap();
        handles.push(Device::unlock(dir.path(), PIN).expect("unlock a second handle"));
    }
    TwoNodeDevice {
        label: label.to_string(),
        user: user.clone(),
        handles,
        _dir: dir,
    }
}

/// What a device holds, as its screens show it: the list rows and, per patient, the record
/// view, withheld counts and list reason (not `as_of`, which says when it was received).
fn holdings(device: &Device) -> (Vec<doorstep_ipc::ListRow>, BTreeMap<String, Value>) {
    let today = doorstep_client::today();
    let rows = device.list(None, today).unwrap();
    let mut records = BTreeMap::new();
    for row in &rows {
        let record = device.record(&row.patient_id, today).unwrap().unwrap();
        records.insert(
            row.patient_id.clone(),
            json!({
                "view": serde_json::to_value(&record.view).unwrap(),
                "withheld": serde_json::to_value(&record.withheld).unwrap(),
                "reason": record.list_reason,
            }),
        );
    }
    (rows, records)
}

fn json_of(row: &ResourceRow) -> Value {
    serde_json::from_str(&row.json).unwrap()
}

/// A bundle from the patient's own practice changing their record: one stored Observation
/// gets a new value, a new Observation is added (`new_id`), and `delete` (an Observation an
/// earlier round added) is deleted.
async fn changed_bundle(
    store: &dyn Store,
    patient_id: &str,
    new_id: &str,
    delete: Option<&str>,
) -> Value {
    let rows = store.patient_resources(patient_id).await.unwrap();
    let patient = json_of(rows.iter().find(|r| r.resource_type == "Patient").unwrap());
    let reference = patient["generalPractitioner"][0]["reference"]
        .as_str()
        .expect("the demo registers patients by reference to an Organization");
    let organisation = store
        .feed_snapshot()
        .await
        .unwrap()
        .resource(
            "Organization",
            reference.strip_prefix("Organization/").unwrap(),
        )
        .await
        .unwrap()
        .expect("the practice's Organization");
    let observation = rows
        .iter()
        .find(|r| {
            r.resource_type == "Observation"
                && !r.deleted
                && json_of(r)["valueQuantity"]["value"].is_number()
        })
        .map(json_of)
        .expect("an Observation with a value");
    let mut changed = observation.clone();
    let value = changed["valueQuantity"]["value"].as_f64().unwrap();
    changed["valueQuantity"]["value"] = json!(value + 1.0);
    let mut added = observation;
    added["id"] = json!(new_id);
    added["valueQuantity"]["value"] = json!(value + 2.0);
    let mut entries: Vec<Value> = [patient, json_of(&organisation), changed, added]
        .into_iter()
        .map(|r| json!({ "resource": r }))
        .collect();
    if let Some(id) = delete {
        entries.push(json!({"request": {"method": "DELETE", "url": format!("Observation/{id}")}}));
    }
    json!({"resourceType": "Bundle", "type": "transaction", "entry": entries})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn devices_alternating_between_two_nodes_converge_while_both_import() {
    let Some(cluster) = doorstep_testkit::PgCluster::start_or_skip("two nodes") else {
        return;
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let started = Instant::now();
    let bin = server_binary();
    let database = cluster.create_database().unwrap();
    let work = tempfile::tempdir().unwrap();

    // The federation: the demo, seeded once into the shared database.
    let seed_dir = work.path().join("seed");
    run_ok(
        &bin,
        &[
            "seed",
            "--demo",
            "--data-dir",
            seed_dir.to_str().unwrap(),
            "--database",
            &database,
        ],
    );
    let users: Vec<DemoUser> =
        serde_json::from_str(&std::fs::read_to_string(seed_dir.join("demo-users.json")).unwrap())
            .unwrap();
    let user = |name: &str| users.iter().find(|u| u.username == name).unwrap().clone();

    // One certificate for both nodes, from one CA the devices pin (shared configuration).
    let tls_dir = work.path().join("tls");
    let (cert, ca) = doorstep_server::tls::ensure_dev_tls(&tls_dir).unwrap();
    let mut nodes = Vec::new();
    for name in ["a", "b"] {
        let dir = work.path().join(format!("node-{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(&cert.cert, dir.join(doorstep_server::tls::SERVER_CERT_FILE)).unwrap();
        std::fs::copy(&cert.key, dir.join(doorstep_server::tls::SERVER_KEY_FILE)).unwrap();
        // The key the seeding sealed the TOTP secrets with: every node needs the same file.
        std::fs::copy(
            seed_dir.join(doorstep_server::totp_key::TOTP_KEY_FILE),
            dir.join(doorstep_server::totp_key::TOTP_KEY_FILE),
        )
        .unwrap();
        nodes.push(Node::start(name, &bin, &dir, &database));
    }
    assert_ne!(nodes[0].url, nodes[1].url);
    for node in &nodes {
        assert!(
            !node.log.parent().unwrap().join("cursor-key").exists(),
            "node {} keeps a key of its own",
            node.name
        );
    }

    // The practices' credentials, and the store as the test reads and changes it.
    let store = store::open(&DatabaseUrl::parse(&database).unwrap())
        .await
        .unwrap();
    let mut secrets = BTreeMap::new();
    for practice in store.practices().await.unwrap() {
        let out = run_ok(
            &bin,
            &[
                "practice",
                "add",
                &practice.ods,
                "--name",
                &practice.name,
                "--database",
                &database,
            ],
        );
        let secret = out
            .lines()
            .find_map(|l| l.strip_prefix("client secret: "))
            .expect("the secret is printed")
            .trim()
            .to_string();
        secrets.insert(practice.ods.clone(), secret);
    }
    let patients = store.patients().await.unwrap();
    let http = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&std::fs::read(&ca).unwrap()).unwrap()])
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();

    // The devices: two of the district nurse, one of the hub GP, one of the paramedic.
    let node_refs: Vec<&Node> = nodes.iter().collect();
    let mut steps = TotpSteps::default();
    let mut devices = Vec::new();
    for (label, username) in [
        ("nurse tablet", "nurse.demo"),
        ("nurse laptop", "nurse.demo"),
        ("hub laptop", "gp.demo"),
        ("ambulance tablet", "para.demo"),
    ] {
        devices.push(Arc::new(
            enrol_on_every_node(label, &node_refs, &ca, &user(username), &mut steps).await,
        ));
    }

    let seed = std::env::var("DOORSTEP_TWO_NODES_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(SEED);
    let mut rng = Rng(seed);
    let caseload: Vec<String> = store
        .list_entries(CASELOAD_LIST)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.patient_id)
        .collect();
    let mut added_observations: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let (mut imports, mut syncs) = (0, 0);
    for round in 0..ROUNDS {
        let mut tasks = Vec::new();
        for device in &devices {
            let node = rng.below(2);
            let device = device.clone();
            tasks.push(tokio::spawn(async move {
                device.sync_via(node).await;
            }));
            syncs += 1;
        }
        // Two imports, one through each node, mostly of patients on a list.
        for (node, via) in nodes.iter().enumerate() {
            let patient = if rng.below(4) < 3 {
                let id = &caseload[rng.below(caseload.len())];
                patients.iter().find(|p| &p.id == id).unwrap()
            } else {
                &patients[rng.below(patients.len())]
            };
            let earlier = added_observations.entry(patient.id.clone()).or_default();
            let delete = (!earlier.is_empty() && rng.below(2) == 0).then(|| earlier.remove(0));
            let new_id = format!("two-nodes-{round}-{node}");
            earlier.push(new_id.clone());
            let bundle = changed_bundle(store.as_ref(), &patient.id, &new_id, delete.as_deref())
                .await
                .to_string();
            let request = http
                .post(format!("{}/api/v1/import", via.url))
                .basic_auth(&patient.practice_ods, Some(&secrets[&patient.practice_ods]))
                .header("content-type", "application/fhir+json")
                .body(bundle);
            tasks.push(tokio::spawn(async move {
                let response = request.send().await.expect("the node answers");
                let status = response.status();
                let body = response.text().await.unwrap_or_default();
                assert_eq!(status, 200, "import via node {node}: {body}");
            }));
            imports += 1;
        }
        // A list change, written beside the nodes.
        let (store, patient) = (store.clone(), patients[rng.below(patients.len())].clone());
        let discharge = caseload[rng.below(caseload.len())].clone();
        let end_one = rng.below(3) == 0;
        tasks.push(tokio::spawn(async move {
            if end_one {
                store
                    .end_list_entry(CASELOAD_LIST, &discharge, Utc::now())
                    .await
                    .unwrap();
            } else if !patient.dissent {
                lists::add_entry(
                    store.as_ref(),
                    NewListEntry {
                        list_id: CASELOAD_LIST.into(),
                        patient_id: patient.id.clone(),
                        reason: "Two-node visit".into(),
                        starts_at: Utc::now(),
                        ends_at: None,
                        user_id: None,
                    },
                    Utc::now(),
                )
                .await
                .unwrap();
            }
        }));
        for task in tasks {
            task.await.unwrap();
        }
    }

    // The churn has stopped: every device syncs once more, then holds the server's view,
    // exactly what a device enrolled now for the same user receives.
    for device in &devices {
        device.sync_via(rng.below(2)).await;
    }
    for device in &devices {
        let node = rng.below(2);
        let fresh_dir = tempfile::tempdir().unwrap();
        let offset = steps.fresh_offset(&device.user.username).await;
        let fresh = enrol(
            fresh_dir.path(),
            &nodes[node].url,
            &ca,
            &device.user,
            offset,
            "fresh",
        )
        .await;
        fresh.sync().await.expect("the fresh device syncs");
        let (want_rows, want_records) = holdings(&fresh);
        let (rows, records) = holdings(&device.handles[0]);
        assert!(!want_rows.is_empty(), "{} holds nobody", device.label);
        assert_eq!(
            rows.iter().map(|r| &r.patient_id).collect::<Vec<_>>(),
            want_rows.iter().map(|r| &r.patient_id).collect::<Vec<_>>(),
            "{}: not the patients a fresh device gets",
            device.label
        );
        assert_eq!(rows, want_rows, "{}: list rows differ", device.label);
        for (id, want) in &want_records {
            assert_eq!(
                &records[id], want,
                "{}: patient {id} differs from the server's view",
                device.label
            );
        }
    }

    // The nurse holds exactly the caseload as the database has it now.
    let now = Utc::now();
    let mut on_server: Vec<String> = store
        .list_entries(CASELOAD_LIST)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.is_active(now))
        .map(|e| e.patient_id)
        .filter(|id| !patients.iter().any(|p| &p.id == id && p.dissent))
        .collect();
    on_server.sort();
    on_server.dedup();
    let (nurse_rows, _) = holdings(&devices[0].handles[0]);
    let mut held: Vec<String> = nurse_rows.into_iter().map(|r| r.patient_id).collect();
    held.sort();
    assert_eq!(held, on_server, "the nurse's device against the caseload");

    // Both nodes and the CLI appended to one audit chain; it is intact.
    let out = Command::new(&bin)
        .args(["verify-audit", "--database", &database])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "two nodes (seed {seed}): {syncs} syncs and {imports} imports over {ROUNDS} rounds, {} \
         devices converged, in {:?}",
        devices.len(),
        started.elapsed()
    );
}
