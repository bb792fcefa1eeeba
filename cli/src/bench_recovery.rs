//! `berth bench recovery`: how fast the cluster repairs itself after losing a node or a
//! control-plane member, on real processes.
//!
//! The bench starts its own cluster on loopback: `--servers` `berth server`s and `--agents`
//! `berth agent`s (`--pod-network none`: every agent on this machine's loopback, pods share
//! its address; run and cgroup names carry `--prefix`), a busybox image built into every
//! agent's store, and a Deployment of `--replicas` `sleep` pods spread over the nodes. Then:
//! - node loss, per `--node-loss` setting (grace period : agent renew interval, each on a fresh
//!   cluster): SIGKILL the agent holding most replicas, time until every replica is Running
//!   elsewhere (and when the first was evicted, when all replacements were bound); restart the
//!   agent and wait until the cluster has settled (node Ready, exactly the replicas left).
//! - member loss: SIGKILL the Raft leader, or the member holding the controller manager's
//!   Lease (alternately), then at once delete one replica and create `--probe-pods` bare pods
//!   through the surviving members; time the Raft re-election, the controller Lease takeover,
//!   the replacement's creation (the controllers act again), all probes bound (every scheduler
//!   instance's share, the dead one's included, is bound again) and the replacement Running.
//!   Restart the member and wait for it to rejoin.
//!
//! Every time is from the SIGKILL to the moment a watch (an informer on surviving members)
//! shows the state, so it includes the watch's delivery. JSON to `--out`.

use anyhow::{bail, Context};
use berth_client::leader::{parse_micro_time, Clock, SystemClock};
use berth_client::{ClientError, EtcdClient, Informer, InformerEvent, ListParams, Resource, ResourceClient};
use berth_proto::apiv1::DeleteOptions;
use berth_proto::appsv1::Deployment;
use berth_proto::coordinationv1::Lease;
use berth_proto::corev1::{Node, Pod};
use berth_proto::manifest;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Namespace of the bench's workload.
const NAMESPACE: &str = "default";
const APP: &str = "bv-sleep";
const IMAGE: &str = "busybox:1.36";
/// Longest wait for any one step (a step that takes longer fails the bench).
const STEP_TIMEOUT: Duration = Duration::from_secs(120);
/// Poll period where only polling can tell (Raft status, process start).
const POLL: Duration = Duration::from_millis(20);
/// The controller manager's Lease.
const CM_LEASE_NS: &str = "kube-system";
const CM_LEASE: &str = "berth-controller-manager";
const SCHEDULER_LEASE_PREFIX: &str = "berth-scheduler-";

#[derive(clap::Args, Clone, Debug)]
pub struct RecoveryArgs {
    /// Control-plane members.
    #[arg(long, default_value_t = 3)]
    pub servers: usize,
    /// Node agents.
    #[arg(long, default_value_t = 3)]
    pub agents: usize,
    /// Replicas of the Deployment.
    #[arg(long, default_value_t = 6)]
    pub replicas: usize,
    /// Node-loss rounds per --node-loss setting.
    #[arg(long, default_value_t = 5)]
    pub node_rounds: usize,
    /// Member-loss rounds (alternately the Raft leader and the controller Lease's holder).
    #[arg(long, default_value_t = 4)]
    pub member_rounds: usize,
    /// Bare pods created right after a member is killed (their binds show every scheduler
    /// instance's share being handled, the dead instance's included).
    #[arg(long, default_value_t = 6)]
    pub probe_pods: usize,
    /// Node-loss settings, GRACE_MS:AGENT_RENEW_MS, comma-separated; each runs on a fresh
    /// cluster (the servers' --node-grace-period-ms, the agents' --lease-renew-interval-ms).
    #[arg(long, value_delimiter = ',', default_value = "5000:1000,2000:250")]
    pub node_loss: Vec<String>,
    /// First of the loopback ports used (2 per server).
    #[arg(long, default_value_t = 27_500)]
    pub port_base: u16,
    /// Prefix of node names, run dirs and cgroups.
    #[arg(long, default_value = "bv")]
    pub prefix: String,
    /// Where data and logs go (default: a fresh directory under the system's temp dir,
    /// removed at the end unless --keep).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    #[arg(long)]
    pub keep: bool,
    /// On a failure, leave the cluster running this long before tearing it down (to inspect it).
    #[arg(long, default_value_t = 0)]
    pub hold_on_failure_secs: u64,
    /// BERTH_LOG of the servers and agents the bench starts.
    #[arg(long, default_value = "info,openraft=warn")]
    pub child_log: String,
    /// The berth binary to start (default: this one).
    #[arg(long)]
    pub berth_bin: Option<PathBuf>,
    #[arg(long)]
    pub out: PathBuf,
}

