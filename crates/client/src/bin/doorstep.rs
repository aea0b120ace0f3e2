//! `doorstep`: the Doorstep device on the command line, for scripting and support.
//!
//! It is the same library the app uses (`doorstep_client`), over the same data directory:
//!
//! ```text
//! doorstep enrol --server URL --ca FILE --user U --totp CODE --data-dir DIR
//! doorstep sync
//! doorstep sign-in --totp CODE          (after too many wrong PINs)
//! doorstep list [--search TEXT]
//! doorstep show NHS_NUMBER [--json]
//! doorstep status
//! doorstep note NHS_NUMBER --text TEXT [--vitals JSON] [--problem SNOMED_CODE]
//! doorstep notes [NHS_NUMBER]
//! doorstep practice --server URL --ca FILE --practice ODS inbox [--json]
//! doorstep practice --server URL --ca FILE --practice ODS ack NOTE_ID --status filed
//! ```
//!
//! `doorstep practice` is not the device: it plays a member practice's own GP system, using
//! only the federation's public API with the practice's credential (`DOORSTEP_PRACTICE_SECRET`,
//! from `doorstep-server practice add`), to show how a practice system plugs in.
//!
//! `--data-dir` (or `DOORSTEP_DATA_DIR`) names the data directory. The PIN comes from
//! `DOORSTEP_PIN` (for automation) or a prompt that does not echo. The password of `enrol` and
//! `sign-in` comes from a prompt that does not echo, from standard input (`--password-stdin`)
//! or from `DOORSTEP_PASSWORD`, never from the command line (`--password` is refused: the
//! process list would show it).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use chrono::{DateTime, Local, NaiveDate, Utc};
use clap::{Parser, Subcommand};
use doorstep_client::{Device, EnrolParams, Secret, today};
use doorstep_ipc::{ListRow, PatientRecord};
use doorstep_record::NhsNumber;
use doorstep_record::views::{AlertKind, Provenance};

/// Print to stdout; a closed pipe (`doorstep list | head`) ends the program quietly.
fn emit(text: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("doorstep: cannot write the output: {e}");
        std::process::exit(1);
    }
}

macro_rules! out {
    ($($arg:tt)*) => { emit(&format!($($arg)*)) };
}

macro_rules! outln {
    ($($arg:tt)*) => { emit(&(format!($($arg)*) + "\n")) };
}

