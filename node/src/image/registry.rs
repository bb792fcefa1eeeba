//! Pulls from an OCI distribution registry into the node's [`ImageStore`].
//!
//! The anonymous flow of the distribution spec: `GET /v2/<name>/manifests/<ref>` accepting OCI
//! and Docker manifests and indexes (an index is resolved to this machine's linux platform),
//! then `GET /v2/<name>/blobs/<digest>` for the config and each layer not already stored. A
//! `401` with a `Bearer` challenge (Docker Hub's token service) is answered with an anonymous
//! token. Every document and blob is checked against the digest and size that named it, with
//! explicit size limits; what arrives is stored through the store's import path, so a pulled
//! image is checked and laid out exactly as an imported one.
//!
//! Transport: HTTPS with the system's roots plus an optional CA file. A registry listed as
//! insecure, or a loopback one (as Docker treats 127.0.0.0/8), may also be spoken to over plain
//! HTTP: HTTPS is tried first (still verified) and plain HTTP used when no TLS connection can be
//! made, as Docker does for insecure registries (Docker also skips verification; this does not).
//! Pulls run one at a time (the kubelet's default, serialized pulls).
//!
//! It does not know: pull policies and back-off (the pod worker's), credentials (only
//! anonymous pulls), environment proxies (none are used).

use super::archive::{self, ArchiveImage, Descriptor, Index, Manifest};
use super::reference::{self, Parts};
use super::store::{ImageInfo, ImageStore};
use crate::Error;
use sha2::{Digest, Sha256};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// Largest manifest or index accepted (the store reads no larger JSON document).
pub const MANIFEST_BYTES_MAX: u64 = archive::JSON_DOC_BYTES_MAX;
/// Largest image config accepted.
pub const CONFIG_BYTES_MAX: u64 = archive::JSON_DOC_BYTES_MAX;
/// Largest single layer accepted.
pub const LAYER_BYTES_MAX: u64 = 16 << 30;
/// Most layers an image may have (Docker stops at 127).
pub const LAYERS_MAX: usize = 256;
/// Index -> manifest hops followed.
pub const INDEX_DEPTH_MAX: usize = 2;
/// Largest token-service answer read.
pub const TOKEN_BYTES_MAX: u64 = 64 << 10;
/// Largest error body read (for the message).
pub const ERROR_BODY_BYTES_MAX: u64 = 4 << 10;
/// TCP (and TLS) connection set-up.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest silence while reading a response.
pub const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Where `docker.io` references are pulled from.
pub const DOCKER_HUB_REGISTRY: &str = "registry-1.docker.io";

/// What a manifest request accepts.
const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.docker.distribution.manifest.v2+json";

/// Layer media types the store can unpack.
const LAYER_TYPES: [&str; 4] = [
    archive::MEDIA_LAYER_TAR,
    archive::MEDIA_LAYER_GZIP,
    archive::DOCKER_LAYER_GZIP,
    archive::DOCKER_LAYER_TAR,
];

/// The agent's registry settings.
#[derive(Debug, Clone, Default)]
pub struct RegistrySettings {
    /// Registries (`host` or `host:port`, as in references) spoken to over plain HTTP.
    pub insecure_registries: Vec<String>,
    /// PEM certificates trusted for HTTPS registries, besides the system's roots.
    pub ca_file: Option<PathBuf>,
}

impl RegistrySettings {
    pub fn validate(&self) -> Result<(), Error> {
        for r in &self.insecure_registries {
            if r.is_empty() || r.contains(['/', ' ']) {
                return Err(Error::Config(format!(
                    "--insecure-registry {r:?}: expected host or host:port"
                )));
            }
        }
        Ok(())
    }
}

