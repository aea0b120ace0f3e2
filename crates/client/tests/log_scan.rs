//! Nothing of a patient reaches a log, or a file of the device outside its encrypted cache.
//!
//! A small demo federation is served over HTTPS in this process, with every crate logging at
//! `trace` into a buffer (the server's log and the device library's, through one tracing
//! subscriber). A device enrols and syncs through the library and reads the list and every
//! record; a second device does the same through the `doorstep` binary with `DOORSTEP_LOG` and
//! `RUST_LOG` at `trace`, its stderr kept. Then the logs, the stderr and every file of both
//! data directories except the encrypted cache (`cache.db` and its WAL files) are searched for
//! every synthetic patient's NHS number (plain and spaced), names and banner name. Zero may be
//! found. And the search shows it can find them: the same needles are found in what the
//! binary printed on stdout for the list and a record.

use std::io::Write;
use std::path::Path;
use std::process::{Output, Stdio};
use std::sync::{Arc, Mutex};

use chrono::Utc;
use doorstep_client::{Device, EnrolParams, today};
use doorstep_server::demo::{DemoSpec, read_demo_users, seed_with};
use doorstep_server::run::{ServeConfig, TlsMode, start};
use doorstep_testkit::totp_code;

const PIN: &str = "135790";

/// Every line any crate logs, at every level.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What to look for: one patient's identifying strings.
struct Needles {
    label: String,
    strings: Vec<String>,
}

/// NHS number (plain and as shown), the banner name, family and given names (as the FHIR
/// resource has them and as the banner shows the family name).
fn needles_of(p: &doorstep_record::synthetic::SyntheticPatient) -> Needles {
    let digits = p.nhs_number.digits().to_owned();
    let spaced = format!("{} {} {}", &digits[..3], &digits[3..6], &digits[6..]);
    let mut strings = vec![digits, spaced, p.name_display.clone()];
    // "EVANS, Siân (Mrs)": family before the comma, given names up to the title.
    if let Some((family, rest)) = p.name_display.split_once(", ") {
        strings.push(family.to_owned());
        let title_case: String = family
            .split_inclusive(['-', '\'', ' '])
            .map(|part| {
                let mut chars = part.chars();
                match chars.next() {
                    Some(first) => first.to_string() + &chars.as_str().to_lowercase(),
                    None => String::new(),
                }
            })
            .collect();
        strings.push(title_case);
        let given = rest.split(" (").next().unwrap_or(rest);
        strings.extend(given.split(' ').map(str::to_owned));
    }
    // Very short names would match inside ordinary words: whole words only, below.
    strings.retain(|s| s.chars().count() >= 3);
    strings.sort();
    strings.dedup();
    Needles {
        label: format!("{} ({})", p.patient_id, p.name_display),
        strings,
    }
}

/// `needle` in `hay` as a whole word (not inside a longer run of letters or digits).
fn found(hay: &str, needle: &str) -> bool {
    let is_word = |c: char| c.is_alphanumeric();
    hay.match_indices(needle).any(|(i, _)| {
        hay[..i].chars().next_back().is_none_or(|c| !is_word(c))
            && hay[i + needle.len()..]
                .chars()
                .next()
                .is_none_or(|c| !is_word(c))
    })
}

/// Every needle found in `hay`, as "what in where".
fn leaks(needles: &[Needles], where_: &str, hay: &str) -> Vec<String> {
    let mut out = Vec::new();
    for n in needles {
        for s in &n.strings {
            if found(hay, s) {
                out.push(format!("{s:?} of {} in {where_}", n.label));
            }
        }
    }
    out
}

/// Every file of `dir` except the encrypted cache, as (name, text).
fn plain_files(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("cache.db") {
            continue;
        }
        let raw = std::fs::read(&path).unwrap();
        out.push((
            path.display().to_string(),
            String::from_utf8_lossy(&raw).into_owned(),
        ));
    }
    out
}

