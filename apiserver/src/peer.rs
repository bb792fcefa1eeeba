//! The internal `berth.raft.v1.Peer` service: inbound Raft messages and requests forwarded
//! between members. Payloads are opaque here; the raft crate encodes and decodes them.

use berth_proto::raftpb::peer_server::Peer;
use berth_proto::raftpb::RaftMessage;
use berth_raft::{PeerRpc, RaftHandle};
use std::sync::{Arc, OnceLock};
use tonic::{Request, Response, Status};

/// The peer listener starts before the local Raft node exists (other members may already be
/// calling), so the handle is filled in once Raft is up; until then callers get Unavailable.
#[derive(Clone, Default)]
pub struct PeerService {
    pub raft: Arc<OnceLock<RaftHandle>>,
}

impl PeerService {
    async fn call(&self, rpc: PeerRpc, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let Some(raft) = self.raft.get() else {
            return Err(Status::unavailable("berth: raft member is starting"));
        };
        let payload = raft
            .handle_peer(rpc, req.into_inner().payload)
            .await
            .map_err(|e| Status::from(crate::error::ApiError::from(e)))?;
        Ok(Response::new(RaftMessage { payload }))
    }
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn append_entries(&self, r: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        self.call(PeerRpc::AppendEntries, r).await
    }
    async fn vote(&self, r: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        self.call(PeerRpc::Vote, r).await
    }
    async fn install_snapshot(&self, r: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        self.call(PeerRpc::InstallSnapshot, r).await
    }
    async fn forward(&self, r: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        self.call(PeerRpc::Forward, r).await
    }
    async fn read_index(&self, r: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        self.call(PeerRpc::ReadIndex, r).await
    }
    async fn join(&self, r: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        self.call(PeerRpc::Join, r).await
    }
    async fn members(&self, r: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        self.call(PeerRpc::Members, r).await
    }
}
