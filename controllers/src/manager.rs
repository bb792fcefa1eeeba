//! The controller manager: shared informers, one queue per controller, leader election.
//!
//! Informers run on every instance (so a new leader starts from warm caches); their events
//! reach the controllers' queues only while this instance leads; workers run only then.

use crate::deployment::{self, DeploymentController};
use crate::endpoints::{self, EndpointsController};
use crate::gc::{GarbageCollector, Store, Typed};
use crate::ipam::{IpamController, Ipv4Cidr};
use crate::namespace::NamespaceController;
use crate::nodelifecycle::{self, NodeLifecycleController, TokenBucket, NODE_LEASE_NAMESPACE};
use crate::replicaset::{self, Expectations, ReplicaSetController};
use crate::runtime::{pump, Controller, KeyFn, Reconciler, Sink, WorkQueue, WORK_QUEUE_CAPACITY};
use crate::util::{join_key, key_of, meta};
use berth_client::leader::{Clock, LeaderElectionConfig, LeaderElector, SystemClock};
use berth_client::{Informer, InformerEvent, ListParams, Resource, ResourceClient};
use berth_proto::appsv1::{Deployment, ReplicaSet};
use berth_proto::coordinationv1::Lease;
use berth_proto::corev1::{ConfigMap, Endpoints, Namespace, Node, Pod, Secret, Service};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// Namespace and name of the Lease that elects the active controller manager.
pub const LEADER_LEASE_NAMESPACE: &str = "kube-system";
pub const LEADER_LEASE_NAME: &str = "berth-controller-manager";
/// Namespaces the control plane itself uses (created at start if missing).
pub const SYSTEM_NAMESPACES: [&str; 2] = [LEADER_LEASE_NAMESPACE, NODE_LEASE_NAMESPACE];
/// The leader Lease's duration: when the leading member dies, another takes over at most this
/// long after the last renewal (plus one [`RENEW_INTERVAL`] of polling). Kubernetes uses 15 s;
/// Berth's target is controllers acting again within 2 s of losing the leader.
pub const LEASE_DURATION: Duration = Duration::from_secs(1);
/// How often the leader renews (and candidates look at) the Lease: one Raft write each.
pub const RENEW_INTERVAL: Duration = Duration::from_millis(150);
/// A leader that has not renewed for this long (counted from the start of its last successful
/// renewal) stops its controllers. [`LEASE_DURATION`] minus this (300 ms) is the margin for
/// clock skew between members and for writes a deposed leader sent just before stopping; the
/// deadline leaves room for a Raft election (250–500 ms timeout) without stepping down.
pub const RENEW_DEADLINE: Duration = Duration::from_millis(700);
/// How long a clean shutdown waits to release the Lease.
pub const RELEASE_TIMEOUT: Duration = Duration::from_secs(1);
/// Pause between attempts to create the system namespaces while the server is not ready.
pub const STARTUP_RETRY: Duration = Duration::from_millis(500);

/// Settings of a controller manager.
#[derive(Clone)]
pub struct Config {
    /// This candidate's identity in the leader Lease (the server's member name).
    pub identity: String,
    /// A node whose Lease is older than this is silent (NotReady, evicted).
    pub node_grace_period: Duration,
    /// Pod CIDRs of nodes are carved from this.
    pub cluster_cidr: Ipv4Cidr,
    /// Workers per controller (IPAM and node lifecycle always run one).
    pub workers: usize,
    pub lease_duration: Duration,
    pub renew_interval: Duration,
    pub renew_deadline: Duration,
    pub clock: Arc<dyn Clock>,
}

