//! `berth bench podstart`: pod start latency on a warm node, against runc as the floor.
//!
//! Against a running server and one running agent (it starts neither; see
//! scripts/bench-podstart.sh): a first pod warms the node (the image unpacked, the runtime's
//! pages cached) and is deleted; the agent's RSS is read idle; then `--pods` pods (`sleep`)
//! are created one after another, bound to `--node` (no scheduler in the path), each timed
//! from the create call until a watch on the namespace shows it Running; the RSS is read with
//! them all running; they are deleted. The floor: the same container started `--pods` times
//! with `runc run --detach` from the same shape of bundle the agent writes (an overlayfs of
//! the image's unpacked layers from the agent's store, the agent's `config.json`, fresh
//! namespaces), each timed from the overlay mount until runc returns (the process started).

use crate::ServerArgs;
use anyhow::{bail, Context};
use berth_client::{ListParams, ResourceClient, WatchEvent};
use berth_node::image::ImageStore;
use berth_node::runtime::{oci, BindMount, ContainerConfig};
use berth_proto::apiv1;
use berth_proto::corev1::{Namespace, Pod};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// How long one pod may take to be Running before the bench gives up.
const POD_RUNNING_TIMEOUT: Duration = Duration::from_secs(120);
/// How long deleting the bench's pods may take.
const DELETE_TIMEOUT: Duration = Duration::from_secs(120);
/// Pause before reading the idle RSS (the warm pod's teardown finishing).
const IDLE_SETTLE: Duration = Duration::from_secs(2);

#[derive(clap::Args, Clone, Debug)]
pub struct PodStartArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// The node (a running `berth agent`) the pods are bound to.
    #[arg(long)]
    pub node: String,
    /// Pods started (one after another) and runc containers started.
    #[arg(long, default_value_t = 50)]
    pub pods: usize,
    /// The image, present in the agent's store.
    #[arg(long, default_value = "busybox:1.36")]
    pub image: String,
    /// The agent's data dir: the runc floor runs from the image unpacked in its store.
    #[arg(long, default_value = "./berth-data/agent")]
    pub agent_data_dir: PathBuf,
    /// The agent's PID, for its RSS (VmRSS) idle and with the pods.
    #[arg(long)]
    pub agent_pid: Option<u32>,
    /// The runc binary of the floor (empty: no floor).
    #[arg(long, default_value = "runc")]
    pub runc: String,
    /// Cgroup parent of the floor's containers.
    #[arg(long, default_value = "berth-bench-runc")]
    pub runc_cgroup_parent: String,
    /// Namespace to create and work in (default: podstart-<unix seconds>).
    #[arg(long)]
    pub namespace: Option<String>,
    /// Write the result as JSON here.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Serialize, Debug, Default)]
pub struct Latencies {
    pub samples_ms: Vec<f64>,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Latencies {
    fn from_us(mut us: Vec<u64>) -> Latencies {
        us.sort_unstable();
        let pct = |p: f64| -> f64 {
            if us.is_empty() {
                return 0.0;
            }
            let idx = ((us.len() as f64 * p).ceil() as usize).clamp(1, us.len()) - 1;
            us[idx] as f64 / 1000.0
        };
        Latencies {
            p50_ms: pct(0.5),
            p99_ms: pct(0.99),
            max_ms: pct(1.0),
            samples_ms: us.iter().map(|u| *u as f64 / 1000.0).collect(),
        }
    }
}

#[derive(Serialize, Debug, Default)]
pub struct PodStartResult {
    pub node: String,
    pub image: String,
    pub pods: usize,
    /// Create call -> Running seen by a watch, per pod.
    pub berth: Latencies,
    /// Overlay mount + bundle + `runc run --detach`, per container.
    pub runc: Option<Latencies>,
    pub ratio_p50: Option<f64>,
    pub ratio_p99: Option<f64>,
    pub agent_rss_kib_idle: Option<u64>,
    pub agent_rss_kib_with_pods: Option<u64>,
}

fn read_rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("--agent-pid {pid}: reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .context("no VmRSS line in /proc/<pid>/status")
}

fn bench_pod(name: &str, node: &str, image: &str) -> anyhow::Result<Pod> {
    let p = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "nodeName": node,
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "app", "image": image, "imagePullPolicy": "IfNotPresent",
                            "command": ["sleep", "3600"]}]
        }
    });
    Ok(serde_json::from_value(p)?)
}

fn running(p: &Pod) -> bool {
    p.status.as_ref().is_some_and(|s| s.phase == "Running")
}

