//! Mount helpers: overlayfs root filesystems, tmpfs, unmounting (all through mount(2)).

use crate::Error;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("path without NUL")
}

fn mount(source: &str, target: &Path, fstype: &str, flags: libc::c_ulong, data: &str) -> Result<(), Error> {
    let (s, t, f, d) = (
        CString::new(source).expect("source"),
        cstr(target),
        CString::new(fstype).expect("fstype"),
        CString::new(data).expect("data"),
    );
    // SAFETY: NUL-terminated strings that live across the call.
    let rc = unsafe { libc::mount(s.as_ptr(), t.as_ptr(), f.as_ptr(), flags, d.as_ptr().cast()) };
    if rc != 0 {
        return Err(Error::io(
            target,
            std::io::Error::other(format!("mount {fstype}: {}", std::io::Error::last_os_error())),
        ));
    }
    Ok(())
}

/// Whether `p` is a mount point (its device differs from its parent's, or it is a bind mount
/// as /proc/self/mountinfo lists it).
pub fn is_mount_point(p: &Path) -> bool {
    let Ok(canon) = p.canonicalize() else { return false };
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|mp| Path::new(&unescape(mp)) == canon)
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// Mounts an overlay at `target`: `lower` bottom first, `upper` and `work` on one filesystem.
pub fn overlay(lower: &[PathBuf], upper: &Path, work: &Path, target: &Path) -> Result<(), Error> {
    for d in [upper, work, target] {
        std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
    }
    // overlayfs lists lower directories top first.
    let lowers: Vec<String> = lower.iter().rev().map(|p| p.display().to_string()).collect();
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        lowers.join(":"),
        upper.display(),
        work.display()
    );
    mount("overlay", target, "overlay", 0, &data)
}

/// Mounts a tmpfs at `target` (`size_bytes` None = the kernel's default, half of RAM).
pub fn tmpfs(target: &Path, size_bytes: Option<u64>, mode: u32) -> Result<(), Error> {
    std::fs::create_dir_all(target).map_err(|e| Error::io(target, e))?;
    let mut data = format!("mode={mode:o}");
    if let Some(s) = size_bytes {
        data.push_str(&format!(",size={s}"));
    }
    mount("tmpfs", target, "tmpfs", libc::MS_NOSUID | libc::MS_NODEV, &data)
}

/// Unmounts `target` (lazily, so a process still inside cannot block teardown) until nothing
/// is mounted there; Ok when nothing was.
pub fn unmount(target: &Path) -> Result<(), Error> {
    while is_mount_point(target) {
        // SAFETY: a valid path.
        if unsafe { libc::umount2(cstr(target).as_ptr(), libc::MNT_DETACH) } != 0 {
            return Err(Error::io(target, std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// Unmounts every mount at or below `dir`, deepest first.
pub fn unmount_all_under(dir: &Path) -> Result<(), Error> {
    let Ok(canon) = dir.canonicalize() else {
        return Ok(());
    };
    let mut points: Vec<PathBuf> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(unescape(m)))
        .filter(|m| m.starts_with(&canon))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    points.dedup();
    for p in points {
        unmount(&p)?;
    }
    Ok(())
}

/// Whether the filesystem holding `p` is a tmpfs.
pub fn is_tmpfs(p: &Path) -> bool {
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    // SAFETY: statfs into a zeroed struct with a valid path.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statfs(cstr(p).as_ptr(), &mut st) };
    rc == 0 && st.f_type as i64 == TMPFS_MAGIC
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_and_tmpfs_mount_and_unmount() {
        let d = tempfile::tempdir().unwrap();
        let (l1, l2) = (d.path().join("l1"), d.path().join("l2"));
        std::fs::create_dir_all(&l1).unwrap();
        std::fs::create_dir_all(&l2).unwrap();
        std::fs::write(l1.join("a"), "bottom").unwrap();
        std::fs::write(l2.join("a"), "top").unwrap();
        let root = d.path().join("root");
        overlay(
            &[l1.clone(), l2],
            &d.path().join("up"),
            &d.path().join("work"),
            &root,
        )
        .unwrap();
        assert!(is_mount_point(&root));
        assert_eq!(std::fs::read_to_string(root.join("a")).unwrap(), "top");
        std::fs::write(root.join("b"), "new").unwrap();
        assert!(d.path().join("up/b").exists() && !l1.join("b").exists());
        let t = root.join("tmp");
        std::fs::create_dir_all(&t).unwrap();
        tmpfs(&t, Some(1 << 20), 0o700).unwrap();
        assert!(is_tmpfs(&t));
        unmount_all_under(d.path()).unwrap();
        assert!(!is_mount_point(&root) && !is_mount_point(&t));
        assert!(!root.join("a").exists());
    }
}
