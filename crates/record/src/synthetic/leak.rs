//! Leak markers: sensitive items in every form the sharing filter must catch, each carrying a
//! unique marker string, for the independent leak probe (`tests/tests/leak_probe.rs`). Tests
//! only: the demo never calls this unless [`add_leak_markers`] is asked for.
//!
//! [`add_leak_markers`] appends to **every** patient's bundle one item per [`LeakForm`] and
//! marks the Patient confidential (meta.security R) with markers in its address and phone. Each
//! item's marker is in its id and in a text that travels with it (a note, a narrative, an
//! attachment, a type text), so a device that received the item, or any part of it, holds the
//! marker. The answer is a [`LeakManifest`]: per item the marker, the form, the sensitive codes
//! it carries; per patient the markers that must never leave the server (address, phone) and
//! controls that must (a given name added to the banner name, the NHS number, and the marker of
//! one item every demo agreement shares), which prove the probe's search sees the data it
//! searches.
//!
//! Codes come only from the shipped value sets (`crates/record/valuesets/*.json`) and the Read
//! map, so the items are genuinely in the RCGP sets; displays of coded items are neutral
//! ("Clinical finding") so that only the code can catch them, and the items caught by text name
//! a term of the sets' exclusion-term lists. The manifest is computed from the federation alone,
//! never from the filter (`agreement`, `sensitive`, `codes`, `valueset` are not called here):
//! it is the probe's oracle.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Federation, SplitMix64, days_ago, ymd};
use crate::coding::{DMD, SNOMED};
use crate::fhir::CONFIDENTIALITY_SYSTEM;
use crate::json::base64_encode;

/// The forms of a sensitive item the filter must catch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LeakForm {
    /// Condition coded `http://snomed.info/sct` (chlamydial infection).
    SnomedUrl,
    /// Condition coded under a versioned SNOMED CT UK edition URL (gonorrhoea).
    SnomedVersionedModuleUrl,
    /// Procedure coded under the SNOMED CT OID (termination of pregnancy).
    SnomedOid,
    /// Condition coded in Read v2, a child of a mapped code (`A980.` under `A98..`).
    ReadV2,
    /// Procedure coded in CTV3 (`L05..`, legally induced abortion).
    Ctv3,
    /// Condition with a local code only, whose display names a term ("Chlamydia ...").
    LocalCodeDisplay,
    /// MedicationRequest of a dm+d medicine known by name (emtricitabine/tenofovir).
    DmdByName,
    /// Condition with text only, no coding ("Termination of pregnancy").
    TextOnly,
    /// DocumentReference: a discharge letter (text/plain attachment) mentioning a termination.
    DischargeLetterAttachment,
    /// Composition: a discharge summary whose narrative mentions a termination.
    DischargeSummaryNarrative,
    /// Encounter whose reason's display names a term (gonorrhoea follow-up).
    EncounterReason,
    /// MedicationRequest referencing a contained Medication named by a term (mifepristone).
    ContainedMedication,
    /// MedicationRequest whose contained Medication is confidential (meta.security R).
    ContainedConfidential,
    /// Observation whose valueCodeableConcept is a set concept (chlamydial infection).
    ObservationValue,
    /// Condition not sensitive by code (hypertension) but confidential at source (R).
    ConfidentialItem,
    /// Condition a podiatry include-list names (type 2 diabetes), confidential at source.
    ConfidentialIncludedCode,
}

impl LeakForm {
    pub const ALL: [LeakForm; 16] = [
        LeakForm::SnomedUrl,
        LeakForm::SnomedVersionedModuleUrl,
        LeakForm::SnomedOid,
        LeakForm::ReadV2,
        LeakForm::Ctv3,
        LeakForm::LocalCodeDisplay,
        LeakForm::DmdByName,
        LeakForm::TextOnly,
        LeakForm::DischargeLetterAttachment,
        LeakForm::DischargeSummaryNarrative,
        LeakForm::EncounterReason,
        LeakForm::ContainedMedication,
        LeakForm::ContainedConfidential,
        LeakForm::ObservationValue,
        LeakForm::ConfidentialItem,
        LeakForm::ConfidentialIncludedCode,
    ];
}

