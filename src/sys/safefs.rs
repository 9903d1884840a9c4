//! Paths that are safe to use as root on a machine shared with other users
//! (issue 12): every path cairn creates, opens or removes goes through a
//! directory file descriptor, so an unprivileged user who can write some
//! directory on the way cannot redirect cairn with a symbolic link or a
//! swapped directory.
//!
//! The rules:
//!
//! - A path the user names (`-D`, `--pidfile`, `-o`, `--prev-images-dir`,
//!   `cairn prune DIR`, `cairn show PATH`) is resolved one component at a
//!   time with `openat(O_PATH|O_NOFOLLOW)`, from `/` or from the current
//!   directory. A symbolic link on the way (not the last component) is
//!   followed only if it is owned by root or by the caller's real uid
//!   (what `fs.protected_symlinks` allows in sticky directories, applied
//!   everywhere); its target is resolved by the same rules. Any other link
//!   is an error naming it.
//! - The last component is never followed if it is a symbolic link: the
//!   error says "is a symbolic link; cairn does not follow links here".
//! - Files inside a directory cairn holds open are opened relative to its
//!   descriptor with `openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS)` (plain
//!   `O_NOFOLLOW` where the kernel lacks openat2); reads use `O_NONBLOCK`
//!   and must find a regular file (a FIFO or device is an error, never a
//!   wait); new files are created `O_EXCL`.
//! - Trees are removed through descriptors: only regular files are
//!   unlinked (`unlinkat` relative to the directory's descriptor), then
//!   the directory by name relative to its parent's.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, ResolveFlags, Stat, CWD};

/// Most symbolic links followed in one path (as the kernel's limit).
pub const MAX_LINKS: usize = 40;

/// What the error for a final symbolic link says.
pub const SYMLINK_MSG: &str = "is a symbolic link; cairn does not follow links here";

/// The caller's real uid.
pub fn caller_uid() -> u32 {
    rustix::process::getuid().as_raw()
}

/// Whether `uid` may own a symbolic link cairn follows or a file it
/// trusts: root or the caller's real uid.
pub fn trusted_uid(uid: u32) -> bool {
    uid == 0 || uid == caller_uid()
}

fn other(msg: String) -> io::Error {
    io::Error::other(msg)
}

fn is_symlink(st: &Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::Symlink
}

/// The file type of a stat.
pub fn file_type(st: &Stat) -> FileType {
    FileType::from_raw_mode(st.st_mode)
}

/// Resolves every component of `path` but the last (see the module
/// documentation) and returns the directory that holds the last one
/// (opened `O_PATH`) and its name. A path whose last component is `.`
/// or `..`, or `/`, resolves the whole path and returns it with `.`.
pub fn open_parent(path: &Path) -> io::Result<(OwnedFd, OsString)> {
    if path.as_os_str().is_empty() {
        return Err(io::Error::from(io::ErrorKind::NotFound));
    }
    let mut comps: Vec<OsString> = Vec::new();
    let mut absolute = false;
    for c in path.components() {
        match c {
            Component::RootDir => absolute = true,
            Component::Prefix(_) => {}
            Component::CurDir => {}
            Component::ParentDir => comps.push("..".into()),
            Component::Normal(n) => comps.push(n.to_os_string()),
        }
    }
    let last = match comps.last() {
        Some(l) if l != ".." => comps.pop().expect("not empty"),
        _ => OsString::from("."),
    };
    let start = if absolute {
        Path::new("/").to_path_buf()
    } else {
        PathBuf::new()
    };
    let dir = walk(start, comps, 0, false)?;
    Ok((dir, last))
}

/// Makes the directory `path` and every missing directory above it (mode
/// 0700), like `mkdir -p` but by the same walk as [`open_parent`]: each
/// missing component is made with `mkdirat` in the directory the walk
/// holds, so nothing is ever made through an untrusted link.
pub fn make_dirs(path: &Path) -> io::Result<()> {
    let mut comps: Vec<OsString> = Vec::new();
    let mut absolute = false;
    for c in path.components() {
        match c {
            Component::RootDir => absolute = true,
            Component::ParentDir => comps.push("..".into()),
            Component::Normal(n) => comps.push(n.to_os_string()),
            _ => {}
        }
    }
    let start = if absolute {
        Path::new("/").to_path_buf()
    } else {
        PathBuf::new()
    };
    walk(start, comps, 0, true).map(drop)
}

