//! The node agent end to end: a real `berth server` and a real `berth agent` (embedded
//! libcontainer; runc in one test; real
//! namespaces, cgroups and mounts on this machine), pods created through the API, observed
//! through the API and on the machine. Busybox comes from Debian's busybox-static, packed into
//! an image with `berth image build`, so everything works offline.
//! Names on the machine carry the prefix `bnode-`; everything is removed when a test ends.

mod common;

use berth_client::ResourceClient;
use berth_proto::apiv1;
use berth_proto::coordinationv1::Lease;
use berth_proto::corev1::{ConfigMap, Node, Pod, Secret};
use common::agent_env::{
    build_image, busybox_rootfs, node_config, AgentEnv as Env, AgentOpts, AgentProc, IMAGE,
};
use common::{berth_bin, eventually, in_cidr};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// The agent's command line in these tests: [`Env::start_prefixed`]'s, and a second agent's.
fn agent_opts(runtime: &str, agent_args: &[&str]) -> AgentOpts {
    let mut args = vec!["--labels", "zone=a", "--node-status-interval-ms", "500"];
    args.extend_from_slice(agent_args);
    AgentOpts::new(Some(runtime), None, &args)
}

impl Env {
    /// A server and an agent with the default runtime (embedded libcontainer).
    async fn start() -> Env {
        Env::start_with_runtime("libcontainer").await
    }

    async fn start_with_runtime(runtime: &str) -> Env {
        Env::start_with(runtime, &[], &["--pod-network", "none"]).await
    }

    /// A server with `server_args` and an agent with `agent_args` added.
    async fn start_with(runtime: &str, server_args: &[&str], agent_args: &[&str]) -> Env {
        Env::start_prefixed("bnode", runtime, server_args, agent_args).await
    }

    /// As [`Env::start_with`], with machine-global names (run dir, cgroup) prefixed `prefix`.
    async fn start_prefixed(prefix: &str, runtime: &str, server_args: &[&str], agent_args: &[&str]) -> Env {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let node = format!("n{n}");
        let tag = format!("{prefix}-{}-{n}", std::process::id());
        let opts = agent_opts(runtime, agent_args);
        let mut env = Env::prepare(server_args, &node, &tag, opts).await;
        let rootfs = env.cluster.dir.path().join("busybox-rootfs");
        busybox_rootfs(&rootfs);
        build_image(&rootfs, IMAGE, &env.cfg.data_dir);
        env.start_agent().await;
        env
    }

    async fn delete_pod(&self, name: &str) {
        let _ = self
            .client
            .delete::<Pod>("default", name, apiv1::DeleteOptions::default())
            .await
            .unwrap();
        self.wait_gone(name).await;
    }

    /// The log file of the container's newest instance, as on the node's disk.
    fn container_log(&self, pod: &Pod, container: &str) -> String {
        let m = pod.metadata.clone().unwrap();
        let dir = berth_node::logs::pod_log_dir(&self.cfg.data_dir, &m.namespace, &m.name, &m.uid);
        let instances = berth_node::logs::instances(&dir.join(container));
        let Some(newest) = berth_node::logs::pick(&instances, false) else {
            return String::new();
        };
        std::fs::read_to_string(berth_node::logs::instance_log(&dir, container, newest)).unwrap_or_default()
    }

    async fn wait_log(&self, pod: &Pod, container: &str, needle: &str) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let l = self.container_log(pod, container);
            if l.contains(needle) {
                return l;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "log of {container} lacks {needle:?}: {l:?}\nagent log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The pod's cgroup directories that exist on the machine (any hierarchy).
    fn pod_cgroups(&self, uid: &str) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
            let p = e.path().join(&self.cfg.cgroup_parent).join(format!("pod-{uid}"));
            if p.exists() {
                out.push(p);
            }
        }
        let v2 = Path::new("/sys/fs/cgroup")
            .join(&self.cfg.cgroup_parent)
            .join(format!("pod-{uid}"));
        if v2.exists() {
            out.push(v2);
        }
        out
    }
}

fn status_of(p: &Pod) -> berth_proto::corev1::PodStatus {
    p.status.clone().unwrap_or_default()
}

fn phase(p: &Pod) -> String {
    status_of(p).phase
}

