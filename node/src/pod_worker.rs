//! One task per pod: a level-triggered loop that compares the pod's spec with what runs and
//! acts (sandbox, volumes, init containers in order, containers with the restart policy and
//! back-off), reports status through UpdateStatus when it changed, and on deletion stops the
//! containers within the grace period, tears everything down and deletes the pod object.
//!
//! Being the only task touching its pod, a worker never runs two syncs of it at once; it wakes
//! on a new spec, a container exit, a poke (a referenced object changed) or a timer.

use crate::backoff::{BackOff, Decision};
use crate::env::{self, Sources};
use crate::netns::{self, PodNamespaces};
use crate::objects::{Kind, Lookup};
use crate::pod_state::{self, ContainerRecord, PodRecord, RunningRecord};
use crate::probes::{self, ProbeKind, ProbeState};
use crate::runtime::monitor::{self, ExitStatus, MonitorFiles};
use crate::runtime::{BindMount, ContainerConfig};
use crate::status::{self, ContainerView, PodView, State, Terminated};
use crate::{cgroups, gc, mount, volumes, Shared};
use berth_client::ClientError;
use berth_proto::apiv1;
use berth_proto::corev1::{Container, Pod, PodStatus};
use futures::future::BoxFuture;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch, Notify};

/// A pod is synced at least this often even when nothing happens (volume contents, probes).
pub const RESYNC_INTERVAL: Duration = Duration::from_secs(10);
/// Retry after a sandbox or volume setup error.
const SETUP_RETRY: Duration = Duration::from_secs(2);
/// Retry a container that could not be created (missing image, bad config reference).
const CREATE_RETRY: Duration = Duration::from_secs(2);
/// A failed pull shows as ErrImagePull at least this long before ImagePullBackOff (a sync
/// right after the failure, woken by the status write itself, would replace it at once).
const ERR_IMAGE_PULL_SHOWN: Duration = Duration::from_secs(2);
/// Poll while referenced ConfigMaps/Secrets are still loading.
const OBJECTS_WAIT: Duration = Duration::from_millis(100);
/// How long to wait for processes after SIGKILL before tearing down anyway.
const KILL_WAIT: Duration = Duration::from_secs(10);
/// Size of the pod's tmpfs (runtime bundles, secret volumes).
pub const POD_TMPFS_BYTES: u64 = 64 << 20;
/// Grace period when none is given (Kubernetes' default).
const DEFAULT_GRACE_SECONDS: i64 = 30;
/// Retries of the final delete of the pod object.
const DELETE_ATTEMPTS: usize = 20;
const DELETE_RETRY: Duration = Duration::from_millis(500);

/// How the agent reaches a worker.
pub struct WorkerHandle {
    pub pod: watch::Sender<Option<Pod>>,
    pub poke: Arc<Notify>,
}

struct Running {
    attempt: u32,
    id: String,
    started_at: String,
    started_ms: u64,
}

#[derive(Default)]
struct Ctr {
    image: String,
    image_id: String,
    attempts: u32,
    restart_count: i32,
    running: Option<Running>,
    /// The most recent termination.
    exited: Option<(Terminated, u64)>,
    /// The termination before it (lastState while `exited` is the current state).
    previous: Option<Terminated>,
    waiting: Option<(String, String)>,
    ready: bool,
    started: bool,
    probes: HashMap<ProbeKind, ProbeState>,
}

struct Exit {
    name: String,
    attempt: u32,
    code: i32,
    signal: i32,
    oom: bool,
    finished_ms: u64,
    message: String,
}

struct Sandbox {
    ns: PodNamespaces,
    pod_ip: Option<IpAddr>,
}

pub struct Worker {
    shared: Arc<Shared>,
    uid: String,
    pod_rx: watch::Receiver<Option<Pod>>,
    poke: Arc<Notify>,
    exit_tx: mpsc::UnboundedSender<Exit>,
    exit_rx: mpsc::UnboundedReceiver<Exit>,
    sandbox: Option<Sandbox>,
    ctrs: BTreeMap<String, Ctr>,
    backoff: BackOff,
    /// Image pull failures, keyed `pull/<image>` (ImagePullBackOff).
    pull_backoff: BackOff,
    start_time: String,
    message: String,
    volumes: HashMap<String, PathBuf>,
    last_status: Option<PodStatus>,
}

fn uid_of(pod: &Pod) -> String {
    pod.metadata.as_ref().map(|m| m.uid.clone()).unwrap_or_default()
}

fn grace_seconds(pod: &Pod) -> i64 {
    let meta = pod.metadata.clone().unwrap_or_default();
    meta.deletion_grace_period_seconds
        .or(pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds))
        .unwrap_or(DEFAULT_GRACE_SECONDS)
        .max(0)
}

