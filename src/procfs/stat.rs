//! /proc/PID/stat and /proc/PID/task/TID/stat.
//!
//! Format: `pid (comm) state ppid ...`, 52 fields on current kernels (see
//! proc(5)). The comm may contain spaces, parentheses and any other byte, so
//! it is taken between the first '(' and the last ')'.

use super::misc::{proc_path, read_proc_lossy, task_path};
use super::{at_path, excerpt, parse_i32, parse_i64, parse_u32, parse_u64};
use crate::error::{Error, Result};
use std::path::Path;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stat {
    /// Field 1.
    pub pid: i32,
    /// Field 2, without the parentheses.
    pub comm: String,
    /// Field 3 (R, S, D, T, t, Z, X, I, ...).
    pub state: char,
    /// Field 4.
    pub ppid: i32,
    /// Field 5.
    pub pgrp: i32,
    /// Field 6.
    pub session: i32,
    /// Field 7.
    pub tty_nr: i32,
    /// Field 8.
    pub tpgid: i32,
    /// Field 9 (PF_* flags).
    pub flags: u32,
    /// Field 20.
    pub num_threads: i64,
    /// Field 22, in clock ticks since boot.
    pub starttime: u64,
    /// Field 26.
    pub start_code: u64,
    /// Field 27.
    pub end_code: u64,
    /// Field 28.
    pub start_stack: u64,
    /// Field 38.
    pub exit_signal: i32,
    /// Field 45.
    pub start_data: u64,
    /// Field 46.
    pub end_data: u64,
    /// Field 47.
    pub start_brk: u64,
    /// Field 48.
    pub arg_start: u64,
    /// Field 49.
    pub arg_end: u64,
    /// Field 50.
    pub env_start: u64,
    /// Field 51.
    pub env_end: u64,
    /// Field 52.
    pub exit_code: i32,
}

/// Number of fields the parser requires (up to exit_code).
const FIELDS: usize = 52;

/// Parses the text of a stat file. Requires all 52 fields; extra trailing
/// fields (from a newer kernel) are ignored.
pub fn parse_stat(text: &str) -> Result<Stat> {
    let err = |msg: String| Error::parse("stat", msg);
    let open = text
        .find('(')
        .ok_or_else(|| err(format!("no '(' in {}", excerpt(text))))?;
    let close = text
        .rfind(')')
        .filter(|&c| c > open)
        .ok_or_else(|| err(format!("no ')' after '(' in {}", excerpt(text))))?;
    let (head, tail) = text.split_at(open);
    let pid_s = head.trim();
    let pid = parse_i32(pid_s).ok_or_else(|| err(format!("bad pid {}", excerpt(pid_s))))?;
    // '(' and ')' are one byte each, so these slices are on char boundaries.
    let comm = tail
        .get(1..close - open)
        .ok_or_else(|| err("bad comm".into()))?
        .to_string();
    let rest = text.get(close + 1..).unwrap_or("");
    if !rest.starts_with([' ', '\t', '\n']) {
        return Err(err(format!("no space after comm in {}", excerpt(text))));
    }

    // fields[0] is field 3 (state).
    let fields: Vec<&str> = rest.split_whitespace().collect();
    if fields.len() + 2 < FIELDS {
        return Err(err(format!(
            "{} fields, expected at least {FIELDS}",
            fields.len() + 2
        )));
    }
    let field = |n: usize| -> Result<&str> {
        fields
            .get(n.wrapping_sub(3))
            .copied()
            .ok_or_else(|| err(format!("missing field {n}")))
    };
    let bad = |n: usize, v: &str| err(format!("field {n}: bad value {}", excerpt(v)));
    let int = |n: usize| -> Result<i32> {
        let v = field(n)?;
        parse_i32(v).ok_or_else(|| bad(n, v))
    };
    let long = |n: usize| -> Result<i64> {
        let v = field(n)?;
        parse_i64(v).ok_or_else(|| bad(n, v))
    };
    let uint = |n: usize| -> Result<u32> {
        let v = field(n)?;
        parse_u32(v).ok_or_else(|| bad(n, v))
    };
    let ulong = |n: usize| -> Result<u64> {
        let v = field(n)?;
        parse_u64(v).ok_or_else(|| bad(n, v))
    };

    let state_s = field(3)?;
    let mut chars = state_s.chars();
    let state = match (chars.next(), chars.next()) {
        (Some(c), None) => c,
        _ => return Err(bad(3, state_s)),
    };

    Ok(Stat {
        pid,
        comm,
        state,
        ppid: int(4)?,
        pgrp: int(5)?,
        session: int(6)?,
        tty_nr: int(7)?,
        tpgid: int(8)?,
        flags: uint(9)?,
        num_threads: long(20)?,
        starttime: ulong(22)?,
        start_code: ulong(26)?,
        end_code: ulong(27)?,
        start_stack: ulong(28)?,
        exit_signal: int(38)?,
        start_data: ulong(45)?,
        end_data: ulong(46)?,
        start_brk: ulong(47)?,
        arg_start: ulong(48)?,
        arg_end: ulong(49)?,
        env_start: ulong(50)?,
        env_end: ulong(51)?,
        exit_code: int(52)?,
    })
}

