//! The messages of a migration, inside the channel's encrypted frames:
//! a tag byte, then fixed-width little-endian integers and strings
//! (`u16` length, UTF-8). Every field is bounded by the frame, so
//! decoding never allocates more than one frame.
//!
//! ```text
//! source                                  receiver
//! Hello (handshake payload)        ->
//!                                  <-     Welcome (handshake payload)
//! Layer{i} File{name,size} Data.. EndLayer ->   (per layer; i = 1, 2, ...)
//!                                  <-     LayerOk (files synced)
//! ... pre-dump layers while the tree runs, then the final dump's layer ...
//! Final                            ->     (verifies the chain, checks the pids)
//!                                  <-     Verdict{mode}
//! Go                               ->     (restores)
//!                                  <-     Outcome{ok, root}
//! Ack                              ->     (frozen mode: the source is killed)
//! Abort{why} either way, at any point.
//! ```
//!
//! Post-copy (`Hello{lazy}`): each layer's pages.img travels as
//! `Sparse{name, size, head}` and its header (`head` bytes of `Data`);
//! after `Go` the source serves `Want{layer, chunk}` (the restore or a
//! fault needs it) with `Page{layer, chunk, off, data}` frames (the
//! chunk's stored bytes in order), and once `Outcome{ok}` came, streams
//! every other chunk the same way, then `AllSent`. The receiver says
//! `Done` when every page is in place; the source answers `Ack` and ends
//! its tree.

/// How the source hands the tree over (the receiver's [`Msg::Verdict`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The receiver cannot restore (the reason is in the verdict).
    Refuse = 0,
    /// The tree's pids are free on the destination: the source stays
    /// frozen until the destination runs the tree, and is thawed if it
    /// does not.
    Frozen = 1,
    /// The destination shares the source's pid space (the same kernel)
    /// and the tree itself holds the pids: the source is killed first,
    /// and restored locally from its own images if the destination fails.
    Handover = 2,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    Hello {
        version: u32,
        boot_id: String,
        hostname: String,
        tcp_established: bool,
        /// Post-copy (`migrate --lazy`).
        lazy: bool,
    },
    Welcome {
        version: u32,
        boot_id: String,
    },
    Layer {
        index: u32,
    },
    File {
        name: String,
        size: u64,
    },
    Data(Vec<u8>),
    EndLayer,
    LayerOk,
    Final,
    Verdict {
        mode: Mode,
        why: String,
    },
    Go,
    Outcome {
        ok: bool,
        root: i32,
        why: String,
    },
    Ack,
    Abort {
        why: String,
    },
    /// A file of `size` bytes of which only the first `head` follow (as
    /// `Data`); the rest arrives as `Page`s (post-copy pages.img).
    Sparse {
        name: String,
        size: u64,
        head: u64,
    },
    /// Receiver: send this chunk next.
    Want {
        layer: u32,
        chunk: u32,
    },
    /// Source: bytes of a chunk's stored form, from byte `off` of it.
    Page {
        layer: u32,
        chunk: u32,
        off: u64,
        data: Vec<u8>,
    },
    /// Source: every chunk was sent.
    AllSent,
    /// Receiver: every page is in place.
    Done,
    /// Source, pre-copy: pages.img of this layer follows as `Data` while
    /// the pre-dump reads the pages (its size is not known yet): the
    /// stored chunks, in order, after the header's place.
    StreamPages,
    /// Source: the end of a streamed pages.img: its final header.
    StreamEnd {
        header: Vec<u8>,
    },
}

/// The bytes before a `Page`'s data: tag, layer, chunk, offset.
pub const PAGE_HEAD: usize = 1 + 4 + 4 + 8;

/// Encodes the head of a `Page` message into `out[..PAGE_HEAD]` (the data
/// follows; the source fills it in place).
pub fn page_head(out: &mut [u8], layer: u32, chunk: u32, off: u64) {
    out[0] = 17;
    out[1..5].copy_from_slice(&layer.to_le_bytes());
    out[5..9].copy_from_slice(&chunk.to_le_bytes());
    out[9..17].copy_from_slice(&off.to_le_bytes());
}

/// The protocol version of [`Msg::Hello`] and [`Msg::Welcome`].
pub const VERSION: u32 = 3;

pub(crate) fn put_str(out: &mut Vec<u8>, s: &str) {
    let b = s.as_bytes();
    let n = b.len().min(4096);
    out.extend_from_slice(&(n as u16).to_le_bytes());
    out.extend_from_slice(&b[..n]);
}

