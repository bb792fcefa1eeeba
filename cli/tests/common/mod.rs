//! A harness for integration tests: real `berth server` processes on loopback ports, stopped
//! by PID when the test ends, and etcdctl (Debian's etcd-client) as the client.

#![allow(dead_code)]

pub mod agent_env;

use berth_client::EtcdClient;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const DEADLINE: Duration = Duration::from_secs(30);

/// A free loopback port (bound then released; the OS does not hand it out again at once).
/// Ports for test servers come from below Linux's ephemeral range (32768..61000), so no
/// outgoing connection can take one between this check and the server's bind, and each is
/// handed out once per test process: asking the kernel for port 0 twice may give the same
/// port twice, which once made two members of one cluster share an address.
const TEST_PORT_FIRST: u16 = 20_000;
const TEST_PORT_SPAN: u16 = 12_000;

pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // Test binaries run one after another, but start each at a different place anyway.
    let start = std::process::id();
    for _ in 0..TEST_PORT_SPAN {
        let offset = start.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed)) % u32::from(TEST_PORT_SPAN);
        let port = TEST_PORT_FIRST + offset as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!(
        "no free test port in {TEST_PORT_FIRST}..{}",
        TEST_PORT_FIRST + TEST_PORT_SPAN
    );
}

pub struct Member {
    pub name: String,
    pub peer: String,
    pub client: String,
    pub data_dir: PathBuf,
    pub child: Option<Child>,
    pub extra_args: Vec<String>,
    pub log: PathBuf,
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub members: Vec<Member>,
    pub initial_cluster: String,
}

pub fn berth_bin() -> &'static str {
    env!("CARGO_BIN_EXE_berth")
}

impl Member {
    fn new(dir: &Path, name: &str) -> Member {
        Member {
            name: name.to_string(),
            peer: format!("127.0.0.1:{}", free_port()),
            client: format!("127.0.0.1:{}", free_port()),
            data_dir: dir.join(name),
            child: None,
            extra_args: Vec::new(),
            log: dir.join(format!("{name}.log")),
        }
    }

    pub fn start_with(&mut self, cluster_args: &[String]) {
        assert!(self.child.is_none(), "{} already running", self.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(berth_bin())
            .args([
                "server",
                "--name",
                &self.name,
                "--peer-addr",
                &self.peer,
                "--client-addr",
                &self.client,
            ])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(cluster_args)
            .args(&self.extra_args)
            .env("BERTH_LOG", "info,openraft=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn berth server");
        self.child = Some(child);
    }

    /// SIGKILL, by the PID we started.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            m.kill();
        }
    }
}

