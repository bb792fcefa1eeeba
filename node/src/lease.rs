//! The node's heartbeat: a coordination.k8s.io Lease named after the node in namespace
//! `kube-node-lease` (created when missing), renewed every interval. Each renewal is a
//! compare-and-swap on the Lease as last read; a conflict rereads it.

use crate::{rfc3339_micro, Error};
use berth_client::leader::Clock;
use berth_client::{ClientError, ResourceClient};
use berth_proto::coordinationv1::{Lease, LeaseSpec};
use berth_proto::metav1::ObjectMeta;

pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

pub async fn ensure_namespace(client: &ResourceClient) -> Result<(), Error> {
    Ok(client.ensure_namespace(NODE_LEASE_NAMESPACE).await?)
}

/// Renews node leases; keeps the Lease as last written to CAS on it.
pub struct NodeLease {
    node: String,
    duration_seconds: i32,
    last: Option<Lease>,
}

impl NodeLease {
    pub fn new(node: &str, duration_seconds: i32) -> NodeLease {
        NodeLease {
            node: node.into(),
            duration_seconds,
            last: None,
        }
    }

    /// One renewal at the clock's time (creating the Lease when absent).
    pub async fn renew(&mut self, client: &ResourceClient, clock: &dyn Clock) -> Result<(), Error> {
        let now = rfc3339_micro(clock.now_micros());
        let current = match self.last.take() {
            Some(l) => Some(l),
            None => match client.get::<Lease>(NODE_LEASE_NAMESPACE, &self.node).await {
                Ok(l) => Some(l),
                Err(ClientError::NotFound(_)) => None,
                Err(e) => return Err(e.into()),
            },
        };
        let result = match current {
            None => {
                let l = Lease {
                    api_version: "coordination.k8s.io/v1".into(),
                    kind: "Lease".into(),
                    metadata: Some(ObjectMeta {
                        name: self.node.clone(),
                        namespace: NODE_LEASE_NAMESPACE.into(),
                        ..Default::default()
                    }),
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.node.clone()),
                        lease_duration_seconds: Some(self.duration_seconds),
                        renew_time: Some(now),
                        ..Default::default()
                    }),
                };
                client.create(NODE_LEASE_NAMESPACE, &l).await
            }
            Some(mut l) => {
                let spec = l.spec.get_or_insert_with(Default::default);
                spec.holder_identity = Some(self.node.clone());
                spec.lease_duration_seconds = Some(self.duration_seconds);
                spec.renew_time = Some(now);
                client.update(&l).await
            }
        };
        match result {
            Ok(l) => {
                self.last = Some(l);
                Ok(())
            }
            // Someone else wrote it (or it was deleted): read it again next time.
            Err(e) => Err(e.into()),
        }
    }
}
