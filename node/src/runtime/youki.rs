//! The embedded runtime: youki's libcontainer, run in a short-lived single-threaded helper
//! process (`berth runtime ...`, which speaks the subset of runc's command line that
//! [`super::oci::OciCli`] uses), never inside the agent itself: libcontainer clones processes,
//! which is only safe from a process with one thread, and the agent runs a multi-threaded async
//! runtime. The helper started with `run` is the container init's parent: it waits for it and
//! exits with its status (128 + signal when killed), as `runc run` does; the helper itself is
//! the child of the container's monitor ([`super::monitor`]), which outlives the agent.

use crate::Error;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::Container;
use libcontainer::signal::Signal;
use libcontainer::syscall::syscall::SyscallType;
use libcontainer::workload::default::DefaultExecutor;
use std::path::PathBuf;

/// The library version reported in the Node's nodeInfo.
pub const VERSION: &str = "libcontainer://0.7.0";

/// One helper invocation.
#[derive(Debug, Clone)]
pub enum Command {
    /// Create and start the container from `bundle`, write the init's pid to `pid_file` (as
    /// runc's `--pid-file`: only once the process exists), wait for it; its state is kept.
    Run {
        root: PathBuf,
        bundle: PathBuf,
        id: String,
        pid_file: Option<PathBuf>,
    },
    Kill {
        root: PathBuf,
        id: String,
        signal: i32,
    },
    Delete {
        root: PathBuf,
        id: String,
    },
    Exec {
        root: PathBuf,
        id: String,
        argv: Vec<String>,
    },
}

fn lc(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Runtime(format!("{what}: {e}"))
}

/// Runs one helper command; returns the process's exit code.
pub fn run(cmd: Command) -> Result<i32, Error> {
    match cmd {
        Command::Run {
            root,
            bundle,
            id,
            pid_file,
        } => {
            let mut c = ContainerBuilder::new(id.clone(), SyscallType::default())
                .with_executor(DefaultExecutor {})
                .with_root_path(root)
                .map_err(|e| lc("root", e))?
                .validate_id()
                .map_err(|e| lc("id", e))?
                .as_init(bundle)
                .with_systemd(false)
                .with_detach(false)
                .build()
                .map_err(|e| lc("create", e))?;
            c.start().map_err(|e| lc("start", e))?;
            let pid = c
                .pid()
                .ok_or_else(|| Error::Runtime("started container has no pid".into()))?;
            if let Some(p) = pid_file {
                if let Err(e) = super::monitor::write_atomic(&p, pid.as_raw().to_string().as_bytes()) {
                    // Nobody would count the container as started: do not leave it running.
                    if let Ok(sig) = Signal::try_from(libc::SIGKILL) {
                        let _ = c.kill(sig, true);
                    }
                    wait(pid.as_raw());
                    return Err(e);
                }
            }
            Ok(wait(pid.as_raw()))
        }
        Command::Kill { root, id, signal } => {
            let mut c = Container::load(root.join(&id)).map_err(|e| lc("load", e))?;
            let sig = Signal::try_from(signal).map_err(|e| lc("signal", e))?;
            c.kill(sig, true).map_err(|e| lc("kill", e))?;
            Ok(0)
        }
        Command::Delete { root, id } => {
            let dir = root.join(&id);
            if !dir.exists() {
                return Ok(0);
            }
            let mut c = Container::load(dir).map_err(|e| lc("load", e))?;
            c.delete(true).map_err(|e| lc("delete", e))?;
            Ok(0)
        }
        Command::Exec { root, id, argv } => {
            let pid = ContainerBuilder::new(id, SyscallType::default())
                .with_executor(DefaultExecutor {})
                .with_root_path(root)
                .map_err(|e| lc("root", e))?
                .validate_id()
                .map_err(|e| lc("id", e))?
                .as_tenant()
                .with_detach(false)
                .with_container_args(argv)
                .build()
                .map_err(|e| lc("exec", e))?;
            Ok(wait(pid.as_raw()))
        }
    }
}

/// Waits for `pid` (a clone child without an exit signal, hence `__WALL`); 128 + signal when
/// it was killed.
fn wait(pid: i32) -> i32 {
    let mut status = 0;
    loop {
        // SAFETY: waitpid on our own child with a valid status pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::__WALL) };
        if r == pid {
            break;
        }
        if r < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return 128;
        }
    }
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        128
    }
}
