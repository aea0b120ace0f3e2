//! A deterministic synthetic federation: practices, patients and their records as FHIR R4
//! Bundles, for tests, the demo and benchmarks. Nothing here describes a real person.
//!
//! Same [`FederationSpec`] (seed included) → byte-identical output, on every platform: the
//! generator uses its own SplitMix64 PRNG and never reads the clock.
//!
//! What a federation holds:
//! - Practices with ODS-format codes (`A81001`), one of four source systems in turn (EMIS Web,
//!   SystmOne, Vision, Medicus), each with two GPs and a district nurse. Source systems differ
//!   the way real feeds do: EMIS Web and Vision send transaction bundles and dm+d codes under
//!   the SNOMED CT system (Vision with `urn:uuid:` references); SystmOne and Medicus send
//!   collection bundles with the dm+d system (Medicus names the practice by ODS identifier).
//! - One fictional hospital trust ([`HOSPITAL_ODS`]) whose discharge summaries (Composition) and
//!   clinic letters (DocumentReference with a base64 text attachment) sit in the records,
//!   stamped with the trust as source.
//! - Patients with unique, valid NHS numbers from the test range 999 000 0000 – 999 999 9999,
//!   UK names (Welsh, Irish, Scottish and South Asian ones among them, with their accents:
//!   Siân, Zoë, Seán, Ó Briain), addresses with plausible postcodes in the practice's area and
//!   Ofcom drama-range phone numbers (01632 960xxx, 07700 900xxx).
//! - Records of about `resources_per_patient` resources: age-dependent SNOMED CT problem lists,
//!   the dm+d medicines that go with them (repeats, past acute courses), allergies with
//!   reactions, alerts (DNACPR, ReSPECT, safeguarding, practical notes), immunisations,
//!   procedures, encounters with vital signs (blood pressure with components, pulse, SpO2,
//!   temperature, respiration rate, weight; LOINC and SNOMED CT) and result series (HbA1c,
//!   eGFR, potassium) that drift plausibly over time.
//! - About one patient in ten has an item in an RCGP exclusion set, and about one in ten an
//!   item marked confidential (`meta.security` R), so agreement filtering has work to do.
//!
//! # Codes
//!
//! SNOMED CT and LOINC codes were checked against public sources. dm+d codes marked
//! `confirmed` below were too; the medicines without a confirmed code carry a **synthetic**
//! id of the form `DS-...` under the dm+d system, which cannot be mistaken for a real one.

use std::borrow::Borrow;

use chrono::{Datelike, Duration, NaiveDate};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::coding::{DMD, LOINC, NHS_NUMBER_SYSTEM, ODS_SYSTEM, SNOMED};
use crate::fhir::{CONFIDENTIALITY_SYSTEM, SOURCE_TAG_SYSTEM};
use crate::json::base64_encode;
use crate::nhs::NhsNumber;

/// ODS-format code of the fictional hospital trust.
pub const HOSPITAL_ODS: &str = "RZZ";
/// Name of the fictional hospital trust.
pub const HOSPITAL_NAME: &str = "Riverside Teaching Hospitals NHS Trust";

/// What to generate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FederationSpec {
    pub seed: u64,
    pub practices: usize,
    pub patients_per_practice: usize,
    /// Approximate; a patient gets at least a dozen.
    pub resources_per_patient: usize,
    /// The generator's "today": records end on it.
    pub today: NaiveDate,
}

impl Default for FederationSpec {
    fn default() -> Self {
        FederationSpec {
            seed: 1,
            practices: 3,
            patients_per_practice: 100,
            resources_per_patient: 100,
            today: NaiveDate::from_ymd_opt(2026, 1, 15).expect("valid date"),
        }
    }
}

/// A member practice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Practice {
    pub ods: String,
    pub name: String,
    /// `EMIS Web`, `SystmOne`, `Vision` or `Medicus`.
    pub source_system: String,
    pub postcode: String,
}

/// One generated patient, as tests and the demo need to find them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyntheticPatient {
    pub patient_id: String,
    pub nhs_number: NhsNumber,
    pub practice_ods: String,
    /// As the banner shows it: `EVANS, Siân (Mrs)`.
    pub name_display: String,
}

/// A generated federation: one FHIR R4 Bundle per patient, in the order of `patients`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Federation {
    pub practices: Vec<Practice>,
    pub patients: Vec<SyntheticPatient>,
    pub bundles: Vec<Value>,
}

/// Generates a whole federation (accepts the spec by value or by reference).
///
/// Patients are independent and seeded by their index, so on native targets the work is
/// spread over the available cores; the output is identical to a sequential run.
pub fn generate(spec: impl Borrow<FederationSpec>) -> Federation {
    let spec = spec.borrow();
    let practices = practices(spec);
    let jobs: Vec<(usize, usize)> = (0..practices.len())
        .flat_map(|p| (0..spec.patients_per_practice).map(move |i| (p, i)))
        .collect();
    let threads = if cfg!(target_arch = "wasm32") {
        1
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get().min(8))
    };
    let generated: Vec<(SyntheticPatient, Value)> = if threads <= 1 || jobs.len() < 64 {
        jobs.iter()
            .map(|&(p, i)| generate_patient_bundle(spec, &practices, p, i))
            .collect()
    } else {
        let chunk = jobs.len().div_ceil(threads);
        std::thread::scope(|scope| {
            let handles: Vec<_> = jobs
                .chunks(chunk)
                .map(|part| {
                    let practices = &practices;
                    scope.spawn(move || {
                        part.iter()
                            .map(|&(p, i)| generate_patient_bundle(spec, practices, p, i))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().expect("generator thread panicked"))
                .collect()
        })
    };
    let (patients, bundles) = generated.into_iter().unzip();
    Federation {
        practices,
        patients,
        bundles,
    }
}

/// The same patients and bundles as [`generate`], one at a time, for callers that import as
/// they go instead of holding a whole federation in memory.
pub fn patient_bundles(
    spec: &FederationSpec,
) -> impl Iterator<Item = (SyntheticPatient, Value)> + '_ {
    let practices = practices(spec);
    let per = spec.patients_per_practice;
    (0..practices.len() * per)
        .map(move |k| generate_patient_bundle(spec, &practices, k / per, k % per))
}

// ---------------------------------------------------------------------------------------------
// JSON building that moves values in (`json!` serialises every embedded `Value`, a deep copy,
// and grows each map by doubling; at 100,000 resources that was most of the time and memory).

trait IntoValue {
    fn into_value(self) -> Value;
}

impl IntoValue for Value {
    fn into_value(self) -> Value {
        self
    }
}

impl IntoValue for &str {
    fn into_value(self) -> Value {
        Value::String(self.to_owned())
    }
}

impl IntoValue for &&str {
    fn into_value(self) -> Value {
        Value::String((*self).to_owned())
    }
}

impl IntoValue for String {
    fn into_value(self) -> Value {
        Value::String(self)
    }
}

impl IntoValue for &String {
    fn into_value(self) -> Value {
        Value::String(self.clone())
    }
}

impl IntoValue for bool {
    fn into_value(self) -> Value {
        Value::Bool(self)
    }
}

impl IntoValue for f64 {
    fn into_value(self) -> Value {
        Value::from(self)
    }
}

impl IntoValue for u32 {
    fn into_value(self) -> Value {
        Value::from(self)
    }
}

impl<T: IntoValue> IntoValue for Vec<T> {
    fn into_value(self) -> Value {
        Value::Array(self.into_iter().map(IntoValue::into_value).collect())
    }
}

fn into_value(v: impl IntoValue) -> Value {
    v.into_value()
}

/// An object with exactly the capacity it needs, values moved in.
macro_rules! obj {
    ($($k:literal : $v:expr),* $(,)?) => {{
        let mut m = Map::with_capacity(obj!(@count $($k)*));
        $( m.insert(String::from($k), into_value($v)); )*
        Value::Object(m)
    }};
    (@count) => { 0usize };
    (@count $h:literal $($t:literal)*) => { 1usize + obj!(@count $($t)*) };
}

macro_rules! arr {
    ($($v:expr),* $(,)?) => { Value::Array(vec![$(into_value($v)),*]) };
}

// ---------------------------------------------------------------------------------------------
// PRNG

/// SplitMix64: tiny, fast, good enough for synthetic data, identical everywhere.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo + 1) as u64) as i64
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    /// Roughly normal (sum of three uniforms), mean 0, sd about `sd`.
    pub fn jitter(&mut self, sd: f64) -> f64 {
        (self.unit() + self.unit() + self.unit() - 1.5) * 2.0 * sd
    }

    /// A version-4-shaped UUID.
    pub fn uuid(&mut self) -> String {
        let a = self.next_u64();
        let b = self.next_u64();
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0x0fff,
            ((b >> 48) & 0x3fff) | 0x8000,
            b & 0xffff_ffff_ffff
        )
    }
}

