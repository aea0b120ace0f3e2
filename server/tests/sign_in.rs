//! Sign-in hardening over real HTTPS, on SQLite and on PostgreSQL: parallel wrong guesses
//! get no more tries than serial ones (the lockout cannot be raced); too many sign-ins from
//! one address or for one username get 429 with Retry-After; an unknown username gets the
//! same answer, after the same work, as a wrong password; forged, expired, replayed and
//! revoked tokens are refused, and a refresh ends the access token it replaces; TOTP secrets
//! are sealed at rest under a key file kept apart from the database.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use doorstep_protocol::{ApiError, EnrolRequest, EnrolResponse, RefreshRequest, TokenResponse};
use doorstep_server::demo::{self, DemoSpec, DemoUser};
use doorstep_server::limits::{Rate, SignInLimitConfig};
use doorstep_server::run::{RunningServer, ServeConfig, TlsMode, start};
use doorstep_server::store::{self, DatabaseUrl, Store};
use doorstep_testkit::http::https_client;

/// A small demo federation served over dev TLS.
struct Federation {
    server: RunningServer,
    store: Arc<dyn Store>,
    users: Vec<DemoUser>,
    http: reqwest::Client,
}

impl Federation {
    async fn start(
        dir: &Path,
        database: DatabaseUrl,
        config: impl FnOnce(&mut ServeConfig),
    ) -> Self {
        Self::start_with(dir, database, config, |_| async {}).await
    }

    /// As [`Federation::start`], with `before` changing the seeded store before the server
    /// starts.
    async fn start_with<B, Fut>(
        dir: &Path,
        database: DatabaseUrl,
        config: impl FnOnce(&mut ServeConfig),
        before: B,
    ) -> Self
    where
        B: FnOnce(Arc<dyn Store>) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let data = dir.to_path_buf();
        let spec = DemoSpec::small(5, Utc::now().date_naive());
        {
            let (data, spec, database) = (data.clone(), spec.clone(), database.clone());
            tokio::task::spawn_blocking(move || demo::seed_with_database(&data, &database, &spec))
                .await
                .unwrap()
                .unwrap();
        }
        let users = demo::read_demo_users(&data).unwrap();
        before(store::open(&database).await.unwrap()).await;
        let mut serve = ServeConfig {
            database: Some(database.clone()),
            listen: "127.0.0.1:0".parse().unwrap(),
            tls: TlsMode::Dev,
            ..ServeConfig::new(data)
        };
        config(&mut serve);
        let server = start(serve).await.unwrap();
        let http = https_client(&server.ca_pem_path);
        let store = store::open(&database).await.unwrap();
        Federation {
            server,
            store,
            users,
            http,
        }
    }

    fn user(&self, name: &str) -> &DemoUser {
        self.users.iter().find(|u| u.username == name).unwrap()
    }

    async fn enrol(&self, username: &str, password: &str, totp: &str) -> (u16, reqwest::Response) {
        let response = self
            .http
            .post(format!("{}/api/v1/auth/enrol", self.server.base_url))
            .json(&EnrolRequest {
                username: username.to_owned(),
                password: password.to_owned(),
                totp: totp.to_owned(),
                device_name: "Test laptop".into(),
            })
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response)
    }
}

async fn on_sqlite<F, Fut>(test: F)
where
    F: FnOnce(tempfile::TempDir, DatabaseUrl) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let dir = tempfile::tempdir().unwrap();
    let database = DatabaseUrl::in_data_dir(dir.path());
    test(dir, database).await;
}

async fn on_postgres<F, Fut>(name: &str, test: F)
where
    F: FnOnce(tempfile::TempDir, DatabaseUrl) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let Some(cluster) = doorstep_testkit::PgCluster::start_or_skip(name) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let database = DatabaseUrl::parse(&cluster.create_database().unwrap()).unwrap();
    test(dir, database).await;
}

fn roomy() -> SignInLimitConfig {
    let wide = Rate {
        burst: 1000,
        every: Duration::from_millis(1),
    };
    SignInLimitConfig {
        per_address: wide,
        per_username: wide,
        ..SignInLimitConfig::default()
    }
}