/// Whether registry `domain` (a reference's domain) may be spoken to over plain HTTP.
pub fn plain_http(domain: &str, insecure: &[String]) -> bool {
    if insecure.iter().any(|i| i == domain) {
        return true;
    }
    let host = match domain.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => domain.rsplit_once(':').map_or(domain, |(h, _)| h),
    };
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// `https://host/v2/<repository>` for a reference, and its `http://` form when the registry
/// may be spoken to over plain HTTP (the fallback).
pub fn repository_urls(p: &Parts, insecure: &[String]) -> (String, Option<String>) {
    let host = if p.domain == reference::DEFAULT_DOMAIN {
        DOCKER_HUB_REGISTRY
    } else {
        p.domain.as_str()
    };
    let path = format!("{host}/v2/{}", p.repository);
    let http = plain_http(&p.domain, insecure).then(|| format!("http://{path}"));
    (format!("https://{path}"), http)
}

/// Pulls images; one per agent, shared by the pod workers.
pub struct Puller {
    client: reqwest::Client,
    settings: RegistrySettings,
    serial: tokio::sync::Mutex<()>,
}

impl Puller {
    pub fn new(settings: RegistrySettings) -> Result<Puller, Error> {
        settings.validate()?;
        let mut b = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = &settings.ca_file {
            let pem = std::fs::read(ca).map_err(|e| Error::io(ca, e))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| Error::Config(format!("--registry-ca-file {}: {e}", ca.display())))?;
            if certs.is_empty() {
                return Err(Error::Config(format!(
                    "--registry-ca-file {}: no PEM certificate in it",
                    ca.display()
                )));
            }
            for c in certs {
                b = b.add_root_certificate(c);
            }
        }
        let client = b
            .build()
            .map_err(|e| Error::Config(format!("registry client: {}", chain(&e))))?;
        Ok(Puller {
            client,
            settings,
            serial: tokio::sync::Mutex::new(()),
        })
    }

    /// Pulls `image` into `store` (blobs it already holds are not fetched again); returns what
    /// the store then holds under the image's normalized name.
    pub async fn pull(&self, store: &Arc<ImageStore>, image: &str) -> Result<ImageInfo, Error> {
        let parts = reference::parts(image)?;
        let name = reference::normalize(image)?;
        let _one_at_a_time = self.serial.lock().await;
        let (base, fallback) = repository_urls(&parts, &self.settings.insecure_registries);
        let mut s = Session {
            client: &self.client,
            base,
            fallback,
            https_error: None,
            repository: parts.repository.clone(),
            auth: None,
        };
        let (bytes, digest) = s.resolve_manifest(&parts).await?;
        if store.manifest_digest_of(&name)?.as_deref() == Some(digest.as_str()) {
            return store.info(&name);
        }
        let manifest = parse_manifest(&bytes, &digest)?;
        let dir = store.scratch_dir("pull")?;
        let r = s.fetch(store, &dir, &bytes, &manifest, &name).await;
        let _ = tokio::fs::remove_dir_all(&dir).await;
        r
    }
}

/// A manifest's content checked for what the store can hold.
fn parse_manifest(bytes: &[u8], digest: &str) -> Result<Manifest, Error> {
    let m: Manifest = serde_json::from_slice(bytes)
        .map_err(|e| Error::Pull(format!("manifest {digest}: not an image manifest: {e}")))?;
    if m.layers.len() > LAYERS_MAX {
        return Err(Error::Pull(format!(
            "manifest {digest}: {} layers, at most {LAYERS_MAX} are accepted",
            m.layers.len()
        )));
    }
    let config_ok = [archive::MEDIA_CONFIG, archive::DOCKER_CONFIG].contains(&m.config.media_type.as_str());
    if !config_ok {
        return Err(Error::Pull(format!(
            "manifest {digest}: config type {:?} is not a container image",
            m.config.media_type
        )));
    }
    if let Some(l) = m
        .layers
        .iter()
        .find(|l| !LAYER_TYPES.contains(&l.media_type.as_str()))
    {
        return Err(Error::Pull(format!(
            "manifest {digest}: layer type {:?} is not supported (plain or gzip tar only)",
            l.media_type
        )));
    }
    Ok(m)
}