fn read_at(path: &Path) -> Result<Stat> {
    let text = read_proc_lossy(path)?;
    parse_stat(&text).map_err(|e| at_path(e, path))
}

/// Reads /proc/PID/stat.
pub fn read_stat(pid: i32) -> Result<Stat> {
    read_at(&proc_path(pid, "stat"))
}

/// PF_EXITING of [`Stat::flags`]: the task has begun to exit.
pub const PF_EXITING: u32 = 0x4;

/// Whether `pid` is on its way out, so that its pid is free once its
/// parent has reaped it: a zombie, exiting, or with SIGKILL pending for
/// its thread group (killed, not yet scheduled to die). False for a pid
/// that does not exist.
pub fn dying(pid: i32) -> bool {
    const SIGKILL_BIT: u64 = 1 << (libc::SIGKILL - 1);
    match read_stat(pid) {
        Ok(st) if matches!(st.state, 'Z' | 'X') || st.flags & PF_EXITING != 0 => true,
        Ok(_) => super::read_status(pid).is_ok_and(|s| s.shd_pnd & SIGKILL_BIT != 0),
        Err(_) => false,
    }
}

/// Reads /proc/PID/task/TID/stat.
pub fn read_task_stat(pid: i32, tid: i32) -> Result<Stat> {
    read_at(&task_path(pid, tid, "stat"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real line from a 6.x kernel (bash), 52 fields.
    const BASH: &str = "2781 (bash) S 2770 2781 2781 34816 3104 4194560 8371 28553 0 2 12 7 \
        46 19 20 0 1 0 14237 9011200 1326 18446744073709551615 94558445133824 \
        94558446051325 140723493807024 0 0 0 65536 3670020 1266777851 1 0 0 17 3 0 0 0 0 \
        0 94558446284144 94558446332292 94558469337088 140723493815167 140723493815173 \
        140723493815173 140723493818350 0\n";

    #[test]
    fn bash_sample() {
        let s = parse_stat(BASH).unwrap();
        assert_eq!(
            s,
            Stat {
                pid: 2781,
                comm: "bash".into(),
                state: 'S',
                ppid: 2770,
                pgrp: 2781,
                session: 2781,
                tty_nr: 34816,
                tpgid: 3104,
                flags: 4194560,
                num_threads: 1,
                starttime: 14237,
                start_code: 94558445133824,
                end_code: 94558446051325,
                start_stack: 140723493807024,
                exit_signal: 17,
                start_data: 94558446284144,
                end_data: 94558446332292,
                start_brk: 94558469337088,
                arg_start: 140723493815167,
                arg_end: 140723493815173,
                env_start: 140723493815173,
                env_end: 140723493818350,
                exit_code: 0,
            }
        );
    }

    fn with_comm(comm: &str) -> String {
        let (_, rest) = BASH.split_once(')').unwrap();
        format!("2781 ({comm}){rest}")
    }

    #[test]
    fn comm_with_spaces_and_parens() {
        for comm in [
            "a b",
            "x) S 1 2 3 (",
            ")",
            "(",
            "((",
            "))",
            "",
            " ",
            "tab\there",
            "nl\nx",
            "é ü",
        ] {
            let s = parse_stat(&with_comm(comm)).unwrap();
            assert_eq!(s.comm, comm);
            assert_eq!(s.pid, 2781);
            assert_eq!(s.state, 'S');
            assert_eq!(s.ppid, 2770);
            assert_eq!(s.exit_code, 0);
        }
    }

    #[test]
    fn huge_and_negative_values() {
        let mut f: Vec<String> = BASH[BASH.find(')').unwrap() + 2..]
            .split_whitespace()
            .map(String::from)
            .collect();
        // f[i] is field i + 3.
        f[8 - 3] = "-1".into(); // tpgid
        f[7 - 3] = "-2147483648".into();
        f[22 - 3] = u64::MAX.to_string();
        f[28 - 3] = u64::MAX.to_string();
        f[20 - 3] = i64::MAX.to_string();
        f[52 - 3] = "-1".into();
        f[38 - 3] = "-1".into();
        let text = format!("1 (x) {}", f.join(" "));
        let s = parse_stat(&text).unwrap();
        assert_eq!(s.tpgid, -1);
        assert_eq!(s.tty_nr, i32::MIN);
        assert_eq!(s.starttime, u64::MAX);
        assert_eq!(s.start_stack, u64::MAX);
        assert_eq!(s.num_threads, i64::MAX);
        assert_eq!(s.exit_code, -1);
        assert_eq!(s.exit_signal, -1);

        // Overflow is an error.
        f[22 - 3] = "18446744073709551616".into();
        assert!(parse_stat(&format!("1 (x) {}", f.join(" "))).is_err());
    }

    #[test]
    fn extra_fields_ignored() {
        let text = format!("{} 7 8 9\n", BASH.trim_end());
        assert_eq!(parse_stat(&text).unwrap(), parse_stat(BASH).unwrap());
    }

    #[test]
    fn malformed() {
        let truncated = &BASH[..BASH.trim_end().rfind(' ').unwrap()];
        let bad: Vec<String> = vec![
            "".into(),
            "\n".into(),
            "2781 bash S 1".into(),
            "2781 (bash S 1".into(),
            "2781 )bash( S 1".into(),
            "2781 (bash)".into(),
            "2781 (bash) S".into(),
            truncated.into(),
            BASH.replacen("2781 (", "x (", 1),
            BASH.replacen("2781 (", "(", 1),
            BASH.replacen("2781 (", "99999999999 (", 1),
            BASH.replacen(") S ", ") SS ", 1),
            BASH.replacen(") S 2770", ") S x", 1),
            BASH.replacen(") S ", ")S ", 1),
            BASH.replacen(" 17 3 ", " 17.5 3 ", 1),
            BASH.replacen(" 4194560 ", " -4194560 ", 1),
        ];
        for b in &bad {
            assert!(matches!(parse_stat(b), Err(Error::Parse { .. })), "{b:?}");
        }
    }

    #[test]
    fn never_panics_on_prefixes() {
        let t = with_comm("é ) (");
        for (i, _) in t.char_indices() {
            let _ = parse_stat(&t[..i]);
        }
    }

    #[test]
    fn live_self() {
        let pid = std::process::id() as i32;
        let s = read_stat(pid).unwrap();
        assert_eq!(s.pid, pid);
        assert_eq!(s.ppid, nix::unistd::getppid().as_raw());
        assert!(s.num_threads >= 1);
        assert!(s.start_stack != 0 && s.arg_start < s.arg_end);
        let t = read_task_stat(pid, pid).unwrap();
        assert_eq!(t.pid, pid);
        assert_eq!(t.comm, s.comm);
        assert!(read_stat(-1).is_err());
    }
}
