//! The FHIR R4 subset Doorstep reads, the lenient bundle reader and the strict import check.
//!
//! A [`Resource`] keeps the sender's JSON untouched (unknown elements and extensions included):
//! Doorstep stores and forwards exactly what it received, plus one `meta.tag` naming the source
//! organisation ([`stamp_source`]). Typed reading happens on demand (index fields here, screens
//! in [`crate::views`]).
//!
//! Two readers, two purposes:
//! - [`parse_bundle`] is lenient: it reads any collection, batch, transaction, searchset or
//!   document Bundle, keeps unknown resource types as [`ResourceType::Other`] and takes
//!   DELETE entries as deletions. It fails only when the text is not a Bundle at all or an
//!   entry cannot become a resource (no type, no id).
//! - [`validate_for_import`] is strict: a bundle is imported whole or not at all, and the first
//!   problem is reported as an [`ImportError`] naming the entry, the resource and the element.
//!   [`validate_for_import_from`] is the same check for a bundle a practice sent as its own
//!   export: a Patient the bundle registers with no practice is registered with the sender.

use std::collections::{HashMap, HashSet};

use chrono::NaiveDate;
use serde_json::{Value, json};

use crate::coding::{Coding, Concept, NHS_NUMBER_SYSTEM, ODS_SYSTEM};
use crate::json::{array_at, date_at, first_datetime, reference_id, str_at, string_at};
use crate::nhs::NhsNumber;
use crate::section::Section;

/// `meta.tag` system whose code is the ODS code of the organisation an item came from, and
/// whose display is that organisation's name.
pub const SOURCE_TAG_SYSTEM: &str = "https://doorstep.example/fhir/source-organisation";

/// `meta.tag` system marking a resource as a note written by another service through
/// Doorstep (code `note`); such resources belong to [`Section::Notes`].
pub const NOTE_TAG_SYSTEM: &str = "https://doorstep.example/fhir/doorstep-note";

/// The v3 Confidentiality code system: `R` (restricted) and `V` (very restricted) mark items
/// the patient asked to keep confidential.
pub const CONFIDENTIALITY_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality";

/// The FHIR resource types Doorstep reads; anything else is kept as `Other`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceType {
    Patient,
    Condition,
    MedicationStatement,
    MedicationRequest,
    AllergyIntolerance,
    Encounter,
    Observation,
    Immunization,
    Procedure,
    Flag,
    DocumentReference,
    Composition,
    Organization,
    Practitioner,
    Other(String),
}

impl ResourceType {
    const KNOWN: [ResourceType; 14] = [
        ResourceType::Patient,
        ResourceType::Condition,
        ResourceType::MedicationStatement,
        ResourceType::MedicationRequest,
        ResourceType::AllergyIntolerance,
        ResourceType::Encounter,
        ResourceType::Observation,
        ResourceType::Immunization,
        ResourceType::Procedure,
        ResourceType::Flag,
        ResourceType::DocumentReference,
        ResourceType::Composition,
        ResourceType::Organization,
        ResourceType::Practitioner,
    ];

    /// The FHIR name (`"Condition"`).
    pub fn as_str(&self) -> &str {
        match self {
            ResourceType::Patient => "Patient",
            ResourceType::Condition => "Condition",
            ResourceType::MedicationStatement => "MedicationStatement",
            ResourceType::MedicationRequest => "MedicationRequest",
            ResourceType::AllergyIntolerance => "AllergyIntolerance",
            ResourceType::Encounter => "Encounter",
            ResourceType::Observation => "Observation",
            ResourceType::Immunization => "Immunization",
            ResourceType::Procedure => "Procedure",
            ResourceType::Flag => "Flag",
            ResourceType::DocumentReference => "DocumentReference",
            ResourceType::Composition => "Composition",
            ResourceType::Organization => "Organization",
            ResourceType::Practitioner => "Practitioner",
            ResourceType::Other(name) => name,
        }
    }

    /// Never fails: an unknown name becomes `Other(name)`.
    pub fn parse(name: &str) -> ResourceType {
        ResourceType::KNOWN
            .into_iter()
            .find(|t| t.as_str() == name)
            .unwrap_or_else(|| ResourceType::Other(name.to_owned()))
    }

    /// Types that are about one patient and must reference them.
    pub fn is_clinical(&self) -> bool {
        !matches!(
            self,
            ResourceType::Patient
                | ResourceType::Organization
                | ResourceType::Practitioner
                | ResourceType::Other(_)
        )
    }
}

impl std::fmt::Display for ResourceType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One FHIR resource: its type, id and original JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    pub resource_type: ResourceType,
    pub id: String,
    /// The JSON as received, untouched except by [`stamp_source`].
    pub json: Value,
}

/// Why a JSON value is not a resource.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("a FHIR resource is a JSON object")]
    NotAnObject,
    #[error("the resource has no resourceType")]
    MissingResourceType,
    #[error("the resource has no id")]
    MissingId,
}

impl ReadError {
    fn element(&self) -> &'static str {
        match self {
            ReadError::NotAnObject => "resource",
            ReadError::MissingResourceType => "resourceType",
            ReadError::MissingId => "id",
        }
    }
}

impl Resource {
    /// Reads a resource; it needs an object with `resourceType` and `id`.
    pub fn from_json(json: Value) -> Result<Resource, ReadError> {
        let obj = json.as_object().ok_or(ReadError::NotAnObject)?;
        let ty = obj
            .get("resourceType")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or(ReadError::MissingResourceType)?;
        let id = obj
            .get("id")
            .and_then(Value::as_str)
            .filter(|s| !s.trim().is_empty())
            .ok_or(ReadError::MissingId)?;
        Ok(Resource {
            resource_type: ResourceType::parse(ty),
            id: id.to_owned(),
            json,
        })
    }

