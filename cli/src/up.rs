//! `berth up`: a whole cluster on this machine in one process. A single-member server (with
//! the controllers and the scheduler), an agent for this machine (bridge pod network), the
//! busybox image built into the agent's store when missing, and a demo workload (Namespace
//! `demo`: a ConfigMap with a page, Deployment `hello` serving it, Service `hello`) applied
//! through the client crate once the node is Ready.

use anyhow::Context;
use berth_client::{ClientError, ResourceClient};
use berth_node::image::{busybox, reference, ImageStore};
use berth_proto::corev1::{Node, Pod};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The image the demo runs (built from the machine's busybox-static).
pub const DEMO_IMAGE: &str = "busybox:1.36";
/// Pause between polls while waiting for the node and the demo pods.
const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// How long `up` waits for the demo pods before giving up on printing their addresses.
const DEMO_WAIT: Duration = Duration::from_secs(180);

/// The demo workload, applied in order.
const DEMO_MANIFEST: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: demo}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: hello-www, namespace: demo}
data:
  index.html: "<h1>Hello from Berth</h1>\n"
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: hello, namespace: demo}
spec:
  replicas: 2
  selector: {matchLabels: {app: hello}}
  template:
    metadata: {labels: {app: hello}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: httpd
        image: busybox:1.36
        command: [httpd, -f, -p, "8080", -h, /www]
        ports: [{containerPort: 8080}]
        volumeMounts: [{name: www, mountPath: /www}]
      volumes: [{name: www, configMap: {name: hello-www}}]
---
apiVersion: v1
kind: Service
metadata: {name: hello, namespace: demo}
spec:
  selector: {app: hello}
  ports: [{port: 80, targetPort: 8080}]
"#;

#[derive(clap::Args, Debug)]
pub struct UpArgs {
    /// Where the local cluster keeps its data (`server/` and `agent/` under it).
    #[arg(long, default_value = "berth-data")]
    pub data_dir: PathBuf,
    #[arg(long, default_value = "127.0.0.1:2379")]
    pub client_addr: String,
    #[arg(long, default_value = "127.0.0.1:2380")]
    pub peer_addr: String,
    #[arg(long)]
    pub metrics_addr: Option<String>,
    /// Pod addresses are carved from this range (one /24 per node).
    #[arg(long, default_value = "10.244.0.0/16")]
    pub cluster_cidr: String,
    /// The node's name (default: the hostname, else `berth`); also names its run dir
    /// (/run/berth/<name>) and cgroup (berth/<name>).
    #[arg(long)]
    pub node_name: Option<String>,
    /// The pod bridge's name.
    #[arg(long, default_value = berth_node::pod_network::BRIDGE_NAME_DEFAULT)]
    pub bridge_name: String,
    /// Prefix of the host ends of pod veths (at most 6 bytes).
    #[arg(long, default_value = berth_node::pod_network::VETH_PREFIX_DEFAULT)]
    pub veth_prefix: String,
    /// The agent's API (logs, exec, image import): `host:port`, or `:port` on the node's IP
    /// (default `<node IP>:10250`; port 0 takes a free one).
    #[arg(long)]
    pub agent_addr: Option<String>,
    /// Do not apply the demo workload.
    #[arg(long)]
    pub no_demo: bool,
}

/// The hostname if it is a valid node name, else `berth`.
fn default_node_name() -> String {
    let h = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let h = h.trim().to_ascii_lowercase();
    let ok = !h.is_empty()
        && h.len() <= 63
        && h.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        && !h.starts_with(['-', '.'])
        && !h.ends_with(['-', '.']);
    if ok {
        h
    } else {
        "berth".into()
    }
}

fn agent_config(a: &UpArgs) -> anyhow::Result<berth_node::Config> {
    let name = a.node_name.clone().unwrap_or_else(default_node_name);
    let mut c = berth_node::Config::new(&name, vec![a.client_addr.clone()], a.data_dir.join("agent"));
    let exe = std::env::current_exe().context("the berth binary's path (for the runtime helper)")?;
    c.runtime = berth_node::RuntimeKind::Libcontainer(vec![exe.display().to_string(), "runtime".into()]);
    c.bridge = Some(berth_node::pod_network::BridgeSettings {
        bridge_name: a.bridge_name.clone(),
        veth_prefix: a.veth_prefix.clone(),
    });
    // A one-machine cluster: the agent's API and the Node's address stay on loopback.
    c.node_ip = Some(std::net::IpAddr::from([127, 0, 0, 1]));
    c.agent_addr = a.agent_addr.clone();
    Ok(c)
}

/// Builds the demo image into the agent's store unless it is there already.
fn ensure_demo_image(agent_data_dir: &Path) -> anyhow::Result<()> {
    let store = ImageStore::open(&agent_data_dir.join("images"))
        .with_context(|| format!("image store in {}", agent_data_dir.display()))?;
    let want = reference::normalize(DEMO_IMAGE)?;
    if store.list()?.iter().any(|i| i.name == want) {
        return Ok(());
    }
    let rootfs = agent_data_dir.join(format!(".busybox-rootfs-{}", std::process::id()));
    let built = busybox::rootfs(&rootfs, Path::new(busybox::BUSYBOX_BIN))
        .and_then(|()| store.build_from_rootfs(&rootfs, DEMO_IMAGE));
    let _ = std::fs::remove_dir_all(&rootfs);
    let info = built.context("building the demo image")?;
    eprintln!(
        "berth up: built image {} from {}",
        info.name,
        busybox::BUSYBOX_BIN
    );
    Ok(())
}

async fn node_ready(client: &ResourceClient, name: &str) -> bool {
    let Ok(n) = client.get::<Node>("", name).await else {
        return false;
    };
    n.status.is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.r#type == "Ready" && c.status == "True")
    })
}

