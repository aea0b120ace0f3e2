//! Bookings, caseloads and figures over real HTTPS, on SQLite and on PostgreSQL: a
//! receptionist of one practice finds and books only her own practice's patients; the booking
//! reaches the session clinician's real device at its next sync and leaves it when cancelled;
//! a full session, an ended session and a dissenting patient are refused; a team leader adds,
//! transfers and discharges a caseload patient; the service manager's figures (JSON and CSV)
//! match what this test did, counted by hand.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, Datelike, Duration, DurationRound, NaiveTime, Timelike, Utc};
use doorstep_client::{Device, EnrolParams, NoteInput};
use doorstep_server::bookings::{self, BookRequest, NewSession};
use doorstep_server::demo::{self, DemoSpec, DemoUser, HUB_SERVICE};
use doorstep_server::run::{ServeConfig, TlsMode, start};
use doorstep_server::store::{self, DatabaseUrl, PatientRow, Store};
use doorstep_testkit::http::{https_client, staff_token};
use serde_json::{Value, json};

const PIN: &str = "135790";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookings_caseloads_and_figures_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let database = DatabaseUrl::in_data_dir(dir.path());
    scenario(dir.path(), database).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookings_caseloads_and_figures_on_postgres() {
    let Some(cluster) = doorstep_testkit::PgCluster::start_or_skip("bookings on PostgreSQL") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let database = DatabaseUrl::parse(&cluster.create_database().unwrap()).unwrap();
    scenario(dir.path(), database).await;
}

/// An HTTPS caller with one staff token.
#[derive(Clone)]
struct Caller {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Caller {
    async fn send(&self, method: &str, path: &str, body: Option<Value>) -> (u16, String) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    }

    async fn json(&self, method: &str, path: &str, body: Option<Value>, expect: u16) -> Value {
        let (status, text) = self.send(method, path, body).await;
        assert_eq!(status, expect, "{method} {path}: {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }
}

fn user<'a>(users: &'a [DemoUser], name: &str) -> &'a DemoUser {
    users.iter().find(|u| u.username == name).unwrap()
}

/// The whole hour at or before `t`, kept before 18:00 so a one-hour session ends the same day
/// and clears the demo's evening sessions (18:30 to 20:30) of the same clinician.
fn hour_before(t: DateTime<Utc>) -> DateTime<Utc> {
    let h = t.duration_trunc(Duration::hours(1)).unwrap();
    if h.hour() >= 18 {
        h.date_naive().and_hms_opt(17, 0, 0).unwrap().and_utc()
    } else {
        h
    }
}

fn week(t: DateTime<Utc>) -> String {
    let w = t.iso_week();
    format!("{}-W{:02}", w.year(), w.week())
}

fn one_hour_session(start: DateTime<Utc>, slots: u32) -> NewSession {
    NewSession {
        date: start.date_naive(),
        start: start.time(),
        end: (start + Duration::hours(1)).time(),
        clinician: "gp.demo".into(),
        slots,
        reason: "test session".into(),
    }
}

async fn on_device(device: &Device, patient_id: &str) -> Option<doorstep_ipc::ListRow> {
    device.sync().await.expect("sync");
    device
        .list(None, doorstep_client::today())
        .expect("list")
        .into_iter()
        .find(|r| r.patient_id == patient_id)
}

