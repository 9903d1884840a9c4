//! The kernel's private state of one packet socket (bpf/pktring.bpf.c):
//! its position in its PACKET_RX_RING / PACKET_TX_RING, the TPACKET_V3
//! active block, its fanout group's member limit and round-robin
//! cursor, its index among the group's members, and its rollover and
//! receive-pressure state. Neither getsockopt nor packet_diag shows these; an
//! iter/task_file program reads them from struct packet_sock (CO-RE
//! against the running kernel's BTF).

use std::io;

use super::bpf::{load_small, run_iter};

#[allow(
    clippy::all,
    clippy::undocumented_unsafe_blocks,
    unsafe_op_in_unsafe_fn
)]
#[allow(dead_code, non_camel_case_types, non_snake_case, unused)]
mod skel {
    include!(concat!(env!("OUT_DIR"), "/pktring.skel.rs"));
}

/// What bpf/pktring.bpf.c read (its `struct pktring_state`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PacketState {
    /// tp_version: 0 TPACKET_V1, 1 V2, 2 V3.
    pub version: u32,
    /// rx_ring.head: the frame the kernel fills next (V1/V2).
    pub rx_head: u32,
    /// rx_ring.frame_max: the ring's frame count minus one.
    pub rx_frame_max: u32,
    /// tx_ring.head: the frame the kernel sends next.
    pub tx_head: u32,
    pub tx_frame_max: u32,
    /// TPACKET_V3 receive ring: the block the kernel fills, the offset of
    /// its next packet in it, and the next block's sequence number.
    pub v3_active_block: u32,
    pub v3_offset: u64,
    pub v3_next_seq: u64,
    /// TPACKET_V3: the receive queue is frozen (the kernel found the next
    /// block still the user's; it opens it once released).
    pub v3_frozen: bool,
    /// Packets dropped since the last frame was filled (the next frame
    /// gets TP_STATUS_LOSING while it is not zero).
    pub drops: u32,
    /// The fanout group, when in one: id | type << 16 | flags << 24, its
    /// member count, member limit and round-robin cursor.
    pub fanout: Option<Fanout>,
    /// The socket's rollover state (PACKET_FANOUT_ROLLOVER or
    /// PACKET_FANOUT_FLAG_ROLLOVER): the member it tries first when it
    /// rolls over, and whether its flow history holds any hash.
    pub rollover: Option<(i32, bool)>,
    /// Receive pressure: set when its queue ran low on room, cleared by a
    /// read (rollover skips a member under pressure).
    pub pressure: bool,
}

/// [`Fanout::index`] of a socket the member array does not hold (its
/// interface went down: it is in the group but receives nothing).
pub const FANOUT_UNLINKED: u32 = 1025;
/// [`Fanout::index`] when the array was not searched far enough.
pub const FANOUT_UNSEARCHED: u32 = 1024;

/// A packet socket's fanout group as the kernel holds it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fanout {
    pub id_type_flags: u32,
    pub members: u32,
    pub max_members: u32,
    pub rr_cur: u32,
    /// A fanout program is set (read for PACKET_FANOUT_CBPF/EBPF groups:
    /// it shares a union with `rr_cur`).
    pub prog: bool,
    /// The socket's place in the group's member array, or
    /// [`FANOUT_UNLINKED`] / [`FANOUT_UNSEARCHED`].
    pub index: u32,
}

