//! Writes with admission: every put or delete of an object goes through [`ResourcesService::write_once`],
//! which makes the quota accounting part of the same store transaction:
//! - the namespace's ResourceQuotas are read at revision R, each one the change charges gets
//!   its new `status.used` put in the Txn, and a compare `mod_revision < R + 1` over the whole
//!   quota key range of the namespace makes the Txn fail if any quota changed (or appeared)
//!   since: then the caller retries and recomputes. Two concurrent creates therefore never
//!   both count against the same `used`. Each charged quota also gets `mod_revision ==` the
//!   revision read (a quota deleted meanwhile is not put back).
//! - a ResourceQuota whose spec is written gets `status.hard` = `spec.hard` and `status.used`
//!   recomputed from the objects it tracks, read at R, with a compare `mod_revision < R + 1`
//!   over each tracked kind's key range of the namespace and `mod_revision ==` on each object
//!   counted (so neither a new nor a deleted object is missed).
//!
//! LimitRange defaults and checks run on Pod creates before (they change the pod; they are
//! not part of the Txn: a LimitRange changed concurrently applies from the next create on, as
//! in Kubernetes).

use super::*;
use crate::admission::{self, Denial};
use crate::service_ip;

/// Attempts of a write whose Txn failed only because a quota (or the namespace) changed
/// meanwhile: each failed round means another write in the namespace went through, so many
/// concurrent creates in one quota'd namespace need as many rounds as there are writers.
pub(super) const CONTENDED_WRITE_ATTEMPTS: usize = 64;

/// Objects of one kind a quota recount compares one by one (so that one deleted meanwhile
/// fails the Txn instead of being counted); beyond this only new and changed objects are
/// caught, and a concurrent delete may leave the recount one too high until the next.
const QUOTA_RECOUNT_KEY_COMPARES_MAX: usize = 10_000;

/// What the object's own key must be for the write to go ahead.
#[derive(Clone, Copy, Debug)]
pub(super) enum Expect {
    /// A create: the key does not exist.
    Absent,
    /// An update or delete: the key is at this mod revision.
    ModRevision(i64),
}

impl Expect {
    fn compare(self, key: &str) -> Compare {
        match self {
            Expect::Absent => compare(key, CompareTarget::CreateRevision(0)),
            Expect::ModRevision(m) => compare(key, CompareTarget::ModRevision(m)),
        }
    }

    /// Whether the key (as the failed Txn read it) still is as expected.
    fn holds(self, kv: Option<&KeyValue>) -> bool {
        match self {
            Expect::Absent => kv.is_none(),
            Expect::ModRevision(m) => kv.is_some_and(|kv| kv.mod_revision == m),
        }
    }
}

/// How one attempt of a write ended.
pub(super) enum Outcome {
    /// Written at this revision; the object as stored (a quota's recomputed status included).
    Written(i64, Option<Box<Object>>),
    /// The object's key is not as expected (exists already / was modified).
    Lost,
    /// Only the namespace's quotas or the namespace moved meanwhile: try again.
    Raced,
}

fn range_compare(prefix: &str, below: i64) -> Compare {
    Compare {
        result: CompareResult::Less,
        target: CompareTarget::ModRevision(below),
        key: prefix.as_bytes().to_vec(),
        range_end: prefix_range_end(prefix.as_bytes()),
    }
}

fn quota_type() -> &'static ResourceType {
    RESOURCE_TYPES
        .iter()
        .find(|t| t.kind == "ResourceQuota")
        .expect("ResourceQuota is a resource type")
}

fn limit_range_type() -> &'static ResourceType {
    RESOURCE_TYPES
        .iter()
        .find(|t| t.kind == "LimitRange")
        .expect("LimitRange is a resource type")
}

fn forbidden(obj: &Object, why: &str) -> ApiError {
    ApiError::Forbidden(format!(
        "{} \"{}\" is forbidden: {why}",
        obj.resource_type().plural,
        obj.name()
    ))
}

/// Whether a write from `old` to `new` may change what any quota counts.
fn may_change_usage(old: Option<&Object>, new: Option<&Object>) -> bool {
    match (old, new) {
        (Some(o), Some(n)) => {
            admission::usage(o) != admission::usage(n)
                || matches!(n, Object::ResourceQuota(_)) && spec_changed(o, n)
        }
        _ => true,
    }
}

