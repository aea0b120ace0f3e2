//! Coded concepts: SNOMED CT, dm+d and LOINC, with the sender's display text kept.
//!
//! # dm+d codes sent under the SNOMED CT system
//!
//! dm+d identifiers are SNOMED CT identifiers (VTMs, VMPs and AMPs live in the UK drug
//! extension, and older VMPs carry core SNOMED ids), so GP systems often send a dm+d code with
//! `system = http://snomed.info/sct`. Doorstep's rule:
//!
//! 1. A coding whose system is [`DMD`] is dm+d.
//! 2. A SNOMED coding whose id is in the UK drug extension namespace (namespace `1000001`,
//!    concept partition `10`, i.e. the id ends `1000001` `10` and a check digit) is dm+d
//!    whatever concept holds it ([`Coding::is_dmd`]).
//! 3. In a *medication* concept (`MedicationRequest` / `MedicationStatement`
//!    `.medicationCodeableConcept`), every SNOMED coding is a dm+d code: the product hierarchy is
//!    what dm+d publishes. [`Concept::read_medication`] rewrites those codings' system to
//!    [`DMD`] (code and display unchanged), so the rest of Doorstep sees one system for drugs.
//!
//! The sender's display text is never replaced: Doorstep has no terminology server, and the
//! clinician should see what the sending system showed.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// SNOMED CT.
pub const SNOMED: &str = "http://snomed.info/sct";
/// NHS Dictionary of medicines and devices.
pub const DMD: &str = "https://dmd.nhs.uk";
/// LOINC.
pub const LOINC: &str = "http://loinc.org";
/// The NHS number identifier system.
pub const NHS_NUMBER_SYSTEM: &str = "https://fhir.nhs.uk/Id/nhs-number";
/// The ODS organisation code identifier system.
pub const ODS_SYSTEM: &str = "https://fhir.nhs.uk/Id/ods-organization-code";

/// One code from one code system, with the sender's display text.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Coding {
    pub system: String,
    pub code: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display: Option<String>,
}

impl Coding {
    pub fn new(system: &str, code: &str, display: Option<&str>) -> Coding {
        Coding {
            system: system.to_owned(),
            code: code.to_owned(),
            display: display.map(str::to_owned),
        }
    }

    /// Reads a FHIR `Coding`; `None` when it has no code.
    pub fn from_json(v: &Value) -> Option<Coding> {
        let code = v.get("code")?.as_str()?.trim();
        if code.is_empty() {
            return None;
        }
        Some(Coding {
            system: v
                .get("system")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            code: code.to_owned(),
            display: v.get("display").and_then(Value::as_str).map(str::to_owned),
        })
    }

    pub fn is_snomed(&self) -> bool {
        self.system == SNOMED
    }

    pub fn is_loinc(&self) -> bool {
        self.system == LOINC
    }

    /// True for a dm+d code: system [`DMD`], or a SNOMED id in the UK drug extension namespace
    /// (see the module doc for the whole rule).
    pub fn is_dmd(&self) -> bool {
        self.system == DMD || (self.is_snomed() && is_uk_drug_extension_id(&self.code))
    }

    /// The code as a SNOMED CT concept id, when it is one (dm+d ids are SNOMED ids too).
    pub fn snomed_id(&self) -> Option<&str> {
        (self.is_snomed() || self.system == DMD).then_some(self.code.as_str())
    }

    /// Display text, else the code.
    pub fn label(&self) -> &str {
        self.display.as_deref().unwrap_or(&self.code)
    }

    fn rank(&self) -> u8 {
        if self.is_snomed() {
            0
        } else if self.system == DMD {
            1
        } else if self.is_loinc() {
            2
        } else {
            3
        }
    }
}

/// Namespace 1000001 (UK drug extension), partition 10 (extension concept), one check digit.
fn is_uk_drug_extension_id(code: &str) -> bool {
    code.len() > 10
        && code.bytes().all(|b| b.is_ascii_digit())
        && code.ends_with(|c: char| c.is_ascii_digit())
        && &code[code.len() - 10..code.len() - 1] == "100000110"
}

