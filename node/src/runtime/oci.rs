//! An OCI runtime driven through its command line (runc's: `run --keep`, `kill`, `delete`,
//! `exec`), and the OCI runtime spec (`config.json`) for a container.
//!
//! `run --pid-file` writes the container init's pid once the process exists: the agent counts
//! the container as started only then ([`super::monitor::wait_started`]).
//! `run --keep` leaves the container's cgroup in place after it exits, so the monitor (and the
//! agent) read its OOM counter before `delete` removes it. `run` is never started by the agent
//! itself: the container's monitor ([`super::monitor`]) runs it as its child.

use super::monitor::{ExitStatus, MonitorFiles};
use super::{ContainerConfig, ExecOutput, Runtime, Started};
use crate::cgroups::CPU_PERIOD_US;
use crate::Error;
use futures::future::BoxFuture;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// Capabilities a container gets (Docker's and containerd's default set).
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// The OCI runtime spec for `c`.
pub fn spec(c: &ContainerConfig) -> Value {
    let caps: Vec<&str> = DEFAULT_CAPABILITIES.to_vec();
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
               "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
               "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
               "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}),
    ];
    for m in &c.mounts {
        let mut opts = vec!["rbind", "rprivate"];
        if m.read_only {
            opts.push("ro");
        }
        mounts
            .push(json!({"destination": m.destination, "type": "bind", "source": m.source, "options": opts}));
    }
    let mut resources = json!({
        "cpu": {"shares": c.limits.cpu_shares},
        "devices": [{"allow": false, "access": "rwm"}],
    });
    if let Some(q) = c.limits.cpu_quota_us {
        resources["cpu"]["quota"] = json!(q);
        resources["cpu"]["period"] = json!(CPU_PERIOD_US);
    }
    if let Some(m) = c.limits.memory_bytes {
        // swap == limit: memory+swap capped at the limit, so the container cannot swap.
        resources["memory"] = json!({"limit": m, "swap": m});
    }
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": c.args,
            "env": c.env,
            "cwd": if c.cwd.is_empty() { "/" } else { c.cwd.as_str() },
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "noNewPrivileges": false,
        },
        "root": {"path": c.rootfs, "readonly": false},
        "hostname": c.hostname,
        "mounts": mounts,
        "linux": {
            "namespaces": [
                {"type": "pid"},
                {"type": "mount"},
                {"type": "network", "path": c.namespaces.net},
                {"type": "ipc", "path": c.namespaces.ipc},
                {"type": "uts", "path": c.namespaces.uts},
            ],
            "cgroupsPath": c.cgroups_path,
            "resources": resources,
            "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
        },
    })
}

/// A runc-compatible runtime command line: a binary and the arguments that come first (the
/// embedded libcontainer helper is `berth runtime`).
pub struct OciCli {
    pub binary: PathBuf,
    pub leading_args: Vec<String>,
    /// Reported as the Node's runtime version; None asks the binary (`--version`).
    pub version: Option<String>,
    /// The monitor's command: program and leading arguments (`[berth, runtime]`); the
    /// monitor runs `run` of this runtime as its child (see [`super::monitor`]).
    pub monitor: Vec<String>,
}

impl OciCli {
    /// runc (or another runc-compatible binary).
    pub fn runc(binary: PathBuf, monitor: Vec<String>) -> OciCli {
        OciCli {
            binary,
            leading_args: Vec::new(),
            version: None,
            monitor,
        }
    }

    /// The monitor's command line for `c`: the monitor options, then this runtime's
    /// foreground `run` (which it starts as its child).
    fn monitor_command(
        &self,
        c: &ContainerConfig,
        files: &MonitorFiles,
    ) -> Result<std::process::Command, Error> {
        let (prog, lead) = self
            .monitor
            .split_first()
            .ok_or_else(|| Error::Runtime("no container monitor command configured".into()))?;
        let mut cmd = std::process::Command::new(prog);
        cmd.args(lead).arg("--root").arg(&c.state_root).arg("monitor");
        cmd.arg("--log").arg(&c.log_path);
        cmd.arg("--log-bytes-max").arg(c.log_bytes_max.to_string());
        cmd.arg("--exit-file").arg(&files.exit_file);
        cmd.arg("--pid-file").arg(&files.pid_file);
        if let Some((file, key)) = &c.oom_counter {
            cmd.arg("--oom-file").arg(file).arg("--oom-key").arg(key);
        }
        cmd.arg("--").arg(&self.binary).args(&self.leading_args);
        cmd.arg("--root").arg(&c.state_root);
        cmd.args(["run", "--keep", "--pid-file"])
            .arg(files.init_pid_file());
        cmd.arg("--bundle").arg(&c.bundle).arg(&c.id);
        Ok(cmd)
    }

