//! Compression codecs, shared by `dump`/`load` and the memoize cache: every
//! codec joblib has, as streaming encoders and decoders, each from a
//! well-kept crate (flate2 on zlib-rs and bzip2 on libbz2-rs, both pure
//! Rust; liblzma; lz4_flex; zstd).
//!
//! A codec is recorded in a file's header as one byte, so a file is read
//! with the codec it was written with, whatever its name.

use std::io::{self, Read, Write};
use std::path::Path;

/// How data is compressed. Levels follow each library's own range; joblib's
/// default level is 3, and so is ours where the extension picks the codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// Stored as is.
    #[default]
    None,
    /// zlib (0 to 9), `.z`.
    Zlib(u32),
    /// gzip (0 to 9), `.gz`.
    Gzip(u32),
    /// bzip2 (1 to 9), `.bz2`.
    Bz2(u32),
    /// xz (0 to 9), `.xz`.
    Xz(u32),
    /// The legacy `.lzma` format (0 to 9).
    Lzma(u32),
    /// LZ4 frames (0 to 16, joblib's range), `.lz4`: fastest, modest
    /// ratio. lz4_flex has one speed, so every level compresses alike;
    /// the level is checked and kept for joblib's spellings.
    Lz4(u32),
    /// Zstandard (1 to 22), `.zst`.
    Zstd(i32),
}

/// The most memory an xz or lzma decoder may take. A stream's header sets
/// its dictionary size (up to 4 GiB); level 9, the largest we write, needs
/// 64 MiB, so anything past this is a hostile or foreign file and fails
/// instead of allocating.
pub(crate) const LZMA_MEMLIMIT: u64 = 128 << 20;

/// The level `from_extension` uses.
pub(crate) const DEFAULT_LEVEL: u32 = 3;

impl Compression {
    /// The levels this codec takes.
    fn levels(self) -> std::ops::RangeInclusive<i64> {
        match self {
            Compression::None => 0..=0,
            Compression::Zlib(_)
            | Compression::Gzip(_)
            | Compression::Xz(_)
            | Compression::Lzma(_) => 0..=9,
            Compression::Bz2(_) => 1..=9,
            Compression::Lz4(_) => 0..=16,
            Compression::Zstd(_) => 1..=22,
        }
    }

    fn level(self) -> i64 {
        match self {
            Compression::None => 0,
            Compression::Zlib(l)
            | Compression::Gzip(l)
            | Compression::Bz2(l)
            | Compression::Xz(l)
            | Compression::Lzma(l)
            | Compression::Lz4(l) => i64::from(l),
            Compression::Zstd(l) => i64::from(l),
        }
    }

    /// Checks the level against the codec's range: `Compression::Zlib(10)`
    /// is an error, never a silent clamp to 9.
    ///
    /// ```
    /// use parjob_runtime::Compression;
    /// assert!(Compression::Zlib(9).check().is_ok());
    /// let e = Compression::Zlib(10).check().unwrap_err();
    /// assert!(e.to_string().contains("0 to 9"), "{e}");
    /// ```
    ///
    /// # Errors
    /// `Error::Config` naming the codec, the level and the range.
    pub fn check(self) -> crate::Result<Self> {
        let levels = self.levels();
        if levels.contains(&self.level()) {
            return Ok(self);
        }
        Err(crate::Error::Config(format!(
            "{self:?}: {} takes a level from {} to {}",
            Self::name_of(self.tag()),
            levels.start(),
            levels.end()
        )))
    }

    /// The codec a file name asks for, as joblib picks one: `.z`, `.gz`,
    /// `.bz2`, `.xz`, `.lzma`, `.lz4`, `.zst`; anything else is `None`.
    pub fn from_extension(path: &Path) -> Compression {
        let level = DEFAULT_LEVEL;
        match path.extension().and_then(|e| e.to_str()) {
            Some("z") => Compression::Zlib(level),
            Some("gz") => Compression::Gzip(level),
            Some("bz2") => Compression::Bz2(level),
            Some("xz") => Compression::Xz(level),
            Some("lzma") => Compression::Lzma(level),
            Some("lz4") => Compression::Lz4(level),
            Some("zst") => Compression::Zstd(level as i32),
            _ => Compression::None,
        }
    }

