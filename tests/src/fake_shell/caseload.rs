//! The fake shell's data: a synthetic district nurse's caseload, written out by hand so that
//! every screen has something of each kind to show (two patients with the same name, every
//! badge, a record with every section populated, withheld counts, observation series with
//! reference ranges and abnormal values, notes in every state).
//!
//! Everything is made up. NHS numbers are in the range reserved for test data (999 000 0000 to
//! 999 999 9999) and pass the Modulus 11 check (`doorstep_record::NhsNumber`); ODS codes are
//! invented; dates are relative to today, so ages and "today" stay right.

use chrono::{DateTime, Datelike, Days, Local, NaiveDate, NaiveDateTime, TimeZone, Utc};
use doorstep_ipc::{ListRow, NoteState, NoteSummary, PatientRecord, Withheld};
use doorstep_record::NhsNumber;
use doorstep_record::coding::{Coding, LOINC, SNOMED};
use doorstep_record::views::{
    AlertItem, AlertKind, AllergyItem, DocumentItem, DocumentSection, EncounterItem,
    ImmunisationItem, MedicationCourse, MedicationItem, ObservationPoint, ObservationSeries,
    PatientDetails, ProblemItem, Problems, ProcedureItem, Provenance, RecordView, Summary,
};

/// One patient the fake shell knows: the list row and the record it answers.
#[derive(Debug, Clone)]
pub struct FakePatient {
    pub row: ListRow,
    pub record: PatientRecord,
}

/// The practices the caseload is registered with: `(ODS, name)`.
const PRACTICES: &[(&str, &str)] = &[
    ("Y90001", "Riverside Medical Practice"),
    ("Y90002", "Canal Street Surgery"),
];

/// What each patient is made from.
struct Seed {
    id: &'static str,
    /// The first nine digits; the check digit is computed (the next stem with one when this
    /// one has none).
    nhs_stem: u64,
    family: &'static str,
    given: &'static str,
    prefix: &'static str,
    gender: &'static str,
    born: (i32, u32, u32),
    address: &'static [&'static str],
    postcode: &'static str,
    practice: usize,
    reason: &'static str,
    /// `caseload` (since that many days ago) or `appointment` (today at that hour).
    kind: &'static str,
    when: u32,
    allergies: &'static [(&'static str, &'static str)],
    alerts: &'static [(AlertKind, &'static str)],
    address_withheld: bool,
}