impl Msg {
    pub fn encode(&self) -> Vec<u8> {
        let mut o = Vec::new();
        match self {
            Msg::Hello {
                version,
                boot_id,
                hostname,
                tcp_established,
                lazy,
            } => {
                o.push(1);
                o.extend_from_slice(&version.to_le_bytes());
                put_str(&mut o, boot_id);
                put_str(&mut o, hostname);
                o.push(*tcp_established as u8);
                o.push(*lazy as u8);
            }
            Msg::Welcome { version, boot_id } => {
                o.push(2);
                o.extend_from_slice(&version.to_le_bytes());
                put_str(&mut o, boot_id);
            }
            Msg::Layer { index } => {
                o.push(3);
                o.extend_from_slice(&index.to_le_bytes());
            }
            Msg::File { name, size } => {
                o.push(4);
                put_str(&mut o, name);
                o.extend_from_slice(&size.to_le_bytes());
            }
            Msg::Data(d) => {
                o.reserve(d.len() + 1);
                o.push(5);
                o.extend_from_slice(d);
            }
            Msg::EndLayer => o.push(6),
            Msg::LayerOk => o.push(7),
            Msg::Final => o.push(8),
            Msg::Verdict { mode, why } => {
                o.push(9);
                o.push(*mode as u8);
                put_str(&mut o, why);
            }
            Msg::Go => o.push(10),
            Msg::Outcome { ok, root, why } => {
                o.push(11);
                o.push(*ok as u8);
                o.extend_from_slice(&root.to_le_bytes());
                put_str(&mut o, why);
            }
            Msg::Ack => o.push(12),
            Msg::Abort { why } => {
                o.push(13);
                put_str(&mut o, why);
            }
            Msg::Sparse { name, size, head } => {
                o.push(14);
                put_str(&mut o, name);
                o.extend_from_slice(&size.to_le_bytes());
                o.extend_from_slice(&head.to_le_bytes());
            }
            Msg::Want { layer, chunk } => {
                o.push(15);
                o.extend_from_slice(&layer.to_le_bytes());
                o.extend_from_slice(&chunk.to_le_bytes());
            }
            Msg::Page {
                layer,
                chunk,
                off,
                data,
            } => {
                o.resize(PAGE_HEAD, 0);
                page_head(&mut o, *layer, *chunk, *off);
                o.extend_from_slice(data);
            }
            Msg::AllSent => o.push(18),
            Msg::Done => o.push(19),
            Msg::StreamPages => o.push(20),
            Msg::StreamEnd { header } => {
                o.push(21);
                o.extend_from_slice(header);
            }
        }
        o
    }

    pub fn decode(b: &[u8]) -> Result<Msg, String> {
        let (&tag, rest) = b.split_first().ok_or("empty message")?;
        let mut c = Cursor(rest);
        let m = match tag {
            1 => Msg::Hello {
                version: c.u32()?,
                boot_id: c.str()?,
                hostname: c.str()?,
                tcp_established: c.u8()? != 0,
                lazy: c.u8()? != 0,
            },
            2 => Msg::Welcome {
                version: c.u32()?,
                boot_id: c.str()?,
            },
            3 => Msg::Layer { index: c.u32()? },
            4 => Msg::File {
                name: c.str()?,
                size: c.u64()?,
            },
            5 => return Ok(Msg::Data(rest.to_vec())),
            6 => Msg::EndLayer,
            7 => Msg::LayerOk,
            8 => Msg::Final,
            9 => Msg::Verdict {
                mode: match c.u8()? {
                    0 => Mode::Refuse,
                    1 => Mode::Frozen,
                    2 => Mode::Handover,
                    m => return Err(format!("unknown hand-over mode {m}")),
                },
                why: c.str()?,
            },
            10 => Msg::Go,
            11 => Msg::Outcome {
                ok: c.u8()? != 0,
                root: c.i32()?,
                why: c.str()?,
            },
            12 => Msg::Ack,
            13 => Msg::Abort { why: c.str()? },
            14 => Msg::Sparse {
                name: c.str()?,
                size: c.u64()?,
                head: c.u64()?,
            },
            15 => Msg::Want {
                layer: c.u32()?,
                chunk: c.u32()?,
            },
            17 => {
                let (layer, chunk, off) = (c.u32()?, c.u32()?, c.u64()?);
                return Ok(Msg::Page {
                    layer,
                    chunk,
                    off,
                    data: c.0.to_vec(),
                });
            }
            18 => Msg::AllSent,
            19 => Msg::Done,
            20 => Msg::StreamPages,
            21 => {
                if rest.len() != crate::image::HEADER_LEN {
                    return Err(format!("StreamEnd: a header of {} bytes", rest.len()));
                }
                return Ok(Msg::StreamEnd {
                    header: rest.to_vec(),
                });
            }
            t => return Err(format!("unknown message type {t}")),
        };
        if !c.0.is_empty() {
            return Err(format!("{} bytes after message type {tag}", c.0.len()));
        }
        Ok(m)
    }

