//! A ptrace-stopped task plus a scratch area in its address space: enough
//! to run any system call in it with pointer arguments. This replaces
//! CRIU's parasite: nothing is written into the target's own memory.

use crate::error::{Error, Result};
use crate::sys::inject::Remote;
use crate::sys::mem;

pub mod batch;
mod calls;
pub mod fake;

pub use calls::{
    set_comm_call, setrlimit_call, sigaction_call, sigaltstack_call, Calls, CLONE3_EACH_MAX,
};

pub struct Agent {
    pub remote: Remote,
    /// Thread-group id, for memory access.
    pub pid: i32,
    pub scratch: u64,
    pub scratch_len: u64,
}

/// Signal dispositions by signal number (index 0 unused), as
/// `rt_sigaction` reads them: (handler, flags, restorer, mask).
pub type Dispositions = [Option<[u64; 4]>; 65];

/// Resource limits by resource (`RLIM_NLIMITS`), as prlimit64 reads
/// them: (soft, hard).
pub type Limits = [Option<(u64, u64)>; crate::kinds::task::validate::RLIM_NLIMITS as usize];

/// What every vessel holds when its attributes are restored: the first
/// vessel's signal dispositions and resource limits, inherited by every
/// fork (nothing changes them in a vessel before its attributes are
/// restored, after its children are forked), so they are read once.
#[derive(Clone, Copy)]
pub struct VesselState {
    pub actions: Dispositions,
    pub limits: Limits,
}

impl VesselState {
    /// Nothing known: every call is made.
    pub fn unknown() -> VesselState {
        VesselState {
            actions: [None; 65],
            limits: [None; crate::kinds::task::validate::RLIM_NLIMITS as usize],
        }
    }

    /// Reads the state of the first vessel, `agent`'s process: every
    /// disposition (61 calls in it; SIGTRAP's is left unknown, so it is
    /// always set: the `int3` of a restore's calls resets an ignored
    /// SIGTRAP to SIG_DFL in the vessels, see `inject::SYSCALL_TRAP`,
    /// whatever cairn's own was) and every resource limit (from cairn,
    /// prlimit64 on its pid; in it if cairn may not).
    pub fn read(agent: &mut Agent) -> Result<VesselState> {
        let mut s = VesselState::unknown();
        for sig in 1..=64u32 {
            if ![libc::SIGKILL, libc::SIGSTOP, libc::SIGTRAP].contains(&(sig as i32)) {
                s.actions[sig as usize] = Some(agent.sigaction_get(sig)?);
            }
        }
        for (res, l) in s.limits.iter_mut().enumerate() {
            let res = res as u32;
            *l = Some(match crate::sys::task::get_rlimit(agent.pid, res) {
                Ok(v) => v,
                Err(_) => agent.getrlimit(res)?,
            });
        }
        Ok(s)
    }
}

/// The calls of an [`Agent`] in a process whose dispositions and limits
/// are `known` ([`VesselState`]): a `sigaction_set` or `setrlimits` of
/// what the process already has is skipped (it would change nothing in
/// the kernel), the others are run and recorded, and `getrlimit` answers
/// from what is known. A restored process with mostly default
/// dispositions and the limits of the shell cairn runs in costs no call
/// for them (62 and 32 remote calls per process before; issue 15).
pub struct Known<'a> {
    pub agent: &'a mut Agent,
    pub known: &'a mut VesselState,
}

/// Size of the scratch mapping cairn creates in a task during dump.
pub const SCRATCH_LEN: u64 = 64 * 1024;

