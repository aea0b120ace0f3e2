//! Test support shared by Doorstep's test suites (the server's own tests and `tests/`), so that
//! no suite keeps its own copy of a harness.
//!
//! * [`PgCluster`]: a real, throwaway PostgreSQL cluster for one test: `initdb` into a
//!   temporary directory, `pg_ctl start` on a free loopback port, trust authentication for the
//!   role `doorstep`, stopped and deleted on drop. PostgreSQL refuses to run as root, so when
//!   the test runs as root the server binaries run as the `postgres` user (Debian's package
//!   creates it) through `runuser`. The binaries come from `DOORSTEP_PG_BIN`, else the newest
//!   `/usr/lib/postgresql/*/bin`, else `PATH`.
//! * [`free_port`].
//! * [`ChildGuard`]: a child process stopped with SIGTERM and waited for on drop (tauri-driver,
//!   the server binary), never SIGKILL.
//! * [`totp`]: the demo users' authenticator codes.
//! * [`http`]: an HTTPS client trusting only the federation's CA, and enrolment for a token.
//! * [`device`]: what a device's cache shows ([`device::cache_view`], for convergence checks),
//!   its cache opened with the PIN's key, and the Compositions the server holds.
//!
//! Nothing here is mocked: a test that asks for PostgreSQL gets the real server. When it is not
//! installed, [`PgCluster::start`] answers why; a suite then skips with that message, except
//! under `cargo xtask test` (`DOORSTEP_E2E_REQUIRED=1`), where a missing PostgreSQL fails.

pub mod device;
pub mod http;
pub mod process;
pub mod totp;

pub use process::ChildGuard;
pub use totp::{totp_code, totp_code_at};

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (free when asked; bind it soon).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind a loopback port")
        .local_addr()
        .expect("local address")
        .port()
}

/// True when the run must not skip end-to-end prerequisites (set by `cargo xtask test`).
pub fn e2e_required() -> bool {
    std::env::var_os("DOORSTEP_E2E_REQUIRED").is_some()
}

/// A running PostgreSQL cluster, stopped and removed on drop.
pub struct PgCluster {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    run_as: Option<&'static str>,
    databases: std::sync::atomic::AtomicU32,
    // Dropped last: the directory goes after the server stopped.
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for PgCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgCluster")
            .field("port", &self.port)
            .field("data", &self.data)
            .finish()
    }
}

