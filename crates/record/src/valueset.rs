//! Exclusion value sets: the four RCGP sets as FHIR R4 ValueSets, and the sets a server loads.
//!
//! # The shipped floor
//!
//! The four RCGP "GP summary data sharing exclusion" sets (sexually transmitted disease,
//! termination of pregnancy, assisted fertilisation, gender related issues) ship as FHIR R4
//! ValueSet JSON in `crates/record/valuesets/` ([`ExclusionSets::shipped`]). Each is a
//! **subset** of the published set (see each file's `description`): enumerated concepts in
//! `compose.include[].concept[]` per code system, plus **terms**, one per extension
//! `{"url": TERM_EXTENSION, "valueString": "chlamydia"}` on the ValueSet itself. (A ValueSet
//! has no element for free-text terms; an extension keeps the file a valid ValueSet that any
//! FHIR tool reads, and says plainly that the terms are Doorstep's.)
//!
//! A Read v2 / CTV3 map ships beside them (`valuesets/read-to-snomed.json`), so a code sent
//! in Read is matched through the SNOMED concept its meaning falls under.
//!
//! # Matching rule
//!
//! An item is in a set when, among everything [`crate::codes::extract`] found in it:
//! 1. a coding's normalised system and code is enumerated in the set (SNOMED in any spelling
//!    and dm+d count as one system: dm+d ids are SNOMED ids), or
//! 2. a Read v2 code, or one of its ancestors (Read v2 codes are hierarchical by position:
//!    `A98..` is the parent of `A980.`), or a CTV3 code (exactly) is enumerated, or maps to an
//!    enumerated SNOMED concept, or
//! 3. some text (a concept's text, a coding's or reference's display, narrative, notes,
//!    titles, text attachments) names one of the set's terms: case-insensitive, whole words,
//!    any run of non-alphanumeric characters counting as one space (so `gender-affirming`,
//!    `Gender affirming` and `GENDER  AFFIRMING` are one term, and `HIV` does not match
//!    `archive`).
//!
//! Codes in unknown systems (local codes, LOINC, no system) are matched by their display
//! only (rule 3): their digits mean nothing outside their system.
//!
//! # Term choices
//!
//! Terms are words that name the category and little else. Known, accepted over-matches:
//! `HIV` matches "HIV test negative" (an HIV test is in the STI set in RCGP practice);
//! `abortion` matches "spontaneous abortion" (a miscarriage): least data wins, and the item
//! is counted so the clinician knows something is held back. Left out because they name
//! ordinary things too: `AIDS` (hearing aids), `PrEP` (bowel prep), `herpes` alone
//! (shingles), `tenofovir` and `lamivudine` alone (hepatitis B), `misoprostol` (with
//! diclofenac as Arthrotec), gender-affirming hormones by name (oestradiol, testosterone).
//!
//! # Loading
//!
//! [`ValueSet::from_json`] reads an enumerated ValueSet (intensional `filter`s and
//! `compose.exclude` are refused: Doorstep cannot expand them) with errors naming the field.
//! [`ExclusionSets::extend`] adds a loaded set; a set with the url of one already held is
//! merged: it can add codes and terms, never remove one. What the load lacked and was kept is
//! reported. Invariant: the shipped floor is a subset of every [`ExclusionSets`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use serde_json::Value;

use crate::codes::{CodeSystem, Extracted, FoundCoding, normalise_system};

/// The extension on a ValueSet that carries one exclusion term (`valueString`).
pub const TERM_EXTENSION: &str = "https://doorstep.example/fhir/StructureDefinition/exclusion-term";

/// The shipped sets, in the order the RCGP names them.
const SHIPPED: [&str; 4] = [
    include_str!("../valuesets/rcgp-sti.json"),
    include_str!("../valuesets/rcgp-top.json"),
    include_str!("../valuesets/rcgp-fertility.json"),
    include_str!("../valuesets/rcgp-gender.json"),
];

const READ_MAP: &str = include_str!("../valuesets/read-to-snomed.json");

/// An enumerated value set: codes per normalised system, plus terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueSet {
    /// The canonical url, which identifies the set across loads.
    pub url: String,
    /// `title`, else `name`, else the url.
    pub title: String,
    pub codes: BTreeSet<(CodeSystem, String)>,
    /// As written in the file.
    pub terms: BTreeSet<String>,
}

/// Why a text is not a value set Doorstep can use. Names fields, never values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueSetError {
    #[error("not JSON (line {line}, column {column})")]
    NotJson { line: usize, column: usize },
    #[error("{field}: {problem}")]
    Field {
        field: String,
        problem: &'static str,
    },
    #[error("the value set enumerates no codes and no terms")]
    Empty,
}

