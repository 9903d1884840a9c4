//! Reading and writing another process's memory.

use std::io;

use super::check;

/// Maximum iovecs per process_vm_{read,write}v call (IOV_MAX).
pub const IOV_MAX: usize = 1024;

/// Reads `local.len()` bytes at `remote` of `pid`. Returns bytes read
/// (short on a fault).
pub fn vm_read(pid: i32, remote: u64, local: &mut [u8]) -> io::Result<usize> {
    let l = libc::iovec {
        iov_base: local.as_mut_ptr().cast(),
        iov_len: local.len(),
    };
    let r = libc::iovec {
        iov_base: remote as *mut _,
        iov_len: local.len(),
    };
    // SAFETY: the local iovec covers exactly `local`, which is writable and
    // lives across the call; the remote iovec is only interpreted by the
    // kernel in the target's address space.
    let n = check(unsafe { libc::process_vm_readv(pid, &l, 1, &r, 1, 0) } as libc::c_long)?;
    Ok(n as usize)
}

/// Writes `local` at `remote` of `pid`. Returns bytes written.
pub fn vm_write(pid: i32, remote: u64, local: &[u8]) -> io::Result<usize> {
    let l = libc::iovec {
        iov_base: local.as_ptr() as *mut _,
        iov_len: local.len(),
    };
    let r = libc::iovec {
        iov_base: remote as *mut _,
        iov_len: local.len(),
    };
    // SAFETY: the local iovec covers exactly `local`, which the kernel only
    // reads; the remote iovec is interpreted in the target's address space.
    let n = check(unsafe { libc::process_vm_writev(pid, &l, 1, &r, 1, 0) } as libc::c_long)?;
    Ok(n as usize)
}

/// Writes all of `local` at `remote`, looping over short writes.
pub fn vm_write_all(pid: i32, mut remote: u64, mut local: &[u8]) -> io::Result<()> {
    while !local.is_empty() {
        let n = vm_write(pid, remote, local)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "process_vm_writev wrote 0",
            ));
        }
        local = &local[n..];
        remote += n as u64;
    }
    Ok(())
}

/// Writes `bytes` at `remote` of `pid` through /proc/PID/mem, which for
/// a tracer writes where the mapping is not writable too (a private page
/// is copied), as PTRACE_POKEDATA does.
pub fn force_write(pid: i32, remote: u64, bytes: &[u8]) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/proc/{pid}/mem"))?
        .write_all_at(bytes, remote)
}

/// Reads all of `local` from `remote`, looping over short reads.
pub fn vm_read_all(pid: i32, mut remote: u64, mut local: &mut [u8]) -> io::Result<()> {
    while !local.is_empty() {
        let n = vm_read(pid, remote, local)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "process_vm_readv read 0",
            ));
        }
        local = &mut local[n..];
        remote += n as u64;
    }
    Ok(())
}

/// Reads the remote ranges `segs` (address, length) of `pid`, one after
/// the other, into `local` (as long as their sum), with as few
/// process_vm_readv calls as the kernel allows; a fault is an error.
pub fn vm_readv_all(pid: i32, segs: &[(u64, usize)], local: &mut [u8]) -> io::Result<()> {
    let total: usize = segs.iter().map(|s| s.1).sum();
    if total != local.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "segments and buffer differ in length",
        ));
    }
    // (segment index, bytes of it already read)
    let (mut i, mut done_in_seg, mut off) = (0usize, 0usize, 0usize);
    while i < segs.len() {
        let rest = &segs[i..segs.len().min(i + IOV_MAX)];
        let remote: Vec<libc::iovec> = rest
            .iter()
            .enumerate()
            .map(|(k, &(a, l))| {
                let skip = if k == 0 { done_in_seg } else { 0 };
                libc::iovec {
                    iov_base: (a as usize + skip) as *mut _,
                    iov_len: l - skip,
                }
            })
            .collect();
        let want: usize = remote.iter().map(|r| r.iov_len).sum();
        let l = libc::iovec {
            iov_base: local[off..].as_mut_ptr().cast(),
            iov_len: want,
        };
        // SAFETY: the local iovec covers `want` bytes of `local` from
        // `off` (the segments' sum equals local's length), writable and
        // alive across the call; the remote iovecs are only interpreted in
        // the target's address space.
        let n = check(unsafe {
            libc::process_vm_readv(
                pid,
                &l,
                1,
                remote.as_ptr(),
                remote.len() as libc::c_ulong,
                0,
            )
        } as libc::c_long)? as usize;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "process_vm_readv read 0",
            ));
        }
        off += n;
        // Advance over the segments read.
        let mut left = n;
        while left > 0 && i < segs.len() {
            let room = segs[i].1 - done_in_seg;
            if left >= room {
                left -= room;
                i += 1;
                done_in_seg = 0;
            } else {
                done_in_seg += left;
                left = 0;
            }
        }
    }
    Ok(())
}

/// The page frame number of the kernel's shared zero page (what a read of
/// untouched anonymous memory maps), found once by reading a fresh page of
/// our own; `None` when pagemap hides frame numbers (no CAP_SYS_ADMIN).
pub fn zero_page_pfn() -> Option<u64> {
    static PFN: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *PFN.get_or_init(|| {
        let len = 4096usize;
        // SAFETY: a fresh private anonymous mapping at an address the
        // kernel picks; it aliases nothing and is unmapped below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return None;
        }
        // SAFETY: `p` is a live, readable mapping of `len` bytes; the
        // volatile read faults the zero page in.
        let _ = unsafe { std::ptr::read_volatile(p.cast::<u8>()) };
        let entry = (|| -> io::Result<u64> {
            use std::os::unix::fs::FileExt;
            let f = std::fs::File::open("/proc/self/pagemap")?;
            let mut b = [0u8; 8];
            f.read_exact_at(&mut b, (p as u64) / 4096 * 8)?;
            Ok(u64::from_ne_bytes(b))
        })();
        // SAFETY: unmaps exactly the mapping made above; nothing refers to it.
        unsafe {
            libc::munmap(p, len);
        }
        let e = entry.ok()?;
        let pfn = e & ((1 << 55) - 1);
        (e >> 63 == 1 && pfn != 0).then_some(pfn)
    })
}

