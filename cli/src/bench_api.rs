//! `berth bench api`: load on the typed `Resources` API of running servers (it starts none).
//!
//! Phases: creates, updates and lists of Pods by `--clients` concurrent clients (ops/s, p50,
//! p99), then a watch fan-out: `--watchers` watches on the pods of one namespace, sharing
//! HTTP/2 connections (`--watchers-per-conn` each), all to the first `--server`; a barrier
//! write that every watcher must see (so all are open), the server's RSS before and after
//! (`--server-pid`), then a stream of `--events` pod creates carrying their send time in an
//! annotation: delivery latency is receipt time minus send time (same host clock), over every
//! (watcher, event) pair. With `--watch-rpc many` (the default) the watchers of a connection
//! are watches on one WatchMany stream; with `single` each is its own Watch stream.

use crate::ServerArgs;
use anyhow::{bail, Context};
use berth_client::{ListParams, ManyEvent, ResourceClient, WatchEvent, WatchMany};
use berth_proto::corev1::{Namespace, Pod};
use berth_proto::manifest;
use serde::Serialize;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Annotation with the write's send time, microseconds since the epoch.
const SENT_ANNOTATION: &str = "bench.berth.dev/sent-us";
/// Label of the stream's pods (the barrier pod has none).
const STREAM_LABEL: &str = "bench.berth.dev/stream";
/// How long watchers may take to all see the barrier write.
const BARRIER_TIMEOUT: Duration = Duration::from_secs(300);
/// Per-write timeout of the stream's writer (at least; --request-timeout-ms may be longer).
const STREAM_WRITE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long after the last write watchers may take to deliver the stream.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(clap::Args, Clone, Debug)]
pub struct ApiArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Concurrent clients of the create/update/list phases.
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// gRPC connections of those clients, spread over the servers round-robin.
    #[arg(long, default_value_t = 4)]
    pub conns: usize,
    /// Pods created (then updated) in the CRUD phases.
    #[arg(long, default_value_t = 2000)]
    pub objects: usize,
    /// Lists of all the namespace's pods in the list phase.
    #[arg(long, default_value_t = 100)]
    pub lists: usize,
    /// Watchers of the fan-out phase (0 skips it).
    #[arg(long, default_value_t = 10_000)]
    pub watchers: usize,
    /// Watchers per HTTP/2 connection (with `--watch-rpc many`: per WatchMany stream, one
    /// stream per connection).
    #[arg(long, default_value_t = 100)]
    pub watchers_per_conn: usize,
    /// `many`: the watchers of a connection are watches on one WatchMany stream; `single`:
    /// each watcher is its own Watch stream.
    #[arg(long, value_enum, default_value_t = WatchRpc::Many)]
    pub watch_rpc: WatchRpc,
    /// Writes (pod creates) in the watched stream.
    #[arg(long, default_value_t = 100)]
    pub events: usize,
    /// Writes per second of that stream.
    #[arg(long, default_value_t = 10.0)]
    pub write_rate: f64,
    /// PID of the (first) server, to read its RSS from /proc before and after the watchers.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// host:port of the (first) server's /metrics, to read its heap bytes in use
    /// (`berth_heap_allocated_bytes`) where RSS is read.
    #[arg(long)]
    pub server_metrics: Option<String>,
    /// Namespace to create and work in (default: bench-<unix seconds>).
    #[arg(long)]
    pub namespace: Option<String>,
    /// Write the result as JSON here.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(clap::ValueEnum, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum WatchRpc {
    #[default]
    Many,
    Single,
}

#[derive(Serialize, Debug, Default)]
pub struct PhaseResult {
    pub phase: String,
    pub ops: u64,
    pub errors: u64,
    pub seconds: f64,
    pub ops_per_sec: f64,
    pub latency_ms_p50: f64,
    pub latency_ms_p99: f64,
    pub latency_ms_max: f64,
}

