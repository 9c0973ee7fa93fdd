//! Faults in shared memory: memfds refused, folders that are full, read
//! only or not folders, and memory capped by `RLIMIT_AS` or a v1 cgroup.
//! Each fault must end as `Error::SharedMemory` (or a run's error naming
//! it), never as SIGBUS, an abort or the OOM killer.

use crate::harness::{child_said, in_child, is_capped_child, scratch, Case, Confine};
use parjob::prelude::*;
use parjob::shm::SharedSliceMut;
use parjob::{Error, Pool};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const BOUND: Duration = Duration::from_secs(60);

pub const CASES: &[Case] = &[
    Case {
        fault: "memfd_create refused by seccomp, then process runs and a Pool",
        expect: "runs work, big arguments through temp files",
        within: BOUND,
        run: memfd_refused,
        ignore: None,
    },
    Case {
        fault: "a 128 MB argument under a 330 MB address-space cap",
        expect: "the run's error, no abort",
        within: BOUND,
        run: argument_under_as_cap,
        ignore: None,
    },
    Case {
        fault: "temp_folder names a file, not a folder",
        expect: "the run's error naming the task and saying it is not a directory, unwrapped",
        within: BOUND,
        run: temp_folder_is_a_file,
        ignore: None,
    },
    Case {
        fault: "memfd refused, two 3 MB SharedSliceMut on a 5 MB tmpfs",
        expect: "the second is Error::SharedMemory, no SIGBUS",
        within: BOUND,
        run: writable_segments_on_a_small_tmpfs,
        ignore: Some("mounts a tmpfs, which needs root; .ci/run runs it"),
    },
    Case {
        fault: "temp_folder on a read-only tmpfs",
        expect: "the run's error saying it is read-only",
        within: BOUND,
        run: read_only_temp_folder,
        ignore: Some("mounts a tmpfs, which needs root; .ci/run runs it"),
    },
    Case {
        fault: "a 128 MB argument in a v1 memory cgroup of 200 MB",
        expect: "the run's error naming the cgroup's limit, no OOM kill",
        within: BOUND,
        run: argument_in_a_v1_cgroup,
        ignore: Some("makes a v1 memory cgroup, which needs root; .ci/run runs it"),
    },
    Case {
        fault: "a 200 MB result refused for want of memory, then the next run",
        expect: "the first run's error; the next run's result whole",
        within: BOUND,
        run: refused_result_then_next_run,
        ignore: None,
    },
    Case {
        fault: "the parent out of file descriptors while a result's segment arrives",
        expect: "an error naming file descriptors and RLIMIT_NOFILE",
        within: BOUND,
        run: out_of_descriptors_for_a_result,
        ignore: None,
    },
    Case {
        fault: "a 2 MB borrowed slice mapped by a process Pool over 16 items",
        expect: "one segment for the call, not a copy in every chunk",
        within: BOUND,
        run: pool_shares_a_big_slice,
        ignore: None,
    },
    Case {
        fault: "mmap_mode cache entries cleared and rewritten under live CachedArrays",
        expect: "the live arrays keep their numbers (parjob only renames and unlinks)",
        within: BOUND,
        run: cached_arrays_outlive_rewrites,
        ignore: None,
    },
];

/// The sum of `data`, in a worker process.
#[parallel(backend = "process", n_jobs = 2)]
fn total(data: &[f64]) -> f64 {
    data.iter().sum()
}

#[parallel(backend = "process")]
fn double(x: u64) -> u64 {
    2 * x
}

/// `n` numbers, which come back through shared memory past `max_nbytes`.
#[parallel(backend = "process", n_jobs = 2)]
fn ramp(n: usize) -> Vec<f64> {
    (0..n).map(|i| i as f64).collect()
}

