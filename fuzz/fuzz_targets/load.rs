//! `load` of arbitrary bytes, as several types: it must return `Ok` or a
//! typed `Err`, never panic, hang or allocate without bound.
//!
//! `cargo +nightly fuzz run load -- -max_total_time=600 -rss_limit_mb=1024`

#![no_main]

use libfuzzer_sys::fuzz_target;
use parjob_runtime::__private::persist_format::{fingerprint, trailer, Header};
use parjob_runtime::persist::{load_from, load_unchecked};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

#[derive(Serialize, Deserialize, Debug)]
struct Sample {
    name: String,
    tags: HashMap<String, Vec<u32>>,
    values: Vec<f64>,
    nested: Vec<Vec<i16>>,
    kind: Kind,
    next: Option<Box<Sample>>,
}

#[derive(Serialize, Deserialize, Debug)]
enum Kind {
    Empty,
    Scalar(f32),
    Pair(u8, char),
    Named { id: u64, label: String },
}

/// `payload` wrapped in a valid header and trailer for `T`, so that the
/// checksums pass and the payload decoder sees the fuzzer's bytes.
fn framed<T: ?Sized>(payload: &[u8], codec: u8) -> Vec<u8> {
    let stored_hash = xxhash_rust::xxh3::xxh3_64(payload);
    let header = Header {
        codec,
        fingerprint: fingerprint::<T>(),
        // A compressed payload's own length and checksum are not checked
        // once the trailer matches: any claim will do.
        payload_len: if codec == 0 {
            payload.len() as u64
        } else {
            payload.len() as u64 * 4
        },
        checksum: stored_hash,
        ..Header::default()
    };
    let mut out = header.encode().to_vec();
    out.extend_from_slice(payload);
    out.extend_from_slice(&trailer(&header, stored_hash).to_le_bytes());
    out
}

fuzz_target!(|data: &[u8]| {
    // The payload decoder, past the checksums.
    let _ = load_from::<Sample, _>(&framed::<Sample>(data, 0)[..]);
    let _ = load_from::<Vec<f64>, _>(&framed::<Vec<f64>>(data, 0)[..]);
    let _ = load_from::<Vec<String>, _>(&framed::<Vec<String>>(data, 0)[..]);
    let _ = load_from::<HashMap<u32, Vec<u8>>, _>(&framed::<HashMap<u32, Vec<u8>>>(data, 0)[..]);
    let _ = load_from::<(bool, Option<i128>, Vec<()>), _>(
        &framed::<(bool, Option<i128>, Vec<()>)>(data, 0)[..],
    );
    // The decompressors, past the trailer: a "compressed" payload of
    // arbitrary bytes for each codec.
    for codec in 1..=7u8 {
        let _ = load_from::<Sample, _>(&framed::<Sample>(data, codec)[..]);
        let _ = load_from::<Vec<f64>, _>(&framed::<Vec<f64>>(data, codec)[..]);
    }
    // Whole files, as they come.
    let _ = load_from::<Vec<f64>, _>(data);
    let _ = load_from::<Sample, _>(data);
    let _ = load_from::<Vec<String>, _>(data);
    let _ = load_from::<HashMap<u32, Vec<u8>>, _>(data);
    let _ = load_from::<(bool, Option<i128>, Vec<()>), _>(data);
    // Past the type check too: the payload decoder on every input.
    let dir = std::env::temp_dir().join(format!("parjob-fuzz-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("input");
    if std::fs::write(&path, data).is_ok() {
        let _ = load_unchecked::<Sample>(&path);
        let _ = load_unchecked::<Vec<u16>>(&path);
        // SAFETY: the target's own file, unchanged while mapped.
        let _ = unsafe { parjob_runtime::persist::load_mmap::<f64>(&path) }
            .map(|m| m.iter().sum::<f64>());
    }
});