#[derive(Serialize, Debug, Default)]
pub struct WatchResult {
    /// `many`: watches on WatchMany streams (one per connection); `single`: a Watch stream each.
    pub watch_rpc: WatchRpc,
    pub watchers: usize,
    pub watchers_per_conn: usize,
    pub connections: usize,
    pub events: usize,
    pub write_rate_per_sec: f64,
    /// Seconds until every watcher had seen the barrier write.
    pub open_seconds: f64,
    /// Watchers times acknowledged stream writes.
    pub deliveries_expected: u64,
    pub deliveries: u64,
    pub writes_failed: u64,
    pub watch_errors: u64,
    pub delivery_ms_p50: f64,
    pub delivery_ms_p99: f64,
    pub delivery_ms_max: f64,
    pub write_ack_ms_p50: f64,
    pub write_ack_ms_p99: f64,
    /// With `many`, read after one watch of the namespace opened the server's pods event
    /// window (a per-kind cost shared by every watcher, not a per-watcher one).
    pub server_rss_kib_before: Option<u64>,
    pub server_rss_kib_with_watchers: Option<u64>,
    pub server_rss_bytes_per_watcher: Option<f64>,
    /// After the stream, watchers still open (queues and buffers have then been used).
    pub server_rss_kib_after_stream: Option<u64>,
    pub server_rss_bytes_per_watcher_after_stream: Option<f64>,
    /// The server's heap bytes in use (glibc's count, without memory freed but kept) at the
    /// same three moments, and per watcher.
    pub server_heap_bytes_before: Option<u64>,
    pub server_heap_bytes_with_watchers: Option<u64>,
    pub server_heap_bytes_per_watcher: Option<f64>,
    pub server_heap_bytes_after_stream: Option<u64>,
    pub server_heap_bytes_per_watcher_after_stream: Option<f64>,
}

#[derive(Serialize, Debug, Default)]
pub struct ApiResult {
    pub servers: Vec<String>,
    pub namespace: String,
    pub clients: usize,
    pub conns: usize,
    pub objects: usize,
    pub phases: Vec<PhaseResult>,
    pub watch: Option<WatchResult>,
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// The `p` quantile (0..=1) of sorted microsecond samples, in milliseconds.
fn pct_ms(sorted_us: &[u64], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let idx = ((sorted_us.len() as f64 * p).ceil() as usize).clamp(1, sorted_us.len()) - 1;
    sorted_us[idx] as f64 / 1000.0
}

fn bench_pod(name: &str, labels: &[(&str, &str)], annotations: &[(&str, String)]) -> Pod {
    let y = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  containers:\n  - name: app\n    image: registry.local/bench:1\n"
    );
    let manifest::Object::Pod(mut p) = manifest::parse_one(&y).expect("the bench pod parses") else {
        unreachable!("a Pod manifest")
    };
    let meta = p.metadata.get_or_insert_with(Default::default);
    for (k, v) in labels {
        meta.labels.insert(k.to_string(), v.to_string());
    }
    for (k, v) in annotations {
        meta.annotations.insert(k.to_string(), v.clone());
    }
    p
}

fn read_rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("--server-pid {pid}: reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .context("no VmRSS line in /proc/<pid>/status")
}

