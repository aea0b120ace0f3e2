//! `doorstep-server`: the federation server's command line.
//!
//! ```text
//! doorstep-server seed --demo --data-dir DIR [--seed N] [--database URL]
//! doorstep-server serve --data-dir DIR [--listen 127.0.0.1:8443] [--dev-tls] [--insecure-loopback-http] [--database URL]
//!                       [--session-days 30] [--refresh-idle-days 7]
//! doorstep-server import (--data-dir DIR | --database URL) FILE [--practice ODS]
//! doorstep-server audit verify (--data-dir DIR [--database URL] | --database URL)
//! doorstep-server audit patient NHS_NUMBER [--from YYYY-MM-DD] [--json | --html FILE]
//! doorstep-server audit checkpoint --data-dir DIR      (sign the chain's head now)
//! doorstep-server alerts list [--all] [--json] | ack ID --note TEXT
//! doorstep-server admin add NAME                       (an administrator's credential, shown once)
//! doorstep-server agreement list | show ID | compare [ID...] [--json]
//! doorstep-server agreement create FILE --reason TEXT
//! doorstep-server agreement update ID FILE --reason TEXT
//! doorstep-server agreement retire ID --reason TEXT [--on YYYY-MM-DD]
//! doorstep-server patient dissent NHS_NUMBER on|off --reason TEXT
//! doorstep-server valueset load FILE --reason TEXT
//! doorstep-server user role USERNAME ROLE --reason TEXT
//! doorstep-server user add USERNAME --name TEXT --role ROLE --service ID [--practice ODS] --reason TEXT
//! doorstep-server user disable|enable|unlock|reset-totp USERNAME --reason TEXT
//! doorstep-server device list
//! doorstep-server device revoke ID --reason TEXT
//! ```
//!
//! The administration commands take `--data-dir DIR` or `--database URL` like the others;
//! their changes are audited as `cli:$USER` with the reason given. `user add` and `user
//! reset-totp` print a sign-in once and need `--data-dir DIR`: the TOTP secret is sealed with
//! `DIR/totp-key`, the key file the server there uses.
//!
//! `--database URL` (or `DOORSTEP_DATABASE_URL`) names the store: `sqlite:PATH` for an
//! SQLite file anywhere, `postgres://USER[:PASSWORD]@HOST[:PORT]/DB` for PostgreSQL (which
//! several `serve` nodes may share); without it, the SQLite file `federation.db` under
//! `--data-dir`. The data directory keeps only a node's TLS material (and the demo's
//! sign-ins); everything nodes must agree on, the cursor key included, is in the database.
//!
//! `serve` prints exactly one line to stdout once it listens
//! (`doorstep-server listening on https://127.0.0.1:PORT`); logs go to stderr and never carry
//! patient data.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use doorstep_server::import::{self, ImportFailure};
use doorstep_server::run::{ServeConfig, TlsMode, start};
use doorstep_server::store::{self, DatabaseUrl};
use doorstep_server::{
    access, accounts, admin, audit, breakglass, checkpoint, demo, tls, totp_key,
};

#[derive(Parser)]
#[command(
    name = "doorstep-server",
    version,
    about = "Doorstep federation server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Which store a command opens.
#[derive(clap::Args)]
struct DatabaseArg {
    /// The store: `sqlite:PATH` (an SQLite file) or `postgres://USER@HOST[:PORT]/DB`.
    /// Default: `federation.db` under --data-dir.
    #[arg(long = "database", env = "DOORSTEP_DATABASE_URL", value_name = "URL")]
    url: Option<String>,
}

