//! etcd-v3 `Watch` service: many watchers multiplexed on one bidirectional stream.
//!
//! Each watcher is a store [`berth_store::Watcher`] plus a task that forwards its messages to
//! the stream's one bounded outbound queue. The store never waits on a slow client: when a
//! watcher's own queue fills, the store catches it up from history later.

use crate::convert;
use crate::error::ApiError;
use crate::Shared;
use berth_proto::etcdserverpb as pb;
use berth_proto::etcdserverpb::watch_server::Watch;
use berth_store::WatchMessage;
use futures::Stream;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

/// Responses queued per watch stream before the forwarding tasks wait for the client.
pub const WATCH_STREAM_QUEUE_LEN: usize = 256;
/// Watchers one stream may hold at once.
pub const WATCHERS_PER_STREAM_MAX: usize = 10_000;

pub struct WatchService {
    pub(crate) shared: Arc<Shared>,
}

type Outbound = mpsc::Sender<Result<pb::WatchResponse, Status>>;

#[tonic::async_trait]
impl Watch for WatchService {
    type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchResponse, Status>> + Send + 'static>>;

    async fn watch(
        &self,
        req: Request<Streaming<pb::WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(WATCH_STREAM_QUEUE_LEN);
        let stream = WatchStream {
            shared: self.shared.clone(),
            out: tx,
            watchers: HashMap::new(),
            next_id: 0,
        };
        tokio::spawn(stream.run(inbound));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

struct WatchStream {
    shared: Arc<Shared>,
    out: Outbound,
    watchers: HashMap<i64, (u64, JoinHandle<()>)>,
    next_id: i64,
}

impl WatchStream {
    async fn run(mut self, mut inbound: Streaming<pb::WatchRequest>) {
        use pb::watch_request::RequestUnion;
        self.shared.metrics.watch_streams.inc();
        while let Some(Ok(req)) = inbound.next().await {
            let ok = match req.request_union {
                Some(RequestUnion::CreateRequest(c)) => self.create(c).await,
                Some(RequestUnion::CancelRequest(c)) => self.cancel(c.watch_id).await,
                Some(RequestUnion::ProgressRequest(_)) => self.progress(),
                None => true,
            };
            if !ok {
                break;
            }
        }
        for (_, (_, task)) in self.watchers.drain() {
            task.abort();
            self.shared.metrics.watchers.dec();
        }
        self.shared.metrics.watch_streams.dec();
    }

    /// Sends one response; false once the client is gone.
    async fn send(&self, resp: pb::WatchResponse) -> bool {
        self.out.send(Ok(resp)).await.is_ok()
    }

    fn reply(&self, watch_id: i64) -> pb::WatchResponse {
        pb::WatchResponse {
            header: Some(self.shared.header(self.shared.raft.store().revision())),
            watch_id,
            ..Default::default()
        }
    }

    async fn create(&mut self, c: pb::WatchCreateRequest) -> bool {
        let watch_id = if c.watch_id != 0 {
            c.watch_id
        } else {
            self.fresh_id()
        };
        let refused = |reason: String| pb::WatchResponse {
            watch_id,
            created: true,
            canceled: true,
            cancel_reason: reason,
            ..self.reply(watch_id)
        };
        if self.watchers.contains_key(&watch_id) {
            return self
                .send(refused("etcdserver: watch id already exists".into()))
                .await;
        }
        if self.watchers.len() >= WATCHERS_PER_STREAM_MAX {
            return self
                .send(refused(format!(
                    "too many watchers on one stream (max {WATCHERS_PER_STREAM_MAX})"
                )))
                .await;
        }
        let spec = match convert::watch_from_pb(&c) {
            Ok(spec) => spec,
            Err(e) => return self.send(refused(Status::from(e).message().to_string())).await,
        };
        match self.shared.raft.store().watch(spec) {
            Ok(watcher) => {
                if !self
                    .send(pb::WatchResponse {
                        created: true,
                        ..self.reply(watch_id)
                    })
                    .await
                {
                    return false;
                }
                let store_id = watcher.id;
                let task = tokio::spawn(forward(
                    self.shared.clone(),
                    watcher,
                    watch_id,
                    c.progress_notify,
                    self.out.clone(),
                ));
                self.watchers.insert(watch_id, (store_id, task));
                self.shared.metrics.watchers.inc();
                true
            }
            Err(berth_store::StoreError::Compacted { compact_revision }) => {
                let created = pb::WatchResponse {
                    created: true,
                    ..self.reply(watch_id)
                };
                let canceled = pb::WatchResponse {
                    canceled: true,
                    compact_revision,
                    cancel_reason: Status::from(ApiError::from(berth_store::StoreError::Compacted {
                        compact_revision,
                    }))
                    .message()
                    .to_string(),
                    ..self.reply(watch_id)
                };
                self.send(created).await && self.send(canceled).await
            }
            Err(e) => {
                self.send(refused(Status::from(ApiError::from(e)).message().to_string()))
                    .await
            }
        }
    }

    fn fresh_id(&mut self) -> i64 {
        while self.watchers.contains_key(&self.next_id) {
            self.next_id += 1;
        }
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    async fn cancel(&mut self, watch_id: i64) -> bool {
        if let Some((_, task)) = self.watchers.remove(&watch_id) {
            task.abort();
            self.shared.metrics.watchers.dec();
        }
        self.send(pb::WatchResponse {
            canceled: true,
            ..self.reply(watch_id)
        })
        .await
    }

    fn progress(&self) -> bool {
        for (store_id, _) in self.watchers.values() {
            self.shared.raft.store().request_progress(*store_id);
        }
        true
    }
}

/// Moves one watcher's messages to the stream, asking the store for a progress notification
/// every `progress_notify_interval` when the client asked for them.
async fn forward(
    shared: Arc<Shared>,
    mut watcher: berth_store::Watcher,
    watch_id: i64,
    progress_notify: bool,
    out: Outbound,
) {
    let interval = Duration::from_millis(shared.cfg.watch_progress_notify_interval_ms);
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    loop {
        let msg = tokio::select! {
            msg = watcher.recv() => match msg { Some(m) => m, None => return },
            _ = ticker.tick(), if progress_notify => {
                shared.raft.store().request_progress(watcher.id);
                continue;
            }
        };
        let resp = match msg {
            WatchMessage::Events { revision, events } => pb::WatchResponse {
                header: Some(shared.header(revision)),
                watch_id,
                events: events.into_iter().map(convert::event_to_pb).collect(),
                ..Default::default()
            },
            WatchMessage::Progress { revision } => pb::WatchResponse {
                header: Some(shared.header(revision)),
                watch_id,
                ..Default::default()
            },
            WatchMessage::Compacted { compact_revision } => pb::WatchResponse {
                header: Some(shared.header(shared.raft.store().revision())),
                watch_id,
                canceled: true,
                compact_revision,
                cancel_reason: "etcdserver: mvcc: required revision has been compacted".into(),
                ..Default::default()
            },
        };
        let last = resp.canceled;
        if out.send(Ok(resp)).await.is_err() || last {
            return;
        }
    }
}
