use std::net::Ipv4Addr;
use std::path::PathBuf;

use ipnet::Ipv4Net;

/// Everything that can go wrong in the pod network. Bad input names its field; kernel errors
/// name the operation and the object they were about.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("invalid {field}: {reason}")]
    InvalidConfig { field: &'static str, reason: String },

    #[error("no free pod IP left in {cidr}")]
    PoolExhausted { cidr: Ipv4Net },

    #[error("no free /{prefix} node CIDR left in the cluster CIDR {cidr}")]
    CidrExhausted { cidr: Ipv4Net, prefix: u8 },

    #[error(
        "pod IP allocations in {path} are for pod CIDR {stored}, but this node's pod CIDR is \
         {configured}; {live} pods still hold addresses (detach them or remove the state file)"
    )]
    PodCidrChanged {
        path: PathBuf,
        stored: Ipv4Net,
        configured: Ipv4Net,
        live: usize,
    },

    #[error("pod IP allocation state {path} is unreadable: {reason}")]
    StateCorrupt { path: PathBuf, reason: String },

    #[error("{op}: {source}")]
    Io {
        op: String,
        #[source]
        source: std::io::Error,
    },

    #[error("entering network namespace {path}: {source}")]
    Setns {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },

    #[error("netlink {op}: {source}")]
    Netlink {
        op: String,
        #[source]
        source: rtnetlink::Error,
    },

    #[error("interface {name} exists but is not a bridge (kind {kind})")]
    NotABridge { name: String, kind: String },

    #[error("interface {name} belongs to {owner}, not to pod {pod_uid} (interface name collision)")]
    InterfaceTaken {
        name: String,
        owner: String,
        pod_uid: String,
    },

    #[error("route to pod CIDR {cidr} via node {gateway}: {source}")]
    Route {
        cidr: Ipv4Net,
        gateway: Ipv4Addr,
        #[source]
        source: rtnetlink::Error,
    },
}

impl NetError {
    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        NetError::InvalidConfig {
            field,
            reason: reason.into(),
        }
    }

    pub(crate) fn io(op: impl Into<String>, source: std::io::Error) -> Self {
        NetError::Io {
            op: op.into(),
            source,
        }
    }

    pub(crate) fn netlink(op: impl Into<String>, source: rtnetlink::Error) -> Self {
        NetError::Netlink {
            op: op.into(),
            source,
        }
    }
}
