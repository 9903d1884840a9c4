//! A tmpfs of a test's own (tests/restore_volatile.rs, tests/openmpi.rs):
//! mounted at a fresh directory, unmounted (by its path) on drop.

use std::path::PathBuf;
use std::process::Command;

use super::fresh_dir;

/// A tmpfs mounted at a fresh directory; unmounted (by its path) on drop.
pub struct Tmpfs {
    pub path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (mount's `size=`, e.g. "64m"), mode 1777,
    /// at a fresh directory named after `tag`.
    pub fn mount(tag: &str, size: &str) -> Tmpfs {
        let path = fresh_dir(tag);
        let st = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("mode=1777,size={size}"),
                "tmpfs",
            ])
            .arg(&path)
            .status()
            .expect("run mount");
        assert!(st.success(), "mount -t tmpfs on {}: {st}", path.display());
        Tmpfs { path }
    }

    /// Removes everything in it (files, directories, sockets, FIFOs).
    pub fn wipe(&self) {
        for e in std::fs::read_dir(&self.path).expect("list the tmpfs") {
            let p = e.expect("entry").path();
            if std::fs::symlink_metadata(&p).expect("lstat").is_dir() {
                std::fs::remove_dir_all(&p).expect("wipe a directory");
            } else {
                std::fs::remove_file(&p).expect("wipe a file");
            }
        }
    }
}

impl Drop for Tmpfs {
    /// Unmounts it; while processes killed just before still hold files
    /// there (busy), tries again for up to 2 s, then detaches it lazily
    /// (`umount -l`), so that a failed test never leaves it mounted.
    fn drop(&mut self) {
        let quiet = |c: &mut Command| {
            c.stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        let mut gone = false;
        for _ in 0..40 {
            if quiet(Command::new("umount").arg(&self.path)) {
                gone = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        if !gone {
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
        let _ = std::fs::remove_dir(&self.path);
    }
}
