//! Tiny hand-made histories, one per kind of verdict.

mod common;

use berth_jepsen::models::{EtcdRegister, KvRegister, Register};
use berth_jepsen::{check_history, CheckOptions, Decode, Error, History, OpType, Verdict};
use common::Recorder;
use serde_json::{json, Value};

fn check<M: Decode>(model: &M, history: &History) -> Verdict {
    check_history(model, history, &CheckOptions::default()).expect("a well-formed history")
}

fn counterexample(verdict: Verdict) -> berth_jepsen::lin::Counterexample {
    match verdict {
        Verdict::Illegal(c) => *c,
        other => panic!("expected Illegal, got {other:?}"),
    }
}

#[test]
fn concurrent_reads_may_see_either_value() {
    let mut h = Recorder::new();
    h.invoke(0, "write", json!(1))
        .invoke(1, "read", Value::Null)
        .invoke(2, "read", Value::Null)
        .ok(1, "read", json!(1))
        .ok(2, "read", Value::Null)
        .ok(0, "write", json!(1));
    assert_eq!(check(&Register, &h.history()), Verdict::Ok);
}

#[test]
fn stale_read_is_illegal_and_the_counterexample_names_it() {
    let mut h = Recorder::new();
    h.call(0, "write", json!(1), OpType::Ok, json!(1)) // entries 0, 1
        .call(0, "write", json!(2), OpType::Ok, json!(2)) // 2, 3
        .call(1, "read", Value::Null, OpType::Ok, json!(2)) // 4, 5
        .call(1, "read", Value::Null, OpType::Ok, json!(1)); // 6, 7: stale
    let c = counterexample(check(&Register, &h.history()));
    assert_eq!(c.prefix.iter().map(|op| op.id).collect::<Vec<_>>(), vec![0, 2, 4]);
    assert_eq!(c.blocked.id, 6);
    assert_eq!(c.state, "Some(2)");
    assert!(c.to_string().contains("cannot linearize next: #6"), "{c}");
}

#[test]
fn lost_write_is_illegal_in_its_own_partition() {
    let mut h = Recorder::new();
    h.invoke_key(0, "write", "a", json!(1))
        .ok_key(0, "write", "a", json!(1))
        .invoke_key(1, "write", "b", json!(2))
        .ok_key(1, "write", "b", json!(2))
        .invoke_key(2, "read", "b", Value::Null)
        .ok_key(2, "read", "b", json!({"value": 2, "version": 1}))
        .invoke_key(2, "read", "a", Value::Null)
        .ok_key(2, "read", "a", Value::Null); // the acknowledged write of a is gone
    let c = counterexample(check(&EtcdRegister, &h.history()));
    assert_eq!((c.partition.as_str(), c.blocked.id), ("a", 6));
}

#[test]
fn two_successful_cas_from_the_same_value_are_illegal() {
    let mut h = Recorder::new();
    h.call(0, "write", json!(1), OpType::Ok, json!(1))
        .call(1, "cas", json!([1, 2]), OpType::Ok, json!([1, 2]))
        .call(2, "cas", json!([1, 3]), OpType::Ok, json!([1, 3]));
    assert_eq!(counterexample(check(&Register, &h.history())).blocked.id, 4);
}

#[test]
fn a_failed_cas_means_the_compare_did_not_match_unless_it_carries_an_error() {
    let mut mismatch = Recorder::new();
    mismatch.call(0, "write", json!(1), OpType::Ok, json!(1)).call(
        1,
        "cas",
        json!([1, 2]),
        OpType::Fail,
        json!([1, 2]),
    );
    assert!(check(&Register, &mismatch.history()).is_illegal());
    mismatch.error("unavailable"); // a definite failure for another reason: did not happen at all
    assert_eq!(check(&Register, &mismatch.history()), Verdict::Ok);
}

#[test]
fn an_indeterminate_write_may_have_been_applied() {
    let mut h = Recorder::new();
    h.call(0, "write", json!(1), OpType::Info, Value::Null).call(
        1,
        "read",
        Value::Null,
        OpType::Ok,
        json!(1),
    );
    assert_eq!(check(&Register, &h.history()), Verdict::Ok);
}

#[test]
fn an_indeterminate_write_may_not_have_been_applied() {
    let mut h = Recorder::new();
    h.call(0, "write", json!(1), OpType::Ok, json!(1))
        .call(1, "write", json!(2), OpType::Info, Value::Null)
        .call(2, "read", Value::Null, OpType::Ok, json!(1));
    assert_eq!(check(&Register, &h.history()), Verdict::Ok);
}

#[test]
fn an_indeterminate_write_takes_effect_once_and_not_before_its_invoke() {
    let mut once = Recorder::new();
    once.call(0, "write", json!(1), OpType::Ok, json!(1))
        .call(1, "write", json!(2), OpType::Info, Value::Null)
        .call(2, "read", Value::Null, OpType::Ok, json!(2))
        .call(2, "read", Value::Null, OpType::Ok, json!(1));
    assert!(check(&Register, &once.history()).is_illegal());

    let mut early = Recorder::new();
    early.call(2, "read", Value::Null, OpType::Ok, json!(2)).call(
        1,
        "write",
        json!(2),
        OpType::Info,
        Value::Null,
    );
    assert!(check(&Register, &early.history()).is_illegal());
}

