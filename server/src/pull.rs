//! The pull algorithm: one page of changes that brings a device's cache towards the user's
//! filtered view, whatever happened since its cursor.
//!
//! # Model
//!
//! A device holds a set of patients, recorded in its cursor as the hash of a stored
//! membership set (`held`). For those patients its cache is current to the cursor's `seq`.
//! A second set (`stale`) names patients the device holds but whose copy may be out of date:
//! they must be re-sent in full (a `PatientAdded` snapshot replaces what the device held) or
//! purged. The candidate set `C` is computed afresh on every page: patients with an active entry
//! on a list of the user's service (or a break-glass entry of the user), whose practice an
//! agreement for the user's role covers, and who have not dissented (break-glass overrides
//! dissent).
//!
//! # One page
//!
//! 1. Feed rows with `seq` in `(cursor.seq, head]`, in order, for patients in `held`:
//!    - a patient no longer in `C` moves to `stale` (no change is sent for them now; they are
//!      purged or re-sent in full below, so nothing they missed matters);
//!    - an upsert or delete row sends the resource's *current* state: `Upsert` when the
//!      agreements make it visible, `Delete` otherwise (deleted, newly confidential, moved to
//!      another patient); a list row sends `ListChanged`; a header row sends a full
//!      `PatientAdded` snapshot;
//!    - each touched patient also gets a `Withheld` change with recomputed counts.
//!
//!    The page stops before the byte budget is exceeded; the cursor then keeps `seq` = the last
//!    row consumed. Every change is the state at the page's read, so re-sending an older row's
//!    change later is harmless: all changes are idempotent.
//! 2. Once caught up with `head`: `PatientRemoved` for patients in `held` or `stale` not in
//!    `C`, then `PatientAdded` snapshots for patients of `C` not in `held` (sorted by id), until
//!    the budget. The new cursor has `seq = head`.
//!
//! Before the feed, held patients with a list entry that ended by the clock since the cursor
//! was issued get a `ListChanged` (reaching an end time writes no feed row).
//!
//! Everything is read in one read transaction, so head, rows and snapshots agree.
//!
//! A new day moves the look-back windows: every held patient's copy is then the view of the
//! cursor's `view_date`, and they are all put in the cursor's `redate` set (from that date).
//! Once caught up with the feed (step 2, after the removals and before the additions), each
//! re-dated patient gets only what the move changed: an `Upsert` of each resource that comes
//! into view, a `Delete` of each that goes out of it, and `Withheld` when the counts change,
//! until the page budget; then they leave `redate`. The feed meanwhile sends them today's state
//! of whatever changed, so copy plus feed plus re-dating is today's view. (Before, a new day
//! re-sent the whole caseload.) A patient still waiting to be re-dated when yet another day
//! begins is re-sent in full (`stale`): a cursor re-dates from one day only.
//!
//! After a page with `more == false`, `held == C`, `stale` and `redate` are empty and every held patient's
//! copy is its filtered state at the page's read: the device has converged.
//!
//! # The feed's visibility rule (several writers, several nodes)
//!
//! A cursor says "current to `seq`", and the next pull reads only rows after it, so the
//! pull relies on one rule every backend keeps: **once a snapshot shows `head = h`, no row
//! with `seq <= h` ever appears later.** Without it a transaction that took seq 10 but
//! committed after another took and committed seq 11 would be skipped for good by every
//! device that read head 11 in between (the sequence gap of concurrent transactions). The
//! SQLite backend keeps the rule trivially (one writer at a time, seqs taken inside its write
//! transaction). The PostgreSQL backend keeps it by taking `pg_advisory_xact_lock(FEED_LOCK)`
//! in every transaction that appends (or prunes) feed rows, before it takes a seq, and holding
//! it to commit (PostgreSQL lets go of a transaction's locks only once its commit is
//! visible): seqs are handed out in commit order, on one node or many. A seq of a transaction
//! that rolls back is never used, which is harmless. Writes to the feed are serialised by
//! this; reads are not. `convergence_tests.rs` tests the rule directly on every backend, with
//! concurrent imports and list changes against a reader following its head.
//!
//! # One algorithm over every backend
//!
//! This module owns the whole pull: [`pull`] opens one [`FeedSnapshot`] (a read transaction of
//! whichever backend), runs [`build_page`] over it, drops it, and saves the page's membership
//! sets through [`FeedStore::save_member_sets`]. A backend only answers the snapshot's reads
//! (rows in, rows out); it never sees an agreement, a cursor or a page budget.
//!
//! The snapshot trait is async so that a backend on an async client (PostgreSQL through
//! tokio-postgres) implements each read as one query on its open transaction, with no
//! thread parked per page; the SQLite backend answers each read on tokio's blocking pool from
//! a pooled connection that holds the read transaction. The algorithm is therefore written
//! once, and the convergence suite (`convergence_tests.rs`), which runs it through
//! `Arc<dyn Store>`, checks it for any backend it is given. (The other design, a sync snapshot
//! run on a blocking thread, would have forced an async backend to block on its own runtime
//! for every read.)
//!
//! Reads are per patient and per feed row; a backend whose round trips are dear can answer
//! them from batches it prefetches inside its snapshot without changing this module.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use doorstep_protocol::{ListKind, PatientHeader, ResyncReason, WithheldCount};
use doorstep_record::Section;
use doorstep_record::agreement::{
    Agreement, Decision, ExclusionSets, ListScope, covers, evaluate_for_service, sensitive,
};
use doorstep_record::fhir::Resource;
use serde::{Serialize, Serializer};
use serde_json::value::RawValue;

