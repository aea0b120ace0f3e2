//! Every endpoint checks who may call it, over real HTTPS on SQLite and on PostgreSQL.
//!
//! - Walking [`ROUTES`]: each route that is not public is called with every kind of caller
//!   it does not serve (a clinician's device token, a practice system's credential, an
//!   administrator's credential, and each staff role's sign-in: a receptionist's, a team
//!   leader's, a service manager's, a privacy officer's) and with none, and answers 401 or 403, changing nothing
//!   (the audit log does not move) and saying nothing of any patient. Its own kind of caller
//!   gets past the check (an answer other than 401 and 403), so the table is honest.
//! - A clinician cannot read a patient who is not on their list by guessing: every route,
//!   with that patient's id or NHS number in each path parameter and in the query, answers
//!   nothing of them; a pull with a forged cursor is refused; a note pushed about them is
//!   answered exactly as one about an id that does not exist.

use std::path::Path;

use base64::Engine;
use chrono::Utc;
use doorstep_protocol::{Change, PullPage, PushItem, PushRequest, PushResponse};
use doorstep_server::api::{Caller, ROUTES};
use doorstep_server::auth;
use doorstep_server::demo::{self, DemoSpec};
use doorstep_server::run::{ServeConfig, TlsMode, start};
use doorstep_server::store::{self, DatabaseUrl};
use doorstep_testkit::http::{enrol_for_token, https_client, staff_token};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_checks_its_caller_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let database = DatabaseUrl::in_data_dir(dir.path());
    callers(dir.path(), database).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_checks_its_caller_on_postgres() {
    let Some(cluster) = doorstep_testkit::PgCluster::start_or_skip("callers on PostgreSQL") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let database = DatabaseUrl::parse(&cluster.create_database().unwrap()).unwrap();
    callers(dir.path(), database).await;
}

fn basic(id: &str, secret: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
    )
}

/// A patient the nurse may not see: what a guesser would try, and what must not come back
/// (both unique to the patient; a family name is not).
struct Stranger {
    id: String,
    nhs_number: String,
}

impl Stranger {
    fn assert_absent(&self, what: &str, body: &str) {
        for (name, value) in [("id", &self.id), ("NHS number", &self.nhs_number)] {
            assert!(
                !body.contains(value.as_str()),
                "{what} answered the off-list patient's {name}: {body:.300}"
            );
        }
    }
}

