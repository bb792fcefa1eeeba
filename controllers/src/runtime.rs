//! The reconciler runner shared by every controller.
//!
//! Informer events are turned into keys (`namespace/name`, or `name` for cluster-scoped
//! objects) and put on a [`WorkQueue`]: bounded ([`WORK_QUEUE_CAPACITY`] distinct keys; a
//! producer waits when it is full) and de-duplicated (a key waiting in the queue is not queued
//! twice). A key taken by a worker is "processing" until the worker is done with it; an add
//! during that time is remembered and the key is queued again only after `done`, so one key is
//! never reconciled by two workers at once. A reconciler answers [`Action::RequeueAfter`] or
//! [`Action::AwaitChange`]; an error requeues the key after an exponential back-off per key
//! ([`Backoff`]), reset by the next success. Delays use tokio's clock, so tests drive them with
//! `tokio::time::pause`.
//!
//! Workers run only while this instance leads (a `watch::Receiver<bool>` from the
//! [`berth_client::leader::LeaderElector`]); on losing leadership they are aborted mid-way
//! (every write is a compare-and-swap, so an abandoned reconcile leaves nothing half-done that
//! the next leader cannot redo) and events are no longer queued; on gaining it, every key of
//! the controller's primary cache is queued once (a resync).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

/// Most distinct keys a work queue holds (waiting or processing-and-dirty); producers wait
/// beyond that.
pub const WORK_QUEUE_CAPACITY: usize = 4096;
/// First retry delay after a failed reconcile; doubled per consecutive failure of a key.
pub const BACKOFF_BASE: Duration = Duration::from_millis(10);
/// Longest retry delay after failures.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How often a new leader checks whether its caches have loaded before it starts workers.
pub const CACHE_SYNC_POLL: Duration = Duration::from_millis(20);

/// What a reconciler wants next for the key it handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Reconcile this key again after the delay even if nothing changes (time-based work).
    RequeueAfter(Duration),
    /// Nothing to do until a watched object changes.
    AwaitChange,
}

/// One controller's reconcile function. Level-triggered: it reads the current state of the
/// object named by `key` (from caches) and moves the world one step towards the desired state.
pub trait Reconciler: Send + Sync + 'static {
    /// Name in logs.
    fn name(&self) -> &'static str;
    fn reconcile(&self, key: &str) -> impl Future<Output = Result<Action, crate::Error>> + Send;
    /// Called when the workers stop (leadership lost): forget in-memory state that aborted
    /// reconciles may have left half-recorded (e.g. expectations of writes never sent).
    fn reset(&self) {}
}

#[derive(Default)]
struct QueueState {
    queue: VecDeque<String>,
    /// Keys queued or to be queued again when their processing ends.
    dirty: HashSet<String>,
    processing: HashSet<String>,
    shutdown: bool,
}

/// A bounded, de-duplicated work queue of keys; see the module docs.
pub struct WorkQueue {
    state: Mutex<QueueState>,
    capacity: usize,
    items: Notify,
    space: Notify,
}

impl WorkQueue {
    pub fn new(capacity: usize) -> WorkQueue {
        WorkQueue {
            state: Mutex::new(QueueState::default()),
            capacity,
            items: Notify::new(),
            space: Notify::new(),
        }
    }

    /// Queues `key` unless it is already waiting; waits while the queue is full.
    pub async fn add(&self, key: String) {
        loop {
            let space = self.space.notified();
            tokio::pin!(space);
            space.as_mut().enable();
            if self.try_add(&key) {
                return;
            }
            space.await;
        }
    }

    /// Queues `key` unless it is already waiting; false (and nothing queued) when full.
    pub fn try_add(&self, key: &str) -> bool {
        let mut s = self.state.lock().unwrap();
        if s.dirty.contains(key) || s.shutdown {
            return true;
        }
        if s.dirty.len() >= self.capacity {
            return false;
        }
        s.dirty.insert(key.to_string());
        if !s.processing.contains(key) {
            s.queue.push_back(key.to_string());
            self.items.notify_one();
        }
        true
    }

