//! Batching of proposals on the leader.
//!
//! openraft 0.9 appends one log entry per client write and, in practice, waits for each
//! append's flush before it runs the next append, so one entry costs one WAL sync. Commands
//! proposed concurrently are therefore gathered into one entry ([`Proposal`]): while a batch is
//! being committed, new commands queue up and go together in the next one. Throughput then
//! grows with concurrency instead of being capped at one command per sync.

use crate::error::RaftError;
use crate::types::{ApplyResult, Proposal, Raft};
use berth_store::Command;
use parking_lot::Mutex;
use std::sync::Arc;
use tokio::sync::{oneshot, Semaphore};

/// Most commands in one log entry.
pub const BATCH_COMMANDS_MAX: usize = 1024;
/// Batches being committed at once; more queue up and grow the next batch.
pub const BATCHES_IN_FLIGHT_MAX: usize = 2;

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
    /// Proposes `cmd` in the next batch and waits for its own result.
    pub(crate) async fn propose(
        self: &Arc<Self>,
        raft: &Raft,
        cmd: Command,
        map_err: fn(
            openraft::error::RaftError<u64, openraft::error::ClientWriteError<u64, crate::Member>>,
        ) -> RaftError,
    ) -> Result<ApplyResult, RaftError> {
        let (tx, rx) = oneshot::channel();
        let start_driver = {
            let mut q = self.queue.lock();
            q.waiting.push((cmd, tx));
            !std::mem::replace(&mut q.driving, true)
        };
        if start_driver {
            tokio::spawn(self.clone().drive(raft.clone(), map_err));
        }
        rx.await
            .unwrap_or_else(|_| Err(RaftError::Fatal("proposal batcher stopped".into())))
    }

    /// Sends batches while commands are waiting, at most [`BATCHES_IN_FLIGHT_MAX`] at once.
    async fn drive(
        self: Arc<Self>,
        raft: Raft,
        map_err: fn(
            openraft::error::RaftError<u64, openraft::error::ClientWriteError<u64, crate::Member>>,
        ) -> RaftError,
    ) {
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
            let raft = raft.clone();
            tokio::spawn(async move {
                let (cmds, replies): (Vec<Command>, Vec<Reply>) = batch.into_iter().unzip();
                match raft.client_write(Proposal(cmds)).await {
                    Ok(resp) => {
                        debug_assert_eq!(resp.data.len(), replies.len());
                        for (reply, res) in replies.into_iter().zip(resp.data) {
                            let _ = reply.send(Ok(res));
                        }
                    }
                    Err(e) => {
                        let e = map_err(e);
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
