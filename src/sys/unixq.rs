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

/// unixq.bpf.o loaded (honouring --no-bpf), with the program inputs in
/// its .bss set by `set`.
/// A program that does not load (--no-bpf, no BPF, a kernel before 5.15
/// without the unix socket iterator) is an Unsupported error: what needs
/// it is refused, naming why.
fn load_unixq(set: impl FnOnce(&mut skel::types::bss)) -> io::Result<skel::UnixqSkel<'static>> {
    let mut skel = load_small::<skel::UnixqSkelBuilder>("unixq.bpf.o").map_err(|e| {
        io::Error::new(
            io::ErrorKind::Unsupported,
            format!("the BPF unix socket iterator (iter/unix, Linux 5.15+) is not usable: {e}"),
        )
    })?;
    let bss = skel
        .maps
        .bss_data
        .as_deref_mut()
        .ok_or_else(|| io::Error::other("unixq.bpf.o has no .bss"))?;
    set(bss);
    Ok(skel)
}

/// The skbs of the receive queue of the unix socket with inode `ino`, in
/// order; None if the kernel listed no such socket or the queue is longer
/// than the program walks.
pub fn queue_skbs(ino: u64) -> io::Result<Option<Vec<Skb>>> {
    let skel = load_unixq(|bss| {
        bss.target_ino = ino;
        bss.found = 0;
        bss.truncated = 0;
    })?;
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

/// A connection waiting in a listener's backlog, as the kernel recorded
/// it (bpf/unixq.bpf.c `embryos`): what SO_PEERCRED and SO_PEERGROUPS of
/// the socket accept() would return will show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Embryo {
    /// Inode of the connecting socket (0 when it is closed).
    pub client_ino: u64,
    /// The connecting task's pid in cairn's pid namespace, 0 when it has
    /// none there.
    pub pid: i32,
    /// None when the connection records no credentials.
    pub cred: Option<EmbryoCred>,
}

/// Effective uid, gid and supplementary groups (kernel ids: cairn's user
/// namespace must be the initial one for them to be what getsockopt shows).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbryoCred {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    /// More groups than the program copies (`groups` is then partial).
    pub groups_truncated: bool,
}

/// Bytes of one record of `embryos` (struct cairn_embryo_rec).
const EMBRYO_REC: usize = 32 + 4 * EMBRYO_GROUPS;
/// MAX_GROUPS of the program.
const EMBRYO_GROUPS: usize = 64;

/// The connections waiting to be accepted in every unix listener of
/// cairn's network namespace (each found by the inode of its connecting
/// socket). An error says why BPF could not tell (`--no-bpf`, no BPF,
/// cairn outside the initial user namespace).
pub fn embryos() -> io::Result<Vec<Embryo>> {
    use std::os::unix::fs::MetadataExt;
    if !initial_userns()? {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "cairn runs in a user namespace: the kernel's uids and gids are not the ones getsockopt shows",
        ));
    }
    let pidns = std::fs::metadata("/proc/self/ns/pid")?.ino();
    let skel = load_unixq(|bss| bss.pidns_inum = pidns)?;
    let out = run_iter(&skel.progs.embryos, "iter/unix embryos")?;
    Ok(out.chunks_exact(EMBRYO_REC).map(parse_embryo).collect())
}

fn parse_embryo(c: &[u8]) -> Embryo {
    let u32_at = |o: usize| u32::from_ne_bytes([c[o], c[o + 1], c[o + 2], c[o + 3]]);
    let client_ino = u64::from_ne_bytes(c[0..8].try_into().expect("8 bytes"));
    let ngroups = u32_at(20) as usize;
    let cred = (u32_at(24) != 0).then(|| EmbryoCred {
        uid: u32_at(12),
        gid: u32_at(16),
        groups: (0..ngroups.min(EMBRYO_GROUPS))
            .map(|i| u32_at(32 + 4 * i))
            .collect(),
        groups_truncated: ngroups > EMBRYO_GROUPS,
    });
    Embryo {
        client_ino,
        pid: u32_at(8) as i32,
        cred,
    }
}

/// Whether cairn is in the initial user namespace (its uid_map maps every
/// id to itself), where kernel ids are the ids getsockopt shows.
fn initial_userns() -> io::Result<bool> {
    let m = std::fs::read_to_string("/proc/self/uid_map")?;
    let f: Vec<&str> = m.split_whitespace().collect();
    Ok(f == ["0", "0", "4294967295"])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection waiting in cairn's own listener (`_l`) names cairn
    /// (the task that connected), with its groups, by the connecting
    /// socket's inode.
    #[test]
    fn embryos_name_the_connecting_task() {
        use std::os::linux::net::SocketAddrExt;
        use std::os::unix::fs::MetadataExt;
        let name = format!("cairn-embryo-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let _l = std::os::unix::net::UnixListener::bind_addr(&addr).unwrap();
        let c = std::os::unix::net::UnixStream::connect_addr(&addr).unwrap();
        let ino = |fd: i32| {
            std::fs::metadata(format!("/proc/self/fd/{fd}"))
                .unwrap()
                .ino()
        };
        let cino = {
            use std::os::fd::AsRawFd;
            ino(c.as_raw_fd())
        };
        let got = match embryos() {
            Ok(g) => g,
            Err(e) => {
                eprintln!("skipped: BPF unavailable here ({e})");
                return;
            }
        };
        let got: Vec<Embryo> = got.into_iter().filter(|e| e.client_ino == cino).collect();
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].client_ino, cino);
        assert_eq!(got[0].pid, std::process::id() as i32);
        let cred = got[0].cred.as_ref().expect("credentials");
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let field = |k: &str| -> Vec<u32> {
            status
                .lines()
                .find_map(|l| l.strip_prefix(k))
                .unwrap_or("")
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect()
        };
        assert_eq!(cred.uid, field("Uid:")[1]);
        assert_eq!(cred.gid, field("Gid:")[1]);
        let mut groups = field("Groups:");
        groups.sort_unstable();
        let mut mine = cred.groups.clone();
        mine.sort_unstable();
        assert_eq!(mine, groups);
        drop(c);
    }
}
