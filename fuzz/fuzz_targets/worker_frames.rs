//! Frames on the worker pipes, of arbitrary bytes, read as each side reads
//! them: the worker's loop (`Run` batches and their arguments) and the
//! parent's reader thread (results decoded from the stream, and every
//! other frame). Either must end in a value or an error, never a panic, a
//! hang or an allocation the bytes do not back.
//!
//! `cargo +nightly fuzz run worker_frames -- -max_total_time=600 -rss_limit_mb=2048`

#![no_main]

use libfuzzer_sys::fuzz_target;
use parjob_runtime::__private::wire::{self as codec, CodecError};
use parjob_runtime::__private::wire::{self as ipc, Incoming, ToWorker};

fuzz_target!(|data: &[u8]| {
    // The worker's side.
    let mut r = data;
    while let Ok(Some(frame)) = ipc::read_frame(&mut r) {
        if let Ok(ToWorker::Run { args, .. }) = ipc::decode_message::<ToWorker>(&frame) {
            for arg in args {
                let _ = codec::decode::<(u64, String, Vec<f64>)>(&arg.0);
                let _ = codec::decode::<(Vec<u8>, Option<i32>)>(&arg.0);
            }
        }
    }
    // The parent's side.
    let mut r = data;
    loop {
        let read = ipc::read_incoming(&mut r, |_, body| -> Result<_, CodecError> {
            codec::decode_from_reader::<(String, Vec<u32>)>(body)
        });
        match read {
            Ok(Some(Incoming::Other(payload))) => {
                let _ = ipc::parses_from_worker(&payload);
            }
            Ok(Some(Incoming::Value { .. })) => {}
            Ok(None) | Err(_) => break,
        }
    }
});