/// One setting's node-loss rounds.
#[derive(Serialize, Debug)]
pub struct NodeLossResult {
    pub node_grace_period_ms: u64,
    pub agent_lease_renew_ms: u64,
    pub rounds: Vec<NodeLossRound>,
    /// Over rounds: SIGKILL → every replica Running elsewhere.
    pub running_ms: Stats,
    pub evicted_ms: Stats,
    pub bound_ms: Stats,
}

#[derive(Serialize, Debug)]
pub struct NodeLossRound {
    pub node: String,
    pub replicas_on_node: usize,
    /// SIGKILL → the first of the node's pods marked for deletion (eviction).
    pub evicted_ms: f64,
    /// SIGKILL → every replacement bound to a live node.
    pub bound_ms: f64,
    /// SIGKILL → every replica Running on a live node.
    pub running_ms: f64,
}

#[derive(Serialize, Debug)]
pub struct MemberLossRound {
    /// "raft-leader" or "controller-lease-holder": what was aimed at.
    pub target: String,
    pub member: String,
    pub was_raft_leader: bool,
    pub held_controller_lease: bool,
    /// SIGKILL → the survivors agree on a new Raft leader (when the leader was killed).
    pub raft_elected_ms: Option<f64>,
    /// SIGKILL → the controller Lease renewed by a surviving member after the kill.
    pub controller_lease_ms: f64,
    /// SIGKILL → the deleted replica's replacement exists (the ReplicaSet controller acted).
    pub replacement_created_ms: f64,
    /// SIGKILL → every probe pod bound (the schedulers act, the dead instance's share too).
    pub probes_bound_ms: f64,
    /// SIGKILL → the replacement Running.
    pub replacement_running_ms: f64,
}

#[derive(Serialize, Debug)]
pub struct MemberLossResult {
    pub rounds: Vec<MemberLossRound>,
    pub controller_lease_ms: Stats,
    pub replacement_created_ms: Stats,
    pub probes_bound_ms: Stats,
    pub replacement_running_ms: Stats,
    pub raft_elected_ms: Stats,
}

