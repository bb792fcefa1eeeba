//! berth-node: the node agent (`berth agent`).
//!
//! Role: register this machine as a Node, keep its node Lease renewed and its conditions
//! reported, and run the pods bound to it: a sandbox per pod (network, IPC and UTS namespaces
//! bound under the agent's run dir, a parent cgroup), containers from the node's image store
//! (overlayfs rootfs, own mount and PID namespaces) through a [`runtime::Runtime`], volumes,
//! env, restart back-off, and pod status written back through UpdateStatus only. Its own gRPC
//! API ([`agent_api`], on `Config::agent_addr`, published as the Node's InternalIP and
//! daemonEndpoints.kubeletEndpoint.Port) serves container logs ([`logs`]), exec and image
//! import to the API server's Proxy.
//!
//! Invariants: one worker task per pod, so at most one sync of a pod runs at a time; syncs are
//! level-triggered (desired spec vs what runs) and idempotent; the agent sees only the pods
//! bound to it and only the ConfigMaps and Secrets those pods reference; secret contents live
//! on tmpfs only; everything a pod created on the machine (mounts, namespaces, cgroups) is gone
//! once its worker has finished tearing it down; containers outlive the agent (each has a
//! monitor process of its own, see [`runtime::monitor`]), and an agent started again adopts the
//! pods the API still has (same uid) without restarting them and removes the others.
//!
//! It deliberately does not know: command-line flags, how the control plane stores objects,
//! pod networking beyond the [`netns::PodNetwork`] trait and [`pod_network`]'s use of the net
//! crate's bridge (addresses, veths and routes are the net crate's).

pub mod agent_api;
pub mod backoff;
pub mod cgroups;
pub mod containers;
pub mod env;
mod error;
pub mod gc;
pub mod image;
pub mod lease;
pub mod logs;
pub mod mount;
pub mod netns;
pub mod node_status;
pub mod objects;
pub mod pod_network;
pub mod pod_state;
pub mod pod_worker;
pub mod probes;
pub mod runtime;
pub mod status;
pub mod volumes;

pub use error::Error;

use berth_client::leader::{format_micro_time, Clock, SystemClock};
use berth_client::{InformerEvent, ListParams, ResourceClient};
use berth_proto::corev1::{Node, Pod};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// How long a node lease lasts without renewal (the kubelet's default).
pub const DEFAULT_LEASE_DURATION_SECONDS: i32 = 40;
/// Pause between attempts to register the Node while the control plane is unreachable.
const REGISTER_RETRY: Duration = Duration::from_millis(500);

/// The agent's settings (the CLI builds this from flags).
#[derive(Debug, Clone)]
pub struct Config {
    pub node_name: String,
    pub servers: Vec<String>,
    pub request_timeout: Duration,
    /// Images, container writable layers, emptyDir and configMap volumes, logs.
    pub data_dir: PathBuf,
    /// Namespace files and the pods' tmpfs mounts (`/run/berth/<node>` by default).
    pub run_dir: PathBuf,
    /// Mount point of the cgroup filesystem(s).
    pub cgroup_root: PathBuf,
    /// The agent's cgroup, relative to each hierarchy's root (`berth/<node>` by default).
    pub cgroup_parent: String,
    pub labels: BTreeMap<String, String>,
    /// Resources replacing what the machine reports (`cpu`, `memory`, `pods`).
    pub capacity: BTreeMap<String, String>,
    /// Allocatable overrides (default: the capacity).
    pub allocatable: BTreeMap<String, String>,
    /// The node's address (default: the first non-loopback IPv4 address, else 127.0.0.1).
    pub node_ip: Option<IpAddr>,
    pub lease_renew_interval: Duration,
    pub lease_duration_seconds: i32,
    pub node_status_interval: Duration,
    /// The container runtime.
    pub runtime: RuntimeKind,
    /// pids.max of each pod's cgroup (None = unlimited).
    pub pod_pids_max: Option<u64>,
    /// The pod network: None = loopback only (or what [`Agent::with_network`] sets); Some =
    /// the bridge network, once the node has a pod CIDR (state under `<data_dir>/net`).
    pub bridge: Option<pod_network::BridgeSettings>,
    /// The container monitor's command (program and leading arguments, `[berth, runtime]`);
    /// empty = the libcontainer helper's (required with runc).
    pub monitor: Vec<String>,
    /// Cap of a container's current log file before rotation.
    pub container_log_bytes_max: u64,
    /// Garbage collection of container instances, logs and images.
    pub gc: gc::GcPolicy,
    /// Where the agent's API (logs, exec, image import) listens: `host:port`, or `:port` on the
    /// node's IP; None = `<node IP>:10250`. Port 0 takes a free port; the Node publishes the
    /// port it got (the API server dials the Node's InternalIP and that port).
    pub agent_addr: Option<String>,
    /// Registry pulls: insecure (plain HTTP) registries, an extra CA file.
    pub registry: image::registry::RegistrySettings,
}

