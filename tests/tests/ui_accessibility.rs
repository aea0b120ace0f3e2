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

use std::path::PathBuf;
use std::time::{Duration, Instant};

use doorstep_e2e::browser::{
    Chromedriver, Needs, artifacts_dir, cdp, count, metrics, project_root, run_axe,
    save_screenshot, see, sideways, wait_for,
};
use doorstep_e2e::fake_shell::{self, FakeShell, Start};
use fantoccini::Client;
use serde_json::json;

/// Viewports: a laptop, a 10-inch tablet upright, a phone.
const SIZES: &[(u32, u32)] = &[(1280, 800), (800, 1280), (390, 844)];

/// Colour schemes.
const THEMES: &[&str] = &["dark", "light"];

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
    let axe = needs.browser.axe_source();
    let shell = FakeShell::start(&needs.dist)
        .await
        .expect("start the fake shell");
    let driver = Chromedriver::start(&needs.browser.chromedriver);
    let client = driver.connect(&needs.browser.chromium, &[]).await;
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

struct Prerequisites {
    browser: Needs,
    dist: PathBuf,
}

/// What the test needs, or None (with the reason printed) when it cannot run here.
fn prerequisites() -> Option<Prerequisites> {
    let dist = project_root().join("ui/dist");
    let browser = Needs::find(
        "accessibility test",
        &[(
            dist.join("index.html"),
            "the UI built: cargo xtask build-ui",
        )],
    )?;
    Some(Prerequisites { browser, dist })
}
