use super::*;
use crate::coding::{DMD, LOINC};
use crate::fhir::{SOURCE_TAG_SYSTEM, stamp_source};
use crate::json::base64_encode;
use serde_json::json;

fn today() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 1, 15).unwrap()
}

fn res(v: Value) -> Resource {
    Resource::from_json(v).unwrap()
}

fn patient() -> Resource {
    res(json!({
        "resourceType": "Patient", "id": "p1",
        "identifier": [{"system": NHS_NUMBER_SYSTEM, "value": "9434765919"}],
        "name": [
            {"use": "old", "family": "Jones", "given": ["Siân"]},
            {"use": "official", "family": "Evans", "given": ["Siân", "Mair"], "prefix": ["Mrs"]}
        ],
        "gender": "female",
        "birthDate": "1948-01-16",
        "address": [
            {"use": "old", "line": ["1 Old Road"], "city": "Cardiff", "postalCode": "CF10 1AA"},
            {"use": "home", "line": ["12 Station Road"], "city": "Leeds", "postalCode": "LS1 4AB"}
        ],
        "telecom": [{"system": "phone", "value": "0113 496 0000", "use": "home"}],
        "generalPractitioner": [{"reference": "Organization/org1"}]
    }))
}

fn practice() -> Resource {
    res(
        json!({"resourceType": "Organization", "id": "org1", "name": "Riverside Surgery",
        "identifier": [{"system": ODS_SYSTEM, "value": "A81001"}]}),
    )
}

fn stamped(mut r: Resource) -> Resource {
    stamp_source(&mut r, "A81001", "Riverside Surgery");
    r
}

#[test]
fn banner_name_is_family_upper_given_and_prefix() {
    let d = patient_details(&patient());
    assert_eq!(d.name_display, "EVANS, Siân Mair (Mrs)");
    assert_eq!(d.given, "Siân Mair");
    assert_eq!(d.family, "Evans");
    assert_eq!(d.prefix.as_deref(), Some("Mrs"));
}

#[test]
fn non_ascii_family_names_upper_case_correctly() {
    let p = res(json!({"resourceType": "Patient", "id": "p2",
        "name": [{"family": "Ó Briain", "given": ["Seán"]}]}));
    assert_eq!(patient_details(&p).name_display, "Ó BRIAIN, Seán");
}

#[test]
fn nhs_number_is_shown_grouped_and_invalid_ones_are_not_shown() {
    let d = patient_details(&patient());
    assert_eq!(d.nhs_number.as_deref(), Some("9434765919"));
    assert_eq!(d.nhs_number_display.as_deref(), Some("943 476 5919"));
    let mut p = patient();
    p.json["identifier"][0]["value"] = json!("9434765918");
    assert_eq!(patient_details(&p).nhs_number, None);
}

#[test]
fn current_home_address_is_used_not_the_old_one() {
    let d = patient_details(&patient());
    assert_eq!(d.address_lines, ["12 Station Road", "Leeds"]);
    assert_eq!(d.postcode.as_deref(), Some("LS1 4AB"));
    assert_eq!(d.address_display, "12 Station Road, Leeds, LS1 4AB");
    assert_eq!(d.phone.as_deref(), Some("0113 496 0000"));
}

#[test]
fn age_is_whole_years_on_today() {
    let v = build_record(&[patient()], today());
    // Born 16 Jan 1948: the day before the 78th birthday.
    assert_eq!(v.patient.age, Some(77));
    let v = build_record(&[patient()], NaiveDate::from_ymd_opt(2026, 1, 16).unwrap());
    assert_eq!(v.patient.age, Some(78));
    assert_eq!(
        age_on(today(), NaiveDate::from_ymd_opt(2020, 1, 1).unwrap()),
        None
    );
}

#[test]
fn practice_comes_from_the_referenced_organisation() {
    let v = build_record(&[patient(), practice()], today());
    assert_eq!(v.patient.practice_ods.as_deref(), Some("A81001"));
    assert_eq!(
        v.patient.practice_name.as_deref(),
        Some("Riverside Surgery")
    );
    // Alone, the import stamp supplies it.
    let d = patient_details(&stamped(patient()));
    assert_eq!(d.practice_ods.as_deref(), Some("A81001"));
}