impl Config {
    /// Defaults: grace period 5 s, cluster CIDR 10.244.0.0/16, 2 workers, and a fast failover
    /// ([`LEASE_DURATION`], [`RENEW_INTERVAL`], [`RENEW_DEADLINE`]).
    pub fn new(identity: impl Into<String>) -> Config {
        Config {
            identity: identity.into(),
            node_grace_period: Duration::from_secs(5),
            cluster_cidr: "10.244.0.0/16".parse().expect("valid"),
            workers: 2,
            lease_duration: LEASE_DURATION,
            renew_interval: RENEW_INTERVAL,
            renew_deadline: RENEW_DEADLINE,
            clock: Arc::new(SystemClock),
        }
    }

    /// The election timings' invariant: renew several times per deadline, and step down
    /// (renew deadline) before anyone else may take the Lease over (lease duration, whole
    /// seconds since the Lease stores seconds). A violation is a programming error.
    fn check_timings(&self) {
        assert!(
            self.renew_interval < self.renew_deadline && self.renew_deadline < self.lease_duration,
            "controller manager: need renew_interval < renew_deadline < lease_duration: {self:?}"
        );
        assert!(
            self.lease_duration.subsec_nanos() == 0 && self.lease_duration >= Duration::from_secs(1),
            "controller manager: the lease duration must be whole seconds: {self:?}"
        );
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("identity", &self.identity)
            .field("node_grace_period", &self.node_grace_period)
            .field("cluster_cidr", &self.cluster_cidr.to_string())
            .field("workers", &self.workers)
            .field("lease_duration", &self.lease_duration)
            .field("renew_interval", &self.renew_interval)
            .field("renew_deadline", &self.renew_deadline)
            .finish_non_exhaustive()
    }
}

/// The running controllers; dropping it stops them (and stops renewing the Lease).
pub struct ControllerManager {
    tasks: Vec<JoinHandle<()>>,
    leader: watch::Receiver<bool>,
    /// For releasing the Lease on a clean shutdown.
    client: ResourceClient,
    identity: String,
}

impl Drop for ControllerManager {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

type Rx<T> = mpsc::Receiver<InformerEvent<T>>;
type KeysFn = Arc<dyn Fn() -> Vec<String> + Send + Sync>;

fn informer<T: Resource>(c: &ResourceClient, ns: &str) -> (Arc<Informer<T>>, Rx<T>) {
    let (i, rx) = Informer::start(c.clone(), ns, ListParams::default());
    (Arc::new(i), rx)
}

/// The shared caches every controller reads.
struct Caches {
    pods: Arc<Informer<Pod>>,
    nodes: Arc<Informer<Node>>,
    /// Node Leases (namespace kube-node-lease only).
    leases: Arc<Informer<Lease>>,
    rss: Arc<Informer<ReplicaSet>>,
    deps: Arc<Informer<Deployment>>,
    svcs: Arc<Informer<Service>>,
    eps: Arc<Informer<Endpoints>>,
    nss: Arc<Informer<Namespace>>,
    cms: Arc<Informer<ConfigMap>>,
    secrets: Arc<Informer<Secret>>,
}

/// The event channels of the caches, consumed by [`route`].
struct Feeds {
    pods: Rx<Pod>,
    nodes: Rx<Node>,
    leases: Rx<Lease>,
    rss: Rx<ReplicaSet>,
    deps: Rx<Deployment>,
    svcs: Rx<Service>,
    eps: Rx<Endpoints>,
    nss: Rx<Namespace>,
    cms: Rx<ConfigMap>,
    secrets: Rx<Secret>,
}

impl Caches {
    fn start(c: &ResourceClient) -> (Arc<Caches>, Feeds) {
        let (pods, pods_rx) = informer(c, "");
        let (nodes, nodes_rx) = informer(c, "");
        let (leases, leases_rx) = informer(c, NODE_LEASE_NAMESPACE);
        let (rss, rss_rx) = informer(c, "");
        let (deps, deps_rx) = informer(c, "");
        let (svcs, svcs_rx) = informer(c, "");
        let (eps, eps_rx) = informer(c, "");
        let (nss, nss_rx) = informer(c, "");
        let (cms, cms_rx) = informer(c, "");
        let (secrets, secrets_rx) = informer(c, "");
        let caches = Caches {
            pods,
            nodes,
            leases,
            rss,
            deps,
            svcs,
            eps,
            nss,
            cms,
            secrets,
        };
        let feeds = Feeds {
            pods: pods_rx,
            nodes: nodes_rx,
            leases: leases_rx,
            rss: rss_rx,
            deps: deps_rx,
            svcs: svcs_rx,
            eps: eps_rx,
            nss: nss_rx,
            cms: cms_rx,
            secrets: secrets_rx,
        };
        (Arc::new(caches), feeds)
    }

