//! Deterministic mutation of real image directories, for `cargo xtask
//! fuzz` and the hostile-input tests (tests/integrity.rs).
//!
//! A checkpoint is held in memory ([`ImageSet`]) and changed in one way per
//! call of [`mutate`], from a seeded generator ([`Rng`]) so that a failure
//! is reproduced by its seed and iteration. Two families:
//!
//! - *raw* damage that the checksums must catch: bit flips, truncation,
//!   appended bytes, files swapped with another dump's;
//! - *hostile* images whose checksums and inventory entries are
//!   recomputed after the change, so that only the decoders and the
//!   validators ([`super::validate`]) stand between them and a restore:
//!   wrong magic, wrong version, huge lengths in a header, a field of a
//!   decoded message set to a boundary value (by protobuf reflection),
//!   bytes of the encoded message flipped, files of one kind swapped with
//!   files of another.
//!
//! Strings are only ever extended, emptied or given a NUL, never cut
//! short or replaced: a mutated path then names nothing that exists, so a
//! restore of a mutated image can not write over a file outside the test.

use std::path::Path;

use protobuf::reflect::{
    FieldDescriptor, ReflectValueBox, ReflectValueRef, RuntimeFieldType, RuntimeType,
};
use protobuf::MessageDyn;

use super::proto::{
    FdTable, FileContents, Files, Inventory, KernelView, MmEntry, PageHashes, PageStore, Pagemap,
    Pstree, TaskCore,
};
use super::{names, Header, ImageType, FORMAT_VERSION, HEADER_LEN, MAX_MESSAGE_BYTES};
use crate::error::{IoContext, Result};

/// splitmix64: small, fast, deterministic.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }
}

/// The image files of one checkpoint, in memory, by name (sorted).
#[derive(Clone, Debug, Default)]
pub struct ImageSet {
    pub files: Vec<(String, Vec<u8>)>,
}

impl ImageSet {
    /// Reads every `*.img` of `dir` but the statistics.
    pub fn load(dir: &Path) -> Result<ImageSet> {
        let mut files = Vec::new();
        for e in std::fs::read_dir(dir).at(dir)? {
            let e = e.at(dir)?;
            let Some(name) = e.file_name().to_str().map(str::to_string) else {
                continue;
            };
            // The statistics are not part of the checkpoint (no restore
            // reads them).
            if super::is_image_name(&name)
                && !super::names::is_stats(&name)
                && e.file_type().at(e.path())?.is_file()
            {
                files.push((name, std::fs::read(e.path()).at(e.path())?));
            }
        }
        files.sort();
        Ok(ImageSet { files })
    }

    /// Writes the set into `dir` (created if needed), removing the
    /// `*.img` files of `dir` that the set does not have.
    pub fn write(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).at(dir)?;
        for e in std::fs::read_dir(dir).at(dir)? {
            let e = e.at(dir)?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".img") && !self.files.iter().any(|(n, _)| *n == name) {
                std::fs::remove_file(e.path()).at(e.path())?;
            }
        }
        for (n, b) in &self.files {
            let p = dir.join(n);
            std::fs::write(&p, b).at(&p)?;
        }
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.files
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, b)| b.as_slice())
    }

    fn index(&self, name: &str) -> Option<usize> {
        self.files.iter().position(|(n, _)| n == name)
    }

    /// Rewrites the inventory entry of `name` (size, header crc) to match
    /// its current bytes, as a tool that forges images would.
    pub fn fix_inventory(&mut self, name: &str) {
        if name == names::INVENTORY {
            return;
        }
        let (Some(bytes), Some(ii)) = (self.get(name), self.index(names::INVENTORY)) else {
            return;
        };
        let size = bytes.len() as u64;
        let mut h = [0u8; HEADER_LEN];
        if bytes.len() >= HEADER_LEN {
            h.copy_from_slice(&bytes[..HEADER_LEN]);
        }
        let crc = Header::header_crc(&h);
        let Ok(mut inv) = super::decode_image::<Inventory>(
            ImageType::Inventory,
            &self.files[ii].1,
            Path::new(names::INVENTORY),
        ) else {
            return;
        };
        for f in inv.images.iter_mut().filter(|f| f.name == name) {
            f.size = size;
            f.header_crc32 = crc;
        }
        if let Ok(b) = super::encode_image(ImageType::Inventory, &inv) {
            self.files[ii].1 = b;
        }
    }
}

