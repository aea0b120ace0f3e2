//! Unit tests of the cache, the page application and the queries, without a server.

use std::time::Instant;

use chrono::{Duration, NaiveDate, TimeZone, Utc};
use doorstep_protocol::{Change, ListEntry, ListKind, PatientHeader, PullPage, WithheldCount};
use rusqlite::Connection;
use serde_json::{Value, json};

use super::*;

/// A valid test-range NHS number from a 9-digit stem (Modulus 11), or `None` when the stem
/// has no valid check digit.
fn nhs(stem: u64) -> Option<String> {
    let s = format!("{stem:09}");
    let sum: u32 = s
        .chars()
        .enumerate()
        .map(|(i, c)| c.to_digit(10).unwrap() * (10 - i as u32))
        .sum();
    match 11 - sum % 11 {
        11 => Some(format!("{s}0")),
        10 => None,
        c => Some(format!("{s}{c}")),
    }
}

/// The `n`th valid NHS number from 999 000 0000 on.
fn nth_nhs(n: u64) -> String {
    (999_000_000u64..).filter_map(nhs).nth(n as usize).unwrap()
}

struct TestPatient {
    id: String,
    nhs: String,
    given: &'static str,
    family: &'static str,
    birth: &'static str,
    postcode: &'static str,
}

fn patient_json(p: &TestPatient) -> Value {
    json!({
        "resourceType": "Patient",
        "id": p.id,
        "identifier": [{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": p.nhs}],
        "name": [{"use": "official", "family": p.family, "given": [p.given], "prefix": ["Mrs"]}],
        "gender": "female",
        "birthDate": p.birth,
        "address": [{"line": ["12 Station Road"], "city": "Leeds", "postalCode": p.postcode}],
        "generalPractitioner": [{
            "reference": "Organization/B86001",
            "identifier": {"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": "B86001"}
        }]
    })
}

fn organisation_json() -> Value {
    json!({
        "resourceType": "Organization",
        "id": "B86001",
        "identifier": [{"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": "B86001"}],
        "name": "Riverside Surgery"
    })
}

fn allergy_json(id: &str, patient_id: &str) -> Value {
    json!({
        "resourceType": "AllergyIntolerance",
        "id": id,
        "clinicalStatus": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical",
            "code": "active"
        }]},
        "verificationStatus": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification",
            "code": "confirmed"
        }]},
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "91936005",
                             "display": "Allergy to penicillin"}]},
        "patient": {"reference": format!("Patient/{patient_id}")},
        "recordedDate": "2019-03-04",
        "reaction": [{"manifestation": [{"coding": [{"system": "http://snomed.info/sct",
            "code": "271807003", "display": "Rash"}]}]}]
    })
}

fn dnacpr_flag_json(id: &str, patient_id: &str) -> Value {
    json!({
        "resourceType": "Flag",
        "id": id,
        "status": "active",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/flag-category",
                                  "code": "clinical"}]}],
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "304253006",
                             "display": "Not for resuscitation"}],
                 "text": "DNACPR"},
        "subject": {"reference": format!("Patient/{patient_id}")},
        "period": {"start": "2024-05-01"}
    })
}

fn condition_json(id: &str, patient_id: &str, display: &str) -> Value {
    json!({
        "resourceType": "Condition",
        "id": id,
        "clinicalStatus": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "44054006",
                             "display": display}]},
        "subject": {"reference": format!("Patient/{patient_id}")},
        "recordedDate": "2015-06-01"
    })
}

fn caseload(reason: &str) -> ListEntry {
    ListEntry {
        kind: ListKind::Caseload,
        list_name: "Riverside DN caseload".into(),
        reason: reason.into(),
        starts_at: Utc.with_ymd_and_hms(2025, 3, 1, 9, 0, 0).unwrap(),
        ends_at: None,
    }
}

fn added(p: &TestPatient, extra: Vec<Value>, entries: Vec<ListEntry>) -> Change {
    let mut resources = vec![patient_json(p), organisation_json()];
    resources.extend(extra);
    Change::PatientAdded {
        patient: PatientHeader {
            patient_id: p.id.clone(),
            nhs_number: p.nhs.clone(),
            registered_practice_ods: "B86001".into(),
            registered_practice_name: "Riverside Surgery".into(),
            birth_date: p.birth.parse().ok(),
        },
        entries,
        resources,
        withheld: vec![WithheldCount {
            section: "problems".into(),
            count: 1,
        }],
    }
}

fn page(cursor: &str, more: bool, changes: Vec<Change>) -> PullPage {
    PullPage {
        cursor: cursor.into(),
        more,
        server_time: Utc.with_ymd_and_hms(2026, 1, 15, 8, 0, 0).unwrap(),
        changes,
        max_offline_hours: None,
        idle_lock_minutes: None,
        stale_after_hours: None,
    }
}

fn sian() -> TestPatient {
    TestPatient {
        id: "p-sian".into(),
        nhs: nth_nhs(1),
        given: "Siân",
        family: "Evans",
        birth: "1950-02-01",
        postcode: "LS1 4AB",
    }
}

fn zoe() -> TestPatient {
    TestPatient {
        id: "p-zoe".into(),
        nhs: nth_nhs(2),
        given: "Zoë",
        family: "Ó Briain",
        birth: "1938-11-30",
        postcode: "LS12 3XY",
    }
}

fn john() -> TestPatient {
    TestPatient {
        id: "p-john".into(),
        nhs: "9991234560".into(),
        given: "John",
        family: "Smith",
        birth: "1961-07-09",
        postcode: "M1 1AA",
    }
}

const TEST_KEY: [u8; 32] = [7u8; 32];

/// Apply a protocol page as the sync engine does (through the wire reader).
fn apply(conn: &mut Connection, page: &PullPage) -> Result<cache::PageStats> {
    cache::apply_page(conn, &wire::Page::from_protocol(page)?)
}

fn open_cache(dir: &Path) -> Connection {
    cache::open(&dir.join(files::CACHE_FILE), &TEST_KEY)
        .map_err(|e| format!("{e:?}"))
        .unwrap()
}

/// Every row of every patient table plus the cursor, as text, in a stable order.
fn dump(conn: &Connection) -> Vec<String> {
    let mut out = Vec::new();
    for (table, order) in [
        ("patients", "id"),
        ("list_entries", "patient_id, seq"),
        ("resources", "type, id"),
        ("withheld", "patient_id, section"),
    ] {
        let mut stmt = conn
            .prepare(&format!("SELECT * FROM {table} ORDER BY {order}"))
            .unwrap();
        let n = stmt.column_count();
        let rows = stmt
            .query_map([], |r| {
                let mut cells = vec![table.to_owned()];
                for i in 0..n {
                    let v: rusqlite::types::Value = r.get(i)?;
                    cells.push(format!("{v:?}"));
                }
                Ok(cells.join("|"))
            })
            .unwrap();
        out.extend(rows.map(Result::unwrap));
    }
    out.push(format!(
        "cursor={:?}",
        cache::get_meta(conn, meta::CURSOR).unwrap()
    ));
    out
}

/// A cache made before resources were keyed by patient (schema 3) keeps every row when it
/// is opened by this version, and pages apply to it as to a new one.
#[test]
fn a_schema_3_cache_keeps_its_resources_when_keyed_by_patient() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(files::CACHE_FILE);
    {
        // Schema 3 as a device of that version left it, with one page applied by hand.
        let conn = cache_at_schema(&path, 3);
        conn.execute(
            "INSERT INTO resources (type, id, patient_id, json, as_of)
             VALUES ('Condition', 'c9', 'p-sian', '{\"resourceType\":\"Condition\",\"id\":\"c9\"}',
                     '2026-01-01T00:00:00.000Z')",
            [],
        )
        .unwrap();
    }
    let mut conn = open_cache(dir.path());
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM resources WHERE patient_id = ?1 AND type = 'Condition'",
            "p-sian"
        ),
        1
    );
    let version: i64 = conn
        .query_row("SELECT max(version) FROM schema_migrations", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(version, 5);
    apply(&mut conn, &first_page()).unwrap();
    assert_eq!(
        count(&conn, "SELECT count(*) FROM resources WHERE id = ?1", "c2"),
        1
    );
}

/// A schema 4 cache (resources in a rowid table) keeps every resource, deflated or TEXT,
/// when its resources move into their key's b-tree, and pages apply to it as to a new one.
#[test]
fn a_schema_4_cache_keeps_its_resources_without_rowid() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(files::CACHE_FILE);
    let deflated = crate::stored::pack(r#"{"resourceType":"Condition","id":"c8"}"#).unwrap();
    let before = {
        let conn = cache_at_schema(&path, 4);
        conn.execute(
            "INSERT INTO resources (patient_id, type, id, json, as_of)
             VALUES ('p-sian', 'Condition', 'c9', '{\"resourceType\":\"Condition\",\"id\":\"c9\"}',
                     '2026-01-01T00:00:00.000Z')",
            [],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO resources (patient_id, type, id, json, as_of)
             VALUES ('p-sian', 'Condition', 'c8', ?1, '2026-01-02T00:00:00.000Z')",
            [&deflated],
        )
        .unwrap();
        dump(&conn)
    };
    let mut conn = open_cache(dir.path());
    assert_eq!(dump(&conn), before);
    let version: i64 = conn
        .query_row("SELECT max(version) FROM schema_migrations", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(version, 5);
    // A WITHOUT ROWID table has no rowid to select.
    assert!(conn.prepare("SELECT rowid FROM resources").is_err());
    apply(&mut conn, &first_page()).unwrap();
    assert_eq!(
        count(&conn, "SELECT count(*) FROM resources WHERE id = ?1", "c2"),
        1
    );
}

/// A cache at `path` as a device whose newest migration was `schema` left it.
fn cache_at_schema(path: &Path, schema: i64) -> Connection {
    let conn = Connection::open(path).unwrap();
    conn.execute_batch(&crate::key::key_pragma(&TEST_KEY))
        .unwrap();
    cache::migrate(&conn, schema).unwrap();
    conn
}

fn count(conn: &Connection, sql: &str, id: &str) -> i64 {
    conn.query_row(sql, [id], |r| r.get(0)).unwrap()
}

fn names(rows: &[ListRow]) -> Vec<String> {
    rows.iter().map(|r| r.name.clone()).collect()
}

fn day(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

fn first_page() -> PullPage {
    page(
        "c1",
        false,
        vec![
            added(
                &sian(),
                vec![
                    allergy_json("a1", "p-sian"),
                    dnacpr_flag_json("f1", "p-sian"),
                    condition_json("c1", "p-sian", "Type 2 diabetes mellitus"),
                ],
                vec![caseload("Leg ulcer dressing")],
            ),
            added(&zoe(), vec![], vec![caseload("Insulin")]),
            Change::Upsert {
                patient_id: "p-sian".into(),
                resource: condition_json("c2", "p-sian", "Hypertension"),
            },
            Change::Delete {
                patient_id: "p-sian".into(),
                resource_type: "Condition".into(),
                resource_id: "c1".into(),
            },
            Change::Withheld {
                patient_id: "p-zoe".into(),
                counts: vec![WithheldCount {
                    section: "medications".into(),
                    count: 2,
                }],
            },
        ],
    )
}

#[test]
fn applying_a_page_twice_leaves_the_same_cache() {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = open_cache(dir.path());
    let p = first_page();
    let stats = apply(&mut conn, &p).unwrap();
    assert_eq!(stats.patients_added, 2);
    assert_eq!(stats.upserts, 1);
    assert_eq!(stats.deletes, 1);
    let once = dump(&conn);
    apply(&mut conn, &p).unwrap();
    assert_eq!(dump(&conn), once);
    assert!(once.iter().any(|l| l.contains("cursor=Some(\"c1\")")));
    // The page's effects: c1 deleted, c2 there, Zoë's withheld counts replaced.
    assert_eq!(
        count(&conn, "SELECT count(*) FROM resources WHERE id = ?1", "c1"),
        0
    );
    assert_eq!(
        count(&conn, "SELECT count(*) FROM resources WHERE id = ?1", "c2"),
        1
    );
    assert_eq!(
        count(
            &conn,
            "SELECT coalesce(sum(count), 0) FROM withheld WHERE patient_id = ?1",
            "p-zoe"
        ),
        2
    );
}

#[test]
fn patient_added_replaces_what_was_there() {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = open_cache(dir.path());
    apply(&mut conn, &first_page()).unwrap();
    // A new snapshot of Siân without the allergy, the flag and c2.
    apply(
        &mut conn,
        &page(
            "c2",
            false,
            vec![added(&sian(), vec![], vec![caseload("Review")])],
        ),
    )
    .unwrap();
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM resources WHERE patient_id = ?1",
            "p-sian"
        ),
        2,
        "only the Patient and Organization of the new snapshot"
    );
    let rows = queries::list(&conn, Some("sian"), day(2026, 1, 15), Utc::now()).unwrap();
    assert_eq!(rows.len(), 1);
    assert!(rows[0].alerts.is_empty(), "badges follow the new snapshot");
    assert_eq!(rows[0].reason, "Review");
}