/// Sets this process's soft limit of `resource`, returning the old one.
fn set_soft_limit(resource: libc::__rlimit_resource_t, soft: u64) -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit on this process, with valid structs.
    unsafe {
        libc::getrlimit(resource, &mut limit);
        let old = limit.rlim_cur;
        limit.rlim_cur = soft.min(limit.rlim_max);
        libc::setrlimit(resource, &limit);
        old
    }
}

/// This process's address space now, from `/proc/self/status`.
fn address_space() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmSize:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(0, |kb| kb * 1024)
}

/// Runs `ramp(n)` on `runner`, as the child prints its outcome.
fn ramp_outcome(runner: &Parallel, n: usize) -> String {
    match runner.run([ramp::delayed(n)]) {
        Ok(mut v) if v.len() == 1 && v[0].len() == n => {
            let last = v.pop().unwrap().pop();
            if last == n.checked_sub(1).map(|l| l as f64) {
                "whole".into()
            } else {
                "wrong numbers".into()
            }
        }
        Ok(_) => "the wrong length".into(),
        Err(e) => format!("error: {e}"),
    }
}

fn refused_result_then_next_run() -> Result<(), String> {
    if is_capped_child() {
        let runner = Parallel::new().backend(Backend::Process).n_jobs(2);
        let warm = ramp_outcome(&runner, 10);
        // Workers are up, with the old limit: only this parent is capped.
        let old = set_soft_limit(libc::RLIMIT_AS, address_space() + (100 << 20));
        let capped = ramp_outcome(&runner, 25 << 20);
        set_soft_limit(libc::RLIMIT_AS, old);
        let next = ramp_outcome(&runner, 1 << 20);
        let after = ramp_outcome(&runner, 1 << 20);
        println!("outcome: warm {warm}; capped {capped}; next {next}; after {after}");
        return Ok(());
    }
    child_outcome(
        CASES[6].fault,
        &[],
        Confine::default(),
        &[
            "warm whole",
            "capped error: ",
            "out of memory for a result",
            "next whole",
            "after whole",
        ],
    )
}

fn out_of_descriptors_for_a_result() -> Result<(), String> {
    if is_capped_child() {
        let runner = Parallel::new().backend(Backend::Process).n_jobs(2);
        let warm = ramp_outcome(&runner, 10);
        // Fill every descriptor up to the soft limit.
        let old = set_soft_limit(libc::RLIMIT_NOFILE, 256);
        let mut held = Vec::new();
        while let Ok(f) = std::fs::File::open("/dev/null") {
            held.push(f);
        }
        let starved = ramp_outcome(&runner, 1 << 20);
        drop(held);
        set_soft_limit(libc::RLIMIT_NOFILE, old);
        println!("outcome: warm {warm}; starved {starved}");
        return Ok(());
    }
    child_outcome(
        CASES[7].fault,
        &[],
        Confine::default(),
        &[
            "warm whole",
            "starved error: ",
            "file descriptors",
            "RLIMIT_NOFILE",
        ],
    )
}

/// The mean of `data[k * 1000..][..1000]`, in a pool's worker.
#[parallel(backend = "process")]
fn window_mean(data: &[f64], k: usize) -> f64 {
    data[k * 1000..][..1000].iter().sum::<f64>() / 1000.0
}

fn pool_shares_a_big_slice() -> Result<(), String> {
    let data: Vec<f64> = (0..1 << 18).map(f64::from).collect();
    let pool = Pool::new(2).map_err(|e| e.to_string())?;
    let before = parjob::shm::segments_created();
    let means = pool
        .chunksize(2)
        .map(|k| window_mean::delayed(&data, k), 0..16)
        .map_err(|e| e.to_string())?;
    let made = parjob::shm::segments_created() - before;
    let expected: Vec<f64> = (0..16).map(|k| k as f64 * 1000.0 + 499.5).collect();
    if made != 1 || means != expected {
        return Err(format!("{made} segments; means {means:?}"));
    }
    Ok(())
}