impl Config {
    /// Defaults for node `name`: run dir `/run/berth/<name>`, cgroup `berth/<name>`.
    pub fn new(name: &str, servers: Vec<String>, data_dir: PathBuf) -> Config {
        Config {
            node_name: name.into(),
            servers,
            request_timeout: Duration::from_secs(5),
            data_dir,
            run_dir: PathBuf::from("/run/berth").join(name),
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
            cgroup_parent: format!("berth/{name}"),
            labels: BTreeMap::new(),
            capacity: BTreeMap::new(),
            allocatable: BTreeMap::new(),
            node_ip: None,
            lease_renew_interval: Duration::from_secs(1),
            lease_duration_seconds: DEFAULT_LEASE_DURATION_SECONDS,
            node_status_interval: Duration::from_secs(10),
            runtime: RuntimeKind::Runc(PathBuf::from("runc")),
            pod_pids_max: Some(4096),
            bridge: None,
            monitor: Vec::new(),
            container_log_bytes_max: runtime::monitor::LOG_BYTES_MAX_DEFAULT,
            gc: gc::GcPolicy::default(),
            agent_addr: None,
            registry: image::registry::RegistrySettings::default(),
        }
    }

    /// The monitor command in effect.
    pub fn monitor_command(&self) -> Vec<String> {
        match (&self.runtime, self.monitor.is_empty()) {
            (RuntimeKind::Libcontainer(helper), true) => helper.clone(),
            _ => self.monitor.clone(),
        }
    }

    fn validate(&self) -> Result<(), Error> {
        let n = &self.node_name;
        let ok = !n.is_empty()
            && n.len() <= 253
            && n.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
            && !n.starts_with(['-', '.'])
            && !n.ends_with(['-', '.']);
        if !ok {
            return Err(Error::Config(format!(
                "--name {n:?}: a node name is lowercase letters, digits, '-' and '.'"
            )));
        }
        if self.servers.is_empty() {
            return Err(Error::Config("--server: at least one server address".into()));
        }
        if matches!(&self.runtime, RuntimeKind::Libcontainer(h) if h.is_empty()) {
            return Err(Error::Config(
                "the libcontainer runtime needs its helper command".into(),
            ));
        }
        if self.monitor_command().is_empty() {
            return Err(Error::Config(
                "the container monitor needs its command (`berth runtime`)".into(),
            ));
        }
        if self.container_log_bytes_max == 0 {
            return Err(Error::Config("--container-log-max-bytes must be positive".into()));
        }
        self.gc.validate()?;
        if let Some(b) = &self.bridge {
            b.validate()?;
        }
        self.registry.validate()?;
        if self.lease_renew_interval.is_zero() {
            return Err(Error::Config("--lease-renew-interval-ms must be positive".into()));
        }
        Ok(())
    }
}

