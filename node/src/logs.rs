//! Container log files: where they live and how they are read (the READ side; the runtime
//! helper writes them and rotates them).
//!
//! Layout, per container instance: `<pod log dir>/<container>/<restartCount>.log`, where the
//! pod log dir is `<data dir>/logs/<namespace>_<name>_<uid>`. When a file exceeds the writer's
//! cap it is renamed to `<restartCount>.log.1` (one older piece kept) and a new
//! `<restartCount>.log` begun. The current instance is the highest restartCount; `previous`
//! is the one before it. Lines are as the container wrote them.
//!
//! Reading never holds a whole file: whole logs go out in [`LOG_CHUNK_BYTES`] pieces, a tail
//! keeps only its last lines. Following polls the file every [`FOLLOW_POLL`], moves to the new
//! `.log` when the old one was renamed to `.log.1`, and ends once the instance has ended and
//! everything it wrote was sent, or when the receiver goes.

use crate::Error;
use std::collections::VecDeque;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc;

/// Largest piece of log sent at once.
pub const LOG_CHUNK_BYTES: usize = 64 * 1024;
/// How often a followed file is checked for new bytes.
pub const FOLLOW_POLL: Duration = Duration::from_millis(100);
/// Longest line a tail keeps whole (longer ones are cut, so a tail stays bounded).
pub const TAIL_LINE_BYTES_MAX: usize = 64 * 1024;
/// Most lines a tail may ask for.
pub const TAIL_LINES_MAX: usize = 100_000;

/// The pod's log directory.
pub fn pod_log_dir(data_dir: &Path, namespace: &str, name: &str, uid: &str) -> PathBuf {
    data_dir.join("logs").join(format!("{namespace}_{name}_{uid}"))
}

/// The log file of one container instance (the current piece).
pub fn instance_log(pod_log_dir: &Path, container: &str, restart_count: i32) -> PathBuf {
    pod_log_dir.join(container).join(format!("{restart_count}.log"))
}

/// The restart counts that have a log under `container_dir`, ascending.
pub fn instances(container_dir: &Path) -> Vec<i32> {
    let mut out: Vec<i32> = std::fs::read_dir(container_dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().to_string();
                    let n = name
                        .strip_suffix(".log")
                        .or_else(|| name.strip_suffix(".log.1"))?;
                    n.parse().ok()
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort_unstable();
    out.dedup();
    out
}

/// The instance to read: the newest, or with `previous` the one before it.
pub fn pick(instances: &[i32], previous: bool) -> Option<i32> {
    let skip = usize::from(previous);
    instances.iter().rev().nth(skip).copied()
}

/// Keeps the last `n` lines of what is pushed through it.
pub struct Tail {
    n: usize,
    lines: VecDeque<Vec<u8>>,
    /// The unfinished last line.
    partial: Vec<u8>,
}

impl Tail {
    pub fn new(n: usize) -> Tail {
        Tail {
            n: n.min(TAIL_LINES_MAX),
            lines: VecDeque::new(),
            partial: Vec::new(),
        }
    }

    pub fn push(&mut self, mut data: &[u8]) {
        while let Some(i) = data.iter().position(|&b| b == b'\n') {
            self.extend_partial(&data[..=i]);
            let line = std::mem::take(&mut self.partial);
            self.lines.push_back(line);
            if self.lines.len() > self.n {
                self.lines.pop_front();
            }
            data = &data[i + 1..];
        }
        self.extend_partial(data);
    }

    fn extend_partial(&mut self, data: &[u8]) {
        let room = TAIL_LINE_BYTES_MAX.saturating_sub(self.partial.len());
        self.partial.extend_from_slice(&data[..data.len().min(room)]);
    }

    /// The kept lines (an unfinished last line counts as one).
    pub fn finish(mut self) -> Vec<u8> {
        if !self.partial.is_empty() {
            self.lines.push_back(std::mem::take(&mut self.partial));
            if self.lines.len() > self.n {
                self.lines.pop_front();
            }
        }
        self.lines.into_iter().flatten().collect()
    }
}

/// What to read: one instance's pieces and how.
pub struct ReadPlan {
    pub log: PathBuf,
    pub tail_lines: Option<usize>,
    pub follow: bool,
}

/// Sends the instance's log to `tx` (blocking: run it on a blocking thread). `running` says
/// whether the instance still runs; following ends when it does not and nothing new came.
pub fn stream(plan: &ReadPlan, tx: &mpsc::Sender<Vec<u8>>, running: &dyn Fn() -> bool) -> Result<(), Error> {
    // The older piece first; the current one stays open (at its end) for following.
    let mut older = File::open(rotated_path(&plan.log)).ok();
    let mut current = File::open(&plan.log).ok();
    match plan.tail_lines {
        Some(n) => {
            let mut tail = Tail::new(n);
            for f in [older.as_mut(), current.as_mut()].into_iter().flatten() {
                read_to_end(f, |b| {
                    tail.push(b);
                    true
                })?;
            }
            if !send(tx, tail.finish()) {
                return Ok(());
            }
        }
        None => {
            for f in [older.as_mut(), current.as_mut()].into_iter().flatten() {
                if !read_to_end(f, |b| send(tx, b.to_vec()))? {
                    return Ok(());
                }
            }
        }
    }
    if !plan.follow {
        return Ok(());
    }
    follow(&plan.log, current, tx, running)
}

fn rotated_path(log: &Path) -> PathBuf {
    let mut s = log.as_os_str().to_owned();
    s.push(".1");
    PathBuf::from(s)
}

/// Reads `f` from where it is to its end in chunks; `sink` returns false to stop.
fn read_to_end(f: &mut File, mut sink: impl FnMut(&[u8]) -> bool) -> Result<bool, Error> {
    let mut buf = vec![0u8; LOG_CHUNK_BYTES];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| Error::Pod(format!("reading log: {e}")))?;
        if n == 0 {
            return Ok(true);
        }
        if !sink(&buf[..n]) {
            return Ok(false);
        }
    }
}

