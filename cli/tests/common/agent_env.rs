//! A node agent for integration tests: the `berth agent` command line the tests share, an agent
//! process stopped by PID (its run dir, cgroups and mounts removed with
//! `berth_node::cleanup_leftovers`) when dropped, and [`AgentEnv`]: one server, one agent and
//! the pod helpers the agent tests use. Machine-global names (run dir, cgroup parent) are the
//! caller's `tag`, so each test keeps its own prefix.

use super::{berth_bin, eventually, Cluster};
use berth_client::{ClientError, ResourceClient};
use berth_proto::corev1::{Node, Pod};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The image every agent test runs: busybox packed by `berth image build`.
pub const IMAGE: &str = "busybox:1.36";
/// How long a pod may take to reach what a test waits for.
pub const POD_DEADLINE: Duration = Duration::from_secs(60);
const POD_POLL_INTERVAL: Duration = Duration::from_millis(100);
const AGENT_LOG_FILTER: &str = "info,berth_node=debug";

/// What differs between the tests' agent command lines.
#[derive(Clone, Debug, Default)]
pub struct AgentOpts {
    /// `--runtime`; the agent's default when `None`.
    pub runtime: Option<String>,
    /// `--pod-network`; the agent's default when `None`.
    pub pod_network: Option<String>,
    /// Appended last.
    pub extra_args: Vec<String>,
    /// `BERTH_LOG`; `info,berth_node=debug` when `None`.
    pub log_filter: Option<String>,
}

impl AgentOpts {
    pub fn new(runtime: Option<&str>, pod_network: Option<&str>, extra_args: &[&str]) -> AgentOpts {
        AgentOpts {
            runtime: runtime.map(str::to_string),
            pod_network: pod_network.map(str::to_string),
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            log_filter: None,
        }
    }
}

/// A node config for `node` on `server`, its run dir `/run/<tag>` and cgroup parent `tag`.
pub fn node_config(node: &str, server: &str, data_dir: PathBuf, tag: &str) -> berth_node::Config {
    let mut cfg = berth_node::Config::new(node, vec![server.to_string()], data_dir);
    cfg.run_dir = PathBuf::from("/run").join(tag);
    cfg.cgroup_parent = tag.to_string();
    cfg
}

/// A busybox root filesystem: the static binary and a link per applet.
pub fn busybox_rootfs(dir: &Path) {
    let bin = Path::new(berth_node::image::busybox::BUSYBOX_BIN);
    berth_node::image::busybox::rootfs(dir, bin).expect("busybox rootfs");
}

