//! Write-back: an accepted consultation note as FHIR R4, addressed to the patient's registered
//! practice, and the note's delivery state as the author's device reads it.
//!
//! # What this module owns
//!
//! - [`writeback_resources`]: from one [`AcceptedNote`] (what the federation accepted from a
//!   device, plus who wrote it, under which agreements, and for which practice) the resources
//!   that enter the record: a **Composition** (id = the note id), an **Encounter**, one
//!   **Observation** per recorded vital sign, the **NEWS2 total** when the set is complete, and a
//!   **Condition** for a coded problem. Pure and deterministic: the same note (and delivery
//!   state) builds byte-for-byte the same JSON, so importing it again changes nothing.
//! - The note's **delivery state** ([`NoteDelivery`]: accepted, received, filed, rejected; the
//!   practice; when; why) as the Doorstep extension [`DELIVERY_EXTENSION`] on the Composition:
//!   [`set_note_delivery`] writes it and [`note_delivery`] reads it. The device reads its
//!   note's state with [`note_delivery`] from the Composition it pulls.
//! - The note's **origin** ([`NoteOrigin`]: authoring service, agreements, note id) as the
//!   extension [`ORIGIN_EXTENSION`] on every resource built here; [`note_origin`] reads it
//!   (the agreement evaluation uses it to let the author's service see its own notes).
//!
//! # The shapes
//!
//! | resource | key elements |
//! |---|---|
//! | Composition `<note id>` | status `final` (`amended` when it replaces an earlier note, with `relatesTo {code: replaces, targetReference: Composition/<earlier>}`); type SNOMED 371530004 \|Clinical consultation report\|; subject, encounter, date = signed time, author and legal attester (display + user identifier), custodian = the registered practice (ODS identifier); sections: the note text as escaped XHTML narrative, the vital signs (entries), the problem (entry); extensions: origin and delivery |
//! | Encounter `<note id>-encounter` | status `finished`; class v3 ActCode (HH home health, AMB ambulatory, FLD field, EMER emergency: from the list that brought the patient); period = signed time; serviceProvider = the authoring service; participant = the author |
//! | Observation `<note id>-rr` | LOINC 9279-1 Respiratory rate, UCUM `/min` |
//! | Observation `<note id>-spo2` | LOINC 59408-5 (pulse oximetry) and 2708-6, UCUM `%`; a Scale 2 reading says so in `note` |
//! | Observation `<note id>-o2` | "Air or oxygen": code as text (the NHS Digital NEWS2 guidance codes it so), value SNOMED 722742002 \|Breathing room air\| or 371825009 \|Patient on oxygen\| |
//! | Observation `<note id>-sbp` | LOINC 8480-6 Systolic blood pressure, UCUM `mm[Hg]` |
//! | Observation `<note id>-pulse` | LOINC 8867-4 Heart rate, UCUM `/min` |
//! | Observation `<note id>-acvpu` | SNOMED 1104441000000107 \|ACVPU scale score\|, value from the HL7 UK CareConnect ACVPU value set (248234008 alert, 130987000 acute confusion, 300202002 responds to voice, 450847001 responds to pain, 422768004 unresponsive) |
//! | Observation `<note id>-temp` | LOINC 8310-5 Body temperature, UCUM `Cel` |
//! | Observation `<note id>-news2` | SNOMED 1104051000000101 \|Royal College of Physicians NEWS2 total score\|, `{score}`, sub-scores as components (SNOMED 1104301000000104 ...), derivedFrom the vitals; **only for a complete set**: a partial NEWS2 is a lower bound and must never be filed as the patient's score |
//! | Condition `<note id>-problem` | the SNOMED problem as chosen, clinicalStatus active, category encounter-diagnosis, recorder the author |
//!
//! Code sources: LOINC vital-sign codes as in the FHIR R4 vital signs profile; the NEWS2 total
//! and sub-score codes, ACVPU code and air/oxygen values as used by NHS Digital's CareConnect
//! NEWS2 guidance (FHIR-NEWS2) and HL7 UK's UK Core early-warning value sets; the ACVPU values
//! from the HL7 UK CareConnect-ACVPU value set. (LOINC 80288-4 was not used for ACVPU: the UK
//! profiles code it in SNOMED CT, which GP systems file natively.)
//!
//! # Invariants
//!
//! - Every resource references `Patient/<patient id>` (and, but the Encounter itself, the
//!   Encounter), carries the note tag ([`crate::fhir::NOTE_TAG_SYSTEM`], so it belongs to
//!   [`crate::Section::Notes`]), the source stamp of the authoring service (as the import
//!   stamps a practice: [`crate::fhir::stamp_source`]), `meta.source` naming the service, and
//!   the origin extension.
//! - **All of a note is in [`crate::Section::Notes`]**, its Encounter, Observations and Condition
//!   too, not in encounters, observations and problems: they are the note's content, so they
//!   travel with it and with its visibility (the author's service always; other services only
//!   through an agreement sharing notes). An agreement sharing observations but not notes must
//!   not receive another service's vital signs piecemeal, and a problem coded in a note is not
//!   the practice's problem list until the practice files it.
//! - Ids are derived from the note id (`<id>-<suffix>`), so a note id that is a valid FHIR id
//!   of at most 50 characters (a UUID is 36) gives valid ids.
//! - Free text only ever reaches XHTML escaped ([`escape_xhtml`]).
//! - No IO, no clock: times are passed in.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use crate::coding::{LOINC, ODS_SYSTEM, SNOMED};
use crate::fhir::{NOTE_TAG_SYSTEM, Resource, stamp_source};
use crate::json::{array_at, str_at, string_at};
use crate::news2::{self, Acvpu, AirOrOxygen, SpO2Scale, Vitals};