/// Which runtime starts containers.
#[derive(Debug, Clone, PartialEq)]
pub enum RuntimeKind {
    /// youki's libcontainer, embedded, run through a helper command of the agent's own binary
    /// (program and leading arguments, e.g. `[/usr/bin/berth, runtime]`).
    Libcontainer(Vec<String>),
    /// A runc-compatible binary.
    Runc(PathBuf),
}

/// RFC 3339 with seconds, as Kubernetes writes most timestamps.
pub fn rfc3339(micros: i64) -> String {
    let s = format_micro_time(micros);
    format!("{}Z", &s[..19])
}

/// RFC 3339 with microseconds (Lease times).
pub fn rfc3339_micro(micros: i64) -> String {
    format_micro_time(micros)
}

/// What every pod worker shares.
pub struct Shared {
    pub cfg: Config,
    pub client: ResourceClient,
    pub images: Arc<image::ImageStore>,
    pub puller: Arc<image::registry::Puller>,
    pub runtime: Arc<dyn runtime::Runtime>,
    pub cgroups: cgroups::Cgroups,
    pub network: Arc<dyn netns::PodNetwork>,
    pub objects: objects::ObjectCache,
    pub clock: Arc<dyn Clock>,
    pub host_ip: String,
    /// The container instances running now.
    pub running: containers::Running,
    /// The port the agent's API listens on (published as the Node's kubelet endpoint).
    pub agent_port: u16,
}

/// The node agent.
pub struct Agent {
    cfg: Config,
    clock: Arc<dyn Clock>,
    network: Arc<dyn netns::PodNetwork>,
    runtime: Arc<dyn runtime::Runtime>,
}

/// The node's address: configured, else the first non-loopback IPv4 address, else loopback.
pub fn host_ip(cfg: &Config) -> IpAddr {
    if let Some(ip) = cfg.node_ip {
        return ip;
    }
    let mut found = None;
    // SAFETY: getifaddrs/freeifaddrs pair; entries read only while the list lives.
    unsafe {
        let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
        if libc::getifaddrs(&mut list) == 0 {
            let mut p = list;
            while !p.is_null() && found.is_none() {
                let a = (*p).ifa_addr;
                if !a.is_null() && i32::from((*a).sa_family) == libc::AF_INET {
                    let sin = &*(a as *const libc::sockaddr_in);
                    let ip = std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                    if !ip.is_loopback() {
                        found = Some(IpAddr::V4(ip));
                    }
                }
                p = (*p).ifa_next;
            }
            libc::freeifaddrs(list);
        }
    }
    found.unwrap_or(IpAddr::from([127, 0, 0, 1]))
}

/// The address the agent's API binds: `configured` (`:port` meaning the node's IP), else the
/// node's IP and the kubelet's port.
pub fn agent_listen_addr(configured: Option<&str>, node_ip: IpAddr) -> String {
    let on_node_ip = |port: u16| std::net::SocketAddr::new(node_ip, port).to_string();
    match configured {
        None => on_node_ip(berth_client::agent::AGENT_PORT_DEFAULT),
        Some(a) => match a.strip_prefix(':').map(str::parse::<u16>) {
            Some(Ok(port)) => on_node_ip(port),
            _ => a.to_string(),
        },
    }
}

/// The pod uids that have something on the node: pod tmpfs or data dirs, namespace files.
pub fn local_pod_uids(cfg: &Config) -> Vec<String> {
    let mut uids: Vec<String> = Vec::new();
    for dir in [cfg.run_dir.join("pods"), cfg.data_dir.join("pods")] {
        if let Ok(rd) = std::fs::read_dir(&dir) {
            uids.extend(rd.flatten().map(|e| e.file_name().to_string_lossy().to_string()));
        }
    }
    if let Ok(rd) = std::fs::read_dir(cfg.run_dir.join("netns")) {
        uids.extend(rd.flatten().map(|e| {
            e.file_name()
                .to_string_lossy()
                .split('.')
                .next()
                .unwrap_or("")
                .to_string()
        }));
    }
    uids.retain(|u| !u.is_empty());
    uids.sort();
    uids.dedup();
    uids
}