pub async fn run(a: PodStartArgs) -> anyhow::Result<()> {
    if a.pods == 0 {
        bail!("--pods must be at least 1");
    }
    let timeout = Duration::from_millis(a.server.request_timeout_ms);
    let ns = a.namespace.clone().unwrap_or_else(|| {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        format!("podstart-{secs}")
    });
    let rc = ResourceClient::new(&a.server.servers, timeout)?;
    let mut nso = Namespace::default();
    nso.metadata.get_or_insert_with(Default::default).name = ns.clone();
    rc.create("", &nso)
        .await
        .context("creating the bench namespace")?;
    // The watch carries no deadline: the request timeout would end it.
    let watcher = ResourceClient::new(&a.server.servers, Duration::from_secs(24 * 3600))?;

    // Warm-up: one pod run and removed.
    let mut w = open_watch(&rc, &watcher, &ns).await?;
    start_pod(&rc, &mut w, &ns, "warm", &a).await?;
    delete_pods(&rc, &ns, &["warm".to_string()]).await?;
    tokio::time::sleep(IDLE_SETTLE).await;
    let rss_idle = a.agent_pid.map(read_rss_kib).transpose()?;

    let mut berth_us = Vec::with_capacity(a.pods);
    let mut names = Vec::with_capacity(a.pods);
    for i in 0..a.pods {
        let name = format!("p{i}");
        berth_us.push(start_pod(&rc, &mut w, &ns, &name, &a).await?);
        names.push(name);
    }
    let rss_pods = a.agent_pid.map(read_rss_kib).transpose()?;
    delete_pods(&rc, &ns, &names).await?;
    let _ = rc
        .delete::<Namespace>("", &ns, apiv1::DeleteOptions::default())
        .await;

    let runc = if a.runc.is_empty() {
        None
    } else {
        Some(Latencies::from_us(runc_floor(&a).await?))
    };
    let berth = Latencies::from_us(berth_us);
    let result = PodStartResult {
        node: a.node.clone(),
        image: a.image.clone(),
        pods: a.pods,
        ratio_p50: runc.as_ref().map(|r| berth.p50_ms / r.p50_ms.max(f64::EPSILON)),
        ratio_p99: runc.as_ref().map(|r| berth.p99_ms / r.p99_ms.max(f64::EPSILON)),
        berth,
        runc,
        agent_rss_kib_idle: rss_idle,
        agent_rss_kib_with_pods: rss_pods,
    };
    println!(
        "berth: {} pods create -> Running p50 {:.1} ms p99 {:.1} ms max {:.1} ms",
        result.pods, result.berth.p50_ms, result.berth.p99_ms, result.berth.max_ms
    );
    if let Some(r) = &result.runc {
        println!(
            "runc:  p50 {:.1} ms p99 {:.1} ms max {:.1} ms; ratio p50 {:.2}x p99 {:.2}x",
            r.p50_ms,
            r.p99_ms,
            r.max_ms,
            result.ratio_p50.unwrap_or(0.0),
            result.ratio_p99.unwrap_or(0.0)
        );
    }
    if let (Some(i), Some(p)) = (rss_idle, rss_pods) {
        println!("agent RSS: {i} KiB idle, {p} KiB with {} pods", a.pods);
    }
    if let Some(path) = &a.out {
        std::fs::write(path, serde_json::to_vec_pretty(&result)?)
            .with_context(|| format!("--out {}", path.display()))?;
    }
    Ok(())
}

async fn open_watch(
    rc: &ResourceClient,
    watcher: &ResourceClient,
    ns: &str,
) -> anyhow::Result<berth_client::ResourceWatch<Pod>> {
    let from = rc
        .list::<Pod>(
            ns,
            &ListParams {
                limit: 1,
                ..Default::default()
            },
        )
        .await?
        .resource_version;
    Ok(watcher.watch::<Pod>(
        ns,
        &ListParams {
            resource_version: from,
            ..Default::default()
        },
    ))
}

/// Creates pod `name` and reads the watch until it is Running; returns the microseconds.
async fn start_pod(
    rc: &ResourceClient,
    w: &mut berth_client::ResourceWatch<Pod>,
    ns: &str,
    name: &str,
    a: &PodStartArgs,
) -> anyhow::Result<u64> {
    let pod = bench_pod(name, &a.node, &a.image)?;
    let t = Instant::now();
    rc.create(ns, &pod)
        .await
        .with_context(|| format!("creating pod {name}"))?;
    let deadline = tokio::time::Instant::now() + POD_RUNNING_TIMEOUT;
    loop {
        let ev = tokio::time::timeout_at(deadline, w.next())
            .await
            .with_context(|| format!("pod {name} not Running within {POD_RUNNING_TIMEOUT:?}"))?
            .context("the watch ended")?;
        if let WatchEvent::Added(p) | WatchEvent::Modified(p) = ev {
            let is_it = p.metadata.as_ref().is_some_and(|m| m.name == name);
            if is_it && running(&p) {
                return Ok(t.elapsed().as_micros() as u64);
            }
        }
    }
}

