//! How much memory decoding images may cost: a limit per kind of image
//! and a total for the whole command, and a scan of the protobuf wire
//! format that runs before the parser.
//!
//! A zstd frame of a few KiB can decompress to a GiB, and protobuf
//! multiplies again: a 2-byte empty sub-message becomes a struct of
//! hundreds of bytes, a 1-byte packed varint an 8-byte integer, and
//! fields the message does not define are kept as "unknown fields" by
//! the parser. So before a message is parsed, [`scan`] walks its wire
//! format against the message's descriptor and
//! - refuses any field the message does not define (or one sent with
//!   another wire type, which the parser would keep as unknown too): the
//!   same format version writes none, so such a message is forged or from
//!   another cairn;
//! - refuses nesting deeper than the parser allows;
//! - estimates what the parsed message will occupy ([`Scan::memory`]).
//!
//! [`charge`] then counts that estimate plus the decompressed bytes
//! against the per-kind limit ([`kind_limit`]) and against the total of
//! the command ([`TOTAL`]). Decompression itself is capped at what is
//! left of both, so a frame that declares more is refused before
//! anything is allocated.
//!
//! The total is per process: a cairn command is one process. In-process
//! drivers that run many commands (the fuzzer) call [`reset`] between
//! them.

use std::sync::atomic::{AtomicU64, Ordering};

use protobuf::descriptor::field_descriptor_proto::{Label, Type};
use protobuf::reflect::{MessageDescriptor, RuntimeFieldType, RuntimeType};

use super::ImageType;

/// The most all messages decoded by one command may cost (decompressed
/// bytes plus the estimated parsed size). Measured need (docs/IMAGES.md,
/// "Decoding budget"): 20 MB for an 800-thread process, 17 MB for 1 GiB
/// of memory fragmented into 131,072 runs (so ~70 MB for 4 GiB), twice
/// that for `show --verify`, which decodes everything twice. 2 GiB leaves room for large socket and pipe queues while
/// keeping a hostile image far from the memory of a typical host.
pub const TOTAL: u64 = 2 << 30;

/// Upper bound of `size_of` of every generated message type (the test
/// `structs_fit` checks them); the cost of a type [`message_cost`] does
/// not know.
pub const MAX_STRUCT: u64 = 512;

macro_rules! each_message {
    ($m:ident) => {
        $m!(
            FileContent,
            FileContents,
            FileStat,
            RegFile,
            PipeFile,
            FifoFile,
            FsPath,
            EventFd,
            SignalFd,
            TimerFd,
            EpollTarget,
            EventPoll,
            MemFd,
            InotifyWatch,
            Inotify,
            FileDesc,
            PipeData,
            SysvShm,
            Files,
            Fd,
            FdTable,
            InetAddr,
            TcpWindow,
            TcpStream,
            Datagram,
            InetSk,
            LockedConn,
            NetLock,
            Inventory,
            ImageFile,
            PstreeEntry,
            Pstree,
            Vma,
            MmEntry,
            PageRun,
            Pagemap,
            PageChunk,
            PageStore,
            PageHashRun,
            PageHashes,
            SockOpts,
            X86Regs,
            PendingSignal,
            SigAction,
            SigAltStack,
            Rseq,
            ThreadCore,
            Rlimit,
            Creds,
            TaskCore,
            ITimer,
            PosixTimer,
            TrackedRange,
            TrackedProcess,
            TrackState,
            Termios,
            Winsize,
            TtyFile,
            PtyPair,
            ShellTty,
            UnixPacket,
            UnixIcon,
            UnixExternal,
            UnixSocket
        )
    };
}

