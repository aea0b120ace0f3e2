//! The pull page as the device reads it off the wire.
//!
//! Same JSON as [`doorstep_protocol::PullPage`], but every FHIR resource is kept as the raw JSON
//! text the server sent ([`RawValue`]) instead of a parsed `serde_json::Value` tree: the cache
//! stores resources as text, so parsing each one into a tree and printing it back (most of the
//! device's work in an initial sync of 100,000 resources) is skipped. Only the few resources the
//! list columns come from (Patient, Flag, AllergyIntolerance) are parsed.
//!
//! serde cannot read a `RawValue` inside an internally tagged enum, so a change is read in two
//! steps: its `op`, then the fields of that variant. A test checks that every variant of the
//! protocol reads back here, so the two cannot drift apart.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use doorstep_protocol::{ListEntry, PatientHeader, WithheldCount};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::error::{ClientError, Result};

/// One pull page, resources as raw JSON.
#[derive(Debug)]
pub(crate) struct Page {
    pub cursor: String,
    pub more: bool,
    pub server_time: DateTime<Utc>,
    pub changes: Vec<Change>,
    /// The shortest `max_offline_hours` of the user's agreements (see [`crate::offline`]).
    pub max_offline_hours: Option<u32>,
    /// The shortest `idle_lock_minutes` of the user's agreements.
    pub idle_lock_minutes: Option<u32>,
    /// The shortest `stale_after_hours` of the user's agreements.
    pub stale_after_hours: Option<u32>,
}

/// One change of the feed (see [`doorstep_protocol::Change`]).
#[derive(Debug)]
pub(crate) enum Change {
    PatientAdded {
        patient: PatientHeader,
        entries: Vec<ListEntry>,
        resources: Vec<Box<RawValue>>,
        withheld: Vec<WithheldCount>,
    },
    ListChanged {
        patient_id: String,
        entries: Vec<ListEntry>,
    },
    Upsert {
        patient_id: String,
        resource: Box<RawValue>,
    },
    Delete {
        patient_id: String,
        resource_type: String,
        resource_id: String,
    },
    PatientRemoved {
        patient_id: String,
    },
    Withheld {
        patient_id: String,
        counts: Vec<WithheldCount>,
    },
}

#[derive(Deserialize)]
struct RawPage {
    cursor: String,
    more: bool,
    server_time: DateTime<Utc>,
    changes: Vec<Box<RawValue>>,
    #[serde(default)]
    max_offline_hours: Option<u32>,
    #[serde(default)]
    idle_lock_minutes: Option<u32>,
    #[serde(default)]
    stale_after_hours: Option<u32>,
}

#[derive(Deserialize)]
struct Op<'a> {
    #[serde(borrow)]
    op: Cow<'a, str>,
}

#[derive(Deserialize)]
struct PatientAdded {
    patient: PatientHeader,
    entries: Vec<ListEntry>,
    resources: Vec<Box<RawValue>>,
    withheld: Vec<WithheldCount>,
}

#[derive(Deserialize)]
struct ListChanged {
    patient_id: String,
    entries: Vec<ListEntry>,
}

#[derive(Deserialize)]
struct Upsert {
    patient_id: String,
    resource: Box<RawValue>,
}

#[derive(Deserialize)]
struct Delete {
    patient_id: String,
    resource_type: String,
    resource_id: String,
}

#[derive(Deserialize)]
struct PatientRemoved {
    patient_id: String,
}

#[derive(Deserialize)]
struct Withheld {
    patient_id: String,
    counts: Vec<WithheldCount>,
}

fn bad(e: serde_json::Error) -> ClientError {
    ClientError::Server(format!("unreadable pull page: {e}"))
}

impl Page {
    /// Read a page from the (already inflated) body of a pull answer.
    pub fn from_json(body: &[u8]) -> Result<Page> {
        let raw: RawPage = serde_json::from_slice(body).map_err(bad)?;
        let mut changes = Vec::with_capacity(raw.changes.len());
        for c in &raw.changes {
            let text = c.get();
            let op: Op<'_> = serde_json::from_str(text).map_err(bad)?;
            changes.push(match op.op.as_ref() {
                "patient_added" => {
                    let v: PatientAdded = serde_json::from_str(text).map_err(bad)?;
                    Change::PatientAdded {
                        patient: v.patient,
                        entries: v.entries,
                        resources: v.resources,
                        withheld: v.withheld,
                    }
                }
                "list_changed" => {
                    let v: ListChanged = serde_json::from_str(text).map_err(bad)?;
                    Change::ListChanged {
                        patient_id: v.patient_id,
                        entries: v.entries,
                    }
                }
                "upsert" => {
                    let v: Upsert = serde_json::from_str(text).map_err(bad)?;
                    Change::Upsert {
                        patient_id: v.patient_id,
                        resource: v.resource,
                    }
                }
                "delete" => {
                    let v: Delete = serde_json::from_str(text).map_err(bad)?;
                    Change::Delete {
                        patient_id: v.patient_id,
                        resource_type: v.resource_type,
                        resource_id: v.resource_id,
                    }
                }
                "patient_removed" => {
                    let v: PatientRemoved = serde_json::from_str(text).map_err(bad)?;
                    Change::PatientRemoved {
                        patient_id: v.patient_id,
                    }
                }
                "withheld" => {
                    let v: Withheld = serde_json::from_str(text).map_err(bad)?;
                    Change::Withheld {
                        patient_id: v.patient_id,
                        counts: v.counts,
                    }
                }
                other => {
                    return Err(ClientError::Server(format!(
                        "the pull page has a change this device does not know: '{other}'. \
                         Update Doorstep."
                    )));
                }
            });
        }
        Ok(Page {
            cursor: raw.cursor,
            more: raw.more,
            server_time: raw.server_time,
            changes,
            max_offline_hours: raw.max_offline_hours,
            idle_lock_minutes: raw.idle_lock_minutes,
            stale_after_hours: raw.stale_after_hours,
        })
    }

