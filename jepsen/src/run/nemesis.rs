//! The nemesis: on a schedule (quiet `interval`, then a fault for `duration`), one fault at a
//! time, chosen at random among the enabled kinds, with targets chosen at random among the
//! kind's modes. Every start and stop is recorded in the history as process `nemesis`
//! (`invoke` then `info`, value = what was done), which the report shades on its charts.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;
use serde_json::{json, Value};
use tokio::sync::Mutex;

use super::cluster::{control_client, control_timeout, Cluster};
use super::config::Fault;
use super::lab::Lab;
use super::recorder::Recorder;
use crate::history::{OpType, Process};

/// How long a restarted member has to show it is up (or has exited) after a disk fault.
pub const DISK_RESTART_WATCH_MS: u64 = 10_000;
/// netem settings of a slow, lossy link.
pub const NETEM_DELAY_MS: u64 = 40;
pub const NETEM_JITTER_MS: u64 = 20;
pub const NETEM_LOSS_PERCENT: u64 = 5;
/// Bytes flipped by a bit-flip disk fault.
pub const DISK_FLIPS: usize = 16;

pub struct Nemesis {
    pub lab: Arc<Lab>,
    pub cluster: Arc<Mutex<Cluster>>,
    pub recorder: Arc<Recorder>,
    pub faults: Vec<Fault>,
    pub rng: StdRng,
    pub interval: Duration,
    pub duration: Duration,
    /// What a disk fault did to each member, for the report.
    pub disk_outcomes: Vec<Value>,
    /// Members that exited on their own, for the report.
    pub crashes: Vec<Value>,
}

/// What a fault left to undo.
enum Active {
    Killed(Vec<usize>),
    Paused(Vec<usize>),
    Partitioned(Vec<usize>),
    Netem(Vec<usize>),
    /// Removed and wiped: rejoin with an empty data dir.
    Removed(Vec<usize>),
    Nothing,
}

impl Nemesis {
    /// Runs faults until `deadline`, then heals everything.
    pub async fn run(&mut self, deadline: Instant) {
        if self.faults.is_empty() {
            return;
        }
        loop {
            if !sleep_until_before(self.interval, deadline).await {
                break;
            }
            self.restart_crashed().await;
            let fault = *self.faults.choose(&mut self.rng).expect("faults not empty");
            self.record(OpType::Invoke, &format!("start-{}", fault.name()), Value::Null);
            let (active, what) = self.start(fault).await;
            self.record(OpType::Info, &format!("start-{}", fault.name()), what);
            let remaining = deadline.saturating_duration_since(Instant::now());
            tokio::time::sleep(self.duration.min(remaining)).await;
            self.stop(fault, active).await;
            if Instant::now() >= deadline {
                break;
            }
        }
    }

    fn record(&self, kind: OpType, f: &str, value: Value) {
        let nemesis = Process::Named("nemesis".into());
        self.recorder.record(&nemesis, kind, f, None, value, None);
    }

    async fn stop(&mut self, fault: Fault, active: Active) {
        let f = format!("stop-{}", fault.name());
        self.record(OpType::Invoke, &f, Value::Null);
        let what = self.heal(active).await;
        self.record(OpType::Info, &f, what);
    }

    async fn start(&mut self, fault: Fault) -> (Active, Value) {
        match fault {
            Fault::Kill => {
                let (mode, targets) = self.targets().await;
                let mut c = self.cluster.lock().await;
                targets.iter().for_each(|&i| c.kill(i));
                (
                    Active::Killed(targets.clone()),
                    json!({"mode": mode, "nodes": names(&targets)}),
                )
            }
            Fault::Pause => {
                let (mode, targets) = self.targets().await;
                let mut c = self.cluster.lock().await;
                targets.iter().for_each(|&i| c.pause(i));
                (
                    Active::Paused(targets.clone()),
                    json!({"mode": mode, "nodes": names(&targets)}),
                )
            }
            Fault::Partition => self.partition().await,
            Fault::Netem => {
                let n = self.lab.nodes();
                let targets = if self.rng.gen_bool(0.5) {
                    (0..n).collect()
                } else {
                    self.random_nodes((n - 1) / 2)
                };
                let mut errors = Vec::new();
                let mut applied = Vec::new();
                for &i in &targets {
                    let r = self
                        .lab
                        .netem(i + 1, NETEM_DELAY_MS, NETEM_JITTER_MS, NETEM_LOSS_PERCENT);
                    match r {
                        Ok(how) => applied.push(how),
                        Err(e) => errors.push(e.to_string()),
                    }
                }
                applied.dedup();
                let what = json!({"nodes": names(&targets), "applied": applied, "delay_ms": NETEM_DELAY_MS,
                    "jitter_ms": NETEM_JITTER_MS, "loss_percent": NETEM_LOSS_PERCENT, "errors": errors});
                (Active::Netem(targets), what)
            }
            Fault::Member => self.remove_member().await,
            Fault::Disk => self.disk().await,
        }
    }

