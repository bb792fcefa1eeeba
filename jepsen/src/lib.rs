//! berth-jepsen: Berth's chaos harness. This crate holds the operation history model and the
//! checkers; the runner that starts `berth server` processes in a lab network, drives workloads
//! and injects faults with nemeses comes next and records into these histories.
//!
//! Invariants: every checker is a pure, deterministic function of a history (no clocks, no
//! randomness, no I/O; the one exception is the wall-clock budget of the linearizability
//! search, which can only turn an answer into "unknown"). The linearizability checker is
//! verified against Porcupine's histories with known verdicts (`tests/porcupine.rs`, data in
//! `../shared/testdata/porcupine/`).
//!
//! It does not know the store's internals or the wire format: it will reach a cluster only
//! through the client crate, and it judges only what clients observed.
//!
//! Modules:
//! - [`history`]: entries (process, invoke/ok/fail/info, function, value, monotonic ns), JSON
//!   Lines reading and writing, pairing of invokes with completions.
//! - [`lin`]: the Wing–Gong/Lowe linearizability search as Porcupine does it (partitions by key,
//!   cache of linearized set and state, interleaved partitions with early stop, a budget).
//! - [`models`]: `Register` (Jepsen's etcd histories), `KvRegister` (Porcupine's kv histories),
//!   `EtcdRegister` (Berth's register workload: keys, versions, cas on value or version).
//! - [`import`]: parsers for Jepsen's etcd logs and EDN kv lines.
//! - [`checkers`]: `set`, `watch` and `append` (Elle's list-append anomalies).

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
