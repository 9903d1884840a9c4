//! /proc/PID/status and /proc/PID/task/TID/status: "Key:\tvalue" lines.

use super::misc::{proc_path, read_proc_lossy, task_path};
use super::{at_path, excerpt, parse_hex_u64, parse_i32, parse_oct_u32, parse_u32, parse_u64};
use crate::error::{Error, Result};
use std::path::Path;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    /// Task name, with the kernel's escapes ("\\n", "\\\\") undone.
    pub name: String,
    /// File-creation mask (octal in the file); `None` when absent.
    pub umask: Option<u32>,
    pub state: char,
    pub tgid: i32,
    pub pid: i32,
    pub ppid: i32,
    pub tracer_pid: i32,
    /// Real, effective, saved, filesystem.
    pub uid: [u32; 4],
    /// Real, effective, saved, filesystem.
    pub gid: [u32; 4],
    pub groups: Vec<u32>,
    /// Pid in each pid namespace, outermost first.
    pub ns_pid: Vec<i32>,
    pub threads: u32,
    /// Queued signals / limit.
    pub sig_q: (u64, u64),
    pub sig_pnd: u64,
    pub shd_pnd: u64,
    pub sig_blk: u64,
    pub sig_ign: u64,
    pub sig_cgt: u64,
    pub cap_inh: u64,
    pub cap_prm: u64,
    pub cap_eff: u64,
    pub cap_bnd: u64,
    pub cap_amb: u64,
    pub no_new_privs: bool,
    /// Seccomp mode (0 disabled, 1 strict, 2 filter).
    pub seccomp: u32,
}

/// Undoes the escapes the kernel may apply to a task name: `\n`, `\t`,
/// `\\`, `\"`, `\a`, `\e`, `\f`, `\r`, `\v` and three-digit octal. An
/// unknown or truncated escape is kept as is.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let Some(&n) = it.peek() else {
            out.push('\\');
            break;
        };
        let simple = match n {
            'n' => Some('\n'),
            't' => Some('\t'),
            '\\' => Some('\\'),
            '"' => Some('"'),
            'a' => Some('\x07'),
            'e' => Some('\x1b'),
            'f' => Some('\x0c'),
            'r' => Some('\r'),
            'v' => Some('\x0b'),
            _ => None,
        };
        if let Some(u) = simple {
            it.next();
            out.push(u);
            continue;
        }
        // Octal: exactly three digits, value < 0o200 kept as a char (higher
        // values would be a raw byte, which a str cannot hold; keep those
        // escaped).
        let digits: String = it.clone().take(3).collect();
        if digits.len() == 3 && digits.chars().all(|d| d.is_digit(8)) {
            if let Some(v) = u32::from_str_radix(&digits, 8).ok().filter(|&v| v < 0o200) {
                if let Some(ch) = char::from_u32(v) {
                    it.nth(2);
                    out.push(ch);
                    continue;
                }
            }
        }
        out.push('\\');
    }
    out
}

fn split_list<T>(v: &str, parse: impl Fn(&str) -> Option<T>) -> Option<Vec<T>> {
    v.split_whitespace().map(parse).collect()
}

fn ids(v: &str) -> Option<[u32; 4]> {
    let l = split_list(v, parse_u32)?;
    l.try_into().ok()
}

fn sig_q(v: &str) -> Option<(u64, u64)> {
    let (a, b) = v.split_once('/')?;
    Some((parse_u64(a)?, parse_u64(b)?))
}

fn parse_bool01(v: &str) -> Option<bool> {
    match v {
        "0" => Some(false),
        "1" => Some(true),
        _ => None,
    }
}

