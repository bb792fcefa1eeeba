//! A client no one here wrote the wire code for: Python grpcio, with stubs generated from the
//! project's .proto files inside the test, creates, lists and watches a Pod.

mod common;
use common::*;
use std::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpcio_creates_lists_and_watches_a_pod() {
    let c = Cluster::start(1, &[]).await;
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/resources_client.py");
    let addr = c.members[0].client.clone();
    // The server creates the `default` namespace in the background right after start.
    eventually("the default namespace", || async {
        let out = etcdctl(&addr, &["get", "/registry/namespaces/default", "--keys-only"]);
        (!out.stdout.is_empty()).then_some(())
    })
    .await;
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(script)
            .arg(format!("{root}/proto"))
            .arg(&addr)
            .output()
    })
    .await
    .unwrap()
    .expect("python3 runs (scripts/deps.sh installs grpcio and grpcio-tools)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "python client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("create, list, watch ok"), "{stdout}");
}
