//! The feature probes' results, kept once per boot (issue 15): the probes
//! that load cairn's BPF programs, fork and seize a child or arm a
//! userfaultfd cost a small dump most of its time, and their answer cannot
//! change until the machine reboots, for the same kernel, the same cairn
//! binary, the same user and pid namespaces and the same capabilities.
//!
//! The cache is `/run/cairn/probes.v1` (tmpfs: gone at reboot anyway). It
//! is used only by root (euid 0), in a directory of root's with mode 0700,
//! and only if the file is a regular file (opened with `O_NOFOLLOW`) of
//! root's with mode 0600 whose key matches this run exactly and that
//! parses completely; anything else is ignored (the reason logged) and
//! replaced: the new file is created exclusively under a random name and
//! renamed over the old one.
//!
//! Only probes of the kernel's interfaces are kept ([`CACHED`]); the ones
//! that read runtime state (capabilities, ptrace_scope, the pid namespace
//! cairn runs in, cgroup mounts, the network namespace's TCP_REPAIR) run
//! every time: they cost a few system calls each.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags};

use super::probe::Feature;
use super::safefs;

/// The directory of the cache.
pub const DIR: &str = "/run/cairn";
/// The cache file's name in [`DIR`].
pub const FILE: &str = "probes.v1";
/// First line of the file.
const MAGIC: &str = "cairn feature probes v1";

/// The probes whose answer is kept: kernel interfaces only.
pub const CACHED: [&str; 16] = [
    "btf",
    "bpf",
    "bpf_iter",
    "bpf_iter_task_vma",
    "bpf_iter_task_file",
    "bpf_tp_btf",
    "bpf_ringbuf",
    "pagemap_scan",
    "uffd_wp_async",
    "soft_dirty",
    "clone3_set_tid",
    "ns_last_pid_writable",
    "ptrace_get_rseq_conf",
    "pidfd_getfd",
    "kcmp",
    "process_vm_readv",
];

/// What the cached answers depend on; a cache is used only if every
/// field is the same.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    pub boot_id: String,
    pub kernel: String,
    pub version: String,
    /// The cairn binary: device, inode, size, mtime (a rebuilt binary
    /// may load other BPF programs).
    pub exe: String,
    /// Inodes of cairn's user and pid namespaces.
    pub userns: u64,
    pub pidns: u64,
    /// The effective capability set (CapEff of /proc/self/status).
    pub capeff: String,
}

fn read_trim(path: &str) -> io::Result<String> {
    Ok(std::fs::read_to_string(path)?.trim().to_string())
}

impl Key {
    /// The key of this run.
    pub fn current(kernel: &str) -> io::Result<Key> {
        let exe = std::fs::metadata("/proc/self/exe")?;
        let status = std::fs::read_to_string("/proc/self/status")?;
        let capeff = status
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .map(|v| v.trim().to_string())
            .ok_or_else(|| io::Error::other("no CapEff in /proc/self/status"))?;
        Ok(Key {
            boot_id: read_trim("/proc/sys/kernel/random/boot_id")?,
            kernel: kernel.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            exe: format!(
                "{}:{}:{}:{}.{}",
                exe.dev(),
                exe.ino(),
                exe.size(),
                exe.mtime(),
                exe.mtime_nsec()
            ),
            userns: std::fs::metadata("/proc/self/ns/user")?.ino(),
            pidns: std::fs::metadata("/proc/self/ns/pid")?.ino(),
            capeff,
        })
    }

    fn lines(&self) -> Vec<String> {
        vec![
            MAGIC.to_string(),
            format!("boot_id {}", self.boot_id),
            format!("kernel {}", self.kernel),
            format!("version {}", self.version),
            format!("exe {}", self.exe),
            format!("userns {}", self.userns),
            format!("pidns {}", self.pidns),
            format!("capeff {}", self.capeff),
        ]
    }
}

/// One line of free text: no tab, no line break.
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c == '\t' || c == '\n' || c == '\r' {
                ' '
            } else {
                c
            }
        })
        .collect()
}