    fn synced(&self) -> bool {
        self.pods.has_synced()
            && self.nodes.has_synced()
            && self.leases.has_synced()
            && self.rss.has_synced()
            && self.deps.has_synced()
            && self.svcs.has_synced()
            && self.eps.has_synced()
            && self.nss.has_synced()
            && self.cms.has_synced()
            && self.secrets.has_synced()
    }

    /// The garbage collector's view: every kind it checks owners and dependents in.
    fn gc_stores(&self) -> BTreeMap<&'static str, Arc<dyn Store>> {
        fn typed<T: Resource>(kind: &'static str, i: &Arc<Informer<T>>) -> (&'static str, Arc<dyn Store>) {
            (kind, Arc::new(Typed::new(kind, i.clone())))
        }
        [
            typed("Pod", &self.pods),
            typed("ReplicaSet", &self.rss),
            typed("Deployment", &self.deps),
            typed("Service", &self.svcs),
            typed("Endpoints", &self.eps),
            typed("ConfigMap", &self.cms),
            typed("Secret", &self.secrets),
        ]
        .into_iter()
        .collect()
    }
}

/// One work queue per controller.
struct Queues {
    rs: Arc<WorkQueue>,
    dep: Arc<WorkQueue>,
    node: Arc<WorkQueue>,
    ipam: Arc<WorkQueue>,
    gc: Arc<WorkQueue>,
    ns: Arc<WorkQueue>,
    ep: Arc<WorkQueue>,
}

impl Queues {
    fn new() -> Queues {
        let q = || Arc::new(WorkQueue::new(WORK_QUEUE_CAPACITY));
        Queues {
            rs: q(),
            dep: q(),
            node: q(),
            ipam: q(),
            gc: q(),
            ns: q(),
            ep: q(),
        }
    }
}

fn self_key<T: Resource>() -> KeyFn<InformerEvent<T>> {
    Arc::new(|ev: &InformerEvent<T>| match ev {
        InformerEvent::Added(o) | InformerEvent::Deleted(o) | InformerEvent::Updated { new: o, .. } => {
            vec![key_of(o)]
        }
    })
}

fn sink<T>(queue: &Arc<WorkQueue>, keys: KeyFn<InformerEvent<T>>) -> Sink<InformerEvent<T>> {
    Sink {
        queue: queue.clone(),
        keys,
    }
}

fn gc_sink<T: Resource>(
    gc: &Arc<GarbageCollector>,
    q: &Arc<WorkQueue>,
    kind: &'static str,
) -> Sink<InformerEvent<T>> {
    let gc = gc.clone();
    sink(q, Arc::new(move |ev: &InformerEvent<T>| gc.event_keys(kind, ev)))
}

