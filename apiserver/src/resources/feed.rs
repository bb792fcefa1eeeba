//! The event window of each kind, shared by every `WatchMany` watch of that kind.
//!
//! One store watcher per kind (all namespaces, with previous values) feeds a task that decodes
//! each event ONCE and appends it to a bounded window of recent events. Watches are then a
//! filter and a cursor (the next revision they want) into that window; a watch never owns a
//! store watcher, a task, a queue or an HTTP/2 stream of its own. The window is bounded in
//! events ([`ApiConfig::watch_window_events`](crate::ApiConfig)); a cursor older than the window's
//! start (a resource_version from before it, or a stream that read too slowly while the window
//! moved on) is Expired: the client relists, as with Kubernetes' watch cache. It is also bounded
//! in stored bytes ([`WATCH_WINDOW_STORED_BYTES_MAX`]). A kind's window, once opened, stays for
//! the server's life (at most one per kind), unless it fails (compaction overtook it, the store
//! went): its readers' watches then end and the next watch opens a new one.
//!
//! Invariants: the window holds whole revisions in revision order; `rev` is the revision
//! through which it is complete (events or progress); events at revisions `first_rev..=rev`
//! are all in it.

use super::{decode, deleted_at, ResourceType, Result};
use crate::error::ApiError;
use crate::Shared;
use berth_proto::manifest::Object;
use berth_store::{EventKind, StoreError, WatchMessage};
use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// Default bound of one kind's window, in events.
pub const WATCH_WINDOW_EVENTS_DEFAULT: usize = 4096;
/// Bound of one kind's window in stored bytes (the encoded objects before and after each
/// change; decoded they take a few times that), whatever its event bound: big objects shorten
/// the window instead of growing the server.
pub const WATCH_WINDOW_STORED_BYTES_MAX: usize = 16 * 1024 * 1024;
/// A new window starts this many store revisions back (if not compacted), so that watches
/// resuming from a recent resource_version are served.
pub const WATCH_WINDOW_PRELOAD_REVISIONS: i64 = 256;
/// How often a window asks the store how far it is complete (for bookmarks in quiet times).
pub const WINDOW_PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

/// One change, decoded once for every watcher.
pub(crate) struct FeedEvent {
    pub rev: i64,
    pub key: Vec<u8>,
    /// The key's version after a put (1 = created); 0 for a delete.
    pub version: i64,
    /// Stored bytes of the objects it holds (for the window's byte bound).
    pub stored_bytes: usize,
    /// The object after the change (None for a delete).
    pub new: Option<Object>,
    /// The object before it (None when created), as DELETED events carry it: at the
    /// revision of this change.
    pub old: Option<Object>,
}

/// What a reader gets from a window.
pub(crate) struct Read {
    /// Events at revisions >= the cursor asked for.
    pub events: Vec<Arc<FeedEvent>>,
    /// The window's start: cursors below it are Expired.
    pub first_rev: i64,
    /// The window is complete through here: readers move their cursor to `rev + 1`.
    pub rev: i64,
    /// Set once the window failed (its reason); every reader's watch ends with it.
    pub failed: Option<ApiError>,
}

struct State {
    events: VecDeque<Arc<FeedEvent>>,
    /// Sum of the events' `stored_bytes`.
    stored_bytes: usize,
    first_rev: i64,
    rev: i64,
    /// Streams to wake when events arrive, by stream id.
    subscribers: HashMap<u64, Arc<Notify>>,
    failed: Option<ApiError>,
}

/// The window of one kind.
pub(crate) struct Feed {
    pub rt: &'static ResourceType,
    events_max: usize,
    state: Mutex<State>,
}

impl Feed {
    /// An empty window starting at revision `from`.
    fn new(rt: &'static ResourceType, events_max: usize, from: i64) -> Feed {
        Feed {
            rt,
            events_max: events_max.max(1),
            state: Mutex::new(State {
                events: VecDeque::new(),
                stored_bytes: 0,
                first_rev: from,
                rev: from - 1,
                subscribers: HashMap::new(),
                failed: None,
            }),
        }
    }

