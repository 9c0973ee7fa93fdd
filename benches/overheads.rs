//! Fixed costs against this machine's limits, each beside its baseline
//! from the same run, in alternated rounds.
//!
//! `cargo bench --bench overheads` (`-- --rounds N`, default 5; `-- --only
//! NAME` for one row: `pool`, `map`, `threads`, `memo`, `load`)
//!
//! Each round measures parjob, then its baseline, each as the best of a
//! few repetitions; the table gives the minimum and the median over the
//! rounds, for both sides.
//!
//! 1. `pool`: `Pool::map(square::task, 0..200_000)` on 2 workers, per
//!    task, against CPython's `Pool(2).map` of the same squares
//!    (`python3 benches/mp_pool.py --map 200000`; target 10x cheaper).
//! 2. `map`: `f::map(0..100_000)` of tiny tasks on 2 worker processes, per
//!    task (joblib/loky 2.78 us here; target <= 0.1 us), against
//!    `Pool::map` of the same task.
//! 3. `threads`: `Parallel::run` of 100,000 `delayed` tiny jobs on 2
//!    threads, per task, against rayon's `par_iter` (target <= 0.05 us).
//! 4. `memo`: a `#[memoize]` miss with a small argument against one atomic
//!    small-file write (create a temporary file, write, rename; target
//!    <= 30 us or <= 2x the write), and a hit against reading that file
//!    (target <= 2 us).
//! 5. `load`: `load` of an 800 MB `Vec<f64>` against `fs::read` of the
//!    same bytes (target >= 0.95x in every round).

use parjob::prelude::*;
use parjob::{dump, load, Pool};
use rayon::prelude::*;
use std::hint::black_box;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

#[path = "support/tiny.rs"]
mod tiny;
use tiny::{square, square_here};

#[memoize(dir = "target/bench-overheads/memo")]
fn add(x: u64, y: u64) -> u64 {
    x + y
}

/// The best of `runs` timings of `f`, after checking its result.
fn best<T>(runs: usize, mut f: impl FnMut() -> T, check: impl Fn(&T)) -> Duration {
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            let out = black_box(f());
            let d = t.elapsed();
            check(&out);
            d
        })
        .min()
        .expect("runs > 0")
}

/// Minimum and median of `xs`.
fn min_median(xs: &mut [f64]) -> (f64, f64) {
    xs.sort_by(f64::total_cmp);
    (xs[0], xs[xs.len() / 2])
}

/// One table row from each round's (parjob, baseline) figures.
fn row(case: &str, unit: &str, pairs: &[(f64, f64)], baseline: &str, target: &str) {
    let mut ours: Vec<f64> = pairs.iter().map(|p| p.0).collect();
    let mut theirs: Vec<f64> = pairs.iter().map(|p| p.1).collect();
    let mut ratios: Vec<f64> = pairs.iter().map(|p| p.1 / p.0).collect();
    let (o_min, o_med) = min_median(&mut ours);
    let (t_min, t_med) = min_median(&mut theirs);
    let (r_min, r_med) = min_median(&mut ratios);
    let each: Vec<String> = pairs
        .iter()
        .map(|(o, t)| format!("{o:.4}/{t:.4}"))
        .collect();
    eprintln!(
        "{case}: parjob/baseline by round, {unit}: {}",
        each.join(", ")
    );
    println!(
        "| {case} | min {o_min:.4} {unit}, median {o_med:.4} {unit} | {baseline}: min {t_min:.4} {unit}, median {t_med:.4} {unit} | baseline / parjob: min {r_min:.2}x, median {r_med:.2}x | {target} |"
    );
}

fn us_per(d: Duration, n: u64) -> f64 {
    d.as_secs_f64() * 1e6 / n as f64
}

/// CPython's `Pool(2).map` of `n` squares, best of 3, in us per task.
fn cpython_pool_map(n: u64) -> f64 {
    let out = Command::new("python3")
        .args(["benches/mp_pool.py", "--map", &n.to_string()])
        .output()
        .expect("python3 runs benches/mp_pool.py");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("mp_pool.py --map prints us per task")
}

fn pool_row(rounds: usize) {
    let n = 200_000u64;
    let pool = Pool::new(2).unwrap();
    pool.map(square::task, 0..100).unwrap(); // workers up
    let pairs: Vec<(f64, f64)> = (0..rounds)
        .map(|_| {
            let d = best(
                5,
                || pool.map(square::task, 0..n).unwrap(),
                |out| assert_eq!(out[n as usize - 1], (n - 1) * (n - 1)),
            );
            (us_per(d, n), cpython_pool_map(n))
        })
        .collect();
    row(
        "Pool::map(f::task, 0..200_000), x * x, 2 workers",
        "us/task",
        &pairs,
        "CPython Pool(2).map",
        ">= 10x",
    );
}

fn map_row(rounds: usize) {
    let n = 100_000u64;
    let pool = Pool::new(2).unwrap();
    pool.map(square::task, 0..100).unwrap();
    square::map(0..100).unwrap();
    let check = |out: &Vec<u64>| assert_eq!(out[n as usize - 1], (n - 1) * (n - 1));
    let pairs: Vec<(f64, f64)> = (0..rounds)
        .map(|_| {
            let d = best(5, || square::map(0..n).unwrap(), check);
            let base = best(5, || pool.map(square::task, 0..n).unwrap(), check);
            (us_per(d, n), us_per(base, n))
        })
        .collect();
    row(
        "f::map(0..100_000) tiny tasks, 2 processes (joblib/loky 2.78 us)",
        "us/task",
        &pairs,
        "Pool::map(f::task)",
        "<= 0.1 us",
    );
}

