//! `berth server` (and the server half of `berth up`): flags to configs, then run until SIGINT/SIGTERM.

use anyhow::{bail, Context};
use berth_apiserver::{ApiConfig, Server, MAX_REQUEST_BYTES_DEFAULT, MAX_TXN_OPS_DEFAULT};
use berth_raft::{AutoCompaction, RaftConfig};
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args, Clone, Debug)]
pub struct ServerArgs {
    /// This member's name, unique in the cluster.
    #[arg(long)]
    pub name: String,
    /// Directory of this member's database (created if missing).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// host:port other members reach this one on.
    #[arg(long)]
    pub peer_addr: String,
    /// host:port clients (etcdctl, berth) reach this member on.
    #[arg(long)]
    pub client_addr: String,
    /// Every founding member as name=peer-addr, comma-separated. Only this member: a
    /// single-member cluster. Ignored on restart from an existing data dir.
    #[arg(long, conflicts_with = "join")]
    pub initial_cluster: Option<String>,
    /// Client addresses of existing members to join through (as learner, then promoted).
    #[arg(long, value_delimiter = ',')]
    pub join: Vec<String>,
    /// host:port for Prometheus /metrics (off if not given).
    #[arg(long)]
    pub metrics_addr: Option<String>,
    /// Largest client request accepted, in bytes.
    #[arg(long, default_value_t = MAX_REQUEST_BYTES_DEFAULT)]
    pub max_request_bytes: usize,
    /// Most operations in one transaction branch.
    #[arg(long, default_value_t = MAX_TXN_OPS_DEFAULT)]
    pub max_txn_ops: usize,
    /// Raft heartbeat interval in milliseconds.
    #[arg(long = "heartbeat-interval", default_value_t = 50)]
    pub heartbeat_interval_ms: u64,
    /// Raft election timeout in milliseconds (randomized between this and twice this).
    #[arg(long = "election-timeout", default_value_t = 250)]
    pub election_timeout_ms: u64,
    /// Take a Raft snapshot (and purge the log behind it) every this many entries.
    #[arg(long = "snapshot-count", default_value_t = 10_000)]
    pub snapshot_count: u64,
    /// History to keep: a revision count (mode "revision") or a duration like 5m, 1h (mode
    /// "periodic"). 0 disables automatic compaction.
    #[arg(long, default_value = "0")]
    pub auto_compaction_retention: String,
    /// "periodic" or "revision", as etcd.
    #[arg(long, default_value = "periodic")]
    pub auto_compaction_mode: String,
    /// Do not run the controllers (ReplicaSet, Deployment, node lifecycle, ...) in this member.
    #[arg(long)]
    pub no_controllers: bool,
    /// A node whose Lease has not been renewed for this long is NotReady and its pods evicted.
    #[arg(long = "node-grace-period-ms", default_value_t = 5000)]
    pub node_grace_period_ms: u64,
    /// IPv4 range the nodes' pod CIDRs (/24 each) are carved from.
    #[arg(long, default_value = "10.244.0.0/16")]
    pub cluster_cidr: String,
    /// IPv4 range Service ClusterIPs are allocated from.
    #[arg(long, default_value = berth_apiserver::service_ip::SERVICE_CIDR_DEFAULT)]
    pub service_cidr: String,
    #[command(flatten)]
    pub scheduler: crate::scheduler::SchedulerArgs,
}

/// How long a clean shutdown waits for the scheduler instance to release its Lease.
const LEASE_RELEASE_TIMEOUT: Duration = Duration::from_secs(1);

/// `host:port` from `host:port` or `http(s)://host:port`.
fn strip_scheme(addr: &str) -> &str {
    addr.strip_prefix("http://")
        .or_else(|| addr.strip_prefix("https://"))
        .unwrap_or(addr)
}

