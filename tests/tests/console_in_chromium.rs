//! The web console in a real Chromium (headless, chromedriver, fantoccini) against a real
//! `doorstep-server` over HTTPS with its dev CA on a random port.
//!
//! Chromium trusts exactly the server's certificate and its CA by their public keys
//! (`--ignore-certificate-errors-spki-list`, [`doorstep_e2e::browser::spki_hashes`]), nothing
//! else. The receptionist signs in (password and the TOTP code computed from her seeded
//! secret), gets a clear message for a wrong NHS number, searches a patient of her practice,
//! sees name, date of birth and NHS number, books them into a session with a reason, sees the
//! booking on the session, and signs out. The service manager revokes a device and opens the
//! figures (a chart with one bar a week, the numbers the figures function gives). The team
//! leader's caseload is opened; the privacy officer acknowledges a paramedic's break-glass alert
//! (after a missing note is named by its field) and reads the patient's access report. Every page
//! visited is checked by axe-core (WCAG 2.0/2.1/2.2 A and AA) at 1280x800 and 390x844 in the
//! light and dark schemes, with the reflow check, and screenshotted to
//! `$DOORSTEP_TEST_ARTIFACTS/console-<page>-<width>-<scheme>.png`
//! (default `tests/artifacts/`). Under `cargo xtask test` (DOORSTEP_E2E_REQUIRED=1) missing
//! browser parts fail the test; a plain `cargo test` says why it did not run.

use std::time::Instant;

use chrono::Utc;
use doorstep_e2e::DemoFederation;
use doorstep_e2e::browser::{
    Chromedriver, Needs, artifacts_dir, cdp, count, metrics, run_axe, save_screenshot, see,
    sideways, spki_hashes, wait_for,
};
use doorstep_server::demo::DemoSpec;
use fantoccini::{Client, Locator};

/// Viewports every page is checked at: a laptop and a phone.
const SIZES: &[(u32, u32)] = &[(1280, 800), (390, 844)];

/// The colour schemes the console follows (the system's, `prefers-color-scheme`).
const SCHEMES: &[&str] = &["light", "dark"];

struct Run {
    client: Client,
    axe: String,
    violations: Vec<String>,
    pages: usize,
}

impl Run {
    /// axe and the reflow check at each size in each scheme, and a screenshot of each.
    async fn check(&mut self, name: &str) {
        self.check_showing(name, None).await;
    }

    /// As [`Run::check`], the screenshots scrolled to `subject` (what the step is about).
    async fn check_showing(&mut self, name: &str, subject: Option<&str>) {
        for &(width, height) in SIZES {
            cdp(
                &self.client,
                "Emulation.setDeviceMetricsOverride",
                metrics(width, height),
            )
            .await;
            for scheme in SCHEMES {
                self.scheme(scheme).await;
                self.one_check(name, width, height, scheme, subject).await;
            }
        }
        self.scheme("light").await;
        cdp(
            &self.client,
            "Emulation.setDeviceMetricsOverride",
            metrics(SIZES[0].0, SIZES[0].1),
        )
        .await;
        self.pages += 1;
    }

    /// The page's colour scheme as the system would set it (the console follows it).
    async fn scheme(&self, scheme: &str) {
        cdp(
            &self.client,
            "Emulation.setEmulatedMedia",
            serde_json::json!({"features": [{"name": "prefers-color-scheme", "value": scheme}]}),
        )
        .await;
    }

    /// axe, the reflow check and a screenshot at the size and scheme set.
    async fn one_check(
        &mut self,
        name: &str,
        width: u32,
        height: u32,
        scheme: &str,
        subject: Option<&str>,
    ) {
        if let Some(css) = subject {
            self.client
                .execute(
                    "const el = document.querySelector(arguments[0]); \
                     if (el) el.scrollIntoView({ block: 'start' });",
                    vec![serde_json::json!(css)],
                )
                .await
                .expect("scroll to the subject");
        }
        let mut found = run_axe(&self.client, &self.axe).await;
        found.extend(sideways(&self.client).await);
        self.violations.extend(
            found
                .into_iter()
                .map(|v| format!("{name} at {width}x{height}, {scheme}: {v}")),
        );
        let png = artifacts_dir().join(format!("console-{name}-{width}-{scheme}.png"));
        save_screenshot(&self.client, &png)
            .await
            .expect("screenshot");
    }