#[test]
fn patient_removed_purges_every_row() {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = open_cache(dir.path());
    apply(&mut conn, &first_page()).unwrap();
    let stats = apply(
        &mut conn,
        &page(
            "c2",
            false,
            vec![Change::PatientRemoved {
                patient_id: "p-sian".into(),
            }],
        ),
    )
    .unwrap();
    assert_eq!(stats.patients_removed, 1);
    for sql in [
        "SELECT count(*) FROM patients WHERE id = ?1",
        "SELECT count(*) FROM resources WHERE patient_id = ?1",
        "SELECT count(*) FROM list_entries WHERE patient_id = ?1",
        "SELECT count(*) FROM withheld WHERE patient_id = ?1",
    ] {
        assert_eq!(count(&conn, sql, "p-sian"), 0, "{sql}");
    }
    // Zoë is untouched.
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM resources WHERE patient_id = ?1",
            "p-zoe"
        ),
        2
    );
    assert!(
        queries::record(&conn, "p-sian", day(2026, 1, 15))
            .unwrap()
            .is_none()
    );
    assert_eq!(
        cache::get_meta(&conn, meta::CURSOR).unwrap().as_deref(),
        Some("c2")
    );
}

fn patient_ids(conn: &Connection) -> Vec<String> {
    conn.prepare("SELECT id FROM patients ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<std::result::Result<_, _>>()
        .unwrap()
}

/// Regression (the review's sync fault): on a 410 the device emptied its cache before
/// rebuilding, so a drop in signal half-way left the nurse with an empty or half-full list.
/// The rebuild now runs beside the old copy, which stays readable until the last page.
#[test]
fn a_rebuild_keeps_the_old_copy_readable_until_it_completes() {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = open_cache(dir.path());
    conn.execute_batch(
        "INSERT INTO outbox (id, kind, patient_id, body, created_at, state)
         VALUES ('n1', 'note', 'p-zoe', 'note waiting to go up', '2026-01-15T08:30:00Z', 'waiting');",
    )
    .unwrap();
    apply(&mut conn, &first_page()).unwrap();
    cache::set_meta(&conn, meta::REFRESH_TOKEN, "r").unwrap();
    assert_eq!(patient_ids(&conn), ["p-sian", "p-zoe"]);

    let began = Utc.with_ymd_and_hms(2026, 1, 15, 9, 0, 0).unwrap();
    cache::begin_rebuild(&mut conn, began).unwrap();
    assert_eq!(cache::get_meta(&conn, meta::CURSOR).unwrap(), None);
    assert_eq!(cache::rebuilding_since(&conn).unwrap(), Some(began));
    assert_eq!(
        patient_ids(&conn),
        ["p-sian", "p-zoe"],
        "nothing is deleted when the rebuild begins"
    );

    // The first page of the rebuild brings Siân again; the signal drops before the rest.
    apply(
        &mut conn,
        &page(
            "r1",
            true,
            vec![added(&sian(), vec![], vec![caseload("A")])],
        ),
    )
    .unwrap();
    assert_eq!(
        patient_ids(&conn),
        ["p-sian", "p-zoe"],
        "Zoë is still readable"
    );
    // A second 410 half-way starts again, still counting from the first.
    cache::begin_rebuild(&mut conn, began + chrono::Duration::minutes(5)).unwrap();
    assert_eq!(cache::rebuilding_since(&conn).unwrap(), Some(began));
    apply(
        &mut conn,
        &page(
            "r1",
            true,
            vec![added(&sian(), vec![], vec![caseload("A")])],
        ),
    )
    .unwrap();

    // The last page brings John; whoever the rebuild did not bring goes, in that transaction.
    let stats = apply(
        &mut conn,
        &page(
            "r2",
            false,
            vec![added(&john(), vec![], vec![caseload("C")])],
        ),
    )
    .unwrap();
    assert_eq!(stats.patients_removed, 1);
    assert_eq!(patient_ids(&conn), ["p-john", "p-sian"]);
    for table in ["resources", "list_entries", "withheld"] {
        let zoe: i64 = conn
            .query_row(
                &format!("SELECT count(*) FROM {table} WHERE patient_id = 'p-zoe'"),
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(zoe, 0, "{table} keeps nothing of Zoë");
    }
    assert_eq!(cache::rebuilding_since(&conn).unwrap(), None);
    let seen: i64 = conn
        .query_row("SELECT count(*) FROM rebuild_seen", [], |r| r.get(0))
        .unwrap();
    assert_eq!(seen, 0);
    assert_eq!(
        cache::get_meta(&conn, meta::CURSOR).unwrap().as_deref(),
        Some("r2")
    );
    assert_eq!(
        cache::get_meta(&conn, meta::REFRESH_TOKEN)
            .unwrap()
            .as_deref(),
        Some("r"),
        "tokens survive a rebuild"
    );
    let kept: String = conn
        .query_row("SELECT body FROM outbox WHERE id = 'n1'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(kept, "note waiting to go up");
}

#[test]
fn search_by_name_nhs_number_postcode_and_birth_date() {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = open_cache(dir.path());
    apply(&mut conn, &first_page()).unwrap();
    apply(
        &mut conn,
        &page(
            "c2",
            false,
            vec![added(&john(), vec![], vec![caseload("Catheter")])],
        ),
    )
    .unwrap();
    let today = day(2026, 1, 15);
    let order = queries::list_order(&conn, today, Utc::now()).unwrap();
    let search = |q: &str| {
        let rows = queries::list(&conn, Some(q), today, Utc::now()).unwrap();
        // The screen's first rows (names searched in memory) are the whole list's (in SQL).
        let (first, total) =
            queries::list_first(&conn, &order, Some(q), 10, today, Utc::now()).unwrap();
        assert_eq!((&first, total), (&rows, rows.len()), "the screen's {q:?}");
        let mut n = names(&rows);
        n.sort();
        n
    };
    let sian_name = queries::list(&conn, Some("sian"), today, Utc::now()).unwrap()[0]
        .name
        .clone();
    assert!(sian_name.contains("Siân"), "{sian_name}");
    assert_eq!(search("sian").len(), 1);
    assert_eq!(search("SIÂN"), search("sian"));
    assert_eq!(search("siân ev").len(), 1);
    assert_eq!(search("evans"), search("sian"));
    assert_eq!(search("zoe").len(), 1);
    assert_eq!(search("obriain"), search("zoe"));
    assert_eq!(search("ó briain"), search("zoe"));
    // NHS number, with or without spaces, whole or its start.
    assert_eq!(search("999 000").len(), 2, "Siân and Zoë, not John");
    assert_eq!(search(&sian().nhs), search("sian"));
    let spaced = queries::nhs_display(&sian().nhs);
    assert_eq!(search(&spaced), search("sian"));
    // Postcode, with or without space, or its start.
    assert_eq!(search("ls1").len(), 2, "LS1 4AB and LS12 3XY");
    assert_eq!(search("LS1 4AB"), search("sian"));
    assert_eq!(search("ls14ab"), search("sian"));
    assert_eq!(
        search("LS1 4"),
        search("sian"),
        "the outward code is fixed by the space"
    );
    assert_eq!(search("m1"), search("john"));
    // A postcode area alone: LS finds the Leeds postcodes (and names with 'ls' in them).
    assert_eq!(search("ls").len(), 2, "LS1 and LS12");
    assert_eq!(search("m"), search("john"), "M1, and the m of Smith");
    assert!(search("l").is_empty(), "L is Liverpool, not Leeds (LS)");
    // Date of birth, UK order or ISO.
    assert_eq!(search("01/02/1950"), search("sian"));
    assert_eq!(search("1/2/1950"), search("sian"));
    assert_eq!(search("1950-02-01"), search("sian"));
    assert!(
        search("02/01/1950").is_empty(),
        "day first, not month first"
    );
    assert!(search("nobody").is_empty());
    assert_eq!(search("").len(), 3);
}

#[test]
fn list_rows_carry_badges_age_and_sort_today_first() {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = open_cache(dir.path());
    apply(&mut conn, &first_page()).unwrap();
    let today = chrono::Local::now().date_naive();
    let noon_today = chrono::Local
        .from_local_datetime(&today.and_hms_opt(12, 0, 0).unwrap())
        .earliest()
        .unwrap()
        .with_timezone(&Utc);
    let appointment = |at: DateTime<Utc>, reason: &str| ListEntry {
        kind: ListKind::Appointment,
        list_name: "Hub session".into(),
        reason: reason.into(),
        starts_at: at,
        ends_at: Some(at + Duration::hours(24)),
    };
    apply(
        &mut conn,
        &page(
            "c2",
            false,
            vec![
                added(
                    &john(),
                    vec![],
                    vec![
                        appointment(noon_today + Duration::days(3), "Later review"),
                        appointment(noon_today, "Chest pain follow-up"),
                    ],
                ),
                Change::ListChanged {
                    patient_id: "p-zoe".into(),
                    entries: vec![appointment(noon_today - Duration::hours(2), "Insulin")],
                },
            ],
        ),
    )
    .unwrap();
    let rows = queries::list(&conn, None, today, Utc::now()).unwrap();
    let order: Vec<&str> = rows.iter().map(|r| r.patient_id.as_str()).collect();
    assert_eq!(
        order,
        ["p-zoe", "p-john", "p-sian"],
        "today by time, then the caseload"
    );
    assert!(rows[0].today && rows[1].today && !rows[2].today);
    assert_eq!(
        rows[1].reason, "Chest pain follow-up",
        "today's entry is the one shown"
    );
    assert_eq!(rows[1].list_kind, "appointment");
    let row = &rows[2];
    assert_eq!(row.list_kind, "caseload");
    assert_eq!(row.alerts, ["DNACPR", "Allergies"]);
    assert_eq!(row.nhs_number_display, queries::nhs_display(&sian().nhs));
    assert_eq!(row.postcode.as_deref(), Some("LS1 4AB"));
    assert_eq!(row.practice_name, "Riverside Surgery");
    assert_eq!(row.age, queries::age_on(day(1950, 2, 1), today));
    assert!(rows[0].alerts.is_empty());

    // The screen's first rows of a long list: the list's first, in its order, built the same,
    // and how many there are in all.
    let order = queries::list_order(&conn, today, Utc::now()).unwrap();
    let (first, total) = queries::list_first(&conn, &order, None, 2, today, Utc::now()).unwrap();
    let ids: Vec<&str> = first.iter().map(|r| r.patient_id.as_str()).collect();
    assert_eq!((ids, total), (vec!["p-zoe", "p-john"], 3));
    assert_eq!(first[..], rows[..2]);
    let sian_nhs = sian().nhs;
    let (found, total) =
        queries::list_first(&conn, &order, Some(&sian_nhs), 5, today, Utc::now()).unwrap();
    assert_eq!((found.len(), total), (1, 1));
    assert_eq!(found[0], rows[2]);
    let (none, total) =
        queries::list_first(&conn, &order, Some("Zebedee"), 5, today, Utc::now()).unwrap();
    assert_eq!((none.len(), total), (0, 0));

    // Deleting the flag drops its badge at once.
    apply(
        &mut conn,
        &page(
            "c3",
            false,
            vec![Change::Delete {
                patient_id: "p-sian".into(),
                resource_type: "Flag".into(),
                resource_id: "f1".into(),
            }],
        ),
    )
    .unwrap();
    let rows = queries::list(&conn, Some("sian"), today, Utc::now()).unwrap();
    assert_eq!(rows[0].alerts, ["Allergies"]);
}

#[test]
fn record_has_views_withheld_counts_and_as_of() {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = open_cache(dir.path());
    apply(&mut conn, &first_page()).unwrap();
    let rec = queries::record(&conn, "p-sian", day(2026, 1, 15))
        .unwrap()
        .unwrap();
    assert_eq!(rec.view.patient.family.to_uppercase(), "EVANS");
    assert_eq!(rec.view.allergies.len(), 1);
    assert!(
        rec.view.allergies[0]
            .substance
            .to_lowercase()
            .contains("penicillin")
    );
    assert_eq!(rec.view.alerts.len(), 1);
    assert_eq!(rec.withheld.len(), 1);
    assert_eq!(rec.withheld[0].section, "problems");
    assert_eq!(rec.list_reason, "Leg ulcer dressing");
    assert_eq!(
        rec.as_of,
        Utc.with_ymd_and_hms(2026, 1, 15, 8, 0, 0).unwrap()
    );
    assert_eq!(
        queries::find_patient(&conn, &sian().nhs)
            .unwrap()
            .as_deref(),
        Some("p-sian")
    );
    assert!(
        queries::record(&conn, "nobody", day(2026, 1, 15))
            .unwrap()
            .is_none()
    );
}

#[test]
fn cache_file_is_encrypted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(files::CACHE_FILE);
    {
        let mut conn = open_cache(dir.path());
        apply(&mut conn, &first_page()).unwrap();
        // Half the check reads the WAL before a checkpoint, half the main file after.
        let mut raw = std::fs::read(&path).unwrap();
        raw.extend(std::fs::read(dir.path().join("cache.db-wal")).unwrap_or_default());
        assert_no_plaintext(&raw);
        conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
            .unwrap();
    }
    let raw = std::fs::read(&path).unwrap();
    assert!(raw.len() > 4096);
    assert_no_plaintext(&raw);
    assert!(!raw.starts_with(b"SQLite format 3"));

    // What the sqlite3 tool does: open without a key and read the schema.
    let plain = Connection::open(&path).unwrap();
    let err = plain
        .query_row("SELECT count(*) FROM sqlite_master", [], |r| {
            r.get::<_, i64>(0)
        })
        .unwrap_err();
    assert!(err.to_string().contains("file is not a database"), "{err}");

    // And another key does not open it either.
    assert!(matches!(
        cache::open(&path, &[8u8; 32]),
        Err(cache::OpenError::WrongKey)
    ));
}

fn assert_no_plaintext(raw: &[u8]) {
    let contains = |needle: &[u8]| raw.windows(needle.len()).any(|w| w == needle);
    for secret in [
        sian().nhs.as_bytes(),
        "Evans".as_bytes(),
        "EVANS".as_bytes(),
        "Siân".as_bytes(),
        "penicillin".as_bytes(),
        "Riverside".as_bytes(),
        "patients".as_bytes(),
    ] {
        assert!(
            !contains(secret),
            "{:?} is readable in the file",
            String::from_utf8_lossy(secret)
        );
    }
}

/// A data directory with an enrolment made by hand (no server), cheap KDF costs.
fn hand_enrolled(dir: &Path, pin: &str) {
    hand_enrolled_at(dir, pin, "https://127.0.0.1:9");
}

fn hand_enrolled_at(dir: &Path, pin: &str, server_url: &str) {
    let mut kdf = key::KdfParams::new_random().unwrap();
    kdf.m_kib = 1024;
    kdf.t = 1;
    let key = vault::new_cache_key().unwrap();
    let conn = cache::open(&dir.join(files::CACHE_FILE), &key)
        .map_err(|e| format!("{e:?}"))
        .unwrap();
    cache::set_meta(
        &conn,
        meta::USER,
        &serde_json::to_string(&UserInfo {
            username: "nurse.demo".into(),
            display_name: "Nia Nurse".into(),
            role: "nurse".into(),
            service: "Riverside District Nursing".into(),
        })
        .unwrap(),
    )
    .unwrap();
    store_tokens(
        &conn,
        &TokenResponse {
            access_token: "old-access".into(),
            access_expires_at: Utc::now() + Duration::minutes(10),
            refresh_token: "refresh-1".into(),
        },
    )
    .unwrap();
    let attempts_key = vault::new_attempts_key().unwrap();
    vault::write_failures(dir, &attempts_key, "dev-1", 0).unwrap();
    DeviceFile {
        format: files::DEVICE_FILE_FORMAT,
        server_url: server_url.into(),
        device_id: "dev-1".into(),
        username: "nurse.demo".into(),
        device_name: "test".into(),
        enrolled_at: Utc::now(),
        pinned_ca: false,
        vault: Some(vault::WrappedKey::wrap_with(kdf, &key, pin, "dev-1").unwrap()),
        attempts_key: Some(attempts_key),
        kdf: None,
        revoked_at: None,
    }
    .write(dir)
    .unwrap();
}

#[test]
fn wrong_pins_are_counted_five_demand_online_sign_in_and_ten_wipe() {
    let dir = tempfile::tempdir().unwrap();
    hand_enrolled(dir.path(), "246813");
    let device = Device::unlock(dir.path(), "246813").unwrap();
    assert_eq!(device.user().display_name, "Nia Nurse");
    drop(device);

    match Device::unlock(dir.path(), "111111") {
        Err(ClientError::WrongPin { remaining }) => assert_eq!(remaining, 4),
        other => panic!("expected WrongPin, got {other:?}"),
    }
    // A good PIN resets the count, across "restarts" (each unlock reads the files afresh).
    Device::unlock(dir.path(), "246813").unwrap();
    for i in 1..=5u32 {
        let e = Device::unlock(dir.path(), "000000").unwrap_err();
        if i < 5 {
            assert!(
                matches!(e, ClientError::WrongPin { remaining } if remaining == 5 - i),
                "{i}: {e:?}"
            );
            // The warning says what comes next.
            assert!(
                e.to_string().contains("password and authenticator code"),
                "{e}"
            );
        } else {
            assert!(
                matches!(e, ClientError::OnlineSignInRequired { wipe_in: 5 }),
                "{e:?}"
            );
        }
    }
    // Now even the right PIN is refused without an online sign-in, saying what to do.
    let e = Device::unlock(dir.path(), "246813").unwrap_err();
    assert!(matches!(
        e,
        ClientError::OnlineSignInRequired { wipe_in: 5 }
    ));
    assert_eq!(
        e.to_ipc().kind,
        doorstep_ipc::IpcErrorKind::OnlineSignInRequired
    );
    assert!(e.to_string().contains("Sign in online"));
    assert!(dir.path().join(files::CACHE_FILE).exists(), "not wiped yet");
}

/// After the online sign-in threshold, the remaining wrong PINs (tried after signing in
/// online) count on to the wipe: the cache and its WAL are deleted.
#[test]
fn the_tenth_wrong_pin_wipes_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    hand_enrolled(dir.path(), "246813");
    let _lock = vault::lock_attempts(dir.path()).unwrap();
    for i in 1..=10u32 {
        let e = Device::open_with_pin(dir.path(), "000000", true).unwrap_err();
        if i < 10 {
            assert!(
                matches!(
                    e,
                    ClientError::WrongPin { .. } | ClientError::OnlineSignInRequired { .. }
                ),
                "{i}: {e:?}"
            );
        } else {
            assert!(matches!(e, ClientError::CacheWiped), "{e:?}");
        }
    }
    drop(_lock);
    for name in ["cache.db", "cache.db-wal", "cache.db-shm"] {
        assert!(!dir.path().join(name).exists(), "{name} left behind");
    }
    // The right PIN opens nothing now, and says why.
    let e = Device::unlock(dir.path(), "246813").unwrap_err();
    assert!(
        matches!(e, ClientError::CacheWiped | ClientError::Internal(_)),
        "{e:?}"
    );
}

/// Regression (issue 9: the count lived in a plain file that deleting reset): deleting or
/// editing `pin-attempts.json` leaves no PIN guesses until an online sign-in.
#[test]
fn deleting_or_editing_the_count_gives_no_more_guesses() {
    let dir = tempfile::tempdir().unwrap();
    hand_enrolled(dir.path(), "246813");
    let _ = Device::unlock(dir.path(), "000000").unwrap_err();
    let _ = Device::unlock(dir.path(), "000001").unwrap_err();
    std::fs::remove_file(dir.path().join(files::PIN_ATTEMPTS_FILE)).unwrap();
    assert!(matches!(
        Device::unlock(dir.path(), "246813"),
        Err(ClientError::OnlineSignInRequired { .. })
    ));
    std::fs::write(
        dir.path().join(files::PIN_ATTEMPTS_FILE),
        r#"{"failures":0,"mac":"forged"}"#,
    )
    .unwrap();
    assert!(matches!(
        Device::unlock(dir.path(), "246813"),
        Err(ClientError::OnlineSignInRequired { .. })
    ));
}

/// Parallel wrong PINs count one by one: eight threads guessing at once use up exactly eight
/// attempts of the count, not one.
#[test]
fn parallel_wrong_pins_each_count() {
    let dir = tempfile::tempdir().unwrap();
    hand_enrolled(dir.path(), "246813");
    let path = dir.path().to_path_buf();
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let p = path.clone();
            std::thread::spawn(move || {
                let _lock = vault::lock_attempts(&p).unwrap();
                Device::open_with_pin(&p, &format!("99999{i}"), true).map(|_| ())
            })
        })
        .collect();
    for t in threads {
        assert!(t.join().unwrap().is_err());
    }
    let file = DeviceFile::read(&path).unwrap();
    assert_eq!(
        vault::read_failures(
            &path,
            file.attempts_key.as_deref().unwrap(),
            &file.device_id
        ),
        8
    );
}