fn condition(p: &Pod, kind: &str) -> String {
    status_of(p)
        .conditions
        .iter()
        .find(|c| c.r#type == kind)
        .map(|c| c.status.clone())
        .unwrap_or_default()
}

fn uid(p: &Pod) -> String {
    p.metadata.clone().unwrap().uid
}

fn pids_in(dirs: &[PathBuf]) -> Vec<String> {
    let mut out = Vec::new();
    for d in dirs {
        let Ok(rd) = walk(d) else { continue };
        for f in rd {
            if let Ok(s) = std::fs::read_to_string(f.join("cgroup.procs")) {
                out.extend(s.lines().map(str::to_string));
            }
        }
    }
    out
}

fn walk(d: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = vec![d.to_path_buf()];
    for e in std::fs::read_dir(d)?.flatten() {
        if e.file_type()?.is_dir() {
            out.extend(walk(&e.path())?);
        }
    }
    Ok(out)
}

/// Node registration, conditions, capacity and the node lease being renewed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_registers_reports_and_renews_its_lease() {
    let env = Env::start().await;
    let n = env.client.get::<Node>("", &env.node).await.unwrap();
    let meta = n.metadata.clone().unwrap();
    assert_eq!(meta.labels.get("zone").map(String::as_str), Some("a"));
    assert_eq!(meta.labels.get("kubernetes.io/hostname"), Some(&env.node));
    let st = n.status.unwrap();
    for c in ["cpu", "memory", "pods"] {
        assert!(
            st.capacity.contains_key(c) && st.allocatable.contains_key(c),
            "{c}: {st:?}"
        );
    }
    let kinds: Vec<(&str, &str)> = st
        .conditions
        .iter()
        .map(|c| (c.r#type.as_str(), c.status.as_str()))
        .collect();
    assert!(kinds.contains(&("Ready", "True")), "{kinds:?}");
    // The pressure conditions follow this machine's memory, disk and pids, which the test does
    // not control (a nearly full disk is DiskPressure=True, as the kubelet's 10% threshold):
    // each must be reported, as True or False.
    for want in ["MemoryPressure", "DiskPressure", "PIDPressure"] {
        assert!(
            kinds
                .iter()
                .any(|(t, s)| *t == want && (*s == "True" || *s == "False")),
            "{want}: {kinds:?}"
        );
    }
    assert!(st
        .addresses
        .iter()
        .any(|a| a.r#type == "InternalIP" && a.address == "127.0.0.1"));
    let info = st.node_info.unwrap();
    assert_eq!(info.container_runtime_version, "libcontainer://0.7.0");
    assert_eq!(info.operating_system, "linux");

    let renew = |l: Lease| l.spec.unwrap().renew_time.unwrap_or_default();
    let c = env.client.clone();
    let node = env.node.clone();
    let first = eventually("node lease", || {
        let (c, node) = (c.clone(), node.clone());
        async move { c.get::<Lease>("kube-node-lease", &node).await.ok() }
    })
    .await;
    assert_eq!(
        first.spec.clone().unwrap().holder_identity.as_deref(),
        Some(env.node.as_str())
    );
    let t1 = renew(first);
    eventually("lease renewed", || {
        let (c, node, t1) = (c.clone(), node.clone(), t1.clone());
        async move {
            let l = c.get::<Lease>("kube-node-lease", &node).await.ok()?;
            (renew(l) > t1).then_some(())
        }
    })
    .await;
}

/// A long-running pod: Running with the status Kubernetes reports, hostname = pod name,
/// output in its log file, shared namespaces; deleting it stops its processes and removes its
/// cgroups and namespaces, then the pod object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_runs_reports_status_and_is_deleted_cleanly() {
    let env = Env::start().await;
    let pod = env
        .create_pod(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "terminationGracePeriodSeconds": 2,
                "containers": [
                    {"name": "main", "image": IMAGE, "workingDir": "/tmp",
                     "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}, "requests": {"cpu": "250m"}},
                     "env": [{"name": "WHO", "value": "world"},
                             {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                             {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
                     "command": ["sh", "-c"],
                     "args": ["echo hello $(WHO) from $(POD) on $(NODE) in $(pwd) as $(hostname); trap 'exit 0' TERM; while true; do sleep 1; done"]},
                    {"name": "side", "image": "docker.io/library/busybox:1.36",
                     "command": ["sh", "-c", "echo side $(hostname); exec sleep 1000"]}
                ]
            }
        }))
        .await;
    let p = env
        .wait_pod("web", "Running and Ready", |p| {
            phase(p) == "Running" && condition(p, "Ready") == "True"
        })
        .await;
    let st = status_of(&p);
    assert_eq!(st.host_ip, "127.0.0.1");
    assert!(!st.start_time.is_empty());
    for k in ["PodScheduled", "Initialized", "ContainersReady", "Ready"] {
        assert_eq!(condition(&p, k), "True", "{k}");
    }
    assert_eq!(st.container_statuses.len(), 2);
    for cs in &st.container_statuses {
        let running = cs.state.as_ref().unwrap().running.as_ref().expect("running");
        assert!(!running.started_at.is_empty());
        assert!(cs.ready && cs.started == Some(true) && cs.restart_count == 0);
        assert!(cs.image_id.starts_with("sha256:"));
    }
    assert_eq!(st.container_statuses[0].image, IMAGE);
    let log = env.wait_log(&pod, "main", "hello").await;
    assert!(log.contains("hello world from web on n"), "{log}");
    assert!(log.contains(" in /tmp as web"), "{log}");
    env.wait_log(&pod, "side", "side web").await;

    // On the machine: both containers in the pod's cgroup and in the one network namespace.
    let cgroups = env.pod_cgroups(&uid(&pod));
    assert!(!cgroups.is_empty());
    let pids = pids_in(&cgroups);
    assert!(pids.len() >= 2, "{pids:?}");
    let netns: std::collections::BTreeSet<String> = pids
        .iter()
        .filter_map(|p| std::fs::read_link(format!("/proc/{p}/ns/net")).ok())
        .map(|l| l.display().to_string())
        .collect();
    assert_eq!(netns.len(), 1, "one network namespace for the pod: {netns:?}");
    let ns_file = env.cfg.run_dir.join("netns").join(uid(&pod));
    assert!(ns_file.exists());
    // The limits are in the container's cgroup, the pids limit in the pod's.
    let read = |rel: &str| {
        std::fs::read_to_string(Path::new("/sys/fs/cgroup").join(rel)).map(|s| s.trim().to_string())
    };
    let pod_rel = format!("{}/pod-{}", env.cfg.cgroup_parent, uid(&pod));
    if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        assert_eq!(read(&format!("{pod_rel}/main/cpu.max")).unwrap(), "50000 100000");
        assert_eq!(
            read(&format!("{pod_rel}/main/memory.max")).unwrap(),
            (64u64 << 20).to_string()
        );
        assert_eq!(read(&format!("{pod_rel}/pids.max")).unwrap(), "4096");
    } else {
        assert_eq!(
            read(&format!("cpu/{pod_rel}/main/cpu.cfs_quota_us")).unwrap(),
            "50000"
        );
        assert_eq!(read(&format!("cpu/{pod_rel}/main/cpu.shares")).unwrap(), "256");
        assert_eq!(
            read(&format!("memory/{pod_rel}/main/memory.limit_in_bytes")).unwrap(),
            (64u64 << 20).to_string()
        );
        assert_eq!(read(&format!("pids/{pod_rel}/pids.max")).unwrap(), "4096");
    }

    env.delete_pod("web").await;
    assert!(env.pod_cgroups(&uid(&pod)).is_empty(), "pod cgroups removed");
    for p in &pids {
        assert!(
            !Path::new(&format!("/proc/{p}")).exists(),
            "process {p} still there"
        );
    }
    assert!(!ns_file.exists(), "netns file removed");
    assert!(!env.cfg.run_dir.join("pods").join(uid(&pod)).exists());
    assert!(!env.cfg.data_dir.join("pods").join(uid(&pod)).exists());
}

/// Exit codes map to phases; init containers run first, in order, sharing an emptyDir.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_phases_and_init_containers() {
    let env = Env::start().await;
    let ok = env
        .create_pod(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "ok", "namespace": "default"},
            "spec": {
                "restartPolicy": "Never",
                "volumes": [{"name": "work", "emptyDir": {}}],
                "initContainers": [
                    {"name": "one", "image": IMAGE, "command": ["sh", "-c", "echo one > /work/order"],
                     "volumeMounts": [{"name": "work", "mountPath": "/work"}]},
                    {"name": "two", "image": IMAGE, "command": ["sh", "-c", "echo two >> /work/order"],
                     "volumeMounts": [{"name": "work", "mountPath": "/work"}]}
                ],
                "containers": [{"name": "main", "image": IMAGE, "command": ["cat", "/work/order"],
                                "volumeMounts": [{"name": "work", "mountPath": "/work"}]}]
            }
        }))
        .await;
    env.create_pod(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "bad", "namespace": "default"},
        "spec": {"restartPolicy": "Never",
                 "containers": [{"name": "main", "image": IMAGE, "command": ["sh", "-c", "exit 3"]}]}
    }))
    .await;
    let p = env.wait_pod("ok", "Succeeded", |p| phase(p) == "Succeeded").await;
    let st = status_of(&p);
    let t = st.container_statuses[0]
        .state
        .clone()
        .unwrap()
        .terminated
        .unwrap();
    assert_eq!((t.exit_code, t.reason.as_str()), (0, "Completed"));
    assert_eq!(st.init_container_statuses.len(), 2);
    assert_eq!(condition(&p, "Initialized"), "True");
    assert_eq!(env.container_log(&ok, "main"), "one\ntwo\n");

    let p = env.wait_pod("bad", "Failed", |p| phase(p) == "Failed").await;
    let t = status_of(&p).container_statuses[0]
        .state
        .clone()
        .unwrap()
        .terminated
        .unwrap();
    assert_eq!((t.exit_code, t.reason.as_str()), (3, "Error"));
    assert_eq!(condition(&p, "Ready"), "False");

    // A missing image waits with a reason, not a crash (Never: no pull is tried).
    env.create_pod(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "noimage", "namespace": "default"},
        "spec": {"containers": [{"name": "main", "image": "nosuch:1", "imagePullPolicy": "Never"}]}
    }))
    .await;
    let p = env
        .wait_pod("noimage", "ErrImageNeverPull", |p| {
            status_of(p)
                .container_statuses
                .first()
                .and_then(|c| c.state.clone()?.waiting)
                .map(|w| w.reason)
                == Some("ErrImageNeverPull".into())
        })
        .await;
    assert_eq!(phase(&p), "Pending");
    for name in ["ok", "bad", "noimage"] {
        env.delete_pod(name).await;
    }
}

