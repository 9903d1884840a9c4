//! Scattered writes into another process's memory: many (local bytes,
//! remote address) pairs in as few process_vm_writev calls as the kernel
//! allows (restore of page chunks, issue 15).

use std::io;

use super::check;
use super::mem::{vm_write_all, IOV_MAX};

/// Writes each `(bytes, remote address)` of `pairs` into `pid`, up to
/// IOV_MAX pairs per process_vm_writev. A short write (the kernel stops
/// at the first remote fault) finishes that batch pair by pair, so that
/// the error names the pair that failed.
pub fn vm_write_pairs(pid: i32, pairs: &[(&[u8], u64)]) -> io::Result<()> {
    for batch in pairs.chunks(IOV_MAX) {
        let local: Vec<libc::iovec> = batch
            .iter()
            .map(|(b, _)| libc::iovec {
                iov_base: b.as_ptr() as *mut _,
                iov_len: b.len(),
            })
            .collect();
        let remote: Vec<libc::iovec> = batch
            .iter()
            .map(|(b, a)| libc::iovec {
                iov_base: *a as usize as *mut _,
                iov_len: b.len(),
            })
            .collect();
        let want: usize = batch.iter().map(|(b, _)| b.len()).sum();
        // SAFETY: every local iovec covers exactly one of the slices of
        // `pairs`, which the kernel only reads and which outlive the call;
        // the remote iovecs are only interpreted in the target's address
        // space; both arrays hold `batch.len()` entries.
        let n = check(unsafe {
            libc::process_vm_writev(
                pid,
                local.as_ptr(),
                local.len() as libc::c_ulong,
                remote.as_ptr(),
                remote.len() as libc::c_ulong,
                0,
            )
        } as libc::c_long)? as usize;
        if n == want {
            continue;
        }
        // Short: skip the pairs written whole, finish the rest one by one.
        let mut left = n;
        for &(b, a) in batch {
            if left >= b.len() {
                left -= b.len();
                continue;
            }
            vm_write_all(pid, a + left as u64, &b[left..])?;
            left = 0;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pairs land at their addresses (here in this process), in batches
    /// larger than IOV_MAX.
    #[test]
    fn pairs_are_written_where_they_belong() {
        let n = IOV_MAX + 5;
        let mut dst = vec![0u8; n * 8];
        let src: Vec<[u8; 8]> = (0..n).map(|i| (i as u64 + 1).to_ne_bytes()).collect();
        let base = dst.as_mut_ptr() as u64;
        // Reversed order: remote addresses need not increase.
        let pairs: Vec<(&[u8], u64)> = src
            .iter()
            .enumerate()
            .rev()
            .map(|(i, s)| (&s[..], base + 8 * i as u64))
            .collect();
        vm_write_pairs(std::process::id() as i32, &pairs).unwrap();
        let dst = std::hint::black_box(dst);
        for i in 0..n {
            let v = u64::from_ne_bytes(dst[8 * i..8 * i + 8].try_into().unwrap());
            assert_eq!(v, i as u64 + 1, "word {i}");
        }
    }

    /// A remote address that is not mapped is an error, not a silent
    /// short write.
    #[test]
    fn unmapped_remote_fails() {
        let b = [1u8; 16];
        let e = vm_write_pairs(std::process::id() as i32, &[(&b[..], 8)]).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EFAULT), "{e}");
    }
}
