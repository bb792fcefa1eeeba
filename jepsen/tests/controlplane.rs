//! Tiny hand-made control-plane histories: a good one passes; one per anomaly kind fails.
//! Times are ticks (1 ns each), so every converge-read here is within its deadline unless a
//! test says otherwise.

mod common;

use berth_jepsen::checkers::controlplane::{check, counterexample, ControlPlaneAnomaly};
use berth_jepsen::checkers::Validity;
use common::Recorder;
use serde_json::{json, Value};

/// Two nodes of 2 cpu / 4 pods.
fn with_nodes() -> Recorder {
    let mut r = Recorder::new();
    for n in ["n1", "n2"] {
        r.invoke_key(100, "add-node", n, json!({"cpu_m": 2000, "pods": 4}))
            .ok_key(100, "add-node", n, json!({"cpu_m": 2000, "pods": 4}));
    }
    r
}

fn pod(name: &str, uid: &str, node: &str, cpu_m: i64) -> Value {
    json!({"pod": format!("jepsen-cp/{name}"), "uid": uid, "node": node, "cpu_m": cpu_m, "terminal": false})
}

fn ev(rv: i64, ty: &str, p: Value) -> Value {
    let mut e = p;
    e["rv"] = json!(rv);
    e["type"] = json!(ty);
    e
}

fn watch(r: &mut Recorder, process: u64, events: Vec<Value>) {
    r.invoke(process, "watch", json!({"start_revision": 1}))
        .ok(process, "watch", json!({"events": events}));
}

fn deployment(spec: i64, ready: i64) -> Value {
    json!({"name": "d0", "spec_replicas": spec, "replicas": spec, "ready_replicas": ready,
        "live_pods": spec, "ready_pods": ready,
        "replicasets": [{"name": "d0-1", "spec_replicas": spec, "ready_replicas": ready}]})
}

fn converge(r: &mut Recorder, deadline_ms: u64, deployments: Vec<Value>, pods: Vec<Value>) {
    r.invoke(
        1_000_000,
        "converge-read",
        json!({"since_ns": 0, "deadline_ms": deadline_ms}),
    )
    .ok(
        1_000_000,
        "converge-read",
        json!({"deployments": deployments, "pods": pods}),
    );
}

/// Two pods created, bound to different nodes (the second with a 2-pod bind at one revision),
/// one deleted; a relist; then converged.
fn good() -> Recorder {
    let mut r = with_nodes();
    let events = vec![
        ev(5, "LIST", json!({"pods": [pod("a", "ua", "", 1000)]})),
        ev(6, "ADDED", pod("b", "ub", "", 1000)),
        ev(7, "MODIFIED", pod("a", "ua", "n1", 1000)),
        ev(8, "ADDED", pod("c", "uc", "", 1000)),
        ev(9, "MODIFIED", pod("b", "ub", "n1", 1000)),
        ev(10, "DELETED", pod("a", "ua", "n1", 1000)),
        ev(11, "MODIFIED", pod("c", "uc", "n1", 1000)),
    ];
    watch(&mut r, 200, events.clone());
    // A second watcher saw the same from revision 8 on.
    watch(&mut r, 201, events[3..].to_vec());
    converge(
        &mut r,
        30_000,
        vec![deployment(2, 2)],
        vec![json!({"pod": "jepsen-cp/b", "uid": "ub", "node": "n1"})],
    );
    r
}

#[test]
fn a_good_history_is_valid() {
    let report = check(&good().history()).unwrap();
    assert_eq!(report.validity, Validity::Valid, "{report:?}");
    assert_eq!(report.watchers, 2);
    assert_eq!(report.pods_bound, 3);
    assert_eq!(report.converged_after_ms, Some(0));
}

#[test]
fn two_watchers_seeing_different_nodes_is_a_double_bind() {
    let mut r = good();
    watch(&mut r, 202, vec![ev(9, "MODIFIED", pod("b", "ub", "n2", 1000))]);
    let report = check(&r.history()).unwrap();
    assert_eq!(report.validity, Validity::Invalid);
    assert!(
        matches!(&report.anomalies[..], [ControlPlaneAnomaly::BoundTwice { uid, first, then, .. }]
            if uid == "ub" && first.node == "n1" && then.node == "n2" && then.seen_by == "202"),
        "{:?}",
        report.anomalies
    );
}

