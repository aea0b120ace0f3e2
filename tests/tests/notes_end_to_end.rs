//! A note from the device to the practice and back: the district nurse's device (the real
//! client library and its SQLCipher cache) signs a note, pushes it at its next sync; the
//! registered practice's system fetches its inbox over HTTPS with its own credential and
//! acknowledges it; the nurse's device shows "received by", then "filed at" the practice.
//! Sent twice, the note is still one note.

use doorstep_client::{Device, NoteInput};
use doorstep_e2e::DemoFederation;
use doorstep_ipc::NoteState;
use serde_json::{Value, json};

const PIN: &str = "246810";

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
    let store = demo.store().await;
    let practice = store
        .patient(&patient.patient_id)
        .await
        .unwrap()
        .unwrap()
        .practice_ods;
    let secret = demo.practice_secret(&practice).await;
    let http = demo.https_client();
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
    // Valid FHIR R4 for an independent library, which does refuse what is not.
    if let Some(said) = doorstep_e2e::fhir_check(&inbox.to_string()) {
        let said =
            said.unwrap_or_else(|why| panic!("the inbox Bundle is not valid FHIR R4: {why}"));
        assert!(said.starts_with("ok"), "{said}");
        let mut broken = inbox.clone();
        broken["entry"][0]["resource"]["subject"] = json!("Patient/not-a-reference-object");
        assert!(
            doorstep_e2e::fhir_check(&broken.to_string())
                .unwrap()
                .is_err(),
            "the check must refuse a malformed reference"
        );
    }
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

/// The same with the note written while the server is down: it waits, goes when the server is
/// back, and its filing comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_note_written_offline_goes_when_the_server_is_back_and_is_filed() {
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
    let rows = device.list(None, today).unwrap();
    // A patient with alerts and allergies, as the window test's.
    let patient = rows
        .iter()
        .find(|r| {
            r.alerts.iter().any(|a| a == "DNACPR") && r.alerts.iter().any(|a| a == "Allergies")
        })
        .unwrap_or(&rows[rows.len() / 2])
        .clone();
    demo.stop_server().await;
    let note = device
        .write_note(
            &patient.patient_id,
            NoteInput {
                text: "Leg ulcer redressed; healing well.".into(),
                vitals: Some(json!({"rr": 21, "spo2": 95, "sbp": 118, "pulse": 92, "temp": 37.4})),
                ..NoteInput::default()
            },
        )
        .unwrap();
    assert!(device.sync().await.is_err(), "offline");
    assert_eq!(device.status().unwrap().waiting, 1);
    demo.restart_server().await;
    let report = device.sync().await.expect("back online");
    assert_eq!(report.pushed.accepted, 1, "{report:?}");
    let store = demo.store().await;
    let practice = store
        .patient(&patient.patient_id)
        .await
        .unwrap()
        .unwrap()
        .practice_ods;
    let secret = demo.practice_secret(&practice).await;
    let answer = demo
        .https_client()
        .post(format!(
            "{}/api/v1/practice/inbox/ack",
            demo.server.base_url
        ))
        .basic_auth(&practice, Some(&secret))
        .json(&json!({"acks": [{"note_id": note.id, "status": "filed"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    device.sync().await.unwrap();
    let state = device
        .notes(None)
        .unwrap()
        .into_iter()
        .find(|n| n.id == note.id)
        .unwrap()
        .state;
    assert!(matches!(state, NoteState::Filed { .. }), "{state:?}");
}
