//! etcd-v3 `KV` service: Range, Put, DeleteRange, Txn, Compact.

use crate::convert;
use crate::error::ApiError;
use crate::Shared;
use berth_proto::etcdserverpb as pb;
use berth_proto::etcdserverpb::kv_server::Kv;
use berth_store::{Command, CommandResult};
use prost::Message;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct KvService {
    pub(crate) shared: Arc<Shared>,
}

impl KvService {
    /// Rejects a request whose encoding is over the configured limit, as etcd does before
    /// proposing (the transport limit is larger, so that this clear error is what clients see).
    fn check_size(&self, req: &impl Message) -> Result<(), ApiError> {
        if req.encoded_len() > self.shared.cfg.max_request_bytes {
            return Err(ApiError::RequestTooLarge);
        }
        Ok(())
    }

    async fn propose(&self, cmd: Command) -> Result<CommandResult, ApiError> {
        let res = self.shared.raft.propose(cmd).await;
        self.shared.metrics.proposal(matches!(res, Ok(Ok(_))));
        Ok(res??)
    }
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(&self, req: Request<pb::RangeRequest>) -> Result<Response<pb::RangeResponse>, Status> {
        let _t = self.shared.metrics.time("Range");
        let req = convert::range_from_pb(req.into_inner())?;
        if !req.serializable {
            self.shared
                .raft
                .read_linearizable()
                .await
                .map_err(ApiError::from)?;
        }
        let resp = self.shared.raft.store().range(&req).map_err(ApiError::from)?;
        let header = self.shared.header(resp.revision);
        Ok(Response::new(convert::range_to_pb(resp, header)))
    }

    async fn put(&self, req: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        let _t = self.shared.metrics.time("Put");
        let req = req.into_inner();
        self.check_size(&req)?;
        let cmd = Command::Put(convert::put_from_pb(req)?);
        match self.propose(cmd).await? {
            CommandResult::Put(r) => {
                let header = self.shared.header(r.revision);
                Ok(Response::new(convert::put_to_pb(r, header)))
            }
            other => unreachable_result("Put", other),
        }
    }

    async fn delete_range(
        &self,
        req: Request<pb::DeleteRangeRequest>,
    ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        let _t = self.shared.metrics.time("DeleteRange");
        let req = req.into_inner();
        self.check_size(&req)?;
        let cmd = Command::DeleteRange(convert::delete_from_pb(req)?);
        match self.propose(cmd).await? {
            CommandResult::DeleteRange(r) => {
                let header = self.shared.header(r.revision);
                Ok(Response::new(convert::delete_to_pb(r, header)))
            }
            other => unreachable_result("DeleteRange", other),
        }
    }

    async fn txn(&self, req: Request<pb::TxnRequest>) -> Result<Response<pb::TxnResponse>, Status> {
        let _t = self.shared.metrics.time("Txn");
        let req = req.into_inner();
        self.check_size(&req)?;
        let txn = convert::txn_from_pb(req, self.shared.cfg.max_txn_ops)?;
        match self.propose(Command::Txn(txn)).await? {
            CommandResult::Txn(r) => {
                let header = self.shared.header(r.revision);
                Ok(Response::new(convert::txn_to_pb(r, &header)))
            }
            other => unreachable_result("Txn", other),
        }
    }

    async fn compact(
        &self,
        req: Request<pb::CompactionRequest>,
    ) -> Result<Response<pb::CompactionResponse>, Status> {
        let _t = self.shared.metrics.time("Compact");
        let revision = req.into_inner().revision;
        match self.propose(Command::Compact { revision }).await? {
            CommandResult::Compact { revision } => Ok(Response::new(pb::CompactionResponse {
                header: Some(self.shared.header(revision)),
            })),
            other => unreachable_result("Compact", other),
        }
    }
}

/// The state machine answers each command with its own result kind; anything else is a broken
/// invariant between this crate and the store, so crash loudly rather than guess.
pub(crate) fn unreachable_result<T>(method: &str, got: CommandResult) -> T {
    panic!("store answered {method} with {got:?}")
}
