//! The configuration of one member.

use std::path::PathBuf;

use crate::error::RaftError;
use crate::leases::AutoCompaction;
use crate::types::member_id;

/// How one member starts. Build it with [`RaftConfig::new`] and adjust fields.
#[derive(Clone, Debug)]
pub struct RaftConfig {
    /// The member's name, unique in the cluster; its id is [`crate::member_id`] of `peer_addr`.
    pub name: String,
    /// Holds `cluster_id`, the RocksDB database (`db/`) and the latest snapshot (`snapshot/`).
    pub data_dir: PathBuf,
    /// Where other members reach this member's peer service.
    pub peer_addr: String,
    /// Where clients reach this member's API.
    pub client_addr: String,
    /// `(name, peer_addr)` of every member of a new cluster, this one included; only itself
    /// (or empty, with no `join`) = a single-member cluster. Ignored in join mode.
    pub initial_cluster: Vec<(String, String)>,
    /// Join mode when non-empty: **peer addresses** of existing members, asked in turn to add
    /// this member (first as a learner, then, once caught up, as a voter).
    pub join: Vec<String>,
    /// In join mode: stay a learner once caught up (promote later with
    /// [`crate::RaftHandle::promote_member`]).
    pub join_as_learner: bool,
    pub heartbeat_interval_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Take a snapshot every this many applied log entries; the log behind it is purged.
    pub snapshot_every_logs: u64,
    /// How often the leader looks for expired leases.
    pub lease_check_interval_ms: u64,
    /// Lease grants with a shorter TTL get this one.
    pub min_lease_ttl_secs: i64,
    /// History retention; `None` = never compact automatically.
    pub auto_compaction: Option<AutoCompaction>,
    /// Deadline of one client operation (propose, linearizable read, membership change),
    /// retries across leader changes included.
    pub request_timeout_ms: u64,
    /// Told the duration of every WAL sync, for metrics.
    pub fsync_observer: Option<crate::log_store::FsyncObserver>,
}

impl RaftConfig {
    /// A config with the defaults: a single-member cluster of itself.
    pub fn new(
        name: impl Into<String>,
        data_dir: impl Into<PathBuf>,
        peer_addr: impl Into<String>,
        client_addr: impl Into<String>,
    ) -> RaftConfig {
        RaftConfig {
            name: name.into(),
            data_dir: data_dir.into(),
            peer_addr: peer_addr.into(),
            client_addr: client_addr.into(),
            initial_cluster: Vec::new(),
            join: Vec::new(),
            join_as_learner: false,
            heartbeat_interval_ms: 50,
            election_timeout_min_ms: 150,
            election_timeout_max_ms: 300,
            snapshot_every_logs: 10_000,
            lease_check_interval_ms: 100,
            min_lease_ttl_secs: 2,
            auto_compaction: None,
            request_timeout_ms: 5_000,
            fsync_observer: None,
        }
    }

    pub(crate) fn is_join(&self) -> bool {
        !self.join.is_empty()
    }

    /// The initial cluster, with the single-member default filled in.
    pub(crate) fn effective_initial_cluster(&self) -> Vec<(String, String)> {
        if self.initial_cluster.is_empty() {
            vec![(self.name.clone(), self.peer_addr.clone())]
        } else {
            self.initial_cluster.clone()
        }
    }

    pub(crate) fn validate(&self) -> Result<(), RaftError> {
        let bad = |m: String| Err(RaftError::Config(m));
        if self.name.is_empty() {
            return bad("member name is empty".into());
        }
        if self.peer_addr.is_empty() {
            return bad("peer address is empty".into());
        }
        if self.heartbeat_interval_ms == 0 || self.election_timeout_min_ms <= self.heartbeat_interval_ms {
            return bad("election_timeout_min_ms must exceed heartbeat_interval_ms > 0".into());
        }
        if self.election_timeout_max_ms <= self.election_timeout_min_ms {
            return bad("election_timeout_max_ms must exceed election_timeout_min_ms".into());
        }
        if self.snapshot_every_logs == 0 || self.lease_check_interval_ms == 0 || self.request_timeout_ms == 0
        {
            return bad(
                "snapshot_every_logs, lease_check_interval_ms and request_timeout_ms must be > 0".into(),
            );
        }
        match self.auto_compaction {
            Some(AutoCompaction::Revisions(n)) if n <= 0 => {
                return bad("auto-compaction must keep > 0 revisions".into())
            }
            Some(AutoCompaction::Periodic(d)) if d.is_zero() => {
                return bad("auto-compaction period is zero".into())
            }
            _ => {}
        }
        if self.is_join() {
            return Ok(());
        }
        let cluster = self.effective_initial_cluster();
        let mut ids = std::collections::BTreeMap::new();
        for (name, addr) in &cluster {
            if name.is_empty() || addr.is_empty() {
                return bad(format!("initial cluster entry {name:?}={addr:?} is incomplete"));
            }
            if let Some(other) = ids.insert(member_id(addr), name) {
                return bad(format!(
                    "initial cluster members {other:?} and {name:?} have the same peer address {addr}"
                ));
            }
            if cluster.iter().filter(|(n, _)| n == name).count() > 1 {
                return bad(format!("initial cluster names {name:?} twice"));
            }
        }
        match cluster.iter().find(|(n, _)| n == &self.name) {
            None => bad(format!(
                "initial cluster does not contain this member {:?}",
                self.name
            )),
            Some((_, addr)) if addr != &self.peer_addr => bad(format!(
                "initial cluster gives {:?} peer address {addr:?}, but peer_addr is {:?}",
                self.name, self.peer_addr
            )),
            Some(_) => Ok(()),
        }
    }
}
