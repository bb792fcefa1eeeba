//! `berth jepsen run|check`: flags to `berth_jepsen::run::Config`, exit status from the verdict.

use anyhow::{bail, Context};
use berth_jepsen::checkers::Validity;
use berth_jepsen::run::{self, Config, Fault, Workload};
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Subcommand)]
pub enum JepsenCmd {
    /// Start a cluster in network namespaces, run a workload under faults, check the history,
    /// write a report folder. Exits non-zero on any anomaly (or an undecided check).
    Run(RunArgs),
    /// Check a saved history.jsonl offline with a workload's checker.
    Check {
        /// register, set, append, watch, lease or controlplane.
        #[arg(long)]
        workload: String,
        history: PathBuf,
    },
}

#[derive(clap::Args)]
pub struct RunArgs {
    /// register, set, append, watch, lease or controlplane.
    #[arg(long, default_value = "register")]
    workload: String,
    /// Faults, comma-separated: kill, pause, partition, netem, member, disk (none if empty).
    #[arg(long, value_delimiter = ',', default_value = "kill")]
    nemesis: Vec<String>,
    /// Seconds of operations.
    #[arg(long, default_value_t = 60)]
    time_limit: u64,
    /// Client workers.
    #[arg(long, default_value_t = 10)]
    concurrency: usize,
    /// Servers: 3 or 5.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Seed of every random choice (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
    /// Report folder (default: jepsen-reports/<workload>-<unix time>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Quiet seconds before each fault.
    #[arg(long, default_value_t = 4.0)]
    nemesis_interval: f64,
    /// Seconds each fault lasts.
    #[arg(long, default_value_t = 6.0)]
    nemesis_duration: f64,
    /// Milliseconds before an operation counts as indeterminate.
    #[arg(long, default_value_t = 2000)]
    op_timeout_ms: u64,
    /// Give every client all servers, so the client crate's failover is tested too (default:
    /// each client talks to one server, as Jepsen's do).
    #[arg(long)]
    client_failover: bool,
    /// Prefix of the lab's network namespace names (1-7 of a-z, 0-9, -): give a campaign run
    /// beside other runs (CI) its own, e.g. `bjc-`.
    #[arg(long, default_value = berth_jepsen::run::lab::NAME_PREFIX)]
    lab_prefix: String,
}

pub fn run(cmd: JepsenCmd) -> anyhow::Result<()> {
    match cmd {
        JepsenCmd::Run(args) => run_test(args),
        JepsenCmd::Check { workload, history } => check(&workload, &history),
    }
}

fn run_test(a: RunArgs) -> anyhow::Result<()> {
    let workload: Workload = a.workload.parse()?;
    let faults = a
        .nemesis
        .iter()
        .filter(|s| !s.is_empty() && s.as_str() != "none")
        .map(|s| s.parse::<Fault>())
        .collect::<Result<Vec<_>, _>>()?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
    let seed = a.seed.unwrap_or(now.as_nanos() as u64);
    let out = a
        .out
        .unwrap_or_else(|| PathBuf::from("jepsen-reports").join(format!("{}-{}", a.workload, now.as_secs())));
    let secs = |flag: &str, s: f64| -> anyhow::Result<Duration> {
        Duration::try_from_secs_f64(s).with_context(|| format!("--{flag}: {s} is not a duration in seconds"))
    };
    let config = Config {
        workload,
        faults,
        time_limit: Duration::from_secs(a.time_limit),
        concurrency: a.concurrency,
        nodes: a.nodes,
        seed,
        out_dir: out,
        server_exe: std::env::current_exe().context("finding the berth binary")?,
        nemesis_interval: secs("nemesis-interval", a.nemesis_interval)?,
        nemesis_duration: secs("nemesis-duration", a.nemesis_duration)?,
        op_timeout: Duration::from_millis(a.op_timeout_ms),
        client_failover: a.client_failover,
        lab_prefix: a.lab_prefix,
    };
    eprintln!(
        "berth jepsen: seed {seed}, report in {}",
        config.out_dir.display()
    );
    let outcome = run::run(&config)?;
    for line in &outcome.summary {
        println!("{line}");
    }
    for w in &outcome.warnings {
        eprintln!("warning: {w}");
    }
    println!("report: {}", outcome.out_dir.display());
    verdict(outcome.validity)
}

fn check(workload: &str, history: &std::path::Path) -> anyhow::Result<()> {
    let workload: Workload = workload.parse()?;
    let result = run::check_file(workload, history)?;
    println!("{}", serde_json::to_string_pretty(&result.report)?);
    if let Some(ce) = &result.counterexample {
        println!("smallest counterexample found ({} entries):", ce.len());
        let mut out = Vec::new();
        ce.write_jsonl(&mut out)?;
        print!("{}", String::from_utf8_lossy(&out));
    }
    verdict(result.validity)
}

fn verdict(v: Validity) -> anyhow::Result<()> {
    match v {
        Validity::Valid => Ok(()),
        Validity::Invalid => bail!("anomalies found: the history is not valid"),
        Validity::Unknown => bail!("the checker could not decide (see the report)"),
    }
}
