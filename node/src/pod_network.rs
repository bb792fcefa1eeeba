//! The bridge pod network (the net crate's [`BridgeNetwork`]) behind [`PodNetwork`], and what
//! the agent does around it: wait for the node's pod CIDR (Node.spec.podCIDR, assigned by the
//! controllers' node IPAM), create the bridge, and keep routes to the other nodes' pod CIDRs
//! in sync with the Nodes (level-triggered: every Node change recomputes the whole route set).

use crate::netns::PodNetwork;
use crate::Error;
use berth_client::{Informer, InformerEvent, ListParams, ResourceClient};
use berth_net::{BridgeConfig, BridgeNetwork, Ipv4Net, NetError};
use berth_proto::corev1::Node;
use futures::future::BoxFuture;
use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

pub use berth_net::bridge::{host_veth_name, BRIDGE_NAME_DEFAULT, VETH_PREFIX_DEFAULT};

/// How often the "waiting for a pod CIDR" line repeats while the node has none.
const POD_CIDR_WAIT_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// Pause before re-applying routes after a failure (a gateway not yet reachable, say).
const ROUTES_RETRY: Duration = Duration::from_secs(2);

/// The bridge network's settings (from the agent's Config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeSettings {
    /// The bridge's name (`berth0` by default).
    pub bridge_name: String,
    /// Prefix of host-side veth names; distinct per agent sharing a machine, since garbage
    /// collection removes every pod veth with this prefix that it does not know.
    pub veth_prefix: String,
}

impl Default for BridgeSettings {
    fn default() -> Self {
        BridgeSettings {
            bridge_name: BRIDGE_NAME_DEFAULT.into(),
            veth_prefix: VETH_PREFIX_DEFAULT.into(),
        }
    }
}

impl BridgeSettings {
    /// Checks the names before the agent waits for its pod CIDR (the net crate checks them
    /// again, but only once the bridge is made).
    pub fn validate(&self) -> Result<(), Error> {
        use berth_net::bridge::{IFNAME_BYTES_MAX, VETH_PREFIX_BYTES_MAX};
        let bad = |s: &str| {
            s.chars()
                .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
        };
        let b = &self.bridge_name;
        if b.is_empty() || b.len() > IFNAME_BYTES_MAX || bad(b) {
            return Err(Error::Config(format!(
                "--bridge-name {b:?}: an interface name is 1 to {IFNAME_BYTES_MAX} bytes without '/', ':' or spaces"
            )));
        }
        let v = &self.veth_prefix;
        if v.is_empty() || v.len() > VETH_PREFIX_BYTES_MAX || bad(v) {
            return Err(Error::Config(format!(
                "--veth-prefix {v:?}: 1 to {VETH_PREFIX_BYTES_MAX} bytes without '/', ':' or spaces"
            )));
        }
        Ok(())
    }
}

/// [`BridgeNetwork`] as the agent's [`PodNetwork`]: every pod gets an address.
pub struct Bridge(pub Arc<BridgeNetwork>);

fn net_err(e: NetError) -> Error {
    Error::Network(e.to_string())
}

impl PodNetwork for Bridge {
    fn attach<'a>(
        &'a self,
        pod_uid: &'a str,
        netns_path: &'a Path,
    ) -> BoxFuture<'a, Result<Option<IpAddr>, Error>> {
        Box::pin(async move {
            self.0
                .attach(pod_uid, netns_path)
                .await
                .map(Some)
                .map_err(net_err)
        })
    }

    fn detach<'a>(&'a self, pod_uid: &'a str, netns_path: &'a Path) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move { self.0.detach(pod_uid, netns_path).await.map_err(net_err) })
    }
}

/// The node's pod CIDR, once the node IPAM has assigned one.
fn pod_cidr_of(node: &Node) -> Option<Ipv4Net> {
    node.spec.as_ref()?.pod_cidr.parse().ok()
}

