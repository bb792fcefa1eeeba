//! berth-client: how every Berth component reaches the control plane.
//!
//! Role: dial servers (the one place outbound connections are built, see [`dial`]), fail over
//! across a list of server addresses, and wrap the etcd-v3 services in a small typed client.
//! Later: the typed resource client, informers and leader election.
//!
//! Invariants: callers never build tonic channels themselves; a call that fails on one server
//! because it is unreachable is retried on the next one, never on a definite answer.
//!
//! It deliberately does not know: storage, Raft, or how servers are wired internally.

pub mod dial;
pub mod etcd;

pub use etcd::{ClientError, EtcdClient};