#[derive(Serialize, Debug, Default)]
pub struct Stats {
    pub n: usize,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

/// Nearest-rank percentiles.
fn stats(values: &[f64]) -> Stats {
    if values.is_empty() {
        return Stats::default();
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = |p: f64| v[((p / 100.0 * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
    Stats {
        n: v.len(),
        p50: rank(50.0),
        p99: rank(99.0),
        max: v[v.len() - 1],
    }
}

#[derive(Serialize, Debug)]
pub struct RecoveryResult {
    pub servers: usize,
    pub agents: usize,
    pub replicas: usize,
    pub berth_bin: String,
    pub node_loss: Vec<NodeLossResult>,
    pub member_loss: Option<MemberLossResult>,
}

/// A child process we started, restartable with the same arguments; killed on drop.
struct Proc {
    name: String,
    log_filter: String,
    bin: PathBuf,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
}

impl Proc {
    fn start(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(&self.bin)
            .args(&self.args)
            .env("BERTH_LOG", &self.log_filter)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.name))?;
        self.child = Some(child);
        Ok(())
    }

    /// SIGKILL, by the PID we started.
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

struct Server {
    name: String,
    client: String,
    proc: Proc,
}

struct Agent {
    name: String,
    cfg: berth_node::Config,
    proc: Proc,
}

/// A running bench cluster; dropping it kills every process and removes the agents' leftovers.
struct BenchCluster {
    servers: Vec<Server>,
    agents: Vec<Agent>,
}

impl Drop for BenchCluster {
    fn drop(&mut self) {
        for a in &mut self.agents {
            a.proc.kill();
            if let Err(e) = berth_node::cleanup_leftovers(&a.cfg) {
                eprintln!("cleanup of {}: {e}", a.name);
            }
            let _ = std::fs::remove_dir_all(&a.cfg.run_dir);
        }
        for s in &mut self.servers {
            s.proc.kill();
        }
    }
}

impl BenchCluster {
    fn clients(&self) -> Vec<String> {
        self.servers.iter().map(|s| s.client.clone()).collect()
    }

    fn clients_except(&self, member: &str) -> Vec<String> {
        self.servers
            .iter()
            .filter(|s| s.name != member)
            .map(|s| s.client.clone())
            .collect()
    }
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Starts servers and agents for one node-loss setting, with the busybox image in every
/// agent's store, and waits until every node is Ready.
async fn start_cluster(
    a: &RecoveryArgs,
    bin: &Path,
    dir: &Path,
    ports_from: u16,
    grace_ms: u64,
    renew_ms: u64,
) -> anyhow::Result<BenchCluster> {
    std::fs::create_dir_all(dir)?;
    let rootfs = dir.join("busybox-rootfs");
    berth_node::image::busybox::rootfs(&rootfs, Path::new(berth_node::image::busybox::BUSYBOX_BIN))?;
    let port = |i: usize, k: usize| ports_from + (2 * i + k) as u16;
    let names: Vec<String> = (1..=a.servers).map(|i| format!("{}-s{i}", a.prefix)).collect();
    let initial: Vec<String> = names
        .iter()
        .enumerate()
        .map(|(i, n)| format!("{n}=127.0.0.1:{}", port(i, 0)))
        .collect();
    let mut servers = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let client = format!("127.0.0.1:{}", port(i, 1));
        let args = vec![
            "server".into(),
            "--name".into(),
            name.clone(),
            "--data-dir".into(),
            dir.join(name).display().to_string(),
            "--peer-addr".into(),
            format!("127.0.0.1:{}", port(i, 0)),
            "--client-addr".into(),
            client.clone(),
            "--initial-cluster".into(),
            initial.join(","),
            "--node-grace-period-ms".into(),
            grace_ms.to_string(),
        ];
        let mut proc = Proc {
            name: name.clone(),
            log_filter: a.child_log.clone(),
            bin: bin.to_path_buf(),
            args,
            log: dir.join(format!("{name}.log")),
            child: None,
        };
        proc.start()?;
        servers.push(Server {
            name: name.clone(),
            client,
            proc,
        });
    }
    let mut cluster = BenchCluster {
        servers,
        agents: Vec::new(),
    };
    let rc = ResourceClient::new(&cluster.clients(), Duration::from_secs(5))?;
    poll("the API answering", || async {
        rc.get::<berth_proto::corev1::Namespace>("", "default").await.ok()
    })
    .await?;
    for i in 1..=a.agents {
        let name = format!("{}-n{i}", a.prefix);
        let data_dir = dir.join(&name);
        let mut cfg = berth_node::Config::new(&name, cluster.clients(), data_dir.clone());
        cfg.run_dir = PathBuf::from("/run").join(&name);
        cfg.cgroup_parent = name.clone();
        berth_node::image::ImageStore::open(&data_dir.join("images"))?.build_from_rootfs(&rootfs, IMAGE)?;
        let args = vec![
            "agent".into(),
            "--server".into(),
            cluster.clients().join(","),
            "--name".into(),
            name.clone(),
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--run-dir".into(),
            cfg.run_dir.display().to_string(),
            "--cgroup-parent".into(),
            name.clone(),
            "--pod-network".into(),
            "none".into(),
            "--node-ip".into(),
            "127.0.0.1".into(),
            // Three agents on one loopback: each its own free port for its API.
            "--agent-addr".into(),
            "127.0.0.1:0".into(),
            "--lease-renew-interval-ms".into(),
            renew_ms.to_string(),
        ];
        let mut proc = Proc {
            name: name.clone(),
            log_filter: a.child_log.clone(),
            bin: bin.to_path_buf(),
            args,
            log: dir.join(format!("{name}.log")),
            child: None,
        };
        proc.start()?;
        cluster.agents.push(Agent { name, cfg, proc });
    }
    for ag in &cluster.agents {
        wait_node_ready(&rc, &ag.name).await?;
    }
    Ok(cluster)
}

/// Polls `f` every [`POLL`] until it yields, for at most [`STEP_TIMEOUT`].
async fn poll<T, F, Fut>(what: &str, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + STEP_TIMEOUT;
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(POLL).await;
    }
}

fn node_ready(n: &Node) -> bool {
    let ready = n.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.r#type == "Ready" && c.status == "True")
    });
    let tainted = n
        .spec
        .as_ref()
        .is_some_and(|s| s.taints.iter().any(|t| t.key == "node.kubernetes.io/unreachable"));
    ready && !tainted
}

async fn wait_node_ready(rc: &ResourceClient, node: &str) -> anyhow::Result<()> {
    poll(&format!("node {node} Ready"), || async {
        let n = rc.get::<Node>("", node).await.ok()?;
        node_ready(&n).then_some(())
    })
    .await
}

fn deployment(replicas: usize) -> anyhow::Result<Deployment> {
    let yaml = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {APP}}}\nspec:\n  replicas: {replicas}\n  \
         selector: {{matchLabels: {{app: {APP}}}}}\n  template:\n    metadata: {{labels: {{app: {APP}}}}}\n    \
         spec:\n      terminationGracePeriodSeconds: 1\n      containers: [{{name: c, image: '{IMAGE}', \
         command: [sleep, '100000']}}]\n"
    );
    Ok(Deployment::from_object(manifest::parse_one(&yaml)?)?)
}

