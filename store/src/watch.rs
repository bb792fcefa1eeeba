//! The watch hub, after etcd's design.
//!
//! Watchers are either *synced* (they have seen every revision the hub has published, and
//! apply feeds them directly) or *unsynced* (they start in the past, or their queue was full
//! when apply tried to feed them: etcd's "victims"). Apply never waits: it `try_send`s to synced
//! watchers and demotes a full one to unsynced. A background worker catches unsynced watchers
//! up from stored history and promotes them back to synced.
//!
//! Every watcher tracks `next_rev`, the first revision it has not yet seen; events are sent only
//! from `next_rev` on, which rules out gaps and duplicates whichever path delivers them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};
use tokio::sync::mpsc::{self, error::TrySendError};

use crate::keyrange::KeyRange;
use crate::{Event, EventKind, KeyValue, Result, WatchMessage, WatchRequest};

/// Whether `req` wants `ev` (ignoring revisions).
pub(crate) fn wants(req: &WatchRequest, ev: &Event) -> bool {
    let filtered = match ev.kind {
        EventKind::Put => req.filter_put,
        EventKind::Delete => req.filter_delete,
    };
    !filtered && KeyRange::new(&req.key, &req.range_end).contains(&ev.kv.key)
}

/// Wakes the catch-up worker. `dirty` is set under the mutex so no wake-up is ever lost.
#[derive(Default)]
pub(crate) struct Signal {
    state: Mutex<SignalState>,
    cv: Condvar,
}

#[derive(Default)]
struct SignalState {
    dirty: bool,
    shutdown: bool,
}

impl Signal {
    pub fn notify(&self) {
        self.state.lock().dirty = true;
        self.cv.notify_one();
    }

    pub fn shutdown(&self) {
        self.state.lock().shutdown = true;
        self.cv.notify_all();
    }

    /// Blocks until notified; false once shut down.
    pub fn wait(&self) -> bool {
        let mut s = self.state.lock();
        while !s.dirty && !s.shutdown {
            self.cv.wait(&mut s);
        }
        s.dirty = false;
        !s.shutdown
    }
}

struct Entry {
    req: WatchRequest,
    tx: mpsc::Sender<WatchMessage>,
    /// The first revision this watcher has not seen.
    next_rev: i64,
    synced: bool,
    progress_pending: bool,
    /// Bumped when a restore replaces history, so catch-up reads of the old state are dropped.
    epoch: u64,
    /// Set while unsynced: the receiver then wakes the worker after each message it takes,
    /// since that may have made room in a full queue.
    unsynced_flag: Arc<AtomicBool>,
}

impl Entry {
    fn set_unsynced(&mut self) {
        self.synced = false;
        self.unsynced_flag.store(true, Ordering::SeqCst);
    }

    fn set_synced(&mut self) {
        self.synced = true;
        self.unsynced_flag.store(false, Ordering::SeqCst);
    }
}

struct HubState {
    /// The last revision published to synced watchers.
    rev: i64,
    next_id: u64,
    watchers: BTreeMap<u64, Entry>,
}

pub(crate) struct Hub {
    state: Mutex<HubState>,
    pub signal: Signal,
    queue_len: usize,
}

/// A catch-up assignment: one unsynced watcher, as the worker found it.
#[derive(Clone, Debug)]
pub(crate) struct Job {
    pub id: u64,
    pub epoch: u64,
    pub next_rev: i64,
    pub req: WatchRequest,
}

/// What the worker read from history for a [`Job`].
#[derive(Debug)]
pub(crate) enum Step {
    /// History from `next_rev` is gone.
    Compacted(i64),
    /// Events of whole revisions `next_rev..=upto` (possibly none matched).
    Events { events: Vec<Event>, upto: i64 },
    /// Nothing stored after `next_rev - 1`.
    CaughtUp,
}

impl Hub {
    pub fn new(queue_len: usize, rev: i64) -> Hub {
        Hub {
            state: Mutex::new(HubState {
                rev,
                next_id: 1,
                watchers: BTreeMap::new(),
            }),
            signal: Signal::default(),
            queue_len: queue_len.max(1),
        }
    }

    /// Registers a watcher that has seen everything before `next_rev`. The caller holds the
    /// store's lock, so the hub's revision is the store's.
    pub fn register(self: &Arc<Self>, req: WatchRequest, next_rev: i64) -> Watcher {
        let (tx, rx) = mpsc::channel(self.queue_len);
        let flag = Arc::new(AtomicBool::new(false));
        let mut hs = self.state.lock();
        let id = hs.next_id;
        hs.next_id += 1;
        let mut entry = Entry {
            req,
            tx,
            next_rev,
            synced: true,
            progress_pending: false,
            epoch: 0,
            unsynced_flag: flag.clone(),
        };
        let synced = next_rev > hs.rev;
        if !synced {
            entry.set_unsynced();
        }
        hs.watchers.insert(id, entry);
        drop(hs);
        if !synced {
            self.signal.notify();
        }
        Watcher {
            id,
            rx,
            hub: self.clone(),
            unsynced: flag,
        }
    }

    fn unregister(&self, id: u64) {
        self.state.lock().watchers.remove(&id);
    }

