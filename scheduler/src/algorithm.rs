//! One scheduling decision: filter the nodes (a sample of them in big clusters, as Kubernetes'
//! percentageOfNodesToScore), score the feasible ones, pick the best. Pure over a [`Cluster`].

use crate::filters::{self, AffinityTerm, FilterResult};
use crate::model::{self, controller_uid, host_ports, pod_requests, Cluster, HostPort, NodeInfo, Resources};
use crate::ring::hash64;
use crate::scores::{self, Policy, WeightedTerm};
use berth_proto::corev1::{NodeSelectorTerm, Pod};
use std::collections::{BTreeMap, HashMap, HashSet};

/// Score weights (Kubernetes' defaults: spreading and affinities count twice).
const WEIGHT_RESOURCES: f64 = 1.0;
const WEIGHT_SPREAD: f64 = 2.0;
const WEIGHT_NODE_AFFINITY: f64 = 2.0;
const WEIGHT_POD_AFFINITY: f64 = 2.0;
const WEIGHT_TAINTS: f64 = 1.0;
/// Below this many nodes every node is considered.
const MIN_FEASIBLE_NODES_TO_FIND: usize = 100;
/// The adaptive percentage never goes below this.
const MIN_PERCENTAGE_OF_NODES_TO_SCORE: usize = 5;

/// Everything about the pod being scheduled that the filters and scores need, computed once.
pub struct PodCtx<'a> {
    pub pod: &'a Pod,
    pub uid: String,
    pub requests: Resources,
    pub ports: Vec<HostPort>,
    pub affinity: Vec<AffinityTerm>,
    pub affinity_domains: Vec<HashSet<String>>,
    pub anti: Vec<AffinityTerm>,
    pub anti_domains: Vec<HashSet<String>>,
    pub forbidden: HashSet<(String, String)>,
    pub owner: Option<String>,
    pub preferred_nodes: Vec<(i32, NodeSelectorTerm)>,
    pub preferred_pods: Vec<WeightedTerm>,
    /// The pod's own topologySpreadConstraints (when it states none, its owner's pods are
    /// spread over hostname and zone instead).
    pub spread: Vec<filters::SpreadConstraint>,
}

impl<'a> PodCtx<'a> {
    pub fn new(pod: &'a Pod, cluster: &Cluster) -> PodCtx<'a> {
        let affinity = filters::required_terms(pod, false);
        let anti = filters::required_terms(pod, true);
        let affinity_domains = affinity
            .iter()
            .map(|t| filters::domains_with_match(t, cluster))
            .collect();
        let anti_domains = anti
            .iter()
            .map(|t| filters::domains_with_match(t, cluster))
            .collect();
        let aff = pod.spec.as_ref().and_then(|s| s.affinity.as_ref());
        let preferred_nodes = aff
            .and_then(|a| a.node_affinity.as_ref())
            .map(|na| {
                na.preferred_during_scheduling_ignored_during_execution
                    .iter()
                    .filter_map(|p| Some((p.weight, p.preference.clone()?)))
                    .collect()
            })
            .unwrap_or_default();
        let mut preferred_pods = Vec::new();
        let ns = model::pod_namespace(pod);
        let mut weighted = |terms: Option<&Vec<berth_proto::corev1::WeightedPodAffinityTerm>>, sign: f64| {
            for w in terms.into_iter().flatten() {
                let Some(term) = w
                    .pod_affinity_term
                    .as_ref()
                    .and_then(|t| AffinityTerm::new(t, ns))
                else {
                    continue;
                };
                let per_domain = pods_per_domain(&term, cluster);
                preferred_pods.push(WeightedTerm {
                    weight: sign * f64::from(w.weight),
                    term,
                    per_domain,
                });
            }
        };
        weighted(
            aff.and_then(|a| a.pod_affinity.as_ref())
                .map(|p| &p.preferred_during_scheduling_ignored_during_execution),
            1.0,
        );
        weighted(
            aff.and_then(|a| a.pod_anti_affinity.as_ref())
                .map(|p| &p.preferred_during_scheduling_ignored_during_execution),
            -1.0,
        );
        PodCtx {
            pod,
            uid: pod.metadata.as_ref().map_or(String::new(), |m| m.uid.clone()),
            requests: pod_requests(pod),
            ports: host_ports(pod),
            affinity,
            affinity_domains,
            anti,
            anti_domains,
            forbidden: filters::domains_forbidden_by_existing(pod, cluster),
            owner: controller_uid(pod).map(String::from),
            preferred_nodes,
            preferred_pods,
            spread: filters::SpreadConstraint::of(pod, cluster),
        }
    }
}

fn pods_per_domain(term: &AffinityTerm, cluster: &Cluster) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    for n in cluster.nodes() {
        let Some(v) = n.labels().get(&term.topology_key) else {
            continue;
        };
        let c = n.pods.values().filter(|p| term.selects(p)).count();
        if c > 0 {
            *out.entry(v.clone()).or_insert(0.0) += c as f64;
        }
    }
    out
}

