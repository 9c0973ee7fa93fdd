//! `#[memoize]` cache entries (`PJMEMO` files) of arbitrary bytes: reading
//! one must give a value or a reason it is unusable, never panic, hang or
//! allocate without bound.
//!
//! `cargo +nightly fuzz run memo_entry -- -max_total_time=600 -rss_limit_mb=2048`

#![no_main]

use libfuzzer_sys::fuzz_target;
use parjob_runtime::__private::wire as codec;
use parjob_runtime::__private::memo::store;
use sha2::{Digest, Sha256};

/// A header with a valid checksum around the fuzzer's payload, so the
/// decompressors and the length checks see arbitrary bytes.
fn entry(codec_tag: u8, payload: &[u8], value_len: u64) -> Vec<u8> {
    let mut out = b"PJMEMO".to_vec();
    out.push(2);
    out.push(codec_tag);
    out.extend_from_slice(&1u64.to_le_bytes());
    out.extend_from_slice(&2u64.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    let mut h = Sha256::new();
    h.update(&out);
    h.update(payload);
    out.extend_from_slice(&h.finalize());
    out.extend_from_slice(&value_len.to_le_bytes());
    out.extend_from_slice(payload);
    out
}

fuzz_target!(|data: &[u8]| {
    // Whole entries as they come.
    if let Ok(e) = store::parse(data) {
        let _ = codec::decode::<Vec<String>>(&e.value);
    }
    // Past the checksum, for each codec (none, lz4, zstd), with the value
    // length the input's first bytes claim.
    let claimed = data
        .get(..8)
        .map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap()));
    for tag in 0..=2u8 {
        for value_len in [claimed, data.len() as u64, (data.len() as u64) << 4] {
            if let Ok(e) = store::parse(&entry(tag, data, value_len)) {
                let _ = codec::decode::<(u64, String, Vec<f64>)>(&e.value);
                let _ = codec::decode::<Vec<Option<u32>>>(&e.value);
            }
        }
    }
});
