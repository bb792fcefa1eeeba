//! Filters: may this pod go to this node? Each is a pure function over typed objects that
//! answers `Ok(())` or the reasons it may not, in the words `kubectl describe` shows
//! ("Insufficient cpu", "node(s) had untolerated taint {k: v}").

use crate::model::{labels_of_pod, pod_namespace, Cluster, HostPort, NodeInfo, Resources};
use berth_proto::corev1::{
    Node, NodeSelectorRequirement, NodeSelectorTerm, Pod, PodAffinityTerm, Taint, Toleration,
};
use berth_proto::selector::{Op, Requirement, Selector};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

/// Why a node was filtered out.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    NotReady,
    Unschedulable,
    Insufficient(&'static str),
    TooManyPods,
    NodeAffinity,
    Taint { key: String, value: String },
    PodAffinity,
    PodAntiAffinity,
    ExistingAntiAffinity,
    HostPorts,
    TopologySpread,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::NotReady => write!(f, "node(s) were not ready"),
            Reason::Unschedulable => write!(f, "node(s) were unschedulable"),
            Reason::Insufficient(r) => write!(f, "Insufficient {r}"),
            Reason::TooManyPods => write!(f, "Too many pods"),
            Reason::NodeAffinity => write!(f, "node(s) didn't match Pod's node affinity/selector"),
            Reason::Taint { key, value } => write!(f, "node(s) had untolerated taint {{{key}: {value}}}"),
            Reason::PodAffinity => write!(f, "node(s) didn't match pod affinity rules"),
            Reason::PodAntiAffinity => write!(f, "node(s) didn't match pod anti-affinity rules"),
            Reason::ExistingAntiAffinity => {
                write!(f, "node(s) didn't satisfy existing pods anti-affinity rules")
            }
            Reason::HostPorts => write!(f, "node(s) didn't have free ports for the requested pod ports"),
            Reason::TopologySpread => write!(f, "node(s) didn't match pod topology spread constraints"),
        }
    }
}

pub type FilterResult = Result<(), Vec<Reason>>;

fn fail(r: Reason) -> FilterResult {
    Err(vec![r])
}

/// The node's Ready condition is True.
pub fn node_ready(node: &Node) -> FilterResult {
    let ready = node.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.r#type == "Ready" && c.status == "True")
    });
    if ready {
        Ok(())
    } else {
        fail(Reason::NotReady)
    }
}

/// Taint `berth cordon` stands for (as Kubernetes' node.kubernetes.io/unschedulable).
pub const UNSCHEDULABLE_TAINT_KEY: &str = "node.kubernetes.io/unschedulable";

/// spec.unschedulable is false, or the pod tolerates the unschedulable taint.
pub fn node_schedulable(pod: &Pod, node: &Node) -> FilterResult {
    if !node.spec.as_ref().is_some_and(|s| s.unschedulable) {
        return Ok(());
    }
    let taint = Taint {
        key: UNSCHEDULABLE_TAINT_KEY.into(),
        effect: "NoSchedule".into(),
        ..Default::default()
    };
    if tolerations(pod).iter().any(|t| tolerates(t, &taint)) {
        Ok(())
    } else {
        fail(Reason::Unschedulable)
    }
}

/// Requests fit allocatable minus what is already requested on the node.
pub fn resources_fit(req: &Resources, node: &NodeInfo) -> FilterResult {
    let (a, used) = (&node.allocatable, &node.requested);
    let mut reasons = Vec::new();
    if used.pods + req.pods > a.pods {
        reasons.push(Reason::TooManyPods);
    }
    if req.cpu_milli > 0 && used.cpu_milli + req.cpu_milli > a.cpu_milli {
        reasons.push(Reason::Insufficient("cpu"));
    }
    if req.memory_bytes > 0 && used.memory_bytes + req.memory_bytes > a.memory_bytes {
        reasons.push(Reason::Insufficient("memory"));
    }
    if reasons.is_empty() {
        Ok(())
    } else {
        Err(reasons)
    }
}