/// Starts the worker of `pod`; `done` receives its uid when it has finished.
pub fn spawn(shared: Arc<Shared>, pod: Pod, done: mpsc::UnboundedSender<String>) -> WorkerHandle {
    let uid = uid_of(&pod);
    let (tx, rx) = watch::channel(Some(pod));
    let poke = Arc::new(Notify::new());
    let (exit_tx, exit_rx) = mpsc::unbounded_channel();
    let w = Worker {
        shared,
        uid: uid.clone(),
        pod_rx: rx,
        poke: poke.clone(),
        exit_tx,
        exit_rx,
        sandbox: None,
        ctrs: BTreeMap::new(),
        backoff: BackOff::default(),
        pull_backoff: BackOff::default(),
        start_time: String::new(),
        message: String::new(),
        volumes: HashMap::new(),
        last_status: None,
    };
    tokio::spawn(async move {
        let mut w = w;
        w.adopt();
        w.run().await;
        let _ = done.send(uid);
    });
    WorkerHandle { pod: tx, poke }
}

impl Worker {
    fn now_ms(&self) -> u64 {
        (self.shared.clock.now_micros() / 1000).max(0) as u64
    }

    fn now_rfc3339(&self) -> String {
        crate::rfc3339(self.shared.clock.now_micros())
    }

    fn data_dir(&self) -> PathBuf {
        self.shared.cfg.data_dir.join("pods").join(&self.uid)
    }

    /// The pod's tmpfs.
    fn run_dir(&self) -> PathBuf {
        self.shared.cfg.run_dir.join("pods").join(&self.uid)
    }

    /// The worker's records for adoption by a later agent (on the pod's tmpfs).
    fn state_dir(&self) -> PathBuf {
        self.run_dir().join("state")
    }

    fn state_root(&self) -> PathBuf {
        self.run_dir().join("runtime")
    }

    /// Takes over what an earlier agent left for this pod: start time, restart counts, last
    /// terminations, and the running containers (their monitors are waited for; nothing is
    /// restarted). Exits that happened meanwhile arrive at once, from the exit files.
    fn adopt(&mut self) {
        let (pod, ctrs) = pod_state::load(&self.state_dir());
        if let Some(p) = pod {
            self.start_time = p.start_time;
        }
        for (name, r) in ctrs {
            let running = r.running.as_ref().map(|x| Running {
                attempt: x.attempt,
                id: x.id.clone(),
                started_at: x.started_at.clone(),
                started_ms: x.started_ms,
            });
            if let Some(run) = &running {
                tracing::info!(pod = %self.uid, container = %name, attempt = run.attempt, restart_count = r.restart_count, "adopted running container");
                self.shared.running.started(&self.uid, &name, r.restart_count);
                self.spawn_waiter(name.clone(), run.attempt, r.restart_count, None);
            }
            let ctr = Ctr {
                image: r.image,
                image_id: r.image_id,
                attempts: r.attempts,
                restart_count: r.restart_count,
                running,
                exited: r.exited,
                previous: r.previous,
                ..Ctr::default()
            };
            self.ctrs.insert(name, ctr);
        }
    }

    /// Writes container `name`'s record (after a start or an exit).
    fn persist(&self, name: &str) {
        let Some(c) = self.ctrs.get(name) else { return };
        let r = ContainerRecord {
            image: c.image.clone(),
            image_id: c.image_id.clone(),
            attempts: c.attempts,
            restart_count: c.restart_count,
            running: c.running.as_ref().map(|x| RunningRecord {
                attempt: x.attempt,
                id: x.id.clone(),
                started_at: x.started_at.clone(),
                started_ms: x.started_ms,
            }),
            exited: c.exited.clone(),
            previous: c.previous.clone(),
        };
        if let Err(e) = pod_state::save_container(&self.state_dir(), name, &r) {
            tracing::warn!(pod = %self.uid, container = %name, "record: {e}");
        }
    }

    /// Waits for container `name`'s instance `attempt` to end (`started`: the monitor this
    /// agent spawned; None: an adopted one), removes what the instance left (runtime state,
    /// rootfs mount, writable layer, bundle) and reports the exit to the worker.
    fn spawn_waiter(
        &self,
        name: String,
        attempt: u32,
        restart_count: i32,
        started: Option<BoxFuture<'static, Result<ExitStatus, crate::Error>>>,
    ) {
        let (shared, uid, tx) = (self.shared.clone(), self.uid.clone(), self.exit_tx.clone());
        let state_root = self.state_root();
        let cdir = self.data_dir().join("containers").join(&name);
        let bundle = self.run_dir().join("bundles").join(&name);
        tokio::spawn(async move {
            let files = MonitorFiles::new(&state_root, &name);
            let fresh = started.is_some();
            let st = match started {
                Some(w) => w.await,
                None => monitor::wait_adopted(&files).await.ok_or_else(|| {
                    crate::Error::Runtime("the container's monitor ended without an exit status".into())
                }),
            };
            let now_ms = (shared.clock.now_micros() / 1000).max(0) as u64;
            let oom_cgroup = shared.cgroups.oom_killed(&uid, &name);
            let mut message = String::new();
            let (code, signal, oom, finished_ms) = match st {
                Ok(s) if fresh => (s.exit_code, s.signal, s.oom_killed || oom_cgroup, now_ms),
                Ok(s) => (
                    s.exit_code,
                    s.signal,
                    s.oom_killed || oom_cgroup,
                    s.finished_at_ms,
                ),
                Err(e) => {
                    tracing::warn!(pod = %uid, container = %name, "wait: {e}");
                    message = e.to_string();
                    (128, 0, oom_cgroup, now_ms)
                }
            };
            shared.running.exited(&uid, &name, restart_count);
            if let Err(e) = shared.runtime.delete(&state_root, &name).await {
                tracing::warn!(pod = %uid, container = %name, "delete: {e}");
            }
            let rootfs = cdir.join("rootfs");
            if let Err(e) = mount::unmount(&rootfs) {
                tracing::warn!(pod = %uid, container = %name, "unmount rootfs: {e}");
            }
            // The exited instance's writable layer and bundle (its logs stay).
            for d in [cdir.join("upper"), cdir.join("work"), bundle] {
                if d.exists() {
                    if let Err(e) = std::fs::remove_dir_all(&d) {
                        tracing::warn!(pod = %uid, container = %name, "remove {}: {e}", d.display());
                    }
                }
            }
            let _ = tx.send(Exit {
                name,
                attempt,
                code,
                signal,
                oom,
                finished_ms,
                message,
            });
        });
    }

