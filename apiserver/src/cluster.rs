//! etcd-v3 `Cluster` service: membership as etcd clients see it. Addresses are `host:port`
//! inside Berth and `http://host:port` URLs on this API, as etcdctl expects.

use crate::error::ApiError;
use crate::Shared;
use berth_proto::etcdserverpb as pb;
use berth_proto::etcdserverpb::cluster_server::Cluster;
use berth_raft::{MemberRole, RaftStatus};
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct ClusterService {
    pub(crate) shared: Arc<Shared>,
}

pub(crate) fn url(addr: &str) -> Vec<String> {
    if addr.is_empty() {
        Vec::new()
    } else {
        vec![format!("http://{addr}")]
    }
}

/// `http://host:port` (or bare `host:port`) to `host:port`; anything else is not a peer URL.
pub(crate) fn addr_of_url(u: &str) -> Result<String, ApiError> {
    let rest = u
        .strip_prefix("http://")
        .or_else(|| u.strip_prefix("https://"))
        .unwrap_or(u);
    let rest = rest.trim_end_matches('/');
    match rest.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(rest.to_string()),
        _ => Err(ApiError::MemberBadUrls),
    }
}

pub(crate) fn members_pb(status: &RaftStatus) -> Vec<pb::Member> {
    status
        .members
        .iter()
        .map(|m| pb::Member {
            id: m.id,
            name: m.member.name.clone(),
            peer_ur_ls: url(&m.member.peer_addr),
            client_ur_ls: url(&m.member.client_addr),
            is_learner: m.role == MemberRole::Learner,
        })
        .collect()
}

impl ClusterService {
    fn members(&self) -> (pb::ResponseHeader, Vec<pb::Member>) {
        let status = self.shared.raft.status();
        (
            self.shared.header(self.shared.raft.store().revision()),
            members_pb(&status),
        )
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(
        &self,
        req: Request<pb::MemberAddRequest>,
    ) -> Result<Response<pb::MemberAddResponse>, Status> {
        let req = req.into_inner();
        let peer = match req.peer_ur_ls.as_slice() {
            [one] => addr_of_url(one)?,
            _ => return Err(ApiError::MemberBadUrls.into()),
        };
        // etcd's MemberAdd carries no name: the member is known by its peer address (its id
        // derives from it) until a `berth server --join` with that --peer-addr starts.
        let added = self
            .shared
            .raft
            .add_unstarted_member(peer, req.is_learner)
            .await
            .map_err(ApiError::from)?;
        let (header, members) = self.members();
        let id = berth_raft::member_id(&added.peer_addr);
        let member = members.iter().find(|m| m.id == id).cloned();
        Ok(Response::new(pb::MemberAddResponse {
            header: Some(header),
            member,
            members,
        }))
    }

    async fn member_remove(
        &self,
        req: Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberRemoveResponse>, Status> {
        self.shared
            .raft
            .remove_member(req.into_inner().id)
            .await
            .map_err(ApiError::from)?;
        let (header, members) = self.members();
        Ok(Response::new(pb::MemberRemoveResponse {
            header: Some(header),
            members,
        }))
    }

    async fn member_update(
        &self,
        _req: Request<pb::MemberUpdateRequest>,
    ) -> Result<Response<pb::MemberUpdateResponse>, Status> {
        Err(
            ApiError::Unsupported("MemberUpdate (remove the member and join it again with its new address)")
                .into(),
        )
    }

    async fn member_list(
        &self,
        req: Request<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        if req.into_inner().linearizable {
            self.shared
                .raft
                .read_linearizable()
                .await
                .map_err(ApiError::from)?;
        }
        let (header, members) = self.members();
        Ok(Response::new(pb::MemberListResponse {
            header: Some(header),
            members,
        }))
    }

    async fn member_promote(
        &self,
        req: Request<pb::MemberPromoteRequest>,
    ) -> Result<Response<pb::MemberPromoteResponse>, Status> {
        self.shared
            .raft
            .promote_member(req.into_inner().id)
            .await
            .map_err(ApiError::from)?;
        let (header, members) = self.members();
        Ok(Response::new(pb::MemberPromoteResponse {
            header: Some(header),
            members,
        }))
    }
}
