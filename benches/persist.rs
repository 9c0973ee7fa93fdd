//! `dump` / `load` benchmarks, in one run, as ratios against this machine's
//! own limits (`std::fs::write` and `std::fs::read` of the same bytes).
//!
//! `cargo bench --bench persist`
//!
//! 1. Raw dump of an 800 MB `Vec<f64>` against `fs::write` (target >= 0.9x
//!    its throughput; joblib 1.97 s here).
//! 2. Raw load against `fs::read` plus a copy into a `Vec<f64>` (>= 0.8x).
//! 3. `load_mmap` of the same file (< 1 ms).
//! 4. A compressible 160 MB array (`i % 1000` as f64) with zlib level 3:
//!    dump <= 0.45 s, load <= 0.11 s, ratio >= 50 (joblib's figures here);
//!    lz4 and zstd on the same data for comparison.

use parjob::{dump, dump_with, load, load_mmap, Compression};
use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

fn best<T>(runs: usize, mut f: impl FnMut() -> T) -> (T, Duration) {
    let mut out = None;
    let mut best = Duration::MAX;
    for _ in 0..runs {
        let t = Instant::now();
        let value = f();
        best = best.min(t.elapsed());
        out = Some(value);
    }
    (out.expect("runs > 0"), best)
}

fn bytes_of(values: &[f64]) -> &[u8] {
    // SAFETY: f64 has no padding and every byte is initialized.
    unsafe {
        std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), std::mem::size_of_val(values))
    }
}

fn main() {
    let dir = Path::new("target/bench-persist");
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    println!("| case | parjob | baseline | ratio | target |");
    println!("|---|---|---|---|---|");

    // 1-3. 800 MB raw.
    let data: Vec<f64> = (0..100_000_000).map(|i| i as f64 * 0.5).collect();
    let raw_path = dir.join("raw.bin");
    let plain_path = dir.join("plain.bin");
    let runs = 3;
    // Each run writes a new file (the old one is removed untimed), so none
    // pays for truncating 800 MB of page cache.
    let fresh_write = |path: &Path, write: &dyn Fn()| {
        let mut best = Duration::MAX;
        for _ in 0..runs {
            let _ = std::fs::remove_file(path);
            let t = Instant::now();
            write();
            best = best.min(t.elapsed());
        }
        best
    };
    let d_write = fresh_write(&plain_path, &|| {
        std::fs::write(&plain_path, bytes_of(&data)).unwrap()
    });
    let d_chunked = fresh_write(&plain_path, &|| {
        let mut file = std::fs::File::create(&plain_path).unwrap();
        for chunk in bytes_of(&data).chunks(1 << 20) {
            std::io::Write::write_all(&mut file, chunk).unwrap();
        }
    });
    let d_dump = fresh_write(&raw_path, &|| dump(&data, &raw_path).unwrap());
    let mb = 800.0;
    println!(
        "| raw dump, 800 MB Vec<f64> | {:.3} s ({:.0} MB/s) | fs::write {:.3} s ({:.0} MB/s) | {:.2}x fs::write | >= 0.9x |",
        d_dump.as_secs_f64(),
        mb / d_dump.as_secs_f64(),
        d_write.as_secs_f64(),
        mb / d_write.as_secs_f64(),
        d_write.as_secs_f64() / d_dump.as_secs_f64()
    );
    println!(
        "| raw dump, 800 MB Vec<f64> | {:.3} s | the same bytes in 1 MB writes {:.3} s | {:.2}x | report |",
        d_dump.as_secs_f64(),
        d_chunked.as_secs_f64(),
        d_chunked.as_secs_f64() / d_dump.as_secs_f64()
    );
    let (copied, d_read) = best(runs, || {
        let bytes = std::fs::read(&plain_path).unwrap();
        let mut values = vec![0f64; bytes.len() / 8];
        // SAFETY: as in `bytes_of`, writable; any bytes are a valid f64.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                values.as_mut_ptr().cast::<u8>(),
                bytes.len(),
            );
        }
        values
    });
    assert_eq!(copied.len(), data.len());
    drop(copied);
    let (loaded, d_load) = best(runs, || load::<Vec<f64>>(&raw_path).unwrap());
    assert!(loaded == data);
    drop(loaded);
    println!(
        "| raw load, 800 MB Vec<f64> | {:.3} s | fs::read + memcpy {:.3} s | {:.2}x | >= 0.8x |",
        d_load.as_secs_f64(),
        d_read.as_secs_f64(),
        d_read.as_secs_f64() / d_load.as_secs_f64()
    );
    let (mapped, d_map) = best(10, || {
        // SAFETY: the bench wrote the file, and nothing changes it while mapped.
        unsafe { load_mmap::<f64>(&raw_path) }.unwrap()
    });
    assert_eq!(mapped[12_345_678], 12_345_678.0 * 0.5);
    drop(mapped);
    println!(
        "| load_mmap, 800 MB Vec<f64> | {:.3} ms | | | < 1 ms |",
        d_map.as_secs_f64() * 1e3
    );
    drop(data);
    let _ = std::fs::remove_file(&raw_path);
    let _ = std::fs::remove_file(&plain_path);

    // 4. 160 MB compressible.
    let data: Vec<f64> = (0..20_000_000).map(|i| (i % 1000) as f64).collect();
    for (name, codec, targets) in [
        (
            "zlib level 3",
            Compression::Zlib(3),
            "dump <= 0.45 s, load <= 0.11 s, ratio >= 50 (joblib)",
        ),
        ("lz4", Compression::Lz4(3), "report"),
        ("zstd level 3", Compression::Zstd(3), "report"),
    ] {
        let path = dir.join("compressed");
        let ((), d_dump) = best(3, || dump_with(&data, &path, codec).unwrap());
        let size = std::fs::metadata(&path).unwrap().len();
        let (back, d_load) = best(3, || load::<Vec<f64>>(&path).unwrap());
        assert!(back == data);
        black_box(back);
        println!(
            "| 160 MB compressible, {name} | dump {:.3} s, load {:.3} s | {:.1} MB on disk | ratio {:.0} | {targets} |",
            d_dump.as_secs_f64(),
            d_load.as_secs_f64(),
            size as f64 / 1e6,
            160e6 / size as f64
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}