/// Every filter, in order; the first that fails answers.
pub fn filter(ctx: &PodCtx, node: &NodeInfo) -> FilterResult {
    filters::node_schedulable(ctx.pod, &node.node)?;
    filters::node_ready(&node.node)?;
    filters::node_affinity(ctx.pod, &node.node)?;
    filters::taints_tolerated(ctx.pod, &node.node)?;
    filters::host_ports_free(&ctx.ports, node)?;
    filters::resources_fit(&ctx.requests, node)?;
    filters::pod_affinity(ctx.pod, &ctx.affinity, &ctx.affinity_domains, node)?;
    filters::pod_anti_affinity(&ctx.anti, &ctx.anti_domains, node)?;
    filters::existing_anti_affinity(&ctx.forbidden, node)?;
    filters::topology_spread(&ctx.spread, node)
}

/// Why a pod fits nowhere: how many nodes there were and how many failed for each reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FitError {
    pub nodes: usize,
    pub reasons: BTreeMap<String, usize>,
}

impl FitError {
    /// "0/5 nodes are available: 3 Insufficient cpu, 2 node(s) had untolerated taint {k: v}."
    pub fn message(&self) -> String {
        let mut parts: Vec<(String, usize)> = self.reasons.iter().map(|(r, c)| (r.clone(), *c)).collect();
        parts.sort();
        let list: Vec<String> = parts.iter().map(|(r, c)| format!("{c} {r}")).collect();
        if list.is_empty() {
            format!("0/{} nodes are available.", self.nodes)
        } else {
            format!("0/{} nodes are available: {}.", self.nodes, list.join(", "))
        }
    }
}

/// How many feasible nodes to look for among `n` (0 percentage = adaptive, as Kubernetes:
/// 50% minus 1% per 125 nodes, at least 5%, and at least 100 nodes).
pub fn nodes_to_find(n: usize, percentage: usize) -> usize {
    if n <= MIN_FEASIBLE_NODES_TO_FIND || percentage >= 100 {
        return n;
    }
    let pct = if percentage == 0 {
        50usize
            .saturating_sub(n / 125)
            .max(MIN_PERCENTAGE_OF_NODES_TO_SCORE)
    } else {
        percentage
    };
    (n * pct / 100).max(MIN_FEASIBLE_NODES_TO_FIND)
}

/// Settings of the algorithm.
#[derive(Debug, Clone, Copy)]
pub struct AlgorithmConfig {
    pub policy: Policy,
    /// 0 = adaptive (see [`nodes_to_find`]); 100 = every node.
    pub percentage_of_nodes_to_score: usize,
    /// A preferred node (see [`schedule_one`]) wins over better ones within this many points
    /// of total score.
    pub preferred_margin_points: f64,
}

impl Default for AlgorithmConfig {
    fn default() -> Self {
        AlgorithmConfig {
            policy: Policy::default(),
            percentage_of_nodes_to_score: 0,
            preferred_margin_points: PREFERRED_MARGIN_POINTS,
        }
    }
}

/// Default of [`AlgorithmConfig::preferred_margin_points`]: the whole range of the resource
/// score, so that with several instances each packs (or spreads) within its own share of the
/// nodes first, and a node elsewhere wins only when the other scores (affinities, topology
/// spread) favour it by more than that. Instances racing for the same fullest node would
/// otherwise turn most binds into conflicts.
pub const PREFERRED_MARGIN_POINTS: f64 = 100.0 * WEIGHT_RESOURCES;

/// Picks a node for the pod: feasible nodes from `start` on (wrapping), until enough are found,
/// then the best total score; ties go to the node with the highest hash of (pod uid, node),
/// so that equal nodes are chosen evenly. A node `preferred` says yes to wins over better
/// ones within `preferred_margin_points`: scheduler instances prefer disjoint sets of nodes,
/// so that they rarely bind to the same node at once (with every node preferred, as with one
/// instance, this is plain best-score).
pub fn schedule_one(
    ctx: &PodCtx,
    cluster: &Cluster,
    cfg: &AlgorithmConfig,
    start: usize,
    preferred: &dyn Fn(&str) -> bool,
) -> Result<String, FitError> {
    let nodes = cluster.nodes();
    let want = nodes_to_find(nodes.len(), cfg.percentage_of_nodes_to_score);
    let mut feasible: Vec<&NodeInfo> = Vec::new();
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..nodes.len() {
        let n = &nodes[(start + i) % nodes.len()];
        match filter(ctx, n) {
            Ok(()) => {
                feasible.push(n);
                if feasible.len() >= want {
                    break;
                }
            }
            Err(rs) => {
                for r in rs {
                    *reasons.entry(r.to_string()).or_default() += 1;
                }
            }
        }
    }
    if feasible.is_empty() {
        return Err(FitError {
            nodes: nodes.len(),
            reasons,
        });
    }
    let totals = score(ctx, cluster, cfg.policy, &feasible);
    Ok(pick(
        ctx,
        &feasible,
        &totals,
        cfg.preferred_margin_points,
        preferred,
    ))
}

