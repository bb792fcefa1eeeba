//! The in-memory state beside RocksDB: counters, the key index and the lease table, plus the
//! reader that resolves a revision to its stored version.

use std::collections::{BTreeMap, BTreeSet};

use rocksdb::{ColumnFamily, DB};

use crate::codec::{self, Rev, StoredKv, CF_KV};
use crate::index::{KeyHistory, LiveMeta};
use crate::{KeyValue, Lease, LeaseId, Result, StoreError};

/// A lease as the state machine keeps it: its TTL and the live keys attached to it.
/// The attachments are not stored separately: they are rebuilt from the keys' versions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct LeaseEntry {
    pub ttl_secs: i64,
    pub keys: BTreeSet<Vec<u8>>,
}

/// Everything the store keeps in memory. Ordered maps only: apply must be deterministic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct State {
    pub rev: i64,
    pub compact_rev: i64,
    pub index: BTreeMap<Vec<u8>, KeyHistory>,
    pub leases: BTreeMap<LeaseId, LeaseEntry>,
}

impl State {
    /// Rebuilds the state from stored records: versions in revision order and lease records
    /// (from the database on open, or from a snapshot image on restore).
    pub fn rebuild<K, V>(
        rev: i64,
        compact_rev: i64,
        versions: impl IntoIterator<Item = Result<(K, V)>>,
        leases: impl IntoIterator<Item = Result<(K, V)>>,
    ) -> Result<State>
    where
        K: AsRef<[u8]>,
        V: AsRef<[u8]>,
    {
        if compact_rev > rev || rev < codec::INITIAL_REVISION {
            return Err(StoreError::Corrupt(format!(
                "revision {rev} with compact revision {compact_rev}"
            )));
        }
        let mut st = State {
            rev,
            compact_rev,
            index: BTreeMap::new(),
            leases: BTreeMap::new(),
        };
        st.load_versions(versions)?;
        for item in leases {
            let (_, value) = item?;
            let lease: Lease = codec::decode_lease(value.as_ref())?;
            st.leases.insert(
                lease.id,
                LeaseEntry {
                    ttl_secs: lease.ttl_secs,
                    keys: BTreeSet::new(),
                },
            );
        }
        st.attach_live_keys();
        Ok(st)
    }

    fn load_versions<K, V>(&mut self, versions: impl IntoIterator<Item = Result<(K, V)>>) -> Result<()>
    where
        K: AsRef<[u8]>,
        V: AsRef<[u8]>,
    {
        let mut last: Option<Rev> = None;
        for item in versions {
            let (key, value) = item?;
            let rev = Rev::from_key(key.as_ref())?;
            if last.is_some_and(|l| l >= rev) || rev.main > self.rev {
                return Err(StoreError::Corrupt(format!("version at {rev:?} out of order")));
            }
            last = Some(rev);
            let stored = codec::decode_stored_kv(value.as_ref())?;
            let history = self.index.entry(stored.kv.key.clone()).or_default();
            if stored.tombstone {
                history.record_delete(rev);
            } else {
                history.record_put(rev, LiveMeta::of(&stored.kv));
            }
        }
        Ok(())
    }

    fn attach_live_keys(&mut self) {
        for (key, history) in &self.index {
            let Some(lease) = history.live().map(|m| m.lease).filter(|l| *l != 0) else {
                continue;
            };
            match self.leases.get_mut(&lease) {
                Some(entry) => {
                    entry.keys.insert(key.clone());
                }
                // Revoke deletes a lease's keys in the same batch, so this means damage; the
                // key stays readable and simply has no lease to expire with.
                None => tracing::warn!(lease, "key attached to a missing lease"),
            }
        }
    }

    /// Moves `key`'s attachment from lease `old` to lease `new` (0 = none).
    pub fn move_lease(&mut self, key: &[u8], old: LeaseId, new: LeaseId) {
        if old == new {
            return;
        }
        if let Some(entry) = self.leases.get_mut(&old) {
            entry.keys.remove(key);
        }
        if let Some(entry) = self.leases.get_mut(&new) {
            entry.keys.insert(key.to_vec());
        }
    }

    /// The revision holding `key`'s live version.
    pub fn live_rev(&self, key: &[u8]) -> Option<Rev> {
        self.index.get(key).and_then(|h| h.visible_at(i64::MAX))
    }

    pub fn live_meta(&self, key: &[u8]) -> Option<LiveMeta> {
        self.index.get(key).and_then(|h| h.live())
    }
}

pub(crate) fn cf<'a>(db: &'a DB, name: &str) -> &'a ColumnFamily {
    db.cf_handle(name)
        .unwrap_or_else(|| panic!("column family {name} is opened with the store"))
}

/// Reads stored versions by revision: from the write batch being built (so later commands of
/// a batch, and later ops of a txn, see earlier writes), else from the database.
pub(crate) struct Reader<'a> {
    db: &'a DB,
    pending: Option<&'a BTreeMap<Rev, KeyValue>>,
}

impl<'a> Reader<'a> {
    pub fn new(db: &'a DB, pending: Option<&'a BTreeMap<Rev, KeyValue>>) -> Reader<'a> {
        Reader { db, pending }
    }

    pub fn get(&self, rev: Rev) -> Result<KeyValue> {
        if let Some(kv) = self.pending.and_then(|p| p.get(&rev)) {
            return Ok(kv.clone());
        }
        let bytes = self
            .db
            .get_pinned_cf(cf(self.db, CF_KV), rev.to_key())?
            .ok_or_else(|| StoreError::Corrupt(format!("index points to missing version {rev:?}")))?;
        let stored: StoredKv = codec::decode_stored_kv(&bytes)?;
        Ok(stored.kv)
    }

    /// `key`'s version as of revision `main`, if it existed then.
    pub fn get_at(&self, st: &State, key: &[u8], main: i64) -> Result<Option<KeyValue>> {
        st.index
            .get(key)
            .and_then(|h| h.visible_at(main))
            .map(|rev| self.get(rev))
            .transpose()
    }
}