/// Waits for the node, applies the demo (existing objects are left as they are) and prints
/// what to try once its pods run.
async fn demo(client: ResourceClient, node: String, client_addr: String) -> anyhow::Result<()> {
    while !node_ready(&client, &node).await {
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    for obj in berth_proto::manifest::parse(DEMO_MANIFEST).expect("the demo manifest parses") {
        let ns = obj.metadata().map(|m| m.namespace.clone()).unwrap_or_default();
        let what = format!("{} {}", obj.kind_name(), obj.name());
        match client.create_object(&ns, obj).await {
            Ok(_) | Err(ClientError::AlreadyExists(_)) => {}
            Err(e) => return Err(e).with_context(|| format!("creating the demo's {what}")),
        }
    }
    eprintln!("berth up: node {node} is Ready; demo applied (namespace demo, deployment and service hello)");
    let deadline = tokio::time::Instant::now() + DEMO_WAIT;
    let ips = loop {
        let pods = match client.list::<Pod>("demo", &Default::default()).await {
            Ok(l) => l.items,
            Err(_) => Vec::new(),
        };
        let running: Vec<(String, String)> = pods
            .iter()
            .filter_map(|p| Some((p.metadata.as_ref()?.name.clone(), p.status.as_ref()?)))
            .filter(|(_, s)| s.phase == "Running" && !s.pod_ip.is_empty())
            .map(|(name, s)| (name, s.pod_ip.clone()))
            .collect();
        if running.len() >= 2 || tokio::time::Instant::now() > deadline {
            break running;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    };
    let server = if client_addr == "127.0.0.1:2379" {
        String::new()
    } else {
        format!(" --server {client_addr}")
    };
    eprintln!("berth up: try\n  berth get pods -n demo -o wide{server}\n  berth get svc -n demo{server}");
    if let Some((pod, _)) = ips.first() {
        eprintln!("  berth logs -n demo {pod}{server}\n  berth exec -n demo {pod}{server} -- ls /www");
    }
    for (_, ip) in ips {
        eprintln!("  curl http://{ip}:8080/");
    }
    Ok(())
}

pub async fn up(a: UpArgs) -> anyhow::Result<()> {
    let server_args = crate::server::up_server_args(&a);
    let agent_cfg = agent_config(&a)?;
    ensure_demo_image(&agent_cfg.data_dir)?;
    let node = agent_cfg.node_name.clone();
    eprintln!(
        "berth up: server on {}, agent node {node} (data under {}, bridge {})",
        a.client_addr,
        a.data_dir.display(),
        a.bridge_name
    );
    let mut server = tokio::spawn(crate::server::run(server_args));
    let mut agent = tokio::spawn(berth_node::Agent::new(agent_cfg).run(async {
        if let Err(e) = crate::server::wait_for_signal().await {
            tracing::error!("signal handler: {e}");
        }
    }));
    let client = ResourceClient::new(std::slice::from_ref(&a.client_addr), Duration::from_secs(5))?;
    let demo_task = (!a.no_demo).then(|| {
        tokio::spawn(async move {
            if let Err(e) = demo(client, node, a.client_addr).await {
                eprintln!("berth up: demo: {e:#}");
            }
        })
    });
    // Both stop on SIGINT/SIGTERM; either failing ends `up`.
    let r = tokio::select! {
        r = &mut server => {
            let r = r.context("server task")?;
            if r.is_err() { agent.abort(); }
            let _ = tokio::time::timeout(Duration::from_secs(5), agent).await;
            r
        }
        r = &mut agent => {
            let r = r.context("agent task")?.map_err(anyhow::Error::from);
            if r.is_err() { server.abort(); }
            let _ = server.await;
            r
        }
    };
    if let Some(t) = demo_task {
        t.abort();
    }
    r
}
