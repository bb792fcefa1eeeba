//! The one table from every error the control plane can return to a gRPC status.
//!
//! etcd client libraries match on the code *and* the message text (clientv3's `rpctypes`), so
//! the messages here are etcd's, word for word, wherever etcd has an equivalent.

use berth_raft::{ApplyError, RaftError};
use berth_store::StoreError;
use tonic::{Code, Status};

/// Errors of the API server itself (bad input it rejects before anything is proposed).
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("request is too large")]
    RequestTooLarge,
    #[error("too many operations in txn request")]
    TooManyOps,
    #[error("key is not provided")]
    EmptyKey,
    #[error("{field}: {reason}")]
    InvalidArgument { field: &'static str, reason: String },
    #[error("member not found")]
    MemberNotFound,
    #[error("given member URLs are invalid")]
    MemberBadUrls,
    #[error("not supported: {0}")]
    Unsupported(&'static str),
    /// Resources: `pods "x" not found`.
    #[error("{resource} \"{name}\" not found")]
    NotFound { resource: String, name: String },
    /// Resources: `pods "x" already exists`.
    #[error("{resource} \"{name}\" already exists")]
    AlreadyExists { resource: String, name: String },
    /// Resources: a resourceVersion compare-and-swap lost (Kubernetes' 409 Conflict).
    #[error("Operation cannot be fulfilled on {resource} \"{name}\": the object has been modified; please apply your changes to the latest version and try again")]
    Conflict { resource: String, name: String },
    /// Resources: validation failed; the message names every field path.
    #[error("{0}")]
    Invalid(String),
    /// Resources: a delete precondition (uid, resourceVersion) does not hold.
    #[error("Precondition failed: {0}")]
    Precondition(String),
    /// Resources: the write is refused by an admission rule (terminating namespace, quota
    /// exceeded, LimitRange violated): Kubernetes' 403 Forbidden, gRPC PERMISSION_DENIED.
    #[error("{0}")]
    Forbidden(String),
    /// Resources: a watch or list from a compacted revision (Kubernetes' 410 Expired).
    #[error("too old resource version: {requested} ({compacted})")]
    Expired { requested: i64, compacted: i64 },
    /// Resources: the client did not read its watch stream fast enough.
    #[error("watch client too slow: {0} events queued and none read; restart the watch")]
    SlowClient(usize),
    /// Resources: a stored value that does not decode as its kind.
    #[error("stored object {key} does not decode: {reason}")]
    Corrupt { key: String, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error(transparent)]
    Raft(#[from] RaftError),
}

fn etcd(code: Code, msg: &str) -> Status {
    Status::new(code, format!("etcdserver: {msg}"))
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        match e {
            ApiError::RequestTooLarge => etcd(Code::InvalidArgument, "request is too large"),
            ApiError::TooManyOps => etcd(Code::InvalidArgument, "too many operations in txn request"),
            ApiError::EmptyKey => etcd(Code::InvalidArgument, "key is not provided"),
            ApiError::InvalidArgument { field, reason } => {
                Status::invalid_argument(format!("invalid {field}: {reason}"))
            }
            ApiError::MemberNotFound => etcd(Code::NotFound, "member not found"),
            ApiError::MemberBadUrls => etcd(Code::InvalidArgument, "given member URLs are invalid"),
            ApiError::Unsupported(what) => Status::unimplemented(format!("berth: {what} is not supported")),
            ApiError::NotFound { .. } => Status::not_found(e.to_string()),
            ApiError::AlreadyExists { .. } => Status::already_exists(e.to_string()),
            ApiError::Conflict { .. } => Status::aborted(e.to_string()),
            ApiError::Invalid(_) => Status::invalid_argument(e.to_string()),
            ApiError::Precondition(_) => Status::failed_precondition(e.to_string()),
            ApiError::Forbidden(_) => Status::permission_denied(e.to_string()),
            ApiError::Expired { .. } => Status::out_of_range(e.to_string()),
            ApiError::SlowClient(_) => Status::resource_exhausted(e.to_string()),
            ApiError::Corrupt { .. } => Status::data_loss(e.to_string()),
            ApiError::Store(e) => store_status(&e),
            ApiError::Apply(e) => apply_status(&e),
            ApiError::Raft(e) => raft_status(&e),
        }
    }
}

/// Store errors and their serializable mirror (what a command applied on another member
/// reports) share one set of rows.
fn store_status(e: &StoreError) -> Status {
    apply_status(&ApplyError::from(e))
}

fn apply_status(e: &ApplyError) -> Status {
    match e {
        ApplyError::Compacted { .. } => etcd(Code::OutOfRange, "mvcc: required revision has been compacted"),
        ApplyError::FutureRevision => etcd(Code::OutOfRange, "mvcc: required revision is a future revision"),
        ApplyError::LeaseNotFound => etcd(Code::NotFound, "requested lease not found"),
        ApplyError::LeaseExists => etcd(Code::FailedPrecondition, "lease already exists"),
        ApplyError::KeyNotFound => etcd(Code::InvalidArgument, "key not found"),
        ApplyError::EmptyKey => etcd(Code::InvalidArgument, "key is not provided"),
        ApplyError::DuplicateKey => etcd(Code::InvalidArgument, "duplicate key given in txn request"),
        ApplyError::InvalidSnapshot(m) => Status::invalid_argument(format!("invalid snapshot: {m}")),
        ApplyError::Rocks(_) | ApplyError::Corrupt(_) => etcd(Code::DataLoss, "corrupt cluster"),
    }
}

fn raft_status(e: &RaftError) -> Status {
    match e {
        RaftError::NotLeader { .. } => etcd(Code::FailedPrecondition, "not leader"),
        RaftError::NoLeader => etcd(Code::Unavailable, "no leader"),
        RaftError::MembershipChangeInProgress(m) => Status::unavailable(format!(
            "berth: another membership change is in progress ({m}); retry"
        )),
        RaftError::Unavailable(_) => etcd(Code::Unavailable, "unhealthy cluster"),
        RaftError::Timeout(_) => etcd(Code::Unavailable, "request timed out"),
        RaftError::MemberNotFound(_) => etcd(Code::NotFound, "member not found"),
        RaftError::MemberExists { .. } => etcd(Code::FailedPrecondition, "member ID already exist"),
        RaftError::LeaseNotFound => etcd(Code::NotFound, "requested lease not found"),
        RaftError::ClusterIdMismatch { local, other } => Status::failed_precondition(format!(
            "berth: cluster id mismatch: this member belongs to {local:#x}, the request to {other:#x}"
        )),
        RaftError::Config(m) => Status::invalid_argument(format!("berth: {m}")),
        RaftError::Transport(_) | RaftError::Protocol(_) => etcd(Code::Unavailable, "leader changed"),
        RaftError::Storage(_) | RaftError::StateBehind(_) => etcd(Code::DataLoss, "corrupt cluster"),
        RaftError::Fatal(_) => etcd(Code::Unavailable, "server stopped"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// etcd client libraries recognise errors by code and exact text; pin the common ones.
    #[test]
    fn etcd_errors_keep_their_code_and_text() {
        let cases: Vec<(ApiError, Code, &str)> = vec![
            (
                ApiError::RequestTooLarge,
                Code::InvalidArgument,
                "etcdserver: request is too large",
            ),
            (
                StoreError::Compacted { compact_revision: 5 }.into(),
                Code::OutOfRange,
                "etcdserver: mvcc: required revision has been compacted",
            ),
            (
                ApplyError::LeaseNotFound.into(),
                Code::NotFound,
                "etcdserver: requested lease not found",
            ),
            (
                RaftError::NoLeader.into(),
                Code::Unavailable,
                "etcdserver: no leader",
            ),
            (
                ApiError::TooManyOps,
                Code::InvalidArgument,
                "etcdserver: too many operations in txn request",
            ),
            (
                ApiError::EmptyKey,
                Code::InvalidArgument,
                "etcdserver: key is not provided",
            ),
        ];
        for (err, code, msg) in cases {
            let s = Status::from(err);
            assert_eq!((s.code(), s.message()), (code, msg));
        }
    }

    /// Kubernetes clients show these messages as they are; pin their shape.
    #[test]
    fn resource_errors_use_kubernetes_messages() {
        let cases: Vec<(ApiError, Code, &str)> = vec![
            (
                ApiError::NotFound {
                    resource: "pods".into(),
                    name: "x".into(),
                },
                Code::NotFound,
                "pods \"x\" not found",
            ),
            (
                ApiError::AlreadyExists {
                    resource: "pods".into(),
                    name: "x".into(),
                },
                Code::AlreadyExists,
                "pods \"x\" already exists",
            ),
            (
                ApiError::Conflict {
                    resource: "pods".into(),
                    name: "x".into(),
                },
                Code::Aborted,
                "Operation cannot be fulfilled on pods \"x\": the object has been modified; \
                 please apply your changes to the latest version and try again",
            ),
            (
                ApiError::Expired {
                    requested: 3,
                    compacted: 7,
                },
                Code::OutOfRange,
                "too old resource version: 3 (7)",
            ),
        ];
        for (err, code, msg) in cases {
            let s = Status::from(err);
            assert_eq!((s.code(), s.message()), (code, msg));
        }
    }
}
