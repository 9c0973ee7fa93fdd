//! `dump` / `load` on real files: every codec, detection by content, every
//! kind of damage, memory bounds on hostile headers, memory maps, and a
//! full disk that must leave the previous file intact.

mod common;

use parjob::{
    dump, dump_with, load, load_from, load_mmap, load_unchecked, Compression, PersistError,
};
use serde::{Deserialize, Serialize};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// Counts live heap bytes and their peak, per thread, for the
/// allocation-bound tests: a load runs on its caller's thread, and other
/// tests' threads, running at the same time, do not count.
struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn count(delta: isize) {
    let _ = LIVE.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

// SAFETY: forwards to the system allocator; only counts, in const-initialised
// thread-locals that never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            count(layout.size() as isize);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            count(layout.size() as isize);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-(layout.size() as isize));
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Heap growth on this thread while `f` runs.
fn peak_growth<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    let out = f();
    let peak = PEAK.with(Cell::get);
    (out, (peak - base).max(0) as usize)
}

fn scratch(name: &str) -> PathBuf {
    common::scratch("persist", name)
}

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
struct Model {
    name: String,
    labels: HashMap<String, u32>,
    ordered: BTreeMap<i64, Vec<String>>,
    nested: Vec<Vec<f32>>,
    weights: Vec<f64>,
    bias: Option<f64>,
    kind: Kind,
}

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
enum Kind {
    Linear,
    Forest { trees: u16, depth: u8 },
    Custom(String),
}

fn model() -> Model {
    Model {
        name: "ridge é ✓".into(),
        labels: (0..50).map(|i| (format!("label{i}"), i)).collect(),
        ordered: (-5..5)
            .map(|i| (i, vec![format!("{i}"); (i + 5) as usize]))
            .collect(),
        nested: (0..20)
            .map(|i| (0..i).map(|j| j as f32 * 0.5).collect())
            .collect(),
        weights: (0..300_000).map(|i| (i % 1000) as f64 * 0.25).collect(),
        bias: Some(-1.5),
        kind: Kind::Forest {
            trees: 100,
            depth: 7,
        },
    }
}

const CODECS: [Compression; 8] = [
    Compression::None,
    Compression::Zlib(3),
    Compression::Gzip(3),
    Compression::Bz2(3),
    Compression::Xz(3),
    Compression::Lzma(3),
    Compression::Lz4(3),
    Compression::Zstd(3),
];

#[test]
fn a_model_round_trips_with_every_codec_and_is_detected_by_content() {
    let dir = scratch("codecs");
    let original = model();
    let mut sizes = vec![];
    for (i, codec) in CODECS.into_iter().enumerate() {
        let path = dir.join(format!("model{i}"));
        dump_with(&original, &path, codec).unwrap();
        // Renamed, with a misleading extension: the header says the codec.
        let renamed = dir.join(format!("model{i}.gz.txt"));
        std::fs::rename(&path, &renamed).unwrap();
        let back: Model = load(&renamed).unwrap();
        assert_eq!(back, original, "{codec:?}");
        sizes.push(std::fs::metadata(&renamed).unwrap().len());
    }
    // Everything compressed beats the raw size by far on this data.
    assert!(sizes[1..].iter().all(|s| *s * 5 < sizes[0]), "{sizes:?}");
}

#[test]
fn the_extension_picks_the_codec() {
    let dir = scratch("extensions");
    let data: Vec<f64> = (0..100_000).map(|i| (i % 1000) as f64).collect();
    for (ext, tag) in [
        ("z", 3u8),
        ("gz", 4),
        ("bz2", 5),
        ("xz", 6),
        ("lzma", 7),
        ("lz4", 1),
        ("zst", 2),
        ("pkl", 0),
    ] {
        let path = dir.join(format!("data.{ext}"));
        dump(&data, &path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes[8], tag, ".{ext}");
        assert_eq!(load::<Vec<f64>>(&path).unwrap(), data, ".{ext}");
    }
}