#[derive(Parser, Debug)]
#[command(
    name = "doorstep",
    version,
    about = "Doorstep device client: enrol, sync and read the cached care record"
)]
struct Cli {
    /// The device's data directory (device.json, cache.db, ...).
    #[arg(long, global = true, env = "DOORSTEP_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Sign in with password and authenticator code, register this device and choose a PIN.
    Enrol {
        /// Federation server, e.g. https://federation.example:8443
        #[arg(long, value_name = "URL")]
        server: String,
        /// The federation's CA certificate (PEM); the device will trust only this CA.
        #[arg(long, value_name = "FILE")]
        ca: Option<PathBuf>,
        #[arg(long, value_name = "U")]
        user: String,
        #[command(flatten)]
        password: PasswordArgs,
        /// Six-digit code from the authenticator.
        #[arg(long, value_name = "CODE")]
        totp: String,
        /// Label for administrators (default: "Doorstep on <hostname>").
        #[arg(long, value_name = "NAME", default_value = "")]
        device_name: String,
        /// Development only: enrol without --ca (trusting the platform's roots) or over plain
        /// http to this machine.
        #[arg(long)]
        insecure_dev: bool,
    },
    /// After too many wrong PINs: sign in online with password and authenticator code, then
    /// give the PIN (the device keeps its records and the notes waiting to be sent).
    SignIn {
        #[command(flatten)]
        password: PasswordArgs,
        /// Six-digit code from the authenticator.
        #[arg(long, value_name = "CODE")]
        totp: String,
    },
    /// Pull every change waiting on the server.
    Sync {
        /// Print the sync report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The patients on your list, today's first.
    List {
        /// Name, NHS number, postcode or date of birth (dd/mm/yyyy).
        #[arg(long, value_name = "TEXT")]
        search: Option<String>,
        /// Print the rows as JSON.
        #[arg(long)]
        json: bool,
    },
    /// One patient's record, by NHS number.
    Show {
        /// Ten digits, spaces allowed: "999 123 4567".
        nhs_number: String,
        /// Print the record as JSON (the app's PatientRecord).
        #[arg(long)]
        json: bool,
    },
    /// Sync state: last sync, server reachable, patients cached, items waiting to be sent.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Write and sign a consultation note for a patient on your list; it is sent to the
    /// patient's registered practice at the next sync (it waits here while offline).
    Note {
        /// Ten digits, spaces allowed: "999 123 4567".
        nhs_number: String,
        /// The note's text.
        #[arg(long, value_name = "TEXT", default_value = "")]
        text: String,
        /// Vital signs as JSON: {"rr":18,"spo2":96,"scale":1,"o2":false,"sbp":120,
        /// "pulse":80,"acvpu":"A","temp":37.1} (any subset).
        #[arg(long, value_name = "JSON")]
        vitals: Option<String>,
        /// A SNOMED CT code from the problem pick list.
        #[arg(long, value_name = "SNOMED_CODE")]
        problem: Option<String>,
        /// The id of an earlier note of this patient that this one amends and replaces.
        #[arg(long, value_name = "NOTE_ID")]
        replaces: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// The notes written on this device and where each stands (one patient's when given).
    Notes {
        nhs_number: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Act as a member practice's GP system: fetch its inbox of notes, acknowledge them.
    Practice {
        /// Federation server, e.g. https://federation.example:8443
        #[arg(long, value_name = "URL")]
        server: String,
        /// The federation's CA certificate (PEM), the only one trusted.
        #[arg(long, value_name = "FILE")]
        ca: Option<PathBuf>,
        /// The practice's ODS code (its client id).
        #[arg(long, value_name = "ODS")]
        practice: String,
        /// The practice's secret (from `doorstep-server practice add`).
        #[arg(long, env = "DOORSTEP_PRACTICE_SECRET", hide_env_values = true)]
        secret: String,
        #[command(subcommand)]
        command: PracticeCommand,
    },
}

/// Where the password comes from: a prompt that does not echo, `--password-stdin`, or
/// `DOORSTEP_PASSWORD`; never the command line, which other users see in the process list.
#[derive(clap::Args, Debug)]
struct PasswordArgs {
    /// Read the password from the first line of standard input (for scripts). Otherwise it
    /// comes from DOORSTEP_PASSWORD, or a prompt.
    #[arg(long)]
    password_stdin: bool,
    /// Refused, with a message saying what to use instead (kept so that the refusal is clear).
    #[arg(long, hide = true, value_name = "P", num_args = 0..=1)]
    password: Option<Option<String>>,
}

impl PasswordArgs {
    /// The password for `username`, from wherever it was supplied.
    fn read(&self, username: &str) -> Result<Secret> {
        use std::io::IsTerminal;
        if self.password.is_some() {
            bail!(
                "--password is not accepted: a password on the command line can be read by \
                 other users in the process list and stays in the shell's history. Type it \
                 at the prompt, pipe it in with --password-stdin, or set DOORSTEP_PASSWORD."
            );
        }
        let password = if self.password_stdin {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .context("reading the password from standard input")?;
            let password = Secret::from(line.trim_end_matches(['\r', '\n']));
            zeroize::Zeroize::zeroize(&mut line);
            password
        } else if let Ok(p) = std::env::var("DOORSTEP_PASSWORD") {
            Secret::from(p)
        } else if std::io::stdin().is_terminal() {
            Secret::from(
                rpassword::prompt_password(format!("Password for {username}: "))
                    .context("reading the password")?,
            )
        } else {
            bail!(
                "no password: standard input is not a terminal to prompt on. Pipe the \
                 password in with --password-stdin, or set DOORSTEP_PASSWORD."
            );
        };
        if password.is_empty() {
            bail!("the password is empty");
        }
        Ok(password)
    }
}

#[derive(Subcommand, Debug)]
enum PracticeCommand {
    /// The notes waiting for this practice (not yet filed or rejected).
    Inbox {
        /// Print the FHIR R4 Bundle as the server sent it.
        #[arg(long)]
        json: bool,
    },
    /// Acknowledge a note: received, filed, or rejected with a reason.
    Ack {
        note_id: String,
        #[arg(long, value_parser = ["received", "filed", "rejected"])]
        status: String,
        #[arg(long)]
        reason: Option<String>,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("DOORSTEP_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .init();
    let _ = rustls::crypto::ring::default_provider().install_default();
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("doorstep: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    if let Command::Practice {
        server,
        ca,
        practice,
        secret,
        command,
    } = cli.command
    {
        return practice_system(&server, ca.as_deref(), &practice, &secret, command).await;
    }
    let dir = cli.data_dir.clone().ok_or_else(|| {
        anyhow!("name the data directory with --data-dir DIR or DOORSTEP_DATA_DIR")
    })?;
    match cli.command {
        Command::Enrol {
            server,
            ca,
            user,
            password,
            totp,
            device_name,
            insecure_dev,
        } => {
            let password = password.read(&user)?;
            let pin = new_pin()?;
            let device = Device::enrol(
                &dir,
                EnrolParams {
                    server_url: server,
                    ca_pem_path: ca,
                    username: user,
                    password,
                    totp: totp.into(),
                    pin,
                    device_name,
                    dev_mode: insecure_dev,
                },
            )
            .await?;
            let u = device.user();
            outln!(
                "Enrolled {} ({}, {}) on {}.",
                u.display_name,
                u.role,
                u.service,
                device.device_file().server_url
            );
            outln!("Next: doorstep --data-dir {} sync", dir.display());
        }
        Command::SignIn { password, totp } => {
            let file = doorstep_client::DeviceFile::read(&dir)?;
            let password = password.read(&file.username)?;
            let device =
                Device::unlock_after_sign_in(&dir, pin()?.expose(), password.expose(), &totp)
                    .await?;
            outln!(
                "Signed in again as {}: the PIN opens this device again.",
                device.user().display_name
            );
        }
        Command::Sync { json } => {
            let device = unlock(&dir)?;
            let report = device.sync().await?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                outln!(
                    "Synced in {:.1} s: {} page(s), {} patient(s) added, {} removed, {} \
                     resource change(s){}. {} patient(s) on this device.",
                    report.duration_ms as f64 / 1000.0,
                    report.pages,
                    report.patients_added,
                    report.patients_removed,
                    report.upserts + report.deletes,
                    if report.rebuilt {
                        "; the cache was rebuilt at the server's request"
                    } else {
                        ""
                    },
                    report.patients
                );
            }
        }
        Command::List { search, json } => {
            let device = unlock(&dir)?;
            let rows = device.list(search.as_deref(), today())?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&rows)?);
            } else if rows.is_empty() {
                match search {
                    Some(s) => outln!("No patient on your list matches '{s}'."),
                    None => outln!("Your list is empty. Run `doorstep sync`."),
                }
            } else {
                out!("{}", list_table(&rows));
            }
        }
        Command::Show { nhs_number, json } => {
            let nhs = NhsNumber::parse(&nhs_number)
                .map_err(|e| anyhow!("'{nhs_number}' is not a valid NHS number: {e}"))?;
            let device = unlock(&dir)?;
            let patient_id = device
                .find_patient(&nhs)?
                .ok_or_else(|| anyhow!("No patient with NHS number {nhs} is on this device."))?;
            let record = device
                .record(&patient_id, today())?
                .ok_or_else(|| anyhow!("No patient with NHS number {nhs} is on this device."))?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&record)?);
            } else {
                out!("{}", record_text(&record));
            }
        }
        Command::Note {
            nhs_number,
            text,
            vitals,
            problem,
            replaces,
            json,
        } => {
            let device = unlock(&dir)?;
            let patient_id = patient_on_device(&device, &nhs_number)?;
            let vitals = vitals
                .map(|v| {
                    serde_json::from_str::<serde_json::Value>(&v)
                        .map_err(|e| anyhow!("--vitals is not JSON: {e}"))
                })
                .transpose()?;
            let note = device.write_note(
                &patient_id,
                doorstep_client::NoteInput {
                    text,
                    vitals,
                    problem,
                    replaces,
                },
            )?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&note)?);
            } else {
                outln!("{}", note_line(&note));
                outln!("Signed. It waits on this device and goes at the next sync.");
            }
        }
        Command::Notes { nhs_number, json } => {
            let device = unlock(&dir)?;
            let patient_id = nhs_number
                .map(|n| patient_on_device(&device, &n))
                .transpose()?;
            let notes = device.notes(patient_id.as_deref())?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&notes)?);
            } else if notes.is_empty() {
                outln!("No notes written on this device.");
            } else {
                for note in &notes {
                    outln!("{}", note_line(note));
                }
            }
        }
        Command::Practice { .. } => unreachable!("answered above"),
        Command::Status { json } => {
            let device = unlock(&dir)?;
            device.probe_server().await;
            let status = device.status()?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                let u = device.user();
                outln!(
                    "User:         {} ({}, {})",
                    u.display_name,
                    u.role,
                    u.service
                );
                outln!("Server:       {}", status.server_url);
                outln!(
                    "Reachable:    {}",
                    match status.server_reachable {
                        Some(true) => "yes",
                        Some(false) => "no (working offline)",
                        None => "unknown",
                    }
                );
                outln!(
                    "Last synced:  {}",
                    status
                        .last_synced
                        .map(local_time)
                        .unwrap_or_else(|| "never".into())
                );
                outln!("Patients:     {}", status.patients);
                outln!("waiting: {}", status.waiting);
                if let Some(e) = &status.last_push_error {
                    outln!("Last push error: {e}");
                }
                if let Some(since) = status.rebuilding_since {
                    outln!(
                        "Rebuilding:   since {} (the records are the copy from before, kept until the rebuild completes)",
                        local_time(since)
                    );
                }
                if let Some(e) = &status.last_error {
                    outln!("Last error:   {e}");
                }
            }
        }
    }
    Ok(())
}

