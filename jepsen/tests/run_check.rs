//! The runner's checking and reporting over saved histories: workload dispatch, nemesis
//! entries left to the charts, counterexample shrinking, the timeline.

mod common;

use berth_jepsen::checkers::Validity;
use berth_jepsen::run::{self, report, Workload};
use berth_jepsen::{History, Op, OpType, Process};
use common::Recorder;
use serde_json::{json, Value};

fn nemesis(kind: OpType, f: &str, time: u64) -> Op {
    Op::new(Process::Named("nemesis".into()), kind, f, Value::Null, time)
}

/// A register history found by `berth jepsen run --workload register --nemesis member,disk`
/// (seed 5): a write applied twice after its leader was killed mid-forward, so a later read's
/// version is one higher than the puts anyone made (the values alone look fine).
#[test]
fn the_duplicate_apply_found_in_berth_is_illegal_and_stays_so_when_shrunk() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/register_duplicate_apply.jsonl"
    );
    let h = History::read_jsonl_file(std::path::Path::new(path)).unwrap();
    let result = run::check(Workload::Register, &h).unwrap();
    assert_eq!(result.validity, Validity::Invalid);
    let ce = result.counterexample.expect("a counterexample");
    assert!(ce.len() <= h.len());
    assert!(ce
        .ops()
        .iter()
        .all(|op| op.key.as_deref() == Some("jepsen/register/29")));
    let again = run::check(Workload::Register, &ce).unwrap();
    assert_eq!(
        again.validity,
        Validity::Invalid,
        "the shrunk history is a witness itself"
    );
}

#[test]
fn shrinking_drops_irrelevant_reads_but_keeps_writes() {
    let mut r = Recorder::new();
    r.invoke_key(0, "write", "k", json!(1))
        .ok_key(0, "write", "k", json!(1))
        .invoke_key(1, "read", "k", Value::Null)
        .ok_key(1, "read", "k", json!({"value": 1, "version": 1}))
        .invoke_key(2, "read", "k", Value::Null)
        .ok_key(2, "read", "k", json!({"value": 1, "version": 1}))
        .invoke_key(0, "write", "k", json!(2))
        .ok_key(0, "write", "k", json!(2))
        // Stale: 2 was acknowledged before this read began.
        .invoke_key(1, "read", "k", Value::Null)
        .ok_key(1, "read", "k", json!({"value": 1, "version": 1}));
    let result = run::check(Workload::Register, &r.history()).unwrap();
    assert_eq!(result.validity, Validity::Invalid);
    let ce = result.counterexample.unwrap();
    let fs: Vec<&str> = ce.ops().iter().map(|o| o.f.as_str()).collect();
    assert_eq!(fs, ["write", "write", "write", "write", "read", "read"]);
}

#[test]
fn nemesis_entries_are_ignored_by_checkers_and_shaded_on_the_timeline() {
    let mut r = Recorder::new();
    r.invoke(0, "add", json!(1)).ok(0, "add", json!(1));
    let mut ops = r.history().ops().to_vec();
    ops.push(nemesis(OpType::Invoke, "start-kill", 2));
    ops.push(nemesis(OpType::Info, "start-kill", 3));
    ops.push(Op::new(Process::Client(1), OpType::Invoke, "add", json!(2), 4));
    ops.push(nemesis(OpType::Invoke, "stop-kill", 5));
    ops.push(nemesis(OpType::Info, "stop-kill", 6));
    ops.push(Op::new(Process::Client(1), OpType::Info, "add", json!(2), 7).with_error("timeout"));
    ops.push(Op::new(
        Process::Client(9),
        OpType::Invoke,
        "read",
        Value::Null,
        8,
    ));
    ops.push(Op::new(Process::Client(9), OpType::Ok, "read", json!([1]), 9));
    let h = History::from_ops(ops);
    let result = run::check(Workload::Set, &h).unwrap();
    assert_eq!(result.validity, Validity::Valid);
    assert_eq!(report::nemesis_intervals(&h), vec![(2, 5, "kill".to_string())]);
    let html = report::timeline_html(&h, 2, "t").unwrap();
    assert!(html.contains("<svg") && html.contains(">kill</text>"));
    assert!(!html.contains("<script"), "self-contained, no scripts");
    let counts = run::op_counts(&h);
    assert_eq!(counts["add"], json!({"ok": 1, "info": 1}));
}

#[test]
fn a_lost_set_element_is_invalid() {
    let mut r = Recorder::new();
    r.invoke(0, "add", json!(1))
        .ok(0, "add", json!(1))
        .invoke(0, "read", Value::Null)
        .ok(0, "read", json!([]));
    let result = run::check(Workload::Set, &r.history()).unwrap();
    assert_eq!(result.validity, Validity::Invalid);
    assert_eq!(result.report["final_reads"][0]["report"]["lost"], json!([1]));
}

#[test]
fn workload_and_fault_names_parse_and_clock_skew_says_why_not() {
    assert_eq!("append".parse::<Workload>().unwrap(), Workload::Append);
    assert!("bank".parse::<Workload>().is_err());
    let err = "clock".parse::<run::Fault>().unwrap_err().to_string();
    assert!(err.contains("time namespaces"), "{err}");
}

#[test]
fn every_final_read_of_the_set_is_judged() {
    let mut r = Recorder::new();
    r.invoke(0, "add", json!(1))
        .ok(0, "add", json!(1))
        .invoke(1_000_000, "read", json!({"node": "n1"}))
        .ok(1_000_000, "read", json!([1]))
        .invoke(1_000_001, "read", json!({"node": "n2"}))
        .ok(1_000_001, "read", json!([]));
    let result = run::check(Workload::Set, &r.history()).unwrap();
    assert_eq!(result.validity, Validity::Invalid, "n2 lost the add");
    let reads = result.report["final_reads"].as_array().unwrap();
    assert_eq!(reads.len(), 2);
    assert_eq!(reads[0]["report"]["validity"], "Valid");
    assert_eq!(reads[1]["report"]["lost"], json!([1]));
}