impl ImageSet {
    /// Decodes the message image `name` (checksums and limits as a
    /// restore's).
    pub fn message<M: protobuf::MessageFull>(&self, kind: ImageType, name: &str) -> Option<M> {
        super::decode_image(kind, self.get(name)?, Path::new(name)).ok()
    }

    /// Replaces (or adds) the message image `name` and fixes its
    /// inventory entry, as a forger would.
    pub fn set_message<M: protobuf::Message>(&mut self, kind: ImageType, name: &str, m: &M) {
        let Ok(b) = super::encode_image(kind, m) else {
            return;
        };
        self.set_file(name, b);
    }

    /// Replaces (or adds) the file `name` with `bytes` and fixes its
    /// inventory entry.
    pub fn set_file(&mut self, name: &str, bytes: Vec<u8>) {
        match self.index(name) {
            Some(i) => self.files[i].1 = bytes,
            None => {
                self.files.push((name.to_string(), bytes));
                self.files.sort_by(|a, b| a.0.cmp(&b.0));
            }
        }
        self.fix_inventory(name);
    }

    /// Appends a chunk holding `raw` to pages.img and its chunk table
    /// (both resealed, inventory fixed); returns its index.
    pub fn append_chunk(&mut self, raw: &[u8]) -> Option<u32> {
        let mut store: PageStore = self.message(ImageType::PageStore, names::PAGESTORE)?;
        let mut pages = self.get(names::PAGES)?.to_vec();
        let c = zstd::bulk::compress(raw, 3).ok()?;
        let mut chunk = super::proto::PageChunk::new();
        chunk.offset = (pages.len() - HEADER_LEN) as u64;
        chunk.compressed_len = c.len() as u64;
        chunk.raw_len = raw.len() as u64;
        chunk.crc32 = crc32fast::hash(&c);
        pages.extend_from_slice(&c);
        reseal(&mut pages);
        store.chunks.push(chunk);
        self.set_file(names::PAGES, pages);
        self.set_message(ImageType::PageStore, names::PAGESTORE, &store);
        Some((store.chunks.len() - 1) as u32)
    }
}

/// The message image `bytes` with an unknown field (number `field`, a
/// length-delimited run of `pad` zero bytes) appended to its message:
/// checksums valid, the body a zstd frame that declares its size or
/// not. What a forger pads images with to make decoders allocate.
pub fn with_unknown_field(
    bytes: &[u8],
    field: u32,
    pad: u64,
    declare_size: bool,
) -> Option<Vec<u8>> {
    use std::io::Write;
    let kind = kind_of(bytes).filter(|k| k.is_message())?;
    let mut raw = super::decompress_bounded(bytes.get(HEADER_LEN..)?, MAX_MESSAGE_BYTES).ok()?;
    let varint = |mut v: u64, out: &mut Vec<u8>| {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    };
    varint((u64::from(field) << 3) | 2, &mut raw);
    varint(pad, &mut raw);
    let total = raw.len() as u64 + pad;
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).ok()?;
    if declare_size {
        enc.set_pledged_src_size(Some(total)).ok()?;
        enc.include_contentsize(true).ok()?;
    } else {
        enc.include_contentsize(false).ok()?;
    }
    enc.write_all(&raw).ok()?;
    let zeros = vec![0u8; 1 << 20];
    let mut left = pad;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        enc.write_all(&zeros[..n]).ok()?;
        left -= n as u64;
    }
    let body = enc.finish().ok()?;
    let hdr = Header {
        kind,
        version: FORMAT_VERSION,
        body_len: body.len() as u64,
        crc32: crc32fast::hash(&body),
    };
    let mut out = hdr.encode().to_vec();
    out.extend_from_slice(&body);
    Some(out)
}

/// Rewrites the header crc of an encoded image after its header changed.
fn reseal_header(b: &mut [u8]) {
    if b.len() >= HEADER_LEN {
        let c = crc32fast::hash(&b[0..28]);
        b[28..32].copy_from_slice(&c.to_le_bytes());
    }
}