impl PgCluster {
    /// Starts a cluster, or says why it cannot (PostgreSQL not installed, initdb failed...).
    pub fn start() -> Result<PgCluster, String> {
        let bin = pg_bin_dir().ok_or_else(|| {
            "PostgreSQL is not installed (no initdb under /usr/lib/postgresql/*/bin or on PATH; \
             apt-get install postgresql, or set DOORSTEP_PG_BIN)"
                .to_string()
        })?;
        let run_as = is_root().then_some("postgres");
        let dir = tempfile::Builder::new()
            .prefix("doorstep-pg-")
            .tempdir()
            .map_err(|e| format!("creating a temporary directory: {e}"))?;
        let data = dir.path().join("data");
        if let Some(user) = run_as {
            // The cluster's files must belong to the user that runs it.
            let status = Command::new("chown")
                .arg(format!("{user}:{user}"))
                .arg(dir.path())
                .status()
                .map_err(|e| format!("chown: {e}"))?;
            if !status.success() {
                return Err(format!(
                    "could not give {} to the {user} user (does it exist?)",
                    dir.path().display()
                ));
            }
        }
        let initdb = run_pg(
            run_as,
            &bin.join("initdb"),
            &[
                "-D",
                path_str(&data)?,
                "-U",
                "doorstep",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ],
        )?;
        if !initdb.status.success() {
            return Err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&initdb.stderr)
            ));
        }
        let mut last_error = String::new();
        // The port is free when asked; another process may take it first, so try a few.
        for _ in 0..5 {
            let port = free_port();
            let options = format!(
                "-p {port} -c listen_addresses=127.0.0.1 -k {} -c fsync=off \
                 -c synchronous_commit=off -c full_page_writes=off -c max_connections=200",
                path_str(dir.path())?
            );
            let log = dir.path().join("server.log");
            let started = run_pg(
                run_as,
                &bin.join("pg_ctl"),
                &[
                    "-D",
                    path_str(&data)?,
                    "-o",
                    &options,
                    "-l",
                    path_str(&log)?,
                    "-w",
                    "-t",
                    "60",
                    "start",
                ],
            )?;
            if started.status.success() {
                let cluster = PgCluster {
                    bin,
                    data,
                    port,
                    run_as,
                    databases: std::sync::atomic::AtomicU32::new(0),
                    _dir: dir,
                };
                cluster.wait_ready()?;
                return Ok(cluster);
            }
            last_error = format!(
                "pg_ctl start failed: {}{}",
                String::from_utf8_lossy(&started.stderr),
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        Err(last_error)
    }

    /// Starts a cluster, or skips (None, with the reason printed) when PostgreSQL is missing
    /// and the run does not require it; under `cargo xtask test` a missing PostgreSQL panics.
    pub fn start_or_skip(test: &str) -> Option<PgCluster> {
        match PgCluster::start() {
            Ok(cluster) => Some(cluster),
            Err(why) if !e2e_required() => {
                eprintln!("{test}: skipped, no PostgreSQL: {why}");
                None
            }
            Err(why) => panic!("{test} needs PostgreSQL: {why}"),
        }
    }

    /// The port the cluster listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// URL of the default `postgres` database.
    pub fn admin_url(&self) -> String {
        format!("postgres://doorstep@127.0.0.1:{}/postgres", self.port)
    }

    /// Creates a new empty database and answers its URL.
    pub fn create_database(&self) -> Result<String, String> {
        let n = self
            .databases
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let name = format!("doorstep_test_{n}");
        self.psql(&format!("CREATE DATABASE {name}"))?;
        Ok(format!(
            "postgres://doorstep@127.0.0.1:{}/{name}",
            self.port
        ))
    }

    /// Runs one SQL command against the `postgres` database, answering what psql printed.
    pub fn psql(&self, sql: &str) -> Result<String, String> {
        self.psql_in("postgres", sql)
    }

    /// Runs one SQL command against `database` (a name, or a URL of this cluster whose last
    /// path segment is the name), answering what psql printed.
    pub fn psql_in(&self, database: &str, sql: &str) -> Result<String, String> {
        let database = database.rsplit('/').next().unwrap_or(database);
        let out = Command::new(self.bin.join("psql"))
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
            ])
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "doorstep",
                "-d",
                database,
            ])
            .args(["-c", sql])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("running psql: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "psql {sql:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn wait_ready(&self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.psql("SELECT 1") {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if let Ok(data) = path_str(&self.data) {
            let _ = run_pg(
                self.run_as,
                &self.bin.join("pg_ctl"),
                &["-D", data, "-m", "immediate", "-w", "stop"],
            );
        }
    }
}

fn path_str(p: &Path) -> Result<&str, String> {
    p.to_str()
        .ok_or_else(|| format!("{} is not UTF-8", p.display()))
}

fn run_pg(run_as: Option<&str>, program: &Path, args: &[&str]) -> Result<Output, String> {
    let mut cmd = match run_as {
        Some(user) => {
            let mut c = Command::new("runuser");
            c.args(["-u", user, "--"]).arg(program);
            c
        }
        None => Command::new(program),
    };
    cmd.args(args)
        .stdin(Stdio::null())
        // pg_ctl's server inherits these; a pipe would keep the test's output open.
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let child = cmd
        .spawn()
        .map_err(|e| format!("starting {}: {e}", program.display()))?;
    child
        .wait_with_output()
        .map_err(|e| format!("waiting for {}: {e}", program.display()))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// `DOORSTEP_PG_BIN`, else the newest `/usr/lib/postgresql/<version>/bin`, else `PATH`.
fn pg_bin_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOORSTEP_PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).find(|dir| dir.join("initdb").is_file()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cluster is real: it answers SQL, makes databases, and is gone after drop.
    #[test]
    fn a_cluster_starts_answers_and_stops() {
        let Some(cluster) = PgCluster::start_or_skip("a_cluster_starts_answers_and_stops") else {
            return;
        };
        assert_eq!(cluster.psql("SELECT 40 + 2").unwrap().trim(), "42");
        let url = cluster.create_database().unwrap();
        assert!(url.ends_with("/doorstep_test_0"), "{url}");
        let port = cluster.port();
        drop(cluster);
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "the server still listens on {port} after drop"
        );
    }
}