fn field(field: impl Into<String>, problem: &'static str) -> ValueSetError {
    ValueSetError::Field {
        field: field.into(),
        problem,
    }
}

fn required_str<'a>(v: &'a Value, key: &str, path: &str) -> Result<&'a str, ValueSetError> {
    let at = |k: &str| {
        if path.is_empty() {
            k.to_owned()
        } else {
            format!("{path}.{k}")
        }
    };
    match v.get(key) {
        None | Some(Value::Null) => Err(field(at(key), "missing")),
        Some(Value::String(s)) if s.trim().is_empty() => Err(field(at(key), "empty")),
        Some(Value::String(s)) => Ok(s.trim()),
        Some(_) => Err(field(at(key), "not a string")),
    }
}

fn optional_array<'a>(v: &'a Value, key: &str, path: &str) -> Result<&'a [Value], ValueSetError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(_) => Err(field(
            if path.is_empty() {
                key.to_owned()
            } else {
                format!("{path}.{key}")
            },
            "not an array",
        )),
    }
}

impl ValueSet {
    /// Reads an enumerated FHIR R4 ValueSet (see the module doc).
    pub fn from_json(text: &str) -> Result<ValueSet, ValueSetError> {
        let v: Value = serde_json::from_str(text).map_err(|e| ValueSetError::NotJson {
            line: e.line(),
            column: e.column(),
        })?;
        if !v.is_object() {
            return Err(field("resource", "not an object"));
        }
        if required_str(&v, "resourceType", "")? != "ValueSet" {
            return Err(field("resourceType", "not ValueSet"));
        }
        let url = required_str(&v, "url", "")?.to_owned();
        let title = ["title", "name"]
            .iter()
            .find_map(|k| v.get(*k).and_then(Value::as_str))
            .unwrap_or(&url)
            .to_owned();

        let mut terms = BTreeSet::new();
        for (i, ext) in optional_array(&v, "extension", "")?.iter().enumerate() {
            let path = format!("extension[{i}]");
            if required_str(ext, "url", &path)? == TERM_EXTENSION {
                let term = required_str(ext, "valueString", &path)?;
                if tokens(term).is_empty() {
                    return Err(field(format!("{path}.valueString"), "has no words"));
                }
                terms.insert(term.to_owned());
            }
        }

        let mut codes = BTreeSet::new();
        let compose = v.get("compose");
        if let Some(compose) = compose {
            if compose.get("exclude").is_some() {
                return Err(field(
                    "compose.exclude",
                    "not supported (a floor never shrinks)",
                ));
            }
            for (i, inc) in optional_array(compose, "include", "compose")?
                .iter()
                .enumerate()
            {
                let path = format!("compose.include[{i}]");
                if inc.get("filter").is_some() {
                    return Err(field(
                        format!("{path}.filter"),
                        "not supported (enumerate the concepts)",
                    ));
                }
                if inc.get("valueSet").is_some() {
                    return Err(field(
                        format!("{path}.valueSet"),
                        "not supported (enumerate the concepts)",
                    ));
                }
                let system = required_str(inc, "system", &path)?;
                let system =
                    normalise_system(Some(system), inc.get("version").and_then(Value::as_str));
                for (j, concept) in optional_array(inc, "concept", &path)?.iter().enumerate() {
                    let code = required_str(concept, "code", &format!("{path}.concept[{j}]"))?;
                    codes.insert((system.clone(), normalise_code(&system, code)));
                }
            }
        }
        if codes.is_empty() && terms.is_empty() {
            return Err(ValueSetError::Empty);
        }
        Ok(ValueSet {
            url,
            title,
            codes,
            terms,
        })
    }

    fn has(&self, system: &CodeSystem, code: &str) -> bool {
        self.codes.contains(&(system.clone(), code.to_owned()))
    }
}

/// Read v2 codes are five characters, dot-padded; some systems drop the dots or append the
/// two-digit term id (`A98..00`).
fn normalise_code(system: &CodeSystem, code: &str) -> String {
    let code = code.trim();
    match system {
        CodeSystem::ReadV2 => {
            let five = if code.len() == 7 && code[5..].bytes().all(|b| b.is_ascii_digit()) {
                &code[..5]
            } else {
                code
            };
            format!("{five:.<5}")
        }
        _ => code.to_owned(),
    }
}

