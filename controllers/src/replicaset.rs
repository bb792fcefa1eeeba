//! ReplicaSet controller: keeps `spec.replicas` active pods matching the selector.
//!
//! Pods are claimed through ownerReferences with `controller: true`: a matching pod without a
//! controller is adopted, an owned pod that no longer matches is released. Creations and
//! deletions are recorded as [`Expectations`] before they are sent and observed from pod events,
//! so a reconcile that runs before the cache has seen its own writes does not create or delete
//! again (the informer lags the store). Surplus pods go least useful first
//! ([`deletion_order`]).

use crate::runtime::{Action, Reconciler};
use crate::util::*;
use crate::Error;
use berth_client::leader::Clock;
use berth_client::{ClientError, Informer, InformerEvent, ResourceClient};
use berth_proto::apiv1::{DeleteOptions, Preconditions};
use berth_proto::appsv1::{ReplicaSet, ReplicaSetStatus};
use berth_proto::corev1::Pod;
use berth_proto::metav1::ObjectMeta;
use berth_proto::selector::Selector;
use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// Most pods one reconcile creates or deletes (the rest in the next round).
pub const BURST_REPLICAS: usize = 500;
/// Expectations not observed within this long are dropped (an event may have been coalesced
/// away by a relist).
pub const EXPECTATIONS_TIMEOUT: Duration = Duration::from_secs(60);
/// Recheck of a ReplicaSet whose expectations are pending.
pub const EXPECTATIONS_RECHECK: Duration = Duration::from_secs(1);
/// Label carrying the hash of a Deployment's pod template.
pub const POD_TEMPLATE_HASH_LABEL: &str = "pod-template-hash";

/// Pending creations (a count: names come from generateName) and deletions (uids) per
/// controller key, as in Kubernetes' controller expectations.
#[derive(Default)]
pub struct Expectations {
    m: Mutex<HashMap<String, Expect>>,
}

struct Expect {
    adds: i64,
    deletes: HashSet<String>,
    set_at: Instant,
}

impl Expectations {
    fn entry<R>(&self, key: &str, f: impl FnOnce(&mut Expect) -> R) -> R {
        let mut m = self.m.lock().unwrap();
        let e = m.entry(key.to_string()).or_insert_with(|| Expect {
            adds: 0,
            deletes: HashSet::new(),
            set_at: Instant::now(),
        });
        f(e)
    }

    pub fn expect_creations(&self, key: &str, n: usize) {
        self.entry(key, |e| {
            e.adds += n as i64;
            e.set_at = Instant::now();
        });
    }

    /// A creation that was expected but failed (or was observed).
    pub fn creation_observed(&self, key: &str) {
        if let Some(e) = self.m.lock().unwrap().get_mut(key) {
            e.adds -= 1;
        }
    }

    pub fn expect_deletion(&self, key: &str, uid: &str) {
        self.entry(key, |e| {
            e.deletes.insert(uid.to_string());
            e.set_at = Instant::now();
        });
    }

    pub fn deletion_observed(&self, key: &str, uid: &str) {
        if let Some(e) = self.m.lock().unwrap().get_mut(key) {
            e.deletes.remove(uid);
        }
    }

    /// No pending creations or deletions (or they timed out).
    pub fn satisfied(&self, key: &str) -> bool {
        self.m.lock().unwrap().get(key).is_none_or(|e| {
            (e.adds <= 0 && e.deletes.is_empty()) || e.set_at.elapsed() > EXPECTATIONS_TIMEOUT
        })
    }

    pub fn forget(&self, key: &str) {
        self.m.lock().unwrap().remove(key);
    }

    pub fn clear(&self) {
        self.m.lock().unwrap().clear();
    }
}

