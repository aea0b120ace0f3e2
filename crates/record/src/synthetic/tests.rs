use super::*;
use crate::fhir::{ResourceType, parse_bundle, validate_for_import};
use crate::sensitive::is_rcgp_excluded;
use crate::views::{AlertKind, build_record};
use std::collections::HashSet;

fn spec(practices: usize, per: usize) -> FederationSpec {
    FederationSpec {
        seed: 42,
        practices,
        patients_per_practice: per,
        resources_per_patient: 100,
        today: NaiveDate::from_ymd_opt(2026, 1, 15).unwrap(),
    }
}

#[test]
fn splitmix_is_the_reference_sequence() {
    // First outputs of SplitMix64 seeded with 0 (Vigna's reference implementation).
    let mut r = SplitMix64::new(0);
    assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
    assert_eq!(r.next_u64(), 0x6E78_9E6A_A1B9_65F4);
}

#[test]
fn same_seed_same_federation_other_seed_other_federation() {
    let a = generate(spec(2, 5));
    let b = generate(spec(2, 5));
    assert_eq!(a, b);
    let mut other = spec(2, 5);
    other.seed = 43;
    let c = generate(&other);
    assert_ne!(a.bundles, c.bundles);
    assert_ne!(
        a.patients
            .iter()
            .map(|p| p.nhs_number.clone())
            .collect::<Vec<_>>(),
        c.patients
            .iter()
            .map(|p| p.nhs_number.clone())
            .collect::<Vec<_>>()
    );
}

#[test]
fn every_generated_bundle_passes_validate_for_import() {
    let fed = generate(spec(4, 50));
    assert_eq!(fed.bundles.len(), 200);
    for (i, (bundle, patient)) in fed.bundles.iter().zip(&fed.patients).enumerate() {
        let text = serde_json::to_string(bundle).unwrap();
        let parsed = parse_bundle(&text).unwrap_or_else(|e| panic!("bundle {i}: {e}"));
        let plan = validate_for_import(&parsed).unwrap_or_else(|e| panic!("bundle {i}: {e}"));
        assert_eq!(plan.patients.len(), 1);
        let header = &plan.patients[0];
        assert_eq!(header.patient_id, patient.patient_id);
        assert_eq!(header.nhs_number, patient.nhs_number);
        assert_eq!(header.practice_ods, patient.practice_ods);
        // Views build and agree with the generator's idea of the patient.
        let view = build_record(&plan.resources, fed_today());
        assert_eq!(view.patient.name_display, patient.name_display);
        assert_eq!(
            view.patient.practice_ods.as_deref(),
            Some(patient.practice_ods.as_str())
        );
        assert!(view.patient.age.is_some_and(|a| (17..=99).contains(&a)));
    }
}

fn fed_today() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 1, 15).unwrap()
}

#[test]
fn nhs_numbers_are_valid_unique_and_in_the_test_range() {
    let fed = generate(FederationSpec {
        resources_per_patient: 12,
        ..spec(5, 200)
    });
    let mut seen = HashSet::new();
    for p in &fed.patients {
        assert!(p.nhs_number.is_test_range(), "{}", p.nhs_number);
        assert_eq!(
            NhsNumber::parse(p.nhs_number.digits()).unwrap(),
            p.nhs_number
        );
        assert!(
            seen.insert(p.nhs_number.clone()),
            "duplicate {}",
            p.nhs_number
        );
    }
    // The numbering stays unique far beyond one federation.
    let many: HashSet<NhsNumber> = (0..20_000).map(|i| nhs_number_for(7, i)).collect();
    assert_eq!(many.len(), 20_000);
}

#[test]
fn practices_have_ods_codes_and_all_four_source_systems() {
    let ps = practices(&spec(8, 1));
    let systems: HashSet<&str> = ps.iter().map(|p| p.source_system.as_str()).collect();
    assert_eq!(systems.len(), 4);
    let codes: HashSet<&str> = ps.iter().map(|p| p.ods.as_str()).collect();
    assert_eq!(codes.len(), 8);
    for p in &ps {
        let b = p.ods.as_bytes();
        assert!(
            b.len() == 6 && b[0].is_ascii_uppercase() && b[1..].iter().all(u8::is_ascii_digit),
            "{}",
            p.ods
        );
        let (outward, inward) = p.postcode.split_once(' ').unwrap();
        assert!(outward.len() >= 2 && inward.len() == 3, "{}", p.postcode);
    }
}