/// One pull's conversation with a registry (the bearer token, once obtained, is reused).
struct Session<'a> {
    client: &'a reqwest::Client,
    /// `scheme://host/v2/<repository>`.
    base: String,
    /// The plain-HTTP base to use when no TLS connection can be made (insecure registries).
    fallback: Option<String>,
    /// Why HTTPS was given up (told with later errors).
    https_error: Option<String>,
    repository: String,
    /// `Authorization` header value, once a token was needed.
    auth: Option<String>,
}

impl Session<'_> {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// An error about `url`, with why HTTPS was given up when it was.
    fn error(&self, url: &str, what: String) -> Error {
        match &self.https_error {
            Some(h) => Error::Pull(format!("GET {url}: {what} (after HTTPS failed: {h})")),
            None => Error::Pull(format!("GET {url}: {what}")),
        }
    }

    /// GET of `path` under the repository URL, with the token when one is held; a first `401`
    /// with a bearer challenge fetches one and retries; a failed connection moves to the plain
    /// HTTP fallback when there is one.
    async fn get(&mut self, path: &str, accept: Option<&str>) -> Result<reqwest::Response, Error> {
        loop {
            let url = self.url(path);
            let mut req = self.client.get(&url);
            if let Some(a) = accept {
                req = req.header(reqwest::header::ACCEPT, a);
            }
            if let Some(t) = &self.auth {
                req = req.header(reqwest::header::AUTHORIZATION, t);
            }
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) if e.is_connect() && self.fallback.is_some() => {
                    tracing::debug!(url = %url, "no TLS connection, trying plain HTTP: {}", chain(&e));
                    self.https_error = Some(chain(&e));
                    self.base = self.fallback.take().expect("checked");
                    continue;
                }
                Err(e) => return Err(self.error(&url, chain(&e))),
            };
            if resp.status() == reqwest::StatusCode::UNAUTHORIZED && self.auth.is_none() {
                let challenge = resp
                    .headers()
                    .get(reqwest::header::WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                self.auth = Some(self.token(&url, &challenge).await?);
                continue;
            }
            if !resp.status().is_success() {
                // A 400 over plain HTTP is what a TLS-only server answers: say why HTTPS failed.
                let bad_request = resp.status() == reqwest::StatusCode::BAD_REQUEST;
                let e = status_error(&url, resp).await;
                return Err(match &self.https_error {
                    Some(h) if bad_request => Error::Pull(format!("{e} (after HTTPS failed: {h})")),
                    _ => e,
                });
            }
            return Ok(resp);
        }
    }

    /// An anonymous bearer token from the realm a challenge names.
    async fn token(&self, url: &str, challenge: &str) -> Result<String, Error> {
        let (scheme, params) = parse_challenge(challenge);
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(Error::Pull(format!(
                "GET {url}: 401 Unauthorized: the registry asks for {scheme:?} authentication \
                 (only anonymous pulls are supported)"
            )));
        }
        let get = |k: &str| params.iter().find(|(pk, _)| pk == k).map(|(_, v)| v.clone());
        let realm = get("realm").unwrap_or_default();
        let mut token_url = reqwest::Url::parse(&realm)
            .ok()
            .filter(|u| u.scheme() == "https" || u.scheme() == "http")
            .ok_or_else(|| Error::Pull(format!("GET {url}: token realm {realm:?} is not an http(s) URL")))?;
        {
            let mut q = token_url.query_pairs_mut();
            if let Some(s) = get("service") {
                q.append_pair("service", &s);
            }
            let scope = get("scope").unwrap_or_else(|| format!("repository:{}:pull", self.repository));
            q.append_pair("scope", &scope);
        }
        let mut resp = self
            .client
            .get(token_url.clone())
            .send()
            .await
            .map_err(|e| Error::Pull(format!("token from {realm}: {}", chain(&e))))?;
        if !resp.status().is_success() {
            return Err(status_error(&realm, resp).await);
        }
        let body = read_limited(&mut resp, TOKEN_BYTES_MAX, &realm).await?;
        #[derive(serde::Deserialize)]
        struct Token {
            #[serde(default)]
            token: String,
            #[serde(default)]
            access_token: String,
        }
        let t: Token = serde_json::from_slice(&body)
            .map_err(|e| Error::Pull(format!("token from {realm}: not a token answer: {e}")))?;
        let t = if t.token.is_empty() {
            t.access_token
        } else {
            t.token
        };
        if t.is_empty() {
            return Err(Error::Pull(format!("token from {realm}: empty token")));
        }
        Ok(format!("Bearer {t}"))
    }

    /// The image manifest for `p` (through an index to this machine's platform): its bytes
    /// and their digest, checked against the digest that named it.
    async fn resolve_manifest(&mut self, p: &Parts) -> Result<(Vec<u8>, String), Error> {
        let mut reference = p.manifest_ref().to_string();
        let mut want = p.digest.clone();
        for _ in 0..=INDEX_DEPTH_MAX {
            let path = format!("/manifests/{reference}");
            let mut resp = self.get(&path, Some(ACCEPT_MANIFESTS)).await?;
            let url = self.url(&path);
            let announced = header(&resp, "docker-content-digest");
            let content_type = header(&resp, "content-type").unwrap_or_default();
            let bytes = read_limited(&mut resp, MANIFEST_BYTES_MAX, &url).await?;
            let digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
            // A digest we asked for must match; one the registry announces must too (when it
            // is sha256: the only algorithm computed here).
            let expected = want.clone().or(announced.filter(|d| d.starts_with("sha256:")));
            if let Some(w) = expected.filter(|w| *w != digest) {
                return Err(Error::Pull(format!(
                    "GET {url}: content is {digest}, expected {w}: refused"
                )));
            }
            #[derive(serde::Deserialize)]
            struct Kind {
                #[serde(rename = "mediaType", default)]
                media_type: String,
            }
            let kind: Kind = serde_json::from_slice(&bytes)
                .map_err(|e| Error::Pull(format!("GET {url}: not a JSON manifest: {e}")))?;
            let media = if kind.media_type.is_empty() {
                content_type
                    .split(';')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_string()
            } else {
                kind.media_type
            };
            if !archive::is_index(&media) {
                if media != archive::MEDIA_MANIFEST && media != archive::DOCKER_MANIFEST {
                    return Err(Error::Pull(format!(
                        "GET {url}: manifest type {media:?} is not supported"
                    )));
                }
                return Ok((bytes, digest));
            }
            let idx: Index = serde_json::from_slice(&bytes)
                .map_err(|e| Error::Pull(format!("GET {url}: not an index: {e}")))?;
            let d = archive::platform_manifest(&idx).map_err(|e| Error::Pull(format!("GET {url}: {e}")))?;
            if d.size < 0 || d.size as u64 > MANIFEST_BYTES_MAX {
                return Err(Error::Pull(format!(
                    "GET {url}: the platform manifest is {} bytes, over {MANIFEST_BYTES_MAX}",
                    d.size
                )));
            }
            archive::blob_path(Path::new(""), &d.digest).map_err(|e| Error::Pull(e.to_string()))?;
            reference = d.digest.clone();
            want = Some(d.digest.clone());
        }
        Err(Error::Pull(format!(
            "{}: indexes nested deeper than {INDEX_DEPTH_MAX}",
            self.base
        )))
    }

    /// Downloads what the store lacks into `dir`, then stores the image as `name`.
    async fn fetch(
        &mut self,
        store: &Arc<ImageStore>,
        dir: &Path,
        manifest_bytes: &[u8],
        m: &Manifest,
        name: &str,
    ) -> Result<ImageInfo, Error> {
        let manifest_file = dir.join("manifest.json");
        tokio::fs::write(&manifest_file, manifest_bytes)
            .await
            .map_err(|e| Error::io(&manifest_file, e))?;
        let config_file = self.blob(store, dir, &m.config, CONFIG_BYTES_MAX).await?;
        let mut layer_files = Vec::with_capacity(m.layers.len());
        for l in &m.layers {
            layer_files.push(self.blob(store, dir, l, LAYER_BYTES_MAX).await?);
        }
        let img = ArchiveImage {
            names: vec![name.to_string()],
            manifest_file: Some(manifest_file),
            config_file,
            layer_files,
        };
        let (store, name) = (store.clone(), name.to_string());
        tokio::task::spawn_blocking(move || store.import_image(&img, &name))
            .await
            .map_err(|e| Error::Pull(format!("storing the image: {e}")))?
    }

    /// The stored blob when the store has it, else a download checked for size and digest.
    async fn blob(
        &mut self,
        store: &ImageStore,
        dir: &Path,
        d: &Descriptor,
        bytes_max: u64,
    ) -> Result<PathBuf, Error> {
        if let Some(p) = store.blob_if_present(&d.digest)? {
            return Ok(p);
        }
        if d.size < 0 || d.size as u64 > bytes_max {
            return Err(Error::Pull(format!(
                "blob {} is {} bytes, the limit is {bytes_max}",
                d.digest, d.size
            )));
        }
        let path = archive::blob_path(dir, &d.digest)?;
        let parent = path.parent().expect("blob paths have a parent");
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|e| Error::io(parent, e))?;
        let rel = format!("/blobs/{}", d.digest);
        let mut resp = self.get(&rel, None).await?;
        let url = self.url(&rel);
        let mut f = tokio::fs::File::create(&path)
            .await
            .map_err(|e| Error::io(&path, e))?;
        let (mut h, mut n) = (Sha256::new(), 0u64);
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| Error::Pull(format!("GET {url}: {}", chain(&e))))?
        {
            n += chunk.len() as u64;
            if n > d.size as u64 {
                return Err(Error::Pull(format!(
                    "GET {url}: more than the {} bytes the manifest names: refused",
                    d.size
                )));
            }
            h.update(&chunk);
            f.write_all(&chunk).await.map_err(|e| Error::io(&path, e))?;
        }
        f.flush().await.map_err(|e| Error::io(&path, e))?;
        if n != d.size as u64 {
            return Err(Error::Pull(format!(
                "GET {url}: {n} bytes, the manifest names {}: refused",
                d.size
            )));
        }
        let got = format!("sha256:{}", hex::encode(h.finalize()));
        if got != d.digest {
            return Err(Error::Pull(format!(
                "GET {url}: content is {got}, expected {}: refused",
                d.digest
            )));
        }
        Ok(path)
    }
}

