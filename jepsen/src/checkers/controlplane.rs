//! The control-plane checker: what the scheduler and the controllers promise, judged from
//! what watchers and readers of the Resources API observed.
//!
//! History (see `run::controlplane`): `add-node` (key = node, ok value `{"cpu_m", "pods"}`: its
//! allocatable), `watch` (one per watcher; completion value `{"events": [...]}`, each event
//! `{"rv", "type": "ADDED"|"MODIFIED"|"DELETED"|"LIST", ...}`; a pod event carries `pod`
//! (namespace/name), `uid`, `node` (`""` while unbound), `cpu_m` (the pod's requests),
//! `terminal` (phase Succeeded/Failed); a `LIST` (the watcher's first list, or a relist after
//! `Expired`) carries `pods`, every pod as of `rv`, replacing what the watcher knew), and
//! `converge-read` (after the faults healed, invoke value `{"since_ns", "deadline_ms"}`, ok
//! value `{"deployments": [...], "pods": [{"pod", "uid", "node"}]}`).
//!
//! What is checked:
//! - bound at most once: across every watcher's events and the final reads, a pod (by uid)
//!   has one node at most: once `spec.nodeName` is seen set, it is never seen different or
//!   empty in a later event of the same watcher, nor different anywhere else;
//! - never overcommitted: each watcher's stream, from its list on, is replayed revision by
//!   revision (the events of one revision, e.g. a multi-pod Bind, together); after every
//!   revision each node's non-terminal bound pods (terminating ones included: they still hold
//!   their resources) sum to at most its allocatable cpu and number at most its `pods`;
//! - watchers agree: two watchers that never relisted delivered the same events (type, uid,
//!   node) for every revision both covered (from the later list on), so neither stream that
//!   the overcommit replay relies on skipped an event;
//! - replicas converge: some `converge-read` that completed within `deadline_ms` of `since_ns`
//!   (when the faults healed) saw, for every Deployment, `spec.replicas` = `status.replicas` =
//!   `status.readyReplicas` = its live (not terminating, not terminal) pods = its ready pods,
//!   and every ReplicaSet with `spec.replicas` > 0 ready to its `spec.replicas`.
//!
//! Not checked: memory (the workload's pods request cpu only), fairness or spread of the
//! placement, how fast pods are bound while the faults last.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use serde_json::Value;

use super::Validity;
use crate::history::{History, Op, OpType, Operation, Outcome};
use crate::Error;