#[test]
fn writers_and_readers_work_like_files() {
    let original = model();
    let mut buffer: Vec<u8> = Vec::new();
    dump_with(&original, &mut buffer, Compression::Zstd(1)).unwrap();
    let back: Model = load_from(&buffer[..]).unwrap();
    assert_eq!(back, original);
    let words = vec!["a".to_string(), "bb".into()];
    let mut buffer = Vec::new();
    dump_with(&words, &mut buffer, Compression::None).unwrap();
    assert_eq!(load_from::<Vec<String>, _>(&buffer[..]).unwrap(), words);
}

fn dumped(value: &impl Serialize, codec: Compression) -> Vec<u8> {
    let mut buffer = Vec::new();
    dump_with(value, &mut buffer, codec).unwrap();
    buffer
}

#[test]
fn every_truncation_and_every_flipped_byte_is_an_error() {
    let small = Model {
        weights: (0..40).map(f64::from).collect(),
        ..model()
    };
    for codec in [
        Compression::None,
        Compression::Zstd(3),
        Compression::Gzip(3),
    ] {
        let bytes = dumped(&small, codec);
        for cut in 0..bytes.len() {
            assert!(
                load_from::<Model, _>(&bytes[..cut]).is_err(),
                "{codec:?} cut at {cut}"
            );
        }
        for at in (0..bytes.len()).step_by(7) {
            let mut flipped = bytes.clone();
            flipped[at] ^= 0x08;
            assert!(
                load_from::<Model, _>(&flipped[..]).is_err(),
                "{codec:?} flip at {at}"
            );
        }
    }
    // The raw-array fast path too.
    let raw = dumped(&vec![1.5f64; 1000], Compression::None);
    for cut in [10, 63, 64, 70, 200, raw.len() - 1] {
        assert!(matches!(
            load_from::<Vec<f64>, _>(&raw[..cut]),
            Err(PersistError::Truncated { .. })
        ));
    }
    let mut flipped = raw.clone();
    flipped[500] ^= 1;
    assert!(matches!(
        load_from::<Vec<f64>, _>(&flipped[..]),
        Err(PersistError::Corrupt(_))
    ));
}

#[test]
fn typed_errors_for_wrong_type_unknown_codec_newer_version_and_garbage() {
    let bytes = dumped(&model(), Compression::None);
    assert!(matches!(
        load_from::<Vec<f64>, _>(&bytes[..]),
        Err(PersistError::WrongType { .. })
    ));
    let mut codec = bytes.clone();
    codec[8] = 99;
    assert!(matches!(
        load_from::<Model, _>(&codec[..]),
        Err(PersistError::UnknownCodec(99))
    ));
    let mut newer = bytes.clone();
    newer[6] = 9;
    let err = load_from::<Model, _>(&newer[..]).unwrap_err();
    assert!(matches!(
        err,
        PersistError::NewerVersion {
            found: 9,
            supported: 1
        }
    ));
    assert!(err.to_string().contains("upgrade parjob"));
    assert!(matches!(
        load_from::<Model, _>(
            &b"hello world, not a dump at all......................................"[..]
        ),
        Err(PersistError::NotADump)
    ));
    assert!(matches!(
        load_from::<Model, _>(&b""[..]),
        Err(PersistError::Truncated { .. })
    ));
}

#[test]
fn a_header_claiming_an_exabyte_allocates_nothing_of_the_sort() {
    for value in [
        dumped(&model(), Compression::None),
        dumped(&vec![0.5f64; 10_000], Compression::None),
    ] {
        for codec_tag in [0u8, 2] {
            let mut bytes = value.clone();
            bytes[8] = codec_tag;
            bytes[24..32].copy_from_slice(&(1u64 << 60).to_le_bytes());
            // The raw array's own length too.
            bytes[64..72].copy_from_slice(&(1u64 << 57).to_le_bytes());
            let (result, grew) = peak_growth(|| {
                (
                    load_from::<Model, _>(&bytes[..]).is_err(),
                    load_from::<Vec<f64>, _>(&bytes[..]).is_err(),
                    load_unchecked_bytes::<Vec<u8>>(&bytes),
                )
            });
            assert_eq!(result, (true, true, true));
            // Bounded by a few times the input, plus one read step, never 2^60.
            assert!(grew < 64 * 1024 * 1024, "grew {grew} bytes");
        }
    }
}

