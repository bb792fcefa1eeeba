//! The store: wiring of RocksDB, the in-memory state, the watch hub and the catch-up worker.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::{Mutex, RwLock};
use rocksdb::{ColumnFamilyDescriptor, IteratorMode, Options, WriteBatch, WriteOptions, DB};

use crate::apply::Batch;
use crate::codec::{self, CF_KV, CF_LEASE, CF_META, STORE_CFS};
use crate::snapshot::{self, Image};
use crate::state::{cf, Reader, State};
use crate::watch::Hub;
use crate::{
    catchup, range, Command, CommandResult, Lease, LeaseId, RangeRequest, RangeResponse, Result, StoreConfig,
    StoreError, WatchRequest, Watcher,
};

/// Upper bound of every key the store writes in its own column families (revision keys are
/// 12 bytes, lease keys 8, meta keys short ASCII), for range deletes that clear them.
const STORE_KEY_UPPER_BOUND: [u8; 16] = [0xFF; 16];

/// RocksDB properties summed for [`Store::db_size_bytes`].
const SIZE_PROPERTIES: [&str; 2] = ["rocksdb.total-sst-files-size", "rocksdb.size-all-mem-tables"];

/// What the store and its catch-up worker share.
pub(crate) struct Shared {
    pub db: Arc<DB>,
    /// Lock order: `state`, then the hub's lock. Apply holds `state` for writing from the
    /// first command until its events are published, so readers never see a half batch and
    /// the hub's revision equals the store's whenever `state` can be read.
    pub state: RwLock<State>,
    pub hub: Arc<Hub>,
}

/// The replicated state machine: an MVCC key-value store with a watch hub.
pub struct Store {
    shared: Arc<Shared>,
    column_families: Vec<String>,
    worker: Mutex<Option<JoinHandle<()>>>,
}

