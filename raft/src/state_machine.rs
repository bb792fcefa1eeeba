//! The replicated state machine: openraft's view of [`berth_store::Store`].
//!
//! Each batch of entries is one `store.apply` call, and the batch's applied marker (the last
//! applied log id and the last membership) is written in the same RocksDB write batch, so the
//! data and "how far it got" can never disagree. Snapshots are the store's image plus that
//! marker; the latest one is kept in `<data_dir>/snapshot/current` (fsynced) so a restarted
//! leader can still send it to a follower behind the purged log.

// openraft's StorageError is what its storage traits return; our helpers return it unboxed too.
#![allow(clippy::result_large_err)]

use std::fs;
use std::io::{self, Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use berth_store::{Command, CommandResult, Store};
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftLogId, StorageIOError};
use serde::{Deserialize, Serialize};

use crate::leases::Leases;
use crate::types::Proposal;
use crate::types::{
    ApplyError, ApplyResult, Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};

/// How far the state machine got: stored atomically with every applied batch.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct AppliedMarker {
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
}

impl AppliedMarker {
    fn encode(&self) -> Result<Vec<u8>, StorageError> {
        bincode::serialize(self).map_err(|e| StorageIOError::write_state_machine(&e).into())
    }

    fn decode(bytes: &[u8]) -> Result<AppliedMarker, StorageError> {
        bincode::deserialize(bytes).map_err(|e| StorageIOError::read_state_machine(&e).into())
    }
}

/// Snapshot data: magic, marker length (u64 BE), marker, then the store image to the end.
const SNAPSHOT_MAGIC: &[u8; 4] = b"BRS1";

fn encode_snapshot_data(marker: &[u8], image: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + marker.len() + image.len());
    out.extend_from_slice(SNAPSHOT_MAGIC);
    out.extend_from_slice(&(marker.len() as u64).to_be_bytes());
    out.extend_from_slice(marker);
    out.extend_from_slice(image);
    out
}

fn decode_snapshot_data(data: &[u8]) -> Result<(&[u8], &[u8]), String> {
    if data.len() < 12 || &data[..4] != SNAPSHOT_MAGIC {
        return Err("not a berth snapshot".into());
    }
    let len = u64::from_be_bytes(data[4..12].try_into().expect("8 bytes"));
    let rest = &data[12..];
    if (rest.len() as u64) < len {
        return Err("truncated snapshot".into());
    }
    Ok(rest.split_at(len as usize))
}

fn sm_read_err(e: impl std::fmt::Display) -> StorageError {
    StorageIOError::read_state_machine(&io::Error::other(e.to_string())).into()
}

fn sm_write_err(e: impl std::fmt::Display) -> StorageError {
    StorageIOError::write_state_machine(&io::Error::other(e.to_string())).into()
}

/// Runs blocking store work off the async runtime.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, StorageError> {
    tokio::task::spawn_blocking(f).await.map_err(sm_write_err)
}

/// The snapshot currently kept on disk: `<dir>/current` = meta length (u64 BE), bincode
/// meta, snapshot data.
#[derive(Clone)]
struct SnapshotFile {
    dir: PathBuf,
}

impl SnapshotFile {
    fn path(&self) -> PathBuf {
        self.dir.join("current")
    }

    fn write(&self, meta: &SnapshotMeta, data: &[u8]) -> io::Result<()> {
        fs::create_dir_all(&self.dir)?;
        let meta = bincode::serialize(meta).map_err(io::Error::other)?;
        let tmp = self.dir.join("current.tmp");
        {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(&(meta.len() as u64).to_be_bytes())?;
            f.write_all(&meta)?;
            f.write_all(data)?;
            f.sync_all()?;
        }
        fs::rename(&tmp, self.path())?;
        fs::File::open(&self.dir)?.sync_all()
    }

    fn read(&self) -> io::Result<Option<(SnapshotMeta, Vec<u8>)>> {
        let mut bytes = match fs::read(self.path()) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        if bytes.len() < 8 {
            return Err(io::Error::other("truncated snapshot file"));
        }
        let len = u64::from_be_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
        if bytes.len() < 8 + len {
            return Err(io::Error::other("truncated snapshot file"));
        }
        let meta: SnapshotMeta = bincode::deserialize(&bytes[8..8 + len]).map_err(io::Error::other)?;
        let data = bytes.split_off(8 + len);
        Ok(Some((meta, data)))
    }
}

