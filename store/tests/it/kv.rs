//! Puts, deletes, ranges, batches and reopening.

use berth_store::*;

use crate::common::*;

#[test]
fn fresh_store_is_at_revision_one() {
    let (_dir, store) = open();
    assert_eq!(store.revision(), 1);
    assert_eq!(store.compact_revision(), 0);
    assert_eq!(store.applied_marker().unwrap(), None);
    let resp = store.range(&range_req("a", b"")).unwrap();
    assert_eq!((resp.revision, resp.count, resp.kvs.len()), (1, 0, 0));
}

#[test]
fn revisions_and_versions_through_put_delete_recreate() {
    let (_dir, store) = open();
    assert_eq!(put(&store, "a", "1").revision, 2);
    let kv = get(&store, "a").unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 2, 1));

    assert_eq!(put(&store, "a", "2").revision, 3);
    let kv = get(&store, "a").unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 3, 2));
    assert_eq!(kv.value, b"2");

    let del = delete(&store, "a", "");
    assert_eq!((del.revision, del.deleted), (4, 1));
    assert_eq!(del.prev_kvs[0].value, b"2");
    assert_eq!(get(&store, "a"), None);

    // Deleting nothing does not bump the revision.
    let del = delete(&store, "a", "");
    assert_eq!((del.revision, del.deleted), (4, 0));
    assert_eq!(store.revision(), 4);

    assert_eq!(put(&store, "a", "3").revision, 5);
    let kv = get(&store, "a").unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (5, 5, 1));

    // History stays readable.
    let old = store
        .range(&RangeRequest {
            revision: 3,
            ..range_req("a", b"")
        })
        .unwrap();
    assert_eq!(old.kvs[0].value, b"2");
    assert_eq!(old.revision, 5, "the header carries the current revision");
    let gone = store
        .range(&RangeRequest {
            revision: 4,
            ..range_req("a", b"")
        })
        .unwrap();
    assert!(gone.kvs.is_empty());
}

#[test]
fn put_options_and_errors() {
    let (_dir, store) = open();
    grant(&store, 9, 30).unwrap();
    put_with_lease(&store, "k", "v1", 9).unwrap();
    let rev = store.revision();

    let r = apply1(
        &store,
        Command::Put(PutRequest {
            prev_kv: true,
            ..put_req("k", "v2")
        }),
    )
    .unwrap();
    let CommandResult::Put(r) = r else { panic!() };
    assert_eq!(r.prev_kv.unwrap().value, b"v1");
    assert_eq!(r.revision, rev + 1);
    assert_eq!(get(&store, "k").unwrap().lease, 0, "a put without lease detaches");

    put_with_lease(&store, "k", "v3", 9).unwrap();
    let keep_value = PutRequest {
        ignore_value: true,
        ..put_req("k", "")
    };
    apply1(&store, Command::Put(keep_value)).unwrap();
    let kv = get(&store, "k").unwrap();
    assert_eq!((kv.value.as_slice(), kv.lease), (&b"v3"[..], 0));

    put_with_lease(&store, "k", "v4", 9).unwrap();
    let keep_lease = PutRequest {
        ignore_lease: true,
        ..put_req("k", "v5")
    };
    apply1(&store, Command::Put(keep_lease)).unwrap();
    let kv = get(&store, "k").unwrap();
    assert_eq!((kv.value.as_slice(), kv.lease), (&b"v5"[..], 9));

    let rev = store.revision();
    let missing = PutRequest {
        ignore_value: true,
        ..put_req("nope", "")
    };
    assert!(matches!(
        apply1(&store, Command::Put(missing)),
        Err(StoreError::KeyNotFound)
    ));
    let missing = PutRequest {
        ignore_lease: true,
        ..put_req("nope", "x")
    };
    assert!(matches!(
        apply1(&store, Command::Put(missing)),
        Err(StoreError::KeyNotFound)
    ));
    assert!(matches!(
        put_with_lease(&store, "x", "y", 42),
        Err(StoreError::LeaseNotFound)
    ));
    assert!(matches!(
        apply1(&store, put_cmd("", "y")),
        Err(StoreError::EmptyKey)
    ));
    let empty_delete = Command::DeleteRange(DeleteRangeRequest::default());
    assert!(matches!(apply1(&store, empty_delete), Err(StoreError::EmptyKey)));
    assert_eq!(store.revision(), rev, "failed commands change nothing");
    assert_eq!(get(&store, "x"), None);
    assert!(matches!(
        store.range(&range_req("", b"")),
        Err(StoreError::EmptyKey)
    ));
}

