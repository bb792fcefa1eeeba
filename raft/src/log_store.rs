//! The Raft log in two column families of the store's RocksDB: `raft_log` (key: the index,
//! u64 big-endian; value: the bincode entry) and `raft_meta` (vote, committed, last purged).
//!
//! Durability: appends and vote saves are written with `sync=false` and acknowledged only
//! after the group-commit thread has synced the WAL ([`Syncer`]): it takes every waiter queued
//! so far, does one `flush_wal(true)` and then answers them all. The tokio runtime never waits
//! on a sync. Because the log shares the WAL with the state machine, a synced append also makes
//! every earlier state-machine write durable, and the WAL's prefix order means a purge record
//! can never survive a crash that the state it relied on did not.
//!
//! Detecting a lost WAL tail: right after each WAL sync, before answering its waiters, the
//! thread records the last log id and vote it just made durable in the data dir's durable mark
//! ([`crate::durable`]); [`open_durable_mark`] compares the recovered state with that mark
//! when the member starts and refuses a state that is behind it.

// openraft's StorageError is what its storage traits return; our helpers return it unboxed too.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Weak};

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, OptionalSend, RaftLogId, StorageIOError};
use rocksdb::{ColumnFamily, Direction, IteratorMode, WriteBatch, WriteOptions, DB};
use tokio::sync::oneshot;

use crate::durable::{behind_error, rejoin_advice, DurableFile, Mark, Opened, DURABLE_FILE};
use crate::error::RaftError;
use crate::types::{Entry, LogId, StorageError, TypeConfig, Vote};

/// Column family of the log entries.
pub const LOG_CF: &str = "raft_log";
/// Column family of the vote, the committed log id and the last purged log id.
pub const META_CF: &str = "raft_meta";

const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_LAST_PURGED: &[u8] = b"last_purged";
/// Present once this data dir's durable mark file was created: its absence later is a loss.
const KEY_DURABLE_FILE: &[u8] = b"durable_file";

/// Above every 8-byte index key: the exclusive end of "everything from here on".
const KEY_BEYOND_LAST: [u8; 9] = [0xff; 9];

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn cf<'a>(db: &'a DB, name: &str) -> Result<&'a ColumnFamily, StorageError> {
    db.cf_handle(name).ok_or_else(|| {
        StorageIOError::read(&io::Error::other(format!("column family {name} missing"))).into()
    })
}

fn unsynced() -> WriteOptions {
    let mut o = WriteOptions::default();
    o.set_sync(false);
    o
}

fn read_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::read_logs(&e).into()
}

fn write_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_logs(&e).into()
}

/// Told the duration of every WAL sync (the API server feeds a metrics histogram with it;
/// this crate knows nothing of metrics).
#[derive(Clone)]
pub struct FsyncObserver(pub Arc<dyn Fn(std::time::Duration) + Send + Sync>);

impl std::fmt::Debug for FsyncObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FsyncObserver")
    }
}

/// One waiter of the group-commit thread.
enum SyncWaiter {
    Log(LogFlushed<TypeConfig>),
    Notify(oneshot::Sender<io::Result<()>>),
}

impl SyncWaiter {
    fn complete(self, res: Result<(), String>) {
        let res = res.map_err(io::Error::other);
        match self {
            SyncWaiter::Log(cb) => cb.log_io_completed(res),
            SyncWaiter::Notify(tx) => {
                let _ = tx.send(res);
            }
        }
    }
}

/// The group-commit thread: syncs the WAL once for every batch of queued waiters. It holds
/// only a weak reference to the database so that it never keeps it open; it ends when every
/// [`Syncer`] clone is dropped.
#[derive(Clone)]
pub(crate) struct Syncer {
    tx: mpsc::Sender<SyncWaiter>,
    syncs: Arc<AtomicU64>,
}