/// `berth_heap_allocated_bytes` from `--server-metrics` (None without that flag).
async fn read_heap(a: &ApiArgs) -> anyhow::Result<Option<u64>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Some(addr) = &a.server_metrics else {
        return Ok(None);
    };
    let mut conn = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("--server-metrics {addr}"))?;
    conn.write_all(format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes())
        .await?;
    let mut body = String::new();
    conn.read_to_string(&mut body).await?;
    let v = body
        .lines()
        .find_map(|l| l.strip_prefix("berth_heap_allocated_bytes "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .with_context(|| format!("--server-metrics {addr}: no berth_heap_allocated_bytes"))?;
    Ok(Some(v as u64))
}

pub async fn run(a: ApiArgs) -> anyhow::Result<()> {
    if a.clients == 0 || a.conns == 0 || a.watchers_per_conn == 0 {
        bail!("--clients, --conns and --watchers-per-conn must be at least 1");
    }
    let timeout = Duration::from_millis(a.server.request_timeout_ms);
    let ns = a
        .namespace
        .clone()
        .unwrap_or_else(|| format!("bench-{}", now_us() / 1_000_000));
    let admin = ResourceClient::new(&a.server.servers, timeout)?;
    let mut nso = Namespace::default();
    nso.metadata.get_or_insert_with(Default::default).name = ns.clone();
    admin
        .create("", &nso)
        .await
        .context("creating the bench namespace")?;
    let conns: Vec<ResourceClient> = (0..a.conns)
        .map(|i| ResourceClient::new(&[a.server.servers[i % a.server.servers.len()].clone()], timeout))
        .collect::<Result<_, _>>()?;
    let mut result = ApiResult {
        servers: a.server.servers.clone(),
        namespace: ns.clone(),
        clients: a.clients,
        conns: a.conns,
        objects: a.objects,
        ..Default::default()
    };
    for phase in ["create", "update", "list"] {
        let r = crud_phase(phase, &a, &conns, &ns).await?;
        println!(
            "{:<7} {:>7} ops ({} errors) in {:.2}s = {:>8.0}/s; latency ms p50 {:.2} p99 {:.2} max {:.2}",
            r.phase,
            r.ops,
            r.errors,
            r.seconds,
            r.ops_per_sec,
            r.latency_ms_p50,
            r.latency_ms_p99,
            r.latency_ms_max
        );
        result.phases.push(r);
    }
    if a.watchers > 0 {
        let w = watch_phase(&a, &ns, timeout).await?;
        println!(
            "watch: {} watchers on {} connections open in {:.1}s; {}/{} deliveries ({} watch errors); delivery ms p50 {:.1} p99 {:.1} max {:.1}; write ack ms p50 {:.1} p99 {:.1}",
            w.watchers, w.connections, w.open_seconds, w.deliveries, w.deliveries_expected, w.watch_errors,
            w.delivery_ms_p50, w.delivery_ms_p99, w.delivery_ms_max, w.write_ack_ms_p50, w.write_ack_ms_p99
        );
        if let (Some(b), Some(w2), Some(per)) = (
            w.server_rss_kib_before,
            w.server_rss_kib_with_watchers,
            w.server_rss_bytes_per_watcher,
        ) {
            println!(
                "server RSS {b} KiB -> {w2} KiB with the watchers: {per:.0} bytes per watcher; after the stream {} KiB: {:.0} bytes per watcher",
                w.server_rss_kib_after_stream.unwrap_or(0),
                w.server_rss_bytes_per_watcher_after_stream.unwrap_or(0.0)
            );
        }
        if let (Some(h), Some(h2)) = (
            w.server_heap_bytes_per_watcher,
            w.server_heap_bytes_per_watcher_after_stream,
        ) {
            println!("server heap in use: {h:.0} bytes per watcher; after the stream {h2:.0}");
        }
        result.watch = Some(w);
    }
    if let Some(path) = &a.out {
        std::fs::write(path, serde_json::to_vec_pretty(&result)?)
            .with_context(|| format!("--out {}", path.display()))?;
    }
    Ok(())
}

/// One timed phase: `clients` tasks share the work; each op's latency is recorded.
async fn crud_phase(
    phase: &str,
    a: &ApiArgs,
    conns: &[ResourceClient],
    ns: &str,
) -> anyhow::Result<PhaseResult> {
    let total = if phase == "list" { a.lists } else { a.objects };
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..a.clients {
        let rc = conns[c % conns.len()].clone();
        let (ns, phase, clients) = (ns.to_string(), phase.to_string(), a.clients);
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0u64;
            for i in (c..total).step_by(clients) {
                let name = format!("p{i}");
                let t = Instant::now();
                let ok = match phase.as_str() {
                    "create" => rc.create(&ns, &bench_pod(&name, &[], &[])).await.is_ok(),
                    "update" => update_once(&rc, &ns, &name).await,
                    _ => rc.list::<Pod>(&ns, &ListParams::default()).await.is_ok(),
                };
                if ok {
                    lat.push(t.elapsed().as_micros() as u64);
                } else {
                    errors += 1;
                }
            }
            (lat, errors)
        }));
    }
    let mut lat = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await?;
        lat.extend(l);
        errors += e;
    }
    let seconds = start.elapsed().as_secs_f64();
    lat.sort_unstable();
    Ok(PhaseResult {
        phase: phase.to_string(),
        ops: lat.len() as u64,
        errors,
        seconds,
        ops_per_sec: lat.len() as f64 / seconds,
        latency_ms_p50: pct_ms(&lat, 0.5),
        latency_ms_p99: pct_ms(&lat, 0.99),
        latency_ms_max: pct_ms(&lat, 1.0),
    })
}

