//! The server over real HTTPS: a small demo federation, dev TLS on a random port, a reqwest
//! client that trusts only `DIR/dev-ca.pem`. Enrol with password and TOTP (computed from
//! demo-users.json), pull every page gzip'd, resume from a cursor, follow list changes, refresh
//! tokens, and check that no RCGP-excluded item ever reaches the device. The walk runs on both
//! backends: the embedded SQLite file and a real throwaway PostgreSQL cluster (doorstep-testkit).

use doorstep_testkit::totp_code_at;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chrono::Utc;
use doorstep_protocol::{
    ApiError, Change, EnrolRequest, EnrolResponse, PullPage, RefreshRequest, ResyncReason,
    ResyncRequired, TokenResponse,
};
use doorstep_record::agreement::sensitive::is_rcgp_excluded_resource;
use doorstep_record::fhir::Resource;
use doorstep_server::demo::{self, CASELOAD_LIST, DemoSpec, DemoUser};
use doorstep_server::lists::{self, NewListEntry};
use doorstep_server::run::{ServeConfig, StartError, TlsMode, start};
use doorstep_server::store::{self, DatabaseUrl};

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn client(ca_pem: &Path, gzip: bool) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(ca_pem).unwrap()).unwrap();
    let builder = reqwest::Client::builder()
        .tls_certs_only([ca])
        .timeout(Duration::from_secs(60));
    let builder = if gzip { builder } else { builder.no_gzip() };
    builder.build().unwrap()
}

fn user<'a>(users: &'a [DemoUser], name: &str) -> &'a DemoUser {
    users.iter().find(|u| u.username == name).unwrap()
}

async fn enrol(
    http: &reqwest::Client,
    base: &str,
    user: &DemoUser,
    password: &str,
    code: &str,
) -> reqwest::Response {
    http.post(format!("{base}/api/v1/auth/enrol"))
        .json(&EnrolRequest {
            username: user.username.clone(),
            password: password.to_string(),
            totp: code.to_string(),
            device_name: "Test laptop".into(),
        })
        .send()
        .await
        .unwrap()
}

/// One pull with gzip checked by hand: the raw body must be gzip.
async fn pull_raw(
    http_raw: &reqwest::Client,
    base: &str,
    token: &str,
    cursor: Option<&str>,
) -> Result<PullPage, (u16, Vec<u8>)> {
    // The cursor is base64url and '.', safe in a query string as it is.
    let url = match cursor {
        Some(c) => format!("{base}/api/v1/sync/pull?cursor={c}"),
        None => format!("{base}/api/v1/sync/pull"),
    };
    let response = http_raw
        .get(url)
        .bearer_auth(token)
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let gzipped = response
        .headers()
        .get("content-encoding")
        .is_some_and(|v| v == "gzip");
    let body = response.bytes().await.unwrap().to_vec();
    let body = if gzipped {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(body.as_slice())
            .read_to_end(&mut out)
            .unwrap();
        out
    } else {
        body
    };
    if status != 200 {
        return Err((status, body));
    }
    assert!(
        gzipped,
        "a pull page must be gzip'd when the client accepts it"
    );
    Ok(serde_json::from_slice(&body).unwrap())
}

