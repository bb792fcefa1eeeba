//! Transaction checks and compares, with etcd's rules: all compares (nested ones too) are
//! evaluated against the state before the txn; the chosen path is checked before anything is
//! written, so a failing txn changes nothing.

use std::cmp::Ordering;
use std::collections::BTreeSet;

use crate::keyrange::KeyRange;
use crate::state::{Reader, State};
use crate::{Compare, CompareResult, CompareTarget, PutRequest, RequestOp, Result, StoreError, TxnRequest};

/// Request checks that do not depend on state (etcd does them before proposing): no empty
/// keys anywhere, and no key written twice on any path.
pub(crate) fn check_static(txn: &TxnRequest) -> Result<()> {
    check_keys(txn)?;
    check_intervals(&txn.success)?;
    check_intervals(&txn.failure)?;
    Ok(())
}

fn check_keys(txn: &TxnRequest) -> Result<()> {
    if txn.compare.iter().any(|c| c.key.is_empty()) {
        return Err(StoreError::EmptyKey);
    }
    for op in txn.success.iter().chain(&txn.failure) {
        match op {
            RequestOp::Range(r) if r.key.is_empty() => return Err(StoreError::EmptyKey),
            RequestOp::Put(p) if p.key.is_empty() => return Err(StoreError::EmptyKey),
            RequestOp::DeleteRange(d) if d.key.is_empty() => return Err(StoreError::EmptyKey),
            RequestOp::Txn(t) => check_keys(t)?,
            _ => {}
        }
    }
    Ok(())
}

type Interval = (Vec<u8>, Vec<u8>);

fn in_any(dels: &[Interval], key: &[u8]) -> bool {
    dels.iter().any(|(k, end)| KeyRange::new(k, end).contains(key))
}

/// etcd's `checkIntervals`: on one branch, puts must be unique and no put may fall inside a
/// delete range (deletes may overlap each other). The success and failure branches of a
/// nested txn exclude each other, so they may put the same key.
fn check_intervals(ops: &[RequestOp]) -> Result<(BTreeSet<Vec<u8>>, Vec<Interval>)> {
    let mut dels: Vec<Interval> = ops
        .iter()
        .filter_map(|op| match op {
            RequestOp::DeleteRange(d) => Some((d.key.clone(), d.range_end.clone())),
            _ => None,
        })
        .collect();
    let mut puts = BTreeSet::new();
    for op in ops {
        let RequestOp::Txn(t) = op else { continue };
        let (puts_then, dels_then) = check_intervals(&t.success)?;
        let (puts_else, dels_else) = check_intervals(&t.failure)?;
        for k in &puts_then {
            if puts.contains(k) || in_any(&dels, k) {
                return Err(StoreError::DuplicateKey);
            }
            puts.insert(k.clone());
        }
        for k in &puts_else {
            if (puts.contains(k) && !puts_then.contains(k)) || in_any(&dels, k) {
                return Err(StoreError::DuplicateKey);
            }
            puts.insert(k.clone());
        }
        dels.extend(dels_then);
        dels.extend(dels_else);
    }
    for op in ops {
        let RequestOp::Put(p) = op else { continue };
        if puts.contains(&p.key) || in_any(&dels, &p.key) {
            return Err(StoreError::DuplicateKey);
        }
        puts.insert(p.key.clone());
    }
    Ok((puts, dels))
}

/// Evaluates every compare on the path the txn will take, in pre-order: element 0 is this
/// txn's outcome, followed by the outcomes of the nested txns on the chosen branch.
pub(crate) fn compare_path(st: &State, rd: &Reader<'_>, txn: &TxnRequest) -> Result<Vec<bool>> {
    let mut path = Vec::new();
    push_path(st, rd, txn, &mut path)?;
    Ok(path)
}

fn push_path(st: &State, rd: &Reader<'_>, txn: &TxnRequest, path: &mut Vec<bool>) -> Result<()> {
    let mut ok = true;
    for c in &txn.compare {
        if !compare_holds(st, rd, c)? {
            ok = false;
            break;
        }
    }
    path.push(ok);
    for op in branch(txn, ok) {
        if let RequestOp::Txn(t) = op {
            push_path(st, rd, t, path)?;
        }
    }
    Ok(())
}