/// Rank of a pod's usefulness: pods sorting first are deleted first (Kubernetes' order:
/// unscheduled, pending before unknown before running, not ready, ready for a shorter time,
/// more restarts, newer).
fn usefulness(p: &Pod) -> impl Ord {
    let spec_node = p.spec.as_ref().map_or("", |s| s.node_name.as_str());
    let phase = p.status.as_ref().map_or("", |s| s.phase.as_str());
    let phase_rank = match phase {
        "Pending" | "" => 0,
        "Unknown" => 1,
        "Running" => 2,
        _ => 0,
    };
    let ready = pod_ready(p);
    let ready_since = if ready {
        pod_condition(p, "Ready")
            .and_then(|(_, t)| parse_time(&t))
            .unwrap_or(0)
    } else {
        0
    };
    let restarts: i64 = p.status.as_ref().map_or(0, |s| {
        s.container_statuses
            .iter()
            .map(|c| i64::from(c.restart_count))
            .sum()
    });
    let created = parse_time(&meta(p).creation_timestamp).unwrap_or(i64::MAX);
    (
        !spec_node.is_empty(),
        phase_rank,
        ready,
        Reverse(ready_since),
        Reverse(restarts),
        Reverse(created),
    )
}

/// The `n` pods to delete first.
pub fn deletion_order(pods: &[Pod], n: usize) -> Vec<Pod> {
    let mut v: Vec<&Pod> = pods.iter().collect();
    v.sort_by_cached_key(|p| (usefulness(p), meta(*p).name));
    v.into_iter().take(n).cloned().collect()
}

/// The pod a ReplicaSet creates: its template, named `<rs>-<random>`, owned by it.
pub fn pod_from_template(rs: &ReplicaSet) -> Pod {
    let m = meta(rs);
    let t = rs
        .spec
        .as_ref()
        .and_then(|s| s.template.clone())
        .unwrap_or_default();
    let tm = t.metadata.unwrap_or_default();
    let mut labels = tm.labels;
    if let Some(h) = m.labels.get(POD_TEMPLATE_HASH_LABEL) {
        labels
            .entry(POD_TEMPLATE_HASH_LABEL.to_string())
            .or_insert_with(|| h.clone());
    }
    Pod {
        api_version: "v1".into(),
        kind: "Pod".into(),
        metadata: Some(ObjectMeta {
            generate_name: format!("{}-", m.name),
            namespace: m.namespace.clone(),
            labels,
            annotations: tm.annotations,
            owner_references: vec![owner_ref("apps/v1", "ReplicaSet", &m)],
            ..Default::default()
        }),
        spec: t.spec,
        status: None,
    }
}

/// The status a ReplicaSet should show for its active pods.
pub fn compute_status(rs: &ReplicaSet, active: &[Pod], now_micros: i64) -> ReplicaSetStatus {
    let spec = rs.spec.clone().unwrap_or_default();
    let template_labels: BTreeMap<String, String> = spec
        .template
        .as_ref()
        .and_then(|t| t.metadata.as_ref())
        .map(|m| m.labels.clone())
        .unwrap_or_default();
    let count = |f: &dyn Fn(&Pod) -> bool| active.iter().filter(|p| f(p)).count() as i32;
    ReplicaSetStatus {
        replicas: active.len() as i32,
        fully_labeled_replicas: count(&|p| {
            let l = meta(p).labels;
            template_labels.iter().all(|(k, v)| l.get(k) == Some(v))
        }),
        ready_replicas: count(&|p| pod_ready(p)),
        available_replicas: count(&|p| pod_available(p, spec.min_ready_seconds, now_micros)),
        observed_generation: meta(rs).generation,
        conditions: rs
            .status
            .as_ref()
            .map(|s| s.conditions.clone())
            .unwrap_or_default(),
    }
}

pub struct ReplicaSetController {
    pub client: ResourceClient,
    pub replicasets: Arc<Informer<ReplicaSet>>,
    pub pods: Arc<Informer<Pod>>,
    pub expectations: Arc<Expectations>,
    pub clock: Arc<dyn Clock>,
}

