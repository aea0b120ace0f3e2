//! NEWS2, the National Early Warning Score 2, as a pure function of one set of vital signs.
//!
//! Source: Royal College of Physicians, *National Early Warning Score (NEWS) 2: Standardising
//! the assessment of acute-illness severity in the NHS*, updated report of a working party,
//! London: RCP, December 2017. This module implements its scoring chart, its thresholds and
//! triggers, and its clinical response table, as printed there. It does not implement any local
//! variation of escalation policy; a trust's own policy may ask for more, never for less.
//!
//! NEWS2 is for adults (16 and over). The RCP does not validate it for children or in
//! pregnancy; the caller decides whether to show a score at all.
//!
//! ## The scoring chart
//!
//! | Parameter                 | 3      | 2         | 1         | 0                         | 1                  | 2                  | 3                 |
//! |---------------------------|--------|-----------|-----------|---------------------------|--------------------|--------------------|-------------------|
//! | Respiration rate (/min)   | ≤8     |           | 9–11      | 12–20                     |                    | 21–24              | ≥25               |
//! | SpO2 Scale 1 (%)          | ≤91    | 92–93     | 94–95     | ≥96                       |                    |                    |                   |
//! | SpO2 Scale 2 (%)          | ≤83    | 84–85     | 86–87     | 88–92, or ≥93 on air      | 93–94 on oxygen    | 95–96 on oxygen    | ≥97 on oxygen     |
//! | Air or oxygen?            |        | Oxygen    |           | Air                       |                    |                    |                   |
//! | Systolic BP (mmHg)        | ≤90    | 91–100    | 101–110   | 111–219                   |                    |                    | ≥220              |
//! | Pulse (/min)              | ≤40    |           | 41–50     | 51–90                     | 91–110             | 111–130            | ≥131              |
//! | Consciousness             |        |           |           | Alert                     |                    |                    | new Confusion, Voice, Pain, Unresponsive |
//! | Temperature (°C)          | ≤35.0  |           | 35.1–36.0 | 36.1–38.0                 | 38.1–39.0          | ≥39.1              |                   |
//!
//! The aggregate score is the sum of the seven parameter scores (0 to 20).
//!
//! ## SpO2: Scale 1 and Scale 2
//!
//! Scale 1 is the default and is used for every patient unless a clinician has prescribed a
//! target range of 88–92% because of **hypercapnic respiratory failure** (typically COPD,
//! confirmed on blood gas). Only then is Scale 2 used ([`SpO2Scale::Scale2`]); if in doubt, the
//! RCP says use Scale 1. On Scale 2 a saturation of 93% or more is *not* penalised on air (it
//! scores 0) but is on supplemental oxygen (93–94 → 1, 95–96 → 2, ≥97 → 3), because it means the
//! patient is being given more oxygen than the target needs. So on Scale 2, a saturation of 93%
//! or more cannot be scored until air or oxygen is recorded; [`Scores::spo2`] is then `None`.
//! On Scale 1 the saturation's score does not depend on oxygen.
//!
//! "Air or oxygen?" is its own parameter: any supplemental oxygen scores 2, whatever the scale.
//!
//! ## Thresholds, triggers and the clinical response
//!
//! [`ClinicalRisk`] follows the RCP thresholds, in this order of precedence:
//!
//! 1. aggregate **7 or more** → [`ClinicalRisk::High`] (emergency response);
//! 2. aggregate **5–6** → [`ClinicalRisk::Medium`] (key threshold for urgent response), even if
//!    one parameter scores 3;
//! 3. aggregate 0–4 with **a single parameter scoring 3** (a "red score") →
//!    [`ClinicalRisk::LowMedium`] (urgent ward-based response);
//! 4. otherwise aggregate 0–4 → [`ClinicalRisk::Low`] (ward-based response).
//!
//! [`Response`] is the RCP clinical response table; it separates aggregate 0 from 1–4 (both
//! [`ClinicalRisk::Low`]):
//!
//! | NEWS2                    | Monitoring               | Clinical response (abridged)                                        |
//! |--------------------------|--------------------------|---------------------------------------------------------------------|
//! | 0                        | Minimum 12-hourly        | Continue routine NEWS monitoring                                    |
//! | 1–4                      | Minimum 4–6-hourly       | Inform a registered nurse, who must assess the patient              |
//! | 3 in a single parameter  | Minimum 1-hourly         | Registered nurse to inform the medical team caring for the patient  |
//! | 5–6                      | Minimum 1-hourly         | Urgent response: registered nurse to inform the medical team immediately; urgent assessment by a clinician with core competencies in acute illness |
//! | 7 or more                | Continuous monitoring    | Emergency response: immediate medical team (at least specialist registrar); emergency assessment by a critical care team; consider HDU/ICU |
//!
//! ## Partial sets
//!
//! Every parameter of [`Vitals`] is optional so that a composer can show the score as the user
//! types. [`score`] scores what is recorded: [`News2::total`] is the sum of the recorded
//! parameters and [`News2::complete`] is `false` until all seven are scored. A partial total is a
//! **lower bound** (no parameter scores below 0), and so is its band: show it as partial, never
//! as the patient's NEWS2.
//!
//! ## Temperature in tenths of a degree
//!
//! [`Temperature`] holds tenths of a degree Celsius as an `i16` (37.1 °C is `371`). The chart's
//! bands are written to one decimal place and meet without gaps (35.0 | 35.1, 36.0 | 36.1, ...),
//! which is exact in tenths: `≤350`, `351–360`, `361–380`, `381–390`, `≥391`. A binary float
//! cannot hold 35.1 or 38.1 exactly, and a reading such as 36.05 would fall between two bands
//! of the chart; thermometers report to 0.1 °C, so tenths lose nothing.
//!
//! ## Validation and the JSON form
//!
//! [`score`] never fails and never panics; it scores any number by the chart. Impossible values
//! (a typing slip, a unit error) are caught by [`Vitals::check`], which reports every problem at
//! once, each naming the field, the value and the accepted range:
//!
//! | Field (JSON name)              | Type and unit                                      | Accepted           |
//! |--------------------------------|----------------------------------------------------|--------------------|
//! | `rr` respiratory rate          | whole number, breaths/min                          | 1–80               |
//! | `spo2` oxygen saturation       | whole number, %                                    | 50–100             |
//! | `scale` SpO2 scale             | `1` or `2`; absent means 1                         | 1, 2               |
//! | `o2` air or oxygen             | `false` air, `true` supplemental oxygen            |                    |
//! | `sbp` systolic blood pressure  | whole number, mmHg                                 | 40–300             |
//! | `pulse` pulse                  | whole number, beats/min                            | 20–250             |
//! | `acvpu` consciousness          | `"A"`, `"C"` (new confusion), `"V"`, `"P"`, `"U"`  |                    |
//! | `temp` temperature             | number, °C, at most one decimal place              | 25.0–45.0          |
//!
//! [`Vitals::from_json`] reads that object as a command line passes it
//! (`--vitals '{"rr":18,"spo2":96,"scale":1,"o2":false,"sbp":120,"pulse":80,"acvpu":"A","temp":37.1}'`),
//! then checks it. A field that is absent or `null` is not recorded; an unknown field is an
//! error naming it. `Serialize` writes the same object and `Deserialize` reads it (structure
//! only, without the range check, so a stored set reads back as stored).
//!
//! ## Example
//!
//! ```
//! use doorstep_record::news2::{score, ClinicalRisk, Response, Vitals};
//!
//! let vitals = Vitals::from_json(
//!     r#"{"rr":22,"spo2":95,"o2":false,"sbp":105,"pulse":80,"acvpu":"A","temp":37.1}"#,
//! )
//! .unwrap();
//! let news = score(&vitals);
//! // RR 22 → 2, SpO2 95 (Scale 1) → 1, air → 0, SBP 105 → 1, others 0: 4.
//! assert_eq!(news.total, 4);
//! assert!(news.complete);
//! assert_eq!(news.band, ClinicalRisk::Low);
//! assert_eq!(news.response, Response::NurseAssessment);
//! ```

use std::fmt;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

// ---------------------------------------------------------------------------------------------
// Types
// ---------------------------------------------------------------------------------------------

/// Which SpO2 scale the saturation is scored on. [`SpO2Scale::Scale1`] unless a clinician has
/// set Scale 2. Serialises as `1` or `2`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "u8", try_from = "u8")]
pub enum SpO2Scale {
    /// The default, for every patient not prescribed a 88–92% target.
    #[default]
    Scale1,
    /// Only for hypercapnic respiratory failure with a prescribed target of 88–92%, set by a
    /// clinician.
    Scale2,
}

