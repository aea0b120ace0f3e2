//! Every access accountable, on SQLite and on PostgreSQL.
//!
//! - `audit verify` on a copy of the database: intact, it says so and names the signed
//!   checkpoint that held; a modified, deleted, inserted or reordered event, and a cut tail, are
//!   each refused naming the first bad event.
//! - Break-glass over real HTTPS: nothing found without a reason; an exact search finds the
//!   patient; breaking the glass brings them (a patient who dissented, too) to the nurse's
//!   device marked as break-glass, raises an alert naming who, whom, why and what reached the
//!   device, lists them in the patient's access report (JSON and the patient's HTML page),
//!   and the alert can be acknowledged once; a service whose agreement forbids emergency
//!   access is refused, and the refusal audited.

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;
use chrono::Utc;
use doorstep_protocol::{
    ApiError, BreakGlassGranted, BreakGlassMatches, Change, ListKind, PullPage,
};
use doorstep_server::demo::{self, DemoSpec};
use doorstep_server::run::{ServeConfig, TlsMode, start};
use doorstep_server::{auth, store};
use doorstep_testkit::http::{enrol_for_token, https_client};
use serde_json::{Value, json};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_doorstep-server"));
    c.env("RUST_LOG", "warn")
        .env("USER", "privacy")
        .env_remove("DOORSTEP_DATA_DIR")
        .env_remove("DOORSTEP_DATABASE_URL");
    c
}

/// Run the server binary; (succeeded, stdout, stderr).
fn run(args: &[&str]) -> (bool, String, String) {
    let out = bin().args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn seed(dir: &Path, database: &store::DatabaseUrl) {
    demo::seed_with_database(dir, database, &DemoSpec::small(7, Utc::now().date_naive())).unwrap();
}

/// How each tampering is made (the same SQL on both backends, the append-only triggers off),
/// and the event `audit verify` must name.
const TAMPERINGS: &[(&str, &str, i64)] = &[
    (
        "modified",
        "UPDATE audit SET actor = 'user:someone-else' WHERE seq = 3",
        3,
    ),
    ("deleted", "DELETE FROM audit WHERE seq = 3", 4),
    (
        "inserted",
        "UPDATE audit SET seq = seq + 1000 WHERE seq >= 3;
         UPDATE audit SET seq = seq - 999 WHERE seq >= 1003;
         INSERT INTO audit (seq, at, actor, action, patient_id, detail, prev_hash, hash)
           SELECT 3, at, 'user:intruder', 'pull', NULL, '{}', hash, hash FROM audit WHERE seq = 2",
        3,
    ),
    (
        "reordered",
        "UPDATE audit SET seq = -3 WHERE seq = 3;
         UPDATE audit SET seq = 3 WHERE seq = 4;
         UPDATE audit SET seq = 4 WHERE seq = -3",
        3,
    ),
];

/// The tail cut after the checkpoint was signed: the last two events removed.
const CUT_TAIL: &str = "DELETE FROM audit WHERE seq > (SELECT max(seq) - 2 FROM audit)";

fn assert_verify_fails(args: &[&str], seq: i64, what: &str) {
    let (ok, _, err) = run(args);
    assert!(!ok, "{what}: audit verify passed a tampered log");
    assert!(
        err.contains(&format!("breaks at event {seq}")),
        "{what}: expected event {seq} named: {err}"
    );
}

#[test]
fn audit_verify_names_every_tampering_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let original = dir.path().join("original");
    let database = store::DatabaseUrl::in_data_dir(&original);
    seed(&original, &database);
    let data = original.to_str().unwrap();
    let (ok, _, err) = run(&["audit", "checkpoint", "--data-dir", data]);
    assert!(ok, "{err}");
    let (ok, _, err) = run(&["audit", "verify", "--data-dir", data]);
    assert!(ok, "{err}");
    assert!(err.contains("signed checkpoint at event"), "{err}");
    // The old name still works.
    assert!(run(&["verify-audit", "--data-dir", data]).0);

    let copy_with = |name: &str, sql: &str| -> PathBuf {
        let copy = dir.path().join(name);
        std::fs::create_dir_all(&copy).unwrap();
        for entry in std::fs::read_dir(&original).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_file() {
                std::fs::copy(entry.path(), copy.join(entry.file_name())).unwrap();
            }
        }
        let conn = rusqlite::Connection::open(copy.join("federation.db")).unwrap();
        conn.execute_batch(&format!(
            "DROP TRIGGER audit_no_update; DROP TRIGGER audit_no_delete; {sql};"
        ))
        .unwrap();
        copy
    };
    for (what, sql, seq) in TAMPERINGS {
        let copy = copy_with(what, sql);
        assert_verify_fails(
            &["audit", "verify", "--data-dir", copy.to_str().unwrap()],
            *seq,
            what,
        );
    }
    let copy = copy_with("cut", CUT_TAIL);
    let (ok, _, err) = run(&["audit", "verify", "--data-dir", copy.to_str().unwrap()]);
    assert!(!ok, "a cut tail passed");
    assert!(err.contains("the tail was cut"), "{err}");
}

