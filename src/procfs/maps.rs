//! /proc/PID/maps and /proc/PID/smaps.
//!
//! A header line is
//! `start-end perms offset major:minor inode [padding path]`,
//! e.g. `7f12a000-7f12c000 r-xp 00001000 fd:01 1312  /usr/lib/x.so`.
//! The path is everything after the inode column and its padding, kept
//! verbatim (it may contain spaces, end in " (deleted)", or be empty).

use super::misc::{proc_path, read_proc_string};
use super::{at_path, excerpt, parse_hex_u32, parse_hex_u64, parse_u64};
use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MapsEntry {
    pub start: u64,
    pub end: u64,
    pub read: bool,
    pub write: bool,
    pub exec: bool,
    /// 's' (shared) rather than 'p' (private) in the permissions column.
    pub shared: bool,
    pub offset: u64,
    pub dev_major: u32,
    pub dev_minor: u32,
    pub inode: u64,
    /// "" for anonymous memory, "\[heap\]", "\[stack\]", "\[vdso\]",
    /// "/usr/lib/x.so", "/dev/zero (deleted)", "/memfd:name (deleted)", ...
    pub path: String,
    /// Two-letter codes from the smaps "VmFlags:" line; empty from maps.
    pub vm_flags: Vec<String>,
}

impl MapsEntry {
    /// Size of the mapping in bytes.
    pub fn len(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the mapped file was unlinked (path ends with " (deleted)").
    pub fn is_deleted(&self) -> bool {
        self.path.ends_with(" (deleted)")
    }

    /// Whether the smaps VmFlags contain `f` (e.g. "sd", "gd", "dd").
    pub fn has_flag(&self, f: &str) -> bool {
        self.vm_flags.iter().any(|x| x == f)
    }
}

/// Splits off the next space-separated token; `None` when only blanks
/// remain.
fn next_token<'a>(rest: &mut &'a str) -> Option<&'a str> {
    let s = rest.trim_start_matches([' ', '\t']);
    if s.is_empty() {
        *rest = s;
        return None;
    }
    let end = s.find([' ', '\t']).unwrap_or(s.len());
    let (tok, after) = s.split_at(end);
    *rest = after;
    Some(tok)
}

/// "hex-hex" with both halves valid hex numbers.
fn parse_range(tok: &str) -> Option<(u64, u64)> {
    let (a, b) = tok.split_once('-')?;
    Some((parse_hex_u64(a)?, parse_hex_u64(b)?))
}

fn parse_header(line: &str) -> std::result::Result<MapsEntry, String> {
    let mut rest = line;
    let range = next_token(&mut rest).ok_or("empty line")?;
    let (start, end) = parse_range(range).ok_or("bad address range")?;
    if start > end {
        return Err("start address above end address".into());
    }
    let perms = next_token(&mut rest).ok_or("missing permissions")?;
    let p = perms.as_bytes();
    let [r, w, x, s] = p else {
        return Err("permissions must be 4 characters".into());
    };
    let flag = |c: u8, yes: u8| match c {
        c if c == yes => Ok(true),
        b'-' => Ok(false),
        _ => Err(format!("bad permissions {perms:?}")),
    };
    let read = flag(*r, b'r')?;
    let write = flag(*w, b'w')?;
    let exec = flag(*x, b'x')?;
    let shared = match s {
        b's' => true,
        b'p' => false,
        _ => return Err(format!("bad permissions {perms:?}")),
    };
    let offset = next_token(&mut rest)
        .and_then(parse_hex_u64)
        .ok_or("bad offset")?;
    let dev = next_token(&mut rest).ok_or("missing device")?;
    let (major, minor) = dev.split_once(':').ok_or("bad device")?;
    let dev_major = parse_hex_u32(major).ok_or("bad device major")?;
    let dev_minor = parse_hex_u32(minor).ok_or("bad device minor")?;
    let inode = next_token(&mut rest)
        .and_then(parse_u64)
        .ok_or("bad inode")?;
    // The kernel writes one space after the inode, pads to a column, then
    // one more space before the path. Paths are absolute or start with a
    // non-blank ("[heap]", "anon_inode:..."), so stripping leading blanks
    // is exact; trailing characters belong to the path and are kept.
    let path = rest.trim_start_matches([' ', '\t']).to_string();
    Ok(MapsEntry {
        start,
        end,
        read,
        write,
        exec,
        shared,
        offset,
        dev_major,
        dev_minor,
        inode,
        path,
        vm_flags: Vec::new(),
    })
}

/// Lines of `text` with their 1-based numbers; a final empty line left by
/// the trailing newline is skipped.
fn lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.split('\n')
        .enumerate()
        .map(|(i, l)| (i + 1, l))
        .filter(|(_, l)| !l.trim().is_empty())
}