/// Estimated cost of one parsed instance of the message `d`: twice its
/// struct (a `Vec` of messages may hold twice the capacity it needs),
/// plus an allocation's overhead.
pub fn message_cost(d: &MessageDescriptor) -> u64 {
    use std::collections::HashMap;
    use std::sync::OnceLock;
    static SIZES: OnceLock<HashMap<&'static str, u64>> = OnceLock::new();
    let sizes = SIZES.get_or_init(|| {
        use super::proto::*;
        use protobuf::MessageFull;
        let mut m = HashMap::new();
        macro_rules! add {
            ($($t:ident),*) => {$(
                m.insert(stringify!($t), std::mem::size_of::<$t>() as u64);
                let _ = <$t as MessageFull>::descriptor;
            )*};
        }
        each_message!(add);
        m
    });
    2 * sizes.get(d.name()).copied().unwrap_or(MAX_STRUCT) + 16
}
/// Cost of a string or bytes field beyond its bytes (the `Vec` header).
const BYTES_COST: u64 = 32;
/// Cost of one element of a repeated scalar field (u64, and a `Vec`
/// twice as long as needed).
const SCALAR_COST: u64 = 16;
/// Deepest nesting the parser accepts (rust-protobuf's recursion limit).
pub const MAX_DEPTH: u32 = 100;

/// The most one image of `kind` may cost. Kinds whose size follows from
/// a small, bounded thing get a tight limit; the others the general
/// [`super::MAX_MESSAGE_BYTES`].
pub fn kind_limit(kind: ImageType) -> u64 {
    const MIB: u64 = 1 << 20;
    match kind {
        // One process's threads. Measured: 800 threads decode to 8.9 MB
        // (11 KiB each, most of it the XSAVE area) and are estimated at
        // 18.6 MB parsed, so 128 MiB holds about 5,500 such threads.
        ImageType::Core => 128 * MIB,
        // Processes and their thread ids (at most PID_MAX of them).
        ImageType::Pstree => 128 * MIB,
        // Name, size, crc per file of the directory.
        ImageType::Inventory => 64 * MIB,
        // VMAs: vm.max_map_count is 65,530 by default (~200 bytes each).
        ImageType::Mm => 256 * MIB,
        // fd table: fd, description id, flag per fd.
        ImageType::FdTable => 256 * MIB,
        // One entry per open regular file.
        ImageType::Contents => 256 * MIB,
        // The oracle's fields of every task (src/oracle/).
        ImageType::Oracle => 256 * MIB,
        // A few dozen numbers (crate::stats).
        ImageType::Stats => MIB,
        // Nodes and the connections between them (crate::job).
        ImageType::Job => 64 * MIB,
        // Chunk table: 4 numbers per chunk of pages.img.
        ImageType::PageStore => 256 * MIB,
        // Runs of memory (fragmented memory: millions), page hashes (16
        // bytes a page), descriptions with socket and pipe queues.
        ImageType::Pagemap | ImageType::PageHash | ImageType::Files => super::MAX_MESSAGE_BYTES,
        ImageType::Pages => 0,
    }
}

static USED: AtomicU64 = AtomicU64::new(0);

/// What the command has decoded so far.
pub fn used() -> u64 {
    USED.load(Ordering::Relaxed)
}

/// Forgets what was decoded (for in-process drivers running many
/// commands; a cairn command never calls it).
pub fn reset() {
    USED.store(0, Ordering::Relaxed);
}

/// The most the next image of `kind` may decompress to, and what says so
/// (for the error message).
pub fn cap(kind: ImageType) -> (u64, String) {
    let left = TOTAL.saturating_sub(used());
    let per = kind_limit(kind);
    if per <= left {
        (
            per,
            format!("the limit of a {} image ({} MiB)", kind.name(), per >> 20),
        )
    } else {
        (
            left,
            format!(
                "what is left of the command's decoding budget ({} of {} MiB used)",
                used() >> 20,
                TOTAL >> 20
            ),
        )
    }
}

