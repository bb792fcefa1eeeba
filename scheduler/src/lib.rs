//! berth-scheduler: the replicated scheduler every `berth server` runs an instance of.
//!
//! Role: bind each pending pod to a node. Every instance announces itself with a coordination
//! Lease `<lease_prefix><instance>` in `lease_namespace` (kept by a
//! [`berth_client::leader::LeaderElector`] on its own Lease); the live instances are those whose
//! Lease has not expired, and each pending pod belongs to one of them by rendezvous hashing of
//! its uid ([`ring`]). So all instances work at once, and when one dies the others take its
//! pods over within one lease duration. Each instance keeps informer caches of nodes and pods,
//! decides with pure filters and scores ([`filters`], [`scores`], [`algorithm`]) and binds with
//! `Resources.Bind`: one store transaction that compares the revision of each pod it binds
//! (still unbound) and the node's allocation key revision that its view includes, and bumps
//! that key. With several live instances, each prefers the nodes the ring gives it.
//!
//! Invariants: a pod is never bound twice and no node is overcommitted by concurrent
//! instances, because a bind only succeeds when no other bind to that node happened since the
//! view it was decided from ([`runner`] explains how an instance knows which revision its view
//! includes); binds to one node from one instance go one at a time, in decision order; a pod
//! that fits nowhere gets PodScheduled=False (reason Unschedulable, the count per reason) and is
//! retried with back-off when the cluster changes.
//!
//! It deliberately does not know: the store, Raft or the wire format (only `berth-client`), nor
//! command-line flags (it takes a [`SchedulerConfig`]). Pods created with spec.nodeName already
//! set bypass it (and its overcommit guarantee), as in Kubernetes.

pub mod algorithm;
pub mod filters;
pub mod model;
pub mod ring;
mod runner;
pub mod scores;

pub use algorithm::AlgorithmConfig;
pub use runner::{Scheduler, SchedulerStats};
pub use scores::Policy;

use std::time::Duration;

/// The name pods ask for in spec.schedulerName (empty means this one too).
pub const DEFAULT_SCHEDULER_NAME: &str = "default-scheduler";
/// Where instances keep their Leases.
pub const DEFAULT_LEASE_NAMESPACE: &str = "kube-system";
pub const DEFAULT_LEASE_PREFIX: &str = "berth-scheduler-";
/// An instance's Lease: short, so that the pods a dead instance owned move to the others
/// within about a second (bench: `berth bench recovery`).
pub const DEFAULT_LEASE_DURATION: Duration = Duration::from_secs(1);

/// Settings of one scheduler instance.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// This instance's name, unique among the instances (the server's member name).
    pub instance: String,
    /// Pods whose spec.schedulerName is this (or empty, for the default name) are ours.
    pub scheduler_name: String,
    pub lease_namespace: String,
    /// Instances' Leases are named `<lease_prefix><instance>`.
    pub lease_prefix: String,
    /// How long an instance's Lease lives without renewal: the failover time (whole seconds:
    /// the Lease stores seconds). Renewed every fifth of it; an instance that has not renewed
    /// for three fifths of it stops binding.
    pub lease_duration: Duration,
    pub algorithm: AlgorithmConfig,
    /// Bind calls outstanding at once.
    pub binds_in_flight_max: usize,
}

impl SchedulerConfig {
    pub fn new(instance: impl Into<String>) -> SchedulerConfig {
        SchedulerConfig {
            instance: instance.into(),
            scheduler_name: DEFAULT_SCHEDULER_NAME.into(),
            lease_namespace: DEFAULT_LEASE_NAMESPACE.into(),
            lease_prefix: DEFAULT_LEASE_PREFIX.into(),
            lease_duration: DEFAULT_LEASE_DURATION,
            algorithm: AlgorithmConfig::default(),
            binds_in_flight_max: 256,
        }
    }
}

/// Errors of the scheduler's configuration.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error("scheduler config: {field}: {reason}")]
    Config { field: &'static str, reason: String },
}

impl SchedulerConfig {
    /// How often the instance renews its Lease.
    pub fn renew_interval(&self) -> Duration {
        self.lease_duration / 5
    }

    /// How long the instance may go without renewing before it stops binding (less than the
    /// lease duration, so that it stops before the others count it dead).
    pub fn renew_deadline(&self) -> Duration {
        self.lease_duration * 3 / 5
    }

    /// Checks the settings (names non-empty, a lease duration of whole seconds, at least one).
    pub fn validate(&self) -> Result<(), SchedulerError> {
        let bad = |field, reason: &str| {
            Err(SchedulerError::Config {
                field,
                reason: reason.into(),
            })
        };
        if self.instance.is_empty() {
            return bad("instance", "must not be empty");
        }
        if self.scheduler_name.is_empty() {
            return bad("scheduler_name", "must not be empty");
        }
        if self.lease_duration < Duration::from_secs(1) || self.lease_duration.subsec_nanos() != 0 {
            return bad("lease_duration", "must be whole seconds, at least 1s");
        }
        if self.binds_in_flight_max == 0 {
            return bad("binds_in_flight_max", "must be at least 1");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