fn mix(seed: u64, a: u64, b: u64) -> u64 {
    let mut r = SplitMix64::new(seed ^ a.wrapping_mul(0xA24B_AED4_963E_E407));
    let x = r.next_u64();
    SplitMix64::new(x ^ b.wrapping_mul(0x9FB2_1C65_1E98_DF25)).next_u64()
}

// ---------------------------------------------------------------------------------------------
// Reference data

const PRACTICE_NAMES: &[&str] = &[
    "Riverside Surgery",
    "Castle Street Medical Centre",
    "Bryn Teg Health Centre",
    "Meadowbank Practice",
    "Harbour View Surgery",
    "Oakfield Medical Practice",
    "St Mary's Health Centre",
    "Heol Las Surgery",
    "Victoria Park Practice",
    "Millbrook Surgery",
    "Glan yr Afon Surgery",
    "Beech House Surgery",
];

/// Town, postcode area (outward letters).
const TOWNS: &[(&str, &str)] = &[
    ("Leeds", "LS"),
    ("Cardiff", "CF"),
    ("Swansea", "SA"),
    ("Sheffield", "S"),
    ("Bristol", "BS"),
    ("York", "YO"),
    ("Newcastle upon Tyne", "NE"),
    ("Manchester", "M"),
    ("Norwich", "NR"),
    ("Exeter", "EX"),
    ("Carmarthen", "SA"),
    ("Lancaster", "LA"),
];

const SOURCE_SYSTEMS: [&str; 4] = ["EMIS Web", "SystmOne", "Vision", "Medicus"];
const ODS_LETTERS: &[u8] = b"ABCDEFGHJKLMNPY";

const FEMALE_GIVEN: &[&str] = &[
    "Siân", "Zoë", "Chloë", "Aoife", "Ffion", "Margaret", "Susan", "Olivia", "Amelia", "Priya",
    "Fatima", "Niamh", "Eilidh", "Bethan", "Gwen", "Joan", "Dorothy", "Ann", "Emily", "Grace",
    "Mair", "Rhiannon", "Saoirse", "Pauline", "Irene", "Anjali", "Nia", "Catrin", "Maureen",
    "Renée",
];
const MALE_GIVEN: &[&str] = &[
    "Seán", "Dafydd", "Rhys", "Oliver", "Harry", "George", "Mohammed", "Arjun", "Callum", "Ewan",
    "Gareth", "Iwan", "John", "David", "Peter", "Alan", "Thomas", "William", "Jack", "Ciarán",
    "Rónán", "Eóin", "Hamish", "Raj", "Kwame", "Bernard", "Derek", "Gethin", "Tomás", "Llŷr",
];
const FAMILY: &[&str] = &[
    "Evans",
    "Jones",
    "Williams",
    "Ó Briain",
    "Smith",
    "Taylor",
    "Brown",
    "Davies",
    "Wilson",
    "Patel",
    "Khan",
    "Hughes",
    "Roberts",
    "MacDonald",
    "O'Neill",
    "Morgan",
    "Price",
    "Thomas",
    "Lewis",
    "Wright",
    "Walker",
    "Robinson",
    "Begum",
    "Ahmed",
    "Campbell",
    "Stewart",
    "Murphy",
    "Kelly",
    "Lloyd",
    "Pryce",
    "Mac Giolla Phádraig",
    "Ní Bhriain",
    "Owusu",
    "Nowak",
    "Ó Súilleabháin",
    "Jenkins",
    "Rees",
    "Watkins",
    "Singh",
    "Fraser",
];
const STREETS: &[&str] = &[
    "Station Road",
    "High Street",
    "Church Lane",
    "Heol y Parc",
    "Ffordd yr Orsaf",
    "Mill Lane",
    "Victoria Road",
    "Park Avenue",
    "Queen Street",
    "The Crescent",
    "Meadow Way",
    "Chapel Street",
    "Kings Road",
    "Orchard Close",
    "Nelson Terrace",
    "Maes yr Haf",
];
const INWARD_LETTERS: &[u8] = b"ABDEFGHJLNPQRSTUWXYZ";

struct Med {
    key: &'static str,
    /// A confirmed dm+d id (numeric), or a synthetic `DS-` id.
    code: &'static str,
    display: &'static str,
    dose: &'static str,
    quantity: u32,
    unit: &'static str,
}

const fn med(
    key: &'static str,
    code: &'static str,
    display: &'static str,
    dose: &'static str,
    quantity: u32,
    unit: &'static str,
) -> Med {
    Med {
        key,
        code,
        display,
        dose,
        quantity,
        unit,
    }
}

const MEDS: &[Med] = &[
    // confirmed dm+d ids
    med(
        "ramipril",
        "319773006",
        "Ramipril 5mg capsules",
        "One capsule once daily",
        28,
        "capsule",
    ),
    med(
        "amlodipine",
        "39732011000001102",
        "Amlodipine 5mg tablets",
        "One tablet once daily",
        28,
        "tablet",
    ),
    med(
        "simvastatin",
        "320000009",
        "Simvastatin 40mg tablets",
        "One tablet at night",
        28,
        "tablet",
    ),
    med(
        "paracetamol",
        "322236009",
        "Paracetamol 500mg tablets",
        "Two tablets up to four times a day when required",
        100,
        "tablet",
    ),
    med(
        "salbutamol",
        "39113611000001102",
        "Salbutamol 100micrograms/dose inhaler CFC free",
        "Two puffs when required",
        1,
        "inhaler",
    ),
    med(
        "apixaban",
        "42206511000001102",
        "Apixaban 5mg tablets",
        "One tablet twice daily",
        56,
        "tablet",
    ),
    // synthetic ids (no confirmed dm+d code at hand)
    med(
        "metformin",
        "DS-METFORMIN-500-TAB",
        "Metformin 500mg tablets",
        "One tablet twice daily with food",
        56,
        "tablet",
    ),
    med(
        "gliclazide",
        "DS-GLICLAZIDE-80-TAB",
        "Gliclazide 80mg tablets",
        "One tablet twice daily",
        56,
        "tablet",
    ),
    med(
        "atorvastatin",
        "DS-ATORVASTATIN-20-TAB",
        "Atorvastatin 20mg tablets",
        "One tablet once daily",
        28,
        "tablet",
    ),
    med(
        "bisoprolol",
        "DS-BISOPROLOL-2.5-TAB",
        "Bisoprolol 2.5mg tablets",
        "One tablet once daily",
        28,
        "tablet",
    ),
    med(
        "furosemide",
        "DS-FUROSEMIDE-40-TAB",
        "Furosemide 40mg tablets",
        "One tablet in the morning",
        28,
        "tablet",
    ),
    med(
        "tiotropium",
        "DS-TIOTROPIUM-2.5-INH",
        "Tiotropium 2.5micrograms/dose solution for inhalation cartridge",
        "Two puffs once daily",
        1,
        "cartridge",
    ),
    med(
        "beclometasone",
        "DS-BECLOMETASONE-100-INH",
        "Beclometasone 100micrograms/dose inhaler CFC free",
        "Two puffs twice daily",
        1,
        "inhaler",
    ),
    med(
        "levothyroxine",
        "DS-LEVOTHYROXINE-50-TAB",
        "Levothyroxine sodium 50microgram tablets",
        "One tablet in the morning",
        28,
        "tablet",
    ),
    med(
        "donepezil",
        "DS-DONEPEZIL-5-TAB",
        "Donepezil 5mg tablets",
        "One tablet at night",
        28,
        "tablet",
    ),
    med(
        "sertraline",
        "DS-SERTRALINE-50-TAB",
        "Sertraline 50mg tablets",
        "One tablet once daily",
        28,
        "tablet",
    ),
    med(
        "alendronic",
        "DS-ALENDRONIC-70-TAB",
        "Alendronic acid 70mg tablets",
        "One tablet once a week",
        4,
        "tablet",
    ),
    med(
        "amoxicillin",
        "DS-AMOXICILLIN-500-CAP",
        "Amoxicillin 500mg capsules",
        "One capsule three times a day for 5 days",
        15,
        "capsule",
    ),
    med(
        "nitrofurantoin",
        "DS-NITROFURANTOIN-100-MR",
        "Nitrofurantoin 100mg modified-release capsules",
        "One capsule twice a day for 3 days",
        6,
        "capsule",
    ),
    med(
        "flucloxacillin",
        "DS-FLUCLOXACILLIN-500-CAP",
        "Flucloxacillin 500mg capsules",
        "One capsule four times a day for 7 days",
        28,
        "capsule",
    ),
    med(
        "doxycycline",
        "DS-DOXYCYCLINE-100-CAP",
        "Doxycycline 100mg capsules",
        "One capsule twice a day for 7 days",
        14,
        "capsule",
    ),
];

