//! berth-raft: the openraft glue that turns one [`berth_store::Store`] per member into a
//! replicated, linearizable control-plane store. It owns the Raft log (two column families in
//! the store's own RocksDB), the state-machine adapter, bootstrap / join / member changes,
//! leader tracking and forwarding, read-index reads, and the leader's duties (lease expiry,
//! auto-compaction). The API server uses one [`RaftHandle`].
//!
//! Invariants: a log append (and a vote) is acknowledged to openraft only after the RocksDB
//! WAL holding it is synced, with many appends grouped into one sync on a dedicated thread
//! (the async runtime never waits on a sync); each batch of applied entries is one store
//! write batch that also holds the applied marker (last log id + membership), so the data and
//! the point it reached are atomic; acknowledged log entries and votes are also recorded in
//! the data dir's durable mark, and a member whose recovered log or vote is behind it (its WAL
//! lost records) refuses to start instead of serving; a forwarded write is retried only when
//! it certainly was not proposed, so no command is applied twice; only the leader expires
//! leases, and a new leader gives every lease a fresh TTL first; members of different clusters
//! never mix (every peer message carries the cluster id, and a data dir of another cluster is
//! refused).
//!
//! It does not know tonic/gRPC, HTTP or the wire format: peer messages are opaque payload
//! bytes carried by a [`PeerTransport`] that the API server implements (and
//! [`testing::TestNet`] in process). It reads no command line or environment.
//!
//! Data dir layout: `cluster_id` (hex, written before anything else), `db/` (the store's
//! RocksDB, with the log in the [`LOG_CF`] and [`META_CF`] column families), `snapshot/current`
//! (the latest snapshot, fsynced), `raft_durable` (the durable mark: last log id and vote
//! acknowledged as durable; a member whose recovered log or vote is behind it refuses to start).
//!
//! For the API server: route every inbound peer message to [`RaftHandle::handle_peer`] (the
//! [`PeerRpc`] kind plus the payload bytes; an `Err` there becomes the transport's
//! [`TransportError::Remote`] on the caller's side); allow peer messages larger than gRPC's
//! default 4 MiB (an AppendEntries batch holds up to 300 entries; snapshot chunks are 1 MiB);
//! in join mode, register the handle before awaiting [`RaftHandle::joined`]; call
//! [`RaftHandle::shutdown`] before dropping the last handle.

mod batch;
mod config;
mod durable;
mod error;
mod leases;
mod log_store;
mod network;
mod node;
mod read_index;
mod seed;
mod state_machine;
pub mod testing;
mod types;

pub use batch::{BATCHES_IN_FLIGHT_MAX, BATCH_COMMANDS_MAX};
pub use config::RaftConfig;
pub use error::{RaftError, TransportError};
pub use leases::AutoCompaction;
pub use log_store::{FsyncObserver, LogReader, LogStore, LOG_CF, META_CF};
pub use network::{PeerRpc, PeerTransport};
pub use node::{MemberRole, MemberStatus, RaftHandle, RaftStatus};
pub use seed::seed_data_dir;
pub use state_machine::{SnapshotBuilder, StateMachine};
pub use types::{cluster_id, member_id, ApplyError, ApplyResult, Member, MemberId, Proposal, TypeConfig};

#[cfg(test)]
mod cluster_tests;
#[cfg(test)]
mod suite_test;
