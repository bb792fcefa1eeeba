//! The agent's container monitor, adoption after a restart, and garbage collection, end to
//! end: a real `berth server`, a real `berth agent` killed with SIGKILL and started again on
//! the same data and run dirs, real containers (embedded libcontainer, and runc), observed
//! through the API and on the machine (processes, cgroups, log files, the image store).
//! Names on the machine carry the prefix `bm-`; everything is removed when a test ends.

mod common;

use berth_proto::apiv1;
use berth_proto::corev1::Pod;
use common::agent_env::{build_image, busybox_rootfs, AgentEnv as Env, AgentOpts, IMAGE};
use common::{berth_bin, eventually};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

impl Env {
    /// A server and the busybox image in the node's store; no agent yet.
    /// ... with the agent's pod network `none`.
    async fn new(runtime: &str, agent_args: &[&str]) -> Env {
        let mut args = vec!["--pod-network", "none"];
        args.extend_from_slice(agent_args);
        Env::with_server_args(runtime, &[], &args).await
    }

    /// ... with `server_args` for the server.
    async fn with_server_args(runtime: &str, server_args: &[&str], agent_args: &[&str]) -> Env {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let node = format!("bm{n}");
        let tag = format!("bm-{}-{n}", std::process::id());
        let mut args = vec!["--node-status-interval-ms", "500"];
        args.extend_from_slice(agent_args);
        let env = Env::prepare(
            server_args,
            &node,
            &tag,
            AgentOpts::new(Some(runtime), None, &args),
        )
        .await;
        env.build_image(IMAGE, "a");
        env
    }

    /// Packs a busybox rootfs (plus a file naming `tag`, so images differ) as `tag`.
    fn build_image(&self, tag: &str, marker: &str) {
        let rootfs = self.cluster.dir.path().join(format!("rootfs-{marker}"));
        busybox_rootfs(&rootfs);
        std::fs::write(rootfs.join("marker"), marker).unwrap();
        build_image(&rootfs, tag, &self.cfg.data_dir);
    }

    fn images(&self) -> String {
        let out = Command::new(berth_bin())
            .args(["image", "ls", "--data-dir"])
            .arg(&self.cfg.data_dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// SIGKILL, as a crash would: no chance to stop anything.
    fn kill_agent(&mut self) {
        self.agent.kill();
    }

    async fn delete(&self, name: &str, grace_seconds: Option<i64>) {
        let opts = apiv1::DeleteOptions {
            grace_period_seconds: grace_seconds,
            ..Default::default()
        };
        self.client.delete::<Pod>("default", name, opts).await.unwrap();
    }

    /// The pod's cgroup directories that exist (any hierarchy).
    fn pod_cgroups(&self, uid: &str) -> Vec<PathBuf> {
        let rel = Path::new(&self.cfg.cgroup_parent).join(format!("pod-{uid}"));
        let mut out = Vec::new();
        for e in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
            if e.path().join(&rel).exists() {
                out.push(e.path().join(&rel));
            }
        }
        if Path::new("/sys/fs/cgroup").join(&rel).exists() {
            out.push(Path::new("/sys/fs/cgroup").join(&rel));
        }
        out
    }

    /// The processes in the pod's cgroups (any hierarchy, any depth), sorted.
    fn pod_pids(&self, uid: &str) -> Vec<i32> {
        let mut pids: Vec<i32> = self
            .pod_cgroups(uid)
            .iter()
            .flat_map(|d| dirs_under(d))
            .filter_map(|d| std::fs::read_to_string(d.join("cgroup.procs")).ok())
            .flat_map(|s| s.lines().filter_map(|l| l.parse().ok()).collect::<Vec<i32>>())
            .collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// The pod's log directory (`<data>/logs/<ns>_<name>_<uid>`).
    fn log_dir(&self, pod: &Pod) -> PathBuf {
        let m = pod.metadata.clone().unwrap();
        self.cfg
            .data_dir
            .join("logs")
            .join(format!("{}_{}_{}", m.namespace, m.name, m.uid))
    }
}

fn status_of(p: &Pod) -> berth_proto::corev1::PodStatus {
    p.status.clone().unwrap_or_default()
}

fn uid(p: &Pod) -> String {
    p.metadata.clone().unwrap().uid
}

fn ready(p: &Pod) -> bool {
    let st = status_of(p);
    st.phase == "Running"
        && st
            .conditions
            .iter()
            .any(|c| c.r#type == "Ready" && c.status == "True")
}

fn restart_count(p: &Pod) -> i32 {
    status_of(p)
        .container_statuses
        .first()
        .map_or(-1, |c| c.restart_count)
}

fn running_since(p: &Pod) -> String {
    let st = status_of(p);
    let cs = st.container_statuses.first().cloned().unwrap_or_default();
    cs.state
        .and_then(|s| s.running)
        .map(|r| r.started_at)
        .unwrap_or_default()
}

fn alive(pid: i32) -> bool {
    // A zombie is not alive: its stat line's third field is Z.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|rest| !rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

fn sleeper(name: &str) -> serde_json::Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "main", "image": IMAGE,
                            "command": ["sh", "-c", "echo up; exec sleep 100000"]}]
        }
    })
}

