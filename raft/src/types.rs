//! The openraft type configuration and the small value types around it.

use std::fmt;
use std::io::Cursor;

use berth_store::{Command, CommandResult, StoreError};
use serde::{Deserialize, Serialize};

/// The id of a control-plane member: FNV-1a over its name (see [`member_id`]).
pub type MemberId = u64;

/// One control-plane member as the Raft membership records it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Member {
    /// The member's name (`--name`); its id is [`member_id`] of this name.
    pub name: String,
    /// Where other members reach its peer (Raft) service.
    pub peer_addr: String,
    /// Where clients reach its API.
    pub client_addr: String,
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}(peer={}, client={})",
            self.name, self.peer_addr, self.client_addr
        )
    }
}

/// The result of applying one log entry: the store's answer, in a serializable form.
pub type ApplyResult = Result<CommandResult, ApplyError>;

/// The payload of one Raft log entry: commands proposed together (see [`crate::batch`]),
/// applied in order in one store batch, each with its own result.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Proposal(pub Vec<Command>);

impl std::fmt::Display for Proposal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "proposal of {} command(s)", self.0.len())
    }
}

openraft::declare_raft_types!(
    /// Berth's openraft type configuration.
    pub TypeConfig:
        D = Proposal,
        R = Vec<ApplyResult>,
        NodeId = MemberId,
        Node = Member,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<MemberId>;
pub type Vote = openraft::Vote<MemberId>;
pub type StoredMembership = openraft::StoredMembership<MemberId, Member>;
pub type SnapshotMeta = openraft::SnapshotMeta<MemberId, Member>;
pub type Snapshot = openraft::Snapshot<TypeConfig>;
pub type StorageError = openraft::StorageError<MemberId>;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h = FNV_OFFSET;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

/// The member id of a peer address: FNV-1a 64 over its UTF-8 bytes, never 0 (0 becomes 1).
/// A member's identity is its peer address, as etcd derives ids from peer URLs: every member
/// of an `--initial-cluster` computes the same ids, and a member added by address alone
/// (etcd's MemberAdd carries no name) is the one that later starts with that `--peer-addr`.
pub fn member_id(peer_addr: &str) -> MemberId {
    match fnv1a(peer_addr.as_bytes()) {
        0 => 1,
        h => h,
    }
}

/// The cluster id of an initial cluster: FNV-1a 64 over `name=peer_addr` pairs sorted by name
/// and joined with `,`; never 0. Independent of the order the pairs were given in.
pub fn cluster_id(initial_cluster: &[(String, String)]) -> u64 {
    let mut pairs: Vec<String> = initial_cluster.iter().map(|(n, a)| format!("{n}={a}")).collect();
    pairs.sort();
    match fnv1a(pairs.join(",").as_bytes()) {
        0 => 1,
        h => h,
    }
}

/// The serializable form of [`StoreError`]: same variants, so the API server can map them to
/// etcd errors after a command was applied on another member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ApplyError {
    #[error("mvcc: required revision has been compacted")]
    Compacted { compact_revision: i64 },
    #[error("mvcc: required revision is a future revision")]
    FutureRevision,
    #[error("requested lease not found")]
    LeaseNotFound,
    #[error("lease already exists")]
    LeaseExists,
    #[error("key not found")]
    KeyNotFound,
    #[error("key is not provided")]
    EmptyKey,
    #[error("duplicate key given in txn request")]
    DuplicateKey,
    #[error("invalid snapshot: {0}")]
    InvalidSnapshot(String),
    #[error("rocksdb: {0}")]
    Rocks(String),
    #[error("corrupt store: {0}")]
    Corrupt(String),
}

impl From<&StoreError> for ApplyError {
    fn from(e: &StoreError) -> Self {
        match e {
            StoreError::Compacted { compact_revision } => ApplyError::Compacted {
                compact_revision: *compact_revision,
            },
            StoreError::FutureRevision => ApplyError::FutureRevision,
            StoreError::LeaseNotFound => ApplyError::LeaseNotFound,
            StoreError::LeaseExists => ApplyError::LeaseExists,
            StoreError::KeyNotFound => ApplyError::KeyNotFound,
            StoreError::EmptyKey => ApplyError::EmptyKey,
            StoreError::DuplicateKey => ApplyError::DuplicateKey,
            StoreError::InvalidSnapshot(s) => ApplyError::InvalidSnapshot(s.clone()),
            StoreError::Rocks(e) => ApplyError::Rocks(e.to_string()),
            StoreError::Corrupt(s) => ApplyError::Corrupt(s.clone()),
        }
    }
}

impl From<StoreError> for ApplyError {
    fn from(e: StoreError) -> Self {
        ApplyError::from(&e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_known_vectors() {
        // Reference values of FNV-1a 64.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn member_ids_are_stable_and_distinct() {
        assert_eq!(member_id("s1"), member_id("s1"));
        assert_ne!(member_id("s1"), member_id("s2"));
        assert_ne!(member_id(""), 0);
    }

    #[test]
    fn cluster_id_ignores_order() {
        let a = vec![
            ("s1".to_string(), "a:1".to_string()),
            ("s2".to_string(), "a:2".to_string()),
        ];
        let b = vec![a[1].clone(), a[0].clone()];
        assert_eq!(cluster_id(&a), cluster_id(&b));
        let c = vec![a[0].clone()];
        assert_ne!(cluster_id(&a), cluster_id(&c));
    }
}
