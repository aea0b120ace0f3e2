//! The public Synthea sample bundles (US Core flavoured FHIR R4, CC0; a copy of the project's
//! `shared/fixtures/synthea/`, kept in the repository so a fresh clone tests on its own; see
//! `tests/fixtures/README.md`): Doorstep must read them without error, build every view, and
//! refuse to import them because they carry no NHS number, even from a sending practice; with
//! an NHS number added, a sending practice's import registers them with it.

use std::path::PathBuf;

use chrono::NaiveDate;
use doorstep_record::fhir::{
    ResourceType, SendingPractice, parse_bundle, validate_for_import, validate_for_import_from,
};
use doorstep_record::nhs::NhsNumber;
use doorstep_record::views::build_record;

fn fixtures_dir() -> PathBuf {
    // Run time, not compile time: a test binary built in another clone must read this one's.
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    let dir = manifest_dir.join("tests/fixtures/synthea");
    assert!(
        dir.is_dir(),
        "the Synthea fixtures are missing: expected the directory {}",
        dir.display()
    );
    dir
}

fn read(name: &str) -> String {
    let path = fixtures_dir().join(name);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read fixture {}: {e}", path.display()))
}

fn today() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 1, 15).unwrap()
}

const DENIS: &str = "Denis399_Schmitt836_63ee2253.json";
const KASANDRA: &str = "Kasandra729_Shanahan202_bb6a9034.json";

#[test]
fn both_fixtures_are_present() {
    let mut names: Vec<String> = std::fs::read_dir(fixtures_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    names.sort();
    assert_eq!(names, [DENIS, KASANDRA]);
}

#[test]
fn synthea_bundles_parse_leniently_keeping_unknown_types() {
    let b = parse_bundle(&read(DENIS)).unwrap();
    assert_eq!(b.bundle_type, "collection");
    assert_eq!(b.resources.len(), 62);
    assert!(b.deletions.is_empty());
    // Synthea's Device is not a type Doorstep reads: kept, as Other.
    let devices: Vec<_> = b
        .resources
        .iter()
        .filter(|r| r.resource_type == ResourceType::Other("Device".into()))
        .collect();
    assert_eq!(devices.len(), 1);
    // US Core extensions are kept untouched in the original JSON.
    let patient = &b.resources[0];
    assert_eq!(patient.resource_type, ResourceType::Patient);
    assert!(
        patient.json["extension"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["url"] == "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race")
    );
    let b = parse_bundle(&read(KASANDRA)).unwrap();
    assert_eq!(b.resources.len(), 94);
}

#[test]
fn synthea_records_build_every_view() {
    let b = parse_bundle(&read(KASANDRA)).unwrap();
    let v = build_record(&b.resources, today());
    let p = &v.patient;
    assert_eq!(p.name_display, "SHANAHAN202, Kasandra729");
    assert_eq!(p.birth_date, NaiveDate::from_ymd_opt(2007, 7, 11));
    assert_eq!(p.age, Some(18));
    assert_eq!(p.gender.as_deref(), Some("female"));
    assert_eq!(p.nhs_number, None, "Synthea patients have no NHS number");
    assert!(p.address_display.starts_with("1024 Nolan Manor"));
    // Every Synthea condition here is resolved: nothing active, five past.
    assert!(v.problems.active.is_empty());
    assert_eq!(v.problems.past.len(), 5);
    assert!(
        v.problems
            .past
            .iter()
            .all(|c| c.code.as_ref().unwrap().is_snomed())
    );
    // All medication requests are stopped.
    assert_eq!(v.medications.past.len(), 5);
    assert!(v.medications.current.is_empty() && v.medications.repeat.is_empty());
    assert_eq!(v.encounters.len(), 18);
    assert!(
        v.encounters.windows(2).all(|w| w[0].start >= w[1].start),
        "encounters newest first"
    );
    assert_eq!(v.summary.recent_encounters.len(), 3);
    assert!(
        v.encounters[0]
            .provenance
            .author
            .as_deref()
            .unwrap()
            .starts_with("Dr. ")
    );
    assert_eq!(v.immunisations.len(), 16);
    assert_eq!(v.procedures.len(), 31);
    // Clinical notes are base64 text/plain attachments: decoded.
    assert_eq!(v.documents.len(), 18);
    assert!(
        v.documents
            .iter()
            .all(|d| d.text.contains("# Chief Complaint"))
    );
    // Synthea records no vitals in these two bundles, and no alerts or allergies.
    assert!(v.observations.is_empty() && v.alerts.is_empty() && v.allergies.is_empty());

    let b = parse_bundle(&read(DENIS)).unwrap();
    let v = build_record(&b.resources, today());
    assert_eq!(v.patient.name_display, "SCHMITT836, Denis399 Lincoln623");
    assert_eq!(v.problems.past.len(), 3);
    assert_eq!(v.encounters.len(), 15);
    assert_eq!(v.immunisations.len(), 17);
    assert_eq!(v.documents.len(), 15);
}

#[test]
fn synthea_bundles_are_refused_for_import_for_want_of_an_nhs_number() {
    for name in [DENIS, KASANDRA] {
        let b = parse_bundle(&read(name)).unwrap();
        let e = validate_for_import(&b).unwrap_err();
        assert_eq!(e.entry, Some(0), "{name}");
        assert_eq!(e.element, "identifier", "{name}");
        let resource = e.resource.clone().unwrap();
        assert!(resource.starts_with("Patient/"), "{name}: {resource}");
        let text = e.to_string();
        assert!(
            text.starts_with("entry 0 (Patient/") && text.contains("element 'identifier'"),
            "{text}"
        );
    }
}

const SENDER: SendingPractice<'static> = SendingPractice {
    ods: "C81001",
    name: "Riverside Surgery",
};

