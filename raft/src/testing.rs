//! In-process peer transport for tests (of this crate and of others): a router from peer
//! address to [`RaftHandle`], whose links can be cut and healed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;

use crate::{PeerRpc, PeerTransport, RaftConfig, RaftError, RaftHandle, TransportError};

#[derive(Default)]
struct NetState {
    handles: HashMap<String, RaftHandle>,
    isolated: BTreeSet<String>,
    /// Cut links, each as an ordered pair (a < b): cut both ways.
    cut: BTreeSet<(String, String)>,
    /// Members whose every message is dropped (see [`TestNet::partition`]).
    dropped: BTreeSet<String>,
    /// Calls currently held by a drop, by destination and kind.
    held: HashMap<(String, PeerRpc), usize>,
}

impl NetState {
    fn linked(&self, a: &str, b: &str) -> bool {
        let pair = if a < b {
            (a.to_string(), b.to_string())
        } else {
            (b.to_string(), a.to_string())
        };
        !self.isolated.contains(a) && !self.isolated.contains(b) && !self.cut.contains(&pair)
    }

    fn dropping(&self, a: &str, b: &str) -> bool {
        self.dropped.contains(a) || self.dropped.contains(b)
    }
}

/// Counts one call held by a drop while it lives (the caller gives up by dropping it).
struct Held {
    net: Arc<TestNet>,
    key: (String, PeerRpc),
}

impl Held {
    fn new(net: &Arc<TestNet>, to: &str, rpc: PeerRpc) -> Held {
        let key = (to.to_string(), rpc);
        *net.state.lock().held.entry(key.clone()).or_default() += 1;
        Held {
            net: net.clone(),
            key,
        }
    }

    /// Never completes: the message (or its answer) is lost.
    async fn forever(self) -> Result<Vec<u8>, TransportError> {
        let _held = self;
        std::future::pending().await
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut s = self.net.state.lock();
        if let Some(n) = s.held.get_mut(&self.key) {
            *n -= 1;
        }
    }
}

/// A network of in-process members, addressed by their `peer_addr`.
#[derive(Default)]
pub struct TestNet {
    state: parking_lot::Mutex<NetState>,
}

impl TestNet {
    pub fn new() -> Arc<TestNet> {
        Arc::new(TestNet::default())
    }

    /// The transport a member at `from` uses to send.
    pub fn transport(self: &Arc<Self>, from: &str) -> Arc<dyn PeerTransport> {
        Arc::new(TestTransport {
            net: self.clone(),
            from: from.to_string(),
        })
    }

    /// Routes messages for `addr` to `handle`.
    pub fn register(&self, addr: &str, handle: RaftHandle) {
        self.state.lock().handles.insert(addr.to_string(), handle);
    }

    /// Stops routing to `addr` (e.g. before restarting that member); returns its handle.
    pub fn unregister(&self, addr: &str) -> Option<RaftHandle> {
        self.state.lock().handles.remove(addr)
    }

    /// Cuts every link of `addr`.
    pub fn isolate(&self, addr: &str) {
        self.state.lock().isolated.insert(addr.to_string());
    }

    /// Cuts the link between `a` and `b`, both ways.
    pub fn cut(&self, a: &str, b: &str) {
        let pair = if a < b {
            (a.to_string(), b.to_string())
        } else {
            (b.to_string(), a.to_string())
        };
        self.state.lock().cut.insert(pair);
    }

    /// Drops every message to and from `addr`, as a firewall rule that drops packets does
    /// (unlike [`TestNet::isolate`], whose calls fail at once as if refused): a call across
    /// it never completes, only the caller's own timeout ends it, and the answer to a call
    /// already in progress is lost.
    pub fn partition(&self, addr: &str) {
        self.state.lock().dropped.insert(addr.to_string());
    }

    /// Calls of kind `rpc` to `to` currently held by a [`TestNet::partition`] (sent, never
    /// to be answered, their callers still waiting).
    pub fn held_calls(&self, to: &str, rpc: PeerRpc) -> usize {
        let key = (to.to_string(), rpc);
        self.state.lock().held.get(&key).copied().unwrap_or(0)
    }

    /// Restores every link.
    pub fn heal_all(&self) {
        let mut s = self.state.lock();
        s.isolated.clear();
        s.cut.clear();
        s.dropped.clear();
    }
}

struct TestTransport {
    net: Arc<TestNet>,
    from: String,
}

