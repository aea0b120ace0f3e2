//! Sharing agreements and what they let a role see.
//!
//! An [`Agreement`] is what the practices that own the data signed with a service: which
//! practices' patients it covers, which roles may see them, which sections (each with an
//! optional look-back window) and which code filters apply. Several run side by side; a user
//! sees the **union** of the agreements that cover the patient's practice and the user's role.
//!
//! [`evaluate`] decides one resource:
//! 1. No applicable agreement (practice and role) → [`Decision::NotShared`].
//! 2. Patient, Organization and Practitioner → [`Decision::Visible`] (the banner needs them).
//!    Unknown resource types → `NotShared` (least data).
//! 3. The resource's section must be shared by an applicable agreement, and its recorded date
//!    must fall inside that share's look-back window (an undated item is outside any window).
//!    A share of [`Section::Summary`] also admits what the summary shows: active problems,
//!    current medications, allergies and active alerts. Otherwise → `NotShared` (not counted:
//!    the device is not told about sections it was never offered).
//! 4. What every agreement withholds ([`sensitive::always_withheld`]): anything in the
//!    [`ExclusionSets`] given (the RCGP sets, by any coding anywhere in the resource or by a
//!    text naming a set's term) and items confidential at source (meta.security R/V on the
//!    resource or on a contained resource) → `Withheld(section)`, always, whatever the
//!    agreements say.
//! 5. Code filters: the item is visible when at least one agreement that admits it in step 3
//!    also passes it: its `exclude_codes` hold none of the item's codes, and its
//!    `include_codes` (when set) hold at least one. Otherwise → `Withheld(section)`. The
//!    item's codes are the SNOMED ids of **every** coding in it ([`crate::codes::extract`]:
//!    main code, values, components, medication and contained resources, reasons, category,
//!    body site, ...), systems normalised (SNOMED in any spelling, dm+d, Read v2 and CTV3
//!    through the shipped map). An item with no SNOMED id (text only, local codes only)
//!    never passes an include-only filter: least data, it is withheld and counted.
//!    **Except allergies and alerts** (sections `allergies` and `alerts`): an include-only
//!    list never withholds them, since a podiatrist who cannot see a penicillin allergy or a
//!    violence alert is less safe, not better governed (hazard H3). Exclude lists, the
//!    exclusion sets and confidentiality still withhold them like anything else.
//!
//! The exclusion sets are a parameter so that a server holding loaded sets passes them;
//! [`ExclusionSets::shipped_ref`] is the floor.
//!
//! # Doorstep notes
//!
//! A note written through Doorstep (resources tagged as notes, [`Section::Notes`]) is seen by
//! [`evaluate_for_service`]:
//! - by users of **the service that wrote it** (its [`crate::writeback::note_origin`]), for any
//!   patient an agreement covers for them: the author gets its delivery state back and the
//!   team sees the team's notes, whether or not their agreements share `notes`, and without
//!   the RCGP and code filters (the team wrote it);
//! - by **other services** only as above, step by step: an agreement that shares the `notes`
//!   section ("notes from other services"), its look-back, the RCGP exclusion sets and its
//!   code filters. A share of the summary never admits a note's items (a problem coded in a
//!   note is not the practice's problem list).
//!
//! Code filters match SNOMED CT ids (and dm+d ids, which are SNOMED ids) exactly; there is no
//! subsumption without a terminology server, so include lists must name the concepts used.

use std::collections::BTreeSet;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

pub use crate::agreement_file::{AgreementFileError, FieldError, parse_agreement_file};
use crate::codes;
use crate::fhir::{Resource, ResourceType};
use crate::section::Section;
pub use crate::sensitive;
pub use crate::valueset::ExclusionSets;
use crate::views::{is_active_alert, is_active_problem, is_current_medication};
use crate::writeback::note_origin;

/// One section an agreement shares, with an optional look-back window in days.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SectionShare {
    pub section: Section,
    #[serde(default)]
    pub lookback_days: Option<u32>,
}

