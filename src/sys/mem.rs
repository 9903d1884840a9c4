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