/// Parses the text of a status file. Unknown keys are ignored; missing
/// optional keys keep their defaults; Pid, Tgid, Uid and Gid are required.
/// A known key with a bad value, or a non-blank line without ':', is an
/// error. If a key repeats, the last one wins.
pub fn parse_status(text: &str) -> Result<Status> {
    let mut st = Status::default();
    let (mut have_pid, mut have_tgid, mut have_uid, mut have_gid) = (false, false, false, false);
    for (i, line) in text.split('\n').enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let err = |msg: &str| Error::parse("status", format!("line {n}: {msg}: {}", excerpt(line)));
        let Some((key, raw)) = line.split_once(':') else {
            return Err(err("expected Key: value"));
        };
        let v = raw.trim();
        let bad = || err("bad value");
        match key {
            "Name" => {
                // The name may start or end with spaces: drop only the tab
                // the kernel writes after the colon.
                let raw = raw.strip_prefix('\t').unwrap_or(raw);
                st.name = unescape(raw);
            }
            "Umask" => st.umask = Some(parse_oct_u32(v).ok_or_else(bad)?),
            "State" => st.state = v.chars().next().ok_or_else(bad)?,
            "Tgid" => {
                st.tgid = parse_i32(v).ok_or_else(bad)?;
                have_tgid = true;
            }
            "Pid" => {
                st.pid = parse_i32(v).ok_or_else(bad)?;
                have_pid = true;
            }
            "PPid" => st.ppid = parse_i32(v).ok_or_else(bad)?,
            "TracerPid" => st.tracer_pid = parse_i32(v).ok_or_else(bad)?,
            "Uid" => {
                st.uid = ids(v).ok_or_else(bad)?;
                have_uid = true;
            }
            "Gid" => {
                st.gid = ids(v).ok_or_else(bad)?;
                have_gid = true;
            }
            "Groups" => st.groups = split_list(v, parse_u32).ok_or_else(bad)?,
            "NSpid" => st.ns_pid = split_list(v, parse_i32).ok_or_else(bad)?,
            "Threads" => st.threads = parse_u32(v).ok_or_else(bad)?,
            "SigQ" => st.sig_q = sig_q(v).ok_or_else(bad)?,
            "SigPnd" => st.sig_pnd = parse_hex_u64(v).ok_or_else(bad)?,
            "ShdPnd" => st.shd_pnd = parse_hex_u64(v).ok_or_else(bad)?,
            "SigBlk" => st.sig_blk = parse_hex_u64(v).ok_or_else(bad)?,
            "SigIgn" => st.sig_ign = parse_hex_u64(v).ok_or_else(bad)?,
            "SigCgt" => st.sig_cgt = parse_hex_u64(v).ok_or_else(bad)?,
            "CapInh" => st.cap_inh = parse_hex_u64(v).ok_or_else(bad)?,
            "CapPrm" => st.cap_prm = parse_hex_u64(v).ok_or_else(bad)?,
            "CapEff" => st.cap_eff = parse_hex_u64(v).ok_or_else(bad)?,
            "CapBnd" => st.cap_bnd = parse_hex_u64(v).ok_or_else(bad)?,
            "CapAmb" => st.cap_amb = parse_hex_u64(v).ok_or_else(bad)?,
            "NoNewPrivs" => st.no_new_privs = parse_bool01(v).ok_or_else(bad)?,
            "Seccomp" => st.seccomp = parse_u32(v).ok_or_else(bad)?,
            _ => {}
        }
    }
    for (have, key) in [
        (have_pid, "Pid"),
        (have_tgid, "Tgid"),
        (have_uid, "Uid"),
        (have_gid, "Gid"),
    ] {
        if !have {
            return Err(Error::parse("status", format!("missing {key}")));
        }
    }
    Ok(st)
}

fn read_at(path: &Path) -> Result<Status> {
    let text = read_proc_lossy(path)?;
    parse_status(&text).map_err(|e| at_path(e, path))
}

/// Reads /proc/PID/status.
pub fn read_status(pid: i32) -> Result<Status> {
    read_at(&proc_path(pid, "status"))
}