fn spec_changed(old: &Object, new: &Object) -> bool {
    let spec = |o: &Object| json_map(o).remove("spec");
    spec(old) != spec(new)
}

impl ResourcesService {
    /// Reads the objects of one kind in a namespace (local state: the caller has done a
    /// linearizable read, and the Txn's compares catch anything newer).
    fn range_prefix(&self, prefix: &str) -> Result<RangeResponse> {
        self.range(&RangeRequest {
            key: prefix.as_bytes().to_vec(),
            range_end: prefix_range_end(prefix.as_bytes()),
            ..Default::default()
        })
    }

    /// LimitRange admission of a new Pod: requests default to limits, then the namespace's
    /// LimitRange defaults; then the pod is defaulted and validated again, and every min/max/
    /// ratio violation is Forbidden naming the field.
    pub(super) fn admit_limit_ranges(&self, obj: &mut Object) -> Result<()> {
        let Object::Pod(pod) = obj else { return Ok(()) };
        let lrt = limit_range_type();
        let resp = self.range_prefix(&lrt.key_prefix(pod.metadata.as_ref().map_or("", |m| &m.namespace)))?;
        let ranges: Vec<berth_proto::corev1::LimitRange> = resp
            .kvs
            .iter()
            .filter_map(|kv| match decode(lrt, kv) {
                Ok(Object::LimitRange(l)) => Some(l),
                _ => None,
            })
            .collect();
        admission::default_requests_from_limits(pod);
        admission::apply_limit_range_defaults(pod, &ranges);
        let violations = admission::check_limit_ranges(pod, &ranges);
        admit(obj)?;
        if violations.is_empty() {
            return Ok(());
        }
        let list: Vec<String> = violations
            .iter()
            .map(|v| format!("{}: {}", v.path, v.message))
            .collect();
        let why = if list.len() == 1 {
            list[0].clone()
        } else {
            format!("[{}]", list.join(", "))
        };
        Err(forbidden(obj, &why))
    }

    /// The quota compares and puts of a change `old` → `new` in `ns` (Forbidden if it would
    /// exceed a quota). `own_key` is the written object's key, never charged itself.
    fn quota_ops(
        &self,
        ns: &str,
        own_key: &str,
        old: Option<&Object>,
        new: Option<&Object>,
    ) -> Result<(Vec<Compare>, Vec<RequestOp>)> {
        if ns.is_empty() || !may_change_usage(old, new) {
            return Ok((Vec::new(), Vec::new()));
        }
        let qt = quota_type();
        let prefix = qt.key_prefix(ns);
        let resp = self.range_prefix(&prefix)?;
        let mut ops = Vec::new();
        let mut compares = vec![range_compare(&prefix, resp.revision + 1)];
        for kv in resp.kvs.iter().filter(|kv| kv.key != own_key.as_bytes()) {
            let Object::ResourceQuota(q) = decode(qt, kv)? else {
                unreachable!("the quota prefix holds quotas")
            };
            match admission::charge(&q, old, new) {
                Ok(Some(next)) => {
                    // The range compare cannot see a quota deleted meanwhile; this one does, so
                    // a charge never puts a deleted quota back.
                    let key = String::from_utf8_lossy(&kv.key);
                    compares.push(compare(&key, CompareTarget::ModRevision(kv.mod_revision)));
                    ops.push(put_op(&key, &Object::ResourceQuota(next)));
                }
                Ok(None) => {}
                Err(Denial(why)) => {
                    let obj = new.or(old).expect("a write has an object");
                    return Err(forbidden(obj, &why));
                }
            }
        }
        Ok((compares, ops))
    }