fn condition(id: &str, code: &str, text: &str, status: Option<&str>, onset: &str) -> Resource {
    let mut j = json!({"resourceType": "Condition", "id": id,
        "code": {"coding": [{"system": SNOMED, "code": code, "display": text}]},
        "subject": {"reference": "Patient/p1"}, "onsetDateTime": onset,
        "recorder": {"display": "Dr Rhys Morgan"}});
    if let Some(s) = status {
        j["clinicalStatus"] = json!({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": s}]});
    }
    stamped(res(j))
}

#[test]
fn problems_split_by_clinical_status_with_provenance() {
    let mut no_status_abated = condition("c4", "10509002", "Acute bronchitis", None, "2019-01-01");
    no_status_abated.json["abatementDateTime"] = json!("2019-02-01");
    let v = build_record(
        &[
            patient(),
            condition(
                "c1",
                "44054006",
                "Type 2 diabetes mellitus",
                Some("active"),
                "2015-03-01",
            ),
            condition(
                "c2",
                "38341003",
                "Hypertension",
                Some("recurrence"),
                "2018-03-01",
            ),
            condition(
                "c3",
                "68566005",
                "Urinary tract infection",
                Some("resolved"),
                "2024-03-01",
            ),
            no_status_abated,
            condition("c5", "49436004", "Atrial fibrillation", None, "2020-01-01"),
        ],
        today(),
    );
    let active: Vec<&str> = v.problems.active.iter().map(|p| p.id.as_str()).collect();
    let past: Vec<&str> = v.problems.past.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(active, ["c5", "c2", "c1"]); // newest first
    assert_eq!(past, ["c3", "c4"]);
    let p = &v.problems.active[2];
    assert_eq!(p.text, "Type 2 diabetes mellitus");
    assert_eq!(p.provenance.source_ods.as_deref(), Some("A81001"));
    assert_eq!(
        p.provenance.source_name.as_deref(),
        Some("Riverside Surgery")
    );
    assert_eq!(p.provenance.author.as_deref(), Some("Dr Rhys Morgan"));
    assert_eq!(p.provenance.recorded, NaiveDate::from_ymd_opt(2015, 3, 1));
    assert_eq!(v.summary.active_problems, v.problems.active);
}

#[test]
fn entered_in_error_and_refuted_items_are_never_shown() {
    let mut c = condition("c1", "44054006", "Diabetes", Some("active"), "2015-03-01");
    c.json["verificationStatus"] = json!({"coding": [{"code": "entered-in-error"}]});
    let mut r = condition(
        "c2",
        "38341003",
        "Hypertension",
        Some("active"),
        "2015-03-01",
    );
    r.json["verificationStatus"] = json!({"coding": [{"code": "refuted"}]});
    let e = res(
        json!({"resourceType": "Encounter", "id": "e1", "status": "entered-in-error",
        "subject": {"reference": "Patient/p1"}, "period": {"start": "2025-01-01"}}),
    );
    let v = build_record(&[patient(), c, r, e], today());
    assert!(v.problems.active.is_empty() && v.problems.past.is_empty());
    assert!(v.encounters.is_empty());
}

fn med_request(id: &str, status: &str, course: Option<&str>, authored: &str) -> Resource {
    let mut j = json!({"resourceType": "MedicationRequest", "id": id, "status": status, "intent": "order",
        "medicationCodeableConcept": {"coding": [{"system": SNOMED, "code": "319773006", "display": "Ramipril 5mg capsules"}]},
        "subject": {"reference": "Patient/p1"}, "authoredOn": authored,
        "requester": {"reference": "Practitioner/dr1"},
        "dosageInstruction": [{"text": "One capsule daily"}],
        "dispenseRequest": {"quantity": {"value": 28, "unit": "capsule"}}});
    if let Some(c) = course {
        j["courseOfTherapyType"] = json!({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/medicationrequest-course-of-therapy", "code": c}]});
    }
    res(j)
}

#[test]
fn medications_current_repeat_and_past_are_disjoint() {
    let dr = res(json!({"resourceType": "Practitioner", "id": "dr1",
        "name": [{"family": "Hughes", "given": ["Ffion"], "prefix": ["Dr"]}]}));
    let mut expired = med_request("m5", "active", Some("acute"), "2025-06-01");
    expired.json["dispenseRequest"]["validityPeriod"] =
        json!({"start": "2025-06-01", "end": "2025-07-01"});
    let mut proposal = med_request("m6", "active", Some("acute"), "2025-12-01");
    proposal.json["intent"] = json!("proposal");
    let statement = res(
        json!({"resourceType": "MedicationStatement", "id": "m7", "status": "active",
        "medicationCodeableConcept": {"coding": [{"system": DMD, "code": "39113611000001102", "display": "Salbutamol 100micrograms/dose inhaler CFC free"}]},
        "subject": {"reference": "Patient/p1"}, "effectivePeriod": {"start": "2024-01-01"},
        "dosage": [{"text": "Two puffs when required"}]}),
    );
    let v = build_record(
        &[
            patient(),
            dr,
            med_request("m1", "active", Some("continuous"), "2025-01-01"),
            med_request("m2", "active", Some("acute"), "2026-01-10"),
            med_request("m3", "stopped", Some("continuous"), "2020-01-01"),
            med_request("m4", "completed", None, "2021-01-01"),
            expired,
            proposal,
            statement,
        ],
        today(),
    );
    let ids = |l: &[MedicationItem]| l.iter().map(|m| m.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&v.medications.repeat), ["m1"]);
    assert_eq!(ids(&v.medications.current), ["m2", "m7"]);
    assert_eq!(ids(&v.medications.past), ["m6", "m5", "m4", "m3"]);
    assert_eq!(ids(&v.summary.current_medications), ["m1", "m2", "m7"]);
    let m1 = &v.medications.repeat[0];
    assert_eq!(m1.course, MedicationCourse::Repeat);
    assert_eq!(m1.name, "Ramipril 5mg capsules");
    assert_eq!(
        m1.code.as_ref().unwrap().system,
        DMD,
        "dm+d under SNOMED is normalised"
    );
    assert_eq!(m1.dosage.as_deref(), Some("One capsule daily"));
    assert_eq!(m1.quantity.as_deref(), Some("28 capsule"));
    assert_eq!(m1.provenance.author.as_deref(), Some("Dr Ffion Hughes"));
}

#[test]
fn repeat_extension_marks_a_statement_as_repeat() {
    let s = res(
        json!({"resourceType": "MedicationStatement", "id": "s1", "status": "active",
        "extension": [{"url": "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-MedicationRepeatInformation"}],
        "medicationCodeableConcept": {"text": "Metformin 500mg tablets"},
        "subject": {"reference": "Patient/p1"}}),
    );
    let v = build_record(&[patient(), s], today());
    assert_eq!(v.medications.repeat.len(), 1);
}

#[test]
fn medication_reference_resolves_to_a_contained_medication_resource() {
    let med = res(json!({"resourceType": "Medication", "id": "med1",
        "code": {"coding": [{"system": SNOMED, "code": "42206511000001102", "display": "Apixaban 5mg tablets"}]}}));
    let r = res(
        json!({"resourceType": "MedicationRequest", "id": "m1", "status": "active", "intent": "order",
        "medicationReference": {"reference": "Medication/med1"}, "subject": {"reference": "Patient/p1"}}),
    );
    let v = build_record(&[patient(), med, r], today());
    let m = &v.medications.current[0];
    assert_eq!(m.name, "Apixaban 5mg tablets");
    assert!(m.code.as_ref().unwrap().is_dmd());
}

#[test]
fn allergies_with_reactions_worst_severity_and_summary_excludes_resolved() {
    let a1 = res(json!({"resourceType": "AllergyIntolerance", "id": "a1",
    "clinicalStatus": {"coding": [{"code": "active"}]},
    "code": {"coding": [{"system": SNOMED, "code": "91936005", "display": "Allergy to penicillin"}], "text": "Penicillin"},
    "criticality": "high", "patient": {"reference": "Patient/p1"}, "recordedDate": "2010-05-01",
    "reaction": [
        {"manifestation": [{"coding": [{"system": SNOMED, "code": "126485001", "display": "Urticaria"}]}], "severity": "mild"},
        {"manifestation": [{"text": "Anaphylaxis"}], "severity": "severe"}
    ]}));
    let a2 = res(json!({"resourceType": "AllergyIntolerance", "id": "a2",
        "clinicalStatus": {"coding": [{"code": "resolved"}]},
        "code": {"text": "Latex"}, "patient": {"reference": "Patient/p1"}}));
    let v = build_record(&[patient(), a1, a2], today());
    assert_eq!(v.allergies.len(), 2);
    let a = &v.allergies[0];
    assert_eq!(a.substance, "Penicillin");
    assert_eq!(a.reactions, ["Urticaria", "Anaphylaxis"]);
    assert_eq!(a.severity.as_deref(), Some("severe"));
    assert_eq!(v.summary.allergies.len(), 1);
}

fn flag(id: &str, code: Option<(&str, &str)>, text: &str, status: &str, start: &str) -> Resource {
    let mut concept = json!({"text": text});
    if let Some((c, d)) = code {
        concept["coding"] = json!([{"system": SNOMED, "code": c, "display": d}]);
    }
    res(
        json!({"resourceType": "Flag", "id": id, "status": status, "code": concept,
        "subject": {"reference": "Patient/p1"}, "period": {"start": start}}),
    )
}

#[test]
fn alerts_are_classified_by_code_then_text_dnacpr_first() {
    let v = build_record(
        &[
            patient(),
            flag(
                "f1",
                None,
                "Key safe code with daughter",
                "active",
                "2025-01-01",
            ),
            flag(
                "f2",
                None,
                "Safeguarding concern – adult at risk",
                "active",
                "2024-01-01",
            ),
            flag(
                "f3",
                Some(("304253006", "Not for resuscitation")),
                "DNACPR in place",
                "active",
                "2023-01-01",
            ),
            flag(
                "f4",
                None,
                "ReSPECT form completed 2024",
                "active",
                "2024-06-01",
            ),
            flag("f5", None, "DNACPR (rescinded)", "inactive", "2020-01-01"),
            flag(
                "f6",
                Some(("766561000000109", "Adult safeguarding concern")),
                "Concern",
                "active",
                "2022-01-01",
            ),
        ],
        today(),
    );
    let kinds: Vec<(&str, AlertKind)> = v.alerts.iter().map(|a| (a.id.as_str(), a.kind)).collect();
    assert_eq!(
        kinds,
        [
            ("f3", AlertKind::Dnacpr),
            ("f4", AlertKind::Respect),
            ("f2", AlertKind::Safeguarding),
            ("f6", AlertKind::Safeguarding),
            ("f1", AlertKind::Other),
        ]
    );
    assert_eq!(v.summary.alerts, v.alerts);
}

#[test]
fn the_word_respect_in_ordinary_text_is_not_a_respect_alert() {
    let c = Concept {
        codings: vec![],
        text: Some("Please respect the patient's wish for privacy".into()),
    };
    assert_eq!(alert_kind(&c), AlertKind::Other);
}

fn encounter(id: &str, start: &str, class: &str) -> Resource {
    res(
        json!({"resourceType": "Encounter", "id": id, "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": class},
        "type": [{"coding": [{"system": SNOMED, "code": "439708006", "display": "Home visit"}]}],
        "reasonCode": [{"text": "Leg ulcer dressing"}],
        "subject": {"reference": "Patient/p1"}, "period": {"start": start},
        "participant": [{"individual": {"display": "Nurse Aoife Kelly"}}]}),
    )
}

#[test]
fn encounters_newest_first_and_summary_keeps_three() {
    let v = build_record(
        &[
            patient(),
            encounter("e1", "2025-01-01T09:00:00+00:00", "HH"),
            encounter("e2", "2025-03-01T09:00:00+00:00", "AMB"),
            encounter("e3", "2025-02-01T09:00:00+00:00", "HH"),
            encounter("e4", "2025-04-01T09:00:00+00:00", "VR"),
        ],
        today(),
    );
    let ids: Vec<&str> = v.encounters.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["e4", "e2", "e3", "e1"]);
    let recent: Vec<&str> = v
        .summary
        .recent_encounters
        .iter()
        .map(|e| e.id.as_str())
        .collect();
    assert_eq!(recent, ["e4", "e2", "e3"]);
    let e = &v.encounters[3];
    assert_eq!(e.kind, "Home visit");
    assert_eq!(e.class.as_deref(), Some("Home visit"));
    assert_eq!(e.reason.as_deref(), Some("Leg ulcer dressing"));
    assert_eq!(e.provenance.author.as_deref(), Some("Nurse Aoife Kelly"));
}

fn bp(id: &str, when: &str, sys: f64, dia: f64) -> Resource {
    res(
        json!({"resourceType": "Observation", "id": id, "status": "final",
        "category": [{"coding": [{"code": "vital-signs"}]}],
        "code": {"coding": [{"system": LOINC, "code": "85354-9"}, {"system": SNOMED, "code": "75367002", "display": "Blood pressure"}]},
        "subject": {"reference": "Patient/p1"}, "effectiveDateTime": when,
        "component": [
            {"code": {"coding": [{"system": LOINC, "code": "8480-6"}, {"system": SNOMED, "code": "271649006", "display": "Systolic blood pressure"}]},
             "valueQuantity": {"value": sys, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}},
            {"code": {"coding": [{"system": LOINC, "code": "8462-4"}, {"system": SNOMED, "code": "271650006", "display": "Diastolic blood pressure"}]},
             "valueQuantity": {"value": dia, "unit": "mmHg"}}
        ]}),
    )
}

fn lab(id: &str, when: &str, codes: Value, value: Value) -> Resource {
    res(
        json!({"resourceType": "Observation", "id": id, "status": "final",
        "category": [{"coding": [{"code": "laboratory"}]}],
        "code": {"coding": codes}, "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": when, "valueQuantity": value}),
    )
}

#[test]
fn blood_pressure_components_become_systolic_and_diastolic_series() {
    let v = build_record(
        &[
            patient(),
            bp("o2", "2025-06-01T10:00:00+01:00", 150.0, 92.0),
            bp("o1", "2025-01-01T10:00:00+00:00", 142.0, 88.0),
        ],
        today(),
    );
    let names: Vec<&str> = v.observations.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        ["Diastolic blood pressure", "Systolic blood pressure"]
    );
    let sys = &v.observations[1];
    assert_eq!(sys.code.code, "271649006");
    assert_eq!(sys.unit.as_deref(), Some("mmHg"));
    let values: Vec<f64> = sys.points.iter().map(|p| p.value.unwrap()).collect();
    assert_eq!(values, [142.0, 150.0], "oldest first");
    assert_eq!(sys.points[0].id, "o1#0");
}