/// A FHIR `CodeableConcept`: codings plus the sender's text.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Concept {
    pub codings: Vec<Coding>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

impl Concept {
    /// Reads a FHIR `CodeableConcept`; codings without a code are skipped.
    pub fn from_json(v: &Value) -> Concept {
        let codings = v
            .get("coding")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Coding::from_json).collect())
            .unwrap_or_default();
        let text = v
            .get("text")
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned);
        Concept { codings, text }
    }

    /// Reads a medication concept: SNOMED codings become dm+d codings (rule 3 of the module doc).
    pub fn read_medication(v: &Value) -> Concept {
        let mut c = Concept::from_json(v);
        for coding in &mut c.codings {
            if coding.is_snomed() {
                coding.system = DMD.to_owned();
            }
        }
        c
    }

    pub fn is_empty(&self) -> bool {
        self.codings.is_empty() && self.text.is_none()
    }

    /// The dm+d coding of this concept, if any.
    pub fn dmd_code(&self) -> Option<&Coding> {
        self.codings.iter().find(|c| c.is_dmd())
    }

    /// The first SNOMED coding.
    pub fn snomed(&self) -> Option<&Coding> {
        self.codings.iter().find(|c| c.is_snomed())
    }

    /// The coding to show and index by: SNOMED, then dm+d, then LOINC, then the first.
    pub fn primary(&self) -> Option<&Coding> {
        self.codings.iter().min_by_key(|c| c.rank())
    }

    /// What to show: the sender's text, else the primary coding's display, else its code.
    pub fn display(&self) -> String {
        if let Some(t) = &self.text {
            return t.clone();
        }
        match self.primary() {
            Some(c) => c.label().to_owned(),
            None => String::new(),
        }
    }

    /// True when any coding has this system and code.
    pub fn has(&self, system: &str, code: &str) -> bool {
        self.codings
            .iter()
            .any(|c| c.code == code && (c.system == system || (c.is_dmd() && system == DMD)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dmd_system_is_dmd() {
        assert!(Coding::new(DMD, "322236009", None).is_dmd());
    }

    #[test]
    fn uk_drug_extension_id_under_snomed_is_dmd() {
        // A VMP id in the UK drug extension: namespace 1000001, partition 10.
        let c = Coding::new(
            SNOMED,
            "39720311000001101",
            Some("Paracetamol 500mg tablets"),
        );
        assert!(c.is_dmd());
        // A core clinical concept is not.
        assert!(!Coding::new(SNOMED, "44054006", None).is_dmd());
        // A UK clinical extension concept (namespace 1000000) is not.
        assert!(!Coding::new(SNOMED, "999791000000106", None).is_dmd());
    }

    #[test]
    fn medication_concept_normalises_snomed_to_dmd_and_keeps_display() {
        let v = json!({"coding": [{"system": SNOMED, "code": "319773006", "display": "Ramipril 5mg capsules"}]});
        let c = Concept::read_medication(&v);
        let d = c.dmd_code().unwrap();
        assert_eq!(d.system, DMD);
        assert_eq!(d.code, "319773006");
        assert_eq!(d.display.as_deref(), Some("Ramipril 5mg capsules"));
        // The same coding read as a plain concept stays SNOMED and is not dm+d (core id).
        assert!(Concept::from_json(&v).dmd_code().is_none());
    }

    #[test]
    fn display_prefers_sender_text_then_snomed_display() {
        let v = json!({"coding": [
            {"system": LOINC, "code": "8480-6", "display": "Systolic blood pressure"},
            {"system": SNOMED, "code": "271649006", "display": "Systolic BP"}
        ]});
        let c = Concept::from_json(&v);
        assert_eq!(c.display(), "Systolic BP");
        assert_eq!(c.primary().unwrap().code, "271649006");
        let v = json!({"coding": [{"system": SNOMED, "code": "271649006"}], "text": "Sys BP"});
        assert_eq!(Concept::from_json(&v).display(), "Sys BP");
    }

    #[test]
    fn codings_without_code_are_skipped() {
        let v = json!({"coding": [{"system": SNOMED}, {"system": SNOMED, "code": " "}]});
        assert!(Concept::from_json(&v).codings.is_empty());
    }
}
