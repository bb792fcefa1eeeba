//! `berth bench kv`: an etcd-v3 load generator, usable against Berth or etcd itself, so that
//! the two can be compared side by side on one machine.

use crate::ServerArgs;
use anyhow::{bail, Context};
use berth_client::EtcdClient;
use berth_proto::etcdserverpb as pb;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(clap::Subcommand)]
pub enum BenchCmd {
    /// Load an etcd-v3 endpoint list with puts, ranges or a mix; print throughput and latency.
    Kv(KvArgs),
    /// Write continuously (one client, failing over across --server) and report the longest
    /// gap between two acknowledged writes: kill the leader meanwhile to measure failover.
    Failover(FailoverArgs),
    /// Load the typed Resources API: pod creates/updates/lists, then a watch fan-out.
    Api(crate::bench_api::ApiArgs),
    /// Scheduling throughput and packing over hollow nodes, with 1..N scheduler instances.
    Scheduler(crate::bench_scheduler::SchedulerBenchArgs),
    /// Pod start latency on a warm node (create -> Running by watch), runc as the floor, and
    /// the agent's RSS.
    Podstart(crate::bench_podstart::PodStartArgs),
    /// Node and control-plane member loss on a cluster of real servers and agents: time until
    /// replicas run elsewhere, controllers and schedulers act again.
    Recovery(crate::bench_recovery::RecoveryArgs),
}

#[derive(clap::Args, Clone, Debug)]
pub struct FailoverArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    #[arg(long, default_value_t = 10)]
    pub duration_secs: u64,
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Serialize, Debug)]
pub struct FailoverResult {
    pub writes_ok: u64,
    pub writes_failed: u64,
    /// Longest time between two acknowledged writes.
    pub max_gap_ms: f64,
    /// When that gap started, from the start of the run.
    pub max_gap_at_ms: f64,
}

#[derive(clap::Args, Clone, Debug)]
pub struct KvArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// put | range | range-serializable | mixed (half puts, half linearizable ranges)
    #[arg(long, default_value = "put")]
    pub op: String,
    /// gRPC connections, spread over the servers round-robin.
    #[arg(long, default_value_t = 1)]
    pub conns: usize,
    /// Concurrent clients, spread over the connections.
    #[arg(long, default_value_t = 1)]
    pub clients: usize,
    #[arg(long, default_value_t = 8)]
    pub key_size: usize,
    #[arg(long, default_value_t = 256)]
    pub val_size: usize,
    /// Distinct keys written and read.
    #[arg(long, default_value_t = 10_000)]
    pub key_space: u64,
    /// Stop after this many requests in all (0: run for --duration-secs).
    #[arg(long, default_value_t = 0)]
    pub total: u64,
    #[arg(long, default_value_t = 10)]
    pub duration_secs: u64,
    /// Seed of the key choice, so that runs are repeatable.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Also write the result as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Op {
    Put,
    Range { serializable: bool },
    Mixed,
}

#[derive(Serialize, Debug)]
pub struct KvResult {
    pub op: String,
    pub conns: usize,
    pub clients: usize,
    pub requests: u64,
    pub errors: u64,
    pub seconds: f64,
    pub throughput_per_sec: f64,
    pub latency_ms_p50: f64,
    pub latency_ms_p99: f64,
    pub latency_ms_p999: f64,
    pub latency_ms_max: f64,
}

fn parse_op(s: &str) -> anyhow::Result<Op> {
    Ok(match s {
        "put" => Op::Put,
        "range" => Op::Range { serializable: false },
        "range-serializable" => Op::Range { serializable: true },
        "mixed" => Op::Mixed,
        other => bail!("--op: {other:?} is not one of put, range, range-serializable, mixed"),
    })
}

fn write_json(path: &Option<PathBuf>, v: &impl Serialize) -> anyhow::Result<()> {
    if let Some(path) = path {
        std::fs::write(path, serde_json::to_vec_pretty(v)?)
            .with_context(|| format!("--json {}", path.display()))?;
    }
    Ok(())
}

pub async fn run(cmd: BenchCmd) -> anyhow::Result<()> {
    match cmd {
        BenchCmd::Api(a) => crate::bench_api::run(a).await,
        BenchCmd::Podstart(a) => crate::bench_podstart::run(a).await,
        BenchCmd::Recovery(a) => crate::bench_recovery::run(a).await,
        BenchCmd::Scheduler(a) => {
            let r = crate::bench_scheduler::run(&a).await?;
            write_json(&a.json, &r)
        }
        BenchCmd::Failover(a) => {
            let r = failover(&a).await?;
            println!(
                "failover: {} writes ok, {} failed; longest gap between acknowledged writes {:.1} ms (at {:.0} ms)",
                r.writes_ok, r.writes_failed, r.max_gap_ms, r.max_gap_at_ms
            );
            write_json(&a.json, &r)
        }
        BenchCmd::Kv(a) => {
            let r = kv(&a).await?;
            println!(
                "{} conns={} clients={}: {} requests ({} errors) in {:.2}s = {:.0}/s; latency ms p50 {:.2} p99 {:.2} p99.9 {:.2} max {:.2}",
                r.op, r.conns, r.clients, r.requests, r.errors, r.seconds, r.throughput_per_sec,
                r.latency_ms_p50, r.latency_ms_p99, r.latency_ms_p999, r.latency_ms_max
            );
            write_json(&a.json, &r)
        }
    }
}