use crate::cursor::{self, CursorState};
use crate::decisions::{DecisionMemo, Version};
use crate::lists;
use crate::store::{
    FeedOp, FeedSnapshot, FeedStore, ListEntryRow, PatientRow, ResourceRow, Store, StoreError,
    UserRow,
};

/// Feed rows read per query while scanning.
const SCAN_BATCH: usize = 2_000;
/// At most this many feed rows are scanned for one page, so a page answers quickly even after
/// a long absence; the device simply asks again.
const MAX_SCAN: usize = 50_000;

/// A change as a page carries it: its resources as [`Shared`].
pub type Change = doorstep_protocol::Change<Shared>;

/// A resource on its way to a device. Almost always the text the store holds, sent as it is:
/// parsing it into a tree and printing it again was most of a pull's cost, and the decision
/// to send it comes from the memo ([`crate::decisions`]) or from one parse. Only a
/// confidential Patient is sent as JSON built for the device (redacted).
#[derive(Debug, Clone)]
pub enum Shared {
    /// The stored text, checked to be JSON when it was taken from the row.
    Stored(Box<RawValue>),
    /// JSON made for this page.
    Built(serde_json::Value),
}

impl Shared {
    /// The resource as a parsed tree (for tests and the few readers that need one).
    pub fn to_value(&self) -> serde_json::Value {
        match self {
            // Checked to be JSON when made, so it parses.
            Shared::Stored(raw) => serde_json::from_str(raw.get()).unwrap_or_default(),
            Shared::Built(value) => value.clone(),
        }
    }

    fn stored(row: ResourceRow) -> Result<Shared, StoreError> {
        let ResourceRow {
            resource_type,
            id,
            json,
            ..
        } = row;
        RawValue::from_string(json)
            .map(Shared::Stored)
            .map_err(|e| StoreError::Corrupt(format!("{resource_type}/{id}: {e}")))
    }

    /// Bytes of JSON it adds to a page (the budget counts what the device receives).
    fn json_len(&self) -> usize {
        match self {
            Shared::Stored(raw) => raw.get().len(),
            Shared::Built(value) => value.to_string().len(),
        }
    }
}

impl PartialEq for Shared {
    fn eq(&self, other: &Shared) -> bool {
        self.to_value() == other.to_value()
    }
}

impl Serialize for Shared {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Shared::Stored(raw) => raw.serialize(serializer),
            Shared::Built(value) => value.serialize(serializer),
        }
    }
}

/// Whose access a pull is computed for.
#[derive(Debug, Clone, PartialEq)]
pub struct UserScope {
    pub user_id: String,
    pub role: String,
    pub service_id: String,
    /// The agreements of the user's service that name the user's role and are in force
    /// today (a retired or not yet valid agreement covers no one).
    pub agreements: Vec<Agreement>,
    /// The exclusion sets every agreement applies: the shipped floor, extended by the
    /// server's loads ([`UserScope::with_sets`]).
    pub sets: Arc<ExclusionSets>,
    /// The value-set version `sets` are current to (0: the shipped floor only); part of
    /// the access epoch, so a load makes devices rebuild.
    pub sets_version: i64,
    /// The user's team, if any (`crate::lists::reaches`).
    pub team: Option<String>,
    /// Whose lists reach the user: [`ListScope::Team`] when an agreement in force for the
    /// user says so, else [`ListScope::Own`].
    pub lists: ListScope,
    /// The node's memo of decisions, with this scope's access epoch
    /// ([`UserScope::with_decisions`]); none: every resource is decided afresh.
    pub decisions: Option<Decisions>,
}

/// A memo of decisions and the access epoch they are kept under for one scope.
#[derive(Debug, Clone)]
pub struct Decisions {
    memo: Arc<DecisionMemo>,
    epoch: String,
}

impl PartialEq for Decisions {
    fn eq(&self, other: &Decisions) -> bool {
        Arc::ptr_eq(&self.memo, &other.memo) && self.epoch == other.epoch
    }
}

impl UserScope {
    /// Whether `entry` reaches this user ([`lists::reaches`]).
    pub fn reaches(&self, entry: &ListEntryRow) -> bool {
        lists::reaches(entry, &self.user_id, self.team.as_deref(), self.lists)
    }

    /// The scope with the server's exclusion sets, current to value-set `version` (and no
    /// memo: decisions kept under the old sets' epoch must not be used).
    pub fn with_sets(self, (version, sets): (i64, Arc<ExclusionSets>)) -> UserScope {
        UserScope {
            sets,
            sets_version: version,
            decisions: None,
            ..self
        }
    }

    /// The scope deciding through `memo`, under its access epoch as it is now (call it last).
    pub fn with_decisions(self, memo: Arc<DecisionMemo>) -> UserScope {
        let epoch = cursor::access_epoch(
            &self.role,
            &self.service_id,
            &self.agreements,
            self.sets_version,
        );
        UserScope {
            decisions: Some(Decisions { memo, epoch }),
            ..self
        }
    }
}

/// The user's scope today: role, service, and the service's agreements naming the role that
/// are in force ([`Agreement::in_force`]); the shipped exclusion sets.
pub async fn user_scope(store: &dyn Store, user: &UserRow) -> Result<UserScope, StoreError> {
    user_scope_on(store, user, Utc::now().date_naive()).await
}

