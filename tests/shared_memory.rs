//! Shared memory on the process backend, with real workers and real
//! memfds: a big slice of numbers reaches the workers as one sealed
//! segment, mapped (not copied) into each, and nothing is left behind.

mod common;

use parjob::prelude::*;
use parjob::shm::SharedSlice;
use std::sync::{Mutex, MutexGuard};

/// The segment counter is per process: tests that make segments take
/// turns, so each counts only its own.
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static TURN: Mutex<()> = Mutex::new(());
    TURN.lock().unwrap_or_else(|p| p.into_inner())
}

/// The address ranges of this process's mappings of parjob segments.
fn segment_mappings() -> Vec<(usize, usize)> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    maps.lines()
        .filter(|l| l.contains("memfd:parjob-shm"))
        .filter_map(|l| {
            let (start, end) = l.split_whitespace().next()?.split_once('-')?;
            let start = usize::from_str_radix(start, 16).ok()?;
            let end = usize::from_str_radix(end, 16).ok()?;
            Some((start, end))
        })
        .collect()
}

/// Whether `data` lies in a parjob segment mapped into this process.
fn in_segment(data: &[f64]) -> bool {
    let at = data.as_ptr() as usize;
    segment_mappings()
        .iter()
        .any(|&(start, end)| start <= at && at + std::mem::size_of_val(data) <= end)
}

/// The sum of `data`, the worker's pid, and whether the worker reads it
/// straight from a mapped segment.
#[parallel(backend = "process", n_jobs = 2)]
fn sum_where(data: &[f64], k: u64) -> (f64, u32, bool) {
    (
        data.iter().sum::<f64>() + k as f64,
        std::process::id(),
        in_segment(data),
    )
}

#[parjob::test]
fn an_8mb_slice_is_summed_from_a_mapping_in_the_worker() {
    let _turn = one_at_a_time();
    let data: Vec<f64> = (0..1_000_000).map(|i| i as f64).collect();
    let expected: f64 = data.iter().sum();
    let got = sum_where::map((0..4u64).map(|k| (&data, k))).unwrap();
    for (k, &(sum, pid, mapped)) in got.iter().enumerate() {
        assert_eq!(sum, expected + k as f64);
        assert_ne!(pid, std::process::id(), "ran in a worker");
        assert!(mapped, "job {k} read a copy, not the segment");
    }
}

#[parjob::test]
fn thresholds_follow_max_nbytes_and_none_turns_the_path_off() {
    let _turn = one_at_a_time();
    let shared = |n: usize, off: bool| {
        let data = vec![1.0f64; n];
        let run = sum_where::with(|p| if off { p.max_nbytes(None) } else { p });
        let got = run.map([(&data, 0u64)]).unwrap();
        assert_eq!(got[0].0, n as f64, "the sum of {n} ones");
        got[0].2
    };
    // 800 bytes, 80 KB, 8 MB against the default of 1 MiB.
    assert!(!shared(100, false));
    assert!(!shared(10_000, false));
    assert!(shared(1_000_000, false));
    assert!(!shared(1_000_000, true), "max_nbytes = None still shared");
}

#[parjob::test]
fn one_buffer_passed_to_a_hundred_jobs_is_one_segment() {
    let _turn = one_at_a_time();
    let data: Vec<f64> = (0..500_000).map(|i| (i % 7) as f64).collect();
    let expected: f64 = data.iter().sum();
    let before = parjob::__private::segments_created();
    let got = sum_where::map((0..100u64).map(|k| (&data, k))).unwrap();
    let made = parjob::__private::segments_created() - before;
    assert_eq!(made, 1, "segments made for one buffer");
    assert!(got.iter().all(|r| r.2));
    for (k, r) in got.iter().enumerate() {
        assert_eq!(r.0, expected + k as f64);
    }
}