impl Agent {
    /// Writes `bytes` at scratch offset `off`; returns the remote address.
    fn put_scratch(&self, off: u64, bytes: &[u8]) -> Result<u64> {
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

    fn get_scratch(&self, off: u64, len: usize) -> Result<Vec<u8>> {
        if off + len as u64 > self.scratch_len {
            return Err(Error::sys(
                self.pid,
                "scratch",
                std::io::Error::other("read beyond the scratch area"),
            ));
        }
        let mut b = vec![0u8; len];
        let addr = self.scratch + off;
        mem::vm_read_all(self.pid, addr, &mut b)
            .map_err(|e| Error::sys(self.pid, format!("read scratch at {addr:#x}"), e))?;
        Ok(b)
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

/// Where injected syscalls run in a task being dumped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyscallSite {
    /// A `syscall` instruction.
    pub insn: u64,
    /// The parking loop around `insn` (see `Remote::guard`):
    /// `(loop_entry, last byte)`, or None when the vDSO has none (calls
    /// then run unguarded).
    pub parking: Option<(u64, u64)>,
    /// The words the parking loop's frame holds below `[P] = P` (see
    /// [`find_clock_loop`]; none for [`find_parking_loop`]'s).
    pub below: Below,
}

/// Up to four words of a parking frame below `P`, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Below {
    pub n: u8,
    pub words: [u64; 4],
}

impl Below {
    pub fn words(&self) -> &[u64] {
        &self.words[..self.n as usize]
    }
}

/// An invalid clock id (positive and beyond every clock the kernel has):
/// clock_gettime and clock_getres fail with EINVAL before they look at
/// their other argument.
pub const BAD_CLOCK: u64 = 0x7fff_ffff;

impl SyscallSite {
    /// Whether `rip` lies in the parking loop.
    pub fn parks(&self, rip: u64) -> bool {
        self.parking
            .is_some_and(|(lo, hi)| (lo..=hi).contains(&rip))
    }
}

/// Harmless with all-zero arguments: gettimeofday, clock_gettime,
/// clock_getres.
const PARKING_SYSCALLS: [u8; 3] = [0x60, 0xe4, 0xe5];

/// Finds in `code` a sequence `mov $nr, %eax; syscall; leave; xor...;
/// ret` where `nr` is harmless with zero arguments and the xors clear
/// rdi and rsi (and never rbp or rsp): with `rbp` pointing at a frame
/// `[P] = P, [P+8] = start` it loops forever. Returns the offsets of the
/// `mov`, of the `syscall` and of the `ret`.
pub fn find_parking_loop(code: &[u8]) -> Option<(usize, usize, usize)> {
    find_loops(code)
        .find(|l| l.3)
        .map(|(mov, insn, ret, _)| (mov, insn, ret))
}

/// Every `mov $nr, %eax; syscall; leave; xor...; ret` of `code` with `nr`
/// of [`PARKING_SYSCALLS`] and xors that never clear rbp or rsp: offsets
/// of the `mov`, the `syscall` and the `ret`, and whether the xors clear
/// rdi and rsi.
fn find_loops(code: &[u8]) -> impl Iterator<Item = (usize, usize, usize, bool)> + '_ {
    (0..code.len().saturating_sub(7)).filter_map(move |i| {
        let w = &code[i..];
        if !(w[0] == 0xb8
            && PARKING_SYSCALLS.contains(&w[1])
            && w[2..5] == [0, 0, 0]
            && w[5..8] == [0x0f, 0x05, 0xc9])
        {
            return None;
        }
        let (mut j, mut rdi, mut rsi) = (8, false, false);
        loop {
            match w.get(j..j + 3) {
                // xor r8d..r15d with itself
                Some([0x45, 0x31, m]) if m >> 6 == 3 && (m >> 3) & 7 == m & 7 => j += 3,
                _ => match w.get(j..j + 2) {
                    Some([0x31, m]) if m >> 6 == 3 && (m >> 3) & 7 == m & 7 => {
                        match m & 7 {
                            4 | 5 => break, // esp, ebp
                            6 => rsi = true,
                            7 => rdi = true,
                            _ => {}
                        }
                        j += 2;
                    }
                    _ => break,
                },
            }
        }
        (w.get(j) == Some(&0xc3)).then_some((i, i + 5, i + j, rdi && rsi))
    })
}