/// Which events go to which controller's queue, under which keys.
fn route(
    feeds: Feeds,
    caches: &Arc<Caches>,
    q: &Queues,
    gc: &Arc<GarbageCollector>,
    exp: &Arc<Expectations>,
    lead: &watch::Receiver<bool>,
) -> Vec<JoinHandle<()>> {
    let rs_pod_keys: KeyFn<InformerEvent<Pod>> = {
        let (c, exp) = (caches.clone(), exp.clone());
        Arc::new(move |ev| replicaset::pod_event_keys(ev, &c.rss, &exp))
    };
    let ep_pod_keys: KeyFn<InformerEvent<Pod>> = {
        let c = caches.clone();
        Arc::new(move |ev| endpoints::pod_event_keys(ev, &c.svcs))
    };
    let dep_rs_keys: KeyFn<InformerEvent<ReplicaSet>> = {
        let c = caches.clone();
        Arc::new(move |ev| deployment::replicaset_event_keys(ev, &c.deps))
    };
    // A node Lease is named after its node.
    let lease_node_key: KeyFn<InformerEvent<Lease>> = Arc::new(|ev| match ev {
        InformerEvent::Added(l) | InformerEvent::Deleted(l) | InformerEvent::Updated { new: l, .. } => {
            vec![meta(l).name]
        }
    });
    let pod_sinks = vec![
        sink(&q.rs, rs_pod_keys),
        sink(&q.node, Arc::new(nodelifecycle::pod_event_keys)),
        sink(&q.ep, ep_pod_keys),
        gc_sink(gc, &q.gc, "Pod"),
    ];
    let rs_sinks = vec![
        sink(&q.rs, self_key()),
        sink(&q.dep, dep_rs_keys),
        gc_sink(gc, &q.gc, "ReplicaSet"),
    ];
    let l = || lead.clone();
    vec![
        pump(feeds.pods, pod_sinks, l()),
        pump(feeds.rss, rs_sinks, l()),
        pump(
            feeds.deps,
            vec![sink(&q.dep, self_key()), gc_sink(gc, &q.gc, "Deployment")],
            l(),
        ),
        pump(
            feeds.nodes,
            vec![sink(&q.node, self_key()), sink(&q.ipam, self_key())],
            l(),
        ),
        pump(feeds.leases, vec![sink(&q.node, lease_node_key)], l()),
        pump(
            feeds.svcs,
            vec![sink(&q.ep, self_key()), gc_sink(gc, &q.gc, "Service")],
            l(),
        ),
        pump(
            feeds.eps,
            vec![sink(&q.ep, self_key()), gc_sink(gc, &q.gc, "Endpoints")],
            l(),
        ),
        pump(feeds.nss, vec![sink(&q.ns, self_key())], l()),
        pump(feeds.cms, vec![gc_sink(gc, &q.gc, "ConfigMap")], l()),
        pump(feeds.secrets, vec![gc_sink(gc, &q.gc, "Secret")], l()),
    ]
}

fn keys_of<T: Resource>(i: &Arc<Informer<T>>) -> KeysFn {
    let i = i.clone();
    Arc::new(move || i.list().iter().map(key_of).collect())
}

/// Spawns a controller's runner.
fn run<R: Reconciler>(
    reconciler: R,
    queue: &Arc<WorkQueue>,
    workers: usize,
    all_keys: KeysFn,
    caches: &Arc<Caches>,
    lead: &watch::Receiver<bool>,
) -> JoinHandle<()> {
    run_arc(Arc::new(reconciler), queue, workers, all_keys, caches, lead)
}

fn run_arc<R: Reconciler>(
    reconciler: Arc<R>,
    queue: &Arc<WorkQueue>,
    workers: usize,
    all_keys: KeysFn,
    caches: &Arc<Caches>,
    lead: &watch::Receiver<bool>,
) -> JoinHandle<()> {
    let c = caches.clone();
    let controller = Controller {
        reconciler,
        queue: queue.clone(),
        workers,
        all_keys,
        synced: Arc::new(move || c.synced()),
    };
    tokio::spawn(controller.run(lead.clone()))
}