    /// Feeds one applied batch to the synced watchers. `events` are in revision order and
    /// end at `rev`; `prev_of` looks up an event's previous version, only for watchers that
    /// asked for it.
    pub fn publish(
        &self,
        rev: i64,
        events: &[Event],
        prev_of: &dyn Fn(&Event) -> Result<Option<KeyValue>>,
    ) -> Result<()> {
        let mut prevs: Vec<Option<Option<KeyValue>>> = vec![None; events.len()];
        let mut hs = self.state.lock();
        hs.rev = rev;
        let mut wake = false;
        let mut closed = Vec::new();
        for (id, w) in hs.watchers.iter_mut() {
            if !w.synced {
                wake = true;
                continue;
            }
            let mut out = Vec::new();
            for (i, ev) in events.iter().enumerate() {
                if ev.kv.mod_revision < w.next_rev || !wants(&w.req, ev) {
                    continue;
                }
                let prev_kv = match (w.req.prev_kv, &prevs[i]) {
                    (false, _) => None,
                    (true, Some(known)) => known.clone(),
                    (true, None) => prevs[i].insert(prev_of(ev)?).clone(),
                };
                out.push(Event {
                    prev_kv,
                    ..ev.clone()
                });
            }
            if out.is_empty() {
                w.next_rev = w.next_rev.max(rev + 1);
                continue;
            }
            match w.tx.try_send(WatchMessage::Events {
                revision: rev,
                events: out,
            }) {
                Ok(()) => w.next_rev = rev + 1,
                Err(TrySendError::Full(_)) => {
                    // A victim: history has what it missed; the worker will resend it.
                    w.set_unsynced();
                    wake = true;
                }
                Err(TrySendError::Closed(_)) => closed.push(*id),
            }
        }
        for id in closed {
            hs.watchers.remove(&id);
        }
        drop(hs);
        if wake {
            self.signal.notify();
        }
        Ok(())
    }

    /// Sends `Progress` now if the watcher is synced and has room, else once it is.
    pub fn request_progress(&self, id: u64) {
        let mut hs = self.state.lock();
        let rev = hs.rev;
        let Some(w) = hs.watchers.get_mut(&id) else {
            return;
        };
        if w.synced {
            match w.tx.try_send(WatchMessage::Progress { revision: rev }) {
                Ok(()) | Err(TrySendError::Closed(_)) => return,
                Err(TrySendError::Full(_)) => w.set_unsynced(),
            }
        }
        w.progress_pending = true;
        drop(hs);
        self.signal.notify();
    }

    /// After a restore replaced history: every watcher catches up again from the new state
    /// (the worker sends `Compacted` to those whose next revision the image compacted away).
    pub fn restored(&self, rev: i64) {
        let mut hs = self.state.lock();
        hs.rev = rev;
        for w in hs.watchers.values_mut() {
            w.epoch += 1;
            w.set_unsynced();
        }
        drop(hs);
        self.signal.notify();
    }

    /// Closes every watcher (their `recv` returns `None`); used when the store goes away.
    pub fn close_all(&self) {
        self.state.lock().watchers.clear();
    }

    /// The unsynced watchers that have room in their queue.
    pub fn jobs(&self) -> Vec<Job> {
        let hs = self.state.lock();
        hs.watchers
            .iter()
            .filter(|(_, w)| !w.synced && w.tx.capacity() > 0)
            .map(|(id, w)| Job {
                id: *id,
                epoch: w.epoch,
                next_rev: w.next_rev,
                req: w.req.clone(),
            })
            .collect()
    }

    /// Delivers what the worker read for `job`. Returns whether anything moved, i.e. whether
    /// another round could do more without waiting for a receiver.
    pub fn resolve(&self, job: &Job, step: Step) -> bool {
        let mut hs = self.state.lock();
        let hub_rev = hs.rev;
        let Some(w) = hs.watchers.get_mut(&job.id) else {
            return false;
        };
        if w.synced || w.epoch != job.epoch || w.next_rev != job.next_rev {
            // Changed meanwhile (e.g. restored); the next round reads it afresh.
            return true;
        }
        match step {
            Step::Compacted(compact_revision) => {
                let sent = w.tx.try_send(WatchMessage::Compacted { compact_revision });
                if matches!(sent, Err(TrySendError::Full(_))) {
                    return false;
                }
                // Dropping the sender closes the watcher after this last message.
                hs.watchers.remove(&job.id);
                true
            }
            Step::Events { events, upto } if events.is_empty() => {
                w.next_rev = upto + 1;
                true
            }
            Step::Events { events, upto } => {
                match w.tx.try_send(WatchMessage::Events {
                    revision: upto,
                    events,
                }) {
                    Ok(()) => w.next_rev = upto + 1,
                    Err(TrySendError::Full(_)) => return false,
                    Err(TrySendError::Closed(_)) => {
                        hs.watchers.remove(&job.id);
                    }
                }
                true
            }
            Step::CaughtUp => {
                // Publishing happens under the store's write lock, after the history we read
                // was written; if the hub is ahead of `next_rev`, read again.
                if w.next_rev <= hub_rev {
                    return true;
                }
                if w.progress_pending {
                    match w.tx.try_send(WatchMessage::Progress { revision: hub_rev }) {
                        Ok(()) | Err(TrySendError::Closed(_)) => w.progress_pending = false,
                        Err(TrySendError::Full(_)) => return false,
                    }
                }
                w.set_synced();
                true
            }
        }
    }
}

/// One registered watcher; dropping it unregisters it.
pub struct Watcher {
    pub id: u64,
    rx: mpsc::Receiver<WatchMessage>,
    hub: Arc<Hub>,
    unsynced: Arc<AtomicBool>,
}

impl Watcher {
    /// The next message; `None` once the watcher is closed (after `Compacted`, or when the
    /// store is dropped).
    pub async fn recv(&mut self) -> Option<WatchMessage> {
        let msg = self.rx.recv().await;
        if self.unsynced.load(Ordering::SeqCst) {
            // We just made room; the worker may be waiting for it.
            self.hub.signal.notify();
        }
        msg
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.hub.unregister(self.id);
    }
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}