    /// `"Condition/abc"`.
    pub fn reference(&self) -> String {
        format!("{}/{}", self.resource_type, self.id)
    }

    /// The element that names the patient: `subject` or `patient`.
    fn patient_element(&self) -> Option<(&'static str, &Value)> {
        ["subject", "patient"]
            .into_iter()
            .find_map(|k| self.json.get(k).map(|v| (k, v)))
    }

    /// The patient this resource is about: a Patient's own id; for other resources the id in
    /// `subject` or `patient` (`Patient/<id>` or `urn:uuid:<id>`).
    pub fn patient_id(&self) -> Option<String> {
        if self.resource_type == ResourceType::Patient {
            return Some(self.id.clone());
        }
        let (_, r) = self.patient_element()?;
        reference_id(str_at(r, "reference")?, "Patient")
    }

    /// The concept an agreement filters on and the screens name the item by.
    pub fn main_concepts(&self) -> Vec<Concept> {
        let j = &self.json;
        let one = |k: &str| j.get(k).map(Concept::from_json).into_iter().collect();
        let many = |k: &str| array_at(j, k).iter().map(Concept::from_json).collect();
        match self.resource_type {
            ResourceType::Condition
            | ResourceType::AllergyIntolerance
            | ResourceType::Observation
            | ResourceType::Procedure
            | ResourceType::Flag => one("code"),
            ResourceType::MedicationRequest | ResourceType::MedicationStatement => j
                .get("medicationCodeableConcept")
                .map(Concept::read_medication)
                .into_iter()
                .collect(),
            ResourceType::Immunization => one("vaccineCode"),
            ResourceType::Encounter => {
                let mut v: Vec<Concept> = many("type");
                v.extend(many("reasonCode"));
                v
            }
            ResourceType::DocumentReference | ResourceType::Composition => one("type"),
            _ => Vec::new(),
        }
    }

    /// The codes agreements filter on (see `main_concepts`); medication codes normalised to dm+d.
    /// Observation component codes are included, so a blood-pressure panel is filtered on its
    /// systolic and diastolic codes too.
    pub fn codes(&self) -> Vec<Coding> {
        let mut out: Vec<Coding> = self
            .main_concepts()
            .into_iter()
            .flat_map(|c| c.codings)
            .collect();
        if self.resource_type == ResourceType::Observation {
            for comp in array_at(&self.json, "component") {
                if let Some(code) = comp.get("code") {
                    out.extend(Concept::from_json(code).codings);
                }
            }
        }
        out
    }

    /// The clinical or recording date of the item: what look-back windows and "newest first"
    /// use. Falls back to `meta.lastUpdated`.
    pub fn recorded_date(&self) -> Option<NaiveDate> {
        let keys: &[&str] = match self.resource_type {
            ResourceType::Condition => &["recordedDate", "onsetDateTime", "onsetPeriod"],
            ResourceType::MedicationRequest => &["authoredOn"],
            ResourceType::MedicationStatement => {
                &["dateAsserted", "effectiveDateTime", "effectivePeriod"]
            }
            ResourceType::AllergyIntolerance => &["recordedDate", "onsetDateTime"],
            ResourceType::Encounter => &["period"],
            ResourceType::Observation => &["effectiveDateTime", "effectivePeriod", "issued"],
            ResourceType::Immunization => &["occurrenceDateTime", "recorded"],
            ResourceType::Procedure => &["performedDateTime", "performedPeriod"],
            ResourceType::Flag => &["period"],
            ResourceType::DocumentReference => &["date"],
            ResourceType::Composition => &["date"],
            _ => &[],
        };
        first_datetime(&self.json, keys)
            .map(|d| d.date())
            .or_else(|| {
                if self.resource_type == ResourceType::DocumentReference {
                    self.json
                        .get("context")
                        .and_then(|c| c.get("period"))
                        .and_then(|p| date_at(p, "start"))
                } else {
                    None
                }
            })
            .or_else(|| {
                self.json
                    .get("meta")
                    .and_then(|m| date_at(m, "lastUpdated"))
            })
    }

    fn meta_codings<'a>(&'a self, key: &str) -> impl Iterator<Item = &'a Value> {
        self.json
            .get("meta")
            .map(|m| array_at(m, key))
            .unwrap_or(&[])
            .iter()
    }

    /// True when `meta.security` holds v3 Confidentiality `R` or `V`: the patient asked to keep
    /// the item confidential.
    /// The system may also be spelt by its OID. (Contained resources are the exclusion
    /// rule's: [`crate::sensitive::always_withheld`].)
    pub fn is_confidential(&self) -> bool {
        crate::codes::is_confidential_meta(self.json.get("meta"))
    }

    /// True when the resource carries the Doorstep note tag.
    pub fn is_note(&self) -> bool {
        self.meta_codings("tag")
            .any(|t| str_at(t, "system") == Some(NOTE_TAG_SYSTEM))
    }

    /// The record section the item belongs to; `None` for Patient, Organization, Practitioner
    /// and unknown types.
    pub fn section(&self) -> Option<Section> {
        if self.resource_type.is_clinical() && self.is_note() {
            return Some(Section::Notes);
        }
        Some(match self.resource_type {
            ResourceType::Condition => Section::Problems,
            ResourceType::MedicationStatement | ResourceType::MedicationRequest => {
                Section::Medications
            }
            ResourceType::AllergyIntolerance => Section::Allergies,
            ResourceType::Encounter => Section::Encounters,
            ResourceType::Observation => Section::Observations,
            ResourceType::Immunization => Section::Immunisations,
            ResourceType::Procedure => Section::Procedures,
            ResourceType::Flag => Section::Alerts,
            ResourceType::DocumentReference | ResourceType::Composition => Section::Documents,
            _ => return None,
        })
    }

    fn source_tag(&self) -> Option<&Value> {
        self.meta_codings("tag")
            .find(|t| str_at(t, "system") == Some(SOURCE_TAG_SYSTEM))
    }

    /// ODS code of the organisation the item came from (the source `meta.tag`).
    pub fn source_ods(&self) -> Option<String> {
        self.source_tag().and_then(|t| string_at(t, "code"))
    }

    /// Name of the organisation the item came from (the source `meta.tag` display).
    pub fn source_name(&self) -> Option<String> {
        self.source_tag().and_then(|t| string_at(t, "display"))
    }
}

