//! The four RCGP "GP summary data sharing exclusion" sets, always excluded by every agreement.
//!
//! The RCGP sets (sexually transmitted disease, termination of pregnancy, assisted
//! fertilisation, gender related issues) are published as large SNOMED CT reference sets with
//! their descendants. Doorstep has no terminology server, so what is here is a **starting
//! subset**: a handful of concept ids per set that we confirmed against public sources, matched
//! exactly (no subsumption). Growing the lists (or loading the published refsets at the server)
//! is the way to widen coverage; the matching rule does not change.
//!
//! An item is excluded when *any* of its codes is in *any* set ([`is_rcgp_excluded`]). A
//! dm+d-normalised medication code is a SNOMED id too and is matched the same way.

use crate::coding::{Coding, DMD, SNOMED};

/// Sexually transmitted disease.
pub const STI_CODES: &[&str] = &[
    "8098009",   // Sexually transmitted infectious disease (disorder)
    "15628003",  // Gonorrhoea (disorder)
    "76272004",  // Syphilis (disorder)
    "105629000", // Chlamydial infection (disorder)
    "33839006",  // Genital herpes simplex (disorder)
    "86406008",  // Human immunodeficiency virus infection (disorder)
];

/// Termination of pregnancy.
pub const TOP_CODES: &[&str] = &[
    "386639001", // Termination of pregnancy (procedure)
    "57797005",  // Induced termination of pregnancy (procedure)
];

/// Assisted fertilisation.
pub const FERTILITY_CODES: &[&str] = &[
    "52637005", // In vitro fertilisation / test tube ovum fertilisation (procedure)
];

/// Gender related issues.
pub const GENDER_CODES: &[&str] = &[
    "93461009",  // Gender dysphoria (disorder)
    "407376001", // Male-to-female transsexual (finding)
    "407377005", // Female-to-male transsexual (finding)
];

/// The four sets with a name, for reports and tests.
pub const RCGP_SETS: [(&str, &[&str]); 4] = [
    ("sexually transmitted disease", STI_CODES),
    ("termination of pregnancy", TOP_CODES),
    ("assisted fertilisation", FERTILITY_CODES),
    ("gender related issues", GENDER_CODES),
];

/// True when any SNOMED (or dm+d) coding is in one of the four RCGP exclusion sets.
pub fn is_rcgp_excluded(codes: &[Coding]) -> bool {
    codes.iter().any(|c| {
        (c.system == SNOMED || c.system == DMD)
            && RCGP_SETS
                .iter()
                .any(|(_, set)| set.contains(&c.code.as_str()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_set_excludes_its_codes() {
        for (name, set) in RCGP_SETS {
            assert!(!set.is_empty(), "{name}");
            for code in set {
                assert!(
                    is_rcgp_excluded(&[Coding::new(SNOMED, code, None)]),
                    "{name} {code}"
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
}
