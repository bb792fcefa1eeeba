//! Image archive formats and OCI JSON documents: parsing an unpacked OCI image layout or
//! `docker save` archive into a list of images (manifest, config and layer files), and the OCI
//! documents Berth writes. Pure: file reads only, no store.

use crate::Error;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MEDIA_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const MEDIA_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// Docker's (schema 2) media types, which registries still serve for many images.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
/// Annotation holding the full reference (containerd's and Berth's archives).
pub const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";
/// OCI's annotation: a tag, or (in older tools) a full reference.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Largest JSON document (index, manifest, config) read from an archive.
pub const JSON_DOC_BYTES_MAX: u64 = 4 << 20;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: String,
    pub size: i64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Index {
    #[serde(rename = "schemaVersion")]
    pub schema_version: i32,
    #[serde(rename = "mediaType", default, skip_serializing_if = "String::is_empty")]
    pub media_type: String,
    pub manifests: Vec<Descriptor>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    #[serde(rename = "schemaVersion")]
    pub schema_version: i32,
    #[serde(rename = "mediaType", default, skip_serializing_if = "String::is_empty")]
    pub media_type: String,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

/// The parts of an OCI image config the agent uses (unknown fields are kept out, not rejected).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ImageConfigFile {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub config: RunConfig,
    pub rootfs: RootFs,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RunConfig {
    #[serde(rename = "Env", default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    #[serde(rename = "Entrypoint", default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(rename = "WorkingDir", default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub kind: String,
    pub diff_ids: Vec<String>,
}

/// One image found in an archive: its names and where its pieces lie in the unpacked archive.
#[derive(Debug, Clone)]
pub struct ArchiveImage {
    /// References as written in the archive (not yet normalized).
    pub names: Vec<String>,
    /// The manifest document, when the archive has one (OCI); docker-save archives have none.
    pub manifest_file: Option<PathBuf>,
    pub config_file: PathBuf,
    /// Layer files, bottom first.
    pub layer_files: Vec<PathBuf>,
}

/// `docker save`'s manifest.json entry.
#[derive(Debug, Deserialize)]
struct DockerSaveEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, Error> {
    let len = std::fs::metadata(path).map_err(|e| Error::io(path, e))?.len();
    if len > JSON_DOC_BYTES_MAX {
        return Err(Error::InvalidImage(format!(
            "{}: {len} bytes is too large",
            path.display()
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::InvalidImage(format!("{}: {e}", path.display())))
}

/// Path of a blob in an OCI layout rooted at `dir` (digest checked for shape: no path escapes).
pub fn blob_path(dir: &Path, digest: &str) -> Result<PathBuf, Error> {
    let (algo, hex) = digest
        .split_once(':')
        .ok_or_else(|| Error::InvalidImage(format!("digest {digest:?} has no algorithm")))?;
    if algo != "sha256" || hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(Error::InvalidImage(format!(
            "digest {digest:?} is not sha256:<64 hex>"
        )));
    }
    Ok(dir.join("blobs").join(algo).join(hex))
}

/// Archive-relative path that stays inside `dir`.
fn inside(dir: &Path, rel: &str) -> Result<PathBuf, Error> {
    let p = Path::new(rel);
    if p.is_absolute()
        || p.components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(Error::InvalidImage(format!("path {rel:?} leaves the archive")));
    }
    Ok(dir.join(p))
}

/// Images in an unpacked archive: an OCI image layout (`index.json`) or `docker save`
/// output (`manifest.json`).
pub fn parse_unpacked(dir: &Path) -> Result<Vec<ArchiveImage>, Error> {
    if dir.join("index.json").exists() {
        parse_oci_layout(dir)
    } else if dir.join("manifest.json").exists() {
        parse_docker_save(dir)
    } else {
        Err(Error::InvalidImage(
            "neither an OCI archive (index.json) nor a docker-save archive (manifest.json)".into(),
        ))
    }
}

fn parse_oci_layout(dir: &Path) -> Result<Vec<ArchiveImage>, Error> {
    let index: Index = read_json(&dir.join("index.json"))?;
    let mut out = Vec::new();
    for d in &index.manifests {
        let names = descriptor_names(d);
        let manifest_desc = pick_manifest(dir, d)?;
        let manifest_file = blob_path(dir, &manifest_desc.digest)?;
        let m: Manifest = read_json(&manifest_file)?;
        out.push(ArchiveImage {
            names,
            manifest_file: Some(manifest_file),
            config_file: blob_path(dir, &m.config.digest)?,
            layer_files: m
                .layers
                .iter()
                .map(|l| blob_path(dir, &l.digest))
                .collect::<Result<_, _>>()?,
        });
    }
    Ok(out)
}

/// Names an index entry carries: containerd's full-name annotation, else the OCI ref name when
/// it is a whole reference (a bare tag names no repository and is ignored).
fn descriptor_names(d: &Descriptor) -> Vec<String> {
    if let Some(n) = d.annotations.get(ANNOTATION_IMAGE_NAME) {
        return vec![n.clone()];
    }
    match d.annotations.get(ANNOTATION_REF_NAME) {
        Some(n) if n.contains('/') || n.contains(':') => vec![n.clone()],
        _ => Vec::new(),
    }
}

/// Follows nested indexes (multi-platform images) to the manifest for this machine.
fn pick_manifest(dir: &Path, d: &Descriptor) -> Result<Descriptor, Error> {
    let mut d = d.clone();
    for _ in 0..4 {
        if !is_index(&d.media_type) {
            return Ok(d);
        }
        let idx: Index = read_json(&blob_path(dir, &d.digest)?)?;
        d = platform_manifest(&idx)?.clone();
    }
    Err(Error::InvalidImage("indexes nested too deep".into()))
}

/// Whether a descriptor's media type is an index (OCI) or manifest list (Docker).
pub fn is_index(media_type: &str) -> bool {
    media_type == MEDIA_INDEX || media_type == DOCKER_MANIFEST_LIST
}

/// The entry of a multi-platform index for this machine (linux and its architecture).
pub fn platform_manifest(idx: &Index) -> Result<&Descriptor, Error> {
    let arch = host_arch();
    idx.manifests
        .iter()
        .find(|m| {
            m.platform
                .as_ref()
                .is_some_and(|p| p.os == "linux" && p.architecture == arch)
        })
        .ok_or_else(|| Error::InvalidImage(format!("no linux/{arch} image in the index")))
}

/// This machine's architecture in OCI's spelling.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn parse_docker_save(dir: &Path) -> Result<Vec<ArchiveImage>, Error> {
    let entries: Vec<DockerSaveEntry> = read_json(&dir.join("manifest.json"))?;
    entries
        .into_iter()
        .map(|e| {
            Ok(ArchiveImage {
                names: e.repo_tags.unwrap_or_default(),
                manifest_file: None,
                config_file: inside(dir, &e.config)?,
                layer_files: e
                    .layers
                    .iter()
                    .map(|l| inside(dir, l))
                    .collect::<Result<_, _>>()?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, rel: &str, body: &str) {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
    }

    fn digest(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    #[test]
    fn parses_a_docker_save_archive() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            "manifest.json",
            r#"[{"Config":"abc.json","RepoTags":["busybox:1.36"],"Layers":["l1/layer.tar","l2/layer.tar"]}]"#,
        );
        let imgs = parse_unpacked(d.path()).unwrap();
        assert_eq!(imgs.len(), 1);
        assert_eq!(imgs[0].names, vec!["busybox:1.36"]);
        assert_eq!(imgs[0].config_file, d.path().join("abc.json"));
        assert_eq!(imgs[0].layer_files[1], d.path().join("l2/layer.tar"));
        assert!(imgs[0].manifest_file.is_none());
    }

    #[test]
    fn rejects_paths_leaving_the_archive() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            "manifest.json",
            r#"[{"Config":"../x.json","Layers":[]}]"#,
        );
        assert!(parse_unpacked(d.path()).is_err());
    }

    #[test]
    fn parses_an_oci_layout_with_a_platform_index() {
        let d = tempfile::tempdir().unwrap();
        let (idx, man, cfg, layer) = (digest('a'), digest('b'), digest('c'), digest('d'));
        let hex = |s: &str| s.trim_start_matches("sha256:").to_string();
        write(
            d.path(),
            "index.json",
            &format!(
                r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{MEDIA_INDEX}","digest":"{idx}","size":1,
                "annotations":{{"{ANNOTATION_REF_NAME}":"docker.io/library/busybox:1.36"}}}}]}}"#
            ),
        );
        write(
            d.path(),
            &format!("blobs/sha256/{}", hex(&idx)),
            &format!(
                r#"{{"schemaVersion":2,"manifests":[
                {{"mediaType":"{MEDIA_MANIFEST}","digest":"{}","size":1,"platform":{{"architecture":"s390x","os":"linux"}}}},
                {{"mediaType":"{MEDIA_MANIFEST}","digest":"{man}","size":1,"platform":{{"architecture":"{}","os":"linux"}}}}]}}"#,
                digest('e'),
                host_arch()
            ),
        );
        write(
            d.path(),
            &format!("blobs/sha256/{}", hex(&man)),
            &format!(
                r#"{{"schemaVersion":2,"config":{{"mediaType":"{MEDIA_CONFIG}","digest":"{cfg}","size":1}},
                "layers":[{{"mediaType":"{MEDIA_LAYER_GZIP}","digest":"{layer}","size":1}}]}}"#
            ),
        );
        let imgs = parse_unpacked(d.path()).unwrap();
        assert_eq!(imgs.len(), 1);
        assert_eq!(imgs[0].names, vec!["docker.io/library/busybox:1.36"]);
        assert_eq!(imgs[0].config_file, d.path().join("blobs/sha256").join(hex(&cfg)));
        assert_eq!(
            imgs[0].layer_files,
            vec![d.path().join("blobs/sha256").join(hex(&layer))]
        );
    }

    #[test]
    fn a_bare_tag_is_no_name_and_bad_digests_are_refused() {
        let mut d = Descriptor {
            media_type: MEDIA_MANIFEST.into(),
            digest: digest('a'),
            size: 1,
            annotations: BTreeMap::from([(ANNOTATION_REF_NAME.to_string(), "1.36".to_string())]),
            platform: None,
        };
        assert!(descriptor_names(&d).is_empty());
        d.annotations
            .insert(ANNOTATION_IMAGE_NAME.into(), "busybox:1.36".into());
        assert_eq!(descriptor_names(&d), vec!["busybox:1.36"]);
        assert!(blob_path(Path::new("/x"), "sha256:../../etc").is_err());
        assert!(blob_path(Path::new("/x"), "md5:aa").is_err());
    }
}