#[test]
fn loinc_only_and_snomed_only_codings_join_through_a_dual_coded_point() {
    let hba1c_loinc = json!([{"system": LOINC, "code": "59261-8", "display": "HbA1c IFCC"}]);
    let both = json!([{"system": LOINC, "code": "59261-8"}, {"system": SNOMED, "code": "999791000000106", "display": "HbA1c level (IFCC)"}]);
    let v = build_record(
        &[
            patient(),
            lab(
                "h1",
                "2024-01-01",
                hba1c_loinc,
                json!({"value": 58, "unit": "mmol/mol"}),
            ),
            lab(
                "h2",
                "2024-07-01",
                both,
                json!({"value": 54, "unit": "mmol/mol"}),
            ),
            lab(
                "k1",
                "2024-07-01",
                json!([{"system": LOINC, "code": "2823-3", "display": "Potassium"}]),
                json!({"value": 4.6, "unit": "mmol/L"}),
            ),
        ],
        today(),
    );
    assert_eq!(v.observations.len(), 2);
    let h = v.observations.iter().find(|s| s.points.len() == 2).unwrap();
    assert_eq!(h.unit.as_deref(), Some("mmol/mol"));
    assert_eq!(
        h.points
            .iter()
            .map(|p| p.value.unwrap())
            .collect::<Vec<_>>(),
        [58.0, 54.0]
    );
}