fn med_by_key(key: &str) -> &'static Med {
    MEDS.iter()
        .find(|m| m.key == key)
        .expect("medicine key in catalogue")
}

struct Problem {
    code: &'static str,
    display: &'static str,
    /// Chance under 65 and at 65 or over.
    p_young: f64,
    p_old: f64,
    meds: &'static [&'static str],
}

const CHRONIC: &[Problem] = &[
    Problem {
        code: "44054006",
        display: "Type 2 diabetes mellitus",
        p_young: 0.06,
        p_old: 0.22,
        meds: &["metformin", "atorvastatin", "gliclazide"],
    },
    Problem {
        code: "38341003",
        display: "Hypertensive disorder",
        p_young: 0.12,
        p_old: 0.45,
        meds: &["ramipril", "amlodipine"],
    },
    Problem {
        code: "13645005",
        display: "Chronic obstructive pulmonary disease",
        p_young: 0.02,
        p_old: 0.12,
        meds: &["salbutamol", "tiotropium"],
    },
    Problem {
        code: "84114007",
        display: "Heart failure",
        p_young: 0.005,
        p_old: 0.09,
        meds: &["furosemide", "bisoprolol"],
    },
    Problem {
        code: "49436004",
        display: "Atrial fibrillation",
        p_young: 0.01,
        p_old: 0.12,
        meds: &["apixaban", "bisoprolol"],
    },
    Problem {
        code: "709044004",
        display: "Chronic kidney disease",
        p_young: 0.02,
        p_old: 0.16,
        meds: &[],
    },
    Problem {
        code: "396275006",
        display: "Osteoarthritis",
        p_young: 0.05,
        p_old: 0.35,
        meds: &["paracetamol"],
    },
    Problem {
        code: "195967001",
        display: "Asthma",
        p_young: 0.10,
        p_old: 0.06,
        meds: &["salbutamol", "beclometasone"],
    },
    Problem {
        code: "402863000",
        display: "Venous ulcer of lower limb",
        p_young: 0.005,
        p_old: 0.08,
        meds: &[],
    },
    Problem {
        code: "52448006",
        display: "Dementia",
        p_young: 0.0,
        p_old: 0.09,
        meds: &["donepezil"],
    },
    Problem {
        code: "40930008",
        display: "Hypothyroidism",
        p_young: 0.03,
        p_old: 0.08,
        meds: &["levothyroxine"],
    },
    Problem {
        code: "64859006",
        display: "Osteoporosis",
        p_young: 0.01,
        p_old: 0.10,
        meds: &["alendronic"],
    },
    Problem {
        code: "230690007",
        display: "Cerebrovascular accident",
        p_young: 0.005,
        p_old: 0.06,
        meds: &["atorvastatin"],
    },
    Problem {
        code: "53741008",
        display: "Coronary arteriosclerosis",
        p_young: 0.01,
        p_old: 0.12,
        meds: &["atorvastatin", "bisoprolol"],
    },
];

/// Resolved problems and the acute course that treated them.
const PAST: &[(&str, &str, &str)] = &[
    (
        "68566005",
        "Urinary tract infectious disease",
        "nitrofurantoin",
    ),
    ("233604007", "Pneumonia", "amoxicillin"),
    ("128045006", "Cellulitis", "flucloxacillin"),
    ("10509002", "Acute bronchitis", "doxycycline"),
    ("195662009", "Acute viral pharyngitis", "paracetamol"),
];

/// RCGP-excluded items: kind, code, display. Kinds: `condition`, `procedure`.
const SENSITIVE: &[(&str, &str, &str)] = &[
    ("condition", "105629000", "Chlamydial infection"),
    ("condition", "15628003", "Gonorrhoea"),
    ("procedure", "386639001", "Termination of pregnancy"),
    ("procedure", "52637005", "In vitro fertilisation"),
    ("condition", "93461009", "Gender dysphoria"),
];

/// A SNOMED CT code and its display.
type Code = (&'static str, &'static str);

struct Allergy {
    code: Code,
    /// The sender's text for the substance.
    text: &'static str,
    /// FHIR category: `medication`, `food`, `environment`.
    category: &'static str,
    criticality: &'static str,
    reactions: &'static [Code],
}

const fn allergy(
    code: &'static str,
    display: &'static str,
    text: &'static str,
    category: &'static str,
    criticality: &'static str,
    reactions: &'static [Code],
) -> Allergy {
    Allergy {
        code: (code, display),
        text,
        category,
        criticality,
        reactions,
    }
}

const ALLERGIES: &[Allergy] = &[
    allergy(
        "91936005",
        "Allergy to penicillin",
        "Penicillins",
        "medication",
        "high",
        &[
            ("271807003", "Eruption of skin"),
            ("39579001", "Anaphylaxis"),
        ],
    ),
    allergy(
        "372665008",
        "Non-steroidal anti-inflammatory agent",
        "NSAIDs",
        "medication",
        "low",
        &[("56018004", "Wheezing")],
    ),
    allergy(
        "300916003",
        "Latex allergy",
        "Latex",
        "environment",
        "low",
        &[("126485001", "Urticaria")],
    ),
    allergy(
        "91935009",
        "Allergy to peanuts",
        "Peanuts",
        "food",
        "high",
        &[("41291007", "Angioedema")],
    ),
];

struct Vital {
    loinc: &'static str,
    snomed: &'static str,
    display: &'static str,
    unit: &'static str,
    ucum: &'static str,
}

const PULSE: Vital = Vital {
    loinc: "8867-4",
    snomed: "364075005",
    display: "Heart rate",
    unit: "beats/minute",
    ucum: "/min",
};
const SPO2: Vital = Vital {
    loinc: "59408-5",
    snomed: "431314004",
    display: "Peripheral oxygen saturation",
    unit: "%",
    ucum: "%",
};
const TEMP: Vital = Vital {
    loinc: "8310-5",
    snomed: "386725007",
    display: "Body temperature",
    unit: "°C",
    ucum: "Cel",
};
const RESP: Vital = Vital {
    loinc: "9279-1",
    snomed: "86290005",
    display: "Respiratory rate",
    unit: "breaths/minute",
    ucum: "/min",
};
const WEIGHT: Vital = Vital {
    loinc: "29463-7",
    snomed: "27113001",
    display: "Body weight",
    unit: "kg",
    ucum: "kg",
};
const HBA1C: Vital = Vital {
    loinc: "59261-8",
    snomed: "999791000000106",
    display: "Haemoglobin A1c level - IFCC standardised",
    unit: "mmol/mol",
    ucum: "mmol/mol",
};
const EGFR: Vital = Vital {
    loinc: "62238-1",
    snomed: "1011481000000105",
    display: "eGFR using creatinine (CKD-EPI) per 1.73 square metres",
    unit: "mL/min/1.73m2",
    ucum: "mL/min/{1.73_m2}",
};
const POTASSIUM: Vital = Vital {
    loinc: "2823-3",
    snomed: "1000651000000109",
    display: "Serum potassium level",
    unit: "mmol/L",
    ucum: "mmol/L",
};

// ---------------------------------------------------------------------------------------------
// Practices

/// The practices of a federation (deterministic by seed).
pub fn practices(spec: &FederationSpec) -> Vec<Practice> {
    let mut rng = SplitMix64::new(mix(spec.seed, 0x5EED, 0));
    let offset = rng.below(ODS_LETTERS.len() as u64) as usize;
    (0..spec.practices)
        .map(|i| {
            let letter = ODS_LETTERS[(offset + i) % ODS_LETTERS.len()] as char;
            let ods = format!("{letter}{:05}", 81001 + i * 7 + rng.below(7) as usize);
            let (town, area) = TOWNS[i % TOWNS.len()];
            let mut name = PRACTICE_NAMES[i % PRACTICE_NAMES.len()].to_owned();
            if i >= PRACTICE_NAMES.len() {
                name = format!("{name}, {town}");
            }
            Practice {
                ods,
                name,
                source_system: SOURCE_SYSTEMS[i % SOURCE_SYSTEMS.len()].to_owned(),
                postcode: postcode(&mut rng, area),
            }
        })
        .collect()
}

