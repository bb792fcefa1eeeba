//! The pod network on real kernel objects (run as root): nodes and pods are network namespaces,
//! traffic is real ICMP from iputils' ping. See `common` for the lab and its cleanup.

mod common;

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_net::bridge::host_veth_name;
use berth_net::{BridgeConfig, BridgeNetwork, Ipv4Net, NetError};
use common::*;

const VETH_PREFIX: &str = "bnet-";
const BRIDGE: &str = "bnet-br0";

fn config(pod_cidr: &str, node_ip: Option<Ipv4Addr>, node_netns: &Path, state_dir: PathBuf) -> BridgeConfig {
    let mut config = BridgeConfig::new(pod_cidr.parse().unwrap(), state_dir);
    config.bridge_name = BRIDGE.to_string();
    config.veth_prefix = VETH_PREFIX.to_string();
    config.node_ip = node_ip;
    config.host_netns = Some(node_netns.to_path_buf());
    config
}

fn v4(ip: IpAddr) -> String {
    ip.to_string()
}

/// Two nodes, pods on each: pod → gateway, pod → pod on one node, pod → pod across nodes once
/// (and only while) set_routes has put the routes in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_reach_each_other_on_and_across_nodes() {
    let mut lab = Lab::new();
    let nodes = lab.nodes_on_lab_bridge("bnet-xlab", &["bnet-xn1", "bnet-xn2"]);
    let (n1_path, n1_ip) = nodes[0].clone();
    let (n2_path, n2_ip) = nodes[1].clone();
    let p1a = lab.netns("bnet-xp1a");
    let p1b = lab.netns("bnet-xp1b");
    let p2a = lab.netns("bnet-xp2a");
    let state = lab.state.path().to_path_buf();

    let n1 = BridgeNetwork::new(config("10.244.1.0/24", Some(n1_ip), &n1_path, state.join("n1")))
        .await
        .unwrap();
    let n2 = BridgeNetwork::new(config("10.244.2.0/24", Some(n2_ip), &n2_path, state.join("n2")))
        .await
        .unwrap();
    assert_eq!(n1.gateway(), Ipv4Addr::new(10, 244, 1, 1));
    for node in ["bnet-xn1", "bnet-xn2"] {
        assert_eq!(
            sh(&[
                "ip",
                "netns",
                "exec",
                node,
                "cat",
                "/proc/sys/net/ipv4/ip_forward"
            ])
            .trim(),
            "1"
        );
    }

    // Two pods of one node at once, as the agent's workers may ask.
    let (ip_1a, ip_1b) = tokio::join!(n1.attach("pod-1a", &p1a), n1.attach("pod-1b", &p1b));
    let (ip_1a, ip_1b) = (ip_1a.unwrap(), ip_1b.unwrap());
    let ip_2a = n2.attach("pod-2a", &p2a).await.unwrap();
    let mut node1_ips = [v4(ip_1a), v4(ip_1b)];
    node1_ips.sort();
    assert_eq!(node1_ips, ["10.244.1.2", "10.244.1.3"]);
    assert_eq!(ip_2a, "10.244.2.2".parse::<IpAddr>().unwrap());

    // The pod side: eth0 with the address, default route via the gateway, lo up.
    let addrs = ip_in("bnet-xp1a", &["-4", "-o", "addr", "show", "dev", "eth0"]);
    assert!(addrs.contains(&format!("{ip_1a}/24")), "{addrs}");
    let routes = ip_in("bnet-xp1a", &["-4", "route", "show", "default"]);
    assert!(routes.contains("via 10.244.1.1 dev eth0"), "{routes}");
    assert!(ip_in("bnet-xp1a", &["link", "show", "lo"]).contains("UP"));
    // The host side: a hairpin port of the bridge, which holds the gateway address.
    let veth = host_veth_name(VETH_PREFIX, "pod-1a");
    let details = ip_in("bnet-xn1", &["-d", "link", "show", "dev", &veth]);
    assert!(
        details.contains(&format!("master {BRIDGE}")) && details.contains("hairpin on"),
        "{details}"
    );
    assert!(ip_in("bnet-xn1", &["-4", "-o", "addr", "show", "dev", BRIDGE]).contains("10.244.1.1/24"));

    ping_eventually("bnet-xp1a", "10.244.1.1");
    ping_eventually("bnet-xp1a", &v4(ip_1b));
    ping_eventually("bnet-xp2a", "10.244.2.1");

    // Across nodes: no route yet, so no answer (the nodes' only link has no default route).
    assert!(
        !ping_once("bnet-xp1a", &v4(ip_2a)),
        "cross-node traffic must need the routes"
    );
    let peers: Vec<(Ipv4Net, Ipv4Addr)> = vec![
        ("10.244.1.0/24".parse().unwrap(), n1_ip),
        ("10.244.2.0/24".parse().unwrap(), n2_ip),
    ];
    n1.set_routes(&peers).await.unwrap();
    n2.set_routes(&peers).await.unwrap();
    let routes = ip_in("bnet-xn1", &["-4", "route", "show", "proto", "190"]);
    assert_eq!(
        routes.trim(),
        format!("10.244.2.0/24 via {n2_ip} dev bnet-up"),
        "own CIDR skipped"
    );
    ping_eventually("bnet-xp1a", &v4(ip_2a));
    ping_eventually("bnet-xp2a", &v4(ip_1b));

    // Level-triggered: a stale route of ours goes, a route of someone else stays, and with no
    // peers left the cross-node route goes too.
    ip_in(
        "bnet-xn1",
        &[
            "route",
            "add",
            "10.244.9.0/24",
            "via",
            &n2_ip.to_string(),
            "proto",
            "190",
        ],
    );
    ip_in(
        "bnet-xn1",
        &[
            "route",
            "add",
            "10.244.8.0/24",
            "via",
            &n2_ip.to_string(),
            "proto",
            "static",
        ],
    );
    n1.set_routes(&peers).await.unwrap();
    let routes = ip_in("bnet-xn1", &["-4", "route", "show"]);
    assert!(!routes.contains("10.244.9.0/24"), "{routes}");
    assert!(
        routes.contains("10.244.8.0/24") && routes.contains("10.244.2.0/24"),
        "{routes}"
    );
    n1.set_routes(&[]).await.unwrap();
    assert_eq!(
        ip_in("bnet-xn1", &["-4", "route", "show", "proto", "190"]).trim(),
        ""
    );
    assert!(
        !ping_once("bnet-xp1a", &v4(ip_2a)),
        "route removed, traffic stops"
    );

    // A peer whose node IP is not on a connected network: an error naming the CIDR, and the
    // other peers are still routed.
    let bad: Vec<(Ipv4Net, Ipv4Addr)> = vec![
        ("10.244.3.0/24".parse().unwrap(), Ipv4Addr::new(172, 31, 0, 9)),
        peers[1],
    ];
    let err = n1.set_routes(&bad).await.unwrap_err();
    assert!(
        matches!(err, NetError::Route { .. }) && err.to_string().contains("10.244.3.0/24"),
        "{err}"
    );
    ping_eventually("bnet-xp1a", &v4(ip_2a));
}

