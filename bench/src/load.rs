//! Suite `load`: the federation server under 200 concurrent devices (issue 13: "200
//! concurrent devices doing delta syncs and pushing notes for 60 s, against SQLite and against
//! PostgreSQL (one node and two): p99 at most 100 ms, zero errors; report requests per second
//! and server RSS at start and end").
//!
//! What is measured is a whole server: the release `doorstep-server serve` binary started as a
//! process of its own (so its RSS is read from /proc), over HTTPS with the dev CA, on the
//! standard demo federation; first on its embedded SQLite store, then on a real PostgreSQL
//! cluster (doorstep-testkit's throwaway `initdb`) through one node, then through two nodes
//! on the same database with half the devices on each.
//!
//! The load is real and the devices are distinct: 200 district nurses are added with the
//! server's own `accounts::add_user` (Argon2id password, sealed TOTP secret, audited as a
//! command-line change) in 20 teams of [`TEAM_SIZE`], each team with a caseload list of its
//! own of [`TEAM_CASELOAD`] patients (the demo's 300 patients shared out; the DN agreement
//! shares a caseload team-wide), so a note one nurse writes reaches her team's devices, not
//! all 200; each enrols through `POST /api/v1/auth/enrol` from a loopback address of its own
//! (127.1.x.y: the per-address sign-in quota is a ward's, not a federation's), then does its
//! initial sync (every page, not timed). A device here is raw HTTP, not a
//! `doorstep_client::Device`: the point is to load the server, and a SQLCipher cache per
//! device would spend the shared cores on the client side. It keeps what a device keeps (its
//! cursor, its tokens, its caseload's patient ids) and refreshes its access token as the
//! client does when it nears expiry.
//!
//! In the measured window each device loops: a delta sync from its cursor (`GET
//! /api/v1/sync/pull?cursor=`, again while `more`), and every [`PUSH_EVERY`] rounds a push of
//! one signed note about a patient of its caseload (`POST /api/v1/sync/push`), whose
//! write-back its next pull then carries, so deltas are not all empty. Two paces, each for the
//! whole window on every configuration:
//!
//! * flat-out: no pause between requests, 200 connections always busy (a closed loop: the
//!   harshest honest reading of "200 concurrent devices"; latency is then what the queue
//!   makes it, about devices / throughput);
//! * paced: one round per device per second ([`PACED_ROUND`], starts staggered), 200 rounds a
//!   second offered, still hundreds of times what 200 nurses syncing every few minutes send.
//!
//! Every request's latency is recorded; any non-2xx answer, transport error or refused note
//! is an error (the first few are printed). The bench process shares the machine's cores with
//! the server (TLS, gzip and JSON of 200 devices), so the figures are a lower bound of what
//! the server alone would do.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use chrono::Utc;
use doorstep_protocol::ListKind;
use doorstep_protocol::{
    Change, EnrolRequest, EnrolResponse, NoteBody, PUSH_KIND_NOTE, PullPage, PushItem, PushOutcome,
    PushRequest, PushResponse, RefreshRequest, TokenResponse,
};
use doorstep_server::accounts::{self, NewAccount};
use doorstep_server::admin::Change as AdminChange;
use doorstep_server::demo::{self, DemoSpec, NURSING_SERVICE};
use doorstep_server::lists::{self, NewListEntry};
use doorstep_server::store::{self, DatabaseUrl, ListRow};
use doorstep_server::tls::{self, CertFiles};
use doorstep_server::totp_key::{self, TotpKey};
use tokio::sync::Semaphore;

use crate::Scale;
use crate::figures::{Report, Samples, rss_bytes};

/// The budget for the p99 of every request (ms).
const P99_BUDGET_MS: f64 = 100.0;
/// A device pushes a note every this many rounds.
const PUSH_EVERY: u64 = 4;
/// One round a second per device when paced.
const PACED_ROUND: Duration = Duration::from_secs(1);
/// Errors printed per configuration (all are counted).
const ERRORS_SHOWN: usize = 5;
/// Enrolments at once: the server checks at most 4 passwords at once and answers 503 to a
/// sign-in that waits longer than 2 s for a place.
const ENROL_AT_ONCE: usize = 3;
/// Initial syncs at once (setup, not measured).
const INITIAL_SYNCS_AT_ONCE: usize = 8;
/// Nurses of one district nursing team, and the patients on its caseload: 200 devices are 20
/// teams, each with a caseload of its own (300 patients in all, the demo's).
const TEAM_SIZE: usize = 10;
const TEAM_CASELOAD: usize = 15;

