//! `berth agent` (flags to `berth_node::Config`) and `berth image ...` (a node's image store).

use anyhow::{bail, Context};
use berth_node::image::{reference, ImageStore};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct AgentArgs {
    #[command(flatten)]
    pub server: crate::ServerArgs,
    /// The node's name (a DNS subdomain).
    #[arg(long)]
    pub name: String,
    /// Images, writable layers, volumes and logs.
    #[arg(long, default_value = "./berth-data/agent")]
    pub data_dir: PathBuf,
    /// Namespace files and pods' tmpfs mounts (default /run/berth/<name>).
    #[arg(long)]
    pub run_dir: Option<PathBuf>,
    /// The agent's cgroup under each hierarchy (default berth/<name>).
    #[arg(long)]
    pub cgroup_parent: Option<String>,
    /// Node labels, k=v,...
    #[arg(long, value_delimiter = ',')]
    pub labels: Vec<String>,
    /// Capacity overrides, e.g. cpu=4,memory=8Gi,pods=110 (default: the machine's).
    #[arg(long, value_delimiter = ',')]
    pub capacity: Vec<String>,
    /// Allocatable overrides (default: the capacity).
    #[arg(long, value_delimiter = ',')]
    pub allocatable: Vec<String>,
    /// The node's InternalIP (default: the first non-loopback IPv4 address).
    #[arg(long)]
    pub node_ip: Option<std::net::IpAddr>,
    /// Where the agent's API (logs, exec, image import) listens: `host:port`, or `:port` on
    /// the node's IP (default: <node IP>:10250); port 0 takes a free one. The Node publishes
    /// the port as its kubelet endpoint, next to its InternalIP.
    #[arg(long)]
    pub agent_addr: Option<String>,
    #[arg(long, default_value_t = 1000)]
    pub lease_renew_interval_ms: u64,
    #[arg(long, default_value_t = berth_node::DEFAULT_LEASE_DURATION_SECONDS)]
    pub lease_duration_seconds: i32,
    #[arg(long, default_value_t = 10_000)]
    pub node_status_interval_ms: u64,
    /// `libcontainer` (youki's, embedded) or the path of a runc-compatible binary.
    #[arg(long, default_value = "libcontainer")]
    pub runtime: String,
    /// pids.max of each pod (0 = unlimited).
    #[arg(long, default_value_t = 4096)]
    pub pod_pids_max: u64,
    /// `bridge` (pods get addresses from the node's spec.podCIDR on a bridge; needs the
    /// controllers' node IPAM) or `none` (loopback only, pods share the node's address).
    #[arg(long, default_value = "bridge")]
    pub pod_network: String,
    /// The pod bridge's name.
    #[arg(long, default_value = berth_node::pod_network::BRIDGE_NAME_DEFAULT)]
    pub bridge_name: String,
    /// Prefix of the host ends of pod veths (at most 6 bytes); distinct per agent on a machine.
    #[arg(long, default_value = berth_node::pod_network::VETH_PREFIX_DEFAULT)]
    pub veth_prefix: String,
    /// Cap of a container's current log file; over it the file is rotated to `.log.1`.
    #[arg(long, default_value_t = berth_node::runtime::monitor::LOG_BYTES_MAX_DEFAULT)]
    pub container_log_max_bytes: u64,
    /// Pause between garbage-collection passes (orphan pods, unused images).
    #[arg(long, default_value_t = berth_node::gc::GC_INTERVAL_DEFAULT.as_millis() as u64)]
    pub gc_interval_ms: u64,
    /// Image GC starts when the data dir's disk is more than this percent full...
    #[arg(long, default_value_t = berth_node::gc::IMAGE_HIGH_PERCENT_DEFAULT)]
    pub image_gc_high_percent: u8,
    /// ...and removes unused images (least recently used first) until it is below this.
    #[arg(long, default_value_t = berth_node::gc::IMAGE_LOW_PERCENT_DEFAULT)]
    pub image_gc_low_percent: u8,
    /// Images used or stored more recently than this are kept.
    #[arg(long, default_value_t = berth_node::gc::IMAGE_MIN_AGE_DEFAULT.as_secs())]
    pub image_gc_min_age_seconds: u64,
    /// A registry (host or host:port, as in image references) that may be pulled from over
    /// plain HTTP when HTTPS fails (as Docker's flag); repeatable. Loopback registries may be.
    #[arg(long)]
    pub insecure_registry: Vec<String>,
    /// PEM certificates trusted for HTTPS registries besides the system's roots.
    #[arg(long)]
    pub registry_ca_file: Option<PathBuf>,
}