/// [`user_scope`] on day `today`.
pub async fn user_scope_on(
    store: &dyn Store,
    user: &UserRow,
    today: NaiveDate,
) -> Result<UserScope, StoreError> {
    let mut agreements: Vec<Agreement> = store
        .agreements_for_service(&user.service_id)
        .await?
        .into_iter()
        .filter(|a| a.roles.iter().any(|r| r == &user.role) && a.in_force(today))
        .collect();
    agreements.sort_by(|a, b| a.id.cmp(&b.id));
    let lists = if agreements.iter().any(|a| a.lists == ListScope::Team) {
        ListScope::Team
    } else {
        ListScope::Own
    };
    Ok(UserScope {
        user_id: user.id.clone(),
        role: user.role.clone(),
        service_id: user.service_id.clone(),
        agreements,
        sets: shipped_sets(),
        sets_version: 0,
        team: store.team_of(&user.id).await?,
        lists,
        decisions: None,
    })
}

/// The shipped exclusion sets, shared (made once).
fn shipped_sets() -> Arc<ExclusionSets> {
    static SETS: std::sync::OnceLock<Arc<ExclusionSets>> = std::sync::OnceLock::new();
    Arc::clone(SETS.get_or_init(|| Arc::new(ExclusionSets::shipped())))
}

/// A pull request: the cursor is already verified (signature, device).
#[derive(Debug, Clone)]
pub struct PullRequest {
    pub device_id: String,
    pub scope: UserScope,
    pub cursor: Option<CursorState>,
    pub now: DateTime<Utc>,
    pub page_bytes: usize,
}

/// The answer to a pull.
#[derive(Debug, Clone, PartialEq)]
pub enum PullOutcome {
    Page(Box<PageResult>),
    /// The device must rebuild its cache (HTTP 410).
    Resync(ResyncReason),
}

/// One page, before the cursor is signed.
#[derive(Debug, Clone, PartialEq)]
pub struct PageResult {
    pub changes: Vec<Change>,
    pub cursor: CursorState,
    pub more: bool,
    /// Membership sets the new cursor names; [`pull`] saves them (content-addressed).
    pub sets: Vec<(String, Vec<String>)>,
    /// Patients sent in full on this page (for the audit log).
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Every patient whose record data this page carried (a snapshot or a changed resource),
    /// with what gave the user access: one audit event each (`record_sent`).
    pub carried: Vec<Carried>,
}

/// A patient a page carried record data of, and under what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Carried {
    pub patient_id: String,
    /// The ids of the user's agreements covering the patient's practice.
    pub agreements: Vec<String>,
    /// The reason given, when a break-glass entry brought the patient.
    pub break_glass: Option<String>,
    /// Changes of the page about the patient.
    pub changes: usize,
}

/// The patients `changes` carried record data of (see [`Carried`]).
fn carried(
    changes: &[Change],
    eligible: &BTreeMap<String, (PatientRow, Vec<ListEntryRow>)>,
    scope: &UserScope,
) -> Vec<Carried> {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for change in changes {
        let id = match change {
            Change::PatientAdded { patient, .. } => patient.patient_id.as_str(),
            Change::Upsert { patient_id, .. } => patient_id.as_str(),
            _ => continue,
        };
        *counts.entry(id).or_default() += 1;
    }
    counts
        .into_iter()
        .map(|(id, changes)| {
            let (agreements, break_glass) = match eligible.get(id) {
                Some((patient, entries)) => (
                    scope
                        .agreements
                        .iter()
                        .filter(|a| a.applies(&patient.practice_ods, &scope.role))
                        .map(|a| a.id.clone())
                        .collect(),
                    lists::break_glass_reason(entries),
                ),
                None => (Vec::new(), None),
            };
            Carried {
                patient_id: id.to_string(),
                agreements,
                break_glass,
                changes,
            }
        })
        .collect()
}

/// One page for `request`: built over one snapshot of `store`, then the membership sets the
/// new cursor names are saved (empty sets are never stored: every cursor may name one).
pub async fn pull(store: &dyn FeedStore, request: PullRequest) -> Result<PullOutcome, StoreError> {
    let outcome = {
        let snap = store.feed_snapshot().await?;
        build_page(snap.as_ref(), &request).await?
        // The snapshot (its read transaction) ends here, before the write below.
    };
    if let PullOutcome::Page(page) = &outcome
        && !sets_still_fresh(request.cursor.as_ref(), &page.cursor)
    {
        let sets: Vec<(String, Vec<String>)> = page
            .sets
            .iter()
            .filter(|(_, ids)| !ids.is_empty())
            .cloned()
            .collect();
        if !sets.is_empty() {
            store.save_member_sets(sets, page.cursor.issued).await?;
        }
    }
    Ok(outcome)
}

/// How stale a membership set's last use may be before a pull that names it again records
/// the use (pruning keeps sets used within the feed's retention, 30 days by default).
const SET_USE_REFRESH: chrono::Duration = chrono::Duration::hours(1);

/// Whether the new cursor names only the sets the old one did, and the old one was issued
/// within [`SET_USE_REFRESH`]: nothing need be written for the page (a sync with nothing new,
/// the commonest pull of all, is then a read only).
fn sets_still_fresh(old: Option<&CursorState>, new: &CursorState) -> bool {
    let Some(old) = old else { return false };
    old.set_hash == new.set_hash
        && old.stale_hash == new.stale_hash
        && old.redate.as_ref().map(|r| &r.set_hash) == new.redate.as_ref().map(|r| &r.set_hash)
        && new.issued - old.issued < SET_USE_REFRESH
}