fn probe_pod(name: &str) -> anyhow::Result<Pod> {
    let yaml = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, labels: {{bv-probe: 'true'}}}}\nspec:\n  \
         terminationGracePeriodSeconds: 0\n  containers: [{{name: c, image: '{IMAGE}', command: [sleep, '100000']}}]\n"
    );
    Ok(Pod::from_object(manifest::parse_one(&yaml)?)?)
}

/// A pod informer whose every event bumps a counter, so a waiter can re-evaluate.
struct PodView {
    pods: Informer<Pod>,
    client: ResourceClient,
    changes: watch::Receiver<u64>,
    _pump: tokio::task::JoinHandle<()>,
}

impl PodView {
    async fn start(addrs: &[String]) -> anyhow::Result<PodView> {
        let rc = ResourceClient::new(addrs, Duration::from_secs(5))?;
        let (pods, mut rx) = Informer::<Pod>::start(rc.clone(), NAMESPACE, ListParams::default());
        let (tx, changes) = watch::channel(0u64);
        let pump = tokio::spawn(async move {
            while let Some(ev) = rx.recv().await {
                let _: InformerEvent<Pod> = ev;
                tx.send_modify(|n| *n += 1);
            }
        });
        let v = PodView {
            pods,
            client: rc,
            changes,
            _pump: pump,
        };
        poll("the pod informer's first list", || async {
            v.pods.has_synced().then_some(())
        })
        .await?;
        Ok(v)
    }

    /// Waits until `f` holds for the cached pods; returns when it was first seen to hold.
    async fn until(&mut self, what: &str, f: impl Fn(&[Pod]) -> bool) -> anyhow::Result<Instant> {
        let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
        loop {
            self.changes.borrow_and_update();
            if f(&self.pods.list()) {
                return Ok(Instant::now());
            }
            match tokio::time::timeout_at(deadline, self.changes.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => bail!("pod informer stopped while waiting for {what}"),
                Err(_) => {
                    // What the informer shows, and what a fresh list says.
                    let fresh = match self
                        .client
                        .list_all::<Pod>(NAMESPACE, &ListParams::default())
                        .await
                    {
                        Ok(l) => summary(&l.items),
                        Err(e) => e.to_string(),
                    };
                    let rs = match self
                        .client
                        .list_all::<berth_proto::appsv1::ReplicaSet>(NAMESPACE, &ListParams::default())
                        .await
                    {
                        Ok(l) => format!(
                            "{:?}",
                            l.items.iter().map(|r| (&r.spec, &r.status)).collect::<Vec<_>>()
                        ),
                        Err(e) => e.to_string(),
                    };
                    bail!(
                        "timed out waiting for {what}; pods (informer):\n{}pods (list):\n{fresh}replicasets: {rs}",
                        summary(&self.pods.list())
                    )
                }
            }
        }
    }
}