fn parse_initial_cluster(s: &str) -> anyhow::Result<Vec<(String, String)>> {
    let mut out: Vec<(String, String)> = Vec::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        let Some((name, addr)) = part.split_once('=') else {
            bail!("--initial-cluster: {part:?} is not name=host:port");
        };
        let addr = strip_scheme(addr).to_string();
        if name.is_empty() || !addr.contains(':') {
            bail!("--initial-cluster: {part:?} is not name=host:port");
        }
        if out.iter().any(|(n, _)| n == name) {
            bail!("--initial-cluster: member name {name:?} appears twice");
        }
        out.push((name.to_string(), addr));
    }
    if out.is_empty() {
        bail!("--initial-cluster: no members given");
    }
    Ok(out)
}

fn parse_retention(mode: &str, retention: &str) -> anyhow::Result<Option<AutoCompaction>> {
    match mode {
        "revision" => {
            let n: i64 = retention.parse().with_context(|| {
                format!("--auto-compaction-retention: {retention:?} is not a revision count")
            })?;
            Ok((n > 0).then_some(AutoCompaction::Revisions(n)))
        }
        "periodic" => {
            let d = parse_duration(retention).with_context(|| {
                format!("--auto-compaction-retention: {retention:?} is not a duration like 30m")
            })?;
            Ok((!d.is_zero()).then_some(AutoCompaction::Periodic(d)))
        }
        other => bail!("--auto-compaction-mode: {other:?} is neither \"periodic\" nor \"revision\""),
    }
}

/// `90`, `90s`, `5m`, `1h` (a bare number means hours, as etcd's periodic retention).
fn parse_duration(s: &str) -> anyhow::Result<Duration> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse()?;
    let secs = match unit {
        "" | "h" => n * 3600,
        "m" => n * 60,
        "s" => n,
        "ms" => return Ok(Duration::from_millis(n)),
        _ => bail!("unknown unit {unit:?}"),
    };
    Ok(Duration::from_secs(secs))
}

pub fn configs(a: &ServerArgs) -> anyhow::Result<(ApiConfig, RaftConfig)> {
    let peer_addr = strip_scheme(&a.peer_addr).to_string();
    let client_addr = strip_scheme(&a.client_addr).to_string();
    if a.name.is_empty() {
        bail!("--name must not be empty");
    }
    let initial_cluster = match &a.initial_cluster {
        Some(s) => parse_initial_cluster(s)?,
        None => vec![(a.name.clone(), peer_addr.clone())],
    };
    if a.join.is_empty() {
        match initial_cluster.iter().find(|(n, _)| *n == a.name) {
            None => bail!("--initial-cluster does not name this member ({:?})", a.name),
            Some((_, addr)) if *addr != peer_addr => {
                bail!(
                    "--initial-cluster gives {} for {:?} but --peer-addr is {}",
                    addr,
                    a.name,
                    peer_addr
                )
            }
            _ => {}
        }
    }
    if a.election_timeout_ms < 3 * a.heartbeat_interval_ms {
        bail!("--election-timeout must be at least 3x --heartbeat-interval");
    }
    if a.max_request_bytes == 0 {
        bail!("--max-request-bytes must be positive");
    }
    let mut api = ApiConfig::new(client_addr.clone(), peer_addr.clone());
    api.metrics_addr = a.metrics_addr.clone();
    api.max_request_bytes = a.max_request_bytes;
    api.max_txn_ops = a.max_txn_ops;
    api.service_cidr = a
        .service_cidr
        .parse()
        .map_err(|e| anyhow::anyhow!("--service-cidr: {e}"))?;
    let mut raft = RaftConfig::new(a.name.clone(), a.data_dir.clone(), peer_addr, client_addr);
    raft.initial_cluster = initial_cluster;
    raft.join = a.join.iter().map(|j| strip_scheme(j).to_string()).collect();
    raft.heartbeat_interval_ms = a.heartbeat_interval_ms;
    raft.election_timeout_min_ms = a.election_timeout_ms;
    raft.election_timeout_max_ms = a.election_timeout_ms * 2;
    raft.snapshot_every_logs = a.snapshot_count;
    raft.auto_compaction = parse_retention(&a.auto_compaction_mode, &a.auto_compaction_retention)?;
    Ok((api, raft))
}