fn threads_row(rounds: usize) {
    let n = 100_000u64;
    let rayon = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    let p = Parallel::new().n_jobs(2).backend(Backend::Thread);
    let check = |out: &Vec<u64>| assert_eq!(out[n as usize - 1], (n - 1) * (n - 1));
    let pairs: Vec<(f64, f64)> = (0..rounds)
        .map(|_| {
            let d = best(
                20,
                || p.run((0..n).map(square_here::delayed)).unwrap(),
                check,
            );
            let base = best(
                20,
                || rayon.install(|| (0..n).into_par_iter().map(|x| x * x).collect()),
                check,
            );
            (us_per(d, n), us_per(base, n))
        })
        .collect();
    row(
        "Parallel::run(delayed) of 100,000 tiny tasks, 2 threads",
        "us/task",
        &pairs,
        "rayon par_iter",
        "<= 0.05 us",
    );
}

/// One atomic small-file write: a temporary file created, written and
/// renamed into place, as a cache entry is stored.
fn atomic_write(dir: &Path, i: u64) {
    let tmp = dir.join(format!(".tmp-{i}"));
    std::fs::write(&tmp, i.to_le_bytes()).unwrap();
    std::fs::rename(&tmp, dir.join(format!("entry-{i}"))).unwrap();
}

fn memo_rows(rounds: usize) {
    let dir = Path::new("target/bench-overheads/files");
    let _ = std::fs::remove_dir_all("target/bench-overheads");
    std::fs::create_dir_all(dir).unwrap();
    let m = 2_000u64;
    let mut next = 1_000_000u64;
    let mut misses = Vec::new();
    let mut hits = Vec::new();
    for round in 0..rounds as u64 {
        // The file system's speed drifts within seconds (ext4 skips inodes
        // deleted in the last few seconds when it makes a file), so the two
        // sides alternate in blocks of 100, and each side's time is the sum
        // of its blocks.
        let (mut miss, mut write) = (Duration::ZERO, Duration::ZERO);
        let mut k = round * 10 * m;
        for _ in 0..m / 100 {
            let t = Instant::now();
            for _ in 0..100 {
                next += 1;
                black_box(add(next, 0));
            }
            miss += t.elapsed();
            let t = Instant::now();
            for _ in 0..100 {
                k += 1;
                atomic_write(dir, k);
            }
            write += t.elapsed();
        }
        misses.push((us_per(miss, m), us_per(write, m)));
        let h = 20_000u64;
        let hit = best(
            5,
            || (0..h).map(|_| add(black_box(1), 2)).sum::<u64>(),
            |s| assert_eq!(*s, 3 * h),
        );
        let entry = dir.join(format!("entry-{k}"));
        let read = best(
            5,
            || {
                (0..h)
                    .map(|_| std::fs::read(&entry).unwrap().len())
                    .sum::<usize>()
            },
            |s| assert_eq!(*s, 8 * h as usize),
        );
        hits.push((us_per(hit, h), us_per(read, h)));
    }
    row(
        "#[memoize] miss, small argument (joblib 228 us)",
        "us",
        &misses,
        "atomic small-file write",
        "<= 30 us or <= 2x the write",
    );
    row(
        "#[memoize] hit, small argument (joblib 69 us)",
        "us",
        &hits,
        "fs::read of a small file",
        "<= 2 us",
    );
    let _ = std::fs::remove_dir_all("target/bench-overheads");
}

fn load_row(rounds: usize) {
    let dir = Path::new("target/bench-overheads/load");
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    let data: Vec<f64> = (0..100_000_000).map(|i| i as f64 * 0.5).collect();
    let path = dir.join("raw.bin");
    dump(&data, &path).unwrap();
    drop(data);
    let size = std::fs::metadata(&path).unwrap().len() as usize;
    let pairs: Vec<(f64, f64)> = (0..rounds)
        .map(|_| {
            let d = best(
                1,
                || load::<Vec<f64>>(&path).unwrap(),
                |v| assert_eq!(v[99_999_999], 99_999_999.0 * 0.5),
            );
            let base = best(
                1,
                || std::fs::read(&path).unwrap(),
                |b| assert_eq!(b.len(), size),
            );
            (d.as_secs_f64() * 1e3, base.as_secs_f64() * 1e3)
        })
        .collect();
    row(
        "raw load, 800 MB Vec<f64>",
        "ms",
        &pairs,
        "fs::read",
        ">= 0.95x in every round",
    );
    let _ = std::fs::remove_dir_all("target/bench-overheads");
}

#[parjob::main]
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let rounds: usize = value("--rounds").map_or(5, |r| r.parse().expect("--rounds N"));
    let only = value("--only");
    let wanted = |name: &str| only.as_deref().is_none_or(|o| o == name);
    println!("| case | parjob | baseline | ratio | target |");
    println!("|---|---|---|---|---|");
    if wanted("pool") {
        pool_row(rounds);
    }
    if wanted("map") {
        map_row(rounds);
    }
    if wanted("threads") {
        threads_row(rounds);
    }
    if wanted("memo") {
        memo_rows(rounds);
    }
    if wanted("load") {
        load_row(rounds);
    }
}