const SEEDS: &[Seed] = &[
    Seed {
        id: "fake-evans",
        nhs_stem: 999_100_001,
        family: "EVANS",
        given: "Siân",
        prefix: "Mrs",
        gender: "female",
        born: (1941, 11, 20),
        address: &["12 Station Road", "Leeds"],
        postcode: "LS1 4AB",
        practice: 0,
        reason: "Leg ulcer dressing",
        kind: "appointment",
        when: 9,
        allergies: &[("Penicillin", "Anaphylaxis"), ("Latex", "Urticaria")],
        alerts: &[
            (AlertKind::Dnacpr, "DNACPR decision in place (adult)"),
            (
                AlertKind::Safeguarding,
                "Adult safeguarding concern: financial abuse",
            ),
            (
                AlertKind::Other,
                "Key safe at the back door; code from the family",
            ),
        ],
        address_withheld: false,
    },
    Seed {
        id: "fake-jones-1952",
        nhs_stem: 999_100_102,
        family: "JONES",
        given: "David",
        prefix: "Mr",
        gender: "male",
        born: (1952, 3, 4),
        address: &["3 Mill Lane", "Leeds"],
        postcode: "LS6 2QT",
        practice: 0,
        reason: "Insulin review",
        kind: "appointment",
        when: 11,
        allergies: &[],
        alerts: &[],
        address_withheld: false,
    },
    Seed {
        id: "fake-jones-1987",
        nhs_stem: 999_100_203,
        family: "JONES",
        given: "David",
        prefix: "Mr",
        gender: "male",
        born: (1987, 9, 15),
        address: &["Flat 4, 88 Hyde Park Road", "Leeds"],
        postcode: "LS6 1AH",
        practice: 1,
        reason: "Post-operative wound check",
        kind: "appointment",
        when: 14,
        allergies: &[("Codeine", "Vomiting")],
        alerts: &[],
        address_withheld: false,
    },
    Seed {
        id: "fake-okafor",
        nhs_stem: 999_100_304,
        family: "OKAFOR",
        given: "Chidi",
        prefix: "Mr",
        gender: "male",
        born: (1979, 6, 30),
        address: &["27 Beeston Hill", "Leeds"],
        postcode: "LS11 8ND",
        practice: 1,
        reason: "Catheter care",
        kind: "caseload",
        when: 40,
        allergies: &[],
        alerts: &[(
            AlertKind::Safeguarding,
            "Child safeguarding: children in the home",
        )],
        address_withheld: false,
    },
    Seed {
        id: "fake-patel",
        nhs_stem: 999_100_405,
        family: "PATEL",
        given: "Anjali",
        prefix: "Ms",
        gender: "female",
        born: (1948, 1, 12),
        address: &["5 Harehills Avenue", "Leeds"],
        postcode: "LS8 4EU",
        practice: 0,
        reason: "Palliative care",
        kind: "caseload",
        when: 75,
        allergies: &[("Morphine", "Hallucinations")],
        alerts: &[(AlertKind::Respect, "ReSPECT plan: ceiling of care at home")],
        address_withheld: false,
    },
    Seed {
        id: "fake-macleod",
        nhs_stem: 999_100_506,
        family: "MACLEOD",
        given: "Morag",
        prefix: "Mrs",
        gender: "female",
        born: (1936, 8, 2),
        address: &["Rose Cottage, Moor Road", "Otley"],
        postcode: "LS21 1EB",
        practice: 1,
        reason: "B12 injection",
        kind: "caseload",
        when: 210,
        allergies: &[],
        alerts: &[],
        address_withheld: false,
    },
    Seed {
        id: "fake-nowak",
        nhs_stem: 999_100_607,
        family: "NOWAK",
        given: "Piotr",
        prefix: "Mr",
        gender: "male",
        born: (1962, 12, 24),
        address: &["41 Kirkstall Road", "Leeds"],
        postcode: "LS3 1LH",
        practice: 0,
        reason: "Pressure ulcer review",
        kind: "appointment",
        when: 16,
        allergies: &[("Chlorhexidine", "Contact dermatitis")],
        alerts: &[(AlertKind::Dnacpr, "DNACPR decision in place")],
        address_withheld: false,
    },
    Seed {
        id: "fake-ozturk",
        nhs_stem: 999_100_708,
        family: "ÖZTÜRK",
        given: "Elif",
        prefix: "Miss",
        gender: "female",
        born: (2001, 4, 9),
        address: &[],
        postcode: "",
        practice: 1,
        reason: "Wound care after surgery",
        kind: "caseload",
        when: 5,
        allergies: &[],
        alerts: &[],
        address_withheld: true,
    },
];

/// Patients not on the list, for break-glass: two with the same family name.
const OFF_LIST: &[Seed] = &[
    Seed {
        id: "fake-hughes-gareth",
        nhs_stem: 999_200_011,
        family: "HUGHES",
        given: "Gareth",
        prefix: "Mr",
        gender: "male",
        born: (1958, 5, 17),
        address: &["9 Chapel Street", "Leeds"],
        postcode: "LS13 3DT",
        practice: 0,
        reason: "",
        kind: "break_glass",
        when: 0,
        allergies: &[("Aspirin", "Bronchospasm")],
        alerts: &[],
        address_withheld: false,
    },
    Seed {
        id: "fake-hughes-gwen",
        nhs_stem: 999_200_112,
        family: "HUGHES",
        given: "Gwen",
        prefix: "Mrs",
        gender: "female",
        born: (1960, 10, 1),
        address: &["9 Chapel Street", "Leeds"],
        postcode: "LS13 3DT",
        practice: 0,
        reason: "",
        kind: "break_glass",
        when: 0,
        allergies: &[],
        alerts: &[],
        address_withheld: false,
    },
];

/// The patients on the list.
pub fn on_list(now: DateTime<Utc>) -> Vec<FakePatient> {
    SEEDS.iter().map(|s| patient(s, now)).collect()
}

