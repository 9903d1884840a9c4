//! The skbs of one unix socket's receive queue (bpf/unixq.bpf.c, an
//! iter/unix program): each one's length and whether it carries
//! descriptors in flight. A stream peek glues the bytes of separate writes;
//! this shows where the write that carried descriptors began.

use std::io;

use super::bpf::{load_small, run_iter};

#[allow(
    clippy::all,
    clippy::undocumented_unsafe_blocks,
    unsafe_op_in_unsafe_fn
)]
#[allow(dead_code, non_camel_case_types, non_snake_case, unused)]
mod skel {
    include!(concat!(env!("OUT_DIR"), "/unixq.skel.rs"));
}

/// One skb of a receive queue: the bytes left in it, and whether it
/// carries descriptors in flight (SCM_RIGHTS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Skb {
    pub len: u32,
    pub fds: bool,
}

/// The skbs of the receive queue of the unix socket with inode `ino`, in
/// order; None if the kernel listed no such socket or the queue is longer
/// than the program walks.
pub fn queue_skbs(ino: u64) -> io::Result<Option<Vec<Skb>>> {
    let mut skel = load_small::<skel::UnixqSkelBuilder>("unixq.bpf.o")?;
    {
        let bss = skel
            .maps
            .bss_data
            .as_deref_mut()
            .ok_or_else(|| io::Error::other("unixq.bpf.o has no .bss"))?;
        bss.target_ino = ino;
        bss.found = 0;
        bss.truncated = 0;
    }
    let out = run_iter(&skel.progs.unixq, "iter/unix")?;
    let bss = skel
        .maps
        .bss_data
        .as_deref()
        .ok_or_else(|| io::Error::other("unixq.bpf.o has no .bss"))?;
    if bss.found == 0 || bss.truncated != 0 {
        return Ok(None);
    }
    Ok(Some(
        out.chunks_exact(8)
            .map(|c| Skb {
                len: u32::from_ne_bytes([c[0], c[1], c[2], c[3]]),
                fds: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]) != 0,
            })
            .collect(),
    ))
}
