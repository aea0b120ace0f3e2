//! The app in a real window: tauri-driver + WebKitWebDriver under Xvfb drive the built
//! `doorstep-app` against a real federation server started by the test.
//!
//! Path: enrol, unlock (implicit after enrol), the list shows the caseload, search finds a
//! patient, the record shows her allergies; then the server is stopped and the record still
//! opens from the encrypted cache, and the sync status says the server is unreachable.
//!
//! Screenshots land in `$DOORSTEP_TEST_ARTIFACTS` (default `tests/artifacts/`): look at them.
//!
//! Needs `tauri-driver`, `WebKitWebDriver`, an X display and the app built with the UI
//! embedded (`cargo xtask test` sees to all of that). Run by plain `cargo test` without them the
//! test says why it did not run; under `cargo xtask test` (DOORSTEP_E2E_REQUIRED=1) it fails.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use doorstep_client::Device;
use doorstep_e2e::{DemoFederation, totp_for};
use fantoccini::{Client, ClientBuilder, Locator, elements::Element, key::Key};
use serde_json::json;

const PIN: &str = "246810";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_window_enrol_list_search_record_offline() {
    let Some(app) = prerequisites() else { return };
    let artifacts = artifacts_dir();

    let demo = DemoFederation::start().await;
    let nurse = demo.user("nurse.demo");

    // A reference device through the library tells the test what the window must show.
    let reference_dir = tempfile::tempdir().unwrap();
    let reference = Device::enrol(
        reference_dir.path(),
        demo.enrol_params(&nurse, 0, PIN, "reference"),
    )
    .await
    .expect("reference enrol");
    reference.sync().await.expect("reference sync");
    let today = chrono::Local::now().date_naive();
    let rows = reference.list(None, today).expect("reference list");
    assert!(
        rows.len() >= 20,
        "the demo caseload is too small: {}",
        rows.len()
    );
    let (target_row, target_allergy) = rows
        .iter()
        .find_map(|row| {
            let record = reference.record(&row.patient_id, today).ok()??;
            let allergy = record.view.allergies.first()?.substance.clone();
            Some((row.clone(), allergy))
        })
        .expect("some caseload patient has an allergy");

    // The window.
    let app_dir = tempfile::tempdir().unwrap();
    let driver = TauriDriver::start();
    let client = connect(
        &driver,
        &app,
        &[
            "--data-dir",
            app_dir.path().to_str().unwrap(),
            "--server",
            &demo.server.base_url,
            "--ca",
            demo.server.ca_pem_path.to_str().unwrap(),
        ],
    )
    .await;

    let result = drive(
        &client,
        &demo,
        &nurse,
        &target_row,
        &target_allergy,
        rows.len(),
        &artifacts,
    )
    .await;
    if result.is_err() {
        shot(&client, &artifacts, "failure").await;
    }
    let _ = client.close().await;
    drop(driver);
    result.unwrap();
}

