//! Node lifecycle controller: notices silent nodes and moves their pods elsewhere.
//!
//! A node's agent renews the Lease `kube-node-lease/<node>`; when its renewTime (or, before any
//! Lease, the node's creation) is older than the grace period, the node's Ready condition
//! becomes Unknown (reason `NodeStatusUnknown`), it gets the taints
//! `node.kubernetes.io/unreachable` (NoSchedule and NoExecute), and its pods are deleted so
//! their controllers create replacements at once. A pod that tolerates the NoExecute taint
//! with `tolerationSeconds` stays that long after the taint was added (forever without
//! `tolerationSeconds`). When the Lease is renewed again, the node is Ready again and the taints
//! go.
//!
//! Evictions start [`disruption_settle`] after the grace period and are rate-limited per node
//! by a token bucket whose rate depends on how much of the
//! cluster is silent ([`eviction_rate_per_sec`]): when more than
//! [`UNHEALTHY_SHARE_THRESHOLD`] of the nodes (and at least [`DISRUPTION_MIN_UNHEALTHY_NODES`])
//! are silent at once, the likelier cause is a partition between them and the control plane,
//! and evicting everything would make it worse; evictions then slow down (large clusters) or
//! stop (small clusters, or every node silent). The whole cluster counts as one zone.
//!
//! Pods bound to a node that does not exist (deleted, or never registered) are deleted at once
//! (grace 0) once it has been missing for the grace period: nobody else would ever confirm
//! their end.

use crate::replicaset::ignore_not_found;
use crate::runtime::{Action, Reconciler};
use crate::util::*;
use crate::Error;
use berth_client::leader::Clock;
use berth_client::{Informer, InformerEvent, ResourceClient};
use berth_proto::apiv1::{DeleteOptions, Preconditions};
use berth_proto::coordinationv1::Lease;
use berth_proto::corev1::{Node, NodeCondition, Pod, Taint};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Namespace of the agents' node Leases.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";
/// Taint key of a node whose agent went silent.
pub const UNREACHABLE_TAINT: &str = "node.kubernetes.io/unreachable";
/// Share of silent nodes above which the cluster counts as disrupted (Kubernetes'
/// unhealthyZoneThreshold).
pub const UNHEALTHY_SHARE_THRESHOLD: f64 = 0.55;
/// Fewest silent nodes that can make a disruption (Kubernetes: more than 2).
pub const DISRUPTION_MIN_UNHEALTHY_NODES: usize = 3;
/// Nodes whose pods may be evicted per second normally, and the burst.
pub const EVICTION_NODES_PER_SEC: f64 = 1.0;
pub const EVICTION_BURST: f64 = 3.0;
/// Nodes per second while disrupted, in clusters larger than [`LARGE_CLUSTER_NODES`].
pub const EVICTION_NODES_PER_SEC_DISRUPTED: f64 = 0.01;
/// Up to this many nodes, a disrupted cluster evicts nothing.
pub const LARGE_CLUSTER_NODES: usize = 50;
/// A silent node's pods are evicted only once it has been silent a little past the grace
/// period ([`disruption_settle`]): nodes cut off together by one partition (whose last renewals
/// differ by up to one renew interval of their agents) are then all counted silent when the
/// disruption is judged, instead of the first of them being evicted as if it were alone.
/// At most this long (the agents' default renew interval, 1 s, at the default 5 s grace).
pub const DISRUPTION_SETTLE: Duration = Duration::from_secs(1);
/// The settle time is the grace period divided by this, up to [`DISRUPTION_SETTLE`]: agents are
/// expected to renew at least this many times per grace period (1 s of 5 s by default; a
/// shorter grace period for faster recovery wants a faster renew, e.g. 400 ms of 2 s).
pub const DISRUPTION_SETTLE_GRACE_DIVISOR: u32 = 5;