impl PeerTransport for TestTransport {
    fn call(
        &self,
        peer_addr: &str,
        rpc: PeerRpc,
        payload: Vec<u8>,
    ) -> BoxFuture<'static, Result<Vec<u8>, TransportError>> {
        let (to, from, net) = (peer_addr.to_string(), self.from.clone(), self.net.clone());
        let target = {
            let s = net.state.lock();
            if s.dropping(&from, &to) {
                drop(s);
                return Held::new(&net, &to, rpc).forever().boxed();
            }
            if !s.linked(&from, &to) {
                return futures::future::ready(Err(TransportError::Unreachable(format!(
                    "{from} -> {to}: link cut"
                ))))
                .boxed();
            }
            s.handles.get(&to).cloned()
        };
        let Some(target) = target else {
            return futures::future::ready(Err(TransportError::Unreachable(format!("{to}: nobody there"))))
                .boxed();
        };
        async move {
            let res = target.handle_peer(rpc, payload).await;
            if net.state.lock().dropping(&from, &to) {
                return Held::new(&net, &to, rpc).forever().await;
            }
            if !net.state.lock().linked(&from, &to) {
                return Err(TransportError::Network(format!(
                    "{from} -> {to}: link cut during the call"
                )));
            }
            res.map_err(|e| TransportError::Remote(e.to_string()))
        }
        .boxed()
    }
}

/// A member config with the test network's conventions: peer address = name, client address
/// = `<name>:client`, fast timers, and `initial_cluster` from the given names.
pub fn member_config(name: &str, data_dir: &Path, initial_cluster: &[&str]) -> RaftConfig {
    let mut cfg = RaftConfig::new(name, data_dir, name, format!("{name}:client"));
    cfg.initial_cluster = initial_cluster
        .iter()
        .map(|n| (n.to_string(), n.to_string()))
        .collect();
    cfg
}

/// Polls `f` every 10 ms until it returns `Some`; panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// How long [`TestCluster`] waits for a leader.
const LEADER_WAIT: Duration = Duration::from_secs(20);

/// Members `m1..mN` of one initial cluster on a [`TestNet`], data under `base_dir/<name>`.
pub struct TestCluster {
    pub net: Arc<TestNet>,
    /// The initial cluster's member names.
    pub names: Vec<String>,
    base_dir: PathBuf,
    handles: BTreeMap<String, RaftHandle>,
    tweak: fn(&mut RaftConfig),
}

impl TestCluster {
    /// Starts `n` members; `tweak` adjusts every member's config (also on restarts).
    pub async fn start(
        base_dir: &Path,
        n: usize,
        tweak: fn(&mut RaftConfig),
    ) -> Result<TestCluster, RaftError> {
        let mut c = TestCluster {
            net: TestNet::new(),
            names: (1..=n).map(|i| format!("m{i}")).collect(),
            base_dir: base_dir.to_path_buf(),
            handles: BTreeMap::new(),
            tweak,
        };
        for name in c.names.clone() {
            c.start_member(&name).await?;
        }
        Ok(c)
    }

    /// The config member `name` of the initial cluster starts with.
    pub fn config(&self, name: &str) -> RaftConfig {
        let initial: Vec<&str> = self.names.iter().map(String::as_str).collect();
        let mut cfg = member_config(name, &self.base_dir.join(name), &initial);
        (self.tweak)(&mut cfg);
        cfg
    }

    /// (Re)starts member `name` of the initial cluster from its data dir.
    pub async fn start_member(&mut self, name: &str) -> Result<RaftHandle, RaftError> {
        let cfg = self.config(name);
        self.start_with(cfg).await
    }

    /// Starts a member with any config (e.g. a joiner) on this network.
    pub async fn start_with(&mut self, cfg: RaftConfig) -> Result<RaftHandle, RaftError> {
        let name = cfg.name.clone();
        let h = RaftHandle::start(cfg, self.net.transport(&name)).await?;
        self.net.register(&name, h.clone());
        self.handles.insert(name, h.clone());
        Ok(h)
    }

    /// Shuts member `name` down and forgets its handle (its data dir stays).
    pub async fn stop_member(&mut self, name: &str) -> Result<(), RaftError> {
        let Some(h) = self.handles.remove(name) else {
            return Ok(());
        };
        self.net.unregister(name);
        h.shutdown().await
    }

    /// The running member `name`. Panics if it is not running.
    pub fn h(&self, name: &str) -> &RaftHandle {
        &self.handles[name]
    }

    /// Names of the running members.
    pub fn running(&self) -> Vec<String> {
        self.handles.keys().cloned().collect()
    }

    /// Waits until every member in `among` agrees on one leader in `among`; its name.
    pub async fn leader_among(&self, among: &[&str]) -> String {
        eventually("an agreed leader", LEADER_WAIT, || async {
            let leaders: Vec<Option<u64>> = among.iter().map(|n| self.h(n).status().leader_id).collect();
            let first = leaders[0]?;
            if !leaders.iter().all(|l| *l == Some(first)) {
                return None;
            }
            let name = among.iter().find(|n| self.h(n).member_id() == first)?;
            self.h(name).is_leader().then(|| name.to_string())
        })
        .await
    }

    /// Waits until every running member agrees on one leader; its name.
    pub async fn leader(&self) -> String {
        let names = self.running();
        let among: Vec<&str> = names.iter().map(String::as_str).collect();
        self.leader_among(&among).await
    }

    /// Shuts every running member down.
    pub async fn shutdown_all(mut self) {
        for name in self.running() {
            if let Err(e) = self.stop_member(&name).await {
                tracing::warn!(member = %name, error = %e, "shutdown failed");
            }
        }
    }
}