    fn log_dir(pod: &Pod, cfg: &crate::Config) -> PathBuf {
        let m = pod.metadata.clone().unwrap_or_default();
        crate::logs::pod_log_dir(&cfg.data_dir, &m.namespace, &m.name, &m.uid)
    }

    async fn run(mut self) {
        loop {
            let pod = self.pod_rx.borrow_and_update().clone();
            let Some(pod) = pod else {
                // Gone from the API without us (force delete): stop and clean up at once.
                self.stop_all(Duration::from_secs(0)).await;
                self.teardown(None).await;
                return;
            };
            if pod
                .metadata
                .as_ref()
                .is_some_and(|m| !m.deletion_timestamp.is_empty())
            {
                self.stop_all(Duration::from_secs(grace_seconds(&pod) as u64))
                    .await;
                self.teardown(Some(&pod)).await;
                self.delete_object(&pod).await;
                return;
            }
            let requeue = self
                .sync(&pod)
                .await
                .unwrap_or(RESYNC_INTERVAL)
                .min(RESYNC_INTERVAL);
            self.report(&pod).await;
            tokio::select! {
                r = self.pod_rx.changed() => if r.is_err() { return },
                _ = self.poke.notified() => {}
                Some(e) = self.exit_rx.recv() => self.on_exit(e),
                _ = tokio::time::sleep(requeue) => {}
            }
        }
    }

    fn ctr(&mut self, c: &Container) -> &mut Ctr {
        let e = self.ctrs.entry(c.name.clone()).or_default();
        if e.image.is_empty() {
            e.image = c.image.clone();
        }
        e
    }

    /// One level-triggered pass; returns when to look again.
    async fn sync(&mut self, pod: &Pod) -> Option<Duration> {
        if self.start_time.is_empty() {
            self.start_time = self.now_rfc3339();
        }
        if self.sandbox.is_none() {
            if let Err(e) = self.create_sandbox(pod).await {
                tracing::warn!(pod = %self.uid, "sandbox: {e}");
                self.message = format!("sandbox: {e}");
                return Some(SETUP_RETRY);
            }
        }
        self.shared.objects.track(&self.uid, pod);
        if !self.shared.objects.synced_for(pod) {
            return Some(OBJECTS_WAIT);
        }
        let dirs = volumes::VolumeDirs {
            disk: self.data_dir().join("volumes"),
            memory: self.run_dir().join("volumes"),
        };
        match volumes::prepare(pod, &dirs, &self.sources(pod)) {
            Ok(v) => self.volumes = v,
            Err(e) => {
                self.message = e.to_string();
                return Some(SETUP_RETRY);
            }
        }
        self.message.clear();
        let spec = pod.spec.clone().unwrap_or_default();
        let policy = if spec.restart_policy.is_empty() {
            "Always".to_string()
        } else {
            spec.restart_policy.clone()
        };
        let mut next: Option<Duration> = None;
        let mut soonest = |d: Duration| next = Some(next.map_or(d, |n: Duration| n.min(d)));
        // Init containers: in order, each to completion.
        for c in &spec.init_containers {
            let ctr = self.ctr(c);
            if ctr.running.is_some() {
                return next;
            }
            let restart = match &ctr.exited {
                Some((t, _)) if t.exit_code == 0 => continue,
                Some(_) if policy == "Never" => return next, // the pod has failed
                Some(_) => true,
                None => false,
            };
            if let Some(d) = self.start_or_back_off(pod, c, restart).await {
                soonest(d);
            }
            return next;
        }
        for c in &spec.containers {
            let ctr = self.ctr(c);
            if ctr.running.is_some() {
                continue;
            }
            let restart = match &ctr.exited {
                None => false,
                Some((t, _)) => match policy.as_str() {
                    "Never" => continue,
                    "OnFailure" if t.exit_code == 0 => continue,
                    _ => true,
                },
            };
            if let Some(d) = self.start_or_back_off(pod, c, restart).await {
                soonest(d);
            }
        }
        if let Some(d) = self.run_probes(pod).await {
            soonest(d);
        }
        next
    }