    /// The next key, which the caller must hand back with [`WorkQueue::done`]; None after
    /// [`WorkQueue::shutdown`].
    pub async fn get(&self) -> Option<String> {
        loop {
            let items = self.items.notified();
            tokio::pin!(items);
            items.as_mut().enable();
            {
                let mut s = self.state.lock().unwrap();
                if s.shutdown {
                    return None;
                }
                if let Some(k) = s.queue.pop_front() {
                    s.dirty.remove(&k);
                    s.processing.insert(k.clone());
                    self.space.notify_waiters();
                    return Some(k);
                }
            }
            items.await;
        }
    }

    /// Ends the processing of `key`; queues it again if it was added meanwhile.
    pub fn done(&self, key: &str) {
        let mut s = self.state.lock().unwrap();
        s.processing.remove(key);
        if s.dirty.contains(key) {
            s.queue.push_back(key.to_string());
            self.items.notify_one();
        }
    }

    /// Puts keys whose workers were aborted back in the queue (they were never `done`).
    pub fn requeue_processing(&self) {
        let mut s = self.state.lock().unwrap();
        for k in std::mem::take(&mut s.processing) {
            // A key being processed is never in `queue`; if it was added meanwhile it is in
            // `dirty` already, held back for `done`, and must be queued all the same (skipping
            // it left the key dirty but unqueued forever: every later add was a no-op).
            s.dirty.insert(k.clone());
            s.queue.push_back(k);
        }
        self.items.notify_waiters();
    }

    /// Number of keys waiting.
    pub fn len(&self) -> usize {
        self.state.lock().unwrap().queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Wakes every `get` with None.
    pub fn shutdown(&self) {
        self.state.lock().unwrap().shutdown = true;
        self.items.notify_waiters();
        self.space.notify_waiters();
    }
}

/// Per-key exponential back-off: `BACKOFF_BASE * 2^failures`, at most `BACKOFF_MAX`.
#[derive(Default)]
pub struct Backoff {
    failures: Mutex<HashMap<String, u32>>,
}

impl Backoff {
    /// The delay before retrying `key` after one more failure.
    pub fn next_delay(&self, key: &str) -> Duration {
        let mut f = self.failures.lock().unwrap();
        let n = f.entry(key.to_string()).or_insert(0);
        let d = backoff_delay(*n);
        *n = n.saturating_add(1);
        d
    }

    /// Forgets the failures of `key` (it succeeded).
    pub fn forget(&self, key: &str) {
        self.failures.lock().unwrap().remove(key);
    }
}

/// The delay after `failures` earlier consecutive failures.
pub fn backoff_delay(failures: u32) -> Duration {
    let factor = 1u32.checked_shl(failures.min(31)).unwrap_or(u32::MAX);
    BACKOFF_BASE.saturating_mul(factor).min(BACKOFF_MAX)
}

/// Keys to add to a queue later; one timer task per controller, earliest deadline per key.
pub struct DelayQueue {
    state: Mutex<DelayState>,
    changed: Notify,
}

#[derive(Default)]
struct DelayState {
    by_time: BTreeMap<(Instant, u64), String>,
    by_key: HashMap<String, (Instant, u64)>,
    seq: u64,
}

impl Default for DelayQueue {
    fn default() -> Self {
        DelayQueue {
            state: Mutex::new(DelayState::default()),
            changed: Notify::new(),
        }
    }
}

impl DelayQueue {
    /// Adds `key` to the work queue after `delay` (an earlier pending time for it wins).
    pub fn add_after(&self, key: &str, delay: Duration) {
        let at = Instant::now() + delay;
        let mut s = self.state.lock().unwrap();
        if let Some(&(t, seq)) = s.by_key.get(key) {
            if t <= at {
                return;
            }
            s.by_time.remove(&(t, seq));
        }
        s.seq += 1;
        let slot = (at, s.seq);
        s.by_time.insert(slot, key.to_string());
        s.by_key.insert(key.to_string(), slot);
        drop(s);
        self.changed.notify_one();
    }