#[test]
fn a_pin_change_rewraps_and_the_old_pin_no_longer_opens() {
    let dir = tempfile::tempdir().unwrap();
    hand_enrolled(dir.path(), "246813");
    let before = std::fs::read(dir.path().join(files::CACHE_FILE)).unwrap();
    let mut device = Device::unlock(dir.path(), "246813").unwrap();
    assert!(matches!(
        device.change_pin("246813", "123456"),
        Err(ClientError::Invalid(_))
    ));
    assert!(matches!(
        device.change_pin("000000", "975310"),
        Err(ClientError::WrongPin { .. })
    ));
    device.change_pin("246813", "975310").unwrap();
    drop(device);
    // The database was not re-encrypted: its first page is unchanged.
    let after = std::fs::read(dir.path().join(files::CACHE_FILE)).unwrap();
    assert_eq!(before[..4096], after[..4096]);
    assert!(matches!(
        Device::unlock(dir.path(), "246813"),
        Err(ClientError::WrongPin { .. })
    ));
    Device::unlock(dir.path(), "975310").unwrap();
}

/// The cache file cannot be read without the PIN: its bytes hold no SQLite header and none
/// of what was written, and the key is nowhere in the directory.
#[test]
fn the_cache_is_unreadable_without_the_pin() {
    let dir = tempfile::tempdir().unwrap();
    hand_enrolled(dir.path(), "246813");
    let bytes = std::fs::read(dir.path().join(files::CACHE_FILE)).unwrap();
    assert!(!bytes.starts_with(b"SQLite format 3"));
    assert!(!bytes.windows(9).any(|w| w == b"Nia Nurse"));
    let conn = rusqlite::Connection::open(dir.path().join(files::CACHE_FILE)).unwrap();
    assert!(
        conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r
            .get::<_, i64>(0))
            .is_err()
    );
    let file = DeviceFile::read(dir.path()).unwrap();
    let key = file
        .vault
        .as_ref()
        .unwrap()
        .unwrap("246813", &file.device_id)
        .unwrap()
        .unwrap();
    let key_hex = hex::encode(key.as_ref());
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let text = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(!text.windows(64).any(|w| w == key_hex.as_bytes()));
        assert!(!text.windows(32).any(|w| w == key.as_ref()));
    }
}

