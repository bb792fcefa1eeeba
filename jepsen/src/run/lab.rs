//! The lab network: one network namespace per node and one for the clients (`lab`), the
//! nodes' veth pairs joined by a bridge inside the lab namespace, on a private subnet with no
//! default route anywhere, so nothing in the lab can reach the host's uplink. Everything is
//! named `<prefix><run>-...` (prefix `bj-` unless configured) and removed when the [`Lab`] is
//! dropped. Only the namespace names are machine-global: the bridge, the veths, the subnet and
//! the nft tables live inside the lab's own namespaces, so two labs never share them.
//!
//! Faults on the network (partitions with nftables, slow links with tc netem) are applied
//! inside the node namespaces, so they never touch the host's own rules.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};

use crate::Error;

/// Default prefix of every namespace, bridge and veth the harness creates.
pub const NAME_PREFIX: &str = "bj-";
/// Longest prefix: interface names (`<prefix><run>-br`, run = 4 hex digits) must fit the
/// kernel's 15 bytes.
pub const NAME_PREFIX_BYTES_MAX: usize = 7;
/// The lab subnet (a /24); nodes are .1 to .N, the clients' address on the bridge is .254.
pub const SUBNET_PREFIX: &str = "10.77.0";
/// Most nodes a lab holds.
pub const NODES_MAX: usize = 9;
/// The nft table partitions use inside a node's namespace.
pub const PARTITION_TABLE: &str = "bj-partition";
/// The nft table of random packet loss where the kernel has no netem.
pub const LOSS_TABLE: &str = "bj-loss";
/// Rate of a slow link where the kernel has no netem.
pub const SLOW_LINK_RATE_KBIT: u64 = 512;

/// A lab: namespaces, bridge and veths, torn down on drop.
pub struct Lab {
    prefix: String,
    run: String,
    nodes: usize,
    created: Vec<String>,
}

impl Lab {
    /// Checks a name prefix: 1 to `NAME_PREFIX_BYTES_MAX` of `[a-z0-9-]`.
    pub fn check_prefix(prefix: &str) -> Result<(), Error> {
        let ok = !prefix.is_empty()
            && prefix.len() <= NAME_PREFIX_BYTES_MAX
            && prefix
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if ok {
            Ok(())
        } else {
            Err(Error::Config {
                field: "lab-prefix".into(),
                message: format!(
                    "{prefix:?} must be 1 to {NAME_PREFIX_BYTES_MAX} characters of a-z, 0-9 and -"
                ),
            })
        }
    }

    /// Creates the lab for `nodes` nodes; `run` is a short id unique among concurrent runs,
    /// `prefix` starts every name (see [`Lab::check_prefix`]).
    pub fn create(prefix: &str, run: &str, nodes: usize) -> Result<Lab, Error> {
        Self::check_prefix(prefix)?;
        if nodes == 0 || nodes > NODES_MAX {
            return Err(Error::Config {
                field: "nodes".into(),
                message: format!("must be between 1 and {NODES_MAX}, got {nodes}"),
            });
        }
        let mut lab = Lab {
            prefix: prefix.to_string(),
            run: run.to_string(),
            nodes,
            created: Vec::new(),
        };
        lab.build()?;
        Ok(lab)
    }

