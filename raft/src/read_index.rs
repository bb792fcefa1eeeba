//! Coalescing of linearizable reads.
//!
//! A read index costs a heartbeat round to a quorum (on the leader) or an RPC to the leader
//! (on a follower). Under many concurrent reads, one round can serve every read that was
//! waiting when the round *started*: a confirmation that begins after a read arrived proves
//! leadership at a point after the read began, which is all linearizability needs. Reads that
//! arrive during a round wait for the next one. etcd's read loop batches the same way.

use crate::error::RaftError;
use futures::future::BoxFuture;
use parking_lot::Mutex;
use std::sync::Arc;
use tokio::sync::oneshot;

/// The read index (a log index to apply up to before reading), or None if nothing was
/// committed yet.
pub(crate) type ReadIndex = Result<Option<u64>, RaftError>;

type Waiter = oneshot::Sender<ReadIndex>;

#[derive(Default)]
pub(crate) struct ReadBatcher {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// A driver task is running rounds.
    driving: bool,
    waiting: Vec<Waiter>,
}

impl ReadBatcher {
    /// Waits for a read index fetched by a round that started after this call.
    /// `fetch` runs one round; it is called by whichever task drives the rounds.
    pub(crate) async fn read_index<F>(self: &Arc<Self>, fetch: F) -> ReadIndex
    where
        F: Fn() -> BoxFuture<'static, ReadIndex> + Send + Sync + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let start_driver = {
            let mut st = self.state.lock();
            st.waiting.push(tx);
            !std::mem::replace(&mut st.driving, true)
        };
        if start_driver {
            tokio::spawn(self.clone().drive(fetch));
        }
        rx.await
            .unwrap_or_else(|_| Err(RaftError::Fatal("read index driver stopped".into())))
    }

    /// Runs rounds until no read is waiting.
    async fn drive<F>(self: Arc<Self>, fetch: F)
    where
        F: Fn() -> BoxFuture<'static, ReadIndex>,
    {
        loop {
            let batch = {
                let mut st = self.state.lock();
                if st.waiting.is_empty() {
                    st.driving = false;
                    return;
                }
                std::mem::take(&mut st.waiting)
            };
            let res = fetch().await;
            for w in batch {
                let _ = w.send(res.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use tokio::sync::Notify;

    /// Reads that arrive while a round is in flight are served by the next round, together.
    #[tokio::test]
    async fn concurrent_reads_share_rounds_started_after_them() {
        let b = Arc::new(ReadBatcher::default());
        let rounds = Arc::new(AtomicU64::new(0));
        let gate = Arc::new(Notify::new());
        let fetch = {
            let rounds = rounds.clone();
            let gate = gate.clone();
            move || -> BoxFuture<'static, ReadIndex> {
                let rounds = rounds.clone();
                let gate = gate.clone();
                Box::pin(async move {
                    let n = rounds.fetch_add(1, Ordering::SeqCst) + 1;
                    gate.notified().await;
                    Ok(Some(n * 100))
                })
            }
        };
        let first = tokio::spawn({
            let b = b.clone();
            let f = fetch.clone();
            async move { b.read_index(f).await }
        });
        // Round 1 is in flight once the counter moved.
        while rounds.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        let later: Vec<_> = (0..10)
            .map(|_| {
                let b = b.clone();
                let f = fetch.clone();
                tokio::spawn(async move { b.read_index(f).await })
            })
            .collect();
        // Let the ten register before round 1 ends.
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
        gate.notify_one();
        assert_eq!(first.await.unwrap().unwrap(), Some(100));
        while rounds.load(Ordering::SeqCst) < 2 {
            tokio::task::yield_now().await;
        }
        gate.notify_one();
        for h in later {
            assert_eq!(
                h.await.unwrap().unwrap(),
                Some(200),
                "served by the round after they arrived"
            );
        }
        assert_eq!(rounds.load(Ordering::SeqCst), 2, "ten reads, one shared round");
    }
}
