//! The `doorstep-server` binary: the `serve` start line, plain HTTP refused off loopback,
//! `import` whole-or-nothing with an error naming the entry and the element, and `--database`
//! (or `DOORSTEP_DATABASE_URL`) choosing the store of every command.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_doorstep-server"));
    c.env("RUST_LOG", "warn")
        .env_remove("DOORSTEP_DATA_DIR")
        .env_remove("DOORSTEP_DATABASE_URL");
    c
}

#[test]
fn serve_prints_one_line_with_the_https_url() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = bin()
        .args([
            "serve",
            "--dev-tls",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let url = line
        .trim_end()
        .strip_prefix("doorstep-server listening on https://127.0.0.1:")
        .unwrap_or_else(|| panic!("unexpected start line {line:?}"));
    assert!(url.parse::<u16>().unwrap() > 0);
    assert!(dir.path().join("dev-ca.pem").exists());
    // The cursor key is the federation's: in the database, not the data directory.
    assert!(!dir.path().join("cursor-key").exists());
}

#[test]
fn plain_http_off_loopback_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = bin()
        .args([
            "serve",
            "--insecure-loopback-http",
            "--listen",
            "0.0.0.0:0",
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"));
}

#[test]
fn a_refresh_token_outliving_its_sign_in_is_refused_at_serve() {
    let dir = tempfile::tempdir().unwrap();
    let out = bin()
        .args([
            "serve",
            "--dev-tls",
            "--listen",
            "127.0.0.1:0",
            "--session-days",
            "10",
            "--refresh-idle-days",
            "14",
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--refresh-idle-days (14) is longer than --session-days (10)"),
        "{err}"
    );
}

#[test]
fn rejected_bundle_imports_nothing_and_names_entry_and_element() {
    let dir = tempfile::tempdir().unwrap();
    let good_patient = serde_json::json!({
        "resourceType": "Patient", "id": "pat-1",
        "identifier": [{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9990000026"}],
        "name": [{"family": "Evans", "given": ["Siân"]}],
        "generalPractitioner": [{"identifier": {"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": "A81001"}, "display": "Riverside Surgery"}]
    });
    let bad = serde_json::json!({
        "resourceType": "Bundle", "type": "collection",
        "entry": [
            {"resource": good_patient},
            {"resource": {"resourceType": "Condition", "id": "c1",
              "subject": {"reference": "Patient/pat-1"},
              "code": {"coding": [{"code": "44054006"}]}}}
        ]
    });
    let file = dir.path().join("bad.json");
    std::fs::write(&file, bad.to_string()).unwrap();
    let data = dir.path().join("data");
    let out = bin()
        .args(["import", "--data-dir"])
        .arg(&data)
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("entry 1"), "{stderr}");
    assert!(stderr.contains("code.coding[0].system"), "{stderr}");

    // Nothing of it was stored: the valid patient is not there either.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let store = runtime
        .block_on(doorstep_server::store::open(
            &doorstep_server::store::DatabaseUrl::in_data_dir(&data),
        ))
        .unwrap();
    assert!(runtime.block_on(store.patients()).unwrap().is_empty());

    // The good half alone imports.
    let good = serde_json::json!({
        "resourceType": "Bundle", "type": "collection",
        "entry": [{"resource": good_patient}]
    });
    std::fs::write(&file, good.to_string()).unwrap();
    let out = bin()
        .args(["import", "--data-dir"])
        .arg(&data)
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(runtime.block_on(store.patients()).unwrap().len(), 1);
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A bundle of one valid patient registered at A81001.
fn one_patient_bundle() -> String {
    serde_json::json!({
        "resourceType": "Bundle", "type": "collection",
        "entry": [{"resource": {
            "resourceType": "Patient", "id": "pat-1",
            "identifier": [{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9990000026"}],
            "generalPractitioner": [{"identifier": {"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": "A81001"}, "display": "Riverside Surgery"}]
        }}]
    })
    .to_string()
}

#[test]
fn database_url_picks_the_store_of_import_and_verify_audit() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bundle.json");
    std::fs::write(&file, one_patient_bundle()).unwrap();
    let db = dir.path().join("elsewhere/fed.db");
    let url = format!("sqlite:{}", db.display());

    // --database alone: no --data-dir needed, and the file is made (with its directory).
    let out = bin()
        .args(["import", "--database", &url])
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("1 patient(s)"),
        "{}",
        stderr_of(&out)
    );
    assert!(db.exists());

    // The environment variable names the same store; the data directory is then unused.
    let data = dir.path().join("data");
    let out = bin()
        .args(["verify-audit", "--data-dir"])
        .arg(&data)
        .env("DOORSTEP_DATABASE_URL", &url)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("the audit log is intact: 1 events"),
        "{}",
        stderr_of(&out)
    );
    assert!(!data.join("federation.db").exists());

    // Without --database, --data-dir's own store: empty, so no events.
    let out = bin()
        .args(["verify-audit", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("intact: 0 events"),
        "{}",
        stderr_of(&out)
    );
    assert!(data.join("federation.db").exists());

    // Neither: a clear error.
    let out = bin().arg("verify-audit").output().unwrap();
    assert!(!out.status.success());
    assert!(
        stderr_of(&out).contains("give --data-dir DIR or --database URL"),
        "{}",
        stderr_of(&out)
    );
}

#[test]
fn serve_opens_the_database_url_and_keeps_tls_material_in_the_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let db = dir.path().join("db/fed.db");
    let mut child = bin()
        .args([
            "serve",
            "--dev-tls",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(&data)
        .arg("--database")
        .arg(format!("sqlite://{}", db.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        line.starts_with("doorstep-server listening on https://127.0.0.1:"),
        "{line:?}"
    );
    assert!(db.exists());
    assert!(!data.join("federation.db").exists());
    assert!(!data.join("cursor-key").exists() && data.join("dev-ca.pem").exists());
}

/// Runs `serve` until its start line; answers the line and the exit-less child (killed).
fn serve_line(args: &[&str]) -> (String, String) {
    let mut child = bin()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    (line, stderr_of(&out))
}

#[test]
fn every_command_works_on_a_postgres_url() {
    let Some(cluster) = doorstep_testkit::PgCluster::start_or_skip("cli on PostgreSQL") else {
        return;
    };
    let url = cluster.create_database().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();

    let out = bin()
        .args(["seed", "--demo", "--data-dir", data, "--database", &url])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("seeded 300 patients"),
        "{}",
        stderr_of(&out)
    );
    assert!(!dir.path().join("data/federation.db").exists());

    let file = dir.path().join("bundle.json");
    std::fs::write(&file, one_patient_bundle()).unwrap();
    let out = bin()
        .args(["import", "--database", &url])
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("1 patient(s)"),
        "{}",
        stderr_of(&out)
    );

    let out = bin()
        .args(["verify-audit"])
        .env("DOORSTEP_DATABASE_URL", &url)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("the audit log is intact"),
        "{}",
        stderr_of(&out)
    );

    let serve = [
        "serve",
        "--dev-tls",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data,
        "--database",
        &url,
    ];
    let (line, stderr) = serve_line(&serve);
    assert!(
        line.starts_with("doorstep-server listening on https://127.0.0.1:"),
        "{line:?} {stderr}"
    );
    let stored = cluster
        .psql_in(
            &url,
            "SELECT count(*) FROM server_keys WHERE name = 'cursor'",
        )
        .unwrap();
    assert_eq!(stored.trim(), "1", "the cursor key is in the database");

    // A database a newer server migrated is refused, naming both versions.
    cluster
        .psql_in(
            &url,
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (99, '0099_future', now())",
        )
        .unwrap();
    let out = bin()
        .args(["verify-audit", "--database", &url])
        .output()
        .unwrap();
    let stderr = stderr_of(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("schema is version 99")
            && stderr.contains(&format!(
                "up to version {}",
                doorstep_server::store::postgres::MIGRATIONS.len()
            )),
        "{stderr}"
    );
    let (line, stderr) = serve_line(&serve);
    assert!(line.is_empty(), "a newer schema must not be served: {line}");
    assert!(stderr.contains("schema is version 99"), "{stderr}");
}

#[test]
fn an_unreachable_postgres_fails_clearly_without_showing_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bundle.json");
    std::fs::write(&file, one_patient_bundle()).unwrap();
    // A free port: nothing listens there.
    let port = doorstep_testkit::free_port();
    let url = format!("postgres://doorstep:s3cret@127.0.0.1:{port}/federation");
    let data = dir.path().to_str().unwrap();
    let file = file.to_str().unwrap();
    for args in [
        vec!["seed", "--demo", "--data-dir", data, "--database", &url],
        vec![
            "serve",
            "--dev-tls",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data,
            "--database",
            &url,
        ],
        vec!["import", "--database", &url, file],
        vec!["verify-audit", "--database", &url],
    ] {
        let out = bin().args(&args).output().unwrap();
        let stderr = stderr_of(&out);
        assert!(!out.status.success(), "{args:?}");
        assert!(
            stderr.contains(&format!(
                "connecting to postgres://***@127.0.0.1:{port}/federation"
            )),
            "{args:?}: {stderr}"
        );
        assert!(
            !stderr.contains("s3cret"),
            "{args:?} shows the password: {stderr}"
        );
    }
    let out = bin()
        .args(["verify-audit", "--database", "mysql://db/fed"])
        .output()
        .unwrap();
    assert!(
        stderr_of(&out).contains("unknown database URL scheme"),
        "{}",
        stderr_of(&out)
    );
}

/// A Synthea fixture of crates/record (US data: no NHS number, no registered practice).
fn synthea(name: &str) -> serde_json::Value {
    // Run time, not compile time: a test binary built in another clone reads this one's.
    let path = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")))
        .join("../crates/record/tests/fixtures/synthea")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// The fixture with only an NHS-number identifier added to its Patient (entry 0).
fn with_nhs_number(mut bundle: serde_json::Value, nhs: &str) -> serde_json::Value {
    bundle["entry"][0]["resource"]["identifier"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"system": "https://fhir.nhs.uk/Id/nhs-number", "value": nhs}));
    bundle
}

#[test]
fn import_as_the_sending_practice_registers_the_patients_its_bundle_registers_nowhere() {
    const DENIS: &str = "Denis399_Schmitt836_63ee2253.json";
    const KASANDRA: &str = "Kasandra729_Shanahan202_bb6a9034.json";
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let import = |bundle: &serde_json::Value, practice: Option<&str>| {
        let file = dir.path().join("bundle.json");
        std::fs::write(&file, bundle.to_string()).unwrap();
        let mut cmd = bin();
        cmd.args(["import", "--data-dir"]).arg(&data).arg(&file);
        if let Some(ods) = practice {
            cmd.args(["--practice", ods]);
        }
        let out = cmd.output().unwrap();
        (out.status.success(), stderr_of(&out))
    };
    // Riverside Surgery (C81001) is a member practice: it has a registered patient.
    let member = serde_json::json!({
        "resourceType": "Bundle", "type": "collection",
        "entry": [{"resource": {
            "resourceType": "Patient", "id": "pat-1",
            "identifier": [{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9990000026"}],
            "generalPractitioner": [{"identifier": {"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": "C81001"}, "display": "Riverside Surgery"}]
        }}]
    });
    let (ok, stderr) = import(&member, None);
    assert!(ok, "{stderr}");
    let numbers: Vec<String> = (999_000_003u64..)
        .filter_map(doorstep_record::nhs::NhsNumber::from_stem)
        .take(2)
        .map(|n| n.digits().to_string())
        .collect();

    // As sent, even from the sending practice: refused for the missing NHS number.
    let (ok, stderr) = import(&synthea(DENIS), Some("C81001"));
    assert!(!ok);
    assert!(
        stderr.contains("entry 0 (Patient/") && stderr.contains("element 'identifier'"),
        "{stderr}"
    );
    assert!(!stderr.contains("generalPractitioner"), "{stderr}");

    // With an NHS number but no sending practice: refused for the registration.
    let denis = with_nhs_number(synthea(DENIS), &numbers[0]);
    let (ok, stderr) = import(&denis, None);
    assert!(!ok);
    assert!(stderr.contains("element 'generalPractitioner'"), "{stderr}");

    // From the sending practice: imported, registered with it, and the summary says so.
    let (ok, stderr) = import(&denis, Some("C81001"));
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains(
            "1 patient had no registered practice in the bundle and was registered with \
             C81001 (Riverside Surgery), the sending practice: \
             Patient/63ee2253-bdd5-da55-2ad2-b4984d0ad700"
        ),
        "{stderr}"
    );

    // Two such patients in one bundle.
    let mut both = denis.clone();
    let kasandra = with_nhs_number(synthea(KASANDRA), &numbers[1]);
    both["entry"]
        .as_array_mut()
        .unwrap()
        .extend(kasandra["entry"].as_array().unwrap().iter().cloned());
    let (ok, stderr) = import(&both, Some("C81001"));
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains(
            "2 patients had no registered practice in the bundle and were registered with \
             C81001 (Riverside Surgery), the sending practice: \
             Patient/63ee2253-bdd5-da55-2ad2-b4984d0ad700, \
             Patient/bb6a9034-2f23-2508-d29d-35efee156dc9"
        ),
        "{stderr}"
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let store = runtime
        .block_on(doorstep_server::store::open(
            &doorstep_server::store::DatabaseUrl::in_data_dir(&data),
        ))
        .unwrap();
    let patients = runtime.block_on(store.patients()).unwrap();
    assert_eq!(patients.len(), 3);
    assert!(patients.iter().all(|p| p.practice_ods == "C81001"));
    // The audit log says whose registration it was.
    let rows = runtime.block_on(store.audit_rows()).unwrap();
    let last = &rows.last().unwrap().event.detail;
    assert_eq!(last["registered_with_sender"]["ods"], "C81001");
}

#[test]
fn seed_writes_the_federation_to_the_database_url_and_the_sign_ins_to_the_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let db = dir.path().join("db/fed.db");
    let out = bin()
        .args(["seed", "--demo", "--data-dir"])
        .arg(&data)
        .env("DOORSTEP_DATABASE_URL", format!("sqlite:{}", db.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(data.join("demo-users.json").exists());
    assert!(!data.join("federation.db").exists());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let store = runtime
        .block_on(doorstep_server::store::open(
            &doorstep_server::store::DatabaseUrl::Sqlite(db),
        ))
        .unwrap();
    assert_eq!(runtime.block_on(store.patients()).unwrap().len(), 300);
    let rows = runtime.block_on(store.audit_rows()).unwrap();
    assert_eq!(doorstep_server::audit::verify(&rows), Ok(rows.len()));
}

#[test]
fn practice_add_prints_a_secret_once_and_a_second_one_replaces_it() {
    let dir = tempfile::tempdir().unwrap();
    let add = || {
        bin()
            .args(["practice", "add", "c81001", "--name", "Riverside Surgery"])
            .arg("--data-dir")
            .arg(dir.path())
            .output()
            .unwrap()
    };
    let secret_of = |out: &std::process::Output| -> String {
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{stdout}{}", stderr_of(out));
        assert!(stdout.contains("client id: C81001"), "{stdout}");
        stdout
            .lines()
            .find_map(|l| l.strip_prefix("client secret: "))
            .unwrap_or_else(|| panic!("no secret in {stdout:?}"))
            .to_string()
    };
    let first = add();
    let one = secret_of(&first);
    assert!(one.starts_with("dps_") && one.len() > 40, "{one}");
    assert!(
        stderr_of(&first).contains("shown this once"),
        "{}",
        stderr_of(&first)
    );
    let second = add();
    let two = secret_of(&second);
    assert_ne!(one, two);
    assert!(
        stderr_of(&second).contains("replaces the previous secret"),
        "{}",
        stderr_of(&second)
    );
    // Only the hash is kept: the secret appears nowhere in the data directory.
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains(&one) && !text.contains(&two));
    }

    let bad = bin()
        .args(["practice", "add", "C81 001", "--name", "Nowhere"])
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(
        stderr_of(&bad).contains("is not an ODS code"),
        "{}",
        stderr_of(&bad)
    );
}