    async fn fill(&self, css: &str, text: &str) {
        let el = wait_for(&self.client, css).await.unwrap();
        el.clear().await.unwrap();
        if !text.is_empty() {
            el.send_keys(text).await.unwrap();
        }
    }

    async fn click(&self, css: &str) {
        wait_for(&self.client, css)
            .await
            .unwrap()
            .click()
            .await
            .unwrap_or_else(|e| panic!("clicking {css}: {e}"));
    }

    async fn see(&self, css: &str, text: &str) {
        if let Err(why) = see(&self.client, css, text).await {
            let _ =
                save_screenshot(&self.client, &artifacts_dir().join("console-failure.png")).await;
            panic!("{why}");
        }
    }

    async fn sign_in(&mut self, base: &str, user: &doorstep_e2e::DemoUser, shot: Option<&str>) {
        self.client
            .goto(&format!("{base}/console/sign-in"))
            .await
            .unwrap();
        self.see("#page-title", "Sign in").await;
        if let Some(name) = shot {
            self.check(name).await;
        }
        self.fill("#username", &user.username).await;
        self.fill("#password", &user.password).await;
        self.fill("#totp", &doorstep_e2e::totp_for(&user.totp_secret, 0))
            .await;
        self.click("#sign-in").await;
        self.see("#signed-in", "Signed in as").await;
    }

