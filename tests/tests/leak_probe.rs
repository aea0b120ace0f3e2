//! The independent leak probe: nothing the sharing filter must withhold reaches any device, by
//! any route, for any of the demo's five services.
//!
//! What it proves: a federation seeded with the leak markers
//! (`doorstep_record::synthetic::add_leak_markers`: on every patient, sensitive items in every
//! form the filter must catch — SNOMED under its URL, a versioned edition URL and its OID,
//! Read v2, CTV3, a local code whose display names a term, a dm+d medicine by name, text only,
//! a discharge letter attachment and a discharge summary narrative, an Encounter reason, a
//! contained Medication named by a term, a confidential contained Medication, an Observation
//! value, items confidential at source, and a confidential Patient with marked address and
//! phone) is served over real HTTPS on a random port, and for every demo user (district nurse,
//! hub GP, paramedic, out-of-hours GP, podiatrist):
//!
//! 1. a plain HTTPS client enrols through the API as a device would and follows the pull
//!    cursors to the end, keeping every (decompressed) byte of every page;
//! 2. a real `doorstep_client::Device` enrols and syncs; then every file of its data directory
//!    is read raw, and the encrypted cache is opened with the PIN-derived key and every table
//!    dumped as text.
//!
//! All of it is searched for every forbidden marker of the manifest (plain and in each of its
//! three base64 alignments, since attachments travel base64-encoded), every sensitive code of
//! the manifest (as a whole token) and the sets' terms the items use. Zero may be found.
//!
//! How it stays independent: the oracle is the manifest the generator returns; the test never
//! calls the filter (`doorstep_record::{agreement, sensitive, codes, valueset}`). And it shows it
//! can fail: the same search must find, for every user, the confidential patients' banner
//! fields that are meant to travel (a control given name and the NHS number) for exactly the
//! patients on the device, and the marker in the note of an item every agreement shares (an
//! active type 2 diabetes), so a search that saw nothing would fail the test.

use std::collections::BTreeSet;
use std::path::Path;

use chrono::Utc;
use doorstep_client::Device;
use doorstep_e2e::{DemoFederation, totp_for};
use doorstep_record::synthetic::{LeakForm, add_leak_markers, generate};
use doorstep_server::demo::DemoSpec;
use serde_json::{Value, json};

const PIN: &str = "135790";

const USERS: [&str; 5] = [
    "nurse.demo",
    "gp.demo",
    "para.demo",
    "ooh.demo",
    "podiatrist.demo",
];

/// Terms the marked items use to be caught by text (from the sets' exclusion-term lists); none
/// may reach a device in any case.
const TERMS: &[&str] = &[
    "chlamydia",
    "gonorrhoea",
    "gonococcal",
    "termination of pregnancy",
    "emtricitabine",
    "tenofovir",
    "mifepristone",
];

/// Everything one user's devices received, labelled by where it was found.
struct Haystack {
    user: String,
    parts: Vec<(String, Vec<u8>)>,
}

impl Haystack {
    fn bytes(&self) -> usize {
        self.parts.iter().map(|(_, b)| b.len()).sum()
    }
}

fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// The marker as it appears inside base64 text at each of the three byte alignments (only the
/// characters that depend on the marker alone).
fn base64_forms(marker: &str) -> Vec<String> {
    let n = marker.len();
    (0..3)
        .map(|k| {
            let mut bytes = vec![0u8; k];
            bytes.extend_from_slice(marker.as_bytes());
            let enc = base64(&bytes);
            let start = (8 * k).div_ceil(6);
            let end = (8 * (k + n)) / 6;
            enc[start..end].to_owned()
        })
        .collect()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// `code` as a whole token: not inside a longer run of code characters.
fn contains_token(hay: &[u8], code: &str) -> bool {
    let needle = code.as_bytes();
    let is_code_char = |b: u8| b.is_ascii_alphanumeric() || b == b'.' || b == b'-';
    hay.windows(needle.len()).enumerate().any(|(i, w)| {
        w == needle
            && (i == 0 || !is_code_char(hay[i - 1]))
            && hay.get(i + needle.len()).is_none_or(|&b| !is_code_char(b))
    })
}

fn contains_ci(hay: &[u8], needle: &str) -> bool {
    let needle = needle.to_ascii_lowercase();
    let n = needle.as_bytes();
    hay.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n))
}

/// Every file under `dir`, raw.
fn read_dir_files(dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            read_dir_files(&path, out);
        } else {
            out.push((
                format!("file {}", path.display()),
                std::fs::read(&path).unwrap(),
            ));
        }
    }
}

