//! Batching of proposals.
//!
//! openraft 0.9 appends one log entry per client write and, in practice, waits for each
//! append's flush before it runs the next append, so one entry costs one WAL sync. Commands
//! proposed concurrently through a member are therefore gathered into one entry
//! ([`crate::Proposal`]): while a batch is on its way, new commands queue up and go together in
//! the next one. On a follower a batch is also one forwarding call to the leader instead of
//! one per command. Throughput then grows with concurrency instead of being capped at one
//! command per sync.

use crate::error::RaftError;
use crate::types::ApplyResult;
use berth_store::Command;
use futures::future::BoxFuture;
use parking_lot::Mutex;
use std::sync::Arc;
use tokio::sync::{oneshot, Semaphore};

/// Most commands in one log entry.
pub const BATCH_COMMANDS_MAX: usize = 1024;
/// Batches on their way at once per member; more queue up and grow the next batch.
pub const BATCHES_IN_FLIGHT_MAX: usize = 2;

/// The results of one batch, one per command in order, or why none was applied.
pub(crate) type BatchResult = Result<Vec<ApplyResult>, RaftError>;

type Reply = oneshot::Sender<Result<ApplyResult, RaftError>>;

pub(crate) struct ProposalBatcher {
    queue: Mutex<Queue>,
    in_flight: Arc<Semaphore>,
}

#[derive(Default)]
struct Queue {
    driving: bool,
    waiting: Vec<(Command, Reply)>,
}

impl Default for ProposalBatcher {
    fn default() -> Self {
        ProposalBatcher {
            queue: Mutex::default(),
            in_flight: Arc::new(Semaphore::new(BATCHES_IN_FLIGHT_MAX)),
        }
    }
}

impl ProposalBatcher {
    /// Proposes `cmd` in the next batch and waits for its own result. `send` commits one
    /// batch; it is called by whichever task drives the batches.
    pub(crate) async fn propose<F>(self: &Arc<Self>, cmd: Command, send: F) -> Result<ApplyResult, RaftError>
    where
        F: Fn(Vec<Command>) -> BoxFuture<'static, BatchResult> + Send + Sync + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let start_driver = {
            let mut q = self.queue.lock();
            q.waiting.push((cmd, tx));
            !std::mem::replace(&mut q.driving, true)
        };
        if start_driver {
            tokio::spawn(self.clone().drive(send));
        }
        rx.await
            .unwrap_or_else(|_| Err(RaftError::Fatal("proposal batcher stopped".into())))
    }

    /// Sends batches while commands are waiting, at most [`BATCHES_IN_FLIGHT_MAX`] at once.
    async fn drive<F>(self: Arc<Self>, send: F)
    where
        F: Fn(Vec<Command>) -> BoxFuture<'static, BatchResult>,
    {
        loop {
            let Ok(permit) = self.in_flight.clone().acquire_owned().await else {
                return;
            };
            let batch = {
                let mut q = self.queue.lock();
                if q.waiting.is_empty() {
                    q.driving = false;
                    return;
                }
                let n = q.waiting.len().min(BATCH_COMMANDS_MAX);
                q.waiting.drain(..n).collect::<Vec<_>>()
            };
            let (cmds, replies): (Vec<Command>, Vec<Reply>) = batch.into_iter().unzip();
            let sent = send(cmds);
            tokio::spawn(async move {
                match sent.await {
                    Ok(results) => {
                        assert_eq!(results.len(), replies.len(), "one result per proposed command");
                        for (reply, res) in replies.into_iter().zip(results) {
                            let _ = reply.send(Ok(res));
                        }
                    }
                    Err(e) => {
                        for reply in replies {
                            let _ = reply.send(Err(e.clone()));
                        }
                    }
                }
                drop(permit);
            });
        }
    }
}