fn line_err(what: &str, n: usize, line: &str, msg: impl std::fmt::Display) -> Error {
    Error::parse(what, format!("line {n}: {msg}: {}", excerpt(line)))
}

/// Parses /proc/PID/maps. Blank lines are skipped; any other malformed
/// line is an error.
pub fn parse_maps(text: &str) -> Result<Vec<MapsEntry>> {
    lines(text)
        .map(|(n, line)| parse_header(line).map_err(|m| line_err("maps", n, line, m)))
        .collect()
}

fn is_header(line: &str) -> bool {
    let mut rest = line;
    next_token(&mut rest).is_some_and(|t| parse_range(t).is_some())
}

/// Parses /proc/PID/smaps: each header line (first token "hex-hex") starts
/// an entry; the following "Key: value" lines belong to it and only
/// "VmFlags:" is kept. A field line before any header, or a line that is
/// neither a header nor "Key: value", is an error.
pub fn parse_smaps(text: &str) -> Result<Vec<MapsEntry>> {
    let mut out: Vec<MapsEntry> = Vec::new();
    for (n, line) in lines(text) {
        if is_header(line) {
            let e = parse_header(line).map_err(|m| line_err("smaps", n, line, m))?;
            out.push(e);
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            return Err(line_err(
                "smaps",
                n,
                line,
                "expected a mapping header or Key: value",
            ));
        };
        if key.is_empty() || key.contains([' ', '\t']) {
            return Err(line_err("smaps", n, line, "bad field name"));
        }
        let Some(cur) = out.last_mut() else {
            return Err(line_err(
                "smaps",
                n,
                line,
                "field before any mapping header",
            ));
        };
        if key == "VmFlags" {
            cur.vm_flags = vm_flag_names(value, lock_on_fault_unnamed());
        }
    }
    Ok(out)
}

/// Whether this kernel's smaps has no name for VM_LOCKONFAULT: kernels
/// before 6.2 (the "lf" mnemonic came with commit 8614d6c5eda0) print "??"
/// for it.
fn lock_on_fault_unnamed() -> bool {
    static UNNAMED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *UNNAMED.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .ok()
            .and_then(|r| crate::sys::probe::parse_version(r.trim()))
            .is_some_and(|v| v < (6, 2))
    })
}

/// The letters of a VmFlags line. On a kernel that prints "??" for
/// VM_LOCKONFAULT (`unnamed_lf`), a "??" beside "lo" is named "lf", as
/// newer kernels and the BPF inventory name it: on x86-64 it is the only
/// flag of those kernels without a name, and the kernel never sets it
/// without VM_LOCKED. Any other "??" stays, and the dump refuses it.
fn vm_flag_names(value: &str, unnamed_lf: bool) -> Vec<String> {
    let mut v: Vec<String> = value.split_whitespace().map(str::to_string).collect();
    let unknown = v.iter().filter(|f| *f == "??").count();
    if unnamed_lf && unknown == 1 && v.iter().any(|f| f == "lo") && !v.iter().any(|f| f == "lf") {
        for f in v.iter_mut().filter(|f| *f == "??") {
            *f = "lf".into();
        }
    }
    v
}

/// Reads and parses /proc/PID/maps.
pub fn read_maps(pid: i32) -> Result<Vec<MapsEntry>> {
    let path = proc_path(pid, "maps");
    let text = read_proc_string(&path)?;
    parse_maps(&text).map_err(|e| at_path(e, &path))
}