/// The patient ids of the membership set `hash`: the empty set is known without a read.
async fn member_set(
    snap: &dyn FeedSnapshot,
    hash: &str,
) -> Result<Option<Vec<String>>, StoreError> {
    if hash == cursor::set_hash(&[]) {
        return Ok(Some(Vec::new()));
    }
    snap.member_set(hash).await
}

/// The filtered view of one patient for a user, as a `PatientAdded` change, with its size in
/// bytes of JSON.
pub async fn patient_view(
    snap: &dyn FeedSnapshot,
    scope: &UserScope,
    today: NaiveDate,
    patient: &PatientRow,
    entries: &[ListEntryRow],
) -> Result<(Change, usize), StoreError> {
    let (resources, withheld, resource_bytes) =
        filtered_resources(snap, scope, today, patient).await?;
    let mut change = Change::PatientAdded {
        patient: PatientHeader {
            patient_id: patient.id.clone(),
            nhs_number: patient.nhs_number.clone(),
            registered_practice_ods: patient.practice_ods.clone(),
            registered_practice_name: patient.practice_name.clone(),
            birth_date: patient.birth_date,
        },
        entries: wire_entries(entries),
        resources: Vec::new(),
        withheld,
    };
    // The resources serialise to their stored text (compact JSON, same key order), so the
    // snapshot is not serialised twice just to learn its size.
    let size = size_of(&change) + resource_bytes;
    if let Change::PatientAdded { resources: r, .. } = &mut change {
        *r = resources;
    }
    Ok((change, size))
}

async fn filtered_resources(
    snap: &dyn FeedSnapshot,
    scope: &UserScope,
    today: NaiveDate,
    patient: &PatientRow,
) -> Result<(Vec<Shared>, Vec<WithheldCount>, usize), StoreError> {
    let rows = snap.live_resources(&patient.id).await?;
    let decided = decide_rows(&rows, patient, scope, today)?;
    let mut visible = Vec::new();
    let mut bytes = 0;
    let mut counts: BTreeMap<Section, u32> = BTreeMap::new();
    for (row, (decision, parsed)) in rows.into_iter().zip(decided) {
        match decision {
            Decision::Visible => {
                let shared = shared_of(row, parsed)?;
                bytes += shared.json_len() + 1;
                visible.push(shared);
            }
            Decision::Withheld(section) => *counts.entry(section).or_default() += 1,
            Decision::NotShared => {}
        }
    }
    Ok((visible, withheld_counts(counts), bytes))
}

/// Below this many rows to decide afresh, a patient's decisions are made on the pull's own
/// thread.
const DECIDE_APART: usize = 48;

/// [`decide_row`] for each of a patient's rows, in order. Deciding afresh is parsing and
/// filtering, the CPU of an initial sync, and a page is built one patient after another
/// while the device applies the previous page: when a record has many rows the memo does not
/// answer, they are decided in two halves, one on a thread of its own, so the server's share
/// can use both cores. Rows the memo answers cost a lookup and never start a thread.
#[allow(clippy::type_complexity)]
fn decide_rows(
    rows: &[ResourceRow],
    patient: &PatientRow,
    scope: &UserScope,
    today: NaiveDate,
) -> Result<Vec<(Decision, Option<Resource>)>, StoreError> {
    let mut decided: Vec<Option<(Decision, Option<Resource>)>> = rows
        .iter()
        .map(|row| {
            remembered(&row.resource_type, &row.id, row.seq, patient, scope, today)
                .map(|d| (d, None))
        })
        .collect();
    let afresh: Vec<usize> = (0..rows.len()).filter(|&i| decided[i].is_none()).collect();
    let decide_all = |at: &[usize]| {
        at.iter()
            .map(|&i| decide_afresh(&rows[i], patient, scope, today))
            .collect::<Result<Vec<_>, StoreError>>()
    };
    let fresh = if afresh.len() < DECIDE_APART {
        decide_all(&afresh)?
    } else {
        let (first, second) = afresh.split_at(afresh.len() / 2);
        std::thread::scope(|s| {
            let other = s.spawn(|| decide_all(second));
            let mut fresh = decide_all(first)?;
            match other.join() {
                Ok(rest) => fresh.extend(rest?),
                Err(panic) => std::panic::resume_unwind(panic),
            }
            Ok::<_, StoreError>(fresh)
        })?
    };
    for (i, d) in afresh.into_iter().zip(fresh) {
        decided[i] = Some(d);
    }
    Ok(decided.into_iter().flatten().collect())
}

/// A visible resource as it is sent: its stored text, or a confidential Patient redacted
/// (only a Patient can need it, so nothing else is parsed for the check).
fn shared_of(row: ResourceRow, parsed: Option<Resource>) -> Result<Shared, StoreError> {
    if row.resource_type == "Patient" {
        let resource = match parsed {
            Some(resource) => resource,
            None => parse_row(&row)?,
        };
        if sensitive::needs_redaction(&resource) {
            return Ok(Shared::Built(sensitive::redact_for_sharing(&resource).json));
        }
    }
    Shared::stored(row)
}

