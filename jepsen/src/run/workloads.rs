//! The client workers of each workload, over `berth_client::EtcdClient`. Each worker is bound
//! to one node (as Jepsen's clients are) and records every operation's invoke and completion.
//! An operation that may have taken effect but did not answer (timeout, broken connection) is
//! `info`, and the worker continues as a new process, since the old one may still be pending.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_client::{ClientError, EtcdClient};
use berth_proto::etcdserverpb as pb;
use berth_proto::mvccpb;
use rand::rngs::StdRng;
use rand::Rng;
use serde_json::{json, Value};

use super::recorder::Recorder;
use crate::history::{OpType, Process};

/// Pause after an operation that could not reach its node.
pub const UNREACHABLE_BACKOFF_MS: u64 = 100;
/// Keys of the register workload in use at once.
pub const REGISTER_ACTIVE_KEYS: usize = 3;
/// Operations on one register key before it is retired for a fresh one (keeps every per-key
/// linearizability search small).
pub const REGISTER_OPS_PER_KEY: usize = 250;
/// Values written to registers: few, so compare-and-sets often match.
pub const REGISTER_VALUES: i64 = 5;
/// Keys of the append workload.
pub const APPEND_KEYS: usize = 8;
/// Micro-operations per append transaction, at most.
pub const APPEND_MOPS_MAX: usize = 4;
/// Keys the watch workload's writers touch.
pub const WATCH_KEYS: usize = 6;
/// Watchers in the watch workload (at most; never more than half the workers).
pub const WATCHERS_MAX: usize = 3;
/// How long the final reads and the watchers' catch-up may take after the faults healed.
pub const FINAL_PHASE_MS: u64 = 30_000;

pub const SET_PREFIX: &str = "jepsen/set/";
pub const APPEND_PREFIX: &str = "jepsen/append/";
pub const WATCH_PREFIX: &str = "jepsen/watch/";
pub const REGISTER_PREFIX: &str = "jepsen/register/";

/// What a worker needs.
#[derive(Clone)]
pub struct Ctx {
    pub recorder: Arc<Recorder>,
    pub addrs: Vec<String>,
    pub concurrency: usize,
    pub op_timeout: Duration,
    pub deadline: Instant,
    /// Each worker's client gets every address (its own node first) and fails over.
    pub client_failover: bool,
    /// Unique values (set elements, appended integers, watch values).
    pub counter: Arc<AtomicI64>,
}

/// How an operation ended, before recording.
pub enum Done {
    Ok(Value),
    /// Definitely did not happen; `None`: the compare did not match (Jepsen's fail without error).
    Fail(Value, Option<String>),
}

/// A client process: a number that changes after an indeterminate operation.
pub struct Worker {
    pub ctx: Ctx,
    pub process: u64,
    pub client: Arc<EtcdClient>,
    pub rng: StdRng,
}

/// The servers worker `index` talks to: its own node, or (with failover) every node, its own
/// first.
pub fn worker_addrs(ctx: &Ctx, index: usize) -> Vec<String> {
    let n = ctx.addrs.len();
    if ctx.client_failover {
        (0..n).map(|i| ctx.addrs[(index + i) % n].clone()).collect()
    } else {
        vec![ctx.addrs[index % n].clone()]
    }
}

impl Worker {
    pub fn new(ctx: Ctx, index: usize, rng: StdRng) -> Worker {
        let addrs = worker_addrs(&ctx, index);
        let client = EtcdClient::new(&addrs, ctx.op_timeout).expect("lab addresses are valid");
        Worker {
            ctx,
            process: index as u64,
            client: Arc::new(client),
            rng,
        }
    }

    pub fn running(&self) -> bool {
        Instant::now() < self.ctx.deadline
    }

