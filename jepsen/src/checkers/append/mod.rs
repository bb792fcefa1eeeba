//! The list-append checker, after Elle: transactions append unique integers to lists under
//! keys and read whole lists. Because appends are unique, every read list reveals which
//! transactions wrote before it and in what order, so dependencies can be inferred without
//! knowing the database's internals, and cycles among them are isolation anomalies.
//!
//! Reported: G0 (write cycle), G1a (aborted read: an element of a failed transaction), G1b
//! (intermediate read: a list ending in the middle of another transaction's appends), G1c
//! (cycle of write-write and write-read edges), G-single (cycle with one anti-dependency), G2
//! (cycle with several), plus internal inconsistency (a transaction not seeing its own appends
//! or its own earlier read), reads that are not prefixes of each other, duplicate elements, and
//! elements no one appended. Nodes are the transactions that may have happened (`ok` and
//! `info`); failed ones take part only as the writers of aborted reads.

mod cycles;
mod infer;
mod txn;

use std::collections::BTreeSet;
use std::fmt;

use serde::Serialize;

use super::Validity;
use crate::history::History;
use crate::Error;
use cycles::CycleKind;

/// A dependency between two transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Dep {
    /// `to` appended the element right after one of `from`'s.
    Ww,
    /// `to` read a list ending in `from`'s element.
    Wr,
    /// `from` read a list that stopped just before `to`'s element.
    Rw,
}

/// One edge of a reported cycle; `from` and `to` are history indices of the transactions'
/// invokes, `value` the element that carries the dependency (`to`'s append for ww and rw, the
/// element `to` read last for wr).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CycleStep {
    pub from: usize,
    pub to: usize,
    pub dep: Dep,
    pub key: String,
    pub value: i64,
}

impl fmt::Display for CycleStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (from, to, key, value) = (self.from, self.to, &self.key, self.value);
        match self.dep {
            Dep::Ww => write!(
                f,
                "T{from} -ww-> T{to}: T{to} appended {value} to {key} right after T{from}'s append"
            ),
            Dep::Wr => write!(
                f,
                "T{from} -wr-> T{to}: T{to} read {key} ending in {value}, appended by T{from}"
            ),
            Dep::Rw => write!(
                f,
                "T{from} -rw-> T{to}: T{from} read {key} without {value}, which T{to} appended next"
            ),
        }
    }
}

/// An anomaly; transactions are named by the history index of their invoke.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum AppendAnomaly {
    G0 {
        cycle: Vec<CycleStep>,
    },
    G1a {
        reader: usize,
        writer: usize,
        key: String,
        value: i64,
    },
    G1b {
        reader: usize,
        writer: usize,
        key: String,
        value: i64,
    },
    G1c {
        cycle: Vec<CycleStep>,
    },
    GSingle {
        cycle: Vec<CycleStep>,
    },
    G2 {
        cycle: Vec<CycleStep>,
    },
    /// A read inside a transaction that does not match its own appends and earlier reads:
    /// it should have been `expected` exactly (`whole`) or ended with it.
    Internal {
        txn: usize,
        key: String,
        read: Vec<i64>,
        expected: Vec<i64>,
        whole: bool,
    },
    /// A read that is not a prefix of the longest read of the key.
    IncompatibleOrder {
        reader: usize,
        key: String,
        read: Vec<i64>,
        longest: Vec<i64>,
    },
    DuplicateElements {
        reader: usize,
        key: String,
        read: Vec<i64>,
    },
    /// An element read that no transaction appended.
    PhantomElement {
        reader: usize,
        key: String,
        value: i64,
    },
}

impl AppendAnomaly {
    /// Elle's name for the anomaly.
    pub fn name(&self) -> &'static str {
        match self {
            AppendAnomaly::G0 { .. } => "G0",
            AppendAnomaly::G1a { .. } => "G1a",
            AppendAnomaly::G1b { .. } => "G1b",
            AppendAnomaly::G1c { .. } => "G1c",
            AppendAnomaly::GSingle { .. } => "G-single",
            AppendAnomaly::G2 { .. } => "G2",
            AppendAnomaly::Internal { .. } => "internal",
            AppendAnomaly::IncompatibleOrder { .. } => "incompatible-order",
            AppendAnomaly::DuplicateElements { .. } => "duplicate-elements",
            AppendAnomaly::PhantomElement { .. } => "phantom-element",
        }
    }

    /// The cycle, for cycle anomalies.
    pub fn cycle(&self) -> Option<&[CycleStep]> {
        match self {
            AppendAnomaly::G0 { cycle }
            | AppendAnomaly::G1c { cycle }
            | AppendAnomaly::GSingle { cycle }
            | AppendAnomaly::G2 { cycle } => Some(cycle),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AppendReport {
    pub validity: Validity,
    pub txns: usize,
    /// The distinct anomaly names found.
    pub anomaly_types: BTreeSet<&'static str>,
    pub anomalies: Vec<AppendAnomaly>,
}

/// Checks a list-append history (operations `txn`; see the `txn` module for the shape).
pub fn check(history: &History) -> Result<AppendReport, Error> {
    let txns = txn::txns(history)?;
    let (graph, mut anomalies) = infer::infer(&txns)?;
    for (kind, cycle) in cycles::find(&graph) {
        let cycle = cycle
            .into_iter()
            .map(|(from, e)| CycleStep {
                from: txns[from].index,
                to: txns[e.to].index,
                dep: e.dep,
                key: e.key.clone(),
                value: e.value,
            })
            .collect();
        anomalies.push(match kind {
            CycleKind::G0 => AppendAnomaly::G0 { cycle },
            CycleKind::G1c => AppendAnomaly::G1c { cycle },
            CycleKind::GSingle => AppendAnomaly::GSingle { cycle },
            CycleKind::G2 => AppendAnomaly::G2 { cycle },
        });
    }
    Ok(AppendReport {
        validity: Validity::from_anomalies(&anomalies),
        txns: txns.len(),
        anomaly_types: anomalies.iter().map(AppendAnomaly::name).collect(),
        anomalies,
    })
}
