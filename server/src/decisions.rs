//! A memo of the sharing agreements' decisions, resource by resource, on one node.
//!
//! Deciding whether a resource is visible, withheld or not shared means parsing its JSON and
//! walking every coding and text in it against the exclusion sets; a pull does it for every
//! resource of every patient it sends, and again for every patient it touches to recount the
//! withheld items. The decision depends only on what the key names, so it is kept:
//!
//! - the access epoch (role, service, the agreements in force whole, the value-set version:
//!   [`crate::cursor::access_epoch`]), so any change of policy misses;
//! - the day (look-back windows move with it);
//! - the patient's registered practice (agreements cover practices);
//! - the resource's type, id and feed seq (a new version of it misses).
//!
//! Nothing else goes into [`doorstep_record::agreement::evaluate_for_service`]. The memo is a
//! cache and never the only copy: a miss decides afresh, and when it holds
//! [`CAPACITY`] decisions it is emptied and fills again.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;

use chrono::NaiveDate;
use doorstep_record::agreement::Decision;

/// Decisions kept before the memo starts again (about 150 bytes each).
pub const CAPACITY: usize = 400_000;

/// What a decision is kept under: one version of one resource, for one access epoch, day and
/// registered practice.
#[derive(Debug, Clone, Copy)]
pub struct Version<'a> {
    pub epoch: &'a str,
    pub day: NaiveDate,
    pub practice: &'a str,
    pub resource_type: &'a str,
    pub id: &'a str,
    pub seq: i64,
}

/// A [`Version`] as the memo keeps it (owned).
#[derive(Debug, Clone)]
struct Key {
    epoch: String,
    day: NaiveDate,
    practice: String,
    resource_type: String,
    id: String,
    seq: i64,
}

impl From<&Version<'_>> for Key {
    fn from(v: &Version<'_>) -> Key {
        Key {
            epoch: v.epoch.to_owned(),
            day: v.day,
            practice: v.practice.to_owned(),
            resource_type: v.resource_type.to_owned(),
            id: v.id.to_owned(),
            seq: v.seq,
        }
    }
}

/// A key's parts, borrowed: the memo is looked up with a [`Version`] as it is, without
/// copying its strings into a [`Key`] (a pull looks up every resource it touches).
trait Parts {
    fn parts(&self) -> Version<'_>;
}

impl Parts for Key {
    fn parts(&self) -> Version<'_> {
        Version {
            epoch: &self.epoch,
            day: self.day,
            practice: &self.practice,
            resource_type: &self.resource_type,
            id: &self.id,
            seq: self.seq,
        }
    }
}

impl Parts for Version<'_> {
    fn parts(&self) -> Version<'_> {
        *self
    }
}

impl Version<'_> {
    fn fields(&self) -> (&str, NaiveDate, &str, &str, &str, i64) {
        (
            self.epoch,
            self.day,
            self.practice,
            self.resource_type,
            self.id,
            self.seq,
        )
    }
}

// Key and its borrowed form hash and compare by the same fields, as `Borrow` requires.
impl Hash for dyn Parts + '_ {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.parts().fields().hash(state);
    }
}

impl PartialEq for dyn Parts + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.parts().fields() == other.parts().fields()
    }
}

impl Eq for dyn Parts + '_ {}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (self as &dyn Parts).hash(state);
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        (self as &dyn Parts) == (other as &dyn Parts)
    }
}

impl Eq for Key {}

impl<'a> Borrow<dyn Parts + 'a> for Key {
    fn borrow(&self) -> &(dyn Parts + 'a) {
        self
    }
}

/// The memo one node's pulls share.
#[derive(Debug, Default)]
pub struct DecisionMemo {
    decisions: Mutex<HashMap<Key, Decision>>,
}

impl DecisionMemo {
    pub fn new() -> DecisionMemo {
        DecisionMemo::default()
    }

    /// The decision kept for this resource version, if any.
    pub fn get(&self, version: &Version<'_>) -> Option<Decision> {
        self.decisions
            .lock()
            .ok()?
            .get(version as &dyn Parts)
            .copied()
    }

    pub fn put(&self, version: &Version<'_>, decision: Decision) {
        if let Ok(mut decisions) = self.decisions.lock() {
            if decisions.len() >= CAPACITY {
                decisions.clear();
            }
            decisions.insert(Key::from(version), decision);
        }
    }

    pub fn len(&self) -> usize {
        self.decisions.lock().map(|d| d.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use doorstep_record::Section;

    /// Each part of the key tells decisions apart: another epoch, day, practice, type, id or
    /// version of the resource is a miss, never the kept decision.
    #[test]
    fn every_part_of_the_key_is_a_miss_when_it_differs() {
        let memo = DecisionMemo::new();
        let day = NaiveDate::from_ymd_opt(2026, 12, 1).unwrap();
        let kept = Decision::Withheld(Section::Problems);
        let v = Version {
            epoch: "e1",
            day,
            practice: "A81001",
            resource_type: "Condition",
            id: "c1",
            seq: 7,
        };
        memo.put(&v, kept);
        assert_eq!(memo.get(&v), Some(kept));
        for miss in [
            Version { epoch: "e2", ..v },
            Version {
                day: day.succ_opt().unwrap(),
                ..v
            },
            Version {
                practice: "A81002",
                ..v
            },
            Version {
                resource_type: "Observation",
                ..v
            },
            Version { id: "c2", ..v },
            Version { seq: 8, ..v },
        ] {
            assert_eq!(memo.get(&miss), None, "{miss:?}");
        }
        assert_eq!(memo.len(), 1);
    }
}
