//! A lab of network namespaces for the pod network tests (root only). Every name starts with
//! `bnet-`; the [`Lab`] guard deletes every namespace it made when dropped, panics included,
//! and deleting a namespace destroys the bridges and veths inside it. Nothing here touches the
//! host's own interfaces or routes: the nodes' only link is a lab bridge with no uplink.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Namespace files made by `ip netns add`.
pub const NETNS_DIR: &str = "/run/netns";
/// How long a condition may take to hold in these tests (links coming up, ARP).
pub const EVENTUALLY_TIMEOUT_MS: u64 = 10_000;
/// Pause between two tries of a polled condition.
pub const POLL_INTERVAL_MS: u64 = 50;

pub fn run(args: &[&str]) -> Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("running {args:?}: {e}"))
}

/// Runs a command that must succeed; returns its stdout.
pub fn sh(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Namespaces made for one test, deleted (with everything in them) on drop.
pub struct Lab {
    names: Vec<String>,
    pub state: tempfile::TempDir,
}

impl Lab {
    pub fn new() -> Self {
        Self {
            names: Vec::new(),
            state: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// A fresh namespace `name` (a leftover of an earlier, killed run is replaced). Returns its
    /// namespace file.
    pub fn netns(&mut self, name: &str) -> PathBuf {
        assert!(
            name.starts_with("bnet-"),
            "lab names carry the helper prefix: {name}"
        );
        let _ = run(&["ip", "netns", "del", name]);
        sh(&["ip", "netns", "add", name]);
        self.names.push(name.to_string());
        sh(&["ip", "-n", name, "link", "set", "lo", "up"]);
        PathBuf::from(NETNS_DIR).join(name)
    }

    /// Nodes joined by a bridge in a namespace of its own: node `i` gets `bnet-up` with
    /// 192.168.250.<i+1>/24 (an address range used only inside these namespaces).
    pub fn nodes_on_lab_bridge(&mut self, lab: &str, nodes: &[&str]) -> Vec<(PathBuf, std::net::Ipv4Addr)> {
        self.netns(lab);
        sh(&["ip", "-n", lab, "link", "add", "bnet-lab0", "type", "bridge"]);
        sh(&["ip", "-n", lab, "link", "set", "bnet-lab0", "up"]);
        let mut out = Vec::new();
        for (i, node) in nodes.iter().enumerate() {
            let path = self.netns(node);
            let lab_end = format!("bnet-l{i}");
            sh(&[
                "ip", "-n", lab, "link", "add", &lab_end, "type", "veth", "peer", "name", "bnet-up", "netns",
                node,
            ]);
            sh(&[
                "ip",
                "-n",
                lab,
                "link",
                "set",
                &lab_end,
                "master",
                "bnet-lab0",
                "up",
            ]);
            let ip = std::net::Ipv4Addr::new(192, 168, 250, 1 + i as u8);
            sh(&[
                "ip",
                "-n",
                node,
                "addr",
                "add",
                &format!("{ip}/24"),
                "dev",
                "bnet-up",
            ]);
            sh(&["ip", "-n", node, "link", "set", "bnet-up", "up"]);
            out.push((path, ip));
        }
        out
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for name in self.names.iter().rev() {
            let out = run(&["ip", "netns", "del", name]);
            if !out.status.success() {
                eprintln!(
                    "cleanup: ip netns del {name}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
}

/// One ICMP echo from namespace `ns` to `ip`: true if answered.
pub fn ping_once(ns: &str, ip: &str) -> bool {
    run(&["ip", "netns", "exec", ns, "ping", "-c1", "-W1", "-n", "-q", ip])
        .status
        .success()
}

/// Polls `ping_once` until it is answered, failing the test after the deadline.
pub fn ping_eventually(ns: &str, ip: &str) {
    let deadline = Instant::now() + Duration::from_millis(EVENTUALLY_TIMEOUT_MS);
    while !ping_once(ns, ip) {
        assert!(Instant::now() < deadline, "{ns} cannot ping {ip}");
        std::thread::sleep(Duration::from_millis(POLL_INTERVAL_MS));
    }
}

/// `ip -n ns ...` output.
pub fn ip_in(ns: &str, args: &[&str]) -> String {
    let mut full = vec!["ip", "-n", ns];
    full.extend_from_slice(args);
    sh(&full)
}

/// Whether link `name` exists in namespace `ns`.
pub fn link_exists(ns: &str, name: &str) -> bool {
    run(&["ip", "-n", ns, "link", "show", "dev", name])
        .status
        .success()
}

/// The interface index of `name` in `ns`.
pub fn ifindex(ns: &str, name: &str) -> u32 {
    let out = ip_in(ns, &["-o", "link", "show", "dev", name]);
    out.split(':').next().unwrap().trim().parse().unwrap()
}
