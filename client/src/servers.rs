//! A list of servers with the one failover rule both clients follow: a call goes to the last
//! server that answered and moves to the next only when a server is unreachable, never after
//! a definite answer (which could repeat a write).

use crate::dial;
use crate::etcd::{is_unreachable, ClientError};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tonic::transport::Channel;
use tonic::Status;

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

    /// Runs `call` against the servers in turn, starting with the last one that answered.
    /// Every server unreachable: `ClientError::Unavailable` with the last reason.
    pub(crate) async fn failover<R, F, Fut>(&self, mut call: F) -> Result<R, ClientError>
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
                Err(s) if is_unreachable(&s) => last = Some(s),
                Err(s) => return Err(s.into()),
            }
        }
        Err(ClientError::Unavailable(
            last.map_or_else(String::new, |s| s.message().to_string()),
        ))
    }
}
