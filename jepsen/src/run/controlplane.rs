//! The control-plane workload, over `berth_client::ResourceClient` only. The servers run their
//! schedulers and controllers as usual; the workload brings the rest of a cluster:
//!
//! - hollow nodes: Node objects with a small allocatable ([`NODE_CPU_M`], [`NODE_PODS`]) and a
//!   Ready condition, whose node Leases are renewed every [`HOLLOW_TICK_MS`] by the workload's
//!   clients (each with every server, as an agent has; one heartbeat task per node), while a
//!   second task per node marks the pods bound to it Running and Ready through UpdateStatus
//!   and finishes (deletes with grace 0) those marked for deletion, as an agent does once
//!   their containers stopped;
//! - [`DEPLOYMENTS`] Deployments, each scaled at random between 1 and [`REPLICAS_MAX`] by its
//!   worker (a merge patch of `spec.replicas`);
//! - bare pods with cpu requests created and deleted by the other workers (each keeping at most
//!   [`BARE_PODS_PER_WORKER`]), more than the nodes hold, so the scheduler must say no;
//! - [`WATCHERS`] pod watchers (list, then watch from the list's revision, resuming on any
//!   server; relist on Expired), whose every event goes into the history;
//! - after the faults heal (and the bare pods are deleted): `converge-read`s every
//!   [`CONVERGE_POLL_MS`] until the Deployments have converged or [`CONVERGE_DEADLINE_MS`]
//!   passed.
//!
//! The checker is `checkers::controlplane`.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use berth_client::leader::{format_micro_time, Clock, SystemClock};
use berth_client::{ClientError, ListParams, PatchParams, ResourceClient, WatchEvent};
use berth_proto::apiv1::{DeleteOptions, Preconditions};
use berth_proto::appsv1::{Deployment, DeploymentSpec, ReplicaSet};
use berth_proto::coordinationv1::{Lease, LeaseSpec};
use berth_proto::corev1::*;
use berth_proto::metav1::{LabelSelector, ObjectMeta};
use berth_proto::quantity::Quantity;
use rand::Rng;
use serde_json::{json, Value};
use tokio::sync::watch;

use super::workloads::{Done, Worker, FINAL_PHASE_MS};
use super::FINAL_READER_PROCESS;
use crate::checkers::controlplane::deployment_converged;
use crate::history::{OpType, Process};

/// The namespace of every pod and Deployment of the workload.
pub const NAMESPACE: &str = "jepsen-cp";
/// Namespace of node Leases (what the node lifecycle controller reads).
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";
pub const HOLLOW_NODES: usize = 5;
/// A hollow node's allocatable: small, so a few pods fill it.
pub const NODE_CPU_M: i64 = 2_000;
pub const NODE_PODS: i64 = 4;
/// How often a hollow node renews its Lease and looks at its pods.
pub const HOLLOW_TICK_MS: u64 = 1_000;
/// leaseDurationSeconds a hollow node writes (the controllers use their own grace period).
pub const NODE_LEASE_SECONDS: i32 = 10;
pub const DEPLOYMENTS: usize = 2;
pub const REPLICAS_MAX: i32 = 4;
pub const DEPLOYMENT_POD_CPU_M: i64 = 250;
/// Time between two scalings of a Deployment, at most (at least a third of it).
pub const SCALE_INTERVAL_MS_MAX: u64 = 3_000;
/// cpu requests of bare pods.
pub const BARE_POD_CPU_M: [i64; 2] = [500, 1_000];
pub const BARE_PODS_PER_WORKER: usize = 2;
/// Time between a bare-pod worker's operations, at most (at least a quarter of it).
pub const BARE_INTERVAL_MS_MAX: u64 = 800;
pub const WATCHERS: usize = 2;
/// How long after healing the Deployments have to converge. The controller manager's lease
/// (15 s) may have to expire first if its holder was killed, then pods must be recreated,
/// bound and marked ready.
pub const CONVERGE_DEADLINE_MS: u64 = 60_000;
pub const CONVERGE_POLL_MS: u64 = 1_000;
/// Processes of the setup steps and the hollow nodes (apart from the workers').
pub const SETUP_PROCESS: u64 = 900_000;
pub const HEARTBEAT_PROCESS: u64 = 910_000;
pub const WATCHER_PROCESS: u64 = 920_000;
pub const HOLLOW_PROCESS: u64 = 930_000;

