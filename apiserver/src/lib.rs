//! berth-apiserver: the gRPC services of a `berth server` on top of the replicated store.
//!
//! Role: the etcd-v3-compatible KV, Watch, Lease, Cluster and Maintenance services on the
//! client address; the internal Raft `Peer` service on the peer address; `/metrics` over
//! HTTP. The `Proxy` service ([`resources::proxy`]) streams logs, exec and image
//! imports through to node agents. The typed `Resources` service ([`resources`]) adds Kubernetes' admission rules
//! ([`admission`]: LimitRange, ResourceQuota accounted in the write's own store Txn), patches
//! ([`patch`]) and Service ClusterIP allocation ([`service_ip`]). Every listener is bound through
//! `berth_client::listen` and every outbound channel is dialed through `berth_client::dial`,
//! side by side, where TLS will go. [`error`] is the one table from errors to gRPC
//! status codes (with etcd's messages, which client libraries match on).
//!
//! Invariants: bad input is refused before anything is proposed, so it changes nothing;
//! requests over `max_request_bytes` are refused with etcd's "request is too large"; reads are
//! linearizable unless the request asks to be serializable; a slow watch client never slows
//! the store or other clients.
//!
//! It deliberately does not know: how Raft replicates (only the `RaftHandle` interface), how
//! the store lays out data, or command-line flags (it takes an [`ApiConfig`]).

pub mod admission;
pub mod cluster;
pub mod convert;
pub mod error;
pub mod kv;
pub mod lease;
/// Listeners are bound where outbound channels are dialed, in the client crate (TLS goes there).
pub use berth_client::listen;
pub mod maintenance;
pub mod metrics;
pub mod patch;
pub mod peer;
pub mod resources;
pub mod service_ip;
pub mod transport;
pub mod watch;

use berth_proto::etcdserverpb as pb;
use berth_raft::{RaftConfig, RaftHandle};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use error::ApiError;

/// etcd's default `--max-request-bytes` (1.5 MiB).
pub const MAX_REQUEST_BYTES_DEFAULT: usize = 1536 * 1024;
/// etcd's default `--max-txn-ops`.
pub const MAX_TXN_OPS_DEFAULT: usize = 128;
/// Slack above `max_request_bytes` for gRPC framing, so that an oversize request reaches the
/// handler and gets etcd's clear error instead of a transport-level one (etcd does the same).
pub const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;
/// Largest response message; ranges over big keyspaces are bounded by `limit` instead.
pub const RESPONSE_BYTES_MAX: usize = 256 * 1024 * 1024;

/// How the API server listens and what it accepts.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    pub client_addr: String,
    pub peer_addr: String,
    pub metrics_addr: Option<String>,
    pub max_request_bytes: usize,
    pub max_txn_ops: usize,
    /// How often watchers that asked for progress notifications get one.
    pub watch_progress_notify_interval_ms: u64,
    /// The range Service ClusterIPs are allocated from.
    pub service_cidr: service_ip::ServiceCidr,
    /// Bound of each kind's recent-event window that `WatchMany` watches read from, in events
    /// (see `resources::feed`); a watch falling further behind is Expired.
    pub watch_window_events: usize,
}

impl ApiConfig {
    pub fn new(client_addr: String, peer_addr: String) -> ApiConfig {
        ApiConfig {
            client_addr,
            peer_addr,
            metrics_addr: None,
            max_request_bytes: MAX_REQUEST_BYTES_DEFAULT,
            max_txn_ops: MAX_TXN_OPS_DEFAULT,
            watch_progress_notify_interval_ms: 10 * 60 * 1000,
            service_cidr: service_ip::ServiceCidr::default(),
            watch_window_events: resources::WATCH_WINDOW_EVENTS_DEFAULT,
        }
    }
}

/// What every service shares: the Raft handle, the configuration and the metrics.
pub(crate) struct Shared {
    pub cfg: ApiConfig,
    pub raft: RaftHandle,
    pub metrics: Arc<metrics::Metrics>,
    /// The kinds' event windows `WatchMany` serves from.
    pub feeds: resources::Feeds,
}

