//! [`RaftHandle`]: one member of the control plane: bootstrap or join, proposals (forwarded
//! to the leader), read-index reads, membership changes, and the leader's duties (lease
//! expiry, auto-compaction).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use berth_store::{Command, CommandResult, LeaseId, Renewal, Store, StoreConfig, WATCH_QUEUE_LEN_DEFAULT};
use openraft::error::{CheckIsLeaderError, ClientWriteError, InitializeError, RaftError as OpenRaftError};
use openraft::{ChangeMembers, ServerState, SnapshotPolicy};
use rand::Rng;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::RaftConfig;
use crate::error::{RaftError, TransportError};
use crate::leases::{Compactor, Leases};
use crate::log_store::{open_durable_mark, LogStore, Syncer, LOG_CF, META_CF};
use crate::network::{
    decode_request, encode_request, ClusterInfo, Forwarded, JoinRequest, LeaderRequest, LeaderResponse,
    Network, PeerRpc, PeerTransport, ReadIndexRequest, ReadIndexResponse,
};
use crate::state_machine::StateMachine;
use crate::types::{cluster_id, member_id, ApplyError, Member, MemberId, Proposal, Raft};

/// How long one join attempt may take at the leader (adding the learner and waiting until it
/// caught up included).
const JOIN_ATTEMPT: Duration = Duration::from_secs(60);
/// How often a keep-alive of an expired lease looks whether its revoke has been applied.
const EXPIRED_LEASE_POLL: Duration = Duration::from_millis(20);
/// How long a restarting member in join mode looks for its cluster to check the cluster id.
const DISCOVER_WITH_LOCAL_DATA: Duration = Duration::from_secs(3);

/// The role of a member in [`RaftStatus`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberRole {
    Leader,
    Follower,
    Learner,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberStatus {
    pub id: MemberId,
    pub member: Member,
    pub role: MemberRole,
}

/// A member's view of the cluster, from its latest Raft metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RaftStatus {
    pub member_id: MemberId,
    pub cluster_id: u64,
    pub leader_id: Option<MemberId>,
    pub term: u64,
    /// 0 = nothing committed yet (log indexes start at 0 with the initial membership).
    pub commit_index: u64,
    pub applied_index: u64,
    pub last_log_index: u64,
    /// Sorted by id. Voters that are not the leader are `Follower`s.
    pub members: Vec<MemberStatus>,
    pub is_learner: bool,
    /// Times this member saw the leader change from one known member to another.
    pub leader_changes: u64,
}

/// Progress of joining an existing cluster.
#[derive(Clone, Debug)]
enum JoinState {
    Pending,
    Done,
    Failed(RaftError),
}

/// An attempt's failure, and whether trying again (maybe at another leader) is safe.
struct Attempt {
    err: RaftError,
    retry: bool,
}

impl Attempt {
    fn retry(err: RaftError) -> Attempt {
        Attempt { err, retry: true }
    }
    fn fail(err: RaftError) -> Attempt {
        Attempt { err, retry: false }
    }
    /// Retry exactly when the error says the request was not proposed.
    fn classify(err: RaftError) -> Attempt {
        let retry = err.safe_to_retry();
        Attempt { err, retry }
    }
}

/// Back-off between attempts, bounded by the operation's deadline.
struct Retry {
    deadline: Instant,
    backoff: Duration,
}

impl Retry {
    fn new(deadline: Instant) -> Retry {
        Retry {
            deadline,
            backoff: Duration::from_millis(10),
        }
    }

    /// Waits before the next attempt, or gives up with `err` at the deadline.
    async fn wait(&mut self, err: RaftError) -> Result<(), RaftError> {
        let now = Instant::now();
        if now >= self.deadline {
            return Err(err);
        }
        tokio::time::sleep(self.backoff.min(self.deadline - now)).await;
        self.backoff = (self.backoff * 2).min(Duration::from_millis(100));
        Ok(())
    }
}

pub(crate) struct Inner {
    cfg: RaftConfig,
    id: MemberId,
    cluster_id: u64,
    me: Member,
    raft: Raft,
    store: Arc<Store>,
    transport: Arc<dyn PeerTransport>,
    pub(crate) leases: Arc<Leases>,
    committed: Arc<AtomicU64>,
    /// Gathers concurrent proposals into shared log entries.
    proposals: Arc<crate::batch::ProposalBatcher>,
    /// Coalesces concurrent linearizable reads into shared read-index rounds.
    reads: Arc<crate::read_index::ReadBatcher>,
    /// Times this member saw the leader change to another known member.
    leader_changes: AtomicU64,
    /// Held by the state machine; its count tells when openraft released it.
    sm_token: Arc<()>,
    stop: watch::Sender<bool>,
    join_state: watch::Sender<JoinState>,
    tasks: parking_lot::Mutex<Vec<JoinHandle<()>>>,
}

impl Drop for Inner {
    /// The last handle went away without [`RaftHandle::shutdown`]: stop Raft anyway, so that
    /// it releases the store.
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let raft = self.raft.clone();
            rt.spawn(async move {
                let _ = raft.shutdown().await;
            });
        }
    }
}

/// The handle the API server uses: one running member. Cheap to clone.
#[derive(Clone)]
pub struct RaftHandle {
    pub(crate) inner: Arc<Inner>,
}