    /// Starts `c`, unless it is a restart still in back-off. Returns when to look again.
    async fn start_or_back_off(&mut self, pod: &Pod, c: &Container, restart: bool) -> Option<Duration> {
        if restart {
            let finished_ms = self.ctrs[&c.name].exited.as_ref().map_or(0, |(_, f)| *f);
            let key = c.name.clone();
            let now = self.now_ms();
            if let Decision::Wait { remaining_ms } = self.backoff.decide(&key, finished_ms, now) {
                let name = pod.metadata.as_ref().map(|m| m.name.clone()).unwrap_or_default();
                let ctr = self.ctrs.get_mut(&c.name).expect("container known");
                ctr.waiting = Some((
                    "CrashLoopBackOff".into(),
                    format!(
                        "back-off {}s restarting failed container={} pod={name}",
                        remaining_ms.div_ceil(1000),
                        c.name
                    ),
                ));
                return Some(Duration::from_millis(remaining_ms));
            }
        }
        match self.start(pod, c).await {
            Ok(()) => None,
            Err((reason, message)) => {
                tracing::info!(pod = %self.uid, container = %c.name, "{reason}: {message}");
                self.ctrs.get_mut(&c.name).expect("container known").waiting = Some((reason, message));
                Some(CREATE_RETRY)
            }
        }
    }

    fn sources(&self, pod: &Pod) -> PodSources {
        PodSources {
            cache: self.shared.objects.clone(),
            ns: pod
                .metadata
                .as_ref()
                .map(|m| m.namespace.clone())
                .unwrap_or_default(),
            pod_ip: self.pod_ip(),
            host_ip: self.shared.host_ip.clone(),
        }
    }

    fn pod_ip(&self) -> String {
        match self.sandbox.as_ref().and_then(|s| s.pod_ip) {
            Some(ip) => ip.to_string(),
            None => String::new(),
        }
    }

    fn hostname(pod: &Pod) -> String {
        let spec = pod.spec.clone().unwrap_or_default();
        let name = if spec.hostname.is_empty() {
            pod.metadata.as_ref().map(|m| m.name.clone()).unwrap_or_default()
        } else {
            spec.hostname
        };
        name.chars().take(63).collect()
    }

    async fn create_sandbox(&mut self, pod: &Pod) -> Result<(), crate::Error> {
        let cfg = &self.shared.cfg;
        let run = self.run_dir();
        if !mount::is_mount_point(&run) {
            mount::tmpfs(&run, Some(POD_TMPFS_BYTES), 0o700)?;
        }
        let data = self.data_dir();
        std::fs::create_dir_all(&data).map_err(|e| crate::Error::io(&data, e))?;
        self.shared.cgroups.create_pod(&self.uid, cfg.pod_pids_max)?;
        let ns = PodNamespaces::paths(&cfg.run_dir.join("netns"), &self.uid);
        let (ns2, host) = (ns.clone(), Self::hostname(pod));
        tokio::task::spawn_blocking(move || netns::create(&ns2, &host))
            .await
            .map_err(|e| crate::Error::Network(e.to_string()))??;
        let pod_ip = self.shared.network.attach(&self.uid, &ns.net).await?;
        let hostname = Self::hostname(pod);
        let ip = pod_ip.map_or(String::new(), |i| i.to_string());
        let mut hosts = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n".to_string();
        if !ip.is_empty() {
            hosts.push_str(&format!("{ip}\t{hostname}\n"));
        }
        let write = |name: &str, body: &str| {
            let p = data.join(name);
            std::fs::write(&p, body).map_err(|e| crate::Error::io(&p, e))
        };
        write("hosts", &hosts)?;
        write("hostname", &format!("{hostname}\n"))?;
        // On the tmpfs, now that it is mounted (written earlier it would be hidden by it).
        let record = PodRecord {
            start_time: self.start_time.clone(),
        };
        pod_state::save_pod(&self.state_dir(), &record)?;
        self.sandbox = Some(Sandbox { ns, pod_ip });
        Ok(())
    }

    /// Makes the container's image present as its imagePullPolicy says (Always; IfNotPresent;
    /// Never: fail when missing), pulling with back-off; an error is (waiting reason, message)
    /// as the kubelet reports it.
    async fn ensure_image(&mut self, c: &Container) -> Result<(), (String, String)> {
        let policy = if c.image_pull_policy.is_empty() {
            berth_proto::defaults::image_pull_policy(&c.image)
        } else {
            c.image_pull_policy.as_str()
        };
        let present = self
            .shared
            .images
            .manifest_digest_of(&c.image)
            .map_err(|e| ("InvalidImageName".to_string(), e.to_string()))?
            .is_some();
        match (policy, present) {
            ("Never", false) => Err((
                "ErrImageNeverPull".into(),
                format!(
                    "Container image \"{}\" is not present with pull policy of Never",
                    c.image
                ),
            )),
            ("Never", true) | ("IfNotPresent", true) => Ok(()),
            _ => self.pull(c).await,
        }
    }

