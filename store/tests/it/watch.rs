//! The watch hub: catch-up from history, live feed, filters, victims, compaction, progress.

use std::time::Duration;

use berth_store::*;

use crate::common::*;

/// Generous: only a broken hub gets near it.
const DEADLINE: Duration = Duration::from_secs(20);

async fn next(w: &mut Watcher) -> WatchMessage {
    tokio::time::timeout(DEADLINE, w.recv())
        .await
        .expect("a watch message before the deadline")
        .expect("watcher still open")
}

/// Receives until the watcher has seen revision `upto`; returns the events, checking that
/// every message is in order and carries whole revisions.
async fn events_until(w: &mut Watcher, upto: i64) -> Vec<Event> {
    let mut all: Vec<Event> = Vec::new();
    let mut seen = 0;
    while seen < upto {
        match next(w).await {
            WatchMessage::Events { revision, events } => {
                assert!(!events.is_empty());
                assert!(revision > seen, "message revisions increase");
                assert!(events.iter().all(|e| e.kv.mod_revision <= revision));
                if let Some(last) = all.last() {
                    assert!(
                        events[0].kv.mod_revision > last.kv.mod_revision,
                        "no revision split or repeated across messages"
                    );
                }
                seen = revision;
                all.extend(events);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(seen, upto);
    all
}

fn watch_req(key: &str, range_end: &[u8], start_revision: i64) -> WatchRequest {
    WatchRequest {
        key: key.into(),
        range_end: range_end.to_vec(),
        start_revision,
        ..Default::default()
    }
}

fn summary(events: &[Event]) -> Vec<(i64, String, EventKind)> {
    events
        .iter()
        .map(|e| {
            (
                e.kv.mod_revision,
                String::from_utf8(e.kv.key.clone()).unwrap(),
                e.kind,
            )
        })
        .collect()
}

fn s(rev: i64, key: &str, kind: EventKind) -> (i64, String, EventKind) {
    (rev, key.to_string(), kind)
}

#[tokio::test]
async fn from_a_past_revision_then_live() {
    let (_dir, store) = open();
    put(&store, "a", "1"); // 2
    put(&store, "b", "1"); // 3
    delete(&store, "a", ""); // 4
    let mut w = store.watch(watch_req("\0", b"\0", 3)).unwrap();
    let events = events_until(&mut w, 4).await;
    assert_eq!(
        summary(&events),
        [s(3, "b", EventKind::Put), s(4, "a", EventKind::Delete)]
    );
    let del = &events[1].kv;
    assert_eq!(
        (del.create_revision, del.version, del.value.is_empty()),
        (0, 0, true),
        "a delete carries only key and revision"
    );

    put(&store, "c", "1"); // 5
    let events = events_until(&mut w, 5).await;
    assert_eq!(summary(&events), [s(5, "c", EventKind::Put)]);
    assert_eq!(events[0].kv.value, b"1");
    assert_eq!(events[0].prev_kv, None, "not asked for");
}

#[tokio::test]
async fn from_now_prefix_and_filters() {
    let (_dir, store) = open();
    put(&store, "foo/old", "1"); // 2
    let mut prefix = store.watch(watch_req("foo/", b"foo0", 0)).unwrap();
    let mut single = store.watch(watch_req("foo/x", b"", 0)).unwrap();
    let mut no_put = store
        .watch(WatchRequest {
            filter_put: true,
            ..watch_req("foo/", b"foo0", 0)
        })
        .unwrap();
    let mut no_delete = store
        .watch(WatchRequest {
            filter_delete: true,
            ..watch_req("foo/", b"foo0", 0)
        })
        .unwrap();
    put(&store, "foo/x", "1"); // 3
    put(&store, "bar", "1"); // 4
    put(&store, "foo/y", "1"); // 5
    delete(&store, "foo/", "foo0"); // 6: deletes old, x, y in one revision
    put(&store, "foo/z", "1"); // 7

    use EventKind::*;
    assert_eq!(
        summary(&events_until(&mut prefix, 7).await),
        [
            s(3, "foo/x", Put),
            s(5, "foo/y", Put),
            s(6, "foo/old", Delete),
            s(6, "foo/x", Delete),
            s(6, "foo/y", Delete),
            s(7, "foo/z", Put)
        ]
    );
    assert_eq!(
        summary(&events_until(&mut single, 6).await),
        [s(3, "foo/x", Put), s(6, "foo/x", Delete)]
    );
    assert_eq!(
        summary(&events_until(&mut no_put, 6).await),
        [
            s(6, "foo/old", Delete),
            s(6, "foo/x", Delete),
            s(6, "foo/y", Delete)
        ]
    );
    assert_eq!(
        summary(&events_until(&mut no_delete, 7).await),
        [s(3, "foo/x", Put), s(5, "foo/y", Put), s(7, "foo/z", Put)]
    );
}

#[tokio::test]
async fn prev_kv_live_and_from_history() {
    let (_dir, store) = open();
    let req = |start| WatchRequest {
        prev_kv: true,
        ..watch_req("k", b"", start)
    };
    let mut live = store.watch(req(0)).unwrap();
    put(&store, "k", "1"); // 2
    put(&store, "k", "2"); // 3
    delete(&store, "k", ""); // 4
    let mut history = store.watch(req(2)).unwrap();
    for w in [&mut live, &mut history] {
        let events = events_until(w, 4).await;
        let prevs: Vec<Option<Vec<u8>>> = events
            .iter()
            .map(|e| e.prev_kv.as_ref().map(|p| p.value.clone()))
            .collect();
        assert_eq!(prevs, [None, Some(b"1".to_vec()), Some(b"2".to_vec())]);
        assert_eq!(events[2].prev_kv.as_ref().unwrap().mod_revision, 3);
    }
}

#[tokio::test]
async fn a_future_start_waits_for_its_revision() {
    let (_dir, store) = open();
    let mut w = store.watch(watch_req("k", b"", 4)).unwrap();
    put(&store, "k", "2"); // 2
    put(&store, "k", "3"); // 3
    put(&store, "k", "4"); // 4
    let events = events_until(&mut w, 4).await;
    assert_eq!(summary(&events), [s(4, "k", EventKind::Put)]);
}

#[tokio::test]
async fn a_txn_revision_is_never_split() {
    let (_dir, store) = open_with_queue(1);
    let mut w = store.watch(watch_req("\0", b"\0", 0)).unwrap();
    let many = |tag: &str| TxnRequest {
        success: (0..50)
            .map(|i| RequestOp::Put(put_req(&format!("{tag}{i:02}"), "v")))
            .collect(),
        ..Default::default()
    };
    // The queue holds one message: the second txn makes the watcher a victim.
    txn(&store, many("a")).unwrap(); // 2
    txn(&store, many("b")).unwrap(); // 3
    txn(&store, many("c")).unwrap(); // 4
    let mut revisions = Vec::new();
    let mut seen = 0;
    while seen < 4 {
        let WatchMessage::Events { revision, events } = next(&mut w).await else {
            panic!()
        };
        assert_eq!(events.len() % 50, 0, "whole revisions only");
        revisions.extend(events.iter().map(|e| e.kv.mod_revision));
        seen = revision;
    }
    assert_eq!(revisions, [[2; 50], [3; 50], [4; 50]].concat());
}

#[tokio::test]
async fn a_slow_watcher_does_not_block_apply_and_misses_nothing() {
    let (_dir, store) = open_with_queue(2);
    let mut slow = store.watch(watch_req("k/", b"k0", 0)).unwrap();
    let mut other = store.watch(watch_req("k/", b"k0", 0)).unwrap();
    const PUTS: i64 = 300;
    // Nobody reads while these apply: apply must not wait for the queues.
    for i in 0..PUTS {
        put(&store, &format!("k/{}", i % 10), &i.to_string());
    }
    let last = store.revision();
    for w in [&mut slow, &mut other] {
        let events = events_until(w, last).await;
        let revisions: Vec<i64> = events.iter().map(|e| e.kv.mod_revision).collect();
        assert_eq!(
            revisions,
            (2..=last).collect::<Vec<_>>(),
            "every revision once, in order"
        );
        assert!(events
            .iter()
            .enumerate()
            .all(|(i, e)| e.kv.value == i.to_string().into_bytes()));
    }
    // Caught up: live again.
    put(&store, "k/x", "live");
    assert_eq!(
        summary(&events_until(&mut slow, last + 1).await),
        [s(last + 1, "k/x", EventKind::Put)]
    );
}

#[tokio::test]
async fn catch_up_messages_are_bounded() {
    let (_dir, store) = open();
    let n = CATCHUP_MAX_EVENTS_PER_MESSAGE * 2 + 10;
    let cmds: Vec<Command> = (0..n).map(|i| put_cmd(&format!("k{i}"), "v")).collect();
    store.apply(&cmds, None).unwrap();
    let mut w = store.watch(watch_req("\0", b"\0", 1)).unwrap();
    let mut total = 0;
    let mut messages = 0;
    while total < n {
        let WatchMessage::Events { events, .. } = next(&mut w).await else {
            panic!()
        };
        assert!(events.len() <= CATCHUP_MAX_EVENTS_PER_MESSAGE);
        total += events.len();
        messages += 1;
    }
    assert_eq!(total, n);
    assert!(messages >= 3);
}

#[tokio::test]
async fn compaction_while_lagging_closes_the_watcher() {
    let (_dir, store) = open_with_queue(2);
    let mut w = store.watch(watch_req("k", b"", 0)).unwrap();
    for i in 0..10 {
        put(&store, "k", &i.to_string()); // 2..=11
    }
    // The queue holds revisions 2 and 3; the rest must come from history, which goes away.
    compact(&store, 8).unwrap();
    assert_eq!(
        summary(&events_until(&mut w, 3).await),
        [s(2, "k", EventKind::Put), s(3, "k", EventKind::Put)]
    );
    assert_eq!(
        next(&mut w).await,
        WatchMessage::Compacted { compact_revision: 8 }
    );
    assert_eq!(
        tokio::time::timeout(DEADLINE, w.recv()).await.unwrap(),
        None,
        "closed after Compacted"
    );

    // Starting at or below the compact revision is refused.
    assert!(is_compacted(store.watch(watch_req("k", b"", 8))));
    assert!(store.watch(watch_req("k", b"", 9)).is_ok());
}

#[tokio::test]
async fn progress_requests() {
    let (_dir, store) = open_with_queue(2);
    put(&store, "other", "1"); // 2
    let mut synced = store.watch(watch_req("k", b"", 0)).unwrap();
    store.request_progress(synced.id);
    assert_eq!(next(&mut synced).await, WatchMessage::Progress { revision: 2 });

    // A lagging watcher gets the progress only after everything before it.
    let mut lagging = store.watch(watch_req("k", b"", 0)).unwrap();
    for i in 0..6 {
        put(&store, "k", &i.to_string()); // 3..=8
    }
    store.request_progress(lagging.id);
    let events = events_until(&mut lagging, 8).await;
    assert_eq!(events.len(), 6);
    assert_eq!(next(&mut lagging).await, WatchMessage::Progress { revision: 8 });

    // Unknown ids are ignored.
    store.request_progress(999_999);
}

#[test]
fn works_without_an_ambient_runtime() {
    // The store is opened and fed outside any tokio runtime; only receiving is async.
    let (_dir, store) = open_with_queue(1);
    let mut w = store.watch(watch_req("k", b"", 0)).unwrap();
    for i in 0..5 {
        put(&store, "k", &i.to_string()); // 2..=6
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let events = rt.block_on(events_until(&mut w, 6));
    assert_eq!(events.len(), 5);
}

#[tokio::test]
async fn restore_under_watchers() {
    let (_d1, source) = open();
    for i in 0..5 {
        put(&source, "k", &i.to_string()); // 2..=6
    }
    compact(&source, 4).unwrap();
    let image = source.snapshot().unwrap();

    let (_d2, store) = open_with_queue(1);
    put(&store, "k", "mine"); // 2
    let mut behind = store.watch(watch_req("pad", b"", 0)).unwrap();
    put(&store, "pad", "1"); // 3: fills behind's queue
    put(&store, "pad", "2"); // 4: behind becomes a victim that still needs revision 4
    put(&store, "pad", "3"); // 5
    let mut ahead = store.watch(watch_req("k", b"", 0)).unwrap(); // next revision 6 > 4
    store.restore(&image).unwrap();
    assert_eq!(
        summary(&events_until(&mut behind, 3).await),
        [s(3, "pad", EventKind::Put)]
    );
    assert_eq!(
        next(&mut behind).await,
        WatchMessage::Compacted { compact_revision: 4 }
    );
    // `ahead` continues from the new state: revision 6 of the image, then live writes.
    let events = events_until(&mut ahead, 6).await;
    assert_eq!(summary(&events), [s(6, "k", EventKind::Put)]);
    put(&store, "k", "new"); // 7
    assert_eq!(
        summary(&events_until(&mut ahead, 7).await),
        [s(7, "k", EventKind::Put)]
    );
}

#[tokio::test]
async fn dropping_the_store_closes_watchers() {
    let (_dir, store) = open();
    let mut w = store.watch(watch_req("k", b"", 0)).unwrap();
    drop(store);
    assert_eq!(tokio::time::timeout(DEADLINE, w.recv()).await.unwrap(), None);
}