#[test]
fn vital_signs_series_come_before_results() {
    let v = build_record(
        &[
            patient(),
            lab(
                "k1",
                "2024-07-01",
                json!([{"system": LOINC, "code": "2823-3", "display": "Potassium"}]),
                json!({"value": 4.6, "unit": "mmol/L"}),
            ),
            bp("o1", "2025-01-01", 142.0, 88.0),
        ],
        today(),
    );
    assert_eq!(v.observations.last().unwrap().name, "Potassium");
}

#[test]
fn non_numeric_and_comparator_values_are_kept_as_text() {
    let mut o = lab(
        "g1",
        "2024-01-01",
        json!([{"system": LOINC, "code": "62238-1", "display": "eGFR"}]),
        json!({"value": 90, "comparator": ">", "unit": "mL/min/1.73m2"}),
    );
    o.json["status"] = json!("final");
    let s = res(
        json!({"resourceType": "Observation", "id": "s1", "status": "final",
        "code": {"text": "Smoking status"}, "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": "2024-01-01", "valueCodeableConcept": {"text": "Never smoked"}}),
    );
    let v = build_record(&[patient(), o, s], today());
    let egfr = v.observations.iter().find(|s| s.name == "eGFR").unwrap();
    assert_eq!(egfr.points[0].text.as_deref(), Some(">90"));
    // A concept without codings has no code to key a series by, so it is not charted.
    assert!(v.observations.iter().all(|s| s.name != "Smoking status"));
}

