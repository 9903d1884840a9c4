//! The in-target agent: a list of system calls run by a small loop in
//! the task itself, with one ptrace stop at its end instead of one per
//! call (`inject::SYSCALL_TRAP`).
//!
//! The calls are written as descriptors into the scratch area
//! ([`encode`]); the task is pointed at [`AGENT_CODE`] (written by the
//! restore into its restorer area, after the `syscall; int3`) with `rbx`
//! at the first descriptor and `r12` past the last, and let go. The loop
//! runs the calls in order, writes each result over its descriptor's
//! number, and stops at its `int3` after the last call or at the first
//! call that fails (a result in -4095..-1, or, for a descriptor marked
//! [`EXACT`], any result other than the one expected): `rbx` then points
//! at that descriptor, and nothing after it has run. The tracer reads the
//! results back and reports the failed call by its index ([`Failed`]).
//!
//! The task runs with the mask and the SIGTRAP disposition of the single
//! calls (`inject::TRAP_SIGMASK`): the `int3` is the same stop.
//!
//! A call may take as its first argument the result of an earlier call
//! of the same list ([`Syscall::with_arg0_result`], descriptor flag
//! [`ARG0_RESULT`]): an fd made by one call (pidfd_open, pidfd_getfd,
//! F_DUPFD) is used and closed by the next ones in the same batch, so
//! that work whose numbers only the kernel knows still costs one stop.

use std::io;

/// Bytes of one descriptor: `[nr | flags << 32, a0, a1, a2, a3, a4, a5,
/// expected]`; the result is written over the first word.
pub const ENTRY_LEN: usize = 64;

/// Flag of a descriptor: the call must return exactly `expected`.
pub const EXACT: u64 = 1;

/// Flag of a descriptor: its argument 0 is the address of an earlier
/// descriptor's result word, which the loop loads in its place.
pub const ARG0_RESULT: u64 = 2;

/// The loop (assembled with GNU as from the listing below, 79 bytes).
/// Uses rbx and r12 (set by the tracer), r13 and the syscall registers;
/// no stack, no memory but the descriptors.
///
/// ```text
///  0: 4c 39 e3             loop: cmp  %r12,%rbx
///  3: 73 49                      jae  done            past the last descriptor
///  5: 8b 03                      mov  (%rbx),%eax     the number (low 32 bits)
///  7: 44 0f b6 6b 04             movzbl 4(%rbx),%r13d the flags
///  c: 48 8b 7b 08                mov  8(%rbx),%rdi
/// 10: 41 f6 c5 02                test $2,%r13b        ARG0_RESULT?
/// 14: 74 03                      je   19
/// 16: 48 8b 3f                   mov  (%rdi),%rdi     an earlier result
/// 19: 48 8b 73 10                mov  16(%rbx),%rsi
/// 1d: 48 8b 53 18                mov  24(%rbx),%rdx
/// 21: 4c 8b 53 20                mov  32(%rbx),%r10
/// 25: 4c 8b 43 28                mov  40(%rbx),%r8
/// 29: 4c 8b 4b 30                mov  48(%rbx),%r9
/// 2d: 0f 05                      syscall
/// 2f: 48 89 03                   mov  %rax,(%rbx)     the result
/// 32: 41 f6 c5 01                test $1,%r13b        EXACT?
/// 36: 74 08                      je   40
/// 38: 48 3b 43 38                cmp  56(%rbx),%rax   the expected result
/// 3c: 75 10                      jne  done
/// 3e: eb 08                      jmp  next
/// 40: 48 3d 01 f0 ff ff          cmp  $-4095,%rax     an errno?
/// 46: 73 06                      jae  done
/// 48: 48 83 c3 40          next: add  $64,%rbx
/// 4c: eb b2                      jmp  loop
/// 4e: cc                   done: int3
/// ```
pub const AGENT_CODE: [u8; 79] = [
    0x4c, 0x39, 0xe3, 0x73, 0x49, 0x8b, 0x03, 0x44, 0x0f, 0xb6, 0x6b, 0x04, 0x48, 0x8b, 0x7b, 0x08,
    0x41, 0xf6, 0xc5, 0x02, 0x74, 0x03, 0x48, 0x8b, 0x3f, 0x48, 0x8b, 0x73, 0x10, 0x48, 0x8b, 0x53,
    0x18, 0x4c, 0x8b, 0x53, 0x20, 0x4c, 0x8b, 0x43, 0x28, 0x4c, 0x8b, 0x4b, 0x30, 0x0f, 0x05, 0x48,
    0x89, 0x03, 0x41, 0xf6, 0xc5, 0x01, 0x74, 0x08, 0x48, 0x3b, 0x43, 0x38, 0x75, 0x10, 0xeb, 0x08,
    0x48, 0x3d, 0x01, 0xf0, 0xff, 0xff, 0x73, 0x06, 0x48, 0x83, 0xc3, 0x40, 0xeb, 0xb2, 0xcc,
];

