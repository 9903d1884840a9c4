//! The kernel's side of a process's AIO contexts (bpf/aio.bpf.c, an
//! `iter/task_vma` program): for each ring mapping, its `kioctx` as the
//! kernel keeps it. /proc shows none of it; see `kinds::memory::aio`.

use std::cell::RefCell;
use std::io;

use super::bpf::{load_small, run_iter};

#[allow(
    clippy::all,
    clippy::undocumented_unsafe_blocks,
    unsafe_op_in_unsafe_fn
)]
#[allow(dead_code, non_camel_case_types, non_snake_case, unused)]
mod skel {
    include!(concat!(env!("OUT_DIR"), "/aio.skel.rs"));
}

use skel::{AioSkel, AioSkelBuilder};

/// One AIO ring mapping of a process and its context (`struct kioctx`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelRing {
    pub start: u64,
    pub end: u64,
    /// Whether the mapping's file has a context at all.
    pub has_ctx: bool,
    /// ctx->user_id: the id io_setup returned (the ring's address).
    pub user_id: u64,
    pub mmap_size: u64,
    pub nr_events: u32,
    pub max_reqs: u32,
    /// ctx->tail: where the kernel puts the next completion.
    pub tail: u32,
    /// Requests submitted and not completed (cancellable ones, IOCB_CMD_POLL,
    /// are also on ctx->active_reqs).
    pub in_flight: i64,
    pub active_reqs: bool,
    pub dead: bool,
    /// The context is in the process's own mm->ioctx_table (a ring
    /// inherited through fork is not).
    pub owned: bool,
    /// Live contexts in the process's table (rings unmapped by the program
    /// leave contexts no mapping shows).
    pub table_live: u32,
    /// ctx->id: the context's index in the process's table (io_getevents
    /// finds a context by the ring header's id word).
    pub id: u32,
}

/// sizeof(struct cairn_aio_rec) in bpf/aio.bpf.c: five u64, ten u32.
const REC_LEN: usize = 80;

/// Decodes the records of bpf/aio.bpf.c (`struct cairn_aio_rec`).
fn decode(bytes: &[u8]) -> io::Result<Vec<KernelRing>> {
    if !bytes.len().is_multiple_of(REC_LEN) {
        return Err(io::Error::other(format!(
            "aio iterator: {} bytes, not a whole number of {REC_LEN}-byte records",
            bytes.len()
        )));
    }
    let u64_at = |r: &[u8], o: usize| u64::from_le_bytes(r[o..o + 8].try_into().unwrap_or([0; 8]));
    let u32_at = |r: &[u8], o: usize| u32::from_le_bytes(r[o..o + 4].try_into().unwrap_or([0; 4]));
    Ok(bytes
        .chunks_exact(REC_LEN)
        .map(|r| {
            let nr_events = u32_at(r, 40);
            let free = u64_at(r, 32) as i64;
            let completed = u32_at(r, 52);
            let mmap_size = u64_at(r, 24);
            KernelRing {
                start: u64_at(r, 0),
                end: u64_at(r, 8),
                has_ctx: mmap_size != 0,
                user_id: u64_at(r, 16),
                mmap_size,
                nr_events,
                max_reqs: u32_at(r, 44),
                tail: u32_at(r, 48),
                in_flight: nr_events as i64 - 1 - free - completed as i64,
                dead: u32_at(r, 56) != 0,
                owned: u32_at(r, 60) != 0,
                active_reqs: u32_at(r, 64) != 0,
                table_live: u32_at(r, 68),
                id: u32_at(r, 76),
            }
        })
        .collect())
}

struct Loaded {
    skel: AioSkel<'static>,
}

thread_local! {
    static LOADED: RefCell<Option<Result<Loaded, String>>> = const { RefCell::new(None) };
}

fn load() -> Result<Loaded, String> {
    let skel = load_small::<AioSkelBuilder>("aio.bpf.o").map_err(|e| e.to_string())?;
    Ok(Loaded { skel })
}

/// The AIO ring mappings of process `pid` with their contexts, from the
/// kernel (BPF, loaded once per run). Errors say why BPF could not tell.
pub fn rings(pid: i32) -> io::Result<Vec<KernelRing>> {
    LOADED.with(|cell| {
        let mut cell = cell.borrow_mut();
        if super::bpf::disabled() {
            return Err(super::bpf::off_error("aio.bpf.o"));
        }
        let loaded = cell.get_or_insert_with(load);
        let l = loaded.as_mut().map_err(|e| io::Error::other(e.clone()))?;
        let bss = l
            .skel
            .maps
            .bss_data
            .as_deref_mut()
            .ok_or_else(|| io::Error::other("aio.bpf.o has no .bss"))?;
        bss.target_tgid = pid;
        let out = run_iter(&l.skel.progs.aio_rings, "iter/task_vma aio_rings")?;
        decode(&out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_is_the_slots_neither_free_nor_completed() {
        let mut r = vec![0u8; REC_LEN];
        r[0..8].copy_from_slice(&0x1000u64.to_le_bytes());
        r[24..32].copy_from_slice(&4096u64.to_le_bytes());
        r[32..40].copy_from_slice(&120i64.to_le_bytes());
        r[40..44].copy_from_slice(&127u32.to_le_bytes());
        r[52..56].copy_from_slice(&5u32.to_le_bytes());
        r[60..64].copy_from_slice(&1u32.to_le_bytes());
        let k = &decode(&r).unwrap()[0];
        assert_eq!(
            (k.start, k.in_flight, k.owned, k.has_ctx),
            (0x1000, 1, true, true)
        );
        assert!(decode(&r[..10]).is_err());
    }
}
