//! A small etcd-v3 client with failover across server addresses.

use crate::dial;
use crate::servers::{Call, Servers};
use berth_proto::etcdserverpb as pb;
use berth_proto::etcdserverpb::{
    cluster_client::ClusterClient, kv_client::KvClient, lease_client::LeaseClient,
    maintenance_client::MaintenanceClient, watch_client::WatchClient,
};
use std::future::Future;
use std::time::Duration;
use tonic::transport::Channel;
use tonic::{Code, Status};

/// Largest response the client accepts (a full range of a big keyspace).
pub const RESPONSE_BYTES_MAX: usize = 256 * 1024 * 1024;

/// Requests queued on one watch stream (only the create request is ever sent).
pub const WATCH_REQUEST_QUEUE_LEN: usize = 4;

/// One open watch stream. Dropping it closes the stream.
pub struct EtcdWatch {
    _requests: tokio::sync::mpsc::Sender<pb::WatchRequest>,
    responses: tonic::Streaming<pb::WatchResponse>,
}

impl EtcdWatch {
    /// The next response (events, progress, or cancellation); `None` when the server closed
    /// the stream.
    pub async fn next(&mut self) -> Result<Option<pb::WatchResponse>, ClientError> {
        Ok(self.responses.message().await?)
    }
}

/// What a call can fail with. Definite answers of the server are mapped from their gRPC code
/// to a variant callers can match; other codes stay as [`ClientError::Status`].
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no server address given")]
    NoEndpoints,
    #[error(transparent)]
    Dial(#[from] dial::DialError),
    /// NOT_FOUND.
    #[error("not found: {0}")]
    NotFound(String),
    /// ALREADY_EXISTS.
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// ABORTED: a stale resourceVersion (lost compare-and-swap); re-read and retry.
    #[error("conflict: {0}")]
    Conflict(String),
    /// INVALID_ARGUMENT: the object or request is invalid.
    #[error("invalid: {message}")]
    Invalid { message: String },
    /// PERMISSION_DENIED: an admission rule forbids the write (quota exceeded, LimitRange
    /// violated, namespace terminating); the message says which.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// OUT_OF_RANGE (or a watch ERROR "Expired"): the revision was compacted; relist.
    #[error("expired: {0}")]
    Expired(String),
    /// Every server was unreachable.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A write whose outcome is unknown: it was sent, and the connection broke, the call
    /// timed out, or the server could not tell. It may or may not have been applied (read
    /// back to find out); it was not sent to another server.
    #[error("indeterminate (the write may or may not have been applied): {0}")]
    Indeterminate(String),
    /// A watch ended with an ERROR event other than "Expired".
    #[error("watch failed: {0}")]
    Watch(String),
    /// The server's answer was not the expected kind of object.
    #[error("unexpected answer: {0}")]
    Decode(String),
    #[error("{}: {}", .0.code(), .0.message())]
    Status(Status),
}

impl From<Status> for ClientError {
    fn from(s: Status) -> Self {
        let m = s.message().to_string();
        match s.code() {
            Code::NotFound => ClientError::NotFound(m),
            Code::AlreadyExists => ClientError::AlreadyExists(m),
            Code::Aborted => ClientError::Conflict(m),
            Code::InvalidArgument => ClientError::Invalid { message: m },
            Code::OutOfRange => ClientError::Expired(m),
            Code::PermissionDenied => ClientError::Forbidden(m),
            _ => ClientError::Status(s),
        }
    }
}

/// An etcd-v3 client over one or more servers. Calls go to the last server that answered and
/// move to the next one when a server is unreachable.
pub struct EtcdClient {
    servers: Servers,
}

/// Whether a failed call may be tried on another server: only when this one never answered.
pub(crate) fn is_unreachable(s: &Status) -> bool {
    matches!(
        s.code(),
        Code::Unavailable | Code::DeadlineExceeded | Code::Unknown
    ) && !s.message().starts_with("etcdserver:")
}

/// A transaction that only reads may be repeated anywhere; one that may write may not.
fn txn_kind(req: &pb::TxnRequest) -> Call {
    use pb::request_op::Request;
    let reads_only = req
        .success
        .iter()
        .chain(&req.failure)
        .all(|op| matches!(op.request, Some(Request::RequestRange(_))));
    if reads_only {
        Call::Idempotent
    } else {
        Call::Write
    }
}

