//! The reads the screens need: the list (with search) and one patient's record.
//!
//! The list reads only the `patients` and `list_entries` columns (no JSON), so a search over
//! 10,000 cached patients takes a few milliseconds. The record parses the patient's resources
//! and builds the views with `doorstep_record::views::build_record`.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Datelike, Local, NaiveDate, Utc};
use doorstep_ipc::{ListRow, PatientRecord, Withheld};
use doorstep_record::fhir::Resource;
use doorstep_record::views::build_record;
use rusqlite::{Connection, OptionalExtension, ToSql};

use crate::cache::{get_meta, meta, parse_timestamp};
use crate::error::Result;
use crate::text::SearchQuery;

/// One list entry as read back from the cache.
#[derive(Debug, Clone)]
struct Entry {
    kind: String,
    reason: String,
    starts_at: DateTime<Utc>,
    ends_at: Option<DateTime<Utc>>,
}

impl Entry {
    /// A caseload entry spans months and has no time of its own; other entries have a time.
    fn is_timed(&self) -> bool {
        self.kind != "caseload"
    }

    /// A timed entry falls on `today` when it starts on that day, in the device's time zone.
    fn is_today(&self, today: NaiveDate) -> bool {
        self.is_timed() && self.starts_at.with_timezone(&Local).date_naive() == today
    }
}

/// The entry a patient's row shows when they have several: today's first, then timed ones by
/// time, then the caseload.
fn primary_entry(entries: &[Entry], today: NaiveDate) -> Option<&Entry> {
    entries
        .iter()
        .min_by_key(|e| (!e.is_today(today), !e.is_timed(), e.starts_at))
}

/// Whole years from `birth` to `today`.
pub(crate) fn age_on(birth: NaiveDate, today: NaiveDate) -> Option<u32> {
    let mut years = today.year() - birth.year();
    if (today.month(), today.day()) < (birth.month(), birth.day()) {
        years -= 1;
    }
    u32::try_from(years).ok()
}

/// `9991234567` → `999 123 4567`.
pub(crate) fn nhs_display(digits: &str) -> String {
    if digits.len() == 10 && digits.is_ascii() {
        format!("{} {} {}", &digits[..3], &digits[3..6], &digits[6..])
    } else {
        digits.to_owned()
    }
}

/// `LS14AB` → `LS1 4AB`.
fn postcode_display(p: &str) -> String {
    if p.len() > 3 && p.is_ascii() {
        format!("{} {}", &p[..p.len() - 3], &p[p.len() - 3..])
    } else {
        p.to_owned()
    }
}

/// The list, optionally searched, sorted today first, then by time, then by name.
///
/// A patient whose every list entry has ended by `now` is not listed, even offline before the
/// next sync purges them (least data: the appointment is over, the clinician no longer needs
/// them on the list).
pub(crate) fn list(
    conn: &Connection,
    search: Option<&str>,
    today: NaiveDate,
    now: DateTime<Utc>,
) -> Result<Vec<ListRow>> {
    let (conditions, args) = search_conditions(&SearchQuery::parse(search.unwrap_or("")));
    let mut list = read_rows(conn, &conditions, &args, today, now)?;
    sort_rows(&mut list);
    Ok(list.into_iter().map(|r| r.row).collect())
}

/// The SQL conditions on `patients p` (and their arguments) that a search makes.
fn search_conditions(query: &SearchQuery) -> (Vec<String>, Vec<String>) {
    let mut conditions: Vec<String> = Vec::new();
    let mut args: Vec<String> = Vec::new();
    match query {
        SearchQuery::All => {}
        SearchQuery::NhsNumberPrefix(digits) => {
            args.push(digits.clone());
            conditions.push(format!(
                "p.nhs_number BETWEEN ?{n} AND ?{n} || '~'",
                n = args.len()
            ));
        }
        SearchQuery::BirthDate(d) => {
            args.push(d.to_string());
            conditions.push(format!("p.birth_date = ?{}", args.len()));
        }
        SearchQuery::Postcode { prefix, outward } => {
            args.push(prefix.clone());
            conditions.push(format!(
                "p.postcode BETWEEN ?{n} AND ?{n} || '~'",
                n = args.len()
            ));
            if let Some(outward) = outward {
                args.push(outward.clone());
                conditions.push(format!(
                    "substr(p.postcode, 1, length(p.postcode) - 3) = ?{}",
                    args.len()
                ));
            }
        }
        SearchQuery::NameOrArea { word, area } => {
            args.push(word.clone());
            args.push(area.clone());
            // The area is all the letters: `L` (Liverpool) must not find `LS1` (Leeds).
            conditions.push(format!(
                "(instr(p.name_search, ?{}) > 0 OR (p.postcode BETWEEN ?{n} AND ?{n} || '~' \
                  AND substr(p.postcode, length(?{n}) + 1, 1) BETWEEN '0' AND '9'))",
                args.len() - 1,
                n = args.len()
            ));
        }
        SearchQuery::Name(words) => {
            for w in words {
                // Both sides are folded already: a plain substring test is enough (and faster
                // than LIKE, which folds case again on every row).
                args.push(w.clone());
                conditions.push(format!("instr(p.name_search, ?{}) > 0", args.len()));
            }
        }
    }
    (conditions, args)
}

