//! The scheduler's typed view of the cluster: what a pod requests, what each node offers and
//! has bound to it, and indexes the filters and scores read (pods per owner per node).

use berth_proto::corev1::{Node, Pod};
use berth_proto::quantity::Quantity;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// The topology keys spreading and affinity use most.
pub const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// Amounts of the resources the scheduler accounts for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resources {
    pub cpu_milli: i64,
    pub memory_bytes: i64,
    pub pods: i64,
}

impl Resources {
    pub fn add(&mut self, o: &Resources) {
        self.cpu_milli += o.cpu_milli;
        self.memory_bytes += o.memory_bytes;
        self.pods += o.pods;
    }

    pub fn sub(&mut self, o: &Resources) {
        self.cpu_milli -= o.cpu_milli;
        self.memory_bytes -= o.memory_bytes;
        self.pods -= o.pods;
    }
}

fn clamp_i64(v: i128) -> i64 {
    i64::try_from(v).unwrap_or(if v < 0 { i64::MIN } else { i64::MAX })
}

/// cpu in millicores, memory in bytes (rounded up), from a quantity map; bad or missing = 0.
fn amounts(m: &BTreeMap<String, String>) -> Resources {
    let q = |k: &str| m.get(k).and_then(|s| Quantity::parse(s).ok());
    Resources {
        cpu_milli: q("cpu").map_or(0, |q| clamp_i64(q.milli_value())),
        memory_bytes: q("memory").map_or(0, |q| clamp_i64(q.value())),
        pods: q("pods").map_or(0, |q| clamp_i64(q.value())),
    }
}

/// A container's requests (its limits where it states no request, as Kubernetes defaults).
fn container_requests(c: &berth_proto::corev1::Container) -> Resources {
    let Some(r) = c.resources.as_ref() else {
        return Resources::default();
    };
    let mut m = r.limits.clone();
    m.extend(r.requests.iter().map(|(k, v)| (k.clone(), v.clone())));
    amounts(&m)
}

/// What a pod requests: max(sum of containers, largest init container) + overhead, and 1 pod.
pub fn pod_requests(pod: &Pod) -> Resources {
    let Some(spec) = pod.spec.as_ref() else {
        return Resources {
            pods: 1,
            ..Default::default()
        };
    };
    let mut sum = Resources::default();
    for c in &spec.containers {
        sum.add(&container_requests(c));
    }
    for c in &spec.init_containers {
        let r = container_requests(c);
        sum.cpu_milli = sum.cpu_milli.max(r.cpu_milli);
        sum.memory_bytes = sum.memory_bytes.max(r.memory_bytes);
    }
    sum.add(&amounts(&spec.overhead));
    sum.pods = 1;
    sum
}

/// What a node offers: status.allocatable, else status.capacity (missing resources are 0).
pub fn node_allocatable(node: &Node) -> Resources {
    let Some(st) = node.status.as_ref() else {
        return Resources::default();
    };
    if st.allocatable.is_empty() {
        amounts(&st.capacity)
    } else {
        amounts(&st.allocatable)
    }
}

pub fn pod_key(pod: &Pod) -> String {
    let m = pod.metadata.as_ref();
    format!(
        "{}/{}",
        m.map_or("", |m| m.namespace.as_str()),
        m.map_or("", |m| m.name.as_str())
    )
}

pub fn pod_node(pod: &Pod) -> &str {
    pod.spec.as_ref().map_or("", |s| s.node_name.as_str())
}

pub fn node_name(node: &Node) -> &str {
    node.metadata.as_ref().map_or("", |m| m.name.as_str())
}

pub fn labels_of_node(node: &Node) -> &BTreeMap<String, String> {
    static EMPTY: BTreeMap<String, String> = BTreeMap::new();
    node.metadata.as_ref().map_or(&EMPTY, |m| &m.labels)
}

pub fn labels_of_pod(pod: &Pod) -> &BTreeMap<String, String> {
    static EMPTY: BTreeMap<String, String> = BTreeMap::new();
    pod.metadata.as_ref().map_or(&EMPTY, |m| &m.labels)
}