    /// A Service's ClusterIP: when a Service gets one (created, or turned from ExternalName or
    /// headless), the requested address (in `--service-cidr` and free) or a free one is
    /// allocated by creating its allocation key in the Txn (compare `create_revision == 0`; a
    /// concurrent write that took it makes the Txn fail and this one pick again); when it
    /// stops having one (deleted, turned ExternalName) its key is deleted in the same Txn.
    fn service_ip_ops(
        &self,
        old: Option<&Object>,
        new: Option<&mut Object>,
    ) -> Result<(Vec<Compare>, Vec<RequestOp>)> {
        let cidr = self.shared.cfg.service_cidr;
        let old_ip = match old {
            Some(Object::Service(s)) => s
                .spec
                .as_ref()
                .map(|s| s.cluster_ip.clone())
                .filter(|ip| cidr.contains(ip)),
            _ => None,
        };
        let release = |ip: &str| {
            RequestOp::DeleteRange(DeleteRangeRequest {
                key: service_ip::allocation_key(ip).into_bytes(),
                ..Default::default()
            })
        };
        let svc = match new {
            Some(Object::Service(svc)) => svc,
            // Deleted (or not a Service): release what it held.
            _ => return Ok((Vec::new(), old_ip.iter().map(|ip| release(ip)).collect())),
        };
        let meta = svc.metadata.clone().unwrap_or_default();
        let spec = svc.spec.get_or_insert_with(Default::default);
        let mut ops: Vec<RequestOp> = Vec::new();
        if spec.r#type == "ExternalName" || spec.cluster_ip == "None" {
            // No address (any held one, e.g. of a ClusterIP turned ExternalName, goes).
            ops.extend(old_ip.iter().map(|ip| release(ip)));
            return Ok((Vec::new(), ops));
        }
        let unchanged = match old {
            Some(Object::Service(o)) => o
                .spec
                .as_ref()
                .is_some_and(|o| !o.cluster_ip.is_empty() && o.cluster_ip == spec.cluster_ip),
            _ => false,
        };
        if unchanged {
            // Kept as it was (also an address from before a --service-cidr change).
            return Ok((Vec::new(), ops));
        }
        let invalid = |ip: &str, why: String| {
            ApiError::Invalid(format!(
                "Service \"{}\" is invalid: spec.clusterIP: Invalid value: \"{ip}\": {why}",
                meta.name
            ))
        };
        let ip = if spec.cluster_ip.is_empty() {
            let is_taken = |ip: &str| Ok(self.read_local(&service_ip::allocation_key(ip))?.is_some());
            cidr.pick_free(is_taken, || self.allocated_ips(), rand::random::<u64>)?
                .ok_or_else(|| {
                    invalid(
                        "",
                        format!("failed to allocate a serviceIP: range {cidr} is full"),
                    )
                })?
        } else {
            let ip = spec.cluster_ip.clone();
            if !cidr.contains(&ip) {
                return Err(invalid(
                    &ip,
                    format!("provided IP is not in the valid range. The range of valid IPs is {cidr}"),
                ));
            }
            if self.read_local(&service_ip::allocation_key(&ip))?.is_some() {
                return Err(invalid(&ip, "provided IP is already allocated".into()));
            }
            ip
        };
        let key = service_ip::allocation_key(&ip);
        spec.cluster_ip = ip.clone();
        spec.cluster_ips = vec![ip];
        ops.extend(old_ip.iter().map(|ip| release(ip)));
        ops.push(RequestOp::Put(PutRequest {
            key: key.as_bytes().to_vec(),
            value: format!("{}/{}", meta.namespace, meta.name).into_bytes(),
            ..Default::default()
        }));
        Ok((vec![compare(&key, CompareTarget::CreateRevision(0))], ops))
    }

    /// Every allocated ClusterIP (local read; the allocation's compare catches newer ones).
    fn allocated_ips(&self) -> Result<std::collections::HashSet<String>> {
        let prefix = service_ip::ALLOCATION_PREFIX;
        let resp = self.range(&RangeRequest {
            key: prefix.as_bytes().to_vec(),
            range_end: prefix_range_end(prefix.as_bytes()),
            keys_only: true,
            ..Default::default()
        })?;
        Ok(resp
            .kvs
            .iter()
            .map(|kv| String::from_utf8_lossy(&kv.key[prefix.len()..]).into_owned())
            .collect())
    }

    fn read_local(&self, key: &str) -> Result<Option<KeyValue>> {
        let r = self.range(&RangeRequest {
            key: key.as_bytes().to_vec(),
            ..Default::default()
        })?;
        Ok(r.kvs.into_iter().next())
    }

    /// A dry-run create: whether the quotas would admit the object (Forbidden if not).
    pub(super) fn quota_check_only(&self, key: &str, obj: &Object) -> Result<()> {
        self.quota_ops(obj.namespace(), key, None, Some(obj)).map(drop)
    }

    /// A ResourceQuota whose spec is written: status recomputed from what it tracks, with the
    /// compares that make the Txn fail if any of that changed since.
    fn recompute_quota(&self, quota: &mut Object) -> Result<Vec<Compare>> {
        let Object::ResourceQuota(q) = quota else {
            return Ok(Vec::new());
        };
        let ns = q
            .metadata
            .as_ref()
            .map_or("", |m| m.namespace.as_str())
            .to_string();
        let hard = q.spec.as_ref().map(|s| s.hard.clone()).unwrap_or_default();
        let mut objects = Vec::new();
        let mut compares = Vec::new();
        for plural in admission::tracked_resources(&hard) {
            let rt = resource_type(plural)?;
            let prefix = rt.key_prefix(&ns);
            let resp = self.range_prefix(&prefix)?;
            for kv in &resp.kvs {
                objects.push(decode(rt, kv)?);
            }
            // New or changed objects fail the range compare; a deleted one only its own.
            compares.push(range_compare(&prefix, resp.revision + 1));
            if resp.kvs.len() <= QUOTA_RECOUNT_KEY_COMPARES_MAX {
                compares.extend(resp.kvs.iter().map(|kv| {
                    compare(
                        &String::from_utf8_lossy(&kv.key),
                        CompareTarget::ModRevision(kv.mod_revision),
                    )
                }));
            }
        }
        *q = admission::recompute(q, &objects);
        Ok(compares)
    }

    /// One attempt of a write of `key`: put `new` (or delete the key when `new` is None) if
    /// the key is as `expect`ed and `extra` compares hold, with the quota updates in the same
    /// Txn.
    pub(super) async fn write_once(
        &self,
        key: &str,
        expect: Expect,
        extra: Vec<Compare>,
        old: Option<&Object>,
        new: Option<Object>,
    ) -> Result<Outcome> {
        let ns = new.as_ref().or(old).map_or("", |o| o.namespace()).to_string();
        let mut new = new;
        let mut compares = vec![expect.compare(key)];
        compares.extend(extra);
        if let Some(n) = new.as_mut() {
            if matches!(n, Object::ResourceQuota(_)) && old.is_none_or(|o| spec_changed(o, n)) {
                compares.extend(self.recompute_quota(n)?);
            }
        }
        let (quota_compares, mut ops) = self.quota_ops(&ns, key, old, new.as_ref())?;
        compares.extend(quota_compares);
        let (ip_compares, ip_ops) = self.service_ip_ops(old, new.as_mut())?;
        compares.extend(ip_compares);
        ops.extend(ip_ops);
        let own = match &new {
            Some(n) => put_op(key, n),
            None => RequestOp::DeleteRange(DeleteRangeRequest {
                key: key.as_bytes().to_vec(),
                ..Default::default()
            }),
        };
        ops.insert(0, own);
        let txn = TxnRequest {
            compare: compares,
            success: ops,
            failure: vec![RequestOp::Range(RangeRequest {
                key: key.as_bytes().to_vec(),
                ..Default::default()
            })],
        };
        let r = self.propose_txn(txn).await?;
        if r.succeeded {
            return Ok(Outcome::Written(r.revision, new.map(Box::new)));
        }
        let current = match r.responses.into_iter().next() {
            Some(ResponseOp::Range(rr)) => rr.kvs.into_iter().next(),
            _ => None,
        };
        if expect.holds(current.as_ref()) {
            Ok(Outcome::Raced)
        } else {
            Ok(Outcome::Lost)
        }
    }

    /// An update or delete of an object read at `mod_revision`: Conflict if it changed since;
    /// quota races are retried here.
    pub(super) async fn write_existing(
        &self,
        stored: &Object,
        mod_revision: i64,
        new: Option<Object>,
    ) -> Result<(i64, Option<Object>)> {
        let key = stored.key();
        for _ in 0..CONTENDED_WRITE_ATTEMPTS {
            match self
                .write_once(
                    &key,
                    Expect::ModRevision(mod_revision),
                    Vec::new(),
                    Some(stored),
                    new.clone(),
                )
                .await?
            {
                Outcome::Written(rev, obj) => return Ok((rev, obj.map(|o| *o))),
                Outcome::Lost => return Err(conflict(stored.resource_type(), stored.name())),
                Outcome::Raced => self.linearizable().await?,
            }
        }
        Err(conflict(stored.resource_type(), stored.name()))
    }
}