/// How the devices pace their rounds.
#[derive(Debug, Clone, Copy)]
enum Pace {
    FlatOut,
    Paced(Duration),
}

impl Pace {
    fn label(self) -> String {
        match self {
            Pace::FlatOut => "flat-out".into(),
            Pace::Paced(round) => format!("one round per {} s", round.as_secs_f64()),
        }
    }
}

/// Runs the suite: SQLite, PostgreSQL through one node, through two nodes; each flat-out and
/// paced.
pub async fn run(report: &mut Report, scale: Scale) -> Result<()> {
    let devices = if scale.quick { 5 } else { 200 };
    let window = if scale.quick {
        Duration::from_secs(3)
    } else {
        Duration::from_secs(60)
    };
    let bin = server_binary()?;
    println!("  server binary: {}", bin.display());
    let work = tempfile::Builder::new()
        .prefix("doorstep-load-")
        .tempdir()?;
    let (cert, ca) = tls::ensure_dev_tls(&work.path().join("tls"))?;
    let today = Utc::now().date_naive();
    let spec = if scale.quick {
        DemoSpec::small(13, today)
    } else {
        DemoSpec::standard(13, today)
    };
    let paces = [Pace::FlatOut, Pace::Paced(PACED_ROUND)];

    // `DOORSTEP_LOAD_STORES=sqlite` or `=postgres`: one store only (to compare two builds).
    let only = std::env::var("DOORSTEP_LOAD_STORES").unwrap_or_default();
    if only != "postgres" {
        sqlite_windows(
            report,
            &bin,
            work.path(),
            &cert,
            &ca,
            &spec,
            devices,
            window,
            &paces,
        )
        .await?;
    }
    if only == "sqlite" {
        return Ok(());
    }

    // PostgreSQL: the same federation (same seed) in a database of a throwaway cluster.
    let cluster = match doorstep_testkit::PgCluster::start() {
        Ok(c) => c,
        Err(why) => bail!("the load suite needs PostgreSQL: {why}"),
    };
    let url = cluster.create_database().map_err(|e| anyhow!(e))?;
    let postgres = DatabaseUrl::parse(&url)?;
    let seed_dir = work.path().join("pg-seed");
    let t = Instant::now();
    demo::seed_with_database(&seed_dir, &postgres, &spec)?;
    let nurses = add_nurses(&postgres, &seed_dir, devices).await?;
    println!(
        "  PostgreSQL: seeded the demo and added {devices} nurses in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let node_dirs = [work.path().join("node-a"), work.path().join("node-b")];
    for dir in &node_dirs {
        install_tls(dir, &cert, Some(&seed_dir))?;
    }
    let node_a = ServerProcess::start(&bin, &node_dirs[0], Some(&url))?;
    let mut fleet = enrol_all(&[&node_a], &ca, &nurses).await?;
    initial_syncs(&mut fleet, &[&node_a]).await?;
    for pace in paces {
        let label = format!("PostgreSQL, 1 node, {devices} devices, {}", pace.label());
        measure(report, &label, &[&node_a], &mut fleet, window, pace).await?;
    }
    // The same devices, cursors and tokens: either node honours what the other issued.
    let node_b = ServerProcess::start(&bin, &node_dirs[1], Some(&url))?;
    for pace in paces {
        let label = format!(
            "PostgreSQL, 2 nodes, {devices} devices ({} on each), {}",
            devices / 2,
            pace.label()
        );
        measure(
            report,
            &label,
            &[&node_a, &node_b],
            &mut fleet,
            window,
            pace,
        )
        .await?;
    }
    node_a.stop();
    node_b.stop();
    Ok(())
}

/// The SQLite windows: the store is in the data directory the server serves.
#[allow(clippy::too_many_arguments)]
async fn sqlite_windows(
    report: &mut Report,
    bin: &Path,
    work: &Path,
    cert: &CertFiles,
    ca: &Path,
    spec: &DemoSpec,
    devices: usize,
    window: Duration,
    paces: &[Pace],
) -> Result<()> {
    // SQLite: the store is in the data directory the server serves.
    let sqlite_dir = work.join("sqlite");
    let sqlite = DatabaseUrl::in_data_dir(&sqlite_dir);
    let t = Instant::now();
    demo::seed_with(&sqlite_dir, spec)?;
    let nurses = add_nurses(&sqlite, &sqlite_dir, devices).await?;
    println!(
        "  SQLite: seeded the demo and added {devices} nurses in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    install_tls(&sqlite_dir, cert, None)?;
    let node = ServerProcess::start(bin, &sqlite_dir, None)?;
    let mut fleet = enrol_all(&[&node], ca, &nurses).await?;
    initial_syncs(&mut fleet, &[&node]).await?;
    for pace in paces {
        let label = format!("SQLite, 1 node, {devices} devices, {}", pace.label());
        measure(report, &label, &[&node], &mut fleet, window, *pace).await?;
    }
    node.stop();
    Ok(())
}

/// The release `doorstep-server` binary: `DOORSTEP_SERVER_BIN`, else beside this one
/// (`cargo xtask bench` builds both).
fn server_binary() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os("DOORSTEP_SERVER_BIN") {
        return Ok(PathBuf::from(bin));
    }
    let exe = std::env::current_exe()?;
    let bin = exe
        .parent()
        .context("the bench binary has no directory")?
        .join("doorstep-server");
    if !bin.is_file() {
        bail!(
            "no server binary at {} (build it: cargo build --release -p doorstep-server, or run \
             cargo xtask bench; or set DOORSTEP_SERVER_BIN)",
            bin.display()
        );
    }
    Ok(bin)
}

/// One nurse's sign-in, as `user add` prints it.
struct Nurse {
    username: String,
    password: String,
    totp_secret: String,
}

/// Add `n` nurses to the nursing service and team with the server's own function (what
/// `doorstep-server user add` runs), the TOTP secrets sealed with `data_dir`'s key.
async fn add_nurses(database: &DatabaseUrl, data_dir: &Path, n: usize) -> Result<Vec<Nurse>> {
    let store = store::open(database).await?;
    let key = Arc::new(TotpKey::load_or_create(data_dir)?);
    totp_key::adopt(store.as_ref(), &key).await?;
    // The teams' caseloads, the federation's patients shared out in order.
    let patients = store.patients().await?;
    let now = Utc::now();
    for team in 0..n.div_ceil(TEAM_SIZE) {
        let list_id = format!("load-caseload-{team:02}");
        store
            .create_list(ListRow {
                id: list_id.clone(),
                name: format!("Load team {team:02} caseload"),
                kind: ListKind::Caseload,
                service_id: NURSING_SERVICE.into(),
                owner_user_id: None,
                team: Some(team_name(team)),
            })
            .await?;
        let first = (team * TEAM_CASELOAD) % patients.len().max(1);
        for patient in patients.iter().cycle().skip(first).take(TEAM_CASELOAD) {
            lists::add_entry(
                store.as_ref(),
                NewListEntry {
                    list_id: list_id.clone(),
                    patient_id: patient.id.clone(),
                    reason: "Leg ulcer dressing".into(),
                    starts_at: now - chrono::Duration::days(30),
                    ends_at: None,
                    user_id: None,
                },
                now,
            )
            .await?;
        }
    }
    let change = AdminChange {
        actor: "cli:doorstep-bench".into(),
        reason: "load benchmark: a team of nurses".into(),
    };
    // Two at once: each hashes a password with Argon2id on the blocking pool.
    let gate = Arc::new(Semaphore::new(2));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let (store, key, change, gate) = (store.clone(), key.clone(), change.clone(), gate.clone());
        tasks.spawn(async move {
            let _place = gate.acquire_owned().await?;
            let issued = accounts::add_user(
                store.as_ref(),
                &key,
                NewAccount {
                    username: format!("load.nurse.{i:03}"),
                    display_name: format!("Load Nurse {i:03}"),
                    role: "nurse".into(),
                    service_id: NURSING_SERVICE.into(),
                    practice_ods: None,
                },
                &change,
                Utc::now(),
            )
            .await
            .map_err(|e| anyhow!("adding load.nurse.{i:03}: {e}"))?;
            let user = store
                .user_by_username(&issued.username)
                .await?
                .context("the user just added")?;
            store
                .set_team(&user.id, Some(&team_name(i / TEAM_SIZE)))
                .await?;
            anyhow::Ok((
                i,
                Nurse {
                    username: issued.username,
                    password: issued.password,
                    totp_secret: issued.totp_secret,
                },
            ))
        });
    }
    let mut nurses: Vec<(usize, Nurse)> = Vec::with_capacity(n);
    while let Some(done) = tasks.join_next().await {
        nurses.push(done??);
    }
    nurses.sort_by_key(|(i, _)| *i);
    Ok(nurses.into_iter().map(|(_, n)| n).collect())
}

