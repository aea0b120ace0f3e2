//! # doorstep-record: the shared care record, as pure data
//!
//! This crate is Doorstep's domain: what a record *is*, independent of where it is stored or how
//! it travels. The federation server uses it to import bundles from GP systems and to decide
//! what each clinician may see; the device uses it to turn cached resources into the screens of
//! the record. It does no IO at all (no files, no network, no clock: callers pass `today`), so
//! it behaves the same on the server, in the device library and in the wasm32 UI.
//!
//! ## Modules
//!
//! - [`nhs`]: the NHS number (ten digits, Modulus 11 check digit, `999 123 4567` display, the
//!   reserved test range).
//! - [`coding`]: SNOMED CT, dm+d and LOINC codings and concepts; dm+d codes sent under the
//!   SNOMED system are normalised (the rule is in the module doc). The sender's display text is
//!   always kept.
//! - [`fhir`]: the FHIR R4 subset we read. A [`fhir::Resource`] keeps the sender's JSON untouched
//!   (unknown elements and extensions included) plus typed accessors for the index fields
//!   (patient, codes, recorded date, confidentiality, section, source organisation).
//!   [`fhir::parse_bundle`] reads bundles leniently; [`fhir::validate_for_import`] is the strict
//!   gate of the import, whole bundle or nothing, with errors naming the entry, the resource and
//!   the element.
//! - [`news2`]: the National Early Warning Score 2 (RCP, 2017) of a set of vital signs, partial
//!   sets included, with the RCP's risk bands and clinical responses, range checks and the JSON
//!   form a command line passes.
//! - [`problems`]: the local SNOMED CT pick list of problems a note may carry, and the
//!   well-formedness check of a concept id (Verhoeff check digit, partition).
//! - [`Section`]: the record's sections, as agreements share them and tabs show them.
//! - [`agreement`] and [`sensitive`]: sharing agreements and their evaluation per resource,
//!   role and practice; the exclusion sets and confidential items always withheld, and the
//!   redaction of a confidential Patient (banner kept, address and telecom withheld).
//! - [`codes`]: every coded element and every readable text of a resource (contained
//!   resources included), code systems normalised (SNOMED CT in any spelling, dm+d, Read v2,
//!   CTV3): what exclusion and code filters match on.
//! - [`valueset`]: the four RCGP exclusion sets as shipped FHIR R4 ValueSets (codes and
//!   terms), the Read v2 / CTV3 map, [`valueset::ValueSet::from_json`] for sets a server
//!   loads, and [`valueset::ExclusionSets`], which a load extends but never shrinks.
//! - [`views`]: the typed views the screens show (banner, summary, problems, medications,
//!   allergies, alerts, encounters, observation series, immunisations, procedures, documents),
//!   each item with its provenance.
//! - [`writeback`]: an accepted consultation note as FHIR R4 for the patient's registered
//!   practice (Composition, Encounter, vital-sign Observations, NEWS2, Condition), and the
//!   note's delivery state (accepted, received, filed, rejected) on its Composition.
//! - [`synthetic`]: a deterministic synthetic federation (practices, patients, records) as FHIR
//!   R4 bundles, for tests, the demo and benchmarks.
//!
//! ## Rules this crate keeps
//!
//! - **The original is kept.** Resources are stored and forwarded as received; Doorstep adds one
//!   `meta.tag` naming the source organisation ([`fhir::SOURCE_TAG_SYSTEM`]) and nothing else.
//!   Views are derived and rebuilt, never stored as truth.
//! - **Provenance everywhere.** Every item in a view says which organisation it came from (ODS
//!   code and name), when it was recorded and, where known, by whom.
//! - **Least data.** [`agreement::evaluate`] decides per resource: visible, withheld (counted, for
//!   the "items withheld" notice) or not shared at all. RCGP exclusion sets and confidential
//!   items are withheld by every agreement, whatever it says; they match on every coding and
//!   every text in the resource, not only its main code.
//! - **No patient data in errors meant for logs.** [`fhir::ImportError`] names entries, resource
//!   ids and elements, never names or NHS numbers; keep it that way.
//! - **Portable.** Dependencies are serde, serde_json, thiserror and chrono without its clock;
//!   the crate builds for `wasm32-unknown-unknown`.
//!
//! ## Example
//!
//! ```
//! use chrono::NaiveDate;
//! use doorstep_record::fhir::{parse_bundle, validate_for_import};
//! use doorstep_record::synthetic::{FederationSpec, generate};
//! use doorstep_record::views::build_record;
//!
//! let today = NaiveDate::from_ymd_opt(2026, 1, 15).unwrap();
//! let fed = generate(FederationSpec {
//!     seed: 7,
//!     practices: 1,
//!     patients_per_practice: 1,
//!     resources_per_patient: 40,
//!     today,
//! });
//! let bundle = parse_bundle(&fed.bundles[0].to_string()).unwrap();
//! let plan = validate_for_import(&bundle).unwrap();
//! let view = build_record(&plan.resources, today);
//! assert_eq!(view.patient.name_display, fed.patients[0].name_display);
//! assert!(view.patient.nhs_number_display.unwrap().starts_with("999 "));
//! ```

pub mod agreement;
pub mod agreement_file;
pub mod codes;
pub mod coding;
pub mod fhir;
mod json;
pub mod lookalike;
pub mod news2;
pub mod nhs;
pub mod problems;
pub mod section;
pub mod sensitive;
pub mod synthetic;
pub mod trend;
pub mod valueset;
pub mod views;
pub mod writeback;

pub use nhs::{NhsNumber, NhsNumberError};
pub use section::Section;

#[cfg(test)]
mod exclusion_tests;
