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
use berth_client::{ClientError, Informer, InformerEvent, ListParams, Resource, ResourceClient};
use berth_proto::appsv1::{Deployment, ReplicaSet};
use berth_proto::coordinationv1::Lease;
use berth_proto::corev1::{ConfigMap, Endpoints, Namespace, Node, Pod, Secret, Service};
use berth_proto::metav1::ObjectMeta;
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
    /// Defaults: grace period 5 s, cluster CIDR 10.244.0.0/16, 2 workers, and Kubernetes'
    /// leader-election timings (15 s lease, renew every 2 s, step down after 10 s).
    pub fn new(identity: impl Into<String>) -> Config {
        Config {
            identity: identity.into(),
            node_grace_period: Duration::from_secs(5),
            cluster_cidr: "10.244.0.0/16".parse().expect("valid"),
            workers: 2,
            lease_duration: Duration::from_secs(15),
            renew_interval: Duration::from_secs(2),
            renew_deadline: Duration::from_secs(10),
            clock: Arc::new(SystemClock),
        }
    }
}

/// The running controllers; dropping it stops them (and stops renewing the Lease).
pub struct ControllerManager {
    tasks: Vec<JoinHandle<()>>,
    leader: watch::Receiver<bool>,
}

impl Drop for ControllerManager {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn informer<T: Resource>(
    c: &ResourceClient,
    ns: &str,
) -> (Arc<Informer<T>>, mpsc::Receiver<InformerEvent<T>>) {
    let (i, rx) = Informer::start(c.clone(), ns, ListParams::default());
    (Arc::new(i), rx)
}

fn self_key<T: Resource>() -> KeyFn<InformerEvent<T>> {
    Arc::new(|ev: &InformerEvent<T>| match ev {
        InformerEvent::Added(o) | InformerEvent::Deleted(o) | InformerEvent::Updated { new: o, .. } => {
            vec![key_of(o)]
        }
    })
}

fn queue() -> Arc<WorkQueue> {
    Arc::new(WorkQueue::new(WORK_QUEUE_CAPACITY))
}

fn keys_of<T: Resource>(i: &Arc<Informer<T>>) -> Arc<dyn Fn() -> Vec<String> + Send + Sync> {
    let i = i.clone();
    Arc::new(move || i.list().iter().map(key_of).collect())
}

/// Creates the system namespaces, retrying until the server answers.
async fn ensure_system_namespaces(c: &ResourceClient) {
    for name in SYSTEM_NAMESPACES {
        let ns = Namespace {
            metadata: Some(ObjectMeta {
                name: name.into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        loop {
            match c.create("", &ns).await {
                Ok(_) | Err(ClientError::AlreadyExists(_)) => break,
                Err(e) => {
                    tracing::debug!(namespace = name, error = %e, "creating system namespace; retrying")
                }
            }
            tokio::time::sleep(STARTUP_RETRY).await;
        }
    }
}

impl ControllerManager {
    /// Starts informers, controllers and the leader election; returns at once.
    pub fn start(client: ResourceClient, config: Config) -> ControllerManager {
        let (lead_tx, lead_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(campaign(client.clone(), config.clone(), lead_tx)));

        let c = &client;
        let (pods, pods_rx) = informer::<Pod>(c, "");
        let (nodes, nodes_rx) = informer::<Node>(c, "");
        let (leases, leases_rx) = informer::<Lease>(c, NODE_LEASE_NAMESPACE);
        let (rss, rss_rx) = informer::<ReplicaSet>(c, "");
        let (deps, deps_rx) = informer::<Deployment>(c, "");
        let (svcs, svcs_rx) = informer::<Service>(c, "");
        let (eps, eps_rx) = informer::<Endpoints>(c, "");
        let (nss, nss_rx) = informer::<Namespace>(c, "");
        let (cms, cms_rx) = informer::<ConfigMap>(c, "");
        let (secrets, secrets_rx) = informer::<Secret>(c, "");

        let all_synced: Arc<dyn Fn() -> bool + Send + Sync> = {
            let (pods, nodes, leases, rss, deps) = (
                pods.clone(),
                nodes.clone(),
                leases.clone(),
                rss.clone(),
                deps.clone(),
            );
            let (svcs, eps, nss, cms, secrets) = (
                svcs.clone(),
                eps.clone(),
                nss.clone(),
                cms.clone(),
                secrets.clone(),
            );
            Arc::new(move || {
                pods.has_synced()
                    && nodes.has_synced()
                    && leases.has_synced()
                    && rss.has_synced()
                    && deps.has_synced()
                    && svcs.has_synced()
                    && eps.has_synced()
                    && nss.has_synced()
                    && cms.has_synced()
                    && secrets.has_synced()
            })
        };
        let (rs_q, dep_q, node_q, ipam_q, gc_q, ns_q, ep_q) =
            (queue(), queue(), queue(), queue(), queue(), queue(), queue());
        let expectations = Arc::new(Expectations::default());

        let gc = Arc::new(GarbageCollector {
            client: client.clone(),
            stores: {
                let mut m: BTreeMap<&'static str, Arc<dyn Store>> = BTreeMap::new();
                m.insert(
                    "Pod",
                    Arc::new(Typed {
                        kind: "Pod",
                        informer: pods.clone(),
                    }),
                );
                m.insert(
                    "ReplicaSet",
                    Arc::new(Typed {
                        kind: "ReplicaSet",
                        informer: rss.clone(),
                    }),
                );
                m.insert(
                    "Deployment",
                    Arc::new(Typed {
                        kind: "Deployment",
                        informer: deps.clone(),
                    }),
                );
                m.insert(
                    "Service",
                    Arc::new(Typed {
                        kind: "Service",
                        informer: svcs.clone(),
                    }),
                );
                m.insert(
                    "Endpoints",
                    Arc::new(Typed {
                        kind: "Endpoints",
                        informer: eps.clone(),
                    }),
                );
                m.insert(
                    "ConfigMap",
                    Arc::new(Typed {
                        kind: "ConfigMap",
                        informer: cms.clone(),
                    }),
                );
                m.insert(
                    "Secret",
                    Arc::new(Typed {
                        kind: "Secret",
                        informer: secrets.clone(),
                    }),
                );
                m
            },
        });
        fn gc_sink<T: Resource>(
            gc: &Arc<GarbageCollector>,
            q: &Arc<WorkQueue>,
            kind: &'static str,
        ) -> Sink<InformerEvent<T>> {
            let gc = gc.clone();
            Sink {
                queue: q.clone(),
                keys: Arc::new(move |ev: &InformerEvent<T>| gc.event_keys(kind, ev)),
            }
        }

        // ---- event routing
        let lead = lead_rx.clone();
        let rs_pod_keys: KeyFn<InformerEvent<Pod>> = {
            let (rss, exp) = (rss.clone(), expectations.clone());
            Arc::new(move |ev| replicaset::pod_event_keys(ev, &rss, &exp))
        };
        let ep_pod_keys: KeyFn<InformerEvent<Pod>> = {
            let svcs = svcs.clone();
            Arc::new(move |ev| endpoints::pod_event_keys(ev, &svcs))
        };
        tasks.push(pump(
            pods_rx,
            vec![
                Sink {
                    queue: rs_q.clone(),
                    keys: rs_pod_keys,
                },
                Sink {
                    queue: node_q.clone(),
                    keys: Arc::new(nodelifecycle::pod_event_keys),
                },
                Sink {
                    queue: ep_q.clone(),
                    keys: ep_pod_keys,
                },
                gc_sink(&gc, &gc_q, "Pod"),
            ],
            lead.clone(),
        ));
        let dep_rs_keys: KeyFn<InformerEvent<ReplicaSet>> = {
            let deps = deps.clone();
            Arc::new(move |ev| deployment::replicaset_event_keys(ev, &deps))
        };
        tasks.push(pump(
            rss_rx,
            vec![
                Sink {
                    queue: rs_q.clone(),
                    keys: self_key(),
                },
                Sink {
                    queue: dep_q.clone(),
                    keys: dep_rs_keys,
                },
                gc_sink(&gc, &gc_q, "ReplicaSet"),
            ],
            lead.clone(),
        ));
        tasks.push(pump(
            deps_rx,
            vec![
                Sink {
                    queue: dep_q.clone(),
                    keys: self_key(),
                },
                gc_sink(&gc, &gc_q, "Deployment"),
            ],
            lead.clone(),
        ));
        tasks.push(pump(
            nodes_rx,
            vec![
                Sink {
                    queue: node_q.clone(),
                    keys: self_key(),
                },
                Sink {
                    queue: ipam_q.clone(),
                    keys: self_key(),
                },
            ],
            lead.clone(),
        ));
        let lease_node_key: KeyFn<InformerEvent<Lease>> = Arc::new(|ev| match ev {
            InformerEvent::Added(l) | InformerEvent::Deleted(l) | InformerEvent::Updated { new: l, .. } => {
                vec![meta(l).name]
            }
        });
        tasks.push(pump(
            leases_rx,
            vec![Sink {
                queue: node_q.clone(),
                keys: lease_node_key,
            }],
            lead.clone(),
        ));
        tasks.push(pump(
            svcs_rx,
            vec![
                Sink {
                    queue: ep_q.clone(),
                    keys: self_key(),
                },
                gc_sink(&gc, &gc_q, "Service"),
            ],
            lead.clone(),
        ));
        tasks.push(pump(
            eps_rx,
            vec![
                Sink {
                    queue: ep_q.clone(),
                    keys: self_key(),
                },
                gc_sink(&gc, &gc_q, "Endpoints"),
            ],
            lead.clone(),
        ));
        tasks.push(pump(
            nss_rx,
            vec![Sink {
                queue: ns_q.clone(),
                keys: self_key(),
            }],
            lead.clone(),
        ));
        tasks.push(pump(cms_rx, vec![gc_sink(&gc, &gc_q, "ConfigMap")], lead.clone()));
        tasks.push(pump(
            secrets_rx,
            vec![gc_sink(&gc, &gc_q, "Secret")],
            lead.clone(),
        ));

        // ---- controllers
        let w = config.workers.max(1);
        let spawn = |tasks: &mut Vec<JoinHandle<()>>,
                     c: Box<dyn FnOnce(watch::Receiver<bool>) -> JoinHandle<()>>| {
            tasks.push(c(lead.clone()));
        };
        fn runner<R: Reconciler>(
            r: R,
            q: &Arc<WorkQueue>,
            workers: usize,
            all_keys: Arc<dyn Fn() -> Vec<String> + Send + Sync>,
            synced: &Arc<dyn Fn() -> bool + Send + Sync>,
        ) -> Box<dyn FnOnce(watch::Receiver<bool>) -> JoinHandle<()>> {
            let c = Controller {
                reconciler: Arc::new(r),
                queue: q.clone(),
                workers,
                all_keys,
                synced: synced.clone(),
            };
            Box::new(move |lead| tokio::spawn(c.run(lead)))
        }
        let clock = config.clock.clone();
        spawn(
            &mut tasks,
            runner(
                ReplicaSetController {
                    client: client.clone(),
                    replicasets: rss.clone(),
                    pods: pods.clone(),
                    expectations,
                    clock: clock.clone(),
                },
                &rs_q,
                w,
                keys_of(&rss),
                &all_synced,
            ),
        );
        spawn(
            &mut tasks,
            runner(
                DeploymentController {
                    client: client.clone(),
                    deployments: deps.clone(),
                    replicasets: rss.clone(),
                    clock: clock.clone(),
                },
                &dep_q,
                w,
                keys_of(&deps),
                &all_synced,
            ),
        );
        spawn(
            &mut tasks,
            runner(
                NodeLifecycleController {
                    client: client.clone(),
                    nodes: nodes.clone(),
                    leases,
                    pods: pods.clone(),
                    clock: clock.clone(),
                    grace: config.node_grace_period,
                    limiter: Mutex::new(TokenBucket::new(
                        nodelifecycle::EVICTION_NODES_PER_SEC,
                        nodelifecycle::EVICTION_BURST,
                    )),
                    evicting: Mutex::default(),
                    missing_since: Mutex::default(),
                },
                &node_q,
                1,
                keys_of(&nodes),
                &all_synced,
            ),
        );
        spawn(
            &mut tasks,
            runner(
                IpamController {
                    client: client.clone(),
                    nodes: nodes.clone(),
                    cluster_cidr: config.cluster_cidr,
                    pending: Mutex::default(),
                },
                &ipam_q,
                1,
                keys_of(&nodes),
                &all_synced,
            ),
        );
        let gc_all_keys: Arc<dyn Fn() -> Vec<String> + Send + Sync> = {
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
        };
        {
            let c = Controller {
                reconciler: gc,
                queue: gc_q.clone(),
                workers: w,
                all_keys: gc_all_keys,
                synced: all_synced.clone(),
            };
            tasks.push(tokio::spawn(c.run(lead.clone())));
        }
        spawn(
            &mut tasks,
            runner(
                NamespaceController {
                    client: client.clone(),
                    namespaces: nss.clone(),
                },
                &ns_q,
                1,
                keys_of(&nss),
                &all_synced,
            ),
        );
        spawn(
            &mut tasks,
            runner(
                EndpointsController {
                    client: client.clone(),
                    services: svcs.clone(),
                    endpoints: eps,
                    pods,
                },
                &ep_q,
                w,
                keys_of(&svcs),
                &all_synced,
            ),
        );
        ControllerManager {
            tasks,
            leader: lead_rx,
        }
    }

    /// Whether this instance currently leads (runs the controllers).
    pub fn is_leader(&self) -> bool {
        *self.leader.borrow()
    }

    /// Stops everything (the Lease expires by itself for the next candidate).
    pub fn shutdown(self) {
        drop(self);
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