/// How long past the grace period a silent node waits before its pods are evicted.
pub fn disruption_settle(grace: Duration) -> Duration {
    (grace / DISRUPTION_SETTLE_GRACE_DIVISOR).min(DISRUPTION_SETTLE)
}
/// How long to wait before re-asking a halted limiter.
pub const HALTED_RECHECK: Duration = Duration::from_secs(1);

/// How much of the cluster is silent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disruption {
    Normal,
    Partial,
    /// Every node is silent.
    Full,
}

pub fn disruption(total: usize, unhealthy: usize) -> Disruption {
    if total > 0 && unhealthy == total {
        return Disruption::Full;
    }
    let share = if total == 0 {
        0.0
    } else {
        unhealthy as f64 / total as f64
    };
    if unhealthy >= DISRUPTION_MIN_UNHEALTHY_NODES && share > UNHEALTHY_SHARE_THRESHOLD {
        Disruption::Partial
    } else {
        Disruption::Normal
    }
}

/// Nodes per second whose pods may be evicted.
pub fn eviction_rate_per_sec(state: Disruption, total: usize) -> f64 {
    match state {
        Disruption::Normal => EVICTION_NODES_PER_SEC,
        Disruption::Partial if total > LARGE_CLUSTER_NODES => EVICTION_NODES_PER_SEC_DISRUPTED,
        Disruption::Partial | Disruption::Full => 0.0,
    }
}

/// A token bucket with time as an argument (microseconds).
#[derive(Debug, Clone)]
pub struct TokenBucket {
    tokens: f64,
    burst: f64,
    rate_per_sec: f64,
    last_micros: Option<i64>,
}

impl TokenBucket {
    pub fn new(rate_per_sec: f64, burst: f64) -> TokenBucket {
        TokenBucket {
            tokens: burst,
            burst,
            rate_per_sec,
            last_micros: None,
        }
    }

    fn refill(&mut self, now: i64) {
        if let Some(last) = self.last_micros {
            let secs = (now - last).max(0) as f64 / 1e6;
            self.tokens = (self.tokens + secs * self.rate_per_sec).min(self.burst);
        }
        self.last_micros = Some(now);
    }

    /// Changes the rate from `now` on. A new rate keeps at most one saved token (as
    /// Kubernetes swaps in a fresh limiter of burst 1), so a burst saved in calm times is not
    /// spent when the cluster turns out to be disrupted; rate 0 halts at once.
    pub fn set_rate(&mut self, rate_per_sec: f64, now: i64) {
        self.refill(now);
        if rate_per_sec != self.rate_per_sec {
            self.tokens = self.tokens.min(1.0);
        }
        self.rate_per_sec = rate_per_sec;
    }

    /// Takes a token, or says how long until one is there (None: never at this rate).
    pub fn try_take(&mut self, now: i64) -> Result<(), Option<Duration>> {
        self.refill(now);
        if self.rate_per_sec <= 0.0 {
            return Err(None);
        }
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        if self.rate_per_sec <= 0.0 {
            return Err(None);
        }
        Err(Some(Duration::from_secs_f64(
            (1.0 - self.tokens) / self.rate_per_sec,
        )))
    }
}

/// When a pod on a node with `taint` (NoExecute) must go: `Some(0)` now, `Some(d)` after `d`
/// from the taint's timeAdded, None never (tolerated without a time limit).
pub fn eviction_delay(pod: &Pod, taint: &Taint) -> Option<Duration> {
    let tolerations = pod
        .spec
        .as_ref()
        .map(|s| s.tolerations.as_slice())
        .unwrap_or_default();
    let tolerating = tolerations.iter().find(|t| {
        let key_ok = (t.key.is_empty() && t.operator == "Exists") || t.key == taint.key;
        let value_ok = t.operator == "Exists" || t.value == taint.value;
        let effect_ok = t.effect.is_empty() || t.effect == taint.effect;
        key_ok && value_ok && effect_ok
    });
    match tolerating {
        None => Some(Duration::ZERO),
        Some(t) => t
            .toleration_seconds
            .map(|s| Duration::from_secs(u64::try_from(s).unwrap_or(0))),
    }
}