/// Attach is idempotent, a restart over the same state dir keeps every allocation, detach
/// removes the veth and frees the address, gc frees what a lost detach leaked, and a pod whose
/// network was damaged is repaired by attaching again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_detach_restart_and_gc() {
    let mut lab = Lab::new();
    let node = lab.netns("bnet-rn");
    let pa = lab.netns("bnet-rpa");
    let pb = lab.netns("bnet-rpb");
    let pc = lab.netns("bnet-rpc");
    let pd = lab.netns("bnet-rpd");
    let state_dir = lab.state.path().join("node");
    let mut cfg = config("10.244.7.0/24", None, &node, state_dir.clone());
    cfg.mtu = 1450;

    let net = BridgeNetwork::new(cfg.clone()).await.unwrap();
    let ip_a = net.attach("uid-a", &pa).await.unwrap();
    let veth_a = host_veth_name(VETH_PREFIX, "uid-a");
    let index_before = ifindex("bnet-rn", &veth_a);
    for (ns, link) in [
        ("bnet-rn", BRIDGE),
        ("bnet-rn", veth_a.as_str()),
        ("bnet-rpa", "eth0"),
    ] {
        let shown = ip_in(ns, &["link", "show", "dev", link]);
        assert!(shown.contains("mtu 1450"), "{ns} {link}: {shown}");
    }
    assert_eq!(
        net.attach("uid-a", &pa).await.unwrap(),
        ip_a,
        "attach twice: same address"
    );
    assert_eq!(
        ifindex("bnet-rn", &veth_a),
        index_before,
        "attach twice: the pair is kept"
    );
    let ip_b = net.attach("uid-b", &pb).await.unwrap();
    assert_ne!(ip_a, ip_b);
    ping_eventually("bnet-rpa", &v4(ip_b));

    // Restart: a new BridgeNetwork over the same state dir and the same kernel state.
    drop(net);
    let net = BridgeNetwork::new(cfg.clone()).await.unwrap();
    assert_eq!(net.allocations().await.len(), 2);
    assert_eq!(net.attach("uid-a", &pa).await.unwrap(), ip_a);
    assert_eq!(
        ifindex("bnet-rn", &veth_a),
        index_before,
        "restart keeps the wiring"
    );
    let ip_c = net.attach("uid-c", &pc).await.unwrap();
    assert!(
        ip_c != ip_a && ip_c != ip_b,
        "a restarted node never hands out an address in use"
    );

    // Damage inside a pod (address and route gone): attaching again repairs it.
    ip_in("bnet-rpa", &["addr", "flush", "dev", "eth0"]);
    assert!(!ping_once("bnet-rpa", &v4(ip_b)));
    assert_eq!(net.attach("uid-a", &pa).await.unwrap(), ip_a);
    ping_eventually("bnet-rpa", &v4(ip_b));
    // A half-made pair (the pod end lost): the pair is made anew.
    ip_in("bnet-rpa", &["link", "del", "eth0"]);
    assert!(!link_exists("bnet-rn", &veth_a), "a veth goes with its peer");
    assert_eq!(net.attach("uid-a", &pa).await.unwrap(), ip_a);
    ping_eventually("bnet-rpa", &v4(ip_c));

    // Detach: veth gone on both sides, address free; detach again is fine.
    let veth_b = host_veth_name(VETH_PREFIX, "uid-b");
    net.detach("uid-b", &pb).await.unwrap();
    assert!(!link_exists("bnet-rn", &veth_b));
    assert!(!link_exists("bnet-rpb", "eth0"));
    assert!(!net.allocations().await.contains_key("uid-b"));
    net.detach("uid-b", &pb).await.unwrap();
    net.detach("uid-b", Path::new("/run/netns/bnet-gone"))
        .await
        .unwrap();
    // The agent may have unmounted the namespace and left its (now ordinary) file behind.
    let stale_file = lab.state.path().join("unmounted-netns");
    std::fs::write(&stale_file, b"").unwrap();
    net.detach("uid-b", &stale_file).await.unwrap();

    // gc: uid-d's detach never came (the agent crashed); it is not among the live pods.
    let ip_d = net.attach("uid-d", &pd).await.unwrap();
    assert!(ip_d != ip_a && ip_d != ip_c);
    // And uid-z's attach died right after making its pair (labelled, no address recorded).
    ip_in(
        "bnet-rn",
        &[
            "link", "add", "bnet-zz", "type", "veth", "peer", "name", "bnet-zzp",
        ],
    );
    ip_in("bnet-rn", &["link", "set", "bnet-zz", "alias", "berth-pod:uid-z"]);
    // Not ours: no label.
    ip_in(
        "bnet-rn",
        &[
            "link", "add", "bnet-o1", "type", "veth", "peer", "name", "bnet-o1p",
        ],
    );
    let live: HashSet<String> = ["uid-a".to_string(), "uid-c".to_string()].into();
    assert_eq!(
        net.gc(&live).await.unwrap(),
        vec!["uid-d".to_string(), "uid-z".to_string()]
    );
    assert!(!link_exists("bnet-rn", &host_veth_name(VETH_PREFIX, "uid-d")));
    assert!(!link_exists("bnet-rn", "bnet-zz") && !link_exists("bnet-rn", "bnet-zzp"));
    assert!(link_exists("bnet-rn", "bnet-o1"));
    assert_eq!(
        net.allocations().await.keys().cloned().collect::<HashSet<_>>(),
        live
    );
    assert!(net.gc(&live).await.unwrap().is_empty(), "gc is idempotent");
    ping_eventually("bnet-rpc", &v4(ip_a));

    // Nothing ran a runtime thread inside another namespace: every thread left is in ours.
    assert_threads_in_own_netns();
}

