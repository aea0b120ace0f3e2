//! A member practice's own system imports over HTTPS (`POST /api/v1/import`), and what it
//! sends reaches the district nurse's device at its next sync; what it may not send is refused
//! whole, naming the entry; the change feed is pruned on the server's schedule, after which a
//! device whose cursor is older rebuilds its cache.
//!
//! Real server (in-process, HTTPS with its dev CA), real client library, real SQLCipher cache.

use std::time::{Duration, Instant};

use doorstep_client::Device;
use doorstep_e2e::DemoFederation;
use doorstep_protocol::{ApiError, ImportProblem, ImportSummary};
use doorstep_server::store::{ResourceRow, Store};
use serde_json::{Value, json};

const PIN: &str = "246810";
/// Feed rows live this long in this test's server (production: 30 days).
const RETENTION: Duration = Duration::from_secs(5);

struct Practice {
    ods: String,
    secret: String,
}

async fn practice(demo: &DemoFederation, ods: &str) -> Practice {
    Practice {
        ods: ods.to_string(),
        secret: demo.practice_secret(ods).await,
    }
}

async fn post(
    demo: &DemoFederation,
    practice: Option<(&str, &str)>,
    content_type: &str,
    body: Vec<u8>,
) -> reqwest::Response {
    let mut request = demo
        .https_client()
        .post(format!("{}/api/v1/import", demo.server.base_url))
        .header("content-type", content_type)
        .body(body);
    if let Some((id, secret)) = practice {
        request = request.basic_auth(id, Some(secret));
    }
    request.send().await.expect("the server answers")
}

async fn import(demo: &DemoFederation, p: &Practice, bundle: &Value) -> reqwest::Response {
    post(
        demo,
        Some((&p.ods, &p.secret)),
        "application/fhir+json",
        bundle.to_string().into_bytes(),
    )
    .await
}

fn bundle(resources: &[Value]) -> Value {
    json!({
        "resourceType": "Bundle",
        "type": "collection",
        "entry": resources.iter().map(|r| json!({"resource": r})).collect::<Vec<_>>(),
    })
}

fn json_of(row: &ResourceRow) -> Value {
    serde_json::from_str(&row.json).unwrap()
}

/// A patient's stored Patient resource, and the Organization its `generalPractitioner`
/// names: what the practice's system sends with every bundle of the patient.
async fn patient_resources(store: &dyn Store, patient_id: &str) -> [Value; 2] {
    let rows = store.patient_resources(patient_id).await.unwrap();
    let patient = json_of(
        rows.iter()
            .find(|r| r.resource_type == "Patient")
            .expect("the patient's Patient resource"),
    );
    let reference = patient["generalPractitioner"][0]["reference"]
        .as_str()
        .expect("the demo registers patients by reference to an Organization");
    let organisation_id = reference.strip_prefix("Organization/").unwrap();
    let organisation = store
        .feed_snapshot()
        .await
        .unwrap()
        .resource("Organization", organisation_id)
        .await
        .unwrap()
        .expect("the practice's Organization resource");
    [patient, json_of(&organisation)]
}

/// An allergy to `substance` for `patient_id`, shaped as the federation's other allergies.
async fn allergy(store: &dyn Store, id: &str, patient_id: &str, substance: &str) -> Value {
    let mut template = None;
    for p in store.patients().await.unwrap() {
        if let Some(row) = store
            .patient_resources(&p.id)
            .await
            .unwrap()
            .into_iter()
            .find(|r| r.resource_type == "AllergyIntolerance" && !r.deleted)
        {
            template = Some(json_of(&row));
            break;
        }
    }
    let mut a = template.expect("the demo federation holds an allergy");
    a["id"] = json!(id);
    a["patient"] = json!({"reference": format!("Patient/{patient_id}")});
    a["code"] = json!({
        // A local code: this test is about where the item goes, not what it means.
        "coding": [{
            "system": "https://doorstep.example/CodeSystem/test-substance",
            "code": substance.to_ascii_lowercase().replace(' ', "-"),
            "display": substance,
        }],
        "text": substance,
    });
    if let Some(obj) = a.as_object_mut() {
        // The template's own provenance and notes are not this allergy's.
        obj.remove("meta");
        obj.remove("note");
        obj.remove("text");
    }
    a
}

