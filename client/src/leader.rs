//! Leader election on a coordination.k8s.io Lease: create it, or take it over once expired,
//! then renew it every `renew_interval`; every write is a compare-and-swap on the Lease's
//! resourceVersion, so two candidates can never both win one round. A leader that cannot renew
//! for `renew_deadline` steps down. Time comes from a [`Clock`] so expiry can be tested.

use crate::etcd::ClientError;
use crate::resources::ResourceClient;
use berth_proto::coordinationv1::{Lease, LeaseSpec};
use berth_proto::metav1::ObjectMeta;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Wall-clock time in microseconds since the Unix epoch.
pub trait Clock: Send + Sync + 'static {
    fn now_micros(&self) -> i64;
}

/// The system clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_micros(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
    }
}

/// Microseconds since the epoch as an RFC 3339 micro-time (`2024-05-01T10:00:00.123456Z`).
pub fn format_micro_time(micros: i64) -> String {
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{frac:06}Z",
        s / 3600,
        s % 3600 / 60,
        s % 60
    )
}

/// Parses an RFC 3339 time (`Z` or `±hh:mm`, optional fraction) to microseconds since the epoch.
pub fn parse_micro_time(t: &str) -> Option<i64> {
    let b = t.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> { t.get(r)?.parse().ok() };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut i = 19;
    let mut micros = 0i64;
    if b[i] == b'.' {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let digits = &t[start..i];
        if digits.is_empty() {
            return None;
        }
        let six: String = digits.chars().chain(std::iter::repeat('0')).take(6).collect();
        micros = six.parse().ok()?;
    }
    let offset = match &t[i..] {
        "Z" | "z" => 0,
        z if z.len() == 6 && (z.starts_with('+') || z.starts_with('-')) => {
            let secs = num(i + 1..i + 3)? * 3600 + num(i + 4..i + 6)? * 60;
            if z.starts_with('-') {
                -secs
            } else {
                secs
            }
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo, d);
    Some(((days * 86_400 + h * 3600 + mi * 60 + s) - offset) * 1_000_000 + micros)
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// (year, month, day) to days since 1970-01-01 (inverse of `civil_from_days`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// What a candidate may do with a Lease as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseDecision {
    /// We hold it: renew.
    Renew,
    /// Nobody holds it, or the holder's lease has expired: take it over.
    Acquire,
    /// Someone else holds it and it has not expired.
    Wait,
}

/// Decides on `spec` for candidate `me` at `now_micros`. A lease with no holder, no renew time
/// or an unparseable one counts as expired; otherwise it expires at renewTime +
/// leaseDurationSeconds.
pub fn decide(spec: &LeaseSpec, me: &str, now_micros: i64) -> LeaseDecision {
    let holder = spec.holder_identity.as_deref().unwrap_or("");
    if holder == me {
        return LeaseDecision::Renew;
    }
    if holder.is_empty() {
        return LeaseDecision::Acquire;
    }
    let renew = spec.renew_time.as_deref().and_then(parse_micro_time);
    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(0)) * 1_000_000;
    match renew {
        Some(r) if now_micros < r + duration => LeaseDecision::Wait,
        _ => LeaseDecision::Acquire,
    }
}

/// Settings of one candidate.
#[derive(Debug, Clone)]
pub struct LeaderElectionConfig {
    pub namespace: String,
    pub lease_name: String,
    pub identity: String,
    /// leaseDurationSeconds written into the Lease.
    pub lease_duration: Duration,
    /// How often to try to acquire or renew.
    pub renew_interval: Duration,
    /// A leader that has not renewed for this long steps down (less than `lease_duration`).
    pub renew_deadline: Duration,
}

/// A running candidate; dropping it (or [`LeaderElector::stop`]) stops renewing.
pub struct LeaderElector {
    leader: watch::Receiver<bool>,
    task: JoinHandle<()>,
}

impl Drop for LeaderElector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl LeaderElector {
    pub fn start(
        client: ResourceClient,
        config: LeaderElectionConfig,
        clock: Arc<dyn Clock>,
    ) -> LeaderElector {
        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn(run(client, config, clock, tx));
        LeaderElector { leader: rx, task }
    }

    /// Whether this candidate currently leads.
    pub fn is_leader(&self) -> bool {
        *self.leader.borrow()
    }

    /// A receiver of leadership changes.
    pub fn leader_changes(&self) -> watch::Receiver<bool> {
        self.leader.clone()
    }

