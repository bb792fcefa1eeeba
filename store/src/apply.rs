//! Applying commands: every command of a batch goes into one RocksDB write batch.
//!
//! Each command is first checked against the state (a failing command must change nothing),
//! then executed; execution can then only fail on storage errors, which are fatal for the
//! caller. Writes update the in-memory index at once and are kept in `pending` too, so later
//! commands and later txn ops read them before the batch reaches the database.

use std::collections::BTreeMap;

use rocksdb::{WriteBatch, WriteOptions, DB};

use crate::codec::{self, Rev, StoredKv, CF_KV, CF_LEASE, CF_META};
use crate::index::LiveMeta;
use crate::keyrange::KeyRange;
use crate::range;
use crate::state::{cf, LeaseEntry, Reader, State};
use crate::txn;
use crate::{
    Command, CommandResult, DeleteRangeRequest, DeleteRangeResponse, Event, EventKind, KeyValue, Lease,
    LeaseId, PutRequest, PutResponse, RequestOp, ResponseOp, Result, StoreError, TxnRequest, TxnResponse,
};

/// The outcome of one command: `Err` inside is the command's own failure (nothing changed);
/// `Err` outside is a storage failure.
type Outcome = Result<Result<CommandResult>>;

/// The revisions one writing command hands out: all its writes share the main revision
/// `begin + 1`, with increasing sub-revisions; the store revision moves only if it wrote.
struct WriteTxn {
    begin: i64,
    next_sub: i64,
}

impl WriteTxn {
    fn begin(st: &State) -> WriteTxn {
        WriteTxn {
            begin: st.rev,
            next_sub: 0,
        }
    }

    fn next_rev(&mut self) -> Rev {
        let rev = Rev::new(self.begin + 1, self.next_sub);
        self.next_sub += 1;
        rev
    }

    /// The revision a reader inside this command sees (etcd's in-txn header revision).
    fn visible(&self) -> i64 {
        if self.next_sub > 0 {
            self.begin + 1
        } else {
            self.begin
        }
    }

    fn end(self, st: &mut State) {
        st.rev = self.visible();
    }
}

/// One batch of commands on its way into the database.
pub(crate) struct Batch<'a> {
    db: &'a DB,
    wb: WriteBatch,
    pending: BTreeMap<Rev, KeyValue>,
    events: Vec<Event>,
}

impl<'a> Batch<'a> {
    pub fn new(db: &'a DB) -> Batch<'a> {
        Batch {
            db,
            wb: WriteBatch::default(),
            pending: BTreeMap::new(),
            events: Vec::new(),
        }
    }

    fn reader(&self) -> Reader<'_> {
        Reader::new(self.db, Some(&self.pending))
    }

    pub fn apply(&mut self, st: &mut State, cmd: &Command) -> Outcome {
        match cmd {
            Command::Noop => Ok(Ok(CommandResult::Noop { revision: st.rev })),
            Command::Put(req) => self.put_cmd(st, req),
            Command::DeleteRange(req) => self.delete_cmd(st, req),
            Command::Txn(req) => self.txn_cmd(st, req),
            Command::Compact { revision } => Ok(self.compact_cmd(st, *revision)),
            Command::LeaseGrant { id, ttl_secs } => Ok(self.grant_cmd(st, *id, *ttl_secs)),
            Command::LeaseRevoke { id } => self.revoke_cmd(st, *id),
        }
    }

    /// Writes the batch with the counters and the marker; returns the events it produced.
    pub fn commit(mut self, st: &State, marker: Option<&[u8]>) -> Result<Vec<Event>> {
        let meta = cf(self.db, CF_META);
        self.wb
            .put_cf(meta, codec::META_REVISION, codec::encode_i64(st.rev));
        self.wb.put_cf(
            meta,
            codec::META_COMPACT_REVISION,
            codec::encode_i64(st.compact_rev),
        );
        if let Some(marker) = marker {
            self.wb.put_cf(meta, codec::META_APPLIED_MARKER, marker);
        }
        let mut opts = WriteOptions::default();
        // The caller syncs the shared WAL with its own log writes.
        opts.set_sync(false);
        self.db.write_opt(self.wb, &opts)?;
        Ok(self.events)
    }

