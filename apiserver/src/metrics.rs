//! Prometheus metrics of one server, served as text on `--metrics-addr` at `/metrics`.
//!
//! One registry per server (not a global), so several servers in one test process keep their
//! figures apart.

use berth_raft::RaftHandle;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntGauge, Registry, TextEncoder,
};
use std::time::Instant;

pub struct Metrics {
    registry: Registry,
    requests: HistogramVec,
    pub watchers: IntGauge,
    pub watch_streams: IntGauge,
    raft_term: IntGauge,
    raft_commit_index: IntGauge,
    raft_applied_index: IntGauge,
    raft_leader: IntGauge,
    leader_changes: IntCounter,
    store_revision: IntGauge,
    db_size_bytes: IntGauge,
    heap_allocated_bytes: IntGauge,
    proposals: IntCounter,
    proposals_failed: IntCounter,
    fsync_seconds: Histogram,
    /// Renders one at a time, so that mirrored counters are advanced once.
    render_lock: parking_lot::Mutex<()>,
}

/// Observes the time until it is dropped.
pub struct Timer<'a> {
    hist: &'a HistogramVec,
    method: &'static str,
    start: Instant,
}

impl Drop for Timer<'_> {
    fn drop(&mut self) {
        self.hist
            .with_label_values(&[self.method])
            .observe(self.start.elapsed().as_secs_f64());
    }
}

fn gauge(reg: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric");
    reg.register(Box::new(g.clone())).expect("unique metric");
    g
}

fn counter(reg: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric");
    reg.register(Box::new(c.clone())).expect("unique metric");
    c
}

/// Latency buckets from 0.1 ms to ~6.5 s, doubling.
fn latency_buckets() -> Vec<f64> {
    prometheus::exponential_buckets(0.0001, 2.0, 17).expect("valid buckets")
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let requests = HistogramVec::new(
            HistogramOpts::new("berth_grpc_request_seconds", "gRPC request latency by method")
                .buckets(latency_buckets()),
            &["method"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(requests.clone()))
            .expect("unique metric");
        let fsync_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "berth_wal_fsync_seconds",
                "Latency of WAL syncs (one per group commit)",
            )
            .buckets(latency_buckets()),
        )
        .expect("valid metric");
        registry
            .register(Box::new(fsync_seconds.clone()))
            .expect("unique metric");
        let r = &registry;
        Metrics {
            watchers: gauge(r, "berth_watchers", "Open watchers"),
            watch_streams: gauge(r, "berth_watch_streams", "Open watch streams"),
            raft_term: gauge(r, "berth_raft_term", "Current Raft term"),
            raft_commit_index: gauge(r, "berth_raft_commit_index", "Raft commit index"),
            raft_applied_index: gauge(r, "berth_raft_applied_index", "Last applied Raft index"),
            raft_leader: gauge(r, "berth_raft_is_leader", "1 if this member is the leader"),
            leader_changes: counter(r, "berth_raft_leader_changes_total", "Leader changes seen"),
            store_revision: gauge(r, "berth_store_revision", "Current store revision"),
            db_size_bytes: gauge(r, "berth_db_size_bytes", "Approximate database size"),
            heap_allocated_bytes: gauge(
                r,
                "berth_heap_allocated_bytes",
                "Heap bytes in use by this process (glibc malloc, all arenas)",
            ),
            proposals: counter(
                r,
                "berth_raft_proposals_total",
                "Proposals made through this member",
            ),
            proposals_failed: counter(r, "berth_raft_proposals_failed_total", "Proposals that failed"),
            requests,
            fsync_seconds,
            render_lock: parking_lot::Mutex::new(()),
            registry,
        }
    }

    /// A callback for the raft crate's WAL sync thread (it knows nothing of Prometheus).
    pub fn fsync_observer(&self) -> std::sync::Arc<dyn Fn(std::time::Duration) + Send + Sync> {
        let hist = self.fsync_seconds.clone();
        std::sync::Arc::new(move |d| hist.observe(d.as_secs_f64()))
    }

    pub fn time(&self, method: &'static str) -> Timer<'_> {
        Timer {
            hist: &self.requests,
            method,
            start: Instant::now(),
        }
    }

    pub fn proposal(&self, ok: bool) {
        self.proposals.inc();
        if !ok {
            self.proposals_failed.inc();
        }
    }

    /// Refreshes the gauges that mirror Raft and store state, then renders everything.
    pub fn render(&self, raft: &RaftHandle) -> String {
        let _one_at_a_time = self.render_lock.lock();
        let st = raft.status();
        self.raft_term.set(st.term as i64);
        self.raft_commit_index.set(st.commit_index as i64);
        self.raft_applied_index.set(st.applied_index as i64);
        self.raft_leader
            .set((st.leader_id == Some(raft.member_id())) as i64);
        // A counter mirrors the raft crate's count: add what is new since the last render.
        let seen = self.leader_changes.get();
        self.leader_changes.inc_by(st.leader_changes.saturating_sub(seen));
        self.store_revision.set(raft.store().revision());
        self.db_size_bytes.set(raft.store().db_size_bytes() as i64);
        self.heap_allocated_bytes.set(heap_allocated_bytes() as i64);
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding");
        String::from_utf8(out).expect("prometheus text is utf-8")
    }
}

/// Bytes the process has allocated and not freed, by glibc's own count (small chunks in every
/// arena plus mmapped ones): unlike RSS it does not include freed memory malloc keeps.
fn heap_allocated_bytes() -> usize {
    // SAFETY: mallinfo2 only reads malloc's statistics; it takes no pointers.
    let mi = unsafe { libc::mallinfo2() };
    mi.uordblks + mi.hblkhd
}