/// The patients a break-glass search can find.
pub fn off_list(now: DateTime<Utc>) -> Vec<FakePatient> {
    OFF_LIST.iter().map(|s| patient(s, now)).collect()
}

/// The first valid NHS number from `stem` upwards.
fn nhs_number(stem: u64) -> NhsNumber {
    (stem..stem + 20)
        .find_map(NhsNumber::from_stem)
        .expect("a valid NHS number within 20 stems")
}

fn age_on(born: NaiveDate, today: NaiveDate) -> u32 {
    let mut years = today.year() - born.year();
    if (today.month(), today.day()) < (born.month(), born.day()) {
        years -= 1;
    }
    years.max(0) as u32
}

fn at(day: NaiveDate, hour: u32) -> DateTime<Utc> {
    Local
        .from_local_datetime(&day.and_hms_opt(hour, 0, 0).expect("a valid hour"))
        .earliest()
        .expect("a local time")
        .with_timezone(&Utc)
}

fn patient(s: &Seed, now: DateTime<Utc>) -> FakePatient {
    let today = now.with_timezone(&Local).date_naive();
    let nhs = nhs_number(s.nhs_stem);
    assert!(nhs.is_test_range(), "{} is not a test NHS number", nhs);
    let born = NaiveDate::from_ymd_opt(s.born.0, s.born.1, s.born.2).expect("a birth date");
    let (ods, practice_name) = PRACTICES[s.practice];
    let name = format!("{}, {} ({})", s.family, s.given, s.prefix);
    let address_display = if s.address_withheld {
        String::new()
    } else {
        let mut parts: Vec<&str> = s.address.to_vec();
        parts.push(s.postcode);
        parts.join(", ")
    };
    let (starts_at, is_today) = match s.kind {
        "appointment" => (at(today, s.when), true),
        "break_glass" => (now, true),
        _ => (
            at(today - Days::new(u64::from(s.when)), 9),
            // A caseload entry that started today.
            s.when == 0,
        ),
    };
    let mut alerts_badges: Vec<String> = s
        .alerts
        .iter()
        .filter(|(k, _)| *k != AlertKind::Other)
        .map(|(k, _)| k.label().to_owned())
        .collect();
    if !s.allergies.is_empty() {
        alerts_badges.push("Allergies".to_owned());
    }
    let row = ListRow {
        patient_id: s.id.to_owned(),
        nhs_number: nhs.digits().to_owned(),
        nhs_number_display: nhs.to_string(),
        name: name.clone(),
        birth_date: Some(born),
        age: Some(age_on(born, today)),
        address: if s.address_withheld {
            "Address withheld".to_owned()
        } else {
            address_display.clone()
        },
        postcode: (!s.postcode.is_empty()).then(|| s.postcode.to_owned()),
        practice_name: practice_name.to_owned(),
        reason: s.reason.to_owned(),
        list_kind: s.kind.to_owned(),
        starts_at,
        ends_at: None,
        today: is_today,
        alerts: alerts_badges,
        // The two JONES, David of the caseload (by hand: this is the data, not an oracle).
        same_name: NAMESAKES.contains(&s.id),
    };
    let details = PatientDetails {
        id: s.id.to_owned(),
        nhs_number: Some(nhs.digits().to_owned()),
        nhs_number_display: Some(nhs.to_string()),
        name_display: name,
        given: s.given.to_owned(),
        family: s.family.to_owned(),
        prefix: Some(s.prefix.to_owned()),
        birth_date: Some(born),
        age: Some(age_on(born, today)),
        gender: Some(s.gender.to_owned()),
        address_lines: s.address.iter().map(|l| (*l).to_owned()).collect(),
        postcode: row.postcode.clone(),
        address_display,
        practice_ods: Some(ods.to_owned()),
        practice_name: Some(practice_name.to_owned()),
        phone: (!s.address_withheld).then(|| "0113 496 0000".to_owned()),
        address_withheld: s.address_withheld,
    };
    let source = Source {
        ods,
        name: practice_name,
        today,
    };
    let allergies: Vec<AllergyItem> = s
        .allergies
        .iter()
        .enumerate()
        .map(|(i, (substance, reaction))| AllergyItem {
            id: format!("{}-allergy-{i}", s.id),
            code: None,
            substance: (*substance).to_owned(),
            reactions: vec![(*reaction).to_owned()],
            severity: Some(if i == 0 { "severe" } else { "moderate" }.to_owned()),
            criticality: Some(if i == 0 { "high" } else { "low" }.to_owned()),
            clinical_status: Some("active".to_owned()),
            provenance: source.on(400 + 100 * i as u64, "Dr A. Shah"),
        })
        .collect();
    let alerts: Vec<AlertItem> = s
        .alerts
        .iter()
        .enumerate()
        .map(|(i, (kind, text))| AlertItem {
            id: format!("{}-alert-{i}", s.id),
            kind: *kind,
            text: (*text).to_owned(),
            provenance: source.on(30 + 20 * i as u64, "Dr A. Shah"),
        })
        .collect();
    // The first patient's record has every section populated; the others a smaller one.
    let full = s.id == "fake-evans";
    let view = if full {
        full_view(s.id, details, allergies, alerts, &source)
    } else {
        small_view(s.id, details, allergies, alerts, &source)
    };
    let withheld = if full {
        vec![
            Withheld {
                section: "problems".into(),
                count: 2,
            },
            Withheld {
                section: "medications".into(),
                count: 1,
            },
            Withheld {
                section: "documents".into(),
                count: 1,
            },
        ]
    } else if s.id == "fake-okafor" {
        vec![Withheld {
            section: "encounters".into(),
            count: 3,
        }]
    } else {
        Vec::new()
    };
    let record = PatientRecord {
        view,
        as_of: now,
        withheld,
        list_reason: s.reason.to_owned(),
        break_glass_until: None,
        stale_after_hours: 24,
        same_name: NAMESAKES.contains(&s.id),
    };
    FakePatient { row, record }
}

