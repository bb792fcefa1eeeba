//! `WatchMany`: many watches on one stream, served from the kinds' shared event windows
//! ([`super::feed`]).
//!
//! A stream is one task holding its watches (a filter and a cursor each). When a window it
//! reads from gets events, the task reads them once per distinct cursor, classifies each event
//! per watch (selectors, namespace) and sends ONE response per distinct outcome carrying the
//! ids of every watch that sees it: an event is decoded once per server, converted once per
//! window and encoded once per stream and outcome. Per watch, events go out in revision order
//! and the cursor moves past a revision only after all its events were queued: no gaps, no
//! duplicates. A watch whose cursor the window has left behind ends with an ERROR "Expired"
//! event; a stream whose client reads nothing for [`SLOW_CLIENT_TIMEOUT`] is cut off with
//! RESOURCE_EXHAUSTED, never holding more than [`WATCH_MANY_QUEUE_LEN`] responses.

use super::feed::{Feed, FeedEvent};
use super::{
    classify, event, parse_revision, resource_type, send_within, Filter, ResourcesService, Result, Seen,
    BOOKMARK_INTERVAL, SLOW_CLIENT_TIMEOUT,
};
use crate::error::ApiError;
use crate::Shared;
use berth_proto::apiv1::{self, watch_event::EventType, watch_many_request::Request as Op};
use berth_proto::metav1;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, Notify};
use tonic::{Status, Streaming};

/// Responses queued per WatchMany stream before the stream's task waits for the client.
pub const WATCH_MANY_QUEUE_LEN: usize = 64;
/// Watches one WatchMany stream may hold at once.
pub const WATCHES_PER_STREAM_MAX: usize = 10_000;

pub(super) type ResponseSender = mpsc::Sender<Box<apiv1::WatchManyResponse>>;

static NEXT_STREAM_ID: AtomicU64 = AtomicU64::new(1);

/// One watch of a stream: ~100 bytes plus its selectors.
struct Watch {
    feed: Arc<Feed>,
    /// Key prefix of its namespace (or of the kind, for all namespaces).
    prefix: Box<[u8]>,
    filter: Filter,
    /// The first revision it has not seen.
    cursor: i64,
    bookmarks: bool,
}

struct WatchStream {
    shared: Arc<Shared>,
    id: u64,
    out: ResponseSender,
    notify: Arc<Notify>,
    watches: BTreeMap<i64, Watch>,
}

/// Runs one WatchMany stream until the client goes or is cut off (the reason goes to `end`).
pub(super) async fn run(
    shared: Arc<Shared>,
    inbound: Streaming<apiv1::WatchManyRequest>,
    out: ResponseSender,
    end: oneshot::Sender<Status>,
) {
    let mut s = WatchStream {
        shared,
        id: NEXT_STREAM_ID.fetch_add(1, Ordering::Relaxed),
        out,
        notify: Arc::new(Notify::new()),
        watches: BTreeMap::new(),
    };
    s.shared.metrics.watch_streams.inc();
    let res = s.serve(inbound).await;
    let feeds: Vec<Arc<Feed>> = s.watches.values().map(|w| w.feed.clone()).collect();
    for f in feeds {
        f.unsubscribe(s.id);
    }
    s.shared.metrics.watchers.sub(s.watches.len() as i64);
    s.shared.metrics.watch_streams.dec();
    if let Err(e) = res {
        let _ = end.send(e.into());
    }
}

impl WatchStream {
    /// The handlers' futures are boxed: they then take memory only while they run, not in
    /// every idle stream's task (~9 KB in a debug build otherwise).
    async fn serve(&mut self, mut inbound: Streaming<apiv1::WatchManyRequest>) -> Result<()> {
        let mut ticker = tokio::time::interval(BOOKMARK_INTERVAL);
        loop {
            let go_on = tokio::select! {
                req = inbound.message() => match req {
                    Ok(Some(r)) => Box::pin(self.request(r)).await?,
                    _ => false,
                },
                _ = self.notify.notified() => Box::pin(self.drain()).await?,
                _ = ticker.tick() => Box::pin(self.drain()).await? && Box::pin(self.bookmarks()).await?,
                _ = self.out.closed() => false,
            };
            if !go_on {
                return Ok(());
            }
        }
    }

    /// Queues one response; Ok(false) once the client has gone.
    async fn send(&self, resp: apiv1::WatchManyResponse) -> Result<bool> {
        send_within(&self.out, resp, SLOW_CLIENT_TIMEOUT).await
    }

    async fn request(&mut self, req: apiv1::WatchManyRequest) -> Result<bool> {
        match req.request {
            Some(Op::Create(c)) => self.create(c).await,
            Some(Op::Cancel(c)) => {
                if self.watches.remove(&c.watch_id).is_some() {
                    self.shared.metrics.watchers.dec();
                }
                self.send(apiv1::WatchManyResponse {
                    watch_ids: vec![c.watch_id],
                    canceled: true,
                    ..Default::default()
                })
                .await
            }
            None => Ok(true),
        }
    }

