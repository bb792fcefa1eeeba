//! Integration tests of berth-store through its public API (one binary, one link).

mod common;

mod compact;
mod determinism;
mod kv;
mod lease;
mod snapshot;
mod txn;
mod watch;