#[parjob::test]
fn delayed_jobs_share_one_segment_from_the_first_job_on() {
    let _turn = one_at_a_time();
    let data: Vec<f64> = (0..300_000).map(f64::from).collect();
    let expected: f64 = data.iter().sum();
    let before = parjob::__private::segments_created();
    let got = Parallel::new()
        .run((0..20u64).map(|k| sum_where::delayed(&data, k)))
        .unwrap();
    assert_eq!(parjob::__private::segments_created() - before, 1);
    for (k, r) in got.iter().enumerate() {
        assert_eq!(r.0, expected + k as f64);
        assert!(r.2, "job {k} read a copy");
    }
}

/// A marked process loop over one big slice.
#[parallel(n_jobs = 2)]
fn loop_sums(data: &[f64]) -> parjob::Result<Vec<(f64, u32, bool)>> {
    let mut out = Vec::new();
    #[parallel(backend = "process")]
    for k in 0..6u64 {
        out.push(sum_where(data, k));
    }
    Ok(out)
}

#[parjob::test]
fn marked_loops_and_parallel_for_share_big_slices_too() {
    let _turn = one_at_a_time();
    let data: Vec<f64> = (0..400_000).map(f64::from).collect();
    let expected: f64 = data.iter().sum();
    let check = |got: &[(f64, u32, bool)]| {
        assert_eq!(got.len(), 6);
        for (k, &(sum, pid, mapped)) in got.iter().enumerate() {
            assert_eq!(sum, expected + k as f64);
            assert_ne!(pid, std::process::id());
            assert!(mapped, "iteration {k} read a copy");
        }
    };
    let before = parjob::__private::segments_created();
    check(&loop_sums(&data).unwrap());
    assert_eq!(parjob::__private::segments_created() - before, 1);
    let before = parjob::__private::segments_created();
    let got = parallel_for!(n_jobs = 2, backend = "process"; for k in 0..6u64 {
        sum_where(&data, k)
    })
    .unwrap();
    check(&got);
    assert_eq!(parjob::__private::segments_created() - before, 1);
}

/// The sum of an explicitly shared slice, and whether it is mapped here.
#[parallel(backend = "process", n_jobs = 2)]
fn sum_shared(data: SharedSlice<f64>) -> (f64, bool) {
    (data.iter().sum(), in_segment(&data))
}

#[parjob::test]
fn a_shared_slice_and_its_subslices_cross_as_views() {
    let _turn = one_at_a_time();
    let data: Vec<f64> = (0..10_000).map(f64::from).collect();
    let shared = SharedSlice::new(&data).unwrap();
    let chunks: Vec<SharedSlice<f64>> = (0..10)
        .map(|c| shared.slice(c * 1000..(c + 1) * 1000))
        .collect();
    // Small, but shared on purpose: max_nbytes does not apply.
    let got = sum_shared::map(chunks).unwrap();
    for (c, &(sum, mapped)) in got.iter().enumerate() {
        let want: f64 = data[c * 1000..(c + 1) * 1000].iter().sum();
        assert_eq!(sum, want);
        assert!(mapped, "chunk {c} was copied");
    }
}

#[parjob::test]
fn slices_of_other_types_and_small_slices_still_arrive_whole() {
    let _turn = one_at_a_time();
    #[parallel(backend = "process", n_jobs = 2)]
    fn joined(words: &[String], numbers: &[u16]) -> String {
        let total: u32 = numbers.iter().map(|&n| u32::from(n)).sum();
        format!("{}:{total}", words.join(","))
    }
    let words = vec!["a".to_string(), "b".to_string()];
    let got = joined::map([(&words, &[1u16, 2, 3][..])]).unwrap();
    assert_eq!(got, ["a,b:6"]);
}

/// `n` numbers from `k` up.
#[parallel(backend = "process", n_jobs = 2)]
fn ramp(n: usize, k: u64) -> Vec<f64> {
    (0..n).map(|i| i as f64 + k as f64).collect()
}

fn is_ramp(values: &[f64], n: usize, k: u64) -> bool {
    values.len() == n
        && values
            .iter()
            .enumerate()
            .all(|(i, &v)| v == i as f64 + k as f64)
}

