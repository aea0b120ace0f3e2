//! Sign-in hardening over real HTTPS, on SQLite and on PostgreSQL: parallel wrong guesses
//! get no more tries than serial ones (the lockout cannot be raced).

use std::path::Path;
use std::sync::Arc;

use chrono::Utc;
use doorstep_protocol::{ApiError, EnrolRequest};
use doorstep_server::demo::{self, DemoSpec, DemoUser};
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
    let fed = Arc::new(Federation::start(dir, database, |_| {}).await);
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
