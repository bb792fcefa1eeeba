//! The Node object: registration (labels, capacity and allocatable from the machine unless
//! configured, addresses, nodeInfo) and conditions (Ready, MemoryPressure, DiskPressure,
//! PIDPressure) with heartbeat and transition times.

use crate::{Config, Error};
use berth_client::{ClientError, ResourceClient};
use berth_proto::corev1::{Node, NodeAddress, NodeCondition, NodeSpec, NodeStatus, NodeSystemInfo};
use berth_proto::metav1::ObjectMeta;
use std::collections::BTreeMap;
use std::path::Path;

/// Pods a node runs when not configured (the kubelet's default).
pub const DEFAULT_MAX_PODS: u32 = 110;
/// Memory pressure below this much available memory (the kubelet's eviction default).
pub const MEMORY_AVAILABLE_MIN_BYTES: u64 = 100 << 20;
/// Disk pressure below this fraction of free space on the data dir's filesystem (percent).
pub const DISK_FREE_MIN_PERCENT: u64 = 10;
/// PID pressure above this fraction of pid_max in use (percent).
pub const PIDS_USED_MAX_PERCENT: u64 = 90;

/// What the machine looks like now.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MachineFacts {
    pub cpus: usize,
    pub memory_total_bytes: u64,
    pub memory_available_bytes: u64,
    pub disk_free_percent: u64,
    pub pids_used_percent: u64,
}

pub fn machine_facts(data_dir: &Path) -> MachineFacts {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let kib = |key: &str| -> u64 {
        meminfo
            .lines()
            .find_map(|l| {
                l.strip_prefix(key)?
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .unwrap_or(0)
            * 1024
    };
    let disk_free_percent = {
        let c = std::ffi::CString::new(data_dir.as_os_str().as_encoded_bytes()).unwrap_or_default();
        // SAFETY: statvfs into a zeroed struct with a valid path.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statvfs(c.as_ptr(), &mut st) } == 0 && st.f_blocks > 0 {
            st.f_bavail * 100 / st.f_blocks
        } else {
            100
        }
    };
    let pid_max: u64 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(32768);
    let procs = std::fs::read_dir("/proc")
        .map(|rd| {
            rd.flatten()
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .bytes()
                        .all(|b| b.is_ascii_digit())
                })
                .count() as u64
        })
        .unwrap_or(0);
    MachineFacts {
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        memory_total_bytes: kib("MemTotal:"),
        memory_available_bytes: kib("MemAvailable:"),
        disk_free_percent,
        pids_used_percent: procs * 100 / pid_max.max(1),
    }
}

/// Capacity from the machine, each resource replaced by the configured one when given.
pub fn capacity(facts: &MachineFacts, configured: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut c = BTreeMap::from([
        ("cpu".to_string(), facts.cpus.to_string()),
        (
            "memory".to_string(),
            format!("{}Ki", facts.memory_total_bytes / 1024),
        ),
        ("pods".to_string(), DEFAULT_MAX_PODS.to_string()),
    ]);
    for (k, v) in configured {
        c.insert(k.clone(), v.clone());
    }
    c
}

/// The four conditions for `facts` at `now`, keeping transition times of unchanged ones.
pub fn conditions(facts: &MachineFacts, old: &[NodeCondition], now: &str) -> Vec<NodeCondition> {
    let mem = facts.memory_available_bytes < MEMORY_AVAILABLE_MIN_BYTES;
    let disk = facts.disk_free_percent < DISK_FREE_MIN_PERCENT;
    let pids = facts.pids_used_percent > PIDS_USED_MAX_PERCENT;
    let one = |kind: &str, bad: bool, ok_reason: &str, ok_msg: &str, bad_reason: &str, bad_msg: &str| {
        let (status, reason, message) = if kind == "Ready" {
            if bad {
                ("False", bad_reason, bad_msg)
            } else {
                ("True", ok_reason, ok_msg)
            }
        } else if bad {
            ("True", bad_reason, bad_msg)
        } else {
            ("False", ok_reason, ok_msg)
        };
        let since = old
            .iter()
            .find(|c| c.r#type == kind && c.status == status)
            .map_or(now.to_string(), |c| c.last_transition_time.clone());
        NodeCondition {
            r#type: kind.into(),
            status: status.into(),
            last_heartbeat_time: now.into(),
            last_transition_time: since,
            reason: reason.into(),
            message: message.into(),
        }
    };
    vec![
        one(
            "MemoryPressure",
            mem,
            "KubeletHasSufficientMemory",
            "berth agent has sufficient memory available",
            "KubeletHasInsufficientMemory",
            "berth agent has insufficient memory available",
        ),
        one(
            "DiskPressure",
            disk,
            "KubeletHasNoDiskPressure",
            "berth agent has no disk pressure",
            "KubeletHasDiskPressure",
            "berth agent has disk pressure",
        ),
        one(
            "PIDPressure",
            pids,
            "KubeletHasSufficientPID",
            "berth agent has sufficient PID available",
            "KubeletHasInsufficientPID",
            "berth agent has insufficient PID available",
        ),
        one(
            "Ready",
            false,
            "KubeletReady",
            "berth agent is posting ready status",
            "",
            "",
        ),
    ]
}

fn first_line(path: &str) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .next()
        .unwrap_or("")
        .trim()
        .to_string()
}

fn os_image() -> String {
    std::fs::read_to_string("/etc/os-release")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("PRETTY_NAME=")
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_else(|| "Linux".into())
}