#[test]
fn immunisations_and_procedures_newest_first() {
    let i1 = res(
        json!({"resourceType": "Immunization", "id": "i1", "status": "completed",
        "vaccineCode": {"coding": [{"system": SNOMED, "code": "822851000000102", "display": "Seasonal influenza vaccination"}]},
        "patient": {"reference": "Patient/p1"}, "occurrenceDateTime": "2024-10-01",
        "performer": [{"actor": {"display": "Nurse Zoë Price"}}]}),
    );
    let i2 = res(
        json!({"resourceType": "Immunization", "id": "i2", "status": "completed",
        "vaccineCode": {"text": "Pneumococcal"}, "patient": {"reference": "Patient/p1"}, "occurrenceDateTime": "2025-10-01"}),
    );
    let pr = res(
        json!({"resourceType": "Procedure", "id": "pr1", "status": "completed",
        "code": {"coding": [{"system": SNOMED, "code": "18949003", "display": "Change of dressing"}]},
        "subject": {"reference": "Patient/p1"}, "performedPeriod": {"start": "2025-12-01T10:00:00Z"}}),
    );
    let v = build_record(&[patient(), i1, i2, pr], today());
    assert_eq!(
        v.immunisations
            .iter()
            .map(|i| i.id.as_str())
            .collect::<Vec<_>>(),
        ["i2", "i1"]
    );
    assert_eq!(
        v.immunisations[1].provenance.author.as_deref(),
        Some("Nurse Zoë Price")
    );
    assert_eq!(v.procedures[0].name, "Change of dressing");
    assert_eq!(v.procedures[0].date, NaiveDate::from_ymd_opt(2025, 12, 1));
}