async fn delete_pods(rc: &ResourceClient, ns: &str, names: &[String]) -> anyhow::Result<()> {
    for n in names {
        rc.delete::<Pod>(ns, n, apiv1::DeleteOptions::default())
            .await
            .with_context(|| format!("deleting pod {n}"))?;
    }
    let deadline = Instant::now() + DELETE_TIMEOUT;
    loop {
        let left = rc.list::<Pod>(ns, &ListParams::default()).await?.items.len();
        if left == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{left} bench pods still there after {DELETE_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One floor container: its directory (overlay, bundle) and id.
struct FloorContainer {
    dir: PathBuf,
    id: String,
}

/// Starts `--pods` containers with runc from the agent's unpacked image, timing each; then
/// stops and removes them all.
async fn runc_floor(a: &PodStartArgs) -> anyhow::Result<Vec<u64>> {
    let store = ImageStore::open(&a.agent_data_dir.join("images"))?;
    let image = store
        .resolve(&a.image)
        .with_context(|| format!("--image {} in {}", a.image, a.agent_data_dir.display()))?;
    let work = a
        .agent_data_dir
        .join(format!("bench-runc-{}", std::process::id()));
    let state_root = work.join("state");
    std::fs::create_dir_all(&state_root)?;
    let mut started = Vec::new();
    let mut lat = Vec::with_capacity(a.pods);
    let mut result = Ok(());
    for i in 0..a.pods {
        let c = FloorContainer {
            dir: work.join(format!("c{i}")),
            id: format!("podstart-{}-{i}", std::process::id()),
        };
        let t = Instant::now();
        match start_floor(a, &image, &state_root, &c).await {
            Ok(()) => lat.push(t.elapsed().as_micros() as u64),
            Err(e) => result = Err(e),
        }
        started.push(c);
        if result.is_err() {
            break;
        }
    }
    for c in &started {
        let runc = |args: &[&str]| {
            std::process::Command::new(&a.runc)
                .arg("--root")
                .arg(&state_root)
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
        };
        let _ = runc(&["kill", &c.id, "KILL"]);
        let _ = runc(&["delete", "--force", &c.id]);
        let _ = berth_node::mount::unmount(&c.dir.join("rootfs"));
    }
    let _ = std::fs::remove_dir_all(&work);
    result.map(|_| lat)
}

/// Overlay, bundle (the agent's spec with fresh namespaces), `runc run --detach`.
async fn start_floor(
    a: &PodStartArgs,
    image: &berth_node::image::ResolvedImage,
    state_root: &Path,
    c: &FloorContainer,
) -> anyhow::Result<()> {
    let rootfs = c.dir.join("rootfs");
    berth_node::mount::overlay(
        &image.layer_dirs,
        &c.dir.join("upper"),
        &c.dir.join("work"),
        &rootfs,
    )?;
    for f in ["hosts", "hostname"] {
        std::fs::write(c.dir.join(f), "127.0.0.1\tlocalhost\n")?;
    }
    let bundle = c.dir.join("bundle");
    std::fs::create_dir_all(&bundle)?;
    let cfg = ContainerConfig {
        id: c.id.clone(),
        state_root: state_root.to_path_buf(),
        bundle: bundle.clone(),
        rootfs,
        args: vec!["sleep".into(), "3600".into()],
        env: image.config.env.clone().unwrap_or_default(),
        cwd: String::new(),
        hostname: c.id.clone(),
        namespaces: berth_node::netns::PodNamespaces::paths(&c.dir, "unused"),
        cgroups_path: format!("/{}/{}", a.runc_cgroup_parent, c.id),
        limits: berth_node::cgroups::limits(None)?,
        mounts: ["hosts", "hostname"]
            .iter()
            .map(|f| BindMount {
                source: c.dir.join(f),
                destination: format!("/etc/{f}"),
                read_only: false,
            })
            .collect(),
        log_path: c.dir.join("log"),
        log_bytes_max: berth_node::runtime::monitor::LOG_BYTES_MAX_DEFAULT,
        oom_counter: None,
    };
    let mut spec = oci::spec(&cfg);
    // The pod's shared namespaces do not exist here: runc makes fresh ones.
    spec["linux"]["namespaces"] = serde_json::json!([
        {"type": "pid"}, {"type": "mount"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"}
    ]);
    std::fs::write(bundle.join("config.json"), serde_json::to_vec_pretty(&spec)?)?;
    // runc's stderr goes to a file: a pipe would be inherited by the detached container and
    // never reach end of file.
    let err_path = c.dir.join("runc.err");
    let err = std::fs::File::create(&err_path)?;
    let st = tokio::process::Command::new(&a.runc)
        .arg("--root")
        .arg(state_root)
        .args(["run", "--detach", "--bundle"])
        .arg(&bundle)
        .arg(&c.id)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err)
        .status()
        .await
        .with_context(|| format!("--runc {}", a.runc))?;
    if !st.success() {
        bail!(
            "runc run {}: {}",
            c.id,
            std::fs::read_to_string(&err_path).unwrap_or_default().trim()
        );
    }
    Ok(())
}
