//! JSON without a JSON library: the helpers the commands' `--json` output
//! and `cairn inventory` share, the printer of any image message
//! ([`message`], the schema of docs/SHOW-JSON.md) and a small parser
//! ([`parse`]) for the tests and for tools that read cairn's JSON back.
//!
//! Integers: a JSON number when its magnitude is at most 2^53 (every
//! integer a double holds exactly, so every JSON reader gets the same
//! value), otherwise its decimal digits as a JSON string ([`u64()`],
//! [`i64()`]).

use std::fmt::Write as _;

use protobuf::reflect::{ReflectFieldRef, ReflectValueRef};
use protobuf::MessageDyn;

/// The largest integer that is written as a JSON number: 2^53.
pub const MAX_EXACT: u64 = 1 << 53;

/// Quotes and escapes `s` as a JSON string.
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// An unsigned integer: a number up to 2^53, a string of digits above.
pub fn u64(v: u64) -> String {
    if v <= MAX_EXACT {
        v.to_string()
    } else {
        format!("\"{v}\"")
    }
}

/// A signed integer: a number when |v| <= 2^53, a string of digits
/// otherwise.
pub fn i64(v: i64) -> String {
    if v.unsigned_abs() <= MAX_EXACT {
        v.to_string()
    } else {
        format!("\"{v}\"")
    }
}

/// Standard base64 with padding (RFC 4648), as protobuf's JSON mapping
/// writes `bytes` fields.
pub fn base64(b: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(b.len().div_ceil(3) * 4);
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A protobuf message as one JSON object, for `cairn show --json`: every
/// field under its name in the .proto file, default values included (a
/// field is always there), enums by name (the number when the value has
/// no name), `bytes` as base64 strings, integers as [`u64()`]/[`i64()`], a
/// `oneof` with only its set member, a map as an object.
pub fn message(m: &dyn MessageDyn) -> String {
    let mut out = String::new();
    write_message(&mut out, m);
    out
}

fn write_message(out: &mut String, m: &dyn MessageDyn) {
    out.push('{');
    let mut first = true;
    for f in m.descriptor_dyn().fields() {
        let r = f.get_reflect(m);
        if f.containing_oneof().is_some() {
            if let ReflectFieldRef::Optional(ref o) = r {
                if o.value().is_none() {
                    continue;
                }
            }
        }
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(&json_string(f.name()));
        out.push(':');
        match r {
            ReflectFieldRef::Optional(_) => {
                write_value(out, &f.get_singular_field_or_default(m));
            }
            ReflectFieldRef::Repeated(rep) => {
                out.push('[');
                for (i, v) in rep.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_value(out, &v);
                }
                out.push(']');
            }
            ReflectFieldRef::Map(map) => {
                let mut entries: Vec<(String, String)> = (&map)
                    .into_iter()
                    .map(|(k, v)| {
                        let key = match k {
                            ReflectValueRef::String(s) => s.to_string(),
                            other => value_string(&other).trim_matches('"').to_string(),
                        };
                        (key, value_string(&v))
                    })
                    .collect();
                entries.sort();
                out.push('{');
                for (i, (k, v)) in entries.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "{}:{v}", json_string(k));
                }
                out.push('}');
            }
        }
    }
    out.push('}');
}

fn value_string(v: &ReflectValueRef) -> String {
    let mut s = String::new();
    write_value(&mut s, v);
    s
}

fn write_value(out: &mut String, v: &ReflectValueRef) {
    match v {
        ReflectValueRef::U32(x) => out.push_str(&x.to_string()),
        ReflectValueRef::I32(x) => out.push_str(&x.to_string()),
        ReflectValueRef::U64(x) => out.push_str(&u64(*x)),
        ReflectValueRef::I64(x) => out.push_str(&i64(*x)),
        ReflectValueRef::F32(x) => float(out, f64::from(*x)),
        ReflectValueRef::F64(x) => float(out, *x),
        ReflectValueRef::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        ReflectValueRef::String(s) => out.push_str(&json_string(s)),
        ReflectValueRef::Bytes(b) => out.push_str(&json_string(&base64(b))),
        ReflectValueRef::Enum(d, n) => match d.value_by_number(*n) {
            Some(e) => out.push_str(&json_string(e.name())),
            None => out.push_str(&n.to_string()),
        },
        ReflectValueRef::Message(m) => write_message(out, &**m),
    }
}