/// A patient's withheld counts alone. A delta touches a patient for one changed resource
/// and sends their counts again, so the patient's resources are first read without their
/// JSON: when the memo keeps every decision, nothing is read or parsed beyond that. Only
/// when it misses one are the resources read whole (one read) and the missing ones decided.
async fn withheld_of(
    snap: &dyn FeedSnapshot,
    scope: &UserScope,
    today: NaiveDate,
    patient: &PatientRow,
) -> Result<Vec<WithheldCount>, StoreError> {
    let kept: Option<Vec<Decision>> = match scope.decisions {
        Some(_) => snap
            .live_resource_versions(&patient.id)
            .await?
            .iter()
            .map(|v| remembered(&v.resource_type, &v.id, v.seq, patient, scope, today))
            .collect(),
        None => None,
    };
    let decisions = match kept {
        Some(decisions) => decisions,
        None => snap
            .live_resources(&patient.id)
            .await?
            .iter()
            .map(|row| decide_row(row, patient, scope, today).map(|(decision, _)| decision))
            .collect::<Result<Vec<_>, StoreError>>()?,
    };
    let mut counts: BTreeMap<Section, u32> = BTreeMap::new();
    for decision in decisions {
        if let Decision::Withheld(section) = decision {
            *counts.entry(section).or_default() += 1;
        }
    }
    Ok(withheld_counts(counts))
}

/// The decision for a stored resource: the memo's when it keeps one, else decided from the
/// parsed resource (answered too, so the caller need not parse it again) and kept.
fn decide_row(
    row: &ResourceRow,
    patient: &PatientRow,
    scope: &UserScope,
    today: NaiveDate,
) -> Result<(Decision, Option<Resource>), StoreError> {
    match remembered(&row.resource_type, &row.id, row.seq, patient, scope, today) {
        Some(decision) => Ok((decision, None)),
        None => decide_afresh(row, patient, scope, today),
    }
}

/// The memo's key for the decision on version `seq` of a stored resource.
fn version<'a>(
    d: &'a Decisions,
    day: NaiveDate,
    patient: &'a PatientRow,
    resource_type: &'a str,
    id: &'a str,
    seq: i64,
) -> Version<'a> {
    Version {
        epoch: &d.epoch,
        day,
        practice: &patient.practice_ods,
        resource_type,
        id,
        seq,
    }
}

/// The decision the memo keeps for version `seq` of a stored resource, if it keeps one.
fn remembered(
    resource_type: &str,
    id: &str,
    seq: i64,
    patient: &PatientRow,
    scope: &UserScope,
    today: NaiveDate,
) -> Option<Decision> {
    let d = scope.decisions.as_ref()?;
    d.memo
        .get(&version(d, today, patient, resource_type, id, seq))
}

/// Parse and decide, and keep the decision in the memo.
fn decide_afresh(
    row: &ResourceRow,
    patient: &PatientRow,
    scope: &UserScope,
    today: NaiveDate,
) -> Result<(Decision, Option<Resource>), StoreError> {
    let resource = parse_row(row)?;
    let decision = decide(&resource, patient, scope, today);
    if let Some(d) = &scope.decisions {
        d.memo.put(
            &version(d, today, patient, &row.resource_type, &row.id, row.seq),
            decision,
        );
    }
    Ok((decision, Some(resource)))
}

fn withheld_counts(counts: BTreeMap<Section, u32>) -> Vec<WithheldCount> {
    counts
        .into_iter()
        .map(|(section, count)| WithheldCount {
            section: section.as_str().to_string(),
            count,
        })
        .collect()
}

fn decide(
    resource: &Resource,
    patient: &PatientRow,
    scope: &UserScope,
    today: NaiveDate,
) -> Decision {
    // The service matters for Doorstep notes: its own users see what it wrote. The sets are
    // the server's: the shipped RCGP floor extended by what was loaded.
    evaluate_for_service(
        resource,
        &patient.practice_ods,
        &scope.role,
        &scope.service_id,
        &scope.agreements,
        &scope.sets,
        today,
    )
}

pub(crate) fn parse_row(row: &ResourceRow) -> Result<Resource, StoreError> {
    let value: serde_json::Value = serde_json::from_str(&row.json)
        .map_err(|e| StoreError::Corrupt(format!("{}/{}: {e}", row.resource_type, row.id)))?;
    Resource::from_json(value)
        .map_err(|e| StoreError::Corrupt(format!("{}/{}: {e}", row.resource_type, row.id)))
}

fn wire_entries(entries: &[ListEntryRow]) -> Vec<doorstep_protocol::ListEntry> {
    let mut sorted: Vec<&ListEntryRow> = entries.iter().collect();
    sorted
        .sort_by(|a, b| (a.starts_at, &a.list_name, a.id).cmp(&(b.starts_at, &b.list_name, b.id)));
    sorted.into_iter().map(ListEntryRow::to_wire).collect()
}

/// The entries of lists that reach the user ([`lists::reaches`]) and had not ended at `at`.
pub async fn entries_reaching(
    snap: &dyn FeedSnapshot,
    scope: &UserScope,
    at: DateTime<Utc>,
) -> Result<Vec<ListEntryRow>, StoreError> {
    Ok(snap
        .scope_entries(&scope.service_id, &scope.user_id, at)
        .await?
        .into_iter()
        .filter(|e| scope.reaches(e))
        .collect())
}

