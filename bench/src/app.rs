//! Suite `app`: the app's cold start to the unlock screen, and its memory after opening 50
//! records (issue 13: "cold start to the unlock screen, and memory after opening 50 records
//! (goal at most 1.5 s and 250 MB RSS including the web view)").
//!
//! The built `doorstep-app` (release, `custom-protocol`: `ui/dist` embedded, as `cargo xtask
//! bench` builds it) runs in a real window under X (Xvfb in CI, via `cargo xtask bench`),
//! driven by tauri-driver and WebKitWebDriver as the window tests drive it. Its data
//! directory holds a device enrolled as the demo's district nurse with her caseload (60
//! patients) synced, made with `doorstep_client::Device::enrol` and `sync` against the demo
//! federation served in this process, so the app opens on the unlock screen.
//!
//! * Cold start: each run (5; quick: 1) drops the page cache first when it may (root: `sync`,
//!   then `3 > /proc/sys/vm/drop_caches`; said in the figure's note), then times from the
//!   WebDriver new-session request until `#unlock-title` is displayed. That includes
//!   WebDriver's own start (tauri-driver asks WebKitWebDriver, which starts the app), so the
//!   time until the app's process appears (a /proc scan every 2 ms) is reported apart, and
//!   the app's own part is the difference.
//! * Memory: a fresh session unlocks with the PIN, opens 50 records one after another
//!   (click the row, wait for the banner to show that patient's NHS number, Escape back to
//!   the list), then sums the RSS of the app's process and all its descendants (the web
//!   view's WebKitWebProcess and WebKitNetworkProcess) from /proc. RSS counts pages shared
//!   between them once per process, so the proportional share (PSS, from `smaps_rollup`) is
//!   given beside it.
//!
//! tauri-driver is stopped with SIGTERM, never SIGKILL (its WebKitWebDriver would keep the
//! port); an app that outlives its session is sent SIGTERM by its pid.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use chrono::Utc;
use doorstep_client::{Device, EnrolParams};
use doorstep_server::demo::{self, DemoSpec};
use doorstep_server::run::{ServeConfig, TlsMode};
use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use crate::Scale;
use crate::figures::{Report, Samples};

const PIN: &str = "246810";
/// The goals.
const COLD_START_BUDGET_MS: f64 = 1500.0;
const RSS_BUDGET_MB: f64 = 250.0;
/// Records opened before memory is read.
const RECORDS: usize = 50;
const GROUP: &str = "The app: cold start and memory";

pub async fn run(report: &mut Report, scale: Scale) -> Result<()> {
    let app = app_binary()?;
    let driver_bin =
        which("tauri-driver").context("tauri-driver (cargo xtask deps installs it)")?;
    if which("WebKitWebDriver").is_none() {
        bail!("WebKitWebDriver is missing (apt-get install webkit2gtk-driver)");
    }
    if std::env::var_os("DISPLAY").is_none() {
        bail!(
            "the app suite needs an X display: run it under xvfb-run -a (cargo xtask bench does)"
        );
    }
    println!("  app binary: {}", app.display());

    // The demo federation, served here; the app only needs it to be there.
    let work = tempfile::Builder::new()
        .prefix("doorstep-app-bench-")
        .tempdir()?;
    let server_dir = work.path().join("server");
    let summary = demo::seed_with(&server_dir, &DemoSpec::standard(1, Utc::now().date_naive()))?;
    let nurse = summary
        .users
        .iter()
        .find(|u| u.username == "nurse.demo")
        .context("the demo's nurse")?
        .clone();
    let server = doorstep_server::run::start(ServeConfig {
        listen: "127.0.0.1:0".parse()?,
        tls: TlsMode::Dev,
        ..ServeConfig::new(&server_dir)
    })
    .await?;

    // The app's data directory: the nurse's device, enrolled and synced.
    let app_dir = work.path().join("app");
    std::fs::create_dir_all(&app_dir)?;
    let rows = {
        let device = Device::enrol(
            &app_dir,
            EnrolParams {
                server_url: server.base_url.clone(),
                ca_pem_path: Some(server.ca_pem_path.clone()),
                username: nurse.username.clone(),
                password: nurse.password.as_str().into(),
                totp: doorstep_testkit::totp_code(&nurse.totp_secret, 0).into(),
                pin: PIN.into(),
                device_name: "bench".into(),
                dev_mode: false,
            },
        )
        .await?;
        device.sync().await?;
        device.list(None, doorstep_client::today())?
    };
    let records = if scale.quick { 3 } else { RECORDS };
    if rows.len() < records {
        bail!(
            "the caseload has {} patients, fewer than {records}",
            rows.len()
        );
    }
    let args: Vec<String> = vec![
        "--data-dir".into(),
        app_dir.display().to_string(),
        "--server".into(),
        server.base_url.clone(),
        "--ca".into(),
        server.ca_pem_path.display().to_string(),
    ];

    let driver = TauriDriver::start(&driver_bin)?;
    let result = measure(
        report,
        scale,
        &driver,
        &app,
        &args,
        &app_dir,
        &rows[..records],
    )
    .await;
    drop(driver);
    server.shutdown().await;
    result
}

