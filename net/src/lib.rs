//! Berth's pod network on one node. The node agent creates each pod's network namespace (a
//! namespace file) and calls [`BridgeNetwork`] to wire it: the node owns a bridge whose address
//! is its pod CIDR's gateway, each pod gets a veth pair (host end a hairpin port of the bridge,
//! pod end `eth0` with an address from the node's [`ipam`], default route via the gateway),
//! and the host routes other nodes' pod CIDRs to their node IPs, so pod-to-pod traffic crosses
//! nodes with plain IP forwarding (no overlay, no NAT). [`cidr`] also carves node pod CIDRs out
//! of the cluster CIDR for the controller that assigns Node.spec.podCIDR.
//!
//! Invariants: an address is held by at most one pod, and is on disk before a pod uses it;
//! every operation is idempotent and level-triggered (re-run after a crash it converges);
//! namespaces are entered only on dedicated threads, never on the async runtime's; routes this
//! crate owns carry [`ROUTE_PROTOCOL_BERTH`] and no other route is ever removed.
//! The kernel is spoken to over netlink (rtnetlink), not by running `ip`.
//!
//! Does not know: the control plane, Pods or Nodes as API objects (it takes uids, namespace
//! paths and CIDRs), how namespaces are created, services, DNS, IPv6, NAT to the outside.

pub mod bridge;
pub mod cidr;
mod error;
pub mod ipam;
mod netlink;
pub mod netns;

pub use bridge::{BridgeConfig, BridgeNetwork, ROUTE_PROTOCOL_BERTH};
pub use error::NetError;
pub use ipnet::Ipv4Net;
