//! Pod volumes on the node: emptyDir (a directory, or a tmpfs for medium Memory with its
//! sizeLimit), hostPath (with its type checks), configMap and secret (files projected
//! atomically; secrets only ever on the pod's tmpfs).
//!
//! Projection as the kubelet does it: the files are written to a fresh hidden directory
//! `..<n>`, then the symlink `..data` is swapped to it with a rename, and each top-level name
//! is a symlink through `..data`, so a container sees an update all at once, never half.

use crate::env::Sources;
use crate::mount;
use crate::Error;
use berth_proto::corev1::{KeyToPath, Pod, Volume};
use berth_proto::quantity::Quantity;
use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

/// File mode of projected files when the volume gives none (Kubernetes' default).
pub const DEFAULT_MODE: u32 = 0o644;
const DATA_LINK: &str = "..data";

/// Where a pod's volumes live: `disk` for emptyDir and configMap, `memory` (the pod's tmpfs)
/// for secrets.
pub struct VolumeDirs {
    pub disk: PathBuf,
    pub memory: PathBuf,
}

/// Prepares (or refreshes) every volume of the pod; returns volume name -> host path.
/// A missing non-optional ConfigMap or Secret is an error naming it.
pub fn prepare(pod: &Pod, dirs: &VolumeDirs, src: &dyn Sources) -> Result<HashMap<String, PathBuf>, Error> {
    let spec = pod.spec.clone().unwrap_or_default();
    let mut out = HashMap::new();
    for v in &spec.volumes {
        let path = prepare_one(v, dirs, src)?;
        out.insert(v.name.clone(), path);
    }
    Ok(out)
}

fn prepare_one(v: &Volume, dirs: &VolumeDirs, src: &dyn Sources) -> Result<PathBuf, Error> {
    let bad = |m: String| Error::Pod(format!("volume {:?}: {m}", v.name));
    if let Some(e) = &v.empty_dir {
        let dir = dirs.disk.join(&v.name);
        if e.medium == "Memory" {
            if !mount::is_mount_point(&dir) {
                let size = match &e.size_limit {
                    Some(q) => Some(
                        Quantity::parse(q)
                            .map_err(|err| bad(format!("sizeLimit {q:?}: {err}")))?
                            .value()
                            .max(0) as u64,
                    ),
                    None => None,
                };
                mount::tmpfs(&dir, size, 0o777)?;
            }
        } else {
            std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
            set_mode(&dir, 0o777)?;
        }
        return Ok(dir);
    }
    if let Some(h) = &v.host_path {
        let p = PathBuf::from(&h.path);
        let kind = h.r#type.as_deref().unwrap_or("");
        let check = |ok: bool, what: &str| {
            if ok {
                Ok(())
            } else {
                Err(bad(format!("{}: {what}", h.path)))
            }
        };
        match kind {
            "" => {}
            "DirectoryOrCreate" => {
                std::fs::create_dir_all(&p).map_err(|e| Error::io(&p, e))?;
            }
            "FileOrCreate" => {
                if !p.exists() {
                    std::fs::File::create(&p).map_err(|e| Error::io(&p, e))?;
                }
            }
            "Directory" => check(p.is_dir(), "not a directory")?,
            "File" => check(p.is_file(), "not a file")?,
            "Socket" | "CharDevice" | "BlockDevice" => check(p.exists(), "does not exist")?,
            other => return Err(bad(format!("hostPath type {other:?} is not supported"))),
        }
        return Ok(p);
    }
    if let Some(c) = &v.config_map {
        let dir = dirs.disk.join(&v.name);
        let data = src.config_map(&c.name);
        let files = match data {
            Some(d) => select(&d, &c.items, c.default_mode, c.optional).map_err(bad)?,
            None if c.optional.unwrap_or(false) => BTreeMap::new(),
            None => return Err(bad(format!("configmap {:?} not found", c.name))),
        };
        project(&dir, &files)?;
        return Ok(dir);
    }
    if let Some(s) = &v.secret {
        let dir = dirs.memory.join(&v.name);
        std::fs::create_dir_all(&dirs.memory).map_err(|e| Error::io(&dirs.memory, e))?;
        if !mount::is_tmpfs(&dirs.memory) {
            return Err(bad(format!(
                "{} is not a tmpfs: secrets never go to disk",
                dirs.memory.display()
            )));
        }
        let data = src.secret(&s.secret_name);
        let files = match data {
            Some(d) => select(&d, &s.items, s.default_mode, s.optional).map_err(bad)?,
            None if s.optional.unwrap_or(false) => BTreeMap::new(),
            None => return Err(bad(format!("secret {:?} not found", s.secret_name))),
        };
        project(&dir, &files)?;
        return Ok(dir);
    }
    Err(bad(
        "only emptyDir, hostPath, configMap and secret volumes run on this node".into(),
    ))
}

/// Relative file path -> (content, mode) for a projection.
type Files = BTreeMap<PathBuf, (Vec<u8>, u32)>;

/// The files a configMap/secret volume shows: every key, or just `items` (a missing key is an
/// error unless the volume is optional).
fn select(
    data: &BTreeMap<String, Vec<u8>>,
    items: &[KeyToPath],
    default_mode: Option<i32>,
    optional: Option<bool>,
) -> Result<Files, String> {
    let mode = |m: Option<i32>| (m.or(default_mode).map_or(DEFAULT_MODE, |m| m as u32)) & 0o7777;
    let mut out = Files::new();
    if items.is_empty() {
        for (k, v) in data {
            out.insert(PathBuf::from(k), (v.clone(), mode(None)));
        }
        return Ok(out);
    }
    for it in items {
        let p = Path::new(&it.path);
        if p.is_absolute()
            || p.components().any(|c| !matches!(c, Component::Normal(_)))
            || it.path.starts_with("..")
        {
            return Err(format!("item path {:?} must be relative, without '..'", it.path));
        }
        match data.get(&it.key) {
            Some(v) => {
                out.insert(p.to_path_buf(), (v.clone(), mode(it.mode)));
            }
            None if optional.unwrap_or(false) => {}
            None => return Err(format!("key {:?} not found", it.key)),
        }
    }
    Ok(out)
}