/// The patients who share a name on this list.
const NAMESAKES: [&str; 2] = ["fake-jones-1952", "fake-jones-1987"];

/// Where items come from: the patient's registered practice, on a day before today.
struct Source {
    ods: &'static str,
    name: &'static str,
    today: NaiveDate,
}

impl Source {
    fn on(&self, days_ago: u64, author: &str) -> Provenance {
        Provenance {
            source_ods: Some(self.ods.to_owned()),
            source_name: Some(self.name.to_owned()),
            recorded: Some(self.day(days_ago)),
            author: Some(author.to_owned()),
        }
    }

    fn day(&self, days_ago: u64) -> NaiveDate {
        self.today - Days::new(days_ago)
    }

    fn time(&self, days_ago: u64, hour: u32) -> NaiveDateTime {
        self.day(days_ago)
            .and_hms_opt(hour, 30, 0)
            .expect("a valid time")
    }
}

fn snomed(code: &str, display: &str) -> Option<Coding> {
    Some(Coding::new(SNOMED, code, Some(display)))
}

fn problem(
    id: String,
    text: &str,
    onset: NaiveDate,
    end: Option<NaiveDate>,
    p: Provenance,
) -> ProblemItem {
    ProblemItem {
        id,
        code: None,
        text: text.to_owned(),
        clinical_status: Some(if end.is_some() { "resolved" } else { "active" }.to_owned()),
        onset: Some(onset),
        abatement: end,
        provenance: p,
    }
}

fn medication(
    id: String,
    name: &str,
    dosage: &str,
    course: MedicationCourse,
    start: NaiveDate,
    end: Option<NaiveDate>,
    p: Provenance,
) -> MedicationItem {
    MedicationItem {
        id,
        code: None,
        name: name.to_owned(),
        dosage: Some(dosage.to_owned()),
        quantity: Some("28 tablet".to_owned()),
        status: Some(if end.is_some() { "completed" } else { "active" }.to_owned()),
        course,
        start: Some(start),
        end,
        provenance: p,
    }
}

fn encounter(
    id: String,
    when: NaiveDateTime,
    kind: &str,
    reason: &str,
    p: Provenance,
) -> EncounterItem {
    EncounterItem {
        id,
        start: Some(when),
        end: None,
        kind: kind.to_owned(),
        class: Some("Home visit".to_owned()),
        reason: Some(reason.to_owned()),
        status: Some("finished".to_owned()),
        location: Some("Patient's home".to_owned()),
        provenance: p,
    }
}