    async fn pull(&mut self, c: &Container) -> Result<(), (String, String)> {
        let key = format!("pull/{}", c.image);
        let now_ms = self.now_ms();
        if self.pull_backoff.remaining_ms(&key, now_ms).is_some() {
            let failed_ms = self.pull_backoff.last_failure_ms(&key).unwrap_or(0);
            let shown = self.ctrs.get(&c.name).and_then(|x| x.waiting.clone());
            if let Some(err) = shown.filter(|(r, _)| r == "ErrImagePull") {
                if now_ms.saturating_sub(failed_ms) < ERR_IMAGE_PULL_SHOWN.as_millis() as u64 {
                    return Err(err);
                }
            }
            return Err((
                "ImagePullBackOff".into(),
                format!("Back-off pulling image \"{}\"", c.image),
            ));
        }
        tracing::info!(pod = %self.uid, image = %c.image, "pulling");
        match self.shared.puller.pull(&self.shared.images, &c.image).await {
            Ok(info) => {
                tracing::info!(pod = %self.uid, image = %info.name, digest = %info.manifest_digest, "pulled");
                self.pull_backoff.forget(&key);
                Ok(())
            }
            Err(e) => {
                self.pull_backoff.failed(&key, self.now_ms());
                Err((
                    "ErrImagePull".into(),
                    format!("Failed to pull image \"{}\": {e}", c.image),
                ))
            }
        }
    }

    /// Creates and starts one container; an error is (waiting reason, message).
    async fn start(&mut self, pod: &Pod, c: &Container) -> Result<(), (String, String)> {
        self.ensure_image(c).await?;
        let images = self.shared.images.clone();
        let image_ref = c.image.clone();
        let image = tokio::task::spawn_blocking(move || {
            let r = images.resolve(&image_ref);
            if let Ok(i) = &r {
                if let Err(e) = gc::mark_used(&images, &i.name) {
                    tracing::warn!(image = %i.name, "image last use: {e}");
                }
            }
            r
        })
        .await
        .map_err(|e| ("ErrImagePull".to_string(), e.to_string()))?
        .map_err(|e| match e {
            crate::Error::ImageNotFound(n) => (
                "ErrImageNeverPull".to_string(),
                format!("image {n} is not in the node's image store (import it with `berth image import`)"),
            ),
            e => ("InvalidImageName".to_string(), e.to_string()),
        })?;
        let config_err = |m: String| ("CreateContainerConfigError".to_string(), m);
        let image_env = image.config.env.clone().unwrap_or_default();
        let env = env::build_env(pod, c, &image_env, &self.sources(pod)).map_err(|e| config_err(e.0))?;
        let argv = env::command_line(
            c,
            image.config.entrypoint.as_deref().unwrap_or(&[]),
            image.config.cmd.as_deref().unwrap_or(&[]),
            &env,
        );
        if argv.is_empty() {
            return Err(config_err("no command specified".into()));
        }
        let limits = cgroups::limits(c.resources.as_ref()).map_err(|e| config_err(e.to_string()))?;
        let mut mounts = vec![
            BindMount {
                source: self.data_dir().join("hosts"),
                destination: "/etc/hosts".into(),
                read_only: false,
            },
            BindMount {
                source: self.data_dir().join("hostname"),
                destination: "/etc/hostname".into(),
                read_only: false,
            },
        ];
        for m in &c.volume_mounts {
            let Some(src) = self.volumes.get(&m.name) else {
                return Err(config_err(format!("volumeMount {:?}: no such volume", m.name)));
            };
            let mut source = src.clone();
            if !m.sub_path.is_empty() {
                if Path::new(&m.sub_path)
                    .components()
                    .any(|c| !matches!(c, std::path::Component::Normal(_)))
                {
                    return Err(config_err(format!(
                        "subPath {:?} must be relative, without '..'",
                        m.sub_path
                    )));
                }
                source = source.join(&m.sub_path);
                if !source.exists() {
                    std::fs::create_dir_all(&source).map_err(|e| config_err(e.to_string()))?;
                }
            }
            mounts.push(BindMount {
                source,
                destination: m.mount_path.clone(),
                read_only: m.read_only,
            });
        }
        // A fresh writable layer per start, as a new container gets.
        let cdir = self.data_dir().join("containers").join(&c.name);
        let rootfs = cdir.join("rootfs");
        let prepared = (|| -> Result<(), crate::Error> {
            mount::unmount(&rootfs)?;
            for d in ["upper", "work"] {
                let p = cdir.join(d);
                if p.exists() {
                    std::fs::remove_dir_all(&p).map_err(|e| crate::Error::io(&p, e))?;
                }
            }
            mount::overlay(
                &image.layer_dirs,
                &cdir.join("upper"),
                &cdir.join("work"),
                &rootfs,
            )
        })();
        prepared.map_err(|e| ("CreateContainerError".to_string(), e.to_string()))?;
        let cwd = if c.working_dir.is_empty() {
            image.config.working_dir.clone().unwrap_or_default()
        } else {
            c.working_dir.clone()
        };
        let sandbox = self.sandbox.as_ref().expect("sandbox before containers");
        // The restartCount this instance will have: each instance logs to its own file.
        let restart_count = self
            .ctrs
            .get(&c.name)
            .map_or(0, |x| x.restart_count + i32::from(x.exited.is_some()));
        let cfg = ContainerConfig {
            id: c.name.clone(),
            state_root: self.state_root(),
            bundle: self.run_dir().join("bundles").join(&c.name),
            rootfs: rootfs.clone(),
            args: argv,
            env: env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
            cwd,
            hostname: Self::hostname(pod),
            namespaces: sandbox.ns.clone(),
            cgroups_path: self.shared.cgroups.container_path(&self.uid, &c.name),
            limits,
            mounts,
            log_path: crate::logs::instance_log(
                &Self::log_dir(pod, &self.shared.cfg),
                &c.name,
                restart_count,
            ),
            log_bytes_max: self.shared.cfg.container_log_bytes_max,
            oom_counter: Some(self.shared.cgroups.oom_counter(&self.uid, &c.name)),
        };
        let runtime = self.shared.runtime.clone();
        let _ = runtime.delete(&cfg.state_root, &cfg.id).await;
        // Recorded before it starts, so a log follower that comes at once waits for its file.
        self.shared.running.started(&self.uid, &c.name, restart_count);
        let started = runtime.run(&cfg).map_err(|e| {
            self.shared.running.exited(&self.uid, &c.name, restart_count);
            let _ = mount::unmount(&rootfs);
            ("StartError".to_string(), e.to_string())
        })?;
        // Running only once the init process exists (as the kubelet after the runtime's start
        // returned): a runtime that fails before that is a start error, never Running.
        if let Err(e) = started.started.await {
            self.abandon_start(&cfg, started.wait).await;
            self.shared.running.exited(&self.uid, &c.name, restart_count);
            return Err(("RunContainerError".to_string(), e.to_string()));
        }
        let now_ms = self.now_ms();
        let now = self.now_rfc3339();
        let ctr = self.ctrs.get_mut(&c.name).expect("container known");
        ctr.attempts += 1;
        if ctr.exited.is_some() {
            ctr.restart_count += 1;
            ctr.previous = ctr.exited.take().map(|(t, _)| t);
        }
        ctr.image = c.image.clone();
        ctr.image_id = image.config_digest.clone();
        ctr.waiting = None;
        ctr.ready = false;
        ctr.started = false;
        ctr.probes.clear();
        ctr.running = Some(Running {
            attempt: ctr.attempts,
            id: cfg.id.clone(),
            started_at: now,
            started_ms: now_ms,
        });
        let (attempt, restart_count) = (ctr.attempts, ctr.restart_count);
        self.persist(&c.name);
        self.spawn_waiter(c.name.clone(), attempt, restart_count, Some(started.wait));
        if let Some(dir) = cfg.log_path.parent() {
            if let Err(e) = gc::prune_container_logs(dir, i64::from(restart_count)) {
                tracing::warn!(pod = %self.uid, container = %c.name, "old logs: {e}");
            }
        }
        tracing::info!(pod = %self.uid, container = %c.name, attempt, "started");
        Ok(())
    }

