//! Helpers shared by the integration tests.

#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use berth_store::*;
use tempfile::TempDir;

pub fn cfg(path: &Path, watch_queue_len: usize) -> StoreConfig {
    StoreConfig {
        path: path.to_path_buf(),
        extra_column_families: vec!["raft_log".to_string()],
        watch_queue_len,
    }
}

/// A fresh store in a temporary directory (kept alive by the returned guard).
pub fn open() -> (TempDir, Arc<Store>) {
    open_with_queue(WATCH_QUEUE_LEN_DEFAULT)
}

pub fn open_with_queue(watch_queue_len: usize) -> (TempDir, Arc<Store>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(cfg(dir.path(), watch_queue_len)).unwrap();
    (dir, store)
}

/// Applies one command in its own batch; storage failures fail the test.
pub fn apply1(store: &Store, cmd: Command) -> Result<CommandResult> {
    store.apply(&[cmd], None).unwrap().pop().unwrap()
}

pub fn put_cmd(key: &str, value: &str) -> Command {
    Command::Put(put_req(key, value))
}

pub fn put_req(key: &str, value: &str) -> PutRequest {
    PutRequest {
        key: key.into(),
        value: value.into(),
        ..Default::default()
    }
}

/// Puts and returns the response.
pub fn put(store: &Store, key: &str, value: &str) -> PutResponse {
    match apply1(store, put_cmd(key, value)).unwrap() {
        CommandResult::Put(r) => r,
        other => panic!("unexpected {other:?}"),
    }
}

pub fn put_with_lease(store: &Store, key: &str, value: &str, lease: LeaseId) -> Result<CommandResult> {
    apply1(
        store,
        Command::Put(PutRequest {
            lease,
            ..put_req(key, value)
        }),
    )
}

pub fn delete(store: &Store, key: &str, range_end: &str) -> DeleteRangeResponse {
    let cmd = Command::DeleteRange(DeleteRangeRequest {
        key: key.into(),
        range_end: range_end.into(),
        prev_kv: true,
    });
    match apply1(store, cmd).unwrap() {
        CommandResult::DeleteRange(r) => r,
        other => panic!("unexpected {other:?}"),
    }
}

pub fn txn(store: &Store, req: TxnRequest) -> Result<TxnResponse> {
    apply1(store, Command::Txn(req)).map(|r| match r {
        CommandResult::Txn(t) => t,
        other => panic!("unexpected {other:?}"),
    })
}

pub fn grant(store: &Store, id: LeaseId, ttl_secs: i64) -> Result<CommandResult> {
    apply1(store, Command::LeaseGrant { id, ttl_secs })
}

pub fn compact(store: &Store, revision: i64) -> Result<CommandResult> {
    apply1(store, Command::Compact { revision })
}

pub fn range_req(key: &str, range_end: &[u8]) -> RangeRequest {
    RangeRequest {
        key: key.into(),
        range_end: range_end.to_vec(),
        ..Default::default()
    }
}

pub fn get(store: &Store, key: &str) -> Option<KeyValue> {
    store.range(&range_req(key, b"")).unwrap().kvs.pop()
}

pub fn keys(resp: &RangeResponse) -> Vec<String> {
    resp.kvs
        .iter()
        .map(|kv| String::from_utf8(kv.key.clone()).unwrap())
        .collect()
}

/// Every key and value, as a comparable list.
pub fn dump(store: &Store) -> Vec<KeyValue> {
    store.range(&range_req("\0", b"\0")).unwrap().kvs
}

/// Number of stored versions (the store's own versions column family).
pub fn stored_versions(store: &Store) -> usize {
    let db = store.db();
    let cf = db.cf_handle("store_kv").expect("versions column family");
    db.iterator_cf(cf, rocksdb::IteratorMode::Start).count()
}

pub fn is_compacted<T: std::fmt::Debug>(r: Result<T>) -> bool {
    matches!(r, Err(StoreError::Compacted { .. }))
}