    fn cmd(&self, state_root: &Path) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.binary);
        cmd.args(&self.leading_args);
        cmd.arg("--root").arg(state_root);
        cmd.stdin(Stdio::null());
        cmd
    }

    async fn simple(&self, state_root: &Path, args: &[&str]) -> Result<std::process::Output, Error> {
        self.cmd(state_root)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .await
            .map_err(|e| Error::Runtime(format!("{} {}: {e}", self.binary.display(), args.join(" "))))
    }
}

fn not_found(stderr: &[u8]) -> bool {
    let s = String::from_utf8_lossy(stderr);
    s.contains("does not exist") || s.contains("not running") || s.contains("container not found")
}

impl Runtime for OciCli {
    fn version(&self) -> String {
        if let Some(v) = &self.version {
            return v.clone();
        }
        let out = std::process::Command::new(&self.binary).arg("--version").output();
        let v = out
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| {
                s.lines()
                    .next()
                    .map(|l| l.rsplit(' ').next().unwrap_or("").to_string())
            })
            .unwrap_or_default();
        let name = self
            .binary
            .file_name()
            .map_or("oci".into(), |n| n.to_string_lossy().to_string());
        format!("{name}://{v}")
    }

    fn run(&self, c: &ContainerConfig) -> Result<Started, Error> {
        std::fs::create_dir_all(&c.bundle).map_err(|e| Error::io(&c.bundle, e))?;
        std::fs::create_dir_all(&c.state_root).map_err(|e| Error::io(&c.state_root, e))?;
        let config = c.bundle.join("config.json");
        std::fs::write(
            &config,
            serde_json::to_vec_pretty(&spec(c)).expect("spec serializes"),
        )
        .map_err(|e| Error::io(&config, e))?;
        if let Some(d) = c.log_path.parent() {
            std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
        }
        let files = MonitorFiles::new(&c.state_root, &c.id);
        files.clear();
        // Not killed with the agent (no kill_on_drop, no parent-death signal; the monitor
        // starts a session of its own): the container keeps running across agent restarts.
        let mut cmd = tokio::process::Command::from(self.monitor_command(c, &files)?);
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(false)
            .spawn()
            .map_err(|e| Error::Runtime(format!("container monitor: {e}")))?;
        let started = {
            let (files, log) = (files.clone(), c.log_path.clone());
            Box::pin(async move { super::monitor::wait_started(&files, &log, super::START_TIMEOUT).await })
        };
        let wait = Box::pin(async move {
            let st = child
                .wait()
                .await
                .map_err(|e| Error::Runtime(format!("wait: {e}")))?;
            if let Some(exit) = files.read_exit() {
                return Ok(exit);
            }
            // The monitor died before writing its file: its own status is all there is.
            use std::os::unix::process::ExitStatusExt;
            let code = st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0));
            Ok(ExitStatus {
                exit_code: code,
                signal: st.signal().unwrap_or(0),
                oom_killed: false,
                finished_at_ms: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64),
            })
        });
        Ok(Started { started, wait })
    }

    fn kill<'a>(
        &'a self,
        state_root: &'a Path,
        id: &'a str,
        signal: i32,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            let out = self
                .simple(state_root, &["kill", id, &signal.to_string()])
                .await?;
            if out.status.success() || not_found(&out.stderr) {
                Ok(())
            } else {
                Err(Error::Runtime(format!(
                    "kill {id}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                )))
            }
        })
    }

    fn delete<'a>(&'a self, state_root: &'a Path, id: &'a str) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            let out = self.simple(state_root, &["delete", "--force", id]).await?;
            if out.status.success() || not_found(&out.stderr) {
                Ok(())
            } else {
                Err(Error::Runtime(format!(
                    "delete {id}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                )))
            }
        })
    }

    fn exec<'a>(
        &'a self,
        state_root: &'a Path,
        id: &'a str,
        argv: &'a [String],
        timeout: Duration,
    ) -> BoxFuture<'a, Result<i32, Error>> {
        Box::pin(async move {
            let mut child = self
                .cmd(state_root)
                .arg("exec")
                .arg(id)
                .args(argv)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| Error::Runtime(format!("exec: {e}")))?;
            match tokio::time::timeout(timeout, child.wait()).await {
                Ok(Ok(st)) => Ok(st.code().unwrap_or(-1)),
                Ok(Err(e)) => Err(Error::Runtime(format!("exec wait: {e}"))),
                Err(_) => Err(Error::Runtime(format!("exec timed out after {timeout:?}"))),
            }
        })
    }

    fn exec_output<'a>(
        &'a self,
        state_root: &'a Path,
        id: &'a str,
        argv: &'a [String],
        timeout: Duration,
        output_bytes_max: usize,
    ) -> BoxFuture<'a, Result<ExecOutput, Error>> {
        Box::pin(async move {
            let mut child = self
                .cmd(state_root)
                .arg("exec")
                .arg(id)
                .args(argv)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| Error::Runtime(format!("exec: {e}")))?;
            let (out, err) = (child.stdout.take(), child.stderr.take());
            let run = async {
                let (o, e, st) = tokio::join!(
                    read_capped(out, output_bytes_max),
                    read_capped(err, output_bytes_max),
                    child.wait()
                );
                (o, e, st)
            };
            let ((stdout, t1), (stderr, t2), st) = tokio::time::timeout(timeout, run)
                .await
                .map_err(|_| Error::Runtime(format!("exec timed out after {timeout:?}")))?;
            let st = st.map_err(|e| Error::Runtime(format!("exec wait: {e}")))?;
            use std::os::unix::process::ExitStatusExt;
            Ok(ExecOutput {
                exit_code: st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0)),
                stdout,
                stderr,
                truncated: t1 || t2,
            })
        })
    }
}

