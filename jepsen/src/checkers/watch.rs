//! The watch checker: writers put and delete keys under one prefix while several watchers watch
//! that prefix; each watcher's events must be the store's history of the prefix, in order.
//!
//! History shapes. Writes: `put` (the key in the entry's `key`, invoke value = the value) and
//! `delete`, completing `ok` with `{"revision": r}` (`r` null for a delete that removed nothing).
//! Watchers: one `watch` operation each, invoked with `{"start_revision": r}` (or null: from
//! its first event) and completed (`ok`, or `info` if it broke off) with
//! `{"events": [{"revision", "key", "type": "put"|"delete", "value"}], "until_revision": r}`,
//! where the optional `until_revision` says how far the watcher is known to be complete.
//!
//! The store's revisions of the prefix are taken to be those of acknowledged writes plus those
//! any watcher saw. Every watcher must see, strictly increasing and without duplicates, every
//! such revision in its range (from its start to `until_revision`, or to its last event); each
//! event must agree with the acknowledged write of that revision, with the other watchers, and
//! otherwise with some write that was attempted and did not fail. One write per revision: a
//! transaction writing several keys of the prefix at one revision is outside this checker.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Validity;
use crate::history::{History, Operation, Outcome};
use crate::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    Put,
    Delete,
}

/// One event as a watcher received it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WatchEvent {
    pub revision: u64,
    pub key: String,
    #[serde(rename = "type")]
    pub kind: EventKind,
    #[serde(default)]
    pub value: Value,
}

impl WatchEvent {
    /// Same key, kind and (for puts) value.
    fn same_change(&self, other: &WatchEvent) -> bool {
        self.key == other.key
            && self.kind == other.kind
            && (self.kind == EventKind::Delete || self.value == other.value)
    }
}

/// What went wrong; `watcher` is the history index of the watcher's invoke.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum WatchAnomaly {
    /// An event at or below the previous one's revision (and not a repeat).
    OutOfOrder {
        watcher: usize,
        previous: u64,
        revision: u64,
    },
    /// A revision delivered again.
    Duplicate { watcher: usize, revision: u64 },
    /// An event older than the revision the watch started from.
    BeforeStart {
        watcher: usize,
        start: u64,
        revision: u64,
    },
    /// A revision of the prefix inside the watcher's range that it never delivered.
    Missing { watcher: usize, revision: u64 },
    /// An event that differs from the acknowledged write of its revision.
    Mismatch {
        watcher: usize,
        expected: WatchEvent,
        got: WatchEvent,
    },
    /// An event no write explains (never attempted, or its write failed).
    Phantom { watcher: usize, event: WatchEvent },
    /// Two watchers delivered different changes for one revision.
    Disagreement {
        first: usize,
        watcher: usize,
        revision: u64,
    },
    /// Two acknowledged writes reported the same revision.
    RevisionReused { revision: u64, writes: [usize; 2] },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WatchReport {
    pub validity: Validity,
    pub watchers: usize,
    pub events: usize,
    /// Revisions of the prefix known from writes and watchers.
    pub revisions: usize,
    pub anomalies: Vec<WatchAnomaly>,
}

struct Write {
    index: usize,
    outcome: Outcome,
    /// The event it produces (revision 0 until known).
    event: WatchEvent,
    known_revision: bool,
}

struct Watcher {
    index: usize,
    start: Option<u64>,
    until: Option<u64>,
    events: Vec<WatchEvent>,
}

/// Checks a watch history.
pub fn check(history: &History) -> Result<WatchReport, Error> {
    let ops = history.pair()?;
    let writes = ops
        .iter()
        .filter(|op| op.f == "put" || op.f == "delete")
        .map(write)
        .collect::<Result<Vec<_>, _>>()?;
    let watchers = ops
        .iter()
        .filter(|op| op.f == "watch")
        .filter_map(|op| watcher(op).transpose());
    let watchers = watchers.collect::<Result<Vec<_>, _>>()?;

    let mut anomalies = Vec::new();
    let acknowledged = acknowledged_by_revision(&writes, &mut anomalies);
    let mut first_seen: BTreeMap<u64, (usize, &WatchEvent)> = BTreeMap::new();
    for w in &watchers {
        check_order(w, &mut anomalies);
        for event in &w.events {
            check_event(w.index, event, &acknowledged, &writes, &mut anomalies);
            check_agreement(w.index, event, &mut first_seen, &mut anomalies);
        }
    }
    let revisions: BTreeSet<u64> = acknowledged.keys().chain(first_seen.keys()).copied().collect();
    for w in &watchers {
        check_gaps(w, &revisions, &mut anomalies);
    }
    Ok(WatchReport {
        validity: if watchers.is_empty() {
            Validity::Unknown
        } else {
            Validity::from_anomalies(&anomalies)
        },
        watchers: watchers.len(),
        events: watchers.iter().map(|w| w.events.len()).sum(),
        revisions: revisions.len(),
        anomalies,
    })
}

