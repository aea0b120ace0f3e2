//! Users and devices administered over real HTTPS, on SQLite and on PostgreSQL: an
//! administrator adds a user (who then signs in with what was answered once), disables and
//! enables them (a disabled user cannot sign in, refresh or pull), unlocks them, resets their
//! TOTP secret (the old codes stop working), lists devices and revokes one (403
//! `device_revoked`). Each change is audited with who and why; a change without a reason, or
//! from a clinician, changes nothing.

use std::path::Path;

use base64::Engine;
use chrono::Utc;
use doorstep_protocol::{ApiError, EnrolRequest, EnrolResponse, RefreshRequest};
use doorstep_server::demo::{self, DemoSpec};
use doorstep_server::run::{ServeConfig, TlsMode, start};
use doorstep_server::store::{self, DatabaseUrl};
use doorstep_testkit::http::https_client;
use doorstep_testkit::totp_code;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_and_devices_over_https_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let database = DatabaseUrl::in_data_dir(dir.path());
    accounts(dir.path(), database).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_and_devices_over_https_on_postgres() {
    let Some(cluster) = doorstep_testkit::PgCluster::start_or_skip("accounts on PostgreSQL") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let database = DatabaseUrl::parse(&cluster.create_database().unwrap()).unwrap();
    accounts(dir.path(), database).await;
}

struct Api {
    http: reqwest::Client,
    base: String,
    admin: String,
}

impl Api {
    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .header("authorization", &self.admin)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    async fn enrol(&self, username: &str, password: &str, code: &str) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}/api/v1/auth/enrol", self.base))
            .json(&EnrolRequest {
                username: username.into(),
                password: password.into(),
                totp: code.into(),
                device_name: "Ward tablet".into(),
            })
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    async fn pull(&self, token: &str) -> (u16, String) {
        let response = self
            .http
            .get(format!("{}/api/v1/sync/pull", self.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let code = if status == 200 {
            String::new()
        } else {
            response.json::<ApiError>().await.unwrap().code
        };
        (status, code)
    }

    async fn refresh(&self, enrolled: &EnrolResponse) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}/api/v1/auth/refresh", self.base))
            .json(&RefreshRequest {
                device_id: enrolled.device_id.clone(),
                refresh_token: enrolled.tokens.refresh_token.clone(),
            })
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }
}

