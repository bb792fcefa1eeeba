//! The node's pod network: a bridge holding the pod CIDR's gateway address, a veth pair per
//! pod (host end a hairpin port of the bridge, pod end `eth0` in the pod's namespace), the
//! node's IPAM, and routes to the other nodes' pod CIDRs.
//!
//! Every operation is level-triggered: it looks at what the kernel has and changes only what
//! differs from what should be, so running it again (after a crash half-way, or just twice)
//! converges to the same state.

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ipnet::Ipv4Net;
use rtnetlink::packet_route::link::InfoKind;
use rtnetlink::packet_route::route::RouteProtocol;
use rtnetlink::{LinkBridge, LinkBridgePort, LinkUnspec, LinkVeth, RouteMessageBuilder};

use crate::cidr;
use crate::error::NetError;
use crate::ipam::Ipam;
use crate::netlink::{Link, Netlink, Route};
use crate::netns;

/// The bridge's name unless configured otherwise.
pub const BRIDGE_NAME_DEFAULT: &str = "berth0";
/// The prefix of host-side veth names unless configured otherwise.
pub const VETH_PREFIX_DEFAULT: &str = "bveth";
/// The MTU of the bridge and veths unless configured otherwise.
pub const MTU_DEFAULT: u32 = 1500;
/// The smallest MTU IPv4 allows a link (RFC 791).
pub const MTU_MIN: u32 = 576;
/// The largest MTU a veth takes.
pub const MTU_MAX: u32 = 65535;
/// Linux interface names are at most 15 bytes (IFNAMSIZ - 1).
pub const IFNAME_BYTES_MAX: usize = 15;
/// A host veth is `<prefix><8 hex digits>`, its peer before it moves `<prefix><8 hex>p`: at
/// most 15 bytes.
pub const VETH_PREFIX_BYTES_MAX: usize = IFNAME_BYTES_MAX - 9;
/// The pod's interface name.
pub const POD_IFNAME: &str = "eth0";
/// The route protocol number marking routes this crate owns (`ip route` shows `proto 190`);
/// how `set_routes` tells its stale routes from everyone else's. Unassigned in rtnetlink.h
/// and in iproute2's rt_protos.
pub const ROUTE_PROTOCOL_BERTH: u8 = 190;
/// The main routing table.
const ROUTE_TABLE_MAIN: u32 = 254;
/// Host veths carry `<this><pod uid>` as their alias: so garbage collection finds them from
/// the kernel alone, and a name collision between two pods is detected, not obeyed.
const POD_ALIAS_PREFIX: &str = "berth-pod:";

/// What a node's pod network is made of. Build with [`BridgeConfig::new`] and adjust fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeConfig {
    /// The bridge the pods hang off (default `berth0`).
    pub bridge_name: String,
    /// This node's pod CIDR (Node.spec.podCIDR); the bridge gets its first address.
    pub pod_cidr: Ipv4Net,
    /// This node's own address, when known: a peer entry naming it is skipped by `set_routes`.
    pub node_ip: Option<Ipv4Addr>,
    /// Where IP allocations persist (`ipam.json`).
    pub state_dir: PathBuf,
    /// MTU of the bridge, the veths and the pods' `eth0`.
    pub mtu: u32,
    /// Prefix of host-side veth names (at most [`VETH_PREFIX_BYTES_MAX`] bytes).
    pub veth_prefix: String,
    /// The network namespace the bridge lives in, as a namespace file; None: the namespace of
    /// the process (the node's). Tests run several "nodes" in one process with it.
    pub host_netns: Option<PathBuf>,
}