/// One series: `(days ago, value)` oldest first, with the reference range; a value outside
/// it is abnormal.
fn series(
    code: Coding,
    name: &str,
    unit: &str,
    range: (Option<f64>, Option<f64>),
    values: &[(u64, f64)],
    source: &Source,
) -> ObservationSeries {
    let points = values
        .iter()
        .enumerate()
        .map(|(i, (days_ago, v))| ObservationPoint {
            id: format!("{}-{i}", code.code),
            when: source.time(*days_ago, 10),
            value: Some(*v),
            text: None,
            provenance: source.on(*days_ago, "Practice nurse"),
            low: range.0,
            high: range.1,
            abnormal: range.0.is_some_and(|l| *v < l) || range.1.is_some_and(|h| *v > h),
        })
        .collect();
    ObservationSeries {
        code,
        name: name.to_owned(),
        unit: Some(unit.to_owned()),
        points,
    }
}

fn full_view(
    id: &str,
    patient: PatientDetails,
    allergies: Vec<AllergyItem>,
    alerts: Vec<AlertItem>,
    src: &Source,
) -> RecordView {
    let active = vec![
        problem(
            format!("{id}-p1"),
            "Venous leg ulcer, left leg",
            src.day(120),
            None,
            src.on(120, "Dr A. Shah"),
        ),
        problem(
            format!("{id}-p2"),
            "Diabetes mellitus type 2",
            src.day(3650),
            None,
            src.on(3650, "Dr B. Lee"),
        ),
        problem(
            format!("{id}-p3"),
            "Chronic kidney disease stage 3",
            src.day(900),
            None,
            src.on(900, "Dr B. Lee"),
        ),
    ];
    let past = vec![problem(
        format!("{id}-p4"),
        "Fractured neck of femur, right",
        src.day(2200),
        Some(src.day(2000)),
        src.on(2200, "Leeds General Infirmary"),
    )];
    let repeat = vec![
        medication(
            format!("{id}-m1"),
            "Metformin 500mg tablets",
            "One tablet twice a day with food",
            MedicationCourse::Repeat,
            src.day(3600),
            None,
            src.on(30, "Dr B. Lee"),
        ),
        medication(
            format!("{id}-m2"),
            "Ramipril 5mg capsules",
            "One capsule each morning",
            MedicationCourse::Repeat,
            src.day(1500),
            None,
            src.on(30, "Dr B. Lee"),
        ),
    ];
    let current = vec![medication(
        format!("{id}-m3"),
        "Flucloxacillin 500mg capsules",
        "Not for this patient: penicillin allergy recorded; see the note",
        MedicationCourse::Acute,
        src.day(2),
        None,
        src.on(2, "Out-of-hours GP"),
    )];
    let past_meds = vec![medication(
        format!("{id}-m4"),
        "Clarithromycin 500mg tablets",
        "One tablet twice a day for 7 days",
        MedicationCourse::Acute,
        src.day(60),
        Some(src.day(53)),
        src.on(60, "Dr A. Shah"),
    )];
    let encounters = vec![
        encounter(
            format!("{id}-e1"),
            src.time(2, 10),
            "District nurse visit",
            "Leg ulcer dressing",
            src.on(2, "Nurse K. Ahmed"),
        ),
        encounter(
            format!("{id}-e2"),
            src.time(9, 14),
            "District nurse visit",
            "Leg ulcer dressing",
            src.on(9, "Nurse K. Ahmed"),
        ),
        encounter(
            format!("{id}-e3"),
            src.time(30, 9),
            "GP home visit",
            "Diabetes review",
            src.on(30, "Dr B. Lee"),
        ),
        encounter(
            format!("{id}-e4"),
            src.time(120, 11),
            "GP consultation",
            "Leg ulcer",
            src.on(120, "Dr A. Shah"),
        ),
    ];
    let observations = vec![
        series(
            Coding::new(LOINC, "4548-4", Some("Hemoglobin A1c")),
            "HbA1c",
            "mmol/mol",
            (Some(20.0), Some(48.0)),
            &[(400, 52.0), (220, 58.0), (40, 61.0)],
            src,
        ),
        series(
            Coding::new(LOINC, "33914-3", Some("eGFR")),
            "eGFR",
            "mL/min/1.73m2",
            (Some(60.0), None),
            &[(500, 58.0), (300, 52.0), (40, 47.0)],
            src,
        ),
        series(
            Coding::new(LOINC, "8480-6", Some("Systolic blood pressure")),
            "Systolic blood pressure",
            "mmHg",
            (Some(90.0), Some(140.0)),
            &[(120, 152.0), (30, 146.0), (9, 138.0), (2, 134.0)],
            src,
        ),
        series(
            Coding::new(LOINC, "8462-4", Some("Diastolic blood pressure")),
            "Diastolic blood pressure",
            "mmHg",
            (Some(60.0), Some(90.0)),
            &[(120, 94.0), (30, 88.0), (9, 82.0), (2, 80.0)],
            src,
        ),
        series(
            Coding::new(LOINC, "29463-7", Some("Body weight")),
            "Body weight",
            "kg",
            (None, None),
            &[(400, 71.2), (120, 68.9), (30, 67.5), (2, 66.8)],
            src,
        ),
    ];
    let immunisations = vec![
        ImmunisationItem {
            id: format!("{id}-i1"),
            code: snomed("1119349007", "COVID-19 mRNA vaccine"),
            vaccine: "COVID-19 vaccine (autumn booster)".into(),
            date: Some(src.day(70)),
            status: Some("completed".into()),
            provenance: src.on(70, "Practice nurse"),
        },
        ImmunisationItem {
            id: format!("{id}-i2"),
            code: None,
            vaccine: "Influenza vaccine".into(),
            date: Some(src.day(75)),
            status: Some("completed".into()),
            provenance: src.on(75, "Practice nurse"),
        },
        ImmunisationItem {
            id: format!("{id}-i3"),
            code: None,
            vaccine: "Pneumococcal polysaccharide vaccine".into(),
            date: Some(src.day(2500)),
            status: Some("completed".into()),
            provenance: src.on(2500, "Practice nurse"),
        },
    ];
    let procedures = vec![
        ProcedureItem {
            id: format!("{id}-pr1"),
            code: None,
            name: "Four-layer compression bandaging".into(),
            date: Some(src.day(2)),
            status: Some("completed".into()),
            provenance: src.on(2, "Nurse K. Ahmed"),
        },
        ProcedureItem {
            id: format!("{id}-pr2"),
            code: None,
            name: "Doppler ankle brachial pressure index".into(),
            date: Some(src.day(110)),
            status: Some("completed".into()),
            provenance: src.on(110, "Tissue viability nurse"),
        },
        ProcedureItem {
            id: format!("{id}-pr3"),
            code: None,
            name: "Hemiarthroplasty of hip".into(),
            date: Some(src.day(2199)),
            status: Some("completed".into()),
            provenance: src.on(2199, "Leeds General Infirmary"),
        },
    ];
    let documents = vec![
        DocumentItem {
            id: format!("{id}-d1"),
            resource_type: "Composition".into(),
            kind: "Discharge summary".into(),
            title: "Discharge from Ward 12".into(),
            date: Some(src.day(2000)),
            status: Some("final".into()),
            text: String::new(),
            sections: vec![
                DocumentSection {
                    title: "Diagnosis".into(),
                    text: "Fractured neck of femur, right; hemiarthroplasty.".into(),
                },
                DocumentSection {
                    title: "Follow-up".into(),
                    text: "Physiotherapy at home; review in fracture clinic in 6 weeks.".into(),
                },
            ],
            provenance: src.on(2000, "Leeds General Infirmary"),
        },
        DocumentItem {
            id: format!("{id}-d2"),
            resource_type: "DocumentReference".into(),
            kind: "Clinic letter".into(),
            title: "Tissue viability clinic".into(),
            date: Some(src.day(110)),
            status: Some("current".into()),
            text: "ABPI 0.9 both legs: compression is safe. Four-layer bandaging twice a week."
                .into(),
            sections: Vec::new(),
            provenance: src.on(110, "Tissue viability nurse"),
        },
    ];
    RecordView {
        patient,
        summary: Summary {
            active_problems: active.clone(),
            current_medications: repeat.iter().chain(&current).cloned().collect(),
            allergies: allergies.clone(),
            alerts: alerts.clone(),
            recent_encounters: encounters.iter().take(3).cloned().collect(),
        },
        problems: Problems { active, past },
        medications: doorstep_record::views::Medications {
            current,
            repeat,
            past: past_meds,
        },
        allergies,
        alerts,
        encounters,
        observations,
        immunisations,
        procedures,
        documents,
    }
}