/// Counts `cost` against the limit of `kind` and the command's total;
/// the error says which limit.
pub fn charge(kind: ImageType, cost: u64) -> std::result::Result<(), String> {
    let per = kind_limit(kind);
    if cost > per {
        return Err(format!(
            "decoding needs ~{} MiB, more than the limit of a {} image ({} MiB)",
            cost >> 20,
            kind.name(),
            per >> 20
        ));
    }
    let mut cur = USED.load(Ordering::Relaxed);
    loop {
        let next = cur.saturating_add(cost);
        if next > TOTAL {
            return Err(format!(
                "decoding needs ~{} MiB, more than is left of the command's decoding \
                 budget ({} of {} MiB used)",
                cost >> 20,
                cur >> 20,
                TOTAL >> 20
            ));
        }
        match USED.compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return Ok(()),
            Err(now) => cur = now,
        }
    }
}

/// What [`scan`] found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Scan {
    /// Message instances (the top one included).
    pub messages: u64,
    /// Estimated bytes the parsed message occupies.
    pub memory: u64,
}

struct Wire<'a> {
    b: &'a [u8],
    at: usize,
}

impl Wire<'_> {
    fn varint(&mut self) -> std::result::Result<u64, String> {
        let mut v = 0u64;
        for i in 0..10 {
            let Some(&x) = self.b.get(self.at) else {
                return Err(format!("truncated varint at byte {}", self.at));
            };
            self.at += 1;
            v |= u64::from(x & 0x7f) << (7 * i);
            if x & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(format!("varint longer than 10 bytes at byte {}", self.at))
    }

    fn skip(&mut self, n: u64) -> std::result::Result<&[u8], String> {
        let start = self.at;
        let end = u64::try_from(start)
            .ok()
            .and_then(|s| s.checked_add(n))
            .filter(|&e| e <= self.b.len() as u64)
            .ok_or_else(|| format!("field at byte {start} runs past the end of the message"))?;
        self.at = end as usize;
        Ok(&self.b[start..end as usize])
    }
}

/// Wire type of a field of proto type `t` (None: groups, refused).
fn wire_of(t: Type) -> Option<u64> {
    Some(match t {
        Type::TYPE_DOUBLE | Type::TYPE_FIXED64 | Type::TYPE_SFIXED64 => 1,
        Type::TYPE_FLOAT | Type::TYPE_FIXED32 | Type::TYPE_SFIXED32 => 5,
        Type::TYPE_STRING | Type::TYPE_BYTES | Type::TYPE_MESSAGE => 2,
        Type::TYPE_GROUP => return None,
        _ => 0,
    })
}

fn wire_of_runtime(t: &RuntimeType) -> u64 {
    match t {
        RuntimeType::F32 => 5,
        RuntimeType::F64 => 1,
        RuntimeType::String | RuntimeType::VecU8 | RuntimeType::Message(_) => 2,
        _ => 0,
    }
}

/// Walks the encoded message `b` of type `d` (see the module doc).
pub fn scan(d: &MessageDescriptor, b: &[u8]) -> std::result::Result<Scan, String> {
    let mut s = Scan::default();
    scan_in(d, b, 0, &mut s)?;
    s.memory = s.memory.saturating_add(b.len() as u64);
    Ok(s)
}

fn unknown(d: &MessageDescriptor, number: u64, wt: u64, at: usize) -> String {
    format!(
        "{}: unknown field {number} (wire type {wt}) at byte {at}: written by another \
         format version, or forged",
        d.name()
    )
}