/// No cairn image holds a float that is not finite; `null` if one did,
/// rather than invalid JSON.
fn float(out: &mut String, x: f64) {
    if x.is_finite() {
        let _ = write!(out, "{x}");
    } else {
        out.push_str("null");
    }
}

/// A parsed JSON value ([`parse`]). Numbers keep their text, so that an
/// integer above 2^53 is not rounded.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Number(String),
    String(String),
    Array(Vec<Value>),
    Object(Vec<(String, Value)>),
}

impl Value {
    /// The member `key` of an object.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Object(m) => m.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }
    /// An integer: a number, or a string of digits (what [`u64()`] writes
    /// above 2^53).
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Value::Number(n) | Value::String(n) => n.parse().ok(),
            _ => None,
        }
    }
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Number(n) | Value::String(n) => n.parse().ok(),
            _ => None,
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
    pub fn is_number(&self) -> bool {
        matches!(self, Value::Number(_))
    }
}

/// Parses one JSON document (RFC 8259; surrounding white space allowed).
/// The error says at which byte and why.
pub fn parse(s: &str) -> Result<Value, String> {
    let mut p = Parser {
        b: s.as_bytes(),
        i: 0,
        depth: 0,
    };
    let v = p.value()?;
    p.ws();
    if p.i != p.b.len() {
        return Err(format!("byte {}: text after the value", p.i));
    }
    Ok(v)
}

struct Parser<'a> {
    b: &'a [u8],
    i: usize,
    depth: usize,
}