fn pick(
    ctx: &PodCtx,
    feasible: &[&NodeInfo],
    totals: &[f64],
    margin: f64,
    preferred: &dyn Fn(&str) -> bool,
) -> String {
    const EPSILON: f64 = 1e-9;
    let best = totals.iter().copied().fold(f64::MIN, f64::max);
    let best_preferred = feasible
        .iter()
        .zip(totals)
        .filter(|(n, t)| **t >= best - margin - EPSILON && preferred(n.name()))
        .map(|(_, t)| *t)
        .fold(f64::MIN, f64::max);
    let target = if best_preferred > f64::MIN {
        best_preferred
    } else {
        best
    };
    feasible
        .iter()
        .zip(totals)
        .filter(|(n, t)| **t >= target - EPSILON && (best_preferred == f64::MIN || preferred(n.name())))
        .max_by_key(|(n, _)| hash64(&[ctx.uid.as_bytes(), n.name().as_bytes()]))
        .map(|(n, _)| n.name().to_string())
        .expect("feasible is not empty")
}

/// The weighted total score of each candidate.
pub fn score(ctx: &PodCtx, cluster: &Cluster, policy: Policy, nodes: &[&NodeInfo]) -> Vec<f64> {
    let mut total: Vec<f64> = nodes
        .iter()
        .map(|n| WEIGHT_RESOURCES * scores::resource_score(policy, &ctx.requests, n))
        .collect();
    let mut add = |w: f64, s: Vec<f64>| {
        for (t, v) in total.iter_mut().zip(s) {
            *t += w * v;
        }
    };
    let soft: Vec<&filters::SpreadConstraint> = ctx.spread.iter().filter(|c| !c.hard).collect();
    if !soft.is_empty() {
        let raw: Vec<f64> = nodes
            .iter()
            .map(|n| soft.iter().map(|c| c.count_at(n).unwrap_or(0.0)).sum())
            .collect();
        add(WEIGHT_SPREAD, scores::fewer_is_better(&raw));
    }
    if let Some(owner) = ctx.owner.as_ref().filter(|_| ctx.spread.is_empty()) {
        let per_node: Vec<f64> = nodes
            .iter()
            .map(|n| f64::from(cluster.owner_count(owner, n.name())))
            .collect();
        let zones = owner_zone_counts(owner, cluster);
        let per_zone: Vec<Option<f64>> = nodes
            .iter()
            .map(|n| {
                n.labels()
                    .get(model::ZONE_LABEL)
                    .map(|z| zones.get(z).copied().unwrap_or(0.0))
            })
            .collect();
        add(WEIGHT_SPREAD, scores::spread_scores(&per_node, &per_zone));
    }
    if !ctx.preferred_nodes.is_empty() {
        let raw: Vec<f64> = nodes
            .iter()
            .map(|n| scores::preferred_node_affinity_raw(&ctx.preferred_nodes, n))
            .collect();
        add(WEIGHT_NODE_AFFINITY, scores::more_is_better(&raw));
    }
    if !ctx.preferred_pods.is_empty() {
        let raw: Vec<f64> = nodes
            .iter()
            .map(|n| scores::preferred_pod_affinity_raw(&ctx.preferred_pods, n))
            .collect();
        add(WEIGHT_POD_AFFINITY, scores::min_max(&raw));
    }
    let taints: Vec<f64> = nodes
        .iter()
        .map(|n| scores::untolerated_prefer_no_schedule(ctx.pod, n))
        .collect();
    add(WEIGHT_TAINTS, scores::fewer_is_better(&taints));
    total
}

/// The owner's pods per zone, over every node.
fn owner_zone_counts(owner: &str, cluster: &Cluster) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    for (node, c) in cluster.owner_nodes(owner) {
        if let Some(z) = cluster.node(node).and_then(|n| n.labels().get(model::ZONE_LABEL)) {
            *out.entry(z.clone()).or_insert(0.0) += f64::from(c);
        }
    }
    out
}
