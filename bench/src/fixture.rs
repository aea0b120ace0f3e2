//! A seeded federation served over HTTPS on loopback (dev CA, rustls), in this process, with
//! its district nurse's caseload the size a benchmark asks for; and devices enrolled on it.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use chrono::{NaiveDate, Utc};
use doorstep_client::{Device, EnrolParams};
use doorstep_record::synthetic::FederationSpec;
use doorstep_server::demo::{DemoSpec, DemoUser, read_demo_users, seed_with};
use doorstep_server::run::{RunningServer, ServeConfig, TlsMode, start};
use doorstep_server::store::Store;

/// The PIN every benchmark device uses.
pub const PIN: &str = "135790";

pub struct Federation {
    pub dir: tempfile::TempDir,
    pub server: RunningServer,
    pub nurse: DemoUser,
    pub today: NaiveDate,
    /// How long seeding took.
    pub seeded_in: Duration,
    /// The pull page budget the server was started with ([`page_bytes`]).
    pub page_bytes: usize,
    /// TOTP steps handed out (a code is accepted once, so each sign-in takes the next step).
    totp_steps: AtomicU64,
}

impl Federation {
    /// Seeds 10 practices whose patients include a district nursing caseload of `caseload`
    /// patients of about `per_patient` resources each, and serves it.
    pub async fn start(caseload: usize, per_patient: usize) -> Result<Federation> {
        let dir = tempfile::tempdir()?;
        let today = Utc::now().date_naive();
        let practices = 10;
        let spec = DemoSpec {
            federation: FederationSpec {
                seed: 42,
                practices,
                patients_per_practice: (caseload + 50).div_ceil(practices),
                resources_per_patient: per_patient,
                today,
            },
            caseload,
            appointments: 0,
            incidents: 0,
            dissenting: 0,
            ooh_calls: 0,
            podiatry: 0,
            leak_markers: false,
        };
        let t = Instant::now();
        let path = dir.path().to_path_buf();
        tokio::task::spawn_blocking(move || seed_with(&path, &spec))
            .await?
            .context("seeding the federation")?;
        let seeded_in = t.elapsed();
        let page_bytes = page_bytes()?;
        let server = start(ServeConfig {
            tls: TlsMode::Dev,
            listen: "127.0.0.1:0".parse()?,
            page_bytes,
            ..ServeConfig::new(dir.path())
        })
        .await
        .context("starting the server")?;
        let nurse = read_demo_users(dir.path())?
            .into_iter()
            .find(|u| u.username == "nurse.demo")
            .context("the demo's district nurse")?;
        Ok(Federation {
            dir,
            server,
            nurse,
            today,
            seeded_in,
            page_bytes,
            totp_steps: AtomicU64::new(0),
        })
    }

    /// The nurse's next one-time code. The server accepts a step once and one step either
    /// side of its own, so each sign-in takes the step after the last one used, waiting for
    /// the clock when that is more than one step ahead.
    async fn next_code(&self) -> String {
        let now_step = || Utc::now().timestamp() as u64 / 30;
        let step = self
            .totp_steps
            .fetch_max(now_step(), Ordering::SeqCst)
            .max(now_step());
        self.totp_steps.store(step + 1, Ordering::SeqCst);
        while step > now_step() + 1 {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        doorstep_testkit::totp_code_at(&self.nurse.totp_secret, step * 30)
    }

    /// A fresh device of the nurse's, enrolled into `dir` (an empty cache).
    pub async fn enrol(&self, dir: &Path) -> Result<Device> {
        Device::enrol(
            dir,
            EnrolParams {
                server_url: self.server.base_url.clone(),
                ca_pem_path: Some(self.server.ca_pem_path.clone()),
                username: self.nurse.username.clone(),
                password: self.nurse.password.as_str().into(),
                totp: self.next_code().await.into(),
                pin: PIN.into(),
                device_name: "bench".into(),
                dev_mode: false,
            },
        )
        .await
        .context("enrolling a device")
    }

    /// An HTTPS client trusting the federation's CA, and a device access token of the nurse.
    pub async fn raw_device(&self) -> Result<(reqwest::Client, String)> {
        let http = doorstep_testkit::http::https_client(&self.server.ca_pem_path);
        let answer: doorstep_protocol::EnrolResponse = http
            .post(format!("{}/api/v1/auth/enrol", self.server.base_url))
            .json(&doorstep_protocol::EnrolRequest {
                username: self.nurse.username.clone(),
                password: self.nurse.password.clone(),
                totp: self.next_code().await,
                device_name: "bench (raw)".into(),
            })
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        Ok((http, answer.tokens.access_token))
    }

    /// The federation's store, opened beside the running server.
    pub async fn store(&self) -> Result<Arc<dyn Store>> {
        Ok(
            doorstep_server::store::open(&doorstep_server::store::DatabaseUrl::in_data_dir(
                self.dir.path(),
            ))
            .await?,
        )
    }

    pub async fn stop(self) {
        self.server.shutdown().await;
    }
}

/// Bytes of every file in `dir` (the cache, its WAL, device.json).
pub fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// The pull page budget of the in-process server (suites `sync`, `search`, `growth`; `load`
/// runs the server binary with its own default): the product's default, or
/// `DOORSTEP_BENCH_PAGE_BYTES` (bytes of JSON), so that one page size can be weighed against
/// another with the same build.
pub fn page_bytes() -> Result<usize> {
    match std::env::var("DOORSTEP_BENCH_PAGE_BYTES") {
        Err(std::env::VarError::NotPresent) => Ok(doorstep_server::api::DEFAULT_PAGE_BYTES),
        Ok(v) => parse_page_bytes(&v),
        Err(e) => anyhow::bail!("DOORSTEP_BENCH_PAGE_BYTES: {e}"),
    }
}

fn parse_page_bytes(v: &str) -> Result<usize> {
    match v.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => anyhow::bail!(
            "DOORSTEP_BENCH_PAGE_BYTES is '{v}': it must be a page budget in bytes, \
             a whole number above 0 (the default is {})",
            doorstep_server::api::DEFAULT_PAGE_BYTES
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_page_bytes;

    #[test]
    fn a_page_budget_is_a_whole_number_of_bytes_above_zero() {
        assert_eq!(parse_page_bytes("1048576").unwrap(), 1_048_576);
        assert_eq!(parse_page_bytes(" 4194304\n").unwrap(), 4_194_304);
        for bad in ["0", "", "4MiB", "-1", "1.5"] {
            let e = parse_page_bytes(bad).unwrap_err().to_string();
            assert!(
                e.contains(&format!("is '{bad}'")) && e.contains("whole number above 0"),
                "{bad:?}: {e}"
            );
        }
    }
}