fn requirement(r: &NodeSelectorRequirement) -> Option<Requirement> {
    let op = match r.operator.as_str() {
        "In" => Op::In,
        "NotIn" => Op::NotIn,
        "Exists" => Op::Exists,
        "DoesNotExist" => Op::DoesNotExist,
        "Gt" => Op::Gt,
        "Lt" => Op::Lt,
        _ => return None,
    };
    Some(Requirement {
        key: r.key.clone(),
        op,
        values: r.values.clone(),
    })
}

/// A node selector term: every expression holds on the labels and every field expression
/// (only `metadata.name`) on the node's name. An empty term matches nothing; an unknown
/// operator matches nothing.
pub fn term_matches(term: &NodeSelectorTerm, node: &Node) -> bool {
    if term.match_expressions.is_empty() && term.match_fields.is_empty() {
        return false;
    }
    let labels = crate::model::labels_of_node(node);
    let exprs = term
        .match_expressions
        .iter()
        .all(|r| requirement(r).is_some_and(|q| q.matches(labels)));
    let fields = term.match_fields.iter().all(|r| {
        let name: BTreeMap<String, String> = [(
            "metadata.name".to_string(),
            crate::model::node_name(node).to_string(),
        )]
        .into();
        r.key == "metadata.name" && requirement(r).is_some_and(|q| q.matches(&name))
    });
    exprs && fields
}

/// spec.nodeSelector (every label equal) and required node affinity (any term).
pub fn node_affinity(pod: &Pod, node: &Node) -> FilterResult {
    let Some(spec) = pod.spec.as_ref() else {
        return Ok(());
    };
    let labels = crate::model::labels_of_node(node);
    let selector_ok = spec.node_selector.iter().all(|(k, v)| labels.get(k) == Some(v));
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| na.required_during_scheduling_ignored_during_execution.as_ref());
    let affinity_ok = required.is_none_or(|r| r.node_selector_terms.iter().any(|t| term_matches(t, node)));
    if selector_ok && affinity_ok {
        Ok(())
    } else {
        fail(Reason::NodeAffinity)
    }
}

pub fn tolerations(pod: &Pod) -> &[Toleration] {
    pod.spec.as_ref().map_or(&[], |s| s.tolerations.as_slice())
}

/// Kubernetes' matching: the effect matches (or the toleration names none), and the key
/// matches with operator Exists (an empty key with Exists tolerates every taint) or Equal
/// (the default) with the same value.
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if !t.effect.is_empty() && t.effect != taint.effect {
        return false;
    }
    match t.operator.as_str() {
        "Exists" => t.key.is_empty() || t.key == taint.key,
        _ => t.key == taint.key && t.value == taint.value,
    }
}

/// Every NoSchedule and NoExecute taint is tolerated (the first one that is not is named).
pub fn taints_tolerated(pod: &Pod, node: &Node) -> FilterResult {
    let taints = node.spec.as_ref().map_or(&[][..], |s| s.taints.as_slice());
    let tols = tolerations(pod);
    for taint in taints {
        if !matches!(taint.effect.as_str(), "NoSchedule" | "NoExecute") {
            continue;
        }
        if !tols.iter().any(|t| tolerates(t, taint)) {
            return fail(Reason::Taint {
                key: taint.key.clone(),
                value: taint.value.clone(),
            });
        }
    }
    Ok(())
}

fn ports_conflict(a: &HostPort, b: &HostPort) -> bool {
    a.0 == b.0 && a.1 == b.1 && (a.2.is_empty() || b.2.is_empty() || a.2 == b.2)
}

/// No host port of the pod is taken on the node (same protocol and port, overlapping IP).
pub fn host_ports_free(wanted: &[HostPort], node: &NodeInfo) -> FilterResult {
    if wanted
        .iter()
        .any(|w| node.ports.iter().any(|u| ports_conflict(w, u)))
    {
        fail(Reason::HostPorts)
    } else {
        Ok(())
    }
}