impl From<SpO2Scale> for u8 {
    fn from(scale: SpO2Scale) -> u8 {
        match scale {
            SpO2Scale::Scale1 => 1,
            SpO2Scale::Scale2 => 2,
        }
    }
}

impl TryFrom<u8> for SpO2Scale {
    type Error = String;
    fn try_from(n: u8) -> Result<SpO2Scale, String> {
        match n {
            1 => Ok(SpO2Scale::Scale1),
            2 => Ok(SpO2Scale::Scale2),
            _ => Err(format!("the SpO2 scale is 1 or 2, not {n}")),
        }
    }
}

/// Whether the patient is breathing air or receiving supplemental oxygen (any device, any
/// flow). Serialises as a boolean: `false` air, `true` oxygen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "bool", into = "bool")]
pub enum AirOrOxygen {
    Air,
    Oxygen,
}

impl From<bool> for AirOrOxygen {
    fn from(on_oxygen: bool) -> AirOrOxygen {
        if on_oxygen {
            AirOrOxygen::Oxygen
        } else {
            AirOrOxygen::Air
        }
    }
}

impl From<AirOrOxygen> for bool {
    fn from(o2: AirOrOxygen) -> bool {
        o2 == AirOrOxygen::Oxygen
    }
}

/// Level of consciousness on the ACVPU scale. Serialises as its letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Acvpu {
    #[serde(rename = "A")]
    Alert,
    /// *New* confusion (or new disorientation, agitation); long-standing confusion is not new.
    #[serde(rename = "C")]
    NewConfusion,
    #[serde(rename = "V")]
    Voice,
    #[serde(rename = "P")]
    Pain,
    #[serde(rename = "U")]
    Unresponsive,
}

impl Acvpu {
    /// The letter of the scale: `A`, `C`, `V`, `P` or `U`.
    pub const fn letter(self) -> &'static str {
        match self {
            Acvpu::Alert => "A",
            Acvpu::NewConfusion => "C",
            Acvpu::Voice => "V",
            Acvpu::Pain => "P",
            Acvpu::Unresponsive => "U",
        }
    }

    /// Reads the letter (exactly `A`, `C`, `V`, `P` or `U`).
    pub fn from_letter(letter: &str) -> Option<Acvpu> {
        match letter {
            "A" => Some(Acvpu::Alert),
            "C" => Some(Acvpu::NewConfusion),
            "V" => Some(Acvpu::Voice),
            "P" => Some(Acvpu::Pain),
            "U" => Some(Acvpu::Unresponsive),
            _ => None,
        }
    }
}

/// A body temperature in tenths of a degree Celsius (`371` is 37.1 °C); see the module doc for
/// why. Serialises as a number of degrees (`37.1`). `Display` writes `37.1 °C`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Temperature(i16);

impl Temperature {
    /// From tenths of a degree Celsius: `from_tenths(371)` is 37.1 °C.
    pub const fn from_tenths(tenths: i16) -> Temperature {
        Temperature(tenths)
    }

    /// Tenths of a degree Celsius.
    pub const fn tenths(self) -> i16 {
        self.0
    }

    /// From degrees Celsius with at most one decimal place (`37.1`, `37`, `37.10`); `None` for a
    /// value with more (`37.15`, which no band of the chart can place), a non-finite value or
    /// one beyond ±3276.7.
    pub fn from_celsius(celsius: f64) -> Option<Temperature> {
        if !celsius.is_finite() {
            return None;
        }
        let tenths = celsius * 10.0;
        let rounded = tenths.round();
        if (tenths - rounded).abs() > 1e-9
            || rounded < f64::from(i16::MIN)
            || rounded > f64::from(i16::MAX)
        {
            return None;
        }
        Some(Temperature(rounded as i16))
    }

    /// Degrees Celsius (the nearest `f64`, for display and serialisation only).
    pub fn celsius(self) -> f64 {
        f64::from(self.0) / 10.0
    }
}

impl fmt::Display for Temperature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        write!(f, "{sign}{}.{} °C", abs / 10, abs % 10)
    }
}

impl Serialize for Temperature {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(self.celsius())
    }
}

impl<'de> Deserialize<'de> for Temperature {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Temperature, D::Error> {
        let celsius = f64::deserialize(d)?;
        Temperature::from_celsius(celsius).ok_or_else(|| {
            D::Error::custom(format!(
                "a temperature is in °C with at most one decimal place, not {celsius}"
            ))
        })
    }
}

/// One set of vital signs, any of them not (yet) recorded.
///
/// Serialises as the JSON object of the module doc (`rr`, `spo2`, `scale`, `o2`, `sbp`,
/// `pulse`, `acvpu`, `temp`); unrecorded fields are left out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
pub struct Vitals {
    /// Breaths per minute.
    #[serde(rename = "rr", skip_serializing_if = "Option::is_none")]
    pub respiratory_rate: Option<u16>,
    /// Oxygen saturation, percent.
    #[serde(rename = "spo2", skip_serializing_if = "Option::is_none")]
    pub spo2: Option<u8>,
    /// The scale `spo2` is scored on; Scale 1 unless a clinician has set Scale 2.
    #[serde(rename = "scale")]
    pub spo2_scale: SpO2Scale,
    /// Air or supplemental oxygen.
    #[serde(rename = "o2", skip_serializing_if = "Option::is_none")]
    pub on_oxygen: Option<AirOrOxygen>,
    /// Systolic blood pressure, mmHg.
    #[serde(rename = "sbp", skip_serializing_if = "Option::is_none")]
    pub systolic_bp: Option<u16>,
    /// Beats per minute.
    #[serde(rename = "pulse", skip_serializing_if = "Option::is_none")]
    pub pulse: Option<u16>,
    /// ACVPU.
    #[serde(rename = "acvpu", skip_serializing_if = "Option::is_none")]
    pub consciousness: Option<Acvpu>,
    /// Tenths of a degree Celsius.
    #[serde(rename = "temp", skip_serializing_if = "Option::is_none")]
    pub temperature: Option<Temperature>,
}

/// A field of [`Vitals`], as errors name it. Serialises as its JSON name (`rr`, `spo2`, ...);
/// `Display` writes its label (`respiratory rate`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Field {
    #[serde(rename = "rr")]
    RespiratoryRate,
    #[serde(rename = "spo2")]
    SpO2,
    #[serde(rename = "scale")]
    SpO2Scale,
    #[serde(rename = "o2")]
    AirOrOxygen,
    #[serde(rename = "sbp")]
    SystolicBp,
    #[serde(rename = "pulse")]
    Pulse,
    #[serde(rename = "acvpu")]
    Consciousness,
    #[serde(rename = "temp")]
    Temperature,
}

impl Field {
    /// Every field, in the order of the chart.
    pub const ALL: [Field; 8] = [
        Field::RespiratoryRate,
        Field::SpO2,
        Field::SpO2Scale,
        Field::AirOrOxygen,
        Field::SystolicBp,
        Field::Pulse,
        Field::Consciousness,
        Field::Temperature,
    ];

