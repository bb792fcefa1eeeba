//! Leases in the state machine.

use berth_store::*;

use crate::common::*;

#[test]
fn grant_attach_and_revoke() {
    let (_dir, store) = open();
    assert!(matches!(
        grant(&store, 10, 30),
        Ok(CommandResult::LeaseGrant {
            id: 10,
            ttl_secs: 30,
            revision: 1
        })
    ));
    grant(&store, 5, 60).unwrap();
    assert!(matches!(grant(&store, 10, 1), Err(StoreError::LeaseExists)));
    assert!(matches!(grant(&store, 0, 1), Err(StoreError::LeaseNotFound)));
    assert_eq!(store.revision(), 1, "grants do not bump the revision");
    assert_eq!(
        store.leases(),
        vec![Lease { id: 5, ttl_secs: 60 }, Lease { id: 10, ttl_secs: 30 }]
    );

    put_with_lease(&store, "b", "1", 10).unwrap();
    put_with_lease(&store, "a", "1", 10).unwrap();
    put_with_lease(&store, "c", "1", 5).unwrap();
    put(&store, "free", "1");
    assert_eq!(store.lease(10).unwrap().1, vec![b"a".to_vec(), b"b".to_vec()]);

    // Moving a key to another lease detaches it from the old one.
    put_with_lease(&store, "c", "2", 10).unwrap();
    assert!(store.lease(5).unwrap().1.is_empty());
    // Deleting a key detaches it.
    put_with_lease(&store, "d", "1", 5).unwrap();
    delete(&store, "d", "");
    assert!(store.lease(5).unwrap().1.is_empty());

    let rev = store.revision();
    assert!(
        matches!(apply1(&store, Command::LeaseRevoke { id: 10 }), Ok(CommandResult::LeaseRevoke { revision }) if revision == rev + 1)
    );
    assert_eq!(keys(&store.range(&range_req("\0", b"\0")).unwrap()), ["free"]);
    let deleted = store
        .range(&RangeRequest {
            revision: rev,
            ..range_req("a", b"d")
        })
        .unwrap();
    assert_eq!(deleted.kvs.len(), 3, "all three were alive just before");
    assert_eq!(store.lease(10), None);
    assert_eq!(store.leases(), vec![Lease { id: 5, ttl_secs: 60 }]);

    // Revoking a lease without keys does not bump the revision.
    assert!(
        matches!(apply1(&store, Command::LeaseRevoke { id: 5 }), Ok(CommandResult::LeaseRevoke { revision }) if revision == rev + 1)
    );
    assert!(matches!(
        apply1(&store, Command::LeaseRevoke { id: 5 }),
        Err(StoreError::LeaseNotFound)
    ));
    assert!(store.leases().is_empty());
}

#[test]
fn lease_attachments_are_rebuilt_on_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(cfg(dir.path(), 4)).unwrap();
        grant(&store, 1, 10).unwrap();
        grant(&store, 2, 20).unwrap();
        put_with_lease(&store, "x", "1", 1).unwrap();
        put_with_lease(&store, "y", "1", 2).unwrap();
        put_with_lease(&store, "y", "2", 1).unwrap();
    }
    let store = Store::open(cfg(dir.path(), 4)).unwrap();
    assert_eq!(store.lease(1).unwrap().1, vec![b"x".to_vec(), b"y".to_vec()]);
    assert!(store.lease(2).unwrap().1.is_empty());
    apply1(&store, Command::LeaseRevoke { id: 1 }).unwrap();
    assert!(dump(&store).is_empty());
}
