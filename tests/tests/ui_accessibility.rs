//! Accessibility: every screen of the UI, in a real Chromium (headless, driven by chromedriver
//! through fantoccini), checked by axe-core for WCAG 2.0, 2.1 and 2.2 A and AA.
//!
//! The page is the UI's own build (`ui/dist`, what the window embeds) served by the fake shell
//! (`doorstep_e2e::fake_shell`), which answers every command from a synthetic caseload. Each
//! screen of [`SCREENS`] is reached from a fresh page by its steps, its visible content is
//! checked (a blank page or an error page fails), and then, at each of [`SIZES`] and in each
//! of [`THEMES`] (the `data-theme` attribute on `<html>` and Chromium's prefers-color-scheme
//! both set), axe runs and a screenshot is saved to
//! `$DOORSTEP_TEST_ARTIFACTS/a11y-<screen>-<size>-<theme>.png` (default `tests/artifacts/`).
//! The test fails listing every violation: screen, size, theme, rule, impact, help and the CSS
//! targets of the nodes.
//!
//! Adding a screen is one line in [`SCREENS`]: its name and the steps that reach it.
//!
//! Needs `chromedriver` and Chromium (Debian's `chromium-driver`, `chromium`), axe-core
//! (`DOORSTEP_AXE_JS`, or the copy `cargo xtask deps` installs beside the build products) and
//! the UI built (`cargo xtask build-ui`). Without them a plain `cargo test` says why it did
//! not run; under `cargo xtask test` (DOORSTEP_E2E_REQUIRED=1) the test fails.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use doorstep_e2e::fake_shell::{self, FakeShell, Start};
use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

/// Viewports: a laptop, a 10-inch tablet upright, a phone.
const SIZES: &[(u32, u32)] = &[(1280, 800), (800, 1280), (390, 844)];

/// Colour schemes.
const THEMES: &[&str] = &["dark", "light"];

/// The axe tags checked: WCAG 2.0, 2.1 and 2.2 at levels A and AA.
const AXE_TAGS: &[&str] = &["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"];

