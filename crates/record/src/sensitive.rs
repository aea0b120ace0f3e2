//! What every agreement withholds, whatever it says: the RCGP exclusion sets and items kept
//! confidential at source.
//!
//! An item is **always withheld** ([`always_withheld`]) when:
//! 1. it is confidential at source: its `meta.security` holds v3 Confidentiality R or V
//!    ([`crate::fhir::Resource::is_confidential`]), or **any contained resource** does (a
//!    confidential Medication inside a MedicationRequest makes the request confidential);
//! 2. anything in it is in an exclusion set ([`ExclusionSets`]): any coding anywhere in the
//!    resource (contained resources included), or any text naming a set's term (the rule is
//!    in [`crate::valueset`], the walk in [`crate::codes`]);
//! 3. a `text/*` attachment in it could not be decoded, so nobody can say what it holds
//!    (least data).
//!
//! The sets themselves ship as FHIR ValueSets in `crates/record/valuesets/` and are a
//! **starting subset** of the published RCGP sets; a server widens them by loading the
//! published sets ([`ExclusionSets::extend`]), and the matching rule does not change.
//!
//! # Confidential patients
//!
//! A Patient is never withheld (the banner needs it), but a Patient marked confidential
//! (R or V) is sent through [`redact_for_sharing`]: the banner fields stay (name, birth date,
//! gender, identifiers with the NHS number, registered practice and managing organisation),
//! while `address`, `telecom`, the contacts' addresses and telecoms, and the narrative (which
//! may repeat the address) are removed. Invariant: redaction only removes elements.

use serde_json::Value;

use crate::codes::{self, Extracted, FoundCoding};
use crate::coding::Coding;
use crate::fhir::{Resource, ResourceType};
pub use crate::valueset::{ExclusionSets, ValueSet, ValueSetError};

/// True when the item is withheld by every agreement (see the module doc).
pub fn always_withheld(resource: &Resource, sets: &ExclusionSets) -> bool {
    let found = codes::extract(resource);
    always_withheld_found(resource, &found, sets)
}

/// [`always_withheld`] for a resource already walked.
pub fn always_withheld_found(resource: &Resource, found: &Extracted, sets: &ExclusionSets) -> bool {
    resource.is_confidential()
        || found.contained_confidential
        || found.uninspectable
        || sets.excludes(found)
}

/// True when the resource is in one of the shipped RCGP sets (every coded element and every
/// text, see the module doc). Confidentiality is not considered.
pub fn is_rcgp_excluded_resource(resource: &Resource) -> bool {
    ExclusionSets::shipped_ref().excludes(&codes::extract(resource))
}

/// True when any of these codings (by code, or by display naming a term) is in one of the
/// shipped RCGP sets.
pub fn is_rcgp_excluded(codings: &[Coding]) -> bool {
    let found = Extracted {
        codings: codings
            .iter()
            .map(|c| FoundCoding {
                system: codes::normalise_system(Some(&c.system), None),
                code: c.code.trim().to_owned(),
            })
            .collect(),
        texts: codings.iter().filter_map(|c| c.display.clone()).collect(),
        ..Extracted::default()
    };
    ExclusionSets::shipped_ref().excludes(&found)
}

/// True when [`redact_for_sharing`] would change the resource: a confidential Patient.
pub fn needs_redaction(resource: &Resource) -> bool {
    resource.resource_type == ResourceType::Patient && resource.is_confidential()
}

/// The resource as it may be shared: a confidential Patient without its address, telecom,
/// contacts' addresses and telecoms, and narrative (see the module doc); anything else as it
/// is.
pub fn redact_for_sharing(resource: &Resource) -> Resource {
    let mut out = resource.clone();
    if !needs_redaction(resource) {
        return out;
    }
    if let Some(obj) = out.json.as_object_mut() {
        for key in ["address", "telecom", "text"] {
            obj.remove(key);
        }
        if let Some(Value::Array(contacts)) = obj.get_mut("contact") {
            for contact in contacts.iter_mut().filter_map(Value::as_object_mut) {
                contact.remove("address");
                contact.remove("telecom");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coding::SNOMED;

    #[test]
    fn every_shipped_set_excludes_its_codes() {
        for set in ExclusionSets::shipped_ref().sets() {
            assert!(!set.codes.is_empty(), "{}", set.url);
            for (_, code) in &set.codes {
                assert!(
                    is_rcgp_excluded(&[Coding::new(SNOMED, code, None)]),
                    "{} {code}",
                    set.url
                );
            }
        }
    }

    #[test]
    fn ordinary_problems_are_not_excluded() {
        let diabetes = Coding::new(SNOMED, "44054006", Some("Type 2 diabetes mellitus"));
        assert!(!is_rcgp_excluded(std::slice::from_ref(&diabetes)));
        // One excluded code among others is enough.
        let chlamydia = Coding::new(SNOMED, "105629000", None);
        assert!(is_rcgp_excluded(&[diabetes, chlamydia]));
    }

    #[test]
    fn same_code_in_another_system_is_not_matched() {
        // A LOINC or local code that happens to share the digits is not SNOMED.
        assert!(!is_rcgp_excluded(&[Coding::new(
            "https://example.org/local",
            "8098009",
            None
        )]));
    }

    #[test]
    fn local_code_is_matched_by_its_display() {
        assert!(is_rcgp_excluded(&[Coding::new(
            "https://example.org/local",
            "X1",
            Some("Chlamydia screen positive")
        )]));
    }
}