/// Rewrites the body length and crc of an encoded image after its body
/// changed.
fn reseal(b: &mut [u8]) {
    if b.len() >= HEADER_LEN {
        let len = (b.len() - HEADER_LEN) as u64;
        let crc = crc32fast::hash(&b[HEADER_LEN..]);
        b[16..24].copy_from_slice(&len.to_le_bytes());
        b[24..28].copy_from_slice(&crc.to_le_bytes());
        reseal_header(b);
    }
}

/// Flips the bits `mask` of one random byte of the body (after the header)
/// and recomputes the crc, so the frame checks pass and the decoder sees it.
fn flip_body_byte(rng: &mut Rng, b: &mut [u8], mask: u8) {
    if b.len() > HEADER_LEN {
        let i = HEADER_LEN + rng.below(b.len() - HEADER_LEN);
        b[i] ^= mask;
        reseal(b);
    }
}

/// A boundary value for an unsigned field that held `v`.
fn interesting_u64(rng: &mut Rng, v: u64) -> u64 {
    match rng.below(14) {
        0 => 0,
        1 => 1,
        2 => u64::MAX,
        3 => 1 << 63,
        4 => 0x7fff_ffff_f000,
        5 => 0x8000_0000_0000,
        6 => v.wrapping_add(1),
        7 => v.wrapping_sub(1),
        8 => v ^ (1 << rng.below(64)),
        9 => v.wrapping_add(4096),
        10 => v.wrapping_mul(1 << 20),
        11 => u32::MAX as u64 + 1,
        12 => i32::MAX as u64 + 1,
        _ => rng.next_u64(),
    }
}

fn interesting_u32(rng: &mut Rng, v: u32) -> u32 {
    match rng.below(12) {
        0 => 0,
        1 => 1,
        2 => u32::MAX,
        3 => i32::MAX as u32,
        4 => i32::MAX as u32 + 1,
        5 => v.wrapping_add(1),
        6 => v.wrapping_sub(1),
        7 => v ^ (1 << rng.below(32)),
        8 => 1 << 20,
        9 => 65536,
        10 => 4_194_304,
        _ => rng.next_u64() as u32,
    }
}

fn interesting_i64(rng: &mut Rng, v: i64) -> i64 {
    match rng.below(6) {
        0 => -1,
        1 => i64::MIN,
        2 => i64::MAX,
        _ => interesting_u64(rng, v as u64) as i64,
    }
}

fn interesting_i32(rng: &mut Rng, v: i32) -> i32 {
    match rng.below(6) {
        0 => -1,
        1 => i32::MIN,
        2 => i32::MAX,
        _ => interesting_u32(rng, v as u32) as i32,
    }
}

/// Strings only grow, become empty or get a NUL (see the module doc).
fn mutate_string(rng: &mut Rng, s: &str) -> String {
    match rng.below(6) {
        0 => String::new(),
        1 => format!("{s}\0"),
        2 => format!("{s}.x"),
        3 => format!("{s}/.."),
        4 => format!("{s}{}", "y".repeat(5000)),
        _ => format!("{s}\u{e9}"),
    }
}

fn mutate_bytes(rng: &mut Rng, b: &[u8]) -> Vec<u8> {
    match rng.below(6) {
        0 => Vec::new(),
        1 => b[..rng.below(b.len() + 1)].to_vec(),
        2 => {
            let mut v = b.to_vec();
            v.extend(std::iter::repeat_n(0xa5u8, 1 + rng.below(64)));
            v
        }
        3 => vec![0x5a; 1 << 20],
        4 => {
            let mut v = b.to_vec();
            if !v.is_empty() {
                let i = rng.below(v.len());
                v[i] ^= 1 << rng.below(8);
            }
            v
        }
        _ => b.repeat(2),
    }
}