/// Removes everything pod `uid` has on the node without a worker: kills its processes (the
/// pod cgroup's), removes its cgroups, namespace files, mounts, directories and logs. Its
/// container monitors end with their containers. The pod network is the caller's (detach/gc).
pub fn cleanup_pod(cfg: &Config, uid: &str) -> Result<(), Error> {
    let cg = cgroups::Cgroups::detect(&cfg.cgroup_root, &cfg.cgroup_parent);
    cg.remove_pod(uid)?;
    netns::remove(&netns::PodNamespaces::paths(&cfg.run_dir.join("netns"), uid))?;
    for d in [
        cfg.run_dir.join("pods").join(uid),
        cfg.data_dir.join("pods").join(uid),
    ] {
        mount::unmount_all_under(&d)?;
        if d.exists() {
            std::fs::remove_dir_all(&d).map_err(|e| Error::io(&d, e))?;
        }
    }
    // Log dirs are `<namespace>_<name>_<uid>`.
    let logs = cfg.data_dir.join("logs");
    let suffix = format!("_{uid}");
    for e in std::fs::read_dir(&logs).into_iter().flatten().flatten() {
        if e.file_name().to_string_lossy().ends_with(&suffix) {
            let p = e.path();
            std::fs::remove_dir_all(&p).map_err(|e| Error::io(&p, e))?;
        }
    }
    tracing::info!(pod = uid, "cleaned up a pod the API no longer has");
    Ok(())
}

/// Removes the pods on the node that are not in `keep` (deleted, or replaced by a pod with
/// another uid, while no agent ran); returns their uids. Adopted pods (`keep`) are untouched.
/// Every pod is tried; the first error is returned after.
pub fn cleanup_orphans(cfg: &Config, keep: &HashSet<String>) -> Result<Vec<String>, Error> {
    let gone: Vec<String> = local_pod_uids(cfg)
        .into_iter()
        .filter(|u| !keep.contains(u))
        .collect();
    let mut first_err = None;
    for uid in &gone {
        if let Err(e) = cleanup_pod(cfg, uid) {
            first_err.get_or_insert(e);
        }
    }
    first_err.map_or(Ok(gone), Err)
}

/// Removes everything every pod left on the node: processes and cgroups under the agent's
/// cgroup, namespace files, mounts, pod directories. Tests run it last (an agent at start
/// removes only the pods the API no longer has: [`cleanup_orphans`]).
pub fn cleanup_leftovers(cfg: &Config) -> Result<(), Error> {
    cleanup_orphans(cfg, &HashSet::new())?;
    mount::unmount_all_under(&cfg.run_dir)?;
    mount::unmount_all_under(&cfg.data_dir.join("pods"))?;
    for d in [cfg.run_dir.join("pods"), cfg.data_dir.join("pods")] {
        if d.exists() {
            std::fs::remove_dir_all(&d).map_err(|e| Error::io(&d, e))?;
        }
    }
    let cg = cgroups::Cgroups::detect(&cfg.cgroup_root, &cfg.cgroup_parent);
    cg.remove_parent();
    Ok(())
}

/// The uids of the pods the API has bound to this node (retried until the API answers).
async fn own_pod_uids(client: &ResourceClient, node: &str) -> HashSet<String> {
    let params = ListParams {
        field_selector: format!("spec.nodeName={node}"),
        ..ListParams::default()
    };
    loop {
        match client.list_all::<Pod>("", &params).await {
            Ok(l) => {
                return l
                    .items
                    .iter()
                    .filter_map(|p| p.metadata.as_ref().map(|m| m.uid.clone()))
                    .collect()
            }
            Err(e) => {
                tracing::warn!("listing the node's pods: {e}");
                tokio::time::sleep(REGISTER_RETRY).await;
            }
        }
    }
}