pub fn pod_namespace(pod: &Pod) -> &str {
    pod.metadata.as_ref().map_or("", |m| m.namespace.as_str())
}

/// The uid of the pod's controlling owner (a ReplicaSet, ...), if any.
pub fn controller_uid(pod: &Pod) -> Option<&str> {
    let refs = &pod.metadata.as_ref()?.owner_references;
    refs.iter()
        .find(|r| r.controller == Some(true))
        .or(refs.first())
        .map(|r| r.uid.as_str())
        .filter(|u| !u.is_empty())
}

/// Pods in a terminal phase hold no resources.
pub fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().map(|s| s.phase.as_str()),
        Some("Succeeded" | "Failed")
    )
}

pub fn has_required_anti_affinity(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.pod_anti_affinity.as_ref())
        .is_some_and(|a| !a.required_during_scheduling_ignored_during_execution.is_empty())
}

/// A host port a pod claims: (protocol, port, host IP; "" = all addresses).
pub type HostPort = (String, i32, String);

pub fn host_ports(pod: &Pod) -> Vec<HostPort> {
    let Some(spec) = pod.spec.as_ref() else {
        return Vec::new();
    };
    spec.containers
        .iter()
        .flat_map(|c| &c.ports)
        .filter(|p| p.host_port > 0)
        .map(|p| {
            let proto = if p.protocol.is_empty() { "TCP" } else { &p.protocol };
            let ip = if p.host_ip == "0.0.0.0" { "" } else { &p.host_ip };
            (proto.to_string(), p.host_port, ip.to_string())
        })
        .collect()
}

/// One node and what is bound (or assumed bound) to it.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub node: Arc<Node>,
    pub allocatable: Resources,
    pub requested: Resources,
    /// Pods counted on this node, by `namespace/name`.
    pub pods: BTreeMap<String, Arc<Pod>>,
    pub ports: Vec<HostPort>,
}

impl NodeInfo {
    pub fn new(node: Arc<Node>) -> NodeInfo {
        NodeInfo {
            allocatable: node_allocatable(&node),
            node,
            requested: Resources::default(),
            pods: BTreeMap::new(),
            ports: Vec::new(),
        }
    }

    pub fn name(&self) -> &str {
        node_name(&self.node)
    }

    pub fn labels(&self) -> &BTreeMap<String, String> {
        labels_of_node(&self.node)
    }

    pub fn add_pod(&mut self, key: String, pod: Arc<Pod>) {
        self.requested.add(&pod_requests(&pod));
        self.ports.extend(host_ports(&pod));
        self.pods.insert(key, pod);
    }

    pub fn remove_pod(&mut self, key: &str) {
        if let Some(pod) = self.pods.remove(key) {
            self.requested.sub(&pod_requests(&pod));
            for p in host_ports(&pod) {
                if let Some(i) = self.ports.iter().position(|x| *x == p) {
                    self.ports.swap_remove(i);
                }
            }
        }
    }
}

/// Every node with its pods, the place each counted pod is on, and pods per owner per node.
#[derive(Debug, Default)]
pub struct Cluster {
    nodes: Vec<NodeInfo>,
    index: HashMap<String, usize>,
    /// Where each counted pod is: `namespace/name` -> node name.
    placed: HashMap<String, String>,
    /// Pods of each controlling owner per node (the default topology spread counts these).
    by_owner: HashMap<String, HashMap<String, u32>>,
    /// Pods counted on nodes that are not (yet) in the cache.
    orphans: HashMap<String, Arc<Pod>>,
    /// Placed pods with required anti-affinity terms (which every other pod must respect).
    anti_affinity_pods: HashMap<String, (String, Arc<Pod>)>,
}

