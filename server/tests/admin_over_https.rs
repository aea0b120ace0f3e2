//! Administration over real HTTPS, end to end on the server, on SQLite and on PostgreSQL (with
//! two server nodes on one database): only an administrator's credential opens the admin
//! routes; a malformed agreement or value set is refused naming the field and changes
//! nothing; an agreement change makes the nurse's device rebuild (410) and then carry exactly
//! the new view; a value set loaded through one node is applied by the other at its next
//! request; dissent (by an administrator or by the patient's own practice) removes the
//! patient at the next pull; with its only agreement retired the nurse gets nothing and the
//! refusal is audited.

use doorstep_testkit::http::{enrol_for_token, https_client};
use std::path::Path;

use base64::Engine;
use chrono::Utc;
use doorstep_protocol::{ApiError, Change, PullPage, ResyncReason, ResyncRequired};
use doorstep_record::Section;
use doorstep_record::agreement::Agreement;
use doorstep_record::fhir::Resource;
use doorstep_server::demo::{self, DemoSpec};
use doorstep_server::run::{ServeConfig, TlsMode, start};
use doorstep_server::{audit, auth, store};
use serde_json::{Value, json};

fn basic(id: &str, secret: &str) -> String {
    let raw = format!("{id}:{secret}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

/// One pull: the page, or the 410's reason.
async fn pull_once(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    cursor: Option<&str>,
) -> Result<PullPage, ResyncReason> {
    let url = match cursor {
        Some(c) => format!("{base}/api/v1/sync/pull?cursor={c}"),
        None => format!("{base}/api/v1/sync/pull"),
    };
    let response = http.get(url).bearer_auth(token).send().await.unwrap();
    match response.status().as_u16() {
        200 => Ok(response.json().await.unwrap()),
        410 => Err(response.json::<ResyncRequired>().await.unwrap().reason),
        other => panic!("pull answered {other}: {}", response.text().await.unwrap()),
    }
}

/// Pull until caught up (no rebuild expected); every change and the last cursor.
async fn pull_all(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    mut cursor: Option<String>,
) -> (Vec<Change>, String) {
    let mut changes = Vec::new();
    for _ in 0..200 {
        let page = pull_once(http, base, token, cursor.as_deref())
            .await
            .expect("no rebuild expected");
        changes.extend(page.changes);
        cursor = Some(page.cursor);
        if !page.more {
            return (changes, cursor.unwrap());
        }
    }
    panic!("the pull does not end");
}

/// A device's copy built from changes: patient id -> resources (by type and id).
type Copy = std::collections::BTreeMap<String, std::collections::BTreeMap<(String, String), Value>>;

fn apply(copy: &mut Copy, changes: &[Change]) {
    for c in changes {
        match c {
            Change::PatientAdded {
                patient, resources, ..
            } => {
                copy.insert(
                    patient.patient_id.clone(),
                    resources
                        .iter()
                        .map(|r| {
                            (
                                (
                                    r["resourceType"].as_str().unwrap().to_string(),
                                    r["id"].as_str().unwrap().to_string(),
                                ),
                                r.clone(),
                            )
                        })
                        .collect(),
                );
            }
            Change::PatientRemoved { patient_id } => {
                copy.remove(patient_id);
            }
            Change::Upsert {
                patient_id,
                resource,
            } => {
                copy.entry(patient_id.clone()).or_default().insert(
                    (
                        resource["resourceType"].as_str().unwrap().to_string(),
                        resource["id"].as_str().unwrap().to_string(),
                    ),
                    resource.clone(),
                );
            }
            Change::Delete {
                patient_id,
                resource_type,
                resource_id,
            } => {
                if let Some(p) = copy.get_mut(patient_id) {
                    p.remove(&(resource_type.clone(), resource_id.clone()));
                }
            }
            _ => {}
        }
    }
}

fn sections_held(copy: &Copy) -> std::collections::BTreeSet<Section> {
    copy.values()
        .flat_map(|p| p.values())
        .filter_map(|r| Resource::from_json(r.clone()).unwrap().section())
        .collect()
}

async fn error_of(response: reqwest::Response) -> (u16, ApiError) {
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn administration_over_https_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let database = store::DatabaseUrl::in_data_dir(dir.path());
    administration(dir.path(), database, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn administration_over_https_on_postgres_with_two_nodes() {
    let Some(cluster) = doorstep_testkit::PgCluster::start_or_skip("admin on PostgreSQL") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let database = store::DatabaseUrl::parse(&cluster.create_database().unwrap()).unwrap();
    administration(dir.path(), database, true).await;
}

async fn administration(dir: &Path, database: store::DatabaseUrl, two_nodes: bool) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let data = dir.to_path_buf();
    let spec = DemoSpec::small(13, Utc::now().date_naive());
    {
        let (data, spec, database) = (data.clone(), spec.clone(), database.clone());
        tokio::task::spawn_blocking(move || demo::seed_with_database(&data, &database, &spec))
            .await
            .unwrap()
            .unwrap();
    }
    let users = demo::read_demo_users(&data).unwrap();
    let nurse_user = users
        .iter()
        .find(|u| u.username == "nurse.demo")
        .unwrap()
        .clone();
    let store = store::open(&database).await.unwrap();
    let nurse_row = store.user_by_username("nurse.demo").await.unwrap().unwrap();
    let admin = basic(
        "ada",
        &auth::issue_admin_secret(store.as_ref(), "ada", "cli:test", Utc::now())
            .await
            .unwrap(),
    );

    let config = || ServeConfig {
        database: Some(database.clone()),
        listen: "127.0.0.1:0".parse().unwrap(),
        tls: TlsMode::Dev,
        ..ServeConfig::new(data.clone())
    };
    let node_a = start(config()).await.unwrap();
    let node_b = if two_nodes {
        Some(start(config()).await.unwrap())
    } else {
        None
    };
    let base = node_a.base_url.clone();
    let base_b = node_b.as_ref().map_or(base.clone(), |n| n.base_url.clone());
    let http = https_client(&node_a.ca_pem_path);
    let nurse = enrol_for_token(
        &http,
        &base,
        &nurse_user.username,
        &nurse_user.password,
        &nurse_user.totp_secret,
    )
    .await;
    let (changes, cursor) = pull_all(&http, &base, &nurse, None).await;
    let mut copy = Copy::new();
    apply(&mut copy, &changes);
    assert!(copy.len() >= 3, "the nurse holds patients");

    // The patients' practices, and a practice credential of one of them.
    let patients = store.patients().await.unwrap();
    let held: Vec<store::PatientRow> = patients
        .iter()
        .filter(|p| copy.contains_key(&p.id))
        .cloned()
        .collect();
    let home = held[0].practice_ods.clone();
    let practice = basic(
        &home,
        &auth::issue_source_secret(store.as_ref(), &home, "cli:test", Utc::now())
            .await
            .unwrap(),
    );

    // ---- only an administrator's credential opens the admin routes ----
    let list = format!("{base}/api/v1/admin/agreements");
    let r = http.get(&list).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .get(&list)
        .header("authorization", basic("ada", "wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let (status, e) = error_of(http.get(&list).bearer_auth(&nurse).send().await.unwrap()).await;
    assert_eq!((status, e.code.as_str()), (403, "forbidden"));
    assert!(e.message.contains("clinician"), "{}", e.message);
    let (status, e) = error_of(
        http.get(&list)
            .header("authorization", &practice)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, e.code.as_str()), (403, "forbidden"));
    assert!(e.message.contains("practice"), "{}", e.message);
    let all: Vec<Agreement> = http
        .get(&list)
        .header("authorization", &admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mine: Vec<Agreement> = all
        .iter()
        .filter(|a| a.service == nurse_row.service_id && a.roles.contains(&nurse_row.role))
        .cloned()
        .collect();
    assert!(!mine.is_empty());
    let compare: Value = http
        .get(format!("{base}/api/v1/admin/agreements/compare"))
        .header("authorization", &admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(compare["agreements"].as_array().unwrap().len(), all.len());
    assert_eq!(
        compare["sections"].as_array().unwrap().len(),
        Section::ALL.len()
    );

    // ---- malformed input is refused naming the field, and nothing changes ----
    let before = (
        store.all_agreements().await.unwrap(),
        store.audit_rows().await.unwrap().len(),
        store.value_sets().await.unwrap(),
    );
    let target = &mine[0];
    let mut bad = serde_json::to_value(target).unwrap();
    bad["sections"]
        .as_array_mut()
        .unwrap()
        .push(json!({"section": "feet"}));
    let n = bad["sections"].as_array().unwrap().len() - 1;
    let (status, e) = error_of(
        http.put(format!("{base}/api/v1/admin/agreements/{}", target.id))
            .header("authorization", &admin)
            .json(&json!({"reason": "add feet", "agreement": bad}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 422);
    assert!(
        e.message.contains(&format!(
            "agreement.sections[{n}].section: unknown section \"feet\" (one of summary, problems"
        )),
        "{}",
        e.message
    );
    let mut bad = serde_json::to_value(target).unwrap();
    bad["practices"] = json!(["X1"]);
    bad["idle_lock_minutes"] = json!(0);
    let (status, e) = error_of(
        http.put(format!("{base}/api/v1/admin/agreements/{}", target.id))
            .header("authorization", &admin)
            .json(&json!({"reason": "typo", "agreement": bad}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 422);
    assert!(
        e.message
            .contains("agreement.practices[0]: \"X1\" is not an ODS code")
            && e.message
                .contains("agreement.idle_lock_minutes: must be 1..=60"),
        "{}",
        e.message
    );
    let (status, e) = error_of(
        http.post(format!(
            "{base}/api/v1/admin/agreements/{}/retire",
            target.id
        ))
        .header("authorization", &admin)
        .json(&json!({}))
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, 422);
    assert!(e.message.contains("reason: required"), "{}", e.message);
    let (status, e) = error_of(
        http.post(format!("{base}/api/v1/admin/valuesets"))
            .header("authorization", &admin)
            .json(&json!({"reason": "local set", "value_set": {
                "resourceType": "ValueSet", "status": "active",
                "compose": {"include": [{"system": "http://snomed.info/sct",
                                         "concept": [{"code": "44054006"}]}]}}}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 422);
    assert!(
        e.message.contains("value_set.url: missing"),
        "{}",
        e.message
    );
    let after = (
        store.all_agreements().await.unwrap(),
        store.audit_rows().await.unwrap().len(),
        store.value_sets().await.unwrap(),
    );
    assert_eq!(before, after, "a refused change changes nothing");
    // The device is not asked to rebuild by refused changes.
    let (changes, cursor) = pull_all(&http, &base, &nurse, Some(cursor)).await;
    apply(&mut copy, &changes);

    // ---- an agreement change: rebuild, then exactly the new view ----
    let held_sections = sections_held(&copy);
    let removed = [
        Section::Encounters,
        Section::Observations,
        Section::Immunisations,
        Section::Procedures,
        Section::Documents,
    ]
    .into_iter()
    .find(|s| held_sections.contains(s))
    .expect("the nurse holds a section the summary does not admit");
    for a in &mine {
        if !a.sections.iter().any(|s| s.section == removed) {
            continue;
        }
        let mut changed = a.clone();
        changed.sections.retain(|s| s.section != removed);
        if changed.purpose.is_empty() {
            changed.purpose = "Direct care".into();
        }
        if changed.legal_basis.is_empty() {
            changed.legal_basis = "UK GDPR 6(1)(e), 9(2)(h)".into();
        }
        let r = http
            .put(format!("{base}/api/v1/admin/agreements/{}", a.id))
            .header("authorization", &admin)
            .json(&json!({"reason": format!("{removed} not needed"), "agreement": changed}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
        let stored: Agreement = store.agreement(&a.id).await.unwrap().unwrap();
        assert_eq!(stored.version, a.version + 1);
    }
    assert_eq!(
        pull_once(&http, &base, &nurse, Some(&cursor))
            .await
            .unwrap_err(),
        ResyncReason::AccessChanged
    );
    let (changes, cursor) = pull_all(&http, &base, &nurse, None).await;
    let mut copy = Copy::new();
    apply(&mut copy, &changes);
    assert!(!copy.is_empty());
    assert!(
        !sections_held(&copy).contains(&removed),
        "{removed} is no longer carried"
    );

    // ---- a value set loaded through node A is applied by node B at its next request ----
    let code = copy
        .values()
        .flat_map(|p| p.values())
        .filter(|r| r["resourceType"] == "Condition")
        .find_map(|r| r["code"]["coding"][0]["code"].as_str().map(str::to_string))
        .expect("a visible condition");
    let r = http
        .post(format!("{base}/api/v1/admin/valuesets"))
        .header("authorization", &admin)
        .json(
            &json!({"reason": "the privacy officer asked", "value_set": {
            "resourceType": "ValueSet", "url": "https://federation.example/ValueSet/local",
            "title": "Local exclusions", "status": "active",
            "compose": {"include": [{"system": "http://snomed.info/sct",
                                     "concept": [{"code": code}]}]}}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert_eq!(
        pull_once(&http, &base_b, &nurse, Some(&cursor))
            .await
            .unwrap_err(),
        ResyncReason::AccessChanged
    );
    let (changes, cursor) = pull_all(&http, &base_b, &nurse, None).await;
    let mut copy = Copy::new();
    apply(&mut copy, &changes);
    assert!(
        !copy
            .values()
            .flat_map(|p| p.values())
            .any(|r| r["code"]["coding"][0]["code"].as_str() == Some(code.as_str())),
        "the loaded code is withheld"
    );

    // ---- dissent, by the administrator and by the patient's own practice ----
    let held: Vec<store::PatientRow> = patients
        .iter()
        .filter(|p| copy.contains_key(&p.id))
        .cloned()
        .collect();
    let by_admin = held[0].clone();
    let r = http
        .put(format!(
            "{base}/api/v1/admin/patients/{}/dissent",
            by_admin.nhs_number
        ))
        .header("authorization", &admin)
        .json(&json!({"reason": "the patient asked", "dissent": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let (changes, cursor) = pull_all(&http, &base, &nurse, Some(cursor)).await;
    assert!(
        changes.iter().any(
            |c| matches!(c, Change::PatientRemoved { patient_id } if *patient_id == by_admin.id)
        )
    );
    apply(&mut copy, &changes);
    assert!(!copy.contains_key(&by_admin.id));
    if let Some(own) = held
        .iter()
        .find(|p| p.practice_ods == home && p.id != by_admin.id)
    {
        let r = http
            .put(format!(
                "{base}/api/v1/practice/patients/{}/dissent",
                own.nhs_number
            ))
            .header("authorization", &practice)
            .json(&json!({"reason": "opt-out form received", "dissent": true}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
        let (changes, _) = pull_all(&http, &base, &nurse, Some(cursor.clone())).await;
        apply(&mut copy, &changes);
        assert!(!copy.contains_key(&own.id));
    }
    if let Some(other) = patients.iter().find(|p| p.practice_ods != home) {
        let r = http
            .put(format!(
                "{base}/api/v1/practice/patients/{}/dissent",
                other.nhs_number
            ))
            .header("authorization", &practice)
            .json(&json!({"reason": "not ours", "dissent": true}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "another practice's patient is not found");
        assert!(!store.patient(&other.id).await.unwrap().unwrap().dissent || other.dissent);
    }
    let (_, cursor) = pull_all(&http, &base, &nurse, Some(cursor)).await;

    // ---- the only agreements retired: nothing, and an audited refusal ----
    for a in &mine {
        let r = http
            .post(format!("{base}/api/v1/admin/agreements/{}/retire", a.id))
            .header("authorization", &admin)
            .json(&json!({"reason": "the service closed"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }
    assert_eq!(
        pull_once(&http, &base_b, &nurse, Some(&cursor))
            .await
            .unwrap_err(),
        ResyncReason::AccessChanged
    );
    let (changes, _) = pull_all(&http, &base_b, &nurse, None).await;
    assert!(
        !changes
            .iter()
            .any(|c| matches!(c, Change::PatientAdded { .. })),
        "nothing is sent"
    );
    let rows = store.audit_rows().await.unwrap();
    audit::verify(&rows).unwrap();
    assert!(
        rows.iter()
            .any(|r| r.event.action == "access_refused" && r.event.actor == "user:nurse.demo")
    );
    let admin_actions: Vec<&str> = rows
        .iter()
        .filter(|r| r.event.actor == "admin:ada")
        .map(|r| r.event.action.as_str())
        .collect();
    for action in [
        "agreement_updated",
        "value_set_loaded",
        "dissent_set",
        "agreement_retired",
    ] {
        assert!(admin_actions.contains(&action), "{action} audited");
    }
    assert!(
        rows.iter()
            .filter(|r| r.event.actor == "admin:ada" || r.event.actor.starts_with("practice:"))
            .filter(|r| r.event.action != "source_credential_issued")
            .all(|r| r.event.detail["reason"]
                .as_str()
                .is_some_and(|s| !s.is_empty()))
    );

    node_a.shutdown().await;
    if let Some(b) = node_b {
        b.shutdown().await;
    }
}
