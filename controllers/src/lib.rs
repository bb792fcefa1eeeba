//! berth-controllers: the control loops that drive the cluster's objects towards their specs.
//!
//! Role: run, inside every `berth server`, the ReplicaSet, Deployment, node lifecycle, garbage
//! collector, namespace, node IPAM and Endpoints controllers. One instance per cluster works at
//! a time: the [`ControllerManager`] campaigns for the `berth-controller-manager` Lease in
//! `kube-system` and runs reconcilers only while it holds it. Every controller is a
//! [`runtime::Reconciler`] fed from shared informers through a bounded, de-duplicated work
//! queue (see [`runtime`]).
//!
//! Invariants: reconcilers are level-triggered and idempotent (they read caches, compute the
//! desired state and write the difference, each write a compare-and-swap or a create that fails
//! on a duplicate); one key is never reconciled by two workers at once; nothing is written
//! while not leading. The decisions (which pods to delete, rolling-update steps, the template
//! hash, eviction rate limits, CIDR carving) are pure functions with unit tests.
//!
//! It deliberately does not know: command-line flags (it takes a typed [`Config`]), the wire
//! format or storage (it reaches the control plane only through `berth-client`), how pods run
//! (agent) or where they are placed (scheduler).

pub mod deployment;
pub mod endpoints;
pub mod gc;
pub mod ipam;
pub mod manager;
pub mod namespace;
pub mod nodelifecycle;
pub mod replicaset;
pub mod runtime;
pub mod util;

pub use manager::{Config, ControllerManager};

use berth_client::ClientError;

/// Errors of a reconcile; every one makes the key retry with back-off.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Client(#[from] ClientError),
    /// An object that cannot be acted on as it is (names the field).
    #[error("invalid: {0}")]
    Invalid(String),
}