/// A crashing container is restarted, then held in CrashLoopBackOff with its last state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashing_container_backs_off() {
    let env = Env::start().await;
    env.create_pod(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "crash", "namespace": "default"},
        "spec": {"containers": [{"name": "main", "image": IMAGE, "command": ["sh", "-c", "echo boom; exit 1"]}]}
    }))
    .await;
    let p = env
        .wait_pod("crash", "CrashLoopBackOff after a restart", |p| {
            let Some(cs) = status_of(p).container_statuses.first().cloned() else {
                return false;
            };
            let waiting = cs.state.and_then(|s| s.waiting).map(|w| w.reason);
            cs.restart_count >= 1 && waiting.as_deref() == Some("CrashLoopBackOff")
        })
        .await;
    let cs = status_of(&p).container_statuses[0].clone();
    let last = cs.last_state.unwrap().terminated.unwrap();
    assert_eq!((last.exit_code, last.reason.as_str()), (1, "Error"));
    assert_eq!(phase(&p), "Running", "restartPolicy Always keeps the pod Running");
    assert!(!cs.ready);
    // Back-off holds it: one restart, not a tight loop (the next one is 10 s after the exit).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let again = env.pod("crash").await.unwrap();
    assert_eq!(
        status_of(&again).container_statuses[0].restart_count,
        cs.restart_count
    );
    env.delete_pod("crash").await;
}

/// A container over its memory limit is OOM-killed and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_limit_oom_kills() {
    let env = Env::start().await;
    env.create_pod(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "hog", "namespace": "default"},
        "spec": {"restartPolicy": "Never",
                 "containers": [{"name": "main", "image": IMAGE,
                    "resources": {"limits": {"memory": "16Mi", "cpu": "500m"}},
                    "command": ["sh", "-c", "exec dd if=/dev/zero of=/dev/shm/fill bs=1M count=48"]}]}
    }))
    .await;
    let p = env.wait_pod("hog", "Failed", |p| phase(p) == "Failed").await;
    let t = status_of(&p).container_statuses[0]
        .state
        .clone()
        .unwrap()
        .terminated
        .unwrap();
    assert_eq!(t.reason, "OOMKilled", "{t:?}");
    assert_eq!(t.exit_code, 137);
    env.delete_pod("hog").await;
}

/// Env from a ConfigMap and a Secret, a secret volume on tmpfs (never the node's disk), a
/// configMap volume that follows updates of the object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_maps_and_secrets_as_env_and_volumes() {
    let env = Env::start().await;
    let cm: ConfigMap = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "settings", "namespace": "default"},
        "data": {"color": "blue", "size": "9"}
    }))
    .unwrap();
    env.client.create("default", &cm).await.unwrap();
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "creds", "namespace": "default"},
        "data": {"password": "aHVudGVyMg=="}
    }))
    .unwrap();
    env.client.create("default", &secret).await.unwrap();
    let mut other = secret.clone();
    other.metadata.as_mut().unwrap().name = "unrelated".into();
    env.client.create("default", &other).await.unwrap();
    let pod = env
        .create_pod(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "cfg", "namespace": "default"},
            "spec": {
                "terminationGracePeriodSeconds": 1,
                "volumes": [
                    {"name": "sec", "secret": {"secretName": "creds", "defaultMode": 256}},
                    {"name": "conf", "configMap": {"name": "settings", "items": [{"key": "color", "path": "c/color"}]}}
                ],
                "containers": [{"name": "main", "image": IMAGE,
                    "envFrom": [{"prefix": "CFG_", "configMapRef": {"name": "settings"}}],
                    "env": [{"name": "PW", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}}],
                    "volumeMounts": [{"name": "sec", "mountPath": "/etc/creds", "readOnly": true},
                                     {"name": "conf", "mountPath": "/etc/conf"}],
                    "command": ["sh", "-c",
                        "echo env $CFG_color $CFG_size $PW; echo file $(cat /etc/creds/password) $(cat /etc/conf/c/color); stat -c %a /etc/creds/..data/password; sleep 1000"]}]
            }
        }))
        .await;
    env.wait_pod("cfg", "Running", |p| phase(p) == "Running").await;
    let log = env.wait_log(&pod, "main", "file ").await;
    assert!(log.contains("env blue 9 hunter2\n"), "{log}");
    assert!(log.contains("file hunter2 blue\n"), "{log}");
    assert!(log.contains("400\n"), "defaultMode 0400: {log}");
    // The secret's files are on the pod's tmpfs; nothing of it on the data dir's disk.
    let sec_dir = env.cfg.run_dir.join("pods").join(uid(&pod)).join("volumes/sec");
    assert!(berth_node::mount::is_tmpfs(&sec_dir));
    let on_disk = Command::new("grep")
        .args(["-rl", "hunter2"])
        .arg(&env.cfg.data_dir)
        .output()
        .unwrap();
    let hits = String::from_utf8_lossy(&on_disk.stdout).to_string();
    // The container's own log files hold what it printed; nothing else may.
    let m = pod.metadata.clone().unwrap();
    let main_logs =
        berth_node::logs::pod_log_dir(&env.cfg.data_dir, &m.namespace, &m.name, &m.uid).join("main");
    assert!(
        hits.lines()
            .all(|l| Path::new(l).parent() == Some(main_logs.as_path())),
        "secret on disk: {hits}"
    );

    // Only the referenced objects are watched by the agent, and updates reach the volume.
    let mut cm = env.client.get::<ConfigMap>("default", "settings").await.unwrap();
    cm.data.insert("color".into(), "green".into());
    env.client.update(&cm).await.unwrap();
    let file = env
        .cfg
        .data_dir
        .join("pods")
        .join(uid(&pod))
        .join("volumes/conf/c/color");
    eventually("configMap volume updated", || {
        let file = file.clone();
        async move { (std::fs::read_to_string(&file).ok()? == "green").then_some(()) }
    })
    .await;
    // The node fetched only what its pod references.
    let log = env.log();
    assert!(
        log.contains("name=creds") && log.contains("name=settings"),
        "{log}"
    );
    assert!(
        !log.contains("name=unrelated"),
        "an unreferenced secret was watched: {log}"
    );
    env.delete_pod("cfg").await;
    assert!(!sec_dir.exists());
}

