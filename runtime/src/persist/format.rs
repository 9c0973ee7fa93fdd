//! The file format of parjob's one container: a dump, and a cache entry.
//!
//! ```text
//! offset  size  field
//!      0     6  magic "PJDUMP"
//!      6     2  format version (u16, little-endian)
//!      8     1  codec (see `Compression::tag`)
//!      9     1  kind: 0 a dump, 1 a cache entry
//!     10     6  zero
//!     16     8  fingerprint of the stored type (FNV-1a of its type name; 0 in a cache entry)
//!     24     8  payload length, uncompressed
//!     32     8  xxh3-64 of the uncompressed payload
//!     40     8  a cache entry's creation time, ns since the Unix epoch (0 in a dump)
//!     48     8  a cache entry's compute time, ns (0 in a dump)
//!     56     8  zero
//!     64        payload, compressed with the codec
//!   end-8     8  trailer: xxh3-64 of the header and of the stored bytes' xxh3-64
//! ```
//!
//! A dump written before cache entries shared the format has zeros where
//! the kind and the times are, so it reads as a dump of version 1 still.
//!
//! Two checksums: the header's covers the payload as the value's encoding,
//! the trailer the header and the bytes as stored, so a flipped byte
//! anywhere, even one a codec would ignore (a gzip timestamp, say), is
//! caught before anything is decompressed.
//!
//! The payload is a compact binary encoding in the spirit of bincode
//! (fixed-width little-endian numbers, lengths as u64), with one addition:
//! a sequence records a mode byte after its length. Mode 1 is a raw array
//! of one primitive number type: a kind byte, zero padding to the next
//! 64-byte boundary of the payload, and the elements' bytes as they are in
//! memory. Since the payload starts at offset 64, a raw array in an
//! uncompressed file is 64-byte aligned in the file too, which is what lets
//! `load_mmap` hand out a slice of the mapping.

use super::PersistError;

/// The first bytes of every dump.
pub const MAGIC: &[u8; 6] = b"PJDUMP";
/// The format version this build writes and reads.
pub const VERSION: u16 = 1;
/// The header's size; the payload starts here.
pub const HEADER: usize = 64;
/// The trailer's size: the file's last bytes.
pub const TRAILER: usize = 8;
/// Raw arrays start at multiples of this, in the payload and the file.
pub const ALIGN: u64 = 64;

/// A sequence's mode byte.
pub mod mode {
    /// Elements one after another.
    pub const ELEMENTS: u8 = 0;
    /// A raw array: kind, padding, bytes.
    pub const RAW: u8 = 1;
    /// Unknown length: each element preceded by 1, then 0.
    pub const STREAMED: u8 = 2;
}

/// A length that says "unknown, streamed".
pub const UNKNOWN_LEN: u64 = u64::MAX;

/// The kind byte of a dump.
pub const KIND_DUMP: u8 = 0;
/// The kind byte of a cache entry.
pub const KIND_CACHE_ENTRY: u8 = 1;

/// A container's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Header {
    /// The codec's tag.
    pub codec: u8,
    /// [`KIND_DUMP`] or [`KIND_CACHE_ENTRY`].
    pub kind: u8,
    /// A cache entry's creation time, ns since the Unix epoch; 0 in a dump.
    pub created_ns: u64,
    /// A cache entry's compute time, ns; 0 in a dump.
    pub compute_ns: u64,
    /// The dumped type's fingerprint.
    pub fingerprint: u64,
    /// Uncompressed payload bytes.
    pub payload_len: u64,
    /// xxh3-64 of the uncompressed payload.
    pub checksum: u64,
}

impl Header {
    /// The 64 header bytes.
    pub fn encode(&self) -> [u8; HEADER] {
        let mut out = [0u8; HEADER];
        out[..6].copy_from_slice(MAGIC);
        out[6..8].copy_from_slice(&VERSION.to_le_bytes());
        out[8] = self.codec;
        out[9] = self.kind;
        out[16..24].copy_from_slice(&self.fingerprint.to_le_bytes());
        out[24..32].copy_from_slice(&self.payload_len.to_le_bytes());
        out[32..40].copy_from_slice(&self.checksum.to_le_bytes());
        out[40..48].copy_from_slice(&self.created_ns.to_le_bytes());
        out[48..56].copy_from_slice(&self.compute_ns.to_le_bytes());
        out
    }

