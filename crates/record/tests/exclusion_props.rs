//! Property tests of airtight exclusion.
//!
//! The generator builds resources from a small universe of codes (some in the RCGP sets,
//! some ordinary), places each code in one of the elements a sensitive code can hide in,
//! spells SNOMED in its different forms, adds text-only concepts, notes, narrative and
//! confidentiality marks, and **keeps its own book** of what it placed. The oracle decides
//! from that book alone, never from the matcher.

use std::collections::{BTreeMap, BTreeSet};

use chrono::NaiveDate;
use doorstep_record::Section;
use doorstep_record::agreement::{Agreement, Decision, ExclusionSets, SectionShare, evaluate};
use doorstep_record::fhir::{CONFIDENTIALITY_SYSTEM, Resource};
use proptest::prelude::*;
use serde_json::{Value, json};

const SNOMED: &str = "http://snomed.info/sct";
const LOCAL: &str = "https://example.org/local-codes";

/// A code the generator can place.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Code {
    /// A SNOMED id; `true` when it is in a shipped RCGP set.
    Snomed(&'static str, bool),
    /// Read v2 A980. (a child of A98.., gonococcal infections): in the STI set via the map.
    ReadGonococcal,
    /// A local code whose display names an STI term.
    LocalTerm,
    /// A local code with an innocent display: no SNOMED id, not excluded.
    LocalPlain,
}

const RCGP: [&str; 4] = ["105629000", "86406008", "57797005", "93461009"];
/// Ordinary SNOMED ids; agreements filter on these.
const ORDINARY: [&str; 5] = ["44054006", "38341003", "35489007", "13645005", "56459004"];

impl Code {
    fn rcgp(self) -> bool {
        match self {
            Code::Snomed(_, r) => r,
            Code::ReadGonococcal | Code::LocalTerm => true,
            Code::LocalPlain => false,
        }
    }

    fn snomed_id(self) -> Option<&'static str> {
        match self {
            Code::Snomed(id, _) => Some(id),
            _ => None,
        }
    }
}

/// How a SNOMED code's system is spelt.
#[derive(Debug, Clone, Copy)]
enum Spelling {
    Plain,
    Versioned,
    Oid,
    EditionInVersion,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Condition,
    Observation,
    Procedure,
    Medication,
    Encounter,
    Allergy,
    Alert,
}

impl Kind {
    fn section(self) -> Section {
        match self {
            Kind::Condition => Section::Problems,
            Kind::Observation => Section::Observations,
            Kind::Procedure => Section::Procedures,
            Kind::Medication => Section::Medications,
            Kind::Encounter => Section::Encounters,
            Kind::Allergy => Section::Allergies,
            Kind::Alert => Section::Alerts,
        }
    }

    /// Allergies and alerts: an include-only list never withholds them (hazard H3).
    fn safety_item(self) -> bool {
        matches!(self, Kind::Allergy | Kind::Alert)
    }