/// Probes: httpGet and tcpSocket readiness make the pod Ready; a failing exec liveness probe
/// restarts its container.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_gate_readiness_and_restart_on_liveness_failure() {
    let env = Env::start().await;
    env.create_pod(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "probed", "namespace": "default"},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {"name": "web", "image": IMAGE,
                 "ports": [{"name": "http", "containerPort": 8080}],
                 "command": ["sh", "-c", "mkdir -p /www && echo ok > /www/index.html && exec httpd -f -p 8080 -h /www"],
                 "readinessProbe": {"httpGet": {"path": "/index.html", "port": "http"}, "periodSeconds": 1}},
                {"name": "tcp", "image": IMAGE,
                 "command": ["sh", "-c", "mkdir -p /www && exec httpd -f -p 9090 -h /www"],
                 "readinessProbe": {"tcpSocket": {"port": 9090}, "periodSeconds": 1}},
                {"name": "notready", "image": IMAGE,
                 "command": ["sh", "-c", "mkdir -p /www && exec httpd -f -p 7070 -h /www"],
                 "readinessProbe": {"httpGet": {"path": "/missing", "port": 7070}, "periodSeconds": 1}},
                {"name": "live", "image": IMAGE,
                 "command": ["sh", "-c", "touch /tmp/alive; sleep 2; rm /tmp/alive; exec sleep 1000"],
                 "livenessProbe": {"exec": {"command": ["cat", "/tmp/alive"]}, "periodSeconds": 1, "failureThreshold": 1}}
            ]
        }
    }))
    .await;
    let ready_of = |p: &Pod, name: &str| {
        status_of(p)
            .container_statuses
            .iter()
            .find(|c| c.name == name)
            .is_some_and(|c| c.ready)
    };
    let p = env
        .wait_pod("probed", "web and tcp ready", |p| {
            ready_of(p, "web") && ready_of(p, "tcp")
        })
        .await;
    assert!(!ready_of(&p, "notready"), "a 404 readiness probe fails");
    assert_eq!(condition(&p, "Ready"), "False");
    env.wait_pod("probed", "live restarted by its liveness probe", |p| {
        status_of(p)
            .container_statuses
            .iter()
            .any(|c| c.name == "live" && c.restart_count >= 1)
    })
    .await;
    env.delete_pod("probed").await;
}

/// Deletion: a container handling SIGTERM gets it (and exits); one ignoring it is killed
/// once the grace period is over; the pod object then goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_termination_and_host_path() {
    let env = Env::start().await;
    let host = env.cfg.data_dir.join("host-share");
    env.create_pod(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "grace", "namespace": "default"},
        "spec": {
            "terminationGracePeriodSeconds": 2,
            "volumes": [{"name": "host", "hostPath": {"path": host, "type": "DirectoryOrCreate"}},
                        {"name": "mem", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}}],
            "containers": [
                {"name": "polite", "image": IMAGE,
                 "volumeMounts": [{"name": "host", "mountPath": "/host"}],
                 "command": ["sh", "-c", "trap 'echo got TERM > /host/term; exit 0' TERM; echo up > /host/up; while true; do sleep 1; done"]},
                {"name": "stubborn", "image": IMAGE,
                 "volumeMounts": [{"name": "mem", "mountPath": "/mem"}],
                 "command": ["sh", "-c", "grep ' /mem ' /proc/mounts > /dev/shm/m; dd if=/dev/zero of=/mem/big bs=1M count=2 2>/dev/null; ls -l /mem; exec sleep 1000"]}
            ]
        }
    }))
    .await;
    let p = env.wait_pod("grace", "Running", |p| phase(p) == "Running").await;
    let log = env.wait_log(&p, "stubborn", "big").await;
    // sizeLimit bounds the memory-backed emptyDir: only 1 MiB of the 2 fit.
    assert!(log.contains(" 1048576 "), "{log}");
    eventually("hostPath written", || {
        let f = host.join("up");
        async move { f.exists().then_some(()) }
    })
    .await;
    env.delete_pod("grace").await;
    assert_eq!(std::fs::read_to_string(host.join("term")).unwrap(), "got TERM\n");
}