/// Every table of the decrypted cache, every value as text.
fn dump_cache(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let conn = doorstep_testkit::device::open_cache(dir, PIN);
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(
        tables.iter().any(|t| t == "resources"),
        "the cache opened with the key: {tables:?}"
    );
    let mut out = Vec::new();
    for table in tables {
        let mut stmt = conn.prepare(&format!("SELECT * FROM \"{table}\"")).unwrap();
        let columns = stmt.column_count();
        let mut text = Vec::new();
        let mut rows = stmt.query([]).unwrap();
        while let Some(row) = rows.next().unwrap() {
            for c in 0..columns {
                use rusqlite::types::ValueRef;
                match row.get_ref(c).unwrap() {
                    ValueRef::Null => {}
                    ValueRef::Integer(i) => text.extend(i.to_string().bytes()),
                    ValueRef::Real(f) => text.extend(f.to_string().bytes()),
                    ValueRef::Text(t) => text.extend_from_slice(t),
                    // A stored resource is deflated: searched as what it holds, and as its bytes.
                    ValueRef::Blob(b) => {
                        if let Ok(json) = doorstep_client::workload::stored_text(ValueRef::Blob(b))
                        {
                            text.extend_from_slice(json.as_bytes());
                            text.push(b'\t');
                        }
                        text.extend_from_slice(b);
                    }
                }
                text.push(b'\t');
            }
            text.push(b'\n');
        }
        out.push((format!("cache table {table}"), text));
    }
    out
}