/// A Read v2 code and its ancestors: `A9801`, `A980.`, `A98..`, `A9...` (not the bare chapter
/// letter: a chapter is never a set).
fn read_v2_lineage(code: &str) -> Vec<String> {
    let code: Vec<char> = code.chars().collect();
    if code.len() != 5 {
        return vec![code.iter().collect()];
    }
    let significant = code.iter().rposition(|&c| c != '.').map_or(0, |i| i + 1);
    (2..=significant.max(2))
        .rev()
        .map(|n| {
            let mut s: String = code[..n.min(5)].iter().collect();
            while s.chars().count() < 5 {
                s.push('.');
            }
            s
        })
        .collect()
}

/// Lower-cased words: runs of alphanumeric characters.
fn tokens(s: &str) -> Vec<String> {
    s.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

fn contains_run(haystack: &[String], needle: &[String]) -> bool {
    !needle.is_empty()
        && haystack.len() >= needle.len()
        && haystack.windows(needle.len()).any(|w| w == needle)
}

/// The shipped Read v2 / CTV3 → SNOMED map.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct ReadMap {
    readv2: BTreeMap<String, String>,
    ctv3: BTreeMap<String, String>,
}

impl ReadMap {
    fn shipped() -> ReadMap {
        let v: Value = serde_json::from_str(READ_MAP).expect("shipped Read map is JSON");
        let table = |key: &str| -> BTreeMap<String, String> {
            v[key]
                .as_object()
                .expect("shipped Read map table")
                .iter()
                .map(|(read, m)| {
                    let snomed = m["snomed"].as_str().expect("shipped Read map target");
                    (read.clone(), snomed.to_owned())
                })
                .collect()
        };
        ReadMap {
            readv2: table("readv2"),
            ctv3: table("ctv3"),
        }
    }
}

/// What [`ExclusionSets::extend`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtendReport {
    pub url: String,
    /// No set with this url was held before.
    pub new_set: bool,
    pub added_codes: usize,
    pub added_terms: usize,
    /// Codes (`system|code`) and terms the loaded set lacked and that were kept anyway.
    pub kept: Vec<String>,
}

/// The exclusion sets every agreement applies, always: the shipped RCGP floor plus what a
/// server loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExclusionSets {
    sets: Vec<ValueSet>,
    /// Each set's terms as words, parallel to `sets` (tokenised once, not per item).
    term_words: Vec<Vec<Vec<String>>>,
    read_map: ReadMap,
}

fn term_words(set: &ValueSet) -> Vec<Vec<String>> {
    set.terms.iter().map(|t| tokens(t)).collect()
}

impl ExclusionSets {
    /// The shipped RCGP sets and Read map (a copy, to [`extend`](Self::extend)).
    pub fn shipped() -> ExclusionSets {
        ExclusionSets::shipped_ref().clone()
    }

