//! The container runtime interface: run one container from an OCI bundle, signal it, delete
//! it. The agent writes the bundle (see [`oci::spec`]) and owns rootfs, namespaces files and
//! cgroup parents; a runtime only starts and stops processes.

pub mod monitor;
pub mod oci;
pub mod youki;

use crate::cgroups::Limits;
use crate::netns::PodNamespaces;
use crate::Error;
use futures::future::BoxFuture;
use std::path::PathBuf;

/// A bind mount into a container.
#[derive(Debug, Clone, PartialEq)]
pub struct BindMount {
    pub source: PathBuf,
    pub destination: String,
    pub read_only: bool,
}

/// Everything a runtime needs to start one container.
#[derive(Debug, Clone)]
pub struct ContainerConfig {
    /// Unique among the containers sharing `state_root`.
    pub id: String,
    /// The runtime's state directory (on the pod's tmpfs: the state holds the env).
    pub state_root: PathBuf,
    /// Directory holding `config.json` (also on the pod's tmpfs).
    pub bundle: PathBuf,
    /// The assembled root filesystem (an overlayfs mount).
    pub rootfs: PathBuf,
    pub args: Vec<String>,
    /// `NAME=value` entries.
    pub env: Vec<String>,
    pub cwd: String,
    pub hostname: String,
    pub namespaces: PodNamespaces,
    /// The container's cgroup, as an absolute path inside the hierarchy.
    pub cgroups_path: String,
    pub limits: Limits,
    pub mounts: Vec<BindMount>,
    /// stdout and stderr go here (appended by the container's monitor, rotated to
    /// `<log_path>.1` at `log_bytes_max`).
    pub log_path: PathBuf,
    pub log_bytes_max: u64,
    /// The container cgroup's OOM counter file and key, read by the monitor at the exit.
    pub oom_counter: Option<(PathBuf, String)>,
}

/// What a command run in a container printed, and how it ended.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExecOutput {
    pub exit_code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Output beyond the caller's limit was dropped.
    pub truncated: bool,
}

/// How long a runtime's `run` may take to create the container's process before the start
/// counts as failed (image layers are already in place; this covers namespaces, mounts, cgroups).
pub const START_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// A container being started. `started` resolves once its init process exists (the runtime
/// wrote `--pid-file`), or with the runtime's error when it could not be started (then `wait`
/// resolves soon after, the monitor having ended); the container counts as running only after
/// `started` is Ok. `wait` resolves when it has ended (its monitor's exit file). The monitor
/// outlives the agent: after a restart, [`monitor::wait_adopted`] waits instead.
pub struct Started {
    pub started: BoxFuture<'static, Result<(), Error>>,
    pub wait: BoxFuture<'static, Result<monitor::ExitStatus, Error>>,
}

pub trait Runtime: Send + Sync + 'static {
    /// Short name and version for the Node's nodeInfo (`runc://1.1.5`).
    fn version(&self) -> String;
    /// Starts the container (the bundle is written by the runtime from `c`).
    fn run(&self, c: &ContainerConfig) -> Result<Started, Error>;
    /// Sends `signal` to the container's init process; Ok when it is already gone.
    fn kill<'a>(
        &'a self,
        state_root: &'a std::path::Path,
        id: &'a str,
        signal: i32,
    ) -> BoxFuture<'a, Result<(), Error>>;
    /// Removes the exited container's state and cgroup (idempotent).
    fn delete<'a>(&'a self, state_root: &'a std::path::Path, id: &'a str)
        -> BoxFuture<'a, Result<(), Error>>;
    /// Runs a command inside a running container (exec probes); returns its exit code.
    fn exec<'a>(
        &'a self,
        state_root: &'a std::path::Path,
        id: &'a str,
        argv: &'a [String],
        timeout: std::time::Duration,
    ) -> BoxFuture<'a, Result<i32, Error>>;
    /// Runs a command inside a running container and collects its output, each stream cut at
    /// `output_bytes_max` (`berth exec`).
    fn exec_output<'a>(
        &'a self,
        state_root: &'a std::path::Path,
        id: &'a str,
        argv: &'a [String],
        timeout: std::time::Duration,
        output_bytes_max: usize,
    ) -> BoxFuture<'a, Result<ExecOutput, Error>>;
}