/// Reads a pipe to its end, keeping at most `max` bytes (the rest is read and dropped, so the
/// writer never blocks on a full pipe); true when something was dropped.
async fn read_capped<R: tokio::io::AsyncRead + Unpin>(r: Option<R>, max: usize) -> (Vec<u8>, bool) {
    use tokio::io::AsyncReadExt;
    let Some(mut r) = r else {
        return (Vec::new(), false);
    };
    let (mut out, mut dropped) = (Vec::new(), false);
    let mut buf = vec![0u8; 16 * 1024];
    while let Ok(n) = r.read(&mut buf).await {
        if n == 0 {
            break;
        }
        let room = max.saturating_sub(out.len());
        out.extend_from_slice(&buf[..n.min(room)]);
        dropped |= n > room;
    }
    (out, dropped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroups::Limits;
    use crate::netns::PodNamespaces;
    use crate::runtime::BindMount;

    #[test]
    fn spec_shares_pod_namespaces_and_carries_limits() {
        let c = ContainerConfig {
            id: "web".into(),
            state_root: "/run/x/runc".into(),
            bundle: "/run/x/b/web".into(),
            rootfs: "/data/pods/u/web/rootfs".into(),
            args: vec!["sh".into(), "-c".into(), "true".into()],
            env: vec!["A=1".into()],
            cwd: String::new(),
            hostname: "pod-a".into(),
            namespaces: PodNamespaces::paths(Path::new("/run/x/netns"), "u"),
            cgroups_path: "/berth/n1/pod-u/web".into(),
            limits: Limits {
                memory_bytes: Some(64 << 20),
                cpu_quota_us: Some(50_000),
                cpu_shares: 512,
            },
            mounts: vec![BindMount {
                source: "/run/x/vol/s".into(),
                destination: "/etc/secret".into(),
                read_only: true,
            }],
            log_path: "/data/logs/web.log".into(),
            log_bytes_max: 1 << 20,
            oom_counter: None,
        };
        let s = spec(&c);
        assert_eq!(s["process"]["cwd"], "/");
        assert_eq!(s["hostname"], "pod-a");
        assert_eq!(
            s["linux"]["namespaces"][2],
            json!({"type": "network", "path": "/run/x/netns/u"})
        );
        assert_eq!(s["linux"]["namespaces"][3]["path"], "/run/x/netns/u.ipc");
        assert_eq!(
            s["linux"]["resources"]["memory"],
            json!({"limit": 64 << 20, "swap": 64 << 20})
        );
        assert_eq!(
            s["linux"]["resources"]["cpu"],
            json!({"shares": 512, "quota": 50_000, "period": 100_000})
        );
        assert_eq!(s["linux"]["cgroupsPath"], "/berth/n1/pod-u/web");
        let last = s["mounts"].as_array().unwrap().last().unwrap().clone();
        assert_eq!(last["options"], json!(["rbind", "rprivate", "ro"]));
    }
}
