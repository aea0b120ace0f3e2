//! Consultation notes over real HTTPS, end to end on the server: a district nurse pushes notes
//! from her device, her next pull carries them back with their delivery state, the patient's
//! registered practice fetches its inbox (a FHIR Bundle) with its own credential and
//! acknowledges, the acknowledgement reaches the nurse's device, and the notes are seen by a
//! service whose agreement shares notes and not by one whose agreement does not.

use doorstep_testkit::http::{enrol_for_token, https_client};

use base64::Engine;
use chrono::Utc;
use doorstep_protocol::{
    Ack, AckRequest, AckResponse, AckStatus, ApiError, Change, FirstOutcome, NoteBody, NoteProblem,
    PUSH_KIND_NOTE, PUSH_MAX_ITEMS, PullPage, PushItem, PushOutcome, PushRequest, PushResponse,
};
use doorstep_record::fhir::Resource;
use doorstep_record::writeback::{DeliveryState, note_delivery};
use doorstep_server::demo::{self, APPOINTMENT_LIST, CASELOAD_LIST, DemoSpec, INCIDENT_LIST};
use doorstep_server::lists::{self, NewListEntry};
use doorstep_server::run::{ServeConfig, TlsMode, start};
use doorstep_server::{auth, store};
use serde_json::{Value, json};

/// Pull until caught up; answers every change and the last cursor.
async fn pull_all(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    mut cursor: Option<String>,
) -> (Vec<Change>, String) {
    let mut changes = Vec::new();
    for _ in 0..200 {
        let url = match &cursor {
            Some(c) => format!("{base}/api/v1/sync/pull?cursor={c}"),
            None => format!("{base}/api/v1/sync/pull"),
        };
        let response = http.get(url).bearer_auth(token).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let page: PullPage = response.json().await.unwrap();
        changes.extend(page.changes);
        cursor = Some(page.cursor);
        if !page.more {
            return (changes, cursor.unwrap());
        }
    }
    panic!("the pull does not end");
}

/// Every resource the changes carry, as (patient id, resource).
fn resources(changes: &[Change]) -> Vec<(String, Resource)> {
    let mut out = Vec::new();
    for c in changes {
        match c {
            Change::PatientAdded {
                patient, resources, ..
            } => out.extend(resources.iter().map(|r| {
                (
                    patient.patient_id.clone(),
                    Resource::from_json(r.clone()).unwrap(),
                )
            })),
            Change::Upsert {
                patient_id,
                resource,
            } => out.push((
                patient_id.clone(),
                Resource::from_json(resource.clone()).unwrap(),
            )),
            _ => {}
        }
    }
    out
}

/// The note's Composition as the changes carry it (the last one).
fn composition(changes: &[Change], note_id: &str) -> Option<Resource> {
    resources(changes)
        .into_iter()
        .map(|(_, r)| r)
        .rfind(|r| r.resource_type.as_str() == "Composition" && r.id == note_id)
}