    /// Moves due keys to `queue` forever.
    pub async fn run(&self, queue: &WorkQueue) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let (due, next) = self.take_due(Instant::now());
            for k in due {
                queue.add(k).await;
            }
            match next {
                Some(t) => tokio::select! {
                    _ = tokio::time::sleep_until(t) => {}
                    _ = changed => {}
                },
                None => changed.await,
            }
        }
    }

    fn take_due(&self, now: Instant) -> (Vec<String>, Option<Instant>) {
        let mut s = self.state.lock().unwrap();
        let mut due = Vec::new();
        while let Some((&(t, seq), _)) = s.by_time.first_key_value() {
            if t > now {
                break;
            }
            let k = s.by_time.remove(&(t, seq)).expect("present");
            s.by_key.remove(&k);
            due.push(k);
        }
        (due, s.by_time.first_key_value().map(|(&(t, _), _)| t))
    }
}

/// A function from an informer event to the keys it concerns (may also record observations,
/// e.g. a ReplicaSet's expectations).
pub type KeyFn<E> = Arc<dyn Fn(&E) -> Vec<String> + Send + Sync>;

/// Where one informer's events go: a queue and how to key them.
pub struct Sink<E> {
    pub queue: Arc<WorkQueue>,
    pub keys: KeyFn<E>,
}

/// Feeds one informer's events to several controllers' queues. Key functions see every event
/// (they may record observations), but keys are queued only while this instance leads (a new
/// leader resyncs everything).
pub fn pump<E: Send + 'static>(
    mut rx: mpsc::Receiver<E>,
    sinks: Vec<Sink<E>>,
    leader: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(ev) = rx.recv().await {
            for s in &sinks {
                let keys = (s.keys)(&ev);
                if !*leader.borrow() {
                    continue;
                }
                for k in keys {
                    s.queue.add(k).await;
                }
            }
        }
    })
}

/// A controller ready to run: its reconciler, queue, and how to list every key on resync.
pub struct Controller<R: Reconciler> {
    pub reconciler: Arc<R>,
    pub queue: Arc<WorkQueue>,
    pub workers: usize,
    /// Every key of the primary cache (queued when leadership is gained).
    pub all_keys: Arc<dyn Fn() -> Vec<String> + Send + Sync>,
    /// Whether every cache the reconciler reads has loaded.
    pub synced: Arc<dyn Fn() -> bool + Send + Sync>,
}