/// Opens the start of a walk: `/` or the current directory.
fn open_start(abs: bool) -> io::Result<OwnedFd> {
    let p = if abs { "/" } else { "." };
    Ok(rfs::openat(
        CWD,
        p,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Walks `comps` (every one a directory or a trusted link to one) from
/// `shown` (`/` or empty for the current directory).
fn walk(
    shown: PathBuf,
    comps: Vec<OsString>,
    mut links: usize,
    create: bool,
) -> io::Result<OwnedFd> {
    let mut cur = open_start(shown.as_os_str() == "/")?;
    let mut shown = shown;
    // Pending components, last first.
    let mut todo: Vec<OsString> = comps.into_iter().rev().collect();
    while let Some(c) = todo.pop() {
        if create && c != ".." {
            match rfs::mkdirat(&cur, c.as_os_str(), Mode::from_raw_mode(0o700)) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                Err(e) => {
                    let e = io::Error::from(e);
                    return Err(io::Error::new(
                        e.kind(),
                        format!("{}: {e}", shown.join(&c).display()),
                    ));
                }
            }
        }
        let next = rfs::openat(
            &cur,
            c.as_os_str(),
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| {
            let e = io::Error::from(e);
            io::Error::new(e.kind(), format!("{}: {e}", shown.join(&c).display()))
        })?;
        let st = rfs::fstat(&next)?;
        let here = shown.join(&c);
        if is_symlink(&st) {
            if !trusted_uid(st.st_uid) {
                return Err(other(format!(
                    "{} is a symbolic link owned by uid {}, neither root nor the caller \
                     (uid {}): not followed",
                    here.display(),
                    st.st_uid,
                    caller_uid()
                )));
            }
            links += 1;
            if links > MAX_LINKS {
                return Err(other(format!(
                    "{}: too many levels of symbolic links",
                    here.display()
                )));
            }
            let target = rfs::readlinkat(&cur, c.as_os_str(), Vec::new())?;
            let target = PathBuf::from(OsStr::from_bytes(target.as_bytes()));
            let mut tc: Vec<OsString> = Vec::new();
            for tcomp in target.components() {
                match tcomp {
                    Component::RootDir => {
                        cur = open_start(true)?;
                        shown = PathBuf::from("/");
                    }
                    Component::ParentDir => tc.push("..".into()),
                    Component::Normal(n) => tc.push(n.to_os_string()),
                    _ => {}
                }
            }
            todo.extend(tc.into_iter().rev());
            continue;
        }
        if file_type(&st) != FileType::Directory {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("{}: not a directory", here.display()),
            ));
        }
        cur = next;
        shown = here;
    }
    Ok(cur)
}

/// Maps the error of an `O_NOFOLLOW` open of `name` in `dir`: a symbolic
/// link gives [`SYMLINK_MSG`].
fn nofollow_error(dir: BorrowedFd<'_>, name: &OsStr, e: rustix::io::Errno) -> io::Error {
    if matches!(
        e,
        rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR | rustix::io::Errno::XDEV
    ) && rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).is_ok_and(|s| is_symlink(&s))
    {
        return other(SYMLINK_MSG.to_string());
    }
    e.into()
}

/// Opens `name` in `dir` with `flags` (plus `O_NOFOLLOW|O_CLOEXEC`); a
/// single component only (see [`open_beneath`] for names from images).
pub fn openat_nofollow(
    dir: impl AsFd,
    name: &OsStr,
    flags: OFlags,
    mode: u32,
) -> io::Result<OwnedFd> {
    let dir = dir.as_fd();
    rfs::openat(
        dir,
        name,
        flags | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(mode),
    )
    .map_err(|e| nofollow_error(dir, name, e))
}