#[test]
fn an_invoke_never_completed_is_indeterminate() {
    let mut h = Recorder::new();
    h.invoke(0, "write", json!(1))
        .call(1, "read", Value::Null, OpType::Ok, json!(1));
    assert_eq!(check(&Register, &h.history()), Verdict::Ok);
}

#[test]
fn failed_operations_did_not_happen() {
    let mut h = Recorder::new();
    h.call(0, "write", json!(1), OpType::Ok, json!(1))
        .call(0, "write", json!(2), OpType::Fail, json!(2))
        .call(1, "read", Value::Null, OpType::Fail, Value::Null)
        .error("timed-out")
        .call(1, "read", Value::Null, OpType::Ok, json!(1));
    assert_eq!(check(&Register, &h.history()), Verdict::Ok);
    h.call(1, "read", Value::Null, OpType::Ok, json!(2)); // sees the failed write
    assert!(check(&Register, &h.history()).is_illegal());
}

#[test]
fn cas_on_versions_and_reads_of_versions() {
    let mut h = Recorder::new();
    h.invoke_key(0, "cas-version", "k", json!([0, 5]))
        .ok_key(0, "cas-version", "k", json!([0, 5]))
        .invoke_key(1, "cas-version", "k", json!([0, 6]))
        .fail_key(1, "cas-version", "k", json!([0, 6]))
        .invoke_key(1, "write", "k", json!(7))
        .ok_key(1, "write", "k", json!(7))
        .invoke_key(2, "read", "k", Value::Null)
        .ok_key(2, "read", "k", json!({"value": 7, "version": 2}));
    assert_eq!(check(&EtcdRegister, &h.history()), Verdict::Ok);
    h.invoke_key(2, "read", "k", Value::Null)
        .ok_key(2, "read", "k", json!({"value": 7, "version": 3}));
    assert!(check(&EtcdRegister, &h.history()).is_illegal());
}

#[test]
fn kv_appends_concatenate_per_key() {
    let mut h = Recorder::new();
    h.invoke_key(0, "append", "x", json!("a"))
        .invoke_key(1, "append", "x", json!("b"))
        .ok_key(0, "append", "x", json!("a"))
        .ok_key(1, "append", "x", json!("b"))
        .invoke_key(2, "get", "x", Value::Null)
        .ok_key(2, "get", "x", json!("ba"))
        .invoke_key(2, "get", "y", Value::Null)
        .ok_key(2, "get", "y", json!(""));
    assert_eq!(check(&KvRegister, &h.history()), Verdict::Ok);
    h.invoke_key(2, "get", "x", Value::Null)
        .ok_key(2, "get", "x", json!("ab"));
    assert_eq!(counterexample(check(&KvRegister, &h.history())).partition, "x");
}

#[test]
fn parallel_search_stops_at_the_refuted_partition() {
    let mut h = Recorder::new();
    for (p, key) in ["a", "b", "c", "d", "e"].into_iter().enumerate() {
        let p = p as u64;
        h.invoke_key(p, "write", key, json!(1))
            .ok_key(p, "write", key, json!(1));
        let seen = if key == "d" { json!(2) } else { json!(1) };
        h.invoke_key(p, "read", key, Value::Null)
            .ok_key(p, "read", key, seen);
    }
    for threads in [1, 2, 8] {
        let options = CheckOptions {
            threads,
            ..CheckOptions::default()
        };
        let verdict = check_history(&EtcdRegister, &h.history(), &options).unwrap();
        assert_eq!(counterexample(verdict).partition, "d", "threads = {threads}");
    }
}

#[test]
fn an_exhausted_budget_answers_unknown() {
    let mut h = Recorder::new();
    for p in 0..4 {
        h.invoke(p, "write", json!(p));
    }
    for p in 0..4 {
        h.ok(p, "write", json!(p));
    }
    h.call(9, "read", Value::Null, OpType::Ok, json!(0));
    let options = CheckOptions {
        slice_steps: 1,
        max_steps: Some(3),
        ..CheckOptions::default()
    };
    match check_history(&Register, &h.history(), &options).unwrap() {
        Verdict::Unknown { reason, unresolved } => {
            assert!(reason.contains("step budget"), "{reason}");
            assert_eq!(unresolved, vec![String::new()]);
        }
        other => panic!("expected Unknown, got {other:?}"),
    }
    assert_eq!(check(&Register, &h.history()), Verdict::Ok);
}

#[test]
fn a_history_saved_as_jsonl_checks_the_same() {
    let mut h = Recorder::new();
    h.call(0, "write", json!(1), OpType::Ok, json!(1))
        .call(1, "read", Value::Null, OpType::Ok, Value::Null);
    let mut bytes = Vec::new();
    h.history().write_jsonl(&mut bytes).unwrap();
    let reread = History::read_jsonl(&bytes[..]).unwrap();
    assert_eq!(check(&Register, &reread), check(&Register, &h.history()));
    assert!(check(&Register, &reread).is_illegal());
}

#[test]
fn malformed_operations_are_errors_not_verdicts() {
    let mut h = Recorder::new();
    h.call(0, "write", json!("one"), OpType::Ok, json!("one"));
    let err = check_history(&Register, &h.history(), &CheckOptions::default()).unwrap_err();
    assert!(matches!(err, Error::BadOperation { index: 0, .. }), "{err}");
    let mut no_key = Recorder::new();
    no_key.call(0, "read", Value::Null, OpType::Ok, Value::Null);
    assert!(check_history(&EtcdRegister, &no_key.history(), &CheckOptions::default()).is_err());
}