async fn wait_until_pruned_through(store: &dyn Store, seq: i64) {
    let deadline = Instant::now() + RETENTION + Duration::from_secs(30);
    loop {
        let pruned = store
            .feed_snapshot()
            .await
            .unwrap()
            .pruned_through()
            .await
            .unwrap();
        if pruned >= seq {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the feed was not pruned through {seq} (at {pruned})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_practice_imports_its_own_patients_and_the_device_sees_them() {
    let demo = DemoFederation::start_with(|config| {
        config.feed_retention = chrono::Duration::from_std(RETENTION).unwrap();
        config.prune_every = Duration::from_millis(200);
        config.import_max_bytes = 2 * 1024 * 1024;
    })
    .await;
    let store = demo.store().await;
    let nurse = demo.user("nurse.demo");
    let device_dir = tempfile::tempdir().unwrap();
    let device = Device::enrol(
        device_dir.path(),
        demo.enrol_params(&nurse, 0, PIN, "nurse tablet"),
    )
    .await
    .expect("enrol");
    device.sync().await.expect("first sync");
    let today = doorstep_client::today();
    let rows = device.list(None, today).unwrap();
    let target = rows.first().expect("the caseload is not empty").clone();
    let target_row = store.patient(&target.patient_id).await.unwrap().unwrap();
    let other = store
        .patients()
        .await
        .unwrap()
        .into_iter()
        .find(|p| p.practice_ods != target_row.practice_ods)
        .expect("a patient of another practice");
    let own = practice(&demo, &target_row.practice_ods).await;
    let foreign = practice(&demo, &other.practice_ods).await;

    // The practice adds an allergy; the nurse's device has it after its next sync.
    let allergy_id = format!("alg-{}", uuid::Uuid::new_v4().simple());
    let [patient, organisation] = patient_resources(store.as_ref(), &target.patient_id).await;
    let sent = bundle(&[
        patient.clone(),
        organisation.clone(),
        allergy(
            store.as_ref(),
            &allergy_id,
            &target.patient_id,
            "Chlorhexidine",
        )
        .await,
    ]);
    let answer = import(&demo, &own, &sent).await;
    assert_eq!(answer.status(), 200, "{:?}", answer.text().await);
    let summary: ImportSummary = answer.json().await.unwrap();
    assert_eq!((summary.patients, summary.upserted), (1, 1), "{summary:?}");
    device.sync().await.expect("sync after the import");
    let record = device.record(&target.patient_id, today).unwrap().unwrap();
    assert!(
        record
            .view
            .allergies
            .iter()
            .any(|a| a.substance.contains("Chlorhexidine")),
        "the device lacks the allergy the practice sent: {:?}",
        record.view.allergies
    );

    // The same bundle again changes nothing and sends the device nothing.
    let again: ImportSummary = import(&demo, &own, &sent).await.json().await.unwrap();
    assert_eq!((again.upserted, again.unchanged), (0, 3), "{again:?}");
    let quiet = device.sync().await.unwrap();
    assert_eq!(quiet.upserts + quiet.deletes, 0, "{quiet:?}");

    // Another practice may not send this patient, nor reuse the allergy's id for its own.
    let refused = import(&demo, &foreign, &sent).await;
    assert_eq!(refused.status(), 422);
    let problem: ImportProblem = refused.json().await.unwrap();
    assert_eq!(
        (problem.entry, problem.element.as_str()),
        (Some(0), "generalPractitioner"),
        "{problem:?}"
    );
    assert!(
        problem.message.contains(&target_row.practice_ods),
        "{problem:?}"
    );
    let [other_patient, other_organisation] = patient_resources(store.as_ref(), &other.id).await;
    let hijack = bundle(&[
        other_patient,
        other_organisation,
        allergy(store.as_ref(), &allergy_id, &other.id, "Latex").await,
    ]);
    let refused = import(&demo, &foreign, &hijack).await;
    assert_eq!(refused.status(), 422);
    let problem: ImportProblem = refused.json().await.unwrap();
    assert_eq!(
        (
            problem.entry,
            problem.element.as_str(),
            problem.resource.as_deref()
        ),
        (
            Some(2),
            "id",
            Some(format!("AllergyIntolerance/{allergy_id}").as_str())
        ),
        "{problem:?}"
    );
    // Whole or nothing: the allergy is still the target's, and nothing reached the device.
    let held = store
        .patient_resources(&target.patient_id)
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.id == allergy_id)
        .expect("the allergy is still held for the target");
    assert!(held.json.contains("Chlorhexidine") && !held.deleted);
    assert_eq!(device.sync().await.unwrap().upserts, 0);

    // A bundle that is not valid FHIR for import names its entry and element.
    let mut broken = allergy(store.as_ref(), "alg-broken", &target.patient_id, "Iodine").await;
    broken["code"] = json!({"coding": [{"system": "http://snomed.info/sct"}]});
    let refused = import(
        &demo,
        &own,
        &bundle(&[patient.clone(), organisation.clone(), broken]),
    )
    .await;
    assert_eq!(refused.status(), 422);
    let problem: ImportProblem = refused.json().await.unwrap();
    assert_eq!(problem.entry, Some(2), "{problem:?}");
    assert!(problem.element.starts_with("code"), "{problem:?}");

    // Credentials, media type and size are checked, each with a JSON answer saying what.
    let none = post(&demo, None, "application/fhir+json", b"{}".to_vec()).await;
    assert_eq!(none.status(), 401);
    assert_eq!(none.json::<ApiError>().await.unwrap().code, "unauthorized");
    let wrong = post(
        &demo,
        Some((&own.ods, "dps_not-the-secret")),
        "application/fhir+json",
        sent.to_string().into_bytes(),
    )
    .await;
    assert_eq!(wrong.status(), 401);
    assert_eq!(
        wrong.json::<ApiError>().await.unwrap().code,
        "bad_credentials"
    );
    let text = post(
        &demo,
        Some((&own.ods, &own.secret)),
        "text/plain",
        sent.to_string().into_bytes(),
    )
    .await;
    assert_eq!(text.status(), 415);
    let huge = post(
        &demo,
        Some((&own.ods, &own.secret)),
        "application/fhir+json",
        vec![b' '; 3 * 1024 * 1024],
    )
    .await;
    assert_eq!(huge.status(), 413);
    assert_eq!(huge.json::<ApiError>().await.unwrap().code, "too_large");
    // A new secret replaces the old one at once.
    let renewed = practice(&demo, &own.ods).await;
    assert_eq!(import(&demo, &own, &sent).await.status(), 401);
    assert_eq!(import(&demo, &renewed, &sent).await.status(), 200);

    // One more change, then the schedule prunes the feed past the device's cursor: the
    // device is told to rebuild (410 cursor_expired), rebuilds, and holds the record again.
    let later = bundle(&[
        patient,
        organisation,
        allergy(
            store.as_ref(),
            &allergy_id,
            &target.patient_id,
            "Chlorhexidine gluconate",
        )
        .await,
    ]);
    assert_eq!(import(&demo, &renewed, &later).await.status(), 200);
    let head = store.feed_head().await.unwrap();
    wait_until_pruned_through(store.as_ref(), head).await;
    let rebuilt = device.sync().await.expect("sync after pruning");
    assert!(
        rebuilt.rebuilt,
        "an expired cursor must rebuild: {rebuilt:?}"
    );
    let record = device.record(&target.patient_id, today).unwrap().unwrap();
    assert!(
        record
            .view
            .allergies
            .iter()
            .any(|a| a.substance.contains("Chlorhexidine gluconate")),
        "{:?}",
        record.view.allergies
    );

    // The audit log is never pruned: every accepted import is there, by its practice, and the
    // chain verifies.
    let audit = store.audit_rows().await.unwrap();
    doorstep_server::audit::verify(&audit).expect("the chain verifies");
    let by_practice = audit
        .iter()
        .filter(|r| r.event.action == "import" && r.event.actor == format!("practice:{}", own.ods))
        .count();
    assert_eq!(by_practice, 4, "imports audited by the practice");
}