    /// The field's name in the JSON object: `rr`, `spo2`, `scale`, `o2`, `sbp`, `pulse`,
    /// `acvpu`, `temp`.
    pub const fn json_name(self) -> &'static str {
        match self {
            Field::RespiratoryRate => "rr",
            Field::SpO2 => "spo2",
            Field::SpO2Scale => "scale",
            Field::AirOrOxygen => "o2",
            Field::SystolicBp => "sbp",
            Field::Pulse => "pulse",
            Field::Consciousness => "acvpu",
            Field::Temperature => "temp",
        }
    }

    /// The field as a clinician reads it.
    pub const fn label(self) -> &'static str {
        match self {
            Field::RespiratoryRate => "respiratory rate",
            Field::SpO2 => "SpO2",
            Field::SpO2Scale => "SpO2 scale",
            Field::AirOrOxygen => "air or oxygen",
            Field::SystolicBp => "systolic blood pressure",
            Field::Pulse => "pulse",
            Field::Consciousness => "consciousness (ACVPU)",
            Field::Temperature => "temperature",
        }
    }

    /// What the field accepts, with its unit, as errors state it.
    pub const fn accepted(self) -> &'static str {
        match self {
            Field::RespiratoryRate => "1–80 breaths/min",
            Field::SpO2 => "50–100%",
            Field::SpO2Scale => "1 or 2",
            Field::AirOrOxygen => "false (air) or true (oxygen)",
            Field::SystolicBp => "40–300 mmHg",
            Field::Pulse => "20–250 beats/min",
            Field::Consciousness => "\"A\", \"C\", \"V\", \"P\" or \"U\"",
            Field::Temperature => "25.0–45.0 °C",
        }
    }

    /// The unit a value of the field is written with, if any.
    const fn unit(self) -> &'static str {
        match self {
            Field::RespiratoryRate => " breaths/min",
            Field::SpO2 => "%",
            Field::SystolicBp => " mmHg",
            Field::Pulse => " beats/min",
            Field::Temperature => " °C",
            Field::SpO2Scale | Field::AirOrOxygen | Field::Consciousness => "",
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// Why a set of vitals, or its JSON, cannot be used. Each names the field concerned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum VitalsError {
    /// A value no living patient has (or a typing slip): `value` is written with its unit.
    #[error("{field} {value} is not possible: accepted {accepted}")]
    OutOfRange {
        field: Field,
        value: String,
        accepted: &'static str,
    },
    /// A JSON value of the wrong kind for its field; `found` is the JSON as given.
    #[error("`{}` ({field}): expected {expected}, found {found}", .field.json_name())]
    Invalid {
        field: Field,
        expected: &'static str,
        found: String,
    },
    #[error("unknown field `{field}`: the fields are rr, spo2, scale, o2, sbp, pulse, acvpu, temp")]
    UnknownField { field: String },
    #[error("vitals are a JSON object, not {found}")]
    NotAnObject { found: &'static str },
    #[error("vitals are not valid JSON: {message}")]
    NotJson { message: String },
}

impl VitalsError {
    /// The field the error is about, when it is one of ours.
    pub fn field(&self) -> Option<Field> {
        match self {
            VitalsError::OutOfRange { field, .. } | VitalsError::Invalid { field, .. } => {
                Some(*field)
            }
            _ => None,
        }
    }
}

/// The score of each of the seven parameters; `None` when not recorded (or, for SpO2 on
/// Scale 2 at 93% or more, when air or oxygen is not recorded).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Scores {
    pub respiratory_rate: Option<u8>,
    pub spo2: Option<u8>,
    pub air_or_oxygen: Option<u8>,
    pub systolic_bp: Option<u8>,
    pub pulse: Option<u8>,
    pub consciousness: Option<u8>,
    pub temperature: Option<u8>,
}

impl Scores {
    /// The seven scores in the order of the chart.
    pub const fn to_array(self) -> [Option<u8>; 7] {
        [
            self.respiratory_rate,
            self.spo2,
            self.air_or_oxygen,
            self.systolic_bp,
            self.pulse,
            self.consciousness,
            self.temperature,
        ]
    }
}

/// The RCP clinical risk bands, lowest first (so a partial set's band is a lower bound under
/// `Ord`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClinicalRisk {
    /// Aggregate 0–4 and no parameter scoring 3: ward-based response.
    Low,
    /// Aggregate 0–4 with a single parameter scoring 3 (a "red score"): urgent ward-based
    /// response.
    LowMedium,
    /// Aggregate 5–6 (whatever the single scores): key threshold for urgent response.
    Medium,
    /// Aggregate 7 or more: urgent or emergency response.
    High,
}

impl ClinicalRisk {
    /// The band of an aggregate score: 7+ High, 5–6 Medium, otherwise LowMedium if a parameter
    /// scores 3, otherwise Low.
    pub const fn from_total(total: u8, any_parameter_3: bool) -> ClinicalRisk {
        match total {
            7.. => ClinicalRisk::High,
            5..=6 => ClinicalRisk::Medium,
            _ if any_parameter_3 => ClinicalRisk::LowMedium,
            _ => ClinicalRisk::Low,
        }
    }

    /// The RCP's name of the band.
    pub const fn label(self) -> &'static str {
        match self {
            ClinicalRisk::Low => "Low",
            ClinicalRisk::LowMedium => "Low–medium",
            ClinicalRisk::Medium => "Medium",
            ClinicalRisk::High => "High",
        }
    }
}

/// A row of the RCP clinical response table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    /// Aggregate 0.
    Routine,
    /// Aggregate 1–4, no parameter scoring 3.
    NurseAssessment,
    /// A single parameter scoring 3, aggregate 3–4.
    UrgentWardBased,
    /// Aggregate 5–6.
    Urgent,
    /// Aggregate 7 or more.
    Emergency,
}

impl Response {
    /// The row for an aggregate score and its band.
    pub const fn for_score(total: u8, band: ClinicalRisk) -> Response {
        match band {
            ClinicalRisk::High => Response::Emergency,
            ClinicalRisk::Medium => Response::Urgent,
            ClinicalRisk::LowMedium => Response::UrgentWardBased,
            ClinicalRisk::Low if total == 0 => Response::Routine,
            ClinicalRisk::Low => Response::NurseAssessment,
        }
    }

    /// One line for a badge.
    pub const fn summary(self) -> &'static str {
        match self {
            Response::Routine => "Minimum 12-hourly monitoring",
            Response::NurseAssessment => "Minimum 4–6-hourly; registered nurse to assess",
            Response::UrgentWardBased => {
                "Urgent ward-based response; minimum 1-hourly; registered nurse to inform the medical team"
            }
            Response::Urgent => "Urgent response; minimum 1-hourly monitoring",
            Response::Emergency => "Emergency response; continuous monitoring",
        }
    }

    /// Minimum frequency of monitoring, as the RCP table gives it.
    pub const fn monitoring(self) -> &'static str {
        match self {
            Response::Routine => "Minimum 12-hourly",
            Response::NurseAssessment => "Minimum 4–6-hourly",
            Response::UrgentWardBased | Response::Urgent => "Minimum 1-hourly",
            Response::Emergency => "Continuous monitoring of vital signs",
        }
    }

    /// The clinical response, as the RCP table gives it (lightly abridged).
    pub const fn action(self) -> &'static str {
        match self {
            Response::Routine => "Continue routine NEWS monitoring.",
            Response::NurseAssessment => {
                "Inform registered nurse, who must assess the patient. Registered nurse decides \
                 whether increased frequency of clinical monitoring and/or escalation of care is \
                 required."
            }
            Response::UrgentWardBased => {
                "Registered nurse to inform medical team caring for the patient, who will review \
                 and decide whether escalation of care is necessary."
            }
            Response::Urgent => {
                "Registered nurse to immediately inform the medical team caring for the patient. \
                 Registered nurse to request urgent assessment by a clinician or team with core \
                 competencies in the care of acutely ill patients. Provide clinical care in an \
                 environment with monitoring facilities."
            }
            Response::Emergency => {
                "Registered nurse to immediately inform the medical team caring for the patient \
                 – this should be at least at specialist registrar level. Emergency assessment by \
                 a team with critical care competencies, including practitioner(s) with advanced \
                 airway management skills. Consider transfer of care to a level 2 or 3 clinical \
                 care facility, ie higher-dependency unit or ICU. Clinical care in an environment \
                 with monitoring facilities."
            }
        }
    }
}

/// The NEWS2 of one set of vitals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct News2 {
    /// Each parameter's score, `None` when not recorded.
    pub scores: Scores,
    /// The sum of the recorded parameters' scores.
    pub total: u8,
    /// All seven parameters scored. When `false`, `total` and `band` are partial (lower
    /// bounds) and must be shown as such.
    pub complete: bool,
    /// A recorded parameter scores 3.
    pub any_parameter_3: bool,
    pub band: ClinicalRisk,
    pub response: Response,
}

// ---------------------------------------------------------------------------------------------
// The chart, one function per parameter
// ---------------------------------------------------------------------------------------------

/// Respiration rate: ≤8 → 3; 9–11 → 1; 12–20 → 0; 21–24 → 2; ≥25 → 3.
pub const fn respiratory_rate_score(breaths_per_min: u16) -> u8 {
    match breaths_per_min {
        0..=8 => 3,
        9..=11 => 1,
        12..=20 => 0,
        21..=24 => 2,
        25.. => 3,
    }
}

/// SpO2. Scale 1: ≤91 → 3; 92–93 → 2; 94–95 → 1; ≥96 → 0 (air or oxygen alike).
/// Scale 2: ≤83 → 3; 84–85 → 2; 86–87 → 1; 88–92 → 0; ≥93 on air → 0; on oxygen 93–94 → 1,
/// 95–96 → 2, ≥97 → 3. `None` on Scale 2 at ≥93 when air or oxygen is not known.
pub const fn spo2_score(percent: u8, scale: SpO2Scale, o2: Option<AirOrOxygen>) -> Option<u8> {
    match scale {
        SpO2Scale::Scale1 => Some(match percent {
            0..=91 => 3,
            92..=93 => 2,
            94..=95 => 1,
            96.. => 0,
        }),
        SpO2Scale::Scale2 => match (percent, o2) {
            (0..=83, _) => Some(3),
            (84..=85, _) => Some(2),
            (86..=87, _) => Some(1),
            (88..=92, _) => Some(0),
            (93.., Some(AirOrOxygen::Air)) => Some(0),
            (93..=94, Some(AirOrOxygen::Oxygen)) => Some(1),
            (95..=96, Some(AirOrOxygen::Oxygen)) => Some(2),
            (97.., Some(AirOrOxygen::Oxygen)) => Some(3),
            (93.., None) => None,
        },
    }
}

