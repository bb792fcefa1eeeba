//! A list of servers with the one failover rule both clients follow: a call goes to the last
//! server that answered and moves to the next only when repeating it there is harmless.
//!
//! - Never after a definite answer of a server.
//! - A call that changes something ([`Call::Write`]: put, txn, delete, lease grant/revoke,
//!   member remove, the `Resources` writes) moves on only when the connection could not be
//!   made, so the request was never delivered. A connection lost after sending, a timeout, or
//!   a server saying the outcome is unknown ends it with [`ClientError::Indeterminate`]: the
//!   first server may have applied it, and sending it again could apply it twice (JEPSEN.md,
//!   bug 3).
//! - A call that changes nothing ([`Call::Idempotent`]: reads, lists, status, member list,
//!   watch creation, lease keep-alive) also moves on when a server did not answer in time.

use crate::dial;
use crate::etcd::{is_unreachable, ClientError};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tonic::transport::Channel;
use tonic::Status;

/// Whether a call may be repeated on another server after its outcome became unknown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Call {
    /// Changes nothing, or the same again: safe to repeat.
    Idempotent,
    /// Changes state: sent at most once unless it certainly never reached a server.
    Write,
}

/// What to do after a call of kind `call` failed with `s`: `None` = try the next server,
/// `Some(e)` = return `e` to the caller. The crate's one failover rule.
pub(crate) fn after_failure(call: Call, s: Status) -> Option<ClientError> {
    if dial::never_connected(&s) {
        return None;
    }
    match call {
        Call::Idempotent if is_unreachable(&s) => None,
        Call::Write if outcome_unknown(&s) => Some(ClientError::Indeterminate(describe(&s))),
        _ => Some(s.into()),
    }
}

/// Whether a failed write may still have been applied: the failure was made on this side after
/// connecting (connection lost, client timeout: tonic gives such a status a source error), or
/// the server said so (etcd's "request timed out" / "leader changed", which Berth also sends
/// when a forwarded write got no answer).
fn outcome_unknown(s: &Status) -> bool {
    use std::error::Error as _;
    s.source().is_some()
        || matches!(
            s.message(),
            "etcdserver: request timed out" | "etcdserver: leader changed"
        )
}

fn describe(s: &Status) -> String {
    format!("{:?}: {}", s.code(), s.message())
}

pub(crate) struct Servers {
    addrs: Vec<String>,
    channels: Vec<Channel>,
    current: AtomicUsize,
}

