//! The demo federation: synthetic practices and patients, five services with their sharing
//! agreements side by side, lists, five clinicians and four staff (`reception.demo`, a
//! receptionist of the first practice; `manager.demo`, the hub's service manager; `lead.demo`,
//! the nursing team's leader; `privacy.demo`, the federation's privacy officer), and a week of hub sessions with bookings (`seed_hub_week`).
//! For the demo and tests only.
//!
//! [`seed`] generates the standard federation (3 practices x 100 patients, about 100 resources
//! each, dated today) with `doorstep_record::synthetic`, imports it through the normal import
//! path, and sets up:
//!
//! | service                        | role       | sections                                            | filters | list | user |
//! |--------------------------------|------------|-----------------------------------------------------|---------|------|------|
//! | Riverside District Nursing     | nurse      | all; documents and encounters of the last 2 years   | RCGP sets | caseload of ~60 (until discharged) | `nurse.demo` |
//! | Riverside Extended Hours Hub   | gp         | all (comprehensive)                                 | RCGP sets | ~20 appointments today and tomorrow (+24 h) | `gp.demo` |
//! | Northern Ambulance Service     | paramedic  | summary, problems, medications, allergies, alerts, observations; encounters of the last 90 days, documents (discharge summaries, letters) of the last year | RCGP sets | ~5 incidents (+24 h) | `para.demo` |
//! | Riverside Out-of-Hours GP      | gp         | summary, problems, medications, allergies, alerts, observations; encounters and documents of the last year | RCGP sets | ~5 calls of the night (+24 h) | `ooh.demo` |
//! | Riverside Community Podiatry   | podiatrist | summary, problems, medications, allergies, alerts, observations, procedures; encounters of the last year | RCGP sets; include only [`PODIATRY_CODES`] (diabetes, arthritis, circulation, feet and legs) | ~6 clinic appointments today and tomorrow (+24 h) | `podiatrist.demo` |
//!
//! Each agreement covers every practice of the federation and states its purpose and legal
//! basis (UK GDPR Article 6(1)(e) and 9(2)(h), direct care). Every agreement withholds the RCGP
//! exclusion sets and items confidential at source; the podiatry agreement's include-only code
//! list also withholds (and counts) everything outside feet, legs, diabetes, arthritis and
//! circulation, so the podiatrist's records show the withheld notice.
//!
//! The users get random passwords (stored as Argon2id hashes) and TOTP secrets; both are
//! written in clear to `DIR/demo-users.json` (owner-only) so the demo and tests can sign in.
//! That file exists for the demo only.
//!
//! [`DemoSpec::leak_markers`] (off in the demo) adds to every patient the leak-probe items of
//! [`doorstep_record::synthetic::add_leak_markers`]: sensitive items in every form the filter
//! must catch, each with a unique marker string (tests only).
//!
//! Seeding is not repeatable into the same directory: a directory that already holds
//! `demo-users.json` or patients is refused with [`DemoError::AlreadySeeded`] (use a fresh
//! directory), so demo credentials never silently change under a running demo.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Duration, NaiveDate, NaiveTime, Utc};
use doorstep_protocol::ListKind;
use doorstep_record::Section;
use doorstep_record::agreement::{Agreement, ListScope, SectionShare, sensitive};
use doorstep_record::fhir::Resource;
use doorstep_record::synthetic::{Federation, FederationSpec, add_leak_markers, generate};
use serde::{Deserialize, Serialize};

use crate::cursor::write_private;
use crate::import::{self, ImportFailure};
use crate::lists::{self, NewListEntry};
use crate::store::{
    self, AuditEvent, DatabaseUrl, ListRow, NewUser, PracticeRow, ServiceRow, Store, StoreError,
};
use crate::totp_key::{self, TotpKey};
use crate::{audit, auth};

/// File of the demo sign-ins in the data directory.
pub const DEMO_USERS_FILE: &str = "demo-users.json";

pub const NURSING_SERVICE: &str = "riverside-dn";
pub const HUB_SERVICE: &str = "riverside-hub";
pub const AMBULANCE_SERVICE: &str = "northern-ambulance";
pub const OOH_SERVICE: &str = "riverside-ooh";
pub const PODIATRY_SERVICE: &str = "riverside-podiatry";
pub const CASELOAD_LIST: &str = "riverside-dn-caseload";
pub const APPOINTMENT_LIST: &str = "riverside-hub-appointments";
pub const INCIDENT_LIST: &str = "northern-ambulance-incidents";
pub const OOH_CALL_LIST: &str = "riverside-ooh-calls";
pub const PODIATRY_CLINIC_LIST: &str = "riverside-podiatry-clinic";
/// The district nursing team whose caseload the nurse works from (the DN agreement shares
/// lists team-wide).
pub const NURSING_TEAM: &str = "riverside-north";
/// The second nursing team (no members in the demo; the team leader transfers to it).
pub const SOUTH_TEAM: &str = "riverside-south";
pub const SOUTH_CASELOAD_LIST: &str = "riverside-dn-caseload-south";