/// The keys of ReplicaSets that a pod event concerns, recording observed expectations.
pub fn pod_event_keys(
    ev: &InformerEvent<Pod>,
    replicasets: &Informer<ReplicaSet>,
    exp: &Expectations,
) -> Vec<String> {
    let owner_key = |p: &Pod| {
        let m = meta(p);
        controller_ref(&m)
            .filter(|r| r.kind == "ReplicaSet")
            .map(|r| join_key(&m.namespace, &r.name))
    };
    let matching = |p: &Pod| -> Vec<String> {
        let m = meta(p);
        replicasets
            .by_namespace(&m.namespace)
            .iter()
            .filter(|rs| selects(rs, &m.labels))
            .map(key_of)
            .collect()
    };
    let mut keys = Vec::new();
    match ev {
        InformerEvent::Added(p) => match owner_key(p) {
            Some(k) => {
                exp.creation_observed(&k);
                keys.push(k);
            }
            None => keys.extend(matching(p)),
        },
        InformerEvent::Updated { old, new } => {
            let newly_deleted = !being_deleted(&meta(old)) && being_deleted(&meta(new));
            for p in [old, new] {
                match owner_key(p) {
                    Some(k) => {
                        if newly_deleted {
                            exp.deletion_observed(&k, &uid(p));
                        }
                        keys.push(k);
                    }
                    None => keys.extend(matching(p)),
                }
            }
        }
        InformerEvent::Deleted(p) => {
            if let Some(k) = owner_key(p) {
                exp.deletion_observed(&k, &uid(p));
                keys.push(k);
            }
        }
    }
    keys.dedup();
    keys
}

fn selector_of(rs: &ReplicaSet) -> Result<Selector, String> {
    let ls = rs
        .spec
        .as_ref()
        .and_then(|s| s.selector.clone())
        .unwrap_or_default();
    Selector::from_label_selector(&ls)
}

/// Whether the ReplicaSet's (non-empty) selector matches `labels`.
fn selects(rs: &ReplicaSet, labels: &BTreeMap<String, String>) -> bool {
    selector_of(rs).is_ok_and(|s| !s.is_empty() && s.matches(labels))
}

impl Reconciler for ReplicaSetController {
    fn name(&self) -> &'static str {
        "replicaset"
    }

    fn reset(&self) {
        self.expectations.clear();
    }

    async fn reconcile(&self, key: &str) -> Result<Action, Error> {
        let Some(rs) = self.replicasets.get(key) else {
            self.expectations.forget(key);
            return Ok(Action::AwaitChange);
        };
        let m = meta(&rs);
        let selector = selector_of(&rs).map_err(|e| Error::Invalid(format!("{key}: spec.selector: {e}")))?;
        if selector.is_empty() {
            return Ok(Action::AwaitChange);
        }
        let owned = self.claim_pods(&rs, &selector).await?;
        let active: Vec<Pod> = owned.into_iter().filter(pod_active).collect();
        let mut next = Action::AwaitChange;
        let mut failure = None;
        if being_deleted(&m) {
            // Its pods go with it (garbage collector); create nothing.
        } else if self.expectations.satisfied(key) {
            failure = self.manage(key, &rs, &active).await.err();
        } else {
            next = Action::RequeueAfter(EXPECTATIONS_RECHECK);
        }
        let now = self.clock.now_micros();
        let mut status = compute_status(&rs, &active, now);
        // ReplicaFailure says why pods could not be created or deleted (quota, validation...);
        // it goes with the next round that manages without error.
        match &failure {
            Some(e) => set_replica_failure(&mut status, e, now),
            None if next == Action::AwaitChange => status.conditions.retain(|c| c.r#type != "ReplicaFailure"),
            None => {}
        }
        if rs.status.as_ref() != Some(&status) {
            let mut updated = rs.clone();
            updated.status = Some(status.clone());
            self.client.update_status(&updated).await?;
        }
        if let Some(e) = failure {
            return Err(e);
        }
        // Pods ready but not yet for minReadySeconds become available by time alone.
        let min_ready = rs.spec.as_ref().map_or(0, |s| s.min_ready_seconds);
        if min_ready > 0 && status.available_replicas < status.ready_replicas {
            return Ok(Action::RequeueAfter(Duration::from_secs(1)));
        }
        Ok(next)
    }
}

