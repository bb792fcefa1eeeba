//! A busybox image from the machine's static busybox (Debian's `busybox-static`), so demos and
//! tests run pods offline: a root filesystem of the binary, a symlink per applet and the few
//! files a shell expects, packed into the store by [`super::store::ImageStore::build_from_rootfs`].

use crate::Error;
use std::path::Path;

/// Where Debian's busybox-static installs the binary.
pub const BUSYBOX_BIN: &str = "/bin/busybox";
/// The Debian package providing [`BUSYBOX_BIN`].
pub const BUSYBOX_PACKAGE: &str = "busybox-static";

/// Fills `dir` (created if missing) with a busybox root filesystem from `busybox_bin`.
pub fn rootfs(dir: &Path, busybox_bin: &Path) -> Result<(), Error> {
    if !busybox_bin.is_file() {
        return Err(Error::Config(format!(
            "{} not found: install the Debian package {BUSYBOX_PACKAGE} (scripts/deps.sh)",
            busybox_bin.display()
        )));
    }
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).map_err(|e| Error::io(&bin, e))?;
    let target = bin.join("busybox");
    std::fs::copy(busybox_bin, &target).map_err(|e| Error::io(&target, e))?;
    let list = std::process::Command::new(busybox_bin)
        .arg("--list")
        .output()
        .map_err(|e| Error::io(busybox_bin, e))?;
    if !list.status.success() {
        return Err(Error::Config(format!("{} --list failed", busybox_bin.display())));
    }
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let link = bin.join(applet);
        if applet == "busybox" || applet.contains('/') || link.exists() {
            continue;
        }
        std::os::unix::fs::symlink("busybox", &link).map_err(|e| Error::io(&link, e))?;
    }
    for d in ["etc", "tmp", "proc", "sys", "dev", "root"] {
        let p = dir.join(d);
        std::fs::create_dir_all(&p).map_err(|e| Error::io(&p, e))?;
    }
    let passwd = dir.join("etc/passwd");
    std::fs::write(&passwd, "root:x:0:0:root:/root:/bin/sh\n").map_err(|e| Error::io(&passwd, e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_busybox_names_the_package() {
        let d = tempfile::tempdir().unwrap();
        let e = rootfs(d.path(), Path::new("/nonexistent/busybox")).unwrap_err();
        assert!(e.to_string().contains(BUSYBOX_PACKAGE), "{e}");
    }

    #[test]
    fn rootfs_has_the_binary_and_applet_links() {
        if !Path::new(BUSYBOX_BIN).is_file() {
            panic!("{BUSYBOX_BIN} missing: install {BUSYBOX_PACKAGE} (scripts/deps.sh)");
        }
        let d = tempfile::tempdir().unwrap();
        rootfs(d.path(), Path::new(BUSYBOX_BIN)).unwrap();
        assert!(d.path().join("bin/busybox").is_file());
        assert_eq!(
            std::fs::read_link(d.path().join("bin/sh")).unwrap(),
            Path::new("busybox")
        );
        assert!(d.path().join("etc/passwd").is_file());
    }
}