    /// Removes what a start that failed left: the monitor (the container killed if it exists,
    /// the monitor reaped within [`KILL_WAIT`], else killed too), the runtime's state, the
    /// rootfs mount and the monitor's files. The writable layer goes with the next start.
    async fn abandon_start(
        &self,
        cfg: &ContainerConfig,
        wait: BoxFuture<'static, Result<ExitStatus, crate::Error>>,
    ) {
        let runtime = self.shared.runtime.clone();
        let files = MonitorFiles::new(&cfg.state_root, &cfg.id);
        let _ = runtime.kill(&cfg.state_root, &cfg.id, libc::SIGKILL).await;
        if tokio::time::timeout(KILL_WAIT, wait).await.is_err() {
            // A runtime stuck before creating anything to kill (the start timed out): the
            // monitor goes, and `delete --force` below removes whatever the runtime made.
            tracing::warn!(pod = %self.uid, container = %cfg.id, "killing the monitor of a failed start");
            if let Some(pid) = files.live_pid() {
                // SAFETY: kill has no memory-safety preconditions; the pid was checked to be
                // this container's monitor.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        if let Err(e) = runtime.delete(&cfg.state_root, &cfg.id).await {
            tracing::warn!(pod = %self.uid, container = %cfg.id, "delete: {e}");
        }
        let _ = mount::unmount(&cfg.rootfs);
        files.clear();
    }

    fn on_exit(&mut self, e: Exit) {
        let now = crate::rfc3339(e.finished_ms as i64 * 1000);
        let Some(ctr) = self.ctrs.get_mut(&e.name) else {
            return;
        };
        let Some(r) = ctr.running.take_if(|r| r.attempt == e.attempt) else {
            return;
        };
        let reason = if e.oom {
            "OOMKilled"
        } else if e.code == 0 {
            "Completed"
        } else {
            "Error"
        };
        tracing::info!(pod = %self.uid, container = %e.name, code = e.code, reason, "exited");
        let _ = r.started_ms;
        ctr.ready = false;
        ctr.exited = Some((
            Terminated {
                exit_code: e.code,
                signal: e.signal,
                reason: reason.into(),
                message: e.message,
                started_at: r.started_at,
                finished_at: now,
                container_id: String::new(),
            },
            e.finished_ms,
        ));
        // Recorded first, then the monitor's files go: an agent dying in between finds the
        // exit file again and handles the exit once more (idempotent), never loses it.
        self.persist(&e.name);
        MonitorFiles::new(&self.state_root(), &e.name).clear();
    }

    fn running_ids(&self) -> Vec<String> {
        self.ctrs
            .values()
            .filter_map(|c| c.running.as_ref().map(|r| r.id.clone()))
            .collect()
    }

    /// SIGTERM to every running container, SIGKILL to what is left after `grace`.
    async fn stop_all(&mut self, grace: Duration) {
        let state_root = self.state_root();
        for (sig, wait) in [(libc::SIGTERM, grace), (libc::SIGKILL, KILL_WAIT)] {
            let ids = self.running_ids();
            if ids.is_empty() {
                return;
            }
            for id in &ids {
                if let Err(e) = self.shared.runtime.kill(&state_root, id, sig).await {
                    tracing::warn!(pod = %self.uid, container = %id, "kill {sig}: {e}");
                }
            }
            let deadline = tokio::time::Instant::now() + wait;
            while !self.running_ids().is_empty() {
                tokio::select! {
                    Some(e) = self.exit_rx.recv() => self.on_exit(e),
                    _ = tokio::time::sleep_until(deadline) => break,
                }
            }
        }
    }

    /// Removes everything the pod had on the node.
    async fn teardown(&mut self, pod: Option<&Pod>) {
        let uid = self.uid.clone();
        let cfg = self.shared.cfg.clone();
        let ns = PodNamespaces::paths(&cfg.run_dir.join("netns"), &uid);
        if let Err(e) = self.shared.network.detach(&uid, &ns.net).await {
            tracing::warn!(pod = %uid, "network detach: {e}");
        }
        let (shared, data, run) = (self.shared.clone(), self.data_dir(), self.run_dir());
        let logs = pod.map(|p| Self::log_dir(p, &cfg));
        let r = tokio::task::spawn_blocking(move || -> Result<(), crate::Error> {
            shared.cgroups.remove_pod(&uid)?;
            netns::remove(&ns)?;
            mount::unmount_all_under(&data)?;
            mount::unmount_all_under(&run)?;
            for d in [Some(data), Some(run), logs].into_iter().flatten() {
                if d.exists() {
                    std::fs::remove_dir_all(&d).map_err(|e| crate::Error::io(&d, e))?;
                }
            }
            Ok(())
        })
        .await;
        match r {
            Ok(Ok(())) => tracing::info!(pod = %self.uid, "torn down"),
            Ok(Err(e)) => tracing::error!(pod = %self.uid, "teardown: {e}"),
            Err(e) => tracing::error!(pod = %self.uid, "teardown task: {e}"),
        }
        self.shared.objects.release(&self.uid);
        self.sandbox = None;
    }

    /// The acknowledged end of a graceful deletion: delete with grace 0 (the API removes a
    /// marked pod at once then), only this pod (uid precondition).
    async fn delete_object(&self, pod: &Pod) {
        let m = pod.metadata.clone().unwrap_or_default();
        let opts = apiv1::DeleteOptions {
            grace_period_seconds: Some(0),
            preconditions: Some(apiv1::Preconditions {
                uid: Some(m.uid.clone()),
                resource_version: None,
            }),
            ..Default::default()
        };
        for _ in 0..DELETE_ATTEMPTS {
            match self
                .shared
                .client
                .delete::<Pod>(&m.namespace, &m.name, opts.clone())
                .await
            {
                Ok(_) | Err(ClientError::NotFound(_)) => return,
                Err(e) => {
                    tracing::warn!(pod = %m.name, "delete: {e}");
                    tokio::time::sleep(DELETE_RETRY).await;
                }
            }
        }
    }

    fn view(&self, pod: &Pod) -> PodView {
        let spec = pod.spec.clone().unwrap_or_default();
        let init_done = spec.init_containers.iter().all(|c| {
            self.ctrs
                .get(&c.name)
                .and_then(|x| x.exited.as_ref())
                .is_some_and(|(t, _)| t.exit_code == 0)
        });
        let one = |c: &Container, is_init: bool| -> ContainerView {
            let Some(x) = self.ctrs.get(&c.name) else {
                let reason = if !is_init && !init_done {
                    "PodInitializing"
                } else {
                    "ContainerCreating"
                };
                return ContainerView {
                    name: c.name.clone(),
                    image: c.image.clone(),
                    image_id: String::new(),
                    container_id: String::new(),
                    state: State::Waiting {
                        reason: reason.into(),
                        message: String::new(),
                    },
                    last_state: None,
                    restart_count: 0,
                    ready: false,
                    started: false,
                };
            };
            let exited = x.exited.as_ref().map(|(t, _)| t.clone());
            let (state, last) = match (&x.running, &x.waiting, &exited) {
                (Some(r), _, _) => (
                    State::Running {
                        started_at: r.started_at.clone(),
                    },
                    x.previous.clone(),
                ),
                (None, Some((reason, message)), _) => (
                    State::Waiting {
                        reason: reason.clone(),
                        message: message.clone(),
                    },
                    exited.or(x.previous.clone()),
                ),
                (None, None, Some(t)) => (State::Terminated(t.clone()), x.previous.clone()),
                (None, None, None) => (
                    State::Waiting {
                        reason: "ContainerCreating".into(),
                        message: String::new(),
                    },
                    None,
                ),
            };
            ContainerView {
                name: c.name.clone(),
                image: x.image.clone(),
                image_id: x.image_id.clone(),
                container_id: String::new(),
                state,
                last_state: last,
                restart_count: x.restart_count,
                ready: x.running.is_some() && x.ready,
                started: x.running.is_some() && x.started,
            }
        };
        PodView {
            init_containers: spec.init_containers.iter().map(|c| one(c, true)).collect(),
            containers: spec.containers.iter().map(|c| one(c, false)).collect(),
            restart_policy: if spec.restart_policy.is_empty() {
                "Always".into()
            } else {
                spec.restart_policy.clone()
            },
            pod_ip: self.pod_ip(),
            host_ip: self.shared.host_ip.clone(),
            start_time: self.start_time.clone(),
            message: self.message.clone(),
        }
    }

    /// Writes the status when it differs from what was last written.
    async fn report(&mut self, pod: &Pod) {
        let old = self.last_status.clone().or_else(|| pod.status.clone());
        let st = status::pod_status(&self.view(pod), old.as_ref(), &self.now_rfc3339());
        if self.last_status.as_ref() == Some(&st) {
            return;
        }
        let mut p = pod.clone();
        if let Some(m) = p.metadata.as_mut() {
            // Unconditional: the agent is the only writer of a bound pod's status.
            m.resource_version.clear();
        }
        p.status = Some(st.clone());
        match self.shared.client.update_status(&p).await {
            Ok(_) => self.last_status = Some(st),
            Err(e) => tracing::warn!(pod = %self.uid, "status update: {e}"),
        }
    }

    /// Runs the probes that are due; updates ready/started; a failed liveness (or startup)
    /// probe stops the container so the restart policy applies. Returns when the next is due.
    async fn run_probes(&mut self, pod: &Pod) -> Option<Duration> {
        let spec = pod.spec.clone().unwrap_or_default();
        let now_ms = self.now_ms();
        let mut next: Option<u64> = None;
        let ns = self.sandbox.as_ref().map(|s| s.ns.net.clone())?;
        let state_root = self.run_dir().join("runtime");
        let mut to_kill = Vec::new();
        for c in &spec.containers {
            let Some(ctr) = self.ctrs.get_mut(&c.name) else {
                continue;
            };
            let Some(r) = &ctr.running else { continue };
            let (started_ms, id) = (r.started_ms, r.id.clone());
            let outcome = probes::step(
                c,
                &mut ctr.probes,
                started_ms,
                now_ms,
                &probes::Target {
                    runtime: self.shared.runtime.clone(),
                    state_root: state_root.clone(),
                    container_id: id.clone(),
                    netns: ns.clone(),
                },
            )
            .await;
            ctr.started = outcome.started;
            ctr.ready = outcome.ready;
            if outcome.kill {
                to_kill.push(id);
            }
            if let Some(d) = outcome.next_due_ms {
                next = Some(next.map_or(d, |n| n.min(d)));
            }
        }
        for id in to_kill {
            tracing::info!(pod = %self.uid, container = %id, "liveness probe failed: stopping");
            let _ = self.shared.runtime.kill(&state_root, &id, libc::SIGTERM).await;
            let rt = self.shared.runtime.clone();
            let (sr, grace) = (state_root.clone(), Duration::from_secs(grace_seconds(pod) as u64));
            tokio::spawn(async move {
                tokio::time::sleep(grace).await;
                let _ = rt.kill(&sr, &id, libc::SIGKILL).await;
            });
        }
        next.map(|due| Duration::from_millis(due.saturating_sub(now_ms).max(1)))
    }
}

/// Env and volume sources of one pod: the agent's cache of referenced objects.
struct PodSources {
    cache: crate::objects::ObjectCache,
    ns: String,
    pod_ip: String,
    host_ip: String,
}

impl Sources for PodSources {
    fn config_map(&self, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
        match self.cache.get(Kind::ConfigMap, &self.ns, name) {
            Lookup::Data(d) => Some(d),
            _ => None,
        }
    }
    fn secret(&self, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
        match self.cache.get(Kind::Secret, &self.ns, name) {
            Lookup::Data(d) => Some(d),
            _ => None,
        }
    }
    fn pod_ip(&self) -> String {
        self.pod_ip.clone()
    }
    fn host_ip(&self) -> String {
        self.host_ip.clone()
    }
}
