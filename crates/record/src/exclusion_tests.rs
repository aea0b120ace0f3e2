//! Airtight exclusion: one test per place a sensitive item can hide and per code system.
//! Expected decisions are written by hand from the rules in `agreement`, `sensitive` and
//! `valueset`, never computed by the matcher.

use chrono::NaiveDate;
use serde_json::{Value, json};

use crate::agreement::{Agreement, Decision, ExclusionSets, SectionShare, evaluate};
use crate::coding::{DMD, LOINC, SNOMED};
use crate::fhir::{CONFIDENTIALITY_SYSTEM, Resource};
use crate::section::Section;
use crate::sensitive::{needs_redaction, redact_for_sharing};
use crate::valueset::ValueSet;
use crate::views::patient_details;

const LOCAL: &str = "https://example.org/local-codes";

fn today() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 1, 15).unwrap()
}

fn hub() -> Agreement {
    Agreement {
        id: "hub".into(),
        name: "Extended hours hub".into(),
        service: "Riverside Hub".into(),
        practices: vec!["A81001".into()],
        roles: vec!["gp".into()],
        sections: Section::ALL
            .iter()
            .map(|&section| SectionShare {
                section,
                lookback_days: None,
            })
            .collect(),
        include_codes: None,
        exclude_codes: vec![],
        max_offline_hours: 12,
        idle_lock_minutes: 5,
        retention_days: 1,
        ..Agreement::default()
    }
}

fn resource(mut v: Value) -> Resource {
    v["subject"] = json!({"reference": "Patient/p1"});
    Resource::from_json(v).unwrap()
}

fn decide_with(v: Value, agreements: &[Agreement], sets: &ExclusionSets) -> Decision {
    evaluate(&resource(v), "A81001", "gp", agreements, sets, today())
}

fn decide(v: Value) -> Decision {
    decide_with(v, &[hub()], ExclusionSets::shipped_ref())
}

fn sct(code: &str) -> Value {
    json!({"coding": [{"system": SNOMED, "code": code}]})
}

fn local(display: &str) -> Value {
    json!({"coding": [{"system": LOCAL, "code": "L1", "display": display}]})
}

fn b64(s: &str) -> String {
    crate::json::base64_encode(s.as_bytes())
}

const DIABETES: &str = "44054006";
const CHLAMYDIA: &str = "105629000";
const HIV: &str = "86406008";
const TOP: &str = "57797005";
const GENDER_DYSPHORIA: &str = "93461009";

fn condition(code: Value) -> Value {
    json!({"resourceType": "Condition", "id": "c1", "code": code})
}

