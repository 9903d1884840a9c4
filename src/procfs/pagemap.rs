//! /proc/PID/pagemap: one native-endian u64 per virtual page (see the
//! kernel's Documentation/admin-guide/mm/pagemap.rst).

use super::misc::{proc_path, MAX_PROC_FILE};
use crate::error::{Error, IoContext, Result};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Page size the offsets in pagemap are based on (x86-64).
pub const PAGE_SIZE: u64 = 4096;

/// Entries read per pread: 64 KiB of entries (8192 pages, 32 MiB of
/// address space).
const BLOCK_ENTRIES: usize = 8192;

/// Largest range one `read_pagemap` call accepts, in entries (64 MiB of
/// entries, i.e. 32 GiB of address space); callers split larger ranges.
const MAX_ENTRIES: u64 = MAX_PROC_FILE / 8;

/// One pagemap entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageFlags(pub u64);

impl PageFlags {
    const PRESENT: u64 = 1 << 63;
    const SWAPPED: u64 = 1 << 62;
    const FILE_OR_SHARED: u64 = 1 << 61;
    const UFFD_WP: u64 = 1 << 57;
    const EXCLUSIVE: u64 = 1 << 56;
    const SOFT_DIRTY: u64 = 1 << 55;
    const PFN_MASK: u64 = (1 << 55) - 1;

    /// Bit 63: page present in RAM.
    pub fn present(self) -> bool {
        self.0 & Self::PRESENT != 0
    }
    /// Bit 62: page swapped out.
    pub fn swapped(self) -> bool {
        self.0 & Self::SWAPPED != 0
    }
    /// Bit 61: file-backed page or shared anonymous page.
    pub fn file_or_shared(self) -> bool {
        self.0 & Self::FILE_OR_SHARED != 0
    }
    /// Bit 56: page exclusively mapped.
    pub fn exclusive(self) -> bool {
        self.0 & Self::EXCLUSIVE != 0
    }
    /// Bit 57: pte is uffd-wp write-protected.
    pub fn uffd_wp(self) -> bool {
        self.0 & Self::UFFD_WP != 0
    }
    /// Bit 55: pte is soft-dirty.
    pub fn soft_dirty(self) -> bool {
        self.0 & Self::SOFT_DIRTY != 0
    }
    /// Bits 0-54: page frame number when present, else 0 (when swapped
    /// those bits hold the swap type and offset instead). Zero without
    /// CAP_SYS_ADMIN.
    pub fn pfn(self) -> u64 {
        if self.present() {
            self.0 & Self::PFN_MASK
        } else {
            0
        }
    }
}

/// Decodes native-endian u64 entries; a trailing partial entry is ignored.
pub fn parse_pagemap(bytes: &[u8]) -> Vec<PageFlags> {
    bytes
        .chunks_exact(8)
        .map(|c| PageFlags(u64::from_ne_bytes(c.try_into().unwrap_or([0; 8]))))
        .collect()
}

/// Read entries for [start, end) (page aligned) of pid, using pread on
/// /proc/PID/pagemap at offset (start/4096)*8, 64 KiB of entries per pread.
/// Ranges of more than 64 MiB of entries (32 GiB of address space) are
/// refused; split them.
pub fn read_pagemap(pid: i32, start: u64, end: u64) -> Result<Vec<PageFlags>> {
    let path = proc_path(pid, "pagemap");
    if !start.is_multiple_of(PAGE_SIZE) || !end.is_multiple_of(PAGE_SIZE) || start > end {
        return Err(Error::parse(
            path.display().to_string(),
            format!("bad range {start:#x}-{end:#x}: must be page aligned and ordered"),
        ));
    }
    let count = (end - start) / PAGE_SIZE;
    if count > MAX_ENTRIES {
        return Err(Error::io(
            &path,
            io::Error::new(
                io::ErrorKind::FileTooLarge,
                format!(
                    "range {start:#x}-{end:#x} needs more than {MAX_PROC_FILE} bytes of entries"
                ),
            ),
        ));
    }
    let file = File::open(&path).at(&path)?;
    // count <= MAX_ENTRIES, which fits in usize on 64-bit targets.
    let count = usize::try_from(count).map_err(|_| Error::parse("pagemap", "range too large"))?;
    let mut out = Vec::with_capacity(count);
    let mut buf = vec![0u8; BLOCK_ENTRIES.min(count) * 8];
    let mut offset = start / PAGE_SIZE * 8;
    while out.len() < count {
        let want = (count - out.len()).min(BLOCK_ENTRIES) * 8;
        let chunk = buf
            .get_mut(..want)
            .ok_or_else(|| Error::parse("pagemap", "internal: block larger than buffer"))?;
        read_exact_at(&file, chunk, offset).at(&path)?;
        out.extend(parse_pagemap(chunk));
        offset += want as u64;
    }
    Ok(out)
}

