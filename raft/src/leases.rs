//! Leader-side lease clocks and auto-compaction policy.
//!
//! The state machine stores leases and their TTLs; only the leader keeps deadlines, in a
//! [`Lessor`]. On becoming leader every stored lease gets a fresh full TTL (`promote`) before
//! anything can expire; on losing leadership the deadlines are dropped (`demote`). Grants and
//! revokes applied while this member is the leader update the deadlines.

use std::collections::VecDeque;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use berth_store::{LeaseId, Lessor, Renewal, Store};

/// Milliseconds on a monotonic clock private to this process.
pub(crate) fn now_ms() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    BASE.get_or_init(Instant::now).elapsed().as_millis() as u64
}

struct LeaseState {
    lessor: Lessor,
    primary: bool,
}

/// The lessor and whether this member currently acts as the leader for leases. Shared by the
/// state machine (grants and revokes) and the leader-duties task (promote, demote, expiry).
pub(crate) struct Leases {
    state: parking_lot::Mutex<LeaseState>,
}

impl Leases {
    pub(crate) fn new() -> Leases {
        Leases {
            state: parking_lot::Mutex::new(LeaseState {
                lessor: Lessor::new(),
                primary: false,
            }),
        }
    }

    pub(crate) fn is_primary(&self) -> bool {
        self.state.lock().primary
    }

    /// On becoming leader. The stored leases are read under the lock, so a grant applied
    /// concurrently is either in `store.leases()` or reported by `on_granted` afterwards.
    pub(crate) fn promote(&self, store: &Store) {
        let mut s = self.state.lock();
        let leases = store.leases();
        s.lessor.promote(&leases, now_ms());
        s.primary = true;
        tracing::info!(
            leases = leases.len(),
            "lessor promoted: every lease has a fresh TTL"
        );
    }

    pub(crate) fn demote(&self) {
        let mut s = self.state.lock();
        if s.primary {
            s.lessor.demote();
            s.primary = false;
            tracing::info!("lessor demoted");
        }
    }

    pub(crate) fn on_granted(&self, id: LeaseId, ttl_secs: i64) {
        let mut s = self.state.lock();
        if s.primary {
            s.lessor.granted(id, ttl_secs, now_ms());
        }
    }

    pub(crate) fn on_revoked(&self, id: LeaseId) {
        let mut s = self.state.lock();
        if s.primary {
            s.lessor.revoked(id);
        }
    }

    /// After a snapshot replaced the state: the deadlines follow the stored leases.
    pub(crate) fn on_restored(&self, store: &Store) {
        if self.is_primary() {
            self.promote(store);
        }
    }

    /// `None` if this member is not acting as the lease leader; otherwise the lessor's answer.
    pub(crate) fn renew(&self, id: LeaseId) -> Option<Renewal> {
        let mut s = self.state.lock();
        s.primary.then(|| s.lessor.renew(id, now_ms()))
    }

    pub(crate) fn remaining_secs(&self, id: LeaseId) -> Option<Option<i64>> {
        let s = self.state.lock();
        s.primary.then(|| s.lessor.remaining_secs(id, now_ms()))
    }

    pub(crate) fn expired(&self) -> Vec<LeaseId> {
        let s = self.state.lock();
        if s.primary {
            s.lessor.expired(now_ms())
        } else {
            Vec::new()
        }
    }
}

/// How much history the leader keeps (it proposes `Compact` accordingly).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AutoCompaction {
    /// Keep the last N revisions (checked every second).
    Revisions(i64),
    /// Keep this much history: compact to the revision that was current this long ago
    /// (sampled every tenth of the period, at least every second... at most every 5 minutes).
    Periodic(Duration),
}

/// Decides when the leader proposes a compaction. Reset on every leadership change: a new
/// leader only compacts to revisions it saw itself, which is conservative.
pub(crate) struct Compactor {
    policy: Option<AutoCompaction>,
    next_check: Option<Instant>,
    samples: VecDeque<(Instant, i64)>,
}

impl Compactor {
    pub(crate) fn new(policy: Option<AutoCompaction>) -> Compactor {
        Compactor {
            policy,
            next_check: None,
            samples: VecDeque::new(),
        }
    }

    pub(crate) fn reset(&mut self) {
        self.next_check = None;
        self.samples.clear();
    }

    fn interval(&self) -> Duration {
        match self.policy {
            Some(AutoCompaction::Periodic(d)) => {
                (d / 10).clamp(Duration::from_millis(100), Duration::from_secs(300))
            }
            _ => Duration::from_secs(1),
        }
    }

    /// The revision to compact to now, if any. `revision` and `compact_revision` are the
    /// store's current ones.
    pub(crate) fn due(&mut self, now: Instant, revision: i64, compact_revision: i64) -> Option<i64> {
        let policy = self.policy?;
        if self.next_check.is_some_and(|t| now < t) {
            return None;
        }
        self.next_check = Some(now + self.interval());
        let target = match policy {
            AutoCompaction::Revisions(keep) => revision - keep.max(1),
            AutoCompaction::Periodic(keep) => {
                self.samples.push_back((now, revision));
                let cutoff = now.checked_sub(keep)?;
                let mut target = None;
                while let Some(&(t, rev)) = self.samples.front() {
                    if t > cutoff {
                        break;
                    }
                    target = Some(rev);
                    self.samples.pop_front();
                }
                // Keep the sample just used, so the next check can still reach it.
                if let Some(rev) = target {
                    self.samples.push_front((cutoff, rev));
                }
                target?
            }
        };
        (target > compact_revision).then_some(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revisions_policy_keeps_last_n() {
        let mut c = Compactor::new(Some(AutoCompaction::Revisions(10)));
        let t0 = Instant::now();
        assert_eq!(c.due(t0, 5, 0), None);
        // Checked at most once a second.
        assert_eq!(c.due(t0 + Duration::from_millis(10), 50, 0), None);
        assert_eq!(c.due(t0 + Duration::from_secs(1), 50, 0), Some(40));
        assert_eq!(c.due(t0 + Duration::from_secs(2), 50, 40), None);
    }

    #[test]
    fn periodic_policy_compacts_to_revision_seen_period_ago() {
        let mut c = Compactor::new(Some(AutoCompaction::Periodic(Duration::from_secs(10))));
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        assert_eq!(c.due(t0, 100, 0), None);
        assert_eq!(c.due(t0 + 5 * s, 150, 0), None);
        // 10 s after the first sample: compact to what was current then.
        assert_eq!(c.due(t0 + 10 * s, 200, 0), Some(100));
        assert_eq!(c.due(t0 + 15 * s, 260, 100), Some(150));
        assert_eq!(c.due(t0 + 16 * s, 270, 150), None);
        assert_eq!(c.due(t0 + 20 * s, 300, 150), Some(200));
    }

    #[test]
    fn no_policy_never_compacts() {
        let mut c = Compactor::new(None);
        assert_eq!(c.due(Instant::now(), 1_000, 0), None);
    }
}