impl<R: Reconciler> Controller<R> {
    /// Runs until the task is aborted: workers while `leader` is true, nothing otherwise.
    pub async fn run(self, mut leader: watch::Receiver<bool>) {
        let delays = Arc::new(DelayQueue::default());
        let backoff = Arc::new(Backoff::default());
        let timer = {
            let (d, q) = (delays.clone(), self.queue.clone());
            tokio::spawn(async move { d.run(&q).await })
        };
        let _timer = AbortOnDrop(timer);
        loop {
            if leader.wait_for(|l| *l).await.is_err() {
                return;
            }
            while !(self.synced)() {
                tokio::time::sleep(CACHE_SYNC_POLL).await;
            }
            tracing::info!(controller = self.reconciler.name(), "leading: reconciling");
            let mut workers = JoinSet::new();
            for _ in 0..self.workers.max(1) {
                workers.spawn(worker(
                    self.reconciler.clone(),
                    self.queue.clone(),
                    delays.clone(),
                    backoff.clone(),
                ));
            }
            // Workers first: a resync larger than the queue waits for them to make room.
            let resync = {
                let (q, keys) = (self.queue.clone(), (self.all_keys)());
                tokio::spawn(async move {
                    for k in keys {
                        q.add(k).await;
                    }
                })
            };
            let lost = leader.wait_for(|l| !*l).await.is_err();
            resync.abort();
            workers.shutdown().await;
            self.reconciler.reset();
            self.queue.requeue_processing();
            tracing::info!(controller = self.reconciler.name(), "not leading: stopped");
            if lost {
                return;
            }
        }
    }
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn worker<R: Reconciler>(
    reconciler: Arc<R>,
    queue: Arc<WorkQueue>,
    delays: Arc<DelayQueue>,
    backoff: Arc<Backoff>,
) {
    while let Some(key) = queue.get().await {
        match reconciler.reconcile(&key).await {
            Ok(action) => {
                backoff.forget(&key);
                if let Action::RequeueAfter(d) = action {
                    delays.add_after(&key, d);
                }
            }
            Err(e) => {
                let d = backoff.next_delay(&key);
                tracing::debug!(controller = reconciler.name(), %key, error = %e, retry_ms = d.as_millis() as u64, "reconcile failed");
                delays.add_after(&key, d);
            }
        }
        queue.done(&key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn an_aborted_key_added_meanwhile_is_queued_again() {
        let q = WorkQueue::new(8);
        q.add("a".into()).await;
        assert_eq!(q.get().await.unwrap(), "a");
        // Added while processing (held back), then the worker is aborted (never `done`).
        q.add("a".into()).await;
        q.requeue_processing();
        assert_eq!(q.len(), 1);
        assert_eq!(q.get().await.unwrap(), "a");
        q.done("a");
        // And it can be added and handed out again.
        q.add("a".into()).await;
        assert_eq!(q.get().await.unwrap(), "a");
    }

    #[tokio::test]
    async fn queue_dedupes_and_holds_keys_being_processed() {
        let q = WorkQueue::new(8);
        q.add("a".into()).await;
        q.add("a".into()).await;
        q.add("b".into()).await;
        assert_eq!(q.len(), 2);
        let a = q.get().await.unwrap();
        assert_eq!(a, "a");
        // Added while processing: not handed to another worker until done.
        q.add("a".into()).await;
        assert_eq!(q.get().await.unwrap(), "b");
        assert!(q.is_empty());
        q.done("a");
        assert_eq!(q.get().await.unwrap(), "a");
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_makes_producers_wait() {
        let q = Arc::new(WorkQueue::new(2));
        assert!(q.try_add("a"));
        assert!(q.try_add("b"));
        assert!(!q.try_add("c"));
        assert!(q.try_add("a"), "a key already queued is no new entry");
        let q2 = q.clone();
        let producer = tokio::spawn(async move { q2.add("c".into()).await });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!producer.is_finished());
        let k = q.get().await.unwrap();
        q.done(&k);
        producer.await.unwrap();
        assert_eq!(q.len(), 2);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets() {
        assert_eq!(backoff_delay(0), BACKOFF_BASE);
        assert_eq!(backoff_delay(3), BACKOFF_BASE * 8);
        assert_eq!(backoff_delay(40), BACKOFF_MAX);
        let b = Backoff::default();
        assert_eq!(b.next_delay("k"), BACKOFF_BASE);
        assert_eq!(b.next_delay("k"), BACKOFF_BASE * 2);
        assert_eq!(b.next_delay("other"), BACKOFF_BASE);
        b.forget("k");
        assert_eq!(b.next_delay("k"), BACKOFF_BASE);
    }

    /// Fails its first `fail` calls per key, records call times and overlapping calls.
    struct Flaky {
        fail: usize,
        calls: Mutex<HashMap<String, Vec<Instant>>>,
        running: AtomicUsize,
        max_running: AtomicUsize,
    }

    impl Reconciler for Flaky {
        fn name(&self) -> &'static str {
            "flaky"
        }
        async fn reconcile(&self, key: &str) -> Result<Action, crate::Error> {
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_running.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(5)).await;
            self.running.fetch_sub(1, Ordering::SeqCst);
            let n = {
                let mut c = self.calls.lock().unwrap();
                let v = c.entry(key.to_string()).or_default();
                v.push(Instant::now());
                v.len()
            };
            if n <= self.fail {
                return Err(crate::Error::Invalid(format!("{key}: failing on purpose")));
            }
            Ok(Action::AwaitChange)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn errors_retry_with_growing_backoff_one_worker_per_key_and_only_while_leading() {
        let r = Arc::new(Flaky {
            fail: 3,
            calls: Mutex::default(),
            running: AtomicUsize::new(0),
            max_running: AtomicUsize::new(0),
        });
        let queue = Arc::new(WorkQueue::new(WORK_QUEUE_CAPACITY));
        let (lead_tx, lead_rx) = watch::channel(false);
        let c = Controller {
            reconciler: r.clone(),
            queue: queue.clone(),
            workers: 4,
            all_keys: Arc::new(|| vec!["k".to_string()]),
            synced: Arc::new(|| true),
        };
        let task = tokio::spawn(c.run(lead_rx));
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(r.calls.lock().unwrap().is_empty(), "not leading: nothing runs");
        lead_tx.send_replace(true);
        tokio::time::sleep(Duration::from_secs(5)).await;
        let times = r.calls.lock().unwrap()["k"].clone();
        assert_eq!(times.len(), 4, "three failures, then success: {times:?}");
        // The retries after the three failures waited base, 2x base, 4x base (plus the 5 ms
        // each call takes).
        for (i, w) in times.windows(2).enumerate() {
            let waited = w[1] - w[0];
            assert!(
                waited >= BACKOFF_BASE * (1 << i) + Duration::from_millis(5),
                "{i}: {waited:?}"
            );
        }
        // Events for the same key while it is processed: never two workers at once.
        for _ in 0..20 {
            queue.add("k".into()).await;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(r.calls.lock().unwrap()["k"].len() > 5);
        assert_eq!(r.max_running.load(Ordering::SeqCst), 1);

        lead_tx.send_replace(false);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let before = r.calls.lock().unwrap()["k"].len();
        queue.add("k".into()).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(
            r.calls.lock().unwrap()["k"].len(),
            before,
            "stopped after losing the lease"
        );
        lead_tx.send_replace(true);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(
            r.calls.lock().unwrap()["k"].len() > before,
            "resumed when leading again"
        );
        task.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_resync_larger_than_the_queue_gets_through() {
        let r = Arc::new(Flaky {
            fail: 0,
            calls: Mutex::default(),
            running: AtomicUsize::new(0),
            max_running: AtomicUsize::new(0),
        });
        let c = Controller {
            reconciler: r.clone(),
            queue: Arc::new(WorkQueue::new(2)),
            workers: 1,
            all_keys: Arc::new(|| (0..10).map(|i| format!("k{i}")).collect()),
            synced: Arc::new(|| true),
        };
        let (_lead_tx, lead_rx) = watch::channel(true);
        let task = tokio::spawn(c.run(lead_rx));
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(r.calls.lock().unwrap().len(), 10);
        task.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn requeue_after_fires_on_time() {
        let q = Arc::new(WorkQueue::new(8));
        let d = Arc::new(DelayQueue::default());
        let t = {
            let (d, q) = (d.clone(), q.clone());
            tokio::spawn(async move { d.run(&q).await })
        };
        d.add_after("x", Duration::from_secs(10));
        d.add_after("x", Duration::from_secs(20));
        tokio::time::sleep(Duration::from_secs(9)).await;
        assert!(q.is_empty());
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(q.len(), 1);
        assert_eq!(q.get().await.unwrap(), "x");
        q.done("x");
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(
            q.is_empty(),
            "the later time for the same key was merged into the earlier"
        );
        t.abort();
    }
}