/// One line per pod: name, node, phase, conditions, whether it is being deleted.
fn summary(pods: &[Pod]) -> String {
    let mut out = String::new();
    for p in pods {
        let st = p.status.clone().unwrap_or_default();
        let conds: Vec<String> = st
            .conditions
            .iter()
            .map(|c| format!("{}={}({})", c.r#type, c.status, c.message))
            .collect();
        out.push_str(&format!(
            "  {} node={:?} phase={:?} terminating={} {}\n",
            meta(p).name,
            node_of(p),
            st.phase,
            terminating(p),
            conds.join(" ")
        ));
    }
    out
}

fn meta(p: &Pod) -> berth_proto::metav1::ObjectMeta {
    p.metadata.clone().unwrap_or_default()
}

fn node_of(p: &Pod) -> &str {
    p.spec.as_ref().map_or("", |s| s.node_name.as_str())
}

fn running(p: &Pod) -> bool {
    p.status.as_ref().is_some_and(|s| s.phase == "Running")
}

fn terminating(p: &Pod) -> bool {
    !meta(p).deletion_timestamp.is_empty()
}

fn replica(p: &Pod) -> bool {
    meta(p).labels.get("app").is_some_and(|v| v == APP)
}

/// Replicas Running, not being deleted, on a node other than `dead`.
fn healthy_replicas(pods: &[Pod], dead: &str) -> usize {
    pods.iter()
        .filter(|p| replica(p) && running(p) && !terminating(p) && node_of(p) != dead)
        .count()
}

/// Every replica Running and nothing else of the Deployment left (old pods gone).
fn settled(pods: &[Pod], replicas: usize) -> bool {
    let of_app: Vec<&Pod> = pods.iter().filter(|p| replica(p)).collect();
    of_app.len() == replicas && of_app.iter().all(|p| running(p) && !terminating(p))
}

async fn node_loss(
    a: &RecoveryArgs,
    cluster: &mut BenchCluster,
    grace_ms: u64,
    renew_ms: u64,
) -> anyhow::Result<NodeLossResult> {
    let rc = ResourceClient::new(&cluster.clients(), Duration::from_secs(5))?;
    let mut view = PodView::start(&cluster.clients()).await?;
    view.until("every replica Running", |p| settled(p, a.replicas))
        .await?;
    let mut rounds = Vec::new();
    for round in 0..a.node_rounds {
        // The agent holding most replicas (the first of them on a tie).
        let pods = view.pods.list();
        let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
        for p in pods.iter().filter(|p| replica(p)) {
            *per_node.entry(node_of(p).to_string()).or_default() += 1;
        }
        let idx = (0..cluster.agents.len())
            .max_by_key(|&i| {
                (
                    per_node.get(&cluster.agents[i].name).copied().unwrap_or(0),
                    usize::MAX - i,
                )
            })
            .expect("agents");
        let victim = cluster.agents[idx].name.clone();
        let on_node = per_node.get(&victim).copied().unwrap_or(0);
        let t0 = Instant::now();
        cluster.agents[idx].proc.kill();
        let v = victim.clone();
        let evicted = view
            .until("an eviction", |p| {
                p.iter().any(|p| replica(p) && node_of(p) == v && terminating(p))
            })
            .await?;
        let bound = view
            .until("replacements bound", |p| {
                p.iter()
                    .filter(|p| replica(p) && !terminating(p) && !node_of(p).is_empty() && node_of(p) != v)
                    .count()
                    >= a.replicas
            })
            .await?;
        let done = view
            .until("every replica Running elsewhere", |p| {
                healthy_replicas(p, &v) >= a.replicas
            })
            .await?;
        let r = NodeLossRound {
            node: victim.clone(),
            replicas_on_node: on_node,
            evicted_ms: millis(evicted - t0),
            bound_ms: millis(bound - t0),
            running_ms: millis(done - t0),
        };
        eprintln!(
            "node loss {grace_ms}/{renew_ms} round {round}: {victim} ({on_node} replicas): evicted {:.0} ms, bound {:.0} ms, Running {:.0} ms",
            r.evicted_ms, r.bound_ms, r.running_ms
        );
        rounds.push(r);
        // Back, and settled: the agent stops what was deleted meanwhile.
        cluster.agents[idx].proc.start()?;
        wait_node_ready(&rc, &victim).await?;
        view.until("the cluster settled", |p| settled(p, a.replicas))
            .await?;
    }
    let col = |f: fn(&NodeLossRound) -> f64| rounds.iter().map(f).collect::<Vec<_>>();
    Ok(NodeLossResult {
        node_grace_period_ms: grace_ms,
        agent_lease_renew_ms: renew_ms,
        running_ms: stats(&col(|r| r.running_ms)),
        evicted_ms: stats(&col(|r| r.evicted_ms)),
        bound_ms: stats(&col(|r| r.bound_ms)),
        rounds,
    })
}

/// The member every running member names as Raft leader, by name.
async fn raft_leader(cluster: &BenchCluster, among: &[String]) -> Option<String> {
    let mut leader = None;
    let mut ids = BTreeMap::new();
    for s in cluster.servers.iter().filter(|s| among.contains(&s.client)) {
        let c = EtcdClient::new(std::slice::from_ref(&s.client), Duration::from_millis(500)).ok()?;
        let st = c.status_of(0).await.ok()?;
        if st.leader == 0 || leader.is_some_and(|l| l != st.leader) {
            return None;
        }
        leader = Some(st.leader);
        ids.insert(st.header?.member_id, s.name.clone());
    }
    ids.get(&leader?).cloned()
}

/// Whether the member at `client` answers and knows a Raft leader.
async fn knows_a_leader(client: &str) -> Option<()> {
    let c = EtcdClient::new(&[client.to_string()], Duration::from_millis(500)).ok()?;
    (c.status_of(0).await.ok()?.leader != 0).then_some(())
}

async fn lease(rc: &ResourceClient, ns: &str, name: &str) -> Option<(String, i64)> {
    let l: Lease = rc.get(ns, name).await.ok()?;
    let spec = l.spec?;
    Some((spec.holder_identity?, parse_micro_time(&spec.renew_time?)?))
}

/// Whether every member's scheduler Lease is held and fresh (all instances live).
async fn schedulers_live(rc: &ResourceClient, cluster: &BenchCluster, now_micros: i64) -> bool {
    for s in &cluster.servers {
        match lease(rc, CM_LEASE_NS, &format!("{SCHEDULER_LEASE_PREFIX}{}", s.name)).await {
            Some((holder, renewed)) if holder == s.name && now_micros - renewed < 1_000_000 => {}
            _ => return false,
        }
    }
    true
}

async fn member_loss(a: &RecoveryArgs, cluster: &mut BenchCluster) -> anyhow::Result<MemberLossResult> {
    let clock = SystemClock;
    let mut rounds = Vec::new();
    for round in 0..a.member_rounds {
        let all = cluster.clients();
        let rc_all = ResourceClient::new(&all, Duration::from_secs(5))?;
        // Settled: a Raft leader, a controller Lease holder, every scheduler live, replicas Running.
        let leader = poll("a Raft leader", || raft_leader(cluster, &all)).await?;
        let (holder, _) = poll("a controller Lease holder", || {
            lease(&rc_all, CM_LEASE_NS, CM_LEASE)
        })
        .await?;
        poll("every scheduler instance live", || async {
            schedulers_live(&rc_all, cluster, clock.now_micros())
                .await
                .then_some(())
        })
        .await?;
        let target = if round % 2 == 0 {
            "raft-leader"
        } else {
            "controller-lease-holder"
        };
        let victim = if target == "raft-leader" {
            leader.clone()
        } else {
            holder.clone()
        };
        let survivors = cluster.clients_except(&victim);
        let rc = ResourceClient::new(&survivors, Duration::from_secs(5))?;
        let mut view = PodView::start(&survivors).await?;
        view.until("every replica Running", |p| settled(p, a.replicas))
            .await?;
        let doomed = view
            .pods
            .list()
            .into_iter()
            .find(replica)
            .map(|p| meta(&p).name)
            .context("a replica to delete")?;
        let idx = cluster
            .servers
            .iter()
            .position(|s| s.name == victim)
            .context("victim")?;
        let t0 = Instant::now();
        let t0_micros = clock.now_micros();
        cluster.servers[idx].proc.kill();
        // The actions that need the control plane, sent at once through the survivors.
        let actions = {
            let rc = rc.clone();
            let (doomed, probes, round) = (doomed.clone(), a.probe_pods, round);
            tokio::spawn(async move {
                delete_retrying(&rc, &doomed, DeleteOptions::default()).await?;
                for i in 0..probes {
                    create_retrying(&rc, &probe_pod(&format!("bv-probe-{round}-{i}"))?).await?;
                }
                anyhow::Ok(())
            })
        };
        let raft = {
            let survivors = survivors.clone();
            let victim = victim.clone();
            let cl: &BenchCluster = cluster;
            let was_leader = victim == leader;
            async move {
                if !was_leader {
                    return anyhow::Ok(None);
                }
                poll("a new Raft leader", || async {
                    raft_leader(cl, &survivors).await.filter(|l| *l != victim)
                })
                .await?;
                Ok(Some(millis(t0.elapsed())))
            }
        };
        let cm = async {
            poll("the controller Lease renewed by a survivor", || async {
                let (h, renewed) = lease(&rc, CM_LEASE_NS, CM_LEASE).await?;
                (h != victim && renewed > t0_micros).then_some(())
            })
            .await?;
            anyhow::Ok(millis(t0.elapsed()))
        };
        let (raft_ms, cm_ms) = tokio::try_join!(raft, cm)?;
        let d = doomed.clone();
        let created = view
            .until("the replacement created", |p| {
                p.iter()
                    .filter(|p| replica(p) && !terminating(p) && meta(p).name != d)
                    .count()
                    >= a.replicas
            })
            .await?;
        let probes = a.probe_pods;
        let probes_bound = view
            .until("every probe bound", |p| {
                p.iter()
                    .filter(|p| meta(p).labels.contains_key("bv-probe") && !node_of(p).is_empty())
                    .count()
                    >= probes
            })
            .await?;
        let d = doomed.clone();
        let replaced = view
            .until("the replacement Running", |p| {
                p.iter()
                    .filter(|p| replica(p) && !terminating(p) && running(p) && meta(p).name != d)
                    .count()
                    >= a.replicas
            })
            .await?;
        actions.await??;
        let r = MemberLossRound {
            target: target.into(),
            member: victim.clone(),
            was_raft_leader: victim == leader,
            held_controller_lease: victim == holder,
            raft_elected_ms: raft_ms,
            controller_lease_ms: cm_ms,
            replacement_created_ms: millis(created - t0),
            probes_bound_ms: millis(probes_bound - t0),
            replacement_running_ms: millis(replaced - t0),
        };
        eprintln!(
            "member loss round {round}: {victim} (raft leader {}, controller lease {}): raft {:?} ms, lease {:.0} ms, replacement created {:.0} ms, probes bound {:.0} ms, Running {:.0} ms",
            r.was_raft_leader, r.held_controller_lease, r.raft_elected_ms.map(|v| v.round()), r.controller_lease_ms,
            r.replacement_created_ms, r.probes_bound_ms, r.replacement_running_ms
        );
        rounds.push(r);
        // Clean up the probes, restart the member and wait for it to serve again.
        for i in 0..a.probe_pods {
            let opts = DeleteOptions {
                grace_period_seconds: Some(0),
                ..Default::default()
            };
            delete_retrying(&rc, &format!("bv-probe-{round}-{i}"), opts).await?;
        }
        cluster.servers[idx].proc.start()?;
        let back = cluster.servers[idx].client.clone();
        poll("the restarted member in the cluster", || knows_a_leader(&back)).await?;
        view.until("probes gone and replicas settled", |p| {
            settled(p, a.replicas) && !p.iter().any(|p| meta(p).labels.contains_key("bv-probe"))
        })
        .await?;
    }
    let col = |f: fn(&MemberLossRound) -> f64| rounds.iter().map(f).collect::<Vec<_>>();
    let raft: Vec<f64> = rounds.iter().filter_map(|r| r.raft_elected_ms).collect();
    Ok(MemberLossResult {
        controller_lease_ms: stats(&col(|r| r.controller_lease_ms)),
        replacement_created_ms: stats(&col(|r| r.replacement_created_ms)),
        probes_bound_ms: stats(&col(|r| r.probes_bound_ms)),
        replacement_running_ms: stats(&col(|r| r.replacement_running_ms)),
        raft_elected_ms: stats(&raft),
        rounds,
    })
}

/// A write that may meet the election: retried on answers that say it was not applied, or
/// may not have been (a delete or create is checked by its outcome: NotFound / AlreadyExists).
async fn delete_retrying(rc: &ResourceClient, name: &str, opts: DeleteOptions) -> anyhow::Result<()> {
    let deadline = Instant::now() + STEP_TIMEOUT;
    loop {
        match rc.delete::<Pod>(NAMESPACE, name, opts.clone()).await {
            Ok(_) | Err(ClientError::NotFound(_)) => return Ok(()),
            Err(e) if Instant::now() < deadline => {
                tracing::debug!("delete {name}: {e}; retrying");
                tokio::time::sleep(POLL).await;
            }
            Err(e) => return Err(e).context(format!("deleting {name}")),
        }
    }
}

async fn create_retrying(rc: &ResourceClient, pod: &Pod) -> anyhow::Result<()> {
    let deadline = Instant::now() + STEP_TIMEOUT;
    loop {
        match rc.create(NAMESPACE, pod).await {
            Ok(_) | Err(ClientError::AlreadyExists(_)) => return Ok(()),
            Err(e) if Instant::now() < deadline => {
                tracing::debug!("create probe: {e}; retrying");
                tokio::time::sleep(POLL).await;
            }
            Err(e) => return Err(e).context("creating a probe pod"),
        }
    }
}

/// `GRACE_MS:RENEW_MS`.
fn parse_setting(s: &str) -> anyhow::Result<(u64, u64)> {
    let (g, r) = s
        .split_once(':')
        .with_context(|| format!("--node-loss {s:?}: expected GRACE_MS:AGENT_RENEW_MS"))?;
    let (g, r): (u64, u64) = (
        g.parse().with_context(|| format!("--node-loss {s:?}: grace"))?,
        r.parse().with_context(|| format!("--node-loss {s:?}: renew"))?,
    );
    if g == 0 || r == 0 || r >= g {
        bail!("--node-loss {s:?}: need 0 < AGENT_RENEW_MS < GRACE_MS");
    }
    Ok((g, r))
}

pub async fn run(a: RecoveryArgs) -> anyhow::Result<()> {
    // On SIGINT/SIGTERM the bench's future is dropped, and with it the cluster: every process
    // it started is killed and the agents' leftovers removed.
    tokio::select! {
        r = run_bench(a) => r,
        r = crate::server::wait_for_signal() => {
            r?;
            bail!("interrupted")
        }
    }
}

async fn run_bench(a: RecoveryArgs) -> anyhow::Result<()> {
    if a.servers < 2 || a.agents < 2 || a.replicas == 0 {
        bail!("need --servers >= 2, --agents >= 2 and --replicas >= 1");
    }
    let settings: Vec<(u64, u64)> = a
        .node_loss
        .iter()
        .map(|s| parse_setting(s))
        .collect::<Result<_, _>>()?;
    if settings.is_empty() {
        bail!("--node-loss: at least one setting");
    }
    let bin = match &a.berth_bin {
        Some(b) => b.clone(),
        None => std::env::current_exe().context("this binary's path")?,
    };
    let work = a.work_dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("{}-recovery-{}", a.prefix, std::process::id()))
    });
    let mut result = RecoveryResult {
        servers: a.servers,
        agents: a.agents,
        replicas: a.replicas,
        berth_bin: bin.display().to_string(),
        node_loss: Vec::new(),
        member_loss: None,
    };
    for (i, &(grace, renew)) in settings.iter().enumerate() {
        let dir = work.join(format!("cluster-{i}"));
        // Fresh ports per cluster: the previous one's may linger in TIME_WAIT.
        let ports_from = a.port_base + (i * 2 * a.servers) as u16;
        let mut cluster = start_cluster(&a, &bin, &dir, ports_from, grace, renew).await?;
        let rc = ResourceClient::new(&cluster.clients(), Duration::from_secs(5))?;
        rc.create(NAMESPACE, &deployment(a.replicas)?).await?;
        let r = node_loss(&a, &mut cluster, grace, renew).await;
        let r = match r {
            Ok(r) => r,
            Err(e) => {
                eprintln!(
                    "{e:#}\nlogs in {}; servers {}",
                    dir.display(),
                    cluster.clients().join(",")
                );
                tokio::time::sleep(Duration::from_secs(a.hold_on_failure_secs)).await;
                return Err(e);
            }
        };
        result.node_loss.push(r);
        // Member loss on the last cluster (the node settings do not matter to it).
        if i + 1 == settings.len() && a.member_rounds > 0 {
            match member_loss(&a, &mut cluster).await {
                Ok(m) => result.member_loss = Some(m),
                Err(e) => {
                    eprintln!(
                        "{e:#}\nlogs in {}; servers {}",
                        dir.display(),
                        cluster.clients().join(",")
                    );
                    tokio::time::sleep(Duration::from_secs(a.hold_on_failure_secs)).await;
                    return Err(e);
                }
            }
        }
        drop(cluster);
    }
    std::fs::write(&a.out, serde_json::to_vec_pretty(&result)?)
        .with_context(|| format!("writing {}", a.out.display()))?;
    println!("{}", serde_json::to_string_pretty(&result)?);
    if !a.keep {
        let _ = std::fs::remove_dir_all(&work);
    }
    Ok(())
}