impl Syncer {
    /// `durable`: the data dir's durable mark, updated around every sync (`None` only in
    /// tests of the thread itself).
    pub(crate) fn spawn(
        db: &Arc<DB>,
        durable: Option<DurableFile>,
        observer: Option<FsyncObserver>,
    ) -> io::Result<Syncer> {
        Syncer::spawn_gated(db, durable, None, observer)
    }

    /// With a gate, the thread waits for one token per batch after taking the batch's first
    /// waiter (tests use it to queue waiters behind a sync deterministically).
    fn spawn_gated(
        db: &Arc<DB>,
        durable: Option<DurableFile>,
        gate: Option<mpsc::Receiver<()>>,
        observer: Option<FsyncObserver>,
    ) -> io::Result<Syncer> {
        let (tx, rx) = mpsc::channel::<SyncWaiter>();
        let weak: Weak<DB> = Arc::downgrade(db);
        let syncs = Arc::new(AtomicU64::new(0));
        let counter = syncs.clone();
        let mut marker = match durable {
            Some(d) => Some(Marker::spawn(d)?),
            None => None,
        };
        std::thread::Builder::new()
            .name("raft-wal-sync".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    if let Some(gate) = &gate {
                        let _ = gate.recv();
                    }
                    let mut batch = vec![first];
                    batch.extend(rx.try_iter());
                    let started = std::time::Instant::now();
                    let res = match weak.upgrade() {
                        Some(db) => sync_wal(&db, marker.as_mut()),
                        None => Err("database closed".to_string()),
                    };
                    if let Some(observe) = &observer {
                        observe.0(started.elapsed());
                    }
                    counter.fetch_add(1, Ordering::Relaxed);
                    if let Err(e) = &res {
                        tracing::error!(error = %e, "WAL sync failed");
                    }
                    match (&mut marker, res) {
                        (Some(m), res) => m.answer_after_mark(res, batch),
                        (None, res) => {
                            for w in batch {
                                w.complete(res.clone().map(|_| ()));
                            }
                        }
                    }
                }
            })?;
        Ok(Syncer { tx, syncs })
    }

    /// How many WAL syncs the thread did.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    fn enqueue(&self, w: SyncWaiter) {
        if let Err(mpsc::SendError(w)) = self.tx.send(w) {
            w.complete(Err("WAL sync thread stopped".into()));
        }
    }

    /// Waits until everything written so far is in the synced WAL.
    pub(crate) async fn sync(&self) -> io::Result<()> {
        let (tx, rx) = oneshot::channel();
        self.enqueue(SyncWaiter::Notify(tx));
        rx.await
            .map_err(|_| io::Error::other("WAL sync thread stopped"))?
    }
}

/// One job of the mark thread: record `mark` (only if the WAL sync before it succeeded),
/// then answer `waiters` and `done` with the outcome.
struct MarkJob {
    mark: Mark,
    wal: Result<(), String>,
    waiters: Vec<SyncWaiter>,
    done: Option<mpsc::Sender<Result<(), String>>>,
}

impl MarkJob {
    fn fail(self, e: &str) {
        for w in self.waiters {
            w.complete(Err(e.to_string()));
        }
        if let Some(done) = self.done {
            let _ = done.send(Err(e.to_string()));
        }
    }
}

/// The durable mark's own thread. The WAL sync thread hands it each synced batch, so the
/// mark's `fdatasync` for batch N runs while the WAL sync of batch N+1 does: under load the two
/// flushes overlap instead of adding up (one client still waits for both, in sequence).
/// Jobs run in order, so waiters are answered in the order their batches were synced.
struct Marker {
    tx: mpsc::Sender<MarkJob>,
    /// The last mark handed to the thread (it may not be written yet).
    enqueued: Mark,
}