async fn measure(
    report: &mut Report,
    scale: Scale,
    driver: &TauriDriver,
    app: &Path,
    args: &[String],
    app_dir: &Path,
    rows: &[doorstep_ipc::ListRow],
) -> Result<()> {
    let runs = if scale.quick { 1 } else { 5 };
    let can_drop = is_root();
    let mut to_unlock = Samples::default();
    let mut to_process = Samples::default();
    let mut own = Samples::default();
    let load_before = loadavg();
    for run in 0..runs {
        if can_drop {
            drop_page_cache()?;
        }
        let watch = ProcessWatch::start(app.to_path_buf(), app_dir.to_path_buf());
        let t = Instant::now();
        let client = connect(driver, app, args).await?;
        let unlock = wait_displayed(&client, "#unlock-title", Duration::from_secs(60)).await;
        let total = t.elapsed();
        let seen = watch.stop();
        let pid = seen.map(|(pid, _)| pid);
        close(client, pid).await;
        unlock?;
        let (_, appeared) = seen.context("the app's process was never seen")?;
        let before = appeared.saturating_duration_since(t);
        println!(
            "    run {}: {:.0} ms to the unlock screen ({:.0} ms before the app's process existed)",
            run + 1,
            total.as_secs_f64() * 1e3,
            before.as_secs_f64() * 1e3
        );
        to_unlock.push(total);
        to_process.push(before);
        own.push(total.saturating_sub(before));
    }
    let load_after = loadavg();
    let cache = if can_drop {
        "page cache dropped before each run"
    } else {
        "page cache NOT dropped (not root): a warm start"
    };
    report.add(
        GROUP,
        "cold start to the unlock screen, median, WebDriver's start included",
        to_unlock.median_ms(),
        "ms",
        Some(COLD_START_BUDGET_MS),
        format!(
            "{runs} runs, {cache}; slowest {:.0} ms; load average {load_before} before, \
             {load_after} after",
            to_unlock.quantile_ms(1.0)
        ),
    );
    report.add(
        GROUP,
        "... of which WebDriver until the app's process exists, median",
        to_process.median_ms(),
        "ms",
        None,
        "new-session request until /proc shows the app",
    );
    report.add(
        GROUP,
        "... the app's own start: process to the unlock screen, median",
        own.median_ms(),
        "ms",
        None,
        "",
    );

    // Memory after opening records.
    let records = rows.len();
    let watch = ProcessWatch::start(app.to_path_buf(), app_dir.to_path_buf());
    let client = connect(driver, app, args).await?;
    let opened = open_records(&client, rows).await;
    let seen = watch.stop();
    let pid = seen.map(|(pid, _)| pid);
    let parts = pid.map(process_tree).unwrap_or_default();
    close(client, pid).await;
    opened?;
    if parts.is_empty() {
        bail!("the app's process was never seen");
    }
    let rss: u64 = parts.iter().map(|p| p.rss).sum();
    let pss: u64 = parts.iter().map(|p| p.pss).sum();
    let mut by_name: BTreeMap<String, (u64, u64, usize)> = BTreeMap::new();
    for p in &parts {
        let e = by_name.entry(p.name.clone()).or_default();
        e.0 += p.rss;
        e.1 += p.pss;
        e.2 += 1;
    }
    let detail: Vec<String> = by_name
        .iter()
        .map(|(name, (rss, pss, n))| {
            let count = if *n > 1 {
                format!(" x{n}")
            } else {
                String::new()
            };
            format!("{name}{count} {:.0} MB (PSS {:.0})", mb(*rss), mb(*pss))
        })
        .collect();
    report.add(
        GROUP,
        &format!("RSS after opening {records} records, the app and its web view"),
        mb(rss),
        "MB",
        Some(RSS_BUDGET_MB),
        format!("{}; PSS {:.0} MB in all", detail.join(", "), mb(pss)),
    );
    Ok(())
}

