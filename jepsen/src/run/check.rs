//! Checking a recorded history with the workload's checker, online after a run or offline
//! (`berth jepsen check`), and shrinking a linearizability counterexample.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::config::Workload;
use crate::checkers::{append, controlplane, lease, set, watch, Validity};
use crate::history::{History, Op, OpType, Operation, Outcome, Process};
use crate::lin::{check_history, CheckOptions, Verdict};
use crate::models::EtcdRegister;
use crate::Error;

/// Time spent shrinking a counterexample at most.
pub const SHRINK_TIME_MS: u64 = 15_000;
/// Search budget of each linearizability check while shrinking.
pub const SHRINK_CHECK_STEPS: u64 = 500_000;

/// A checker's answer with its report and, for linearizability, the smallest failing
/// per-key sub-history found.
pub struct CheckResult {
    pub validity: Validity,
    pub report: Value,
    pub counterexample: Option<History>,
}

/// Only the clients' entries (the nemesis's are for the charts), and for each the index of
/// the entry in the whole history.
pub fn client_history(history: &History) -> (History, Vec<usize>) {
    let (index, ops): (Vec<usize>, Vec<Op>) = history
        .ops()
        .iter()
        .enumerate()
        .filter(|(_, op)| matches!(op.process, Process::Client(_)))
        .map(|(i, op)| (i, op.clone()))
        .unzip();
    (History::from_ops(ops), index)
}

pub fn check(workload: Workload, history: &History) -> Result<CheckResult, Error> {
    let (clients, index) = client_history(history);
    let (validity, report, counterexample) = match workload {
        Workload::Register => return check_register(&clients, &index),
        Workload::Set => return check_set(&clients),
        Workload::Append => {
            let r = append::check(&clients)?;
            (r.validity, serde_json::to_value(&r), None)
        }
        Workload::Watch => {
            let r = watch::check(&clients)?;
            (r.validity, serde_json::to_value(&r), None)
        }
        Workload::Lease => {
            let r = lease::check_with_faults(&clients, &fault_intervals(history))?;
            (r.validity, serde_json::to_value(&r), None)
        }
        Workload::Controlplane => {
            let r = controlplane::check(&clients)?;
            let counterexample = controlplane::counterexample(&clients, &r)?;
            (r.validity, serde_json::to_value(&r), counterexample)
        }
    };
    Ok(CheckResult {
        validity,
        report: report.expect("reports serialize"),
        counterexample,
    })
}

/// (start, end) ns of every nemesis fault in the history, from its `start-*` invoke to its
/// `stop-*` completion (never stopped: `u64::MAX`); a member's crash counts as a fault until
/// the next fault starts (it was restarted then) or the run ends.
pub fn fault_intervals(history: &History) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut open: Option<u64> = None;
    let mut crashes: Vec<u64> = Vec::new();
    for op in history
        .ops()
        .iter()
        .filter(|o| matches!(o.process, Process::Named(_)))
    {
        if op.f.starts_with("start-") && op.kind == OpType::Invoke {
            open = Some(op.time);
            out.extend(crashes.drain(..).map(|c| (c, op.time)));
        } else if op.f.starts_with("stop-") && op.kind != OpType::Invoke {
            if let Some(start) = open.take() {
                out.push((start, op.time));
            }
        } else if op.f == "crash" && op.kind == OpType::Invoke {
            crashes.push(op.time);
        }
    }
    out.extend(open.map(|s| (s, u64::MAX)));
    out.extend(crashes.into_iter().map(|c| (c, u64::MAX)));
    out
}

