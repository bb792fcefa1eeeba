//! The runner: builds the lab network, starts `berth server` processes in it, runs a workload's
//! clients and the nemesis for the time limit, heals, runs the final reads, checks the history
//! and writes the report folder.
//!
//! Threads: the lab setup and the servers' spawning happen from the calling thread (root
//! network namespace; each server enters its node namespace between fork and exec). The
//! clients run on a dedicated Tokio runtime whose threads enter the lab namespace when they
//! start, so every client socket lives on the lab bridge and nowhere else.

pub mod check;
pub mod cluster;
pub mod config;
pub mod controlplane;
pub mod lab;
pub mod nemesis;
pub mod recorder;
pub mod report;
pub mod workloads;

use std::path::PathBuf;
use std::sync::atomic::AtomicI64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::{json, Value};

pub use check::{check, CheckResult};
pub use config::{Config, Fault, Workload, CLOCK_SKEW_INFEASIBLE};

use crate::checkers::Validity;
use crate::history::{History, OpType, Process};
use crate::Error;
use cluster::Cluster;
use lab::Lab;
use nemesis::Nemesis;
use recorder::Recorder;
use workloads::{Ctx, Worker};

/// Client runtime threads.
pub const CLIENT_THREADS: usize = 2;
/// Process number of the first final reader (apart from every worker's numbers).
pub const FINAL_READER_PROCESS: u64 = 1_000_000;

/// What a run found.
#[derive(Debug)]
pub struct RunOutcome {
    pub validity: Validity,
    pub out_dir: PathBuf,
    /// One line per finding or figure, for the terminal.
    pub summary: Vec<String>,
    pub warnings: Vec<String>,
}

/// Runs one test and writes its report; the cluster, its processes and the lab are gone when
/// this returns (also on error and on Ctrl-C).
pub fn run(config: &Config) -> Result<RunOutcome, Error> {
    config.validate()?;
    let out = config.out_dir.clone();
    let logs = out.join("logs");
    let data = out.join("data");
    for dir in [&out, &logs, &data] {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            path: dir.clone(),
            source,
        })?;
    }
    // Until the runtime's handlers take over, a Ctrl-C or SIGTERM only sets a flag, so the
    // half-built lab is still removed.
    early_signals::install();
    let run_id = format!("{:04x}", std::process::id() % 0x10000);
    let lab = Arc::new(Lab::create(&config.lab_prefix, &run_id, config.nodes)?);
    let lab_ns = Arc::new(Lab::open_netns(&lab.lab_netns())?);
    let cluster = Cluster::new(&lab, &config.server_exe, &data, &logs)?;
    let cluster = Arc::new(tokio::sync::Mutex::new(cluster));
    let runtime = {
        let lab_ns = lab_ns.clone();
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(CLIENT_THREADS)
            .enable_all()
            .on_thread_start(move || {
                lab::enter_netns(&lab_ns).expect("enter the lab network namespace");
            })
            .build()
            .map_err(|e| Error::Cluster(format!("client runtime: {e}")))?
    };
    let task = runtime.spawn(run_in_lab(config.clone(), lab.clone(), cluster.clone()));
    let result = runtime.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate()))
        else {
            return Err(Error::Cluster("cannot install signal handlers".into()));
        };
        if early_signals::received() {
            return Err(Error::Interrupted);
        }
        tokio::select! {
            r = task => r.unwrap_or_else(|e| Err(Error::Cluster(format!("runner task: {e}")))),
            _ = int.recv() => Err(Error::Interrupted),
            _ = term.recv() => Err(Error::Interrupted),
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(2));
    // The servers first (by PID), then the namespaces.
    if let Ok(mut c) = Arc::try_unwrap(cluster).map(tokio::sync::Mutex::into_inner) {
        for i in 0..c.nodes.len() {
            c.kill(i);
        }
    }
    drop(lab);
    let _ = std::fs::remove_dir_all(&data);
    result
}