fn observation(extra: Value) -> Value {
    let mut o = json!({"resourceType": "Observation", "id": "o1", "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "21613-5", "display": "Lab test"}]}});
    for (k, v) in extra.as_object().unwrap() {
        o[k] = v.clone();
    }
    o
}

fn medication_request(extra: Value) -> Value {
    let mut m = json!({"resourceType": "MedicationRequest", "id": "m1", "status": "active",
        "intent": "order", "authoredOn": "2026-01-01"});
    for (k, v) in extra.as_object().unwrap() {
        m[k] = v.clone();
    }
    m
}

fn encounter(extra: Value) -> Value {
    let mut e = json!({"resourceType": "Encounter", "id": "e1", "status": "finished",
        "class": {"code": "AMB"}, "period": {"start": "2026-01-02"}});
    for (k, v) in extra.as_object().unwrap() {
        e[k] = v.clone();
    }
    e
}

fn withheld(section: Section) -> Decision {
    Decision::Withheld(section)
}

// ---- every coded element ----

#[test]
fn sti_code_in_condition_code_is_withheld() {
    assert_eq!(
        decide(condition(sct(CHLAMYDIA))),
        withheld(Section::Problems)
    );
    assert_eq!(decide(condition(sct(DIABETES))), Decision::Visible);
}

#[test]
fn sti_code_in_observation_value_is_withheld() {
    let o = observation(json!({"valueCodeableConcept": sct(CHLAMYDIA)}));
    assert_eq!(decide(o), withheld(Section::Observations));
}

#[test]
fn sti_code_in_observation_component_code_is_withheld() {
    let o = observation(json!({"component": [{"code": sct("271649006")}, {"code": sct(HIV)}]}));
    assert_eq!(decide(o), withheld(Section::Observations));
}

#[test]
fn sti_code_in_observation_component_value_is_withheld() {
    let o = observation(json!({"component": [
        {"code": {"coding": [{"system": LOINC, "code": "x"}]}, "valueCodeableConcept": sct(HIV)}]}));
    assert_eq!(decide(o), withheld(Section::Observations));
}

#[test]
fn termination_procedure_code_is_withheld() {
    let p =
        json!({"resourceType": "Procedure", "id": "p1", "status": "completed", "code": sct(TOP)});
    assert_eq!(decide(p), withheld(Section::Procedures));
}

#[test]
fn medication_reason_code_is_matched() {
    let m = medication_request(json!({
        "medicationCodeableConcept": local("Generic tablets"), "reasonCode": [sct(HIV)]}));
    assert_eq!(decide(m), withheld(Section::Medications));
}

#[test]
fn medication_name_names_a_term() {
    let m = medication_request(json!({"medicationCodeableConcept": {"coding": [
        {"system": LOCAL, "code": "M1", "display": "Truvada 200mg/245mg tablets"}]}}));
    assert_eq!(decide(m), withheld(Section::Medications));
}

/// A loaded set holding a dm+d code, to exercise the dm+d paths without shipping a medicine
/// code we could not confirm. The code is a placeholder, valid only in this test.
fn sets_with_dmd(code: &str) -> ExclusionSets {
    let mut sets = ExclusionSets::shipped();
    let loaded = ValueSet::from_json(
        &json!({"resourceType": "ValueSet", "url": "https://doorstep.example/fhir/ValueSet/rcgp-sti",
            "compose": {"include": [{"system": DMD, "concept": [{"code": code}]}]}})
        .to_string(),
    )
    .unwrap();
    sets.extend(loaded).unwrap();
    sets
}

#[test]
fn dmd_code_is_matched_under_dmd_and_snomed_systems() {
    let sets = sets_with_dmd("999000011000001104");
    for system in [DMD, SNOMED] {
        let m = medication_request(json!({"medicationCodeableConcept": {"coding": [
            {"system": system, "code": "999000011000001104"}]}}));
        assert_eq!(
            decide_with(m, &[hub()], &sets),
            withheld(Section::Medications),
            "{system}"
        );
    }
}

#[test]
fn contained_medication_code_is_matched() {
    let sets = sets_with_dmd("999000011000001104");
    let m = medication_request(json!({
        "contained": [{"resourceType": "Medication", "id": "med",
            "code": {"coding": [{"system": DMD, "code": "999000011000001104"}]}}],
        "medicationReference": {"reference": "#med"}}));
    assert_eq!(
        decide_with(m.clone(), &[hub()], &sets),
        withheld(Section::Medications)
    );
    // Without the loaded code the same request is visible.
    assert_eq!(decide(m), Decision::Visible);
}

#[test]
fn contained_medication_name_names_a_term() {
    let m = medication_request(json!({
        "contained": [{"resourceType": "Medication", "id": "med",
            "code": {"text": "Mifepristone 200mg tablets"}}],
        "medicationReference": {"reference": "#med"}}));
    assert_eq!(decide(m), withheld(Section::Medications));
}

#[test]
fn reason_reference_to_contained_condition_is_matched() {
    let m = medication_request(json!({
        "medicationCodeableConcept": local("Generic tablets"),
        "contained": [{"resourceType": "Condition", "id": "why", "code": sct(CHLAMYDIA)}],
        "reasonReference": [{"reference": "#why"}]}));
    assert_eq!(decide(m), withheld(Section::Medications));
}

#[test]
fn reason_reference_display_names_a_term() {
    let m = medication_request(json!({
        "medicationCodeableConcept": local("Generic tablets"),
        "reasonReference": [{"reference": "Condition/c9", "display": "Chlamydia"}]}));
    assert_eq!(decide(m), withheld(Section::Medications));
    // A bare reference to another resource cannot be resolved here: the item is visible and
    // the referenced Condition is decided on its own.
    let m = medication_request(json!({
        "medicationCodeableConcept": local("Generic tablets"),
        "reasonReference": [{"reference": "Condition/c9"}]}));
    assert_eq!(decide(m), Decision::Visible);
}

#[test]
fn encounter_diagnosis_contained_condition_is_matched() {
    let e = encounter(json!({
        "contained": [{"resourceType": "Condition", "id": "d1", "code": sct(GENDER_DYSPHORIA)}],
        "diagnosis": [{"condition": {"reference": "#d1"}}]}));
    assert_eq!(decide(e), withheld(Section::Encounters));
}

#[test]
fn encounter_type_is_matched() {
    let e = encounter(json!({"type": [sct("185345009"), sct(TOP)]}));
    assert_eq!(decide(e), withheld(Section::Encounters));
}

#[test]
fn encounter_reason_display_names_a_term() {
    let e = encounter(json!({"reasonCode": [{"coding": [
        {"system": LOCAL, "code": "R1", "display": "Follow-up after termination of pregnancy"}]}]}));
    assert_eq!(decide(e), withheld(Section::Encounters));
}

#[test]
fn category_is_matched() {
    let mut c = condition(sct(DIABETES));
    c["category"] = json!([sct(CHLAMYDIA)]);
    assert_eq!(decide(c), withheld(Section::Problems));
}

#[test]
fn body_site_is_matched() {
    let mut p = json!({"resourceType": "Procedure", "id": "p1", "status": "completed",
        "code": sct("71388002")});
    p["bodySite"] =
        json!([{"coding": [{"system": LOCAL, "code": "B", "display": "IVF clinic site"}]}]);
    assert_eq!(decide(p), withheld(Section::Procedures));
}

#[test]
fn extension_coding_is_matched() {
    let mut c = condition(sct(DIABETES));
    c["extension"] =
        json!([{"url": "https://example.org/x", "valueCoding": {"system": SNOMED, "code": HIV}}]);
    assert_eq!(decide(c), withheld(Section::Problems));
}

// ---- code systems ----

#[test]
fn snomed_oid_system_is_matched() {
    let c = condition(
        json!({"coding": [{"system": "urn:oid:2.16.840.1.113883.6.96", "code": CHLAMYDIA}]}),
    );
    assert_eq!(decide(c), withheld(Section::Problems));
}

#[test]
fn versioned_snomed_url_is_matched() {
    let c = condition(
        json!({"coding": [{"system": "http://snomed.info/sct/900000000000207008/version/20240101", "code": CHLAMYDIA}]}),
    );
    assert_eq!(decide(c), withheld(Section::Problems));
}

#[test]
fn snomed_edition_in_version_is_matched() {
    let c = condition(
        json!({"coding": [{"version": "http://snomed.info/sct/83821000000107/version/20250101", "code": HIV}]}),
    );
    assert_eq!(decide(c), withheld(Section::Problems));
    // With a plain system and a version, too.
    let c = condition(json!({"coding": [{"system": SNOMED,
        "version": "http://snomed.info/sct/83821000000107/version/20250101", "code": HIV}]}));
    assert_eq!(decide(c), withheld(Section::Problems));
}

fn read_v2(code: &str) -> Value {
    json!({"coding": [{"system": "http://read.info/readv2", "code": code}]})
}

#[test]
fn read_v2_gonococcal_infection_is_mapped() {
    // A980. is a child of A98.. (Gonococcal infections), found through its lineage.
    assert_eq!(
        decide(condition(read_v2("A980."))),
        withheld(Section::Problems)
    );
    assert_eq!(
        decide(condition(read_v2("A98.."))),
        withheld(Section::Problems)
    );
    // Dots dropped, and a term id appended, as some systems send them.
    assert_eq!(
        decide(condition(read_v2("A98"))),
        withheld(Section::Problems)
    );
    assert_eq!(
        decide(condition(read_v2("A98..00"))),
        withheld(Section::Problems)
    );
}

#[test]
fn read_v2_syphilis_and_venereal_block_is_mapped() {
    assert_eq!(
        decide(condition(read_v2("A94.."))),
        withheld(Section::Problems)
    );
}

#[test]
fn read_v2_termination_is_mapped() {
    assert_eq!(
        decide(condition(read_v2("L05.."))),
        withheld(Section::Problems)
    );
    assert_eq!(
        decide(condition(read_v2("L0500"))),
        withheld(Section::Problems)
    );
}

#[test]
fn read_v2_gender_identity_is_mapped() {
    assert_eq!(
        decide(condition(read_v2("Eu640"))),
        withheld(Section::Problems)
    );
}

#[test]
fn ctv3_gonorrhoea_is_mapped() {
    let c = condition(json!({"coding": [{"system": "http://read.info/ctv3", "code": "A98.."}]}));
    assert_eq!(decide(c), withheld(Section::Problems));
}

#[test]
fn read_v2_outside_the_map_is_visible() {
    // C10.. is diabetes mellitus; nothing in the sets.
    assert_eq!(decide(condition(read_v2("C10.."))), Decision::Visible);
    // Case matters in Read: a9... is not A9...
    assert_eq!(decide(condition(read_v2("a94.."))), Decision::Visible);
}

#[test]
fn read_v2_code_is_mapped_for_agreement_filters() {
    // Agreement lists name SNOMED ids; a Read v2 item is compared through the map.
    let found = crate::codes::extract(&resource(condition(read_v2("A980."))));
    let ids = ExclusionSets::shipped_ref().snomed_ids(&found);
    assert!(ids.contains("15628003"), "{ids:?}");
    assert!(ids.contains("8098009"), "{ids:?}");
    assert_eq!(ids.len(), 2);
}

#[test]
fn local_code_is_matched_by_display() {
    assert_eq!(
        decide(condition(local("Gonorrhoea, treated"))),
        withheld(Section::Problems)
    );
    // A local code with a set's digits but an innocent display means nothing.
    let c =
        condition(json!({"coding": [{"system": LOCAL, "code": CHLAMYDIA, "display": "Review"}]}));
    assert_eq!(decide(c), Decision::Visible);
}

// ---- text ----

#[test]
fn text_only_concept_names_a_term() {
    assert_eq!(
        decide(condition(json!({"text": "Gender dysphoria"}))),
        withheld(Section::Problems)
    );
    assert_eq!(
        decide(condition(json!({"text": "Chest pain"}))),
        Decision::Visible
    );
}

#[test]
fn hiv_inside_a_word_is_not_a_term() {
    assert_eq!(
        decide(condition(json!({"text": "Archive review"}))),
        Decision::Visible
    );
    assert_eq!(
        decide(condition(json!({"text": "HIV test negative"}))),
        withheld(Section::Problems)
    );
}

#[test]
fn note_text_names_a_term() {
    let mut c = condition(sct(DIABETES));
    c["note"] = json!([{"text": "Also under the IVF clinic"}]);
    assert_eq!(decide(c), withheld(Section::Problems));
}

#[test]
fn narrative_names_a_term() {
    let mut c = condition(sct(DIABETES));
    c["text"] = json!({"status": "generated",
        "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\"><p>Seen at <b>GUM clinic</b></p></div>"});
    assert_eq!(decide(c), withheld(Section::Problems));
}

fn composition(extra: Value) -> Value {
    let mut c = json!({"resourceType": "Composition", "id": "k1", "status": "final",
        "date": "2026-01-10", "type": sct("373942005"), "title": "Discharge summary"});
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

#[test]
fn termination_in_discharge_letter_narrative_withholds_the_letter() {
    let k = composition(json!({"text": {"status": "generated",
        "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\"><p>Admitted for surgical termination&#160;of pregnancy.</p></div>"}}));
    assert_eq!(decide(k), withheld(Section::Documents));
}

#[test]
fn composition_section_text_names_a_term() {
    let k = composition(json!({"section": [
        {"title": "Diagnoses", "text": {"status": "generated", "div": "<div><ul><li>Asthma</li></ul></div>"}},
        {"title": "Medicines", "text": {"status": "generated", "div": "<div><table><tr><td>Dolutegravir</td><td>50mg</td></tr></table></div>"}}]}));
    assert_eq!(decide(k), withheld(Section::Documents));
}

#[test]
fn composition_section_title_names_a_term() {
    let k = composition(
        json!({"section": [{"title": "Sexual health: chlamydia screening",
        "text": {"status": "generated", "div": "<div>Negative</div>"}}]}),
    );
    assert_eq!(decide(k), withheld(Section::Documents));
    let ok = composition(json!({"section": [{"title": "Plan",
        "text": {"status": "generated", "div": "<div>Review in two weeks</div>"}}]}));
    assert_eq!(decide(ok), Decision::Visible);
}

fn document(attachment: Value) -> Value {
    json!({"resourceType": "DocumentReference", "id": "d1", "status": "current",
        "date": "2026-01-10", "content": [{"attachment": attachment}]})
}

#[test]
fn document_text_attachment_names_a_term() {
    let d = document(json!({"contentType": "text/plain",
        "data": b64("Letter: referred to the gender identity clinic.")}));
    assert_eq!(decide(d), withheld(Section::Documents));
    let d = document(json!({"contentType": "text/html; charset=utf-8",
        "data": b64("<p>Treated for <i>syphilis</i></p>")}));
    assert_eq!(decide(d), withheld(Section::Documents));
    let d = document(json!({"contentType": "text/plain", "data": b64("Ankle sprain, rest.")}));
    assert_eq!(decide(d), Decision::Visible);
}

#[test]
fn document_attachment_title_names_a_term() {
    let d = document(
        json!({"contentType": "application/pdf", "title": "IVF clinic letter.pdf",
        "url": "https://example.org/x.pdf"}),
    );
    assert_eq!(decide(d), withheld(Section::Documents));
}

#[test]
fn undecodable_text_attachment_is_withheld() {
    let d = document(json!({"contentType": "text/plain", "data": "not base64 %%"}));
    assert_eq!(decide(d), withheld(Section::Documents));
}

// ---- confidential at source ----

fn security(code: &str, system: &str) -> Value {
    json!({"security": [{"system": system, "code": code}]})
}

#[test]
fn confidential_contained_resource_withholds_the_container() {
    let m = medication_request(json!({
        "medicationReference": {"reference": "#med"},
        "contained": [{"resourceType": "Medication", "id": "med", "code": local("Tablets"),
            "meta": security("R", CONFIDENTIALITY_SYSTEM)}]}));
    assert_eq!(decide(m), withheld(Section::Medications));
}

#[test]
fn confidential_by_oid_is_withheld() {
    let mut c = condition(sct(DIABETES));
    c["meta"] = security("V", "urn:oid:2.16.840.1.113883.5.25");
    assert_eq!(decide(c), withheld(Section::Problems));
    let mut c = condition(sct(DIABETES));
    c["meta"] = security("N", "urn:oid:2.16.840.1.113883.5.25");
    assert_eq!(decide(c), Decision::Visible);
}

fn patient(meta: Option<Value>) -> Resource {
    let mut p = json!({"resourceType": "Patient", "id": "p1",
        "identifier": [{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9990000018"}],
        "name": [{"use": "official", "family": "Evans", "given": ["Sian"]}],
        "gender": "female", "birthDate": "1970-02-03",
        "address": [{"line": ["12 Station Road"], "city": "Leeds", "postalCode": "LS1 4AB"}],
        "telecom": [{"system": "phone", "value": "0113 496 0000"}],
        "contact": [{"name": {"family": "Evans"}, "telecom": [{"system": "phone", "value": "0113 496 0001"}],
            "address": {"line": ["1 Elm Street"]}}],
        "text": {"status": "generated", "div": "<div>Sian Evans, 12 Station Road</div>"},
        "generalPractitioner": [{"identifier": {"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": "A81001"}, "display": "Riverside Surgery"}],
        "managingOrganization": {"reference": "Organization/A81001"}});
    if let Some(m) = meta {
        p["meta"] = m;
    }
    Resource::from_json(p).unwrap()
}

#[test]
fn confidential_patient_keeps_banner_but_not_address() {
    let p = patient(Some(security("R", CONFIDENTIALITY_SYSTEM)));
    assert!(needs_redaction(&p));
    // The Patient is still sent: the banner needs it.
    assert_eq!(
        evaluate(
            &p,
            "A81001",
            "gp",
            &[hub()],
            ExclusionSets::shipped_ref(),
            today()
        ),
        Decision::Visible
    );
    let r = redact_for_sharing(&p);
    for gone in ["address", "telecom", "text"] {
        assert!(r.json.get(gone).is_none(), "{gone}");
    }
    assert!(r.json["contact"][0].get("telecom").is_none());
    assert!(r.json["contact"][0].get("address").is_none());
    for kept in [
        "identifier",
        "name",
        "gender",
        "birthDate",
        "generalPractitioner",
        "managingOrganization",
        "meta",
    ] {
        assert_eq!(r.json[kept], p.json[kept], "{kept}");
    }
    let view = patient_details(&r);
    assert_eq!(view.nhs_number.as_deref(), Some("9990000018"));
    assert_eq!(view.name_display, "EVANS, Sian");
    assert_eq!(view.practice_ods.as_deref(), Some("A81001"));
    assert!(view.address_lines.is_empty());
    assert_eq!(view.phone, None);
    assert!(view.address_withheld);
}

#[test]
fn ordinary_patient_is_not_redacted() {
    let p = patient(None);
    assert!(!needs_redaction(&p));
    assert_eq!(redact_for_sharing(&p), p);
    let view = patient_details(&p);
    assert_eq!(view.postcode.as_deref(), Some("LS1 4AB"));
    assert!(!view.address_withheld);
}

// ---- agreement filters on the same extraction ----

#[test]
fn agreement_exclude_matches_a_component_value_under_a_versioned_system() {
    let mut a = hub();
    a.exclude_codes = vec!["35489007".into()];
    let o = observation(
        json!({"component": [{"code": sct("271649006"), "valueCodeableConcept":
        {"coding": [{"system": "http://snomed.info/sct/83821000000107/version/20250101", "code": "35489007"}]}}]}),
    );
    assert_eq!(
        decide_with(o, &[a], ExclusionSets::shipped_ref()),
        withheld(Section::Observations)
    );
}

#[test]
fn include_only_passes_on_any_coded_element() {
    let mut podiatry = hub();
    podiatry.include_codes = Some(vec!["56459004".into()]); // foot structure
    let p = json!({"resourceType": "Procedure", "id": "p1", "status": "completed",
        "code": sct("71388002"), "bodySite": [sct("56459004")]});
    assert_eq!(
        decide_with(p, &[podiatry.clone()], ExclusionSets::shipped_ref()),
        Decision::Visible
    );
    let p = json!({"resourceType": "Procedure", "id": "p1", "status": "completed", "code": sct("71388002")});
    assert_eq!(
        decide_with(p, &[podiatry], ExclusionSets::shipped_ref()),
        withheld(Section::Procedures)
    );
}

#[test]
fn text_only_item_is_withheld_by_an_include_only_set() {
    let mut podiatry = hub();
    podiatry.include_codes = Some(vec![DIABETES.into()]);
    let c = condition(json!({"text": "Diabetes"}));
    assert_eq!(
        decide_with(c, &[podiatry.clone()], ExclusionSets::shipped_ref()),
        withheld(Section::Problems)
    );
    let c = condition(local("Diabetes"));
    assert_eq!(
        decide_with(c, &[podiatry.clone()], ExclusionSets::shipped_ref()),
        withheld(Section::Problems)
    );
    // But under another agreement without filters, the same item is visible (the union).
    let c = condition(json!({"text": "Diabetes"}));
    assert_eq!(
        decide_with(c, &[podiatry, hub()], ExclusionSets::shipped_ref()),
        Decision::Visible
    );
}

#[test]
fn ordinary_items_stay_visible() {
    let bp = observation(json!({"code": sct("75367002"), "component": [
        {"code": sct("271649006"), "valueQuantity": {"value": 120, "unit": "mm[Hg]", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}},
        {"code": sct("271650006"), "valueQuantity": {"value": 80, "unit": "mm[Hg]", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}}],
        "note": [{"text": "Seated, left arm, archived reading compared"}]}));
    assert_eq!(decide(bp), Decision::Visible);
    let m = medication_request(json!({"medicationCodeableConcept": {"coding": [
        {"system": SNOMED, "code": "319773006", "display": "Ramipril 5mg capsules"}]},
        "reasonCode": [sct("38341003")]}));
    assert_eq!(decide(m), Decision::Visible);
}

/// Over-matching guard: in the synthetic federation (letters, narrative, notes, ordinary
/// medicines and results), the whole-resource walk withholds exactly the items whose main
/// code is in a set, and nothing more.
#[test]
fn synthetic_records_hold_no_false_positive_terms() {
    use crate::synthetic::{FederationSpec, generate};
    let fed = generate(FederationSpec {
        seed: 7,
        practices: 2,
        patients_per_practice: 20,
        resources_per_patient: 60,
        today: today(),
    });
    let mut excluded = 0;
    for b in &fed.bundles {
        for r in crate::fhir::bundle_from_value(b.clone()).unwrap().resources {
            let by_main_code = crate::sensitive::is_rcgp_excluded(&r.codes());
            assert_eq!(
                crate::sensitive::is_rcgp_excluded_resource(&r),
                by_main_code,
                "{}",
                r.reference()
            );
            excluded += usize::from(by_main_code);
        }
    }
    assert!(excluded > 0, "the federation should hold RCGP items");
}
