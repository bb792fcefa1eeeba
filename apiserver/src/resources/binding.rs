//! `Resources.Bind`: the pods/binding subresource the schedulers use, for one or more pods.
//!
//! One store transaction sets `spec.nodeName` (and the PodScheduled=True condition) of every
//! pod and bumps the node's allocation key [`NODE_ALLOC_PREFIX`]`<node>`, comparing each pod's
//! mod_revision with the resourceVersion the scheduler saw (so the pod is still unbound) and the
//! allocation key's mod_revision with the one the scheduler's view of the node includes. Any
//! number of scheduler instances can therefore bind at once: a pod is never bound twice, and no
//! node receives pods decided from a view that misses another bind to it (no overcommit).
//! Several pods in one call share one transaction (one Raft entry): a scheduler packing one
//! node binds the pods it decided meanwhile together instead of one round trip each.

use super::{compare, namespace_for, not_found, now_rfc3339, put_op, resource_type};
use super::{ResourcesService, Result};
use crate::error::ApiError;
use berth_proto::apiv1::{self, BindRejection};
use berth_proto::corev1::{Pod, PodCondition};
use berth_proto::manifest::Object;
use berth_store::{CompareTarget, KeyValue, PutRequest, RangeRequest, RequestOp, ResponseOp, TxnRequest};
use std::collections::HashSet;

/// Prefix of the per-node allocation keys (their value: the key of the last pod bound).
pub const NODE_ALLOC_PREFIX: &str = "/registry/berth/node-alloc/";
/// Most pods in one Bind (its transaction has one compare and one put per pod, plus one).
pub const BIND_PODS_MAX: usize = 64;

fn range_of(key: &str) -> RangeRequest {
    RangeRequest {
        key: key.as_bytes().to_vec(),
        ..Default::default()
    }
}

fn invalid(field: &'static str, reason: &str) -> ApiError {
    ApiError::InvalidArgument {
        field,
        reason: reason.into(),
    }
}