/// The podiatry agreement's include-only SNOMED CT codes: feet and legs, diabetes, arthritis
/// and circulation. Exact ids (no subsumption), so the concepts the records use are named.
pub const PODIATRY_CODES: &[(&str, &str)] = &[
    ("73211009", "Diabetes mellitus"),
    ("44054006", "Type 2 diabetes mellitus"),
    ("46635009", "Type 1 diabetes mellitus"),
    (
        "999791000000106",
        "Haemoglobin A1c level - IFCC standardised",
    ),
    ("69896004", "Rheumatoid arthritis"),
    ("396275006", "Osteoarthritis"),
    ("399957001", "Peripheral arterial disease"),
    ("402863000", "Venous ulcer of lower limb"),
];

/// One demo sign-in, as written to `demo-users.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DemoUser {
    pub username: String,
    pub password: String,
    pub display_name: String,
    pub role: String,
    /// The service's display name ("Riverside District Nursing").
    pub service: String,
    /// Base32.
    pub totp_secret: String,
    /// A receptionist's practice (ODS code).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub practice: Option<String>,
}

/// What [`seed`] made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoSummary {
    pub users: Vec<DemoUser>,
    pub patients: usize,
    pub practices: usize,
}

/// The shape of a demo federation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoSpec {
    pub federation: FederationSpec,
    /// Patients on the district nursing caseload.
    pub caseload: usize,
    /// Hub appointments, half today and half tomorrow.
    pub appointments: usize,
    /// Ambulance incidents of the last hours.
    pub incidents: usize,
    /// Patients (on no list) who opted out of sharing.
    pub dissenting: usize,
    /// Out-of-hours calls of the last hours.
    pub ooh_calls: usize,
    /// Podiatry clinic appointments, half today and half tomorrow.
    pub podiatry: usize,
    /// Add the leak probe's marked sensitive items to every patient (tests only; see
    /// [`doorstep_record::synthetic::add_leak_markers`]).
    pub leak_markers: bool,
}

impl DemoSpec {
    /// The demo: 3 practices x 100 patients of ~100 resources; caseload 60, 20 appointments,
    /// 5 incidents, 5 out-of-hours calls, 6 podiatry appointments.
    pub fn standard(seed: u64, today: NaiveDate) -> DemoSpec {
        DemoSpec {
            federation: FederationSpec {
                seed,
                practices: 3,
                patients_per_practice: 100,
                resources_per_patient: 100,
                today,
            },
            caseload: 60,
            appointments: 20,
            incidents: 5,
            dissenting: 3,
            ooh_calls: 5,
            podiatry: 6,
            leak_markers: false,
        }
    }

