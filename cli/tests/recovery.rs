//! Recovery from the loss of a node with real processes: a `berth server` (controllers and
//! scheduler inside) and two real `berth agent`s on this machine (`--pod-network none`, names
//! prefixed `bv-t<pid>`), a Deployment's pods running as containers. SIGKILL of one agent: its
//! pods come back Running on the other node; when it returns, it stops the pods deleted
//! meanwhile. No timing targets here (`berth bench recovery` measures them).

mod common;

use berth_client::{ListParams, Resource, ResourceClient};
use berth_proto::appsv1::Deployment;
use berth_proto::corev1::{Node, Pod};
use berth_proto::manifest;
use common::agent_env::{build_image, busybox_rootfs, node_config, AgentOpts, AgentProc, IMAGE};
use common::{eventually, Cluster};
use std::path::Path;
use std::time::Duration;

/// A `berth agent` named `name` with the busybox image in its store (`--pod-network none`,
/// logs at `info`), not started yet.
fn agent(dir: &Path, server: &str, name: &str) -> AgentProc {
    let cfg = node_config(name, server, dir.join(name), name);
    let rootfs = dir.join("busybox-rootfs");
    if !rootfs.exists() {
        busybox_rootfs(&rootfs);
    }
    build_image(&rootfs, IMAGE, &cfg.data_dir);
    let mut opts = AgentOpts::new(None, Some("none"), &[]);
    opts.log_filter = Some("info".into());
    AgentProc::new(cfg, opts, dir.join(format!("{name}.log")))
}

async fn wait_ready(rc: &ResourceClient, node: &str) {
    eventually(&format!("node {node} Ready"), || async {
        let n = rc.get::<Node>("", node).await.ok()?;
        let ready = n
            .status?
            .conditions
            .iter()
            .any(|c| c.r#type == "Ready" && c.status == "True");
        let tainted = n
            .spec
            .is_some_and(|s| s.taints.iter().any(|t| t.key.starts_with("node.kubernetes.io/")));
        (ready && !tainted).then_some(())
    })
    .await;
}

async fn pods(rc: &ResourceClient) -> Vec<Pod> {
    let p = ListParams {
        label_selector: "app=bv-web".into(),
        ..Default::default()
    };
    rc.list_all::<Pod>("default", &p).await.unwrap().items
}

fn node_of(p: &Pod) -> String {
    p.spec.as_ref().map(|s| s.node_name.clone()).unwrap_or_default()
}

fn terminating(p: &Pod) -> bool {
    !p.metadata.as_ref().unwrap().deletion_timestamp.is_empty()
}

fn running(p: &Pod) -> bool {
    p.status.as_ref().is_some_and(|s| s.phase == "Running")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_agents_pods_come_back_on_another_node() {
    let c = Cluster::start(1, &["--node-grace-period-ms", "2000"]).await;
    let server = c.members[0].client.clone();
    let rc = ResourceClient::new(std::slice::from_ref(&server), Duration::from_secs(5)).unwrap();
    let tag = format!("bv-t{}", std::process::id());
    let mut agents: Vec<AgentProc> = ["a", "b"]
        .iter()
        .map(|n| agent(c.dir.path(), &server, &format!("{tag}-{n}")))
        .collect();
    for a in &mut agents {
        a.start();
    }
    for a in &agents {
        wait_ready(&rc, &a.cfg.node_name).await;
    }
    let yaml = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: bv-web}}\nspec:\n  replicas: 2\n  \
         selector: {{matchLabels: {{app: bv-web}}}}\n  template:\n    metadata: {{labels: {{app: bv-web}}}}\n    \
         spec:\n      terminationGracePeriodSeconds: 1\n      containers: [{{name: c, image: '{IMAGE}', \
         command: [sleep, '100000']}}]\n"
    );
    let d = Deployment::from_object(manifest::parse_one(&yaml).unwrap()).unwrap();
    rc.create("default", &d).await.unwrap();
    // Spread over both nodes (the scheduler's default topology spread by hostname).
    let victim = eventually("both replicas Running", || async {
        let ps = pods(&rc).await;
        (ps.len() == 2 && ps.iter().all(running)).then(|| node_of(&ps[0]))
    })
    .await;
    let i = agents.iter().position(|a| a.cfg.node_name == victim).unwrap();
    agents[i].kill();
    eventually("both replicas Running on the other node", || async {
        let ps = pods(&rc).await;
        let live: Vec<&Pod> = ps.iter().filter(|p| !terminating(p)).collect();
        (live.len() == 2 && live.iter().all(|p| running(p) && node_of(p) != victim)).then_some(())
    })
    .await;
    // The node is NotReady (tainted) meanwhile, and its old pods are only marked deleted.
    let n: Node = rc.get("", &victim).await.unwrap();
    assert!(n
        .spec
        .unwrap()
        .taints
        .iter()
        .any(|t| t.key == "node.kubernetes.io/unreachable"));
    // Back: the agent stops the pods deleted meanwhile, and they go.
    agents[i].start();
    wait_ready(&rc, &victim).await;
    eventually("only the two new replicas left", || async {
        let ps = pods(&rc).await;
        (ps.len() == 2
            && ps
                .iter()
                .all(|p| !terminating(p) && running(p) && node_of(p) != victim))
        .then_some(())
    })
    .await;
}
