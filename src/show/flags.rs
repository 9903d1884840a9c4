//! Names for the numbers in images, for people: signals, protections,
//! open flags, sigaction flags, XSAVE state components, dates.
//! (x86-64 Linux values, the only architecture cairn dumps.)

use std::fmt::Write as _;

const SIGNALS: [&str; 31] = [
    "SIGHUP",
    "SIGINT",
    "SIGQUIT",
    "SIGILL",
    "SIGTRAP",
    "SIGABRT",
    "SIGBUS",
    "SIGFPE",
    "SIGKILL",
    "SIGUSR1",
    "SIGSEGV",
    "SIGUSR2",
    "SIGPIPE",
    "SIGALRM",
    "SIGTERM",
    "SIGSTKFLT",
    "SIGCHLD",
    "SIGCONT",
    "SIGSTOP",
    "SIGTSTP",
    "SIGTTIN",
    "SIGTTOU",
    "SIGURG",
    "SIGXCPU",
    "SIGXFSZ",
    "SIGVTALRM",
    "SIGPROF",
    "SIGWINCH",
    "SIGIO",
    "SIGPWR",
    "SIGSYS",
];

/// `SIGTERM`, `SIGRTMIN+3`, or the number when it is no signal.
pub fn signal(n: u32) -> String {
    match n {
        1..=31 => SIGNALS[n as usize - 1].to_string(),
        32 => "SIGRTMIN-2".into(),
        33 => "SIGRTMIN-1".into(),
        34 => "SIGRTMIN".into(),
        35..=64 => format!("SIGRTMIN+{}", n - 34),
        _ => n.to_string(),
    }
}

/// A signal mask (bit n-1 for signal n): `SIGINT|SIGTERM`, `0` when
/// empty.
pub fn sigmask(m: u64) -> String {
    if m == 0 {
        return "0".into();
    }
    (0..64)
        .filter(|b| m & (1u64 << b) != 0)
        .map(|b| signal(b + 1))
        .collect::<Vec<_>>()
        .join("|")
}

/// PROT_* bits and whether the mapping is shared: `r-xp`, `rw-s`.
pub fn prot(p: u32, shared: bool) -> String {
    let mut s = String::with_capacity(4);
    s.push(if p & 1 != 0 { 'r' } else { '-' });
    s.push(if p & 2 != 0 { 'w' } else { '-' });
    s.push(if p & 4 != 0 { 'x' } else { '-' });
    s.push(if shared { 's' } else { 'p' });
    if p & !7 != 0 {
        let _ = write!(s, "+{:#x}", p & !7);
    }
    s
}

/// Names of the set bits of `v` from `table` (bit, name); bits no name
/// covers are added as one hex number.
fn bits(v: u64, table: &[(u64, &str)]) -> Vec<String> {
    let mut out = Vec::new();
    let mut left = v;
    for &(b, name) in table {
        if b != 0 && v & b == b {
            out.push(name.to_string());
            left &= !b;
        }
    }
    if left != 0 {
        out.push(format!("{left:#x}"));
    }
    out
}

const OPEN_FLAGS: &[(u64, &str)] = &[
    (0o2000, "O_APPEND"),
    (0o20000, "O_ASYNC"),
    (0o2000000, "O_CLOEXEC"),
    (0o100, "O_CREAT"),
    (0o40000, "O_DIRECT"),
    (0o200000, "O_DIRECTORY"),
    (0o10000, "O_DSYNC"),
    (0o200, "O_EXCL"),
    (0o100000, "O_LARGEFILE"),
    (0o1000000, "O_NOATIME"),
    (0o400, "O_NOCTTY"),
    (0o400000, "O_NOFOLLOW"),
    (0o4000, "O_NONBLOCK"),
    (0o10000000, "O_PATH"),
    (0o4010000, "O_SYNC"),
    (0o20200000, "O_TMPFILE"),
    (0o1000, "O_TRUNC"),
];

/// Open flags: the access mode, then the other flags by name:
/// `O_RDWR|O_APPEND|O_LARGEFILE`.
pub fn open_flags(f: u32) -> String {
    let f = u64::from(f);
    let mut v = vec![match f & 3 {
        0 => "O_RDONLY".to_string(),
        1 => "O_WRONLY".to_string(),
        2 => "O_RDWR".to_string(),
        _ => "O_ACCMODE".to_string(),
    }];
    // O_SYNC includes O_DSYNC's bit and O_TMPFILE O_DIRECTORY's: name the
    // larger one only.
    let mut rest = f & !3;
    if rest & 0o4010000 == 0o4010000 {
        v.push("O_SYNC".into());
        rest &= !0o4010000;
    }
    if rest & 0o20200000 == 0o20200000 {
        v.push("O_TMPFILE".into());
        rest &= !0o20200000;
    }
    v.extend(bits(rest, OPEN_FLAGS));
    v.join("|")
}