    /// A small federation for fast tests: 3 practices x 10 patients of ~40 resources.
    pub fn small(seed: u64, today: NaiveDate) -> DemoSpec {
        DemoSpec {
            federation: FederationSpec {
                seed,
                practices: 3,
                patients_per_practice: 10,
                resources_per_patient: 40,
                today,
            },
            caseload: 8,
            appointments: 4,
            incidents: 2,
            dissenting: 1,
            ooh_calls: 3,
            podiatry: 4,
            leak_markers: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(
        "{0} already holds a federation (demo-users.json or patients); seed into a fresh directory"
    )]
    AlreadySeeded(PathBuf),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("the synthetic bundle of patient {index} was rejected: {source}")]
    Rejected {
        index: usize,
        source: doorstep_record::fhir::ImportError,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Auth(#[from] auth::AuthFailure),
    #[error("{0}")]
    TotpKey(#[from] crate::totp_key::TotpKeyError),
    #[error("the federation has too few patients ({have}) for the lists asked for ({need})")]
    TooFewPatients { have: usize, need: usize },
    #[error("seeding failed: {0}")]
    Internal(String),
}

/// Seed the standard demo federation into `data_dir`, dated today. Blocking; safe to call from
/// inside or outside a tokio runtime (it runs on its own thread).
pub fn seed(data_dir: &Path, seed: u64) -> Result<DemoSummary, DemoError> {
    seed_with(data_dir, &DemoSpec::standard(seed, Utc::now().date_naive()))
}

/// Seed a federation of the given shape into the store under `data_dir`. Blocking, like
/// [`seed`].
pub fn seed_with(data_dir: &Path, spec: &DemoSpec) -> Result<DemoSummary, DemoError> {
    seed_with_database(data_dir, &DatabaseUrl::in_data_dir(data_dir), spec)
}

/// Seed a federation of the given shape into the store `database`; `demo-users.json` goes to
/// `data_dir`. Blocking, like [`seed`].
pub fn seed_with_database(
    data_dir: &Path,
    database: &DatabaseUrl,
    spec: &DemoSpec,
) -> Result<DemoSummary, DemoError> {
    let dir = data_dir.to_path_buf();
    let database = database.clone();
    let spec = spec.clone();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(seed_async(&dir, &database, &spec))
    })
    .join()
    .map_err(|_| DemoError::Internal("the seeding thread panicked".into()))?
}

/// Seed a federation of the given shape into `database` (async).
pub async fn seed_async(
    data_dir: &Path,
    database: &DatabaseUrl,
    spec: &DemoSpec,
) -> Result<DemoSummary, DemoError> {
    let users_path = data_dir.join(DEMO_USERS_FILE);
    if users_path.exists() {
        return Err(DemoError::AlreadySeeded(data_dir.to_path_buf()));
    }
    std::fs::create_dir_all(data_dir)?;
    let store: Arc<dyn Store> = store::open(database).await?;
    if !store.patients().await?.is_empty() {
        return Err(DemoError::AlreadySeeded(data_dir.to_path_buf()));
    }
    let mut federation = generate(&spec.federation);
    if spec.leak_markers {
        add_leak_markers(&mut federation, spec.federation.today);
    }
    // The server that serves this directory seals and opens with the same key file.
    let totp_key = TotpKey::load_or_create(data_dir)?;
    totp_key::adopt(store.as_ref(), &totp_key).await?;
    let summary = seed_store(store.as_ref(), &totp_key, &federation, spec, Utc::now()).await?;
    let json = serde_json::to_vec_pretty(&summary.users)
        .map_err(|e| DemoError::Internal(e.to_string()))?;
    write_private(&users_path, &json)?;
    Ok(summary)
}

/// A tiny deterministic generator (SplitMix64) for choosing list members by seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

const CASELOAD_REASONS: &[&str] = &[
    "Leg ulcer dressing",
    "Insulin administration",
    "Catheter care",
    "Palliative care review",
    "Post-operative wound care",
    "Pressure area care",
    "B12 injection",
    "Compression bandaging",
    "Anticoagulation monitoring",
    "Stoma care",
];

const APPOINTMENT_REASONS: &[&str] = &[
    "Cough for two weeks",
    "Medication review",
    "Blood pressure check",
    "Chest pain, now settled",
    "Rash on arms",
    "Low mood",
    "Back pain",
    "Ear pain",
    "Follow-up of blood results",
    "Shortness of breath on exertion",
];

const OOH_REASONS: &[&str] = &[
    "Fever and confusion overnight",
    "Vomiting since the evening",
    "Breathless lying flat",
    "Catheter blocked",
    "Pain not controlled, palliative",
];

const PODIATRY_REASONS: &[&str] = &[
    "Annual diabetic foot check",
    "Nail care, high-risk foot",
    "Callus on the ball of the foot",
    "Heel pain on walking",
    "Foot ulcer review",
    "Insoles review, arthritic feet",
];

const INCIDENT_REASONS: &[&str] = &[
    "Fall at home",
    "Breathing difficulty",
    "Chest pain",
    "Confusion, family concerned",
    "Collapse in the street",
];

/// Direct care: what every demo agreement relies on.
const DIRECT_CARE: &str = "UK GDPR Article 6(1)(e) (public task) and Article 9(2)(h) (health care): \
     direct care; the common law duty of confidentiality met by implied consent";

fn shares(sections: &[(Section, Option<u32>)]) -> Vec<SectionShare> {
    sections
        .iter()
        .map(|&(section, lookback_days)| SectionShare {
            section,
            lookback_days,
        })
        .collect()
}

/// Agreements of the five demo services, side by side, covering every practice of the
/// federation (see the table in the module doc).
pub fn demo_agreements(practices: &[String]) -> Vec<Agreement> {
    let all = |lookback: &dyn Fn(Section) -> Option<u32>| -> Vec<SectionShare> {
        Section::ALL
            .into_iter()
            .map(|section| SectionShare {
                section,
                lookback_days: lookback(section),
            })
            .collect()
    };
    use Section::*;
    vec![
        Agreement {
            id: "riverside-dn-2026".into(),
            name: "Riverside practices and district nursing".into(),
            service: NURSING_SERVICE.into(),
            practices: practices.to_vec(),
            roles: vec!["nurse".into()],
            sections: all(&|s| match s {
                Documents | Encounters => Some(730),
                _ => None,
            }),
            include_codes: None,
            exclude_codes: vec![],
            max_offline_hours: 72,
            stale_after_hours: 24,
            idle_lock_minutes: 5,
            retention_days: 7,
            purpose: "Direct care of housebound patients on the district nursing caseload: \
                      visits, wound care, medicines and end-of-life care"
                .into(),
            legal_basis: DIRECT_CARE.into(),
            emergency_access: true,
            lists: ListScope::Team,
            ..Agreement::default()
        },
        Agreement {
            id: "riverside-hub-2026".into(),
            name: "Riverside practices and the extended hours hub".into(),
            service: HUB_SERVICE.into(),
            practices: practices.to_vec(),
            roles: vec!["gp".into()],
            sections: all(&|_| None),
            include_codes: None,
            exclude_codes: vec![],
            max_offline_hours: 24,
            stale_after_hours: 12,
            idle_lock_minutes: 5,
            retention_days: 2,
            purpose: "Direct care in evening and weekend GP appointments booked by the \
                      patient's own practice: the comprehensive record a registered GP would see"
                .into(),
            legal_basis: DIRECT_CARE.into(),
            emergency_access: true,
            ..Agreement::default()
        },
        Agreement {
            id: "northern-ambulance-2026".into(),
            name: "Riverside practices and Northern Ambulance Service".into(),
            service: AMBULANCE_SERVICE.into(),
            practices: practices.to_vec(),
            roles: vec!["paramedic".into()],
            sections: shares(&[
                (Summary, None),
                (Problems, None),
                (Medications, None),
                (Allergies, None),
                (Alerts, None),
                (Observations, None),
                (Encounters, Some(90)),
                (Documents, Some(365)),
            ]),
            include_codes: None,
            exclude_codes: vec![],
            max_offline_hours: 12,
            stale_after_hours: 6,
            idle_lock_minutes: 5,
            retention_days: 1,
            purpose: "Emergency care by ambulance crews dispatched to the patient: what is \
                      needed at the scene (medicines, allergies, alerts, recent care and \
                      discharge summaries)"
                .into(),
            legal_basis: DIRECT_CARE.into(),
            emergency_access: true,
            ..Agreement::default()
        },
        Agreement {
            id: "riverside-ooh-2026".into(),
            name: "Riverside practices and the out-of-hours GP service".into(),
            service: OOH_SERVICE.into(),
            practices: practices.to_vec(),
            roles: vec!["gp".into()],
            sections: shares(&[
                (Summary, None),
                (Problems, None),
                (Medications, None),
                (Allergies, None),
                (Alerts, None),
                (Observations, Some(365)),
                (Encounters, Some(365)),
                (Documents, Some(365)),
            ]),
            include_codes: None,
            exclude_codes: vec![],
            max_offline_hours: 12,
            stale_after_hours: 6,
            idle_lock_minutes: 5,
            retention_days: 1,
            purpose: "Urgent care by out-of-hours GPs answering calls and visiting at night: \
                      the summary, current problems and medicines, and the last year's care"
                .into(),
            legal_basis: DIRECT_CARE.into(),
            emergency_access: true,
            ..Agreement::default()
        },
        Agreement {
            id: "riverside-podiatry-2026".into(),
            name: "Riverside practices and community podiatry".into(),
            service: PODIATRY_SERVICE.into(),
            practices: practices.to_vec(),
            roles: vec!["podiatrist".into()],
            sections: shares(&[
                (Summary, None),
                (Problems, None),
                (Medications, None),
                (Allergies, None),
                (Alerts, None),
                (Observations, None),
                (Procedures, None),
                (Encounters, Some(365)),
            ]),
            include_codes: Some(PODIATRY_CODES.iter().map(|(c, _)| (*c).into()).collect()),
            exclude_codes: vec![],
            max_offline_hours: 24,
            stale_after_hours: 12,
            idle_lock_minutes: 5,
            retention_days: 2,
            purpose: "Foot care of patients booked into community podiatry clinics: only what \
                      bears on the feet and legs (diabetes, arthritis, circulation)"
                .into(),
            legal_basis: DIRECT_CARE.into(),
            emergency_access: false,
            ..Agreement::default()
        },
    ]
}

/// Patients with a condition the podiatry agreement includes (diabetes, arthritis, legs).
fn patients_with_podiatry_codes(federation: &Federation) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (patient, bundle) in federation.patients.iter().zip(&federation.bundles) {
        let Some(entries) = bundle["entry"].as_array() else {
            continue;
        };
        let relevant = entries.iter().any(|entry| {
            let r = &entry["resource"];
            r["resourceType"] == "Condition"
                && r["code"]["coding"].as_array().is_some_and(|codings| {
                    codings.iter().any(|c| {
                        c["code"]
                            .as_str()
                            .is_some_and(|code| PODIATRY_CODES.iter().any(|(p, _)| *p == code))
                    })
                })
        });
        if relevant {
            out.insert(patient.patient_id.clone());
        }
    }
    out
}