/// Offset of the final `int3` in [`AGENT_CODE`].
pub const AGENT_TRAP: usize = 0x4e;

/// Offset of [`AGENT_CODE`] in the restorer area (after
/// `inject::SYSCALL_TRAP`).
pub const AGENT_OFFSET: u64 = 16;

/// One call of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Syscall {
    pub nr: libc::c_long,
    pub args: [u64; 6],
    /// The result the call must give (`None`: any but an error).
    pub expect: Option<u64>,
    /// Bytes the call reads (a structure, a string): placed in the
    /// scratch area with the batch, their address in argument `.0`.
    pub data: Option<(usize, Vec<u8>)>,
    /// Argument 0 is the result of call `.0` of the same list, an
    /// earlier one (in place of what `args` has there).
    pub arg0_from: Option<usize>,
}

impl Syscall {
    /// A call whose result may be anything but an error.
    pub fn new(nr: libc::c_long, args: &[u64]) -> Syscall {
        let mut a = [0u64; 6];
        for (d, s) in a.iter_mut().zip(args) {
            *d = *s;
        }
        Syscall {
            nr,
            args: a,
            expect: None,
            data: None,
            arg0_from: None,
        }
    }

    /// This call with the result of call `index` of its list (an earlier
    /// one: an fd it made) as argument 0.
    pub fn with_arg0_result(mut self, index: usize) -> Syscall {
        self.arg0_from = Some(index);
        self
    }

    /// This call with `data` in memory of the task, its address as
    /// argument `arg` (in place of what `args` had there).
    pub fn with_data(mut self, arg: usize, data: Vec<u8>) -> Syscall {
        self.data = Some((arg.min(5), data));
        self
    }

    /// Bytes this call takes in a batch: its descriptor and its data
    /// (8-byte aligned).
    pub fn batch_len(&self) -> usize {
        ENTRY_LEN
            + self
                .data
                .as_ref()
                .map_or(0, |d| d.1.len().next_multiple_of(8))
    }
}

/// The call of a batch that failed (index in the batch) and how; the
/// calls after it did not run.
#[derive(Debug)]
pub struct Failed {
    pub index: usize,
    pub error: io::Error,
}

/// The failure of a call that gave `got` (a raw result) against what
/// `call` asks for; `None` if it succeeded.
pub fn check(call: &Syscall, got: u64) -> Option<io::Error> {
    let errno = (got as i64) < 0 && (got as i64) >= -4095;
    match call.expect {
        Some(want) if got != want => Some(if errno {
            io::Error::from_raw_os_error(-(got as i64) as i32)
        } else {
            io::Error::other(format!("returned {got:#x}, not {want:#x}"))
        }),
        Some(_) => None,
        None if errno => Some(io::Error::from_raw_os_error(-(got as i64) as i32)),
        None => None,
    }
}

/// A call whose argument 0 refers to call `from`, which is not an
/// earlier call of its list.
pub fn bad_reference(index: usize, from: usize) -> io::Error {
    io::Error::other(format!(
        "call {index} takes the result of call {from}, which does not run before it"
    ))
}

