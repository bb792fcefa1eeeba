//! Garbage collection on the node: old container log instances and unused images.
//!
//! Images: when the data dir's filesystem is more than `image_high_percent` full, unused
//! images are removed, least recently used first, until it is below `image_low_percent`
//! (the kubelet's image GC). An image is in use when any pod bound to the node names it; it is
//! never removed then, nor when it was used or stored less than `image_min_age` ago (an image
//! imported for a pod not yet created). Last use is a marker file per image name in the store
//! (`used/<sha256 of the name>`, its mtime), touched at every container start.
//!
//! Exited container instances: a container's writable layer and bundle are removed when it
//! exits (the pod worker does that); its logs keep the last [`LOG_INSTANCES_KEPT`] instances
//! (`<restartCount>.log` and its rotated `.log.1`).

use crate::image::{reference, ImageStore};
use crate::Error;
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Log instances of one container kept (the current one and the one before: `--previous`).
pub const LOG_INSTANCES_KEPT: i64 = 2;
/// Default: image GC starts above this much of the data dir's disk in use...
pub const IMAGE_HIGH_PERCENT_DEFAULT: u8 = 85;
/// ...and removes images until usage is below this.
pub const IMAGE_LOW_PERCENT_DEFAULT: u8 = 80;
/// Default: an image used or stored this recently is kept.
pub const IMAGE_MIN_AGE_DEFAULT: Duration = Duration::from_secs(120);
/// Default pause between GC passes.
pub const GC_INTERVAL_DEFAULT: Duration = Duration::from_secs(60);

/// The GC settings (from the agent's Config).
#[derive(Debug, Clone, PartialEq)]
pub struct GcPolicy {
    pub interval: Duration,
    pub image_high_percent: u8,
    pub image_low_percent: u8,
    pub image_min_age: Duration,
}

impl Default for GcPolicy {
    fn default() -> Self {
        GcPolicy {
            interval: GC_INTERVAL_DEFAULT,
            image_high_percent: IMAGE_HIGH_PERCENT_DEFAULT,
            image_low_percent: IMAGE_LOW_PERCENT_DEFAULT,
            image_min_age: IMAGE_MIN_AGE_DEFAULT,
        }
    }
}

impl GcPolicy {
    pub fn validate(&self) -> Result<(), Error> {
        if self.image_high_percent > 100 || self.image_low_percent > self.image_high_percent {
            return Err(Error::Config(format!(
                "--image-gc-low-percent {} / --image-gc-high-percent {}: want low <= high <= 100",
                self.image_low_percent, self.image_high_percent
            )));
        }
        if self.interval.is_zero() {
            return Err(Error::Config("--gc-interval-ms must be positive".into()));
        }
        Ok(())
    }
}

/// Percent of the filesystem holding `path` in use (as `df` computes it).
pub fn disk_used_percent(path: &Path) -> Option<f64> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: statvfs with a valid path and a zeroed struct to fill.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    let used = st.f_blocks.saturating_sub(st.f_bfree) as f64;
    let total = used + st.f_bavail as f64;
    (total > 0.0).then(|| 100.0 * used / total)
}

fn used_marker(store: &ImageStore, name: &str) -> PathBuf {
    store
        .root()
        .join("used")
        .join(hex::encode(Sha256::digest(name.as_bytes())))
}

/// Records a use of image `name` (normalized) now.
pub fn mark_used(store: &ImageStore, name: &str) -> Result<(), Error> {
    let p = used_marker(store, name);
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
    }
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&p)
        .map_err(|e| Error::io(&p, e))?;
    f.set_modified(SystemTime::now()).map_err(|e| Error::io(&p, e))
}

