//! A node's image store: OCI content addressed by digest, layers unpacked once, names.
//!
//! Layout under the store's root: `blobs/sha256/<hex>` (manifests, configs, layer tars as
//! received), `layers/<diff-id hex>/` (a layer unpacked, whiteouts turned into overlayfs's
//! form; created under `tmp/` and renamed, so a present directory is complete), `refs.json`
//! (normalized reference -> manifest digest), `lock` (flock held by every writer, so an agent
//! and a `berth image import` on the same store do not interleave).

use super::archive::{self, Descriptor, ImageConfigFile, Manifest, RootFs, RunConfig};
use super::reference;
use crate::Error;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// Read buffer when hashing and copying blobs.
const COPY_BUFFER_BYTES: usize = 256 << 10;

/// An image as listed.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageInfo {
    /// Normalized reference.
    pub name: String,
    pub manifest_digest: String,
    /// The image id (digest of its config), as `docker images` shows.
    pub config_digest: String,
    /// Sum of the stored layer blobs.
    pub size_bytes: u64,
}

/// An image ready for a container: unpacked layers (bottom first) and its run config.
#[derive(Debug, Clone)]
pub struct ResolvedImage {
    pub name: String,
    pub config_digest: String,
    pub layer_dirs: Vec<PathBuf>,
    pub config: RunConfig,
}

pub struct ImageStore {
    root: PathBuf,
}

/// An exclusive flock on the store, released on drop.
struct StoreLock(File);

impl Drop for StoreLock {
    fn drop(&mut self) {
        // SAFETY: flock on a file descriptor we own.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Digest of a file's content, and of its content gunzipped when it is gzip (a layer's diff id).
fn file_digests(path: &Path) -> Result<(String, u64, String), Error> {
    let mut f = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut magic = [0u8; 2];
    let gz = f.read(&mut magic).map_err(|e| Error::io(path, e))? == 2 && magic == [0x1f, 0x8b];
    let blob = hash_reader(File::open(path).map_err(|e| Error::io(path, e))?, path)?;
    let diff = if gz {
        let r = flate2::read::GzDecoder::new(File::open(path).map_err(|e| Error::io(path, e))?);
        hash_reader(r, path)?.0
    } else {
        blob.0.clone()
    };
    Ok((format!("sha256:{}", blob.0), blob.1, format!("sha256:{diff}")))
}

fn hash_reader(mut r: impl Read, path: &Path) -> Result<(String, u64), Error> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; COPY_BUFFER_BYTES];
    let mut n_total = 0u64;
    loop {
        let n = r.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            return Ok((hex::encode(h.finalize()), n_total));
        }
        n_total += n as u64;
        h.update(&buf[..n]);
    }
}

impl ImageStore {
    /// Opens (creating when absent) the store at `root`.
    pub fn open(root: &Path) -> Result<ImageStore, Error> {
        for d in ["blobs/sha256", "layers", "tmp"] {
            std::fs::create_dir_all(root.join(d)).map_err(|e| Error::io(root, e))?;
        }
        Ok(ImageStore {
            root: root.to_path_buf(),
        })
    }