// ---------- a raced lockout ----------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raced_lockout_gives_no_extra_guesses_on_sqlite() {
    on_sqlite(|dir, db| async move { raced_lockout(dir.path(), db).await }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raced_lockout_gives_no_extra_guesses_on_postgres() {
    on_postgres("raced lockout on PostgreSQL", |dir, db| async move {
        raced_lockout(dir.path(), db).await
    })
    .await;
}

/// Twenty wrong sign-ins at once: as if sent one after the other, four are answered "bad
/// credentials", the fifth locks, the other fifteen are refused unchecked; then the right
/// password and code are refused too, while the lock lasts.
async fn raced_lockout(dir: &Path, database: DatabaseUrl) {
    // Quotas wide enough that only the lockout answers.
    let fed = Arc::new(Federation::start(dir, database, |c| c.sign_in_limits = roomy()).await);
    let nurse = fed.user("nurse.demo").clone();
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let (fed, name) = (Arc::clone(&fed), nurse.username.clone());
            tokio::spawn(async move {
                let (status, response) = fed.enrol(&name, &format!("guess {i}"), "000000").await;
                (status, response.json::<ApiError>().await.unwrap().code)
            })
        })
        .collect();
    let mut answers = std::collections::BTreeMap::<(u16, String), usize>::new();
    for task in tasks {
        *answers.entry(task.await.unwrap()).or_default() += 1;
    }
    let max = doorstep_server::auth::MAX_FAILURES as usize;
    assert_eq!(
        answers,
        [
            ((401, "bad_credentials".to_string()), max - 1),
            ((429, "locked_out".to_string()), 20 - (max - 1)),
        ]
        .into_iter()
        .collect(),
    );
    let checked = fed
        .store
        .audit_rows()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| {
            r.event.action == "sign_in_failed" && r.event.detail["why"] == "bad credentials"
        })
        .count();
    assert_eq!(
        checked, max,
        "exactly {max} guesses had their password checked"
    );
    let (status, response) = fed
        .enrol(
            &nurse.username,
            &nurse.password,
            &doorstep_testkit::totp_code(&nurse.totp_secret, 0),
        )
        .await;
    assert_eq!(status, 429, "the right password while locked is refused");
    assert_eq!(
        response.json::<ApiError>().await.unwrap().code,
        "locked_out"
    );
}

// ---------- rate limits ----------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_sign_ins_get_429_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let database = DatabaseUrl::in_data_dir(dir.path());
    let fed = Federation::start(dir.path(), database, |c| {
        c.sign_in_limits = SignInLimitConfig {
            per_address: Rate {
                burst: 4,
                every: Duration::from_secs(600),
            },
            per_username: Rate {
                burst: 2,
                every: Duration::from_secs(600),
            },
            ..SignInLimitConfig::default()
        }
    })
    .await;
    let limited = |response: reqwest::Response| async move {
        let retry: u64 = response
            .headers()
            .get("retry-after")
            .expect("a Retry-After header")
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        (retry, response.json::<ApiError>().await.unwrap().code)
    };
    // Per username: the third try for the nurse, however spelt, is turned away unchecked.
    for name in ["nurse.demo", " nurse.demo "] {
        assert_eq!(fed.enrol(name, "wrong", "000000").await.0, 401);
    }
    let (status, response) = fed.enrol("NURSE.DEMO", "wrong", "000000").await;
    assert_eq!(status, 429);
    let (retry, code) = limited(response).await;
    assert_eq!(code, "rate_limited");
    assert!((1..=600).contains(&retry), "Retry-After {retry}");
    // Per address: the fourth request from here is still answered, the fifth is not.
    assert_eq!(fed.enrol("gp.demo", "wrong", "000000").await.0, 401);
    let (status, response) = fed.enrol("paramedic.demo", "wrong", "000000").await;
    assert_eq!(status, 429);
    assert_eq!(limited(response).await.1, "rate_limited");
    // Only the two checked tries for the nurse counted towards the lockout.
    let nurse = fed
        .store
        .user_by_username("nurse.demo")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(nurse.failed_attempts, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_user_gets_the_answer_and_the_work_of_a_wrong_password() {
    let dir = tempfile::tempdir().unwrap();
    let database = DatabaseUrl::in_data_dir(dir.path());
    let fed = Federation::start(dir.path(), database, |c| c.sign_in_limits = roomy()).await;
    let answer = |name: &'static str| {
        let fed = &fed;
        async move {
            let started = Instant::now();
            let (status, response) = fed.enrol(name, "not the password", "123456").await;
            let body = response.bytes().await.unwrap().to_vec();
            (status, body, started.elapsed())
        }
    };
    let mut known = Vec::new();
    let mut unknown = Vec::new();
    // Three of each, interleaved (the lockout is at five).
    for _ in 0..3 {
        known.push(answer("nurse.demo").await);
        unknown.push(answer("nobody.at.all").await);
    }
    let (status, body, _) = &known[0];
    assert_eq!(*status, 401);
    for (s, b, _) in known.iter().chain(&unknown) {
        assert_eq!((s, b), (status, body), "every refusal is the same bytes");
    }
    let fastest = |v: &[(u16, Vec<u8>, Duration)]| v.iter().map(|a| a.2).min().unwrap();
    let (k, u) = (fastest(&known), fastest(&unknown));
    // Without the decoy an unknown name is answered after one index lookup, tens of times
    // faster than an Argon2 check; with it, the two are alike.
    assert!(u * 3 >= k, "unknown {u:?} vs known {k:?}");
    // A name too long to be anyone's is refused, saying why.
    let (status, response) = fed.enrol(&"x".repeat(65), "pw", "000000").await;
    assert_eq!(status, 400);
    assert!(
        response
            .json::<ApiError>()
            .await
            .unwrap()
            .message
            .contains("at most 64 characters")
    );
}

