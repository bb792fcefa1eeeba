//! Container restart back-off as the kubelet does it: the first restart after an exit is
//! immediate; each later one waits `delay` after the exit, the delay starting at 10 s and
//! doubling to a 5 min cap; an entry untouched for twice the cap starts over. Pure: time is an
//! argument (milliseconds on any monotonic or wall clock), so tests are deterministic.

use std::collections::HashMap;

/// First back-off delay.
pub const BACKOFF_INITIAL_MS: u64 = 10_000;
/// Longest back-off delay.
pub const BACKOFF_MAX_MS: u64 = 300_000;

#[derive(Debug, Clone, Copy)]
struct Entry {
    delay_ms: u64,
    /// When the delay was last set (a restart was allowed).
    updated_ms: u64,
}

/// What to do with an exited container that the restart policy wants restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Restart now.
    Restart,
    /// In back-off: restart after this many more milliseconds (CrashLoopBackOff).
    Wait { remaining_ms: u64 },
}

#[derive(Debug, Clone)]
pub struct BackOff {
    initial_ms: u64,
    max_ms: u64,
    entries: HashMap<String, Entry>,
}

impl Default for BackOff {
    fn default() -> Self {
        BackOff::new(BACKOFF_INITIAL_MS, BACKOFF_MAX_MS)
    }
}

impl BackOff {
    pub fn new(initial_ms: u64, max_ms: u64) -> BackOff {
        BackOff {
            initial_ms,
            max_ms,
            entries: HashMap::new(),
        }
    }

    /// Decides for container `key` that exited at `finished_ms`, asked at `now_ms`; a
    /// `Restart` answer records the restart (the next delay doubles).
    pub fn decide(&mut self, key: &str, finished_ms: u64, now_ms: u64) -> Decision {
        let fresh = Entry {
            delay_ms: self.initial_ms,
            updated_ms: now_ms,
        };
        let Some(e) = self.entries.get(key).copied() else {
            self.entries.insert(key.to_string(), fresh);
            return Decision::Restart;
        };
        if now_ms.saturating_sub(e.updated_ms) > 2 * self.max_ms {
            self.entries.insert(key.to_string(), fresh);
            return Decision::Restart;
        }
        let since_exit_ms = now_ms.saturating_sub(finished_ms);
        if since_exit_ms < e.delay_ms {
            return Decision::Wait {
                remaining_ms: e.delay_ms - since_exit_ms,
            };
        }
        self.entries.insert(
            key.to_string(),
            Entry {
                delay_ms: (e.delay_ms * 2).min(self.max_ms),
                updated_ms: now_ms,
            },
        );
        Decision::Restart
    }

    /// Records a failure of `key` (an image pull) at `now_ms`: the first waits the initial
    /// delay, each next one twice the last, up to the cap.
    pub fn failed(&mut self, key: &str, now_ms: u64) {
        let delay_ms = match self.entries.get(key) {
            Some(e) if now_ms.saturating_sub(e.updated_ms) <= 2 * self.max_ms => {
                (e.delay_ms * 2).min(self.max_ms)
            }
            _ => self.initial_ms,
        };
        self.entries.insert(
            key.to_string(),
            Entry {
                delay_ms,
                updated_ms: now_ms,
            },
        );
    }

    /// How long `key` still waits after its last recorded failure (None: try now).
    pub fn remaining_ms(&self, key: &str, now_ms: u64) -> Option<u64> {
        let e = self.entries.get(key)?;
        let since_ms = now_ms.saturating_sub(e.updated_ms);
        (since_ms < e.delay_ms).then(|| e.delay_ms - since_ms)
    }

    /// When `key` last failed (None: not in back-off).
    pub fn last_failure_ms(&self, key: &str) -> Option<u64> {
        self.entries.get(key).map(|e| e.updated_ms)
    }

    /// Forgets a container (its pod is gone).
    pub fn forget(&mut self, key: &str) {
        self.entries.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Exits right after each start: restarts at +0, then 10, 20, 40, 80, 160, 300, 300 s.
    #[test]
    fn doubles_to_the_cap() {
        let mut b = BackOff::default();
        let mut now = 1_000_000;
        let mut waits = Vec::new();
        for _ in 0..8 {
            let finished = now;
            let mut waited = 0;
            loop {
                match b.decide("c", finished, now) {
                    Decision::Restart => break,
                    Decision::Wait { remaining_ms } => {
                        waited += remaining_ms;
                        now += remaining_ms;
                    }
                }
            }
            waits.push(waited / 1000);
            now += 1; // ran for a millisecond
        }
        assert_eq!(waits, vec![0, 10, 20, 40, 80, 160, 300, 300]);
    }

    /// Pull failures: 10 s after the first, then 20, 40, ... 300 s; success forgets.
    #[test]
    fn failures_wait_doubling_delays() {
        let mut b = BackOff::default();
        assert_eq!(b.remaining_ms("img", 0), None, "never failed: try now");
        let mut now = 1_000;
        let mut delays = Vec::new();
        for _ in 0..7 {
            b.failed("img", now);
            let d = b.remaining_ms("img", now).unwrap();
            assert_eq!(b.remaining_ms("img", now + d - 1), Some(1));
            assert_eq!(b.remaining_ms("img", now + d), None);
            delays.push(d / 1000);
            now += d;
        }
        assert_eq!(delays, vec![10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(b.last_failure_ms("img"), Some(now - 300_000));
        b.forget("img");
        b.failed("img", now);
        assert_eq!(b.remaining_ms("img", now), Some(BACKOFF_INITIAL_MS));
    }

    #[test]
    fn long_quiet_resets_and_keys_are_separate() {
        let mut b = BackOff::default();
        assert_eq!(b.decide("a", 0, 0), Decision::Restart);
        assert_eq!(b.decide("a", 5, 5), Decision::Wait { remaining_ms: 10_000 });
        assert_eq!(
            b.decide("b", 5, 5),
            Decision::Restart,
            "another container is not in back-off"
        );
        // A container that ran well past twice the cap starts over with an immediate restart.
        let late = 2 * BACKOFF_MAX_MS + 10;
        assert_eq!(b.decide("a", late, late), Decision::Restart);
        assert_eq!(
            b.decide("a", late + 1, late + 1),
            Decision::Wait {
                remaining_ms: BACKOFF_INITIAL_MS
            }
        );
        b.forget("a");
        assert_eq!(b.decide("a", late + 2, late + 2), Decision::Restart);
    }
}
