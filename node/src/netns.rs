//! A pod's shared namespaces and its network.
//!
//! The agent creates each pod's network, IPC and UTS namespaces itself (hostname = pod name)
//! and keeps them alive by bind-mounting them at files `<dir>/<pod-uid>` (network), `<dir>/<pod-uid>.ipc`, `<dir>/<pod-uid>.uts`, so
//! every container of the pod joins them by path and they outlive container restarts.
//! [`PodNetwork`] connects the network namespace; until the net crate's bridge/veth network
//! implements it, [`LoopbackOnly`] brings `lo` up and gives the pod no address of its own.

use crate::Error;
use futures::future::BoxFuture;
use std::ffi::CString;
use std::net::IpAddr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// Connects pods' network namespaces to the node's network.
pub trait PodNetwork: Send + Sync + 'static {
    /// Sets up the pod's network inside `netns_path` (idempotent: called again after an agent
    /// restart). Returns the pod's IP, or None when it has none of its own.
    fn attach<'a>(
        &'a self,
        pod_uid: &'a str,
        netns_path: &'a Path,
    ) -> BoxFuture<'a, Result<Option<IpAddr>, Error>>;
    /// Releases what `attach` took (addresses, host-side links); the namespace itself is the
    /// agent's to remove. Idempotent.
    fn detach<'a>(&'a self, pod_uid: &'a str, netns_path: &'a Path) -> BoxFuture<'a, Result<(), Error>>;
}

/// Loopback only: `lo` up, no pod IP (status reports the host IP).
pub struct LoopbackOnly;

impl PodNetwork for LoopbackOnly {
    fn attach<'a>(
        &'a self,
        _pod_uid: &'a str,
        netns_path: &'a Path,
    ) -> BoxFuture<'a, Result<Option<IpAddr>, Error>> {
        let path = netns_path.to_path_buf();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || in_netns(&path, set_loopback_up))
                .await
                .map_err(|e| Error::Network(format!("loopback task: {e}")))??;
            Ok(None)
        })
    }

    fn detach<'a>(&'a self, _pod_uid: &'a str, _netns_path: &'a Path) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async { Ok(()) })
    }
}

/// The bind-mounted namespaces of one pod.
#[derive(Debug, Clone)]
pub struct PodNamespaces {
    pub net: PathBuf,
    pub ipc: PathBuf,
    pub uts: PathBuf,
}

impl PodNamespaces {
    pub fn paths(dir: &Path, pod_uid: &str) -> PodNamespaces {
        PodNamespaces {
            net: dir.join(pod_uid),
            ipc: dir.join(format!("{pod_uid}.ipc")),
            uts: dir.join(format!("{pod_uid}.uts")),
        }
    }

    fn all(&self) -> [&Path; 3] {
        [&self.net, &self.ipc, &self.uts]
    }

    /// Whether all three are bound (a namespace file, not the empty placeholder).
    pub fn exist(&self) -> bool {
        self.all().iter().all(|p| is_nsfs(p))
    }
}

fn is_nsfs(p: &Path) -> bool {
    const NSFS_MAGIC: i64 = 0x6e73_6673;
    let Ok(c) = CString::new(p.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statfs into a zeroed struct with a valid path.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    rc == 0 && st.f_type as i64 == NSFS_MAGIC
}

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("path without NUL")
}

fn last_os_error(what: &str) -> Error {
    Error::Network(format!("{what}: {}", std::io::Error::last_os_error()))
}

/// Creates the pod's namespaces (idempotent) with `hostname` in its UTS namespace.
/// Runs on a thread of its own: unshare(2) changes the calling thread's namespaces, and the
/// thread ends right after, so no other work ever runs inside them.
pub fn create(ns: &PodNamespaces, hostname: &str) -> Result<(), Error> {
    if ns.exist() {
        return Ok(());
    }
    remove(ns)?;
    let ns2 = ns.clone();
    let hostname = hostname.to_string();
    std::thread::spawn(move || create_on_this_thread(&ns2, &hostname))
        .join()
        .map_err(|_| Error::Network("namespace thread panicked".into()))?
}