/// `--join` names client addresses (as a user knows them); Raft joins through peer
/// addresses, so ask the cluster for its members' peer addresses first.
async fn resolve_join(client_addrs: &[String]) -> anyhow::Result<Vec<String>> {
    let c = berth_client::EtcdClient::new(client_addrs, Duration::from_secs(5))?;
    let list = c
        .member_list()
        .await
        .with_context(|| format!("--join: asking {} for its members", client_addrs.join(",")))?;
    let peers: Vec<String> = list
        .members
        .iter()
        .flat_map(|m| m.peer_ur_ls.iter().map(|u| strip_scheme(u).to_string()))
        .collect();
    if peers.is_empty() {
        bail!("--join: {} reported no members", client_addrs.join(","));
    }
    Ok(peers)
}

/// The controller manager's config, None with `--no-controllers`.
fn controllers_config(a: &ServerArgs) -> anyhow::Result<Option<berth_controllers::Config>> {
    if a.no_controllers {
        return Ok(None);
    }
    if a.node_grace_period_ms == 0 {
        bail!("--node-grace-period-ms must be positive");
    }
    let mut c = berth_controllers::Config::new(a.name.clone());
    c.node_grace_period = Duration::from_millis(a.node_grace_period_ms);
    c.cluster_cidr = a
        .cluster_cidr
        .parse()
        .map_err(|e| anyhow::anyhow!("--cluster-cidr: {e}"))?;
    let node_len = berth_controllers::ipam::NODE_CIDR_PREFIX_LEN;
    if c.cluster_cidr.prefix_len > node_len {
        bail!(
            "--cluster-cidr: {} is smaller than one node's /{node_len}",
            a.cluster_cidr
        );
    }
    Ok(Some(c))
}

async fn serve_until_signal(
    api: ApiConfig,
    mut raft: RaftConfig,
    controllers: Option<berth_controllers::Config>,
    scheduler: Option<berth_scheduler::SchedulerConfig>,
) -> anyhow::Result<()> {
    if !raft.join.is_empty() {
        raft.join = resolve_join(&raft.join).await?;
    }
    let name = raft.name.clone();
    let client = api.client_addr.clone();
    let server = Server::start(api, raft).await?;
    tracing::info!(member = %name, id = %format!("{:x}", server.raft.member_id()), client_addr = %client, "serving");
    // The controllers reach this member like any client: through the client crate.
    let manager = match controllers {
        Some(cfg) => {
            let rc =
                berth_client::ResourceClient::new(std::slice::from_ref(&client), Duration::from_secs(5))?;
            Some(berth_controllers::ControllerManager::start(rc, cfg))
        }
        None => None,
    };
    let scheduler = scheduler
        .map(|c| crate::scheduler::start(c, &client))
        .transpose()?;
    tokio::select! {
        r = wait_for_signal() => r?,
        _ = server.raft.core_stopped() => {
            // Exit so a supervisor restarts the member; serving only errors helps no one.
            bail!("the Raft core of member {name} stopped (see the errors above); exiting");
        }
    }
    tracing::info!("shutting down");
    // Stop acting, then release the Leases while this member still serves, so that the other
    // members' scheduler instances and controller manager take over at once.
    if let Some(s) = scheduler {
        let _ = tokio::time::timeout(LEASE_RELEASE_TIMEOUT, s.shutdown()).await;
    }
    if let Some(m) = manager {
        m.shutdown().await;
    }
    server.shutdown().await;
    Ok(())
}

pub(crate) async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}