    /// Records the invoke, runs `op` with the timeout, records the completion. Returns whether
    /// it completed `ok`.
    pub async fn invoke<F>(&mut self, f: &str, key: Option<&str>, value: Value, op: F) -> Option<Value>
    where
        F: Future<Output = Result<Done, ClientError>>,
    {
        let process = Process::Client(self.process);
        let rec = &self.ctx.recorder;
        rec.record(&process, OpType::Invoke, f, key, value.clone(), None);
        let result = tokio::time::timeout(self.ctx.op_timeout, op).await;
        match result {
            Ok(Ok(Done::Ok(out))) => {
                rec.record(&process, OpType::Ok, f, key, out.clone(), None);
                Some(out)
            }
            Ok(Ok(Done::Fail(out, error))) => {
                rec.record(&process, OpType::Fail, f, key, out, error);
                None
            }
            Ok(Err(e)) if never_sent(&e) || is_read(f) => {
                rec.record(&process, OpType::Fail, f, key, value, Some(e.to_string()));
                if never_sent(&e) {
                    // The node is down: do not spin on it.
                    tokio::time::sleep(Duration::from_millis(UNREACHABLE_BACKOFF_MS)).await;
                }
                None
            }
            Ok(Err(e)) => {
                rec.record(&process, OpType::Info, f, key, value, Some(e.to_string()));
                self.process += self.ctx.concurrency as u64;
                None
            }
            Err(_) if is_read(f) => {
                rec.record(&process, OpType::Fail, f, key, value, Some("timeout".into()));
                None
            }
            Err(_) => {
                rec.record(&process, OpType::Info, f, key, value, Some("timeout".into()));
                self.process += self.ctx.concurrency as u64;
                None
            }
        }
    }
}

/// A read changes nothing: if it did not answer, it simply failed.
fn is_read(f: &str) -> bool {
    f == "read" || f == "converge-read"
}

/// Errors that prove the request never reached a server.
fn never_sent(e: &ClientError) -> bool {
    let text = e.to_string().to_lowercase();
    text.contains("tcp connect error") || text.contains("connection refused")
}

fn put_op(key: &str, value: &str) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
            key: key.as_bytes().to_vec(),
            value: value.as_bytes().to_vec(),
            ..Default::default()
        })),
    }
}

fn range_op(key: &str) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(pb::request_op::Request::RequestRange(pb::RangeRequest {
            key: key.as_bytes().to_vec(),
            ..Default::default()
        })),
    }
}

/// The end of the range of keys starting with `prefix` (etcd's prefix convention).
pub fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    *end.last_mut().expect("non-empty prefix") += 1;
    end
}

fn int_of(bytes: &[u8]) -> Result<i64, ClientError> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ClientError::Decode(format!("not an integer: {:?}", String::from_utf8_lossy(bytes))))
}

// ---------------------------------------------------------------- register

/// Register keys in use: each retires after `REGISTER_OPS_PER_KEY` operations.
#[derive(Default)]
pub struct KeyPool {
    next: u64,
    active: Vec<(u64, usize)>,
}

impl KeyPool {
    fn take(&mut self, rng: &mut StdRng) -> String {
        while self.active.len() < REGISTER_ACTIVE_KEYS {
            self.active.push((self.next, 0));
            self.next += 1;
        }
        let slot = rng.gen_range(0..self.active.len());
        let (id, used) = &mut self.active[slot];
        *used += 1;
        let key = format!("{REGISTER_PREFIX}{id}");
        if *used >= REGISTER_OPS_PER_KEY {
            self.active.remove(slot);
        }
        key
    }
}

pub async fn register_worker(mut w: Worker, pool: Arc<Mutex<KeyPool>>) {
    while w.running() {
        let key = pool.lock().expect("no poisoned lock").take(&mut w.rng);
        let client = w.client.clone();
        let client = &*client;
        match w.rng.gen_range(0..3) {
            0 => {
                let op = register_read(client, &key);
                w.invoke("read", Some(&key), Value::Null, op).await;
            }
            1 => {
                let v = w.rng.gen_range(0..REGISTER_VALUES);
                let op = async {
                    client.put(key.as_bytes(), v.to_string().as_bytes()).await?;
                    Ok(Done::Ok(json!(v)))
                };
                w.invoke("write", Some(&key), json!(v), op).await;
            }
            _ => {
                let (from, to) = (
                    w.rng.gen_range(0..REGISTER_VALUES),
                    w.rng.gen_range(0..REGISTER_VALUES),
                );
                let op = register_cas(client, &key, from, to);
                w.invoke("cas", Some(&key), json!([from, to]), op).await;
            }
        }
    }
}

