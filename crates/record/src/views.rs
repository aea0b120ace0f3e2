//! The record as the screens show it: typed views built from a patient's resources.
//!
//! [`build_record`] takes every resource the device holds for one patient (already filtered by
//! the agreements on the server) and builds each section. Everything here is derived: the
//! resources stay the source of truth, and a view is rebuilt whenever they change.
//!
//! Rules worth knowing:
//! - **Provenance** on every item: source organisation from the source `meta.tag`
//!   ([`crate::fhir::SOURCE_TAG_SYSTEM`]), recorded date ([`Resource::recorded_date`]) and the
//!   author (recorder/asserter/requester/performer/author display, or the name of the
//!   Practitioner it references when that is among the resources).
//! - Items with status `entered-in-error` (and refuted problems or allergies) are never shown.
//! - **Problems**: `clinicalStatus` active, recurrence or relapse is active; inactive,
//!   remission or resolved is past; without a status, an abatement date makes it past.
//! - **Medications**: a `MedicationRequest` is a *repeat* when `courseOfTherapyType` is
//!   `continuous` (or the UK codes `repeat` / `repeat-dispensing`) or it carries the UK Core
//!   repeat-information extension; otherwise acute. It is *current* when its status is
//!   active, on-hold, draft or unknown (or absent), its intent is not `proposal`, and its
//!   validity period has not ended before today; otherwise *past*. A `MedicationStatement` is
//!   current when its status is active, intended, on-hold or unknown (or absent) and its
//!   effective period has not ended before today; it is a repeat only with the UK Core
//!   repeat-information extension. [`Medications`] holds three disjoint lists: current acute
//!   courses, current repeats, and past; the summary shows both current lists.
//! - **Alerts** are active Flags, classified by SNOMED code first, then by text (see
//!   [`alert_kind`]); DNACPR first, then ReSPECT, safeguarding, others.
//! - **Observations** become one series per code, points oldest first; an Observation coded
//!   with both LOINC and SNOMED joins any series sharing either code; components (blood
//!   pressure) become their own series (systolic, diastolic). Vital signs come first.
//! - Lists are newest first, ties broken by id so the order is stable.
//! - Dates and times are shown as the sender wrote them (no time-zone conversion).

use std::collections::HashMap;

use chrono::{NaiveDate, NaiveDateTime};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::coding::{Coding, Concept, NHS_NUMBER_SYSTEM, ODS_SYSTEM, SNOMED};
use crate::fhir::{Resource, ResourceType};
use crate::json::{
    array_at, base64_decode, date_at, datetime_at, first_datetime, reference_id, str_at, string_at,
    xhtml_to_text,
};
use crate::nhs::NhsNumber;

/// Where an item came from.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Provenance {
    /// ODS code of the source organisation.
    pub source_ods: Option<String>,
    pub source_name: Option<String>,
    /// The item's clinical or recording date.
    pub recorded: Option<NaiveDate>,
    /// Who recorded or performed it, as the sender named them.
    pub author: Option<String>,
}

/// The banner and demographics.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct PatientDetails {
    pub id: String,
    /// Ten digits, when the record holds a valid NHS number.
    pub nhs_number: Option<String>,
    /// `999 123 4567`.
    pub nhs_number_display: Option<String>,
    /// `EVANS, Siân (Mrs)`.
    pub name_display: String,
    /// Given names, space separated.
    pub given: String,
    pub family: String,
    pub prefix: Option<String>,
    pub birth_date: Option<NaiveDate>,
    /// Whole years on the `today` given to [`build_record`] (none from [`patient_details`]).
    pub age: Option<u32>,
    /// FHIR administrative gender: `female`, `male`, `other`, `unknown`.
    pub gender: Option<String>,
    /// Address lines, then town and county; no postcode.
    pub address_lines: Vec<String>,
    pub postcode: Option<String>,
    /// One line: `12 Station Road, Leeds, LS1 4AB`.
    pub address_display: String,
    pub practice_ods: Option<String>,
    pub practice_name: Option<String>,
    pub phone: Option<String>,
    /// The patient asked to keep the record confidential and the address was withheld at the
    /// server ([`crate::sensitive::redact_for_sharing`]): the screen says so rather than
    /// showing a blank.
    #[serde(default)]
    pub address_withheld: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProblemItem {
    pub id: String,
    pub code: Option<Coding>,
    /// The sender's text for the problem.
    pub text: String,
    /// `active`, `resolved`, ... as sent.
    pub clinical_status: Option<String>,
    pub onset: Option<NaiveDate>,
    pub abatement: Option<NaiveDate>,
    pub provenance: Provenance,
}

