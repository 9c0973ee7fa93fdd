//! A crashed run resumes: `#[memoize]` on the task, with `retries` and
//! `on_error = "continue"`, keeps every finished item, so a rerun after the
//! parent was SIGKILLed mid-run computes only the unfinished ones.
//!
//! The helper child computes items 0..10 at once; items 10..20 wait for a
//! gate file that only the second run finds, so the first run is killed
//! with exactly ten items cached, without any timing.

mod common;

use parjob::prelude::*;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const CACHE: &str = "target/test-resume-cache";

/// Computes item `i`, leaving `computed-<run>-<i>` in `dir`; items 10 and
/// up first wait (a minute at most) for `dir/gate`.
#[memoize(dir = "target/test-resume-cache", ignore = [dir, run])]
#[parallel(backend = "process", n_jobs = 2, retries = 1, on_error = "continue")]
fn slow_square(i: u64, dir: String, run: u32) -> u64 {
    let dir = Path::new(&dir);
    if i >= 10 {
        let until = Instant::now() + Duration::from_secs(60);
        while !dir.join("gate").exists() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    std::fs::write(dir.join(format!("computed-{run}-{i}")), b"").unwrap();
    i * i
}

fn computed(dir: &Path, run: u32) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref().is_ok_and(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!("computed-{run}-"))
            })
        })
        .count()
}

#[parjob::test]
#[ignore = "helper: started by a_killed_run_resumes_with_only_the_unfinished_items"]
fn resume_helper() {
    let dir = std::env::var("PARJOB_TEST_RESUME_DIR").unwrap();
    let run: u32 = std::env::var("PARJOB_TEST_RESUME_RUN")
        .unwrap()
        .parse()
        .unwrap();
    let outcomes = slow_square::map_results((0..20u64).map(|i| (i, dir.clone(), run))).unwrap();
    let squares: Vec<u64> = outcomes.into_iter().map(Result::unwrap).collect();
    assert_eq!(squares, (0..20u64).map(|i| i * i).collect::<Vec<_>>());
    println!("RESUMED");
}

#[parjob::test]
fn a_killed_run_resumes_with_only_the_unfinished_items() {
    let _ = common::fresh(CACHE);
    let dir: PathBuf = common::scratch("resume", "marks");
    let env = |run: &'static str| {
        [
            ("PARJOB_TEST_RESUME_DIR", dir.to_str().unwrap().to_string()),
            ("PARJOB_TEST_RESUME_RUN", run.to_string()),
        ]
    };
    // Run 1: ten items finish and are cached; the rest wait for the gate.
    let mut first = common::helper_command("resume_helper", &[])
        .envs(env("1"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(60);
    while computed(&dir, 1) < 10 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(
        computed(&dir, 1),
        10,
        "the first run computed its ten items"
    );
    // The ten results reach the cache as their answers reach the parent:
    // wait until all ten entries are stored, then kill it mid-run.
    let until = Instant::now() + Duration::from_secs(60);
    while common::cache_entries(CACHE) < 10 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(5));
    }
    first.kill().unwrap();
    first.wait().unwrap();
    // Run 2: the gate is open; only the ten unfinished items compute.
    std::fs::write(dir.join("gate"), b"").unwrap();
    let out = common::helper_command("resume_helper", &[])
        .envs(env("2"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("RESUMED"),
        "{stdout}"
    );
    assert_eq!(
        computed(&dir, 2),
        10,
        "the rerun computed only the unfinished items"
    );
    for i in 0..10 {
        assert!(
            !dir.join(format!("computed-2-{i}")).exists(),
            "item {i} was computed again"
        );
    }
    let _ = std::fs::remove_dir_all(CACHE);
}