/// The file's contents for `key` and the [`CACHED`] features of `all`
/// (which must hold every one of them).
pub fn render(key: &Key, all: &[(&str, &Feature)]) -> String {
    let mut out = key.lines().join("\n");
    out.push('\n');
    for name in CACHED {
        if let Some((_, f)) = all.iter().find(|(n, _)| *n == name) {
            out.push_str(&format!(
                "feature\t{name}\t{}\t{}\n",
                u8::from(f.available),
                clean(&f.detail)
            ));
        }
    }
    out
}

/// The cached features of `text` if its key is `key` and it holds every
/// [`CACHED`] feature and nothing else; else why not.
pub fn parse(text: &str, key: &Key) -> Result<HashMap<String, Feature>, String> {
    let want = key.lines();
    let mut lines = text.lines();
    for w in &want {
        match lines.next() {
            Some(l) if l == w => {}
            Some(l) => {
                let field = w.split(' ').next().unwrap_or("");
                return Err(format!(
                    "written for another {field} ({l:?}, this run: {w:?})"
                ));
            }
            None => return Err("truncated key".into()),
        }
    }
    let mut out = HashMap::new();
    for l in lines {
        let mut it = l.splitn(4, '\t');
        let (Some("feature"), Some(name), Some(avail), Some(detail)) =
            (it.next(), it.next(), it.next(), it.next())
        else {
            return Err(format!("unreadable line {l:?}"));
        };
        if !CACHED.contains(&name) {
            return Err(format!("unknown feature {name:?}"));
        }
        let available = match avail {
            "1" => true,
            "0" => false,
            _ => return Err(format!("feature {name}: {avail:?} is neither 0 nor 1")),
        };
        if detail.is_empty() {
            return Err(format!("feature {name} without a detail"));
        }
        let f = Feature {
            available,
            detail: detail.to_string(),
        };
        if out.insert(name.to_string(), f).is_some() {
            return Err(format!("feature {name} twice"));
        }
    }
    if let Some(m) = CACHED.iter().find(|n| !out.contains_key(**n)) {
        return Err(format!("feature {m} missing"));
    }
    Ok(out)
}

/// The cache directory: `CAIRN_PROBE_CACHE_DIR` (for tests; the same
/// checks apply) or [`DIR`].
pub fn dir() -> PathBuf {
    std::env::var_os("CAIRN_PROBE_CACHE_DIR")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from(DIR), PathBuf::from)
}

/// Opens (making it if missing, mode 0700) the cache directory `dir` and
/// checks it: a directory (never a link) of root's, not open to group or
/// others.
fn open_dir(dir: &Path) -> Result<OwnedFd, String> {
    let (parent, name) = safefs::open_parent_dir(dir).map_err(|e| e.to_string())?;
    match rfs::mkdirat(&parent, name.as_os_str(), Mode::from_raw_mode(0o700)) {
        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
        Err(e) => return Err(format!("mkdir: {e}")),
    }
    let fd = safefs::openat_nofollow(&parent, &name, OFlags::RDONLY | OFlags::DIRECTORY, 0)
        .map_err(|e| e.to_string())?;
    let st = rfs::fstat(&fd).map_err(|e| format!("fstat: {e}"))?;
    if st.st_uid != 0 || st.st_mode & 0o077 != 0 {
        return Err(format!(
            "the directory is owned by uid {} with mode {:04o} (want root, 0700)",
            st.st_uid,
            st.st_mode & 0o7777
        ));
    }
    Ok(fd)
}

/// Reads the cache file in the open directory `dir` if it is a regular
/// file of root's with mode 0600 and at most 64 KiB.
fn read_file(dir: impl AsFd) -> Result<String, String> {
    let fd = rfs::openat(
        dir,
        FILE,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| match e {
        rustix::io::Errno::LOOP => "it is a symbolic link".to_string(),
        rustix::io::Errno::NOENT => "no cache yet".to_string(),
        e => format!("open: {e}"),
    })?;
    let st = rfs::fstat(&fd).map_err(|e| format!("fstat: {e}"))?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err("not a regular file".into());
    }
    if st.st_uid != 0 {
        return Err(format!("owned by uid {}, not root", st.st_uid));
    }
    if st.st_mode & 0o7777 != 0o600 {
        return Err(format!("mode {:04o}, not 0600", st.st_mode & 0o7777));
    }
    let mut text = String::new();
    std::fs::File::from(fd)
        .take(64 << 10)
        .read_to_string(&mut text)
        .map_err(|e| format!("read: {e}"))?;
    Ok(text)
}