pub fn node_info(runtime_version: &str) -> NodeSystemInfo {
    NodeSystemInfo {
        machine_id: first_line("/etc/machine-id"),
        system_uuid: first_line("/sys/class/dmi/id/product_uuid"),
        boot_id: first_line("/proc/sys/kernel/random/boot_id"),
        kernel_version: first_line("/proc/sys/kernel/osrelease"),
        os_image: os_image(),
        container_runtime_version: runtime_version.into(),
        kubelet_version: format!("berth-{}", env!("CARGO_PKG_VERSION")),
        kube_proxy_version: String::new(),
        operating_system: "linux".into(),
        architecture: crate::image::archive::host_arch().into(),
    }
}

pub fn hostname() -> String {
    first_line("/proc/sys/kernel/hostname")
}

/// The node's labels: the well-known ones, then the configured ones.
pub fn labels(cfg: &Config) -> BTreeMap<String, String> {
    let mut l = BTreeMap::from([
        ("kubernetes.io/hostname".to_string(), cfg.node_name.clone()),
        ("kubernetes.io/os".to_string(), "linux".to_string()),
        (
            "kubernetes.io/arch".to_string(),
            crate::image::archive::host_arch().to_string(),
        ),
    ]);
    l.extend(cfg.labels.clone());
    l
}

/// Creates the Node, or brings an existing one's labels up to date (other labels stay).
pub async fn register(client: &ResourceClient, cfg: &Config) -> Result<Node, Error> {
    match client.get::<Node>("", &cfg.node_name).await {
        Ok(mut n) => {
            let meta = n.metadata.get_or_insert_with(Default::default);
            let want = labels(cfg);
            if want.iter().any(|(k, v)| meta.labels.get(k) != Some(v)) {
                meta.labels.extend(want);
                n = client.update(&n).await?;
            }
            Ok(n)
        }
        Err(ClientError::NotFound(_)) => {
            let n = Node {
                api_version: "v1".into(),
                kind: "Node".into(),
                metadata: Some(ObjectMeta {
                    name: cfg.node_name.clone(),
                    labels: labels(cfg).into_iter().collect(),
                    ..Default::default()
                }),
                spec: Some(NodeSpec::default()),
                status: None,
            };
            match client.create("", &n).await {
                Ok(n) => Ok(n),
                Err(ClientError::AlreadyExists(_)) => Ok(client.get::<Node>("", &cfg.node_name).await?),
                Err(e) => Err(e.into()),
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// The full status to write now.
pub fn status(
    cfg: &Config,
    facts: &MachineFacts,
    old: Option<&NodeStatus>,
    host_ip: &str,
    runtime_version: &str,
    now: &str,
) -> NodeStatus {
    let cap = capacity(facts, &cfg.capacity);
    let alloc = if cfg.allocatable.is_empty() {
        cap.clone()
    } else {
        let mut a = cap.clone();
        a.extend(cfg.allocatable.clone());
        a
    };
    NodeStatus {
        capacity: cap.into_iter().collect(),
        allocatable: alloc.into_iter().collect(),
        phase: String::new(),
        conditions: conditions(facts, old.map_or(&[][..], |s| &s.conditions[..]), now),
        addresses: vec![
            NodeAddress {
                r#type: "InternalIP".into(),
                address: host_ip.into(),
            },
            NodeAddress {
                r#type: "Hostname".into(),
                address: hostname(),
            },
        ],
        daemon_endpoints: None,
        node_info: Some(node_info(runtime_version)),
        images: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> MachineFacts {
        MachineFacts {
            cpus: 4,
            memory_total_bytes: 8 << 30,
            memory_available_bytes: 4 << 30,
            disk_free_percent: 50,
            pids_used_percent: 5,
        }
    }

    #[test]
    fn capacity_from_the_machine_or_configured() {
        let c = capacity(&facts(), &BTreeMap::new());
        assert_eq!(c["cpu"], "4");
        assert_eq!(c["memory"], "8388608Ki");
        assert_eq!(c["pods"], "110");
        let c = capacity(&facts(), &BTreeMap::from([("cpu".to_string(), "2".to_string())]));
        assert_eq!(c["cpu"], "2");
    }

    #[test]
    fn conditions_flip_with_pressure_and_keep_transition_times() {
        let c1 = conditions(&facts(), &[], "T1");
        let get = |cs: &[NodeCondition], k: &str| cs.iter().find(|c| c.r#type == k).unwrap().clone();
        assert_eq!(get(&c1, "Ready").status, "True");
        assert_eq!(get(&c1, "MemoryPressure").status, "False");
        let mut f = facts();
        f.memory_available_bytes = 1 << 20;
        let c2 = conditions(&f, &c1, "T2");
        let m = get(&c2, "MemoryPressure");
        assert_eq!(
            (m.status.as_str(), m.last_transition_time.as_str()),
            ("True", "T2")
        );
        let d = get(&c2, "DiskPressure");
        assert_eq!(
            (d.last_transition_time.as_str(), d.last_heartbeat_time.as_str()),
            ("T1", "T2")
        );
    }

    #[test]
    fn real_machine_facts_are_plausible() {
        let f = machine_facts(Path::new("/"));
        assert!(f.cpus >= 1 && f.memory_total_bytes > 0 && f.memory_available_bytes <= f.memory_total_bytes);
        assert!(f.disk_free_percent <= 100 && f.pids_used_percent <= 100);
    }
}