fn small_view(
    id: &str,
    patient: PatientDetails,
    allergies: Vec<AllergyItem>,
    alerts: Vec<AlertItem>,
    src: &Source,
) -> RecordView {
    let active = vec![problem(
        format!("{id}-p1"),
        "Hypertensive disorder",
        src.day(800),
        None,
        src.on(800, "Dr B. Lee"),
    )];
    let repeat = vec![medication(
        format!("{id}-m1"),
        "Amlodipine 5mg tablets",
        "One tablet each morning",
        MedicationCourse::Repeat,
        src.day(790),
        None,
        src.on(60, "Dr B. Lee"),
    )];
    let encounters = vec![encounter(
        format!("{id}-e1"),
        src.time(7, 10),
        "District nurse visit",
        "Review",
        src.on(7, "Nurse K. Ahmed"),
    )];
    let observations = vec![series(
        Coding::new(LOINC, "8480-6", Some("Systolic blood pressure")),
        "Systolic blood pressure",
        "mmHg",
        (Some(90.0), Some(140.0)),
        &[(200, 142.0), (60, 136.0), (7, 131.0)],
        src,
    )];
    RecordView {
        patient,
        summary: Summary {
            active_problems: active.clone(),
            current_medications: repeat.clone(),
            allergies: allergies.clone(),
            alerts: alerts.clone(),
            recent_encounters: encounters.clone(),
        },
        problems: Problems {
            active,
            past: Vec::new(),
        },
        medications: doorstep_record::views::Medications {
            current: Vec::new(),
            repeat,
            past: Vec::new(),
        },
        allergies,
        alerts,
        encounters,
        observations,
        immunisations: Vec::new(),
        procedures: Vec::new(),
        documents: Vec::new(),
    }
}