/// `k=v,...` pairs; `flag` names the flag in errors.
fn pairs(flag: &str, items: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for it in items.iter().filter(|s| !s.is_empty()) {
        let Some((k, v)) = it.split_once('=') else {
            bail!("--{flag} {it:?}: expected key=value");
        };
        if k.is_empty() {
            bail!("--{flag} {it:?}: empty key");
        }
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

pub fn config(a: &AgentArgs) -> anyhow::Result<berth_node::Config> {
    let mut c = berth_node::Config::new(&a.name, a.server.servers.clone(), a.data_dir.clone());
    c.request_timeout = Duration::from_millis(a.server.request_timeout_ms);
    if let Some(r) = &a.run_dir {
        c.run_dir = r.clone();
    }
    if let Some(p) = &a.cgroup_parent {
        c.cgroup_parent = p.clone();
    }
    c.labels = pairs("labels", &a.labels)?;
    c.capacity = pairs("capacity", &a.capacity)?;
    c.allocatable = pairs("allocatable", &a.allocatable)?;
    for (flag, m) in [("capacity", &c.capacity), ("allocatable", &c.allocatable)] {
        for (k, v) in m {
            berth_proto::quantity::Quantity::parse(v)
                .map_err(|e| anyhow::anyhow!("--{flag} {k}={v}: {e}"))?;
        }
    }
    c.node_ip = a.node_ip;
    c.agent_addr = a.agent_addr.clone();
    c.lease_renew_interval = Duration::from_millis(a.lease_renew_interval_ms);
    c.lease_duration_seconds = a.lease_duration_seconds;
    c.node_status_interval = Duration::from_millis(a.node_status_interval_ms);
    let exe = std::env::current_exe().context("the berth binary's path (for the runtime helper)")?;
    let helper = vec![exe.display().to_string(), "runtime".to_string()];
    // The container monitor is `berth runtime monitor` with either runtime.
    c.monitor = helper.clone();
    c.container_log_bytes_max = a.container_log_max_bytes;
    c.gc = berth_node::gc::GcPolicy {
        interval: Duration::from_millis(a.gc_interval_ms),
        image_high_percent: a.image_gc_high_percent,
        image_low_percent: a.image_gc_low_percent,
        image_min_age: Duration::from_secs(a.image_gc_min_age_seconds),
    };
    c.runtime = if a.runtime == "libcontainer" {
        berth_node::RuntimeKind::Libcontainer(helper)
    } else {
        berth_node::RuntimeKind::Runc(PathBuf::from(&a.runtime))
    };
    c.pod_pids_max = (a.pod_pids_max > 0).then_some(a.pod_pids_max);
    c.bridge = match a.pod_network.as_str() {
        "bridge" => Some(berth_node::pod_network::BridgeSettings {
            bridge_name: a.bridge_name.clone(),
            veth_prefix: a.veth_prefix.clone(),
        }),
        "none" => None,
        other => bail!("--pod-network {other:?}: expected bridge or none"),
    };
    c.registry = berth_node::image::registry::RegistrySettings {
        insecure_registries: a.insecure_registry.clone(),
        ca_file: a.registry_ca_file.clone(),
    };
    Ok(c)
}

pub async fn run(a: AgentArgs) -> anyhow::Result<()> {
    let cfg = config(&a)?;
    tracing::info!(node = %cfg.node_name, data_dir = %cfg.data_dir.display(), run_dir = %cfg.run_dir.display(), "agent starting");
    berth_node::Agent::new(cfg)
        .run(async {
            if let Err(e) = crate::server::wait_for_signal().await {
                tracing::error!("signal handler: {e}");
            }
        })
        .await?;
    tracing::info!("agent stopped");
    Ok(())
}

#[derive(clap::Subcommand, Debug)]
pub enum ImageCmd {
    /// Pack a directory as a single-layer OCI image into the store (or an OCI archive).
    Build {
        #[arg(long)]
        rootfs: PathBuf,
        #[arg(long)]
        tag: String,
        /// Write an OCI archive here instead of keeping the image in the store.
        #[arg(long)]
        output: Option<PathBuf>,
        #[arg(long, default_value = "./berth-data/agent")]
        data_dir: PathBuf,
    },
    /// Import an OCI or docker-save archive into a node's store: locally (`--data-dir`, the
    /// default ./berth-data/agent), or with `--server`/`--node` through the API server into
    /// that node's agent (every Ready node without `--node`).
    Import {
        file: PathBuf,
        /// Name the archive's only image (for archives without names).
        #[arg(long)]
        tag: Option<String>,
        /// The local store's agent data dir.
        #[arg(long, conflicts_with_all = ["node", "server"])]
        data_dir: Option<PathBuf>,
        /// Send it to this node's agent through the API server.
        #[arg(long)]
        node: Option<String>,
        /// API server addresses (comma-separated); sends through the server.
        #[arg(long = "server", value_delimiter = ',')]
        server: Option<Vec<String>>,
        /// Per-request timeout in milliseconds.
        #[arg(long, default_value_t = 5000)]
        request_timeout_ms: u64,
    },
    /// List the images in a node's store.
    Ls {
        #[arg(long, default_value = "./berth-data/agent")]
        data_dir: PathBuf,
    },
    /// Remove an image name (and the content no other name uses).
    Rm {
        name: String,
        #[arg(long, default_value = "./berth-data/agent")]
        data_dir: PathBuf,
    },
}

fn store(data_dir: &std::path::Path) -> anyhow::Result<ImageStore> {
    ImageStore::open(&data_dir.join("images"))
        .with_context(|| format!("image store in {}", data_dir.display()))
}

/// The default local store (what `berth up` runs its agent with).
const LOCAL_DATA_DIR: &str = "./berth-data/agent";

/// `berth image import` through the API server: one line per node and image; fails when a
/// node did not import it.
async fn import_through_server(
    file: &std::path::Path,
    tag: Option<&str>,
    node: Option<&str>,
    servers: &[String],
    request_timeout_ms: u64,
) -> anyhow::Result<()> {
    let c = berth_client::ProxyClient::new(servers, Duration::from_millis(request_timeout_ms))?;
    let answers = c
        .import_image(file, node.unwrap_or(""), tag.unwrap_or(""))
        .await
        .map_err(anyhow::Error::new)?;
    let mut failed = Vec::new();
    for n in answers {
        for i in &n.images {
            println!("{} {} {}", n.node, i.name, i.config_digest);
        }
        if !n.error.is_empty() {
            eprintln!("error: node {}: {}", n.node, n.error);
            failed.push(n.node);
        }
    }
    if !failed.is_empty() {
        bail!("the image was not imported on {}", failed.join(", "));
    }
    Ok(())
}

pub async fn image(cmd: ImageCmd) -> anyhow::Result<()> {
    if let ImageCmd::Import {
        file,
        tag,
        node,
        server,
        request_timeout_ms,
        data_dir: None,
    } = &cmd
    {
        if node.is_some() || server.is_some() {
            let servers = server.clone().unwrap_or_else(|| vec!["127.0.0.1:2379".into()]);
            let r = import_through_server(
                file,
                tag.as_deref(),
                node.as_deref(),
                &servers,
                *request_timeout_ms,
            );
            return crate::kubectl::run(r).await;
        }
    }
    image_local(cmd)
}

fn image_local(cmd: ImageCmd) -> anyhow::Result<()> {
    match cmd {
        ImageCmd::Build {
            rootfs,
            tag,
            output,
            data_dir,
        } => match output {
            None => {
                let info = store(&data_dir)?.build_from_rootfs(&rootfs, &tag)?;
                println!("{} {}", info.name, info.config_digest);
            }
            Some(out) => {
                // Build in a scratch store, then export: the node's store stays untouched.
                let scratch = tempfile_dir(&out)?;
                let s = ImageStore::open(&scratch)?;
                let r = s
                    .build_from_rootfs(&rootfs, &tag)
                    .and_then(|info| s.export_oci_archive(&info.name, &out).map(|_| info));
                let _ = std::fs::remove_dir_all(&scratch);
                let info = r?;
                println!("{} {} -> {}", info.name, info.config_digest, out.display());
            }
        },
        ImageCmd::Import {
            file, tag, data_dir, ..
        } => {
            let data_dir = data_dir.unwrap_or_else(|| PathBuf::from(LOCAL_DATA_DIR));
            for info in store(&data_dir)?.import_archive(&file, tag.as_deref())? {
                println!("{} {}", info.name, info.config_digest);
            }
        }
        ImageCmd::Ls { data_dir } => {
            println!("{:<50} {:<20} {:>12}", "IMAGE", "ID", "SIZE");
            for i in store(&data_dir)?.list()? {
                let id = i.config_digest.trim_start_matches("sha256:");
                println!(
                    "{:<50} {:<20} {:>12}",
                    reference::familiar(&i.name),
                    &id[..12.min(id.len())],
                    i.size_bytes
                );
            }
        }
        ImageCmd::Rm { name, data_dir } => {
            store(&data_dir)?.remove(&name)?;
            println!("removed {}", reference::normalize(&name)?);
        }
    }
    Ok(())
}

/// A scratch directory next to `out`.
fn tempfile_dir(out: &std::path::Path) -> anyhow::Result<PathBuf> {
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let d = parent.join(format!(".berth-image-build-{}", std::process::id()));
    std::fs::create_dir_all(&d).with_context(|| format!("scratch dir {}", d.display()))?;
    Ok(d)
}

/// `berth runtime`: the embedded libcontainer helper the agent runs per container operation,
/// with runc's command-line shape (`--root R run --keep --pid-file P --bundle B ID`, `kill ID SIG`,
/// `delete --force ID`, `exec ID ARGV...`), and the container monitor (`monitor ... -- CMD`)
/// that runs either runtime's `run`.
#[derive(clap::Args, Debug)]
pub struct RuntimeArgs {
    #[arg(long)]
    pub root: PathBuf,
    #[command(subcommand)]
    pub cmd: RuntimeCmd,
}

#[derive(clap::Subcommand, Debug)]
pub enum RuntimeCmd {
    Run {
        /// Accepted for runc compatibility: the state is always kept until `delete`.
        #[arg(long)]
        keep: bool,
        /// Where the container init's pid is written once the process exists (runc's flag).
        #[arg(long)]
        pid_file: Option<PathBuf>,
        #[arg(long)]
        bundle: PathBuf,
        id: String,
    },
    Kill {
        id: String,
        signal: i32,
    },
    Delete {
        #[arg(long)]
        force: bool,
        id: String,
    },
    Exec {
        id: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        argv: Vec<String>,
    },
    /// The container monitor: runs the runtime command after `--` as its child, copies its
    /// output into the log (rotated at the cap), writes the exit file when it ends.
    Monitor {
        #[arg(long)]
        log: PathBuf,
        #[arg(long, default_value_t = berth_node::runtime::monitor::LOG_BYTES_MAX_DEFAULT)]
        log_bytes_max: u64,
        #[arg(long)]
        exit_file: PathBuf,
        #[arg(long)]
        pid_file: PathBuf,
        /// The cgroup file counting OOM kills, read at the exit.
        #[arg(long, requires = "oom_key")]
        oom_file: Option<PathBuf>,
        #[arg(long)]
        oom_key: Option<String>,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
}

/// Runs the helper (single-threaded: no async runtime exists in this process); returns the
/// exit code.
pub fn runtime_helper(a: RuntimeArgs) -> i32 {
    use berth_node::runtime::monitor;
    use berth_node::runtime::youki::{run, Command};
    let root = a.root;
    let cmd = match a.cmd {
        RuntimeCmd::Monitor {
            log,
            log_bytes_max,
            exit_file,
            pid_file,
            oom_file,
            oom_key,
            command,
        } => {
            monitor::detach_session();
            return monitor::run(monitor::MonitorArgs {
                log_path: log,
                log_bytes_max,
                files: monitor::MonitorFiles { exit_file, pid_file },
                oom_counter: oom_file.zip(oom_key),
                command,
            });
        }
        RuntimeCmd::Run {
            bundle, id, pid_file, ..
        } => Command::Run {
            root,
            bundle,
            id,
            pid_file,
        },
        RuntimeCmd::Kill { id, signal } => Command::Kill { root, id, signal },
        RuntimeCmd::Delete { id, .. } => Command::Delete { root, id },
        RuntimeCmd::Exec { id, argv } => Command::Exec { root, id, argv },
    };
    match run(cmd) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("berth runtime: {e}");
            1
        }
    }
}
