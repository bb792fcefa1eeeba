//! The lease checker. Each client owns one key at a time: it grants a lease (`grant`, invoke
//! value = the TTL asked for, completes with `{"lease": id, "ttl": granted seconds}`), puts
//! the key attached to it (`put`), then alternates keep-alives (`keepalive`, completes with
//! `{"ttl": seconds}`, 0 or less meaning the lease is gone) and linearizable reads (`read`,
//! completes with `{"present": bool}`), and finally revokes it (`revoke`) and reads again.
//! Every entry carries the key in `key`; a key is used for one lease only.
//!
//! What is guaranteed, and checked:
//! - kept alive means alive: a read that completes before `last refresh + TTL` finds the key,
//!   where a refresh is the grant or an acknowledged keep-alive (taken at its invoke time:
//!   the leader refreshed the deadline no earlier), counting only refreshes acknowledged
//!   before the read began, when the put was acknowledged before the read began and no revoke
//!   was invoked before the read ended (times are the one host's monotonic clock, which the
//!   servers' lease clocks also read);
//! - revoked means gone: a read that begins after an acknowledged revoke does not find it;
//! - gone stays gone: a read that begins after another read found the key missing (and after
//!   the put was acknowledged) does not find it.
//!
//! - gone soon enough ([`check_with_faults`]): a key whose lease was left to expire (no
//!   revoke invoked) is not found by a read that begins after its expiry bound. Berth's leader
//!   keeps lease deadlines on its own monotonic clock, restarted by every keep-alive it
//!   receives, and checks them every `lease_check_interval_ms` (100 ms); an expired lease is
//!   revoked through Raft. So, with a stable leader, a lease is revoked no later than
//!   `last acknowledged refresh (completion) + TTL + EXPIRY_SLACK_MS` (the check interval, the
//!   revoke's commit and the read's own path, on a loaded machine). A new leader gives every
//!   lease a fresh full TTL when it takes over (etcd does the same: it cannot know the old
//!   leader's deadlines), so under a fault that can move the leadership (kill, pause,
//!   partition, member, disk, netem, a crash) the bound becomes `end of the fault +
//!   ELECTION_BOUND_MS + TTL + EXPIRY_SLACK_MS`, taken over every fault that began before the
//!   bound it extends and whose end + ELECTION_BOUND_MS comes after the refresh (a leader
//!   change can follow a fault's end: a member cut off by a partition rejoins with a higher
//!   term and deposes the leader); a chain of faults extends it again. Between the fault's start and a new
//!   leader's promotion the lease cannot expire at all, which is why the whole fault counts.
//!
//! Not checked: how soon a lease expires while faults keep moving the leadership (there is no
//! bound then: every new leader restarts every TTL).

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use super::Validity;
use crate::history::{History, Operation, Outcome};
use crate::Error;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum LeaseAnomaly {
    /// The key was missing although its lease was refreshed within its TTL.
    ExpiredEarly {
        key: String,
        read: usize,
        /// The refresh (grant or keep-alive) that should have kept it alive.
        refresh: usize,
        /// ns after the read ended until that refresh's TTL would have run out.
        margin_ns: u64,
    },
    /// The key was found after its lease's revoke was acknowledged.
    PresentAfterRevoke { key: String, read: usize, revoke: usize },
    /// The key was found although its lease, left to expire, was past its expiry bound.
    ExpiredLate {
        key: String,
        read: usize,
        /// The last acknowledged refresh (grant or keep-alive).
        refresh: usize,
        /// ns (history time) by which the key had to be gone.
        bound_ns: u64,
        /// How long after the bound the read began.
        late_ns: u64,
    },
    /// The key was found after an earlier read found it missing.
    Resurrected {
        key: String,
        read: usize,
        missing_at: usize,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LeaseReport {
    pub validity: Validity,
    pub keys: usize,
    pub reads: usize,
    pub keepalives: usize,
    /// Reads of keys left to expire that began after the key's expiry bound (each must have
    /// found it gone); 0 without fault intervals.
    pub reads_past_expiry_bound: usize,
    pub anomalies: Vec<LeaseAnomaly>,
}

#[derive(Default)]
struct KeyOps<'h> {
    ops: Vec<&'h Operation>,
}

/// Slack of the expiry bound beyond the TTL, with a stable leader: the leader's check
/// interval (100 ms), committing the revoke, and the read, on a loaded 2-core machine.
pub const EXPIRY_SLACK_MS: u64 = 1_500;
/// Time for a new leader to be elected and promote its lessor after a fault ends (election
/// timeout 250 ms, pre-vote and catch-up, restarts of killed members).
pub const ELECTION_BOUND_MS: u64 = 5_000;

/// The lease checks without the expiry bound (no fault intervals known).
pub fn check(history: &History) -> Result<LeaseReport, Error> {
    check_inner(history, None)
}

/// The lease checks and the expiry bound; `faults` are (start, end) ns of every fault that may
/// have moved the leadership (an unfinished fault ends at `u64::MAX`).
pub fn check_with_faults(history: &History, faults: &[(u64, u64)]) -> Result<LeaseReport, Error> {
    check_inner(history, Some(faults))
}

fn check_inner(history: &History, faults: Option<&[(u64, u64)]>) -> Result<LeaseReport, Error> {
    let ops = history.pair()?;
    let mut by_key: BTreeMap<String, KeyOps<'_>> = BTreeMap::new();
    for op in &ops {
        if let Some(key) = &op.key {
            by_key.entry(key.clone()).or_default().ops.push(op);
        }
    }
    let mut anomalies = Vec::new();
    let (mut reads, mut keepalives, mut past_bound) = (0, 0, 0);
    for (key, k) in &by_key {
        reads += k
            .ops
            .iter()
            .filter(|o| o.f == "read" && o.outcome == Outcome::Ok)
            .count();
        keepalives += k
            .ops
            .iter()
            .filter(|o| o.f == "keepalive" && o.outcome == Outcome::Ok)
            .count();
        check_key(key, &k.ops, &mut anomalies)?;
        if let Some(faults) = faults {
            past_bound += check_expiry(key, &k.ops, faults, &mut anomalies)?;
        }
    }
    Ok(LeaseReport {
        validity: if reads == 0 {
            Validity::Unknown
        } else {
            Validity::from_anomalies(&anomalies)
        },
        keys: by_key.len(),
        reads,
        keepalives,
        reads_past_expiry_bound: past_bound,
        anomalies,
    })
}

fn present(op: &Operation) -> Result<bool, Error> {
    op.output
        .get("present")
        .and_then(Value::as_bool)
        .ok_or_else(|| Error::bad_op(op.invoke, &op.f, "a read must complete with {\"present\": bool}"))
}

/// (refresh invoke index, deadline ns) of every acknowledged grant and live keep-alive.
fn refreshes(ops: &[&Operation]) -> Result<Vec<(usize, u64, u64)>, Error> {
    let mut out = Vec::new();
    for op in ops.iter().filter(|o| o.outcome == Outcome::Ok) {
        if op.f != "grant" && op.f != "keepalive" {
            continue;
        }
        let ttl_s = op
            .output
            .get("ttl")
            .and_then(Value::as_i64)
            .ok_or_else(|| Error::bad_op(op.invoke, &op.f, "must complete with {\"ttl\": seconds}"))?;
        if ttl_s > 0 {
            let ret = op.ret.expect("ok operations have a return time");
            out.push((op.invoke, ret, op.call + ttl_s as u64 * 1_000_000_000));
        }
    }
    Ok(out)
}

fn check_key(key: &str, ops: &[&Operation], anomalies: &mut Vec<LeaseAnomaly>) -> Result<(), Error> {
    let put_acked = ops
        .iter()
        .filter(|o| o.f == "put" && o.outcome == Outcome::Ok)
        .filter_map(|o| o.ret)
        .min();
    let revoke_invoked = ops.iter().filter(|o| o.f == "revoke").map(|o| o.call).min();
    let revoke_acked = ops
        .iter()
        .filter(|o| o.f == "revoke" && o.outcome == Outcome::Ok)
        .filter_map(|o| o.ret.map(|r| (o.invoke, r)))
        .min_by_key(|&(_, r)| r);
    let refreshes = refreshes(ops)?;
    let mut first_missing: Option<(usize, u64)> = None;
    let mut reads: Vec<&&Operation> = ops
        .iter()
        .filter(|o| o.f == "read" && o.outcome == Outcome::Ok)
        .collect();
    reads.sort_by_key(|o| o.call);
    for read in reads {
        let (call, ret) = (read.call, read.ret.expect("ok operations have a return time"));
        let found = present(read)?;
        let after_put = put_acked.is_some_and(|p| p < call);
        if found {
            if let Some((revoke, _)) = revoke_acked.filter(|&(_, r)| r < call) {
                anomalies.push(LeaseAnomaly::PresentAfterRevoke {
                    key: key.to_string(),
                    read: read.invoke,
                    revoke,
                });
            }
            if let Some((missing_at, _)) = first_missing.filter(|&(_, r)| r < call) {
                anomalies.push(LeaseAnomaly::Resurrected {
                    key: key.to_string(),
                    read: read.invoke,
                    missing_at,
                });
            }
            continue;
        }
        if after_put && first_missing.is_none() {
            first_missing = Some((read.invoke, ret));
        }
        let revoking = revoke_invoked.is_some_and(|r| r < ret);
        if !after_put || revoking {
            continue;
        }
        let best = refreshes
            .iter()
            .filter(|&&(_, acked, _)| acked < call)
            .max_by_key(|&&(_, _, deadline)| deadline);
        if let Some(&(refresh, _, deadline)) = best.filter(|&&(_, _, d)| ret < d) {
            anomalies.push(LeaseAnomaly::ExpiredEarly {
                key: key.to_string(),
                read: read.invoke,
                refresh,
                margin_ns: deadline - ret,
            });
        }
    }
    Ok(())
}

/// The latest time by which a lease last refreshed at `refreshed_ns` (completion) with `ttl_s`
/// must be gone, given the faults (see the module doc).
pub fn expiry_bound_ns(refreshed_ns: u64, ttl_s: u64, faults: &[(u64, u64)]) -> u64 {
    let ttl = ttl_s * 1_000_000_000;
    let slack = EXPIRY_SLACK_MS * 1_000_000;
    let election = ELECTION_BOUND_MS * 1_000_000;
    let mut bound = refreshed_ns + ttl + slack;
    loop {
        let extended = faults
            .iter()
            // A fault may move the leadership until an election after its end (a member cut
            // off by a partition rejoins with a higher term and deposes the leader), so it
            // counts if that window reaches past the refresh.
            .filter(|&&(start, end)| start < bound && end.saturating_add(election) > refreshed_ns)
            .map(|&(_, end)| end.saturating_add(election + ttl + slack))
            .max()
            .unwrap_or(0);
        if extended <= bound {
            return bound;
        }
        bound = extended;
    }
}

/// A key whose lease was left to expire must not be found after its expiry bound. Returns how
/// many reads began after the bound.
fn check_expiry(
    key: &str,
    ops: &[&Operation],
    faults: &[(u64, u64)],
    anomalies: &mut Vec<LeaseAnomaly>,
) -> Result<usize, Error> {
    if ops.iter().any(|o| o.f == "revoke") {
        return Ok(0);
    }
    // Any refresh that may have happened counts: an indeterminate keep-alive may have
    // restarted the TTL as late as the end of the run, so a key with one is not judged.
    if ops
        .iter()
        .any(|o| (o.f == "keepalive" || o.f == "grant") && o.outcome == Outcome::Info)
    {
        return Ok(0);
    }
    let mut last: Option<(usize, u64, i64)> = None;
    for op in ops.iter().filter(|o| o.outcome == Outcome::Ok) {
        if op.f != "grant" && op.f != "keepalive" {
            continue;
        }
        let ttl_s = op.output.get("ttl").and_then(Value::as_i64).unwrap_or(0);
        let ret = op.ret.expect("ok operations have a return time");
        if ttl_s > 0 && last.is_none_or(|(_, r, _)| ret > r) {
            last = Some((op.invoke, ret, ttl_s));
        }
    }
    let Some((refresh, refreshed_ns, ttl_s)) = last else {
        return Ok(0);
    };
    let bound = expiry_bound_ns(refreshed_ns, ttl_s as u64, faults);
    let mut judged = 0;
    for read in ops.iter().filter(|o| o.f == "read" && o.outcome == Outcome::Ok) {
        if read.call <= bound {
            continue;
        }
        judged += 1;
        if present(read)? {
            anomalies.push(LeaseAnomaly::ExpiredLate {
                key: key.to_string(),
                read: read.invoke,
                refresh,
                bound_ns: bound,
                late_ns: read.call - bound,
            });
            break;
        }
    }
    Ok(judged)
}
