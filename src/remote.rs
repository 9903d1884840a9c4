//! A ptrace-stopped task plus a scratch area in its address space: enough
//! to run any system call in it with pointer arguments. This replaces
//! CRIU's parasite: nothing is written into the target's own memory.

use crate::error::{Error, Result};
use crate::sys::inject::Remote;
use crate::sys::mem;

pub struct Agent {
    pub remote: Remote,
    /// Thread-group id, for memory access.
    pub pid: i32,
    pub scratch: u64,
    pub scratch_len: u64,
}

/// Size of the scratch mapping cairn creates in a task during dump.
pub const SCRATCH_LEN: u64 = 64 * 1024;

impl Agent {
    pub fn tid(&self) -> i32 {
        self.remote.tid
    }

    /// Runs a syscall; errors name the task and the syscall.
    pub fn call(&mut self, name: &str, nr: libc::c_long, args: &[u64]) -> Result<u64> {
        let tid = self.remote.tid;
        self.remote
            .syscall(nr, args)
            .map_err(|e| Error::sys(tid, format!("remote {name}"), e))
    }

    /// Writes `bytes` at scratch offset `off`; returns the remote address.
    pub fn put(&self, off: u64, bytes: &[u8]) -> Result<u64> {
        if off + bytes.len() as u64 > self.scratch_len {
            return Err(Error::sys(
                self.pid,
                "scratch",
                std::io::Error::other("scratch area too small"),
            ));
        }
        let addr = self.scratch + off;
        mem::vm_write_all(self.pid, addr, bytes)
            .map_err(|e| Error::sys(self.pid, format!("write scratch at {addr:#x}"), e))?;
        Ok(addr)
    }

    /// Writes a NUL-terminated string at scratch offset `off`.
    pub fn put_cstr(&self, off: u64, s: &str) -> Result<u64> {
        let mut b = s.as_bytes().to_vec();
        b.push(0);
        self.put(off, &b)
    }

    pub fn get(&self, off: u64, len: usize) -> Result<Vec<u8>> {
        let mut b = vec![0u8; len];
        let addr = self.scratch + off;
        mem::vm_read_all(self.pid, addr, &mut b)
            .map_err(|e| Error::sys(self.pid, format!("read scratch at {addr:#x}"), e))?;
        Ok(b)
    }

    pub fn get_u64(&self, off: u64) -> Result<u64> {
        let b = self.get(off, 8)?;
        Ok(u64::from_ne_bytes(b.try_into().unwrap_or([0; 8])))
    }

    pub fn get_u32(&self, off: u64) -> Result<u32> {
        let b = self.get(off, 4)?;
        Ok(u32::from_ne_bytes(b.try_into().unwrap_or([0; 4])))
    }
}

/// Finds the address of a `syscall` instruction (0f 05) in `pid`'s vDSO,
/// or failing that in any executable mapping.
pub fn find_syscall_insn(pid: i32) -> Result<u64> {
    let maps = crate::procfs::read_maps(pid)?;
    let mut candidates: Vec<&crate::procfs::MapsEntry> =
        maps.iter().filter(|m| m.path == "[vdso]").collect();
    candidates.extend(
        maps.iter()
            .filter(|m| m.exec && m.read && m.path != "[vdso]" && m.path != "[vsyscall]"),
    );
    for m in candidates {
        let len = (m.end - m.start).min(1 << 20) as usize;
        let mut buf = vec![0u8; len];
        if mem::vm_read_all(pid, m.start, &mut buf).is_err() {
            continue;
        }
        if let Some(i) = buf.windows(2).position(|w| w == [0x0f, 0x05]) {
            return Ok(m.start + i as u64);
        }
    }
    Err(Error::unsupported(
        pid,
        "no syscall instruction found in the vDSO or any executable mapping",
    ))
}
