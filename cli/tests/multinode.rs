//! Pods across nodes, end to end: one real `berth server` (controllers, scheduler and node IPAM
//! on) and two real `berth agent`s, each in its own network namespace of a jepsen lab
//! (`berth_jepsen::run::lab`: a namespace per node, joined by a bridge inside the lab's own
//! namespace, a private subnet and no route to the host's uplink; nothing listens on a host
//! interface). Each agent runs the bridge pod network in its namespace; pods reach each other
//! on one node and across nodes through the routes the agents keep to each other's pod CIDRs,
//! and a deleted Node's route goes away. The test itself (its API client and the `berth exec`
//! processes) lives in the lab's client namespace.
//! Machine-global names (namespaces, run dirs, cgroups) carry the prefix `bn`; everything is
//! removed when the test ends, also when it fails.

mod common;

use berth_client::ListParams;
use berth_client::ResourceClient;
use berth_jepsen::run::lab::{self, Lab};
use berth_proto::apiv1;
use berth_proto::corev1::{Node, Pod};
use common::agent_env::{build_image, busybox_rootfs, node_config, IMAGE};
use common::{berth_bin, eventually, in_cidr};
use serde_json::json;
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CLUSTER_CIDR: &str = "10.214.0.0/16";
/// Lab node 1 is the server, nodes 2 and 3 the agents.
const LAB_NODES: usize = 3;
const SERVER_LAB_NODE: usize = 1;
const CLIENT_PORT: u16 = 2379;
const PEER_PORT: u16 = 2380;
const AGENT_PORT: u16 = 10250;
const HTTP_PORT: u16 = 8080;
/// How long a pod may take to run, or a stopped agent to exit.
const POD_DEADLINE: Duration = Duration::from_secs(60);