/// The order of the whole list ([`list`]'s, unsearched): every listed patient's id, first to
/// last, with the folded name and postcode a name search reads. The device keeps it between
/// syncs, so the screen's first rows and a search's are found without building every row, and
/// a name search (a substring, which no index serves) reads these strings in the list's order
/// instead of scanning the patients table.
pub(crate) struct ListOrder {
    ids: Vec<String>,
    rank: HashMap<String, usize>,
    /// `patients.name_search` of each id, in the same order.
    names: Vec<String>,
    /// `patients.postcode` (as stored: upper case, no space) of each id, in the same order.
    postcodes: Vec<Option<String>>,
    /// The first time after it was worked out that a listed entry ends (and the order may
    /// change); `None` when no entry has an end to come. A new day changes it too.
    pub(crate) valid_until: Option<DateTime<Utc>>,
}

pub(crate) fn list_order(
    conn: &Connection,
    today: NaiveDate,
    now: DateTime<Utc>,
) -> Result<ListOrder> {
    let mut rows = read_rows(conn, &[], &[], today, now)?;
    sort_rows(&mut rows);
    let mut order = ListOrder {
        ids: Vec::with_capacity(rows.len()),
        rank: HashMap::with_capacity(rows.len()),
        names: Vec::with_capacity(rows.len()),
        postcodes: Vec::with_capacity(rows.len()),
        valid_until: rows.iter().filter_map(|r| r.next_end).min(),
    };
    for (i, r) in rows.into_iter().enumerate() {
        order.rank.insert(r.row.patient_id.clone(), i);
        order.ids.push(r.row.patient_id);
        order.names.push(r.name_search);
        order.postcodes.push(r.postcode);
    }
    Ok(order)
}

/// Whether the patient with folded name `name` and stored postcode `postcode` matches a name
/// search: what [`search_conditions`] asks of SQL for the same query, on the strings
/// [`ListOrder`] keeps. False for the other kinds, which an index serves.
fn name_match(query: &SearchQuery, name: &str, postcode: Option<&str>) -> bool {
    match query {
        SearchQuery::Name(words) => words.iter().all(|w| name.contains(w.as_str())),
        SearchQuery::NameOrArea { word, area } => {
            name.contains(word.as_str())
                // The area is all the letters: `L` (Liverpool) must not find `LS1` (Leeds).
                || postcode.is_some_and(|p| {
                    p.starts_with(area.as_str())
                        && p.as_bytes().get(area.len()).is_some_and(u8::is_ascii_digit)
                })
        }
        _ => false,
    }
}

