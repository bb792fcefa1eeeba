//! The watch checker on hand-made histories.

mod common;

use berth_jepsen::checkers::watch::{check, WatchAnomaly, WatchReport};
use berth_jepsen::checkers::Validity;
use common::Recorder;
use serde_json::{json, Value};

fn put(h: &mut Recorder, key: &str, value: i64, revision: u64) {
    h.invoke_key(0, "put", key, json!(value))
        .ok_key(0, "put", key, json!({ "revision": revision }));
}

fn event(revision: u64, key: &str, value: i64) -> Value {
    json!({"revision": revision, "key": key, "type": "put", "value": value})
}

/// A watcher (process `p`) from `start` that delivered `events`.
fn watcher(h: &mut Recorder, p: u64, start: Option<u64>, events: Vec<Value>) -> usize {
    let index = h.history().len();
    h.invoke(p, "watch", json!({ "start_revision": start }))
        .ok(p, "watch", json!({ "events": events }));
    index
}

/// Three puts at revisions 2, 3, 4.
fn writes() -> Recorder {
    let mut h = Recorder::new();
    put(&mut h, "/w/a", 1, 2);
    put(&mut h, "/w/b", 2, 3);
    put(&mut h, "/w/a", 3, 4);
    h
}

fn all_events() -> Vec<Value> {
    vec![event(2, "/w/a", 1), event(3, "/w/b", 2), event(4, "/w/a", 3)]
}

fn report(h: &Recorder) -> WatchReport {
    check(&h.history()).unwrap()
}

#[test]
fn watchers_that_saw_everything_in_order_are_valid() {
    let mut h = writes();
    watcher(&mut h, 10, Some(1), all_events());
    watcher(&mut h, 11, Some(3), all_events()[1..].to_vec());
    watcher(&mut h, 12, None, all_events()[2..].to_vec());
    let r = report(&h);
    assert_eq!(
        (r.validity, r.watchers, r.events, r.revisions),
        (Validity::Valid, 3, 6, 3),
        "{:?}",
        r.anomalies
    );
}

#[test]
fn a_skipped_revision_is_a_gap() {
    let mut h = writes();
    let w = watcher(
        &mut h,
        10,
        Some(1),
        vec![event(2, "/w/a", 1), event(4, "/w/a", 3)],
    );
    assert_eq!(
        report(&h).anomalies,
        vec![WatchAnomaly::Missing {
            watcher: w,
            revision: 3
        }]
    );
}

#[test]
fn a_revision_delivered_twice_is_a_duplicate() {
    let mut h = writes();
    let mut events = all_events();
    events.insert(2, event(3, "/w/b", 2));
    let w = watcher(&mut h, 10, Some(1), events);
    assert_eq!(
        report(&h).anomalies,
        vec![WatchAnomaly::Duplicate {
            watcher: w,
            revision: 3
        }]
    );
}

#[test]
fn revisions_must_increase() {
    let mut h = writes();
    let w = watcher(
        &mut h,
        10,
        Some(1),
        vec![event(2, "/w/a", 1), event(4, "/w/a", 3), event(3, "/w/b", 2)],
    );
    assert_eq!(
        report(&h).anomalies,
        vec![WatchAnomaly::OutOfOrder {
            watcher: w,
            previous: 4,
            revision: 3
        }]
    );
}

#[test]
fn events_must_match_the_acknowledged_writes() {
    let mut h = writes();
    let w = watcher(
        &mut h,
        10,
        Some(1),
        vec![event(2, "/w/a", 1), event(3, "/w/b", 7), event(4, "/w/a", 3)],
    );
    match &report(&h).anomalies[..] {
        [WatchAnomaly::Mismatch {
            watcher,
            expected,
            got,
        }] => {
            assert_eq!((*watcher, &expected.value, &got.value), (w, &json!(2), &json!(7)));
        }
        other => panic!("expected one mismatch, got {other:?}"),
    }
}