impl Store {
    /// Creates or reopens the store at `cfg.path` and rebuilds the in-memory index.
    pub fn open(cfg: StoreConfig) -> Result<Arc<Store>> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        // Every column family already in the database must be opened too.
        let mut names: BTreeSet<String> = DB::list_cf(&opts, &cfg.path)
            .unwrap_or_default()
            .into_iter()
            .collect();
        names.extend(STORE_CFS.iter().map(|s| s.to_string()));
        names.extend(cfg.extra_column_families.iter().cloned());
        let descriptors = names
            .iter()
            .map(|n| ColumnFamilyDescriptor::new(n, Options::default()));
        let db = Arc::new(DB::open_cf_descriptors(&opts, &cfg.path, descriptors)?);
        init_meta(&db)?;
        let state = load_state(&db)?;
        let hub = Arc::new(Hub::new(cfg.watch_queue_len, state.rev));
        let shared = Arc::new(Shared {
            db,
            state: RwLock::new(state),
            hub,
        });
        let worker_shared = shared.clone();
        let worker = std::thread::Builder::new()
            .name("berth-store-watch".into())
            .spawn(move || catchup::run(&worker_shared))
            .map_err(|e| StoreError::Corrupt(format!("cannot start the watch worker: {e}")))?;
        Ok(Arc::new(Store {
            shared,
            column_families: names.into_iter().collect(),
            worker: Mutex::new(Some(worker)),
        }))
    }

    /// The database, for the caller's extra column families.
    pub fn db(&self) -> &Arc<DB> {
        &self.shared.db
    }

    /// Applies commands in order in ONE RocksDB write batch (sync=false), together with the
    /// caller's opaque marker (e.g. the last applied Raft log id); then publishes watch events.
    /// The outer `Err` is only for storage failure (the caller should crash); a command that
    /// fails changes nothing and gives its own `Err`.
    pub fn apply(&self, cmds: &[Command], marker: Option<&[u8]>) -> Result<Vec<Result<CommandResult>>> {
        let db = &self.shared.db;
        let mut st = self.shared.state.write();
        let mut batch = Batch::new(db);
        let mut results = Vec::with_capacity(cmds.len());
        let outcome = cmds
            .iter()
            .try_for_each(|cmd| batch.apply(&mut st, cmd).map(|r| results.push(r)))
            .and_then(|()| batch.commit(&st, marker));
        let events = match outcome {
            Ok(events) => events,
            Err(e) => {
                // Nothing reached the database: put memory back in line with it.
                if let Ok(fresh) = load_state(db) {
                    *st = fresh;
                }
                return Err(e);
            }
        };
        let reader = Reader::new(db, None);
        let prev_of = |ev: &crate::Event| catchup::prev_version(&st, &reader, ev);
        self.shared.hub.publish(st.rev, &events, &prev_of)?;
        Ok(results)
    }

    /// The marker stored with the last applied batch (or restored from an image).
    pub fn applied_marker(&self) -> Result<Option<Vec<u8>>> {
        let db = &self.shared.db;
        Ok(db.get_cf(cf(db, CF_META), codec::META_APPLIED_MARKER)?)
    }

    /// Forgets the applied marker, keeping the data: used when a backup seeds a new cluster,
    /// whose log starts afresh. Synced, since it is a one-off administrative write.
    pub fn clear_applied_marker(&self) -> Result<()> {
        let db = &self.shared.db;
        let mut opts = rocksdb::WriteOptions::default();
        opts.set_sync(true);
        let mut wb = rocksdb::WriteBatch::default();
        wb.delete_cf(cf(db, CF_META), codec::META_APPLIED_MARKER);
        db.write_opt(wb, &opts)?;
        Ok(())
    }

    /// Reads the latest applied state (or `req.revision`).
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse> {
        if req.key.is_empty() {
            return Err(StoreError::EmptyKey);
        }
        let st = self.shared.state.read();
        range::range(&st, &Reader::new(&self.shared.db, None), req, st.rev)
    }

    /// The current revision; a fresh store is at revision 1, as etcd.
    pub fn revision(&self) -> i64 {
        self.shared.state.read().rev
    }

    /// The compact revision; 0 if never compacted.
    pub fn compact_revision(&self) -> i64 {
        self.shared.state.read().compact_rev
    }

    /// All leases, sorted by id.
    pub fn leases(&self) -> Vec<Lease> {
        let st = self.shared.state.read();
        st.leases
            .iter()
            .map(|(id, e)| Lease {
                id: *id,
                ttl_secs: e.ttl_secs,
            })
            .collect()
    }

    /// One lease with its attached keys, sorted.
    pub fn lease(&self, id: LeaseId) -> Option<(Lease, Vec<Vec<u8>>)> {
        let st = self.shared.state.read();
        let e = st.leases.get(&id)?;
        Some((
            Lease {
                id,
                ttl_secs: e.ttl_secs,
            },
            e.keys.iter().cloned().collect(),
        ))
    }

    /// Registers a watcher. `Err(Compacted)` if `start_revision` is compacted; a start in the
    /// future just waits for it; 0 means from the next revision.
    pub fn watch(&self, req: WatchRequest) -> Result<Watcher> {
        let st = self.shared.state.read();
        if req.start_revision > 0 && req.start_revision <= st.compact_rev {
            return Err(StoreError::Compacted {
                compact_revision: st.compact_rev,
            });
        }
        let next_rev = if req.start_revision > 0 {
            req.start_revision
        } else {
            st.rev + 1
        };
        Ok(self.shared.hub.register(req, next_rev))
    }

    /// Enqueues `WatchMessage::Progress` once the watcher has seen everything up to the
    /// current revision.
    pub fn request_progress(&self, watcher_id: u64) {
        self.shared.hub.request_progress(watcher_id);
    }

    /// A consistent point-in-time image of all store state, marker included, with a format
    /// version and a checksum.
    pub fn snapshot(&self) -> Result<Vec<u8>> {
        Ok(Image::capture(&self.shared.db)?.encode())
    }

    /// Replaces all state atomically with `image`. An invalid image changes nothing. Watchers
    /// whose next revision the image has compacted get `Compacted`; others continue from the
    /// new state.
    pub fn restore(&self, image: &[u8]) -> Result<()> {
        let image = Image::decode(image)?;
        let fresh = image
            .to_state()
            .map_err(|e| StoreError::InvalidSnapshot(e.to_string()))?;
        let db = &self.shared.db;
        let mut st = self.shared.state.write();
        let mut wb = WriteBatch::default();
        for name in STORE_CFS {
            let handle = cf(db, name);
            wb.delete_range_cf(handle, &[][..], &STORE_KEY_UPPER_BOUND[..]);
            for (k, v) in image.entries(name) {
                wb.put_cf(handle, k, v);
            }
        }
        let mut opts = WriteOptions::default();
        opts.set_sync(false);
        db.write_opt(wb, &opts)?;
        *st = fresh;
        self.shared.hub.restored(st.rev);
        Ok(())
    }

    /// Deterministic hash of the whole MVCC state (for determinism tests and etcd HashKV).
    ///
    /// Panics if the database cannot be read: there is no error to return, and a store that
    /// cannot read itself cannot go on.
    pub fn hash(&self) -> u64 {
        snapshot::hash(&self.shared.db).expect("reading the store for its hash")
    }

    /// Approximate size of the database (all column families), from RocksDB properties.
    pub fn db_size_bytes(&self) -> u64 {
        let db = &self.shared.db;
        let mut total = 0;
        for name in &self.column_families {
            let Some(handle) = db.cf_handle(name) else {
                continue;
            };
            for prop in SIZE_PROPERTIES {
                total += db.property_int_value_cf(handle, prop).ok().flatten().unwrap_or(0);
            }
        }
        total
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.shared.hub.signal.shutdown();
        if let Some(worker) = self.worker.lock().take() {
            // Joined so that the database is closed when the store is gone (a reopen may follow).
            let _ = worker.join();
        }
        self.shared.hub.close_all();
    }
}