/// Opens `name` beneath `dir` with no symbolic link anywhere
/// (`openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS)`; `O_NOFOLLOW` and a
/// refusal of `/` and `..` where the kernel has no openat2).
pub fn open_beneath(dir: impl AsFd, name: &str, flags: OFlags, mode: u32) -> io::Result<OwnedFd> {
    let dir = dir.as_fd();
    let flags = flags | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    match rfs::openat2(
        dir,
        name,
        flags,
        Mode::from_raw_mode(mode),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    ) {
        Err(rustix::io::Errno::NOSYS) => {
            if name.contains('/') || name == ".." {
                return Err(other(format!("{name:?}: not a plain file name")));
            }
            openat_nofollow(dir, OsStr::new(name), flags, mode)
        }
        Err(e) => Err(nofollow_error(dir, OsStr::new(name), e)),
        Ok(fd) => Ok(fd),
    }
}

/// Opens a regular file for reading beneath `dir` without blocking (a FIFO
/// opens at once and is then refused) and returns it with its stat.
pub fn open_regular(dir: impl AsFd, name: &str) -> io::Result<(File, Stat)> {
    let fd = open_beneath(dir, name, OFlags::RDONLY | OFlags::NONBLOCK, 0)?;
    let st = rfs::fstat(&fd)?;
    if file_type(&st) != FileType::RegularFile {
        return Err(other(format!(
            "is not a regular file (a {})",
            type_name(file_type(&st))
        )));
    }
    // Regular files never block; clear the flag anyway for later users.
    let _ = rfs::fcntl_setfl(&fd, OFlags::empty());
    Ok((File::from(fd), st))
}

/// A word for a file type in messages.
pub fn type_name(t: FileType) -> &'static str {
    match t {
        FileType::RegularFile => "regular file",
        FileType::Directory => "directory",
        FileType::Symlink => "symbolic link",
        FileType::Fifo => "FIFO",
        FileType::Socket => "socket",
        FileType::CharacterDevice => "character device",
        FileType::BlockDevice => "block device",
        FileType::Unknown => "file of unknown type",
    }
}

/// Creates a new file `name` in `dir` (`O_CREAT|O_EXCL|O_NOFOLLOW`, so
/// never through a link and never an existing file) with `mode`, which
/// is set with fchmod so that no umask widens or narrows it.
pub fn create_excl(dir: impl AsFd, name: &OsStr, mode: u32) -> io::Result<File> {
    let fd = openat_nofollow(
        dir,
        name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL,
        mode,
    )?;
    rfs::fchmod(&fd, Mode::from_raw_mode(mode))?;
    Ok(File::from(fd))
}

/// Opens the directory `path` (a real directory: the last component is
/// never followed, the others as the module documentation says).
pub fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    let (parent, name) = open_parent(path)?;
    openat_nofollow(&parent, &name, OFlags::RDONLY | OFlags::DIRECTORY, 0)
}

/// Opens the directory `path` (absolute) with no symbolic link anywhere
/// on it, not even a trusted one (`openat2(RESOLVE_NO_SYMLINKS)`; a walk
/// of `O_NOFOLLOW` opens where the kernel has no openat2). For paths that
/// come from images and name the directory of a file cairn is to write
/// in place: the path the dump saw had no link (the kernel's name of an
/// open file), so a link there now is someone else's doing.
pub fn open_dir_no_links(path: &Path) -> io::Result<OwnedFd> {
    if !path.is_absolute()
        || path
            .components()
            .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return Err(other(format!(
            "{}: not an absolute path without . or ..",
            path.display()
        )));
    }
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    match rfs::openat2(
        CWD,
        path,
        flags,
        Mode::empty(),
        ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    ) {
        Ok(fd) => return Ok(fd),
        Err(rustix::io::Errno::NOSYS) => {}
        Err(rustix::io::Errno::LOOP) => {
            return Err(other(format!(
                "{}: a symbolic link on the path",
                path.display()
            )))
        }
        Err(e) => return Err(e.into()),
    }
    let mut cur = open_start(true)?;
    for c in path.components() {
        let Component::Normal(n) = c else { continue };
        let next = openat_nofollow(&cur, n, OFlags::RDONLY | OFlags::DIRECTORY, 0)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        cur = next;
    }
    Ok(cur)
}