fn load_unchecked_file<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, PersistError> {
    let path = scratch("unchecked-file").join("file");
    std::fs::write(&path, bytes).unwrap();
    load_unchecked::<T>(&path)
}

fn load_unchecked_bytes<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> bool {
    let path = scratch("unchecked").join("file");
    std::fs::write(&path, bytes).unwrap();
    load_unchecked::<T>(&path).is_err()
}

#[test]
fn loading_allocates_about_what_the_value_needs() {
    let data: Vec<f64> = (0..2_000_000).map(f64::from).collect();
    let path = scratch("allocation").join("data.bin");
    dump(&data, &path).unwrap();
    // From a file, whose size backs the array: one buffer of 16 MB.
    let (back, grew) = peak_growth(|| load::<Vec<f64>>(&path).unwrap());
    assert_eq!(back, data);
    assert!(grew < 17_000_000, "grew {grew} bytes for 16 MB");
    // From a reader of unknown length: doubling as data arrives.
    let bytes = std::fs::read(&path).unwrap();
    let (back, grew) = peak_growth(|| load_from::<Vec<f64>, _>(&bytes[..]).unwrap());
    assert_eq!(back, data);
    assert!(grew < 34_000_000, "grew {grew} bytes for 16 MB");
}

/// Free bytes on the file system holding `dir`.
fn free_bytes(dir: &Path) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid path and a zeroed statvfs for the call to fill.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: the same valid path and the zeroed statvfs above, which the call fills.
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return u64::MAX;
    }
    stat.f_bavail as u64 * stat.f_frsize as u64
}

#[test]
#[ignore = "writes a 1 GiB file and needs 3 GiB of free disk; .ci/run runs it with --ignored"]
fn load_mmap_borrows_a_gigabyte_from_the_file() {
    let dir = scratch("mmap");
    assert!(
        free_bytes(&dir) >= 3 << 30,
        "this test needs 3 GiB free under {}",
        dir.display()
    );
    let path = dir.join("big.bin");
    let n = 1usize << 27; // 128 Mi f64 = 1 GiB
    let data: Vec<f64> = (0..n).map(|i| i as f64 * 0.5).collect();
    dump(&data, &path).unwrap();
    drop(data);
    assert!(std::fs::metadata(&path).unwrap().len() > 1 << 30);
    // SAFETY: this test's own file, which nothing writes while it is mapped.
    let (mapped, grew) = peak_growth(|| unsafe { load_mmap::<f64>(&path) }.unwrap());
    assert!(grew < 1 << 20, "mapping allocated {grew} bytes");
    assert_eq!(mapped.len(), n);
    for i in [0, 1, 12_345, n / 2, n - 1] {
        assert_eq!(mapped[i], i as f64 * 0.5);
    }
    assert_eq!(mapped.as_ptr() as usize % 64, 0);
    drop(mapped);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn load_mmap_refuses_what_it_cannot_read_as_its_array() {
    let dir = scratch("mmap-refusals");
    let compressed = dir.join("a.zst");
    dump(&vec![1.0f64; 100], &compressed).unwrap();
    // A compressed dump is loaded instead, as joblib does (with a warning,
    // tests/persist_peers.rs).
    // SAFETY: this test's own files, which nothing writes while they are mapped.
    let loaded = unsafe { load_mmap::<f64>(&compressed) }.unwrap();
    assert!(!loaded.is_mapped());
    assert_eq!(&*loaded, &[1.0f64; 100][..]);
    let structured = dir.join("model");
    dump(&model(), &structured).unwrap();
    assert!(matches!(
        // SAFETY: as above.
        unsafe { load_mmap::<f64>(&structured) },
        Err(PersistError::WrongType { .. })
    ));
    let floats = dir.join("floats");
    dump(&vec![1.0f32; 10], &floats).unwrap();
    assert!(matches!(
        // SAFETY: as above.
        unsafe { load_mmap::<f64>(&floats) },
        Err(PersistError::WrongType { .. })
    ));
    let small = dir.join("small");
    dump(&vec![7u16, 8, 9], &small).unwrap();
    // SAFETY: as above.
    assert_eq!(&*unsafe { load_mmap::<u16>(&small) }.unwrap(), &[7, 8, 9]);
    let truncated = dir.join("truncated");
    let bytes = std::fs::read(&small).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() - 1]).unwrap();
    // SAFETY: as above.
    assert!(unsafe { load_mmap::<u16>(&truncated) }.is_err());
}