/// pread until `buf` is full, retrying on EINTR; EOF is an error.
fn read_exact_at(file: &File, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
    while !buf.is_empty() {
        match file.read_at(buf, offset) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("short read at offset {offset:#x}"),
                ))
            }
            Ok(n) => {
                buf = buf.get_mut(n..).unwrap_or_default();
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags() {
        let p = PageFlags((1 << 63) | (1 << 56) | (1 << 55) | 0x1234);
        assert!(p.present() && p.exclusive() && p.soft_dirty());
        assert!(!p.swapped() && !p.file_or_shared() && !p.uffd_wp());
        assert_eq!(p.pfn(), 0x1234);

        let s = PageFlags((1 << 62) | (1 << 57) | 0x55);
        assert!(s.swapped() && s.uffd_wp() && !s.present());
        assert_eq!(s.pfn(), 0);

        let all = PageFlags(u64::MAX);
        assert!(all.present() && all.swapped() && all.file_or_shared());
        assert_eq!(all.pfn(), (1 << 55) - 1);
        assert!(all.exclusive() && all.uffd_wp() && all.soft_dirty());

        let none = PageFlags(0);
        assert!(!none.present() && !none.swapped() && !none.file_or_shared());
        assert!(!none.exclusive() && !none.uffd_wp() && !none.soft_dirty());
        assert_eq!(none.pfn(), 0);
        assert!(PageFlags(1 << 61).file_or_shared());
    }

    #[test]
    fn parse() {
        assert!(parse_pagemap(&[]).is_empty());
        assert!(parse_pagemap(&[1; 7]).is_empty());
        let mut b: Vec<u8> = [1u64 << 63, 5]
            .iter()
            .flat_map(|w| w.to_ne_bytes())
            .collect();
        b.extend_from_slice(&[9, 9, 9]);
        assert_eq!(parse_pagemap(&b), [PageFlags(1 << 63), PageFlags(5)]);
    }

    #[test]
    fn bad_ranges() {
        let pid = std::process::id() as i32;
        assert!(read_pagemap(pid, 1, 4096).is_err());
        assert!(read_pagemap(pid, 0, 4097).is_err());
        assert!(read_pagemap(pid, 8192, 4096).is_err());
        assert!(read_pagemap(pid, 0, !4095u64).is_err());
        assert!(read_pagemap(pid, 0, 0).unwrap().is_empty());
        assert!(read_pagemap(-1, 0, 4096).is_err());
    }

    #[test]
    fn live_self() {
        let pid = std::process::id() as i32;
        // Touch every page of a buffer, then look it up.
        let mut v = vec![0u8; 64 * 4096];
        for (i, b) in v.iter_mut().enumerate().step_by(4096) {
            *b = i as u8 | 1;
        }
        let addr = v.as_ptr() as u64;
        let start = addr.div_ceil(PAGE_SIZE) * PAGE_SIZE;
        let end = (addr + v.len() as u64) / PAGE_SIZE * PAGE_SIZE;
        let e = read_pagemap(pid, start, end).unwrap();
        assert_eq!(e.len() as u64, (end - start) / PAGE_SIZE);
        assert!(e.iter().all(|p| p.present() && !p.swapped()), "{e:?}");
        if nix::unistd::geteuid().is_root() {
            assert!(e.iter().all(|p| p.pfn() != 0));
        }
        std::hint::black_box(&v);

        // A range spanning several pread blocks, ending at the buffer.
        let big_start = end.saturating_sub(3 * BLOCK_ENTRIES as u64 * PAGE_SIZE + 5 * PAGE_SIZE);
        let big = read_pagemap(pid, big_start, end).unwrap();
        assert_eq!(big.len(), 3 * BLOCK_ENTRIES + 5);
        assert!(big[big.len() - 1].present());
    }
}
