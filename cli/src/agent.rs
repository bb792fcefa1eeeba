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
    c.lease_renew_interval = Duration::from_millis(a.lease_renew_interval_ms);
    c.lease_duration_seconds = a.lease_duration_seconds;
    c.node_status_interval = Duration::from_millis(a.node_status_interval_ms);
    c.runtime = if a.runtime == "libcontainer" {
        let exe = std::env::current_exe().context("the berth binary's path (for the runtime helper)")?;
        berth_node::RuntimeKind::Libcontainer(vec![exe.display().to_string(), "runtime".into()])
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
    /// Import an OCI or docker-save archive into a node's store.
    Import {
        file: PathBuf,
        /// Name the archive's only image (for archives without names).
        #[arg(long)]
        tag: Option<String>,
        #[arg(long, default_value = "./berth-data/agent")]
        data_dir: PathBuf,
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

pub fn image(cmd: ImageCmd) -> anyhow::Result<()> {
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
        ImageCmd::Import { file, tag, data_dir } => {
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
/// with runc's command-line shape (`--root R run --keep --bundle B ID`, `kill ID SIG`,
/// `delete --force ID`, `exec ID ARGV...`).
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
}

/// Runs the helper (single-threaded: no async runtime exists in this process); returns the
/// exit code.
pub fn runtime_helper(a: RuntimeArgs) -> i32 {
    use berth_node::runtime::youki::{run, Command};
    let root = a.root;
    let cmd = match a.cmd {
        RuntimeCmd::Run { bundle, id, .. } => Command::Run { root, bundle, id },
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