/// A value whose `Serialize` fails partway.
struct FailsHalfway;

impl Serialize for FailsHalfway {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{Error, SerializeSeq};
        let mut seq = s.serialize_seq(Some(3))?;
        seq.serialize_element(&1u8)?;
        Err(S::Error::custom("refused halfway"))
    }
}

fn temp_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("parjob-tmp"))
        .collect()
}

#[test]
fn a_failed_dump_leaves_the_previous_file_intact() {
    let dir = scratch("failed");
    let path = dir.join("model.bin");
    dump(&model(), &path).unwrap();
    let before = std::fs::read(&path).unwrap();
    assert!(
        matches!(dump(&FailsHalfway, &path), Err(PersistError::Encode(m)) if m.contains("refused halfway"))
    );
    assert_eq!(std::fs::read(&path).unwrap(), before);
    assert!(temp_files(&dir).is_empty());
}

/// A small tmpfs, mounted for the test (needs root, as `.ci/run` has).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(name: &str, size: &str) -> Option<Tmpfs> {
        let dir = scratch(name);
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .stderr(std::process::Stdio::null())
            .status();
        match status {
            Ok(s) if s.success() => Some(Tmpfs(dir)),
            _ => None,
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
#[ignore = "mounts a 1 MB tmpfs, which needs root; .ci/run runs it with --ignored"]
fn a_full_disk_leaves_the_previous_file_intact() {
    let disk = Tmpfs::mount("full-disk", "1m").expect("mounting a tmpfs needs root");
    let path = disk.0.join("weights.bin");
    let previous: Vec<f64> = (0..10_000).map(f64::from).collect();
    dump(&previous, &path).unwrap();
    let before = std::fs::read(&path).unwrap();
    // 4 MB into a 1 MB file system.
    let big: Vec<f64> = (0..500_000).map(f64::from).collect();
    let err = dump(&big, &path).unwrap_err();
    match &err {
        PersistError::Io(e) => assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}"),
        other => panic!("expected ENOSPC, got {other}"),
    }
    assert_eq!(std::fs::read(&path).unwrap(), before);
    assert_eq!(load::<Vec<f64>>(&path).unwrap(), previous);
    assert!(temp_files(&disk.0).is_empty(), "{:?}", temp_files(&disk.0));
}

/// `payload` in a valid header and trailer, as the fuzz target builds it.
fn framed(payload: &[u8], codec: u8, fingerprint_of: &[u8]) -> Vec<u8> {
    use parjob::__private::persist_format::{trailer, Header};
    let template = Header::decode(fingerprint_of).unwrap();
    let stored_hash = xxhash_rust::xxh3::xxh3_64(payload);
    let header = Header {
        codec,
        fingerprint: template.fingerprint,
        payload_len: if codec == 0 {
            payload.len() as u64
        } else {
            payload.len() as u64 * 4
        },
        checksum: if codec == 0 { stored_hash } else { 0 },
        ..Header::default()
    };
    let mut file = header.encode().to_vec();
    file.extend_from_slice(payload);
    file.extend_from_slice(&trailer(&header, stored_hash).to_le_bytes());
    file
}