pub(crate) fn branch(txn: &TxnRequest, succeeded: bool) -> &[RequestOp] {
    if succeeded {
        &txn.success
    } else {
        &txn.failure
    }
}

/// One compare against the latest state. A missing key compares as zeros, except that a value
/// compare on it is false; with a range, every live key in it must satisfy the compare.
fn compare_holds(st: &State, rd: &Reader<'_>, c: &Compare) -> Result<bool> {
    let mut matched = false;
    for (_, history) in KeyRange::new(&c.key, &c.range_end).iter(&st.index) {
        let (Some(meta), Some(rev)) = (history.live(), history.visible_at(i64::MAX)) else {
            continue;
        };
        matched = true;
        let ord = match &c.target {
            CompareTarget::Version(v) => meta.version.cmp(v),
            CompareTarget::CreateRevision(v) => meta.create_revision.cmp(v),
            CompareTarget::ModRevision(v) => meta.mod_revision.cmp(v),
            CompareTarget::Lease(v) => meta.lease.cmp(v),
            CompareTarget::Value(v) => rd.get(rev)?.value.as_slice().cmp(v.as_slice()),
        };
        if !result_holds(c.result, ord) {
            return Ok(false);
        }
    }
    if matched {
        return Ok(true);
    }
    let ord = match &c.target {
        CompareTarget::Value(_) => return Ok(false),
        CompareTarget::Version(v)
        | CompareTarget::CreateRevision(v)
        | CompareTarget::ModRevision(v)
        | CompareTarget::Lease(v) => 0.cmp(v),
    };
    Ok(result_holds(c.result, ord))
}

fn result_holds(result: CompareResult, ord: Ordering) -> bool {
    match result {
        CompareResult::Equal => ord == Ordering::Equal,
        CompareResult::Greater => ord == Ordering::Greater,
        CompareResult::Less => ord == Ordering::Less,
        CompareResult::NotEqual => ord != Ordering::Equal,
    }
}

/// Checks of a put against the state, shared by plain puts and txn puts: a put that keeps
/// the old value or lease needs the key to exist; a lease must exist.
pub(crate) fn check_put(st: &State, req: &PutRequest) -> Result<()> {
    if req.key.is_empty() {
        return Err(StoreError::EmptyKey);
    }
    if (req.ignore_value || req.ignore_lease) && st.live_meta(&req.key).is_none() {
        return Err(StoreError::KeyNotFound);
    }
    if req.lease != 0 && !st.leases.contains_key(&req.lease) {
        return Err(StoreError::LeaseNotFound);
    }
    Ok(())
}

/// etcd's `checkRequests` on the chosen path, against the state before the txn: first every
/// put, then every range's revision. Txn writes touch distinct keys (see
/// [`check_intervals`]), so the pre-txn state is what each put will see.
pub(crate) fn check_path(st: &State, txn: &TxnRequest, path: &[bool]) -> Result<()> {
    walk_path(txn, path, &mut |op| match op {
        RequestOp::Put(p) => check_put(st, p),
        _ => Ok(()),
    })?;
    walk_path(txn, path, &mut |op| match op {
        RequestOp::Range(r) if r.revision > 0 => {
            if r.revision > st.rev {
                Err(StoreError::FutureRevision)
            } else if r.revision < st.compact_rev {
                Err(StoreError::Compacted {
                    compact_revision: st.compact_rev,
                })
            } else {
                Ok(())
            }
        }
        _ => Ok(()),
    })
    .map(|_| ())
}

/// Calls `f` on every non-txn op along `path`; returns how many path entries it consumed.
fn walk_path(txn: &TxnRequest, path: &[bool], f: &mut dyn FnMut(&RequestOp) -> Result<()>) -> Result<usize> {
    let mut used = 1;
    for op in branch(txn, path[0]) {
        match op {
            RequestOp::Txn(t) => used += walk_path(t, &path[used..], f)?,
            op => f(op)?,
        }
    }
    Ok(used)
}
