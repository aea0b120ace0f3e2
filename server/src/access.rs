//! Who accessed a patient's record: the report a privacy officer reads, and the same report
//! worded for the patient (a subject access request).
//!
//! # Where it comes from
//!
//! The audit log, read by patient (an indexed query: `audit_by_patient`). Every access names
//! the patient on its own event: each pull page writes one `record_sent` event a patient it
//! carried (with the device, the service, and the agreements or the break-glass reason that
//! gave access), each record or section view made on a device arrives through the device's
//! outbox as `record_viewed` with the device's own time and whether it was offline, and
//! break-glass, notes, their filing and dissent changes name the patient too.
//!
//! # Invariants
//!
//! - The report reads only the audit log (and names of users and services to word it); it
//!   never decides access, so it shows what happened, not what should have.
//! - The HTML page escapes every value it did not write itself.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use doorstep_record::nhs::NhsNumber;
use serde::Serialize;

use crate::audit;
use crate::store::{AuditEvent, AuditRow, PatientRow, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum AccessFailure {
    #[error("nhs_number: {0}")]
    Invalid(String),
    #[error("no patient has this NHS number")]
    NotFound,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One access of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Access {
    /// When it happened (for a view made on a device: the device's time).
    pub at: DateTime<Utc>,
    /// When the server learnt of it (a view made offline arrives at the next sync).
    pub recorded_at: DateTime<Utc>,
    /// The audit action (`record_sent`, `record_viewed`, `break_glass`, `note_accepted`, ...).
    pub action: String,
    /// Who: the user's name (or the practice, or the administrator).
    pub who: String,
    pub device_id: Option<String>,
    /// The service's name.
    pub service: Option<String>,
    /// The agreements that gave access.
    pub agreements: Vec<String>,
    /// The reason, when break-glass gave access.
    pub break_glass: Option<String>,
    /// For views made on a device: whether it was offline.
    pub offline: Option<bool>,
    /// What happened, in plain words.
    pub what: String,
    /// The audit event's seq (to find it in the log).
    pub seq: i64,
}

/// The access report of one patient.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AccessReport {
    pub patient_id: String,
    pub nhs_number: String,
    pub practice: String,
    pub from: Option<NaiveDate>,
    pub accesses: Vec<Access>,
}

fn text(v: &serde_json::Value, key: &str) -> Option<String> {
    v.get(key).and_then(|x| x.as_str()).map(str::to_owned)
}

/// The report of the patient with `nhs_number`, from `from` (a day, UTC) when given.
pub async fn patient_report(
    store: &dyn Store,
    nhs_number: &str,
    from: Option<NaiveDate>,
) -> Result<AccessReport, AccessFailure> {
    let nhs = NhsNumber::parse(nhs_number).map_err(|e| AccessFailure::Invalid(e.to_string()))?;
    let patient = store
        .patient_by_nhs_number(nhs.digits())
        .await?
        .ok_or(AccessFailure::NotFound)?;
    let since = from
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc());
    let rows = store.audit_rows_for_patient(&patient.id, since).await?;
    let services: BTreeMap<String, String> = store
        .services()
        .await?
        .into_iter()
        .map(|s| (s.id, s.name))
        .collect();
    let mut names: BTreeMap<String, String> = BTreeMap::new();
    let mut accesses = Vec::new();
    for row in &rows {
        accesses.push(access_of(store, row, &services, &mut names).await?);
    }
    // Views made offline arrive later than they happened: the report is in the order they
    // happened.
    accesses.sort_by_key(|a| (a.at, a.seq));
    Ok(report_of(patient, from, accesses))
}

/// The report, as [`patient_report`], read by `actor` (an administrator, a privacy officer):
/// the reading is itself audited (`access_report`).
pub async fn audited_report(
    store: &dyn Store,
    actor: &str,
    nhs_number: &str,
    from: Option<NaiveDate>,
    now: DateTime<Utc>,
) -> Result<AccessReport, AccessFailure> {
    let report = patient_report(store, nhs_number, from).await?;
    audit::append(
        store,
        AuditEvent {
            at: now,
            actor: actor.to_string(),
            action: "access_report".into(),
            patient_id: Some(report.patient_id.clone()),
            detail: serde_json::json!({ "from": from, "accesses": report.accesses.len() }),
        },
    )
    .await?;
    Ok(report)
}

fn report_of(patient: PatientRow, from: Option<NaiveDate>, accesses: Vec<Access>) -> AccessReport {
    AccessReport {
        patient_id: patient.id,
        nhs_number: patient.nhs_number,
        practice: format!("{} ({})", patient.practice_name, patient.practice_ods),
        from,
        accesses,
    }
}