/// Air or oxygen: oxygen → 2; air → 0.
pub const fn air_or_oxygen_score(o2: AirOrOxygen) -> u8 {
    match o2 {
        AirOrOxygen::Air => 0,
        AirOrOxygen::Oxygen => 2,
    }
}

/// Systolic BP: ≤90 → 3; 91–100 → 2; 101–110 → 1; 111–219 → 0; ≥220 → 3.
pub const fn systolic_bp_score(mmhg: u16) -> u8 {
    match mmhg {
        0..=90 => 3,
        91..=100 => 2,
        101..=110 => 1,
        111..=219 => 0,
        220.. => 3,
    }
}

/// Pulse: ≤40 → 3; 41–50 → 1; 51–90 → 0; 91–110 → 1; 111–130 → 2; ≥131 → 3.
pub const fn pulse_score(beats_per_min: u16) -> u8 {
    match beats_per_min {
        0..=40 => 3,
        41..=50 => 1,
        51..=90 => 0,
        91..=110 => 1,
        111..=130 => 2,
        131.. => 3,
    }
}

/// Consciousness: Alert → 0; new Confusion, Voice, Pain, Unresponsive → 3.
pub const fn consciousness_score(level: Acvpu) -> u8 {
    match level {
        Acvpu::Alert => 0,
        Acvpu::NewConfusion | Acvpu::Voice | Acvpu::Pain | Acvpu::Unresponsive => 3,
    }
}

/// Temperature: ≤35.0 → 3; 35.1–36.0 → 1; 36.1–38.0 → 0; 38.1–39.0 → 1; ≥39.1 → 2.
pub const fn temperature_score(t: Temperature) -> u8 {
    match t.tenths() {
        i16::MIN..=350 => 3,
        351..=360 => 1,
        361..=380 => 0,
        381..=390 => 1,
        391.. => 2,
    }
}

/// Scores a set of vitals by the chart. Never fails: validate with [`Vitals::check`] first.
pub fn score(vitals: &Vitals) -> News2 {
    let scores = Scores {
        respiratory_rate: vitals.respiratory_rate.map(respiratory_rate_score),
        spo2: match vitals.spo2 {
            Some(p) => spo2_score(p, vitals.spo2_scale, vitals.on_oxygen),
            None => None,
        },
        air_or_oxygen: vitals.on_oxygen.map(air_or_oxygen_score),
        systolic_bp: vitals.systolic_bp.map(systolic_bp_score),
        pulse: vitals.pulse.map(pulse_score),
        consciousness: vitals.consciousness.map(consciousness_score),
        temperature: vitals.temperature.map(temperature_score),
    };
    let all = scores.to_array();
    let total: u8 = all.iter().flatten().sum();
    let complete = all.iter().all(Option::is_some);
    let any_parameter_3 = all.contains(&Some(3));
    let band = ClinicalRisk::from_total(total, any_parameter_3);
    News2 {
        scores,
        total,
        complete,
        any_parameter_3,
        band,
        response: Response::for_score(total, band),
    }
}

// ---------------------------------------------------------------------------------------------
// Validation and the JSON form
// ---------------------------------------------------------------------------------------------

const RESPIRATORY_RATE_RANGE: (u16, u16) = (1, 80);
const SPO2_RANGE: (u8, u8) = (50, 100);
const SYSTOLIC_BP_RANGE: (u16, u16) = (40, 300);
const PULSE_RANGE: (u16, u16) = (20, 250);
/// Tenths of a degree.
const TEMPERATURE_RANGE: (i16, i16) = (250, 450);

fn out_of_range(field: Field, value: impl fmt::Display) -> VitalsError {
    VitalsError::OutOfRange {
        field,
        value: format!("{value}{}", field.unit()),
        accepted: field.accepted(),
    }
}

