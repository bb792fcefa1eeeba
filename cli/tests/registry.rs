//! Registry pulls end to end: Debian's `docker-registry` on a loopback port (its own config
//! file, storage in a temp dir, stopped by PID), an image pushed to it by a small push helper
//! written here (monolithic blob uploads, then the manifest), a real `berth server` and
//! `berth agent` whose store starts empty, pods created through the API.
//! Names on the machine carry the prefix `br-`; everything is removed when the test ends.

mod common;

use berth_node::image::archive;
use berth_proto::apiv1;
use berth_proto::corev1::{Node, Pod};
use common::agent_env::{AgentEnv as Env, AgentOpts};
use common::{berth_bin, eventually, free_port};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// Debian's docker-registry, listening on 127.0.0.1 only.
struct Registry {
    child: Child,
    addr: String,
    storage: PathBuf,
    /// `http` or `https`.
    scheme: &'static str,
    /// A client trusting the registry's certificate when it has one.
    http: reqwest::Client,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Registry {
    /// Plain HTTP, or HTTPS with `tls` = (certificate, key, the CA that signed it) PEM files.
    async fn start(dir: &Path, tls: Option<(&Path, &Path, &Path)>) -> Registry {
        assert!(
            Path::new(REGISTRY_BIN).is_file(),
            "{REGISTRY_BIN} missing: install Debian's docker-registry (scripts/deps.sh)"
        );
        let addr = format!("127.0.0.1:{}", free_port());
        let storage = dir.join("registry-storage");
        std::fs::create_dir_all(&storage).unwrap();
        let config = dir.join("registry.yml");
        let mut yml = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
             http:\n  addr: {addr}\n",
            storage.display()
        );
        let mut http = reqwest::Client::builder();
        if let Some((cert, key, ca)) = tls {
            yml.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            ));
            let pem = std::fs::read(ca).unwrap();
            http = http.add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap());
        }
        std::fs::write(&config, yml).unwrap();
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("registry.log")).unwrap())
            .spawn()
            .unwrap();
        let r = Registry {
            child,
            addr,
            storage,
            scheme: if tls.is_some() { "https" } else { "http" },
            http: http.build().unwrap(),
        };
        let url = format!("{}://{}/v2/", r.scheme, r.addr);
        eventually("registry answers /v2/", || {
            let (url, http) = (url.clone(), r.http.clone());
            async move {
                http.get(&url)
                    .send()
                    .await
                    .ok()?
                    .status()
                    .is_success()
                    .then_some(())
            }
        })
        .await;
        r
    }

    /// Flips the bytes of a stored blob, keeping its size: the registry then serves content
    /// that does not match its digest.
    fn corrupt_blob(&self, digest: &str) {
        let hex = digest.trim_start_matches("sha256:");
        let p = self
            .storage
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data");
        let mut b = std::fs::read(&p).unwrap();
        for x in b.iter_mut().take(64) {
            *x ^= 0xff;
        }
        std::fs::write(&p, b).unwrap();
    }
}

/// The push side: every blob of an OCI archive uploaded monolithically (POST an upload, PUT
/// it with `?digest=`), then the manifest under `tag`. Returns the manifest.
async fn push(archive_file: &Path, registry: &Registry, repo: &str, tag: &str) -> archive::Manifest {
    let dir = archive_file.with_extension("unpacked");
    tar::Archive::new(std::fs::File::open(archive_file).unwrap())
        .unpack(&dir)
        .unwrap();
    let index: archive::Index = archive::read_json(&dir.join("index.json")).unwrap();
    let manifest_file = archive::blob_path(&dir, &index.manifests[0].digest).unwrap();
    let manifest_bytes = std::fs::read(&manifest_file).unwrap();
    let manifest: archive::Manifest = serde_json::from_slice(&manifest_bytes).unwrap();
    let (http, origin) = (&registry.http, format!("{}://{}", registry.scheme, registry.addr));
    let base = format!("{origin}/v2/{repo}");
    for d in std::iter::once(&manifest.config).chain(&manifest.layers) {
        let body = std::fs::read(archive::blob_path(&dir, &d.digest).unwrap()).unwrap();
        let r = http.post(format!("{base}/blobs/uploads/")).send().await.unwrap();
        assert_eq!(r.status(), 202, "start upload");
        let loc = r.headers()["location"].to_str().unwrap().to_string();
        let loc = if loc.starts_with('/') {
            format!("{origin}{loc}")
        } else {
            loc
        };
        let sep = if loc.contains('?') { '&' } else { '?' };
        let r = http
            .put(format!("{loc}{sep}digest={}", d.digest))
            .header("content-type", "application/octet-stream")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "upload {}", d.digest);
    }
    let r = http
        .put(format!("{base}/manifests/{tag}"))
        .header("content-type", archive::MEDIA_MANIFEST)
        .body(manifest_bytes)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        201,
        "put manifest: {}",
        r.text().await.unwrap_or_default()
    );
    manifest
}