/// Keys a..e with: versions a=1,b=3,c=2,d=1,e=1; values chosen so value order differs from key order.
fn ranged_store() -> (tempfile::TempDir, std::sync::Arc<Store>) {
    let (dir, store) = open();
    put(&store, "c", "3"); // rev 2
    put(&store, "a", "5"); // rev 3
    put(&store, "b", "1"); // rev 4
    put(&store, "b", "2"); // rev 5
    put(&store, "d", "4"); // rev 6
    put(&store, "c", "9"); // rev 7
    put(&store, "b", "0"); // rev 8
    put(&store, "e", "6"); // rev 9
    put(&store, "zz", "7"); // rev 10
    (dir, store)
}

#[test]
fn range_key_conventions() {
    let (_dir, store) = ranged_store();
    assert_eq!(keys(&store.range(&range_req("b", b"")).unwrap()), ["b"]);
    assert_eq!(keys(&store.range(&range_req("b", b"d")).unwrap()), ["b", "c"]);
    assert_eq!(
        keys(&store.range(&range_req("d", b"\0")).unwrap()),
        ["d", "e", "zz"]
    );
    assert_eq!(keys(&store.range(&range_req("\0", b"\0")).unwrap()).len(), 6);
    assert!(
        store.range(&range_req("d", b"b")).unwrap().kvs.is_empty(),
        "inverted range is empty"
    );
    assert!(store.range(&range_req("bb", b"")).unwrap().kvs.is_empty());
}

#[test]
fn range_limit_count_and_more() {
    let (_dir, store) = ranged_store();
    let r = store
        .range(&RangeRequest {
            limit: 2,
            ..range_req("a", b"\0")
        })
        .unwrap();
    assert_eq!(
        (keys(&r), r.more, r.count, r.revision),
        (vec!["a".into(), "b".into()], true, 6, 10)
    );
    let r = store
        .range(&RangeRequest {
            limit: 6,
            ..range_req("a", b"\0")
        })
        .unwrap();
    assert_eq!((r.kvs.len(), r.more, r.count), (6, false, 6));
    let r = store
        .range(&RangeRequest {
            count_only: true,
            ..range_req("a", b"e")
        })
        .unwrap();
    assert_eq!((r.kvs.len(), r.more, r.count), (0, false, 4));
    let r = store
        .range(&RangeRequest {
            keys_only: true,
            ..range_req("a", b"c")
        })
        .unwrap();
    assert_eq!(keys(&r), ["a", "b"]);
    assert!(r.kvs.iter().all(|kv| kv.value.is_empty() && kv.version > 0));
}

