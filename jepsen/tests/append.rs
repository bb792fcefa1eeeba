//! The list-append checker on hand-made histories, one per anomaly.

mod common;

use std::collections::BTreeSet;

use berth_jepsen::checkers::append::{check, AppendAnomaly, AppendReport, Dep};
use berth_jepsen::checkers::Validity;
use berth_jepsen::OpType;
use common::Recorder;
use serde_json::{json, Value};

/// Records one transaction; `mops` are as completed (reads filled in). Returns its invoke index.
fn txn(h: &mut Recorder, p: u64, outcome: OpType, mops: Value) -> usize {
    let mut invoked = mops.clone();
    for m in invoked.as_array_mut().unwrap() {
        if m[0] == "r" {
            m[2] = Value::Null;
        }
    }
    let index = h.history().len();
    let completed = if outcome == OpType::Ok {
        mops
    } else {
        invoked.clone()
    };
    h.call(p, "txn", invoked, outcome, completed);
    index
}

fn report(h: &Recorder) -> AppendReport {
    check(&h.history()).unwrap()
}

fn types(r: &AppendReport) -> BTreeSet<&'static str> {
    r.anomaly_types.clone()
}

fn only<const N: usize>(names: [&'static str; N]) -> BTreeSet<&'static str> {
    names.into_iter().collect()
}

#[test]
fn a_serial_history_is_valid() {
    let mut h = Recorder::new();
    txn(
        &mut h,
        0,
        OpType::Ok,
        json!([["append", "x", 1], ["r", "x", [1]]]),
    );
    txn(
        &mut h,
        1,
        OpType::Ok,
        json!([["r", "x", [1]], ["append", "x", 2], ["append", 7, 1]]),
    );
    txn(
        &mut h,
        2,
        OpType::Ok,
        json!([["r", "x", [1, 2]], ["r", 7, [1]], ["r", "y", null]]),
    );
    let r = report(&h);
    assert_eq!((r.validity, r.txns), (Validity::Valid, 3), "{:?}", r.anomalies);
}

#[test]
fn g0_write_cycle() {
    let mut h = Recorder::new();
    let t1 = txn(
        &mut h,
        0,
        OpType::Ok,
        json!([["append", "x", 1], ["append", "y", 2]]),
    );
    let t2 = txn(
        &mut h,
        1,
        OpType::Ok,
        json!([["append", "x", 2], ["append", "y", 1]]),
    );
    txn(
        &mut h,
        2,
        OpType::Ok,
        json!([["r", "x", [1, 2]], ["r", "y", [1, 2]]]),
    );
    let r = report(&h);
    assert_eq!(types(&r), only(["G0"]));
    let cycle = r.anomalies[0].cycle().unwrap();
    assert_eq!(
        cycle.iter().map(|s| (s.from, s.to, s.dep)).collect::<Vec<_>>(),
        vec![(t1, t2, Dep::Ww), (t2, t1, Dep::Ww)]
    );
    assert_eq!(
        cycle[0].to_string(),
        format!("T{t1} -ww-> T{t2}: T{t2} appended 2 to x right after T{t1}'s append")
    );
}

#[test]
fn g1c_circular_information_flow() {
    let mut h = Recorder::new();
    txn(
        &mut h,
        0,
        OpType::Ok,
        json!([["append", "x", 1], ["r", "y", [1]]]),
    );
    txn(
        &mut h,
        1,
        OpType::Ok,
        json!([["append", "y", 1], ["r", "x", [1]]]),
    );
    let r = report(&h);
    assert_eq!(types(&r), only(["G1c"]));
    assert!(r.anomalies[0].cycle().unwrap().iter().all(|s| s.dep == Dep::Wr));
}

#[test]
fn g_single_read_skew() {
    let mut h = Recorder::new();
    let reader = txn(&mut h, 0, OpType::Ok, json!([["r", "x", []], ["r", "y", [1]]]));
    let writer = txn(
        &mut h,
        1,
        OpType::Ok,
        json!([["append", "x", 1], ["append", "y", 1]]),
    );
    txn(&mut h, 2, OpType::Ok, json!([["r", "x", [1]]]));
    let r = report(&h);
    assert_eq!(types(&r), only(["G-single"]));
    let cycle = r.anomalies[0].cycle().unwrap();
    assert_eq!(
        cycle.iter().map(|s| (s.from, s.to, s.dep)).collect::<Vec<_>>(),
        vec![(reader, writer, Dep::Rw), (writer, reader, Dep::Wr)]
    );
}

#[test]
fn g2_write_skew() {
    let mut h = Recorder::new();
    txn(&mut h, 0, OpType::Ok, json!([["r", "x", []], ["append", "y", 1]]));
    txn(&mut h, 1, OpType::Ok, json!([["r", "y", []], ["append", "x", 1]]));
    txn(&mut h, 2, OpType::Ok, json!([["r", "x", [1]], ["r", "y", [1]]]));
    let r = report(&h);
    assert_eq!(types(&r), only(["G2"]));
    let cycle = r.anomalies[0].cycle().unwrap();
    assert_eq!(cycle.iter().filter(|s| s.dep == Dep::Rw).count(), 2);
    assert_eq!(cycle[0].from, cycle[cycle.len() - 1].to, "a closed cycle");
}

#[test]
fn g1a_aborted_read() {
    let mut h = Recorder::new();
    let writer = txn(&mut h, 0, OpType::Fail, json!([["append", "x", 1]]));
    let reader = txn(&mut h, 1, OpType::Ok, json!([["r", "x", [1]]]));
    let r = report(&h);
    assert_eq!(types(&r), only(["G1a"]));
    assert_eq!(
        r.anomalies[0],
        AppendAnomaly::G1a {
            reader,
            writer,
            key: "x".into(),
            value: 1
        }
    );
}

#[test]
fn g1b_intermediate_read() {
    let mut h = Recorder::new();
    let writer = txn(
        &mut h,
        0,
        OpType::Ok,
        json!([["append", "x", 1], ["append", "x", 2]]),
    );
    let reader = txn(&mut h, 1, OpType::Ok, json!([["r", "x", [1]]]));
    txn(&mut h, 2, OpType::Ok, json!([["r", "x", [1, 2]]]));
    let r = report(&h);
    assert!(
        r.anomalies.contains(&AppendAnomaly::G1b {
            reader,
            writer,
            key: "x".into(),
            value: 1
        }),
        "{r:?}"
    );
    // Seeing half of a transaction also puts the reader both after and before it.
    assert_eq!(types(&r), only(["G1b", "G-single"]));
}

#[test]
fn an_indeterminate_transaction_may_have_committed() {
    let mut h = Recorder::new();
    txn(
        &mut h,
        0,
        OpType::Info,
        json!([["append", "x", 1], ["r", "y", null]]),
    );
    txn(&mut h, 1, OpType::Ok, json!([["r", "x", [1]]]));
    assert_eq!(report(&h).validity, Validity::Valid);
}

#[test]
fn a_transaction_must_see_its_own_writes() {
    let mut h = Recorder::new();
    let t = txn(&mut h, 0, OpType::Ok, json!([["append", "x", 5], ["r", "x", []]]));
    let r = report(&h);
    assert_eq!(types(&r), only(["internal"]));
    assert_eq!(
        r.anomalies[0],
        AppendAnomaly::Internal {
            txn: t,
            key: "x".into(),
            read: vec![],
            expected: vec![5],
            whole: false
        }
    );
    let mut h = Recorder::new();
    txn(&mut h, 1, OpType::Ok, json!([["append", "x", 6]]));
    txn(
        &mut h,
        0,
        OpType::Ok,
        json!([["r", "x", []], ["append", "x", 5], ["r", "x", [6, 5]]]),
    );
    assert!(types(&report(&h)).contains("internal"));
}

#[test]
fn reads_that_disagree_on_the_order() {
    let mut h = Recorder::new();
    txn(&mut h, 0, OpType::Ok, json!([["append", "x", 1]]));
    txn(&mut h, 1, OpType::Ok, json!([["append", "x", 2]]));
    txn(&mut h, 2, OpType::Ok, json!([["r", "x", [1, 2]]]));
    let odd = txn(&mut h, 3, OpType::Ok, json!([["r", "x", [2]]]));
    let r = report(&h);
    assert!(r.anomalies.contains(&AppendAnomaly::IncompatibleOrder {
        reader: odd,
        key: "x".into(),
        read: vec![2],
        longest: vec![1, 2],
    }));
}

#[test]
fn duplicates_and_elements_never_appended() {
    let mut h = Recorder::new();
    txn(&mut h, 0, OpType::Ok, json!([["append", "x", 1]]));
    txn(&mut h, 1, OpType::Ok, json!([["r", "x", [1, 1]]]));
    txn(&mut h, 2, OpType::Ok, json!([["r", "y", [9]]]));
    let r = report(&h);
    assert!(
        r.anomaly_types.contains("duplicate-elements") && r.anomaly_types.contains("phantom-element"),
        "{r:?}"
    );
}

#[test]
fn malformed_or_ambiguous_histories_are_errors() {
    let mut h = Recorder::new();
    txn(&mut h, 0, OpType::Ok, json!([["append", "x", 1]]));
    txn(&mut h, 1, OpType::Ok, json!([["append", "x", 1]]));
    assert!(
        check(&h.history()).is_err(),
        "appended values must be unique per key"
    );
    let mut h = Recorder::new();
    txn(&mut h, 0, OpType::Ok, json!([["write", "x", 1]]));
    assert!(check(&h.history()).is_err());
}

#[test]
fn a_long_valid_history_stays_valid() {
    let mut h = Recorder::new();
    let mut lists: [Vec<i64>; 3] = Default::default();
    for i in 0..300i64 {
        let k = (i % 3) as usize;
        let read = json!(["r", k, lists[k].clone()]);
        lists[k].push(i);
        txn(
            &mut h,
            (i % 7) as u64,
            OpType::Ok,
            json!([read, ["append", k, i]]),
        );
    }
    let r = report(&h);
    assert_eq!(
        (r.validity, r.txns),
        (Validity::Valid, 300),
        "{:?}",
        r.anomalies.first()
    );
}
