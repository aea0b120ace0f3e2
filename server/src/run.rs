//! Starting and stopping the server: what `doorstep-server serve` and tests call.
//!
//! [`start`] also runs the feed pruning schedule ([`ServeConfig::feed_retention`]) and signs
//! a checkpoint of the audit chain's head every [`ServeConfig::checkpoint_every`] (with the
//! node's audit key in the data directory, [`crate::checkpoint`]), and once more at shutdown.
//!
//! [`start`] opens the store (the `--database` URL, else the SQLite file in the data
//! directory), reads the federation's cursor key from the store (the first node to start
//! stores one, adopting a legacy `DIR/cursor-key` file), loads the TOTP sealing key from
//! `DIR/totp-key` and seals any plaintext TOTP secret ([`crate::totp_key::adopt`]), loads (or makes) the TLS
//! material, binds the listener (port 0 picks a free port) and serves on a tokio task until
//! [`RunningServer::shutdown`]. Plain HTTP is refused unless [`TlsMode::InsecureLoopback`] is
//! asked for *and* the address is a loopback one.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum_server::Handle;
use axum_server::accept::NoDelayAcceptor;
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};

use crate::admin::ServerSets;
use crate::api::{self, AppState};
use crate::auth::SignIn;
use crate::checkpoint::{self, AuditKey, CheckpointError};
use crate::console;
use crate::cursor::{CURSOR_KEY_NAME, CursorKey, CursorKeyError};
use crate::limits::{Argon2Gate, SignInLimitConfig, SignInLimits};
use crate::store::{self, DatabaseUrl, Store, StoreError};
use crate::tls::{self, CertFiles, TlsError};
use crate::totp_key::{self, TotpKey, TotpKeyError};

/// How the server speaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsMode {
    /// Make (once) a development CA and server certificate under the data directory.
    Dev,
    /// A certificate chain and key from files (by default `DIR/server.pem`, `DIR/server-key.pem`).
    Files { cert: PathBuf, key: PathBuf },
    /// Plain HTTP, only on a loopback address (development).
    InsecureLoopback,
}

/// What to serve and how.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Cursor key, TLS material, and (unless `database` says otherwise) the store.
    pub data_dir: PathBuf,
    /// The store to serve; `None`: the SQLite file `federation.db` in `data_dir`.
    pub database: Option<DatabaseUrl>,
    pub listen: SocketAddr,
    pub tls: TlsMode,
    /// Byte budget of a pull page (uncompressed JSON).
    pub page_bytes: usize,
    /// Largest bundle `POST /api/v1/import` accepts.
    pub import_max_bytes: usize,
    /// How long the change feed keeps its rows; a device whose cursor is older rebuilds
    /// (410 `cursor_expired`). The audit log is never pruned.
    pub feed_retention: chrono::Duration,
    /// How often the feed is pruned (and once at start).
    pub prune_every: Duration,
    /// How often the audit chain's head is signed (when it moved).
    pub checkpoint_every: Duration,
    /// Sign-in rate limits and the Argon2 gate ([`crate::limits`]).
    pub sign_in_limits: SignInLimitConfig,
    /// How long access tokens, idle refresh tokens and sign-ins last.
    pub token_lifetimes: crate::auth::TokenLifetimes,
}

/// Default [`ServeConfig::feed_retention`].
pub const DEFAULT_FEED_RETENTION_DAYS: i64 = 30;