fn team_name(team: usize) -> String {
    format!("load-team-{team:02}")
}

/// A node's certificate and key (one for every node, from the CA the devices pin) and, for a
/// node of a shared database, the TOTP key the seeding sealed the secrets with.
fn install_tls(dir: &Path, cert: &CertFiles, totp_from: Option<&Path>) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::copy(&cert.cert, dir.join(tls::SERVER_CERT_FILE))?;
    std::fs::copy(&cert.key, dir.join(tls::SERVER_KEY_FILE))?;
    if let Some(seed_dir) = totp_from {
        std::fs::copy(
            seed_dir.join(totp_key::TOTP_KEY_FILE),
            dir.join(totp_key::TOTP_KEY_FILE),
        )?;
    }
    Ok(())
}

/// One `doorstep-server serve` process; stopped on drop (SIGTERM, so it shuts down as it
/// would in service, then waited for).
struct ServerProcess {
    child: doorstep_testkit::ChildGuard,
    url: String,
    /// RSS right after it started listening (bytes).
    rss_at_launch: u64,
}

impl ServerProcess {
    fn start(bin: &Path, data_dir: &Path, database: Option<&str>) -> Result<ServerProcess> {
        use std::io::{BufRead, BufReader};
        let log = data_dir.join("server.log");
        let mut cmd = Command::new(bin);
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            // The server's own default level, whatever the bench was started with.
            .env("RUST_LOG", "info")
            .env_remove("DOORSTEP_DATABASE_URL")
            .env_remove("DOORSTEP_DATA_DIR")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log)?);
        if let Some(url) = database {
            cmd.args(["--database", url]);
        }
        let mut child = cmd.spawn().context("starting doorstep-server serve")?;
        let stdout = child.stdout.take().context("the server's stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            // Keep draining so the server never blocks on a full pipe.
            for _ in lines {}
        });
        let line = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "the server did not start: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
        };
        let url = line
            .strip_prefix("doorstep-server listening on ")
            .with_context(|| format!("unexpected start line {line:?}"))?
            .trim()
            .to_string();
        let rss_at_launch = rss_bytes(child.id()).unwrap_or(0);
        Ok(ServerProcess {
            child: doorstep_testkit::ChildGuard::new(
                child,
                "doorstep-server",
                Duration::from_secs(10),
            ),
            url,
            rss_at_launch,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn rss(&self) -> u64 {
        rss_bytes(self.pid()).unwrap_or(0)
    }

    fn stop(self) {
        drop(self);
    }
}

/// One enrolled device, as raw HTTP: its own connection (and source address), tokens, cursor.
struct LoadDevice {
    index: usize,
    http: reqwest::Client,
    device_id: String,
    tokens: TokenResponse,
    cursor: Option<String>,
    /// Patients on its list (from its initial sync), the notes' subjects.
    patients: Vec<String>,
    /// Notes pushed so far (their ids must be fresh UUIDs; the round counter keeps texts apart).
    rounds: u64,
}

/// A loopback address of device `i`'s own: 127.1.x.y.
fn device_address(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 1, (i / 250) as u8, (i % 250 + 1) as u8))
}

