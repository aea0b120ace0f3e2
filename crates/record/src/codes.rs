//! Every coded element and every piece of free text of a resource, for the exclusion rules.
//!
//! The agreement filters and the RCGP exclusion sets must see *everything* a device would
//! receive, not only the element a screen names the item by. [`extract`] walks the resource's
//! JSON (contained resources included, recursively) and collects:
//!
//! - **codings**: every object with a string `code` (a FHIR `Coding`, wherever it sits: the
//!   main `code`, `valueCodeableConcept`, `component[]`, `medicationCodeableConcept`, a
//!   contained Medication's `code`, `reasonCode`, Encounter `type`, `category`, `bodySite`,
//!   extensions, ...). Its system is normalised by [`normalise_system`];
//! - **texts**: every string a reader could see: `CodeableConcept.text`, `Coding.display`,
//!   `Reference.display`, narrative `div` (XHTML stripped), `note[].text`, section and
//!   attachment `title`, `description`, `comment`, `valueString`, `valueMarkdown`,
//!   `conclusion`, and the decoded `data` of a `text/*` attachment;
//! - whether any **contained resource is confidential** (v3 Confidentiality R or V), which
//!   makes the container confidential;
//! - whether some attachment **could not be inspected** (a `text/*` attachment whose data is
//!   not valid base64 or not UTF-8): least data, the caller withholds it.
//!
//! The resource's own `meta` is skipped: its security labels are the confidentiality rule's,
//! and its tags are Doorstep's (the source organisation), not clinical content.
//!
//! # References
//!
//! A reference to a contained resource (`#id`: `reasonReference`, Encounter
//! `diagnosis[].condition`, `medicationReference`, ...) needs no resolving: every contained
//! resource is walked, referenced or not. A reference to *another* resource of the patient
//! (`Condition/abc`) cannot be resolved here (the crate has no store); that resource is
//! evaluated on its own when it is sent, and the reference's `display` is read as text, so a
//! reference whose display names a sensitive term withholds the item that holds it. A bare
//! reference with no display tells the device nothing but an id it will never receive.
//!
//! Invariants: extraction never fails (odd JSON is walked as far as it goes), it does not
//! depend on the resource type (a new type is covered the day it is stored), and it reads only
//! the resource itself.

use serde_json::Value;

use crate::coding::DMD;
use crate::fhir::{CONFIDENTIALITY_SYSTEM, Resource};
use crate::json::{base64_decode, xhtml_to_text};

/// Read v2 (5-byte Read codes).
pub const READ_V2: &str = "http://read.info/readv2";
/// Clinical Terms Version 3 (CTV3).
pub const CTV3: &str = "http://read.info/ctv3";
/// The HL7 OID of SNOMED CT, as some systems send it in `system`.
pub const SNOMED_OID: &str = "urn:oid:2.16.840.1.113883.6.96";
/// The HL7 OID of the v3 Confidentiality code system.
const CONFIDENTIALITY_OID: &str = "urn:oid:2.16.840.1.113883.5.25";

/// A code system as the exclusion rules see it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CodeSystem {
    /// SNOMED CT in any spelling (plain, versioned edition URL, OID) and dm+d, whose ids are
    /// SNOMED ids.
    Snomed,
    ReadV2,
    Ctv3,
    /// Anything else (LOINC, local codes, no system): matched by display text only.
    Other(String),
}

/// Normalises a coding's `system` (and `version`, which may carry a SNOMED edition URL when
/// `system` is absent).
///
/// SNOMED CT: `http://snomed.info/sct`, any `http://snomed.info/sct/<module>[/version/<date>]`
/// edition URL, the OID `urn:oid:2.16.840.1.113883.6.96`; dm+d (`https://dmd.nhs.uk`) is
/// SNOMED too. Comparison ignores case, surrounding spaces, a trailing `/` and the scheme
/// (`http` or `https`), so a mis-typed scheme still matches: for exclusion, matching too much
/// is the safe side.
pub fn normalise_system(system: Option<&str>, version: Option<&str>) -> CodeSystem {
    let raw = system.unwrap_or_default().trim();
    let s = raw.trim_end_matches('/').to_ascii_lowercase();
    let bare = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .unwrap_or(&s);
    let is_snomed_url = |u: &str| u == "snomed.info/sct" || u.starts_with("snomed.info/sct/");
    let dmd = DMD.trim_start_matches("https://");
    if is_snomed_url(bare) || s == SNOMED_OID || bare == dmd || bare.starts_with("dmd.nhs.uk/") {
        return CodeSystem::Snomed;
    }
    if bare == READ_V2.trim_start_matches("http://") {
        return CodeSystem::ReadV2;
    }
    if bare == CTV3.trim_start_matches("http://") {
        return CodeSystem::Ctv3;
    }
    if raw.is_empty() {
        let v = version.unwrap_or_default().trim().to_ascii_lowercase();
        let v = v
            .strip_prefix("https://")
            .or_else(|| v.strip_prefix("http://"))
            .unwrap_or(&v);
        if is_snomed_url(v) {
            return CodeSystem::Snomed;
        }
    }
    CodeSystem::Other(raw.to_owned())
}

/// One coding found anywhere in a resource, its system normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundCoding {
    pub system: CodeSystem,
    /// Trimmed; Read codes are case-sensitive, so the case is kept.
    pub code: String,
}

/// What [`extract`] found in one resource.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extracted {
    pub codings: Vec<FoundCoding>,
    /// Every readable string (see the module doc), as plain text.
    pub texts: Vec<String>,
    /// Some contained resource carries v3 Confidentiality R or V.
    pub contained_confidential: bool,
    /// Some `text/*` attachment could not be decoded, so its content is unknown.
    pub uninspectable: bool,
}

