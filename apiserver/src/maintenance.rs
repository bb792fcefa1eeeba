//! etcd-v3 `Maintenance` service: status, hashes, backups, and the no-op chores (defragment,
//! alarms) that Berth makes unnecessary: RocksDB compacts itself and there is no space alarm.

use crate::error::ApiError;
use crate::Shared;
use berth_proto::etcdserverpb as pb;
use berth_proto::etcdserverpb::maintenance_server::Maintenance;
use futures::Stream;
use std::pin::Pin;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// Bytes per message of a snapshot stream (etcd uses 32 KiB as well).
pub const SNAPSHOT_CHUNK_BYTES: usize = 32 * 1024;
/// The etcd API version this server speaks, as reported by Status.
pub const ETCD_API_VERSION: &str = "3.4.0";

pub struct MaintenanceService {
    pub(crate) shared: Arc<Shared>,
}

type SnapshotStream = Pin<Box<dyn Stream<Item = Result<pb::SnapshotResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn alarm(&self, _req: Request<pb::AlarmRequest>) -> Result<Response<pb::AlarmResponse>, Status> {
        let header = Some(self.shared.header(self.shared.raft.store().revision()));
        Ok(Response::new(pb::AlarmResponse {
            header,
            alarms: Vec::new(),
        }))
    }

    async fn status(&self, _req: Request<pb::StatusRequest>) -> Result<Response<pb::StatusResponse>, Status> {
        let st = self.shared.raft.status();
        let store = self.shared.raft.store();
        let db_size = store.db_size_bytes() as i64;
        Ok(Response::new(pb::StatusResponse {
            header: Some(self.shared.header(store.revision())),
            version: ETCD_API_VERSION.to_string(),
            db_size,
            leader: st.leader_id.unwrap_or(0),
            raft_index: st.last_log_index,
            raft_term: st.term,
            raft_applied_index: st.applied_index,
            errors: Vec::new(),
            db_size_in_use: db_size,
            is_learner: st.is_learner,
        }))
    }

    async fn defragment(
        &self,
        _req: Request<pb::DefragmentRequest>,
    ) -> Result<Response<pb::DefragmentResponse>, Status> {
        let header = Some(self.shared.header(self.shared.raft.store().revision()));
        Ok(Response::new(pb::DefragmentResponse { header }))
    }

    async fn hash(&self, _req: Request<pb::HashRequest>) -> Result<Response<pb::HashResponse>, Status> {
        let store = self.shared.raft.store();
        let hash = store.hash() as u32;
        Ok(Response::new(pb::HashResponse {
            header: Some(self.shared.header(store.revision())),
            hash,
        }))
    }

    async fn hash_kv(
        &self,
        _req: Request<pb::HashKvRequest>,
    ) -> Result<Response<pb::HashKvResponse>, Status> {
        let store = self.shared.raft.store();
        Ok(Response::new(pb::HashKvResponse {
            header: Some(self.shared.header(store.revision())),
            hash: store.hash() as u32,
            compact_revision: store.compact_revision(),
        }))
    }

    type SnapshotStream = SnapshotStream;

    /// A consistent backup: the store image framed as etcd tools expect (whole 512-byte pages,
    /// then a SHA-256). `berth snapshot restore` checks it.
    async fn snapshot(&self, _req: Request<pb::SnapshotRequest>) -> Result<Response<SnapshotStream>, Status> {
        let shared = self.shared.clone();
        let image = tokio::task::spawn_blocking(move || shared.raft.store().snapshot())
            .await
            .map_err(|e| Status::internal(format!("snapshot task: {e}")))?
            .map_err(ApiError::from)?;
        let blob = berth_store::encode_backup(&image);
        let header = self.shared.header(self.shared.raft.store().revision());
        let total = blob.len();
        let chunks: Vec<Result<pb::SnapshotResponse, Status>> = blob
            .chunks(SNAPSHOT_CHUNK_BYTES)
            .scan(0usize, |sent, chunk| {
                *sent += chunk.len();
                Some(Ok(pb::SnapshotResponse {
                    header: Some(header),
                    remaining_bytes: (total - *sent) as u64,
                    blob: chunk.to_vec(),
                }))
            })
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(chunks))))
    }

    async fn move_leader(
        &self,
        _req: Request<pb::MoveLeaderRequest>,
    ) -> Result<Response<pb::MoveLeaderResponse>, Status> {
        Err(ApiError::Unsupported("MoveLeader").into())
    }
}
