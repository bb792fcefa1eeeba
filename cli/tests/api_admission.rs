//! The server side of the typed API over real `berth server` processes, through the client
//! crate: Patch (merge and JSON Patch, status subresource, resourceVersion preconditions),
//! LimitRange and ResourceQuota admission (atomic with the create, also under concurrent
//! creates on 3 members), delete propagation policies and finalizers.

mod common;
use berth_client::{ClientError, PatchParams, Resource, ResourceClient};
use berth_proto::apiv1;
use berth_proto::corev1::{ConfigMap, LimitRange, Pod, ResourceQuota, Service};
use berth_proto::manifest;
use common::*;
use std::time::Duration;

async fn started(n: usize) -> (Cluster, ResourceClient) {
    // No control loops: these tests read back exactly what the API server wrote.
    let c = Cluster::start(n, &["--no-controllers", "--no-scheduler"]).await;
    let rc = ResourceClient::new(&c.running_clients(), Duration::from_secs(10)).unwrap();
    eventually("namespace default", || {
        let rc = rc.clone();
        async move { rc.get::<berth_proto::corev1::Namespace>("", "default").await.ok() }
    })
    .await;
    (c, rc)
}

fn parse<T: Resource>(yaml: &str) -> T {
    T::from_object(manifest::parse_one(yaml).unwrap()).unwrap()
}

fn config_map(name: &str) -> ConfigMap {
    parse(&format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}}}\ndata: {{k: \"1\"}}\n"
    ))
}

/// A pod with one container and the given `resources:` (YAML flow map, may be `{}`).
fn pod(name: &str, resources: &str) -> Pod {
    parse(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  containers:\n  - name: app\n    image: nginx:1.25\n    resources: {resources}\n"
    ))
}

fn rv<T: Resource>(o: &T) -> String {
    o.meta().unwrap().resource_version.clone()
}