fn read_cluster_id(path: &Path) -> Result<Option<u64>, RaftError> {
    match fs::read_to_string(path) {
        Ok(s) => u64::from_str_radix(s.trim(), 16)
            .map(Some)
            .map_err(|e| RaftError::Storage(format!("{}: bad cluster id {s:?}: {e}", path.display()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(RaftError::Storage(format!("{}: {e}", path.display()))),
    }
}

fn write_cluster_id(dir: &Path, id: u64) -> Result<(), RaftError> {
    let io = |e: io::Error| RaftError::Storage(format!("{}: {e}", dir.display()));
    let tmp = dir.join("cluster_id.tmp");
    let mut f = fs::File::create(&tmp).map_err(io)?;
    writeln!(f, "{id:016x}").map_err(io)?;
    f.sync_all().map_err(io)?;
    fs::rename(&tmp, dir.join("cluster_id")).map_err(io)?;
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)
}

fn map_client_write_error(e: OpenRaftError<MemberId, ClientWriteError<MemberId, Member>>) -> RaftError {
    use openraft::error::ChangeMembershipError as C;
    match e {
        OpenRaftError::APIError(ClientWriteError::ForwardToLeader(f)) => RaftError::NotLeader {
            leader_id: f.leader_id,
            leader: f.leader_node,
        },
        OpenRaftError::APIError(ClientWriteError::ChangeMembershipError(c)) => match c {
            C::InProgress(p) => RaftError::MembershipChangeInProgress(p.to_string()),
            C::LearnerNotFound(l) => RaftError::MemberNotFound(l.node_id),
            C::EmptyMembership(e) => RaftError::Config(e.to_string()),
        },
        OpenRaftError::Fatal(f) => f.into(),
    }
}

fn map_check_leader_error(e: OpenRaftError<MemberId, CheckIsLeaderError<MemberId, Member>>) -> RaftError {
    match e {
        OpenRaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)) => RaftError::NotLeader {
            leader_id: f.leader_id,
            leader: f.leader_node,
        },
        OpenRaftError::APIError(CheckIsLeaderError::QuorumNotEnough(q)) => {
            RaftError::Unavailable(q.to_string())
        }
        OpenRaftError::Fatal(f) => f.into(),
    }
}

fn deadline_after_ms(ms: u64) -> Instant {
    Instant::now() + Duration::from_millis(ms)
}

fn remaining_ms(deadline: Instant) -> u64 {
    deadline.saturating_duration_since(Instant::now()).as_millis() as u64
}

fn encode<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, RaftError> {
    Ok(bincode::serialize(v)?)
}

impl RaftHandle {
    /// Starts this member: checks the data dir's cluster id, opens the store and the log,
    /// starts Raft, and bootstraps (initial cluster) or joins (join mode).
    ///
    /// With `initial_cluster`, every member initializes the same membership (a restart with
    /// an existing data dir resumes instead). In join mode the join runs in the background,
    /// because the caller must first route inbound peer messages to the returned handle; see
    /// [`RaftHandle::joined`].
    pub async fn start(cfg: RaftConfig, transport: Arc<dyn PeerTransport>) -> Result<RaftHandle, RaftError> {
        cfg.validate()?;
        let id = member_id(&cfg.peer_addr);
        let me = Member {
            name: cfg.name.clone(),
            peer_addr: cfg.peer_addr.clone(),
            client_addr: cfg.client_addr.clone(),
        };
        fs::create_dir_all(&cfg.data_dir)
            .map_err(|e| RaftError::Storage(format!("{}: {e}", cfg.data_dir.display())))?;
        let local_cid = read_cluster_id(&cfg.data_dir.join("cluster_id"))?;
        let db_path = cfg.data_dir.join("db");

        // Decide the cluster id before touching anything.
        let cid = if cfg.is_join() {
            let remote = discover(&cfg, transport.as_ref(), local_cid.is_some()).await?;
            match (local_cid, remote) {
                (Some(local), Some(info)) if local != info.cluster_id => {
                    return Err(RaftError::ClusterIdMismatch {
                        local,
                        other: info.cluster_id,
                    })
                }
                (Some(local), _) => local,
                (None, Some(info)) => info.cluster_id,
                (None, None) => unreachable!("discover fails without local data"),
            }
        } else {
            let c = cluster_id(&cfg.effective_initial_cluster());
            if let Some(local) = local_cid {
                if local != c {
                    return Err(RaftError::ClusterIdMismatch { local, other: c });
                }
            }
            c
        };
        let seeded = cfg.data_dir.join(crate::seed::SEEDED_FILE);
        if local_cid.is_none() {
            // A data dir seeded from a backup has a database but no cluster yet: it founds
            // the cluster its first --initial-cluster names (never joins one).
            let founding_from_seed = seeded.exists() && !cfg.is_join();
            if db_path.exists() && !founding_from_seed {
                return Err(RaftError::Config(format!(
                    "{} holds a database but no cluster_id file; refusing to guess its cluster",
                    cfg.data_dir.display()
                )));
            }
            write_cluster_id(&cfg.data_dir, cid)?;
            if founding_from_seed {
                fs::remove_file(&seeded)
                    .map_err(|e| RaftError::Storage(format!("{}: {e}", seeded.display())))?;
            }
        }

        let store = Store::open(StoreConfig {
            path: db_path,
            extra_column_families: vec![LOG_CF.to_string(), META_CF.to_string()],
            watch_queue_len: WATCH_QUEUE_LEN_DEFAULT,
        })?;
        let committed = Arc::new(AtomicU64::new(0));
        let storage = |e: openraft::StorageError<MemberId>| RaftError::Storage(e.to_string());
        // Before anything can write: a member whose WAL lost acknowledged records must not run.
        let durable = open_durable_mark(&cfg.data_dir, store.db())?;
        let syncer = Syncer::spawn(store.db(), Some(durable), cfg.fsync_observer.clone())
            .map_err(|e| RaftError::Storage(e.to_string()))?;
        let log = LogStore::new(store.db().clone(), syncer, committed.clone()).map_err(storage)?;
        let leases = Arc::new(Leases::new());
        let sm_token = Arc::new(());
        let sm = StateMachine::new(
            store.clone(),
            &cfg.data_dir.join("snapshot"),
            leases.clone(),
            sm_token.clone(),
        )
        .map_err(storage)?;

        let raft_config = openraft::Config {
            cluster_name: format!("berth-{cid:016x}"),
            heartbeat_interval: cfg.heartbeat_interval_ms,
            election_timeout_min: cfg.election_timeout_min_ms,
            election_timeout_max: cfg.election_timeout_max_ms,
            install_snapshot_timeout: (cfg.election_timeout_max_ms * 10).max(2_000),
            snapshot_policy: SnapshotPolicy::LogsSinceLast(cfg.snapshot_every_logs),
            max_in_snapshot_log_to_keep: (cfg.snapshot_every_logs / 10).min(1_000),
            purge_batch_size: (cfg.snapshot_every_logs / 10).clamp(1, 256),
            replication_lag_threshold: 1_000,
            // Well under gRPC's default 4 MiB message limit.
            snapshot_max_chunk_size: 1024 * 1024,
            ..Default::default()
        }
        .validate()
        .map_err(|e| RaftError::Config(e.to_string()))?;
        let network = Network {
            transport: transport.clone(),
            cluster_id: cid,
            self_id: id,
            backoff: Duration::from_millis(cfg.election_timeout_min_ms),
        };
        let raft = Raft::new(id, Arc::new(raft_config), network, log, sm).await?;

        let join = cfg.is_join() && !raft.is_initialized().await?;
        if !cfg.is_join() && !raft.is_initialized().await? {
            // Every member initializes the same membership (client addresses are filled in
            // later by each member itself), so the first log entry is identical everywhere.
            let members: BTreeMap<MemberId, Member> = cfg
                .effective_initial_cluster()
                .into_iter()
                .map(|(name, peer_addr)| {
                    let m = Member {
                        name,
                        peer_addr,
                        client_addr: String::new(),
                    };
                    (member_id(&m.peer_addr), m)
                })
                .collect();
            match raft.initialize(members).await {
                Ok(()) => {
                    tracing::info!(cluster_id = %format!("{cid:016x}"), "initialized a new cluster")
                }
                Err(OpenRaftError::APIError(InitializeError::NotAllowed(_))) => {}
                Err(e) => {
                    let _ = raft.shutdown().await;
                    return Err(match e {
                        OpenRaftError::APIError(e) => RaftError::Config(e.to_string()),
                        OpenRaftError::Fatal(f) => f.into(),
                    });
                }
            }
        }

        let (stop, _) = watch::channel(false);
        let (join_state, _) = watch::channel(if join { JoinState::Pending } else { JoinState::Done });
        let handle = RaftHandle {
            inner: Arc::new(Inner {
                cfg,
                id,
                cluster_id: cid,
                me,
                raft,
                store,
                transport,
                leases,
                committed,
                leader_changes: AtomicU64::new(0),
                reads: Arc::default(),
                proposals: Arc::default(),
                sm_token,
                stop,
                join_state,
                tasks: parking_lot::Mutex::new(Vec::new()),
            }),
        };
        let weak = Arc::downgrade(&handle.inner);
        let duties = tokio::spawn(leader_duties(weak.clone(), handle.inner.stop.subscribe()));
        let membership = tokio::spawn(membership_task(weak, handle.inner.stop.subscribe(), join));
        handle.inner.tasks.lock().extend([duties, membership]);
        tracing::info!(member = %handle.inner.me, id = %format!("{id:016x}"), join, "raft member started");
        Ok(handle)
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.inner.store
    }

