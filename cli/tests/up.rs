//! `berth up` end to end: one process running a server and an agent (bridge pod network) that
//! applies the demo workload; both demo pods run with their own addresses and serve the page
//! from the ConfigMap. Names on the machine carry the prefix `bu-`; removed when the test ends.

mod common;

use berth_client::ResourceClient;
use berth_proto::corev1::Pod;
use common::{berth_bin, eventually, free_port};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const BRIDGE: &str = "bu-br1";
const NODE: &str = "bu-up";

/// Stops `berth up` and removes what it left on the machine (pods keep running when the agent
/// stops; the bridge outlives the agent by design).
struct Up {
    child: Child,
    agent: berth_node::Config,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Err(e) = berth_node::cleanup_leftovers(&self.agent) {
            eprintln!("cleanup: {e}");
        }
        let _ = std::fs::remove_dir_all(&self.agent.run_dir);
        let _ = Command::new("ip").args(["link", "del", BRIDGE]).output();
    }
}

fn curl(url: &str) -> Option<String> {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "2", url])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_runs_the_demo_on_its_own_node() {
    let dir = tempfile::tempdir().unwrap();
    let client_addr = format!("127.0.0.1:{}", free_port());
    let data_dir = dir.path().join("data");
    let log = dir.path().join("up.log");
    let child = Command::new(berth_bin())
        .args(["up", "--client-addr", &client_addr])
        .args(["--peer-addr", &format!("127.0.0.1:{}", free_port())])
        .arg("--data-dir")
        .arg(&data_dir)
        .args(["--bridge-name", BRIDGE, "--veth-prefix", "buw"])
        .args(["--cluster-cidr", "10.214.0.0/16", "--node-name", NODE])
        // Any free port on the node's IP (loopback under `berth up`): tests running at once never collide.
        .args(["--agent-addr", ":0"])
        .env("BERTH_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let up = Up {
        child,
        agent: berth_node::Config::new(NODE, vec![client_addr.clone()], data_dir.join("agent")),
        log,
        _dir: dir,
    };
    let client = ResourceClient::new(&[client_addr], Duration::from_secs(5)).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let ips = loop {
        let pods = client
            .list::<Pod>("demo", &Default::default())
            .await
            .map(|l| l.items);
        let ips: Vec<String> = pods
            .unwrap_or_default()
            .iter()
            .filter_map(|p| p.status.as_ref())
            .filter(|s| s.phase == "Running" && s.pod_ip.starts_with("10.214."))
            .map(|s| s.pod_ip.clone())
            .collect();
        if ips.len() == 2 {
            break ips;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for two Running demo pods; berth up log:\n{}",
            std::fs::read_to_string(&up.log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for ip in &ips {
        let page = eventually("the demo page", || {
            let url = format!("http://{ip}:8080/");
            async move { curl(&url) }
        })
        .await;
        assert!(page.contains("Hello from Berth"), "{page}");
    }
    // What to try next, once the pods run.
    let log = up.log.clone();
    eventually("the hints printed", || {
        let out = std::fs::read_to_string(&log).unwrap_or_default();
        let shown = out.contains("berth get pods -n demo -o wide") && out.contains("curl http://10.214.");
        async move { shown.then_some(()) }
    })
    .await;
}