fn header(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// A body, refused when longer than `bytes_max`.
async fn read_limited(resp: &mut reqwest::Response, bytes_max: u64, url: &str) -> Result<Vec<u8>, Error> {
    if resp.content_length().is_some_and(|n| n > bytes_max) {
        return Err(Error::Pull(format!(
            "GET {url}: body over {bytes_max} bytes: refused"
        )));
    }
    let mut out = Vec::new();
    while let Some(c) = resp
        .chunk()
        .await
        .map_err(|e| Error::Pull(format!("GET {url}: {}", chain(&e))))?
    {
        if (out.len() + c.len()) as u64 > bytes_max {
            return Err(Error::Pull(format!(
                "GET {url}: body over {bytes_max} bytes: refused"
            )));
        }
        out.extend_from_slice(&c);
    }
    Ok(out)
}

/// An unsuccessful answer as a message: status, and the registry's error codes when given.
async fn status_error(url: &str, mut resp: reqwest::Response) -> Error {
    let status = resp.status();
    let body = read_limited(&mut resp, ERROR_BODY_BYTES_MAX, url)
        .await
        .unwrap_or_default();
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<ErrorEntry>,
    }
    #[derive(serde::Deserialize)]
    struct ErrorEntry {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    let details = serde_json::from_slice::<Errors>(&body)
        .map(|e| {
            e.errors
                .iter()
                .map(|x| format!("{}: {}", x.code, x.message))
                .collect::<Vec<_>>()
                .join("; ")
        })
        .unwrap_or_default();
    let what = match status.as_u16() {
        404 => "not found",
        401 | 403 => "access denied (only anonymous pulls are supported)",
        _ => "",
    };
    let mut msg = format!("GET {url}: {status}");
    for part in [what, details.as_str()].into_iter().filter(|p| !p.is_empty()) {
        msg.push_str(": ");
        msg.push_str(part);
    }
    Error::Pull(msg)
}

/// An error with its causes (reqwest's own message hides the useful one, e.g. "connection
/// refused").
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

/// `Bearer realm="...",service="...",scope="..."` -> ("Bearer", [(realm, ...), ...]); quoted
/// values may hold commas.
pub fn parse_challenge(h: &str) -> (String, Vec<(String, String)>) {
    let h = h.trim();
    let (scheme, rest) = h.split_once(' ').unwrap_or((h, ""));
    let mut params = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| *c != ',') {
                value.push(c);
            }
        }
        params.push((key.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    (scheme.to_string(), params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_listed_registries_use_plain_http() {
        let insecure = vec!["reg.lab:5000".to_string()];
        for (d, want) in [
            ("127.0.0.1:5000", true),
            ("127.9.0.1", true),
            ("localhost:5000", true),
            ("[::1]:5000", true),
            ("reg.lab:5000", true),
            ("reg.lab:5001", false),
            ("reg.lab", false),
            ("docker.io", false),
            ("10.0.0.1:5000", false),
        ] {
            assert_eq!(plain_http(d, &insecure), want, "{d}");
        }
        let p = reference::parts("busybox:1.36").unwrap();
        assert_eq!(
            repository_urls(&p, &[]),
            ("https://registry-1.docker.io/v2/library/busybox".into(), None)
        );
        let p = reference::parts("127.0.0.1:5000/x/y:1").unwrap();
        assert_eq!(
            repository_urls(&p, &[]),
            (
                "https://127.0.0.1:5000/v2/x/y".into(),
                Some("http://127.0.0.1:5000/v2/x/y".into())
            )
        );
    }

    #[test]
    fn bearer_challenges_parse() {
        let (s, p) = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull,push""#,
        );
        assert_eq!(s, "Bearer");
        assert_eq!(
            p,
            vec![
                ("realm".into(), "https://auth.docker.io/token".into()),
                ("service".into(), "registry.docker.io".into()),
                ("scope".into(), "repository:library/busybox:pull,push".into()),
            ]
        );
        let (s, p) = parse_challenge(r#"Basic realm="Registry Realm""#);
        assert_eq!((s.as_str(), p[0].1.as_str()), ("Basic", "Registry Realm"));
        let (_, p) = parse_challenge("Bearer realm=http://a/t, service=x");
        assert_eq!(p[1], ("service".into(), "x".into()));
    }

    #[test]
    fn manifests_are_checked_for_what_the_store_holds() {
        let d = |m: &str| {
            format!(
                r#"{{"mediaType":"{m}","digest":"sha256:{}","size":1}}"#,
                "a".repeat(64)
            )
        };
        let doc = |config: &str, layer: &str| {
            format!(
                r#"{{"schemaVersion":2,"config":{},"layers":[{}]}}"#,
                d(config),
                d(layer)
            )
        };
        let ok = doc(archive::DOCKER_CONFIG, archive::DOCKER_LAYER_GZIP);
        assert!(parse_manifest(ok.as_bytes(), "m").is_ok());
        let zstd = doc(
            archive::MEDIA_CONFIG,
            "application/vnd.oci.image.layer.v1.tar+zstd",
        );
        let e = parse_manifest(zstd.as_bytes(), "m").unwrap_err().to_string();
        assert!(e.contains("zstd"), "{e}");
        let helm = doc(
            "application/vnd.cncf.helm.config.v1+json",
            archive::MEDIA_LAYER_TAR,
        );
        assert!(parse_manifest(helm.as_bytes(), "m").is_err());
    }
}