/// One marked item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeakItem {
    pub patient_id: String,
    pub form: LeakForm,
    pub resource_type: String,
    /// Unique in the federation; in the item's id and in a text of it.
    pub marker: String,
    /// The sensitive codes the item carries (as sent: `105629000`, `A980.`), none for an item
    /// withheld only for being confidential.
    pub codes: Vec<String>,
}

/// One patient's markers on the (confidential) Patient resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeakPatient {
    pub patient_id: String,
    /// In the address line: must never leave the server.
    pub address_marker: String,
    /// The phone number: must never leave the server.
    pub phone_marker: String,
    /// A given name added to the patient's name: a banner field, so it MUST be found.
    pub name_control: String,
    /// The NHS number: a banner field, so it MUST be found.
    pub nhs_number: String,
    /// In the note of an item every demo agreement shares (an active type 2 diabetes, not
    /// confidential, in no exclusion set): it MUST be found on the devices of the patient.
    pub visible_marker: String,
}

/// What [`add_leak_markers`] put where: the leak probe's oracle.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LeakManifest {
    pub items: Vec<LeakItem>,
    pub patients: Vec<LeakPatient>,
}

impl LeakManifest {
    /// Every string that must never reach a device: item markers, address and phone markers.
    pub fn forbidden_markers(&self) -> Vec<String> {
        let mut out: Vec<String> = self.items.iter().map(|i| i.marker.clone()).collect();
        for p in &self.patients {
            out.push(p.address_marker.clone());
            out.push(p.phone_marker.clone());
        }
        out
    }

    /// Every sensitive code of the manifest, once each.
    pub fn sensitive_codes(&self) -> Vec<String> {
        let mut out: Vec<String> = self.items.iter().flat_map(|i| i.codes.clone()).collect();
        out.sort();
        out.dedup();
        out
    }
}

/// SNOMED CT UK clinical edition, versioned.
const SNOMED_UK_VERSIONED: &str = "http://snomed.info/sct/999000041000000102/version/20250604";
const SNOMED_OID: &str = "urn:oid:2.16.840.1.113883.6.96";
const READ_V2: &str = "http://read.info/readv2";
const CTV3: &str = "http://read.info/ctv3";
const LOCAL: &str = "https://practice.example/fhir/CodeSystem/local-codes";

fn marker(patient_index: usize, salt: u64) -> String {
    let mut r = SplitMix64::new(0x1EA4_u64 ^ ((patient_index as u64) << 16) ^ salt);
    format!("LEAK-{:016x}", r.next_u64())
}

fn concept(system: &str, code: &str, display: &str) -> Value {
    json!({"coding": [{"system": system, "code": code, "display": display}]})
}

fn confidential_meta() -> Value {
    json!({"security": [{"system": CONFIDENTIALITY_SYSTEM, "code": "R", "display": "restricted"}]})
}

fn condition(subject: &Value, code: Value, note: &str, onset: &str) -> Value {
    json!({
        "resourceType": "Condition",
        "clinicalStatus": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
            "code": "active",
        }]},
        "category": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/condition-category",
            "code": "problem-list-item",
        }]}],
        "code": code,
        "subject": subject,
        "onsetDateTime": onset,
        "recordedDate": onset,
        "note": [{"text": note}],
    })
}

fn procedure(subject: &Value, code: Value, note: &str, when: &str) -> Value {
    json!({
        "resourceType": "Procedure",
        "status": "completed",
        "code": code,
        "subject": subject,
        "performedDateTime": when,
        "note": [{"text": note}],
    })
}