impl EtcdClient {
    pub fn new(addrs: &[String], request_timeout: Duration) -> Result<Self, ClientError> {
        Ok(EtcdClient {
            servers: Servers::new(addrs, request_timeout)?,
        })
    }

    pub fn addrs(&self) -> &[String] {
        self.servers.addrs()
    }

    async fn failover<T, F, Fut>(&self, kind: Call, call: F) -> Result<T, ClientError>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        self.servers.failover(kind, call).await
    }

    pub fn kv_on(ch: Channel) -> KvClient<Channel> {
        KvClient::new(ch).max_decoding_message_size(RESPONSE_BYTES_MAX)
    }

    pub async fn put(&self, key: &[u8], value: &[u8]) -> Result<pb::PutResponse, ClientError> {
        let req = pb::PutRequest {
            key: key.to_vec(),
            value: value.to_vec(),
            ..Default::default()
        };
        self.failover(Call::Write, |ch| {
            let req = req.clone();
            async move { Ok(Self::kv_on(ch).put(req).await?.into_inner()) }
        })
        .await
    }

    pub async fn range(&self, req: pb::RangeRequest) -> Result<pb::RangeResponse, ClientError> {
        self.failover(Call::Idempotent, |ch| {
            let req = req.clone();
            async move { Ok(Self::kv_on(ch).range(req).await?.into_inner()) }
        })
        .await
    }

    /// A transaction (compares, then the success or failure branch). One that writes is sent
    /// to another server only if it never reached the first (see [`crate::servers`]).
    pub async fn txn(&self, req: pb::TxnRequest) -> Result<pb::TxnResponse, ClientError> {
        self.failover(txn_kind(&req), |ch| {
            let req = req.clone();
            async move { Ok(Self::kv_on(ch).txn(req).await?.into_inner()) }
        })
        .await
    }

    pub async fn delete_range(
        &self,
        req: pb::DeleteRangeRequest,
    ) -> Result<pb::DeleteRangeResponse, ClientError> {
        self.failover(Call::Write, |ch| {
            let req = req.clone();
            async move { Ok(Self::kv_on(ch).delete_range(req).await?.into_inner()) }
        })
        .await
    }

    /// Opens a watch stream with one watcher created by `req` (on the first server that
    /// answers) and waits for the server to confirm its creation.
    pub async fn watch(&self, req: pb::WatchCreateRequest) -> Result<EtcdWatch, ClientError> {
        let stream = self
            .failover(Call::Idempotent, |ch| {
                let req = req.clone();
                async move {
                    let (tx, rx) = tokio::sync::mpsc::channel(WATCH_REQUEST_QUEUE_LEN);
                    let create = pb::WatchRequest {
                        request_union: Some(pb::watch_request::RequestUnion::CreateRequest(req)),
                    };
                    tx.send(create).await.expect("receiver held by the stream");
                    let requests = tokio_stream::wrappers::ReceiverStream::new(rx);
                    let responses = WatchClient::new(ch)
                        .max_decoding_message_size(RESPONSE_BYTES_MAX)
                        .watch(requests)
                        .await?
                        .into_inner();
                    Ok((tx, responses))
                }
            })
            .await?;
        let mut watch = EtcdWatch {
            _requests: stream.0,
            responses: stream.1,
        };
        match watch.responses.message().await? {
            Some(r) if r.created && !r.canceled => Ok(watch),
            Some(r) => Err(ClientError::Watch(r.cancel_reason)),
            None => Err(ClientError::Watch(
                "stream ended before the watch was created".into(),
            )),
        }
    }

    pub async fn lease_grant(&self, ttl_s: i64) -> Result<pb::LeaseGrantResponse, ClientError> {
        self.failover(Call::Write, |ch| async move {
            let req = pb::LeaseGrantRequest { ttl: ttl_s, id: 0 };
            Ok(LeaseClient::new(ch).lease_grant(req).await?.into_inner())
        })
        .await
    }

    pub async fn lease_revoke(&self, id: i64) -> Result<pb::LeaseRevokeResponse, ClientError> {
        self.failover(Call::Write, |ch| async move {
            let req = pb::LeaseRevokeRequest { id };
            Ok(LeaseClient::new(ch).lease_revoke(req).await?.into_inner())
        })
        .await
    }

    /// One keep-alive round trip: the lease's refreshed TTL in seconds (0 or less: the lease
    /// no longer exists).
    pub async fn lease_keep_alive_once(&self, id: i64) -> Result<i64, ClientError> {
        self.failover(Call::Idempotent, |ch| async move {
            let req = pb::LeaseKeepAliveRequest { id };
            let mut responses = LeaseClient::new(ch)
                .lease_keep_alive(tokio_stream::once(req))
                .await?
                .into_inner();
            match responses.message().await? {
                Some(r) => Ok(r.ttl),
                None => Err(Status::unavailable("keep-alive stream ended without an answer")),
            }
        })
        .await
    }

    pub async fn member_list(&self) -> Result<pb::MemberListResponse, ClientError> {
        self.failover(Call::Idempotent, |ch| async move {
            let req = pb::MemberListRequest { linearizable: true };
            Ok(ClusterClient::new(ch).member_list(req).await?.into_inner())
        })
        .await
    }

    pub async fn member_remove(&self, id: u64) -> Result<pb::MemberRemoveResponse, ClientError> {
        self.failover(Call::Write, |ch| async move {
            Ok(ClusterClient::new(ch)
                .member_remove(pb::MemberRemoveRequest { id })
                .await?
                .into_inner())
        })
        .await
    }

    /// A consistent backup streamed from the first server that answers (the bytes of
    /// `Maintenance.Snapshot`, in the backup format `berth snapshot restore` reads).
    pub async fn snapshot(&self) -> Result<Vec<u8>, ClientError> {
        self.failover(Call::Idempotent, |ch| async move {
            let mut stream = MaintenanceClient::new(ch)
                .max_decoding_message_size(RESPONSE_BYTES_MAX)
                .snapshot(pb::SnapshotRequest {})
                .await?
                .into_inner();
            let mut blob = Vec::new();
            while let Some(msg) = stream.message().await? {
                blob.extend_from_slice(&msg.blob);
            }
            Ok(blob)
        })
        .await
    }

    /// Status of one particular server (no failover: the answer is about that server).
    pub async fn status_of(&self, idx: usize) -> Result<pb::StatusResponse, ClientError> {
        let ch = self.servers.channel(idx);
        Ok(MaintenanceClient::new(ch)
            .status(pb::StatusRequest {})
            .await?
            .into_inner())
    }

    /// Status from whichever server answers first.
    pub async fn status(&self) -> Result<pb::StatusResponse, ClientError> {
        self.failover(Call::Idempotent, |ch| async move {
            Ok(MaintenanceClient::new(ch)
                .status(pb::StatusRequest {})
                .await?
                .into_inner())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definite_answers_map_to_variants() {
        let e = |s: Status| ClientError::from(s);
        assert!(matches!(e(Status::not_found("x")), ClientError::NotFound(m) if m == "x"));
        assert!(matches!(
            e(Status::already_exists("x")),
            ClientError::AlreadyExists(_)
        ));
        assert!(matches!(e(Status::aborted("x")), ClientError::Conflict(_)));
        assert!(
            matches!(e(Status::invalid_argument("bad")), ClientError::Invalid { message } if message == "bad")
        );
        assert!(matches!(e(Status::out_of_range("old")), ClientError::Expired(_)));
        assert!(matches!(
            e(Status::permission_denied("no")),
            ClientError::Forbidden(m) if m == "no"
        ));
        assert!(matches!(
            e(Status::failed_precondition("no")),
            ClientError::Status(_)
        ));
    }

    #[test]
    fn only_unanswered_calls_fail_over() {
        assert!(is_unreachable(&Status::unavailable("transport error")));
        assert!(is_unreachable(&Status::unknown("connection reset")));
        assert!(!is_unreachable(&Status::unavailable("etcdserver: no leader")));
        assert!(!is_unreachable(&Status::aborted("conflict")));
        assert!(!is_unreachable(&Status::not_found("x")));
    }
}