fn invalid_message(r: Result<impl std::fmt::Debug, ClientError>) -> String {
    match r {
        Err(ClientError::Invalid { message }) => message,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

fn forbidden_message(r: Result<impl std::fmt::Debug, ClientError>) -> String {
    match r {
        Err(ClientError::Forbidden(m)) => m,
        other => panic!("expected Forbidden, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn patch_merge_json_and_status() {
    let (_c, rc) = started(1).await;
    let cm = rc.create("default", &config_map("p")).await.unwrap();

    // Merge patch: add a key, remove another with null, add a label.
    let merged: ConfigMap = rc
        .patch(
            "default",
            "p",
            &PatchParams::merge(),
            br#"{"data":{"k":null,"x":"2"},"metadata":{"labels":{"a":"b"}}}"#,
        )
        .await
        .unwrap();
    assert_eq!(merged.data.get("x").map(String::as_str), Some("2"));
    assert!(!merged.data.contains_key("k"));
    assert_eq!(merged.metadata.as_ref().unwrap().labels["a"], "b");
    assert_ne!(rv(&merged), rv(&cm));

    // JSON Patch: test then replace; a failed test changes nothing.
    let ops =
        br#"[{"op":"test","path":"/data/x","value":"2"},{"op":"replace","path":"/data/x","value":"3"}]"#;
    let j: ConfigMap = rc.patch("default", "p", &PatchParams::json(), ops).await.unwrap();
    assert_eq!(j.data["x"], "3");
    let msg = invalid_message(
        rc.patch::<ConfigMap>("default", "p", &PatchParams::json(), ops)
            .await,
    );
    assert!(msg.contains("patch[0]"), "{msg}");

    // A stale resourceVersion in the patch is a precondition: Conflict, not retried.
    let stale = format!(
        r#"{{"metadata":{{"resourceVersion":"{}"}},"data":{{"y":"1"}}}}"#,
        rv(&cm)
    );
    let err = rc
        .patch::<ConfigMap>("default", "p", &PatchParams::merge(), stale.as_bytes())
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Conflict(_)), "{err:?}");

    // A patch that makes the object ill-typed or invalid names the field path.
    let msg = invalid_message(
        rc.patch::<ConfigMap>("default", "p", &PatchParams::merge(), br#"{"data":{"x":5}}"#)
            .await,
    );
    assert!(msg.contains("data.x"), "{msg}");
    let msg = invalid_message(
        rc.patch::<ConfigMap>(
            "default",
            "p",
            &PatchParams::merge(),
            br#"{"metadata":{"name":"q"}}"#,
        )
        .await,
    );
    assert!(msg.contains("metadata.name"), "{msg}");

    // Status: ignored through the main resource, applied through the status subresource.
    let p = rc.create("default", &pod("web", "{}")).await.unwrap();
    let phase = br#"{"status":{"phase":"Running"}}"#;
    let main: Pod = rc
        .patch("default", "web", &PatchParams::merge(), phase)
        .await
        .unwrap();
    assert!(main.status.as_ref().is_none_or(|s| s.phase.is_empty()));
    assert_eq!(rv(&main), rv(&p), "a patch that changes nothing writes nothing");
    let st: Pod = rc
        .patch("default", "web", &PatchParams::merge().status(), phase)
        .await
        .unwrap();
    assert_eq!(st.status.unwrap().phase, "Running");
    let spec_via_status: Pod = rc
        .patch(
            "default",
            "web",
            &PatchParams::merge().status(),
            br#"{"spec":{"activeDeadlineSeconds":5}}"#,
        )
        .await
        .unwrap();
    assert_eq!(spec_via_status.spec.unwrap().active_deadline_seconds, None);

    // Strategic merge: one container's image changes, its resources and the list stay.
    let sm: Pod = rc
        .patch(
            "default",
            "web",
            &PatchParams::strategic(),
            br#"{"spec":{"containers":[{"name":"app","image":"nginx:1.27"}]}}"#,
        )
        .await
        .unwrap();
    let cs = sm.spec.unwrap().containers;
    assert_eq!((cs.len(), cs[0].image.as_str()), (1, "nginx:1.27"));
    assert_eq!(cs[0].termination_message_path, "/dev/termination-log");
}

/// Unconditional merge patches from many clients on 3 members: none is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_patches_are_all_applied() {
    let (c, rc) = started(3).await;
    rc.create("default", &config_map("c")).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let rc = ResourceClient::new(&[c.members[i % 3].client.clone()], Duration::from_secs(10)).unwrap();
        tasks.push(tokio::spawn(async move {
            let body = format!(r#"{{"data":{{"w{i}":"x"}}}}"#);
            rc.patch::<ConfigMap>("default", "c", &PatchParams::merge(), body.as_bytes())
                .await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let got: ConfigMap = rc.get("default", "c").await.unwrap();
    assert_eq!(got.data.len(), 9, "{:?}", got.data);
}

fn policy(p: &str) -> apiv1::DeleteOptions {
    apiv1::DeleteOptions {
        propagation_policy: p.into(),
        ..Default::default()
    }
}

/// Foreground and Orphan leave the object marked with their finalizer (for the garbage
/// collector); an update removing the last finalizer deletes it; Background deletes at once.
#[tokio::test(flavor = "multi_thread")]
async fn delete_propagation_policies_and_finalizers() {
    let (_c, rc) = started(1).await;
    let finalizers = |cm: &ConfigMap| cm.metadata.as_ref().unwrap().finalizers.clone();
    rc.create("default", &config_map("owner")).await.unwrap();
    let (obj, pending) = rc
        .delete::<ConfigMap>("default", "owner", policy("Foreground"))
        .await
        .unwrap();
    let obj = obj.unwrap();
    assert!(pending);
    assert_eq!(finalizers(&obj), ["foregroundDeletion"]);
    assert!(!obj.metadata.as_ref().unwrap().deletion_timestamp.is_empty());
    // Orphan replaces Foreground's finalizer; the object is still there.
    rc.delete::<ConfigMap>("default", "owner", policy("Orphan"))
        .await
        .unwrap();
    let got: ConfigMap = rc.get("default", "owner").await.unwrap();
    assert_eq!(finalizers(&got), ["orphan"]);
    // The collector's update removing the last finalizer completes the deletion.
    rc.patch::<ConfigMap>(
        "default",
        "owner",
        &PatchParams::merge(),
        br#"{"metadata":{"finalizers":null}}"#,
    )
    .await
    .unwrap();
    assert!(matches!(
        rc.get::<ConfigMap>("default", "owner").await,
        Err(ClientError::NotFound(_))
    ));

    // Another finalizer keeps a Background delete pending too.
    let mut kept = config_map("kept");
    kept.metadata.as_mut().unwrap().finalizers = vec!["example.com/hold".into()];
    rc.create("default", &kept).await.unwrap();
    let (_, pending) = rc
        .delete::<ConfigMap>("default", "kept", policy("Background"))
        .await
        .unwrap();
    assert!(pending);
    let (_, pending) = rc
        .delete::<ConfigMap>("default", "kept", policy(""))
        .await
        .unwrap();
    assert!(pending);

    rc.create("default", &config_map("plain")).await.unwrap();
    let (_, pending) = rc
        .delete::<ConfigMap>("default", "plain", policy("Background"))
        .await
        .unwrap();
    assert!(!pending);
    let err = rc
        .delete::<ConfigMap>("default", "kept", policy("Sideways"))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Invalid { .. }), "{err:?}");
}

const LIMITS: &str = r#"
apiVersion: v1
kind: LimitRange
metadata: {name: limits}
spec:
  limits:
  - type: Container
    default: {cpu: 500m, memory: 128Mi}
    defaultRequest: {cpu: 100m, memory: 64Mi}
    max: {cpu: "1"}
"#;

/// LimitRange defaults show on the created pod; a limit over the max is Forbidden naming the
/// field; a dry run is admitted the same way without being stored.
#[tokio::test(flavor = "multi_thread")]
async fn limit_range_defaults_and_max() {
    let (_c, rc) = started(1).await;
    rc.create("default", &parse::<LimitRange>(LIMITS)).await.unwrap();
    let p = rc.create("default", &pod("d", "{}")).await.unwrap();
    let r = p.spec.unwrap().containers[0].resources.clone().unwrap();
    assert_eq!(r.limits["cpu"], "500m");
    assert_eq!(r.limits["memory"], "128Mi");
    assert_eq!(r.requests["cpu"], "100m");
    assert_eq!(r.requests["memory"], "64Mi");
    let got: Pod = rc.get("default", "d").await.unwrap();
    assert_eq!(got.spec.unwrap().containers[0].resources, Some(r));

    let msg = forbidden_message(
        rc.create(
            "default",
            &pod("big", "{limits: {cpu: '2'}, requests: {cpu: 500m}}"),
        )
        .await,
    );
    assert_eq!(
        msg,
        "pods \"big\" is forbidden: spec.containers[0].resources.limits.cpu: maximum cpu usage per Container is 1, but limit is 2"
    );
    assert!(matches!(
        rc.get::<Pod>("default", "big").await,
        Err(ClientError::NotFound(_))
    ));
}

const QUOTA: &str = r#"
apiVersion: v1
kind: ResourceQuota
metadata: {name: q}
spec:
  hard: {pods: "3", requests.cpu: "1", configmaps: "10"}
"#;

fn used(q: &ResourceQuota, k: &str) -> String {
    q.status
        .as_ref()
        .unwrap()
        .used
        .get(k)
        .cloned()
        .unwrap_or_default()
}

/// A quota counts what exists when it is created, charges creates and releases deletes in
/// their Txn, refuses what would exceed it with Kubernetes' message, and requires the
/// quota'd compute resources on pods.
#[tokio::test(flavor = "multi_thread")]
async fn quota_charges_releases_and_refuses() {
    let (_c, rc) = started(1).await;
    rc.create("default", &pod("a", "{requests: {cpu: 300m}}"))
        .await
        .unwrap();
    let q = rc
        .create("default", &parse::<ResourceQuota>(QUOTA))
        .await
        .unwrap();
    assert_eq!(used(&q, "pods"), "1");
    assert_eq!(used(&q, "requests.cpu"), "300m");
    assert_eq!(q.status.as_ref().unwrap().hard["pods"], "3");

    rc.create("default", &pod("b", "{requests: {cpu: 300m}}"))
        .await
        .unwrap();
    let msg = forbidden_message(rc.create("default", &pod("c", "{requests: {cpu: 500m}}")).await);
    assert_eq!(
        msg,
        "pods \"c\" is forbidden: exceeded quota: q, requested: requests.cpu=500m, used: requests.cpu=600m, limited: requests.cpu=1"
    );
    let msg = forbidden_message(rc.create("default", &pod("n", "{}")).await);
    assert_eq!(
        msg,
        "pods \"n\" is forbidden: failed quota: q: must specify requests.cpu for: app"
    );
    rc.create("default", &pod("c", "{requests: {cpu: 100m}}"))
        .await
        .unwrap();
    let msg = forbidden_message(rc.create("default", &pod("d", "{requests: {cpu: 100m}}")).await);
    assert_eq!(
        msg,
        "pods \"d\" is forbidden: exceeded quota: q, requested: pods=1, used: pods=3, limited: pods=3"
    );
    let q: ResourceQuota = rc.get("default", "q").await.unwrap();
    assert_eq!(
        (used(&q, "pods").as_str(), used(&q, "requests.cpu").as_str()),
        ("3", "700m")
    );
    assert_eq!(used(&q, "configmaps"), "0");

    // A delete releases in its own Txn; then the create fits.
    rc.delete::<Pod>("default", "a", policy("")).await.unwrap();
    let q: ResourceQuota = rc.get("default", "q").await.unwrap();
    assert_eq!(
        (used(&q, "pods").as_str(), used(&q, "requests.cpu").as_str()),
        ("2", "400m")
    );
    rc.create("default", &pod("d", "{requests: {cpu: 100m}}"))
        .await
        .unwrap();

    // Raising hard recomputes status.
    let raised: ResourceQuota = rc
        .patch(
            "default",
            "q",
            &PatchParams::merge(),
            br#"{"spec":{"hard":{"pods":"10"}}}"#,
        )
        .await
        .unwrap();
    let st = raised.status.unwrap();
    assert_eq!((st.hard["pods"].as_str(), st.used["pods"].as_str()), ("10", "3"));
}

/// N concurrent creates spread over the 3 members of a cluster against a quota of M < N
/// pods: exactly M are created, the rest Forbidden, and status.used says M.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_never_exceed_a_quota() {
    const CREATES: usize = 24;
    const ALLOWED: usize = 7;
    let (c, rc) = started(3).await;
    let mut quota = parse::<ResourceQuota>(QUOTA);
    quota.spec.as_mut().unwrap().hard = [
        ("count/configmaps".to_string(), ALLOWED.to_string()),
        ("services".to_string(), "100".to_string()),
    ]
    .into();
    rc.create("default", &quota).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..CREATES {
        let rc = ResourceClient::new(&[c.members[i % 3].client.clone()], Duration::from_secs(30)).unwrap();
        tasks.push(tokio::spawn(async move {
            rc.create("default", &config_map(&format!("cm{i}"))).await
        }));
    }
    let (mut created, mut refused) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => created += 1,
            Err(ClientError::Forbidden(m)) => {
                assert!(m.contains("exceeded quota: q"), "{m}");
                refused += 1;
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!((created, refused), (ALLOWED, CREATES - ALLOWED));
    let listed = rc
        .list::<ConfigMap>("default", &Default::default())
        .await
        .unwrap();
    assert_eq!(listed.items.len(), ALLOWED);
    let q: ResourceQuota = rc.get("default", "q").await.unwrap();
    assert_eq!(used(&q, "count/configmaps"), ALLOWED.to_string());
    assert_eq!(used(&q, "services"), "0");
}

fn service(name: &str, cluster_ip: &str) -> Service {
    let ip = if cluster_ip.is_empty() {
        String::new()
    } else {
        format!("\n  clusterIP: {cluster_ip}")
    };
    parse(&format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  selector: {{app: x}}\n  ports: [{{port: 80}}]{ip}\n"
    ))
}

fn cluster_ip(s: &Service) -> String {
    s.spec.as_ref().unwrap().cluster_ip.clone()
}

/// ClusterIPs come from --service-cidr, one allocation key per address in the create's Txn:
/// concurrent creates on 3 members get distinct addresses until the range is full; a delete
/// frees its address; a requested address outside the range or in use is Invalid naming
/// spec.clusterIP; an apply without clusterIP keeps the allocated one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn service_cluster_ips_are_allocated_atomically() {
    let c = Cluster::start(3, &["--service-cidr", "10.200.0.0/29"]).await;
    let rc = ResourceClient::new(&c.running_clients(), Duration::from_secs(10)).unwrap();
    eventually("namespace default", || {
        let rc = rc.clone();
        async move { rc.get::<berth_proto::corev1::Namespace>("", "default").await.ok() }
    })
    .await;
    // A /29 hands out 6 addresses; 8 concurrent creates: 6 get distinct ones, 2 find it full.
    let mut tasks = Vec::new();
    for i in 0..8 {
        let rc = ResourceClient::new(&[c.members[i % 3].client.clone()], Duration::from_secs(30)).unwrap();
        tasks.push(tokio::spawn(async move {
            rc.create("default", &service(&format!("s{i}"), "")).await
        }));
    }
    let mut ips = std::collections::BTreeSet::new();
    let mut full = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(s) => {
                let ip = cluster_ip(&s);
                assert!(
                    ip.starts_with("10.200.0.") && ip != "10.200.0.0" && ip != "10.200.0.7",
                    "{ip}"
                );
                assert_eq!(s.spec.as_ref().unwrap().cluster_ips, std::slice::from_ref(&ip));
                assert!(ips.insert(ip), "an address handed out twice");
            }
            Err(e) => {
                let msg = invalid_message(Err::<(), _>(e));
                assert!(msg.contains("spec.clusterIP") && msg.contains("is full"), "{msg}");
                full += 1;
            }
        }
    }
    assert_eq!((ips.len(), full), (6, 2));
    let taken: Service = rc
        .list::<Service>("default", &Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .next()
        .unwrap();
    let name = taken.metadata.as_ref().unwrap().name.clone();
    let ip = cluster_ip(&taken);
    // An apply of the manifest again (no clusterIP) keeps the address.
    let applied = rc.apply(&service(&name, ""), "test", false).await.unwrap();
    assert_eq!(cluster_ip(&applied), ip);
    let other = if ip == "10.200.0.6" {
        "10.200.0.5"
    } else {
        "10.200.0.6"
    };
    let msg = invalid_message(rc.apply(&service(&name, other), "test", false).await);
    assert!(
        msg.contains("spec.clusterIP") && msg.contains("immutable"),
        "{msg}"
    );

    // Delete frees the address; asking for it then succeeds; asking again is in use.
    rc.delete::<Service>("default", &name, policy("")).await.unwrap();
    rc.create("default", &service("again", &ip)).await.unwrap();
    let msg = invalid_message(rc.create("default", &service("twice", &ip)).await);
    assert!(
        msg.contains("spec.clusterIP") && msg.contains("already allocated"),
        "{msg}"
    );
    let msg = invalid_message(rc.create("default", &service("outside", "10.96.0.10")).await);
    assert!(
        msg.contains("spec.clusterIP") && msg.contains("not in the valid range"),
        "{msg}"
    );
    // Headless services take no address.
    let headless = rc.create("default", &service("headless", "None")).await.unwrap();
    assert_eq!(cluster_ip(&headless), "None");
}

/// Compute quota under concurrency, with LimitRange defaults supplying the quota'd request:
/// pods that state no resources get requests.cpu=100m from the LimitRange, and of 16
/// concurrent creates on 3 members against requests.cpu=1 exactly 10 are admitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_pods_fill_a_compute_quota_exactly() {
    let (c, rc) = started(3).await;
    rc.create("default", &parse::<LimitRange>(LIMITS)).await.unwrap();
    let mut quota = parse::<ResourceQuota>(QUOTA);
    quota.spec.as_mut().unwrap().hard = [("requests.cpu".to_string(), "1".to_string())].into();
    rc.create("default", &quota).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..16 {
        let rc = ResourceClient::new(&[c.members[i % 3].client.clone()], Duration::from_secs(30)).unwrap();
        tasks.push(tokio::spawn(async move {
            rc.create("default", &pod(&format!("p{i}"), "{}")).await
        }));
    }
    let mut created = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(p) => {
                let r = p.spec.unwrap().containers[0].resources.clone().unwrap();
                assert_eq!(r.requests["cpu"], "100m");
                created += 1;
            }
            Err(e) => {
                let m = forbidden_message(Err::<(), _>(e));
                assert!(
                    m.contains("exceeded quota: q, requested: requests.cpu=100m"),
                    "{m}"
                );
            }
        }
    }
    assert_eq!(created, 10);
    let q: ResourceQuota = rc.get("default", "q").await.unwrap();
    assert_eq!(used(&q, "requests.cpu"), "1");
}