async fn register_read(client: &EtcdClient, key: &str) -> Result<Done, ClientError> {
    let req = pb::RangeRequest {
        key: key.as_bytes().to_vec(),
        ..Default::default()
    };
    let resp = client.range(req).await?;
    Ok(Done::Ok(match resp.kvs.first() {
        None => Value::Null,
        Some(kv) => json!({"value": int_of(&kv.value)?, "version": kv.version}),
    }))
}

async fn register_cas(client: &EtcdClient, key: &str, from: i64, to: i64) -> Result<Done, ClientError> {
    let compare = pb::Compare {
        result: pb::compare::CompareResult::Equal as i32,
        target: pb::compare::CompareTarget::Value as i32,
        key: key.as_bytes().to_vec(),
        target_union: Some(pb::compare::TargetUnion::Value(from.to_string().into_bytes())),
        ..Default::default()
    };
    let req = pb::TxnRequest {
        compare: vec![compare],
        success: vec![put_op(key, &to.to_string())],
        failure: vec![],
    };
    let resp = client.txn(req).await?;
    Ok(if resp.succeeded {
        Done::Ok(json!([from, to]))
    } else {
        Done::Fail(json!([from, to]), None)
    })
}

// ---------------------------------------------------------------- set

pub async fn set_worker(mut w: Worker) {
    while w.running() {
        let n = w.ctx.counter.fetch_add(1, Ordering::Relaxed);
        let key = format!("{SET_PREFIX}{n:010}");
        let client = w.client.clone();
        let client = &*client;
        let op = async {
            client.put(key.as_bytes(), n.to_string().as_bytes()).await?;
            Ok(Done::Ok(json!(n)))
        };
        w.invoke("add", None, json!(n), op).await;
    }
}