/// Patients with at least one item in an RCGP exclusion set.
fn patients_with_excluded_items(federation: &Federation) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for bundle in &federation.bundles {
        let Some(entries) = bundle["entry"].as_array() else {
            continue;
        };
        for entry in entries {
            if let Ok(resource) = Resource::from_json(entry["resource"].clone())
                && sensitive::is_rcgp_excluded_resource(&resource)
                && let Some(pid) = resource.patient_id()
            {
                out.insert(pid);
            }
        }
    }
    out
}

/// Import a generated federation into `store` and set up services, agreements, lists and
/// users (their TOTP secrets sealed under `totp_key`). Answers the users with their clear
/// passwords and secrets (the caller writes them).
pub async fn seed_store(
    store: &dyn Store,
    totp_key: &TotpKey,
    federation: &Federation,
    spec: &DemoSpec,
    now: DateTime<Utc>,
) -> Result<DemoSummary, DemoError> {
    let need = spec.caseload
        + spec.appointments
        + spec.incidents
        + spec.dissenting
        + spec.ooh_calls
        + spec.podiatry;
    if federation.patients.len() < need {
        return Err(DemoError::TooFewPatients {
            have: federation.patients.len(),
            need,
        });
    }
    for p in &federation.practices {
        store
            .upsert_practice(PracticeRow {
                ods: p.ods.clone(),
                name: p.name.clone(),
                source_system: Some(p.source_system.clone()),
                postcode: Some(p.postcode.clone()),
            })
            .await?;
    }
    for (index, bundle) in federation.bundles.iter().enumerate() {
        let text = serde_json::to_string(bundle).map_err(|e| DemoError::Internal(e.to_string()))?;
        match import::import_bundle(store, &text, None).await {
            Ok(_) => {}
            Err(ImportFailure::Rejected(source)) => {
                return Err(DemoError::Rejected { index, source });
            }
            Err(ImportFailure::Store(e)) => return Err(e.into()),
        }
    }

    let services = [
        (NURSING_SERVICE, "Riverside District Nursing"),
        (HUB_SERVICE, "Riverside Extended Hours Hub"),
        (AMBULANCE_SERVICE, "Northern Ambulance Service"),
        (OOH_SERVICE, "Riverside Out-of-Hours GP"),
        (PODIATRY_SERVICE, "Riverside Community Podiatry"),
    ];
    for (id, name) in services {
        store
            .upsert_service(ServiceRow {
                id: id.into(),
                name: name.into(),
            })
            .await?;
    }
    let practice_codes: Vec<String> = federation.practices.iter().map(|p| p.ods.clone()).collect();
    for agreement in demo_agreements(&practice_codes) {
        store.put_agreement(&agreement, now).await?;
    }
    let lists = [
        (
            CASELOAD_LIST,
            "Riverside DN caseload",
            ListKind::Caseload,
            NURSING_SERVICE,
        ),
        (
            APPOINTMENT_LIST,
            "Riverside hub appointments",
            ListKind::Appointment,
            HUB_SERVICE,
        ),
        (
            INCIDENT_LIST,
            "Northern Ambulance incidents",
            ListKind::Incident,
            AMBULANCE_SERVICE,
        ),
        (
            "riverside-dn-break-glass",
            "Break-glass (district nursing)",
            ListKind::BreakGlass,
            NURSING_SERVICE,
        ),
        (
            "riverside-hub-break-glass",
            "Break-glass (hub)",
            ListKind::BreakGlass,
            HUB_SERVICE,
        ),
        (
            "northern-ambulance-break-glass",
            "Break-glass (ambulance)",
            ListKind::BreakGlass,
            AMBULANCE_SERVICE,
        ),
        (
            OOH_CALL_LIST,
            "Riverside out-of-hours calls",
            ListKind::Incident,
            OOH_SERVICE,
        ),
        (
            "riverside-ooh-break-glass",
            "Break-glass (out-of-hours)",
            ListKind::BreakGlass,
            OOH_SERVICE,
        ),
        (
            PODIATRY_CLINIC_LIST,
            "Riverside podiatry clinic",
            ListKind::Appointment,
            PODIATRY_SERVICE,
        ),
    ];
    for &(id, name, kind, service) in &lists {
        store
            .create_list(ListRow {
                id: id.into(),
                name: name.into(),
                kind,
                service_id: service.into(),
                owner_user_id: None,
                team: None,
            })
            .await?;
    }

    // Choose list members deterministically; put some patients with RCGP-excluded items on the
    // caseload, so the demo shows the "items withheld" notice.
    let mut rng = Rng(spec.federation.seed ^ 0xD005_7E9A_5EED);
    let mut order: Vec<String> = federation
        .patients
        .iter()
        .map(|p| p.patient_id.clone())
        .collect();
    rng.shuffle(&mut order);
    let sensitive_ids = patients_with_excluded_items(federation);
    let wanted_sensitive = (spec.caseload / 10).max(1).min(spec.caseload);
    let mut caseload: Vec<String> = order
        .iter()
        .filter(|p| sensitive_ids.contains(*p))
        .take(wanted_sensitive)
        .cloned()
        .collect();
    let mut rest: Vec<String> = order
        .into_iter()
        .filter(|p| !caseload.contains(p))
        .collect();
    let fill = spec.caseload - caseload.len();
    caseload.extend(rest.drain(..fill));
    let appointments: Vec<String> = rest.drain(..spec.appointments).collect();
    let incidents: Vec<String> = rest.drain(..spec.incidents).collect();
    let dissenting: Vec<String> = rest.drain(..spec.dissenting).collect();
    // Drawn after the lists above, so adding these services changed none of theirs.
    let ooh_calls: Vec<String> = rest.drain(..spec.ooh_calls).collect();
    // Podiatry patients with something the agreement shares (diabetes, arthritis, legs) first,
    // so the podiatrist sees items beside the withheld notice.
    let podiatry_ids = patients_with_podiatry_codes(federation);
    let mut podiatry: Vec<String> = rest
        .iter()
        .filter(|p| podiatry_ids.contains(*p))
        .take(spec.podiatry)
        .cloned()
        .collect();
    let others: Vec<String> = rest
        .iter()
        .filter(|p| !podiatry.contains(p))
        .take(spec.podiatry - podiatry.len())
        .cloned()
        .collect();
    podiatry.extend(others);

    let today = spec.federation.today;
    let at = |date: NaiveDate, h: u32, m: u32| {
        date.and_time(NaiveTime::from_hms_opt(h, m, 0).expect("valid time"))
            .and_utc()
    };
    for pid in &caseload {
        let started = today - Duration::days(rng.below(200) as i64 + 1);
        let reason = CASELOAD_REASONS[rng.below(CASELOAD_REASONS.len() as u64) as usize];
        lists::add_entry(
            store,
            NewListEntry {
                list_id: CASELOAD_LIST.into(),
                patient_id: pid.clone(),
                reason: reason.into(),
                starts_at: at(started, 9, 0),
                ends_at: None,
                user_id: None,
            },
            now,
        )
        .await?;
    }
    let first_day = appointments.len().div_ceil(2);
    for (i, pid) in appointments.iter().enumerate() {
        let (date, slot) = if i < first_day {
            (today, i)
        } else {
            (today + Duration::days(1), i - first_day)
        };
        let minutes = 18 * 60 + 30 + 15 * slot as u32;
        let reason = APPOINTMENT_REASONS[rng.below(APPOINTMENT_REASONS.len() as u64) as usize];
        lists::add_entry(
            store,
            NewListEntry {
                list_id: APPOINTMENT_LIST.into(),
                patient_id: pid.clone(),
                reason: reason.into(),
                starts_at: at(date, (minutes / 60) % 24, minutes % 60),
                ends_at: None,
                user_id: None,
            },
            now,
        )
        .await?;
    }
    for (i, pid) in incidents.iter().enumerate() {
        lists::add_entry(
            store,
            NewListEntry {
                list_id: INCIDENT_LIST.into(),
                patient_id: pid.clone(),
                reason: INCIDENT_REASONS[i % INCIDENT_REASONS.len()].into(),
                starts_at: now - Duration::minutes(40 * (i as i64 + 1)),
                ends_at: None,
                user_id: None,
            },
            now,
        )
        .await?;
    }
    for (i, pid) in ooh_calls.iter().enumerate() {
        lists::add_entry(
            store,
            NewListEntry {
                list_id: OOH_CALL_LIST.into(),
                patient_id: pid.clone(),
                reason: OOH_REASONS[i % OOH_REASONS.len()].into(),
                starts_at: now - Duration::minutes(25 * (i as i64 + 1)),
                ends_at: None,
                user_id: None,
            },
            now,
        )
        .await?;
    }
    let first_clinic_day = podiatry.len().div_ceil(2);
    for (i, pid) in podiatry.iter().enumerate() {
        let (date, slot) = if i < first_clinic_day {
            (today, i)
        } else {
            (today + Duration::days(1), i - first_clinic_day)
        };
        let minutes = 9 * 60 + 30 * slot as u32;
        lists::add_entry(
            store,
            NewListEntry {
                list_id: PODIATRY_CLINIC_LIST.into(),
                patient_id: pid.clone(),
                reason: PODIATRY_REASONS[i % PODIATRY_REASONS.len()].into(),
                starts_at: at(date, (minutes / 60) % 24, minutes % 60),
                ends_at: None,
                user_id: None,
            },
            now,
        )
        .await?;
    }
    for pid in &dissenting {
        store.set_dissent(pid, true).await?;
    }

    let people = [
        (
            "nurse.demo",
            "Nia Evans",
            "nurse",
            NURSING_SERVICE,
            services[0].1,
        ),
        (
            "gp.demo",
            "Dr Adaeze Okafor",
            "gp",
            HUB_SERVICE,
            services[1].1,
        ),
        (
            "para.demo",
            "Seán Ó Briain",
            "paramedic",
            AMBULANCE_SERVICE,
            services[2].1,
        ),
        (
            "ooh.demo",
            "Dr Gethin Pryce",
            "gp",
            OOH_SERVICE,
            services[3].1,
        ),
        (
            "podiatrist.demo",
            "Priya Nowak",
            "podiatrist",
            PODIATRY_SERVICE,
            services[4].1,
        ),
    ];
    // The people around the clinicians: they sign in as staff, never on a device.
    let reception_practice = federation.practices[0].ods.clone();
    let staff = [
        (
            "reception.demo",
            "Grace Adeyemi",
            crate::bookings::RECEPTIONIST,
            HUB_SERVICE,
            services[1].1,
            Some(reception_practice.as_str()),
        ),
        (
            "manager.demo",
            "Tomasz Wójcik",
            crate::bookings::SERVICE_MANAGER,
            HUB_SERVICE,
            services[1].1,
            None,
        ),
        (
            "lead.demo",
            "Bethan Morgan",
            crate::caseloads::TEAM_LEADER,
            NURSING_SERVICE,
            services[0].1,
            None,
        ),
        // The federation's privacy officer (named under the hub, as every user has a service).
        (
            "privacy.demo",
            "Priya Natarajan",
            crate::auth::PRIVACY_OFFICER,
            HUB_SERVICE,
            services[1].1,
            None,
        ),
    ];
    let everyone = people
        .iter()
        .map(|&(u, n, r, s, sn)| (u, n, r, s, sn, None))
        .chain(staff);
    let mut users = Vec::new();
    let mut user_ids = std::collections::BTreeMap::new();
    for (username, display_name, role, service_id, service_name, practice) in everyone {
        let password = auth::random_password();
        let totp_secret = auth::new_totp_secret();
        let hash = {
            let password = password.clone();
            tokio::task::spawn_blocking(move || auth::hash_password(&password))
                .await
                .map_err(|e| DemoError::Internal(e.to_string()))??
        };
        let id = store
            .create_user(
                NewUser {
                    username: username.into(),
                    display_name: display_name.into(),
                    role: role.into(),
                    service_id: service_id.into(),
                    password_hash: hash,
                    totp_secret: totp_key.seal(username, &totp_secret),
                    practice_ods: practice.map(str::to_owned),
                },
                now,
            )
            .await?;
        user_ids.insert(username, id);
        users.push(DemoUser {
            username: username.into(),
            password,
            display_name: display_name.into(),
            role: role.into(),
            service: service_name.into(),
            totp_secret,
            practice: practice.map(str::to_owned),
        });
    }
    // Least data: each list is its clinician's, and the caseload the nursing team's (the DN
    // agreement shares lists team-wide); a second user of a service would not receive them.
    store
        .set_team(&user_ids["nurse.demo"], Some(NURSING_TEAM))
        .await?;
    store
        .set_team(&user_ids["lead.demo"], Some(NURSING_TEAM))
        .await?;
    // A second nursing team, so the team leader has somewhere to transfer patients to.
    store
        .create_list(ListRow {
            id: SOUTH_CASELOAD_LIST.into(),
            name: "Riverside South caseload".into(),
            kind: ListKind::Caseload,
            service_id: NURSING_SERVICE.into(),
            owner_user_id: None,
            team: Some(SOUTH_TEAM.into()),
        })
        .await?;
    let owners: [(&str, Option<&str>, Option<&str>); 5] = [
        (CASELOAD_LIST, None, Some(NURSING_TEAM)),
        (APPOINTMENT_LIST, Some("gp.demo"), None),
        (INCIDENT_LIST, Some("para.demo"), None),
        (OOH_CALL_LIST, Some("ooh.demo"), None),
        (PODIATRY_CLINIC_LIST, Some("podiatrist.demo"), None),
    ];
    for (list_id, owner, team) in owners {
        let &(id, name, kind, service) = lists
            .iter()
            .find(|l| l.0 == list_id)
            .expect("every owned list is created above");
        store
            .create_list(ListRow {
                id: id.into(),
                name: name.into(),
                kind,
                service_id: service.into(),
                owner_user_id: owner.map(|u| user_ids[u].clone()),
                team: team.map(str::to_owned),
            })
            .await?;
    }
    seed_hub_week(store, &user_ids, &reception_practice, now).await?;
    audit::append(
        store,
        AuditEvent {
            at: now,
            actor: "cli".into(),
            action: "seed".into(),
            patient_id: None,
            detail: serde_json::json!({
                "patients": federation.patients.len(),
                "practices": federation.practices.len(),
                "users": users.iter().map(|u| u.username.clone()).collect::<Vec<_>>(),
            }),
        },
    )
    .await?;
    Ok(DemoSummary {
        users,
        patients: federation.patients.len(),
        practices: federation.practices.len(),
    })
}