/// Keys written before a read load, so that ranges find data; reads pick among these.
const PRELOAD_KEYS_MAX: u64 = 1000;

/// A zero-padded decimal key of `size` bytes (longer only if `i` has more digits).
fn key_of(i: u64, size: usize) -> Vec<u8> {
    format!("{i:0size$}").into_bytes()
}

/// Writes every key once so that ranges find data.
async fn preload(conn: &EtcdClient, a: &KvArgs) -> anyhow::Result<()> {
    let value = vec![b'v'; a.val_size];
    for i in 0..a.key_space.min(PRELOAD_KEYS_MAX) {
        conn.put(&key_of(i, a.key_size), &value).await?;
    }
    Ok(())
}

pub async fn kv(a: &KvArgs) -> anyhow::Result<KvResult> {
    let op = parse_op(&a.op)?;
    if a.conns == 0 || a.clients == 0 {
        bail!("--conns and --clients must be at least 1");
    }
    if a.key_space == 0 {
        bail!("--key-space must be at least 1");
    }
    let timeout = Duration::from_millis(a.server.request_timeout_ms);
    let conns: Vec<Arc<EtcdClient>> = (0..a.conns)
        .map(|i| {
            let addr = a.server.servers[i % a.server.servers.len()].clone();
            EtcdClient::new(&[addr], timeout).map(Arc::new)
        })
        .collect::<Result<_, _>>()?;
    if op != Op::Put {
        preload(&conns[0], a).await?;
    }
    let deadline = Instant::now() + Duration::from_secs(a.duration_secs);
    let per_client = if a.total > 0 {
        a.total.div_ceil(a.clients as u64)
    } else {
        u64::MAX
    };
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..a.clients {
        let conn = conns[c % conns.len()].clone();
        let a = a.clone();
        tasks.push(tokio::spawn(async move {
            client_loop(conn, op, &a, c as u64, per_client, deadline).await
        }));
    }
    let mut lat_us = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await?;
        lat_us.extend(l);
        errors += e;
    }
    let seconds = start.elapsed().as_secs_f64();
    lat_us.sort_unstable();
    let pct = |p: f64| -> f64 {
        if lat_us.is_empty() {
            return 0.0;
        }
        let idx = ((lat_us.len() as f64 * p).ceil() as usize).clamp(1, lat_us.len()) - 1;
        lat_us[idx] as f64 / 1000.0
    };
    Ok(KvResult {
        op: a.op.clone(),
        conns: a.conns,
        clients: a.clients,
        requests: lat_us.len() as u64,
        errors,
        seconds,
        throughput_per_sec: lat_us.len() as f64 / seconds,
        latency_ms_p50: pct(0.50),
        latency_ms_p99: pct(0.99),
        latency_ms_p999: pct(0.999),
        latency_ms_max: pct(1.0),
    })
}

async fn client_loop(
    conn: Arc<EtcdClient>,
    op: Op,
    a: &KvArgs,
    client_idx: u64,
    count: u64,
    deadline: Instant,
) -> (Vec<u64>, u64) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(a.seed.wrapping_mul(1_000_003).wrapping_add(client_idx));
    let value = vec![b'v'; a.val_size];
    let mut lat = Vec::new();
    let mut errors = 0;
    let mut n = 0;
    let space = if op == Op::Put {
        a.key_space
    } else {
        a.key_space.min(PRELOAD_KEYS_MAX)
    };
    while n < count && Instant::now() < deadline {
        let key = key_of(rng.gen_range(0..space), a.key_size);
        let is_put = match op {
            Op::Put => true,
            Op::Range { .. } => false,
            Op::Mixed => n % 2 == 0,
        };
        let t = Instant::now();
        let res = if is_put {
            conn.put(&key, &value).await.map(|_| ())
        } else {
            let serializable = matches!(op, Op::Range { serializable: true });
            conn.range(pb::RangeRequest {
                key,
                serializable,
                ..Default::default()
            })
            .await
            .map(|_| ())
        };
        match res {
            Ok(()) => lat.push(t.elapsed().as_micros() as u64),
            Err(_) => errors += 1,
        }
        n += 1;
    }
    (lat, errors)
}

pub async fn failover(a: &FailoverArgs) -> anyhow::Result<FailoverResult> {
    // A short per-request timeout, so that a write stuck on a dead leader is abandoned and
    // retried on another server quickly.
    let client = EtcdClient::new(
        &a.server.servers,
        Duration::from_millis(a.server.request_timeout_ms),
    )?;
    let start = Instant::now();
    let end = start + Duration::from_secs(a.duration_secs);
    let (mut ok, mut failed) = (0u64, 0u64);
    let mut last_ok = start;
    let (mut max_gap, mut max_gap_at) = (Duration::ZERO, Duration::ZERO);
    let mut i = 0u64;
    while Instant::now() < end {
        i += 1;
        match client.put(b"bench/failover", &i.to_be_bytes()).await {
            Ok(_) => {
                let now = Instant::now();
                if now - last_ok > max_gap {
                    max_gap = now - last_ok;
                    max_gap_at = last_ok - start;
                }
                last_ok = now;
                ok += 1;
            }
            Err(_) => failed += 1,
        }
    }
    Ok(FailoverResult {
        writes_ok: ok,
        writes_failed: failed,
        max_gap_ms: max_gap.as_secs_f64() * 1000.0,
        max_gap_at_ms: max_gap_at.as_secs_f64() * 1000.0,
    })
}