/// The first `limit` rows of the list, searched, in [`list`]'s order, and how many match in
/// all: only those rows are built.
pub(crate) fn list_first(
    conn: &Connection,
    order: &ListOrder,
    search: Option<&str>,
    limit: usize,
    today: NaiveDate,
    now: DateTime<Utc>,
) -> Result<(Vec<ListRow>, usize)> {
    let query = SearchQuery::parse(search.unwrap_or(""));
    let (ids, total): (Vec<&String>, usize) = match &query {
        SearchQuery::All => (order.ids.iter().take(limit).collect(), order.ids.len()),
        SearchQuery::Name(_) | SearchQuery::NameOrArea { .. } => {
            // Read in the list's order: the first `limit` found are the first shown.
            let mut found = (0..order.ids.len())
                .filter(|&i| name_match(&query, &order.names[i], order.postcodes[i].as_deref()));
            let ids: Vec<&String> = found.by_ref().take(limit).map(|i| &order.ids[i]).collect();
            let total = ids.len() + found.count();
            (ids, total)
        }
        _ => {
            let (conditions, args) = search_conditions(&query);
            let sql = format!(
                "SELECT p.id FROM patients p WHERE {}",
                conditions.join(" AND ")
            );
            let mut stmt = conn.prepare_cached(&sql)?;
            let params: Vec<&dyn ToSql> = args.iter().map(|a| a as &dyn ToSql).collect();
            let mut ranked: Vec<(usize, String)> = stmt
                .query_map(params.as_slice(), |r| r.get::<_, String>(0))?
                .filter_map(|id| {
                    let id = id.ok()?;
                    // Not in the order: every entry ended (not listed, as in `list`).
                    order.rank.get(&id).map(|rank| (*rank, id))
                })
                .collect();
            ranked.sort_unstable();
            let total = ranked.len();
            let ids = ranked
                .into_iter()
                .take(limit)
                .filter_map(|(rank, _)| order.ids.get(rank))
                .collect();
            (ids, total)
        }
    };
    if ids.is_empty() {
        return Ok((Vec::new(), total));
    }
    let marks: Vec<String> = (1..=ids.len()).map(|n| format!("?{n}")).collect();
    let condition = vec![format!("p.id IN ({})", marks.join(", "))];
    let args: Vec<String> = ids.iter().map(|id| (*id).clone()).collect();
    let mut rows: Vec<ListRow> = read_rows(conn, &condition, &args, today, now)?
        .into_iter()
        .map(|r| r.row)
        .collect();
    rows.sort_by_key(|r| order.rank.get(&r.patient_id).copied().unwrap_or(usize::MAX));
    Ok((rows, total))
}

/// A list row as read, with what the list sorts and searches it by.
struct ReadRow {
    row: ListRow,
    /// Its entry has a time (not a caseload).
    timed: bool,
    sort_name: String,
    name_search: String,
    /// As stored: upper case, no space.
    postcode: Option<String>,
    /// When the first of its entries that had not ended ends.
    next_end: Option<DateTime<Utc>>,
}

/// The rows of the patients matching `conditions`, unsorted. Patients whose every entry has
/// ended by `now` are left out.
fn read_rows(
    conn: &Connection,
    conditions: &[String],
    args: &[String],
    today: NaiveDate,
    now: DateTime<Utc>,
) -> Result<Vec<ReadRow>> {
    let sql = format!(
        "SELECT p.id, p.nhs_number, p.name_display, p.birth_date, p.address, p.postcode,
                p.practice_name, p.alerts, e.kind, e.reason, e.starts_at, e.ends_at, p.name_sort,
                p.name_search
         FROM patients p LEFT JOIN list_entries e ON e.patient_id = p.id
         {}",
        if conditions.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conditions.join(" AND "))
        }
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let params: Vec<&dyn ToSql> = args.iter().map(|a| a as &dyn ToSql).collect();
    let mut rows = stmt.query(params.as_slice())?;

    struct Building {
        row: ListRow,
        entries: Vec<Entry>,
        /// Entries read that had ended by `now`.
        ended: usize,
        sort_name: String,
        name_search: String,
        postcode: Option<String>,
    }
    // No ORDER BY: the rows are sorted below anyway, and without it SQLite scans the table in
    // storage order instead of through the primary-key index. A patient's entries are
    // gathered by id wherever they come.
    let mut out: Vec<Building> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    while let Some(r) = rows.next()? {
        let id: String = r.get(0)?;
        let at = match index.get(&id) {
            Some(at) => *at,
            None => {
                let nhs: String = r.get(1)?;
                let birth_date = r
                    .get::<_, Option<String>>(3)?
                    .and_then(|s| s.parse::<NaiveDate>().ok());
                let alerts: String = r.get(7)?;
                let postcode: Option<String> = r.get(5)?;
                index.insert(id.clone(), out.len());
                out.push(Building {
                    row: ListRow {
                        patient_id: id,
                        nhs_number_display: nhs_display(&nhs),
                        nhs_number: nhs,
                        name: r.get(2)?,
                        birth_date,
                        age: birth_date.and_then(|b| age_on(b, today)),
                        address: r.get(4)?,
                        postcode: postcode.as_deref().map(postcode_display),
                        practice_name: r.get(6)?,
                        reason: String::new(),
                        list_kind: String::new(),
                        starts_at: DateTime::<Utc>::UNIX_EPOCH,
                        ends_at: None,
                        today: false,
                        alerts: alerts
                            .split(',')
                            .filter(|a| !a.is_empty())
                            .map(str::to_owned)
                            .collect(),
                        // The caller flags namesakes (`same_names`, over the whole list).
                        same_name: false,
                    },
                    entries: Vec::new(),
                    ended: 0,
                    sort_name: r.get(12)?,
                    name_search: r.get(13)?,
                    postcode,
                });
                out.len() - 1
            }
        };
        if let Some(kind) = r.get::<_, Option<String>>(8)? {
            let starts_at: String = r.get(10)?;
            let entry = Entry {
                kind,
                reason: r.get(9)?,
                starts_at: parse_timestamp(&starts_at).unwrap_or(DateTime::<Utc>::UNIX_EPOCH),
                ends_at: r
                    .get::<_, Option<String>>(11)?
                    .as_deref()
                    .and_then(parse_timestamp),
            };
            match entry.ends_at {
                Some(end) if end <= now => out[at].ended += 1,
                _ => out[at].entries.push(entry),
            }
        }
    }

    let list: Vec<ReadRow> = out
        .into_iter()
        .filter(|b| !(b.entries.is_empty() && b.ended > 0))
        .map(|mut b| {
            let next_end = b.entries.iter().filter_map(|e| e.ends_at).min();
            let mut timed = false;
            if let Some(e) = primary_entry(&b.entries, today) {
                b.row.reason = e.reason.clone();
                b.row.list_kind = e.kind.clone();
                b.row.starts_at = e.starts_at;
                b.row.ends_at = e.ends_at;
                b.row.today = e.is_today(today);
                timed = e.is_timed();
            }
            ReadRow {
                row: b.row,
                timed,
                sort_name: b.sort_name,
                name_search: b.name_search,
                postcode: b.postcode,
                next_end,
            }
        })
        .collect();
    Ok(list)
}

