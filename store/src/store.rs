//! The MVCC store over RocksDB.

use std::sync::Arc;

use crate::{
    Command, CommandResult, Lease, LeaseId, RangeRequest, RangeResponse, Result, StoreConfig,
    WatchRequest, Watcher,
};

/// The replicated state machine: an MVCC key-value store with a watch hub.
pub struct Store {
    db: Arc<rocksdb::DB>,
}

impl Store {
    /// Creates or reopens the store at `cfg.path` and rebuilds the in-memory index.
    pub fn open(cfg: StoreConfig) -> Result<Arc<Store>> {
        let _ = cfg;
        todo!()
    }

    /// The database, for the caller's extra column families.
    pub fn db(&self) -> &Arc<rocksdb::DB> {
        &self.db
    }

    /// Applies commands in order in ONE RocksDB write batch (sync=false), together with the
    /// caller's opaque marker; then publishes watch events. The outer `Err` is only for storage
    /// failure; a command that fails changes nothing and gives its own `Err`.
    pub fn apply(
        &self,
        cmds: &[Command],
        marker: Option<&[u8]>,
    ) -> Result<Vec<Result<CommandResult>>> {
        let _ = (cmds, marker);
        todo!()
    }

    /// The marker stored with the last applied batch.
    pub fn applied_marker(&self) -> Result<Option<Vec<u8>>> {
        todo!()
    }

    /// Reads the latest applied state (or `req.revision`).
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse> {
        let _ = req;
        todo!()
    }

    /// The current revision; a fresh store is at revision 1.
    pub fn revision(&self) -> i64 {
        todo!()
    }

    /// The compact revision; 0 if never compacted.
    pub fn compact_revision(&self) -> i64 {
        todo!()
    }

    /// All leases, sorted by id.
    pub fn leases(&self) -> Vec<Lease> {
        todo!()
    }

    /// One lease with its attached keys, sorted.
    pub fn lease(&self, id: LeaseId) -> Option<(Lease, Vec<Vec<u8>>)> {
        let _ = id;
        todo!()
    }

    /// Registers a watcher.
    pub fn watch(&self, req: WatchRequest) -> Result<Watcher> {
        let _ = req;
        todo!()
    }

    /// Enqueues `WatchMessage::Progress` once the watcher has seen everything up to the
    /// current revision.
    pub fn request_progress(&self, watcher_id: u64) {
        let _ = watcher_id;
        todo!()
    }

    /// A consistent point-in-time image of all store state, with a format version and checksum.
    pub fn snapshot(&self) -> Result<Vec<u8>> {
        todo!()
    }

    /// Replaces all state atomically with `image`.
    pub fn restore(&self, image: &[u8]) -> Result<()> {
        let _ = image;
        todo!()
    }

    /// Deterministic hash of the whole MVCC state.
    pub fn hash(&self) -> u64 {
        todo!()
    }

    /// Approximate size of the database on disk.
    pub fn db_size_bytes(&self) -> u64 {
        todo!()
    }
}

// The raft crate shares the store across tasks as `Arc<Store>`.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Store>();
};