/// Sets the item's source organisation: replaces any source `meta.tag` with
/// `{system: SOURCE_TAG_SYSTEM, code: ods, display: name}`. Other tags are kept.
pub fn stamp_source(resource: &mut Resource, ods: &str, name: &str) {
    let Some(obj) = resource.json.as_object_mut() else {
        return;
    };
    let meta = obj.entry("meta").or_insert_with(|| json!({}));
    if !meta.is_object() {
        *meta = json!({});
    }
    let meta = meta.as_object_mut().expect("meta is an object");
    let tags = meta.entry("tag").or_insert_with(|| json!([]));
    if !tags.is_array() {
        *tags = json!([]);
    }
    let tags = tags.as_array_mut().expect("tag is an array");
    tags.retain(|t| str_at(t, "system") != Some(SOURCE_TAG_SYSTEM));
    tags.push(json!({"system": SOURCE_TAG_SYSTEM, "code": ods, "display": name}));
}

/// A bundle as read by [`parse_bundle`].
#[derive(Debug, Clone, PartialEq)]
pub struct Bundle {
    /// `collection`, `batch`, `transaction`, ...
    pub bundle_type: String,
    /// Every entry that carries a resource, in entry order.
    pub resources: Vec<Resource>,
    /// Entries with `request.method = DELETE`: the type and id in `request.url`.
    pub deletions: Vec<(ResourceType, String)>,
}

/// Why a bundle cannot be read or imported: which entry, which resource, which element.
///
/// `entry` counts the bundle's entries from 0 as [`parse_bundle`] saw them. In errors from
/// [`validate_for_import`] it is the index in [`Bundle::resources`], which is the entry index
/// unless DELETE entries come before it; `resource` always names the resource exactly.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ImportError {
    pub entry: Option<usize>,
    /// `"Condition/abc"`.
    pub resource: Option<String>,
    /// FHIR path inside the resource (or the bundle when `entry` is `None`).
    pub element: String,
    pub message: String,
}

impl ImportError {
    fn bundle(element: &str, message: impl Into<String>) -> ImportError {
        ImportError {
            entry: None,
            resource: None,
            element: element.to_owned(),
            message: message.into(),
        }
    }

    fn at(index: usize, r: &Resource, element: &str, message: impl Into<String>) -> ImportError {
        ImportError {
            entry: Some(index),
            resource: Some(r.reference()),
            element: element.to_owned(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ImportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.entry, &self.resource) {
            (Some(e), Some(r)) => write!(f, "entry {e} ({r}): ")?,
            (Some(e), None) => write!(f, "entry {e}: ")?,
            (None, Some(r)) => write!(f, "{r}: ")?,
            (None, None) => {}
        }
        write!(f, "element '{}': {}", self.element, self.message)
    }
}

/// What the import learnt about one patient of the bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatientHeaderInfo {
    pub patient_id: String,
    pub nhs_number: NhsNumber,
    /// Registered practice.
    pub practice_ods: String,
    pub practice_name: String,
    pub birth_date: Option<NaiveDate>,
}

/// A bundle that passed [`validate_for_import`]: what to store, all or nothing.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportPlan {
    pub patients: Vec<PatientHeaderInfo>,
    /// Every resource of the bundle, stamped with its source organisation.
    pub resources: Vec<Resource>,
    /// Ids of the patients the bundle registered with no practice, registered with the
    /// sending practice (see [`validate_for_import_from`]), in bundle order.
    pub registered_with_sender: Vec<String>,
}

/// The practice that sent a bundle as its own export: its patients are its own, so a Patient
/// the bundle registers nowhere is registered with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendingPractice<'a> {
    pub ods: &'a str,
    pub name: &'a str,
}

const BUNDLE_TYPES: [&str; 5] = [
    "collection",
    "batch",
    "transaction",
    "searchset",
    "document",
];

/// Reads a FHIR R4 Bundle leniently (see the module doc).
pub fn parse_bundle(text: &str) -> Result<Bundle, ImportError> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| ImportError::bundle("Bundle", format!("not valid JSON: {e}")))?;
    bundle_from_value(value)
}