    /// Stops renewing (the Lease expires by itself).
    pub fn stop(&self) {
        self.task.abort();
    }
}

/// Micros of a duration (saturating).
fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// How long a leader may still act after a renewal that *started* at `renewed_micros`: until
/// `renewed_micros + deadline_micros` (zero once past). Counting from the start of the round
/// (the renewTime it wrote), never from its answer, keeps a slow write from stretching it.
fn time_left_micros(renewed_micros: i64, deadline_micros: i64, now_micros: i64) -> i64 {
    (renewed_micros.saturating_add(deadline_micros) - now_micros).max(0)
}

/// The election loop. Safety rests on `renew_deadline < lease_duration`: a leader whose last
/// successful round started at t stops leading at t + renew_deadline (by a timer, even while a
/// call hangs), and no other candidate may take the Lease before t + lease_duration (the
/// renewTime it wrote, t, plus the duration); the difference absorbs clock skew between
/// candidates and writes the old leader sent just before stepping down.
async fn run(
    client: ResourceClient,
    config: LeaderElectionConfig,
    clock: Arc<dyn Clock>,
    tx: watch::Sender<bool>,
) {
    // Start (micros) of the last successful round while leading.
    let mut renewed: Option<i64> = None;
    // The Lease as last written by us (None when another holds it or a round failed).
    let mut held: Option<Lease> = None;
    let deadline = micros(config.renew_deadline);
    loop {
        let started = clock.now_micros();
        // A leader's round may take no longer than its remaining time; a follower's, a deadline.
        let budget = renewed.map_or(deadline, |t| time_left_micros(t, deadline, started));
        let round = try_acquire_or_renew(&client, &config, started, &mut held);
        let outcome = tokio::time::timeout(Duration::from_micros(budget as u64), round).await;
        match outcome {
            Ok(Ok(true)) => {
                renewed = Some(started);
                tx.send_replace(true);
            }
            Ok(Ok(false)) => {
                renewed = None;
                held = None;
                tx.send_replace(false);
            }
            Ok(Err(e)) => {
                tracing::debug!(identity = %config.identity, "lease {}: {e}", config.lease_name);
            }
            Err(_) => {
                // The write may still land: the next round reads what is there.
                held = None;
                tracing::debug!(identity = %config.identity, "lease {}: round timed out", config.lease_name);
            }
        }
        // Sleep until the next round, waking to step down if the deadline comes first.
        let mut pause = micros(config.renew_interval);
        if let Some(t) = renewed {
            let left = time_left_micros(t, deadline, clock.now_micros());
            if left == 0 {
                renewed = None;
                tx.send_replace(false);
                tracing::info!(identity = %config.identity, "lease {}: not renewed within the deadline; stepped down", config.lease_name);
            } else if left < pause {
                tokio::time::sleep(Duration::from_micros(left as u64)).await;
                pause -= left;
                if time_left_micros(t, deadline, clock.now_micros()) == 0 {
                    renewed = None;
                    tx.send_replace(false);
                    tracing::info!(identity = %config.identity, "lease {}: not renewed within the deadline; stepped down", config.lease_name);
                }
            }
        }
        tokio::time::sleep(Duration::from_micros(pause.max(0) as u64)).await;
    }
}