impl Marker {
    fn spawn(mut durable: DurableFile) -> io::Result<Marker> {
        let enqueued = durable.mark();
        let (tx, rx) = mpsc::channel::<MarkJob>();
        std::thread::Builder::new()
            .name("raft-mark-sync".into())
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    let res = job.wal.and_then(|()| {
                        durable
                            .record(job.mark)
                            .map_err(|e| format!("writing the durable mark: {e}"))
                    });
                    if let Err(e) = &res {
                        tracing::error!(error = %e, "durable mark not written");
                    }
                    for w in job.waiters {
                        w.complete(res.clone());
                    }
                    if let Some(done) = job.done {
                        let _ = done.send(res);
                    }
                }
            })?;
        Ok(Marker { tx, enqueued })
    }

    fn send(&self, job: MarkJob) {
        if let Err(mpsc::SendError(job)) = self.tx.send(job) {
            job.fail("durable mark thread stopped");
        }
    }

    /// Records `mark` and waits until it is durable (used to lower the mark before a WAL
    /// sync that may make a truncation durable).
    fn record_now(&mut self, mark: Mark) -> Result<(), String> {
        let (done, rx) = mpsc::channel();
        self.send(MarkJob {
            mark,
            wal: Ok(()),
            waiters: Vec::new(),
            done: Some(done),
        });
        rx.recv()
            .map_err(|_| "durable mark thread stopped".to_string())??;
        self.enqueued = mark;
        Ok(())
    }

    /// Hands a synced (or failed) batch over: its waiters are answered once the mark of the
    /// state the sync made durable is durable too.
    fn answer_after_mark(&mut self, synced: Result<Mark, String>, waiters: Vec<SyncWaiter>) {
        let (mark, wal) = match synced {
            Ok(m) => (m, Ok(())),
            Err(e) => (self.enqueued, Err(e)),
        };
        self.enqueued = mark;
        self.send(MarkJob {
            mark,
            wal,
            waiters,
            done: None,
        });
    }
}

/// Syncs the WAL; with a [`Marker`], returns the state (last log id, vote) this sync made
/// durable, for the mark. The state is read after the batch was taken, so every waiter's
/// write is in it. A component lower than the last mark (a truncated suffix) is recorded, and
/// made durable, *before* the sync, since the sync may make the lowering durable; a higher
/// one is recorded after it (by the mark thread, before the batch is answered). So the mark
/// on disk never claims more than the WAL holds durably, and a plain crash never trips the
/// check. Cost: one small `fdatasync` per group commit that appended or voted (none when
/// nothing changed), overlapped with the next WAL sync.
fn sync_wal(db: &Arc<DB>, marker: Option<&mut Marker>) -> Result<Mark, String> {
    let Some(marker) = marker else {
        db.flush_wal(true).map_err(|e| e.to_string())?;
        return Ok(Mark::default());
    };
    let now = LogReader { db: db.clone() }
        .mark()
        .map_err(|e| format!("reading the log state: {e}"))?;
    let floor = now.min(&marker.enqueued);
    if floor != marker.enqueued {
        marker
            .record_now(floor)
            .map_err(|e| format!("lowering the durable mark: {e}"))?;
    }
    db.flush_wal(true).map_err(|e| e.to_string())?;
    Ok(now)
}