#[parjob::test]
fn numeric_results_over_max_nbytes_come_back_through_shared_memory() {
    let _turn = one_at_a_time();
    let received = parjob::__private::results_received;
    let before = received();
    // Four results of 16 MB each.
    let got = ramp::map((0..4u64).map(|k| (2_000_000usize, k))).unwrap();
    assert_eq!(received() - before, 4);
    for (k, values) in got.iter().enumerate() {
        assert!(is_ramp(values, 2_000_000, k as u64), "result {k}");
    }
    // Small results, and big ones with the path off, come inline.
    let before = received();
    let small = ramp::map([(100usize, 3u64)]).unwrap();
    assert!(is_ramp(&small[0], 100, 3));
    let inline = ramp::with(|p| p.max_nbytes(None))
        .map([(2_000_000usize, 5u64)])
        .unwrap();
    assert!(is_ramp(&inline[0], 2_000_000, 5));
    assert_eq!(received() - before, 0);
}

/// A by-value `Vec`: the worker gets its own copy, which it may change.
/// (A `Box<[T]>` parameter is what is tested, not good style.)
#[allow(clippy::boxed_local)]
#[parallel(backend = "process", n_jobs = 2)]
fn doubled_sum(mut data: Vec<f64>, boxed: Box<[u32]>) -> (f64, u64) {
    data.iter_mut().for_each(|x| *x *= 2.0);
    (data.iter().sum(), boxed.iter().map(|&b| u64::from(b)).sum())
}

#[parjob::test]
fn owned_vectors_cross_through_shared_memory_and_stay_writable() {
    let _turn = one_at_a_time();
    let data: Vec<f64> = (0..300_000).map(f64::from).collect();
    let boxed: Box<[u32]> = (0..300_000u32).collect();
    let want = (
        data.iter().sum::<f64>() * 2.0,
        boxed.iter().map(|&b| u64::from(b)).sum::<u64>(),
    );
    let before = parjob::__private::segments_created();
    let got = doubled_sum::map([(data.clone(), boxed.clone()), (data, boxed)]).unwrap();
    assert_eq!(got, [want, want]);
    // Each owned buffer is a segment of its own: two jobs of two.
    assert_eq!(parjob::__private::segments_created() - before, 4);
}

/// Writes `chunk.start() + i` squared into each number of its chunk.
#[parallel(backend = "process", n_jobs = 2)]
fn fill_squares(mut chunk: parjob::shm::ChunkMut<u64>) -> (usize, usize, u32) {
    let start = chunk.start();
    for (i, x) in chunk.iter_mut().enumerate() {
        let n = (start + i) as u64;
        *x = n * n;
    }
    (start, chunk.len(), std::process::id())
}

#[parjob::test]
fn chunks_written_by_workers_are_all_seen_and_never_overlap() {
    let _turn = one_at_a_time();
    let mut out = parjob::shm::SharedSliceMut::<u64>::zeroed(100_003).unwrap();
    let chunks = out.chunks(1_000).unwrap();
    assert!(out.chunks(10).is_err(), "lent twice");
    assert!(out.as_slice().is_err(), "read while lent");
    let got = fill_squares::map(chunks).unwrap();
    // The chunks cover the buffer exactly once, in order.
    let mut next = 0;
    for &(start, len, pid) in &got {
        assert_eq!(start, next, "a gap or an overlap at {start}");
        assert_ne!(pid, std::process::id(), "written in a worker");
        next = start + len;
    }
    assert_eq!(next, 100_003);
    let values = out.as_slice().unwrap();
    assert!(values
        .iter()
        .enumerate()
        .all(|(i, &x)| x == (i as u64) * (i as u64)));
    // On threads the chunks are written in this process's own mapping.
    out.as_mut_slice().unwrap().fill(0);
    let on_threads = fill_squares::with(|p| p.backend(Backend::Thread));
    on_threads.map(out.chunks(7_000).unwrap()).unwrap();
    let values = out.as_slice().unwrap();
    assert!(values
        .iter()
        .enumerate()
        .all(|(i, &x)| x == (i as u64) * (i as u64)));
}