/// Whether `path` names a directory (`true`) or anything else (`false`),
/// by the walk of [`open_parent`]; a symbolic link as its last component
/// is an error ([`SYMLINK_MSG`]), never followed.
pub fn is_dir_nofollow(path: &Path) -> io::Result<bool> {
    let (parent, name) = open_parent_dir(path)?;
    if name == "." {
        return Ok(true);
    }
    match file_type(&lstatat(&parent, &name)?) {
        FileType::Symlink => Err(other(SYMLINK_MSG.to_string())),
        t => Ok(t == FileType::Directory),
    }
}

/// The directory that holds the last component of `path`, opened for
/// reading (for listing, fsync, `*at` calls), and that component.
pub fn open_parent_dir(path: &Path) -> io::Result<(OwnedFd, OsString)> {
    let (parent, name) = open_parent(path)?;
    let fd = rfs::openat(
        &parent,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    Ok((fd, name))
}

/// The entries of `dir` (without `.` and `..`) with their type as the
/// directory reports it (`None` where it does not).
pub fn list(dir: impl AsFd) -> io::Result<Vec<(OsString, Option<FileType>)>> {
    let mut d = rfs::Dir::read_from(dir)?;
    let mut out = Vec::new();
    while let Some(e) = d.read() {
        let e = e?;
        let n = e.file_name().to_bytes();
        if n == b"." || n == b".." {
            continue;
        }
        let t = e.file_type();
        out.push((
            OsStr::from_bytes(n).to_os_string(),
            (t != FileType::Unknown).then_some(t),
        ));
    }
    Ok(out)
}

/// The stat of `name` in `dir`, not following a link.
pub fn lstatat(dir: impl AsFd, name: &OsStr) -> io::Result<Stat> {
    Ok(rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?)
}

/// Fills `n` bytes from getrandom(2).
pub fn random_bytes(buf: &mut [u8]) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: the pointer and length describe `rest`, a live, writable
        // slice; getrandom writes at most that many bytes.
        let r = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        done += r as usize;
    }
    Ok(())
}