impl DatabaseArg {
    fn resolve(&self, data_dir: Option<&Path>) -> anyhow::Result<DatabaseUrl> {
        match (&self.url, data_dir) {
            (Some(url), _) => Ok(DatabaseUrl::parse(url)?),
            (None, Some(dir)) => Ok(DatabaseUrl::in_data_dir(dir)),
            (None, None) => bail!("give --data-dir DIR or --database URL"),
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Generate and import the demo federation (practices, patients, agreements, lists, users).
    Seed {
        /// Seed the synthetic demo federation (the only kind of seeding there is).
        #[arg(long)]
        demo: bool,
        #[arg(long, env = "DOORSTEP_DATA_DIR")]
        data_dir: PathBuf,
        /// Seed of the synthetic generator.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[command(flatten)]
        database: DatabaseArg,
    },
    /// Serve the API over HTTPS.
    Serve {
        #[arg(long, env = "DOORSTEP_DATA_DIR")]
        data_dir: PathBuf,
        /// Address to listen on; port 0 picks a free port.
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: SocketAddr,
        /// Make (once) a local development CA and server certificate under the data directory.
        #[arg(long, conflicts_with = "insecure_loopback_http")]
        dev_tls: bool,
        /// Serve plain HTTP (only on a loopback address; development only).
        #[arg(long)]
        insecure_loopback_http: bool,
        /// Byte budget of a pull page (uncompressed JSON).
        #[arg(long, default_value_t = doorstep_server::api::DEFAULT_PAGE_BYTES)]
        page_bytes: usize,
        /// Largest bundle POST /api/v1/import accepts (bytes; larger ones get 413).
        #[arg(long, default_value_t = doorstep_server::api::DEFAULT_IMPORT_MAX_BYTES)]
        import_max_bytes: usize,
        /// Days the change feed keeps its rows; devices whose cursor is older rebuild their
        /// cache. The audit log is never pruned.
        #[arg(long, default_value_t = doorstep_server::run::DEFAULT_FEED_RETENTION_DAYS,
              value_parser = clap::value_parser!(i64).range(1..))]
        feed_retention_days: i64,
        /// Days a sign-in lasts however often its tokens are refreshed (the absolute
        /// lifetime); then the user signs in again with password and code.
        #[arg(long, default_value_t = doorstep_server::auth::SESSION_TTL.num_days(),
              value_parser = clap::value_parser!(i64).range(1..=365))]
        session_days: i64,
        /// Days a refresh token may go unused before it expires (the sliding lifetime); at
        /// most --session-days.
        #[arg(long, default_value_t = doorstep_server::auth::REFRESH_IDLE.num_days(),
              value_parser = clap::value_parser!(i64).range(1..=365))]
        refresh_idle_days: i64,
        #[command(flatten)]
        database: DatabaseArg,
    },
    /// Member practices and their source systems' credentials.
    Practice {
        #[command(subcommand)]
        command: PracticeCommand,
    },
    /// Import a FHIR R4 Bundle (whole or nothing).
    Import {
        #[arg(long, env = "DOORSTEP_DATA_DIR")]
        data_dir: Option<PathBuf>,
        #[command(flatten)]
        database: DatabaseArg,
        /// The bundle file (JSON).
        file: PathBuf,
        /// ODS code of the sending organisation: items the bundle does not attribute to a
        /// source are attributed to it. When it is a member practice (its own export), patients
        /// the bundle registers with no practice are registered with it, and the summary says
        /// which.
        #[arg(long)]
        practice: Option<String>,
    },
    /// Federation administrators' credentials.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Sharing agreements: list, show, create, update, retire, compare.
    Agreement {
        #[command(subcommand)]
        command: AgreementCommand,
    },
    /// Patients' dissent from sharing.
    Patient {
        #[command(subcommand)]
        command: PatientCommand,
    },
    /// Users: roles, adding, disabling, unlocking, new TOTP secrets.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Enrolled devices: list, revoke.
    Device {
        #[command(subcommand)]
        command: DeviceCommand,
    },
    /// Exclusion value sets.
    Valueset {
        #[command(subcommand)]
        command: ValuesetCommand,
    },
    /// The audit log: verify it, report who accessed a patient, sign a checkpoint.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Break-glass alerts for the privacy officer.
    Alerts {
        #[command(subcommand)]
        command: AlertsCommand,
    },
    /// The old name of `audit verify`.
    #[command(hide = true)]
    VerifyAudit {
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Verify the hash chain and the latest signed checkpoint (in the database and in the
    /// data directory's checkpoint file, with the node's audit public key): names the first
    /// bad event, and a cut tail.
    Verify {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Who accessed a patient's record: when, who, from which device, in which service,
    /// under which agreement or break-glass reason, online or offline.
    Patient {
        nhs_number: String,
        /// From this day (UTC).
        #[arg(long)]
        from: Option<chrono::NaiveDate>,
        /// The report as JSON.
        #[arg(long, conflicts_with = "html")]
        json: bool,
        /// Write the report worded for the patient (a subject access request) to FILE as an
        /// HTML page (print it to PDF from a browser).
        #[arg(long, value_name = "FILE")]
        html: Option<PathBuf>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Sign a checkpoint of the chain's head now (the server does so every minute).
    Checkpoint {
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Subcommand)]
enum AlertsCommand {
    /// The open alerts (all with --all), newest first.
    List {
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Acknowledge an alert, saying what was checked.
    Ack {
        id: i64,
        #[arg(long)]
        note: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// The store an administration command opens.
#[derive(clap::Args)]
struct StoreArgs {
    #[arg(long, env = "DOORSTEP_DATA_DIR")]
    data_dir: Option<PathBuf>,
    #[command(flatten)]
    database: DatabaseArg,
}

impl StoreArgs {
    async fn open(&self) -> anyhow::Result<std::sync::Arc<dyn store::Store>> {
        let database = self.database.resolve(self.data_dir.as_deref())?;
        Ok(store::open(&database).await?)
    }
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Add (or renew) a federation administrator and print their secret (HTTP Basic
    /// NAME:SECRET on /api/v1/admin/...). Shown once; replaces any earlier one.
    Add {
        name: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Subcommand)]
enum AgreementCommand {
    /// Every agreement: id, version, service, in force or not, roles.
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// One agreement (JSON) and its versions.
    Show {
        id: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Create an agreement from an agreement file (JSON).
    Create {
        file: PathBuf,
        /// Why (required; audited).
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Replace agreement ID by the file's (its next version).
    Update {
        id: String,
        file: PathBuf,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Retire an agreement: from that day it covers no one.
    Retire {
        id: String,
        #[arg(long)]
        reason: String,
        /// The day (default: today).
        #[arg(long)]
        on: Option<chrono::NaiveDate>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Agreements side by side: rows are sections, columns agreements (all when none named).
    Compare {
        ids: Vec<String>,
        /// The comparison as JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum OnOff {
    On,
    Off,
}

#[derive(Subcommand)]
enum PatientCommand {
    /// Set (on) or clear (off) a patient's dissent from sharing.
    Dissent {
        nhs_number: String,
        #[arg(value_enum)]
        state: OnOff,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Give a user another role (their devices rebuild at their next sync).
    Role {
        username: String,
        role: String,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Add a user; prints their password and TOTP secret once.
    Add {
        username: String,
        /// The name shown to them and in the record.
        #[arg(long)]
        name: String,
        #[arg(long)]
        role: String,
        /// The id of their service.
        #[arg(long)]
        service: String,
        /// The member practice a receptionist works at (ODS code): she books only its
        /// patients.
        #[arg(long)]
        practice: Option<String>,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Disable a user: no sign-in, refresh or pull until enabled.
    Disable {
        username: String,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Enable a disabled user.
    Enable {
        username: String,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Clear a user's failed sign-ins and lock.
    Unlock {
        username: String,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Give a user a new TOTP secret (printed once); the old one stops working.
    ResetTotp {
        username: String,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Subcommand)]
enum DeviceCommand {
    /// Every device: id, user, name, enrolled, revoked.
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Revoke a device: its tokens stop at once; it wipes its cache at its next contact.
    Revoke {
        id: String,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Subcommand)]
enum ValuesetCommand {
    /// Load an exclusion value set (FHIR R4 ValueSet JSON): extends, never shrinks.
    Load {
        file: PathBuf,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Subcommand)]
enum PracticeCommand {
    /// Add (or update) a member practice and print a new secret for its source system to
    /// import with (POST /api/v1/import, HTTP Basic ODS:SECRET). The secret is shown once and
    /// replaces any earlier one.
    Add {
        /// The practice's ODS code (the client id).
        ods: String,
        /// The practice's name.
        #[arg(long)]
        name: String,
        #[arg(long)]
        postcode: Option<String>,
        /// The practice's GP system (EMIS Web, SystmOne, ...).
        #[arg(long)]
        source_system: Option<String>,
        #[arg(long, env = "DOORSTEP_DATA_DIR")]
        data_dir: Option<PathBuf>,
        #[command(flatten)]
        database: DatabaseArg,
    },
}

/// mimalloc rather than glibc's allocator: a pull builds and drops large JSON trees, and
/// glibc's slow paths (`malloc_consolidate`, `unlink_chunk`) took a third of its time
/// (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Threads for the store's blocking work (SQLite reads and writes). Tokio's default, 512,
/// let 200 devices' requests start about a hundred, each keeping an allocator heap of its
/// own: the server's memory grew by hundreds of MB under load (BENCHMARKS.md). The SQLite
/// store reads through at most a dozen pooled connections anyway.
const BLOCKING_THREADS: usize = 32;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` prints the cause chain on one line, without a backtrace.
            eprintln!("doorstep-server: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(BLOCKING_THREADS)
        .build()
        .context("starting the async runtime")?;
    match cli.command {
        Command::Seed {
            demo: is_demo,
            data_dir,
            seed,
            database,
        } => {
            if !is_demo {
                bail!("only `seed --demo` is supported");
            }
            let database = database.resolve(Some(&data_dir))?;
            let started = Instant::now();
            let spec = demo::DemoSpec::standard(seed, chrono::Utc::now().date_naive());
            let summary = demo::seed_with_database(&data_dir, &database, &spec)?;
            tracing::info!(
                patients = summary.patients,
                practices = summary.practices,
                users = summary.users.len(),
                seconds = started.elapsed().as_secs_f64(),
                "seeded the demo federation"
            );
            eprintln!(
                "seeded {} patients in {} practices; demo sign-ins in {}",
                summary.patients,
                summary.practices,
                data_dir.join(demo::DEMO_USERS_FILE).display()
            );
            Ok(())
        }
        Command::Serve {
            data_dir,
            listen,
            dev_tls,
            insecure_loopback_http,
            page_bytes,
            import_max_bytes,
            feed_retention_days,
            session_days,
            refresh_idle_days,
            database,
        } => runtime.block_on(async move {
            if refresh_idle_days > session_days {
                bail!(
                    "--refresh-idle-days ({refresh_idle_days}) is longer than --session-days \
                     ({session_days}): a refresh token cannot outlive its sign-in"
                );
            }
            let database = database.resolve(Some(&data_dir))?;
            let tls_mode = if insecure_loopback_http {
                TlsMode::InsecureLoopback
            } else if dev_tls {
                TlsMode::Dev
            } else {
                TlsMode::Files {
                    cert: data_dir.join(tls::SERVER_CERT_FILE),
                    key: data_dir.join(tls::SERVER_KEY_FILE),
                }
            };
            let server = start(ServeConfig {
                database: Some(database),
                listen,
                tls: tls_mode,
                page_bytes,
                import_max_bytes,
                feed_retention: chrono::Duration::days(feed_retention_days),
                token_lifetimes: doorstep_server::auth::TokenLifetimes {
                    session: chrono::Duration::days(session_days),
                    refresh_idle: chrono::Duration::days(refresh_idle_days),
                    ..Default::default()
                },
                ..ServeConfig::new(data_dir)
            })
            .await?;
            {
                let mut out = std::io::stdout().lock();
                writeln!(out, "doorstep-server listening on {}", server.base_url)?;
                out.flush()?;
            }
            shutdown_signal().await;
            tracing::info!("shutting down");
            server.shutdown().await;
            Ok(())
        }),
        Command::Import {
            data_dir,
            database,
            file,
            practice,
        } => runtime.block_on(async move {
            let database = database.resolve(data_dir.as_deref())?;
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let store = store::open(&database).await?;
            match import::import_bundle(store.as_ref(), &text, practice.as_deref()).await {
                Ok(report) => {
                    eprintln!(
                        "imported {}: {} patient(s), {} resource(s) changed, {} unchanged, {} deleted",
                        file.display(),
                        report.patients,
                        report.upserted,
                        report.unchanged,
                        report.deleted
                    );
                    if let Some(note) = report.registration_note() {
                        eprintln!("{note}");
                    }
                    Ok(())
                }
                Err(ImportFailure::Rejected(e)) => {
                    bail!("{} rejected, nothing imported: {e}", file.display())
                }
                Err(ImportFailure::Store(e)) => Err(e.into()),
            }
        }),
        Command::Practice {
            command:
                PracticeCommand::Add {
                    ods,
                    name,
                    postcode,
                    source_system,
                    data_dir,
                    database,
                },
        } => runtime.block_on(async move {
            let ods = ods.trim().to_ascii_uppercase();
            if ods.is_empty() || !ods.chars().all(|c| c.is_ascii_alphanumeric()) {
                bail!("{ods:?} is not an ODS code (letters and digits, for example C81001)");
            }
            let database = database.resolve(data_dir.as_deref())?;
            let store = store::open(&database).await?;
            store
                .upsert_practice(store::PracticeRow {
                    ods: ods.clone(),
                    name: name.clone(),
                    source_system,
                    postcode,
                })
                .await?;
            let had = store.source_credential(&ods).await?.is_some();
            let secret =
                doorstep_server::auth::issue_source_secret(store.as_ref(), &ods, "cli", chrono::Utc::now())
                    .await?;
            let mut out = std::io::stdout().lock();
            writeln!(out, "practice: {ods} ({name})")?;
            writeln!(out, "client id: {ods}")?;
            writeln!(out, "client secret: {secret}")?;
            out.flush()?;
            eprintln!(
                "The secret is shown this once and only its hash is kept: put it in {name}'s \
                 system now. It authenticates POST /api/v1/import as HTTP Basic {ods}:SECRET.{}",
                if had {
                    " It replaces the previous secret, which no longer works."
                } else {
                    ""
                }
            );
            Ok(())
        }),
        Command::Admin { command } => runtime.block_on(admin_command(command)),
        Command::Agreement { command } => runtime.block_on(agreement_command(command)),
        Command::Patient {
            command:
                PatientCommand::Dissent {
                    nhs_number,
                    state,
                    reason,
                    store,
                },
        } => runtime.block_on(async move {
            let store = store.open().await?;
            let dissent = matches!(state, OnOff::On);
            admin::set_dissent(
                store.as_ref(),
                &nhs_number,
                dissent,
                None,
                &cli_change(reason),
                chrono::Utc::now(),
            )
            .await
            .map_err(|e| anyhow::anyhow!("nothing was changed: {e}"))?;
            eprintln!(
                "dissent {}: the patient {} devices' lists at their next sync",
                if dissent { "on" } else { "off" },
                if dissent { "leaves" } else { "may return to" }
            );
            Ok(())
        }),
        Command::User {
            command:
                UserCommand::Role {
                    username,
                    role,
                    reason,
                    store,
                },
        } => runtime.block_on(async move {
            let store = store.open().await?;
            admin::set_user_role(
                store.as_ref(),
                &username,
                &role,
                &cli_change(reason),
                chrono::Utc::now(),
            )
            .await
            .map_err(|e| anyhow::anyhow!("nothing was changed: {e}"))?;
            eprintln!("{username} now holds the role {role}: their devices rebuild at their next sync");
            Ok(())
        }),
        Command::User { command } => runtime.block_on(account_command(command)),
        Command::Device { command } => runtime.block_on(device_command(command)),
        Command::Valueset {
            command:
                ValuesetCommand::Load {
                    file,
                    reason,
                    store,
                },
        } => runtime.block_on(async move {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let store = store.open().await?;
            let report = admin::load_value_set(
                store.as_ref(),
                &text,
                &cli_change(reason),
                chrono::Utc::now(),
            )
            .await
            .map_err(|e| anyhow::anyhow!("{}: nothing was changed: {e}", file.display()))?;
            eprintln!(
                "loaded {} ({}): {} code(s) and {} term(s) added{}",
                file.display(),
                report.url,
                report.added_codes,
                report.added_terms,
                if report.kept.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; {} the file lacks were kept (a load never removes)",
                        report.kept.len()
                    )
                }
            );
            Ok(())
        }),
        Command::VerifyAudit { store } => runtime.block_on(audit_verify(store)),
        Command::Audit { command } => runtime.block_on(audit_command(command)),
        Command::Alerts { command } => runtime.block_on(alerts_command(command)),
    }
}

async fn audit_verify(store: StoreArgs) -> anyhow::Result<()> {
    let db = store.open().await?;
    let rows = db.audit_rows().await?;
    let in_database = db.latest_audit_checkpoint().await?;
    let (in_file, public_key) = match &store.data_dir {
        Some(dir) => (
            checkpoint::read_checkpoint_file(dir)?,
            checkpoint::read_public_key(dir)?,
        ),
        None => (None, None),
    };
    if store.data_dir.is_none() {
        eprintln!(
            "warning: no --data-dir, so the signed checkpoints cannot be checked (the audit \
             public key and checkpoint file live in the server's data directory)"
        );
    }
    let checked = if public_key.is_some() || in_file.is_some() {
        checkpoint::verify_log(
            &rows,
            in_database.as_ref(),
            in_file.as_ref(),
            public_key.as_deref(),
        )?
    } else {
        checkpoint::Verified {
            events: audit::verify(&rows)?,
            checkpoint: None,
        }
    };
    match checked.checkpoint {
        Some((seq, after)) => eprintln!(
            "the audit log is intact: {} events; the signed checkpoint at event {seq} holds \
             ({after} events since)",
            checked.events
        ),
        None => eprintln!(
            "the audit log is intact: {} events (no signed checkpoint checked)",
            checked.events
        ),
    }
    Ok(())
}

async fn audit_command(command: AuditCommand) -> anyhow::Result<()> {
    match command {
        AuditCommand::Verify { store } => audit_verify(store).await,
        AuditCommand::Patient {
            nhs_number,
            from,
            json,
            html,
            store,
        } => {
            let db = store.open().await?;
            let report = access::patient_report(db.as_ref(), &nhs_number, from).await?;
            audit::append(
                db.as_ref(),
                doorstep_server::store::AuditEvent {
                    at: chrono::Utc::now(),
                    actor: cli_change(String::new()).actor,
                    action: "access_report".into(),
                    patient_id: Some(report.patient_id.clone()),
                    detail: serde_json::json!({ "from": from, "accesses": report.accesses.len() }),
                },
            )
            .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else if let Some(path) = html {
                std::fs::write(&path, access::to_html(&report, chrono::Utc::now()))
                    .with_context(|| format!("writing {}", path.display()))?;
                eprintln!(
                    "wrote the report for the patient ({} accesses) to {}",
                    report.accesses.len(),
                    path.display()
                );
            } else {
                print!("{}", access::to_text(&report));
            }
            Ok(())
        }
        AuditCommand::Checkpoint { store } => {
            let Some(dir) = store.data_dir.clone() else {
                bail!("give --data-dir DIR: the audit key lives in the server's data directory");
            };
            let db = store.open().await?;
            let key = checkpoint::AuditKey::load_or_create(&dir)?;
            match checkpoint::write_checkpoint(db.as_ref(), &key, chrono::Utc::now()).await? {
                Some(cp) => eprintln!("signed the audit chain at event {}", cp.seq),
                None => eprintln!("nothing new to sign"),
            }
            Ok(())
        }
    }
}

async fn alerts_command(command: AlertsCommand) -> anyhow::Result<()> {
    match command {
        AlertsCommand::List { all, json, store } => {
            let db = store.open().await?;
            let alerts = breakglass::alert_reports(db.as_ref(), !all).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&alerts)?);
                return Ok(());
            }
            if alerts.is_empty() {
                println!("no {}alerts", if all { "" } else { "open " });
            }
            for a in alerts {
                println!(
                    "alert {}: {} broke the glass for patient {} (NHS {}) at {}, until {}; why: {}; {} opened under it{}",
                    a.id,
                    a.who,
                    a.patient_id,
                    a.nhs_number,
                    a.at.format("%Y-%m-%d %H:%M:%S"),
                    a.ends_at
                        .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
                        .unwrap_or_default(),
                    a.why,
                    a.opened.len(),
                    a.acknowledged
                        .map(|k| format!(
                            "; acknowledged by {} at {}: {}",
                            k.by,
                            k.at.format("%Y-%m-%d %H:%M"),
                            k.note
                        ))
                        .unwrap_or_default()
                );
            }
            Ok(())
        }
        AlertsCommand::Ack { id, note, store } => {
            let db = store.open().await?;
            breakglass::ack(
                db.as_ref(),
                id,
                &cli_change(String::new()).actor,
                &note,
                chrono::Utc::now(),
            )
            .await?;
            eprintln!("alert {id} acknowledged");
            Ok(())
        }
    }
}

/// Who a command-line change is audited as: `cli:$USER`.
fn cli_change(reason: String) -> admin::Change {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    admin::Change {
        actor: format!("cli:{user}"),
        reason,
    }
}

/// The TOTP key of `--data-dir`, checked against the database's (as `serve` does).
async fn totp_key_of(
    store: &StoreArgs,
    opened: &dyn store::Store,
) -> anyhow::Result<totp_key::TotpKey> {
    let dir = store.data_dir.as_deref().context(
        "give --data-dir DIR: the TOTP secret is sealed with DIR/totp-key, the server's key file",
    )?;
    let key = totp_key::TotpKey::load_or_create(dir)?;
    totp_key::adopt(opened, &key).await?;
    Ok(key)
}

async fn account_command(command: UserCommand) -> anyhow::Result<()> {
    let now = chrono::Utc::now();
    let refused = |e: admin::AdminFailure| anyhow::anyhow!("nothing was changed: {e}");
    match command {
        UserCommand::Role { .. } => unreachable!("handled with the other role changes"),
        UserCommand::Add {
            username,
            name,
            role,
            service,
            practice,
            reason,
            store,
        } => {
            let opened = store.open().await?;
            let key = totp_key_of(&store, opened.as_ref()).await?;
            let issued = accounts::add_user(
                opened.as_ref(),
                &key,
                accounts::NewAccount {
                    username,
                    display_name: name,
                    role,
                    service_id: service,
                    practice_ods: practice,
                },
                &cli_change(reason),
                now,
            )
            .await
            .map_err(refused)?;
            let mut out = std::io::stdout().lock();
            writeln!(out, "user: {}", issued.username)?;
            writeln!(out, "password: {}", issued.password)?;
            writeln!(out, "totp secret: {}", issued.totp_secret)?;
            eprintln!("shown once: give them to the user in person");
        }
        UserCommand::Disable {
            username,
            reason,
            store,
        } => {
            let opened = store.open().await?;
            accounts::set_disabled(opened.as_ref(), &username, true, &cli_change(reason), now)
                .await
                .map_err(refused)?;
            eprintln!("{username} is disabled: no sign-in, refresh or pull until enabled");
        }
        UserCommand::Enable {
            username,
            reason,
            store,
        } => {
            let opened = store.open().await?;
            accounts::set_disabled(opened.as_ref(), &username, false, &cli_change(reason), now)
                .await
                .map_err(refused)?;
            eprintln!("{username} is enabled");
        }
        UserCommand::Unlock {
            username,
            reason,
            store,
        } => {
            let opened = store.open().await?;
            accounts::unlock(opened.as_ref(), &username, &cli_change(reason), now)
                .await
                .map_err(refused)?;
            eprintln!("{username} is unlocked");
        }
        UserCommand::ResetTotp {
            username,
            reason,
            store,
        } => {
            let opened = store.open().await?;
            let key = totp_key_of(&store, opened.as_ref()).await?;
            let secret =
                accounts::reset_totp(opened.as_ref(), &key, &username, &cli_change(reason), now)
                    .await
                    .map_err(refused)?;
            writeln!(std::io::stdout().lock(), "totp secret: {secret}")?;
            eprintln!("shown once: {username}'s earlier codes no longer work");
        }
    }
    Ok(())
}

async fn device_command(command: DeviceCommand) -> anyhow::Result<()> {
    match command {
        DeviceCommand::List { store } => {
            let opened = store.open().await?;
            let devices = accounts::devices(opened.as_ref())
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let mut out = std::io::stdout().lock();
            writeln!(
                out,
                "{:<36}  {:<20}  {:<24}  {:<20}  revoked",
                "id", "user", "name", "enrolled"
            )?;
            for d in devices {
                writeln!(
                    out,
                    "{:<36}  {:<20}  {:<24}  {:<20}  {}",
                    d.id,
                    d.user,
                    d.name.escape_debug().to_string(),
                    d.enrolled_at.format("%Y-%m-%d %H:%M:%S"),
                    d.revoked_at.map_or("-".to_string(), |t| t
                        .format("%Y-%m-%d %H:%M:%S")
                        .to_string())
                )?;
            }
        }
        DeviceCommand::Revoke { id, reason, store } => {
            let opened = store.open().await?;
            accounts::revoke_device(
                opened.as_ref(),
                &id,
                &cli_change(reason),
                chrono::Utc::now(),
            )
            .await
            .map_err(|e| anyhow::anyhow!("nothing was changed: {e}"))?;
            eprintln!("device {id} is revoked: it wipes its cache at its next contact");
        }
    }
    Ok(())
}

async fn admin_command(command: AdminCommand) -> anyhow::Result<()> {
    let AdminCommand::Add { name, store } = command;
    let store = store.open().await?;
    let user = cli_change(String::new()).actor;
    let secret =
        doorstep_server::auth::issue_admin_secret(store.as_ref(), &name, &user, chrono::Utc::now())
            .await?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "administrator: {name}")?;
    writeln!(out, "secret: {secret}")?;
    out.flush()?;
    eprintln!(
        "The secret is shown this once and only its hash is kept. It authenticates          /api/v1/admin/... as HTTP Basic {name}:SECRET; any earlier secret of {name} no longer works."
    );
    Ok(())
}

/// Read an agreement file, naming the file in every error.
fn read_agreement_file(file: &Path) -> anyhow::Result<doorstep_record::agreement::Agreement> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    doorstep_record::agreement::parse_agreement_file(&text)
        .map_err(|e| anyhow::anyhow!("{}: nothing was changed: {e}", file.display()))
}

async fn agreement_command(command: AgreementCommand) -> anyhow::Result<()> {
    let now = chrono::Utc::now();
    let today = now.date_naive();
    match command {
        AgreementCommand::List { store } => {
            let store = store.open().await?;
            let mut out = std::io::stdout().lock();
            for a in store.all_agreements().await? {
                writeln!(
                    out,
                    "{}\tv{}\t{}\t{}\t{}\t{} practice(s)",
                    a.id,
                    a.version,
                    a.service,
                    if a.in_force(today) {
                        "in force"
                    } else {
                        "not in force"
                    },
                    a.roles.join(","),
                    a.practices.len()
                )?;
            }
            Ok(())
        }
        AgreementCommand::Show { id, store } => {
            let store = store.open().await?;
            let a = store
                .agreement(&id)
                .await?
                .with_context(|| format!("no agreement {id}"))?;
            let mut out = std::io::stdout().lock();
            writeln!(out, "{}", serde_json::to_string_pretty(&a)?)?;
            for v in store.agreement_versions(&id).await? {
                writeln!(
                    out,
                    "version {} at {} by {}: {}",
                    v.agreement.version, v.changed_at, v.actor, v.reason
                )?;
            }
            Ok(())
        }
        AgreementCommand::Create {
            file,
            reason,
            store,
        } => {
            let agreement = read_agreement_file(&file)?;
            let store = store.open().await?;
            let a = admin::create_agreement(store.as_ref(), agreement, &cli_change(reason), now)
                .await
                .map_err(|e| anyhow::anyhow!("{}: nothing was changed: {e}", file.display()))?;
            eprintln!("created agreement {} (version {})", a.id, a.version);
            Ok(())
        }
        AgreementCommand::Update {
            id,
            file,
            reason,
            store,
        } => {
            let agreement = read_agreement_file(&file)?;
            let store = store.open().await?;
            let a =
                admin::update_agreement(store.as_ref(), &id, agreement, &cli_change(reason), now)
                    .await
                    .map_err(|e| anyhow::anyhow!("{}: nothing was changed: {e}", file.display()))?;
            eprintln!(
                "updated agreement {} to version {}: devices it covers rebuild at their next sync",
                a.id, a.version
            );
            Ok(())
        }
        AgreementCommand::Retire {
            id,
            reason,
            on,
            store,
        } => {
            let store = store.open().await?;
            let a = admin::retire_agreement(store.as_ref(), &id, on, &cli_change(reason), now)
                .await
                .map_err(|e| anyhow::anyhow!("nothing was changed: {e}"))?;
            eprintln!(
                "retired agreement {} on {} (version {})",
                a.id,
                a.retired.map(|d| d.to_string()).unwrap_or_default(),
                a.version
            );
            Ok(())
        }
        AgreementCommand::Compare { ids, json, store } => {
            let store = store.open().await?;
            let agreements = admin::agreements_to_compare(store.as_ref(), &ids).await?;
            let comparison = admin::compare(&agreements, today);
            let mut out = std::io::stdout().lock();
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&comparison)?)?;
            } else {
                write!(out, "{}", admin::comparison_table(&comparison))?;
            }
            Ok(())
        }
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async {
                match term.as_mut() {
                    Some(t) => { t.recv().await; }
                    None => std::future::pending::<()>().await,
                }
            } => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
