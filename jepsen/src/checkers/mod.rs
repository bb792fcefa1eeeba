//! Checkers other than linearizability, each a pure function of a history.
//!
//! - [`set`]: adds, then a final read: every acknowledged add is present, nothing else appears.
//! - [`watch`]: several watchers' event lists on one prefix agree with each other and with the
//!   acknowledged writes: revisions strictly increasing, no gaps, no duplicates.
//! - [`append`]: Elle's list-append analysis: dependencies inferred from list prefixes, cycles
//!   (G0, G1c, G-single, G2), aborted and intermediate reads (G1a, G1b).
//! - [`lease`]: keys attached to leases: kept alive means present, revoked means gone, gone
//!   stays gone (and, with a bound, gone soon enough).
//! - [`controlplane`]: pods bound at most once, nodes never overcommitted at any revision,
//!   Deployments converged after the faults heal.

pub mod append;
pub mod controlplane;
pub mod lease;
pub mod set;
pub mod watch;

use serde::Serialize;

/// A checker's overall answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Validity {
    Valid,
    Invalid,
    /// The history lacks what the check needs (for example, no final read).
    Unknown,
}

impl Validity {
    fn from_anomalies<T>(anomalies: &[T]) -> Self {
        if anomalies.is_empty() {
            Validity::Valid
        } else {
            Validity::Invalid
        }
    }
}
