//! The controller manager against an in-process API server (a real `berth_apiserver::Server`
//! on loopback, reached through the client crate), where a test needs to control when the
//! managers run: leader election (one leads at a time, a manager that loses the Lease stops,
//! another takes over when the leader goes), and the sweep of what a namespace deleted while no
//! manager ran left behind.

use berth_apiserver::{ApiConfig, Server};
use berth_client::{ClientError, ListParams, Resource, ResourceClient};
use berth_controllers::{Config, ControllerManager};
use berth_proto::appsv1::ReplicaSet;
use berth_proto::coordinationv1::Lease;
use berth_proto::corev1::{ConfigMap, Namespace, Pod};
use berth_proto::manifest;
use berth_raft::RaftConfig;
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(30);

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn config(identity: &str) -> Config {
    let mut c = Config::new(identity);
    c.lease_duration = Duration::from_secs(2);
    c.renew_interval = Duration::from_millis(200);
    c.renew_deadline = Duration::from_secs(1);
    c
}

async fn active_pods(rc: &ResourceClient) -> usize {
    let ps = rc
        .list_all::<Pod>("default", &ListParams::default())
        .await
        .unwrap()
        .items;
    ps.iter()
        .filter(|p| p.metadata.as_ref().unwrap().deletion_timestamp.is_empty())
        .count()
}

/// A single-member server in `dir` and a client of it, once `default` exists.
async fn server(dir: &std::path::Path) -> (Server, ResourceClient) {
    let (client_addr, peer_addr) = (free_addr(), free_addr());
    let server = Server::start(
        ApiConfig::new(client_addr.clone(), peer_addr.clone()),
        RaftConfig::new("s1", dir.join("s1"), peer_addr, client_addr.clone()),
    )
    .await
    .unwrap();
    let rc = ResourceClient::new(&[client_addr], Duration::from_secs(5)).unwrap();
    eventually("namespace default", || async {
        rc.get::<berth_proto::corev1::Namespace>("", "default").await.ok()
    })
    .await;
    (server, rc)
}

#[tokio::test(flavor = "multi_thread")]
async fn what_a_namespace_deleted_while_no_manager_ran_left_behind_is_swept() {
    let dir = tempfile::tempdir().unwrap();
    let (server, rc) = server(dir.path()).await;
    // No controller runs yet: the namespace has no finalizer and goes at once.
    let ns = manifest::parse_one("apiVersion: v1\nkind: Namespace\nmetadata: {name: bk-ghost}\n").unwrap();
    rc.create("", &Namespace::from_object(ns).unwrap()).await.unwrap();
    let cm = manifest::parse_one("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: left}\n").unwrap();
    rc.create("bk-ghost", &ConfigMap::from_object(cm).unwrap())
        .await
        .unwrap();
    rc.delete::<Namespace>("", "bk-ghost", Default::default())
        .await
        .unwrap();
    assert!(
        rc.get::<ConfigMap>("bk-ghost", "left").await.is_ok(),
        "left behind"
    );
    let m = ControllerManager::start(rc.clone(), config("a"));
    eventually("the leftover swept", || async {
        matches!(
            rc.get::<ConfigMap>("bk-ghost", "left").await,
            Err(ClientError::NotFound(_))
        )
        .then_some(())
    })
    .await;
    drop(m);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn one_manager_leads_stops_when_it_loses_the_lease_and_another_takes_over() {
    let dir = tempfile::tempdir().unwrap();
    let (server, rc) = server(dir.path()).await;

    let a = ControllerManager::start(rc.clone(), config("a"));
    eventually("a leads", || async { a.is_leader().then_some(()) }).await;
    let b = ControllerManager::start(rc.clone(), config("b"));
    let rs: ReplicaSet = ReplicaSet::from_object(
        manifest::parse_one("apiVersion: apps/v1\nkind: ReplicaSet\nmetadata: {name: web}\nspec:\n  replicas: 2\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec: {containers: [{name: c, image: 'nginx:1.25'}]}\n").unwrap(),
    )
    .unwrap();
    rc.create("default", &rs).await.unwrap();
    eventually("2 pods", || async { (active_pods(&rc).await == 2).then_some(()) }).await;
    // b stays a follower while a renews (several renew intervals).
    for _ in 0..20 {
        assert!(!(a.is_leader() && b.is_leader()), "two leaders");
        assert!(!b.is_leader());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Someone else takes the Lease (it says so for an hour): a must stop, and b must wait.
    loop {
        let mut l: Lease = rc.get("kube-system", "berth-controller-manager").await.unwrap();
        let spec = l.spec.get_or_insert_with(Default::default);
        spec.holder_identity = Some("intruder".into());
        spec.lease_duration_seconds = Some(3600);
        spec.renew_time = Some(berth_client::leader::format_micro_time(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_micros() as i64,
        ));
        match rc.update(&l).await {
            Ok(_) => break,
            Err(ClientError::Conflict(_)) => continue,
            Err(e) => panic!("{e}"),
        }
    }
    eventually("a steps down", || async {
        (!a.is_leader() && !b.is_leader()).then_some(())
    })
    .await;

    // The Lease goes away: one of them leads again and repairs the ReplicaSet.
    rc.delete::<Lease>("kube-system", "berth-controller-manager", Default::default())
        .await
        .unwrap();
    eventually("a leader again", || async {
        (a.is_leader() || b.is_leader()).then_some(())
    })
    .await;
    let (leader, follower) = if a.is_leader() { (a, b) } else { (b, a) };
    assert!(!follower.is_leader());
    let ps = rc
        .list_all::<Pod>("default", &ListParams::default())
        .await
        .unwrap()
        .items;
    let victim = ps[0].meta().unwrap().name.clone();
    rc.delete::<Pod>("default", &victim, Default::default())
        .await
        .unwrap();
    eventually("the pod replaced", || async {
        (active_pods(&rc).await == 2).then_some(())
    })
    .await;

    // The leader dies (no release): the follower takes over once the Lease expires.
    drop(leader);
    eventually("the follower leads", || async {
        follower.is_leader().then_some(())
    })
    .await;
    let ps = rc
        .list_all::<Pod>("default", &ListParams::default())
        .await
        .unwrap()
        .items;
    let victim = ps[0].meta().unwrap().name.clone();
    rc.delete::<Pod>("default", &victim, Default::default())
        .await
        .unwrap();
    eventually("the pod replaced by the new leader", || async {
        (active_pods(&rc).await == 2).then_some(())
    })
    .await;
    drop(follower);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cleanly_stopped_leader_hands_the_lease_over_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (server, rc) = server(dir.path()).await;
    // A Lease far longer than the test's deadline: only a release lets b lead in time.
    let slow = |id: &str| {
        let mut c = config(id);
        c.lease_duration = Duration::from_secs(600);
        c
    };
    let a = ControllerManager::start(rc.clone(), slow("a"));
    eventually("a leads", || async { a.is_leader().then_some(()) }).await;
    let b = ControllerManager::start(rc.clone(), slow("b"));
    a.shutdown().await;
    let l: Lease = rc.get("kube-system", "berth-controller-manager").await.unwrap();
    assert_ne!(l.spec.unwrap().holder_identity.as_deref(), Some("a"), "released");
    eventually("b leads", || async { b.is_leader().then_some(()) }).await;
    drop(b);
    server.shutdown().await;
}
