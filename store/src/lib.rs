//! berth-store (placeholder while the crate is written).