#[test]
fn document_reference_text_attachment_is_decoded() {
    let body = "Discharge letter for Siân Evans.\nSeen in clinic; no change.";
    let d = res(
        json!({"resourceType": "DocumentReference", "id": "d1", "status": "current",
        "type": {"coding": [{"system": SNOMED, "code": "371531000", "display": "Clinic letter"}]},
        "subject": {"reference": "Patient/p1"}, "date": "2025-11-02T12:00:00Z",
        "author": [{"display": "Dr Dafydd Rees"}],
        "content": [
            {"attachment": {"contentType": "text/plain; charset=utf-8", "data": base64_encode(body.as_bytes())}},
            {"attachment": {"contentType": "application/pdf", "data": "JVBERi0="}}
        ]}),
    );
    let v = build_record(&[patient(), d], today());
    let doc = &v.documents[0];
    assert_eq!(doc.text, body);
    assert_eq!(doc.kind, "Clinic letter");
    assert_eq!(doc.title, "Clinic letter");
    assert_eq!(doc.status.as_deref(), Some("current"));
    assert_eq!(doc.provenance.author.as_deref(), Some("Dr Dafydd Rees"));
}

#[test]
fn composition_sections_are_stripped_of_xhtml() {
    let mut c = res(
        json!({"resourceType": "Composition", "id": "ds1", "status": "final",
        "type": {"coding": [{"system": SNOMED, "code": "373942005", "display": "Discharge summary"}]},
        "subject": {"reference": "Patient/p1"}, "date": "2025-12-20", "title": "Discharge summary – Ward 7",
        "author": [{"reference": "Practitioner/dr9"}],
        "section": [
            {"title": "Diagnosis", "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\"><p>Community-acquired <b>pneumonia</b></p></div>"}},
            {"title": "Medication changes", "section": [
                {"title": "Started", "text": {"div": "<div><ul><li>Amoxicillin 500mg capsules</li></ul></div>"}}
            ]}
        ]}),
    );
    stamp_source(&mut c, "RX9", "Riverside Teaching Hospitals NHS Trust");
    let dr = res(
        json!({"resourceType": "Practitioner", "id": "dr9", "name": [{"text": "Dr Chloë Watkins"}]}),
    );
    let v = build_record(&[patient(), c, dr], today());
    let doc = &v.documents[0];
    assert_eq!(doc.title, "Discharge summary – Ward 7");
    assert_eq!(doc.sections.len(), 2);
    assert_eq!(doc.sections[0].text, "Community-acquired pneumonia");
    assert_eq!(doc.sections[1].title, "Medication changes – Started");
    assert_eq!(doc.sections[1].text, "• Amoxicillin 500mg capsules");
    assert!(
        doc.text
            .starts_with("Diagnosis\nCommunity-acquired pneumonia")
    );
    assert_eq!(doc.provenance.source_ods.as_deref(), Some("RX9"));
    assert_eq!(doc.provenance.author.as_deref(), Some("Dr Chloë Watkins"));
}