/// An update as a controller does it: a label change, with the resourceVersion just read
/// (the get is not timed separately; the op is get + update).
async fn update_once(rc: &ResourceClient, ns: &str, name: &str) -> bool {
    let Ok(mut p) = rc.get::<Pod>(ns, name).await else {
        return false;
    };
    p.metadata
        .get_or_insert_with(Default::default)
        .labels
        .insert("bench.berth.dev/updated".into(), "true".into());
    rc.update(&p).await.is_ok()
}

/// What every watcher task shares.
struct Shared {
    /// Watchers that have seen the barrier pod.
    synced: AtomicU64,
    /// Watchers that have seen every stream event.
    complete: AtomicU64,
    watch_errors: AtomicU64,
    stop: tokio::sync::watch::Receiver<bool>,
    /// Set once the RSS with every watcher open has been read: complete watchers may end.
    release: tokio::sync::watch::Receiver<bool>,
}

async fn watch_phase(a: &ApiArgs, ns: &str, timeout: Duration) -> anyhow::Result<WatchResult> {
    let first = a.server.servers[0].clone();
    let admin = ResourceClient::new(std::slice::from_ref(&first), timeout)?;
    let from = admin
        .list::<Pod>(
            ns,
            &ListParams {
                limit: 1,
                ..Default::default()
            },
        )
        .await?
        .resource_version;
    // With WatchMany, the pods event window is opened (and kept) first: it is the kind's, not
    // any watcher's.
    let _window = match a.watch_rpc {
        WatchRpc::Many => Some(open_window(&admin, ns, &from).await?),
        WatchRpc::Single => None,
    };
    let rss_before = a.server_pid.map(read_rss_kib).transpose()?;
    let heap_before = read_heap(a).await?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (release_tx, release_rx) = tokio::sync::watch::channel(false);
    let shared = Arc::new(Shared {
        synced: AtomicU64::new(0),
        complete: AtomicU64::new(0),
        watch_errors: AtomicU64::new(0),
        stop: stop_rx,
        release: release_rx,
    });
    let connections = a.watchers.div_ceil(a.watchers_per_conn);
    // The watch streams carry no deadline: the request timeout would end them.
    let watch_clients: Vec<ResourceClient> = (0..connections)
        .map(|_| ResourceClient::new(std::slice::from_ref(&first), Duration::from_secs(24 * 3600)))
        .collect::<Result<_, _>>()?;
    let opened = Instant::now();
    let mut tasks = Vec::with_capacity(a.watchers);
    if a.watch_rpc == WatchRpc::Many {
        for (c, rc) in watch_clients.iter().enumerate() {
            let ids = c * a.watchers_per_conn..((c + 1) * a.watchers_per_conn).min(a.watchers);
            let (rc, ns, from, shared, events) =
                (rc.clone(), ns.to_string(), from.clone(), shared.clone(), a.events);
            tasks.push(tokio::spawn(async move {
                mux_watchers(rc, ns, from, ids, shared, events).await
            }));
        }
    }
    for w in (0..a.watchers).filter(|_| a.watch_rpc == WatchRpc::Single) {
        let rc = watch_clients[w / a.watchers_per_conn].clone();
        let params = ListParams {
            resource_version: from.clone(),
            ..Default::default()
        };
        let (ns, shared, events) = (ns.to_string(), shared.clone(), a.events);
        tasks.push(tokio::spawn(async move {
            watcher(rc, ns, params, shared, events).await
        }));
    }
    // The barrier: one write every watcher must see before the stream starts.
    admin.create(ns, &bench_pod("barrier", &[], &[])).await?;
    let deadline = Instant::now() + BARRIER_TIMEOUT;
    while shared.synced.load(Ordering::Relaxed) < a.watchers as u64 {
        if Instant::now() > deadline {
            bail!(
                "only {} of {} watchers saw the barrier write within {BARRIER_TIMEOUT:?}",
                shared.synced.load(Ordering::Relaxed),
                a.watchers
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let open_seconds = opened.elapsed().as_secs_f64();
    // Let the allocator settle after the burst of opens before reading RSS.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_with = a.server_pid.map(read_rss_kib).transpose()?;
    let heap_with = read_heap(a).await?;

    let mut acks = write_stream(a, ns, timeout).await?;
    // Wait for the watchers to have every event (or the drain deadline), then read RSS while
    // they are all still open.
    let drain_deadline = tokio::time::Instant::now() + DRAIN_TIMEOUT;
    while shared.complete.load(Ordering::Relaxed) < a.watchers as u64
        && tokio::time::Instant::now() < drain_deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rss_after = a.server_pid.map(read_rss_kib).transpose()?;
    let heap_after = read_heap(a).await?;
    let _ = release_tx.send(true);
    let mut all = Vec::with_capacity(a.watchers * a.events);
    let mut deliveries = 0u64;
    // (Each task's result: the latencies of one watcher, or of one stream's watchers.)
    let mut pending = tasks;
    // Watchers end by themselves once they have every event; the rest are stopped at the
    // drain deadline.
    let stopper = tokio::spawn(async move {
        tokio::time::sleep_until(drain_deadline).await;
        let _ = stop_tx.send(true);
    });
    for t in pending.drain(..) {
        let lat = t.await?;
        deliveries += lat.len() as u64;
        all.extend(lat);
    }
    stopper.abort();
    all.sort_unstable();
    acks.sort_unstable();
    let per_watcher = |with: Option<u64>| match (rss_before, with) {
        (Some(b), Some(w)) if a.watchers > 0 => Some((w as f64 - b as f64) * 1024.0 / a.watchers as f64),
        _ => None,
    };
    let heap_per_watcher = |with: Option<u64>| match (heap_before, with) {
        (Some(b), Some(w)) if a.watchers > 0 => Some((w as f64 - b as f64) / a.watchers as f64),
        _ => None,
    };
    Ok(WatchResult {
        watch_rpc: a.watch_rpc,
        watchers: a.watchers,
        watchers_per_conn: a.watchers_per_conn,
        connections,
        events: a.events,
        write_rate_per_sec: a.write_rate,
        open_seconds,
        deliveries_expected: (a.watchers * acks.len()) as u64,
        writes_failed: (a.events - acks.len()) as u64,
        deliveries,
        watch_errors: shared.watch_errors.load(Ordering::Relaxed),
        delivery_ms_p50: pct_ms(&all, 0.5),
        delivery_ms_p99: pct_ms(&all, 0.99),
        delivery_ms_max: pct_ms(&all, 1.0),
        write_ack_ms_p50: pct_ms(&acks, 0.5),
        write_ack_ms_p99: pct_ms(&acks, 0.99),
        server_rss_kib_before: rss_before,
        server_rss_kib_with_watchers: rss_with,
        server_rss_bytes_per_watcher: per_watcher(rss_with),
        server_rss_kib_after_stream: rss_after,
        server_rss_bytes_per_watcher_after_stream: per_watcher(rss_after),
        server_heap_bytes_before: heap_before,
        server_heap_bytes_with_watchers: heap_with,
        server_heap_bytes_per_watcher: heap_per_watcher(heap_with),
        server_heap_bytes_after_stream: heap_after,
        server_heap_bytes_per_watcher_after_stream: heap_per_watcher(heap_after),
    })
}

/// The watched write stream, on its own thread and runtime: the watchers' work in this
/// process must not delay the writes or their acknowledgements (write ack latency would then
/// measure the bench, not the server).
async fn write_stream(a: &ApiArgs, ns: &str, timeout: Duration) -> anyhow::Result<Vec<u64>> {
    let (servers, ns, events, rate) = (a.server.servers.clone(), ns.to_string(), a.events, a.write_rate);
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build();
        let r = match rt {
            Ok(rt) => rt.block_on(async move {
                // A slow write is measured, not abandoned.
                let writer = ResourceClient::new(&servers, timeout.max(STREAM_WRITE_TIMEOUT))?;
                let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(0.001)));
                let mut acks = Vec::with_capacity(events);
                for i in 0..events {
                    ticker.tick().await;
                    let sent = now_us();
                    let pod = bench_pod(
                        &format!("s{i}"),
                        &[(STREAM_LABEL, "1")],
                        &[(SENT_ANNOTATION, sent.to_string())],
                    );
                    let t = Instant::now();
                    match writer.create(&ns, &pod).await {
                        Ok(_) => acks.push(t.elapsed().as_micros() as u64),
                        Err(e) => tracing::warn!(error = %e, "stream write {i} failed"),
                    }
                }
                Ok(acks)
            }),
            Err(e) => Err(e.into()),
        };
        let _ = tx.send(r);
    });
    rx.await.context("the writer thread ended")?
}