/// `berth image build --output`, `import`, `ls`, `rm` on a store of their own.
#[test]
fn image_commands() {
    let dir = tempfile::tempdir().unwrap();
    let rootfs = dir.path().join("rootfs");
    busybox_rootfs(&rootfs);
    let berth = |args: &[&str]| {
        let out = Command::new(berth_bin()).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let archive = dir.path().join("bb.tar");
    let store = dir.path().join("node").display().to_string();
    let out = berth(&[
        "image",
        "build",
        "--rootfs",
        rootfs.to_str().unwrap(),
        "--tag",
        "bb:1",
        "--output",
        archive.to_str().unwrap(),
    ]);
    assert!(out.starts_with("docker.io/library/bb:1 sha256:"), "{out}");
    assert!(!Path::new(&store).exists(), "--output leaves the store alone");
    let imported = berth(&["image", "import", archive.to_str().unwrap(), "--data-dir", &store]);
    assert!(
        imported.starts_with("docker.io/library/bb:1 sha256:"),
        "{imported}"
    );
    let ls = berth(&["image", "ls", "--data-dir", &store]);
    assert!(ls.lines().nth(1).unwrap().starts_with("bb:1 "), "{ls}");
    berth(&["image", "rm", "bb:1", "--data-dir", &store]);
    assert_eq!(berth(&["image", "ls", "--data-dir", &store]).lines().count(), 1);
    let out = Command::new(berth_bin())
        .args(["image", "rm", "bb:1", "--data-dir", &store])
        .output()
        .unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("not found"));
}

/// The same agent with runc (Debian's) as its runtime: a pod runs with its env and limits, an
/// OOM kill is reported, deletion cleans up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runc_runtime_runs_pods_too() {
    let env = Env::start_with_runtime("runc").await;
    let n = env.client.get::<Node>("", &env.node).await.unwrap();
    let info = n.status.unwrap().node_info.unwrap();
    assert!(info.container_runtime_version.starts_with("runc://"), "{info:?}");
    let pod = env
        .create_pod(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "r", "namespace": "default"},
            "spec": {"terminationGracePeriodSeconds": 1, "containers": [
                {"name": "main", "image": IMAGE, "env": [{"name": "X", "value": "y"}],
                 "command": ["sh", "-c", "echo x=$X host=$(hostname); exec sleep 1000"]},
                {"name": "hog", "image": IMAGE, "resources": {"limits": {"memory": "16Mi"}},
                 "command": ["sh", "-c", "exec dd if=/dev/zero of=/dev/shm/fill bs=1M count=48"]}]}
        }))
        .await;
    env.wait_log(&pod, "main", "x=y host=r").await;
    env.wait_pod("r", "hog OOMKilled", |p| {
        status_of(p).container_statuses.iter().any(|c| {
            let t = c
                .last_state
                .clone()
                .and_then(|s| s.terminated)
                .or(c.state.clone().and_then(|s| s.terminated));
            c.name == "hog" && t.is_some_and(|t| t.reason == "OOMKilled")
        })
    })
    .await;
    env.delete_pod("r").await;
    assert!(env.pod_cgroups(&uid(&pod)).is_empty());
}

/// Deletes the test's bridge when the test ends (pass or fail).
struct BridgeGuard(&'static str);

impl Drop for BridgeGuard {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", self.0]).output();
    }
}

fn link_exists(name: &str) -> bool {
    Command::new("ip")
        .args(["link", "show", name])
        .output()
        .unwrap()
        .status
        .success()
}

/// The bridge pod network: with the controllers assigning the node a pod CIDR, each pod gets
/// its own address in it on the bridge, pods reach each other, and deleting a pod removes its
/// veth and frees its address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_network_gives_pods_addresses_that_reach_each_other() {
    const BRIDGE: &str = "bu-br0";
    const VETH_PREFIX: &str = "buv";
    let _bridge = BridgeGuard(BRIDGE);
    let env = Env::start_with(
        "libcontainer",
        &["--cluster-cidr", "10.213.0.0/16"],
        &[
            "--pod-network",
            "bridge",
            "--bridge-name",
            BRIDGE,
            "--veth-prefix",
            VETH_PREFIX,
        ],
    )
    .await;
    let node = env.client.get::<Node>("", &env.node).await.unwrap();
    let pod_cidr = node.spec.unwrap().pod_cidr;
    assert!(
        in_cidr(pod_cidr.split('/').next().unwrap(), "10.213.0.0/16"),
        "{pod_cidr}"
    );
    assert!(link_exists(BRIDGE));
    env.create_pod(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "server", "namespace": "default"},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [{"name": "main", "image": IMAGE,
            "command": ["sh", "-c", "mkdir -p /tmp/www && echo hello-from-server > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www"]}]}
    }))
    .await;
    let server = env
        .wait_pod("server", "Running with an IP", |p| {
            phase(p) == "Running" && !status_of(p).pod_ip.is_empty()
        })
        .await;
    let server_ip = status_of(&server).pod_ip;
    assert!(in_cidr(&server_ip, &pod_cidr), "{server_ip} not in {pod_cidr}");
    assert_eq!(status_of(&server).pod_ips.len(), 1);
    env.create_pod(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "client", "namespace": "default"},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [{"name": "main", "image": IMAGE,
            "command": ["sh", "-c", format!("ip -4 addr show eth0; until wget -q -O- http://{server_ip}:8080/; do sleep 0.2; done; exec sleep 1000")]}]}
    }))
    .await;
    let client = env
        .wait_pod("client", "Running with an IP", |p| {
            phase(p) == "Running" && !status_of(p).pod_ip.is_empty()
        })
        .await;
    let client_ip = status_of(&client).pod_ip;
    assert!(in_cidr(&client_ip, &pod_cidr), "{client_ip} not in {pod_cidr}");
    assert_ne!(client_ip, server_ip);
    let log = env.wait_log(&client, "main", "hello-from-server").await;
    assert!(log.contains(&client_ip), "eth0 carries the pod IP: {log}");

    let veth = berth_node::pod_network::host_veth_name(VETH_PREFIX, &uid(&client));
    assert!(link_exists(&veth), "{veth}");
    env.delete_pod("client").await;
    let ipam = env.cfg.data_dir.join("net/ipam.json");
    let (client_uid, server_uid) = (uid(&client), uid(&server));
    eventually("client veth gone and address freed", || {
        let (veth, ipam) = (veth.clone(), ipam.clone());
        let (client_uid, server_uid) = (client_uid.clone(), server_uid.clone());
        async move {
            let state = std::fs::read_to_string(&ipam).ok()?;
            (!link_exists(&veth) && !state.contains(&client_uid) && state.contains(&server_uid)).then_some(())
        }
    })
    .await;
    env.delete_pod("server").await;

    // Routes follow the Nodes: a peer Node (its InternalIP on the bridge's subnet, so the route
    // is valid and no traffic leaves the machine) gets a route to its pod CIDR, removed with it.
    let peer_ip = format!("{}.200", pod_cidr.rsplit_once('.').unwrap().0);
    let peer: Node = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node", "metadata": {"name": "bnode-peer"}
    }))
    .unwrap();
    env.client.create("", &peer).await.unwrap();
    let c = env.client.clone();
    let mut peer = eventually("the peer's pod CIDR", || {
        let c = c.clone();
        async move {
            let n = c.get::<Node>("", "bnode-peer").await.ok()?;
            (!n.spec.as_ref()?.pod_cidr.is_empty()).then_some(n)
        }
    })
    .await;
    let peer_cidr = peer.spec.as_ref().unwrap().pod_cidr.clone();
    peer.status = Some(
        serde_json::from_value(json!({"addresses": [{"type": "InternalIP", "address": peer_ip}]})).unwrap(),
    );
    env.client.update_status(&peer).await.unwrap();
    let want = format!("{peer_cidr} via {peer_ip} dev {BRIDGE}");
    let routes = || {
        let out = Command::new("ip")
            .args(["-4", "route", "show", "proto", "190"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    eventually("a route to the peer's pod CIDR", || {
        let found = routes().contains(&want);
        async move { found.then_some(()) }
    })
    .await;
    env.client
        .delete::<Node>("", "bnode-peer", apiv1::DeleteOptions::default())
        .await
        .unwrap();
    eventually("the peer's route removed", || {
        let gone = !routes().contains(&peer_cidr);
        async move { gone.then_some(()) }
    })
    .await;
}

// ---------------------------------------------------------------- logs, exec, image import
// Through the API server's Proxy to the agent's own API (`--agent-addr`), with real `berth`
// CLI processes. Machine-global names carry the prefix `ba-`.

impl Env {
    async fn start_agentapi() -> Env {
        Env::start_prefixed("ba", "libcontainer", &[], &["--pod-network", "none"]).await
    }

    /// `berth VERB --server S ARGS...`: (exit code, stdout, stderr). (Before the rest: what
    /// follows an exec's `--` is the command.)
    fn berth(&self, args: &[&str]) -> (i32, String, String) {
        let split = if args.first() == Some(&"image") { 2 } else { 1 };
        let out = Command::new(berth_bin())
            .args(&args[..split])
            .args(["--server", &self.cfg.servers[0]])
            .args(&args[split..])
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    }

    /// `berth ARGS` that must succeed: its stdout.
    fn berth_ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.berth(args);
        assert_eq!(code, 0, "berth {args:?}: {err}\nagent log:\n{}", self.log());
        out
    }
}

fn restarts(p: &Pod) -> i32 {
    status_of(p)
        .container_statuses
        .first()
        .map_or(0, |c| c.restart_count)
}

fn running(p: &Pod) -> bool {
    status_of(p)
        .container_statuses
        .first()
        .is_some_and(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()))
}

