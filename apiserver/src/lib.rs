//! berth-apiserver (placeholder while the crate is written).
