//! Any image message as text for people (`cairn show --full`, `cairn
//! show FILE`): the layout of protobuf's text format (`name: value`,
//! `name {` ... `}`, two spaces per level, fields at their default value
//! left out) with the numbers people look up written as they would
//! write them: addresses in hex, protections as `r-xp`, open flags,
//! sigaction flags and signal masks by name, signals as `SIGTERM`, file
//! modes in octal, an XSAVE area as its size and state components, long
//! binary data as its size and first bytes. Signals whose action is the
//! default are not listed one by one.

use std::fmt::Write as _;

use protobuf::reflect::{FieldDescriptor, ReflectFieldRef, ReflectValueRef};
use protobuf::MessageDyn;

use super::flags;

/// Longest `bytes` value printed as a string; longer or binary ones are
/// shown as their size and first bytes.
const MAX_INLINE_BYTES: usize = 256;

/// `m` as text (see the module documentation); empty for a message whose
/// every field has its default value.
pub fn message(m: &dyn MessageDyn) -> String {
    let mut out = String::new();
    write_message(&mut out, m, 0);
    out
}

fn pad(out: &mut String, depth: usize) {
    for _ in 0..depth {
        out.push_str("  ");
    }
}

fn write_message(out: &mut String, m: &dyn MessageDyn, depth: usize) {
    let mname = m.descriptor_dyn().name().to_string();
    for f in m.descriptor_dyn().fields() {
        match f.get_reflect(m) {
            ReflectFieldRef::Optional(o) => {
                if let Some(v) = o.value() {
                    write_field(out, m, &mname, &f, &v, depth);
                }
            }
            ReflectFieldRef::Repeated(rep) => {
                let mut hidden = 0;
                for v in &rep {
                    if mname == "TaskCore" && f.name() == "sigactions" && default_action(&v) {
                        hidden += 1;
                        continue;
                    }
                    write_field(out, m, &mname, &f, &v, depth);
                }
                if hidden > 0 {
                    pad(out, depth);
                    let _ = writeln!(
                        out,
                        "# sigactions of {hidden} more signals: SIG_DFL, no flags, empty mask"
                    );
                }
            }
            ReflectFieldRef::Map(map) => {
                let mut entries: Vec<(String, String)> = (&map)
                    .into_iter()
                    .map(|(k, v)| (plain(&k), plain(&v)))
                    .collect();
                entries.sort();
                for (k, v) in entries {
                    pad(out, depth);
                    let _ = writeln!(out, "{} {{", f.name());
                    pad(out, depth + 1);
                    let _ = writeln!(out, "key: {k}");
                    pad(out, depth + 1);
                    let _ = writeln!(out, "value: {v}");
                    pad(out, depth);
                    out.push_str("}\n");
                }
            }
        }
    }
}

/// A SigAction that says nothing: the default handler, no flags, no mask.
fn default_action(v: &ReflectValueRef) -> bool {
    let Some(m) = v.to_message() else {
        return false;
    };
    m.descriptor_dyn()
        .fields()
        .filter(|f| f.name() != "signo")
        .all(|f| !f.has_field(&*m))
}

fn write_field(
    out: &mut String,
    parent: &dyn MessageDyn,
    mname: &str,
    f: &FieldDescriptor,
    v: &ReflectValueRef,
    depth: usize,
) {
    pad(out, depth);
    if let ReflectValueRef::Message(sub) = v {
        let _ = writeln!(out, "{} {{", f.name());
        write_message(out, &**sub, depth + 1);
        pad(out, depth);
        out.push_str("}\n");
        return;
    }
    let text = special(parent, mname, f.name(), v).unwrap_or_else(|| plain(v));
    let _ = writeln!(out, "{}: {text}", f.name());
}

/// A value the way protobuf's text format writes it, except `bytes`.
fn plain(v: &ReflectValueRef) -> String {
    match v {
        ReflectValueRef::U32(x) => x.to_string(),
        ReflectValueRef::I32(x) => x.to_string(),
        ReflectValueRef::U64(x) => x.to_string(),
        ReflectValueRef::I64(x) => x.to_string(),
        ReflectValueRef::F32(x) => x.to_string(),
        ReflectValueRef::F64(x) => x.to_string(),
        ReflectValueRef::Bool(b) => b.to_string(),
        ReflectValueRef::String(s) => quote(s.as_bytes()),
        ReflectValueRef::Bytes(b) => bytes(b),
        ReflectValueRef::Enum(d, n) => match d.value_by_number(*n) {
            Some(e) => e.name().to_string(),
            None => n.to_string(),
        },
        ReflectValueRef::Message(_) => String::new(),
    }
}

/// A quoted string with C escapes for what is not printable.
fn quote(b: &[u8]) -> String {
    let mut out = String::from("\"");
    for chunk in b.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                c if c.is_control() => {
                    let mut buf = [0u8; 4];
                    for x in c.encode_utf8(&mut buf).bytes() {
                        let _ = write!(out, "\\{x:03o}");
                    }
                }
                c => out.push(c),
            }
        }
        for x in chunk.invalid() {
            let _ = write!(out, "\\{x:03o}");
        }
    }
    out.push('"');
    out
}

/// Short text-like bytes as a string; the rest as their size and first
/// bytes in hex.
fn bytes(b: &[u8]) -> String {
    let texty = b.len() <= MAX_INLINE_BYTES
        && b.iter()
            .all(|&c| c == 0 || c == b'\n' || c == b'\t' || (0x20..0x7f).contains(&c))
        && b.iter().filter(|&&c| c == 0).count() * 4 <= b.len().max(1);
    if texty {
        return quote(b);
    }
    let head: String = b.iter().take(16).map(|x| format!("{x:02x}")).collect();
    format!(
        "<{} bytes: {head}{}>",
        b.len(),
        if b.len() > 16 { "..." } else { "" }
    )
}