/// `doorstep practice`: the practice's system, through the public API only.
async fn practice_system(
    server: &str,
    ca: Option<&Path>,
    practice: &str,
    secret: &str,
    command: PracticeCommand,
) -> Result<()> {
    let server = doorstep_client::check_server_url(server)?;
    let mut builder = reqwest::Client::builder().timeout(std::time::Duration::from_secs(60));
    if let Some(ca) = ca {
        let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .with_context(|| format!("{} is not PEM", ca.display()))?;
        builder = builder.tls_certs_only(certs);
    }
    let http = builder.build().context("the HTTP client")?;
    let refused = |status: reqwest::StatusCode, body: &str| {
        let message = serde_json::from_str::<doorstep_protocol::ApiError>(body)
            .map(|e| e.message)
            .unwrap_or_else(|_| body.to_owned());
        anyhow!("the federation answered {status}: {message}")
    };
    match command {
        PracticeCommand::Inbox { json } => {
            let resp = http
                .get(format!("{server}/api/v1/practice/inbox"))
                .basic_auth(practice, Some(secret))
                .send()
                .await
                .context("the federation could not be reached")?;
            let status = resp.status();
            let body = resp.text().await?;
            if !status.is_success() {
                return Err(refused(status, &body));
            }
            if json {
                outln!("{body}");
                return Ok(());
            }
            let bundle: serde_json::Value = serde_json::from_str(&body)?;
            let entries = bundle["entry"].as_array().cloned().unwrap_or_default();
            let compositions: Vec<&serde_json::Value> = entries
                .iter()
                .map(|e| &e["resource"])
                .filter(|r| r["resourceType"] == "Composition")
                .collect();
            if compositions.is_empty() {
                outln!("No notes waiting for {practice}.");
            }
            for c in compositions {
                outln!(
                    "{}  {}  {}  by {}",
                    c["id"].as_str().unwrap_or("?"),
                    c["date"].as_str().unwrap_or("?"),
                    c["subject"]["reference"].as_str().unwrap_or("?"),
                    c["author"][0]["display"].as_str().unwrap_or("?")
                );
            }
        }
        PracticeCommand::Ack {
            note_id,
            status,
            reason,
        } => {
            let status = match status.as_str() {
                "received" => doorstep_protocol::AckStatus::Received,
                "filed" => doorstep_protocol::AckStatus::Filed,
                _ => doorstep_protocol::AckStatus::Rejected,
            };
            let request = doorstep_protocol::AckRequest {
                acks: vec![doorstep_protocol::Ack {
                    note_id: note_id.clone(),
                    status,
                    reason,
                }],
            };
            let resp = http
                .post(format!("{server}/api/v1/practice/inbox/ack"))
                .basic_auth(practice, Some(secret))
                .json(&request)
                .send()
                .await
                .context("the federation could not be reached")?;
            let code = resp.status();
            let body = resp.text().await?;
            if !code.is_success() {
                return Err(refused(code, &body));
            }
            let answer: doorstep_protocol::AckResponse = serde_json::from_str(&body)?;
            outln!(
                "{note_id}: {}",
                if answer.changed > 0 {
                    "acknowledged"
                } else {
                    "already in that state; nothing changed"
                }
            );
        }
    }
    Ok(())
}