    /// The shipped sets, parsed once.
    pub fn shipped_ref() -> &'static ExclusionSets {
        static SETS: OnceLock<ExclusionSets> = OnceLock::new();
        SETS.get_or_init(|| {
            let sets: Vec<ValueSet> = SHIPPED
                .iter()
                .map(|t| ValueSet::from_json(t).expect("shipped value set"))
                .collect();
            ExclusionSets {
                term_words: sets.iter().map(term_words).collect(),
                sets,
                read_map: ReadMap::shipped(),
            }
        })
    }

    pub fn sets(&self) -> &[ValueSet] {
        &self.sets
    }

    /// Adds a loaded set, or merges it into the held set of the same url (extend, never
    /// shrink; see the module doc).
    pub fn extend(&mut self, loaded: ValueSet) -> Result<ExtendReport, ValueSetError> {
        if loaded.codes.is_empty() && loaded.terms.is_empty() {
            return Err(ValueSetError::Empty);
        }
        let Some(index) = self.sets.iter().position(|s| s.url == loaded.url) else {
            let ext = ExtendReport {
                url: loaded.url.clone(),
                new_set: true,
                added_codes: loaded.codes.len(),
                added_terms: loaded.terms.len(),
                kept: Vec::new(),
            };
            self.term_words.push(term_words(&loaded));
            self.sets.push(loaded);
            return Ok(ext);
        };
        let held = &mut self.sets[index];
        let mut kept: Vec<String> = held
            .codes
            .difference(&loaded.codes)
            .map(|(s, c)| format!("{}|{c}", system_label(s)))
            .collect();
        kept.extend(held.terms.difference(&loaded.terms).cloned());
        let (codes_before, terms_before) = (held.codes.len(), held.terms.len());
        held.codes.extend(loaded.codes);
        held.terms.extend(loaded.terms);
        self.term_words[index] = term_words(held);
        Ok(ExtendReport {
            url: loaded.url,
            new_set: false,
            added_codes: held.codes.len() - codes_before,
            added_terms: held.terms.len() - terms_before,
            kept,
        })
    }

    /// The SNOMED ids of the codings (Read codes through the map): what agreement
    /// `exclude_codes` and `include_codes` are compared with.
    pub fn snomed_ids(&self, found: &Extracted) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for c in &found.codings {
            match &c.system {
                CodeSystem::Snomed => {
                    out.insert(c.code.clone());
                }
                CodeSystem::ReadV2 | CodeSystem::Ctv3 => out.extend(self.mapped(c)),
                CodeSystem::Other(_) => {}
            }
        }
        out
    }

    /// SNOMED targets of a Read v2 (through its lineage) or CTV3 coding.
    fn mapped(&self, c: &FoundCoding) -> Vec<String> {
        let code = normalise_code(&c.system, &c.code);
        match c.system {
            CodeSystem::ReadV2 => read_v2_lineage(&code)
                .iter()
                .filter_map(|r| self.read_map.readv2.get(r).cloned())
                .collect(),
            CodeSystem::Ctv3 => self.read_map.ctv3.get(&code).cloned().into_iter().collect(),
            _ => Vec::new(),
        }
    }

    fn coding_in(&self, set: &ValueSet, c: &FoundCoding) -> bool {
        let code = normalise_code(&c.system, &c.code);
        match &c.system {
            CodeSystem::Other(_) => false,
            CodeSystem::ReadV2 => {
                read_v2_lineage(&code)
                    .iter()
                    .any(|r| set.has(&CodeSystem::ReadV2, r))
                    || self
                        .mapped(c)
                        .iter()
                        .any(|s| set.has(&CodeSystem::Snomed, s))
            }
            CodeSystem::Ctv3 => {
                set.has(&CodeSystem::Ctv3, &code)
                    || self
                        .mapped(c)
                        .iter()
                        .any(|s| set.has(&CodeSystem::Snomed, s))
            }
            CodeSystem::Snomed => set.has(&CodeSystem::Snomed, &code),
        }
    }

    /// The first set the item is in (see the module doc's matching rule), if any.
    pub fn matching_set(&self, found: &Extracted) -> Option<&ValueSet> {
        let text_tokens: Vec<Vec<String>> = found.texts.iter().map(|t| tokens(t)).collect();
        self.sets
            .iter()
            .zip(&self.term_words)
            .find(|(set, terms)| {
                found.codings.iter().any(|c| self.coding_in(set, c))
                    || text_tokens
                        .iter()
                        .any(|text| terms.iter().any(|term| contains_run(text, term)))
            })
            .map(|(set, _)| set)
    }

    /// True when the item is in any set.
    pub fn excludes(&self, found: &Extracted) -> bool {
        self.matching_set(found).is_some()
    }
}