#[parjob::test]
fn a_chunk_cannot_be_encoded_outside_a_worker_run() {
    let _turn = one_at_a_time();
    let mut out = parjob::shm::SharedSliceMut::<f32>::zeroed(10).unwrap();
    let chunk = out.chunks(10).unwrap().pop().unwrap();
    let err = parjob::__private::wire::encode(&chunk).unwrap_err();
    assert!(err.0.contains("only go to a worker process"), "{}", err.0);
}

/// A by-value `Vec` is the task's own copy: changing it changes nothing
/// for the caller or for the other jobs (joblib's `mmap_mode="c"`).
#[parallel(backend = "process", n_jobs = 2)]
fn bump_first(mut data: Vec<f64>, k: u64) -> (f64, f64) {
    let before = data[0];
    data[0] += k as f64;
    (before, data[0])
}

#[parjob::test]
fn writes_to_an_owned_argument_stay_private() {
    let _turn = one_at_a_time();
    let data = vec![1.0f64; 400_000];
    let got = bump_first::map((1..=6u64).map(|k| (data.clone(), k))).unwrap();
    for (k, &(before, after)) in got.iter().enumerate() {
        assert_eq!(before, 1.0, "job {k} saw another job's write");
        assert_eq!(after, 1.0 + (k + 1) as f64);
    }
    assert_eq!(data[0], 1.0);
}

/// Whether this process maps a file of `folder` (an unnamed one shows as
/// `<folder>/#<inode> (deleted)`), and the sum of `data`.
#[parallel(backend = "process", n_jobs = 2)]
fn sum_in_folder(data: &[f64], folder: String) -> (f64, bool) {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let mapped = maps
        .lines()
        .any(|l| l.contains(&folder) && l.contains("(deleted)"));
    (data.iter().sum(), mapped)
}

#[parjob::test]
fn a_temp_folder_backs_segments_with_unnamed_files() {
    let _turn = one_at_a_time();
    let folder = common::scratch("shm", "folder");
    let name = folder.to_string_lossy().into_owned();
    let data = vec![0.5f64; 1 << 20];
    let run = sum_in_folder::with(|p| p.temp_folder(folder.as_path()));
    let got = run.map([(&data, name.clone()), (&data, name)]).unwrap();
    assert!(got.iter().all(|&(sum, mapped)| sum == 524_288.0 && mapped));
    let left: Vec<_> = std::fs::read_dir(&folder).unwrap().collect();
    assert!(left.is_empty(), "files left: {left:?}");
    std::fs::remove_dir(&folder).unwrap();
}

/// `SharedArray` (the `ndarray` feature): `.ci/run` runs these with
/// `--features ndarray`.
#[cfg(feature = "ndarray")]
mod arrays {
    use super::{in_segment, one_at_a_time};
    use parjob::ndarray::{Array1, Array2, ArrayView2, Ix2};
    use parjob::prelude::*;
    use parjob::shm::SharedArray;

    /// The sum of column `j`, and whether the array is read in place.
    #[parallel(backend = "process", n_jobs = 2)]
    fn column_sum(a: SharedArray<f64, Ix2>, j: usize) -> (f64, bool) {
        let view = a.view();
        let mapped = in_segment(view.as_slice().expect("standard layout"));
        (view.column(j).sum(), mapped)
    }

    #[parjob::test]
    fn a_shared_array_reaches_workers_as_a_view() {
        let _turn = one_at_a_time();
        let a = Array2::from_shape_fn((500, 40), |(i, j)| (i * 40 + j) as f64);
        let shared = SharedArray::new(&a).unwrap();
        let got = column_sum::map((0..40).map(|j| (shared.clone(), j))).unwrap();
        for (j, &(sum, mapped)) in got.iter().enumerate() {
            assert_eq!(sum, a.column(j).sum());
            assert!(mapped, "column {j} was read from a copy");
        }
        // A transposed (non-standard) array is copied in row-major order.
        let t = SharedArray::new(&a.t()).unwrap();
        assert_eq!(t.view(), a.t());
    }