/// Reads and parses /proc/PID/smaps.
pub fn read_smaps(pid: i32) -> Result<Vec<MapsEntry>> {
    let path = proc_path(pid, "smaps");
    let text = read_proc_string(&path)?;
    parse_smaps(&text).map_err(|e| at_path(e, &path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_on_fault_named_where_the_kernel_prints_question_marks() {
        let v = |s: &str, unnamed| vm_flag_names(s, unnamed).join(" ");
        assert_eq!(v("rd wr lo ?? ac", true), "rd wr lo lf ac");
        // 6.2+ names it: a "??" there is another flag, refused at dump.
        assert_eq!(v("rd wr lo ?? ac", false), "rd wr lo ?? ac");
        assert_eq!(v("rd wr lo lf ac", true), "rd wr lo lf ac");
        // Not locked, or two unnamed flags: not VM_LOCKONFAULT alone.
        assert_eq!(v("rd wr ?? ac", true), "rd wr ?? ac");
        assert_eq!(v("rd lo ?? ??", true), "rd lo ?? ??");
    }

    const MAPS: &str = "\
55d0c8a00000-55d0c8a28000 r--p 00000000 fd:01 1312034                    /usr/bin/my prog
55d0c8a28000-55d0c8b00000 r-xp 00028000 fd:01 1312034                    /usr/bin/my prog
55d0c9f6b000-55d0c9f8c000 rw-p 00000000 00:00 0                          [heap]
7f1c2a000000-7f1c2a021000 rw-s 00000000 00:01 2050                       /dev/zero (deleted)
7f1c2a100000-7f1c2a200000 rw-s 00000000 00:01 32768                      /SYSV00000000 (deleted)
7f1c2a300000-7f1c2a301000 rw-s 00000000 00:01 7                          /memfd:my buf (deleted)
7f1c2a400000-7f1c2a600000 rw-p 00000000 00:00 0 
7f1c2a600000-7f1c2a601000 ---p 00000000 00:00 0
7f1c2a700000-7f1c2a701000 rw-p 00000000 00:00 0                          [anon:my name]
7ffd1b2e0000-7ffd1b301000 rw-p 00000000 00:00 0                          [stack]
7ffd1b3c2000-7ffd1b3c6000 r--p 00000000 00:00 0                          [vvar]
7ffd1b3c6000-7ffd1b3c8000 r-xp 00000000 00:00 0                          [vdso]
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
";

    #[test]
    fn maps_sample() {
        let m = parse_maps(MAPS).unwrap();
        assert_eq!(m.len(), 13);

        let e = &m[0];
        assert_eq!(e.start, 0x55d0c8a00000);
        assert_eq!(e.end, 0x55d0c8a28000);
        assert!(e.read && !e.write && !e.exec && !e.shared);
        assert_eq!(e.offset, 0);
        assert_eq!((e.dev_major, e.dev_minor), (0xfd, 1));
        assert_eq!(e.inode, 1312034);
        assert_eq!(e.path, "/usr/bin/my prog");
        assert!(e.vm_flags.is_empty());
        assert_eq!(e.len(), 0x28000);
        assert!(!e.is_empty());

        assert_eq!(m[1].offset, 0x28000);
        assert!(m[1].exec);
        assert_eq!(m[2].path, "[heap]");

        assert_eq!(m[3].path, "/dev/zero (deleted)");
        assert!(m[3].shared && m[3].is_deleted());
        assert_eq!(m[4].path, "/SYSV00000000 (deleted)");
        assert_eq!(m[4].inode, 32768);
        assert_eq!(m[5].path, "/memfd:my buf (deleted)");
        assert!(m[5].is_deleted());

        // Anonymous: trailing space or none at all.
        assert_eq!(m[6].path, "");
        assert!(!m[6].is_deleted());
        assert_eq!(m[7].path, "");
        assert!(!m[7].read && !m[7].write && !m[7].exec);
        assert_eq!(m[8].path, "[anon:my name]");
        assert_eq!(m[9].path, "[stack]");
        assert_eq!(m[11].path, "[vdso]");

        let v = &m[12];
        assert_eq!(v.start, 0xffffffffff600000);
        assert_eq!(v.end, 0xffffffffff601000);
        assert!(v.exec && !v.read);
        assert_eq!(v.path, "[vsyscall]");
        assert_eq!(v.len(), 4096);
    }

    #[test]
    fn maps_path_kept_verbatim() {
        let m = parse_maps(
            "1000-2000 r--p 00000000 08:02 5 /tmp/a  b (deleted) \n\
             2000-3000 r--p 00000000 08:02 6 /tmp/x.so (deleted) (deleted)\n",
        )
        .unwrap();
        assert_eq!(m[0].path, "/tmp/a  b (deleted) ");
        assert!(!m[0].is_deleted());
        assert_eq!(m[1].path, "/tmp/x.so (deleted) (deleted)");
        assert!(m[1].is_deleted());
    }

    #[test]
    fn maps_huge_values() {
        let m = parse_maps(
            "ffffffffffffe000-ffffffffffffffff rw-s ffffffffffff0000 fff:fffff 18446744073709551615 /x\n",
        )
        .unwrap();
        assert_eq!(m[0].end, u64::MAX);
        assert_eq!(m[0].offset, 0xffffffffffff0000);
        assert_eq!((m[0].dev_major, m[0].dev_minor), (0xfff, 0xfffff));
        assert_eq!(m[0].inode, u64::MAX);
    }

    #[test]
    fn maps_empty_and_blank() {
        assert!(parse_maps("").unwrap().is_empty());
        assert!(parse_maps("\n\n").unwrap().is_empty());
        let m = parse_maps("1000-2000 r--p 00000000 00:00 0").unwrap();
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn maps_malformed() {
        let bad = [
            "1000 r--p 00000000 00:00 0",
            "1000-2000",
            "1000-2000 r--",
            "1000-2000 r--pp 00000000 00:00 0",
            "1000-2000 rw-x 00000000 00:00 0",
            "1000-2000 w--p 00000000 00:00 0",
            "1000-2000 r--p",
            "1000-2000 r--p 0000000g 00:00 0",
            "1000-2000 r--p 00000000 0000 0",
            "1000-2000 r--p 00000000 00: 0",
            "1000-2000 r--p 00000000 00:00",
            "1000-2000 r--p 00000000 00:00 -1",
            "1000-2000 r--p 00000000 00:00 x /a",
            "2000-1000 r--p 00000000 00:00 0",
            "10000000000000000-10000000000000001 r--p 00000000 00:00 0",
            "1000-2000 r--p 00000000 100000000:00 0",
            "-2000 r--p 00000000 00:00 0",
            "1000-2000 r\u{e9}-p 00000000 00:00 0",
            "\u{e9}\u{e9}\u{e9}",
            "Size: 4 kB",
        ];
        for b in bad {
            let err = parse_maps(b).unwrap_err();
            assert!(matches!(err, Error::Parse { .. }), "{b}");
        }
        // The line number is reported.
        let err = parse_maps("1000-2000 r--p 00000000 00:00 0\nnope\n").unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
    }

    const SMAPS: &str = "\
55d0c9f6b000-55d0c9f8c000 rw-p 00000000 00:00 0                          [heap]
Size:                132 kB
KernelPageSize:        4 kB
Rss:                   8 kB
Anonymous:             8 kB
THPeligible:           0
ProtectionKey:         0
VmFlags: rd wr mr mw me ac sd 
7f1c2a000000-7f1c2a021000 rw-s 00000000 00:01 2050                       /dev/zero (deleted)
Size:                132 kB
VmFlags: rd wr sh mr mw me ms sd
7f1c2a400000-7f1c2a600000 rw-p 00000000 00:00 0 
Size:               2048 kB
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
Size:                  4 kB
Rss:                   0 kB
VmFlags: ex
";

    #[test]
    fn smaps_sample() {
        let m = parse_smaps(SMAPS).unwrap();
        assert_eq!(m.len(), 4);
        assert_eq!(m[0].path, "[heap]");
        assert_eq!(m[0].vm_flags, ["rd", "wr", "mr", "mw", "me", "ac", "sd"]);
        assert!(m[0].has_flag("ac"));
        assert!(!m[0].has_flag("sh"));
        assert!(!m[0].has_flag("a"));
        assert_eq!(m[1].path, "/dev/zero (deleted)");
        assert!(m[1].has_flag("sh") && m[1].is_deleted());
        assert_eq!(m[2].path, "");
        assert!(m[2].vm_flags.is_empty());
        assert_eq!(m[3].start, 0xffffffffff600000);
        assert_eq!(m[3].path, "[vsyscall]");
        assert_eq!(m[3].vm_flags, ["ex"]);

        // Headers alone parse like maps.
        let maps_only = parse_smaps(MAPS).unwrap();
        assert_eq!(maps_only, parse_maps(MAPS).unwrap());
        assert!(parse_smaps("").unwrap().is_empty());
        let e = parse_smaps("1000-2000 r--p 00000000 00:00 0 /x\nVmFlags:\n").unwrap();
        assert!(e[0].vm_flags.is_empty());
    }

    #[test]
    fn smaps_malformed() {
        let bad = [
            "Size: 4 kB\n",
            "1000-2000 r--p 00000000 00:00 0\ngarbage line\n",
            "1000-2000 r--p 00000000 00:00 0\n: 4\n",
            "1000-2000 r--p 00000000 00:00 0\nSome Key: 4\n",
            "1000-2000 r--p 00000000 00:00 zz\nSize: 4 kB\n",
            "2000-1000 r--p 00000000 00:00 0\n",
        ];
        for b in bad {
            assert!(matches!(parse_smaps(b), Err(Error::Parse { .. })), "{b:?}");
        }
    }

    #[test]
    fn never_panics_on_prefixes() {
        for text in [MAPS, SMAPS] {
            for (i, _) in text.char_indices() {
                let _ = parse_maps(&text[..i]);
                let _ = parse_smaps(&text[..i]);
            }
        }
    }

    #[test]
    fn live_self() {
        let pid = std::process::id() as i32;
        let smaps = read_smaps(pid).unwrap();
        assert!(smaps.iter().any(|e| e.path == "[stack]"));
        assert!(smaps.iter().any(|e| !e.vm_flags.is_empty()));
        assert!(smaps.iter().all(|e| e.start <= e.end));
        let maps = read_maps(pid).unwrap();
        assert!(maps.iter().any(|e| e.path == "[stack]"));
        assert!(maps.iter().all(|e| e.vm_flags.is_empty()));
        // The address of a local lies in some readable, writable mapping.
        let x = 5u64;
        let addr = &x as *const u64 as u64;
        assert!(maps
            .iter()
            .any(|e| e.start <= addr && addr < e.end && e.read && e.write));
        assert!(read_maps(-1).is_err());
    }
}
