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
                Err(s) => Err(classify(&addr, &s)),
            }
        })
    }
}

/// What a failed call means for a retry. A status the peer sent has no source error; one made
/// on this side from a transport failure has. Of the latter, only a failure to connect proves
/// the request was never delivered: a connection lost after sending (the peer killed while it
/// proposes a forwarded write) also surfaces as UNAVAILABLE, and retrying that would apply a
/// write twice (found by `berth jepsen run --workload register`).
fn classify(addr: &str, s: &tonic::Status) -> TransportError {
    use std::error::Error as _;
    let text = format!("{addr}: {:?}: {}", s.code(), s.message());
    if s.source().is_none() {
        TransportError::Remote(text)
    } else if berth_client::dial::never_connected(s) {
        TransportError::Unreachable(text)
    } else {
        TransportError::Network(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// Nothing listens: unreachable (safe to retry anything).
    #[tokio::test]
    async fn refused_connection_is_unreachable() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let t = GrpcPeerTransport::default();
        let r = t
            .call(&format!("127.0.0.1:{port}"), PeerRpc::Forward, vec![1])
            .await;
        assert!(matches!(r, Err(TransportError::Unreachable(_))), "{r:?}");
    }

    /// The peer takes the request and the connection dies before an answer: the request may
    /// have been delivered, so this must not read as "unreachable" (which is retried).
    #[tokio::test]
    async fn connection_lost_after_sending_is_a_network_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            // Read the client's preface, headers and message, then drop the connection.
            let mut buf = [0u8; 4096];
            let mut got = 0;
            conn.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
            while got < 60 {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got += n,
                }
            }
            got
        });
        let t = GrpcPeerTransport::default();
        let r = t.call(&addr.to_string(), PeerRpc::Forward, vec![7; 32]).await;
        assert!(server.join().unwrap() > 0, "the request reached the peer");
        assert!(matches!(r, Err(TransportError::Network(_))), "{r:?}");
    }
}
