//! CIDR arithmetic: the addresses of a node's pod CIDR, and node pod CIDRs carved out of the
//! cluster CIDR. Pure functions, no I/O.
//!
//! Convention for a pod CIDR (as Kubernetes' bridge plugins do): the network address and the
//! broadcast address are never handed out, the first host address is the bridge's (the pods'
//! gateway), and pods get the host addresses after it.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::error::NetError;

/// The longest pod CIDR prefix that still leaves room for a gateway and one pod (a /30 has two
/// host addresses).
pub const POD_CIDR_PREFIX_MAX: u8 = 30;

/// The node pod CIDR size Kubernetes uses by default (`--node-cidr-mask-size`).
pub const NODE_CIDR_PREFIX_DEFAULT: u8 = 24;

/// Checks that `cidr` can serve as a pod CIDR: a network address (no host bits set) and room for
/// a gateway and at least one pod. `field` names the config field or flag in the error.
pub fn check_pod_cidr(field: &'static str, cidr: Ipv4Net) -> Result<(), NetError> {
    if cidr.addr() != cidr.network() {
        return Err(NetError::invalid(
            field,
            format!("{cidr} has host bits set (did you mean {}?)", cidr.trunc()),
        ));
    }
    if cidr.prefix_len() > POD_CIDR_PREFIX_MAX {
        return Err(NetError::invalid(
            field,
            format!("{cidr} is too small: the prefix must be /{POD_CIDR_PREFIX_MAX} or shorter"),
        ));
    }
    Ok(())
}

/// The gateway of a pod CIDR: its first host address (the bridge's address).
pub fn gateway(cidr: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(cidr.network()) + 1)
}

/// The first and last address a pod may get: after the gateway, before the broadcast address.
/// The caller has checked the CIDR with [`check_pod_cidr`], so the range is never empty.
pub fn pod_range(cidr: Ipv4Net) -> (Ipv4Addr, Ipv4Addr) {
    let first = u32::from(cidr.network()) + 2;
    let last = u32::from(cidr.broadcast()) - 1;
    assert!(
        first <= last,
        "pod CIDR {cidr} has no room for pods (unchecked config)"
    );
    (Ipv4Addr::from(first), Ipv4Addr::from(last))
}

/// How many pods a pod CIDR holds.
pub fn pod_capacity(cidr: Ipv4Net) -> u32 {
    let (first, last) = pod_range(cidr);
    u32::from(last) - u32::from(first) + 1
}

/// The lowest `/node_prefix` subnet of `cluster` not in `used`, or None when all are used.
/// Entries of `used` that are not `/node_prefix` subnets of `cluster` are ignored.
pub fn lowest_free_subnet(cluster: Ipv4Net, node_prefix: u8, used: &BTreeSet<Ipv4Net>) -> Option<Ipv4Net> {
    cluster
        .subnets(node_prefix)
        .ok()?
        .find(|subnet| !used.contains(subnet))
}

/// Hands out node pod CIDRs from the cluster CIDR: the lowest free one first, so that a
/// controller rebuilding its state from the Nodes it sees (`mark_used`) and then allocating
/// makes the same choice as one that never restarted.
#[derive(Debug, Clone)]
pub struct NodeCidrAllocator {
    cluster: Ipv4Net,
    node_prefix: u8,
    used: BTreeSet<Ipv4Net>,
}

impl NodeCidrAllocator {
    /// `cluster` is `--cluster-cidr`, `node_prefix` the size of each node's pod CIDR.
    pub fn new(cluster: Ipv4Net, node_prefix: u8) -> Result<Self, NetError> {
        if cluster.addr() != cluster.network() {
            return Err(NetError::invalid(
                "cluster_cidr",
                format!("{cluster} has host bits set (did you mean {}?)", cluster.trunc()),
            ));
        }
        if node_prefix < cluster.prefix_len() || node_prefix > POD_CIDR_PREFIX_MAX {
            return Err(NetError::invalid(
                "node_cidr_prefix",
                format!(
                    "/{node_prefix} must be between the cluster CIDR's /{} and /{POD_CIDR_PREFIX_MAX}",
                    cluster.prefix_len()
                ),
            ));
        }
        Ok(Self {
            cluster,
            node_prefix,
            used: BTreeSet::new(),
        })
    }

    /// The lowest free node CIDR, now marked used.
    pub fn allocate(&mut self) -> Result<Ipv4Net, NetError> {
        let subnet = lowest_free_subnet(self.cluster, self.node_prefix, &self.used).ok_or(
            NetError::CidrExhausted {
                cidr: self.cluster,
                prefix: self.node_prefix,
            },
        )?;
        self.used.insert(subnet);
        Ok(subnet)
    }

    /// Records a node CIDR already in use (seen on a Node). Idempotent. Errors when it is not a
    /// `/node_prefix` subnet of the cluster CIDR.
    pub fn mark_used(&mut self, subnet: Ipv4Net) -> Result<(), NetError> {
        let aligned = subnet.addr() == subnet.network();
        if !aligned || subnet.prefix_len() != self.node_prefix || !self.cluster.contains(&subnet) {
            return Err(NetError::invalid(
                "podCIDR",
                format!(
                    "{subnet} is not a /{} subnet of the cluster CIDR {}",
                    self.node_prefix, self.cluster
                ),
            ));
        }
        self.used.insert(subnet);
        Ok(())
    }

