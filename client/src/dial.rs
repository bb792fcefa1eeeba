//! Every outbound gRPC connection in Berth is built here, so that TLS (and any other
//! transport policy) is added in one place.

use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// Time to establish a TCP connection before giving up on an address.
pub const CONNECT_TIMEOUT_MS: u64 = 1_000;
/// HTTP/2 keep-alive pings detect a dead peer behind a silent connection.
pub const KEEPALIVE_INTERVAL_MS: u64 = 2_000;

#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("invalid address {addr:?}: {reason}")]
    InvalidAddress { addr: String, reason: String },
}

/// `host:port` (or a URL) to an endpoint with Berth's connection settings.
pub fn endpoint(addr: &str, request_timeout: Duration) -> Result<Endpoint, DialError> {
    let uri = if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    };
    let ep = Endpoint::from_shared(uri).map_err(|e| DialError::InvalidAddress {
        addr: addr.to_string(),
        reason: e.to_string(),
    })?;
    Ok(ep
        .connect_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS))
        .timeout(request_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_millis(KEEPALIVE_INTERVAL_MS))
        .keep_alive_while_idle(true))
}

/// A channel that connects on first use and reconnects by itself after failures.
pub fn lazy_channel(addr: &str, request_timeout: Duration) -> Result<Channel, DialError> {
    Ok(endpoint(addr, request_timeout)?.connect_lazy())
}

/// Whether a failed call's error chain says the connection could not be made at all, so the
/// request was certainly never delivered (a status the server sent has no such chain). Both
/// the clients' failover and the Raft transport tell "never delivered" from "maybe delivered"
/// with this.
pub fn never_connected(s: &tonic::Status) -> bool {
    use std::error::Error as _;
    // A status a server sent has no source, whatever its message says (the Proxy service
    // reports an agent it could not reach with "tcp connect" in its message).
    if s.source().is_none() {
        return false;
    }
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(s);
    while let Some(e) = next {
        let text = e.to_string();
        if text.contains("tcp connect") || text.contains("dns error") {
            return true;
        }
        next = e.source();
    }
    false
}