/// Whether a node is silent at `now`: its heartbeat (Lease renewTime, else creation) is older
/// than the grace period.
pub fn silent(last_heartbeat_micros: i64, now_micros: i64, grace: Duration) -> bool {
    now_micros - last_heartbeat_micros > grace.as_micros() as i64
}

pub struct NodeLifecycleController {
    pub client: ResourceClient,
    pub nodes: Arc<Informer<Node>>,
    pub leases: Arc<Informer<Lease>>,
    pub pods: Arc<Informer<Pod>>,
    pub clock: Arc<dyn Clock>,
    pub grace: Duration,
    pub limiter: Mutex<TokenBucket>,
    /// Silent nodes that were granted an eviction token (until they come back or go).
    pub evicting: Mutex<HashSet<String>>,
    /// Node names that pods are bound to but that do not exist, since when (micros).
    pub missing_since: Mutex<HashMap<String, i64>>,
}

/// Node keys a pod event concerns (the node it is bound to).
pub fn pod_event_keys(ev: &InformerEvent<Pod>) -> Vec<String> {
    let node = |p: &Pod| p.spec.as_ref().map(|s| s.node_name.clone()).unwrap_or_default();
    let mut keys: Vec<String> = match ev {
        InformerEvent::Added(p) | InformerEvent::Deleted(p) => vec![node(p)],
        InformerEvent::Updated { old, new } => vec![node(old), node(new)],
    };
    keys.retain(|k| !k.is_empty());
    keys.dedup();
    keys
}

fn taint(effect: &str, now: &str) -> Taint {
    Taint {
        key: UNREACHABLE_TAINT.into(),
        value: String::new(),
        effect: effect.into(),
        time_added: now.into(),
    }
}

impl NodeLifecycleController {
    fn last_heartbeat(&self, node: &Node) -> i64 {
        let m = meta(node);
        self.leases
            .get(&join_key(NODE_LEASE_NAMESPACE, &m.name))
            .and_then(|l| l.spec.and_then(|s| s.renew_time))
            .and_then(|t| parse_time(&t))
            .or_else(|| parse_time(&m.creation_timestamp))
            .unwrap_or(0)
    }

    fn silent_count(&self, now: i64) -> (usize, usize) {
        let nodes = self.nodes.list();
        let silent_n = nodes
            .iter()
            .filter(|n| silent(self.last_heartbeat(n), now, self.grace))
            .count();
        (nodes.len(), silent_n)
    }

