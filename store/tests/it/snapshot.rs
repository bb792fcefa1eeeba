//! Snapshots: capture, restore, rejection of bad images.

use berth_store::*;

use crate::common::*;

fn populated() -> (tempfile::TempDir, std::sync::Arc<Store>) {
    let (dir, store) = open();
    grant(&store, 7, 30).unwrap();
    for i in 0..20 {
        put(&store, &format!("k{:02}", i % 7), &format!("v{i}"));
    }
    put_with_lease(&store, "leased", "x", 7).unwrap();
    delete(&store, "k03", "k05");
    compact(&store, 10).unwrap();
    store.apply(&[put_cmd("last", "1")], Some(b"raft:42")).unwrap();
    (dir, store)
}

/// Revision, compact revision, all keys, a historical read, leases, lease 7 with its keys.
type Everything = (
    i64,
    i64,
    Vec<KeyValue>,
    Option<RangeResponse>,
    Vec<Lease>,
    Option<(Lease, Vec<Vec<u8>>)>,
);

fn everything(store: &Store) -> Everything {
    // A historical read, where the store has that revision.
    let historical = store
        .range(&RangeRequest {
            revision: 12,
            ..range_req("\0", b"\0")
        })
        .ok();
    (
        store.revision(),
        store.compact_revision(),
        dump(store),
        historical,
        store.leases(),
        store.lease(7),
    )
}

#[test]
fn restore_into_a_fresh_store_gives_the_same_state() {
    let (_d1, source) = populated();
    let image = source.snapshot().unwrap();
    let (_d2, target) = open();
    put(&target, "to-be-replaced", "1");
    target.restore(&image).unwrap();
    assert_eq!(target.hash(), source.hash());
    assert_eq!(everything(&target), everything(&source));
    assert_eq!(target.applied_marker().unwrap().as_deref(), Some(&b"raft:42"[..]));
    assert_eq!(get(&target, "to-be-replaced"), None);
    assert_eq!(
        target.snapshot().unwrap(),
        image,
        "a restored store snapshots to the same bytes"
    );

    // Both continue identically.
    for store in [&source, &target] {
        apply1(store, Command::LeaseRevoke { id: 7 }).unwrap();
        put(store, "k00", "after");
    }
    assert_eq!(target.hash(), source.hash());

    // And the restored state survives a reopen.
    let dir = _d2.path().to_path_buf();
    let expected = everything(&target);
    drop(target);
    let reopened = Store::open(cfg(&dir, 8)).unwrap();
    assert_eq!(everything(&reopened), expected);
    assert_eq!(reopened.hash(), source.hash());
}

#[test]
fn a_corrupted_image_is_rejected_and_changes_nothing() {
    let (_d1, source) = populated();
    let image = source.snapshot().unwrap();
    let (_d2, target) = open();
    put(&target, "mine", "1");
    let before = (target.hash(), everything(&target));

    let mut flipped = image.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x40;
    let mut wrong_magic = image.clone();
    wrong_magic[0] = b'X';
    for bad in [
        flipped,
        wrong_magic,
        image[..image.len() - 1].to_vec(),
        vec![],
        b"short".to_vec(),
    ] {
        assert!(matches!(
            target.restore(&bad),
            Err(StoreError::InvalidSnapshot(_))
        ));
        assert_eq!((target.hash(), everything(&target)), before);
    }
}

#[test]
fn snapshot_is_a_point_in_time() {
    let (_d1, store) = populated();
    let image = store.snapshot().unwrap();
    let hash = store.hash();
    put(&store, "later", "1");
    assert_ne!(store.hash(), hash);
    store.restore(&image).unwrap();
    assert_eq!(store.hash(), hash);
    assert_eq!(get(&store, "later"), None);
    // Versions continue from the restored index.
    put(&store, "k00", "again");
    assert_eq!(get(&store, "k00").unwrap().version, 4);
}