/// Unlock, then open each row's record and go back to the list.
async fn open_records(client: &Client, rows: &[doorstep_ipc::ListRow]) -> Result<()> {
    let pin = wait_for(client, "#unlock-pin").await?;
    pin.send_keys(PIN).await?;
    wait_for(client, "#unlock-submit").await?.click().await?;
    wait_for(client, ".patient-row").await?;
    for row in rows {
        let css = format!(".patient-row[data-nhs='{}']", row.nhs_number);
        let el = wait_for(client, &css).await?;
        client
            .execute(
                "arguments[0].scrollIntoView({ block: 'center' });",
                vec![serde_json::to_value(&el)?],
            )
            .await?;
        el.click().await?;
        wait_for_text(client, "#banner", &row.nhs_number_display).await?;
        client
            .active_element()
            .await?
            .send_keys(&Key::Escape.to_string())
            .await?;
        wait_for(client, ".patient-row").await?;
    }
    Ok(())
}

async fn wait_for(client: &Client, css: &str) -> Result<fantoccini::elements::Element> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match client.find(Locator::Css(css)).await {
            Ok(el) => return Ok(el),
            Err(e) if Instant::now() > deadline => bail!("{css} did not appear: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

async fn wait_for_text(client: &Client, css: &str, needle: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(el) = client.find(Locator::Css(css)).await
            && el.text().await.unwrap_or_default().contains(needle)
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{css} did not show {needle:?} within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls (every 10 ms: each poll is a WebDriver round trip) until `css` is displayed.
async fn wait_displayed(client: &Client, css: &str, within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(el) = client.find(Locator::Css(css)).await
            && el.is_displayed().await.unwrap_or(false)
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{css} was not displayed within {} s", within.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Ends the session; an app still running 5 s later gets SIGTERM (by its pid).
async fn close(client: Client, pid: Option<u32>) {
    let _ = client.close().await;
    let Some(pid) = pid else { return };
    let alive = || Path::new(&format!("/proc/{pid}")).exists() && !is_zombie(pid);
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if alive() {
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while alive() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

/// Watches /proc (every 2 ms, on its own thread) for the app started on `data_dir`; answers
/// its pid and when it was first seen.
struct ProcessWatch {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Option<(u32, Instant)>>,
}

impl ProcessWatch {
    fn start(app: PathBuf, data_dir: PathBuf) -> ProcessWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let exe = app.file_name().map(|n| n.to_string_lossy().into_owned());
            let dir = data_dir.display().to_string();
            while !flag.load(Ordering::Relaxed) {
                if let Some(pid) = find_app(exe.as_deref().unwrap_or("doorstep-app"), &dir) {
                    return Some((pid, Instant::now()));
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            None
        });
        ProcessWatch { stop, thread }
    }

    fn stop(self) -> Option<(u32, Instant)> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().ok().flatten()
    }
}

/// The live process whose command line runs `exe` with `dir` among its arguments.
fn find_app(exe: &str, dir: &str) -> Option<u32> {
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let mut parts = cmdline.split(|b| *b == 0).map(String::from_utf8_lossy);
        let Some(first) = parts.next() else { continue };
        if first.ends_with(exe) && parts.any(|a| a == dir) {
            return Some(pid);
        }
    }
    None
}

/// One process of the app's tree.
struct Part {
    name: String,
    rss: u64,
    pss: u64,
}

/// The process `root` and all its descendants, with their RSS and PSS (bytes).
fn process_tree(root: u32) -> Vec<Part> {
    let mut children: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...
        if let Some((_, rest)) = stat.rsplit_once(')')
            && let Some(ppid) = rest.split_whitespace().nth(1).and_then(|p| p.parse().ok())
        {
            children.entry(ppid).or_default().push(pid);
        }
    }
    let mut out = Vec::new();
    let mut stack = vec![root];
    while let Some(pid) = stack.pop() {
        let name = std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .unwrap_or_default()
            .trim()
            .to_string();
        let rss = crate::figures::rss_bytes(pid).unwrap_or(0);
        let pss = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
            .ok()
            .and_then(|s| {
                let line = s.lines().find(|l| l.starts_with("Pss:"))?.to_owned();
                line.split_whitespace().nth(1)?.parse::<u64>().ok()
            })
            .map_or(0, |kb| kb * 1024);
        out.push(Part { name, rss, pss });
        stack.extend(children.get(&pid).into_iter().flatten());
    }
    out
}

fn drop_page_cache() -> Result<()> {
    let _ = Command::new("sync").status();
    std::fs::write("/proc/sys/vm/drop_caches", "3").context("dropping the page cache")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The app: `DOORSTEP_APP_BIN`, else beside this binary (`cargo xtask bench` builds both).
fn app_binary() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os("DOORSTEP_APP_BIN") {
        return Ok(PathBuf::from(bin));
    }
    let bin = std::env::current_exe()?
        .parent()
        .context("the bench binary has no directory")?
        .join("doorstep-app");
    if !bin.is_file() {
        bail!(
            "no app binary at {} (build it: cargo xtask build-ui, then cargo build --release -p \
             doorstep-app; or run cargo xtask bench; or set DOORSTEP_APP_BIN)",
            bin.display()
        );
    }
    Ok(bin)
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

/// tauri-driver on free ports; stopped with SIGTERM on drop (never SIGKILL: its
/// WebKitWebDriver would keep the port).
struct TauriDriver {
    _child: doorstep_testkit::ChildGuard,
    port: u16,
}

impl TauriDriver {
    fn start(bin: &Path) -> Result<TauriDriver> {
        let port = doorstep_testkit::free_port();
        let native = doorstep_testkit::free_port();
        let child = Command::new(bin)
            .args([
                "--port",
                &port.to_string(),
                "--native-port",
                &native.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting tauri-driver")?;
        let driver = TauriDriver {
            _child: doorstep_testkit::ChildGuard::new(
                child,
                "tauri-driver",
                Duration::from_secs(10),
            ),
            port,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!("tauri-driver did not listen on {port}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(driver)
    }
}

/// A new WebDriver session that starts the app; asked again when tauri-driver drops the
/// first request (it accepts connections before its WebKitWebDriver is ready).
async fn connect(driver: &TauriDriver, app: &Path, args: &[String]) -> Result<Client> {
    let mut caps = serde_json::Map::new();
    caps.insert("browserName".into(), json!("wry"));
    caps.insert(
        "tauri:options".into(),
        json!({ "application": app, "args": args }),
    );
    let url = format!("http://127.0.0.1:{}", driver.port);
    let mut last = String::new();
    for attempt in 1..=5u64 {
        match ClientBuilder::rustls()?
            .capabilities(caps.clone())
            .connect(&url)
            .await
        {
            Ok(client) => return Ok(client),
            Err(e) => {
                eprintln!("  new WebDriver session, attempt {attempt}: {e}");
                last = e.to_string();
                tokio::time::sleep(Duration::from_secs(attempt)).await;
            }
        }
    }
    Err(anyhow!(
        "tauri-driver made no session in 5 attempts: {last}"
    ))
}
