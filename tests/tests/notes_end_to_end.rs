//! A note from the device to the practice and back: the district nurse's device (the real
//! client library and its SQLCipher cache) signs a note, pushes it at its next sync; the
//! registered practice's system fetches its inbox over HTTPS with its own credential and
//! acknowledges it; the nurse's device shows "received by", then "filed at" the practice.
//! Sent twice, the note is still one note.

use std::time::Duration;

use doorstep_client::{Device, NoteInput};
use doorstep_e2e::DemoFederation;
use doorstep_ipc::NoteState;
use doorstep_server::store::{self, DatabaseUrl};
use serde_json::{Value, json};

const PIN: &str = "246810";

fn http(demo: &DemoFederation) -> reqwest::Client {
    let ca =
        reqwest::Certificate::from_pem(&std::fs::read(&demo.server.ca_pem_path).unwrap()).unwrap();
    reqwest::Client::builder()
        .tls_certs_only([ca])
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_note_signed_on_the_device_is_filed_at_the_practice_and_the_device_says_so() {
    let demo = DemoFederation::start().await;
    let nurse = demo.user("nurse.demo");
    let dir = tempfile::tempdir().unwrap();
    let device = Device::enrol(
        dir.path(),
        demo.enrol_params(&nurse, 0, PIN, "nurse tablet"),
    )
    .await
    .expect("enrol");
    device.sync().await.expect("first sync");
    let today = doorstep_client::today();
    let patient = device.list(None, today).unwrap()[0].clone();

    let note = device
        .write_note(
            &patient.patient_id,
            NoteInput {
                text: "Leg ulcer redressed; healing well.".into(),
                vitals: Some(json!({"rr": 18, "spo2": 97, "pulse": 76, "acvpu": "A"})),
                problem: Some("399912005".into()),
                replaces: None,
            },
        )
        .unwrap();
    assert_eq!(device.status().unwrap().waiting, 1);
    let report = device.sync().await.expect("sync pushes the note");
    assert_eq!(report.pushed.accepted, 1, "{report:?}");
    assert_eq!(device.status().unwrap().waiting, 0);
    let state = |device: &Device| {
        device
            .notes(Some(&patient.patient_id))
            .unwrap()
            .into_iter()
            .find(|n| n.id == note.id)
            .expect("the note is listed")
            .state
    };
    assert!(
        matches!(state(&device), NoteState::Accepted { .. }),
        "{:?}",
        state(&device)
    );

    // The registered practice's own system.
    let store = store::open(&DatabaseUrl::in_data_dir(demo.data_dir.path()))
        .await
        .unwrap();
    let practice = store
        .patient(&patient.patient_id)
        .await
        .unwrap()
        .unwrap()
        .practice_ods;
    let secret = doorstep_server::auth::issue_source_secret(
        store.as_ref(),
        &practice,
        "test",
        chrono::Utc::now(),
    )
    .await
    .unwrap();
    let http = http(&demo);
    let inbox: Value = http
        .get(format!("{}/api/v1/practice/inbox", demo.server.base_url))
        .basic_auth(&practice, Some(&secret))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(inbox["resourceType"], "Bundle");
    let compositions: Vec<&Value> = inbox["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["resource"])
        .filter(|r| r["resourceType"] == "Composition")
        .collect();
    assert_eq!(compositions.len(), 1, "one note in the inbox: {inbox}");
    assert_eq!(compositions[0]["id"], note.id.as_str());

    let ack = |status: &str| {
        http.post(format!(
            "{}/api/v1/practice/inbox/ack",
            demo.server.base_url
        ))
        .basic_auth(&practice, Some(&secret))
        .json(&json!({"acks": [{"note_id": note.id, "status": status}]}))
        .send()
    };
    assert_eq!(ack("received").await.unwrap().status(), 200);
    device.sync().await.unwrap();
    match state(&device) {
        NoteState::Received { practice: p, .. } => assert!(p.contains(&practice), "{p}"),
        other => panic!("expected received, got {other:?}"),
    }
    assert_eq!(ack("filed").await.unwrap().status(), 200);
    device.sync().await.unwrap();
    match state(&device) {
        NoteState::Filed { practice: p, .. } => assert!(p.contains(&practice), "{p}"),
        other => panic!("expected filed, got {other:?}"),
    }

    // Once filed, the note leaves the inbox; and it is one note however often it was sent.
    let inbox: Value = http
        .get(format!("{}/api/v1/practice/inbox", demo.server.base_url))
        .basic_auth(&practice, Some(&secret))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let left = inbox["entry"]
        .as_array()
        .map(|e| {
            e.iter()
                .filter(|e| e["resource"]["id"] == note.id.as_str())
                .count()
        })
        .unwrap_or(0);
    assert_eq!(left, 0, "{inbox}");
    let record = device.record(&patient.patient_id, today).unwrap().unwrap();
    let notes_json = serde_json::to_string(&record).unwrap();
    assert_eq!(
        notes_json.matches(note.id.as_str()).count().min(1),
        1,
        "the note is part of the patient's record on the device"
    );
}