/// Counter that makes snapshot ids unique within a process.
static SNAPSHOT_SEQ: AtomicU64 = AtomicU64::new(0);

/// openraft's state machine over the store.
pub struct StateMachine {
    store: Arc<Store>,
    leases: Arc<Leases>,
    snapshots: SnapshotFile,
    /// Serializes applies with the locked fallback of snapshot building.
    apply_lock: Arc<parking_lot::Mutex<()>>,
    /// Cached copy of the stored marker (the state machine is its only writer).
    marker: AppliedMarker,
    /// Tells the owner (by its count) when openraft has dropped the state machine.
    _token: Arc<()>,
}

impl StateMachine {
    pub(crate) fn new(
        store: Arc<Store>,
        snapshot_dir: &Path,
        leases: Arc<Leases>,
        token: Arc<()>,
    ) -> Result<StateMachine, StorageError> {
        let marker = match store.applied_marker().map_err(sm_read_err)? {
            Some(b) => AppliedMarker::decode(&b)?,
            None => AppliedMarker::default(),
        };
        Ok(StateMachine {
            store,
            leases,
            snapshots: SnapshotFile {
                dir: snapshot_dir.to_path_buf(),
            },
            apply_lock: Arc::new(parking_lot::Mutex::new(())),
            marker,
            _token: token,
        })
    }
}

/// Builds snapshots concurrently with applies (openraft runs it in its own task).
pub struct SnapshotBuilder {
    store: Arc<Store>,
    snapshots: SnapshotFile,
    apply_lock: Arc<parking_lot::Mutex<()>>,
    _token: Arc<()>,
}