/// SIGKILL the agent with pods running; while it is down, one pod is deleted through the API
/// (gracefully: it waits for the agent), one force-deleted (gone from the API), and one
/// container is killed. The agent started again adopts the running pod (same process, same
/// restart count and start time, still Running and Ready), finishes the graceful deletion,
/// removes the force-deleted pod's processes and cgroups, and restarts the killed container
/// (restart count 1, lastState its exit). The adopted pod can then be deleted as usual.
async fn agent_restart_adopts(runtime: &str) {
    let mut env = Env::new(runtime, &[]).await;
    env.start_agent().await;
    for name in ["keep", "deleted", "forced", "dies"] {
        env.create_pod(sleeper(name)).await;
    }
    let mut pods = std::collections::BTreeMap::new();
    for name in ["keep", "deleted", "forced", "dies"] {
        let p = env.wait_pod(name, "Running and Ready", ready).await;
        assert_eq!(restart_count(&p), 0);
        // Running is reported once the monitor is spawned; the process is there once it spoke.
        let dir = env.log_dir(&p);
        eventually(&format!("{name}: output"), || {
            let up = files_under(&dir)
                .iter()
                .any(|f| std::fs::read_to_string(f).unwrap_or_default().contains("up"));
            async move { up.then_some(()) }
        })
        .await;
        let pids = env.pod_pids(&uid(&p));
        assert!(!pids.is_empty(), "{name}: no container process");
        pods.insert(name, (p, pids));
    }

    env.kill_agent();
    env.delete("deleted", None).await;
    env.delete("forced", Some(0)).await;
    env.wait_gone("forced").await;
    assert!(
        env.pod("deleted").await.is_some(),
        "a graceful deletion waits for the agent"
    );
    let (dies, dies_pids) = &pods["dies"];
    for pid in dies_pids {
        // A container process this test started (read from its cgroup).
        let st = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .unwrap();
        assert!(st.success());
    }
    let exit_file = env
        .cfg
        .run_dir
        .join("pods")
        .join(uid(dies))
        .join("runtime/main.exit");
    eventually("the killed container's exit file", || {
        let f = exit_file.clone();
        async move { f.exists().then_some(()) }
    })
    .await;

    env.start_agent().await;
    // The killed container is restarted: one more restart, its last state the kill.
    let p = env
        .wait_pod("dies", "restarted once", |p| restart_count(p) == 1 && ready(p))
        .await;
    let cs = status_of(&p).container_statuses[0].clone();
    let last = cs
        .last_state
        .and_then(|s| s.terminated)
        .expect("lastState terminated");
    assert_eq!(last.exit_code, 137, "{last:?}\nagent log:\n{}", env.log());
    // The graceful deletion finishes; the force-deleted pod's remains go.
    env.wait_gone("deleted").await;
    for name in ["deleted", "forced"] {
        let (p, pids) = &pods[name];
        eventually(&format!("{name}: processes and cgroups gone"), || {
            let gone = pids.iter().all(|pid| !alive(*pid)) && env.pod_cgroups(&uid(p)).is_empty();
            async move { gone.then_some(()) }
        })
        .await;
        assert!(
            !env.cfg.run_dir.join("pods").join(uid(p)).exists(),
            "{name}: pod tmpfs"
        );
        assert!(!env.log_dir(p).exists(), "{name}: logs");
    }
    // The adopted pod: same process, same count and start time, Running and Ready. The
    // "dies" restart above proves the new agent is syncing, so this is its view too.
    let (keep, keep_pids) = &pods["keep"];
    let now = env.wait_pod("keep", "Running and Ready", ready).await;
    assert_eq!(restart_count(&now), 0);
    assert_eq!(running_since(&now), running_since(keep));
    assert_eq!(status_of(&now).start_time, status_of(keep).start_time);
    // Never written NotReady in between: the Ready condition did not transition.
    let ready_since = |p: &Pod| {
        let st = status_of(p);
        st.conditions
            .iter()
            .find(|c| c.r#type == "Ready")
            .map(|c| c.last_transition_time.clone())
    };
    assert_eq!(ready_since(&now), ready_since(keep));
    assert_eq!(&env.pod_pids(&uid(keep)), keep_pids);
    assert!(keep_pids.iter().all(|p| alive(*p)));
    assert!(env.log().contains("adopted running container"), "{}", env.log());
    // An adopted container is stopped on deletion like any other.
    env.delete("keep", None).await;
    env.wait_gone("keep").await;
    assert!(keep_pids.iter().all(|p| !alive(*p)));
    assert!(env.pod_cgroups(&uid(keep)).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_restart_adopts_running_pods_libcontainer() {
    agent_restart_adopts("libcontainer").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_restart_adopts_running_pods_runc() {
    agent_restart_adopts("runc").await;
}

/// `d` and every directory under it.
fn dirs_under(d: &Path) -> Vec<PathBuf> {
    let mut out = vec![d.to_path_buf()];
    for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(dirs_under(&e.path()));
        }
    }
    out
}

/// Every regular file under `d`.
fn files_under(d: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A container writing more than the log cap leaves a current log within the cap and the
/// rotated piece before it, with lines whole; with runc as the runtime.
async fn log_rotation(runtime: &str) {
    const CAP: u64 = 4096;
    let mut env = Env::new(runtime, &["--container-log-max-bytes", &CAP.to_string()]).await;
    env.start_agent().await;
    let pod = env
        .create_pod(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "chatty", "namespace": "default"},
            "spec": {"containers": [{"name": "main", "image": IMAGE, "command": ["sh", "-c",
                "i=0; while [ $i -lt 500 ]; do echo line-$i-0123456789abcdef0123456789abcdef; i=$((i+1)); done; echo done-writing; exec sleep 100000"]}]}
        }))
        .await;
    let dir = env.log_dir(&pod);
    let (current, rotated) = eventually("the last line in the current log", || {
        let files = files_under(&dir);
        async move {
            let cur = files
                .iter()
                .find(|p| p.to_string_lossy().ends_with(".log"))?
                .clone();
            let rot = files
                .iter()
                .find(|p| p.to_string_lossy().ends_with(".log.1"))?
                .clone();
            std::fs::read_to_string(&cur)
                .ok()?
                .contains("done-writing")
                .then_some((cur, rot))
        }
    })
    .await;
    assert_eq!(rotated, PathBuf::from(format!("{}.1", current.display())));
    for f in [&current, &rotated] {
        let len = std::fs::metadata(f).unwrap().len();
        assert!(len <= CAP && len > 0, "{}: {len} bytes", f.display());
        let text = std::fs::read_to_string(f).unwrap();
        assert!(text.ends_with('\n'), "whole lines");
        assert!(
            text.lines()
                .all(|l| l.starts_with("line-") || l == "done-writing"),
            "{text}"
        );
    }
    // The older piece holds the lines just before the current one's first.
    let first_now = std::fs::read_to_string(&current)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_string();
    let last_before = std::fs::read_to_string(&rotated)
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .to_string();
    let n = |l: &str| l.split('-').nth(1).and_then(|x| x.parse::<u32>().ok());
    assert_eq!(n(&last_before).map(|x| x + 1), n(&first_now));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_log_is_capped_and_rotated_runc() {
    log_rotation("runc").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_log_is_capped_and_rotated_libcontainer() {
    log_rotation("libcontainer").await;
}

/// With the disk "full" (thresholds at 0 %), the agent removes an unused image and keeps the
/// one its pod uses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_gc_removes_unused_images_only() {
    let gc_args = [
        "--gc-interval-ms",
        "200",
        "--image-gc-high-percent",
        "0",
        "--image-gc-low-percent",
        "0",
        "--image-gc-min-age-seconds",
        "0",
    ];
    let mut env = Env::new("libcontainer", &gc_args).await;
    env.build_image("bm-unused:1", "unused");
    assert!(env.images().contains("bm-unused:1"));
    // The pod exists before the agent: its image is in use from the first GC pass on.
    env.create_pod(sleeper("user")).await;
    env.start_agent().await;
    env.wait_pod("user", "Running and Ready", ready).await;
    eventually("the unused image collected", || {
        let gone = !env.images().contains("bm-unused:1");
        async move { gone.then_some(()) }
    })
    .await;
    assert!(env.images().contains(IMAGE), "{}", env.images());
    assert!(env.log().contains("image garbage collected"));
    // A container start still finds its image (the store is intact). While "user" exists:
    // without any pod naming it, the image would be fair game at 0 %.
    env.create_pod(sleeper("again")).await;
    env.wait_pod("again", "Running and Ready", ready).await;
    assert!(env.images().contains(IMAGE), "{}", env.images());
}

/// Removes the test's bridge however the test ends.
struct BridgeGuard(&'static str);

impl Drop for BridgeGuard {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", self.0]).output();
    }
}

/// `ip -o link show NAME`'s index, when the link exists.
fn link_index(name: &str) -> Option<String> {
    let out = Command::new("ip")
        .args(["-o", "link", "show", name])
        .output()
        .ok()?;
    let s = String::from_utf8_lossy(&out.stdout).to_string();
    out.status
        .success()
        .then(|| s.split(':').next().unwrap_or("").to_string())
}

/// With the bridge pod network, an adopted pod keeps its address and its veth (the start-up
/// network GC spares it), and a pod started after the restart reaches it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_restart_keeps_adopted_pods_network() {
    const BRIDGE: &str = "bm-br0";
    const VETH_PREFIX: &str = "bmv";
    let _bridge = BridgeGuard(BRIDGE);
    let agent_args = ["--bridge-name", BRIDGE, "--veth-prefix", VETH_PREFIX];
    let mut env =
        Env::with_server_args("libcontainer", &["--cluster-cidr", "10.217.0.0/16"], &agent_args).await;
    env.start_agent().await;
    env.create_pod(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "server", "namespace": "default"},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [{"name": "main", "image": IMAGE,
            "command": ["sh", "-c", "mkdir -p /tmp/www && echo hello-from-server > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www"]}]}
    }))
    .await;
    let server = env
        .wait_pod("server", "Running with an IP", |p| {
            ready(p) && !status_of(p).pod_ip.is_empty()
        })
        .await;
    let ip = status_of(&server).pod_ip;
    let veth = berth_node::pod_network::host_veth_name(VETH_PREFIX, &uid(&server));
    let index = link_index(&veth).expect("the server's veth");

    env.kill_agent();
    env.start_agent().await;
    // A client started by the new agent reaches the adopted server at its old address.
    let client = env
        .create_pod(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "client", "namespace": "default"},
            "spec": {"terminationGracePeriodSeconds": 1, "containers": [{"name": "main", "image": IMAGE,
                "command": ["sh", "-c", format!("until wget -q -O- http://{ip}:8080/; do sleep 0.2; done; exec sleep 1000")]}]}
        }))
        .await;
    let dir = env.log_dir(&client);
    eventually("the client reaches the adopted server", || {
        let got = files_under(&dir).iter().any(|f| {
            std::fs::read_to_string(f)
                .unwrap_or_default()
                .contains("hello-from-server")
        });
        async move { got.then_some(()) }
    })
    .await;
    let now = env.wait_pod("server", "Running and Ready", ready).await;
    assert_eq!(status_of(&now).pod_ip, ip);
    assert_eq!(link_index(&veth), Some(index), "the same veth");
    let ipam = std::fs::read_to_string(env.cfg.data_dir.join("net/ipam.json")).unwrap();
    assert!(ipam.contains(&uid(&server)), "{ipam}");
    for name in ["client", "server"] {
        env.delete(name, None).await;
        env.wait_gone(name).await;
    }
    assert_eq!(link_index(&veth), None);
}