    fn put_cmd(&mut self, st: &mut State, req: &PutRequest) -> Outcome {
        if let Err(e) = txn::check_put(st, req) {
            return Ok(Err(e));
        }
        let mut w = WriteTxn::begin(st);
        let resp = self.exec_put(st, &mut w, req)?;
        w.end(st);
        Ok(Ok(CommandResult::Put(PutResponse {
            revision: st.rev,
            ..resp
        })))
    }

    fn delete_cmd(&mut self, st: &mut State, req: &DeleteRangeRequest) -> Outcome {
        if req.key.is_empty() {
            return Ok(Err(StoreError::EmptyKey));
        }
        let mut w = WriteTxn::begin(st);
        let resp = self.exec_delete(st, &mut w, &req.key, &req.range_end, req.prev_kv)?;
        w.end(st);
        Ok(Ok(CommandResult::DeleteRange(DeleteRangeResponse {
            revision: st.rev,
            ..resp
        })))
    }

    fn txn_cmd(&mut self, st: &mut State, req: &TxnRequest) -> Outcome {
        if let Err(e) = txn::check_static(req) {
            return Ok(Err(e));
        }
        let path = txn::compare_path(st, &self.reader(), req)?;
        if let Err(e) = txn::check_path(st, req, &path) {
            return Ok(Err(e));
        }
        let mut w = WriteTxn::begin(st);
        let mut path = path.into_iter();
        let resp = self.exec_txn(st, &mut w, req, &mut path)?;
        w.end(st);
        Ok(Ok(CommandResult::Txn(TxnResponse {
            revision: st.rev,
            ..resp
        })))
    }

    fn compact_cmd(&mut self, st: &mut State, at: i64) -> Result<CommandResult> {
        if at > st.rev {
            return Err(StoreError::FutureRevision);
        }
        if at <= st.compact_rev {
            return Err(StoreError::Compacted {
                compact_revision: st.compact_rev,
            });
        }
        st.compact_rev = at;
        let mut dropped = Vec::new();
        st.index.retain(|_, history| !history.compact(at, &mut dropped));
        let kv_cf = cf(self.db, CF_KV);
        for rev in dropped {
            self.wb.delete_cf(kv_cf, rev.to_key());
            self.pending.remove(&rev);
        }
        Ok(CommandResult::Compact { revision: st.rev })
    }

    fn grant_cmd(&mut self, st: &mut State, id: LeaseId, ttl_secs: i64) -> Result<CommandResult> {
        // As etcd's lessor: id 0 means "no lease" and cannot be granted.
        if id == 0 {
            return Err(StoreError::LeaseNotFound);
        }
        if st.leases.contains_key(&id) {
            return Err(StoreError::LeaseExists);
        }
        st.leases.insert(
            id,
            LeaseEntry {
                ttl_secs,
                keys: Default::default(),
            },
        );
        let record = codec::encode(&Lease { id, ttl_secs });
        self.wb
            .put_cf(cf(self.db, CF_LEASE), codec::lease_key(id), record);
        Ok(CommandResult::LeaseGrant {
            id,
            ttl_secs,
            revision: st.rev,
        })
    }

    fn revoke_cmd(&mut self, st: &mut State, id: LeaseId) -> Outcome {
        let Some(entry) = st.leases.get(&id) else {
            return Ok(Err(StoreError::LeaseNotFound));
        };
        let keys: Vec<Vec<u8>> = entry.keys.iter().cloned().collect();
        let mut w = WriteTxn::begin(st);
        for key in keys {
            self.exec_delete(st, &mut w, &key, &[], false)?;
        }
        w.end(st);
        st.leases.remove(&id);
        self.wb.delete_cf(cf(self.db, CF_LEASE), codec::lease_key(id));
        Ok(Ok(CommandResult::LeaseRevoke { revision: st.rev }))
    }