pub fn node_name(i: usize) -> String {
    format!("hollow-{i}")
}

pub fn deployment_name(i: usize) -> String {
    format!("d{i}")
}

/// Writes that definitely did not happen are `fail`; the rest stay errors (`info` unless the
/// connection was never made).
fn definite(e: ClientError) -> Result<Done, ClientError> {
    match e {
        ClientError::NotFound(_)
        | ClientError::AlreadyExists(_)
        | ClientError::Conflict(_)
        | ClientError::Invalid { .. }
        | ClientError::Forbidden(_)
        | ClientError::Unavailable(_) => Ok(Done::Fail(Value::Null, Some(e.to_string()))),
        e => Err(e),
    }
}

fn labels(kv: &[(&str, &str)]) -> std::collections::BTreeMap<String, String> {
    kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn meta<T: berth_client::Resource>(o: &T) -> ObjectMeta {
    o.meta().cloned().unwrap_or_default()
}

// ---------------------------------------------------------------- pods as the checker sees them

/// Sum of the containers' cpu requests, in millicores.
pub fn pod_cpu_m(p: &Pod) -> i64 {
    p.spec.as_ref().map_or(0, |s| {
        s.containers
            .iter()
            .filter_map(|c| c.resources.as_ref()?.requests.get("cpu"))
            .filter_map(|q| Quantity::parse(q).ok())
            .map(|q| q.milli_value() as i64)
            .sum()
    })
}

fn pod_key(p: &Pod) -> String {
    let m = meta(p);
    format!("{}/{}", m.namespace, m.name)
}

fn phase(p: &Pod) -> &str {
    p.status.as_ref().map_or("", |s| s.phase.as_str())
}

fn pod_ready(p: &Pod) -> bool {
    p.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.r#type == "Ready" && c.status == "True")
    })
}

fn deleting(p: &Pod) -> bool {
    !meta(p).deletion_timestamp.is_empty()
}

fn node_of(p: &Pod) -> &str {
    p.spec.as_ref().map_or("", |s| s.node_name.as_str())
}

/// A pod as a watch event or list item of the history.
pub fn pod_json(p: &Pod) -> Value {
    json!({
        "pod": pod_key(p),
        "uid": meta(p).uid,
        "node": node_of(p),
        "cpu_m": pod_cpu_m(p),
        "terminal": matches!(phase(p), "Succeeded" | "Failed"),
        "deleting": deleting(p),
        "phase": phase(p),
    })
}

// ---------------------------------------------------------------- setup

