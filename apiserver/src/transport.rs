//! The outbound side of the Raft transport: calls other members' `Peer` service over gRPC.
//! Channels are dialed through [`berth_client::dial`], the one place where TLS will go.

use berth_proto::raftpb::peer_client::PeerClient;
use berth_proto::raftpb::RaftMessage;
use berth_raft::{PeerRpc, PeerTransport, TransportError};
use futures::future::BoxFuture;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::time::Duration;
use tonic::transport::Channel;

/// Largest Raft message either side accepts (snapshots travel in one message for now).
pub const PEER_MESSAGE_BYTES_MAX: usize = 1 << 30;
/// Upper bound for one peer call; Raft retries on its own schedule.
pub const PEER_CALL_TIMEOUT_MS: u64 = 10_000;

#[derive(Default)]
pub struct GrpcPeerTransport {
    channels: Mutex<HashMap<String, Channel>>,
}

impl GrpcPeerTransport {
    fn channel(&self, addr: &str) -> Result<Channel, TransportError> {
        let mut channels = self.channels.lock();
        if let Some(ch) = channels.get(addr) {
            return Ok(ch.clone());
        }
        let ch = berth_client::dial::lazy_channel(addr, Duration::from_millis(PEER_CALL_TIMEOUT_MS))
            .map_err(|e| TransportError::Unreachable(format!("{addr}: {e}")))?;
        channels.insert(addr.to_string(), ch.clone());
        Ok(ch)
    }
}

impl PeerTransport for GrpcPeerTransport {
    fn call(
        &self,
        peer_addr: &str,
        rpc: PeerRpc,
        payload: Vec<u8>,
    ) -> BoxFuture<'static, Result<Vec<u8>, TransportError>> {
        let channel = self.channel(peer_addr);
        let addr = peer_addr.to_string();
        Box::pin(async move {
            let mut client = PeerClient::new(channel?)
                .max_decoding_message_size(PEER_MESSAGE_BYTES_MAX)
                .max_encoding_message_size(PEER_MESSAGE_BYTES_MAX);
            let req = tonic::Request::new(RaftMessage { payload });
            let resp = match rpc {
                PeerRpc::AppendEntries => client.append_entries(req).await,
                PeerRpc::Vote => client.vote(req).await,
                PeerRpc::InstallSnapshot => client.install_snapshot(req).await,
                PeerRpc::Forward => client.forward(req).await,
                PeerRpc::ReadIndex => client.read_index(req).await,
                PeerRpc::Join => client.join(req).await,
                PeerRpc::Members => client.members(req).await,
            };
            match resp {
                Ok(r) => Ok(r.into_inner().payload),
                Err(s) if s.code() == tonic::Code::Unavailable => {
                    Err(TransportError::Unreachable(format!("{addr}: {}", s.message())))
                }
                Err(s) => Err(TransportError::Remote(format!(
                    "{addr}: {:?}: {}",
                    s.code(),
                    s.message()
                ))),
            }
        })
    }
}
