//! berth-proto (placeholder while the crate is written).