/// `pod` bound to `node`: nodeName and a PodScheduled=True condition.
fn bound(mut pod: Pod, node: &str) -> Pod {
    pod.spec.get_or_insert_with(Default::default).node_name = node.to_string();
    let status = pod.status.get_or_insert_with(Default::default);
    status.conditions.retain(|c| c.r#type != "PodScheduled");
    status.conditions.push(PodCondition {
        r#type: "PodScheduled".into(),
        status: "True".into(),
        last_transition_time: now_rfc3339(),
        ..Default::default()
    });
    pod
}

fn rejection(p: &apiv1::PodRevision, ns: &str, reason: &str, message: String) -> BindRejection {
    BindRejection {
        namespace: ns.to_string(),
        name: p.name.clone(),
        reason: reason.into(),
        message,
    }
}

/// A pod that may be bound: its key, the revision read, and the object to store.
struct Candidate {
    key: String,
    mod_revision: i64,
    obj: Object,
    ns: String,
    name: String,
}

fn check_request(req: &apiv1::BindRequest) -> Result<()> {
    if req.node_name.is_empty() {
        return Err(invalid("nodeName", "required"));
    }
    if req.pods.is_empty() || req.pods.len() > BIND_PODS_MAX {
        return Err(invalid(
            "pods",
            &format!("give 1 to {BIND_PODS_MAX} pods (got {})", req.pods.len()),
        ));
    }
    let mut seen = HashSet::new();
    for p in &req.pods {
        if p.name.is_empty() || p.resource_version.is_empty() {
            return Err(invalid("pods", "every pod needs a name and a resourceVersion"));
        }
        if !seen.insert((p.namespace.as_str(), p.name.as_str())) {
            return Err(invalid("pods", &format!("pod {:?} appears twice", p.name)));
        }
    }
    Ok(())
}

impl ResourcesService {
    /// The current revision of `key` (0 if absent), from a local read.
    fn mod_revision_of(&self, key: &str) -> Result<i64> {
        Ok(self
            .range(&range_of(key))?
            .kvs
            .first()
            .map_or(0, |kv| kv.mod_revision))
    }

    /// Reads the pods (after one linearizable read) and sorts them into candidates and
    /// rejections.
    fn candidates(&self, req: &apiv1::BindRequest) -> Result<(Vec<Candidate>, Vec<BindRejection>)> {
        let pods = resource_type("pods")?;
        let (mut ok, mut rejected) = (Vec::new(), Vec::new());
        for p in &req.pods {
            let ns = namespace_for(pods, &p.namespace)?;
            let key = pods.key(&ns, &p.name);
            let Some(kv) = self.range(&range_of(&key))?.kvs.into_iter().next() else {
                rejected.push(rejection(
                    p,
                    &ns,
                    "NotFound",
                    format!("pods \"{}\" not found", p.name),
                ));
                continue;
            };
            match self.check_pod(p, &ns, pods, &kv)? {
                Err(r) => rejected.push(r),
                Ok(pod) => ok.push(Candidate {
                    key,
                    mod_revision: kv.mod_revision,
                    obj: Object::Pod(bound(pod, &req.node_name)),
                    ns,
                    name: p.name.clone(),
                }),
            }
        }
        Ok((ok, rejected))
    }

    fn check_pod(
        &self,
        p: &apiv1::PodRevision,
        ns: &str,
        pods: &berth_proto::manifest::ResourceType,
        kv: &KeyValue,
    ) -> Result<std::result::Result<Pod, BindRejection>> {
        let Object::Pod(pod) = super::decode(pods, kv)? else {
            unreachable!("pods decode as Pod")
        };
        if p.resource_version != kv.mod_revision.to_string() {
            let m = format!(
                "pod \"{}\" has been modified (resourceVersion {})",
                p.name, kv.mod_revision
            );
            return Ok(Err(rejection(p, ns, "Conflict", m)));
        }
        let assigned = pod.spec.as_ref().map_or("", |s| s.node_name.as_str());
        if !assigned.is_empty() {
            let m = format!("pod \"{}\" is already assigned to node \"{assigned}\"", p.name);
            return Ok(Err(rejection(p, ns, "AlreadyBound", m)));
        }
        if pod
            .metadata
            .as_ref()
            .is_some_and(|m| !m.deletion_timestamp.is_empty())
        {
            let m = format!("pod \"{}\" is being deleted", p.name);
            return Ok(Err(rejection(p, ns, "Deleting", m)));
        }
        Ok(Ok(pod))
    }

    pub(super) async fn bind_pods(&self, req: apiv1::BindRequest) -> Result<apiv1::BindResponse> {
        check_request(&req)?;
        let nodes = resource_type("nodes")?;
        self.linearizable().await?;
        if self
            .range(&range_of(&nodes.key("", &req.node_name)))?
            .kvs
            .is_empty()
        {
            return Err(not_found(nodes, &req.node_name));
        }
        let alloc_key = format!("{NODE_ALLOC_PREFIX}{}", req.node_name);
        let (cands, mut rejected) = self.candidates(&req)?;
        if cands.is_empty() {
            return Ok(apiv1::BindResponse {
                bound: false,
                node_alloc_revision: self.mod_revision_of(&alloc_key)?,
                pods: vec![],
                rejected,
            });
        }
        let mut cmp = vec![compare(
            &alloc_key,
            CompareTarget::ModRevision(req.node_alloc_revision),
        )];
        cmp.extend(
            cands
                .iter()
                .map(|c| compare(&c.key, CompareTarget::ModRevision(c.mod_revision))),
        );
        let mut success: Vec<RequestOp> = cands.iter().map(|c| put_op(&c.key, &c.obj)).collect();
        success.push(RequestOp::Put(PutRequest {
            key: alloc_key.clone().into_bytes(),
            value: cands.last().expect("non-empty").key.clone().into_bytes(),
            ..Default::default()
        }));
        let mut failure = vec![RequestOp::Range(range_of(&alloc_key))];
        failure.extend(cands.iter().map(|c| RequestOp::Range(range_of(&c.key))));
        let r = self
            .propose_txn(TxnRequest {
                compare: cmp,
                success,
                failure,
            })
            .await?;
        if r.succeeded {
            let pods = cands
                .into_iter()
                .map(|mut c| {
                    c.obj.metadata_mut().resource_version = r.revision.to_string();
                    c.obj.into()
                })
                .collect();
            return Ok(apiv1::BindResponse {
                bound: true,
                node_alloc_revision: r.revision,
                pods,
                rejected,
            });
        }
        let current = |i: usize| match r.responses.get(i) {
            Some(ResponseOp::Range(rr)) => rr.kvs.first().map_or(0, |kv| kv.mod_revision),
            other => unreachable!("the failure branch only ranges, got {other:?}"),
        };
        let alloc_now = current(0);
        if alloc_now == req.node_alloc_revision {
            // A pod changed between the read and the transaction: name it; bind nothing.
            for (i, c) in cands.iter().enumerate() {
                if current(i + 1) != c.mod_revision {
                    rejected.push(BindRejection {
                        namespace: c.ns.clone(),
                        name: c.name.clone(),
                        reason: "Conflict".into(),
                        message: format!("pod \"{}\" has been modified", c.name),
                    });
                }
            }
        }
        Ok(apiv1::BindResponse {
            bound: false,
            node_alloc_revision: alloc_now,
            pods: vec![],
            rejected,
        })
    }
}