#[test]
fn what_the_fuzzer_found_fails_cleanly_and_within_memory() {
    // Inputs `cargo fuzz run load` found (fuzz/fuzz_targets/load.rs),
    // replayed the way the target feeds them.
    let model_header = dumped(&model(), Compression::None);
    let vec_header = dumped(&vec![0.5f64; 4], Compression::None);
    for entry in std::fs::read_dir("tests/fuzz-regressions").unwrap() {
        let input = std::fs::read(entry.unwrap().path()).unwrap();
        let (results, grew) = peak_growth(|| {
            let mut errors = 0;
            errors += usize::from(load_from::<Model, _>(&input[..]).is_err());
            errors +=
                usize::from(load_from::<Model, _>(&framed(&input, 0, &model_header)[..]).is_err());
            errors +=
                usize::from(load_from::<Vec<f64>, _>(&framed(&input, 0, &vec_header)[..]).is_err());
            for codec in 1..=7 {
                errors += usize::from(
                    load_from::<Model, _>(&framed(&input, codec, &model_header)[..]).is_err(),
                );
            }
            errors
        });
        assert_eq!(results, 10);
        assert!(grew < 256 << 20, "grew {grew} bytes");
        // liblzma allocates with C's malloc, which the counter does not
        // see: its dictionary size (here 0xabababab bytes, from the input)
        // must be refused by the decoder's memory limit, unless the load's
        // own limit refused the header's claimed size before decoding.
        let lzma = if input.starts_with(b"PJDUMP") {
            // A whole file from before the trailer existed: given one.
            use parjob::__private::persist_format::{trailer, Header};
            let header = Header::decode(&input).unwrap();
            let mut file = input.clone();
            let stored_hash = xxhash_rust::xxh3::xxh3_64(&input[64..]);
            file.extend_from_slice(&trailer(&header, stored_hash).to_le_bytes());
            load_unchecked_file::<Model>(&file)
        } else {
            load_from::<Model, _>(&framed(&input, 7, &model_header)[..])
        };
        let err = lzma.unwrap_err();
        assert!(
            matches!(err, PersistError::TooLarge { .. })
                || err.to_string().contains("memory limit"),
            "{err:?}"
        );
    }
}

#[cfg(feature = "ndarray")]
#[test]
fn ndarray_arrays_are_stored_raw_and_mapped_as_views() {
    use parjob::ndarray::{Array2, Ix2};
    let dir = scratch("ndarray");
    let array = Array2::from_shape_fn((1000, 300), |(i, j)| (i * 300 + j) as f64 * 0.25);
    let path = dir.join("array.bin");
    dump(&array, &path).unwrap();
    // The numbers are stored as a raw block, 64-byte aligned in the file.
    let bytes = std::fs::read(&path).unwrap();
    let first: Vec<u8> = [0.0f64, 0.25, 0.5, 0.75]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    let at = bytes.windows(first.len()).position(|w| w == first).unwrap();
    assert_eq!(at % 64, 0, "the block starts at {at}");
    assert!(bytes.len() < 300_000 * 8 + 1024, "{} bytes", bytes.len());
    let back: Array2<f64> = load(&path).unwrap();
    assert_eq!(back, array);
    for codec in [Compression::Zstd(3), Compression::Gzip(3)] {
        dump_with(&array, &path, codec).unwrap();
        assert_eq!(load::<Array2<f64>>(&path).unwrap(), array);
    }
    // An array's numbers dumped as a slice map back as a view.
    let flat = dir.join("flat.bin");
    dump(array.as_slice().unwrap(), &flat).unwrap();
    // SAFETY: this test's own file, which nothing writes while it is mapped.
    let mapped = unsafe { load_mmap::<f64>(&flat) }.unwrap();
    let view = mapped.view::<Ix2, _>((1000, 300)).unwrap();
    assert_eq!(view, array.view());
}

/// A sequence that starts with numbers and then changes type.
struct Mixed;

impl Serialize for Mixed {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(Some(40))?;
        for i in 0..39 {
            seq.serialize_element(&(i as f64))?;
        }
        seq.serialize_element("not a number")?;
        seq.end()
    }
}

#[test]
fn a_sequence_that_mixes_numbers_with_other_things_is_refused_not_garbled() {
    let mut buffer = Vec::new();
    let err = dump_with(&Mixed, &mut buffer, Compression::None).unwrap_err();
    assert!(
        matches!(&err, PersistError::Encode(m) if m.contains("holds something else")),
        "{err}"
    );
}