// ---------- tokens ----------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_expired_replayed_and_revoked_tokens_are_refused_on_sqlite() {
    on_sqlite(|dir, db| async move { tokens_refused(dir.path(), db).await }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_expired_replayed_and_revoked_tokens_are_refused_on_postgres() {
    on_postgres("tokens on PostgreSQL", |dir, db| async move {
        tokens_refused(dir.path(), db).await
    })
    .await;
}

impl Federation {
    async fn enrolled(&self, name: &str, offset_secs: u64) -> EnrolResponse {
        let user = self.user(name).clone();
        let (status, response) = self
            .enrol(
                &user.username,
                &user.password,
                &doorstep_testkit::totp_code(&user.totp_secret, offset_secs),
            )
            .await;
        assert_eq!(status, 200);
        response.json().await.unwrap()
    }

    async fn refresh(&self, device_id: &str, refresh_token: &str) -> (u16, reqwest::Response) {
        let response = self
            .http
            .post(format!("{}/api/v1/auth/refresh", self.server.base_url))
            .json(&RefreshRequest {
                device_id: device_id.to_owned(),
                refresh_token: refresh_token.to_owned(),
            })
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response)
    }

    /// The status and error code of a pull with `access_token`.
    async fn pull_status(&self, access_token: &str) -> (u16, String) {
        let response = self
            .http
            .get(format!("{}/api/v1/sync/pull", self.server.base_url))
            .bearer_auth(access_token)
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
}

async fn code_of(response: reqwest::Response) -> String {
    response.json::<ApiError>().await.unwrap().code
}

async fn tokens_refused(dir: &Path, database: DatabaseUrl) {
    let fed = Federation::start(dir, database, |c| {
        // A refresh token unused for 2 s expires: the idle life, made short to test it.
        c.token_lifetimes.refresh_idle = chrono::Duration::seconds(2);
    })
    .await;
    let enrolled = fed.enrolled("nurse.demo", 0).await;
    let device = enrolled.device_id.clone();
    assert_eq!(fed.pull_status(&enrolled.tokens.access_token).await.0, 200);

    // Forged: a well-formed token nobody issued, as a refresh and as an access token.
    let forged = format!("dsr_{}", "A".repeat(43));
    let (status, response) = fed.refresh(&device, &forged).await;
    assert_eq!(
        (status, code_of(response).await.as_str()),
        (401, "unauthorized")
    );
    assert_eq!(
        fed.pull_status(&format!("dsa_{}", "A".repeat(43))).await,
        (401, "unauthorized".to_string())
    );

    // Rotation: the new pair works, the access token it replaces does not.
    let (status, response) = fed.refresh(&device, &enrolled.tokens.refresh_token).await;
    assert_eq!(status, 200);
    let rotated: TokenResponse = response.json().await.unwrap();
    assert_eq!(fed.pull_status(&rotated.access_token).await.0, 200);
    assert_eq!(fed.pull_status(&enrolled.tokens.access_token).await.0, 401);

    // Replayed under another device's id: refused, and the owner's tokens are revoked.
    let other = fed.enrolled("nurse.demo", 30).await;
    let (status, _) = fed.refresh(&other.device_id, &rotated.refresh_token).await;
    assert_eq!(status, 401);
    assert_eq!(fed.pull_status(&rotated.access_token).await.0, 401);
    let (status, _) = fed.refresh(&device, &rotated.refresh_token).await;
    assert_eq!(
        status, 401,
        "a refresh token revoked as loose stays refused"
    );

    // Expired: unused past the idle life.
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let (status, response) = fed
        .refresh(&other.device_id, &other.tokens.refresh_token)
        .await;
    assert_eq!(
        (status, code_of(response).await.as_str()),
        (401, "token_expired")
    );

    // Revoked device: 403 device_revoked, for its refresh and its access token alike.
    let third = fed.enrolled("gp.demo", 0).await;
    fed.store
        .revoke_device(&third.device_id, Utc::now())
        .await
        .unwrap();
    let (status, response) = fed
        .refresh(&third.device_id, &third.tokens.refresh_token)
        .await;
    assert_eq!(
        (status, code_of(response).await.as_str()),
        (403, "device_revoked")
    );
    assert_eq!(
        fed.pull_status(&third.tokens.access_token).await,
        (403, "device_revoked".to_string())
    );

    // Every successful refresh is audited, with its user and device.
    let refreshes: Vec<_> = fed
        .store
        .audit_rows()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.event.action == "refresh")
        .collect();
    assert_eq!(refreshes.len(), 1);
    assert_eq!(refreshes[0].event.actor, "user:nurse.demo");
    assert_eq!(refreshes[0].event.detail["device_id"], device.as_str());
}