/// `berth image build --output` of a busybox root filesystem (with `extra` as one more file,
/// so images can differ).
fn build_archive(dir: &Path, name: &str, extra: &str) -> PathBuf {
    let rootfs = dir.join(format!("{name}-rootfs"));
    berth_node::image::busybox::rootfs(&rootfs, Path::new(berth_node::image::busybox::BUSYBOX_BIN))
        .expect("busybox rootfs");
    std::fs::write(rootfs.join("etc/which"), extra).unwrap();
    let out = dir.join(format!("{name}.tar"));
    let o = Command::new(berth_bin())
        .args(["image", "build", "--tag", &format!("{name}:1"), "--rootfs"])
        .arg(&rootfs)
        .arg("--output")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    out
}

impl Env {
    /// A server and an agent whose image store starts empty.
    async fn start(agent_args: &[&str]) -> Env {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tag = format!("br-reg-{}-{n}", std::process::id());
        let opts = AgentOpts::new(None, Some("none"), agent_args);
        let mut env = Env::prepare(&[], &tag, &tag, opts).await;
        env.agent.start();
        let (c, n) = (env.client.clone(), env.node.clone());
        eventually("node registered", || {
            let (c, n) = (c.clone(), n.clone());
            async move { c.get::<Node>("", &n).await.ok().map(|_| ()) }
        })
        .await;
        env
    }

    async fn create_sleeper(&self, name: &str, image: &str, policy: Option<&str>) {
        let mut c = json!({"name": "main", "image": image, "command": ["sleep", "1000"]});
        if let Some(p) = policy {
            c["imagePullPolicy"] = json!(p);
        }
        let pod: Pod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"nodeName": self.node, "terminationGracePeriodSeconds": 1, "containers": [c]}
        }))
        .unwrap();
        self.client.create("default", &pod).await.unwrap();
    }

    /// Waits until the pod's container is running, or waiting with `reason`; returns the
    /// pod.
    async fn wait_container(&self, name: &str, what: &str, f: impl Fn(&ContainerNow) -> bool) -> Pod {
        self.wait_pod(name, what, |p| f(&container_now(p))).await
    }

    async fn delete_pods(&self, names: &[&str]) {
        for n in names {
            let _ = self
                .client
                .delete::<Pod>("default", n, apiv1::DeleteOptions::default())
                .await;
        }
        for n in names {
            let (c, n) = (self.client.clone(), n.to_string());
            eventually("pod deleted", || {
                let (c, n) = (c.clone(), n.clone());
                async move { c.get::<Pod>("default", &n).await.is_err().then_some(()) }
            })
            .await;
        }
    }

    fn layer_dirs(&self) -> Vec<(String, u64)> {
        use std::os::unix::fs::MetadataExt;
        let d = self.cfg.data_dir.join("images/layers");
        let mut v: Vec<(String, u64)> = std::fs::read_dir(d)
            .unwrap()
            .flatten()
            .map(|e| {
                (
                    e.file_name().to_string_lossy().to_string(),
                    e.metadata().unwrap().ino(),
                )
            })
            .collect();
        v.sort();
        v
    }
}

/// The one container's state, flattened.
#[derive(Debug, Default)]
struct ContainerNow {
    running: bool,
    reason: String,
    message: String,
    image_id: String,
}