/// The patient id of an NHS number on this device, or an error saying which.
fn patient_on_device(device: &doorstep_client::Device, nhs_number: &str) -> Result<String> {
    let nhs = NhsNumber::parse(nhs_number)
        .map_err(|e| anyhow!("'{nhs_number}' is not a valid NHS number: {e}"))?;
    device
        .find_patient(&nhs)?
        .ok_or_else(|| anyhow!("No patient with NHS number {nhs} is on this device."))
}

/// One line a note: id, when, state, NEWS2 and the start of the text.
fn note_line(note: &doorstep_ipc::NoteSummary) -> String {
    let state = match &note.state {
        doorstep_ipc::NoteState::Waiting => "waiting".to_owned(),
        doorstep_ipc::NoteState::Accepted { at } => format!("accepted {}", local_time(*at)),
        doorstep_ipc::NoteState::Rejected { reason } => format!("rejected: {reason}"),
        doorstep_ipc::NoteState::Received { practice, at } => {
            format!("received by {practice} {}", local_time(*at))
        }
        doorstep_ipc::NoteState::Filed { practice, at } => {
            format!("filed at {practice} {}", local_time(*at))
        }
        doorstep_ipc::NoteState::NotFiled {
            practice, reason, ..
        } => format!("not filed by {practice}: {reason}"),
    };
    let mut parts = vec![note.id.clone(), local_time(note.signed_at), state];
    parts.extend(note.news2.clone());
    parts.extend(note.problem.clone());
    if let Some(earlier) = &note.replaces {
        parts.push(format!("replaces {earlier}"));
    }
    let text: String = note.text.chars().take(60).collect();
    if !text.is_empty() {
        parts.push(format!(
            "“{text}{}”",
            if note.text.chars().count() > 60 {
                "…"
            } else {
                ""
            }
        ));
    }
    parts.join("  ")
}