/// A new value of type `t` derived from `old`.
fn mutate_value(rng: &mut Rng, t: &RuntimeType, old: Option<ReflectValueRef>) -> ReflectValueBox {
    use ReflectValueRef as R;
    match (t, old) {
        (RuntimeType::U64, Some(R::U64(v))) => ReflectValueBox::U64(interesting_u64(rng, v)),
        (RuntimeType::U64, _) => ReflectValueBox::U64(interesting_u64(rng, 0)),
        (RuntimeType::U32, Some(R::U32(v))) => ReflectValueBox::U32(interesting_u32(rng, v)),
        (RuntimeType::U32, _) => ReflectValueBox::U32(interesting_u32(rng, 0)),
        (RuntimeType::I64, Some(R::I64(v))) => ReflectValueBox::I64(interesting_i64(rng, v)),
        (RuntimeType::I64, _) => ReflectValueBox::I64(interesting_i64(rng, 0)),
        (RuntimeType::I32, Some(R::I32(v))) => ReflectValueBox::I32(interesting_i32(rng, v)),
        (RuntimeType::I32, _) => ReflectValueBox::I32(interesting_i32(rng, 0)),
        (RuntimeType::Bool, Some(R::Bool(v))) => ReflectValueBox::Bool(!v),
        (RuntimeType::Bool, _) => ReflectValueBox::Bool(true),
        (RuntimeType::F32, _) => ReflectValueBox::F32(f32::NAN),
        (RuntimeType::F64, _) => ReflectValueBox::F64(f64::NAN),
        (RuntimeType::String, Some(R::String(s))) => ReflectValueBox::String(mutate_string(rng, s)),
        (RuntimeType::String, _) => ReflectValueBox::String(mutate_string(rng, "")),
        (RuntimeType::VecU8, Some(R::Bytes(b))) => ReflectValueBox::Bytes(mutate_bytes(rng, b)),
        (RuntimeType::VecU8, _) => ReflectValueBox::Bytes(mutate_bytes(rng, &[])),
        (RuntimeType::Enum(e), _) => {
            let vals: Vec<i32> = e.values().map(|v| v.value()).collect();
            let n = if rng.chance(30) || vals.is_empty() {
                interesting_i32(rng, 77)
            } else {
                vals[rng.below(vals.len())]
            };
            ReflectValueBox::Enum(e.clone(), n)
        }
        (RuntimeType::Message(_), Some(R::Message(m))) => {
            let mut b = m.clone_box();
            mutate_message(rng, &mut *b, 0);
            ReflectValueBox::Message(b)
        }
        (RuntimeType::Message(d), _) => ReflectValueBox::Message(d.new_instance()),
    }
}

/// Changes one field somewhere in `m`; returns its path (for reports).
/// Unset message fields and empty lists stay so: nothing new is created
/// out of nothing, only what the dump wrote is changed.
pub fn mutate_message(rng: &mut Rng, m: &mut dyn MessageDyn, depth: usize) -> String {
    let d = m.descriptor_dyn();
    let fields: Vec<FieldDescriptor> = d.fields().collect();
    if fields.is_empty() {
        return d.name().to_string();
    }
    // Prefer fields that hold something.
    let held: Vec<&FieldDescriptor> = fields
        .iter()
        .filter(|f| match f.runtime_field_type() {
            RuntimeFieldType::Singular(RuntimeType::Message(_)) => f.has_field(m),
            RuntimeFieldType::Singular(_) => true,
            RuntimeFieldType::Repeated(_) => !f.get_repeated(m).is_empty(),
            RuntimeFieldType::Map(..) => false,
        })
        .collect();
    if held.is_empty() {
        return format!("{} (nothing to change)", d.name());
    }
    let f = held[rng.below(held.len())].clone();
    let name = format!("{}.{}", d.name(), f.name());
    match f.runtime_field_type() {
        RuntimeFieldType::Singular(RuntimeType::Message(_)) => {
            if depth < 8 && rng.chance(85) {
                let sub = f.mut_message(m);
                format!("{name}/{}", mutate_message(rng, sub, depth + 1))
            } else {
                f.clear_field(m);
                format!("{name} cleared")
            }
        }
        RuntimeFieldType::Singular(t) => {
            let old = f.get_singular(m);
            let v = mutate_value(rng, &t, old);
            f.set_singular_field(m, v);
            name
        }
        RuntimeFieldType::Repeated(t) => {
            let len = f.get_repeated(m).len();
            let i = rng.below(len);
            match rng.below(10) {
                0 => {
                    // Duplicate an element.
                    let v = f.get_repeated(m).get(i).to_box();
                    f.mut_repeated(m).push(v);
                    format!("{name}[{i}] duplicated")
                }
                1 => {
                    // Remove an element.
                    let keep: Vec<ReflectValueBox> = (0..len)
                        .filter(|&k| k != i)
                        .map(|k| f.get_repeated(m).get(k).to_box())
                        .collect();
                    let mut r = f.mut_repeated(m);
                    r.clear();
                    for v in keep {
                        r.push(v);
                    }
                    format!("{name}[{i}] removed")
                }
                2 => {
                    // Many copies of one element ("huge lengths").
                    let v = f.get_repeated(m).get(i).to_box();
                    let mut r = f.mut_repeated(m);
                    for _ in 0..(1000 + rng.below(20000)) {
                        r.push(v.clone());
                    }
                    format!("{name}[{i}] repeated thousands of times")
                }
                3 if len > 1 => {
                    // Swap two elements.
                    let j = rng.below(len);
                    let a = f.get_repeated(m).get(i).to_box();
                    let b = f.get_repeated(m).get(j).to_box();
                    let mut r = f.mut_repeated(m);
                    r.set(i, b);
                    r.set(j, a);
                    format!("{name}[{i}] <-> [{j}]")
                }
                _ => {
                    let old = f.get_repeated(m).get(i).to_box();
                    let v = mutate_value(rng, &t, Some(old.as_value_ref()));
                    f.mut_repeated(m).set(i, v);
                    format!("{name}[{i}]")
                }
            }
        }
        RuntimeFieldType::Map(..) => name,
    }
}

