//! Leader-side lease clocks.
//!
//! Deadlines are not replicated state: only the leader keeps them, and a new leader gives
//! every lease a fresh full TTL before expiring anything (so a lease never expires because
//! of time that passed under another leader). Time is an argument, never read from a clock,
//! so the logic is pure and testable.

use std::collections::BTreeMap;

use crate::{Lease, LeaseId};

const MS_PER_SEC: u64 = 1000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Clock {
    ttl_secs: i64,
    deadline_ms: u64,
}

impl Clock {
    fn fresh(ttl_secs: i64, now_ms: u64) -> Clock {
        let ttl_ms = u64::try_from(ttl_secs).unwrap_or(0).saturating_mul(MS_PER_SEC);
        Clock {
            ttl_secs,
            deadline_ms: now_ms.saturating_add(ttl_ms),
        }
    }
}

/// What a keep-alive found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Renewal {
    /// The lease's full TTL restarted (seconds).
    Renewed(i64),
    /// No such lease here (revoked, never granted, or this lessor is not the leader's).
    Unknown,
    /// Its deadline has passed: its revoke is due or already proposed, and may commit at any
    /// moment, so the lease must not be revived (etcd's lessor waits for the revoke too). Ask
    /// again once the revoke is applied (then `Unknown`).
    Expired,
}

/// Leader-side lease clocks, pure: time is an argument. The state machine only stores leases
/// and their TTLs.
#[derive(Clone, Debug, Default)]
pub struct Lessor {
    clocks: BTreeMap<LeaseId, Clock>,
}

impl Lessor {
    pub fn new() -> Lessor {
        Lessor::default()
    }

    /// On becoming leader: every lease gets a fresh full TTL.
    pub fn promote(&mut self, leases: &[Lease], now_ms: u64) {
        self.clocks = leases
            .iter()
            .map(|l| (l.id, Clock::fresh(l.ttl_secs, now_ms)))
            .collect();
    }

    /// Forget all deadlines (no longer leader).
    pub fn demote(&mut self) {
        self.clocks.clear();
    }

    /// A grant was applied.
    pub fn granted(&mut self, id: LeaseId, ttl_secs: i64, now_ms: u64) {
        self.clocks.insert(id, Clock::fresh(ttl_secs, now_ms));
    }

    /// A revoke was applied.
    pub fn revoked(&mut self, id: LeaseId) {
        self.clocks.remove(&id);
    }

    /// A keep-alive: restarts the lease's full TTL, unless the deadline has passed (the same
    /// test as [`Lessor::expired`], so a lease reported expired is never renewed after).
    pub fn renew(&mut self, id: LeaseId, now_ms: u64) -> Renewal {
        let Some(clock) = self.clocks.get_mut(&id) else {
            return Renewal::Unknown;
        };
        if clock.deadline_ms <= now_ms {
            return Renewal::Expired;
        }
        *clock = Clock::fresh(clock.ttl_secs, now_ms);
        Renewal::Renewed(clock.ttl_secs)
    }

    /// Seconds left, rounded up, never negative.
    pub fn remaining_secs(&self, id: LeaseId, now_ms: u64) -> Option<i64> {
        let clock = self.clocks.get(&id)?;
        let left_ms = clock.deadline_ms.saturating_sub(now_ms);
        Some(i64::try_from(left_ms.div_ceil(MS_PER_SEC)).unwrap_or(i64::MAX))
    }

    /// Leases whose deadline has passed, sorted by id.
    pub fn expired(&self, now_ms: u64) -> Vec<LeaseId> {
        self.clocks
            .iter()
            .filter(|(_, c)| c.deadline_ms <= now_ms)
            .map(|(id, _)| *id)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(id: LeaseId, ttl_secs: i64) -> Lease {
        Lease { id, ttl_secs }
    }

    #[test]
    fn grant_expire_and_remaining() {
        let mut l = Lessor::new();
        l.granted(7, 10, 1_000);
        l.granted(3, 5, 1_000);
        assert_eq!(l.remaining_secs(7, 1_000), Some(10));
        assert_eq!(l.remaining_secs(7, 1_001), Some(10), "rounded up");
        assert_eq!(l.remaining_secs(7, 2_000), Some(9));
        assert_eq!(l.expired(5_999), Vec::<LeaseId>::new());
        assert_eq!(l.expired(6_000), vec![3]);
        assert_eq!(l.expired(11_000), vec![3, 7], "sorted");
        assert_eq!(l.remaining_secs(3, 60_000), Some(0), "never negative");
        assert_eq!(l.remaining_secs(99, 0), None);
    }

    #[test]
    fn renew_restarts_the_ttl() {
        let mut l = Lessor::new();
        l.granted(1, 10, 0);
        assert_eq!(l.renew(1, 9_000), Renewal::Renewed(10));
        assert_eq!(l.expired(10_000), Vec::<LeaseId>::new());
        assert_eq!(l.remaining_secs(1, 10_000), Some(9));
        assert_eq!(l.expired(19_000), vec![1]);
        assert_eq!(l.renew(2, 0), Renewal::Unknown);
        l.revoked(1);
        assert_eq!(l.renew(1, 0), Renewal::Unknown);
        assert!(l.expired(u64::MAX).is_empty());
    }

    #[test]
    fn promote_gives_every_lease_a_fresh_ttl_and_demote_forgets() {
        let mut l = Lessor::new();
        l.granted(1, 10, 0);
        // Long after the old deadline, a new leader must not expire anything at once.
        l.promote(&[lease(1, 10), lease(2, 3)], 100_000);
        assert!(l.expired(100_000).is_empty());
        assert_eq!(l.remaining_secs(1, 100_000), Some(10));
        assert_eq!(l.expired(103_000), vec![2]);
        l.demote();
        assert_eq!(l.renew(1, 103_000), Renewal::Unknown);
        assert!(l.expired(u64::MAX).is_empty());
    }

    /// JEPSEN.md bug 5: once a lease's deadline has passed (its revoke is due or in flight), a
    /// keep-alive does not revive it; the revoke's application ends it, and a new leader's
    /// fresh TTL (the old revoke never committed) makes it renewable again.
    #[test]
    fn an_expired_lease_is_not_revived_by_a_keepalive() {
        let mut l = Lessor::new();
        l.granted(1, 3, 0);
        assert_eq!(l.renew(1, 2_999), Renewal::Renewed(3));
        assert_eq!(l.expired(5_998), Vec::<LeaseId>::new());
        assert_eq!(l.expired(5_999), vec![1]);
        assert_eq!(
            l.renew(1, 5_999),
            Renewal::Expired,
            "the deadline itself counts as passed"
        );
        assert_eq!(l.renew(1, 7_000), Renewal::Expired);
        assert_eq!(
            l.expired(7_000),
            vec![1],
            "still due: the revoke is proposed again"
        );
        l.revoked(1);
        assert_eq!(l.renew(1, 7_000), Renewal::Unknown);
        // Under a new leader whose log never got that revoke: a fresh TTL, renewable.
        l.promote(&[lease(1, 3)], 8_000);
        assert_eq!(l.renew(1, 8_500), Renewal::Renewed(3));
    }
}