/// Every Node, and every node name a cached pod is bound to (pods of a node that is gone are
/// collected on resync too).
fn node_keys(c: &Arc<Caches>) -> KeysFn {
    let c = c.clone();
    Arc::new(move || {
        let mut keys: std::collections::BTreeSet<String> = c.nodes.list().iter().map(key_of).collect();
        keys.extend(
            c.pods
                .list()
                .iter()
                .filter_map(|p| p.spec.as_ref().map(|s| s.node_name.clone())),
        );
        keys.into_iter().filter(|k| !k.is_empty()).collect()
    })
}

/// Every Namespace, and every namespace some cached object is in (one that is gone but left
/// objects behind gets swept on resync too).
fn namespace_keys(c: &Arc<Caches>) -> KeysFn {
    let c = c.clone();
    Arc::new(move || {
        let mut keys: std::collections::BTreeSet<String> = c.nss.list().iter().map(key_of).collect();
        fn namespaces<T: Resource>(i: &Informer<T>, out: &mut std::collections::BTreeSet<String>) {
            out.extend(
                i.list()
                    .iter()
                    .filter_map(|o| o.meta().map(|m| m.namespace.clone())),
            );
        }
        namespaces(&c.pods, &mut keys);
        namespaces(&c.rss, &mut keys);
        namespaces(&c.deps, &mut keys);
        namespaces(&c.svcs, &mut keys);
        namespaces(&c.eps, &mut keys);
        namespaces(&c.cms, &mut keys);
        namespaces(&c.secrets, &mut keys);
        keys.into_iter().filter(|k| !k.is_empty()).collect()
    })
}

/// Every object the garbage collector watches, as its keys.
fn gc_keys(gc: &Arc<GarbageCollector>) -> KeysFn {
    let gc = gc.clone();
    Arc::new(move || {
        gc.stores
            .values()
            .flat_map(|s| {
                let kind = s.kind();
                s.metas()
                    .into_iter()
                    .map(move |m| format!("{kind}|{}", join_key(&m.namespace, &m.name)))
            })
            .collect()
    })
}

impl ControllerManager {
    /// Starts informers, controllers and the leader election; returns at once.
    pub fn start(client: ResourceClient, config: Config) -> ControllerManager {
        config.check_timings();
        let identity = config.identity.clone();
        let release_client = client.clone();
        let (lead_tx, lead) = watch::channel(false);
        let mut tasks = vec![tokio::spawn(campaign(client.clone(), config.clone(), lead_tx))];
        let (caches, feeds) = Caches::start(&client);
        let q = Queues::new();
        let expectations = Arc::new(Expectations::default());
        let gc = Arc::new(GarbageCollector {
            client: client.clone(),
            stores: caches.gc_stores(),
        });
        tasks.extend(route(feeds, &caches, &q, &gc, &expectations, &lead));

        let (c, w, clock) = (&caches, config.workers.max(1), config.clock.clone());
        let rs = ReplicaSetController {
            client: client.clone(),
            replicasets: c.rss.clone(),
            pods: c.pods.clone(),
            expectations,
            clock: clock.clone(),
        };
        tasks.push(run(rs, &q.rs, w, keys_of(&c.rss), c, &lead));
        let dep = DeploymentController {
            client: client.clone(),
            deployments: c.deps.clone(),
            replicasets: c.rss.clone(),
            clock: clock.clone(),
        };
        tasks.push(run(dep, &q.dep, w, keys_of(&c.deps), c, &lead));
        let node = NodeLifecycleController {
            client: client.clone(),
            nodes: c.nodes.clone(),
            leases: c.leases.clone(),
            pods: c.pods.clone(),
            clock,
            grace: config.node_grace_period,
            limiter: Mutex::new(TokenBucket::new(
                nodelifecycle::EVICTION_NODES_PER_SEC,
                nodelifecycle::EVICTION_BURST,
            )),
            evicting: Mutex::default(),
            missing_since: Mutex::default(),
        };
        // One worker: the eviction rate limit and disruption judgement are per cluster.
        tasks.push(run(node, &q.node, 1, node_keys(c), c, &lead));
        let ipam = IpamController {
            client: client.clone(),
            nodes: c.nodes.clone(),
            cluster_cidr: config.cluster_cidr,
            pending: Mutex::default(),
        };
        // One worker: two allocations must never race.
        tasks.push(run(ipam, &q.ipam, 1, keys_of(&c.nodes), c, &lead));
        tasks.push(run_arc(gc.clone(), &q.gc, w, gc_keys(&gc), c, &lead));
        let ns = NamespaceController {
            client: client.clone(),
            namespaces: c.nss.clone(),
        };
        tasks.push(run(ns, &q.ns, 1, namespace_keys(c), c, &lead));
        let ep = EndpointsController {
            client,
            services: c.svcs.clone(),
            endpoints: c.eps.clone(),
            pods: c.pods.clone(),
        };
        // Endpoints too: those whose Service went while no manager ran are deleted.
        let ep_keys: KeysFn = {
            let (svcs, eps) = (keys_of(&c.svcs), keys_of(&c.eps));
            Arc::new(move || {
                let mut k = svcs();
                k.extend(eps());
                k.sort();
                k.dedup();
                k
            })
        };
        tasks.push(run(ep, &q.ep, w, ep_keys, c, &lead));
        ControllerManager {
            tasks,
            leader: lead,
            client: release_client,
            identity,
        }
    }