/// The patients this user may have on a device now (`C`), with their active entries.
pub async fn candidates(
    snap: &dyn FeedSnapshot,
    scope: &UserScope,
    now: DateTime<Utc>,
) -> Result<BTreeMap<String, (PatientRow, Vec<ListEntryRow>)>, StoreError> {
    let entries = entries_reaching(snap, scope, now)
        .await?
        .into_iter()
        .filter(|e| e.is_active(now));
    covered_patients(snap, scope, entries).await
}

/// The patients of `entries` that an agreement covers for the user and who have not
/// dissented (unless a break-glass entry brought them), each with its entries.
pub async fn covered_patients(
    snap: &dyn FeedSnapshot,
    scope: &UserScope,
    entries: impl IntoIterator<Item = ListEntryRow>,
) -> Result<BTreeMap<String, (PatientRow, Vec<ListEntryRow>)>, StoreError> {
    let mut by_patient: BTreeMap<String, Vec<ListEntryRow>> = BTreeMap::new();
    for entry in entries {
        by_patient
            .entry(entry.patient_id.clone())
            .or_default()
            .push(entry);
    }
    let ids: Vec<String> = by_patient.keys().cloned().collect();
    let mut out = BTreeMap::new();
    for patient in snap.patients(&ids).await? {
        let entries = by_patient.remove(&patient.id).unwrap_or_default();
        let broke_glass = entries.iter().any(|e| e.kind == ListKind::BreakGlass);
        let covered = covers(&scope.agreements, &patient.practice_ods, &scope.role);
        if covered && (!patient.dissent || broke_glass) {
            out.insert(patient.id.clone(), (patient, entries));
        }
    }
    Ok(out)
}

fn size_of(change: &Change) -> usize {
    // The page budget counts the JSON the device receives (before gzip).
    serde_json::to_vec(change).map(|v| v.len() + 1).unwrap_or(0)
}