/// The PIN from DOORSTEP_PIN or a silent prompt.
fn pin() -> Result<Secret> {
    if let Ok(pin) = std::env::var("DOORSTEP_PIN") {
        return Ok(pin.into());
    }
    Ok(rpassword::prompt_password("PIN: ")
        .context("reading the PIN (or set DOORSTEP_PIN)")?
        .into())
}

/// A new PIN: DOORSTEP_PIN, or asked twice.
fn new_pin() -> Result<Secret> {
    if let Ok(pin) = std::env::var("DOORSTEP_PIN") {
        return Ok(pin.into());
    }
    let first = Secret::from(
        rpassword::prompt_password("Choose a PIN for this device: ")
            .context("reading the PIN (or set DOORSTEP_PIN)")?,
    );
    let again = Secret::from(rpassword::prompt_password("Type the PIN again: ")?);
    if first != again {
        bail!("the two PINs differ");
    }
    Ok(first)
}

fn unlock(dir: &Path) -> Result<Device> {
    Ok(Device::unlock(dir, pin()?.expose())?)
}

fn local_time(t: DateTime<Utc>) -> String {
    t.with_timezone(&Local).format("%d/%m/%Y %H:%M").to_string()
}

fn date(d: NaiveDate) -> String {
    d.format("%d-%b-%Y").to_string()
}

