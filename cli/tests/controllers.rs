//! The controllers inside real `berth server` processes. There is no scheduler or agent here:
//! where pods must run, the test plays the kubelet (it marks pods Running/Ready through
//! UpdateStatus and renews node Leases), a driver of the system, not a stand-in for the
//! controllers under test.

mod common;
use berth_client::{ClientError, ListParams, Resource, ResourceClient};
use berth_proto::apiv1::DeleteOptions;
use berth_proto::appsv1::{Deployment, ReplicaSet};
use berth_proto::coordinationv1::Lease;
use berth_proto::corev1::{ConfigMap, Endpoints, Namespace, Node, Pod, PodCondition, Service};
use berth_proto::manifest;
use berth_proto::metav1::OwnerReference;
use common::*;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn parse<T: Resource>(yaml: &str) -> T {
    T::from_object(manifest::parse_one(yaml).unwrap()).unwrap()
}

async fn started(extra: &[&str]) -> (Cluster, ResourceClient) {
    // The tests play scheduler and kubelet themselves (they bind pods and mark them Ready).
    let mut args = vec!["--no-scheduler"];
    args.extend_from_slice(extra);
    let c = Cluster::start(1, &args).await;
    let rc = ResourceClient::new(&c.running_clients(), Duration::from_secs(5)).unwrap();
    eventually("namespace default and the controller manager's lease", || {
        let rc = rc.clone();
        async move {
            rc.get::<Namespace>("", "default").await.ok()?;
            rc.get::<Lease>("kube-system", "berth-controller-manager")
                .await
                .ok()
        }
    })
    .await;
    (c, rc)
}

fn now_rfc3339() -> String {
    let micros = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros() as i64;
    berth_client::leader::format_micro_time(micros)
}

async fn pods(rc: &ResourceClient, ns: &str, selector: &str) -> Vec<Pod> {
    let p = ListParams {
        label_selector: selector.into(),
        ..Default::default()
    };
    rc.list_all::<Pod>(ns, &p).await.unwrap().items
}

/// Re-reads `name` and writes it changed by `f` until the write wins (controllers write the
/// same objects, so a lost compare-and-swap is expected now and then).
async fn modify<T: Resource>(rc: &ResourceClient, ns: &str, name: &str, f: impl Fn(&mut T)) -> T {
    loop {
        let mut o: T = rc.get(ns, name).await.unwrap();
        f(&mut o);
        match rc.update(&o).await {
            Ok(o) => return o,
            Err(ClientError::Conflict(_)) => continue,
            Err(e) => panic!("update {name}: {e}"),
        }
    }
}

fn name<T: Resource>(o: &T) -> String {
    o.meta().unwrap().name.clone()
}

fn active(p: &Pod) -> bool {
    p.metadata.as_ref().unwrap().deletion_timestamp.is_empty()
}

fn ready(p: &Pod) -> bool {
    p.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.r#type == "Ready" && c.status == "True")
    })
}

/// Marks a pod Running and Ready (or not) with an IP, as a kubelet would report it.
async fn report(rc: &ResourceClient, p: &Pod, is_ready: bool, ip: &str) -> Result<Pod, ClientError> {
    let mut next = p.clone();
    let st = next.status.get_or_insert_with(Default::default);
    st.phase = "Running".into();
    st.pod_ip = ip.into();
    st.conditions = vec![PodCondition {
        r#type: "Ready".into(),
        status: if is_ready { "True" } else { "False" }.into(),
        last_transition_time: now_rfc3339(),
        ..Default::default()
    }];
    rc.update_status(&next).await
}

/// A fake kubelet for namespace `ns`: every pod that has existed for `ready_after` becomes
/// Running and Ready. Stops when `stop` is set.
fn kubelet(
    rc: ResourceClient,
    ns: &'static str,
    ready_after: Duration,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut first_seen = std::collections::HashMap::<String, std::time::Instant>::new();
        let mut n = 0u32;
        while !stop.load(Ordering::Relaxed) {
            for p in pods(&rc, ns, "").await {
                if ready(&p) || !active(&p) {
                    continue;
                }
                let seen = *first_seen.entry(name(&p)).or_insert_with(std::time::Instant::now);
                if seen.elapsed() >= ready_after {
                    n += 1;
                    let _ = report(&rc, &p, true, &format!("10.0.{}.{}", n / 200, n % 200 + 1)).await;
                }
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    })
}

const RS_YAML: &str = "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata: {name: web}\nspec:\n  replicas: 3\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec: {containers: [{name: c, image: 'nginx:1.25'}]}\n";

fn owned_by(p: &Pod, uid: &str) -> bool {
    p.metadata
        .as_ref()
        .unwrap()
        .owner_references
        .iter()
        .any(|r| r.uid == uid && r.controller == Some(true))
}

