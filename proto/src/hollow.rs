//! Hollow Nodes: Node objects with no agent behind them, Ready with the given capacity (as
//! allocatable too), for benchmarks and the chaos harness that simulate agents.

use std::collections::BTreeMap;

use crate::corev1::{Node, NodeCondition, NodeSpec, NodeStatus};
use crate::metav1::ObjectMeta;

/// A Ready hollow Node `name` with `labels` and `capacity` (`cpu`, `memory`, `pods`).
pub fn node(name: &str, labels: BTreeMap<String, String>, capacity: BTreeMap<String, String>) -> Node {
    Node {
        metadata: Some(ObjectMeta {
            name: name.into(),
            labels,
            ..Default::default()
        }),
        spec: Some(NodeSpec::default()),
        status: Some(NodeStatus {
            capacity: capacity.clone(),
            allocatable: capacity,
            conditions: vec![NodeCondition {
                r#type: "Ready".into(),
                status: "True".into(),
                reason: "HollowNode".into(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}