/// Whether a medication is a one-off course or a repeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MedicationCourse {
    Acute,
    Repeat,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MedicationItem {
    pub id: String,
    /// The dm+d code (SNOMED codes of a medication are normalised to dm+d).
    pub code: Option<Coding>,
    /// The sender's name for the product: `Ramipril 5mg capsules`.
    pub name: String,
    /// Dosage instruction text.
    pub dosage: Option<String>,
    /// Quantity per issue: `28 capsule`.
    pub quantity: Option<String>,
    pub status: Option<String>,
    pub course: MedicationCourse,
    pub start: Option<NaiveDate>,
    pub end: Option<NaiveDate>,
    pub provenance: Provenance,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AllergyItem {
    pub id: String,
    pub code: Option<Coding>,
    /// What the patient reacts to, as the sender named it.
    pub substance: String,
    /// Manifestations: `Urticaria`, `Anaphylaxis`.
    pub reactions: Vec<String>,
    /// `mild`, `moderate`, `severe` (worst reaction).
    pub severity: Option<String>,
    /// `low`, `high`, `unable-to-assess`.
    pub criticality: Option<String>,
    pub clinical_status: Option<String>,
    pub provenance: Provenance,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// Do not attempt cardiopulmonary resuscitation.
    Dnacpr,
    /// A ReSPECT plan is in place.
    Respect,
    Safeguarding,
    Other,
}

impl AlertKind {
    /// The badge text: `DNACPR`, `ReSPECT`, `Safeguarding`, `Alert`.
    pub fn label(self) -> &'static str {
        match self {
            AlertKind::Dnacpr => "DNACPR",
            AlertKind::Respect => "ReSPECT",
            AlertKind::Safeguarding => "Safeguarding",
            AlertKind::Other => "Alert",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertItem {
    pub id: String,
    pub kind: AlertKind,
    pub text: String,
    pub provenance: Provenance,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EncounterItem {
    pub id: String,
    pub start: Option<NaiveDateTime>,
    pub end: Option<NaiveDateTime>,
    /// What kind of encounter (the type's text): `Home visit`.
    pub kind: String,
    /// Setting: `Ambulatory`, `Home visit`, `Inpatient`, `Emergency`, `Virtual`, or as sent.
    pub class: Option<String>,
    pub reason: Option<String>,
    pub status: Option<String>,
    pub location: Option<String>,
    pub provenance: Provenance,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObservationPoint {
    pub id: String,
    pub when: NaiveDateTime,
    pub value: Option<f64>,
    /// A non-numeric value, or a comparator (`<5`) as text.
    pub text: Option<String>,
    pub provenance: Provenance,
    /// The reference range the source gave (`referenceRange[0]`), in the series' unit.
    #[serde(default)]
    pub low: Option<f64>,
    #[serde(default)]
    pub high: Option<f64>,
    /// Flagged abnormal by the source (interpretation H, L, A and their kin) or outside the
    /// reference range.
    #[serde(default)]
    pub abnormal: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObservationSeries {
    pub code: Coding,
    pub name: String,
    pub unit: Option<String>,
    /// Oldest first.
    pub points: Vec<ObservationPoint>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImmunisationItem {
    pub id: String,
    pub code: Option<Coding>,
    pub vaccine: String,
    pub date: Option<NaiveDate>,
    /// `completed`, `not-done`.
    pub status: Option<String>,
    pub provenance: Provenance,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcedureItem {
    pub id: String,
    pub code: Option<Coding>,
    pub name: String,
    pub date: Option<NaiveDate>,
    pub status: Option<String>,
    pub provenance: Provenance,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DocumentSection {
    pub title: String,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DocumentItem {
    pub id: String,
    /// `DocumentReference` or `Composition`.
    pub resource_type: String,
    /// The document type's text: `Discharge summary`.
    pub kind: String,
    pub title: String,
    pub date: Option<NaiveDate>,
    /// `current`, `superseded`, `final`, ...
    pub status: Option<String>,
    /// The readable body: decoded text attachments, or the sections one after another.
    pub text: String,
    /// A Composition's sections (empty for a DocumentReference).
    pub sections: Vec<DocumentSection>,
    pub provenance: Provenance,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Summary {
    pub active_problems: Vec<ProblemItem>,
    /// Current repeats, then current acute courses.
    pub current_medications: Vec<MedicationItem>,
    /// Allergies not marked inactive or resolved.
    pub allergies: Vec<AllergyItem>,
    pub alerts: Vec<AlertItem>,
    /// The three newest encounters.
    pub recent_encounters: Vec<EncounterItem>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Problems {
    pub active: Vec<ProblemItem>,
    pub past: Vec<ProblemItem>,
}

/// Three disjoint lists (see the module doc for the rule).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Medications {
    /// Current acute courses.
    pub current: Vec<MedicationItem>,
    /// Current repeat medications.
    pub repeat: Vec<MedicationItem>,
    /// Stopped, completed or ended.
    pub past: Vec<MedicationItem>,
}

/// Everything the record screen shows for one patient.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RecordView {
    pub patient: PatientDetails,
    pub summary: Summary,
    pub problems: Problems,
    pub medications: Medications,
    pub allergies: Vec<AllergyItem>,
    pub alerts: Vec<AlertItem>,
    pub encounters: Vec<EncounterItem>,
    pub observations: Vec<ObservationSeries>,
    pub immunisations: Vec<ImmunisationItem>,
    pub procedures: Vec<ProcedureItem>,
    pub documents: Vec<DocumentItem>,
}

// ---------------------------------------------------------------------------------------------
// Status rules, shared with the agreement evaluation.

fn status(r: &Resource) -> Option<&str> {
    str_at(&r.json, "status")
}

fn concept_code(v: &Value, key: &str) -> Option<String> {
    let c = v.get(key)?;
    Concept::from_json(c)
        .codings
        .first()
        .map(|c| c.code.clone())
}

fn is_entered_in_error(r: &Resource) -> bool {
    status(r) == Some("entered-in-error")
        || matches!(
            concept_code(&r.json, "verificationStatus").as_deref(),
            Some("entered-in-error" | "refuted")
        )
        || concept_code(&r.json, "clinicalStatus").as_deref() == Some("entered-in-error")
}

/// True for a Condition the problem list shows as active (see the module doc).
pub fn is_active_problem(r: &Resource) -> bool {
    if r.resource_type != ResourceType::Condition || is_entered_in_error(r) {
        return false;
    }
    match concept_code(&r.json, "clinicalStatus").as_deref() {
        Some("active" | "recurrence" | "relapse") => true,
        Some(_) => false,
        None => {
            r.json.get("abatementDateTime").is_none() && r.json.get("abatementPeriod").is_none()
        }
    }
}

const REPEAT_EXTENSION: &str = "Extension-UKCore-MedicationRepeatInformation";

fn is_repeat(r: &Resource) -> bool {
    let by_course = r
        .json
        .get("courseOfTherapyType")
        .map(Concept::from_json)
        .is_some_and(|c| {
            c.codings.iter().any(|k| {
                matches!(
                    k.code.as_str(),
                    "continuous" | "repeat" | "repeat-dispensing" | "repeatdispensing"
                )
            })
        });
    let by_extension = array_at(&r.json, "extension")
        .iter()
        .any(|e| str_at(e, "url").is_some_and(|u| u.ends_with(REPEAT_EXTENSION)));
    by_course || by_extension
}

fn medication_end(r: &Resource) -> Option<NaiveDate> {
    match r.resource_type {
        ResourceType::MedicationRequest => r
            .json
            .get("dispenseRequest")
            .and_then(|d| d.get("validityPeriod"))
            .and_then(|p| date_at(p, "end")),
        _ => r
            .json
            .get("effectivePeriod")
            .and_then(|p| date_at(p, "end")),
    }
}

/// True for a medication that is current on `today` (see the module doc).
pub fn is_current_medication(r: &Resource, today: NaiveDate) -> bool {
    if is_entered_in_error(r) {
        return false;
    }
    let by_status = match r.resource_type {
        ResourceType::MedicationRequest => {
            matches!(
                status(r),
                None | Some("active" | "on-hold" | "draft" | "unknown")
            ) && str_at(&r.json, "intent") != Some("proposal")
        }
        ResourceType::MedicationStatement => matches!(
            status(r),
            None | Some("active" | "intended" | "on-hold" | "unknown")
        ),
        _ => return false,
    };
    by_status && medication_end(r).is_none_or(|end| end >= today)
}

/// True for a Flag that is in force (status active or absent).
pub fn is_active_alert(r: &Resource) -> bool {
    r.resource_type == ResourceType::Flag && matches!(status(r), None | Some("active"))
}

const DNACPR_CODES: &[&str] = &[
    "304253006", // Not for resuscitation (finding)
    "450476008", // Not for attempted cardiopulmonary resuscitation (finding)
];
const SAFEGUARDING_CODES: &[&str] = &[
    "766561000000109", // Adult safeguarding concern (finding)
    "878111000000109", // Unborn child is cause for safeguarding concern (finding)
];

/// Classifies an alert: SNOMED codes first, then the sender's text. Text rules:
/// `DNACPR`, `DNAR`, `do not attempt (cardiopulmonary) resuscitation`, `not for resus` →
/// DNACPR; `ReSPECT` (that spelling) or `respect form`/`respect plan` → ReSPECT;
/// `safeguarding`, `child protection`, `adult at risk`, `vulnerable adult` → Safeguarding.
pub fn alert_kind(concept: &Concept) -> AlertKind {
    let codes: Vec<&str> = concept
        .codings
        .iter()
        .filter(|c| c.system == SNOMED)
        .map(|c| c.code.as_str())
        .collect();
    if codes.iter().any(|c| DNACPR_CODES.contains(c)) {
        return AlertKind::Dnacpr;
    }
    if codes.iter().any(|c| SAFEGUARDING_CODES.contains(c)) {
        return AlertKind::Safeguarding;
    }
    let mut text = concept.text.clone().unwrap_or_default();
    for c in &concept.codings {
        if let Some(d) = &c.display {
            text.push(' ');
            text.push_str(d);
        }
    }
    let lower = text.to_lowercase();
    if lower.contains("dnacpr")
        || lower.contains("dnar")
        || lower.contains("do not attempt resus")
        || lower.contains("do not attempt cardiopulmonary")
        || lower.contains("not for resus")
    {
        AlertKind::Dnacpr
    } else if text.contains("ReSPECT")
        || lower.contains("respect form")
        || lower.contains("respect plan")
    {
        AlertKind::Respect
    } else if lower.contains("safeguarding")
        || lower.contains("child protection")
        || lower.contains("adult at risk")
        || lower.contains("vulnerable adult")
    {
        AlertKind::Safeguarding
    } else {
        AlertKind::Other
    }
}

// ---------------------------------------------------------------------------------------------
// Building.

/// Names of Practitioners and Organizations among the resources, for authors without display.
#[derive(Default)]
struct Names {
    practitioners: HashMap<String, String>,
    organisations: HashMap<String, (Option<String>, String)>,
    medications: HashMap<String, Concept>,
}

impl Names {
    fn resolve(&self, reference: &Value) -> Option<String> {
        if let Some(d) = string_at(reference, "display") {
            return Some(d);
        }
        let r = str_at(reference, "reference")?;
        if let Some(id) = reference_id(r, "Practitioner")
            && let Some(n) = self.practitioners.get(&id)
        {
            return Some(n.clone());
        }
        let id = reference_id(r, "Organization")?;
        self.organisations.get(&id).map(|(_, n)| n.clone())
    }
}

fn human_name(name: &Value) -> (String, String, Option<String>, Option<String>) {
    let given = array_at(name, "given")
        .iter()
        .filter_map(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    let family = string_at(name, "family").unwrap_or_default();
    let prefix = array_at(name, "prefix")
        .iter()
        .filter_map(Value::as_str)
        .map(str::trim)
        .find(|s| !s.is_empty())
        .map(str::to_owned);
    (given, family, prefix, string_at(name, "text"))
}

fn practitioner_name(r: &Resource) -> Option<String> {
    let name = array_at(&r.json, "name").first()?;
    let (given, family, prefix, text) = human_name(name);
    if given.is_empty() && family.is_empty() {
        return text;
    }
    let parts: Vec<&str> = [prefix.as_deref().unwrap_or(""), &given, &family]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect();
    Some(parts.join(" "))
}

fn author(r: &Resource, names: &Names) -> Option<String> {
    let j = &r.json;
    let direct = |keys: &[&str]| {
        keys.iter()
            .find_map(|k| j.get(*k).and_then(|v| names.resolve(v)))
    };
    let first_of = |key: &str, inner: Option<&str>| {
        array_at(j, key).iter().find_map(|p| match inner {
            Some(i) => p.get(i).and_then(|v| names.resolve(v)),
            None => names.resolve(p),
        })
    };
    match r.resource_type {
        ResourceType::Condition | ResourceType::AllergyIntolerance => {
            direct(&["recorder", "asserter"])
        }
        ResourceType::MedicationRequest => direct(&["requester", "recorder"]),
        ResourceType::MedicationStatement => direct(&["informationSource"]),
        ResourceType::Encounter => first_of("participant", Some("individual")),
        ResourceType::Observation => first_of("performer", None),
        ResourceType::Immunization => first_of("performer", Some("actor")),
        ResourceType::Procedure => {
            first_of("performer", Some("actor")).or_else(|| direct(&["recorder", "asserter"]))
        }
        ResourceType::Flag => direct(&["author"]),
        ResourceType::DocumentReference | ResourceType::Composition => first_of("author", None),
        _ => None,
    }
}

fn provenance(r: &Resource, names: &Names) -> Provenance {
    Provenance {
        source_ods: r.source_ods(),
        source_name: r.source_name(),
        recorded: r.recorded_date(),
        author: author(r, names),
    }
}

fn concept_at(v: &Value, key: &str) -> Concept {
    v.get(key).map(Concept::from_json).unwrap_or_default()
}

/// Demographics from a Patient resource alone (no age: that needs `today`, see
/// [`build_record`]). The practice comes from `generalPractitioner` (ODS identifier and
/// display), else from the source tag the import stamped with the registered practice.
pub fn patient_details(resource: &Resource) -> PatientDetails {
    let j = &resource.json;
    let names = array_at(j, "name");
    let name = names
        .iter()
        .find(|n| {
            matches!(str_at(n, "use"), Some("official" | "usual"))
                && n.get("period").and_then(|p| p.get("end")).is_none()
        })
        .or_else(|| names.iter().find(|n| str_at(n, "use") != Some("old")))
        .or(names.first());
    let (given, family, prefix, text) = name.map(human_name).unwrap_or_default();
    let name_display = if family.is_empty() && given.is_empty() {
        text.unwrap_or_default()
    } else {
        let mut s = family.to_uppercase();
        if !given.is_empty() {
            if !s.is_empty() {
                s.push_str(", ");
            }
            s.push_str(&given);
        }
        if let Some(p) = &prefix {
            s.push_str(&format!(" ({p})"));
        }
        s
    };

    let nhs = array_at(j, "identifier")
        .iter()
        .filter(|i| str_at(i, "system") == Some(NHS_NUMBER_SYSTEM))
        .find_map(|i| NhsNumber::parse(str_at(i, "value")?).ok());

    let addresses = array_at(j, "address");
    let address = addresses
        .iter()
        .find(|a| {
            matches!(str_at(a, "use"), None | Some("home"))
                && a.get("period").and_then(|p| p.get("end")).is_none()
        })
        .or_else(|| addresses.iter().find(|a| str_at(a, "use") != Some("old")))
        .or(addresses.first());
    let mut address_lines: Vec<String> = Vec::new();
    let mut postcode = None;
    if let Some(a) = address {
        address_lines.extend(
            array_at(a, "line")
                .iter()
                .filter_map(Value::as_str)
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
        );
        address_lines.extend(["city", "district"].iter().filter_map(|k| string_at(a, k)));
        postcode = string_at(a, "postalCode");
        if address_lines.is_empty()
            && postcode.is_none()
            && let Some(t) = string_at(a, "text")
        {
            address_lines.push(t);
        }
    }
    let mut parts = address_lines.clone();
    parts.extend(postcode.clone());
    let address_display = parts.join(", ");

    let phone = array_at(j, "telecom")
        .iter()
        .filter(|t| str_at(t, "system") == Some("phone") && str_at(t, "use") != Some("old"))
        .find_map(|t| string_at(t, "value"));

    let (mut practice_ods, mut practice_name) = (None, None);
    if let Some(gp) = array_at(j, "generalPractitioner").first() {
        practice_ods = gp
            .get("identifier")
            .filter(|i| str_at(i, "system") == Some(ODS_SYSTEM))
            .and_then(|i| string_at(i, "value"));
        practice_name = string_at(gp, "display");
    }
    if practice_ods.is_none() {
        practice_ods = resource.source_ods();
    }
    if practice_name.is_none() {
        practice_name = resource.source_name();
    }

    PatientDetails {
        id: resource.id.clone(),
        nhs_number: nhs.as_ref().map(|n| n.digits().to_owned()),
        nhs_number_display: nhs.as_ref().map(ToString::to_string),
        name_display,
        given,
        family,
        prefix,
        birth_date: date_at(j, "birthDate"),
        age: None,
        gender: string_at(j, "gender"),
        address_lines,
        postcode,
        address_display,
        practice_ods,
        practice_name,
        phone,
        address_withheld: resource.is_confidential() && addresses.is_empty(),
    }
}

/// Age in whole years on `today` (`None` for a birth date after today).
pub fn age_on(birth: NaiveDate, today: NaiveDate) -> Option<u32> {
    today.years_since(birth)
}

fn problem(r: &Resource, names: &Names) -> ProblemItem {
    let c = concept_at(&r.json, "code");
    ProblemItem {
        id: r.id.clone(),
        code: c.primary().cloned(),
        text: c.display(),
        clinical_status: concept_code(&r.json, "clinicalStatus"),
        onset: first_datetime(&r.json, &["onsetDateTime", "onsetPeriod"]).map(|d| d.date()),
        abatement: first_datetime(&r.json, &["abatementDateTime", "abatementPeriod"])
            .map(|d| d.date()),
        provenance: provenance(r, names),
    }
}

fn quantity_text(q: &Value) -> Option<String> {
    let value = q.get("value")?;
    let v = match value {
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    match str_at(q, "unit").or_else(|| str_at(q, "code")) {
        Some(u) => Some(format!("{v} {u}")),
        None => Some(v),
    }
}

fn medication(r: &Resource, names: &Names) -> MedicationItem {
    let j = &r.json;
    let concept = match j.get("medicationCodeableConcept") {
        Some(c) => Concept::read_medication(c),
        None => {
            let reference = j.get("medicationReference");
            let resolved = reference
                .and_then(|m| str_at(m, "reference"))
                .and_then(|s| reference_id(s, "Medication"))
                .and_then(|id| names.medications.get(&id).cloned());
            resolved.unwrap_or_else(|| Concept {
                codings: vec![],
                text: reference.and_then(|m| string_at(m, "display")),
            })
        }
    };
    let dosage_key = if r.resource_type == ResourceType::MedicationRequest {
        "dosageInstruction"
    } else {
        "dosage"
    };
    let dosage = array_at(j, dosage_key)
        .iter()
        .filter_map(|d| string_at(d, "text"))
        .collect::<Vec<_>>();
    let start = match r.resource_type {
        ResourceType::MedicationRequest => date_at(j, "authoredOn"),
        _ => first_datetime(j, &["effectivePeriod", "effectiveDateTime", "dateAsserted"])
            .map(|d| d.date()),
    };
    MedicationItem {
        id: r.id.clone(),
        code: concept
            .dmd_code()
            .cloned()
            .or_else(|| concept.primary().cloned()),
        name: concept.display(),
        dosage: (!dosage.is_empty()).then(|| dosage.join("; ")),
        quantity: j
            .get("dispenseRequest")
            .and_then(|d| d.get("quantity"))
            .and_then(quantity_text),
        status: status(r).map(str::to_owned),
        course: if is_repeat(r) {
            MedicationCourse::Repeat
        } else {
            MedicationCourse::Acute
        },
        start,
        end: medication_end(r),
        provenance: provenance(r, names),
    }
}

fn allergy(r: &Resource, names: &Names) -> AllergyItem {
    let j = &r.json;
    let c = concept_at(j, "code");
    let mut reactions = Vec::new();
    let mut severity: Option<String> = None;
    let rank = |s: &str| match s {
        "severe" => 3,
        "moderate" => 2,
        "mild" => 1,
        _ => 0,
    };
    for reaction in array_at(j, "reaction") {
        for m in array_at(reaction, "manifestation") {
            let d = Concept::from_json(m).display();
            if !d.is_empty() && !reactions.contains(&d) {
                reactions.push(d);
            }
        }
        if let Some(s) = str_at(reaction, "severity")
            && severity.as_deref().is_none_or(|cur| rank(s) > rank(cur))
        {
            severity = Some(s.to_owned());
        }
    }
    AllergyItem {
        id: r.id.clone(),
        code: c.primary().cloned(),
        substance: c.display(),
        reactions,
        severity,
        criticality: string_at(j, "criticality"),
        clinical_status: concept_code(j, "clinicalStatus"),
        provenance: provenance(r, names),
    }
}

fn alert(r: &Resource, names: &Names) -> AlertItem {
    let c = concept_at(&r.json, "code");
    AlertItem {
        id: r.id.clone(),
        kind: alert_kind(&c),
        text: c.display(),
        provenance: provenance(r, names),
    }
}

fn encounter_class(v: &Value) -> Option<String> {
    let class = v.get("class")?;
    if let Some(d) = string_at(class, "display") {
        return Some(d);
    }
    let code = str_at(class, "code")?;
    Some(
        match code {
            "AMB" => "Ambulatory",
            "HH" => "Home visit",
            "IMP" => "Inpatient",
            "ACUTE" => "Inpatient acute",
            "EMER" => "Emergency",
            "VR" => "Virtual",
            "OBSENC" => "Observation",
            "PRENC" => "Pre-admission",
            "SS" => "Short stay",
            other => other,
        }
        .to_owned(),
    )
}

fn encounter(r: &Resource, names: &Names) -> EncounterItem {
    let j = &r.json;
    let period = j.get("period");
    let class = encounter_class(j);
    let kind = array_at(j, "type")
        .iter()
        .map(|t| Concept::from_json(t).display())
        .find(|s| !s.is_empty())
        .or_else(|| class.clone())
        .unwrap_or_else(|| "Encounter".to_owned());
    let reason = array_at(j, "reasonCode")
        .iter()
        .map(|t| Concept::from_json(t).display())
        .find(|s| !s.is_empty())
        .or_else(|| {
            array_at(j, "reasonReference")
                .iter()
                .find_map(|r| string_at(r, "display"))
        });
    let location = array_at(j, "location")
        .iter()
        .find_map(|l| l.get("location").and_then(|x| string_at(x, "display")))
        .or_else(|| j.get("serviceProvider").and_then(|s| names.resolve(s)));
    EncounterItem {
        id: r.id.clone(),
        start: period.and_then(|p| datetime_at(p, "start")),
        end: period.and_then(|p| datetime_at(p, "end")),
        kind,
        class,
        reason,
        status: status(r).map(str::to_owned),
        location,
        provenance: provenance(r, names),
    }
}

fn immunisation(r: &Resource, names: &Names) -> ImmunisationItem {
    let c = concept_at(&r.json, "vaccineCode");
    ImmunisationItem {
        id: r.id.clone(),
        code: c.primary().cloned(),
        vaccine: c.display(),
        date: first_datetime(&r.json, &["occurrenceDateTime"])
            .map(|d| d.date())
            .or_else(|| r.recorded_date()),
        status: status(r).map(str::to_owned),
        provenance: provenance(r, names),
    }
}

fn procedure(r: &Resource, names: &Names) -> ProcedureItem {
    let c = concept_at(&r.json, "code");
    ProcedureItem {
        id: r.id.clone(),
        code: c.primary().cloned(),
        name: c.display(),
        date: r.recorded_date(),
        status: status(r).map(str::to_owned),
        provenance: provenance(r, names),
    }
}

fn attachment_text(att: &Value) -> Option<String> {
    let content_type = str_at(att, "contentType")
        .unwrap_or("text/plain")
        .to_ascii_lowercase();
    let data = str_at(att, "data")?;
    let bytes = base64_decode(data)?;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    if content_type.starts_with("text/plain") {
        Some(text.trim().to_owned())
    } else if content_type.starts_with("text/html") || content_type.contains("xhtml") {
        Some(xhtml_to_text(&text))
    } else {
        None
    }
}

fn composition_sections(sections: &[Value], prefix: &str, out: &mut Vec<DocumentSection>) {
    for s in sections {
        let title = string_at(s, "title")
            .or_else(|| s.get("code").map(|c| Concept::from_json(c).display()))
            .unwrap_or_default();
        let title = match (prefix.is_empty(), title.is_empty()) {
            (true, _) => title,
            (false, true) => prefix.to_owned(),
            (false, false) => format!("{prefix} – {title}"),
        };
        let text = s
            .get("text")
            .and_then(|t| str_at(t, "div"))
            .map(xhtml_to_text)
            .unwrap_or_default();
        if !text.is_empty() {
            out.push(DocumentSection {
                title: title.clone(),
                text,
            });
        }
        composition_sections(array_at(s, "section"), &title, out);
    }
}

fn document(r: &Resource, names: &Names) -> DocumentItem {
    let j = &r.json;
    let type_concept = concept_at(j, "type");
    let kind = if type_concept.is_empty() {
        array_at(j, "category")
            .iter()
            .map(|c| Concept::from_json(c).display())
            .find(|s| !s.is_empty())
            .unwrap_or_else(|| "Document".to_owned())
    } else {
        type_concept.display()
    };
    let mut sections = Vec::new();
    let (title, text) = if r.resource_type == ResourceType::Composition {
        composition_sections(array_at(j, "section"), "", &mut sections);
        let text = if sections.is_empty() {
            j.get("text")
                .and_then(|t| str_at(t, "div"))
                .map(xhtml_to_text)
                .unwrap_or_default()
        } else {
            sections
                .iter()
                .map(|s| {
                    if s.title.is_empty() {
                        s.text.clone()
                    } else {
                        format!("{}\n{}", s.title, s.text)
                    }
                })
                .collect::<Vec<_>>()
                .join("\n\n")
        };
        (string_at(j, "title").unwrap_or_else(|| kind.clone()), text)
    } else {
        let text = array_at(j, "content")
            .iter()
            .filter_map(|c| c.get("attachment").and_then(attachment_text))
            .filter(|t| !t.is_empty())
            .collect::<Vec<_>>()
            .join("\n\n");
        let title = string_at(j, "description")
            .or_else(|| {
                array_at(j, "content")
                    .iter()
                    .find_map(|c| c.get("attachment").and_then(|a| string_at(a, "title")))
            })
            .unwrap_or_else(|| kind.clone());
        (title, text)
    };
    DocumentItem {
        id: r.id.clone(),
        resource_type: r.resource_type.as_str().to_owned(),
        kind,
        title,
        date: r.recorded_date(),
        status: status(r)
            .or_else(|| str_at(j, "docStatus"))
            .map(str::to_owned),
        text,
        sections,
        provenance: provenance(r, names),
    }
}

/// A value read from an Observation or one of its components.
fn observation_value(v: &Value) -> Option<(Option<f64>, Option<String>, Option<String>)> {
    if let Some(q) = v.get("valueQuantity") {
        let value = q.get("value").and_then(Value::as_f64);
        let unit = string_at(q, "unit").or_else(|| string_at(q, "code"));
        let text = str_at(q, "comparator")
            .zip(value)
            .map(|(c, x)| format!("{c}{x}"));
        return Some((value, text, unit));
    }
    if let Some(i) = v.get("valueInteger").and_then(Value::as_f64) {
        return Some((Some(i), None, None));
    }
    if let Some(s) = string_at(v, "valueString") {
        return Some((None, Some(s), None));
    }
    if let Some(c) = v.get("valueCodeableConcept") {
        return Some((None, Some(Concept::from_json(c).display()), None));
    }
    if let Some(b) = v.get("valueBoolean").and_then(Value::as_bool) {
        return Some((None, Some(if b { "Yes" } else { "No" }.to_owned()), None));
    }
    v.get("dataAbsentReason")
        .map(|d| (None, Some(Concept::from_json(d).display()), None))
}

/// `referenceRange[0].low/high.value` of an observation or a component.
fn reference_range(v: &Value) -> (Option<f64>, Option<f64>) {
    let Some(range) = v.get("referenceRange").and_then(|r| r.get(0)) else {
        return (None, None);
    };
    let at = |k: &str| {
        range
            .get(k)
            .and_then(|q| q.get("value"))
            .and_then(Value::as_f64)
    };
    (at("low"), at("high"))
}

/// The source's interpretation says abnormal (v3 ObservationInterpretation: H, HH, HU, L, LL,
/// LU, A, AA).
fn flagged_abnormal(v: &Value) -> bool {
    array_at(v, "interpretation")
        .iter()
        .flat_map(|c| Concept::from_json(c).codings)
        .any(|c| {
            matches!(
                c.code.as_str(),
                "H" | "HH" | "HU" | "L" | "LL" | "LU" | "A" | "AA"
            )
        })
}

/// Series are keyed by code *and unit*: a value in mmol/mol never joins one in %, so a chart
/// never draws a line between values of different units.
struct SeriesBuilder {
    series: Vec<(u8, ObservationSeries)>,
    index: HashMap<(String, String, String), usize>,
}

/// The unit as a series key: trimmed and lower-cased (`mmol/L` and `mmol/l` are one unit as
/// sources write them).
fn unit_key(unit: &Option<String>) -> String {
    unit.as_deref().map(str::trim).unwrap_or("").to_lowercase()
}

impl SeriesBuilder {
    fn add(&mut self, concept: &Concept, rank: u8, unit: Option<String>, point: ObservationPoint) {
        let Some(primary) = concept.primary() else {
            return;
        };
        let u = unit_key(&unit);
        let found = concept.codings.iter().find_map(|c| {
            self.index
                .get(&(c.system.clone(), c.code.clone(), u.clone()))
                .copied()
        });
        let i = match found {
            Some(i) => i,
            None => {
                self.series.push((
                    rank,
                    ObservationSeries {
                        code: primary.clone(),
                        name: concept.display(),
                        unit: None,
                        points: Vec::new(),
                    },
                ));
                self.series.len() - 1
            }
        };
        for c in &concept.codings {
            self.index
                .entry((c.system.clone(), c.code.clone(), u.clone()))
                .or_insert(i);
        }
        let (r, s) = &mut self.series[i];
        *r = (*r).min(rank);
        if s.unit.is_none() {
            s.unit = unit;
        }
        s.points.push(point);
    }
}

fn observation_rank(r: &Resource) -> u8 {
    let cats: Vec<String> = array_at(&r.json, "category")
        .iter()
        .flat_map(|c| Concept::from_json(c).codings)
        .map(|c| c.code)
        .collect();
    if cats.iter().any(|c| c == "vital-signs") {
        0
    } else if cats.iter().any(|c| c == "laboratory") {
        1
    } else {
        2
    }
}

fn add_observation(r: &Resource, names: &Names, builder: &mut SeriesBuilder) {
    if matches!(status(r), Some("cancelled")) {
        return;
    }
    let j = &r.json;
    let Some(when) = first_datetime(
        j,
        &[
            "effectiveDateTime",
            "effectivePeriod",
            "effectiveInstant",
            "issued",
        ],
    )
    .or_else(|| j.get("meta").and_then(|m| datetime_at(m, "lastUpdated"))) else {
        return; // a point needs a time; undated observations cannot join a series
    };
    let rank = observation_rank(r);
    let prov = provenance(r, names);
    let point = |id: String, value: Option<f64>, text: Option<String>, of: &Value| {
        let (low, high) = reference_range(of);
        let outside =
            value.is_some_and(|v| low.is_some_and(|l| v < l) || high.is_some_and(|h| v > h));
        ObservationPoint {
            id,
            when,
            value,
            text,
            provenance: prov.clone(),
            low,
            high,
            abnormal: outside || flagged_abnormal(of),
        }
    };
    let components = array_at(j, "component");
    for (k, comp) in components.iter().enumerate() {
        let Some((value, text, unit)) = observation_value(comp) else {
            continue;
        };
        let concept = concept_at(comp, "code");
        builder.add(
            &concept,
            rank,
            unit,
            point(format!("{}#{k}", r.id), value, text, comp),
        );
    }
    if let Some((value, text, unit)) = observation_value(j) {
        builder.add(
            &concept_at(j, "code"),
            rank,
            unit,
            point(r.id.clone(), value, text, j),
        );
    }
}

fn newest_first<T>(items: &mut [T], key: impl Fn(&T) -> (Option<NaiveDateTime>, &str)) {
    items.sort_by(|a, b| {
        let (da, ia) = key(a);
        let (db, ib) = key(b);
        db.cmp(&da).then_with(|| ia.cmp(ib))
    });
}

fn by_date<T>(items: &mut [T], key: impl Fn(&T) -> (Option<NaiveDate>, &str)) {
    newest_first(items, |x| {
        let (d, id) = key(x);
        (d.map(|d| d.and_time(chrono::NaiveTime::MIN)), id)
    });
}

/// Builds every view of one patient's record from their resources (see the module doc).
///
/// The first Patient among `resources` is the patient; resources about another patient are
/// ignored. Without a Patient the demographics are empty and the sections are still built.
pub fn build_record(resources: &[Resource], today: NaiveDate) -> RecordView {
    let patient = resources
        .iter()
        .find(|r| r.resource_type == ResourceType::Patient);
    let mut names = Names::default();
    for r in resources {
        match &r.resource_type {
            ResourceType::Practitioner => {
                if let Some(n) = practitioner_name(r) {
                    names.practitioners.insert(r.id.clone(), n);
                }
            }
            ResourceType::Organization => {
                let ods = array_at(&r.json, "identifier")
                    .iter()
                    .find(|i| str_at(i, "system") == Some(ODS_SYSTEM))
                    .and_then(|i| string_at(i, "value"));
                if let Some(n) = string_at(&r.json, "name") {
                    names.organisations.insert(r.id.clone(), (ods, n));
                }
            }
            ResourceType::Other(t) if t == "Medication" => {
                if let Some(c) = r.json.get("code") {
                    names
                        .medications
                        .insert(r.id.clone(), Concept::read_medication(c));
                }
            }
            _ => {}
        }
    }

    let mut view = RecordView::default();
    if let Some(p) = patient {
        let mut details = patient_details(p);
        details.age = details.birth_date.and_then(|b| age_on(b, today));
        // The registered practice's name from its Organization, when the reference has none.
        if let Some(gp) = array_at(&p.json, "generalPractitioner").first()
            && let Some(id) = str_at(gp, "reference").and_then(|s| reference_id(s, "Organization"))
            && let Some((ods, name)) = names.organisations.get(&id)
        {
            if string_at(gp, "display").is_none() {
                details.practice_name = Some(name.clone());
            }
            if gp.get("identifier").is_none()
                && let Some(ods) = ods
            {
                details.practice_ods = Some(ods.clone());
            }
        }
        view.patient = details;
    }
    let patient_id = patient.map(|p| p.id.as_str());

    let mut builder = SeriesBuilder {
        series: Vec::new(),
        index: HashMap::new(),
    };
    for r in resources {
        if !r.resource_type.is_clinical() || is_entered_in_error(r) {
            continue;
        }
        if let (Some(pid), Some(rid)) = (patient_id, r.patient_id())
            && pid != rid
        {
            continue;
        }
        match r.resource_type {
            ResourceType::Condition => {
                let item = problem(r, &names);
                if is_active_problem(r) {
                    view.problems.active.push(item);
                } else {
                    view.problems.past.push(item);
                }
            }
            ResourceType::MedicationRequest | ResourceType::MedicationStatement => {
                let item = medication(r, &names);
                if !is_current_medication(r, today) {
                    view.medications.past.push(item);
                } else if item.course == MedicationCourse::Repeat {
                    view.medications.repeat.push(item);
                } else {
                    view.medications.current.push(item);
                }
            }
            ResourceType::AllergyIntolerance => view.allergies.push(allergy(r, &names)),
            ResourceType::Flag if is_active_alert(r) => {
                view.alerts.push(alert(r, &names));
            }
            ResourceType::Encounter => view.encounters.push(encounter(r, &names)),
            ResourceType::Observation => add_observation(r, &names, &mut builder),
            ResourceType::Immunization => view.immunisations.push(immunisation(r, &names)),
            ResourceType::Procedure => view.procedures.push(procedure(r, &names)),
            ResourceType::DocumentReference | ResourceType::Composition => {
                view.documents.push(document(r, &names))
            }
            _ => {}
        }
    }

    for list in [&mut view.problems.active, &mut view.problems.past] {
        by_date(list, |p| (p.onset.or(p.provenance.recorded), p.id.as_str()));
    }
    for list in [
        &mut view.medications.current,
        &mut view.medications.repeat,
        &mut view.medications.past,
    ] {
        by_date(list, |m| (m.start.or(m.provenance.recorded), m.id.as_str()));
    }
    by_date(&mut view.allergies, |a| {
        (a.provenance.recorded, a.id.as_str())
    });
    by_date(&mut view.alerts, |a| (a.provenance.recorded, a.id.as_str()));
    view.alerts.sort_by_key(|a| a.kind); // stable: newest first within a kind
    newest_first(&mut view.encounters, |e| (e.start, e.id.as_str()));
    by_date(&mut view.immunisations, |i| (i.date, i.id.as_str()));
    by_date(&mut view.procedures, |p| (p.date, p.id.as_str()));
    by_date(&mut view.documents, |d| (d.date, d.id.as_str()));

    let mut series: Vec<(u8, ObservationSeries)> = builder.series;
    for (_, s) in &mut series {
        s.points
            .sort_by(|a, b| a.when.cmp(&b.when).then_with(|| a.id.cmp(&b.id)));
    }
    series.sort_by(|(ra, a), (rb, b)| ra.cmp(rb).then_with(|| a.name.cmp(&b.name)));
    view.observations = series.into_iter().map(|(_, s)| s).collect();

    view.summary = Summary {
        active_problems: view.problems.active.clone(),
        current_medications: view
            .medications
            .repeat
            .iter()
            .chain(&view.medications.current)
            .cloned()
            .collect(),
        allergies: view
            .allergies
            .iter()
            .filter(|a| !matches!(a.clinical_status.as_deref(), Some("inactive" | "resolved")))
            .cloned()
            .collect(),
        alerts: view.alerts.clone(),
        recent_encounters: view.encounters.iter().take(3).cloned().collect(),
    };
    view
}

#[cfg(test)]
mod tests;