    /// Wakes `notify` whenever events arrive (idempotent per stream id).
    pub fn subscribe(&self, stream_id: u64, notify: &Arc<Notify>) {
        self.state
            .lock()
            .subscribers
            .entry(stream_id)
            .or_insert_with(|| notify.clone());
    }

    pub fn unsubscribe(&self, stream_id: u64) {
        self.state.lock().subscribers.remove(&stream_id);
    }

    /// The events at revisions >= `from` (whole revisions), and where the window stands.
    pub fn read_from(&self, from: i64) -> Read {
        let st = self.state.lock();
        let start = st.events.partition_point(|e| e.rev < from);
        Read {
            events: st.events.range(start..).cloned().collect(),
            first_rev: st.first_rev,
            rev: st.rev,
            failed: st.failed.as_ref().map(clone_failure),
        }
    }

    /// Appends one store message's events (already decoded), dropping whole revisions from
    /// the front beyond the bound, and wakes the subscribers.
    fn append(&self, upto: i64, events: Vec<FeedEvent>) {
        let mut st = self.state.lock();
        for e in events {
            st.stored_bytes += e.stored_bytes;
            st.events.push_back(Arc::new(e));
        }
        st.rev = st.rev.max(upto);
        while st.events.len() > self.events_max || st.stored_bytes > WATCH_WINDOW_STORED_BYTES_MAX {
            let dropped = st.events.front().expect("over a bound implies non-empty").rev;
            while let Some(e) = st.events.front().filter(|e| e.rev == dropped).cloned() {
                st.stored_bytes -= e.stored_bytes;
                st.events.pop_front();
            }
            st.first_rev = dropped + 1;
        }
        for n in st.subscribers.values() {
            n.notify_one();
        }
    }

    fn progress(&self, rev: i64) {
        let mut st = self.state.lock();
        st.rev = st.rev.max(rev);
    }

    fn fail(&self, e: ApiError) {
        let mut st = self.state.lock();
        st.failed = Some(e);
        for n in st.subscribers.values() {
            n.notify_one();
        }
    }

    fn is_failed(&self) -> bool {
        self.state.lock().failed.is_some()
    }
}

/// The errors a window can fail with, copied to each of its readers.
fn clone_failure(e: &ApiError) -> ApiError {
    match e {
        ApiError::Expired { requested, compacted } => ApiError::Expired {
            requested: *requested,
            compacted: *compacted,
        },
        ApiError::Corrupt { key, reason } => ApiError::Corrupt {
            key: key.clone(),
            reason: reason.clone(),
        },
        other => ApiError::Corrupt {
            key: String::new(),
            reason: other.to_string(),
        },
    }
}

/// The windows of this server, started on first use, one per kind.
#[derive(Default)]
pub(crate) struct Feeds {
    feeds: Mutex<HashMap<&'static str, Arc<Feed>>>,
}

impl Feeds {
    /// The kind's window, started (from `want_from` or up to [`WATCH_WINDOW_PRELOAD_REVISIONS`]
    /// back, whichever is earlier, never before compaction) unless it runs.
    pub fn get(&self, shared: &Arc<Shared>, rt: &'static ResourceType, want_from: i64) -> Result<Arc<Feed>> {
        let mut feeds = self.feeds.lock();
        if let Some(f) = feeds.get(rt.plural) {
            if !f.is_failed() {
                return Ok(f.clone());
            }
        }
        let feed = start(shared, rt, want_from)?;
        feeds.insert(rt.plural, feed.clone());
        Ok(feed)
    }
}