fn write(op: &Operation) -> Result<Write, Error> {
    let key = op
        .key
        .clone()
        .ok_or_else(|| Error::bad_op(op.invoke, &op.f, "missing key"))?;
    let (kind, value) = if op.f == "put" {
        (EventKind::Put, op.input.clone())
    } else {
        (EventKind::Delete, Value::Null)
    };
    let revision = match (&op.outcome, &op.output) {
        (Outcome::Ok, Value::Object(fields)) => fields.get("revision").and_then(Value::as_u64),
        (Outcome::Ok, other) => other.as_u64(),
        _ => None,
    };
    if op.outcome == Outcome::Ok && revision.is_none() && kind == EventKind::Put {
        return Err(Error::bad_op(
            op.invoke,
            &op.f,
            "an acknowledged put must report its revision",
        ));
    }
    Ok(Write {
        index: op.invoke,
        outcome: op.outcome,
        event: WatchEvent {
            revision: revision.unwrap_or(0),
            key,
            kind,
            value,
        },
        known_revision: revision.is_some(),
    })
}

#[derive(Deserialize, Default)]
struct WatchInput {
    start_revision: Option<u64>,
}

#[derive(Deserialize)]
struct WatchOutput {
    #[serde(default)]
    events: Vec<WatchEvent>,
    #[serde(default)]
    until_revision: Option<u64>,
}

/// A watcher that reported events (`None` if it failed or never completed).
fn watcher(op: &Operation) -> Result<Option<Watcher>, Error> {
    if op.output.is_null() || op.outcome == Outcome::Fail {
        return Ok(None);
    }
    let bad = |e: serde_json::Error| Error::bad_op(op.invoke, &op.f, e.to_string());
    let input: WatchInput = if op.input.is_null() {
        WatchInput::default()
    } else {
        serde_json::from_value(op.input.clone()).map_err(bad)?
    };
    let output: WatchOutput = serde_json::from_value(op.output.clone()).map_err(bad)?;
    Ok(Some(Watcher {
        index: op.invoke,
        start: input.start_revision,
        until: output.until_revision,
        events: output.events,
    }))
}

fn acknowledged_by_revision<'w>(
    writes: &'w [Write],
    anomalies: &mut Vec<WatchAnomaly>,
) -> BTreeMap<u64, &'w Write> {
    let mut by_revision: BTreeMap<u64, &Write> = BTreeMap::new();
    for w in writes
        .iter()
        .filter(|w| w.outcome == Outcome::Ok && w.known_revision)
    {
        match by_revision.entry(w.event.revision) {
            Entry::Vacant(slot) => {
                slot.insert(w);
            }
            Entry::Occupied(first) => {
                let writes = [first.get().index, w.index];
                anomalies.push(WatchAnomaly::RevisionReused {
                    revision: w.event.revision,
                    writes,
                });
            }
        }
    }
    by_revision
}

fn check_order(w: &Watcher, anomalies: &mut Vec<WatchAnomaly>) {
    let mut delivered = BTreeSet::new();
    let mut previous: Option<u64> = None;
    for event in &w.events {
        let (watcher, revision) = (w.index, event.revision);
        if let Some(start) = w.start.filter(|&start| revision < start) {
            anomalies.push(WatchAnomaly::BeforeStart {
                watcher,
                start,
                revision,
            });
        }
        if !delivered.insert(revision) {
            anomalies.push(WatchAnomaly::Duplicate { watcher, revision });
        } else if let Some(previous) = previous.filter(|&p| p >= revision) {
            anomalies.push(WatchAnomaly::OutOfOrder {
                watcher,
                previous,
                revision,
            });
        }
        previous = Some(revision);
    }
}

fn check_event(
    watcher: usize,
    event: &WatchEvent,
    acknowledged: &BTreeMap<u64, &Write>,
    writes: &[Write],
    anomalies: &mut Vec<WatchAnomaly>,
) {
    if let Some(write) = acknowledged.get(&event.revision) {
        if !write.event.same_change(event) {
            anomalies.push(WatchAnomaly::Mismatch {
                watcher,
                expected: write.event.clone(),
                got: event.clone(),
            });
        }
        return;
    }
    let explained = writes.iter().any(|w| {
        w.outcome != Outcome::Fail
            && !(w.outcome == Outcome::Ok && w.known_revision)
            && w.event.same_change(event)
    });
    if !explained {
        anomalies.push(WatchAnomaly::Phantom {
            watcher,
            event: event.clone(),
        });
    }
}

fn check_agreement<'e>(
    watcher: usize,
    event: &'e WatchEvent,
    first_seen: &mut BTreeMap<u64, (usize, &'e WatchEvent)>,
    anomalies: &mut Vec<WatchAnomaly>,
) {
    match first_seen.get(&event.revision) {
        None => {
            first_seen.insert(event.revision, (watcher, event));
        }
        Some(&(first, seen)) if first != watcher && !seen.same_change(event) => {
            anomalies.push(WatchAnomaly::Disagreement {
                first,
                watcher,
                revision: event.revision,
            });
        }
        Some(_) => {}
    }
}

fn check_gaps(w: &Watcher, revisions: &BTreeSet<u64>, anomalies: &mut Vec<WatchAnomaly>) {
    let seen: BTreeSet<u64> = w.events.iter().map(|e| e.revision).collect();
    let Some(low) = w.start.or_else(|| seen.first().copied()) else {
        return;
    };
    let Some(high) = w.until.or_else(|| seen.last().copied()) else {
        return;
    };
    if low > high {
        return;
    }
    for &revision in revisions.range(low..=high).filter(|r| !seen.contains(r)) {
        anomalies.push(WatchAnomaly::Missing {
            watcher: w.index,
            revision,
        });
    }
}