/// [`parse_bundle`] over an already parsed JSON value.
pub fn bundle_from_value(value: Value) -> Result<Bundle, ImportError> {
    if str_at(&value, "resourceType") != Some("Bundle") {
        return Err(ImportError::bundle(
            "resourceType",
            "expected a FHIR Bundle",
        ));
    }
    let bundle_type = str_at(&value, "type").unwrap_or("collection").to_owned();
    if !BUNDLE_TYPES.contains(&bundle_type.as_str()) {
        return Err(ImportError::bundle(
            "type",
            format!("bundle type '{bundle_type}' is not one Doorstep imports"),
        ));
    }
    let Value::Object(mut obj) = value else {
        unreachable!("resourceType was read from an object")
    };
    let entries = match obj.remove("entry") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(ImportError::bundle("entry", "entry must be an array")),
    };
    let mut resources = Vec::with_capacity(entries.len());
    let mut deletions = Vec::new();
    for (i, mut entry) in entries.into_iter().enumerate() {
        let err = |element: &str, message: String| ImportError {
            entry: Some(i),
            resource: None,
            element: element.to_owned(),
            message,
        };
        let request = entry.get("request");
        if request.and_then(|r| str_at(r, "method")) == Some("DELETE") {
            let url = request.and_then(|r| str_at(r, "url")).unwrap_or_default();
            let mut parts = url.split('?').next().unwrap_or("").rsplit('/');
            match (parts.next(), parts.next()) {
                (Some(id), Some(ty)) if !id.is_empty() && !ty.is_empty() => {
                    deletions.push((ResourceType::parse(ty), id.to_owned()));
                }
                _ => {
                    return Err(err(
                        "request.url",
                        format!("a DELETE needs 'Type/id', got '{url}'"),
                    ));
                }
            }
            continue;
        }
        let full_url = str_at(&entry, "fullUrl").map(str::to_owned);
        let Some(mut json) = entry.get_mut("resource").map(Value::take) else {
            return Err(err("resource", "the entry has no resource".into()));
        };
        // A transaction POST may carry no id: the fullUrl `urn:uuid:` is its identity, and
        // other entries reference it by that urn, so it becomes the id.
        if json.is_object()
            && str_at(&json, "id").is_none()
            && let Some(uuid) = full_url
                .as_deref()
                .and_then(|u| u.strip_prefix("urn:uuid:"))
        {
            json["id"] = Value::String(uuid.to_owned());
        }
        let resource = Resource::from_json(json).map_err(|e| err(e.element(), e.to_string()))?;
        resources.push(resource);
    }
    Ok(Bundle {
        bundle_type,
        resources,
        deletions,
    })
}

fn is_valid_fhir_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// The registered practice of a patient: `(ods, name)` from `generalPractitioner`.
fn registered_practice(
    patient: &Resource,
    organisations: &HashMap<&str, (String, Option<String>)>,
) -> Option<(String, String)> {
    for gp in array_at(&patient.json, "generalPractitioner") {
        let display = string_at(gp, "display");
        if let Some(ident) = gp.get("identifier")
            && str_at(ident, "system") == Some(ODS_SYSTEM)
            && let Some(ods) = string_at(ident, "value")
        {
            return Some((ods, display.unwrap_or_default()));
        }
        if let Some(id) = str_at(gp, "reference").and_then(|r| reference_id(r, "Organization"))
            && let Some((ods, name)) = organisations.get(id.as_str())
        {
            let name = name.clone().or(display).unwrap_or_default();
            return Some((ods.clone(), name));
        }
    }
    None
}

fn ods_of(org: &Resource) -> Option<String> {
    array_at(&org.json, "identifier")
        .iter()
        .find(|i| str_at(i, "system") == Some(ODS_SYSTEM))
        .and_then(|i| string_at(i, "value"))
}

/// Checks a concept element strictly: present, and every coding has a system and a code.
fn check_concept(
    index: usize,
    r: &Resource,
    element: &str,
    required: bool,
) -> Result<(), ImportError> {
    let Some(v) = r.json.get(element) else {
        if required {
            return Err(ImportError::at(index, r, element, "is required"));
        }
        return Ok(());
    };
    let codings = array_at(v, "coding");
    if codings.is_empty() && str_at(v, "text").is_none() {
        return Err(ImportError::at(
            index,
            r,
            element,
            "needs a coding or a text",
        ));
    }
    for (k, c) in codings.iter().enumerate() {
        if str_at(c, "system").is_none() {
            return Err(ImportError::at(
                index,
                r,
                &format!("{element}.coding[{k}].system"),
                "a coding needs a system",
            ));
        }
        if str_at(c, "code").is_none() {
            return Err(ImportError::at(
                index,
                r,
                &format!("{element}.coding[{k}].code"),
                "a coding needs a code",
            ));
        }
    }
    Ok(())
}

/// The strict check of a bundle before import (see [`ImportError`] for how errors name things).
///
/// Rules: at least one Patient; each Patient has one valid NHS number (identifier system
/// `https://fhir.nhs.uk/Id/nhs-number`) not shared with another Patient of the bundle, and a
/// registered practice (`generalPractitioner` naming an ODS code, directly by identifier or
/// through an Organization of the bundle that has one); ids are valid FHIR ids and unique per
/// type; every clinical resource references a Patient of the bundle in `subject`/`patient`;
/// the coded element each type is read by is present and its codings have system and code.
///
/// Each resource is stamped with its patient's registered practice as source, unless the
/// sender already stamped it (a hospital discharge summary keeps its trust). Organizations,
/// Practitioners and resources of other types are stamped with the first patient's practice.
pub fn validate_for_import(bundle: &Bundle) -> Result<ImportPlan, ImportError> {
    validate_for_import_from(bundle, None)
}

