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
        // Every description of that path: the executable and its mappings.
        let ids: Vec<u32> = idx
            .files
            .descs
            .iter()
            .filter(|d| {
                matches!(&d.kind, Some(file_desc::Kind::Reg(r)) if !r.deleted && r.path == path)
            })
            .map(|d| d.id)
            .collect();
        for id in ids {
            if verified != path {
                idx.redirect.insert(id, verified.clone());
            }
            idx.checked_elsewhere.insert(id);
        }
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
