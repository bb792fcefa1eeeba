//! The container monitor (conmon-like): a small long-lived process per container instance,
//! `berth runtime --root R monitor ... -- RUNTIME ARGS`, started by the agent. It runs the
//! runtime's foreground `run` (the libcontainer helper or runc) with stdout and stderr on pipes,
//! copies both into the container's log file with a size cap and rotation, and when the
//! runtime ends writes the exit status (code, signal, OOM, time) atomically to the exit file.
//!
//! Invariants: the monitor is in a session of its own and has no parent-death signal, so it
//! outlives an agent that is killed or restarted; the exit file appears only once complete
//! (written to a temporary name, then renamed), so a reader sees all of it or nothing; the
//! current log file never grows beyond the cap (`<n>.log` is renamed to `<n>.log.1`, replacing
//! an older one, and a new `<n>.log` begun). The agent learns about an exit from the exit file,
//! whether it was the monitor's parent or adopted it after a restart.
//!
//! It does not know: pods, containers' specs, the API; only paths, a byte cap and a command.

use crate::Error;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Default cap of one container log file before it is rotated.
pub const LOG_BYTES_MAX_DEFAULT: u64 = 10 << 20;
/// Read buffer of the log copier.
const COPY_BUFFER_BYTES: usize = 64 << 10;
/// How long the monitor waits for the pipes to drain after the runtime ended (a process that
/// escaped the container's PID namespace could hold them open forever).
const DRAIN_WAIT: Duration = Duration::from_secs(2);
/// Suffix of the monitor's pid file next to the exit file.
const PID_SUFFIX: &str = "monitor";
/// Extension of the container init's pid file (`run --pid-file`), next to the exit file.
const INIT_PID_EXTENSION: &str = "pid";
/// How often [`wait_started`] looks for the init's pid file.
const START_POLL: Duration = Duration::from_millis(20);
/// The most of the log's tail quoted as the message of a start that failed.
const START_ERROR_BYTES_MAX: usize = 1024;

/// How a container instance ended, as the monitor saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    /// The exit code; 128 + signal when the container was killed (runc's convention).
    pub exit_code: i32,
    /// The signal that killed it (0 when it exited).
    pub signal: i32,
    /// The container's cgroup saw an OOM kill.
    pub oom_killed: bool,
    /// Wall-clock milliseconds since the epoch when the monitor saw the end.
    pub finished_at_ms: u64,
}

/// Where a container instance's monitor keeps its files: `<state_root>/<id>.exit` and
/// `<state_root>/<id>.monitor` (its pid), next to the runtime's own `<state_root>/<id>/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitorFiles {
    pub exit_file: PathBuf,
    pub pid_file: PathBuf,
}

impl MonitorFiles {
    pub fn new(state_root: &Path, id: &str) -> MonitorFiles {
        MonitorFiles {
            exit_file: state_root.join(format!("{id}.exit")),
            pid_file: state_root.join(format!("{id}.{PID_SUFFIX}")),
        }
    }

    /// `<state_root>/<id>.pid`: the container init's pid, written by the runtime's `run`
    /// (`--pid-file`) once the process exists; the container counts as started from then on.
    pub fn init_pid_file(&self) -> PathBuf {
        self.exit_file.with_extension(INIT_PID_EXTENSION)
    }

    /// The container init's pid, once the runtime wrote it.
    pub fn read_init_pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.init_pid_file())
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Removes all three (before a new instance starts; after its exit was handled).
    pub fn clear(&self) {
        for p in [&self.exit_file, &self.pid_file, &self.init_pid_file()] {
            let _ = std::fs::remove_file(p);
        }
    }

    /// The exit status, once the monitor wrote it.
    pub fn read_exit(&self) -> Option<ExitStatus> {
        let b = std::fs::read(&self.exit_file).ok()?;
        serde_json::from_slice(&b).ok()
    }

    /// The monitor's pid, when it still runs (checked against its command line, which names
    /// the exit file, so a reused pid is not mistaken for it).
    pub fn live_pid(&self) -> Option<i32> {
        let pid: i32 = std::fs::read_to_string(&self.pid_file)
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let needle = self.exit_file.as_os_str().as_encoded_bytes();
        cmdline.split(|b| *b == 0).any(|arg| arg == needle).then_some(pid)
    }
}

