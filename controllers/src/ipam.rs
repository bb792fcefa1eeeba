//! Node IPAM: gives every node a pod CIDR (`spec.podCIDR`, `spec.podCIDRs`) carved from the
//! cluster CIDR, one /24 (by default) per node.
//!
//! The allocation is the node object itself: the set of CIDRs in use is the set written on the
//! cached nodes, plus allocations this instance made that the cache has not shown yet. A node
//! keeps its CIDR for life (stable); deleting the node frees it. The controller runs one worker,
//! so two allocations never race inside one instance, and one instance leads at a time. The
//! lowest free block is taken. (The `net` crate will own CIDR carving; this small copy serves
//! until the two are merged.)

use crate::runtime::{Action, Reconciler};
use crate::util::*;
use crate::Error;
use berth_client::{Informer, ResourceClient};
use berth_proto::corev1::Node;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

/// Prefix length of each node's pod CIDR.
pub const NODE_CIDR_PREFIX_LEN: u8 = 24;

/// An IPv4 network: address (host bits zero) and prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Cidr {
    pub network: u32,
    pub prefix_len: u8,
}

impl FromStr for Ipv4Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, len) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not an IPv4 CIDR like 10.244.0.0/16"))?;
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| format!("{s:?}: {addr:?} is not an IPv4 address"))?;
        let prefix_len: u8 = len
            .parse()
            .ok()
            .filter(|l| *l <= 32)
            .ok_or_else(|| format!("{s:?}: prefix length {len:?} is not 0..=32"))?;
        let network = u32::from(addr) & mask(prefix_len);
        if network != u32::from(addr) {
            return Err(format!(
                "{s:?}: host bits set (network is {})",
                Ipv4Addr::from(network)
            ));
        }
        Ok(Ipv4Cidr { network, prefix_len })
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.network), self.prefix_len)
    }
}

fn mask(prefix_len: u8) -> u32 {
    if prefix_len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix_len))
    }
}

impl Ipv4Cidr {
    /// How many /`sub_len` blocks it holds (0 if `sub_len` is shorter than its prefix).
    pub fn block_count(&self, sub_len: u8) -> u64 {
        if sub_len < self.prefix_len || sub_len > 32 {
            return 0;
        }
        1u64 << (sub_len - self.prefix_len)
    }

    /// The `index`th /`sub_len` block.
    pub fn block(&self, sub_len: u8, index: u64) -> Option<Ipv4Cidr> {
        if index >= self.block_count(sub_len) {
            return None;
        }
        let network = self.network + (index << (32 - u32::from(sub_len))) as u32;
        Some(Ipv4Cidr {
            network,
            prefix_len: sub_len,
        })
    }

    /// The index of `block` among the /`block.prefix_len` blocks, if it is one of them.
    pub fn index_of(&self, block: &Ipv4Cidr) -> Option<u64> {
        let sub = block.prefix_len;
        if sub < self.prefix_len || block.network & mask(self.prefix_len) != self.network {
            return None;
        }
        Some(u64::from((block.network - self.network) >> (32 - u32::from(sub))))
    }
}

/// The lowest free /`sub_len` block of `cluster` given the blocks in use.
pub fn first_free(cluster: &Ipv4Cidr, sub_len: u8, used: &HashSet<u64>) -> Option<Ipv4Cidr> {
    (0..cluster.block_count(sub_len))
        .find(|i| !used.contains(i))
        .and_then(|i| cluster.block(sub_len, i))
}

pub struct IpamController {
    pub client: ResourceClient,
    pub nodes: Arc<Informer<Node>>,
    pub cluster_cidr: Ipv4Cidr,
    /// Allocations written but not yet seen in the cache, by node name.
    pub pending: Mutex<HashMap<String, Ipv4Cidr>>,
}