    /// The header byte.
    pub(crate) fn tag(self) -> u8 {
        match self {
            Compression::None => 0,
            Compression::Lz4(_) => 1,
            Compression::Zstd(_) => 2,
            Compression::Zlib(_) => 3,
            Compression::Gzip(_) => 4,
            Compression::Bz2(_) => 5,
            Compression::Xz(_) => 6,
            Compression::Lzma(_) => 7,
        }
    }

    /// The codec's name, for messages.
    pub(crate) fn name_of(tag: u8) -> &'static str {
        match tag {
            0 => "none",
            1 => "lz4",
            2 => "zstd",
            3 => "zlib",
            4 => "gzip",
            5 => "bz2",
            6 => "xz",
            7 => "lzma",
            _ => "unknown",
        }
    }

    /// Whether `tag` names a codec this build reads.
    pub(crate) fn known(tag: u8) -> bool {
        tag <= 7
    }

    /// A writer that compresses into `w`; call [`Encoder::finish`].
    pub(crate) fn encoder<W: Write>(self, w: W) -> io::Result<Encoder<W>> {
        self.check()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        Ok(match self {
            Compression::None => Encoder::None(w),
            Compression::Zlib(level) => Encoder::Zlib(flate2::write::ZlibEncoder::new(
                w,
                flate2::Compression::new(level),
            )),
            Compression::Gzip(level) => Encoder::Gzip(flate2::write::GzEncoder::new(
                w,
                flate2::Compression::new(level),
            )),
            Compression::Bz2(level) => Encoder::Bz2(bzip2::write::BzEncoder::new(
                w,
                bzip2::Compression::new(level),
            )),
            Compression::Xz(level) => Encoder::Xz(liblzma::write::XzEncoder::new(w, level)),
            Compression::Lzma(level) => {
                let options =
                    liblzma::stream::LzmaOptions::new_preset(level).map_err(io::Error::other)?;
                let stream = liblzma::stream::Stream::new_lzma_encoder(&options)
                    .map_err(io::Error::other)?;
                Encoder::Xz(liblzma::write::XzEncoder::new_stream(w, stream))
            }
            Compression::Lz4(_) => Encoder::Lz4(lz4_flex::frame::FrameEncoder::new(w)),
            Compression::Zstd(level) => Encoder::Zstd(zstd::stream::write::Encoder::new(w, level)?),
        })
    }

    /// The codec whose stream starts with `head`'s magic bytes, if any: a
    /// whole dump written through a compressing writer (a `GzEncoder`
    /// file, say) is recognised by its outer codec, as joblib recognises
    /// a file object's compression.
    pub(crate) fn sniff(head: &[u8]) -> Option<u8> {
        let starts = |magic: &[u8]| head.starts_with(magic);
        if starts(&[0x04, 0x22, 0x4d, 0x18]) {
            Some(1)
        } else if starts(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Some(2)
        } else if head.len() >= 2
            && head[0] == 0x78
            && (u16::from(head[0]) << 8 | u16::from(head[1])) % 31 == 0
        {
            Some(3)
        } else if starts(&[0x1f, 0x8b]) {
            Some(4)
        } else if starts(b"BZh") {
            Some(5)
        } else if starts(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
            Some(6)
        } else if starts(&[0x5d, 0x00, 0x00]) {
            Some(7)
        } else {
            None
        }
    }

    /// A reader that decompresses what `r` gives, for the codec `tag`.
    pub(crate) fn decoder<'r, R: Read + 'r>(tag: u8, r: R) -> io::Result<Box<dyn Read + 'r>> {
        Ok(match tag {
            0 => Box::new(r),
            1 => Box::new(lz4_flex::frame::FrameDecoder::new(r)),
            2 => Box::new(zstd::stream::read::Decoder::new(r)?),
            3 => Box::new(flate2::read::ZlibDecoder::new(r)),
            4 => Box::new(flate2::read::MultiGzDecoder::new(r)),
            5 => Box::new(bzip2::read::BzDecoder::new(r)),
            6 => {
                let stream = liblzma::stream::Stream::new_stream_decoder(
                    LZMA_MEMLIMIT,
                    liblzma::stream::CONCATENATED,
                )
                .map_err(io::Error::other)?;
                Box::new(liblzma::read::XzDecoder::new_stream(r, stream))
            }
            7 => {
                let stream = liblzma::stream::Stream::new_lzma_decoder(LZMA_MEMLIMIT)
                    .map_err(io::Error::other)?;
                Box::new(liblzma::read::XzDecoder::new_stream(r, stream))
            }
            other => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("unknown codec {other}"),
                ))
            }
        })
    }

    /// A reader that decompresses `bytes`, already in memory: the decoders
    /// read the slice directly instead of through a buffer of their own.
    pub(crate) fn slice_decoder(tag: u8, bytes: &[u8]) -> io::Result<Box<dyn Read + '_>> {
        Ok(match tag {
            2 => Box::new(zstd::stream::read::Decoder::with_buffer(bytes)?),
            3 => Box::new(flate2::bufread::ZlibDecoder::new(bytes)),
            4 => Box::new(flate2::bufread::MultiGzDecoder::new(bytes)),
            5 => Box::new(bzip2::bufread::BzDecoder::new(bytes)),
            _ => Self::decoder(tag, bytes)?,
        })
    }

    /// Compresses a buffer whole.
    pub(crate) fn compress(self, bytes: &[u8]) -> io::Result<Vec<u8>> {
        let mut encoder = self.encoder(Vec::new())?;
        encoder.write_all(bytes)?;
        encoder.finish()
    }

    /// Decompresses a buffer whole. The output grows only as data comes
    /// out of the decoder.
    #[cfg(test)]
    pub(crate) fn decompress(tag: u8, bytes: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        Self::decoder(tag, bytes)?.read_to_end(&mut out)?;
        Ok(out)
    }
}