/// Where a pod's binding was seen.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sighting {
    /// The watcher's process, or `final-read`.
    pub seen_by: String,
    /// The event's revision (0 in a final read).
    pub rv: i64,
    /// The node (`""`: unbound).
    pub node: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum ControlPlaneAnomaly {
    /// A pod's spec.nodeName changed (or was cleared) after it had been set.
    BoundTwice {
        pod: String,
        uid: String,
        first: Sighting,
        then: Sighting,
    },
    /// At some revision a node held more than its allocatable.
    Overcommitted {
        node: String,
        rv: i64,
        watcher: String,
        cpu_m: i64,
        cpu_allocatable_m: i64,
        pods: i64,
        pods_allocatable: i64,
        /// The pods bound to it at that revision, with their cpu requests (`ns/name 500m`).
        bound: Vec<String>,
    },
    /// Two watchers that never relisted delivered different events for one revision both
    /// covered (a watch that skips or invents events would make the overcommit replay blind).
    WatchersDisagree {
        rv: i64,
        watcher: String,
        events: Vec<String>,
        other: String,
        other_events: Vec<String>,
    },
    /// No converge-read within the deadline after healing saw every Deployment converged.
    NotConverged {
        deadline_ms: u64,
        reads: usize,
        /// The last read within the deadline: the deployments that were not converged.
        last: Vec<Value>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ControlPlaneReport {
    pub validity: Validity,
    pub nodes: usize,
    pub watchers: usize,
    pub events: usize,
    /// Distinct pods seen bound.
    pub pods_bound: usize,
    /// Revisions replayed and checked for overcommit, summed over watchers.
    pub revisions_checked: usize,
    /// When a converge-read first saw everything converged, ms after healing.
    pub converged_after_ms: Option<u64>,
    /// Why the verdict is unknown, if it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unknown_because: Option<String>,
    pub anomalies: Vec<ControlPlaneAnomaly>,
}

/// A node's allocatable.
#[derive(Debug, Clone, Copy)]
struct Allocatable {
    cpu_m: i64,
    pods: i64,
}

/// What a watcher knows of a pod.
#[derive(Debug, Clone)]
struct PodState {
    name: String,
    node: String,
    cpu_m: i64,
    terminal: bool,
}

pub fn check(history: &History) -> Result<ControlPlaneReport, Error> {
    let ops = history.pair()?;
    let nodes = allocatables(&ops)?;
    let mut anomalies = Vec::new();
    let mut binds = Binds::default();
    let (mut watchers, mut events_n, mut revisions) = (0, 0, 0);
    let mut streams: Vec<(String, &[Value])> = Vec::new();
    for op in ops.iter().filter(|o| o.f == "watch") {
        let Some(events) = op.output.get("events").and_then(Value::as_array) else {
            continue; // never completed: nothing observed
        };
        watchers += 1;
        events_n += events.len();
        let seen_by = op.process.to_string();
        revisions += replay(op, events, &nodes, &seen_by, &mut binds, &mut anomalies)?;
        streams.push((seen_by, events.as_slice()));
    }
    compare_streams(&streams, &mut anomalies);
    let converge = check_converged(&ops, &mut binds, &mut anomalies)?;
    anomalies.extend(binds.anomalies);
    let unknown_because = if watchers == 0 {
        Some("no watcher reported its events".to_string())
    } else if converge.reads == 0 {
        Some("no converge-read after the faults healed".to_string())
    } else {
        None
    };
    let validity = if !anomalies.is_empty() {
        Validity::Invalid
    } else if unknown_because.is_some() {
        Validity::Unknown
    } else {
        Validity::Valid
    };
    Ok(ControlPlaneReport {
        validity,
        nodes: nodes.len(),
        watchers,
        events: events_n,
        pods_bound: binds.first.len(),
        revisions_checked: revisions,
        converged_after_ms: converge.after_ms,
        unknown_because,
        anomalies,
    })
}

fn allocatables(ops: &[Operation]) -> Result<BTreeMap<String, Allocatable>, Error> {
    let mut nodes = BTreeMap::new();
    for op in ops
        .iter()
        .filter(|o| o.f == "add-node" && o.outcome == Outcome::Ok)
    {
        let bad = || {
            Error::bad_op(
                op.invoke,
                &op.f,
                "must have a key and complete with {\"cpu_m\", \"pods\"}",
            )
        };
        let name = op.key.clone().ok_or_else(bad)?;
        let cpu_m = op.output.get("cpu_m").and_then(Value::as_i64).ok_or_else(bad)?;
        let pods = op.output.get("pods").and_then(Value::as_i64).ok_or_else(bad)?;
        nodes.insert(name, Allocatable { cpu_m, pods });
    }
    Ok(nodes)
}

/// Every binding seen, by uid: the first sighting with a node, and anomalies found.
#[derive(Default)]
struct Binds {
    first: HashMap<String, (String, Sighting)>,
    anomalies: Vec<ControlPlaneAnomaly>,
    /// One anomaly per pod is enough.
    reported: std::collections::HashSet<String>,
}

impl Binds {
    /// `previous`: what the same observer saw of this pod before (a clear after a set is an
    /// anomaly within one stream; across observers only two different nodes are).
    fn saw(&mut self, uid: &str, pod: &str, s: Sighting, previous: Option<&str>) {
        if self.reported.contains(uid) {
            return;
        }
        if s.node.is_empty() {
            if let Some(prev) = previous.filter(|p| !p.is_empty()) {
                let first = self.first.get(uid).map_or_else(
                    || Sighting {
                        node: prev.to_string(),
                        ..s.clone()
                    },
                    |f| f.1.clone(),
                );
                self.report(uid, pod, first, s);
            }
            return;
        }
        match self.first.get(uid) {
            None => {
                self.first.insert(uid.to_string(), (pod.to_string(), s));
            }
            Some((_, first)) if first.node != s.node => {
                let first = first.clone();
                self.report(uid, pod, first, s);
            }
            Some(_) => {}
        }
    }

    fn report(&mut self, uid: &str, pod: &str, first: Sighting, then: Sighting) {
        self.reported.insert(uid.to_string());
        self.anomalies.push(ControlPlaneAnomaly::BoundTwice {
            pod: pod.to_string(),
            uid: uid.to_string(),
            first,
            then,
        });
    }
}

fn pod_of(op: &Operation, v: &Value) -> Result<(String, PodState), Error> {
    let bad = || {
        Error::bad_op(
            op.invoke,
            &op.f,
            "a pod in a watch event must have pod, uid, node and cpu_m",
        )
    };
    let text = |k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(bad)
    };
    Ok((
        text("uid")?,
        PodState {
            name: text("pod")?,
            node: text("node")?,
            cpu_m: v.get("cpu_m").and_then(Value::as_i64).ok_or_else(bad)?,
            terminal: v.get("terminal").and_then(Value::as_bool).unwrap_or(false),
        },
    ))
}

/// A watcher's stream by revision: (list revision, last revision, events per revision).
type Revisions = (i64, i64, BTreeMap<i64, Vec<String>>);

/// Per revision, a watcher's events as comparable strings (`type uid node`), and the range
/// of revisions it covered (after its list, up to its last event); None if it relisted.
fn stream_revisions(events: &[Value]) -> Option<Revisions> {
    let mut lists = events.iter().filter(|e| e["type"] == "LIST");
    let from = lists.next()?["rv"].as_i64()?;
    if lists.next().is_some() {
        return None;
    }
    let mut by_rv: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    for e in events.iter().filter(|e| e["type"] != "LIST") {
        let text = format!(
            "{} {} {}",
            e["type"].as_str().unwrap_or(""),
            e["uid"].as_str().unwrap_or(""),
            e["node"].as_str().unwrap_or("")
        );
        by_rv.entry(e["rv"].as_i64().unwrap_or(0)).or_default().push(text);
    }
    by_rv.values_mut().for_each(|v| v.sort());
    let to = by_rv.keys().next_back().copied().unwrap_or(from);
    Some((from, to, by_rv))
}

/// Every pair of watchers that never relisted agrees on every revision both covered; one
/// anomaly per pair at most.
fn compare_streams(streams: &[(String, &[Value])], anomalies: &mut Vec<ControlPlaneAnomaly>) {
    let parsed: Vec<(&String, Revisions)> = streams
        .iter()
        .filter_map(|(who, events)| Some((who, stream_revisions(events)?)))
        .collect();
    for (i, (a, (a_from, a_to, a_revs))) in parsed.iter().enumerate() {
        for (b, (b_from, b_to, b_revs)) in &parsed[i + 1..] {
            // Revisions after both lists, up to the end of the shorter stream.
            let (lo, hi) = (*a_from.max(b_from), *a_to.min(b_to));
            let revs: std::collections::BTreeSet<i64> = a_revs
                .range(lo + 1..=hi)
                .chain(b_revs.range(lo + 1..=hi))
                .map(|(rv, _)| *rv)
                .collect();
            let empty = Vec::new();
            for rv in revs {
                let (ea, eb) = (
                    a_revs.get(&rv).unwrap_or(&empty),
                    b_revs.get(&rv).unwrap_or(&empty),
                );
                if ea != eb {
                    anomalies.push(ControlPlaneAnomaly::WatchersDisagree {
                        rv,
                        watcher: a.to_string(),
                        events: ea.clone(),
                        other: b.to_string(),
                        other_events: eb.clone(),
                    });
                    break;
                }
            }
        }
    }
}

/// Replays one watcher's stream; returns the number of revisions checked.
fn replay(
    op: &Operation,
    events: &[Value],
    nodes: &BTreeMap<String, Allocatable>,
    seen_by: &str,
    binds: &mut Binds,
    anomalies: &mut Vec<ControlPlaneAnomaly>,
) -> Result<usize, Error> {
    let mut state: HashMap<String, PodState> = HashMap::new();
    let mut checked = 0;
    let mut i = 0;
    while i < events.len() {
        let rv = events[i].get("rv").and_then(Value::as_i64).unwrap_or(0);
        // Every event of this revision, applied together.
        while i < events.len() && events[i].get("rv").and_then(Value::as_i64).unwrap_or(0) == rv {
            apply(op, &events[i], rv, seen_by, &mut state, binds)?;
            i += 1;
        }
        checked += 1;
        overcommit(&state, nodes, rv, seen_by, anomalies);
    }
    Ok(checked)
}

fn apply(
    op: &Operation,
    ev: &Value,
    rv: i64,
    seen_by: &str,
    state: &mut HashMap<String, PodState>,
    binds: &mut Binds,
) -> Result<(), Error> {
    let sighting = |node: &str| Sighting {
        seen_by: seen_by.to_string(),
        rv,
        node: node.to_string(),
    };
    match ev.get("type").and_then(Value::as_str) {
        Some("LIST") => {
            let pods = ev
                .get("pods")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let before = std::mem::take(state);
            for p in &pods {
                let (uid, pod) = pod_of(op, p)?;
                let previous = before.get(&uid).map(|b| b.node.as_str());
                binds.saw(&uid, &pod.name, sighting(&pod.node), previous);
                state.insert(uid, pod);
            }
        }
        Some("ADDED" | "MODIFIED") => {
            let (uid, pod) = pod_of(op, ev)?;
            let previous = state.get(&uid).map(|b| b.node.as_str());
            binds.saw(&uid, &pod.name, sighting(&pod.node), previous);
            state.insert(uid, pod);
        }
        Some("DELETED") => {
            let (uid, pod) = pod_of(op, ev)?;
            let previous = state.get(&uid).map(|b| b.node.as_str());
            binds.saw(&uid, &pod.name, sighting(&pod.node), previous);
            state.remove(&uid);
        }
        other => {
            return Err(Error::bad_op(
                op.invoke,
                &op.f,
                format!("unknown watch event type {other:?}"),
            ))
        }
    }
    Ok(())
}

fn overcommit(
    state: &HashMap<String, PodState>,
    nodes: &BTreeMap<String, Allocatable>,
    rv: i64,
    seen_by: &str,
    anomalies: &mut Vec<ControlPlaneAnomaly>,
) {
    let mut per_node: BTreeMap<&str, (i64, Vec<String>)> = BTreeMap::new();
    for p in state.values().filter(|p| !p.node.is_empty() && !p.terminal) {
        let e = per_node.entry(p.node.as_str()).or_default();
        e.0 += p.cpu_m;
        e.1.push(format!("{} {}m", p.name, p.cpu_m));
    }
    for (node, (cpu_m, mut bound)) in per_node {
        let Some(alloc) = nodes.get(node) else { continue };
        let pods = bound.len() as i64;
        if cpu_m > alloc.cpu_m || pods > alloc.pods {
            bound.sort();
            anomalies.push(ControlPlaneAnomaly::Overcommitted {
                node: node.to_string(),
                rv,
                watcher: seen_by.to_string(),
                cpu_m,
                cpu_allocatable_m: alloc.cpu_m,
                pods,
                pods_allocatable: alloc.pods,
                bound,
            });
        }
    }
}

struct Convergence {
    reads: usize,
    after_ms: Option<u64>,
}

/// Whether one Deployment observation is converged.
pub fn deployment_converged(d: &Value) -> bool {
    let n = |k: &str| d.get(k).and_then(Value::as_i64);
    let Some(spec) = n("spec_replicas") else {
        return false;
    };
    let same = ["replicas", "ready_replicas", "live_pods", "ready_pods"]
        .iter()
        .all(|k| n(k) == Some(spec));
    let sets_ready = d.get("replicasets").and_then(Value::as_array).is_none_or(|sets| {
        sets.iter().all(|rs| {
            let m = |k: &str| rs.get(k).and_then(Value::as_i64).unwrap_or(0);
            m("spec_replicas") == 0 || m("ready_replicas") == m("spec_replicas")
        })
    });
    same && sets_ready
}

fn check_converged(
    ops: &[Operation],
    binds: &mut Binds,
    anomalies: &mut Vec<ControlPlaneAnomaly>,
) -> Result<Convergence, Error> {
    let reads: Vec<&Operation> = ops
        .iter()
        .filter(|o| o.f == "converge-read" && o.outcome == Outcome::Ok)
        .collect();
    let mut out = Convergence {
        reads: reads.len(),
        after_ms: None,
    };
    let Some(first) = reads.first() else {
        return Ok(out);
    };
    let bad = || {
        Error::bad_op(
            first.invoke,
            &first.f,
            "must be invoked with {\"since_ns\", \"deadline_ms\"}",
        )
    };
    let since_ns = first
        .input
        .get("since_ns")
        .and_then(Value::as_u64)
        .ok_or_else(bad)?;
    let deadline_ms = first
        .input
        .get("deadline_ms")
        .and_then(Value::as_u64)
        .ok_or_else(bad)?;
    let deadline_ns = since_ns + deadline_ms * 1_000_000;
    let mut last_in_time: Option<Vec<Value>> = None;
    for read in &reads {
        // The final state: every pod's node, as a sighting too.
        for p in read
            .output
            .get("pods")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let (Some(uid), Some(node)) = (
                p.get("uid").and_then(Value::as_str),
                p.get("node").and_then(Value::as_str),
            ) else {
                continue;
            };
            let pod = p.get("pod").and_then(Value::as_str).unwrap_or("");
            let s = Sighting {
                seen_by: "final-read".into(),
                rv: 0,
                node: node.to_string(),
            };
            binds.saw(uid, pod, s, None);
        }
        let ret = read.ret.expect("ok operations have a return time");
        if ret > deadline_ns || out.after_ms.is_some() {
            continue;
        }
        let deployments = read
            .output
            .get("deployments")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let not_converged: Vec<Value> = deployments
            .iter()
            .filter(|d| !deployment_converged(d))
            .cloned()
            .collect();
        if not_converged.is_empty() && !deployments.is_empty() {
            out.after_ms = Some(ret.saturating_sub(since_ns) / 1_000_000);
        }
        last_in_time = Some(not_converged);
    }
    if out.after_ms.is_none() {
        anomalies.push(ControlPlaneAnomaly::NotConverged {
            deadline_ms,
            reads: reads.len(),
            last: last_in_time.unwrap_or_default(),
        });
    }
    Ok(out)
}