async fn scenario(dir: &Path, database: DatabaseUrl) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    {
        let (data, database) = (dir.to_path_buf(), database.clone());
        let mut spec = DemoSpec::small(23, Utc::now().date_naive());
        // Room for eight patients of one practice on no list.
        spec.federation.patients_per_practice = 40;
        spec.federation.resources_per_patient = 20;
        tokio::task::spawn_blocking(move || demo::seed_with_database(&data, &database, &spec))
            .await
            .unwrap()
            .unwrap();
    }
    let users = demo::read_demo_users(dir).unwrap();
    let store: std::sync::Arc<dyn Store> = store::open(&database).await.unwrap();
    let server = start(ServeConfig {
        database: Some(database.clone()),
        listen: "127.0.0.1:0".parse().unwrap(),
        tls: TlsMode::Dev,
        ..ServeConfig::new(dir)
    })
    .await
    .unwrap();
    let base = server.base_url.clone();
    let http = https_client(&server.ca_pem_path);
    let staff = |name: &str| {
        let u = user(&users, name).clone();
        let (http, base) = (http.clone(), base.clone());
        async move {
            let token = staff_token(&http, &base, &u.username, &u.password, &u.totp_secret).await;
            Caller { http, base, token }
        }
    };
    let reception = staff("reception.demo").await;
    let manager = staff("manager.demo").await;
    let lead = staff("lead.demo").await;
    let practice = user(&users, "reception.demo").practice.clone().unwrap();
    // Staff hold no records: a receptionist cannot enrol a device, a clinician cannot sign in
    // as staff.
    for (path, name) in [
        ("/api/v1/auth/enrol", "reception.demo"),
        ("/api/v1/staff/sign-in", "nurse.demo"),
    ] {
        let u = user(&users, name);
        let response = http
            .post(format!("{base}{path}"))
            .json(&json!({"username": u.username, "password": u.password,
                          // The next step's code: the current one signed her in above.
                          "totp": doorstep_testkit::totp_code(&u.totp_secret, 30),
                          "device_name": "Front desk PC"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 403, "{path} {name}");
        assert!(
            response
                .text()
                .await
                .unwrap()
                .contains("wrong_kind_of_sign_in")
        );
    }
    assert!(
        store
            .devices()
            .await
            .unwrap()
            .iter()
            .all(|d| d.name != "Front desk PC")
    );

    // Patients: hers on no list, one of another practice, one of hers who dissents.
    let mut listed = Vec::new();
    for list in store.lists().await.unwrap() {
        for e in store.list_entries(&list.id).await.unwrap() {
            listed.push(e.patient_id);
        }
    }
    let all = store.patients().await.unwrap();
    let hers: Vec<&PatientRow> = all
        .iter()
        .filter(|p| p.practice_ods == practice && !p.dissent && !listed.contains(&p.id))
        .collect();
    assert!(hers.len() >= 8, "only {} free patients of hers", hers.len());
    let other = all.iter().find(|p| p.practice_ods != practice).unwrap();
    let dissenting = hers[7];
    store.set_dissent(&dissenting.id, true).await.unwrap();
    let (p, p2, p3, a, ended_patient, caseload_patient) =
        (hers[0], hers[1], hers[2], hers[3], hers[4], hers[5]);

    // ---- a service manager publishes a session; bad input names the field ----
    let tomorrow = (Utc::now() + Duration::days(1)).date_naive();
    let body = |slots: u32| {
        json!({"date": tomorrow, "start": "14:00", "end": "15:00", "clinician": "gp.demo",
               "slots": slots, "reason": "winter pressures"})
    };
    let refused = manager
        .json("POST", "/api/v1/sessions", Some(body(0)), 422)
        .await;
    assert!(
        refused["message"].as_str().unwrap().contains("slots"),
        "{refused}"
    );
    let refused = manager
        .json(
            "POST",
            "/api/v1/sessions",
            Some(json!({"date": tomorrow, "start": "14:00", "end": "15:00",
                        "clinician": "nurse.demo", "slots": 2, "reason": "x"})),
            422,
        )
        .await;
    assert!(
        refused["message"].as_str().unwrap().contains("clinician"),
        "{refused}"
    );
    let session = manager
        .json("POST", "/api/v1/sessions", Some(body(2)), 201)
        .await;
    let session_id = session["id"].as_str().unwrap().to_string();
    let clash = manager
        .json(
            "POST",
            "/api/v1/sessions",
            Some(json!({"date": tomorrow, "start": "14:30", "end": "16:00",
                        "clinician": "gp.demo", "slots": 3, "reason": "double booked"})),
            409,
        )
        .await;
    assert!(
        clash["message"]
            .as_str()
            .unwrap()
            .contains("already has a session"),
        "{clash}"
    );
    let slot0 = tomorrow
        .and_time(NaiveTime::from_hms_opt(14, 0, 0).unwrap())
        .and_utc();
    assert_eq!(session["free"].as_array().unwrap().len(), 2);

    // ---- she sees it, and finds only her own practice's patients ----
    let listing = reception
        .json("GET", &format!("/api/v1/sessions?to={tomorrow}"), None, 200)
        .await;
    assert!(
        listing["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["id"] == session_id.as_str()),
        "{listing}"
    );
    let found = reception
        .json(
            "POST",
            "/api/v1/bookings/search",
            Some(json!({"nhs_number": p.nhs_number})),
            200,
        )
        .await;
    let matched = &found["matches"][0];
    let keys: Vec<&str> = matched
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        ["patient_id", "name", "birth_date", "nhs_number"],
        "name, DOB, NHS number only"
    );
    assert_eq!(matched["patient_id"], p.id.as_str());
    assert!(!matched["name"].as_str().unwrap().is_empty());
    let elsewhere = reception
        .json(
            "POST",
            "/api/v1/bookings/search",
            Some(json!({"nhs_number": other.nhs_number})),
            404,
        )
        .await;
    assert!(
        elsewhere["message"]
            .as_str()
            .unwrap()
            .contains("your practice"),
        "{elsewhere}"
    );
    assert!(!elsewhere.to_string().contains(&other.id));
    let refused = reception
        .json(
            "POST",
            &format!("/api/v1/sessions/{session_id}/bookings"),
            Some(json!({"patient_id": other.id, "reason": "review"})),
            403,
        )
        .await;
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("not registered at your practice"),
        "{refused}"
    );
    let audited = store.audit_rows().await.unwrap();
    assert!(
        audited.iter().any(|r| r.event.action == "booking_refused"
            && r.event.patient_id.as_deref() == Some(other.id.as_str())
            && r.event.actor == "user:reception.demo"),
        "the refusal is audited with the patient it named"
    );
    assert!(
        audited
            .iter()
            .any(|r| r.event.action == "booking_search"
                && r.event.detail["registered_elsewhere"] == 1)
    );

    // ---- the booking reaches the clinician's device, and leaves it when cancelled ----
    let gp = user(&users, "gp.demo");
    let device_dir = tempfile::tempdir().unwrap();
    let device = Device::enrol(
        device_dir.path(),
        EnrolParams {
            server_url: base.clone(),
            ca_pem_path: Some(server.ca_pem_path.clone()),
            username: gp.username.clone(),
            password: gp.password.as_str().into(),
            totp: doorstep_testkit::totp_code(&gp.totp_secret, 0).into(),
            pin: PIN.into(),
            device_name: "Hub laptop".into(),
            dev_mode: false,
        },
    )
    .await
    .expect("enrol gp.demo");
    assert!(on_device(&device, &p.id).await.is_none(), "not booked yet");
    let booked = reception
        .json(
            "POST",
            &format!("/api/v1/sessions/{session_id}/bookings"),
            Some(json!({"patient_id": p.id, "reason": "chest infection review"})),
            201,
        )
        .await;
    assert_eq!(booked["slot"], 0);
    let row = on_device(&device, &p.id)
        .await
        .expect("the booked patient on the device");
    assert_eq!(row.list_kind, "appointment");
    assert_eq!(row.reason, "chest infection review");
    assert_eq!(row.starts_at, slot0);
    let booking_id = booked["booking_id"].as_i64().unwrap();
    let refused = reception
        .json(
            "POST",
            &format!("/api/v1/bookings/{booking_id}/cancel"),
            Some(json!({"reason": ""})),
            422,
        )
        .await;
    assert!(
        refused["message"].as_str().unwrap().contains("reason"),
        "{refused}"
    );
    reception
        .json(
            "POST",
            &format!("/api/v1/bookings/{booking_id}/cancel"),
            Some(json!({"reason": "patient feels better"})),
            200,
        )
        .await;
    assert!(
        on_device(&device, &p.id).await.is_none(),
        "cancelled: gone from the device"
    );
    reception
        .json(
            "POST",
            &format!("/api/v1/bookings/{booking_id}/cancel"),
            Some(json!({"reason": "again"})),
            409,
        )
        .await;

    // ---- a full session, a dissenting patient, an ended session ----
    for patient in [p, p2] {
        reception
            .json(
                "POST",
                &format!("/api/v1/sessions/{session_id}/bookings"),
                Some(json!({"patient_id": patient.id, "reason": "review"})),
                201,
            )
            .await;
    }
    let full = reception
        .json(
            "POST",
            &format!("/api/v1/sessions/{session_id}/bookings"),
            Some(json!({"patient_id": p3.id, "reason": "review"})),
            409,
        )
        .await;
    assert!(full["message"].as_str().unwrap().contains("full"), "{full}");
    let dissent = reception
        .json(
            "POST",
            &format!("/api/v1/sessions/{session_id}/bookings"),
            Some(json!({"patient_id": dissenting.id, "reason": "review"})),
            403,
        )
        .await;
    assert!(
        dissent["message"].as_str().unwrap().contains("dissent"),
        "{dissent}"
    );
    let manager_row = store
        .user_by_username("manager.demo")
        .await
        .unwrap()
        .unwrap();
    let reception_row = store
        .user_by_username("reception.demo")
        .await
        .unwrap()
        .unwrap();
    let now = Utc::now();
    // Two hours before the used session below, whatever the clock: from 22:00 to 02:00 UTC
    // both once came out as 17:00 and the second was refused as a double booking.
    let used_start = hour_before(now - Duration::hours(2));
    let ended_start = used_start - Duration::hours(2);
    let ended = bookings::publish_session(
        store.as_ref(),
        &manager_row,
        one_hour_session(ended_start, 4),
        ended_start - Duration::hours(1),
    )
    .await
    .unwrap();
    let past = reception
        .json(
            "POST",
            &format!("/api/v1/sessions/{}/bookings", ended.id),
            Some(json!({"patient_id": ended_patient.id, "reason": "review"})),
            409,
        )
        .await;
    assert!(past["message"].as_str().unwrap().contains("past"), "{past}");

    // ---- a booking that was used: the clinician opened the record and wrote a note ----
    let used_session = bookings::publish_session(
        store.as_ref(),
        &manager_row,
        one_hour_session(used_start, 4),
        used_start - Duration::hours(1),
    )
    .await
    .unwrap();
    bookings::book(
        store.as_ref(),
        &reception_row,
        &used_session.id,
        &BookRequest {
            patient_id: a.id.clone(),
            slot: None,
            reason: "blood pressure check".into(),
        },
        used_start - Duration::minutes(30),
    )
    .await
    .unwrap();
    assert!(
        on_device(&device, &a.id).await.is_some(),
        "booked earlier today: on the device"
    );
    device.record_viewed(&a.id, "summary").unwrap();
    let written_at = Utc::now();
    device
        .write_note(
            &a.id,
            NoteInput {
                text: "Seen at the hub; blood pressure 128/82.".into(),
                vitals: None,
                problem: None,
                replaces: None,
            },
        )
        .unwrap();
    device.sync().await.expect("push the view and the note");

    // ---- caseloads: add, refuse a second add, transfer, discharge ----
    let added = lead
        .json(
            "POST",
            "/api/v1/caseload/patients",
            Some(
                json!({"nhs_number": caseload_patient.nhs_number, "reason": "leg ulcer dressing",
                        "expected_end": tomorrow}),
            ),
            201,
        )
        .await;
    assert!(
        added["reason"].as_str().unwrap().contains("expected end"),
        "{added}"
    );
    lead.json(
        "POST",
        "/api/v1/caseload/patients",
        Some(
            json!({"nhs_number": caseload_patient.nhs_number, "reason": "again",
                    "expected_end": tomorrow}),
        ),
        409,
    )
    .await;
    let missing = lead
        .json(
            "POST",
            "/api/v1/caseload/patients",
            Some(json!({"nhs_number": caseload_patient.nhs_number, "reason": "x"})),
            422,
        )
        .await;
    assert!(
        missing["message"]
            .as_str()
            .unwrap()
            .contains("expected_end"),
        "{missing}"
    );
    let caseload = lead.json("GET", "/api/v1/caseload", None, 200).await;
    assert!(caseload.to_string().contains(&caseload_patient.nhs_number));
    let nhs = &caseload_patient.nhs_number;
    lead.json(
        "POST",
        &format!("/api/v1/caseload/patients/{nhs}/transfer"),
        Some(json!({"to_team": "nowhere", "reason": "moved"})),
        422,
    )
    .await;
    lead.json(
        "POST",
        &format!("/api/v1/caseload/patients/{nhs}/transfer"),
        Some(json!({"to_team": demo::SOUTH_TEAM, "reason": "moved to the south of town"})),
        200,
    )
    .await;
    let south = store.list_entries(demo::SOUTH_CASELOAD_LIST).await.unwrap();
    assert!(
        south
            .iter()
            .any(|e| e.patient_id == caseload_patient.id && e.is_active(Utc::now()))
    );
    let caseload = lead.json("GET", "/api/v1/caseload", None, 200).await;
    assert!(
        !caseload.to_string().contains(nhs.as_str()),
        "transferred away"
    );
    lead.json(
        "POST",
        &format!("/api/v1/caseload/patients/{nhs}/discharge"),
        Some(json!({"reason": "healed"})),
        404,
    )
    .await;
    // A discharge ends the entry now.
    let healed = hers[6];
    lead.json(
        "POST",
        "/api/v1/caseload/patients",
        Some(
            json!({"nhs_number": healed.nhs_number, "reason": "wound care",
                    "expected_end": tomorrow}),
        ),
        201,
    )
    .await;
    lead.json(
        "POST",
        &format!("/api/v1/caseload/patients/{}/discharge", healed.nhs_number),
        Some(json!({"reason": "healed"})),
        200,
    )
    .await;
    let caseload = lead.json("GET", "/api/v1/caseload", None, 200).await;
    assert!(
        !caseload.to_string().contains(healed.nhs_number.as_str()),
        "discharged"
    );
    let audited = store.audit_rows().await.unwrap();
    for action in [
        "caseload_discharged",
        "caseload_added",
        "caseload_transferred",
        "booking_made",
        "booking_cancelled",
    ] {
        assert!(
            audited
                .iter()
                .any(|r| r.event.action == action && r.event.detail["reason"].is_string()),
            "{action} audited with why"
        );
    }

    // ---- figures: what this test did, counted by hand ----
    // Per week: (patients seen, notes written, filed, rejected, made, used, cancelled).
    let mut expected: BTreeMap<String, [u64; 7]> = BTreeMap::new();
    // The used booking (slot 0 of the session that began two hours ago).
    expected.entry(week(used_start)).or_default()[4] += 1;
    expected.entry(week(used_start)).or_default()[5] += 1;
    // Patient a, opened and written about now: seen once, one note (not filed yet).
    expected.entry(week(written_at)).or_default()[0] += 1;
    expected.entry(week(written_at)).or_default()[1] += 1;
    // Tomorrow's session: p and p2 booked, p's first booking cancelled.
    expected.entry(week(slot0)).or_default()[4] += 2;
    expected.entry(week(slot0)).or_default()[6] += 1;
    let from = (now - Duration::days(1)).date_naive();
    let figures = manager
        .json(
            "GET",
            &format!("/api/v1/figures?from={from}&to={tomorrow}"),
            None,
            200,
        )
        .await;
    let rows = figures["rows"].as_array().unwrap();
    let mut got: BTreeMap<String, [u64; 7]> = BTreeMap::new();
    for r in rows {
        assert_eq!(
            r["service_id"], HUB_SERVICE,
            "a manager sees her own service only"
        );
        assert_eq!(r["practice_ods"], practice.as_str());
        assert_eq!(r["break_glass_uses"], 0);
        assert!(r["median_minutes_to_filed"].is_null());
        let n = |k: &str| r[k].as_u64().unwrap();
        got.insert(
            r["week"].as_str().unwrap().to_string(),
            [
                n("patients_seen"),
                n("notes_written"),
                n("notes_filed"),
                n("notes_rejected"),
                n("bookings_made"),
                n("bookings_used"),
                n("bookings_cancelled"),
            ],
        );
    }
    assert_eq!(got, expected, "{figures}");
    let (status, csv) = manager
        .send(
            "GET",
            &format!("/api/v1/figures?from={from}&to={tomorrow}&format=csv"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], doorstep_server::figures::CSV_HEADER);
    assert_eq!(lines.len(), 1 + expected.len(), "{csv}");
    for line in &lines[1..] {
        assert!(
            line.starts_with(&format!("{HUB_SERVICE},{practice},")),
            "{line}"
        );
    }

    // The demo's week at the hub: past evenings booked, seen, and the notes filed.
    let history = manager.json("GET", "/api/v1/figures", None, 200).await;
    let rows = history["rows"].as_array().unwrap();
    let sum = |k: &str| rows.iter().map(|r| r[k].as_u64().unwrap()).sum::<u64>();
    assert!(
        sum("bookings_made") >= 3 && sum("bookings_used") >= 2,
        "{history}"
    );
    assert!(
        sum("notes_filed") >= 2 && sum("patients_seen") >= 2,
        "{history}"
    );
    assert!(
        rows.iter()
            .any(|r| r["median_minutes_to_filed"].is_number()),
        "{history}"
    );

    // Her practice leaves the hub's agreements: its patients cannot be booked there (the
    // clinician could not see the record).
    let later = manager
        .json(
            "POST",
            "/api/v1/sessions",
            Some(
                json!({"date": tomorrow + Duration::days(1), "start": "14:00", "end": "15:00",
                        "clinician": "gp.demo", "slots": 2, "reason": "extra"}),
            ),
            201,
        )
        .await;
    for mut agreement in store.agreements_for_service(HUB_SERVICE).await.unwrap() {
        agreement.practices.retain(|p| *p != practice);
        store.put_agreement(&agreement, Utc::now()).await.unwrap();
    }
    let uncovered = reception
        .json(
            "POST",
            &format!(
                "/api/v1/sessions/{}/bookings",
                later["id"].as_str().unwrap()
            ),
            Some(json!({"patient_id": p3.id, "reason": "review"})),
            403,
        )
        .await;
    assert!(
        uncovered["message"]
            .as_str()
            .unwrap()
            .contains("no sharing agreement"),
        "{uncovered}"
    );

    // Every change is on the audit chain, and the chain holds.
    doorstep_server::audit::verify(&store.audit_rows().await.unwrap()).expect("the chain holds");
    server.shutdown().await;
}