    async fn heal(&mut self, active: Active) -> Value {
        match active {
            Active::Killed(nodes) => {
                let mut c = self.cluster.lock().await;
                let errors: Vec<String> = nodes
                    .iter()
                    .filter_map(|&i| c.start(i).err().map(|e| e.to_string()))
                    .collect();
                json!({"restarted": names(&nodes), "errors": errors})
            }
            Active::Paused(nodes) => {
                let mut c = self.cluster.lock().await;
                nodes.iter().for_each(|&i| c.resume(i));
                json!({"resumed": names(&nodes)})
            }
            Active::Partitioned(nodes) => {
                let errors: Vec<String> = nodes
                    .iter()
                    .filter_map(|&i| self.lab.unblock(i + 1).err().map(|e| e.to_string()))
                    .collect();
                json!({"healed": names(&nodes), "errors": errors})
            }
            Active::Netem(nodes) => {
                nodes.iter().for_each(|&i| self.lab.clear_netem(i + 1));
                json!({"cleared": names(&nodes)})
            }
            Active::Removed(nodes) => {
                let mut c = self.cluster.lock().await;
                let errors: Vec<String> = nodes
                    .iter()
                    .filter_map(|&i| c.start_joining(i).err().map(|e| e.to_string()))
                    .collect();
                json!({"rejoined": names(&nodes), "errors": errors})
            }
            Active::Nothing => Value::Null,
        }
    }

    /// Members whose process exited on its own (not killed by a fault) are recorded as
    /// `crash` (exit status and their `Error:` line) and started again.
    pub async fn restart_crashed(&mut self) {
        let mut c = self.cluster.lock().await;
        for i in 0..c.nodes.len() {
            let Some(status) = c.exited(i) else { continue };
            let name = c.nodes[i].name.clone();
            let error = last_lines(&c.nodes[i].log, 1);
            let restarted = c.start(i).map_err(|e| e.to_string()).err();
            let what = json!({"node": name, "exit": status.to_string(), "error": error,
                "restart_error": restarted});
            self.crashes.push(what.clone());
            self.record(OpType::Invoke, "crash", Value::Null);
            self.record(OpType::Info, "crash", what);
        }
    }

    /// Heals whatever the last fault may have left (used at the end, and after Ctrl-C).
    pub async fn heal_all(&mut self) {
        self.restart_crashed().await;
        let n = self.lab.nodes();
        for i in 0..n {
            let _ = self.lab.unblock(i + 1);
            self.lab.clear_netem(i + 1);
        }
        let mut c = self.cluster.lock().await;
        for i in 0..n {
            c.resume(i);
            if !c.running(i) {
                let _ = c.start(i);
            }
        }
    }

    fn random_nodes(&mut self, count: usize) -> Vec<usize> {
        let mut all: Vec<usize> = (0..self.lab.nodes()).collect();
        all.shuffle(&mut self.rng);
        all.truncate(count.max(1));
        all.sort();
        all
    }

    /// Targets of a kill or pause: one node, the leader, a minority or a majority.
    async fn targets(&mut self) -> (&'static str, Vec<usize>) {
        let n = self.lab.nodes();
        match self.rng.gen_range(0..4) {
            0 => ("one", self.random_nodes(1)),
            1 => {
                let leader = self.cluster.lock().await.leader().await;
                match leader {
                    Some(l) => ("leader", vec![l]),
                    None => ("one (no leader found)", self.random_nodes(1)),
                }
            }
            2 => ("minority", self.random_nodes((n - 1) / 2)),
            _ => ("majority", self.random_nodes(n / 2 + 1)),
        }
    }