impl SnapshotBuilder {
    /// A consistent (marker, image) pair: the image is taken between two reads of the marker
    /// that agree, so no batch was applied in between; after a few tries, under the apply lock.
    fn consistent_image(&self) -> Result<(Vec<u8>, Vec<u8>), StorageError> {
        for attempt in 0..4 {
            let _guard = (attempt == 3).then(|| self.apply_lock.lock());
            let before = self.store.applied_marker().map_err(sm_read_err)?;
            let image = self.store.snapshot().map_err(sm_read_err)?;
            let after = self.store.applied_marker().map_err(sm_read_err)?;
            if before == after {
                return Ok((before.unwrap_or_default(), image));
            }
        }
        unreachable!("the last attempt holds the apply lock")
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let this = SnapshotBuilder {
            store: self.store.clone(),
            snapshots: self.snapshots.clone(),
            apply_lock: self.apply_lock.clone(),
            _token: self._token.clone(),
        };
        blocking(move || {
            let (marker_bytes, image) = this.consistent_image()?;
            let marker = if marker_bytes.is_empty() {
                AppliedMarker::default()
            } else {
                AppliedMarker::decode(&marker_bytes)?
            };
            let marker_bytes = marker.encode()?;
            let seq = SNAPSHOT_SEQ.fetch_add(1, Ordering::Relaxed);
            let snapshot_id = match &marker.last_applied {
                Some(l) => format!("{}-{}-{}-{seq}", l.leader_id.term, l.leader_id.node_id, l.index),
                None => format!("0-0-0-{seq}"),
            };
            let meta = SnapshotMeta {
                last_log_id: marker.last_applied,
                last_membership: marker.membership.clone(),
                snapshot_id,
            };
            let data = encode_snapshot_data(&marker_bytes, &image);
            this.snapshots
                .write(&meta, &data)
                .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
            tracing::info!(snapshot = %meta, bytes = data.len(), "built snapshot");
            Ok(Snapshot {
                meta,
                snapshot: Box::new(Cursor::new(data)),
            })
        })
        .await?
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let store = self.store.clone();
        let stored = blocking(move || store.applied_marker())
            .await?
            .map_err(sm_read_err)?;
        let marker = match stored {
            Some(b) => AppliedMarker::decode(&b)?,
            None => AppliedMarker::default(),
        };
        self.marker = marker.clone();
        Ok((marker.last_applied, marker.membership))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Vec<ApplyResult>>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut marker = self.marker.clone();
        let mut cmds = Vec::new();
        // Commands of entry i are cmds[ends[i-1]..ends[i]]; entries without commands (blank,
        // membership) get an empty result list.
        let mut ends = Vec::new();
        for entry in entries {
            let log_id = *entry.get_log_id();
            match entry.payload {
                EntryPayload::Normal(Proposal(batch)) => cmds.extend(batch),
                EntryPayload::Blank => {}
                EntryPayload::Membership(m) => marker.membership = StoredMembership::new(Some(log_id), m),
            }
            ends.push(cmds.len());
            marker.last_applied = Some(log_id);
        }
        if ends.is_empty() {
            return Ok(Vec::new());
        }
        let marker_bytes = marker.encode()?;
        let store = self.store.clone();
        let lock = self.apply_lock.clone();
        let last = marker.last_applied;
        let (cmds, results) = blocking(move || {
            let _guard = lock.lock();
            let results = store.apply(&cmds, Some(&marker_bytes));
            (cmds, results)
        })
        .await?;
        let results = results.map_err(|e| {
            let last = last.expect("non-empty batch");
            StorageError::from(StorageIOError::apply(last, &e))
        })?;
        if results.len() != cmds.len() {
            return Err(sm_write_err(format!(
                "store answered {} results for {} commands",
                results.len(),
                cmds.len()
            )));
        }
        self.marker = marker;

        let mut flat = Vec::with_capacity(results.len());
        for (cmd, res) in cmds.iter().zip(results) {
            match (cmd, &res) {
                (Command::LeaseGrant { .. }, Ok(CommandResult::LeaseGrant { id, ttl_secs, .. })) => {
                    self.leases.on_granted(*id, *ttl_secs)
                }
                (Command::LeaseRevoke { id }, _) => self.leases.on_revoked(*id),
                _ => {}
            }
            flat.push(res.map_err(ApplyError::from));
        }
        let mut flat = flat.into_iter();
        let mut start = 0;
        Ok(ends
            .into_iter()
            .map(|end| {
                let per_entry = flat.by_ref().take(end - start).collect();
                start = end;
                per_entry
            })
            .collect())
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder {
            store: self.store.clone(),
            snapshots: self.snapshots.clone(),
            apply_lock: self.apply_lock.clone(),
            _token: self._token.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let sig = Some(meta.signature());
        let bad = |e: String| -> StorageError {
            StorageIOError::read_snapshot(sig.clone(), &io::Error::other(e)).into()
        };
        let (marker_bytes, _) = decode_snapshot_data(&data).map_err(bad)?;
        let marker = AppliedMarker::decode(marker_bytes)?;
        if marker.last_applied != meta.last_log_id || marker.membership != meta.last_membership {
            return Err(bad(format!(
                "snapshot marker {:?} does not match its meta {}",
                marker.last_applied, meta
            )));
        }
        let store = self.store.clone();
        let lock = self.apply_lock.clone();
        let snapshots = self.snapshots.clone();
        let meta2 = meta.clone();
        blocking(move || -> Result<(), StorageError> {
            let (marker_bytes, image) = decode_snapshot_data(&data).map_err(sm_write_err)?;
            let _guard = lock.lock();
            store.restore(image).map_err(sm_write_err)?;
            // The image normally carries the marker it was taken at; make sure of it.
            if store.applied_marker().map_err(sm_read_err)?.as_deref() != Some(marker_bytes) {
                store.apply(&[], Some(marker_bytes)).map_err(sm_write_err)?;
            }
            snapshots
                .write(&meta2, &data)
                .map_err(|e| StorageIOError::write_snapshot(Some(meta2.signature()), &e).into())
        })
        .await??;
        tracing::info!(snapshot = %meta, "installed snapshot");
        self.marker = marker;
        self.leases.on_restored(&self.store);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let snapshots = self.snapshots.clone();
        let read = blocking(move || snapshots.read())
            .await?
            .map_err(|e| StorageError::from(StorageIOError::read_snapshot(None, &e)))?;
        Ok(read.map(|(meta, data)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_data_round_trip() {
        let data = encode_snapshot_data(b"marker", b"image bytes");
        let (m, i) = decode_snapshot_data(&data).unwrap();
        assert_eq!(m, b"marker");
        assert_eq!(i, b"image bytes");
        assert!(decode_snapshot_data(b"nope").is_err());
        assert!(decode_snapshot_data(&data[..14]).is_err());
    }
}