async fn drive(
    client: &Client,
    demo: &DemoFederation,
    nurse: &doorstep_e2e::DemoUser,
    target: &doorstep_ipc::ListRow,
    allergy: &str,
    caseload: usize,
    artifacts: &Path,
) -> Result<(), String> {
    // Enrol. The server URL is pre-filled from --server.
    let server_field = wait_for(client, "#enrol-server").await?;
    let prefilled = server_field
        .prop("value")
        .await
        .map_err(e)?
        .unwrap_or_default();
    if prefilled != demo.server.base_url {
        return Err(format!("server URL not pre-filled: {prefilled:?}"));
    }
    shot(client, artifacts, "01-enrol").await;
    fill(client, "#enrol-user", &nurse.username).await?;
    fill(client, "#enrol-password", &nurse.password).await?;
    // The reference device used this step's code; take the next step's (the server allows ±1).
    fill(client, "#enrol-totp", &totp_for(&nurse.totp_secret, 30)).await?;
    fill(client, "#enrol-pin", PIN).await?;
    fill(client, "#enrol-pin-confirm", PIN).await?;
    click(client, "#enrol-submit").await?;

    // The list fills after the first sync.
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut shown = 0;
    while Instant::now() < deadline {
        shown = client
            .find_all(Locator::Css(".patient-row"))
            .await
            .map_err(e)?
            .len();
        if shown == caseload {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    shot(client, artifacts, "02-list").await;
    if shown != caseload {
        return Err(format!(
            "list shows {shown} patients, the caseload has {caseload}"
        ));
    }

    // Search by family name finds her.
    let family = target
        .name
        .split(',')
        .next()
        .unwrap_or(&target.name)
        .trim()
        .to_string();
    fill(client, "#search", &family).await?;
    let row_css = format!(".patient-row[data-nhs='{}']", target.nhs_number);
    let row = wait_for(client, &row_css).await?;
    shot(client, artifacts, "03-search").await;
    row.click().await.map_err(e)?;

    // The record: banner with her allergies.
    check_record(client, target, allergy).await?;
    shot(client, artifacts, "04-record").await;
    check_every_tab(client, allergy, artifacts).await?;

    // Server gone: the record still opens from the cache.
    demo.stop_server().await;
    client
        .active_element()
        .await
        .map_err(e)?
        .send_keys(&Key::Escape.to_string())
        .await
        .map_err(e)?;
    let search = wait_for(client, "#search").await?;
    search.clear().await.map_err(e)?;
    search
        .send_keys(&target.nhs_number_display)
        .await
        .map_err(e)?;
    wait_for(client, &row_css).await?.click().await.map_err(e)?;
    check_record(client, target, allergy).await?;
    click(client, "#sync-now").await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = wait_for(client, "#sync-status")
            .await?
            .text()
            .await
            .map_err(e)?;
        let lower = status.to_lowercase();
        if lower.contains("offline") || lower.contains("unreachable") {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("sync status does not say offline: {status:?}"));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    shot(client, artifacts, "05-offline-record").await;
    Ok(())
}

async fn check_record(
    client: &Client,
    target: &doorstep_ipc::ListRow,
    allergy: &str,
) -> Result<(), String> {
    let banner = wait_for(client, "#banner").await?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = banner.text().await.map_err(e)?;
        if text.contains(&target.nhs_number_display) {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "banner does not show NHS number {}: {text:?}",
                target.nhs_number_display
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let allergies = wait_for(client, "#banner-allergies")
        .await?
        .text()
        .await
        .map_err(e)?;
    if !allergies.to_lowercase().contains(&allergy.to_lowercase()) {
        return Err(format!("banner allergies {allergies:?} lack {allergy:?}"));
    }
    wait_for(client, "#record-as-of").await?;
    Ok(())
}

/// Every section tab opens its panel with content (items or the section's empty message), and
/// the Allergies tab lists the allergy the banner shows.
async fn check_every_tab(client: &Client, allergy: &str, artifacts: &Path) -> Result<(), String> {
    const SECTIONS: [&str; 10] = [
        "summary",
        "problems",
        "medications",
        "allergies",
        "encounters",
        "observations",
        "immunisations",
        "procedures",
        "documents",
        "alerts",
    ];
    for section in SECTIONS {
        click(client, &format!(".tab[data-section='{section}']")).await?;
        let panel_css = format!("#section-panel[data-section='{section}']");
        let panel = wait_for(client, &panel_css).await?;
        let text = panel.text().await.map_err(e)?;
        if text.trim().is_empty() {
            return Err(format!("the {section} tab shows an empty panel"));
        }
        if section == "allergies" && !text.to_lowercase().contains(&allergy.to_lowercase()) {
            return Err(format!("the allergies tab lacks {allergy:?}: {text:?}"));
        }
        if section == "observations" {
            shot(client, artifacts, "04b-observations").await;
        }
    }
    click(client, ".tab[data-section='summary']").await
}

fn e(err: impl std::fmt::Display) -> String {
    err.to_string()
}

async fn wait_for(client: &Client, css: &str) -> Result<Element, String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match client.find(Locator::Css(css)).await {
            Ok(el) => return Ok(el),
            Err(err) if Instant::now() > deadline => {
                return Err(format!("{css} did not appear: {err}"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

async fn fill(client: &Client, css: &str, text: &str) -> Result<(), String> {
    let el = wait_for(client, css).await?;
    el.clear().await.map_err(e)?;
    el.send_keys(text).await.map_err(e)
}

async fn click(client: &Client, css: &str) -> Result<(), String> {
    wait_for(client, css).await?.click().await.map_err(e)
}

async fn shot(client: &Client, dir: &Path, name: &str) {
    match client.screenshot().await {
        Ok(png) => {
            let path = dir.join(format!("{name}.png"));
            if let Err(err) = std::fs::write(&path, png) {
                eprintln!("could not save {}: {err}", path.display());
            }
        }
        Err(err) => eprintln!("screenshot {name} failed: {err}"),
    }
}

fn artifacts_dir() -> PathBuf {
    let dir = std::env::var_os("DOORSTEP_TEST_ARTIFACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("artifacts"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The app binary, or None (with the reason printed) when the window test cannot run here.
fn prerequisites() -> Option<PathBuf> {
    let required = std::env::var_os("DOORSTEP_E2E_REQUIRED").is_some();
    let app = app_binary();
    let mut missing = Vec::new();
    if !app.is_file() {
        missing.push(format!("the app binary {}", app.display()));
    }
    if which("tauri-driver").is_none() {
        missing.push("tauri-driver (cargo install tauri-driver)".into());
    }
    if which("WebKitWebDriver").is_none() {
        missing.push("WebKitWebDriver (apt-get install webkit2gtk-driver)".into());
    }
    if std::env::var_os("DISPLAY").is_none() {
        missing.push("an X display (run under xvfb-run -a)".into());
    }
    if missing.is_empty() {
        return Some(app);
    }
    let why = format!("app window test cannot run: missing {}", missing.join(", "));
    if required {
        panic!("{why}");
    }
    eprintln!("{why}; `cargo xtask test` provides them");
    None
}

/// target/<profile>/doorstep-app, found from this test executable (target/<profile>/deps/...).
fn app_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent()
        .and_then(Path::parent)
        .unwrap()
        .join("doorstep-app")
}

fn which(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cargo/bin"));
    }
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// tauri-driver on free ports; stopped with SIGTERM (never SIGKILL: its WebKitWebDriver
/// would keep the port and the next run would talk to a stale one).
struct TauriDriver {
    child: Child,
    port: u16,
}

impl TauriDriver {
    fn start() -> Self {
        let port = free_port();
        let native = free_port();
        let child = Command::new(which("tauri-driver").unwrap())
            .args([
                "--port",
                &port.to_string(),
                "--native-port",
                &native.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start tauri-driver");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "tauri-driver did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Self { child, port }
    }
}

impl Drop for TauriDriver {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn connect(driver: &TauriDriver, app: &Path, args: &[&str]) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert("browserName".into(), json!("wry"));
    caps.insert(
        "tauri:options".into(),
        json!({ "application": app, "args": args }),
    );
    ClientBuilder::rustls()
        .expect("rustls connector")
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("connect to tauri-driver")
}