/// The other kind of parking loop, in the clock_gettime and clock_getres
/// fallbacks of a vDSO built without CONFIG_ZERO_CALL_USED_REGS (Debian's
/// 6.12, for one): `mov %REG32, %edi; mov $nr, %eax; syscall; lea
/// -N(%rbp), %rsp; pop ...; pop %rbp; ret`, `nr` clock_gettime or
/// clock_getres, REG one of the registers popped. With `rbp = P` and a
/// frame whose popped words lie below `P` (REG's word [`BAD_CLOCK`]),
/// `[P] = P` and `[P+8]` = the `mov`, it loops forever in
/// `clock_gettime(BAD_CLOCK, ...)`, which fails with EINVAL and writes
/// nothing, whatever the other registers hold. Returns the offsets of the
/// `mov`, of the `syscall` and of the `ret`, and the words below `P`.
pub fn find_clock_loop(code: &[u8]) -> Option<(usize, usize, usize, Below)> {
    (0..code.len()).find_map(|i| {
        let w = &code[i..];
        // mov %REG32,%edi (a REX.R prefix for r8d..r15d)
        let (src, mut j) = match w {
            [0x89, m, ..] if m >> 6 == 3 && m & 7 == 7 => ((m >> 3) & 7, 2),
            [0x44, 0x89, m, ..] if m >> 6 == 3 && m & 7 == 7 => (8 + ((m >> 3) & 7), 3),
            _ => return None,
        };
        let mov = w.get(j..j + 7)?;
        if !(mov[0] == 0xb8
            && [0xe4, 0xe5].contains(&mov[1])
            && mov[2..5] == [0, 0, 0]
            && mov[5..7] == [0x0f, 0x05])
        {
            return None;
        }
        let insn = i + j + 5;
        j += 7;
        // lea -N(%rbp),%rsp
        let disp = match w.get(j..j + 4)? {
            [0x48, 0x8d, 0x65, d] => *d as i8,
            _ => return None,
        };
        j += 4;
        if disp >= 0 || disp % 8 != 0 || -(disp as i32) / 8 > 4 {
            return None;
        }
        let n = (-(disp as i32) / 8) as usize;
        let mut below = Below {
            n: n as u8,
            words: [0; 4],
        };
        let mut has_src = false;
        for k in 0..n {
            // pop of rbx, rsi, rdi or r8..r15 (never rsp or rbp here)
            let reg = match w.get(j..)? {
                [0x41, r, ..] if (0x58..=0x5f).contains(r) => {
                    j += 2;
                    8 + (r - 0x58)
                }
                [r, ..] if [0x5b, 0x5e, 0x5f].contains(r) => {
                    j += 1;
                    r - 0x58
                }
                _ => return None,
            };
            if reg == src {
                below.words[k] = BAD_CLOCK;
                has_src = true;
            }
        }
        (has_src && w.get(j..j + 2) == Some(&[0x5d, 0xc3][..])).then_some((
            i,
            insn,
            i + j + 1,
            below,
        ))
    })
}

/// cairn's own parking loop, for a vDSO that has none (a kernel built
/// without CONFIG_ZERO_CALL_USED_REGS, such as Debian's 5.10, 6.1 and
/// 6.12, has no `xor`s that clear rdi and rsi after its `syscall`s), in a
/// page of the task's own ([`own_parking_site`]). Its first `syscall` is
/// where the injected calls run; a task let go after one (cairn killed)
/// goes on into an endless `gettimeofday(NULL, NULL)` loop, never using
/// rbp, until the guardian puts its registers back:
///
/// ```text
///  0: 0f 05            syscall            the injected calls
///  2: 31 ff            xor %edi,%edi      the loop
///  4: 31 f6            xor %esi,%esi
///  6: b8 60 00 00 00   mov $0x60,%eax     gettimeofday
/// 11: 0f 05            syscall
/// 13: eb f3            jmp 2
/// ```
pub const PARKING_CODE: [u8; 15] = [
    0x0f, 0x05, 0x31, 0xff, 0x31, 0xf6, 0xb8, 0x60, 0x00, 0x00, 0x00, 0x0f, 0x05, 0xeb, 0xf3,
];

/// Where cairn's own parking page goes in a process with mappings `maps`
/// (sorted, as /proc/PID/maps lists them): one page below the top of the
/// highest gap of at least three pages (an unmapped page on each side: it
/// never merges with a neighbour, so the guardian can tell it by its
/// address alone), as the kernel's top-down placement would choose, but
/// never in the gap below a `[stack]` (its growth and guard gap) nor in
/// one of less than 1 GiB above the `[heap]` (its growth). Chosen before
/// the mapping exists so that the guardian is told the address first
/// ([`own_parking_site`]). None: no such gap.
pub fn parking_page_addr(maps: &[crate::procfs::MapsEntry]) -> Option<u64> {
    let page = crate::sys::PAGE_SIZE;
    let low = 0x10000u64.max(page);
    // Not [vsyscall], in the kernel's half.
    let user: Vec<&crate::procfs::MapsEntry> = maps.iter().filter(|m| m.end <= 1 << 63).collect();
    user.windows(2)
        .rev()
        .filter(|w| w[1].path != "[stack]")
        .filter(|w| w[1].start >= w[0].end.saturating_add(3 * page))
        .filter(|w| w[0].path != "[heap]" || w[1].start - w[0].end >= 1 << 30)
        .map(|w| w[1].start - 2 * page)
        .find(|&a| a >= low)
}