/// A pod affinity term made ready to match: its selector and the namespaces it covers.
#[derive(Debug, Clone)]
pub struct AffinityTerm {
    pub selector: Selector,
    /// Empty: the namespace of the pod that states the term.
    pub namespaces: HashSet<String>,
    pub topology_key: String,
}

impl AffinityTerm {
    /// None for a term whose selector does not parse (it then matches nothing).
    pub fn new(t: &PodAffinityTerm, owner_ns: &str) -> Option<AffinityTerm> {
        let selector = Selector::from_label_selector(t.label_selector.as_ref()?).ok()?;
        let mut namespaces: HashSet<String> = t.namespaces.iter().cloned().collect();
        if namespaces.is_empty() && t.namespace_selector.is_none() {
            namespaces.insert(owner_ns.to_string());
        }
        Some(AffinityTerm {
            selector,
            namespaces,
            topology_key: t.topology_key.clone(),
        })
    }

    /// The term selects `pod` (a namespace selector, unsupported, counts as all namespaces).
    pub fn selects(&self, pod: &Pod) -> bool {
        (self.namespaces.is_empty() || self.namespaces.contains(pod_namespace(pod)))
            && self.selector.matches(labels_of_pod(pod))
    }
}

/// The required (anti-)affinity terms of a pod.
pub fn required_terms(pod: &Pod, anti: bool) -> Vec<AffinityTerm> {
    let ns = pod_namespace(pod);
    let Some(a) = pod.spec.as_ref().and_then(|s| s.affinity.as_ref()) else {
        return Vec::new();
    };
    let terms = if anti {
        a.pod_anti_affinity
            .as_ref()
            .map(|x| &x.required_during_scheduling_ignored_during_execution)
    } else {
        a.pod_affinity
            .as_ref()
            .map(|x| &x.required_during_scheduling_ignored_during_execution)
    };
    terms
        .into_iter()
        .flatten()
        .filter_map(|t| AffinityTerm::new(t, ns))
        .collect()
}

/// The topology domains (values of `term.topology_key`) that hold a pod the term selects.
pub fn domains_with_match(term: &AffinityTerm, cluster: &Cluster) -> HashSet<String> {
    let mut out = HashSet::new();
    for n in cluster.nodes() {
        let Some(v) = n.labels().get(&term.topology_key) else {
            continue;
        };
        if !out.contains(v) && n.pods.values().any(|p| term.selects(p)) {
            out.insert(v.clone());
        }
    }
    out
}

/// Required pod affinity: in every term's topology domain of the node there is a pod the term
/// selects. As in Kubernetes, a pod that matches its own term may go anywhere with the
/// topology key when no pod matches yet (so the first pod of a group can be placed).
pub fn pod_affinity(
    pod: &Pod,
    terms: &[AffinityTerm],
    matched: &[HashSet<String>],
    node: &NodeInfo,
) -> FilterResult {
    let all_empty = matched.iter().all(HashSet::is_empty);
    for (t, domains) in terms.iter().zip(matched) {
        let Some(v) = node.labels().get(&t.topology_key) else {
            return fail(Reason::PodAffinity);
        };
        let ok = domains.contains(v) || (all_empty && t.selects(pod));
        if !ok {
            return fail(Reason::PodAffinity);
        }
    }
    Ok(())
}

/// Required pod anti-affinity: no pod any term selects in the node's topology domain.
pub fn pod_anti_affinity(
    terms: &[AffinityTerm],
    matched: &[HashSet<String>],
    node: &NodeInfo,
) -> FilterResult {
    for (t, domains) in terms.iter().zip(matched) {
        if node
            .labels()
            .get(&t.topology_key)
            .is_some_and(|v| domains.contains(v))
        {
            return fail(Reason::PodAntiAffinity);
        }
    }
    Ok(())
}

