//! The `berth` binary: argument parsing, output formatting, and wiring of the crates.
//!
//! Role: turn flags and environment variables into each crate's typed `Config`, start the
//! processes (`server`, `agent`, later `up` with an agent), and run the CLI subcommands over the client
//! crate. Invariant: this is the only crate that reads arguments or the environment.
//! It deliberately does not know: storage layout, Raft internals, or the wire format beyond
//! what the client crate exposes.

mod agent;
mod bench;
mod bench_api;
mod bench_podstart;
mod bench_recovery;
mod bench_scheduler;
mod cluster;
mod cordon;
mod jepsen;
mod kubectl;
mod rollout;
mod scheduler;
mod server;
mod snapshot;
mod up;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "berth",
    version,
    about = "Berth: a Kubernetes-style orchestrator in one binary"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// Server addresses for client subcommands: one or more `host:port`, comma-separated.
#[derive(clap::Args, Clone, Debug)]
pub struct ServerArgs {
    #[arg(
        long = "server",
        env = "BERTH_SERVER",
        value_delimiter = ',',
        default_value = "127.0.0.1:2379"
    )]
    pub servers: Vec<String>,
    /// Per-request timeout in milliseconds.
    #[arg(long, default_value_t = 5000)]
    pub request_timeout_ms: u64,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run one control-plane member: Raft member, replicated store and API server.
    Server(server::ServerArgs),
    /// A local single-member cluster with data under ./berth-data.
    Up(up::UpArgs),
    /// Cluster membership.
    #[command(subcommand)]
    Cluster(cluster::ClusterCmd),
    /// Backups: save from a running cluster, restore into a new data dir.
    #[command(subcommand)]
    Snapshot(snapshot::SnapshotCmd),
    /// Mark a node unschedulable: the scheduler places no new pods on it.
    Cordon(cordon::CordonArgs),
    /// Mark a node schedulable again.
    Uncordon(cordon::CordonArgs),
    /// Run a node agent: register the node and run the pods bound to it.
    Agent(agent::AgentArgs),
    /// The embedded container runtime's helper (run by the agent, not by hand).
    #[command(hide = true)]
    Runtime(agent::RuntimeArgs),
    /// A node's image store: build, import, list, remove.
    #[command(subcommand)]
    Image(agent::ImageCmd),
    /// Load generators and measurements.
    #[command(subcommand)]
    Bench(bench::BenchCmd),
    /// Create or update objects from manifests (-f FILE|DIR|-).
    Apply(kubectl::apply::ApplyArgs),
    /// Create objects from manifests (-f FILE|DIR|-).
    Create(kubectl::apply::ApplyArgs),
    /// Print objects: tables, -o yaml|json|wide|name, -w to watch.
    Get(kubectl::get::GetArgs),
    /// Show an object in detail, with its events.
    Describe(kubectl::describe::DescribeArgs),
    /// Delete objects by name, manifest, selector or --all.
    Delete(kubectl::delete::DeleteArgs),
    /// Set (key=value) or remove (key-) labels.
    Label(kubectl::label::LabelArgs),
    /// Set (key=value) or remove (key-) annotations.
    Annotate(kubectl::label::LabelArgs),
    /// Print a container's log (-c C, -f, --previous, --tail N), from its node's agent.
    Logs(kubectl::logs::LogsArgs),
    /// Run a command in a container (POD [-c C] -- CMD ARGS...); exits with its exit code.
    Exec(kubectl::logs::ExecArgs),
    /// The supported kinds and their names.
    ApiResources(kubectl::api_resources::ApiResourcesArgs),
    /// Deployment rollouts: status, history, undo, restart.
    #[command(subcommand)]
    Rollout(rollout::RolloutCmd),
    /// Chaos tests: a cluster in network namespaces, workloads, faults, checkers.
    #[command(subcommand)]
    Jepsen(jepsen::JepsenCmd),
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("BERTH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn"));
    // Colours only on a terminal: logs redirected to files stay plain text.
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Cmd::Runtime(a) = cli.cmd {
        // Before any thread exists: libcontainer clones this process. Its stderr is the
        // container's log, so only errors are logged.
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("error"))
            .with_ansi(false)
            .with_writer(std::io::stderr)
            .init();
        std::process::exit(agent::runtime_helper(a));
    }
    init_tracing();
    // The runner builds its own runtime (its threads live in the lab's network namespace).
    if let Cmd::Jepsen(c) = cli.cmd {
        return jepsen::run(c);
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        match cli.cmd {
            Cmd::Server(args) => server::run(args).await,
            Cmd::Up(args) => up::up(args).await,
            Cmd::Cluster(c) => cluster::run(c).await,
            Cmd::Snapshot(c) => snapshot::run(c).await,
            Cmd::Cordon(a) => cordon::run(a, true).await,
            Cmd::Uncordon(a) => cordon::run(a, false).await,
            Cmd::Agent(a) => agent::run(a).await,
            Cmd::Image(c) => agent::image(c).await,
            Cmd::Runtime(_) => unreachable!("handled before the async runtime starts"),
            Cmd::Bench(c) => bench::run(c).await,
            Cmd::Apply(a) => kubectl::run(kubectl::apply::apply(a)).await,
            Cmd::Create(a) => kubectl::run(kubectl::apply::create(a)).await,
            Cmd::Get(a) => kubectl::run(kubectl::get::run(a)).await,
            Cmd::Describe(a) => kubectl::run(kubectl::describe::run(a)).await,
            Cmd::Delete(a) => kubectl::run(kubectl::delete::run(a)).await,
            Cmd::Label(a) => kubectl::run(kubectl::label::label(a)).await,
            Cmd::Annotate(a) => kubectl::run(kubectl::label::annotate(a)).await,
            Cmd::Logs(a) => kubectl::run(kubectl::logs::logs(a)).await,
            Cmd::Exec(a) => kubectl::run(kubectl::logs::exec(a)).await,
            Cmd::ApiResources(a) => kubectl::run(async { kubectl::api_resources::run(a) }).await,
            Cmd::Rollout(c) => rollout::run(c).await,
            Cmd::Jepsen(_) => unreachable!("handled before the runtime starts"),
        }
    })
}