/// Maps a page with [`PARKING_CODE`] at `addr` (from [`parking_page_addr`],
/// told to the guardian before: `Guardian::parking_page`) into process
/// `pid` by a call of `r` (read and execute only: written through
/// /proc/PID/mem, as a tracer may) and returns it as a syscall site.
/// `mapped` runs right after the mmap, before the code is written (it
/// puts the registers back: a dumper killed from then on leaves the thread
/// as it was and the page, empty or not, to the guardian). cairn unmaps
/// it again (`Frozen::drop_parking`, at the thaw for a dump:
/// `Frozen::keep_parking_pages`); for a dumper that died, the guardian
/// does, from the thread it finds parked there or, with the page at that
/// address still holding nothing but this code (or nothing at all), from
/// the leader (`guard::remove_parking_page`).
pub fn own_parking_site(
    pid: i32,
    r: &mut crate::sys::inject::Remote,
    addr: u64,
    mapped: impl FnOnce() -> Result<()>,
) -> Result<SyscallSite> {
    let page = crate::sys::PAGE_SIZE;
    let got = r
        .syscall(
            libc::SYS_mmap,
            &[
                addr,
                page,
                (libc::PROT_READ | libc::PROT_EXEC) as u64,
                (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64
                    | crate::kinds::memory::FIXED_NOREPLACE,
                u64::MAX,
                0,
            ],
        )
        .map_err(|e| Error::sys(r.tid, format!("remote mmap parking code at {addr:#x}"), e))?;
    if got != addr {
        // A kernel without MAP_FIXED_NOREPLACE (before 4.17) took it as a
        // hint.
        let _ = r.syscall(libc::SYS_munmap, &[got, page]);
        return Err(Error::sys(
            r.tid,
            format!("remote mmap parking code: at {got:#x}, not at {addr:#x}"),
            std::io::Error::from_raw_os_error(libc::EEXIST),
        ));
    }
    let written = mapped()
        .and_then(|()| crate::guard::pause_at("parking-page-mapped"))
        .and_then(|()| {
            mem::force_write(pid, addr, &PARKING_CODE).map_err(|e| {
                Error::sys(
                    pid,
                    format!("/proc/{pid}/mem: parking code at {addr:#x}"),
                    e,
                )
            })
        });
    if let Err(e) = written {
        let _ = r.syscall(libc::SYS_munmap, &[addr, page]);
        return Err(e);
    }
    Ok(SyscallSite {
        insn: addr,
        parking: Some((addr, addr + PARKING_CODE.len() as u64 - 1)),
        below: Below::default(),
    })
}

/// `vmas` without the page at `page` (cairn's own parking page, kept
/// while the dump reads them: `Frozen::keep_parking_pages`). An
/// anonymous mapping of the same kind next to it has merged with it: only
/// that mapping's own part is kept (the page was mapped in a gap).
pub fn without_page(
    vmas: Vec<crate::procfs::MapsEntry>,
    page: u64,
) -> Vec<crate::procfs::MapsEntry> {
    let end = page + crate::sys::PAGE_SIZE;
    let mut out = Vec::with_capacity(vmas.len() + 1);
    for m in vmas {
        if m.end <= page || m.start >= end {
            out.push(m);
            continue;
        }
        if m.start < page {
            out.push(crate::procfs::MapsEntry {
                end: page,
                ..m.clone()
            });
        }
        if m.end > end {
            out.push(crate::procfs::MapsEntry {
                offset: m.offset + (end - m.start),
                start: end,
                ..m
            });
        }
    }
    out
}

/// The start and the bytes (at most 1 MiB) of `pid`'s vDSO.
fn vdso(pid: i32) -> Result<Option<(u64, Vec<u8>)>> {
    let maps = crate::procfs::read_maps(pid)?;
    let Some(m) = maps.iter().find(|m| m.path == "[vdso]") else {
        return Ok(None);
    };
    let len = (m.end - m.start).min(1 << 20) as usize;
    let mut buf = vec![0u8; len];
    Ok(mem::vm_read_all(pid, m.start, &mut buf)
        .ok()
        .map(|()| (m.start, buf)))
}

/// Test hook: set, the vDSO's parking loops are not used, as on a kernel
/// whose vDSO has none (cairn maps its own parking page).
pub const NO_VDSO_PARKING_ENV: &str = "CAIRN_TEST_NO_VDSO_PARKING";

/// The syscall site for a task being dumped: the vDSO's parking loop if
/// it has one (either kind), else any `syscall` instruction.
pub fn find_syscall_site(pid: i32) -> Result<SyscallSite> {
    let vdso = match std::env::var_os(NO_VDSO_PARKING_ENV) {
        Some(_) => None,
        None => vdso(pid)?,
    };
    if let Some((start, buf)) = vdso {
        if let Some((entry, insn, end)) = find_parking_loop(&buf) {
            return Ok(SyscallSite {
                insn: start + insn as u64,
                parking: Some((start + entry as u64, start + end as u64)),
                below: Below::default(),
            });
        }
        if let Some((entry, insn, end, below)) = find_clock_loop(&buf) {
            return Ok(SyscallSite {
                insn: start + insn as u64,
                parking: Some((start + entry as u64, start + end as u64)),
                below,
            });
        }
    }
    Ok(SyscallSite {
        insn: find_syscall_insn(pid)?,
        parking: None,
        below: Below::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// From the x86-64 vDSO of Linux 6.18 (`__vdso_gettimeofday`).
    const VDSO_6_18: &[u8] = &[
        0x0f, 0x84, 0xff, 0x00, 0x00, 0x00, 0xb8, 0x60, 0x00, 0x00, 0x00, 0x0f, 0x05, 0xc9, 0x31,
        0xd2, 0x31, 0xc9, 0x31, 0xf6, 0x31, 0xff, 0x45, 0x31, 0xc0, 0x45, 0x31, 0xc9, 0x45, 0x31,
        0xd2, 0x45, 0x31, 0xdb, 0xc3, 0x48,
    ];

    #[test]
    fn own_page_left_out_of_the_vmas() {
        use crate::procfs::MapsEntry;
        let p = crate::sys::PAGE_SIZE;
        let m = |start: u64, end: u64| MapsEntry {
            start,
            end,
            offset: start,
            read: true,
            exec: true,
            ..Default::default()
        };
        let r = |v: &[MapsEntry]| {
            v.iter()
                .map(|m| (m.start, m.end, m.offset))
                .collect::<Vec<_>>()
        };
        // On its own, merged below, above, and on both sides.
        let all = vec![m(0, p), m(10 * p, 11 * p), m(20 * p, 30 * p)];
        assert_eq!(
            r(&without_page(all, 10 * p)),
            [(0, p, 0), (20 * p, 30 * p, 20 * p)]
        );
        assert_eq!(
            r(&without_page(vec![m(5 * p, 11 * p)], 10 * p)),
            [(5 * p, 10 * p, 5 * p)]
        );
        assert_eq!(
            r(&without_page(vec![m(10 * p, 13 * p)], 10 * p)),
            [(11 * p, 13 * p, 11 * p)]
        );
        assert_eq!(
            r(&without_page(vec![m(9 * p, 12 * p)], 10 * p)),
            [(9 * p, 10 * p, 9 * p), (11 * p, 12 * p, 11 * p)]
        );
    }

    #[test]
    fn parking_page_goes_alone_in_the_highest_gap_not_below_the_stack() {
        use crate::procfs::MapsEntry;
        let p = crate::sys::PAGE_SIZE;
        let m = |start: u64, end: u64, path: &str| MapsEntry {
            start,
            end,
            path: path.into(),
            ..Default::default()
        };
        let heap_top = 0x5600_0000_0000u64;
        let maps = vec![
            m(0x40_0000, 0x40_0000 + 4 * p, "/bin/x"),
            m(0x5500_0000_0000, heap_top, "[heap]"),
            m(0x7f00_0000_0000, 0x7f00_0000_0000 + 8 * p, "/lib/libc.so"),
            // A gap of two pages only: too small.
            m(0x7f00_0000_0000 + 10 * p, 0x7f00_0000_0000 + 20 * p, ""),
            m(0x7ffd_0000_0000, 0x7ffd_0000_0000 + 4 * p, "[stack]"),
        ];
        // Below libc, one page under its start (not below the stack, not
        // in the two-page hole).
        assert_eq!(parking_page_addr(&maps), Some(0x7f00_0000_0000 - 2 * p));
        // Only the stack's gap and a small one above the heap: none.
        let maps = vec![
            m(0x5500_0000_0000, heap_top, "[heap]"),
            m(heap_top + 8 * p, heap_top + 9 * p, ""),
            m(0x7ffd_0000_0000, 0x7ffd_0000_0000 + 4 * p, "[stack]"),
        ];
        assert_eq!(parking_page_addr(&maps), None);
        // Not in the gap below [vsyscall].
        let v = 0xffff_ffff_ff60_0000u64;
        assert_eq!(
            parking_page_addr(&[
                m(0x7f00_0000_0000, 0x7f00_0000_0000 + p, ""),
                m(0x7ffd_0000_0000, 0x7ffd_0000_0000 + 4 * p, "[stack]"),
                m(v, v + p, "[vsyscall]"),
            ]),
            None
        );
        // Never below 64 KiB.
        assert_eq!(parking_page_addr(&[m(0, p, ""), m(4 * p, 5 * p, "")]), None);
    }

    #[test]
    fn own_parking_code_loops_with_zero_arguments() {
        let c = PARKING_CODE;
        assert_eq!(c[..2], [0x0f, 0x05]);
        // The jmp goes back to the xor of edi, 2 bytes in.
        let after_jmp = c.len() as i64;
        assert_eq!(after_jmp + c[14] as i8 as i64, 2);
        assert_eq!(c[2..6], [0x31, 0xff, 0x31, 0xf6]);
        assert_eq!(c[6..11], [0xb8, 0x60, 0, 0, 0]);
        assert_eq!(c[11..13], [0x0f, 0x05]);
    }

    /// From the x86-64 vDSO of Debian's 6.12.118 (`__vdso_clock_gettime`'s
    /// fallback), with the bytes before and after it.
    const VDSO_DEBIAN_6_12: &[u8] = &[
        0x74, 0x78, 0x89, 0xdf, 0xb8, 0xe4, 0x00, 0x00, 0x00, 0x0f, 0x05, 0x48, 0x8d, 0x65, 0xf0,
        0x5b, 0x41, 0x5c, 0x5d, 0xc3, 0xcc,
    ];

    #[test]
    fn clock_loop_found() {
        assert_eq!(find_parking_loop(VDSO_DEBIAN_6_12), None);
        let (entry, insn, end, below) = find_clock_loop(VDSO_DEBIAN_6_12).unwrap();
        assert_eq!((entry, insn, end), (2, 9, 19));
        // pop %rbx (the clock id), pop %r12.
        assert_eq!(below.words(), &[BAD_CLOCK, 0]);
    }

    #[test]
    fn clock_loop_needs_the_clock_register_popped() {
        let mut other = VDSO_DEBIAN_6_12.to_vec();
        other[3] = 0xcf; // mov %ecx,%edi: rcx is not popped
        assert_eq!(find_clock_loop(&other), None);
        let mut nr = VDSO_DEBIAN_6_12.to_vec();
        nr[5] = 0x60; // gettimeofday takes pointers
        assert_eq!(find_clock_loop(&nr), None);
        let mut frame = VDSO_DEBIAN_6_12.to_vec();
        frame[14] = 0xe8; // lea -24(%rbp): three pops expected, two found
        assert_eq!(find_clock_loop(&frame), None);
        assert_eq!(find_clock_loop(&VDSO_DEBIAN_6_12[..18]), None);
    }

    #[test]
    fn parking_loop_found() {
        assert_eq!(find_parking_loop(VDSO_6_18), Some((6, 11, 34)));
    }

    #[test]
    fn parking_loop_needs_rdi_rsi_cleared_and_rbp_kept() {
        let mut no_rdi = VDSO_6_18.to_vec();
        no_rdi[21] = 0xc0; // xor %edi,%edi -> xor %eax,%eax
        assert_eq!(find_parking_loop(&no_rdi), None);
        let mut rbp = VDSO_6_18.to_vec();
        rbp[15] = 0xed; // xor %ebp,%ebp ends the sequence before ret
        assert_eq!(find_parking_loop(&rbp), None);
        let mut other_nr = VDSO_6_18.to_vec();
        other_nr[7] = 0x3e; // kill(2)
        assert_eq!(find_parking_loop(&other_nr), None);
        assert_eq!(find_parking_loop(&VDSO_6_18[..20]), None);
    }
}
