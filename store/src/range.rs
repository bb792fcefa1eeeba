//! Range reads with etcd's exact option semantics.

use std::cmp::Ordering;

use crate::keyrange::KeyRange;
use crate::state::{Reader, State};
use crate::{KeyValue, RangeRequest, RangeResponse, Result, SortOrder, SortTarget, StoreError};

/// The revision a read at `requested` (0 = latest) is served at, given the store's visible
/// revision `current`. As etcd: reading at the compact revision itself is allowed.
pub(crate) fn read_revision(st: &State, requested: i64, current: i64) -> Result<i64> {
    if requested > current {
        return Err(StoreError::FutureRevision);
    }
    let at = if requested <= 0 { current } else { requested };
    if at < st.compact_rev {
        return Err(StoreError::Compacted {
            compact_revision: st.compact_rev,
        });
    }
    Ok(at)
}

/// Serves `req` against `st`, where `current` is the revision visible to the reader (inside a
/// txn that has written, the txn's own revision). The response carries `current`, as etcd's
/// header does even for historical reads.
pub(crate) fn range(st: &State, rd: &Reader<'_>, req: &RangeRequest, current: i64) -> Result<RangeResponse> {
    let at = read_revision(st, req.revision, current)?;
    let revs: Vec<_> = KeyRange::new(&req.key, &req.range_end)
        .iter(&st.index)
        .filter_map(|(_, h)| h.visible_at(at))
        .collect();
    let count = revs.len() as i64;
    if req.count_only {
        return Ok(RangeResponse {
            revision: current,
            kvs: Vec::new(),
            more: false,
            count,
        });
    }
    let mut kvs = revs
        .into_iter()
        .take(fetch_limit(req))
        .map(|rev| rd.get(rev))
        .collect::<Result<Vec<_>>>()?;
    kvs.retain(|kv| passes_filters(req, kv));
    sort(&mut kvs, req.sort_order, req.sort_target);
    let more = req.limit > 0 && kvs.len() > req.limit as usize;
    if more {
        kvs.truncate(req.limit as usize);
    }
    if req.keys_only {
        kvs.iter_mut().for_each(|kv| kv.value.clear());
    }
    Ok(RangeResponse {
        revision: current,
        kvs,
        more,
        count,
    })
}

/// How many keys to read before filtering, as etcd: everything when the result is sorted or
/// filtered (the limit applies afterwards), else one more than the limit to learn `more`.
fn fetch_limit(req: &RangeRequest) -> usize {
    let filtered = req.min_mod_revision != 0
        || req.max_mod_revision != 0
        || req.min_create_revision != 0
        || req.max_create_revision != 0;
    if req.sort_order != SortOrder::None || filtered || req.limit <= 0 {
        usize::MAX
    } else {
        req.limit as usize + 1
    }
}

fn passes_filters(req: &RangeRequest, kv: &KeyValue) -> bool {
    let above = |v: i64, min: i64| min == 0 || v >= min;
    let below = |v: i64, max: i64| max == 0 || v <= max;
    above(kv.mod_revision, req.min_mod_revision)
        && below(kv.mod_revision, req.max_mod_revision)
        && above(kv.create_revision, req.min_create_revision)
        && below(kv.create_revision, req.max_create_revision)
}

/// etcd's sort rules: results come in ascending key order; order NONE with a target other
/// than KEY means ascending. Sorts are stable, so ties stay in key order (deterministic).
fn sort(kvs: &mut [KeyValue], order: SortOrder, target: SortTarget) {
    let order = match (order, target) {
        (SortOrder::None, SortTarget::Key) | (SortOrder::Ascend, SortTarget::Key) => return,
        (SortOrder::None, _) => SortOrder::Ascend,
        (order, _) => order,
    };
    let cmp = |a: &KeyValue, b: &KeyValue| -> Ordering {
        match target {
            SortTarget::Key => a.key.cmp(&b.key),
            SortTarget::Version => a.version.cmp(&b.version),
            SortTarget::Create => a.create_revision.cmp(&b.create_revision),
            SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
            SortTarget::Value => a.value.cmp(&b.value),
        }
    };
    match order {
        SortOrder::Descend => kvs.sort_by(|a, b| cmp(b, a)),
        _ => kvs.sort_by(cmp),
    }
}