#[parjob::memoize(dir = "target/chaos-mmap-cache", mmap_mode = "r")]
fn cached_ramp(n: u64) -> Vec<f64> {
    (0..n).map(|i| i as f64).collect()
}

fn cached_arrays_outlive_rewrites() -> Result<(), String> {
    cached_ramp::clear();
    let expected: Vec<f64> = (0..100_000).map(|i| i as f64).collect();
    let first = cached_ramp(100_000);
    cached_ramp::clear(); // unlinks the entry under `first`
    let second = cached_ramp(100_000); // writes a new one and renames it
    cached_ramp::clear();
    let third = cached_ramp(100_000);
    let all_mapped = first.is_mapped() && second.is_mapped() && third.is_mapped();
    let same = [&first, &second, &third]
        .iter()
        .all(|a| a[..] == expected[..]);
    cached_ramp::clear();
    if all_mapped && same {
        Ok(())
    } else {
        Err(format!("mapped: {all_mapped}; numbers kept: {same}"))
    }
}

/// Runs `row` in a child confined by `confine`, and passes unless the
/// child failed or did not print `want` in its outcome line.
fn child_outcome(
    row: &str,
    env: &[(&str, &Path)],
    confine: Confine,
    want: &[&str],
) -> Result<(), String> {
    let out = in_child(row, env, confine).map_err(|e| e.to_string())?;
    let said = child_said(&out);
    let outcome = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("outcome: ").map(str::to_string))
        .unwrap_or_default();
    if out.status.success() && want.iter().all(|w| outcome.contains(w)) {
        Ok(())
    } else {
        Err(format!("wanted {want:?} in the outcome; {said}"))
    }
}

/// The outcome of summing `len` ones in a worker, as the child prints it.
fn sum_outcome(len: usize) -> String {
    let mut data = Vec::new();
    if data.try_reserve_exact(len).is_err() {
        return "the test's own vector did not fit".into();
    }
    data.resize(len, 1.0f64);
    match total::map([&data]) {
        Ok(sums) if sums == [len as f64] => "summed".into(),
        Ok(sums) => format!("wrong sum {sums:?}"),
        Err(e) => format!("error: {e}"),
    }
}

fn memfd_refused() -> Result<(), String> {
    if is_capped_child() {
        // SAFETY: memfd_create with a NUL-terminated name; a descriptor
        // it might return is closed at once.
        let fd = unsafe { libc::memfd_create(c"probe".as_ptr(), 0) };
        let refused = fd < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        if fd >= 0 {
            // SAFETY: our own descriptor.
            unsafe { libc::close(fd) };
        }
        let small = sum_outcome(1_000);
        let big = sum_outcome(1 << 20);
        let pool = Pool::new(2)
            .and_then(|p| p.map(double::task, 0..10u64))
            .map_or_else(
                |e| format!("error: {e}"),
                |v| format!("{}", v.iter().sum::<u64>()),
            );
        println!("outcome: memfd refused {refused}; small {small}; big {big}; pool {pool}");
        return Ok(());
    }
    let confine = Confine {
        refuse_memfd: true,
        ..Confine::default()
    };
    child_outcome(
        CASES[0].fault,
        &[],
        confine,
        &[
            "memfd refused true",
            "small summed",
            "big summed",
            "pool 90",
        ],
    )
}

fn argument_under_as_cap() -> Result<(), String> {
    if is_capped_child() {
        println!("outcome: {}", sum_outcome(16 << 20));
        return Ok(());
    }
    let confine = Confine {
        limit: Some((libc::RLIMIT_AS, 330_000_000)),
        ..Confine::default()
    };
    child_outcome(CASES[1].fault, &[], confine, &["error: ", "shared memory"])
}

