//! `WatchMany` against a real in-process server on loopback, through the client crate: several
//! watches with different selectors on one stream, order without gaps, resume from a
//! resourceVersion, "too old" outside the event window, cancel, and a stream that does not read
//! being cut off.

use berth_apiserver::{ApiConfig, Server};
use berth_client::{ClientError, ListParams, ManyEvent, Resource, ResourceClient, WatchEvent, WatchMany};
use berth_proto::corev1::{ConfigMap, Pod};
use berth_proto::manifest::{self, Object};
use berth_raft::RaftConfig;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(30);

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// A single-member server with an event window of `window_events`, and a client of it.
async fn server(dir: &std::path::Path, window_events: usize) -> (Server, ResourceClient) {
    let (client_addr, peer_addr) = (free_addr(), free_addr());
    let mut api = ApiConfig::new(client_addr.clone(), peer_addr.clone());
    api.watch_window_events = window_events;
    let server = Server::start(
        api,
        RaftConfig::new("s1", dir.join("s1"), peer_addr, client_addr.clone()),
    )
    .await
    .unwrap();
    let rc = ResourceClient::new(&[client_addr], Duration::from_secs(10)).unwrap();
    let deadline = Instant::now() + DEADLINE;
    while rc
        .get::<berth_proto::corev1::Namespace>("", "default")
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "namespace default never appeared");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (server, rc)
}