/// A data sharing agreement between member practices and a receiving service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agreement {
    pub id: String,
    pub name: String,
    /// The receiving service ("Riverside District Nursing").
    pub service: String,
    /// ODS codes of the participating practices: their patients are covered.
    pub practices: Vec<String>,
    /// Role codes allowed (`gp`, `nurse`, `paramedic`, ...).
    pub roles: Vec<String>,
    pub sections: Vec<SectionShare>,
    /// SNOMED include-only filter: when set, only items with one of these codes are shown.
    #[serde(default)]
    pub include_codes: Option<Vec<String>>,
    /// SNOMED codes never shown under this agreement (on top of the RCGP sets).
    #[serde(default)]
    pub exclude_codes: Vec<String>,
    pub max_offline_hours: u32,
    /// Hours after which a record not refreshed from the server is shown as out of date (in
    /// words and colour in the banner); it is still shown up to `max_offline_hours`.
    #[serde(default = "default_stale_after_hours")]
    pub stale_after_hours: u32,
    pub idle_lock_minutes: u32,
    pub retention_days: u32,
    /// Why the data is shared ("Direct care of patients on the district nursing caseload").
    #[serde(default)]
    pub purpose: String,
    /// The lawful basis the practices relied on (UK GDPR Article 6(1)(e) and 9(2)(h): direct
    /// care).
    #[serde(default)]
    pub legal_basis: String,
    /// Whether the service's clinicians may use break-glass for a patient not on their list.
    #[serde(default)]
    pub emergency_access: bool,
    /// Whose lists a user receives: their own entries (caseload, session, incidents) or also
    /// those of their team.
    #[serde(default)]
    pub lists: ListScope,
    /// Counts up at each change (an administrator's update makes the next version).
    #[serde(default = "first_version")]
    pub version: u32,
    /// The first day the agreement is in force (`None`: since it was made).
    #[serde(default)]
    pub valid_from: Option<NaiveDate>,
    /// The day it was retired: from then on it covers no one.
    #[serde(default)]
    pub retired: Option<NaiveDate>,
}

fn first_version() -> u32 {
    1
}

/// Whose list entries an agreement gives a user.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ListScope {
    /// Only the user's own entries (and the service's shared lists, such as a caseload).
    #[default]
    Own,
    /// The entries of the user's team too.
    Team,
}

/// A record older than this is out of date unless the agreement says otherwise.
pub const DEFAULT_STALE_AFTER_HOURS: u32 = 24;

/// Is a record the device last had from the server at `as_of` out of date at `now`, under
/// the agreements' `stale_after_hours`? Exactly the threshold is not yet.
pub fn is_out_of_date(
    as_of: chrono::DateTime<chrono::Utc>,
    now: chrono::DateTime<chrono::Utc>,
    stale_after_hours: u32,
) -> bool {
    now - as_of > chrono::Duration::hours(i64::from(stale_after_hours))
}

fn default_stale_after_hours() -> u32 {
    DEFAULT_STALE_AFTER_HOURS
}

impl Default for Agreement {
    /// An empty agreement (covers no one, shares nothing): the base of struct literals and
    /// of the administrator's files, which name what they share.
    fn default() -> Agreement {
        Agreement {
            id: String::new(),
            name: String::new(),
            service: String::new(),
            practices: Vec::new(),
            roles: Vec::new(),
            sections: Vec::new(),
            include_codes: None,
            exclude_codes: Vec::new(),
            max_offline_hours: 72,
            stale_after_hours: DEFAULT_STALE_AFTER_HOURS,
            idle_lock_minutes: 5,
            retention_days: 30,
            purpose: String::new(),
            legal_basis: String::new(),
            emergency_access: false,
            lists: ListScope::Own,
            version: first_version(),
            valid_from: None,
            retired: None,
        }
    }
}

impl Agreement {
    /// In force on `today`: on or after `valid_from` and before `retired`.
    pub fn in_force(&self, today: NaiveDate) -> bool {
        self.valid_from.is_none_or(|d| d <= today) && self.retired.is_none_or(|d| today < d)
    }

    /// True when the agreement covers patients of `practice_ods` for users holding `role`.
    /// ODS codes and roles compare case-insensitively.
    pub fn applies(&self, practice_ods: &str, role: &str) -> bool {
        self.practices
            .iter()
            .any(|p| p.eq_ignore_ascii_case(practice_ods))
            && self.roles.iter().any(|r| r.eq_ignore_ascii_case(role))
    }

    fn share(&self, section: Section) -> Option<&SectionShare> {
        self.sections.iter().find(|s| s.section == section)
    }

    /// `codes` are the item's SNOMED ids; the agreement's lists are compared trimmed. An
    /// include-only list narrows what a service sees of the record, never its safety items
    /// (`safety_item`: allergies and alerts), which pass it whatever their codes.
    fn passes_code_filters(&self, codes: &BTreeSet<String>, safety_item: bool) -> bool {
        if self.exclude_codes.iter().any(|c| codes.contains(c.trim())) {
            return false;
        }
        match &self.include_codes {
            None => true,
            Some(_) if safety_item => true,
            Some(include) => include.iter().any(|c| codes.contains(c.trim())),
        }
    }
}