    fn lock(&self) -> Result<StoreLock, Error> {
        let p = self.root.join("lock");
        let f = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map_err(|e| Error::io(&p, e))?;
        // SAFETY: flock on a file descriptor we own.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(Error::io(&p, std::io::Error::last_os_error()));
        }
        Ok(StoreLock(f))
    }

    fn blob(&self, digest: &str) -> Result<PathBuf, Error> {
        archive::blob_path(&self.root, digest)
    }

    fn layer_dir(&self, diff_id: &str) -> PathBuf {
        self.root
            .join("layers")
            .join(diff_id.trim_start_matches("sha256:"))
    }

    fn tmp_path(&self, what: &str) -> PathBuf {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        self.root
            .join("tmp")
            .join(format!("{what}-{}-{n}", std::process::id()))
    }

    fn refs(&self) -> Result<BTreeMap<String, String>, Error> {
        let p = self.root.join("refs.json");
        if !p.exists() {
            return Ok(BTreeMap::new());
        }
        archive::read_json(&p)
    }

    fn write_refs(&self, refs: &BTreeMap<String, String>) -> Result<(), Error> {
        let p = self.root.join("refs.json");
        let tmp = self.tmp_path("refs");
        std::fs::write(&tmp, serde_json::to_vec_pretty(refs).expect("refs serialize"))
            .map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, &p).map_err(|e| Error::io(&p, e))
    }

    /// Stores bytes as a blob; returns its digest.
    fn put_bytes(&self, bytes: &[u8]) -> Result<String, Error> {
        let digest = format!("sha256:{}", sha256_hex(bytes));
        let p = self.blob(&digest)?;
        if !p.exists() {
            let tmp = self.tmp_path("blob");
            std::fs::write(&tmp, bytes).map_err(|e| Error::io(&tmp, e))?;
            std::fs::rename(&tmp, &p).map_err(|e| Error::io(&p, e))?;
        }
        Ok(digest)
    }

    /// Links (same filesystem) or copies a file in as a blob, checking it against the
    /// descriptor `want` (digest and size) when given. The source stays in place.
    fn put_file(&self, src: &Path, want: Option<&Descriptor>) -> Result<(String, u64, String), Error> {
        let (digest, size, diff_id) = file_digests(src)?;
        if let Some(w) = want {
            if w.digest != digest || w.size != size as i64 {
                return Err(Error::InvalidImage(format!(
                    "{}: content is {digest} ({size} bytes), the manifest says {} ({} bytes)",
                    src.display(),
                    w.digest,
                    w.size
                )));
            }
        }
        let p = self.blob(&digest)?;
        if !p.exists() {
            let tmp = self.tmp_path("blob");
            if std::fs::hard_link(src, &tmp).is_err() {
                std::fs::copy(src, &tmp).map_err(|e| Error::io(src, e))?;
            }
            std::fs::rename(&tmp, &p).map_err(|e| Error::io(&p, e))?;
        }
        Ok((digest, size, diff_id))
    }

    /// Packs directory `rootfs` as a single-layer image named `tag`.
    pub fn build_from_rootfs(&self, rootfs: &Path, tag: &str) -> Result<ImageInfo, Error> {
        let name = reference::normalize(tag)?;
        if !rootfs.is_dir() {
            return Err(Error::InvalidImage(format!(
                "--rootfs {}: not a directory",
                rootfs.display()
            )));
        }
        let _l = self.lock()?;
        let tmp = self.tmp_path("layer.tar");
        {
            let f = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
            let mut b = tar::Builder::new(f);
            // Deterministic: the same tree gives the same digest (owners 0, fixed times).
            b.mode(tar::HeaderMode::Deterministic);
            b.follow_symlinks(false);
            b.append_dir_all(".", rootfs).map_err(|e| Error::io(rootfs, e))?;
            b.into_inner()
                .and_then(|mut f| f.flush())
                .map_err(|e| Error::io(&tmp, e))?;
        }
        let layer = self.put_file(&tmp, None);
        let _ = std::fs::remove_file(&tmp);
        let (layer_digest, layer_size, diff_id) = layer?;
        let config = ImageConfigFile {
            architecture: archive::host_arch().into(),
            os: "linux".into(),
            config: RunConfig {
                env: Some(vec![
                    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
                ]),
                cmd: Some(vec!["sh".into()]),
                ..RunConfig::default()
            },
            rootfs: RootFs {
                kind: "layers".into(),
                diff_ids: vec![diff_id],
            },
        };
        let config_bytes = serde_json::to_vec(&config).expect("config serializes");
        let config_digest = self.put_bytes(&config_bytes)?;
        let manifest = Manifest {
            schema_version: 2,
            media_type: archive::MEDIA_MANIFEST.into(),
            config: Descriptor {
                media_type: archive::MEDIA_CONFIG.into(),
                digest: config_digest,
                size: config_bytes.len() as i64,
                annotations: BTreeMap::new(),
                platform: None,
            },
            layers: vec![Descriptor {
                media_type: archive::MEDIA_LAYER_TAR.into(),
                digest: layer_digest,
                size: layer_size as i64,
                annotations: BTreeMap::new(),
                platform: None,
            }],
        };
        let manifest_digest = self.put_bytes(&serde_json::to_vec(&manifest).expect("manifest serializes"))?;
        let mut refs = self.refs()?;
        refs.insert(name.clone(), manifest_digest);
        self.write_refs(&refs)?;
        drop(_l);
        self.info(&name)
    }

    /// Imports every image of an archive (OCI or docker-save, plain tar); `tag`, when given,
    /// names the archive's only image. Returns what was imported.
    pub fn import_archive(&self, file: &Path, tag: Option<&str>) -> Result<Vec<ImageInfo>, Error> {
        let dir = self.tmp_path("import");
        let r = self.import_unpacked(file, &dir, tag);
        let _ = std::fs::remove_dir_all(&dir);
        r
    }

    fn import_unpacked(&self, file: &Path, dir: &Path, tag: Option<&str>) -> Result<Vec<ImageInfo>, Error> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let f = File::open(file).map_err(|e| Error::io(file, e))?;
        let mut a = tar::Archive::new(f);
        a.set_preserve_ownerships(false);
        // `unpack` refuses entries that would land outside `dir`.
        a.unpack(dir).map_err(|e| Error::io(file, e))?;
        let images = archive::parse_unpacked(dir)?;
        if tag.is_some() && images.len() != 1 {
            return Err(Error::InvalidImage(format!(
                "--tag names one image, the archive holds {}",
                images.len()
            )));
        }
        let _l = self.lock()?;
        let mut refs = self.refs()?;
        let mut names = Vec::new();
        for img in images {
            let wanted: Vec<String> = match tag {
                Some(t) => vec![t.to_string()],
                None => img.names.clone(),
            };
            if wanted.is_empty() {
                return Err(Error::InvalidImage(
                    "an image in the archive has no name: give one with --tag".into(),
                ));
            }
            let manifest_digest = self.import_one(&img)?;
            for n in wanted {
                let n = reference::normalize(&n)?;
                refs.insert(n.clone(), manifest_digest.clone());
                names.push(n);
            }
        }
        self.write_refs(&refs)?;
        drop(_l);
        names.iter().map(|n| self.info(n)).collect()
    }

    /// Stores one archive image's blobs; returns its manifest digest (a manifest is written
    /// for docker-save images, which carry none).
    fn import_one(&self, img: &archive::ArchiveImage) -> Result<String, Error> {
        let config: ImageConfigFile = archive::read_json(&img.config_file)?;
        if config.rootfs.diff_ids.len() != img.layer_files.len() {
            return Err(Error::InvalidImage(format!(
                "config lists {} layers, the manifest {}",
                config.rootfs.diff_ids.len(),
                img.layer_files.len()
            )));
        }
        // With a manifest, every blob must be what it names (digest and size).
        let manifest: Option<Manifest> = img.manifest_file.as_deref().map(archive::read_json).transpose()?;
        if let Some(m) = manifest
            .as_ref()
            .filter(|m| m.layers.len() != img.layer_files.len())
        {
            return Err(Error::InvalidImage(format!(
                "the manifest lists {} layers, {} were given",
                m.layers.len(),
                img.layer_files.len()
            )));
        }
        let (config_digest, config_size, _) =
            self.put_file(&img.config_file, manifest.as_ref().map(|m| &m.config))?;
        let mut layers = Vec::new();
        for (i, (file, want_diff)) in img.layer_files.iter().zip(&config.rootfs.diff_ids).enumerate() {
            let (digest, size, diff_id) = self.put_file(file, manifest.as_ref().map(|m| &m.layers[i]))?;
            if &diff_id != want_diff {
                return Err(Error::InvalidImage(format!(
                    "layer {}: content {diff_id}, config says {want_diff}",
                    file.display()
                )));
            }
            let media = if diff_id == digest {
                archive::MEDIA_LAYER_TAR
            } else {
                archive::MEDIA_LAYER_GZIP
            };
            layers.push(Descriptor {
                media_type: media.into(),
                digest,
                size: size as i64,
                annotations: BTreeMap::new(),
                platform: None,
            });
        }
        if let Some(m) = &img.manifest_file {
            let (digest, _, _) = self.put_file(m, None)?;
            return Ok(digest);
        }
        let manifest = Manifest {
            schema_version: 2,
            media_type: archive::MEDIA_MANIFEST.into(),
            config: Descriptor {
                media_type: archive::MEDIA_CONFIG.into(),
                digest: config_digest,
                size: config_size as i64,
                annotations: BTreeMap::new(),
                platform: None,
            },
            layers,
        };
        self.put_bytes(&serde_json::to_vec(&manifest).expect("manifest serializes"))
    }

    /// Stores one image (a manifest, its config and layer files, as a registry pull brings
    /// them) under `name`, through the same checks as an archive import.
    pub fn import_image(&self, img: &archive::ArchiveImage, name: &str) -> Result<ImageInfo, Error> {
        let name = reference::normalize(name)?;
        let _l = self.lock()?;
        let manifest_digest = self.import_one(img)?;
        let mut refs = self.refs()?;
        refs.insert(name.clone(), manifest_digest);
        self.write_refs(&refs)?;
        drop(_l);
        self.info(&name)
    }

    /// The manifest digest `name` points at, if the store has that name.
    pub fn manifest_digest_of(&self, name: &str) -> Result<Option<String>, Error> {
        let name = reference::normalize(name)?;
        Ok(self.refs()?.get(&name).cloned())
    }

    /// The stored blob with this digest, if present (complete: blobs are renamed into place).
    pub fn blob_if_present(&self, digest: &str) -> Result<Option<PathBuf>, Error> {
        let p = self.blob(digest)?;
        Ok(p.exists().then_some(p))
    }

    /// A fresh scratch directory inside the store (same filesystem: blobs link in without a
    /// copy); the caller removes it.
    pub fn scratch_dir(&self, what: &str) -> Result<PathBuf, Error> {
        let d = self.tmp_path(what);
        std::fs::create_dir_all(&d).map_err(|e| Error::io(&d, e))?;
        Ok(d)
    }

    /// Writes image `name` as an OCI archive (an OCI image layout in a tar) to `out`.
    pub fn export_oci_archive(&self, name: &str, out: &Path) -> Result<(), Error> {
        let name = reference::normalize(name)?;
        let manifest_digest = self.manifest_digest(&name)?;
        let manifest = self.manifest(&manifest_digest)?;
        let f = File::create(out).map_err(|e| Error::io(out, e))?;
        let mut b = tar::Builder::new(f);
        let add_bytes = |b: &mut tar::Builder<File>, path: &str, bytes: &[u8]| -> Result<(), Error> {
            let mut h = tar::Header::new_gnu();
            h.set_size(bytes.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, path, bytes).map_err(|e| Error::io(out, e))
        };
        add_bytes(&mut b, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        let tag = name.rsplit_once(':').map_or("latest", |(_, t)| t);
        let index = archive::Index {
            schema_version: 2,
            media_type: archive::MEDIA_INDEX.into(),
            manifests: vec![Descriptor {
                media_type: archive::MEDIA_MANIFEST.into(),
                size: std::fs::metadata(self.blob(&manifest_digest)?).map_or(0, |m| m.len() as i64),
                digest: manifest_digest.clone(),
                annotations: BTreeMap::from([
                    (archive::ANNOTATION_IMAGE_NAME.to_string(), name.clone()),
                    (archive::ANNOTATION_REF_NAME.to_string(), tag.to_string()),
                ]),
                platform: None,
            }],
        };
        add_bytes(
            &mut b,
            "index.json",
            &serde_json::to_vec(&index).expect("index serializes"),
        )?;
        let digests = std::iter::once(manifest_digest)
            .chain(std::iter::once(manifest.config.digest.clone()))
            .chain(manifest.layers.iter().map(|l| l.digest.clone()));
        for d in digests {
            let p = self.blob(&d)?;
            let rel = format!("blobs/sha256/{}", d.trim_start_matches("sha256:"));
            b.append_path_with_name(&p, rel).map_err(|e| Error::io(&p, e))?;
        }
        b.into_inner()
            .and_then(|mut f| f.flush())
            .map_err(|e| Error::io(out, e))
    }

    fn manifest_digest(&self, name: &str) -> Result<String, Error> {
        self.refs()?
            .get(name)
            .cloned()
            .ok_or_else(|| Error::ImageNotFound(name.to_string()))
    }

    fn manifest(&self, digest: &str) -> Result<Manifest, Error> {
        archive::read_json(&self.blob(digest)?)
    }

    /// What the store holds under `name` (a normalized reference).
    pub fn info(&self, name: &str) -> Result<ImageInfo, Error> {
        let manifest_digest = self.manifest_digest(name)?;
        let m = self.manifest(&manifest_digest)?;
        Ok(ImageInfo {
            name: name.to_string(),
            manifest_digest,
            config_digest: m.config.digest.clone(),
            size_bytes: m.layers.iter().map(|l| l.size.max(0) as u64).sum(),
        })
    }

    /// The store's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Every named image.
    pub fn list(&self) -> Result<Vec<ImageInfo>, Error> {
        self.refs()?.keys().map(|n| self.info(n)).collect()
    }

    /// Removes a name, then every blob and unpacked layer no remaining name uses.
    pub fn remove(&self, name: &str) -> Result<(), Error> {
        let name = reference::normalize(name)?;
        let _l = self.lock()?;
        let mut refs = self.refs()?;
        if refs.remove(&name).is_none() {
            return Err(Error::ImageNotFound(name));
        }
        self.write_refs(&refs)?;
        self.collect_garbage(&refs)
    }

    fn collect_garbage(&self, refs: &BTreeMap<String, String>) -> Result<(), Error> {
        let mut blobs = BTreeSet::new();
        let mut layers = BTreeSet::new();
        for d in refs.values() {
            let m = self.manifest(d)?;
            let c: ImageConfigFile = archive::read_json(&self.blob(&m.config.digest)?)?;
            blobs.insert(d.trim_start_matches("sha256:").to_string());
            blobs.insert(m.config.digest.trim_start_matches("sha256:").to_string());
            for l in &m.layers {
                blobs.insert(l.digest.trim_start_matches("sha256:").to_string());
            }
            for l in &c.rootfs.diff_ids {
                layers.insert(l.trim_start_matches("sha256:").to_string());
            }
        }
        let sweep = |dir: PathBuf, keep: &BTreeSet<String>| -> Result<(), Error> {
            for e in std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))?.flatten() {
                let n = e.file_name().to_string_lossy().to_string();
                if !keep.contains(&n) {
                    let p = e.path();
                    let r = if p.is_dir() {
                        std::fs::remove_dir_all(&p)
                    } else {
                        std::fs::remove_file(&p)
                    };
                    r.map_err(|e| Error::io(&p, e))?;
                }
            }
            Ok(())
        };
        sweep(self.root.join("blobs/sha256"), &blobs)?;
        sweep(self.root.join("layers"), &layers)
    }

    /// The image `reference` names, its layers unpacked (once; later calls reuse them).
    pub fn resolve(&self, image: &str) -> Result<ResolvedImage, Error> {
        let name = reference::normalize(image)?;
        let manifest_digest = self.manifest_digest(&name)?;
        let m = self.manifest(&manifest_digest)?;
        let c: ImageConfigFile = archive::read_json(&self.blob(&m.config.digest)?)?;
        let mut layer_dirs = Vec::new();
        for (l, diff_id) in m.layers.iter().zip(&c.rootfs.diff_ids) {
            let dir = self.layer_dir(diff_id);
            if !dir.exists() {
                let _l = self.lock()?;
                if !dir.exists() {
                    self.unpack_layer(&self.blob(&l.digest)?, &dir)?;
                }
            }
            layer_dirs.push(dir);
        }
        Ok(ResolvedImage {
            name,
            config_digest: m.config.digest,
            layer_dirs,
            config: c.config,
        })
    }

    /// Unpacks a layer tar (gzip or plain) into `dest` through a temporary directory,
    /// turning OCI whiteouts into overlayfs's (a 0/0 character device; an opaque xattr).
    fn unpack_layer(&self, blob: &Path, dest: &Path) -> Result<(), Error> {
        let tmp = self.tmp_path("layer");
        std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let r =
            unpack_into(blob, &tmp).and_then(|_| std::fs::rename(&tmp, dest).map_err(|e| Error::io(dest, e)));
        if r.is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        r
    }
}