/// A pod's output reaches `berth logs` (whole, --tail, --previous after a restart), `-f` sees
/// a line written later and ends with the container; `berth exec` returns output and the exit
/// code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_and_exec_through_the_server() {
    let env = Env::start_agentapi().await;
    // The first instance prints three lines and fails; the second (restarted at once) prints
    // three lines, then one line per file the test drops into the shared volume, and ends
    // when asked to.
    let script = "n=$(cat /v/n 2>/dev/null || echo 0); n=$((n + 1)); echo $n > /v/n; \
        echo run $n line a; echo run $n line b; echo run $n line c; \
        if [ $n = 1 ]; then exit 3; fi; \
        while true; do \
          if [ -e /v/go ]; then rm /v/go; echo went; fi; \
          if [ -e /v/stop ]; then rm /v/stop; echo stopping; exit 0; fi; \
          sleep 1; done";
    env.create_pod(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "talk", "namespace": "default"},
        "spec": {
            "volumes": [{"name": "v", "emptyDir": {}}],
            "containers": [{"name": "c", "image": IMAGE, "command": ["sh", "-c", script],
                            "volumeMounts": [{"name": "v", "mountPath": "/v"}]}]
        }
    }))
    .await;
    env.wait_pod("talk", "restarted once and running", |p| {
        restarts(p) == 1 && running(p)
    })
    .await;

    let wait_logs = |args: &'static [&'static str], want: &'static str| {
        let env = &env;
        async move {
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            loop {
                let (code, out, err) = env.berth(args);
                if code == 0 && out == want {
                    return;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "berth {args:?}: code {code}, out {out:?}, err {err:?}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    wait_logs(&["logs", "talk"], "run 2 line a\nrun 2 line b\nrun 2 line c\n").await;
    assert_eq!(
        env.berth_ok(&["logs", "talk", "-c", "c", "--tail", "2"]),
        "run 2 line b\nrun 2 line c\n"
    );
    assert_eq!(
        env.berth_ok(&["logs", "talk", "--previous"]),
        "run 1 line a\nrun 1 line b\nrun 1 line c\n"
    );
    assert_eq!(
        env.berth_ok(&["logs", "talk", "-p", "--tail", "1"]),
        "run 1 line c\n"
    );

    // exec: output, stderr and the exit code.
    let (code, out, err) = env.berth(&["exec", "talk", "--", "sh", "-c", "echo out; echo err >&2; exit 7"]);
    assert_eq!(
        (code, out.as_str()),
        (7, "out\n"),
        "stderr: {err}\nagent log:\n{}",
        env.log()
    );
    assert!(err.contains("err"), "{err}");
    assert_eq!(
        env.berth_ok(&["exec", "talk", "-c", "c", "--", "cat", "/proc/1/comm"]),
        "sh\n"
    );

    // -f: sees a line written after it started, and ends when the instance ends.
    let mut follow = Command::new(berth_bin())
        .args(["logs", "talk", "-f", "--server", &env.cfg.servers[0]])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = follow.stdout.take().unwrap();
    let (line_tx, line_rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for l in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if line_tx.send(l).is_err() {
                return;
            }
        }
    });
    let next_line = || {
        line_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("a line from berth logs -f")
    };
    for want in ["run 2 line a", "run 2 line b", "run 2 line c"] {
        assert_eq!(next_line(), want);
    }
    env.berth_ok(&["exec", "talk", "--", "touch", "/v/go"]);
    assert_eq!(next_line(), "went");
    env.berth_ok(&["exec", "talk", "--", "touch", "/v/stop"]);
    assert_eq!(next_line(), "stopping");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(st) = follow.try_wait().unwrap() {
            break st;
        }
        if std::time::Instant::now() > deadline {
            let _ = follow.kill();
            panic!("berth logs -f did not end with the container");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "berth logs -f: {status}");
    env.delete_pod("talk").await;
}

