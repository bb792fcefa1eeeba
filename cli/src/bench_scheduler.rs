//! `berth bench scheduler`: scheduling throughput and packing quality over hollow nodes.
//!
//! Method. Against the servers given by `--server`, the bench registers `--nodes` hollow Nodes
//! (capacity and a Ready condition, no agent, no processes) and `--pods` pending pods, then
//! starts N scheduler instances IN THIS PROCESS (each a `berth_scheduler::Scheduler` over its
//! own client, exactly as a server runs its own) and times them from start (cold caches: the
//! informer lists are part of the time) until every pod is bound. Its pods name a scheduler of
//! their own (`spec.schedulerName`), so instances inside the servers leave them alone; run the
//! servers with `--no-scheduler` anyway so they do not spend CPU watching. The instances' Leases
//! are written before they start, so all N share the work from the first decision.
//! Packing: after each run, the nodes holding pods against the lower bound
//! max over cpu, memory and pod count of ceil(sum of requests / node capacity); every node is
//! also checked for overcommit. Everything the bench creates is deleted afterwards.

use crate::ServerArgs;
use anyhow::{bail, Context};
use berth_client::leader::{format_micro_time, Clock, SystemClock};
use berth_client::{ListParams, ResourceClient};
use berth_proto::apiv1::DeleteOptions;
use berth_proto::coordinationv1::{Lease, LeaseSpec};
use berth_proto::corev1::*;
use berth_proto::metav1::{ObjectMeta, OwnerReference};
use berth_proto::quantity::Quantity;
use berth_scheduler::{Policy, Scheduler, SchedulerConfig};
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Creates and deletes in flight at once.
const WRITE_CONCURRENCY: usize = 64;
/// Pods per synthetic owner (what the default topology spread groups by).
const PODS_PER_OWNER: usize = 10;
const ZONES: usize = 3;
const POLL: Duration = Duration::from_millis(20);

#[derive(clap::Args, Clone, Debug)]
pub struct SchedulerBenchArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    #[arg(long, default_value_t = 200)]
    pub nodes: usize,
    #[arg(long, default_value_t = 1000)]
    pub pods: usize,
    /// Scheduler instance counts to measure, one run each (per policy).
    #[arg(long, value_delimiter = ',', default_value = "1,3")]
    pub instances: Vec<usize>,
    /// Scoring policies to measure.
    #[arg(long, value_delimiter = ',', default_value = "MostAllocated,LeastAllocated")]
    pub policies: Vec<String>,
    /// Percentage of nodes to find feasible before scoring (0: adaptive).
    #[arg(long, default_value_t = 0)]
    pub nodes_percentage: usize,
    #[arg(long, default_value = "4")]
    pub node_cpu: String,
    #[arg(long, default_value = "16Gi")]
    pub node_memory: String,
    #[arg(long, default_value_t = 110)]
    pub node_pods: i64,
    /// After each run, mark every bound pod Running through UpdateStatus, as a hollow agent.
    #[arg(long)]
    pub mark_running: bool,
    /// Give up on a run after this long.
    #[arg(long, default_value_t = 600)]
    pub timeout_secs: u64,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Serialize, Debug)]
pub struct RunResult {
    pub instances: usize,
    pub policy: String,
    pub pods: usize,
    pub bound: u64,
    /// From starting the instances (cold caches) to the last bind.
    pub seconds: f64,
    pub pods_per_sec: f64,
    pub node_conflicts: u64,
    pub pod_conflicts: u64,
    pub nodes_used: usize,
    pub nodes_lower_bound: usize,
    /// nodes_used / nodes_lower_bound (1.0 is perfect packing).
    pub packing_ratio: f64,
    pub overcommitted_nodes: usize,
    pub mark_running_seconds: Option<f64>,
}

#[derive(Serialize, Debug)]
pub struct BenchResult {
    pub nodes: usize,
    pub pods: usize,
    pub node_capacity: BTreeMap<String, String>,
    pub method: &'static str,
    pub runs: Vec<RunResult>,
}

