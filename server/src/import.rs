//! Importing a FHIR R4 Bundle: validation, the import planner, and applying the plan, whole
//! or nothing, through any backend.
//!
//! # Steps
//!
//! 1. [`prepare_import`] parses and validates the bundle (`doorstep_record::fhir`) into an
//!    [`ImportBatch`]: patient headers, resources stamped with their source, deletions. Pure.
//!    A bundle a member practice sent as its own export ([`Sender::practice`]) registers its
//!    patients that name no practice with that practice; the report lists them.
//! 2. [`import_keys`] names the rows the plan depends on; the backend reads them in one go
//!    ([`RecordStore::import_basis`]).
//! 3. [`plan`] decides, from the batch and those rows alone (pure, no IO), what is new,
//!    changed, unchanged, deleted, moved to another patient, or clashing (an NHS number that
//!    already belongs to another patient record refuses the whole bundle), and answers the
//!    row writes ([`ImportWrites`]): upserts, deletions, and the feed rows that tell devices.
//!    An identical resource is left alone and makes no feed row.
//! 4. The backend applies the writes and the import's audit event in one transaction
//!    ([`RecordStore::apply_import`]), sealing the event on the chain's tip inside it with
//!    [`crate::audit::seal`], which it is handed.
//!
//! # Concurrency
//!
//! The plan is made from reads taken before the write transaction, so the backend re-reads
//! the same keys inside it and refuses a plan whose basis moved
//! ([`StoreError::Stale`]); [`apply_batch`] then plans again from fresh reads, a bounded
//! number of times. Two server nodes importing into one database at once are thereby safe as
//! long as the backend's re-check and writes are atomic:
//!
//! - SQLite: the write transaction is `BEGIN IMMEDIATE`, which takes the database's one write
//!   lock before the re-read, so nothing can change between the re-check and the writes.
//! - PostgreSQL (next): re-read with `SELECT ... FOR UPDATE` (rows that exist) and let the
//!   primary keys and the unique NHS number catch rows that appear concurrently (map a unique
//!   violation to `Stale`), or run the transaction `SERIALIZABLE` and map serialization
//!   failures to `Stale`.
//!
//! # Invariants
//!
//! - Whole or nothing: a rejected bundle writes nothing, and a stale plan writes nothing.
//! - The backend never decides: every upsert, deletion and feed row is in the plan.
//! - Feed rows never carry data; the pull reads the current state when it meets one.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};
use doorstep_record::fhir::{
    ImportError, PatientHeaderInfo, Resource, ResourceType, SendingPractice, parse_bundle,
    stamp_source, validate_for_import_from,
};

use crate::audit;
use crate::store::{
    AuditEvent, ImportBasis, ImportKeys, ImportWrites, PatientHeaderRow, PatientWrite,
    PlannedImport, RecordStore, ResourceDeletion, ResourceWrite, Store, StoreError, StoredResource,
};

/// Times [`apply_batch`] plans again when another writer changed the basis first.
const PLAN_ATTEMPTS: usize = 8;

/// Why an import did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ImportFailure {
    /// The bundle was refused; nothing of it was stored.
    #[error("import rejected: {0}")]
    Rejected(ImportError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The organisation that sent a bundle (`--practice`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sender<'a> {
    pub ods: &'a str,
    pub name: &'a str,
    /// It is a member practice: the bundle is its own export, so a patient the bundle
    /// registers nowhere is registered with it. (A hospital never registers patients.)
    pub practice: bool,
}

/// A validated import, ready to plan.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportBatch {
    pub patients: Vec<PatientHeaderInfo>,
    pub resources: Vec<Resource>,
    /// `(resource type, id)` to delete.
    pub deletions: Vec<(String, String)>,
    /// The sending organisation `(ODS code, name)`, when there is one.
    pub sender: Option<(String, String)>,
    /// Ids of the patients registered with the sending practice for want of one in the bundle.
    pub registered_with_sender: Vec<String>,
    /// The entry of the bundle each resource and deletion came from, by `(type, id)`, so a
    /// refusal found after validation still names it.
    pub entry_of: BTreeMap<(String, String), usize>,
}

/// What an import changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    pub patients: usize,
    pub upserted: usize,
    pub unchanged: usize,
    pub deleted: usize,
    pub feed_rows: usize,
    /// The sending organisation `(ODS code, name)`, when there is one.
    pub sender: Option<(String, String)>,
    /// Ids of the patients registered with the sending practice for want of one in the bundle.
    pub registered_with_sender: Vec<String>,
}