/// A node's InternalIP, when it is IPv4.
fn internal_ip_of(node: &Node) -> Option<Ipv4Addr> {
    node.status
        .as_ref()?
        .addresses
        .iter()
        .find(|a| a.r#type == "InternalIP")?
        .address
        .parse()
        .ok()
}

/// Every other node's (pod CIDR, InternalIP).
fn peers(nodes: &[Node], own_name: &str) -> Vec<(Ipv4Net, Ipv4Addr)> {
    nodes
        .iter()
        .filter(|n| n.metadata.as_ref().is_none_or(|m| m.name != own_name))
        .filter_map(|n| Some((pod_cidr_of(n)?, internal_ip_of(n)?)))
        .collect()
}

/// Waits for this node's pod CIDR, creates the bridge, frees the addresses and veths of pods
/// the agent no longer has (every pod not in `adopted`: adopted pods keep their veth and
/// address, which their workers' idempotent `attach` finds again), and spawns the route
/// keeper. The returned task runs until aborted.
pub async fn start_bridge(
    client: ResourceClient,
    node_name: &str,
    node_ip: Option<Ipv4Addr>,
    settings: &BridgeSettings,
    state_dir: PathBuf,
    adopted: &HashSet<String>,
) -> Result<(Arc<BridgeNetwork>, tokio::task::JoinHandle<()>), Error> {
    let (informer, mut events) = Informer::<Node>::start(client, "", ListParams::default());
    let pod_cidr = wait_for_pod_cidr(&informer, &mut events, node_name).await?;
    let mut cfg = BridgeConfig::new(pod_cidr, state_dir);
    cfg.bridge_name = settings.bridge_name.clone();
    cfg.veth_prefix = settings.veth_prefix.clone();
    cfg.node_ip = node_ip;
    let network = Arc::new(BridgeNetwork::new(cfg).await.map_err(net_err)?);
    network.gc(adopted).await.map_err(net_err)?;
    tracing::info!(node = node_name, %pod_cidr, bridge = %settings.bridge_name, gateway = %network.gateway(), "pod network ready");
    let task = tokio::spawn(keep_routes(
        network.clone(),
        informer,
        events,
        node_name.to_string(),
    ));
    Ok((network, task))
}

async fn wait_for_pod_cidr(
    informer: &Informer<Node>,
    events: &mut mpsc::Receiver<InformerEvent<Node>>,
    node_name: &str,
) -> Result<Ipv4Net, Error> {
    let mut next_log = tokio::time::Instant::now();
    loop {
        if let Some(cidr) = informer.get(node_name).as_ref().and_then(pod_cidr_of) {
            return Ok(cidr);
        }
        if tokio::time::Instant::now() >= next_log {
            tracing::info!(
                node = node_name,
                "waiting for the node's pod CIDR (spec.podCIDR, assigned by the controllers' node IPAM)"
            );
            next_log += POD_CIDR_WAIT_LOG_INTERVAL;
        }
        // Any Node change may be ours; the timeout only paces the log line.
        if let Ok(None) = tokio::time::timeout_at(next_log, events.recv()).await {
            return Err(Error::Network("node informer stopped".into()));
        }
    }
}

/// Re-applies the full route set after every Node change (and retries failures).
async fn keep_routes(
    network: Arc<BridgeNetwork>,
    informer: Informer<Node>,
    mut events: mpsc::Receiver<InformerEvent<Node>>,
    node_name: String,
) {
    loop {
        let wanted = peers(&informer.list(), &node_name);
        let retry = match network.set_routes(&wanted).await {
            Ok(()) => None,
            Err(e) => {
                tracing::warn!("pod routes: {e}");
                Some(ROUTES_RETRY)
            }
        };
        // Some(()) to recompute: a Node changed, or the retry pause is over.
        let next = match retry {
            Some(d) => match tokio::time::timeout(d, events.recv()).await {
                Ok(ev) => ev.map(|_| ()),
                Err(_) => Some(()),
            },
            None => events.recv().await.map(|_| ()),
        };
        if next.is_none() {
            tracing::warn!("node informer stopped: pod routes no longer kept");
            return;
        }
        // Drain what is queued: one recomputation covers it all.
        while events.try_recv().is_ok() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_proto::corev1::{NodeAddress, NodeSpec, NodeStatus};

    fn node(name: &str, cidr: &str, ip: &str) -> Node {
        Node {
            metadata: Some(berth_proto::metav1::ObjectMeta {
                name: name.into(),
                ..Default::default()
            }),
            spec: Some(NodeSpec {
                pod_cidr: cidr.into(),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                addresses: vec![NodeAddress {
                    r#type: "InternalIP".into(),
                    address: ip.into(),
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn settings_are_checked_naming_the_flag() {
        assert!(BridgeSettings::default().validate().is_ok());
        let long = BridgeSettings {
            bridge_name: "a-very-long-bridge".into(),
            ..Default::default()
        };
        assert!(long.validate().unwrap_err().to_string().contains("--bridge-name"));
        let prefix = BridgeSettings {
            veth_prefix: "toolongx".into(),
            ..Default::default()
        };
        assert!(prefix
            .validate()
            .unwrap_err()
            .to_string()
            .contains("--veth-prefix"));
    }

    #[test]
    fn peers_skip_self_and_nodes_without_cidr_or_ipv4() {
        let nodes = [
            node("a", "10.1.0.0/24", "192.168.0.1"),
            node("b", "10.1.1.0/24", "192.168.0.2"),
            node("c", "", "192.168.0.3"),
            node("d", "10.1.3.0/24", "fe80::1"),
        ];
        let want = vec![("10.1.1.0/24".parse().unwrap(), Ipv4Addr::new(192, 168, 0, 2))];
        assert_eq!(peers(&nodes, "a"), want);
    }
}
