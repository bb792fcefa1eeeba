//! Transactions of the list-append workload, read out of a history.
//!
//! An operation `txn` carries a list of micro-operations: `["append", key, n]` and
//! `["r", key, list]` (`list` null on the invoke, the list read on an `ok` completion). Keys are
//! strings or integers; appended values are integers, unique per key.

use serde_json::Value;

use crate::history::{History, Operation, Outcome};
use crate::Error;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Mop {
    Append {
        key: String,
        value: i64,
    },
    /// `values` is `None` when the read's result is unknown (not an `ok` transaction).
    Read {
        key: String,
        values: Option<Vec<i64>>,
    },
}

#[derive(Debug, Clone)]
pub(crate) struct Txn {
    /// Index of the invoke in the history.
    pub(crate) index: usize,
    pub(crate) outcome: Outcome,
    pub(crate) mops: Vec<Mop>,
}

impl Txn {
    pub(crate) fn appends(&self) -> impl Iterator<Item = (&str, i64)> {
        self.mops.iter().filter_map(|m| match m {
            Mop::Append { key, value } => Some((key.as_str(), *value)),
            Mop::Read { .. } => None,
        })
    }

    /// The reads with known results.
    pub(crate) fn reads(&self) -> impl Iterator<Item = (&str, &[i64])> {
        self.mops.iter().filter_map(|m| match m {
            Mop::Read {
                key,
                values: Some(values),
            } => Some((key.as_str(), values.as_slice())),
            _ => None,
        })
    }
}

/// Every `txn` operation of the history, in invoke order.
pub(crate) fn txns(history: &History) -> Result<Vec<Txn>, Error> {
    history
        .pair()?
        .iter()
        .filter(|op| op.f == "txn")
        .map(txn)
        .collect()
}

fn txn(op: &Operation) -> Result<Txn, Error> {
    let ok = op.outcome == Outcome::Ok;
    let value = if ok { &op.output } else { &op.input };
    let list = value
        .as_array()
        .ok_or_else(|| Error::bad_op(op.invoke, &op.f, "a txn value must be a list"))?;
    let mops = list
        .iter()
        .map(|m| mop(op, m, ok))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Txn {
        index: op.invoke,
        outcome: op.outcome,
        mops,
    })
}

fn mop(op: &Operation, m: &Value, ok: bool) -> Result<Mop, Error> {
    let bad = |what: &str| Error::bad_op(op.invoke, &op.f, format!("{what} in micro-op {m}"));
    let Some([f, key, value]) = m.as_array().map(Vec::as_slice) else {
        return Err(bad("expected [f, key, value]"));
    };
    let key = match key {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return Err(bad("bad key")),
    };
    match f.as_str() {
        Some("append") => Ok(Mop::Append {
            key,
            value: value.as_i64().ok_or_else(|| bad("bad appended value"))?,
        }),
        Some("r") if !ok => Ok(Mop::Read { key, values: None }),
        Some("r") => Ok(Mop::Read {
            key,
            values: Some(read_list(value).ok_or_else(|| bad("bad read list"))?),
        }),
        _ => Err(bad("unknown function")),
    }
}

/// A read's list (`null` reads as empty: the key does not exist yet).
fn read_list(value: &Value) -> Option<Vec<i64>> {
    match value {
        Value::Null => Some(Vec::new()),
        Value::Array(items) => items.iter().map(Value::as_i64).collect(),
        _ => None,
    }
}