#[test]
fn a_node_name_cleared_in_one_stream_is_a_double_bind() {
    let mut r = with_nodes();
    watch(
        &mut r,
        200,
        vec![
            ev(6, "ADDED", pod("b", "ub", "n1", 500)),
            ev(7, "MODIFIED", pod("b", "ub", "", 500)),
        ],
    );
    converge(&mut r, 30_000, vec![deployment(1, 1)], vec![]);
    let report = check(&r.history()).unwrap();
    assert!(
        matches!(&report.anomalies[..], [ControlPlaneAnomaly::BoundTwice { then, .. }] if then.node.is_empty() && then.rv == 7),
        "{:?}",
        report.anomalies
    );
}

#[test]
fn a_final_read_on_another_node_is_a_double_bind() {
    let mut r = good();
    converge(
        &mut r,
        30_000,
        vec![deployment(2, 2)],
        vec![json!({"pod": "jepsen-cp/c", "uid": "uc", "node": "n2"})],
    );
    let report = check(&r.history()).unwrap();
    assert!(
        matches!(&report.anomalies[..], [ControlPlaneAnomaly::BoundTwice { then, .. }] if then.seen_by == "final-read"),
        "{:?}",
        report.anomalies
    );
}

#[test]
fn more_cpu_than_allocatable_at_one_revision_is_overcommit() {
    let mut r = with_nodes();
    watch(
        &mut r,
        200,
        vec![
            ev(6, "ADDED", pod("a", "ua", "n1", 1500)),
            ev(7, "ADDED", pod("b", "ub", "", 1000)),
            ev(8, "MODIFIED", pod("b", "ub", "n1", 1000)),
            // Fixed one revision later: still an anomaly at revision 8.
            ev(9, "DELETED", pod("a", "ua", "n1", 1500)),
        ],
    );
    converge(&mut r, 30_000, vec![deployment(1, 1)], vec![]);
    let report = check(&r.history()).unwrap();
    assert!(
        matches!(&report.anomalies[..], [ControlPlaneAnomaly::Overcommitted { node, rv: 8, cpu_m: 2500, cpu_allocatable_m: 2000, bound, .. }]
            if node == "n1" && bound.len() == 2),
        "{:?}",
        report.anomalies
    );
}

#[test]
fn more_pods_than_allowed_in_one_bind_is_overcommit() {
    let mut r = with_nodes();
    let mut events: Vec<Value> = (0..5)
        .map(|i| ev(6 + i, "ADDED", pod(&format!("p{i}"), &format!("u{i}"), "", 100)))
        .collect();
    // One Bind of five pods: one revision.
    events.extend((0..5).map(|i| ev(20, "MODIFIED", pod(&format!("p{i}"), &format!("u{i}"), "n2", 100))));
    watch(&mut r, 200, events);
    converge(&mut r, 30_000, vec![deployment(1, 1)], vec![]);
    let report = check(&r.history()).unwrap();
    assert!(
        matches!(
            &report.anomalies[..],
            [ControlPlaneAnomaly::Overcommitted {
                rv: 20,
                pods: 5,
                pods_allocatable: 4,
                ..
            }]
        ),
        "{:?}",
        report.anomalies
    );
}

#[test]
fn terminal_pods_hold_nothing_but_terminating_ones_do() {
    let mut r = with_nodes();
    let mut done = pod("a", "ua", "n1", 1500);
    done["terminal"] = json!(true);
    watch(
        &mut r,
        200,
        vec![ev(6, "ADDED", done), ev(7, "ADDED", pod("b", "ub", "n1", 1500))],
    );
    converge(&mut r, 30_000, vec![deployment(1, 1)], vec![]);
    assert_eq!(check(&r.history()).unwrap().validity, Validity::Valid);
}

#[test]
fn replicas_not_ready_by_the_deadline_do_not_converge() {
    let mut r = with_nodes();
    watch(&mut r, 200, vec![]);
    converge(&mut r, 30_000, vec![deployment(3, 2)], vec![]);
    let report = check(&r.history()).unwrap();
    assert!(
        matches!(&report.anomalies[..], [ControlPlaneAnomaly::NotConverged { reads: 1, last, .. }] if last.len() == 1),
        "{:?}",
        report.anomalies
    );
}

#[test]
fn convergence_after_the_deadline_does_not_count() {
    let mut r = with_nodes();
    watch(&mut r, 200, vec![]);
    // Deadline 0 ms: the read completes a few ticks after since_ns = 0.
    converge(&mut r, 0, vec![deployment(2, 2)], vec![]);
    let report = check(&r.history()).unwrap();
    assert!(matches!(
        &report.anomalies[..],
        [ControlPlaneAnomaly::NotConverged { .. }]
    ));
}