    /// Whether this instance currently leads (runs the controllers).
    pub fn is_leader(&self) -> bool {
        *self.leader.borrow()
    }

    /// A clean shutdown: stops the controllers and the election, then gives the Lease up (if
    /// this instance holds it) so that another member's manager takes over at once instead of
    /// after the lease duration. Best effort within [`RELEASE_TIMEOUT`]: a Lease that cannot be
    /// released expires by itself.
    pub async fn shutdown(mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
            let _ = t.await;
        }
        let release = berth_client::leader::release(
            &self.client,
            LEADER_LEASE_NAMESPACE,
            LEADER_LEASE_NAME,
            &self.identity,
        );
        match tokio::time::timeout(RELEASE_TIMEOUT, release).await {
            Ok(Ok(released)) => {
                tracing::info!(identity = %self.identity, released, "controller manager stopped")
            }
            Ok(Err(e)) => {
                tracing::warn!(identity = %self.identity, "controller manager lease not released: {e}")
            }
            Err(_) => {
                tracing::warn!(identity = %self.identity, "controller manager lease not released in time")
            }
        }
    }
}

/// Creates the system namespaces, retrying until the server answers.
async fn ensure_system_namespaces(c: &ResourceClient) {
    for name in SYSTEM_NAMESPACES {
        while let Err(e) = c.ensure_namespace(name).await {
            tracing::debug!(namespace = name, error = %e, "creating system namespace; retrying");
            tokio::time::sleep(STARTUP_RETRY).await;
        }
    }
}

/// Ensures the system namespaces, then campaigns for the Lease and mirrors leadership into
/// `lead_tx` for as long as the task runs.
async fn campaign(client: ResourceClient, config: Config, lead_tx: watch::Sender<bool>) {
    ensure_system_namespaces(&client).await;
    let elector = LeaderElector::start(
        client,
        LeaderElectionConfig {
            namespace: LEADER_LEASE_NAMESPACE.into(),
            lease_name: LEADER_LEASE_NAME.into(),
            identity: config.identity.clone(),
            lease_duration: config.lease_duration,
            renew_interval: config.renew_interval,
            renew_deadline: config.renew_deadline,
        },
        config.clock.clone(),
    );
    let mut changes = elector.leader_changes();
    loop {
        let leading = *changes.borrow_and_update();
        if *lead_tx.borrow() != leading {
            tracing::info!(identity = %config.identity, leading, "controller manager leadership changed");
        }
        lead_tx.send_replace(leading);
        if changes.changed().await.is_err() {
            lead_tx.send_replace(false);
            return;
        }
    }
}