    async fn create(&mut self, c: apiv1::WatchCreate) -> Result<bool> {
        let id = c.watch_id;
        if self.watches.contains_key(&id) {
            let e = ApiError::InvalidArgument {
                field: "watchId",
                reason: format!("watch {id} is already open on this stream"),
            };
            return self.refuse(id, e).await;
        }
        if self.watches.len() >= WATCHES_PER_STREAM_MAX {
            let e = ApiError::InvalidArgument {
                field: "watchId",
                reason: format!("too many watches on one stream (max {WATCHES_PER_STREAM_MAX})"),
            };
            return self.refuse(id, e).await;
        }
        match self.open(c.watch.unwrap_or_default()).await {
            Ok((watch, initial)) => {
                if !self.ack(id).await? {
                    return Ok(false);
                }
                for ev in initial {
                    if !self.send(one(id, ev)).await? {
                        return Ok(false);
                    }
                }
                watch.feed.subscribe(self.id, &self.notify);
                self.watches.insert(id, watch);
                self.shared.metrics.watchers.inc();
                // Events may already be waiting past its cursor.
                self.notify.notify_one();
                Ok(true)
            }
            Err(e) => self.refuse(id, e).await,
        }
    }

    async fn ack(&self, id: i64) -> Result<bool> {
        self.send(apiv1::WatchManyResponse {
            watch_ids: vec![id],
            created: true,
            ..Default::default()
        })
        .await
    }

    /// A create that failed: one response, created and ended with the reason.
    async fn refuse(&self, id: i64, e: ApiError) -> Result<bool> {
        self.send(apiv1::WatchManyResponse {
            watch_ids: vec![id],
            event: Some(error_event(&e)),
            created: true,
            canceled: true,
        })
        .await
    }

    /// Ends watches with an ERROR event.
    async fn end(&self, ids: Vec<i64>, e: &ApiError) -> Result<bool> {
        self.send(apiv1::WatchManyResponse {
            watch_ids: ids,
            event: Some(error_event(e)),
            canceled: true,
            ..Default::default()
        })
        .await
    }

    /// A new watch at its starting cursor, and its initial ADDED events when it asked for the
    /// current state (resource_version "" or "0").
    async fn open(&self, req: apiv1::WatchRequest) -> Result<(Watch, Vec<apiv1::WatchEvent>)> {
        let rt = resource_type(&req.resource)?;
        let opts = req.options.unwrap_or_default();
        let filter = Filter::new(rt, &opts)?;
        let prefix = rt.key_prefix(&req.namespace);
        let store_rev = self.shared.raft.store().revision();
        let (initial, cursor) = match opts.resource_version.as_str() {
            "" | "0" => {
                // The window first, so that it covers the revision the list is read at.
                self.shared.feeds.get(&self.shared, rt, store_rev + 1)?;
                let svc = ResourcesService {
                    shared: self.shared.clone(),
                };
                let (mut initial, at) = svc.initial_events(rt, &filter, &prefix).await?;
                if opts.allow_watch_bookmarks && !initial.is_empty() {
                    initial.push(event(EventType::Bookmark, None, at));
                }
                (initial, at + 1)
            }
            rv => (Vec::new(), parse_revision("resourceVersion", rv)? + 1),
        };
        let feed = self.shared.feeds.get(&self.shared, rt, cursor)?;
        let read = feed.read_from(cursor);
        if cursor < read.first_rev {
            return Err(ApiError::Expired {
                requested: cursor - 1,
                compacted: read.first_rev - 1,
            });
        }
        let watch = Watch {
            feed,
            prefix: prefix.into_bytes().into_boxed_slice(),
            filter,
            cursor,
            bookmarks: opts.allow_watch_bookmarks,
        };
        Ok((watch, initial))
    }