fn pod(name: &str, app: &str, filler_bytes: usize) -> Pod {
    let y = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels: {{app: {app}}}\n  annotations: {{filler: \"{}\"}}\nspec:\n  containers:\n  - name: c\n    image: img:1\n",
        "x".repeat(filler_bytes)
    );
    let manifest::Object::Pod(p) = manifest::parse_one(&y).unwrap() else {
        unreachable!()
    };
    p
}

fn rv(o: &Object) -> i64 {
    o.metadata().unwrap().resource_version.parse().unwrap()
}

/// (type, name, resourceVersion) of an event, for comparisons.
fn brief(ev: &WatchEvent<Object>) -> (&'static str, String, i64) {
    match ev {
        WatchEvent::Added(o) => ("ADDED", o.name().to_string(), rv(o)),
        WatchEvent::Modified(o) => ("MODIFIED", o.name().to_string(), rv(o)),
        WatchEvent::Deleted(o) => ("DELETED", o.name().to_string(), rv(o)),
        WatchEvent::Bookmark(r) => ("BOOKMARK", String::new(), r.parse().unwrap()),
    }
}

type Seen = BTreeMap<i64, Vec<(&'static str, String, i64)>>;

/// Reads the stream until `done` holds for what each watch has seen (bookmarks left out).
async fn read_until(s: &mut WatchMany, seen: &mut Seen, done: impl Fn(&Seen) -> bool) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !done(seen) {
        let m = tokio::time::timeout_at(deadline, s.next())
            .await
            .unwrap_or_else(|_| panic!("timed out; seen so far: {seen:?}"))
            .unwrap();
        match m {
            ManyEvent::Event { watch_ids, event } if !matches!(*event, WatchEvent::Bookmark(_)) => {
                for id in watch_ids {
                    seen.entry(id).or_default().push(brief(&event));
                }
            }
            ManyEvent::Ended { watch_ids, error } => panic!("watches {watch_ids:?} ended: {error}"),
            _ => {}
        }
    }
}

/// Waits for watch `id` to be created, or returns how it was refused.
async fn created(s: &mut WatchMany, id: i64) -> Result<(), ClientError> {
    match tokio::time::timeout(DEADLINE, s.next()).await.unwrap().unwrap() {
        ManyEvent::Created(i) if i == id => Ok(()),
        ManyEvent::Ended { watch_ids, error } if watch_ids == vec![id] => Err(error),
        other => panic!("expected watch {id} created, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn several_watches_with_different_selectors_share_one_stream() {
    let dir = tempfile::tempdir().unwrap();
    let (server, rc) = server(dir.path(), 4096).await;
    rc.ensure_namespace("bw-other").await.unwrap();
    rc.create("default", &pod("before", "web", 0)).await.unwrap();
    let from = rc
        .list::<Pod>("default", &ListParams::default())
        .await
        .unwrap()
        .resource_version;
    let at = |rv: &str| ListParams {
        resource_version: rv.to_string(),
        ..Default::default()
    };
    let web = ListParams {
        label_selector: "app=web".into(),
        ..at(&from)
    };
    let mut s = rc.watch_many().await.unwrap();
    s.add(1, "pods", "default", &at(&from), false).await.unwrap();
    s.add(2, "pods", "default", &web, false).await.unwrap();
    s.add(3, "pods", "", &at(&from), false).await.unwrap();
    s.add(4, "configmaps", "default", &at(&from), false)
        .await
        .unwrap();
    // The current state first: ADDED for what exists.
    s.add(5, "pods", "default", &at(""), false).await.unwrap();
    for id in 1..=5 {
        created(&mut s, id).await.unwrap();
    }
    let a = rc.create("default", &pod("a", "web", 0)).await.unwrap();
    let b = rc.create("default", &pod("b", "db", 0)).await.unwrap();
    let c = rc.create("bw-other", &pod("c", "web", 0)).await.unwrap();
    let mut b2 = b.clone();
    b2.metadata
        .as_mut()
        .unwrap()
        .labels
        .insert("app".into(), "web".into());
    let b2 = rc.update(&b2).await.unwrap();
    rc.delete::<Pod>("default", "a", Default::default())
        .await
        .unwrap();
    let cm = manifest::parse_one("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm}\n").unwrap();
    let cm = rc
        .create("default", &ConfigMap::from_object(cm).unwrap())
        .await
        .unwrap();
    let rv = |m: &Option<berth_proto::metav1::ObjectMeta>| {
        m.as_ref().unwrap().resource_version.parse::<i64>().unwrap()
    };
    let (ra, rb, rc_, rb2, rcm) = (
        rv(&a.metadata),
        rv(&b.metadata),
        rv(&c.metadata),
        rv(&b2.metadata),
        rv(&cm.metadata),
    );
    let deleted_rev = rcm - 1;
    let mut seen = Seen::new();
    read_until(&mut s, &mut seen, |s| {
        s.get(&1).map_or(0, Vec::len) >= 4
            && s.get(&2).map_or(0, Vec::len) >= 3
            && s.get(&3).map_or(0, Vec::len) >= 5
            && s.get(&4).map_or(0, Vec::len) >= 1
            && s.get(&5).map_or(0, Vec::len) >= 5
    })
    .await;
    let e = |t: &'static str, n: &str, r: i64| (t, n.to_string(), r);
    assert_eq!(
        seen[&1],
        vec![
            e("ADDED", "a", ra),
            e("ADDED", "b", rb),
            e("MODIFIED", "b", rb2),
            e("DELETED", "a", deleted_rev)
        ]
    );
    // The selector sees b enter the set as ADDED.
    assert_eq!(
        seen[&2],
        vec![
            e("ADDED", "a", ra),
            e("ADDED", "b", rb2),
            e("DELETED", "a", deleted_rev)
        ]
    );
    assert_eq!(
        seen[&3],
        vec![
            e("ADDED", "a", ra),
            e("ADDED", "b", rb),
            e("ADDED", "c", rc_),
            e("MODIFIED", "b", rb2),
            e("DELETED", "a", deleted_rev)
        ]
    );
    assert_eq!(seen[&4], vec![e("ADDED", "cm", rcm)]);
    assert_eq!(seen[&5][0].1, "before", "the current state first: {:?}", seen[&5]);
    // Cancel one; the others go on.
    s.cancel(2).await.unwrap();
    rc.create("default", &pod("d", "web", 0)).await.unwrap();
    let mut canceled = false;
    let mut after = Seen::new();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !(canceled && after.get(&1).is_some_and(|v| !v.is_empty())) {
        match tokio::time::timeout_at(deadline, s.next())
            .await
            .unwrap()
            .unwrap()
        {
            ManyEvent::Canceled(ids) => canceled = ids == vec![2],
            ManyEvent::Event { watch_ids, event } => {
                assert!(!watch_ids.contains(&2), "a canceled watch got {event:?}");
                for id in watch_ids {
                    after.entry(id).or_default().push(brief(&event));
                }
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(after[&1][0].1, "d");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn events_come_in_order_without_gaps_and_a_watch_resumes_from_a_revision() {
    let dir = tempfile::tempdir().unwrap();
    let (server, rc) = server(dir.path(), 4096).await;
    let from = rc
        .list::<Pod>("default", &ListParams::default())
        .await
        .unwrap()
        .resource_version;
    let mut s = rc.watch_many().await.unwrap();
    let params = |rv: String| ListParams {
        resource_version: rv,
        ..Default::default()
    };
    s.add(7, "pods", "default", &params(from), true).await.unwrap();
    created(&mut s, 7).await.unwrap();
    let mut written = Vec::new();
    for i in 0..40 {
        let p = rc
            .create("default", &pod(&format!("p{i}"), "web", 0))
            .await
            .unwrap();
        written.push((
            "ADDED",
            format!("p{i}"),
            berth_client::resources::resource_version(&p)
                .parse::<i64>()
                .unwrap(),
        ));
    }
    let mut seen = Seen::new();
    read_until(&mut s, &mut seen, |s| s.get(&7).map_or(0, Vec::len) >= 40).await;
    assert_eq!(seen[&7], written);
    // Bookmarks (asked for) come at the revision the watch has reached.
    let last = written.last().unwrap().2;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        match tokio::time::timeout_at(deadline, s.next())
            .await
            .unwrap()
            .unwrap()
        {
            ManyEvent::Event { watch_ids, event } => match *event {
                WatchEvent::Bookmark(rv) if rv.parse::<i64>().unwrap() >= last => {
                    assert_eq!(watch_ids, vec![7]);
                    break;
                }
                WatchEvent::Bookmark(_) => {}
                other => panic!("{other:?} after the last write"),
            },
            other => panic!("{other:?}"),
        }
    }
    // A second stream resumes after the 25th event: exactly the rest, nothing twice.
    let mut s2 = rc.watch_many().await.unwrap();
    s2.add(1, "pods", "default", &params(written[24].2.to_string()), false)
        .await
        .unwrap();
    let mut seen2 = Seen::new();
    read_until(&mut s2, &mut seen2, |s| s.get(&1).map_or(0, Vec::len) >= 15).await;
    assert_eq!(seen2[&1], written[25..].to_vec());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revision_older_than_the_window_is_too_old() {
    let dir = tempfile::tempdir().unwrap();
    let (server, rc) = server(dir.path(), 8).await;
    let from = rc
        .list::<Pod>("default", &ListParams::default())
        .await
        .unwrap()
        .resource_version;
    let mut s = rc.watch_many().await.unwrap();
    // Opens the pods window now.
    s.add(1, "pods", "default", &ListParams::default(), false)
        .await
        .unwrap();
    created(&mut s, 1).await.unwrap();
    for i in 0..20 {
        rc.create("default", &pod(&format!("p{i}"), "web", 0))
            .await
            .unwrap();
    }
    let mut seen = Seen::new();
    read_until(&mut s, &mut seen, |s| s.get(&1).map_or(0, Vec::len) >= 20).await;
    let old = ListParams {
        resource_version: from,
        ..Default::default()
    };
    s.add(2, "pods", "default", &old, false).await.unwrap();
    let err = created(&mut s, 2).await.unwrap_err();
    assert!(matches!(err, ClientError::Expired(_)), "{err}");
    // A bad request ends only its own watch.
    let bad = ListParams {
        label_selector: "a b c".into(),
        ..Default::default()
    };
    s.add(3, "pods", "default", &bad, false).await.unwrap();
    let err = created(&mut s, 3).await.unwrap_err();
    assert!(
        matches!(err, ClientError::Watch(ref m) if m.contains("labelSelector")),
        "{err}"
    );
    rc.create("default", &pod("after", "web", 0)).await.unwrap();
    read_until(&mut s, &mut seen, |s| s.get(&1).map_or(0, Vec::len) >= 21).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_that_does_not_read_is_cut_off_not_buffered() {
    let dir = tempfile::tempdir().unwrap();
    let (server, rc) = server(dir.path(), 16).await;
    let from = rc
        .list::<Pod>("default", &ListParams::default())
        .await
        .unwrap()
        .resource_version;
    let mut s = rc.watch_many().await.unwrap();
    let params = ListParams {
        resource_version: from,
        ..Default::default()
    };
    s.add(1, "pods", "default", &params, false).await.unwrap();
    created(&mut s, 1).await.unwrap();
    // Not reading while far more than the window, the stream's queue and HTTP/2's flow
    // control windows can hold is written (32 KB pods; the client's HTTP/2 stream window is
    // 2 MiB).
    let total = 300;
    let mut written = Vec::new();
    for i in 0..total {
        let p = rc
            .create("default", &pod(&format!("p{i}"), "web", 32 * 1024))
            .await
            .unwrap();
        written.push((
            "ADDED",
            format!("p{i}"),
            berth_client::resources::resource_version(&p)
                .parse::<i64>()
                .unwrap(),
        ));
    }
    // Then: a gapless prefix of the writes, and the watch (or the stream) cut off.
    let mut got = Vec::new();
    let end = loop {
        let next = tokio::time::timeout(DEADLINE, s.next()).await;
        let next = next.unwrap_or_else(|_| panic!("timed out after {} events", got.len()));
        match next {
            Ok(ManyEvent::Event { watch_ids, event }) => {
                assert_eq!(watch_ids, vec![1]);
                got.push(brief(&event));
            }
            Ok(ManyEvent::Ended { watch_ids, error }) => {
                assert_eq!(watch_ids, vec![1]);
                break error;
            }
            Ok(other) => panic!("{other:?}"),
            Err(e) => break e,
        }
    };
    assert!(
        matches!(end, ClientError::Expired(_)) || end.to_string().contains("too slow"),
        "{end}"
    );
    assert!(
        got.len() < total,
        "everything was buffered for a client that did not read"
    );
    assert_eq!(got, written[..got.len()].to_vec());
    server.shutdown().await;
}
