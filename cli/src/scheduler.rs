//! The scheduler instance every `berth server` runs: its flags, and starting it over a client
//! of the server's own address (components reach the control plane only through the client,
//! even in-process).

use anyhow::Context;
use berth_client::leader::SystemClock;
use berth_client::ResourceClient;
use berth_scheduler::{Policy, Scheduler, SchedulerConfig};
use std::sync::Arc;
use std::time::Duration;

#[derive(clap::Args, Clone, Debug)]
pub struct SchedulerArgs {
    /// Do not run a scheduler instance in this server.
    #[arg(long)]
    pub no_scheduler: bool,
    /// Resource scoring: LeastAllocated (spread) or MostAllocated (bin packing).
    #[arg(long, default_value = "LeastAllocated")]
    pub scheduler_policy: String,
    /// Seconds an instance's lease lives without renewal: how fast others take its pods over.
    #[arg(long, default_value_t = berth_scheduler::DEFAULT_LEASE_DURATION.as_secs())]
    pub scheduler_lease_secs: u64,
    /// Percentage of nodes to find feasible before scoring (0: adaptive, as Kubernetes).
    #[arg(long, default_value_t = 0)]
    pub scheduler_nodes_percentage: usize,
}

impl Default for SchedulerArgs {
    fn default() -> Self {
        SchedulerArgs {
            no_scheduler: false,
            scheduler_policy: "LeastAllocated".into(),
            scheduler_lease_secs: berth_scheduler::DEFAULT_LEASE_DURATION.as_secs(),
            scheduler_nodes_percentage: 0,
        }
    }
}

/// The instance's config (None with `--no-scheduler`); `instance` is the member's name.
pub fn config(a: &SchedulerArgs, instance: &str) -> anyhow::Result<Option<SchedulerConfig>> {
    if a.no_scheduler {
        return Ok(None);
    }
    let mut cfg = SchedulerConfig::new(instance);
    cfg.algorithm.policy = a
        .scheduler_policy
        .parse::<Policy>()
        .map_err(|e| anyhow::anyhow!("--scheduler-policy: {e}"))?;
    cfg.algorithm.percentage_of_nodes_to_score = a.scheduler_nodes_percentage;
    cfg.lease_duration = Duration::from_secs(a.scheduler_lease_secs);
    cfg.validate().context("--scheduler-lease-secs")?;
    Ok(Some(cfg))
}

/// Starts the instance against the server at `client_addr`.
pub fn start(cfg: SchedulerConfig, client_addr: &str) -> anyhow::Result<Scheduler> {
    let client = ResourceClient::new(&[client_addr.to_string()], Duration::from_secs(5))?;
    Ok(Scheduler::start(client, cfg, Arc::new(SystemClock))?)
}
