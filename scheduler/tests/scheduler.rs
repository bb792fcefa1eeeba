//! The scheduler against real in-process servers: the Bind RPC's compares, two instances
//! racing for one small node, failover from a stopped instance, unschedulable pods.

mod common;

use berth_client::leader::SystemClock;
use berth_client::{BindOutcome, ClientError, ListParams, ResourceClient};
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_compares_the_pod_and_the_node_allocation() {
    let cluster = TestCluster::start(1).await;
    let c = cluster.client();
    create_node(&c, &node("n1", "4", "8Gi")).await;
    let a = c.create("default", &pod("default", "a", "100m")).await.unwrap();
    let b = c.create("default", &pod("default", "b", "100m")).await.unwrap();
    let rv = |p: &Pod| p.metadata.as_ref().unwrap().resource_version.clone();

    let BindOutcome::Bound {
        pod,
        node_alloc_revision: r1,
    } = c.bind("default", "a", &rv(&a), "n1", 0).await.unwrap()
    else {
        panic!("first bind to a fresh node binds")
    };
    assert_eq!(node_of(&pod), "n1");
    assert_eq!(
        rv(&pod),
        r1.to_string(),
        "pod and allocation key move in one revision"
    );
    assert_eq!(scheduled_condition(&pod).unwrap().status, "True");
    // The same pod again: it is bound already (and its revision moved).
    let again = c.bind("default", "a", &rv(&pod), "n1", r1).await;
    assert!(matches!(again, Err(ClientError::Conflict(m)) if m.contains("already assigned")));
    // Another pod, from a view that misses the first bind: refused, told the current revision.
    let stale = c.bind("default", "b", &rv(&b), "n1", 0).await.unwrap();
    assert_eq!(
        stale,
        BindOutcome::NodeChanged {
            node_alloc_revision: r1
        }
    );
    assert_eq!(node_of(&c.get::<Pod>("default", "b").await.unwrap()), "");
    // A stale pod revision.
    assert!(matches!(
        c.bind("default", "b", "1", "n1", r1).await,
        Err(ClientError::Conflict(_))
    ));
    // Unknown node, unknown pod.
    assert!(matches!(
        c.bind("default", "b", &rv(&b), "nope", 0).await,
        Err(ClientError::NotFound(_))
    ));
    assert!(matches!(
        c.bind("default", "nope", "5", "n1", r1).await,
        Err(ClientError::NotFound(_))
    ));
    let BindOutcome::Bound {
        node_alloc_revision: r2,
        ..
    } = c.bind("default", "b", &rv(&b), "n1", r1).await.unwrap()
    else {
        panic!("bind with the current revision binds")
    };
    assert!(r2 > r1);
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
        s(&a) > 0 && s(&b) > 0 && s(&a) + s(&b) == 20
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
    assert_eq!(b.stats().bound.load(Ordering::Relaxed) - b_before, 20);
}
