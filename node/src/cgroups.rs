//! Cgroups of pods, on cgroup v1 (hybrid hierarchies, one per controller) and v2 (unified).
//!
//! Layout: `<parent>/pod-<uid>` is a pod's cgroup (its pids limit is set here), and
//! `<parent>/pod-<uid>/<container>` a container's, created by the runtime from the OCI spec
//! with the limits of [`Limits`]. Kubernetes' quantities turn into cgroup values here:
//! limits.cpu -> CFS quota over a 100 ms period, requests.cpu -> shares (v2: weight),
//! limits.memory -> a memory limit without swap. Teardown kills what is left and removes the
//! pod's cgroup in every hierarchy.

use crate::Error;
use berth_proto::corev1::ResourceRequirements;
use berth_proto::quantity::Quantity;
use std::path::{Path, PathBuf};

/// CFS period for CPU limits, as the kubelet uses.
pub const CPU_PERIOD_US: u64 = 100_000;
/// Shares for a container without a cpu request (the kernel's minimum), as the kubelet sets.
pub const CPU_SHARES_MIN: u64 = 2;
pub const CPU_SHARES_MAX: u64 = 262_144;
/// Attempts to remove a cgroup whose last processes are still exiting.
const RMDIR_ATTEMPTS: usize = 50;
const RMDIR_RETRY_MS: u64 = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// A container's cgroup limits (None = unlimited).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Limits {
    pub memory_bytes: Option<i64>,
    pub cpu_quota_us: Option<i64>,
    pub cpu_shares: u64,
}

/// Limits from a container's resources. Bad quantities are errors naming the resource.
pub fn limits(r: Option<&ResourceRequirements>) -> Result<Limits, Error> {
    let mut out = Limits {
        cpu_shares: CPU_SHARES_MIN,
        ..Limits::default()
    };
    let Some(r) = r else { return Ok(out) };
    let q = |which: &str, name: &str, v: &str| {
        Quantity::parse(v).map_err(|e| Error::Pod(format!("resources.{which}.{name} {v:?}: {e}")))
    };
    if let Some(v) = r.limits.get("memory") {
        out.memory_bytes = Some(q("limits", "memory", v)?.value().clamp(0, i64::MAX as i128) as i64);
    }
    if let Some(v) = r.limits.get("cpu") {
        let milli = q("limits", "cpu", v)?
            .milli_value()
            .clamp(1, i64::MAX as i128 / 1000) as i64;
        // The kernel's minimum quota is 1 ms.
        out.cpu_quota_us = Some((milli * CPU_PERIOD_US as i64 / 1000).max(1000));
    }
    // Kubernetes defaults a missing request to the limit.
    if let Some(v) = r.requests.get("cpu").or_else(|| r.limits.get("cpu")) {
        let milli = q("requests", "cpu", v)?
            .milli_value()
            .clamp(0, CPU_SHARES_MAX as i128 * 1000) as u64;
        out.cpu_shares = (milli * 1024 / 1000).clamp(CPU_SHARES_MIN, CPU_SHARES_MAX);
    }
    Ok(out)
}

/// cgroup v2 cpu.weight for v1 shares (the conversion runc and the kubelet use).
pub fn shares_to_weight(shares: u64) -> u64 {
    let s = shares.clamp(CPU_SHARES_MIN, CPU_SHARES_MAX);
    1 + ((s - 2) * 9999) / 262_142
}

/// The cgroup hierarchy the agent manages pods under.
#[derive(Debug, Clone)]
pub struct Cgroups {
    version: Version,
    /// Mount point of the cgroup filesystem(s), `/sys/fs/cgroup`.
    root: PathBuf,
    /// Path of the agent's parent cgroup relative to each hierarchy's root, no leading slash.
    parent: String,
}

impl Cgroups {
    /// Detects v1 or v2 at `root`; pods go under `parent` (e.g. `berth/n1`).
    pub fn detect(root: &Path, parent: &str) -> Cgroups {
        let version = if root.join("cgroup.controllers").exists() {
            Version::V2
        } else {
            Version::V1
        };
        Cgroups {
            version,
            root: root.to_path_buf(),
            parent: parent.trim_matches('/').to_string(),
        }
    }

    pub fn version(&self) -> Version {
        self.version
    }

    /// A pod's cgroup path as the OCI spec's `cgroupsPath` takes it (absolute in the hierarchy).
    pub fn pod_path(&self, uid: &str) -> String {
        format!("/{}/pod-{uid}", self.parent)
    }

    pub fn container_path(&self, uid: &str, container: &str) -> String {
        format!("{}/{container}", self.pod_path(uid))
    }