    /// Reads and checks a header: magic, version, codec.
    pub fn decode(bytes: &[u8]) -> Result<Header, PersistError> {
        if bytes.len() < HEADER {
            if bytes.len() >= 6 && &bytes[..6] != MAGIC {
                return Err(PersistError::NotADump);
            }
            return Err(PersistError::Truncated {
                expected: HEADER as u64,
                found: bytes.len() as u64,
            });
        }
        if &bytes[..6] != MAGIC {
            return Err(PersistError::NotADump);
        }
        let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        let version = u16::from_le_bytes([bytes[6], bytes[7]]);
        if version > VERSION {
            return Err(PersistError::NewerVersion {
                found: version,
                supported: VERSION,
            });
        }
        if version == 0 {
            return Err(PersistError::Corrupt("format version 0".into()));
        }
        if bytes[10..16]
            .iter()
            .chain(&bytes[56..HEADER])
            .any(|b| *b != 0)
        {
            return Err(PersistError::Corrupt(
                "reserved header bytes are not zero".into(),
            ));
        }
        let kind = bytes[9];
        if kind != KIND_DUMP && kind != KIND_CACHE_ENTRY {
            return Err(PersistError::Corrupt(format!("unknown kind {kind}")));
        }
        let codec = bytes[8];
        if !crate::compress::Compression::known(codec) {
            return Err(PersistError::UnknownCodec(codec));
        }
        Ok(Header {
            codec,
            kind,
            fingerprint: word(16),
            payload_len: word(24),
            checksum: word(32),
            created_ns: word(40),
            compute_ns: word(48),
        })
    }
}

/// The fingerprint of `T`: FNV-1a over `T`'s type name, normalized so
/// that types serde writes the same way match: references are their
/// target, `str` is `String`, a slice `[T]` is `Vec<T>`, and `Box`, `Rc`,
/// `Arc` and `Cow` are what they hold. So `(&str, &[f64])` dumped loads as
/// `(String, Vec<f64>)`.
///
/// It catches loading into the wrong type early, with the expected type's
/// name in the error. It is not a proof: the compiler does not promise that
/// type names are stable across versions, so a file may stop matching after
/// a toolchain upgrade or a crate rename (use `load_unchecked`), and two
/// types with the same path in different versions of a crate match although
/// their layouts may differ (the payload's own checks still apply).
pub fn fingerprint<T: ?Sized>() -> u64 {
    crate::hash::fnv1a(normalized_type_name(std::any::type_name::<T>()).bytes())
}

/// A type name as parsed for normalization.
enum Ty {
    Ref(Box<Ty>),
    Tuple(Vec<Ty>),
    Slice(Box<Ty>),
    Array(Box<Ty>, String),
    Path(String, Vec<Ty>),
}

impl Ty {
    fn render(&self, out: &mut String) {
        match self {
            Ty::Ref(inner) => inner.render(out),
            Ty::Tuple(items) => {
                out.push('(');
                render_list(items, out);
                out.push(')');
            }
            Ty::Slice(inner) => {
                out.push_str("alloc::vec::Vec<");
                inner.render(out);
                out.push('>');
            }
            Ty::Array(inner, n) => {
                out.push('[');
                inner.render(out);
                out.push_str("; ");
                out.push_str(n);
                out.push(']');
            }
            Ty::Path(name, args) => {
                let transparent = [
                    "alloc::boxed::Box",
                    "alloc::rc::Rc",
                    "alloc::sync::Arc",
                    "alloc::borrow::Cow",
                ];
                if transparent.contains(&name.as_str()) && args.len() == 1 {
                    return args[0].render(out);
                }
                if name == "str" && args.is_empty() {
                    out.push_str("alloc::string::String");
                    return;
                }
                out.push_str(name);
                if !args.is_empty() {
                    out.push('<');
                    render_list(args, out);
                    out.push('>');
                }
            }
        }
    }
}

fn render_list(items: &[Ty], out: &mut String) {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        item.render(out);
    }
}

struct Parser<'a> {
    text: &'a str,
    at: usize,
}

