//! The scheduler against real in-process servers: the Bind RPC's compares, two instances
//! racing for one small node, failover from a stopped instance, unschedulable pods.

mod common;

use berth_client::leader::SystemClock;
use berth_client::{BindRejectReason, ClientError, ListParams, PodRef, ResourceClient};
use berth_proto::corev1::{Namespace, Pod};
use berth_proto::metav1::ObjectMeta;
use berth_proto::quantity::Quantity;
use berth_scheduler::{ring, Scheduler, SchedulerConfig};
use common::*;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

fn instance(client: ResourceClient, name: &str) -> Scheduler {
    let mut cfg = SchedulerConfig::new(name);
    cfg.lease_duration = Duration::from_secs(2);
    Scheduler::start(client, cfg, Arc::new(SystemClock)).unwrap()
}

async fn namespace(c: &ResourceClient, name: &str) {
    let ns = Namespace {
        metadata: Some(ObjectMeta {
            name: name.into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    c.create("", &ns).await.unwrap();
}

async fn pods(c: &ResourceClient, ns: &str) -> Vec<Pod> {
    c.list_all::<Pod>(ns, &ListParams::default()).await.unwrap().items
}

fn cpu_milli(p: &Pod) -> i128 {
    let r = p.spec.as_ref().unwrap().containers[0].resources.as_ref().unwrap();
    Quantity::parse(&r.requests["cpu"]).unwrap().milli_value()
}

fn pod_ref(p: &Pod) -> PodRef {
    let m = p.metadata.as_ref().unwrap();
    PodRef {
        namespace: m.namespace.clone(),
        name: m.name.clone(),
        resource_version: m.resource_version.clone(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_compares_the_pods_and_the_node_allocation() {
    let cluster = TestCluster::start(1).await;
    let c = cluster.client();
    create_node(&c, &node("n1", "4", "8Gi")).await;
    let mut pending = Vec::new();
    for name in ["a", "b", "c", "d"] {
        pending.push(c.create("default", &pod("default", name, "100m")).await.unwrap());
    }
    let (a, b, cc, d) = (&pending[0], &pending[1], &pending[2], &pending[3]);

    let first = c.bind("n1", 0, &[pod_ref(a)]).await.unwrap();
    assert!(first.bound && first.rejected.is_empty());
    let r1 = first.node_alloc_revision;
    let bound_a = &first.pods[0];
    assert_eq!(node_of(bound_a), "n1");
    assert_eq!(
        bound_a.metadata.as_ref().unwrap().resource_version,
        r1.to_string(),
        "pod and allocation key move in one revision"
    );
    assert_eq!(scheduled_condition(bound_a).unwrap().status, "True");

    // From a view that misses the first bind: refused, told the current revision; nothing written.
    let stale = c.bind("n1", 0, &[pod_ref(b)]).await.unwrap();
    assert!(!stale.bound && stale.pods.is_empty() && stale.rejected.is_empty());
    assert_eq!(stale.node_alloc_revision, r1);
    assert_eq!(node_of(&c.get::<Pod>("default", "b").await.unwrap()), "");

    // A batch: b and c bound together in one revision; a (bound already), d at a stale
    // revision and a missing pod are rejected, each with its reason.
    let mut stale_d = pod_ref(d);
    stale_d.resource_version = "1".into();
    let missing = PodRef {
        namespace: "default".into(),
        name: "nope".into(),
        resource_version: "5".into(),
    };
    let batch = c
        .bind(
            "n1",
            r1,
            &[pod_ref(b), pod_ref(bound_a), pod_ref(cc), stale_d, missing],
        )
        .await
        .unwrap();
    assert!(batch.bound);
    let r2 = batch.node_alloc_revision;
    assert!(r2 > r1);
    let names: Vec<&str> = batch
        .pods
        .iter()
        .map(|p| p.metadata.as_ref().unwrap().name.as_str())
        .collect();
    assert_eq!(names, ["b", "c"]);
    assert!(batch
        .pods
        .iter()
        .all(|p| p.metadata.as_ref().unwrap().resource_version == r2.to_string()));
    let reasons: Vec<(&str, &BindRejectReason)> = batch
        .rejected
        .iter()
        .map(|r| (r.name.as_str(), &r.reason))
        .collect();
    assert_eq!(
        reasons,
        [
            ("a", &BindRejectReason::AlreadyBound),
            ("d", &BindRejectReason::Conflict),
            ("nope", &BindRejectReason::NotFound)
        ]
    );
    // Every pod rejected: nothing written, the key unchanged.
    let none = c.bind("n1", r2, &[pod_ref(b)]).await.unwrap();
    assert!(!none.bound && none.node_alloc_revision == r2 && none.rejected.len() == 1);
    // An unknown node; bad requests.
    assert!(matches!(
        c.bind("nope", 0, &[pod_ref(d)]).await,
        Err(ClientError::NotFound(_))
    ));
    assert!(matches!(
        c.bind("n1", r2, &[]).await,
        Err(ClientError::Invalid { .. })
    ));
    assert!(matches!(
        c.bind("n1", r2, &[pod_ref(d), pod_ref(d)]).await,
        Err(ClientError::Invalid { .. })
    ));
}

/// Two instances on different members of a 3-member cluster race for one node with room for
/// 10 of 30 pods, created all at once: exactly 10 get bound, never more cpu than the node has;
/// the rest are marked unschedulable with the reason counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_never_overcommit_a_node() {
    let cluster = TestCluster::start(3).await;
    let c = cluster.client();
    namespace(&c, "race").await;
    create_node(&c, &node("small", "1", "8Gi")).await;
    let a = instance(cluster.client_of(0), "a");
    let b = instance(cluster.client_of(1), "b");
    // Both instances live before the pods appear, so both have pods to place on the node.
    eventually("both scheduler leases", || async {
        let l = c
            .list_all::<berth_proto::coordinationv1::Lease>("kube-system", &ListParams::default())
            .await;
        l.is_ok_and(|l| l.items.len() == 2)
    })
    .await;
    let mut creates = tokio::task::JoinSet::new();
    for i in 0..30 {
        let c = cluster.client_of(i % 3);
        creates.spawn(async move { c.create("race", &pod("race", &format!("p{i}"), "100m")).await });
    }
    while let Some(r) = creates.join_next().await {
        r.unwrap().unwrap();
    }
    const FULL: &str = "0/1 nodes are available: 1 Insufficient cpu.";
    eventually("10 bound and 20 marked unschedulable", || async {
        let ps = pods(&c, "race").await;
        let bound = ps.iter().filter(|p| !node_of(p).is_empty()).count();
        let marked = ps
            .iter()
            .filter(|p| scheduled_condition(p).is_some_and(|c| c.status == "False" && c.message == FULL))
            .count();
        bound >= 10 || marked == 20
    })
    .await;
    let ps = pods(&c, "race").await;
    let bound: Vec<&Pod> = ps.iter().filter(|p| !node_of(p).is_empty()).collect();
    assert!(
        bound.iter().map(|p| cpu_milli(p)).sum::<i128>() <= 1000,
        "overcommitted: {} pods of 100m bound",
        bound.len()
    );
    eventually("10 bound", || async {
        pods(&c, "race")
            .await
            .iter()
            .filter(|p| !node_of(p).is_empty())
            .count()
            == 10
    })
    .await;
    let unschedulable = ps.iter().find(|p| node_of(p).is_empty()).unwrap();
    eventually("the reason on an unschedulable pod", || async {
        let p = c
            .get::<Pod>("race", &unschedulable.metadata.as_ref().unwrap().name)
            .await
            .unwrap();
        scheduled_condition(&p).is_some_and(|c| c.reason == "Unschedulable" && c.message == FULL)
    })
    .await;
    let total = |s: &Scheduler| s.stats().bound.load(Ordering::Relaxed);
    assert_eq!(total(&a) + total(&b), 10);

    // A second node: the unschedulable pods are retried and 10 more fit.
    create_node(&c, &node("small2", "1", "8Gi")).await;
    eventually("20 bound", || async {
        pods(&c, "race")
            .await
            .iter()
            .filter(|p| !node_of(p).is_empty())
            .count()
            == 20
    })
    .await;
    let ps = pods(&c, "race").await;
    for n in ["small", "small2"] {
        let on: i128 = ps.iter().filter(|p| node_of(p) == n).map(cpu_milli).sum();
        assert!(on <= 1000, "{n} holds {on}m cpu");
    }
}

/// Stop one of two instances: the pods the ring gives it are bound by the other once its
/// lease expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_to_the_remaining_instance() {
    let cluster = TestCluster::start(1).await;
    let c = cluster.client();
    create_node(&c, &node("big", "64", "256Gi")).await;
    namespace(&c, "fo").await;
    let a = instance(cluster.client(), "a");
    let b = instance(cluster.client(), "b");
    // Both bind while both live.
    for i in 0..20 {
        c.create("fo", &pod("fo", &format!("warm{i}"), "10m"))
            .await
            .unwrap();
    }
    eventually("warm-up pods bound by both instances", || async {
        let s = |x: &Scheduler| x.stats().bound.load(Ordering::Relaxed);
        s(&a) > 0 && s(&b) > 0 && pods(&c, "fo").await.iter().all(|p| !node_of(p).is_empty())
    })
    .await;
    a.stop();
    let b_before = b.stats().bound.load(Ordering::Relaxed);
    let mut owned_by_a = 0;
    let live = vec!["a".to_string(), "b".to_string()];
    for i in 0..20 {
        let p = c.create("fo", &pod("fo", &format!("p{i}"), "10m")).await.unwrap();
        let uid = &p.metadata.as_ref().unwrap().uid;
        owned_by_a += usize::from(ring::owner(uid, &live) == Some("a"));
    }
    assert!(owned_by_a > 0, "some new pods belong to the stopped instance");
    eventually("every pod bound by b", || async {
        pods(&c, "fo").await.iter().all(|p| !node_of(p).is_empty())
    })
    .await;
    // Only b was left to bind them (a's pods included: the wait above is the failover check).
    // Its own count may fall short of 20: a bind answered with an error although it was applied
    // (an indeterminate proposal under load) is learned from the pod informer, not counted.
    assert!(b.stats().bound.load(Ordering::Relaxed) > b_before);
}

/// The pod informer's revision, which the scheduler's catching up relies on: every change up to
/// it has been sent, and bookmarks move it on while pods are quiet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn informer_revision_covers_what_it_sent_and_moves_with_bookmarks() {
    let cluster = TestCluster::start(1).await;
    let c = cluster.client();
    let (informer, mut rx) = berth_client::Informer::<Pod>::start(c.clone(), "", ListParams::default());
    let p = c.create("default", &pod("default", "a", "100m")).await.unwrap();
    let rv: i64 = p.metadata.as_ref().unwrap().resource_version.parse().unwrap();
    eventually("the informer at the pod's revision", || async {
        informer.resource_version() >= rv
    })
    .await;
    let ev = rx
        .try_recv()
        .expect("the event was sent before the revision moved");
    assert!(matches!(ev, berth_client::InformerEvent::Added(p) if p.metadata.as_ref().unwrap().name == "a"));
    // A write to another kind: only a bookmark can carry the pod informer past it.
    let ns = Namespace {
        metadata: Some(ObjectMeta {
            name: "other".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let other = c.create("", &ns).await.unwrap();
    let other_rv: i64 = other.metadata.unwrap().resource_version.parse().unwrap();
    eventually("a bookmark past the other write", || async {
        informer.resource_version() >= other_rv
    })
    .await;
    assert!(rx.try_recv().is_err(), "no pod event for a namespace");
}

/// Pods waiting when an instance starts are decided highest priority first (then in order):
/// the one pod that fits goes to the high-priority pod, though it sorts last by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn higher_priority_pods_are_decided_first() {
    let cluster = TestCluster::start(1).await;
    let c = cluster.client();
    create_node(&c, &node("one", "1", "8Gi")).await;
    namespace(&c, "prio").await;
    for name in ["a", "b", "c", "z"] {
        let mut p = pod("prio", name, "1");
        p.spec.as_mut().unwrap().priority = Some(if name == "z" { 100 } else { 0 });
        c.create("prio", &p).await.unwrap();
    }
    let _s = instance(cluster.client(), "solo");
    eventually("one pod bound", || async {
        pods(&c, "prio").await.iter().any(|p| !node_of(p).is_empty())
    })
    .await;
    let bound: Vec<String> = pods(&c, "prio")
        .await
        .iter()
        .filter(|p| !node_of(p).is_empty())
        .map(|p| p.metadata.as_ref().unwrap().name.clone())
        .collect();
    assert_eq!(bound, ["z"]);
}
