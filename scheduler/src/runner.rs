//! The scheduling loop of one instance: informer events in, decisions, binds out.
//!
//! How an instance knows which allocation revision its view of a node includes: the loop
//! applies pod events in revision order and remembers the highest revision applied
//! (`observed`: the highest event revision, or the pod informer's revision once every event
//! sent before it has been applied). A revision `r` may be claimed for node N once `observed >= r` (every bind to N
//! up to `r` is then in the view), or at once when `r` came back from this instance's own
//! successful bind (nothing else was bound to N in between, and the pod is assumed on N).
//! Sources of such revisions: own binds, the current revision a failed bind reports (claimed
//! only after catching up to it), and pods seen going from unbound to bound (their event's
//! revision is the bind's). A claim that is wrong only costs a retry: the server compares.
//!
//! Binds to one node from this instance are chained: pods decided onto a node with a bind in
//! flight wait for that bind's answer, whose revision they then claim, all together in the
//! next bind (up to [`BIND_BATCH_MAX`] pods in one transaction, so that packing one node is
//! not one round trip per pod); if that bind found the node changed, the waiting pods are
//! decided again after catching up.

use crate::algorithm::{self, PodCtx};
use crate::model::{is_terminal, pod_key, pod_node, Cluster};
use crate::{ring, SchedulerConfig};
use berth_client::informer::InformerEvent;
use berth_client::leader::{self, Clock, LeaderElectionConfig, LeaderElector, LeaseDecision};
use berth_client::{
    BindOutcome, BindRejectReason, ClientError, Informer, ListParams, PodRef, ResourceClient,
};
use berth_proto::coordinationv1::Lease;
use berth_proto::corev1::{Node, Pod, PodCondition};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Pods decided per turn of the loop before it looks at events again.
const SCHEDULE_BATCH: usize = 64;
/// Informer events applied per turn before scheduling again.
const EVENTS_PER_TURN: usize = 4096;
/// How often back-offs and the live instances are looked at.
const TICK: Duration = Duration::from_millis(50);
/// Back-off of an unschedulable pod: doubles per attempt from the initial to the max.
const UNSCHEDULABLE_BACKOFF_INITIAL: Duration = Duration::from_secs(1);
const UNSCHEDULABLE_BACKOFF_MAX: Duration = Duration::from_secs(10);
/// Unschedulable pods are retried at least this often even when nothing seems to change.
const UNSCHEDULABLE_FLUSH: Duration = Duration::from_secs(30);
/// Retry of a pod whose bind failed for a reason other than the node's allocation changing.
const BIND_RETRY_BACKOFF: Duration = Duration::from_millis(100);
/// Most pods bound to one node in one call (the server's limit is `BIND_PODS_MAX`, 64).
const BIND_BATCH_MAX: usize = 64;
/// Pause between attempts to create the lease namespace at startup.
const STARTUP_RETRY: Duration = Duration::from_millis(500);

/// Counters of an instance (for tests, benchmarks and logs).
#[derive(Debug, Default)]
pub struct SchedulerStats {
    pub bound: AtomicU64,
    /// Binds refused because the node's allocation had moved (another bind got there first).
    pub node_conflicts: AtomicU64,
    /// Binds refused because the pod had changed or was bound already.
    pub pod_conflicts: AtomicU64,
    /// Decisions that found no feasible node.
    pub unschedulable: AtomicU64,
    pub decisions: AtomicU64,
}