fn client_for(ca: &Path, i: usize) -> Result<reqwest::Client> {
    let pem = std::fs::read(ca)?;
    Ok(reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&pem)?])
        .local_address(device_address(i))
        .timeout(Duration::from_secs(30))
        .build()?)
}

/// Enrol every nurse's device, `ENROL_AT_ONCE` at a time, on the first node.
async fn enrol_all(
    nodes: &[&ServerProcess],
    ca: &Path,
    nurses: &[Nurse],
) -> Result<Vec<LoadDevice>> {
    let t = Instant::now();
    let gate = Arc::new(Semaphore::new(ENROL_AT_ONCE));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, nurse) in nurses.iter().enumerate() {
        let http = client_for(ca, i)?;
        let base = nodes[0].url.clone();
        let request = EnrolRequest {
            username: nurse.username.clone(),
            password: nurse.password.clone(),
            totp: doorstep_testkit::totp_code(&nurse.totp_secret, 0),
            device_name: format!("Load tablet {i:03}"),
        };
        let gate = gate.clone();
        tasks.spawn(async move {
            let _place = gate.acquire_owned().await?;
            let response = http
                .post(format!("{base}/api/v1/auth/enrol"))
                .json(&request)
                .send()
                .await?;
            let status = response.status();
            if !status.is_success() {
                bail!(
                    "enrolling {}: {status} {}",
                    request.username,
                    response.text().await.unwrap_or_default()
                );
            }
            let answer: EnrolResponse = response.json().await?;
            Ok(LoadDevice {
                index: i,
                http,
                device_id: answer.device_id,
                tokens: answer.tokens,
                cursor: None,
                patients: Vec::new(),
                rounds: 0,
            })
        });
    }
    let mut fleet = Vec::with_capacity(nurses.len());
    while let Some(done) = tasks.join_next().await {
        fleet.push(done??);
    }
    fleet.sort_by_key(|d| d.index);
    println!(
        "  enrolled {} devices in {:.1} s",
        fleet.len(),
        t.elapsed().as_secs_f64()
    );
    Ok(fleet)
}