/// What an agreement evaluation decided for one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Send it.
    Visible,
    /// Shared section, but this item is held back (RCGP set, confidential, code filter):
    /// counted in the section's withheld count.
    Withheld(Section),
    /// Not offered at all (no agreement, section not shared, outside look-back): not counted.
    NotShared,
}

/// True when some agreement covers `practice_ods` for `role`.
pub fn covers(agreements: &[Agreement], practice_ods: &str, role: &str) -> bool {
    agreements.iter().any(|a| a.applies(practice_ods, role))
}

fn within(share: &SectionShare, recorded: Option<NaiveDate>, today: NaiveDate) -> bool {
    match share.lookback_days {
        None => true,
        Some(days) => match recorded {
            None => false,
            Some(d) => (today - d).num_days() <= i64::from(days),
        },
    }
}

/// True when the summary shows this item, so a share of the summary admits it.
fn in_summary(resource: &Resource, today: NaiveDate) -> bool {
    match resource.resource_type {
        ResourceType::Condition => is_active_problem(resource),
        ResourceType::MedicationRequest | ResourceType::MedicationStatement => {
            is_current_medication(resource, today)
        }
        ResourceType::AllergyIntolerance => true,
        ResourceType::Flag => is_active_alert(resource),
        _ => false,
    }
}

/// Decides one resource for one user (see the module doc for the rules, in order).
pub fn evaluate(
    resource: &Resource,
    practice_ods: &str,
    role: &str,
    agreements: &[Agreement],
    sets: &ExclusionSets,
    today: NaiveDate,
) -> Decision {
    let applicable: Vec<&Agreement> = agreements
        .iter()
        .filter(|a| a.applies(practice_ods, role))
        .collect();
    if applicable.is_empty() {
        return Decision::NotShared;
    }
    let Some(section) = resource.section() else {
        return match resource.resource_type {
            ResourceType::Patient | ResourceType::Organization | ResourceType::Practitioner => {
                Decision::Visible
            }
            _ => Decision::NotShared,
        };
    };
    let recorded = resource.recorded_date();
    // A note's Condition is not the practice's problem list: only a share of notes admits it.
    let summary_item = section != Section::Notes && in_summary(resource, today);
    let admitting: Vec<&Agreement> = applicable
        .into_iter()
        .filter(|a| {
            let direct = a.share(section).is_some_and(|s| within(s, recorded, today));
            let via_summary = summary_item
                && a.share(Section::Summary)
                    .is_some_and(|s| within(s, recorded, today));
            direct || via_summary
        })
        .collect();
    if admitting.is_empty() {
        return Decision::NotShared;
    }
    let found = codes::extract(resource);
    if sensitive::always_withheld_found(resource, &found, sets) {
        return Decision::Withheld(section);
    }
    let codes = sets.snomed_ids(&found);
    let safety_item = matches!(section, Section::Allergies | Section::Alerts);
    if admitting
        .iter()
        .any(|a| a.passes_code_filters(&codes, safety_item))
    {
        Decision::Visible
    } else {
        Decision::Withheld(section)
    }
}