/// Today first, then timed entries by time, then by name (and NHS number).
fn sort_rows(list: &mut [ReadRow]) {
    list.sort_by(|a, b| {
        (!a.row.today, !a.timed)
            .cmp(&(!b.row.today, !b.timed))
            .then_with(|| {
                if a.timed && b.timed {
                    a.row.starts_at.cmp(&b.row.starts_at)
                } else {
                    std::cmp::Ordering::Equal
                }
            })
            .then_with(|| a.sort_name.cmp(&b.sort_name))
            .then_with(|| a.row.nhs_number.cmp(&b.row.nhs_number))
    });
}

/// The patients on the list (the whole list, whatever the search) who share their name with
/// another patient on it (hazard H2). On the list means as [`list`] shows it: no entry at
/// all, or one that has not ended by `now`.
pub(crate) fn same_names(conn: &Connection, now: DateTime<Utc>) -> Result<HashSet<String>> {
    let mut stmt = conn.prepare_cached(
        "SELECT p.id, p.name_display, e.ends_at
         FROM patients p LEFT JOIN list_entries e ON e.patient_id = p.id",
    )?;
    let mut rows = stmt.query([])?;
    // id -> (name, has a live entry, has an ended one)
    let mut listed: HashMap<String, (String, bool, bool)> = HashMap::new();
    while let Some(r) = rows.next()? {
        let id: String = r.get(0)?;
        let slot = match listed.get_mut(&id) {
            Some(slot) => slot,
            None => listed.entry(id).or_insert((r.get(1)?, false, false)),
        };
        match r.get::<_, Option<String>>(2)? {
            Some(end) if parse_timestamp(&end).is_some_and(|end| end <= now) => slot.2 = true,
            _ => slot.1 = true,
        }
    }
    let shown: Vec<(&String, &str)> = listed
        .iter()
        .filter(|(_, (_, live, ended))| *live || !*ended)
        .map(|(id, (name, _, _))| (id, name.as_str()))
        .collect();
    let flags = doorstep_record::lookalike::shares_a_name(shown.iter().map(|(_, n)| *n));
    Ok(shown
        .iter()
        .zip(flags)
        .filter(|(_, same)| *same)
        .map(|((id, _), _)| (*id).clone())
        .collect())
}