impl Servers {
    pub(crate) fn new(addrs: &[String], request_timeout: Duration) -> Result<Servers, ClientError> {
        if addrs.is_empty() {
            return Err(ClientError::NoEndpoints);
        }
        let channels = addrs
            .iter()
            .map(|a| dial::lazy_channel(a, request_timeout))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Servers {
            addrs: addrs.to_vec(),
            channels,
            current: AtomicUsize::new(0),
        })
    }

    pub(crate) fn addrs(&self) -> &[String] {
        &self.addrs
    }

    pub(crate) fn len(&self) -> usize {
        self.channels.len()
    }

    pub(crate) fn channel(&self, idx: usize) -> Channel {
        self.channels[idx % self.channels.len()].clone()
    }

    /// The index of the server that answered last.
    pub(crate) fn current(&self) -> usize {
        self.current.load(Ordering::Relaxed)
    }

    pub(crate) fn answered(&self, idx: usize) {
        self.current.store(idx % self.channels.len(), Ordering::Relaxed);
    }

    /// Runs `call` against the servers in turn, starting with the last one that answered, as
    /// [`after_failure`] allows for its `kind`. Every server unreachable:
    /// `ClientError::Unavailable` with the last reason.
    pub(crate) async fn failover<R, F, Fut>(&self, kind: Call, mut call: F) -> Result<R, ClientError>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<R, Status>>,
    {
        let start = self.current();
        let mut last = None;
        for i in 0..self.len() {
            let idx = (start + i) % self.len();
            match call(self.channel(idx)).await {
                Ok(v) => {
                    self.answered(idx);
                    return Ok(v);
                }
                Err(s) => {
                    let reason = s.message().to_string();
                    match after_failure(kind, s) {
                        None => last = Some(reason),
                        Some(e) => return Err(e),
                    }
                }
            }
        }
        Err(ClientError::Unavailable(last.unwrap_or_default()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::etcd::EtcdClient;
    use std::io::Read;
    use std::net::TcpListener;

    const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

    /// A real TCP server that takes one connection, reads the client's request (HTTP/2
    /// preface, headers, message) and drops the connection without answering: the request
    /// was delivered, its outcome unknown to the client. Returns its address and how many
    /// bytes it read.
    fn take_request_then_drop() -> (String, std::thread::JoinHandle<usize>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut buf = [0u8; 4096];
            let mut got = 0;
            conn.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
            while got < 100 {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got += n,
                }
            }
            got
        });
        (addr, server)
    }

    /// A listener that only records whether anyone connected.
    fn bystander() -> (String, TcpListener) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        (listener.local_addr().unwrap().to_string(), listener)
    }

    fn connected(l: &TcpListener) -> bool {
        l.accept().is_ok()
    }

    /// An address nothing listens on (connection refused).
    fn refused() -> String {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    }

    /// JEPSEN.md bug 3: a put the first server received and then dropped is not sent to the
    /// next server; the caller learns its outcome is unknown.
    #[tokio::test]
    async fn a_delivered_write_is_not_resent_and_is_indeterminate() {
        let (first, server) = take_request_then_drop();
        let (second, next) = bystander();
        let c = EtcdClient::new(&[first, second], REQUEST_TIMEOUT).unwrap();
        let r = c.put(b"k", b"v").await;
        assert!(server.join().unwrap() > 0, "the request reached the first server");
        assert!(matches!(r, Err(ClientError::Indeterminate(_))), "{r:?}");
        assert!(!connected(&next), "the write was sent again to the next server");
    }

    /// A write that could not connect was never delivered: it moves on to the next server.
    #[tokio::test]
    async fn a_write_that_never_connected_moves_to_the_next_server() {
        let (second, server) = take_request_then_drop();
        let c = EtcdClient::new(&[refused(), second], REQUEST_TIMEOUT).unwrap();
        let r = c.put(b"k", b"v").await;
        assert!(
            server.join().unwrap() > 0,
            "the write went on to the second server"
        );
        assert!(matches!(r, Err(ClientError::Indeterminate(_))), "{r:?}");
    }

    /// A read changes nothing: after the first server dropped it, it is asked of the next.
    #[tokio::test]
    async fn a_read_fails_over_after_a_lost_connection() {
        let (first, s1) = take_request_then_drop();
        let (second, s2) = take_request_then_drop();
        let c = EtcdClient::new(&[first, second], REQUEST_TIMEOUT).unwrap();
        let r = c.range(Default::default()).await;
        assert!(
            s1.join().unwrap() > 0 && s2.join().unwrap() > 0,
            "both servers were asked"
        );
        assert!(matches!(r, Err(ClientError::Unavailable(_))), "{r:?}");
    }

    #[test]
    fn server_answers_stay_definite_for_writes() {
        let r = after_failure(Call::Write, Status::not_found("x"));
        assert!(matches!(r, Some(ClientError::NotFound(_))), "{r:?}");
        let r = after_failure(Call::Write, Status::unavailable("etcdserver: no leader"));
        assert!(matches!(r, Some(ClientError::Status(_))), "{r:?}");
        let r = after_failure(Call::Write, Status::unavailable("etcdserver: request timed out"));
        assert!(matches!(r, Some(ClientError::Indeterminate(_))), "{r:?}");
        let r = after_failure(
            Call::Idempotent,
            Status::unavailable("etcdserver: request timed out"),
        );
        assert!(matches!(r, Some(ClientError::Status(_))), "{r:?}");
    }
}
