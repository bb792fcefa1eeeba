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
use common::{berth_bin, eventually, Cluster};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const IMAGE: &str = "busybox:1.36";

struct Agent {
    name: String,
    cfg: berth_node::Config,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
}

impl Agent {
    fn new(dir: &Path, server: &str, name: &str) -> Agent {
        let data_dir = dir.join(name);
        let mut cfg = berth_node::Config::new(name, vec![server.to_string()], data_dir.clone());
        cfg.run_dir = PathBuf::from("/run").join(name);
        cfg.cgroup_parent = name.to_string();
        let rootfs = dir.join("busybox-rootfs");
        if !rootfs.exists() {
            let bin = Path::new(berth_node::image::busybox::BUSYBOX_BIN);
            berth_node::image::busybox::rootfs(&rootfs, bin).expect("busybox rootfs");
        }
        let out = Command::new(berth_bin())
            .args(["image", "build", "--tag", IMAGE, "--rootfs"])
            .arg(&rootfs)
            .arg("--data-dir")
            .arg(&data_dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let args = [
            "agent",
            "--server",
            server,
            "--name",
            name,
            "--data-dir",
            &data_dir.display().to_string(),
            "--run-dir",
            &cfg.run_dir.display().to_string(),
            "--cgroup-parent",
            name,
            "--pod-network",
            "none",
            "--node-ip",
            "127.0.0.1",
            // Each agent's API on a free loopback port: agents of one machine never collide.
            "--agent-addr",
            "127.0.0.1:0",
            "--lease-renew-interval-ms",
            "200",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        Agent {
            name: name.to_string(),
            cfg,
            args,
            log: dir.join(format!("{name}.log")),
            child: None,
        }
    }

    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(berth_bin())
            .args(&self.args)
            .env("BERTH_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// SIGKILL, by the PID we started.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
        if let Err(e) = berth_node::cleanup_leftovers(&self.cfg) {
            eprintln!("cleanup of {}: {e}", self.name);
        }
        let _ = std::fs::remove_dir_all(&self.cfg.run_dir);
    }
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
    let mut agents: Vec<Agent> = ["a", "b"]
        .iter()
        .map(|n| Agent::new(c.dir.path(), &server, &format!("{tag}-{n}")))
        .collect();
    for a in &mut agents {
        a.start();
    }
    for a in &agents {
        wait_ready(&rc, &a.name).await;
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
    let i = agents.iter().position(|a| a.name == victim).unwrap();
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
