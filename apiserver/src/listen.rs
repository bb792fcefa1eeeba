//! Every listening socket in Berth is bound here, so that TLS (and any other listener policy)
//! is added in one place.

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
pub fn incoming(listener: TcpListener) -> tokio_stream::wrappers::TcpListenerStream {
    tokio_stream::wrappers::TcpListenerStream::new(listener)
}
