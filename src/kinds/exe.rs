//! The executable's identity: its crc32 and size are recorded at dump
//! time (`MmEntry.exe_crc32`, `exe_size`), so that a restore can take a
//! moved executable from another directory (`resume -bp DIR`,
//! `cairn restore --exe-dir DIR`) and be sure it is the same program:
//! the contents decide, not the name.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::image::proto::{file_desc, MmEntry};
use crate::info;
use crate::kinds::files::FilesIndex;

/// crc32 (IEEE) and length of a file's whole contents.
pub fn checksum(path: &Path) -> std::io::Result<(u32, u64)> {
    let mut f = std::fs::File::open(path)?;
    let mut h = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                h.update(&buf[..n]);
                len += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok((h.finalize(), len))
}

/// Checksums of the executables of a dump, computed once per file.
#[derive(Default)]
pub struct ExeSums(HashMap<(u64, u64), (u32, u64)>);

impl ExeSums {
    /// Records the checksum of `pid`'s executable in `mm`.
    pub fn record(&mut self, pid: i32, mm: &mut MmEntry) -> Result<()> {
        let link = PathBuf::from(format!("/proc/{pid}/exe"));
        let md = std::fs::metadata(&link).at(&link)?;
        let sum = match self.0.get(&(md.dev(), md.ino())) {
            Some(&s) => s,
            None => {
                let s = checksum(&link).at(&link)?;
                self.0.insert((md.dev(), md.ino()), s);
                s
            }
        };
        (mm.exe_crc32, mm.exe_size) = sum;
        Ok(())
    }
}

/// Decides where each executable of the tree is opened from.
///
/// Without `exe_dir`, an executable that is gone is an error that names
/// `flag` (the option that would help: `-bp` or `--exe-dir`). With it,
/// an executable that is gone, or whose contents at its old path are not
/// the checkpointed ones, is taken from `exe_dir/<its file name>` if that
/// file has the checkpointed crc32 and size, and refused otherwise. A
/// replacement is used for the executable and for every mapping of it
/// (`idx.redirect`), and its checksum stands in for the identity check.
pub fn plan(
    mms: &[Option<MmEntry>],
    idx: &mut FilesIndex,
    exe_dir: Option<&Path>,
    flag: &str,
) -> Result<()> {
    let mut done = HashSet::new();
    for mm in mms.iter().flatten() {
        if !done.insert(mm.exe_file_id) {
            continue;
        }
        let Some(path) = idx.path(mm.exe_file_id) else {
            continue;
        };
        let here = Path::new(&path).exists();
        let Some(dir) = exe_dir else {
            if !here {
                return Err(Error::Restore(format!(
                    "the program {path} is no longer there; if it was moved, \
                     name its new directory with {flag} DIR"
                )));
            }
            continue;
        };
        if mm.exe_size == 0 {
            return Err(Error::Restore(format!(
                "the images do not record the contents of {path} (made by an older cairn): \
                 {flag} cannot check a moved program"
            )));
        }
        let want = (mm.exe_crc32, mm.exe_size);
        let verified = if here && checksum(Path::new(&path)).ok() == Some(want) {
            path.clone()
        } else {
            let name = Path::new(&path).file_name().ok_or_else(|| {
                Error::Restore(format!("the program path {path} has no file name"))
            })?;
            let dir = std::path::absolute(dir).at(dir)?;
            let cand = dir.join(name);
            if !cand.is_file() {
                return Err(Error::Restore(format!(
                    "the program {path} is {} and {} does not exist",
                    if here {
                        "not the checkpointed one"
                    } else {
                        "gone"
                    },
                    cand.display()
                )));
            }
            let got = checksum(&cand).at(&cand)?;
            if got != want {
                return Err(Error::Restore(format!(
                    "{} is not the program that was checkpointed ({path}): its contents differ",
                    cand.display()
                )));
            }
            info!("program {path} taken from {}", cand.display());
            cand.to_string_lossy().into_owned()
        };
        for id in ids_of_path(idx, &path) {
            if verified != path {
                idx.redirect.insert(id, verified.clone());
            }
            idx.checked_elsewhere.insert(id);
        }
    }
    Ok(())
}