#[test]
fn resources_of_another_patient_are_ignored() {
    let mut c = condition("c1", "44054006", "Diabetes", Some("active"), "2015-03-01");
    c.json["subject"]["reference"] = json!("Patient/someone-else");
    let v = build_record(&[patient(), c], today());
    assert!(v.problems.active.is_empty());
}

#[test]
fn view_round_trips_through_serde() {
    let v = build_record(
        &[
            patient(),
            practice(),
            bp("o1", "2025-01-01", 142.0, 88.0),
            encounter("e1", "2025-01-01", "HH"),
        ],
        today(),
    );
    let json = serde_json::to_string(&v).unwrap();
    let back: RecordView = serde_json::from_str(&json).unwrap();
    assert_eq!(back, v);
    assert!(
        !json.contains(SOURCE_TAG_SYSTEM),
        "views carry provenance, not raw tags"
    );
}

/// Issue 12: a series joined HbA1c in mmol/mol and in % into one line (the unit of the first
/// point labelled all of them). Values of different units are different series; a chart never
/// joins them.
#[test]
fn values_of_different_units_are_never_one_series() {
    let code = || json!([{"system": LOINC, "code": "4548-4", "display": "HbA1c"}]);
    let v = build_record(
        &[
            patient(),
            lab(
                "a",
                "2024-01-01",
                code(),
                json!({"value": 48, "unit": "mmol/mol"}),
            ),
            lab(
                "b",
                "2024-04-01",
                code(),
                json!({"value": 7.1, "unit": "%"}),
            ),
            lab(
                "c",
                "2024-07-01",
                code(),
                json!({"value": 52, "unit": "mmol/mol"}),
            ),
            lab(
                "d",
                "2024-10-01",
                code(),
                json!({"value": 55, "unit": "MMOL/MOL "}),
            ),
        ],
        today(),
    );
    let mut by_unit: Vec<(String, Vec<f64>)> = v
        .observations
        .iter()
        .map(|s| {
            (
                s.unit.clone().unwrap_or_default(),
                s.points.iter().map(|p| p.value.unwrap()).collect(),
            )
        })
        .collect();
    by_unit.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        by_unit,
        [
            ("%".to_string(), vec![7.1]),
            ("mmol/mol".to_string(), vec![48.0, 52.0, 55.0]),
        ]
    );
}