/// The topology domains (key, value) where an existing pod's required anti-affinity selects
/// `pod`: the pod may not go there (anti-affinity is symmetric).
pub fn domains_forbidden_by_existing(pod: &Pod, cluster: &Cluster) -> HashSet<(String, String)> {
    let mut out = HashSet::new();
    for (node, p) in cluster.anti_affinity_pods() {
        let Some(n) = cluster.node(node) else { continue };
        for t in required_terms(p, true) {
            if let Some(v) = n.labels().get(&t.topology_key) {
                if t.selects(pod) {
                    out.insert((t.topology_key.clone(), v.clone()));
                }
            }
        }
    }
    out
}

/// The node lies in no domain an existing pod's anti-affinity forbids to this pod.
pub fn existing_anti_affinity(forbidden: &HashSet<(String, String)>, node: &NodeInfo) -> FilterResult {
    if forbidden.iter().any(|(k, v)| node.labels().get(k) == Some(v)) {
        fail(Reason::ExistingAntiAffinity)
    } else {
        Ok(())
    }
}

/// A pod's topologySpreadConstraint made ready to check: matching pods per domain.
#[derive(Debug, Clone)]
pub struct SpreadConstraint {
    pub topology_key: String,
    pub max_skew: f64,
    /// DoNotSchedule (a filter) rather than ScheduleAnyway (a score).
    pub hard: bool,
    /// Pods the selector matches (in the pod's namespace) per domain of every node with the key.
    pub counts: HashMap<String, f64>,
    /// 1 when the pod being placed matches its own selector (it will count once placed).
    pub self_match: f64,
}

impl SpreadConstraint {
    /// The constraints of `pod`, counted over `cluster` (unparseable selectors are skipped).
    pub fn of(pod: &Pod, cluster: &Cluster) -> Vec<SpreadConstraint> {
        let Some(spec) = pod.spec.as_ref() else {
            return Vec::new();
        };
        let ns = pod_namespace(pod);
        let mut out = Vec::new();
        for c in &spec.topology_spread_constraints {
            let Some(selector) = c
                .label_selector
                .as_ref()
                .and_then(|s| Selector::from_label_selector(s).ok())
            else {
                continue;
            };
            let mut counts: HashMap<String, f64> = HashMap::new();
            for n in cluster.nodes() {
                let Some(v) = n.labels().get(&c.topology_key) else {
                    continue;
                };
                let matching = n
                    .pods
                    .values()
                    .filter(|p| pod_namespace(p) == ns && selector.matches(labels_of_pod(p)))
                    .count();
                *counts.entry(v.clone()).or_insert(0.0) += matching as f64;
            }
            out.push(SpreadConstraint {
                topology_key: c.topology_key.clone(),
                max_skew: f64::from(c.max_skew.max(1)),
                hard: c.when_unsatisfiable != "ScheduleAnyway",
                counts,
                self_match: if selector.matches(labels_of_pod(pod)) {
                    1.0
                } else {
                    0.0
                },
            });
        }
        out
    }

    /// Matching pods in the node's domain (None: the node lacks the topology key).
    pub fn count_at(&self, node: &NodeInfo) -> Option<f64> {
        let v = node.labels().get(&self.topology_key)?;
        Some(self.counts.get(v).copied().unwrap_or(0.0))
    }
}

/// DoNotSchedule constraints: placing the pod on the node keeps every skew (its domain's count
/// plus itself, minus the least populated domain's) within maxSkew; a node without the key fails.
pub fn topology_spread(constraints: &[SpreadConstraint], node: &NodeInfo) -> FilterResult {
    for c in constraints.iter().filter(|c| c.hard) {
        let Some(here) = c.count_at(node) else {
            return fail(Reason::TopologySpread);
        };
        let min = c.counts.values().copied().fold(f64::MAX, f64::min);
        if here + c.self_match - min > c.max_skew {
            return fail(Reason::TopologySpread);
        }
    }
    Ok(())
}