fn medication_request(subject: &Value, authored: &str, note: &str) -> Value {
    json!({
        "resourceType": "MedicationRequest",
        "status": "active",
        "intent": "order",
        "subject": subject,
        "authoredOn": authored,
        "dosageInstruction": [{"text": "One tablet once daily"}],
        "note": [{"text": note}],
    })
}

/// The item of `form` for one patient, with `marker` (not yet given its id).
fn item(form: LeakForm, subject: &Value, m: &str, today: NaiveDate) -> (Value, Vec<String>) {
    let recent = ymd(days_ago(today, 20));
    let older = ymd(days_ago(today, 400));
    let note = format!("Recorded at the practice {m}");
    let neutral = "Clinical finding";
    use LeakForm::*;
    match form {
        SnomedUrl => (
            condition(
                subject,
                concept(SNOMED, "105629000", neutral),
                &note,
                &older,
            ),
            vec!["105629000".into()],
        ),
        SnomedVersionedModuleUrl => (
            condition(
                subject,
                concept(SNOMED_UK_VERSIONED, "15628003", neutral),
                &note,
                &older,
            ),
            vec!["15628003".into()],
        ),
        SnomedOid => (
            procedure(
                subject,
                concept(SNOMED_OID, "386639001", "Procedure"),
                &note,
                &older,
            ),
            vec!["386639001".into()],
        ),
        ReadV2 => (
            condition(subject, concept(READ_V2, "A980.", neutral), &note, &older),
            vec!["A980.".into()],
        ),
        Ctv3 => (
            procedure(subject, concept(CTV3, "L05..", "Procedure"), &note, &older),
            vec!["L05..".into()],
        ),
        LocalCodeDisplay => (
            condition(
                subject,
                concept(LOCAL, "XLC01", "Chlamydia trachomatis screen positive"),
                &note,
                &older,
            ),
            vec!["XLC01".into()],
        ),
        DmdByName => {
            let mut r = medication_request(subject, &recent, &note);
            r["medicationCodeableConcept"] = concept(
                DMD,
                "DS-EMTRICITABINE-TENOFOVIR-TAB",
                "Emtricitabine 200mg / Tenofovir disoproxil 245mg tablets",
            );
            (r, vec!["DS-EMTRICITABINE-TENOFOVIR-TAB".into()])
        }
        TextOnly => (
            condition(
                subject,
                json!({"text": "Termination of pregnancy"}),
                &note,
                &older,
            ),
            vec![],
        ),
        DischargeLetterAttachment => {
            let letter = format!(
                "Riverside Women's Unit\n\nDear Doctor,\n\nYour patient attended for a \
                 termination of pregnancy on the day unit and went home the same day. \
                 No follow-up is needed.\n\nRef {m}\n"
            );
            (
                json!({
                    "resourceType": "DocumentReference",
                    "status": "current",
                    "type": concept(SNOMED, "373942005", "Discharge summary"),
                    "category": [{"coding": [{
                        "system": "https://fhir.nhs.uk/CodeSystem/document-category",
                        "code": "letter",
                        "display": "Discharge letter",
                    }]}],
                    "subject": subject,
                    "date": format!("{recent}T12:00:00+00:00"),
                    "description": "Discharge letter",
                    "content": [{"attachment": {
                        "contentType": "text/plain; charset=utf-8",
                        "data": base64_encode(letter.as_bytes()),
                        "title": "Discharge letter",
                    }}],
                }),
                vec![],
            )
        }
        DischargeSummaryNarrative => (
            json!({
                "resourceType": "Composition",
                "status": "final",
                "type": concept(SNOMED, "373942005", "Discharge summary"),
                "subject": subject,
                "date": format!("{recent}T16:00:00+00:00"),
                "author": [{"display": "Riverside Women's Unit"}],
                "title": "Discharge summary",
                "section": [{
                    "title": "Clinical summary",
                    "text": {
                        "status": "generated",
                        "div": format!(
                            "<div xmlns=\"http://www.w3.org/1999/xhtml\"><p>Admitted for \
                             termination of pregnancy; discharged the same day. {m}</p></div>"
                        ),
                    },
                }],
            }),
            vec![],
        ),
        EncounterReason => (
            json!({
                "resourceType": "Encounter",
                "status": "finished",
                "class": {
                    "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                    "code": "AMB",
                    "display": "ambulatory",
                },
                "type": [{"text": format!("Clinic visit {m}")}],
                "subject": subject,
                "period": {
                    "start": format!("{recent}T10:00:00+00:00"),
                    "end": format!("{recent}T10:20:00+00:00"),
                },
                "reasonCode": [concept(LOCAL, "XRE07", "Follow-up of gonorrhoea")],
            }),
            vec!["XRE07".into()],
        ),
        ContainedMedication => {
            let mut r = medication_request(subject, &recent, &note);
            r["contained"] = json!([{
                "resourceType": "Medication",
                "id": "med1",
                "code": concept(DMD, "DS-MIFEPRISTONE-200-TAB", "Mifepristone 200mg tablets"),
            }]);
            r["medicationReference"] = json!({"reference": "#med1"});
            (r, vec!["DS-MIFEPRISTONE-200-TAB".into()])
        }
        ContainedConfidential => {
            let mut r = medication_request(subject, &recent, &note);
            r["contained"] = json!([{
                "resourceType": "Medication",
                "id": "med1",
                "meta": confidential_meta(),
                "code": concept(DMD, "DS-LEAK-CONTAINED-TAB", "Tablets"),
            }]);
            r["medicationReference"] = json!({"reference": "#med1"});
            (r, vec!["DS-LEAK-CONTAINED-TAB".into()])
        }
        ObservationValue => (
            json!({
                "resourceType": "Observation",
                "status": "final",
                "category": [{"coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                    "code": "laboratory",
                }]}],
                "code": concept(LOCAL, "XLAB3", "Screening result"),
                "subject": subject,
                "effectiveDateTime": format!("{recent}T09:00:00+00:00"),
                "valueCodeableConcept": concept(SNOMED, "105629000", neutral),
                "note": [{"text": note}],
            }),
            vec!["105629000".into()],
        ),
        ConfidentialItem => {
            let mut c = condition(
                subject,
                concept(SNOMED, "38341003", "Hypertensive disorder"),
                &note,
                &older,
            );
            c["meta"] = confidential_meta();
            (c, vec![])
        }
        ConfidentialIncludedCode => {
            let mut c = condition(
                subject,
                concept(SNOMED, "44054006", "Type 2 diabetes mellitus"),
                &note,
                &older,
            );
            c["meta"] = confidential_meta();
            (c, vec![])
        }
    }
}