impl Cluster {
    pub fn nodes(&self) -> &[NodeInfo] {
        &self.nodes
    }

    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.index.get(name).map(|&i| &self.nodes[i])
    }

    /// Placed pods with required pod anti-affinity, with their node.
    pub fn anti_affinity_pods(&self) -> impl Iterator<Item = (&str, &Pod)> {
        self.anti_affinity_pods
            .values()
            .map(|(n, p)| (n.as_str(), p.as_ref()))
    }

    pub fn placed_on(&self, key: &str) -> Option<&str> {
        self.placed.get(key).map(String::as_str)
    }

    /// Pods of owner `uid` on node `node`.
    pub fn owner_count(&self, uid: &str, node: &str) -> u32 {
        self.by_owner
            .get(uid)
            .and_then(|m| m.get(node))
            .copied()
            .unwrap_or(0)
    }

    /// The nodes holding pods of owner `uid`, with how many.
    pub fn owner_nodes(&self, uid: &str) -> impl Iterator<Item = (&str, u32)> {
        self.by_owner
            .get(uid)
            .into_iter()
            .flatten()
            .map(|(n, c)| (n.as_str(), *c))
    }

    /// Adds or replaces a node (keeping its pods).
    pub fn upsert_node(&mut self, node: Arc<Node>) {
        let name = node_name(&node).to_string();
        match self.index.get(&name) {
            Some(&i) => {
                let n = &mut self.nodes[i];
                n.allocatable = node_allocatable(&node);
                n.node = node;
            }
            None => {
                self.index.insert(name.clone(), self.nodes.len());
                self.nodes.push(NodeInfo::new(node));
                let waiting: Vec<(String, Arc<Pod>)> = self
                    .orphans
                    .iter()
                    .filter(|(k, _)| self.placed.get(*k) == Some(&name))
                    .map(|(k, p)| (k.clone(), p.clone()))
                    .collect();
                for (k, p) in waiting {
                    self.orphans.remove(&k);
                    self.nodes.last_mut().expect("pushed").add_pod(k, p);
                }
            }
        }
    }

    /// Removes a node; its pods wait as orphans in case it comes back.
    pub fn remove_node(&mut self, name: &str) {
        let Some(i) = self.index.remove(name) else { return };
        let info = self.nodes.swap_remove(i);
        if i < self.nodes.len() {
            let moved = self.nodes[i].name().to_string();
            self.index.insert(moved, i);
        }
        self.orphans.extend(info.pods);
    }

    /// Counts `pod` on `node` (bound, or assumed bound), replacing its previous placement.
    pub fn place(&mut self, key: &str, node: &str, pod: Arc<Pod>) {
        self.unplace(key);
        if let Some(uid) = controller_uid(&pod) {
            *self
                .by_owner
                .entry(uid.to_string())
                .or_default()
                .entry(node.to_string())
                .or_default() += 1;
        }
        self.placed.insert(key.to_string(), node.to_string());
        if has_required_anti_affinity(&pod) {
            self.anti_affinity_pods
                .insert(key.to_string(), (node.to_string(), pod.clone()));
        }
        match self.index.get(node) {
            Some(&i) => self.nodes[i].add_pod(key.to_string(), pod),
            None => {
                self.orphans.insert(key.to_string(), pod);
            }
        }
    }

    /// Stops counting the pod anywhere.
    pub fn unplace(&mut self, key: &str) {
        let Some(node) = self.placed.remove(key) else {
            return;
        };
        self.anti_affinity_pods.remove(key);
        let pod = match self.index.get(&node) {
            Some(&i) => {
                let p = self.nodes[i].pods.get(key).cloned();
                self.nodes[i].remove_pod(key);
                p
            }
            None => self.orphans.remove(key),
        };
        if let Some(uid) = pod.as_deref().and_then(controller_uid) {
            if let Some(m) = self.by_owner.get_mut(uid) {
                if let Some(c) = m.get_mut(&node) {
                    *c -= 1;
                    if *c == 0 {
                        m.remove(&node);
                    }
                }
                if m.is_empty() {
                    self.by_owner.remove(uid);
                }
            }
        }
    }
}
