//! The node's image store and the formats it reads and writes.

pub mod archive;
pub mod busybox;
pub mod reference;
pub mod registry;
pub mod store;

pub use store::{ImageInfo, ImageStore, ResolvedImage};