/// Kubernetes' answers for what cannot be served: an unknown pod, a pod with two containers
/// and no -c, a container that is not the pod's, a node without an agent endpoint, an unbound
/// pod, an agent that is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_and_exec_errors() {
    let env = Env::start_agentapi().await;
    env.create_pod(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "two", "namespace": "default"},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [
            {"name": "a", "image": IMAGE, "command": ["sh", "-c", "echo from-a; exec sleep 1000"]},
            {"name": "b", "image": IMAGE, "command": ["sh", "-c", "echo from-b; exec sleep 1000"]}
        ]}
    }))
    .await;
    env.wait_pod("two", "Running", |p| phase(p) == "Running").await;
    env.wait_log(&env.pod("two").await.unwrap(), "b", "from-b").await;

    let (code, _, err) = env.berth(&["logs", "nope"]);
    assert_eq!(code, 1);
    assert!(err.contains("pods \"nope\" not found"), "{err}");
    let (code, _, err) = env.berth(&["exec", "nope", "--", "true"]);
    assert!(code != 0 && err.contains("pods \"nope\" not found"), "{err}");
    for verb in [&["logs", "two"][..], &["exec", "two", "--", "true"][..]] {
        let (code, _, err) = env.berth(verb);
        assert!(
            code != 0 && err.contains("a container name must be specified for pod two, choose one of: [a b]"),
            "{verb:?}: {err}"
        );
    }
    let (code, _, err) = env.berth(&["logs", "two", "-c", "z"]);
    assert!(
        code != 0 && err.contains("container z is not valid for pod two"),
        "{err}"
    );
    assert_eq!(env.berth_ok(&["logs", "two", "-c", "b"]), "from-b\n");
    let (code, _, err) = env.berth(&["logs", "two", "-c", "a", "--previous"]);
    assert!(
        code != 0 && err.contains("previous terminated container"),
        "{err}"
    );
    // Another namespace: not found there.
    let (code, _, err) = env.berth(&["logs", "two", "-c", "a", "-n", "kube-system"]);
    assert!(code != 0 && err.contains("not found"), "{err}");

    // A node that never published an agent endpoint, and a pod bound to it.
    let ghost: Node = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node", "metadata": {"name": "ba-ghost"},
        "status": {"addresses": [{"type": "InternalIP", "address": "127.0.0.1"}]}
    }))
    .unwrap();
    env.client.create("", &ghost).await.unwrap();
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "stray", "namespace": "default"},
        "spec": {"nodeName": "ba-ghost", "containers": [{"name": "c", "image": IMAGE}]}
    }))
    .unwrap();
    env.client.create("default", &pod).await.unwrap();
    let (code, _, err) = env.berth(&["logs", "stray"]);
    assert!(
        code != 0 && err.contains("node ba-ghost has no agent endpoint"),
        "{err}"
    );
    // A pod no node suits, so it stays unbound.
    let mut unbound = pod.clone();
    unbound.metadata.as_mut().unwrap().name = "unbound".into();
    let spec = unbound.spec.as_mut().unwrap();
    spec.node_name = String::new();
    spec.node_selector.insert("ba".into(), "nowhere".into());
    env.client.create("default", &unbound).await.unwrap();
    let (code, _, err) = env.berth(&["exec", "unbound", "--", "true"]);
    assert!(
        code != 0 && err.contains("pod unbound does not have a host assigned"),
        "{err}"
    );
    env.delete_pod("two").await;

    // The node's agent is gone: UNAVAILABLE, naming the node.
    let mut env = env;
    env.create_pod(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "orphan", "namespace": "default"},
        "spec": {"containers": [{"name": "c", "image": "ba-no-such-image:1", "imagePullPolicy": "Never"}]}
    }))
    .await;
    env.wait_pod("orphan", "waiting", |p| {
        status_of(p)
            .container_statuses
            .first()
            .is_some_and(|c| c.state.as_ref().is_some_and(|s| s.waiting.is_some()))
    })
    .await;
    let (code, _, err) = env.berth(&["logs", "orphan"]);
    assert!(
        code != 0 && err.contains("container \"c\" in pod \"orphan\" is waiting to start: "),
        "{err}"
    );
    env.agent.kill();
    let (code, _, err) = env.berth(&["logs", "orphan"]);
    assert!(
        code != 0
            && err.contains("(Unavailable)")
            && err.contains(&format!("node {}: cannot reach its agent", env.node)),
        "{err}"
    );
}