/// The note's delivery to the registered practice (on the Composition).
pub const DELIVERY_EXTENSION: &str =
    "https://fhir.doorstep.example/StructureDefinition/note-delivery";
/// Which service wrote the note, under which agreements (on every write-back resource).
pub const ORIGIN_EXTENSION: &str = "https://fhir.doorstep.example/StructureDefinition/note-origin";
/// Identifier system of Doorstep services (`riverside-dn`).
pub const SERVICE_SYSTEM: &str = "https://fhir.doorstep.example/Id/service";
/// Identifier system of Doorstep users (the author).
pub const USER_SYSTEM: &str = "https://fhir.doorstep.example/Id/user";
/// Identifier system of sharing agreements.
pub const AGREEMENT_SYSTEM: &str = "https://fhir.doorstep.example/Id/agreement";
/// Identifier system of notes (the id the device made).
pub const NOTE_SYSTEM: &str = "https://fhir.doorstep.example/Id/note";
/// SNOMED CT 371530004 |Clinical consultation report|: the document type GP systems file a
/// consultation written elsewhere under (it is the PRSB/NHS document type for consultation
/// reports; a "progress note" code would read as the practice's own entry).
pub const CONSULTATION_REPORT: &str = "371530004";
/// SNOMED CT |Royal College of Physicians NEWS2 total score|.
pub const NEWS2_TOTAL: &str = "1104051000000101";

const UCUM: &str = "http://unitsofmeasure.org";
const OBSERVATION_CATEGORY: &str = "http://terminology.hl7.org/CodeSystem/observation-category";
const ACT_CODE: &str = "http://terminology.hl7.org/CodeSystem/v3-ActCode";

/// Where a note stands with the registered practice. Only forwards:
/// accepted → received → filed | rejected (received may be skipped); filed and rejected are
/// final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DeliveryState {
    /// The federation stored it; it waits in the practice's inbox.
    Accepted,
    /// The practice's system fetched and holds it.
    Received,
    /// Filed in the patient's GP record.
    Filed,
    /// The practice did not file it (the reason says why).
    Rejected,
}

impl DeliveryState {
    pub const ALL: [DeliveryState; 4] = [
        DeliveryState::Accepted,
        DeliveryState::Received,
        DeliveryState::Filed,
        DeliveryState::Rejected,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Accepted => "accepted",
            DeliveryState::Received => "received",
            DeliveryState::Filed => "filed",
            DeliveryState::Rejected => "rejected",
        }
    }

    pub fn parse(s: &str) -> Option<DeliveryState> {
        DeliveryState::ALL.into_iter().find(|d| d.as_str() == s)
    }

    /// Filed or rejected: nothing comes after.
    pub fn is_final(self) -> bool {
        matches!(self, DeliveryState::Filed | DeliveryState::Rejected)
    }
}

impl std::fmt::Display for DeliveryState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An organisation by ODS code and name (the registered practice).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Practice {
    pub ods: String,
    pub name: String,
}

/// A note's delivery state, as the Composition carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteDelivery {
    pub state: DeliveryState,
    /// The practice the note is addressed to (and that acknowledged it).
    pub practice: Practice,
    /// When the state was reached (server time).
    pub at: DateTime<Utc>,
    /// Why the practice rejected it (only with [`DeliveryState::Rejected`]).
    pub reason: Option<String>,
}

/// Which service wrote a note, under which agreements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteOrigin {
    pub note_id: String,
    pub service_id: String,
    pub service_name: String,
    /// Ids of the agreements the author saw the patient under.
    pub agreements: Vec<String>,
}

/// The author of a note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteAuthor {
    pub user_id: String,
    pub display_name: String,
}

/// The v3 ActCode class of the visit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncounterClass {
    /// A district nurse at the patient's home (`HH`).
    HomeHealth,
    /// A booked appointment at a hub or clinic (`AMB`).
    Ambulatory,
    /// An ambulance crew at the scene (`FLD`).
    Field,
    /// Emergency access (break-glass) (`EMER`).
    Emergency,
}

impl EncounterClass {
    pub fn code(self) -> &'static str {
        match self {
            EncounterClass::HomeHealth => "HH",
            EncounterClass::Ambulatory => "AMB",
            EncounterClass::Field => "FLD",
            EncounterClass::Emergency => "EMER",
        }
    }

    pub fn display(self) -> &'static str {
        match self {
            EncounterClass::HomeHealth => "home health",
            EncounterClass::Ambulatory => "ambulatory",
            EncounterClass::Field => "field",
            EncounterClass::Emergency => "emergency",
        }
    }
}

/// A SNOMED CT problem chosen for a note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub code: String,
    pub display: String,
}

