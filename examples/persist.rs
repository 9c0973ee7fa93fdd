//! The joblib tutorials' `joblib.dump` / `joblib.load` examples: a mixed list saved and
//! loaded plainly, through a file object, and with each compressor; then a
//! 10,000,000-element array dumped and memory-mapped, its slices averaged on
//! two threads straight from the mapping.
//!
//! `cargo run --release --example persist`

use parjob::prelude::*;
use parjob::{dump, dump_with, load, load_from, load_mmap, Compression};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// What the seed's `to_persist` list holds: a list, `np.arange(10)`, and a
/// 5 x 5 frame of ones.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
enum Entry {
    List(Vec<i64>),
    Array(Vec<i64>),
    Frame(Vec<Vec<f64>>),
}

fn to_persist() -> Vec<(String, Entry)> {
    vec![
        ("a".into(), Entry::List(vec![1, 2, 3])),
        ("b".into(), Entry::Array((0..10).collect())),
        ("c".into(), Entry::Frame(vec![vec![1.0; 5]; 5])),
    ]
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let t = Instant::now();
    let out = f();
    (out, t.elapsed().as_secs_f64() * 1e3)
}

fn slow_mean(data: &[f64], start: usize, len: usize) -> f64 {
    std::thread::sleep(Duration::from_millis(10));
    data[start..start + len].iter().sum::<f64>() / len as f64
}

fn main() -> parjob::Result<()> {
    let dir = std::env::temp_dir().join(format!("parjob-persist-example-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(parjob::PersistError::from)?;
    let filename = dir.join("test.joblib");

    // dump / load, plain.
    let value = to_persist();
    dump(&value, &filename)?;
    let back: Vec<(String, Entry)> = load(&filename)?;
    assert_eq!(back, value);
    println!("load(test.joblib) = {back:?}");

    // Through file objects.
    let mut out = std::fs::File::create(&filename).map_err(parjob::PersistError::from)?;
    dump_with(&value, &mut out, Compression::None)?;
    let file = std::fs::File::open(&filename).map_err(parjob::PersistError::from)?;
    assert_eq!(load_from::<Vec<(String, Entry)>, _>(file)?, value);
    println!("through file objects: same value");

    // Compressed: by level, by method and level, by extension.
    for (name, path, codec) in [
        ("compress=1 (zlib)", filename.clone(), Compression::Zlib(1)),
        (
            "('gzip', 3)",
            dir.join("test.joblib.gz"),
            Compression::Gzip(3),
        ),
        (
            "('bz2', 5)",
            dir.join("test.joblib.bz2"),
            Compression::Bz2(5),
        ),
        (
            "('lzma', 3)",
            dir.join("test.joblib.lzma"),
            Compression::Lzma(3),
        ),
        ("('xz', 3)", dir.join("test.joblib.xz"), Compression::Xz(3)),
        (
            "('lz4', 3)",
            dir.join("test.joblib.lz4"),
            Compression::Lz4(3),
        ),
        (
            "('zstd', 3)",
            dir.join("test.joblib.zst"),
            Compression::Zstd(3),
        ),
    ] {
        dump_with(&value, &path, codec)?;
        let back: Vec<(String, Entry)> = load(&path)?;
        assert_eq!(back, value);
        let size = std::fs::metadata(&path)
            .map_err(parjob::PersistError::from)?
            .len();
        println!("dump {name}: {size} bytes, loads back equal");
    }

    // A large array: dumped, memory-mapped, averaged from the mapping.
    let mut state = 7u64;
    let data: Vec<f64> = (0..10_000_000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64
        })
        .collect();
    let window = 500_000;
    let starts: Vec<usize> = (0..data.len() - window).step_by(100_000).collect();

    let (in_memory, t_memory) =
        timed(|| parallel_for!(n_jobs = 2; for &s in &starts { slow_mean(&data, s, window) }));
    let memmap = dir.join("data_memmap.joblib");
    let ((), t_dump) = timed(|| dump(&data, &memmap).expect("dump"));
    let (mapped, t_map) = timed(|| {
        // SAFETY: this example wrote the file, and nothing changes it while mapped.
        unsafe { load_mmap::<f64>(&memmap) }.expect("load_mmap")
    });
    let (from_map, t_from_map) =
        timed(|| parallel_for!(n_jobs = 2; for &s in &starts { slow_mean(&mapped, s, window) }));
    assert_eq!(in_memory, from_map);
    let (compressed, t_zlib) = timed(|| {
        let path = dir.join("data.z");
        dump(&data, &path).expect("dump");
        std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0)
    });
    println!(
        "{} slice means on 2 threads: {t_memory:.0} ms from memory, {t_from_map:.0} ms from the mapping \
         (joblib: 1.00 s; sequential 1.49 s)",
        starts.len()
    );
    println!(
        "80 MB array: dump {t_dump:.0} ms, load_mmap {t_map:.3} ms, zlib dump {t_zlib:.0} ms ({:.1} MB)",
        compressed as f64 / 1e6
    );
    drop(mapped);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