/// The entries behind each anomaly, as a small history (`counterexample.jsonl`): every watch
/// event (`f` = `watch-event`, process = the watcher, key = the pod, time = the watch's
/// completion) and final-read entry of a pod bound twice; the events up to the revision of
/// the pods on an overcommitted node, from that watcher; both watchers' events at a revision
/// they disagree on; the converge-reads of a run that did not converge.
pub fn counterexample(history: &History, report: &ControlPlaneReport) -> Result<Option<History>, Error> {
    if report.anomalies.is_empty() {
        return Ok(None);
    }
    let ops = history.pair()?;
    let mut out: Vec<Op> = Vec::new();
    let event_op = |op: &Operation, e: &Value| {
        let mut entry = Op::new(
            op.process.clone(),
            OpType::Ok,
            "watch-event",
            e.clone(),
            op.ret.unwrap_or(op.call),
        );
        entry.key = e["pod"].as_str().map(str::to_string);
        entry
    };
    let watches: Vec<&Operation> = ops.iter().filter(|o| o.f == "watch").collect();
    // Every pod entry of a watch: events themselves, and the items of lists (with the list's rv).
    let pods_of = |op: &Operation| -> Vec<Value> {
        let mut v = Vec::new();
        for e in op.output["events"].as_array().into_iter().flatten() {
            if e["type"] == "LIST" {
                for p in e["pods"].as_array().into_iter().flatten() {
                    let mut p = p.clone();
                    p["rv"] = e["rv"].clone();
                    p["type"] = "LIST".into();
                    v.push(p);
                }
            } else {
                v.push(e.clone());
            }
        }
        v
    };
    for a in &report.anomalies {
        match a {
            ControlPlaneAnomaly::BoundTwice { uid, .. } => {
                for w in &watches {
                    out.extend(
                        pods_of(w)
                            .iter()
                            .filter(|e| e["uid"] == uid.as_str())
                            .map(|e| event_op(w, e)),
                    );
                }
                for r in ops
                    .iter()
                    .filter(|o| o.f == "converge-read" && o.outcome == Outcome::Ok)
                {
                    for p in r.output["pods"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter(|p| p["uid"] == uid.as_str())
                    {
                        let mut entry = Op::new(
                            r.process.clone(),
                            OpType::Ok,
                            "final-read",
                            p.clone(),
                            r.ret.unwrap_or(r.call),
                        );
                        entry.key = p["pod"].as_str().map(str::to_string);
                        out.push(entry);
                    }
                }
            }
            ControlPlaneAnomaly::Overcommitted {
                rv, watcher, bound, ..
            } => {
                let names: Vec<&str> = bound.iter().filter_map(|b| b.split(' ').next()).collect();
                for w in watches.iter().filter(|w| w.process.to_string() == *watcher) {
                    out.extend(
                        pods_of(w)
                            .iter()
                            .filter(|e| e["rv"].as_i64().is_some_and(|r| r <= *rv))
                            .filter(|e| e["pod"].as_str().is_some_and(|p| names.contains(&p)))
                            .map(|e| event_op(w, e)),
                    );
                }
            }
            ControlPlaneAnomaly::WatchersDisagree {
                rv, watcher, other, ..
            } => {
                for w in watches.iter().filter(|w| {
                    let who = w.process.to_string();
                    who == *watcher || who == *other
                }) {
                    out.extend(
                        pods_of(w)
                            .iter()
                            .filter(|e| e["rv"] == *rv)
                            .map(|e| event_op(w, e)),
                    );
                }
            }
            ControlPlaneAnomaly::NotConverged { .. } => {
                for r in ops.iter().filter(|o| o.f == "converge-read") {
                    out.push(history.ops()[r.invoke].clone());
                    if let Some(c) = r.completion {
                        out.push(history.ops()[c].clone());
                    }
                }
            }
        }
    }
    Ok(Some(History::from_ops(out)))
}