impl BridgeConfig {
    /// The defaults: bridge `berth0`, MTU 1500, veths `bveth…`, the process's namespace.
    pub fn new(pod_cidr: Ipv4Net, state_dir: impl Into<PathBuf>) -> Self {
        Self {
            bridge_name: BRIDGE_NAME_DEFAULT.to_string(),
            pod_cidr,
            node_ip: None,
            state_dir: state_dir.into(),
            mtu: MTU_DEFAULT,
            veth_prefix: VETH_PREFIX_DEFAULT.to_string(),
            host_netns: None,
        }
    }

    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), NetError> {
        check_ifname("bridge_name", &self.bridge_name)?;
        cidr::check_pod_cidr("pod_cidr", self.pod_cidr)?;
        if !(MTU_MIN..=MTU_MAX).contains(&self.mtu) {
            return Err(NetError::invalid(
                "mtu",
                format!("{} is not in {MTU_MIN}..={MTU_MAX}", self.mtu),
            ));
        }
        if self.veth_prefix.len() > VETH_PREFIX_BYTES_MAX {
            return Err(NetError::invalid(
                "veth_prefix",
                format!(
                    "{:?} is longer than {VETH_PREFIX_BYTES_MAX} bytes",
                    self.veth_prefix
                ),
            ));
        }
        check_ifname("veth_prefix", &format!("{}00000000", self.veth_prefix))?;
        if self.state_dir.as_os_str().is_empty() {
            return Err(NetError::invalid("state_dir", "must not be empty"));
        }
        Ok(())
    }
}

fn check_ifname(field: &'static str, name: &str) -> Result<(), NetError> {
    let bad_char = name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control());
    if name.is_empty() || name.len() > IFNAME_BYTES_MAX || bad_char || name == "." || name == ".." {
        return Err(NetError::invalid(
            field,
            format!(
                "{name:?} is not an interface name (1 to {IFNAME_BYTES_MAX} bytes, no '/', ':' or spaces)"
            ),
        ));
    }
    Ok(())
}

/// The host-side veth name of a pod: the prefix and a hash of the uid (uids are too long for
/// interface names). A collision is detected through the alias (see `POD_ALIAS_PREFIX`).
pub fn host_veth_name(veth_prefix: &str, pod_uid: &str) -> String {
    // FNV-1a, 32 bits: stable across releases, unlike std's hasher.
    let hash = pod_uid.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    format!("{veth_prefix}{hash:08x}")
}

fn pod_alias(pod_uid: &str) -> String {
    format!("{POD_ALIAS_PREFIX}{pod_uid}")
}

/// A node's pod network. Cheap to share behind an `Arc`; operations that change links are
/// serialized inside (one at a time per node: each takes milliseconds).
pub struct BridgeNetwork {
    config: BridgeConfig,
    gateway: Ipv4Addr,
    host: Netlink,
    ipam: Arc<Mutex<Ipam>>,
    /// Serializes attach/detach/gc: each reads the kernel's state and then changes it.
    wiring: tokio::sync::Mutex<()>,
    /// Serializes set_routes for the same reason.
    routing: tokio::sync::Mutex<()>,
}

impl BridgeNetwork {
    /// Opens the IPAM state, ensures the bridge (created if missing, up, MTU, the gateway as its
    /// only IPv4 address) and enables IPv4 forwarding in the host namespace.
    pub async fn new(config: BridgeConfig) -> Result<Self, NetError> {
        config.validate()?;
        let (state_dir, pod_cidr) = (config.state_dir.clone(), config.pod_cidr);
        let ipam = tokio::task::spawn_blocking(move || Ipam::open(&state_dir, pod_cidr))
            .await
            .expect("IPAM open does not panic")?;
        let host = Netlink::connect(config.host_netns.as_deref()).await?;
        let network = Self {
            gateway: cidr::gateway(config.pod_cidr),
            config,
            host,
            ipam: Arc::new(Mutex::new(ipam)),
            wiring: tokio::sync::Mutex::new(()),
            routing: tokio::sync::Mutex::new(()),
        };
        network.ensure_bridge().await?;
        network.enable_ip_forwarding().await?;
        Ok(network)
    }

    pub fn config(&self) -> &BridgeConfig {
        &self.config
    }

    /// The pods' default gateway: the bridge's address, the pod CIDR's first host address.
    pub fn gateway(&self) -> Ipv4Addr {
        self.gateway
    }

    /// Pod uid → IP, for every pod holding an address.
    pub async fn allocations(&self) -> BTreeMap<String, Ipv4Addr> {
        // Through the blocking pool: the lock may be held across a state file sync.
        self.with_ipam(|ipam| Ok(ipam.allocations().clone()))
            .await
            .expect("reading allocations cannot fail")
    }