/// A process the test started inside a lab namespace.
struct Proc {
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    /// Starts `berth ARGS` inside the network namespace `netns` (only that namespace: mounts,
    /// cgroups and /run stay the host's, unlike under `ip netns exec`).
    fn spawn(netns: &str, args: &[String], log: PathBuf) -> Proc {
        let ns = Lab::open_netns(netns).unwrap();
        let mut cmd = Command::new(berth_bin());
        cmd.args(args)
            .env("BERTH_LOG", "info,openraft=warn,berth_node=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap());
        // SAFETY: between fork and exec only setns (async-signal-safe) and reading errno.
        unsafe {
            cmd.pre_exec(move || lab::enter_netns(&ns));
        }
        Proc {
            child: Some(cmd.spawn().expect("spawn berth")),
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM by PID, then waits for the exit (SIGKILL at the deadline).
    fn terminate(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let out = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let deadline = Instant::now() + POD_DEADLINE;
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("pid {} ignored SIGTERM; log:\n{}", child.id(), self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

struct Agent {
    proc: Proc,
    cfg: berth_node::Config,
    netns: String,
    ip: String,
}

/// The lab, the server and the agents; stopped and removed on drop (agents first, then what
/// their pods left, then the server, then the namespaces).
struct MultiNode {
    server: Proc,
    agents: Vec<Agent>,
    client: ResourceClient,
    server_addr: String,
    lab: Lab,
    dir: tempfile::TempDir,
}

impl Drop for MultiNode {
    fn drop(&mut self) {
        for a in &mut self.agents {
            a.proc.kill();
            if let Err(e) = berth_node::cleanup_leftovers(&a.cfg) {
                eprintln!("cleanup of {}: {e}", a.cfg.node_name);
            }
            let _ = std::fs::remove_dir_all(&a.cfg.run_dir);
        }
        self.server.kill();
        if std::thread::panicking() {
            self.dump_logs();
        }
        // The lab's namespaces (and the agents' bridges and veths in them) go when `lab` drops.
    }
}

impl MultiNode {
    /// The server and the agents in `lab`'s node namespaces.
    async fn start(lab: Lab) -> MultiNode {
        let dir = tempfile::tempdir().unwrap();
        let server_ip = lab.node_ip(SERVER_LAB_NODE);
        let server_addr = format!("{server_ip}:{CLIENT_PORT}");
        let peer = format!("{server_ip}:{PEER_PORT}");
        let args: Vec<String> = [
            "server",
            "--name",
            "bn-s1",
            "--peer-addr",
            &peer,
            "--client-addr",
            &server_addr,
            "--initial-cluster",
            &format!("bn-s1={peer}"),
            "--cluster-cidr",
            CLUSTER_CIDR,
            "--data-dir",
            dir.path().join("server").to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let server = Proc::spawn(
            &lab.node_netns(SERVER_LAB_NODE),
            &args,
            dir.path().join("server.log"),
        );
        let client = ResourceClient::new(std::slice::from_ref(&server_addr), Duration::from_secs(5)).unwrap();
        let mut env = MultiNode {
            server,
            agents: Vec::new(),
            client,
            server_addr,
            lab,
            dir,
        };
        let c = env.client.clone();
        eventually("the server answering", || {
            let c = c.clone();
            async move { c.list::<Node>("", &ListParams::default()).await.ok().map(|_| ()) }
        })
        .await;
        for (i, suffix) in [(2, "a"), (3, "b")] {
            env.start_agent(i, suffix);
        }
        env
    }

    /// An agent named `bn-<pid>-<suffix>` in lab node `i`'s namespace, with the busybox image in
    /// its store and its own bridge, veth prefix, data and run dirs and cgroup.
    fn start_agent(&mut self, i: usize, suffix: &str) {
        let name = format!("bn-{}-{suffix}", std::process::id());
        let data_dir = self.dir.path().join(&name);
        let cfg = node_config(&name, &self.server_addr, data_dir.clone(), &name);
        let rootfs = self.dir.path().join(format!("rootfs-{suffix}"));
        busybox_rootfs(&rootfs);
        build_image(&rootfs, IMAGE, &data_dir);
        let ip = self.lab.node_ip(i);
        let netns = self.lab.node_netns(i);
        let args: Vec<String> = [
            "agent",
            "--server",
            &self.server_addr,
            "--name",
            &name,
            "--data-dir",
            data_dir.to_str().unwrap(),
            "--run-dir",
            cfg.run_dir.to_str().unwrap(),
            "--cgroup-parent",
            &cfg.cgroup_parent,
            "--lease-renew-interval-ms",
            "200",
            "--node-status-interval-ms",
            "500",
            "--node-ip",
            &ip,
            "--agent-addr",
            &format!("{ip}:{AGENT_PORT}"),
            "--pod-network",
            "bridge",
            "--bridge-name",
            &format!("bnbr{suffix}"),
            "--veth-prefix",
            &format!("bnv{suffix}"),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let proc = Proc::spawn(&netns, &args, self.dir.path().join(format!("{name}.log")));
        self.agents.push(Agent { proc, cfg, netns, ip });
    }

    fn dump_logs(&self) {
        eprintln!("===== server log =====\n{}", self.server.log());
        for a in &self.agents {
            eprintln!("===== {} log =====\n{}", a.cfg.node_name, a.proc.log());
        }
    }

    /// The agent's Node once Ready with a pod CIDR: its pod CIDR.
    async fn wait_node(&self, a: usize) -> String {
        let (c, name) = (self.client.clone(), self.agents[a].cfg.node_name.clone());
        eventually(&format!("node {name} Ready with a pod CIDR"), || {
            let (c, name) = (c.clone(), name.clone());
            async move {
                let n = c.get::<Node>("", &name).await.ok()?;
                let ready = n
                    .status?
                    .conditions
                    .iter()
                    .any(|c| c.r#type == "Ready" && c.status == "True");
                let cidr = n.spec?.pod_cidr;
                (ready && !cidr.is_empty()).then_some(cidr)
            }
        })
        .await
    }

    /// A busybox httpd pod on agent `a`'s node serving its own name; once Running, its IP.
    async fn run_web_pod(&self, name: &str, a: usize) -> String {
        let pod: Pod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"nodeName": self.agents[a].cfg.node_name, "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "web", "image": IMAGE, "command": ["sh", "-c",
                    format!("mkdir -p /tmp/www && echo {name} > /tmp/www/index.html && exec httpd -f -p {HTTP_PORT} -h /tmp/www")]}]}
        }))
        .unwrap();
        self.client.create("default", &pod).await.unwrap();
        let deadline = Instant::now() + POD_DEADLINE;
        loop {
            let p = self.client.get::<Pod>("default", name).await.unwrap();
            let st = p.status.unwrap_or_default();
            if st.phase == "Running" && !st.pod_ip.is_empty() {
                return st.pod_ip;
            }
            if Instant::now() > deadline {
                panic!("pod {name} not Running with an IP: {st:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `berth exec POD -- wget` of `ip`'s page, through the server and the pod's agent, until
    /// it answers; its body.
    async fn fetch_from(&self, pod: &str, ip: &str) -> String {
        let url = format!("http://{ip}:{HTTP_PORT}/");
        let deadline = Instant::now() + common::DEADLINE;
        loop {
            let out = Command::new(berth_bin())
                .args(["exec", "--server", &self.server_addr, pod, "--"])
                // busybox 1.35's `wget -T` crashes (SIGSEGV): bound it with `timeout` instead.
                .args(["timeout", "5", "wget", "-q", "-O-", &url])
                .output()
                .unwrap();
            if out.status.success() {
                return String::from_utf8_lossy(&out.stdout).to_string();
            }
            assert!(
                Instant::now() < deadline,
                "{pod} fetching {url}: {:?}, stderr {}\nroutes of a:\n{}\nroutes of b:\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr),
                self.routes(0),
                self.routes(1),
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The routes agent `a`'s namespace holds (`ip -4 route`), one a line.
    fn routes(&self, a: usize) -> String {
        let out = Command::new("ip")
            .args(["-n", &self.agents[a].netns, "-4", "route", "show"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    async fn wait_routes(&self, a: usize, what: &str, f: impl Fn(&str) -> bool) {
        eventually(what, || {
            let ok = f(&self.routes(a));
            async move { ok.then_some(()) }
        })
        .await;
    }
}

/// A runtime whose threads all live in the lab's client namespace, so the test's sockets (its
/// API client's) do; the calling thread, which drives `block_on`, enters it too.
fn lab_runtime(lab: &Lab) -> tokio::runtime::Runtime {
    let ns = std::sync::Arc::new(Lab::open_netns(&lab.lab_netns()).unwrap());
    lab::enter_netns(&ns).expect("enter the lab namespace");
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .on_thread_start(move || lab::enter_netns(&ns).expect("enter the lab namespace"))
        .build()
        .unwrap()
}

/// Two nodes, three pods (two on node a, one on node b): each agent routes the other's pod
/// CIDR to its node IP, pods reach each other across nodes and on one node by pod IP, and
/// when node b's agent stops and its Node is deleted, node a's route to it goes away.
#[test]
fn pods_reach_each_other_on_one_node_and_across_nodes() {
    let run = format!("{:04x}", std::process::id() % 0x10000);
    let lab = Lab::create("bn-", &run, LAB_NODES).expect("lab");
    let rt = lab_runtime(&lab);
    rt.block_on(async {
        let mut env = MultiNode::start(lab).await;
        let cidr_a = env.wait_node(0).await;
        let cidr_b = env.wait_node(1).await;
        assert_ne!(cidr_a, cidr_b);
        let (ip_a, ip_b) = (env.agents[0].ip.clone(), env.agents[1].ip.clone());

        // Each agent's namespace routes the other node's pod CIDR to that node's IP on the lab
        // link, and its own pod CIDR to its bridge.
        let to_b = format!("{cidr_b} via {ip_b} dev eth0 proto 190");
        let to_a = format!("{cidr_a} via {ip_a} dev eth0 proto 190");
        env.wait_routes(0, &format!("route {to_b:?} on node a"), |r| r.contains(&to_b))
            .await;
        env.wait_routes(1, &format!("route {to_a:?} on node b"), |r| r.contains(&to_a))
            .await;
        assert!(
            env.routes(0).contains(&format!("{cidr_a} dev bnbra")),
            "{}",
            env.routes(0)
        );
        assert!(
            env.routes(1).contains(&format!("{cidr_b} dev bnbrb")),
            "{}",
            env.routes(1)
        );

        let a1 = env.run_web_pod("web-a1", 0).await;
        let a2 = env.run_web_pod("web-a2", 0).await;
        let b1 = env.run_web_pod("web-b1", 1).await;
        for (ip, cidr) in [(&a1, &cidr_a), (&a2, &cidr_a), (&b1, &cidr_b)] {
            assert!(in_cidr(ip, cidr), "{ip} not in {cidr}");
        }

        // Across nodes, both ways, and on one node.
        assert_eq!(env.fetch_from("web-a1", &b1).await, "web-b1\n");
        assert_eq!(env.fetch_from("web-b1", &a1).await, "web-a1\n");
        assert_eq!(env.fetch_from("web-b1", &a2).await, "web-a2\n");
        assert_eq!(env.fetch_from("web-a1", &a2).await, "web-a2\n");
        assert_eq!(env.fetch_from("web-a2", &a1).await, "web-a1\n");

        // Node b's agent stops (SIGTERM) and its Node is deleted: node a drops the route.
        env.agents[1].proc.terminate();
        let node_b = env.agents[1].cfg.node_name.clone();
        env.client
            .delete::<Node>("", &node_b, apiv1::DeleteOptions::default())
            .await
            .unwrap();
        env.wait_routes(0, &format!("no route to {cidr_b} on node a"), |r| {
            !r.contains(&cidr_b)
        })
        .await;
        // web-b1 still runs in node b's namespace, but without the route node a has no way to it.
        let out = Command::new(berth_bin())
            .args(["exec", "--server", &env.server_addr, "web-a1", "--"])
            .args([
                "timeout",
                "5",
                "wget",
                "-q",
                "-O-",
                &format!("http://{b1}:{HTTP_PORT}/"),
            ])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && out.stdout.is_empty() && err.contains("Network is unreachable"),
            "web-a1 to {b1} without the route: {:?}, stdout {:?}, stderr {err}",
            out.status,
            String::from_utf8_lossy(&out.stdout)
        );
        // Node a's own pods still reach each other.
        assert_eq!(env.fetch_from("web-a2", &a1).await, "web-a1\n");
    });
}