#[test]
fn an_event_no_write_explains_is_a_phantom() {
    let mut h = writes();
    h.invoke_key(1, "put", "/w/c", json!(8))
        .fail_key(1, "put", "/w/c", Value::Null);
    let mut events = all_events();
    events.push(event(5, "/w/c", 8)); // its write failed
    events.push(event(6, "/w/c", 9)); // never written
    let w = watcher(&mut h, 10, Some(1), events);
    let phantoms: Vec<u64> = report(&h)
        .anomalies
        .iter()
        .map(|a| match a {
            WatchAnomaly::Phantom { watcher, event } if *watcher == w => event.revision,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(phantoms, vec![5, 6]);
}

#[test]
fn an_indeterminate_write_explains_an_event() {
    let mut h = writes();
    h.invoke_key(1, "put", "/w/c", json!(8))
        .info_key(1, "put", "/w/c", Value::Null);
    let mut events = all_events();
    events.push(event(5, "/w/c", 8));
    watcher(&mut h, 10, Some(1), events);
    watcher(&mut h, 11, Some(1), all_events()); // stopped before revision 5: not a gap
    h.invoke(12, "watch", json!({"start_revision": 1})); // never completed: reported nothing
    let r = report(&h);
    assert_eq!(r.validity, Validity::Valid, "{:?}", r.anomalies);
}

#[test]
fn a_watcher_complete_up_to_a_revision_must_have_seen_it() {
    let mut h = writes();
    h.invoke_key(1, "put", "/w/c", json!(8))
        .info_key(1, "put", "/w/c", Value::Null);
    let mut events = all_events();
    events.push(event(5, "/w/c", 8));
    watcher(&mut h, 10, Some(1), events);
    let index = h.history().len();
    h.invoke(11, "watch", json!({"start_revision": 1})).ok(
        11,
        "watch",
        json!({"events": all_events(), "until_revision": 5}),
    );
    assert_eq!(
        report(&h).anomalies,
        vec![WatchAnomaly::Missing {
            watcher: index,
            revision: 5
        }]
    );
}

#[test]
fn watchers_must_agree_on_unacknowledged_revisions() {
    let mut h = writes();
    h.invoke_key(1, "put", "/w/c", json!(8))
        .info_key(1, "put", "/w/c", Value::Null);
    h.invoke_key(2, "put", "/w/c", json!(9))
        .info_key(2, "put", "/w/c", Value::Null);
    let mut first = all_events();
    first.push(event(5, "/w/c", 8));
    let mut second = all_events();
    second.push(event(5, "/w/c", 9));
    let a = watcher(&mut h, 10, Some(1), first);
    let b = watcher(&mut h, 11, Some(1), second);
    assert_eq!(
        report(&h).anomalies,
        vec![WatchAnomaly::Disagreement {
            first: a,
            watcher: b,
            revision: 5
        }]
    );
}

#[test]
fn events_before_the_start_revision_are_wrong() {
    let mut h = writes();
    let w = watcher(&mut h, 10, Some(3), all_events());
    assert_eq!(
        report(&h).anomalies,
        vec![WatchAnomaly::BeforeStart {
            watcher: w,
            start: 3,
            revision: 2
        }]
    );
}

#[test]
fn deletes_are_events_too() {
    let mut h = writes();
    h.invoke_key(1, "delete", "/w/b", Value::Null)
        .ok_key(1, "delete", "/w/b", json!({"revision": 5}));
    let mut events = all_events();
    events.push(json!({"revision": 5, "key": "/w/b", "type": "delete"}));
    watcher(&mut h, 10, Some(1), events.clone());
    assert_eq!(report(&h).validity, Validity::Valid);
    events[3]["key"] = json!("/w/a");
    let w = watcher(&mut h, 11, Some(1), events);
    let anomalies = report(&h).anomalies;
    assert!(
        matches!(anomalies[..], [WatchAnomaly::Mismatch { watcher, .. }, WatchAnomaly::Disagreement { .. }] if watcher == w),
        "{anomalies:?}"
    );
}

#[test]
fn two_writes_acknowledged_at_one_revision() {
    let mut h = writes();
    put(&mut h, "/w/c", 5, 4);
    watcher(&mut h, 10, Some(1), all_events());
    assert!(matches!(
        report(&h).anomalies[..],
        [WatchAnomaly::RevisionReused {
            revision: 4,
            writes: [4, 6]
        }]
    ));
}

#[test]
fn without_watchers_the_answer_is_unknown() {
    assert_eq!(report(&writes()).validity, Validity::Unknown);
}