// ---------- TOTP secrets at rest ----------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn totp_secrets_are_sealed_at_rest_on_sqlite() {
    on_sqlite(|dir, db| async move { totp_sealed(dir.path(), db, true).await }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn totp_secrets_are_sealed_at_rest_on_postgres() {
    on_postgres("sealed TOTP on PostgreSQL", |dir, db| async move {
        totp_sealed(dir.path(), db, false).await
    })
    .await;
}

/// A seeded federation stores no TOTP secret in the clear (rows, and for SQLite the file and
/// its WAL); a user from before sealing (a plaintext secret) is sealed at start; sign-in
/// works for both; a node with another key file refuses to start.
async fn totp_sealed(dir: &Path, database: DatabaseUrl, file: bool) {
    const LEGACY_SECRET: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
    let legacy_password = "an old password";
    let fed = Federation::start_with(
        dir,
        database.clone(),
        |c| c.sign_in_limits = roomy(),
        |store| async move {
            let service = store
                .user_by_username("nurse.demo")
                .await
                .unwrap()
                .unwrap()
                .service_id;
            store
                .create_user(
                    store::NewUser {
                        username: "legacy.nurse".into(),
                        display_name: "Legacy Nurse".into(),
                        role: "nurse".into(),
                        service_id: service,
                        password_hash: doorstep_server::auth::hash_password(legacy_password)
                            .unwrap(),
                        totp_secret: LEGACY_SECRET.into(),
                        practice_ods: None,
                    },
                    Utc::now(),
                )
                .await
                .unwrap();
        },
    )
    .await;
    let mut secrets: Vec<String> = fed.users.iter().map(|u| u.totp_secret.clone()).collect();
    secrets.push(LEGACY_SECRET.into());
    for user in fed.store.users().await.unwrap() {
        assert!(
            user.totp_secret.starts_with("sealed1:"),
            "{} is stored unsealed",
            user.username
        );
        for secret in &secrets {
            assert!(!user.totp_secret.contains(secret.as_str()));
        }
    }
    if file {
        for name in ["federation.db", "federation.db-wal"] {
            let Ok(bytes) = std::fs::read(dir.join(name)) else {
                continue;
            };
            for secret in &fed.users.iter().map(|u| &u.totp_secret).collect::<Vec<_>>() {
                assert!(
                    !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                    "{name} holds a demo TOTP secret in the clear"
                );
            }
        }
    }
    let key = dir.join("totp-key");
    assert_eq!(std::fs::read(&key).unwrap().len(), 32);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    // Sign-in works, for a seeded user and for the one sealed at start.
    fed.enrolled("nurse.demo", 0).await;
    let (status, _) = fed
        .enrol(
            "legacy.nurse",
            legacy_password,
            &doorstep_testkit::totp_code(LEGACY_SECRET, 0),
        )
        .await;
    assert_eq!(status, 200);
    // Another node with another key file is refused at start, naming the file.
    let other = tempfile::tempdir().unwrap();
    let refused = start(ServeConfig {
        database: Some(database),
        listen: "127.0.0.1:0".parse().unwrap(),
        tls: TlsMode::Dev,
        ..ServeConfig::new(other.path())
    })
    .await
    .unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("is not the key this federation's TOTP secrets are sealed with"),
        "{refused}"
    );
}