/// A device enrolled before the vault (format 1, the cache key derived from the PIN) opens
/// with its PIN and moves to a random wrapped key.
#[test]
fn a_format_1_device_is_upgraded_at_unlock() {
    let dir = tempfile::tempdir().unwrap();
    let mut kdf = key::KdfParams::new_random().unwrap();
    kdf.m_kib = 1024;
    kdf.t = 1;
    let conn = cache::open(
        &dir.path().join(files::CACHE_FILE),
        &kdf.derive("246813").unwrap(),
    )
    .map_err(|e| format!("{e:?}"))
    .unwrap();
    cache::set_meta(
        &conn,
        meta::USER,
        &serde_json::to_string(&UserInfo {
            username: "nurse.demo".into(),
            display_name: "Nia Nurse".into(),
            role: "nurse".into(),
            service: "Riverside District Nursing".into(),
        })
        .unwrap(),
    )
    .unwrap();
    drop(conn);
    std::fs::write(
        dir.path().join(files::DEVICE_FILE),
        serde_json::json!({"format": 1, "server_url": "https://127.0.0.1:9",
            "device_id": "dev-1", "username": "nurse.demo", "device_name": "old",
            "enrolled_at": Utc::now(), "pinned_ca": false, "kdf": kdf})
        .to_string(),
    )
    .unwrap();
    assert!(matches!(
        Device::unlock(dir.path(), "000000"),
        Err(ClientError::WrongPin { .. })
    ));
    let device = Device::unlock(dir.path(), "246813").unwrap();
    assert_eq!(device.user().display_name, "Nia Nurse");
    drop(device);
    let file = DeviceFile::read(dir.path()).unwrap();
    assert_eq!(file.format, files::DEVICE_FILE_FORMAT);
    assert!(file.kdf.is_none() && file.vault.is_some());
    // The old PIN-derived key no longer opens the cache; the PIN still does.
    assert!(matches!(
        cache::open(
            &dir.path().join(files::CACHE_FILE),
            &kdf.derive("246813").unwrap()
        ),
        Err(cache::OpenError::WrongKey)
    ));
    Device::unlock(dir.path(), "246813").unwrap();
}

/// The default costs are what the module docs say (the unlock time they take on this
/// machine is a benchmark figure, in BENCHMARKS.md, not a test).
#[test]
fn the_default_kdf_costs_are_at_least_64_mib_and_two_passes() {
    let kdf = key::KdfParams::new_random().unwrap();
    assert!(kdf.m_kib >= 64 * 1024 && kdf.t >= 2, "{kdf:?}");
    let started = Instant::now();
    let key = kdf.derive("246813").unwrap();
    eprintln!(
        "argon2id m={} MiB t={} p={}: {:?}",
        kdf.m_kib / 1024,
        kdf.t,
        kdf.p,
        started.elapsed()
    );
    assert_ne!(*key, [0u8; 32]);
}

#[test]
fn status_and_not_enrolled() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        Device::unlock(dir.path(), "2468"),
        Err(ClientError::NotEnrolled(_))
    ));
    hand_enrolled(dir.path(), "2468");
    let device = Device::unlock(dir.path(), "2468").unwrap();
    let status = device.status().unwrap();
    assert_eq!(status.patients, 0);
    assert_eq!(status.last_synced, None);
    assert_eq!(status.server_reachable, None);
    assert!(!status.syncing);
}

#[tokio::test]
async fn sync_against_no_server_records_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    hand_enrolled(dir.path(), "2468");
    let mut device = Device::unlock(dir.path(), "2468").unwrap();
    device.backoff = api::Backoff {
        attempts: 2,
        first_delay: std::time::Duration::from_millis(1),
        max_delay: std::time::Duration::from_millis(2),
    };
    // Port 9 (discard) on loopback: nothing listens, the connection is refused.
    let e = device.sync().await.unwrap_err();
    assert!(matches!(e, ClientError::Offline(_)), "{e:?}");
    let status = device.status().unwrap();
    assert_eq!(status.server_reachable, Some(false));
    assert!(status.last_error.is_some());
    assert!(!device.probe_server().await);
}

/// Scale: 10,000 cached patients, then searches of each kind. Their speed is a benchmark's
/// business (BENCHMARKS.md), not a test's: here only what they find is checked.
#[test]
fn search_over_ten_thousand_patients_finds_each_kind() {
    const GIVEN: &[&str] = &[
        "Siân", "Zoë", "John", "Mary", "Aled", "Niamh", "Oliver", "Amelia", "Mohammed", "Priya",
        "Rhys", "Eilidh", "Jack", "Grace", "Tomasz", "Chloé", "Dafydd", "Aoife", "Harry", "Isla",
    ];
    const FAMILY: &[&str] = &[
        "Evans",
        "Jones",
        "Ó Briain",
        "Smith",
        "Williams",
        "Patel",
        "Khan",
        "Taylor",
        "Brown",
        "Davies",
        "O'Neill",
        "Wilson",
        "Thomas",
        "Roberts",
        "Nowak",
        "Hughes",
        "MacLeod",
        "Wright",
        "Walker",
        "Green",
        "Hall",
        "Wood",
        "Clarke",
        "Lewis",
        "Morgan",
    ];
    const AREAS: &[&str] = &[
        "LS1", "LS12", "LS6", "M1", "M14", "CF10", "CF24", "BD7", "HX1",
    ];
    let dir = tempfile::tempdir().unwrap();
    let mut conn = open_cache(dir.path());
    let mut changes = Vec::new();
    let mut numbers = (999_000_000u64..).filter_map(nhs);
    for i in 0..10_000u64 {
        let p = TestPatient {
            id: format!("p{i}"),
            nhs: numbers.next().unwrap(),
            given: GIVEN[(i % GIVEN.len() as u64) as usize],
            family: FAMILY[((i / 7) % FAMILY.len() as u64) as usize],
            birth: ["1950-02-01", "1944-10-12", "1987-04-30", "1933-12-25"][(i % 4) as usize],
            postcode: "LS1 4AB",
        };
        let mut c = added(&p, vec![], vec![caseload("Visit")]);
        if let Change::PatientAdded { resources, .. } = &mut c {
            let area = AREAS[(i % AREAS.len() as u64) as usize];
            resources[0]["address"][0]["postalCode"] = json!(format!(
                "{area} {}{}{}",
                i % 10,
                (b'A' + (i % 26) as u8) as char,
                'B'
            ));
        }
        changes.push(c);
    }
    let started = Instant::now();
    for (n, chunk) in changes.chunks(500).enumerate() {
        apply(&mut conn, &page(&format!("c{n}"), true, chunk.to_vec())).unwrap();
    }
    eprintln!("10,000 patients applied in {:?}", started.elapsed());
    let today = day(2026, 1, 15);
    // Warm the page cache once, as the list screen does.
    let all = queries::list(&conn, None, today, Utc::now()).unwrap();
    assert_eq!(all.len(), 10_000);
    for q in [
        "sian",
        "o'neill",
        "999 000 01",
        "ls1",
        "LS1 4",
        "01/02/1950",
        "zz",
    ] {
        let started = Instant::now();
        let rows = queries::list(&conn, Some(q), today, Utc::now()).unwrap();
        let took = started.elapsed();
        eprintln!("search {q:>12}: {:>5} rows in {took:?}", rows.len());
        assert_eq!(
            rows.is_empty(),
            q == "zz",
            "search {q}: {} rows",
            rows.len()
        );
    }
    // The screen's first 200 and its count, with names searched in the list's order in
    // memory, against the whole searched list from SQL and against the generator's counts.
    let order = queries::list_order(&conn, today, Utc::now()).unwrap();
    let generated = |keep: &dyn Fn(u64) -> bool| (0..10_000u64).filter(|&i| keep(i)).count();
    let given = |name: &str| GIVEN.iter().position(|g| *g == name).unwrap() as u64;
    let family = |name: &str| FAMILY.iter().position(|f| *f == name).unwrap() as u64;
    let at_family = |i: u64, f: u64| (i / 7) % FAMILY.len() as u64 == f;
    let expected: [(&str, usize); 6] = [
        (
            "sian",
            generated(&|i| i % GIVEN.len() as u64 == given("Siân")),
        ),
        ("o'neill", generated(&|i| at_family(i, family("O'Neill")))),
        (
            "aled jon",
            generated(&|i| {
                i % GIVEN.len() as u64 == given("Aled") && at_family(i, family("Jones"))
            }),
        ),
        // LS1, LS12 and LS6, and the "ls" of Wilson.
        (
            "ls",
            generated(&|i| i % AREAS.len() as u64 <= 2 || at_family(i, family("Wilson"))),
        ),
        // LS12, and LS1 2.. (no space typed: the outward code is not fixed).
        (
            "ls12",
            generated(&|i| {
                let area = i % AREAS.len() as u64;
                area == 1 || (area == 0 && i % 10 == 2)
            }),
        ),
        ("zz", 0),
    ];
    for (q, count) in expected {
        let whole = queries::list(&conn, Some(q), today, Utc::now()).unwrap();
        let (first, total) =
            queries::list_first(&conn, &order, Some(q), 200, today, Utc::now()).unwrap();
        assert_eq!((total, whole.len()), (count, count), "search {q}");
        assert_eq!(
            first[..],
            whole[..count.min(200)],
            "search {q}: the first rows"
        );
    }
    let started = Instant::now();
    let rows = queries::list(&conn, Some("sian evans"), today, Utc::now()).unwrap();
    let took = started.elapsed();
    eprintln!("search   sian evans: {:>5} rows in {took:?}", rows.len());
    assert!(!rows.is_empty());
    assert!(
        rows.iter()
            .all(|r| r.name.contains("Siân") && r.name.to_uppercase().contains("EVANS"))
    );
}

