//! openraft's storage conformance suite on our log storage and state machine, each case on a
//! fresh store in a fresh temporary directory.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use berth_store::{Store, StoreConfig, WATCH_QUEUE_LEN_DEFAULT};
use openraft::testing::{StoreBuilder, Suite};
use tempfile::TempDir;

use crate::leases::Leases;
use crate::log_store::{open_durable_mark, LogStore, Syncer, LOG_CF, META_CF};
use crate::state_machine::StateMachine;
use crate::types::{StorageError, TypeConfig};

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError> {
        let dir = TempDir::new().expect("tempdir");
        let store = Store::open(StoreConfig {
            path: dir.path().join("db"),
            extra_column_families: vec![LOG_CF.to_string(), META_CF.to_string()],
            watch_queue_len: WATCH_QUEUE_LEN_DEFAULT,
        })
        .expect("open store");
        // With the durable mark, as a member runs: the suite's truncations and purges go
        // through the same group commit.
        let durable = open_durable_mark(dir.path(), store.db()).expect("durable mark");
        let syncer = Syncer::spawn(store.db(), Some(durable), None).expect("sync thread");
        let log = LogStore::new(store.db().clone(), syncer, Arc::new(AtomicU64::new(0)))?;
        let sm = StateMachine::new(
            store,
            &dir.path().join("snapshot"),
            Arc::new(Leases::new()),
            Arc::new(()),
        )?;
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite() {
    if let Err(e) = Suite::test_all(Builder) {
        panic!("storage suite: {e}");
    }
}