#[test]
fn too_many_live_pods_is_not_converged() {
    let mut r = with_nodes();
    watch(&mut r, 200, vec![]);
    let mut d = deployment(2, 2);
    d["live_pods"] = json!(3);
    converge(&mut r, 30_000, vec![d], vec![]);
    assert_eq!(check(&r.history()).unwrap().validity, Validity::Invalid);
}

#[test]
fn without_a_converge_read_the_verdict_is_unknown() {
    let mut r = with_nodes();
    watch(&mut r, 200, vec![ev(6, "ADDED", pod("a", "ua", "n1", 100))]);
    let report = check(&r.history()).unwrap();
    assert_eq!(report.validity, Validity::Unknown);
    assert!(report.unknown_because.is_some());
}

#[test]
fn a_watcher_missing_an_event_the_other_saw_disagrees() {
    let mut r = with_nodes();
    let list = ev(5, "LIST", json!({"pods": []}));
    let a = vec![
        list.clone(),
        ev(6, "ADDED", pod("a", "ua", "", 1500)),
        ev(7, "MODIFIED", pod("a", "ua", "n1", 1500)),
        ev(8, "ADDED", pod("b", "ub", "", 1000)),
    ];
    // The second skipped the bind at revision 7.
    let b = vec![
        list,
        ev(6, "ADDED", pod("a", "ua", "", 1500)),
        ev(8, "ADDED", pod("b", "ub", "", 1000)),
    ];
    watch(&mut r, 200, a);
    watch(&mut r, 201, b);
    converge(&mut r, 30_000, vec![deployment(1, 1)], vec![]);
    let report = check(&r.history()).unwrap();
    assert!(
        matches!(&report.anomalies[..], [ControlPlaneAnomaly::WatchersDisagree { rv: 7, other_events, .. }] if other_events.is_empty()),
        "{:?}",
        report.anomalies
    );
}

#[test]
fn a_watcher_that_relisted_is_not_compared() {
    let mut r = with_nodes();
    watch(
        &mut r,
        200,
        vec![
            ev(5, "LIST", json!({"pods": []})),
            ev(7, "MODIFIED", pod("a", "ua", "n1", 100)),
        ],
    );
    watch(
        &mut r,
        201,
        vec![
            ev(5, "LIST", json!({"pods": []})),
            ev(9, "LIST", json!({"pods": [pod("a", "ua", "n1", 100)]})),
        ],
    );
    converge(&mut r, 30_000, vec![deployment(1, 1)], vec![]);
    assert_eq!(check(&r.history()).unwrap().validity, Validity::Valid);
}

#[test]
fn the_counterexample_holds_the_events_behind_each_anomaly() {
    // A double bind: every sighting of the pod, from both watchers and the final read.
    let mut r = good();
    watch(&mut r, 202, vec![ev(9, "MODIFIED", pod("b", "ub", "n2", 1000))]);
    let h = r.history();
    let report = check(&h).unwrap();
    let ce = counterexample(&h, &report).unwrap().expect("a counterexample");
    let nodes: Vec<&str> = ce.ops().iter().filter_map(|o| o.value["node"].as_str()).collect();
    assert!(nodes.contains(&"n1") && nodes.contains(&"n2"), "{ce:?}");
    assert!(
        ce.ops().iter().all(|o| o.key.as_deref() == Some("jepsen-cp/b")),
        "{ce:?}"
    );
    assert!(ce.ops().iter().any(|o| o.f == "final-read"));
    // None for a valid history.
    let good = good().history();
    assert!(counterexample(&good, &check(&good).unwrap()).unwrap().is_none());
}

#[test]
fn an_overcommit_counterexample_is_the_pods_on_that_node_up_to_the_revision() {
    let mut r = with_nodes();
    watch(
        &mut r,
        200,
        vec![
            ev(6, "ADDED", pod("a", "ua", "n1", 1500)),
            ev(7, "ADDED", pod("other", "uo", "n2", 100)),
            ev(8, "ADDED", pod("b", "ub", "n1", 1000)),
            ev(9, "DELETED", pod("a", "ua", "n1", 1500)),
        ],
    );
    converge(&mut r, 30_000, vec![deployment(1, 1)], vec![]);
    let h = r.history();
    let ce = counterexample(&h, &check(&h).unwrap()).unwrap().unwrap();
    let rvs: Vec<i64> = ce.ops().iter().map(|o| o.value["rv"].as_i64().unwrap()).collect();
    assert_eq!(rvs, vec![6, 8], "{ce:?}");
}