/// Build one page for `request` from `snap`.
pub async fn build_page(
    snap: &dyn FeedSnapshot,
    request: &PullRequest,
) -> Result<PullOutcome, StoreError> {
    let scope = &request.scope;
    let now = request.now;
    let today = now.date_naive();
    let epoch = cursor::access_epoch(
        &scope.role,
        &scope.service_id,
        &scope.agreements,
        scope.sets_version,
    );
    let head = snap.head().await?;

    // `redate`: held patients whose copy is the view of day `redate_from` (see the module doc).
    let (start_seq, mut held, mut stale, mut redate, redate_from) = match &request.cursor {
        None => (
            head,
            BTreeSet::new(),
            BTreeSet::new(),
            BTreeSet::new(),
            None,
        ),
        Some(c) => {
            if let Err(reason) = cursor::check(c, &epoch, snap.pruned_through().await?, head) {
                return Ok(PullOutcome::Resync(reason));
            }
            let (Some(h), Some(s)) = (
                member_set(snap, &c.set_hash).await?,
                member_set(snap, &c.stale_hash).await?,
            ) else {
                return Ok(PullOutcome::Resync(ResyncReason::CursorExpired));
            };
            let (redate, redate_from) = match &c.redate {
                None => (BTreeSet::new(), None),
                Some(r) => match member_set(snap, &r.set_hash).await? {
                    Some(ids) => (ids.into_iter().collect(), Some(r.from)),
                    None => return Ok(PullOutcome::Resync(ResyncReason::CursorExpired)),
                },
            };
            let mut held: BTreeSet<String> = h.into_iter().collect();
            let mut stale: BTreeSet<String> = s.into_iter().collect();
            let (redate, redate_from) = redated(
                &mut held,
                &mut stale,
                redate,
                redate_from,
                c.view_date,
                today,
            );
            (c.seq, held, stale, redate, redate_from)
        }
    };

    let eligible = candidates(snap, scope, now).await?;
    let budget = request.page_bytes.max(1);
    let mut used = 0usize;
    let mut changes: Vec<Change> = Vec::new();
    let mut added: Vec<String> = Vec::new();

    // ---- 0. entries that ended by the clock since the device's cursor was made ----
    // (Ending an entry by hand writes a feed row; reaching its end time does not.)
    let mut lists_sent: HashSet<String> = HashSet::new();
    if let Some(c) = &request.cursor
        && c.issued < now
        && !held.is_empty()
    {
        for pid in snap
            .entries_ended_between(&scope.service_id, &scope.user_id, c.issued, now)
            .await?
            .into_iter()
            .filter(|e| scope.reaches(e))
            .map(|e| e.patient_id)
        {
            if let Some((_, entries)) = eligible.get(&pid)
                && held.contains(&pid)
                && lists_sent.insert(pid.clone())
            {
                let change = Change::ListChanged {
                    patient_id: pid,
                    entries: wire_entries(entries),
                };
                used += size_of(&change);
                changes.push(change);
            }
        }
    }

    // ---- 1. the feed, for patients the device holds current ----
    let mut consumed = start_seq;
    let mut cut = false;
    if !held.is_empty() && start_seq < head {
        let mut withheld: BTreeMap<String, Change> = BTreeMap::new();
        let mut snapshotted: HashSet<String> = HashSet::new();
        // By patient as well: a resource moved to another patient makes a feed row for each,
        // and the device must hear of both (an Upsert for one, a Delete for the other).
        let mut resources_sent: HashSet<(String, (String, String))> = HashSet::new();
        let mut scanned = 0usize;
        'scan: loop {
            let rows = snap.feed_after(consumed, head, SCAN_BATCH).await?;
            let exhausted = rows.len() < SCAN_BATCH;
            for row in rows {
                scanned += 1;
                let pid = row.patient_id.clone();
                if !held.contains(&pid) || snapshotted.contains(&pid) {
                    consumed = row.seq;
                    continue;
                }
                let Some((patient, entries)) = eligible.get(&pid) else {
                    // Left the list (or lost coverage) since the last page: purge or re-send
                    // in full once caught up.
                    held.remove(&pid);
                    stale.insert(pid);
                    consumed = row.seq;
                    continue;
                };
                let sized = |change: Change| {
                    let size = size_of(&change);
                    (change, size)
                };
                let new_change: Option<(Change, usize)> = match (row.op, &row.resource) {
                    (FeedOp::Upsert | FeedOp::Delete, Some(key)) => {
                        if resources_sent.contains(&(pid.clone(), key.clone())) {
                            None
                        } else {
                            Some(sized(
                                resource_change(snap, scope, today, patient, key).await?,
                            ))
                        }
                    }
                    (FeedOp::List, _) => (!lists_sent.contains(&pid)).then(|| {
                        sized(Change::ListChanged {
                            patient_id: pid.clone(),
                            entries: wire_entries(entries),
                        })
                    }),
                    (FeedOp::Header, _) => {
                        Some(patient_view(snap, scope, today, patient, entries).await?)
                    }
                    (FeedOp::Upsert | FeedOp::Delete, None) => {
                        return Err(StoreError::Corrupt(format!(
                            "feed row {} has no resource",
                            row.seq
                        )));
                    }
                };
                let mut size = new_change.as_ref().map_or(0, |(_, size)| *size);
                let counts = if row.op != FeedOp::Header
                    && new_change.is_some()
                    && !withheld.contains_key(&pid)
                {
                    let counts = withheld_of(snap, scope, today, patient).await?;
                    let change = Change::Withheld {
                        patient_id: pid.clone(),
                        counts,
                    };
                    size += size_of(&change);
                    Some(change)
                } else {
                    None
                };
                if used + size > budget && (!changes.is_empty() || !withheld.is_empty()) {
                    cut = true;
                    break 'scan;
                }
                used += size;
                consumed = row.seq;
                if let Some(change) = counts {
                    withheld.insert(pid.clone(), change);
                }
                match (row.op, &row.resource) {
                    (FeedOp::Upsert | FeedOp::Delete, Some(key)) => {
                        resources_sent.insert((pid.clone(), key.clone()));
                    }
                    (FeedOp::List, _) => {
                        lists_sent.insert(pid.clone());
                    }
                    (FeedOp::Header, _) => {
                        snapshotted.insert(pid.clone());
                        withheld.remove(&pid);
                        redate.remove(&pid);
                        added.push(pid.clone());
                    }
                    _ => {}
                }
                changes.extend(new_change.map(|(change, _)| change));
            }
            if exhausted {
                break;
            }
            if scanned >= MAX_SCAN {
                cut = true;
                break;
            }
        }
        changes.extend(withheld.into_values());
    }
    if !cut {
        consumed = head;
    }

    // ---- 2. membership, once caught up ----
    let mut removed = Vec::new();
    let mut more = cut;
    if !cut {
        let leaving: Vec<String> = held
            .union(&stale)
            .filter(|p| !eligible.contains_key(*p))
            .cloned()
            .collect();
        for pid in leaving {
            held.remove(&pid);
            stale.remove(&pid);
            let change = Change::PatientRemoved {
                patient_id: pid.clone(),
            };
            used += size_of(&change);
            changes.push(change);
            removed.push(pid);
        }
        redate.retain(|p| held.contains(p));
        // Held patients whose copy is of an earlier day: only what the moved windows changed.
        if let Some(from) = redate_from {
            let due: Vec<String> = redate.iter().cloned().collect();
            for pid in due {
                let Some((patient, _)) = eligible.get(&pid) else {
                    continue;
                };
                let (diff, size) = redated_changes(snap, scope, from, today, patient).await?;
                if used + size > budget && !changes.is_empty() {
                    more = true;
                    break;
                }
                used += size;
                changes.extend(diff);
                redate.remove(&pid);
            }
        }
        for (pid, (patient, entries)) in &eligible {
            if more {
                break;
            }
            if held.contains(pid) {
                continue;
            }
            let (change, size) = patient_view(snap, scope, today, patient, entries).await?;
            if used + size > budget && !changes.is_empty() {
                more = true;
                break;
            }
            used += size;
            changes.push(change);
            held.insert(pid.clone());
            stale.remove(pid);
            added.push(pid.clone());
        }
    }

    redate.retain(|p| held.contains(p));
    let held_ids: Vec<String> = held.into_iter().collect();
    let stale_ids: Vec<String> = stale.into_iter().collect();
    let redate_ids: Vec<String> = redate.into_iter().collect();
    let redate = match redate_from {
        Some(from) if !redate_ids.is_empty() => Some(cursor::Redate {
            set_hash: cursor::set_hash(&redate_ids),
            from,
        }),
        _ => None,
    };
    let cursor = CursorState {
        device_id: request.device_id.clone(),
        seq: consumed,
        set_hash: cursor::set_hash(&held_ids),
        stale_hash: cursor::set_hash(&stale_ids),
        access_epoch: epoch,
        view_date: today,
        issued: now,
        redate,
    };
    let mut sets = vec![
        (cursor.set_hash.clone(), held_ids),
        (cursor.stale_hash.clone(), stale_ids),
    ];
    if let Some(r) = &cursor.redate {
        sets.push((r.set_hash.clone(), redate_ids));
    }
    let carried = carried(&changes, &eligible, scope);
    Ok(PullOutcome::Page(Box::new(PageResult {
        changes,
        cursor,
        more,
        sets,
        added,
        removed,
        carried,
    })))
}

