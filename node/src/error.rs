//! The crate's error type.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid image reference {0}")]
    InvalidReference(String),
    #[error("invalid image: {0}")]
    InvalidImage(String),
    #[error("image {0} not found in the node's store")]
    ImageNotFound(String),
    /// A registry pull failed (unreachable, refused, not found, content not as announced).
    #[error("{0}")]
    Pull(String),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("control plane: {0}")]
    Client(#[from] berth_client::ClientError),
    #[error("runtime: {0}")]
    Runtime(String),
    #[error("cgroups: {0}")]
    Cgroup(String),
    #[error("pod network: {0}")]
    Network(String),
    #[error("{0}")]
    Pod(String),
}

impl Error {
    pub fn io(path: &Path, source: std::io::Error) -> Error {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