    /// Directories of `rel` in every hierarchy that exists (v2: one).
    fn dirs(&self, rel: &str) -> Vec<PathBuf> {
        let rel = rel.trim_start_matches('/');
        match self.version {
            Version::V2 => vec![self.root.join(rel)],
            Version::V1 => std::fs::read_dir(&self.root)
                .map(|rd| {
                    rd.flatten()
                        .filter(|e| e.path().join("cgroup.procs").exists() && !e.path().is_symlink())
                        .map(|e| e.path().join(rel))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// Creates the pod's cgroup with its pids limit (None = unlimited).
    pub fn create_pod(&self, uid: &str, pids_max: Option<u64>) -> Result<(), Error> {
        let rel = self.pod_path(uid);
        let pids = pids_max.map_or("max".to_string(), |n| n.to_string());
        match self.version {
            Version::V2 => {
                self.enable_controllers(&rel)?;
                let dir = self.root.join(rel.trim_start_matches('/'));
                mkdir(&dir)?;
                write(&dir.join("pids.max"), &pids)
            }
            Version::V1 => {
                let dir = self.root.join("pids").join(rel.trim_start_matches('/'));
                mkdir(&dir)?;
                write(&dir.join("pids.max"), &pids)
            }
        }
    }

    /// v2: a controller must be enabled in every ancestor's subtree_control for a child to use
    /// it (the "no internal processes" rule holds: the agent's cgroups hold no processes).
    fn enable_controllers(&self, rel: &str) -> Result<(), Error> {
        let mut dir = self.root.clone();
        let wanted = ["cpu", "memory", "pids"];
        for part in rel.trim_start_matches('/').split('/') {
            let available = std::fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
            let enabled = std::fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap_or_default();
            for c in wanted {
                let has = |s: &str| s.split_whitespace().any(|x| x == c);
                if has(&available) && !has(&enabled) {
                    write(&dir.join("cgroup.subtree_control"), &format!("+{c}"))?;
                }
            }
            dir = dir.join(part);
            mkdir(&dir)?;
        }
        Ok(())
    }

    /// The container cgroup's file counting OOM kills, and the counter's key.
    pub fn oom_counter(&self, uid: &str, container: &str) -> (PathBuf, String) {
        let rel = self.container_path(uid, container);
        let rel = rel.trim_start_matches('/');
        let file = match self.version {
            Version::V2 => self.root.join(rel).join("memory.events"),
            Version::V1 => self.root.join("memory").join(rel).join("memory.oom_control"),
        };
        (file, "oom_kill".into())
    }

    /// Whether the container's cgroup saw an OOM kill (read before the runtime deletes it).
    pub fn oom_killed(&self, uid: &str, container: &str) -> bool {
        let (file, key) = self.oom_counter(uid, container);
        counter(&file, &key) > 0
    }

    /// Every process in the pod's cgroup (any hierarchy, any depth).
    pub fn pod_pids(&self, uid: &str) -> Vec<i32> {
        let mut pids = Vec::new();
        for dir in self.dirs(&self.pod_path(uid)) {
            collect_pids(&dir, &mut pids);
        }
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// Kills whatever still runs in the pod's cgroup and removes it from every hierarchy.
    /// Thaws first: a runtime killing a container it was still creating can leave its cgroup
    /// frozen (libcontainer's kill-all freezes, fails, never thaws), and a frozen process does
    /// not die.
    pub fn remove_pod(&self, uid: &str) -> Result<(), Error> {
        for dir in self.dirs(&self.pod_path(uid)) {
            thaw_tree(&dir);
        }
        for pid in self.pod_pids(uid) {
            // SAFETY: sending a signal; the pid was read from the pod's own cgroup.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        for dir in self.dirs(&self.pod_path(uid)) {
            remove_tree(&dir)?;
        }
        Ok(())
    }

    /// Removes the agent's parent cgroup if it is empty (agent shutdown, tests).
    pub fn remove_parent(&self) {
        for dir in self.dirs(&self.parent) {
            let _ = remove_tree(&dir);
            // Intermediate levels of the parent path (`berth` of `berth/n1`) when empty.
            let mut p = dir.parent().map(Path::to_path_buf);
            for _ in 1..self.parent.split('/').count() {
                if let Some(d) = p {
                    let _ = std::fs::remove_dir(&d);
                    p = d.parent().map(Path::to_path_buf);
                }
            }
        }
    }
}

fn counter(file: &Path, key: &str) -> u64 {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key)?.trim().parse().ok())
        .unwrap_or(0)
}

fn collect_pids(dir: &Path, out: &mut Vec<i32>) {
    if let Ok(s) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        out.extend(s.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
    }
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                collect_pids(&e.path(), out);
            }
        }
    }
}