/// Blocking send; false when the receiver is gone.
fn send(tx: &mpsc::Sender<Vec<u8>>, data: Vec<u8>) -> bool {
    data.is_empty() || tx.blocking_send(data).is_ok()
}

fn follow(
    log: &Path,
    mut current: Option<File>,
    tx: &mpsc::Sender<Vec<u8>>,
    running: &dyn Fn() -> bool,
) -> Result<(), Error> {
    loop {
        // Whether it ran before reading: whatever it wrote before ending is read below.
        let was_running = running();
        if let Some(f) = current.as_mut() {
            if !read_to_end(f, |b| send(tx, b.to_vec()))? {
                return Ok(());
            }
        }
        // Rotated: the open file is now `.log.1` (read to its end above); the new `.log` is
        // another inode.
        let path_ino = std::fs::metadata(log).ok().map(|m| m.ino());
        let open_ino = current.as_ref().and_then(|f| f.metadata().ok()).map(|m| m.ino());
        if path_ino.is_some() && path_ino != open_ino {
            current = File::open(log).ok();
            continue;
        }
        if !was_running || tx.is_closed() {
            return Ok(());
        }
        std::thread::sleep(FOLLOW_POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_last_lines() {
        let mut t = Tail::new(2);
        t.push(b"a\nb");
        t.push(b"\nc\nd");
        assert_eq!(t.finish(), b"c\nd".to_vec());
        let mut t = Tail::new(2);
        t.push(b"a\nb\nc\n");
        assert_eq!(t.finish(), b"b\nc\n".to_vec());
        let mut t = Tail::new(0);
        t.push(b"a\nb\n");
        assert_eq!(t.finish(), Vec::<u8>::new());
    }

    #[test]
    fn instances_and_pick() {
        let d = tempfile::tempdir().unwrap();
        for f in ["0.log", "1.log.1", "1.log", "3.log", "x.log", "2.txt"] {
            std::fs::write(d.path().join(f), "").unwrap();
        }
        let i = instances(d.path());
        assert_eq!(i, vec![0, 1, 3]);
        assert_eq!(pick(&i, false), Some(3));
        assert_eq!(pick(&i, true), Some(1));
        assert_eq!(pick(&[0], true), None);
        assert_eq!(instances(&d.path().join("missing")), Vec::<i32>::new());
    }

    fn collect(plan: &ReadPlan, running: &dyn Fn() -> bool) -> Vec<u8> {
        let (tx, mut rx) = mpsc::channel(1024);
        stream(plan, &tx, running).unwrap();
        drop(tx);
        let mut out = Vec::new();
        while let Ok(b) = rx.try_recv() {
            out.extend(b);
        }
        out
    }

    #[test]
    fn reads_rotated_piece_first_then_tails_across_both() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("0.log");
        std::fs::write(d.path().join("0.log.1"), "one\ntwo\n").unwrap();
        std::fs::write(&log, "three\nfour\n").unwrap();
        let plan = |tail_lines| ReadPlan {
            log: log.clone(),
            tail_lines,
            follow: false,
        };
        assert_eq!(
            collect(&plan(None), &|| false),
            b"one\ntwo\nthree\nfour\n".to_vec()
        );
        assert_eq!(collect(&plan(Some(3)), &|| false), b"two\nthree\nfour\n".to_vec());
    }

    #[test]
    fn follow_crosses_a_rotation_and_ends_with_the_instance() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("0.log");
        std::fs::write(&log, "a\n").unwrap();
        let plan = ReadPlan {
            log: log.clone(),
            tail_lines: None,
            follow: true,
        };
        let (tx, mut rx) = mpsc::channel(1024);
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let d2 = done.clone();
        let reader = std::thread::spawn(move || {
            stream(&plan, &tx, &|| !d2.load(std::sync::atomic::Ordering::SeqCst)).unwrap();
        });
        let mut got = Vec::new();
        let mut next = || {
            let b = rx.blocking_recv().unwrap();
            got.extend(b);
            String::from_utf8_lossy(&got).to_string()
        };
        assert_eq!(next(), "a\n");
        use std::io::Write;
        std::fs::OpenOptions::new()
            .append(true)
            .open(&log)
            .unwrap()
            .write_all(b"b\n")
            .unwrap();
        assert_eq!(next(), "a\nb\n");
        // Rotate: the writer renames and starts anew.
        std::fs::rename(&log, d.path().join("0.log.1")).unwrap();
        std::fs::write(&log, "c\n").unwrap();
        assert_eq!(next(), "a\nb\nc\n");
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        reader.join().unwrap();
    }
}