impl Parser<'_> {
    fn err<T>(&self, what: &str) -> Result<T, String> {
        Err(format!("byte {}: {what}", self.i))
    }
    fn ws(&mut self) {
        while self.i < self.b.len() && matches!(self.b[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }
    fn eat(&mut self, lit: &str) -> bool {
        if self.b[self.i..].starts_with(lit.as_bytes()) {
            self.i += lit.len();
            true
        } else {
            false
        }
    }
    fn value(&mut self) -> Result<Value, String> {
        self.ws();
        if self.depth > 256 {
            return self.err("nested too deep");
        }
        match self.b.get(self.i) {
            None => self.err("unexpected end"),
            Some(b'{') => {
                self.i += 1;
                self.depth += 1;
                let mut m = Vec::new();
                self.ws();
                if !self.eat("}") {
                    loop {
                        self.ws();
                        let k = self.string()?;
                        self.ws();
                        if !self.eat(":") {
                            return self.err("expected ':'");
                        }
                        m.push((k, self.value()?));
                        self.ws();
                        if self.eat("}") {
                            break;
                        }
                        if !self.eat(",") {
                            return self.err("expected ',' or '}'");
                        }
                    }
                }
                self.depth -= 1;
                Ok(Value::Object(m))
            }
            Some(b'[') => {
                self.i += 1;
                self.depth += 1;
                let mut a = Vec::new();
                self.ws();
                if !self.eat("]") {
                    loop {
                        a.push(self.value()?);
                        self.ws();
                        if self.eat("]") {
                            break;
                        }
                        if !self.eat(",") {
                            return self.err("expected ',' or ']'");
                        }
                    }
                }
                self.depth -= 1;
                Ok(Value::Array(a))
            }
            Some(b'"') => Ok(Value::String(self.string()?)),
            Some(b't') if self.eat("true") => Ok(Value::Bool(true)),
            Some(b'f') if self.eat("false") => Ok(Value::Bool(false)),
            Some(b'n') if self.eat("null") => Ok(Value::Null),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => self.err("unexpected character"),
        }
    }
    fn number(&mut self) -> Result<Value, String> {
        let start = self.i;
        self.eat("-");
        let digits = |p: &mut Self| {
            let s = p.i;
            while p.i < p.b.len() && p.b[p.i].is_ascii_digit() {
                p.i += 1;
            }
            p.i > s
        };
        if !self.eat("0") && !digits(self) {
            return self.err("bad number");
        }
        if self.eat(".") && !digits(self) {
            return self.err("bad fraction");
        }
        if self.b.get(self.i).is_some_and(|c| *c == b'e' || *c == b'E') {
            self.i += 1;
            if !self.eat("+") {
                self.eat("-");
            }
            if !digits(self) {
                return self.err("bad exponent");
            }
        }
        Ok(Value::Number(
            String::from_utf8_lossy(&self.b[start..self.i]).into_owned(),
        ))
    }
    fn string(&mut self) -> Result<String, String> {
        if !self.eat("\"") {
            return self.err("expected a string");
        }
        let mut out = Vec::new();
        loop {
            let Some(&c) = self.b.get(self.i) else {
                return self.err("unterminated string");
            };
            self.i += 1;
            match c {
                b'"' => break,
                b'\\' => {
                    let Some(&e) = self.b.get(self.i) else {
                        return self.err("unterminated escape");
                    };
                    self.i += 1;
                    let ch = match e {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let hex = |p: &mut Self| -> Result<u32, String> {
                                let h = p.b.get(p.i..p.i + 4).ok_or("short \\u escape")?;
                                p.i += 4;
                                u32::from_str_radix(&String::from_utf8_lossy(h), 16)
                                    .map_err(|e| e.to_string())
                            };
                            let mut u = hex(self)?;
                            if (0xd800..0xdc00).contains(&u) && self.eat("\\u") {
                                let lo = hex(self)?;
                                u = 0x10000
                                    + ((u - 0xd800) << 10)
                                    + (lo.wrapping_sub(0xdc00) & 0x3ff);
                            }
                            char::from_u32(u).unwrap_or('\u{fffd}')
                        }
                        _ => return self.err("bad escape"),
                    };
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                }
                c if c < 0x20 => return self.err("control character in a string"),
                c => out.push(c),
            }
        }
        String::from_utf8(out).map_err(|_| format!("byte {}: string is not UTF-8", self.i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_string("a\"b\\c\n\u{1}"), "\"a\\\"b\\\\c\\n\\u0001\"");
    }

    #[test]
    fn integers_are_numbers_up_to_2_53() {
        assert_eq!(u64(0), "0");
        assert_eq!(u64(1 << 53), "9007199254740992");
        assert_eq!(u64((1 << 53) + 1), "\"9007199254740993\"");
        assert_eq!(u64(u64::MAX), "\"18446744073709551615\"");
        assert_eq!(i64(-(1 << 53)), "-9007199254740992");
        assert_eq!(i64(i64::MIN), "\"-9223372036854775808\"");
    }

    #[test]
    fn base64_pads() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn messages_print_every_field_with_numbers() {
        let mut v = crate::image::proto::Vma::new();
        v.start = 0x7fff_0000_0000;
        v.end = u64::MAX;
        v.kind = crate::image::proto::VmaKind::VMA_FILE_SHARED.into();
        v.vm_flags = vec!["rd".into()];
        let s = message(&v);
        let j = parse(&s).unwrap();
        assert!(j.get("start").unwrap().is_number(), "{s}");
        assert_eq!(j.get("start").unwrap().as_u64(), Some(0x7fff_0000_0000));
        assert_eq!(j.get("end").unwrap().as_str(), Some("18446744073709551615"));
        assert_eq!(j.get("kind").unwrap().as_str(), Some("VMA_FILE_SHARED"));
        assert_eq!(j.get("prot").unwrap().as_u64(), Some(0));
        assert_eq!(j.get("memfd").unwrap().as_bool(), Some(false));
        // A oneof has only its set member.
        let mut d = crate::image::proto::FileDesc::new();
        d.set_pipe(crate::image::proto::PipeFile::new());
        let j = parse(&message(&d)).unwrap();
        assert!(j.get("pipe").is_some() && j.get("reg").is_none());
    }

    #[test]
    fn parser_accepts_json_and_refuses_the_rest() {
        let v = parse(r#" {"a":[1,-2.5e3,"x\u00e9\n",true,null,{}],"b":"18446744073709551615"} "#)
            .unwrap();
        assert_eq!(v.get("a").unwrap().as_array().unwrap().len(), 6);
        assert_eq!(v.get("b").unwrap().as_u64(), Some(u64::MAX));
        for bad in [
            "",
            "{",
            "[1,]",
            "{\"a\" 1}",
            "01x",
            "\"\u{1}\"",
            "[1] 2",
            "tru",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