impl Agent {
    pub fn new(cfg: Config) -> Agent {
        let runtime = Arc::new(match &cfg.runtime {
            RuntimeKind::Runc(b) => runtime::oci::OciCli::runc(b.clone(), cfg.monitor_command()),
            RuntimeKind::Libcontainer(helper) => runtime::oci::OciCli {
                binary: PathBuf::from(helper.first().cloned().unwrap_or_default()),
                leading_args: helper.iter().skip(1).cloned().collect(),
                version: Some(runtime::youki::VERSION.into()),
                monitor: cfg.monitor_command(),
            },
        });
        Agent {
            cfg,
            clock: Arc::new(SystemClock),
            network: Arc::new(netns::LoopbackOnly),
            runtime,
        }
    }

    /// Replaces the pod network (default: [`netns::LoopbackOnly`]).
    pub fn with_network(mut self, n: Arc<dyn netns::PodNetwork>) -> Agent {
        self.network = n;
        self
    }

    /// Replaces the clock (back-off, timestamps).
    pub fn with_clock(mut self, c: Arc<dyn Clock>) -> Agent {
        self.clock = c;
        self
    }

    /// Runs until `shutdown` resolves. Pods keep running when the agent stops.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        let cfg = self.cfg.clone();
        cfg.validate()?;
        for d in [
            &cfg.data_dir,
            &cfg.run_dir.join("netns"),
            &cfg.run_dir.join("pods"),
        ] {
            std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
        }
        let client = ResourceClient::new(&cfg.servers, cfg.request_timeout)?;
        let images = Arc::new(image::ImageStore::open(&cfg.data_dir.join("images"))?);
        let puller = Arc::new(image::registry::Puller::new(cfg.registry.clone())?);
        let node_ip = host_ip(&cfg);
        let host_ip = node_ip.to_string();
        let agent_addr = agent_listen_addr(cfg.agent_addr.as_deref(), node_ip);
        let agent_listener = berth_client::listen::bind("--agent-addr", &agent_addr)
            .await
            .map_err(|e| Error::Config(e.to_string()))?;
        let agent_port = agent_listener
            .local_addr()
            .map_err(|e| Error::Config(format!("--agent-addr {agent_addr}: {e}")))?
            .port();
        loop {
            match node_status::register(&client, &cfg).await {
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!("registering node {}: {e}", cfg.node_name);
                    tokio::time::sleep(REGISTER_RETRY).await;
                }
            }
        }
        // Adoption: pods the API still has (same uid) keep running and their workers take
        // them over; what else a previous run left is removed.
        let keep = own_pod_uids(&client, &cfg.node_name).await;
        let c2 = cfg.clone();
        let keep2 = keep.clone();
        let gone = tokio::task::spawn_blocking(move || cleanup_orphans(&c2, &keep2))
            .await
            .map_err(|e| Error::Pod(e.to_string()))?;
        match gone {
            Ok(gone) => {
                tracing::info!(node = %cfg.node_name, removed = ?gone, "pods of an earlier run not in the API removed")
            }
            // Not fatal: the GC passes retry what is left.
            Err(e) => tracing::warn!(node = %cfg.node_name, "removing pods of an earlier run: {e}"),
        }
        let mut network = self.network.clone();
        let mut routes_task = None;
        if let Some(bridge) = &cfg.bridge {
            let own_ip = match node_ip {
                IpAddr::V4(ip) if !ip.is_loopback() => Some(ip),
                _ => None,
            };
            let state_dir = cfg.data_dir.join("net");
            let (bridge, task) =
                pod_network::start_bridge(client.clone(), &cfg.node_name, own_ip, bridge, state_dir, &keep)
                    .await?;
            network = Arc::new(pod_network::Bridge(bridge));
            routes_task = Some(task);
        }
        let (poke_tx, poke_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            cfg: cfg.clone(),
            client: client.clone(),
            images,
            puller,
            runtime: self.runtime.clone(),
            cgroups: cgroups::Cgroups::detect(&cfg.cgroup_root, &cfg.cgroup_parent),
            network,
            objects: objects::ObjectCache::new(client.clone(), poke_tx),
            clock: self.clock.clone(),
            host_ip: host_ip.clone(),
            running: containers::Running::default(),
            agent_port,
        });
        tracing::info!(node = %cfg.node_name, host_ip = %host_ip, cgroups = ?shared.cgroups.version(), "registered");
        tracing::info!(addr = %agent_addr, port = agent_port, "agent API listening");
        let api_task = tokio::spawn(agent_api::serve(agent_listener, shared.clone()));
        let lease_task = tokio::spawn(lease_loop(shared.clone()));
        let status_task = tokio::spawn(node_status_loop(shared.clone()));
        let r = pods_loop(shared, poke_rx, shutdown).await;
        lease_task.abort();
        status_task.abort();
        api_task.abort();
        if let Some(t) = routes_task {
            t.abort();
        }
        r
    }
}

