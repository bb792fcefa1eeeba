//! The `Resources` service of real `berth server` processes, driven by the generated tonic
//! client: create/get/list/update/delete/watch of typed objects, and every supported example
//! manifest in `../shared/testdata/manifests/` applied and read back.

mod common;
use berth_proto::apiv1::{self, resources_client::ResourcesClient, watch_event::EventType};
use berth_proto::manifest::{self, Object, ResourceType};
use berth_proto::{defaults, metav1};
use common::*;
use std::collections::BTreeSet;
use std::time::Duration;
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic::Code;

type Client = ResourcesClient<Channel>;

const POD: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {app: web, tier: front}
spec:
  containers:
  - name: nginx
    image: nginx:1.25
    ports: [{containerPort: 80}]
"#;

fn client(c: &Cluster, i: usize) -> Client {
    let ch = berth_client::dial::lazy_channel(&c.members[i].client, Duration::from_secs(30)).unwrap();
    ResourcesClient::new(ch)
}

/// A cluster whose `default` namespace the server has created.
/// Servers without control loops: these tests read back exactly what they wrote, and
/// controllers (namespace finalizers, Deployment status and revisions, pods) and the scheduler
/// (pending pods marked unschedulable) would add to it.
async fn cluster(n: usize) -> (Cluster, Client) {
    let c = Cluster::start(n, &["--no-controllers", "--no-scheduler"]).await;
    let rc = client(&c, 0);
    eventually("namespace default", || {
        let mut rc = rc.clone();
        async move { get(&mut rc, "namespaces", "", "default").await.ok() }
    })
    .await;
    (c, rc)
}

async fn get(rc: &mut Client, resource: &str, ns: &str, name: &str) -> Result<Object, tonic::Status> {
    let o = rc
        .get(apiv1::GetRequest {
            resource: resource.into(),
            namespace: ns.into(),
            name: name.into(),
        })
        .await?
        .into_inner();
    Ok(Object::try_from(o).unwrap())
}

async fn create(rc: &mut Client, obj: Object, ns: &str) -> Result<Object, tonic::Status> {
    let o = rc
        .create(apiv1::CreateRequest {
            object: Some(obj.into()),
            namespace: ns.into(),
            dry_run: false,
        })
        .await?
        .into_inner();
    Ok(Object::try_from(o).unwrap())
}

async fn update(rc: &mut Client, obj: Object) -> Result<Object, tonic::Status> {
    let o = rc
        .update(apiv1::UpdateRequest {
            object: Some(obj.into()),
            dry_run: false,
        })
        .await?
        .into_inner();
    Ok(Object::try_from(o).unwrap())
}

async fn apply(rc: &mut Client, obj: Object) -> Result<Object, tonic::Status> {
    let o = rc
        .apply(apiv1::ApplyRequest {
            object: Some(obj.into()),
            field_manager: "test".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok(Object::try_from(o).unwrap())
}

async fn delete(
    rc: &mut Client,
    resource: &str,
    ns: &str,
    name: &str,
) -> Result<apiv1::DeleteResponse, tonic::Status> {
    Ok(rc
        .delete(apiv1::DeleteRequest {
            resource: resource.into(),
            namespace: ns.into(),
            name: name.into(),
            options: None,
        })
        .await?
        .into_inner())
}

fn namespace(name: &str) -> Object {
    manifest::parse_one(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {name}}}\n"
    ))
    .unwrap()
}

