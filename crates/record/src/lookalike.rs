//! Look-alike names: which patients on one list a clinician could take for each other.
//!
//! Two patients with the same name on one list are a known route to the wrong record (hazard
//! H2). The list and the banner warn when a patient shares their name with another patient on
//! the list, so the clinician checks the date of birth and NHS number, which are always shown.
//!
//! Names are compared by [`name_key`]: the display name with any title in brackets dropped,
//! case folded, accents folded (Siân and Sian are one name to the eye of someone in a hurry)
//! and punctuation and spacing reduced, so `EVANS, Siân (Mrs)` and `Evans, Sian (Ms)` match.
//! Nothing here decides who the patient is: it only says when to look twice.

use std::collections::HashMap;

/// The form two names are compared in.
pub fn name_key(display: &str) -> String {
    // Drop bracketed parts: titles such as "(Mrs)".
    let mut bare = String::with_capacity(display.len());
    let mut depth = 0u32;
    for c in display.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            c if depth == 0 => bare.push(c),
            _ => {}
        }
    }
    let mut key = String::with_capacity(bare.len());
    for c in bare.chars().flat_map(char::to_lowercase) {
        let c = fold_accent(c);
        if c.is_alphanumeric() {
            key.push(c);
        } else if !key.ends_with(' ') && !key.is_empty() {
            // Commas, hyphens, apostrophes and runs of spaces all become one space.
            key.push(' ');
        }
    }
    key.trim_end().to_owned()
}

/// The letter without its accent, for the accents of names written in Britain.
fn fold_accent(c: char) -> char {
    match c {
        'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' | 'ā' => 'a',
        'ç' | 'ć' | 'č' => 'c',
        'è' | 'é' | 'ê' | 'ë' | 'ē' | 'ę' => 'e',
        'ì' | 'í' | 'î' | 'ï' | 'ī' => 'i',
        'ñ' | 'ń' => 'n',
        'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'ø' | 'ō' => 'o',
        'ù' | 'ú' | 'û' | 'ü' | 'ū' => 'u',
        'ý' | 'ÿ' | 'ŷ' => 'y',
        'ŵ' => 'w',
        'ś' | 'š' => 's',
        'ź' | 'ż' | 'ž' => 'z',
        'ł' => 'l',
        c => c,
    }
}

/// For each name, whether another name of `names` has the same [`name_key`].
pub fn shares_a_name<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<bool> {
    let keys: Vec<String> = names.into_iter().map(name_key).collect();
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for k in &keys {
        *counts.entry(k.as_str()).or_default() += 1;
    }
    keys.iter()
        .map(|k| !k.is_empty() && counts[k.as_str()] > 1)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_case_accents_and_punctuation_do_not_tell_names_apart() {
        assert_eq!(name_key("EVANS, Siân (Mrs)"), "evans sian");
        assert_eq!(name_key("Evans,  Sian (Ms)"), "evans sian");
        assert_eq!(name_key("O'NEILL, Zoë"), "o neill zoe");
        assert_eq!(name_key("O NEILL, Zoe (Dr)"), "o neill zoe");
        assert_eq!(name_key("SMITH-JONES, Ann"), "smith jones ann");
        assert_ne!(name_key("EVANS, Siân"), name_key("EVANS, Sioned"));
    }

    #[test]
    fn only_names_shared_with_another_row_are_flagged() {
        let names = [
            "EVANS, Siân (Mrs)",
            "MORGAN, Rhys (Mr)",
            "Evans, Sian (Ms)",
            "JONES, Mair",
            "",
            "",
        ];
        assert_eq!(
            shares_a_name(names),
            vec![true, false, true, false, false, false]
        );
    }
}