async fn lease_loop(s: Arc<Shared>) {
    loop {
        if let Err(e) = lease::ensure_namespace(&s.client).await {
            tracing::warn!("node lease namespace: {e}");
            tokio::time::sleep(s.cfg.lease_renew_interval).await;
            continue;
        }
        break;
    }
    let mut l = lease::NodeLease::new(&s.cfg.node_name, s.cfg.lease_duration_seconds);
    let mut tick = tokio::time::interval(s.cfg.lease_renew_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = l.renew(&s.client, s.clock.as_ref()).await {
            tracing::warn!("node lease: {e}");
        }
    }
}

async fn node_status_loop(s: Arc<Shared>) {
    let version = s.runtime.version();
    let mut old = None;
    loop {
        let data_dir = s.cfg.data_dir.clone();
        let facts = tokio::task::spawn_blocking(move || node_status::machine_facts(&data_dir))
            .await
            .unwrap_or_default();
        let now = rfc3339(s.clock.now_micros());
        let mut st = node_status::status(&s.cfg, &facts, old.as_ref(), &s.host_ip, &version, &now);
        // Where the API server reaches this agent: InternalIP and this port, as the kubelet.
        st.daemon_endpoints = Some(berth_proto::corev1::NodeDaemonEndpoints {
            kubelet_endpoint: Some(berth_proto::corev1::DaemonEndpoint {
                port: i32::from(s.agent_port),
            }),
        });
        let node = Node {
            api_version: "v1".into(),
            kind: "Node".into(),
            metadata: Some(berth_proto::metav1::ObjectMeta {
                name: s.cfg.node_name.clone(),
                ..Default::default()
            }),
            spec: None,
            status: Some(st.clone()),
        };
        match s.client.update_status(&node).await {
            Ok(_) => old = Some(st),
            Err(berth_client::ClientError::NotFound(_)) => {
                // Deleted under us: register again.
                if let Err(e) = node_status::register(&s.client, &s.cfg).await {
                    tracing::warn!("re-registering node: {e}");
                }
                continue;
            }
            Err(e) => tracing::warn!("node status: {e}"),
        }
        tokio::time::sleep(s.cfg.node_status_interval).await;
    }
}