    /// The sum of column `j` of a view, and whether it is read in place.
    #[parallel(backend = "process", n_jobs = 2)]
    fn view_column(a: ArrayView2<f64>, j: usize) -> (f64, bool) {
        let mapped = in_segment(a.as_slice().expect("standard layout"));
        (a.column(j).sum(), mapped)
    }

    /// An owned array is the task's own copy, to change.
    #[parallel(backend = "process", n_jobs = 2)]
    fn doubled_total(mut a: Array2<f64>, by_ref: &Array1<f32>) -> (f64, f32) {
        a *= 2.0;
        (a.sum(), by_ref.sum())
    }

    #[parjob::test]
    fn ndarray_parameters_take_the_shared_path() {
        let _turn = one_at_a_time();
        // 400 x 400 f64 is 1.28 MB, over the default max_nbytes.
        let a = Array2::from_shape_fn((400, 400), |(i, j)| (i + j) as f64);
        let before = parjob::__private::segments_created();
        let got = view_column::map((0..20).map(|j| (&a, j))).unwrap();
        assert_eq!(parjob::__private::segments_created() - before, 1);
        for (j, &(sum, mapped)) in got.iter().enumerate() {
            assert_eq!(sum, a.column(j).sum());
            assert!(mapped, "column {j} was read from a copy");
        }
        // Views and shared arrays are items too; a small array goes inline.
        let shared = SharedArray::new(&a).unwrap();
        let got = view_column::map([(a.view(), 3), (shared.view(), 4)]).unwrap();
        assert_eq!((got[0].0, got[1].0), (a.column(3).sum(), a.column(4).sum()));
        let small = Array1::from_vec(vec![1.5f32; 10]);
        let got = doubled_total::map([(a.clone(), &small), (a.t().to_owned(), &small)]).unwrap();
        assert_eq!(got, [(a.sum() * 2.0, 15.0), (a.sum() * 2.0, 15.0)]);
        assert_eq!(a[[1, 2]], 3.0, "the caller's array is unchanged");
    }
}

/// `data` times `by`: a numeric result the size of the argument.
#[parallel(backend = "process", n_jobs = 2)]
fn scaled(data: &[f64], by: f64) -> Vec<f64> {
    data.iter().map(|x| x * by).collect()
}

/// Sums of a borrowed and an owned slice of `u16`.
#[parallel(backend = "process", n_jobs = 2)]
fn sums(data: &[u16], owned: Vec<u16>) -> (u64, u64) {
    let sum = |v: &[u16]| v.iter().map(|&x| u64::from(x)).sum::<u64>();
    (sum(data), sum(&owned))
}

#[parjob::test]
fn around_max_nbytes_results_equal_the_sequential_functions() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};
    let _turn = one_at_a_time();
    let mut runner = TestRunner::new(Config {
        cases: 32,
        ..Config::default()
    });
    let cases = (0usize..1200, 0u64..6000, any::<u64>());
    runner
        .run(&cases, |(n, max, seed)| {
            let data: Vec<f64> = (0..n).map(|i| (seed ^ i as u64) as f64).collect();
            let small: Vec<u16> = (0..n).map(|i| (seed as usize + i) as u16).collect();
            let run = scaled::with(|p| p.max_nbytes(max));
            let got = run.map([(&data, 1.5), (&data, -2.0)]).unwrap();
            prop_assert_eq!(&got[0], &scaled(&data, 1.5));
            prop_assert_eq!(&got[1], &scaled(&data, -2.0));
            let got = sums::with(|p| p.max_nbytes(max))
                .map([(&small, small.clone())])
                .unwrap();
            prop_assert_eq!(got[0], sums(&small, small.clone()));
            Ok(())
        })
        .unwrap();
    // The default threshold, one number either side of 1 MiB.
    for n in [131_071usize, 131_072, 131_073] {
        let data: Vec<f64> = (0..n).map(|i| i as f64).collect();
        assert_eq!(scaled::map([(&data, 3.0)]).unwrap()[0], scaled(&data, 3.0));
    }
}