#[tokio::test(flavor = "multi_thread")]
async fn replicaset_keeps_its_count_adopts_and_releases() {
    let (_c, rc) = started(&[]).await;
    let rs = rc.create("default", &parse::<ReplicaSet>(RS_YAML)).await.unwrap();
    let uid = rs.metadata.as_ref().unwrap().uid.clone();
    let three = || async {
        let v: Vec<Pod> = pods(&rc, "default", "app=web")
            .await
            .into_iter()
            .filter(active)
            .collect();
        (v.len() == 3 && v.iter().all(|p| owned_by(p, &uid))).then_some(v)
    };
    let first = eventually("3 pods owned by the replica set", three).await;
    assert!(first.iter().all(|p| name(p).starts_with("web-")));

    // Deleted pods are replaced.
    let gone = name(&first[0]);
    rc.delete::<Pod>("default", &gone, DeleteOptions::default())
        .await
        .unwrap();
    let again = eventually("3 pods again", three).await;
    assert!(again.iter().all(|p| name(p) != gone));

    // A matching orphan is adopted, and then one pod too many is deleted.
    let orphan: Pod = parse("apiVersion: v1\nkind: Pod\nmetadata: {name: stray, labels: {app: web}}\nspec: {containers: [{name: c, image: 'nginx:1.25'}]}\n");
    rc.create("default", &orphan).await.unwrap();
    eventually("the orphan adopted and the count back to 3", || async {
        let stray = rc.get::<Pod>("default", "stray").await;
        let adopted = match &stray {
            Ok(p) => owned_by(p, &uid),
            Err(ClientError::NotFound(_)) => true, // adopted, then chosen as the surplus pod
            Err(e) => panic!("{e}"),
        };
        let n = pods(&rc, "default", "app=web")
            .await
            .into_iter()
            .filter(active)
            .count();
        (adopted && n == 3).then_some(())
    })
    .await;

    // A pod relabelled out of the selector is released and replaced.
    let p: Pod = modify(&rc, "default", &name(&again[1]), |p: &mut Pod| {
        p.metadata
            .as_mut()
            .unwrap()
            .labels
            .insert("app".into(), "other".into());
    })
    .await;
    eventually("the relabelled pod released, 3 matching again", || async {
        let released: Pod = rc.get("default", &name(&p)).await.ok()?;
        let n = pods(&rc, "default", "app=web")
            .await
            .into_iter()
            .filter(active)
            .count();
        (released.metadata.as_ref()?.owner_references.is_empty() && n == 3).then_some(())
    })
    .await;

    // Status follows; scaling down deletes.
    modify(&rc, "default", "web", |rs: &mut ReplicaSet| {
        rs.spec.as_mut().unwrap().replicas = Some(1)
    })
    .await;
    eventually("scaled to 1 with status", || async {
        let rs: ReplicaSet = rc.get("default", "web").await.ok()?;
        let st = rs.status.clone()?;
        let n = pods(&rc, "default", "app=web")
            .await
            .into_iter()
            .filter(active)
            .count();
        (n == 1 && st.replicas == 1 && st.observed_generation == rs.metadata.as_ref()?.generation)
            .then_some(())
    })
    .await;
}

const DEPLOY_YAML: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 4\n  selector: {matchLabels: {app: web}}\n  strategy: {type: RollingUpdate, rollingUpdate: {maxSurge: 1, maxUnavailable: 1}}\n  template:\n    metadata: {labels: {app: web}}\n    spec: {containers: [{name: c, image: 'nginx:1.25'}]}\n";

fn berth(args: &[&str]) -> String {
    let out = std::process::Command::new(berth_bin())
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "berth {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn set_image_1_26(d: &mut Deployment) {
    let t = d.spec.as_mut().unwrap().template.as_mut().unwrap();
    t.spec.as_mut().unwrap().containers[0].image = "nginx:1.26".into();
}