/// When image `name` was last used, else when it was stored.
fn last_used(store: &ImageStore, name: &str, manifest_digest: &str) -> SystemTime {
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let stored = store
        .root()
        .join("blobs/sha256")
        .join(manifest_digest.trim_start_matches("sha256:"));
    mtime(&used_marker(store, name))
        .into_iter()
        .chain(mtime(&stored))
        .max()
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// One image GC pass: removes unused images, least recently used first, while `used_percent`
/// says the disk is above the policy's thresholds. `in_use` holds image references as pods
/// write them (normalized here). Returns the removed names.
pub fn collect_images(
    store: &ImageStore,
    in_use: &HashSet<String>,
    policy: &GcPolicy,
    now: SystemTime,
    used_percent: &mut dyn FnMut() -> Option<f64>,
) -> Result<Vec<String>, Error> {
    let over = |p: Option<f64>, limit: u8| p.is_some_and(|p| p > f64::from(limit));
    if !over(used_percent(), policy.image_high_percent) {
        return Ok(Vec::new());
    }
    let keep: HashSet<String> = in_use
        .iter()
        .filter_map(|r| reference::normalize(r).ok())
        .collect();
    let mut candidates: Vec<(SystemTime, String)> = store
        .list()?
        .into_iter()
        .filter(|i| !keep.contains(&i.name))
        .map(|i| (last_used(store, &i.name, &i.manifest_digest), i.name))
        .filter(|(t, _)| now.duration_since(*t).unwrap_or_default() >= policy.image_min_age)
        .collect();
    candidates.sort();
    let mut removed = Vec::new();
    for (_, name) in candidates {
        if !over(used_percent(), policy.image_low_percent) {
            break;
        }
        match store.remove(&name) {
            Ok(()) | Err(Error::ImageNotFound(_)) => {}
            Err(e) => return Err(e),
        }
        let _ = std::fs::remove_file(used_marker(store, &name));
        tracing::info!(image = %name, "image garbage collected");
        removed.push(name);
    }
    Ok(removed)
}

/// The restart count a log file belongs to (`<n>.log` or `<n>.log.1`).
fn log_instance(file_name: &str) -> Option<i64> {
    let stem = file_name
        .strip_suffix(".log")
        .or_else(|| file_name.strip_suffix(".log.1"))?;
    stem.parse().ok()
}

/// Removes a container's log files older than the last [`LOG_INSTANCES_KEPT`] instances,
/// `current` being the restart count now running.
pub fn prune_container_logs(dir: &Path, current: i64) -> Result<(), Error> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if log_instance(&name).is_some_and(|n| n <= current - LOG_INSTANCES_KEPT) {
            let p = e.path();
            std::fs::remove_file(&p).map_err(|e| Error::io(&p, e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_keep_the_last_two_instances() {
        let d = tempfile::tempdir().unwrap();
        for f in [
            "0.log",
            "0.log.1",
            "1.log",
            "2.log",
            "2.log.1",
            "3.log",
            "notes.txt",
        ] {
            std::fs::write(d.path().join(f), "x").unwrap();
        }
        prune_container_logs(d.path(), 3).unwrap();
        let mut left: Vec<String> = std::fs::read_dir(d.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect();
        left.sort();
        assert_eq!(left, ["2.log", "2.log.1", "3.log", "notes.txt"]);
    }

    #[test]
    fn policy_is_checked() {
        assert!(GcPolicy::default().validate().is_ok());
        let bad = GcPolicy {
            image_low_percent: 90,
            ..GcPolicy::default()
        };
        assert!(bad.validate().unwrap_err().to_string().contains("low"));
    }

    #[test]
    fn unused_images_go_least_recently_used_first_until_below_low() {
        let d = tempfile::tempdir().unwrap();
        let store = ImageStore::open(&d.path().join("images")).unwrap();
        for (i, tag) in ["old:1", "newer:1", "used:1"].iter().enumerate() {
            let root = d.path().join(format!("rootfs{i}"));
            std::fs::create_dir_all(&root).unwrap();
            std::fs::write(root.join("f"), tag).unwrap();
            store.build_from_rootfs(&root, tag).unwrap();
        }
        let t0 = SystemTime::now();
        let name = |s: &str| reference::normalize(s).unwrap();
        for (tag, secs) in [("old:1", 0), ("newer:1", 10), ("used:1", 0)] {
            mark_used(&store, &name(tag)).unwrap();
            let f = std::fs::File::options()
                .write(true)
                .open(used_marker(&store, &name(tag)))
                .unwrap();
            f.set_modified(t0 + Duration::from_secs(secs)).unwrap();
        }
        let policy = GcPolicy {
            image_min_age: Duration::ZERO,
            ..GcPolicy::default()
        };
        let in_use: HashSet<String> = ["used:1".to_string()].into();
        // Below the high mark: nothing.
        let mut usage = || Some(50.0);
        let later = t0 + Duration::from_secs(60);
        assert!(collect_images(&store, &in_use, &policy, later, &mut usage)
            .unwrap()
            .is_empty());
        // Above: the oldest unused goes first, then usage drops below the low mark.
        let mut readings = vec![Some(90.0), Some(90.0), Some(70.0)].into_iter();
        let mut usage = || readings.next().flatten();
        let removed = collect_images(&store, &in_use, &policy, later, &mut usage).unwrap();
        assert_eq!(removed, [name("old:1")]);
        // Always over: every unused image goes, the used one stays.
        let mut usage = || Some(99.0);
        let removed = collect_images(&store, &in_use, &policy, later, &mut usage).unwrap();
        assert_eq!(removed, [name("newer:1")]);
        let left: Vec<String> = store.list().unwrap().into_iter().map(|i| i.name).collect();
        assert_eq!(left, [name("used:1")]);
        // Too recent to go.
        let young = GcPolicy::default();
        store
            .build_from_rootfs(&d.path().join("rootfs0"), "fresh:1")
            .unwrap();
        assert!(
            collect_images(&store, &in_use, &young, SystemTime::now(), &mut || Some(99.0))
                .unwrap()
                .is_empty()
        );
    }
}
