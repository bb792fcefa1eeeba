//! The set checker on hand-made histories.

mod common;

use berth_jepsen::checkers::set::{check, SetReport};
use berth_jepsen::checkers::Validity;
use berth_jepsen::OpType;
use common::Recorder;
use serde_json::{json, Value};

fn add(h: &mut Recorder, element: i64, outcome: OpType) {
    h.call(element as u64 % 5, "add", json!(element), outcome, json!(element));
}

fn read(h: &mut Recorder, elements: Value) -> SetReport {
    h.call(9, "read", Value::Null, OpType::Ok, elements);
    check(&h.history()).unwrap()
}

#[test]
fn every_acknowledged_add_present_is_valid() {
    let mut h = Recorder::new();
    for e in 1..=3 {
        add(&mut h, e, OpType::Ok);
    }
    let report = read(&mut h, json!([3, 1, 2]));
    assert_eq!(
        (
            report.validity,
            report.attempted,
            report.acknowledged,
            report.read
        ),
        (Validity::Valid, 3, 3, 3)
    );
}

#[test]
fn a_missing_acknowledged_add_is_lost() {
    let mut h = Recorder::new();
    add(&mut h, 1, OpType::Ok);
    add(&mut h, 2, OpType::Ok);
    let report = read(&mut h, json!([1]));
    assert_eq!((report.validity, report.lost), (Validity::Invalid, vec![2]));
}

#[test]
fn elements_never_added_or_whose_add_failed_are_unexpected() {
    let mut h = Recorder::new();
    add(&mut h, 1, OpType::Ok);
    add(&mut h, 5, OpType::Fail);
    let report = read(&mut h, json!([1, 5, 99]));
    assert_eq!(
        (report.validity, report.unexpected),
        (Validity::Invalid, vec![5, 99])
    );
}

#[test]
fn indeterminate_adds_may_or_may_not_be_present() {
    let mut h = Recorder::new();
    add(&mut h, 4, OpType::Info);
    add(&mut h, 6, OpType::Info);
    h.invoke(7, "add", json!(7)); // never completed
    let report = read(&mut h, json!([4]));
    assert_eq!(
        (report.validity, report.recovered, report.lost),
        (Validity::Valid, vec![4], vec![])
    );
}

#[test]
fn an_add_acknowledged_after_the_read_began_may_be_missing() {
    let mut h = Recorder::new();
    h.invoke(0, "add", json!(7))
        .invoke(9, "read", Value::Null)
        .ok(0, "add", json!(7))
        .ok(9, "read", json!([]));
    assert_eq!(check(&h.history()).unwrap().validity, Validity::Valid);
}

#[test]
fn duplicates_in_the_read_are_invalid() {
    let mut h = Recorder::new();
    add(&mut h, 1, OpType::Ok);
    let report = read(&mut h, json!([1, 1]));
    assert_eq!((report.validity, report.duplicated), (Validity::Invalid, vec![1]));
}

#[test]
fn the_last_successful_read_is_the_final_one() {
    let mut h = Recorder::new();
    add(&mut h, 1, OpType::Ok);
    h.call(8, "read", Value::Null, OpType::Ok, json!([]));
    h.call(8, "read", Value::Null, OpType::Fail, Value::Null);
    assert_eq!(check(&h.history()).unwrap().lost, vec![1]);
    let report = read(&mut h, json!([1]));
    assert_eq!(report.validity, Validity::Valid);
}

#[test]
fn without_a_read_the_answer_is_unknown() {
    let mut h = Recorder::new();
    add(&mut h, 1, OpType::Ok);
    h.call(9, "nemesis-kill", json!("n1"), OpType::Info, Value::Null);
    assert_eq!(check(&h.history()).unwrap().validity, Validity::Unknown);
}

#[test]
fn malformed_values_are_errors() {
    let mut h = Recorder::new();
    h.call(0, "add", json!("one"), OpType::Ok, json!("one"));
    assert!(check(&h.history()).is_err());
    let mut h = Recorder::new();
    h.call(0, "read", Value::Null, OpType::Ok, json!({"elements": [1]}));
    assert!(check(&h.history()).is_err());
}
