//! A small etcd-v3 client with failover across server addresses.

use crate::dial;
use crate::servers::Servers;
use berth_proto::etcdserverpb as pb;
use berth_proto::etcdserverpb::{
    cluster_client::ClusterClient, kv_client::KvClient, maintenance_client::MaintenanceClient,
};
use std::future::Future;
use std::time::Duration;
use tonic::transport::Channel;
use tonic::{Code, Status};

/// Largest response the client accepts (a full range of a big keyspace).
pub const RESPONSE_BYTES_MAX: usize = 256 * 1024 * 1024;

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

impl EtcdClient {
    pub fn new(addrs: &[String], request_timeout: Duration) -> Result<Self, ClientError> {
        Ok(EtcdClient {
            servers: Servers::new(addrs, request_timeout)?,
        })
    }

    pub fn addrs(&self) -> &[String] {
        self.servers.addrs()
    }

    async fn failover<T, F, Fut>(&self, call: F) -> Result<T, ClientError>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        self.servers.failover(call).await
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
        self.failover(|ch| {
            let req = req.clone();
            async move { Ok(Self::kv_on(ch).put(req).await?.into_inner()) }
        })
        .await
    }

    pub async fn range(&self, req: pb::RangeRequest) -> Result<pb::RangeResponse, ClientError> {
        self.failover(|ch| {
            let req = req.clone();
            async move { Ok(Self::kv_on(ch).range(req).await?.into_inner()) }
        })
        .await
    }

    pub async fn member_list(&self) -> Result<pb::MemberListResponse, ClientError> {
        self.failover(|ch| async move {
            let req = pb::MemberListRequest { linearizable: true };
            Ok(ClusterClient::new(ch).member_list(req).await?.into_inner())
        })
        .await
    }

    pub async fn member_remove(&self, id: u64) -> Result<pb::MemberRemoveResponse, ClientError> {
        self.failover(|ch| async move {
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
        self.failover(|ch| async move {
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
        self.failover(|ch| async move {
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