fn scan_in(
    d: &MessageDescriptor,
    b: &[u8],
    depth: u32,
    s: &mut Scan,
) -> std::result::Result<(), String> {
    if depth > MAX_DEPTH {
        return Err(format!("{}: nested more than {MAX_DEPTH} deep", d.name()));
    }
    s.messages += 1;
    s.memory = s.memory.saturating_add(message_cost(d));
    let mut w = Wire { b, at: 0 };
    while w.at < b.len() {
        let at = w.at;
        let tag = w.varint()?;
        let (number, wt) = (tag >> 3, tag & 7);
        let field = u32::try_from(number)
            .ok()
            .filter(|&n| n != 0)
            .and_then(|n| d.field_by_number(n))
            .ok_or_else(|| unknown(d, number, wt, at))?;
        let proto = field.proto();
        let repeated = proto.label() == Label::LABEL_REPEATED;
        let want = wire_of(proto.type_()).ok_or_else(|| unknown(d, number, wt, at))?;
        match field.runtime_field_type() {
            RuntimeFieldType::Map(k, v) => {
                if wt != 2 {
                    return Err(unknown(d, number, wt, at));
                }
                let len = w.varint()?;
                let entry = w.skip(len)?;
                scan_map_entry(d, &k, &v, entry, s)?;
            }
            RuntimeFieldType::Singular(RuntimeType::Message(m))
            | RuntimeFieldType::Repeated(RuntimeType::Message(m)) => {
                if wt != 2 {
                    return Err(unknown(d, number, wt, at));
                }
                let len = w.varint()?;
                let sub = w.skip(len)?;
                scan_in(&m, sub, depth + 1, s)?;
            }
            _ => {
                if wt == want {
                    skip_value(&mut w, wt, s)?;
                    if repeated {
                        s.memory = s.memory.saturating_add(SCALAR_COST);
                    }
                } else if repeated && wt == 2 && want != 2 {
                    // Packed: at most one element per byte.
                    let len = w.varint()?;
                    w.skip(len)?;
                    s.memory = s
                        .memory
                        .saturating_add(len.saturating_mul(SCALAR_COST) + BYTES_COST);
                } else {
                    return Err(unknown(d, number, wt, at));
                }
            }
        }
    }
    Ok(())
}

/// A map entry: key 1, value 2, nothing else.
fn scan_map_entry(
    d: &MessageDescriptor,
    k: &RuntimeType,
    v: &RuntimeType,
    b: &[u8],
    s: &mut Scan,
) -> std::result::Result<(), String> {
    s.memory = s.memory.saturating_add(2 * MAX_STRUCT);
    let mut w = Wire { b, at: 0 };
    while w.at < b.len() {
        let at = w.at;
        let tag = w.varint()?;
        let (number, wt) = (tag >> 3, tag & 7);
        let t = match number {
            1 => k,
            2 => v,
            _ => return Err(unknown(d, number, wt, at)),
        };
        if wt != wire_of_runtime(t) || matches!(t, RuntimeType::Message(_)) {
            return Err(unknown(d, number, wt, at));
        }
        skip_value(&mut w, wt, s)?;
    }
    Ok(())
}