fn unpack_into(blob: &Path, dir: &Path) -> Result<(), Error> {
    let mut f = File::open(blob).map_err(|e| Error::io(blob, e))?;
    let mut magic = [0u8; 2];
    let gz = f.read(&mut magic).map_err(|e| Error::io(blob, e))? == 2 && magic == [0x1f, 0x8b];
    let f = File::open(blob).map_err(|e| Error::io(blob, e))?;
    let reader: Box<dyn Read> = if gz {
        Box::new(flate2::read::GzDecoder::new(f))
    } else {
        Box::new(f)
    };
    let mut a = tar::Archive::new(reader);
    a.set_preserve_ownerships(true);
    a.set_preserve_permissions(true);
    a.set_unpack_xattrs(true);
    a.set_overwrite(true);
    for entry in a.entries().map_err(|e| Error::io(blob, e))? {
        let mut entry = entry.map_err(|e| Error::io(blob, e))?;
        let path = entry.path().map_err(|e| Error::io(blob, e))?.into_owned();
        let file_name = path
            .file_name()
            .map(|n| n.as_bytes().to_vec())
            .unwrap_or_default();
        let parent = dir.join(path.parent().unwrap_or(Path::new("")));
        if file_name == b".wh..wh..opq" {
            std::fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
            set_xattr(&parent, "trusted.overlay.opaque", b"y")?;
        } else if let Some(hidden) = file_name.strip_prefix(b".wh.") {
            std::fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
            whiteout(&parent.join(std::ffi::OsStr::from_bytes(hidden)))?;
        } else {
            entry.unpack_in(dir).map_err(|e| Error::io(&path, e))?;
        }
    }
    Ok(())
}