fn meta(o: &Object) -> &metav1::ObjectMeta {
    o.metadata().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_get_duplicate_and_missing_namespace() {
    let (_c, mut rc) = cluster(1).await;
    let pod = manifest::parse_one(POD).unwrap();
    let created = create(&mut rc, pod.clone(), "").await.unwrap();
    let m = meta(&created);
    assert_eq!(m.namespace, "default");
    assert_eq!(m.uid.len(), 36, "uid {:?}", m.uid);
    assert_eq!(m.generation, 1);
    assert!(m.creation_timestamp.ends_with('Z'), "{}", m.creation_timestamp);
    assert!(m.resource_version.parse::<i64>().unwrap() > 0);

    let got = get(&mut rc, "pods", "default", "web").await.unwrap();
    assert_eq!(got, created);
    let Object::Pod(p) = &got else { panic!("not a pod") };
    let spec = p.spec.as_ref().unwrap();
    assert_eq!(spec.restart_policy, "Always", "defaults applied");
    assert_eq!(spec.containers[0].image_pull_policy, "IfNotPresent");

    let dup = create(&mut rc, pod.clone(), "default").await.unwrap_err();
    assert_eq!(dup.code(), Code::AlreadyExists, "{dup:?}");
    assert_eq!(dup.message(), "pods \"web\" already exists");

    let missing = create(&mut rc, pod.clone(), "nowhere").await.unwrap_err();
    assert_eq!(missing.code(), Code::NotFound, "{missing:?}");
    assert!(
        missing.message().contains("namespaces \"nowhere\""),
        "{missing:?}"
    );
    assert_eq!(
        get(&mut rc, "pods", "nowhere", "web").await.unwrap_err().code(),
        Code::NotFound
    );

    let conflict = create(&mut rc, pod.clone(), "other").await;
    let mut in_ns = pod.clone();
    in_ns.metadata_mut().namespace = "default".into();
    let mismatch = create(&mut rc, in_ns, "other").await.unwrap_err();
    assert_eq!(mismatch.code(), Code::InvalidArgument);
    assert!(mismatch.message().contains("metadata.namespace"), "{mismatch:?}");
    assert!(conflict.is_err());

    let mut bad = pod.clone();
    bad.metadata_mut().name = "Bad_Name".into();
    let invalid = create(&mut rc, bad, "").await.unwrap_err();
    assert_eq!(invalid.code(), Code::InvalidArgument);
    assert!(invalid.message().contains("metadata.name"), "{invalid:?}");

    let mut generated = pod;
    generated.metadata_mut().name.clear();
    generated.metadata_mut().generate_name = "web-".into();
    let g = create(&mut rc, generated, "").await.unwrap();
    assert_eq!(g.name().len(), "web-".len() + 5, "{}", g.name());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_with_selectors_and_pages() {
    let (_c, mut rc) = cluster(1).await;
    create(&mut rc, namespace("prod"), "").await.unwrap();
    for (name, app, ns) in [
        ("a", "web", "default"),
        ("b", "db", "default"),
        ("c", "web", "prod"),
    ] {
        let mut p = manifest::parse_one(POD).unwrap();
        p.metadata_mut().name = name.into();
        p.metadata_mut().labels.insert("app".into(), app.into());
        create(&mut rc, p, ns).await.unwrap();
    }
    let list = |ns: &str, labels: &str, fields: &str, limit: i64, cont: &str| apiv1::ListRequest {
        resource: "pods".into(),
        namespace: ns.into(),
        options: Some(apiv1::ListOptions {
            label_selector: labels.into(),
            field_selector: fields.into(),
            limit,
            continue_token: cont.into(),
            ..Default::default()
        }),
    };
    let names = |r: &apiv1::ListResponse| -> Vec<String> {
        r.items
            .iter()
            .map(|o| Object::try_from(o.clone()).unwrap().name().to_string())
            .collect()
    };
    let all = rc.list(list("", "", "", 0, "")).await.unwrap().into_inner();
    assert_eq!(names(&all), ["a", "b", "c"]);
    assert!(all.metadata.unwrap().resource_version.parse::<i64>().unwrap() > 0);
    let web = rc
        .list(list("", "app=web", "", 0, ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(names(&web), ["a", "c"]);
    let web_default = rc
        .list(list("default", "app in (web)", "", 0, ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(names(&web_default), ["a"]);
    let by_name = rc
        .list(list("", "", "metadata.name=b", 0, ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(names(&by_name), ["b"]);
    let bad = rc.list(list("", "app in (", "", 0, "")).await.unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);

    // Pages read at the first page's revision: a pod created meanwhile does not show.
    let p1 = rc.list(list("", "", "", 2, "")).await.unwrap().into_inner();
    assert_eq!(names(&p1), ["a", "b"]);
    let m1 = p1.metadata.unwrap();
    assert!(!m1.continue_token.is_empty());
    let mut late = manifest::parse_one(POD).unwrap();
    late.metadata_mut().name = "d".into();
    create(&mut rc, late, "prod").await.unwrap();
    let p2 = rc
        .list(list("", "", "", 2, &m1.continue_token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(names(&p2), ["c"]);
    let m2 = p2.metadata.unwrap();
    assert!(m2.continue_token.is_empty());
    assert_eq!(m2.resource_version, m1.resource_version);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_cas_status_and_delete() {
    let (_c, mut rc) = cluster(1).await;
    let created = create(&mut rc, manifest::parse_one(POD).unwrap(), "")
        .await
        .unwrap();

    // A label change: new resourceVersion, same generation.
    let mut relabeled = created.clone();
    relabeled.metadata_mut().labels.insert("v".into(), "2".into());
    let updated = update(&mut rc, relabeled).await.unwrap();
    assert_ne!(meta(&updated).resource_version, meta(&created).resource_version);
    assert_eq!(meta(&updated).uid, meta(&created).uid);
    assert_eq!(meta(&updated).generation, 1);

    // Stale resourceVersion: Aborted, nothing changed.
    let mut stale = created.clone();
    stale.metadata_mut().labels.insert("v".into(), "stale".into());
    let err = update(&mut rc, stale).await.unwrap_err();
    assert_eq!(err.code(), Code::Aborted, "{err:?}");
    assert_eq!(
        err.message(),
        "Operation cannot be fulfilled on pods \"web\": the object has been modified; \
         please apply your changes to the latest version and try again"
    );
    assert_eq!(get(&mut rc, "pods", "", "web").await.unwrap(), updated);

    // A spec change bumps the generation; status sent with Update is ignored.
    let mut respec = updated.clone();
    if let Object::Pod(p) = &mut respec {
        p.spec.as_mut().unwrap().containers[0].image = "nginx:1.26".into();
        p.status = Some(berth_proto::corev1::PodStatus {
            phase: "Running".into(),
            ..Default::default()
        });
    }
    let respecced = update(&mut rc, respec.clone()).await.unwrap();
    assert_eq!(meta(&respecced).generation, 2);
    let Object::Pod(p) = &respecced else { panic!() };
    assert!(
        p.status.as_ref().is_none_or(|s| s.phase.is_empty()),
        "{:?}",
        p.status
    );

    // UpdateStatus changes only the status.
    let mut st = respec;
    st.metadata_mut().resource_version.clear();
    st.metadata_mut().labels.insert("ignored".into(), "yes".into());
    let o = rc
        .update_status(apiv1::UpdateRequest {
            object: Some(st.into()),
            dry_run: false,
        })
        .await
        .unwrap()
        .into_inner();
    let with_status = Object::try_from(o).unwrap();
    let Object::Pod(p) = &with_status else { panic!() };
    assert_eq!(p.status.as_ref().unwrap().phase, "Running");
    assert!(!meta(&with_status).labels.contains_key("ignored"));
    assert_eq!(meta(&with_status).generation, 2);

    // Apply of the original manifest: spec back, status and uid kept.
    let applied = apply(&mut rc, manifest::parse_one(POD).unwrap()).await.unwrap();
    assert_eq!(meta(&applied).uid, meta(&created).uid);
    assert_eq!(meta(&applied).generation, 3);
    let Object::Pod(p) = &applied else { panic!() };
    assert_eq!(p.status.as_ref().unwrap().phase, "Running");
    assert_eq!(body(&applied), body(&created));

    // Delete (unscheduled pod: at once), then NotFound.
    let d = delete(&mut rc, "pods", "default", "web").await.unwrap();
    assert!(!d.pending);
    let e = get(&mut rc, "pods", "default", "web").await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert_eq!(e.message(), "pods \"web\" not found");
    assert_eq!(
        delete(&mut rc, "pods", "default", "web")
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );

    // Finalizers keep the object, marked for deletion; an Apply that states none keeps them.
    let mut fin = manifest::parse_one(POD).unwrap();
    fin.metadata_mut().finalizers.push("example.com/keep".into());
    create(&mut rc, fin, "").await.unwrap();
    let reapplied = apply(&mut rc, manifest::parse_one(POD).unwrap()).await.unwrap();
    assert_eq!(meta(&reapplied).finalizers, ["example.com/keep"]);
    let d = delete(&mut rc, "pods", "default", "web").await.unwrap();
    assert!(d.pending);
    let kept = get(&mut rc, "pods", "default", "web").await.unwrap();
    assert!(!meta(&kept).deletion_timestamp.is_empty());
    // Removing the last finalizer completes the deletion.
    let mut unfinalized = kept;
    unfinalized.metadata_mut().finalizers.clear();
    update(&mut rc, unfinalized).await.unwrap();
    assert_eq!(
        get(&mut rc, "pods", "default", "web").await.unwrap_err().code(),
        Code::NotFound
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_sees_added_modified_deleted_in_order() {
    let (c, mut rc) = cluster(3).await;
    let mut before = manifest::parse_one(POD).unwrap();
    before.metadata_mut().name = "old".into();
    create(&mut rc, before, "").await.unwrap();

    // Watch from a follower-or-leader other than the writer.
    let mut wc = client(&c, 1);
    let mut stream = wc
        .watch(apiv1::WatchRequest {
            resource: "pods".into(),
            namespace: "default".into(),
            options: Some(apiv1::ListOptions {
                label_selector: "app=web".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();

    let created = create(&mut rc, manifest::parse_one(POD).unwrap(), "")
        .await
        .unwrap();
    let mut changed = created.clone();
    changed.metadata_mut().labels.insert("v".into(), "2".into());
    let updated = update(&mut rc, changed).await.unwrap();
    delete(&mut rc, "pods", "default", "web").await.unwrap();

    let mut seen = Vec::new();
    while seen.len() < 4 {
        let ev = tokio::time::timeout(Duration::from_secs(20), stream.next())
            .await
            .expect("watch event in time")
            .expect("stream open")
            .expect("event, not error");
        let obj = Object::try_from(ev.object.unwrap()).unwrap();
        seen.push((
            EventType::try_from(ev.r#type).unwrap(),
            obj.name().to_string(),
            ev.resource_version,
        ));
    }
    let kinds: Vec<_> = seen.iter().map(|(t, n, _)| (*t, n.as_str())).collect();
    assert_eq!(
        kinds,
        [
            (EventType::Added, "old"),
            (EventType::Added, "web"),
            (EventType::Modified, "web"),
            (EventType::Deleted, "web"),
        ]
    );
    assert_eq!(seen[1].2, meta(&created).resource_version);
    assert_eq!(seen[2].2, meta(&updated).resource_version);
    let revs: Vec<i64> = seen.iter().map(|s| s.2.parse().unwrap()).collect();
    assert!(revs.windows(2).all(|w| w[0] < w[1]), "{revs:?}");

    // Resuming from the ADDED revision replays the later events.
    let mut again = wc
        .watch(apiv1::WatchRequest {
            resource: "pods".into(),
            namespace: String::new(),
            options: Some(apiv1::ListOptions {
                resource_version: seen[1].2.clone(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let ev = again.next().await.unwrap().unwrap();
    assert_eq!(EventType::try_from(ev.r#type).unwrap(), EventType::Modified);
    let ev = again.next().await.unwrap().unwrap();
    assert_eq!(EventType::try_from(ev.r#type).unwrap(), EventType::Deleted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_bookmarks_and_compacted_start() {
    let (c, mut rc) = cluster(1).await;
    let created = create(&mut rc, manifest::parse_one(POD).unwrap(), "")
        .await
        .unwrap();
    let first_rv = meta(&created).resource_version.clone();
    let mut changed = created;
    changed.metadata_mut().labels.insert("v".into(), "2".into());
    let updated = update(&mut rc, changed).await.unwrap();

    // Without a resourceVersion: ADDED for what exists, then a BOOKMARK at the list revision.
    let mut from_now = rc
        .watch(apiv1::WatchRequest {
            resource: "pods".into(),
            namespace: String::new(),
            options: Some(apiv1::ListOptions {
                allow_watch_bookmarks: true,
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let added = from_now.next().await.unwrap().unwrap();
    assert_eq!(EventType::try_from(added.r#type).unwrap(), EventType::Added);
    let mark = from_now.next().await.unwrap().unwrap();
    assert_eq!(EventType::try_from(mark.r#type).unwrap(), EventType::Bookmark);
    assert!(
        mark.resource_version.parse::<i64>().unwrap() >= meta(&updated).resource_version.parse().unwrap()
    );

    // Bookmarks carry only a resourceVersion.
    let mut stream = rc
        .watch(apiv1::WatchRequest {
            resource: "pods".into(),
            namespace: String::new(),
            options: Some(apiv1::ListOptions {
                resource_version: meta(&updated).resource_version.clone(),
                allow_watch_bookmarks: true,
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let ev = tokio::time::timeout(Duration::from_secs(20), stream.next())
        .await
        .expect("a bookmark in time")
        .unwrap()
        .unwrap();
    assert_eq!(EventType::try_from(ev.r#type).unwrap(), EventType::Bookmark);
    assert!(ev.object.is_none());
    assert!(ev.resource_version.parse::<i64>().unwrap() >= meta(&updated).resource_version.parse().unwrap());

    // A watch from before a compaction is refused with OUT_OF_RANGE.
    etcdctl_ok(&c.endpoints(), &["compact", &meta(&updated).resource_version]);
    let old = rc
        .watch(apiv1::WatchRequest {
            resource: "pods".into(),
            namespace: String::new(),
            options: Some(apiv1::ListOptions {
                resource_version: first_rv,
                ..Default::default()
            }),
        })
        .await;
    let err = match old {
        Err(e) => e,
        Ok(s) => s.into_inner().next().await.unwrap().unwrap_err(),
    };
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");
    assert!(err.message().starts_with("too old resource version"), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_preconditions_grace_dry_run_and_scopes() {
    let (_c, mut rc) = cluster(1).await;
    // Dry run: validated and returned, not stored.
    let dry = rc
        .create(apiv1::CreateRequest {
            object: Some(manifest::parse_one(POD).unwrap().into()),
            namespace: String::new(),
            dry_run: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(Object::try_from(dry).unwrap().name(), "web");
    assert_eq!(
        get(&mut rc, "pods", "", "web").await.unwrap_err().code(),
        Code::NotFound
    );

    // Cluster-scoped kinds take no namespace.
    let err = create(&mut rc, namespace("x"), "default").await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("metadata.namespace"), "{err:?}");

    // A pod bound to a node waits its grace period; grace 0 removes it.
    let mut bound = manifest::parse_one(POD).unwrap();
    if let Object::Pod(p) = &mut bound {
        p.spec.as_mut().unwrap().node_name = "n1".into();
    }
    let created = create(&mut rc, bound, "").await.unwrap();
    let del = |uid: &str, grace: Option<i64>| apiv1::DeleteRequest {
        resource: "pods".into(),
        namespace: "default".into(),
        name: "web".into(),
        options: Some(apiv1::DeleteOptions {
            grace_period_seconds: grace,
            preconditions: Some(apiv1::Preconditions {
                uid: Some(uid.into()),
                resource_version: None,
            }),
            propagation_policy: "Background".into(),
            dry_run: false,
        }),
    };
    let err = rc.delete(del("not-the-uid", None)).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    let uid = meta(&created).uid.clone();
    let pending = rc.delete(del(&uid, None)).await.unwrap().into_inner();
    assert!(pending.pending);
    let marked = get(&mut rc, "pods", "", "web").await.unwrap();
    assert!(!meta(&marked).deletion_timestamp.is_empty());
    assert_eq!(meta(&marked).deletion_grace_period_seconds, Some(30));
    let gone = rc.delete(del(&uid, Some(0))).await.unwrap().into_inner();
    assert!(!gone.pending);
    assert_eq!(
        get(&mut rc, "pods", "", "web").await.unwrap_err().code(),
        Code::NotFound
    );
}

/// Two writers with the same resourceVersion on different members: exactly one wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_updates_with_one_resource_version_one_wins() {
    let (c, mut rc) = cluster(3).await;
    let created = create(&mut rc, manifest::parse_one(POD).unwrap(), "")
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..3 {
        let mut rc = client(&c, i);
        let mut o = created.clone();
        o.metadata_mut().labels.insert("writer".into(), i.to_string());
        tasks.push(tokio::spawn(async move { update(&mut rc, o).await }));
    }
    let mut won = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(o) => won.push(o),
            Err(e) => assert_eq!(e.code(), Code::Aborted, "{e:?}"),
        }
    }
    assert_eq!(won.len(), 1, "exactly one writer wins");
    assert_eq!(get(&mut rc, "pods", "", "web").await.unwrap(), won[0]);

    // Unconditional updates (no resourceVersion) all land, retried on conflicts.
    let mut tasks = Vec::new();
    for i in 0..3 {
        let mut rc = client(&c, i);
        let mut o = won[0].clone();
        o.metadata_mut().resource_version.clear();
        o.metadata_mut().annotations.insert(format!("w{i}"), "x".into());
        tasks.push(tokio::spawn(async move { update(&mut rc, o).await }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
}

/// Every supported document of the example manifests, as (label, object).
fn supported_documents() -> Vec<(String, Object)> {
    let files = example_manifests();
    let mut out = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for (i, doc) in manifest::parse_documents(&text).unwrap() {
            let kind = doc["kind"].as_str().unwrap_or_default();
            let api_version = doc["apiVersion"].as_str().unwrap_or_default();
            if ResourceType::for_kind(api_version, kind).is_ok() {
                let label = format!("{} document {i}", file.display());
                out.push((label, Object::from_value(doc).unwrap()));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_example_manifest_applies_and_reads_back() {
    let docs = supported_documents();
    assert!(docs.len() >= 50, "only {} supported documents", docs.len());
    let (_c, mut rc) = cluster(1).await;
    let namespaces: BTreeSet<String> = docs
        .iter()
        .map(|(_, o)| o.namespace().to_string())
        .filter(|ns| !ns.is_empty() && ns != "default")
        .collect();
    for ns in namespaces {
        apply(&mut rc, namespace(&ns)).await.unwrap();
    }
    for (label, obj) in docs {
        let applied = apply(&mut rc, obj.clone())
            .await
            .unwrap_or_else(|e| panic!("{label}: {e:?}"));
        let rt = obj.resource_type();
        let got = get(&mut rc, rt.plural, applied.namespace(), applied.name())
            .await
            .unwrap_or_else(|e| panic!("{label}: {e:?}"));
        assert_eq!(got, applied, "{label}: get returns what apply stored");
        let mut expected = obj;
        defaults::apply(&mut expected);
        with_allocated_cluster_ip(&got, &mut expected);
        assert_eq!(body(&got), body(&expected), "{label}: spec changed on the way");
        assert_eq!(meta(&got).labels, meta(&expected).labels, "{label}: labels");
    }
}
