//! berth-store: the replicated state machine, without networking and without Raft.
//!
//! An MVCC key-value store over RocksDB with etcd v3 semantics: one global revision; per key a
//! create revision, mod revision and version; range, put, delete-range, transactions with
//! compares, compaction, leases (their records, not their clocks), snapshots, and a watch hub
//! that turns applied revisions into events.
//!
//! Invariants: applying the same commands in the same order gives the same state, byte for
//! byte (no clocks, no randomness, no iteration over unordered maps in apply); one RocksDB write
//! batch per applied batch of commands; a slow watcher never stalls apply or other watchers.
//!
//! It deliberately does not know: the network, Raft, log indexes (the caller stores an opaque
//! "applied marker" atomically with each batch), the wire format, or wall-clock time (the
//! [`Lessor`] takes `now_ms` as an argument).
//!
//! How it is built (one module each):
//! - `codec`: the on-disk layout. Column family `store_kv` maps a revision (main u64 BE, sub
//!   u32 BE) to one version of one key (bincode, with a tombstone flag); `store_meta` holds the
//!   current and compact revisions, the applied marker and the layout version; `store_lease`
//!   holds lease records. The caller's extra column families share the database (and its WAL).
//! - `index`, `state`: the in-memory key index (user key -> revisions of its versions, plus the
//!   live version's metadata) and the lease table with attached keys; rebuilt on open.
//! - `apply`, `txn`, `range`: commands, each checked before it writes so a failing command
//!   changes nothing; etcd's txn rules (compares before writes, no key written twice).
//! - `watch`, `catchup`: the hub (synced watchers fed by apply, unsynced ones and victims caught
//!   up from history by a background thread).
//! - `snapshot`: images (checksummed, versioned) and the state hash; `lessor`: lease clocks.

mod apply;
mod backup;
mod catchup;
mod codec;
mod index;
mod keyrange;
mod lessor;
mod range;
mod snapshot;
mod state;
mod store;
mod txn;
mod types;
mod watch;

pub use backup::{decode_backup, encode_backup};
pub use catchup::{CATCHUP_MAX_EVENTS_PER_MESSAGE, CATCHUP_MAX_VERSIONS_SCANNED};
pub use snapshot::SNAPSHOT_FORMAT_VERSION;

pub use lessor::{Lessor, Renewal};
pub use store::Store;
pub use types::*;
pub use watch::Watcher;

use std::path::PathBuf;

/// Default bound of one watcher's queue, in messages. A synced watcher whose queue is full
/// becomes a "victim" and is caught up from stored history later, so apply never waits on it.
pub const WATCH_QUEUE_LEN_DEFAULT: usize = 1024;

/// Errors of the store. Variants map to etcd's gRPC errors in the API server's one table.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
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
    Rocks(#[from] rocksdb::Error),
    #[error("corrupt store: {0}")]
    Corrupt(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// How to open a store.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// Directory of the RocksDB database.
    pub path: PathBuf,
    /// Column families the caller keeps in the same database (e.g. a Raft log), so that one
    /// synced WAL write covers both. The store never reads or writes them.
    pub extra_column_families: Vec<String>,
    /// Bound of each watcher's queue, in messages.
    pub watch_queue_len: usize,
}

/// What a watcher asks for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatchRequest {
    pub key: Vec<u8>,
    /// Same meaning as in [`RangeRequest`].
    pub range_end: Vec<u8>,
    /// 0 = from the next revision (only future changes).
    pub start_revision: i64,
    pub prev_kv: bool,
    pub filter_put: bool,
    pub filter_delete: bool,
}

/// What a watcher receives, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchMessage {
    /// Events of one or more revisions, in revision order. `revision` is the store revision
    /// the watcher has now seen everything up to (etcd's header revision).
    Events { revision: i64, events: Vec<Event> },
    /// The watcher has seen everything up to `revision` (answer to a progress request).
    Progress { revision: i64 },
    /// The start revision (or the point a victim had reached) was compacted away; the watcher
    /// is closed after this message.
    Compacted { compact_revision: i64 },
}