/// One watcher: counts the barrier, then records the delivery latency of each stream event
/// until it has them all or is stopped.
async fn watcher(
    rc: ResourceClient,
    ns: String,
    params: ListParams,
    shared: Arc<Shared>,
    events: usize,
) -> Vec<u64> {
    let mut w = rc.watch::<Pod>(&ns, &params);
    let mut stop = shared.stop.clone();
    let mut lat = Vec::with_capacity(events);
    loop {
        if lat.len() >= events {
            shared.complete.fetch_add(1, Ordering::Relaxed);
            let mut release = shared.release.clone();
            let _ = release.wait_for(|r| *r).await;
            return lat;
        }
        let ev = tokio::select! {
            ev = w.next() => ev,
            _ = stop.changed() => return lat,
        };
        let pod = match ev {
            Ok(WatchEvent::Added(p)) => p,
            Ok(_) => continue,
            Err(_) => {
                shared.watch_errors.fetch_add(1, Ordering::Relaxed);
                return lat;
            }
        };
        let received = now_us();
        let meta = pod.metadata.unwrap_or_default();
        if meta.name == "barrier" {
            shared.synced.fetch_add(1, Ordering::Relaxed);
        } else if let Some(sent) = meta
            .annotations
            .get(SENT_ANNOTATION)
            .and_then(|s| s.parse::<u64>().ok())
        {
            lat.push(received.saturating_sub(sent));
        }
    }
}