/// The held and stale sets and the patients to re-date, for a cursor of view date
/// `view_date` read on `today`. On a new day every held patient's copy is of `view_date`: all
/// are re-dated from it. Patients already waiting to be re-dated from a still earlier day
/// (a device that stopped mid-way through one, past midnight) are re-sent in full instead:
/// one earlier day per cursor.
fn redated(
    held: &mut BTreeSet<String>,
    stale: &mut BTreeSet<String>,
    mut redate: BTreeSet<String>,
    redate_from: Option<NaiveDate>,
    view_date: NaiveDate,
    today: NaiveDate,
) -> (BTreeSet<String>, Option<NaiveDate>) {
    redate.retain(|p| held.contains(p));
    if view_date == today {
        let from = redate_from.filter(|_| !redate.is_empty());
        return (redate, from);
    }
    for pid in std::mem::take(&mut redate) {
        held.remove(&pid);
        stale.insert(pid);
    }
    (held.clone(), Some(view_date))
}

/// What the move of the look-back windows from day `from` to `today` changes in a patient's
/// copy: an `Upsert` for each resource that comes into view, a `Delete` for each that goes
/// out of it, and the withheld counts when they change. A copy current to the feed under
/// `from` plus these changes is the view of `today` (the feed sends today's state of anything
/// that changed since). Answers the changes and their size.
async fn redated_changes(
    snap: &dyn FeedSnapshot,
    scope: &UserScope,
    from: NaiveDate,
    today: NaiveDate,
    patient: &PatientRow,
) -> Result<(Vec<Change>, usize), StoreError> {
    let mut changes = Vec::new();
    let mut before: BTreeMap<Section, u32> = BTreeMap::new();
    let mut after: BTreeMap<Section, u32> = BTreeMap::new();
    for row in snap.live_resources(&patient.id).await? {
        let (old, parsed_old) = decide_row(&row, patient, scope, from)?;
        let (new, parsed_new) = decide_row(&row, patient, scope, today)?;
        if let Decision::Withheld(section) = old {
            *before.entry(section).or_default() += 1;
        }
        if let Decision::Withheld(section) = new {
            *after.entry(section).or_default() += 1;
        }
        match (old == Decision::Visible, new == Decision::Visible) {
            (false, true) => changes.push(Change::Upsert {
                patient_id: patient.id.clone(),
                resource: shared_of(row, parsed_new.or(parsed_old))?,
            }),
            (true, false) => changes.push(Change::Delete {
                patient_id: patient.id.clone(),
                resource_type: row.resource_type.clone(),
                resource_id: row.id.clone(),
            }),
            _ => {}
        }
    }
    if before != after {
        changes.push(Change::Withheld {
            patient_id: patient.id.clone(),
            counts: withheld_counts(after),
        });
    }
    let size = changes.iter().map(size_of).sum();
    Ok((changes, size))
}

async fn resource_change(
    snap: &dyn FeedSnapshot,
    scope: &UserScope,
    today: NaiveDate,
    patient: &PatientRow,
    (rtype, id): &(String, String),
) -> Result<Change, StoreError> {
    if let Some(row) = snap.resource(rtype, id).await?
        && !row.deleted
        && row.patient_id.as_deref() == Some(patient.id.as_str())
    {
        let (decision, parsed) = decide_row(&row, patient, scope, today)?;
        if decision == Decision::Visible {
            return Ok(Change::Upsert {
                patient_id: patient.id.clone(),
                resource: shared_of(row, parsed)?,
            });
        }
    }
    Ok(Change::Delete {
        patient_id: patient.id.clone(),
        resource_type: rtype.clone(),
        resource_id: id.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cursor(set: &str, issued_min: i64) -> CursorState {
        CursorState {
            device_id: "d".into(),
            seq: 1,
            set_hash: set.into(),
            stale_hash: cursor::set_hash(&[]),
            access_epoch: "e".into(),
            view_date: NaiveDate::from_ymd_opt(2026, 12, 1).unwrap(),
            issued: DateTime::from_timestamp(1_764_547_200 + issued_min * 60, 0).unwrap(),
            redate: None,
        }
    }

    /// Regression: every pull, a sync with nothing new among them, wrote its membership sets'
    /// last use, so the commonest request of all took the store's write lock.
    #[test]
    fn a_pull_naming_the_same_sets_within_the_hour_writes_nothing() {
        assert!(sets_still_fresh(Some(&cursor("a", 0)), &cursor("a", 59)));
        assert!(!sets_still_fresh(Some(&cursor("a", 0)), &cursor("a", 60)));
        assert!(!sets_still_fresh(Some(&cursor("a", 0)), &cursor("b", 1)));
        assert!(!sets_still_fresh(None, &cursor("a", 1)));
        let mut redated = cursor("a", 1);
        redated.redate = Some(cursor::Redate {
            set_hash: "r".into(),
            from: NaiveDate::from_ymd_opt(2026, 11, 30).unwrap(),
        });
        assert!(!sets_still_fresh(Some(&cursor("a", 0)), &redated));
    }
}