async fn run_in_lab(
    config: Config,
    lab: Arc<Lab>,
    cluster: Arc<tokio::sync::Mutex<Cluster>>,
) -> Result<RunOutcome, Error> {
    let addrs = {
        let mut c = cluster.lock().await;
        for i in 0..c.nodes.len() {
            c.start(i)?;
        }
        c.wait_leader().await?;
        c.client_addrs()
    };
    let recorder = Arc::new(Recorder::new());
    let deadline = Instant::now() + config.time_limit;
    let ctx = Ctx {
        recorder: recorder.clone(),
        addrs: addrs.clone(),
        concurrency: config.concurrency,
        op_timeout: config.op_timeout,
        deadline,
        client_failover: config.client_failover,
        counter: Arc::new(AtomicI64::new(0)),
    };
    let rng = |i: u64| StdRng::seed_from_u64(config.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(i));
    let mut nemesis = Nemesis {
        lab: lab.clone(),
        cluster: cluster.clone(),
        recorder: recorder.clone(),
        faults: config.faults.clone(),
        rng: rng(u64::MAX),
        interval: config.nemesis_interval,
        duration: config.nemesis_duration,
        disk_outcomes: Vec::new(),
        crashes: Vec::new(),
    };
    let mut warnings = Vec::new();

    let mut workers = spawn_workers(&config, &ctx, &rng).await;
    warnings.append(&mut workers.warnings);
    nemesis.run(deadline).await;
    for handle in std::mem::take(&mut workers.main) {
        let _ = handle.await;
    }
    nemesis.heal_all().await;
    if cluster.lock().await.wait_leader().await.is_err() {
        warnings.push("no leader after healing; final reads may fail".to_string());
    }
    final_phase(&config, &ctx, workers, &mut warnings).await;

    let history = recorder.history();
    if !nemesis.crashes.is_empty() {
        warnings.push(format!(
            "{} member process(es) exited on their own (see crashes)",
            nemesis.crashes.len()
        ));
    }
    write_outcome(
        &config,
        &history,
        nemesis.disk_outcomes,
        nemesis.crashes,
        warnings,
    )
}

struct Spawned {
    main: Vec<tokio::task::JoinHandle<()>>,
    watchers: Vec<tokio::task::JoinHandle<()>>,
    until: Option<tokio::sync::watch::Sender<Option<i64>>>,
    /// Tasks that run until the final phase is over (hollow nodes), stopped by `stop`.
    background: Vec<tokio::task::JoinHandle<()>>,
    stop: Option<tokio::sync::watch::Sender<bool>>,
    warnings: Vec<String>,
}

async fn spawn_workers(config: &Config, ctx: &Ctx, rng: &impl Fn(u64) -> StdRng) -> Spawned {
    let mut spawned = Spawned {
        main: Vec::new(),
        watchers: Vec::new(),
        until: None,
        background: Vec::new(),
        stop: None,
        warnings: Vec::new(),
    };
    let worker = |i: usize| Worker::new(ctx.clone(), i, rng(i as u64));
    match config.workload {
        Workload::Register => {
            let pool = Arc::new(Mutex::new(workloads::KeyPool::default()));
            for i in 0..config.concurrency {
                spawned
                    .main
                    .push(tokio::spawn(workloads::register_worker(worker(i), pool.clone())));
            }
        }
        Workload::Set => {
            for i in 0..config.concurrency {
                spawned.main.push(tokio::spawn(workloads::set_worker(worker(i))));
            }
        }
        Workload::Append => {
            for i in 0..config.concurrency {
                spawned
                    .main
                    .push(tokio::spawn(workloads::append_worker(worker(i))));
            }
        }
        Workload::Lease => {
            for i in 0..config.concurrency {
                spawned
                    .main
                    .push(tokio::spawn(workloads::lease_worker(worker(i))));
            }
        }
        Workload::Watch => {
            let watchers = workloads::WATCHERS_MAX.min(config.concurrency / 2).max(1);
            let start = workloads::current_revision(&ctx.addrs, ctx.op_timeout)
                .await
                .unwrap_or(0)
                + 1;
            let (tx, rx) = tokio::sync::watch::channel(None);
            for i in 0..watchers {
                let w = worker(i);
                spawned
                    .watchers
                    .push(tokio::spawn(workloads::watcher(w, i, start, rx.clone())));
            }
            for i in watchers..config.concurrency {
                spawned
                    .main
                    .push(tokio::spawn(workloads::watch_writer(worker(i))));
            }
            spawned.until = Some(tx);
        }
        Workload::Controlplane => spawn_controlplane(config, ctx, rng, &mut spawned).await,
    }
    spawned
}

