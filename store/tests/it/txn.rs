//! Transactions: compares, branches, nesting, duplicate keys, reads of own writes.

use berth_store::*;

use crate::common::*;

fn cmp(key: &str, result: CompareResult, target: CompareTarget) -> Compare {
    Compare {
        result,
        target,
        key: key.into(),
        range_end: vec![],
    }
}

fn range_op(key: &str) -> RequestOp {
    RequestOp::Range(range_req(key, b""))
}

fn put_op(key: &str, value: &str) -> RequestOp {
    RequestOp::Put(put_req(key, value))
}

fn delete_op(key: &str, range_end: &str) -> RequestOp {
    RequestOp::DeleteRange(DeleteRangeRequest {
        key: key.into(),
        range_end: range_end.into(),
        prev_kv: false,
    })
}

fn holds(store: &Store, c: Compare) -> bool {
    txn(
        store,
        TxnRequest {
            compare: vec![c],
            ..Default::default()
        },
    )
    .unwrap()
    .succeeded
}

#[test]
fn compares_of_every_target_and_result() {
    let (_dir, store) = open();
    grant(&store, 4, 10).unwrap();
    put(&store, "k", "m"); // rev 2
    put_with_lease(&store, "k", "m", 4).unwrap(); // rev 3: version 2, create 2, mod 3, lease 4
    use CompareResult::*;
    use CompareTarget::*;
    let cases: Vec<(CompareTarget, [bool; 4])> = vec![
        // [Equal, Greater, Less, NotEqual] against the key's actual value of each target.
        (Version(2), [true, false, false, false]),
        (Version(1), [false, true, false, true]),
        (CreateRevision(3), [false, false, true, true]),
        (CreateRevision(2), [true, false, false, false]),
        (ModRevision(3), [true, false, false, false]),
        (ModRevision(2), [false, true, false, true]),
        (Lease(4), [true, false, false, false]),
        (Lease(5), [false, false, true, true]),
        (Value(b"m".to_vec()), [true, false, false, false]),
        (Value(b"a".to_vec()), [false, true, false, true]),
        (Value(b"z".to_vec()), [false, false, true, true]),
    ];
    for (target, expected) in cases {
        for (result, want) in [Equal, Greater, Less, NotEqual].into_iter().zip(expected) {
            assert_eq!(
                holds(&store, cmp("k", result, target.clone())),
                want,
                "{target:?} {result:?}"
            );
        }
    }
    // A missing key compares as zeros; a value compare on it is false whatever the result.
    assert!(holds(&store, cmp("missing", Equal, Version(0))));
    assert!(holds(&store, cmp("missing", Equal, CreateRevision(0))));
    assert!(holds(&store, cmp("missing", Less, ModRevision(1))));
    assert!(holds(&store, cmp("missing", Equal, Lease(0))));
    assert!(!holds(&store, cmp("missing", Equal, Value(vec![]))));
    assert!(!holds(&store, cmp("missing", NotEqual, Value(b"x".to_vec()))));
    assert_eq!(store.revision(), 3, "read-only txns do not bump the revision");
}

#[test]
fn compares_over_a_range() {
    let (_dir, store) = open();
    put(&store, "p/a", "1");
    put(&store, "p/b", "1");
    put(&store, "p/b", "2");
    let ranged = |result, target| Compare {
        range_end: b"p0".to_vec(),
        ..cmp("p/", result, target)
    };
    assert!(holds(
        &store,
        ranged(CompareResult::Greater, CompareTarget::Version(0))
    ));
    assert!(
        !holds(&store, ranged(CompareResult::Equal, CompareTarget::Version(1))),
        "p/b has version 2"
    );
    assert!(holds(
        &store,
        ranged(CompareResult::Less, CompareTarget::ModRevision(5))
    ));
    let empty = Compare {
        range_end: b"r".to_vec(),
        ..cmp("q", CompareResult::Equal, CompareTarget::Version(0))
    };
    assert!(holds(&store, empty), "an empty range compares as a missing key");
}