/// Retries `op` (recorded as `f` by `w`) until it is ok, or fails definitely in a way `done`
/// accepts (e.g. AlreadyExists after an indeterminate attempt), or `FINAL_PHASE_MS` pass.
async fn until_done<F, Fut>(w: &mut Worker, f: &str, key: &str, value: Value, op: F) -> bool
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<Done, ClientError>>,
{
    let deadline = Instant::now() + Duration::from_millis(FINAL_PHASE_MS);
    while Instant::now() < deadline {
        let r = op();
        if w.invoke(f, Some(key), value.clone(), r).await.is_some() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

fn hollow_node(name: &str) -> Node {
    let capacity = labels(&[
        ("cpu", &format!("{NODE_CPU_M}m")),
        ("memory", "8Gi"),
        ("pods", &NODE_PODS.to_string()),
    ]);
    let node_labels = labels(&[("kubernetes.io/hostname", name), ("berth.dev/jepsen", "hollow")]);
    berth_proto::hollow::node(name, node_labels, capacity)
}

/// The namespaces, then every hollow node (object, status, first Lease renewal), each
/// recorded as `add-node` with its allocatable.
pub async fn setup(w: &mut Worker, rc: &ResourceClient) -> Result<(), String> {
    for ns in [NAMESPACE, NODE_LEASE_NAMESPACE] {
        let ok = until_done(w, "ensure-namespace", ns, Value::Null, || async {
            rc.ensure_namespace(ns).await.map(|_| Done::Ok(Value::Null))
        })
        .await;
        if !ok {
            return Err(format!("could not create namespace {ns}"));
        }
    }
    let alloc = json!({"cpu_m": NODE_CPU_M, "pods": NODE_PODS});
    for i in 0..HOLLOW_NODES {
        let name = node_name(i);
        let node = hollow_node(&name);
        let op = || async {
            let created = match rc.create("", &node).await {
                Ok(n) => n,
                Err(ClientError::AlreadyExists(_)) => rc.get::<Node>("", &name).await?,
                Err(e) => return Err(e),
            };
            let mut with_status = created;
            with_status.status = node.status.clone();
            rc.update_status(&with_status).await?;
            Ok(Done::Ok(alloc.clone()))
        };
        if !until_done(w, "add-node", &name, alloc.clone(), op).await {
            return Err(format!("could not register hollow node {name}"));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- hollow nodes

/// A hollow node's heartbeat: renews its Lease every [`HOLLOW_TICK_MS`] until `stop`, on its
/// own task (as an agent's heartbeat is), so slow pod updates never delay it.
pub async fn hollow_heartbeat(mut w: Worker, rc: ResourceClient, node: String, stop: watch::Receiver<bool>) {
    let mut lease: Option<Lease> = None;
    while !*stop.borrow() {
        let tick = tokio::time::sleep(Duration::from_millis(HOLLOW_TICK_MS));
        renew(&mut w, &rc, &node, &mut lease).await;
        tick.await;
    }
}

/// A hollow node's pod loop, until `stop`: every [`HOLLOW_TICK_MS`], the pods bound to it are
/// marked Running and Ready, and those marked for deletion are deleted.
pub async fn hollow_agent(mut w: Worker, rc: ResourceClient, node: String, stop: watch::Receiver<bool>) {
    while !*stop.borrow() {
        let tick = tokio::time::sleep(Duration::from_millis(HOLLOW_TICK_MS));
        if let Ok(Ok(pods)) = tokio::time::timeout(
            w.ctx.op_timeout,
            rc.list_all::<Pod>(NAMESPACE, &ListParams::default()),
        )
        .await
        {
            for p in pods.items.iter().filter(|p| node_of(p) == node) {
                if *stop.borrow() {
                    break;
                }
                if deleting(p) {
                    finish_pod(&mut w, &rc, p).await;
                } else if phase(p) != "Running" || !pod_ready(p) {
                    start_pod(&mut w, &rc, p).await;
                }
            }
        }
        tick.await;
    }
}

async fn renew(w: &mut Worker, rc: &ResourceClient, node: &str, last: &mut Option<Lease>) {
    let now = format_micro_time(SystemClock.now_micros());
    let current = last.take();
    let op = async {
        let current = match current {
            Some(l) => Some(l),
            None => match rc.get::<Lease>(NODE_LEASE_NAMESPACE, node).await {
                Ok(l) => Some(l),
                Err(ClientError::NotFound(_)) => None,
                Err(e) => return Err(e),
            },
        };
        let written = match current {
            None => {
                let l = Lease {
                    api_version: "coordination.k8s.io/v1".into(),
                    kind: "Lease".into(),
                    metadata: Some(ObjectMeta {
                        name: node.into(),
                        namespace: NODE_LEASE_NAMESPACE.into(),
                        ..Default::default()
                    }),
                    spec: Some(LeaseSpec {
                        holder_identity: Some(node.into()),
                        lease_duration_seconds: Some(NODE_LEASE_SECONDS),
                        renew_time: Some(now.clone()),
                        ..Default::default()
                    }),
                };
                rc.create(NODE_LEASE_NAMESPACE, &l).await
            }
            Some(mut l) => {
                let spec = l.spec.get_or_insert_with(Default::default);
                spec.holder_identity = Some(node.into());
                spec.lease_duration_seconds = Some(NODE_LEASE_SECONDS);
                spec.renew_time = Some(now.clone());
                rc.update(&l).await
            }
        };
        match written {
            Ok(l) => Ok((Done::Ok(json!(now)), Some(l))),
            Err(e) => definite(e).map(|d| (d, None)),
        }
    };
    let mut kept = None;
    let op = async {
        let (done, l) = op.await?;
        kept = l;
        Ok(done)
    };
    w.invoke("renew", Some(node), Value::Null, op).await;
    *last = kept;
}

/// Running and Ready, as an agent reports a started pod.
async fn start_pod(w: &mut Worker, rc: &ResourceClient, p: &Pod) {
    let mut next = p.clone();
    let now = format_micro_time(SystemClock.now_micros());
    let st = next.status.get_or_insert_with(Default::default);
    st.phase = "Running".into();
    if st.start_time.is_empty() {
        st.start_time = now.clone();
    }
    for ty in ["Initialized", "ContainersReady", "Ready"] {
        st.conditions.retain(|c| c.r#type != ty);
        st.conditions.push(PodCondition {
            r#type: ty.into(),
            status: "True".into(),
            last_transition_time: now.clone(),
            ..Default::default()
        });
    }
    let key = pod_key(p);
    let op = async {
        match rc.update_status(&next).await {
            Ok(_) => Ok(Done::Ok(Value::Null)),
            Err(e) => definite(e),
        }
    };
    w.invoke("start-pod", Some(&key), json!({"node": node_of(p)}), op)
        .await;
}

/// Deletes a pod marked for deletion at once (its containers are "stopped").
async fn finish_pod(w: &mut Worker, rc: &ResourceClient, p: &Pod) {
    let m = meta(p);
    let options = DeleteOptions {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: Some(m.uid.clone()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let op = async {
        match rc.delete::<Pod>(&m.namespace, &m.name, options).await {
            Ok(_) => Ok(Done::Ok(Value::Null)),
            Err(e) => definite(e),
        }
    };
    w.invoke("finish-pod", Some(&pod_key(p)), Value::Null, op).await;
}

// ---------------------------------------------------------------- deployments

fn deployment(name: &str, replicas: i32) -> Deployment {
    let app = labels(&[("app", name)]);
    Deployment {
        metadata: Some(ObjectMeta {
            name: name.into(),
            namespace: NAMESPACE.into(),
            ..Default::default()
        }),
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: Some(LabelSelector {
                match_labels: app.clone(),
                ..Default::default()
            }),
            template: Some(PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: app,
                    ..Default::default()
                }),
                spec: Some(pod_spec(DEPLOYMENT_POD_CPU_M)),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn pod_spec(cpu_m: i64) -> PodSpec {
    PodSpec {
        containers: vec![Container {
            name: "app".into(),
            image: "busybox:1.36".into(),
            resources: Some(ResourceRequirements {
                requests: labels(&[("cpu", &format!("{cpu_m}m"))]),
                ..Default::default()
            }),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// Creates its Deployment, then scales it at random until the time limit.
pub async fn deployment_worker(mut w: Worker, rc: ResourceClient, index: usize) {
    let name = deployment_name(index);
    let d = deployment(&name, 2);
    let created = until_done(&mut w, "create-deployment", &name, json!(2), || async {
        match rc.create(NAMESPACE, &d).await {
            Ok(_) => Ok(Done::Ok(json!(2))),
            // An earlier indeterminate attempt took effect.
            Err(ClientError::AlreadyExists(_)) => Ok(Done::Ok(json!(2))),
            Err(e) => definite(e),
        }
    })
    .await;
    if !created {
        return;
    }
    while w.running() {
        let pause = w.rng.gen_range(SCALE_INTERVAL_MS_MAX / 3..=SCALE_INTERVAL_MS_MAX);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        if !w.running() {
            break;
        }
        let replicas = w.rng.gen_range(1..=REPLICAS_MAX);
        let patch = json!({"spec": {"replicas": replicas}}).to_string();
        let op = async {
            match rc
                .patch::<Deployment>(NAMESPACE, &name, &PatchParams::merge(), patch.as_bytes())
                .await
            {
                Ok(_) => Ok(Done::Ok(json!(replicas))),
                Err(e) => definite(e),
            }
        };
        w.invoke("scale", Some(&name), json!(replicas), op).await;
    }
}

// ---------------------------------------------------------------- bare pods

fn bare_pod(name: &str, cpu_m: i64) -> Pod {
    Pod {
        metadata: Some(ObjectMeta {
            name: name.into(),
            namespace: NAMESPACE.into(),
            labels: labels(&[("jepsen", "bare")]),
            ..Default::default()
        }),
        spec: Some(pod_spec(cpu_m)),
        ..Default::default()
    }
}

async fn delete_bare(w: &mut Worker, rc: &ResourceClient, name: &str) -> bool {
    let options = DeleteOptions {
        grace_period_seconds: Some(0),
        ..Default::default()
    };
    let key = format!("{NAMESPACE}/{name}");
    let op = async {
        match rc.delete::<Pod>(NAMESPACE, name, options).await {
            Ok(_) => Ok(Done::Ok(Value::Null)),
            Err(ClientError::NotFound(_)) => Ok(Done::Ok(json!("not found"))),
            Err(e) => definite(e),
        }
    };
    w.invoke("delete-pod", Some(&key), Value::Null, op)
        .await
        .is_some()
}

/// Creates and deletes bare pods until the time limit, then deletes every pod it may have
/// created (so the Deployments fit when the faults are over).
pub async fn bare_pod_worker(mut w: Worker, rc: ResourceClient) {
    let mut alive: VecDeque<String> = VecDeque::new();
    while w.running() {
        if alive.len() < BARE_PODS_PER_WORKER {
            let n = w.ctx.counter.fetch_add(1, Ordering::Relaxed);
            let name = format!("bare-{n}");
            let cpu_m = BARE_POD_CPU_M[w.rng.gen_range(0..BARE_POD_CPU_M.len())];
            let pod = bare_pod(&name, cpu_m);
            let op = async {
                match rc.create(NAMESPACE, &pod).await {
                    Ok(p) => Ok(Done::Ok(json!({"cpu_m": cpu_m, "uid": meta(&p).uid}))),
                    Err(e) => definite(e),
                }
            };
            let key = format!("{NAMESPACE}/{name}");
            let before = w.process;
            let ok = w
                .invoke("create-pod", Some(&key), json!({"cpu_m": cpu_m}), op)
                .await;
            // Created, or perhaps created (indeterminate: the process changed).
            if ok.is_some() || w.process != before {
                alive.push_back(name);
            }
        } else if let Some(name) = alive.front().cloned() {
            if delete_bare(&mut w, &rc, &name).await {
                alive.pop_front();
            }
        }
        let pause = w.rng.gen_range(BARE_INTERVAL_MS_MAX / 4..=BARE_INTERVAL_MS_MAX);
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
    let deadline = Instant::now() + Duration::from_millis(FINAL_PHASE_MS);
    while let Some(name) = alive.front().cloned() {
        if Instant::now() > deadline {
            break;
        }
        if delete_bare(&mut w, &rc, &name).await {
            alive.pop_front();
        } else {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

// ---------------------------------------------------------------- watchers

fn rv_of(s: &str) -> i64 {
    s.parse().unwrap_or(0)
}

/// Lists the pods, then watches from the list's revision (relisting after Expired), recording
/// every event, until `until` (the final revision) is reached or time runs out.
pub async fn pod_watcher(w: Worker, rc: ResourceClient, until: watch::Receiver<Option<i64>>) {
    let process = Process::Client(w.process);
    let rec = w.ctx.recorder.clone();
    rec.record(&process, OpType::Invoke, "watch", None, Value::Null, None);
    let mut events: Vec<Value> = Vec::new();
    let mut last_error: Option<String> = None;
    let gave_up = |until: &watch::Receiver<Option<i64>>| {
        until.borrow().is_some()
            && Instant::now() > w.ctx.deadline + Duration::from_millis(3 * FINAL_PHASE_MS)
    };
    let reached = |rv: i64, until: &watch::Receiver<Option<i64>>| until.borrow().is_some_and(|t| rv >= t);
    let mut caught_up = None;
    'relist: while !gave_up(&until) {
        let list = match tokio::time::timeout(
            w.ctx.op_timeout,
            rc.list_all::<Pod>(NAMESPACE, &ListParams::default()),
        )
        .await
        {
            Ok(Ok(l)) => l,
            Ok(Err(e)) => {
                last_error = Some(e.to_string());
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            Err(_) => continue,
        };
        let rv = rv_of(&list.resource_version);
        let pods: Vec<Value> = list.items.iter().map(pod_json).collect();
        events.push(json!({"rv": rv, "type": "LIST", "pods": pods}));
        let params = ListParams {
            resource_version: list.resource_version.clone(),
            ..Default::default()
        };
        let mut stream = rc.watch::<Pod>(NAMESPACE, &params);
        loop {
            let at = rv_of(stream.resource_version());
            if reached(at, &until) {
                caught_up = Some(at);
                break 'relist;
            }
            if gave_up(&until) {
                break 'relist;
            }
            let next = tokio::time::timeout(Duration::from_millis(1_000), stream.next()).await;
            let (ty, pod) = match next {
                Ok(Ok(WatchEvent::Added(p))) => ("ADDED", p),
                Ok(Ok(WatchEvent::Modified(p))) => ("MODIFIED", p),
                Ok(Ok(WatchEvent::Deleted(p))) => ("DELETED", p),
                Ok(Ok(WatchEvent::Bookmark(_))) | Err(_) => continue,
                Ok(Err(e)) => {
                    // Expired (compacted) or another definite error: start over from a list.
                    last_error = Some(e.to_string());
                    continue 'relist;
                }
            };
            let mut ev = pod_json(&pod);
            ev["rv"] = json!(rv_of(stream.resource_version()));
            ev["type"] = json!(ty);
            events.push(ev);
        }
    }
    let mut out = json!({"events": events});
    match caught_up {
        Some(rv) => {
            out["until_revision"] = json!(rv);
            rec.record(&process, OpType::Ok, "watch", None, out, None);
        }
        None => rec.record(
            &process,
            OpType::Info,
            "watch",
            None,
            out,
            last_error.or(Some("did not catch up".into())),
        ),
    }
}

// ---------------------------------------------------------------- convergence

/// One read of every Deployment, ReplicaSet and pod of the namespace, summarised.
async fn converge_read(rc: &ResourceClient) -> Result<Done, ClientError> {
    let all = ListParams::default();
    let deployments = rc.list_all::<Deployment>(NAMESPACE, &all).await?.items;
    let sets = rc.list_all::<ReplicaSet>(NAMESPACE, &all).await?.items;
    let pods = rc.list_all::<Pod>(NAMESPACE, &all).await?;
    let mut out = Vec::new();
    for d in &deployments {
        let m = meta(d);
        let app = m.name.clone();
        let matching: Vec<&Pod> = pods
            .items
            .iter()
            .filter(|p| meta(*p).labels.get("app") == Some(&app))
            .filter(|p| !deleting(p) && !matches!(phase(p), "Succeeded" | "Failed"))
            .collect();
        let ready = matching
            .iter()
            .filter(|p| phase(p) == "Running" && pod_ready(p) && !node_of(p).is_empty())
            .count();
        let st = d.status.clone().unwrap_or_default();
        let owned: Vec<Value> = sets
            .iter()
            .filter(|rs| meta(*rs).owner_references.iter().any(|o| o.uid == m.uid))
            .map(|rs| {
                let s = rs.status.clone().unwrap_or_default();
                json!({"name": meta(rs).name,
                    "spec_replicas": rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
                    "replicas": s.replicas, "ready_replicas": s.ready_replicas})
            })
            .collect();
        out.push(json!({
            "name": app,
            "generation": m.generation,
            "observed_generation": st.observed_generation,
            "spec_replicas": d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
            "replicas": st.replicas,
            "ready_replicas": st.ready_replicas,
            "live_pods": matching.len(),
            "ready_pods": ready,
            "replicasets": owned,
        }));
    }
    let bound: Vec<Value> = pods
        .items
        .iter()
        .map(|p| json!({"pod": pod_key(p), "uid": meta(p).uid, "node": node_of(p)}))
        .collect();
    Ok(Done::Ok(json!({
        "revision": rv_of(&pods.resource_version),
        "deployments": out,
        "pods": bound,
    })))
}

/// After healing: converge-reads until every Deployment converged or the deadline; returns the
/// revision of the last successful read (the watchers' target).
pub async fn converge(mut w: Worker, rc: ResourceClient) -> Option<i64> {
    w.process = FINAL_READER_PROCESS;
    let since_ns = w.ctx.recorder.now_ns();
    let start = Instant::now();
    let input = json!({"since_ns": since_ns, "deadline_ms": CONVERGE_DEADLINE_MS});
    let mut revision = None;
    loop {
        let read = converge_read(&rc);
        if let Some(out) = w.invoke("converge-read", None, input.clone(), read).await {
            revision = out["revision"].as_i64();
            let ds = out["deployments"].as_array().cloned().unwrap_or_default();
            if !ds.is_empty() && ds.iter().all(deployment_converged) {
                return revision;
            }
        }
        if start.elapsed() > Duration::from_millis(CONVERGE_DEADLINE_MS) {
            return revision;
        }
        tokio::time::sleep(Duration::from_millis(CONVERGE_POLL_MS)).await;
    }
}
