//! The shutdown bits of one of cairn's own sockets (bpf/sockshut.bpf.c,
//! an `iter/task_file` program reading `sk->sk_shutdown`): the only
//! interface that shows them for a socket sock_diag does not list (an
//! unbound UDP socket; poll() shows SHUT_RD but not SHUT_WR).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use super::bpf::{load_small, run_iter};

#[allow(
    clippy::all,
    clippy::undocumented_unsafe_blocks,
    unsafe_op_in_unsafe_fn
)]
#[allow(dead_code, non_camel_case_types, non_snake_case, unused)]
mod skel {
    include!(concat!(env!("OUT_DIR"), "/sockshut.skel.rs"));
}

/// The shutdown bits (1 SHUT_RD, 2 SHUT_WR) of socket `sock`, an fd of
/// this process (a pidfd_getfd copy shares the target's socket). An error
/// says why BPF could not tell (`--no-bpf`, no BPF, not a socket).
pub fn shutdown_bits(sock: BorrowedFd<'_>) -> io::Result<u32> {
    let mut skel = load_small::<skel::SockshutSkelBuilder>("sockshut.bpf.o")?;
    {
        let bss = skel
            .maps
            .bss_data
            .as_deref_mut()
            .ok_or_else(|| io::Error::other("sockshut.bpf.o has no .bss"))?;
        bss.target_tgid = std::process::id() as i32;
        bss.target_fd = sock.as_raw_fd() as u32;
        bss.found = 0;
        bss.shutdown = 0;
    }
    run_iter(&skel.progs.sockshut, "iter/task_file sockshut")?;
    let bss = skel
        .maps
        .bss_data
        .as_deref()
        .ok_or_else(|| io::Error::other("sockshut.bpf.o has no .bss"))?;
    if bss.found == 0 {
        return Err(io::Error::other(format!(
            "sockshut.bpf.o did not see fd {} of cairn as a socket",
            sock.as_raw_fd()
        )));
    }
    Ok(bss.shutdown & 3)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    /// An unbound UDP socket shut down for writing: only BPF sees it.
    #[test]
    fn unbound_udp_shut_wr_is_seen() {
        let s = super::super::sock::socket(libc::AF_INET, libc::SOCK_DGRAM).unwrap();
        let Ok(first) = shutdown_bits(s.as_fd()) else {
            eprintln!("skipped: BPF unavailable here");
            return;
        };
        assert_eq!(first, 0);
        // An unconnected socket: the bits are set and ENOTCONN returned.
        let _ = super::super::sock::shutdown(&s, libc::SHUT_WR);
        assert_eq!(shutdown_bits(s.as_fd()).unwrap(), 2);
        let _ = super::super::sock::shutdown(&s, libc::SHUT_RD);
        assert_eq!(shutdown_bits(s.as_fd()).unwrap(), 3);
        let f = std::fs::File::open("/dev/null").unwrap();
        assert!(shutdown_bits(f.as_fd()).is_err());
    }
}
