//! Compaction.

use berth_store::*;

use crate::common::*;

fn at(store: &Store, revision: i64) -> Result<RangeResponse> {
    store.range(&RangeRequest {
        revision,
        ..range_req("\0", b"\0")
    })
}

#[test]
fn compaction_drops_history_but_keeps_latest_values() {
    let (_dir, store) = open();
    put(&store, "a", "1"); // 2
    put(&store, "a", "2"); // 3
    put(&store, "b", "1"); // 4
    delete(&store, "b", ""); // 5
    put(&store, "c", "1"); // 6
    put(&store, "a", "3"); // 7
    assert_eq!(stored_versions(&store), 6);
    let latest = dump(&store);

    assert!(matches!(
        compact(&store, 4),
        Ok(CommandResult::Compact { revision: 7 })
    ));
    assert_eq!(
        (store.compact_revision(), store.revision()),
        (4, 7),
        "compaction does not bump the revision"
    );
    // a@2 is gone; a@3 (newest at 4), b@4, its tombstone, c, a@7 stay.
    assert_eq!(stored_versions(&store), 5);
    assert!(is_compacted(at(&store, 3)));
    assert!(is_compacted(at(&store, 1)));
    let r = at(&store, 4).unwrap();
    assert_eq!(keys(&r), ["a", "b"], "reading at the compact revision is allowed");
    assert_eq!(r.kvs[0].value, b"2");
    assert_eq!(dump(&store), latest);

    // Compacting past b's delete drops b entirely.
    compact(&store, 6).unwrap();
    assert_eq!(stored_versions(&store), 3); // a@3, c@6, a@7
    assert_eq!(keys(&at(&store, 6).unwrap()), ["a", "c"]);
    assert_eq!(dump(&store), latest);

    assert!(matches!(
        compact(&store, 6),
        Err(StoreError::Compacted { compact_revision: 6 })
    ));
    assert!(matches!(
        compact(&store, 5),
        Err(StoreError::Compacted { compact_revision: 6 })
    ));
    assert!(matches!(compact(&store, 8), Err(StoreError::FutureRevision)));

    // Compacting at the current revision keeps one version per live key.
    compact(&store, 7).unwrap();
    assert_eq!(stored_versions(&store), 2);
    assert_eq!(dump(&store), latest);
    let kv = get(&store, "a").unwrap();
    assert_eq!(
        (kv.create_revision, kv.mod_revision, kv.version),
        (2, 7, 3),
        "metadata survives"
    );
    put(&store, "a", "4");
    assert_eq!(get(&store, "a").unwrap().version, 4);
}

#[test]
fn compaction_in_the_same_batch_as_writes() {
    let (_dir, store) = open();
    let results = store
        .apply(
            &[
                put_cmd("k", "1"),
                put_cmd("k", "2"),
                Command::DeleteRange(DeleteRangeRequest {
                    key: "k".into(),
                    ..Default::default()
                }),
                put_cmd("j", "1"),
                Command::Compact { revision: 4 },
            ],
            None,
        )
        .unwrap();
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    assert_eq!(stored_versions(&store), 1);
    assert_eq!(keys(&at(&store, 5).unwrap()), ["j"]);
}