    fn write_version(&mut self, rev: Rev, kv: KeyValue, tombstone: bool) {
        let stored = StoredKv { kv, tombstone };
        self.wb
            .put_cf(cf(self.db, CF_KV), rev.to_key(), codec::encode(&stored));
        let kind = if tombstone {
            EventKind::Delete
        } else {
            EventKind::Put
        };
        self.events.push(Event {
            kind,
            kv: stored.kv.clone(),
            prev_kv: None,
        });
        self.pending.insert(rev, stored.kv);
    }

    fn exec_put(&mut self, st: &mut State, w: &mut WriteTxn, req: &PutRequest) -> Result<PutResponse> {
        let prev_meta = st.live_meta(&req.key);
        let prev_kv = match st.live_rev(&req.key) {
            Some(rev) if req.prev_kv || req.ignore_value => Some(self.reader().get(rev)?),
            _ => None,
        };
        let value = match (&prev_kv, req.ignore_value) {
            (Some(prev), true) => prev.value.clone(),
            _ => req.value.clone(),
        };
        let old_lease = prev_meta.map_or(0, |m| m.lease);
        let lease = if req.ignore_lease { old_lease } else { req.lease };
        let rev = w.next_rev();
        let kv = KeyValue {
            key: req.key.clone(),
            create_revision: prev_meta.map_or(rev.main, |m| m.create_revision),
            mod_revision: rev.main,
            version: prev_meta.map_or(1, |m| m.version + 1),
            value,
            lease,
        };
        st.index
            .entry(req.key.clone())
            .or_default()
            .record_put(rev, LiveMeta::of(&kv));
        st.move_lease(&req.key, old_lease, lease);
        self.write_version(rev, kv, false);
        Ok(PutResponse {
            revision: w.visible(),
            prev_kv: prev_kv.filter(|_| req.prev_kv),
        })
    }

    fn exec_delete(
        &mut self,
        st: &mut State,
        w: &mut WriteTxn,
        key: &[u8],
        range_end: &[u8],
        want_prev: bool,
    ) -> Result<DeleteRangeResponse> {
        let targets: Vec<(Vec<u8>, Rev, LeaseId)> = KeyRange::new(key, range_end)
            .iter(&st.index)
            .filter_map(|(k, h)| Some((k.clone(), h.visible_at(i64::MAX)?, h.live()?.lease)))
            .collect();
        let mut prev_kvs = Vec::new();
        for (key, prev_rev, lease) in &targets {
            if want_prev {
                prev_kvs.push(self.reader().get(*prev_rev)?);
            }
            let rev = w.next_rev();
            let tombstone = KeyValue {
                key: key.clone(),
                mod_revision: rev.main,
                ..Default::default()
            };
            st.index
                .get_mut(key)
                .expect("target came from the index")
                .record_delete(rev);
            st.move_lease(key, *lease, 0);
            self.write_version(rev, tombstone, true);
        }
        Ok(DeleteRangeResponse {
            revision: w.visible(),
            deleted: targets.len() as i64,
            prev_kvs,
        })
    }

    fn exec_txn(
        &mut self,
        st: &mut State,
        w: &mut WriteTxn,
        req: &TxnRequest,
        path: &mut std::vec::IntoIter<bool>,
    ) -> Result<TxnResponse> {
        let succeeded = path.next().expect("the compare path covers every txn on it");
        let mut responses = Vec::new();
        for op in txn::branch(req, succeeded) {
            let resp = match op {
                RequestOp::Range(r) => ResponseOp::Range(range::range(st, &self.reader(), r, w.visible())?),
                RequestOp::Put(p) => ResponseOp::Put(self.exec_put(st, w, p)?),
                RequestOp::DeleteRange(d) => {
                    ResponseOp::DeleteRange(self.exec_delete(st, w, &d.key, &d.range_end, d.prev_kv)?)
                }
                RequestOp::Txn(t) => ResponseOp::Txn(self.exec_txn(st, w, t, path)?),
            };
            responses.push(resp);
        }
        Ok(TxnResponse {
            revision: w.visible(),
            succeeded,
            responses,
        })
    }
}