/// Keys whose string value is text a reader sees.
const TEXT_KEYS: &[&str] = &[
    "text",
    "display",
    "title",
    "description",
    "comment",
    "valueString",
    "valueMarkdown",
    "conclusion",
];

/// Walks the resource (see the module doc).
pub fn extract(resource: &Resource) -> Extracted {
    let mut out = Extracted::default();
    walk(&resource.json, true, &mut out);
    out
}

fn walk(v: &Value, top: bool, out: &mut Extracted) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| walk(i, false, out)),
        Value::Object(obj) => {
            // A contained resource: its own security labels count, its tags do not.
            if !top && obj.contains_key("resourceType") && is_confidential_meta(obj.get("meta")) {
                out.contained_confidential = true;
            }
            if let Some(code) = obj.get("code").and_then(Value::as_str) {
                let code = code.trim();
                if !code.is_empty() {
                    out.codings.push(FoundCoding {
                        system: normalise_system(
                            obj.get("system").and_then(Value::as_str),
                            obj.get("version").and_then(Value::as_str),
                        ),
                        code: code.to_owned(),
                    });
                }
            }
            attachment(obj, out);
            for (key, value) in obj {
                if key == "meta" && obj.contains_key("resourceType") {
                    continue;
                }
                match value {
                    Value::String(s) if key == "div" => out.texts.push(xhtml_to_text(s)),
                    Value::String(s) if TEXT_KEYS.contains(&key.as_str()) => {
                        out.texts.push(s.clone())
                    }
                    Value::Object(_) | Value::Array(_) => walk(value, false, out),
                    _ => {}
                }
            }
        }
        _ => {}
    }
}

/// An `Attachment` with inline `text/*` data: the decoded text is read like narrative.
fn attachment(obj: &serde_json::Map<String, Value>, out: &mut Extracted) {
    let (Some(ct), Some(data)) = (
        obj.get("contentType").and_then(Value::as_str),
        obj.get("data").and_then(Value::as_str),
    ) else {
        return;
    };
    let ct = ct.trim().to_ascii_lowercase();
    if !ct.starts_with("text/") {
        return;
    }
    match base64_decode(data).and_then(|b| String::from_utf8(b).ok()) {
        Some(text) if ct.contains("html") || ct.contains("xml") => {
            out.texts.push(xhtml_to_text(&text))
        }
        Some(text) => out.texts.push(text),
        None => out.uninspectable = true,
    }
}

/// True when a `meta` element holds v3 Confidentiality R or V (by URL, its `v3/Confidentiality`
/// tail, or its OID).
pub(crate) fn is_confidential_meta(meta: Option<&Value>) -> bool {
    let Some(labels) = meta
        .and_then(|m| m.get("security"))
        .and_then(Value::as_array)
    else {
        return false;
    };
    labels.iter().any(|s| {
        let system = s.get("system").and_then(Value::as_str).unwrap_or_default();
        let code = s.get("code").and_then(Value::as_str).unwrap_or_default();
        (system == CONFIDENTIALITY_SYSTEM
            || system.ends_with("v3/Confidentiality")
            || system.ends_with("v3-Confidentiality")
            || system == CONFIDENTIALITY_OID)
            && (code == "R" || code == "V")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn found(v: Value) -> Extracted {
        extract(&Resource::from_json(v).unwrap())
    }

    #[test]
    fn snomed_spellings_normalise_to_snomed() {
        for s in [
            "http://snomed.info/sct",
            "http://snomed.info/sct/900000000000207008/version/20240101",
            "http://snomed.info/sct/83821000000107",
            "urn:oid:2.16.840.1.113883.6.96",
            "https://dmd.nhs.uk",
            "HTTPS://snomed.info/sct/",
        ] {
            assert_eq!(normalise_system(Some(s), None), CodeSystem::Snomed, "{s}");
        }
        assert_eq!(
            normalise_system(
                None,
                Some("http://snomed.info/sct/900000000000207008/version/20240101")
            ),
            CodeSystem::Snomed
        );
        assert_eq!(
            normalise_system(Some("http://read.info/readv2"), None),
            CodeSystem::ReadV2
        );
        assert_eq!(
            normalise_system(Some("http://read.info/ctv3"), None),
            CodeSystem::Ctv3
        );
        assert_eq!(
            normalise_system(Some("http://loinc.org"), None),
            CodeSystem::Other("http://loinc.org".into())
        );
    }

    #[test]
    fn meta_of_the_resource_is_skipped_but_contained_security_counts() {
        let e = found(json!({"resourceType": "Condition", "id": "c",
            "meta": {"tag": [{"system": "x", "code": "A81001", "display": "Riverside"}]},
            "contained": [{"resourceType": "Medication", "id": "m",
                "meta": {"security": [{"system": CONFIDENTIALITY_SYSTEM, "code": "R"}]}}]}));
        assert!(e.codings.iter().all(|c| c.code != "A81001"));
        assert!(e.texts.iter().all(|t| t != "Riverside"));
        assert!(e.contained_confidential);
    }

    #[test]
    fn text_attachment_is_decoded_and_bad_data_is_uninspectable() {
        // "Seen in clinic" in base64.
        let e = found(json!({"resourceType": "DocumentReference", "id": "d",
            "content": [{"attachment": {"contentType": "text/plain", "data": "U2VlbiBpbiBjbGluaWM="}}]}));
        assert!(e.texts.iter().any(|t| t == "Seen in clinic"));
        assert!(!e.uninspectable);
        let e = found(json!({"resourceType": "DocumentReference", "id": "d",
            "content": [{"attachment": {"contentType": "text/plain", "data": "%%%"}}]}));
        assert!(e.uninspectable);
    }
}
