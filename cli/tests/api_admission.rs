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
    let c = Cluster::start(n, &[]).await;
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