fn temp_folder_is_a_file() -> Result<(), String> {
    let dir = scratch("temp-folder-file");
    let file = dir.join("a-file");
    std::fs::write(&file, b"").map_err(|e| e.to_string())?;
    let data = vec![1.0f64; 1 << 18];
    let run = Parallel::new()
        .backend(Backend::Process)
        .n_jobs(2)
        .temp_folder(file.clone())
        .max_nbytes(1024u64)
        .run([total::delayed(&data)]);
    let _ = std::fs::remove_dir_all(&dir);
    match run {
        // The shared-memory message as written, not in bincode's wrapping.
        Err(e)
            if e.to_string().contains("not a directory")
                && !e.to_string().contains("OtherString") =>
        {
            Ok(())
        }
        other => Err(format!("the run gave {other:?}")),
    }
}

/// A tmpfs mounted for one row (root only), unmounted and removed on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(name: &str, options: &str) -> Result<Tmpfs, String> {
        let dir = scratch(name);
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(&dir)
            .status()
            .map_err(|e| e.to_string())?;
        if !status.success() {
            let _ = std::fs::remove_dir(&dir);
            return Err(format!(
                "mounting a tmpfs ({options}) failed: it needs root"
            ));
        }
        Ok(Tmpfs(dir))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

fn writable_segments_on_a_small_tmpfs() -> Result<(), String> {
    if is_capped_child() {
        let first = SharedSliceMut::<u8>::zeroed(3 << 20);
        let second = SharedSliceMut::<u8>::zeroed(3 << 20);
        let outcome = match (first, second) {
            (Ok(mut a), Ok(mut b)) => {
                a.as_mut_slice().map(|s| s.fill(1)).ok();
                // Before space was reserved at creation, this write faulted.
                b.as_mut_slice().map(|s| s.fill(1)).ok();
                "both made and written".to_string()
            }
            (Ok(_), Err(Error::SharedMemory(why))) => format!("second refused: {why}"),
            (a, b) => format!("unexpected: {:?} / {:?}", a.err(), b.err()),
        };
        println!("outcome: {outcome}");
        return Ok(());
    }
    let tmpfs = Tmpfs::mount("tmpfs-5m", "size=5m")?;
    let confine = Confine {
        refuse_memfd: true,
        ..Confine::default()
    };
    child_outcome(
        CASES[3].fault,
        &[("PARJOB_TEMP_FOLDER", &tmpfs.0)],
        confine,
        &["second refused", "does not fit"],
    )
}

fn read_only_temp_folder() -> Result<(), String> {
    let tmpfs = Tmpfs::mount("tmpfs-ro", "size=5m,ro")?;
    let data = vec![1.0f64; 1 << 18];
    let run = Parallel::new()
        .backend(Backend::Process)
        .n_jobs(2)
        .temp_folder(tmpfs.0.clone())
        .max_nbytes(1024u64)
        .run([total::delayed(&data)]);
    match run {
        Err(e) if e.to_string().contains("read-only") => Ok(()),
        other => Err(format!("the run gave {other:?}")),
    }
}

fn argument_in_a_v1_cgroup() -> Result<(), String> {
    if is_capped_child() {
        println!("outcome: {}", sum_outcome(16 << 20));
        return Ok(());
    }
    let root = Path::new("/sys/fs/cgroup/memory");
    if !root.join("memory.limit_in_bytes").exists() {
        return Err("this machine has no v1 memory cgroup hierarchy".into());
    }
    let group = root.join(format!("parjob-chaos-{}", std::process::id()));
    std::fs::create_dir(&group).map_err(|e| format!("making {}: {e}", group.display()))?;
    let outcome = std::fs::write(group.join("memory.limit_in_bytes"), "200M")
        .map_err(|e| e.to_string())
        .and_then(|()| {
            let confine = Confine {
                cgroup_procs: Some(group.join("cgroup.procs")),
                ..Confine::default()
            };
            child_outcome(
                CASES[5].fault,
                &[],
                confine,
                &["error: ", "memory.limit_in_bytes"],
            )
        });
    let _ = std::fs::remove_dir(&group);
    outcome
}