fn cstr(p: &Path) -> std::ffi::CString {
    std::ffi::CString::new(p.as_os_str().as_bytes()).expect("path without NUL")
}

fn set_xattr(p: &Path, name: &str, value: &[u8]) -> Result<(), Error> {
    let n = std::ffi::CString::new(name).expect("xattr name");
    // SAFETY: valid NUL-terminated strings and a buffer with its length.
    let rc = unsafe {
        libc::lsetxattr(
            cstr(p).as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc != 0 {
        return Err(Error::io(p, std::io::Error::last_os_error()));
    }
    Ok(())
}

fn whiteout(p: &Path) -> Result<(), Error> {
    // SAFETY: a valid NUL-terminated path; device 0/0 is overlayfs's whiteout.
    let rc = unsafe { libc::mknod(cstr(p).as_ptr(), libc::S_IFCHR, 0) };
    if rc != 0 {
        return Err(Error::io(p, std::io::Error::last_os_error()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rootfs(dir: &Path) {
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        std::fs::write(dir.join("bin/hello"), "#!/bin/sh\necho hi\n").unwrap();
        std::os::unix::fs::symlink("hello", dir.join("bin/hi")).unwrap();
    }

    #[test]
    fn build_resolve_export_import_remove() {
        let d = tempfile::tempdir().unwrap();
        rootfs(&d.path().join("rootfs"));
        let s = ImageStore::open(&d.path().join("store")).unwrap();
        let info = s.build_from_rootfs(&d.path().join("rootfs"), "hello:1").unwrap();
        assert_eq!(info.name, "docker.io/library/hello:1");
        // Building the same tree again gives the same image.
        let again = s.build_from_rootfs(&d.path().join("rootfs"), "hello:2").unwrap();
        assert_eq!(again.config_digest, info.config_digest);
        let r = s.resolve("hello:1").unwrap();
        assert_eq!(r.layer_dirs.len(), 1);
        assert!(r.layer_dirs[0].join("bin/hello").is_file());
        assert!(r.layer_dirs[0].join("bin/hi").is_symlink());
        assert_eq!(r.config.cmd, Some(vec!["sh".to_string()]));

        let out = d.path().join("hello.tar");
        s.export_oci_archive("hello:1", &out).unwrap();
        let s2 = ImageStore::open(&d.path().join("store2")).unwrap();
        let imported = s2.import_archive(&out, None).unwrap();
        assert_eq!(imported, vec![s.info("docker.io/library/hello:1").unwrap()]);
        assert!(s2.resolve("docker.io/library/hello:1").unwrap().layer_dirs[0]
            .join("bin/hello")
            .is_file());

        s.remove("hello:1").unwrap();
        // hello:2 shares every blob: nothing is collected.
        assert!(s.resolve("hello:2").is_ok());
        s.remove("hello:2").unwrap();
        assert!(s.list().unwrap().is_empty());
        assert_eq!(
            std::fs::read_dir(d.path().join("store/blobs/sha256"))
                .unwrap()
                .count(),
            0
        );
        assert_eq!(
            std::fs::read_dir(d.path().join("store/layers")).unwrap().count(),
            0
        );
        assert!(matches!(s.remove("hello:2"), Err(Error::ImageNotFound(_))));
    }

    /// A docker-save archive with two gzip layers, the second deleting a file with a whiteout.
    #[test]
    fn imports_docker_save_with_gzip_layers_and_whiteouts() {
        let d = tempfile::tempdir().unwrap();
        let layer = |files: &[(&str, &[u8])]| -> (Vec<u8>, String) {
            let mut b = tar::Builder::new(Vec::new());
            for (p, body) in files {
                let mut h = tar::Header::new_gnu();
                h.set_size(body.len() as u64);
                h.set_mode(0o644);
                h.set_uid(0);
                h.set_gid(0);
                h.set_mtime(0);
                h.set_cksum();
                b.append_data(&mut h, p, *body).unwrap();
            }
            let raw = b.into_inner().unwrap();
            let diff = format!("sha256:{}", sha256_hex(&raw));
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(&raw).unwrap();
            (gz.finish().unwrap(), diff)
        };
        let (l1, d1) = layer(&[("etc/a", b"a"), ("etc/b", b"b")]);
        let (l2, d2) = layer(&[("etc/.wh.a", b"")]);
        let config = format!(
            r#"{{"rootfs":{{"type":"layers","diff_ids":["{d1}","{d2}"]}},"config":{{"Cmd":["x"]}}}}"#
        );
        let mut b = tar::Builder::new(Vec::new());
        for (p, body) in [
            (
                "manifest.json",
                br#"[{"Config":"c.json","RepoTags":["x/y:1"],"Layers":["1/layer.tar","2/layer.tar"]}]"#
                    .to_vec(),
            ),
            ("c.json", config.into_bytes()),
            ("1/layer.tar", l1),
            ("2/layer.tar", l2),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_size(body.len() as u64);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_cksum();
            b.append_data(&mut h, p, body.as_slice()).unwrap();
        }
        let archive = d.path().join("save.tar");
        std::fs::write(&archive, b.into_inner().unwrap()).unwrap();
        let s = ImageStore::open(&d.path().join("store")).unwrap();
        let infos = s.import_archive(&archive, None).unwrap();
        assert_eq!(infos[0].name, "docker.io/x/y:1");
        let r = s.resolve("x/y:1").unwrap();
        assert_eq!(r.layer_dirs.len(), 2);
        assert_eq!(std::fs::read(r.layer_dirs[0].join("etc/b")).unwrap(), b"b");
        use std::os::unix::fs::FileTypeExt;
        let wh = std::fs::symlink_metadata(r.layer_dirs[1].join("etc/a")).unwrap();
        assert!(wh.file_type().is_char_device(), "whiteout as a 0/0 char device");
        assert_eq!(r.config.cmd, Some(vec!["x".to_string()]));
    }
}