/// Requests of a pod: (cpu millicores, memory MiB), drawn from a few common sizes.
fn pod_size(rng: &mut impl Rng) -> (i64, i64) {
    const CPU_MILLI: [i64; 4] = [100, 250, 500, 1000];
    const MEMORY_MIB: [i64; 4] = [128, 256, 512, 1024];
    (
        CPU_MILLI[rng.gen_range(0..CPU_MILLI.len())],
        MEMORY_MIB[rng.gen_range(0..MEMORY_MIB.len())],
    )
}

fn map(kv: &[(&str, String)]) -> BTreeMap<String, String> {
    kv.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
}

/// Runs `f(i)` for i in 0..n with at most [`WRITE_CONCURRENCY`] at once; the first error wins.
async fn for_each<F, Fut>(n: usize, f: F) -> anyhow::Result<()>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let mut set = tokio::task::JoinSet::new();
    for i in 0..n {
        if set.len() >= WRITE_CONCURRENCY {
            set.join_next().await.expect("non-empty")??;
        }
        set.spawn(f(i));
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    Ok(())
}

struct Run<'a> {
    a: &'a SchedulerBenchArgs,
    client: ResourceClient,
    id: String,
    ns: String,
    scheduler_name: String,
    lease_prefix: String,
}

impl Run<'_> {
    fn node_name(&self, i: usize) -> String {
        format!("bench-{}-node-{i}", self.id)
    }

    fn hollow_node(&self, i: usize) -> Node {
        let name = self.node_name(i);
        let capacity = map(&[
            ("cpu", self.a.node_cpu.clone()),
            ("memory", self.a.node_memory.clone()),
            ("pods", self.a.node_pods.to_string()),
        ]);
        let labels = map(&[
            ("kubernetes.io/hostname", name.clone()),
            ("topology.kubernetes.io/zone", format!("zone-{}", i % ZONES)),
            ("berth.dev/bench", self.id.clone()),
        ]);
        berth_proto::hollow::node(&name, labels, capacity)
    }

    fn pod(&self, i: usize, (cpu, mem): (i64, i64)) -> Pod {
        let owner = i / PODS_PER_OWNER;
        Pod {
            metadata: Some(ObjectMeta {
                name: format!("p{i}"),
                namespace: self.ns.clone(),
                owner_references: vec![OwnerReference {
                    api_version: "apps/v1".into(),
                    kind: "ReplicaSet".into(),
                    name: format!("rs{owner}"),
                    uid: format!("bench-{}-rs-{owner}", self.id),
                    controller: Some(true),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            spec: Some(PodSpec {
                scheduler_name: self.scheduler_name.clone(),
                containers: vec![Container {
                    name: "app".into(),
                    image: "busybox:1.36".into(),
                    resources: Some(ResourceRequirements {
                        requests: map(&[("cpu", format!("{cpu}m")), ("memory", format!("{mem}Mi"))]),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    async fn create_nodes(&self) -> anyhow::Result<()> {
        let nodes: Arc<Vec<Node>> = Arc::new((0..self.a.nodes).map(|i| self.hollow_node(i)).collect());
        let c = self.client.clone();
        for_each(self.a.nodes, move |i| {
            let (c, nodes) = (c.clone(), nodes.clone());
            async move {
                let n = &nodes[i];
                let mut created = c.create("", n).await.context("creating a hollow node")?;
                // Status through the status subresource, as an agent reports it.
                created.status = n.status.clone();
                c.update_status(&created).await.context("hollow node status")?;
                Ok(())
            }
        })
        .await
    }

    async fn create_pods(&self, sizes: &[(i64, i64)]) -> anyhow::Result<()> {
        let pods: Arc<Vec<Pod>> = Arc::new(sizes.iter().enumerate().map(|(i, s)| self.pod(i, *s)).collect());
        let (c, ns) = (self.client.clone(), self.ns.clone());
        for_each(pods.len(), move |i| {
            let (c, pods, ns) = (c.clone(), pods.clone(), ns.clone());
            async move {
                c.create(&ns, &pods[i]).await.context("creating a pod")?;
                Ok(())
            }
        })
        .await
    }

    /// Leases for every instance, fresh, so that each sees all of them live from the start.
    async fn announce(&self, names: &[String]) -> anyhow::Result<()> {
        let ns = Namespace {
            metadata: Some(ObjectMeta {
                name: berth_scheduler::DEFAULT_LEASE_NAMESPACE.into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        match self.client.create("", &ns).await {
            Ok(_) | Err(berth_client::ClientError::AlreadyExists(_)) => {}
            Err(e) => return Err(e).context("creating the lease namespace"),
        }
        let now = format_micro_time(SystemClock.now_micros());
        for name in names {
            let lease = Lease {
                metadata: Some(ObjectMeta {
                    name: format!("{}{name}", self.lease_prefix),
                    namespace: berth_scheduler::DEFAULT_LEASE_NAMESPACE.into(),
                    ..Default::default()
                }),
                spec: Some(LeaseSpec {
                    holder_identity: Some(name.clone()),
                    lease_duration_seconds: Some(30),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now.clone()),
                    ..Default::default()
                }),
                ..Default::default()
            };
            match self
                .client
                .create(berth_scheduler::DEFAULT_LEASE_NAMESPACE, &lease)
                .await
            {
                Ok(_) | Err(berth_client::ClientError::AlreadyExists(_)) => {}
                Err(e) => return Err(e).context("creating a scheduler lease"),
            }
        }
        Ok(())
    }

    fn instance(&self, name: &str, policy: Policy) -> anyhow::Result<Scheduler> {
        let mut cfg = SchedulerConfig::new(name);
        cfg.scheduler_name = self.scheduler_name.clone();
        cfg.lease_prefix = self.lease_prefix.clone();
        cfg.lease_duration = Duration::from_secs(30);
        cfg.algorithm.policy = policy;
        cfg.algorithm.percentage_of_nodes_to_score = self.a.nodes_percentage;
        let client = ResourceClient::new(
            &self.a.server.servers,
            Duration::from_millis(self.a.server.request_timeout_ms),
        )?;
        Ok(Scheduler::start(client, cfg, Arc::new(SystemClock))?)
    }

    async fn mark_running(&self, pods: Vec<Pod>) -> anyhow::Result<f64> {
        let start = Instant::now();
        let pods = Arc::new(pods);
        let c = self.client.clone();
        for_each(pods.len(), move |i| {
            let (c, pods) = (c.clone(), pods.clone());
            async move {
                let mut p = pods[i].clone();
                let st = p.status.get_or_insert_with(Default::default);
                st.phase = "Running".into();
                c.update_status(&p).await.context("marking a pod Running")?;
                Ok(())
            }
        })
        .await?;
        Ok(start.elapsed().as_secs_f64())
    }

    async fn cleanup(&self, instances: &[String]) -> anyhow::Result<()> {
        let pods = self
            .client
            .list_all::<Pod>(&self.ns, &ListParams::default())
            .await?
            .items;
        let names: Arc<Vec<String>> = Arc::new(
            pods.iter()
                .map(|p| p.metadata.as_ref().map_or(String::new(), |m| m.name.clone()))
                .collect(),
        );
        let now = DeleteOptions {
            grace_period_seconds: Some(0),
            ..Default::default()
        };
        let (c, ns, opts) = (self.client.clone(), self.ns.clone(), now.clone());
        for_each(names.len(), move |i| {
            let (c, ns, names, opts) = (c.clone(), ns.clone(), names.clone(), opts.clone());
            async move {
                c.delete::<Pod>(&ns, &names[i], opts)
                    .await
                    .context("deleting a pod")?;
                Ok(())
            }
        })
        .await?;
        let c = self.client.clone();
        let nodes: Arc<Vec<String>> = Arc::new((0..self.a.nodes).map(|i| self.node_name(i)).collect());
        for_each(nodes.len(), move |i| {
            let (c, nodes) = (c.clone(), nodes.clone());
            async move {
                c.delete::<Node>("", &nodes[i], DeleteOptions::default())
                    .await
                    .context("deleting a node")?;
                Ok(())
            }
        })
        .await?;
        for name in instances {
            let lease = format!("{}{name}", self.lease_prefix);
            let _ = self
                .client
                .delete::<Lease>(berth_scheduler::DEFAULT_LEASE_NAMESPACE, &lease, now.clone())
                .await;
        }
        self.client
            .delete::<Namespace>("", &self.ns, now)
            .await
            .context("deleting the bench namespace")?;
        Ok(())
    }
}

fn quantity(s: &str, flag: &str) -> anyhow::Result<Quantity> {
    Quantity::parse(s).map_err(|e| anyhow::anyhow!("{flag}: {e}"))
}

/// Nodes needed at least: max over resources of ceil(sum of requests / node capacity).
fn lower_bound(sizes: &[(i64, i64)], node_cpu_milli: i64, node_mem_mib: i64, node_pods: i64) -> usize {
    let cpu: i64 = sizes.iter().map(|s| s.0).sum();
    let mem: i64 = sizes.iter().map(|s| s.1).sum();
    let pods = sizes.len() as i64;
    let need = |total: i64, cap: i64| if cap <= 0 { 0 } else { (total + cap - 1) / cap };
    need(cpu, node_cpu_milli)
        .max(need(mem, node_mem_mib))
        .max(need(pods, node_pods)) as usize
}

async fn one_run(
    a: &SchedulerBenchArgs,
    client: &ResourceClient,
    instances: usize,
    policy_name: &str,
    sizes: &[(i64, i64)],
) -> anyhow::Result<RunResult> {
    let policy: Policy = policy_name
        .parse()
        .map_err(|e| anyhow::anyhow!("--policies: {e}"))?;
    let id = format!("{:08x}", rand::random::<u32>());
    let run = Run {
        a,
        client: client.clone(),
        ns: format!("bench-sched-{id}"),
        scheduler_name: format!("bench-scheduler-{id}"),
        lease_prefix: format!("bench-scheduler-{id}-"),
        id,
    };
    eprintln!(
        "run {}: {instances} instance(s), {policy_name}: creating {} nodes and {} pods",
        run.id, a.nodes, a.pods
    );
    client
        .create(
            "",
            &Namespace {
                metadata: Some(ObjectMeta {
                    name: run.ns.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .await
        .context("creating the bench namespace")?;
    run.create_nodes().await?;
    run.create_pods(sizes).await?;
    let names: Vec<String> = (0..instances).map(|i| format!("bench-{i}")).collect();
    run.announce(&names).await?;
    let start = Instant::now();
    let scheds = names
        .iter()
        .map(|n| run.instance(n, policy))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let total = || -> u64 {
        scheds
            .iter()
            .map(|s| s.stats().bound.load(Ordering::Relaxed))
            .sum()
    };
    let deadline = start + Duration::from_secs(a.timeout_secs);
    while total() < a.pods as u64 && Instant::now() < deadline {
        tokio::time::sleep(POLL).await;
    }
    let seconds = start.elapsed().as_secs_f64();
    let bound = total();
    let sum = |f: fn(&berth_scheduler::SchedulerStats) -> u64| -> u64 {
        scheds.iter().map(|s| f(&s.stats())).sum()
    };
    let node_conflicts = sum(|s| s.node_conflicts.load(Ordering::Relaxed));
    let pod_conflicts = sum(|s| s.pod_conflicts.load(Ordering::Relaxed));
    drop(scheds);
    let pods = client
        .list_all::<Pod>(&run.ns, &ListParams::default())
        .await?
        .items;
    let (nodes_used, overcommitted) = placement(a, &pods)?;
    let cpu = quantity(&a.node_cpu, "--node-cpu")?.milli_value() as i64;
    let mem_mib = (quantity(&a.node_memory, "--node-memory")?.value() >> 20) as i64;
    let lb = lower_bound(sizes, cpu, mem_mib, a.node_pods);
    let mark_running_seconds = if a.mark_running {
        let bound_pods: Vec<Pod> = pods
            .into_iter()
            .filter(|p| p.spec.as_ref().is_some_and(|s| !s.node_name.is_empty()))
            .collect();
        Some(run.mark_running(bound_pods).await?)
    } else {
        None
    };
    run.cleanup(&names).await?;
    if bound < a.pods as u64 {
        bail!(
            "run {}: only {bound} of {} pods bound within --timeout-secs {}",
            run.id,
            a.pods,
            a.timeout_secs
        );
    }
    Ok(RunResult {
        instances,
        policy: policy_name.to_string(),
        pods: a.pods,
        bound,
        seconds,
        pods_per_sec: bound as f64 / seconds,
        node_conflicts,
        pod_conflicts,
        nodes_used,
        nodes_lower_bound: lb,
        packing_ratio: nodes_used as f64 / lb.max(1) as f64,
        overcommitted_nodes: overcommitted,
        mark_running_seconds,
    })
}

/// (nodes holding pods, nodes whose bound requests exceed their capacity).
fn placement(a: &SchedulerBenchArgs, pods: &[Pod]) -> anyhow::Result<(usize, usize)> {
    let cpu_cap = quantity(&a.node_cpu, "--node-cpu")?.milli_value();
    let mem_cap = quantity(&a.node_memory, "--node-memory")?.value();
    let mut per_node: HashMap<&str, (i128, i128, i64)> = HashMap::new();
    for p in pods {
        let Some(spec) = p.spec.as_ref().filter(|s| !s.node_name.is_empty()) else {
            continue;
        };
        let e = per_node.entry(spec.node_name.as_str()).or_default();
        for c in &spec.containers {
            let r = c.resources.as_ref().map(|r| &r.requests);
            let q = |k: &str| r.and_then(|r| r.get(k)).and_then(|s| Quantity::parse(s).ok());
            e.0 += q("cpu").map_or(0, |q| q.milli_value());
            e.1 += q("memory").map_or(0, |q| q.value());
        }
        e.2 += 1;
    }
    let over = per_node
        .values()
        .filter(|(c, m, n)| *c > cpu_cap || *m > mem_cap || *n > a.node_pods)
        .count();
    Ok((per_node.len(), over))
}

pub async fn run(a: &SchedulerBenchArgs) -> anyhow::Result<BenchResult> {
    if a.nodes == 0 || a.pods == 0 || a.instances.contains(&0) {
        bail!("--nodes, --pods and every --instances count must be at least 1");
    }
    let client = ResourceClient::new(
        &a.server.servers,
        Duration::from_millis(a.server.request_timeout_ms),
    )?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(a.seed);
    let sizes: Vec<(i64, i64)> = (0..a.pods).map(|_| pod_size(&mut rng)).collect();
    let mut runs = Vec::new();
    for policy in &a.policies {
        for &n in &a.instances {
            let r = one_run(a, &client, n, policy, &sizes).await?;
            println!(
                "{} instance(s), {}: {} pods bound in {:.2}s = {:.0} pods/s ({} node conflicts); {} nodes used, lower bound {} (x{:.2}); {} overcommitted",
                r.instances, r.policy, r.bound, r.seconds, r.pods_per_sec, r.node_conflicts,
                r.nodes_used, r.nodes_lower_bound, r.packing_ratio, r.overcommitted_nodes
            );
            runs.push(r);
        }
    }
    Ok(BenchResult {
        nodes: a.nodes,
        pods: a.pods,
        node_capacity: map(&[
            ("cpu", a.node_cpu.clone()),
            ("memory", a.node_memory.clone()),
            ("pods", a.node_pods.to_string()),
        ]),
        method: "hollow nodes; N scheduler instances in the bench process against --server, timed from their start (cold informer caches) to the last bind",
        runs,
    })
}