async fn spawn_controlplane(config: &Config, ctx: &Ctx, rng: &impl Fn(u64) -> StdRng, spawned: &mut Spawned) {
    use controlplane as cp;
    let all = resource_client(&ctx.addrs, ctx.op_timeout);
    let worker_at = |process: u64| {
        let mut w = Worker::new(ctx.clone(), 0, rng(process));
        w.process = process;
        w
    };
    if let Err(e) = cp::setup(&mut worker_at(cp::SETUP_PROCESS), &all).await {
        spawned.warnings.push(format!("setup: {e}"));
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    for i in 0..cp::HOLLOW_NODES {
        let w = worker_at(cp::HEARTBEAT_PROCESS + i as u64);
        let heartbeat = cp::hollow_heartbeat(w, all.clone(), cp::node_name(i), stop_rx.clone());
        spawned.background.push(tokio::spawn(heartbeat));
        let w = worker_at(cp::HOLLOW_PROCESS + i as u64);
        let agent = cp::hollow_agent(w, all.clone(), cp::node_name(i), stop_rx.clone());
        spawned.background.push(tokio::spawn(agent));
    }
    let (tx, rx) = tokio::sync::watch::channel(None);
    for i in 0..cp::WATCHERS {
        let w = worker_at(cp::WATCHER_PROCESS + i as u64);
        spawned
            .watchers
            .push(tokio::spawn(cp::pod_watcher(w, all.clone(), rx.clone())));
    }
    for i in 0..config.concurrency {
        let w = Worker::new(ctx.clone(), i, rng(i as u64));
        let rc = resource_client(&workloads::worker_addrs(ctx, i), ctx.op_timeout);
        let task = if i < cp::DEPLOYMENTS {
            tokio::spawn(cp::deployment_worker(w, rc, i))
        } else {
            tokio::spawn(cp::bare_pod_worker(w, rc))
        };
        spawned.main.push(task);
    }
    spawned.until = Some(tx);
    spawned.stop = Some(stop_tx);
}

fn resource_client(addrs: &[String], timeout: Duration) -> berth_client::ResourceClient {
    berth_client::ResourceClient::new(addrs, timeout).expect("lab addresses are valid")
}

/// After the faults healed: the set's final read; the watchers' catch-up to the store's
/// revision.
async fn final_phase(config: &Config, ctx: &Ctx, spawned: Spawned, warnings: &mut Vec<String>) {
    let Spawned {
        watchers,
        until,
        background,
        stop,
        ..
    } = spawned;
    match config.workload {
        Workload::Set => {
            let reader = Worker::new(ctx.clone(), 0, StdRng::seed_from_u64(config.seed));
            let answered = workloads::set_final_reads(reader, FINAL_READER_PROCESS).await;
            if answered < ctx.addrs.len() {
                warnings.push(format!(
                    "only {answered} of {} nodes answered the final read",
                    ctx.addrs.len()
                ));
            }
        }
        Workload::Watch => {
            let revision = workloads::current_revision(&ctx.addrs, ctx.op_timeout).await;
            if revision.is_none() {
                warnings.push("could not read the final revision; watchers end indeterminate".into());
            }
            if let Some(tx) = until {
                let _ = tx.send(Some(revision.unwrap_or(i64::MAX)));
            }
            for w in watchers {
                let _ = w.await;
            }
        }
        Workload::Controlplane => {
            let reader = Worker::new(ctx.clone(), 0, StdRng::seed_from_u64(config.seed));
            let rc = resource_client(&ctx.addrs, ctx.op_timeout);
            let revision = controlplane::converge(reader, rc).await;
            if revision.is_none() {
                warnings.push("no converge-read answered; watchers end indeterminate".into());
            }
            if let Some(tx) = until {
                let _ = tx.send(Some(revision.unwrap_or(i64::MAX)));
            }
            for w in watchers {
                let _ = w.await;
            }
        }
        Workload::Register | Workload::Append | Workload::Lease => {}
    }
    if let Some(stop) = stop {
        let _ = stop.send(true);
    }
    for b in background {
        let _ = b.await;
    }
}

fn write_outcome(
    config: &Config,
    history: &History,
    disk_outcomes: Vec<Value>,
    crashes: Vec<Value>,
    mut warnings: Vec<String>,
) -> Result<RunOutcome, Error> {
    let dir = &config.out_dir;
    history.write_jsonl_file(&dir.join("history.jsonl"))?;
    let result = check(config.workload, history)?;
    let mut summary = vec![format!(
        "{} under {}: {:?}",
        workload_name(config.workload),
        fault_names(&config.faults),
        result.validity
    )];
    let counts = op_counts(history);
    summary.push(format!("operations: {counts}"));
    let mut counterexample_file = Value::Null;
    if let Some(ce) = &result.counterexample {
        let path = dir.join("counterexample.jsonl");
        ce.write_jsonl_file(&path)?;
        counterexample_file = json!("counterexample.jsonl");
        summary.push(format!(
            "smallest counterexample found: {} entries in {}",
            ce.len(),
            path.display()
        ));
    }
    let title = format!(
        "berth jepsen: {} / {} / {} nodes / seed {}",
        workload_name(config.workload),
        fault_names(&config.faults),
        config.nodes,
        config.seed
    );
    let html = report::timeline_html(history, config.concurrency, &title)?;
    let timeline = dir.join("timeline.html");
    std::fs::write(&timeline, html).map_err(|source| Error::Io {
        path: timeline,
        source,
    })?;
    if let Some(w) = report::plots(dir) {
        warnings.push(w);
    }
    let nemesis: Vec<Value> = history
        .ops()
        .iter()
        .filter(|o| matches!(o.process, Process::Named(_)) && o.kind == OpType::Info)
        .map(|o| json!({"time_s": o.time as f64 / 1e9, "f": o.f, "value": o.value}))
        .collect();
    let verdict = json!({
        "valid": result.validity,
        "workload": config.workload,
        "nemeses": config.faults,
        "nodes": config.nodes,
        "concurrency": config.concurrency,
        "time_limit_s": config.time_limit.as_secs_f64(),
        "seed": config.seed,
        "operations": counts,
        "checker": result.report,
        "counterexample": counterexample_file,
        "nemesis": nemesis,
        "disk_faults": disk_outcomes,
        "crashes": crashes,
        "warnings": warnings,
    });
    report::write_json(&dir.join("verdict.json"), &verdict)?;
    Ok(RunOutcome {
        validity: result.validity,
        out_dir: dir.clone(),
        summary,
        warnings,
    })
}

/// Completions of client operations by function and type: `{"read": {"ok": 3, ...}, ...}`.
pub fn op_counts(history: &History) -> Value {
    let mut counts: std::collections::BTreeMap<String, std::collections::BTreeMap<&str, u64>> =
        Default::default();
    for op in history
        .ops()
        .iter()
        .filter(|o| matches!(o.process, Process::Client(_)))
    {
        let kind = match op.kind {
            OpType::Invoke => continue,
            OpType::Ok => "ok",
            OpType::Fail => "fail",
            OpType::Info => "info",
        };
        *counts.entry(op.f.clone()).or_default().entry(kind).or_default() += 1;
    }
    json!(counts)
}

pub fn workload_name(w: Workload) -> &'static str {
    match w {
        Workload::Register => "register",
        Workload::Set => "set",
        Workload::Append => "append",
        Workload::Watch => "watch",
        Workload::Lease => "lease",
        Workload::Controlplane => "controlplane",
    }
}

fn fault_names(faults: &[Fault]) -> String {
    if faults.is_empty() {
        return "no faults".into();
    }
    faults.iter().map(|f| f.name()).collect::<Vec<_>>().join(",")
}

/// SIGINT/SIGTERM during the lab's construction, before the runtime's handlers exist.
mod early_signals {
    use std::sync::atomic::{AtomicBool, Ordering};

    static RECEIVED: AtomicBool = AtomicBool::new(false);

    extern "C" fn on_signal(_: libc::c_int) {
        RECEIVED.store(true, Ordering::SeqCst);
    }

    pub fn install() {
        let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        // SAFETY: the handler only stores to an atomic (async-signal-safe).
        unsafe {
            libc::signal(libc::SIGINT, handler);
            libc::signal(libc::SIGTERM, handler);
        }
    }

    pub fn received() -> bool {
        RECEIVED.load(Ordering::SeqCst)
    }
}

/// `berth jepsen check`: checks a saved history offline; the report as JSON.
pub fn check_file(workload: Workload, path: &std::path::Path) -> Result<CheckResult, Error> {
    let history = History::read_jsonl_file(path)?;
    check(workload, &history)
}
