//! `berth jepsen run` end to end: a real cluster of `berth server` processes in network
//! namespaces, real faults, the checkers, the report folder, and the cleanup (processes by
//! PID, namespaces) after a normal exit and after Ctrl-C. Needs root (namespaces, nftables).

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::berth_bin;

/// One run at a time: each starts a whole cluster and the machine is small.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn run_id(pid: u32) -> String {
    format!("bj-{:04x}-", pid % 0x10000)
}

fn netns_left(prefix: &str) -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

/// Processes whose command line mentions `needle` (the report dir is in every server's).
fn processes_mentioning(needle: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(needle) && pid != std::process::id() {
            found.push(pid);
        }
    }
    found
}

fn jepsen_run(workload: &str, nemesis: &str, out: &Path) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let child = Command::new(berth_bin())
        .args(["jepsen", "run", "--workload", workload, "--nemesis", nemesis])
        .args([
            "--time-limit",
            "20",
            "--concurrency",
            "5",
            "--nodes",
            "3",
            "--seed",
            "7",
        ])
        .args(["--nemesis-interval", "3", "--nemesis-duration", "5"])
        .arg("--out")
        .arg(out)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let result = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&result.stdout);
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(
        result.status.success(),
        "{workload}/{nemesis} failed:\n{stdout}\n{stderr}"
    );
    assert!(netns_left(&run_id(pid)).is_empty(), "namespaces left behind");
    assert!(
        processes_mentioning(&out.display().to_string()).is_empty(),
        "servers left behind"
    );
    assert_valid_report(out, workload, nemesis);
}

fn assert_valid_report(out: &Path, workload: &str, nemesis: &str) {
    let verdict: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("verdict.json")).unwrap()).unwrap();
    assert_eq!(verdict["valid"], "Valid", "{verdict:#}");
    assert_eq!(verdict["workload"], workload);
    let history = std::fs::read_to_string(out.join("history.jsonl")).unwrap();
    let oks = history.lines().filter(|l| l.contains(r#""type":"ok""#)).count();
    assert!(oks > 20, "only {oks} operations succeeded");
    let fault = format!(r#""f":"start-{nemesis}""#);
    assert!(history.contains(&fault), "no {nemesis} fault in the history");
    let html = std::fs::read_to_string(out.join("timeline.html")).unwrap();
    assert!(html.contains("<svg") && !html.contains("<script"));
    assert!(out.join("logs/n1.log").exists());
    assert!(!out.join("data").exists(), "data dirs are removed after the run");
    // The plots need matplotlib; without it the run warns and carries on.
    let warned = verdict["warnings"].to_string().contains("plots not drawn");
    assert!(warned || out.join("latency.png").exists() && out.join("throughput.png").exists());
}

#[test]
fn register_under_kill() {
    let dir = tempfile::tempdir().unwrap();
    jepsen_run("register", "kill", &dir.path().join("report"));
}

#[test]
fn set_under_partition() {
    let dir = tempfile::tempdir().unwrap();
    jepsen_run("set", "partition", &dir.path().join("report"));
}

#[test]
fn append_under_pause() {
    let dir = tempfile::tempdir().unwrap();
    jepsen_run("append", "pause", &dir.path().join("report"));
}

/// Hollow nodes, bare pods and Deployments through the Resources API while members are
/// killed: pods bound once, nodes never overcommitted, replicas converge (about 30 s).
#[test]
fn controlplane_under_kill() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("report");
    jepsen_run("controlplane", "kill", &out);
    let verdict: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("verdict.json")).unwrap()).unwrap();
    let checker = &verdict["checker"];
    assert!(checker["pods_bound"].as_u64() > Some(5), "{checker:#}");
    assert!(checker["converged_after_ms"].is_u64(), "{checker:#}");
}

#[test]
fn offline_check_exits_non_zero_on_an_anomaly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("history.jsonl");
    std::fs::write(
        &path,
        concat!(
            r#"{"process":0,"type":"invoke","f":"add","value":1,"time":1}"#,
            "\n",
            r#"{"process":0,"type":"ok","f":"add","value":1,"time":2}"#,
            "\n",
            r#"{"process":1,"type":"invoke","f":"read","value":null,"time":3}"#,
            "\n",
            r#"{"process":1,"type":"ok","f":"read","value":[],"time":4}"#,
            "\n",
        ),
    )
    .unwrap();
    let out = Command::new(berth_bin())
        .args(["jepsen", "check", "--workload", "set"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(r#""lost": ["#));
    let fixed = std::fs::read_to_string(&path).unwrap().replace("[]", "[1]");
    std::fs::write(&path, fixed).unwrap();
    let out = Command::new(berth_bin())
        .args(["jepsen", "check", "--workload", "set"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn ctrl_c_removes_the_cluster_and_the_lab() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("report");
    let child = Command::new(berth_bin())
        .args([
            "jepsen",
            "run",
            "--workload",
            "set",
            "--nemesis",
            "kill",
            "--time-limit",
            "60",
        ])
        .arg("--out")
        .arg(&out)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    // Wait until the servers serve, then interrupt.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(out.join("logs/n3.log"))
        .unwrap_or_default()
        .contains("serving")
    {
        assert!(Instant::now() < deadline, "servers never started");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !netns_left(&run_id(pid)).is_empty(),
        "the lab exists while running"
    );
    // SAFETY: a signal to the child we started.
    unsafe { libc_kill(pid as i32, 2) };
    let result = child.wait_with_output().unwrap();
    assert!(!result.status.success());
    assert!(String::from_utf8_lossy(&result.stderr).contains("interrupted"));
    assert!(netns_left(&run_id(pid)).is_empty(), "namespaces left behind");
    assert!(
        processes_mentioning(&out.display().to_string()).is_empty(),
        "servers left behind"
    );
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}