fn start(shared: &Arc<Shared>, rt: &'static ResourceType, want_from: i64) -> Result<Arc<Feed>> {
    let store = shared.raft.store();
    let prefix = rt.key_prefix("");
    // Compaction may move between reading its revision and registering: then try again.
    let watcher = loop {
        let current = store.revision();
        let from = want_from
            .min(current + 1 - WATCH_WINDOW_PRELOAD_REVISIONS)
            .max(store.compact_revision() + 1)
            .max(1);
        match store.watch(berth_store::WatchRequest {
            key: prefix.as_bytes().to_vec(),
            range_end: berth_proto::prefix_range_end(prefix.as_bytes()),
            start_revision: from,
            prev_kv: true,
            ..Default::default()
        }) {
            Ok(w) => break (w, from),
            Err(StoreError::Compacted { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    };
    let (watcher, from) = watcher;
    let feed = Arc::new(Feed::new(rt, shared.cfg.watch_window_events, from));
    tokio::spawn(run(shared.clone(), feed.clone(), watcher));
    Ok(feed)
}

/// Moves the store watcher's messages into the window until the store closes it.
async fn run(shared: Arc<Shared>, feed: Arc<Feed>, mut watcher: berth_store::Watcher) {
    let mut ticker = tokio::time::interval(WINDOW_PROGRESS_INTERVAL);
    let mut seen = 0;
    loop {
        let msg = tokio::select! {
            m = watcher.recv() => m,
            _ = ticker.tick() => {
                shared.raft.store().request_progress(watcher.id);
                continue;
            }
        };
        match msg {
            Some(WatchMessage::Events { revision, events }) => {
                seen = revision;
                match events.iter().map(|e| feed_event(feed.rt, e)).collect() {
                    Ok(decoded) => feed.append(revision, decoded),
                    Err(e) => return feed.fail(e),
                }
            }
            Some(WatchMessage::Progress { revision }) => feed.progress(revision),
            Some(WatchMessage::Compacted { compact_revision }) => {
                return feed.fail(ApiError::Expired {
                    requested: seen,
                    compacted: compact_revision,
                })
            }
            None => {
                return feed.fail(ApiError::Expired {
                    requested: seen,
                    compacted: shared.raft.store().compact_revision(),
                })
            }
        }
    }
}

fn feed_event(rt: &ResourceType, ev: &berth_store::Event) -> Result<FeedEvent> {
    let rev = ev.kv.mod_revision;
    let (new, version) = match ev.kind {
        EventKind::Put => (Some(decode(rt, &ev.kv)?), ev.kv.version),
        EventKind::Delete => (None, 0),
    };
    let old = ev.prev_kv.as_ref().map(|kv| decode(rt, kv)).transpose()?;
    Ok(FeedEvent {
        rev,
        key: ev.kv.key.clone(),
        version,
        stored_bytes: ev.kv.value.len() + ev.prev_kv.as_ref().map_or(0, |kv| kv.value.len()),
        new,
        old: old.map(|o| deleted_at(o, rev)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(rev: i64) -> FeedEvent {
        FeedEvent {
            rev,
            key: b"/registry/pods/default/p".to_vec(),
            version: 1,
            stored_bytes: 100,
            new: None,
            old: None,
        }
    }

    fn revs(r: &Read) -> Vec<i64> {
        r.events.iter().map(|e| e.rev).collect()
    }

    /// Over its bound the window drops whole revisions from the front and moves its start.
    #[test]
    fn the_window_drops_whole_revisions() {
        let feed = Feed::new(super::super::resource_type("pods").unwrap(), 3, 1);
        assert_eq!((feed.read_from(1).first_rev, feed.read_from(1).rev), (1, 0));
        feed.append(2, vec![ev(1), ev(2), ev(2)]);
        let r = feed.read_from(2);
        assert_eq!((revs(&r), r.first_rev, r.rev), (vec![2, 2], 1, 2));
        feed.append(3, vec![ev(3), ev(3)]);
        let r = feed.read_from(0);
        assert_eq!((revs(&r), r.first_rev, r.rev), (vec![3, 3], 3, 3));
        feed.progress(9);
        let r = feed.read_from(4);
        assert_eq!((revs(&r), r.first_rev, r.rev), (vec![], 3, 9));
    }

    #[test]
    fn the_window_is_bounded_in_bytes_too() {
        let feed = Feed::new(super::super::resource_type("pods").unwrap(), usize::MAX, 1);
        let big = |rev| FeedEvent {
            stored_bytes: WATCH_WINDOW_STORED_BYTES_MAX / 2,
            ..ev(rev)
        };
        feed.append(3, vec![big(1), big(2), big(3)]);
        let r = feed.read_from(0);
        assert_eq!((revs(&r), r.first_rev), (vec![2, 3], 2));
    }
}