/// Every device's first sync (all pages), a few at a time; not measured.
async fn initial_syncs(fleet: &mut Vec<LoadDevice>, nodes: &[&ServerProcess]) -> Result<()> {
    let t = Instant::now();
    let base = nodes[0].url.clone();
    let gate = Arc::new(Semaphore::new(INITIAL_SYNCS_AT_ONCE));
    let mut tasks = tokio::task::JoinSet::new();
    for mut device in fleet.drain(..) {
        let (base, gate) = (base.clone(), gate.clone());
        tasks.spawn(async move {
            let _place = gate.acquire_owned().await?;
            loop {
                let page = device.pull_page(&base).await?;
                for change in &page.changes {
                    if let Change::PatientAdded { patient, .. } = change {
                        device.patients.push(patient.patient_id.clone());
                    }
                }
                device.cursor = Some(page.cursor);
                if !page.more {
                    break;
                }
            }
            if device.patients.is_empty() {
                bail!("device {} has no patient on its list", device.index);
            }
            anyhow::Ok(device)
        });
    }
    while let Some(done) = tasks.join_next().await {
        fleet.push(done??);
    }
    fleet.sort_by_key(|d| d.index);
    println!(
        "  initial syncs of {} devices ({} patients each) in {:.1} s",
        fleet.len(),
        fleet.first().map_or(0, |d| d.patients.len()),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

impl LoadDevice {
    async fn pull_page(&self, base: &str) -> Result<PullPage> {
        let url = format!("{base}/api/v1/sync/pull");
        let url = match &self.cursor {
            Some(cursor) => reqwest::Url::parse_with_params(&url, [("cursor", cursor)])?,
            None => reqwest::Url::parse(&url)?,
        };
        let response = self
            .http
            .get(url)
            .bearer_auth(&self.tokens.access_token)
            .send()
            .await
            .map_err(|e| transport("pull", e))?;
        let status = response.status();
        if !status.is_success() {
            bail!(
                "pull: {status} {}",
                response.text().await.unwrap_or_default()
            );
        }
        response.json().await.map_err(|e| transport("pull", e))
    }

    async fn push_note(&self, base: &str) -> Result<()> {
        let now = Utc::now();
        let patient = &self.patients[(self.index + self.rounds as usize) % self.patients.len()];
        let body = NoteBody {
            text: format!(
                "Visit {}: dressing changed, wound edges clean, next visit in two days.",
                self.rounds
            ),
            vitals: None,
            problem: None,
            replaces: None,
            signed_at: now,
        };
        let request = PushRequest {
            items: vec![PushItem {
                id: uuid::Uuid::new_v4().to_string(),
                kind: PUSH_KIND_NOTE.into(),
                patient_id: patient.clone(),
                created_at: now,
                body: serde_json::to_value(&body)?,
            }],
        };
        let response = self
            .http
            .post(format!("{base}/api/v1/sync/push"))
            .bearer_auth(&self.tokens.access_token)
            .json(&request)
            .send()
            .await
            .map_err(|e| transport("push", e))?;
        let status = response.status();
        if !status.is_success() {
            bail!(
                "push: {status} {}",
                response.text().await.unwrap_or_default()
            );
        }
        let answer: PushResponse = response.json().await.map_err(|e| transport("push", e))?;
        match answer.results.first().map(|r| &r.outcome) {
            Some(PushOutcome::Accepted { .. }) => Ok(()),
            other => bail!("push: the note was not accepted: {other:?}"),
        }
    }

    /// A new access token when this one has less than a minute left, as the client does.
    async fn refresh_if_due(&mut self, base: &str) -> Result<bool> {
        if self.tokens.access_expires_at - Utc::now() > chrono::Duration::minutes(1) {
            return Ok(false);
        }
        let response = self
            .http
            .post(format!("{base}/api/v1/auth/refresh"))
            .json(&RefreshRequest {
                device_id: self.device_id.clone(),
                refresh_token: self.tokens.refresh_token.clone(),
            })
            .send()
            .await
            .map_err(|e| transport("refresh", e))?;
        let status = response.status();
        if !status.is_success() {
            bail!(
                "refresh: {status} {}",
                response.text().await.unwrap_or_default()
            );
        }
        self.tokens = response.json().await?;
        Ok(true)
    }
}

/// A transport error without its URL (a cursor is long and says nothing to the reader).
fn transport(what: &str, e: reqwest::Error) -> anyhow::Error {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_decode() {
        "unreadable answer"
    } else {
        "failed"
    };
    anyhow!("{what}: {kind}: {}", e.without_url())
}

/// What one device did in the window.
#[derive(Default)]
struct DeviceRun {
    all: Samples,
    pulls: Samples,
    pushes: Samples,
    errors: Vec<String>,
}

/// One device's loop until `until`.
async fn device_loop(
    mut device: LoadDevice,
    base: String,
    until: Instant,
    pace: Pace,
    start_after: Duration,
) -> (LoadDevice, DeviceRun) {
    let mut run = DeviceRun::default();
    tokio::time::sleep(start_after).await;
    while Instant::now() < until {
        let round_started = Instant::now();
        let t = Instant::now();
        match device.refresh_if_due(&base).await {
            Ok(true) => run.all.push(t.elapsed()),
            Ok(false) => {}
            Err(e) => run.errors.push(e.to_string()),
        }
        // One delta sync: pages until `more` is false.
        loop {
            let t = Instant::now();
            match device.pull_page(&base).await {
                Ok(page) => {
                    let took = t.elapsed();
                    run.all.push(took);
                    run.pulls.push(took);
                    device.cursor = Some(page.cursor);
                    if !page.more || Instant::now() >= until {
                        break;
                    }
                }
                Err(e) => {
                    run.all.push(t.elapsed());
                    run.errors.push(e.to_string());
                    break;
                }
            }
        }
        device.rounds += 1;
        if device.rounds.is_multiple_of(PUSH_EVERY) && Instant::now() < until {
            let t = Instant::now();
            let outcome = device.push_note(&base).await;
            let took = t.elapsed();
            run.all.push(took);
            run.pushes.push(took);
            if let Err(e) = outcome {
                run.errors.push(e.to_string());
            }
        }
        if let Pace::Paced(round) = pace
            && let Some(rest) = round.checked_sub(round_started.elapsed())
        {
            let wake = (Instant::now() + rest).min(until);
            tokio::time::sleep_until(wake.into()).await;
        }
    }
    (device, run)
}

/// User and system CPU time a process has used (s), from /proc (clock ticks of 1/100 s).
fn cpu_seconds(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let (_, rest) = stat.rsplit_once(')')?;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            // After the command: state is field 3, utime 14 and stime 15 (1-based).
            let utime: f64 = fields.get(11)?.parse().ok()?;
            let stime: f64 = fields.get(12)?.parse().ok()?;
            Some((utime + stime) / 100.0)
        })
        .unwrap_or(0.0)
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Run the fleet against `nodes` (device i on node i mod n) for `window` and report.
async fn measure(
    report: &mut Report,
    label: &str,
    nodes: &[&ServerProcess],
    fleet: &mut Vec<LoadDevice>,
    window: Duration,
    pace: Pace,
) -> Result<()> {
    let group = format!("Server under load: {label}, {} s", window.as_secs());
    println!("  {group}");
    // Let what a previous window left running on the server (requests its devices gave up
    // on) finish first.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let load_before = loadavg();
    let rss_start: Vec<u64> = nodes.iter().map(|n| n.rss()).collect();
    let cpu_start: Vec<f64> = nodes.iter().map(|n| cpu_seconds(n.pid())).collect();
    let pids: Vec<u32> = nodes.iter().map(|n| n.pid()).collect();
    let started = Instant::now();
    let until = started + window;
    // The nodes' RSS every 250 ms, for the peak.
    let sampler = tokio::spawn(async move {
        let mut peak = vec![0u64; pids.len()];
        while Instant::now() < until {
            for (p, pid) in peak.iter_mut().zip(&pids) {
                *p = (*p).max(rss_bytes(*pid).unwrap_or(0));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        peak
    });
    let count = fleet.len().max(1);
    let mut tasks = tokio::task::JoinSet::new();
    for device in fleet.drain(..) {
        let base = nodes[device.index % nodes.len()].url.clone();
        let start_after = match pace {
            Pace::FlatOut => Duration::ZERO,
            Pace::Paced(round) => round * device.index as u32 / count as u32,
        };
        tasks.spawn(device_loop(device, base, until, pace, start_after));
    }
    let mut all = Samples::default();
    let mut pulls = Samples::default();
    let mut pushes = Samples::default();
    let mut errors: Vec<String> = Vec::new();
    while let Some(done) = tasks.join_next().await {
        let (device, run) = done?;
        all.extend(&run.all);
        pulls.extend(&run.pulls);
        pushes.extend(&run.pushes);
        errors.extend(run.errors);
        fleet.push(device);
    }
    let elapsed = started.elapsed().as_secs_f64();
    fleet.sort_by_key(|d| d.index);
    let peak = sampler.await?;
    let rss_end: Vec<u64> = nodes.iter().map(|n| n.rss()).collect();
    let cpu_used: f64 = nodes
        .iter()
        .zip(&cpu_start)
        .map(|(n, start)| cpu_seconds(n.pid()) - start)
        .sum();
    let load_after = loadavg();

    let note = format!("load average {load_before} before, {load_after} after");
    report.add(&group, "requests, p50", all.median_ms(), "ms", None, "");
    report.add(
        &group,
        "requests, p95",
        all.quantile_ms(0.95),
        "ms",
        None,
        "",
    );
    report.add(
        &group,
        "requests, p99",
        all.quantile_ms(0.99),
        "ms",
        Some(P99_BUDGET_MS),
        format!(
            "{} requests: {} pulls (p99 {:.1} ms), {} pushes of a note (p99 {:.1} ms)",
            all.len(),
            pulls.len(),
            pulls.quantile_ms(0.99),
            pushes.len(),
            pushes.quantile_ms(0.99)
        ),
    );
    report.add(
        &group,
        "requests per second",
        all.len() as f64 / elapsed,
        "req/s",
        None,
        note,
    );
    // What the machine's other work cannot skew: the server's own CPU time per request.
    let cpu_ms = cpu_used * 1000.0 / all.len().max(1) as f64;
    report.add(
        &group,
        "server CPU time per request",
        cpu_ms,
        "ms",
        None,
        format!(
            "{cpu_used:.1} CPU-s over {elapsed:.0} s, {:.0}% of the 2 cores; so about {:.0} req/s \
             with both cores to itself",
            cpu_used * 100.0 / elapsed / 2.0,
            2000.0 / cpu_ms.max(0.001)
        ),
    );
    report.add(
        &group,
        "errors",
        errors.len() as f64,
        "",
        Some(0.0),
        "non-2xx, transport errors and notes not accepted",
    );
    for e in errors.iter().take(ERRORS_SHOWN) {
        println!("    error: {e}");
    }
    for (i, node) in nodes.iter().enumerate() {
        let name = if nodes.len() > 1 {
            format!("node {}", ["a", "b", "c"][i.min(2)])
        } else {
            "server".to_string()
        };
        report.add(
            &group,
            &format!("{name} RSS at the window's start"),
            mb(rss_start[i]),
            "MB",
            None,
            format!("{:.1} MB when it started listening", mb(node.rss_at_launch)),
        );
        report.add(
            &group,
            &format!("{name} RSS at the window's end"),
            mb(rss_end[i]),
            "MB",
            None,
            format!("peak {:.1} MB", mb(peak[i])),
        );
    }
    Ok(())
}