impl ImportReport {
    /// What the operator is told about patients registered with the sending practice: how
    /// many, with which practice, and which Patient ids. `None` when there were none.
    pub fn registration_note(&self) -> Option<String> {
        let (ods, name) = self.sender.as_ref()?;
        let ids = &self.registered_with_sender;
        let (patients, had, were) = match ids.len() {
            0 => return None,
            1 => ("1 patient".to_string(), "had", "was"),
            n => (format!("{n} patients"), "had", "were"),
        };
        let list: Vec<String> = ids.iter().map(|id| format!("Patient/{id}")).collect();
        Some(format!(
            "{patients} {had} no registered practice in the bundle and {were} registered with \
             {ods} ({name}), the sending practice: {}",
            list.join(", ")
        ))
    }
}

/// Parse and validate a FHIR R4 Bundle for import. `sender` is the organisation that sent
/// the bundle: resources the bundle does not attribute to a source itself are attributed to
/// it instead of to the patient's registered practice; when it is a member practice, patients
/// the bundle registers nowhere are registered with it.
pub fn prepare_import(text: &str, sender: Option<Sender<'_>>) -> Result<ImportBatch, ImportError> {
    let bundle = parse_bundle(text)?;
    let mut entry_of = BTreeMap::new();
    for (i, r) in bundle.resources.iter().enumerate() {
        entry_of
            .entry((r.resource_type.as_str().to_string(), r.id.clone()))
            .or_insert(i);
    }
    // Which resources carried their own source before validation stamped the practice.
    let self_stamped: HashSet<(ResourceType, String)> = bundle
        .resources
        .iter()
        .filter(|r| r.source_ods().is_some())
        .map(|r| (r.resource_type.clone(), r.id.clone()))
        .collect();
    for (rtype, id) in &bundle.deletions {
        if *rtype == ResourceType::Patient {
            return Err(ImportError {
                entry: None,
                resource: Some(format!("Patient/{id}")),
                element: "request.method".into(),
                message: "deleting a Patient is not supported; end their list entries instead"
                    .into(),
            });
        }
    }
    let registering = sender.filter(|s| s.practice).map(|s| SendingPractice {
        ods: s.ods,
        name: s.name,
    });
    let plan = validate_for_import_from(&bundle, registering).map_err(|mut e| {
        if let Some(s) = sender.filter(|s| !s.practice)
            && e.element == "generalPractitioner"
        {
            e.message.push_str(&format!(
                "; {} is not a member practice, so its bundles cannot register patients",
                s.ods
            ));
        }
        e
    })?;
    let mut resources = plan.resources;
    if let Some(Sender { ods, name, .. }) = sender {
        for r in &mut resources {
            let clinical = !matches!(
                r.resource_type,
                ResourceType::Patient | ResourceType::Organization | ResourceType::Practitioner
            );
            if clinical && !self_stamped.contains(&(r.resource_type.clone(), r.id.clone())) {
                stamp_source(r, ods, name);
            }
        }
    }
    Ok(ImportBatch {
        patients: plan.patients,
        resources,
        deletions: bundle
            .deletions
            .iter()
            .map(|(t, id)| (t.as_str().to_string(), id.clone()))
            .collect(),
        sender: sender.map(|s| (s.ods.to_string(), s.name.to_string())),
        registered_with_sender: plan.registered_with_sender,
        entry_of,
    })
}