/// Decodes a message image of kind `kind` into a dynamic message.
fn decode_dyn(kind: ImageType, bytes: &[u8]) -> Option<Box<dyn MessageDyn>> {
    use protobuf::MessageFull;
    let d = match kind {
        ImageType::Inventory => Inventory::descriptor(),
        ImageType::Pstree => Pstree::descriptor(),
        ImageType::Core => TaskCore::descriptor(),
        ImageType::Mm => MmEntry::descriptor(),
        ImageType::Pagemap => Pagemap::descriptor(),
        ImageType::PageStore => PageStore::descriptor(),
        ImageType::Files => Files::descriptor(),
        ImageType::FdTable => FdTable::descriptor(),
        ImageType::Contents => FileContents::descriptor(),
        ImageType::PageHash => PageHashes::descriptor(),
        ImageType::Oracle => KernelView::descriptor(),
        ImageType::Stats => crate::image::proto::Stats::descriptor(),
        ImageType::Job => crate::image::proto::Job::descriptor(),
        ImageType::Pages => return None,
    };
    let hdr = super::check_image(Some(kind), bytes, Path::new("x")).ok()?;
    let _ = hdr;
    let raw = super::decompress_bounded(&bytes[HEADER_LEN..], MAX_MESSAGE_BYTES).ok()?;
    d.parse_from_bytes(&raw).ok()
}

/// Encodes raw protobuf bytes as a complete image of `kind`.
fn encode_raw(kind: ImageType, raw: &[u8]) -> Vec<u8> {
    let body = zstd::bulk::compress(raw, 1).unwrap_or_default();
    let hdr = Header {
        kind,
        version: FORMAT_VERSION,
        body_len: body.len() as u64,
        crc32: crc32fast::hash(&body),
    };
    let mut out = hdr.encode().to_vec();
    out.extend_from_slice(&body);
    out
}

fn kind_of(bytes: &[u8]) -> Option<ImageType> {
    Header::decode(bytes, Path::new("x")).ok().map(|h| h.kind)
}

/// What one mutation did.
#[derive(Clone, Debug)]
pub struct Mutation {
    /// Family: `raw` (checksums must catch it) or `hostile` (checksums
    /// recomputed).
    pub hostile: bool,
    /// The file changed and how.
    pub what: String,
}