/// Starts writeback of a file range without waiting (sync_file_range
/// SYNC_FILE_RANGE_WRITE), so a later fsync has little left to do.
pub fn start_writeback(fd: &impl std::os::fd::AsRawFd, offset: u64, len: u64) -> io::Result<()> {
    // SAFETY: sync_file_range takes only a descriptor and integers.
    let r = unsafe {
        libc::sync_file_range(
            fd.as_raw_fd(),
            offset as i64,
            len as i64,
            libc::SYNC_FILE_RANGE_WRITE,
        )
    };
    check(r as libc::c_long).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records a skip the way tests/common `note_skip` does (a line in
    /// `CAIRN_SKIP_LOG`, which `cargo xtask test` counts and lists).
    fn note_skip(reason: &str) {
        use std::io::Write;
        let test = std::thread::current().name().unwrap_or("?").to_string();
        eprintln!("skipped: {reason}");
        if let Some(log) = std::env::var_os("CAIRN_SKIP_LOG") {
            if let Ok(mut f) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
            {
                let _ = f.write_all(format!("cairn::{test}: {reason}\n").as_bytes());
            }
        }
    }

    /// The pagemap entry of our own page at `addr`.
    fn pagemap_entry(addr: u64) -> u64 {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::open("/proc/self/pagemap").unwrap();
        let mut b = [0u8; 8];
        f.read_exact_at(&mut b, addr / 4096 * 8).unwrap();
        u64::from_ne_bytes(b)
    }

    /// The frame number `zero_page_pfn` reports is the zero page by
    /// sources of its own: /proc/kpageflags marks that frame
    /// KPF_ZERO_PAGE, every untouched page of another fresh mapping read
    /// here maps that frame, and a written page does not.
    #[test]
    fn zero_page_is_found_as_root() {
        if !nix::unistd::geteuid().is_root() {
            // Frame numbers are hidden from pagemap without CAP_SYS_ADMIN.
            assert_eq!(zero_page_pfn(), None);
            note_skip("zero_page_pfn: needs root to see frame numbers");
            return;
        }
        let pfn = zero_page_pfn().expect("the zero page's frame number, as root");
        // /proc/kpageflags: 8 bytes of flags per frame; bit 24 is
        // KPF_ZERO_PAGE (include/uapi/linux/kernel-page-flags.h).
        let flags = {
            use std::os::unix::fs::FileExt;
            let f = std::fs::File::open("/proc/kpageflags").unwrap();
            let mut b = [0u8; 8];
            f.read_exact_at(&mut b, pfn * 8).unwrap();
            u64::from_ne_bytes(b)
        };
        assert!(
            flags & (1 << 24) != 0,
            "frame {pfn:#x} is not the zero page: kpageflags {flags:#x}"
        );
        // Eight pages of a mapping of our own (a Vec's memory is not
        // trusted to be untouched), seven read but never written.
        let len = 8 * 4096usize;
        // SAFETY: a fresh private anonymous mapping at an address the
        // kernel picks; it aliases nothing and is unmapped below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        let base = p as u64;
        for i in 0..7u64 {
            // SAFETY: inside the live mapping of `len` bytes made above.
            let _ = unsafe { std::ptr::read_volatile((base + i * 4096) as *const u8) };
        }
        // SAFETY: the last page of the same mapping, written once.
        unsafe { std::ptr::write_volatile((base + 7 * 4096) as *mut u8, 1) };
        let pfns: Vec<(bool, u64)> = (0..8u64)
            .map(|i| {
                let e = pagemap_entry(base + i * 4096);
                (e >> 63 == 1, e & ((1 << 55) - 1))
            })
            .collect();
        // SAFETY: unmaps exactly the mapping made above; nothing refers to it.
        unsafe {
            libc::munmap(p, len);
        }
        for (i, &(present, f)) in pfns[..7].iter().enumerate() {
            assert!(
                present && f == pfn,
                "page {i} read but never written maps frame {f:#x} (present {present}), \
                 zero_page_pfn says {pfn:#x}"
            );
        }
        assert!(
            pfns[7].0 && pfns[7].1 != pfn,
            "a written page maps the zero page's frame {pfn:#x}"
        );
    }

    #[test]
    fn scattered_reads_land_in_order() {
        let src: Vec<u8> = (0..64 * 1024).map(|i| (i % 251) as u8).collect();
        let base = src.as_ptr() as u64;
        // Many small pieces (more than one call's worth) and a large one.
        let mut segs: Vec<(u64, usize)> = (0..1500).map(|i| (base + i * 40, 7)).collect();
        segs.push((base + 1000, 30_000));
        let total: usize = segs.iter().map(|s| s.1).sum();
        let mut out = vec![0u8; total];
        vm_readv_all(std::process::id() as i32, &segs, &mut out).unwrap();
        let mut off = 0;
        for &(a, l) in &segs {
            let s = (a - base) as usize;
            assert_eq!(&out[off..off + l], &src[s..s + l]);
            off += l;
        }
        assert!(vm_readv_all(std::process::id() as i32, &segs, &mut out[1..]).is_err());
    }
}
