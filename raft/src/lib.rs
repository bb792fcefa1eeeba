//! berth-raft (placeholder while the crate is written).