    pub fn member_id(&self) -> u64 {
        self.inner.id
    }

    pub fn cluster_id(&self) -> u64 {
        self.inner.cluster_id
    }

    /// The underlying openraft instance (metrics, waits), for tests and diagnostics.
    pub fn raft(&self) -> &Raft {
        &self.inner.raft
    }

    /// In join mode, waits until this member was added (as a voter, or as a learner with
    /// `join_as_learner`), or the join failed for good (e.g. another member holds its name).
    /// Returns at once otherwise.
    pub async fn joined(&self) -> Result<(), RaftError> {
        let mut rx = self.inner.join_state.subscribe();
        let state = rx
            .wait_for(|s| !matches!(s, JoinState::Pending))
            .await
            .map_err(|_| RaftError::Fatal("member stopped".into()))?
            .clone();
        match state {
            JoinState::Failed(e) => Err(e),
            _ => Ok(()),
        }
    }

    fn deadline(&self) -> Instant {
        deadline_after_ms(self.inner.cfg.request_timeout_ms)
    }

    /// The leader this member knows of, with its membership record.
    fn leader(&self) -> Option<(MemberId, Option<Member>)> {
        let m = self.inner.raft.metrics();
        let m = m.borrow();
        let id = m.current_leader?;
        Some((id, m.membership_config.membership().get_node(&id).cloned()))
    }

    /// Whether this member is the leader (by its latest metrics).
    pub fn is_leader(&self) -> bool {
        let m = self.inner.raft.metrics();
        let m = m.borrow();
        m.current_leader == Some(self.inner.id) && m.state == ServerState::Leader
    }

    fn not_leader(&self) -> RaftError {
        match self.leader() {
            Some((id, node)) if id != self.inner.id => RaftError::NotLeader {
                leader_id: Some(id),
                leader: node,
            },
            _ => RaftError::NoLeader,
        }
    }

    // ---- requests served by the leader -------------------------------------------------