/// The rule of an import by a member practice's own source system ([`import_from_practice`]):
/// it may import only patients registered with it. Refused, naming the entry: a Patient the
/// bundle registers with another practice; a patient already held for another practice (a
/// transfer between practices is not a source system's to make); a resource or deletion whose
/// id is already held for a patient of another practice. Pure: `owners` gives the practice
/// of every stored patient `basis` names that is not in the bundle.
pub fn check_practice_owns(
    batch: &ImportBatch,
    basis: &ImportBasis,
    owners: &BTreeMap<String, String>,
    ods: &str,
) -> Result<(), ImportError> {
    let entry = |rtype: &str, id: &str| batch.entry_of.get(&(rtype.to_string(), id.to_string()));
    let refuse = |rtype: &str, id: &str, element: &str, message: String| ImportError {
        entry: entry(rtype, id).copied(),
        resource: Some(format!("{rtype}/{id}")),
        element: element.into(),
        message,
    };
    for p in &batch.patients {
        if p.practice_ods != ods {
            return Err(refuse(
                "Patient",
                &p.patient_id,
                "generalPractitioner",
                format!(
                    "the patient is registered with {}; {ods} may import only patients \
                     registered with it",
                    p.practice_ods
                ),
            ));
        }
        if let Some(stored) = basis.patients.get(&p.patient_id)
            && stored.practice_ods != ods
        {
            return Err(refuse(
                "Patient",
                &p.patient_id,
                "id",
                format!(
                    "this patient is held for {}; {ods} may import only patients registered \
                     with it (a transfer between practices is made by the federation)",
                    stored.practice_ods
                ),
            ));
        }
    }
    let practice_of = |patient: &str| -> Option<&str> {
        batch
            .patients
            .iter()
            .find(|p| p.patient_id == patient)
            .map(|_| ods)
            .or_else(|| owners.get(patient).map(String::as_str))
    };
    let named = batch
        .resources
        .iter()
        .map(|r| (r.resource_type.as_str().to_string(), r.id.clone(), "id"))
        .chain(
            batch
                .deletions
                .iter()
                .map(|(t, id)| (t.clone(), id.clone(), "request.url")),
        );
    for (rtype, id, element) in named {
        let Some(stored) = basis.resources.get(&(rtype.clone(), id.clone())) else {
            continue;
        };
        let Some(patient) = &stored.patient_id else {
            continue;
        };
        match practice_of(patient) {
            Some(owner) if owner == ods => {}
            owner => {
                return Err(refuse(
                    &rtype,
                    &id,
                    element,
                    format!(
                        "this id is already held for a patient of {}; {ods} may import only \
                         patients registered with it",
                        owner.unwrap_or("another practice")
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Import a bundle sent by member practice `ods`'s own source system (`POST /api/v1/import`):
/// as [`import_bundle`] with the practice as sender, refused whole unless
/// [`check_practice_owns`] holds on the rows the plan is made from.
pub async fn import_from_practice(
    store: &dyn Store,
    text: &str,
    ods: &str,
) -> Result<ImportReport, ImportFailure> {
    let name = store
        .organisation_name(ods)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("organisation {ods}")))?;
    let sender = Sender {
        ods,
        name: &name,
        practice: true,
    };
    let batch = prepare_import(text, Some(sender)).map_err(ImportFailure::Rejected)?;
    apply_checked(store, &batch, Utc::now(), Some(ods), None).await
}

/// Parse, validate and import a FHIR R4 Bundle, whole or not at all. `sender` is the ODS
/// code of the organisation that sent it (see [`prepare_import`]); it must be known.
pub async fn import_bundle(
    store: &dyn Store,
    text: &str,
    sender: Option<&str>,
) -> Result<ImportReport, ImportFailure> {
    let sender = match sender {
        Some(ods) => {
            let name = store
                .organisation_name(ods)
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("organisation {ods}")))?;
            let practice = store.practices().await?.iter().any(|p| p.ods == ods);
            Some((ods, name, practice))
        }
        None => None,
    };
    let sender = sender.as_ref().map(|(ods, name, practice)| Sender {
        ods,
        name,
        practice: *practice,
    });
    let batch = prepare_import(text, sender).map_err(ImportFailure::Rejected)?;
    apply_batch(store, &batch, Utc::now()).await
}

/// Plan `batch` against the store's current rows and apply it in one transaction, planning
/// again when another writer got there first.
pub async fn apply_batch(
    store: &dyn Store,
    batch: &ImportBatch,
    now: DateTime<Utc>,
) -> Result<ImportReport, ImportFailure> {
    apply_checked(store, batch, now, None, None).await
}

/// [`apply_batch`] recorded in the audit log as `event` rather than as an import: a change the
/// federation makes to the record on someone's behalf (a note accepted from a device, a
/// practice's acknowledgement) is audited as what it is, in the same transaction as its rows.
pub async fn apply_batch_as(
    store: &dyn Store,
    batch: &ImportBatch,
    now: DateTime<Utc>,
    event: AuditEvent,
) -> Result<ImportReport, ImportFailure> {
    apply_checked(store, batch, now, None, Some(&event)).await
}

/// [`apply_batch`], with [`check_practice_owns`] when a practice's source system sent it.
async fn apply_checked(
    store: &dyn Store,
    batch: &ImportBatch,
    now: DateTime<Utc>,
    only_for: Option<&str>,
    recorded_as: Option<&AuditEvent>,
) -> Result<ImportReport, ImportFailure> {
    let keys = import_keys(batch);
    let mut last = String::new();
    for attempt in 1..=PLAN_ATTEMPTS {
        let basis = store.import_basis(&keys).await?;
        if let Some(ods) = only_for {
            let owners = owners_outside_bundle(store, batch, &basis).await?;
            check_practice_owns(batch, &basis, &owners, ods).map_err(ImportFailure::Rejected)?;
        }
        let (writes, report) = plan(batch, &basis).map_err(ImportFailure::Rejected)?;
        let actor = only_for.map_or_else(|| "import".to_string(), |ods| format!("practice:{ods}"));
        let event = match recorded_as {
            Some(event) => event.clone(),
            None => AuditEvent {
                actor,
                ..import_event(batch, &report, now)
            },
        };
        let planned = PlannedImport {
            keys: keys.clone(),
            basis,
            writes,
            audit: event,
            at: now,
        };
        match RecordStore::apply_import(store, planned, audit::seal).await {
            Ok(()) => return Ok(report),
            Err(StoreError::Stale(why)) => {
                tracing::debug!(
                    attempt,
                    "import planned on rows that changed; planning again"
                );
                last = why;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(StoreError::Stale(format!(
        "the import's rows kept changing under it ({PLAN_ATTEMPTS} attempts): {last}"
    ))
    .into())
}

/// The registered practice of each stored patient that holds a resource the bundle names but
/// is not in the bundle. (The resources' owners are re-checked by the apply; a practice
/// changing under an import in between is a transfer, which no source system makes.)
async fn owners_outside_bundle(
    store: &dyn Store,
    batch: &ImportBatch,
    basis: &ImportBasis,
) -> Result<BTreeMap<String, String>, StoreError> {
    let mut owners = BTreeMap::new();
    for stored in basis.resources.values() {
        let Some(patient) = &stored.patient_id else {
            continue;
        };
        if owners.contains_key(patient) || batch.patients.iter().any(|p| &p.patient_id == patient) {
            continue;
        }
        if let Some(row) = store.patient(patient).await? {
            owners.insert(patient.clone(), row.practice_ods);
        }
    }
    Ok(owners)
}

/// The rows [`plan`] reads for `batch`.
pub fn import_keys(batch: &ImportBatch) -> ImportKeys {
    ImportKeys {
        patients: batch
            .patients
            .iter()
            .map(|p| p.patient_id.clone())
            .collect(),
        nhs_numbers: batch
            .patients
            .iter()
            .map(|p| p.nhs_number.digits().to_string())
            .collect(),
        resources: batch
            .resources
            .iter()
            .map(|r| (r.resource_type.as_str().to_string(), r.id.clone()))
            .chain(batch.deletions.iter().cloned())
            .collect(),
    }
}

/// Decide what `batch` writes, given the current rows behind [`import_keys`]. Pure.
pub fn plan(
    batch: &ImportBatch,
    basis: &ImportBasis,
) -> Result<(ImportWrites, ImportReport), ImportError> {
    let mut writes = ImportWrites::default();
    let mut report = ImportReport {
        patients: batch.patients.len(),
        sender: batch.sender.clone(),
        registered_with_sender: batch.registered_with_sender.clone(),
        ..ImportReport::default()
    };
    // Organisations: the last name seen for a code wins, as if each were upserted in turn.
    let mut organisations: Vec<(String, String)> = Vec::new();
    let mut organisation_at: BTreeMap<String, usize> = BTreeMap::new();
    let mut name_organisation = |ods: String, name: String| match organisation_at.get(&ods) {
        Some(&i) => organisations[i].1 = name,
        None => {
            organisation_at.insert(ods.clone(), organisations.len());
            organisations.push((ods, name));
        }
    };

    // NHS numbers as they stand after each patient of the batch so far.
    let mut nhs_owners = basis.nhs_owners.clone();
    for p in &batch.patients {
        name_organisation(p.practice_ods.clone(), p.practice_name.clone());
        if !writes.practices.contains(&p.practice_ods) {
            writes.practices.push(p.practice_ods.clone());
        }
        let header = PatientHeaderRow {
            id: p.patient_id.clone(),
            nhs_number: p.nhs_number.digits().to_string(),
            practice_ods: p.practice_ods.clone(),
            birth_date: p.birth_date,
        };
        if nhs_owners
            .get(&header.nhs_number)
            .is_some_and(|owner| *owner != header.id)
        {
            return Err(ImportError {
                entry: None,
                resource: Some(format!("Patient/{}", p.patient_id)),
                element: "identifier".into(),
                message: "this NHS number already belongs to another patient record".into(),
            });
        }
        let stored = basis.patients.get(&header.id);
        if let Some(old) = stored
            && old.nhs_number != header.nhs_number
        {
            nhs_owners.remove(&old.nhs_number);
        }
        nhs_owners.insert(header.nhs_number.clone(), header.id.clone());
        match stored {
            None => writes.patients.push(PatientWrite {
                header,
                header_changed: false,
            }),
            Some(old) if *old != header => {
                report.feed_rows += 1;
                writes.patients.push(PatientWrite {
                    header,
                    header_changed: true,
                });
            }
            Some(_) => {}
        }
    }

    // Resource state as it stands after the upserts, for the deletions that follow.
    let mut after_upserts: BTreeMap<(String, String), (Option<String>, bool)> = BTreeMap::new();
    for r in &batch.resources {
        if let (Some(ods), Some(name)) = (r.source_ods(), r.source_name()) {
            name_organisation(ods, name);
        }
        let key = (r.resource_type.as_str().to_string(), r.id.clone());
        let pid = r.patient_id();
        let existing = basis.resources.get(&key);
        if let Some(StoredResource {
            json,
            patient_id,
            deleted: false,
        }) = existing
            && *patient_id == pid
            && serde_json::from_str::<serde_json::Value>(json)
                .ok()
                .as_ref()
                == Some(&r.json)
        {
            report.unchanged += 1;
            continue;
        }
        report.feed_rows += usize::from(pid.is_some());
        let moved_from = existing
            .and_then(|e| e.patient_id.clone())
            .filter(|old| Some(old) != pid.as_ref());
        report.feed_rows += usize::from(moved_from.is_some());
        let json = serde_json::to_string(&r.json).map_err(|e| ImportError {
            entry: None,
            resource: Some(r.reference()),
            element: "resource".into(),
            message: format!("cannot be stored as JSON: {e}"),
        })?;
        after_upserts.insert(key.clone(), (pid.clone(), false));
        writes.resources.push(ResourceWrite {
            resource_type: key.0,
            id: key.1,
            patient_id: pid,
            section: r.section().map(|s| s.as_str().to_string()),
            json,
            moved_from,
        });
        report.upserted += 1;
    }

    for key in &batch.deletions {
        let live = match after_upserts.get(key) {
            Some((pid, deleted)) => (!deleted).then(|| pid.clone()),
            None => basis
                .resources
                .get(key)
                .filter(|r| !r.deleted)
                .map(|r| r.patient_id.clone()),
        };
        let Some(pid) = live else { continue };
        report.feed_rows += usize::from(pid.is_some());
        after_upserts.insert(key.clone(), (pid.clone(), true));
        writes.deletions.push(ResourceDeletion {
            resource_type: key.0.clone(),
            id: key.1.clone(),
            patient_id: pid,
        });
        report.deleted += 1;
    }
    writes.organisations = organisations;
    Ok((writes, report))
}

/// The audit event of an import: which patients, and how much changed.
fn import_event(batch: &ImportBatch, report: &ImportReport, now: DateTime<Utc>) -> AuditEvent {
    let patient_ids: Vec<&str> = batch
        .patients
        .iter()
        .map(|p| p.patient_id.as_str())
        .collect();
    let mut detail = serde_json::json!({
        "patients": patient_ids,
        "upserted": report.upserted,
        "unchanged": report.unchanged,
        "deleted": report.deleted,
    });
    // Who a patient's registration came from, when it was not the bundle.
    if let Some((ods, _)) = &report.sender
        && !report.registered_with_sender.is_empty()
    {
        detail["registered_with_sender"] = serde_json::json!({
            "ods": ods,
            "patients": report.registered_with_sender,
        });
    }
    AuditEvent {
        at: now,
        actor: "import".into(),
        action: "import".into(),
        patient_id: (patient_ids.len() == 1).then(|| patient_ids[0].to_string()),
        detail,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::store::{self, DatabaseUrl, FeedOp};

    const NHS_SYSTEM: &str = "https://fhir.nhs.uk/Id/nhs-number";
    const ODS_SYSTEM: &str = "https://fhir.nhs.uk/Id/ods-organization-code";

    fn patient(id: &str, nhs: &str) -> Value {
        json!({"resourceType": "Patient", "id": id,
               "identifier": [{"system": NHS_SYSTEM, "value": nhs}],
               "generalPractitioner": [{"identifier": {"system": ODS_SYSTEM, "value": "A81001"}, "display": "Riverside Surgery"}]})
    }

    fn condition(id: &str, patient: &str, note: &str) -> Value {
        json!({"resourceType": "Condition", "id": id,
               "subject": {"reference": format!("Patient/{patient}")},
               "code": {"coding": [{"system": "http://snomed.info/sct", "code": "44054006"}]},
               "note": [{"text": note}]})
    }

    fn batch(resources: Vec<Value>, deletions: &[&str]) -> ImportBatch {
        let mut entry: Vec<Value> = resources
            .into_iter()
            .map(|r| json!({"resource": r}))
            .collect();
        for d in deletions {
            entry.push(json!({"request": {"method": "DELETE", "url": d}}));
        }
        let text = json!({"resourceType": "Bundle", "type": "collection", "entry": entry});
        prepare_import(&text.to_string(), None).unwrap()
    }

    /// The basis as a store holding exactly what `b` writes would hold.
    fn basis_after(b: &ImportBatch) -> ImportBasis {
        let mut basis = ImportBasis::default();
        for p in &b.patients {
            let nhs = p.nhs_number.digits().to_string();
            basis.nhs_owners.insert(nhs.clone(), p.patient_id.clone());
            basis.patients.insert(
                p.patient_id.clone(),
                PatientHeaderRow {
                    id: p.patient_id.clone(),
                    nhs_number: nhs,
                    practice_ods: p.practice_ods.clone(),
                    birth_date: p.birth_date,
                },
            );
        }
        for r in &b.resources {
            basis.resources.insert(
                (r.resource_type.as_str().to_string(), r.id.clone()),
                StoredResource {
                    patient_id: r.patient_id(),
                    json: serde_json::to_string(&r.json).unwrap(),
                    deleted: false,
                },
            );
        }
        basis
    }

    /// A practice's own system (A81001) against rows other practices hold: each way of
    /// touching another practice's patient is refused, naming the entry; its own pass.
    #[test]
    fn a_practice_may_touch_only_its_own_patients() {
        let b = batch(
            vec![patient("p1", "9990000026"), condition("c1", "p1", "v1")],
            &["Condition/c9"],
        );
        let none = BTreeMap::new();
        // Nothing held yet: its own new patient is fine.
        assert_eq!(
            check_practice_owns(&b, &ImportBasis::default(), &none, "A81001"),
            Ok(())
        );
        // The bundle registers p1 with A81001; another practice may not send it.
        let e = check_practice_owns(&b, &ImportBasis::default(), &none, "B82002").unwrap_err();
        assert_eq!(
            (e.entry, e.element.as_str()),
            (Some(0), "generalPractitioner")
        );
        assert!(e.message.contains("A81001"), "{e}");

        // p1 is held for B82002: A81001 may not take the patient over.
        let mut held_elsewhere = ImportBasis::default();
        held_elsewhere.patients.insert(
            "p1".into(),
            PatientHeaderRow {
                id: "p1".into(),
                nhs_number: "9990000026".into(),
                practice_ods: "B82002".into(),
                birth_date: None,
            },
        );
        let e = check_practice_owns(&b, &held_elsewhere, &none, "A81001").unwrap_err();
        assert_eq!((e.entry, e.element.as_str()), (Some(0), "id"));
        assert!(e.message.contains("B82002"), "{e}");

        // c1 is held for q1, a patient of B82002.
        let owners = BTreeMap::from([("q1".to_string(), "B82002".to_string())]);
        let mut resource_elsewhere = ImportBasis::default();
        resource_elsewhere.resources.insert(
            ("Condition".into(), "c1".into()),
            StoredResource {
                patient_id: Some("q1".into()),
                json: "{}".into(),
                deleted: false,
            },
        );
        let e = check_practice_owns(&b, &resource_elsewhere, &owners, "A81001").unwrap_err();
        assert_eq!(
            (e.entry, e.element.as_str(), e.resource.as_deref()),
            (Some(1), "id", Some("Condition/c1"))
        );

        // Deleting c9, held for q1, is touching q1 too.
        let mut deletion_elsewhere = ImportBasis::default();
        deletion_elsewhere.resources.insert(
            ("Condition".into(), "c9".into()),
            StoredResource {
                patient_id: Some("q1".into()),
                json: "{}".into(),
                deleted: false,
            },
        );
        let e = check_practice_owns(&b, &deletion_elsewhere, &owners, "A81001").unwrap_err();
        assert_eq!(
            (e.element.as_str(), e.resource.as_deref()),
            ("request.url", Some("Condition/c9"))
        );
        // A resource moving between two of its own patients is its own business.
        let own = BTreeMap::from([("q1".to_string(), "A81001".to_string())]);
        assert_eq!(
            check_practice_owns(&b, &resource_elsewhere, &own, "A81001"),
            Ok(())
        );
    }

    #[test]
    fn a_new_patient_is_inserted_without_a_header_row_and_each_item_makes_a_feed_row() {
        let b = batch(
            vec![patient("p1", "9990000026"), condition("c1", "p1", "v1")],
            &[],
        );
        let (writes, report) = plan(&b, &ImportBasis::default()).unwrap();
        assert_eq!(writes.patients.len(), 1);
        assert!(!writes.patients[0].header_changed);
        assert_eq!(writes.practices, ["A81001"]);
        assert_eq!(
            writes.organisations,
            [("A81001".to_string(), "Riverside Surgery".to_string())]
        );
        // The Patient resource and the Condition, both the patient's.
        assert_eq!(writes.resources.len(), 2);
        assert!(writes.resources.iter().all(|r| r.moved_from.is_none()));
        assert_eq!(
            (report.upserted, report.unchanged, report.feed_rows),
            (2, 0, 2)
        );
    }

    #[test]
    fn an_identical_import_writes_nothing_but_organisations() {
        let b = batch(
            vec![patient("p1", "9990000026"), condition("c1", "p1", "v1")],
            &[],
        );
        let (writes, report) = plan(&b, &basis_after(&b)).unwrap();
        assert!(writes.patients.is_empty() && writes.resources.is_empty());
        assert!(writes.deletions.is_empty());
        assert_eq!(
            (report.upserted, report.unchanged, report.feed_rows),
            (0, 2, 0)
        );
    }

    #[test]
    fn changed_header_moved_item_and_deletions_make_their_feed_rows() {
        let before = batch(
            vec![
                patient("p1", "9990000026"),
                patient("p2", "9990000034"),
                condition("c1", "p2", "v1"),
                condition("c2", "p1", "v1"),
            ],
            &[],
        );
        let basis = basis_after(&before);
        // p1 moves practice; c1 moves from p2 to p1; c2 is deleted; c9 never existed.
        let mut p1 = patient("p1", "9990000026");
        p1["generalPractitioner"][0]["identifier"]["value"] = json!("B82003");
        let after = batch(
            vec![p1, condition("c1", "p1", "v1")],
            &["Condition/c2", "Condition/c9"],
        );
        let (writes, report) = plan(&after, &basis).unwrap();
        assert_eq!(writes.patients.len(), 1);
        assert!(writes.patients[0].header_changed);
        let c1 = writes.resources.iter().find(|r| r.id == "c1").unwrap();
        assert_eq!(c1.moved_from.as_deref(), Some("p2"));
        assert_eq!(c1.patient_id.as_deref(), Some("p1"));
        assert_eq!(writes.deletions.len(), 1);
        assert_eq!(writes.deletions[0].patient_id.as_deref(), Some("p1"));
        // header + the Patient resource (its JSON changed) + c1 upsert + c1 moved + c2 delete.
        assert_eq!(report.feed_rows, 5);
        assert_eq!(report.deleted, 1);
    }

    #[test]
    fn an_nhs_number_of_another_record_refuses_the_bundle_but_a_swap_inside_it_does_not() {
        let mut basis = ImportBasis::default();
        basis
            .nhs_owners
            .insert("9990000026".into(), "someone-else".into());
        let e = plan(&batch(vec![patient("p1", "9990000026")], &[]), &basis).unwrap_err();
        assert_eq!(e.element, "identifier");
        assert_eq!(e.resource.as_deref(), Some("Patient/p1"));

        // p1 gives up 0026 for 0034 and a new patient takes 0026, in that order.
        let basis = basis_after(&batch(vec![patient("p1", "9990000026")], &[]));
        let swap = batch(
            vec![patient("p1", "9990000034"), patient("p2", "9990000026")],
            &[],
        );
        let (writes, _) = plan(&swap, &basis).unwrap();
        assert_eq!(writes.patients.len(), 2);
    }

    #[test]
    fn the_summary_names_who_was_registered_with_the_sending_practice() {
        let mut report = ImportReport {
            sender: Some(("C81001".into(), "Riverside Surgery".into())),
            ..ImportReport::default()
        };
        assert_eq!(report.registration_note(), None);
        report.registered_with_sender = vec!["a".into()];
        assert_eq!(
            report.registration_note().unwrap(),
            "1 patient had no registered practice in the bundle and was registered with \
             C81001 (Riverside Surgery), the sending practice: Patient/a"
        );
        report.registered_with_sender.push("b".into());
        assert_eq!(
            report.registration_note().unwrap(),
            "2 patients had no registered practice in the bundle and were registered with \
             C81001 (Riverside Surgery), the sending practice: Patient/a, Patient/b"
        );
    }

    #[test]
    fn only_a_member_practice_registers_the_patients_of_its_bundle() {
        let mut orphan = patient("p1", "9990000026");
        orphan
            .as_object_mut()
            .unwrap()
            .remove("generalPractitioner");
        let text = json!({"resourceType": "Bundle", "entry": [{"resource": orphan}]}).to_string();
        let practice = Sender {
            ods: "C81001",
            name: "Riverside Surgery",
            practice: true,
        };
        let b = prepare_import(&text, Some(practice)).unwrap();
        assert_eq!(b.registered_with_sender, ["p1"]);
        assert_eq!(b.patients[0].practice_ods, "C81001");
        let e = prepare_import(&text, None).unwrap_err();
        assert_eq!(e.element, "generalPractitioner");
        let hospital = Sender {
            ods: "RXX01",
            name: "General Hospital",
            practice: false,
        };
        let e = prepare_import(&text, Some(hospital)).unwrap_err();
        assert_eq!(e.element, "generalPractitioner");
        assert!(e.message.contains("RXX01 is not a member practice"), "{e}");
    }

    #[test]
    fn deleting_an_item_the_same_bundle_upserts_deletes_it_once() {
        let b = batch(
            vec![patient("p1", "9990000026"), condition("c1", "p1", "v1")],
            &["Condition/c1", "Condition/c1"],
        );
        let (writes, report) = plan(&b, &ImportBasis::default()).unwrap();
        assert_eq!(writes.deletions.len(), 1);
        assert_eq!(report.deleted, 1);
    }

    #[tokio::test]
    async fn a_plan_whose_rows_changed_is_refused_whole_and_planned_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = store::open(&DatabaseUrl::in_data_dir(dir.path()))
            .await
            .unwrap();
        let first = batch(
            vec![patient("p1", "9990000026"), condition("c1", "p1", "v1")],
            &[],
        );
        apply_batch(store.as_ref(), &first, Utc::now())
            .await
            .unwrap();

        // Plan v2 of c1 ...
        let second = batch(
            vec![patient("p1", "9990000026"), condition("c1", "p1", "v2")],
            &[],
        );
        let keys = import_keys(&second);
        let basis = store.import_basis(&keys).await.unwrap();
        let (writes, report) = plan(&second, &basis).unwrap();
        let planned = PlannedImport {
            keys,
            basis,
            writes,
            audit: import_event(&second, &report, Utc::now()),
            at: Utc::now(),
        };
        // ... while another writer imports v3 first.
        let third = batch(
            vec![patient("p1", "9990000026"), condition("c1", "p1", "v3")],
            &[],
        );
        apply_batch(store.as_ref(), &third, Utc::now())
            .await
            .unwrap();
        let head = store.feed_head().await.unwrap();
        let audit_rows = store.audit_rows().await.unwrap().len();
        assert!(matches!(
            store.apply_import(planned, audit::seal).await,
            Err(StoreError::Stale(_))
        ));
        // Nothing of the stale plan was written.
        assert_eq!(store.feed_head().await.unwrap(), head);
        assert_eq!(store.audit_rows().await.unwrap().len(), audit_rows);
        let c1 = store
            .patient_resources("p1")
            .await
            .unwrap()
            .into_iter()
            .find(|r| r.id == "c1")
            .unwrap();
        assert!(c1.json.contains("v3"));

        // Planned again from fresh reads, it goes through, with one upsert row for c1.
        let report = apply_batch(store.as_ref(), &second, Utc::now())
            .await
            .unwrap();
        assert_eq!((report.upserted, report.feed_rows), (1, 1));
        let snap = store.feed_snapshot().await.unwrap();
        let last = snap.feed_after(head, head + 1, 10).await.unwrap();
        assert_eq!(last.len(), 1);
        assert_eq!(last[0].op, FeedOp::Upsert);
        drop(snap);
        let rows = store.audit_rows().await.unwrap();
        assert_eq!(audit::verify(&rows), Ok(3));
    }
}
