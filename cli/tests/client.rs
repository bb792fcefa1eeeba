//! The client crate's `ResourceClient` against real `berth server` processes: CRUD with typed
//! errors, and a watch that resumes on another server after the one it used is SIGKILLed.

mod common;
use berth_client::{ClientError, ListParams, Resource, ResourceClient, WatchEvent};
use berth_proto::corev1::ConfigMap;
use berth_proto::manifest;
use common::*;
use std::time::Duration;

fn config_map(name: &str, value: &str) -> ConfigMap {
    let yaml = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, labels: {{app: test}}}}\ndata: {{k: \"{value}\"}}\n"
    );
    ConfigMap::from_object(manifest::parse_one(&yaml).unwrap()).unwrap()
}

fn value(cm: &ConfigMap) -> &str {
    cm.data.get("k").map_or("", |s| s.as_str())
}

async fn started(n: usize) -> (Cluster, ResourceClient) {
    let c = Cluster::start(n, &[]).await;
    let rc = ResourceClient::new(&c.running_clients(), Duration::from_secs(5)).unwrap();
    eventually("namespace default", || {
        let rc = rc.clone();
        async move { rc.get::<berth_proto::corev1::Namespace>("", "default").await.ok() }
    })
    .await;
    (c, rc)
}

#[tokio::test(flavor = "multi_thread")]
async fn crud_with_typed_errors() {
    let (_c, rc) = started(1).await;
    let created = rc.create("default", &config_map("a", "1")).await.unwrap();
    let rv1 = created.metadata.as_ref().unwrap().resource_version.clone();
    assert!(!rv1.is_empty());
    assert!(matches!(
        rc.create("default", &config_map("a", "1")).await,
        Err(ClientError::AlreadyExists(_))
    ));
    let got: ConfigMap = rc.get("default", "a").await.unwrap();
    assert_eq!(value(&got), "1");

    let mut next = got.clone();
    next.data.insert("k".into(), "2".into());
    let updated = rc.update(&next).await.unwrap();
    assert_eq!(value(&updated), "2");
    // The same stale resourceVersion again: a lost compare-and-swap.
    let err = rc.update(&next).await.unwrap_err();
    assert!(matches!(err, ClientError::Conflict(_)), "{err:?}");

    let mut bad = config_map("Not_A_Name", "x");
    bad.metadata.as_mut().unwrap().namespace = "default".into();
    assert!(matches!(
        rc.create("default", &bad).await,
        Err(ClientError::Invalid { .. })
    ));

    rc.create("default", &config_map("b", "1")).await.unwrap();
    let all = rc
        .list::<ConfigMap>("default", &ListParams::default())
        .await
        .unwrap();
    assert_eq!(all.items.len(), 2);
    assert!(!all.resource_version.is_empty());
    let page = rc
        .list::<ConfigMap>(
            "default",
            &ListParams {
                limit: 1,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(page.items.len(), 1);
    assert!(!page.continue_token.is_empty());
    let every = rc
        .list_all::<ConfigMap>(
            "default",
            &ListParams {
                limit: 1,
                label_selector: "app=test".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(every.items.len(), 2);

    let applied = rc
        .apply(
            &{
                let mut cm = config_map("c", "3");
                cm.metadata.as_mut().unwrap().namespace = "default".into();
                cm
            },
            "test",
            false,
        )
        .await
        .unwrap();
    assert_eq!(value(&applied), "3");

    let (_, pending) = rc
        .delete::<ConfigMap>("default", "a", Default::default())
        .await
        .unwrap();
    assert!(!pending);
    assert!(matches!(
        rc.get::<ConfigMap>("default", "a").await,
        Err(ClientError::NotFound(_))
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_resumes_after_its_server_is_killed() {
    let (mut c, rc) = started(3).await;
    c.wait_leader().await;
    let list = rc
        .list::<ConfigMap>("default", &ListParams::default())
        .await
        .unwrap();
    let mut w = rc.watch::<ConfigMap>(
        "default",
        &ListParams {
            resource_version: list.resource_version,
            ..Default::default()
        },
    );
    rc.create("default", &config_map("before", "0")).await.unwrap();
    let first = tokio::time::timeout(DEADLINE, async {
        loop {
            match w.next().await.unwrap() {
                WatchEvent::Added(cm) => return cm,
                WatchEvent::Bookmark(_) => continue,
                e => panic!("unexpected {e:?}"),
            }
        }
    })
    .await
    .expect("first event");
    assert_eq!(first.metadata.unwrap().name, "before");

    // The watch and the client both use member 0 (the first that answered). Kill it, then
    // write through the others.
    c.members[0].kill();
    let others = ResourceClient::new(&c.running_clients(), Duration::from_secs(5)).unwrap();
    let names: Vec<String> = (0..5).map(|i| format!("after-{i}")).collect();
    for n in &names {
        eventually("create after the kill", || {
            let others = others.clone();
            let n = n.clone();
            async move {
                match others.create("default", &config_map(&n, "1")).await {
                    Ok(_) | Err(ClientError::AlreadyExists(_)) => Some(()),
                    Err(_) => None,
                }
            }
        })
        .await;
    }
    let mut seen = Vec::new();
    tokio::time::timeout(DEADLINE, async {
        while seen.len() < names.len() {
            match w.next().await.unwrap() {
                WatchEvent::Added(cm) => seen.push(cm.metadata.unwrap().name),
                WatchEvent::Bookmark(_) => {}
                e => panic!("unexpected {e:?}"),
            }
        }
    })
    .await
    .expect("events after the kill");
    assert_eq!(seen, names, "each event once, in order");
    // Nothing repeated after them.
    let extra = tokio::time::timeout(Duration::from_millis(500), async {
        loop {
            match w.next().await.unwrap() {
                WatchEvent::Bookmark(_) => {}
                e => return e,
            }
        }
    })
    .await;
    assert!(extra.is_err(), "unexpected extra event {extra:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn informer_cache_converges_to_the_list() {
    use berth_client::informer::{label_index, Informer, InformerEvent};
    let (_c, rc) = started(1).await;
    rc.create("default", &config_map("pre", "0")).await.unwrap();
    let (inf, mut events) = Informer::<ConfigMap>::start(rc.clone(), "", ListParams::default());
    inf.add_index("app", label_index("app"));
    eventually("informer synced", || {
        let ok = inf.has_synced();
        async move { ok.then_some(()) }
    })
    .await;
    assert!(inf.get("default/pre").is_some());

    for i in 0..5 {
        rc.create("default", &config_map(&format!("cm-{i}"), "0"))
            .await
            .unwrap();
    }
    for i in 0..3 {
        let mut cm: ConfigMap = rc.get("default", &format!("cm-{i}")).await.unwrap();
        cm.data.insert("k".into(), "1".into());
        rc.update(&cm).await.unwrap();
    }
    rc.delete::<ConfigMap>("default", "cm-4", Default::default())
        .await
        .unwrap();
    rc.delete::<ConfigMap>("default", "pre", Default::default())
        .await
        .unwrap();

    let key_rv = |v: Vec<ConfigMap>| -> Vec<(String, String)> {
        let mut out: Vec<_> = v
            .iter()
            .map(|o| {
                let m = o.metadata.as_ref().unwrap();
                (format!("{}/{}", m.namespace, m.name), m.resource_version.clone())
            })
            .collect();
        out.sort();
        out
    };
    let want = key_rv(
        rc.list::<ConfigMap>("", &ListParams::default())
            .await
            .unwrap()
            .items,
    );
    assert_eq!(want.len(), 4);
    eventually("cache equals the list", || {
        let got = key_rv(inf.list());
        let ok = got == want;
        async move { ok.then_some(()) }
    })
    .await;
    assert_eq!(inf.by_namespace("default").len(), 4);
    assert!(inf.by_namespace("other").is_empty());
    assert_eq!(inf.by_index("app", "test").len(), 4);
    assert!(inf.by_index("app", "nope").is_empty());

    // The handlers' channel saw: pre added, 5 adds, 3 updates, 2 deletes.
    let (mut adds, mut updates, mut deletes) = (0, 0, 0);
    tokio::time::timeout(DEADLINE, async {
        while adds + updates + deletes < 11 {
            match events.recv().await.unwrap() {
                InformerEvent::Added(_) => adds += 1,
                InformerEvent::Updated { .. } => updates += 1,
                InformerEvent::Deleted(_) => deletes += 1,
            }
        }
    })
    .await
    .expect("all informer events");
    assert_eq!((adds, updates, deletes), (6, 3, 2));
}

#[tokio::test(flavor = "multi_thread")]
async fn two_electors_one_leader_then_takeover() {
    use berth_client::leader::{LeaderElectionConfig, LeaderElector, SystemClock};
    use std::sync::Arc;
    let (_c, rc) = started(1).await;
    let config = |id: &str| LeaderElectionConfig {
        namespace: "default".into(),
        lease_name: "sched".into(),
        identity: id.into(),
        lease_duration: Duration::from_secs(2),
        renew_interval: Duration::from_millis(200),
        renew_deadline: Duration::from_secs(1),
    };
    let a = LeaderElector::start(rc.clone(), config("a"), Arc::new(SystemClock));
    let b = LeaderElector::start(rc.clone(), config("b"), Arc::new(SystemClock));
    eventually("one leader", || {
        let n = usize::from(a.is_leader()) + usize::from(b.is_leader());
        async move { (n == 1).then_some(()) }
    })
    .await;
    // Stays exactly one over several renewals.
    for _ in 0..10 {
        assert_eq!(usize::from(a.is_leader()) + usize::from(b.is_leader()), 1);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (leader, other, other_id) = if a.is_leader() { (a, b, "b") } else { (b, a, "a") };
    leader.stop();
    drop(leader);
    eventually("the other takes over", || {
        let ok = other.is_leader();
        async move { ok.then_some(()) }
    })
    .await;
    let lease: berth_proto::coordinationv1::Lease = rc.get("default", "sched").await.unwrap();
    let spec = lease.spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some(other_id));
    assert_eq!(spec.lease_transitions, Some(1));
    assert_eq!(spec.lease_duration_seconds, Some(2));
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_from_a_compacted_revision_is_expired() {
    let (c, rc) = started(1).await;
    let first = rc.create("default", &config_map("x", "0")).await.unwrap();
    let old = first.metadata.unwrap().resource_version;
    let mut cm: ConfigMap = rc.get("default", "x").await.unwrap();
    for i in 1..4 {
        cm.data.insert("k".into(), i.to_string());
        cm = rc.update(&cm).await.unwrap();
    }
    let now = cm.metadata.as_ref().unwrap().resource_version.clone();
    etcdctl_ok(&c.endpoints(), &["compact", &now]);
    let mut w = rc.watch::<ConfigMap>(
        "default",
        &ListParams {
            resource_version: old,
            ..Default::default()
        },
    );
    let r = tokio::time::timeout(DEADLINE, async {
        loop {
            match w.next().await {
                Ok(WatchEvent::Bookmark(_)) => {}
                other => return other,
            }
        }
    })
    .await
    .expect("an answer");
    assert!(matches!(r, Err(ClientError::Expired(_))), "{r:?}");
}

/// A leader whose server stops answering (SIGSTOP: connections stay open, calls hang) steps
/// down by its renew deadline, before its Lease could expire for anyone else, although its
/// renewal call has not returned (the client's timeout is far longer). Then it leads again
/// once the server answers.
#[tokio::test(flavor = "multi_thread")]
async fn a_leader_whose_calls_hang_steps_down_by_its_deadline() {
    use berth_client::leader::{LeaderElectionConfig, LeaderElector, SystemClock};
    use std::sync::Arc;
    let (c, _) = started(1).await;
    // Calls time out after a minute: only the elector's own deadline can end its leadership.
    let rc = ResourceClient::new(&c.running_clients(), Duration::from_secs(60)).unwrap();
    let lease_duration = Duration::from_secs(2);
    let config = LeaderElectionConfig {
        namespace: "default".into(),
        lease_name: "hang".into(),
        identity: "a".into(),
        lease_duration,
        renew_interval: Duration::from_millis(200),
        renew_deadline: Duration::from_secs(1),
    };
    let a = LeaderElector::start(rc.clone(), config, Arc::new(SystemClock));
    eventually("a leads", || {
        let l = a.is_leader();
        async move { l.then_some(()) }
    })
    .await;
    let pid = c.members[0].child.as_ref().unwrap().id().to_string();
    let signal = |sig: &str| {
        let ok = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} {pid}");
    };
    signal("-STOP");
    let stopped = std::time::Instant::now();
    // Not a wait for a condition: the property is about this instant. From its last renewal
    // (before the stop) another candidate could take the Lease over after lease_duration.
    tokio::time::sleep(lease_duration).await;
    let still_leading = a.is_leader();
    signal("-CONT");
    assert!(
        !still_leading,
        "still leading {:?} after the server stopped answering",
        stopped.elapsed()
    );
    eventually("a leads again", || {
        let l = a.is_leader();
        async move { l.then_some(()) }
    })
    .await;
}