fn create_on_this_thread(ns: &PodNamespaces, hostname: &str) -> Result<(), Error> {
    for p in ns.all() {
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
        }
        std::fs::File::create(p).map_err(|e| Error::io(p, e))?;
    }
    // SAFETY: unshare on this thread only (CLONE_NEWNET/IPC/UTS are per-thread).
    if unsafe { libc::unshare(libc::CLONE_NEWNET | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS) } != 0 {
        return Err(last_os_error("unshare"));
    }
    // SAFETY: sethostname with a buffer and its length.
    if unsafe { libc::sethostname(hostname.as_ptr().cast(), hostname.len()) } != 0 {
        return Err(last_os_error("sethostname"));
    }
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() };
    for (kind, p) in [("net", &ns.net), ("ipc", &ns.ipc), ("uts", &ns.uts)] {
        let src = PathBuf::from(format!("/proc/self/task/{tid}/ns/{kind}"));
        bind(&src, p)?;
    }
    Ok(())
}

fn bind(src: &Path, dst: &Path) -> Result<(), Error> {
    let (s, d) = (cstr(src), cstr(dst));
    // SAFETY: valid NUL-terminated paths; a bind mount with no data.
    let rc = unsafe {
        libc::mount(
            s.as_ptr(),
            d.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(last_os_error(&format!(
            "bind {} on {}",
            src.display(),
            dst.display()
        )));
    }
    Ok(())
}

/// Unmounts and removes the pod's namespace files (idempotent).
pub fn remove(ns: &PodNamespaces) -> Result<(), Error> {
    for p in ns.all() {
        // A file still mounted after a detached unmount is only possible if it was mounted twice.
        while is_nsfs(p) {
            // SAFETY: valid path; MNT_DETACH so a process still inside does not block us.
            if unsafe { libc::umount2(cstr(p).as_ptr(), libc::MNT_DETACH) } != 0 {
                return Err(last_os_error(&format!("umount {}", p.display())));
            }
        }
        match std::fs::remove_file(p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(p, e)),
        }
    }
    Ok(())
}

/// Runs `f` on a new thread that has joined the network namespace at `path`.
pub fn in_netns<T: Send + 'static>(
    path: &Path,
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    std::thread::spawn(move || {
        // SAFETY: setns on this thread with an open namespace file.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(last_os_error("setns"));
        }
        f()
    })
    .join()
    .map_err(|_| Error::Network("netns thread panicked".into()))?
}

/// Sets `lo` up in the current thread's network namespace (SIOCSIFFLAGS).
fn set_loopback_up() -> Result<(), Error> {
    // SAFETY: a socket only for the interface ioctls; closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(last_os_error("socket"));
    }
    // SAFETY: ifreq zeroed, name copied within bounds, ioctls on our socket.
    let r = unsafe {
        let mut req: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo".iter().enumerate() {
            req.ifr_name[i] = *b as libc::c_char;
        }
        if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) != 0 {
            Err(last_os_error("SIOCGIFFLAGS lo"))
        } else {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            if libc::ioctl(fd, libc::SIOCSIFFLAGS, &req) != 0 {
                Err(last_os_error("SIOCSIFFLAGS lo"))
            } else {
                Ok(())
            }
        }
    };
    // SAFETY: closing the socket we opened.
    unsafe { libc::close(fd) };
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real namespaces: created, joined (hostname and lo as set), survive, removed.
    #[tokio::test]
    async fn create_attach_and_remove_pod_namespaces() {
        let dir = PathBuf::from(format!("/run/bnode-unit-ns-{}", std::process::id()));
        let ns = PodNamespaces::paths(&dir, "u1");
        create(&ns, "web-0").unwrap();
        assert!(ns.exist());
        create(&ns, "web-0").unwrap(); // idempotent
        assert_eq!(LoopbackOnly.attach("u1", &ns.net).await.unwrap(), None);
        let out = std::process::Command::new("nsenter")
            .arg(format!("--net={}", ns.net.display()))
            .arg(format!("--uts={}", ns.uts.display()))
            .args([
                "sh",
                "-c",
                "hostname; cat /sys/class/net/lo/operstate; ls /sys/class/net",
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(text.starts_with("web-0\n"), "{text}");
        assert!(text.contains("unknown\n"), "lo is up (operstate unknown): {text}");
        // A TCP listener inside the namespace is reachable from inside only.
        let port = in_netns(&ns.net, || {
            let l =
                std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| Error::io(Path::new("bind"), e))?;
            let port = l.local_addr().unwrap().port();
            std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| Error::io(Path::new("c"), e))?;
            Ok(port)
        })
        .unwrap();
        assert!(port > 0);
        LoopbackOnly.detach("u1", &ns.net).await.unwrap();
        remove(&ns).unwrap();
        assert!(!ns.net.exists() && !ns.ipc.exists() && !ns.uts.exists());
        remove(&ns).unwrap();
        std::fs::remove_dir(&dir).unwrap();
    }
}