/// Days around today with an evening session at the hub (past days and future ones).
pub const HUB_SESSION_DAYS: std::ops::RangeInclusive<i64> = -6..=3;
/// Slots of each demo hub session (18:30 to 20:30 UTC, 15 minutes each).
pub const HUB_SESSION_SLOTS: u32 = 8;

/// A week of evening sessions at the hub, published by `manager.demo` for `gp.demo`; in the
/// sessions of the days before yesterday (whose entries have ended, so no device's list
/// changes), bookings by `reception.demo` of her practice's patients on no list, most of them
/// seen: the record opened and a note written during the slot, through the same push a device
/// makes, and filed by the practice a while later (one rejected). Each step goes through the
/// rules module at the time it happened, so the figures have something true to show. The
/// future sessions are left free to book.
async fn seed_hub_week(
    store: &dyn Store,
    user_ids: &std::collections::BTreeMap<&str, String>,
    practice: &str,
    now: DateTime<Utc>,
) -> Result<(), DemoError> {
    use doorstep_protocol::{PushItem, PushRequest};

    let internal = |e: String| DemoError::Internal(e);
    let user = |name: &str| {
        let id = user_ids[name].clone();
        async move {
            store
                .user_by_id(&id)
                .await?
                .ok_or_else(|| DemoError::Internal(format!("demo user {id} is missing")))
        }
    };
    let (manager, reception, gp) = (
        user("manager.demo").await?,
        user("reception.demo").await?,
        user("gp.demo").await?,
    );
    let mut listed = BTreeSet::new();
    for list in store.lists().await? {
        for entry in store.list_entries(&list.id).await? {
            listed.insert(entry.patient_id);
        }
    }
    let mut patients: Vec<String> = store
        .patients()
        .await?
        .into_iter()
        .filter(|p| p.practice_ods == practice && !p.dissent && !listed.contains(&p.id))
        .map(|p| p.id)
        .collect();
    patients.reverse();
    let device = store
        .create_device(&gp.id, "Hub laptop (demo history)", now)
        .await?;
    let device = store
        .device(&device)
        .await?
        .ok_or_else(|| internal("the demo device is missing".into()))?;
    let today = now.date_naive();
    let mut booked = 0u32;
    for day in HUB_SESSION_DAYS {
        let date = today + Duration::days(day);
        let start = NaiveTime::from_hms_opt(18, 30, 0).unwrap_or_default();
        let starts_at = date.and_time(start).and_utc();
        let session = crate::bookings::publish_session(
            store,
            &manager,
            crate::bookings::NewSession {
                date,
                start,
                end: NaiveTime::from_hms_opt(20, 30, 0).unwrap_or_default(),
                clinician: gp.username.clone(),
                slots: HUB_SESSION_SLOTS,
                reason: "Winter extended-hours rota".into(),
            },
            now.min(starts_at - Duration::days(7)),
        )
        .await
        .map_err(|e| internal(format!("demo session {date}: {e}")))?;
        // History only on the days before yesterday, whatever the time of day: their entries
        // have ended (no device's list changes), and yesterday and today hold only what
        // happens now. (With "ended more than a day ago", yesterday's evening joined the
        // history at 20:30 UTC, and figures from yesterday on changed with the clock.)
        if date >= today - Duration::days(1) {
            continue;
        }
        // Three to five bookings a past evening.
        for n in 0..(3 + (day.unsigned_abs() % 3) as u32) {
            let Some(patient) = patients.pop() else { break };
            let booking = crate::bookings::book(
                store,
                &reception,
                &session.id,
                &crate::bookings::BookRequest {
                    patient_id: patient.clone(),
                    slot: Some(n),
                    reason: APPOINTMENT_REASONS[(booked as usize) % APPOINTMENT_REASONS.len()]
                        .into(),
                },
                starts_at - Duration::days(1),
            )
            .await
            .map_err(|e| internal(format!("demo booking: {e}")))?;
            booked += 1;
            // One in four did not attend.
            if booked.is_multiple_of(4) {
                continue;
            }
            let seen = booking.starts_at + Duration::minutes(5);
            let signed = seen + Duration::minutes(12);
            let item = |n: u32, kind: &str, at: DateTime<Utc>, body: serde_json::Value| PushItem {
                id: format!(
                    "00000000-0000-4000-8000-{:012}",
                    u64::from(booked) * 10 + u64::from(n)
                ),
                kind: kind.into(),
                patient_id: patient.clone(),
                created_at: at,
                body,
            };
            crate::notes::push(
                store,
                &device,
                &gp,
                PushRequest {
                    items: vec![
                        item(
                            1,
                            doorstep_protocol::PUSH_KIND_RECORD_VIEW,
                            seen,
                            serde_json::json!({"section": "summary", "viewed_at": seen, "offline": false}),
                        ),
                        item(
                            2,
                            doorstep_protocol::PUSH_KIND_NOTE,
                            signed,
                            serde_json::json!({
                                "text": "Seen at the extended-hours hub; plan agreed with the patient.",
                                "signed_at": signed,
                            }),
                        ),
                    ],
                },
                signed + Duration::minutes(1),
            )
            .await
            .map_err(|e| internal(format!("demo push: {e}")))?;
            // The practice files it next morning (one in five is rejected as a duplicate).
            let note_id = item(
                2,
                doorstep_protocol::PUSH_KIND_NOTE,
                signed,
                serde_json::Value::Null,
            )
            .id;
            let rejected = booked.is_multiple_of(5);
            store
                .set_note_deliveries(vec![store::DeliveryWrite {
                    note_id,
                    expected: store::DeliveryState::Accepted,
                    state: if rejected {
                        store::DeliveryState::Rejected
                    } else {
                        store::DeliveryState::Filed
                    },
                    at: signed + Duration::minutes(40 + 35 * i64::from(booked % 7)),
                    reason: rejected.then(|| "already recorded by the practice".to_string()),
                }])
                .await?;
        }
    }
    Ok(())
}