/// One patient's record, or `None` when the patient is not (or no longer) in the cache.
pub(crate) fn record(
    conn: &Connection,
    patient_id: &str,
    today: NaiveDate,
) -> Result<Option<PatientRecord>> {
    let Some(patient_as_of) = conn
        .prepare_cached("SELECT as_of FROM patients WHERE id = ?1")?
        .query_row([patient_id], |r| r.get::<_, String>(0))
        .optional()?
    else {
        return Ok(None);
    };
    let mut stmt = conn.prepare_cached("SELECT json FROM resources WHERE patient_id = ?1")?;
    let mut resources = Vec::new();
    for stored in stmt.query_map([patient_id], |r| Ok(crate::stored::unpack(r.get_ref(0)?)))? {
        let parsed = stored?
            .ok()
            .and_then(|json| serde_json::from_str(&json).ok())
            .map(Resource::from_json);
        match parsed {
            Some(Ok(resource)) => resources.push(resource),
            _ => tracing::warn!("a cached resource could not be read; left out of the record"),
        }
    }
    let view = build_record(&resources, today);

    let withheld = conn
        .prepare_cached(
            "SELECT section, count FROM withheld WHERE patient_id = ?1 AND count > 0
             ORDER BY section",
        )?
        .query_map([patient_id], |r| {
            Ok(Withheld {
                section: r.get(0)?,
                count: r.get(1)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;

    let entries = conn
        .prepare_cached(
            "SELECT kind, reason, starts_at, ends_at FROM list_entries WHERE patient_id = ?1
             ORDER BY seq",
        )?
        .query_map([patient_id], |r| {
            let starts_at: String = r.get(2)?;
            let ends_at: Option<String> = r.get(3)?;
            Ok(Entry {
                kind: r.get(0)?,
                reason: r.get(1)?,
                starts_at: parse_timestamp(&starts_at).unwrap_or(DateTime::<Utc>::UNIX_EPOCH),
                ends_at: ends_at.as_deref().and_then(parse_timestamp),
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let list_reason = primary_entry(&entries, today)
        .map(|e| e.reason.clone())
        .unwrap_or_default();
    let break_glass_until = entries
        .iter()
        .filter(|e| e.kind == "break_glass")
        .filter_map(|e| e.ends_at)
        .max();

    // The cache matches the server as of the last completed sync, and the patient's own rows
    // as of the page that last changed them: the later of the two.
    let synced_as_of = get_meta(conn, meta::AS_OF)?.and_then(|s| parse_timestamp(&s));
    let as_of = parse_timestamp(&patient_as_of)
        .into_iter()
        .chain(synced_as_of)
        .max()
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH);
    let stale_after_hours = get_meta(conn, meta::STALE_AFTER_HOURS)?
        .and_then(|h| h.parse().ok())
        .unwrap_or(doorstep_record::agreement::DEFAULT_STALE_AFTER_HOURS);

    Ok(Some(PatientRecord {
        view,
        as_of,
        withheld,
        list_reason,
        break_glass_until,
        stale_after_hours,
        // The caller knows the list as of now (see `same_names`).
        same_name: false,
    }))
}

/// The cached patient with this NHS number.
pub(crate) fn find_patient(conn: &Connection, nhs_digits: &str) -> Result<Option<String>> {
    Ok(conn
        .prepare_cached("SELECT id FROM patients WHERE nhs_number = ?1")?
        .query_row([nhs_digits], |r| r.get(0))
        .optional()?)
}

/// `Some(())` when the cache holds the patient.
pub(crate) fn patient_exists(conn: &Connection, patient_id: &str) -> Result<Option<()>> {
    Ok(conn
        .query_row("SELECT 1 FROM patients WHERE id = ?1", [patient_id], |_| {
            Ok(())
        })
        .optional()?)
}

pub(crate) fn patient_count(conn: &Connection) -> Result<u32> {
    Ok(conn.query_row("SELECT count(*) FROM patients", [], |r| r.get(0))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_and_displays() {
        let d = |y, m, day| NaiveDate::from_ymd_opt(y, m, day).unwrap();
        assert_eq!(age_on(d(1950, 2, 1), d(2026, 1, 31)), Some(75));
        assert_eq!(age_on(d(1950, 2, 1), d(2026, 2, 1)), Some(76));
        assert_eq!(age_on(d(2030, 1, 1), d(2026, 2, 1)), None);
        assert_eq!(nhs_display("9990000018"), "999 000 0018");
        assert_eq!(postcode_display("LS14AB"), "LS1 4AB");
        assert_eq!(postcode_display("SW1A1AA"), "SW1A 1AA");
    }
}
