//! joblib's persistence cases: a compressed dump asked for as a memory map
//! (`test_compress_mmap_mode_warning`), and a dump written through a
//! compressing file object (`test_file_handle_persistence`).

use flate2::write::GzEncoder;
use parjob::{dump, dump_with, load, load_from, load_mmap, Compression};
use std::sync::Mutex;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

mod common;

/// Records the messages of WARN events.
struct Warnings(Mutex<Vec<String>>);

struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

impl Subscriber for &'static Warnings {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        *metadata.level() <= Level::WARN
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut message = Message(String::new());
        event.record(&mut message);
        self.0.lock().unwrap().push(message.0);
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

#[test]
fn mapping_a_compressed_dump_loads_it_and_warns_once() {
    static SEEN: Warnings = Warnings(Mutex::new(Vec::new()));
    let dir = common::scratch("persist_peers", "mmap");
    let values: Vec<f64> = (0..10_000).map(f64::from).collect();
    let packed = dir.join("values.pj.gz");
    dump(&values, &packed).unwrap();
    let loaded = tracing::subscriber::with_default(&SEEN, || {
        // SAFETY: only this test writes the file, and not while it is read.
        unsafe { load_mmap::<f64>(&packed) }.unwrap()
    });
    assert_eq!(&*loaded, values.as_slice());
    assert!(!loaded.is_mapped(), "a compressed dump cannot be mapped");
    let warnings = SEEN.0.lock().unwrap().clone();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("compressed"), "{warnings:?}");
    // Uncompressed, it is mapped and nothing is said.
    let plain = dir.join("values.pj");
    dump(&values, &plain).unwrap();
    let mapped = tracing::subscriber::with_default(&SEEN, || {
        // SAFETY: as above.
        unsafe { load_mmap::<f64>(&plain) }.unwrap()
    });
    assert!(mapped.is_mapped());
    assert_eq!(SEEN.0.lock().unwrap().len(), 1);
    // The wrong element type is still refused.
    // SAFETY: as above.
    assert!(unsafe { load_mmap::<u8>(&packed) }.is_err());
}

#[test]
fn a_dump_written_through_a_gzip_file_object_loads_from_a_reader() {
    let dir = common::scratch("persist_peers", "handles");
    let values: Vec<u32> = (0..5_000).collect();
    let path = dir.join("through-gzip");
    let file = std::fs::File::create(&path).unwrap();
    let mut encoder = GzEncoder::new(file, flate2::Compression::new(3));
    dump_with(&values, &mut encoder, Compression::None).unwrap();
    encoder.finish().unwrap();
    let back: Vec<u32> = load_from(std::fs::File::open(&path).unwrap()).unwrap();
    assert_eq!(back, values);
    assert_eq!(load::<Vec<u32>>(&path).unwrap(), values, "by path too");
    // A zlib file object too.
    let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(6));
    dump_with(&values, &mut zlib, Compression::None).unwrap();
    let wrapped = zlib.finish().unwrap();
    assert_eq!(load_from::<Vec<u32>, _>(&wrapped[..]).unwrap(), values);
    // Not a dump inside: still "not a dump".
    let mut junk = GzEncoder::new(Vec::new(), flate2::Compression::new(3));
    std::io::Write::write_all(&mut junk, b"hello, not a dump").unwrap();
    let junk = junk.finish().unwrap();
    assert!(load_from::<Vec<u32>, _>(&junk[..]).is_err());
}