fn assert_no_excluded_items(page: &PullPage) {
    for change in &page.changes {
        let resources: Vec<&serde_json::Value> = match change {
            Change::PatientAdded { resources, .. } => resources.iter().collect(),
            Change::Upsert { resource, .. } => vec![resource],
            _ => vec![],
        };
        for r in resources {
            let r = Resource::from_json(r.clone()).unwrap();
            assert!(
                !is_rcgp_excluded_resource(&r),
                "RCGP-excluded {}/{} reached the device",
                r.resource_type.as_str(),
                r.id
            );
            assert!(
                !r.is_confidential(),
                "a confidential item reached the device"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrol_and_pull_over_https_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let database = DatabaseUrl::in_data_dir(dir.path());
    enrol_and_pull_over_https(dir.path(), database).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrol_and_pull_over_https_on_postgres() {
    let Some(cluster) = doorstep_testkit::PgCluster::start_or_skip("https on PostgreSQL") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let database = DatabaseUrl::parse(&cluster.create_database().unwrap()).unwrap();
    enrol_and_pull_over_https(dir.path(), database).await;
}

async fn enrol_and_pull_over_https(dir: &Path, database: DatabaseUrl) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let data = dir.to_path_buf();
    let spec = DemoSpec::small(7, Utc::now().date_naive());
    let summary = {
        let (data, spec, database) = (data.clone(), spec.clone(), database.clone());
        tokio::task::spawn_blocking(move || demo::seed_with_database(&data, &database, &spec))
            .await
            .unwrap()
            .unwrap()
    };
    assert_eq!(summary.practices, 3);
    assert_eq!(summary.patients, 30);
    let users = demo::read_demo_users(&data).unwrap();
    assert_eq!(users, summary.users);
    // Seeding the same directory again is refused.
    assert!(demo::seed_with_database(&data, &database, &spec).is_err());

    let server = start(ServeConfig {
        database: Some(database.clone()),
        listen: "127.0.0.1:0".parse().unwrap(),
        tls: TlsMode::Dev,
        page_bytes: 24 * 1024,
        ..ServeConfig::new(data.clone())
    })
    .await
    .unwrap();
    let base = server.base_url.clone();
    assert_eq!(base, format!("https://127.0.0.1:{}", server.addr.port()));
    assert_eq!(server.ca_pem_path, data.join("dev-ca.pem"));
    let http = client(&server.ca_pem_path, true);
    let http_raw = client(&server.ca_pem_path, false);

    // A client that trusts nothing of ours cannot connect.
    let stranger = reqwest::Client::builder()
        .tls_certs_only(Vec::<reqwest::Certificate>::new())
        .build()
        .unwrap();
    assert!(
        stranger
            .get(format!("{base}/healthz"))
            .send()
            .await
            .is_err()
    );

    let health = http.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.text().await.unwrap(), "ok");
    let openapi: serde_json::Value = http
        .get(format!("{base}/api/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(openapi["openapi"], "3.1.0");

    // ---- enrol ----
    let nurse = user(&users, "nurse.demo");
    let now = unix_now();
    let wrong = enrol(
        &http,
        &base,
        nurse,
        "not the password",
        &totp_code_at(&nurse.totp_secret, now),
    )
    .await;
    assert_eq!(wrong.status(), 401);
    assert_eq!(
        wrong.json::<ApiError>().await.unwrap().code,
        "bad_credentials"
    );
    let ok = enrol(
        &http,
        &base,
        nurse,
        &nurse.password,
        &totp_code_at(&nurse.totp_secret, now),
    )
    .await;
    assert_eq!(ok.status(), 200);
    let enrolled: EnrolResponse = ok.json().await.unwrap();
    assert_eq!(enrolled.user.role, "nurse");
    assert_eq!(enrolled.user.service, "Riverside District Nursing");
    // The same code is not accepted twice.
    let replay = enrol(
        &http,
        &base,
        nurse,
        &nurse.password,
        &totp_code_at(&nurse.totp_secret, now),
    )
    .await;
    assert_eq!(replay.status(), 401);
    let token = enrolled.tokens.access_token.clone();

    // ---- pull every page ----
    let started = Instant::now();
    let mut pages: Vec<PullPage> = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = pull_raw(&http_raw, &base, &token, cursor.as_deref())
            .await
            .unwrap();
        assert_no_excluded_items(&page);
        cursor = Some(page.cursor.clone());
        let more = page.more;
        pages.push(page);
        if !more {
            break;
        }
        assert!(pages.len() < 100, "the pull does not end");
    }
    eprintln!(
        "small caseload: {} pages in {:?}",
        pages.len(),
        started.elapsed()
    );
    assert!(
        pages.len() >= 2,
        "the page budget should cut the caseload into pages"
    );
    let added: BTreeSet<String> = pages
        .iter()
        .flat_map(|p| &p.changes)
        .filter_map(|c| match c {
            Change::PatientAdded { patient, .. } => Some(patient.patient_id.clone()),
            _ => None,
        })
        .collect();
    let store = store::open(&database).await.unwrap();
    let caseload: BTreeSet<String> = store
        .list_entries(CASELOAD_LIST)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.patient_id)
        .collect();
    assert_eq!(caseload.len(), spec.caseload);
    assert_eq!(added, caseload, "the device receives exactly the caseload");

    // The test means something: pulled patients do hold RCGP-excluded items on the server,
    // and the device is told they were withheld.
    let mut excluded_on_server = 0;
    for pid in &caseload {
        for row in store.patient_resources(pid).await.unwrap() {
            let r = Resource::from_json(serde_json::from_str(&row.json).unwrap()).unwrap();
            if is_rcgp_excluded_resource(&r) {
                excluded_on_server += 1;
            }
        }
    }
    assert!(
        excluded_on_server > 0,
        "the demo caseload should hold RCGP-excluded items"
    );
    let withheld: u32 = pages
        .iter()
        .flat_map(|p| &p.changes)
        .filter_map(|c| match c {
            Change::PatientAdded { withheld, .. } => {
                Some(withheld.iter().map(|w| w.count).sum::<u32>())
            }
            _ => None,
        })
        .sum();
    assert!(withheld > 0, "the device is told that items were withheld");

    // ---- resume from a cursor: the same next page again ----
    let first_cursor = pages[0].cursor.clone();
    let again = pull_raw(&http_raw, &base, &token, Some(&first_cursor))
        .await
        .unwrap();
    assert_eq!(again.changes, pages[1].changes);
    assert_eq!(again.more, pages[1].more);

    // Caught up: an empty page.
    let idle = pull_raw(&http_raw, &base, &token, cursor.as_deref())
        .await
        .unwrap();
    assert!(idle.changes.is_empty() && !idle.more);

    // ---- list changes reach the device ----
    let newcomer = store
        .patients()
        .await
        .unwrap()
        .into_iter()
        .find(|p| !p.dissent && !caseload.contains(&p.id))
        .map(|p| p.id)
        .unwrap();
    lists::add_entry(
        store.as_ref(),
        NewListEntry {
            list_id: CASELOAD_LIST.into(),
            patient_id: newcomer.clone(),
            reason: "Wound check".into(),
            starts_at: Utc::now(),
            ends_at: None,
            user_id: None,
        },
        Utc::now(),
    )
    .await
    .unwrap();
    let leaver = caseload.iter().next().unwrap().clone();
    assert_eq!(
        store
            .end_list_entry(CASELOAD_LIST, &leaver, Utc::now())
            .await
            .unwrap(),
        1
    );
    let mut changes = Vec::new();
    let mut cursor = cursor.unwrap();
    for _ in 0..10 {
        let page = pull_raw(&http_raw, &base, &token, Some(&cursor))
            .await
            .unwrap();
        assert_no_excluded_items(&page);
        changes.extend(page.changes);
        cursor = page.cursor;
        if !page.more {
            break;
        }
    }
    assert!(changes.contains(&Change::PatientRemoved {
        patient_id: leaver.clone()
    }));
    assert!(changes.iter().any(|c| matches!(c,
        Change::PatientAdded { patient, .. } if patient.patient_id == newcomer)));

    // ---- refresh rotates; a reused refresh token is refused ----
    let refreshed = http
        .post(format!("{base}/api/v1/auth/refresh"))
        .json(&RefreshRequest {
            device_id: enrolled.device_id.clone(),
            refresh_token: enrolled.tokens.refresh_token.clone(),
        })
        .send()
        .await
        .unwrap();
    assert_eq!(refreshed.status(), 200);
    let tokens: TokenResponse = refreshed.json().await.unwrap();
    assert_ne!(tokens.access_token, token);
    let page = pull_raw(&http_raw, &base, &tokens.access_token, Some(&cursor))
        .await
        .unwrap();
    assert!(page.changes.is_empty());

    // ---- another device's cursor is refused (410 cursor_invalid) ----
    let next_step = totp_code_at(&nurse.totp_secret, unix_now() + 30);
    let second: EnrolResponse = enrol(&http, &base, nurse, &nurse.password, &next_step)
        .await
        .json()
        .await
        .unwrap();
    let (status, body) = pull_raw(&http_raw, &base, &second.tokens.access_token, Some(&cursor))
        .await
        .unwrap_err();
    assert_eq!(status, 410);
    let resync: ResyncRequired = serde_json::from_slice(&body).unwrap();
    assert_eq!(resync.reason, ResyncReason::CursorInvalid);

    // Presented again at once, the exchanged refresh token is taken for a retry whose answer
    // was lost: answered again, and the pair issued before stops working ...
    let present_again = || {
        http.post(format!("{base}/api/v1/auth/refresh"))
            .json(&RefreshRequest {
                device_id: enrolled.device_id.clone(),
                refresh_token: enrolled.tokens.refresh_token.clone(),
            })
            .send()
    };
    let retried = present_again().await.unwrap();
    assert_eq!(retried.status(), 200);
    let retried: TokenResponse = retried.json().await.unwrap();
    let (status, _) = pull_raw(&http_raw, &base, &tokens.access_token, Some(&cursor))
        .await
        .unwrap_err();
    assert_eq!(status, 401);
    // ... as often as it is asked within the grace, only the newest answer living.
    let again = present_again().await.unwrap();
    assert_eq!(again.status(), 200);
    let again: TokenResponse = again.json().await.unwrap();
    let (status, _) = pull_raw(&http_raw, &base, &retried.access_token, Some(&cursor))
        .await
        .unwrap_err();
    assert_eq!(status, 401);
    pull_raw(&http_raw, &base, &again.access_token, Some(&cursor))
        .await
        .unwrap();

    // ---- lockout after five failures ----
    let para = user(&users, "para.demo");
    for attempt in 1..=5 {
        let r = enrol(&http, &base, para, "wrong", "000000").await;
        let code = r.json::<ApiError>().await.unwrap().code;
        let expected = if attempt < 5 {
            "bad_credentials"
        } else {
            "locked_out"
        };
        assert_eq!(code, expected, "attempt {attempt}");
    }
    let r = enrol(
        &http,
        &base,
        para,
        &para.password,
        &totp_code_at(&para.totp_secret, unix_now()),
    )
    .await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.json::<ApiError>().await.unwrap().code, "locked_out");

    // The audit chain holds the sign-ins, pulls and imports, intact.
    let events = store.audit_rows().await.unwrap();
    assert_eq!(doorstep_server::audit::verify(&events), Ok(events.len()));
    for action in ["import", "seed", "sign_in", "sign_in_failed", "pull"] {
        assert!(
            events.iter().any(|e| e.event.action == action),
            "no {action} in the audit log"
        );
    }

    server.shutdown().await;
}

#[tokio::test]
async fn plain_http_only_on_loopback_and_certificates_are_required() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let open_addr: SocketAddr = "0.0.0.0:0".parse().unwrap();
    let mut config = ServeConfig::new(dir.path());
    config.listen = open_addr;
    config.tls = TlsMode::InsecureLoopback;
    assert!(matches!(
        start(config.clone()).await.unwrap_err(),
        StartError::InsecureNotLoopback(_)
    ));
    config.tls = TlsMode::Files {
        cert: dir.path().join("server.pem"),
        key: dir.path().join("server-key.pem"),
    };
    config.listen = "127.0.0.1:0".parse().unwrap();
    let err = start(config.clone()).await.unwrap_err();
    assert!(matches!(err, StartError::MissingCertificate { .. }));
    assert!(err.to_string().contains("--dev-tls"), "{err}");

    config.tls = TlsMode::InsecureLoopback;
    let server = start(config).await.unwrap();
    assert!(server.base_url.starts_with("http://127.0.0.1:"));
    let body = reqwest::get(format!("{}/healthz", server.base_url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(body, "ok");
    server.shutdown().await;
}

/// The standard demo (300 patients, caseload of 60): seed and full pull timings.
/// `cargo test -p doorstep-server --release --test http -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check; minutes in a debug build"]
async fn standard_demo_timings() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_path_buf();
    let started = Instant::now();
    let summary = {
        let data = data.clone();
        tokio::task::spawn_blocking(move || demo::seed(&data, 1))
            .await
            .unwrap()
            .unwrap()
    };
    let seed_time = started.elapsed();
    let mut config = ServeConfig::new(&data);
    config.listen = "127.0.0.1:0".parse().unwrap();
    let server = start(config).await.unwrap();
    let http = client(&server.ca_pem_path, true);
    let nurse = user(&summary.users, "nurse.demo");
    let enrolled: EnrolResponse = enrol(
        &http,
        &server.base_url,
        nurse,
        &nurse.password,
        &totp_code_at(&nurse.totp_secret, unix_now()),
    )
    .await
    .json()
    .await
    .unwrap();
    let started = Instant::now();
    let mut cursor: Option<String> = None;
    let (mut pages, mut bytes) = (0, 0usize);
    let mut patients: BTreeMap<String, usize> = BTreeMap::new();
    loop {
        let url = match &cursor {
            Some(c) => format!("{}/api/v1/sync/pull?cursor={c}", server.base_url),
            None => format!("{}/api/v1/sync/pull", server.base_url),
        };
        let body = http
            .get(url)
            .bearer_auth(&enrolled.tokens.access_token)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        bytes += body.len();
        let page: PullPage = serde_json::from_slice(&body).unwrap();
        pages += 1;
        for c in &page.changes {
            if let Change::PatientAdded {
                patient, resources, ..
            } = c
            {
                patients.insert(patient.patient_id.clone(), resources.len());
            }
        }
        cursor = Some(page.cursor);
        if !page.more {
            break;
        }
    }
    let over_https = started.elapsed();

    // The same pull in-process, without TLS, gzip and the client's parsing.
    let store = store::open(&store::DatabaseUrl::in_data_dir(&data))
        .await
        .unwrap();
    let nurse_row = store.user_by_username("nurse.demo").await.unwrap().unwrap();
    let scope = doorstep_server::pull::user_scope(store.as_ref(), &nurse_row)
        .await
        .unwrap();
    let started = Instant::now();
    let mut state = None;
    let mut direct_pages = 0;
    loop {
        let outcome = doorstep_server::pull::pull(
            store.as_ref(),
            doorstep_server::pull::PullRequest {
                device_id: "timing".into(),
                scope: scope.clone(),
                cursor: state.clone(),
                now: Utc::now(),
                page_bytes: doorstep_server::api::DEFAULT_PAGE_BYTES,
            },
        )
        .await
        .unwrap();
        let doorstep_server::pull::PullOutcome::Page(page) = outcome else {
            panic!("resync")
        };
        direct_pages += 1;
        state = Some(page.cursor.clone());
        if !page.more {
            break;
        }
    }
    eprintln!(
        "in-process pull (store and filtering only): {direct_pages} pages in {:?}",
        started.elapsed()
    );
    eprintln!(
        "seed: {} patients in {:?}; pull of the DN caseload: {} patients, {} resources, {} pages, {} KiB JSON, {:?}",
        summary.patients,
        seed_time,
        patients.len(),
        patients.values().sum::<usize>(),
        pages,
        bytes / 1024,
        over_https
    );
    server.shutdown().await;
}
