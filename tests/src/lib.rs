//! Harness for Doorstep's end-to-end tests: a real federation server (seeded with the demo
//! federation on the embedded store, serving HTTPS with its own dev CA on a random loopback
//! port) and helpers for the demo users' sign-in; and [`fake_shell`], the UI served to a
//! plain browser with its commands answered from memory (for the accessibility check); and
//! [`browser`], headless Chromium through chromedriver with axe-core, for the tests that look
//! at pages (the UI's and the console's).
//!
//! The tests in `tests/` link the server and the client libraries side by side; nothing in the
//! product does (see ARCHITECTURE.md).

pub mod browser;
pub mod fake_shell;

use std::path::PathBuf;

use doorstep_server::run::{RunningServer, ServeConfig, TlsMode};
use serde::Deserialize;
use tokio::sync::Mutex;

/// A demo user as `doorstep-server seed --demo` writes it to `demo-users.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct DemoUser {
    pub username: String,
    pub password: String,
    pub role: String,
    pub totp_secret: String,
}

/// Where the running server is.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    pub base_url: String,
    pub ca_pem_path: PathBuf,
}

/// A seeded federation served over HTTPS for the length of a test.
pub struct DemoFederation {
    pub server: ServerInfo,
    pub data_dir: tempfile::TempDir,
    pub users: Vec<DemoUser>,
    config: ServeConfig,
    running: Mutex<Option<RunningServer>>,
}

impl DemoFederation {
    /// Seeds the demo federation into a fresh directory and starts the server on a random port.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// As [`DemoFederation::start`], with `configure` changing the server's configuration
    /// (feed retention, body limits) before it starts.
    pub async fn start_with(configure: impl FnOnce(&mut ServeConfig)) -> Self {
        Self::start_seeded(None, configure).await
    }

    /// As [`DemoFederation::start`], with a federation of the shape `spec` (a small one, one
    /// with the leak probe's markers) instead of the standard demo.
    pub async fn start_spec(spec: doorstep_server::demo::DemoSpec) -> Self {
        Self::start_seeded(Some(spec), |_| {}).await
    }

    async fn start_seeded(
        spec: Option<doorstep_server::demo::DemoSpec>,
        configure: impl FnOnce(&mut ServeConfig),
    ) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let data_dir = tempfile::tempdir().expect("temp dir");
        let dir = data_dir.path().to_path_buf();
        tokio::task::spawn_blocking({
            let dir = dir.clone();
            move || match spec {
                None => doorstep_server::demo::seed(&dir, 7),
                Some(spec) => doorstep_server::demo::seed_with(&dir, &spec),
            }
        })
        .await
        .expect("seed task")
        .expect("seed the demo federation");
        let users: Vec<DemoUser> = serde_json::from_str(
            &std::fs::read_to_string(dir.join("demo-users.json")).expect("demo-users.json"),
        )
        .expect("demo-users.json parses");
        let mut config = ServeConfig::new(dir.clone());
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.tls = TlsMode::Dev;
        configure(&mut config);
        let running = doorstep_server::run::start(config.clone())
            .await
            .expect("start the server");
        // A restart serves the same store on the same address, so devices find it again.
        config.listen = running.addr;
        let server = ServerInfo {
            base_url: running.base_url.clone(),
            ca_pem_path: running.ca_pem_path.clone(),
        };
        Self {
            server,
            data_dir,
            users,
            config,
            running: Mutex::new(Some(running)),
        }
    }

    pub fn user(&self, username: &str) -> DemoUser {
        self.users
            .iter()
            .find(|u| u.username == username)
            .unwrap_or_else(|| panic!("no demo user {username}"))
            .clone()
    }

    /// Enrolment parameters for `user` against this server, trusting only its CA, with the
    /// TOTP code of now + `totp_offset_secs` (the server accepts each code once: a second
    /// enrolment in the same 30 s step needs the next step's code).
    pub fn enrol_params(
        &self,
        user: &DemoUser,
        totp_offset_secs: u64,
        pin: &str,
        device_name: &str,
    ) -> doorstep_client::EnrolParams {
        doorstep_client::EnrolParams {
            server_url: self.server.base_url.clone(),
            ca_pem_path: Some(self.server.ca_pem_path.clone()),
            username: user.username.clone(),
            password: user.password.as_str().into(),
            totp: totp_for(&user.totp_secret, totp_offset_secs).into(),
            pin: pin.into(),
            device_name: device_name.into(),
            dev_mode: false,
        }
    }

    /// Stops the server: the device is offline from here on.
    pub async fn stop_server(&self) {
        if let Some(running) = self.running.lock().await.take() {
            running.shutdown().await;
        }
    }

    /// Starts the server again after [`DemoFederation::stop_server`]: the same store, address
    /// and certificate (signal is back).
    pub async fn restart_server(&self) {
        let mut running = self.running.lock().await;
        if running.is_none() {
            *running = Some(
                doorstep_server::run::start(self.config.clone())
                    .await
                    .expect("restart the server on its address"),
            );
        }
    }

    /// The federation's store, opened beside the running server (what the tests check the
    /// server's side with).
    pub async fn store(&self) -> std::sync::Arc<dyn doorstep_server::store::Store> {
        doorstep_server::store::open(&doorstep_server::store::DatabaseUrl::in_data_dir(
            self.data_dir.path(),
        ))
        .await
        .expect("open the federation's store beside the server")
    }

    /// A secret for member practice `ods`'s own system (as `doorstep-server practice add`).
    pub async fn practice_secret(&self, ods: &str) -> String {
        doorstep_server::auth::issue_source_secret(
            self.store().await.as_ref(),
            ods,
            "test",
            chrono::Utc::now(),
        )
        .await
        .expect("issue a practice secret")
    }

    /// An HTTPS client that trusts only this federation's CA, as a practice's system would.
    pub fn https_client(&self) -> reqwest::Client {
        doorstep_testkit::http::https_client(&self.server.ca_pem_path)
    }
}

/// The TOTP code for `secret` (base32) at now + `offset_secs` (the test kit's).
pub use doorstep_testkit::totp_code as totp_for;

/// What the independent FHIR R4 check (fhir.resources 6.4.0 in `DOORSTEP_FHIR_PYTHON`, set by
/// `cargo xtask test`) says of a Bundle: `Ok` with its summary, or `Err` with what it refused.
/// `None` when the check is not installed here (a plain `cargo test`); under `cargo xtask test`
/// a missing check is a failure.
pub fn fhir_check(bundle: &str) -> Option<Result<String, String>> {
    use std::io::Write;
    let python = match std::env::var_os("DOORSTEP_FHIR_PYTHON").map(PathBuf::from) {
        Some(p) if p.is_file() => p,
        _ if std::env::var_os("DOORSTEP_E2E_REQUIRED").is_some() => {
            panic!("DOORSTEP_FHIR_PYTHON does not name the FHIR check's Python")
        }
        _ => {
            eprintln!("the FHIR check is not installed here; `cargo xtask test` runs it");
            return None;
        }
    };
    let script = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
        .join("fhir/validate_bundle.py");
    let mut child = std::process::Command::new(python)
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start the FHIR check");
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(bundle.as_bytes())
        .expect("send the bundle");
    let out = child.wait_with_output().expect("the FHIR check ran");
    let said = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    Some(if out.status.success() {
        Ok(said)
    } else {
        Err(said)
    })
}