/// Changes `set` in one way (see the module doc). `other` is another
/// dump's images, for swaps. `messages_only` keeps away from pages.img
/// (which only a restore or `--verify` reads whole).
pub fn mutate(set: &mut ImageSet, other: Option<&ImageSet>, rng: &mut Rng) -> Mutation {
    let n = set.files.len();
    if n == 0 {
        return Mutation {
            hostile: false,
            what: "empty set".into(),
        };
    }
    // Message images are where the decoders and validators are; pick them
    // four times out of five.
    let msg_files: Vec<usize> = (0..n)
        .filter(|&i| kind_of(&set.files[i].1).is_some_and(|k| k.is_message()))
        .collect();
    let fi = if !msg_files.is_empty() && rng.chance(80) {
        msg_files[rng.below(msg_files.len())]
    } else {
        rng.below(n)
    };
    let name = set.files[fi].0.clone();
    let before = set.files[fi].1.clone();
    let op = rng.below(100);
    let (hostile, what) = match op {
        // Raw damage.
        0..=9 => {
            let b = &mut set.files[fi].1;
            let at = if rng.chance(40) {
                rng.below(HEADER_LEN.min(b.len()))
            } else {
                rng.below(b.len())
            };
            if !b.is_empty() {
                b[at] ^= 1 << rng.below(8);
            }
            (false, format!("{name}: bit flipped at byte {at}"))
        }
        10..=13 => {
            let b = &mut set.files[fi].1;
            let to = rng.below(b.len());
            b.truncate(to);
            (false, format!("{name}: truncated to {to} bytes"))
        }
        14..=15 => {
            let b = &mut set.files[fi].1;
            let k = 1 + rng.below(100);
            b.extend(std::iter::repeat_n(0u8, k));
            (false, format!("{name}: {k} bytes appended"))
        }
        16..=18 => match other.and_then(|o| o.get(&name).map(<[u8]>::to_vec)) {
            Some(b) => {
                set.files[fi].1 = b;
                (false, format!("{name}: replaced by another dump's"))
            }
            None => {
                let j = (fi + 1 + rng.below(n.max(2) - 1)) % n;
                let b = set.files[j].1.clone();
                set.files[fi].1 = b;
                (false, format!("{name}: replaced by {}", set.files[j].0))
            }
        },
        // Hostile: valid checksums and inventory.
        19..=22 => {
            let b = &mut set.files[fi].1;
            if b.len() >= HEADER_LEN {
                let k = ImageType::ALL[rng.below(ImageType::ALL.len())];
                let m = if rng.chance(20) {
                    rng.next_u64() as u32
                } else {
                    k.magic()
                };
                b[8..12].copy_from_slice(&m.to_le_bytes());
                if rng.chance(20) {
                    b[0] = b'X';
                }
                reseal_header(b);
            }
            set.fix_inventory(&name);
            (true, format!("{name}: kind magic changed"))
        }
        23..=25 => {
            let b = &mut set.files[fi].1;
            let v = match rng.below(4) {
                0 => FORMAT_VERSION + 1,
                1 => 0,
                2 => FORMAT_VERSION - 1,
                _ => rng.next_u64() as u32,
            };
            if b.len() >= HEADER_LEN {
                b[12..16].copy_from_slice(&v.to_le_bytes());
                reseal_header(b);
            }
            set.fix_inventory(&name);
            (true, format!("{name}: format version {v}"))
        }
        26..=29 => {
            let b = &mut set.files[fi].1;
            let l = match rng.below(4) {
                0 => u64::MAX,
                1 => 1 << 40,
                2 => MAX_MESSAGE_BYTES + 1,
                _ => (b.len() as u64).saturating_sub(HEADER_LEN as u64) + 1,
            };
            if b.len() >= HEADER_LEN {
                b[16..24].copy_from_slice(&l.to_le_bytes());
                reseal_header(b);
            }
            set.fix_inventory(&name);
            (true, format!("{name}: body length {l}"))
        }
        30..=33 => {
            // Swap with another file of the directory (kinds differ or
            // pids differ), inventory fixed.
            let j = rng.below(n);
            let b = set.files[j].1.clone();
            set.files[fi].1 = b;
            set.fix_inventory(&name);
            (
                true,
                format!("{name}: holds {} (inventory fixed)", set.files[j].0),
            )
        }
        34..=43 => {
            // Flip bits of the encoded protobuf message, re-compress.
            let b = set.files[fi].1.clone();
            match kind_of(&b).filter(|k| k.is_message()) {
                Some(kind) => {
                    let raw = super::decompress_bounded(&b[HEADER_LEN..], MAX_MESSAGE_BYTES)
                        .unwrap_or_default();
                    let mut raw = raw;
                    let k = 1 + rng.below(4);
                    for _ in 0..k {
                        if raw.is_empty() {
                            break;
                        }
                        let i = rng.below(raw.len());
                        match rng.below(3) {
                            0 => raw[i] ^= 1 << rng.below(8),
                            1 => raw[i] = 0xff,
                            _ => raw.truncate(i),
                        }
                    }
                    set.files[fi].1 = encode_raw(kind, &raw);
                    set.fix_inventory(&name);
                    (true, format!("{name}: {k} bytes of the message changed"))
                }
                None => {
                    flip_body_byte(rng, &mut set.files[fi].1, 0x40);
                    set.fix_inventory(&name);
                    (true, format!("{name}: body changed, crc recomputed"))
                }
            }
        }
        44..=47 => {
            // An unknown field appended: small, or large enough to hit
            // the decoding limits (declared in the frame or not).
            let b = set.files[fi].1.clone();
            let pad = match rng.below(4) {
                0 => rng.below(64) as u64,
                1 => 1 << 20,
                2 => 80 << 20,
                _ => 300 << 20,
            };
            let field = 1000 + rng.below(1 << 16) as u32;
            let declare = rng.chance(50);
            match with_unknown_field(&b, field, pad, declare) {
                Some(nb) => {
                    set.files[fi].1 = nb;
                    set.fix_inventory(&name);
                    (
                        true,
                        format!("{name}: unknown field {field} of {pad} bytes appended"),
                    )
                }
                None => (true, format!("{name}: not a message (no change)")),
            }
        }
        _ => {
            // A field of the decoded message, by reflection.
            let b = set.files[fi].1.clone();
            match kind_of(&b).and_then(|k| decode_dyn(k, &b).map(|m| (k, m))) {
                Some((kind, mut m)) => {
                    let path = mutate_message(rng, &mut *m, 0);
                    let raw = m.write_to_bytes_dyn().unwrap_or_default();
                    set.files[fi].1 = encode_raw(kind, &raw);
                    set.fix_inventory(&name);
                    (true, format!("{name}: {path}"))
                }
                None => {
                    flip_body_byte(rng, &mut set.files[fi].1, 0x01);
                    set.fix_inventory(&name);
                    (true, format!("{name}: body changed, crc recomputed"))
                }
            }
        }
    };
    if set.files[fi].1 == before {
        // Nothing changed after all (a file swapped with an identical
        // one): the image is as valid as before.
        return Mutation {
            hostile: true,
            what: format!("{what} (no change)"),
        };
    }
    Mutation { hostile, what }
}

