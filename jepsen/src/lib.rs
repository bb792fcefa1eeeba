//! berth-jepsen: Berth's chaos harness. It holds the operation history model, the checkers,
//! and the runner ([`run`]) that builds a lab network of namespaces, starts `berth server`
//! processes in it, drives workloads through the client crate, injects faults with nemeses and
//! writes a report folder (see `JEPSEN.md` at the repository root).
//!
//! Invariants: every checker is a pure, deterministic function of a history (no clocks, no
//! randomness, no I/O; the one exception is the wall-clock budget of the linearizability
//! search, which can only turn an answer into "unknown"). The linearizability checker is
//! verified against Porcupine's histories with known verdicts (`tests/porcupine.rs`, data in
//! `../shared/testdata/porcupine/`). The runner removes everything it creates (processes by
//! PID, namespaces named `<lab prefix>...`, `bj-` by default) on every exit path, and takes a typed [`run::Config`]: it
//! parses no arguments.
//!
//! It does not know the store's internals or the wire format beyond the client crate: it
//! reaches a cluster only through `berth_client` (`EtcdClient`, `ResourceClient`), and it judges only what clients observed.
//!
//! Modules:
//! - [`history`]: entries (process, invoke/ok/fail/info, function, value, monotonic ns), JSON
//!   Lines reading and writing, pairing of invokes with completions.
//! - [`lin`]: the Wing–Gong/Lowe linearizability search as Porcupine does it (partitions by key,
//!   cache of linearized set and state, interleaved partitions with early stop, a budget).
//! - [`models`]: `Register` (Jepsen's etcd histories), `KvRegister` (Porcupine's kv histories),
//!   `EtcdRegister` (Berth's register workload: keys, versions, cas on value or version).
//! - [`import`]: parsers for Jepsen's etcd logs and EDN kv lines.
//! - [`checkers`]: `set`, `watch`, `append` (Elle's list-append anomalies), `lease` and
//!   `controlplane` (pods bound once, nodes never overcommitted, replicas converge).
//! - [`run`]: the runner: lab, cluster, workloads, nemesis, checking, report.

mod error;

pub mod checkers;
pub mod history;
pub mod import;
pub mod lin;
pub mod models;
pub mod run;

pub use error::Error;
pub use history::{History, Op, OpType, Operation, Outcome, Process};
pub use lin::{check_history, check_operations, CheckOptions, Decode, LinOp, Model, ModelOp, Verdict};