/// Sets the ReplicaFailure condition (reason FailedCreate) to `e`; the transition time stays
/// while the message does.
fn set_replica_failure(status: &mut ReplicaSetStatus, e: &Error, now_micros: i64) {
    let message = e.to_string();
    if let Some(c) = status
        .conditions
        .iter_mut()
        .find(|c| c.r#type == "ReplicaFailure")
    {
        if c.message == message {
            return;
        }
        c.message = message;
        c.last_transition_time = rfc3339_secs(now_micros);
        return;
    }
    status.conditions.push(berth_proto::appsv1::ReplicaSetCondition {
        r#type: "ReplicaFailure".into(),
        status: "True".into(),
        last_transition_time: rfc3339_secs(now_micros),
        reason: "FailedCreate".into(),
        message,
    });
}

impl ReplicaSetController {
    /// Adopts matching orphans, releases owned pods that no longer match; returns the owned
    /// pods that match.
    async fn claim_pods(&self, rs: &ReplicaSet, selector: &Selector) -> Result<Vec<Pod>, Error> {
        let m = meta(rs);
        let mut owned = Vec::new();
        for p in self.pods.by_namespace(&m.namespace) {
            let pm = meta(&p);
            let matches = selector.matches(&pm.labels);
            match controller_ref(&pm) {
                Some(r) if r.uid == m.uid => {
                    if matches {
                        owned.push(p);
                    } else if !being_deleted(&pm) {
                        let released = edit_meta(&p, |pm| pm.owner_references.retain(|r| r.uid != m.uid));
                        ignore_not_found(self.client.update(&released).await)?;
                        tracing::info!(replicaset = %m.name, pod = %pm.name, "released pod");
                    }
                }
                Some(_) => {}
                None if matches && !being_deleted(&pm) && !being_deleted(&m) && !pod_terminal(&p) => {
                    let adopted = edit_meta(&p, |pm| {
                        pm.owner_references.push(owner_ref("apps/v1", "ReplicaSet", &m))
                    });
                    if let Some(p) = ignore_not_found(self.client.update(&adopted).await)? {
                        tracing::info!(replicaset = %m.name, pod = %pm.name, "adopted pod");
                        owned.push(p);
                    }
                }
                None => {}
            }
        }
        Ok(owned)
    }

    /// Creates or deletes pods so that `active` has `spec.replicas` pods.
    async fn manage(&self, key: &str, rs: &ReplicaSet, active: &[Pod]) -> Result<(), Error> {
        let want = rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1).max(0) as usize;
        let m = meta(rs);
        if active.len() < want {
            let n = (want - active.len()).min(BURST_REPLICAS);
            self.expectations.expect_creations(key, n);
            let pod = pod_from_template(rs);
            for i in 0..n {
                if let Err(e) = self.client.create(&m.namespace, &pod).await {
                    // The rest will not be created this round: expect none of them.
                    for _ in i..n {
                        self.expectations.creation_observed(key);
                    }
                    return Err(e.into());
                }
            }
            tracing::debug!(replicaset = %m.name, created = n, "created pods");
        } else if active.len() > want {
            let n = (active.len() - want).min(BURST_REPLICAS);
            let victims = deletion_order(active, n);
            for p in &victims {
                self.expectations.expect_deletion(key, &uid(p));
            }
            for p in &victims {
                let pm = meta(p);
                let opts = DeleteOptions {
                    preconditions: Some(Preconditions {
                        uid: Some(pm.uid.clone()),
                        resource_version: None,
                    }),
                    ..Default::default()
                };
                let r = self.client.delete::<Pod>(&pm.namespace, &pm.name, opts).await;
                if let Err(e) = ignore_not_found(r) {
                    for v in &victims {
                        self.expectations.deletion_observed(key, &uid(v));
                    }
                    return Err(e.into());
                }
            }
            tracing::debug!(replicaset = %m.name, deleted = n, "deleted pods");
        }
        Ok(())
    }
}