    /// Frees a node CIDR; true if it was in use.
    pub fn release(&mut self, subnet: Ipv4Net) -> bool {
        self.used.remove(&subnet)
    }

    /// The node CIDRs in use, in address order.
    pub fn used(&self) -> &BTreeSet<Ipv4Net> {
        &self.used
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn pod_cidr_addresses() {
        let cidr = net("10.244.1.0/24");
        assert_eq!(gateway(cidr), Ipv4Addr::new(10, 244, 1, 1));
        assert_eq!(
            pod_range(cidr),
            (Ipv4Addr::new(10, 244, 1, 2), Ipv4Addr::new(10, 244, 1, 254))
        );
        assert_eq!(pod_capacity(cidr), 253);
        let smallest = net("10.0.0.4/30");
        assert_eq!(gateway(smallest), Ipv4Addr::new(10, 0, 0, 5));
        assert_eq!(pod_capacity(smallest), 1);
    }

    #[test]
    fn pod_cidr_checks_name_the_field() {
        assert!(check_pod_cidr("pod_cidr", net("10.244.1.0/24")).is_ok());
        let err = check_pod_cidr("pod_cidr", net("10.244.1.7/24"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("pod_cidr") && err.contains("10.244.1.0/24"), "{err}");
        let err = check_pod_cidr("pod_cidr", net("10.244.1.0/31"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("pod_cidr") && err.contains("/30"), "{err}");
    }

    #[test]
    fn lowest_free_subnet_skips_used_ones() {
        let cluster = net("10.244.0.0/16");
        let mut used = BTreeSet::new();
        assert_eq!(lowest_free_subnet(cluster, 24, &used), Some(net("10.244.0.0/24")));
        used.insert(net("10.244.0.0/24"));
        used.insert(net("10.244.2.0/24"));
        assert_eq!(lowest_free_subnet(cluster, 24, &used), Some(net("10.244.1.0/24")));
        let full: BTreeSet<_> = cluster.subnets(24).unwrap().collect();
        assert_eq!(lowest_free_subnet(cluster, 24, &full), None);
    }

    #[test]
    fn allocator_hands_out_lowest_free_and_reuses_released() {
        let mut alloc = NodeCidrAllocator::new(net("10.244.0.0/16"), 24).unwrap();
        assert_eq!(alloc.allocate().unwrap(), net("10.244.0.0/24"));
        assert_eq!(alloc.allocate().unwrap(), net("10.244.1.0/24"));
        assert_eq!(alloc.allocate().unwrap(), net("10.244.2.0/24"));
        assert!(alloc.release(net("10.244.1.0/24")));
        assert!(!alloc.release(net("10.244.1.0/24")), "second release is a no-op");
        assert_eq!(alloc.allocate().unwrap(), net("10.244.1.0/24"));
        assert_eq!(alloc.allocate().unwrap(), net("10.244.3.0/24"));
    }

    #[test]
    fn allocator_rebuilt_from_nodes_skips_their_cidrs() {
        let mut alloc = NodeCidrAllocator::new(net("10.244.0.0/16"), 24).unwrap();
        alloc.mark_used(net("10.244.0.0/24")).unwrap();
        alloc.mark_used(net("10.244.0.0/24")).unwrap();
        alloc.mark_used(net("10.244.5.0/24")).unwrap();
        assert_eq!(alloc.allocate().unwrap(), net("10.244.1.0/24"));
        for bad in ["10.245.0.0/24", "10.244.0.0/25", "10.244.0.128/24"] {
            let err = alloc.mark_used(net(bad)).unwrap_err().to_string();
            assert!(err.contains("podCIDR"), "{bad}: {err}");
        }
    }

    #[test]
    fn allocator_exhaustion_names_the_cluster_cidr() {
        let mut alloc = NodeCidrAllocator::new(net("10.244.0.0/23"), 24).unwrap();
        alloc.allocate().unwrap();
        alloc.allocate().unwrap();
        let err = alloc.allocate().unwrap_err().to_string();
        assert!(err.contains("10.244.0.0/23") && err.contains("/24"), "{err}");
    }

    #[test]
    fn allocator_rejects_bad_config() {
        let err = NodeCidrAllocator::new(net("10.244.0.0/16"), 8)
            .unwrap_err()
            .to_string();
        assert!(err.contains("node_cidr_prefix"), "{err}");
        let err = NodeCidrAllocator::new(net("10.244.0.0/16"), 31)
            .unwrap_err()
            .to_string();
        assert!(err.contains("node_cidr_prefix"), "{err}");
        let err = NodeCidrAllocator::new(net("10.244.3.0/16"), 24)
            .unwrap_err()
            .to_string();
        assert!(err.contains("cluster_cidr"), "{err}");
    }
}