/// A note the federation accepted, with everything its resources say.
#[derive(Debug, Clone, PartialEq)]
pub struct AcceptedNote {
    pub id: String,
    pub patient_id: String,
    pub author: NoteAuthor,
    pub origin: NoteOrigin,
    pub encounter_class: EncounterClass,
    pub signed_at: DateTime<Utc>,
    pub text: String,
    pub vitals: Option<Vitals>,
    pub problem: Option<Problem>,
    /// The earlier note this one replaces.
    pub replaces: Option<String>,
    /// Its delivery state now (the registered practice is `delivery.practice`).
    pub delivery: NoteDelivery,
}

/// Id of the note's Encounter.
pub fn encounter_id(note_id: &str) -> String {
    format!("{note_id}-encounter")
}

/// Id of the note's Condition.
pub fn condition_id(note_id: &str) -> String {
    format!("{note_id}-problem")
}

/// `&`, `<`, `>`, `"` and `'` as XHTML entities.
pub fn escape_xhtml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Control characters are not allowed in XHTML; a tab or CR reads as a space.
            c if c.is_control() && c != '\n' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// A narrative `div`: one paragraph per line of `lines` (each escaped).
fn narrative<I: IntoIterator<Item = String>>(lines: I) -> Value {
    let mut div = String::from(r#"<div xmlns="http://www.w3.org/1999/xhtml">"#);
    for line in lines {
        div.push_str("<p>");
        div.push_str(&escape_xhtml(&line));
        div.push_str("</p>");
    }
    div.push_str("</div>");
    json!({"status": "generated", "div": div})
}

fn instant(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

fn author_reference(author: &NoteAuthor) -> Value {
    json!({"identifier": {"system": USER_SYSTEM, "value": author.user_id},
           "display": author.display_name})
}

fn origin_extension(origin: &NoteOrigin) -> Value {
    let mut parts = vec![
        json!({"url": "note", "valueIdentifier": {"system": NOTE_SYSTEM, "value": origin.note_id}}),
        json!({"url": "service", "valueIdentifier": {"system": SERVICE_SYSTEM, "value": origin.service_id}}),
        json!({"url": "serviceName", "valueString": origin.service_name}),
    ];
    for a in &origin.agreements {
        parts.push(json!({"url": "agreement", "valueIdentifier": {"system": AGREEMENT_SYSTEM, "value": a}}));
    }
    json!({"url": ORIGIN_EXTENSION, "extension": parts})
}

/// The elements every write-back resource shares; `stamp_source` adds the source tag.
fn base(note: &AcceptedNote, resource_type: &str, id: String) -> Value {
    json!({
        "resourceType": resource_type,
        "id": id,
        "meta": {
            "source": format!("{SERVICE_SYSTEM}/{}", note.origin.service_id),
            "tag": [{"system": NOTE_TAG_SYSTEM, "code": "note", "display": "Doorstep note"}],
        },
        "extension": [origin_extension(&note.origin)],
    })
}

fn finish(note: &AcceptedNote, json: Value) -> Resource {
    let mut r = Resource::from_json(json).expect("write-back resources have a type and an id");
    stamp_source(&mut r, &note.origin.service_id, &note.origin.service_name);
    r
}

fn concept(system: &str, code: &str, display: &str) -> Value {
    json!({"coding": [{"system": system, "code": code, "display": display}], "text": display})
}

fn quantity(value: Value, unit: &str, code: &str) -> Value {
    json!({"value": value, "unit": unit, "system": UCUM, "code": code})
}

/// One recorded vital sign: id suffix, category, code, value, and a line for the narrative.
struct Reading {
    suffix: &'static str,
    category: (&'static str, &'static str),
    code: Value,
    value: (&'static str, Value),
    line: String,
    note: Option<&'static str>,
}

const VITAL_SIGNS: (&str, &str) = ("vital-signs", "Vital Signs");
const SURVEY: (&str, &str) = ("survey", "Survey");

fn readings(v: &Vitals) -> Vec<Reading> {
    let mut out = Vec::new();
    if let Some(rr) = v.respiratory_rate {
        out.push(Reading {
            suffix: "rr",
            category: VITAL_SIGNS,
            code: concept(LOINC, "9279-1", "Respiratory rate"),
            value: (
                "valueQuantity",
                quantity(json!(rr), "breaths/minute", "/min"),
            ),
            line: format!("Respiratory rate: {rr} /min"),
            note: None,
        });
    }
    if let Some(spo2) = v.spo2 {
        let scale2 = v.spo2_scale == SpO2Scale::Scale2;
        out.push(Reading {
            suffix: "spo2",
            category: VITAL_SIGNS,
            code: json!({"coding": [
                {"system": LOINC, "code": "59408-5", "display": "Oxygen saturation in Arterial blood by Pulse oximetry"},
                {"system": LOINC, "code": "2708-6", "display": "Oxygen saturation in Arterial blood"}],
                "text": "Oxygen saturation"}),
            value: ("valueQuantity", quantity(json!(spo2), "%", "%")),
            line: format!(
                "SpO2: {spo2} %{}",
                if scale2 { " (NEWS2 Scale 2)" } else { "" }
            ),
            note: scale2.then_some(
                "Scored on NEWS2 SpO2 Scale 2 (prescribed target range 88-92%, hypercapnic respiratory failure)",
            ),
        });
    }
    if let Some(o2) = v.on_oxygen {
        let (code, display) = match o2 {
            AirOrOxygen::Air => ("722742002", "Breathing room air"),
            AirOrOxygen::Oxygen => ("371825009", "Patient on oxygen"),
        };
        out.push(Reading {
            suffix: "o2",
            category: SURVEY,
            code: json!({"text": "Air or oxygen"}),
            value: ("valueCodeableConcept", concept(SNOMED, code, display)),
            line: format!("Air or oxygen: {display}"),
            note: None,
        });
    }
    if let Some(sbp) = v.systolic_bp {
        out.push(Reading {
            suffix: "sbp",
            category: VITAL_SIGNS,
            code: concept(LOINC, "8480-6", "Systolic blood pressure"),
            value: ("valueQuantity", quantity(json!(sbp), "mmHg", "mm[Hg]")),
            line: format!("Systolic blood pressure: {sbp} mmHg"),
            note: None,
        });
    }
    if let Some(pulse) = v.pulse {
        out.push(Reading {
            suffix: "pulse",
            category: VITAL_SIGNS,
            code: concept(LOINC, "8867-4", "Heart rate"),
            value: (
                "valueQuantity",
                quantity(json!(pulse), "beats/minute", "/min"),
            ),
            line: format!("Pulse: {pulse} /min"),
            note: None,
        });
    }
    if let Some(level) = v.consciousness {
        let (code, display) = match level {
            Acvpu::Alert => ("248234008", "Mentally alert"),
            Acvpu::NewConfusion => ("130987000", "Acute confusion"),
            Acvpu::Voice => ("300202002", "Responds to voice"),
            Acvpu::Pain => ("450847001", "Responds to pain"),
            Acvpu::Unresponsive => ("422768004", "Unresponsive"),
        };
        out.push(Reading {
            suffix: "acvpu",
            category: SURVEY,
            code: concept(
                SNOMED,
                "1104441000000107",
                "ACVPU (Alert Confusion Voice Pain Unresponsive) scale score",
            ),
            value: ("valueCodeableConcept", concept(SNOMED, code, display)),
            line: format!("Consciousness (ACVPU): {} ({display})", level.letter()),
            note: None,
        });
    }
    if let Some(t) = v.temperature {
        out.push(Reading {
            suffix: "temp",
            category: VITAL_SIGNS,
            code: concept(LOINC, "8310-5", "Body temperature"),
            // Tenths as a decimal: 371 -> 37.1 (serde_json writes the shortest form).
            value: ("valueQuantity", quantity(json!(t.celsius()), "°C", "Cel")),
            line: format!("Temperature: {t}"),
            note: None,
        });
    }
    out
}

/// NEWS2 sub-score SNOMED codes, in the order of [`news2::Scores::to_array`].
fn subscore_codes(scale: SpO2Scale) -> [(&'static str, &'static str); 7] {
    let spo2 = match scale {
        SpO2Scale::Scale1 => (
            "1104311000000102",
            "Royal College of Physicians NEWS2 (National Early Warning Score 2) - oxygen saturation scale 1 score",
        ),
        SpO2Scale::Scale2 => (
            "1104321000000108",
            "Royal College of Physicians NEWS2 (National Early Warning Score 2) - oxygen saturation scale 2 score",
        ),
    };
    [
        (
            "1104301000000104",
            "Royal College of Physicians NEWS2 (National Early Warning Score 2) - respiration rate score",
        ),
        spo2,
        (
            "1104331000000105",
            "Royal College of Physicians NEWS2 (National Early Warning Score 2) - air or oxygen score",
        ),
        (
            "1104341000000101",
            "Royal College of Physicians NEWS2 (National Early Warning Score 2) - systolic blood pressure score",
        ),
        (
            "1104351000000103",
            "Royal College of Physicians NEWS2 (National Early Warning Score 2) - pulse score",
        ),
        (
            "1104361000000100",
            "Royal College of Physicians NEWS2 (National Early Warning Score 2) - consciousness score",
        ),
        (
            "1104371000000107",
            "Royal College of Physicians NEWS2 (National Early Warning Score 2) - temperature score",
        ),
    ]
}

/// The resources an accepted note becomes, Composition first (see the module doc).
pub fn writeback_resources(note: &AcceptedNote) -> Vec<Resource> {
    let patient = json!({"reference": format!("Patient/{}", note.patient_id)});
    let encounter_ref = json!({"reference": format!("Encounter/{}", encounter_id(&note.id))});
    let signed = instant(note.signed_at);
    let author = author_reference(&note.author);
    let mut out = Vec::new();

    // The Encounter: the visit the note records.
    let mut enc = base(note, "Encounter", encounter_id(&note.id));
    enc["status"] = json!("finished");
    enc["class"] = json!({"system": ACT_CODE, "code": note.encounter_class.code(),
                          "display": note.encounter_class.display()});
    enc["subject"] = patient.clone();
    enc["participant"] = json!([{"individual": author.clone()}]);
    enc["period"] = json!({"start": signed, "end": signed});
    enc["serviceProvider"] = json!({
        "identifier": {"system": SERVICE_SYSTEM, "value": note.origin.service_id},
        "display": note.origin.service_name});
    let encounter = finish(note, enc);

    // Observations, one per recorded vital sign, then the NEWS2 total of a complete set.
    let mut observations = Vec::new();
    let mut vital_lines = Vec::new();
    if let Some(vitals) = &note.vitals {
        let mut derived = Vec::new();
        for reading in readings(vitals) {
            let id = format!("{}-{}", note.id, reading.suffix);
            let mut obs = base(note, "Observation", id.clone());
            obs["status"] = json!("final");
            obs["category"] = json!([{"coding": [{"system": OBSERVATION_CATEGORY,
                "code": reading.category.0, "display": reading.category.1}]}]);
            obs["code"] = reading.code;
            obs["subject"] = patient.clone();
            obs["encounter"] = encounter_ref.clone();
            obs["effectiveDateTime"] = json!(signed);
            obs["performer"] = json!([author.clone()]);
            obs[reading.value.0] = reading.value.1;
            if let Some(text) = reading.note {
                obs["note"] = json!([{"text": text}]);
            }
            derived.push(json!({"reference": format!("Observation/{id}")}));
            vital_lines.push(reading.line);
            observations.push(finish(note, obs));
        }
        let score = news2::score(vitals);
        if score.complete {
            let id = format!("{}-news2", note.id);
            let mut obs = base(note, "Observation", id);
            obs["status"] = json!("final");
            obs["category"] = json!([{"coding": [{"system": OBSERVATION_CATEGORY,
                "code": SURVEY.0, "display": SURVEY.1}]}]);
            obs["code"] = concept(
                SNOMED,
                NEWS2_TOTAL,
                "Royal College of Physicians NEWS2 (National Early Warning Score 2) total score",
            );
            obs["subject"] = patient.clone();
            obs["encounter"] = encounter_ref.clone();
            obs["effectiveDateTime"] = json!(signed);
            obs["performer"] = json!([author.clone()]);
            obs["valueQuantity"] = json!({"value": score.total, "system": UCUM, "code": "{score}"});
            obs["interpretation"] = json!([{"text": score.band.label()}]);
            obs["derivedFrom"] = json!(derived);
            let components: Vec<Value> = subscore_codes(vitals.spo2_scale)
                .into_iter()
                .zip(score.scores.to_array())
                .filter_map(|((code, display), s)| {
                    s.map(|s| {
                        json!({"code": concept(SNOMED, code, display),
                               "valueQuantity": {"value": s, "system": UCUM, "code": "{score}"}})
                    })
                })
                .collect();
            obs["component"] = json!(components);
            vital_lines.push(format!("NEWS2: {} ({})", score.total, score.band.label()));
            observations.push(finish(note, obs));
        } else if !vital_lines.is_empty() {
            vital_lines.push("NEWS2 not scored: not every parameter was recorded".into());
        }
    }

    // The Condition of a coded problem.
    let condition = note.problem.as_ref().map(|p| {
        let mut c = base(note, "Condition", condition_id(&note.id));
        c["clinicalStatus"] = json!({"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]});
        c["verificationStatus"] = json!({"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "confirmed"}]});
        c["category"] = json!([{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/condition-category",
            "code": "encounter-diagnosis", "display": "Encounter Diagnosis"}]}]);
        c["code"] = concept(SNOMED, &p.code, &p.display);
        c["subject"] = patient.clone();
        c["encounter"] = encounter_ref.clone();
        c["recordedDate"] = json!(signed);
        c["recorder"] = author.clone();
        finish(note, c)
    });

    // The Composition: the note itself.
    let mut comp = base(note, "Composition", note.id.clone());
    comp["identifier"] = json!({"system": NOTE_SYSTEM, "value": note.id});
    comp["status"] = json!(if note.replaces.is_some() {
        "amended"
    } else {
        "final"
    });
    comp["type"] = concept(SNOMED, CONSULTATION_REPORT, "Clinical consultation report");
    comp["subject"] = patient.clone();
    comp["encounter"] = encounter_ref.clone();
    comp["date"] = json!(signed);
    comp["author"] = json!([author.clone()]);
    comp["title"] = json!(format!("Consultation note: {}", note.origin.service_name));
    comp["attester"] = json!([{"mode": "legal", "time": signed, "party": author.clone()}]);
    comp["custodian"] = json!({
        "identifier": {"system": ODS_SYSTEM, "value": note.delivery.practice.ods},
        "display": note.delivery.practice.name});
    if let Some(earlier) = &note.replaces {
        comp["relatesTo"] = json!([{"code": "replaces",
            "targetReference": {"reference": format!("Composition/{earlier}")}}]);
    }
    let text_lines: Vec<String> = if note.text.trim().is_empty() {
        vec!["No free text was written.".to_string()]
    } else {
        note.text.lines().map(str::to_owned).collect()
    };
    let mut sections = vec![json!({
        "title": "Consultation note",
        "code": concept(SNOMED, CONSULTATION_REPORT, "Clinical consultation report"),
        "text": narrative(text_lines),
    })];
    if !observations.is_empty() || !vital_lines.is_empty() {
        let entries: Vec<Value> = observations
            .iter()
            .map(|o| json!({"reference": o.reference()}))
            .collect();
        let mut s = json!({"title": "Vital signs", "text": narrative(vital_lines)});
        if !entries.is_empty() {
            s["entry"] = json!(entries);
        }
        sections.push(s);
    }
    if let (Some(c), Some(p)) = (&condition, &note.problem) {
        sections.push(json!({
            "title": "Problem",
            "text": narrative([format!("{} (SNOMED CT {})", p.display, p.code)]),
            "entry": [{"reference": c.reference()}],
        }));
    }
    comp["section"] = json!(sections);
    let mut composition = finish(note, comp);
    set_note_delivery(&mut composition, &note.delivery);

    out.push(composition);
    out.push(encounter);
    out.extend(observations);
    out.extend(condition);
    out
}

/// Sets the delivery extension of a note's Composition, replacing any earlier one.
pub fn set_note_delivery(resource: &mut Resource, delivery: &NoteDelivery) {
    let mut parts = vec![
        json!({"url": "state", "valueCode": delivery.state.as_str()}),
        json!({"url": "practice", "valueReference": {
            "identifier": {"system": ODS_SYSTEM, "value": delivery.practice.ods},
            "display": delivery.practice.name}}),
        json!({"url": "at", "valueDateTime": instant(delivery.at)}),
    ];
    if let Some(reason) = &delivery.reason {
        parts.push(json!({"url": "reason", "valueString": reason}));
    }
    let ext = json!({"url": DELIVERY_EXTENSION, "extension": parts});
    let Some(obj) = resource.json.as_object_mut() else {
        return;
    };
    let list = obj.entry("extension").or_insert_with(|| json!([]));
    if !list.is_array() {
        *list = json!([]);
    }
    let list = list.as_array_mut().expect("extension is an array");
    list.retain(|e| str_at(e, "url") != Some(DELIVERY_EXTENSION));
    list.push(ext);
}

fn extension<'a>(v: &'a Value, url: &str) -> Option<&'a Value> {
    array_at(v, "extension")
        .iter()
        .find(|e| str_at(e, "url") == Some(url))
}

/// The delivery state a note's Composition carries; `None` when it has none (not a Doorstep
/// note, or the extension is incomplete: state, practice ODS code and time are required).
pub fn note_delivery(resource: &Resource) -> Option<NoteDelivery> {
    let ext = extension(&resource.json, DELIVERY_EXTENSION)?;
    let state = DeliveryState::parse(str_at(extension(ext, "state")?, "valueCode")?)?;
    let practice = extension(ext, "practice")?.get("valueReference")?;
    let ods = string_at(practice.get("identifier")?, "value")?;
    let name = string_at(practice, "display").unwrap_or_default();
    let at = DateTime::parse_from_rfc3339(str_at(extension(ext, "at")?, "valueDateTime")?)
        .ok()?
        .with_timezone(&Utc);
    let reason = extension(ext, "reason").and_then(|r| string_at(r, "valueString"));
    Some(NoteDelivery {
        state,
        practice: Practice { ods, name },
        at,
        reason,
    })
}

/// The origin a write-back resource carries; `None` when it has none.
pub fn note_origin(resource: &Resource) -> Option<NoteOrigin> {
    let ext = extension(&resource.json, ORIGIN_EXTENSION)?;
    let ident = |part: &Value| {
        part.get("valueIdentifier")
            .and_then(|i| string_at(i, "value"))
    };
    let mut origin = NoteOrigin {
        note_id: String::new(),
        service_id: String::new(),
        service_name: String::new(),
        agreements: Vec::new(),
    };
    for part in array_at(ext, "extension") {
        match str_at(part, "url") {
            Some("note") => origin.note_id = ident(part).unwrap_or_default(),
            Some("service") => origin.service_id = ident(part).unwrap_or_default(),
            Some("serviceName") => {
                origin.service_name = string_at(part, "valueString").unwrap_or_default();
            }
            Some("agreement") => origin.agreements.extend(ident(part)),
            _ => {}
        }
    }
    (!origin.service_id.is_empty()).then_some(origin)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Section;
    use crate::fhir::ResourceType;
    use crate::news2::Temperature;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn note() -> AcceptedNote {
        AcceptedNote {
            id: "0b8f3f52-5d0e-4d7e-9c61-2f1a4f6f9e10".into(),
            patient_id: "p1".into(),
            author: NoteAuthor {
                user_id: "u1".into(),
                display_name: "Nia Evans".into(),
            },
            origin: NoteOrigin {
                note_id: "0b8f3f52-5d0e-4d7e-9c61-2f1a4f6f9e10".into(),
                service_id: "riverside-dn".into(),
                service_name: "Riverside District Nursing".into(),
                agreements: vec!["riverside-dn-2026".into()],
            },
            encounter_class: EncounterClass::HomeHealth,
            signed_at: at("2026-12-01T09:30:00Z"),
            text: "Leg ulcer <redressed> & \"healing\"\nReview in 3 days".into(),
            vitals: Some(Vitals {
                respiratory_rate: Some(18),
                spo2: Some(96),
                spo2_scale: SpO2Scale::Scale1,
                on_oxygen: Some(AirOrOxygen::Air),
                systolic_bp: Some(120),
                pulse: Some(80),
                consciousness: Some(Acvpu::Alert),
                temperature: Some(Temperature::from_tenths(371)),
            }),
            problem: Some(Problem {
                code: "402863003".into(),
                display: "Venous leg ulcer".into(),
            }),
            replaces: None,
            delivery: NoteDelivery {
                state: DeliveryState::Accepted,
                practice: Practice {
                    ods: "A81001".into(),
                    name: "Riverside Surgery".into(),
                },
                at: at("2026-12-01T10:00:00Z"),
                reason: None,
            },
        }
    }

    fn by_id<'a>(rs: &'a [Resource], suffix: &str) -> &'a Resource {
        rs.iter()
            .find(|r| r.id.ends_with(suffix))
            .unwrap_or_else(|| panic!("no resource {suffix}"))
    }

    #[test]
    fn every_vital_is_loinc_or_snomed_coded_with_ucum_units() {
        let rs = writeback_resources(&note());
        let expect = [
            ("-rr", "9279-1", "/min", json!(18)),
            ("-spo2", "59408-5", "%", json!(96)),
            ("-sbp", "8480-6", "mm[Hg]", json!(120)),
            ("-pulse", "8867-4", "/min", json!(80)),
            ("-temp", "8310-5", "Cel", json!(37.1)),
        ];
        for (suffix, loinc, ucum, value) in expect {
            let o = &by_id(&rs, suffix).json;
            assert_eq!(o["code"]["coding"][0]["system"], LOINC, "{suffix}");
            assert_eq!(o["code"]["coding"][0]["code"], loinc, "{suffix}");
            assert_eq!(o["valueQuantity"]["system"], UCUM, "{suffix}");
            assert_eq!(o["valueQuantity"]["code"], ucum, "{suffix}");
            assert_eq!(o["valueQuantity"]["value"], value, "{suffix}");
            assert_eq!(o["category"][0]["coding"][0]["code"], "vital-signs");
        }
        assert_eq!(
            by_id(&rs, "-spo2").json["code"]["coding"][1]["code"],
            "2708-6"
        );
        let acvpu = &by_id(&rs, "-acvpu").json;
        assert_eq!(acvpu["code"]["coding"][0]["code"], "1104441000000107");
        assert_eq!(
            acvpu["valueCodeableConcept"]["coding"][0]["code"],
            "248234008"
        );
        let o2 = &by_id(&rs, "-o2").json;
        assert_eq!(o2["valueCodeableConcept"]["coding"][0]["code"], "722742002");
        let news = &by_id(&rs, "-news2").json;
        assert_eq!(news["code"]["coding"][0]["code"], NEWS2_TOTAL);
        assert_eq!(news["valueQuantity"]["value"], 0);
        assert_eq!(news["valueQuantity"]["code"], "{score}");
        assert_eq!(news["component"].as_array().unwrap().len(), 7);
        assert_eq!(news["derivedFrom"].as_array().unwrap().len(), 7);
    }

    #[test]
    fn a_partial_set_files_its_readings_but_no_news2_total() {
        let mut n = note();
        n.vitals = Some(Vitals {
            pulse: Some(130),
            spo2: Some(94),
            spo2_scale: SpO2Scale::Scale2,
            ..Vitals::default()
        });
        let rs = writeback_resources(&n);
        assert!(rs.iter().all(|r| !r.id.ends_with("-news2")));
        assert!(
            by_id(&rs, "-spo2").json["note"][0]["text"]
                .as_str()
                .unwrap()
                .contains("Scale 2")
        );
        let comp = &rs[0].json;
        let vitals = comp["section"][1]["text"]["div"].as_str().unwrap();
        assert!(vitals.contains("NEWS2 not scored"), "{vitals}");
        assert_eq!(comp["section"][1]["entry"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn every_resource_references_patient_and_encounter_and_carries_its_provenance() {
        let n = note();
        let rs = writeback_resources(&n);
        assert_eq!(rs.len(), 1 + 1 + 8 + 1);
        let enc = encounter_id(&n.id);
        for r in &rs {
            assert_eq!(r.patient_id().as_deref(), Some("p1"), "{}", r.reference());
            if r.resource_type != ResourceType::Encounter {
                assert_eq!(
                    r.json["encounter"]["reference"],
                    format!("Encounter/{enc}"),
                    "{}",
                    r.reference()
                );
            }
            assert!(r.is_note());
            assert_eq!(r.section(), Some(Section::Notes));
            assert_eq!(r.source_ods().as_deref(), Some("riverside-dn"));
            assert_eq!(
                r.source_name().as_deref(),
                Some("Riverside District Nursing")
            );
            assert_eq!(
                r.json["meta"]["source"],
                "https://fhir.doorstep.example/Id/service/riverside-dn"
            );
            let origin = note_origin(r).unwrap();
            assert_eq!(origin.service_id, "riverside-dn");
            assert_eq!(origin.note_id, n.id);
            assert_eq!(origin.agreements, ["riverside-dn-2026"]);
            assert!(r.id.len() <= 64);
        }
        let comp = &rs[0];
        assert_eq!(comp.resource_type, ResourceType::Composition);
        assert_eq!(comp.id, n.id);
        let j = &comp.json;
        assert_eq!(j["status"], "final");
        assert_eq!(j["type"]["coding"][0]["code"], CONSULTATION_REPORT);
        assert_eq!(j["date"], "2026-12-01T09:30:00Z");
        assert_eq!(j["author"][0]["display"], "Nia Evans");
        assert_eq!(j["author"][0]["identifier"]["value"], "u1");
        assert_eq!(j["custodian"]["identifier"]["system"], ODS_SYSTEM);
        assert_eq!(j["custodian"]["identifier"]["value"], "A81001");
        assert!(j.get("relatesTo").is_none());
        let e = &by_id(&rs, "-encounter").json;
        assert_eq!(e["status"], "finished");
        assert_eq!(e["class"]["code"], "HH");
        assert_eq!(e["period"]["start"], "2026-12-01T09:30:00Z");
        assert_eq!(e["serviceProvider"]["identifier"]["value"], "riverside-dn");
        let c = &by_id(&rs, "-problem").json;
        assert_eq!(c["code"]["coding"][0]["system"], SNOMED);
        assert_eq!(c["code"]["coding"][0]["code"], "402863003");
        assert_eq!(c["code"]["coding"][0]["display"], "Venous leg ulcer");
        // The sections reference what was built.
        let refs: Vec<&str> = j["section"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| array_at(s, "entry"))
            .filter_map(|e| e["reference"].as_str())
            .collect();
        assert_eq!(refs.len(), 9);
    }

    #[test]
    fn the_text_reaches_the_narrative_escaped_line_by_line() {
        let rs = writeback_resources(&note());
        let div = rs[0].json["section"][0]["text"]["div"].as_str().unwrap();
        assert_eq!(
            div,
            "<div xmlns=\"http://www.w3.org/1999/xhtml\"><p>Leg ulcer &lt;redressed&gt; &amp; \
             &quot;healing&quot;</p><p>Review in 3 days</p></div>"
        );
        assert_eq!(escape_xhtml("a'b\u{7}c"), "a&#39;b c");
        let mut n = note();
        n.text = "  ".into();
        let rs = writeback_resources(&n);
        assert!(
            rs[0].json["section"][0]["text"]["div"]
                .as_str()
                .unwrap()
                .contains("No free text")
        );
    }

    #[test]
    fn an_amendment_replaces_the_earlier_composition() {
        let mut n = note();
        n.replaces = Some("earlier-note".into());
        n.vitals = None;
        n.problem = None;
        let rs = writeback_resources(&n);
        assert_eq!(rs.len(), 2);
        assert_eq!(rs[0].json["status"], "amended");
        assert_eq!(rs[0].json["relatesTo"][0]["code"], "replaces");
        assert_eq!(
            rs[0].json["relatesTo"][0]["targetReference"]["reference"],
            "Composition/earlier-note"
        );
        assert_eq!(rs[0].json["section"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn the_delivery_extension_round_trips_and_is_replaced_not_repeated() {
        let n = note();
        let mut comp = writeback_resources(&n).remove(0);
        assert_eq!(note_delivery(&comp), Some(n.delivery.clone()));
        let rejected = NoteDelivery {
            state: DeliveryState::Rejected,
            practice: n.delivery.practice.clone(),
            at: at("2026-12-01T14:02:00Z"),
            reason: Some("Not our patient since 1 November".into()),
        };
        set_note_delivery(&mut comp, &rejected);
        assert_eq!(note_delivery(&comp), Some(rejected));
        let count = array_at(&comp.json, "extension")
            .iter()
            .filter(|e| e["url"] == DELIVERY_EXTENSION)
            .count();
        assert_eq!(count, 1);
        // The origin extension is kept beside it.
        assert!(note_origin(&comp).is_some());
        // Not a note: nothing to read.
        let other = Resource::from_json(json!({"resourceType": "Composition", "id": "x"})).unwrap();
        assert_eq!(note_delivery(&other), None);
        assert_eq!(note_origin(&other), None);
        for s in DeliveryState::ALL {
            assert_eq!(DeliveryState::parse(s.as_str()), Some(s));
        }
    }

    /// The write-back passes the import's strict gate (ids, references, codings with system
    /// and code), beside its Patient, and keeps the source stamp of the authoring service.
    #[test]
    fn the_resources_pass_the_strict_import_check() {
        use crate::coding::NHS_NUMBER_SYSTEM;
        use crate::fhir::{parse_bundle, validate_for_import};
        let mut entries = vec![json!({"resource": {"resourceType": "Patient", "id": "p1",
            "identifier": [{"system": NHS_NUMBER_SYSTEM, "value": "9434765919"}],
            "generalPractitioner": [{"identifier": {"system": ODS_SYSTEM, "value": "A81001"}}]}})];
        entries.extend(
            writeback_resources(&note())
                .into_iter()
                .map(|r| json!({"resource": r.json})),
        );
        let text = json!({"resourceType": "Bundle", "type": "collection", "entry": entries});
        let plan = validate_for_import(&parse_bundle(&text.to_string()).unwrap()).unwrap();
        assert_eq!(plan.resources.len(), 12);
        assert!(
            plan.resources[1..]
                .iter()
                .all(|r| r.source_ods().as_deref() == Some("riverside-dn"))
        );
    }

    #[test]
    fn the_same_note_builds_the_same_json() {
        assert_eq!(writeback_resources(&note()), writeback_resources(&note()));
    }
}