/// `berth image import --node` sends the archive through the server into the agent's store,
/// where a pod with that image runs; without --node it goes to every Ready node; an unknown
/// node is an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_import_through_the_server() {
    let env = Env::start_agentapi().await;
    let dir = tempfile::tempdir().unwrap();
    let rootfs = dir.path().join("rootfs");
    busybox_rootfs(&rootfs);
    std::fs::write(rootfs.join("marker"), "imported-through-the-server\n").unwrap();
    let archive = dir.path().join("box.tar");
    let out = Command::new(berth_bin())
        .args(["image", "build", "--tag", "example.org/ba/box:1", "--rootfs"])
        .arg(&rootfs)
        .arg("--output")
        .arg(&archive)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let archive = archive.to_str().unwrap();

    let (code, _, err) = env.berth(&["image", "import", archive, "--node", "ba-missing"]);
    assert!(
        code != 0 && err.contains("nodes \"ba-missing\" not found"),
        "{err}"
    );

    let out = env.berth_ok(&["image", "import", archive, "--node", &env.node]);
    assert!(
        out.starts_with(&format!("{} example.org/ba/box:1 sha256:", env.node)),
        "{out}"
    );
    // On the node's disk, in its store.
    let store = berth_node::image::ImageStore::open(&env.cfg.data_dir.join("images")).unwrap();
    assert!(
        store
            .list()
            .unwrap()
            .iter()
            .any(|i| i.name == "example.org/ba/box:1"),
        "not in the agent's store"
    );
    env.create_pod(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "boxed", "namespace": "default"},
        "spec": {"restartPolicy": "Never", "containers": [{
            "name": "c", "image": "example.org/ba/box:1", "imagePullPolicy": "Never",
            "command": ["cat", "/marker"]}]}
    }))
    .await;
    env.wait_pod("boxed", "Succeeded", |p| phase(p) == "Succeeded")
        .await;
    assert_eq!(env.berth_ok(&["logs", "boxed"]), "imported-through-the-server\n");

    env.delete_pod("boxed").await;

    // A second node: without --node the archive goes to every Ready node.
    let second_node = format!("{}-b", env.node);
    let tag = format!("ba-{}-{second_node}", std::process::id());
    let cfg = node_config(&second_node, env.server(), dir.path().join("agent2"), &tag);
    let log = dir.path().join("agent2.log");
    let mut second = AgentProc::new(
        cfg,
        agent_opts("libcontainer", &["--pod-network", "none"]),
        log.clone(),
    );
    second.start();
    let c = env.client.clone();
    eventually("second node Ready", || {
        let (c, n) = (c.clone(), second_node.clone());
        async move {
            let st = c.get::<Node>("", &n).await.ok()?.status?;
            st.conditions
                .iter()
                .any(|c| c.r#type == "Ready" && c.status == "True")
                .then_some(())
        }
    })
    .await;
    let out = env.berth_ok(&["image", "import", archive]);
    let nodes: Vec<&str> = out.lines().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(nodes, [env.node.as_str(), second_node.as_str()], "{out}");
    let store = berth_node::image::ImageStore::open(&second.cfg.data_dir.join("images")).unwrap();
    assert!(
        store
            .list()
            .unwrap()
            .iter()
            .any(|i| i.name == "example.org/ba/box:1"),
        "not in the second agent's store; its log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}

/// Every status the pod named `name` had while the returned task watched (from now on).
fn watch_statuses(
    client: &ResourceClient,
    name: &'static str,
) -> (
    tokio::task::JoinHandle<()>,
    std::sync::Arc<std::sync::Mutex<Vec<berth_proto::corev1::PodStatus>>>,
) {
    use berth_client::{ListParams, WatchEvent};
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (client, seen2) = (client.clone(), seen.clone());
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let task = tokio::spawn(async move {
        let list = client
            .list::<Pod>("default", &ListParams::default())
            .await
            .unwrap();
        let params = ListParams {
            resource_version: list.resource_version,
            ..Default::default()
        };
        let mut w = client.watch::<Pod>("default", &params);
        let _ = ready_tx.send(());
        while let Ok(ev) = w.next().await {
            let (WatchEvent::Added(p) | WatchEvent::Modified(p) | WatchEvent::Deleted(p)) = ev else {
                continue;
            };
            if p.metadata.as_ref().is_some_and(|m| m.name == name) {
                seen2.lock().unwrap().push(status_of(&p));
            }
        }
    });
    ready_rx.recv_timeout(Duration::from_secs(30)).unwrap();
    (task, seen)
}

/// Issue 4: a container counts as running only once its init process exists. One whose process
/// cannot be started (its command is not in the image) is never reported running, neither in
/// its state nor by the pod's phase: it waits with RunContainerError and the runtime's message.
/// A started container's startedAt is not earlier than its init's pid file, which names the
/// container's process.
async fn running_only_once_the_process_exists(runtime: &str) {
    let env = Env::start_prefixed("bs", runtime, &[], &["--pod-network", "none"]).await;
    // The list's resourceVersion is taken before the pod exists: the watch sees all of it.
    let (task, seen) = watch_statuses(&env.client, "nocmd");
    tokio::time::sleep(Duration::from_millis(200)).await;
    env.create_pod(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "nocmd", "namespace": "default"},
        "spec": {"terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "main", "image": IMAGE, "command": ["/no/such/binary"]}]}
    }))
    .await;
    let waiting = |p: &Pod| {
        status_of(p)
            .container_statuses
            .first()
            .and_then(|c| c.state.clone()?.waiting)
    };
    let p = env
        .wait_pod("nocmd", "RunContainerError", |p| {
            waiting(p).is_some_and(|w| w.reason == "RunContainerError")
        })
        .await;
    let w = waiting(&p).unwrap();
    assert!(w.message.contains("no/such/binary"), "{w:?}");
    // It is retried (CREATE_RETRY, 2 s) and fails the same way each time.
    eventually("a second failed start in the agent log", || {
        let n = env.log().matches("RunContainerError").count();
        async move { (n >= 2).then_some(()) }
    })
    .await;
    env.delete_pod("nocmd").await;
    task.abort();
    let seen = seen.lock().unwrap().clone();
    assert!(!seen.is_empty());
    for st in &seen {
        assert_ne!(st.phase, "Running", "{st:?}");
        for c in &st.container_statuses {
            let state = c.state.clone().unwrap_or_default();
            assert!(state.running.is_none(), "reported running: {c:?}");
            assert!(!c.started.unwrap_or(false), "{c:?}");
            if let Some(t) = state.terminated {
                assert!(
                    t.message.contains("no/such/binary") || t.reason != "Error",
                    "{t:?}"
                );
            }
        }
    }

    let pod = env
        .create_pod(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "ok", "namespace": "default"},
            "spec": {"terminationGracePeriodSeconds": 1,
                     "containers": [{"name": "main", "image": IMAGE, "command": ["sleep", "1000"]}]}
        }))
        .await;
    let p = env
        .wait_pod("ok", "Running", |p| phase(p) == "Running" && running(p))
        .await;
    let started_at = status_of(&p).container_statuses[0]
        .state
        .clone()
        .unwrap()
        .running
        .unwrap()
        .started_at;
    let pid_file = env
        .cfg
        .run_dir
        .join("pods")
        .join(uid(&pod))
        .join("runtime/main.pid");
    let created = std::fs::metadata(&pid_file)
        .unwrap_or_else(|e| panic!("{}: {e}", pid_file.display()))
        .modified()
        .unwrap();
    let created_us = created.duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as i64;
    // Both RFC 3339 at the second: as strings, their order is the times' order.
    assert!(
        started_at >= berth_node::rfc3339(created_us),
        "startedAt {started_at} before the pid file {}",
        berth_node::rfc3339(created_us)
    );
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    let comm = std::fs::read_to_string(format!("/proc/{}/comm", pid.trim())).unwrap();
    assert_eq!(comm.trim(), "sleep", "the pid file names the container's process");
    env.delete_pod("ok").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libcontainer_reports_running_only_once_the_process_exists() {
    running_only_once_the_process_exists("libcontainer").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runc_reports_running_only_once_the_process_exists() {
    running_only_once_the_process_exists("runc").await;
}