thread_local! {
    /// The program, loaded once per run (a dump reads every packet socket
    /// with it, twice or more for a ring) and kept for the rest of it.
    static LOADED: std::cell::RefCell<Option<skel::PktringSkel<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// The state of the packet socket with inode `ino` that process `pid`
/// holds (`None`: no fd of `pid` is that socket). The program is loaded
/// by the first read of the run (`bpf::load_small`: refused with
/// `--no-bpf`) and reused.
pub fn read(pid: i32, ino: u64) -> io::Result<Option<PacketState>> {
    LOADED.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.is_none() {
            *cell = Some(load_small::<skel::PktringSkelBuilder>("pktring.bpf.o")?);
        }
        let skel = cell.as_mut().expect("loaded above");
        {
            let bss = (skel.maps.bss_data.as_deref_mut())
                .ok_or_else(|| io::Error::other("pktring.bpf.o has no .bss"))?;
            bss.target_tgid = pid;
            bss.target_ino = ino;
            bss.out = Default::default();
        }
        run_iter(&skel.progs.packet_state, "iter/task_file packet_state")?;
        let o = &(skel.maps.bss_data.as_deref())
            .ok_or_else(|| io::Error::other("pktring.bpf.o has no .bss"))?
            .out;
        if o.found == 0 {
            return Ok(None);
        }
        Ok(Some(PacketState {
            version: o.version,
            rx_head: o.rx_head,
            rx_frame_max: o.rx_frame_max,
            tx_head: o.tx_head,
            tx_frame_max: o.tx_frame_max,
            v3_active_block: o.v3_active_block,
            v3_offset: o.v3_offset,
            v3_next_seq: o.v3_next_seq,
            v3_frozen: o.v3_frozen != 0,
            drops: o.drops,
            fanout: (o.fanout != 0).then_some(Fanout {
                id_type_flags: o.fanout_id_type_flags,
                members: o.fanout_members,
                max_members: o.fanout_max_members,
                rr_cur: o.fanout_rr_cur,
                prog: o.fanout_prog != 0,
                index: o.fanout_index,
            }),
            rollover: (o.rollover != 0).then_some((o.rollover_sock, o.rollover_history != 0)),
            pressure: o.pressure != 0,
        }))
    })
}

/// cairn's own shared mapping of a packet socket's rings (receive ring
/// then transmit ring, as the program maps them), unmapped on drop. The
/// kernel writes frames into it at any time: every access is a volatile
/// read or write of a word or a copy, bounds-checked.
pub struct RingMap {
    ptr: *mut u8,
    len: usize,
}

impl RingMap {
    /// mmap(2) of the whole ring area (`len`: both rings' bytes) of
    /// socket `fd`, read-write, shared.
    pub fn map(fd: &impl std::os::fd::AsFd, len: usize) -> io::Result<RingMap> {
        use rustix::mm::{MapFlags, ProtFlags};
        // SAFETY: a new mapping at an address the kernel picks; nothing
        // else refers to it; it is unmapped in Drop.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                fd,
                0,
            )
        }?;
        Ok(RingMap {
            ptr: ptr.cast(),
            len,
        })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn check(&self, off: usize, n: usize) -> io::Result<()> {
        if off.checked_add(n).is_none_or(|e| e > self.len) {
            return Err(io::Error::other(format!(
                "ring access {off}+{n} beyond its {} bytes",
                self.len
            )));
        }
        Ok(())
    }

    /// A copy of every byte.
    pub fn copy(&self) -> Vec<u8> {
        let mut v = vec![0u8; self.len];
        // SAFETY: the mapping holds `len` bytes; the kernel may write into
        // it meanwhile (the caller compares two copies), which cannot
        // make the copy unsound for plain bytes.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr, v.as_mut_ptr(), self.len) };
        v
    }

    /// Writes `b` at offset `off`.
    pub fn write(&self, off: usize, b: &[u8]) -> io::Result<()> {
        self.check(off, b.len())?;
        // SAFETY: in bounds (checked); the mapping is writable.
        unsafe { std::ptr::copy_nonoverlapping(b.as_ptr(), self.ptr.add(off), b.len()) };
        Ok(())
    }

    /// The 32-bit word at `off` (4-aligned), read once.
    pub fn read_u32(&self, off: usize) -> io::Result<u32> {
        self.check(off, 4)?;
        if !off.is_multiple_of(4) {
            return Err(io::Error::other(format!("unaligned ring word {off}")));
        }
        // SAFETY: in bounds and aligned (checked; the mapping is
        // page-aligned).
        Ok(unsafe { self.ptr.add(off).cast::<u32>().read_volatile() })
    }

    /// Writes the 32-bit word at `off` (4-aligned) once.
    pub fn write_u32(&self, off: usize, v: u32) -> io::Result<()> {
        self.check(off, 4)?;
        if !off.is_multiple_of(4) {
            return Err(io::Error::other(format!("unaligned ring word {off}")));
        }
        // SAFETY: in bounds and aligned (checked); writable.
        unsafe { self.ptr.add(off).cast::<u32>().write_volatile(v) };
        Ok(())
    }
}