    /// The message's name, for errors.
    pub fn name(&self) -> &'static str {
        match self {
            Msg::Hello { .. } => "Hello",
            Msg::Welcome { .. } => "Welcome",
            Msg::Layer { .. } => "Layer",
            Msg::File { .. } => "File",
            Msg::Data(_) => "Data",
            Msg::EndLayer => "EndLayer",
            Msg::LayerOk => "LayerOk",
            Msg::Final => "Final",
            Msg::Verdict { .. } => "Verdict",
            Msg::Go => "Go",
            Msg::Outcome { .. } => "Outcome",
            Msg::Ack => "Ack",
            Msg::Abort { .. } => "Abort",
            Msg::Sparse { .. } => "Sparse",
            Msg::StreamPages => "StreamPages",
            Msg::StreamEnd { .. } => "StreamEnd",
            Msg::Want { .. } => "Want",
            Msg::Page { .. } => "Page",
            Msg::AllSent => "AllSent",
            Msg::Done => "Done",
        }
    }
}

/// Reads the fields of a message (also `super::pageserver`'s and
/// `crate::pair::remote`'s).
pub(crate) struct Cursor<'a>(pub(crate) &'a [u8]);

impl Cursor<'_> {
    pub(crate) fn take(&mut self, n: usize) -> Result<&[u8], String> {
        if self.0.len() < n {
            return Err("message cut short".into());
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    pub(crate) fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    pub(crate) fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().unwrap_or_default(),
        ))
    }
    pub(crate) fn i32(&mut self) -> Result<i32, String> {
        Ok(i32::from_le_bytes(
            self.take(4)?.try_into().unwrap_or_default(),
        ))
    }
    pub(crate) fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().unwrap_or_default(),
        ))
    }
    pub(crate) fn str(&mut self) -> Result<String, String> {
        let n = u16::from_le_bytes(self.take(2)?.try_into().unwrap_or_default()) as usize;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| "a string is not UTF-8".into())
    }
}

/// Whether `name` is one of the file names cairn writes into an image
/// directory (`crate::image::names`): the fixed ones, or
/// `core-`/`mm-`/`fdinfo-`/`pagemap-`/`pagehash-` with a suffix of ASCII
/// letters, digits and `-` only. A receiver writes nothing else.
pub fn image_name_ok(name: &str) -> bool {
    use crate::image::names;
    const FIXED: [&str; 8] = [
        names::STATS_DUMP,
        names::INVENTORY,
        names::PSTREE,
        names::FILES,
        names::PAGESTORE,
        names::PAGES,
        names::CONTENTS,
        names::ORACLE,
    ];
    if FIXED.contains(&name) {
        return true;
    }
    let Some(stem) = name.strip_suffix(".img") else {
        return false;
    };
    ["core-", "mm-", "fdinfo-", "pagemap-", "pagehash-"]
        .iter()
        .any(|p| {
            stem.strip_prefix(p).is_some_and(|rest| {
                !rest.is_empty()
                    && rest.len() <= 64
                    && rest.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let all = [
            Msg::Hello {
                version: 1,
                boot_id: "b".into(),
                hostname: "h".into(),
                tcp_established: true,
                lazy: true,
            },
            Msg::Welcome {
                version: 1,
                boot_id: "x".into(),
            },
            Msg::Layer { index: 3 },
            Msg::File {
                name: "pages.img".into(),
                size: 1 << 40,
            },
            Msg::Data(vec![1, 2, 3]),
            Msg::EndLayer,
            Msg::LayerOk,
            Msg::Final,
            Msg::Verdict {
                mode: Mode::Handover,
                why: "w".into(),
            },
            Msg::Go,
            Msg::Outcome {
                ok: true,
                root: 42,
                why: String::new(),
            },
            Msg::Ack,
            Msg::Abort { why: "a".into() },
            Msg::Sparse {
                name: "pages.img".into(),
                size: 1 << 33,
                head: 32,
            },
            Msg::Want { layer: 2, chunk: 7 },
            Msg::Page {
                layer: 1,
                chunk: 9,
                off: 65536,
                data: vec![4; 100],
            },
            Msg::AllSent,
            Msg::Done,
            Msg::StreamPages,
            Msg::StreamEnd {
                header: vec![9; crate::image::HEADER_LEN],
            },
        ];
        for m in all {
            assert_eq!(Msg::decode(&m.encode()).unwrap(), m);
        }
        assert!(Msg::decode(&[]).is_err());
        assert!(Msg::decode(&[3, 1]).is_err());
        assert!(Msg::decode(&[6, 0]).is_err());
        assert!(Msg::decode(&[99]).is_err());
        assert!(Msg::decode(&[21, 1, 2]).is_err());
        assert!(Msg::decode(&[4, 200, 0, b'a']).is_err());
    }

    #[test]
    fn names() {
        for ok in [
            "inventory.img",
            "pages.img",
            "core-12.img",
            "pagemap-pid-12.img",
            "pagemap-shmem-4711.img",
            "pagehash-pid-1.img",
        ] {
            assert!(image_name_ok(ok), "{ok}");
        }
        for bad in [
            "../x.img",
            "core-1/../../etc.img",
            "core-.img",
            "x.img",
            ".img",
            "core-1.img.tmp",
            "core-1 .img",
            "/etc/passwd",
            "pagemap-a.b.img",
            "",
        ] {
            assert!(!image_name_ok(bad), "{bad}");
        }
    }
}