/// Writes `bytes` to `path` atomically (temporary file in the same directory, fsync, rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let r = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r.map_err(|e| Error::io(path, e))
}

/// A container's log file with a size cap: `path` never exceeds `bytes_max`; when the next
/// write would cross it, `path` becomes `path.1` (replacing the older piece) and a new `path`
/// begins. A piece is cut at the last newline that fits, so lines stay whole unless a single
/// line is longer than the cap.
pub struct RotatingLog {
    path: PathBuf,
    bytes_max: u64,
    file: File,
    written: u64,
}

fn open_append(path: &Path) -> Result<File, Error> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::io(path, e))
}

/// `<path>.1`.
pub fn rotated_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".1");
    PathBuf::from(s)
}

impl RotatingLog {
    pub fn open(path: &Path, bytes_max: u64) -> Result<RotatingLog, Error> {
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
        }
        let file = open_append(path)?;
        let written = file.metadata().map_err(|e| Error::io(path, e))?.len();
        Ok(RotatingLog {
            path: path.to_path_buf(),
            bytes_max: bytes_max.max(1),
            file,
            written,
        })
    }

    fn rotate(&mut self) -> Result<(), Error> {
        let old = rotated_path(&self.path);
        std::fs::rename(&self.path, &old).map_err(|e| Error::io(&old, e))?;
        self.file = open_append(&self.path)?;
        self.written = 0;
        Ok(())
    }

    /// Appends `buf`, rotating as often as needed.
    pub fn write(&mut self, mut buf: &[u8]) -> Result<(), Error> {
        while !buf.is_empty() {
            let room = (self.bytes_max - self.written.min(self.bytes_max)) as usize;
            if buf.len() <= room {
                self.write_piece(buf)?;
                return Ok(());
            }
            // Cut after the last newline that fits; a line longer than the room is cut
            // where the room ends when the file is empty (else the file is rotated first).
            let cut = match buf[..room].iter().rposition(|b| *b == b'\n') {
                Some(i) => i + 1,
                None if self.written == 0 => room,
                None => 0,
            };
            self.write_piece(&buf[..cut])?;
            buf = &buf[cut..];
            self.rotate()?;
        }
        Ok(())
    }

    fn write_piece(&mut self, piece: &[u8]) -> Result<(), Error> {
        if piece.is_empty() {
            return Ok(());
        }
        self.file.write_all(piece).map_err(|e| Error::io(&self.path, e))?;
        self.written += piece.len() as u64;
        Ok(())
    }
}

/// What the monitor is told (from its command line).
#[derive(Debug, Clone)]
pub struct MonitorArgs {
    pub log_path: PathBuf,
    pub log_bytes_max: u64,
    pub files: MonitorFiles,
    /// The cgroup file with the OOM counter (`memory.events` or `memory.oom_control`) and its key.
    pub oom_counter: Option<(PathBuf, String)>,
    /// The runtime's foreground run command: program, then arguments.
    pub command: Vec<String>,
}