impl IpamController {
    fn used(&self, except: &str) -> HashSet<u64> {
        let mut used: HashSet<u64> = self
            .nodes
            .list()
            .iter()
            .filter_map(|n| n.spec.as_ref()?.pod_cidr.parse::<Ipv4Cidr>().ok())
            .filter(|c| c.prefix_len == NODE_CIDR_PREFIX_LEN)
            .filter_map(|c| self.cluster_cidr.index_of(&c))
            .collect();
        let pending = self.pending.lock().unwrap();
        used.extend(
            pending
                .iter()
                .filter(|(n, _)| n.as_str() != except)
                .filter_map(|(_, c)| self.cluster_cidr.index_of(c)),
        );
        used
    }
}

impl Reconciler for IpamController {
    fn name(&self) -> &'static str {
        "nodeipam"
    }

    async fn reconcile(&self, key: &str) -> Result<Action, Error> {
        let Some(node) = self.nodes.get(key) else {
            self.pending.lock().unwrap().remove(key);
            return Ok(Action::AwaitChange);
        };
        if node.spec.as_ref().is_some_and(|s| !s.pod_cidr.is_empty()) {
            self.pending.lock().unwrap().remove(key);
            return Ok(Action::AwaitChange);
        }
        let pending = self.pending.lock().unwrap().get(key).copied();
        let cidr = match pending {
            Some(c) => c,
            None => {
                first_free(&self.cluster_cidr, NODE_CIDR_PREFIX_LEN, &self.used(key)).ok_or_else(|| {
                    Error::Invalid(format!(
                        "node {key}: cluster CIDR {} has no free /{NODE_CIDR_PREFIX_LEN}",
                        self.cluster_cidr
                    ))
                })?
            }
        };
        self.pending.lock().unwrap().insert(key.to_string(), cidr);
        let mut next = node.clone();
        let spec = next.spec.get_or_insert_with(Default::default);
        spec.pod_cidr = cidr.to_string();
        spec.pod_cidrs = vec![cidr.to_string()];
        self.client.update(&next).await?;
        tracing::info!(node = %meta(&node).name, pod_cidr = %cidr, "allocated pod CIDR");
        Ok(Action::AwaitChange)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_parse_and_reject_with_reasons() {
        let c: Ipv4Cidr = "10.244.0.0/16".parse().unwrap();
        assert_eq!(c.to_string(), "10.244.0.0/16");
        assert!("10.244.0.1/16"
            .parse::<Ipv4Cidr>()
            .unwrap_err()
            .contains("host bits"));
        assert!("10.244.0.0".parse::<Ipv4Cidr>().is_err());
        assert!("10.244.0.0/33".parse::<Ipv4Cidr>().is_err());
        assert!("fd00::/8".parse::<Ipv4Cidr>().is_err());
    }

    #[test]
    fn blocks_are_carved_in_order_and_reused_when_freed() {
        let c: Ipv4Cidr = "10.244.0.0/16".parse().unwrap();
        assert_eq!(c.block_count(24), 256);
        assert_eq!(c.block(24, 0).unwrap().to_string(), "10.244.0.0/24");
        assert_eq!(c.block(24, 255).unwrap().to_string(), "10.244.255.0/24");
        assert!(c.block(24, 256).is_none());
        assert_eq!(c.index_of(&"10.244.7.0/24".parse().unwrap()), Some(7));
        assert_eq!(c.index_of(&"10.245.7.0/24".parse().unwrap()), None);
        let mut used = HashSet::new();
        assert_eq!(first_free(&c, 24, &used).unwrap().to_string(), "10.244.0.0/24");
        used.extend([0, 1, 3]);
        assert_eq!(first_free(&c, 24, &used).unwrap().to_string(), "10.244.2.0/24");
        let small: Ipv4Cidr = "10.0.0.0/23".parse().unwrap();
        assert!(first_free(&small, 24, &[0, 1].into_iter().collect()).is_none());
        assert_eq!(small.block_count(22), 0);
    }
}
