//! Tiny hand-made lease histories, one per anomaly (times are ticks of 1 ns, so every read
//! here falls well inside a TTL of seconds).

mod common;

use berth_jepsen::checkers::lease::{check, LeaseAnomaly};
use berth_jepsen::checkers::Validity;
use common::Recorder;
use serde_json::{json, Value};

const K: &str = "jepsen/lease/1";

/// Grant (ttl 3 s) and put, acknowledged.
fn granted_and_put() -> Recorder {
    let mut r = Recorder::new();
    r.invoke_key(0, "grant", K, json!(3))
        .ok_key(0, "grant", K, json!({"lease": 7, "ttl": 3}))
        .invoke_key(0, "put", K, json!(7))
        .ok_key(0, "put", K, json!(7));
    r
}

fn read(r: &mut Recorder, present: bool) -> &mut Recorder {
    r.invoke_key(0, "read", K, Value::Null)
        .ok_key(0, "read", K, json!({"present": present}))
}

#[test]
fn kept_alive_then_revoked_and_gone_is_valid() {
    let mut r = granted_and_put();
    r.invoke_key(0, "keepalive", K, json!(7))
        .ok_key(0, "keepalive", K, json!({"ttl": 3}));
    read(&mut r, true);
    r.invoke_key(0, "revoke", K, json!(7))
        .ok_key(0, "revoke", K, json!(7));
    read(&mut r, false);
    let report = check(&r.history()).unwrap();
    assert_eq!(report.validity, Validity::Valid, "{report:?}");
    assert_eq!((report.reads, report.keepalives), (2, 1));
}

#[test]
fn missing_within_the_ttl_is_expired_early() {
    let mut r = granted_and_put();
    read(&mut r, false);
    let report = check(&r.history()).unwrap();
    assert_eq!(report.validity, Validity::Invalid);
    assert!(matches!(
        report.anomalies[..],
        [LeaseAnomaly::ExpiredEarly { refresh: 0, .. }]
    ));
}

#[test]
fn missing_while_a_revoke_is_in_flight_is_allowed() {
    let mut r = granted_and_put();
    r.invoke_key(1, "revoke", K, json!(7));
    read(&mut r, false);
    assert_eq!(check(&r.history()).unwrap().validity, Validity::Valid);
}

#[test]
fn present_after_an_acknowledged_revoke() {
    let mut r = granted_and_put();
    r.invoke_key(0, "revoke", K, json!(7))
        .ok_key(0, "revoke", K, json!(7));
    read(&mut r, true);
    let report = check(&r.history()).unwrap();
    assert!(matches!(
        report.anomalies[..],
        [LeaseAnomaly::PresentAfterRevoke { .. }]
    ));
}

#[test]
fn present_again_after_missing_is_resurrected() {
    let mut r = granted_and_put();
    r.invoke_key(1, "revoke", K, json!(7));
    read(&mut r, false);
    read(&mut r, true);
    let report = check(&r.history()).unwrap();
    assert!(matches!(report.anomalies[..], [LeaseAnomaly::Resurrected { .. }]));
}

#[test]
fn no_reads_is_unknown() {
    assert_eq!(
        check(&granted_and_put().history()).unwrap().validity,
        Validity::Unknown
    );
}