/// Notes written on this device for the first patient, one in each state a note reaches.
pub fn notes(now: DateTime<Utc>) -> Vec<NoteSummary> {
    let hours = |h: i64| now - chrono::Duration::hours(h);
    let practice = format!("{} ({})", PRACTICES[0].1, PRACTICES[0].0);
    let note = |id: &str, h: i64, text: &str, state: NoteState| NoteSummary {
        id: id.to_owned(),
        patient_id: "fake-evans".to_owned(),
        signed_at: hours(h),
        text: text.to_owned(),
        news2: None,
        problem: None,
        replaces: None,
        state,
    };
    let mut filed = note(
        "note-filed",
        170,
        "Leg ulcer redressed; exudate reduced. Next visit in 3 days.",
        NoteState::Filed {
            practice: practice.clone(),
            at: hours(160),
        },
    );
    filed.news2 = Some("NEWS2 1 (low)".to_owned());
    let mut amended = note(
        "note-amended",
        50,
        "Right leg redressed.",
        NoteState::Received {
            practice: practice.clone(),
            at: hours(48),
        },
    );
    amended.problem = Some("399912005 Pressure ulcer".to_owned());
    let mut amendment = note(
        "note-amendment",
        49,
        "Correction: left leg redressed, not right.",
        NoteState::Accepted { at: hours(48) },
    );
    amendment.replaces = Some("note-amended".to_owned());
    vec![
        filed,
        note(
            "note-not-filed",
            100,
            "Family asked about respite care.",
            NoteState::NotFiled {
                practice,
                at: hours(90),
                reason: "Duplicate of the letter already filed".to_owned(),
            },
        ),
        amended,
        amendment,
        note(
            "note-rejected",
            20,
            "Visit cancelled by the patient.",
            NoteState::Rejected {
                reason: "The patient is no longer on your list".to_owned(),
            },
        ),
        note(
            "note-waiting",
            1,
            "Dressing changed; skin around the ulcer intact.",
            NoteState::Waiting,
        ),
    ]
}
