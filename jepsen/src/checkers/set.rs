//! The set checker: clients add unique integers (`add`, value `n`), then one client reads the
//! whole set (`read`, completing with `[n, ...]`). Judged on the last successful read:
//! - lost: adds acknowledged before that read began, missing from it;
//! - unexpected: elements read that no one tried to add, or whose add failed (did not happen);
//! - duplicated: elements the read returned more than once;
//! - recovered: indeterminate adds that turned out present (fine, counted for the report).
//!
//! Adds that complete after the read began may or may not be in it. Other functions (a
//! nemesis's, for example) are ignored.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::Value;

use super::Validity;
use crate::history::{History, Operation, Outcome};
use crate::Error;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SetReport {
    pub validity: Validity,
    /// Adds invoked.
    pub attempted: usize,
    /// Adds acknowledged (`ok`).
    pub acknowledged: usize,
    /// Elements in the final read.
    pub read: usize,
    pub lost: Vec<i64>,
    pub unexpected: Vec<i64>,
    pub duplicated: Vec<i64>,
    pub recovered: Vec<i64>,
}

/// Checks a set history.
pub fn check(history: &History) -> Result<SetReport, Error> {
    let ops = history.pair()?;
    let adds = adds(&ops)?;
    let Some(read) = final_read(&ops) else {
        return Ok(report_without_read(&adds));
    };
    let (present, duplicated) = read_elements(read)?;
    let mut report = SetReport {
        validity: Validity::Valid,
        attempted: adds.len(),
        acknowledged: adds.values().filter(|a| a.outcome == Outcome::Ok).count(),
        read: present.len(),
        lost: lost(&adds, &present, read.call),
        unexpected: unexpected(&adds, &present),
        duplicated,
        recovered: recovered(&adds, &present),
    };
    if !(report.lost.is_empty() && report.unexpected.is_empty() && report.duplicated.is_empty()) {
        report.validity = Validity::Invalid;
    }
    Ok(report)
}

struct Add {
    outcome: Outcome,
    ret: Option<u64>,
}

/// Every add by element. An element added twice keeps its "most successful" attempt.
fn adds(ops: &[Operation]) -> Result<BTreeMap<i64, Add>, Error> {
    let mut adds: BTreeMap<i64, Add> = BTreeMap::new();
    for op in ops.iter().filter(|op| op.f == "add") {
        let element = op
            .input
            .as_i64()
            .ok_or_else(|| Error::bad_op(op.invoke, &op.f, "element must be an integer"))?;
        let add = Add {
            outcome: op.outcome,
            ret: op.ret,
        };
        match adds.get(&element) {
            Some(seen) if rank(seen.outcome) >= rank(add.outcome) => {}
            _ => {
                adds.insert(element, add);
            }
        }
    }
    Ok(adds)
}

fn rank(outcome: Outcome) -> u8 {
    match outcome {
        Outcome::Fail => 0,
        Outcome::Info => 1,
        Outcome::Ok => 2,
    }
}

fn final_read(ops: &[Operation]) -> Option<&Operation> {
    ops.iter()
        .filter(|op| op.f == "read" && op.outcome == Outcome::Ok)
        .max_by_key(|op| op.invoke)
}

/// The distinct elements of the read, and those it returned more than once.
fn read_elements(read: &Operation) -> Result<(BTreeSet<i64>, Vec<i64>), Error> {
    let bad = || {
        Error::bad_op(
            read.invoke,
            &read.f,
            "a read must complete with a list of integers",
        )
    };
    let list = read.output.as_array().ok_or_else(bad)?;
    let mut present = BTreeSet::new();
    let mut duplicated = BTreeSet::new();
    for element in list.iter().map(Value::as_i64) {
        let element = element.ok_or_else(bad)?;
        if !present.insert(element) {
            duplicated.insert(element);
        }
    }
    Ok((present, duplicated.into_iter().collect()))
}

fn lost(adds: &BTreeMap<i64, Add>, present: &BTreeSet<i64>, read_began: u64) -> Vec<i64> {
    adds.iter()
        .filter(|(_, add)| add.outcome == Outcome::Ok && add.ret.is_some_and(|ret| ret < read_began))
        .map(|(&element, _)| element)
        .filter(|element| !present.contains(element))
        .collect()
}

fn unexpected(adds: &BTreeMap<i64, Add>, present: &BTreeSet<i64>) -> Vec<i64> {
    present
        .iter()
        .copied()
        .filter(|e| adds.get(e).is_none_or(|add| add.outcome == Outcome::Fail))
        .collect()
}

fn recovered(adds: &BTreeMap<i64, Add>, present: &BTreeSet<i64>) -> Vec<i64> {
    present
        .iter()
        .copied()
        .filter(|e| adds.get(e).is_some_and(|add| add.outcome == Outcome::Info))
        .collect()
}

fn report_without_read(adds: &BTreeMap<i64, Add>) -> SetReport {
    SetReport {
        validity: Validity::Unknown,
        attempted: adds.len(),
        acknowledged: adds.values().filter(|a| a.outcome == Outcome::Ok).count(),
        read: 0,
        lost: Vec::new(),
        unexpected: Vec::new(),
        duplicated: Vec::new(),
        recovered: Vec::new(),
    }
}