impl ServeConfig {
    /// Defaults: the store in the data directory, `127.0.0.1:8443`, dev TLS, 4 MiB pages
    /// ([`api::DEFAULT_PAGE_BYTES`]).
    pub fn new(data_dir: impl Into<PathBuf>) -> ServeConfig {
        ServeConfig {
            data_dir: data_dir.into(),
            database: None,
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8443),
            tls: TlsMode::Dev,
            page_bytes: api::DEFAULT_PAGE_BYTES,
            import_max_bytes: api::DEFAULT_IMPORT_MAX_BYTES,
            feed_retention: chrono::Duration::days(DEFAULT_FEED_RETENTION_DAYS),
            prune_every: Duration::from_secs(3600),
            checkpoint_every: Duration::from_secs(60),
            sign_in_limits: SignInLimitConfig::default(),
            token_lifetimes: crate::auth::TokenLifetimes::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "plain HTTP is only allowed on a loopback address ({0} is not); use TLS or listen on 127.0.0.1"
    )]
    InsecureNotLoopback(SocketAddr),
    #[error(
        "no TLS certificate: {cert} or {key} is missing; pass --dev-tls to make a development CA, or put the federation's certificate and key there"
    )]
    MissingCertificate { cert: PathBuf, key: PathBuf },
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cursor key: {0}")]
    CursorKey(#[from] CursorKeyError),
    #[error("{0}")]
    AuditKey(#[from] CheckpointError),
    #[error("{0}")]
    TotpKey(#[from] TotpKeyError),
}

/// A server running on a tokio task.
pub struct RunningServer {
    /// The bound address (the real port when asked for port 0).
    pub addr: SocketAddr,
    /// `https://127.0.0.1:PORT` (or `http://` in insecure loopback mode).
    pub base_url: String,
    /// The CA certificate clients should trust: `DIR/dev-ca.pem` in dev mode; in file mode
    /// `DIR/dev-ca.pem` when present, else the certificate file; empty in plain-HTTP mode.
    pub ca_pem_path: PathBuf,
    handle: Handle,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    pruning: tokio::task::JoinHandle<()>,
    checkpoints: tokio::task::JoinHandle<()>,
    store: Arc<dyn Store>,
    audit_key: Arc<AuditKey>,
}

impl std::fmt::Debug for RunningServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningServer")
            .field("addr", &self.addr)
            .field("base_url", &self.base_url)
            .finish()
    }
}

impl RunningServer {
    /// Stop accepting connections, let requests in flight finish (up to 5 s), and wait.
    pub async fn shutdown(self) {
        self.pruning.abort();
        self.checkpoints.abort();
        self.handle.graceful_shutdown(Some(Duration::from_secs(5)));
        match self.task.await {
            Ok(Ok(())) => tracing::info!("server stopped"),
            Ok(Err(e)) => tracing::error!(error = %e, "server stopped with an error"),
            Err(e) => tracing::error!(error = %e, "server task failed"),
        }
        // The last events served are signed too.
        if let Err(e) =
            checkpoint::write_checkpoint(self.store.as_ref(), &self.audit_key, chrono::Utc::now())
                .await
        {
            tracing::warn!(error = %e, "signing the audit checkpoint at shutdown failed");
        }
    }

    /// Wait until the server stops by itself (it only does on an error).
    pub async fn wait(self) -> std::io::Result<()> {
        let served = self.task.await.map_err(std::io::Error::other);
        self.pruning.abort();
        self.checkpoints.abort();
        served?
    }
}

/// The federation's cursor key, from the store: every node sharing the database signs and
/// checks cursors with it. A node's first start offers its candidate (a legacy
/// `DIR/cursor-key` file's key, else random bytes); insert-if-absent makes concurrent first
/// starts agree on one.
async fn shared_cursor_key(
    store: &dyn Store,
    data_dir: &std::path::Path,
) -> Result<CursorKey, StartError> {
    let (candidate, from_file) = CursorKey::candidate(data_dir)?;
    let stored = store
        .key_or_insert(CURSOR_KEY_NAME, candidate.as_bytes(), chrono::Utc::now())
        .await?;
    let key = CursorKey::from_slice(&stored, "the stored cursor key")?;
    if from_file && key.as_bytes() != candidate.as_bytes() {
        // Another node's key was stored first; cursors signed with this file's key are
        // refused (the devices rebuild once).
        tracing::warn!(
            "the data directory's cursor-key differs from the federation's key in the database; \
             the database's key is used"
        );
    }
    Ok(key)
}