#[test]
fn range_sorting() {
    let (_dir, store) = ranged_store();
    let sorted = |order, target| {
        let req = RangeRequest {
            sort_order: order,
            sort_target: target,
            ..range_req("a", b"f")
        };
        keys(&store.range(&req).unwrap())
    };
    use SortOrder::*;
    use SortTarget::*;
    assert_eq!(sorted(None, Key), ["a", "b", "c", "d", "e"]);
    assert_eq!(sorted(Ascend, Key), ["a", "b", "c", "d", "e"]);
    assert_eq!(sorted(Descend, Key), ["e", "d", "c", "b", "a"]);
    // Values: a=5 b=0 c=9 d=4 e=6.
    assert_eq!(sorted(Ascend, Value), ["b", "d", "a", "e", "c"]);
    assert_eq!(
        sorted(None, Value),
        ["b", "d", "a", "e", "c"],
        "NONE with another target ascends"
    );
    assert_eq!(sorted(Descend, Value), ["c", "e", "a", "d", "b"]);
    // Versions: a=1 b=3 c=2 d=1 e=1; ties stay in key order.
    assert_eq!(sorted(Ascend, Version), ["a", "d", "e", "c", "b"]);
    assert_eq!(sorted(Descend, Version), ["b", "c", "a", "d", "e"]);
    // Create revisions: c=2 a=3 b=4 d=6 e=9; mod revisions: a=3 d=6 c=7 b=8 e=9.
    assert_eq!(sorted(Ascend, Create), ["c", "a", "b", "d", "e"]);
    assert_eq!(sorted(Descend, Create), ["e", "d", "b", "a", "c"]);
    assert_eq!(sorted(Ascend, Mod), ["a", "d", "c", "b", "e"]);
    assert_eq!(sorted(Descend, Mod), ["e", "b", "c", "d", "a"]);

    // With a sort, the limit applies after sorting over the whole range.
    let req = RangeRequest {
        sort_order: Descend,
        sort_target: Mod,
        limit: 2,
        ..range_req("a", b"f")
    };
    let r = store.range(&req).unwrap();
    assert_eq!(
        (keys(&r), r.more, r.count),
        (vec!["e".into(), "b".into()], true, 5)
    );
}

#[test]
fn range_revision_filters() {
    let (_dir, store) = ranged_store();
    let filtered = |min_mod, max_mod, min_create, max_create| {
        let req = RangeRequest {
            min_mod_revision: min_mod,
            max_mod_revision: max_mod,
            min_create_revision: min_create,
            max_create_revision: max_create,
            ..range_req("a", b"f")
        };
        let r = store.range(&req).unwrap();
        assert_eq!(r.count, 5, "count is taken before filters, as etcd");
        keys(&r)
    };
    assert_eq!(filtered(7, 0, 0, 0), ["b", "c", "e"]);
    assert_eq!(filtered(0, 6, 0, 0), ["a", "d"]);
    assert_eq!(filtered(0, 0, 4, 0), ["b", "d", "e"]);
    assert_eq!(filtered(0, 0, 0, 3), ["a", "c"]);
    assert_eq!(filtered(6, 8, 3, 6), ["b", "d"]);

    // Filters with a limit: the limit applies to the filtered result.
    let req = RangeRequest {
        min_mod_revision: 7,
        limit: 1,
        ..range_req("a", b"f")
    };
    let r = store.range(&req).unwrap();
    assert_eq!((keys(&r), r.more), (vec!["b".into()], true));
}

#[test]
fn historical_ranges() {
    let (_dir, store) = ranged_store();
    let at = |rev| {
        let r = store
            .range(&RangeRequest {
                revision: rev,
                ..range_req("a", b"\0")
            })
            .unwrap();
        r.kvs
            .iter()
            .map(|kv| {
                format!(
                    "{}={}",
                    String::from_utf8_lossy(&kv.key),
                    String::from_utf8_lossy(&kv.value)
                )
            })
            .collect::<Vec<_>>()
    };
    assert!(at(1).is_empty());
    assert_eq!(at(2), ["c=3"]);
    assert_eq!(at(5), ["a=5", "b=2", "c=3"]);
    assert_eq!(at(8), ["a=5", "b=0", "c=9", "d=4"]);
    let count = store
        .range(&RangeRequest {
            revision: 4,
            count_only: true,
            ..range_req("a", b"\0")
        })
        .unwrap();
    assert_eq!(count.count, 3);
    let future = store.range(&RangeRequest {
        revision: 11,
        ..range_req("a", b"")
    });
    assert!(matches!(future, Err(StoreError::FutureRevision)));
}

