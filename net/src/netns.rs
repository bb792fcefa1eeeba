//! Running code inside another network namespace.
//!
//! `setns(2)` changes the namespace of the calling *thread* only, so it must never run on a
//! tokio worker (the worker would go on running unrelated tasks in the pod's namespace) nor on
//! a pooled blocking thread (reused later). Each call here spawns a dedicated OS thread, enters
//! the namespace there, runs the closure and lets the thread end; the async caller awaits the
//! result over a oneshot channel, so no runtime thread blocks.
//!
//! A netlink socket stays bound to the namespace it was created in, whichever thread later uses
//! it: so one short-lived thread creating the socket is all netlink needs.

use std::fs::File;
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::sched::{setns, CloneFlags};
use rtnetlink::sys::{protocols::NETLINK_ROUTE, Socket, TokioSocket};

use crate::error::NetError;

/// Runs `f` on a fresh thread inside the network namespace at `netns_path` (None: the
/// namespace of the thread calling this, which a new thread inherits).
pub async fn run_in<T, F>(netns_path: Option<&Path>, f: F) -> Result<T, NetError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, NetError> + Send + 'static,
{
    // Open the namespace file here, so an unknown path fails before any thread exists.
    let target = match netns_path {
        Some(path) => Some((path.to_path_buf(), open_netns(path)?)),
        None => None,
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("berth-netns".into())
        .spawn(move || {
            let result = enter(target).and_then(|()| f());
            let _ = tx.send(result);
        })
        .map_err(|e| NetError::io("spawning a namespace thread", e))?;
    rx.await
        .expect("namespace thread ends by sending its result (a panic there is a bug)")
}

fn enter(target: Option<(PathBuf, File)>) -> Result<(), NetError> {
    if let Some((path, file)) = target {
        setns(file, CloneFlags::CLONE_NEWNET).map_err(|source| NetError::Setns { path, source })?;
    }
    Ok(())
}

/// Opens a network namespace file (`/run/netns/<name>`, `/proc/<pid>/ns/net`).
pub fn open_netns(path: &Path) -> Result<File, NetError> {
    File::open(path).map_err(|e| NetError::io(format!("opening network namespace {}", path.display()), e))
}

/// A netlink route socket bound to the namespace at `netns_path` (None: the caller's), ready
/// for rtnetlink on the current tokio runtime.
pub async fn netlink_socket(netns_path: Option<&Path>) -> Result<TokioSocket, NetError> {
    let fd: OwnedFd = run_in(netns_path, || {
        let socket = Socket::new(NETLINK_ROUTE).map_err(|e| NetError::io("creating a netlink socket", e))?;
        // SAFETY: into_raw_fd hands over sole ownership of a valid descriptor.
        Ok(unsafe { OwnedFd::from_raw_fd(socket.into_raw_fd()) })
    })
    .await?;
    // SAFETY: fd is an owned netlink socket; TokioSocket takes ownership (it sets non-blocking
    // and registers with this runtime's reactor, which is why this runs here, not on the thread).
    Ok(unsafe { TokioSocket::from_raw_fd(fd.into_raw_fd()) })
}
