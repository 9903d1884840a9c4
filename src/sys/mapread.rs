//! Reading a file without read(2): through a shared read-only mapping of
//! it, copied with process_vm_readv on cairn's own memory. A page fault
//! raises no fsnotify event, where read(2), pread(2), splice and
//! copy_file_range raise IN_ACCESS (FAN_ACCESS) for every inotify and
//! fanotify watcher of the file, those of the dumped tree included; and a
//! mapping neither uses nor moves the description's file position. The
//! copy goes through process_vm_readv so that a page past the end of a
//! file that shrank meanwhile is an EFAULT (a short read) instead of a
//! SIGBUS in cairn.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use super::mem::vm_read;

/// Reads up to `buf.len()` bytes of the file open on `fd` at `offset`
/// through a mapping: the bytes read, fewer at the end of the file (0
/// past it). Fails (EACCES) if the description is not open for reading,
/// (ENODEV) if its file system cannot map files.
pub fn read_at(fd: BorrowedFd<'_>, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
    // The last page of a mapping reads zeros past the end of the file:
    // read no further than the file's size now.
    let size = rustix::fs::fstat(fd)?.st_size as u64;
    let want = (size.saturating_sub(offset)).min(buf.len() as u64) as usize;
    let buf = &mut buf[..want];
    if buf.is_empty() {
        return Ok(0);
    }
    let page = 4096u64;
    let start = offset & !(page - 1);
    let delta = (offset - start) as usize;
    let len = delta + buf.len();
    // SAFETY: a new read-only shared mapping of `fd` at an address the
    // kernel picks; it aliases no Rust object, is only read through
    // process_vm_readv (which faults nothing into cairn: a page it
    // cannot map is an error) and is unmapped below.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            start as libc::off_t,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    let r = vm_read(std::process::id() as i32, p as u64 + delta as u64, buf);
    // SAFETY: unmaps exactly the mapping made above; nothing refers to it.
    unsafe {
        libc::munmap(p, len);
    }
    match r {
        Ok(n) => Ok(n),
        // The first page lies past the end of the file.
        Err(e) if e.raw_os_error() == Some(libc::EFAULT) => Ok(0),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsFd;

    /// The bytes of a file, at any offset, and short at its end; the
    /// file position is not moved; a write-only description is refused.
    #[test]
    fn reads_through_a_mapping() {
        let path = std::env::temp_dir().join(format!("cairn-mapread-{}", std::process::id()));
        let mut f = std::fs::File::create(&path).unwrap();
        let data: Vec<u8> = (0..10000u32).map(|i| (i % 251) as u8).collect();
        f.write_all(&data).unwrap();
        drop(f);
        let f = std::fs::File::open(&path).unwrap();
        let mut buf = vec![0u8; 300];
        assert_eq!(read_at(f.as_fd(), 4000, &mut buf).unwrap(), 300);
        assert_eq!(&buf[..], &data[4000..4300]);
        assert_eq!(read_at(f.as_fd(), 9900, &mut buf).unwrap(), 100);
        assert_eq!(&buf[..100], &data[9900..]);
        assert_eq!(read_at(f.as_fd(), 20000, &mut buf).unwrap(), 0);
        use std::io::Seek;
        assert_eq!((&f).stream_position().unwrap(), 0);
        let w = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        assert!(read_at(w.as_fd(), 0, &mut buf).is_err());
        let _ = std::fs::remove_file(&path);
    }
}
