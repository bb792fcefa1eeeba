//! The scheduler instance inside real `berth server` processes: pods get bound, `berth cordon`
//! and `berth uncordon` steer them, `--no-scheduler` leaves them pending, and a 3-member cluster
//! keeps scheduling after the member holding a pod's instance is killed.

mod common;

use berth_client::{ListParams, ResourceClient};
use berth_proto::coordinationv1::Lease;
use berth_proto::corev1::*;
use berth_proto::manifest::{self, Object};
use common::*;
use std::process::Command;
use std::time::Duration;

const NODE: &str = r#"
apiVersion: v1
kind: Node
metadata:
  name: NAME
  labels: {kubernetes.io/hostname: NAME}
status:
  allocatable: {cpu: "4", memory: 8Gi, pods: "110"}
  capacity: {cpu: "4", memory: 8Gi, pods: "110"}
  conditions: [{type: Ready, status: "True"}]
"#;

const POD: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: NAME, namespace: default}
spec:
  containers:
  - name: app
    image: busybox:1.36
    resources: {requests: {cpu: 100m, memory: 64Mi}}
"#;

fn parse<T: berth_client::Resource>(yaml: &str, name: &str) -> T {
    let o: Object = manifest::parse_one(&yaml.replace("NAME", name)).unwrap();
    T::from_object(o).unwrap()
}

fn client(c: &Cluster) -> ResourceClient {
    ResourceClient::new(&c.running_clients(), Duration::from_secs(5)).unwrap()
}

/// A Node with no agent behind it: nothing renews its Lease, so these tests run servers with
/// `--no-controllers` (node lifecycle would mark the node NotReady and taint it).
async fn create_node(c: &ResourceClient, name: &str) {
    let n: Node = parse(NODE, name);
    let created = c.create("", &n).await.unwrap();
    let mut with_status = created;
    with_status.status = n.status.clone();
    c.update_status(&with_status).await.unwrap();
}

async fn create_pod(c: &ResourceClient, name: &str) {
    eventually("the default namespace", || async {
        c.create("default", &parse::<Pod>(POD, name)).await.ok()
    })
    .await;
}

async fn node_of(c: &ResourceClient, pod: &str) -> String {
    let p = c.get::<Pod>("default", pod).await.unwrap();
    p.spec.map(|s| s.node_name).unwrap_or_default()
}

async fn scheduled_message(c: &ResourceClient, pod: &str) -> Option<String> {
    let p = c.get::<Pod>("default", pod).await.ok()?;
    p.status?
        .conditions
        .into_iter()
        .find(|c| c.r#type == "PodScheduled" && c.status == "False")
        .map(|c| c.message)
}

fn berth(args: &[&str], server: &str) -> String {
    let out = Command::new(berth_bin())
        .args(args)
        .args(["--server", server])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "berth {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_servers_scheduler_binds_and_cordon_steers_it() {
    let cluster = Cluster::start(1, &["--scheduler-lease-secs", "2", "--no-controllers"]).await;
    let c = client(&cluster);
    let server = cluster.endpoints();
    create_node(&c, "n1").await;
    create_pod(&c, "first").await;
    eventually("first bound to n1", || async {
        (node_of(&c, "first").await == "n1").then_some(())
    })
    .await;
    let lease = c.get::<Lease>("kube-system", "berth-scheduler-s1").await.unwrap();
    assert_eq!(lease.spec.unwrap().holder_identity.as_deref(), Some("s1"));

    assert_eq!(berth(&["cordon", "n1"], &server).trim(), "node/n1 cordoned");
    assert_eq!(
        berth(&["cordon", "n1"], &server).trim(),
        "node/n1 already cordoned"
    );
    create_pod(&c, "second").await;
    let msg = eventually("second unschedulable", || async {
        scheduled_message(&c, "second").await
    })
    .await;
    assert_eq!(msg, "0/1 nodes are available: 1 node(s) were unschedulable.");
    assert_eq!(node_of(&c, "second").await, "");
    assert_eq!(berth(&["uncordon", "n1"], &server).trim(), "node/n1 uncordoned");
    eventually("second bound after uncordon", || async {
        (node_of(&c, "second").await == "n1").then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_scheduler_leaves_pods_pending() {
    let cluster = Cluster::start(1, &["--no-scheduler", "--no-controllers"]).await;
    let c = client(&cluster);
    create_node(&c, "n1").await;
    create_pod(&c, "p").await;
    // Absence needs a window: a running instance binds within well under a second (the test
    // above), so for 2 s no lease of a scheduler may appear and the pod must stay pending.
    let end = std::time::Instant::now() + Duration::from_secs(2);
    while std::time::Instant::now() < end {
        let leases = c.list_all::<Lease>("kube-system", &ListParams::default()).await;
        assert!(
            leases.map_or(true, |l| l.items.is_empty()),
            "a scheduler lease appeared"
        );
        assert_eq!(node_of(&c, "p").await, "", "the pod was bound");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduling_survives_a_killed_member() {
    let mut cluster = Cluster::start(3, &["--scheduler-lease-secs", "2", "--no-controllers"]).await;
    let c = client(&cluster);
    create_node(&c, "n1").await;
    eventually("three scheduler leases", || async {
        let l = c
            .list_all::<Lease>("kube-system", &ListParams::default())
            .await
            .ok()?;
        (l.items.len() == 3).then_some(())
    })
    .await;
    cluster.members[0].kill();
    let c = client(&cluster);
    for i in 0..12 {
        create_pod(&c, &format!("p{i}")).await;
    }
    for i in 0..12 {
        let name = format!("p{i}");
        eventually("every pod bound", || async {
            (node_of(&c, &name).await == "n1").then_some(())
        })
        .await;
    }
}