fn revision_of<T: Resource>(o: &T) -> String {
    o.meta()
        .and_then(|m| m.annotations.get("deployment.kubernetes.io/revision").cloned())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn deployment_rolls_out_within_max_unavailable_and_rolls_back() {
    let (c, rc) = started(&[]).await;
    let stop = Arc::new(AtomicBool::new(false));
    let _kubelet = kubelet(rc.clone(), "default", Duration::from_millis(300), stop.clone());
    rc.create("default", &parse::<Deployment>(DEPLOY_YAML))
        .await
        .unwrap();
    let server = c.endpoints();
    let out = berth(&[
        "rollout",
        "status",
        "deployment/web",
        "--server",
        &server,
        "--timeout-ms",
        "30000",
    ]);
    assert!(
        out.ends_with("deployment \"web\" successfully rolled out\n"),
        "{out}"
    );
    // Pods take 300 ms to become ready: the first read cannot find the rollout done.
    let first = out.lines().next().unwrap();
    assert!(first.starts_with("Waiting for deployment"), "{out}");
    assert!(
        out.contains("Waiting for deployment \"web\" rollout to finish: "),
        "progress lines as the rollout goes: {out}"
    );
    let d: Deployment = rc.get("default", "web").await.unwrap();
    assert_eq!(revision_of(&d), "1");
    let conds = &d.status.as_ref().unwrap().conditions;
    assert!(
        conds
            .iter()
            .any(|c| c.r#type == "Available" && c.status == "True"),
        "{conds:?}"
    );
    assert!(conds
        .iter()
        .any(|c| c.r#type == "Progressing" && c.reason == "NewReplicaSetAvailable"));

    // A new template: watch every step keep >= 3 of 4 available and <= 5 pods in all.
    modify(&rc, "default", "web", set_image_1_26).await;
    let saw_two_sets = AtomicBool::new(false);
    eventually("the rolling update to finish", || async {
        let ps: Vec<Pod> = pods(&rc, "default", "app=web")
            .await
            .into_iter()
            .filter(active)
            .collect();
        let available = ps.iter().filter(|p| ready(p)).count();
        assert!(
            available >= 3,
            "availability fell to {available} of 4 (maxUnavailable 1)"
        );
        assert!(ps.len() <= 5, "{} pods (maxSurge 1)", ps.len());
        let hashes: BTreeSet<String> = ps
            .iter()
            .filter_map(|p| p.metadata.as_ref()?.labels.get("pod-template-hash").cloned())
            .collect();
        if hashes.len() == 2 {
            saw_two_sets.store(true, Ordering::Relaxed);
        }
        let d: Deployment = rc.get("default", "web").await.ok()?;
        let done = berth_controllers::deployment::rollout_status(&d).ok()?.1;
        (done && hashes.len() == 1 && ps.len() == 4 && available == 4).then_some(())
    })
    .await;
    assert!(
        saw_two_sets.load(Ordering::Relaxed),
        "old and new pods coexisted during the rollout"
    );
    let rss = rc
        .list_all::<ReplicaSet>("default", &ListParams::default())
        .await
        .unwrap()
        .items;
    assert_eq!(rss.len(), 2);
    let mut revs: Vec<(String, i32)> = rss
        .iter()
        .map(|rs| (revision_of(rs), rs.spec.as_ref().unwrap().replicas.unwrap()))
        .collect();
    revs.sort();
    assert_eq!(revs, [("1".to_string(), 0), ("2".to_string(), 4)]);
    for rs in &rss {
        let hash = rs.metadata.as_ref().unwrap().labels["pod-template-hash"].clone();
        assert_eq!(name(rs), format!("web-{hash}"));
    }

    let hist = berth(&["rollout", "history", "deployment/web", "--server", &server]);
    assert!(
        hist.contains("REVISION") && hist.contains("\n1 ") && hist.contains("\n2 "),
        "{hist}"
    );

    // Undo: the first template comes back as revision 3 on the first ReplicaSet.
    let out = berth(&["rollout", "undo", "deployment/web", "--server", &server]);
    assert!(out.contains("rolled back"), "{out}");
    berth(&[
        "rollout",
        "status",
        "deployment/web",
        "--server",
        &server,
        "--timeout-ms",
        "30000",
    ]);
    eventually("revision 3 on the nginx:1.25 replica set", || async {
        let rss = rc
            .list_all::<ReplicaSet>("default", &ListParams::default())
            .await
            .ok()?
            .items;
        let newest = rss.iter().find(|rs| revision_of(*rs) == "3")?;
        let image = &newest.spec.as_ref()?.template.as_ref()?.spec.as_ref()?.containers[0].image;
        (rss.len() == 2 && image == "nginx:1.25" && newest.spec.as_ref()?.replicas == Some(4)).then_some(())
    })
    .await;
    let d: Deployment = rc.get("default", "web").await.unwrap();
    assert_eq!(revision_of(&d), "3");

    // Restart: a new template (annotation), so a third ReplicaSet.
    berth(&["rollout", "restart", "deployment/web", "--server", &server]);
    berth(&[
        "rollout",
        "status",
        "deployment/web",
        "--server",
        &server,
        "--timeout-ms",
        "30000",
    ]);
    let rss = rc
        .list_all::<ReplicaSet>("default", &ListParams::default())
        .await
        .unwrap()
        .items;
    assert_eq!(rss.len(), 3);
    stop.store(true, Ordering::Relaxed);
}

#[tokio::test(flavor = "multi_thread")]
async fn recreate_stops_old_pods_before_starting_new_ones() {
    let (_c, rc) = started(&[]).await;
    let stop = Arc::new(AtomicBool::new(false));
    let _kubelet = kubelet(rc.clone(), "default", Duration::from_millis(100), stop.clone());
    let yaml = DEPLOY_YAML.replace(
        "{type: RollingUpdate, rollingUpdate: {maxSurge: 1, maxUnavailable: 1}}",
        "{type: Recreate}\n  revisionHistoryLimit: 0",
    );
    rc.create("default", &parse::<Deployment>(&yaml)).await.unwrap();
    let done = || async {
        let d: Deployment = rc.get("default", "web").await.ok()?;
        berth_controllers::deployment::rollout_status(&d)
            .ok()?
            .1
            .then_some(())
    };
    eventually("first rollout", done).await;
    modify(&rc, "default", "web", set_image_1_26).await;
    eventually("the recreate rollout to finish", || async {
        let ps: Vec<Pod> = pods(&rc, "default", "app=web")
            .await
            .into_iter()
            .filter(active)
            .collect();
        let hashes: BTreeSet<String> = ps
            .iter()
            .filter_map(|p| p.metadata.as_ref()?.labels.get("pod-template-hash").cloned())
            .collect();
        assert!(
            hashes.len() <= 1,
            "old and new pods at once under Recreate: {hashes:?}"
        );
        let d: Deployment = rc.get("default", "web").await.ok()?;
        let image = d.spec.as_ref()?.template.as_ref()?.spec.as_ref()?.containers[0]
            .image
            .clone();
        let rolled = berth_controllers::deployment::rollout_status(&d).ok()?.1;
        (rolled && image == "nginx:1.26" && revision_of(&d) == "2").then_some(())
    })
    .await;
    // revisionHistoryLimit 0: the old ReplicaSet goes once the rollout is complete.
    eventually("only the new ReplicaSet left", || async {
        let rss = rc
            .list_all::<ReplicaSet>("default", &ListParams::default())
            .await
            .ok()?
            .items;
        (rss.len() == 1 && revision_of(&rss[0]) == "2").then_some(())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
}

fn node(name: &str) -> Node {
    parse(&format!(
        "apiVersion: v1\nkind: Node\nmetadata: {{name: {name}}}\n"
    ))
}

async fn renew(rc: &ResourceClient, node: &str) {
    match rc.get::<Lease>("kube-node-lease", node).await {
        Ok(mut l) => {
            l.spec.get_or_insert_with(Default::default).renew_time = Some(now_rfc3339());
            let _ = rc.update(&l).await;
        }
        Err(_) => {
            let mut l: Lease = parse(&format!(
                "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata: {{name: {node}, namespace: kube-node-lease}}\nspec: {{holderIdentity: {node}, leaseDurationSeconds: 1}}\n"
            ));
            l.spec.as_mut().unwrap().renew_time = Some(now_rfc3339());
            let _ = rc.create("kube-node-lease", &l).await;
        }
    }
}

fn tainted(n: &Node) -> bool {
    n.spec.as_ref().is_some_and(|s| {
        s.taints
            .iter()
            .any(|t| t.key == "node.kubernetes.io/unreachable" && t.effect == "NoExecute")
    })
}

fn ready_status(n: &Node) -> (String, String) {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.r#type == "Ready"))
        .map(|c| (c.status.clone(), c.reason.clone()))
        .unwrap_or_default()
}

fn bound_pod(name: &str, node: &str, toleration: &str) -> Pod {
    parse(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  nodeName: {node}\n  containers: [{{name: c, image: 'nginx:1.25'}}]\n  tolerations: [{toleration}]\n"
    ))
}

#[tokio::test(flavor = "multi_thread")]
async fn silent_nodes_go_not_ready_get_tainted_and_lose_their_pods() {
    let (_c, rc) = started(&["--node-grace-period-ms", "2000", "--cluster-cidr", "10.99.0.0/16"]).await;
    for n in ["bk-n1", "bk-n2"] {
        rc.create("", &node(n)).await.unwrap();
    }
    // Node IPAM: distinct /24s from the cluster CIDR.
    let cidrs = eventually("pod CIDRs for both nodes", || async {
        let mut v = Vec::new();
        for n in ["bk-n1", "bk-n2"] {
            let node: Node = rc.get("", n).await.ok()?;
            let s = node.spec?;
            (!s.pod_cidr.is_empty() && s.pod_cidrs == vec![s.pod_cidr.clone()]).then_some(())?;
            v.push(s.pod_cidr);
        }
        Some(v)
    })
    .await;
    let set: BTreeSet<&String> = cidrs.iter().collect();
    assert_eq!(set.len(), 2, "{cidrs:?}");
    assert!(
        cidrs
            .iter()
            .all(|c| c.starts_with("10.99.") && c.ends_with(".0/24")),
        "{cidrs:?}"
    );

    // Both agents alive; n2 goes silent after a while.
    let n2_alive = Arc::new(AtomicBool::new(true));
    let stop = Arc::new(AtomicBool::new(false));
    let agent = {
        let (rc, n2_alive, stop) = (rc.clone(), n2_alive.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                renew(&rc, "bk-n1").await;
                if n2_alive.load(Ordering::Relaxed) {
                    renew(&rc, "bk-n2").await;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    rc.create("default", &bound_pod("plain", "bk-n2", ""))
        .await
        .unwrap();
    let waits =
        "{key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 3}";
    rc.create("default", &bound_pod("waits", "bk-n2", waits))
        .await
        .unwrap();
    let stays = "{key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute}";
    rc.create("default", &bound_pod("stays", "bk-n2", stays))
        .await
        .unwrap();
    rc.create("default", &bound_pod("elsewhere", "bk-n1", ""))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let n2: Node = rc.get("", "bk-n2").await.unwrap();
    assert!(!tainted(&n2), "renewing node tainted");

    n2_alive.store(false, Ordering::Relaxed);
    let t_silent = std::time::Instant::now();
    eventually("bk-n2 NotReady and tainted, its plain pod evicted", || async {
        let n: Node = rc.get("", "bk-n2").await.ok()?;
        let evicted = match rc.get::<Pod>("default", "plain").await {
            Ok(p) => !active(&p),
            Err(ClientError::NotFound(_)) => true,
            Err(_) => false,
        };
        (tainted(&n) && ready_status(&n) == ("Unknown".into(), "NodeStatusUnknown".into()) && evicted)
            .then_some(())
    })
    .await;
    let waits_pod: Pod = rc.get("default", "waits").await.unwrap();
    if t_silent.elapsed() < Duration::from_secs(3) {
        assert!(active(&waits_pod), "a pod tolerating for 3 s was evicted at once");
    }
    eventually(
        "the tolerating pod evicted after its tolerationSeconds",
        || async {
            let p: Pod = rc.get("default", "waits").await.ok()?;
            (!active(&p)).then_some(())
        },
    )
    .await;
    let stays_pod: Pod = rc.get("default", "stays").await.unwrap();
    assert!(active(&stays_pod), "a pod tolerating forever stays");
    let elsewhere: Pod = rc.get("default", "elsewhere").await.unwrap();
    assert!(active(&elsewhere), "pods on live nodes stay");
    let n1: Node = rc.get("", "bk-n1").await.unwrap();
    assert!(!tainted(&n1));

    // The agent comes back: Ready, untainted.
    n2_alive.store(true, Ordering::Relaxed);
    eventually("bk-n2 Ready again and untainted", || async {
        let n: Node = rc.get("", "bk-n2").await.ok()?;
        (!tainted(&n) && ready_status(&n).0 == "True").then_some(())
    })
    .await;

    // A deleted node's CIDR is free again and is handed to the next node.
    rc.delete::<Node>("", "bk-n1", DeleteOptions::default())
        .await
        .unwrap();
    rc.create("", &node("bk-n3")).await.unwrap();
    let n3 = eventually("a CIDR for bk-n3", || async {
        let n: Node = rc.get("", "bk-n3").await.ok()?;
        let c = n.spec?.pod_cidr;
        (!c.is_empty()).then_some(c)
    })
    .await;
    assert_eq!(n3, "10.99.0.0/24", "the lowest free block, released by bk-n1");
    // The pod bound to the deleted node has nobody to end it: it is deleted outright.
    eventually("the pod of the deleted node removed", || async {
        gone::<Pod>(&rc, "default", "elsewhere").await.then_some(())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    agent.await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_namespace_deletes_everything_in_it() {
    let (_c, rc) = started(&[]).await;
    rc.create(
        "",
        &parse::<Namespace>("apiVersion: v1\nkind: Namespace\nmetadata: {name: bk-doomed}\n"),
    )
    .await
    .unwrap();
    eventually("the namespace finalizer", || async {
        let ns: Namespace = rc.get("", "bk-doomed").await.ok()?;
        ns.metadata?
            .finalizers
            .contains(&"kubernetes".to_string())
            .then_some(())
    })
    .await;
    rc.create("bk-doomed", &parse::<ReplicaSet>(RS_YAML))
        .await
        .unwrap();
    rc.create(
        "bk-doomed",
        &parse::<ConfigMap>("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg}\ndata: {a: b}\n"),
    )
    .await
    .unwrap();
    eventually("the replica set's pods", || async {
        (pods(&rc, "bk-doomed", "app=web").await.len() == 3).then_some(())
    })
    .await;
    rc.delete::<Namespace>("", "bk-doomed", DeleteOptions::default())
        .await
        .unwrap();
    // A namespace deleted right after its creation (maybe before the finalizer is on) still
    // loses its content.
    rc.create(
        "",
        &parse::<Namespace>("apiVersion: v1\nkind: Namespace\nmetadata: {name: bk-quick}\n"),
    )
    .await
    .unwrap();
    let cm: ConfigMap = parse("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg}\n");
    rc.create("bk-quick", &cm).await.unwrap();
    rc.delete::<Namespace>("", "bk-quick", DeleteOptions::default())
        .await
        .unwrap();
    eventually("bk-quick and its config map gone", || async {
        let ns_gone = gone::<Namespace>(&rc, "", "bk-quick").await;
        (ns_gone && gone::<ConfigMap>(&rc, "bk-quick", "cfg").await).then_some(())
    })
    .await;
    eventually("the namespace and its content gone", || async {
        let gone = matches!(
            rc.get::<Namespace>("", "bk-doomed").await,
            Err(ClientError::NotFound(_))
        );
        let left = pods(&rc, "bk-doomed", "").await.len()
            + rc.list_all::<ConfigMap>("bk-doomed", &ListParams::default())
                .await
                .ok()?
                .items
                .len()
            + rc.list_all::<ReplicaSet>("bk-doomed", &ListParams::default())
                .await
                .ok()?
                .items
                .len();
        (gone && left == 0).then_some(())
    })
    .await;
}

fn config_map(name: &str, owner: Option<(&str, &str)>, finalizer: Option<&str>) -> ConfigMap {
    let mut cm: ConfigMap = parse(&format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}}}\n"
    ));
    let m = cm.metadata.as_mut().unwrap();
    if let Some((owner, uid)) = owner {
        m.owner_references.push(OwnerReference {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            name: owner.into(),
            uid: uid.into(),
            controller: None,
            block_owner_deletion: None,
        });
    }
    m.finalizers.extend(finalizer.map(String::from));
    cm
}

async fn gone<T: Resource>(rc: &ResourceClient, ns: &str, name: &str) -> bool {
    matches!(rc.get::<T>(ns, name).await, Err(ClientError::NotFound(_)))
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_collector_deletes_orphans_and_honours_finalizers() {
    let (_c, rc) = started(&[]).await;
    let uid_of = |cm: &ConfigMap| cm.metadata.as_ref().unwrap().uid.clone();
    // Background: an owner deleted outright takes its dependent along.
    let owner = rc
        .create("default", &config_map("owner", None, None))
        .await
        .unwrap();
    rc.create(
        "default",
        &config_map("dep", Some(("owner", &uid_of(&owner))), None),
    )
    .await
    .unwrap();
    // A dependent of an owner that never existed (by uid, though the name exists).
    rc.create(
        "default",
        &config_map(
            "dangling",
            Some(("owner", "00000000-0000-4000-8000-000000000000")),
            None,
        ),
    )
    .await
    .unwrap();
    eventually("the dangling dependent deleted", || async {
        gone::<ConfigMap>(&rc, "default", "dangling").await.then_some(())
    })
    .await;
    assert!(
        !gone::<ConfigMap>(&rc, "default", "dep").await,
        "a dependent of a live owner stays"
    );
    rc.delete::<ConfigMap>("default", "owner", DeleteOptions::default())
        .await
        .unwrap();
    eventually("the orphaned dependent deleted", || async {
        gone::<ConfigMap>(&rc, "default", "dep").await.then_some(())
    })
    .await;

    // Foreground: dependents first, then the owner.
    let fg = rc
        .create("default", &config_map("fg", None, Some("foregroundDeletion")))
        .await
        .unwrap();
    for d in ["fg-a", "fg-b"] {
        rc.create("default", &config_map(d, Some(("fg", &uid_of(&fg))), None))
            .await
            .unwrap();
    }
    rc.delete::<ConfigMap>("default", "fg", DeleteOptions::default())
        .await
        .unwrap();
    eventually("foreground deletion finished", || async {
        let all = gone::<ConfigMap>(&rc, "default", "fg-a").await
            && gone::<ConfigMap>(&rc, "default", "fg-b").await
            && gone::<ConfigMap>(&rc, "default", "fg").await;
        all.then_some(())
    })
    .await;

    // Orphan: the dependent stays, without the reference.
    let or = rc
        .create("default", &config_map("or", None, Some("orphan")))
        .await
        .unwrap();
    rc.create("default", &config_map("or-a", Some(("or", &uid_of(&or))), None))
        .await
        .unwrap();
    rc.delete::<ConfigMap>("default", "or", DeleteOptions::default())
        .await
        .unwrap();
    eventually("owner gone, dependent orphaned", || async {
        let dep: ConfigMap = rc.get("default", "or-a").await.ok()?;
        (gone::<ConfigMap>(&rc, "default", "or").await && dep.metadata?.owner_references.is_empty())
            .then_some(())
    })
    .await;

    // A Deployment deleted in the background: its ReplicaSet and pods follow.
    rc.create("default", &parse::<Deployment>(DEPLOY_YAML))
        .await
        .unwrap();
    eventually("pods of the deployment", || async {
        (pods(&rc, "default", "app=web").await.len() == 4).then_some(())
    })
    .await;
    rc.delete::<Deployment>("default", "web", DeleteOptions::default())
        .await
        .unwrap();
    eventually("replica sets and pods collected", || async {
        let rss = rc
            .list_all::<ReplicaSet>("default", &ListParams::default())
            .await
            .ok()?
            .items;
        (rss.is_empty() && pods(&rc, "default", "app=web").await.is_empty()).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn endpoints_follow_pod_readiness() {
    let (_c, rc) = started(&[]).await;
    let svc: Service = parse("apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  selector: {app: web}\n  ports: [{name: http, port: 80, targetPort: web}]\n");
    rc.create("default", &svc).await.unwrap();
    let mut created = Vec::new();
    for n in ["a", "b"] {
        let p: Pod = parse(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {n}, labels: {{app: web}}}}\nspec: {{containers: [{{name: c, image: 'nginx:1.25', ports: [{{name: web, containerPort: 8080}}]}}]}}\n"
        ));
        created.push(rc.create("default", &p).await.unwrap());
    }
    report(&rc, &created[0], true, "10.1.0.1").await.unwrap();
    let b = report(&rc, &created[1], false, "10.1.0.2").await.unwrap();
    let addrs = |ep: &Endpoints| -> Option<(Vec<String>, Vec<String>, i32)> {
        let s = ep.subsets.first()?;
        Some((
            s.addresses.iter().map(|a| a.ip.clone()).collect(),
            s.not_ready_addresses.iter().map(|a| a.ip.clone()).collect(),
            s.ports.first()?.port,
        ))
    };
    eventually("one ready, one not ready", || async {
        let ep: Endpoints = rc.get("default", "web").await.ok()?;
        (addrs(&ep)? == (vec!["10.1.0.1".into()], vec!["10.1.0.2".into()], 8080)).then_some(())
    })
    .await;
    report(&rc, &b, true, "10.1.0.2").await.unwrap();
    eventually("both ready", || async {
        let ep: Endpoints = rc.get("default", "web").await.ok()?;
        (addrs(&ep)? == (vec!["10.1.0.1".into(), "10.1.0.2".into()], vec![], 8080)).then_some(())
    })
    .await;
    rc.delete::<Pod>("default", "a", DeleteOptions::default())
        .await
        .unwrap();
    eventually("the deleted pod leaves", || async {
        let ep: Endpoints = rc.get("default", "web").await.ok()?;
        (addrs(&ep)?.0 == vec!["10.1.0.2".to_string()]).then_some(())
    })
    .await;
    rc.delete::<Service>("default", "web", DeleteOptions::default())
        .await
        .unwrap();
    eventually("endpoints removed with the service", || async {
        gone::<Endpoints>(&rc, "default", "web").await.then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn no_controllers_flag_runs_none() {
    let (_c, rc) = {
        let c = Cluster::start(1, &["--no-controllers"]).await;
        let rc = ResourceClient::new(&c.running_clients(), Duration::from_secs(5)).unwrap();
        (c, rc)
    };
    eventually("namespace default", || async {
        rc.get::<Namespace>("", "default").await.ok()
    })
    .await;
    rc.create("default", &parse::<ReplicaSet>(RS_YAML)).await.unwrap();
    // Give a controller (if one ran) every chance: a Lease would appear within a second.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(pods(&rc, "default", "").await.is_empty());
    assert!(matches!(
        rc.get::<Lease>("kube-system", "berth-controller-manager").await,
        Err(ClientError::NotFound(_))
    ));
}

/// Every object's resourceVersion in `ns` of the kinds the controllers write.
async fn versions(rc: &ResourceClient, ns: &str) -> Vec<(String, String)> {
    async fn of<T: Resource>(rc: &ResourceClient, ns: &str) -> Vec<(String, String)> {
        let items = rc.list_all::<T>(ns, &ListParams::default()).await.unwrap().items;
        items
            .iter()
            .map(|o| {
                let m = o.meta().unwrap();
                (format!("{}/{}", T::RESOURCE, m.name), m.resource_version.clone())
            })
            .collect()
    }
    let mut v = of::<Deployment>(rc, ns).await;
    v.extend(of::<ReplicaSet>(rc, ns).await);
    v.extend(of::<Pod>(rc, ns).await);
    v.extend(of::<Endpoints>(rc, ns).await);
    v.extend(of::<Namespace>(rc, "").await);
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread")]
async fn controllers_settle_when_nothing_changes() {
    let (_c, rc) = started(&[]).await;
    let stop = Arc::new(AtomicBool::new(false));
    let kubelet = kubelet(rc.clone(), "default", Duration::ZERO, stop.clone());
    rc.create("default", &parse::<Deployment>(DEPLOY_YAML))
        .await
        .unwrap();
    let svc: Service = parse("apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  selector: {app: web}\n  ports: [{port: 80}]\n");
    rc.create("default", &svc).await.unwrap();
    eventually("rolled out, 4 endpoints", || async {
        let d: Deployment = rc.get("default", "web").await.ok()?;
        let ep: Endpoints = rc.get("default", "web").await.ok()?;
        let done = berth_controllers::deployment::rollout_status(&d).ok()?.1;
        (done && ep.subsets.first()?.addresses.len() == 4).then_some(())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    kubelet.await.unwrap();
    // Whatever is still in flight lands within a second; after that, level-triggered
    // reconcilers that find nothing to do must write nothing (no update loops).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = versions(&rc, "default").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(versions(&rc, "default").await, before);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_partition_of_most_nodes_evicts_nothing() {
    let (_c, rc) = started(&["--node-grace-period-ms", "2000"]).await;
    let names = ["bk-p1", "bk-p2", "bk-p3", "bk-p4"];
    for n in names {
        rc.create("", &node(n)).await.unwrap();
        rc.create("default", &bound_pod(&format!("pod-{n}"), n, ""))
            .await
            .unwrap();
    }
    let cut = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let agents = {
        let (rc, cut, stop) = (rc.clone(), cut.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                for n in names {
                    if n == "bk-p1" || !cut.load(Ordering::Relaxed) {
                        renew(&rc, n).await;
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    eventually("leases for every node", || async {
        for n in names {
            rc.get::<Lease>("kube-node-lease", n).await.ok()?;
        }
        Some(())
    })
    .await;
    // Three of four nodes (75% > 55%) go silent at once: a partition, not three dead nodes.
    cut.store(true, Ordering::Relaxed);
    eventually("the three silent nodes NotReady and tainted", || async {
        for n in &names[1..] {
            let node: Node = rc.get("", n).await.ok()?;
            (tainted(&node) && ready_status(&node).0 == "Unknown").then_some(())?;
        }
        Some(())
    })
    .await;
    // Evictions would start 400 ms (disruption_settle of 2 s) after the taints; give them 2 s.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for n in names {
        let p: Pod = rc.get("default", &format!("pod-{n}")).await.unwrap();
        assert!(active(&p), "pod on {n} evicted during a partition of most nodes");
    }
    cut.store(false, Ordering::Relaxed);
    eventually("all nodes back", || async {
        for n in names {
            let node: Node = rc.get("", n).await.ok()?;
            (!tainted(&node)).then_some(())?;
        }
        Some(())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    agents.await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn resizing_a_deployment_mid_rollout_converges() {
    let (c, rc) = started(&[]).await;
    let stop = Arc::new(AtomicBool::new(false));
    // Slow pods: the rollout is still going when the Deployment is resized.
    let _kubelet = kubelet(rc.clone(), "default", Duration::from_millis(700), stop.clone());
    rc.create("default", &parse::<Deployment>(DEPLOY_YAML))
        .await
        .unwrap();
    let rolled = || async {
        let d: Deployment = rc.get("default", "web").await.ok()?;
        berth_controllers::deployment::rollout_status(&d)
            .ok()?
            .1
            .then_some(d)
    };
    eventually("first rollout", rolled).await;
    // Plain resize: the one ReplicaSet follows.
    modify(&rc, "default", "web", |d: &mut Deployment| {
        d.spec.as_mut().unwrap().replicas = Some(2)
    })
    .await;
    eventually("scaled to 2", || async {
        let d = rolled().await?;
        (d.status?.replicas == 2).then_some(())
    })
    .await;
    modify(&rc, "default", "web", set_image_1_26).await;
    eventually("two ReplicaSets with pods", || async {
        let rss = rc
            .list_all::<ReplicaSet>("default", &ListParams::default())
            .await
            .ok()?
            .items;
        let active = rss
            .iter()
            .filter(|rs| rs.spec.as_ref().unwrap().replicas.unwrap_or(0) > 0)
            .count();
        (active == 2).then_some(())
    })
    .await;
    modify(&rc, "default", "web", |d: &mut Deployment| {
        d.spec.as_mut().unwrap().replicas = Some(6)
    })
    .await;
    eventually("the resized rollout to finish on the new template", || async {
        let ps: Vec<Pod> = pods(&rc, "default", "app=web")
            .await
            .into_iter()
            .filter(active)
            .collect();
        assert!(ps.len() <= 7, "{} pods, more than 6 + maxSurge 1", ps.len());
        let d = rolled().await?;
        let st = d.status?;
        let rss = rc
            .list_all::<ReplicaSet>("default", &ListParams::default())
            .await
            .ok()?
            .items;
        let sizes: BTreeSet<(String, i32)> = rss
            .iter()
            .map(|rs| (revision_of(rs), rs.spec.as_ref().unwrap().replicas.unwrap()))
            .collect();
        let want: BTreeSet<(String, i32)> =
            [("1".to_string(), 0), ("2".to_string(), 6)].into_iter().collect();
        (st.replicas == 6 && st.available_replicas == 6 && sizes == want).then_some(())
    })
    .await;
    assert!(
        c.members[0].logs().contains("scaled proportionally"),
        "the resize took the proportional path (two ReplicaSets were active)"
    );
    stop.store(true, Ordering::Relaxed);
}

#[tokio::test(flavor = "multi_thread")]
async fn another_member_takes_over_when_the_leading_one_dies() {
    let mut c = Cluster::start(3, &[]).await;
    let rc = ResourceClient::new(&c.running_clients(), Duration::from_secs(5)).unwrap();
    let holder = eventually("a controller manager leading", || async {
        let l: Lease = rc.get("kube-system", "berth-controller-manager").await.ok()?;
        l.spec?.holder_identity
    })
    .await;
    rc.create("default", &parse::<ReplicaSet>(RS_YAML)).await.unwrap();
    eventually("3 pods", || async {
        (pods(&rc, "default", "app=web").await.len() == 3).then_some(())
    })
    .await;
    let i = c.members.iter().position(|m| m.name == holder).unwrap();
    c.members[i].kill();
    let rc = ResourceClient::new(&c.running_clients(), Duration::from_secs(5)).unwrap();
    let victim = name(&pods(&rc, "default", "app=web").await[0]);
    rc.delete::<Pod>("default", &victim, DeleteOptions::default())
        .await
        .unwrap();
    // The Lease (1 s) expires, another member's manager takes it and repairs the set.
    eventually("a new leader replaced the pod", || async {
        let l: Lease = rc.get("kube-system", "berth-controller-manager").await.ok()?;
        let new_holder = l.spec?.holder_identity?;
        let n = pods(&rc, "default", "app=web")
            .await
            .into_iter()
            .filter(active)
            .count();
        (new_holder != holder && n == 3).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rollout_that_cannot_progress_reports_its_deadline() {
    let (c, rc) = started(&[]).await;
    // No kubelet: pods never become ready.
    let yaml = DEPLOY_YAML.replace("  replicas: 4\n", "  replicas: 2\n  progressDeadlineSeconds: 1\n");
    rc.create("default", &parse::<Deployment>(&yaml)).await.unwrap();
    eventually("Progressing=False ProgressDeadlineExceeded", || async {
        let d: Deployment = rc.get("default", "web").await.ok()?;
        let st = d.status?;
        st.conditions
            .iter()
            .any(|c| {
                c.r#type == "Progressing" && c.status == "False" && c.reason == "ProgressDeadlineExceeded"
            })
            .then_some(())
    })
    .await;
    let d: Deployment = rc.get("default", "web").await.unwrap();
    let available = d
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.r#type == "Available")
        .unwrap();
    assert_eq!(
        (available.status.as_str(), available.reason.as_str()),
        ("False", "MinimumReplicasUnavailable")
    );
    let out = std::process::Command::new(berth_bin())
        .args(["rollout", "status", "deployment/web", "--server", &c.endpoints()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("exceeded its progress deadline"), "{err}");
}