    /// Wires the pod whose network namespace is the file `netns_path`: its address (the one it
    /// already holds, if any), a veth pair (host end on the bridge with hairpin, pod end `eth0`
    /// with the address and a default route via the gateway), `lo` up. Idempotent: attaching
    /// an attached pod checks everything and returns the same address. On error the address
    /// stays allocated (a retry reuses it); `detach` or `gc` frees it.
    pub async fn attach(&self, pod_uid: &str, netns_path: &Path) -> Result<IpAddr, NetError> {
        check_pod_uid(pod_uid)?;
        // The namespace first: a wrong path must not cost an address.
        let pod = Netlink::connect(Some(netns_path)).await?;
        let _wiring = self.wiring.lock().await;
        let uid = pod_uid.to_string();
        let ip = self.with_ipam(move |ipam| ipam.allocate(&uid)).await?;
        let bridge_index = self.ensure_bridge().await?;
        let host_name = host_veth_name(&self.config.veth_prefix, pod_uid);
        let host_link = self
            .ensure_veth_pair(&pod, pod_uid, &host_name, netns_path)
            .await?;
        self.configure_host_end(&host_link, bridge_index, pod_uid).await?;
        self.configure_pod_end(&pod, ip).await?;
        tracing::debug!(pod_uid, %ip, veth = %host_name, "pod attached");
        Ok(IpAddr::V4(ip))
    }

    /// Unwires a pod: removes its veth pair (from the host side, or from the pod side if only
    /// that is left) and frees its address. Idempotent; a namespace file already gone is fine.
    pub async fn detach(&self, pod_uid: &str, netns_path: &Path) -> Result<(), NetError> {
        check_pod_uid(pod_uid)?;
        let _wiring = self.wiring.lock().await;
        let host_name = host_veth_name(&self.config.veth_prefix, pod_uid);
        if let Some(link) = self.host.link(&host_name).await? {
            self.check_owner(&link, pod_uid)?;
            self.host.delete_link(&host_name).await?;
        }
        if let Some(pod) = connect_if_still_a_netns(netns_path).await? {
            pod.delete_link(POD_IFNAME).await?;
        }
        let uid = pod_uid.to_string();
        if let Some(ip) = self.with_ipam(move |ipam| ipam.release(&uid)).await? {
            tracing::debug!(pod_uid, %ip, "pod detached");
        }
        Ok(())
    }

    /// Garbage collection given the pods that should exist on this node: removes host veths of
    /// other pods (found by their alias) and frees their addresses, including addresses leaked
    /// with no veth left. Returns the uids it cleaned up, sorted.
    pub async fn gc(&self, live_pod_uids: &HashSet<String>) -> Result<Vec<String>, NetError> {
        let _wiring = self.wiring.lock().await;
        let mut cleaned = std::collections::BTreeSet::new();
        let ours = self
            .host
            .links()
            .await?
            .into_iter()
            .filter(|l| l.name.starts_with(&self.config.veth_prefix));
        for link in ours {
            let Some(uid) = link
                .alias
                .as_deref()
                .and_then(|a| a.strip_prefix(POD_ALIAS_PREFIX))
            else {
                continue;
            };
            if !live_pod_uids.contains(uid) {
                self.host.delete_link(&link.name).await?;
                cleaned.insert(uid.to_string());
            }
        }
        let live = live_pod_uids.clone();
        let freed = self.with_ipam(move |ipam| ipam.retain_live(&live)).await?;
        cleaned.extend(freed.into_iter().map(|(uid, _)| uid));
        if !cleaned.is_empty() {
            tracing::info!(pods = ?cleaned, "pod network garbage collected");
        }
        Ok(cleaned.into_iter().collect())
    }