/// A trend chart never joins values of different units: the mmol/mol and % HbA1c results
/// of one patient make two charts, each with only its own unit's values.
#[test]
fn a_chart_never_joins_values_of_different_units() {
    let code = || json!([{"system": LOINC, "code": "4548-4", "display": "HbA1c"}]);
    let v = build_record(
        &[
            patient(),
            lab(
                "a",
                "2024-01-01",
                code(),
                json!({"value": 48, "unit": "mmol/mol"}),
            ),
            lab(
                "b",
                "2024-02-01",
                code(),
                json!({"value": 7.1, "unit": "%"}),
            ),
            lab(
                "c",
                "2024-03-01",
                code(),
                json!({"value": 52, "unit": "mmol/mol"}),
            ),
            lab(
                "d",
                "2024-04-01",
                code(),
                json!({"value": 7.4, "unit": "%"}),
            ),
            lab(
                "e",
                "2024-05-01",
                code(),
                json!({"value": 55, "unit": "mmol/mol"}),
            ),
        ],
        today(),
    );
    let mut charts: Vec<(String, Vec<f64>)> = v
        .observations
        .iter()
        .filter(|s| crate::trend::wants_chart(s))
        .filter_map(crate::trend::chart)
        .map(|c| {
            (
                c.unit.unwrap_or_default(),
                c.points.iter().map(|p| p.value).collect(),
            )
        })
        .collect();
    charts.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        charts,
        [
            ("%".to_string(), vec![7.1, 7.4]),
            ("mmol/mol".to_string(), vec![48.0, 52.0, 55.0]),
        ]
    );
}

/// The reference range the source gives travels with each point, and a point is abnormal when
/// the source flags it or it falls outside the range.
#[test]
fn reference_ranges_and_abnormal_flags_reach_the_points() {
    let code = || json!([{"system": LOINC, "code": "2823-3", "display": "Potassium"}]);
    let with = |mut r: Resource, extra: Value| {
        for (k, x) in extra.as_object().unwrap() {
            r.json[k] = x.clone();
        }
        r
    };
    let range = json!({"referenceRange": [{"low": {"value": 3.5, "unit": "mmol/L"},
                                           "high": {"value": 5.3, "unit": "mmol/L"}}]});
    let mut flagged = range.clone();
    flagged["interpretation"] = json!([{"coding": [{"system":
        "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation", "code": "H"}]}]);
    let v = build_record(
        &[
            patient(),
            with(
                lab(
                    "k1",
                    "2024-01-01",
                    code(),
                    json!({"value": 4.2, "unit": "mmol/L"}),
                ),
                range.clone(),
            ),
            with(
                lab(
                    "k2",
                    "2024-02-01",
                    code(),
                    json!({"value": 6.1, "unit": "mmol/L"}),
                ),
                range.clone(),
            ),
            with(
                lab(
                    "k3",
                    "2024-03-01",
                    code(),
                    json!({"value": 5.0, "unit": "mmol/L"}),
                ),
                flagged,
            ),
            lab(
                "k4",
                "2024-04-01",
                code(),
                json!({"value": 4.0, "unit": "mmol/L"}),
            ),
        ],
        today(),
    );
    let s = &v.observations[0];
    let got: Vec<(f64, Option<f64>, Option<f64>, bool)> = s
        .points
        .iter()
        .map(|p| (p.value.unwrap(), p.low, p.high, p.abnormal))
        .collect();
    assert_eq!(
        got,
        [
            (4.2, Some(3.5), Some(5.3), false),
            (6.1, Some(3.5), Some(5.3), true),
            (5.0, Some(3.5), Some(5.3), true),
            (4.0, None, None, false),
        ]
    );
}