/// Start serving `config`. Must be called inside a tokio runtime.
pub async fn start(config: ServeConfig) -> Result<RunningServer, StartError> {
    let insecure = config.tls == TlsMode::InsecureLoopback;
    if insecure && !config.listen.ip().is_loopback() {
        return Err(StartError::InsecureNotLoopback(config.listen));
    }
    let data_dir = config.data_dir.clone();
    std::fs::create_dir_all(&data_dir).map_err(StoreError::from)?;
    let database = config
        .database
        .clone()
        .unwrap_or_else(|| DatabaseUrl::in_data_dir(&data_dir));
    let store: Arc<dyn Store> = store::open(&database).await?;
    let cursor_key = shared_cursor_key(store.as_ref(), &data_dir).await?;
    let audit_key = Arc::new(AuditKey::load_or_create(&data_dir)?);
    let totp_key = Arc::new(TotpKey::load_or_create(&data_dir)?);
    totp_key::adopt(store.as_ref(), &totp_key).await?;

    let (rustls, ca_pem_path) = match &config.tls {
        TlsMode::InsecureLoopback => (None, PathBuf::new()),
        TlsMode::Dev => {
            let (files, ca) = tls::ensure_dev_tls(&data_dir)?;
            (Some(tls::server_config(&files)?), ca)
        }
        TlsMode::Files { cert, key } => {
            if !cert.exists() || !key.exists() {
                return Err(StartError::MissingCertificate {
                    cert: cert.clone(),
                    key: key.clone(),
                });
            }
            let files = CertFiles {
                cert: cert.clone(),
                key: key.clone(),
            };
            let dev_ca = data_dir.join(tls::DEV_CA_FILE);
            let ca = if dev_ca.exists() {
                dev_ca
            } else {
                cert.clone()
            };
            (Some(tls::server_config(&files)?), ca)
        }
    };

    let listener = TcpListener::bind(config.listen).map_err(|source| StartError::Bind {
        addr: config.listen,
        source,
    })?;
    listener
        .set_nonblocking(true)
        .map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: config.listen,
        source,
    })?;

    let pruning = tokio::spawn(prune_on_schedule(
        store.clone(),
        config.feed_retention,
        config.prune_every,
    ));
    let checkpoints = tokio::spawn(checkpoint_on_schedule(
        store.clone(),
        audit_key.clone(),
        config.checkpoint_every,
    ));
    let state = AppState {
        store: store.clone(),
        cursor_key,
        page_bytes: config.page_bytes,
        import_max_bytes: config.import_max_bytes,
        sets: Arc::new(ServerSets::new()),
        decisions: Arc::new(crate::decisions::DecisionMemo::new()),
        audit_group: Arc::default(),
        limits: Arc::new(SignInLimits::new(config.sign_in_limits)),
        sign_in: Arc::new(SignIn {
            gate: Argon2Gate::of(&config.sign_in_limits),
            lifetimes: config.token_lifetimes,
            totp_key,
        }),
    };
    let app = api::router(state.clone()).merge(console::router(state));
    tokio::task::spawn_blocking(crate::auth::warm_up)
        .await
        .map_err(|e| StoreError::Backend(format!("warming up: {e}")))?;
    let handle = Handle::new();
    // The peer address reaches the handlers: sign-ins are rate-limited by it.
    let service = app.into_make_service_with_connect_info::<SocketAddr>();
    let task = match rustls {
        // TCP_NODELAY on every connection: without it a small answer (a sync with nothing
        // new) waited for the client's delayed ACK, about 40 ms, behind Nagle's algorithm.
        Some(server_config) => {
            let tls = RustlsAcceptor::new(RustlsConfig::from_config(server_config))
                .acceptor(NoDelayAcceptor::new());
            let server = axum_server::from_tcp(listener)
                .acceptor(tls)
                .handle(handle.clone());
            tokio::spawn(server.serve(service))
        }
        None => {
            let server = axum_server::from_tcp(listener)
                .acceptor(NoDelayAcceptor::new())
                .handle(handle.clone());
            tokio::spawn(server.serve(service))
        }
    };
    let host = if addr.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        match addr.ip() {
            IpAddr::V4(ip) => ip.to_string(),
            IpAddr::V6(ip) => format!("[{ip}]"),
        }
    };
    let scheme = if insecure { "http" } else { "https" };
    let base_url = format!("{scheme}://{host}:{}", addr.port());
    tracing::info!(%addr, tls = !insecure, %database, "serving");
    Ok(RunningServer {
        addr,
        base_url,
        ca_pem_path,
        handle,
        task,
        pruning,
        checkpoints,
        store,
        audit_key,
    })
}