    async fn partition(&mut self) -> (Active, Value) {
        let n = self.lab.nodes();
        let modes = if n >= 5 { 3 } else { 2 };
        let (mode, blocked): (&str, Vec<Vec<usize>>) = match self.rng.gen_range(0..modes) {
            0 => {
                let leader = self.cluster.lock().await.leader().await;
                let l = leader.unwrap_or_else(|| self.random_nodes(1)[0]);
                ("isolate-leader", halves(n, &[l]))
            }
            1 => {
                let side = self.random_nodes(n / 2);
                ("halves", halves(n, &side))
            }
            _ => ("majorities-ring", ring(n)),
        };
        let mut errors = Vec::new();
        for (i, others) in blocked.iter().enumerate() {
            let others: Vec<usize> = others.iter().map(|&j| j + 1).collect();
            if let Err(e) = self.lab.block(i + 1, &others) {
                errors.push(e.to_string());
            }
        }
        let grid: Vec<Value> = blocked
            .iter()
            .enumerate()
            .map(|(i, b)| json!({"node": format!("n{}", i + 1), "cut_from": names(b)}))
            .collect();
        let what = json!({"mode": mode, "cuts": grid, "errors": errors});
        (Active::Partitioned((0..n).collect()), what)
    }

    /// Removes a random member through the Cluster API (asking another node), kills it and
    /// wipes its data dir; it rejoins empty when the fault ends.
    async fn remove_member(&mut self) -> (Active, Value) {
        let target = self.random_nodes(1)[0];
        let mut c = self.cluster.lock().await;
        let name = c.nodes[target].name.clone();
        let Some(id) = c
            .members()
            .await
            .and_then(|m| m.into_iter().find(|(_, n)| *n == name))
        else {
            return (
                Active::Nothing,
                json!({"node": name, "removed": false, "error": "not a member now"}),
            );
        };
        let others: Vec<String> = (0..c.nodes.len())
            .filter(|&j| j != target && c.running(j))
            .map(|j| c.nodes[j].client_addr())
            .collect();
        let mut error = None;
        let mut removed = false;
        for addr in others {
            let Ok(client) = control_client(&addr) else {
                continue;
            };
            match tokio::time::timeout(control_timeout() * 5, client.member_remove(id.0)).await {
                Ok(Ok(_)) => {
                    removed = true;
                    break;
                }
                Ok(Err(e)) => error = Some(e.to_string()),
                Err(_) => error = Some("timeout".into()),
            }
        }
        if !removed {
            // The removal may still commit later; leave the member running either way.
            return (
                Active::Nothing,
                json!({"node": name, "removed": false, "error": error}),
            );
        }
        c.kill(target);
        let wiped = std::fs::remove_dir_all(&c.nodes[target].data_dir).is_ok();
        (
            Active::Removed(vec![target]),
            json!({"node": name, "removed": true, "wiped": wiped}),
        )
    }