#[test]
fn audit_verify_names_every_tampering_on_postgres() {
    let Some(cluster) = doorstep_testkit::PgCluster::start_or_skip("audit verify on PostgreSQL")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let url = cluster.create_database().unwrap();
    seed(dir.path(), &store::DatabaseUrl::parse(&url).unwrap());
    let data = dir.path().to_str().unwrap();
    let (ok, _, err) = run(&[
        "audit",
        "checkpoint",
        "--data-dir",
        data,
        "--database",
        &url,
    ]);
    assert!(ok, "{err}");
    let (ok, _, err) = run(&["audit", "verify", "--data-dir", data, "--database", &url]);
    assert!(ok, "{err}");
    assert!(err.contains("signed checkpoint at event"), "{err}");

    let original = url.rsplit('/').next().unwrap().to_string();
    let copy_with = |name: &str, sql: &str| -> String {
        let copy = format!("{original}_{name}");
        cluster
            .psql(&format!("CREATE DATABASE {copy} TEMPLATE {original}"))
            .unwrap();
        cluster
            .psql_in(
                &copy,
                &format!("ALTER TABLE audit DISABLE TRIGGER USER; {sql}"),
            )
            .unwrap();
        url.replace(&original, &copy)
    };
    for (what, sql, seq) in TAMPERINGS {
        let copy = copy_with(what, sql);
        assert_verify_fails(
            &["audit", "verify", "--data-dir", data, "--database", &copy],
            *seq,
            what,
        );
    }
    let copy = copy_with("cut", CUT_TAIL);
    let (ok, _, err) = run(&["audit", "verify", "--data-dir", data, "--database", &copy]);
    assert!(!ok, "a cut tail passed");
    assert!(err.contains("the tail was cut"), "{err}");
}