/// 16 random hex digits (64 bits from getrandom).
pub fn random_hex() -> io::Result<String> {
    let mut b = [0u8; 8];
    random_bytes(&mut b)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// Creates the directory `name` in `parent` (mode 0700, whatever the
/// umask), opens it (`O_DIRECTORY|O_NOFOLLOW`) and checks it is the one
/// made: a directory of the caller's effective uid with mode 0700.
pub fn mkdir_private(parent: impl AsFd, name: &OsStr) -> io::Result<OwnedFd> {
    let parent = parent.as_fd();
    rfs::mkdirat(parent, name, Mode::from_raw_mode(0o700))?;
    let fd = openat_nofollow(parent, name, OFlags::RDONLY | OFlags::DIRECTORY, 0)?;
    rfs::fchmod(&fd, Mode::from_raw_mode(0o700))?;
    let st = rfs::fstat(&fd)?;
    let euid = rustix::process::geteuid().as_raw();
    if st.st_uid != euid || st.st_mode & 0o7777 != 0o700 {
        return Err(other(format!(
            "{}: not the private directory just made (owner {}, mode {:o})",
            Path::new(name).display(),
            st.st_uid,
            st.st_mode & 0o7777
        )));
    }
    Ok(fd)
}

/// Removes the regular files in `dir` for which `keep(name)` is false
/// (unlinkat relative to `dir`); anything else is left. Returns the names
/// left.
pub fn remove_regular_files(
    dir: impl AsFd,
    mut remove: impl FnMut(&OsStr) -> bool,
) -> io::Result<Vec<OsString>> {
    let dir = dir.as_fd();
    let mut left = Vec::new();
    for (name, _) in list(dir)? {
        let st = match lstatat(dir, &name) {
            Ok(s) => s,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if file_type(&st) == FileType::RegularFile && remove(&name) {
            match rfs::unlinkat(dir, name.as_os_str(), AtFlags::empty()) {
                Ok(()) | Err(rustix::io::Errno::NOENT) => {}
                Err(e) => return Err(e.into()),
            }
        } else {
            left.push(name);
        }
    }
    Ok(left)
}

/// Removes the directory `name` in `parent`, opened without following a
/// link: its regular files first (through its descriptor), then the
/// directory itself. `owner`, if given, is the uid the directory must
/// have. Anything but regular files inside is left, and so is the
/// directory (an error names what is in it).
pub fn remove_dir_by_fd(parent: impl AsFd, name: &OsStr, owner: Option<u32>) -> io::Result<()> {
    let parent = parent.as_fd();
    let fd = openat_nofollow(parent, name, OFlags::RDONLY | OFlags::DIRECTORY, 0)?;
    let st = rfs::fstat(&fd)?;
    if let Some(uid) = owner {
        if st.st_uid != uid {
            return Err(other(format!(
                "owned by uid {}, not {uid}: not removed",
                st.st_uid
            )));
        }
    }
    let left = remove_regular_files(&fd, |_| true)?;
    if let Some(n) = left.first() {
        return Err(other(format!(
            "holds {:?}, which is not a regular file: left alone",
            n
        )));
    }
    // The same directory still has that name: only then remove it.
    let now = lstatat(parent, name)?;
    if now.st_dev != st.st_dev || now.st_ino != st.st_ino {
        return Err(other(
            "was replaced while it was emptied: left alone".into(),
        ));
    }
    rfs::unlinkat(parent, name, AtFlags::REMOVEDIR)?;
    Ok(())
}

/// Replaces the file `path` with `contents`: written to a new file with
/// a random name created exclusively (`O_EXCL|O_NOFOLLOW`, mode `mode`) in
/// the directory that holds `path` (opened as the module documentation
/// says), synced, then renamed over the last component relative to that
/// directory: a symbolic link there is replaced, never followed.
pub fn replace_file(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    use std::io::Write;
    let (dir, name) = open_parent_dir(path)?;
    if name == "." {
        return Err(other("not a file name".into()));
    }
    let mut made = None;
    for _ in 0..8 {
        let tmp = OsString::from(format!(
            ".{}.cairn-tmp-{}-{}",
            name.to_string_lossy(),
            std::process::id(),
            random_hex()?
        ));
        match create_excl(&dir, &tmp, mode) {
            Ok(f) => {
                made = Some((tmp, f));
                break;
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    let (tmp, mut f) = made.ok_or_else(|| other("no free temporary name".into()))?;
    let r = f
        .write_all(contents)
        .and_then(|()| f.sync_all())
        .and_then(|()| {
            Ok(rfs::renameat(
                &dir,
                tmp.as_os_str(),
                &dir,
                name.as_os_str(),
            )?)
        });
    if r.is_err() {
        let _ = rfs::unlinkat(&dir, tmp.as_os_str(), AtFlags::empty());
    }
    r
}

/// Checks that a file or directory cairn is about to read is trustworthy:
/// owned by root or the caller, and not writable by group or others. `st`
/// must come from fstat of the descriptor that is then read.
pub fn check_trusted(st: &Stat) -> std::result::Result<(), String> {
    let mode = st.st_mode & 0o7777;
    if !trusted_uid(st.st_uid) {
        return Err(format!(
            "owned by uid {} (mode {mode:04o}), neither root nor the caller (uid {})",
            st.st_uid,
            caller_uid()
        ));
    }
    if mode & 0o022 != 0 {
        return Err(format!(
            "writable by {} (owner uid {}, mode {mode:04o})",
            if mode & 0o002 != 0 {
                "anyone"
            } else {
                "its group"
            },
            st.st_uid
        ));
    }
    Ok(())
}

/// fsync of a directory or file descriptor.
pub fn sync(fd: impl AsFd) -> io::Result<()> {
    Ok(rfs::fsync(fd)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn tmp(tag: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("cairn-safefs-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    #[test]
    fn final_symlinks_are_refused_and_trusted_ones_on_the_way_followed() {
        let t = tmp("links");
        std::fs::create_dir(t.join("real")).unwrap();
        std::fs::write(t.join("real/f"), "x").unwrap();
        symlink(t.join("real"), t.join("link")).unwrap();
        // Our own link on the way is followed.
        let (p, n) = open_parent(&t.join("link/f")).unwrap();
        assert_eq!(n, "f");
        assert!(lstatat(&p, &n).is_ok());
        // A final link is not.
        let e = open_dir(&t.join("link")).unwrap_err().to_string();
        assert!(e.contains(SYMLINK_MSG), "{e}");
        assert!(open_dir(&t.join("real")).is_ok());
        // Relative paths, `.` and `..`.
        assert!(open_dir(Path::new(".")).is_ok());
        let (_, n) = open_parent(&t.join("real/..")).unwrap();
        assert_eq!(n, ".");
        // A link inside a directory we hold is refused beneath it.
        let d = open_dir(&t).unwrap();
        symlink("real/f", t.join("lf")).unwrap();
        let e = open_regular(&d, "lf").unwrap_err().to_string();
        assert!(e.contains(SYMLINK_MSG) || e.contains("link"), "{e}");
        assert!(open_regular(&d, "../x").is_err());
        assert!(open_regular(&d, "real/f").is_ok());
        let _ = std::fs::remove_dir_all(&t);
    }

    #[test]
    fn untrusted_links_on_the_way_are_refused() {
        if caller_uid() != 0 {
            return;
        }
        let t = tmp("foreign");
        std::fs::create_dir(t.join("real")).unwrap();
        symlink(t.join("real"), t.join("theirs")).unwrap();
        std::os::unix::fs::lchown(t.join("theirs"), Some(64123), Some(64123)).unwrap();
        let e = open_parent(&t.join("theirs/x")).unwrap_err().to_string();
        assert!(
            e.contains("owned by uid 64123") && e.contains("theirs"),
            "{e}"
        );
        // mkdir -p through it makes nothing at the link's target.
        let e = make_dirs(&t.join("theirs/made/deeper"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("owned by uid 64123"), "{e}");
        assert!(!t.join("real/made").exists());
        make_dirs(&t.join("mine/made/deeper")).unwrap();
        assert!(t.join("mine/made/deeper").is_dir());
        let _ = std::fs::remove_dir_all(&t);
    }

    #[test]
    fn fifos_are_refused_without_blocking() {
        let t = tmp("fifo");
        rustix::fs::mknodat(
            CWD,
            t.join("p"),
            FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let d = open_dir(&t).unwrap();
        let e = open_regular(&d, "p").unwrap_err().to_string();
        assert!(e.contains("FIFO"), "{e}");
        let _ = std::fs::remove_dir_all(&t);
    }

    #[test]
    fn exclusive_creation_and_private_dirs() {
        let t = tmp("excl");
        let d = open_dir(&t).unwrap();
        create_excl(&d, OsStr::new("f"), 0o600).unwrap();
        let sub = mkdir_private(&d, OsStr::new("sub")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let m = std::fs::metadata(t.join("f")).unwrap().permissions().mode();
        assert_eq!(m & 0o777, 0o600);
        assert!(create_excl(&d, OsStr::new("f"), 0o600).is_err());
        symlink("/etc/passwd", t.join("l")).unwrap();
        assert!(create_excl(&d, OsStr::new("l"), 0o600).is_err());
        // Removal by descriptor: regular files only.
        create_excl(&sub, OsStr::new("a"), 0o600).unwrap();
        symlink("/etc/passwd", t.join("sub/l")).unwrap();
        assert!(remove_dir_by_fd(&d, OsStr::new("sub"), None).is_err());
        assert!(t.join("sub/l").symlink_metadata().is_ok());
        assert!(!t.join("sub/a").exists());
        std::fs::remove_file(t.join("sub/l")).unwrap();
        remove_dir_by_fd(
            &d,
            OsStr::new("sub"),
            Some(rustix::process::geteuid().as_raw()),
        )
        .unwrap();
        assert!(!t.join("sub").exists());
        assert_eq!(random_hex().unwrap().len(), 16);
        assert_ne!(random_hex().unwrap(), random_hex().unwrap());
        let _ = std::fs::remove_dir_all(&t);
    }
}