    /// Proposes a command and returns the store's answer once it is applied on the leader.
    /// On a follower the command is forwarded to the leader. It is retried across leader
    /// changes only while it certainly was not proposed, so it is never applied twice; a
    /// [`RaftError::Timeout`] or [`RaftError::Transport`] leaves the outcome unknown.
    ///
    /// `LeaseGrant` with id 0 gets a random positive id here; its TTL is raised to
    /// `min_lease_ttl_secs`.
    pub async fn propose(&self, cmd: Command) -> Result<Result<CommandResult, ApplyError>, RaftError> {
        let cmd = match cmd {
            Command::LeaseGrant { id, ttl_secs } => Command::LeaseGrant {
                id: if id == 0 {
                    rand::thread_rng().gen_range(1..=i64::MAX)
                } else {
                    id
                },
                ttl_secs: ttl_secs.max(self.inner.cfg.min_lease_ttl_secs),
            },
            other => other,
        };
        let deadline = self.deadline();
        let handle = self.clone();
        // The driver may outlive this call and send many batches: each gets its own deadline.
        let send =
            move |cmds: Vec<Command>| -> futures::future::BoxFuture<'static, crate::batch::BatchResult> {
                let h = handle.clone();
                Box::pin(async move {
                    match h
                        .on_leader(LeaderRequest::ProposeBatch(cmds), h.deadline())
                        .await?
                    {
                        LeaderResponse::AppliedBatch(r) => Ok(r),
                        other => Err(unexpected(&other)),
                    }
                })
            };
        match tokio::time::timeout_at(deadline, self.inner.proposals.propose(cmd, send)).await {
            Err(_) => Err(RaftError::Timeout(
                "the write was not applied before the deadline; it may still be".into(),
            )),
            Ok(r) => r,
        }
    }

    /// Adds a member. Without `as_learner`: adds it as a learner, waits until it caught up,
    /// then promotes it to voter. Returns its record.
    pub async fn add_member(
        &self,
        name: String,
        peer_addr: String,
        client_addr: String,
        as_learner: bool,
    ) -> Result<Member, RaftError> {
        let member = Member {
            name,
            peer_addr,
            client_addr,
        };
        let req = LeaderRequest::AddMember {
            member,
            as_learner,
            join: false,
        };
        match self.on_leader(req, self.deadline()).await? {
            LeaderResponse::Member(m) => Ok(m),
            other => Err(unexpected(&other)),
        }
    }

    /// etcd's MemberAdd: adds a member known only by its peer address, without waiting for it
    /// to start; a `berth server --join` with that `--peer-addr` then takes its place.
    pub async fn add_unstarted_member(
        &self,
        peer_addr: String,
        as_learner: bool,
    ) -> Result<Member, RaftError> {
        let member = Member {
            name: String::new(),
            peer_addr,
            client_addr: String::new(),
        };
        let req = LeaderRequest::AddUnstarted { member, as_learner };
        match self.on_leader(req, self.deadline()).await? {
            LeaderResponse::Member(m) => Ok(m),
            other => Err(unexpected(&other)),
        }
    }

    /// Makes a learner a voter (a voter stays one).
    pub async fn promote_member(&self, id: MemberId) -> Result<(), RaftError> {
        self.on_leader(LeaderRequest::Promote(id), self.deadline())
            .await
            .map(|_| ())
    }

    /// Removes a voter or a learner.
    pub async fn remove_member(&self, id: MemberId) -> Result<(), RaftError> {
        self.on_leader(LeaderRequest::Remove(id), self.deadline())
            .await
            .map(|_| ())
    }

    /// Renews a lease on the leader's lessor; returns its TTL in seconds.
    pub async fn lease_keepalive(&self, id: LeaseId) -> Result<i64, RaftError> {
        match self
            .on_leader(LeaderRequest::LeaseKeepAlive(id), self.deadline())
            .await?
        {
            LeaderResponse::KeepAlive(ttl) => Ok(ttl),
            other => Err(unexpected(&other)),
        }
    }

    /// `(granted TTL, remaining seconds)` of a lease, from the leader.
    pub async fn lease_time_to_live(&self, id: LeaseId) -> Result<(i64, i64), RaftError> {
        match self
            .on_leader(LeaderRequest::LeaseTimeToLive(id), self.deadline())
            .await?
        {
            LeaderResponse::TimeToLive { granted, remaining } => Ok((granted, remaining)),
            other => Err(unexpected(&other)),
        }
    }

    /// Runs `req` on the leader: here, or forwarded; retried while that is safe.
    async fn on_leader(&self, req: LeaderRequest, deadline: Instant) -> Result<LeaderResponse, RaftError> {
        let mut retry = Retry::new(deadline);
        loop {
            let attempt = match self.leader() {
                Some((id, _)) if id == self.inner.id => self
                    .serve_leader(req.clone(), deadline)
                    .await
                    .map_err(Attempt::classify),
                Some((id, Some(node))) => self.forward(id, &node.peer_addr, &req, deadline).await,
                _ => Err(Attempt::retry(RaftError::NoLeader)),
            };
            match attempt {
                Ok(r) => return Ok(r),
                Err(a) if a.retry || (req.idempotent() && is_transient(&a.err)) => retry.wait(a.err).await?,
                Err(a) => return Err(a.err),
            }
        }
    }

    /// Forwards `req` to the leader `leader_id` at `addr`. The call is abandoned as soon as
    /// this member knows another leader: an old leader cut off by a partition may never
    /// answer, and its forwards would otherwise hold the batcher's in-flight slots until
    /// their deadline while the new leader could already serve (JEPSEN.md, bug 4). An
    /// abandoned write may have been delivered, so it ends indeterminate, never retried.
    async fn forward(
        &self,
        leader_id: MemberId,
        addr: &str,
        req: &LeaderRequest,
        deadline: Instant,
    ) -> Result<LeaderResponse, Attempt> {
        let body = Forwarded {
            timeout_ms: remaining_ms(deadline),
            req: req.clone(),
        };
        let payload = encode_request(self.inner.cluster_id, &body).map_err(Attempt::fail)?;
        let call = self.inner.transport.call(addr, PeerRpc::Forward, payload);
        let answer = tokio::select! {
            a = tokio::time::timeout_at(deadline, call) => a,
            () = self.leader_moved_from(leader_id) => {
                let err = RaftError::Transport(format!(
                    "abandoned the request forwarded to {addr}: another leader was elected \
                     (it may still be applied)"
                ));
                return Err(if req.idempotent() { Attempt::retry(err) } else { Attempt::fail(err) });
            }
        };
        let bytes = match answer {
            Err(_) => {
                return Err(Attempt::fail(RaftError::Timeout(format!(
                    "no answer from the leader at {addr} before the deadline"
                ))))
            }
            Ok(Err(e @ (TransportError::Unreachable(_) | TransportError::Remote(_)))) => {
                return Err(Attempt::retry(RaftError::Transport(e.to_string())))
            }
            Ok(Err(e @ TransportError::Network(_))) => {
                let err = RaftError::Transport(e.to_string());
                return Err(if req.idempotent() {
                    Attempt::retry(err)
                } else {
                    Attempt::fail(err)
                });
            }
            Ok(Ok(b)) => b,
        };
        let res: Result<LeaderResponse, RaftError> =
            bincode::deserialize(&bytes).map_err(|e| Attempt::fail(RaftError::Protocol(e.to_string())))?;
        res.map_err(Attempt::classify)
    }

    /// Resolves once this member knows a leader other than `old` (itself included). Pending
    /// forever if the Raft core stopped (the caller's deadline ends the wait then).
    async fn leader_moved_from(&self, old: MemberId) {
        let mut metrics = self.inner.raft.metrics();
        let moved = metrics
            .wait_for(|m| m.current_leader.is_some_and(|l| l != old))
            .await
            .is_ok();
        if !moved {
            std::future::pending::<()>().await;
        }
    }

    /// Serves a leader request locally; `NotLeader` if this member is not the leader.
    async fn serve_leader(&self, req: LeaderRequest, deadline: Instant) -> Result<LeaderResponse, RaftError> {
        if !self.is_leader() {
            return Err(self.not_leader());
        }
        let raft = &self.inner.raft;
        match req {
            LeaderRequest::ProposeBatch(cmds) => {
                let n = cmds.len();
                match tokio::time::timeout_at(deadline, raft.client_write(Proposal(cmds))).await {
                    Err(_) => Err(RaftError::Timeout(
                        "the write was not applied before the deadline; it may still be".into(),
                    )),
                    Ok(Ok(resp)) if resp.data.len() == n => Ok(LeaderResponse::AppliedBatch(resp.data)),
                    Ok(Ok(resp)) => panic!("a proposal of {n} commands got {} results", resp.data.len()),
                    Ok(Err(e)) => Err(map_client_write_error(e)),
                }
            }
            LeaderRequest::AddMember {
                member,
                as_learner,
                join,
            } => self.leader_add_member(member, as_learner, join, deadline).await,
            LeaderRequest::AddUnstarted { member, as_learner } => {
                self.leader_add_unstarted(member, as_learner, deadline).await
            }
            LeaderRequest::Promote(id) => {
                let (exists, voter) = self.membership_of(id);
                if !exists {
                    return Err(RaftError::MemberNotFound(id));
                }
                if !voter {
                    self.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), deadline)
                        .await?;
                }
                Ok(LeaderResponse::Done)
            }
            LeaderRequest::Remove(id) => {
                let (exists, voter) = self.membership_of(id);
                if !exists {
                    return Err(RaftError::MemberNotFound(id));
                }
                let change = if voter {
                    ChangeMembers::RemoveVoters(BTreeSet::from([id]))
                } else {
                    ChangeMembers::RemoveNodes(BTreeSet::from([id]))
                };
                self.change_membership(change, deadline).await?;
                Ok(LeaderResponse::Done)
            }
            LeaderRequest::UpdateMember(member) => {
                let id = member_id(&member.peer_addr);
                let recorded = {
                    let m = raft.metrics();
                    let m = m.borrow();
                    m.membership_config.membership().get_node(&id).cloned()
                };
                match recorded {
                    None => Err(RaftError::MemberNotFound(id)),
                    Some(r) if r == member => Ok(LeaderResponse::Done),
                    Some(_) => {
                        self.change_membership(
                            ChangeMembers::SetNodes(BTreeMap::from([(id, member)])),
                            deadline,
                        )
                        .await?;
                        Ok(LeaderResponse::Done)
                    }
                }
            }
            LeaderRequest::LeaseKeepAlive(id) => {
                self.confirm_leader(deadline).await?;
                self.renew_lease(id, deadline).await
            }
            LeaderRequest::LeaseTimeToLive(id) => {
                self.confirm_leader(deadline).await?;
                let (lease, _keys) = self.inner.store.lease(id).ok_or(RaftError::LeaseNotFound)?;
                match self.inner.leases.remaining_secs(id) {
                    None => Err(RaftError::NoLeader),
                    Some(remaining) => Ok(LeaderResponse::TimeToLive {
                        granted: lease.ttl_secs,
                        remaining: remaining.unwrap_or(-1),
                    }),
                }
            }
        }
    }

    /// A keep-alive on the leader's lessor. A lease past its deadline is not renewed: its
    /// revoke is due or already proposed (perhaps uncommitted, waiting for a quorum) and may
    /// commit right after an answer "TTL n" (JEPSEN.md bug 5). The keep-alive waits until the
    /// revoke is applied ("not found"), leadership is lost, or the deadline passes.
    async fn renew_lease(&self, id: LeaseId, deadline: Instant) -> Result<LeaderResponse, RaftError> {
        loop {
            match self.inner.leases.renew(id) {
                None => return Err(RaftError::NoLeader),
                Some(Renewal::Unknown) => return Err(RaftError::LeaseNotFound),
                Some(Renewal::Renewed(ttl)) => return Ok(LeaderResponse::KeepAlive(ttl)),
                Some(Renewal::Expired) if Instant::now() >= deadline => {
                    return Err(RaftError::Timeout(
                        "the lease expired and its revoke is not applied yet".into(),
                    ))
                }
                Some(Renewal::Expired) => tokio::time::sleep(EXPIRED_LEASE_POLL).await,
            }
        }
    }

    /// Confirms leadership with a heartbeat quorum and waits until everything committed
    /// before is applied here.
    async fn confirm_leader(&self, deadline: Instant) -> Result<(), RaftError> {
        match tokio::time::timeout_at(deadline, self.inner.raft.ensure_linearizable()).await {
            Err(_) => Err(RaftError::Timeout(
                "leadership not confirmed before the deadline".into(),
            )),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(map_check_leader_error(e)),
        }
    }

    /// (in the membership, is a voter)
    fn membership_of(&self, id: MemberId) -> (bool, bool) {
        let m = self.inner.raft.metrics();
        let m = m.borrow();
        let mem = m.membership_config.membership();
        (mem.get_node(&id).is_some(), mem.voter_ids().any(|v| v == id))
    }

    async fn change_membership(
        &self,
        change: ChangeMembers<MemberId, Member>,
        deadline: Instant,
    ) -> Result<(), RaftError> {
        match tokio::time::timeout_at(deadline, self.inner.raft.change_membership(change, false)).await {
            Err(_) => Err(RaftError::Timeout(
                "membership change not committed before the deadline; it may still be".into(),
            )),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(map_client_write_error(e)),
        }
    }

    async fn leader_add_unstarted(
        &self,
        member: Member,
        as_learner: bool,
        deadline: Instant,
    ) -> Result<LeaderResponse, RaftError> {
        let id = member_id(&member.peer_addr);
        if self.membership_of(id).0 {
            return Err(RaftError::MemberExists {
                id,
                name: member.name,
            });
        }
        match tokio::time::timeout_at(deadline, self.inner.raft.add_learner(id, member.clone(), false)).await
        {
            Err(_) => {
                return Err(RaftError::Timeout(
                    "adding the member was not committed in time".into(),
                ))
            }
            Ok(Err(e)) => return Err(map_client_write_error(e)),
            Ok(Ok(_)) => {}
        }
        if !as_learner {
            self.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), deadline)
                .await?;
        }
        tracing::info!(member = %member, voter = !as_learner, "unstarted member added");
        Ok(LeaderResponse::Member(member))
    }

    async fn leader_add_member(
        &self,
        member: Member,
        as_learner: bool,
        join: bool,
        deadline: Instant,
    ) -> Result<LeaderResponse, RaftError> {
        let id = member_id(&member.peer_addr);
        let existing = {
            let m = self.inner.raft.metrics();
            let m = m.borrow();
            m.membership_config.membership().get_node(&id).cloned()
        };
        if let Some(existing) = existing {
            // A retried join of the same member continues where it stopped.
            if !join || existing.peer_addr != member.peer_addr {
                return Err(RaftError::MemberExists {
                    id,
                    name: member.name,
                });
            }
            // Never demotes: a voter that joins again stays a voter.
            if self.membership_of(id).1 {
                return Ok(LeaderResponse::Member(existing));
            }
        }
        match tokio::time::timeout_at(deadline, self.inner.raft.add_learner(id, member.clone(), true)).await {
            Err(_) => {
                return Err(RaftError::Timeout(format!(
                    "{} was added as a learner but did not catch up before the deadline",
                    member.name
                )))
            }
            Ok(Err(e)) => return Err(map_client_write_error(e)),
            Ok(Ok(_)) => {}
        }
        if !as_learner {
            self.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), deadline)
                .await?;
        }
        tracing::info!(member = %member, voter = !as_learner, "member added");
        Ok(LeaderResponse::Member(member))
    }

    /// Leader side of [`RaftHandle::read_linearizable`] for a follower.
    async fn serve_read_index(&self, deadline: Instant) -> Result<ReadIndexResponse, RaftError> {
        if !self.is_leader() {
            return Err(self.not_leader());
        }
        // Followers' reads join the leader's own shared rounds.
        Ok(ReadIndexResponse {
            read_index: self.shared_read_index(deadline).await?,
        })
    }

    /// Returns once a read of the local store sees every write acknowledged before the call:
    /// on the leader, after confirming leadership with a heartbeat quorum; on a follower,
    /// after asking the leader for its read index and applying up to it.
    pub async fn read_linearizable(&self) -> Result<(), RaftError> {
        let deadline = self.deadline();
        let mut retry = Retry::new(deadline);
        loop {
            let res = match self.shared_read_index(deadline).await {
                Ok(index) => self.wait_applied(index, deadline).await,
                Err(e) => Err(e),
            };
            match res {
                Ok(()) => return Ok(()),
                // A read changes nothing: any failure but a fatal one may be retried.
                Err(e @ RaftError::Fatal(_)) => return Err(e),
                Err(e) => retry.wait(e).await?,
            }
        }
    }

    /// A read index from a round that started after this call, shared with every other read
    /// waiting for one (see [`crate::read_index`]).
    async fn shared_read_index(&self, deadline: Instant) -> Result<Option<u64>, RaftError> {
        let handle = self.clone();
        let fetch = move || -> futures::future::BoxFuture<'static, crate::read_index::ReadIndex> {
            let h = handle.clone();
            Box::pin(async move { h.fetch_read_index().await })
        };
        tokio::time::timeout_at(deadline, self.inner.reads.read_index(fetch))
            .await
            .map_err(|_| RaftError::Timeout("no read index before the deadline".into()))?
    }

    /// One read-index round: the leader confirms its leadership with a heartbeat quorum; a
    /// follower asks the leader.
    async fn fetch_read_index(&self) -> Result<Option<u64>, RaftError> {
        let deadline = self.deadline();
        match self.leader() {
            Some((id, _)) if id == self.inner.id => self.leader_read_index(deadline).await,
            Some((id, Some(node))) => {
                // A round waiting on a leader that was replaced ends at once (a read is safe
                // to retry: the readers' loops start a new round at the new leader).
                tokio::select! {
                    r = self.remote_read_index(&node.peer_addr, deadline) => r,
                    () = self.leader_moved_from(id) => Err(RaftError::NotLeader {
                        leader_id: self.leader().map(|(l, _)| l),
                        leader: self.leader().and_then(|(_, n)| n),
                    }),
                }
            }
            _ => Err(RaftError::NoLeader),
        }
    }

    async fn leader_read_index(&self, deadline: Instant) -> Result<Option<u64>, RaftError> {
        match tokio::time::timeout_at(deadline, self.inner.raft.get_read_log_id()).await {
            Err(_) => Err(RaftError::Timeout(
                "leadership not confirmed before the deadline".into(),
            )),
            Ok(Ok((read_log_id, _))) => Ok(read_log_id.map(|l| l.index)),
            Ok(Err(e)) => Err(map_check_leader_error(e)),
        }
    }

    async fn remote_read_index(&self, addr: &str, deadline: Instant) -> Result<Option<u64>, RaftError> {
        let payload = encode_request(
            self.inner.cluster_id,
            &ReadIndexRequest {
                timeout_ms: remaining_ms(deadline),
            },
        )?;
        let call = self.inner.transport.call(addr, PeerRpc::ReadIndex, payload);
        let bytes = tokio::time::timeout_at(deadline, call)
            .await
            .map_err(|_| RaftError::Timeout(format!("no read index from the leader at {addr}")))?
            .map_err(|e| RaftError::Transport(e.to_string()))?;
        let res: Result<ReadIndexResponse, RaftError> = bincode::deserialize(&bytes)?;
        Ok(res?.read_index)
    }

    /// Waits until the local state machine has applied up to `index`.
    async fn wait_applied(&self, index: Option<u64>, deadline: Instant) -> Result<(), RaftError> {
        let Some(index) = index else {
            return Ok(());
        };
        self.inner
            .raft
            .wait(Some(deadline.saturating_duration_since(Instant::now())))
            .applied_index_at_least(Some(index), "read index")
            .await
            .map(|_| ())
            .map_err(|e| match e {
                openraft::metrics::WaitError::Timeout(..) => RaftError::Timeout(format!(
                    "not applied up to the read index {index} before the deadline"
                )),
                openraft::metrics::WaitError::ShuttingDown => RaftError::Fatal("member stopped".into()),
            })
    }

    // ---- status --------------------------------------------------------------------------

    pub fn status(&self) -> RaftStatus {
        let m = self.inner.raft.metrics();
        let m = m.borrow();
        let mem = m.membership_config.membership();
        let voters: BTreeSet<MemberId> = mem.voter_ids().collect();
        let members = mem
            .nodes()
            .map(|(id, node)| MemberStatus {
                id: *id,
                member: node.clone(),
                role: if m.current_leader == Some(*id) {
                    MemberRole::Leader
                } else if voters.contains(id) {
                    MemberRole::Follower
                } else {
                    MemberRole::Learner
                },
            })
            .collect();
        let applied = m.last_applied.as_ref().map_or(0, |l| l.index);
        RaftStatus {
            member_id: self.inner.id,
            cluster_id: self.inner.cluster_id,
            leader_id: m.current_leader,
            term: m.current_term,
            commit_index: self
                .inner
                .committed
                .load(Ordering::Relaxed)
                .saturating_sub(1)
                .max(applied),
            applied_index: applied,
            last_log_index: m.last_log_index.unwrap_or(0),
            members,
            is_learner: mem.get_node(&self.inner.id).is_some() && !voters.contains(&self.inner.id),
            leader_changes: self.inner.leader_changes.load(Ordering::Relaxed),
        }
    }

    fn cluster_info(&self) -> ClusterInfo {
        let m = self.inner.raft.metrics();
        let m = m.borrow();
        let mem = m.membership_config.membership();
        let voters: BTreeSet<MemberId> = mem.voter_ids().collect();
        ClusterInfo {
            cluster_id: self.inner.cluster_id,
            leader_id: m.current_leader,
            members: mem
                .nodes()
                .map(|(id, n)| (*id, n.clone(), voters.contains(id)))
                .collect(),
        }
    }

    // ---- inbound peer messages -------------------------------------------------------------

    fn decode_checked<T: serde::de::DeserializeOwned>(&self, payload: &[u8]) -> Result<T, RaftError> {
        let (cid, req): (u64, T) = decode_request(payload)?;
        if cid != self.inner.cluster_id {
            return Err(RaftError::ClusterIdMismatch {
                local: self.inner.cluster_id,
                other: cid,
            });
        }
        Ok(req)
    }

    /// Serves one inbound peer message (the API server's Peer service calls this). `Err` only
    /// when the message is refused as a whole (malformed, or from another cluster); the
    /// outcome of a well-formed request, error or not, is in the returned payload.
    pub async fn handle_peer(&self, rpc: PeerRpc, payload: Vec<u8>) -> Result<Vec<u8>, RaftError> {
        let raft = &self.inner.raft;
        let max_wait = self
            .inner
            .cfg
            .request_timeout_ms
            .max(JOIN_ATTEMPT.as_millis() as u64);
        match rpc {
            PeerRpc::AppendEntries => encode(&raft.append_entries(self.decode_checked(&payload)?).await),
            PeerRpc::Vote => encode(&raft.vote(self.decode_checked(&payload)?).await),
            PeerRpc::InstallSnapshot => encode(&raft.install_snapshot(self.decode_checked(&payload)?).await),
            PeerRpc::Forward => {
                let f: Forwarded = self.decode_checked(&payload)?;
                let deadline = deadline_after_ms(f.timeout_ms.min(max_wait));
                encode(&self.serve_leader(f.req, deadline).await)
            }
            PeerRpc::ReadIndex => {
                let r: ReadIndexRequest = self.decode_checked(&payload)?;
                let deadline = deadline_after_ms(r.timeout_ms.min(max_wait));
                encode(&self.serve_read_index(deadline).await)
            }
            PeerRpc::Join => {
                let j: JoinRequest = self.decode_checked(&payload)?;
                let deadline = deadline_after_ms(j.timeout_ms.min(max_wait));
                let req = LeaderRequest::AddMember {
                    member: j.member,
                    as_learner: j.as_learner,
                    join: true,
                };
                let res = self.on_leader(req, deadline).await.map(|_| self.cluster_info());
                encode(&res)
            }
            PeerRpc::Members => {
                // Open to any cluster id: a new member asks this before it knows one.
                let (_, ()): (u64, ()) = decode_request(&payload)?;
                encode(&Ok::<_, RaftError>(self.cluster_info()))
            }
        }
    }

    /// Resolves when this member's Raft core has stopped for good: after [`Self::shutdown`],
    /// or when the core died (a panic, a fatal storage error). A member in that state can
    /// only answer "server stopped", so the process should exit and be restarted rather than
    /// linger as a voter that never votes (seen under the jepsen disk nemesis).
    pub async fn core_stopped(&self) {
        let mut metrics = self.inner.raft.metrics();
        // The core owns the sending side: it is dropped when the core ends, however it ends.
        while metrics.changed().await.is_ok() {}
    }

    /// Stops this member: background tasks, then Raft; returns once openraft released the
    /// log and the state machine. The store closes when the last `Arc<Store>` (this handle's
    /// included) is dropped.
    pub async fn shutdown(&self) -> Result<(), RaftError> {
        let _ = self.inner.stop.send(true);
        let tasks: Vec<_> = std::mem::take(&mut *self.inner.tasks.lock());
        for t in tasks {
            // A task may be waiting on a proposal or a join; abandoning it is harmless.
            t.abort();
            let _ = t.await;
        }
        self.inner
            .raft
            .shutdown()
            .await
            .map_err(|e| RaftError::Fatal(format!("raft shutdown: {e}")))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while Arc::strong_count(&self.inner.sm_token) > 1 || Arc::strong_count(self.inner.store.db()) > 1 {
            if Instant::now() >= deadline {
                return Err(RaftError::Fatal("openraft did not release the storage".into()));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tracing::info!(member = %self.inner.me, "raft member stopped");
        Ok(())
    }
}

fn unexpected(r: &LeaderResponse) -> RaftError {
    RaftError::Protocol(format!("unexpected answer {r:?}"))
}

/// Errors worth another attempt for an idempotent request.
fn is_transient(e: &RaftError) -> bool {
    matches!(
        e,
        RaftError::NotLeader { .. }
            | RaftError::NoLeader
            | RaftError::Unavailable(_)
            | RaftError::Transport(_)
            | RaftError::Timeout(_)
    )
}

/// Join mode: asks the join targets which cluster they are. Without local data it must get
/// an answer; with local data a silent cluster is tolerated (peer messages carry the cluster
/// id, so a member can still never mix with another cluster).
async fn discover(
    cfg: &RaftConfig,
    transport: &dyn PeerTransport,
    has_local: bool,
) -> Result<Option<ClusterInfo>, RaftError> {
    let wait = if has_local {
        DISCOVER_WITH_LOCAL_DATA
    } else {
        Duration::from_millis(cfg.request_timeout_ms)
    };
    let deadline = Instant::now() + wait;
    let mut retry = Retry::new(deadline);
    for addr in cfg.join.iter().cycle() {
        let payload = encode_request(0, &())?;
        let last =
            match tokio::time::timeout_at(deadline, transport.call(addr, PeerRpc::Members, payload)).await {
                Ok(Ok(bytes)) => match bincode::deserialize::<Result<ClusterInfo, RaftError>>(&bytes)? {
                    Ok(info) => return Ok(Some(info)),
                    Err(e) => e,
                },
                Ok(Err(e)) => RaftError::Transport(format!("{addr}: {e}")),
                Err(_) => RaftError::Timeout(format!("{addr}: no answer")),
            };
        if let Err(e) = retry.wait(last).await {
            if has_local {
                tracing::warn!(error = %e, "join targets unreachable; resuming from the local data dir");
                return Ok(None);
            }
            return Err(RaftError::Unavailable(format!(
                "cannot reach any join target: {e}"
            )));
        }
    }
    unreachable!("cycle over a non-empty list")
}

/// Watches leadership: promotes/demotes the lessor, and as leader proposes revokes for
/// expired leases and compactions per the retention policy.
async fn leader_duties(weak: Weak<Inner>, mut stop: watch::Receiver<bool>) {
    let (mut metrics, interval, policy) = match weak.upgrade() {
        Some(inner) => (
            inner.raft.metrics(),
            Duration::from_millis(inner.cfg.lease_check_interval_ms),
            inner.cfg.auto_compaction,
        ),
        None => return,
    };
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut compactor = Compactor::new(policy);
    let mut leading = false;
    let mut last_leader = None;
    loop {
        let ticked = tokio::select! {
            _ = stop.changed() => return,
            r = metrics.changed() => { if r.is_err() { return; } false }
            _ = tick.tick() => true,
        };
        let Some(inner) = weak.upgrade() else { return };
        let is_leader = {
            let m = metrics.borrow_and_update();
            if m.current_leader.is_some() && m.current_leader != last_leader {
                if last_leader.is_some() {
                    inner.leader_changes.fetch_add(1, Ordering::Relaxed);
                }
                last_leader = m.current_leader;
            }
            m.state == ServerState::Leader && m.current_leader == Some(inner.id)
        };
        if is_leader && !leading {
            inner.leases.promote(&inner.store);
            compactor.reset();
            leading = true;
        } else if !is_leader && leading {
            inner.leases.demote();
            leading = false;
        }
        if !(leading && ticked) {
            continue;
        }
        let timeout = Duration::from_millis(inner.cfg.request_timeout_ms);
        let mut cmds: Vec<Command> = inner
            .leases
            .expired()
            .into_iter()
            .map(|id| Command::LeaseRevoke { id })
            .collect();
        let now = Instant::now().into_std();
        if let Some(revision) = compactor.due(now, inner.store.revision(), inner.store.compact_revision()) {
            cmds.push(Command::Compact { revision });
        }
        let proposals = cmds.into_iter().map(|cmd| {
            let raft = inner.raft.clone();
            async move {
                let what = format!("{cmd:?}");
                match tokio::time::timeout(timeout, raft.client_write(Proposal(vec![cmd]))).await {
                    Ok(Ok(r)) => tracing::debug!(what, result = ?r.data, "leader duty applied"),
                    Ok(Err(e)) => tracing::debug!(what, error = %e, "leader duty not proposed"),
                    Err(_) => tracing::warn!(what, "leader duty timed out"),
                }
            }
        });
        futures::future::join_all(proposals).await;
    }
}

/// Join mode: asks the join targets in turn to add this member until one succeeds. Then,
/// in every mode: makes sure the membership records this member's current addresses (the
/// initial membership has no client addresses; addresses may change across restarts).
async fn membership_task(weak: Weak<Inner>, mut stop: watch::Receiver<bool>, join: bool) {
    if join {
        let mut backoff = Duration::from_millis(100);
        let mut attempt = 0usize;
        loop {
            let Some(inner) = weak.upgrade() else { return };
            let addr = inner.cfg.join[attempt % inner.cfg.join.len()].clone();
            attempt += 1;
            let res = join_once(&inner, &addr).await;
            match res {
                Ok(()) => {
                    tracing::info!(via = %addr, "joined the cluster");
                    inner.join_state.send_replace(JoinState::Done);
                    break;
                }
                Err(
                    e @ (RaftError::MemberExists { .. }
                    | RaftError::ClusterIdMismatch { .. }
                    | RaftError::Config(_)),
                ) => {
                    tracing::error!(via = %addr, error = %e, "join refused");
                    inner.join_state.send_replace(JoinState::Failed(e));
                    return;
                }
                Err(e) => tracing::warn!(via = %addr, error = %e, "join attempt failed; retrying"),
            }
            drop(inner);
            tokio::select! {
                _ = stop.changed() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    let Some(mut metrics) = weak.upgrade().map(|i| i.raft.metrics()) else {
        return;
    };
    loop {
        let Some(inner) = weak.upgrade() else { return };
        let recorded = {
            let m = metrics.borrow_and_update();
            m.membership_config.membership().get_node(&inner.id).cloned()
        };
        let handle = RaftHandle { inner };
        match recorded {
            Some(m) if m == handle.inner.me => return,
            Some(_) => {
                let req = LeaderRequest::UpdateMember(handle.inner.me.clone());
                if let Err(e) = handle.on_leader(req, handle.deadline()).await {
                    tracing::debug!(error = %e, "recording this member's addresses failed; retrying");
                }
            }
            None => {}
        }
        drop(handle);
        tokio::select! {
            _ = stop.changed() => return,
            r = metrics.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

async fn join_once(inner: &Inner, addr: &str) -> Result<(), RaftError> {
    let req = JoinRequest {
        member: inner.me.clone(),
        as_learner: inner.cfg.join_as_learner,
        timeout_ms: JOIN_ATTEMPT.as_millis() as u64,
    };
    let payload = encode_request(inner.cluster_id, &req)?;
    let call = inner.transport.call(addr, PeerRpc::Join, payload);
    let bytes = tokio::time::timeout(JOIN_ATTEMPT + Duration::from_secs(5), call)
        .await
        .map_err(|_| RaftError::Timeout(format!("{addr}: no answer to join")))?
        .map_err(|e| RaftError::Transport(e.to_string()))?;
    let res: Result<ClusterInfo, RaftError> = bincode::deserialize(&bytes)?;
    let info = res?;
    if info.cluster_id != inner.cluster_id {
        return Err(RaftError::ClusterIdMismatch {
            local: inner.cluster_id,
            other: info.cluster_id,
        });
    }
    Ok(())
}
