//! Kernel structures passed to system calls, defined once: the local
//! calls in sys/ and the calls cairn injects into other processes
//! ([`crate::remote`]) share them.

/// struct clone_args (linux/sched.h), as of Linux 5.7 (with `cgroup`).
#[repr(C)]
#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloneArgs {
    pub flags: u64,
    pub pidfd: u64,
    pub child_tid: u64,
    pub parent_tid: u64,
    pub exit_signal: u64,
    pub stack: u64,
    pub stack_size: u64,
    pub tls: u64,
    pub set_tid: u64,
    pub set_tid_size: u64,
    pub cgroup: u64,
}

impl CloneArgs {
    /// The size clone3 is told (CLONE_ARGS_SIZE_VER2).
    pub const SIZE: usize = std::mem::size_of::<CloneArgs>();

    /// The bytes of the structure, to write into another process.
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let words = [
            self.flags,
            self.pidfd,
            self.child_tid,
            self.parent_tid,
            self.exit_signal,
            self.stack,
            self.stack_size,
            self.tls,
            self.set_tid,
            self.set_tid_size,
            self.cgroup,
        ];
        let mut b = [0u8; Self::SIZE];
        for (chunk, w) in b.chunks_exact_mut(8).zip(words) {
            chunk.copy_from_slice(&w.to_ne_bytes());
        }
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clone_args_layout() {
        assert_eq!(CloneArgs::SIZE, 88);
        let a = CloneArgs {
            flags: 1,
            exit_signal: 17,
            set_tid: 0x1234,
            set_tid_size: 1,
            ..Default::default()
        };
        let b = a.to_bytes();
        let word = |i: usize| u64::from_ne_bytes(b[i * 8..i * 8 + 8].try_into().unwrap());
        assert_eq!(
            (word(0), word(4), word(8), word(9), word(10)),
            (1, 17, 0x1234, 1, 0)
        );
        // Field order as in linux/sched.h: set_tid is the ninth u64.
        assert_eq!(std::mem::offset_of!(CloneArgs, set_tid), 64);
        assert_eq!(std::mem::offset_of!(CloneArgs, cgroup), 80);
    }
}
