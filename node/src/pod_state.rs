//! What a pod worker keeps on the pod's tmpfs (`<run>/pods/<uid>/state/`) so that an agent
//! started again adopts the pod instead of restarting it: the pod's start time and, per
//! container, its attempts, restart count, the running instance (id, start time) and the last
//! terminations. Each file is replaced atomically; the tmpfs goes with the pod (and with a
//! reboot, after which there is nothing to adopt).

use crate::runtime::monitor::write_atomic;
use crate::status::Terminated;
use crate::Error;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

const POD_FILE: &str = "pod.json";
const CONTAINER_SUFFIX: &str = ".ctr.json";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PodRecord {
    pub start_time: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunningRecord {
    pub attempt: u32,
    pub id: String,
    pub started_at: String,
    pub started_ms: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub image: String,
    pub image_id: String,
    pub attempts: u32,
    pub restart_count: i32,
    pub running: Option<RunningRecord>,
    /// The most recent termination and when it happened (ms since the epoch).
    pub exited: Option<(Terminated, u64)>,
    pub previous: Option<Terminated>,
}

fn save<T: Serialize>(path: &Path, v: &T) -> Result<(), Error> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
    }
    write_atomic(path, &serde_json::to_vec(v).expect("record serializes"))
}

pub fn save_pod(dir: &Path, r: &PodRecord) -> Result<(), Error> {
    save(&dir.join(POD_FILE), r)
}

pub fn save_container(dir: &Path, name: &str, r: &ContainerRecord) -> Result<(), Error> {
    save(&dir.join(format!("{name}{CONTAINER_SUFFIX}")), r)
}

/// What an earlier agent left for this pod (nothing when it is new; unreadable files are
/// skipped with a warning: the container is then started as new).
pub fn load(dir: &Path) -> (Option<PodRecord>, BTreeMap<String, ContainerRecord>) {
    let read = |p: &Path| std::fs::read(p).ok();
    let pod = read(&dir.join(POD_FILE)).and_then(|b| serde_json::from_slice(&b).ok());
    let mut ctrs = BTreeMap::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let f = e.file_name().to_string_lossy().to_string();
        let Some(name) = f.strip_suffix(CONTAINER_SUFFIX) else {
            continue;
        };
        match read(&e.path()).map(|b| serde_json::from_slice::<ContainerRecord>(&b)) {
            Some(Ok(r)) => {
                ctrs.insert(name.to_string(), r);
            }
            other => tracing::warn!(file = %e.path().display(), "unreadable container record: {other:?}"),
        }
    }
    (pod, ctrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(load(d.path()), (None, BTreeMap::new()));
        let pod = PodRecord {
            start_time: "2026-01-01T00:00:00Z".into(),
        };
        save_pod(d.path(), &pod).unwrap();
        let c = ContainerRecord {
            image: "busybox".into(),
            attempts: 2,
            restart_count: 1,
            running: Some(RunningRecord {
                attempt: 2,
                id: "main".into(),
                started_at: "t".into(),
                started_ms: 5,
            }),
            ..Default::default()
        };
        save_container(d.path(), "main", &c).unwrap();
        let (p, cs) = load(d.path());
        assert_eq!(p, Some(pod));
        assert_eq!(cs.get("main"), Some(&c));
    }
}