/// One garbage-collection pass (at most one at a time): pods on the node without a worker
/// and not in the API (deleted between the start-up list and the informer), then images.
async fn gc_pass(s: Arc<Shared>, local: Vec<String>, pods: Vec<Pod>, workers: HashSet<String>) {
    let mut known = workers;
    let mut images = HashSet::new();
    for p in &pods {
        known.insert(p.metadata.as_ref().map(|m| m.uid.clone()).unwrap_or_default());
        for c in p
            .spec
            .iter()
            .flat_map(|sp| sp.containers.iter().chain(&sp.init_containers))
        {
            images.insert(c.image.clone());
        }
    }
    for uid in local.into_iter().filter(|u| !known.contains(u)) {
        let ns = netns::PodNamespaces::paths(&s.cfg.run_dir.join("netns"), &uid);
        if let Err(e) = s.network.detach(&uid, &ns.net).await {
            tracing::warn!(pod = %uid, "network detach: {e}");
        }
        let cfg = s.cfg.clone();
        match tokio::task::spawn_blocking(move || cleanup_pod(&cfg, &uid)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("orphan pod cleanup: {e}"),
            Err(e) => tracing::warn!("orphan pod cleanup task: {e}"),
        }
    }
    let (store, policy, data_dir) = (s.images.clone(), s.cfg.gc.clone(), s.cfg.data_dir.clone());
    let r = tokio::task::spawn_blocking(move || {
        let mut usage = || gc::disk_used_percent(&data_dir);
        gc::collect_images(&store, &images, &policy, std::time::SystemTime::now(), &mut usage)
    })
    .await;
    match r {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::warn!("image gc: {e}"),
        Err(e) => tracing::warn!("image gc task: {e}"),
    }
}

/// Watches the pods bound to this node and keeps one worker per pod.
async fn pods_loop(
    s: Arc<Shared>,
    mut poke_rx: mpsc::UnboundedReceiver<String>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let params = ListParams {
        field_selector: format!("spec.nodeName={}", s.cfg.node_name),
        ..ListParams::default()
    };
    let (informer, mut events) = berth_client::Informer::<Pod>::start(s.client.clone(), "", params);
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<String>();
    let mut workers: HashMap<String, pod_worker::WorkerHandle> = HashMap::new();
    let mut gc_tick = tokio::time::interval(s.cfg.gc.interval);
    gc_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut gc_running: Option<tokio::task::JoinHandle<()>> = None;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            _ = gc_tick.tick() => {
                if gc_running.as_ref().is_none_or(|t| t.is_finished()) && informer.has_synced() {
                    // What is on the machine first, then who owns it: a pod whose worker starts
                    // after this listing cannot be in it, so it is never taken for an orphan.
                    let local = local_pod_uids(&s.cfg);
                    let known = workers.keys().cloned().collect();
                    gc_running = Some(tokio::spawn(gc_pass(s.clone(), local, informer.list(), known)));
                }
            }
            ev = events.recv() => {
                let Some(ev) = ev else { return Err(Error::Pod("pod informer stopped".into())) };
                match ev {
                    InformerEvent::Added(p) | InformerEvent::Updated { new: p, .. } => {
                        let uid = p.metadata.as_ref().map(|m| m.uid.clone()).unwrap_or_default();
                        match workers.get(&uid) {
                            Some(w) => { let _ = w.pod.send(Some(p)); }
                            None => {
                                let w = pod_worker::spawn(s.clone(), p, done_tx.clone());
                                workers.insert(uid, w);
                            }
                        }
                    }
                    InformerEvent::Deleted(p) => {
                        let uid = p.metadata.as_ref().map(|m| m.uid.clone()).unwrap_or_default();
                        if let Some(w) = workers.get(&uid) {
                            let _ = w.pod.send(None);
                        }
                    }
                }
            }
            Some(uid) = poke_rx.recv() => {
                if let Some(w) = workers.get(&uid) { w.poke.notify_one(); }
            }
            Some(uid) = done_rx.recv() => { workers.remove(&uid); }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_listen_addr_defaults_to_the_node_ip_and_kubelet_port() {
        let ip = IpAddr::from([10, 0, 0, 7]);
        assert_eq!(agent_listen_addr(None, ip), "10.0.0.7:10250");
        assert_eq!(agent_listen_addr(Some(":0"), ip), "10.0.0.7:0");
        assert_eq!(agent_listen_addr(Some("127.0.0.1:9"), ip), "127.0.0.1:9");
    }
}