/// The descriptors of `calls` followed by their data, ready to be
/// written into the task at address `at`. A call's
/// [`Syscall::arg0_from`] must name an earlier call of `calls`.
pub fn encode(calls: &[Syscall], at: u64) -> io::Result<Vec<u8>> {
    let descs = calls.len() * ENTRY_LEN;
    let mut data: Vec<u8> = Vec::new();
    let mut out = Vec::with_capacity(descs);
    for (i, c) in calls.iter().enumerate() {
        let mut flags = if c.expect.is_some() { EXACT } else { 0 };
        let mut args = c.args;
        if let Some(from) = c.arg0_from {
            if from >= i {
                return Err(bad_reference(i, from));
            }
            flags |= ARG0_RESULT;
            args[0] = at + (from * ENTRY_LEN) as u64;
        }
        let first = (c.nr as u64 & 0xffff_ffff) | flags << 32;
        out.extend_from_slice(&first.to_ne_bytes());
        if let Some((i, d)) = &c.data {
            args[*i] = at + (descs + data.len()) as u64;
            data.extend_from_slice(d);
            data.resize(data.len().next_multiple_of(8), 0);
        }
        for a in args {
            out.extend_from_slice(&a.to_ne_bytes());
        }
        out.extend_from_slice(&c.expect.unwrap_or(0).to_ne_bytes());
    }
    out.extend_from_slice(&data);
    Ok(out)
}

