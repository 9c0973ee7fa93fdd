//! Whole containers in memory: what a cache entry is. A dump streams its
//! container to and from files (`dump.rs`, `load.rs`); a cache entry is
//! small enough to build and check in memory, with the same header, the
//! same checksums and the same codecs (`format.rs` has the layout).

use super::format::{trailer, Header, HEADER, TRAILER};
use super::PersistError;
use crate::compress::Compression;
use std::io::{self, Read};
use xxhash_rust::xxh3::xxh3_64;

/// A container of `kind` holding `payload`, compressed with `compression`;
/// `header` gives the other fields (the type fingerprint, a cache entry's
/// times). The lengths and checksums are filled in here.
pub(crate) fn pack(
    header: Header,
    compression: Compression,
    payload: &[u8],
) -> io::Result<Vec<u8>> {
    let stored = compression.compress(payload)?;
    let header = Header {
        codec: compression.tag(),
        payload_len: payload.len() as u64,
        checksum: xxh3_64(payload),
        ..header
    };
    let mut out = Vec::with_capacity(HEADER + stored.len() + TRAILER);
    out.extend_from_slice(&header.encode());
    out.extend_from_slice(&stored);
    out.extend_from_slice(&trailer(&header, xxh3_64(&stored)).to_le_bytes());
    Ok(out)
}

/// Checks a container of `kind` and returns its header and payload. The
/// trailer is checked before anything is decompressed, decompression
/// stops at the recorded length (and at `max_bytes`), buffers grow
/// fallibly as bytes arrive, and the payload's own checksum is checked
/// last.
pub(crate) fn unpack(
    bytes: &[u8],
    kind: u8,
    max_bytes: u64,
) -> Result<(Header, Vec<u8>), PersistError> {
    let header = Header::decode(bytes)?;
    if header.kind != kind {
        return Err(PersistError::Corrupt(format!(
            "a container of kind {}, where {kind} was expected",
            header.kind
        )));
    }
    if header.payload_len > max_bytes {
        return Err(PersistError::TooLarge {
            bytes: header.payload_len,
            limit: max_bytes,
        });
    }
    let Some(stored_end) = bytes
        .len()
        .checked_sub(TRAILER)
        .filter(|end| *end >= HEADER)
    else {
        return Err(PersistError::Truncated {
            expected: (HEADER + TRAILER) as u64,
            found: bytes.len() as u64,
        });
    };
    let (stored, end) = (&bytes[HEADER..stored_end], &bytes[stored_end..]);
    if trailer(&header, xxh3_64(stored)) != u64::from_le_bytes(end.try_into().expect("8 bytes")) {
        return Err(PersistError::Corrupt(
            "the header or the stored bytes do not match the trailer".into(),
        ));
    }
    let payload = decompress(&header, stored)?;
    if xxh3_64(&payload) != header.checksum {
        return Err(PersistError::Corrupt(
            "the payload's checksum does not match".into(),
        ));
    }
    Ok((header, payload))
}

/// Exactly `header.payload_len` bytes out of `stored`, allocated fallibly.
fn decompress(header: &Header, stored: &[u8]) -> Result<Vec<u8>, PersistError> {
    let want = header.payload_len;
    if header.codec == Compression::None.tag() {
        // Stored as it is (a small cache entry's usual case): one copy.
        if stored.len() as u64 != want {
            return Err(PersistError::Corrupt(format!(
                "{} stored bytes where the header records {want}",
                stored.len()
            )));
        }
        return Ok(stored.to_vec());
    }
    // The first buffer is what the stored bytes can plausibly expand to;
    // past it the buffer grows only as decompressed bytes arrive, so a
    // recorded length that the stored bytes do not back allocates nothing.
    let plausible = (stored.len() as u64).saturating_mul(64).max(1 << 20);
    let first = want.min(plausible) as usize;
    let mut payload = Vec::new();
    payload
        .try_reserve_exact(first)
        .map_err(|_| PersistError::OutOfMemory {
            bytes: first as u64,
        })?;
    let mut decoder = Compression::slice_decoder(header.codec, stored)?;
    // One byte more than recorded, to see a stream that runs long.
    (&mut decoder)
        .take(want.saturating_add(1))
        .read_to_end(&mut payload)
        .map_err(|e| match e.kind() {
            io::ErrorKind::OutOfMemory => PersistError::OutOfMemory { bytes: want },
            _ => PersistError::Corrupt(format!("cannot decompress: {e}")),
        })?;
    if payload.len() as u64 != want {
        return Err(PersistError::Corrupt(format!(
            "decompressed to {}{} bytes where the header records {want}",
            payload.len(),
            if payload.len() as u64 > want { "+" } else { "" }
        )));
    }
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::super::format::{KIND_CACHE_ENTRY, KIND_DUMP};
    use super::*;

    fn entry(compression: Compression) -> Vec<u8> {
        let header = Header {
            kind: KIND_CACHE_ENTRY,
            created_ns: 7,
            compute_ns: 9,
            ..Header::default()
        };
        pack(header, compression, &[42u8; 5000]).unwrap()
    }

    #[test]
    fn a_packed_container_unpacks_with_its_times_in_every_codec() {
        for compression in [Compression::None, Compression::Lz4(3), Compression::Zstd(3)] {
            let (header, payload) = unpack(&entry(compression), KIND_CACHE_ENTRY, 1 << 20).unwrap();
            assert_eq!((header.created_ns, header.compute_ns), (7, 9));
            assert_eq!(payload, vec![42u8; 5000]);
        }
    }

    #[test]
    fn every_flipped_byte_and_every_cut_is_an_error() {
        let bytes = entry(Compression::Zstd(3));
        for at in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[at] ^= 0x10;
            assert!(
                unpack(&bad, KIND_CACHE_ENTRY, 1 << 20).is_err(),
                "flip at {at}"
            );
        }
        for len in 0..bytes.len() {
            assert!(
                unpack(&bytes[..len], KIND_CACHE_ENTRY, 1 << 20).is_err(),
                "cut at {len}"
            );
        }
    }

    #[test]
    fn the_wrong_kind_and_a_payload_over_the_limit_are_refused() {
        let bytes = entry(Compression::None);
        assert!(unpack(&bytes, KIND_DUMP, 1 << 20).is_err());
        assert!(matches!(
            unpack(&bytes, KIND_CACHE_ENTRY, 100),
            Err(PersistError::TooLarge {
                bytes: 5000,
                limit: 100
            })
        ));
    }
}