/// `berth image build` of `rootfs` as `tag` into the store under `data_dir`.
pub fn build_image(rootfs: &Path, tag: &str, data_dir: &Path) {
    let out = Command::new(berth_bin())
        .args(["image", "build", "--tag", tag, "--rootfs"])
        .arg(rootfs)
        .arg("--data-dir")
        .arg(data_dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// `berth agent` for `cfg` (its first server, node name, data and run dirs, cgroup parent) on
/// 127.0.0.1, its API on a free loopback port (agents of tests running at once never
/// collide), with `opts`. Stdout goes nowhere; the caller chooses stderr.
pub fn agent_command(cfg: &berth_node::Config, opts: &AgentOpts) -> Command {
    let mut cmd = Command::new(berth_bin());
    cmd.args(["agent", "--server", &cfg.servers[0], "--name", &cfg.node_name])
        .arg("--data-dir")
        .arg(&cfg.data_dir)
        .arg("--run-dir")
        .arg(&cfg.run_dir)
        .args(["--cgroup-parent", &cfg.cgroup_parent])
        .args(["--lease-renew-interval-ms", "200"])
        .args(["--node-ip", "127.0.0.1", "--agent-addr", "127.0.0.1:0"]);
    if let Some(runtime) = &opts.runtime {
        cmd.args(["--runtime", runtime]);
    }
    if let Some(network) = &opts.pod_network {
        cmd.args(["--pod-network", network]);
    }
    cmd.args(&opts.extra_args)
        .env(
            "BERTH_LOG",
            opts.log_filter.as_deref().unwrap_or(AGENT_LOG_FILTER),
        )
        .stdout(Stdio::null());
    cmd
}

/// An agent process that can be killed and started again on the same dirs; its log appended
/// to one file across restarts. On drop: SIGKILL by PID, then what its pods left is removed.
pub struct AgentProc {
    pub cfg: berth_node::Config,
    pub opts: AgentOpts,
    pub log: PathBuf,
    pub child: Option<Child>,
}

impl AgentProc {
    pub fn new(cfg: berth_node::Config, opts: AgentOpts, log: PathBuf) -> AgentProc {
        AgentProc {
            cfg,
            opts,
            log,
            child: None,
        }
    }

    pub fn start(&mut self) {
        assert!(
            self.child.is_none(),
            "agent {} already running",
            self.cfg.node_name
        );
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        self.child = Some(agent_command(&self.cfg, &self.opts).stderr(log).spawn().unwrap());
    }

    /// SIGKILL, as a crash would: no chance to stop anything.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        self.kill();
        if let Err(e) = berth_node::cleanup_leftovers(&self.cfg) {
            eprintln!("cleanup of {}: {e}", self.cfg.node_name);
        }
        let _ = std::fs::remove_dir_all(&self.cfg.run_dir);
    }
}

/// A one-member cluster and one agent (not started until [`AgentEnv::start_agent`]), its data
/// dir in the cluster's directory.
pub struct AgentEnv {
    pub agent: AgentProc,
    pub cfg: berth_node::Config,
    pub client: ResourceClient,
    pub node: String,
    /// Last: its servers stop and its directory goes after the agent has stopped.
    pub cluster: Cluster,
}

impl AgentEnv {
    pub async fn prepare(server_args: &[&str], node: &str, tag: &str, opts: AgentOpts) -> AgentEnv {
        let cluster = Cluster::start(1, server_args).await;
        let server = cluster.members[0].client.clone();
        let cfg = node_config(node, &server, cluster.dir.path().join("agent"), tag);
        let agent = AgentProc::new(cfg.clone(), opts, cluster.dir.path().join("agent.log"));
        AgentEnv {
            agent,
            cfg,
            client: ResourceClient::new(&[server], Duration::from_secs(5)).unwrap(),
            node: node.to_string(),
            cluster,
        }
    }

    pub fn server(&self) -> &str {
        &self.cfg.servers[0]
    }

    /// Starts the agent and waits until its Node is Ready.
    pub async fn start_agent(&mut self) {
        self.agent.start();
        self.wait_ready().await;
    }

    pub async fn wait_ready(&self) {
        let (c, node) = (self.client.clone(), self.node.clone());
        eventually("node Ready", || {
            let (c, node) = (c.clone(), node.clone());
            async move {
                let n = c.get::<Node>("", &node).await.ok()?;
                n.status?
                    .conditions
                    .iter()
                    .any(|c| c.r#type == "Ready" && c.status == "True")
                    .then_some(())
            }
        })
        .await;
    }

    pub fn log(&self) -> String {
        self.agent.log()
    }

    /// Creates `pod` (JSON) in "default", bound to this node.
    pub async fn create_pod(&self, mut pod: serde_json::Value) -> Pod {
        pod["spec"]["nodeName"] = json!(self.node);
        let pod: Pod = serde_json::from_value(pod).unwrap();
        self.client.create("default", &pod).await.unwrap()
    }

    pub async fn pod(&self, name: &str) -> Option<Pod> {
        match self.client.get::<Pod>("default", name).await {
            Ok(p) => Some(p),
            Err(ClientError::NotFound(_)) => None,
            Err(e) => panic!("get pod {name}: {e}"),
        }
    }

    /// Waits until `f` holds for the pod, with the agent's log on failure.
    pub async fn wait_pod(&self, name: &str, what: &str, f: impl Fn(&Pod) -> bool) -> Pod {
        let deadline = std::time::Instant::now() + POD_DEADLINE;
        loop {
            if let Some(p) = self.pod(name).await {
                if f(&p) {
                    return p;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "pod {name}: timed out waiting for {what}; status: {}\nagent log:\n{}",
                    serde_json::to_string_pretty(&p.status).unwrap(),
                    self.log()
                );
            }
            tokio::time::sleep(POD_POLL_INTERVAL).await;
        }
    }

    /// Waits until the pod is gone, with the agent's log on failure.
    pub async fn wait_gone(&self, name: &str) {
        let deadline = std::time::Instant::now() + POD_DEADLINE;
        while self.pod(name).await.is_some() {
            assert!(
                std::time::Instant::now() < deadline,
                "pod {name} not deleted; agent log:\n{}",
                self.log()
            );
            tokio::time::sleep(POD_POLL_INTERVAL).await;
        }
    }
}
