//! Per-process state /proc does not show, read for the oracle
//! (bpf/procattrs.bpf.c, an `iter/task` program): whether a process is a
//! child subreaper, and its mm's membarrier registrations.

use std::collections::HashMap;
use std::io;

use super::bpf::{load_small_always, run_iter};

#[allow(
    clippy::all,
    clippy::undocumented_unsafe_blocks,
    unsafe_op_in_unsafe_fn
)]
#[allow(dead_code, non_camel_case_types, non_snake_case, unused)]
mod skel {
    include!(concat!(env!("OUT_DIR"), "/procattrs.skel.rs"));
}

/// What the kernel keeps for one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attrs {
    /// signal->is_child_subreaper (PR_GET_CHILD_SUBREAPER).
    pub subreaper: bool,
    /// mm->membarrier_state (MEMBARRIER_STATE_* bits); None without
    /// CONFIG_MEMBARRIER.
    pub membarrier_state: Option<u32>,
}

/// sizeof(struct cairn_attrs_rec).
const REC_LEN: usize = 16;

fn decode(bytes: &[u8]) -> io::Result<HashMap<i32, Attrs>> {
    if !bytes.len().is_multiple_of(REC_LEN) {
        return Err(io::Error::other(format!(
            "procattrs iterator: {} bytes, not a whole number of {REC_LEN}-byte records",
            bytes.len()
        )));
    }
    let u32_at = |r: &[u8], o: usize| u32::from_le_bytes([r[o], r[o + 1], r[o + 2], r[o + 3]]);
    Ok(bytes
        .chunks_exact(REC_LEN)
        .map(|r| {
            (
                u32_at(r, 0) as i32,
                Attrs {
                    subreaper: u32_at(r, 4) != 0,
                    membarrier_state: (u32_at(r, 12) != 0).then(|| u32_at(r, 8)),
                },
            )
        })
        .collect())
}

/// The attributes of every process (thread-group leader with an mm) of
/// the system, by pid. The oracle's reads are not the dump's: they are
/// made with `--no-bpf` too (both snapshots must see the same fields).
pub fn all() -> io::Result<HashMap<i32, Attrs>> {
    let skel = load_small_always::<skel::ProcattrsSkelBuilder>("procattrs.bpf.o")?;
    decode(&run_iter(&skel.progs.procattrs, "iter/task procattrs")?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_decode() {
        let mut r = vec![0u8; REC_LEN * 2];
        r[0..4].copy_from_slice(&7i32.to_le_bytes());
        r[4..8].copy_from_slice(&1u32.to_le_bytes());
        r[8..12].copy_from_slice(&0x3u32.to_le_bytes());
        r[12..16].copy_from_slice(&1u32.to_le_bytes());
        r[16..20].copy_from_slice(&9i32.to_le_bytes());
        let m = decode(&r).unwrap();
        assert_eq!(
            m[&7],
            Attrs {
                subreaper: true,
                membarrier_state: Some(3)
            }
        );
        assert_eq!(
            m[&9],
            Attrs {
                subreaper: false,
                membarrier_state: None
            }
        );
        assert!(decode(&r[..5]).is_err());
    }

    /// This process: no subreaper unless set, as prctl says.
    #[test]
    fn own_process_matches_prctl() {
        let Ok(m) = all() else {
            eprintln!("skipped: BPF unavailable here");
            return;
        };
        let me = m[&(std::process::id() as i32)];
        let want = rustix::process::child_subreaper().unwrap().is_some();
        assert_eq!(me.subreaper, want);
    }
}

/// `mm->membarrier_state` by pid (None: no CONFIG_MEMBARRIER).
type States = HashMap<i32, Option<u32>>;

thread_local! {
    /// The program, loaded once per run (per thread: libbpf objects are
    /// not shared between threads).
    static LOADED: std::cell::OnceCell<Result<skel::ProcattrsSkel<'static>, String>> =
        const { std::cell::OnceCell::new() };
    /// The states of the last iterator run and the freeze it was made in.
    static STATES: std::cell::RefCell<Option<(u64, States)>> =
        const { std::cell::RefCell::new(None) };
}

/// Counts the trees frozen by this run (see [`new_freeze`]).
static FREEZES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A tree is being frozen: the states read before it are stale. While
/// the tree is frozen none of its processes can register, so one run of
/// the iterator answers for every process of it.
pub fn new_freeze() {
    FREEZES.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
}

/// The mm's `membarrier_state` of the process `pid` (for the dump before
/// Linux 6.3, which has no MEMBARRIER_CMD_GET_REGISTRATIONS): None when
/// the iterator did not list it, Some(None) without CONFIG_MEMBARRIER.
/// The program is loaded once per run and run once per frozen tree
/// ([`new_freeze`]: a process may register between two dumps of one run,
/// not while its tree is frozen).
pub fn membarrier_state(pid: i32) -> io::Result<Option<Option<u32>>> {
    let epoch = FREEZES.load(std::sync::atomic::Ordering::SeqCst);
    let cached = STATES.with(|c| match &*c.borrow() {
        Some((e, m)) if *e == epoch => Some(m.get(&pid).copied()),
        _ => None,
    });
    if let Some(hit) = cached {
        // A process not in the map may have been born after the run (not
        // one of a frozen tree, but answer it from a fresh run anyway).
        if hit.is_some() {
            return Ok(hit);
        }
    }
    let states = LOADED.with(|cell| {
        let skel = cell.get_or_init(|| {
            load_small_always::<skel::ProcattrsSkelBuilder>("procattrs.bpf.o")
                .map_err(|e| e.to_string())
        });
        let skel = skel.as_ref().map_err(|e| io::Error::other(e.clone()))?;
        let all = decode(&run_iter(&skel.progs.procattrs, "iter/task procattrs")?)?;
        Ok::<_, io::Error>(
            all.into_iter()
                .map(|(p, a)| (p, a.membarrier_state))
                .collect::<HashMap<_, _>>(),
        )
    })?;
    let got = states.get(&pid).copied();
    STATES.with(|c| *c.borrow_mut() = Some((epoch, states)));
    Ok(got)
}