impl Shared {
    pub fn header(&self, revision: i64) -> pb::ResponseHeader {
        pb::ResponseHeader {
            cluster_id: self.raft.cluster_id(),
            member_id: self.raft.member_id(),
            revision,
            raft_term: self.raft.status().term,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Listen(#[from] listen::ListenError),
    #[error("raft: {0}")]
    Raft(#[from] berth_raft::RaftError),
}

/// A running `berth server`: Raft member, gRPC services and metrics endpoint.
pub struct Server {
    pub raft: RaftHandle,
    tasks: Vec<JoinHandle<()>>,
}

impl Server {
    /// Binds every listener first (so that peers can reach this member while Raft starts),
    /// then starts Raft, then serves clients.
    pub async fn start(cfg: ApiConfig, mut raft_cfg: RaftConfig) -> Result<Server, StartError> {
        let peer_listener = listen::bind("--peer-addr", &cfg.peer_addr).await?;
        let client_listener = listen::bind("--client-addr", &cfg.client_addr).await?;
        let metrics_listener = match &cfg.metrics_addr {
            Some(addr) => Some(listen::bind("--metrics-addr", addr).await?),
            None => None,
        };
        let metrics = Arc::new(metrics::Metrics::new());
        raft_cfg.fsync_observer = Some(berth_raft::FsyncObserver(metrics.fsync_observer()));
        let peer = peer::PeerService::default();
        let mut tasks = vec![tokio::spawn(serve_peer(peer_listener, peer.clone()))];
        let transport = Arc::new(transport::GrpcPeerTransport::default());
        let raft = RaftHandle::start(raft_cfg, transport).await?;
        let _ = peer.raft.set(raft.clone());
        let shared = Arc::new(Shared {
            cfg,
            raft: raft.clone(),
            metrics,
            feeds: Default::default(),
        });
        tasks.push(tokio::spawn(serve_client(client_listener, shared.clone())));
        tasks.push(tokio::spawn(resources::ensure_default_namespace(shared.clone())));
        if let Some(l) = metrics_listener {
            tasks.push(tokio::spawn(serve_metrics(l, shared)));
        }
        Ok(Server { raft, tasks })
    }

    /// Stops serving and shuts Raft down.
    pub async fn shutdown(self) {
        for t in &self.tasks {
            t.abort();
        }
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
    }
}

async fn serve_peer(listener: TcpListener, peer: peer::PeerService) {
    use berth_proto::raftpb::peer_server::PeerServer;
    let svc = PeerServer::new(peer)
        .max_decoding_message_size(transport::PEER_MESSAGE_BYTES_MAX)
        .max_encoding_message_size(transport::PEER_MESSAGE_BYTES_MAX);
    let res = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(svc)
        .serve_with_incoming(listen::incoming(listener))
        .await;
    if let Err(e) = res {
        tracing::error!(error = %e, "peer server stopped");
    }
}

async fn serve_client(listener: TcpListener, shared: Arc<Shared>) {
    use berth_proto::agentv1::proxy_server::ProxyServer;
    use berth_proto::apiv1::resources_server::ResourcesServer;
    use berth_proto::etcdserverpb::{
        cluster_server::ClusterServer, kv_server::KvServer, lease_server::LeaseServer,
        maintenance_server::MaintenanceServer, watch_server::WatchServer,
    };
    let recv_max = shared.cfg.max_request_bytes + GRPC_OVERHEAD_BYTES;
    macro_rules! limits {
        ($svc:expr) => {
            $svc.max_decoding_message_size(recv_max)
                .max_encoding_message_size(RESPONSE_BYTES_MAX)
        };
    }
    let res = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(limits!(KvServer::new(kv::KvService {
            shared: shared.clone()
        })))
        .add_service(limits!(WatchServer::new(watch::WatchService {
            shared: shared.clone()
        })))
        .add_service(limits!(LeaseServer::new(lease::LeaseService {
            shared: shared.clone()
        })))
        .add_service(limits!(ClusterServer::new(cluster::ClusterService {
            shared: shared.clone()
        })))
        .add_service(limits!(MaintenanceServer::new(maintenance::MaintenanceService {
            shared: shared.clone()
        })))
        .add_service(limits!(ResourcesServer::new(resources::ResourcesService {
            shared: shared.clone()
        })))
        .add_service(
            ProxyServer::new(resources::proxy::ProxyService {
                resources: resources::ResourcesService {
                    shared: shared.clone(),
                },
            })
            .max_decoding_message_size(berth_client::agent::IMAGE_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(berth_client::agent::EXEC_RESPONSE_BYTES_MAX),
        )
        .serve_with_incoming(listen::incoming(listener))
        .await;
    if let Err(e) = res {
        tracing::error!(error = %e, "client server stopped");
    }
}

async fn serve_metrics(listener: TcpListener, shared: Arc<Shared>) {
    use axum::{routing::get, Router};
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let shared = shared.clone();
            async move { shared.metrics.render(&shared.raft) }
        }),
    );
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "metrics server stopped");
    }
}
