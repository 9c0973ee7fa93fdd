//! `#[memoize]` cache entries (containers of kind "cache entry") of
//! arbitrary bytes: reading one must give a value or a reason it is
//! unusable, never panic, hang or allocate without bound.
//!
//! `cargo +nightly fuzz run memo_entry -- -max_total_time=600 -rss_limit_mb=2048`

#![no_main]

use libfuzzer_sys::fuzz_target;
use parjob_runtime::__private::memo::store;
use parjob_runtime::__private::persist_format::{
    codec_tag, trailer, Header, KIND_CACHE_ENTRY,
};
use parjob_runtime::__private::wire as codec;
use parjob_runtime::Compression;

/// A header and a valid trailer around the fuzzer's stored bytes, so the
/// decompressors and the length checks see arbitrary bytes.
fn entry(codec: u8, stored: &[u8], payload_len: u64) -> Vec<u8> {
    let header = Header {
        codec,
        kind: KIND_CACHE_ENTRY,
        payload_len,
        created_ns: 1,
        compute_ns: 2,
        ..Header::default()
    };
    let mut out = header.encode().to_vec();
    out.extend_from_slice(stored);
    let stored_hash = xxhash_rust::xxh3::xxh3_64(stored);
    out.extend_from_slice(&trailer(&header, stored_hash).to_le_bytes());
    out
}

fuzz_target!(|data: &[u8]| {
    // Whole entries as they come.
    if let Ok(e) = store::parse(data) {
        let _ = codec::decode::<Vec<String>>(&e.value);
    }
    // Past the trailer, for each codec the cache writes, with the payload
    // length the input's first bytes claim.
    let claimed = data
        .get(..8)
        .map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap()));
    for compression in [Compression::None, Compression::Lz4(3), Compression::Zstd(3)] {
        let tag = codec_tag(compression);
        for value_len in [claimed, data.len() as u64, (data.len() as u64) << 4] {
            if let Ok(e) = store::parse(&entry(tag, data, value_len)) {
                let _ = codec::decode::<(u64, String, Vec<f64>)>(&e.value);
                let _ = codec::decode::<Vec<Option<u32>>>(&e.value);
            }
        }
    }
});