/// Decodes `bytes` as every message kind, for the decoder targets: the
/// result does not matter, only that nothing panics or hangs.
pub fn decode_as_every_kind(bytes: &[u8]) -> usize {
    let p = Path::new("fuzz.img");
    let mut ok = 0;
    macro_rules! try_kind {
        ($k:expr, $t:ty) => {
            if super::decode_image::<$t>($k, bytes, p).is_ok() {
                ok += 1;
            }
        };
    }
    try_kind!(ImageType::Inventory, Inventory);
    try_kind!(ImageType::Pstree, Pstree);
    try_kind!(ImageType::Core, TaskCore);
    try_kind!(ImageType::Mm, MmEntry);
    try_kind!(ImageType::Pagemap, Pagemap);
    try_kind!(ImageType::PageStore, PageStore);
    try_kind!(ImageType::Files, Files);
    try_kind!(ImageType::FdTable, FdTable);
    try_kind!(ImageType::Contents, FileContents);
    try_kind!(ImageType::PageHash, PageHashes);
    try_kind!(ImageType::Oracle, KernelView);
    try_kind!(ImageType::Stats, crate::image::proto::Stats);
    try_kind!(ImageType::Job, crate::image::proto::Job);
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_deterministic() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
    }

    #[test]
    fn message_mutation_changes_and_reencodes() {
        let mut mm = MmEntry::new();
        mm.pid = 42;
        let mut v = super::super::proto::Vma::new();
        v.start = 0x1000;
        v.end = 0x2000;
        mm.vmas.push(v);
        let img = super::super::encode_image(ImageType::Mm, &mm).unwrap();
        let mut set = ImageSet {
            files: vec![("mm-42.img".into(), img)],
        };
        let mut rng = Rng::new(1);
        for _ in 0..500 {
            let mut s = set.clone();
            let m = mutate(&mut s, None, &mut rng);
            assert!(!m.what.is_empty());
        }
        set.files.clear();
        let _ = mutate(&mut set, None, &mut rng);
    }
}
