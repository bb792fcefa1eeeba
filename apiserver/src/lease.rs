//! etcd-v3 `Lease` service. Grants and revokes are replicated commands; keep-alives and
//! time-to-live answers come from the leader's lease clocks (forwarded there by the raft layer).

use crate::error::ApiError;
use crate::kv::unreachable_result;
use crate::Shared;
use berth_proto::etcdserverpb as pb;
use berth_proto::etcdserverpb::lease_server::Lease;
use berth_raft::RaftError;
use berth_store::{Command, CommandResult};
use futures::Stream;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

/// etcd's upper bound on a lease TTL (9,000,000,000 s); larger grants are refused.
pub const LEASE_TTL_SECS_MAX: i64 = 9_000_000_000;
/// Keep-alive answers queued per stream.
const KEEPALIVE_QUEUE_LEN: usize = 64;

pub struct LeaseService {
    pub(crate) shared: Arc<Shared>,
}

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn lease_grant(
        &self,
        req: Request<pb::LeaseGrantRequest>,
    ) -> Result<Response<pb::LeaseGrantResponse>, Status> {
        let _t = self.shared.metrics.time("LeaseGrant");
        let req = req.into_inner();
        if req.ttl > LEASE_TTL_SECS_MAX {
            return Err(Status::out_of_range("etcdserver: too large lease TTL"));
        }
        if req.id < 0 {
            return Err(ApiError::InvalidArgument {
                field: "ID",
                reason: "must not be negative".into(),
            }
            .into());
        }
        let cmd = Command::LeaseGrant {
            id: req.id,
            ttl_secs: req.ttl,
        };
        match self
            .shared
            .raft
            .propose(cmd)
            .await
            .map_err(ApiError::from)?
            .map_err(ApiError::from)?
        {
            CommandResult::LeaseGrant {
                id,
                ttl_secs,
                revision,
            } => Ok(Response::new(pb::LeaseGrantResponse {
                header: Some(self.shared.header(revision)),
                id,
                ttl: ttl_secs,
                error: String::new(),
            })),
            other => unreachable_result("LeaseGrant", other),
        }
    }

    async fn lease_revoke(
        &self,
        req: Request<pb::LeaseRevokeRequest>,
    ) -> Result<Response<pb::LeaseRevokeResponse>, Status> {
        let _t = self.shared.metrics.time("LeaseRevoke");
        let id = req.into_inner().id;
        match self
            .shared
            .raft
            .propose(Command::LeaseRevoke { id })
            .await
            .map_err(ApiError::from)?
            .map_err(ApiError::from)?
        {
            CommandResult::LeaseRevoke { revision } => Ok(Response::new(pb::LeaseRevokeResponse {
                header: Some(self.shared.header(revision)),
            })),
            other => unreachable_result("LeaseRevoke", other),
        }
    }

    type LeaseKeepAliveStream =
        Pin<Box<dyn Stream<Item = Result<pb::LeaseKeepAliveResponse, Status>> + Send + 'static>>;

    async fn lease_keep_alive(
        &self,
        req: Request<Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let mut inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(KEEPALIVE_QUEUE_LEN);
        let shared = self.shared.clone();
        tokio::spawn(async move {
            while let Some(Ok(req)) = inbound.next().await {
                let resp = match shared.raft.lease_keepalive(req.id).await {
                    Ok(ttl) => Ok(keepalive_reply(&shared, req.id, ttl)),
                    // etcd answers a keep-alive of an unknown lease with TTL 0 rather than an
                    // error, so that clients see the lease as expired and stop.
                    Err(RaftError::LeaseNotFound) => Ok(keepalive_reply(&shared, req.id, 0)),
                    Err(e) => Err(Status::from(ApiError::from(e))),
                };
                if tx.send(resp).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn lease_time_to_live(
        &self,
        req: Request<pb::LeaseTimeToLiveRequest>,
    ) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
        let _t = self.shared.metrics.time("LeaseTimeToLive");
        let req = req.into_inner();
        let header = Some(self.shared.header(self.shared.raft.store().revision()));
        match self.shared.raft.lease_time_to_live(req.id).await {
            Ok((granted_ttl, ttl)) => {
                let keys = match (req.keys, self.shared.raft.store().lease(req.id)) {
                    (true, Some((_, keys))) => keys,
                    _ => Vec::new(),
                };
                Ok(Response::new(pb::LeaseTimeToLiveResponse {
                    header,
                    id: req.id,
                    ttl,
                    granted_ttl,
                    keys,
                }))
            }
            // etcd reports an unknown or expired lease as TTL -1, not as an error.
            Err(RaftError::LeaseNotFound) => Ok(Response::new(pb::LeaseTimeToLiveResponse {
                header,
                id: req.id,
                ttl: -1,
                ..Default::default()
            })),
            Err(e) => Err(ApiError::from(e).into()),
        }
    }

    async fn lease_leases(
        &self,
        _req: Request<pb::LeaseLeasesRequest>,
    ) -> Result<Response<pb::LeaseLeasesResponse>, Status> {
        self.shared
            .raft
            .read_linearizable()
            .await
            .map_err(ApiError::from)?;
        let store = self.shared.raft.store();
        let leases = store
            .leases()
            .into_iter()
            .map(|l| pb::LeaseStatus { id: l.id })
            .collect();
        Ok(Response::new(pb::LeaseLeasesResponse {
            header: Some(self.shared.header(store.revision())),
            leases,
        }))
    }
}

fn keepalive_reply(shared: &Shared, id: i64, ttl: i64) -> pb::LeaseKeepAliveResponse {
    pb::LeaseKeepAliveResponse {
        header: Some(shared.header(shared.raft.store().revision())),
        id,
        ttl,
    }
}