    fn build(&mut self) -> Result<(), Error> {
        let lab_ns = self.lab_netns();
        let bridge = format!("{}{}-br", self.prefix, self.run);
        self.add_netns(&lab_ns)?;
        ip(&["-n", &lab_ns, "link", "set", "lo", "up"])?;
        ip(&["-n", &lab_ns, "link", "add", &bridge, "type", "bridge"])?;
        let client_addr = format!("{SUBNET_PREFIX}.254/24");
        ip(&["-n", &lab_ns, "addr", "add", &client_addr, "dev", &bridge])?;
        ip(&["-n", &lab_ns, "link", "set", &bridge, "up"])?;
        for i in 1..=self.nodes {
            let ns = self.node_netns(i);
            let veth = format!("{}{}-v{i}", self.prefix, self.run);
            self.add_netns(&ns)?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            ip(&[
                "-n", &lab_ns, "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ])?;
            ip(&["-n", &lab_ns, "link", "set", &veth, "master", &bridge, "up"])?;
            let addr = format!("{}/24", self.node_ip(i));
            ip(&["-n", &ns, "addr", "add", &addr, "dev", "eth0"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        }
        Ok(())
    }

    fn add_netns(&mut self, name: &str) -> Result<(), Error> {
        ip(&["netns", "add", name])?;
        self.created.push(name.to_string());
        Ok(())
    }

    pub fn nodes(&self) -> usize {
        self.nodes
    }

    pub fn lab_netns(&self) -> String {
        format!("{}{}-lab", self.prefix, self.run)
    }

    /// Node `i` counts from 1.
    pub fn node_netns(&self, i: usize) -> String {
        format!("{}{}-n{i}", self.prefix, self.run)
    }

    pub fn node_ip(&self, i: usize) -> String {
        format!("{SUBNET_PREFIX}.{i}")
    }

    /// Drops all traffic between node `i` and the nodes in `blocked` (both directions),
    /// replacing any partition rule node `i` had.
    pub fn block(&self, i: usize, blocked: &[usize]) -> Result<(), Error> {
        self.unblock(i)?;
        if blocked.is_empty() {
            return Ok(());
        }
        let ips: Vec<String> = blocked.iter().map(|&b| self.node_ip(b)).collect();
        let set = ips.join(", ");
        let script = format!(
            "table inet {PARTITION_TABLE} {{\n chain input {{ type filter hook input priority -10; \
             ip saddr {{ {set} }} drop; }}\n chain output {{ type filter hook output priority -10; \
             ip daddr {{ {set} }} drop; }}\n}}\n"
        );
        self.in_node(i, "nft", &["-f", "-"], Some(&script))
    }

    /// Removes node `i`'s partition rules (if any).
    pub fn unblock(&self, i: usize) -> Result<(), Error> {
        let listed = self.in_node(i, "nft", &["list", "table", "inet", PARTITION_TABLE], None);
        if listed.is_ok() {
            self.in_node(i, "nft", &["delete", "table", "inet", PARTITION_TABLE], None)?;
        }
        Ok(())
    }

    /// Slows node `i`'s link: `delay_ms` ± `jitter_ms` and `loss_percent` on everything it
    /// sends, with tc netem. Kernels without netem get the nearest thing: a token bucket
    /// (`SLOW_LINK_RATE_KBIT`, queueing up to `delay_ms`) and random drops by nftables. Says
    /// which it applied.
    pub fn netem(
        &self,
        i: usize,
        delay_ms: u64,
        jitter_ms: u64,
        loss_percent: u64,
    ) -> Result<&'static str, Error> {
        self.clear_netem(i);
        let (delay, jitter, loss) = (
            format!("{delay_ms}ms"),
            format!("{jitter_ms}ms"),
            format!("{loss_percent}%"),
        );
        let netem = self.in_node(
            i,
            "tc",
            &[
                "qdisc", "add", "dev", "eth0", "root", "netem", "delay", &delay, &jitter, "loss", &loss,
            ],
            None,
        );
        match netem {
            Ok(()) => Ok("netem"),
            Err(e) if e.to_string().contains("qdisc kind is unknown") => {
                let rate = format!("{SLOW_LINK_RATE_KBIT}kbit");
                let latency = format!("{}ms", delay_ms.max(1));
                self.in_node(
                    i,
                    "tc",
                    &[
                        "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", &rate, "burst", "16kb",
                        "latency", &latency,
                    ],
                    None,
                )?;
                let script = format!(
                    "table inet {LOSS_TABLE} {{\n chain output {{\n  type filter hook output priority -5;\n  \
                     numgen random mod 100 < {loss_percent} drop\n }}\n}}\n"
                );
                self.in_node(i, "nft", &["-f", "-"], Some(&script))?;
                Ok("tbf+nft-loss (no netem in this kernel)")
            }
            Err(e) => Err(e),
        }
    }

    pub fn clear_netem(&self, i: usize) {
        let _ = self.in_node(i, "tc", &["qdisc", "del", "dev", "eth0", "root"], None);
        if self
            .in_node(i, "nft", &["list", "table", "inet", LOSS_TABLE], None)
            .is_ok()
        {
            let _ = self.in_node(i, "nft", &["delete", "table", "inet", LOSS_TABLE], None);
        }
    }

    /// Runs a tool inside node `i`'s namespace.
    fn in_node(&self, i: usize, tool: &str, args: &[&str], stdin: Option<&str>) -> Result<(), Error> {
        let ns = self.node_netns(i);
        let mut full = vec!["netns", "exec", &ns, tool];
        full.extend_from_slice(args);
        run_tool("ip", &full, stdin)
    }

    /// An open handle on the namespace, for `setns`.
    pub fn open_netns(name: &str) -> Result<File, Error> {
        let path = format!("/var/run/netns/{name}");
        File::open(&path).map_err(|e| Error::Lab {
            step: format!("open {path}"),
            message: e.to_string(),
        })
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Deleting a namespace deletes its veth ends and the bridge with it.
        for ns in self.created.drain(..).rev() {
            if let Err(e) = ip(&["netns", "del", &ns]) {
                tracing::warn!("lab cleanup: {e}");
            }
        }
    }
}

/// Moves the calling thread into the network namespace `ns` (sockets it opens from now on
/// live there). Other threads are unaffected.
pub fn enter_netns(ns: &File) -> std::io::Result<()> {
    // SAFETY: setns on a valid, open namespace fd; affects only the calling thread.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn ip(args: &[&str]) -> Result<(), Error> {
    run_tool("ip", args, None)
}

fn run_tool(tool: &str, args: &[&str], stdin: Option<&str>) -> Result<(), Error> {
    use std::io::Write;
    let step = format!("{tool} {}", args.join(" "));
    let failed = |message: String| Error::Lab {
        step: step.clone(),
        message,
    };
    let mut child = Command::new(tool)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| failed(e.to_string()))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .map_err(|e| failed(e.to_string()))?;
    }
    let out = child.wait_with_output().map_err(|e| failed(e.to_string()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(failed(String::from_utf8_lossy(&out.stderr).trim().to_string()))
    }
}