/// Removes a cgroup directory tree, children first (cgroupfs only allows rmdir), retrying
/// while exiting processes still hold it.
/// Thaws `dir` and every cgroup under it (v1 `freezer.state`, v2 `cgroup.freeze`); best effort.
fn thaw_tree(dir: &Path) {
    for (file, thawed) in [("freezer.state", "THAWED"), ("cgroup.freeze", "0")] {
        let f = dir.join(file);
        if f.exists() {
            let _ = std::fs::write(&f, thawed);
        }
    }
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            thaw_tree(&e.path());
        }
    }
}

fn remove_tree(dir: &Path) -> Result<(), Error> {
    if !dir.exists() {
        return Ok(());
    }
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&e.path())?;
            }
        }
    }
    for _ in 0..RMDIR_ATTEMPTS {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(RMDIR_RETRY_MS)),
        }
    }
    std::fs::remove_dir(dir).map_err(|e| Error::Cgroup(format!("rmdir {}: {e}", dir.display())))
}

fn mkdir(dir: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(dir).map_err(|e| Error::Cgroup(format!("mkdir {}: {e}", dir.display())))
}

fn write(file: &Path, value: &str) -> Result<(), Error> {
    std::fs::write(file, value)
        .map_err(|e| Error::Cgroup(format!("write {value:?} to {}: {e}", file.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn res(limits: &[(&str, &str)], requests: &[(&str, &str)]) -> ResourceRequirements {
        let m = |kv: &[(&str, &str)]| -> BTreeMap<String, String> {
            kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        ResourceRequirements {
            limits: m(limits).into_iter().collect(),
            requests: m(requests).into_iter().collect(),
        }
    }

    #[test]
    fn quantities_to_cgroup_values() {
        assert_eq!(
            limits(None).unwrap(),
            Limits {
                memory_bytes: None,
                cpu_quota_us: None,
                cpu_shares: 2
            }
        );
        let l = limits(Some(&res(
            &[("cpu", "500m"), ("memory", "64Mi")],
            &[("cpu", "250m")],
        )))
        .unwrap();
        assert_eq!(l.memory_bytes, Some(64 << 20));
        assert_eq!(l.cpu_quota_us, Some(50_000));
        assert_eq!(l.cpu_shares, 256);
        // A request defaults to the limit; a tiny limit gets the kernel's minimum quota.
        let l = limits(Some(&res(&[("cpu", "2")], &[]))).unwrap();
        assert_eq!((l.cpu_quota_us, l.cpu_shares), (Some(200_000), 2048));
        assert_eq!(
            limits(Some(&res(&[("cpu", "1m")], &[]))).unwrap().cpu_quota_us,
            Some(1000)
        );
        let e = limits(Some(&res(&[("memory", "lots")], &[]))).unwrap_err();
        assert!(e.to_string().contains("resources.limits.memory"), "{e}");
    }

    #[test]
    fn weights_like_runc() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
    }

    #[test]
    fn paths() {
        let c = Cgroups::detect(Path::new("/nonexistent"), "/berth/n1/");
        assert_eq!(c.pod_path("u1"), "/berth/n1/pod-u1");
        assert_eq!(c.container_path("u1", "web"), "/berth/n1/pod-u1/web");
    }

    /// A real pod cgroup on this machine's hierarchy: created with its pids limit, a process
    /// moved in is killed and the cgroup is gone after removal.
    #[test]
    fn create_and_remove_a_real_pod_cgroup() {
        let parent = format!("bnode-unit-{}", std::process::id());
        let c = Cgroups::detect(Path::new("/sys/fs/cgroup"), &parent);
        c.create_pod("u1", Some(64)).unwrap();
        let pids_dir = match c.version() {
            Version::V2 => PathBuf::from("/sys/fs/cgroup").join(&parent).join("pod-u1"),
            Version::V1 => PathBuf::from("/sys/fs/cgroup/pids").join(&parent).join("pod-u1"),
        };
        assert_eq!(
            std::fs::read_to_string(pids_dir.join("pids.max")).unwrap().trim(),
            "64"
        );
        let mut child = std::process::Command::new("sleep").arg("100").spawn().unwrap();
        std::fs::write(pids_dir.join("cgroup.procs"), child.id().to_string()).unwrap();
        assert_eq!(c.pod_pids("u1"), vec![child.id() as i32]);
        c.remove_pod("u1").unwrap();
        let status = child.wait().unwrap();
        assert!(!status.success());
        assert!(!pids_dir.exists());
        c.remove_parent();
        assert!(!pids_dir.parent().unwrap().exists());
    }
}