/// [`validate_for_import`] for a bundle sent by `sender`, the sending practice's own export.
///
/// A Patient with no `generalPractitioner` at all is then registered with `sender` instead
/// of being refused, and listed in [`ImportPlan::registered_with_sender`]. A Patient whose
/// `generalPractitioner` names a practice that cannot be read (no ODS code, an Organization
/// missing from the bundle) is still refused: the bundle says something, and it is not the
/// sender. Without a sender this is exactly [`validate_for_import`].
pub fn validate_for_import_from(
    bundle: &Bundle,
    sender: Option<SendingPractice<'_>>,
) -> Result<ImportPlan, ImportError> {
    let mut seen: HashSet<(&ResourceType, &str)> = HashSet::new();
    let mut organisations: HashMap<&str, (String, Option<String>)> = HashMap::new();
    for (i, r) in bundle.resources.iter().enumerate() {
        if !is_valid_fhir_id(&r.id) {
            return Err(ImportError::at(
                i,
                r,
                "id",
                "not a valid FHIR id (1-64 letters, digits, '-' or '.')",
            ));
        }
        if !seen.insert((&r.resource_type, r.id.as_str())) {
            return Err(ImportError::at(i, r, "id", "appears twice in the bundle"));
        }
        if r.resource_type == ResourceType::Organization
            && let Some(ods) = ods_of(r)
        {
            organisations.insert(r.id.as_str(), (ods, string_at(&r.json, "name")));
        }
    }

    let mut patients = Vec::new();
    let mut registered_with_sender = Vec::new();
    let mut practice_of: HashMap<&str, (String, String)> = HashMap::new();
    let mut nhs_numbers: HashSet<String> = HashSet::new();
    for (i, r) in bundle.resources.iter().enumerate() {
        if r.resource_type != ResourceType::Patient {
            continue;
        }
        let identifiers = array_at(&r.json, "identifier");
        let Some((k, ident)) = identifiers
            .iter()
            .enumerate()
            .find(|(_, id)| str_at(id, "system") == Some(NHS_NUMBER_SYSTEM))
        else {
            return Err(ImportError::at(
                i,
                r,
                "identifier",
                format!(
                    "the patient has no NHS number (identifier with system {NHS_NUMBER_SYSTEM})"
                ),
            ));
        };
        let nhs = NhsNumber::parse(str_at(ident, "value").unwrap_or_default()).map_err(|e| {
            ImportError::at(
                i,
                r,
                &format!("identifier[{k}].value"),
                format!("not a valid NHS number: {e}"),
            )
        })?;
        if !nhs_numbers.insert(nhs.digits().to_owned()) {
            return Err(ImportError::at(
                i,
                r,
                &format!("identifier[{k}].value"),
                "two patients in the bundle have the same NHS number",
            ));
        }
        let registered = registered_practice(r, &organisations);
        let names_none = array_at(&r.json, "generalPractitioner").is_empty();
        let (ods, name) = match (registered, sender) {
            (Some(practice), _) => practice,
            (None, Some(sender)) if names_none => {
                registered_with_sender.push(r.id.clone());
                (sender.ods.to_owned(), sender.name.to_owned())
            }
            (None, _) => {
                return Err(ImportError::at(
                    i,
                    r,
                    "generalPractitioner",
                    "the patient has no registered practice with an ODS code",
                ));
            }
        };
        practice_of.insert(r.id.as_str(), (ods.clone(), name.clone()));
        patients.push(PatientHeaderInfo {
            patient_id: r.id.clone(),
            nhs_number: nhs,
            practice_ods: ods,
            practice_name: name,
            birth_date: date_at(&r.json, "birthDate"),
        });
    }
    if patients.is_empty() {
        return Err(ImportError::bundle("entry", "the bundle holds no Patient"));
    }
    let first_practice = practice_of
        .get(patients[0].patient_id.as_str())
        .cloned()
        .expect("first patient has a practice");

    let mut resources = Vec::with_capacity(bundle.resources.len());
    for (i, r) in bundle.resources.iter().enumerate() {
        let practice = if r.resource_type == ResourceType::Patient {
            practice_of[r.id.as_str()].clone()
        } else if r.resource_type.is_clinical() {
            let Some((element, reference)) = r.patient_element() else {
                let element = match r.resource_type {
                    ResourceType::AllergyIntolerance | ResourceType::Immunization => "patient",
                    _ => "subject",
                };
                return Err(ImportError::at(i, r, element, "must reference the patient"));
            };
            let pid = str_at(reference, "reference").and_then(|s| reference_id(s, "Patient"));
            match pid.as_deref().and_then(|p| practice_of.get(p)) {
                Some(p) => p.clone(),
                None => {
                    return Err(ImportError::at(
                        i,
                        r,
                        &format!("{element}.reference"),
                        "must reference a Patient in the bundle",
                    ));
                }
            }
        } else {
            first_practice.clone()
        };
        match r.resource_type {
            ResourceType::Condition
            | ResourceType::AllergyIntolerance
            | ResourceType::Observation
            | ResourceType::Procedure
            | ResourceType::Flag => check_concept(i, r, "code", true)?,
            ResourceType::Immunization => check_concept(i, r, "vaccineCode", true)?,
            ResourceType::DocumentReference | ResourceType::Composition => {
                check_concept(i, r, "type", r.resource_type == ResourceType::Composition)?
            }
            ResourceType::MedicationRequest | ResourceType::MedicationStatement => {
                if r.json.get("medicationCodeableConcept").is_some() {
                    check_concept(i, r, "medicationCodeableConcept", true)?;
                } else if r.json.get("medicationReference").is_none() {
                    return Err(ImportError::at(
                        i,
                        r,
                        "medication[x]",
                        "needs medicationCodeableConcept or medicationReference",
                    ));
                }
            }
            _ => {}
        }
        let mut stamped = r.clone();
        if stamped.source_ods().is_none() {
            stamp_source(&mut stamped, &practice.0, &practice.1);
        }
        resources.push(stamped);
    }
    Ok(ImportPlan {
        patients,
        resources,
        registered_with_sender,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coding::{DMD, SNOMED};

    fn patient(id: &str, nhs: &str) -> Value {
        json!({
            "resourceType": "Patient", "id": id,
            "identifier": [{"system": NHS_NUMBER_SYSTEM, "value": nhs}],
            "name": [{"family": "Evans", "given": ["Siân"]}],
            "generalPractitioner": [{"reference": "Organization/org1"}]
        })
    }

    fn practice() -> Value {
        json!({"resourceType": "Organization", "id": "org1", "name": "Riverside Surgery",
               "identifier": [{"system": ODS_SYSTEM, "value": "A81001"}]})
    }

    fn condition(id: &str, patient: &str) -> Value {
        json!({"resourceType": "Condition", "id": id,
               "code": {"coding": [{"system": SNOMED, "code": "44054006", "display": "Type 2 diabetes mellitus"}]},
               "subject": {"reference": format!("Patient/{patient}")},
               "recordedDate": "2020-05-01"})
    }

    fn bundle(entries: Vec<Value>) -> String {
        let entry: Vec<Value> = entries
            .into_iter()
            .map(|r| json!({"resource": r}))
            .collect();
        json!({"resourceType": "Bundle", "type": "collection", "entry": entry}).to_string()
    }

    #[test]
    fn resource_type_round_trips_and_keeps_unknown_names() {
        for t in ResourceType::KNOWN {
            assert_eq!(ResourceType::parse(t.as_str()), t);
        }
        assert_eq!(
            ResourceType::parse("Device"),
            ResourceType::Other("Device".into())
        );
        assert_eq!(ResourceType::parse("Device").as_str(), "Device");
    }

    #[test]
    fn from_json_needs_type_and_id() {
        assert_eq!(Resource::from_json(json!([])), Err(ReadError::NotAnObject));
        assert_eq!(
            Resource::from_json(json!({"id": "x"})),
            Err(ReadError::MissingResourceType)
        );
        assert_eq!(
            Resource::from_json(json!({"resourceType": "Flag"})),
            Err(ReadError::MissingId)
        );
    }

    #[test]
    fn patient_id_from_subject_patient_or_urn() {
        let c = Resource::from_json(condition("c1", "p1")).unwrap();
        assert_eq!(c.patient_id().as_deref(), Some("p1"));
        let a = Resource::from_json(json!({"resourceType": "AllergyIntolerance", "id": "a1",
            "patient": {"reference": "urn:uuid:p2"}}))
        .unwrap();
        assert_eq!(a.patient_id().as_deref(), Some("p2"));
        let p = Resource::from_json(patient("p3", "9434765919")).unwrap();
        assert_eq!(p.patient_id().as_deref(), Some("p3"));
        let o = Resource::from_json(practice()).unwrap();
        assert_eq!(o.patient_id(), None);
    }

    #[test]
    fn medication_codes_are_normalised_to_dmd() {
        let m = Resource::from_json(json!({"resourceType": "MedicationRequest", "id": "m1",
            "medicationCodeableConcept": {"coding": [{"system": SNOMED, "code": "319773006", "display": "Ramipril 5mg capsules"}]},
            "subject": {"reference": "Patient/p1"}}))
        .unwrap();
        let codes = m.codes();
        assert_eq!(codes.len(), 1);
        assert_eq!(codes[0].system, DMD);
        assert!(codes[0].is_dmd());
        // The original JSON is untouched.
        assert_eq!(
            m.json["medicationCodeableConcept"]["coding"][0]["system"],
            SNOMED
        );
    }

    #[test]
    fn encounter_codes_include_type_and_reason() {
        let e = Resource::from_json(json!({"resourceType": "Encounter", "id": "e1",
            "type": [{"coding": [{"system": SNOMED, "code": "439708006"}]}],
            "reasonCode": [{"coding": [{"system": SNOMED, "code": "105629000"}]}]}))
        .unwrap();
        let codes: Vec<String> = e.codes().into_iter().map(|c| c.code).collect();
        assert_eq!(codes, ["439708006", "105629000"]);
    }

    #[test]
    fn confidential_only_for_r_and_v() {
        let mut c = condition("c1", "p1");
        c["meta"] = json!({"security": [{"system": CONFIDENTIALITY_SYSTEM, "code": "N"}]});
        assert!(!Resource::from_json(c.clone()).unwrap().is_confidential());
        c["meta"]["security"][0]["code"] = json!("R");
        assert!(Resource::from_json(c.clone()).unwrap().is_confidential());
        c["meta"]["security"][0]["code"] = json!("V");
        assert!(Resource::from_json(c).unwrap().is_confidential());
    }

    #[test]
    fn stamp_source_replaces_only_the_source_tag() {
        let mut c = condition("c1", "p1");
        c["meta"] = json!({"tag": [{"system": "x", "code": "keep"},
                                   {"system": SOURCE_TAG_SYSTEM, "code": "OLD", "display": "Old"}]});
        let mut r = Resource::from_json(c).unwrap();
        stamp_source(&mut r, "A81001", "Riverside Surgery");
        assert_eq!(r.source_ods().as_deref(), Some("A81001"));
        assert_eq!(r.source_name().as_deref(), Some("Riverside Surgery"));
        let tags = r.json["meta"]["tag"].as_array().unwrap();
        assert_eq!(tags.len(), 2);
        assert_eq!(tags[0]["code"], "keep");
        // A resource without meta gets one.
        let mut bare = Resource::from_json(condition("c2", "p1")).unwrap();
        stamp_source(&mut bare, "B82002", "Castle Surgery");
        assert_eq!(bare.source_ods().as_deref(), Some("B82002"));
    }

    #[test]
    fn recorded_date_by_type() {
        let c = Resource::from_json(condition("c1", "p1")).unwrap();
        assert_eq!(c.recorded_date(), NaiveDate::from_ymd_opt(2020, 5, 1));
        let e = Resource::from_json(json!({"resourceType": "Encounter", "id": "e1",
            "period": {"start": "2023-02-03T09:00:00+00:00"}}))
        .unwrap();
        assert_eq!(e.recorded_date(), NaiveDate::from_ymd_opt(2023, 2, 3));
    }

    #[test]
    fn sections_of_types_and_notes() {
        let c = Resource::from_json(condition("c1", "p1")).unwrap();
        assert_eq!(c.section(), Some(Section::Problems));
        let mut comp = json!({"resourceType": "Composition", "id": "n1", "subject": {"reference": "Patient/p1"}});
        assert_eq!(
            Resource::from_json(comp.clone()).unwrap().section(),
            Some(Section::Documents)
        );
        comp["meta"] = json!({"tag": [{"system": NOTE_TAG_SYSTEM, "code": "note"}]});
        assert_eq!(
            Resource::from_json(comp).unwrap().section(),
            Some(Section::Notes)
        );
        assert_eq!(Resource::from_json(practice()).unwrap().section(), None);
    }

    #[test]
    fn parse_bundle_keeps_unknown_types_and_extensions() {
        let mut c = condition("c1", "p1");
        c["extension"] = json!([{"url": "https://example.org/ext/unknown", "valueString": "kept"}]);
        let text = bundle(vec![
            patient("p1", "9434765919"),
            practice(),
            c,
            json!({"resourceType": "Device", "id": "d1", "patient": {"reference": "Patient/p1"}}),
        ]);
        let b = parse_bundle(&text).unwrap();
        assert_eq!(b.resources.len(), 4);
        assert_eq!(
            b.resources[3].resource_type,
            ResourceType::Other("Device".into())
        );
        assert_eq!(b.resources[2].json["extension"][0]["valueString"], "kept");
        let plan = validate_for_import(&b).unwrap();
        assert_eq!(
            plan.resources[2].json["extension"][0]["url"],
            "https://example.org/ext/unknown"
        );
    }

    #[test]
    fn parse_bundle_reads_deletions_and_urn_ids() {
        let text = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"request": {"method": "DELETE", "url": "Condition/old1"}},
            {"fullUrl": "urn:uuid:0b9f", "resource": {"resourceType": "Flag", "subject": {"reference": "Patient/p1"}},
             "request": {"method": "POST", "url": "Flag"}}
        ]})
        .to_string();
        let b = parse_bundle(&text).unwrap();
        assert_eq!(b.bundle_type, "transaction");
        assert_eq!(
            b.deletions,
            vec![(ResourceType::Condition, "old1".to_owned())]
        );
        assert_eq!(b.resources[0].id, "0b9f");
    }

    #[test]
    fn parse_bundle_rejects_non_bundles_with_the_element() {
        let e = parse_bundle("{").unwrap_err();
        assert_eq!(e.element, "Bundle");
        let e = parse_bundle(r#"{"resourceType":"Patient","id":"x"}"#).unwrap_err();
        assert_eq!(e.element, "resourceType");
        let e = parse_bundle(r#"{"resourceType":"Bundle","type":"history"}"#).unwrap_err();
        assert_eq!(e.element, "type");
        let e = parse_bundle(r#"{"resourceType":"Bundle","type":"collection","entry":[{"resource":{"resourceType":"Flag"}}]}"#).unwrap_err();
        assert_eq!((e.entry, e.element.as_str()), (Some(0), "id"));
    }

    #[test]
    fn import_error_display_names_entry_resource_and_element() {
        let e = ImportError {
            entry: Some(3),
            resource: Some("Condition/abc".into()),
            element: "code.coding[0].system".into(),
            message: "a coding needs a system".into(),
        };
        assert_eq!(
            e.to_string(),
            "entry 3 (Condition/abc): element 'code.coding[0].system': a coding needs a system"
        );
        let e = ImportError::bundle("entry", "the bundle holds no Patient");
        assert_eq!(
            e.to_string(),
            "element 'entry': the bundle holds no Patient"
        );
    }

    #[test]
    fn validate_accepts_a_good_bundle_and_stamps_the_practice() {
        let b = parse_bundle(&bundle(vec![
            practice(),
            patient("p1", "943 476 5919"),
            condition("c1", "p1"),
        ]))
        .unwrap();
        let plan = validate_for_import(&b).unwrap();
        assert_eq!(plan.patients.len(), 1);
        let p = &plan.patients[0];
        assert_eq!(p.nhs_number.digits(), "9434765919");
        assert_eq!(
            (p.practice_ods.as_str(), p.practice_name.as_str()),
            ("A81001", "Riverside Surgery")
        );
        assert!(
            plan.resources
                .iter()
                .all(|r| r.source_ods().as_deref() == Some("A81001"))
        );
    }

    #[test]
    fn validate_keeps_an_existing_source_stamp() {
        let mut c = condition("c1", "p1");
        c["meta"] =
            json!({"tag": [{"system": SOURCE_TAG_SYSTEM, "code": "RX9", "display": "Trust"}]});
        let b = parse_bundle(&bundle(vec![practice(), patient("p1", "9434765919"), c])).unwrap();
        let plan = validate_for_import(&b).unwrap();
        assert_eq!(plan.resources[2].source_ods().as_deref(), Some("RX9"));
    }

    #[test]
    fn patient_without_nhs_number_is_rejected_at_identifier() {
        let mut p = patient("p1", "9434765919");
        p["identifier"] = json!([{"system": "https://example.org/mrn", "value": "1"}]);
        let b = parse_bundle(&bundle(vec![practice(), p])).unwrap();
        let e = validate_for_import(&b).unwrap_err();
        assert_eq!(e.entry, Some(1));
        assert_eq!(e.resource.as_deref(), Some("Patient/p1"));
        assert_eq!(e.element, "identifier");
    }

    #[test]
    fn invalid_nhs_number_is_rejected_at_identifier_value() {
        let b = parse_bundle(&bundle(vec![practice(), patient("p1", "9434765918")])).unwrap();
        let e = validate_for_import(&b).unwrap_err();
        assert_eq!(e.element, "identifier[0].value");
    }

    #[test]
    fn duplicate_nhs_numbers_in_one_bundle_are_rejected() {
        let b = parse_bundle(&bundle(vec![
            practice(),
            patient("p1", "9434765919"),
            patient("p2", "9434765919"),
        ]))
        .unwrap();
        assert_eq!(validate_for_import(&b).unwrap_err().entry, Some(2));
    }

    #[test]
    fn patient_without_practice_is_rejected_at_general_practitioner() {
        let mut p = patient("p1", "9434765919");
        p["generalPractitioner"] = json!([{"reference": "Organization/missing"}]);
        let b = parse_bundle(&bundle(vec![p])).unwrap();
        assert_eq!(
            validate_for_import(&b).unwrap_err().element,
            "generalPractitioner"
        );
        // An ODS identifier on the reference is enough without the Organization.
        let mut p = patient("p1", "9434765919");
        p["generalPractitioner"] = json!([{"identifier": {"system": ODS_SYSTEM, "value": "C83003"}, "display": "Bryn Surgery"}]);
        let plan = validate_for_import(&parse_bundle(&bundle(vec![p])).unwrap()).unwrap();
        assert_eq!(plan.patients[0].practice_ods, "C83003");
    }

    #[test]
    fn sending_practice_registers_patients_the_bundle_registers_nowhere() {
        let sender = SendingPractice {
            ods: "C81001",
            name: "Riverside Surgery",
        };
        let mut orphan = patient("p2", "9990000026");
        orphan
            .as_object_mut()
            .unwrap()
            .remove("generalPractitioner");
        let b = parse_bundle(&bundle(vec![
            practice(),
            patient("p1", "9434765919"),
            orphan.clone(),
            condition("c2", "p2"),
        ]))
        .unwrap();
        // Without a sender: refused, naming the element, as before.
        let e = validate_for_import(&b).unwrap_err();
        assert_eq!(
            (e.entry, e.element.as_str()),
            (Some(2), "generalPractitioner")
        );
        assert_eq!(validate_for_import_from(&b, None), Err(e));

        let plan = validate_for_import_from(&b, Some(sender)).unwrap();
        assert_eq!(plan.registered_with_sender, ["p2"]);
        // p1 keeps the practice its bundle names; p2 is the sender's, and so are its items.
        assert_eq!(plan.patients[0].practice_ods, "A81001");
        assert_eq!(
            (
                plan.patients[1].practice_ods.as_str(),
                plan.patients[1].practice_name.as_str()
            ),
            ("C81001", "Riverside Surgery")
        );
        let c2 = plan.resources.iter().find(|r| r.id == "c2").unwrap();
        assert_eq!(c2.source_ods().as_deref(), Some("C81001"));
        // The stored Patient says what the sender said: no generalPractitioner is invented.
        let p2 = plan.resources.iter().find(|r| r.id == "p2").unwrap();
        assert!(p2.json.get("generalPractitioner").is_none());

        // An empty list names no practice either.
        orphan["generalPractitioner"] = json!([]);
        let b = parse_bundle(&bundle(vec![orphan])).unwrap();
        let plan = validate_for_import_from(&b, Some(sender)).unwrap();
        assert_eq!(plan.registered_with_sender, ["p2"]);
    }

    #[test]
    fn a_practice_the_bundle_names_but_cannot_be_read_is_refused_even_with_a_sender() {
        let sender = SendingPractice {
            ods: "C81001",
            name: "Riverside Surgery",
        };
        let mut p = patient("p1", "9434765919");
        p["generalPractitioner"] = json!([{"reference": "Organization/missing"}]);
        let b = parse_bundle(&bundle(vec![p])).unwrap();
        let e = validate_for_import_from(&b, Some(sender)).unwrap_err();
        assert_eq!(e.element, "generalPractitioner");
    }

    #[test]
    fn clinical_resource_for_another_patient_is_rejected() {
        let b = parse_bundle(&bundle(vec![
            practice(),
            patient("p1", "9434765919"),
            condition("c1", "p9"),
        ]))
        .unwrap();
        let e = validate_for_import(&b).unwrap_err();
        assert_eq!(e.entry, Some(2));
        assert_eq!(e.element, "subject.reference");
        let mut c = condition("c2", "p1");
        c.as_object_mut().unwrap().remove("subject");
        let b = parse_bundle(&bundle(vec![practice(), patient("p1", "9434765919"), c])).unwrap();
        assert_eq!(validate_for_import(&b).unwrap_err().element, "subject");
    }

    #[test]
    fn coding_without_system_is_rejected_with_its_path() {
        let mut c = condition("abc", "p1");
        c["code"]["coding"][0]
            .as_object_mut()
            .unwrap()
            .remove("system");
        let b = parse_bundle(&bundle(vec![practice(), patient("p1", "9434765919"), c])).unwrap();
        let e = validate_for_import(&b).unwrap_err();
        assert_eq!(
            e.to_string(),
            "entry 2 (Condition/abc): element 'code.coding[0].system': a coding needs a system"
        );
    }

    #[test]
    fn bundle_without_patient_is_rejected() {
        let b = parse_bundle(&bundle(vec![practice()])).unwrap();
        let e = validate_for_import(&b).unwrap_err();
        assert_eq!((e.entry, e.element.as_str()), (None, "entry"));
    }

    #[test]
    fn duplicate_ids_and_bad_ids_are_rejected() {
        let b = parse_bundle(&bundle(vec![
            practice(),
            patient("p1", "9434765919"),
            condition("c1", "p1"),
            condition("c1", "p1"),
        ]))
        .unwrap();
        assert_eq!(validate_for_import(&b).unwrap_err().entry, Some(3));
        let b = parse_bundle(&bundle(vec![
            practice(),
            patient("p1", "9434765919"),
            condition("bad id!", "p1"),
        ]))
        .unwrap();
        assert_eq!(validate_for_import(&b).unwrap_err().element, "id");
    }
}