fn system_label(s: &CodeSystem) -> &str {
    match s {
        CodeSystem::Snomed => crate::coding::SNOMED,
        CodeSystem::ReadV2 => crate::codes::READ_V2,
        CodeSystem::Ctv3 => crate::codes::CTV3,
        CodeSystem::Other(s) => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err(v: Value) -> String {
        ValueSet::from_json(&v.to_string()).unwrap_err().to_string()
    }

    fn set(url: &str, codes: &[&str], terms: &[&str]) -> ValueSet {
        ValueSet::from_json(
            &json!({"resourceType": "ValueSet", "url": url,
                "extension": terms.iter().map(|t| json!({"url": TERM_EXTENSION, "valueString": t})).collect::<Vec<_>>(),
                "compose": {"include": [{"system": "http://snomed.info/sct",
                    "concept": codes.iter().map(|c| json!({"code": c})).collect::<Vec<_>>()}]}})
            .to_string(),
        )
        .unwrap()
    }

    #[test]
    fn shipped_sets_parse_and_hold_the_rcgp_codes() {
        let s = ExclusionSets::shipped();
        assert_eq!(s.sets().len(), 4);
        let sti = &s.sets()[0];
        assert_eq!(sti.url, "https://doorstep.example/fhir/ValueSet/rcgp-sti");
        assert!(
            sti.codes
                .contains(&(CodeSystem::Snomed, "105629000".into()))
        );
        assert!(sti.terms.contains("chlamydia"));
        assert!(
            s.sets()[3]
                .codes
                .contains(&(CodeSystem::Snomed, "93461009".into()))
        );
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(err(json!({"url": "u"})), "resourceType: missing");
        assert_eq!(
            err(json!({"resourceType": "CodeSystem", "url": "u"})),
            "resourceType: not ValueSet"
        );
        assert_eq!(err(json!({"resourceType": "ValueSet"})), "url: missing");
        let bad_concept = json!({"resourceType": "ValueSet", "url": "u", "compose": {"include": [
            {"system": "http://snomed.info/sct", "concept": [{"code": "1"}]},
            {"system": "http://snomed.info/sct", "concept": [{"code": "2"}]},
            {"system": "http://snomed.info/sct", "concept": [
                {"code": "3"}, {"code": "4"}, {"code": "5"}, {"code": "6"}, {"code": "7"},
                {"display": "no code"}]}]}});
        assert_eq!(
            err(bad_concept),
            "compose.include[2].concept[5].code: missing"
        );
        assert_eq!(
            err(
                json!({"resourceType": "ValueSet", "url": "u", "compose": {"include": [{"concept": [{"code": "1"}]}]}})
            ),
            "compose.include[0].system: missing"
        );
        assert_eq!(
            err(
                json!({"resourceType": "ValueSet", "url": "u", "compose": {"include": [
                {"system": "http://snomed.info/sct", "filter": [{"property": "concept", "op": "is-a", "value": "1"}]}]}})
            ),
            "compose.include[0].filter: not supported (enumerate the concepts)"
        );
        assert_eq!(
            err(
                json!({"resourceType": "ValueSet", "url": "u", "extension": [{"url": TERM_EXTENSION}]})
            ),
            "extension[0].valueString: missing"
        );
        assert_eq!(
            err(json!({"resourceType": "ValueSet", "url": "u"})),
            "the value set enumerates no codes and no terms"
        );
        assert!(matches!(
            ValueSet::from_json("{not json"),
            Err(ValueSetError::NotJson { line: 1, .. })
        ));
    }

    #[test]
    fn a_load_of_a_shipped_url_extends_but_never_shrinks() {
        let mut s = ExclusionSets::shipped();
        // The published set, say, without 33839006 and without the term "syphilis".
        let loaded = set(
            "https://doorstep.example/fhir/ValueSet/rcgp-sti",
            &[
                "8098009",
                "15628003",
                "76272004",
                "105629000",
                "86406008",
                "240589008",
            ],
            &["chlamydia"],
        );
        let ext = s.extend(loaded).unwrap();
        assert!(!ext.new_set);
        assert_eq!(ext.added_codes, 1);
        assert_eq!(ext.added_terms, 0);
        assert!(
            ext.kept
                .contains(&"http://snomed.info/sct|33839006".to_owned())
        );
        assert!(ext.kept.contains(&"syphilis".to_owned()));
        let sti = &s.sets()[0];
        assert!(sti.codes.contains(&(CodeSystem::Snomed, "33839006".into())));
        assert!(
            sti.codes
                .contains(&(CodeSystem::Snomed, "240589008".into()))
        );
        assert!(sti.terms.contains("syphilis"));
        // The shipped floor is still a subset of every set.
        for (held, floor) in s.sets().iter().zip(ExclusionSets::shipped_ref().sets()) {
            assert!(floor.codes.is_subset(&held.codes));
            assert!(floor.terms.is_subset(&held.terms));
        }
    }

    #[test]
    fn a_load_of_a_new_url_adds_a_set() {
        let mut s = ExclusionSets::shipped();
        let ext = s
            .extend(set(
                "https://example.org/ValueSet/local",
                &["35489007"],
                &[],
            ))
            .unwrap();
        assert!(ext.new_set);
        assert_eq!(s.sets().len(), 5);
    }

    #[test]
    fn read_v2_lineage_walks_up_to_the_chapter_block() {
        assert_eq!(
            read_v2_lineage("A9801"),
            ["A9801", "A980.", "A98..", "A9..."]
        );
        assert_eq!(read_v2_lineage("A98.."), ["A98..", "A9..."]);
        assert_eq!(normalise_code(&CodeSystem::ReadV2, "A98"), "A98..");
        assert_eq!(normalise_code(&CodeSystem::ReadV2, "A98..00"), "A98..");
    }

    #[test]
    fn terms_match_whole_words_in_any_case_and_punctuation() {
        let t = |s: &str| tokens(s);
        assert!(contains_run(
            &t("Referred to the GENDER-AFFIRMING service"),
            &t("gender affirming")
        ));
        assert!(contains_run(&t("hiv test negative"), &t("HIV")));
        assert!(!contains_run(&t("archive copy"), &t("HIV")));
        assert!(!contains_run(&t("Chlamydiaceae"), &t("chlamydia")));
    }
}