    /// Ready=Unknown and the unreachable taints; returns the node as stored after.
    async fn mark_unreachable(&self, node: Node, now: i64) -> Result<Node, Error> {
        let now_s = rfc3339_secs(now);
        let mut node = node;
        let spec = node.spec.clone().unwrap_or_default();
        if !spec.taints.iter().any(|t| t.key == UNREACHABLE_TAINT) {
            let mut next = node.clone();
            let s = next.spec.get_or_insert_with(Default::default);
            s.taints.push(taint("NoSchedule", &now_s));
            s.taints.push(taint("NoExecute", &now_s));
            node = self.client.update(&next).await?;
            tracing::warn!(node = %meta(&node).name, "node silent: tainted unreachable");
        }
        let status = node.status.clone().unwrap_or_default();
        let ready = status.conditions.iter().find(|c| c.r#type == "Ready");
        if ready.is_none_or(|c| c.status != "Unknown") {
            let mut next = node.clone();
            let st = next.status.get_or_insert_with(Default::default);
            set_ready(
                &mut st.conditions,
                "Unknown",
                "NodeStatusUnknown",
                "Kubelet stopped posting node status.",
                &now_s,
            );
            node = self.client.update_status(&next).await?;
        }
        Ok(node)
    }

    /// Ready again and untainted, if this controller had marked it.
    async fn mark_reachable(&self, node: Node, now: i64) -> Result<(), Error> {
        let now_s = rfc3339_secs(now);
        let mut node = node;
        if node
            .spec
            .as_ref()
            .is_some_and(|s| s.taints.iter().any(|t| t.key == UNREACHABLE_TAINT))
        {
            let mut next = node.clone();
            next.spec
                .get_or_insert_with(Default::default)
                .taints
                .retain(|t| t.key != UNREACHABLE_TAINT);
            node = self.client.update(&next).await?;
            tracing::info!(node = %meta(&node).name, "node back: unreachable taints removed");
        }
        let unknown = node.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.r#type == "Ready" && c.reason == "NodeStatusUnknown")
        });
        if unknown {
            let mut next = node.clone();
            let st = next.status.get_or_insert_with(Default::default);
            set_ready(
                &mut st.conditions,
                "True",
                "KubeletReady",
                "node lease renewed",
                &now_s,
            );
            self.client.update_status(&next).await?;
        }
        Ok(())
    }

    /// Deletes the node's pods that do not tolerate the taint (or whose tolerationSeconds have
    /// passed); returns when the next tolerating pod is due.
    async fn evict(&self, node: &Node, now: i64) -> Result<Option<Duration>, Error> {
        let name = meta(node).name;
        let no_execute = node
            .spec
            .as_ref()
            .and_then(|s| {
                s.taints
                    .iter()
                    .find(|t| t.key == UNREACHABLE_TAINT && t.effect == "NoExecute")
                    .cloned()
            })
            .unwrap_or_else(|| taint("NoExecute", &rfc3339_secs(now)));
        let added = parse_time(&no_execute.time_added).unwrap_or(now);
        let mut next_due: Option<Duration> = None;
        for p in self.pods.list() {
            let pm = meta(&p);
            if p.spec.as_ref().is_none_or(|s| s.node_name != name) || being_deleted(&pm) {
                continue;
            }
            let Some(delay) = eviction_delay(&p, &no_execute) else {
                continue;
            };
            let due = added + delay.as_micros() as i64;
            if due > now {
                let wait = Duration::from_micros((due - now) as u64);
                next_due = Some(next_due.map_or(wait, |d| d.min(wait)));
                continue;
            }
            let opts = DeleteOptions {
                preconditions: Some(Preconditions {
                    uid: Some(pm.uid.clone()),
                    resource_version: None,
                }),
                ..Default::default()
            };
            ignore_not_found(self.client.delete::<Pod>(&pm.namespace, &pm.name, opts).await)?;
            tracing::info!(node = %name, pod = %format!("{}/{}", pm.namespace, pm.name), "evicted pod from silent node");
        }
        Ok(next_due)
    }
}

impl NodeLifecycleController {
    /// Pods bound to a node that does not exist (deleted, or never registered) have nobody to
    /// stop them or confirm their deletion: once the node has been missing for the grace
    /// period (it may be registering right now), they are deleted at once (grace 0).
    async fn collect_orphans(&self, node: &str) -> Result<Action, Error> {
        let bound: Vec<Pod> = self
            .pods
            .list()
            .into_iter()
            .filter(|p| p.spec.as_ref().is_some_and(|s| s.node_name == node))
            .collect();
        if bound.is_empty() {
            self.missing_since.lock().unwrap().remove(node);
            return Ok(Action::AwaitChange);
        }
        match self.client.get::<Node>("", node).await {
            Err(berth_client::ClientError::NotFound(_)) => {}
            Ok(_) => return Ok(Action::AwaitChange), // the cache is behind; its event follows
            Err(e) => return Err(e.into()),
        }
        let now = self.clock.now_micros();
        let since = *self
            .missing_since
            .lock()
            .unwrap()
            .entry(node.to_string())
            .or_insert(now);
        let due = since + self.grace.as_micros() as i64;
        if now < due {
            return Ok(Action::RequeueAfter(Duration::from_micros((due - now) as u64)));
        }
        for p in bound {
            let pm = meta(&p);
            let opts = DeleteOptions {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions {
                    uid: Some(pm.uid.clone()),
                    resource_version: None,
                }),
                ..Default::default()
            };
            ignore_not_found(self.client.delete::<Pod>(&pm.namespace, &pm.name, opts).await)?;
            tracing::info!(node, pod = %format!("{}/{}", pm.namespace, pm.name), "deleted pod bound to a missing node");
        }
        Ok(Action::AwaitChange)
    }
}