/// [`evaluate`] for a user of service `service_id`: a Doorstep note written by that service
/// is visible to its users wherever an agreement covers the patient for them (see "Doorstep
/// notes" in the module doc); everything else is decided by [`evaluate`].
pub fn evaluate_for_service(
    resource: &Resource,
    practice_ods: &str,
    role: &str,
    service_id: &str,
    agreements: &[Agreement],
    sets: &ExclusionSets,
    today: NaiveDate,
) -> Decision {
    if resource.is_note()
        && note_origin(resource).is_some_and(|o| o.service_id == service_id)
        && covers(agreements, practice_ods, role)
    {
        return Decision::Visible;
    }
    evaluate(resource, practice_ods, role, agreements, sets, today)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_record_is_out_of_date_one_second_past_the_threshold() {
        use chrono::TimeZone;
        let as_of = chrono::Utc.with_ymd_and_hms(2026, 12, 1, 8, 0, 0).unwrap();
        let at = |secs: i64| as_of + chrono::Duration::seconds(secs);
        assert!(!super::is_out_of_date(as_of, at(12 * 3600), 12));
        assert!(super::is_out_of_date(as_of, at(12 * 3600 + 1), 12));
        // A clock behind the server's is not out of date.
        assert!(!super::is_out_of_date(as_of, at(-3600), 12));
    }

    use super::*;
    use crate::coding::SNOMED;
    use crate::fhir::CONFIDENTIALITY_SYSTEM;
    use serde_json::{Value, json};

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 1, 15).unwrap()
    }

    fn sets() -> &'static ExclusionSets {
        ExclusionSets::shipped_ref()
    }

    fn agreement(sections: &[(Section, Option<u32>)]) -> Agreement {
        Agreement {
            id: "dn".into(),
            name: "District nursing".into(),
            service: "Riverside District Nursing".into(),
            practices: vec!["A81001".into()],
            roles: vec!["nurse".into()],
            sections: sections
                .iter()
                .map(|&(section, lookback_days)| SectionShare {
                    section,
                    lookback_days,
                })
                .collect(),
            include_codes: None,
            exclude_codes: vec![],
            max_offline_hours: 72,
            stale_after_hours: DEFAULT_STALE_AFTER_HOURS,
            idle_lock_minutes: 5,
            retention_days: 30,
            ..Agreement::default()
        }
    }

    fn condition(code: &str, recorded: &str, status: &str) -> Resource {
        Resource::from_json(
            json!({"resourceType": "Condition", "id": format!("c{code}"),
            "clinicalStatus": {"coding": [{"code": status}]},
            "code": {"coding": [{"system": SNOMED, "code": code}]},
            "subject": {"reference": "Patient/p1"}, "recordedDate": recorded}),
        )
        .unwrap()
    }

    fn with(mut r: Resource, f: impl FnOnce(&mut Value)) -> Resource {
        f(&mut r.json);
        r
    }

    #[test]
    fn covers_needs_practice_and_role() {
        let a = [agreement(&[(Section::Problems, None)])];
        assert!(covers(&a, "A81001", "nurse"));
        assert!(covers(&a, "a81001", "Nurse"));
        assert!(!covers(&a, "B82002", "nurse"));
        assert!(!covers(&a, "A81001", "podiatrist"));
    }

    #[test]
    fn patient_is_visible_when_covered_and_not_shared_otherwise() {
        let p = Resource::from_json(json!({"resourceType": "Patient", "id": "p1"})).unwrap();
        let a = [agreement(&[])];
        assert_eq!(
            evaluate(&p, "A81001", "nurse", &a, sets(), today()),
            Decision::Visible
        );
        assert_eq!(
            evaluate(&p, "A81001", "gp", &a, sets(), today()),
            Decision::NotShared
        );
    }

    #[test]
    fn unshared_section_is_not_shared_and_not_counted() {
        let a = [agreement(&[(Section::Medications, None)])];
        let c = condition("44054006", "2020-01-01", "active");
        assert_eq!(
            evaluate(&c, "A81001", "nurse", &a, sets(), today()),
            Decision::NotShared
        );
    }

    #[test]
    fn lookback_window_by_recorded_date() {
        let a = [agreement(&[(Section::Problems, Some(365))])];
        let recent = condition("44054006", "2025-06-01", "active");
        let old = condition("38341003", "2020-06-01", "active");
        assert_eq!(
            evaluate(&recent, "A81001", "nurse", &a, sets(), today()),
            Decision::Visible
        );
        assert_eq!(
            evaluate(&old, "A81001", "nurse", &a, sets(), today()),
            Decision::NotShared
        );
    }

    #[test]
    fn rcgp_excluded_is_withheld_even_when_included() {
        let mut a = agreement(&[(Section::Problems, None)]);
        a.include_codes = Some(vec!["105629000".into()]);
        let sti = condition("105629000", "2024-01-01", "resolved");
        assert_eq!(
            evaluate(&sti, "A81001", "nurse", &[a], sets(), today()),
            Decision::Withheld(Section::Problems)
        );
    }

    #[test]
    fn confidential_is_withheld_always() {
        let a = [agreement(&[(Section::Problems, None)])];
        let c = with(condition("35489007", "2024-01-01", "active"), |j| {
            j["meta"] = json!({"security": [{"system": CONFIDENTIALITY_SYSTEM, "code": "R"}]});
        });
        assert_eq!(
            evaluate(&c, "A81001", "nurse", &a, sets(), today()),
            Decision::Withheld(Section::Problems)
        );
    }

    /// Hazard H3: the podiatry agreement's include-only list (diabetes, feet, circulation)
    /// withheld a penicillin allergy and a violence alert, leaving "+2 withheld" in the
    /// banner. Allergies and alerts pass an include-only list; exclude lists and the RCGP
    /// sets still withhold them.
    #[test]
    fn include_only_never_withholds_allergies_or_alerts() {
        let mut a = agreement(&[
            (Section::Problems, None),
            (Section::Allergies, None),
            (Section::Alerts, None),
        ]);
        a.include_codes = Some(vec!["44054006".into()]);
        let penicillin = Resource::from_json(json!({"resourceType": "AllergyIntolerance",
            "id": "al1", "patient": {"reference": "Patient/p1"},
            "code": {"coding": [{"system": SNOMED, "code": "91936005",
                "display": "Allergy to penicillin"}]}}))
        .unwrap();
        let text_only = Resource::from_json(json!({"resourceType": "AllergyIntolerance",
            "id": "al2", "patient": {"reference": "Patient/p1"},
            "code": {"text": "Elastoplast"}}))
        .unwrap();
        let violence = Resource::from_json(json!({"resourceType": "Flag", "id": "f1",
            "status": "active", "subject": {"reference": "Patient/p1"},
            "code": {"coding": [{"system": SNOMED, "code": "225915006",
                "display": "Potentially violent"}]}}))
        .unwrap();
        let copd = condition("13645005", "2020-01-01", "active");
        let agreements = [a.clone()];
        for item in [&penicillin, &text_only, &violence] {
            assert_eq!(
                evaluate(item, "A81001", "nurse", &agreements, sets(), today()),
                Decision::Visible,
                "{}",
                item.json
            );
        }
        assert_eq!(
            evaluate(&copd, "A81001", "nurse", &agreements, sets(), today()),
            Decision::Withheld(Section::Problems)
        );
        // An exclude list still applies to them.
        a.exclude_codes = vec!["91936005".into()];
        assert_eq!(
            evaluate(&penicillin, "A81001", "nurse", &[a], sets(), today()),
            Decision::Withheld(Section::Allergies)
        );
    }

    #[test]
    fn include_only_filter_withholds_other_codes() {
        let mut a = agreement(&[(Section::Problems, None)]);
        a.include_codes = Some(vec!["44054006".into(), "396275006".into()]);
        let a = [a];
        let diabetes = condition("44054006", "2020-01-01", "active");
        let copd = condition("13645005", "2020-01-01", "active");
        assert_eq!(
            evaluate(&diabetes, "A81001", "nurse", &a, sets(), today()),
            Decision::Visible
        );
        assert_eq!(
            evaluate(&copd, "A81001", "nurse", &a, sets(), today()),
            Decision::Withheld(Section::Problems)
        );
    }

    #[test]
    fn exclude_filter_withholds_its_codes() {
        let mut a = agreement(&[(Section::Problems, None)]);
        a.exclude_codes = vec!["35489007".into()];
        let depression = condition("35489007", "2020-01-01", "active");
        assert_eq!(
            evaluate(&depression, "A81001", "nurse", &[a], sets(), today()),
            Decision::Withheld(Section::Problems)
        );
    }

    #[test]
    fn union_of_agreements_any_one_admitting_wins() {
        let mut podiatry = agreement(&[(Section::Problems, None)]);
        podiatry.include_codes = Some(vec!["44054006".into()]);
        let mut hub = agreement(&[(Section::Problems, None)]);
        hub.id = "hub".into();
        let copd = condition("13645005", "2020-01-01", "active");
        assert_eq!(
            evaluate(
                &copd,
                "A81001",
                "nurse",
                &[podiatry.clone(), hub],
                sets(),
                today()
            ),
            Decision::Visible
        );
        assert_eq!(
            evaluate(&copd, "A81001", "nurse", &[podiatry], sets(), today()),
            Decision::Withheld(Section::Problems)
        );
    }

    #[test]
    fn summary_share_admits_active_problems_only() {
        let a = [agreement(&[(Section::Summary, None)])];
        let active = condition("44054006", "2020-01-01", "active");
        let resolved = condition("68566005", "2020-01-01", "resolved");
        assert_eq!(
            evaluate(&active, "A81001", "nurse", &a, sets(), today()),
            Decision::Visible
        );
        assert_eq!(
            evaluate(&resolved, "A81001", "nurse", &a, sets(), today()),
            Decision::NotShared
        );
    }

    #[test]
    fn unknown_types_are_not_shared() {
        let d = Resource::from_json(json!({"resourceType": "Device", "id": "d1"})).unwrap();
        let a = [agreement(&[(Section::Problems, None)])];
        assert_eq!(
            evaluate(&d, "A81001", "nurse", &a, sets(), today()),
            Decision::NotShared
        );
    }

    /// The resources of a note written by district nursing for a patient of A81001, with a
    /// coded problem of `problem_code`.
    fn note_resources(problem_code: &str) -> Vec<Resource> {
        use crate::writeback::*;
        let at = chrono::DateTime::parse_from_rfc3339("2026-01-14T10:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        writeback_resources(&AcceptedNote {
            id: "n1".into(),
            patient_id: "p1".into(),
            author: NoteAuthor {
                user_id: "u1".into(),
                display_name: "Nia Evans".into(),
            },
            origin: NoteOrigin {
                note_id: "n1".into(),
                service_id: "riverside-dn".into(),
                service_name: "Riverside District Nursing".into(),
                agreements: vec!["dn".into()],
            },
            encounter_class: EncounterClass::HomeHealth,
            signed_at: at,
            text: "Seen at home".into(),
            vitals: None,
            problem: Some(Problem {
                code: problem_code.into(),
                display: "a problem".into(),
            }),
            replaces: None,
            delivery: NoteDelivery {
                state: DeliveryState::Accepted,
                practice: Practice {
                    ods: "A81001".into(),
                    name: "Riverside Surgery".into(),
                },
                at,
                reason: None,
            },
        })
    }

    #[test]
    fn the_authoring_service_sees_its_notes_without_a_notes_share() {
        // District nursing shares problems only, not notes: its own notes still come back.
        let dn = [agreement(&[(Section::Problems, None)])];
        for r in note_resources("105629000") {
            assert_eq!(
                evaluate_for_service(&r, "A81001", "nurse", "riverside-dn", &dn, sets(), today()),
                Decision::Visible,
                "{}",
                r.reference()
            );
            // Not for a practice no agreement covers for them.
            assert_eq!(
                evaluate_for_service(&r, "B82002", "nurse", "riverside-dn", &dn, sets(), today()),
                Decision::NotShared
            );
        }
    }

    #[test]
    fn other_services_see_notes_only_through_a_notes_share_and_never_rcgp_excluded_items() {
        let mut hub = agreement(&[(Section::Notes, None)]);
        hub.service = "riverside-hub".into();
        hub.roles = vec!["gp".into()];
        let mut ambulance = agreement(&[(Section::Summary, None), (Section::Problems, None)]);
        ambulance.roles = vec!["paramedic".into()];
        let plain = note_resources("44054006");
        for r in &plain {
            assert_eq!(
                evaluate_for_service(
                    r,
                    "A81001",
                    "gp",
                    "riverside-hub",
                    &[hub.clone()],
                    sets(),
                    today()
                ),
                Decision::Visible,
                "{}",
                r.reference()
            );
            // Summary and problems shared, notes not: nothing of the note, not even its
            // active problem, and it is not counted either.
            assert_eq!(
                evaluate_for_service(
                    r,
                    "A81001",
                    "paramedic",
                    "northern-ambulance",
                    &[ambulance.clone()],
                    sets(),
                    today()
                ),
                Decision::NotShared,
                "{}",
                r.reference()
            );
        }
        let sensitive = note_resources("105629000");
        let condition = sensitive
            .iter()
            .find(|r| r.resource_type == ResourceType::Condition)
            .unwrap();
        assert_eq!(
            evaluate_for_service(
                condition,
                "A81001",
                "gp",
                "riverside-hub",
                &[hub],
                sets(),
                today()
            ),
            Decision::Withheld(Section::Notes)
        );
    }

    #[test]
    fn agreement_serde_defaults_filters() {
        let a: Agreement = serde_json::from_value(json!({
            "id": "x", "name": "n", "service": "s", "practices": ["A81001"], "roles": ["gp"],
            "sections": [{"section": "problems"}, {"section": "encounters", "lookback_days": 730}],
            "max_offline_hours": 72, "idle_lock_minutes": 5, "retention_days": 30
        }))
        .unwrap();
        assert_eq!(a.include_codes, None);
        assert!(a.exclude_codes.is_empty());
        assert_eq!(a.sections[1].lookback_days, Some(730));
    }
}