/// Steps over one value of wire type `wt` (varint, 64-bit, 32-bit, or
/// length-delimited, which is charged as bytes).
fn skip_value(w: &mut Wire, wt: u64, s: &mut Scan) -> std::result::Result<(), String> {
    match wt {
        0 => {
            w.varint()?;
        }
        1 => {
            w.skip(8)?;
        }
        5 => {
            w.skip(4)?;
        }
        _ => {
            let len = w.varint()?;
            w.skip(len)?;
            s.memory = s.memory.saturating_add(len + BYTES_COST);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::proto::*;
    use super::*;
    use protobuf::{Message, MessageFull};

    #[test]
    fn structs_fit() {
        macro_rules! fit {
            ($($t:ty),*) => {$(
                assert!(
                    std::mem::size_of::<$t>() as u64 <= MAX_STRUCT,
                    "{} is {} bytes",
                    stringify!($t),
                    std::mem::size_of::<$t>()
                );
            )*};
        }
        each_message!(fit);
    }

    fn core() -> TaskCore {
        let mut c = TaskCore::new();
        c.pid = 7;
        c.comm = "x".into();
        let mut th = ThreadCore::new();
        th.tid = 7;
        th.regs = Some(X86Regs::new()).into();
        th.xsave = vec![1; 600];
        c.threads.push(th);
        let mut r = Rlimit::new();
        r.cur = 5;
        c.rlimits.push(r);
        c
    }

    #[test]
    fn real_messages_pass_and_are_estimated() {
        let raw = core().write_to_bytes().unwrap();
        let s = scan(&TaskCore::descriptor(), &raw).unwrap();
        assert_eq!(s.messages, 4); // core, thread, regs, rlimit
        assert!(s.memory >= raw.len() as u64 + message_cost(&ThreadCore::descriptor()) + 600);
        let mut o = InetSk::new();
        for (n, v) in [("TCP_NODELAY", 1), ("IP_TOS", -3)] {
            o.opts.push(crate::image::proto::NamedInt {
                name: n.into(),
                value: v,
                ..Default::default()
            });
        }
        let raw = o.write_to_bytes().unwrap();
        scan(&InetSk::descriptor(), &raw).unwrap();
    }

    #[test]
    fn unknown_fields_are_refused() {
        let mut raw = core().write_to_bytes().unwrap();
        // Field 999, length-delimited, 3 bytes.
        raw.extend_from_slice(&[0xba, 0x3e, 3, 1, 2, 3]);
        let e = scan(&TaskCore::descriptor(), &raw).unwrap_err();
        assert!(e.contains("unknown field 999"), "{e}");
        // The parser itself would keep it.
        assert!(TaskCore::parse_from_bytes(&raw).is_ok());
        // A known field number with the wrong wire type: pid (1) as bytes.
        let mut raw = core().write_to_bytes().unwrap();
        raw.extend_from_slice(&[0x0a, 1, 0]);
        let e = scan(&TaskCore::descriptor(), &raw).unwrap_err();
        assert!(e.contains("unknown field 1 "), "{e}");
        // Inside a nested message: an unknown field in the thread.
        let mut th = ThreadCore::new();
        th.tid = 7;
        let mut tb = th.write_to_bytes().unwrap();
        tb.extend_from_slice(&[0xf8, 0x7f, 1]); // field 2047, varint
        let mut raw = Vec::new();
        let num = TaskCore::descriptor()
            .field_by_name("threads")
            .unwrap()
            .proto()
            .number() as u8;
        raw.push((num << 3) | 2);
        raw.push(tb.len() as u8);
        raw.extend_from_slice(&tb);
        let e = scan(&TaskCore::descriptor(), &raw).unwrap_err();
        assert!(e.contains("ThreadCore: unknown field 2047"), "{e}");
        // Groups, field 0, truncation.
        assert!(scan(&TaskCore::descriptor(), &[0x0b]).is_err());
        assert!(scan(&TaskCore::descriptor(), &[0x00, 0]).is_err());
        assert!(scan(&TaskCore::descriptor(), &[0x08]).is_err());
        assert!(scan(&TaskCore::descriptor(), &[0x0a, 0x05, 1]).is_err());
    }

    #[test]
    fn empty_messages_cost_their_struct() {
        // 100,000 empty threads: 200 KB on the wire, far more parsed.
        let num = TaskCore::descriptor()
            .field_by_name("threads")
            .unwrap()
            .proto()
            .number() as u8;
        let raw: Vec<u8> = (0..100_000).flat_map(|_| [(num << 3) | 2, 0]).collect();
        let s = scan(&TaskCore::descriptor(), &raw).unwrap();
        assert_eq!(s.messages, 100_001);
        assert!(s.memory > 100_000 * message_cost(&ThreadCore::descriptor()));
    }

    #[test]
    fn limits_name_themselves() {
        let e = charge(ImageType::Core, kind_limit(ImageType::Core) + 1).unwrap_err();
        assert!(e.contains("limit of a core image"), "{e}");
        let e = charge(ImageType::Files, TOTAL + 1).unwrap_err();
        assert!(e.contains("limit of a files image"), "{e}");
    }
}