fn set_mode(p: &Path, mode: u32) -> Result<(), Error> {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).map_err(|e| Error::io(p, e))
}

/// Reads the files currently projected in `dir` (through `..data`).
fn current(dir: &Path) -> Option<Files> {
    let data = dir.join(DATA_LINK);
    let target = std::fs::read_link(&data).ok()?;
    let mut out = Files::new();
    fn walk(base: &Path, rel: &Path, out: &mut Files) -> Option<()> {
        for e in std::fs::read_dir(base.join(rel)).ok()?.flatten() {
            let r = rel.join(e.file_name());
            let md = e.metadata().ok()?;
            if md.is_dir() {
                walk(base, &r, out)?;
            } else {
                out.insert(
                    r,
                    (std::fs::read(e.path()).ok()?, md.permissions().mode() & 0o7777),
                );
            }
        }
        Some(())
    }
    walk(&dir.join(target), Path::new(""), &mut out)?;
    Some(out)
}

/// Projects `files` into `dir` atomically; does nothing when they are already there.
pub fn project(dir: &Path, files: &Files) -> Result<(), Error> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    if current(dir).as_ref() == Some(files) {
        return Ok(());
    }
    let old = std::fs::read_link(dir.join(DATA_LINK)).ok();
    let stamp = format!(
        "..{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );
    let new = dir.join(&stamp);
    std::fs::create_dir_all(&new).map_err(|e| Error::io(&new, e))?;
    set_mode(&new, 0o755)?;
    for (rel, (content, mode)) in files {
        let p = new.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        std::fs::write(&p, content).map_err(|e| Error::io(&p, e))?;
        set_mode(&p, *mode)?;
    }
    let tmp_link = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp_link);
    std::os::unix::fs::symlink(&stamp, &tmp_link).map_err(|e| Error::io(&tmp_link, e))?;
    std::fs::rename(&tmp_link, dir.join(DATA_LINK)).map_err(|e| Error::io(dir, e))?;
    // Top-level names: links through ..data; stale ones go.
    let tops: std::collections::BTreeSet<_> = files
        .keys()
        .filter_map(|p| p.components().next())
        .map(|c| c.as_os_str().to_owned())
        .collect();
    for t in &tops {
        let link = dir.join(t);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new(DATA_LINK).join(t), &link)
                .map_err(|e| Error::io(&link, e))?;
        }
    }
    for e in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?.flatten() {
        let n = e.file_name();
        if !n.to_string_lossy().starts_with("..") && !tops.contains(&n) {
            let _ = std::fs::remove_file(e.path());
        }
    }
    if let Some(old) = old.filter(|o| o.as_os_str() != stamp.as_str()) {
        let _ = std::fs::remove_dir_all(dir.join(old));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn files(kv: &[(&str, &str, u32)]) -> Files {
        kv.iter()
            .map(|(k, v, m)| (PathBuf::from(k), (v.as_bytes().to_vec(), *m)))
            .collect()
    }

    #[test]
    fn projection_swaps_atomically_and_drops_stale_names() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("v");
        project(&dir, &files(&[("a", "1", 0o644), ("sub/b", "2", 0o400)])).unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("a")).unwrap(), "1");
        assert_eq!(std::fs::read_to_string(dir.join("sub/b")).unwrap(), "2");
        assert_eq!(
            std::fs::metadata(dir.join("sub/b")).unwrap().mode() & 0o777,
            0o400
        );
        let first = std::fs::read_link(dir.join(DATA_LINK)).unwrap();
        project(&dir, &files(&[("a", "1", 0o644), ("sub/b", "2", 0o400)])).unwrap();
        assert_eq!(
            std::fs::read_link(dir.join(DATA_LINK)).unwrap(),
            first,
            "unchanged: no swap"
        );
        project(&dir, &files(&[("a", "3", 0o644)])).unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("a")).unwrap(), "3");
        assert!(!dir.join("sub").exists());
        assert!(!dir.join(&first).exists(), "old generation removed");
    }

    #[test]
    fn items_modes_and_missing_keys() {
        let data: BTreeMap<String, Vec<u8>> =
            [("k1".to_string(), b"v1".to_vec()), ("k2".into(), b"v2".to_vec())].into();
        let all = select(&data, &[], Some(0o600), None).unwrap();
        assert_eq!(all, files(&[("k1", "v1", 0o600), ("k2", "v2", 0o600)]));
        let item = |k: &str, p: &str, m: Option<i32>| KeyToPath {
            key: k.into(),
            path: p.into(),
            mode: m,
        };
        let some = select(&data, &[item("k2", "dir/two", Some(0o400))], None, None).unwrap();
        assert_eq!(some, files(&[("dir/two", "v2", 0o400)]));
        assert!(select(&data, &[item("k9", "x", None)], None, None).is_err());
        assert!(select(&data, &[item("k9", "x", None)], None, Some(true))
            .unwrap()
            .is_empty());
        assert!(select(&data, &[item("k1", "../x", None)], None, None).is_err());
        assert!(select(&data, &[item("k1", "/x", None)], None, None).is_err());
    }
}