async fn access_of(
    store: &dyn Store,
    row: &AuditRow,
    services: &BTreeMap<String, String>,
    names: &mut BTreeMap<String, String>,
) -> Result<Access, StoreError> {
    let e = &row.event;
    let d = &e.detail;
    let who = match e.actor.split_once(':') {
        Some(("user", username)) => user_name(store, username, names).await?,
        Some(("device", _)) => match text(d, "user") {
            Some(username) => user_name(store, &username, names).await?,
            None => e.actor.clone(),
        },
        Some(("practice", ods)) => format!("the practice {ods}"),
        _ => e.actor.clone(),
    };
    let service_id = text(d, "service_id").or_else(|| text(d, "service"));
    let service = service_id.map(|id| services.get(&id).cloned().unwrap_or(id));
    let agreements: Vec<String> = d
        .get("agreements")
        .and_then(|a| a.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let break_glass = text(d, "break_glass").or_else(|| {
        (e.action == "break_glass")
            .then(|| text(d, "reason"))
            .flatten()
    });
    let offline = d.get("offline").and_then(|o| o.as_bool());
    let at = text(d, "viewed_at")
        .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
        .map_or(e.at, |t| t.with_timezone(&Utc));
    let what = match e.action.as_str() {
        "record_sent" => "the record was sent to their device".to_string(),
        "record_viewed" => {
            let section = text(d, "section").unwrap_or_else(|| "summary".into());
            match offline {
                Some(true) => format!("opened the record ({section}) on their device, offline"),
                _ => format!("opened the record ({section}) on their device"),
            }
        }
        "break_glass" => "used emergency access (break-glass) for 24 hours".into(),
        "note_accepted" => "wrote a note, sent to the registered practice".into(),
        "note_filed" => "filed a note in the practice record".into(),
        "note_rejected" => "refused a note".into(),
        "note_rejected_by_server" => "a note was refused".into(),
        "dissent_set" => "changed whether the record is shared".into(),
        other => other.replace('_', " "),
    };
    Ok(Access {
        at,
        recorded_at: e.at,
        action: e.action.clone(),
        who,
        device_id: text(d, "device_id")
            .or_else(|| e.actor.strip_prefix("device:").map(str::to_owned)),
        service,
        agreements,
        break_glass,
        offline,
        what,
        seq: row.seq,
    })
}

async fn user_name(
    store: &dyn Store,
    username: &str,
    names: &mut BTreeMap<String, String>,
) -> Result<String, StoreError> {
    if let Some(n) = names.get(username) {
        return Ok(n.clone());
    }
    let name = match store.user_by_username(username).await? {
        Some(u) => format!("{} ({})", u.display_name, u.role),
        None => username.to_string(),
    };
    names.insert(username.to_string(), name.clone());
    Ok(name)
}

/// The report as plain text, one access a line, for the privacy officer.
pub fn to_text(report: &AccessReport) -> String {
    let mut out = format!(
        "Access report for NHS number {} (patient {}), registered at {}{}\n",
        nhs_spaced(&report.nhs_number),
        report.patient_id,
        report.practice,
        report
            .from
            .map(|d| format!(", from {d}"))
            .unwrap_or_default()
    );
    if report.accesses.is_empty() {
        out.push_str("No access recorded.\n");
    }
    for a in &report.accesses {
        let under = match (&a.break_glass, a.agreements.is_empty()) {
            (Some(reason), _) => format!("break-glass: {reason}"),
            (None, false) => format!("agreement {}", a.agreements.join(", ")),
            (None, true) => String::new(),
        };
        let mut line = format!(
            "{}  {:<14} {}  {}",
            a.at.format("%Y-%m-%d %H:%M:%S"),
            a.action,
            a.who,
            a.what
        );
        for (label, value) in [
            ("service", a.service.clone().unwrap_or_default()),
            ("device", a.device_id.clone().unwrap_or_default()),
            ("under", under),
        ] {
            if !value.is_empty() {
                line.push_str(&format!("; {label} {value}"));
            }
        }
        if a.recorded_at != a.at {
            line.push_str(&format!(
                "; recorded {}",
                a.recorded_at.format("%Y-%m-%d %H:%M:%S")
            ));
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

fn nhs_spaced(digits: &str) -> String {
    if digits.len() == 10 {
        format!("{} {} {}", &digits[..3], &digits[3..6], &digits[6..])
    } else {
        digits.to_string()
    }
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The report as a page for the patient (a subject access request): who saw their record,
/// when, for which service and why, in plain words; printable to PDF from any browser.
pub fn to_html(report: &AccessReport, made_at: DateTime<Utc>) -> String {
    let mut rows = String::new();
    for a in &report.accesses {
        let why = match (&a.break_glass, a.agreements.is_empty()) {
            (Some(reason), _) => format!("Emergency access. Reason given: {reason}"),
            (None, false) => format!("Sharing agreement {}", a.agreements.join(", ")),
            (None, true) => String::new(),
        };
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            escape(&a.at.format("%d %B %Y, %H:%M").to_string()),
            escape(&a.who),
            escape(a.service.as_deref().unwrap_or("")),
            escape(&a.what),
            escape(&why),
        ));
    }
    if report.accesses.is_empty() {
        rows.push_str("<tr><td colspan=\"5\">No one has accessed your record through Doorstep in this period.</td></tr>\n");
    }
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>Who has accessed your record</title>\
         <style>body{{font-family:sans-serif;max-width:60rem;margin:2rem auto;color:#111}}\
         table{{border-collapse:collapse;width:100%}}th,td{{border:1px solid #999;padding:.4rem;\
         text-align:left;vertical-align:top}}th{{background:#eee}}</style></head><body>\n\
         <h1>Who has accessed your record</h1>\n\
         <p>NHS number {nhs}. Registered at {practice}.{from}</p>\n\
         <p>This lists every time your GP record was sent to, or opened on, the device of a \
         clinician of a service your practice shares records with through Doorstep, and why \
         they could see it. Made on {made}.</p>\n\
         <table><thead><tr><th>When</th><th>Who</th><th>Service</th><th>What happened</th>\
         <th>Why they could see it</th></tr></thead><tbody>\n{rows}</tbody></table>\n\
         <p>If anything here looks wrong, contact your GP practice.</p>\n</body></html>\n",
        nhs = escape(&nhs_spaced(&report.nhs_number)),
        practice = escape(&report.practice),
        from = report
            .from
            .map(|d| format!(" From {}.", escape(&d.format("%d %B %Y").to_string())))
            .unwrap_or_default(),
        made = escape(&made_at.format("%d %B %Y").to_string()),
    )
}