#[test]
fn names_include_non_ascii_ones() {
    let fed = generate(FederationSpec {
        resources_per_patient: 12,
        ..spec(3, 100)
    });
    let non_ascii = fed
        .patients
        .iter()
        .filter(|p| !p.name_display.is_ascii())
        .count();
    assert!(non_ascii >= 30, "{non_ascii} of 300 names have accents");
    assert!(
        fed.patients
            .iter()
            .all(|p| p.name_display.contains(", ") && p.name_display.ends_with(')'))
    );
}

#[test]
fn resource_count_is_close_to_the_requested_number() {
    for target in [40usize, 100, 200] {
        let fed = generate(FederationSpec {
            resources_per_patient: target,
            ..spec(4, 25)
        });
        let total: usize = fed
            .bundles
            .iter()
            .map(|b| b["entry"].as_array().unwrap().len())
            .sum();
        let mean = total as f64 / fed.bundles.len() as f64;
        assert!(
            (mean - target as f64).abs() <= target as f64 * 0.15,
            "target {target}, mean {mean}"
        );
    }
}

#[test]
fn the_federation_holds_what_agreements_and_screens_need() {
    let fed = generate(spec(4, 50));
    let today = fed_today();
    let (mut sensitive, mut confidential, mut dnacpr, mut safeguarding, mut respect) =
        (0, 0, 0, 0, 0);
    let (mut discharge, mut letters, mut bp, mut hba1c, mut egfr, mut dmd_under_snomed) =
        (0, 0, 0, 0, 0, 0);
    let (mut repeats, mut past_meds, mut allergies, mut immunisations, mut procedures) =
        (0, 0, 0, 0, 0);
    for bundle in &fed.bundles {
        let b = crate::fhir::bundle_from_value(bundle.clone()).unwrap();
        for r in &b.resources {
            if is_rcgp_excluded(&r.codes()) {
                sensitive += 1;
            }
            if r.is_confidential() {
                confidential += 1;
            }
            if matches!(r.resource_type, ResourceType::MedicationRequest)
                && r.json["medicationCodeableConcept"]["coding"][0]["system"] == SNOMED
            {
                dmd_under_snomed += 1;
                assert!(r.codes()[0].is_dmd());
            }
            if matches!(
                r.resource_type,
                ResourceType::Composition | ResourceType::DocumentReference
            ) {
                assert_eq!(r.source_ods().as_deref(), Some(HOSPITAL_ODS));
            }
        }
        let v = build_record(&b.resources, today);
        dnacpr += v
            .alerts
            .iter()
            .filter(|a| a.kind == AlertKind::Dnacpr)
            .count();
        respect += v
            .alerts
            .iter()
            .filter(|a| a.kind == AlertKind::Respect)
            .count();
        safeguarding += v
            .alerts
            .iter()
            .filter(|a| a.kind == AlertKind::Safeguarding)
            .count();
        discharge += v
            .documents
            .iter()
            .filter(|d| d.kind == "Discharge summary" && !d.sections.is_empty())
            .count();
        letters += v
            .documents
            .iter()
            .filter(|d| d.resource_type == "DocumentReference" && d.text.contains("Dear Doctor"))
            .count();
        bp += v
            .observations
            .iter()
            .filter(|s| s.code.code == "271649006" && s.points.len() >= 3)
            .count();
        hba1c += v
            .observations
            .iter()
            .filter(|s| s.name.contains("A1c") && s.unit.as_deref() == Some("mmol/mol"))
            .count();
        egfr += v
            .observations
            .iter()
            .filter(|s| s.name.starts_with("eGFR"))
            .count();
        repeats += v.medications.repeat.len();
        past_meds += v.medications.past.len();
        allergies += v.allergies.len();
        immunisations += v.immunisations.len();
        procedures += v.procedures.len();
        assert!(!v.problems.active.is_empty());
        assert!(!v.summary.recent_encounters.is_empty());
    }
    for (what, n) in [
        ("RCGP-excluded items", sensitive),
        ("confidential items", confidential),
        ("DNACPR alerts", dnacpr),
        ("ReSPECT alerts", respect),
        ("safeguarding alerts", safeguarding),
        ("discharge summaries", discharge),
        ("clinic letters", letters),
        ("systolic BP series", bp),
        ("HbA1c series", hba1c),
        ("eGFR series", egfr),
        ("dm+d codes under SNOMED", dmd_under_snomed),
        ("repeat medications", repeats),
        ("past medications", past_meds),
        ("allergies", allergies),
        ("immunisations", immunisations),
        ("procedures", procedures),
    ] {
        assert!(n >= 5, "only {n} {what} in 200 patients");
    }
}

