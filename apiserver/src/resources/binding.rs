//! `Resources.Bind`: the pods/binding subresource the schedulers use.
//!
//! One store transaction sets `spec.nodeName` (and the PodScheduled=True condition) and bumps
//! the node's allocation key [`NODE_ALLOC_PREFIX`]`<node>`, comparing the pod's mod_revision
//! with the resourceVersion the scheduler saw (so the pod is still unbound) and the allocation
//! key's mod_revision with the one the scheduler's view of the node includes. Any number of
//! scheduler instances can therefore bind at once: a pod is never bound twice, and no node
//! receives a pod decided from a view that misses another bind to it (no overcommit).

use super::{compare, conflict, namespace_for, not_found, now_rfc3339, put_op, resource_type};
use super::{ResourcesService, Result};
use crate::error::ApiError;
use berth_proto::apiv1;
use berth_proto::corev1::PodCondition;
use berth_proto::manifest::Object;
use berth_store::{CompareTarget, PutRequest, RangeRequest, RequestOp, ResponseOp};

/// Prefix of the per-node allocation keys (their value: the key of the pod bound last).
pub const NODE_ALLOC_PREFIX: &str = "/registry/berth/node-alloc/";

fn range_of(key: &str) -> RangeRequest {
    RangeRequest {
        key: key.as_bytes().to_vec(),
        ..Default::default()
    }
}

fn required(field: &'static str, v: &str) -> Result<()> {
    if v.is_empty() {
        return Err(ApiError::InvalidArgument {
            field,
            reason: "required".into(),
        });
    }
    Ok(())
}

/// `pod` bound to `node`: nodeName and a PodScheduled=True condition.
fn bound(mut pod: berth_proto::corev1::Pod, node: &str) -> berth_proto::corev1::Pod {
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

impl ResourcesService {
    pub(super) async fn bind_pod(&self, req: apiv1::BindRequest) -> Result<apiv1::BindResponse> {
        required("name", &req.name)?;
        required("nodeName", &req.node_name)?;
        required("resourceVersion", &req.resource_version)?;
        let pods = resource_type("pods")?;
        let nodes = resource_type("nodes")?;
        let ns = namespace_for(pods, &req.namespace)?;
        let pod_key = pods.key(&ns, &req.name);
        let (stored, kv) = self.read_object(pods, &pod_key, &req.name).await?;
        let Object::Pod(pod) = stored else {
            unreachable!("pods decode as Pod")
        };
        if req.resource_version != kv.mod_revision.to_string() {
            return Err(conflict(pods, &req.name));
        }
        let assigned = pod.spec.as_ref().map_or("", |s| s.node_name.as_str());
        if !assigned.is_empty() {
            return Err(ApiError::Conflict {
                resource: pods.plural.into(),
                name: format!("{}\" is already assigned to node \"{assigned}", req.name),
            });
        }
        if pod
            .metadata
            .as_ref()
            .is_some_and(|m| !m.deletion_timestamp.is_empty())
        {
            return Err(ApiError::Forbidden(format!(
                "pod \"{}\" is being deleted, cannot be assigned to a node",
                req.name
            )));
        }
        // The read above was linearizable: a local read sees the node as of then.
        let node_key = nodes.key("", &req.node_name);
        if self.range(&range_of(&node_key))?.kvs.is_empty() {
            return Err(not_found(nodes, &req.node_name));
        }
        let obj = Object::Pod(bound(pod, &req.node_name));
        let alloc_key = format!("{NODE_ALLOC_PREFIX}{}", req.node_name);
        let txn = berth_store::TxnRequest {
            compare: vec![
                compare(&pod_key, CompareTarget::ModRevision(kv.mod_revision)),
                compare(&alloc_key, CompareTarget::ModRevision(req.node_alloc_revision)),
            ],
            success: vec![
                put_op(&pod_key, &obj),
                RequestOp::Put(PutRequest {
                    key: alloc_key.clone().into_bytes(),
                    value: pod_key.clone().into_bytes(),
                    ..Default::default()
                }),
            ],
            failure: vec![
                RequestOp::Range(range_of(&pod_key)),
                RequestOp::Range(range_of(&alloc_key)),
            ],
        };
        let r = self.propose_txn(txn).await?;
        if r.succeeded {
            let mut obj = obj;
            obj.metadata_mut().resource_version = r.revision.to_string();
            return Ok(apiv1::BindResponse {
                bound: true,
                pod: Some(obj.into()),
                node_alloc_revision: r.revision,
            });
        }
        let mod_revision = |i: usize| match r.responses.get(i) {
            Some(ResponseOp::Range(rr)) => rr.kvs.first().map_or(0, |kv| kv.mod_revision),
            other => unreachable!("the failure branch ranges twice, got {other:?}"),
        };
        if mod_revision(0) != kv.mod_revision {
            return Err(conflict(pods, &req.name));
        }
        Ok(apiv1::BindResponse {
            bound: false,
            pod: None,
            node_alloc_revision: mod_revision(1),
        })
    }
}
