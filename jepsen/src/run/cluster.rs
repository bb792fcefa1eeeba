//! The `berth server` processes of a run, one per node namespace, started, killed, paused and
//! wiped by PID. Dropping the [`Cluster`] kills every process it started.

use std::fs::{File, OpenOptions};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth_client::EtcdClient;

use super::lab::Lab;
use crate::Error;

/// The client port every server listens on, on its lab address.
pub const CLIENT_PORT: u16 = 2379;
/// The peer port.
pub const PEER_PORT: u16 = 2380;
/// How long a cluster has to elect a leader after (re)starting.
pub const LEADER_WAIT_MS: u64 = 30_000;
/// Request timeout of the harness's own control calls (status, members).
pub const CONTROL_TIMEOUT_MS: u64 = 1_000;

pub struct Node {
    pub name: String,
    /// 1-based index, as in the lab.
    pub index: usize,
    pub ip: String,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    pub netns: File,
    pub child: Option<Child>,
    pub paused: bool,
}

impl Node {
    pub fn client_addr(&self) -> String {
        format!("{}:{CLIENT_PORT}", self.ip)
    }

    pub fn peer_addr(&self) -> String {
        format!("{}:{PEER_PORT}", self.ip)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

pub struct Cluster {
    pub exe: PathBuf,
    pub nodes: Vec<Node>,
    pub initial_cluster: String,
    /// Extra flags for every server (timeouts).
    pub server_args: Vec<String>,
}

impl Cluster {
    pub fn new(lab: &Lab, exe: &Path, data_root: &Path, log_dir: &Path) -> Result<Cluster, Error> {
        let mut nodes = Vec::new();
        for i in 1..=lab.nodes() {
            let name = format!("n{i}");
            nodes.push(Node {
                data_dir: data_root.join(&name),
                log: log_dir.join(format!("{name}.log")),
                name,
                index: i,
                ip: lab.node_ip(i),
                netns: Lab::open_netns(&lab.node_netns(i))?,
                child: None,
                paused: false,
            });
        }
        let initial_cluster = nodes
            .iter()
            .map(|n| format!("{}={}", n.name, n.peer_addr()))
            .collect::<Vec<_>>()
            .join(",");
        Ok(Cluster {
            exe: exe.to_path_buf(),
            nodes,
            initial_cluster,
            server_args: Vec::new(),
        })
    }

    pub fn client_addrs(&self) -> Vec<String> {
        self.nodes.iter().map(Node::client_addr).collect()
    }

    /// Starts node `i` (0-based) founding or rejoining the cluster from its data dir.
    pub fn start(&mut self, i: usize) -> Result<(), Error> {
        let args = vec!["--initial-cluster".to_string(), self.initial_cluster.clone()];
        self.spawn(i, &args)
    }

    /// Starts node `i` with an empty data dir, joining through the other nodes.
    pub fn start_joining(&mut self, i: usize) -> Result<(), Error> {
        let others: Vec<String> = (0..self.nodes.len())
            .filter(|&j| j != i)
            .map(|j| self.nodes[j].client_addr())
            .collect();
        let args = vec!["--join".to_string(), others.join(",")];
        self.spawn(i, &args)
    }

    fn spawn(&mut self, i: usize, cluster_args: &[String]) -> Result<(), Error> {
        let node = &mut self.nodes[i];
        if node.child.is_some() {
            return Ok(());
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .map_err(|source| Error::Io {
                path: node.log.clone(),
                source,
            })?;
        let mut cmd = Command::new(&self.exe);
        cmd.args(["server", "--name", &node.name])
            .arg("--data-dir")
            .arg(&node.data_dir)
            .args([
                "--peer-addr",
                &node.peer_addr(),
                "--client-addr",
                &node.client_addr(),
            ])
            .args(cluster_args)
            .args(&self.server_args)
            .env("BERTH_LOG", "info,openraft=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let fd = {
            use std::os::fd::AsRawFd;
            node.netns.as_raw_fd()
        };
        // SAFETY: only async-signal-safe calls between fork and exec: setns and prctl, then
        // (on error) reading errno.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // Should the runner itself be SIGKILLed, its servers die with it. (The signal
                // follows the spawning thread: servers are spawned from the client runtime's
                // worker threads, which live until the runner has killed them anyway.)
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| Error::Cluster(format!("spawn {}: {e}", node.name)))?;
        node.child = Some(child);
        node.paused = false;
        Ok(())
    }

    /// SIGKILL node `i`'s process (resuming it first if paused, so it dies at once).
    pub fn kill(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        node.paused = false;
    }

    pub fn pause(&mut self, i: usize) {
        self.signal(i, libc::SIGSTOP);
        self.nodes[i].paused = self.nodes[i].child.is_some();
    }

    pub fn resume(&mut self, i: usize) {
        self.signal(i, libc::SIGCONT);
        self.nodes[i].paused = false;
    }

    fn signal(&self, i: usize, signal: libc::c_int) {
        if let Some(pid) = self.nodes[i].pid() {
            // SAFETY: a signal to a child we started and have not reaped.
            unsafe { libc::kill(pid as libc::pid_t, signal) };
        }
    }

    /// Whether node `i`'s process has exited (reaping it); its exit status if so.
    pub fn exited(&mut self, i: usize) -> Option<std::process::ExitStatus> {
        let node = &mut self.nodes[i];
        let status = node.child.as_mut()?.try_wait().ok()??;
        node.child = None;
        Some(status)
    }

    pub fn running(&self, i: usize) -> bool {
        self.nodes[i].child.is_some()
    }

    /// The index of the node every reachable member names as leader, if any.
    pub async fn leader(&self) -> Option<usize> {
        let mut leader_id = None;
        for node in self.nodes.iter().filter(|n| n.child.is_some() && !n.paused) {
            let Ok(client) = control_client(&node.client_addr()) else {
                continue;
            };
            if let Ok(Ok(status)) = tokio::time::timeout(control_timeout(), client.status_of(0)).await {
                if status.leader != 0 {
                    leader_id = Some(status.leader);
                    break;
                }
            }
        }
        let leader_id = leader_id?;
        let members = self.members().await?;
        let name = members.into_iter().find(|(id, _)| *id == leader_id)?.1;
        self.nodes.iter().position(|n| n.name == name)
    }

    /// (id, name) of every member, from the first node that answers.
    pub async fn members(&self) -> Option<Vec<(u64, String)>> {
        for node in self.nodes.iter().filter(|n| n.child.is_some() && !n.paused) {
            let Ok(client) = control_client(&node.client_addr()) else {
                continue;
            };
            if let Ok(Ok(list)) = tokio::time::timeout(control_timeout(), client.member_list()).await {
                return Some(list.members.into_iter().map(|m| (m.id, m.name)).collect());
            }
        }
        None
    }

    /// Waits until some node is leader, or the deadline passes.
    pub async fn wait_leader(&self) -> Result<usize, Error> {
        let deadline = Instant::now() + Duration::from_millis(LEADER_WAIT_MS);
        loop {
            if let Some(i) = self.leader().await {
                return Ok(i);
            }
            if Instant::now() > deadline {
                return Err(Error::Cluster(format!("no leader within {LEADER_WAIT_MS} ms")));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}

pub fn control_timeout() -> Duration {
    Duration::from_millis(CONTROL_TIMEOUT_MS)
}

pub fn control_client(addr: &str) -> Result<EtcdClient, Error> {
    EtcdClient::new(&[addr.to_string()], control_timeout()).map_err(|e| Error::Cluster(e.to_string()))
}