/// One WatchMany stream on the bench namespace's pods, kept open for the whole phase.
async fn open_window(rc: &ResourceClient, ns: &str, from: &str) -> anyhow::Result<WatchMany> {
    let mut s = rc.watch_many().await.context("opening a WatchMany stream")?;
    let params = ListParams {
        resource_version: from.to_string(),
        ..Default::default()
    };
    s.add(0, "pods", ns, &params, false).await?;
    match s.next().await? {
        ManyEvent::Created(_) => Ok(s),
        other => bail!("opening the pods event window: {other:?}"),
    }
}

/// The watchers `ids` as watches on one WatchMany stream: counts the barrier and records the
/// delivery latency of each stream event per watch (a response names every watch it is for;
/// they all receive it at the same instant) until every watch has them all or it is stopped.
async fn mux_watchers(
    rc: ResourceClient,
    ns: String,
    from: String,
    ids: std::ops::Range<usize>,
    shared: Arc<Shared>,
    events: usize,
) -> Vec<u64> {
    let (base, n) = (ids.start, ids.len());
    let mut lat = Vec::with_capacity(n * events);
    let fail = |shared: &Shared| {
        shared.watch_errors.fetch_add(n as u64, Ordering::Relaxed);
    };
    let Ok(mut s) = rc.watch_many().await else {
        fail(&shared);
        return lat;
    };
    let params = ListParams {
        resource_version: from,
        ..Default::default()
    };
    for id in ids {
        if s.add(id as i64, "pods", &ns, &params, false).await.is_err() {
            fail(&shared);
            return lat;
        }
    }
    let mut got = vec![0usize; n];
    let mut complete = 0;
    let mut stop = shared.stop.clone();
    while complete < n {
        let m = tokio::select! {
            m = s.next() => m,
            _ = stop.changed() => return lat,
        };
        let (watch_ids, pod) = match m {
            Ok(ManyEvent::Event { watch_ids, event }) => match *event {
                WatchEvent::Added(pod) => (watch_ids, pod),
                _ => continue,
            },
            Ok(ManyEvent::Ended { watch_ids, .. }) => {
                shared
                    .watch_errors
                    .fetch_add(watch_ids.len() as u64, Ordering::Relaxed);
                continue;
            }
            Ok(_) => continue,
            Err(_) => {
                fail(&shared);
                return lat;
            }
        };
        let received = now_us();
        let meta = pod.metadata().cloned().unwrap_or_default();
        if meta.name == "barrier" {
            shared.synced.fetch_add(watch_ids.len() as u64, Ordering::Relaxed);
        } else if let Some(sent) = meta
            .annotations
            .get(SENT_ANNOTATION)
            .and_then(|s| s.parse::<u64>().ok())
        {
            for id in watch_ids {
                lat.push(received.saturating_sub(sent));
                let g = &mut got[id as usize - base];
                *g += 1;
                if *g == events {
                    complete += 1;
                    shared.complete.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
    let mut release = shared.release.clone();
    let _ = release.wait_for(|r| *r).await;
    lat
}
