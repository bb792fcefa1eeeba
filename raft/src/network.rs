//! Peer messages over an abstract transport.
//!
//! The raft crate knows no gRPC: a [`PeerTransport`] carries opaque payload bytes to the peer
//! at `peer_addr`, whose server hands them to [`crate::RaftHandle::handle_peer`]. Every request
//! payload is bincode of `(cluster_id, request)`; a member rejects requests of another cluster.
//! Response payloads are bincode of `Result<response, error>` (openraft's error types for the
//! Raft RPCs, [`RaftError`] for Berth's own messages).

use std::io;
use std::sync::Arc;
use std::time::Duration;

use berth_store::{Command, LeaseId};
use futures::future::BoxFuture;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError as OpenRaftError, RemoteError, Timeout,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::RPCTypes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{RaftError, TransportError};
use crate::types::{ApplyResult, Member, MemberId, TypeConfig};

/// The kinds of peer messages. A transport maps them onto its own methods or a tag field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PeerRpc {
    AppendEntries,
    Vote,
    InstallSnapshot,
    /// A request that only the leader serves (a write, a membership change, a lease keepalive).
    Forward,
    /// "What is your read index?", asked of the leader by a follower serving a read.
    ReadIndex,
    /// "Add me to the cluster": from a new member to any member, which forwards to the leader.
    Join,
    /// "Which cluster are you, and who is in it?"
    Members,
}

impl PeerRpc {
    pub const ALL: [PeerRpc; 7] = [
        PeerRpc::AppendEntries,
        PeerRpc::Vote,
        PeerRpc::InstallSnapshot,
        PeerRpc::Forward,
        PeerRpc::ReadIndex,
        PeerRpc::Join,
        PeerRpc::Members,
    ];

    /// A stable small number for a wire tag (0..=6).
    pub fn code(self) -> u32 {
        self as u32
    }

    pub fn from_code(code: u32) -> Option<PeerRpc> {
        PeerRpc::ALL.get(code as usize).copied()
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PeerRpc::AppendEntries => "append_entries",
            PeerRpc::Vote => "vote",
            PeerRpc::InstallSnapshot => "install_snapshot",
            PeerRpc::Forward => "forward",
            PeerRpc::ReadIndex => "read_index",
            PeerRpc::Join => "join",
            PeerRpc::Members => "members",
        }
    }
}

/// Carries peer messages. Implemented by the API server over its gRPC Peer service (and by
/// [`crate::testing::TestNet`] in process). It must map a request that could not be delivered
/// to [`TransportError::Unreachable`], a lost answer to [`TransportError::Network`], and an
/// error returned by the peer's `handle_peer` to [`TransportError::Remote`].
pub trait PeerTransport: Send + Sync + 'static {
    fn call(
        &self,
        peer_addr: &str,
        rpc: PeerRpc,
        payload: Vec<u8>,
    ) -> BoxFuture<'static, Result<Vec<u8>, TransportError>>;
}

// ---- Berth's own peer messages -------------------------------------------------------------

/// A request only the leader serves.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum LeaderRequest {
    /// Commands gathered by a member's proposal batcher, committed as one log entry.
    ProposeBatch(Vec<Command>),
    /// `join`: idempotent for the same member (a retried join continues: the learner is
    /// caught up and, unless `as_learner`, promoted).
    AddMember {
        member: Member,
        as_learner: bool,
        join: bool,
    },
    /// etcd's MemberAdd: records a member that has not started yet (learner, or voter), without
    /// waiting for it; it catches up once a server starts with that peer address.
    AddUnstarted {
        member: Member,
        as_learner: bool,
    },
    Promote(MemberId),
    Remove(MemberId),
    /// Records a member's current addresses (it must be in the membership already).
    UpdateMember(Member),
    LeaseKeepAlive(LeaseId),
    LeaseTimeToLive(LeaseId),
}

impl LeaderRequest {
    /// Whether running it twice is harmless (so a lost answer may be retried).
    pub(crate) fn idempotent(&self) -> bool {
        match self {
            LeaderRequest::ProposeBatch(_)
            | LeaderRequest::Remove(_)
            | LeaderRequest::AddUnstarted { .. } => false,
            LeaderRequest::AddMember { join, .. } => *join,
            LeaderRequest::Promote(_)
            | LeaderRequest::UpdateMember(_)
            | LeaderRequest::LeaseKeepAlive(_)
            | LeaderRequest::LeaseTimeToLive(_) => true,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum LeaderResponse {
    AppliedBatch(Vec<ApplyResult>),
    Member(Member),
    Done,
    KeepAlive(i64),
    TimeToLive { granted: i64, remaining: i64 },
}

/// `PeerRpc::Forward` body: the request and how long the sender is willing to wait.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Forwarded {
    pub timeout_ms: u64,
    pub req: LeaderRequest,
}

/// `PeerRpc::ReadIndex` body.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ReadIndexRequest {
    pub timeout_ms: u64,
}

/// `PeerRpc::ReadIndex` answer: the leader's read index, confirmed by a heartbeat quorum.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ReadIndexResponse {
    pub read_index: Option<u64>,
}