async fn doorstep(data_dir: &Path, args: &[&str], password: Option<&str>) -> Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_doorstep"));
    cmd.args(args)
        .env("DOORSTEP_DATA_DIR", data_dir)
        .env("DOORSTEP_PIN", PIN)
        .env("DOORSTEP_LOG", "trace")
        .env("RUST_LOG", "trace")
        .env("RUST_BACKTRACE", "1")
        .env_remove("DOORSTEP_PASSWORD")
        .stdin(Stdio::null());
    if let Some(p) = password {
        cmd.env("DOORSTEP_PASSWORD", p);
    }
    tokio::task::spawn_blocking(move || cmd.output().expect("run doorstep"))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_patient_identifier_in_any_log_or_plain_file_at_trace() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("trace"))
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();
    let _ = rustls::crypto::ring::default_provider().install_default();

    let server_dir = tempfile::tempdir().unwrap();
    let spec = DemoSpec::small(23, Utc::now().date_naive());
    let needles: Vec<Needles> = doorstep_record::synthetic::generate(&spec.federation)
        .patients
        .iter()
        .map(needles_of)
        .collect();
    seed_with(server_dir.path(), &spec).expect("seed");
    let nurse = read_demo_users(server_dir.path())
        .expect("demo users")
        .into_iter()
        .find(|u| u.username == "nurse.demo")
        .expect("nurse.demo");
    let mut config = ServeConfig::new(server_dir.path());
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.tls = TlsMode::Dev;
    let server = start(config).await.expect("server");

    // The library: enrol, sync, the list, every record, a search by name and by NHS number.
    let lib_dir = tempfile::tempdir().unwrap();
    let device = Device::enrol(
        lib_dir.path(),
        EnrolParams {
            server_url: server.base_url.clone(),
            ca_pem_path: Some(server.ca_pem_path.clone()),
            username: nurse.username.clone(),
            password: nurse.password.as_str().into(),
            totp: totp_code(&nurse.totp_secret, 0).into(),
            pin: PIN.into(),
            device_name: "log scan".into(),
            dev_mode: false,
        },
    )
    .await
    .expect("enrol");
    device.sync().await.expect("sync");
    let rows = device.list(None, today()).unwrap();
    assert!(!rows.is_empty());
    for row in &rows {
        let record = device.record(&row.patient_id, today()).unwrap();
        assert!(record.is_some());
        device.list(Some(&row.nhs_number), today()).unwrap();
        let family = row.name.split(',').next().unwrap();
        device.list(Some(family), today()).unwrap();
    }
    device.status().unwrap();
    drop(device);
    Device::unlock(lib_dir.path(), PIN).expect("unlock again");

    // The binary, at trace: enrol (the next TOTP step), sync, list, status, every record.
    let cli_dir = tempfile::tempdir().unwrap();
    let dir = cli_dir.path();
    let mut stderr = String::new();
    let mut stdout = String::new();
    let ca = server.ca_pem_path.to_string_lossy().into_owned();
    let totp = totp_code(&nurse.totp_secret, 30);
    let mut run = async |args: &[&str], password: Option<&str>| {
        let o = doorstep(dir, args, password).await;
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(o.status.success(), "doorstep {args:?}: {err}");
        stderr.push_str(&err);
        stdout.push_str(&String::from_utf8_lossy(&o.stdout));
    };
    run(
        &[
            "enrol",
            "--server",
            &server.base_url,
            "--ca",
            &ca,
            "--user",
            &nurse.username,
            "--totp",
            &totp,
        ],
        Some(&nurse.password),
    )
    .await;
    run(&["sync"], None).await;
    run(&["list"], None).await;
    run(&["status"], None).await;
    for row in &rows {
        run(&["show", &row.nhs_number], None).await;
    }

    let logs = String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned();
    assert!(
        logs.contains("TRACE") && logs.contains("sync complete"),
        "the capture holds the trace logs"
    );
    assert!(
        stderr.contains("TRACE"),
        "the binary logged at trace: {stderr:.400}"
    );
    let mut found_leaks = leaks(&needles, "the server's and the library's log", &logs);
    found_leaks.extend(leaks(&needles, "the binary's stderr", &stderr));
    for dir in [lib_dir.path(), cli_dir.path()] {
        let files = plain_files(dir);
        assert!(files.iter().any(|(name, _)| name.ends_with("device.json")));
        for (name, text) in files {
            found_leaks.extend(leaks(&needles, &name, &text));
        }
    }
    assert!(
        found_leaks.is_empty(),
        "{} patient identifier(s) found outside the encrypted cache:\n{}",
        found_leaks.len(),
        found_leaks.join("\n")
    );

    // The search can fail: what the binary showed names every patient on the list.
    for row in &rows {
        let n = needles
            .iter()
            .find(|n| n.label.starts_with(&format!("{} ", row.patient_id)))
            .expect("a needle set for every patient on the list");
        let missing: Vec<&String> = n.strings.iter().filter(|s| !found(&stdout, s)).collect();
        assert!(
            missing.len() < n.strings.len() && found(&stdout, &row.nhs_number_display),
            "the search did not find {} in the records shown (missing {missing:?})",
            n.label
        );
    }
}
