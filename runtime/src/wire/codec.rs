//! The wire codec: the only module that names bincode.
//!
//! Arguments, results and IPC messages are serde values encoded with
//! bincode 2's standard configuration. Decoding always runs with a size
//! limit, so a corrupt or hostile frame cannot make the decoder allocate
//! more than [`DECODE_LIMIT`] bytes (docs/decisions.md). Swapping
//! the codec means changing this file only.

use serde::{de::DeserializeOwned, Serialize};

/// The most bytes one decode may allocate for collections and strings.
pub(crate) const DECODE_LIMIT: usize = 1 << 30;

pub use crate::error::CodecError;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<DECODE_LIMIT>()
}

/// An encode error as a person reads it: a message that a value's own
/// `Serialize` gave (a shared-memory refusal, say) comes out as written,
/// not inside bincode's `OtherString("…")`.
fn encode_error(e: bincode::error::EncodeError) -> CodecError {
    use bincode::error::EncodeError;
    CodecError(match e {
        EncodeError::OtherString(message) => message,
        EncodeError::Other(message) => message.to_string(),
        EncodeError::Io { inner, index } => format!("writing failed after {index} bytes: {inner}"),
        other => other.to_string(),
    })
}

/// A decode error as a person reads it, as [`encode_error`].
fn decode_error(e: bincode::error::DecodeError) -> CodecError {
    use bincode::error::DecodeError;
    CodecError(match e {
        DecodeError::OtherString(message) => message,
        DecodeError::Other(message) => message.to_string(),
        DecodeError::Io { inner, additional } => {
            format!("reading failed {additional} bytes short: {inner}")
        }
        other => other.to_string(),
    })
}

/// Encodes `value` into a fresh buffer.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    bincode::serde::encode_to_vec(value, config()).map_err(encode_error)
}

/// How many bytes `value` encodes to, without keeping them.
pub(crate) fn encoded_len<T: Serialize + ?Sized>(value: &T) -> Result<usize, CodecError> {
    let mut count = Count(0);
    bincode::serde::encode_into_std_write(value, &mut count, config()).map_err(encode_error)
}

/// Encodes `value` straight into `w`, returning the bytes written.
pub(crate) fn encode_to_writer<T: Serialize + ?Sized>(
    value: &T,
    w: &mut dyn std::io::Write,
) -> Result<usize, CodecError> {
    // `&mut dyn Write` is itself a sized `Write`.
    let mut w = w;
    bincode::serde::encode_into_std_write(value, &mut w, config()).map_err(encode_error)
}

/// Appends `value`'s encoding to `out` (no buffer of its own).
pub(crate) fn encode_append<T: Serialize + ?Sized>(
    value: &T,
    out: &mut Vec<u8>,
) -> Result<(), CodecError> {
    bincode::serde::encode_into_std_write(value, out, config())
        .map(|_| ())
        .map_err(encode_error)
}

/// Decodes one `T` from the front of `bytes` and moves `bytes` past it,
/// with the same size limit.
pub(crate) fn decode_prefix<T: DeserializeOwned>(bytes: &mut &[u8]) -> Result<T, CodecError> {
    let (value, used) = bincode::serde::decode_from_slice(bytes, config()).map_err(decode_error)?;
    *bytes = &bytes[used..];
    Ok(value)
}

struct Count(usize);

impl std::io::Write for Count {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Decodes one `T` from a reader, with the same size limit. The caller
/// bounds the reader (with `Read::take`) and checks that nothing is left.
pub fn decode_from_reader<T: DeserializeOwned>(r: &mut dyn std::io::Read) -> Result<T, CodecError> {
    let mut r = r;
    bincode::serde::decode_from_std_read(&mut r, config()).map_err(decode_error)
}

/// Decodes a `T` that must fill `bytes` exactly: trailing bytes are an error,
/// because they mean the two sides disagree about the type.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (value, used) = bincode::serde::decode_from_slice(bytes, config()).map_err(decode_error)?;
    if used != bytes.len() {
        return Err(CodecError(format!(
            "{} trailing bytes after the value: the sender encoded another type",
            bytes.len() - used
        )));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_nested_values() {
        let v: (u64, String, Vec<Option<f64>>) = (7, "x".into(), vec![Some(1.5), None]);
        let bytes = encode(&v).unwrap();
        assert_eq!(
            decode::<(u64, String, Vec<Option<f64>>)>(&bytes).unwrap(),
            v
        );
    }

    #[test]
    fn the_size_pass_matches_the_encoding() {
        let v = (vec![1.5f64; 1000], "text".to_string(), Some(7u8));
        let mut out = Vec::new();
        let written = encode_to_writer(&v, &mut out).unwrap();
        assert_eq!(encoded_len(&v).unwrap(), written);
        assert_eq!(out, encode(&v).unwrap());
    }

    #[test]
    fn rejects_trailing_bytes_and_truncation() {
        let bytes = encode(&(1u32, 2u32)).unwrap();
        assert!(decode::<u32>(&bytes).unwrap_err().0.contains("trailing"));
        let s = encode(&"hello".to_string()).unwrap();
        assert!(decode::<String>(&s[..s.len() - 1]).is_err());
    }

    #[test]
    fn a_huge_claimed_length_is_refused_not_allocated() {
        // A varint length prefix claiming 2^60 elements.
        let mut bytes = vec![255u8];
        bytes.extend_from_slice(&(1u64 << 60).to_le_bytes());
        let err = decode::<Vec<u8>>(&bytes).unwrap_err();
        assert!(!err.0.is_empty());
    }
}