#[test]
fn vital_signs_are_plausible() {
    let fed = generate(spec(2, 20));
    for bundle in &fed.bundles {
        let b = crate::fhir::bundle_from_value(bundle.clone()).unwrap();
        let v = build_record(&b.resources, fed_today());
        for s in &v.observations {
            let (lo, hi) = match s.code.code.as_str() {
                "271649006" => (80.0, 210.0),
                "271650006" => (40.0, 120.0),
                "364075005" => (35.0, 140.0),
                "431314004" => (80.0, 100.0),
                "386725007" => (35.0, 39.5),
                "86290005" => (8.0, 30.0),
                "27113001" => (35.0, 160.0),
                "999791000000106" => (40.0, 100.0),
                "1011481000000105" => (10.0, 120.0),
                "1000651000000109" => (3.0, 6.5),
                other => panic!("unexpected series {other} {}", s.name),
            };
            for p in &s.points {
                let x = p.value.unwrap();
                assert!((lo..=hi).contains(&x), "{} = {x}", s.name);
                assert!(p.when.date() <= fed_today());
            }
        }
    }
}

#[test]
fn generate_accepts_spec_by_value_and_by_reference() {
    let s = spec(1, 2);
    assert_eq!(generate(&s), generate(s.clone()));
}

#[test]
fn parallel_generation_equals_the_one_by_one_iterator() {
    // Enough patients that `generate` uses threads.
    let s = FederationSpec {
        resources_per_patient: 20,
        ..spec(3, 40)
    };
    let fed = generate(&s);
    let one_by_one: Vec<(SyntheticPatient, Value)> = patient_bundles(&s).collect();
    assert_eq!(one_by_one.len(), fed.patients.len());
    for ((p, b), (fp, fb)) in one_by_one.iter().zip(fed.patients.iter().zip(&fed.bundles)) {
        assert_eq!(p, fp);
        assert_eq!(b, fb);
    }
}

#[test]
fn clinic_letters_follow_the_patients_problems() {
    let fed = generate(spec(4, 30));
    let mut letters = 0;
    for bundle in &fed.bundles {
        let b = crate::fhir::bundle_from_value(bundle.clone()).unwrap();
        let v = build_record(&b.resources, fed_today());
        let active: Vec<String> = v
            .problems
            .active
            .iter()
            .filter_map(|p| p.code.as_ref().map(|c| c.code.clone()))
            .collect();
        for d in v
            .documents
            .iter()
            .filter(|d| d.resource_type == "DocumentReference")
        {
            letters += 1;
            let (_, _, codes) = CLINICS
                .iter()
                .find(|(clinic, _, _)| d.title.starts_with(clinic))
                .unwrap_or_else(|| panic!("letter from an unknown clinic: {}", d.title));
            assert!(
                codes.iter().any(|c| active.iter().any(|a| a == c)),
                "{} for a patient without a fitting problem",
                d.title
            );
        }
    }
    assert!(letters >= 5, "{letters}");
}

#[test]
fn newest_encounter_is_within_the_last_fortnight() {
    let fed = generate(spec(2, 25));
    for bundle in &fed.bundles {
        let b = crate::fhir::bundle_from_value(bundle.clone()).unwrap();
        let v = build_record(&b.resources, fed_today());
        let newest = v.encounters[0].start.unwrap().date();
        assert!(
            (fed_today() - newest).num_days() <= 14,
            "newest encounter {newest}"
        );
    }
}

/// Regression: an observation dated today at 10:34 showed on a record opened at 07:34. The
/// generator knows only the date, so nothing it records may fall on today or later.
#[test]
fn nothing_recorded_today_or_in_the_future() {
    let s = spec(2, 20);
    let today = s.today;
    let federation = generate(&s);
    const RECORDED: [&str; 9] = [
        "effectiveDateTime",
        "recordedDate",
        "onsetDateTime",
        "occurrenceDateTime",
        "performedDateTime",
        "dateAsserted",
        "issued",
        "date",
        "authoredOn",
    ];
    fn walk(v: &serde_json::Value, today: NaiveDate, found: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, child) in map {
                    if let Some(text) = child.as_str()
                        && RECORDED.contains(&k.as_str())
                        && let Some(d) = text.get(..10).and_then(|d| d.parse::<NaiveDate>().ok())
                        && d >= today
                    {
                        found.push(format!("{k} = {text}"));
                    }
                    walk(child, today, found);
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|i| walk(i, today, found)),
            _ => {}
        }
    }
    let mut found = Vec::new();
    for bundle in &federation.bundles {
        walk(bundle, today, &mut found);
    }
    assert!(found.is_empty(), "dated today or later: {found:?}");
}