fn postcode(rng: &mut SplitMix64, area: &str) -> String {
    let district = rng.range(1, 20);
    let l1 = *rng.pick(INWARD_LETTERS) as char;
    let l2 = *rng.pick(INWARD_LETTERS) as char;
    format!("{area}{district} {}{l1}{l2}", rng.range(1, 9))
}

/// Staff of a practice: (id, display name, role).
fn practice_staff(p: &Practice, index: usize) -> [(String, String, &'static str); 3] {
    let mut rng = SplitMix64::new(mix(0xD0C5, index as u64, 7));
    let gp1 = format!("Dr {} {}", rng.pick(FEMALE_GIVEN), rng.pick(FAMILY));
    let gp2 = format!("Dr {} {}", rng.pick(MALE_GIVEN), rng.pick(FAMILY));
    let nurse = format!("{} {}", rng.pick(FEMALE_GIVEN), rng.pick(FAMILY));
    let ods = p.ods.to_ascii_lowercase();
    [
        (format!("prac-{ods}-1"), gp1, "gp"),
        (format!("prac-{ods}-2"), gp2, "gp"),
        (format!("prac-{ods}-3"), nurse, "nurse"),
    ]
}

// ---------------------------------------------------------------------------------------------
// One patient

/// Flavour of a source system's feed.
#[derive(Clone, Copy)]
struct Feed {
    transaction: bool,
    urn_refs: bool,
    dmd_under_snomed: bool,
    gp_by_identifier: bool,
}

fn feed(system: &str) -> Feed {
    match system {
        "EMIS Web" => Feed {
            transaction: true,
            urn_refs: false,
            dmd_under_snomed: true,
            gp_by_identifier: false,
        },
        "Vision" => Feed {
            transaction: true,
            urn_refs: true,
            dmd_under_snomed: true,
            gp_by_identifier: false,
        },
        "Medicus" => Feed {
            transaction: false,
            urn_refs: false,
            dmd_under_snomed: false,
            gp_by_identifier: true,
        },
        _ => Feed {
            transaction: false,
            urn_refs: false,
            dmd_under_snomed: false,
            gp_by_identifier: false,
        },
    }
}

struct Ctx<'a> {
    rng: SplitMix64,
    today: NaiveDate,
    patient_id: String,
    feed: Feed,
    practice: &'a Practice,
    staff: [(String, String, &'static str); 3],
    resources: Vec<Value>,
    uses_hospital: bool,
}

/// The date `n` days before `today`, and at least one day before it: the generator knows the
/// date but not the time, so an item dated today could carry a time still in the future (a
/// 10:34 temperature on a record opened at 07:34).
fn days_ago(today: NaiveDate, n: i64) -> NaiveDate {
    today - Duration::days(n.max(1))
}

/// `2026-01-15` (chrono's `format` re-parses its pattern on every call).
fn ymd(d: NaiveDate) -> String {
    format!("{:04}-{:02}-{:02}", d.year(), d.month(), d.day())
}

fn datetime(d: NaiveDate, hour: u32, minute: u32) -> String {
    format!(
        "{:04}-{:02}-{:02}T{hour:02}:{minute:02}:00+00:00",
        d.year(),
        d.month(),
        d.day()
    )
}

fn coding(system: &str, code: &str, display: &str) -> Value {
    obj! {"system": system, "code": code, "display": display}
}

fn snomed(code: &str, display: &str) -> Value {
    obj! {"coding": arr![coding(SNOMED, code, display)], "text": display}
}

impl Ctx<'_> {
    fn subject(&self) -> Value {
        if self.feed.urn_refs {
            obj! {"reference": format!("urn:uuid:{}", self.patient_id)}
        } else {
            obj! {"reference": format!("Patient/{}", self.patient_id)}
        }
    }

    fn staff_ref(&mut self, role: &str) -> Value {
        // Two GPs (0, 1) and one nurse (2).
        let i = if role == "nurse" {
            2
        } else {
            self.rng.below(2) as usize
        };
        let (id, name, _) = &self.staff[i];
        obj! {"reference": format!("Practitioner/{id}"), "display": name}
    }

    fn push(&mut self, mut resource: Value) -> String {
        let id = self.rng.uuid();
        resource["id"] = Value::String(id.clone());
        self.resources.push(resource);
        id
    }

    fn confidential(&mut self, resource: &mut Value) {
        resource["meta"] = obj! {
            "security": arr![
                obj! {"system": CONFIDENTIALITY_SYSTEM, "code": "R", "display": "restricted"},
            ],
        };
    }

    fn hospital_stamp(&mut self, resource: &mut Value) {
        self.uses_hospital = true;
        resource["meta"] = obj! {
            "tag": arr![
                obj! {
                    "system": SOURCE_TAG_SYSTEM,
                    "code": HOSPITAL_ODS,
                    "display": HOSPITAL_NAME,
                },
            ],
        };
    }

    fn medication_concept(&self, m: &Med) -> Value {
        let system = if m.code.starts_with("DS-") || !self.feed.dmd_under_snomed {
            DMD
        } else {
            SNOMED
        };
        obj! {"coding": arr![coding(system, m.code, m.display)]}
    }

    fn condition(
        &mut self,
        code: &str,
        display: &str,
        onset: NaiveDate,
        resolved: Option<NaiveDate>,
    ) -> Value {
        let clinical = if resolved.is_some() {
            "resolved"
        } else {
            "active"
        };
        let mut c = obj! {
            "resourceType": "Condition",
            "clinicalStatus": obj! {
                "coding": arr![
                    obj! {
                        "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                        "code": clinical,
                    },
                ],
            },
            "verificationStatus": obj! {
                "coding": arr![
                    obj! {
                        "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                        "code": "confirmed",
                    },
                ],
            },
            "category": arr![
                obj! {
                    "coding": arr![
                        obj! {
                            "system": "http://terminology.hl7.org/CodeSystem/condition-category",
                            "code": "problem-list-item",
                            "display": "Problem List Item",
                        },
                    ],
                },
            ],
            "code": snomed(code, display),
            "subject": self.subject(),
            "onsetDateTime": ymd(onset),
            "recordedDate": datetime(onset, 10, 30),
        };
        c["asserter"] = self.staff_ref("gp");
        if let Some(r) = resolved {
            c["abatementDateTime"] = into_value(ymd(r));
        }
        c
    }

    fn prescription(&mut self, m: &Med, start: NaiveDate, repeat: bool, status: &str) {
        let course = if repeat { "continuous" } else { "acute" };
        let mut r = obj! {
            "resourceType": "MedicationRequest",
            "status": status,
            "intent": "order",
            "courseOfTherapyType": obj! {
                "coding": arr![
                    obj! {
                        "system": "http://terminology.hl7.org/CodeSystem/medicationrequest-course-of-therapy",
                        "code": course,
                    },
                ],
            },
            "medicationCodeableConcept": self.medication_concept(m),
            "subject": self.subject(),
            "authoredOn": ymd(start),
            "dosageInstruction": arr![obj! {"text": m.dose}],
            "dispenseRequest": obj! {"quantity": obj! {"value": m.quantity, "unit": m.unit}},
        };
        r["requester"] = self.staff_ref("gp");
        if !repeat {
            let end = start + Duration::days(7);
            r["dispenseRequest"]["validityPeriod"] = obj! {"start": ymd(start), "end": ymd(end)};
        }
        self.push(r);
    }

    fn observation(
        &mut self,
        v: &Vital,
        category: &str,
        when: &str,
        value: f64,
        decimals: u32,
        encounter: Option<&str>,
    ) {
        let scale = 10f64.powi(decimals as i32);
        let value = (value * scale).round() / scale;
        let mut o = obj! {
            "resourceType": "Observation",
            "status": "final",
            "category": arr![
                obj! {
                    "coding": arr![
                        obj! {
                            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                            "code": category,
                        },
                    ],
                },
            ],
            "code": obj! {
                "coding": arr![
                    coding(LOINC, v.loinc, v.display),
                    coding(SNOMED, v.snomed, v.display),
                ],
                "text": v.display,
            },
            "subject": self.subject(),
            "effectiveDateTime": &when,
            "valueQuantity": obj! {
                "value": value,
                "unit": v.unit,
                "system": "http://unitsofmeasure.org",
                "code": v.ucum,
            },
        };
        if let Some(e) = encounter {
            o["encounter"] = obj! {"reference": format!("Encounter/{e}")};
        }
        self.push(o);
    }
}

/// Generates one patient of practice `practice_index` (their `patient_index`-th) and their
/// bundle. Deterministic by `(spec.seed, practice_index, patient_index)`.
pub fn generate_patient_bundle(
    spec: &FederationSpec,
    practices: &[Practice],
    practice_index: usize,
    patient_index: usize,
) -> (SyntheticPatient, Value) {
    let practice = &practices[practice_index];
    let mut rng = SplitMix64::new(mix(
        spec.seed,
        practice_index as u64 + 1,
        patient_index as u64 + 1,
    ));
    let global = practice_index * spec.patients_per_practice.max(1) + patient_index;
    let nhs = nhs_number_for(spec.seed, global);
    let patient_id = rng.uuid();
    let today = spec.today;
    let staff = practice_staff(practice, practice_index);
    let (town, area) = TOWNS[practice_index % TOWNS.len()];

    // Who they are.
    let female = rng.chance(0.55);
    let age = if rng.chance(0.7) {
        rng.range(65, 98)
    } else {
        rng.range(18, 64)
    };
    let birth = NaiveDate::from_ymd_opt(today.year() - age as i32, 1, 1).expect("valid year")
        + Duration::days(rng.range(0, 364));
    let given = *rng.pick(if female { FEMALE_GIVEN } else { MALE_GIVEN });
    let middle = rng
        .chance(0.3)
        .then(|| *rng.pick(if female { FEMALE_GIVEN } else { MALE_GIVEN }));
    let family = *rng.pick(FAMILY);
    let prefix = if rng.chance(0.04) {
        "Dr"
    } else if !female {
        "Mr"
    } else {
        *rng.pick(&["Mrs", "Mrs", "Ms", "Miss"])
    };
    let mut givens = vec![given];
    givens.extend(middle.filter(|m| *m != given));
    let name_display = format!("{}, {} ({prefix})", family.to_uppercase(), givens.join(" "));

    let f = feed(&practice.source_system);
    let mut cx = Ctx {
        rng,
        today,
        patient_id: patient_id.clone(),
        feed: f,
        practice,
        staff,
        resources: Vec::with_capacity(spec.resources_per_patient + 8),
        uses_hospital: false,
    };

    // Patient.
    let line = format!("{} {}", cx.rng.range(1, 180), cx.rng.pick(STREETS));
    let pc = postcode(&mut cx.rng, area);
    let gp_ref = if f.gp_by_identifier {
        obj! {
            "identifier": obj! {"system": ODS_SYSTEM, "value": &practice.ods},
            "display": &practice.name,
        }
    } else {
        obj! {
            "reference": format!("Organization/org-{}", practice.ods.to_ascii_lowercase()),
            "display": &practice.name,
        }
    };
    let phone = if cx.rng.chance(0.5) {
        format!("01632 960{:03}", cx.rng.below(1000))
    } else {
        format!("07700 900{:03}", cx.rng.below(1000))
    };
    cx.resources.push(obj! {
        "resourceType": "Patient",
        "id": patient_id.clone(),
        "meta": obj! {
            "profile": arr!["https://fhir.hl7.org.uk/StructureDefinition/UKCore-Patient"],
        },
        "extension": arr![
            obj! {
                "url": "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-EthnicCategory",
                "valueCodeableConcept": obj! {
                    "coding": arr![
                        obj! {
                            "system": "https://fhir.hl7.org.uk/CodeSystem/UKCore-EthnicCategory",
                            "code": "Z",
                            "display": "Not stated",
                        },
                    ],
                },
            },
        ],
        "identifier": arr![
            obj! {
                "extension": arr![
                    obj! {
                        "url": "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-NHSNumberVerificationStatus",
                        "valueCodeableConcept": obj! {
                            "coding": arr![
                                obj! {
                                    "system": "https://fhir.hl7.org.uk/CodeSystem/UKCore-NHSNumberVerificationStatusEngland",
                                    "code": "01",
                                    "display": "Number present and verified",
                                },
                            ],
                        },
                    },
                ],
                "system": NHS_NUMBER_SYSTEM,
                "value": nhs.digits(),
            },
        ],
        "name": arr![
            obj! {
                "use": "official",
                "family": family,
                "given": givens.clone(),
                "prefix": arr![prefix],
            },
        ],
        "telecom": arr![
            obj! {
                "system": "phone",
                "value": phone.clone(),
                "use": if phone.starts_with("07") { "mobile" } else { "home" },
            },
        ],
        "gender": if female { "female" } else { "male" },
        "birthDate": ymd(birth),
        "address": arr![
            obj! {"use": "home", "line": arr![line], "city": town, "postalCode": pc},
        ],
        "generalPractitioner": arr![gp_ref],
    });

    // Problems and their medicines.
    let old = age >= 65;
    let mut active: Vec<&Problem> = Vec::new();
    for p in CHRONIC {
        if cx.rng.chance(if old { p.p_old } else { p.p_young }) {
            active.push(p);
        }
    }
    if active.is_empty() {
        active.push(if old { &CHRONIC[1] } else { &CHRONIC[7] });
    }
    let has = |code: &str| active.iter().any(|p| p.code == code);
    let diabetic = has("44054006");
    let ckd = has("709044004");
    let copd = has("13645005");
    let af = has("49436004");
    let hypertensive = has("38341003");
    let leg_ulcer = has("402863000");

    let mut prescribed: Vec<&str> = Vec::new();
    for p in &active {
        let years = cx.rng.range(1, (age - 17).clamp(2, 25));
        let onset = days_ago(cx.today, years * 365 + cx.rng.range(0, 364));
        let mut c = cx.condition(p.code, p.display, onset, None);
        if p.code == "52448006" && cx.rng.chance(0.1) {
            cx.confidential(&mut c);
        }
        cx.push(c);
        for key in p.meds {
            if prescribed.contains(key) || !cx.rng.chance(0.85) {
                continue;
            }
            prescribed.push(key);
            let start = days_ago(cx.today, cx.rng.range(30, (years * 365).max(31)));
            cx.prescription(med_by_key(key), start, true, "active");
        }
    }
    // A statin switched: simvastatin stopped when atorvastatin began.
    if prescribed.contains(&"atorvastatin") && cx.rng.chance(0.5) {
        let start = days_ago(cx.today, cx.rng.range(800, 2500));
        cx.prescription(med_by_key("simvastatin"), start, true, "stopped");
    }
    // Depression, sometimes kept confidential.
    if cx.rng.chance(0.12) {
        let onset = days_ago(cx.today, cx.rng.range(200, 3000));
        let mut c = cx.condition("35489007", "Depressive disorder", onset, None);
        if cx.rng.chance(0.6) {
            cx.confidential(&mut c);
        }
        cx.push(c);
        cx.prescription(
            med_by_key("sertraline"),
            onset + Duration::days(14),
            true,
            "active",
        );
    }
    // Past problems, with the acute course that treated them.
    for _ in 0..cx.rng.range(1, 3) {
        let &(code, display, key) = cx.rng.pick(PAST);
        let onset = days_ago(cx.today, cx.rng.range(60, 3000));
        let resolved = onset + Duration::days(cx.rng.range(7, 30));
        let c = cx.condition(code, display, onset, Some(resolved));
        cx.push(c);
        cx.prescription(med_by_key(key), onset, false, "completed");
    }
    // A current acute course now and then.
    if cx.rng.chance(0.1) {
        let start = days_ago(cx.today, cx.rng.range(0, 4));
        cx.prescription(med_by_key("amoxicillin"), start, false, "active");
    }
    // Over-the-counter paracetamol, reported by the patient.
    if !prescribed.contains(&"paracetamol") && cx.rng.chance(0.2) {
        let m = med_by_key("paracetamol");
        let mut s = obj! {
            "resourceType": "MedicationStatement",
            "status": "active",
            "medicationCodeableConcept": cx.medication_concept(m),
            "subject": cx.subject(),
            "effectivePeriod": obj! {"start": ymd(days_ago(cx.today, cx.rng.range(30, 900)))},
            "dateAsserted": ymd(days_ago(cx.today, cx.rng.range(0, 29))),
            "dosage": arr![obj! {"text": "Patient buys over the counter; takes occasionally"}],
        };
        s["informationSource"] = cx.staff_ref("nurse");
        cx.push(s);
    }

    // RCGP-excluded item, about one patient in ten.
    if cx.rng.chance(0.1) {
        let candidates: Vec<&(&str, &str, &str)> = SENSITIVE
            .iter()
            .filter(|(kind, code, _)| {
                female || !(*kind == "procedure" && (*code == "386639001" || *code == "52637005"))
            })
            .collect();
        let &&(kind, code, display) = cx.rng.pick(&candidates);
        let when = days_ago(
            cx.today,
            cx.rng.range(400, 9000).min((age - 18).max(1) * 365),
        );
        if kind == "condition" {
            let resolved = (code != "93461009").then(|| when + Duration::days(21));
            let c = cx.condition(code, display, when, resolved);
            cx.push(c);
        } else {
            let mut p = obj! {
                "resourceType": "Procedure",
                "status": "completed",
                "code": snomed(code, display),
                "subject": cx.subject(),
                "performedDateTime": datetime(when, 11, 0),
            };
            p["recorder"] = cx.staff_ref("gp");
            cx.push(p);
        }
    }

    // Allergies.
    let n_allergies = match cx.rng.below(10) {
        0..=5 => 0,
        6..=8 => 1,
        _ => 2,
    };
    let mut allergy_picks: Vec<usize> = Vec::new();
    while allergy_picks.len() < n_allergies {
        let i = cx.rng.below(ALLERGIES.len() as u64) as usize;
        if !allergy_picks.contains(&i) {
            allergy_picks.push(i);
        }
    }
    for i in allergy_picks {
        let Allergy {
            code: (code, display),
            text,
            category,
            criticality,
            reactions,
        } = ALLERGIES[i];
        let &(rcode, rdisplay) = cx.rng.pick(reactions);
        let severity = if rcode == "39579001" {
            "severe"
        } else {
            *cx.rng.pick(&["mild", "moderate"])
        };
        let recorded = days_ago(cx.today, cx.rng.range(100, 9000));
        let mut a = obj! {
            "resourceType": "AllergyIntolerance",
            "clinicalStatus": obj! {
                "coding": arr![
                    obj! {
                        "system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical",
                        "code": "active",
                    },
                ],
            },
            "verificationStatus": obj! {
                "coding": arr![
                    obj! {
                        "system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification",
                        "code": "confirmed",
                    },
                ],
            },
            "type": "allergy",
            "category": arr![category],
            "criticality": criticality,
            "code": obj! {"coding": arr![coding(SNOMED, code, display)], "text": text},
            "patient": cx.subject(),
            "recordedDate": ymd(recorded),
            "reaction": arr![
                obj! {"manifestation": arr![snomed(rcode, rdisplay)], "severity": severity},
            ],
        };
        a["recorder"] = cx.staff_ref("gp");
        cx.push(a);
    }

    // Alerts.
    let frail = age >= 80 || has("52448006") || has("84114007");
    let mut alerts: Vec<(Value, i64)> = Vec::new();
    if frail && cx.rng.chance(0.35) {
        alerts.push((obj! {
            "coding": arr![coding(SNOMED, "304253006", "Not for resuscitation")],
            "text": "DNACPR – do not attempt cardiopulmonary resuscitation; original form kept at home",
        }, cx.rng.range(30, 700)));
        if cx.rng.chance(0.5) {
            alerts.push((
                obj! {"text": "ReSPECT form completed – priority: comfort and symptom control"},
                cx.rng.range(30, 700),
            ));
        }
    }
    if cx.rng.chance(0.06) {
        alerts.push((obj! {
            "coding": arr![coding(SNOMED, "766561000000109", "Adult safeguarding concern")],
            "text": "Safeguarding concern – adult at risk; liaise with social services before visiting",
        }, cx.rng.range(30, 900)));
    }
    if cx.rng.chance(0.25) {
        let note = *cx.rng.pick(&[
            "Key safe at front door – code held by daughter",
            "Dog at property – ask for it to be shut away",
            "Hard of hearing – speak clearly, face the patient",
            "Lives alone",
            "Welsh speaker – prefers to be seen in Welsh",
        ]);
        alerts.push((obj! {"text": note}, cx.rng.range(30, 1500)));
    }
    for (concept, days_back) in alerts {
        let mut flag = obj! {
            "resourceType": "Flag",
            "status": "active",
            "category": arr![
                obj! {
                    "coding": arr![
                        obj! {
                            "system": "http://terminology.hl7.org/CodeSystem/flag-category",
                            "code": "clinical",
                            "display": "Clinical",
                        },
                    ],
                },
            ],
            "code": concept,
            "subject": cx.subject(),
            "period": obj! {"start": ymd(days_ago(cx.today, days_back))},
        };
        flag["author"] = cx.staff_ref("gp");
        cx.push(flag);
    }

    // Immunisations.
    for y in 0..cx.rng.range(if old { 2 } else { 0 }, 4) {
        let d = NaiveDate::from_ymd_opt(today.year() - 1 - y as i32, 10, 1).expect("valid date")
            + Duration::days(cx.rng.range(0, 50));
        if d <= today {
            push_immunisation(
                &mut cx,
                "822851000000102",
                "Seasonal influenza vaccination",
                d,
            );
        }
    }
    if old && cx.rng.chance(0.7) {
        let d = days_ago(cx.today, cx.rng.range(365, 3650));
        push_immunisation(&mut cx, "12866006", "Pneumococcal vaccination", d);
    }
    if cx.rng.chance(0.8) {
        let d = days_ago(cx.today, cx.rng.range(120, 1500));
        push_immunisation(&mut cx, "840534001", "SARS-CoV-2 vaccination", d);
    }

    // Procedures.
    if diabetic {
        for y in 0..cx.rng.range(1, 3) {
            let d = days_ago(cx.today, y * 365 + cx.rng.range(10, 300));
            push_procedure(&mut cx, "401191002", "Diabetic foot examination", d);
        }
    }
    if old && cx.rng.chance(0.1) {
        let d = days_ago(cx.today, cx.rng.range(700, 5000));
        push_procedure(&mut cx, "52734007", "Total replacement of hip", d);
    }
    if cx.rng.chance(0.08) {
        let d = days_ago(cx.today, cx.rng.range(200, 3000));
        push_procedure(&mut cx, "73761001", "Colonoscopy", d);
    }

    // Hospital documents.
    if cx.rng.chance(0.35) {
        push_discharge_summary(&mut cx, &givens, family);
    }
    if cx.rng.chance(0.3) {
        let problems: Vec<&str> = active.iter().map(|p| p.code).collect();
        push_clinic_letter(&mut cx, given, family, age, &problems);
    }

    // Encounters with vital signs, and results, until the budget is spent.
    let budget = spec.resources_per_patient.max(12);
    // Still to come: the practice Organization, three staff, maybe the hospital Organization.
    let fixed = cx.resources.len() + 4 + usize::from(cx.uses_hospital);
    let mut remaining = budget.saturating_sub(fixed) as i64;
    let wants_results = diabetic || ckd || hypertensive || af;
    let result_budget = if wants_results { remaining / 5 } else { 0 };
    let mut visit_budget = remaining - result_budget;
    remaining = result_budget;

    let mut sys = 128.0 + if hypertensive { 14.0 } else { 0.0 } + cx.rng.jitter(6.0);
    let dia = 76.0 + if hypertensive { 8.0 } else { 0.0 } + cx.rng.jitter(4.0);
    let pulse = 72.0 + if af { 14.0 } else { 0.0 } + cx.rng.jitter(5.0);
    let spo2 = if copd { 93.0 } else { 97.0 } + cx.rng.jitter(0.7);
    let resp = if copd { 19.0 } else { 15.0 } + cx.rng.jitter(1.0);
    let mut weight = 58.0 + cx.rng.unit() * 45.0 + if female { 0.0 } else { 8.0 };

    // Visits: the newest within the last fortnight, older ones spread back over three years.
    let visit_cost = 6i64;
    let n_visits = (visit_budget / visit_cost).max(1);
    let span = 3 * 365;
    let step = (span / n_visits).max(1);
    let mut visit = 0;
    while visit_budget > 0 {
        let back = if visit < n_visits {
            // Newest first, so a budget that runs out cuts the oldest visits: the newest falls
            // in the last fortnight, older ones spread back evenly.
            let slot = visit;
            let spread = if slot == 0 {
                0
            } else {
                cx.rng.range(0, (step - 1).max(0))
            };
            slot * step + spread + cx.rng.range(0, 13)
        } else {
            // Telephone calls are cheap: the budget buys more visits than planned.
            cx.rng.range(14, span)
        };
        let d = days_ago(cx.today, back.min(span + 13));
        let hour = cx.rng.range(8, 17) as u32;
        let minute = cx.rng.range(0, 59) as u32;
        let when = datetime(d, hour, minute);
        let end = datetime(d, hour, minute.min(29) + 30);
        let (class, class_display, type_code, type_display, role) =
            if leg_ulcer || frail || cx.rng.chance(0.5) {
                ("HH", "home health", "439708006", "Home visit", "nurse")
            } else if cx.rng.chance(0.7) {
                ("AMB", "ambulatory", "11429006", "Consultation", "gp")
            } else {
                ("VR", "virtual", "185317003", "Telephone encounter", "gp")
            };
        let reason = if leg_ulcer && role == "nurse" {
            "Leg ulcer dressing and review"
        } else {
            *cx.rng.pick(&[
                "Medication review",
                "Long-term condition review",
                "Feeling unwell",
                "Blood pressure check",
                "Follow-up",
            ])
        };
        let mut e = obj! {
            "resourceType": "Encounter",
            "status": "finished",
            "class": obj! {
                "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                "code": class,
                "display": class_display,
            },
            "type": arr![snomed(type_code, type_display)],
            "subject": cx.subject(),
            "period": obj! {"start": &when, "end": end},
            "reasonCode": arr![obj! {"text": reason}],
            "serviceProvider": obj! {
                "reference": format!("Organization/org-{}", cx.practice.ods.to_ascii_lowercase()),
                "display": &cx.practice.name,
            },
        };
        let who = cx.staff_ref(role);
        e["participant"] = arr![obj! {"individual": who.clone()}];
        let eid = cx.push(e);
        visit_budget -= 1;
        if class != "VR" {
            sys += cx.rng.jitter(3.0);
            sys = sys.clamp(100.0, 185.0);
            let mut bp = obj! {
                "resourceType": "Observation",
                "status": "final",
                "category": arr![
                    obj! {
                        "coding": arr![
                            obj! {
                                "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                "code": "vital-signs",
                            },
                        ],
                    },
                ],
                "code": obj! {
                    "coding": arr![
                        coding(LOINC, "85354-9", "Blood pressure panel"),
                        coding(SNOMED, "75367002", "Blood pressure"),
                    ],
                    "text": "Blood pressure",
                },
                "subject": cx.subject(),
                "effectiveDateTime": &when,
                "encounter": obj! {"reference": format!("Encounter/{eid}")},
                "component": arr![
                    obj! {
                        "code": obj! {
                            "coding": arr![
                                coding(LOINC, "8480-6", "Systolic blood pressure"),
                                coding(SNOMED, "271649006", "Systolic blood pressure"),
                            ],
                        },
                        "valueQuantity": obj! {
                            "value": (sys + cx.rng.jitter(5.0)).round(),
                            "unit": "mmHg",
                            "system": "http://unitsofmeasure.org",
                            "code": "mm[Hg]",
                        },
                    },
                    obj! {
                        "code": obj! {
                            "coding": arr![
                                coding(LOINC, "8462-4", "Diastolic blood pressure"),
                                coding(SNOMED, "271650006", "Diastolic blood pressure"),
                            ],
                        },
                        "valueQuantity": obj! {
                            "value": (dia + cx.rng.jitter(4.0)).round(),
                            "unit": "mmHg",
                            "system": "http://unitsofmeasure.org",
                            "code": "mm[Hg]",
                        },
                    },
                ],
            };
            bp["performer"] = arr![who];
            cx.push(bp);
            let p = pulse + cx.rng.jitter(if af { 9.0 } else { 4.0 });
            cx.observation(&PULSE, "vital-signs", &when, p, 0, Some(&eid));
            let s = (spo2 + cx.rng.jitter(1.0)).min(100.0);
            cx.observation(&SPO2, "vital-signs", &when, s, 0, Some(&eid));
            let t = 36.7 + cx.rng.jitter(0.3);
            cx.observation(&TEMP, "vital-signs", &when, t, 1, Some(&eid));
            let r = resp + cx.rng.jitter(1.5);
            cx.observation(&RESP, "vital-signs", &when, r, 0, Some(&eid));
            visit_budget -= 5;
            if visit % 3 == 0 && visit_budget > 0 {
                weight += cx.rng.jitter(0.8);
                cx.observation(&WEIGHT, "vital-signs", &when, weight, 1, Some(&eid));
                visit_budget -= 1;
            }
            if leg_ulcer && role == "nurse" && visit_budget > 0 {
                push_procedure(&mut cx, "18949003", "Change of dressing", d);
                visit_budget -= 1;
            }
        }
        visit += 1;
    }

    // Results: every few months, oldest first, drifting.
    let mut hba1c = 52.0 + cx.rng.unit() * 20.0;
    let mut egfr = if ckd {
        38.0 + cx.rng.unit() * 20.0
    } else {
        65.0 + cx.rng.unit() * 25.0
    };
    let mut k = 4.3 + cx.rng.jitter(0.2);
    let per_draw = (if diabetic { 1 } else { 0 }) + 2;
    let draws = (remaining / per_draw).max(if wants_results { 1 } else { 0 });
    for i in 0..draws {
        let back = (draws - 1 - i) * 120 + cx.rng.range(0, 30);
        let d = days_ago(cx.today, back);
        let when = datetime(d, 9, cx.rng.range(0, 59) as u32);
        if diabetic {
            hba1c = (hba1c + cx.rng.jitter(3.0)).clamp(42.0, 95.0);
            cx.observation(&HBA1C, "laboratory", &when, hba1c, 0, None);
        }
        egfr = (egfr + cx.rng.jitter(2.5) - 0.3).clamp(12.0, 110.0);
        cx.observation(&EGFR, "laboratory", &when, egfr, 0, None);
        k = (k + cx.rng.jitter(0.2)).clamp(3.3, 6.0);
        cx.observation(&POTASSIUM, "laboratory", &when, k, 1, None);
    }

    // Organisation and staff (shared ids across the practice's bundles).
    let staff = cx.staff.clone();
    let uses_hospital = cx.uses_hospital;
    let mut resources = cx.resources;
    resources.push(obj! {
        "resourceType": "Organization",
        "id": format!("org-{}", practice.ods.to_ascii_lowercase()),
        "identifier": arr![obj! {"system": ODS_SYSTEM, "value": &practice.ods}],
        "name": &practice.name,
        "type": arr![
            obj! {
                "coding": arr![
                    obj! {
                        "system": "https://fhir.nhs.uk/CodeSystem/organisation-role",
                        "code": "76",
                        "display": "GP PRACTICE",
                    },
                ],
            },
        ],
        "address": arr![obj! {"city": town, "postalCode": &practice.postcode}],
    });
    for (id, name, role) in &staff {
        let (prefix, rest) = match name.strip_prefix("Dr ") {
            Some(rest) => (Some("Dr"), rest),
            None => (None, name.as_str()),
        };
        let (g, fam) = rest.split_once(' ').unwrap_or((rest, ""));
        let mut pr = obj! {
            "resourceType": "Practitioner",
            "id": id,
            "name": arr![obj! {"family": fam, "given": arr![g]}],
            "extension": arr![
                obj! {
                    "url": "https://doorstep.example/fhir/practitioner-role",
                    "valueString": role,
                },
            ],
        };
        if let Some(p) = prefix {
            pr["name"][0]["prefix"] = arr![p];
        }
        resources.push(pr);
    }
    if uses_hospital {
        let mut org = obj! {
            "resourceType": "Organization",
            "id": "org-hospital",
            "identifier": arr![obj! {"system": ODS_SYSTEM, "value": HOSPITAL_ODS}],
            "name": HOSPITAL_NAME,
        };
        org["meta"] = obj! {
            "tag": arr![
                obj! {
                    "system": SOURCE_TAG_SYSTEM,
                    "code": HOSPITAL_ODS,
                    "display": HOSPITAL_NAME,
                },
            ],
        };
        resources.push(org);
    }

    let bundle = wrap_bundle(resources, f);
    (
        SyntheticPatient {
            patient_id,
            nhs_number: nhs,
            practice_ods: practice.ods.clone(),
            name_display,
        },
        bundle,
    )
}

fn push_immunisation(cx: &mut Ctx<'_>, code: &str, display: &str, d: NaiveDate) {
    let lot = format!(
        "{}{:05}",
        (b'A' + cx.rng.below(26) as u8) as char,
        cx.rng.below(100_000)
    );
    let mut i = obj! {
        "resourceType": "Immunization",
        "status": "completed",
        "vaccineCode": snomed(code, display),
        "patient": cx.subject(),
        "occurrenceDateTime": datetime(d, 10, 0),
        "recorded": ymd(d),
        "primarySource": true,
        "lotNumber": lot,
    };
    let who = cx.staff_ref("nurse");
    i["performer"] = arr![obj! {"actor": who}];
    cx.push(i);
}

fn push_procedure(cx: &mut Ctx<'_>, code: &str, display: &str, d: NaiveDate) {
    let mut p = obj! {
        "resourceType": "Procedure",
        "status": "completed",
        "code": snomed(code, display),
        "subject": cx.subject(),
        "performedDateTime": datetime(d, 11, 15),
    };
    let role = if code == "18949003" || code == "401191002" {
        "nurse"
    } else {
        "gp"
    };
    let who = cx.staff_ref(role);
    p["performer"] = arr![obj! {"actor": who}];
    cx.push(p);
}

fn push_discharge_summary(cx: &mut Ctx<'_>, givens: &[&str], family: &str) {
    let admitted = days_ago(cx.today, cx.rng.range(20, 1500));
    let days = cx.rng.range(2, 12);
    let discharged = admitted + Duration::days(days);
    let (diagnosis, treatment) = *cx.rng.pick(&[
        (
            "Community-acquired pneumonia",
            "Intravenous then oral antibiotics; oxygen weaned on day 3.",
        ),
        (
            "Fall with fractured neck of femur",
            "Hemiarthroplasty on day 1; mobilising with a frame.",
        ),
        (
            "Acute exacerbation of heart failure",
            "Intravenous furosemide; weight down 4 kg.",
        ),
        (
            "Urinary tract infection with delirium",
            "Antibiotics; delirium resolved by discharge.",
        ),
    ]);
    let consultant = format!("Dr {} {}", cx.rng.pick(FEMALE_GIVEN), cx.rng.pick(FAMILY));
    let name = format!("{} {}", givens.join(" "), family);
    let section = |title: &str, html: String| {
        obj! {
            "title": title,
            "text": obj! {
                "status": "generated",
                "div": format!("<div xmlns=\"http://www.w3.org/1999/xhtml\">{html}</div>"),
            },
        }
    };
    let mut c = obj! {
        "resourceType": "Composition",
        "status": "final",
        "type": snomed("373942005", "Discharge summary"),
        "subject": cx.subject(),
        "date": datetime(discharged, 16, 45),
        "author": arr![obj! {"display": format!("{consultant}, Consultant in Acute Medicine")}],
        "title": format!("Discharge summary – {}", HOSPITAL_NAME),
        "custodian": obj! {
            "identifier": obj! {"system": ODS_SYSTEM, "value": HOSPITAL_ODS},
            "display": HOSPITAL_NAME,
        },
        "section": arr![
            section("Admission details", format!("<p>Admitted {} &amp; discharged {} ({days} days).</p>", admitted.format("%d %B %Y"), discharged.format("%d %B %Y"))),
            section("Diagnosis", format!("<p><b>{diagnosis}</b></p>")),
            section("Clinical summary", format!("<p>{} was admitted with {}. {treatment}</p>", name, diagnosis.to_lowercase())),
            section("Actions for GP", "<ul><li>Review renal function and potassium in 1 week</li><li>District nurse visit for observations</li></ul>".to_owned()),
        ],
    };
    cx.hospital_stamp(&mut c);
    cx.push(c);
}

/// Clinic letters: clinic, body, and the problems (SNOMED CT) that bring a patient there.
const CLINICS: &[(&str, &str, &[&str])] = &[
    (
        "Diabetes clinic",
        "Glycaemic control reviewed; continue current treatment. Retinal screening up to date.",
        &["44054006"],
    ),
    (
        "Cardiology clinic",
        "Echocardiogram shows mildly impaired left ventricular function. Continue current medication.",
        &["84114007", "49436004", "53741008"],
    ),
    (
        "Respiratory clinic",
        "Spirometry consistent with moderate airflow obstruction. Inhaler technique checked.",
        &["13645005", "195967001"],
    ),
    (
        "Memory clinic",
        "Cognitive assessment completed; findings discussed with patient and family.",
        &["52448006"],
    ),
    (
        "Tissue viability clinic",
        "Wound bed granulating; continue compression bandaging weekly.",
        &["402863000"],
    ),
    (
        "Orthopaedic clinic",
        "Knee pain reviewed; X-ray shows moderate osteoarthritis. Physiotherapy referral made.",
        &["396275006"],
    ),
];

fn push_clinic_letter(cx: &mut Ctx<'_>, given: &str, family: &str, age: i64, problems: &[&str]) {
    let fitting: Vec<&(&str, &str, &[&str])> = CLINICS
        .iter()
        .filter(|(_, _, codes)| codes.iter().any(|c| problems.contains(c)))
        .collect();
    let Some(&(clinic, body, _)) = (!fitting.is_empty()).then(|| *cx.rng.pick(&fitting)) else {
        return;
    };
    let d = days_ago(cx.today, cx.rng.range(15, 2000));
    let text = format!(
        "{clinic}, {HOSPITAL_NAME}\nDate: {:02}/{:02}/{}\n\nRe: {given} {family}, aged {age}\n\nDear Doctor,\n\n{body}\n\nYours sincerely,\nDr {} {}\nConsultant",
        d.day(),
        d.month(),
        d.year(),
        cx.rng.pick(MALE_GIVEN),
        cx.rng.pick(FAMILY)
    );
    let mut r = obj! {
        "resourceType": "DocumentReference",
        "status": "current",
        "type": snomed("371531000", "Report of clinical encounter"),
        "category": arr![
            obj! {
                "coding": arr![
                    obj! {
                        "system": "https://fhir.nhs.uk/CodeSystem/document-category",
                        "code": "letter",
                        "display": "Clinic letter",
                    },
                ],
            },
        ],
        "subject": cx.subject(),
        "date": datetime(d, 12, 0),
        "description": format!("{clinic} letter"),
        "author": arr![obj! {"display": format!("{HOSPITAL_NAME} – {clinic}")}],
        "content": arr![
            obj! {
                "attachment": obj! {
                    "contentType": "text/plain; charset=utf-8",
                    "data": base64_encode(text.as_bytes()),
                    "title": format!("{clinic} letter"),
                },
            },
        ],
    };
    cx.hospital_stamp(&mut r);
    if clinic == "Memory clinic" && cx.rng.chance(0.5) {
        let tag = r["meta"]["tag"].clone();
        cx.confidential(&mut r);
        r["meta"]["tag"] = tag;
    }
    cx.push(r);
}

fn wrap_bundle(resources: Vec<Value>, f: Feed) -> Value {
    // Built by hand so each resource is moved, not copied.
    let entries: Vec<Value> = resources
        .into_iter()
        .map(|r| {
            let ty = r["resourceType"].as_str().unwrap_or_default();
            let id = r["id"].as_str().unwrap_or_default();
            let full_url = Value::String(format!("urn:uuid:{id}"));
            let request = f.transaction.then(|| {
                let (method, url) = if f.urn_refs {
                    ("POST", ty.to_owned())
                } else {
                    ("PUT", format!("{ty}/{id}"))
                };
                obj! {"method": method, "url": url}
            });
            let mut entry = Map::with_capacity(3);
            entry.insert("fullUrl".into(), full_url);
            entry.insert("resource".into(), r);
            if let Some(request) = request {
                entry.insert("request".into(), request);
            }
            Value::Object(entry)
        })
        .collect();
    obj! {
        "resourceType": "Bundle",
        "type": if f.transaction { "transaction" } else { "collection" },
        "entry": entries,
    }
}

/// The NHS number of the `index`-th patient of a federation: unique per index, valid, in the
/// test range. Stems sharing their first eight digits form blocks of ten, of which at most one
/// has check digit 10 and at most one more is a repeated digit (`999 999 999x`), so every block
/// yields eight numbers; blocks are visited in a seed-dependent order (a stride coprime with
/// the 100,000 blocks), which gives 800,000 distinct numbers.
fn nhs_number_for(seed: u64, index: usize) -> NhsNumber {
    const BLOCKS: u64 = 100_000;
    let start = mix(seed, 0xB10C, 0) % BLOCKS;
    let block = (start + (index as u64 / 8) * 7919) % BLOCKS;
    let nth = index % 8;
    (0..10)
        .filter_map(|d| NhsNumber::from_stem(999_000_000 + block * 10 + d))
        .nth(nth)
        .expect("every block of ten stems holds at least eight valid NHS numbers")
}

mod leak;
pub use leak::{LeakForm, LeakItem, LeakManifest, LeakPatient, add_leak_markers};

#[cfg(test)]
mod tests;