fn pipe() -> Result<(OwnedFd, OwnedFd), Error> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two fds we then own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(Error::Runtime(format!(
            "pipe: {}",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: both fds were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn oom_count(counter: &Option<(PathBuf, String)>) -> u64 {
    let Some((file, key)) = counter else { return 0 };
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key.as_str())?.trim().parse().ok())
        .unwrap_or(0)
}

/// Puts the calling process in a session of its own (the monitor's first step, done by its
/// command): a signal to the agent's process group (Ctrl-C, a service manager stopping the
/// agent) then reaches neither the monitor nor the container.
pub fn detach_session() {
    // SAFETY: setsid has no preconditions; it fails only for a group leader, which is fine.
    unsafe { libc::setsid() };
}

/// Runs the monitor to the end; returns its exit code (the container's).
pub fn run(a: MonitorArgs) -> i32 {
    let log = match RotatingLog::open(&a.log_path, a.log_bytes_max) {
        Ok(l) => Arc::new(Mutex::new(l)),
        Err(e) => {
            eprintln!("berth monitor: {e}");
            return write_exit(&a, 128, 0);
        }
    };
    let note = |msg: String| {
        let _ = log
            .lock()
            .expect("log lock")
            .write(format!("berth monitor: {msg}\n").as_bytes());
    };
    if let Err(e) = write_atomic(&a.files.pid_file, std::process::id().to_string().as_bytes()) {
        note(e.to_string());
    }
    let code = match run_child(&a, &log) {
        Ok(code) => code,
        Err(e) => {
            note(e.to_string());
            128
        }
    };
    let signal = if code > 128 { code - 128 } else { 0 };
    write_exit(&a, code, signal)
}

fn write_exit(a: &MonitorArgs, code: i32, signal: i32) -> i32 {
    let st = ExitStatus {
        exit_code: code,
        signal,
        oom_killed: oom_count(&a.oom_counter) > 0,
        finished_at_ms: now_ms(),
    };
    let body = serde_json::to_vec(&st).expect("exit status serializes");
    if let Err(e) = write_atomic(&a.files.exit_file, &body) {
        eprintln!("berth monitor: {e}");
    }
    code
}

/// Starts the runtime with its output on pipes, copies them until the runtime has ended.
fn run_child(a: &MonitorArgs, log: &Arc<Mutex<RotatingLog>>) -> Result<i32, Error> {
    let (prog, args) = a
        .command
        .split_first()
        .ok_or_else(|| Error::Runtime("monitor: no runtime command".into()))?;
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let mut child = std::process::Command::new(prog)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(out_w)
        .stderr(err_w)
        .spawn()
        .map_err(|e| Error::Runtime(format!("{prog}: {e}")))?;
    // The write ends now live only in the runtime and the container: EOF once they are gone.
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    for r in [out_r, err_r] {
        let (log, done) = (log.clone(), done_tx.clone());
        std::thread::spawn(move || {
            copy(File::from(r), &log);
            let _ = done.send(());
        });
    }
    drop(done_tx);
    let st = child.wait().map_err(|e| Error::Runtime(format!("wait: {e}")))?;
    let deadline = std::time::Instant::now() + DRAIN_WAIT;
    for _ in 0..2 {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if done_rx.recv_timeout(left).is_err() {
            break;
        }
    }
    use std::os::unix::process::ExitStatusExt;
    Ok(st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0)))
}

fn copy(mut r: File, log: &Mutex<RotatingLog>) {
    let mut buf = vec![0u8; COPY_BUFFER_BYTES];
    loop {
        match r.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if let Err(e) = log.lock().expect("log lock").write(&buf[..n]) {
                    // Keep draining (a blocked pipe would stall the container) but say why once.
                    eprintln!("berth monitor: {e}");
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// Waits until the runtime's `run` has created the container's init process (its pid file
/// appeared): Ok then. An Err when the runtime ended first (the message is the tail of the
/// log, where the runtime's own error went), when the monitor is gone without an exit file, or
/// after `timeout`. The pid file is looked at first, so a container that started and ended at
/// once still counts as started.
pub async fn wait_started(files: &MonitorFiles, log_path: &Path, timeout: Duration) -> Result<(), Error> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if files.read_init_pid().is_some() {
            return Ok(());
        }
        if let Some(st) = files.read_exit() {
            let tail = log_tail(log_path, START_ERROR_BYTES_MAX);
            return Err(Error::Runtime(if tail.is_empty() {
                format!(
                    "the runtime exited with code {} before the container started",
                    st.exit_code
                )
            } else {
                tail
            }));
        }
        if files.pid_file.exists() && files.live_pid().is_none() && files.read_exit().is_none() {
            return Err(Error::Runtime(
                "the container's monitor ended before the container started".into(),
            ));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::Runtime(format!(
                "the container's process did not start within {}s",
                timeout.as_secs()
            )));
        }
        tokio::time::sleep(START_POLL).await;
    }
}

/// The last lines of `path`, at most `bytes_max` bytes, trimmed.
fn log_tail(path: &Path, bytes_max: usize) -> String {
    let b = std::fs::read(path).unwrap_or_default();
    let from = b.len().saturating_sub(bytes_max);
    String::from_utf8_lossy(&b[from..]).trim().to_string()
}