impl Cluster {
    /// Starts `n` members founding one cluster, with `extra` flags on each, and waits for a
    /// leader.
    pub async fn start(n: usize, extra: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let mut members: Vec<Member> = (1..=n)
            .map(|i| Member::new(dir.path(), &format!("s{i}")))
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",");
        for m in &mut members {
            m.extra_args = extra.iter().map(|s| s.to_string()).collect();
        }
        let mut c = Cluster {
            dir,
            members,
            initial_cluster,
        };
        for i in 0..n {
            c.start_member(i);
        }
        c.wait_leader().await;
        c
    }

    pub fn start_member(&mut self, i: usize) {
        let args = vec!["--initial-cluster".to_string(), self.initial_cluster.clone()];
        self.members[i].start_with(&args);
    }

    /// Starts a new member that joins through the running ones.
    pub fn add_joining(&mut self, name: &str) -> usize {
        let peer = format!("127.0.0.1:{}", free_port());
        self.add_joining_at(name, &peer)
    }

    /// Starts a new member with peer address `peer` that joins through the running ones.
    pub fn add_joining_at(&mut self, name: &str, peer: &str) -> usize {
        let mut m = Member::new(self.dir.path(), name);
        m.peer = peer.to_string();
        m.extra_args = self.members[0].extra_args.clone();
        let join = self.running_clients().join(",");
        m.start_with(&["--join".to_string(), join]);
        self.members.push(m);
        self.members.len() - 1
    }

    pub fn running_clients(&self) -> Vec<String> {
        self.members
            .iter()
            .filter(|m| m.is_running())
            .map(|m| m.client.clone())
            .collect()
    }

    pub fn endpoints(&self) -> String {
        self.running_clients().join(",")
    }

    pub fn client(&self) -> EtcdClient {
        EtcdClient::new(&self.running_clients(), Duration::from_secs(5)).unwrap()
    }

    /// The index of the member every running member agrees is leader.
    pub async fn wait_leader(&self) -> usize {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(i) = self.agreed_leader().await {
                return i;
            }
            if Instant::now() > deadline {
                self.dump_logs();
                panic!("no agreed leader within {DEADLINE:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn agreed_leader(&self) -> Option<usize> {
        let mut leader = None;
        for m in self.members.iter().filter(|m| m.is_running()) {
            let c = EtcdClient::new(std::slice::from_ref(&m.client), Duration::from_secs(1)).ok()?;
            let st = c.status_of(0).await.ok()?;
            if st.leader == 0 || (leader.is_some() && leader != Some(st.leader)) {
                return None;
            }
            leader = Some(st.leader);
        }
        let id = leader?;
        for (i, m) in self.members.iter().enumerate().filter(|(_, m)| m.is_running()) {
            let c = EtcdClient::new(std::slice::from_ref(&m.client), Duration::from_secs(1)).ok()?;
            if c.status_of(0).await.ok()?.header?.member_id == id {
                return Some(i);
            }
        }
        None
    }

    pub fn dump_logs(&self) {
        for m in &self.members {
            eprintln!("===== {} log =====\n{}", m.name, m.logs());
        }
    }
}

/// Runs etcdctl (API v3) against `endpoints`; returns its output.
pub fn etcdctl(endpoints: &str, args: &[&str]) -> Output {
    Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoints}"))
        .arg("--command-timeout=10s")
        .args(args)
        .output()
        .expect("etcdctl is installed (Debian's etcd-client)")
}

/// etcdctl that must succeed; returns stdout.
pub fn etcdctl_ok(endpoints: &str, args: &[&str]) -> String {
    let out = etcdctl(endpoints, args);
    assert!(
        out.status.success(),
        "etcdctl {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Polls `f` until it returns Some, or panics at the deadline.
pub async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A Service manifest without a clusterIP gets one from the server's --service-cidr (default
/// 10.96.0.0/12): take it into what the manifest is expected to read back as.
pub fn with_allocated_cluster_ip(
    got: &berth_proto::manifest::Object,
    expected: &mut berth_proto::manifest::Object,
) {
    use berth_proto::manifest::Object;
    let (Object::Service(g), Object::Service(e)) = (got, expected) else {
        return;
    };
    let (Some(gs), Some(es)) = (g.spec.as_ref(), e.spec.as_mut()) else {
        return;
    };
    if es.cluster_ip.is_empty() && es.r#type != "ExternalName" {
        let ip: std::net::Ipv4Addr = gs.cluster_ip.parse().expect("an allocated IPv4 address");
        assert_eq!(ip.octets()[0], 10);
        assert!((96..112).contains(&ip.octets()[1]), "{ip} outside 10.96.0.0/12");
        es.cluster_ip = gs.cluster_ip.clone();
        es.cluster_ips = gs.cluster_ips.clone();
    }
}

/// Every example manifest (`.yaml`, `.yml`, `.json`) under ../shared/testdata/manifests/, sorted.
pub fn example_manifests() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                walk(&p, out);
            } else if matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml" | "json")
            ) {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/testdata/manifests"),
        &mut out,
    );
    out
}

/// An object as JSON without metadata and status (what a manifest round trip must keep).
pub fn body(o: &berth_proto::manifest::Object) -> serde_json::Value {
    let mut v = o.to_json_value();
    let m = v.as_object_mut().unwrap();
    m.remove("metadata");
    m.remove("status");
    v
}

/// Whether `ip` (dotted IPv4) lies in `cidr` (`a.b.c.d/len`).
pub fn in_cidr(ip: &str, cidr: &str) -> bool {
    let (net, len) = cidr.split_once('/').unwrap();
    let (ip, net): (std::net::Ipv4Addr, std::net::Ipv4Addr) = (ip.parse().unwrap(), net.parse().unwrap());
    let len: u32 = len.parse().unwrap();
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    u32::from(ip) & mask == u32::from(net) & mask
}