/// Read `DIR/demo-users.json`.
pub fn read_demo_users(data_dir: &Path) -> std::io::Result<Vec<DemoUser>> {
    let text = std::fs::read_to_string(data_dir.join(DEMO_USERS_FILE))?;
    serde_json::from_str(&text).map_err(std::io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;
    use doorstep_record::synthetic::generate;

    #[test]
    fn five_agreements_side_by_side_each_with_purpose_and_legal_basis() {
        let practices = vec!["A81001".to_string(), "B81008".to_string()];
        let agreements = demo_agreements(&practices);
        let services: BTreeSet<&str> = agreements.iter().map(|a| a.service.as_str()).collect();
        assert_eq!(
            services,
            BTreeSet::from([
                NURSING_SERVICE,
                HUB_SERVICE,
                AMBULANCE_SERVICE,
                OOH_SERVICE,
                PODIATRY_SERVICE
            ])
        );
        for a in &agreements {
            assert!(!a.purpose.trim().is_empty(), "{} states its purpose", a.id);
            assert!(
                !a.legal_basis.trim().is_empty(),
                "{} states its basis",
                a.id
            );
            assert_eq!(a.practices, practices);
            assert!(!a.sections.is_empty());
        }
        let podiatry = agreements
            .iter()
            .find(|a| a.service == PODIATRY_SERVICE)
            .unwrap();
        assert_eq!(podiatry.roles, vec!["podiatrist".to_string()]);
        assert!(podiatry.include_codes.is_some());
        let ambulance = agreements
            .iter()
            .find(|a| a.service == AMBULANCE_SERVICE)
            .unwrap();
        assert!(
            ambulance
                .sections
                .iter()
                .any(|s| s.section == Section::Documents && s.lookback_days.is_some())
        );
    }

    #[test]
    fn the_generator_emits_podiatry_codes_so_the_podiatrist_sees_something() {
        let spec = DemoSpec::small(7, NaiveDate::from_ymd_opt(2026, 1, 15).unwrap());
        let federation = generate(&spec.federation);
        let with_codes = patients_with_podiatry_codes(&federation);
        assert!(
            with_codes.len() >= spec.podiatry,
            "{} patients with a podiatry code",
            with_codes.len()
        );
    }
}