fn basic(ods: &str, secret: &str) -> String {
    let raw = format!("{ods}:{secret}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

fn note_item(id: &str, patient: &str, body: Value) -> PushItem {
    PushItem {
        id: id.into(),
        kind: PUSH_KIND_NOTE.into(),
        patient_id: patient.into(),
        created_at: Utc::now(),
        body,
    }
}

async fn push(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    items: Vec<PushItem>,
) -> reqwest::Response {
    http.post(format!("{base}/api/v1/sync/push"))
        .bearer_auth(token)
        .json(&PushRequest { items })
        .send()
        .await
        .unwrap()
}

async fn ack(http: &reqwest::Client, base: &str, auth: &str, body: Value) -> reqwest::Response {
    http.post(format!("{base}/api/v1/practice/inbox/ack"))
        .header("authorization", auth)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn inbox(http: &reqwest::Client, base: &str, auth: &str) -> Value {
    let response = http
        .get(format!("{base}/api/v1/practice/inbox"))
        .header("authorization", auth)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/fhir+json");
    response.json().await.unwrap()
}

fn inbox_notes(bundle: &Value) -> Vec<String> {
    bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["search"]["mode"] == "match")
        .map(|e| e["resource"]["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_note_goes_to_the_practice_once_and_its_filing_comes_back_to_the_author() {
    let dir = tempfile::tempdir().unwrap();
    let database = store::DatabaseUrl::in_data_dir(dir.path());
    note_to_the_practice_and_back(dir.path(), database).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_note_goes_to_the_practice_once_and_back_on_postgres() {
    let Some(cluster) = doorstep_testkit::PgCluster::start_or_skip("notes on PostgreSQL") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let database = store::DatabaseUrl::parse(&cluster.create_database().unwrap()).unwrap();
    note_to_the_practice_and_back(dir.path(), database).await;
}

async fn note_to_the_practice_and_back(dir: &std::path::Path, database: store::DatabaseUrl) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let data = dir.to_path_buf();
    let spec = DemoSpec::small(11, Utc::now().date_naive());
    {
        let (data, spec, database) = (data.clone(), spec.clone(), database.clone());
        tokio::task::spawn_blocking(move || demo::seed_with_database(&data, &database, &spec))
            .await
            .unwrap()
            .unwrap();
    }
    let users = demo::read_demo_users(&data).unwrap();
    let user = |name: &str| users.iter().find(|u| u.username == name).unwrap().clone();
    let store = store::open(&database).await.unwrap();

    // The patient of the notes: on the nursing caseload, and (for the other services) booked
    // into the hub and attended by the ambulance.
    let caseload: Vec<String> = store
        .list_entries(CASELOAD_LIST)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.patient_id)
        .collect();
    let patients = store.patients().await.unwrap();
    let patient = patients
        .iter()
        .find(|p| p.id == caseload[0])
        .unwrap()
        .clone();
    let stranger = patients
        .iter()
        .find(|p| !caseload.contains(&p.id) && !p.dissent)
        .unwrap()
        .clone();
    for list in [APPOINTMENT_LIST, INCIDENT_LIST] {
        lists::add_entry(
            store.as_ref(),
            NewListEntry {
                list_id: list.into(),
                patient_id: patient.id.clone(),
                reason: "Follow-up".into(),
                starts_at: Utc::now(),
                ends_at: None,
                user_id: None,
            },
            Utc::now(),
        )
        .await
        .unwrap();
    }
    // The registered practice and another one, each with its source-system credential.
    let home = patient.practice_ods.clone();
    let other = store
        .practices()
        .await
        .unwrap()
        .into_iter()
        .find(|p| p.ods != home)
        .unwrap()
        .ods;
    let home_auth = basic(
        &home,
        &auth::issue_source_secret(store.as_ref(), &home, "cli", Utc::now())
            .await
            .unwrap(),
    );
    let other_auth = basic(
        &other,
        &auth::issue_source_secret(store.as_ref(), &other, "cli", Utc::now())
            .await
            .unwrap(),
    );

    let server = start(ServeConfig {
        database: Some(database.clone()),
        listen: "127.0.0.1:0".parse().unwrap(),
        tls: TlsMode::Dev,
        ..ServeConfig::new(data.clone())
    })
    .await
    .unwrap();
    let base = server.base_url.clone();
    let http = https_client(&server.ca_pem_path);
    let nurse = {
        let u = user("nurse.demo");
        enrol_for_token(&http, &base, &u.username, &u.password, &u.totp_secret).await
    };
    let (_, mut cursor) = pull_all(&http, &base, &nurse, None).await;

    // ---- push: one note accepted, one refused (not on her list), one of an unknown kind ----
    let note_id = uuid::Uuid::new_v4().to_string();
    let stranger_note = uuid::Uuid::new_v4().to_string();
    let unknown = uuid::Uuid::new_v4().to_string();
    let body = serde_json::to_value(NoteBody {
        text: "Leg ulcer redressed <left> & healing".into(),
        vitals: Some(
            json!({"rr": 18, "spo2": 96, "scale": 1, "o2": false, "sbp": 124,
                            "pulse": 78, "acvpu": "A", "temp": 37.1}),
        ),
        problem: Some(NoteProblem {
            code: "402863003".into(),
            display: "Venous leg ulcer".into(),
        }),
        replaces: None,
        signed_at: Utc::now(),
    })
    .unwrap();
    let mut odd = note_item(&unknown, &patient.id, json!({}));
    odd.kind = "acknowledgement".into();
    let items = vec![
        note_item(&note_id, &patient.id, body.clone()),
        note_item(&stranger_note, &stranger.id, body.clone()),
        odd,
    ];
    let response = push(&http, &base, &nurse, items.clone()).await;
    assert_eq!(response.status(), 200);
    let first: PushResponse = response.json().await.unwrap();
    let ids: Vec<&str> = first.results.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, [&note_id, &stranger_note, &unknown]);
    let PushOutcome::Accepted { accepted_at } = first.results[0].outcome.clone() else {
        panic!("{:?}", first.results[0]);
    };
    let PushOutcome::Rejected { reason } = first.results[1].outcome.clone() else {
        panic!("{:?}", first.results[1]);
    };
    assert!(reason.contains("not on your list"), "{reason}");
    assert!(
        matches!(&first.results[2].outcome, PushOutcome::Rejected { reason } if reason.contains("unknown kind")),
        "{:?}",
        first.results[2]
    );

    // ---- the same push again: duplicates with the first outcomes, nothing new ----
    let head = store.feed_head().await.unwrap();
    let again: PushResponse = push(&http, &base, &nurse, items)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        again.results[0].outcome,
        PushOutcome::Duplicate {
            first: FirstOutcome::Accepted { accepted_at }
        }
    );
    assert_eq!(
        again.results[1].outcome,
        PushOutcome::Duplicate {
            first: FirstOutcome::Rejected {
                reason: reason.clone()
            }
        }
    );
    assert_eq!(store.feed_head().await.unwrap(), head);

    // Bad bodies are refused naming the field; the others in the same push still go through.
    let bad_vitals = uuid::Uuid::new_v4().to_string();
    let empty = uuid::Uuid::new_v4().to_string();
    let fine = uuid::Uuid::new_v4().to_string();
    let mut vitals = body.clone();
    vitals["vitals"]["spo2"] = json!(140);
    let blank = json!({"text": " ", "signed_at": Utc::now()});
    let elsewhere = uuid::Uuid::new_v4().to_string();
    let answer: PushResponse = push(
        &http,
        &base,
        &nurse,
        vec![
            note_item(&bad_vitals, &patient.id, vitals),
            note_item(&empty, &patient.id, blank),
            note_item(
                &fine,
                &patient.id,
                json!({"text": "Phoned daughter", "signed_at": Utc::now(), "replaces": note_id}),
            ),
            // An amendment must be of a note of the same patient.
            note_item(
                &elsewhere,
                &caseload[1],
                json!({"text": "Amended", "signed_at": Utc::now(), "replaces": note_id}),
            ),
        ],
    )
    .await
    .json()
    .await
    .unwrap();
    assert!(
        matches!(&answer.results[0].outcome, PushOutcome::Rejected { reason } if reason.starts_with("body.vitals")),
        "{:?}",
        answer.results[0]
    );
    assert!(
        matches!(&answer.results[1].outcome, PushOutcome::Rejected { reason } if reason.contains("empty")),
        "{:?}",
        answer.results[1]
    );
    assert!(matches!(
        answer.results[2].outcome,
        PushOutcome::Accepted { .. }
    ));
    assert!(
        matches!(&answer.results[3].outcome, PushOutcome::Rejected { reason } if reason.starts_with("body.replaces") && reason.contains("another patient")),
        "{:?}",
        answer.results[3]
    );
    // More than a push may hold is refused whole.
    let many: Vec<PushItem> = (0..=PUSH_MAX_ITEMS)
        .map(|_| note_item(&uuid::Uuid::new_v4().to_string(), &patient.id, body.clone()))
        .collect();
    let too_many = push(&http, &base, &nurse, many).await;
    assert_eq!(too_many.status(), 413);
    assert_eq!(
        too_many.json::<ApiError>().await.unwrap().code,
        "too_many_items"
    );

    // ---- her next pull carries the note back, accepted ----
    let (changes, next) = pull_all(&http, &base, &nurse, Some(cursor.clone())).await;
    cursor = next;
    let comp = composition(&changes, &note_id).expect("the Composition comes back");
    let delivery = note_delivery(&comp).unwrap();
    assert_eq!(delivery.state, DeliveryState::Accepted);
    assert_eq!(delivery.practice.ods, home);
    assert!(
        comp.json["section"][0]["text"]["div"]
            .as_str()
            .unwrap()
            .contains("&lt;left&gt; &amp; healing")
    );
    let pulled = resources(&changes);
    assert!(
        pulled
            .iter()
            .any(|(_, r)| r.id == format!("{note_id}-news2"))
    );
    let amendment = composition(&changes, &fine).unwrap();
    assert_eq!(amendment.json["status"], "amended");
    assert_eq!(
        amendment.json["relatesTo"][0]["targetReference"]["reference"],
        format!("Composition/{note_id}")
    );
    // The note refused for the stranger never reached anything.
    assert!(
        pulled
            .iter()
            .all(|(_, r)| !r.id.starts_with(&stranger_note))
    );

    // ---- the registered practice's inbox has both notes; another practice's has none ----
    let bundle = inbox(&http, &base, &home_auth).await;
    assert_eq!(bundle["resourceType"], "Bundle");
    assert_eq!(bundle["type"], "searchset");
    assert_eq!(bundle["total"], 2);
    // Oldest first; the two arrived in the same second or one after the other.
    let mut open = inbox_notes(&bundle);
    open.sort();
    let mut expected = vec![note_id.clone(), fine.clone()];
    expected.sort();
    assert_eq!(open, expected);
    let types: Vec<&str> = bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"]["resourceType"].as_str().unwrap())
        .collect();
    for t in [
        "Composition",
        "Encounter",
        "Observation",
        "Condition",
        "Patient",
    ] {
        assert!(types.contains(&t), "no {t} in the inbox: {types:?}");
    }
    assert_eq!(types.iter().filter(|t| **t == "Patient").count(), 1);
    assert_eq!(
        inbox(&http, &base, &other_auth).await["total"],
        0,
        "another practice sees none of them"
    );
    let no_credential = http
        .get(format!("{base}/api/v1/practice/inbox"))
        .send()
        .await
        .unwrap();
    assert_eq!(no_credential.status(), 401);

    // ---- malformed or wrong acknowledgements: 4xx naming the ack and field; nothing changes ----
    for (auth, body, names) in [
        (
            &home_auth,
            json!({"acks": [{"note_id": note_id, "status": "received"},
                            {"note_id": note_id, "status": "lost"}]}),
            "acks[1].status",
        ),
        (
            &home_auth,
            json!({"acks": [{"note_id": note_id, "status": "rejected"}]}),
            "acks[0].reason",
        ),
        (
            &home_auth,
            json!({"acks": [{"note_id": stranger_note, "status": "filed"}]}),
            "acks[0].note_id",
        ),
        (
            &other_auth,
            json!({"acks": [{"note_id": note_id, "status": "filed"}]}),
            "acks[0].note_id",
        ),
    ] {
        let refused = ack(&http, &base, auth, body).await;
        assert_eq!(refused.status(), 400);
        let e: ApiError = refused.json().await.unwrap();
        assert!(e.message.contains(names), "{}", e.message);
    }
    let not_json = http
        .post(format!("{base}/api/v1/practice/inbox/ack"))
        .header("authorization", &home_auth)
        .body("{acks: nope")
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status(), 400);
    assert_eq!(inbox_notes(&inbox(&http, &base, &home_auth).await).len(), 2);
    let (unchanged, next) = pull_all(&http, &base, &nurse, Some(cursor.clone())).await;
    assert!(composition(&unchanged, &note_id).is_none());
    cursor = next;

    // ---- received, then filed: the author learns each ----
    let received = AckRequest {
        acks: vec![Ack {
            note_id: note_id.clone(),
            status: AckStatus::Received,
            reason: None,
        }],
    };
    let answer: AckResponse = ack(
        &http,
        &base,
        &home_auth,
        serde_json::to_value(&received).unwrap(),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(answer.changed, 1);
    let repeat: AckResponse = ack(
        &http,
        &base,
        &home_auth,
        serde_json::to_value(&received).unwrap(),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(repeat.changed, 0, "a repeat changes nothing");
    let (changes, next) = pull_all(&http, &base, &nurse, Some(cursor)).await;
    cursor = next;
    let comp = composition(&changes, &note_id).unwrap();
    assert_eq!(note_delivery(&comp).unwrap().state, DeliveryState::Received);
    // Received notes stay in the inbox until filed or rejected.
    assert_eq!(inbox_notes(&inbox(&http, &base, &home_auth).await).len(), 2);

    let before_filing = Utc::now() - chrono::Duration::seconds(1);
    let filed: AckResponse = ack(
        &http,
        &base,
        &home_auth,
        json!({"acks": [{"note_id": note_id, "status": "filed"},
                        {"note_id": fine, "status": "rejected", "reason": "Duplicate of a phone note"}]}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(filed.changed, 2);
    let (changes, next) = pull_all(&http, &base, &nurse, Some(cursor)).await;
    cursor = next;
    let delivery = note_delivery(&composition(&changes, &note_id).unwrap()).unwrap();
    assert_eq!(delivery.state, DeliveryState::Filed);
    assert_eq!(delivery.practice.ods, home);
    assert_eq!(delivery.practice.name, patient.practice_name);
    assert!(delivery.at >= before_filing && delivery.at <= Utc::now());
    let rejected = note_delivery(&composition(&changes, &fine).unwrap()).unwrap();
    assert_eq!(rejected.state, DeliveryState::Rejected);
    assert_eq!(
        rejected.reason.as_deref(),
        Some("Duplicate of a phone note")
    );
    assert!(inbox_notes(&inbox(&http, &base, &home_auth).await).is_empty());

    // Never backwards: a late receipt changes nothing, rejecting a filed note is refused.
    let late: AckResponse = ack(
        &http,
        &base,
        &home_auth,
        serde_json::to_value(&received).unwrap(),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(late.changed, 0);
    let flip = ack(
        &http,
        &base,
        &home_auth,
        json!({"acks": [{"note_id": note_id, "status": "rejected", "reason": "changed our mind"}]}),
    )
    .await;
    assert_eq!(flip.status(), 409);
    let (changes, next) = pull_all(&http, &base, &nurse, Some(cursor)).await;
    cursor = next;
    assert!(composition(&changes, &note_id).is_none());

    // ---- a note stored but never written back (the server stopped in between) is written
    // back when the device sends it again, answered as the duplicate it is ----
    let interrupted = uuid::Uuid::new_v4().to_string();
    let nurse_row = store.user_by_username("nurse.demo").await.unwrap().unwrap();
    let device_id = store
        .audit_rows()
        .await
        .unwrap()
        .iter()
        .find(|r| r.event.action == "note_accepted")
        .and_then(|r| r.event.actor.strip_prefix("device:").map(str::to_owned))
        .unwrap();
    let stored_at = chrono::DateTime::from_timestamp(Utc::now().timestamp(), 0).unwrap();
    let interrupted_body = json!({"text": "Bloods taken", "signed_at": Utc::now()});
    store
        .insert_note(store::NoteRow {
            id: interrupted.clone(),
            patient_id: patient.id.clone(),
            author_user_id: nurse_row.id.clone(),
            device_id,
            service_id: nurse_row.service_id.clone(),
            kind: PUSH_KIND_NOTE.into(),
            body: Some(interrupted_body.to_string()),
            created_at: stored_at,
            received_at: stored_at,
            outcome: store::NoteOutcome::Accepted,
            reason: None,
            delivery: Some(DeliveryState::Accepted),
            delivery_at: Some(stored_at),
            delivery_reason: None,
            practice_ods: Some(home.clone()),
        })
        .await
        .unwrap();
    let resent: PushResponse = push(
        &http,
        &base,
        &nurse,
        vec![note_item(&interrupted, &patient.id, interrupted_body)],
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(
        resent.results[0].outcome,
        PushOutcome::Duplicate {
            first: FirstOutcome::Accepted {
                accepted_at: stored_at
            }
        }
    );
    let (changes, _) = pull_all(&http, &base, &nurse, Some(cursor)).await;
    assert!(composition(&changes, &interrupted).is_some());
    assert_eq!(
        inbox_notes(&inbox(&http, &base, &home_auth).await),
        vec![interrupted]
    );

    // ---- other services: the hub (its agreement shares notes) sees the note; the
    // ambulance (summary, problems, ... but not notes) sees the patient without it ----
    let gp = {
        let u = user("gp.demo");
        enrol_for_token(&http, &base, &u.username, &u.password, &u.totp_secret).await
    };
    let (changes, _) = pull_all(&http, &base, &gp, None).await;
    let comp = composition(&changes, &note_id).expect("the hub sees the note");
    assert_eq!(note_delivery(&comp).unwrap().state, DeliveryState::Filed);
    let para = {
        let u = user("para.demo");
        enrol_for_token(&http, &base, &u.username, &u.password, &u.totp_secret).await
    };
    let (changes, _) = pull_all(&http, &base, &para, None).await;
    let seen = resources(&changes);
    assert!(
        seen.iter().any(|(pid, _)| pid == &patient.id),
        "the crew has the patient"
    );
    assert!(
        seen.iter().all(|(_, r)| !r.is_note()),
        "nothing of a note reaches a service that does not share notes"
    );

    // The audit log holds the note's acceptance and acknowledgements, and verifies.
    let rows = store.audit_rows().await.unwrap();
    let actions: Vec<(&str, &str)> = rows
        .iter()
        .filter(|r| r.event.patient_id.as_deref() == Some(patient.id.as_str()))
        .map(|r| (r.event.actor.as_str(), r.event.action.as_str()))
        .collect();
    assert!(
        actions
            .iter()
            .any(|(a, x)| a.starts_with("device:") && *x == "note_accepted")
    );
    assert!(actions.contains(&(format!("practice:{home}").as_str(), "note_filed")));
    assert!(doorstep_server::audit::verify(&rows).is_ok());
    server.shutdown().await;
}
