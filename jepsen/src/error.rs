//! The one error type of the crate.

use std::path::PathBuf;

use crate::history::Process;

/// What can go wrong while reading a history or preparing it for a checker.
///
/// A history that is merely *wrong* (not linearizable, lost writes, a cycle) is not an error:
/// that is a checker's verdict. Errors are for input that cannot be checked at all.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read or write {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("line {line}: {message}")]
    Parse { line: usize, message: String },
    #[error("history entry {index}: {kind} from process {process} has no open invoke to complete")]
    Unpaired {
        index: usize,
        process: Process,
        kind: &'static str,
    },
    #[error("history entry {index}: completion of `{f}` pairs with an invoke of `{invoked}`")]
    MismatchedCompletion {
        index: usize,
        f: String,
        invoked: String,
    },
    #[error("history entry {index}: completes at {ret} ns, before its invoke at {call} ns")]
    CompletesBeforeInvoke { index: usize, call: u64, ret: u64 },
    #[error("invalid {field}: {message}")]
    Config { field: String, message: String },
    #[error("lab network: `{step}` failed: {message}")]
    Lab { step: String, message: String },
    #[error("cluster: {0}")]
    Cluster(String),
    #[error("interrupted (Ctrl-C); the cluster and the lab were removed")]
    Interrupted,
    #[error("operation at history entry {index} (`{f}`): {message}")]
    BadOperation {
        index: usize,
        f: String,
        message: String,
    },
}

impl Error {
    pub(crate) fn bad_op(index: usize, f: &str, message: impl Into<String>) -> Self {
        Error::BadOperation {
            index,
            f: f.to_string(),
            message: message.into(),
        }
    }
}