    /// The elements a code can be placed in, for this kind.
    fn places(self) -> &'static [Place] {
        use Place::*;
        match self {
            Kind::Condition => &[MainCode, Category, BodySite, Extension],
            Kind::Observation => &[
                MainCode,
                Value,
                ComponentCode,
                ComponentValue,
                Category,
                BodySite,
            ],
            Kind::Procedure => &[MainCode, BodySite, ReasonCode, Category],
            Kind::Medication => &[
                MedicationConcept,
                ContainedMedication,
                ReasonCode,
                ContainedReason,
                Category,
            ],
            Kind::Encounter => &[EncounterType, ReasonCode, DiagnosisContained, Extension],
            Kind::Allergy => &[MainCode, ReactionManifestation, Extension],
            Kind::Alert => &[MainCode, Category, Extension],
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Place {
    MainCode,
    Value,
    ComponentCode,
    ComponentValue,
    Category,
    BodySite,
    ReasonCode,
    MedicationConcept,
    ContainedMedication,
    ContainedReason,
    EncounterType,
    DiagnosisContained,
    Extension,
    ReactionManifestation,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Confidential {
    No,
    R,
    V,
    ContainedR,
}

/// One generated resource and the generator's book of it.
#[derive(Debug, Clone)]
struct Spec {
    kind: Kind,
    placed: Vec<(Code, usize, Spelling)>,
    /// A text-only main concept (Condition and Procedure): `Some(true)` names a term.
    main_text: Option<bool>,
    /// A note: `Some(true)` names a term.
    note: Option<bool>,
    /// Narrative: `Some(true)` names a term.
    narrative: Option<bool>,
    confidential: Confidential,
}

impl Spec {
    /// Withheld by every agreement, by the generator's book.
    fn always_excluded(&self) -> bool {
        self.placed.iter().any(|(c, _, _)| c.rcgp())
            || self.main_text == Some(true)
            || self.note == Some(true)
            || self.narrative == Some(true)
            || self.confidential != Confidential::No
    }

    fn snomed_ids(&self) -> BTreeSet<&'static str> {
        self.placed
            .iter()
            .filter_map(|(c, _, _)| c.snomed_id())
            .collect()
    }

    fn place(&self, i: usize) -> Place {
        let places = self.kind.places();
        places[i % places.len()]
    }
}

fn coding(code: Code, spelling: Spelling) -> Value {
    match code {
        Code::Snomed(id, _) => match spelling {
            Spelling::Plain => json!({"system": SNOMED, "code": id}),
            Spelling::Versioned => json!({"system":
                "http://snomed.info/sct/900000000000207008/version/20240101", "code": id}),
            Spelling::Oid => json!({"system": "urn:oid:2.16.840.1.113883.6.96", "code": id}),
            Spelling::EditionInVersion => json!({"system": SNOMED,
                "version": "http://snomed.info/sct/83821000000107/version/20250101", "code": id}),
        },
        Code::ReadGonococcal => json!({"system": "http://read.info/readv2", "code": "A980."}),
        Code::LocalTerm => json!({"system": LOCAL, "code": "L7", "display": "Gonorrhoea"}),
        Code::LocalPlain => json!({"system": LOCAL, "code": "L8", "display": "Review"}),
    }
}

fn push(v: &mut Value, key: &str, item: Value) {
    if !v[key].is_array() {
        v[key] = json!([]);
    }
    v[key].as_array_mut().unwrap().push(item);
}

fn push_coding(v: &mut Value, key: &str, c: Value) {
    if !v[key].is_object() {
        v[key] = json!({});
    }
    push(&mut v[key], "coding", c);
}

fn concept(c: Value) -> Value {
    json!({"coding": [c]})
}

fn build(spec: &Spec, id: usize) -> Resource {
    let mut v = match spec.kind {
        Kind::Condition => json!({"resourceType": "Condition"}),
        Kind::Observation => json!({"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "21613-5"}]}}),
        Kind::Procedure => json!({"resourceType": "Procedure", "status": "completed"}),
        Kind::Medication => {
            json!({"resourceType": "MedicationRequest", "status": "active", "intent": "order"})
        }
        Kind::Encounter => {
            json!({"resourceType": "Encounter", "status": "finished", "class": {"code": "AMB"}})
        }
        Kind::Allergy => json!({"resourceType": "AllergyIntolerance"}),
        Kind::Alert => json!({"resourceType": "Flag", "status": "active"}),
    };
    v["id"] = json!(format!("r{id}"));
    let subject = if spec.kind == Kind::Allergy {
        "patient"
    } else {
        "subject"
    };
    v[subject] = json!({"reference": "Patient/p1"});
    for (n, &(code, place, spelling)) in spec.placed.iter().enumerate() {
        let c = coding(code, spelling);
        match spec.place(place) {
            Place::MainCode => push_coding(&mut v, "code", c),
            Place::Value => push_coding(&mut v, "valueCodeableConcept", c),
            Place::ComponentCode => push(&mut v, "component", json!({"code": concept(c)})),
            Place::ComponentValue => push(
                &mut v,
                "component",
                json!({"code": {"coding": [{"system": "http://loinc.org", "code": "x"}]},
                    "valueCodeableConcept": concept(c)}),
            ),
            Place::Category => push(&mut v, "category", concept(c)),
            Place::BodySite => push(&mut v, "bodySite", concept(c)),
            Place::ReasonCode => push(&mut v, "reasonCode", concept(c)),
            Place::MedicationConcept => push_coding(&mut v, "medicationCodeableConcept", c),
            Place::ContainedMedication => {
                push(
                    &mut v,
                    "contained",
                    json!({"resourceType": "Medication", "id": format!("med{n}"), "code": concept(c)}),
                );
                v["medicationReference"] = json!({"reference": format!("#med{n}")});
            }
            Place::ContainedReason => {
                push(
                    &mut v,
                    "contained",
                    json!({"resourceType": "Condition", "id": format!("why{n}"), "code": concept(c)}),
                );
                push(
                    &mut v,
                    "reasonReference",
                    json!({"reference": format!("#why{n}")}),
                );
            }
            Place::EncounterType => push(&mut v, "type", concept(c)),
            Place::DiagnosisContained => {
                push(
                    &mut v,
                    "contained",
                    json!({"resourceType": "Condition", "id": format!("dx{n}"), "code": concept(c)}),
                );
                push(
                    &mut v,
                    "diagnosis",
                    json!({"condition": {"reference": format!("#dx{n}")}}),
                );
            }
            Place::ReactionManifestation => {
                push(&mut v, "reaction", json!({"manifestation": [concept(c)]}))
            }
            Place::Extension => push(
                &mut v,
                "extension",
                json!({"url": "https://example.org/ext", "valueCoding": c}),
            ),
        }
    }
    if let Some(sensitive) = spec.main_text {
        let text = if sensitive {
            "Gender dysphoria"
        } else {
            "Chest pain"
        };
        if !v["code"].is_object() {
            v["code"] = json!({});
        }
        v["code"]["text"] = json!(text);
    }
    if let Some(sensitive) = spec.note {
        let text = if sensitive {
            "Discussed IVF options"
        } else {
            "Seen in clinic"
        };
        push(&mut v, "note", json!({"text": text}));
    }
    if let Some(sensitive) = spec.narrative {
        let text = if sensitive {
            "<div xmlns=\"http://www.w3.org/1999/xhtml\"><p>After <b>termination of pregnancy</b></p></div>"
        } else {
            "<div xmlns=\"http://www.w3.org/1999/xhtml\"><p>Routine <b>review</b></p></div>"
        };
        v["text"] = json!({"status": "generated", "div": text});
    }
    let label =
        |code: &str| json!({"security": [{"system": CONFIDENTIALITY_SYSTEM, "code": code}]});
    match spec.confidential {
        Confidential::No => {}
        Confidential::R => v["meta"] = label("R"),
        Confidential::V => v["meta"] = label("V"),
        Confidential::ContainedR => push(
            &mut v,
            "contained",
            json!({"resourceType": "Organization", "id": "org", "meta": label("R")}),
        ),
    }
    Resource::from_json(v).unwrap()
}

fn code_strategy() -> impl Strategy<Value = Code> {
    prop_oneof![
        4 => prop::sample::select(&ORDINARY[..]).prop_map(|id| Code::Snomed(id, false)),
        2 => prop::sample::select(&RCGP[..]).prop_map(|id| Code::Snomed(id, true)),
        1 => Just(Code::ReadGonococcal),
        1 => Just(Code::LocalTerm),
        1 => Just(Code::LocalPlain),
    ]
}

fn spelling_strategy() -> impl Strategy<Value = Spelling> {
    prop_oneof![
        Just(Spelling::Plain),
        Just(Spelling::Versioned),
        Just(Spelling::Oid),
        Just(Spelling::EditionInVersion),
    ]
}

fn spec_strategy() -> impl Strategy<Value = Spec> {
    (
        prop_oneof![
            Just(Kind::Condition),
            Just(Kind::Observation),
            Just(Kind::Procedure),
            Just(Kind::Medication),
            Just(Kind::Encounter),
            Just(Kind::Allergy),
            Just(Kind::Alert),
        ],
        prop::collection::vec((code_strategy(), 0usize..8, spelling_strategy()), 0..4),
        prop::option::weighted(0.2, any::<bool>()),
        prop::option::weighted(0.2, prop::bool::weighted(0.3)),
        prop::option::weighted(0.2, prop::bool::weighted(0.3)),
        prop_oneof![
            8 => Just(Confidential::No),
            1 => Just(Confidential::R),
            1 => Just(Confidential::V),
            1 => Just(Confidential::ContainedR),
        ],
    )
        .prop_map(
            |(kind, placed, main_text, note, narrative, confidential)| Spec {
                kind,
                placed,
                main_text: main_text
                    .filter(|_| matches!(kind, Kind::Condition | Kind::Procedure | Kind::Allergy)),
                note,
                narrative,
                confidential,
            },
        )
}

const SECTIONS: [Section; 7] = [
    Section::Problems,
    Section::Observations,
    Section::Procedures,
    Section::Medications,
    Section::Encounters,
    Section::Allergies,
    Section::Alerts,
];

fn agreement_strategy() -> impl Strategy<Value = Agreement> {
    let ids = || prop::sample::subsequence(&ORDINARY[..], 0..=3);
    (
        prop::sample::subsequence(&SECTIONS[..], 1..=7),
        prop::option::weighted(0.4, ids()),
        ids(),
        0u32..1000,
    )
        .prop_map(|(sections, include, exclude, n)| Agreement {
            id: format!("a{n}"),
            name: "generated".into(),
            service: "service".into(),
            practices: vec!["A81001".into()],
            roles: vec!["gp".into()],
            sections: sections
                .into_iter()
                .map(|section| SectionShare {
                    section,
                    lookback_days: None,
                })
                .collect(),
            include_codes: include.map(|v| v.into_iter().map(str::to_owned).collect()),
            exclude_codes: exclude.into_iter().map(str::to_owned).collect(),
            max_offline_hours: 12,
            idle_lock_minutes: 5,
            retention_days: 1,
            ..Agreement::default()
        })
}

fn today() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 1, 15).unwrap()
}

fn decide(r: &Resource, agreements: &[Agreement]) -> Decision {
    evaluate(
        r,
        "A81001",
        "gp",
        agreements,
        ExclusionSets::shipped_ref(),
        today(),
    )
}

/// The decision, from the generator's book and the agreements' lists alone.
fn oracle(spec: &Spec, agreements: &[Agreement]) -> Decision {
    let section = spec.kind.section();
    let admitting: Vec<&Agreement> = agreements
        .iter()
        .filter(|a| a.sections.iter().any(|s| s.section == section))
        .collect();
    if admitting.is_empty() {
        return Decision::NotShared;
    }
    if spec.always_excluded() {
        return Decision::Withheld(section);
    }
    let ids = spec.snomed_ids();
    let passes = |a: &&Agreement| {
        !a.exclude_codes.iter().any(|c| ids.contains(c.as_str()))
            && (spec.kind.safety_item()
                || a.include_codes
                    .as_ref()
                    .is_none_or(|inc| inc.iter().any(|c| ids.contains(c.as_str()))))
    };
    if admitting.iter().any(passes) {
        Decision::Visible
    } else {
        Decision::Withheld(section)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Nothing always-excluded, excluded by every admitting agreement, outside every
    /// include-only set or confidential is ever visible; and every decision is the oracle's.
    #[test]
    fn nothing_excluded_is_ever_visible(
        spec in spec_strategy(),
        agreements in prop::collection::vec(agreement_strategy(), 1..4),
    ) {
        let r = build(&spec, 0);
        let got = decide(&r, &agreements);
        if spec.always_excluded() {
            prop_assert_ne!(got, Decision::Visible, "{}", r.json);
        }
        prop_assert_eq!(got, oracle(&spec, &agreements), "{}", r.json);
    }

    /// Withheld counts per section over a set of resources are exactly what the generator
    /// placed.
    #[test]
    fn withheld_counts_are_exact(
        specs in prop::collection::vec(spec_strategy(), 1..12),
        agreements in prop::collection::vec(agreement_strategy(), 1..3),
    ) {
        let mut got: BTreeMap<Section, u32> = BTreeMap::new();
        let mut want: BTreeMap<Section, u32> = BTreeMap::new();
        for (i, spec) in specs.iter().enumerate() {
            if let Decision::Withheld(s) = decide(&build(spec, i), &agreements) {
                *got.entry(s).or_default() += 1;
            }
            if let Decision::Withheld(s) = oracle(spec, &agreements) {
                *want.entry(s).or_default() += 1;
            }
        }
        prop_assert_eq!(got, want);
    }

    /// The union of agreements is a union: for items not always excluded, visible under
    /// [a, b] iff visible under [a] or under [b].
    #[test]
    fn agreements_combine_as_a_union(
        spec in spec_strategy(),
        a in agreement_strategy(),
        b in agreement_strategy(),
    ) {
        let r = build(&spec, 0);
        let both = decide(&r, &[a.clone(), b.clone()]) == Decision::Visible;
        let either = decide(&r, &[a]) == Decision::Visible || decide(&r, &[b]) == Decision::Visible;
        if spec.always_excluded() {
            prop_assert!(!both);
        } else {
            prop_assert_eq!(both, either, "{}", r.json);
        }
    }
}
