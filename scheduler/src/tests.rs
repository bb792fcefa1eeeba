//! Table-driven tests of every filter and score, over typed objects built here.

use crate::algorithm::{self, AlgorithmConfig, FitError, PodCtx};
use crate::filters::{self, Reason};
use crate::model::{pod_requests, Cluster, NodeInfo, Resources, HOSTNAME_LABEL, ZONE_LABEL};
use crate::scores::{self, Policy};
use berth_proto::corev1::*;
use berth_proto::metav1::{LabelSelector, ObjectMeta, OwnerReference};
use std::collections::BTreeMap;
use std::sync::Arc;

fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
    kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn node(name: &str, cpu: &str, mem: &str, pods: &str) -> Node {
    Node {
        metadata: Some(ObjectMeta {
            name: name.into(),
            labels: labels(&[(HOSTNAME_LABEL, name)]),
            ..Default::default()
        }),
        spec: Some(NodeSpec::default()),
        status: Some(NodeStatus {
            allocatable: labels(&[("cpu", cpu), ("memory", mem), ("pods", pods)]),
            conditions: vec![NodeCondition {
                r#type: "Ready".into(),
                status: "True".into(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn with_labels(mut n: Node, kv: &[(&str, &str)]) -> Node {
    n.metadata.as_mut().unwrap().labels.extend(labels(kv));
    n
}

fn with_taint(mut n: Node, key: &str, value: &str, effect: &str) -> Node {
    n.spec.as_mut().unwrap().taints.push(Taint {
        key: key.into(),
        value: value.into(),
        effect: effect.into(),
        ..Default::default()
    });
    n
}

fn pod(name: &str, cpu: &str, mem: &str) -> Pod {
    let mut requests = BTreeMap::new();
    if !cpu.is_empty() {
        requests.insert("cpu".to_string(), cpu.to_string());
    }
    if !mem.is_empty() {
        requests.insert("memory".to_string(), mem.to_string());
    }
    Pod {
        metadata: Some(ObjectMeta {
            name: name.into(),
            namespace: "default".into(),
            uid: format!("uid-{name}"),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "c".into(),
                resources: Some(ResourceRequirements {
                    requests,
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn with_pod_labels(mut p: Pod, kv: &[(&str, &str)]) -> Pod {
    p.metadata.as_mut().unwrap().labels.extend(labels(kv));
    p
}

fn owned_by(mut p: Pod, uid: &str) -> Pod {
    p.metadata
        .as_mut()
        .unwrap()
        .owner_references
        .push(OwnerReference {
            kind: "ReplicaSet".into(),
            name: "rs".into(),
            uid: uid.into(),
            controller: Some(true),
            ..Default::default()
        });
    p
}

fn spec_mut(p: &mut Pod) -> &mut PodSpec {
    p.spec.as_mut().unwrap()
}

fn toleration(key: &str, op: &str, value: &str, effect: &str) -> Toleration {
    Toleration {
        key: key.into(),
        operator: op.into(),
        value: value.into(),
        effect: effect.into(),
        ..Default::default()
    }
}

fn cluster(nodes: Vec<Node>, placed: Vec<(&str, Pod)>) -> Cluster {
    let mut c = Cluster::default();
    for n in nodes {
        c.upsert_node(Arc::new(n));
    }
    for (node, mut p) in placed {
        spec_mut(&mut p).node_name = node.into();
        let key = crate::model::pod_key(&p);
        c.place(&key, node, Arc::new(p));
    }
    c
}

fn info(c: &Cluster, name: &str) -> NodeInfo {
    c.node(name).unwrap().clone()
}

#[test]
fn requests_sum_containers_and_take_the_largest_init_container() {
    let mut p = pod("p", "500m", "1Gi");
    spec_mut(&mut p).containers.push(Container {
        name: "d".into(),
        resources: Some(ResourceRequirements {
            limits: labels(&[("cpu", "1"), ("memory", "512Mi")]),
            ..Default::default()
        }),
        ..Default::default()
    });
    spec_mut(&mut p).init_containers.push(Container {
        name: "i".into(),
        resources: Some(ResourceRequirements {
            requests: labels(&[("cpu", "2")]),
            ..Default::default()
        }),
        ..Default::default()
    });
    spec_mut(&mut p).overhead = labels(&[("memory", "1Mi")]);
    assert_eq!(
        pod_requests(&p),
        Resources {
            cpu_milli: 2000,
            memory_bytes: (1 << 30) + (512 << 20) + (1 << 20),
            pods: 1
        }
    );
}

#[test]
fn node_ready_and_schedulable() {
    let ready = node("n", "1", "1Gi", "10");
    let mut not_ready = ready.clone();
    not_ready.status.as_mut().unwrap().conditions[0].status = "False".into();
    let mut no_conditions = ready.clone();
    no_conditions.status.as_mut().unwrap().conditions.clear();
    let mut cordoned = ready.clone();
    cordoned.spec.as_mut().unwrap().unschedulable = true;
    let p = pod("p", "", "");
    let mut tolerant = p.clone();
    spec_mut(&mut tolerant).tolerations.push(toleration(
        filters::UNSCHEDULABLE_TAINT_KEY,
        "Exists",
        "",
        "NoSchedule",
    ));
    let cases: Vec<(&str, &Pod, &Node, filters::FilterResult)> = vec![
        ("ready", &p, &ready, Ok(())),
        ("not ready", &p, &not_ready, Err(vec![Reason::NotReady])),
        ("no conditions", &p, &no_conditions, Err(vec![Reason::NotReady])),
        ("cordoned", &p, &cordoned, Err(vec![Reason::Unschedulable])),
        ("cordoned, tolerated", &tolerant, &cordoned, Ok(())),
    ];
    for (name, p, n, want) in cases {
        let got = filters::node_ready(n).and_then(|_| filters::node_schedulable(p, n));
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn resources_fit_counts_what_is_bound() {
    let c = cluster(
        vec![node("n", "2", "4Gi", "3")],
        vec![("n", pod("a", "1500m", "1Gi")), ("n", pod("b", "", "2Gi"))],
    );
    let n = info(&c, "n");
    let cases: Vec<(&str, Pod, filters::FilterResult)> = vec![
        ("fits exactly", pod("p", "500m", "1Gi"), Ok(())),
        ("no requests", pod("p", "", ""), Ok(())),
        (
            "cpu",
            pod("p", "501m", "1Gi"),
            Err(vec![Reason::Insufficient("cpu")]),
        ),
        (
            "memory",
            pod("p", "100m", "1025Mi"),
            Err(vec![Reason::Insufficient("memory")]),
        ),
        (
            "both",
            pod("p", "1", "2Gi"),
            Err(vec![Reason::Insufficient("cpu"), Reason::Insufficient("memory")]),
        ),
    ];
    for (name, p, want) in cases {
        assert_eq!(filters::resources_fit(&pod_requests(&p), &n), want, "{name}");
    }
    let full = cluster(vec![node("n", "2", "4Gi", "1")], vec![("n", pod("a", "", ""))]);
    assert_eq!(
        filters::resources_fit(&pod_requests(&pod("p", "", "")), &info(&full, "n")),
        Err(vec![Reason::TooManyPods])
    );
}

#[test]
fn node_selector_and_required_node_affinity() {
    let n = with_labels(node("n1", "1", "1Gi", "10"), &[("disk", "ssd"), ("gen", "5")]);
    let term = |key: &str, op: &str, values: &[&str]| NodeSelectorTerm {
        match_expressions: vec![NodeSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: values.iter().map(|s| s.to_string()).collect(),
        }],
        ..Default::default()
    };
    let with_affinity = |terms: Vec<NodeSelectorTerm>| {
        let mut p = pod("p", "", "");
        spec_mut(&mut p).affinity = Some(Affinity {
            node_affinity: Some(NodeAffinity {
                required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                    node_selector_terms: terms,
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        p
    };
    let mut selector_ok = pod("p", "", "");
    spec_mut(&mut selector_ok).node_selector = labels(&[("disk", "ssd")]);
    let mut selector_bad = pod("p", "", "");
    spec_mut(&mut selector_bad).node_selector = labels(&[("disk", "hdd")]);
    let name_field = NodeSelectorTerm {
        match_fields: vec![NodeSelectorRequirement {
            key: "metadata.name".into(),
            operator: "In".into(),
            values: vec!["n1".into()],
        }],
        ..Default::default()
    };
    let cases: Vec<(&str, Pod, bool)> = vec![
        ("no constraints", pod("p", "", ""), true),
        ("selector matches", selector_ok, true),
        ("selector differs", selector_bad, false),
        (
            "In",
            with_affinity(vec![term("disk", "In", &["ssd", "nvme"])]),
            true,
        ),
        (
            "NotIn",
            with_affinity(vec![term("disk", "NotIn", &["ssd"])]),
            false,
        ),
        ("Exists", with_affinity(vec![term("gen", "Exists", &[])]), true),
        (
            "DoesNotExist",
            with_affinity(vec![term("gpu", "DoesNotExist", &[])]),
            true,
        ),
        ("Gt", with_affinity(vec![term("gen", "Gt", &["4"])]), true),
        ("Lt", with_affinity(vec![term("gen", "Lt", &["5"])]), false),
        (
            "terms are ORed",
            with_affinity(vec![term("disk", "In", &["hdd"]), term("gen", "In", &["5"])]),
            true,
        ),
        ("no terms match nothing", with_affinity(vec![]), false),
        (
            "empty term matches nothing",
            with_affinity(vec![NodeSelectorTerm::default()]),
            false,
        ),
        ("matchFields metadata.name", with_affinity(vec![name_field]), true),
    ];
    for (name, p, ok) in cases {
        let want = if ok {
            Ok(())
        } else {
            Err(vec![Reason::NodeAffinity])
        };
        assert_eq!(filters::node_affinity(&p, &n), want, "{name}");
    }
}

#[test]
fn taints_and_tolerations() {
    let n = with_taint(
        with_taint(node("n", "1", "1Gi", "10"), "dedicated", "db", "NoSchedule"),
        "soft",
        "x",
        "PreferNoSchedule",
    );
    let exec = with_taint(node("m", "1", "1Gi", "10"), "gone", "", "NoExecute");
    let with = |tols: Vec<Toleration>| {
        let mut p = pod("p", "", "");
        spec_mut(&mut p).tolerations = tols;
        p
    };
    let untolerated = |k: &str, v: &str| {
        Err(vec![Reason::Taint {
            key: k.into(),
            value: v.into(),
        }])
    };
    let cases: Vec<(&str, Pod, &Node, filters::FilterResult)> = vec![
        ("none", with(vec![]), &n, untolerated("dedicated", "db")),
        (
            "Equal",
            with(vec![toleration("dedicated", "Equal", "db", "NoSchedule")]),
            &n,
            Ok(()),
        ),
        (
            "default operator",
            with(vec![toleration("dedicated", "", "db", "")]),
            &n,
            Ok(()),
        ),
        (
            "other value",
            with(vec![toleration("dedicated", "Equal", "web", "")]),
            &n,
            untolerated("dedicated", "db"),
        ),
        (
            "Exists",
            with(vec![toleration("dedicated", "Exists", "", "")]),
            &n,
            Ok(()),
        ),
        (
            "Exists all",
            with(vec![toleration("", "Exists", "", "")]),
            &n,
            Ok(()),
        ),
        (
            "other effect",
            with(vec![toleration("dedicated", "Exists", "", "NoExecute")]),
            &n,
            untolerated("dedicated", "db"),
        ),
        ("NoExecute", with(vec![]), &exec, untolerated("gone", "")),
        (
            "NoExecute tolerated",
            with(vec![toleration("gone", "Exists", "", "NoExecute")]),
            &exec,
            Ok(()),
        ),
    ];
    for (name, p, node, want) in cases {
        assert_eq!(filters::taints_tolerated(&p, node), want, "{name}");
    }
    assert_eq!(
        Reason::Taint {
            key: "k".into(),
            value: "v".into()
        }
        .to_string(),
        "node(s) had untolerated taint {k: v}"
    );
}

#[test]
fn host_ports() {
    let with_port = |name: &str, port: i32, proto: &str, ip: &str| {
        let mut p = pod(name, "", "");
        spec_mut(&mut p).containers[0].ports.push(ContainerPort {
            container_port: 80,
            host_port: port,
            protocol: proto.into(),
            host_ip: ip.into(),
            ..Default::default()
        });
        p
    };
    let c = cluster(
        vec![node("n", "1", "1Gi", "10")],
        vec![("n", with_port("a", 8080, "TCP", "10.0.0.1"))],
    );
    let n = info(&c, "n");
    let cases = [
        ("same port, same ip", with_port("p", 8080, "", "10.0.0.1"), false),
        (
            "same port, all ips",
            with_port("p", 8080, "TCP", "0.0.0.0"),
            false,
        ),
        (
            "same port, other ip",
            with_port("p", 8080, "TCP", "10.0.0.2"),
            true,
        ),
        ("same port, udp", with_port("p", 8080, "UDP", ""), true),
        ("other port", with_port("p", 9090, "TCP", ""), true),
        ("no host port", with_port("p", 0, "TCP", ""), true),
    ];
    for (name, p, ok) in cases {
        let want = if ok { Ok(()) } else { Err(vec![Reason::HostPorts]) };
        assert_eq!(
            filters::host_ports_free(&crate::model::host_ports(&p), &n),
            want,
            "{name}"
        );
    }
}

fn affinity_term(app: &str, key: &str) -> PodAffinityTerm {
    PodAffinityTerm {
        label_selector: Some(LabelSelector {
            match_labels: labels(&[("app", app)]),
            ..Default::default()
        }),
        topology_key: key.into(),
        ..Default::default()
    }
}

fn with_pod_affinity(mut p: Pod, affinity: Vec<PodAffinityTerm>, anti: Vec<PodAffinityTerm>) -> Pod {
    spec_mut(&mut p).affinity = Some(Affinity {
        pod_affinity: Some(PodAffinity {
            required_during_scheduling_ignored_during_execution: affinity,
            ..Default::default()
        }),
        pod_anti_affinity: Some(PodAntiAffinity {
            required_during_scheduling_ignored_during_execution: anti,
            ..Default::default()
        }),
        ..Default::default()
    });
    p
}

fn pod_affinity_cluster() -> Cluster {
    cluster(
        vec![
            with_labels(node("a1", "4", "4Gi", "10"), &[(ZONE_LABEL, "a")]),
            with_labels(node("a2", "4", "4Gi", "10"), &[(ZONE_LABEL, "a")]),
            with_labels(node("b1", "4", "4Gi", "10"), &[(ZONE_LABEL, "b")]),
        ],
        vec![("a1", with_pod_labels(pod("db", "", ""), &[("app", "db")]))],
    )
}

#[test]
fn required_pod_affinity_and_anti_affinity() {
    let c = pod_affinity_cluster();
    let run = |p: &Pod, node: &str| algorithm::filter(&PodCtx::new(p, &c), &info(&c, node));
    let near_db_host = with_pod_affinity(
        pod("p", "", ""),
        vec![affinity_term("db", HOSTNAME_LABEL)],
        vec![],
    );
    let near_db_zone = with_pod_affinity(pod("p", "", ""), vec![affinity_term("db", ZONE_LABEL)], vec![]);
    let away_db_zone = with_pod_affinity(pod("p", "", ""), vec![], vec![affinity_term("db", ZONE_LABEL)]);
    let first_of_group = with_pod_affinity(
        with_pod_labels(pod("w", "", ""), &[("app", "web")]),
        vec![affinity_term("web", ZONE_LABEL)],
        vec![],
    );
    let aff = Err(vec![Reason::PodAffinity]);
    let anti = Err(vec![Reason::PodAntiAffinity]);
    let cases: Vec<(&str, &Pod, &str, filters::FilterResult)> = vec![
        ("host affinity, same host", &near_db_host, "a1", Ok(())),
        ("host affinity, other host", &near_db_host, "a2", aff.clone()),
        ("zone affinity, same zone", &near_db_zone, "a2", Ok(())),
        ("zone affinity, other zone", &near_db_zone, "b1", aff.clone()),
        ("zone anti-affinity, same zone", &away_db_zone, "a2", anti.clone()),
        ("zone anti-affinity, other zone", &away_db_zone, "b1", Ok(())),
        ("first pod of a self-affine group", &first_of_group, "b1", Ok(())),
    ];
    for (name, p, node, want) in cases {
        assert_eq!(run(p, node), want, "{name}");
    }
}

#[test]
fn existing_pods_anti_affinity_is_symmetric() {
    let loner = with_pod_affinity(
        with_pod_labels(pod("loner", "", ""), &[("app", "loner")]),
        vec![],
        vec![affinity_term("web", HOSTNAME_LABEL)],
    );
    let c = cluster(
        vec![node("n1", "4", "4Gi", "10"), node("n2", "4", "4Gi", "10")],
        vec![("n1", loner)],
    );
    let web = with_pod_labels(pod("w", "", ""), &[("app", "web")]);
    let ctx = PodCtx::new(&web, &c);
    assert_eq!(
        algorithm::filter(&ctx, &info(&c, "n1")),
        Err(vec![Reason::ExistingAntiAffinity])
    );
    assert_eq!(algorithm::filter(&ctx, &info(&c, "n2")), Ok(()));
    let other = pod("o", "", "");
    assert_eq!(
        algorithm::filter(&PodCtx::new(&other, &c), &info(&c, "n1")),
        Ok(())
    );
}

#[test]
fn resource_scores_by_policy() {
    let c = cluster(
        vec![node("empty", "4", "4Gi", "10"), node("half", "4", "4Gi", "10")],
        vec![("half", pod("a", "2", "2Gi"))],
    );
    let req = pod_requests(&pod("p", "1", "1Gi"));
    let cases = [
        (Policy::LeastAllocated, "empty", 75.0),
        (Policy::LeastAllocated, "half", 25.0),
        (Policy::MostAllocated, "empty", 25.0),
        (Policy::MostAllocated, "half", 75.0),
    ];
    for (policy, n, want) in cases {
        let got = scores::resource_score(policy, &req, &info(&c, n));
        assert!((got - want).abs() < 1e-9, "{policy:?} {n}: {got}");
    }
}

#[test]
fn normalizations() {
    assert_eq!(scores::fewer_is_better(&[0.0, 2.0, 1.0]), vec![100.0, 0.0, 50.0]);
    assert_eq!(scores::fewer_is_better(&[0.0, 0.0]), vec![100.0, 100.0]);
    assert_eq!(scores::more_is_better(&[0.0, 4.0, 1.0]), vec![0.0, 100.0, 25.0]);
    assert_eq!(scores::min_max(&[-2.0, 2.0, 0.0]), vec![0.0, 100.0, 50.0]);
    assert_eq!(scores::min_max(&[3.0, 3.0]), vec![0.0, 0.0]);
    // Hostname only, then hostname (1/3) and zone (2/3).
    assert_eq!(
        scores::spread_scores(&[0.0, 2.0], &[None, None]),
        vec![100.0, 0.0]
    );
    let s = scores::spread_scores(&[1.0, 0.0, 0.0], &[Some(1.0), Some(1.0), Some(0.0)]);
    assert!((s[0] - 0.0).abs() < 1e-9 && (s[1] - 100.0 / 3.0).abs() < 1e-9 && (s[2] - 100.0).abs() < 1e-9);
}

/// Picks the best node for `p` over every node.
fn pick(c: &Cluster, p: &Pod, policy: Policy) -> Result<String, FitError> {
    let cfg = AlgorithmConfig {
        policy,
        percentage_of_nodes_to_score: 100,
        ..Default::default()
    };
    algorithm::schedule_one(&PodCtx::new(p, c), c, &cfg, 0, &|_| true)
}

#[test]
fn decisions_follow_policy_spread_and_preferences() {
    let c = cluster(
        vec![
            with_labels(node("a1", "4", "4Gi", "10"), &[(ZONE_LABEL, "a")]),
            with_labels(node("a2", "4", "4Gi", "10"), &[(ZONE_LABEL, "a")]),
            with_labels(
                node("b1", "4", "4Gi", "10"),
                &[(ZONE_LABEL, "b"), ("disk", "ssd")],
            ),
        ],
        vec![("a1", owned_by(pod("r1", "1", "1Gi"), "rs-1"))],
    );
    let p = pod("p", "500m", "512Mi");
    assert_eq!(pick(&c, &p, Policy::MostAllocated).unwrap(), "a1");
    assert_ne!(pick(&c, &p, Policy::LeastAllocated).unwrap(), "a1");
    // One more replica of rs-1 goes to the other zone even when bin packing.
    let replica = owned_by(pod("r2", "100m", "64Mi"), "rs-1");
    assert_eq!(pick(&c, &replica, Policy::MostAllocated).unwrap(), "b1");
    // Preferred node affinity.
    let mut prefers_ssd = pod("s", "100m", "64Mi");
    spec_mut(&mut prefers_ssd).affinity = Some(Affinity {
        node_affinity: Some(NodeAffinity {
            preferred_during_scheduling_ignored_during_execution: vec![PreferredSchedulingTerm {
                weight: 100,
                preference: Some(NodeSelectorTerm {
                    match_expressions: vec![NodeSelectorRequirement {
                        key: "disk".into(),
                        operator: "In".into(),
                        values: vec!["ssd".into()],
                    }],
                    ..Default::default()
                }),
            }],
            ..Default::default()
        }),
        ..Default::default()
    });
    assert_eq!(pick(&c, &prefers_ssd, Policy::MostAllocated).unwrap(), "b1");
    // Preferred pod affinity toward r1's host, and anti-affinity away from it.
    let r1_term = |w| WeightedPodAffinityTerm {
        weight: w,
        pod_affinity_term: Some(PodAffinityTerm {
            label_selector: Some(LabelSelector {
                match_labels: labels(&[("app", "r")]),
                ..Default::default()
            }),
            topology_key: HOSTNAME_LABEL.into(),
            ..Default::default()
        }),
    };
    let c2 = cluster(
        vec![node("n1", "4", "4Gi", "10"), node("n2", "4", "4Gi", "10")],
        vec![("n1", with_pod_labels(pod("r", "", ""), &[("app", "r")]))],
    );
    let mut near = pod("near", "", "");
    spec_mut(&mut near).affinity = Some(Affinity {
        pod_affinity: Some(PodAffinity {
            preferred_during_scheduling_ignored_during_execution: vec![r1_term(100)],
            ..Default::default()
        }),
        ..Default::default()
    });
    let mut far = pod("far", "", "");
    spec_mut(&mut far).affinity = Some(Affinity {
        pod_anti_affinity: Some(PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: vec![r1_term(100)],
            ..Default::default()
        }),
        ..Default::default()
    });
    assert_eq!(pick(&c2, &near, Policy::LeastAllocated).unwrap(), "n1");
    assert_eq!(pick(&c2, &far, Policy::MostAllocated).unwrap(), "n2");
    // PreferNoSchedule taints are avoided when possible.
    let c3 = cluster(
        vec![
            with_taint(node("t", "4", "4Gi", "10"), "soft", "", "PreferNoSchedule"),
            node("u", "4", "4Gi", "10"),
        ],
        vec![],
    );
    assert_eq!(pick(&c3, &pod("x", "", ""), Policy::MostAllocated).unwrap(), "u");
}

#[test]
fn fits_nowhere_message_counts_reasons() {
    let c = cluster(
        vec![
            node("n1", "1", "1Gi", "10"),
            node("n2", "1", "1Gi", "10"),
            node("n3", "1", "1Gi", "10"),
            with_taint(node("n4", "8", "8Gi", "10"), "k", "v", "NoSchedule"),
            with_taint(node("n5", "8", "8Gi", "10"), "k", "v", "NoSchedule"),
        ],
        vec![],
    );
    let err = pick(&c, &pod("big", "2", "512Mi"), Policy::LeastAllocated).unwrap_err();
    assert_eq!(
        err.message(),
        "0/5 nodes are available: 3 Insufficient cpu, 2 node(s) had untolerated taint {k: v}."
    );
    assert_eq!(
        pick(&Cluster::default(), &pod("p", "", ""), Policy::LeastAllocated)
            .unwrap_err()
            .message(),
        "0/0 nodes are available."
    );
}

#[test]
fn sampling_sizes() {
    assert_eq!(algorithm::nodes_to_find(50, 0), 50);
    assert_eq!(algorithm::nodes_to_find(200, 0), 100);
    assert_eq!(algorithm::nodes_to_find(1000, 0), 420);
    assert_eq!(algorithm::nodes_to_find(5000, 0), 500);
    assert_eq!(algorithm::nodes_to_find(5000, 100), 5000);
    assert_eq!(algorithm::nodes_to_find(5000, 10), 500);
}

#[test]
fn cluster_keeps_counts_through_node_and_pod_changes() {
    let mut c = cluster(vec![node("n", "4", "4Gi", "10")], vec![]);
    let p = Arc::new(owned_by(pod("a", "1", "1Gi"), "rs"));
    c.place("default/a", "n", p.clone());
    c.place("default/a", "n", p.clone());
    assert_eq!(info(&c, "n").requested.cpu_milli, 1000);
    assert_eq!(c.owner_count("rs", "n"), 1);
    c.remove_node("n");
    c.upsert_node(Arc::new(node("n", "4", "4Gi", "10")));
    assert_eq!(
        info(&c, "n").requested.cpu_milli,
        1000,
        "pods survive a node's re-add"
    );
    c.unplace("default/a");
    assert_eq!(info(&c, "n").requested, Resources::default());
    assert_eq!(c.owner_count("rs", "n"), 0);
}

#[test]
fn preferred_nodes_win_within_the_margin_only() {
    let c = cluster(
        vec![
            node("full", "4", "4Gi", "10"),
            node("some", "4", "4Gi", "10"),
            node("empty", "4", "4Gi", "10"),
        ],
        vec![
            ("full", pod("a", "3", "3Gi")),
            ("some", pod("b", "2800m", "2800Mi")),
        ],
    );
    let p = pod("p", "100m", "64Mi");
    let cfg = AlgorithmConfig {
        policy: Policy::MostAllocated,
        percentage_of_nodes_to_score: 100,
        preferred_margin_points: 10.0,
    };
    let run = |pref: &dyn Fn(&str) -> bool| {
        algorithm::schedule_one(&PodCtx::new(&p, &c), &c, &cfg, 0, pref).unwrap()
    };
    assert_eq!(run(&|_| true), "full");
    assert_eq!(run(&|_| false), "full", "nothing preferred: the best");
    assert_eq!(run(&|n| n == "some"), "some", "within the margin");
    assert_eq!(run(&|n| n == "empty"), "full", "beyond the margin");
}

fn spread_constraint(key: &str, skew: i32, when: &str) -> TopologySpreadConstraint {
    TopologySpreadConstraint {
        max_skew: skew,
        topology_key: key.into(),
        when_unsatisfiable: when.into(),
        label_selector: Some(LabelSelector {
            match_labels: labels(&[("app", "web")]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn topology_spread_constraints() {
    let web = |n: &str| with_pod_labels(pod(n, "", ""), &[("app", "web")]);
    let c = cluster(
        vec![
            with_labels(node("a1", "4", "4Gi", "10"), &[(ZONE_LABEL, "a")]),
            with_labels(node("a2", "4", "4Gi", "10"), &[(ZONE_LABEL, "a")]),
            with_labels(node("b1", "4", "4Gi", "10"), &[(ZONE_LABEL, "b")]),
            node("nozone", "4", "4Gi", "10"),
        ],
        vec![("a1", web("w1")), ("a2", web("w2")), ("b1", web("w3"))],
    );
    let with = |constraints: Vec<TopologySpreadConstraint>| {
        let mut p = web("new");
        spec_mut(&mut p).topology_spread_constraints = constraints;
        p
    };
    let hard_zone = with(vec![spread_constraint(ZONE_LABEL, 1, "DoNotSchedule")]);
    let run = |p: &Pod, n: &str| algorithm::filter(&PodCtx::new(p, &c), &info(&c, n));
    let spread = Err(vec![Reason::TopologySpread]);
    // Zone a holds 2, zone b 1: a third in a gives skew 2.
    let cases: Vec<(&str, &Pod, &str, filters::FilterResult)> = vec![
        ("zone a would skew 2", &hard_zone, "a1", spread.clone()),
        ("zone b evens out", &hard_zone, "b1", Ok(())),
        ("a node without the key", &hard_zone, "nozone", spread.clone()),
    ];
    for (name, p, n, want) in cases {
        assert_eq!(run(p, n), want, "{name}");
    }
    let two = with(vec![spread_constraint(ZONE_LABEL, 2, "DoNotSchedule")]);
    assert_eq!(run(&two, "a1"), Ok(()), "maxSkew 2 allows it");
    let other = pod("o", "", "");
    assert_eq!(run(&other, "a1"), Ok(()), "no constraints");
    // ScheduleAnyway only scores: the least populated zone wins.
    let soft = with(vec![spread_constraint(ZONE_LABEL, 1, "ScheduleAnyway")]);
    assert_eq!(run(&soft, "a1"), Ok(()));
    let c2 = cluster(
        vec![
            with_labels(node("a1", "4", "4Gi", "10"), &[(ZONE_LABEL, "a")]),
            with_labels(node("b1", "4", "4Gi", "10"), &[(ZONE_LABEL, "b")]),
        ],
        vec![("a1", web("w1"))],
    );
    assert_eq!(pick(&c2, &soft, Policy::MostAllocated).unwrap(), "b1");
}