    async fn sign_out(&self) {
        self.click("#sign-out").await;
        self.see("#notice", "You are signed out").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_chromium_books_revokes_and_charts_with_no_wcag_violations() {
    let Some(needs) = Needs::find("console browser test", &[]) else {
        return;
    };
    let started = Instant::now();
    let federation = DemoFederation::start_spec(DemoSpec::small(21, Utc::now().date_naive())).await;
    let base = federation.server.base_url.clone();
    let store = federation.store().await;
    let dir = federation.data_dir.path();
    let trust = spki_hashes(&[&dir.join("server.pem"), &dir.join("dev-ca.pem")]);
    let driver = Chromedriver::start(&needs.chromedriver);
    let client = driver
        .connect(
            &needs.chromium,
            &[format!("--ignore-certificate-errors-spki-list={trust}")],
        )
        .await;
    let mut run = Run {
        client,
        axe: needs.axe_source(),
        violations: Vec::new(),
        pages: 0,
    };

    // The check can fail: a page with an unlabelled field and no language has violations.
    run.client
        .goto("data:text/html,<title>t</title><input>")
        .await
        .unwrap();
    assert!(
        !run_axe(&run.client, &run.axe).await.is_empty(),
        "axe found nothing wrong with a page that has violations"
    );

    // ---- the receptionist books a patient ----
    let reception = federation.user("reception.demo");
    run.sign_in(&base, &reception, Some("sign-in")).await;
    run.see("#page-title", "Sessions and bookings").await;
    run.see("#sessions", "Open session").await;
    run.check("sessions").await;
    run.click("a.open-session").await;
    run.see("#session-summary", "free").await;
    let url = run.client.current_url().await.unwrap();
    let session_id = url.path().rsplit('/').next().unwrap().to_string();
    run.check("session").await;
    // A wrong NHS number: the message by the field.
    run.fill("#nhs_number", "1234567890").await;
    run.click("#search").await;
    run.see("#nhs_number-error", "Error:").await;
    run.check_showing("search-error", Some("#book-heading"))
        .await;
    // A patient of her practice, not booked in this session, who has not dissented.
    let practice = store
        .user_by_username("reception.demo")
        .await
        .unwrap()
        .unwrap()
        .practice_ods
        .unwrap();
    let booked: Vec<String> = store
        .session_bookings(&session_id)
        .await
        .unwrap()
        .into_iter()
        .map(|b| b.patient_id)
        .collect();
    let patient = store
        .patients()
        .await
        .unwrap()
        .into_iter()
        .find(|p| p.practice_ods == practice && !p.dissent && !booked.contains(&p.id))
        .expect("a patient to book");
    // Shown as it is read: 3, 3 and 4 digits.
    let shown_nhs = doorstep_server::console::nhs(&patient.nhs_number);
    run.fill("#nhs_number", &patient.nhs_number).await;
    run.click("#search").await;
    run.see(".match-nhs", &shown_nhs).await;
    run.see(".match-born", "").await;
    run.check_showing("search-match", Some("#matches-heading"))
        .await;
    let name = run
        .client
        .find(Locator::Css(".match-name"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    run.fill("#reason-0", "Review of blood results").await;
    run.click("button.book").await;
    run.see("#notice", "Booked").await;
    run.see("#bookings", &shown_nhs).await;
    run.see("#bookings .patient-name", &name).await;
    run.check("booked").await;
    let made = store
        .session_bookings(&session_id)
        .await
        .unwrap()
        .into_iter()
        .find(|b| b.patient_id == patient.id && b.cancelled_at.is_none())
        .expect("the booking is stored");
    assert_eq!(made.reason, "Review of blood results");
    // Cancelling needs a reason too; then the booking goes.
    run.click("#cancel").await;
    run.see("#cancel-reason-error", "Error:").await;
    run.check_showing("cancel-reason-missing", Some("#cancel-heading"))
        .await;
    run.fill("#cancel-reason", "Patient rang to cancel").await;
    run.click("#cancel").await;
    run.see("#notice", "Booking cancelled").await;
    run.see("#no-bookings", "None yet").await;
    let cancelled = store
        .session_bookings(&session_id)
        .await
        .unwrap()
        .into_iter()
        .find(|b| b.id == made.id)
        .unwrap();
    assert!(
        cancelled.cancelled_at.is_some(),
        "the booking is cancelled in the store"
    );
    run.sign_out().await;

    // ---- the service manager revokes a device and opens the figures ----
    let manager = federation.user("manager.demo");
    run.sign_in(&base, &manager, None).await;
    run.see("#page-title", "Sessions").await;
    run.check("manage-sessions").await;
    run.click("nav a[href='/console/users']").await;
    run.see("#users", "gp.demo").await;
    run.check("users").await;
    run.click("nav a[href='/console/devices']").await;
    run.see(".device-name", "Hub laptop").await;
    run.check("devices").await;
    let laptop = store
        .devices()
        .await
        .unwrap()
        .into_iter()
        .find(|d| d.name == "Hub laptop (demo history)")
        .unwrap();
    wait_for(&run.client, "#revoke-device")
        .await
        .unwrap()
        .select_by_value(&laptop.id)
        .await
        .unwrap();
    run.fill("#revoke-reason", "Lost on a home visit").await;
    run.click("#revoke").await;
    run.see("#notice", "Device revoked").await;
    run.see(".device-status", "revoked").await;
    run.check("device-revoked").await;
    let device = store
        .devices()
        .await
        .unwrap()
        .into_iter()
        .find(|d| d.name == "Hub laptop (demo history)")
        .unwrap();
    assert!(
        device.revoked_at.is_some(),
        "the device is revoked in the store"
    );

    run.click("nav a[href='/console/figures']").await;
    run.see("#chart-seen", "").await;
    let rows = doorstep_server::figures::figures(
        store.as_ref(),
        Some(doorstep_server::demo::HUB_SERVICE),
        None,
        None,
        Utc::now().date_naive(),
    )
    .await
    .unwrap();
    let mut weeks: Vec<&str> = rows.iter().map(|r| r.week.as_str()).collect();
    weeks.dedup();
    assert!(!weeks.is_empty(), "the demo week has figures");
    if let Err(why) = count(&run.client, "#chart-seen rect.bar", weeks.len()).await {
        panic!("patients-seen chart: {why}");
    }
    count(&run.client, "#chart-notes rect.bar", 2 * weeks.len())
        .await
        .unwrap();
    count(&run.client, "#table-seen tbody tr", weeks.len())
        .await
        .unwrap();
    // Each bar carries its number, and the table beside it says the same.
    let seen: usize = rows.iter().map(|r| r.patients_seen).sum();
    let mut charted = 0;
    for bar in run
        .client
        .find_all(Locator::Css("#chart-seen rect.bar"))
        .await
        .unwrap()
    {
        charted += bar
            .attr("data-value")
            .await
            .unwrap()
            .unwrap()
            .parse::<usize>()
            .unwrap();
    }
    assert_eq!(
        charted, seen,
        "the chart's bars add up to the patients seen"
    );
    run.see("#figures", "Riverside").await;
    run.check_showing("figures", Some("#charts-heading")).await;
    run.sign_out().await;

    // ---- the team leader's caseload, the privacy officer's access report ----
    let lead = federation.user("lead.demo");
    run.sign_in(&base, &lead, None).await;
    run.see("#caseload-summary", "patients on the caseload")
        .await;
    run.check("caseload").await;
    run.sign_out().await;

    // A paramedic breaks the glass for the booked patient (the rule itself, as the API's
    // route calls it): an alert for the privacy officer.
    let para = store.user_by_username("para.demo").await.unwrap().unwrap();
    let scope = doorstep_server::pull::user_scope(store.as_ref(), &para)
        .await
        .unwrap();
    doorstep_server::breakglass::grant(
        store.as_ref(),
        &para,
        &scope,
        &patient.id,
        doorstep_protocol::BreakGlassReason::PatientUnconscious,
        None,
        Utc::now(),
    )
    .await
    .expect("break the glass");

    let privacy = federation.user("privacy.demo");
    run.sign_in(&base, &privacy, None).await;
    run.see("#page-title", "Break-glass alerts").await;
    run.see(".alert", &shown_nhs).await;
    run.check("alerts").await;
    // Acknowledging needs a note: first without, the message by the field.
    run.click("button.ack").await;
    run.see(".alert .error", "Error:").await;
    run.check_showing("alert-note-missing", Some(".alert"))
        .await;
    run.fill(
        ".alert input[name='note']",
        "Checked with the crew: unconscious at the scene",
    )
    .await;
    run.click("button.ack").await;
    run.see("#notice", "Alert acknowledged").await;
    run.see("#no-alerts", "No open alerts").await;
    let acked = doorstep_server::breakglass::alert_reports(store.as_ref(), false)
        .await
        .unwrap();
    let ack = acked[0].acknowledged.as_ref().expect("acknowledged");
    assert_eq!(ack.by, "user:privacy.demo");
    assert_eq!(ack.note, "Checked with the crew: unconscious at the scene");
    run.click("nav a[href='/console/access']").await;
    run.fill("#nhs_number", &patient.nhs_number).await;
    run.click("#report").await;
    run.see("#report-summary", &shown_nhs).await;
    run.check("access-report").await;
    run.sign_out().await;

    let _ = run.client.clone().close().await;
    drop(driver);
    eprintln!(
        "console: {} pages checked at {} sizes in {} schemes in {:.1} s, {} violations",
        run.pages,
        SIZES.len(),
        SCHEMES.len(),
        started.elapsed().as_secs_f64(),
        run.violations.len()
    );
    assert!(
        run.violations.is_empty(),
        "{} WCAG 2.2 AA violations:\n{}",
        run.violations.len(),
        run.violations.join("\n")
    );
}