impl Drop for RingMap {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`; no reference into it outlives
        // self.
        let _ = unsafe { rustix::mm::munmap(self.ptr.cast(), self.len) };
    }
}

/// sendto(2) of `buf` on packet socket `fd` to interface `ifindex`,
/// protocol `proto_be`, with an all-zero 6-byte link address (what a
/// SOCK_DGRAM socket needs to build the header; a TX ring sends its
/// frames with it).
pub fn send_ll(
    fd: &impl std::os::fd::AsRawFd,
    buf: &[u8],
    ifindex: i32,
    proto_be: u16,
) -> io::Result<usize> {
    // SAFETY: sockaddr_ll is plain data, all-zero is valid.
    let mut a: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    a.sll_family = libc::AF_PACKET as u16;
    a.sll_protocol = proto_be;
    a.sll_ifindex = ifindex;
    a.sll_halen = 6;
    // SAFETY: buf and a are valid for the lengths given.
    let n = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            buf.as_ptr().cast(),
            buf.len(),
            0,
            (&a as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::net::{self, socket_proto};
    use crate::sys::netlink::{ll_bind, LlAddr, SOL_PACKET};
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;

    /// IEEE 802 local experimental ethertype: nothing else in the test's
    /// network namespace listens to it.
    const ETH_P_EXP: u16 = 0x88b5;

    fn ino(fd: &impl AsRawFd) -> u64 {
        std::fs::metadata(format!("/proc/self/fd/{}", fd.as_raw_fd()))
            .unwrap()
            .ino()
    }

    fn set_u32s(fd: &impl AsRawFd, opt: i32, v: &[u32]) {
        let b: Vec<u8> = v.iter().flat_map(|x| x.to_ne_bytes()).collect();
        net::setsockopt(fd, SOL_PACKET, opt, &b).unwrap();
    }

    /// In a network namespace of its own: a TPACKET_V2 socket with a
    /// 4-frame RX and TX ring, bound to lo, that received 3 frames reads
    /// rx_ring.head 3, tx_ring.head 0 (so frames fed to a restored ring
    /// would move its position); a TX ring with PACKET_LOSS that was asked
    /// to send 3 malformed frames reads tx_ring.head 3 and sent nothing; a
    /// fanout member reads its group's id, type, member count and the
    /// member limit it asked for.
    #[test]
    fn reads_ring_heads_and_fanout() {
        if !rustix::process::geteuid().is_root() {
            return;
        }
        std::thread::spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let st = std::process::Command::new("ip")
                .args(["link", "set", "lo", "up"])
                .status()
                .unwrap();
            assert!(st.success());
            let lo = crate::sys::netlink::if_index("lo").unwrap() as i32;
            let a = LlAddr {
                ifindex: lo,
                protocol_be: ETH_P_EXP.to_be(),
            };
            let r = socket_proto(libc::AF_PACKET, libc::SOCK_RAW, 0).unwrap();
            set_u32s(&r, 10, &[1]); // PACKET_VERSION TPACKET_V2
            set_u32s(&r, 5, &[4096, 2, 2048, 4]); // PACKET_RX_RING
            set_u32s(&r, 13, &[4096, 2, 2048, 4]); // PACKET_TX_RING
            ll_bind(&r, a).unwrap();
            let s = socket_proto(libc::AF_PACKET, libc::SOCK_RAW, 0).unwrap();
            ll_bind(&s, a).unwrap();
            let mut frame = vec![0u8; 64];
            frame[12..14].copy_from_slice(&ETH_P_EXP.to_be_bytes());
            let pid = std::process::id() as i32;
            let before = read(pid, ino(&r)).unwrap().expect("found");
            assert_eq!((before.rx_head, before.tx_head), (0, 0));
            for _ in 0..3 {
                net::send(&s, &frame, 0).unwrap();
            }
            let mut st = before;
            for _ in 0..100 {
                st = read(pid, ino(&r)).unwrap().expect("found");
                if st.rx_head == 3 {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            assert_eq!(st.version, 1);
            assert_eq!((st.rx_head, st.rx_frame_max), (3, 3), "{st:?}");
            assert_eq!((st.tx_head, st.tx_frame_max), (0, 3), "{st:?}");
            assert_eq!((st.drops, st.fanout), (0, None));

            // TX: with PACKET_LOSS, frames the kernel cannot send (tp_len
            // 0, shorter than lo's header) are skipped: tx_ring.head moves
            // one frame each and nothing goes out.
            let mut b = [0u8; 128];
            while net::recv(&s, &mut b, libc::MSG_DONTWAIT).is_ok() {}
            let t = socket_proto(libc::AF_PACKET, libc::SOCK_RAW, 0).unwrap();
            set_u32s(&t, 10, &[1]); // PACKET_VERSION TPACKET_V2
            set_u32s(&t, 14, &[1]); // PACKET_LOSS
            set_u32s(&t, 13, &[4096, 2, 2048, 4]); // PACKET_TX_RING
            ll_bind(&t, a).unwrap();
            use rustix::mm::{MapFlags, ProtFlags};
            // SAFETY: a new shared mapping of the ring's 8192 bytes; only
            // this test uses it, and it is unmapped below.
            let m = unsafe {
                rustix::mm::mmap(
                    std::ptr::null_mut(),
                    8192,
                    ProtFlags::READ | ProtFlags::WRITE,
                    MapFlags::SHARED,
                    &t,
                    0,
                )
            }
            .unwrap() as *mut u32;
            for i in 0..3 {
                // SAFETY: frame i's struct tpacket2_hdr (tp_status at 0,
                // tp_len at 4) lies inside the mapping (2048-byte frames).
                unsafe {
                    m.add(i * 512 + 1).write_volatile(0);
                    m.add(i * 512).write_volatile(1); // TP_STATUS_SEND_REQUEST
                }
            }
            net::send(&t, &[], 0).unwrap();
            let st = read(pid, ino(&t)).unwrap().expect("found");
            assert_eq!((st.tx_head, st.tx_frame_max), (3, 3), "{st:?}");
            // SAFETY: frame 0's status word, in the mapping.
            assert_eq!(unsafe { m.read_volatile() }, 0, "TP_STATUS_AVAILABLE");
            // SAFETY: the mapping made above, no reference into it is left.
            unsafe { rustix::mm::munmap(m.cast(), 8192).unwrap() };
            std::thread::sleep(std::time::Duration::from_millis(50));
            assert!(
                net::recv(&s, &mut b, libc::MSG_DONTWAIT).is_err(),
                "a frame went out"
            );

            let f = socket_proto(libc::AF_PACKET, libc::SOCK_RAW, 0).unwrap();
            ll_bind(&f, a).unwrap();
            // struct fanout_args: id 77, PACKET_FANOUT_LB, 5 members at most.
            let mut args = Vec::new();
            args.extend_from_slice(&77u16.to_ne_bytes());
            args.extend_from_slice(&1u16.to_ne_bytes());
            args.extend_from_slice(&5u32.to_ne_bytes());
            net::setsockopt(&f, SOL_PACKET, 18, &args).unwrap();
            let g = read(pid, ino(&f)).unwrap().expect("found").fanout;
            let g = g.expect("in a fanout group");
            assert_eq!(
                (g.id_type_flags, g.members, g.max_members),
                (77 | 1 << 16, 1, 5)
            );
            assert_eq!(g.index, 0);
            // A second member: index 1, both see 2 members; no rollover.
            let f2 = socket_proto(libc::AF_PACKET, libc::SOCK_RAW, 0).unwrap();
            ll_bind(&f2, a).unwrap();
            net::setsockopt(&f2, SOL_PACKET, 18, &args).unwrap();
            let st2 = read(pid, ino(&f2)).unwrap().expect("found");
            let g2 = st2.fanout.expect("in the group");
            assert_eq!((g2.index, g2.members, st2.rollover), (1, 2, None));
            assert_eq!(
                read(pid, ino(&f)).unwrap().unwrap().fanout.unwrap().index,
                0
            );
            // The first leaves: the second takes its place.
            drop(f);
            let g2 = read(pid, ino(&f2)).unwrap().unwrap().fanout.unwrap();
            assert_eq!((g2.index, g2.members), (0, 1));
            // PACKET_FANOUT_HASH with PACKET_FANOUT_FLAG_ROLLOVER (group 78):
            // a rollover that never rolled over.
            let h = socket_proto(libc::AF_PACKET, libc::SOCK_RAW, 0).unwrap();
            ll_bind(&h, a).unwrap();
            crate::sys::sock::set_int(&h, SOL_PACKET, 18, 78 | 0x1000 << 16).unwrap();
            let sh = read(pid, ino(&h)).unwrap().unwrap();
            assert_eq!(sh.fanout.unwrap().id_type_flags, 78 | 0x10 << 24);
            assert_eq!((sh.rollover, sh.pressure), (Some((0, false)), false));
            assert_eq!(read(pid, 1).unwrap(), None);
        })
        .join()
        .unwrap();
    }
}