async fn callers(dir: &Path, database: DatabaseUrl) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    {
        let (data, database) = (dir.to_path_buf(), database.clone());
        let spec = DemoSpec::small(11, Utc::now().date_naive());
        tokio::task::spawn_blocking(move || demo::seed_with_database(&data, &database, &spec))
            .await
            .unwrap()
            .unwrap();
    }
    let users = demo::read_demo_users(dir).unwrap();
    let nurse = users.iter().find(|u| u.username == "nurse.demo").unwrap();
    let store = store::open(&database).await.unwrap();
    let now = Utc::now();
    let practice = store.practices().await.unwrap()[0].ods.clone();
    let practice_secret = auth::issue_source_secret(store.as_ref(), &practice, "cli:test", now)
        .await
        .unwrap();
    let admin_secret = auth::issue_admin_secret(store.as_ref(), "ada", "cli:test", now)
        .await
        .unwrap();
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
    let token = enrol_for_token(
        &http,
        &base,
        &nurse.username,
        &nurse.password,
        &nurse.totp_secret,
    )
    .await;

    // Everything the nurse's device holds, pulled to the end: the pages' text, the pages.
    let pull_all = |url: String| {
        let (http, token) = (http.clone(), token.clone());
        async move {
            let mut seen = String::new();
            let mut pages = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                // The cursor is base64url and '.', safe in a query as it is.
                let url = match &cursor {
                    Some(c) if url.contains('?') => format!("{url}&cursor={c}"),
                    Some(c) => format!("{url}?cursor={c}"),
                    None => url.clone(),
                };
                let response = http.get(&url).bearer_auth(&token).send().await.unwrap();
                assert_eq!(response.status(), 200);
                let text = response.text().await.unwrap();
                let page: PullPage = serde_json::from_str(&text).unwrap();
                seen.push_str(&text);
                cursor = Some(page.cursor.clone());
                let more = page.more;
                pages.push(page);
                if !more {
                    return (seen, pages);
                }
            }
        }
    };
    let (held, pages) = pull_all(format!("{base}/api/v1/sync/pull")).await;
    let visible: Vec<String> = pages
        .iter()
        .flat_map(|p| &p.changes)
        .filter_map(|c| match c {
            Change::PatientAdded { patient, .. } => Some(patient.patient_id.clone()),
            _ => None,
        })
        .collect();
    assert!(!visible.is_empty(), "the nurse sees her list");
    // A patient of the federation on none of the nurse's lists.
    let on_lists: Vec<String> = {
        let mut ids = Vec::new();
        for list in store.lists().await.unwrap() {
            for entry in store.list_entries(&list.id).await.unwrap() {
                ids.push(entry.patient_id);
            }
        }
        ids
    };
    let stranger = {
        let patient = store
            .patients()
            .await
            .unwrap()
            .into_iter()
            .find(|p| !on_lists.contains(&p.id) && !held.contains(&p.id))
            .expect("a patient on no list");
        Stranger {
            id: patient.id,
            nhs_number: patient.nhs_number,
        }
    };
    stranger.assert_absent("the nurse's own pull", &held);
    assert!(visible.iter().all(|id| *id != stranger.id));

    let nurse_device = store
        .devices()
        .await
        .unwrap()
        .into_iter()
        .find(|d| d.name == "Test tablet")
        .unwrap()
        .id;
    let agreement = store.all_agreements().await.unwrap()[0].id.clone();
    let staff = |name: &str| {
        let user = users.iter().find(|u| u.username == name).unwrap().clone();
        let (http, base) = (http.clone(), base.clone());
        async move {
            staff_token(
                &http,
                &base,
                &user.username,
                &user.password,
                &user.totp_secret,
            )
            .await
        }
    };
    let receptionist = staff("reception.demo").await;
    let team_leader = staff("lead.demo").await;
    let service_manager = staff("manager.demo").await;
    // A staff role no route but the any-staff ones serve (signing out, the last use of it).
    let privacy_officer = staff("privacy.demo").await;
    let credentials: [(Option<Caller>, Option<String>); 8] = [
        (None, None),
        (Some(Caller::Clinician), Some(format!("Bearer {token}"))),
        (
            Some(Caller::Practice),
            Some(basic(&practice, &practice_secret)),
        ),
        (
            Some(Caller::Administrator),
            Some(basic("ada", &admin_secret)),
        ),
        (
            Some(Caller::Receptionist),
            Some(format!("Bearer {receptionist}")),
        ),
        (
            Some(Caller::TeamLeader),
            Some(format!("Bearer {team_leader}")),
        ),
        (
            Some(Caller::ServiceManager),
            Some(format!("Bearer {service_manager}")),
        ),
        (
            Some(Caller::Staff),
            Some(format!("Bearer {privacy_officer}")),
        ),
    ];
    let url_of = |path: &str| {
        let id = if path.contains("/agreements/") {
            agreement.clone()
        } else {
            nurse_device.clone()
        };
        format!(
            "{base}{}",
            path.replace("{nhs_number}", &stranger.nhs_number)
                .replace("{id}", &id)
                .replace("{username}", "nurse.demo")
        )
    };
    let call = |method: &str, url: String, authorization: Option<String>| {
        let http = http.clone();
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        async move {
            let mut request = http
                .request(method, url)
                .header("content-type", "application/json")
                .body("{}");
            if let Some(a) = authorization {
                request = request.header("authorization", a);
            }
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.text().await.unwrap_or_default())
        }
    };

    // ---- every route refuses the callers it does not serve ----
    let audit_before = store.audit_rows().await.unwrap().len();
    let mut checked = 0;
    for (method, path, kind) in ROUTES {
        if *kind == Caller::Public {
            continue;
        }
        for (caller, authorization) in &credentials {
            if caller.is_some_and(|c| kind.accepts(c)) {
                continue;
            }
            let (status, body) = call(method, url_of(path), authorization.clone()).await;
            assert!(
                status == 401 || status == 403,
                "{method} {path} with {caller:?} answered {status}: {body:.300}"
            );
            stranger.assert_absent(&format!("{method} {path} with {caller:?}"), &body);
            checked += 1;
        }
    }
    let guarded = ROUTES.iter().filter(|r| r.2 != Caller::Public).count();
    assert!(guarded >= 38, "only {guarded} routes are guarded");
    // Every guarded route, with every kind of caller it does not serve (seven; the routes of
    // any staff member serve four kinds).
    let accepted = |kind: Caller| {
        credentials
            .iter()
            .filter(|(c, _)| c.is_some_and(|c| kind.accepts(c)))
            .count()
    };
    let expected: usize = ROUTES
        .iter()
        .filter(|r| r.2 != Caller::Public)
        .map(|r| credentials.len() - accepted(r.2))
        .sum();
    assert_eq!(checked, expected, "refusals checked");
    assert_eq!(
        store.audit_rows().await.unwrap().len(),
        audit_before,
        "a refused call changed something"
    );
    // ... and its own kind gets past the check (the bodies are empty: nothing is changed).
    for (method, path, kind) in ROUTES {
        if *kind == Caller::Public {
            continue;
        }
        let authorization = credentials
            .iter()
            .find(|(c, _)| *c == Some(*kind))
            .and_then(|(_, a)| a.clone());
        let (status, body) = call(method, url_of(path), authorization).await;
        assert!(
            status != 401 && status != 403,
            "{method} {path} refused its own kind of caller ({kind:?}): {status} {body:.300}"
        );
    }

    // ---- a clinician guessing a patient's id or NHS number learns nothing ----
    let guesses = [
        ("patient_id", stranger.id.as_str()),
        ("patient", stranger.id.as_str()),
        ("id", stranger.id.as_str()),
        ("nhs_number", stranger.nhs_number.as_str()),
    ];
    for (method, path, _) in ROUTES {
        for (name, value) in guesses {
            let url = format!("{}?{name}={value}", url_of(path));
            let (status, body) = if *method == "GET" && *path == "/api/v1/sync/pull" {
                let (seen, _) = pull_all(url).await;
                (200, seen)
            } else {
                call(method, url, Some(format!("Bearer {token}"))).await
            };
            stranger.assert_absent(&format!("{method} {path}?{name}= ({status})"), &body);
        }
    }
    // A cursor changed to name the stranger, under the real signature, is refused.
    let real = pages.last().unwrap().cursor.clone();
    let (state, signature) = real.split_once('.').unwrap();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut state: serde_json::Value = serde_json::from_slice(&b64.decode(state).unwrap()).unwrap();
    state["patient_id"] = stranger.id.clone().into();
    state["seq"] = 0.into();
    let forged = format!("{}.{signature}", b64.encode(state.to_string()));
    let (status, body) = call(
        "GET",
        format!("{base}/api/v1/sync/pull?cursor={forged}"),
        Some(format!("Bearer {token}")),
    )
    .await;
    assert_eq!(status, 410, "{body}");
    assert!(body.contains("cursor_invalid"), "{body}");
    // A note about the stranger is answered as one about nobody.
    let push = |item: &str, patient_id: &str| {
        let (http, token, base) = (http.clone(), token.clone(), base.clone());
        let request = PushRequest {
            items: vec![PushItem {
                id: item.into(),
                kind: "note".into(),
                patient_id: patient_id.to_string(),
                created_at: Utc::now(),
                body: serde_json::json!({"text": "seen", "signed_at": Utc::now()}),
            }],
        };
        async move {
            let response = http
                .post(format!("{base}/api/v1/sync/push"))
                .bearer_auth(&token)
                .json(&request)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            let answer = response.json::<PushResponse>().await.unwrap();
            serde_json::to_string(&answer.results[0].outcome).unwrap()
        }
    };
    let first = "00000000-0000-4000-8000-000000000001";
    let about_stranger = push(first, &stranger.id).await;
    let about_nobody = push("00000000-0000-4000-8000-000000000002", "no-such-patient").await;
    assert_eq!(about_stranger, about_nobody);
    assert!(about_stranger.contains("rejected"), "{about_stranger}");
    stranger.assert_absent("a push about them", &about_stranger);
}