/// (1) The API as a device uses it, with a plain HTTPS client: enrol, then every pull page.
async fn pull_plainly(demo: &DemoFederation, username: &str) -> Vec<(String, Vec<u8>)> {
    let user = demo.user(username);
    let http = demo.https_client();
    let base = &demo.server.base_url;
    let enrol = http
        .post(format!("{base}/api/v1/auth/enrol"))
        .json(&json!({
            "username": user.username,
            "password": user.password,
            "totp": totp_for(&user.totp_secret, 0),
            "device_name": "leak probe",
        }))
        .send()
        .await
        .unwrap();
    assert!(
        enrol.status().is_success(),
        "enrol {username}: {}",
        enrol.status()
    );
    let enrolled = enrol.bytes().await.unwrap().to_vec();
    let token = serde_json::from_slice::<Value>(&enrolled).unwrap()["tokens"]["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut parts = vec![(format!("{username} enrol answer"), enrolled)];
    let mut cursor = String::new();
    for page in 0.. {
        assert!(page < 10_000, "the pull never ends");
        let answer = http
            .get(
                reqwest::Url::parse_with_params(
                    &format!("{base}/api/v1/sync/pull"),
                    &[("cursor", cursor.as_str())],
                )
                .unwrap(),
            )
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert!(
            answer.status().is_success(),
            "pull {username}: {}",
            answer.status()
        );
        let body = answer.bytes().await.unwrap().to_vec();
        let parsed: Value = serde_json::from_slice(&body).unwrap();
        parts.push((format!("{username} pull page {page}"), body));
        cursor = parsed["cursor"].as_str().unwrap().to_owned();
        if parsed["more"] != json!(true) {
            break;
        }
    }
    parts
}

/// (2) A real device: enrol, sync, then its files and its decrypted cache.
async fn sync_device(
    demo: &DemoFederation,
    username: &str,
    dir: &Path,
) -> (Vec<(String, Vec<u8>)>, BTreeSet<String>) {
    let user = demo.user(username);
    let device = Device::enrol(dir, demo.enrol_params(&user, 30, PIN, "leak probe device"))
        .await
        .unwrap_or_else(|e| panic!("enrol {username}: {e}"));
    let report = device.sync().await.expect("sync");
    let today = doorstep_client::today();
    let on_device: BTreeSet<String> = device
        .list(None, today)
        .unwrap()
        .into_iter()
        .map(|r| r.patient_id)
        .collect();
    assert!(
        !on_device.is_empty() && report.patients as usize == on_device.len(),
        "{username} synced a non-empty list: {} patients",
        report.patients
    );
    // Open every record too, so anything the views derive is computed once.
    for id in &on_device {
        device.record(id, today).unwrap().expect("the record opens");
    }
    drop(device);
    let mut parts = Vec::new();
    read_dir_files(dir, &mut parts);
    parts.extend(dump_cache(dir));
    (parts, on_device)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_marked_item_reaches_any_device_of_any_service() {
    let mut spec = DemoSpec::small(11, Utc::now().date_naive());
    spec.leak_markers = true;
    // The oracle: the same generator run the seed makes, and its manifest.
    let mut federation = generate(&spec.federation);
    let manifest = add_leak_markers(&mut federation, spec.federation.today);
    assert_eq!(
        manifest.items.len(),
        federation.patients.len() * LeakForm::ALL.len()
    );
    let demo = DemoFederation::start_spec(spec).await;

    // The marked items are on the server (imported, not dropped on the way in).
    let store = demo.store().await;
    let sample = &manifest.patients[0].patient_id;
    let stored: String = store
        .patient_resources(sample)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.json)
        .collect();
    for item in manifest.items.iter().filter(|i| &i.patient_id == sample) {
        assert!(
            stored.contains(&item.marker),
            "{:?} is not on the server",
            item.form
        );
    }
    drop(store);

    let forbidden: Vec<(String, Vec<String>)> = manifest
        .forbidden_markers()
        .into_iter()
        .map(|m| {
            let forms = base64_forms(&m);
            (m, forms)
        })
        .collect();
    let codes = manifest.sensitive_codes();

    let mut found = Vec::new();
    let mut controls_found = 0;
    let mut total_bytes = 0;
    let mut total_parts = 0;
    for username in USERS {
        let mut hay = Haystack {
            user: username.to_owned(),
            parts: pull_plainly(&demo, username).await,
        };
        let dir = tempfile::tempdir().unwrap();
        let (device_parts, on_device) = sync_device(&demo, username, dir.path()).await;
        hay.parts.extend(device_parts);
        total_bytes += hay.bytes();
        total_parts += hay.parts.len();

        for (label, bytes) in &hay.parts {
            for (marker, b64) in &forbidden {
                if contains(bytes, marker.as_bytes())
                    || b64.iter().any(|f| contains(bytes, f.as_bytes()))
                {
                    found.push(format!("{}: marker {marker} in {label}", hay.user));
                }
            }
            for code in &codes {
                if contains_token(bytes, code) {
                    found.push(format!("{}: code {code} in {label}", hay.user));
                }
            }
            for term in TERMS {
                if contains_ci(bytes, term) {
                    found.push(format!("{}: term {term:?} in {label}", hay.user));
                }
            }
        }

        // The controls: the banner fields of the (confidential) patients on this device are
        // found, in what the server sent and in the cache, and only for those patients.
        for p in &manifest.patients {
            let in_pull = hay
                .parts
                .iter()
                .filter(|(l, _)| l.contains("pull page"))
                .any(|(_, b)| contains(b, p.name_control.as_bytes()));
            let in_cache = hay
                .parts
                .iter()
                .filter(|(l, _)| l.starts_with("cache table"))
                .any(|(_, b)| {
                    contains(b, p.name_control.as_bytes()) && contains(b, p.nhs_number.as_bytes())
                });
            let visible_in_pull = hay
                .parts
                .iter()
                .filter(|(l, _)| l.contains("pull page"))
                .any(|(_, b)| contains(b, p.visible_marker.as_bytes()));
            let visible_in_cache = hay
                .parts
                .iter()
                .filter(|(l, _)| l.starts_with("cache table"))
                .any(|(_, b)| contains(b, p.visible_marker.as_bytes()));
            let expected = on_device.contains(&p.patient_id);
            assert_eq!(
                (in_pull, in_cache, visible_in_pull, visible_in_cache),
                (expected, expected, expected, expected),
                "{username}: the controls of patient {} (on the device: {expected})",
                p.patient_id
            );
            controls_found += usize::from(in_cache) + usize::from(visible_in_cache);
        }
        eprintln!(
            "leak probe {username}: {} patients on the device, {} parts, {} bytes searched",
            on_device.len(),
            hay.parts.len(),
            hay.bytes()
        );
    }
    eprintln!(
        "leak probe: {} markers, {} codes, {} terms; {total_parts} parts ({total_bytes} bytes) \
         searched over 5 users; found {} forbidden, {controls_found} controls",
        forbidden.len(),
        codes.len(),
        TERMS.len(),
        found.len()
    );
    assert!(found.is_empty(), "leaks:\n{}", found.join("\n"));
}

#[test]
fn base64_forms_find_a_marker_at_every_alignment() {
    let marker = "LEAK-0123456789abcdef";
    for prefix in ["", "a", "ab", "abc", "Dear Doctor,\n"] {
        let text = base64(format!("{prefix}{marker} and after").as_bytes());
        assert!(
            base64_forms(marker)
                .iter()
                .any(|f| text.contains(f.as_str())),
            "{prefix:?}"
        );
    }
    assert!(contains_token(b"code 105629000,", "105629000"));
    assert!(!contains_token(b"x1105629000", "105629000"));
}