impl Vitals {
    /// Every impossible value in the set, in the order of the chart; `Ok` when there is none.
    /// Unrecorded parameters are not errors.
    pub fn check(&self) -> Result<(), Vec<VitalsError>> {
        fn within<T: PartialOrd>(v: T, (lo, hi): (T, T)) -> bool {
            lo <= v && v <= hi
        }
        let mut errors = Vec::new();
        if let Some(rr) = self.respiratory_rate
            && !within(rr, RESPIRATORY_RATE_RANGE)
        {
            errors.push(out_of_range(Field::RespiratoryRate, rr));
        }
        if let Some(spo2) = self.spo2
            && !within(spo2, SPO2_RANGE)
        {
            errors.push(out_of_range(Field::SpO2, spo2));
        }
        if let Some(sbp) = self.systolic_bp
            && !within(sbp, SYSTOLIC_BP_RANGE)
        {
            errors.push(out_of_range(Field::SystolicBp, sbp));
        }
        if let Some(pulse) = self.pulse
            && !within(pulse, PULSE_RANGE)
        {
            errors.push(out_of_range(Field::Pulse, pulse));
        }
        if let Some(t) = self.temperature
            && !within(t.tenths(), TEMPERATURE_RANGE)
        {
            // Display already carries the unit.
            errors.push(VitalsError::OutOfRange {
                field: Field::Temperature,
                value: t.to_string(),
                accepted: Field::Temperature.accepted(),
            });
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// Reads the JSON object of the module doc and checks it ([`Vitals::check`]). Every problem
    /// is reported, each naming its field.
    pub fn from_json(text: &str) -> Result<Vitals, Vec<VitalsError>> {
        let value: Value = serde_json::from_str(text).map_err(|e| {
            vec![VitalsError::NotJson {
                message: e.to_string(),
            }]
        })?;
        Vitals::from_json_value(&value)
    }

    /// As [`Vitals::from_json`], from a parsed value.
    pub fn from_json_value(value: &Value) -> Result<Vitals, Vec<VitalsError>> {
        let (vitals, mut errors) = read_object(value);
        if let Err(more) = vitals.check() {
            errors.extend(more);
        }
        if errors.is_empty() {
            Ok(vitals)
        } else {
            Err(errors)
        }
    }
}

impl<'de> Deserialize<'de> for Vitals {
    /// Reads the JSON object (structure and types; no range check).
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Vitals, D::Error> {
        let value = Value::deserialize(d)?;
        let (vitals, errors) = read_object(&value);
        if errors.is_empty() {
            Ok(vitals)
        } else {
            let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
            Err(D::Error::custom(text.join("; ")))
        }
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The JSON of a value for an error, shortened if long.
fn shown(v: &Value) -> String {
    let mut s = v.to_string();
    if s.chars().count() > 40 {
        s = s.chars().take(40).collect::<String>() + "…";
    }
    s
}

/// A whole number that fits `T`; out of `T`'s range is an impossible value for the field.
fn whole<T: TryFrom<i64>>(field: Field, v: &Value, errors: &mut Vec<VitalsError>) -> Option<T> {
    match v {
        Value::Null => None,
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                match T::try_from(i) {
                    Ok(x) => Some(x),
                    Err(_) => {
                        errors.push(out_of_range(field, i));
                        None
                    }
                }
            } else if n.is_u64() {
                // Beyond i64: certainly impossible.
                errors.push(out_of_range(field, n));
                None
            } else {
                errors.push(VitalsError::Invalid {
                    field,
                    expected: "a whole number",
                    found: shown(v),
                });
                None
            }
        }
        _ => {
            errors.push(VitalsError::Invalid {
                field,
                expected: "a whole number",
                found: shown(v),
            });
            None
        }
    }
}

/// Reads the object's fields; returns what could be read and every structural problem.
fn read_object(value: &Value) -> (Vitals, Vec<VitalsError>) {
    let mut vitals = Vitals::default();
    let mut errors = Vec::new();
    let Some(obj) = value.as_object() else {
        errors.push(VitalsError::NotAnObject {
            found: kind_of(value),
        });
        return (vitals, errors);
    };
    for (key, v) in obj {
        match key.as_str() {
            "rr" => vitals.respiratory_rate = whole(Field::RespiratoryRate, v, &mut errors),
            "spo2" => vitals.spo2 = whole(Field::SpO2, v, &mut errors),
            "sbp" => vitals.systolic_bp = whole(Field::SystolicBp, v, &mut errors),
            "pulse" => vitals.pulse = whole(Field::Pulse, v, &mut errors),
            "scale" => match v {
                Value::Null => vitals.spo2_scale = SpO2Scale::Scale1,
                _ => match v.as_u64() {
                    Some(1) => vitals.spo2_scale = SpO2Scale::Scale1,
                    Some(2) => vitals.spo2_scale = SpO2Scale::Scale2,
                    _ => errors.push(VitalsError::Invalid {
                        field: Field::SpO2Scale,
                        expected: "1 or 2 (2 only for hypercapnic respiratory failure, set by a clinician)",
                        found: shown(v),
                    }),
                },
            },
            "o2" => match v {
                Value::Null => vitals.on_oxygen = None,
                Value::Bool(b) => vitals.on_oxygen = Some(AirOrOxygen::from(*b)),
                _ => errors.push(VitalsError::Invalid {
                    field: Field::AirOrOxygen,
                    expected: "false (air) or true (supplemental oxygen)",
                    found: shown(v),
                }),
            },
            "acvpu" => match v {
                Value::Null => vitals.consciousness = None,
                _ => match v.as_str().and_then(Acvpu::from_letter) {
                    Some(level) => vitals.consciousness = Some(level),
                    None => errors.push(VitalsError::Invalid {
                        field: Field::Consciousness,
                        expected: "\"A\", \"C\" (new confusion), \"V\", \"P\" or \"U\"",
                        found: shown(v),
                    }),
                },
            },
            "temp" => match v {
                Value::Null => vitals.temperature = None,
                Value::Number(n) => match n.as_f64().and_then(Temperature::from_celsius) {
                    Some(t) => vitals.temperature = Some(t),
                    // Too large for the type: certainly impossible, whatever its decimals.
                    None if n.as_f64().is_some_and(|c| c.abs() > 3000.0) => {
                        errors.push(out_of_range(Field::Temperature, n));
                    }
                    None => errors.push(VitalsError::Invalid {
                        field: Field::Temperature,
                        expected: "degrees Celsius with at most one decimal place, e.g. 37.1",
                        found: shown(v),
                    }),
                },
                _ => errors.push(VitalsError::Invalid {
                    field: Field::Temperature,
                    expected: "degrees Celsius with at most one decimal place, e.g. 37.1",
                    found: shown(v),
                }),
            },
            other => errors.push(VitalsError::UnknownField {
                field: other.to_owned(),
            }),
        }
    }
    (vitals, errors)
}

#[cfg(test)]
mod tests {
    //! Expected values are written out from the RCP chart as literal tables, never computed
    //! with this module's own band helpers.

    use super::*;
    use AirOrOxygen::{Air, Oxygen};
    use SpO2Scale::{Scale1, Scale2};

    fn temp(tenths: i16) -> Temperature {
        Temperature::from_tenths(tenths)
    }

    /// A complete set scoring 0 on every parameter.
    fn normal() -> Vitals {
        Vitals {
            respiratory_rate: Some(16),
            spo2: Some(97),
            spo2_scale: Scale1,
            on_oxygen: Some(Air),
            systolic_bp: Some(125),
            pulse: Some(72),
            consciousness: Some(Acvpu::Alert),
            temperature: Some(temp(368)),
        }
    }

    fn only(v: Vitals) -> News2 {
        score(&v)
    }

    // --- every band edge, both sides, through the helper and through `score` --------------

    #[test]
    fn respiratory_rate_band_edges() {
        let table: &[(u16, u8)] = &[
            (1, 3),
            (8, 3),
            (9, 1),
            (11, 1),
            (12, 0),
            (20, 0),
            (21, 2),
            (24, 2),
            (25, 3),
            (80, 3),
        ];
        for &(rr, expected) in table {
            assert_eq!(respiratory_rate_score(rr), expected, "RR {rr}");
            let news = only(Vitals {
                respiratory_rate: Some(rr),
                ..Vitals::default()
            });
            assert_eq!(news.scores.respiratory_rate, Some(expected), "RR {rr}");
            assert_eq!(news.total, expected, "RR {rr}");
        }
    }

    #[test]
    fn spo2_scale_1_band_edges_same_on_air_and_oxygen() {
        let table: &[(u8, u8)] = &[
            (50, 3),
            (91, 3),
            (92, 2),
            (93, 2),
            (94, 1),
            (95, 1),
            (96, 0),
            (100, 0),
        ];
        for &(spo2, expected) in table {
            for o2 in [None, Some(Air), Some(Oxygen)] {
                assert_eq!(
                    spo2_score(spo2, Scale1, o2),
                    Some(expected),
                    "{spo2}% {o2:?}"
                );
                let news = only(Vitals {
                    spo2: Some(spo2),
                    on_oxygen: o2,
                    ..Vitals::default()
                });
                assert_eq!(news.scores.spo2, Some(expected), "{spo2}% {o2:?}");
            }
        }
    }

    #[test]
    fn spo2_scale_2_band_edges_on_air() {
        // On air, 93% and above is not penalised on Scale 2.
        let table: &[(u8, u8)] = &[
            (50, 3),
            (83, 3),
            (84, 2),
            (85, 2),
            (86, 1),
            (87, 1),
            (88, 0),
            (92, 0),
            (93, 0),
            (94, 0),
            (95, 0),
            (96, 0),
            (97, 0),
            (100, 0),
        ];
        for &(spo2, expected) in table {
            assert_eq!(
                spo2_score(spo2, Scale2, Some(Air)),
                Some(expected),
                "{spo2}%"
            );
            let news = only(Vitals {
                spo2: Some(spo2),
                spo2_scale: Scale2,
                on_oxygen: Some(Air),
                ..Vitals::default()
            });
            assert_eq!(news.scores.spo2, Some(expected), "{spo2}% on air");
            // Air scores 0 itself.
            assert_eq!(news.total, expected, "{spo2}% on air");
        }
    }

    #[test]
    fn spo2_scale_2_band_edges_on_oxygen() {
        let table: &[(u8, u8)] = &[
            (50, 3),
            (83, 3),
            (84, 2),
            (85, 2),
            (86, 1),
            (87, 1),
            (88, 0),
            (92, 0),
            (93, 1),
            (94, 1),
            (95, 2),
            (96, 2),
            (97, 3),
            (100, 3),
        ];
        for &(spo2, expected) in table {
            assert_eq!(
                spo2_score(spo2, Scale2, Some(Oxygen)),
                Some(expected),
                "{spo2}%"
            );
            let news = only(Vitals {
                spo2: Some(spo2),
                spo2_scale: Scale2,
                on_oxygen: Some(Oxygen),
                ..Vitals::default()
            });
            assert_eq!(news.scores.spo2, Some(expected), "{spo2}% on oxygen");
            assert_eq!(news.scores.air_or_oxygen, Some(2));
        }
        // Worked: Scale 2, 97% on oxygen: SpO2 3 + oxygen 2 = 5.
        let news = only(Vitals {
            spo2: Some(97),
            spo2_scale: Scale2,
            on_oxygen: Some(Oxygen),
            ..Vitals::default()
        });
        assert_eq!(news.total, 5);
    }

    #[test]
    fn spo2_scale_2_at_93_or_more_cannot_be_scored_without_air_or_oxygen() {
        let table: &[(u8, Option<u8>)] = &[
            (83, Some(3)),
            (85, Some(2)),
            (87, Some(1)),
            (88, Some(0)),
            (92, Some(0)),
            (93, None),
            (97, None),
            (100, None),
        ];
        for &(spo2, expected) in table {
            assert_eq!(spo2_score(spo2, Scale2, None), expected, "{spo2}%");
            let news = only(Vitals {
                spo2: Some(spo2),
                spo2_scale: Scale2,
                ..Vitals::default()
            });
            assert_eq!(news.scores.spo2, expected, "{spo2}%");
        }
    }

    #[test]
    fn scale_1_is_the_default() {
        assert_eq!(Vitals::default().spo2_scale, Scale1);
        assert_eq!(SpO2Scale::default(), Scale1);
        // 90% on oxygen without a scale set is scored on Scale 1: 3.
        let v = Vitals::from_json(r#"{"spo2":90,"o2":true}"#).unwrap();
        assert_eq!(v.spo2_scale, Scale1);
        assert_eq!(score(&v).scores.spo2, Some(3));
    }

    #[test]
    fn air_scores_0_and_oxygen_scores_2() {
        assert_eq!(air_or_oxygen_score(Air), 0);
        assert_eq!(air_or_oxygen_score(Oxygen), 2);
        for (o2, expected) in [(Air, 0u8), (Oxygen, 2)] {
            let news = only(Vitals {
                on_oxygen: Some(o2),
                ..Vitals::default()
            });
            assert_eq!(news.scores.air_or_oxygen, Some(expected));
            assert_eq!(news.total, expected);
        }
    }

    #[test]
    fn systolic_bp_band_edges() {
        let table: &[(u16, u8)] = &[
            (40, 3),
            (90, 3),
            (91, 2),
            (100, 2),
            (101, 1),
            (110, 1),
            (111, 0),
            (219, 0),
            (220, 3),
            (300, 3),
        ];
        for &(sbp, expected) in table {
            assert_eq!(systolic_bp_score(sbp), expected, "SBP {sbp}");
            let news = only(Vitals {
                systolic_bp: Some(sbp),
                ..Vitals::default()
            });
            assert_eq!(news.scores.systolic_bp, Some(expected), "SBP {sbp}");
        }
    }

    #[test]
    fn pulse_band_edges() {
        let table: &[(u16, u8)] = &[
            (20, 3),
            (40, 3),
            (41, 1),
            (50, 1),
            (51, 0),
            (90, 0),
            (91, 1),
            (110, 1),
            (111, 2),
            (130, 2),
            (131, 3),
            (250, 3),
        ];
        for &(pulse, expected) in table {
            assert_eq!(pulse_score(pulse), expected, "pulse {pulse}");
            let news = only(Vitals {
                pulse: Some(pulse),
                ..Vitals::default()
            });
            assert_eq!(news.scores.pulse, Some(expected), "pulse {pulse}");
        }
    }

    #[test]
    fn consciousness_alert_scores_0_and_cvpu_score_3() {
        let table: &[(Acvpu, u8)] = &[
            (Acvpu::Alert, 0),
            (Acvpu::NewConfusion, 3),
            (Acvpu::Voice, 3),
            (Acvpu::Pain, 3),
            (Acvpu::Unresponsive, 3),
        ];
        for &(level, expected) in table {
            assert_eq!(consciousness_score(level), expected, "{level:?}");
            let news = only(Vitals {
                consciousness: Some(level),
                ..Vitals::default()
            });
            assert_eq!(news.scores.consciousness, Some(expected), "{level:?}");
        }
    }

    #[test]
    fn temperature_band_edges_in_tenths() {
        let table: &[(i16, u8)] = &[
            (250, 3),
            (350, 3),
            (351, 1),
            (360, 1),
            (361, 0),
            (380, 0),
            (381, 1),
            (390, 1),
            (391, 2),
            (450, 2),
        ];
        for &(tenths, expected) in table {
            assert_eq!(temperature_score(temp(tenths)), expected, "{tenths}");
            let news = only(Vitals {
                temperature: Some(temp(tenths)),
                ..Vitals::default()
            });
            assert_eq!(news.scores.temperature, Some(expected), "{tenths}");
        }
    }

    #[test]
    fn temperature_band_edges_read_from_json_degrees_are_exact() {
        let table: &[(&str, u8)] = &[
            ("35.0", 3),
            ("35.1", 1),
            ("36.0", 1),
            ("36.1", 0),
            ("38.0", 0),
            ("38.1", 1),
            ("39.0", 1),
            ("39.1", 2),
        ];
        for &(text, expected) in table {
            let v = Vitals::from_json(&format!(r#"{{"temp":{text}}}"#)).unwrap();
            assert_eq!(score(&v).scores.temperature, Some(expected), "{text} °C");
        }
    }

    // --- bands and precedence ---------------------------------------------------------------

    #[test]
    fn all_normal_scores_0_low_routine() {
        let news = score(&normal());
        assert_eq!(news.scores.to_array(), [Some(0); 7]);
        assert_eq!(news.total, 0);
        assert!(news.complete);
        assert!(!news.any_parameter_3);
        assert_eq!(news.band, ClinicalRisk::Low);
        assert_eq!(news.response, Response::Routine);
    }

    #[test]
    fn single_parameter_3_with_total_3_is_low_medium() {
        // Pulse 131 → 3; everything else 0. Total 3.
        let news = score(&Vitals {
            pulse: Some(131),
            ..normal()
        });
        assert_eq!(news.total, 3);
        assert!(news.any_parameter_3);
        assert_eq!(news.band, ClinicalRisk::LowMedium);
        assert_eq!(news.response, Response::UrgentWardBased);
    }

    #[test]
    fn single_parameter_3_with_total_4_is_low_medium() {
        // Pulse 131 → 3, temperature 38.5 → 1. Total 4.
        let news = score(&Vitals {
            pulse: Some(131),
            temperature: Some(temp(385)),
            ..normal()
        });
        assert_eq!(news.total, 4);
        assert_eq!(news.band, ClinicalRisk::LowMedium);
    }

    #[test]
    fn single_parameter_3_with_total_5_is_medium_not_low_medium() {
        // Pulse 131 → 3, temperature 38.5 → 1, SBP 105 → 1. Total 5.
        let news = score(&Vitals {
            pulse: Some(131),
            temperature: Some(temp(385)),
            systolic_bp: Some(105),
            ..normal()
        });
        assert_eq!(news.total, 5);
        assert!(news.any_parameter_3);
        assert_eq!(news.band, ClinicalRisk::Medium);
        assert_eq!(news.response, Response::Urgent);
    }

    #[test]
    fn two_parameters_scoring_3_total_6_is_medium() {
        // New confusion → 3, RR 25 → 3. Total 6.
        let news = score(&Vitals {
            consciousness: Some(Acvpu::NewConfusion),
            respiratory_rate: Some(25),
            ..normal()
        });
        assert_eq!(news.total, 6);
        assert_eq!(news.band, ClinicalRisk::Medium);
    }

    #[test]
    fn three_parameters_scoring_3_total_9_is_high() {
        // Voice 3 + SBP 90 → 3 + pulse 40 → 3. Total 9.
        let news = score(&Vitals {
            consciousness: Some(Acvpu::Voice),
            systolic_bp: Some(90),
            pulse: Some(40),
            ..normal()
        });
        assert_eq!(news.total, 9);
        assert_eq!(news.band, ClinicalRisk::High);
        assert_eq!(news.response, Response::Emergency);
    }

    #[test]
    fn totals_0_4_5_6_7_fall_in_the_right_bands() {
        // Worked examples, each total by hand from the chart (no parameter scores 3):
        let cases: &[(Vitals, u8, ClinicalRisk, Response)] = &[
            // All 0.
            (normal(), 0, ClinicalRisk::Low, Response::Routine),
            // Temp 36.0 → 1. Total 1.
            (
                Vitals {
                    temperature: Some(temp(360)),
                    ..normal()
                },
                1,
                ClinicalRisk::Low,
                Response::NurseAssessment,
            ),
            // RR 22 → 2, SpO2 95 → 1, SBP 105 → 1. Total 4.
            (
                Vitals {
                    respiratory_rate: Some(22),
                    spo2: Some(95),
                    systolic_bp: Some(105),
                    ..normal()
                },
                4,
                ClinicalRisk::Low,
                Response::NurseAssessment,
            ),
            // RR 22 → 2, SpO2 95 → 1, SBP 105 → 1, pulse 95 → 1. Total 5.
            (
                Vitals {
                    respiratory_rate: Some(22),
                    spo2: Some(95),
                    systolic_bp: Some(105),
                    pulse: Some(95),
                    ..normal()
                },
                5,
                ClinicalRisk::Medium,
                Response::Urgent,
            ),
            // RR 22 → 2, SpO2 93 → 2, SBP 105 → 1, pulse 95 → 1. Total 6.
            (
                Vitals {
                    respiratory_rate: Some(22),
                    spo2: Some(93),
                    systolic_bp: Some(105),
                    pulse: Some(95),
                    ..normal()
                },
                6,
                ClinicalRisk::Medium,
                Response::Urgent,
            ),
            // RR 22 → 2, SpO2 93 → 2, oxygen → 2, SBP 105 → 1. Total 7.
            (
                Vitals {
                    respiratory_rate: Some(22),
                    spo2: Some(93),
                    on_oxygen: Some(Oxygen),
                    systolic_bp: Some(105),
                    ..normal()
                },
                7,
                ClinicalRisk::High,
                Response::Emergency,
            ),
        ];
        for (v, total, band, response) in cases {
            let news = score(v);
            assert_eq!(news.total, *total, "{v:?}");
            assert!(news.complete);
            assert!(!news.any_parameter_3, "{v:?}");
            assert_eq!(news.band, *band, "{v:?}");
            assert_eq!(news.response, *response, "{v:?}");
        }
    }

    #[test]
    fn band_from_total_table() {
        // (total, a parameter scores 3) → band, straight from the RCP thresholds.
        let table: &[(u8, bool, ClinicalRisk)] = &[
            (0, false, ClinicalRisk::Low),
            (4, false, ClinicalRisk::Low),
            (3, true, ClinicalRisk::LowMedium),
            (4, true, ClinicalRisk::LowMedium),
            (5, false, ClinicalRisk::Medium),
            (5, true, ClinicalRisk::Medium),
            (6, false, ClinicalRisk::Medium),
            (6, true, ClinicalRisk::Medium),
            (7, false, ClinicalRisk::High),
            (7, true, ClinicalRisk::High),
            (20, true, ClinicalRisk::High),
        ];
        for &(total, any3, band) in table {
            assert_eq!(
                ClinicalRisk::from_total(total, any3),
                band,
                "{total} {any3}"
            );
        }
        assert!(ClinicalRisk::Low < ClinicalRisk::LowMedium);
        assert!(ClinicalRisk::LowMedium < ClinicalRisk::Medium);
        assert!(ClinicalRisk::Medium < ClinicalRisk::High);
    }

    #[test]
    fn copd_patient_on_oxygen_scores_differently_on_scale_2_and_scale_1() {
        // SpO2 90% on oxygen, RR 20, SBP 130, pulse 88, alert, 36.8 °C.
        let v = Vitals {
            respiratory_rate: Some(20),
            spo2: Some(90),
            spo2_scale: Scale2,
            on_oxygen: Some(Oxygen),
            systolic_bp: Some(130),
            pulse: Some(88),
            consciousness: Some(Acvpu::Alert),
            temperature: Some(temp(368)),
        };
        // Scale 2: SpO2 90 → 0, oxygen → 2. Total 2, Low.
        let news = score(&v);
        assert_eq!(news.scores.spo2, Some(0));
        assert_eq!(news.total, 2);
        assert_eq!(news.band, ClinicalRisk::Low);
        // Scale 1: SpO2 90 → 3, oxygen → 2. Total 5, Medium.
        let news = score(&Vitals {
            spo2_scale: Scale1,
            ..v
        });
        assert_eq!(news.scores.spo2, Some(3));
        assert_eq!(news.total, 5);
        assert_eq!(news.band, ClinicalRisk::Medium);
    }

    #[test]
    fn worked_example_septic_patient_is_high() {
        // RR 26 → 3, SpO2 93 on air (Scale 1) → 2, air → 0, SBP 98 → 2, pulse 118 → 2,
        // alert → 0, 39.2 °C → 2. Total 11.
        let v = Vitals::from_json(
            r#"{"rr":26,"spo2":93,"o2":false,"sbp":98,"pulse":118,"acvpu":"A","temp":39.2}"#,
        )
        .unwrap();
        let news = score(&v);
        assert_eq!(
            news.scores.to_array(),
            [
                Some(3),
                Some(2),
                Some(0),
                Some(2),
                Some(2),
                Some(0),
                Some(2)
            ]
        );
        assert_eq!(news.total, 11);
        assert_eq!(news.band, ClinicalRisk::High);
    }

    #[test]
    fn responses_follow_the_rcp_table() {
        let table: &[(Response, &str)] = &[
            (Response::Routine, "Minimum 12-hourly"),
            (Response::NurseAssessment, "Minimum 4–6-hourly"),
            (Response::UrgentWardBased, "Minimum 1-hourly"),
            (Response::Urgent, "Minimum 1-hourly"),
            (Response::Emergency, "Continuous monitoring of vital signs"),
        ];
        for &(r, monitoring) in table {
            assert_eq!(r.monitoring(), monitoring);
            assert!(!r.action().is_empty());
        }
        assert_eq!(Response::Routine.summary(), "Minimum 12-hourly monitoring");
        assert!(
            Response::NurseAssessment
                .action()
                .contains("registered nurse")
        );
        assert!(
            Response::UrgentWardBased
                .action()
                .contains("inform medical team")
        );
        assert!(Response::Urgent.action().contains("immediately inform"));
        assert!(Response::Emergency.action().contains("critical care"));
    }

    // --- partial sets -----------------------------------------------------------------------

    #[test]
    fn nothing_recorded_is_partial_total_0() {
        let news = score(&Vitals::default());
        assert_eq!(news.scores, Scores::default());
        assert_eq!(news.total, 0);
        assert!(!news.complete);
    }

    #[test]
    fn incomplete_set_is_marked_partial() {
        // RR 25 → 3, pulse 95 → 1; five parameters missing. Partial total 4.
        let news = score(&Vitals {
            respiratory_rate: Some(25),
            pulse: Some(95),
            ..Vitals::default()
        });
        assert_eq!(news.total, 4);
        assert!(!news.complete);
        assert_eq!(news.scores.spo2, None);
        assert_eq!(news.scores.temperature, None);
        assert_eq!(news.band, ClinicalRisk::LowMedium);
        // Six of seven is still partial.
        let news = score(&Vitals {
            temperature: None,
            ..normal()
        });
        assert!(!news.complete);
        assert_eq!(news.scores.temperature, None);
    }

    #[test]
    fn scale_2_high_saturation_without_air_or_oxygen_is_partial() {
        let news = score(&Vitals {
            spo2: Some(95),
            spo2_scale: Scale2,
            on_oxygen: None,
            ..normal()
        });
        assert_eq!(news.scores.spo2, None);
        assert_eq!(news.scores.air_or_oxygen, None);
        assert!(!news.complete);
    }

    // --- validation -------------------------------------------------------------------------

    #[test]
    fn accepted_range_edges_pass_check() {
        for v in [
            Vitals {
                respiratory_rate: Some(1),
                spo2: Some(50),
                systolic_bp: Some(40),
                pulse: Some(20),
                temperature: Some(temp(250)),
                ..normal()
            },
            Vitals {
                respiratory_rate: Some(80),
                spo2: Some(100),
                systolic_bp: Some(300),
                pulse: Some(250),
                temperature: Some(temp(450)),
                ..normal()
            },
            Vitals::default(),
        ] {
            assert_eq!(v.check(), Ok(()), "{v:?}");
        }
    }

    #[test]
    fn impossible_values_are_errors_naming_parameter_value_and_range() {
        let table: &[(Vitals, Field, &str)] = &[
            (
                Vitals {
                    respiratory_rate: Some(0),
                    ..normal()
                },
                Field::RespiratoryRate,
                "respiratory rate 0 breaths/min is not possible: accepted 1–80 breaths/min",
            ),
            (
                Vitals {
                    respiratory_rate: Some(81),
                    ..normal()
                },
                Field::RespiratoryRate,
                "respiratory rate 81 breaths/min is not possible: accepted 1–80 breaths/min",
            ),
            (
                Vitals {
                    spo2: Some(49),
                    ..normal()
                },
                Field::SpO2,
                "SpO2 49% is not possible: accepted 50–100%",
            ),
            (
                Vitals {
                    spo2: Some(101),
                    ..normal()
                },
                Field::SpO2,
                "SpO2 101% is not possible: accepted 50–100%",
            ),
            (
                Vitals {
                    systolic_bp: Some(39),
                    ..normal()
                },
                Field::SystolicBp,
                "systolic blood pressure 39 mmHg is not possible: accepted 40–300 mmHg",
            ),
            (
                Vitals {
                    systolic_bp: Some(301),
                    ..normal()
                },
                Field::SystolicBp,
                "systolic blood pressure 301 mmHg is not possible: accepted 40–300 mmHg",
            ),
            (
                Vitals {
                    pulse: Some(19),
                    ..normal()
                },
                Field::Pulse,
                "pulse 19 beats/min is not possible: accepted 20–250 beats/min",
            ),
            (
                Vitals {
                    pulse: Some(251),
                    ..normal()
                },
                Field::Pulse,
                "pulse 251 beats/min is not possible: accepted 20–250 beats/min",
            ),
            (
                Vitals {
                    temperature: Some(temp(249)),
                    ..normal()
                },
                Field::Temperature,
                "temperature 24.9 °C is not possible: accepted 25.0–45.0 °C",
            ),
            (
                Vitals {
                    temperature: Some(temp(451)),
                    ..normal()
                },
                Field::Temperature,
                "temperature 45.1 °C is not possible: accepted 25.0–45.0 °C",
            ),
        ];
        for (v, field, message) in table {
            let errors = v.check().unwrap_err();
            assert_eq!(errors.len(), 1, "{errors:?}");
            assert_eq!(errors[0].field(), Some(*field));
            assert_eq!(errors[0].to_string(), *message);
        }
    }

    #[test]
    fn check_reports_every_impossible_value_in_chart_order() {
        let v = Vitals {
            respiratory_rate: Some(0),
            pulse: Some(300),
            temperature: Some(temp(-5)),
            ..normal()
        };
        let fields: Vec<_> = v
            .check()
            .unwrap_err()
            .iter()
            .map(|e| e.field().unwrap())
            .collect();
        assert_eq!(
            fields,
            [Field::RespiratoryRate, Field::Pulse, Field::Temperature]
        );
    }

    // --- the JSON form ----------------------------------------------------------------------

    #[test]
    fn json_from_the_command_line_reads_every_field() {
        let v = Vitals::from_json(
            r#"{"rr":18,"spo2":96,"scale":1,"o2":false,"sbp":120,"pulse":80,"acvpu":"A","temp":37.1}"#,
        )
        .unwrap();
        assert_eq!(
            v,
            Vitals {
                respiratory_rate: Some(18),
                spo2: Some(96),
                spo2_scale: Scale1,
                on_oxygen: Some(Air),
                systolic_bp: Some(120),
                pulse: Some(80),
                consciousness: Some(Acvpu::Alert),
                temperature: Some(temp(371)),
            }
        );
        let news = score(&v);
        assert_eq!(news.total, 0);
        assert!(news.complete);
    }

    #[test]
    fn json_reads_scale_2_oxygen_and_every_acvpu_letter() {
        let v = Vitals::from_json(r#"{"spo2":94,"scale":2,"o2":true}"#).unwrap();
        assert_eq!(v.spo2_scale, Scale2);
        assert_eq!(v.on_oxygen, Some(Oxygen));
        // Scale 2, 94% on oxygen → 1; oxygen → 2. Total 3.
        assert_eq!(score(&v).total, 3);
        let table: &[(&str, Acvpu)] = &[
            ("A", Acvpu::Alert),
            ("C", Acvpu::NewConfusion),
            ("V", Acvpu::Voice),
            ("P", Acvpu::Pain),
            ("U", Acvpu::Unresponsive),
        ];
        for &(letter, level) in table {
            let v = Vitals::from_json(&format!(r#"{{"acvpu":"{letter}"}}"#)).unwrap();
            assert_eq!(v.consciousness, Some(level));
        }
    }

    #[test]
    fn json_absent_and_null_fields_are_not_recorded() {
        let v = Vitals::from_json(r#"{"rr":18,"spo2":null,"temp":null,"o2":null}"#).unwrap();
        assert_eq!(
            v,
            Vitals {
                respiratory_rate: Some(18),
                ..Vitals::default()
            }
        );
        assert_eq!(Vitals::from_json("{}").unwrap(), Vitals::default());
    }

    #[test]
    fn json_unknown_field_is_an_error_naming_it() {
        let errors = Vitals::from_json(r#"{"rr":18,"heart_rate":80}"#).unwrap_err();
        assert_eq!(
            errors,
            [VitalsError::UnknownField {
                field: "heart_rate".into()
            }]
        );
        assert!(errors[0].to_string().contains("`heart_rate`"));
    }

    #[test]
    fn json_wrong_types_are_errors_naming_the_field() {
        let table: &[(&str, Field)] = &[
            (r#"{"rr":"18"}"#, Field::RespiratoryRate),
            (r#"{"rr":18.5}"#, Field::RespiratoryRate),
            (r#"{"spo2":true}"#, Field::SpO2),
            (r#"{"scale":3}"#, Field::SpO2Scale),
            (r#"{"scale":"2"}"#, Field::SpO2Scale),
            (r#"{"o2":"yes"}"#, Field::AirOrOxygen),
            (r#"{"sbp":[120]}"#, Field::SystolicBp),
            (r#"{"pulse":{}}"#, Field::Pulse),
            (r#"{"acvpu":"X"}"#, Field::Consciousness),
            (r#"{"acvpu":"alert"}"#, Field::Consciousness),
            (r#"{"temp":37.15}"#, Field::Temperature),
            (r#"{"temp":"37.1"}"#, Field::Temperature),
        ];
        for &(json, field) in table {
            let errors = Vitals::from_json(json).unwrap_err();
            assert_eq!(errors.len(), 1, "{json}: {errors:?}");
            assert!(
                matches!(errors[0], VitalsError::Invalid { field: f, .. } if f == field),
                "{json}: {errors:?}"
            );
            assert!(
                errors[0]
                    .to_string()
                    .starts_with(&format!("`{}`", field.json_name())),
                "{}",
                errors[0]
            );
        }
    }

    #[test]
    fn json_impossible_numbers_are_range_errors_even_beyond_the_type() {
        let table: &[(&str, Field, &str)] = &[
            (r#"{"rr":0}"#, Field::RespiratoryRate, "0 breaths/min"),
            (r#"{"rr":-1}"#, Field::RespiratoryRate, "-1 breaths/min"),
            (
                r#"{"rr":70000}"#,
                Field::RespiratoryRate,
                "70000 breaths/min",
            ),
            (r#"{"spo2":300}"#, Field::SpO2, "300%"),
            (r#"{"spo2":101}"#, Field::SpO2, "101%"),
            (r#"{"sbp":301}"#, Field::SystolicBp, "301 mmHg"),
            (r#"{"pulse":19}"#, Field::Pulse, "19 beats/min"),
            (r#"{"temp":45.1}"#, Field::Temperature, "45.1 °C"),
            (r#"{"temp":98.6}"#, Field::Temperature, "98.6 °C"),
            (r#"{"temp":5000}"#, Field::Temperature, "5000 °C"),
        ];
        for &(json, field, value) in table {
            let errors = Vitals::from_json(json).unwrap_err();
            assert_eq!(errors.len(), 1, "{json}: {errors:?}");
            match &errors[0] {
                VitalsError::OutOfRange {
                    field: f,
                    value: v,
                    accepted,
                } => {
                    assert_eq!(*f, field, "{json}");
                    assert_eq!(v, value, "{json}");
                    assert_eq!(*accepted, field.accepted());
                }
                other => panic!("{json}: {other:?}"),
            }
        }
    }

    #[test]
    fn json_reports_every_problem_at_once() {
        let errors = Vitals::from_json(r#"{"rr":0,"spo2":"x","bp":120,"temp":37.1,"pulse":300}"#)
            .unwrap_err();
        assert_eq!(errors.len(), 4, "{errors:?}");
    }

    #[test]
    fn json_that_is_not_an_object_is_an_error() {
        assert_eq!(
            Vitals::from_json("[1,2]").unwrap_err(),
            [VitalsError::NotAnObject { found: "an array" }]
        );
        assert!(matches!(
            Vitals::from_json("{rr:18}").unwrap_err()[..],
            [VitalsError::NotJson { .. }]
        ));
    }

    #[test]
    fn serde_round_trips_the_json_form() {
        let v = Vitals {
            spo2_scale: Scale2,
            on_oxygen: Some(Oxygen),
            consciousness: Some(Acvpu::NewConfusion),
            ..normal()
        };
        let json = serde_json::to_string(&v).unwrap();
        assert_eq!(
            json,
            r#"{"rr":16,"spo2":97,"scale":2,"o2":true,"sbp":125,"pulse":72,"acvpu":"C","temp":36.8}"#
        );
        assert_eq!(Vitals::from_json(&json).unwrap(), v);
        assert_eq!(serde_json::from_str::<Vitals>(&json).unwrap(), v);
        // Unrecorded fields are left out.
        assert_eq!(
            serde_json::to_string(&Vitals::default()).unwrap(),
            r#"{"scale":1}"#
        );
        // Deserialize names an unknown field too.
        let err = serde_json::from_str::<Vitals>(r#"{"resp":18}"#).unwrap_err();
        assert!(err.to_string().contains("`resp`"), "{err}");
        // And News2 round-trips.
        let news = score(&v);
        let back: News2 = serde_json::from_str(&serde_json::to_string(&news).unwrap()).unwrap();
        assert_eq!(back, news);
    }

    #[test]
    fn temperature_from_celsius_is_exact_to_a_tenth() {
        let table: &[(f64, Option<i16>)] = &[
            (35.0, Some(350)),
            (35.1, Some(351)),
            (36.0, Some(360)),
            (36.1, Some(361)),
            (38.0, Some(380)),
            (38.1, Some(381)),
            (39.0, Some(390)),
            (39.1, Some(391)),
            (37.0, Some(370)),
            (-0.5, Some(-5)),
            (37.15, None),
            (36.05, None),
            (f64::NAN, None),
            (f64::INFINITY, None),
            (1e6, None),
        ];
        for &(c, tenths) in table {
            assert_eq!(
                Temperature::from_celsius(c).map(Temperature::tenths),
                tenths,
                "{c}"
            );
        }
        assert_eq!(temp(371).to_string(), "37.1 °C");
        assert_eq!(temp(-5).to_string(), "-0.5 °C");
        assert_eq!(temp(350).celsius(), 35.0);
    }
}
