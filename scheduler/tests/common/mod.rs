//! In-process `berth server` members on loopback for the scheduler's tests, and object helpers.

#![allow(dead_code)]

use berth_apiserver::{ApiConfig, Server};
use berth_client::ResourceClient;
use berth_proto::corev1::*;
use berth_proto::metav1::ObjectMeta;
use berth_raft::RaftConfig;
use std::collections::BTreeMap;
use std::future::Future;
use std::net::TcpListener;
use std::time::{Duration, Instant};

pub const DEADLINE: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(50);

/// A loopback port below the ephemeral range, handed out once per test process.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    for _ in 0..SPAN {
        let off = std::process::id()
            .wrapping_mul(7919)
            .wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed))
            % SPAN;
        let port = (FIRST + off) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free test port");
}

/// `n` in-process members founding one cluster.
pub struct TestCluster {
    pub servers: Vec<Server>,
    pub clients: Vec<String>,
    _dir: tempfile::TempDir,
}

impl TestCluster {
    pub async fn start(n: usize) -> TestCluster {
        let dir = tempfile::tempdir().unwrap();
        let addrs: Vec<(String, String)> = (0..n)
            .map(|_| {
                (
                    format!("127.0.0.1:{}", free_port()),
                    format!("127.0.0.1:{}", free_port()),
                )
            })
            .collect();
        let initial: Vec<(String, String)> = addrs
            .iter()
            .enumerate()
            .map(|(i, (peer, _))| (format!("s{i}"), peer.clone()))
            .collect();
        let mut servers = Vec::new();
        for (i, (peer, client)) in addrs.iter().enumerate() {
            let mut raft = RaftConfig::new(format!("s{i}"), dir.path().join(format!("s{i}")), peer, client);
            raft.initial_cluster = initial.clone();
            servers.push(
                Server::start(ApiConfig::new(client.clone(), peer.clone()), raft)
                    .await
                    .unwrap(),
            );
        }
        let c = TestCluster {
            servers,
            clients: addrs.into_iter().map(|(_, c)| c).collect(),
            _dir: dir,
        };
        // Ready once the default namespace exists (a write went through).
        let client = c.client();
        eventually("the default namespace", || async {
            client.get::<Namespace>("", "default").await.is_ok()
        })
        .await;
        c
    }

    /// A client of every member.
    pub fn client(&self) -> ResourceClient {
        ResourceClient::new(&self.clients, Duration::from_secs(5)).unwrap()
    }

    /// A client of member `i` only.
    pub fn client_of(&self, i: usize) -> ResourceClient {
        ResourceClient::new(&self.clients[i..=i], Duration::from_secs(5)).unwrap()
    }
}

/// Polls `f` until it holds, failing the test after [`DEADLINE`].
pub async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let end = Instant::now() + DEADLINE;
    while !f().await {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(POLL).await;
    }
}

fn map(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
    kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// A Ready node with this much cpu and memory, room for 110 pods.
pub fn node(name: &str, cpu: &str, memory: &str) -> Node {
    Node {
        metadata: Some(ObjectMeta {
            name: name.into(),
            labels: map(&[("kubernetes.io/hostname", name)]),
            ..Default::default()
        }),
        spec: Some(NodeSpec::default()),
        status: Some(NodeStatus {
            capacity: map(&[("cpu", cpu), ("memory", memory), ("pods", "110")]),
            allocatable: map(&[("cpu", cpu), ("memory", memory), ("pods", "110")]),
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

/// A pending pod requesting `cpu`.
pub fn pod(ns: &str, name: &str, cpu: &str) -> Pod {
    Pod {
        metadata: Some(ObjectMeta {
            name: name.into(),
            namespace: ns.into(),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "app".into(),
                image: "busybox:1.36".into(),
                resources: Some(ResourceRequirements {
                    requests: map(&[("cpu", cpu), ("memory", "64Mi")]),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Creates a node; its status (allocatable, Ready) is written through UpdateStatus, as an
/// agent would.
pub async fn create_node(c: &ResourceClient, n: &Node) {
    let created = c.create("", n).await.unwrap();
    let mut with_status = created.clone();
    with_status.status = n.status.clone();
    c.update_status(&with_status).await.unwrap();
}

pub fn node_of(p: &Pod) -> &str {
    p.spec.as_ref().map_or("", |s| s.node_name.as_str())
}

pub fn scheduled_condition(p: &Pod) -> Option<&PodCondition> {
    p.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.r#type == "PodScheduled")
}
