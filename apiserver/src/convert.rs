//! Mapping between the etcd-v3 wire messages and the store's own types.
//!
//! Pure functions; the only place that knows both shapes. Enum fields arrive as raw `i32`s on
//! the wire, so an out-of-range value is bad input and is reported with its field name.

use crate::error::ApiError;
use berth_proto::{etcdserverpb as pb, mvccpb};
use berth_store as st;

fn bad(field: &'static str, reason: impl Into<String>) -> ApiError {
    ApiError::InvalidArgument {
        field,
        reason: reason.into(),
    }
}

pub fn kv_to_pb(kv: st::KeyValue) -> mvccpb::KeyValue {
    mvccpb::KeyValue {
        key: kv.key,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        value: kv.value,
        lease: kv.lease,
    }
}

pub fn event_to_pb(ev: st::Event) -> mvccpb::Event {
    let kind = match ev.kind {
        st::EventKind::Put => mvccpb::event::EventType::Put,
        st::EventKind::Delete => mvccpb::event::EventType::Delete,
    };
    mvccpb::Event {
        r#type: kind as i32,
        kv: Some(kv_to_pb(ev.kv)),
        prev_kv: ev.prev_kv.map(kv_to_pb),
    }
}

pub fn range_from_pb(r: pb::RangeRequest) -> Result<st::RangeRequest, ApiError> {
    let sort_order = match pb::range_request::SortOrder::try_from(r.sort_order) {
        Ok(pb::range_request::SortOrder::None) => st::SortOrder::None,
        Ok(pb::range_request::SortOrder::Ascend) => st::SortOrder::Ascend,
        Ok(pb::range_request::SortOrder::Descend) => st::SortOrder::Descend,
        Err(_) => return Err(bad("sort_order", format!("unknown value {}", r.sort_order))),
    };
    let sort_target = match pb::range_request::SortTarget::try_from(r.sort_target) {
        Ok(pb::range_request::SortTarget::Key) => st::SortTarget::Key,
        Ok(pb::range_request::SortTarget::Version) => st::SortTarget::Version,
        Ok(pb::range_request::SortTarget::Create) => st::SortTarget::Create,
        Ok(pb::range_request::SortTarget::Mod) => st::SortTarget::Mod,
        Ok(pb::range_request::SortTarget::Value) => st::SortTarget::Value,
        Err(_) => return Err(bad("sort_target", format!("unknown value {}", r.sort_target))),
    };
    if r.key.is_empty() {
        return Err(ApiError::EmptyKey);
    }
    if r.limit < 0 {
        return Err(bad("limit", "must not be negative"));
    }
    Ok(st::RangeRequest {
        key: r.key,
        range_end: r.range_end,
        limit: r.limit,
        revision: r.revision,
        sort_order,
        sort_target,
        serializable: r.serializable,
        keys_only: r.keys_only,
        count_only: r.count_only,
        min_mod_revision: r.min_mod_revision,
        max_mod_revision: r.max_mod_revision,
        min_create_revision: r.min_create_revision,
        max_create_revision: r.max_create_revision,
    })
}

pub fn range_to_pb(r: st::RangeResponse, header: pb::ResponseHeader) -> pb::RangeResponse {
    pb::RangeResponse {
        header: Some(header),
        kvs: r.kvs.into_iter().map(kv_to_pb).collect(),
        more: r.more,
        count: r.count,
    }
}

pub fn put_from_pb(p: pb::PutRequest) -> Result<st::PutRequest, ApiError> {
    if p.key.is_empty() {
        return Err(ApiError::EmptyKey);
    }
    Ok(st::PutRequest {
        key: p.key,
        value: p.value,
        lease: p.lease,
        prev_kv: p.prev_kv,
        ignore_value: p.ignore_value,
        ignore_lease: p.ignore_lease,
    })
}

pub fn put_to_pb(p: st::PutResponse, header: pb::ResponseHeader) -> pb::PutResponse {
    pb::PutResponse {
        header: Some(header),
        prev_kv: p.prev_kv.map(kv_to_pb),
    }
}

pub fn delete_from_pb(d: pb::DeleteRangeRequest) -> Result<st::DeleteRangeRequest, ApiError> {
    if d.key.is_empty() {
        return Err(ApiError::EmptyKey);
    }
    Ok(st::DeleteRangeRequest {
        key: d.key,
        range_end: d.range_end,
        prev_kv: d.prev_kv,
    })
}

pub fn delete_to_pb(d: st::DeleteRangeResponse, header: pb::ResponseHeader) -> pb::DeleteRangeResponse {
    pb::DeleteRangeResponse {
        header: Some(header),
        deleted: d.deleted,
        prev_kvs: d.prev_kvs.into_iter().map(kv_to_pb).collect(),
    }
}

