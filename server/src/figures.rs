//! Figures for the network: what each service did, per registered practice and ISO week.
//!
//! # What is counted
//!
//! For a service, a practice (the patient's registered practice) and an ISO week
//! (`2026-W49`, Monday to Sunday, UTC):
//!
//! - `patients_seen`: distinct patients whose record a user of the service opened
//!   (`record_viewed`, at the device's time) or wrote a note about that week;
//! - `notes_written` (accepted notes, by when they were signed on the device), and of those
//!   `notes_filed` and `notes_rejected` by the practice, and the median minutes from signed
//!   to filed (the mean of the middle two for an even count; none when nothing was filed);
//! - `bookings_made` (not cancelled, by the slot's week), `bookings_used` (of those, the
//!   session clinician opened the record or wrote a note for the patient while the booking's
//!   entry ran: from the slot's start to the entry's end), `bookings_cancelled`;
//! - `break_glass_uses` by users of the service.
//!
//! The store hands over rows ([`crate::store::FigureRows`]); [`aggregate`] is pure, so the
//! counting is tested on hand-made rows. Views and notes up to a day after the range are
//! read too, so a booking late in the range can still be "used".
//!
//! A service manager reads their own service's figures; a federation administrator every
//! service's. Both as JSON or as CSV ([`to_csv`], with a header row).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use serde::Serialize;

use crate::store::{DeliveryState, FigureRows, Store, StoreError};

/// The audit actions the figures read.
pub const ACTIONS: &[&str] = &["record_viewed", "break_glass"];

/// The longest range asked at once.
pub const MAX_DAYS: i64 = 400;

/// One row of the figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FigureRow {
    pub service_id: String,
    pub practice_ods: String,
    pub practice_name: String,
    /// ISO week, `YYYY-Www`.
    pub week: String,
    pub patients_seen: usize,
    pub notes_written: usize,
    pub notes_filed: usize,
    pub notes_rejected: usize,
    pub median_minutes_to_filed: Option<f64>,
    pub bookings_made: usize,
    pub bookings_used: usize,
    pub bookings_cancelled: usize,
    pub break_glass_uses: usize,
}

/// The ISO week of a time, `YYYY-Www`.
pub fn iso_week(t: DateTime<Utc>) -> String {
    let w = t.iso_week();
    format!("{}-W{:02}", w.year(), w.week())
}

#[derive(Default)]
struct Tally {
    seen: BTreeSet<String>,
    written: usize,
    filed: usize,
    rejected: usize,
    to_filed_secs: Vec<i64>,
    made: usize,
    used: usize,
    cancelled: usize,
    break_glass: usize,
}