/// The results of a batch that stopped at descriptor `stopped` (the
/// value of `rbx` minus the first descriptor's address, over
/// [`ENTRY_LEN`]), read back as `descs`: `Ok` with every result when all
/// ran, else the failed call. A stop the calls cannot explain is an
/// error of the batch itself.
pub fn decode(
    calls: &[Syscall],
    descs: &[u8],
    stopped: usize,
) -> io::Result<Result<Vec<u64>, Failed>> {
    let word = |i: usize| {
        descs
            .get(i * ENTRY_LEN..i * ENTRY_LEN + 8)
            .map(|b| u64::from_ne_bytes(b.try_into().unwrap_or([0; 8])))
    };
    let ran = stopped.min(calls.len());
    let mut out = Vec::with_capacity(calls.len());
    for (i, c) in calls.iter().enumerate().take(ran) {
        let got = word(i).ok_or_else(|| io::Error::other("short read of the results"))?;
        if let Some(error) = check(c, got) {
            return Err(io::Error::other(format!(
                "the agent went past call {i}, which failed ({error})"
            )));
        }
        out.push(got);
    }
    if stopped == calls.len() {
        return Ok(Ok(out));
    }
    let c = calls
        .get(stopped)
        .ok_or_else(|| io::Error::other(format!("the agent stopped at call {stopped}")))?;
    let got = word(stopped).ok_or_else(|| io::Error::other("short read of the results"))?;
    let error = check(c, got).ok_or_else(|| {
        io::Error::other(format!(
            "the agent stopped at call {stopped}, which succeeded"
        ))
    })?;
    Ok(Err(Failed {
        index: stopped,
        error,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_layout() {
        let c = AGENT_CODE;
        assert_eq!(c[AGENT_TRAP], 0xcc);
        assert_eq!(c.len(), AGENT_TRAP + 1);
        assert_eq!(c[0x2d..0x2f], [0x0f, 0x05]);
        // Every exit goes to the int3; the loop goes back to 0.
        assert_eq!(0x05 + c[0x04] as usize, AGENT_TRAP);
        assert_eq!(0x3e + c[0x3d] as usize, AGENT_TRAP);
        assert_eq!(0x48 + c[0x47] as usize, AGENT_TRAP);
        assert_eq!(0x4e + c[0x4d] as i8 as i64, 0);
        // The indirect argument 0 is skipped without its flag.
        assert_eq!(c[0x13] as u64, ARG0_RESULT);
        assert_eq!(0x16 + c[0x15] as usize, 0x19);
        assert_eq!(c[0x35] as u64, EXACT);
        // The descriptor stride.
        assert_eq!(c[0x4b] as usize, ENTRY_LEN);
        // -4095 as the sign-extended immediate.
        assert_eq!(c[0x42..0x46], (-4095i32).to_le_bytes());
        // The restorer area has the syscall; int3 before the agent.
        assert!(AGENT_OFFSET as usize >= crate::sys::inject::SYSCALL_TRAP.len());
    }

    #[test]
    fn encoding() {
        let mut c = Syscall::new(libc::SYS_mprotect, &[0x1000, 0x2000, 1]);
        c.expect = Some(0);
        let d = Syscall::new(libc::SYS_prctl, &[15, 0]).with_data(1, b"comm\0".to_vec());
        assert_eq!(d.batch_len(), ENTRY_LEN + 8);
        let b = encode(&[Syscall::new(libc::SYS_madvise, &[1, 2, 3]), c, d], 0x1000).unwrap();
        assert_eq!(b.len(), 3 * ENTRY_LEN + 8);
        // The data follows the descriptors; its address is in argument 1.
        assert_eq!(b[3 * ENTRY_LEN..], *b"comm\0\0\0\0");
        let a1 = 2 * ENTRY_LEN + 16;
        assert_eq!(b[a1..a1 + 8], (0x1000 + 3 * ENTRY_LEN as u64).to_ne_bytes());
        assert_eq!(b[..8], (libc::SYS_madvise as u64).to_ne_bytes());
        assert_eq!(b[8..16], 1u64.to_ne_bytes());
        assert_eq!(
            b[ENTRY_LEN..ENTRY_LEN + 8],
            (libc::SYS_mprotect as u64 | EXACT << 32).to_ne_bytes()
        );
        assert_eq!(b[ENTRY_LEN + 56..2 * ENTRY_LEN], 0u64.to_ne_bytes());
    }

    #[test]
    fn results_as_arguments() {
        let open = Syscall::new(libc::SYS_pidfd_open, &[7, 0]);
        let get = Syscall::new(libc::SYS_pidfd_getfd, &[0, 3, 0]).with_arg0_result(0);
        let close = Syscall::new(libc::SYS_close, &[]).with_arg0_result(0);
        let b = encode(&[open.clone(), get, close], 0x2000).unwrap();
        // The flag, and argument 0 is where the loop wrote call 0's result.
        assert_eq!(
            b[ENTRY_LEN..ENTRY_LEN + 8],
            (libc::SYS_pidfd_getfd as u64 | ARG0_RESULT << 32).to_ne_bytes()
        );
        assert_eq!(b[ENTRY_LEN + 8..ENTRY_LEN + 16], 0x2000u64.to_ne_bytes());
        assert_eq!(
            b[2 * ENTRY_LEN + 8..2 * ENTRY_LEN + 16],
            0x2000u64.to_ne_bytes()
        );
        assert_eq!(b[8..16], 7u64.to_ne_bytes());
        // Only an earlier call can be referred to.
        let later = Syscall::new(libc::SYS_close, &[]).with_arg0_result(1);
        assert!(encode(&[later, open.clone()], 0).is_err());
        let itself = Syscall::new(libc::SYS_close, &[]).with_arg0_result(0);
        assert!(encode(&[itself], 0).is_err());
    }

    fn results(r: &[i64]) -> Vec<u8> {
        r.iter()
            .flat_map(|&v| {
                let mut e = [0u8; ENTRY_LEN];
                e[..8].copy_from_slice(&v.to_ne_bytes());
                e
            })
            .collect()
    }

    #[test]
    fn decoding() {
        let mut exact = Syscall::new(libc::SYS_mmap, &[0x1000]);
        exact.expect = Some(0x1000);
        let calls = [Syscall::new(libc::SYS_mprotect, &[]), exact];
        assert_eq!(
            decode(&calls, &results(&[0, 0x1000]), 2).unwrap().unwrap(),
            vec![0, 0x1000]
        );
        let f = decode(&calls, &results(&[0, -12]), 1).unwrap().unwrap_err();
        assert_eq!((f.index, f.error.raw_os_error()), (1, Some(libc::ENOMEM)));
        let f = decode(&calls, &results(&[0, 0x2000]), 1)
            .unwrap()
            .unwrap_err();
        assert!(f.error.to_string().contains("not 0x1000"), "{}", f.error);
        let f = decode(&calls, &results(&[-22, 0]), 0).unwrap().unwrap_err();
        assert_eq!((f.index, f.error.raw_os_error()), (0, Some(libc::EINVAL)));
        // A stop after a failed call, or at one that succeeded, is not
        // what the loop does.
        assert!(decode(&calls, &results(&[-22, 0x1000]), 2).is_err());
        assert!(decode(&calls, &results(&[0, 0x1000]), 1).is_err());
        assert!(decode(&calls, &results(&[0, 0x1000]), 3).is_err());
    }
}