/// The shell awaits these futures on a multi-threaded runtime: they must be `Send`.
#[allow(dead_code)]
fn futures_are_send(device: &Device) {
    fn is_send<T: Send>(_: T) {}
    fn is_sync<T: Send + Sync>() {}
    is_sync::<Device>();
    is_send(device.sync());
    is_send(device.probe_server());
    is_send(Device::enrol(
        Path::new("."),
        EnrolParams {
            server_url: String::new(),
            ca_pem_path: None,
            username: String::new(),
            password: Secret::default(),
            totp: Secret::default(),
            pin: Secret::default(),
            device_name: String::new(),
            dev_mode: false,
        },
    ));
}

/// A scripted HTTP/1.1 server on loopback: answers each request with the next scripted
/// response and records what it was asked. Plain HTTP is allowed for loopback hosts, so the
/// whole sync engine (tokens, retries, 410, gzip) runs against it without TLS.
mod fake_server {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    pub struct Scripted {
        pub status: u16,
        pub body: String,
        pub gzip: bool,
    }

    pub fn json(status: u16, body: impl serde::Serialize) -> Scripted {
        Scripted {
            status,
            body: serde_json::to_string(&body).unwrap(),
            gzip: false,
        }
    }

    pub fn gzipped(status: u16, body: impl serde::Serialize) -> Scripted {
        Scripted {
            gzip: true,
            ..json(status, body)
        }
    }

    /// One request as seen: `GET /api/v1/sync/pull?cursor=c1 bearer=new gzip=true`.
    pub type Log = Arc<Mutex<Vec<String>>>;

    pub async fn start(script: Vec<Scripted>) -> (String, Log) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let log: Log = Arc::default();
        let seen = log.clone();
        tokio::spawn(async move {
            for answer in script {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let head_end = loop {
                    let n = sock.read(&mut chunk).await.unwrap();
                    assert!(n > 0, "client closed early");
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                let header = |name: &str| {
                    head.lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
                        })
                        .unwrap_or_default()
                };
                let length: usize = header("content-length").parse().unwrap_or(0);
                while buf.len() < head_end + length {
                    let n = sock.read(&mut chunk).await.unwrap();
                    buf.extend_from_slice(&chunk[..n]);
                }
                let first = head.lines().next().unwrap_or_default();
                let target = first.rsplit_once(' ').map(|(t, _)| t).unwrap_or(first);
                seen.lock().unwrap().push(format!(
                    "{target} bearer={} gzip={}",
                    header("authorization").trim_start_matches("Bearer "),
                    header("accept-encoding").contains("gzip")
                ));
                let mut body = answer.body.into_bytes();
                let mut extra = String::new();
                if answer.gzip {
                    let mut enc =
                        flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                    enc.write_all(&body).unwrap();
                    body = enc.finish().unwrap();
                    extra.push_str("Content-Encoding: gzip\r\n");
                }
                let reply = format!(
                    "HTTP/1.1 {} X\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n",
                    answer.status,
                    body.len()
                );
                sock.write_all(reply.as_bytes()).await.unwrap();
                sock.write_all(&body).await.unwrap();
                sock.shutdown().await.ok();
            }
        });
        (url, log)
    }
}