/// Signs the audit chain's head every `every` (when it moved since the last checkpoint). A
/// failure is logged and tried again at the next turn.
async fn checkpoint_on_schedule(store: Arc<dyn Store>, key: Arc<AuditKey>, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match checkpoint::write_checkpoint(store.as_ref(), &key, chrono::Utc::now()).await {
            Ok(Some(cp)) => tracing::debug!(seq = cp.seq, "signed an audit checkpoint"),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "signing an audit checkpoint failed"),
        }
    }
}

/// Prunes the change feed of rows older than `retention`, now and every `every`. Each node
/// of a federation runs its own schedule; pruning is idempotent (rows older than a time), so
/// nodes pruning at once agree. A failure is logged and tried again at the next turn.
async fn prune_on_schedule(store: Arc<dyn Store>, retention: chrono::Duration, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let before = chrono::Utc::now() - retention;
        match store.prune_feed(before).await {
            Ok(through) => tracing::debug!(through, "pruned the change feed"),
            Err(e) => tracing::warn!(error = %e, "pruning the change feed failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A data directory from before the key moved into the database keeps its devices'
    /// cursors valid: its file's key is adopted, once; later starts read the stored one.
    #[tokio::test]
    async fn a_legacy_key_file_is_adopted_and_the_stored_key_wins_after() {
        let dir = tempfile::tempdir().unwrap();
        let store = store::open(&DatabaseUrl::in_data_dir(dir.path()))
            .await
            .unwrap();
        crate::cursor::write_private(&dir.path().join(crate::cursor::CURSOR_KEY_FILE), &[5; 32])
            .unwrap();
        let key = shared_cursor_key(store.as_ref(), dir.path()).await.unwrap();
        assert_eq!(key.as_bytes(), &[5; 32]);
        // Another node's directory (no file, or another file) gets the same key.
        let other = tempfile::tempdir().unwrap();
        let key = shared_cursor_key(store.as_ref(), other.path())
            .await
            .unwrap();
        assert_eq!(key.as_bytes(), &[5; 32]);
        std::fs::write(other.path().join(crate::cursor::CURSOR_KEY_FILE), [6; 32]).unwrap();
        let key = shared_cursor_key(store.as_ref(), other.path())
            .await
            .unwrap();
        assert_eq!(key.as_bytes(), &[5; 32]);
    }

    #[tokio::test]
    async fn without_a_file_the_first_start_stores_a_random_key_and_writes_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = store::open(&DatabaseUrl::in_data_dir(dir.path()))
            .await
            .unwrap();
        let a = shared_cursor_key(store.as_ref(), dir.path()).await.unwrap();
        let b = shared_cursor_key(store.as_ref(), dir.path()).await.unwrap();
        assert_eq!(a.as_bytes(), b.as_bytes());
        assert_ne!(a.as_bytes(), &[0; 32]);
        assert!(!dir.path().join(crate::cursor::CURSOR_KEY_FILE).exists());
    }
}