/// The cached features for `key` from the cache directory `dir`, or why
/// there are none.
pub fn load(dir: &Path, key: &Key) -> Result<HashMap<String, Feature>, String> {
    if !rustix::process::geteuid().is_root() {
        return Err("cairn does not run as root".into());
    }
    let fd = open_dir(dir)?;
    parse(&read_file(&fd)?, key)
}

/// Writes `text` as the cache file of `dir`: created exclusively
/// (`O_EXCL|O_NOFOLLOW`, mode 0600) under a random name, then renamed
/// over [`FILE`] (a link there is replaced, never followed).
pub fn store(dir: &Path, text: &str) -> Result<(), String> {
    if !rustix::process::geteuid().is_root() {
        return Err("cairn does not run as root".into());
    }
    let fd = open_dir(dir)?;
    let tmp = format!(
        ".{FILE}.{}-{}",
        std::process::id(),
        safefs::random_hex().map_err(|e| e.to_string())?
    );
    let mut f = safefs::create_excl(&fd, OsStr::new(&tmp), 0o600).map_err(|e| e.to_string())?;
    let r = f
        .write_all(text.as_bytes())
        .map_err(|e| format!("write: {e}"))
        .and_then(|()| {
            rfs::renameat(&fd, tmp.as_str(), &fd, FILE).map_err(|e| format!("rename: {e}"))
        });
    if r.is_err() {
        let _ = rfs::unlinkat(&fd, tmp.as_str(), AtFlags::empty());
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn key() -> Key {
        Key::current("6.18.0-test").unwrap()
    }

    fn features() -> Vec<(String, Feature)> {
        CACHED
            .iter()
            .enumerate()
            .map(|(i, n)| {
                (
                    n.to_string(),
                    Feature {
                        available: i % 2 == 0,
                        detail: format!("detail\tof {n}\n"),
                    },
                )
            })
            .collect()
    }

    fn text(k: &Key) -> String {
        let f = features();
        let all: Vec<(&str, &Feature)> = f.iter().map(|(n, f)| (n.as_str(), f)).collect();
        render(k, &all)
    }

    /// A fresh cache directory (mode 0700) in a temporary directory.
    fn tmpdir(tag: &str) -> PathBuf {
        let base = std::env::temp_dir().join(format!(
            "cairn-probe-cache-{tag}-{}-{}",
            std::process::id(),
            safefs::random_hex().unwrap()
        ));
        std::fs::create_dir(&base).unwrap();
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o700)).unwrap();
        base.join("c")
    }

    fn cleanup(d: &Path) {
        let _ = std::fs::remove_dir_all(d.parent().unwrap());
    }

    fn root() -> bool {
        rustix::process::geteuid().is_root()
    }

    #[test]
    fn round_trip() {
        let k = key();
        let m = parse(&text(&k), &k).unwrap();
        assert_eq!(m.len(), CACHED.len());
        for (n, f) in features() {
            assert_eq!(m[&n].available, f.available, "{n}");
            assert_eq!(m[&n].detail, clean(&f.detail), "{n}");
        }
    }

    #[test]
    fn another_boot_kernel_or_capability_set_is_ignored() {
        let k = key();
        let t = text(&k);
        let mut other = k.clone();
        other.boot_id = "00000000-0000-0000-0000-000000000000".into();
        let e = parse(&t, &other).unwrap_err();
        assert!(e.contains("boot_id"), "{e}");
        let mut other = k.clone();
        other.kernel = "5.4.0".into();
        assert!(parse(&t, &other).unwrap_err().contains("kernel"));
        let mut other = k.clone();
        other.capeff = "0000000000000000".into();
        assert!(parse(&t, &other).unwrap_err().contains("capeff"));
        let mut other = k;
        other.exe = "1:2:3:4.5".into();
        assert!(parse(&t, &other).unwrap_err().contains("exe"));
    }

    #[test]
    fn garbage_is_ignored() {
        let k = key();
        let t = text(&k);
        assert!(parse("", &k).is_err());
        assert!(parse(&t[..t.len() / 2], &k).is_err());
        let missing: String = t
            .lines()
            .filter(|l| !l.contains("\tkcmp\t"))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(parse(&missing, &k).unwrap_err().contains("kcmp"));
        let bad = t.replace("feature\tbtf\t1", "feature\tbtf\tyes");
        assert_ne!(bad, t);
        assert!(parse(&bad, &k).is_err());
        let extra = format!("{t}feature\tnonsense\t1\tx\n");
        assert!(parse(&extra, &k).unwrap_err().contains("nonsense"));
    }

    #[test]
    fn store_then_load() {
        if !root() {
            return;
        }
        let d = tmpdir("ok");
        let k = key();
        assert_eq!(load(&d, &k).unwrap_err(), "no cache yet");
        store(&d, &text(&k)).unwrap();
        let st = std::fs::symlink_metadata(d.join(FILE)).unwrap();
        assert_eq!(st.mode() & 0o7777, 0o600);
        assert_eq!(std::fs::metadata(&d).unwrap().mode() & 0o7777, 0o700);
        assert_eq!(load(&d, &k).unwrap().len(), CACHED.len());
        // Only the cache file is left (no temporary).
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1);
        cleanup(&d);
    }

    #[test]
    fn bad_owner_is_ignored_and_rewritten() {
        if !root() {
            return;
        }
        let d = tmpdir("owner");
        let k = key();
        store(&d, &text(&k)).unwrap();
        std::os::unix::fs::chown(d.join(FILE), Some(65534), None).unwrap();
        let e = load(&d, &k).unwrap_err();
        assert!(e.contains("owned by uid 65534"), "{e}");
        store(&d, &text(&k)).unwrap();
        assert_eq!(std::fs::metadata(d.join(FILE)).unwrap().uid(), 0);
        assert!(load(&d, &k).is_ok());
        cleanup(&d);
    }

    #[test]
    fn wrong_mode_is_ignored() {
        if !root() {
            return;
        }
        let d = tmpdir("mode");
        let k = key();
        store(&d, &text(&k)).unwrap();
        std::fs::set_permissions(d.join(FILE), std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(load(&d, &k).unwrap_err().contains("mode 0644"));
        cleanup(&d);
    }

    #[test]
    fn symlink_is_ignored_and_replaced_not_followed() {
        if !root() {
            return;
        }
        let d = tmpdir("link");
        let k = key();
        store(&d, &text(&k)).unwrap();
        // A valid cache elsewhere, and the cache name a link to it.
        let real = d.parent().unwrap().join("elsewhere");
        std::fs::rename(d.join(FILE), &real).unwrap();
        std::os::unix::fs::symlink(&real, d.join(FILE)).unwrap();
        assert_eq!(load(&d, &k).unwrap_err(), "it is a symbolic link");
        store(&d, "x").unwrap();
        // The link was replaced; its target is untouched.
        assert!(std::fs::symlink_metadata(d.join(FILE)).unwrap().is_file());
        assert!(load(&real.parent().unwrap().join("c"), &k).is_err());
        assert_eq!(std::fs::read_to_string(&real).unwrap(), text(&k));
        cleanup(&d);
    }

    #[test]
    fn an_open_directory_is_not_used() {
        if !root() {
            return;
        }
        let d = tmpdir("dir");
        std::fs::create_dir(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
        let k = key();
        assert!(store(&d, &text(&k)).unwrap_err().contains("mode 0777"));
        assert!(load(&d, &k).unwrap_err().contains("mode 0777"));
        cleanup(&d);
    }
}