fn compare_from_pb(c: pb::Compare) -> Result<st::Compare, ApiError> {
    use pb::compare::{CompareResult as R, CompareTarget as T, TargetUnion as U};
    let result = match R::try_from(c.result) {
        Ok(R::Equal) => st::CompareResult::Equal,
        Ok(R::Greater) => st::CompareResult::Greater,
        Ok(R::Less) => st::CompareResult::Less,
        Ok(R::NotEqual) => st::CompareResult::NotEqual,
        Err(_) => return Err(bad("compare.result", format!("unknown value {}", c.result))),
    };
    let target =
        T::try_from(c.target).map_err(|_| bad("compare.target", format!("unknown value {}", c.target)))?;
    // etcd reads the operand from the oneof and ignores a mismatching `target`; a missing
    // operand compares against the zero value of the target's type.
    let target = match (target, c.target_union) {
        (T::Version, u) => st::CompareTarget::Version(match u {
            Some(U::Version(v)) => v,
            _ => 0,
        }),
        (T::Create, u) => st::CompareTarget::CreateRevision(match u {
            Some(U::CreateRevision(v)) => v,
            _ => 0,
        }),
        (T::Mod, u) => st::CompareTarget::ModRevision(match u {
            Some(U::ModRevision(v)) => v,
            _ => 0,
        }),
        (T::Value, u) => st::CompareTarget::Value(match u {
            Some(U::Value(v)) => v,
            _ => Vec::new(),
        }),
        (T::Lease, u) => st::CompareTarget::Lease(match u {
            Some(U::Lease(v)) => v,
            _ => 0,
        }),
    };
    Ok(st::Compare {
        result,
        target,
        key: c.key,
        range_end: c.range_end,
    })
}

fn op_from_pb(op: pb::RequestOp, ops: &mut usize, ops_max: usize) -> Result<st::RequestOp, ApiError> {
    use pb::request_op::Request;
    *ops += 1;
    if *ops > ops_max {
        return Err(ApiError::TooManyOps);
    }
    match op.request {
        Some(Request::RequestRange(r)) => Ok(st::RequestOp::Range(range_from_pb(r)?)),
        Some(Request::RequestPut(p)) => Ok(st::RequestOp::Put(put_from_pb(p)?)),
        Some(Request::RequestDeleteRange(d)) => Ok(st::RequestOp::DeleteRange(delete_from_pb(d)?)),
        Some(Request::RequestTxn(t)) => Ok(st::RequestOp::Txn(txn_from_pb_counted(t, ops, ops_max)?)),
        None => Err(bad("request_op", "no request set")),
    }
}

fn txn_from_pb_counted(
    t: pb::TxnRequest,
    ops: &mut usize,
    ops_max: usize,
) -> Result<st::TxnRequest, ApiError> {
    let compare = t
        .compare
        .into_iter()
        .map(compare_from_pb)
        .collect::<Result<Vec<_>, _>>()?;
    let mut success = Vec::with_capacity(t.success.len());
    for op in t.success {
        success.push(op_from_pb(op, ops, ops_max)?);
    }
    let mut failure = Vec::with_capacity(t.failure.len());
    for op in t.failure {
        failure.push(op_from_pb(op, ops, ops_max)?);
    }
    Ok(st::TxnRequest {
        compare,
        success,
        failure,
    })
}

/// Converts a transaction, enforcing etcd's limit on operations per branch (`--max-txn-ops`).
pub fn txn_from_pb(t: pb::TxnRequest, ops_max: usize) -> Result<st::TxnRequest, ApiError> {
    if t.success.len() > ops_max || t.failure.len() > ops_max || t.compare.len() > ops_max {
        return Err(ApiError::TooManyOps);
    }
    let mut ops = 0;
    // Nested transactions count towards the same budget, twice the per-branch limit, so that
    // one request cannot smuggle an unbounded tree of operations.
    txn_from_pb_counted(t, &mut ops, ops_max * 2)
}

pub fn txn_to_pb(t: st::TxnResponse, header: &pb::ResponseHeader) -> pb::TxnResponse {
    use pb::response_op::Response;
    let responses = t
        .responses
        .into_iter()
        .map(|r| pb::ResponseOp {
            response: Some(match r {
                st::ResponseOp::Range(r) => Response::ResponseRange(range_to_pb(r, *header)),
                st::ResponseOp::Put(p) => Response::ResponsePut(put_to_pb(p, *header)),
                st::ResponseOp::DeleteRange(d) => Response::ResponseDeleteRange(delete_to_pb(d, *header)),
                st::ResponseOp::Txn(t) => Response::ResponseTxn(txn_to_pb(t, header)),
            }),
        })
        .collect();
    pb::TxnResponse {
        header: Some(*header),
        succeeded: t.succeeded,
        responses,
    }
}

pub fn watch_from_pb(c: &pb::WatchCreateRequest) -> Result<st::WatchRequest, ApiError> {
    use pb::watch_create_request::FilterType;
    if c.key.is_empty() {
        return Err(ApiError::EmptyKey);
    }
    let mut req = st::WatchRequest {
        key: c.key.clone(),
        range_end: c.range_end.clone(),
        start_revision: c.start_revision,
        prev_kv: c.prev_kv,
        filter_put: false,
        filter_delete: false,
    };
    for f in &c.filters {
        match FilterType::try_from(*f) {
            Ok(FilterType::Noput) => req.filter_put = true,
            Ok(FilterType::Nodelete) => req.filter_delete = true,
            Err(_) => return Err(bad("filters", format!("unknown filter {f}"))),
        }
    }
    Ok(req)
}