/// NotFound as None: the object is already gone, which is what the caller wanted.
pub fn ignore_not_found<T>(r: Result<T, ClientError>) -> Result<Option<T>, ClientError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(ClientError::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_proto::corev1::{PodCondition, PodSpec, PodStatus};

    fn pod(name: &str, node: &str, phase: &str, ready: Option<&str>, created: &str) -> Pod {
        Pod {
            metadata: Some(ObjectMeta {
                name: name.into(),
                creation_timestamp: created.into(),
                ..Default::default()
            }),
            spec: Some(PodSpec {
                node_name: node.into(),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: phase.into(),
                conditions: ready
                    .map(|t| PodCondition {
                        r#type: "Ready".into(),
                        status: "True".into(),
                        last_transition_time: t.into(),
                        ..Default::default()
                    })
                    .into_iter()
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn names(v: &[Pod]) -> Vec<String> {
        v.iter().map(|p| meta(p).name).collect()
    }

    #[test]
    fn least_useful_pods_are_deleted_first() {
        let t = |h: u32| format!("2024-05-01T{h:02}:00:00Z");
        let pods = vec![
            pod("ready-old", "n1", "Running", Some(&t(1)), &t(0)),
            pod("ready-recent", "n1", "Running", Some(&t(5)), &t(0)),
            pod("running-not-ready-old", "n1", "Running", None, &t(1)),
            pod("running-not-ready-new", "n1", "Running", None, &t(2)),
            pod("pending", "n1", "Pending", None, &t(0)),
            pod("unknown", "n1", "Unknown", None, &t(0)),
            pod("unscheduled", "", "Pending", None, &t(0)),
        ];
        assert_eq!(
            names(&deletion_order(&pods, 7)),
            [
                "unscheduled",
                "pending",
                "unknown",
                "running-not-ready-new",
                "running-not-ready-old",
                "ready-recent",
                "ready-old"
            ]
        );
        assert_eq!(names(&deletion_order(&pods, 2)), ["unscheduled", "pending"]);
    }

    #[test]
    fn status_counts_ready_available_and_fully_labeled() {
        let mut rs = ReplicaSet::default();
        let spec = rs.spec.get_or_insert_with(Default::default);
        spec.min_ready_seconds = 60;
        let tm = spec
            .template
            .get_or_insert_with(Default::default)
            .metadata
            .get_or_insert_with(Default::default);
        tm.labels.insert("app".into(), "x".into());
        rs.metadata = Some(ObjectMeta {
            generation: 4,
            ..Default::default()
        });
        let now = parse_time("2024-05-01T10:00:00Z").unwrap();
        let mut a = pod("a", "n", "Running", Some("2024-05-01T09:00:00Z"), "");
        a.metadata
            .as_mut()
            .unwrap()
            .labels
            .insert("app".into(), "x".into());
        let b = pod("b", "n", "Running", Some("2024-05-01T09:59:30Z"), "");
        let c = pod("c", "n", "Pending", None, "");
        let s = compute_status(&rs, &[a, b, c], now);
        assert_eq!(
            (
                s.replicas,
                s.ready_replicas,
                s.available_replicas,
                s.fully_labeled_replicas,
                s.observed_generation
            ),
            (3, 2, 1, 1, 4)
        );
    }

    #[test]
    fn replica_failure_condition_keeps_its_time_while_the_message_holds() {
        let mut st = ReplicaSetStatus::default();
        let e = Error::Invalid("exceeded quota: pods=2".into());
        set_replica_failure(&mut st, &e, 1_000_000_000_000);
        set_replica_failure(&mut st, &e, 2_000_000_000_000);
        assert_eq!(st.conditions.len(), 1);
        let c = &st.conditions[0];
        assert_eq!(
            (c.r#type.as_str(), c.status.as_str(), c.reason.as_str()),
            ("ReplicaFailure", "True", "FailedCreate")
        );
        assert_eq!(c.last_transition_time, rfc3339_secs(1_000_000_000_000));
        assert!(c.message.contains("exceeded quota"));
    }

    #[tokio::test(start_paused = true)]
    async fn expectations_block_until_observed_or_timed_out() {
        let e = Expectations::default();
        assert!(e.satisfied("ns/rs"));
        e.expect_creations("ns/rs", 2);
        e.expect_deletion("ns/rs", "u1");
        e.creation_observed("ns/rs");
        e.deletion_observed("ns/rs", "u1");
        assert!(!e.satisfied("ns/rs"));
        e.creation_observed("ns/rs");
        assert!(e.satisfied("ns/rs"));
        e.expect_creations("ns/rs", 1);
        assert!(!e.satisfied("ns/rs"));
        tokio::time::advance(EXPECTATIONS_TIMEOUT + Duration::from_secs(1)).await;
        assert!(e.satisfied("ns/rs"));
    }
}