fn basic(id: &str, secret: &str) -> String {
    let raw = format!("{id}:{secret}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

async fn pull_all(http: &reqwest::Client, base: &str, token: &str) -> Vec<Change> {
    let mut changes = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..200 {
        let url = match &cursor {
            Some(c) => format!("{base}/api/v1/sync/pull?cursor={c}"),
            None => format!("{base}/api/v1/sync/pull"),
        };
        let page: PullPage = http
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap()
            .json()
            .await
            .unwrap();
        // The demo's agreements lock an idle device after 5 minutes and allow 72 h offline or
        // less: every page says the strictest of the user's.
        assert_eq!(page.idle_lock_minutes, Some(5));
        assert!(page.max_offline_hours.is_some_and(|h| h <= 72));
        // And a record out of date after a day or less, before it stops being shown.
        assert!(
            page.stale_after_hours
                .is_some_and(|h| h <= 24 && page.max_offline_hours.is_some_and(|m| h <= m))
        );
        changes.extend(page.changes);
        cursor = Some(page.cursor);
        if !page.more {
            return changes;
        }
    }
    panic!("the pull did not finish");
}

fn added_ids(changes: &[Change]) -> Vec<String> {
    changes
        .iter()
        .filter_map(|c| match c {
            Change::PatientAdded { patient, .. } => Some(patient.patient_id.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn break_glass_over_https_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let database = store::DatabaseUrl::in_data_dir(dir.path());
    break_glass(dir.path(), database).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn break_glass_over_https_on_postgres() {
    let Some(cluster) = doorstep_testkit::PgCluster::start_or_skip("break-glass on PostgreSQL")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let database = store::DatabaseUrl::parse(&cluster.create_database().unwrap()).unwrap();
    break_glass(dir.path(), database).await;
}

async fn break_glass(dir: &Path, database: store::DatabaseUrl) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    {
        let (data, database) = (dir.to_path_buf(), database.clone());
        tokio::task::spawn_blocking(move || seed(&data, &database))
            .await
            .unwrap();
    }
    let users = demo::read_demo_users(dir).unwrap();
    let who = |name: &str| users.iter().find(|u| u.username == name).unwrap().clone();
    let store = store::open(&database).await.unwrap();
    let admin = basic(
        "ada",
        &auth::issue_admin_secret(store.as_ref(), "ada", "cli:test", Utc::now())
            .await
            .unwrap(),
    );
    let server = start(ServeConfig {
        database: Some(database.clone()),
        listen: "127.0.0.1:0".parse().unwrap(),
        tls: TlsMode::Dev,
        ..ServeConfig::new(dir.to_path_buf())
    })
    .await
    .unwrap();
    let base = server.base_url.clone();
    let http = https_client(&server.ca_pem_path);
    let nurse = who("nurse.demo");
    let token = enrol_for_token(
        &http,
        &base,
        &nurse.username,
        &nurse.password,
        &nurse.totp_secret,
    )
    .await;
    let on_list = added_ids(&pull_all(&http, &base, &token).await);

    // A patient of a covered practice who is not on the nurse's list, and who dissented.
    let patients = store.patients().await.unwrap();
    let dn = store.agreement("riverside-dn-2026").await.unwrap().unwrap();
    let target = patients
        .iter()
        .find(|p| !on_list.contains(&p.id) && dn.practices.contains(&p.practice_ods))
        .unwrap()
        .clone();
    store.set_dissent(&target.id, true).await.unwrap();

    // No reason: nothing found.
    let response = http
        .post(format!("{base}/api/v1/break-glass/search"))
        .bearer_auth(&token)
        .json(&json!({ "nhs_number": target.nhs_number }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400, "a search without a reason");
    // "Other" without words: refused naming the field.
    let response = http
        .post(format!("{base}/api/v1/break-glass/search"))
        .bearer_auth(&token)
        .json(&json!({ "nhs_number": target.nhs_number, "reason": "other" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    let e: ApiError = response.json().await.unwrap();
    assert!(e.message.starts_with("reason_text:"), "{}", e.message);

    // By NHS number, and by family name with date of birth: exactly the patient.
    let search = |body: Value| {
        let (http, base, token) = (http.clone(), base.clone(), token.clone());
        async move {
            http.post(format!("{base}/api/v1/break-glass/search"))
                .bearer_auth(&token)
                .json(&body)
                .send()
                .await
                .unwrap()
        }
    };
    let found: BreakGlassMatches = search(json!({
        "nhs_number": target.nhs_number, "reason": "patient_unconscious"
    }))
    .await
    .error_for_status()
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(found.matches.len(), 1);
    assert_eq!(found.matches[0].patient_id, target.id);
    let family = found.matches[0]
        .name
        .split(',')
        .next()
        .unwrap()
        .to_lowercase();
    let by_name: BreakGlassMatches = search(json!({
        "family": family, "birth_date": target.birth_date, "reason": "emergency_treatment"
    }))
    .await
    .error_for_status()
    .unwrap()
    .json()
    .await
    .unwrap();
    assert!(by_name.matches.iter().any(|m| m.patient_id == target.id));
    assert!(by_name.matches.len() <= 5);

    // Break the glass: on the device at the next pull, marked as break-glass.
    let granted: BreakGlassGranted = http
        .post(format!("{base}/api/v1/break-glass"))
        .bearer_auth(&token)
        .json(&json!({
            "patient_id": target.id, "reason": "patient_unconscious",
            "reason_text": "found collapsed at home"
        }))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    let hours = (granted.ends_at - Utc::now()).num_minutes();
    assert!((23 * 60..=24 * 60).contains(&hours), "{hours} minutes");
    let changes = pull_all(&http, &base, &token).await;
    let entry = changes
        .iter()
        .find_map(|c| match c {
            Change::PatientAdded {
                patient, entries, ..
            } if patient.patient_id == target.id => Some(entries.clone()),
            _ => None,
        })
        .expect("the patient reaches the device although they dissented");
    assert!(entry.iter().any(|e| e.kind == ListKind::BreakGlass
        && e.reason.contains("found collapsed at home")
        && e.ends_at == Some(granted.ends_at)));

    // The alert names who, whom, why, and what reached the device under it.
    let alerts: Value = http
        .get(format!("{base}/api/v1/admin/alerts"))
        .header("authorization", &admin)
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    let alert = alerts
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == granted.alert_id)
        .unwrap()
        .clone();
    assert_eq!(alert["patient_id"], target.id.as_str());
    assert_eq!(alert["nhs_number"], target.nhs_number.as_str());
    assert!(alert["who"].as_str().unwrap().contains("nurse.demo"));
    assert_eq!(alert["why"], "patient unconscious: found collapsed at home");
    assert!(
        alert["opened"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["action"] == "record_sent"),
        "{alert}"
    );
    // A clinician's token cannot read the alerts.
    let response = http
        .get(format!("{base}/api/v1/admin/alerts"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert!(matches!(response.status().as_u16(), 401 | 403));

    // The access report: the break-glass and the record sent under it.
    let report: Value = http
        .get(format!(
            "{base}/api/v1/admin/audit/patients/{}",
            target.nhs_number
        ))
        .header("authorization", &admin)
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    let accesses = report["accesses"].as_array().unwrap();
    assert!(accesses.iter().any(|a| a["action"] == "break_glass"
        && a["break_glass"] == "patient unconscious: found collapsed at home"));
    let sent = accesses
        .iter()
        .find(|a| a["action"] == "record_sent")
        .expect("the pull that carried the record is in the report");
    assert!(
        sent["who"].as_str().unwrap().contains("Nia Evans"),
        "{sent}"
    );
    assert!(sent["device_id"].is_string());
    assert_eq!(
        sent["break_glass"],
        "patient unconscious: found collapsed at home"
    );
    let page = http
        .get(format!(
            "{base}/api/v1/admin/audit/patients/{}?format=html",
            target.nhs_number
        ))
        .header("authorization", &admin)
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Who has accessed your record"));
    assert!(page.contains("Emergency access. Reason given: patient unconscious"));
    // A patient on the list has their pulls reported too, under the agreement.
    let listed = &on_list[0];
    let listed_nhs = store.patient(listed).await.unwrap().unwrap().nhs_number;
    let report: Value = http
        .get(format!("{base}/api/v1/admin/audit/patients/{listed_nhs}"))
        .header("authorization", &admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        report["accesses"].as_array().unwrap().iter().any(
            |a| a["action"] == "record_sent" && a["agreements"] == json!(["riverside-dn-2026"])
        ),
        "{report}"
    );

    // Acknowledged once, with a note.
    let ack = |note: &str| {
        let (http, base, admin, note) =
            (http.clone(), base.clone(), admin.clone(), note.to_string());
        async move {
            http.post(format!(
                "{base}/api/v1/admin/alerts/{}/ack",
                granted.alert_id
            ))
            .header("authorization", &admin)
            .json(&json!({ "note": note }))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
        }
    };
    assert_eq!(ack("").await, 422);
    assert_eq!(ack("checked with the team leader: appropriate").await, 200);
    assert_eq!(ack("again").await, 422);

    // The podiatry agreement forbids emergency access: refused, and the refusal audited.
    let podiatrist = who("podiatrist.demo");
    let pod_token = enrol_for_token(
        &http,
        &base,
        &podiatrist.username,
        &podiatrist.password,
        &podiatrist.totp_secret,
    )
    .await;
    let response = http
        .post(format!("{base}/api/v1/break-glass/search"))
        .bearer_auth(&pod_token)
        .json(&json!({ "nhs_number": target.nhs_number, "reason": "emergency_treatment" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let e: ApiError = response.json().await.unwrap();
    assert_eq!(e.code, "emergency_access_not_allowed");
    let rows = store.audit_rows().await.unwrap();
    assert!(rows.iter().any(
        |r| r.event.action == "break_glass_refused" && r.event.actor == "user:podiatrist.demo"
    ));
    server.shutdown().await;

    // The shutdown signed the chain's head, and the log verifies against it.
    let checkpoint = store.latest_audit_checkpoint().await.unwrap().unwrap();
    assert_eq!(
        checkpoint.seq,
        store.audit_rows().await.unwrap().len() as i64
    );
}