/// Opens the durable mark of `data_dir` and checks that the Raft state recovered in `db`
/// covers it; creates the mark for a data dir that has none yet (a new one, or one made
/// before the mark existed). Fails with [`RaftError::StateBehind`] when the recovered log or
/// vote is behind what the member acknowledged, or when the mark is damaged or missing although
/// it was created: then what was acknowledged is unknown and the member must not serve.
pub(crate) fn open_durable_mark(data_dir: &Path, db: &Arc<DB>) -> Result<DurableFile, RaftError> {
    let storage = |e: StorageError| RaftError::Storage(e.to_string());
    let reader = LogReader { db: db.clone() };
    let found = reader.mark().map_err(storage)?;
    let path = data_dir.join(DURABLE_FILE);
    match DurableFile::open(data_dir) {
        Ok(Opened::Found(f)) if found.covers(&f.mark()) => Ok(f),
        Ok(Opened::Found(f)) => Err(behind_error(data_dir, &f.mark(), &found)),
        Ok(Opened::Missing) => {
            if reader
                .get_meta::<bool>(KEY_DURABLE_FILE)
                .map_err(storage)?
                .is_some()
            {
                return Err(RaftError::StateBehind(format!(
                    "data dir {}: {} is missing although this member created it, so what it \
                     acknowledged is unknown. {}",
                    data_dir.display(),
                    path.display(),
                    rejoin_advice(data_dir)
                )));
            }
            let f = DurableFile::create(data_dir, found)
                .map_err(|e| RaftError::Storage(format!("{}: {e}", path.display())))?;
            let cf = cf(db, META_CF).map_err(storage)?;
            let v = bincode::serialize(&true).map_err(|e| RaftError::Storage(e.to_string()))?;
            let mut synced = WriteOptions::default();
            synced.set_sync(true);
            db.put_cf_opt(cf, KEY_DURABLE_FILE, v, &synced)
                .map_err(|e| RaftError::Storage(e.to_string()))?;
            Ok(f)
        }
        Err(e) => Err(RaftError::StateBehind(format!(
            "data dir {}: {} unreadable ({e}), so what this member acknowledged is unknown. {}",
            data_dir.display(),
            path.display(),
            rejoin_advice(data_dir)
        ))),
    }
}

/// Reads the log; cheap to clone (openraft gives one to each replication task).
#[derive(Clone)]
pub struct LogReader {
    db: Arc<DB>,
}

impl LogReader {
    fn get_meta<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StorageError> {
        let cf = cf(&self.db, META_CF)?;
        match self.db.get_cf(cf, key).map_err(read_err)? {
            None => Ok(None),
            Some(v) => Ok(Some(bincode::deserialize(&v).map_err(read_err)?)),
        }
    }

    fn last_log_id(&self) -> Result<Option<LogId>, StorageError> {
        let cf = cf(&self.db, LOG_CF)?;
        match self.db.iterator_cf(cf, IteratorMode::End).next() {
            None => Ok(None),
            Some(item) => {
                let (_, v) = item.map_err(read_err)?;
                // An entry's log id is its first field; bincode reads just that prefix.
                Ok(Some(bincode::deserialize::<LogId>(&v).map_err(read_err)?))
            }
        }
    }
}

/// What a member's data dir would recover (last log id, vote), read without changing it: the
/// database opened read-only (RocksDB replays the WAL in memory). For tests that judge a
/// damaged data dir before starting the member.
#[cfg(test)]
pub(crate) fn recovered_mark_read_only(data_dir: &Path) -> Result<Mark, String> {
    let path = data_dir.join("db");
    let opts = rocksdb::Options::default();
    let cfs = DB::list_cf(&opts, &path).map_err(|e| e.to_string())?;
    let db = DB::open_cf_for_read_only(&opts, &path, &cfs, false).map_err(|e| e.to_string())?;
    LogReader { db: Arc::new(db) }.mark().map_err(|e| e.to_string())
}

impl LogReader {
    /// The last log id (the last purged one when the log is empty) and the vote, as stored.
    pub(crate) fn mark(&self) -> Result<Mark, StorageError> {
        let last_purged: Option<LogId> = self.get_meta(KEY_LAST_PURGED)?;
        Ok(Mark {
            last_log_id: self.last_log_id()?.or(last_purged),
            vote: self.get_meta(KEY_VOTE)?,
        })
    }
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let cf = cf(&self.db, LOG_CF)?;
        let from = index_key(start);
        let mut out = Vec::new();
        for item in self
            .db
            .iterator_cf(cf, IteratorMode::From(&from, Direction::Forward))
        {
            let (k, v) = item.map_err(read_err)?;
            let index = u64::from_be_bytes(
                k.as_ref()
                    .try_into()
                    .map_err(|_| read_err(io::Error::other(format!("bad log key of {} bytes", k.len()))))?,
            );
            if !range.contains(&index) {
                break;
            }
            let entry: Entry = bincode::deserialize(&v)
                .map_err(|e| StorageError::from(StorageIOError::read_log_at_index(index, &e)))?;
            out.push(entry);
        }
        Ok(out)
    }
}

