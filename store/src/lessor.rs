//! Leader-side lease clocks.

use crate::{Lease, LeaseId};

/// Leader-side lease clocks, pure: time is an argument. The state machine only stores leases
/// and their TTLs.
#[derive(Debug, Default)]
pub struct Lessor {}

impl Lessor {
    pub fn new() -> Lessor {
        Lessor::default()
    }

    /// On becoming leader: every lease gets a fresh full TTL.
    pub fn promote(&mut self, leases: &[Lease], now_ms: u64) {
        let _ = (leases, now_ms);
        todo!()
    }

    /// Forget all deadlines.
    pub fn demote(&mut self) {
        todo!()
    }

    pub fn granted(&mut self, id: LeaseId, ttl_secs: i64, now_ms: u64) {
        let _ = (id, ttl_secs, now_ms);
        todo!()
    }

    pub fn revoked(&mut self, id: LeaseId) {
        let _ = id;
        todo!()
    }

    /// New TTL in seconds, `None` if unknown.
    pub fn renew(&mut self, id: LeaseId, now_ms: u64) -> Option<i64> {
        let _ = (id, now_ms);
        todo!()
    }

    /// Remaining seconds, rounded up, >= 0.
    pub fn remaining_secs(&self, id: LeaseId, now_ms: u64) -> Option<i64> {
        let _ = (id, now_ms);
        todo!()
    }

    /// Expired lease ids, sorted.
    pub fn expired(&self, now_ms: u64) -> Vec<LeaseId> {
        let _ = now_ms;
        todo!()
    }
}