/// Waits for an adopted monitor (not the caller's child) to end, through a pidfd, then reads
/// its exit file. None when the monitor is gone without one (killed, or the node rebooted).
pub async fn wait_adopted(files: &MonitorFiles) -> Option<ExitStatus> {
    if let Some(st) = files.read_exit() {
        return Some(st);
    }
    let Some(pid) = files.live_pid() else {
        return files.read_exit();
    };
    // SAFETY: pidfd_open returns a new fd we own, or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
    if fd >= 0 {
        // SAFETY: fd was just returned by pidfd_open.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: an OwnedFd owned by the AsyncFd keeps that one fd open until it is dropped.
        let registered =
            unsafe { tokio::io::unix::AsyncFd::register_with_interest(owned, tokio::io::Interest::READABLE) };
        match registered {
            Ok(afd) => {
                // A pidfd turns readable when the process has exited.
                let _ = afd.readable().await;
            }
            Err(_) => poll_until_gone(files).await,
        }
    } else {
        poll_until_gone(files).await;
    }
    files.read_exit()
}

/// Fallback without pidfd: look every [`ADOPTED_POLL`].
async fn poll_until_gone(files: &MonitorFiles) {
    const ADOPTED_POLL: Duration = Duration::from_millis(500);
    while files.live_pid().is_some() && files.read_exit().is_none() {
        tokio::time::sleep(ADOPTED_POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(p: &Path) -> String {
        std::fs::read_to_string(p).unwrap_or_default()
    }

    #[test]
    fn log_rotates_at_the_cap_keeping_whole_lines() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("c/0.log");
        let mut l = RotatingLog::open(&p, 10).unwrap();
        l.write(b"aaaa\nbbbb\n").unwrap(); // exactly the cap
        l.write(b"cc\n").unwrap(); // rotates
        assert_eq!(read(&rotated_path(&p)), "aaaa\nbbbb\n");
        assert_eq!(read(&p), "cc\n");
        l.write(b"dddd\neeee\n").unwrap(); // "cc\ndddd\n" fits, "eeee\n" starts a new piece
        assert_eq!(read(&rotated_path(&p)), "cc\ndddd\n");
        assert_eq!(read(&p), "eeee\n");
        // A line longer than the cap is cut at the cap.
        l.write(b"0123456789012345\n").unwrap();
        assert!(std::fs::metadata(&p).unwrap().len() <= 10);
        assert!(std::fs::metadata(rotated_path(&p)).unwrap().len() <= 10);
    }

    #[test]
    fn reopened_log_counts_what_is_there() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("0.log");
        std::fs::write(&p, "12345678\n").unwrap();
        let mut l = RotatingLog::open(&p, 10).unwrap();
        l.write(b"ab\n").unwrap();
        assert_eq!(read(&rotated_path(&p)), "12345678\n");
        assert_eq!(read(&p), "ab\n");
    }

    #[test]
    fn monitor_copies_output_and_writes_the_exit_file() {
        let d = tempfile::tempdir().unwrap();
        let files = MonitorFiles::new(d.path(), "c");
        let log = d.path().join("logs/0.log");
        let code = run(MonitorArgs {
            log_path: log.clone(),
            log_bytes_max: 1 << 20,
            files: files.clone(),
            oom_counter: None,
            command: vec!["sh".into(), "-c".into(), "echo out; echo err >&2; exit 3".into()],
        });
        assert_eq!(code, 3);
        let l = read(&log);
        assert!(l.contains("out\n") && l.contains("err\n"), "{l:?}");
        let st = files.read_exit().expect("exit file");
        assert_eq!((st.exit_code, st.signal, st.oom_killed), (3, 0, false));
        assert!(st.finished_at_ms > 0);
        // The monitor has ended: its pid no longer names a live monitor.
        assert_eq!(files.live_pid(), None);
    }

    /// An adopted monitor (here a shell named like one: its command line holds the exit file's
    /// path) is waited for through a pidfd; its exit file is read when it is gone.
    #[tokio::test]
    async fn adopted_monitor_is_waited_for_then_its_exit_file_read() {
        let d = tempfile::tempdir().unwrap();
        let files = MonitorFiles::new(d.path(), "c");
        assert_eq!(wait_adopted(&files).await, None, "nothing to adopt");
        let body = r#"{"exit_code":2,"signal":0,"oom_killed":false,"finished_at_ms":7}"#;
        let script = format!("read _; echo '{body}' > \"$0\"");
        let mut child = std::process::Command::new("sh")
            .args(["-c", &script])
            .arg(&files.exit_file)
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::fs::write(&files.pid_file, child.id().to_string()).unwrap();
        // Until the child has exec'd sh, its command line is still this test's.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while files.live_pid().is_none() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(files.live_pid(), Some(child.id() as i32));
        let waiter = tokio::spawn({
            let files = files.clone();
            async move { wait_adopted(&files).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "still running: no exit yet");
        drop(child.stdin.take()); // the "container" ends
        let st = waiter.await.unwrap().expect("exit status");
        assert_eq!((st.exit_code, st.finished_at_ms), (2, 7));
        child.wait().unwrap();
    }

    fn monitor_in_thread(files: &MonitorFiles, log: &Path, script: String) -> std::thread::JoinHandle<i32> {
        // The monitor runs in this test's thread: its pid (this process) would not name a live
        // monitor, so it writes it elsewhere and the waiter never finds a dead monitor.
        let mut own = files.clone();
        own.pid_file = files.pid_file.with_extension("thread");
        let a = MonitorArgs {
            log_path: log.to_path_buf(),
            log_bytes_max: 1 << 20,
            files: own,
            oom_counter: None,
            command: vec!["sh".into(), "-c".into(), script],
        };
        std::thread::spawn(move || run(a))
    }

    /// A runtime that fails before the process exists (no pid file) is a start error carrying
    /// the runtime's message; one that wrote the pid file is started, even if it ended at once.
    #[tokio::test]
    async fn started_only_once_the_init_pid_file_exists() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("0.log");
        let files = MonitorFiles::new(d.path(), "bad");
        let t = monitor_in_thread(
            &files,
            &log,
            "echo 'create: executable not found' >&2; exit 1".into(),
        );
        let e = wait_started(&files, &log, Duration::from_secs(60))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("executable not found"), "{e}");
        assert_eq!(t.join().unwrap(), 1);

        let files = MonitorFiles::new(d.path(), "good");
        let pid_file = files.init_pid_file();
        assert_eq!(pid_file, d.path().join("good.pid"));
        let script = format!(
            "sleep 0.2; echo $$ > {0}.tmp; mv {0}.tmp {0}; exit 0",
            pid_file.display()
        );
        let t = monitor_in_thread(&files, &log, script);
        wait_started(&files, &log, Duration::from_secs(60)).await.unwrap();
        assert!(files.read_init_pid().is_some());
        assert_eq!(t.join().unwrap(), 0);
        // Started, then ended: still a start that happened.
        wait_started(&files, &log, Duration::from_secs(60)).await.unwrap();
        files.clear();
        assert!(!pid_file.exists() && !files.exit_file.exists());
    }

    /// Neither a pid file nor an exit: the wait ends at its bound.
    #[tokio::test]
    async fn waiting_for_the_start_is_bounded() {
        let d = tempfile::tempdir().unwrap();
        let files = MonitorFiles::new(d.path(), "slow");
        let e = wait_started(&files, &d.path().join("0.log"), Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("did not start within 1s"), "{e}");
    }

    #[test]
    fn exit_file_carries_a_signal_and_the_cgroup_oom_count() {
        let d = tempfile::tempdir().unwrap();
        let files = MonitorFiles::new(d.path(), "c");
        // v1's memory.oom_control shape: the counter is read when the runtime has ended.
        let counter = d.path().join("memory.oom_control");
        std::fs::write(&counter, "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n").unwrap();
        let code = run(MonitorArgs {
            log_path: d.path().join("0.log"),
            log_bytes_max: 1 << 20,
            files: files.clone(),
            oom_counter: Some((counter, "oom_kill".into())),
            // As a runtime reports a container killed by SIGKILL.
            command: vec!["sh".into(), "-c".into(), "exit 137".into()],
        });
        assert_eq!(code, 137);
        let st = files.read_exit().unwrap();
        assert_eq!((st.exit_code, st.signal, st.oom_killed), (137, 9, true));
    }
}