fn container_now(p: &Pod) -> ContainerNow {
    let Some(cs) = p
        .status
        .clone()
        .unwrap_or_default()
        .container_statuses
        .first()
        .cloned()
    else {
        return ContainerNow::default();
    };
    let st = cs.state.unwrap_or_default();
    let w = st.waiting.unwrap_or_default();
    ContainerNow {
        running: st.running.is_some(),
        reason: w.reason,
        message: w.message,
        image_id: cs.image_id,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_from_a_registry_reuses_layers_and_reports_pull_errors() {
    let scratch = tempfile::tempdir().unwrap();
    let registry = Registry::start(scratch.path(), None).await;
    let reg = registry.addr.clone();
    let good = build_archive(scratch.path(), "good", "good");
    let manifest = push(&good, &registry, "berth/busybox", "1").await;
    let bad = build_archive(scratch.path(), "bad", "bad");
    let bad_manifest = push(&bad, &registry, "berth/corrupt", "1").await;
    registry.corrupt_blob(&bad_manifest.layers[0].digest);

    let mut env = Env::start(&[]).await;
    let image = format!("{reg}/berth/busybox:1");

    // IfNotPresent (the default for a tag): pulled, then run.
    env.create_sleeper("first", &image, None).await;
    let p = env.wait_container("first", "running", |c| c.running).await;
    assert_eq!(container_now(&p).image_id, manifest.config.digest);
    let layers = env.layer_dirs();
    assert_eq!(layers.len(), 1, "one layer unpacked: {layers:?}");
    assert_eq!(env.log().matches("pulled").count(), 1);

    // A second pod with the image: no pull, the same unpacked layer.
    env.create_sleeper("second", &image, None).await;
    env.wait_container("second", "running", |c| c.running).await;
    assert_eq!(env.layer_dirs(), layers, "layers reused, not unpacked again");
    assert_eq!(env.log().matches("pulled").count(), 1, "no second pull");
    let ls = Command::new(berth_bin())
        .args(["image", "ls", "--data-dir"])
        .arg(&env.cfg.data_dir)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&ls.stdout).contains(&image),
        "image ls lists the pull"
    );

    // A missing tag: ErrImagePull naming the image and the cause, then ImagePullBackOff.
    let missing = format!("{reg}/berth/busybox:nope");
    env.create_sleeper("missing", &missing, None).await;
    let p = env
        .wait_container("missing", "ErrImagePull", |c| c.reason == "ErrImagePull")
        .await;
    let msg = container_now(&p).message;
    assert!(
        msg.contains(&format!("Failed to pull image \"{missing}\"")) && msg.contains("404"),
        "{msg}"
    );
    assert!(msg.contains("MANIFEST_UNKNOWN"), "the registry's cause: {msg}");
    let p = env
        .wait_container("missing", "ImagePullBackOff", |c| c.reason == "ImagePullBackOff")
        .await;
    assert_eq!(
        container_now(&p).message,
        format!("Back-off pulling image \"{missing}\"")
    );
    assert_eq!(p.status.unwrap().phase, "Pending");

    // Never with an image the node lacks: ErrImageNeverPull, and nothing is asked of the
    // registry (the image exists there).
    let other = format!("{reg}/berth/corrupt:1");
    env.create_sleeper("never", &other, Some("Never")).await;
    let p = env
        .wait_container("never", "ErrImageNeverPull", |c| c.reason == "ErrImageNeverPull")
        .await;
    assert!(container_now(&p).message.contains("pull policy of Never"));

    // A layer whose content does not match its digest is refused, and nothing is stored.
    env.create_sleeper("corrupt", &other, Some("Always")).await;
    let p = env
        .wait_container("corrupt", "ErrImagePull", |c| c.reason == "ErrImagePull")
        .await;
    let msg = container_now(&p).message;
    assert!(
        msg.contains("refused") && msg.contains(&bad_manifest.layers[0].digest),
        "{msg}"
    );
    assert_eq!(env.layer_dirs(), layers, "nothing of the refused image unpacked");

    env.delete_pods(&["first", "second", "missing", "never", "corrupt"])
        .await;
    let agent = env.agent.child.as_mut().unwrap();
    assert!(agent.try_wait().unwrap().is_none(), "the agent runs on");
}

/// HTTPS with a self-signed certificate (openssl): a pull without the certificate trusted is
/// refused (TLS verification fails, and the plain HTTP fallback a loopback registry gets meets
/// a TLS server); an agent given it with `--registry-ca-file` pulls and runs the image.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_registry_with_a_ca_file() {
    let scratch = tempfile::tempdir().unwrap();
    let d = scratch.path();
    let (ca, cert, key) = (d.join("ca.pem"), d.join("cert.pem"), d.join("key.pem"));
    // A CA, and a server certificate for 127.0.0.1 it signs (rustls refuses a CA certificate
    // as the server's own).
    std::fs::write(
        d.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    let openssl = |args: &[&str]| {
        let o = Command::new("openssl")
            .args(args)
            .current_dir(d)
            .output()
            .expect("openssl (Debian's openssl package)");
        assert!(
            o.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    let rsa = ["-newkey", "rsa:2048", "-nodes"];
    openssl(
        &[
            &["req", "-x509"][..],
            &rsa,
            &[
                "-days",
                "1",
                "-subj",
                "/CN=berth-test-ca",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
            ],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req"][..],
            &rsa,
            &["-subj", "/CN=127.0.0.1", "-keyout", "key.pem", "-out", "leaf.csr"],
        ]
        .concat(),
    );
    openssl(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "ext.cnf",
        "-out",
        "cert.pem",
    ]);
    let registry = Registry::start(scratch.path(), Some((&cert, &key, &ca))).await;
    let archive_file = build_archive(scratch.path(), "tls", "tls");
    let manifest = push(&archive_file, &registry, "berth/tls", "1").await;
    let image = format!("{}/berth/tls:1", registry.addr);

    // Without the certificate: refused, with the TLS cause in the message.
    let store = std::sync::Arc::new(
        berth_node::image::ImageStore::open(&scratch.path().join("plain-store")).unwrap(),
    );
    let puller = berth_node::image::registry::Puller::new(Default::default()).unwrap();
    let e = puller.pull(&store, &image).await.unwrap_err().to_string();
    assert!(
        e.contains("after HTTPS failed") && e.contains("certificate"),
        "{e}"
    );
    assert!(store.list().unwrap().is_empty());

    let ca_flag = ca.display().to_string();
    let env = Env::start(&["--registry-ca-file", &ca_flag]).await;
    env.create_sleeper("tls", &image, None).await;
    let p = env.wait_container("tls", "running", |c| c.running).await;
    assert_eq!(container_now(&p).image_id, manifest.config.digest);
    assert!(
        !env.log().contains("trying plain HTTP"),
        "HTTPS was used throughout"
    );
    env.delete_pods(&["tls"]).await;
}