impl Parser<'_> {
    fn skip_spaces(&mut self) {
        while self.text[self.at..].starts_with(' ') {
            self.at += 1;
        }
    }

    fn eat(&mut self, token: &str) -> bool {
        self.skip_spaces();
        if self.text[self.at..].starts_with(token) {
            self.at += token.len();
            true
        } else {
            false
        }
    }

    fn word(&mut self) -> Option<String> {
        self.skip_spaces();
        let rest = &self.text[self.at..];
        let len = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(rest.len());
        if len == 0 {
            return None;
        }
        self.at += len;
        Some(rest[..len].to_string())
    }

    fn list(&mut self, close: &str) -> Option<Vec<Ty>> {
        let mut items = Vec::new();
        if self.eat(close) {
            return Some(items);
        }
        loop {
            items.push(self.ty()?);
            if self.eat(close) {
                return Some(items);
            }
            if !self.eat(",") {
                return None;
            }
        }
    }

    fn ty(&mut self) -> Option<Ty> {
        if self.eat("&") {
            let _ = self.eat("mut ");
            return Some(Ty::Ref(Box::new(self.ty()?)));
        }
        if self.eat("(") {
            return Some(Ty::Tuple(self.list(")")?));
        }
        if self.eat("[") {
            let inner = self.ty()?;
            if self.eat(";") {
                let n = self.word()?;
                return self.eat("]").then(|| Ty::Array(Box::new(inner), n));
            }
            return self.eat("]").then(|| Ty::Slice(Box::new(inner)));
        }
        let name = self.word()?;
        let args = if self.eat("<") {
            self.list(">")?
        } else {
            Vec::new()
        };
        Some(Ty::Path(name, args))
    }
}

/// `name` with the equivalences of [`fingerprint`] applied (unchanged if it
/// does not parse, for function pointers and the like).
pub fn normalized_type_name(name: &str) -> String {
    let mut parser = Parser { text: name, at: 0 };
    match parser.ty() {
        Some(ty) if parser.at == name.len() => {
            let mut out = String::with_capacity(name.len());
            ty.render(&mut out);
            out
        }
        _ => name.to_string(),
    }
}

/// The trailer: xxh3-64 over the final header and the xxh3-64 of the
/// stored payload bytes, so that a change to either is caught.
pub fn trailer(header: &Header, stored_hash: u64) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(&header.encode());
    h.update(&stored_hash.to_le_bytes());
    h.digest()
}

/// Zero bytes that bring `pos` to the next multiple of [`ALIGN`].
pub fn padding(pos: u64) -> usize {
    ((ALIGN - pos % ALIGN) % ALIGN) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dump_header_is_the_version_1_layout() {
        let header = Header {
            codec: 3,
            fingerprint: 0x0102_0304_0506_0708,
            payload_len: 99,
            checksum: 0x1111_2222_3333_4444,
            ..Header::default()
        };
        let bytes = header.encode();
        // What dumps written before cache entries shared the format hold.
        let mut v1 = [0u8; HEADER];
        v1[..6].copy_from_slice(b"PJDUMP");
        v1[6] = 1;
        v1[8] = 3;
        v1[16..24].copy_from_slice(&0x0102_0304_0506_0708u64.to_le_bytes());
        v1[24..32].copy_from_slice(&99u64.to_le_bytes());
        v1[32..40].copy_from_slice(&0x1111_2222_3333_4444u64.to_le_bytes());
        assert_eq!(bytes, v1);
        assert_eq!(Header::decode(&v1).unwrap(), header);
        let mut unknown_kind = v1;
        unknown_kind[9] = 7;
        assert!(Header::decode(&unknown_kind).is_err());
    }

    #[test]
    fn types_serde_writes_alike_share_a_fingerprint() {
        assert_eq!(
            fingerprint::<(&str, &[f64])>(),
            fingerprint::<(String, Vec<f64>)>()
        );
        assert_eq!(fingerprint::<Box<[u16]>>(), fingerprint::<Vec<u16>>());
        assert_eq!(
            fingerprint::<std::sync::Arc<String>>(),
            fingerprint::<String>()
        );
        assert_ne!(fingerprint::<Vec<f32>>(), fingerprint::<Vec<f64>>());
        assert_ne!(fingerprint::<[u8; 4]>(), fingerprint::<Vec<u8>>());
        assert_eq!(
            normalized_type_name(
                "std::collections::hash::map::HashMap<&str, alloc::boxed::Box<[u8]>>"
            ),
            "std::collections::hash::map::HashMap<alloc::string::String, alloc::vec::Vec<u8>>"
        );
    }
}