    /// Kills a member, corrupts its data files, restarts it and watches what it does.
    async fn disk(&mut self) -> (Active, Value) {
        let target = self.random_nodes(1)[0];
        let mut c = self.cluster.lock().await;
        c.kill(target);
        let dir = c.nodes[target].data_dir.clone();
        let corruption = corrupt(&dir, &mut self.rng);
        if let Err(e) = c.start(target) {
            return (
                Active::Nothing,
                json!({"node": c.nodes[target].name, "corruption": corruption, "error": e.to_string()}),
            );
        }
        let deadline = Instant::now() + Duration::from_millis(DISK_RESTART_WATCH_MS);
        let mut exit = None;
        while Instant::now() < deadline {
            if let Some(status) = c.exited(target) {
                exit = Some(status);
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let name = c.nodes[target].name.clone();
        let log_tail = last_lines(&c.nodes[target].log, 3);
        let outcome = match exit {
            Some(status) => json!({"node": name, "corruption": corruption,
                "outcome": "refused to start", "exit": status.to_string(), "log_tail": log_tail}),
            None => json!({"node": name, "corruption": corruption,
                "outcome": format!("running {DISK_RESTART_WATCH_MS} ms after restart")}),
        };
        self.disk_outcomes.push(outcome.clone());
        if exit.is_none() {
            return (Active::Nothing, outcome);
        }
        // It refused: bring it back as a new, empty member (remove, wipe, rejoin).
        let mut removed = false;
        if let Some(id) = c
            .members()
            .await
            .and_then(|m| m.into_iter().find(|(_, n)| *n == name))
        {
            for j in (0..c.nodes.len()).filter(|&j| j != target && c.running(j)) {
                let Ok(client) = control_client(&c.nodes[j].client_addr()) else {
                    continue;
                };
                if let Ok(Ok(_)) =
                    tokio::time::timeout(control_timeout() * 5, client.member_remove(id.0)).await
                {
                    removed = true;
                    break;
                }
            }
        }
        if removed {
            let _ = std::fs::remove_dir_all(&dir);
            (Active::Removed(vec![target]), outcome)
        } else {
            // Still a member that cannot start: it stays down (and the report says so).
            (Active::Nothing, outcome)
        }
    }
}

/// Sleeps `d`, unless that would pass `deadline`: then returns false at once.
async fn sleep_until_before(d: Duration, deadline: Instant) -> bool {
    if Instant::now() + d >= deadline {
        return false;
    }
    tokio::time::sleep(d).await;
    true
}

fn names(nodes: &[usize]) -> Vec<String> {
    nodes.iter().map(|i| format!("n{}", i + 1)).collect()
}

/// For every node, the nodes it is cut from when `side` is split from the rest.
fn halves(n: usize, side: &[usize]) -> Vec<Vec<usize>> {
    (0..n)
        .map(|i| {
            let mine = side.contains(&i);
            (0..n).filter(|j| side.contains(j) != mine).collect()
        })
        .collect()
}

/// Every node keeps its nearest ring neighbours, `reach` on each side, so it sees a majority
/// (a bare one for n = 5 and 9) and is cut from the rest: every node can form a majority, but
/// no two nodes see the same one.
pub fn ring(n: usize) -> Vec<Vec<usize>> {
    let reach = (n / 2).div_ceil(2); // n=5: 1, n=7: 2
    (0..n)
        .map(|i| {
            (0..n)
                .filter(|&j| {
                    let d = (i + n - j) % n;
                    let dist = d.min(n - d);
                    dist > reach
                })
                .collect()
        })
        .collect()
}

/// Truncates or bit-flips one of the member's data files; says what it did.
fn corrupt(dir: &Path, rng: &mut StdRng) -> Value {
    let mut files = Vec::new();
    collect_files(dir, &mut files);
    files.retain(|f| std::fs::metadata(f).map(|m| m.len() > 0).unwrap_or(false));
    let pick = |files: &[PathBuf], ext: &str, rng: &mut StdRng| -> Option<PathBuf> {
        let matching: Vec<&PathBuf> = files
            .iter()
            .filter(|f| f.extension().is_some_and(|e| e == ext))
            .collect();
        matching.choose(rng).map(|p| p.to_path_buf())
    };
    if rng.gen_bool(0.5) {
        let Some(file) = pick(&files, "log", rng) else {
            return json!({"kind": "truncate", "error": "no .log (WAL) file"});
        };
        let len = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
        let keep = len / 2;
        let r = std::fs::OpenOptions::new()
            .write(true)
            .open(&file)
            .and_then(|f| f.set_len(keep));
        json!({"kind": "truncate", "file": file, "from_bytes": len, "to_bytes": keep,
            "error": r.err().map(|e| e.to_string())})
    } else {
        let Some(file) = pick(&files, "sst", rng).or_else(|| files.choose(rng).cloned()) else {
            return json!({"kind": "bitflip", "error": "no data files"});
        };
        let r = flip_bytes(&file, rng);
        json!({"kind": "bitflip", "file": file, "offsets": r.as_ref().ok(), "error": r.err().map(|e| e.to_string())})
    }
}

fn flip_bytes(file: &Path, rng: &mut StdRng) -> std::io::Result<Vec<u64>> {
    let mut bytes = std::fs::read(file)?;
    let mut offsets = Vec::new();
    for _ in 0..DISK_FLIPS {
        let at = rng.gen_range(0..bytes.len());
        bytes[at] ^= 1 << rng.gen_range(0..8);
        offsets.push(at as u64);
    }
    std::fs::write(file, bytes)?;
    offsets.sort();
    Ok(offsets)
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_files(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// The member's last `Error:` line (what it refused to start with), else its last lines.
fn last_lines(path: &Path, n: usize) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    if let Some(error) = lines.iter().rev().find(|l| l.starts_with("Error:")) {
        return vec![error.to_string()];
    }
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_gives_every_node_a_bare_majority() {
        for n in [5usize, 7] {
            let cuts = ring(n);
            for (i, cut) in cuts.iter().enumerate() {
                assert!(n - cut.len() > n / 2, "node {i} of {n} sees a majority");
                assert!(!cut.is_empty());
                for &j in cut {
                    assert!(cuts[j].contains(&i), "cuts are symmetric");
                }
            }
            assert_ne!(cuts[0], cuts[1]);
        }
    }

    #[test]
    fn halves_cut_across_sides_only() {
        let cuts = halves(5, &[1, 3]);
        assert_eq!(cuts[1], vec![0, 2, 4]);
        assert_eq!(cuts[0], vec![1, 3]);
    }
}