/// Fields whose numbers are addresses (written in hex), by message.
fn is_address(mname: &str, field: &str) -> bool {
    match mname {
        "X86Regs" => true,
        "Vma" => matches!(field, "start" | "end"),
        "MmEntry" => matches!(
            field,
            "start_code"
                | "end_code"
                | "start_data"
                | "end_data"
                | "start_brk"
                | "brk"
                | "start_stack"
                | "arg_start"
                | "arg_end"
                | "env_start"
                | "env_end"
        ),
        "SigAction" => field == "restorer",
        "SigAltStack" => field == "sp",
        "Rseq" => field == "addr",
        "ThreadCore" => matches!(field, "robust_list" | "clear_child_tid"),
        "PageRun" | "PageHashRun" => field == "addr",
        "Creds" => field.starts_with("cap_"),
        "EpollTarget" => field == "data",
        "AioRing" => matches!(field, "start" | "end"),
        _ => false,
    }
}

/// The value of `field` in a message of type `mname`, when it has a
/// better form than its number.
fn special(
    parent: &dyn MessageDyn,
    mname: &str,
    field: &str,
    v: &ReflectValueRef,
) -> Option<String> {
    let n = match v {
        ReflectValueRef::U32(x) => u64::from(*x),
        ReflectValueRef::U64(x) => *x,
        ReflectValueRef::Bytes(b) if field == "xsave" => {
            return Some(format!("<{}>", flags::xsave(b)))
        }
        _ => return None,
    };
    if is_address(mname, field) {
        return Some(format!("{n:#x}"));
    }
    Some(match (mname, field) {
        ("Vma", "prot") => {
            let kind = parent
                .descriptor_dyn()
                .field_by_name("kind")
                .map(|k| plain(&k.get_singular_field_or_default(parent)))
                .unwrap_or_default();
            flags::prot(n as u32, flags::vma_shared(&kind))
        }
        ("SigAction", "handler") => flags::handler(n),
        ("SigAction", "flags") => flags::sa_flags(n),
        ("SigAction", "mask") | ("ThreadCore", "sigmask") | ("SignalFd", "sigmask") => {
            flags::sigmask(n)
        }
        (_, "signo" | "exit_signal" | "pdeath_signal" | "stop_signal" | "signum") => {
            flags::signal(n as u32)
        }
        ("RegFile" | "FifoFile" | "PipeFile" | "FileDesc" | "MemFd", "flags") => {
            flags::open_flags(n as u32)
        }
        (_, "mode" | "file_mode" | "memfd_mode") | ("TaskCore", "umask") => format!("0{n:o}"),
        ("Rlimit", "resource") => flags::rlimit(n as u32),
        ("Rlimit", "cur" | "max") if n == u64::MAX => "RLIM_INFINITY".into(),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::proto;

    #[test]
    fn numbers_people_look_up_have_names() {
        let mut core = proto::TaskCore::new();
        core.pid = 7;
        for s in 1..=64 {
            let mut a = proto::SigAction::new();
            a.signo = s;
            if s == 10 {
                a.handler = 0x401136;
                a.flags = 0x1400_0004;
                a.mask = 1 << 14;
                a.restorer = 0x7f00_0000_1000;
            }
            core.sigactions.push(a);
        }
        let mut t = proto::ThreadCore::new();
        t.tid = 7;
        let mut x = vec![0u8; 1088];
        x[512] = 3;
        t.xsave = x;
        let mut regs = proto::X86Regs::new();
        regs.rip = 0x401000;
        t.regs = protobuf::MessageField::some(regs);
        core.threads.push(t);
        let s = message(&core);
        assert!(s.contains("  signo: SIGUSR1\n"), "{s}");
        assert!(s.contains("  handler: 0x401136\n"), "{s}");
        assert!(
            s.contains("  flags: SA_SIGINFO|SA_RESTORER|SA_RESTART\n"),
            "{s}"
        );
        assert!(s.contains("  mask: SIGTERM\n"), "{s}");
        assert!(s.contains("  restorer: 0x7f0000001000\n"), "{s}");
        assert!(s.contains("# sigactions of 63 more signals"), "{s}");
        assert_eq!(s.matches("sigactions {").count(), 1, "{s}");
        assert!(
            s.contains("xsave: <1088 bytes, XSTATE_BV 0x3 (x87 SSE)>"),
            "{s}"
        );
        assert!(s.contains("rip: 0x401000"), "{s}");
        assert!(!s.contains("\\000"), "{s}");

        let mut v = proto::Vma::new();
        v.start = 0x7f00_0000_0000;
        v.end = 0x7f00_0000_2000;
        v.prot = 3;
        v.kind = proto::VmaKind::VMA_ANON_SHARED.into();
        let s = message(&v);
        assert!(
            s.starts_with("start: 0x7f0000000000\nend: 0x7f0000002000\nprot: rw-s\n"),
            "{s}"
        );

        let mut r = proto::RegFile::new();
        r.path = "/tmp/x".into();
        r.flags = 0o102002;
        let s = message(&r);
        assert!(s.contains("flags: O_RDWR|O_APPEND|O_LARGEFILE"), "{s}");
        assert!(bytes(b"stream-a2b-1").contains("stream-a2b-1"));
        assert!(bytes(&[0xff; 300]).starts_with("<300 bytes: ffff"));
    }
}