#[test]
fn branches_and_revisions() {
    let (_dir, store) = open();
    put(&store, "a", "1"); // rev 2
    let req = |expected: &str| TxnRequest {
        compare: vec![cmp(
            "a",
            CompareResult::Equal,
            CompareTarget::Value(expected.into()),
        )],
        success: vec![put_op("b", "ok"), put_op("c", "ok"), range_op("a")],
        failure: vec![range_op("a")],
    };
    let fail = txn(&store, req("zzz")).unwrap();
    assert!(!fail.succeeded);
    assert_eq!(fail.revision, 2);
    match &fail.responses[..] {
        [ResponseOp::Range(r)] => assert_eq!(r.kvs[0].value, b"1"),
        other => panic!("{other:?}"),
    }
    let ok = txn(&store, req("1")).unwrap();
    assert!(ok.succeeded);
    assert_eq!(ok.revision, 3, "all writes of a txn share one revision");
    let (b, c) = (get(&store, "b").unwrap(), get(&store, "c").unwrap());
    assert_eq!((b.mod_revision, c.mod_revision), (3, 3));
    assert!(
        matches!(&ok.responses[..], [ResponseOp::Put(p1), ResponseOp::Put(p2), ResponseOp::Range(r)]
        if p1.revision == 3 && p2.revision == 3 && r.revision == 3)
    );

    // A txn that only deletes nothing does not bump the revision.
    let noop = txn(
        &store,
        TxnRequest {
            success: vec![delete_op("nothing", "")],
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!((noop.revision, store.revision()), (3, 3));
}

#[test]
fn reads_inside_a_txn_see_its_own_writes() {
    let (_dir, store) = open();
    put(&store, "x", "old"); // rev 2
    put(&store, "y", "gone"); // rev 3
    let t = txn(
        &store,
        TxnRequest {
            success: vec![
                range_op("x"),
                put_op("x", "new"),
                range_op("x"),
                delete_op("y", ""),
                range_op("y"),
                RequestOp::Range(RangeRequest {
                    revision: 3,
                    ..range_req("x", b"")
                }),
            ],
            ..Default::default()
        },
    )
    .unwrap();
    let ranges: Vec<&RangeResponse> = t
        .responses
        .iter()
        .filter_map(|r| {
            if let ResponseOp::Range(r) = r {
                Some(r)
            } else {
                None
            }
        })
        .collect();
    assert_eq!(
        (ranges[0].revision, ranges[0].kvs[0].value.as_slice()),
        (3, &b"old"[..])
    );
    assert_eq!(
        (ranges[1].revision, ranges[1].kvs[0].value.as_slice()),
        (4, &b"new"[..])
    );
    assert_eq!(ranges[1].kvs[0].version, 2);
    assert!(ranges[2].kvs.is_empty());
    assert_eq!(ranges[3].kvs[0].value, b"old", "historical read inside a txn");
    assert_eq!(t.revision, 4);
    // The delete of y and the put of x share revision 4, with increasing sub-revisions.
    assert_eq!(store.revision(), 4);
}

#[test]
fn nested_txns_use_compares_from_before_the_txn() {
    let (_dir, store) = open();
    put(&store, "flag", "0"); // rev 2
    let inner = TxnRequest {
        // Evaluated against the state before the outer txn: flag is still "0" and "n" missing.
        compare: vec![
            cmp("flag", CompareResult::Equal, CompareTarget::Value(b"0".to_vec())),
            cmp("n", CompareResult::Equal, CompareTarget::Version(0)),
        ],
        success: vec![put_op("inner", "then"), range_op("n")],
        failure: vec![put_op("inner", "else")],
    };
    let outer = TxnRequest {
        compare: vec![],
        success: vec![put_op("n", "1"), RequestOp::Txn(inner), put_op("after", "x")],
        failure: vec![],
    };
    let t = txn(&store, outer).unwrap();
    assert!(t.succeeded);
    assert_eq!(get(&store, "inner").unwrap().value, b"then");
    match &t.responses[1] {
        ResponseOp::Txn(nested) => {
            assert!(nested.succeeded);
            match &nested.responses[1] {
                ResponseOp::Range(r) => {
                    assert_eq!(r.kvs[0].value, b"1", "reads see earlier writes")
                }
                other => panic!("{other:?}"),
            }
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(store.revision(), 3);
    for key in ["n", "inner", "after"] {
        assert_eq!(get(&store, key).unwrap().mod_revision, 3);
    }
}

#[test]
fn duplicate_keys_are_rejected() {
    let (_dir, store) = open();
    put(&store, "a", "1");
    let rev = store.revision();
    let dup = |success: Vec<RequestOp>| {
        txn(
            &store,
            TxnRequest {
                success,
                ..Default::default()
            },
        )
    };
    assert!(matches!(
        dup(vec![put_op("a", "1"), put_op("a", "2")]),
        Err(StoreError::DuplicateKey)
    ));
    assert!(matches!(
        dup(vec![delete_op("a", "b"), put_op("a", "2")]),
        Err(StoreError::DuplicateKey)
    ));
    assert!(matches!(
        dup(vec![put_op("q", "2"), delete_op("p", "\0")]),
        Err(StoreError::DuplicateKey)
    ));
    let nested = |s: Vec<RequestOp>, f: Vec<RequestOp>| {
        RequestOp::Txn(TxnRequest {
            compare: vec![],
            success: s,
            failure: f,
        })
    };
    assert!(matches!(
        dup(vec![put_op("a", "1"), nested(vec![put_op("a", "2")], vec![])]),
        Err(StoreError::DuplicateKey)
    ));
    assert!(matches!(
        dup(vec![delete_op("a", ""), nested(vec![], vec![put_op("a", "2")])]),
        Err(StoreError::DuplicateKey)
    ));
    // Also on the branch that would not be taken.
    let req = TxnRequest {
        failure: vec![put_op("z", "1"), put_op("z", "2")],
        ..Default::default()
    };
    assert!(matches!(txn(&store, req), Err(StoreError::DuplicateKey)));
    assert_eq!(store.revision(), rev, "rejected txns change nothing");

    // Allowed: overlapping deletes, and the same key in both branches of a nested txn.
    let ok = dup(vec![
        delete_op("a", "c"),
        delete_op("a", ""),
        nested(vec![put_op("x", "then")], vec![put_op("x", "else")]),
    ])
    .unwrap();
    assert_eq!(ok.revision, rev + 1);
    match &ok.responses[1] {
        ResponseOp::DeleteRange(d) => assert_eq!(d.deleted, 0, "the first delete took it"),
        other => panic!("{other:?}"),
    }
    assert_eq!(get(&store, "x").unwrap().value, b"then");
}

#[test]
fn a_failing_txn_changes_nothing() {
    let (_dir, store) = open();
    put(&store, "a", "1");
    let before = (store.revision(), store.hash());
    let check = |success: Vec<RequestOp>| {
        txn(
            &store,
            TxnRequest {
                success,
                ..Default::default()
            },
        )
    };
    let leased = RequestOp::Put(PutRequest {
        lease: 77,
        ..put_req("b", "x")
    });
    assert!(matches!(
        check(vec![put_op("c", "1"), leased]),
        Err(StoreError::LeaseNotFound)
    ));
    let keep = RequestOp::Put(PutRequest {
        ignore_value: true,
        ..put_req("missing", "")
    });
    assert!(matches!(
        check(vec![delete_op("a", ""), keep]),
        Err(StoreError::KeyNotFound)
    ));
    let future = RequestOp::Range(RangeRequest {
        revision: 99,
        ..range_req("a", b"")
    });
    assert!(matches!(
        check(vec![put_op("c", "1"), future]),
        Err(StoreError::FutureRevision)
    ));
    let empty = RequestOp::Range(range_req("", b""));
    assert!(matches!(check(vec![empty]), Err(StoreError::EmptyKey)));
    assert_eq!((store.revision(), store.hash()), before);

    put(&store, "a", "2");
    put(&store, "a", "3");
    compact(&store, 3).unwrap();
    let old = RequestOp::Range(RangeRequest {
        revision: 2,
        ..range_req("a", b"")
    });
    assert!(matches!(
        check(vec![put_op("c", "1"), old]),
        Err(StoreError::Compacted { compact_revision: 3 })
    ));
    let at_compaction = RequestOp::Range(RangeRequest {
        revision: 3,
        ..range_req("a", b"")
    });
    assert!(check(vec![at_compaction]).is_ok());
}
