//! The `doorstep-server` binary: the `serve` start line, plain HTTP refused off loopback, and
//! `import` whole-or-nothing with an error naming the entry and the element.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_doorstep-server"));
    c.env("RUST_LOG", "warn");
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
    assert!(dir.path().join("cursor-key").exists());
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