pub async fn run(a: ServerArgs) -> anyhow::Result<()> {
    let (api, raft) = configs(&a)?;
    let controllers = controllers_config(&a)?;
    let scheduler = crate::scheduler::config(&a.scheduler, &a.name)?;
    serve_until_signal(api, raft, controllers, scheduler).await
}

/// The server half of `berth up`: a single member named `berth` with the controllers and the
/// scheduler, data under `<data_dir>/server`.
pub fn up_server_args(a: &crate::up::UpArgs) -> ServerArgs {
    ServerArgs {
        name: "berth".into(),
        data_dir: a.data_dir.join("server"),
        peer_addr: a.peer_addr.clone(),
        client_addr: a.client_addr.clone(),
        initial_cluster: None,
        join: Vec::new(),
        metrics_addr: a.metrics_addr.clone(),
        max_request_bytes: MAX_REQUEST_BYTES_DEFAULT,
        max_txn_ops: MAX_TXN_OPS_DEFAULT,
        heartbeat_interval_ms: 50,
        election_timeout_ms: 250,
        snapshot_count: 10_000,
        auto_compaction_retention: "1h".into(),
        auto_compaction_mode: "periodic".into(),
        no_controllers: false,
        node_grace_period_ms: 5000,
        cluster_cidr: a.cluster_cidr.clone(),
        service_cidr: berth_apiserver::service_ip::SERVICE_CIDR_DEFAULT.into(),
        scheduler: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_cluster_parses_and_rejects() {
        let v = parse_initial_cluster("s1=127.0.0.1:1,s2=http://127.0.0.1:2").unwrap();
        assert_eq!(v[1], ("s2".to_string(), "127.0.0.1:2".to_string()));
        assert!(parse_initial_cluster("s1").is_err());
        assert!(parse_initial_cluster("s1=a:1,s1=b:2")
            .unwrap_err()
            .to_string()
            .contains("twice"));
        assert!(parse_initial_cluster("").is_err());
    }

    #[test]
    fn controller_flags_are_checked() {
        #[derive(clap::Parser)]
        struct T {
            #[command(flatten)]
            a: ServerArgs,
        }
        let parse = |extra: &[&str]| {
            let base = [
                "t",
                "--name",
                "s1",
                "--data-dir",
                "d",
                "--peer-addr",
                "a:1",
                "--client-addr",
                "a:2",
            ];
            let t: T = clap::Parser::parse_from(base.iter().chain(extra));
            controllers_config(&t.a)
        };
        let c = parse(&[]).unwrap().unwrap();
        assert_eq!(c.cluster_cidr.to_string(), "10.244.0.0/16");
        assert_eq!(c.node_grace_period, Duration::from_secs(5));
        assert!(parse(&["--no-controllers"]).unwrap().is_none());
        for (flags, want) in [
            (&["--cluster-cidr", "10.0.0.0/25"][..], "--cluster-cidr"),
            (&["--cluster-cidr", "10.0.0.1/16"][..], "--cluster-cidr"),
            (&["--node-grace-period-ms", "0"][..], "--node-grace-period-ms"),
        ] {
            let err = parse(flags).unwrap_err().to_string();
            assert!(err.contains(want), "{flags:?}: {err}");
        }
    }

    #[test]
    fn retention_modes() {
        assert!(matches!(
            parse_retention("revision", "1000").unwrap(),
            Some(AutoCompaction::Revisions(1000))
        ));
        assert!(
            matches!(parse_retention("periodic", "5m").unwrap(), Some(AutoCompaction::Periodic(d)) if d.as_secs() == 300)
        );
        assert!(parse_retention("periodic", "0").unwrap().is_none());
        assert!(parse_retention("weekly", "1")
            .unwrap_err()
            .to_string()
            .contains("--auto-compaction-mode"));
        assert!(parse_retention("revision", "x")
            .unwrap_err()
            .to_string()
            .contains("--auto-compaction-retention"));
    }
}