fn quick_backoff() -> api::Backoff {
    api::Backoff {
        attempts: 3,
        first_delay: std::time::Duration::from_millis(1),
        max_delay: std::time::Duration::from_millis(4),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_refreshes_expired_tokens_retries_and_rebuilds_on_410() {
    use doorstep_protocol::{ApiError, ResyncReason, ResyncRequired};
    use fake_server::{gzipped, json};

    let tokens = TokenResponse {
        access_token: "new-access".into(),
        access_expires_at: Utc::now() + Duration::minutes(15),
        refresh_token: "refresh-2".into(),
    };
    let expired = ApiError {
        code: "token_expired".into(),
        message: "the access token has expired".into(),
    };
    let unavailable = ApiError {
        code: "internal".into(),
        message: "try later".into(),
    };
    let script = vec![
        // Sync 1: expired token, refresh, page 1, a 503 (retried), page 2.
        json(401, &expired),
        json(200, &tokens),
        gzipped(
            200,
            page(
                "c1",
                true,
                vec![added(&sian(), vec![], vec![caseload("A")])],
            ),
        ),
        json(503, &unavailable),
        gzipped(
            200,
            page(
                "c2",
                false,
                vec![added(&zoe(), vec![], vec![caseload("B")])],
            ),
        ),
        // Sync 2: the server's view changed: 410, then everything again from no cursor.
        json(
            410,
            ResyncRequired {
                reason: ResyncReason::AccessChanged,
                message: "your roles changed".into(),
            },
        ),
        gzipped(
            200,
            page(
                "c3",
                false,
                vec![added(&john(), vec![], vec![caseload("C")])],
            ),
        ),
        // Sync 3: the device was revoked (the real server's answer: 403 device_revoked).
        json(
            403,
            ApiError {
                code: "device_revoked".into(),
                message: "This device was revoked by an administrator.".into(),
            },
        ),
    ];
    let (url, log) = fake_server::start(script).await;
    let dir = tempfile::tempdir().unwrap();
    hand_enrolled_at(dir.path(), "2468", &url);
    let mut device = Device::unlock(dir.path(), "2468").unwrap();
    device.backoff = quick_backoff();

    let report = device.sync().await.unwrap();
    assert_eq!(report.pages, 2);
    assert_eq!(report.patients_added, 2);
    assert_eq!(report.patients, 2);
    assert!(!report.rebuilt);
    assert_eq!(
        *log.lock().unwrap(),
        [
            "GET /api/v1/sync/pull bearer=old-access gzip=true",
            "POST /api/v1/auth/refresh bearer= gzip=true",
            "GET /api/v1/sync/pull bearer=new-access gzip=true",
            "GET /api/v1/sync/pull?cursor=c1 bearer=new-access gzip=true",
            "GET /api/v1/sync/pull?cursor=c1 bearer=new-access gzip=true",
        ]
    );
    let stored_refresh = device
        .with_conn(|c| cache::get_meta(c, meta::REFRESH_TOKEN))
        .unwrap();
    assert_eq!(
        stored_refresh.as_deref(),
        Some("refresh-2"),
        "rotated token kept"
    );
    let status = device.status().unwrap();
    assert_eq!(status.server_reachable, Some(true));
    assert!(status.last_synced.is_some());
    assert_eq!(status.last_error, None);

    let report = device.sync().await.unwrap();
    assert!(report.rebuilt);
    let ids: Vec<String> = device
        .list(None, day(2026, 1, 15))
        .unwrap()
        .into_iter()
        .map(|r| r.patient_id)
        .collect();
    assert_eq!(
        ids,
        ["p-john"],
        "after the rebuild the cache is exactly the server's view"
    );
    assert_eq!(
        log.lock().unwrap()[5..],
        [
            "GET /api/v1/sync/pull?cursor=c2 bearer=new-access gzip=true",
            "GET /api/v1/sync/pull bearer=new-access gzip=true",
        ]
    );

    device.write_note("p-john", note("seen at home")).unwrap();
    let e = device.sync().await.unwrap_err();
    assert!(matches!(e, ClientError::DeviceRevoked), "{e:?}");
    assert_revoked_and_wiped(&device, dir.path());
}

/// After a 403 `device_revoked`: the cache (records, tokens, outbox) is gone from disk, the
/// open device answers nothing more, and every unlock says why.
fn assert_revoked_and_wiped(device: &Device, dir: &Path) {
    for name in ["cache.db", "cache.db-wal", "cache.db-shm"] {
        assert!(!dir.join(name).exists(), "{name} is left after the wipe");
    }
    let e = device.list(None, day(2026, 1, 15)).unwrap_err();
    assert_eq!(e.to_ipc().kind, doorstep_ipc::IpcErrorKind::DeviceRevoked);
    assert!(matches!(device.status(), Err(ClientError::DeviceRevoked)));
    assert!(DeviceFile::read(dir).unwrap().revoked_at.is_some());
    let e = Device::unlock(dir, "2468").unwrap_err();
    assert!(matches!(e, ClientError::DeviceRevoked), "{e:?}");
    assert_eq!(
        e.to_string(),
        "This device was revoked by your service; its records were removed, with any notes \
         written on it that had not been sent. Ask your service before enrolling it again."
    );
    // Nothing of a patient in what is left.
    for entry in std::fs::read_dir(dir).unwrap() {
        let raw = std::fs::read(entry.unwrap().path()).unwrap_or_default();
        assert_no_plaintext(&raw);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_device_wipes_at_a_refresh_a_push_and_a_reauth() {
    use doorstep_protocol::ApiError;
    use fake_server::json;

    let revoked = || {
        json(
            403,
            ApiError {
                code: "device_revoked".into(),
                message: "this device has been revoked".into(),
            },
        )
    };
    let expired = ApiError {
        code: "token_expired".into(),
        message: "the access token has expired".into(),
    };
    // The refresh: the access token expired and the refresh is refused.
    let (device, _log, dir) = device_with_two_patients(vec![json(401, &expired), revoked()]).await;
    let e = device.sync().await.unwrap_err();
    assert!(matches!(e, ClientError::DeviceRevoked), "{e:?}");
    assert_revoked_and_wiped(&device, dir.path());

    // The push of a waiting note (the pull after it is not even tried).
    let (device, log, dir) = device_with_two_patients(vec![revoked()]).await;
    device.write_note("p-sian", note("seen")).unwrap();
    let e = device.push().await.unwrap_err();
    assert!(matches!(e, ClientError::DeviceRevoked), "{e:?}");
    assert_eq!(
        log.lock().unwrap().len(),
        2,
        "the first sync, then the push"
    );
    assert_revoked_and_wiped(&device, dir.path());

    // The online sign-in after too many wrong PINs.
    let (device, _log, dir) = device_with_two_patients(vec![revoked()]).await;
    drop(device);
    let e = Device::unlock_after_sign_in(dir.path(), "2468", "pw", "123456")
        .await
        .unwrap_err();
    assert!(matches!(e, ClientError::DeviceRevoked), "{e:?}");
    assert!(!dir.path().join("cache.db").exists());
    assert!(matches!(
        Device::unlock(dir.path(), "2468"),
        Err(ClientError::DeviceRevoked)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrol_stores_tokens_and_maps_refusals() {
    use doorstep_protocol::{ApiError, EnrolResponse};
    use fake_server::json;

    let refused = ApiError {
        code: "bad_credentials".into(),
        message: "Wrong user name, password or code.".into(),
    };
    let accepted = EnrolResponse {
        device_id: "dev-42".into(),
        user: UserInfo {
            username: "nurse.demo".into(),
            display_name: "Nia Nurse".into(),
            role: "nurse".into(),
            service: "Riverside District Nursing".into(),
        },
        tokens: TokenResponse {
            access_token: "a1".into(),
            access_expires_at: Utc::now() + Duration::minutes(15),
            refresh_token: "r1".into(),
        },
    };
    let (url, log) = fake_server::start(vec![json(401, &refused), json(200, &accepted)]).await;
    let dir = tempfile::tempdir().unwrap();
    let params = EnrolParams {
        server_url: url.clone(),
        ca_pem_path: None,
        username: "nurse.demo".into(),
        password: "pw".into(),
        totp: "123 456".into(),
        pin: "246813".into(),
        device_name: "test laptop".into(),
        // The fake server speaks plain http, with no CA to pin.
        dev_mode: true,
    };
    let shown = format!("{params:?}");
    assert!(
        !shown.contains("\"pw\"") && !shown.contains("123 456") && !shown.contains("246813"),
        "Debug of the enrolment shows a secret: {shown}"
    );
    let e = Device::enrol(dir.path(), params.clone()).await.unwrap_err();
    assert!(
        matches!(&e, ClientError::SignInFailed(m) if m == "Wrong user name, password or code.")
    );
    assert!(
        !is_enrolled(dir.path()),
        "a refused sign-in leaves nothing behind"
    );

    // Wrong shapes never reach the server.
    for bad in [
        EnrolParams {
            pin: "12".into(),
            ..params.clone()
        },
        EnrolParams {
            totp: "12345".into(),
            ..params.clone()
        },
        EnrolParams {
            server_url: "http://fed.example".into(),
            ..params.clone()
        },
        EnrolParams {
            username: " ".into(),
            ..params.clone()
        },
    ] {
        let e = Device::enrol(dir.path(), bad).await.unwrap_err();
        assert_eq!(e.to_ipc().kind, doorstep_ipc::IpcErrorKind::Invalid, "{e}");
    }
    // Outside development mode: no enrolment without a pinned CA, nor over plain http.
    let e = Device::enrol(
        dir.path(),
        EnrolParams {
            dev_mode: false,
            ..params.clone()
        },
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&e, ClientError::Invalid(m) if m.contains("CA certificate (--ca FILE)") && m.contains("--insecure-dev")),
        "{e:?}"
    );
    let ca = dir.path().join("some-ca.pem");
    std::fs::write(&ca, "not used").unwrap();
    let e = Device::enrol(
        dir.path(),
        EnrolParams {
            dev_mode: false,
            ca_pem_path: Some(ca.clone()),
            ..params.clone()
        },
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&e, ClientError::Invalid(m) if m.contains("Plain http")),
        "{e:?}"
    );
    std::fs::remove_file(&ca).unwrap();
    assert_eq!(
        log.lock().unwrap().len(),
        1,
        "none of these reached the server"
    );

    let device = Device::enrol(dir.path(), params).await.unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "the data directory is private");
    }
    assert_eq!(device.user().display_name, "Nia Nurse");
    assert_eq!(log.lock().unwrap().len(), 2);
    drop(device);
    let file = DeviceFile::read(dir.path()).unwrap();
    assert_eq!(file.device_id, "dev-42");
    assert_eq!(file.server_url, url);
    assert!(!file.pinned_ca);
    let text = std::fs::read_to_string(dir.path().join(files::DEVICE_FILE)).unwrap();
    assert!(!text.contains("\"r1\"") && !text.contains("\"a1\""));
    let device = Device::unlock(dir.path(), "246813").unwrap();
    let refresh = device
        .with_conn(|c| cache::get_meta(c, meta::REFRESH_TOKEN))
        .unwrap();
    assert_eq!(refresh.as_deref(), Some("r1"));
}

/// Scale of the initial sync, device side: synthetic patients of ~100 resources each, in pages
/// of ~1 MB as the server sends them, applied and then read back as records.
#[test]
fn applying_a_synthetic_caseload() {
    use doorstep_record::synthetic::{FederationSpec, generate};
    let spec = FederationSpec {
        seed: 3,
        practices: 2,
        patients_per_practice: 50,
        resources_per_patient: 100,
        today: day(2026, 1, 15),
    };
    let federation = generate(&spec);
    let mut changes = Vec::new();
    let mut resource_count = 0;
    for (patient, bundle) in federation.patients.iter().zip(&federation.bundles) {
        let resources: Vec<Value> = bundle["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["resource"].clone())
            .collect();
        resource_count += resources.len();
        let practice = federation
            .practices
            .iter()
            .find(|p| p.ods == patient.practice_ods)
            .unwrap();
        changes.push(Change::PatientAdded {
            patient: PatientHeader {
                patient_id: patient.patient_id.clone(),
                nhs_number: patient.nhs_number.digits().to_owned(),
                registered_practice_ods: practice.ods.clone(),
                registered_practice_name: practice.name.clone(),
                birth_date: None,
            },
            entries: vec![caseload("Visit")],
            resources,
            withheld: vec![],
        });
    }
    // Pages of about 1 MB of JSON, as the server bounds them.
    let mut pages = Vec::new();
    let mut current = Vec::new();
    let mut bytes = 0;
    for c in changes {
        bytes += serde_json::to_vec(&c).unwrap().len();
        current.push(c);
        if bytes > 1 << 20 {
            pages.push(std::mem::take(&mut current));
            bytes = 0;
        }
    }
    pages.push(current);
    let n_pages = pages.len();

    // The bodies as they come off the wire (after gzip).
    let bodies: Vec<Vec<u8>> = pages
        .into_iter()
        .enumerate()
        .map(|(i, changes)| {
            serde_json::to_vec(&page(&format!("c{i}"), i + 1 < n_pages, changes)).unwrap()
        })
        .collect();

    let dir = tempfile::tempdir().unwrap();
    let mut conn = open_cache(dir.path());
    let started = Instant::now();
    for body in &bodies {
        cache::apply_page(&mut conn, &wire::Page::from_json(body).unwrap()).unwrap();
    }
    let took = started.elapsed();
    eprintln!(
        "applied {} patients, {resource_count} resources in {n_pages} pages: {took:?} ({:.0} resources/s)",
        federation.patients.len(),
        resource_count as f64 / took.as_secs_f64()
    );
    assert!(resource_count >= 100 * 80, "{resource_count}");
    assert_eq!(queries::patient_count(&conn).unwrap(), 100);

    let rows = queries::list(&conn, None, spec.today, noon(spec.today)).unwrap();
    let started = Instant::now();
    for row in &rows {
        let rec = queries::record(&conn, &row.patient_id, spec.today)
            .unwrap()
            .unwrap();
        assert_eq!(
            rec.view.patient.nhs_number.as_deref(),
            Some(row.nhs_number.as_str())
        );
        assert!(!row.name.is_empty() && row.name != "(no name)");
    }
    eprintln!("built 100 records in {:?}", started.elapsed());
    // The generator's alerts and allergies show up as badges.
    assert!(
        rows.iter()
            .any(|r| r.alerts.iter().any(|a| a == "Allergies"))
    );
    // Searching a generated patient by the name, postcode and birth date the list shows.
    let r = &rows[0];
    let family = r.name.split(',').next().unwrap();
    assert!(
        queries::list(&conn, Some(family), spec.today, noon(spec.today))
            .unwrap()
            .iter()
            .any(|x| x.patient_id == r.patient_id)
    );
    if let Some(pc) = &r.postcode {
        assert!(
            queries::list(&conn, Some(pc), spec.today, noon(spec.today))
                .unwrap()
                .iter()
                .any(|x| x.patient_id == r.patient_id)
        );
    }
    if let Some(b) = r.birth_date {
        let q = b.format("%d/%m/%Y").to_string();
        assert!(
            queries::list(&conn, Some(&q), spec.today, noon(spec.today))
                .unwrap()
                .iter()
                .any(|x| x.patient_id == r.patient_id)
        );
    }
}

/// A device with Siân and Zoë cached, against a scripted server whose first answer is the pull
/// that brought them.
async fn device_with_two_patients(
    script: Vec<fake_server::Scripted>,
) -> (Device, fake_server::Log, tempfile::TempDir) {
    let mut all = vec![fake_server::gzipped(200, first_page())];
    all.extend(script);
    let (url, log) = fake_server::start(all).await;
    let dir = tempfile::tempdir().unwrap();
    hand_enrolled_at(dir.path(), "2468", &url);
    let mut device = Device::unlock(dir.path(), "2468").unwrap();
    device.backoff = quick_backoff();
    device.sync().await.unwrap();
    (device, log, dir)
}

fn note(text: &str) -> NoteInput {
    NoteInput {
        text: text.into(),
        ..NoteInput::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_note_waits_goes_up_before_the_pull_and_takes_the_servers_answer() {
    use doorstep_protocol::{FirstOutcome, PushOutcome, PushResponse, PushResult};
    use fake_server::{gzipped, json};
    let at = Utc.with_ymd_and_hms(2026, 1, 15, 9, 0, 0).unwrap();
    // The ids are made on the device; the scripted answers name them by position below.
    let answers = |ids: &[String], outcomes: Vec<PushOutcome>| PushResponse {
        results: ids
            .iter()
            .zip(outcomes)
            .map(|(id, outcome)| PushResult {
                id: id.clone(),
                outcome,
            })
            .collect(),
    };
    let (device, log, _dir) = device_with_two_patients(vec![]).await;
    let first = device
        .write_note(
            "p-sian",
            NoteInput {
                text: "Leg ulcer redressed; healing well.".into(),
                vitals: Some(json!({"rr": 18, "spo2": 96, "pulse": 131, "acvpu": "A"})),
                problem: Some("399912005".into()),
                replaces: None,
            },
        )
        .unwrap();
    assert_eq!(first.state, doorstep_ipc::NoteState::Waiting);
    // Pulse 131 scores 3, the rest 0: a single 3, from an incomplete set.
    assert!(
        first
            .news2
            .as_deref()
            .unwrap()
            .starts_with("NEWS2 3, partial"),
        "{:?}",
        first.news2
    );
    assert_eq!(first.problem.as_deref(), Some("399912005 Pressure ulcer"));
    assert_eq!(device.status().unwrap().waiting, 1);
    drop(log);

    // A second server for the next syncs, scripted with the ids now known.
    let second = device
        .write_note("p-zoe", note("Visit declined by patient."))
        .unwrap();
    let third = device
        .write_note("p-zoe", note("Phoned: visit rebooked."))
        .unwrap();
    let ids = [first.id.clone(), second.id.clone(), third.id.clone()];
    let script = vec![
        json(
            200,
            answers(
                &ids,
                vec![
                    PushOutcome::Accepted { accepted_at: at },
                    PushOutcome::Rejected {
                        reason: "the patient is no longer on your list".into(),
                    },
                    PushOutcome::Duplicate {
                        first: FirstOutcome::Accepted { accepted_at: at },
                    },
                ],
            ),
        ),
        gzipped(200, page("c2", false, vec![])),
        // Sync 2: nothing waits, so no push; only the pull.
        gzipped(200, page("c3", false, vec![])),
    ];
    let (url, log) = fake_server::start(script).await;
    let device = repoint(device, &url);
    let report = device.sync().await.unwrap();
    assert_eq!((report.pushed.accepted, report.pushed.rejected), (2, 1));
    assert_eq!(report.pushed.waiting, 0);
    assert_eq!(
        log.lock().unwrap()[..2],
        [
            "POST /api/v1/sync/push bearer=old-access gzip=true",
            "GET /api/v1/sync/pull?cursor=c1 bearer=old-access gzip=true",
        ]
    );
    let states: std::collections::HashMap<String, doorstep_ipc::NoteState> = device
        .notes(None)
        .unwrap()
        .into_iter()
        .map(|n| (n.id, n.state))
        .collect();
    assert_eq!(states[&first.id], doorstep_ipc::NoteState::Accepted { at });
    assert_eq!(
        states[&second.id],
        doorstep_ipc::NoteState::Rejected {
            reason: "the patient is no longer on your list".into()
        }
    );
    assert_eq!(states[&third.id], doorstep_ipc::NoteState::Accepted { at });
    assert_eq!(device.status().unwrap().waiting, 0);
    device.sync().await.unwrap();
    assert_eq!(log.lock().unwrap().len(), 3, "{:?}", log.lock().unwrap());
}

/// The device pointed at another server address (the scripted server of the next step).
fn repoint(device: Device, url: &str) -> Device {
    let dir = device.dir().to_path_buf();
    drop(device);
    let mut file = files::DeviceFile::read(&dir).unwrap();
    file.server_url = url.to_string();
    file.write(&dir).unwrap();
    let mut device = Device::unlock(&dir, "2468").unwrap();
    device.backoff = quick_backoff();
    device
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_the_note_stays_waiting_and_the_push_error_is_kept() {
    let (device, _log, _dir) = device_with_two_patients(vec![]).await;
    let written = device.write_note("p-sian", note("Bloods taken.")).unwrap();
    // The scripted server has no answers left: it is gone.
    let device = repoint(device, "http://127.0.0.1:9");
    assert!(device.sync().await.is_err());
    let status = device.status().unwrap();
    assert_eq!(status.waiting, 1);
    assert!(status.last_push_error.is_some(), "{status:?}");
    assert_eq!(device.notes(None).unwrap()[0].id, written.id);
    assert_eq!(
        device.notes(None).unwrap()[0].state,
        doorstep_ipc::NoteState::Waiting
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_server_could_only_refuse_is_never_signed() {
    let (device, _log, _dir) = device_with_two_patients(vec![]).await;
    let refused = |input: NoteInput, patient: &str| match device.write_note(patient, input) {
        Err(e) => e.to_string(),
        Ok(n) => panic!("signed {n:?}"),
    };
    assert!(refused(note("   "), "p-sian").contains("needs text"));
    assert!(refused(note("Seen."), "p-nobody").contains("not on this device"));
    let bad_vitals = NoteInput {
        vitals: Some(json!({"rr": 0, "pulse": 80})),
        ..note("x")
    };
    let message = refused(bad_vitals, "p-sian");
    assert!(message.contains("respiratory rate"), "{message}");
    let unknown_field = NoteInput {
        vitals: Some(json!({"heart": 80})),
        ..note("x")
    };
    assert!(refused(unknown_field, "p-sian").contains("heart"));
    let unlisted = NoteInput {
        problem: Some("12345".into()),
        ..note("x")
    };
    assert!(refused(unlisted, "p-sian").contains("pick list"));
    // An amendment names a note of the same patient.
    let sian = device.write_note("p-sian", note("First visit.")).unwrap();
    let wrong = NoteInput {
        replaces: Some(sian.id.clone()),
        ..note("Amended")
    };
    assert!(refused(wrong, "p-zoe").contains("not a note of this patient"));
    let amended = device
        .write_note(
            "p-sian",
            NoteInput {
                replaces: Some(sian.id.clone()),
                ..note("First visit (corrected).")
            },
        )
        .unwrap();
    assert_eq!(amended.replaces.as_deref(), Some(sian.id.as_str()));
    // The earlier note is kept as it was signed.
    let notes = device.notes(Some("p-sian")).unwrap();
    assert_eq!(notes.len(), 2);
    assert!(
        notes
            .iter()
            .any(|n| n.id == sian.id && n.text == "First visit.")
    );
    assert_eq!(device.status().unwrap().waiting, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draft_survives_a_lock_and_goes_with_its_note() {
    let (device, _log, dir) = device_with_two_patients(vec![]).await;
    device.save_draft("p-sian", "Dressing changed, ").unwrap();
    drop(device); // the lock: the database is closed and the key gone
    let device = Device::unlock(dir.path(), "2468").unwrap();
    assert_eq!(
        device.draft("p-sian").unwrap().as_deref(),
        Some("Dressing changed, ")
    );
    device
        .write_note("p-sian", note("Dressing changed, wound clean."))
        .unwrap();
    assert_eq!(device.draft("p-sian").unwrap(), None);
    // The draft is in the encrypted file: nothing of it is readable without the key.
    device
        .save_draft("p-zoe", "Zoë: new confusion noted")
        .unwrap();
    drop(device);
    for name in [files::CACHE_FILE, "cache.db-wal"] {
        let bytes = std::fs::read(dir.path().join(name)).unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains("new confusion"),
            "{name} holds the draft in clear"
        );
    }
}

/// Noon UTC on `d`: a `now` inside the day the generator writes its list entries for.
fn noon(d: NaiveDate) -> chrono::DateTime<Utc> {
    d.and_hms_opt(12, 0, 0).unwrap().and_utc()
}

/// Least data: an appointment that ended an hour ago, with the device offline since before it
/// ended (no sync has purged the patient yet), is no longer on the list; the patient with a
/// current entry and the caseload patient are.
#[test]
fn an_entry_that_has_ended_is_not_listed_even_offline() {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = open_cache(dir.path());
    apply(&mut conn, &first_page()).unwrap();
    let now = Utc.with_ymd_and_hms(2026, 1, 15, 15, 0, 0).unwrap();
    let appointment = |starts: chrono::DateTime<Utc>, ends: chrono::DateTime<Utc>| ListEntry {
        kind: ListKind::Appointment,
        list_name: "Hub session".into(),
        reason: "Review".into(),
        starts_at: starts,
        ends_at: Some(ends),
    };
    apply(
        &mut conn,
        &page(
            "c2",
            false,
            vec![
                added(
                    &john(),
                    vec![],
                    vec![appointment(
                        now - Duration::hours(25),
                        now - Duration::hours(1),
                    )],
                ),
                Change::ListChanged {
                    patient_id: "p-zoe".into(),
                    entries: vec![appointment(
                        now - Duration::hours(2),
                        now + Duration::hours(22),
                    )],
                },
            ],
        ),
    )
    .unwrap();
    let ids = |rows: Vec<doorstep_ipc::ListRow>| {
        let mut ids: Vec<String> = rows.into_iter().map(|r| r.patient_id).collect();
        ids.sort();
        ids
    };
    let today = now.date_naive();
    assert_eq!(
        ids(queries::list(&conn, None, today, now).unwrap()),
        ["p-sian", "p-zoe"]
    );
    assert!(
        queries::list(&conn, Some("john"), today, now)
            .unwrap()
            .is_empty(),
        "search does not find him either"
    );
    // Two hours earlier his appointment was still running.
    assert_eq!(
        ids(queries::list(&conn, None, today, now - Duration::hours(2)).unwrap()),
        ["p-john", "p-sian", "p-zoe"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_or_gzip_bomb_page_is_refused_and_the_cache_unchanged() {
    use fake_server::Scripted;

    // 40 MiB of JSON (past the 32 MiB cap), sent as a gzip of about 40 KiB, then plain.
    let huge = format!(
        "{{\"cursor\":\"bomb\",\"more\":false,\"pad\":\"{}\"}}",
        " ".repeat(40 << 20)
    );
    let bomb = Scripted {
        status: 200,
        body: huge.clone(),
        gzip: true,
    };
    let plain = Scripted {
        status: 200,
        body: huge,
        gzip: false,
    };
    let (device, _log, _dir) = device_with_two_patients(vec![bomb, plain]).await;
    let before = device.with_conn(|c| Ok(dump(c))).unwrap();
    let cursor = device
        .with_conn(|c| cache::get_meta(c, meta::CURSOR))
        .unwrap();
    for sent in ["gzip", "plain"] {
        let e = device.sync().await.unwrap_err();
        assert!(
            matches!(e, ClientError::AnswerTooLarge { limit } if limit == api::MAX_PAGE_BYTES),
            "{sent}: {e:?}"
        );
        assert!(e.to_string().contains("32 MiB at most"), "{e}");
        assert_eq!(device.with_conn(|c| Ok(dump(c))).unwrap(), before, "{sent}");
        assert_eq!(
            device
                .with_conn(|c| cache::get_meta(c, meta::CURSOR))
                .unwrap(),
            cursor
        );
    }
}

/// The list's order is kept between calls (it costs a pass over every patient), and it is
/// worked out again the moment an entry on it ends: the screen's first rows and its count
/// drop the patient at their entry's end, not a minute or a sync later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kept_list_order_drops_a_patient_the_moment_their_entry_ends() {
    use fake_server::gzipped;
    use std::sync::{Arc, Mutex};

    // Whole seconds: the cache keeps times to the millisecond.
    let start = Utc.timestamp_opt(Utc::now().timestamp(), 0).unwrap();
    let ends = start + Duration::seconds(20);
    let mut first = first_page();
    first.changes.push(added(
        &john(),
        vec![],
        vec![ListEntry {
            kind: ListKind::Appointment,
            list_name: "Hub session".into(),
            reason: "Review".into(),
            starts_at: start - Duration::hours(1),
            ends_at: Some(ends),
        }],
    ));
    let (url, _log) = fake_server::start(vec![gzipped(200, first)]).await;
    let dir = tempfile::tempdir().unwrap();
    hand_enrolled_at(dir.path(), "2468", &url);
    let now = Arc::new(Mutex::new(start));
    let clock = {
        let now = now.clone();
        move || *now.lock().unwrap()
    };
    let mut device = Device::unlock(dir.path(), "2468")
        .unwrap()
        .with_clock(clock);
    device.backoff = quick_backoff();
    device.sync().await.unwrap();
    let today = start.with_timezone(&chrono::Local).date_naive();
    let shown = |search: Option<&str>| {
        let page = device.list_page(search, today, Some(200)).unwrap();
        let mut ids: Vec<String> = page.rows.into_iter().map(|r| r.patient_id).collect();
        ids.sort();
        (ids, page.total)
    };
    let all = |ids: &[&str]| {
        (
            ids.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            ids.len() as u32,
        )
    };
    assert_eq!(shown(None), all(&["p-john", "p-sian", "p-zoe"]));
    *now.lock().unwrap() = ends - Duration::milliseconds(1);
    assert_eq!(shown(None), all(&["p-john", "p-sian", "p-zoe"]));
    assert_eq!(shown(Some("john")), all(&["p-john"]));
    *now.lock().unwrap() = ends;
    assert_eq!(shown(None), all(&["p-sian", "p-zoe"]), "ended at {ends}");
    assert_eq!(shown(Some("john")), all(&[]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_offline_age_no_record_shows_until_a_sync_or_an_online_sign_in() {
    use doorstep_protocol::{PushOutcome, PushResponse, PushResult};
    use fake_server::{gzipped, json};
    use std::sync::{Arc, Mutex};

    let limited = |cursor: &str, changes| PullPage {
        max_offline_hours: Some(12),
        ..page(cursor, false, changes)
    };
    let mut first = first_page();
    first.max_offline_hours = Some(12);
    let (url, _log) = fake_server::start(vec![gzipped(200, first)]).await;
    let dir = tempfile::tempdir().unwrap();
    hand_enrolled_at(dir.path(), "2468", &url);
    // Whole seconds: the cache keeps times to the millisecond.
    let start = Utc.timestamp_opt(Utc::now().timestamp(), 0).unwrap();
    let now = Arc::new(Mutex::new(start));
    let clock = {
        let now = now.clone();
        move || *now.lock().unwrap()
    };
    let advance = |by: Duration| *now.lock().unwrap() += by;
    let mut device = Device::unlock(dir.path(), "2468")
        .unwrap()
        .with_clock(clock.clone());
    device.backoff = quick_backoff();
    device.sync().await.unwrap();
    let contact = *now.lock().unwrap();
    let today = day(2026, 1, 15);
    assert_eq!(device.list(None, today).unwrap().len(), 2);

    // Up to the limit the records show; a second past it, neither list nor record.
    advance(Duration::hours(12));
    assert!(device.record("p-sian", today).unwrap().is_some());
    advance(Duration::seconds(1));
    let e = device.list(None, today).unwrap_err();
    assert!(
        matches!(e, ClientError::OfflineTooLong { last_contact: Some(t), max_hours: 12 } if t == contact),
        "{e:?}"
    );
    let shown = e.to_ipc();
    assert_eq!(shown.kind, doorstep_ipc::IpcErrorKind::OfflineTooLong);
    let local = contact
        .with_timezone(&chrono::Local)
        .format("%d/%m/%Y at %H:%M")
        .to_string();
    assert!(
        shown.message.starts_with(&format!(
            "This device last reached the server on {local}, more than 12 hours ago"
        )) && shown.message.contains("sign in online"),
        "{}",
        shown.message
    );
    assert!(matches!(
        device.record("p-sian", today),
        Err(ClientError::OfflineTooLong { .. })
    ));
    assert!(
        device.list(Some("Evans"), today).is_err(),
        "search is the list"
    );
    // The outbox is kept and still takes notes; the status still answers.
    let written = device.write_note("p-sian", note("seen at home")).unwrap();
    assert_eq!(device.status().unwrap().waiting, 1);

    // A sync is a contact: the note goes, and the records show again.
    let pushed = PushResponse {
        results: vec![PushResult {
            id: written.id.clone(),
            outcome: PushOutcome::Accepted {
                accepted_at: Utc::now(),
            },
        }],
    };
    let tokens = TokenResponse {
        access_token: "after-sign-in".into(),
        access_expires_at: Utc::now() + Duration::minutes(15),
        refresh_token: "refresh-9".into(),
    };
    let (url, log) = fake_server::start(vec![
        json(200, pushed),
        gzipped(200, limited("c2", vec![])),
        json(200, &tokens),
    ])
    .await;
    let mut device = repoint(device, &url).with_clock(clock.clone());
    device.backoff = quick_backoff();
    let report = device.sync().await.unwrap();
    assert_eq!(report.pushed.accepted, 1);
    assert_eq!(device.list(None, today).unwrap().len(), 2);

    // So is an online sign-in with password and authenticator code.
    advance(Duration::hours(13));
    assert!(device.list(None, today).is_err());
    let e = device.sign_in_online("pw", "12345").await.unwrap_err();
    assert_eq!(e.to_ipc().kind, doorstep_ipc::IpcErrorKind::Invalid);
    device.sign_in_online("pw", "123 456").await.unwrap();
    assert_eq!(device.list(None, today).unwrap().len(), 2);
    assert_eq!(
        log.lock().unwrap().last().unwrap(),
        "POST /api/v1/auth/reauth bearer= gzip=true"
    );
    let access = device
        .with_conn(|c| cache::get_meta(c, meta::ACCESS_TOKEN))
        .unwrap();
    assert_eq!(access.as_deref(), Some("after-sign-in"));
}

/// The idle lock is the agreements' (the shortest, sent with every page): five minutes until
/// the server has said, then what the last completed sync brought.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_idle_lock_is_the_one_the_last_sync_brought() {
    use fake_server::gzipped;
    let mut first = first_page();
    first.idle_lock_minutes = Some(2);
    let mut second = page("c2", false, vec![]);
    second.idle_lock_minutes = None;
    let (url, _log) = fake_server::start(vec![gzipped(200, first), gzipped(200, second)]).await;
    let dir = tempfile::tempdir().unwrap();
    hand_enrolled_at(dir.path(), "2468", &url);
    let mut device = Device::unlock(dir.path(), "2468").unwrap();
    device.backoff = quick_backoff();
    assert_eq!(device.idle_lock().unwrap(), crate::DEFAULT_IDLE_LOCK);
    device.sync().await.unwrap();
    assert_eq!(
        device.idle_lock().unwrap(),
        std::time::Duration::from_secs(120)
    );
    assert_eq!(device.status().unwrap().idle_lock_secs, 120);
    device.sync().await.unwrap();
    assert_eq!(
        device.idle_lock().unwrap(),
        crate::DEFAULT_IDLE_LOCK,
        "an answer without one goes back to the default"
    );
}

/// Settings: signing out must not lose a note or a record of access still waiting; once
/// nothing waits it wipes the records, the tokens, the enrolment and the pinned CA.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_out_is_refused_while_anything_waits_then_wipes_the_device() {
    let (device, _log, dir) = device_with_two_patients(vec![]).await;
    std::fs::write(dir.path().join(files::SERVER_CA_FILE), "pinned").unwrap();
    device.record_viewed("p-sian", "summary").unwrap();
    let e = device.sign_out_and_wipe().unwrap_err();
    assert!(
        matches!(e, ClientError::ItemsWaiting { notes: 0, views: 1 }),
        "{e:?}"
    );
    device
        .write_note("p-sian", note("Dressing changed."))
        .unwrap();
    let e = device.sign_out_and_wipe().unwrap_err();
    assert!(
        matches!(e, ClientError::ItemsWaiting { notes: 1, views: 1 }),
        "{e:?}"
    );
    assert!(
        e.to_string().starts_with(
            "1 note and 1 record of access have not reached the server yet. Sync first"
        ),
        "{e}"
    );
    assert_eq!(e.to_ipc().kind, doorstep_ipc::IpcErrorKind::Invalid);
    // Refused means untouched.
    assert_eq!(device.status().unwrap().waiting, 1);
    assert!(is_enrolled(dir.path()));

    // As an accepted push leaves it: nothing waiting.
    device
        .with_conn(|c| {
            c.execute("UPDATE outbox SET state = 'accepted'", [])?;
            Ok(())
        })
        .unwrap();
    device.sign_out_and_wipe().unwrap();
    for name in [
        "cache.db",
        "cache.db-wal",
        "cache.db-shm",
        files::DEVICE_FILE,
        files::SERVER_CA_FILE,
        files::PIN_ATTEMPTS_FILE,
    ] {
        assert!(
            !dir.path().join(name).exists(),
            "{name} is left after signing out"
        );
    }
    assert!(!is_enrolled(dir.path()));
    assert!(device.list(None, day(2026, 1, 15)).is_err());
}

/// The sync screen's "what came down": the last completed sync's counts, kept in the cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_says_what_the_last_sync_brought() {
    let (device, _log, _dir) = device_with_two_patients(vec![]).await;
    let last = device
        .status()
        .unwrap()
        .last_sync
        .expect("a summary after a sync");
    assert_eq!(last.patients_added, 2);
    assert_eq!(last.patients_removed, 0);
    assert_eq!((last.sent, last.refused), (0, 0));
    assert!(!last.rebuilt);
    assert!((Utc::now() - last.at).num_seconds().abs() < 60);
}

/// The shell changes the PIN on disk while the device is open: the open cache stays usable,
/// and from the next unlock only the new PIN opens it.
#[test]
fn the_pin_changes_while_the_device_is_open() {
    let dir = tempfile::tempdir().unwrap();
    hand_enrolled(dir.path(), "246813");
    let device = Device::unlock(dir.path(), "246813").unwrap();
    assert!(matches!(
        Device::change_pin_in(dir.path(), "111111", "975310"),
        Err(ClientError::WrongPin { .. })
    ));
    Device::change_pin_in(dir.path(), "246813", "975310").unwrap();
    assert!(device.status().is_ok());
    drop(device);
    assert!(matches!(
        Device::unlock(dir.path(), "246813"),
        Err(ClientError::WrongPin { .. })
    ));
    Device::unlock(dir.path(), "975310").unwrap();
}

/// Hazard H2: two patients of the same name on one list are flagged on both rows (whatever
/// the search shows) and in the banner; a namesake whose entry has ended is not on the list
/// and flags nobody.
#[test]
fn two_patients_of_one_name_on_the_list_are_both_flagged() {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = open_cache(dir.path());
    apply(&mut conn, &first_page()).unwrap();
    let namesake = TestPatient {
        id: "p-sian-2".into(),
        nhs: nth_nhs(7),
        given: "Sian",
        family: "EVANS",
        birth: "1987-06-12",
        postcode: "LS6 2QT",
    };
    let today = day(2026, 1, 15);
    let now = Utc.with_ymd_and_hms(2026, 1, 15, 12, 0, 0).unwrap();
    apply(
        &mut conn,
        &page(
            "c2",
            false,
            vec![added(&namesake, vec![], vec![caseload("Wound care")])],
        ),
    )
    .unwrap();
    // As `Device::list` flags the rows it answers.
    let flagged = |conn: &Connection, search: Option<&str>| -> Vec<(String, bool)> {
        let same = queries::same_names(conn, now).unwrap();
        queries::list(conn, search, today, now)
            .unwrap()
            .into_iter()
            .map(|r| {
                let flag = same.contains(&r.patient_id);
                (r.patient_id, flag)
            })
            .collect()
    };
    let mut all = flagged(&conn, None);
    all.sort();
    assert_eq!(
        all,
        [
            ("p-sian".to_string(), true),
            ("p-sian-2".to_string(), true),
            ("p-zoe".to_string(), false),
        ]
    );
    // Found by NHS number alone, the row still says another has the name.
    assert_eq!(
        flagged(&conn, Some(&nth_nhs(7))),
        [("p-sian-2".to_string(), true)]
    );
    assert!(queries::same_names(&conn, now).unwrap().contains("p-sian"));

    // The namesake's entry ends: off the list, and nobody shares a name any more.
    let ended = ListEntry {
        ends_at: Some(now - Duration::hours(1)),
        ..caseload("Wound care")
    };
    apply(
        &mut conn,
        &page(
            "c3",
            false,
            vec![Change::ListChanged {
                patient_id: "p-sian-2".into(),
                entries: vec![ended],
            }],
        ),
    )
    .unwrap();
    let after = flagged(&conn, None);
    assert!(after.iter().all(|(_, same)| !same), "{after:?}");
}