#[test]
fn delete_range_writes_one_revision() {
    let (_dir, store) = ranged_store();
    let rev = store.revision();
    let del = delete(&store, "b", "e");
    assert_eq!((del.revision, del.deleted), (rev + 1, 3));
    assert_eq!(
        del.prev_kvs.iter().map(|kv| kv.value.clone()).collect::<Vec<_>>(),
        [b"0", b"9", b"4"]
    );
    assert_eq!(
        keys(&store.range(&range_req("a", b"\0")).unwrap()),
        ["a", "e", "zz"]
    );
    let del = delete(&store, "a", "\0");
    assert_eq!((del.revision, del.deleted), (rev + 2, 3));
    assert!(dump(&store).is_empty());
}

#[test]
fn a_batch_is_applied_in_order_with_its_marker() {
    let (_dir, store) = open();
    let cmds = [
        put_cmd("a", "1"),
        Command::Put(PutRequest {
            ignore_value: true,
            prev_kv: true,
            ..put_req("a", "")
        }),
        Command::Put(PutRequest {
            lease: 5,
            ..put_req("b", "x")
        }),
        Command::Noop,
        Command::DeleteRange(DeleteRangeRequest {
            key: "a".into(),
            ..Default::default()
        }),
    ];
    let results = store.apply(&cmds, Some(b"log-7")).unwrap();
    assert!(matches!(
        results[0],
        Ok(CommandResult::Put(PutResponse { revision: 2, .. }))
    ));
    match &results[1] {
        Ok(CommandResult::Put(r)) => {
            assert_eq!(r.revision, 3);
            assert_eq!(
                r.prev_kv.as_ref().unwrap().value,
                b"1",
                "sees the earlier write of the batch"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(results[2], Err(StoreError::LeaseNotFound)));
    assert!(matches!(results[3], Ok(CommandResult::Noop { revision: 3 })));
    assert!(matches!(
        results[4],
        Ok(CommandResult::DeleteRange(DeleteRangeResponse {
            revision: 4,
            deleted: 1,
            ..
        }))
    ));
    assert_eq!(store.revision(), 4);
    assert_eq!(store.applied_marker().unwrap().as_deref(), Some(&b"log-7"[..]));
    // A batch without a marker keeps the previous one.
    store.apply(&[Command::Noop], None).unwrap();
    assert_eq!(store.applied_marker().unwrap().as_deref(), Some(&b"log-7"[..]));
}

#[test]
fn reopen_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let (hash, all, old) = {
        let store = Store::open(cfg(dir.path(), 8)).unwrap();
        put(&store, "a", "1");
        put(&store, "a", "2");
        put(&store, "b", "1");
        delete(&store, "b", "");
        grant(&store, 3, 60).unwrap();
        put_with_lease(&store, "c", "leased", 3).unwrap();
        compact(&store, 3).unwrap();
        store.apply(&[put_cmd("d", "x")], Some(b"m1")).unwrap();
        let old = store
            .range(&RangeRequest {
                revision: 4,
                ..range_req("a", b"\0")
            })
            .unwrap();
        // An open watcher must not keep the database open after the store is dropped.
        let _watcher = store
            .watch(WatchRequest {
                key: "a".into(),
                ..Default::default()
            })
            .unwrap();
        (store.hash(), dump(&store), old)
    };
    let store = Store::open(cfg(dir.path(), 8)).unwrap();
    assert_eq!(store.hash(), hash);
    assert_eq!(dump(&store), all);
    assert_eq!(store.revision(), 7);
    assert_eq!(store.compact_revision(), 3);
    assert_eq!(store.applied_marker().unwrap().as_deref(), Some(&b"m1"[..]));
    assert_eq!(
        store
            .range(&RangeRequest {
                revision: 4,
                ..range_req("a", b"\0")
            })
            .unwrap(),
        RangeResponse { revision: 7, ..old }
    );
    assert_eq!(
        store.lease(3),
        Some((Lease { id: 3, ttl_secs: 60 }, vec![b"c".to_vec()]))
    );
    // The index was rebuilt: versions continue.
    put(&store, "a", "3");
    assert_eq!(get(&store, "a").unwrap().version, 3);
    assert!(store.db_size_bytes() > 0);
}
