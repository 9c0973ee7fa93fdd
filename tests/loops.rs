//! Marked `for` loops and `parallel_for!`: the same answers as the plain
//! loop, bit for bit, on every recognised update, with `?`, `continue`,
//! borrowed data, nesting, and the process backend.

use parjob::prelude::*;
use proptest::prelude::*;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

/// Loops started from this thread keep even nanosecond items on threads
/// (by default, the rest of such a loop runs in the caller's thread).
fn parallel_from_the_first_item() {
    parjob::__private::loops::set_min_parallel_item(Duration::ZERO);
}

#[derive(Debug, Clone, PartialEq)]
struct Outcome {
    float_sum: u64,
    float_product: u64,
    float_quotient: u64,
    sum: i64,
    difference: i64,
    or: u64,
    and: u64,
    xor: u64,
    remainder: u64,
    shifted_left: u64,
    shifted_right: u64,
    pushed: Vec<f64>,
    extended: Vec<u32>,
    inserted: BTreeMap<u32, f64>,
    hashed: HashMap<u32, usize>,
    set: HashSet<u32>,
    at_front: Vec<u32>,
    max: f64,
    min: i64,
    nested: u64,
    field: f64,
}

struct Totals {
    weight: f64,
}

/// The same function twice: `$mark` is `#[parallel]` on the function and
/// the loop for one copy, nothing for the other.
macro_rules! reductions {
    ($name:ident $(, #[$mark:meta])?) => {
        $(#[$mark])?
        fn $name(xs: &[(f64, u32)]) -> Outcome {
            let mut float_sum = 0.0f64;
            let mut float_product = 1.0f64;
            let mut float_quotient = 1.0e300f64;
            let mut sum = 0i64;
            let mut difference = 0i64;
            let mut or = 0u64;
            let mut and = u64::MAX;
            let mut xor = 0u64;
            let mut remainder = u64::MAX;
            let mut shifted_left = 1u64;
            let mut shifted_right = u64::MAX;
            let mut pushed = Vec::new();
            let mut extended = Vec::new();
            let mut inserted = BTreeMap::new();
            let mut hashed = HashMap::new();
            let mut set = HashSet::new();
            let mut at_front = Vec::new();
            let mut max = f64::MIN;
            let mut min = i64::MAX;
            let mut nested = 0u64;
            let mut totals = Totals { weight: 0.0 };
            $(#[$mark])?
            for (i, &(x, k)) in xs.iter().enumerate() {
                if k % 7 == 3 {
                    continue;
                }
                float_sum += x;
                float_product *= 1.0 + x / 1e6;
                float_quotient /= 1.0 + x.abs() / 1e3;
                sum += k as i64;
                difference -= (k as i64) * 3;
                or |= 1u64 << (k % 64);
                and &= !(1u64 << (k % 61));
                xor ^= (k as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                remainder %= (k as u64) + 1_000_000;
                shifted_left <<= k % 2;
                shifted_right >>= k % 2;
                let local = x * 2.0;
                if local > 0.0 {
                    pushed.push(local);
                }
                extended.extend((0..k % 3).map(|j| j + k));
                inserted.insert(k, x);
                hashed.insert(k % 50, i);
                set.insert(k % 17);
                at_front.insert(0, k);
                max = max.max(x);
                min = min.min(-(k as i64));
                for j in 0..(k % 4) {
                    nested += j as u64;
                }
                totals.weight += x * 0.5;
            }
            Outcome {
                float_sum: float_sum.to_bits(),
                float_product: float_product.to_bits(),
                float_quotient: float_quotient.to_bits(),
                sum,
                difference,
                or,
                and,
                xor,
                remainder,
                shifted_left,
                shifted_right,
                pushed,
                extended,
                inserted,
                hashed,
                set,
                at_front,
                max,
                min,
                nested,
                field: totals.weight,
            }
        }
    };
}

reductions!(plain);
reductions!(marked, #[parallel]);

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn a_marked_loop_gives_the_plain_loops_result_bit_for_bit(
        xs in proptest::collection::vec((-1.0e6f64..1.0e6, 0u32..1000), 0..600),
    ) {
        parallel_from_the_first_item();
        let expected = plain(&xs);
        for n_jobs in [1, 2, 3] {
            let got = parjob::config().n_jobs(n_jobs).scope(|| marked(&xs));
            prop_assert_eq!(&got, &expected, "n_jobs = {}", n_jobs);
        }
    }

    #[test]
    fn parallel_for_gives_the_plain_comprehension(
        xs in proptest::collection::vec(any::<i32>(), 0..500),
    ) {
        parallel_from_the_first_item();
        let expected: Vec<i64> = xs.iter().map(|&x| x as i64 * 3 - 1).collect();
        let two: Vec<i64> = parallel_for!(n_jobs = 2; for &x in &xs { x as i64 * 3 - 1 });
        let three: Vec<i64> = parallel_for!(n_jobs = 3; for &x in &xs { x as i64 * 3 - 1 });
        prop_assert_eq!(&two, &expected);
        prop_assert_eq!(&three, &expected);
    }
}

/// Which iterations failed, in the order they failed.
static FAILED: Mutex<Vec<usize>> = Mutex::new(Vec::new());

#[parallel(n_jobs = 10)]
fn stops_at_the_first_error_in_iteration_order(n: usize) -> Result<usize, String> {
    let mut seen = 0;
    #[parallel]
    for i in 0..n {
        if i == 5 {
            std::thread::sleep(Duration::from_millis(300));
        }
        let checked: usize = if i == 5 || i == 9 {
            FAILED.lock().unwrap().push(i);
            Err(format!("item {i} failed"))?
        } else {
            i
        };
        seen += checked;
    }
    Ok(seen)
}

#[test]
fn a_question_mark_returns_the_first_error_in_iteration_order() {
    parallel_from_the_first_item();
    let err = stops_at_the_first_error_in_iteration_order(10).unwrap_err();
    assert_eq!(err, "item 5 failed");
    // Item 9 failed first, on another thread, and still lost to item 5.
    assert_eq!(FAILED.lock().unwrap().first(), Some(&9));
}

#[parallel(n_jobs = 2)]
fn parse_all(words: &[String]) -> Result<Vec<u32>, std::num::ParseIntError> {
    let mut out = Vec::new();
    #[parallel]
    for word in words {
        out.push(word.trim().parse::<u32>()?);
    }
    Ok(out)
}

#[test]
fn a_question_mark_converts_its_error_and_keeps_earlier_updates_only_on_success() {
    parallel_from_the_first_item();
    let good: Vec<String> = (0..300).map(|i| format!(" {i} ")).collect();
    assert_eq!(parse_all(&good).unwrap(), (0..300).collect::<Vec<u32>>());
    let mut bad = good.clone();
    bad[120] = "x".into();
    let err = parse_all(&bad).unwrap_err();
    assert_eq!(err, "x".parse::<u32>().unwrap_err());
}

#[parallel(n_jobs = 3)]
fn weighted_lookup(names: &[String], table: &HashMap<String, f64>, scale: &f64) -> f64 {
    // Borrowed, non-'static data: the arguments and a local built here.
    let bonus: Vec<f64> = names.iter().map(|n| n.len() as f64).collect();
    let mut total = 0.0;
    #[parallel]
    for (i, name) in names.iter().enumerate() {
        total += table.get(name).copied().unwrap_or(0.0) * scale + bonus[i];
    }
    total
}

#[test]
fn a_thread_loop_borrows_non_static_data() {
    parallel_from_the_first_item();
    let names: Vec<String> = (0..500).map(|i| format!("k{}", i % 40)).collect();
    let table: HashMap<String, f64> = (0..30).map(|i| (format!("k{i}"), i as f64 / 3.0)).collect();
    let scale = 1.25;
    let mut expected = 0.0;
    for name in &names {
        expected += table.get(name).copied().unwrap_or(0.0) * scale + name.len() as f64;
    }
    assert_eq!(
        weighted_lookup(&names, &table, &scale).to_bits(),
        expected.to_bits()
    );
}

#[parallel(n_jobs = 2)]
fn threads_of_nested(outer: usize, inner: usize) -> Vec<Vec<std::thread::ThreadId>> {
    let mut rows = Vec::new();
    #[parallel]
    for _ in 0..outer {
        let mut row = Vec::new();
        #[parallel]
        for _ in 0..inner {
            std::thread::sleep(Duration::from_micros(200));
            row.push(std::thread::current().id());
        }
        rows.push(row);
    }
    rows
}

#[test]
fn a_nested_marked_loop_runs_sequentially_inside_its_outer_item() {
    parallel_from_the_first_item();
    let rows = threads_of_nested(8, 20);
    assert_eq!(rows.len(), 8);
    let me = std::thread::current().id();
    let mut outer_threads = HashSet::new();
    for row in &rows {
        assert_eq!(row.len(), 20);
        // Every inner item ran on the thread that ran its outer item.
        assert!(row.iter().all(|t| *t == row[0]), "{row:?}");
        assert_ne!(row[0], me);
        outer_threads.insert(row[0]);
    }
    assert!(outer_threads.len() <= 2, "{outer_threads:?}");
}

struct Histogram {
    buckets: Vec<u64>,
    total: u64,
}

impl Histogram {
    #[parallel(n_jobs = 2)]
    fn add_all(&mut self, xs: &[u64]) {
        let width = self.buckets.len() as u64;
        let mut seen = Vec::new();
        #[parallel]
        for x in xs {
            self.total += 1;
            seen.push((x % width) as usize);
        }
        for bucket in seen {
            self.buckets[bucket] += 1;
        }
    }
}

#[test]
fn a_method_with_self_can_host_a_marked_loop() {
    parallel_from_the_first_item();
    let mut h = Histogram {
        buckets: vec![0; 4],
        total: 0,
    };
    h.add_all(&(0..1000).collect::<Vec<u64>>());
    assert_eq!(h.buckets, vec![250; 4]);
    assert_eq!(h.total, 1000);
}

#[test]
fn items_measured_under_the_threshold_finish_in_the_callers_thread() {
    // Every item counts as tiny: after the first window (FIRST_WINDOW items
    // per thread, on the pool), the rest runs here with the original body.
    parjob::__private::loops::set_min_parallel_item(Duration::from_secs(1));
    let me = std::thread::current().id();
    let xs: Vec<u64> = (0..1000).collect();
    let ran: Vec<(u64, std::thread::ThreadId)> =
        parallel_for!(n_jobs = 2; for &x in &xs { (x * 3, std::thread::current().id()) });
    let values: Vec<u64> = ran.iter().map(|(v, _)| *v).collect();
    assert_eq!(values, xs.iter().map(|x| x * 3).collect::<Vec<_>>());
    let first = parjob::__private::loops::FIRST_WINDOW * 2;
    assert!(ran[..first].iter().all(|(_, t)| *t != me));
    assert!(ran[first..].iter().all(|(_, t)| *t == me));
    // No item counts as tiny: every one runs on the pool.
    parallel_from_the_first_item();
    let ran: Vec<std::thread::ThreadId> =
        parallel_for!(n_jobs = 2; for _x in &xs { std::thread::current().id() });
    assert!(ran.iter().all(|t| *t != me));
}

#[test]
fn streaming_parallel_for_yields_in_order_or_as_completed() {
    let ordered: Vec<u64> = parallel_for!(n_jobs = 2, return_as = "generator"; for x in 0..50u64 {
        x + 1
    })
    .collect::<parjob::Result<_>>()
    .unwrap();
    assert_eq!(ordered, (1..=50).collect::<Vec<u64>>());
    let mut unordered: Vec<(usize, u64)> =
        parallel_for!(n_jobs = 2, return_as = "generator_unordered"; for x in 0..50u64 { x * 2 })
            .collect::<parjob::Result<_>>()
            .unwrap();
    unordered.sort();
    assert_eq!(
        unordered,
        (0..50).map(|i| (i, i as u64 * 2)).collect::<Vec<_>>()
    );
    // Under a scoped process backend the bodies, which borrow, still run
    // on threads here, as a marked loop's do.
    let pids: Vec<u32> = parjob::config()
        .backend(Backend::Process)
        .scope(|| {
            parallel_for!(n_jobs = 2, return_as = "generator"; for _x in 0..4u64 {
                std::process::id()
            })
            .collect::<parjob::Result<_>>()
        })
        .unwrap();
    assert_eq!(pids, [std::process::id(); 4]);
}

#[parallel(n_jobs = 2, backend = "process")]
fn pid_and_double(x: u64) -> (u32, u64) {
    (std::process::id(), x * 2)
}

#[parallel(n_jobs = 2, backend = "process")]
fn doubled(x: u64) -> u64 {
    x * 2
}

#[parallel(n_jobs = 2)]
fn process_loop_total(n: u64) -> parjob::Result<(u64, Vec<u64>)> {
    let mut total = 0;
    let mut each = Vec::new();
    #[parallel(backend = "process")]
    for x in 0..n {
        total += doubled(x);
    }
    #[parallel(backend = "process", n_jobs = 2)]
    for x in 0..n {
        each.push(doubled(x + 1));
    }
    Ok((total, each))
}

#[parjob::test]
fn process_parallel_for_and_loops_run_in_other_processes() {
    let got =
        parallel_for!(n_jobs = 2, backend = "process"; for x in 0..40u64 { pid_and_double(x) })
            .unwrap();
    let pids: HashSet<u32> = got.iter().map(|(p, _)| *p).collect();
    assert!(!pids.contains(&std::process::id()));
    assert!(!pids.is_empty() && pids.len() <= 2, "{pids:?}");
    assert_eq!(
        got.iter().map(|(_, v)| *v).collect::<Vec<_>>(),
        (0..40).map(|x| x * 2).collect::<Vec<u64>>()
    );
    let (total, each) = process_loop_total(100).unwrap();
    assert_eq!(total, (0..100).map(|x| x * 2).sum::<u64>());
    assert_eq!(each, (1..=100).map(|x| x * 2).collect::<Vec<u64>>());
}

#[parallel(n_jobs = 2)]
fn count_into(xs: &[u64], hits: &std::sync::atomic::AtomicU64) {
    // No updates at all: the body only reads (and uses an atomic).
    #[parallel]
    for x in xs {
        hits.fetch_add(*x, std::sync::atomic::Ordering::Relaxed);
    }
}

#[parallel(n_jobs = 2)]
fn sum_if_all_present(xs: &[Option<u64>]) -> Option<u64> {
    let mut sum = 0;
    #[parallel]
    for x in xs {
        sum += (*x)?;
    }
    Some(sum)
}

#[test]
fn a_loop_without_updates_and_a_question_mark_on_option_work() {
    parallel_from_the_first_item();
    // `&AtomicU64` is not `Clone`: a sized `&T` parameter is stored as `T`.
    let hits = std::sync::atomic::AtomicU64::new(0);
    count_into(&(0..1000).collect::<Vec<_>>(), &hits);
    assert_eq!(hits.into_inner(), 499_500);
    let all: Vec<Option<u64>> = (0..200).map(Some).collect();
    assert_eq!(sum_if_all_present(&all), Some(19_900));
    let mut gap = all.clone();
    gap[150] = None;
    assert_eq!(sum_if_all_present(&gap), None);
}

#[parallel(n_jobs = 2)]
fn relabel(words: &[String], label: &str) -> Vec<String> {
    let label = label.to_string();
    let mut out = Vec::new();
    #[parallel]
    for word in words {
        // `replace` on an outer `String` only reads it: not an update.
        out.push(format!("{}:{word}", label.replace("a", "4")));
    }
    out
}

#[test]
fn a_call_that_only_reads_an_outer_variable_is_allowed() {
    parallel_from_the_first_item();
    let words: Vec<String> = (0..50).map(|i| format!("w{i}")).collect();
    let out = relabel(&words, "alpha");
    assert_eq!(out.len(), 50);
    assert_eq!(out[0], "4lph4:w0");
    assert_eq!(out[49], "4lph4:w49");
}