/// The final reads of the set: one through every node (each must hold every acknowledged
/// add), each retried on that node until it answers or time runs out. Returns how many
/// nodes answered.
pub async fn set_final_reads(mut w: Worker, first_process: u64) -> usize {
    let deadline = Instant::now() + Duration::from_millis(FINAL_PHASE_MS);
    let addrs = w.ctx.addrs.clone();
    let mut answered = 0;
    for (i, addr) in addrs.iter().enumerate() {
        w.process = first_process + i as u64;
        w.client = Arc::new(
            EtcdClient::new(std::slice::from_ref(addr), w.ctx.op_timeout).expect("lab addresses are valid"),
        );
        while Instant::now() < deadline {
            let client = w.client.clone();
            let client = &*client;
            let op = async {
                let req = pb::RangeRequest {
                    key: SET_PREFIX.as_bytes().to_vec(),
                    range_end: prefix_end(SET_PREFIX),
                    ..Default::default()
                };
                let resp = client.range(req).await?;
                let elements = resp
                    .kvs
                    .iter()
                    .map(|kv| int_of(&kv.value))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Done::Ok(json!(elements)))
            };
            let node = json!({"node": format!("n{}", i + 1)});
            if w.invoke("read", None, node, op).await.is_some() {
                answered += 1;
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    answered
}

// ---------------------------------------------------------------- append

pub async fn append_worker(mut w: Worker) {
    while w.running() {
        let mops = append_mops(&mut w);
        let client = w.client.clone();
        let client = &*client;
        let invoke: Vec<Value> = mops
            .iter()
            .map(|(f, k, v)| json!([f, k, if *f == "r" { Value::Null } else { json!(v) }]))
            .collect();
        let op = append_txn(client, &mops);
        w.invoke("txn", None, json!(invoke), op).await;
    }
}

type Mop = (&'static str, usize, i64);

fn append_mops(w: &mut Worker) -> Vec<Mop> {
    let n = w.rng.gen_range(1..=APPEND_MOPS_MAX);
    (0..n)
        .map(|_| {
            let key = w.rng.gen_range(0..APPEND_KEYS);
            if w.rng.gen_bool(0.5) {
                ("r", key, 0)
            } else {
                ("append", key, w.ctx.counter.fetch_add(1, Ordering::Relaxed))
            }
        })
        .collect()
}

fn append_key(k: usize) -> String {
    format!("{APPEND_PREFIX}{k}")
}

fn parse_list(bytes: &[u8]) -> Result<Vec<i64>, ClientError> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    std::str::from_utf8(bytes)
        .map_err(|e| ClientError::Decode(e.to_string()))?
        .split(',')
        .map(|s| int_of(s.as_bytes()))
        .collect()
}

/// One transaction: read every key it touches in one snapshot (a read-only txn), then commit
/// the appends with compares on each key's mod revision, so the whole is atomic; a compare
/// that fails means nothing happened (`fail`).
async fn append_txn(client: &EtcdClient, mops: &[Mop]) -> Result<Done, ClientError> {
    let keys: Vec<usize> = mops
        .iter()
        .map(|m| m.1)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let snapshot = client
        .txn(pb::TxnRequest {
            compare: vec![],
            success: keys.iter().map(|&k| range_op(&append_key(k))).collect(),
            failure: vec![],
        })
        .await
        .map_err(|e| ClientError::Decode(format!("snapshot read failed (nothing written): {e}")))?;
    let mut lists: BTreeMap<usize, (Vec<i64>, i64)> = BTreeMap::new();
    for (&k, resp) in keys.iter().zip(&snapshot.responses) {
        let Some(pb::response_op::Response::ResponseRange(range)) = &resp.response else {
            return Err(ClientError::Decode(
                "txn answered a range with something else".into(),
            ));
        };
        let entry = match range.kvs.first() {
            Some(kv) => (parse_list(&kv.value)?, kv.mod_revision),
            None => (Vec::new(), 0),
        };
        lists.insert(k, entry);
    }
    let mut result = Vec::new();
    let mut written = std::collections::BTreeSet::new();
    for &(f, k, v) in mops {
        let list = &mut lists.get_mut(&k).expect("every key read").0;
        if f == "r" {
            result.push(json!(["r", k, list.clone()]));
        } else {
            list.push(v);
            written.insert(k);
            result.push(json!(["append", k, v]));
        }
    }
    if written.is_empty() {
        return Ok(Done::Ok(json!(result)));
    }
    let compare = keys
        .iter()
        .map(|&k| pb::Compare {
            result: pb::compare::CompareResult::Equal as i32,
            target: pb::compare::CompareTarget::Mod as i32,
            key: append_key(k).into_bytes(),
            target_union: Some(pb::compare::TargetUnion::ModRevision(lists[&k].1)),
            ..Default::default()
        })
        .collect();
    let success = written
        .iter()
        .map(|&k| {
            let text: Vec<String> = lists[&k].0.iter().map(i64::to_string).collect();
            put_op(&append_key(k), &text.join(","))
        })
        .collect();
    let resp = client
        .txn(pb::TxnRequest {
            compare,
            success,
            failure: vec![],
        })
        .await?;
    Ok(if resp.succeeded {
        Done::Ok(json!(result))
    } else {
        Done::Fail(
            Value::Null,
            Some("compare on a key's mod revision failed: lost race".into()),
        )
    })
}

// ---------------------------------------------------------------- watch

pub async fn watch_writer(mut w: Worker) {
    while w.running() {
        let key = format!("{WATCH_PREFIX}{}", w.rng.gen_range(0..WATCH_KEYS));
        let client = w.client.clone();
        let client = &*client;
        if w.rng.gen_bool(0.2) {
            let op = async {
                let resp = client
                    .delete_range(pb::DeleteRangeRequest {
                        key: key.as_bytes().to_vec(),
                        ..Default::default()
                    })
                    .await?;
                let revision = header_revision(&resp.header);
                Ok(Done::Ok(
                    json!({"revision": (resp.deleted > 0).then_some(revision)}),
                ))
            };
            w.invoke("delete", Some(&key), Value::Null, op).await;
        } else {
            let v = w.ctx.counter.fetch_add(1, Ordering::Relaxed);
            let op = async {
                let resp = client.put(key.as_bytes(), v.to_string().as_bytes()).await?;
                Ok(Done::Ok(json!({"revision": header_revision(&resp.header)})))
            };
            w.invoke("put", Some(&key), json!(v), op).await;
        }
    }
}

fn header_revision(header: &Option<pb::ResponseHeader>) -> i64 {
    header.as_ref().map_or(0, |h| h.revision)
}

/// The store's current revision, from any node.
pub async fn current_revision(addrs: &[String], timeout: Duration) -> Option<i64> {
    let deadline = Instant::now() + Duration::from_millis(FINAL_PHASE_MS);
    let mut attempt = 0;
    while Instant::now() < deadline {
        let addr = addrs[attempt % addrs.len()].clone();
        attempt += 1;
        let client = EtcdClient::new(&[addr], timeout).ok()?;
        let req = pb::RangeRequest {
            key: WATCH_PREFIX.as_bytes().to_vec(),
            range_end: prefix_end(WATCH_PREFIX),
            count_only: true,
            ..Default::default()
        };
        if let Ok(Ok(resp)) = tokio::time::timeout(timeout, client.range(req)).await {
            return Some(header_revision(&resp.header));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

/// One watcher: watches the prefix from `start`, reconnecting to the next node after any
/// failure and resuming after the last revision it saw, until the run ends and it has caught
/// up with `until` (the store's revision after the writers stopped).
pub async fn watcher(w: Worker, index: usize, start: i64, until: tokio::sync::watch::Receiver<Option<i64>>) {
    let process = Process::Client(w.process);
    let rec = w.ctx.recorder.clone();
    rec.record(
        &process,
        OpType::Invoke,
        "watch",
        None,
        json!({"start_revision": start}),
        None,
    );
    let mut events: Vec<Value> = Vec::new();
    let mut next = start;
    let mut attempt = index;
    let mut caught_up_to = None;
    let mut last_error = None;
    'outer: loop {
        if let Some(target) = *until.borrow() {
            if next > target {
                caught_up_to = Some(target);
                break;
            }
        }
        let addr = w.ctx.addrs[attempt % w.ctx.addrs.len()].clone();
        attempt += 1;
        let client = EtcdClient::new(&[addr], w.ctx.op_timeout).expect("lab addresses are valid");
        let req = pb::WatchCreateRequest {
            key: WATCH_PREFIX.as_bytes().to_vec(),
            range_end: prefix_end(WATCH_PREFIX),
            start_revision: next,
            ..Default::default()
        };
        let mut stream = match tokio::time::timeout(w.ctx.op_timeout, client.watch(req)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                last_error = Some(e.to_string());
                if gave_up(&w, &until) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            Err(_) => {
                last_error = Some("timeout creating the watch".into());
                if gave_up(&w, &until) {
                    break;
                }
                continue;
            }
        };
        loop {
            if let Some(target) = *until.borrow() {
                if next > target {
                    caught_up_to = Some(target);
                    break 'outer;
                }
            }
            if gave_up(&w, &until) {
                break 'outer;
            }
            // Short waits, so a stalled stream (a paused or partitioned node) is left soon.
            match tokio::time::timeout(Duration::from_millis(1_000), stream.next()).await {
                Ok(Ok(Some(resp))) if resp.canceled => {
                    last_error = Some(format!("watch canceled: {}", resp.cancel_reason));
                    break;
                }
                Ok(Ok(Some(resp))) => {
                    for e in &resp.events {
                        if let Some(value) = event_json(e) {
                            next = next.max(value["revision"].as_i64().unwrap_or(0) + 1);
                            events.push(value);
                        }
                    }
                }
                Ok(Ok(None)) => break,
                Ok(Err(e)) => {
                    last_error = Some(e.to_string());
                    break;
                }
                Err(_) if until.borrow().is_some() => break, // idle near the end: try another node
                Err(_) => {}
            }
        }
    }
    let mut out = json!({"events": events});
    match caught_up_to {
        Some(target) => {
            out["until_revision"] = json!(target);
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

/// After the run, a watcher has `FINAL_PHASE_MS` to catch up.
fn gave_up(w: &Worker, until: &tokio::sync::watch::Receiver<Option<i64>>) -> bool {
    until.borrow().is_some() && Instant::now() > w.ctx.deadline + Duration::from_millis(FINAL_PHASE_MS)
}

fn event_json(e: &mvccpb::Event) -> Option<Value> {
    let kv = e.kv.as_ref()?;
    let key = String::from_utf8_lossy(&kv.key).to_string();
    let delete = e.r#type == mvccpb::event::EventType::Delete as i32;
    let value = if delete {
        Value::Null
    } else {
        int_of(&kv.value).map(Value::from).unwrap_or(Value::Null)
    };
    Some(json!({
        "revision": kv.mod_revision,
        "key": key,
        "type": if delete { "delete" } else { "put" },
        "value": value,
    }))
}

// ---------------------------------------------------------------- lease

/// TTL the lease workload asks for, in seconds.
pub const LEASE_TTL_S: i64 = 3;
/// Time between a lease's keep-alives (and reads): a third of the TTL, as etcd clients do.
pub const LEASE_REFRESH_MS: u64 = 1_000;
/// Keep-alive rounds per lease, at most.
pub const LEASE_ROUNDS_MAX: usize = 8;
pub const LEASE_PREFIX: &str = "jepsen/lease/";
/// A lease left to expire is read this long after its expiry bound, then up to
/// `LEASE_EXPIRY_READS` times until it is gone.
pub const LEASE_EXPIRY_READ_DELAY_MS: u64 = 200;
pub const LEASE_EXPIRY_READS: usize = 10;

/// One key per lease: grant, put attached, keep-alive and read in rounds, then revoke and
/// read (or, one time in three, just let it expire).
pub async fn lease_worker(mut w: Worker) {
    while w.running() {
        let n = w.ctx.counter.fetch_add(1, Ordering::Relaxed);
        let key = format!("{LEASE_PREFIX}{n:08}");
        let client = w.client.clone();
        let grant = async {
            let r = client.lease_grant(LEASE_TTL_S).await?;
            if !r.error.is_empty() {
                return Ok(Done::Fail(Value::Null, Some(r.error)));
            }
            Ok(Done::Ok(json!({"lease": r.id, "ttl": r.ttl})))
        };
        let Some(granted) = w.invoke("grant", Some(&key), json!(LEASE_TTL_S), grant).await else {
            continue;
        };
        let id = granted["lease"].as_i64().expect("recorded above");
        let put = async {
            let put = pb::RequestOp {
                request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
                    key: key.as_bytes().to_vec(),
                    value: id.to_string().into_bytes(),
                    lease: id,
                    ..Default::default()
                })),
            };
            let req = pb::TxnRequest {
                compare: vec![],
                success: vec![put],
                failure: vec![],
            };
            client.txn(req).await?;
            Ok(Done::Ok(json!(id)))
        };
        if w.invoke("put", Some(&key), json!(id), put).await.is_none() {
            continue;
        }
        let rounds = w.rng.gen_range(2..=LEASE_ROUNDS_MAX);
        for _ in 0..rounds {
            if !w.running() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(LEASE_REFRESH_MS)).await;
            let keepalive = async { Ok(Done::Ok(json!({"ttl": client.lease_keep_alive_once(id).await?}))) };
            w.invoke("keepalive", Some(&key), json!(id), keepalive).await;
            lease_read(&mut w, &key).await;
        }
        if w.rng.gen_bool(1.0 / 3.0) {
            // Left to expire: read once past the expiry bound (stable leader), then until it
            // is gone, a few times (the checker judges each read against the bound).
            let bound_ms = LEASE_TTL_S as u64 * 1_000 + crate::checkers::lease::EXPIRY_SLACK_MS;
            tokio::time::sleep(Duration::from_millis(bound_ms + LEASE_EXPIRY_READ_DELAY_MS)).await;
            for _ in 0..LEASE_EXPIRY_READS {
                if lease_read(&mut w, &key).await == Some(false) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(LEASE_REFRESH_MS)).await;
            }
            continue;
        }
        let revoke = async {
            client.lease_revoke(id).await?;
            Ok(Done::Ok(json!(id)))
        };
        w.invoke("revoke", Some(&key), json!(id), revoke).await;
        lease_read(&mut w, &key).await;
    }
}

/// Whether the key was found (None: the read failed).
async fn lease_read(w: &mut Worker, key: &str) -> Option<bool> {
    let client = w.client.clone();
    let read = async {
        let req = pb::RangeRequest {
            key: key.as_bytes().to_vec(),
            ..Default::default()
        };
        let resp = client.range(req).await?;
        Ok(Done::Ok(json!({"present": !resp.kvs.is_empty()})))
    };
    let out = w.invoke("read", Some(key), Value::Null, read).await?;
    out["present"].as_bool()
}
