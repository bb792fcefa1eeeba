//! Errors of the Raft layer. [`RaftError`] is serializable so that a member can return it to
//! another member that forwarded a request.

use serde::{Deserialize, Serialize};

use crate::types::{Member, MemberId};

/// Errors of [`crate::RaftHandle`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum RaftError {
    /// This member is not the leader; `leader` is the one it knows of, if any. Returned only
    /// by operations that must not be forwarded (forwarding operations retry instead).
    #[error("not the leader (leader: {leader_id:?} {leader:?})")]
    NotLeader {
        leader_id: Option<MemberId>,
        leader: Option<Member>,
    },
    /// Another membership change is not committed yet; this one was not proposed, so it may
    /// be retried.
    #[error("membership change in progress: {0}")]
    MembershipChangeInProgress(String),
    /// No leader is known right now (election in progress, or no quorum).
    #[error("no leader")]
    NoLeader,
    /// The cluster could not serve the request (e.g. no quorum confirmed the leader).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The deadline passed. For a write the outcome is unknown: it may still be applied.
    #[error("timed out: {0}")]
    Timeout(String),
    #[error("member {0:#x} not found")]
    MemberNotFound(MemberId),
    #[error("member {name} ({id:#x}) already exists")]
    MemberExists { id: MemberId, name: String },
    #[error("requested lease not found")]
    LeaseNotFound,
    /// The data dir (or the peer) belongs to another cluster. Nothing was changed.
    #[error(
        "cluster id mismatch: this member belongs to cluster {local:016x}, but the other side \
         (the configured initial cluster, the join target, or the peer) is cluster {other:016x}; \
         nothing was changed"
    )]
    ClusterIdMismatch { local: u64, other: u64 },
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A peer could not be reached or the exchange failed.
    #[error("transport: {0}")]
    Transport(String),
    /// A malformed peer message.
    #[error("protocol: {0}")]
    Protocol(String),
    /// The log or the state machine failed.
    #[error("storage: {0}")]
    Storage(String),
    /// The data dir's recovered Raft state (log, vote) is behind what the member had
    /// acknowledged as durable (its WAL lost records): it must not serve; the message says
    /// which data dir, what was expected and found, and how to rejoin it.
    #[error("refusing to start: {0}")]
    StateBehind(String),
    /// The Raft member stopped (shut down, or after a storage failure).
    #[error("fatal: {0}")]
    Fatal(String),
}

impl RaftError {
    /// Whether a write that failed with this error was certainly not proposed, so retrying it
    /// (possibly through another leader) cannot apply it twice.
    pub(crate) fn safe_to_retry(&self) -> bool {
        matches!(
            self,
            RaftError::NotLeader { .. } | RaftError::NoLeader | RaftError::MembershipChangeInProgress(_)
        )
    }
}

impl From<berth_store::StoreError> for RaftError {
    fn from(e: berth_store::StoreError) -> Self {
        RaftError::Storage(e.to_string())
    }
}

impl From<openraft::error::Fatal<MemberId>> for RaftError {
    fn from(e: openraft::error::Fatal<MemberId>) -> Self {
        RaftError::Fatal(e.to_string())
    }
}

impl From<bincode::Error> for RaftError {
    fn from(e: bincode::Error) -> Self {
        RaftError::Protocol(e.to_string())
    }
}

/// What a [`crate::PeerTransport`] reports when a call fails. The distinction matters:
/// openraft backs off from an unreachable peer, and a forwarded write is retried only when it
/// certainly never reached the peer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// The request was not delivered (no connection, peer unknown or down).
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// The request may have been delivered but no answer came back (connection lost, timeout).
    #[error("network: {0}")]
    Network(String),
    /// The peer answered with an error: its `handle_peer` failed (rendered as text).
    #[error("remote: {0}")]
    Remote(String),
}