fn set_ready(conds: &mut Vec<NodeCondition>, status: &str, reason: &str, message: &str, now: &str) {
    match conds.iter_mut().find(|c| c.r#type == "Ready") {
        Some(c) => {
            if c.status != status {
                c.last_transition_time = now.into();
            }
            c.status = status.into();
            c.reason = reason.into();
            c.message = message.into();
        }
        None => conds.push(NodeCondition {
            r#type: "Ready".into(),
            status: status.into(),
            reason: reason.into(),
            message: message.into(),
            last_heartbeat_time: String::new(),
            last_transition_time: now.into(),
        }),
    }
}

impl Reconciler for NodeLifecycleController {
    fn name(&self) -> &'static str {
        "nodelifecycle"
    }

    async fn reconcile(&self, key: &str) -> Result<Action, Error> {
        let Some(node) = self.nodes.get(key) else {
            self.evicting.lock().unwrap().remove(key);
            return self.collect_orphans(key).await;
        };
        self.missing_since.lock().unwrap().remove(key);
        let now = self.clock.now_micros();
        let last = self.last_heartbeat(&node);
        if !silent(last, now, self.grace) {
            self.evicting.lock().unwrap().remove(key);
            self.mark_reachable(node, now).await?;
            let until_silent = last + self.grace.as_micros() as i64 - now;
            return Ok(Action::RequeueAfter(
                Duration::from_micros(until_silent.max(0) as u64) + Duration::from_millis(1),
            ));
        }
        let node = self.mark_unreachable(node, now).await?;
        if !self.evicting.lock().unwrap().contains(key) {
            let settled = last + (self.grace + disruption_settle(self.grace)).as_micros() as i64;
            if now < settled {
                return Ok(Action::RequeueAfter(Duration::from_micros(
                    (settled - now) as u64,
                )));
            }
            let (total, silent_n) = self.silent_count(now);
            let state = disruption(total, silent_n);
            let mut bucket = self.limiter.lock().unwrap();
            bucket.set_rate(eviction_rate_per_sec(state, total), now);
            match bucket.try_take(now) {
                Ok(()) => {
                    self.evicting.lock().unwrap().insert(key.to_string());
                }
                Err(wait) => {
                    tracing::debug!(node = key, ?state, "eviction rate-limited");
                    return Ok(Action::RequeueAfter(
                        wait.unwrap_or(HALTED_RECHECK).max(Duration::from_millis(10)),
                    ));
                }
            }
        }
        Ok(match self.evict(&node, now).await? {
            Some(d) => Action::RequeueAfter(d),
            // Silent and empty: the next Lease renewal or pod event brings it back here.
            None => Action::AwaitChange,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_proto::corev1::{PodSpec, Toleration};

    #[test]
    fn disruption_needs_a_large_share_and_at_least_three_nodes() {
        assert_eq!(disruption(10, 0), Disruption::Normal);
        assert_eq!(disruption(10, 5), Disruption::Normal);
        assert_eq!(disruption(10, 6), Disruption::Partial);
        assert_eq!(
            disruption(4, 2),
            Disruption::Normal,
            "2 nodes are never a disruption"
        );
        assert_eq!(disruption(4, 3), Disruption::Partial);
        assert_eq!(disruption(3, 3), Disruption::Full);
        assert_eq!(disruption(1, 1), Disruption::Full);
        assert_eq!(
            eviction_rate_per_sec(Disruption::Normal, 3),
            EVICTION_NODES_PER_SEC
        );
        assert_eq!(eviction_rate_per_sec(Disruption::Partial, 10), 0.0);
        assert_eq!(
            eviction_rate_per_sec(Disruption::Partial, 100),
            EVICTION_NODES_PER_SEC_DISRUPTED
        );
        assert_eq!(eviction_rate_per_sec(Disruption::Full, 100), 0.0);
    }

    #[test]
    fn token_bucket_limits_and_refills_with_injected_time() {
        let mut b = TokenBucket::new(1.0, 2.0);
        let t0 = 1_000_000_000;
        assert!(b.try_take(t0).is_ok());
        assert!(b.try_take(t0).is_ok());
        assert_eq!(b.try_take(t0), Err(Some(Duration::from_secs(1))));
        assert!(b.try_take(t0 + 1_000_000).is_ok());
        b.set_rate(0.0, t0 + 1_000_000);
        assert_eq!(b.try_take(t0 + 100_000_000), Err(None), "halted: no tokens ever");
        b.set_rate(0.5, t0 + 100_000_000);
        assert_eq!(b.try_take(t0 + 101_000_000), Err(Some(Duration::from_secs(1))));
        assert!(b.try_take(t0 + 102_000_000).is_ok());
        // A full bucket (saved in calm times) does not let a disrupted cluster evict.
        let mut b = TokenBucket::new(1.0, 3.0);
        b.set_rate(0.0, t0);
        assert_eq!(b.try_take(t0), Err(None));
        let mut b = TokenBucket::new(1.0, 3.0);
        b.set_rate(0.01, t0);
        assert!(b.try_take(t0).is_ok(), "one saved token");
        assert_eq!(b.try_take(t0), Err(Some(Duration::from_secs(100))));
    }

    fn pod_tolerating(t: Option<Toleration>) -> Pod {
        Pod {
            spec: Some(PodSpec {
                tolerations: t.into_iter().collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn tolerations_delay_or_prevent_eviction() {
        let t = taint("NoExecute", "2024-05-01T10:00:00Z");
        assert_eq!(eviction_delay(&pod_tolerating(None), &t), Some(Duration::ZERO));
        let tol = |key: &str, op: &str, effect: &str, secs: Option<i64>| Toleration {
            key: key.into(),
            operator: op.into(),
            value: String::new(),
            effect: effect.into(),
            toleration_seconds: secs,
        };
        let p = pod_tolerating(Some(tol(UNREACHABLE_TAINT, "Exists", "NoExecute", Some(30))));
        assert_eq!(eviction_delay(&p, &t), Some(Duration::from_secs(30)));
        let p = pod_tolerating(Some(tol(UNREACHABLE_TAINT, "Exists", "", None)));
        assert_eq!(eviction_delay(&p, &t), None);
        let p = pod_tolerating(Some(tol("", "Exists", "", None)));
        assert_eq!(eviction_delay(&p, &t), None, "tolerates everything");
        let p = pod_tolerating(Some(tol("other", "Exists", "NoExecute", None)));
        assert_eq!(eviction_delay(&p, &t), Some(Duration::ZERO));
        let p = pod_tolerating(Some(tol(UNREACHABLE_TAINT, "Exists", "NoSchedule", None)));
        assert_eq!(eviction_delay(&p, &t), Some(Duration::ZERO), "wrong effect");
    }

    #[test]
    fn the_settle_time_follows_the_grace_period_up_to_a_second() {
        assert_eq!(disruption_settle(Duration::from_secs(5)), Duration::from_secs(1));
        assert_eq!(disruption_settle(Duration::from_secs(40)), Duration::from_secs(1));
        assert_eq!(
            disruption_settle(Duration::from_secs(2)),
            Duration::from_millis(400)
        );
    }

    #[test]
    fn silence_is_strictly_past_the_grace_period() {
        let g = Duration::from_secs(5);
        assert!(!silent(0, 5_000_000, g));
        assert!(silent(0, 5_000_001, g));
    }
}