/// A running instance; dropping it stops it (its Lease then expires).
pub struct Scheduler {
    task: JoinHandle<()>,
    stats: Arc<SchedulerStats>,
    /// For releasing the Lease on a clean shutdown.
    client: ResourceClient,
    lease_namespace: String,
    lease_name: String,
    instance: String,
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Scheduler {
    /// Starts an instance over `client` (which may point at this very server).
    pub fn start(
        client: ResourceClient,
        config: SchedulerConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Scheduler, crate::SchedulerError> {
        config.validate()?;
        let stats = Arc::new(SchedulerStats::default());
        let lease_namespace = config.lease_namespace.clone();
        let lease_name = format!("{}{}", config.lease_prefix, config.instance);
        let instance = config.instance.clone();
        let task = tokio::spawn(run(client.clone(), config, clock, stats.clone()));
        Ok(Scheduler {
            task,
            stats,
            client,
            lease_namespace,
            lease_name,
            instance,
        })
    }

    pub fn stats(&self) -> Arc<SchedulerStats> {
        self.stats.clone()
    }

    /// Stops the instance at once (as if its process died).
    pub fn stop(&self) {
        self.task.abort();
    }

    /// A clean shutdown: stops deciding and binding, then gives the instance's Lease up, so the
    /// others take its pods over at once instead of after the lease duration. Best effort: a
    /// Lease that cannot be released expires by itself.
    pub async fn shutdown(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
        let r = leader::release(
            &self.client,
            &self.lease_namespace,
            &self.lease_name,
            &self.instance,
        )
        .await;
        match r {
            Ok(released) => tracing::info!(instance = %self.instance, released, "scheduler stopped"),
            Err(e) => tracing::warn!(instance = %self.instance, "scheduler lease not released: {e}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum State {
    /// In `active` (or about to be).
    Queued,
    /// In the back-off heap.
    Backoff,
    /// Fits nowhere; waits for a cluster change (then its back-off).
    Unschedulable { retry_at: Instant },
    /// Belongs to another live instance.
    NotMine,
    /// Assumed on the node; its bind is in flight.
    Binding(String),
    /// Assumed on the node; waits for the bind ahead of it on that node.
    Chained(String),
    /// Waits until the view has caught up to a revision.
    CatchingUp,
}

struct PendingPod {
    pod: Arc<Pod>,
    state: State,
    attempts: u32,
}

/// What this instance knows of a node's allocation key, and its chain of binds.
#[derive(Default)]
struct NodeBinds {
    /// The revision to claim ...
    alloc_revision: i64,
    /// ... once the view has reached this revision.
    usable_from: i64,
    /// The pods of the bind in flight (empty: none).
    in_flight: Vec<String>,
    chained: VecDeque<String>,
}

struct BindResult {
    keys: Vec<String>,
    node: String,
    /// The allocation revision the bind claimed.
    claimed: i64,
    result: Result<BindOutcome, ClientError>,
}

struct Runner {
    cfg: SchedulerConfig,
    client: ResourceClient,
    clock: Arc<dyn Clock>,
    stats: Arc<SchedulerStats>,
    cluster: Cluster,
    pending: HashMap<String, PendingPod>,
    /// Pods to decide: highest spec.priority first, then first in first out.
    active: BinaryHeap<(i32, Reverse<u64>, String)>,
    /// Arrival order in `active`.
    next_seq: u64,
    backoff: BinaryHeap<Reverse<(Instant, String)>>,
    catching_up: BTreeMap<i64, Vec<String>>,
    /// Keys of the pods in state Unschedulable (possibly stale: the state decides).
    unschedulable: HashSet<String>,
    observed: i64,
    nodes: HashMap<String, NodeBinds>,
    leases: BTreeMap<String, Lease>,
    live: Vec<String>,
    in_flight: usize,
    next_start: usize,
    results_tx: mpsc::UnboundedSender<BindResult>,
    last_flush: Instant,
}

async fn ensure_namespace(client: &ResourceClient, name: &str) {
    while let Err(e) = client.ensure_namespace(name).await {
        tracing::debug!("scheduler: creating namespace {name}: {e}; retrying");
        tokio::time::sleep(STARTUP_RETRY).await;
    }
}

async fn run(
    client: ResourceClient,
    cfg: SchedulerConfig,
    clock: Arc<dyn Clock>,
    stats: Arc<SchedulerStats>,
) {
    ensure_namespace(&client, &cfg.lease_namespace).await;
    let lease_duration = cfg.lease_duration;
    let elector = LeaderElector::start(
        client.clone(),
        LeaderElectionConfig {
            namespace: cfg.lease_namespace.clone(),
            lease_name: format!("{}{}", cfg.lease_prefix, cfg.instance),
            identity: cfg.instance.clone(),
            lease_duration,
            renew_interval: cfg.renew_interval(),
            renew_deadline: cfg.renew_deadline(),
        },
        clock.clone(),
    );
    let (pods, mut pod_rx) = Informer::<Pod>::start(client.clone(), "", ListParams::default());
    let (nodes, mut node_rx) = Informer::<Node>::start(client.clone(), "", ListParams::default());
    let (leases, mut lease_rx) =
        Informer::<Lease>::start(client.clone(), &cfg.lease_namespace, ListParams::default());
    let (results_tx, mut results_rx) = mpsc::unbounded_channel();
    let mut r = Runner {
        cfg,
        client,
        clock,
        stats,
        cluster: Cluster::default(),
        pending: HashMap::new(),
        active: BinaryHeap::new(),
        next_seq: 0,
        backoff: BinaryHeap::new(),
        catching_up: BTreeMap::new(),
        unschedulable: HashSet::new(),
        observed: 0,
        nodes: HashMap::new(),
        leases: BTreeMap::new(),
        live: Vec::new(),
        in_flight: 0,
        next_start: 0,
        results_tx,
        last_flush: Instant::now(),
    };
    tracing::info!(instance = %r.cfg.instance, "scheduler started");
    let mut synced = false;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // Apply what has arrived, then decide a batch; wait only when there is nothing to do.
        // Every pod event up to `pods_rev` is in the channel: once it is drained, the view
        // includes the store up to that revision (bookmarks move it on when pods are quiet).
        let pods_rev = pods.resource_version();
        let nodes_rev = nodes.resource_version();
        let leases_rev = leases.resource_version();
        let mut n = 0;
        let mut drained = false;
        while n < EVENTS_PER_TURN {
            if let Ok(b) = results_rx.try_recv() {
                r.on_bind_result(b);
            } else if let Ok(e) = node_rx.try_recv() {
                r.on_node(e);
            } else if let Ok(e) = pod_rx.try_recv() {
                r.on_pod(e);
            } else if let Ok(e) = lease_rx.try_recv() {
                r.on_lease(e);
            } else {
                drained = true;
                break;
            }
            n += 1;
        }
        if drained {
            r.observe(pods_rev);
        }
        r.release_backoffs();
        // Synced: each informer's first list has been sent whole and applied here, so no
        // decision is made from a half-loaded cache.
        synced |= drained && pods_rev > 0 && nodes_rev > 0 && leases_rev > 0;
        // Live while the elector holds the Lease, or while the Lease as the others see it
        // has not expired: an instance whose renewal is late (during a Raft election, say)
        // keeps its share until the others count it dead, instead of leaving it to nobody.
        // Binds are compare-and-swap transactions, so overlapping views cost conflicts only.
        let me_live = elector.is_leader() || r.own_lease_unexpired();
        // Ownership must follow the Leases as they are now, not as of the last tick.
        r.update_live(me_live);
        if r.can_schedule(synced, me_live) {
            r.schedule_batch();
            tokio::task::yield_now().await;
            continue;
        }
        tokio::select! {
            Some(b) = results_rx.recv() => r.on_bind_result(b),
            Some(e) = node_rx.recv() => r.on_node(e),
            Some(e) = pod_rx.recv() => r.on_pod(e),
            Some(e) = lease_rx.recv() => r.on_lease(e),
            _ = tick.tick() => r.on_tick(me_live),
        }
    }
}

fn backoff_for(attempts: u32) -> Duration {
    let exp = attempts.saturating_sub(1).min(8);
    (UNSCHEDULABLE_BACKOFF_INITIAL * 2u32.pow(exp)).min(UNSCHEDULABLE_BACKOFF_MAX)
}

fn pod_rv(pod: &Pod) -> i64 {
    pod.metadata
        .as_ref()
        .and_then(|m| m.resource_version.parse().ok())
        .unwrap_or(0)
}

fn pod_uid(pod: &Pod) -> &str {
    pod.metadata.as_ref().map_or("", |m| m.uid.as_str())
}

impl Runner {
    fn is_ours(&self, pod: &Pod) -> bool {
        let name = pod.spec.as_ref().map_or("", |s| s.scheduler_name.as_str());
        let deleting = pod
            .metadata
            .as_ref()
            .is_some_and(|m| !m.deletion_timestamp.is_empty());
        !deleting
            && !is_terminal(pod)
            && (name == self.cfg.scheduler_name
                || (name.is_empty() && self.cfg.scheduler_name == crate::DEFAULT_SCHEDULER_NAME))
    }

    fn can_schedule(&mut self, synced: bool, me_live: bool) -> bool {
        synced && me_live && !self.active.is_empty() && self.in_flight < self.cfg.binds_in_flight_max
    }

    // ------------------------------------------------------------ events

    fn on_pod(&mut self, ev: InformerEvent<Pod>) {
        let (old, new, deleted) = match ev {
            InformerEvent::Added(p) => (None, p, false),
            InformerEvent::Updated { old, new } => (Some(old), new, false),
            InformerEvent::Deleted(p) => (None, p, true),
        };
        let key = pod_key(&new);
        let rv = pod_rv(&new);
        if deleted {
            self.cluster.unplace(&key);
            self.pending.remove(&key);
            self.cluster_changed();
        } else if !pod_node(&new).is_empty() {
            self.pending.remove(&key);
            let node = pod_node(&new).to_string();
            if is_terminal(&new) {
                self.cluster.unplace(&key);
                self.cluster_changed();
            } else {
                self.cluster.place(&key, &node, Arc::new(new));
            }
            if old.as_ref().is_some_and(|o| pod_node(o).is_empty()) {
                self.learn_alloc(&node, rv);
            }
        } else if self.is_ours(&new) {
            let pod = Arc::new(new);
            match self.pending.get_mut(&key) {
                Some(p) => p.pod = pod,
                None => {
                    self.pending.insert(
                        key.clone(),
                        PendingPod {
                            pod,
                            state: State::Queued,
                            attempts: 0,
                        },
                    );
                    self.activate(key);
                }
            }
        } else if self.pending.remove(&key).is_some() {
            // No longer ours (deleting, or another scheduler's): forget any assumption.
            self.cluster.unplace(&key);
        }
        self.observe(rv);
    }

    /// A pod went from unbound to bound at `rv`: the node's key moved to `rv`, which the view
    /// (at `rv` now) includes.
    fn learn_alloc(&mut self, node: &str, rv: i64) {
        let nb = self.nodes.entry(node.to_string()).or_default();
        if rv > nb.alloc_revision {
            nb.alloc_revision = rv;
            nb.usable_from = rv;
        }
    }

    fn observe(&mut self, rv: i64) {
        self.observed = self.observed.max(rv);
        self.release_caught_up();
    }

    /// Requeues the pods waiting for a revision the view has reached.
    fn release_caught_up(&mut self) {
        if self
            .catching_up
            .first_key_value()
            .is_none_or(|(r, _)| *r > self.observed)
        {
            return;
        }
        let later = self.catching_up.split_off(&(self.observed + 1));
        let due = std::mem::replace(&mut self.catching_up, later);
        for key in due.into_values().flatten() {
            self.requeue(&key, State::CatchingUp);
        }
    }

    /// Queues a pending pod by its priority.
    fn activate(&mut self, key: String) {
        let priority = self
            .pending
            .get(&key)
            .and_then(|p| p.pod.spec.as_ref()?.priority)
            .unwrap_or(0);
        self.next_seq += 1;
        self.active.push((priority, Reverse(self.next_seq), key));
    }

    /// Moves a pod in state `from` back to the active queue.
    fn requeue(&mut self, key: &str, from: State) {
        if let Some(p) = self.pending.get_mut(key) {
            if p.state == from {
                p.state = State::Queued;
                self.activate(key.to_string());
            }
        }
    }

    fn on_node(&mut self, ev: InformerEvent<Node>) {
        match ev {
            InformerEvent::Added(n) | InformerEvent::Updated { new: n, .. } => {
                self.cluster.upsert_node(Arc::new(n));
            }
            InformerEvent::Deleted(n) => {
                let name = crate::model::node_name(&n);
                self.cluster.remove_node(name);
                let idle = self
                    .nodes
                    .get(name)
                    .is_some_and(|nb| nb.in_flight.is_empty() && nb.chained.is_empty());
                if idle {
                    self.nodes.remove(name);
                }
            }
        }
        self.cluster_changed();
    }

    /// Something that may make an unschedulable pod fit: retry them after their back-off.
    fn cluster_changed(&mut self) {
        for k in std::mem::take(&mut self.unschedulable) {
            let Some(p) = self.pending.get_mut(&k) else {
                continue;
            };
            if let State::Unschedulable { retry_at } = p.state {
                p.state = State::Backoff;
                self.backoff.push(Reverse((retry_at, k)));
            }
        }
    }

    fn on_lease(&mut self, ev: InformerEvent<Lease>) {
        match ev {
            InformerEvent::Added(l) | InformerEvent::Updated { new: l, .. } => {
                let name = l.metadata.as_ref().map_or(String::new(), |m| m.name.clone());
                if name.starts_with(&self.cfg.lease_prefix) {
                    self.leases.insert(name, l);
                }
            }
            InformerEvent::Deleted(l) => {
                let name = l.metadata.as_ref().map_or("", |m| m.name.as_str());
                self.leases.remove(name);
            }
        }
    }

    /// Requeues the pods whose back-off is over.
    fn release_backoffs(&mut self) {
        let now = Instant::now();
        while let Some(Reverse((at, _))) = self.backoff.peek() {
            if *at > now {
                break;
            }
            let Reverse((_, key)) = self.backoff.pop().expect("peeked");
            self.requeue(&key, State::Backoff);
        }
    }

    fn on_tick(&mut self, me_live: bool) {
        self.update_live(me_live);
        let now = Instant::now();
        if now - self.last_flush >= UNSCHEDULABLE_FLUSH {
            self.last_flush = now;
            self.cluster_changed();
        }
    }

    /// Whether this instance's Lease, as cached, is held by it and has not expired.
    fn own_lease_unexpired(&self) -> bool {
        let name = format!("{}{}", self.cfg.lease_prefix, self.cfg.instance);
        self.leases
            .get(&name)
            .and_then(|l| l.spec.as_ref())
            .is_some_and(|spec| {
                spec.holder_identity.as_deref() == Some(self.cfg.instance.as_str())
                    && leader::decide(spec, "\0", self.clock.now_micros()) == LeaseDecision::Wait
            })
    }

    /// The instances whose Lease has not expired (this one while it holds its own).
    fn update_live(&mut self, me_live: bool) {
        let now = self.clock.now_micros();
        let mut live: Vec<String> = self
            .leases
            .values()
            .filter_map(|l| {
                let spec = l.spec.as_ref()?;
                let holder = spec.holder_identity.as_deref().filter(|h| !h.is_empty())?;
                // As a candidate that is no instance: Wait means someone holds it, unexpired.
                (leader::decide(spec, "\0", now) == LeaseDecision::Wait).then(|| holder.to_string())
            })
            .filter(|h| *h != self.cfg.instance)
            .collect();
        if me_live {
            live.push(self.cfg.instance.clone());
        }
        live.sort();
        live.dedup();
        if live != self.live {
            tracing::info!(instance = %self.cfg.instance, live = ?live, "scheduler instances");
            self.live = live;
            let parked: Vec<String> = self
                .pending
                .iter()
                .filter(|(_, p)| p.state == State::NotMine)
                .map(|(k, _)| k.clone())
                .collect();
            for k in parked {
                self.requeue(&k, State::NotMine);
            }
        }
    }

    // ------------------------------------------------------------ decisions

    fn schedule_batch(&mut self) {
        let mut n = 0;
        while n < SCHEDULE_BATCH && self.in_flight < self.cfg.binds_in_flight_max {
            let Some((_, _, key)) = self.active.pop() else {
                break;
            };
            let Some(p) = self.pending.get(&key) else { continue };
            if p.state != State::Queued {
                continue;
            }
            if ring::owner(pod_uid(&p.pod), &self.live) != Some(self.cfg.instance.as_str()) {
                self.pending.get_mut(&key).expect("present").state = State::NotMine;
                continue;
            }
            self.schedule(key);
            n += 1;
        }
    }

    fn schedule(&mut self, key: String) {
        let pod = self.pending[&key].pod.clone();
        self.stats.decisions.fetch_add(1, Ordering::Relaxed);
        let start = self.next_start;
        let decision = {
            let ctx = PodCtx::new(&pod, &self.cluster);
            let (live, me) = (&self.live, self.cfg.instance.as_str());
            // Instances prefer the nodes the ring gives them, so they seldom race for one node.
            let mine = |node: &str| live.len() < 2 || ring::owner(node, live) == Some(me);
            algorithm::schedule_one(&ctx, &self.cluster, &self.cfg.algorithm, start, &mine)
        };
        let count = self.cluster.nodes().len().max(1);
        self.next_start = (start + 1) % count;
        match decision {
            Err(fit) => self.unschedulable(&key, fit),
            Ok(node) => self.assume_and_bind(key, node, pod),
        }
    }

    fn unschedulable(&mut self, key: &str, fit: algorithm::FitError) {
        self.stats.unschedulable.fetch_add(1, Ordering::Relaxed);
        let p = self.pending.get_mut(key).expect("scheduling it");
        p.attempts += 1;
        p.state = State::Unschedulable {
            retry_at: Instant::now() + backoff_for(p.attempts),
        };
        self.unschedulable.insert(key.to_string());
        let message = fit.message();
        tracing::debug!(pod = %key, "{message}");
        if let Some(pod) = with_unschedulable_condition(&p.pod, &message, self.clock.now_micros()) {
            let client = self.client.clone();
            tokio::spawn(async move {
                if let Err(e) = client.update_status(&pod).await {
                    tracing::debug!("scheduler: PodScheduled=False on {}: {e}", pod_key(&pod));
                }
            });
        }
    }

    fn assume_and_bind(&mut self, key: String, node: String, pod: Arc<Pod>) {
        let nb = self.nodes.entry(node.clone()).or_default();
        if nb.usable_from > self.observed {
            // The view misses binds to this node up to `usable_from`: decide again once it has them.
            let at = nb.usable_from;
            self.pending.get_mut(&key).expect("scheduling it").state = State::CatchingUp;
            self.catching_up.entry(at).or_default().push(key);
            return;
        }
        self.cluster.place(&key, &node, pod);
        if nb.in_flight.is_empty() {
            let claim = nb.alloc_revision;
            self.start_bind(vec![key], node, claim);
        } else {
            nb.chained.push_back(key.clone());
            self.pending.get_mut(&key).expect("scheduling it").state = State::Chained(node);
        }
    }

    /// Binds `keys` (pending, assumed on `node`) in one call, claiming `alloc`: the allocation
    /// revision the view they were decided from includes.
    fn start_bind(&mut self, keys: Vec<String>, node: String, alloc: i64) {
        let mut pods = Vec::with_capacity(keys.len());
        for k in &keys {
            let p = self.pending.get_mut(k).expect("binding a pending pod");
            p.state = State::Binding(node.clone());
            let meta = p.pod.metadata.as_ref();
            pods.push(PodRef {
                namespace: meta.map_or(String::new(), |m| m.namespace.clone()),
                name: meta.map_or(String::new(), |m| m.name.clone()),
                resource_version: meta.map_or(String::new(), |m| m.resource_version.clone()),
            });
        }
        let nb = self.nodes.get_mut(&node).expect("node entry made before binding");
        nb.in_flight = keys.clone();
        let client = self.client.clone();
        let tx = self.results_tx.clone();
        self.in_flight += 1;
        tokio::spawn(async move {
            let result = client.bind(&node, alloc, &pods).await;
            let _ = tx.send(BindResult {
                keys,
                node,
                claimed: alloc,
                result,
            });
        });
    }

    /// Forgets the assumption of a pod still pending (a bound pod's placement is the real one).
    fn unassume(&mut self, key: &str) {
        if self.pending.contains_key(key) {
            self.cluster.unplace(key);
        }
    }

    /// Back to the queue after a short pause (the informer brings the pod's news meanwhile).
    fn retry_soon(&mut self, key: &str) {
        self.unassume(key);
        if let Some(p) = self.pending.get_mut(key) {
            p.state = State::Backoff;
            self.backoff
                .push(Reverse((Instant::now() + BIND_RETRY_BACKOFF, key.to_string())));
        }
    }

    fn on_bind_result(&mut self, b: BindResult) {
        self.in_flight -= 1;
        self.nodes
            .get_mut(&b.node)
            .expect("node entry of a bind")
            .in_flight
            .clear();
        let BindResult {
            keys,
            node,
            claimed,
            result,
        } = b;
        let out = match result {
            Ok(out) => out,
            Err(e) => {
                tracing::debug!(node = %node, pods = keys.len(), "bind: {e}");
                for k in &keys {
                    self.retry_soon(k);
                }
                return self.next_in_chain(&node, claimed);
            }
        };
        let mut rest: HashSet<String> = keys.iter().cloned().collect();
        for r in &out.rejected {
            let key = format!("{}/{}", r.namespace, r.name);
            if matches!(
                r.reason,
                BindRejectReason::Conflict | BindRejectReason::AlreadyBound
            ) {
                self.stats.pod_conflicts.fetch_add(1, Ordering::Relaxed);
            }
            tracing::debug!(pod = %key, node = %node, "bind rejected: {}", r.message);
            rest.remove(&key);
            self.retry_soon(&key);
        }
        if out.bound {
            self.on_bound(&node, out);
        } else if out.node_alloc_revision != claimed {
            self.on_node_changed(&node, &keys, claimed, out.node_alloc_revision, rest);
        } else {
            // Nothing written and the node unchanged (every pod in it was rejected, or one
            // changed meanwhile): the others go first in the chain again.
            let nb = self.nodes.get_mut(&node).expect("node entry");
            for k in keys.iter().rev().filter(|k| rest.contains(*k)) {
                nb.chained.push_front(k.clone());
                if let Some(p) = self.pending.get_mut(k) {
                    p.state = State::Chained(node.clone());
                }
            }
            self.next_in_chain(&node, claimed);
        }
    }

    fn on_bound(&mut self, node: &str, out: BindOutcome) {
        self.stats
            .bound
            .fetch_add(out.pods.len() as u64, Ordering::Relaxed);
        let nb = self.nodes.get_mut(node).expect("node entry");
        if out.node_alloc_revision > nb.alloc_revision {
            nb.alloc_revision = out.node_alloc_revision;
            nb.usable_from = 0;
        }
        let bound_at = out.node_alloc_revision;
        for pod in out.pods {
            let key = pod_key(&pod);
            if self.pending.remove(&key).is_some() {
                self.cluster.place(&key, node, Arc::new(pod));
            }
        }
        // Not `alloc_revision`: it may have moved past this bind (another instance's bind seen
        // meanwhile), which the chained pods were not decided with; claiming this bind's
        // revision makes their bind fail then, and they are decided again.
        self.next_in_chain(node, bound_at);
    }

    /// Another bind reached the node first: the pods decided onto it (in this bind and
    /// chained behind it) are decided again once the view has caught up with it.
    fn on_node_changed(
        &mut self,
        node: &str,
        keys: &[String],
        claimed: i64,
        current: i64,
        rest: HashSet<String>,
    ) {
        self.stats.node_conflicts.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            node,
            pods = rest.len(),
            claimed,
            current,
            observed = self.observed,
            "bind: the node's allocation moved"
        );
        let nb = self.nodes.get_mut(node).expect("node entry");
        nb.alloc_revision = current;
        nb.usable_from = current;
        let mut again: Vec<String> = nb.chained.drain(..).collect();
        again.extend(keys.iter().filter(|k| rest.contains(*k)).cloned());
        for k in again {
            self.unassume(&k);
            if let Some(p) = self.pending.get_mut(&k) {
                p.state = State::CatchingUp;
                self.catching_up.entry(current).or_default().push(k);
            }
        }
        self.release_caught_up();
    }

    /// Starts one bind of the pods chained on `node` that still wait for it, claiming `alloc`
    /// (the revision their decisions' view includes: the answer of the bind ahead of them).
    fn next_in_chain(&mut self, node: &str, alloc: i64) {
        let nb = self.nodes.get_mut(node).expect("node entry");
        let mut batch = Vec::new();
        while batch.len() < BIND_BATCH_MAX {
            let Some(key) = nb.chained.pop_front() else { break };
            let waiting = self
                .pending
                .get(&key)
                .is_some_and(|p| p.state == State::Chained(node.to_string()));
            if waiting {
                batch.push(key);
            }
        }
        if !batch.is_empty() {
            self.start_bind(batch, node.to_string(), alloc);
        }
    }
}

/// The pod with PodScheduled=False (Unschedulable, `message`), or None if it already says so.
fn with_unschedulable_condition(pod: &Pod, message: &str, now_micros: i64) -> Option<Pod> {
    let conds = pod.status.as_ref().map_or(&[][..], |s| s.conditions.as_slice());
    let same = conds.iter().any(|c| {
        c.r#type == "PodScheduled"
            && c.status == "False"
            && c.reason == "Unschedulable"
            && c.message == message
    });
    if same {
        return None;
    }
    let mut p = pod.clone();
    let st = p.status.get_or_insert_with(Default::default);
    st.conditions.retain(|c| c.r#type != "PodScheduled");
    st.conditions.push(PodCondition {
        r#type: "PodScheduled".into(),
        status: "False".into(),
        reason: "Unschedulable".into(),
        message: message.into(),
        last_transition_time: leader::format_micro_time(now_micros),
        ..Default::default()
    });
    if st.phase.is_empty() {
        st.phase = "Pending".into();
    }
    Some(p)
}