/// `PeerRpc::Join` body.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct JoinRequest {
    pub member: Member,
    /// Stay a learner (do not promote to voter once caught up).
    pub as_learner: bool,
    pub timeout_ms: u64,
}

/// `PeerRpc::Members` (and `Join`) answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ClusterInfo {
    pub cluster_id: u64,
    pub leader_id: Option<MemberId>,
    /// (id, member, is_voter)
    pub members: Vec<(MemberId, Member, bool)>,
}

/// Encodes a request payload.
pub(crate) fn encode_request<T: Serialize>(cluster_id: u64, req: &T) -> Result<Vec<u8>, RaftError> {
    Ok(bincode::serialize(&(cluster_id, req))?)
}

/// Decodes a request payload.
pub(crate) fn decode_request<T: DeserializeOwned>(payload: &[u8]) -> Result<(u64, T), RaftError> {
    Ok(bincode::deserialize(payload)?)
}

// ---- openraft's network over the transport -----------------------------------------------

/// openraft's network factory: one [`PeerConn`] per target.
pub(crate) struct Network {
    pub transport: Arc<dyn PeerTransport>,
    pub cluster_id: u64,
    pub self_id: MemberId,
    /// Back-off between attempts to an unreachable peer.
    pub backoff: Duration,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerConn;

    async fn new_client(&mut self, target: MemberId, node: &Member) -> PeerConn {
        PeerConn {
            transport: self.transport.clone(),
            cluster_id: self.cluster_id,
            self_id: self.self_id,
            target,
            node: node.clone(),
            backoff: self.backoff,
        }
    }
}

pub(crate) struct PeerConn {
    transport: Arc<dyn PeerTransport>,
    cluster_id: u64,
    self_id: MemberId,
    target: MemberId,
    node: Member,
    backoff: Duration,
}

impl PeerConn {
    async fn rpc<Req, T, E>(
        &self,
        rpc: PeerRpc,
        action: RPCTypes,
        req: &Req,
        option: &RPCOption,
    ) -> Result<T, RPCError<MemberId, Member, E>>
    where
        Req: Serialize,
        T: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let payload =
            encode_request(self.cluster_id, req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let call = self.transport.call(&self.node.peer_addr, rpc, payload);
        let bytes = match tokio::time::timeout(option.hard_ttl(), call).await {
            Err(_) => {
                return Err(RPCError::Timeout(Timeout {
                    action,
                    id: self.self_id,
                    target: self.target,
                    timeout: option.hard_ttl(),
                }))
            }
            // Not delivered, or refused by the peer before reaching Raft: back off.
            Ok(Err(e @ (TransportError::Unreachable(_) | TransportError::Remote(_)))) => {
                return Err(RPCError::Unreachable(Unreachable::new(&e)))
            }
            Ok(Err(e @ TransportError::Network(_))) => return Err(RPCError::Network(NetworkError::new(&e))),
            Ok(Ok(b)) => b,
        };
        let res: Result<T, E> = bincode::deserialize(&bytes).map_err(|e| {
            RPCError::Network(NetworkError::new(&io::Error::other(format!(
                "bad {} answer: {e}",
                rpc.as_str()
            ))))
        })?;
        res.map_err(|e| RPCError::RemoteError(RemoteError::new_with_node(self.target, self.node.clone(), e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerConn {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<MemberId>, RPCError<MemberId, Member, OpenRaftError<MemberId>>> {
        self.rpc(PeerRpc::AppendEntries, RPCTypes::AppendEntries, &rpc, &option)
            .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<MemberId>,
        RPCError<MemberId, Member, OpenRaftError<MemberId, InstallSnapshotError>>,
    > {
        self.rpc(PeerRpc::InstallSnapshot, RPCTypes::InstallSnapshot, &rpc, &option)
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<MemberId>,
        option: RPCOption,
    ) -> Result<VoteResponse<MemberId>, RPCError<MemberId, Member, OpenRaftError<MemberId>>> {
        self.rpc(PeerRpc::Vote, RPCTypes::Vote, &rpc, &option).await
    }

    fn backoff(&self) -> openraft::network::Backoff {
        openraft::network::Backoff::new(std::iter::repeat(self.backoff))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpc_codes_round_trip() {
        for rpc in PeerRpc::ALL {
            assert_eq!(PeerRpc::from_code(rpc.code()), Some(rpc));
        }
        assert_eq!(PeerRpc::from_code(7), None);
    }

    #[test]
    fn request_envelope_round_trip() {
        let bytes = encode_request(42, &ReadIndexRequest { timeout_ms: 7 }).unwrap();
        let (cid, req): (u64, ReadIndexRequest) = decode_request(&bytes).unwrap();
        assert_eq!((cid, req.timeout_ms), (42, 7));
    }
}
