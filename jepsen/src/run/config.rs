//! The typed configuration of a run (the CLI builds it from flags; this crate parses nothing).

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::Error;

/// What the clients do, and which checker judges it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    /// Reads, writes and compare-and-sets on a few keys; per-key linearizability.
    Register,
    /// Unique adds, then a final read; nothing acknowledged is lost.
    Set,
    /// Multi-key transactions appending to lists; Elle's isolation anomalies.
    Append,
    /// Writers on a prefix, several watchers; every revision in order, no gaps or duplicates.
    Watch,
    /// Keys attached to leases kept alive, then revoked; kept alive means present, revoked
    /// means gone.
    Lease,
    /// Hollow nodes and pods (bare and from Deployments) through the Resources API, with the
    /// servers' schedulers and controllers at work; pods bound once, nodes never
    /// overcommitted, replicas converge after the faults.
    Controlplane,
}

impl FromStr for Workload {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "register" => Ok(Workload::Register),
            "set" => Ok(Workload::Set),
            "append" => Ok(Workload::Append),
            "watch" => Ok(Workload::Watch),
            "lease" => Ok(Workload::Lease),
            "controlplane" => Ok(Workload::Controlplane),
            other => Err(Error::Config {
                field: "workload".into(),
                message: format!("{other:?} is not one of register, set, append, watch, lease, controlplane"),
            }),
        }
    }
}

/// A kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Fault {
    /// SIGKILL one, the leader, a minority or a majority; restart after the fault's duration.
    Kill,
    /// SIGSTOP the same kinds of targets; SIGCONT after the duration.
    Pause,
    /// nftables drops between node namespaces: isolate the leader, random halves, or (5+
    /// nodes) a ring in which every node sees a majority but no two see the same one.
    Partition,
    /// tc netem delay, jitter and loss on a minority's or everyone's links.
    Netem,
    /// Remove a member through the Cluster API, wipe its data dir, rejoin it with `--join`.
    Member,
    /// Kill a member, truncate or bit-flip its data files, restart it; record whether it
    /// refused to start or came back (and rejoin it empty if it refused).
    Disk,
}

/// Why a clock nemesis is not offered.
pub const CLOCK_SKEW_INFEASIBLE: &str =
    "clock skew is not feasible: every node process shares the host kernel's \
CLOCK_REALTIME, and Linux time namespaces offset only CLOCK_MONOTONIC and CLOCK_BOOTTIME (which \
Berth's timers read, so skewing them per node would not model a wrong wall clock either); \
changing the real clock would disturb the host and every other process on it";

impl FromStr for Fault {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = |message: String| Error::Config {
            field: "nemesis".into(),
            message,
        };
        match s {
            "kill" => Ok(Fault::Kill),
            "pause" => Ok(Fault::Pause),
            "partition" => Ok(Fault::Partition),
            "netem" => Ok(Fault::Netem),
            "member" => Ok(Fault::Member),
            "disk" => Ok(Fault::Disk),
            "clock" => Err(bad(CLOCK_SKEW_INFEASIBLE.into())),
            other => Err(bad(format!(
                "{other:?} is not one of kill, pause, partition, netem, member, disk"
            ))),
        }
    }
}

impl Fault {
    pub fn name(self) -> &'static str {
        match self {
            Fault::Kill => "kill",
            Fault::Pause => "pause",
            Fault::Partition => "partition",
            Fault::Netem => "netem",
            Fault::Member => "member",
            Fault::Disk => "disk",
        }
    }
}

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct Config {
    pub workload: Workload,
    pub faults: Vec<Fault>,
    /// How long clients run operations (the final reads and checks come after).
    pub time_limit: Duration,
    /// Client workers.
    pub concurrency: usize,
    /// `berth server` processes: 3 or 5 (1 to `lab::NODES_MAX` accepted).
    pub nodes: usize,
    /// Seeds every random choice of workers and nemesis.
    pub seed: u64,
    /// The report folder (created).
    pub out_dir: PathBuf,
    /// The `berth` binary started as servers.
    pub server_exe: PathBuf,
    /// Quiet time before each fault.
    pub nemesis_interval: Duration,
    /// How long each fault lasts.
    pub nemesis_duration: Duration,
    /// Per-operation timeout; an operation that takes longer is indeterminate.
    pub op_timeout: Duration,
    /// Give each worker's client every server (its own first), so the client crate's
    /// failover is under test too. Off: each worker talks to one node only, as in Jepsen.
    pub client_failover: bool,
    /// Starts the name of every network namespace of the lab (`lab::NAME_PREFIX` by default);
    /// give concurrent campaigns their own, so no run's cleanup check sees another's.
    pub lab_prefix: String,
}

impl Config {
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |field: &str, message: &str| {
            Err(Error::Config {
                field: field.into(),
                message: message.into(),
            })
        };
        if self.concurrency == 0 {
            return bad("concurrency", "must be at least 1");
        }
        if self.workload == Workload::Watch && self.concurrency < 2 {
            return bad(
                "concurrency",
                "the watch workload needs at least 2 (writers and watchers)",
            );
        }
        if self.nodes == 0 || self.nodes > super::lab::NODES_MAX {
            return bad("nodes", "must be between 1 and 9");
        }
        if self.time_limit.is_zero() {
            return bad("time-limit", "must be positive");
        }
        super::lab::Lab::check_prefix(&self.lab_prefix)?;
        if self.op_timeout.is_zero() {
            return bad("op-timeout", "must be positive");
        }
        Ok(())
    }
}
