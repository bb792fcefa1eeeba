//! In-process peer transport for tests (of this crate and of others): a router from peer
//! address to [`RaftHandle`], whose links can be cut and healed.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;

use crate::{PeerRpc, PeerTransport, RaftConfig, RaftHandle, TransportError};

#[derive(Default)]
struct NetState {
    handles: HashMap<String, RaftHandle>,
    isolated: BTreeSet<String>,
    /// Cut links, each as an ordered pair (a < b): cut both ways.
    cut: BTreeSet<(String, String)>,
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

    /// Restores every link.
    pub fn heal_all(&self) {
        let mut s = self.state.lock();
        s.isolated.clear();
        s.cut.clear();
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
            if !s.linked(&from, &to) {
                return futures::future::ready(Err(TransportError::Unreachable(format!(
                    "{from} -> {to}: link cut"
                ))))
                .boxed();
            }
            s.handles.get(&to).cloned()
        };
        let Some(target) = target else {
            return futures::future::ready(Err(TransportError::Unreachable(format!(
                "{to}: nobody there"
            ))))
            .boxed();
        };
        async move {
            let res = target.handle_peer(rpc, payload).await;
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