/// The log storage openraft owns. `committed` mirrors the last committed index (+1, 0 = none)
/// for [`crate::RaftStatus`].
pub struct LogStore {
    reader: LogReader,
    syncer: Syncer,
    committed: Arc<AtomicU64>,
}

impl LogStore {
    /// `db` must have been opened with the [`LOG_CF`] and [`META_CF`] column families.
    pub(crate) fn new(
        db: Arc<DB>,
        syncer: Syncer,
        committed: Arc<AtomicU64>,
    ) -> Result<LogStore, StorageError> {
        cf(&db, LOG_CF)?;
        cf(&db, META_CF)?;
        let s = LogStore {
            reader: LogReader { db },
            syncer,
            committed,
        };
        let c = s.reader.get_meta::<Option<LogId>>(KEY_COMMITTED)?.flatten();
        s.committed.store(c.map_or(0, |c| c.index + 1), Ordering::Relaxed);
        Ok(s)
    }

    fn db(&self) -> &DB {
        &self.reader.db
    }

    fn put_meta<T: serde::Serialize>(&self, key: &[u8], value: &T) -> Result<(), StorageError> {
        let cf = cf(self.db(), META_CF)?;
        let v = bincode::serialize(value).map_err(write_err)?;
        self.db().put_cf_opt(cf, key, v, &unsynced()).map_err(write_err)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        self.reader.try_get_log_entries(range).await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id: Option<LogId> = self.reader.get_meta(KEY_LAST_PURGED)?;
        let last_log_id = self.reader.last_log_id()?.or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> LogReader {
        self.reader.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.put_meta(KEY_VOTE, vote)?;
        self.syncer
            .sync()
            .await
            .map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.reader.get_meta(KEY_VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Not synced: openraft tolerates losing it (it only speeds up re-applying on restart).
        self.put_meta(KEY_COMMITTED, &committed)?;
        self.committed
            .store(committed.map_or(0, |c| c.index + 1), Ordering::Relaxed);
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.reader.get_meta::<Option<LogId>>(KEY_COMMITTED)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let cf = cf(self.db(), LOG_CF)?;
        let mut batch = WriteBatch::default();
        for entry in entries {
            let v = bincode::serialize(&entry)
                .map_err(|e| StorageError::from(StorageIOError::write_log_entry(*entry.get_log_id(), &e)))?;
            batch.put_cf(cf, index_key(entry.get_log_id().index), v);
        }
        self.db().write_opt(batch, &unsynced()).map_err(write_err)?;
        // Reported flushed only once the group-commit thread has synced the WAL.
        self.syncer.enqueue(SyncWaiter::Log(callback));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let cf = cf(self.db(), LOG_CF)?;
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(cf, &index_key(log_id.index)[..], &KEY_BEYOND_LAST[..]);
        self.db().write_opt(batch, &unsynced()).map_err(write_err)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let log_cf = cf(self.db(), LOG_CF)?;
        let meta_cf = cf(self.db(), META_CF)?;
        let mut batch = WriteBatch::default();
        let v = bincode::serialize(&log_id).map_err(write_err)?;
        batch.put_cf(meta_cf, KEY_LAST_PURGED, v);
        batch.delete_range_cf(
            log_cf,
            &index_key(0)[..],
            &index_key(log_id.index.saturating_add(1))[..],
        );
        self.db().write_opt(batch, &unsynced()).map_err(|e| {
            StorageError::from_io_error(ErrorSubject::Logs, ErrorVerb::Delete, io::Error::other(e))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiters_queued_behind_a_sync_share_the_next_one() {
        let dir = tempfile::TempDir::new().unwrap();
        let mut opts = rocksdb::Options::default();
        opts.create_if_missing(true);
        let db = Arc::new(DB::open(&opts, dir.path()).unwrap());
        let (gate, gate_rx) = mpsc::channel();
        let syncer = Syncer::spawn_gated(&db, None, Some(gate_rx), None).unwrap();

        db.put_opt(b"k", b"v", &unsynced()).unwrap();
        let mut waiters: Vec<_> = (0..3)
            .map(|_| {
                let (tx, rx) = oneshot::channel();
                syncer.enqueue(SyncWaiter::Notify(tx));
                rx
            })
            .collect();
        // The thread holds the first waiter at the gate: nobody is acknowledged before a sync.
        for w in &mut waiters {
            assert!(matches!(w.try_recv(), Err(oneshot::error::TryRecvError::Empty)));
        }
        assert_eq!(syncer.syncs(), 0);

        gate.send(()).unwrap();
        for w in waiters {
            w.await.unwrap().unwrap();
        }
        assert_eq!(syncer.syncs(), 1, "one sync for all three waiters");

        gate.send(()).unwrap();
        syncer.sync().await.unwrap();
        assert_eq!(syncer.syncs(), 2);
    }

    fn db_with_log_cfs(dir: &Path) -> Arc<DB> {
        let mut opts = rocksdb::Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        Arc::new(DB::open_cf(&opts, dir.join("db"), [LOG_CF, META_CF]).unwrap())
    }

    fn put_log_ids(db: &DB, term: u64, indexes: std::ops::RangeInclusive<u64>) {
        let cf = db.cf_handle(LOG_CF).unwrap();
        for i in indexes {
            let id = LogId::new(openraft::CommittedLeaderId::new(term, 1), i);
            // The mark reads only an entry's leading log id.
            db.put_cf_opt(cf, index_key(i), bincode::serialize(&id).unwrap(), &unsynced())
                .unwrap();
        }
    }

    fn mark_on_disk(dir: &Path) -> Mark {
        match DurableFile::open(dir).unwrap() {
            Opened::Found(f) => f.mark(),
            Opened::Missing => panic!("no mark file"),
        }
    }

    /// A sync is answered only once the mark on disk covers what it synced; a truncated
    /// suffix lowers the mark (before the sync that makes the truncation durable).
    #[tokio::test]
    async fn the_mark_follows_the_synced_log_up_and_down() {
        let dir = tempfile::TempDir::new().unwrap();
        let db = db_with_log_cfs(dir.path());
        let durable = open_durable_mark(dir.path(), &db).unwrap();
        let syncer = Syncer::spawn(&db, Some(durable), None).unwrap();
        let id = |term, index| Some(LogId::new(openraft::CommittedLeaderId::new(term, 1), index));

        put_log_ids(&db, 1, 1..=5);
        syncer.sync().await.unwrap();
        assert_eq!(mark_on_disk(dir.path()).last_log_id, id(1, 5));

        let cf = db.cf_handle(LOG_CF).unwrap();
        db.delete_range_cf_opt(cf, &index_key(3)[..], &KEY_BEYOND_LAST[..], &unsynced())
            .unwrap();
        syncer.sync().await.unwrap();
        assert_eq!(mark_on_disk(dir.path()).last_log_id, id(1, 2));

        put_log_ids(&db, 2, 3..=4);
        syncer.sync().await.unwrap();
        assert_eq!(mark_on_disk(dir.path()).last_log_id, id(2, 4));
        assert!(
            open_durable_mark(dir.path(), &db).is_ok(),
            "the state covers its own mark"
        );
    }

    #[tokio::test]
    async fn waiters_fail_once_the_database_is_gone() {
        let dir = tempfile::TempDir::new().unwrap();
        let mut opts = rocksdb::Options::default();
        opts.create_if_missing(true);
        let db = Arc::new(DB::open(&opts, dir.path()).unwrap());
        let syncer = Syncer::spawn(&db, None, None).unwrap();
        drop(db);
        assert!(syncer.sync().await.is_err());
    }
}
