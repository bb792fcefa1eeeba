//! The path to node agents: [`connect_agent`] dials one agent's `NodeAgent` service (the API
//! server does, for logs, exec and image import), and [`ProxyClient`] calls the API server's
//! `Proxy` service, which finds the pod's node and streams through to its agent (the CLI does).
//! The size limits of that path live here, so the three ends agree on them.

use crate::etcd::ClientError;
use crate::servers::{Call, Servers};
use berth_proto::agentv1::{
    self, node_agent_client::NodeAgentClient, proxy_client::ProxyClient as ProxyRpc, ExecRequest,
    ExecResponse, ImageChunk, LogsRequest,
};
use futures::Stream;
use std::path::Path;
use std::time::Duration;
use tonic::transport::Channel;

/// Archive bytes per `ImageChunk`.
pub const IMAGE_CHUNK_BYTES: usize = 1 << 20;
/// Largest message an agent or the Proxy accepts on the image path (a chunk and its header).
pub const IMAGE_MESSAGE_BYTES_MAX: usize = IMAGE_CHUNK_BYTES + 64 * 1024;
/// Largest archive an agent accepts (spooled to its disk before import).
pub const IMAGE_ARCHIVE_BYTES_MAX: u64 = 4 << 30;
/// Chunks queued per node while the Proxy sends one archive to several agents: the slowest
/// agent paces the upload, and memory stays at this many chunks per node.
pub const IMAGE_FANOUT_QUEUE_LEN: usize = 4;
/// Output kept per stream (stdout, stderr) of one exec.
pub const EXEC_OUTPUT_BYTES_MAX: usize = 4 << 20;
/// Largest ExecResponse: both streams at their limit, and framing.
pub const EXEC_RESPONSE_BYTES_MAX: usize = 2 * EXEC_OUTPUT_BYTES_MAX + 64 * 1024;
/// How long an exec may run before the agent kills it.
pub const EXEC_TIMEOUT_MS: u64 = 5 * 60 * 1000;
/// The port an agent listens on unless told otherwise (the kubelet's).
pub const AGENT_PORT_DEFAULT: u16 = 10250;

/// A connected client of the agent at `addr` (`host:port`); an unreachable agent is
/// `ClientError::Unavailable`. `request_timeout` bounds unary calls (exec is given
/// [`EXEC_TIMEOUT_MS`] on top).
pub async fn connect_agent(
    addr: &str,
    request_timeout: Duration,
) -> Result<NodeAgentClient<Channel>, ClientError> {
    let timeout = request_timeout + Duration::from_millis(EXEC_TIMEOUT_MS);
    let ch = crate::dial::endpoint(addr, timeout)?
        .connect()
        .await
        .map_err(|e| ClientError::Unavailable(format!("agent at {addr}: {e}")))?;
    Ok(NodeAgentClient::new(ch)
        .max_decoding_message_size(EXEC_RESPONSE_BYTES_MAX)
        .max_encoding_message_size(IMAGE_MESSAGE_BYTES_MAX))
}

/// The archive at `file` as chunks, the first one carrying `node` and `tag`.
pub fn image_chunks(
    file: &Path,
    node: &str,
    tag: &str,
) -> Result<impl Stream<Item = ImageChunk> + Send + 'static, ClientError> {
    use std::io::Read;
    let mut f = std::fs::File::open(file).map_err(|e| ClientError::Invalid {
        message: format!("{}: {e}", file.display()),
    })?;
    let (mut node, mut tag) = (node.to_string(), tag.to_string());
    let mut done = false;
    Ok(futures::stream::iter(std::iter::from_fn(move || {
        if done {
            return None;
        }
        let mut data = vec![0u8; IMAGE_CHUNK_BYTES];
        let mut n = 0;
        while n < data.len() {
            match f.read(&mut data[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                // Cut short: the agent finds the archive incomplete and says so.
                Err(_) => break,
            }
        }
        data.truncate(n);
        done = n < IMAGE_CHUNK_BYTES;
        if n == 0 && node.is_empty() && tag.is_empty() {
            return None;
        }
        Some(ImageChunk {
            node: std::mem::take(&mut node),
            tag: std::mem::take(&mut tag),
            data,
        })
    })))
}

/// A client of the API server's `Proxy` service (logs, exec, image import by pod or node).
pub struct ProxyClient {
    servers: Servers,
}

impl ProxyClient {
    /// `request_timeout` bounds the start of a call; exec waits [`EXEC_TIMEOUT_MS`] longer.
    pub fn new(addrs: &[String], request_timeout: Duration) -> Result<Self, ClientError> {
        let timeout = request_timeout + Duration::from_millis(EXEC_TIMEOUT_MS);
        Ok(ProxyClient {
            servers: Servers::new(addrs, timeout)?,
        })
    }

    fn rpc(ch: Channel) -> ProxyRpc<Channel> {
        ProxyRpc::new(ch)
            .max_decoding_message_size(EXEC_RESPONSE_BYTES_MAX)
            .max_encoding_message_size(IMAGE_MESSAGE_BYTES_MAX)
    }

    /// A container's log as a stream of byte chunks (ends with the log, or with the instance
    /// when following).
    pub async fn logs(
        &self,
        req: LogsRequest,
    ) -> Result<impl Stream<Item = Result<Vec<u8>, ClientError>>, ClientError> {
        use futures::StreamExt;
        // Read-only, yet failed over like a write (only when never delivered): a server's
        // UNAVAILABLE here means the pod's agent is unreachable, which another server will not
        // change, and the caller should read that, not "cannot connect to the server".
        let stream = self
            .servers
            .failover(Call::Write, |ch| {
                let req = req.clone();
                async move { Self::rpc(ch).pod_logs(req).await.map(|r| r.into_inner()) }
            })
            .await?;
        Ok(stream.map(|c| c.map(|c| c.data).map_err(ClientError::from)))
    }

    /// Runs a command in a pod's container (sent at most once).
    pub async fn exec(&self, req: ExecRequest) -> Result<ExecResponse, ClientError> {
        self.servers
            .failover(Call::Write, |ch| {
                let req = req.clone();
                async move { Self::rpc(ch).pod_exec(req).await.map(|r| r.into_inner()) }
            })
            .await
    }

    /// Sends the archive at `file` to `node`'s agent (empty: every Ready node); one answer per
    /// node.
    pub async fn import_image(
        &self,
        file: &Path,
        node: &str,
        tag: &str,
    ) -> Result<Vec<agentv1::NodeImport>, ClientError> {
        // The file must open before anything is sent.
        image_chunks(file, node, tag).map(drop)?;
        self.servers
            .failover(Call::Write, |ch| {
                let chunks = image_chunks(file, node, tag);
                async move {
                    let chunks = chunks.map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
                    Self::rpc(ch)
                        .import_image(chunks)
                        .await
                        .map(|r| r.into_inner().nodes)
                }
            })
            .await
    }
}