/// What a screen's steps do, in order, from a fresh fake shell.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// The steps of another screen first.
    After(&'static str),
    /// Reset the fake shell to this state.
    Reset(Start),
    /// Change the fake shell before (or while) the page runs.
    Shell(fn(&FakeShell)),
    /// Open the app's page (a new document).
    Load,
    /// Replace the text of a field.
    Fill(&'static str, &'static str),
    /// Choose an option of a `<select>` by value.
    Choose(&'static str, &'static str),
    Click(&'static str),
    /// Wait until an element matching the selector shows the text (`""`: any element).
    See(&'static str, &'static str),
    /// Wait until this many elements match the selector.
    Count(&'static str, usize),
    /// Wait until the fake shell has been asked to lock.
    Locked,
}

use Step::*;

/// Every screen the UI has, with the steps that reach it. A screen that builds on the one
/// just before it (`After` that screen first) goes on from where it is; any other starts again
/// from a fresh page.
#[rustfmt::skip]
const SCREENS: &[(&str, &[Step])] = &[
    ("enrol", &[Reset(Start::NotEnrolled), Load, See("#enrol-title", "Enrol this device")]),
    ("enrol-field-errors", &[After("enrol"), Fill("#enrol-server", ""), Click("#enrol-submit"), See(".field-error", "")]),
    ("enrol-refused", &[After("enrol"), Fill("#enrol-user", fake_shell::USERNAME), Fill("#enrol-password", "wrong password"), Fill("#enrol-totp", "123456"), Fill("#enrol-pin", fake_shell::PIN), Fill("#enrol-pin-confirm", fake_shell::PIN), Click("#enrol-submit"), See("#enrol-error", "not right")]),
    ("unlock", &[Reset(Start::Locked), Load, See("#unlock-title", "Unlock Doorstep")]),
    ("unlock-wrong-pin", &[After("unlock"), Fill("#unlock-pin", "1111"), Click("#unlock-submit"), See("#unlock-error", "4 more wrong PIN")]),
    ("unlock-online-sign-in", &[After("unlock-wrong-pin"), Shell(|s| s.set_wrong_pins(4)), Fill("#unlock-pin", "1111"), Click("#unlock-submit"), See("#unlock-error", "Too many wrong PINs"), See("label[for='unlock-password']", "Password")]),
    ("sign-in-again", &[After("unlock"), Click("#unlock-sign-in"), See("#enrol-title", "Sign in again")]),
    ("list", &[After("unlock"), Fill("#unlock-pin", fake_shell::PIN), Click("#unlock-submit"), Count(".patient-row", 8), See("#list-count", "8 patients on your list")]),
    ("list-search", &[After("list"), Fill("#search", "jones"), Count(".patient-row", 2), See("#list-count", "2 matches")]),
    ("list-no-match", &[After("list-search"), Fill("#search", "Zebedee"), See("#list-empty", "No match")]),
    ("list-sync-failed", &[After("list-no-match"), Shell(|s| s.set_server_reachable(false)), Click("#sync-now"), See("#sync-error", "Last sync failed")]),
    ("record", &[After("list"), Click(".patient-row[data-patient='fake-evans']"), See("#banner-name", "EVANS, Siân"), See("#banner-allergies", "Penicillin"), See("#banner-alerts", "DNACPR"), See("#withheld-notice", "4 items in this record")]),
    ("record-problems", &[After("record"), Click("#tab-problems"), See("#section-panel[data-section='problems']", "Venous leg ulcer"), See("#withheld-notice", "2 items")]),
    ("record-medications", &[After("record-problems"), Click("#tab-medications"), See("#section-panel[data-section='medications']", "Metformin")]),
    ("record-allergies", &[After("record-medications"), Click("#tab-allergies"), See("#section-panel[data-section='allergies']", "Anaphylaxis")]),
    ("record-encounters", &[After("record-allergies"), Click("#tab-encounters"), See("#section-panel[data-section='encounters']", "District nurse visit")]),
    ("record-observations", &[After("record-encounters"), Click("#tab-observations"), See("#section-panel[data-section='observations']", "HbA1c"), See("#section-panel .flag", "abnormal")]),
    ("record-immunisations", &[After("record-observations"), Click("#tab-immunisations"), See("#section-panel[data-section='immunisations']", "Influenza")]),
    ("record-procedures", &[After("record-immunisations"), Click("#tab-procedures"), See("#section-panel[data-section='procedures']", "compression")]),
    ("record-documents", &[After("record-procedures"), Click("#tab-documents"), Click("#section-panel details summary"), See("#section-panel details[open]", "Physiotherapy")]),
    ("record-alerts", &[After("record-documents"), Click("#tab-alerts"), See("#section-panel[data-section='alerts']", "Key safe")]),
    ("composer", &[After("record-alerts"), Click("#write-note"), See("#note-destination", "Riverside Medical Practice"), Count(".note", 6)]),
    ("composer-invalid", &[After("composer"), Fill("#note-text", "Seen at home."), Fill("#v-rr", "fast"), Click("#note-sign"), See("#note-message", "not a whole number")]),
    ("composer-signed", &[After("composer-invalid"), Fill("#note-text", "Dressing changed; healing well."), Fill("#v-rr", "21"), Fill("#v-spo2", "95"), Fill("#v-pulse", "92"), See("#news2", "NEWS2 4"), Click("#note-sign"), See("#note-message", "Signed"), Count(".note[data-state='waiting']", 2)]),
    ("synced", &[After("composer-signed"), Click("#sync-now"), Count(".note[data-state='waiting']", 0), See("#sync-last", "Last synced")]),
    ("list-same-name", &[After("list"), Fill("#search", "jones"), Count(".same-name-flag", 2), See(".patient-row[data-patient='fake-jones-1987']", "Same name as another patient")]),
    ("record-same-name", &[After("list"), Click(".patient-row[data-patient='fake-jones-1952']"), See("#banner-same-name", "SAME NAME"), See("#banner-dob", "1952")]),
    ("record-switched", &[After("record-same-name"), Click("#back-to-list"), Click(".patient-row[data-patient='fake-jones-1987']"), See("#patient-switch", "Now showing"), See("#banner-dob", "1987")]),
    ("record-chart", &[After("record"), Click("#tab-observations"), See(".trend-caption", "trend")]),
    ("sync-screen", &[After("list"), Click("#open-sync"), See("#sync-title", "Sync status"), See("#sync-brought", "1 patient added"), See("#outbox", "Waiting to be sent")]),
    ("settings", &[After("list"), Click("#open-settings"), See("#settings-title", "Settings"), See("#device-name", "fake tablet"), See("#shortcut-table", "Alt+L")]),
    ("settings-wrong-pin", &[After("settings"), Fill("#pin-old", "000000"), Fill("#pin-new", "975310"), Fill("#pin-again", "975310"), Click("#pin-save"), See("#pin-message", "Wrong PIN")]),
    ("settings-sign-out-refused", &[After("settings"), Click("#sign-out"), Click("#sign-out-confirm"), See("#sign-out-error", "Sync first")]),
    ("record-address-withheld", &[After("list"), Click(".patient-row[data-patient='fake-ozturk']"), See("#banner-address", "Withheld")]),
    ("break-glass", &[After("list"), Click("#break-glass"), See("#bg-title", "Emergency access")]),
    ("break-glass-no-match", &[After("break-glass"), Choose("#bg-reason", "emergency_treatment"), Fill("#bg-family", "Hughes"), Fill("#bg-born", "02/02/1902"), Click("#bg-search"), See("#bg-none", "No patient matches")]),
    ("break-glass-matches", &[After("break-glass-no-match"), Choose("#bg-reason", "patient_unconscious"), Fill("#bg-family", "Hughes"), Fill("#bg-born", "01/10/1960"), Click("#bg-search"), See(".bg-match", "HUGHES, Gwen")]),
    ("break-glass-record", &[After("break-glass-matches"), Click(".bg-open"), See("#break-glass-banner", "EMERGENCY ACCESS"), See("#banner-name", "HUGHES, Gwen")]),
    ("offline-too-long", &[Reset(Start::Locked), Shell(|s| s.set_offline_too_long(true)), Load, Fill("#unlock-pin", fake_shell::PIN), Click("#unlock-submit"), See("#offline-too-long-message", "more than 72 hours ago"), Count(".patient-row", 0)]),
    // The shortest idle lock comes with a status (Sync now fetches one); then no input.
    ("idle-locked", &[After("unlock"), Fill("#unlock-pin", fake_shell::PIN), Click("#unlock-submit"), Count(".patient-row", 8), Shell(|s| s.set_idle_lock_secs(2)), Click("#sync-now"), Locked, See("#unlock-title", "Unlock Doorstep")]),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_screen_passes_axe_wcag22_aa_at_every_size_in_both_themes() {
    let Some(needs) = prerequisites() else {
        return;
    };
    let started = Instant::now();
    let axe = std::fs::read_to_string(&needs.axe).expect("read axe.min.js");
    let shell = FakeShell::start(&needs.dist)
        .await
        .expect("start the fake shell");
    let driver = Chromedriver::start(&needs.chromedriver);
    let client = driver.connect(&needs.chromium).await;
    let artifacts = artifacts_dir();

    let mut violations = Vec::new();
    let mut checked = 0;
    let mut failure = None;
    let mut reaching = Duration::ZERO;
    let mut here: Option<&str> = None;
    for (name, _) in SCREENS {
        let reached = Instant::now();
        // Every screen is reached at the first size (the steps click what a laptop shows).
        let (width, height) = SIZES[0];
        cdp(
            &client,
            "Emulation.setDeviceMetricsOverride",
            metrics(width, height),
        )
        .await;
        if let Err(why) = reach(&client, &shell, name, here.take()).await {
            let _ =
                save_screenshot(&client, &artifacts.join(format!("a11y-failure-{name}.png"))).await;
            failure = Some(format!("screen {name}: {why}"));
            break;
        }
        reaching += reached.elapsed();
        here = Some(name);
        for &(width, height) in SIZES {
            cdp(
                &client,
                "Emulation.setDeviceMetricsOverride",
                metrics(width, height),
            )
            .await;
            show_subject(&client, name).await;
            for theme in THEMES {
                set_theme(&client, theme).await;
                let mut found = run_axe(&client, &axe).await;
                found.extend(sideways(&client).await);
                violations.extend(
                    found
                        .into_iter()
                        .map(|v| format!("{name} at {width}x{height}, {theme}: {v}")),
                );
                let png = artifacts.join(format!("a11y-{name}-{width}x{height}-{theme}.png"));
                save_screenshot(&client, &png).await.expect("screenshot");
                checked += 1;
            }
        }
    }
    let unanswered = shell.unanswered();
    let _ = client.close().await;
    drop(driver);
    if let Some(failure) = failure {
        panic!(
            "{failure}\n(violations found before it: {})",
            violations.join("\n")
        );
    }
    assert!(
        unanswered.is_empty(),
        "the UI called commands the fake shell does not answer: {unanswered:?}"
    );
    eprintln!(
        "axe: {} screens (reached in {:.1} s), {checked} checks, {:.1} s in all, {} violations",
        SCREENS.len(),
        reaching.as_secs_f64(),
        started.elapsed().as_secs_f64(),
        violations.len()
    );
    assert!(
        violations.is_empty(),
        "{} WCAG 2.2 AA violations:\n{}",
        violations.len(),
        violations.join("\n")
    );
}

/// Every screen name is unique and every `After` names an earlier screen, so a typo fails
/// here rather than as a confusing run.
#[test]
fn screens_are_named_once_and_build_on_earlier_screens() {
    for (i, (name, steps)) in SCREENS.iter().enumerate() {
        assert!(
            SCREENS[..i].iter().all(|(other, _)| other != name),
            "{name} is listed twice"
        );
        for step in *steps {
            if let After(earlier) = step {
                assert!(
                    SCREENS[..i].iter().any(|(other, _)| other == earlier),
                    "{name} builds on {earlier}, which is not listed before it"
                );
            }
        }
    }
}

fn steps_of(name: &str) -> Vec<Step> {
    let (_, steps) = SCREENS
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no screen {name}"));
    steps
        .iter()
        .flat_map(|s| match s {
            After(earlier) => steps_of(earlier),
            other => vec![*other],
        })
        .collect()
}

/// Takes the page to screen `name`: from `here` (the screen it shows) when `name` builds on
/// it, else from the start.
async fn reach(
    client: &Client,
    shell: &FakeShell,
    name: &str,
    here: Option<&str>,
) -> Result<(), String> {
    let steps = match SCREENS.iter().find(|(n, _)| *n == name) {
        Some((_, [After(earlier), rest @ ..])) if Some(*earlier) == here => rest
            .iter()
            .flat_map(|s| match s {
                After(earlier) => steps_of(earlier),
                other => vec![*other],
            })
            .collect(),
        _ => steps_of(name),
    };
    for step in steps {
        match step {
            After(_) => unreachable!("expanded by steps_of"),
            Reset(start) => shell.reset(start),
            Shell(change) => change(shell),
            Load => client
                .goto(&shell.url)
                .await
                .map_err(|e| format!("opening the page: {e}"))?,
            Fill(css, text) => {
                let el = wait_for(client, css).await?;
                el.clear()
                    .await
                    .map_err(|e| format!("clearing {css}: {e}"))?;
                if !text.is_empty() {
                    el.send_keys(text)
                        .await
                        .map_err(|e| format!("typing into {css}: {e}"))?;
                }
            }
            Choose(css, value) => {
                let el = wait_for(client, css).await?;
                el.select_by_value(value)
                    .await
                    .map_err(|e| format!("choosing {value} in {css}: {e}"))?;
            }
            Click(css) => {
                let el = wait_for(client, css).await?;
                el.click()
                    .await
                    .map_err(|e| format!("clicking {css}: {e}"))?;
            }
            See(css, text) => see(client, css, text).await?,
            Count(css, n) => count(client, css, n).await?,
            Locked => {
                let deadline = Instant::now() + Duration::from_secs(15);
                while !shell.is_locked() {
                    if Instant::now() > deadline {
                        return Err("the window did not lock itself at the idle deadline".into());
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
    // No screen is the start-up failure (the page opened outside the shell).
    let page = client
        .source()
        .await
        .map_err(|e| format!("reading the page: {e}"))?;
    if page.contains("Doorstep could not start") {
        return Err("the page says Doorstep could not start".into());
    }
    Ok(())
}

/// Scrolls the last thing the screen's steps looked for into view, so that the screenshot at
/// each size shows what the screen is about.
async fn show_subject(client: &Client, name: &str) {
    let subject = steps_of(name).iter().rev().find_map(|s| match s {
        See(css, _) => Some(*css),
        _ => None,
    });
    if let Some(css) = subject {
        client
            .execute(
                "const el = document.querySelector(arguments[0]); \
                 if (el) el.scrollIntoView({ block: 'nearest' });",
                vec![json!(css)],
            )
            .await
            .unwrap_or_else(|e| panic!("scrolling to {css}: {e}"));
    }
}

const WAIT: Duration = Duration::from_secs(10);

async fn wait_for(client: &Client, css: &str) -> Result<fantoccini::elements::Element, String> {
    client
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css(css))
        .await
        .map_err(|e| format!("{css} did not appear: {e}"))
}

async fn see(client: &Client, css: &str, text: &str) -> Result<(), String> {
    let deadline = Instant::now() + WAIT;
    let mut last = Vec::new();
    loop {
        last.clear();
        for el in client.find_all(Locator::Css(css)).await.unwrap_or_default() {
            let shown = el.text().await.unwrap_or_default();
            if shown.contains(text)
                && (!text.is_empty() || el.is_displayed().await.unwrap_or(false))
            {
                return Ok(());
            }
            last.push(shown);
        }
        if Instant::now() > deadline {
            return Err(format!("no {css} shows {text:?} (seen: {last:?})"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn count(client: &Client, css: &str, n: usize) -> Result<(), String> {
    let deadline = Instant::now() + WAIT;
    loop {
        let found = client
            .find_all(Locator::Css(css))
            .await
            .map(|v| v.len())
            .unwrap_or(0);
        if found == n {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{found} elements match {css}, not {n}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A viewport of `width` x `height` CSS pixels at scale 1.
fn metrics(width: u32, height: u32) -> Value {
    json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false})
}

/// Both ways a page learns its scheme: the attribute (the app's own choice) and the media
/// query (the system's, which the page follows when there is no attribute).
async fn set_theme(client: &Client, theme: &str) {
    cdp(
        client,
        "Emulation.setEmulatedMedia",
        json!({"features": [{"name": "prefers-color-scheme", "value": theme}]}),
    )
    .await;
    client
        .execute(
            "document.documentElement.setAttribute('data-theme', arguments[0]);",
            vec![json!(theme)],
        )
        .await
        .expect("set data-theme");
}

/// Injects axe (once per document), waits two frames for layout, runs it, and answers each
/// violation as one line: rule, impact, help and the targets of its nodes.
async fn run_axe(client: &Client, axe: &str) -> Vec<String> {
    let present = client
        .execute("return !!window.axe;", vec![])
        .await
        .expect("look for axe");
    if present != json!(true) {
        client
            .execute(
                "const s = document.createElement('script'); \
                 s.textContent = arguments[0]; document.head.appendChild(s);",
                vec![json!(axe)],
            )
            .await
            .expect("inject axe");
    }
    let answer = client
        .execute(
            "const tags = arguments[0];
             await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
             const result = await axe.run(document, {
               runOnly: { type: 'tag', values: tags },
               resultTypes: ['violations'],
             });
             return result.violations.map(v => ({
               id: v.id, impact: v.impact, help: v.help,
               targets: v.nodes.map(n => n.target.join(' ')),
             }));",
            vec![json!(AXE_TAGS)],
        )
        .await
        .expect("axe.run");
    let Value::Array(found) = answer else {
        panic!("axe answered {answer}");
    };
    found
        .iter()
        .map(|v| {
            let targets: Vec<&str> = v["targets"]
                .as_array()
                .map(|t| t.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            format!(
                "{} ({}): {} [{}]",
                v["id"].as_str().unwrap_or("?"),
                v["impact"].as_str().unwrap_or("?"),
                v["help"].as_str().unwrap_or("?"),
                targets.join(", ")
            )
        })
        .collect()
}

/// Reflow (WCAG 1.4.10, which axe does not check): the page and its scrolling main area never
/// scroll sideways; a wide data table or the record's tabs may scroll within themselves.
async fn sideways(client: &Client) -> Option<String> {
    let answer = client
        .execute(
            "const w = document.documentElement.clientWidth;
             const main = document.getElementById('main');
             const page = document.scrollingElement.scrollWidth > w + 1;
             const inner = main && main.scrollWidth > main.clientWidth + 1;
             if (!page && !inner) return null;
             const limit = main ? main.getBoundingClientRect().right : w;
             const wide = Array.from(document.querySelectorAll('#main *'))
               .filter(e => e.getBoundingClientRect().right > limit + 1)
               .slice(0, 5)
               .map(e => e.id ? '#' + e.id : e.tagName.toLowerCase() + (e.className ? '.' + String(e.className).split(' ')[0] : ''));
             return wide.join(', ') || 'the page';",
            vec![],
        )
        .await
        .expect("measure the page's width");
    answer
        .as_str()
        .map(|wide| format!("reflow (1.4.10): the page scrolls sideways [{wide}]"))
}

async fn save_screenshot(client: &Client, path: &Path) -> Result<(), String> {
    let png = client
        .screenshot()
        .await
        .map_err(|e| format!("screenshot: {e}"))?;
    std::fs::write(path, png).map_err(|e| format!("writing {}: {e}", path.display()))
}

/// A Chrome DevTools Protocol command through chromedriver's `goog/cdp/execute`.
#[derive(Debug)]
struct Cdp {
    cmd: &'static str,
    params: Value,
}

impl WebDriverCompatibleCommand for Cdp {
    fn endpoint(
        &self,
        base: &url::Url,
        session: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base.join(&format!(
            "session/{}/goog/cdp/execute",
            session.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        let body = json!({"cmd": self.cmd, "params": self.params});
        (http::Method::POST, Some(body.to_string()))
    }
}

async fn cdp(client: &Client, cmd: &'static str, params: Value) {
    client
        .issue_cmd(Cdp { cmd, params })
        .await
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
}

struct Needs {
    chromedriver: PathBuf,
    chromium: PathBuf,
    axe: PathBuf,
    dist: PathBuf,
}

/// What the test needs, or None (with the reason printed) when it cannot run here.
fn prerequisites() -> Option<Needs> {
    let chromedriver = which("chromedriver");
    // Debian's /usr/bin/chromium is a shell wrapper; the browser itself is beside its libraries.
    let chromium = ["/usr/lib/chromium/chromium"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .or_else(|| which("chromium"));
    let axe = axe_js();
    let root = project_root();
    let dist = root.join("ui/dist");
    let mut missing = Vec::new();
    if chromedriver.is_none() {
        missing.push("chromedriver (apt-get install chromium-driver)".to_owned());
    }
    if chromium.is_none() {
        missing.push("Chromium (apt-get install chromium)".to_owned());
    }
    if !axe.is_file() {
        missing.push(format!(
            "axe-core at {} (cargo xtask deps installs it; or set DOORSTEP_AXE_JS)",
            axe.display()
        ));
    }
    if !dist.join("index.html").is_file() {
        missing.push(format!(
            "the UI built into {} (cargo xtask build-ui)",
            dist.display()
        ));
    }
    if missing.is_empty() {
        return Some(Needs {
            chromedriver: chromedriver?,
            chromium: chromium?,
            axe,
            dist,
        });
    }
    let why = format!(
        "accessibility test cannot run: missing {}",
        missing.join(", ")
    );
    if doorstep_testkit::e2e_required() {
        panic!("{why}");
    }
    eprintln!("{why}; `cargo xtask test` provides them");
    None
}

/// `DOORSTEP_AXE_JS`, else where `cargo xtask deps` installs axe-core: `axe/` in the target
/// directory this test binary was built in (target/<profile>/deps/<test>).
fn axe_js() -> PathBuf {
    if let Some(path) = std::env::var_os("DOORSTEP_AXE_JS") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the test's path");
    exe.ancestors()
        .nth(3)
        .unwrap_or(Path::new("."))
        .join("axe/node_modules/axe-core/axe.min.js")
}

/// The clone this test runs in (at run time: a binary built in another clone tests this one).
fn project_root() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn artifacts_dir() -> PathBuf {
    let dir = std::env::var_os("DOORSTEP_TEST_ARTIFACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| project_root().join("tests/artifacts"));
    std::fs::create_dir_all(&dir).expect("create the artifacts directory");
    dir
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// chromedriver on a free loopback port, in a process group of its own with the Chromium it
/// starts; on drop the group gets SIGTERM (chromedriver alone would leave a browser behind when
/// the session was not closed, as after a panic), and chromedriver is killed only if it does
/// not go.
struct Chromedriver {
    child: Child,
    port: u16,
}

impl Chromedriver {
    fn start(program: &Path) -> Chromedriver {
        let port = doorstep_testkit::free_port();
        let child = Command::new(program)
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "chromedriver did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Chromedriver { child, port }
    }

    async fn connect(&self, chromium: &Path) -> Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium,
                "args": [
                    "--headless=new",
                    // As root (CI) Chromium's sandbox cannot start.
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--force-device-scale-factor=1",
                    "--window-size=1280,800",
                    "--lang=en-GB",
                    "--no-first-run",
                    "--disable-extensions",
                ],
            }),
        );
        ClientBuilder::rustls()
            .expect("rustls connector")
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("a chromedriver session")
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", "--", &format!("-{}", self.child.id())])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