/// A fixture as sent, with only an NHS-number identifier added to its Patient (entry 0).
fn with_nhs_number(name: &str, nhs: &NhsNumber) -> String {
    let mut bundle: serde_json::Value = serde_json::from_str(&read(name)).unwrap();
    let patient = &mut bundle["entry"][0]["resource"];
    assert_eq!(patient["resourceType"], "Patient");
    assert!(
        patient.get("generalPractitioner").is_none(),
        "{name} names a practice"
    );
    patient["identifier"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "system": "https://fhir.nhs.uk/Id/nhs-number",
            "value": nhs.digits(),
        }));
    bundle.to_string()
}

/// Test NHS numbers: the reserved range 999 000 0000 to 999 999 9999, valid Modulus 11.
fn test_nhs_numbers() -> Vec<NhsNumber> {
    let numbers: Vec<NhsNumber> = (999_000_002u64..)
        .filter_map(NhsNumber::from_stem)
        .take(2)
        .collect();
    for n in &numbers {
        assert!(n.digits().starts_with("999"), "{}", n.digits());
        assert_eq!(NhsNumber::parse(n.digits()).as_ref(), Ok(n));
    }
    numbers
}

#[test]
fn a_sending_practice_does_not_excuse_the_missing_nhs_number() {
    for name in [DENIS, KASANDRA] {
        let b = parse_bundle(&read(name)).unwrap();
        let e = validate_for_import_from(&b, Some(SENDER)).unwrap_err();
        assert_eq!(
            (e.entry, e.element.as_str()),
            (Some(0), "identifier"),
            "{name}: {e}"
        );
        assert!(e.to_string().contains("no NHS number"), "{e}");
    }
}

#[test]
fn with_an_nhs_number_a_sending_practice_registers_the_synthea_patient() {
    for (name, nhs) in [DENIS, KASANDRA].into_iter().zip(test_nhs_numbers()) {
        let b = parse_bundle(&with_nhs_number(name, &nhs)).unwrap();
        let plan =
            validate_for_import_from(&b, Some(SENDER)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let patient_id = b.resources[0].id.clone();
        assert_eq!(plan.registered_with_sender, [patient_id.as_str()], "{name}");
        assert_eq!(plan.patients.len(), 1);
        let header = &plan.patients[0];
        assert_eq!(header.patient_id, patient_id);
        assert_eq!(header.nhs_number, nhs);
        assert_eq!(
            (header.practice_ods.as_str(), header.practice_name.as_str()),
            ("C81001", "Riverside Surgery")
        );
        assert_eq!(plan.resources.len(), b.resources.len());
        assert!(
            plan.resources
                .iter()
                .all(|r| r.source_ods().as_deref() == Some("C81001")),
            "{name}: every item is the sending practice's"
        );
    }
}

#[test]
fn with_an_nhs_number_but_no_sending_practice_the_synthea_patient_is_refused_at_general_practitioner()
 {
    for (name, nhs) in [DENIS, KASANDRA].into_iter().zip(test_nhs_numbers()) {
        let b = parse_bundle(&with_nhs_number(name, &nhs)).unwrap();
        let e = validate_for_import(&b).unwrap_err();
        assert_eq!(
            (e.entry, e.element.as_str()),
            (Some(0), "generalPractitioner"),
            "{name}: {e}"
        );
    }
}