/// Gives the Lease up if `identity` holds it (holder cleared, so the next candidate takes it
/// at once instead of after the lease duration). For a clean shutdown, after the candidate has
/// stopped acting and its elector has stopped. Each write is a compare-and-swap; a conflict
/// (a renewal that was still in flight) rereads, up to [`RELEASE_ATTEMPTS_MAX`] times.
pub async fn release(
    client: &ResourceClient,
    namespace: &str,
    lease_name: &str,
    identity: &str,
) -> Result<bool, ClientError> {
    for _ in 0..RELEASE_ATTEMPTS_MAX {
        let mut lease = match client.get::<Lease>(namespace, lease_name).await {
            Ok(l) => l,
            Err(ClientError::NotFound(_)) => return Ok(false),
            Err(e) => return Err(e),
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() != Some(identity) {
            return Ok(false);
        }
        spec.holder_identity = None;
        match client.update(&lease).await {
            Ok(_) => return Ok(true),
            Err(ClientError::Conflict(_)) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(false)
}

/// Attempts of [`release`] against concurrent writes.
pub const RELEASE_ATTEMPTS_MAX: usize = 3;

/// One round: `Ok(true)` when we hold the Lease after it, `Ok(false)` when another does.
/// `held` is the Lease as this candidate last wrote it while holding it: a renewal is then one
/// compare-and-swap write on it, without a read first (a conflict means someone else wrote
/// since, so the round reads and decides afresh).
async fn try_acquire_or_renew(
    client: &ResourceClient,
    config: &LeaderElectionConfig,
    now: i64,
    held: &mut Option<Lease>,
) -> Result<bool, ClientError> {
    let now_s = format_micro_time(now);
    let secs = i32::try_from(config.lease_duration.as_secs()).unwrap_or(i32::MAX);
    if let Some(mut lease) = held.take() {
        let spec = lease.spec.get_or_insert_with(Default::default);
        spec.renew_time = Some(now_s.clone());
        spec.lease_duration_seconds = Some(secs);
        match client.update(&lease).await {
            Ok(written) => {
                *held = Some(written);
                return Ok(true);
            }
            Err(ClientError::Conflict(_)) | Err(ClientError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    let lease = match client.get::<Lease>(&config.namespace, &config.lease_name).await {
        Ok(l) => l,
        Err(ClientError::NotFound(_)) => {
            let lease = Lease {
                metadata: Some(ObjectMeta {
                    name: config.lease_name.clone(),
                    namespace: config.namespace.clone(),
                    ..Default::default()
                }),
                spec: Some(LeaseSpec {
                    holder_identity: Some(config.identity.clone()),
                    lease_duration_seconds: Some(secs),
                    acquire_time: Some(now_s.clone()),
                    renew_time: Some(now_s),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
                ..Default::default()
            };
            return match client.create(&config.namespace, &lease).await {
                Ok(written) => {
                    *held = Some(written);
                    Ok(true)
                }
                Err(ClientError::AlreadyExists(_)) => Ok(false),
                Err(e) => Err(e),
            };
        }
        Err(e) => return Err(e),
    };
    let mut spec = lease.spec.clone().unwrap_or_default();
    match decide(&spec, &config.identity, now) {
        LeaseDecision::Wait => return Ok(false),
        LeaseDecision::Acquire => {
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            spec.acquire_time = Some(now_s.clone());
            spec.holder_identity = Some(config.identity.clone());
        }
        LeaseDecision::Renew => {}
    }
    spec.renew_time = Some(now_s);
    spec.lease_duration_seconds = Some(secs);
    let mut next = lease;
    next.spec = Some(spec);
    // `next` carries the resourceVersion read: a concurrent writer makes this a Conflict.
    match client.update(&next).await {
        Ok(written) => {
            *held = Some(written);
            Ok(true)
        }
        Err(ClientError::Conflict(_)) => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: &str, renew: Option<&str>, secs: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            renew_time: renew.map(String::from),
            lease_duration_seconds: Some(secs),
            ..Default::default()
        }
    }

    #[test]
    fn micro_time_round_trips() {
        for t in [0, 1_714_557_600_123_456, 951_782_400_000_001, -1] {
            assert_eq!(parse_micro_time(&format_micro_time(t)), Some(t));
        }
        assert_eq!(
            format_micro_time(1_714_557_600_123_456),
            "2024-05-01T10:00:00.123456Z"
        );
        assert_eq!(
            parse_micro_time("2024-05-01T12:00:00.5+02:00"),
            Some(1_714_557_600_500_000)
        );
        assert_eq!(
            parse_micro_time("2024-05-01T10:00:00Z"),
            Some(1_714_557_600_000_000)
        );
        assert_eq!(parse_micro_time("yesterday"), None);
    }

    #[test]
    fn expiry_decisions_with_an_injected_time() {
        let t0 = 1_714_557_600_000_000;
        let renewed = format_micro_time(t0);
        let s = spec("a", Some(&renewed), 10);
        assert_eq!(decide(&s, "a", t0 + 60_000_000), LeaseDecision::Renew);
        assert_eq!(decide(&s, "b", t0), LeaseDecision::Wait);
        assert_eq!(decide(&s, "b", t0 + 9_999_999), LeaseDecision::Wait);
        assert_eq!(decide(&s, "b", t0 + 10_000_000), LeaseDecision::Acquire);
        assert_eq!(decide(&spec("", None, 10), "b", t0), LeaseDecision::Acquire);
        assert_eq!(decide(&spec("a", None, 10), "b", t0), LeaseDecision::Acquire);
    }
}