/// Reads /proc/PID/task/TID/status.
pub fn read_task_status(pid: i32, tid: i32) -> Result<Status> {
    read_at(&task_path(pid, tid, "status"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "Name:\tbash
Umask:\t0022
State:\tS (sleeping)
Tgid:\t2781
Ngid:\t0
Pid:\t2781
PPid:\t2770
TracerPid:\t0
Uid:\t1000\t1000\t1000\t1000
Gid:\t1000\t100\t1000\t1000
FDSize:\t256
Groups:\t4 24 27 1000 
NStgid:\t2781\t1
NSpid:\t2781\t1
NSpgid:\t2781\t1
NSsid:\t2781\t1
Kthread:\t0
VmPeak:\t   10364 kB
VmSize:\t    8800 kB
Threads:\t1
SigQ:\t0/63360
SigPnd:\t0000000000000000
ShdPnd:\t0000000000000000
SigBlk:\t0000000000010000
SigIgn:\t0000000000384004
SigCgt:\t000000004b813efb
CapInh:\t0000000000000000
CapPrm:\t0000000000000000
CapEff:\t0000000000000000
CapBnd:\t000001ffffffffff
CapAmb:\t0000000000000000
NoNewPrivs:\t1
Seccomp:\t2
Seccomp_filters:\t1
Speculation_Store_Bypass:\tthread vulnerable
Cpus_allowed:\tff
Cpus_allowed_list:\t0-7
Mems_allowed_list:\t0
voluntary_ctxt_switches:\t150
nonvoluntary_ctxt_switches:\t4
";

    #[test]
    fn sample() {
        let s = parse_status(SAMPLE).unwrap();
        assert_eq!(
            s,
            Status {
                name: "bash".into(),
                umask: Some(0o022),
                state: 'S',
                tgid: 2781,
                pid: 2781,
                ppid: 2770,
                tracer_pid: 0,
                uid: [1000; 4],
                gid: [1000, 100, 1000, 1000],
                groups: vec![4, 24, 27, 1000],
                ns_pid: vec![2781, 1],
                threads: 1,
                sig_q: (0, 63360),
                sig_pnd: 0,
                shd_pnd: 0,
                sig_blk: 0x10000,
                sig_ign: 0x384004,
                sig_cgt: 0x4b813efb,
                cap_inh: 0,
                cap_prm: 0,
                cap_eff: 0,
                cap_bnd: 0x1ffffffffff,
                cap_amb: 0,
                no_new_privs: true,
                seccomp: 2,
            }
        );
    }

    #[test]
    fn minimal_and_defaults() {
        let s = parse_status("Pid:\t5\nTgid:\t4\nUid:\t0\t0\t0\t0\nGid:\t1\t2\t3\t4").unwrap();
        assert_eq!((s.pid, s.tgid), (5, 4));
        assert_eq!(s.gid, [1, 2, 3, 4]);
        assert_eq!(s.umask, None);
        assert_eq!(s.name, "");
        assert!(s.groups.is_empty() && s.ns_pid.is_empty());
        assert!(!s.no_new_privs);
        // Empty Groups line, in both shapes the kernel may produce.
        let base = "Pid:\t5\nTgid:\t5\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\n";
        for g in ["Groups:\t\n", "Groups:\n", "Groups:\t \n"] {
            let s = parse_status(&format!("{base}{g}")).unwrap();
            assert!(s.groups.is_empty());
        }
    }

    #[test]
    fn names() {
        let base = "Pid:\t5\nTgid:\t5\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\n";
        let cases = [
            ("Name:\tmy prog\n", "my prog"),
            ("Name:\t a) (b \n", " a) (b "),
            ("Name:\tx:y\n", "x:y"),
            ("Name:\tnl\\nhere\n", "nl\nhere"),
            ("Name:\tback\\\\slash\\\\n\n", "back\\slash\\n"),
            ("Name:\ttrail\\\n", "trail\\"),
            ("Name:\tunk\\q\n", "unk\\q"),
            ("Name:\toct\\011x\\377\n", "oct\tx\\377"),
            ("Name:\t\n", ""),
            ("Name:\n", ""),
            ("Name:\té\n", "é"),
        ];
        for (line, want) in cases {
            let s = parse_status(&format!("{line}{base}")).unwrap();
            assert_eq!(s.name, want, "{line:?}");
        }
    }

    #[test]
    fn huge_values() {
        let t = "Pid:\t2147483647\nTgid:\t1\nUid:\t4294967295\t0\t0\t0\nGid:\t0\t0\t0\t0\n\
                 SigBlk:\tffffffffffffffff\nSigQ:\t18446744073709551615/18446744073709551615\n\
                 CapBnd:\tffffffffffffffff\nUmask:\t0777\n";
        let s = parse_status(t).unwrap();
        assert_eq!(s.pid, i32::MAX);
        assert_eq!(s.uid[0], u32::MAX);
        assert_eq!(s.sig_blk, u64::MAX);
        assert_eq!(s.sig_q, (u64::MAX, u64::MAX));
        assert_eq!(s.cap_bnd, u64::MAX);
        assert_eq!(s.umask, Some(0o777));
    }

    #[test]
    fn malformed() {
        let base = "Pid:\t5\nTgid:\t5\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\n";
        assert!(parse_status(base).is_ok());
        let bad_lines = [
            "Pid:\tx\n",
            "Pid:\t\n",
            "Uid:\t0\t0\t0\n",
            "Uid:\t0\t0\t0\t0\t0\n",
            "Uid:\t-1\t0\t0\t0\n",
            "Gid:\t4294967296\t0\t0\t0\n",
            "Umask:\t0089\n",
            "State:\t\n",
            "SigQ:\t0\n",
            "SigQ:\t0/x\n",
            "SigBlk:\t1ffffffffffffffff\n",
            "CapEff:\tzz\n",
            "NoNewPrivs:\t2\n",
            "Groups:\t1 x\n",
            "NSpid:\t1\tq\n",
            "Threads:\t-1\n",
            "no colon here\n",
        ];
        for l in bad_lines {
            let r = parse_status(&format!("{base}{l}"));
            assert!(matches!(r, Err(Error::Parse { .. })), "{l:?}");
        }
        for missing in ["Pid:", "Tgid:", "Uid:", "Gid:"] {
            let t: String = base
                .lines()
                .filter(|l| !l.starts_with(missing))
                .map(|l| format!("{l}\n"))
                .collect();
            let e = parse_status(&t).unwrap_err();
            assert!(e.to_string().contains(missing.trim_end_matches(':')), "{e}");
        }
        assert!(parse_status("").is_err());
    }

    #[test]
    fn never_panics_on_prefixes() {
        let t = format!("Name:\t\\é\\0\\\n{SAMPLE}");
        for (i, _) in t.char_indices() {
            let _ = parse_status(&t[..i]);
        }
    }

    #[test]
    fn live_self() {
        let pid = std::process::id() as i32;
        let s = read_status(pid).unwrap();
        assert_eq!(s.pid, pid);
        assert_eq!(s.tgid, pid);
        assert_eq!(s.uid[0], nix::unistd::getuid().as_raw());
        assert_eq!(s.uid[1], nix::unistd::geteuid().as_raw());
        assert_eq!(s.gid[0], nix::unistd::getgid().as_raw());
        assert!(s.threads >= 1);
        // NSpid starts with the pid as seen from this /proc's namespace.
        assert_eq!(s.ns_pid.first(), Some(&pid));
        assert!(s.umask.is_some());
        let t = read_task_status(pid, pid).unwrap();
        assert_eq!(t.pid, pid);
        assert!(read_status(-1).is_err());
    }
}
