//! The `doorstep` binary end to end: a small demo federation served over HTTPS in this process,
//! and the built binary run as a child process for enrol, sync, list, show and status, the way
//! a support person or a script would.

use doorstep_testkit::totp_code;
use std::path::Path;
use std::process::Output;

use chrono::Utc;
use doorstep_server::demo::{DemoSpec, read_demo_users, seed_with};
use doorstep_server::run::{ServeConfig, TlsMode, start};

const PIN: &str = "135790";

/// Run the built `doorstep` with `args`, the PIN in the environment, off the async threads.
async fn doorstep(data_dir: &Path, args: &[&str]) -> Output {
    doorstep_with(data_dir, args, "", None).await
}

/// As [`doorstep`], with `input` on its standard input (for `--password-stdin`).
async fn doorstep_with_stdin(data_dir: &Path, args: &[&str], input: &str) -> Output {
    doorstep_with(data_dir, args, input, None).await
}

/// As [`doorstep`], with `input` on standard input and `password` in `DOORSTEP_PASSWORD`.
async fn doorstep_with(
    data_dir: &Path,
    args: &[&str],
    input: &str,
    password: Option<&str>,
) -> Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_doorstep"));
    cmd.args(args)
        .env("DOORSTEP_DATA_DIR", data_dir)
        .env("DOORSTEP_PIN", PIN)
        .env_remove("DOORSTEP_PASSWORD")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(p) = password {
        cmd.env("DOORSTEP_PASSWORD", p);
    }
    let input = input.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut child = cmd.spawn().expect("run doorstep");
        let mut stdin = child.stdin.take().unwrap();
        // A command that does not read it may have exited already.
        let _ = stdin.write_all(input.as_bytes());
        drop(stdin);
        child.wait_with_output().expect("doorstep's output")
    })
    .await
    .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrol_sync_list_show_status() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let server_dir = tempfile::tempdir().unwrap();
    let spec = DemoSpec::small(11, Utc::now().date_naive());
    seed_with(server_dir.path(), &spec).expect("seed");
    let users = read_demo_users(server_dir.path()).expect("demo users");
    let nurse = users
        .iter()
        .find(|u| u.username == "nurse.demo")
        .expect("nurse.demo")
        .clone();
    let mut config = ServeConfig::new(server_dir.path());
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.tls = TlsMode::Dev;
    let server = start(config).await.expect("server");
    let device_dir = tempfile::tempdir().unwrap();
    let dir = device_dir.path();
    let ca = server.ca_pem_path.to_string_lossy().into_owned();

    // Nothing works before enrolment, and it says so.
    let o = doorstep(dir, &["list"]).await;
    assert!(!o.status.success());
    assert!(stderr(&o).contains("not enrolled"), "{}", stderr(&o));

    // A plain-http address that is not loopback is refused before any network use.
    let o = doorstep_with_stdin(
        dir,
        &[
            "enrol",
            "--server",
            "http://fed.example",
            "--user",
            "u",
            "--password-stdin",
            "--totp",
            "123456",
        ],
        "p\n",
    )
    .await;
    assert!(!o.status.success());
    assert!(stderr(&o).contains("https://"), "{}", stderr(&o));

    // A password on the command line is refused, with what to do instead, before any
    // network use; so is no password at all when there is no terminal to prompt on.
    let enrol_args = |password: &[&'static str]| {
        let mut args = vec![
            "enrol".to_owned(),
            "--server".into(),
            server.base_url.clone(),
            "--ca".into(),
            ca.clone(),
            "--user".into(),
            nurse.username.clone(),
            "--totp".into(),
            totp_code(&nurse.totp_secret, 0),
            "--data-dir".into(),
            dir.to_string_lossy().into_owned(),
        ];
        args.extend(password.iter().map(|a| a.to_string()));
        args
    };
    for refused in [&["--password", "hunter2"][..], &["--password"][..]] {
        let args = enrol_args(refused);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = doorstep(dir, &args).await;
        assert!(!o.status.success());
        let err = stderr(&o);
        assert!(
            err.contains("--password is not accepted")
                && err.contains("--password-stdin")
                && err.contains("DOORSTEP_PASSWORD"),
            "{err}"
        );
        assert!(!err.contains("hunter2"), "{err}");
    }
    let args = enrol_args(&[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = doorstep(dir, &args).await;
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--password-stdin"), "{}", stderr(&o));
    assert!(!dir.join("device.json").exists());

    let args = enrol_args(&["--password-stdin"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = doorstep_with_stdin(dir, &args, &format!("{}\n", nurse.password)).await;
    assert!(o.status.success(), "enrol failed: {}", stderr(&o));
    assert!(stdout(&o).contains(&nurse.display_name), "{}", stdout(&o));

    let o = doorstep(dir, &["sync", "--json"]).await;
    assert!(o.status.success(), "sync failed: {}", stderr(&o));
    let report: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let patients = report["patients"].as_u64().unwrap();
    assert_eq!(patients, spec.caseload as u64, "{report}");

    // The human list: a header and one line per patient.
    let o = doorstep(dir, &["list"]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    let table = stdout(&o);
    assert!(
        table.contains("NHS number") && table.contains("Name"),
        "{table}"
    );
    assert!(table.contains(&format!("{patients} patient(s)")), "{table}");

    let o = doorstep(dir, &["list", "--json"]).await;
    let rows: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len() as u64, patients);
    let first = &rows[0];
    let nhs = first["nhs_number"].as_str().unwrap();
    let spaced = first["nhs_number_display"].as_str().unwrap();
    let name = first["name"].as_str().unwrap();

    // Search by NHS number with spaces.
    let o = doorstep(dir, &["list", "--search", spaced]).await;
    assert!(o.status.success());
    assert!(stdout(&o).contains(name), "{}", stdout(&o));
    assert!(
        stdout(&o).lines().any(|l| l == "1 patient(s)"),
        "{}",
        stdout(&o)
    );

    // Show: a banner and sections; --json the app's PatientRecord.
    let o = doorstep(dir, &["show", spaced]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains(name), "{text}");
    assert!(text.contains(&format!("NHS {spaced}")), "{text}");
    for section in [
        "ALLERGIES:",
        "== Problems (active) ==",
        "== Medications (current) ==",
    ] {
        assert!(text.contains(section), "{section} missing in:\n{text}");
    }
    let o = doorstep(dir, &["show", nhs, "--json"]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    let record: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(record["view"]["patient"]["nhs_number"], nhs);
    assert!(record["as_of"].is_string());
    assert!(record["withheld"].is_array());

    // A bad NHS number says why.
    let o = doorstep(dir, &["show", "999 000 0001"]).await;
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("not a valid NHS number") && stderr(&o).contains("check digit"),
        "{}",
        stderr(&o)
    );
    let o = doorstep(dir, &["show", "12345"]).await;
    assert!(stderr(&o).contains("10 digits"), "{}", stderr(&o));

    // A wrong PIN is refused as such.
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_doorstep"));
    cmd.args(["list"])
        .env("DOORSTEP_DATA_DIR", dir)
        .env("DOORSTEP_PIN", "000000");
    let o = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("Wrong PIN"), "{}", stderr(&o));

    let o = doorstep(dir, &["status"]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("Reachable:    yes"), "{text}");
    assert!(
        text.contains(&format!("Patients:     {patients}")),
        "{text}"
    );

    // Server gone: status says so, and records still open.
    server.shutdown().await;
    let o = doorstep(dir, &["status", "--json"]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    let status: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(status["server_reachable"], false);
    assert!(status["last_synced"].is_string());
    let o = doorstep(dir, &["show", nhs]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains(name));

    // Offline, a note is signed and waits; what could never be accepted is refused here.
    let o = doorstep(
        dir,
        &[
            "note",
            spaced,
            "--text",
            "Wound redressed; healing.",
            "--vitals",
            r#"{"rr":21,"spo2":95,"scale":1,"o2":false,"sbp":118,"pulse":92,"acvpu":"A","temp":37.4}"#,
            "--problem",
            "399912005",
        ],
    )
    .await;
    assert!(o.status.success(), "{}", stderr(&o));
    // RR 21 scores 2, SpO2 95 scores 1, pulse 92 scores 1: NEWS2 4, a complete set.
    assert!(stdout(&o).contains("NEWS2 4 ("), "{}", stdout(&o));
    assert!(stdout(&o).contains("waiting"), "{}", stdout(&o));
    let o = doorstep(dir, &["note", spaced, "--vitals", r#"{"rr":0}"#]).await;
    assert!(!o.status.success());
    assert!(stderr(&o).contains("respiratory rate"), "{}", stderr(&o));
    let o = doorstep(dir, &["note", spaced, "--problem", "12345"]).await;
    assert!(stderr(&o).contains("pick list"), "{}", stderr(&o));
    let o = doorstep(dir, &["notes", spaced]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).lines().count(), 1, "{}", stdout(&o));
    assert!(stdout(&o).contains("Pressure ulcer"), "{}", stdout(&o));
    let o = doorstep(dir, &["status"]).await;
    assert!(stdout(&o).contains("waiting: 1"), "{}", stdout(&o));
    // A sync with the server gone keeps it waiting and says why it did not go.
    let o = doorstep(dir, &["sync"]).await;
    assert!(!o.status.success());
    let o = doorstep(dir, &["status", "--json"]).await;
    let status: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(status["waiting"], 1);
    assert!(status["last_push_error"].is_string(), "{status}");
}

/// A note from `doorstep note` to the practice (`doorstep practice`, the public API with the
/// practice's own credential) and back: the device's `doorstep notes` says where it was filed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_note_goes_to_the_practice_and_its_filing_comes_back() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let server_dir = tempfile::tempdir().unwrap();
    let spec = DemoSpec::small(12, Utc::now().date_naive());
    seed_with(server_dir.path(), &spec).expect("seed");
    let users = read_demo_users(server_dir.path()).expect("demo users");
    let nurse = users
        .iter()
        .find(|u| u.username == "nurse.demo")
        .unwrap()
        .clone();
    let mut config = ServeConfig::new(server_dir.path());
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.tls = TlsMode::Dev;
    let server = start(config).await.expect("server");
    let device_dir = tempfile::tempdir().unwrap();
    let dir = device_dir.path();
    let ca = server.ca_pem_path.to_string_lossy().into_owned();
    let o = doorstep_with(
        dir,
        &[
            "enrol",
            "--server",
            &server.base_url,
            "--ca",
            &ca,
            "--user",
            &nurse.username,
            "--totp",
            &totp_code(&nurse.totp_secret, 0),
        ],
        "",
        Some(&nurse.password),
    )
    .await;
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(doorstep(dir, &["sync"]).await.status.success());
    let rows: serde_json::Value =
        serde_json::from_str(&stdout(&doorstep(dir, &["list", "--json"]).await)).unwrap();
    let nhs = rows[0]["nhs_number"].as_str().unwrap().to_owned();
    let patient_id = rows[0]["patient_id"].as_str().unwrap().to_owned();
    let o = doorstep(dir, &["note", &nhs, "--text", "Seen at home.", "--json"]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    let note: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let note_id = note["id"].as_str().unwrap().to_owned();
    assert!(doorstep(dir, &["sync"]).await.status.success());
    assert!(stdout(&doorstep(dir, &["notes", &nhs]).await).contains("accepted"));

    let store = doorstep_server::store::open(&doorstep_server::store::DatabaseUrl::in_data_dir(
        server_dir.path(),
    ))
    .await
    .unwrap();
    let practice = store
        .patient(&patient_id)
        .await
        .unwrap()
        .unwrap()
        .practice_ods;
    let secret =
        doorstep_server::auth::issue_source_secret(store.as_ref(), &practice, "test", Utc::now())
            .await
            .unwrap();
    let practice_cmd = |args: &[&str], secret: &str| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_doorstep"));
        cmd.args([
            "practice",
            "--server",
            &server.base_url,
            "--ca",
            &ca,
            "--practice",
        ])
        .arg(&practice)
        .args(args)
        .env("DOORSTEP_PRACTICE_SECRET", secret)
        .env_remove("DOORSTEP_DATA_DIR");
        cmd
    };
    let run = |mut cmd: std::process::Command| async move {
        tokio::task::spawn_blocking(move || cmd.output().unwrap())
            .await
            .unwrap()
    };
    let o = run(practice_cmd(&["inbox"], &secret)).await;
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains(&note_id), "{}", stdout(&o));
    let o = run(practice_cmd(&["inbox"], "dps_wrong")).await;
    assert!(!o.status.success());
    assert!(stderr(&o).contains("401"), "{}", stderr(&o));
    let o = run(practice_cmd(
        &[
            "ack",
            "00000000-0000-4000-8000-000000000000",
            "--status",
            "filed",
        ],
        &secret,
    ))
    .await;
    assert!(!o.status.success(), "an unknown note is refused");
    let o = run(practice_cmd(
        &["ack", &note_id, "--status", "filed"],
        &secret,
    ))
    .await;
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("acknowledged"), "{}", stdout(&o));

    assert!(doorstep(dir, &["sync"]).await.status.success());
    let o = doorstep(dir, &["notes", &nhs]).await;
    assert!(stdout(&o).contains("filed at"), "{}", stdout(&o));
    assert!(stdout(&o).contains(&practice), "{}", stdout(&o));
    server.shutdown().await;
}