/// Every successful read is judged on its own (the runner reads through every node at the
/// end; each must hold every add acknowledged before it began).
fn check_set(history: &History) -> Result<CheckResult, Error> {
    let ops = history.ops();
    let reads: Vec<usize> = (0..ops.len())
        .filter(|&i| ops[i].f == "read" && ops[i].kind == OpType::Ok)
        .collect();
    let mut validity = Validity::Unknown;
    let mut per_read = Vec::new();
    for &completion in &reads {
        let process = &ops[completion].process;
        // This read with its invoke, and every add.
        let only_this = ops
            .iter()
            .enumerate()
            .filter(|(i, op)| op.f != "read" || (&op.process == process && *i <= completion))
            .map(|(_, op)| op.clone())
            .collect();
        let r = set::check(&History::from_ops(only_this))?;
        validity = match (validity, r.validity) {
            (Validity::Invalid, _) | (_, Validity::Invalid) => Validity::Invalid,
            (_, Validity::Valid) => Validity::Valid,
            (v, Validity::Unknown) => v,
        };
        per_read.push(json!({"read_by": process, "report": r}));
    }
    if reads.is_empty() {
        let r = set::check(history)?;
        per_read.push(json!({"read_by": null, "report": r}));
    }
    Ok(CheckResult {
        validity,
        report: json!({"validity": validity, "final_reads": per_read}),
        counterexample: None,
    })
}

/// `index` maps the history's entries to the whole run's (ids in the verdict are the latter).
fn check_register(history: &History, index: &[usize]) -> Result<CheckResult, Error> {
    let options = CheckOptions {
        threads: 2,
        ..CheckOptions::default()
    };
    let mut verdict = check_history(&EtcdRegister, history, &options)?;
    if let Verdict::Illegal(c) = &mut verdict {
        for op in c.prefix.iter_mut().chain(std::iter::once(&mut c.blocked)) {
            op.id = index[op.id];
        }
    }
    let keys: std::collections::BTreeSet<&str> =
        history.ops().iter().filter_map(|o| o.key.as_deref()).collect();
    let (validity, counterexample) = match &verdict {
        Verdict::Ok => (Validity::Valid, None),
        Verdict::Unknown { .. } => (Validity::Unknown, None),
        Verdict::Illegal(c) => (Validity::Invalid, Some(shrink(history, &c.partition))),
    };
    let report = json!({
        "validity": validity,
        "keys": keys.len(),
        "operations": history.len() / 2,
        "verdict": verdict,
        "explanation": match &verdict { Verdict::Illegal(c) => Some(c.to_string()), _ => None },
    });
    Ok(CheckResult {
        validity,
        report,
        counterexample,
    })
}

/// The key's sub-history, then greedily without every read-like operation (an `ok` read, a
/// cas whose compare failed) whose removal keeps it non-linearizable, latest first, within
/// `SHRINK_TIME_MS`. Only read-like operations are removed because removing one only removes
/// constraints: what stays illegal is still a genuine witness. Removing a write could make a
/// read unexplainable and fabricate a violation.
pub fn shrink(history: &History, key: &str) -> History {
    let sub: Vec<Op> = history
        .ops()
        .iter()
        .filter(|op| op.key.as_deref() == Some(key))
        .cloned()
        .collect();
    let Ok(paired) = History::from_ops(sub.clone()).pair() else {
        return History::from_ops(sub);
    };
    let options = CheckOptions {
        threads: 1,
        max_steps: Some(SHRINK_CHECK_STEPS),
        time_limit: Some(Duration::from_secs(2)),
        ..CheckOptions::default()
    };
    let build = |drop: &[bool]| {
        let mut removed = vec![false; sub.len()];
        for (op, &d) in paired.iter().zip(drop) {
            if d {
                removed[op.invoke] = true;
                if let Some(c) = op.completion {
                    removed[c] = true;
                }
            }
        }
        History::from_ops(
            sub.iter()
                .zip(&removed)
                .filter(|(_, &r)| !r)
                .map(|(op, _)| op.clone())
                .collect(),
        )
    };
    let illegal = |h: &History| {
        check_history(&EtcdRegister, h, &options)
            .map(|v| v.is_illegal())
            .unwrap_or(false)
    };
    let started = Instant::now();
    let mut drop = vec![false; paired.len()];
    for i in (0..paired.len()).rev() {
        if started.elapsed() > Duration::from_millis(SHRINK_TIME_MS) {
            break;
        }
        if !read_like(&paired[i]) {
            continue;
        }
        drop[i] = true;
        if !illegal(&build(&drop)) {
            drop[i] = false;
        }
    }
    build(&drop)
}

/// An operation that cannot have changed the register: a read, anything that definitely did
/// not happen (`fail`), including a cas whose compare did not match.
fn read_like(op: &Operation) -> bool {
    op.f == "read" || op.outcome == Outcome::Fail
}
