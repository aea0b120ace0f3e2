//! The local pick list of coded problems a clinician may attach to a consultation note.
//!
//! SNOMED CT concepts (international edition, `http://snomed.info/sct`), chosen for community
//! and out-of-hours work. Every code here is a long-standing, active clinical-finding or
//! disorder concept; the display is its preferred term in UK English. The list is short on
//! purpose: a note is free text first, and a practice codes properly when it files the note.

/// SNOMED CT's system URI.
pub const SNOMED: &str = "http://snomed.info/sct";

/// `(concept id, preferred term)`, sorted by term.
pub const PICK_LIST: &[(&str, &str)] = &[
    ("49436004", "Atrial fibrillation"),
    ("195967001", "Asthma"),
    ("128045006", "Cellulitis"),
    ("709044004", "Chronic kidney disease"),
    ("13645005", "Chronic obstructive lung disease"),
    ("52448006", "Dementia"),
    ("35489007", "Depressive disorder"),
    ("44054006", "Diabetes mellitus type 2"),
    ("1912002", "Fall"),
    ("84114007", "Heart failure"),
    ("38341003", "Hypertensive disorder"),
    ("396275006", "Osteoarthritis"),
    ("233604007", "Pneumonia"),
    ("399912005", "Pressure ulcer"),
    ("68566005", "Urinary tract infectious disease"),
];

/// True when `id` is well formed as a SNOMED CT concept id: 6 to 18 digits, no leading zero,
/// partition `00` or `10` (a concept), and a valid Verhoeff check digit. (Well formed is not
/// the same as existing: this catches typing errors, not retired concepts.)
pub fn is_snomed_concept_id(id: &str) -> bool {
    const D: [[u8; 10]; 10] = [
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
        [1, 2, 3, 4, 0, 6, 7, 8, 9, 5],
        [2, 3, 4, 0, 1, 7, 8, 9, 5, 6],
        [3, 4, 0, 1, 2, 8, 9, 5, 6, 7],
        [4, 0, 1, 2, 3, 9, 5, 6, 7, 8],
        [5, 9, 8, 7, 6, 0, 4, 3, 2, 1],
        [6, 5, 9, 8, 7, 1, 0, 4, 3, 2],
        [7, 6, 5, 9, 8, 2, 1, 0, 4, 3],
        [8, 7, 6, 5, 9, 3, 2, 1, 0, 4],
        [9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
    ];
    const P: [[u8; 10]; 8] = [
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
        [1, 5, 7, 6, 2, 8, 3, 0, 9, 4],
        [5, 8, 0, 3, 7, 9, 6, 1, 4, 2],
        [8, 9, 1, 6, 0, 4, 3, 5, 2, 7],
        [9, 4, 5, 3, 1, 2, 6, 8, 7, 0],
        [4, 2, 8, 6, 5, 7, 3, 9, 0, 1],
        [2, 7, 9, 3, 8, 0, 6, 4, 1, 5],
        [7, 0, 4, 6, 9, 1, 3, 2, 5, 8],
    ];
    let bytes = id.as_bytes();
    if !(6..=18).contains(&bytes.len()) || bytes[0] == b'0' || !bytes.iter().all(u8::is_ascii_digit)
    {
        return false;
    }
    let partition = &id[id.len() - 3..id.len() - 1];
    if partition != "00" && partition != "10" {
        return false;
    }
    let mut check = 0u8;
    for (i, b) in bytes.iter().rev().enumerate() {
        check = D[check as usize][P[i % 8][(b - b'0') as usize] as usize];
    }
    check == 0
}

/// The preferred term of `code`, when it is on the pick list.
pub fn display_of(code: &str) -> Option<&'static str> {
    PICK_LIST
        .iter()
        .find(|(c, _)| *c == code.trim())
        .map(|(_, d)| *d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_is_a_valid_sctid_and_listed_once() {
        let mut seen = std::collections::HashSet::new();
        for (code, display) in PICK_LIST {
            assert!(is_snomed_concept_id(code), "{code} {display}");
            assert!(seen.insert(*code), "{code} twice");
            assert!(!display.trim().is_empty());
        }
        assert_eq!(display_of(" 38341003 "), Some("Hypertensive disorder"));
        assert_eq!(display_of("12345"), None);
    }

    #[test]
    fn concept_ids_are_checked_by_verhoeff_and_partition() {
        // Well-known concepts, and the same with one digit changed or a description's partition.
        for good in ["22298006", "371530004", "1104051000000101"] {
            assert!(is_snomed_concept_id(good), "{good}");
        }
        for bad in ["22298007", "22298016", "12345", "022298006", "2229800a", ""] {
            assert!(!is_snomed_concept_id(bad), "{bad}");
        }
    }
}