// The raft crate shares the store across tasks as `Arc<Store>` and moves watchers into tasks.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    const fn assert_send<T: Send>() {}
    assert_send_sync::<Store>();
    assert_send::<Watcher>();
};

/// Writes the counters of a fresh store; checks the layout version of an existing one.
fn init_meta(db: &DB) -> Result<()> {
    let meta = cf(db, CF_META);
    match db.get_cf(meta, codec::META_FORMAT_VERSION)? {
        Some(v) if v == codec::STORE_FORMAT_VERSION.to_be_bytes() => Ok(()),
        Some(v) => Err(StoreError::Corrupt(format!("unknown store format {v:?}"))),
        None => {
            let mut wb = WriteBatch::default();
            wb.put_cf(
                meta,
                codec::META_FORMAT_VERSION,
                codec::STORE_FORMAT_VERSION.to_be_bytes(),
            );
            wb.put_cf(
                meta,
                codec::META_REVISION,
                codec::encode_i64(codec::INITIAL_REVISION),
            );
            wb.put_cf(meta, codec::META_COMPACT_REVISION, codec::encode_i64(0));
            Ok(db.write(wb)?)
        }
    }
}

/// Rebuilds the in-memory state from the database.
fn load_state(db: &DB) -> Result<State> {
    let counter = |key: &[u8]| -> Result<i64> {
        let bytes = db
            .get_cf(cf(db, CF_META), key)?
            .ok_or_else(|| StoreError::Corrupt("missing counter".into()))?;
        codec::decode_i64(&bytes, "counter")
    };
    let scan = |name: &str| {
        db.iterator_cf(cf(db, name), IteratorMode::Start)
            .map(|item| item.map_err(StoreError::from))
    };
    State::rebuild(
        counter(codec::META_REVISION)?,
        counter(codec::META_COMPACT_REVISION)?,
        scan(CF_KV),
        scan(CF_LEASE),
    )
}