/// Every description of regular file `path` (not deleted): a program and
/// its mappings.
fn ids_of_path(idx: &FilesIndex, path: &str) -> Vec<u32> {
    idx.files
        .descs
        .iter()
        .filter(
            |d| matches!(&d.kind, Some(file_desc::Kind::Reg(r)) if !r.deleted && r.path == path),
        )
        .map(|d| d.id)
        .collect()
}

/// A file a process runs code from: (file id, pid, the program's crc32
/// and size if it is the program).
type CodeFile = (u32, u32, Option<(u32, u64)>);

/// Refuses a restore whose program, or a file the tree maps as code
/// (PROT_EXEC), changed since the dump and is not put back from the images
/// (saved contents) nor verified (`--exe-dir`): the restored memory would
/// run against other code and crash at once, so `--ignore-file-changes`
/// does not cover it. A program whose contents are still the checkpointed
/// ones (crc32 and size), only touched or copied, is accepted and left out
/// of the file-change check. Runs after [`plan`] and the marking of saved
/// contents; `flag` is the option that names a moved program's directory.
pub fn refuse_changed_code(
    mms: &[Option<MmEntry>],
    idx: &mut FilesIndex,
    same_boot: bool,
    flag: &str,
) -> Result<()> {
    let mut code: Vec<CodeFile> = Vec::new();
    for mm in mms.iter().flatten() {
        let sum = (mm.exe_size != 0).then_some((mm.exe_crc32, mm.exe_size));
        code.push((mm.exe_file_id, mm.pid, sum));
        for v in &mm.vmas {
            if v.file_id != 0 && v.prot & libc::PROT_EXEC as u32 != 0 {
                code.push((v.file_id, mm.pid, None));
            }
        }
    }
    let mut seen = HashSet::new();
    for &(id, pid, sum) in &code {
        if !seen.insert(id) || idx.checked_elsewhere.contains(&id) {
            continue;
        }
        let Some(file_desc::Kind::Reg(r)) = idx.get(id).and_then(|d| d.kind.as_ref()) else {
            continue;
        };
        let Some(st) = r.stat.as_ref() else { continue };
        if r.deleted || st.mode & libc::S_IFMT != libc::S_IFREG || !Path::new(&r.path).exists() {
            // Gone: `plan` or the open at restore says so.
            continue;
        }
        let Some(why) = crate::kinds::files::change_since_dump(&r.path, st, same_boot) else {
            continue;
        };
        let path = r.path.clone();
        // The same file may be one process's program and another's library.
        let sum = sum.or_else(|| {
            code.iter()
                .find(|c| c.0 == id && c.2.is_some())
                .and_then(|c| c.2)
        });
        if let Some(want) = sum {
            if checksum(Path::new(&path)).ok() == Some(want) {
                info!("program {path}: touched since the dump, same contents");
                for id in ids_of_path(idx, &path) {
                    idx.checked_elsewhere.insert(id);
                }
                continue;
            }
        }
        let (what, todo) = match sum {
            Some(_) => (
                "its program",
                format!(
                    "put the checkpointed program back at {path}, or name a directory that \
                     holds it with {flag} DIR"
                ),
            ),
            None => (
                "code mapped from it",
                format!("put the checkpointed file back at {path}"),
            ),
        };
        return Err(Error::Restore(format!(
            "{why}: pid {pid} runs {what}, and its saved memory would run against other code \
             (--ignore-file-changes does not cover a program or library); {todo}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_is_crc32_of_contents() {
        let p = std::env::temp_dir().join(format!("cairn-exe-sum-{}", std::process::id()));
        std::fs::write(&p, b"123456789").unwrap();
        // The crc32 check value.
        assert_eq!(checksum(&p).unwrap(), (0xcbf4_3926, 9));
        std::fs::write(&p, b"").unwrap();
        assert_eq!(checksum(&p).unwrap(), (0, 0));
        let _ = std::fs::remove_file(&p);
    }
}