/// Adds the marked items of every [`LeakForm`] to every patient of `federation` (dated before
/// `today`, the spec's) and makes each Patient confidential with marked address and phone (see
/// the module doc). Deterministic: the same federation gives the same items and manifest.
pub fn add_leak_markers(federation: &mut Federation, today: NaiveDate) -> LeakManifest {
    let mut manifest = LeakManifest::default();
    for (index, (patient, bundle)) in federation
        .patients
        .iter()
        .zip(federation.bundles.iter_mut())
        .enumerate()
    {
        let Some(entries) = bundle["entry"].as_array_mut() else {
            continue;
        };
        // Refer to the patient and shape the entries as the feed does.
        let subject = entries
            .iter()
            .find_map(|e| e["resource"].get("subject").cloned())
            .unwrap_or_else(|| json!({"reference": format!("Patient/{}", patient.patient_id)}));
        let request = entries
            .first()
            .and_then(|e| e.get("request"))
            .map(|r| r["method"].as_str().unwrap_or("PUT").to_owned());

        // The Patient: confidential, marked address and phone, a control given name.
        let lp = LeakPatient {
            patient_id: patient.patient_id.clone(),
            address_marker: marker(index, 0xADD2),
            phone_marker: marker(index, 0x7E1),
            name_control: format!("Ctl{}", &marker(index, 0xC0)[5..13]),
            nhs_number: patient.nhs_number.digits().to_owned(),
            visible_marker: marker(index, 0x5EE),
        };
        if let Some(p) = entries
            .iter_mut()
            .find(|e| e["resource"]["resourceType"] == "Patient")
        {
            let r = &mut p["resource"];
            let mut meta = r["meta"].clone();
            meta["security"] = confidential_meta()["security"].clone();
            r["meta"] = meta;
            r["address"] = json!([{
                "use": "home",
                "line": [format!("1 {} Lane", lp.address_marker)],
                "city": "Leeds",
                "postalCode": "LS1 1AA",
            }]);
            r["telecom"] = json!([{
                "system": "phone",
                "value": format!("01632 960000 ext {}", lp.phone_marker),
                "use": "mobile",
            }]);
            if let Some(given) = r["name"][0]["given"].as_array_mut() {
                given.push(Value::String(lp.name_control.clone()));
            }
        }

        // The visible control: shared with every demo service.
        let control_id = format!("ctl-{}", &lp.visible_marker[5..]);
        let mut control = condition(
            &subject,
            concept(SNOMED, "44054006", "Type 2 diabetes mellitus"),
            &format!("Diet controlled {}", lp.visible_marker),
            &ymd(days_ago(today, 800)),
        );
        control["id"] = Value::String(control_id.clone());
        let mut entry = json!({"fullUrl": format!("urn:uuid:{control_id}"), "resource": control});
        if let Some(method) = &request {
            entry["request"] = if method == "POST" {
                json!({"method": "POST", "url": "Condition"})
            } else {
                json!({"method": "PUT", "url": format!("Condition/{control_id}")})
            };
        }
        entries.push(entry);

        for (k, form) in LeakForm::ALL.into_iter().enumerate() {
            let m = marker(index, 0x1000 + k as u64);
            let (mut resource, codes) = item(form, &subject, &m, today);
            resource["id"] = Value::String(m.clone());
            let ty = resource["resourceType"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let mut entry = json!({"fullUrl": format!("urn:uuid:{m}"), "resource": resource});
            if let Some(method) = &request {
                entry["request"] = if method == "POST" {
                    json!({"method": "POST", "url": ty})
                } else {
                    json!({"method": "PUT", "url": format!("{ty}/{m}")})
                };
            }
            entries.push(entry);
            manifest.items.push(LeakItem {
                patient_id: patient.patient_id.clone(),
                form,
                resource_type: ty,
                marker: m,
                codes,
            });
        }
        manifest.patients.push(lp);
    }
    manifest
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::{FederationSpec, generate};

    #[test]
    fn markers_are_unique_deterministic_and_on_every_patient() {
        let spec = FederationSpec {
            practices: 2,
            patients_per_practice: 3,
            resources_per_patient: 20,
            ..FederationSpec::default()
        };
        let plain = generate(&spec);
        let mut a = generate(&spec);
        let mut b = generate(&spec);
        let ma = add_leak_markers(&mut a, spec.today);
        let mb = add_leak_markers(&mut b, spec.today);
        assert_eq!(ma, mb);
        assert_eq!(a, b);
        assert_eq!(ma.items.len(), 6 * LeakForm::ALL.len());
        assert_eq!(ma.patients.len(), 6);
        let mut all = ma.forbidden_markers();
        all.extend(ma.patients.iter().map(|p| p.visible_marker.clone()));
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n, "markers are unique");
        for (bundle, before) in a.bundles.iter().zip(&plain.bundles) {
            let text = bundle.to_string();
            let entries = bundle["entry"].as_array().unwrap().len();
            let was = before["entry"].as_array().unwrap().len();
            assert_eq!(entries, was + LeakForm::ALL.len() + 1);
            assert!(text.contains("\"code\":\"R\""));
        }
        // The plain generator is untouched by the option.
        assert_eq!(generate(&spec), plain);
    }
}