/// Every thread of this process is in the process's network namespace (the dedicated
/// namespace threads have ended).
fn assert_threads_in_own_netns() {
    let own = std::fs::read_link("/proc/self/ns/net").unwrap();
    let deadline = Instant::now() + Duration::from_millis(EVENTUALLY_TIMEOUT_MS);
    loop {
        let strays: Vec<_> = std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|task| std::fs::read_link(task.ok()?.path().join("ns/net")).ok())
            .filter(|ns| *ns != own)
            .collect();
        if strays.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "threads left in other namespaces: {strays:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Bad input is an error naming the field, before anything is created.
#[tokio::test]
async fn bad_config_and_input_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = BridgeConfig::new("10.244.1.0/24".parse().unwrap(), dir.path());
    cfg.bridge_name = "bnet-this-name-is-too-long".into();
    let err = BridgeNetwork::new(cfg).await.err().expect("refused").to_string();
    assert!(err.contains("bridge_name"), "{err}");

    let mut lab = Lab::new();
    let node = lab.netns("bnet-vn");
    let net = BridgeNetwork::new(config("10.244.5.0/24", None, &node, dir.path().join("s")))
        .await
        .unwrap();
    let err = net
        .attach("", Path::new("/run/netns/bnet-vn"))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("pod_uid"), "{err}");
    let err = net
        .attach("uid", Path::new("/run/netns/bnet-missing"))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("/run/netns/bnet-missing"), "{err}");
    assert!(
        net.allocations().await.is_empty(),
        "a failed attach on a wrong path holds no address"
    );
    let err = net
        .set_routes(&[("10.244.6.1/24".parse().unwrap(), Ipv4Addr::LOCALHOST)])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("peers"), "{err}");
}
