//! berth-node: the node agent (`berth agent`).
//!
//! Role: register this machine as a Node, keep its node Lease renewed and its conditions
//! reported, and run the pods bound to it: a sandbox per pod (network, IPC and UTS namespaces
//! bound under the agent's run dir, a parent cgroup), containers from the node's image store
//! (overlayfs rootfs, own mount and PID namespaces) through a [`runtime::Runtime`], volumes,
//! env, restart back-off, and pod status written back through UpdateStatus only.
//!
//! Invariants: one worker task per pod, so at most one sync of a pod runs at a time; syncs are
//! level-triggered (desired spec vs what runs) and idempotent; the agent sees only the pods
//! bound to it and only the ConfigMaps and Secrets those pods reference; secret contents live
//! on tmpfs only; everything a pod created on the machine (mounts, namespaces, cgroups) is gone
//! once its worker has finished tearing it down.
//!
//! It deliberately does not know: command-line flags, how the control plane stores objects,
//! pod networking beyond the [`netns::PodNetwork`] trait and [`pod_network`]'s use of the net
//! crate's bridge (addresses, veths and routes are the net crate's).

pub mod backoff;
pub mod cgroups;
pub mod env;
mod error;
pub mod image;
pub mod lease;
pub mod mount;
pub mod netns;
pub mod node_status;
pub mod objects;
pub mod pod_network;
pub mod pod_worker;
pub mod probes;
pub mod runtime;
pub mod status;
pub mod volumes;

pub use error::Error;

use berth_client::leader::{format_micro_time, Clock, SystemClock};
use berth_client::{InformerEvent, ListParams, ResourceClient};
use berth_proto::corev1::{Node, Pod};
use std::collections::{BTreeMap, HashMap};
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
            registry: image::registry::RegistrySettings::default(),
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

/// Removes what pods left on the node when an agent stopped without tearing them down:
/// processes and cgroups under the agent's cgroup, namespace files, mounts, pod directories.
/// The agent runs it at start (it does not adopt running containers yet); tests run it last.
pub fn cleanup_leftovers(cfg: &Config) -> Result<(), Error> {
    let cg = cgroups::Cgroups::detect(&cfg.cgroup_root, &cfg.cgroup_parent);
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
    uids.sort();
    uids.dedup();
    for uid in uids.iter().filter(|u| !u.is_empty()) {
        cg.remove_pod(uid)?;
        netns::remove(&netns::PodNamespaces::paths(&cfg.run_dir.join("netns"), uid))?;
    }
    mount::unmount_all_under(&cfg.run_dir)?;
    mount::unmount_all_under(&cfg.data_dir.join("pods"))?;
    for d in [cfg.run_dir.join("pods"), cfg.data_dir.join("pods")] {
        if d.exists() {
            std::fs::remove_dir_all(&d).map_err(|e| Error::io(&d, e))?;
        }
    }
    cg.remove_parent();
    Ok(())
}

impl Agent {
    pub fn new(cfg: Config) -> Agent {
        let runtime = Arc::new(match &cfg.runtime {
            RuntimeKind::Runc(b) => runtime::oci::OciCli::runc(b.clone()),
            RuntimeKind::Libcontainer(helper) => runtime::oci::OciCli {
                binary: PathBuf::from(helper.first().cloned().unwrap_or_default()),
                leading_args: helper.iter().skip(1).cloned().collect(),
                version: Some(runtime::youki::VERSION.into()),
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
        let leftovers = cfg.clone();
        tokio::task::spawn_blocking(move || cleanup_leftovers(&leftovers))
            .await
            .map_err(|e| Error::Pod(e.to_string()))??;
        for d in [&cfg.run_dir.join("netns"), &cfg.run_dir.join("pods")] {
            std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
        }
        let client = ResourceClient::new(&cfg.servers, cfg.request_timeout)?;
        let images = Arc::new(image::ImageStore::open(&cfg.data_dir.join("images"))?);
        let puller = Arc::new(image::registry::Puller::new(cfg.registry.clone())?);
        let node_ip = host_ip(&cfg);
        let host_ip = node_ip.to_string();
        loop {
            match node_status::register(&client, &cfg).await {
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!("registering node {}: {e}", cfg.node_name);
                    tokio::time::sleep(REGISTER_RETRY).await;
                }
            }
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
                pod_network::start_bridge(client.clone(), &cfg.node_name, own_ip, bridge, state_dir).await?;
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
        });
        tracing::info!(node = %cfg.node_name, host_ip = %host_ip, cgroups = ?shared.cgroups.version(), "registered");
        let lease_task = tokio::spawn(lease_loop(shared.clone()));
        let status_task = tokio::spawn(node_status_loop(shared.clone()));
        let r = pods_loop(shared, poke_rx, shutdown).await;
        lease_task.abort();
        status_task.abort();
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
        let st = node_status::status(&s.cfg, &facts, old.as_ref(), &s.host_ip, &version, &now);
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
    let (_informer, mut events) = berth_client::Informer::<Pod>::start(s.client.clone(), "", params);
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<String>();
    let mut workers: HashMap<String, pod_worker::WorkerHandle> = HashMap::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
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