/// The median of whole seconds, in minutes.
fn median_minutes(values: &mut [i64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let n = values.len();
    let secs = if n % 2 == 1 {
        values[n / 2] as f64
    } else {
        (values[n / 2 - 1] + values[n / 2]) as f64 / 2.0
    };
    Some(secs / 60.0)
}

fn detail_time(detail: &serde_json::Value, key: &str) -> Option<DateTime<Utc>> {
    detail[key]
        .as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// Count `rows` for events in `[from, to)`, for `service` (every service when `None`).
/// Rows are sorted by service, practice and week.
pub fn aggregate(
    rows: &FigureRows,
    service: Option<&str>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Vec<FigureRow> {
    let practice_of: BTreeMap<&str, (&str, &str)> = rows
        .patients
        .iter()
        .map(|p| {
            (
                p.id.as_str(),
                (p.practice_ods.as_str(), p.practice_name.as_str()),
            )
        })
        .collect();
    let wanted = |s: &str| service.is_none_or(|w| w == s);
    let in_range = |t: DateTime<Utc>| from <= t && t < to;
    let names: BTreeMap<&str, &str> = practice_of.values().copied().collect();
    // The row a patient's event counts in.
    let key = |service: &str, patient: &str, at: DateTime<Utc>| {
        let ods = practice_of.get(patient).map_or("", |p| p.0);
        (service.to_string(), ods.to_string(), iso_week(at))
    };
    let mut tallies: BTreeMap<(String, String, String), Tally> = BTreeMap::new();
    // Views: (service, username, patient, when).
    let mut views: Vec<(&str, &str, &str, DateTime<Utc>)> = Vec::new();
    for row in &rows.audit {
        let e = &row.event;
        let (Some(patient), Some(svc)) = (e.patient_id.as_deref(), e.detail["service_id"].as_str())
        else {
            continue;
        };
        match e.action.as_str() {
            "record_viewed" => {
                let at = detail_time(&e.detail, "viewed_at").unwrap_or(e.at);
                let user = e.detail["user"].as_str().unwrap_or("");
                views.push((svc, user, patient, at));
                if wanted(svc) && in_range(at) {
                    let t = tallies.entry(key(svc, patient, at)).or_default();
                    t.seen.insert(patient.to_string());
                }
            }
            "break_glass" if wanted(svc) && in_range(e.at) => {
                tallies
                    .entry(key(svc, patient, e.at))
                    .or_default()
                    .break_glass += 1;
            }
            _ => {}
        }
    }
    for note in &rows.notes {
        if !wanted(&note.service_id) || !in_range(note.created_at) {
            continue;
        }
        let t = tallies
            .entry(key(&note.service_id, &note.patient_id, note.created_at))
            .or_default();
        t.seen.insert(note.patient_id.clone());
        t.written += 1;
        match note.delivery {
            Some(DeliveryState::Filed) => {
                t.filed += 1;
                if let Some(at) = note.delivery_at {
                    t.to_filed_secs
                        .push((at - note.created_at).num_seconds().max(0));
                }
            }
            Some(DeliveryState::Rejected) => t.rejected += 1,
            _ => {}
        }
    }
    for b in &rows.bookings {
        if !wanted(&b.service_id) || !in_range(b.slot_starts_at) {
            continue;
        }
        let t = tallies
            .entry(key(&b.service_id, &b.patient_id, b.slot_starts_at))
            .or_default();
        if b.cancelled {
            t.cancelled += 1;
            continue;
        }
        t.made += 1;
        let end = b
            .entry_ends_at
            .unwrap_or(b.slot_starts_at + Duration::hours(crate::lists::TIMED_ENTRY_HOURS));
        let during = |at: DateTime<Utc>| b.slot_starts_at <= at && at < end;
        let viewed = views.iter().any(|(svc, user, patient, at)| {
            *svc == b.service_id
                && *user == b.clinician_username
                && *patient == b.patient_id
                && during(*at)
        });
        let wrote = rows.notes.iter().any(|n| {
            n.author_user_id == b.clinician_user_id
                && n.patient_id == b.patient_id
                && during(n.created_at)
        });
        if viewed || wrote {
            t.used += 1;
        }
    }
    tallies
        .into_iter()
        .map(|((service_id, practice_ods, week), mut t)| FigureRow {
            practice_name: names
                .get(practice_ods.as_str())
                .map_or(String::new(), |n| n.to_string()),
            service_id,
            practice_ods,
            week,
            patients_seen: t.seen.len(),
            notes_written: t.written,
            notes_filed: t.filed,
            notes_rejected: t.rejected,
            median_minutes_to_filed: median_minutes(&mut t.to_filed_secs),
            bookings_made: t.made,
            bookings_used: t.used,
            bookings_cancelled: t.cancelled,
            break_glass_uses: t.break_glass,
        })
        .collect()
}

#[derive(Debug, thiserror::Error)]
pub enum FiguresFailure {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The figures for days `from` to `to` (both included; default: the last 8 weeks to today),
/// for `service` or every service.
pub async fn figures(
    store: &dyn Store,
    service: Option<&str>,
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
    today: NaiveDate,
) -> Result<Vec<FigureRow>, FiguresFailure> {
    let to = to.unwrap_or(today);
    let from = from.unwrap_or(to - Duration::days(55));
    if to < from {
        return Err(FiguresFailure::Invalid(format!(
            "to: {to} is before from ({from})"
        )));
    }
    if (to - from).num_days() > MAX_DAYS {
        return Err(FiguresFailure::Invalid(format!(
            "from: at most {MAX_DAYS} days at once"
        )));
    }
    let start = from.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc();
    let end = (to + Duration::days(1))
        .and_hms_opt(0, 0, 0)
        .unwrap_or_default()
        .and_utc();
    // A day more: a booking late in the range is "used" by a view the next day.
    let rows = store
        .figure_rows(
            ACTIONS,
            start,
            end + Duration::hours(crate::lists::TIMED_ENTRY_HOURS),
        )
        .await?;
    Ok(aggregate(&rows, service, start, end))
}

/// The header row of [`to_csv`].
pub const CSV_HEADER: &str = "service,practice,practice_name,week,patients_seen,notes_written,\
notes_filed,notes_rejected,median_minutes_to_filed,bookings_made,bookings_used,\
bookings_cancelled,break_glass_uses";

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The figures as CSV (RFC 4180: a header row, CRLF line ends).
pub fn to_csv(rows: &[FigureRow]) -> String {
    let mut out = format!("{CSV_HEADER}\r\n");
    for r in rows {
        let median = r
            .median_minutes_to_filed
            .map(|m| format!("{m:.1}"))
            .unwrap_or_default();
        let fields = [
            csv_field(&r.service_id),
            csv_field(&r.practice_ods),
            csv_field(&r.practice_name),
            r.week.clone(),
            r.patients_seen.to_string(),
            r.notes_written.to_string(),
            r.notes_filed.to_string(),
            r.notes_rejected.to_string(),
            median,
            r.bookings_made.to_string(),
            r.bookings_used.to_string(),
            r.bookings_cancelled.to_string(),
            r.break_glass_uses.to_string(),
        ];
        out.push_str(&fields.join(","));
        out.push_str("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{AuditEvent, AuditRow, BookingFigureRow, NoteOutcome, NoteRow, PatientRow};

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn patient(id: &str, ods: &str, name: &str) -> PatientRow {
        PatientRow {
            id: id.into(),
            nhs_number: "9990000000".into(),
            practice_ods: ods.into(),
            practice_name: name.into(),
            birth_date: None,
            dissent: false,
        }
    }

    fn event(action: &str, patient: &str, service: &str, user: &str, at: &str) -> AuditRow {
        AuditRow {
            seq: 0,
            event: AuditEvent {
                // The server's time: a day after the device's, which is what counts.
                at: t(at) + Duration::hours(1),
                actor: "device:d".into(),
                action: action.into(),
                patient_id: Some(patient.into()),
                detail: serde_json::json!({"service_id": service, "user": user, "viewed_at": at}),
            },
            prev_hash: String::new(),
            hash: String::new(),
        }
    }

    fn note(patient: &str, written: &str, state: DeliveryState, at: Option<&str>) -> NoteRow {
        NoteRow {
            id: format!("{patient}-{written}"),
            patient_id: patient.into(),
            author_user_id: "gp-id".into(),
            device_id: "d".into(),
            service_id: "hub".into(),
            kind: "note".into(),
            body: Some("{}".into()),
            created_at: t(written),
            received_at: t(written),
            outcome: NoteOutcome::Accepted,
            reason: None,
            delivery: Some(state),
            delivery_at: at.map(t),
            delivery_reason: None,
            practice_ods: None,
        }
    }

    fn booking(patient: &str, slot: &str, cancelled: bool) -> BookingFigureRow {
        BookingFigureRow {
            service_id: "hub".into(),
            clinician_user_id: "gp-id".into(),
            clinician_username: "gp".into(),
            patient_id: patient.into(),
            slot_starts_at: t(slot),
            entry_ends_at: Some(t(slot) + Duration::hours(24)),
            cancelled,
        }
    }

    /// Two ISO weeks (2026-W49 from Monday 30 November, W50 from 7 December), two practices;
    /// every figure below is counted by hand from the rows.
    fn rows() -> FigureRows {
        use DeliveryState::{Accepted, Filed, Rejected};
        FigureRows {
            audit: vec![
                event("record_viewed", "a1", "hub", "gp", "2026-12-01T19:05:00Z"),
                event("record_viewed", "a1", "hub", "gp", "2026-12-01T19:30:00Z"),
                event("record_viewed", "a2", "dn", "nurse", "2026-12-01T10:00:00Z"),
                event("break_glass", "b1", "hub", "gp", "2026-12-08T10:00:00Z"),
                // Sunday night, still W49; by another hub user, so b1's booking is not used.
                event(
                    "record_viewed",
                    "b1",
                    "hub",
                    "locum",
                    "2026-12-06T23:59:00Z",
                ),
                // The end of the range is not in it.
                event("record_viewed", "a2", "hub", "gp", "2026-12-14T00:00:00Z"),
            ],
            notes: vec![
                note(
                    "a1",
                    "2026-12-01T19:10:00Z",
                    Filed,
                    Some("2026-12-01T19:40:00Z"),
                ),
                note(
                    "a2",
                    "2026-12-02T10:00:00Z",
                    Filed,
                    Some("2026-12-02T11:30:00Z"),
                ),
                note(
                    "a2",
                    "2026-12-03T09:00:00Z",
                    Filed,
                    Some("2026-12-03T09:10:00Z"),
                ),
                note(
                    "a1",
                    "2026-12-03T12:00:00Z",
                    Rejected,
                    Some("2026-12-03T13:00:00Z"),
                ),
                note("a1", "2026-12-04T12:00:00Z", Accepted, None),
                note(
                    "a1",
                    "2026-12-07T09:00:00Z",
                    Filed,
                    Some("2026-12-07T09:20:00Z"),
                ),
                note(
                    "a2",
                    "2026-12-08T09:00:00Z",
                    Filed,
                    Some("2026-12-08T09:50:00Z"),
                ),
            ],
            bookings: vec![
                // Used: gp opened a1's record at 19:05.
                booking("a1", "2026-12-01T19:00:00Z", false),
                // Used: gp's note about a2 at 09:00 the next day (the 10:00 one was before).
                booking("a2", "2026-12-02T18:00:00Z", false),
                booking("b1", "2026-12-05T18:00:00Z", true),
                // Not used: only the locum opened b1's record.
                booking("b1", "2026-12-06T18:00:00Z", false),
                booking("a1", "2026-12-14T18:00:00Z", false),
            ],
            patients: vec![
                patient("a1", "A81001", "Alpha Surgery"),
                patient("a2", "A81001", "Alpha Surgery"),
                patient("b1", "B81002", "Beta, Gamma & Co"),
            ],
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn row(
        service: &str,
        ods: &str,
        name: &str,
        week: &str,
        seen: usize,
        notes: (usize, usize, usize, Option<f64>),
        bookings: (usize, usize, usize),
        break_glass: usize,
    ) -> FigureRow {
        FigureRow {
            service_id: service.into(),
            practice_ods: ods.into(),
            practice_name: name.into(),
            week: week.into(),
            patients_seen: seen,
            notes_written: notes.0,
            notes_filed: notes.1,
            notes_rejected: notes.2,
            median_minutes_to_filed: notes.3,
            bookings_made: bookings.0,
            bookings_used: bookings.1,
            bookings_cancelled: bookings.2,
            break_glass_uses: break_glass,
        }
    }

    #[test]
    fn figures_are_counted_per_service_practice_and_week() {
        let (from, to) = (t("2026-11-30T00:00:00Z"), t("2026-12-14T00:00:00Z"));
        let alpha = ("A81001", "Alpha Surgery");
        let beta = ("B81002", "Beta, Gamma & Co");
        let hub = vec![
            // a1 and a2 seen; 5 notes, 3 filed after 30, 90 and 10 minutes (median 30), 1
            // rejected; both bookings used.
            row(
                "hub",
                alpha.0,
                alpha.1,
                "2026-W49",
                2,
                (5, 3, 1, Some(30.0)),
                (2, 2, 0),
                0,
            ),
            // Two notes filed after 20 and 50 minutes: the median is their mean, 35.
            row(
                "hub",
                alpha.0,
                alpha.1,
                "2026-W50",
                2,
                (2, 2, 0, Some(35.0)),
                (0, 0, 0),
                0,
            ),
            row(
                "hub",
                beta.0,
                beta.1,
                "2026-W49",
                1,
                (0, 0, 0, None),
                (1, 0, 1),
                0,
            ),
            row(
                "hub",
                beta.0,
                beta.1,
                "2026-W50",
                0,
                (0, 0, 0, None),
                (0, 0, 0),
                1,
            ),
        ];
        assert_eq!(aggregate(&rows(), Some("hub"), from, to), hub);
        let mut every = hub.clone();
        every.push(row(
            "dn",
            alpha.0,
            alpha.1,
            "2026-W49",
            1,
            (0, 0, 0, None),
            (0, 0, 0),
            0,
        ));
        every.sort_by(|a, b| {
            (&a.service_id, &a.practice_ods, &a.week).cmp(&(
                &b.service_id,
                &b.practice_ods,
                &b.week,
            ))
        });
        assert_eq!(aggregate(&rows(), None, from, to), every);
        assert!(aggregate(&rows(), Some("podiatry"), from, to).is_empty());
    }

    #[test]
    fn csv_has_a_header_and_quotes_what_needs_it() {
        let (from, to) = (t("2026-11-30T00:00:00Z"), t("2026-12-14T00:00:00Z"));
        let csv = to_csv(&aggregate(&rows(), Some("hub"), from, to));
        let lines: Vec<&str> = csv.split("\r\n").collect();
        assert_eq!(lines[0], CSV_HEADER);
        assert_eq!(
            lines[1],
            "hub,A81001,Alpha Surgery,2026-W49,2,5,3,1,30.0,2,2,0,0"
        );
        assert_eq!(
            lines[3],
            "hub,B81002,\"Beta, Gamma & Co\",2026-W49,1,0,0,0,,1,0,1,0"
        );
        assert_eq!(lines.len(), 6, "header, four rows, and the last line's end");
        assert_eq!(lines[5], "");
    }

    #[test]
    fn iso_weeks_run_monday_to_sunday_and_the_year_is_the_weeks() {
        assert_eq!(iso_week(t("2026-11-30T00:00:00Z")), "2026-W49");
        assert_eq!(iso_week(t("2026-12-06T23:59:59Z")), "2026-W49");
        assert_eq!(iso_week(t("2026-12-07T00:00:00Z")), "2026-W50");
        // 1 January 2027 is a Friday: still the last week of 2026.
        assert_eq!(iso_week(t("2027-01-01T12:00:00Z")), "2026-W53");
    }
}