const SA_FLAGS: &[(u64, &str)] = &[
    (0x1, "SA_NOCLDSTOP"),
    (0x2, "SA_NOCLDWAIT"),
    (0x4, "SA_SIGINFO"),
    (0x400, "SA_UNSUPPORTED"),
    (0x800, "SA_EXPOSE_TAGBITS"),
    (0x0400_0000, "SA_RESTORER"),
    (0x0800_0000, "SA_ONSTACK"),
    (0x1000_0000, "SA_RESTART"),
    (0x4000_0000, "SA_NODEFER"),
    (0x8000_0000, "SA_RESETHAND"),
];

/// sigaction flags: `SA_RESTORER|SA_RESTART`, `0` when none.
pub fn sa_flags(f: u64) -> String {
    if f == 0 {
        return "0".into();
    }
    bits(f, SA_FLAGS).join("|")
}

/// A signal handler: `SIG_DFL`, `SIG_IGN` or the address.
pub fn handler(h: u64) -> String {
    match h {
        0 => "SIG_DFL".into(),
        1 => "SIG_IGN".into(),
        h => format!("{h:#x}"),
    }
}

const RLIMITS: [&str; 16] = [
    "RLIMIT_CPU",
    "RLIMIT_FSIZE",
    "RLIMIT_DATA",
    "RLIMIT_STACK",
    "RLIMIT_CORE",
    "RLIMIT_RSS",
    "RLIMIT_NPROC",
    "RLIMIT_NOFILE",
    "RLIMIT_MEMLOCK",
    "RLIMIT_AS",
    "RLIMIT_LOCKS",
    "RLIMIT_SIGPENDING",
    "RLIMIT_MSGQUEUE",
    "RLIMIT_NICE",
    "RLIMIT_RTPRIO",
    "RLIMIT_RTTIME",
];

/// `RLIMIT_NOFILE`, or the number.
pub fn rlimit(r: u32) -> String {
    RLIMITS
        .get(r as usize)
        .map_or_else(|| r.to_string(), |s| s.to_string())
}

/// The mmap flags a VMA kind stands for.
pub fn map_flags(kind: &str) -> &'static str {
    match kind {
        "VMA_ANON_PRIVATE" => "MAP_PRIVATE|MAP_ANONYMOUS",
        "VMA_ANON_SHARED" => "MAP_SHARED|MAP_ANONYMOUS",
        "VMA_FILE_PRIVATE" => "MAP_PRIVATE",
        "VMA_FILE_SHARED" | "VMA_SYSV_SHM" | "VMA_PACKET_RING" => "MAP_SHARED",
        _ => "",
    }
}

/// Whether a VMA of this kind is a shared mapping.
pub fn vma_shared(kind: &str) -> bool {
    map_flags(kind).starts_with("MAP_SHARED")
}

const XFEATURES: [&str; 20] = [
    "x87",
    "SSE",
    "AVX",
    "BNDREGS",
    "BNDCSR",
    "opmask",
    "ZMM_Hi256",
    "Hi16_ZMM",
    "PT",
    "PKRU",
    "PASID",
    "CET_U",
    "CET_S",
    "HDC",
    "UINTR",
    "LBR",
    "HWP",
    "AMX_TILECFG",
    "AMX_TILEDATA",
    "APX",
];

/// An XSAVE area: its size and the state components its header marks as
/// saved (XSTATE_BV at byte 512): `1088 bytes, XSTATE_BV 0x7 (x87 SSE
/// AVX)`.
pub fn xsave(b: &[u8]) -> String {
    if b.len() < 520 {
        return format!("{} bytes (no XSAVE header)", b.len());
    }
    let mut bv = [0u8; 8];
    bv.copy_from_slice(&b[512..520]);
    let bv = u64::from_le_bytes(bv);
    let names: Vec<&str> = (0..XFEATURES.len())
        .filter(|i| bv & (1 << i) != 0)
        .map(|i| XFEATURES[i])
        .collect();
    format!("{} bytes, XSTATE_BV {bv:#x} ({})", b.len(), names.join(" "))
}

/// Milliseconds since the epoch as `2026-12-06 22:41:03 UTC`.
pub fn date_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(signal(15), "SIGTERM");
        assert_eq!(signal(34), "SIGRTMIN");
        assert_eq!(signal(64), "SIGRTMIN+30");
        assert_eq!(signal(65), "65");
        assert_eq!(sigmask((1 << 1) | (1 << 14)), "SIGINT|SIGTERM");
        assert_eq!(prot(5, false), "r-xp");
        assert_eq!(prot(3, true), "rw-s");
        assert_eq!(open_flags(0o102002), "O_RDWR|O_APPEND|O_LARGEFILE");
        assert_eq!(open_flags(0o4010001), "O_WRONLY|O_SYNC");
        assert_eq!(open_flags(0), "O_RDONLY");
        assert_eq!(sa_flags(0x1400_0004), "SA_SIGINFO|SA_RESTORER|SA_RESTART");
        assert_eq!(sa_flags(0x1_0000), "0x10000");
        assert_eq!(handler(1), "SIG_IGN");
        assert_eq!(handler(0x401000), "0x401000");
        assert_eq!(date_ms(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(date_ms(1_796_596_863_000), "2026-12-06 22:41:03 UTC");
        let mut x = vec![0u8; 832];
        x[512] = 0x7;
        assert_eq!(xsave(&x), "832 bytes, XSTATE_BV 0x7 (x87 SSE AVX)");
    }
}