fn opt_date(d: Option<NaiveDate>) -> String {
    d.map(date).unwrap_or_else(|| "date unknown".into())
}

/// Rows as an aligned table.
fn list_table(rows: &[ListRow]) -> String {
    let header = [
        "",
        "NHS number",
        "Name",
        "Born (age)",
        "Postcode",
        "Why",
        "Alerts",
    ];
    let cells: Vec<[String; 7]> = rows
        .iter()
        .map(|r| {
            let when = if r.list_kind == "caseload" {
                r.reason.clone()
            } else {
                format!(
                    "{} {}",
                    r.starts_at.with_timezone(&Local).format("%d/%m %H:%M"),
                    r.reason
                )
            };
            [
                if r.today { "*".into() } else { String::new() },
                r.nhs_number_display.clone(),
                r.name.clone(),
                match (r.birth_date, r.age) {
                    (Some(b), Some(a)) => format!("{} ({a})", date(b)),
                    (Some(b), None) => date(b),
                    _ => "-".into(),
                },
                r.postcode.clone().unwrap_or_default(),
                when,
                r.alerts.join(" "),
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |row: &[String]| {
        let mut s = String::new();
        for (i, (c, w)) in row.iter().zip(widths).enumerate() {
            if i > 0 {
                s.push_str("  ");
            }
            s.push_str(c);
            if i + 1 < row.len() {
                s.extend(std::iter::repeat_n(' ', w - c.chars().count()));
            }
        }
        s.trim_end().to_owned() + "\n"
    };
    let mut out = line(&header.map(String::from));
    for row in &cells {
        out.push_str(&line(row));
    }
    let today_count = rows.iter().filter(|r| r.today).count();
    let _ = writeln!(
        out,
        "\n{} patient(s){}",
        rows.len(),
        if today_count > 0 {
            format!(", {today_count} today (*)")
        } else {
            String::new()
        }
    );
    out
}

fn source(p: &Provenance) -> String {
    let mut parts = Vec::new();
    if let Some(name) = p.source_name.as_ref().or(p.source_ods.as_ref()) {
        parts.push(name.clone());
    }
    if let Some(d) = p.recorded {
        parts.push(date(d));
    }
    if let Some(a) = &p.author {
        parts.push(a.clone());
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("  [{}]", parts.join(", "))
    }
}

/// A banner and the sections, as the record screen shows them.
fn record_text(r: &PatientRecord) -> String {
    let v = &r.view;
    let p = &v.patient;
    let mut out = String::new();
    let rule = "=".repeat(78);
    let _ = writeln!(out, "{rule}");
    let _ = writeln!(
        out,
        "{}   Born {}{}   NHS {}",
        p.name_display,
        opt_date(p.birth_date),
        p.age.map(|a| format!(" ({a} y)")).unwrap_or_default(),
        p.nhs_number_display.as_deref().unwrap_or("-")
    );
    let _ = writeln!(
        out,
        "Practice: {}{}",
        p.practice_name.as_deref().unwrap_or("unknown"),
        p.practice_ods
            .as_ref()
            .map(|o| format!(" ({o})"))
            .unwrap_or_default()
    );
    let _ = writeln!(out, "Address:  {}", p.address_display);
    let allergies: Vec<String> = v.allergies.iter().map(|a| a.substance.clone()).collect();
    let _ = writeln!(
        out,
        "ALLERGIES: {}",
        if allergies.is_empty() {
            "none recorded".into()
        } else {
            allergies.join("; ")
        }
    );
    if !v.alerts.is_empty() {
        let alerts: Vec<String> = v.alerts.iter().map(|a| a.text.clone()).collect();
        let _ = writeln!(out, "ALERTS:    {}", alerts.join("; "));
    }
    let _ = writeln!(out, "{rule}");
    let _ = writeln!(
        out,
        "Record as of {} · on your list for: {}",
        local_time(r.as_of),
        if r.list_reason.is_empty() {
            "-"
        } else {
            &r.list_reason
        }
    );
    for w in &r.withheld {
        let _ = writeln!(
            out,
            "Note: {} item(s) withheld from {} by the sharing agreements.",
            w.count, w.section
        );
    }

    let mut section = |title: &str, lines: Vec<String>| {
        let _ = writeln!(out, "\n== {title} ==");
        if lines.is_empty() {
            let _ = writeln!(out, "  (none)");
        }
        for l in lines {
            let _ = writeln!(out, "  {l}");
        }
    };
    section(
        "Problems (active)",
        v.problems
            .active
            .iter()
            .map(|i| {
                format!(
                    "{}{}{}",
                    i.text,
                    i.onset
                        .map(|d| format!(" since {}", date(d)))
                        .unwrap_or_default(),
                    source(&i.provenance)
                )
            })
            .collect(),
    );
    section(
        "Problems (past)",
        v.problems
            .past
            .iter()
            .map(|i| format!("{}{}", i.text, source(&i.provenance)))
            .collect(),
    );
    let meds = |items: &[doorstep_record::views::MedicationItem]| -> Vec<String> {
        items
            .iter()
            .map(|m| {
                format!(
                    "{}{}{}",
                    m.name,
                    m.dosage
                        .as_ref()
                        .map(|d| format!(" — {d}"))
                        .unwrap_or_default(),
                    source(&m.provenance)
                )
            })
            .collect()
    };
    section("Medications (current)", meds(&v.medications.current));
    section("Medications (repeat)", meds(&v.medications.repeat));
    section("Medications (past)", meds(&v.medications.past));
    section(
        "Allergies",
        v.allergies
            .iter()
            .map(|a| {
                format!(
                    "{}{}{}",
                    a.substance,
                    if a.reactions.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", a.reactions.join(", "))
                    },
                    source(&a.provenance)
                )
            })
            .collect(),
    );
    section(
        "Alerts",
        v.alerts
            .iter()
            .map(|a| {
                let kind = match a.kind {
                    AlertKind::Dnacpr => "DNACPR",
                    AlertKind::Respect => "ReSPECT",
                    AlertKind::Safeguarding => "Safeguarding",
                    AlertKind::Other => "Alert",
                };
                format!("{kind}: {}{}", a.text, source(&a.provenance))
            })
            .collect(),
    );
    section(
        "Encounters",
        v.encounters
            .iter()
            .map(|e| {
                format!(
                    "{} {}{}{}",
                    e.start
                        .map(|s| s.format("%d-%b-%Y").to_string())
                        .unwrap_or_else(|| "date unknown".into()),
                    e.kind,
                    e.reason
                        .as_ref()
                        .map(|r| format!(": {r}"))
                        .unwrap_or_default(),
                    source(&e.provenance)
                )
            })
            .collect(),
    );
    section(
        "Observations",
        v.observations
            .iter()
            .map(|s| {
                let last = s.points.iter().max_by_key(|p| p.when);
                format!(
                    "{}: {} reading(s){}",
                    s.name,
                    s.points.len(),
                    last.map(|p| format!(
                        ", latest {} {} on {}",
                        p.value
                            .map(|x| x.to_string())
                            .or_else(|| p.text.clone())
                            .unwrap_or_default(),
                        s.unit.as_deref().unwrap_or(""),
                        p.when.format("%d-%b-%Y")
                    ))
                    .unwrap_or_default()
                )
            })
            .collect(),
    );
    section(
        "Immunisations",
        v.immunisations
            .iter()
            .map(|i| {
                format!(
                    "{} {}{}",
                    opt_date(i.date),
                    i.vaccine,
                    source(&i.provenance)
                )
            })
            .collect(),
    );
    section(
        "Procedures",
        v.procedures
            .iter()
            .map(|i| format!("{} {}{}", opt_date(i.date), i.name, source(&i.provenance)))
            .collect(),
    );
    section(
        "Documents",
        v.documents
            .iter()
            .map(|d| {
                format!(
                    "{} {} ({}){}",
                    opt_date(d.date),
                    d.title,
                    d.kind,
                    source(&d.provenance)
                )
            })
            .collect(),
    );
    out
}