/// A Service turned ExternalName releases its address in that update's Txn; turned back, it
/// gets one again.
#[tokio::test(flavor = "multi_thread")]
async fn service_type_changes_release_and_allocate() {
    let c = Cluster::start(1, &["--service-cidr", "10.201.0.0/30"]).await;
    let rc = ResourceClient::new(&c.running_clients(), Duration::from_secs(10)).unwrap();
    eventually("namespace default", || {
        let rc = rc.clone();
        async move { rc.get::<berth_proto::corev1::Namespace>("", "default").await.ok() }
    })
    .await;
    // A /30 has two addresses.
    let a = rc.create("default", &service("a", "")).await.unwrap();
    rc.create("default", &service("b", "")).await.unwrap();
    invalid_message(rc.create("default", &service("c", "")).await);
    let ext = br#"{"spec":{"type":"ExternalName","externalName":"db.example.com","clusterIP":null,"clusterIPs":null}}"#;
    let e: Service = rc
        .patch("default", "a", &PatchParams::merge(), ext)
        .await
        .unwrap();
    assert_eq!(cluster_ip(&e), "");
    let c3 = rc.create("default", &service("c", "")).await.unwrap();
    assert_eq!(
        cluster_ip(&c3),
        cluster_ip(&a),
        "the released address is the only free one"
    );
    rc.delete::<Service>("default", "c", policy("")).await.unwrap();
    let back = br#"{"spec":{"type":"ClusterIP","externalName":null}}"#;
    let b: Service = rc
        .patch("default", "a", &PatchParams::merge(), back)
        .await
        .unwrap();
    assert_eq!(cluster_ip(&b), cluster_ip(&a));
}