/// A compressing writer.
pub enum Encoder<W: Write> {
    /// No compression.
    None(W),
    /// zlib.
    Zlib(flate2::write::ZlibEncoder<W>),
    /// gzip.
    Gzip(flate2::write::GzEncoder<W>),
    /// bzip2.
    Bz2(bzip2::write::BzEncoder<W>),
    /// xz or legacy lzma.
    Xz(liblzma::write::XzEncoder<W>),
    /// LZ4 frames.
    Lz4(lz4_flex::frame::FrameEncoder<W>),
    /// Zstandard.
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> Encoder<W> {
    fn inner(&mut self) -> &mut dyn Write {
        match self {
            Encoder::None(w) => w,
            Encoder::Zlib(e) => e,
            Encoder::Gzip(e) => e,
            Encoder::Bz2(e) => e,
            Encoder::Xz(e) => e,
            Encoder::Lz4(e) => e,
            Encoder::Zstd(e) => e,
        }
    }

    /// Writes the codec's trailer and gives the writer back.
    pub fn finish(self) -> io::Result<W> {
        match self {
            Encoder::None(w) => Ok(w),
            Encoder::Zlib(e) => e.finish(),
            Encoder::Gzip(e) => e.finish(),
            Encoder::Bz2(e) => e.finish(),
            Encoder::Xz(e) => e.finish(),
            Encoder::Lz4(e) => e.finish().map_err(io::Error::other),
            Encoder::Zstd(e) => e.finish(),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner().write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.inner().write_all(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner().flush()
    }
}

/// joblib's spellings, the same the `#[memoize(compress = ..)]` attribute
/// takes: `"zstd:3"`, `"gzip:3"`, `"lz4"` or `"lz4:3"`, `"none"`, a codec without a
/// level (level 3), or a number (`"0"` none, `"1"` to `"9"` zlib).
///
/// ```
/// use parjob_runtime::Compression;
/// assert_eq!("gzip:6".parse::<Compression>().unwrap(), Compression::Gzip(6));
/// assert_eq!("3".parse::<Compression>().unwrap(), Compression::Zlib(3));
/// assert!("zstd:40".parse::<Compression>().is_err());
/// ```
impl std::str::FromStr for Compression {
    type Err = crate::Error;

    fn from_str(s: &str) -> crate::Result<Self> {
        use parjob_syntax::CodecSpec;
        let spec = match s.trim().parse::<i64>() {
            Ok(level) => parjob_syntax::compress_level(level),
            Err(_) => parjob_syntax::compress(s),
        };
        Ok(match spec {
            Some(CodecSpec::None) => Compression::None,
            Some(CodecSpec::Zlib(l)) => Compression::Zlib(l),
            Some(CodecSpec::Gzip(l)) => Compression::Gzip(l),
            Some(CodecSpec::Bz2(l)) => Compression::Bz2(l),
            Some(CodecSpec::Xz(l)) => Compression::Xz(l),
            Some(CodecSpec::Lzma(l)) => Compression::Lzma(l),
            Some(CodecSpec::Lz4(l)) => Compression::Lz4(l),
            Some(CodecSpec::Zstd(l)) => Compression::Zstd(l),
            None => {
                return Err(crate::Error::Config(format!(
                    "compress = {s:?}: expected a codec ({}) with an optional level, e.g. \"zstd:3\", or a number 0 to 9",
                    parjob_syntax::CODECS.join(", ")
                )))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every codec that compresses, at level 3.
    const EVERY_CODEC: [Compression; 7] = [
        Compression::Zlib(3),
        Compression::Gzip(3),
        Compression::Bz2(3),
        Compression::Xz(3),
        Compression::Lzma(3),
        Compression::Lz4(3),
        Compression::Zstd(3),
    ];

    #[test]
    fn every_codec_round_trips_and_compresses() {
        let data: Vec<u8> = (0..200_000u32)
            .flat_map(|i| ((i % 1000) as f64).to_le_bytes())
            .collect();
        for c in std::iter::once(Compression::None).chain(EVERY_CODEC) {
            let packed = c.compress(&data).unwrap();
            if c != Compression::None {
                assert!(packed.len() * 10 < data.len(), "{c:?}: {}", packed.len());
            }
            assert_eq!(
                Compression::decompress(c.tag(), &packed).unwrap(),
                data,
                "{c:?}"
            );
        }
    }

    /// joblib's `test_compress_level_error` and its lz4 levels: a level
    /// out of the codec's range is an error, from the spelling and from
    /// the value alike, and never reaches a file.
    #[test]
    fn a_level_out_of_range_is_an_error_and_lz4_takes_one() {
        for bad in [
            Compression::Zlib(10),
            Compression::Gzip(10),
            Compression::Bz2(0),
            Compression::Xz(10),
            Compression::Lzma(42),
            Compression::Lz4(17),
            Compression::Zstd(0),
            Compression::Zstd(23),
        ] {
            assert!(bad.check().is_err(), "{bad:?}");
            let e = bad.compress(b"data").unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{bad:?}");
        }
        for spelled in ["zlib:10", "lz4:17", "zstd:0", "bz2:0"] {
            assert!(spelled.parse::<Compression>().is_err(), "{spelled}");
        }
        assert_eq!("lz4:3".parse::<Compression>().unwrap(), Compression::Lz4(3));
        assert_eq!("lz4".parse::<Compression>().unwrap(), Compression::Lz4(3));
        let data = vec![7u8; 10_000];
        let packed = Compression::Lz4(9).compress(&data).unwrap();
        assert_eq!(Compression::decompress(1, &packed).unwrap(), data);
    }

    #[test]
    fn every_codec_is_recognised_by_its_magic_bytes() {
        for c in EVERY_CODEC {
            let packed = c.compress(b"PJDUMP and more").unwrap();
            assert_eq!(Compression::sniff(&packed), Some(c.tag()), "{c:?}");
        }
        assert_eq!(Compression::sniff(b"PJDUMP\x01\x00"), None);
        assert_eq!(Compression::sniff(b""), None);
    }

    #[test]
    fn extensions_pick_codecs() {
        assert_eq!(
            Compression::from_extension(Path::new("a.gz")),
            Compression::Gzip(3)
        );
        assert_eq!(
            Compression::from_extension(Path::new("a.zst")),
            Compression::Zstd(3)
        );
        assert_eq!(
            Compression::from_extension(Path::new("a.pkl")),
            Compression::None
        );
    }
}
