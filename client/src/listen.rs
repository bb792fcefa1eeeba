//! Every listening socket in Berth is bound here (the API server's and the node agent's), next
//! to [`crate::dial`] where every outbound channel is built, so that TLS (and any other
//! listener policy) is added in one place for both ends.

use std::net::SocketAddr;
use tokio::net::TcpListener;

#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {flag} {addr}: {reason}")]
pub struct ListenError {
    pub flag: &'static str,
    pub addr: String,
    pub reason: String,
}

/// Binds `addr` (`host:port`); `flag` names the setting in errors, e.g. `--client-addr`.
pub async fn bind(flag: &'static str, addr: &str) -> Result<TcpListener, ListenError> {
    let err = |reason: String| ListenError {
        flag,
        addr: addr.to_string(),
        reason,
    };
    let sock: SocketAddr = tokio::net::lookup_host(addr)
        .await
        .map_err(|e| err(e.to_string()))?
        .next()
        .ok_or_else(|| err("resolves to no address".into()))?;
    TcpListener::bind(sock).await.map_err(|e| err(e.to_string()))
}

/// The incoming-connection stream tonic serves from, with Berth's socket options.
///
/// Nagle's algorithm is turned off on every accepted connection: with small gRPC frames it
/// interacts with delayed ACKs and stalls responses for ~40 ms. (tonic's own `tcp_nodelay`
/// applies only to listeners it binds itself, not to an incoming stream handed to it.)
pub fn incoming(
    listener: TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    tokio_stream::wrappers::TcpListenerStream::new(listener).map(|conn| {
        let conn = conn?;
        conn.set_nodelay(true)?;
        Ok(conn)
    })
}