async fn accounts(dir: &Path, database: DatabaseUrl) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    {
        let (data, database) = (dir.to_path_buf(), database.clone());
        let spec = DemoSpec::small(3, Utc::now().date_naive());
        tokio::task::spawn_blocking(move || demo::seed_with_database(&data, &database, &spec))
            .await
            .unwrap()
            .unwrap();
    }
    let store = store::open(&database).await.unwrap();
    let secret =
        doorstep_server::auth::issue_admin_secret(store.as_ref(), "ada", "cli:test", Utc::now())
            .await
            .unwrap();
    let admin = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("ada:{secret}"))
    );
    let server = start(ServeConfig {
        database: Some(database.clone()),
        listen: "127.0.0.1:0".parse().unwrap(),
        tls: TlsMode::Dev,
        sign_in_limits: doorstep_server::limits::SignInLimitConfig {
            per_username: doorstep_server::limits::Rate {
                burst: 100,
                every: std::time::Duration::from_millis(10),
            },
            ..Default::default()
        },
        ..ServeConfig::new(dir)
    })
    .await
    .unwrap();
    let api = Api {
        http: https_client(&server.ca_pem_path),
        base: server.base_url.clone(),
        admin,
    };
    let service = store
        .user_by_username("nurse.demo")
        .await
        .unwrap()
        .unwrap()
        .service_id;

    // ---- add a user: bad input changes nothing, naming the field ----
    let new_user = |username: &str, reason: &str| {
        json!({
            "username": username, "display_name": "Sam Okafor", "role": "nurse",
            "service": service, "reason": reason,
        })
    };
    let (status, body) = api
        .post("/api/v1/admin/users", new_user("sam.okafor", ""))
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(body["message"].as_str().unwrap().contains("reason"));
    let (status, body) = api
        .post(
            "/api/v1/admin/users",
            new_user("Sam Okafor!", "new starter"),
        )
        .await;
    assert_eq!(status, 422);
    assert!(body["message"].as_str().unwrap().contains("username"));
    let (status, body) = api
        .post(
            "/api/v1/admin/users",
            json!({"username": "sam.okafor", "display_name": "Sam", "role": "nurse",
                   "service": "no-such-service", "reason": "new starter"}),
        )
        .await;
    assert_eq!(status, 422);
    assert!(body["message"].as_str().unwrap().contains("service"));
    assert!(
        store
            .user_by_username("sam.okafor")
            .await
            .unwrap()
            .is_none()
    );

    let (status, issued) = api
        .post("/api/v1/admin/users", new_user("sam.okafor", "new starter"))
        .await;
    assert_eq!(status, 201, "{issued}");
    let password = issued["password"].as_str().unwrap().to_string();
    let totp_secret = issued["totp_secret"].as_str().unwrap().to_string();
    let (status, _) = api
        .post("/api/v1/admin/users", new_user("sam.okafor", "again"))
        .await;
    assert_eq!(status, 409, "the username is taken");
    let (status, enrolled) = api
        .enrol("sam.okafor", &password, &totp_code(&totp_secret, 0))
        .await;
    assert_eq!(status, 200, "{enrolled}");
    let enrolled: EnrolResponse = serde_json::from_value(enrolled).unwrap();
    assert_eq!(api.pull(&enrolled.tokens.access_token).await.0, 200);

    // ---- disable: no pull, no refresh, no sign-in; enable gives them back ----
    let (status, _) = api
        .post(
            "/api/v1/admin/users/sam.okafor/disable",
            json!({"reason": "left the trust"}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        api.pull(&enrolled.tokens.access_token).await,
        (403, "account_disabled".to_string())
    );
    let (status, body) = api.refresh(&enrolled).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("account_disabled"))
    );
    let (status, body) = api
        .enrol("sam.okafor", &password, &totp_code(&totp_secret, 30))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("bad_credentials")),
        "a disabled user is answered as a wrong password"
    );
    let (status, _) = api
        .post(
            "/api/v1/admin/users/sam.okafor/disable",
            json!({"reason": "twice"}),
        )
        .await;
    assert_eq!(status, 409);
    let (status, _) = api
        .post(
            "/api/v1/admin/users/sam.okafor/enable",
            json!({"reason": "came back"}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(api.pull(&enrolled.tokens.access_token).await.0, 200);

    // ---- reset the TOTP secret: the old codes stop working ----
    let (status, reset) = api
        .post(
            "/api/v1/admin/users/sam.okafor/reset-totp",
            json!({"reason": "lost phone"}),
        )
        .await;
    assert_eq!(status, 200);
    let new_secret = reset["totp_secret"].as_str().unwrap().to_string();
    assert_ne!(new_secret, totp_secret);
    // The next step's code: unused, so only the reset stops it.
    let (status, _) = api
        .enrol("sam.okafor", &password, &totp_code(&totp_secret, 30))
        .await;
    assert_eq!(status, 401, "a code of the old secret");
    let (status, _) = api
        .enrol("sam.okafor", &password, &totp_code(&new_secret, 30))
        .await;
    assert_eq!(status, 200);

    // ---- unlock: a locked user is counted from nothing again ----
    for _ in 0..doorstep_server::auth::MAX_FAILURES {
        api.enrol("sam.okafor", "wrong", "000000").await;
    }
    let (status, body) = api
        .enrol("sam.okafor", &password, &totp_code(&new_secret, 0))
        .await;
    assert_eq!((status, body["code"].as_str()), (429, Some("locked_out")));
    let (status, _) = api
        .post(
            "/api/v1/admin/users/sam.okafor/unlock",
            json!({"reason": "rang the desk"}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = api.enrol("sam.okafor", "wrong", "000000").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("bad_credentials"))
    );
    let sam = store.user_by_username("sam.okafor").await.unwrap().unwrap();
    assert_eq!((sam.failed_attempts, sam.locked_until), (1, None));
    let (status, _) = api
        .post("/api/v1/admin/users/nobody/unlock", json!({"reason": "x"}))
        .await;
    assert_eq!(status, 404);

    // ---- devices: listed with their user; a revoked one is told so ----
    let listed: Vec<Value> = api
        .http
        .get(format!("{}/api/v1/admin/devices", api.base))
        .header("authorization", &api.admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mine: Vec<&Value> = listed
        .iter()
        .filter(|d| d["user"] == "sam.okafor")
        .collect();
    assert_eq!(mine.len(), 2, "{listed:?}");
    assert!(mine.iter().any(|d| d["id"] == enrolled.device_id.as_str()));
    let revoke = format!("/api/v1/admin/devices/{}/revoke", enrolled.device_id);
    let (status, _) = api.post(&revoke, json!({})).await;
    assert_eq!(status, 422, "a revocation needs a reason");
    assert_eq!(api.pull(&enrolled.tokens.access_token).await.0, 200);
    let (status, _) = api.post(&revoke, json!({"reason": "tablet stolen"})).await;
    assert_eq!(status, 200);
    assert_eq!(
        api.pull(&enrolled.tokens.access_token).await,
        (403, "device_revoked".to_string())
    );
    let (status, body) = api.refresh(&enrolled).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("device_revoked"))
    );
    let (status, _) = api.post(&revoke, json!({"reason": "again"})).await;
    assert_eq!(status, 409);
    let (status, _) = api
        .post(
            "/api/v1/admin/devices/no-such-device/revoke",
            json!({"reason": "x"}),
        )
        .await;
    assert_eq!(status, 404);

    // ---- a clinician cannot administer ----
    let nurse_token = api
        .http
        .post(format!(
            "{}/api/v1/admin/users/sam.okafor/disable",
            api.base
        ))
        .bearer_auth(&enrolled.tokens.access_token)
        .json(&json!({"reason": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(nurse_token.status(), 403);

    // ---- every change is audited with who and why ----
    let audited: Vec<(String, String, String)> = store
        .audit_rows()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.event.actor == "admin:ada")
        .map(|r| {
            (
                r.event.action,
                r.event.detail["user"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                r.event.detail["reason"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    let expect = |a: &str, r: &str| (a.to_string(), "sam.okafor".to_string(), r.to_string());
    assert_eq!(
        audited,
        vec![
            expect("user_added", "new starter"),
            expect("user_disabled", "left the trust"),
            expect("user_enabled", "came back"),
            expect("user_totp_reset", "lost phone"),
            expect("user_unlocked", "rang the desk"),
            expect("device_revoked", "tablet stolen"),
        ]
    );
    let events = store.audit_rows().await.unwrap();
    assert_eq!(doorstep_server::audit::verify(&events), Ok(events.len()));
}