    /// Makes the host's routes to other nodes' pod CIDRs exactly `peers` (pod CIDR, node IP):
    /// adds missing ones, fixes changed gateways, removes routes of ours no longer listed. Our
    /// own pod CIDR and our own node IP are skipped. Every peer is tried; the first failure is
    /// returned (a gateway not on a connected network is one).
    pub async fn set_routes(&self, peers: &[(Ipv4Net, Ipv4Addr)]) -> Result<(), NetError> {
        let desired = self.desired_routes(peers)?;
        let _routing = self.routing.lock().await;
        let ours: Vec<Route> = self
            .host
            .ipv4_routes()
            .await?
            .into_iter()
            .filter(|r| r.protocol == ROUTE_PROTOCOL_BERTH && r.table == ROUTE_TABLE_MAIN)
            .collect();
        let mut in_place = HashSet::new();
        for route in &ours {
            let key = route.destination.and_then(|(ip, len)| Ipv4Net::new(ip, len).ok());
            match key {
                Some(cidr) if desired.get(&cidr) == route.gateway.as_ref() => {
                    in_place.insert(cidr);
                }
                _ => self.host.delete_route(route).await?,
            }
        }
        let mut first_error = None;
        for (cidr, gateway) in desired.iter().filter(|(cidr, _)| !in_place.contains(*cidr)) {
            let route = RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(cidr.network(), cidr.prefix_len())
                .gateway(*gateway)
                .protocol(RouteProtocol::from(ROUTE_PROTOCOL_BERTH))
                .build();
            // Replace, not add: a route to a peer's pod CIDR that someone else put in becomes ours.
            if let Err(source) = self.host.replace_route(route).await {
                tracing::warn!(%cidr, %gateway, error = %source, "route to a peer's pod CIDR failed");
                first_error.get_or_insert(NetError::Route {
                    cidr: *cidr,
                    gateway: *gateway,
                    source,
                });
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn desired_routes(&self, peers: &[(Ipv4Net, Ipv4Addr)]) -> Result<BTreeMap<Ipv4Net, Ipv4Addr>, NetError> {
        let mut desired = BTreeMap::new();
        for (cidr, node_ip) in peers {
            if cidr.addr() != cidr.network() {
                return Err(NetError::invalid(
                    "peers",
                    format!("pod CIDR {cidr} has host bits set"),
                ));
            }
            if *cidr == self.config.pod_cidr || Some(*node_ip) == self.config.node_ip {
                continue;
            }
            if let Some(other) = desired.insert(*cidr, *node_ip) {
                if other != *node_ip {
                    return Err(NetError::invalid(
                        "peers",
                        format!("pod CIDR {cidr} is listed with two nodes, {other} and {node_ip}"),
                    ));
                }
            }
        }
        Ok(desired)
    }

    async fn with_ipam<T, F>(&self, f: F) -> Result<T, NetError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Ipam) -> Result<T, NetError> + Send + 'static,
    {
        let ipam = self.ipam.clone();
        // The state file is synced on every change: keep that off the runtime's threads.
        tokio::task::spawn_blocking(move || f(&mut ipam.lock().expect("IPAM lock")))
            .await
            .expect("IPAM operations do not panic")
    }

    /// The bridge exists, is a bridge, is up with our MTU and has the gateway as its only IPv4
    /// address. Returns its index.
    async fn ensure_bridge(&self) -> Result<u32, NetError> {
        let name = &self.config.bridge_name;
        let link = match self.host.link(name).await? {
            Some(link) => link,
            None => {
                let msg = LinkBridge::new(name).mtu(self.config.mtu).build();
                self.host
                    .add_link(&format!("creating bridge {name}"), msg)
                    .await?;
                self.host.link(name).await?.ok_or_else(|| {
                    NetError::io(
                        format!("bridge {name}"),
                        std::io::Error::other("vanished after creation"),
                    )
                })?
            }
        };
        if link.kind != Some(InfoKind::Bridge) {
            let kind = link.kind.map_or_else(|| "none".to_string(), |k| k.to_string());
            return Err(NetError::NotABridge {
                name: name.clone(),
                kind,
            });
        }
        if !link.up || link.mtu != Some(self.config.mtu) {
            let msg = LinkUnspec::new_with_index(link.index)
                .mtu(self.config.mtu)
                .up()
                .build();
            self.host
                .set_link(&format!("setting bridge {name} up"), msg)
                .await?;
        }
        let prefix = self.config.pod_cidr.prefix_len();
        self.host
            .ensure_only_address(link.index, name, self.gateway, prefix)
            .await?;
        Ok(link.index)
    }

    async fn enable_ip_forwarding(&self) -> Result<(), NetError> {
        // /proc/sys/net answers for the namespace of the thread that opens it.
        netns::run_in(self.config.host_netns.as_deref(), || {
            std::fs::write("/proc/sys/net/ipv4/ip_forward", b"1")
                .map_err(|e| NetError::io("enabling net.ipv4.ip_forward", e))
        })
        .await
    }

    fn check_owner(&self, link: &Link, pod_uid: &str) -> Result<(), NetError> {
        match link.alias.as_deref() {
            Some(alias) if alias != pod_alias(pod_uid) => Err(NetError::InterfaceTaken {
                name: link.name.clone(),
                owner: alias.to_string(),
                pod_uid: pod_uid.to_string(),
            }),
            _ => Ok(()),
        }
    }

    /// A veth pair with the host end `host_name` and the pod end `eth0` in the pod's namespace,
    /// peered with each other. Anything else found (a half-made pair from a crash, a stale
    /// `eth0`) is removed and the pair made anew. Returns the host end.
    async fn ensure_veth_pair(
        &self,
        pod: &Netlink,
        pod_uid: &str,
        host_name: &str,
        netns_path: &Path,
    ) -> Result<Link, NetError> {
        let host_link = self.host.link(host_name).await?;
        if let Some(link) = &host_link {
            self.check_owner(link, pod_uid)?;
        }
        let pod_link = pod.link(POD_IFNAME).await?;
        if let (Some(host_end), Some(pod_end)) = (&host_link, &pod_link) {
            if host_end.peer_index == Some(pod_end.index) && pod_end.peer_index == Some(host_end.index) {
                return Ok(host_end.clone());
            }
        }
        if host_link.is_some() {
            self.host.delete_link(host_name).await?;
        }
        if pod_link.is_some() {
            pod.delete_link(POD_IFNAME).await?;
        }
        let peer_name = format!("{host_name}p");
        self.host.delete_link(&peer_name).await?;
        let msg = LinkVeth::new(host_name, &peer_name).mtu(self.config.mtu).build();
        self.host
            .add_link(&format!("creating veth pair {host_name}/{peer_name}"), msg)
            .await?;
        // Labelled at once, so that gc finds the pair even if this attach dies half-way.
        let msg = LinkUnspec::new_with_name(host_name)
            .alias(pod_alias(pod_uid))
            .build();
        self.host.set_link(&format!("labelling {host_name}"), msg).await?;
        let netns_file = netns::open_netns(netns_path)?;
        let msg = LinkUnspec::new_with_name(&peer_name)
            .setns_by_fd(netns_file.as_raw_fd())
            .build();
        let what = format!("moving {peer_name} into {}", netns_path.display());
        self.host.set_link(&what, msg).await?;
        let moved = pod.link(&peer_name).await?.ok_or_else(|| {
            NetError::io(
                what.clone(),
                std::io::Error::other("interface not found in the pod namespace"),
            )
        })?;
        let msg = LinkUnspec::new_with_index(moved.index)
            .name(POD_IFNAME)
            .mtu(self.config.mtu)
            .build();
        pod.set_link(&format!("renaming {peer_name} to {POD_IFNAME} in the pod"), msg)
            .await?;
        self.host.link(host_name).await?.ok_or_else(|| {
            NetError::io(
                format!("veth {host_name}"),
                std::io::Error::other("vanished after creation"),
            )
        })
    }

    /// The host end: a port of the bridge, hairpin on (a pod reaching itself through a service
    /// address comes back through its own port), up, labelled with the pod's uid.
    async fn configure_host_end(
        &self,
        link: &Link,
        bridge_index: u32,
        pod_uid: &str,
    ) -> Result<(), NetError> {
        let name = &link.name;
        let msg = LinkUnspec::new_with_index(link.index)
            .controller(bridge_index)
            .mtu(self.config.mtu)
            .alias(pod_alias(pod_uid))
            .up()
            .build();
        self.host
            .set_link(
                &format!("putting {name} on bridge {}", self.config.bridge_name),
                msg,
            )
            .await?;
        let msg = LinkBridgePort::new(link.index).hairpin(true).build();
        self.host
            .handle()
            .link()
            .set_port(msg)
            .execute()
            .await
            .map_err(|e| NetError::netlink(format!("setting hairpin on {name}"), e))
    }

    /// The pod end: `lo` up, `eth0` up with the pod's address, default route via the gateway.
    async fn configure_pod_end(&self, pod: &Netlink, ip: Ipv4Addr) -> Result<(), NetError> {
        let lo = pod.link("lo").await?.ok_or_else(|| {
            NetError::io(
                "pod namespace",
                std::io::Error::other("has no lo (not a network namespace?)"),
            )
        })?;
        if !lo.up {
            pod.set_link(
                "setting lo up in the pod",
                LinkUnspec::new_with_index(lo.index).up().build(),
            )
            .await?;
        }
        let eth0 = pod.link(POD_IFNAME).await?.ok_or_else(|| {
            NetError::io(
                "pod namespace",
                std::io::Error::other("eth0 vanished while being configured"),
            )
        })?;
        if !eth0.up || eth0.mtu != Some(self.config.mtu) {
            let msg = LinkUnspec::new_with_index(eth0.index)
                .mtu(self.config.mtu)
                .up()
                .build();
            pod.set_link("setting eth0 up in the pod", msg).await?;
        }
        let prefix = self.config.pod_cidr.prefix_len();
        pod.ensure_only_address(eth0.index, POD_IFNAME, ip, prefix)
            .await?;
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .gateway(self.gateway)
            .output_interface(eth0.index)
            .build();
        pod.replace_route(route)
            .await
            .map_err(|e| NetError::netlink(format!("default route via {} in the pod", self.gateway), e))
    }
}

/// A connection into the pod's namespace, or None when it is gone: the file removed, or left
/// behind unmounted (then it is an ordinary file and setns answers EINVAL).
async fn connect_if_still_a_netns(netns_path: &Path) -> Result<Option<Netlink>, NetError> {
    if !netns_path.exists() {
        return Ok(None);
    }
    match Netlink::connect(Some(netns_path)).await {
        Ok(pod) => Ok(Some(pod)),
        Err(NetError::Setns {
            source: nix::errno::Errno::EINVAL,
            ..
        }) => Ok(None),
        Err(e) => Err(e),
    }
}

fn check_pod_uid(pod_uid: &str) -> Result<(), NetError> {
    if pod_uid.is_empty() || pod_uid.chars().any(|c| c.is_control()) {
        return Err(NetError::invalid(
            "pod_uid",
            format!("{pod_uid:?} is empty or has control characters"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The agent shares one network between tasks and spawns its operations.
    #[allow(dead_code)]
    fn shareable_and_spawnable(net: &BridgeNetwork, path: &Path, live: &HashSet<String>) {
        fn send_sync<T: Send + Sync>(_: &T) {}
        fn send<T: Send>(_: T) {}
        send_sync(net);
        send(net.attach("uid", path));
        send(net.detach("uid", path));
        send(net.gc(live));
        send(net.set_routes(&[]));
    }

    #[test]
    fn veth_names_fit_and_are_stable() {
        let name = host_veth_name("bveth", "0b6f1c2e-3d4a-4b5c-8d6e-7f8091a2b3c4");
        assert_eq!(name.len(), 13);
        assert!(name.starts_with("bveth"));
        assert_eq!(
            name,
            host_veth_name("bveth", "0b6f1c2e-3d4a-4b5c-8d6e-7f8091a2b3c4")
        );
        assert_ne!(
            name,
            host_veth_name("bveth", "0b6f1c2e-3d4a-4b5c-8d6e-7f8091a2b3c5")
        );
        // FNV-1a of "a" is 0xe40c292c: pinned, since names must survive agent upgrades.
        assert_eq!(host_veth_name("v", "a"), "ve40c292c");
    }

    #[test]
    fn config_validation_names_the_field() {
        let ok = BridgeConfig::new("10.244.1.0/24".parse().unwrap(), "/tmp/x");
        assert!(ok.validate().is_ok());
        type Change = Box<dyn Fn(&mut BridgeConfig)>;
        let cases: Vec<(&str, Change)> = vec![
            (
                "bridge_name",
                Box::new(|c| c.bridge_name = "a-very-long-bridge-name".into()),
            ),
            ("bridge_name", Box::new(|c| c.bridge_name = String::new())),
            (
                "pod_cidr",
                Box::new(|c| c.pod_cidr = "10.244.1.1/24".parse().unwrap()),
            ),
            (
                "pod_cidr",
                Box::new(|c| c.pod_cidr = "10.244.1.0/31".parse().unwrap()),
            ),
            ("mtu", Box::new(|c| c.mtu = 100)),
            ("veth_prefix", Box::new(|c| c.veth_prefix = "toolong".into())),
            ("veth_prefix", Box::new(|c| c.veth_prefix = "a/b".into())),
            ("state_dir", Box::new(|c| c.state_dir = PathBuf::new())),
        ];
        for (field, change) in cases {
            let mut config = ok.clone();
            change(&mut config);
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains(field), "{field}: {err}");
        }
    }
}
