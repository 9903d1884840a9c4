//! /proc/PID/auxv: the ELF auxiliary vector as native-endian u64 pairs.

use super::misc::{proc_path, read_proc_bytes};
use crate::error::Result;

/// AT_NULL, the type of the terminating pair.
const AT_NULL: u64 = 0;

/// Decodes the auxiliary vector into a flat list `[type, value, type,
/// value, ...]`, stopping after (and including) the AT_NULL pair. Bytes that
/// do not form a complete (type, value) pair at the end (a partial word, or
/// a type without its value) are ignored.
pub fn parse_auxv(bytes: &[u8]) -> Vec<u64> {
    let mut out = Vec::new();
    for pair in bytes.chunks_exact(16) {
        let (t, v) = pair.split_at(8);
        let word = |b: &[u8]| u64::from_ne_bytes(b.try_into().unwrap_or([0; 8]));
        let ty = word(t);
        out.push(ty);
        out.push(word(v));
        if ty == AT_NULL {
            break;
        }
    }
    out
}

/// Reads /proc/PID/auxv.
pub fn read_auxv(pid: i32) -> Result<Vec<u64>> {
    Ok(parse_auxv(&read_proc_bytes(proc_path(pid, "auxv"))?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(words: &[u64]) -> Vec<u8> {
        words.iter().flat_map(|w| w.to_ne_bytes()).collect()
    }

    #[test]
    fn stops_after_at_null() {
        let b = bytes(&[33, 0x7ffd0000, 6, 4096, 0, 0, 99, 99]);
        assert_eq!(parse_auxv(&b), [33, 0x7ffd0000, 6, 4096, 0, 0]);
    }

    #[test]
    fn partial_and_missing_terminator() {
        assert!(parse_auxv(&[]).is_empty());
        assert!(parse_auxv(&[1, 2, 3]).is_empty());
        let mut b = bytes(&[6, 4096, 25]);
        assert_eq!(parse_auxv(&b), [6, 4096]);
        b.extend_from_slice(&[1, 2, 3]);
        assert_eq!(parse_auxv(&b), [6, 4096]);
        assert_eq!(
            parse_auxv(&bytes(&[u64::MAX, u64::MAX])),
            [u64::MAX, u64::MAX]
        );
        // A non-zero value does not make a pair AT_NULL: only the type does.
        assert_eq!(parse_auxv(&bytes(&[0, 7, 6, 1])), [0, 7]);
    }

    #[test]
    fn live_self() {
        let v = read_auxv(std::process::id() as i32).unwrap();
        assert!(v.len() >= 2 && v.len().is_multiple_of(2));
        assert_eq!(v[v.len() - 2], AT_NULL);
        let pagesz = v.chunks(2).find(|p| p[0] == libc::AT_PAGESZ).map(|p| p[1]);
        assert_eq!(pagesz, Some(4096));
    }
}