    /// Sends every watch what its window has past its cursor; false once the client is gone.
    async fn drain(&mut self) -> Result<bool> {
        let mut feeds: Vec<Arc<Feed>> = Vec::new();
        for w in self.watches.values() {
            if !feeds.iter().any(|f| Arc::ptr_eq(f, &w.feed)) {
                feeds.push(w.feed.clone());
            }
        }
        for feed in feeds {
            if !self.drain_feed(&feed).await? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    async fn drain_feed(&mut self, feed: &Arc<Feed>) -> Result<bool> {
        let ids: Vec<i64> = self
            .watches
            .iter()
            .filter(|(_, w)| Arc::ptr_eq(&w.feed, feed))
            .map(|(id, _)| *id)
            .collect();
        let from = ids
            .iter()
            .map(|id| self.watches[id].cursor)
            .min()
            .unwrap_or(i64::MAX);
        let read = feed.read_from(from);
        if let Some(e) = read.failed {
            return self.end_watches(ids, &e).await;
        }
        let behind: Vec<i64> = ids
            .iter()
            .copied()
            .filter(|id| self.watches[id].cursor < read.first_rev)
            .collect();
        if !behind.is_empty() {
            let e = ApiError::Expired {
                requested: self.watches[&behind[0]].cursor - 1,
                compacted: read.first_rev - 1,
            };
            if !self.end_watches(behind, &e).await? {
                return Ok(false);
            }
        }
        for ev in &read.events {
            if !self.fan_out(feed, ev).await? {
                return Ok(false);
            }
        }
        for w in self.watches.values_mut() {
            if Arc::ptr_eq(&w.feed, feed) {
                w.cursor = w.cursor.max(read.rev + 1);
            }
        }
        Ok(true)
    }

    async fn end_watches(&mut self, ids: Vec<i64>, e: &ApiError) -> Result<bool> {
        for id in &ids {
            self.watches.remove(id);
        }
        self.shared.metrics.watchers.sub(ids.len() as i64);
        self.end(ids, e).await
    }

    /// One event to every watch of `feed` that has not seen it: one response per outcome.
    async fn fan_out(&mut self, feed: &Arc<Feed>, ev: &FeedEvent) -> Result<bool> {
        // At most three outcomes (ADDED, MODIFIED, DELETED), in a fixed order.
        let mut groups: Vec<(Seen, Vec<i64>)> = Vec::new();
        for (id, w) in &self.watches {
            if !Arc::ptr_eq(&w.feed, feed) || w.cursor > ev.rev || !ev.key.starts_with(&w.prefix) {
                continue;
            }
            let Some(seen) = classify(&w.filter, ev.version, ev.new.as_ref(), ev.old.as_ref()) else {
                continue;
            };
            match groups.iter_mut().find(|(s, _)| *s == seen) {
                Some((_, ids)) => ids.push(*id),
                None => groups.push((seen, vec![*id])),
            }
        }
        for (seen, ids) in groups {
            let (ty, obj) = match seen {
                Seen::New(ty) => (ty, ev.new.clone().map(Into::into)),
                Seen::OldDeleted => (EventType::Deleted, ev.old.clone().map(Into::into)),
            };
            let resp = apiv1::WatchManyResponse {
                watch_ids: ids,
                event: Some(apiv1::WatchEvent {
                    r#type: ty as i32,
                    object: obj,
                    status: None,
                    resource_version: ev.rev.to_string(),
                }),
                ..Default::default()
            };
            if !self.send(resp).await? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// A BOOKMARK at its cursor to every watch that allows them, one response per cursor.
    async fn bookmarks(&self) -> Result<bool> {
        let mut by_rev: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
        for (id, w) in &self.watches {
            if w.bookmarks && w.cursor > 1 {
                by_rev.entry(w.cursor - 1).or_default().push(*id);
            }
        }
        for (rev, ids) in by_rev {
            let resp = apiv1::WatchManyResponse {
                watch_ids: ids,
                event: Some(event(EventType::Bookmark, None, rev)),
                ..Default::default()
            };
            if !self.send(resp).await? {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

fn one(id: i64, ev: apiv1::WatchEvent) -> apiv1::WatchManyResponse {
    apiv1::WatchManyResponse {
        watch_ids: vec![id],
        event: Some(ev),
        ..Default::default()
    }
}

/// An ERROR event for `e`: Kubernetes' reason and code (410 "Expired" means relist).
fn error_event(e: &ApiError) -> apiv1::WatchEvent {
    let status = Status::from(clone_for_status(e));
    let (reason, code) = match status.code() {
        tonic::Code::OutOfRange => ("Expired", 410),
        tonic::Code::InvalidArgument => ("Invalid", 422),
        tonic::Code::NotFound => ("NotFound", 404),
        tonic::Code::ResourceExhausted => ("TooManyRequests", 429),
        _ => ("InternalError", 500),
    };
    apiv1::WatchEvent {
        r#type: EventType::Error as i32,
        object: None,
        status: Some(metav1::Status {
            status: "Failure".into(),
            message: status.message().to_string(),
            reason: reason.into(),
            code,
            ..Default::default()
        }),
        resource_version: String::new(),
    }
}

/// `Status::from` takes its error by value; the few kinds a watch ends with are copied.
fn clone_for_status(e: &ApiError) -> ApiError {
    match e {
        ApiError::Expired { requested, compacted } => ApiError::Expired {
            requested: *requested,
            compacted: *compacted,
        },
        ApiError::InvalidArgument { field, reason } => ApiError::InvalidArgument {
            field,
            reason: reason.clone(),
        },
        other => ApiError::Corrupt {
            key: String::new(),
            reason: other.to_string(),
        },
    }
}
