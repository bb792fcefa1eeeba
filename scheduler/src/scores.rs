//! Scores: how good is this feasible node for this pod? Pure functions; each gives raw values
//! per candidate node, normalized to 0..=100 over the candidates (higher is better).

use crate::filters::{tolerates, AffinityTerm};
use crate::model::{NodeInfo, Resources};
use berth_proto::corev1::{NodeSelectorTerm, Pod, Taint};
use std::collections::HashMap;

/// The resource scoring policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// Prefer the emptiest node (spreading load).
    #[default]
    LeastAllocated,
    /// Prefer the fullest node that fits (bin packing, fewer nodes in use).
    MostAllocated,
}

impl std::str::FromStr for Policy {
    type Err = String;
    fn from_str(s: &str) -> Result<Policy, String> {
        match s {
            "LeastAllocated" | "least-allocated" | "least" => Ok(Policy::LeastAllocated),
            "MostAllocated" | "most-allocated" | "most" => Ok(Policy::MostAllocated),
            other => Err(format!("{other:?} is neither LeastAllocated nor MostAllocated")),
        }
    }
}

/// 0..=100 from the node's cpu and memory after placing `req`: free share (LeastAllocated) or
/// used share (MostAllocated), averaged over the resources the node offers.
pub fn resource_score(policy: Policy, req: &Resources, node: &NodeInfo) -> f64 {
    let a = &node.allocatable;
    let mut used = node.requested;
    used.add(req);
    let mut sum = 0.0;
    let mut n = 0.0;
    for (cap, u) in [(a.cpu_milli, used.cpu_milli), (a.memory_bytes, used.memory_bytes)] {
        if cap <= 0 {
            continue;
        }
        let used_share = (u as f64 / cap as f64).clamp(0.0, 1.0);
        sum += match policy {
            Policy::LeastAllocated => 1.0 - used_share,
            Policy::MostAllocated => used_share,
        } * 100.0;
        n += 1.0;
    }
    if n == 0.0 {
        0.0
    } else {
        sum / n
    }
}

/// Fewer is better: 100 * (max - v) / max over the candidates (all 100 when max is 0).
pub fn fewer_is_better(raw: &[f64]) -> Vec<f64> {
    let max = raw.iter().copied().fold(0.0, f64::max);
    raw.iter()
        .map(|v| {
            if max <= 0.0 {
                100.0
            } else {
                100.0 * (max - v) / max
            }
        })
        .collect()
}

/// More is better: 100 * v / max (all 0 when max is 0).
pub fn more_is_better(raw: &[f64]) -> Vec<f64> {
    let max = raw.iter().copied().fold(0.0, f64::max);
    raw.iter()
        .map(|v| if max <= 0.0 { 0.0 } else { 100.0 * v / max })
        .collect()
}

/// Min-max to 0..=100 (all 0 when every value is equal); for raw values that may be negative.
pub fn min_max(raw: &[f64]) -> Vec<f64> {
    let max = raw.iter().copied().fold(f64::MIN, f64::max);
    let min = raw.iter().copied().fold(f64::MAX, f64::min);
    raw.iter()
        .map(|v| {
            if max <= min {
                0.0
            } else {
                100.0 * (v - min) / (max - min)
            }
        })
        .collect()
}

/// Default topology spread of one owner's pods: fewer of them on the node (hostname) and in
/// its zone is better; the zone weighs 2/3 when the nodes carry zones (as Kubernetes'
/// SelectorSpread). `node_counts` and `zone_counts` are the owner's pods per candidate node
/// and per candidate's zone (None = the node has no zone label).
pub fn spread_scores(node_counts: &[f64], zone_counts: &[Option<f64>]) -> Vec<f64> {
    let by_node = fewer_is_better(node_counts);
    if zone_counts.iter().all(Option::is_none) {
        return by_node;
    }
    let zc: Vec<f64> = zone_counts.iter().map(|z| z.unwrap_or(0.0)).collect();
    let by_zone = fewer_is_better(&zc);
    by_node
        .iter()
        .zip(by_zone.iter().zip(zone_counts))
        .map(|(n, (z, has))| {
            if has.is_some() {
                n / 3.0 + z * 2.0 / 3.0
            } else {
                *n
            }
        })
        .collect()
}

/// Sum of the weights of the preferred node affinity terms the node matches.
pub fn preferred_node_affinity_raw(terms: &[(i32, NodeSelectorTerm)], node: &NodeInfo) -> f64 {
    terms
        .iter()
        .filter(|(_, t)| crate::filters::term_matches(t, &node.node))
        .map(|(w, _)| f64::from(*w))
        .sum()
}

/// A weighted preferred pod (anti-)affinity term with the pods it selects per topology
/// domain; `weight` is negative for anti-affinity.
#[derive(Debug, Clone)]
pub struct WeightedTerm {
    pub weight: f64,
    pub term: AffinityTerm,
    pub per_domain: HashMap<String, f64>,
}

/// Sum over the terms of weight x selected pods in the node's domain.
pub fn preferred_pod_affinity_raw(terms: &[WeightedTerm], node: &NodeInfo) -> f64 {
    terms
        .iter()
        .map(|t| {
            node.labels()
                .get(&t.term.topology_key)
                .and_then(|v| t.per_domain.get(v))
                .map_or(0.0, |c| t.weight * c)
        })
        .sum()
}

/// PreferNoSchedule taints the pod does not tolerate (fewer is better).
pub fn untolerated_prefer_no_schedule(pod: &Pod, node: &NodeInfo) -> f64 {
    let tols = crate::filters::tolerations(pod);
    let taints: &[Taint] = node.node.spec.as_ref().map_or(&[], |s| s.taints.as_slice());
    taints
        .iter()
        .filter(|t| t.effect == "PreferNoSchedule" && !tols.iter().any(|x| tolerates(x, t)))
        .count() as f64
}