    /// The same page from the protocol's typed form.
    #[cfg(test)]
    pub fn from_protocol(page: &doorstep_protocol::PullPage) -> Result<Page> {
        let json = serde_json::to_vec(page).map_err(|e| ClientError::Internal(e.to_string()))?;
        Page::from_json(&json)
    }
}

/// `resourceType` and `id` of a raw resource, read without building a tree.
pub(crate) fn type_and_id(resource: &RawValue) -> Option<(String, String)> {
    #[derive(Deserialize)]
    struct Head<'a> {
        #[serde(rename = "resourceType", borrow)]
        resource_type: Option<Cow<'a, str>>,
        #[serde(borrow)]
        id: Option<Cow<'a, str>>,
    }
    let head: Head<'_> = serde_json::from_str(resource.get()).ok()?;
    Some((head.resource_type?.into_owned(), head.id?.into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use doorstep_protocol::{self as protocol, ListKind};
    use serde_json::json;

    #[test]
    fn every_protocol_change_reads_back() {
        let entry = ListEntry {
            kind: ListKind::Appointment,
            list_name: "Hub".into(),
            reason: "Cough".into(),
            starts_at: Utc.with_ymd_and_hms(2026, 1, 15, 18, 30, 0).unwrap(),
            ends_at: None,
        };
        let counts = vec![WithheldCount {
            section: "problems".into(),
            count: 2,
        }];
        let resource =
            json!({"resourceType": "Condition", "id": "c1", "note": [{"text": "é \"q\""}]});
        let page = protocol::PullPage {
            cursor: "cur".into(),
            more: true,
            server_time: Utc.with_ymd_and_hms(2026, 1, 15, 8, 0, 0).unwrap(),
            changes: vec![
                protocol::Change::PatientAdded {
                    patient: PatientHeader {
                        patient_id: "p1".into(),
                        nhs_number: "9990000018".into(),
                        registered_practice_ods: "B86001".into(),
                        registered_practice_name: "Riverside".into(),
                        birth_date: None,
                    },
                    entries: vec![entry.clone()],
                    resources: vec![resource.clone()],
                    withheld: counts.clone(),
                },
                protocol::Change::ListChanged {
                    patient_id: "p1".into(),
                    entries: vec![entry.clone()],
                },
                protocol::Change::Upsert {
                    patient_id: "p1".into(),
                    resource: resource.clone(),
                },
                protocol::Change::Delete {
                    patient_id: "p1".into(),
                    resource_type: "Condition".into(),
                    resource_id: "c1".into(),
                },
                protocol::Change::PatientRemoved {
                    patient_id: "p1".into(),
                },
                protocol::Change::Withheld {
                    patient_id: "p1".into(),
                    counts: counts.clone(),
                },
            ],
            max_offline_hours: Some(12),
            idle_lock_minutes: Some(3),
            stale_after_hours: Some(6),
        };
        let read = Page::from_protocol(&page).unwrap();
        assert_eq!(read.cursor, "cur");
        assert!(read.more);
        assert_eq!(read.server_time, page.server_time);
        assert_eq!(read.max_offline_hours, Some(12));
        assert_eq!(read.idle_lock_minutes, Some(3));
        assert_eq!(read.stale_after_hours, Some(6));
        assert_eq!(read.changes.len(), 6);
        match &read.changes[0] {
            Change::PatientAdded {
                patient,
                entries,
                resources,
                withheld,
            } => {
                assert_eq!(patient.nhs_number, "9990000018");
                assert_eq!(entries, &vec![entry.clone()]);
                let back: serde_json::Value = serde_json::from_str(resources[0].get()).unwrap();
                assert_eq!(back, resource);
                assert_eq!(withheld, &counts);
            }
            other => panic!("{other:?}"),
        }
        assert!(
            matches!(&read.changes[1], Change::ListChanged { entries, .. } if entries.len() == 1)
        );
        match &read.changes[2] {
            Change::Upsert { resource: r, .. } => {
                assert_eq!(type_and_id(r), Some(("Condition".into(), "c1".into())));
            }
            other => panic!("{other:?}"),
        }
        assert!(
            matches!(&read.changes[3], Change::Delete { resource_id, .. } if resource_id == "c1")
        );
        assert!(
            matches!(&read.changes[4], Change::PatientRemoved { patient_id } if patient_id == "p1")
        );
        assert!(matches!(&read.changes[5], Change::Withheld { counts: c, .. } if c == &counts));
    }

    #[test]
    fn unknown_change_and_garbage_are_server_errors() {
        let e = Page::from_json(
            br#"{"cursor":"c","more":false,"server_time":"2026-01-15T08:00:00Z","changes":[{"op":"teleport"}]}"#,
        )
        .unwrap_err();
        assert!(matches!(e, ClientError::Server(m) if m.contains("teleport")));
        assert!(matches!(Page::from_json(b"{"), Err(ClientError::Server(_))));
    }

    #[test]
    fn resources_without_type_or_id() {
        let raw = RawValue::from_string(r#"{"resourceType":"Flag"}"#.into()).unwrap();
        assert_eq!(type_and_id(&raw), None);
        let raw = RawValue::from_string(r#"{"id":"x","resourceType":"Flag"}"#.into()).unwrap();
        assert_eq!(type_and_id(&raw), Some(("Flag".into(), "x".into())));
    }
}
